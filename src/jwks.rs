//! An issuer's JSON Web Key Set (RFC 7517): the keys its JWT access tokens
//! may be signed with, read strictly and parsed once per document.
//!
//! Only RS256 keys are used (what ZITADEL signs with): an RSA key whose
//! `alg`, if given, is RS256, whose `use`, if given, is `sig`, whose
//! `key_ops`, if given, allow `verify`, and which jwt-simple imports (it
//! refuses moduli under 2048 or over 4096 bits and exponents other than
//! 65537). A key this filter cannot use (an EC or Ed25519 key, an encryption
//! key, one without a `kid`, a weak RSA key, one carrying private members) is
//! left out, as other verifiers do, so one odd key does not cost the others.
//! What could be read two ways fails the whole document: a repeated member,
//! or two usable keys under one `kid`.
//!
//! ES256 and EdDSA are not offered: they would bring a second big-number
//! stack (the p256 and ed25519 crates) of about 90 KB into the module.

use std::fmt;

use base64ct::{Base64UrlUnpadded, Encoding};
use jwt_simple::algorithms::RS256PublicKey;
use serde_json::{Map, Value};

use crate::json::{parse_strict, StrictError};

/// The one signature algorithm a JWT may use.
pub const ALGORITHM: &str = "RS256";

/// One usable public key.
pub type Key = RS256PublicKey;

/// The usable keys of a document, by `kid`.
#[derive(Debug, Default)]
pub struct KeySet {
    keys: Vec<(String, Key)>,
    /// Keys in the document that were left out.
    skipped: usize,
}

/// Why a document is not a key set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwksError {
    /// Not a JSON object with a `keys` array of objects.
    NotJwks,
    /// A member appears twice somewhere: the document could be read two ways.
    Ambiguous,
    /// Two usable keys share a `kid`.
    DuplicateKid,
}

impl fmt::Display for JwksError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JwksError::NotJwks => "the key set is not a JSON object with a `keys` array of objects",
            JwksError::Ambiguous => "the key set repeats a member name",
            JwksError::DuplicateKid => "the key set has two keys with the same `kid`",
        })
    }
}

impl KeySet {
    /// Reads a JWKS document (the body of the issuer's keys endpoint).
    pub fn parse(document: &[u8]) -> Result<KeySet, JwksError> {
        let mut top = match parse_strict(document) {
            Ok(Value::Object(top)) => top,
            Ok(_) | Err(StrictError::Syntax(_)) => return Err(JwksError::NotJwks),
            Err(StrictError::Duplicate { .. }) => return Err(JwksError::Ambiguous),
        };
        let Some(Value::Array(keys)) = top.get_mut("keys").map(Value::take) else {
            return Err(JwksError::NotJwks);
        };
        let mut set = KeySet::default();
        for jwk in keys {
            let Value::Object(jwk) = jwk else { return Err(JwksError::NotJwks) };
            match usable_key(&jwk) {
                Some((kid, _)) if set.get(&kid).is_some() => return Err(JwksError::DuplicateKid),
                Some((kid, key)) => set.keys.push((kid, key)),
                None => set.skipped += 1,
            }
        }
        Ok(set)
    }

