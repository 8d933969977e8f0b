use super::*;
use jwt_simple::algorithms::{
    ECDSAP256KeyPairLike, ES256KeyPair, Ed25519KeyPair, EdDSAKeyPairLike, HS256Key, MACLike, RS256KeyPair,
    RSAKeyPairLike,
};
use jwt_simple::claims::JWTClaims;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{SignatureEncoding, Signer};
use serde_json::json;
use sha2::Sha256;
use std::sync::OnceLock;

use crate::client_auth::tests::test_key_pem;
use crate::jwks::KeySet;

const NOW: u64 = 1_800_000_000;
const NOW_MS: u64 = NOW * 1000;
const ISSUER: &str = "https://issuer.example";
const PROJECT: &str = "300000000000000001";
const ROLES: &str = "urn:zitadel:iam:org:project:roles";

fn expected() -> Extraction {
    Extraction {
        issuer: ISSUER.into(),
        audiences: vec![PROJECT.into()],
        role_claims: vec![ROLES.into()],
        header_claims: vec![],
        clock_skew_secs: 10,
    }
}

/// A ZITADEL JWT access token's payload (client credentials, roles asserted).
pub(crate) fn access_token_claims(now: u64) -> Value {
    json!({
        "iss": ISSUER,
        "sub": "user-1",
        "aud": [PROJECT, "300000000000000002"],
        "exp": now + 3600,
        "iat": now,
        "nbf": now,
        "jti": "V2_300000000000000009-at_300000000000000010",
        "client_id": "svc-user-1",
        "scope": "openid",
        ROLES: {"read:messages": {"300000000000000000": "org.example"}},
    })
}

fn b64(json: &str) -> String {
    Base64UrlUnpadded::encode_string(json.as_bytes())
}

/// An RS256 JWT over exactly these header and payload texts, signed with the shared test key.
fn sign_raw(header: &str, payload: &str) -> String {
    static KEY: OnceLock<SigningKey<Sha256>> = OnceLock::new();
    let key = KEY.get_or_init(|| SigningKey::new(rsa::RsaPrivateKey::from_pkcs8_pem(test_key_pem()).unwrap()));
    let signed = format!("{}.{}", b64(header), b64(payload));
    let signature = key.sign(signed.as_bytes()).to_vec();
    format!("{signed}.{}", Base64UrlUnpadded::encode_string(&signature))
}

pub(crate) fn sign(header: &Value, payload: &Value) -> String {
    sign_raw(&header.to_string(), &payload.to_string())
}

fn rs256_header(kid: &str) -> Value {
    json!({"alg": "RS256", "kid": kid, "typ": "JWT"})
}

fn zitadel_token() -> String {
    sign(&rs256_header("k1"), &access_token_claims(NOW))
}

