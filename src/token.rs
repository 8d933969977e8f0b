//! The bearer token: taken from the `Authorization` header (RFC 6750 section 2.1)
//! and hashed before it is used as a cache key.

use std::fmt;

use sha2::{Digest, Sha256};

/// Longest token accepted. ZITADEL's JWT access tokens are around 1 KB and
/// opaque ones far shorter; anything past this is refused without an issuer call.
pub const MAX_TOKEN_LEN: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// No `Authorization` header at all.
    Missing,
    /// A header is present but does not carry a well-formed bearer token.
    Malformed,
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenError::Missing => f.write_str("no Authorization header"),
            TokenError::Malformed => f.write_str("malformed bearer token"),
        }
    }
}

/// Extracts the token from an `Authorization` header value.
///
/// The scheme is matched case-insensitively; the token must be a non-empty
/// `b64token` (`[A-Za-z0-9-._~+/]+ "="*`) of at most [`MAX_TOKEN_LEN`] bytes.
pub fn bearer_token(header: Option<&str>) -> Result<&str, TokenError> {
    let header = header.ok_or(TokenError::Missing)?;
    let (scheme, rest) = header.split_once(' ').ok_or(TokenError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(TokenError::Malformed);
    }
    let token = rest.trim_start_matches(' ');
    if token.is_empty() || token.len() > MAX_TOKEN_LEN || !is_b64token(token) {
        return Err(TokenError::Malformed);
    }
    Ok(token)
}

fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/'))
}

/// SHA-256 of a token: what the cache stores instead of the token itself.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    pub fn of(token: &str) -> Self {
        TokenHash(Sha256::digest(token.as_bytes()).into())
    }

    /// Two independent slot choices derived from the hash (see `cache`).
    pub fn slot_seeds(&self) -> (u32, u32) {
        let [a0, a1, a2, a3, b0, b1, b2, b3, ..] = self.0;
        (u32::from_be_bytes([a0, a1, a2, a3]), u32::from_be_bytes([b0, b1, b2, b3]))
    }
}

// Never print the hash either: it is a stable identifier of a credential.
impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_bearer_in_any_case() {
        assert_eq!(bearer_token(Some("Bearer abc.DEF-_~+/==")), Ok("abc.DEF-_~+/=="));
        assert_eq!(bearer_token(Some("bearer abc")), Ok("abc"));
        assert_eq!(bearer_token(Some("BEARER  abc")), Ok("abc"));
    }

    #[test]
    fn missing_header_is_missing() {
        assert_eq!(bearer_token(None), Err(TokenError::Missing));
    }

    #[test]
    fn refuses_malformed_headers() {
        let long = format!("Bearer {}", "a".repeat(MAX_TOKEN_LEN + 1));
        for header in [
            "",
            "Bearer",
            "Bearer ",
            "Bearer    ",
            "Basic dXNlcjpwYXNz",
            "Bearerabc",
            "Bearer a b",
            "Bearer a\tb",
            "Bearer abc\r\n",
            "Bearer ===",
            "Bearer a=b",
            "Bearer ab\u{e9}",
            "Bearer a,b",
            long.as_str(),
        ] {
            assert_eq!(bearer_token(Some(header)), Err(TokenError::Malformed), "{header:?}");
        }
    }

    #[test]
    fn accepts_token_of_max_length() {
        let token = "a".repeat(MAX_TOKEN_LEN);
        let header = format!("Bearer {token}");
        assert_eq!(bearer_token(Some(&header)), Ok(token.as_str()));
    }

    #[test]
    fn hash_is_sha256() {
        // SHA-256("abc") from FIPS 180-2.
        let hash = TokenHash::of("abc");
        assert_eq!(hash.0[..4], [0xba, 0x78, 0x16, 0xbf]);
        assert_eq!(hash.slot_seeds().0, 0xba7816bf);
        assert_eq!(format!("{hash:?}"), "TokenHash(..)");
    }
}