    /// The key a JWT header's `kid` names.
    pub fn get(&self, kid: &str) -> Option<&Key> {
        self.keys.iter().find(|(id, _)| id == kid).map(|(_, key)| key)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// How many keys of the document were left out as unusable.
    pub fn skipped(&self) -> usize {
        self.skipped
    }
}

/// A key of the document with its `kid`, if this filter can verify with it.
fn usable_key(jwk: &Map<String, Value>) -> Option<(String, Key)> {
    let text = |name: &str| jwk.get(name).and_then(Value::as_str);
    // A member that is present must be a string to allow anything: `"alg": 1` is not "no alg".
    let absent_or = |name: &str, allowed: &str| jwk.get(name).is_none_or(|value| value.as_str() == Some(allowed));
    let kid = text("kid").filter(|kid| !kid.is_empty())?;
    let verifies = |ops: &Value| ops.as_array().is_some_and(|ops| ops.iter().any(|op| op == "verify"));
    let usable = text("kty") == Some("RSA")
        && absent_or("alg", ALGORITHM)
        && absent_or("use", "sig")
        && jwk.get("key_ops").is_none_or(verifies)
        && !["d", "p", "q", "dp", "dq", "qi", "oth"].iter().any(|private| jwk.contains_key(*private));
    if !usable {
        return None;
    }
    let decode = |name: &str| Base64UrlUnpadded::decode_vec(text(name)?).ok();
    let key = RS256PublicKey::from_components(&decode("n")?, &decode("e")?).ok()?;
    Some((kid.to_owned(), key))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use jwt_simple::algorithms::{ES256KeyPair, Ed25519KeyPair, RS256KeyPair};
    use serde_json::json;

    use crate::client_auth::tests::test_key_pem;

    /// The public JWK of the shared RSA test key, with `kid`.
    pub(crate) fn rsa_jwk(kid: &str) -> Value {
        let public = RS256KeyPair::from_pem(test_key_pem()).unwrap().public_key().with_key_id(kid);
        serde_json::from_str(&public.to_jwk()).unwrap()
    }

    fn parse(document: &Value) -> Result<KeySet, JwksError> {
        KeySet::parse(&serde_json::to_vec(document).unwrap())
    }

    #[test]
    fn zitadels_key_set_gives_its_rs256_keys_by_kid() {
        // ZITADEL's shape: use, kty, kid, alg, n, e.
        let mut zitadel = rsa_jwk("301234567890123456");
        zitadel.as_object_mut().unwrap().insert("use".into(), json!("sig"));
        let set = parse(&json!({"keys": [zitadel, rsa_jwk("other")]})).unwrap();
        assert_eq!(set.len(), 2);
        assert!(set.get("301234567890123456").is_some());
        assert!(set.get("unknown").is_none());
    }

    #[test]
    fn keys_this_filter_cannot_use_are_left_out() {
        let mut no_kid = rsa_jwk("x");
        no_kid.as_object_mut().unwrap().remove("kid");
        let mut encryption = rsa_jwk("enc");
        encryption["use"] = json!("enc");
        let mut other_alg = rsa_jwk("ps");
        other_alg["alg"] = json!("PS256");
        let mut short = rsa_jwk("short");
        short["n"] = json!("AQAB");
        let mut exponent = rsa_jwk("e3");
        exponent["e"] = json!("Aw");
        let mut private = rsa_jwk("private");
        private["d"] = json!("AQAB");
        let mut sign_only = rsa_jwk("ops");
        sign_only["key_ops"] = json!(["sign"]);
        let secret = json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"});
        let ec: Value =
            serde_json::from_str(&ES256KeyPair::generate().public_key().with_key_id("ec").to_jwk()).unwrap();
        let ed: Value =
            serde_json::from_str(&Ed25519KeyPair::generate().public_key().with_key_id("ed").to_jwk()).unwrap();
        let mut typed = rsa_jwk("typed");
        typed["alg"] = json!(1);
        let mut verify = rsa_jwk("good");
        verify["key_ops"] = json!(["verify"]);
        let document = json!({"keys": [
            no_kid, encryption, other_alg, short, exponent, private, sign_only, secret, ec, ed, typed, verify
        ]});
        let set = parse(&document).unwrap();
        assert_eq!((set.len(), set.skipped()), (1, 11));
        assert!(set.get("good").is_some());
        for kid in ["enc", "ps", "short", "e3", "private", "ops", "hmac", "ec", "ed", "typed"] {
            assert!(set.get(kid).is_none(), "{kid}");
        }
    }

    #[test]
    fn an_empty_key_set_is_a_key_set() {
        assert!(parse(&json!({"keys": []})).unwrap().is_empty());
    }

    #[test]
    fn what_could_be_read_two_ways_fails_the_document() {
        assert_eq!(parse(&json!({"keys": [rsa_jwk("a"), rsa_jwk("a")]})).err(), Some(JwksError::DuplicateKid));
        let jwk = serde_json::to_string(&rsa_jwk("a")).unwrap();
        let repeated = format!(r#"{{"keys": [{}, "kid": "b"}}]}}"#, &jwk[..jwk.len() - 1]);
        assert_eq!(KeySet::parse(repeated.as_bytes()).err(), Some(JwksError::Ambiguous));
        let twice = format!(r#"{{"keys": [], "keys": [{jwk}]}}"#);
        assert_eq!(KeySet::parse(twice.as_bytes()).err(), Some(JwksError::Ambiguous));
    }

    #[test]
    fn garbage_is_not_a_key_set() {
        for bad in [&b""[..], b"null", b"[]", b"{}", b"{\"keys\": {}}", b"{\"keys\": [1]}", b"<html>", b"{\"keys\": ["]
        {
            assert_eq!(KeySet::parse(bad).err(), Some(JwksError::NotJwks), "{}", String::from_utf8_lossy(bad));
        }
    }
}
