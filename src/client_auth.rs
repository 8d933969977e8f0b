//! How the filter authenticates itself to the introspection endpoint:
//! private_key_jwt (RFC 7523) from a ZITADEL application key, or
//! client_secret_basic.
//!
//! An RS256 signature costs 6-8 ms inside Envoy's V8, so one assertion is
//! signed and then reused until shortly before it expires. ZITADEL accepts a
//! reused assertion (it checks `iat` age, not `jti`). Signed with jwt-simple,
//! the one JWT implementation of the filter (it verifies local JWTs too).

use std::cell::{Cell, RefCell};
use std::fmt;

use base64ct::{Base64, Encoding};
use jwt_simple::algorithms::{RS256KeyPair, RSAKeyPairLike};
use jwt_simple::claims::{Audiences, JWTClaims, NoCustomClaims};
use jwt_simple::prelude::UnixTimeStamp;
use serde::Deserialize;
use serde_json::Value;

use crate::config::{ConfigError, EnvLookup, RawClientAuth};
use crate::introspection::{form_encode_into, ClientProof};
use crate::json::parse_strict;

/// A fresh assertion is signed once fewer than this many seconds remain.
pub const RENEW_BEFORE_SECS: u64 = 60;

pub enum ClientAuth {
    PrivateKeyJwt(Box<AssertionSigner>),
    ClientSecretBasic { client_id: String, authorization: String },
}

impl ClientAuth {
    pub fn client_secret_basic(client_id: &str, client_secret: &str) -> Self {
        // RFC 6749 section 2.3.1: both parts are form-encoded before Base64,
        // so a ZITADEL client id such as `123@project` is sent as `123%40project`.
        let mut pair = String::new();
        form_encode_into(&mut pair, client_id);
        pair.push(':');
        form_encode_into(&mut pair, client_secret);
        let authorization = format!("Basic {}", Base64::encode_string(pair.as_bytes()));
        ClientAuth::ClientSecretBasic { client_id: client_id.to_owned(), authorization }
    }

    /// The proof to attach to an introspection call made at `now`.
    pub fn proof(&self, now: u64) -> Result<ClientProof, SigningError> {
        match self {
            ClientAuth::PrivateKeyJwt(signer) => signer.assertion(now).map(ClientProof::Assertion),
            ClientAuth::ClientSecretBasic { authorization, .. } => Ok(ClientProof::BasicHeader(authorization.clone())),
        }
    }

    /// The client the filter introspects as (not a secret).
    pub fn client_id(&self) -> &str {
        match self {
            ClientAuth::PrivateKeyJwt(signer) => &signer.client_id,
            ClientAuth::ClientSecretBasic { client_id, .. } => client_id,
        }
    }

