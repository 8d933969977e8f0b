//! What a token's claims mean, wherever they come from: an issuer's
//! introspection answer (`introspection`) or a JWT verified locally (`jwt`).
//!
//! The verdict is the issuer's, not an API's: it is cached per issuer and
//! token and shared by every API that trusts the issuer. So it keeps what the
//! APIs need to decide for themselves on every request (which of their
//! audiences the token names, the roles of each role claim, the claims they
//! forward) and decides only what holds for all of them: not expired, not
//! before its `nbf`, from this issuer, a plain bearer access token.

use serde_json::{Map, Value};

use crate::rules::is_role_name;

/// Who a valid token speaks for, and what the APIs that trust its issuer may
/// check on it. Kept in the cache; the lists follow [`Extraction`]'s order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `sub`; empty when the issuer sent none. Control characters removed.
    pub subject: String,
    /// `client_id`; empty when the issuer sent none. Control characters removed.
    pub client_id: String,
    /// The token's `aud` values that some API of this issuer accepts.
    pub audiences: Vec<String>,
    /// For each of [`Extraction::role_claims`], the roles it holds.
    pub roles: Vec<Vec<String>>,
    /// For each of [`Extraction::header_claims`], its header value, if it has one.
    pub claims: Vec<Option<String>>,
    /// Token `exp` (unix seconds); `None` when the issuer sent none.
    pub expires_at: Option<u64>,
}

/// What the issuer's answer, or a verified JWT, means for the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Valid(Identity),
    Invalid(Rejection),
}

/// Why a token is refused (answered with 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// `active: false`: unknown, revoked, expired at the issuer, or not for us.
    Inactive,
    /// `exp` is not in the future.
    Expired,
    /// `nbf` is in the future (beyond the allowed clock skew).
    NotYetValid,
    /// `iss` is not the issuer that was asked (or whose keys verified it).
    WrongIssuer,
    /// The issuer says it is not a plain bearer access token: a `token_type`
    /// other than `Bearer` (a refresh token, say) or a `token_use` other than
    /// `access_token`.
    NotBearerAccessToken,
    /// The token is bound to a key (`cnf`: DPoP, RFC 9449, or mutual TLS,
    /// RFC 8705) and was presented as a plain bearer token.
    SenderConstrained,
    /// `aud` holds none of the API's audiences.
    WrongAudience,
    /// A JWT whose `iss` is none of the issuers the API trusts (no call is made).
    UntrustedIssuer,
    /// A JWT whose payload names no issuer (no call is made).
    NoIssuer,
    /// A JWT of an issuer whose JWTs are verified locally, whose header is not
    /// that of a signed access token: `alg` `none`, HMAC or any algorithm
    /// other than RS256, no `kid`, a `crit` member, a `typ` other
    /// than a JWT's, or a header that is not one JSON object.
    BadHeader,
    /// Such a JWT signed with a key its issuer does not publish (after a
    /// refresh of its keys). Not cached: the next refresh may bring the key.
    UnknownKey,
    /// Such a JWT whose signature does not verify with the key its `kid` names.
    BadSignature,
    /// Such a JWT with a claim of the wrong type, or without one an access
    /// token must have (`exp`, `client_id`, `jti`; RFC 9068).
    BadClaims,
}

impl Rejection {
    /// Short text for the JSON error body; safe to show to the caller.
    pub fn description(self) -> &'static str {
        match self {
            Rejection::Inactive => "token is not active",
            Rejection::Expired => "token has expired",
            Rejection::NotYetValid => "token is not yet valid",
            Rejection::WrongIssuer => "token is from another issuer",
            Rejection::NotBearerAccessToken => "token is not a bearer access token",
            Rejection::SenderConstrained => "token is bound to a key (DPoP or mTLS), which is not supported",
            Rejection::WrongAudience => "token is not meant for this API",
            Rejection::UntrustedIssuer => "token is from an issuer this API does not trust",
            Rejection::NoIssuer => "token does not name its issuer",
            Rejection::BadHeader => "token is not a signed access token of a supported algorithm",
            Rejection::UnknownKey => "token is signed with a key its issuer does not publish",
            Rejection::BadSignature => "token signature does not verify",
            Rejection::BadClaims => "token claims are malformed or incomplete",
        }
    }
}

/// What an issuer's tokens must satisfy, and what is kept of them: the union of
/// what the APIs that trust this issuer check and forward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extraction {
    /// The expected `iss`.
    pub issuer: String,
    /// Every audience some API of this issuer accepts.
    pub audiences: Vec<String>,
    pub role_claims: Vec<String>,
    /// Claims forwarded as headers by some API of this issuer.
    pub header_claims: Vec<String>,
    /// Tolerated clock difference for `nbf`, in seconds. `exp` gets none.
    pub clock_skew_secs: u64,
}

/// Longest claim value forwarded in a header; a longer one is not forwarded.
pub const MAX_CLAIM_HEADER_BYTES: usize = 4096;

/// A claim of the wrong type: the token could be read two ways. Names the claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadClaim(pub &'static str);