fn keys() -> KeySet {
    let public = RS256KeyPair::from_pem(test_key_pem()).unwrap().public_key().with_key_id("k1");
    KeySet::parse(format!(r#"{{"keys": [{}]}}"#, public.to_jwk()).as_bytes()).unwrap()
}

/// Reads the header, takes the key it names, verifies.
fn check_with(token: &str, keys: &KeySet, now_ms: u64) -> Verdict {
    let header = match read_header(token) {
        Ok(header) => header,
        Err(rejection) => return Verdict::Invalid(rejection),
    };
    match keys.get(&header.kid) {
        Some(key) => verify(token, &header, key, &expected(), now_ms),
        None => Verdict::Invalid(Rejection::UnknownKey),
    }
}

fn check(token: &str) -> Verdict {
    check_with(token, &keys(), NOW_MS)
}

fn rejection(token: &str) -> Option<Rejection> {
    match check(token) {
        Verdict::Invalid(rejection) => Some(rejection),
        Verdict::Valid(_) => None,
    }
}

fn set(claims: &mut Map<String, Value>, name: &str, value: Value) {
    claims.insert(name.into(), value);
}

fn with_claims(change: impl FnOnce(&mut Map<String, Value>)) -> String {
    let mut claims = access_token_claims(NOW);
    change(claims.as_object_mut().unwrap());
    sign(&rs256_header("k1"), &claims)
}

#[test]
fn zitadel_access_token_verifies_with_its_identity() {
    let Verdict::Valid(identity) = check(&zitadel_token()) else { panic!("not valid") };
    assert_eq!(identity.subject, "user-1");
    assert_eq!(identity.client_id, "svc-user-1");
    assert_eq!(identity.audiences, vec![PROJECT.to_string()]);
    assert_eq!(identity.roles, vec![vec!["read:messages".to_string()]]);
    assert_eq!(identity.expires_at, Some(NOW + 3600));
}

#[test]
fn read_header_gives_algorithm_and_kid() {
    let header = read_header(&zitadel_token()).unwrap();
    assert_eq!(header, Header { kid: "k1".into() });
}

#[test]
fn es256_and_eddsa_tokens_are_refused_as_unsupported() {
    let custom: Map<String, Value> = access_token_claims(NOW).as_object().unwrap().clone();
    let claims = || JWTClaims {
        issued_at: None,
        expires_at: None,
        invalid_before: None,
        issuer: None,
        subject: None,
        audiences: None,
        jwt_id: None,
        nonce: None,
        custom: custom.clone(),
    };
    let es256 = ES256KeyPair::generate().with_key_id("k1").sign(claims()).unwrap();
    let eddsa = Ed25519KeyPair::generate().with_key_id("k1").sign(claims()).unwrap();
    assert_eq!(rejection(&es256), Some(Rejection::BadHeader));
    assert_eq!(rejection(&eddsa), Some(Rejection::BadHeader));
}

#[test]
fn signature_of_another_key_under_the_right_kid_is_refused() {
    let other = RS256KeyPair::generate(2048).unwrap().with_key_id("k1");
    let token = other
        .sign(JWTClaims {
            issued_at: None,
            expires_at: None,
            invalid_before: None,
            issuer: None,
            subject: None,
            audiences: None,
            jwt_id: None,
            nonce: None,
            custom: access_token_claims(NOW).as_object().unwrap().clone(),
        })
        .unwrap();
    assert_eq!(rejection(&token), Some(Rejection::BadSignature));
}

#[test]
fn a_changed_payload_or_signature_is_refused() {
    let token = zitadel_token();
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims = access_token_claims(NOW);
    claims["sub"] = json!("admin");
    let swapped = format!("{}.{}.{}", parts[0], b64(&claims.to_string()), parts[2]);
    assert_eq!(rejection(&swapped), Some(Rejection::BadSignature));
    let mut signature = parts[2].to_owned().into_bytes();
    signature[10] = if signature[10] == b'A' { b'B' } else { b'A' };
    let flipped = format!("{}.{}.{}", parts[0], parts[1], String::from_utf8(signature).unwrap());
    assert_eq!(rejection(&flipped), Some(Rejection::BadSignature));
}

#[test]
fn alg_none_hmac_and_other_algorithms_are_refused_before_any_key() {
    let claims = access_token_claims(NOW).to_string();
    let none = format!("{}.{}.{}", b64(r#"{"alg":"none","kid":"k1"}"#), b64(&claims), "AAAA");
    assert_eq!(rejection(&none), Some(Rejection::BadHeader));
    // HS256 keyed with the issuer's public key, the classic confusion.
    let public_pem = RS256KeyPair::from_pem(test_key_pem()).unwrap().public_key().to_pem().unwrap();
    let custom: Map<String, Value> = access_token_claims(NOW).as_object().unwrap().clone();
    let hs256 = HS256Key::from_bytes(public_pem.as_bytes())
        .with_key_id("k1")
        .authenticate(JWTClaims {
            issued_at: None,
            expires_at: None,
            invalid_before: None,
            issuer: None,
            subject: None,
            audiences: None,
            jwt_id: None,
            nonce: None,
            custom,
        })
        .unwrap();
    assert_eq!(rejection(&hs256), Some(Rejection::BadHeader));
    // An RS256 signature relabelled PS256 (or RS384) is refused as such.
    let parts: Vec<String> = zitadel_token().split('.').map(str::to_owned).collect();
    for alg in ["PS256", "RS384", "ES256", "EdDSA", "HS256", "RS256 ", "rs256"] {
        let header = b64(&json!({"alg": alg, "kid": "k1"}).to_string());
        assert_eq!(rejection(&format!("{header}.{}.{}", parts[1], parts[2])), Some(Rejection::BadHeader), "{alg}");
    }
}

#[test]
fn header_rules_refuse_what_is_not_a_jws_access_token() {
    let claims = access_token_claims(NOW).to_string();
    for header in [
        r#"{"alg":"RS256"}"#,
        r#"{"alg":"RS256","kid":""}"#,
        r#"{"alg":"RS256","kid":7}"#,
        r#"{"alg":"RS256","kid":"k1","crit":["exp"]}"#,
        r#"{"alg":"RS256","kid":"k1","crit":[]}"#,
        r#"{"alg":"RS256","kid":"k1","typ":"id_token"}"#,
        r#"{"alg":"RS256","kid":"k1","typ":"dpop+jwt"}"#,
        r#"{"alg":"RS256","kid":"k1","typ":7}"#,
        r#"{"alg":"RS256","kid":"k1","kid":"k2"}"#,
        r#"{"alg":"RS256","alg":"none","kid":"k1"}"#,
        r#"["RS256"]"#,
    ] {
        assert_eq!(rejection(&sign_raw(header, &claims)), Some(Rejection::BadHeader), "{header}");
    }
    for header in [
        r#"{"alg":"RS256","kid":"k1"}"#,
        r#"{"alg":"RS256","kid":"k1","typ":"at+jwt"}"#,
        r#"{"alg":"RS256","kid":"k1","typ":"application/at+JWT"}"#,
        r#"{"alg":"RS256","kid":"k1","typ":"jwt","jku":"https://attacker.example/keys"}"#,
    ] {
        assert_eq!(rejection(&sign_raw(header, &claims)), None, "{header}");
    }
}

#[test]
fn unknown_kid_is_told_apart() {
    assert_eq!(rejection(&sign(&rs256_header("k2"), &access_token_claims(NOW))), Some(Rejection::UnknownKey));
}

#[test]
fn claims_are_judged_as_introspection_answers_are() {
    assert_eq!(rejection(&with_claims(|c| set(c, "exp", json!(NOW)))), Some(Rejection::Expired));
    assert_eq!(check_with(&zitadel_token(), &keys(), (NOW + 3600) * 1000 - 1).clone(), check(&zitadel_token()));
    assert_eq!(check_with(&zitadel_token(), &keys(), (NOW + 3600) * 1000), Verdict::Invalid(Rejection::Expired));
    assert_eq!(rejection(&with_claims(|c| set(c, "nbf", json!(NOW + 11)))), Some(Rejection::NotYetValid));
    assert_eq!(rejection(&with_claims(|c| set(c, "nbf", json!(NOW + 10)))), None);
    assert_eq!(
        rejection(&with_claims(|c| set(c, "iss", json!("https://other.example")))),
        Some(Rejection::WrongIssuer)
    );
    assert_eq!(rejection(&with_claims(|c| set(c, "cnf", json!({"jkt": "abc"})))), Some(Rejection::SenderConstrained));
    assert_eq!(rejection(&with_claims(|c| set(c, "token_use", json!("id")))), Some(Rejection::NotBearerAccessToken));
}

#[test]
fn an_access_token_has_exp_client_id_and_jti() {
    for claim in ["exp", "client_id", "jti"] {
        assert_eq!(rejection(&with_claims(|c| drop(c.remove(claim)))), Some(Rejection::BadClaims), "{claim}");
    }
    assert_eq!(rejection(&with_claims(|c| set(c, "client_id", json!("")))), Some(Rejection::BadClaims));
    assert_eq!(rejection(&with_claims(|c| set(c, "exp", json!("1900000000")))), Some(Rejection::BadClaims));
    assert_eq!(rejection(&with_claims(|c| set(c, "sub", json!(5)))), Some(Rejection::BadClaims));
    assert_eq!(rejection(&with_claims(|c| set(c, "aud", json!(5)))), Some(Rejection::BadClaims));
}

#[test]
fn a_payload_that_could_be_read_two_ways_is_refused() {
    let text = access_token_claims(NOW).to_string();
    let repeated = format!(r#"{},"sub":"admin"}}"#, &text[..text.len() - 1]);
    assert_eq!(rejection(&sign_raw(&rs256_header("k1").to_string(), &repeated)), Some(Rejection::BadClaims));
    assert_eq!(rejection(&sign_raw(&rs256_header("k1").to_string(), "[1]")), Some(Rejection::BadClaims));
}

#[test]
fn claims_that_refuse_are_answered_before_the_signature_is_checked() {
    // A forger's token for no API of this issuer, or expired, costs no RSA work and says why.
    let forger = RS256KeyPair::generate(2048).unwrap().with_key_id("k1");
    let forged = |claims: Value| {
        forger
            .sign(JWTClaims {
                issued_at: None,
                expires_at: None,
                invalid_before: None,
                issuer: None,
                subject: None,
                audiences: None,
                jwt_id: None,
                nonce: None,
                custom: claims.as_object().unwrap().clone(),
            })
            .unwrap()
    };
    let mut elsewhere = access_token_claims(NOW);
    elsewhere["aud"] = json!(["another-project"]);
    assert_eq!(rejection(&forged(elsewhere)), Some(Rejection::WrongAudience));
    let mut expired = access_token_claims(NOW);
    expired["exp"] = json!(NOW);
    assert_eq!(rejection(&forged(expired)), Some(Rejection::Expired));
    assert_eq!(rejection(&forged(access_token_claims(NOW))), Some(Rejection::BadSignature));
}

#[test]
fn an_id_token_shaped_payload_is_not_an_access_token() {
    for claim in ["at_hash", "c_hash"] {
        let token = with_claims(|c| set(c, claim, json!("x7GPmWJ5JmQ")));
        assert_eq!(rejection(&token), Some(Rejection::NotBearerAccessToken), "{claim}");
    }
}
