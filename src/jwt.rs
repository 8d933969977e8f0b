//! A JWT access token verified locally: its header read strictly, its
//! signature checked by jwt-simple with the key its `kid` names in the
//! issuer's key set (`jwks`), and its payload judged by the same rules as an
//! introspection answer (`claims`). Pure: the keys and the time come in.

use base64ct::{Base64UrlUnpadded, Encoding};
use jwt_simple::algorithms::RSAPublicKeyLike;
use jwt_simple::claims::NoCustomClaims;
use jwt_simple::common::VerificationOptions;
use jwt_simple::prelude::{Duration, UnixTimeStamp};
use serde_json::{Map, Value};

use crate::claims::{self, Extraction, Rejection, Verdict};
use crate::json::parse_strict;
use crate::jwks::{Key, ALGORITHM};

/// What a JWT's header says about its signature: the key that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub kid: String,
}

/// The `typ` values of a JWT access token: none, `JWT` (what ZITADEL sends)
/// or RFC 9068's `at+jwt`, compared as media types are, case-insensitively.
const ACCESS_TOKEN_TYPES: [&str; 3] = ["JWT", "at+jwt", "application/at+jwt"];

/// Reads the JOSE header of a JWT-shaped token: one JSON object (no member
/// twice) whose `alg` is RS256 (never `none`, never HMAC), with a `kid`, no `crit`, and
/// the `typ` of an access token if any. Anything else is
/// [`Rejection::BadHeader`]. Key hints (`jku`, `x5u`, `jwk`, `x5c`) are never
/// followed: the keys are the issuer's, fetched from where the configuration says.
pub fn read_header(token: &str) -> Result<Header, Rejection> {
    let header = token.split('.').next().and_then(decode_object).ok_or(Rejection::BadHeader)?;
    let text = |name: &str| header.get(name).map(|value| value.as_str().ok_or(Rejection::BadHeader)).transpose();
    if text("alg")? != Some(ALGORITHM) {
        return Err(Rejection::BadHeader);
    }
    let kid = text("kid")?.filter(|kid| !kid.is_empty()).ok_or(Rejection::BadHeader)?;
    let typ_ok = text("typ")?.is_none_or(|typ| ACCESS_TOKEN_TYPES.iter().any(|t| t.eq_ignore_ascii_case(typ)));
    if !typ_ok || header.contains_key("crit") {
        return Err(Rejection::BadHeader);
    }
    Ok(Header { kid: kid.to_owned() })
}

/// The verdict on a JWT whose header is `header`, signed (or not) with `key`,
/// at `now_ms`. A valid verdict needs claims that pass `claims::verdict`,
/// with `exp`, `client_id` and `jti` present (RFC 9068 requires them; an ID
/// token has no `client_id` or `jti`), an audience some API of the issuer
/// accepts, and a signature that verifies.
///
/// The signature is checked last: a token its claims already refuse (expired,
/// for no API of this issuer, an ID token...) is refused without the RSA
/// work, which is what a forger's unique tokens would otherwise cost (about
/// a millisecond each inside V8).
pub fn verify(token: &str, header: &Header, key: &Key, expected: &Extraction, now_ms: u64) -> Verdict {
    let Some(payload) = token.split('.').nth(1).and_then(decode_object) else {
        return Verdict::Invalid(Rejection::BadClaims);
    };
    if let Err(rejection) = access_token_claims(&payload) {
        return Verdict::Invalid(rejection);
    }
    match claims::verdict(&payload, expected, now_ms) {
        Err(_) => Verdict::Invalid(Rejection::BadClaims),
        Ok(Verdict::Valid(identity)) if identity.audiences.is_empty() => Verdict::Invalid(Rejection::WrongAudience),
        Ok(Verdict::Valid(identity)) if signature_verifies(token, &header.kid, key) => Verdict::Valid(identity),
        Ok(Verdict::Valid(_)) => Verdict::Invalid(Rejection::BadSignature),
        Ok(invalid) => invalid,
    }
}

/// The claims only an access token has must be there, with the right types;
/// those only an ID token has (OpenID Connect's `at_hash` and `c_hash`) must not.
fn access_token_claims(payload: &Map<String, Value>) -> Result<(), Rejection> {
    let has = |name: &str, is: fn(&Value) -> bool| payload.get(name).is_some_and(is);
    let non_empty = |value: &Value| value.as_str().is_some_and(|s| !s.is_empty());
    if !(has("exp", Value::is_number) && has("client_id", non_empty) && has("jti", non_empty)) {
        return Err(Rejection::BadClaims);
    }
    if payload.contains_key("at_hash") || payload.contains_key("c_hash") {
        return Err(Rejection::NotBearerAccessToken);
    }
    Ok(())
}

/// jwt-simple checks the RS256 signature (and `alg`, `crit`, `typ` and `kid` once more).
/// The time claims are `claims::verdict`'s, checked to the millisecond as an
/// introspection answer's are, so jwt-simple's own time checks are switched
/// off: a clock fixed at 0, no tolerance, dates in the future accepted.
fn signature_verifies(token: &str, kid: &str, key: &Key) -> bool {
    let options = VerificationOptions {
        accept_future: true,
        time_tolerance: Some(Duration::from_secs(0)),
        artificial_time: Some(UnixTimeStamp::from_secs(0)),
        required_key_id: Some(kid.to_owned()),
        ..VerificationOptions::default()
    };
    key.verify_token::<NoCustomClaims>(token, Some(options)).is_ok()
}

/// A Base64url part of a JWT holding one JSON object with no member twice.
fn decode_object(part: &str) -> Option<Map<String, Value>> {
    let bytes = Base64UrlUnpadded::decode_vec(part).ok()?;
    match parse_strict(&bytes).ok()? {
        Value::Object(object) => Some(object),
        _ => None,
    }
}

#[cfg(test)]
#[path = "jwt_tests.rs"]
pub(crate) mod tests;
