//! The bearer token: taken from the `Authorization` header (RFC 6750 section 2.1),
//! peeked at for the issuer a JWT names, and hashed with the issuer before it
//! is used as a cache key.

use std::fmt;

use base64ct::{Base64UrlUnpadded, Encoding};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::json::parse_strict;

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

/// Where a token says it comes from. Nothing here is verified: the issuer's
/// introspection answer decides; this only picks which issuer to ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenShape {
    /// Not a JWT: any of the API's issuers may have minted it.
    Opaque,
    /// A JWT (three Base64url parts, the last possibly empty, the first a JOSE header with `alg`)
    /// whose payload names this `iss`.
    Jwt { issuer: String },
    /// A JWT whose payload is not a JSON object with one string `iss`.
    JwtWithoutIssuer,
}

/// Reads the shape of a well-formed bearer token (see [`bearer_token`]).
pub fn token_shape(token: &str) -> TokenShape {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return TokenShape::Opaque;
    };
    let base64url = |part: &str| part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    // The signature may be empty: an unsecured JWT (`alg` `none`, RFC 7519 section 6)
    // is still a JWT naming its issuer, refused as such rather than asked about.
    if header.is_empty() || payload.is_empty() || ![header, payload, signature].into_iter().all(base64url) {
        return TokenShape::Opaque;
    }
    let decode = |part: &str| Base64UrlUnpadded::decode_vec(part).ok().and_then(|bytes| parse_strict(&bytes).ok());
    let is_jose_header = matches!(decode(header), Some(Value::Object(h)) if h.get("alg").is_some_and(Value::is_string));
    if !is_jose_header {
        return TokenShape::Opaque;
    }
    match decode(payload) {
        Some(Value::Object(claims)) => match claims.get("iss") {
            Some(Value::String(issuer)) if !issuer.is_empty() => TokenShape::Jwt { issuer: issuer.clone() },
            _ => TokenShape::JwtWithoutIssuer,
        },
        _ => TokenShape::JwtWithoutIssuer,
    }
}

/// SHA-256 of an issuer and a token: what the cache and the in-flight table
/// hold instead of the token. The issuer is part of it, so what one issuer
/// said about a token never answers for another.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    pub fn of(issuer: &str, token: &str) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(issuer.as_bytes());
        hasher.update([0u8]);
        hasher.update(token.as_bytes());
        TokenHash(hasher.finalize().into())
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
    fn hash_is_sha256_of_issuer_nul_token() {
        let hash = TokenHash::of("https://issuer.example", "abc");
        let expected: [u8; 32] = Sha256::digest(b"https://issuer.example\0abc").into();
        assert_eq!(hash.0, expected);
        assert_eq!(hash.slot_seeds().0, u32::from_be_bytes([expected[0], expected[1], expected[2], expected[3]]));
        assert_eq!(format!("{hash:?}"), "TokenHash(..)");
    }

    #[test]
    fn hash_differs_per_issuer() {
        assert_ne!(TokenHash::of("https://a.example", "t"), TokenHash::of("https://b.example", "t"));
        // The separator keeps issuer and token apart.
        assert_ne!(TokenHash::of("https://a.example", "xt"), TokenHash::of("https://a.examplex", "t"));
    }

    fn jwt(header: &str, payload: &str) -> String {
        let part = |json: &str| Base64UrlUnpadded::encode_string(json.as_bytes());
        format!("{}.{}.c2lnbmF0dXJl", part(header), part(payload))
    }

    #[test]
    fn token_shape_reads_a_jwts_issuer() {
        let token = jwt(r#"{"alg":"RS256","kid":"1"}"#, r#"{"iss":"https://a.example","sub":"u"}"#);
        assert_eq!(token_shape(&token), TokenShape::Jwt { issuer: "https://a.example".into() });
    }

    #[test]
    fn token_shape_reads_an_unsecured_jwt_too() {
        let signed = jwt(r#"{"alg":"none"}"#, r#"{"iss":"https://a.example"}"#);
        let unsecured = format!("{}.", signed.rsplit_once('.').unwrap().0);
        assert_eq!(token_shape(&unsecured), TokenShape::Jwt { issuer: "https://a.example".into() });
        assert_eq!(token_shape(".."), TokenShape::Opaque);
    }

    #[test]
    fn token_shape_opaque_unless_a_jose_header() {
        for token in [
            "abc".to_string(),
            "a.b".to_string(),
            "a.b.c".to_string(),
            "a.b.c.d.e".to_string(),
            jwt(r#"{"typ":"JWT"}"#, r#"{"iss":"https://a.example"}"#),
            jwt(r#"{"alg":1}"#, r#"{"iss":"https://a.example"}"#),
            format!("{}=", jwt(r#"{"alg":"RS256"}"#, r#"{"iss":"https://a.example"}"#)),
        ] {
            assert_eq!(token_shape(&token), TokenShape::Opaque, "{token}");
        }
    }

    #[test]
    fn token_shape_jwt_without_one_string_issuer() {
        for payload in [
            r#"{"sub":"u"}"#,
            r#"{"iss":7}"#,
            r#"{"iss":""}"#,
            "[1]",
            "not json",
            r#"{"iss":"https://a.example","iss":"https://b.example"}"#,
        ] {
            assert_eq!(token_shape(&jwt(r#"{"alg":"RS256"}"#, payload)), TokenShape::JwtWithoutIssuer, "{payload}");
        }
        // A duplicate in the header makes it no JOSE header at all.
        assert_eq!(token_shape(&jwt(r#"{"alg":"RS256","alg":"none"}"#, r#"{"iss":"x"}"#)), TokenShape::Opaque);
    }
}