    /// The configured method's name.
    pub fn method(&self) -> &'static str {
        match self {
            ClientAuth::PrivateKeyJwt(_) => "private_key_jwt",
            ClientAuth::ClientSecretBasic { .. } => "client_secret_basic",
        }
    }

    /// How many assertions this VM has signed (0 for client_secret_basic).
    pub fn signatures(&self) -> u64 {
        match self {
            ClientAuth::PrivateKeyJwt(signer) => signer.signatures.get(),
            ClientAuth::ClientSecretBasic { .. } => 0,
        }
    }

    /// The client authentication configured at `field` (`client_auth`, or
    /// `issuers.NAME.client_auth`) for the issuer at `issuer`: the key file
    /// read and its key parsed, or the secret read, now rather than per call.
    pub(crate) fn from_config(
        raw: RawClientAuth,
        field: &str,
        issuer: &str,
        env: EnvLookup<'_>,
    ) -> Result<ClientAuth, ConfigError> {
        let at = |member: &str| format!("{field}.{member}");
        let unexpected = |present: bool, member: &str, method: &str| {
            if present {
                Err(ConfigError::new(at(member), format!("does not apply to method {method}")))
            } else {
                Ok(())
            }
        };
        match raw.method.as_str() {
            "private_key_jwt" => {
                unexpected(raw.client_id.is_some(), "client_id", "private_key_jwt (the key file names the client)")?;
                unexpected(raw.client_secret.is_some(), "client_secret", "private_key_jwt")?;
                unexpected(raw.client_secret_env.is_some(), "client_secret_env", "private_key_jwt")?;
                let (key_field, key_text) = match (raw.key, raw.key_env) {
                    (Some(_), Some(_)) => {
                        return Err(ConfigError::new(at("key"), "give either key or key_env, not both"))
                    }
                    (None, None) => {
                        return Err(ConfigError::new(
                            at("key"),
                            "private_key_jwt needs key (the ZITADEL key file) or key_env",
                        ))
                    }
                    (Some(Value::String(text)), None) => (at("key"), text),
                    (Some(object @ Value::Object(_)), None) => (at("key"), object.to_string()),
                    (Some(_), None) => {
                        return Err(ConfigError::new(at("key"), "must be the key file's JSON object or its text"))
                    }
                    (None, Some(name)) => {
                        let text = from_env(env, &at("key_env"), &name)?;
                        (format!("{} ({name})", at("key_env")), text)
                    }
                };
                let key_file = ApplicationKeyFile::parse(&key_text).ok_or_else(|| {
                    ConfigError::new(
                        key_field.clone(),
                        "is not a ZITADEL key file: expected JSON with type, keyId, key and clientId",
                    )
                })?;
                if key_file.kind != "application" {
                    return Err(ConfigError::new(
                        format!("{key_field}.type"),
                        format!(
                            "is {:?}; use an API application key (type \"application\"), not a service user key",
                            key_file.kind
                        ),
                    ));
                }
                if key_file.key.is_empty() {
                    return Err(ConfigError::new(format!("{key_field}.key"), "must not be empty"));
                }
                if key_file.key_id.is_empty() {
                    return Err(ConfigError::new(format!("{key_field}.keyId"), "must not be empty"));
                }
                if key_file.client_id.is_empty() {
                    return Err(ConfigError::new(format!("{key_field}.clientId"), "must not be empty"));
                }
                if !(120..=3600).contains(&raw.assertion_lifetime_seconds) {
                    return Err(ConfigError::new(at("assertion_lifetime_seconds"), "must be between 120 and 3600"));
                }
                let audience = raw.audience.unwrap_or_else(|| issuer.to_string());
                if audience.is_empty() {
                    return Err(ConfigError::new(at("audience"), "must not be empty"));
                }
                let signer = AssertionSigner::new(
                    &key_file.key,
                    &key_file.key_id,
                    key_file.client_id,
                    audience,
                    raw.assertion_lifetime_seconds,
                )
                .map_err(|_| {
                    ConfigError::new(format!("{key_field}.key"), "is not an RSA private key in PEM (PKCS#1 or PKCS#8)")
                })?;
                Ok(ClientAuth::PrivateKeyJwt(Box::new(signer)))
            }
            "client_secret_basic" => {
                unexpected(raw.key.is_some(), "key", "client_secret_basic")?;
                unexpected(raw.key_env.is_some(), "key_env", "client_secret_basic")?;
                unexpected(raw.audience.is_some(), "audience", "client_secret_basic")?;
                let client_id = raw.client_id.filter(|id| !id.is_empty()).ok_or_else(|| {
                    ConfigError::new(at("client_id"), "client_secret_basic needs the API application's client id")
                })?;
                let secret = match (raw.client_secret, raw.client_secret_env) {
                    (Some(_), Some(_)) => {
                        return Err(ConfigError::new(
                            at("client_secret"),
                            "give either client_secret or client_secret_env, not both",
                        ))
                    }
                    (Some(secret), None) => secret,
                    (None, Some(name)) => from_env(env, &at("client_secret_env"), &name)?,
                    (None, None) => {
                        return Err(ConfigError::new(
                            at("client_secret"),
                            "client_secret_basic needs client_secret or client_secret_env",
                        ))
                    }
                };
                if secret.is_empty() {
                    return Err(ConfigError::new(at("client_secret"), "must not be empty"));
                }
                Ok(ClientAuth::client_secret_basic(&client_id, &secret))
            }
            other => Err(ConfigError::new(
                at("method"),
                format!("{other:?} is not supported; use \"private_key_jwt\" or \"client_secret_basic\""),
            )),
        }
    }
}

/// Reads a secret from the VM's environment. The name is checked before it is
/// echoed in an error: people do paste the secret itself into `*_env` fields.
fn from_env(env: EnvLookup<'_>, field: &str, name: &str) -> Result<String, ConfigError> {
    let is_name = (1..=128).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if !is_name {
        return Err(ConfigError::new(field, "must be an environment variable name ([A-Za-z_][A-Za-z0-9_]*)"));
    }
    env(name).ok_or_else(|| {
        // Variable names are conventionally upper case; a mixed-case "name" is
        // more likely a secret pasted into the wrong field, so it is not repeated.
        let shown = if name.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_') {
            name
        } else {
            "(not repeated here: it has lower-case letters, as a pasted secret would)"
        };
        ConfigError::new(
            field,
            format!("environment variable {shown} is not set in the VM (list it in vm_config.environment_variables.host_env_keys)"),
        )
    })
}

/// ZITADEL's application key file, as downloaded from the console.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ApplicationKeyFile {
    #[serde(rename = "type")]
    kind: String,
    key_id: String,
    key: String,
    client_id: String,
}

impl ApplicationKeyFile {
    /// Read strictly: a key file with a repeated member is refused.
    fn parse(text: &str) -> Option<Self> {
        serde_json::from_value(parse_strict(text.as_bytes()).ok()?).ok()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SigningError;

impl fmt::Display for SigningError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("signing the client assertion failed")
    }
}

/// The PEM text is not an RSA private key (PKCS#1 or PKCS#8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyError;

/// Signs RS256 client assertions (RFC 7523) with the application key.
pub struct AssertionSigner {
    /// The key, with the key file's `keyId` as the header's `kid`.
    key: RS256KeyPair,
    client_id: String,
    audience: String,
    lifetime_secs: u64,
    /// The assertion in use and its `exp`.
    current: RefCell<Option<(String, u64)>>,
    signatures: Cell<u64>,
}