/// The verdict on a token's claims at time `now_ms` (unix milliseconds), for
/// an issuer whose APIs expect `expected`.
pub fn verdict(claims: &Map<String, Value>, expected: &Extraction, now_ms: u64) -> Result<Verdict, BadClaim> {
    // `exp` and `nbf` are whole seconds: compared in milliseconds, nothing is rounded.
    let ms = |secs: u64| secs.saturating_mul(1000);
    let expires_at = optional_timestamp(claims, "exp")?;
    if expires_at.is_some_and(|exp| ms(exp) <= now_ms) {
        return Ok(Verdict::Invalid(Rejection::Expired));
    }
    let not_before = optional_timestamp(claims, "nbf")?;
    if not_before.is_some_and(|nbf| ms(nbf) > now_ms.saturating_add(ms(expected.clock_skew_secs))) {
        return Ok(Verdict::Invalid(Rejection::NotYetValid));
    }
    if let Some(iss) = optional_string(claims, "iss")? {
        if iss != expected.issuer {
            return Ok(Verdict::Invalid(Rejection::WrongIssuer));
        }
    }
    // A bound token's proof of possession is not checked here: refuse it (first, so that a
    // DPoP token, whose token_type is "DPoP" too, is refused as what it is).
    if claims.get("cnf").is_some_and(|cnf| !cnf.is_null()) {
        return Ok(Verdict::Invalid(Rejection::SenderConstrained));
    }
    // RFC 7662 `token_type` (compared as RFC 6749 section 5.1 says, case-insensitively)
    // and AWS-style `token_use`: only a bearer access token opens an API.
    let is_bearer = optional_string(claims, "token_type")?.is_none_or(|t| t.eq_ignore_ascii_case("bearer"));
    let is_access = optional_string(claims, "token_use")?.is_none_or(|u| u == "access_token");
    if !is_bearer || !is_access {
        return Ok(Verdict::Invalid(Rejection::NotBearerAccessToken));
    }
    let audiences = known_audiences(claims.get("aud"), &expected.audiences)?;
    Ok(Verdict::Valid(Identity {
        subject: header_text(optional_string(claims, "sub")?.unwrap_or_default()),
        client_id: header_text(optional_string(claims, "client_id")?.unwrap_or_default()),
        audiences,
        roles: expected.role_claims.iter().map(|claim| roles_of(claims.get(claim))).collect(),
        claims: expected.header_claims.iter().map(|claim| claims.get(claim).and_then(claim_header_value)).collect(),
        expires_at,
    }))
}

pub(crate) fn optional_timestamp(claims: &Map<String, Value>, name: &'static str) -> Result<Option<u64>, BadClaim> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite() && *f >= 0.0).map(|f| f as u64))
            .map(Some)
            .ok_or(BadClaim(name)),
        Some(_) => Err(BadClaim(name)),
    }
}

pub(crate) fn optional_string<'a>(
    claims: &'a Map<String, Value>,
    name: &'static str,
) -> Result<Option<&'a str>, BadClaim> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(BadClaim(name)),
    }
}

/// `aud` may be a string or an array of strings (RFC 7519 section 4.1.3).
/// Keeps the values some API accepts; a missing `aud` keeps none, so no API
/// ever trusts a token that does not say whom it is for.
fn known_audiences(aud: Option<&Value>, accepted: &[String]) -> Result<Vec<String>, BadClaim> {
    let mut known: Vec<String> = Vec::new();
    let mut keep = |one: &str| {
        if accepted.iter().any(|a| a == one) && !known.iter().any(|k| k == one) {
            known.push(one.to_owned());
        }
    };
    match aud {
        None | Some(Value::Null) => {}
        Some(Value::String(one)) => keep(one),
        Some(Value::Array(many)) => {
            for value in many {
                keep(value.as_str().ok_or(BadClaim("aud"))?);
            }
        }
        Some(_) => return Err(BadClaim("aud")),
    }
    Ok(known)
}

/// A role claim may be ZITADEL's object (`{"role": {orgId: domain}}`, the
/// role is the key), an array of strings, or a space-separated string such
/// as OAuth's `scope`. Anything else holds no roles. Names that could not be
/// forwarded unambiguously in the comma-joined roles header (`,`, spaces,
/// quotes, control characters) are dropped; duplicates are kept once.
fn roles_of(claim: Option<&Value>) -> Vec<String> {
    let mut roles: Vec<String> = Vec::new();
    let mut add = |role: &str| {
        if is_role_name(role) && !roles.iter().any(|r| r == role) {
            roles.push(role.to_owned());
        }
    };
    match claim {
        Some(Value::Object(map)) => map.keys().for_each(|k| add(k)),
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).for_each(add),
        Some(Value::String(list)) => list.split_ascii_whitespace().for_each(add),
        _ => {}
    }
    roles
}

/// A claim as a header value: strings as they are, numbers and booleans as
/// JSON writes them, arrays of strings comma-joined, objects as their keys
/// comma-joined (ZITADEL's roles shape). Anything else, an element or key
/// holding a `,` (the list could then be read two ways), or a value over
/// [`MAX_CLAIM_HEADER_BYTES`] is not forwarded. Control characters are removed.
pub fn claim_header_value(claim: &Value) -> Option<String> {
    let list = |items: &mut dyn Iterator<Item = Option<&str>>| -> Option<String> {
        let mut joined = String::new();
        for item in items {
            let item = item.filter(|s| !s.contains(','))?;
            if !joined.is_empty() {
                joined.push(',');
            }
            joined.push_str(item);
        }
        Some(joined)
    };
    let text = match claim {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Array(items) => list(&mut items.iter().map(Value::as_str))?,
        Value::Object(map) => list(&mut map.keys().map(|k| Some(k.as_str())))?,
        Value::Null => return None,
    };
    let text = header_text(&text);
    (!text.is_empty() && text.len() <= MAX_CLAIM_HEADER_BYTES).then_some(text)
}

/// What a header value may carry of issuer data: no control characters, no
/// surrounding spaces (which parsers would trim one way or another).
fn header_text(value: &str) -> String {
    let clean: String = value.chars().filter(|c| !c.is_control()).collect();
    clean.trim_matches([' ', '\t']).to_owned()
}
