//! How the filter authenticates itself to the introspection endpoint:
//! private_key_jwt (RFC 7523) from a ZITADEL application key, or
//! client_secret_basic.
//!
//! An RS256 signature costs 6-8 ms inside Envoy's V8, so one assertion is
//! signed and then reused until shortly before it expires. ZITADEL accepts a
//! reused assertion (it checks `iat` age, not `jti`).

use std::cell::{Cell, RefCell};
use std::fmt;

use jwt_simple::prelude::*;
use jwt_simple::reexports::rand::{self, Rng};

use crate::introspection::{form_encode_into, ClientProof};

/// A fresh assertion is signed once fewer than this many seconds remain.
pub const RENEW_BEFORE_SECS: u64 = 60;

pub enum ClientAuth {
    PrivateKeyJwt(Box<AssertionSigner>),
    ClientSecretBasic { authorization: String },
}

impl ClientAuth {
    pub fn client_secret_basic(client_id: &str, client_secret: &str) -> Self {
        // RFC 6749 section 2.3.1: both parts are form-encoded before Base64,
        // so a ZITADEL client id such as `123@project` is sent as `123%40project`.
        let mut pair = String::new();
        form_encode_into(&mut pair, client_id);
        pair.push(':');
        form_encode_into(&mut pair, client_secret);
        ClientAuth::ClientSecretBasic {
            authorization: format!("Basic {}", Base64::encode_to_string(pair).unwrap_or_default()),
        }
    }

    /// The proof to attach to an introspection call made at `now`.
    pub fn proof(&self, now: u64) -> Result<ClientProof, SigningError> {
        match self {
            ClientAuth::PrivateKeyJwt(signer) => signer.assertion(now).map(ClientProof::Assertion),
            ClientAuth::ClientSecretBasic { authorization } => Ok(ClientProof::BasicHeader(authorization.clone())),
        }
    }

    /// How many assertions this VM has signed (0 for client_secret_basic).
    pub fn signatures(&self) -> u64 {
        match self {
            ClientAuth::PrivateKeyJwt(signer) => signer.signatures.get(),
            ClientAuth::ClientSecretBasic { .. } => 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SigningError;

impl fmt::Display for SigningError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("signing the client assertion failed")
    }
}

pub struct AssertionSigner {
    key: RS256KeyPair,
    client_id: String,
    audience: String,
    lifetime_secs: u64,
    /// The assertion in use and its `exp`.
    current: RefCell<Option<(String, u64)>>,
    signatures: Cell<u64>,
}

impl AssertionSigner {
    /// `key` must already carry its key id (`kid`).
    pub fn new(key: RS256KeyPair, client_id: String, audience: String, lifetime_secs: u64) -> Self {
        AssertionSigner {
            key,
            client_id,
            audience,
            lifetime_secs,
            current: RefCell::new(None),
            signatures: Cell::new(0),
        }
    }

    /// A valid assertion at `now`: the cached one, or a newly signed one
    /// when the cached one is missing or about to expire.
    pub fn assertion(&self, now: u64) -> Result<String, SigningError> {
        let mut current = self.current.borrow_mut();
        match current.as_ref() {
            Some((jwt, exp)) if now.saturating_add(RENEW_BEFORE_SECS) < *exp => Ok(jwt.clone()),
            _ => {
                let expires_at = now.saturating_add(self.lifetime_secs);
                let jwt = self.sign(now, expires_at)?;
                self.signatures.set(self.signatures.get() + 1);
                *current = Some((jwt.clone(), expires_at));
                Ok(jwt)
            }
        }
    }

    fn sign(&self, now: u64, expires_at: u64) -> Result<String, SigningError> {
        let mut claims = JWTClaims::<NoCustomClaims>::new();
        claims.issued_at = Some(UnixTimeStamp::from_secs(now));
        claims.expires_at = Some(UnixTimeStamp::from_secs(expires_at));
        claims.issuer = Some(self.client_id.clone());
        claims.subject = Some(self.client_id.clone());
        claims.audiences = Some(Audiences::AsString(self.audience.clone()));
        claims.jwt_id = Some(unique_id());
        self.key.sign(claims).map_err(|_| SigningError)
    }
}

/// 128 random bits, hex: the assertion's `jti`.
fn unique_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::OnceLock;

    /// One RSA key for all tests: generating it is the slow part.
    pub(crate) fn test_key_pem() -> &'static str {
        static PEM: OnceLock<String> = OnceLock::new();
        PEM.get_or_init(|| RS256KeyPair::generate(2048).unwrap().to_pem().unwrap())
    }

    fn signer() -> AssertionSigner {
        let key = RS256KeyPair::from_pem(test_key_pem()).unwrap().with_key_id("key-1");
        AssertionSigner::new(key, "api@demo".into(), "https://issuer.example".into(), 600)
    }

    #[test]
    fn assertion_has_the_claims_zitadel_wants() {
        let signer = signer();
        let now = Clock::now_since_epoch().as_secs();
        let jwt = signer.assertion(now).unwrap();
        let public = RS256KeyPair::from_pem(test_key_pem()).unwrap().public_key();
        let options = VerificationOptions {
            allowed_issuers: Some(HashSet::from_strings(&["api@demo"])),
            allowed_audiences: Some(HashSet::from_strings(&["https://issuer.example"])),
            ..Default::default()
        };
        let claims = public.verify_token::<NoCustomClaims>(&jwt, Some(options)).unwrap();
        assert_eq!(claims.subject.as_deref(), Some("api@demo"));
        assert_eq!(claims.issued_at.map(|t| t.as_secs()), Some(now));
        assert_eq!(claims.expires_at.map(|t| t.as_secs()), Some(now + 600));
        assert_eq!(claims.jwt_id.as_ref().map(String::len), Some(32));
        let metadata = Token::decode_metadata(&jwt).unwrap();
        assert_eq!(metadata.algorithm(), "RS256");
        assert_eq!(metadata.key_id(), Some("key-1"));
    }

    #[test]
    fn assertion_is_reused_until_shortly_before_expiry() {
        let signer = signer();
        let first = signer.assertion(1000).unwrap();
        assert_eq!(signer.assertion(1000 + 600 - RENEW_BEFORE_SECS - 1).unwrap(), first);
        assert_eq!(signer.signatures.get(), 1);
        let second = signer.assertion(1000 + 600 - RENEW_BEFORE_SECS).unwrap();
        assert_ne!(second, first);
        assert_eq!(signer.signatures.get(), 2);
        let jti = |jwt: &str| {
            let payload = jwt.split('.').nth(1).unwrap();
            let json = Base64UrlSafeNoPadding::decode_to_vec(payload, None).unwrap();
            serde_json::from_slice::<serde_json::Value>(&json).unwrap()["jti"].clone()
        };
        assert_ne!(jti(&first), jti(&second));
    }

    #[test]
    fn basic_credentials_form_encode_the_client_id() {
        let auth = ClientAuth::client_secret_basic("123@demo", "s3cr:t");
        let ClientAuth::ClientSecretBasic { authorization } = &auth else { panic!() };
        let encoded = authorization.strip_prefix("Basic ").unwrap();
        let decoded = Base64::decode_to_vec(encoded, None).unwrap();
        assert_eq!(decoded, b"123%40demo:s3cr%3At");
        assert_eq!(auth.signatures(), 0);
    }
}