impl AssertionSigner {
    pub fn new(
        key_pem: &str,
        key_id: &str,
        client_id: String,
        audience: String,
        lifetime_secs: u64,
    ) -> Result<Self, KeyError> {
        let key = RS256KeyPair::from_pem(key_pem).map_err(|_| KeyError)?.with_key_id(key_id);
        Ok(AssertionSigner {
            key,
            client_id,
            audience,
            lifetime_secs,
            current: RefCell::new(None),
            signatures: Cell::new(0),
        })
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

    /// Header `{"alg":"RS256","typ":"JWT","kid":…}`; claims `iss` = `sub` = the
    /// client id, `aud`, `iat`, `exp`, a random `jti`.
    fn sign(&self, now: u64, expires_at: u64) -> Result<String, SigningError> {
        let claims = JWTClaims {
            issued_at: Some(UnixTimeStamp::from_secs(now)),
            expires_at: Some(UnixTimeStamp::from_secs(expires_at)),
            invalid_before: None,
            issuer: Some(self.client_id.clone()),
            subject: Some(self.client_id.clone()),
            audiences: Some(Audiences::AsString(self.audience.clone())),
            jwt_id: Some(unique_id()?),
            nonce: None,
            custom: NoCustomClaims {},
        };
        self.key.sign(claims).map_err(|_| SigningError)
    }
}

/// 128 random bits, hex: the assertion's `jti`.
fn unique_id() -> Result<String, SigningError> {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes).map_err(|_| SigningError)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use base64ct::Base64UrlUnpadded;
    use jwt_simple::algorithms::RSAPublicKeyLike;
    use jwt_simple::common::VerificationOptions;
    use serde_json::json;
    use std::sync::OnceLock;

    /// One RSA key for all tests (PKCS#8 PEM): generating it is the slow part.
    pub(crate) fn test_key_pem() -> &'static str {
        static PEM: OnceLock<String> = OnceLock::new();
        PEM.get_or_init(|| RS256KeyPair::generate(2048).unwrap().to_pem().unwrap())
    }

    fn signer() -> AssertionSigner {
        AssertionSigner::new(test_key_pem(), "key-1", "api@demo".into(), "https://issuer.example".into(), 600).unwrap()
    }

    fn decode_part(part: &str) -> serde_json::Value {
        serde_json::from_slice(&Base64UrlUnpadded::decode_vec(part).unwrap()).unwrap()
    }

    #[test]
    fn assertion_has_the_claims_zitadel_wants() {
        let now = 1_700_000_000;
        let jwt = signer().assertion(now).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(decode_part(parts[0]), json!({"alg": "RS256", "typ": "JWT", "kid": "key-1"}));
        let claims = decode_part(parts[1]);
        assert_eq!(claims["iss"], "api@demo");
        assert_eq!(claims["sub"], "api@demo");
        assert_eq!(claims["aud"], "https://issuer.example");
        assert_eq!(claims["iat"], now);
        assert_eq!(claims["exp"], now + 600);
        assert_eq!(claims["jti"].as_str().map(str::len), Some(32));
        assert_eq!(claims.as_object().map(|c| c.len()), Some(6));
        let public = RS256KeyPair::from_pem(test_key_pem()).unwrap().public_key();
        let at_issue =
            VerificationOptions { artificial_time: Some(UnixTimeStamp::from_secs(now)), ..Default::default() };
        assert!(public.verify_token::<NoCustomClaims>(&jwt, Some(at_issue.clone())).is_ok());
        let tampered = format!("{}.{}.{}", parts[0], parts[1], &parts[2][..parts[2].len() - 2]);
        assert!(public.verify_token::<NoCustomClaims>(&tampered, Some(at_issue)).is_err());
    }

    #[test]
    fn pkcs1_keys_are_accepted_and_garbage_is_not() {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        use rsa::pkcs8::{DecodePrivateKey, LineEnding};
        let private = rsa::RsaPrivateKey::from_pkcs8_pem(test_key_pem()).unwrap();
        let pkcs1 = private.to_pkcs1_pem(LineEnding::LF).unwrap();
        assert!(pkcs1.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
        assert!(AssertionSigner::new(&pkcs1, "k", "c".into(), "a".into(), 600).is_ok());
        for bad in ["", "not a key", "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n"] {
            assert_eq!(AssertionSigner::new(bad, "k", "c".into(), "a".into(), 600).err(), Some(KeyError));
        }
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
        let jti = |jwt: &str| decode_part(jwt.split('.').nth(1).unwrap())["jti"].clone();
        assert_ne!(jti(&first), jti(&second));
    }

    #[test]
    fn basic_credentials_form_encode_the_client_id() {
        let auth = ClientAuth::client_secret_basic("123@demo", "s3cr:t");
        let ClientAuth::ClientSecretBasic { authorization, .. } = &auth else { panic!() };
        assert_eq!(auth.client_id(), "123@demo");
        let encoded = authorization.strip_prefix("Basic ").unwrap();
        assert_eq!(Base64::decode_vec(encoded).unwrap(), b"123%40demo:s3cr%3At");
        assert_eq!(auth.signatures(), 0);
    }
}
