//! The RFC 7662 introspection call: the request the filter sends and the
//! verdict it draws from the issuer's answer.

use std::collections::HashSet;
use std::fmt::{self, Write as _};

use serde_json::{Map, Value};

use crate::rules::is_role_name;

/// Who a valid token speaks for, as forwarded upstream and kept in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `sub`; empty when the issuer sent none.
    pub subject: String,
    /// `client_id`; empty when the issuer sent none.
    pub client_id: String,
    /// Roles gathered from the configured role claims, deduplicated.
    pub roles: Vec<String>,
    /// Token `exp` (unix seconds); `None` when the issuer sent none.
    pub expires_at: Option<u64>,
}

/// The issuer answered, and this is what its answer means for the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Valid(Identity),
    Invalid(Rejection),
}

/// Why a token the issuer answered for is refused (answered with 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// `active: false`: unknown, revoked, expired at the issuer, or not for us.
    Inactive,
    /// `exp` is not in the future.
    Expired,
    /// `nbf` is in the future (beyond the allowed clock skew).
    NotYetValid,
    /// `aud` holds none of the configured audiences.
    WrongAudience,
    /// `iss` is not the configured issuer.
    WrongIssuer,
}

impl Rejection {
    /// Short text for the JSON error body; safe to show to the caller.
    pub fn description(self) -> &'static str {
        match self {
            Rejection::Inactive => "token is not active",
            Rejection::Expired => "token has expired",
            Rejection::NotYetValid => "token is not yet valid",
            Rejection::WrongAudience => "token is not meant for this API",
            Rejection::WrongIssuer => "token is from another issuer",
        }
    }
}

/// The issuer did not give a usable answer: nothing is known about the token,
/// so the request is refused with 503.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssuerError {
    /// The call could not be dispatched (e.g. unknown cluster).
    Dispatch,
    /// The client assertion could not be signed.
    Signing,
    /// The host clock is unusable, so no expiry can be checked.
    Clock,
    /// Non-200 status. Envoy reports a refused connection as 503 and a
    /// timeout as 504.
    Status(u16),
    /// 401, or 400 `invalid_client`/`unauthorized_client`: the filter's own
    /// client credentials are wrong. An operator must act.
    ClientRejected(u16),
    /// The response has no status at all.
    NoStatus,
    /// Not `application/json`.
    ContentType,
    /// The body exceeds the configured limit.
    TooLarge,
    /// Not a JSON object.
    NotJson,
    /// A member has the wrong type (e.g. `"active": "true"`).
    BadMember(&'static str),
}

impl fmt::Display for IssuerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IssuerError::Dispatch => {
                f.write_str("the introspection call could not be dispatched; check introspection.cluster")
            }
            IssuerError::Signing => f.write_str("the client assertion could not be signed"),
            IssuerError::Clock => f.write_str("the host clock is unusable"),
            IssuerError::Status(code) => write!(f, "the issuer answered HTTP {code}"),
            IssuerError::ClientRejected(code) => {
                write!(f, "the issuer rejected the filter's client credentials (HTTP {code}); check client_auth")
            }
            IssuerError::NoStatus => f.write_str("the issuer's answer has no status (or its connection broke off)"),
            IssuerError::ContentType => f.write_str("the issuer's answer is not application/json"),
            IssuerError::TooLarge => f.write_str("the issuer's answer is larger than allowed"),
            IssuerError::NotJson => f.write_str("the issuer's answer is not a JSON object"),
            IssuerError::BadMember(name) => {
                write!(f, "the issuer's answer has an invalid `{name}` member")
            }
        }
    }
}

impl IssuerError {
    /// True when the cause is on the filter's side (its credentials, cluster,
    /// key or clock): logged at error level because only an operator can fix it.
    pub fn needs_operator(&self) -> bool {
        matches!(
            self,
            IssuerError::Dispatch | IssuerError::Signing | IssuerError::Clock | IssuerError::ClientRejected(_)
        )
    }
}

/// What an answer must satisfy for a token to be valid.
#[derive(Debug, Clone)]
pub struct Expectations {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub role_claims: Vec<String>,
    /// Tolerated clock difference for `nbf`, in seconds. `exp` gets none.
    pub clock_skew_secs: u64,
}

/// How the filter authenticates itself to the introspection endpoint.
#[derive(Clone)]
pub enum ClientProof {
    /// A signed private_key_jwt assertion (RFC 7523).
    Assertion(String),
    /// A ready `Authorization: Basic …` value (client_secret_basic).
    BasicHeader(String),
}

/// Headers and body of the introspection POST.
pub struct IntrospectionRequest {
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

// Both carry credentials (the token, the assertion or the Basic secret): no Debug output.
impl fmt::Debug for ClientProof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientProof(..)")
    }
}

impl fmt::Debug for IntrospectionRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IntrospectionRequest(..)")
    }
}

pub fn build_request(authority: &str, path: &str, token: &str, proof: &ClientProof) -> IntrospectionRequest {
    let mut headers = vec![
        (":method", "POST".to_string()),
        (":path", path.to_string()),
        (":authority", authority.to_string()),
        ("content-type", "application/x-www-form-urlencoded".to_string()),
        ("accept", "application/json".to_string()),
    ];
    let mut body = String::with_capacity(token.len() + 1024);
    body.push_str("token=");
    form_encode_into(&mut body, token);
    body.push_str("&token_type_hint=access_token");
    match proof {
        ClientProof::Assertion(assertion) => {
            body.push_str(
                "&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=",
            );
            form_encode_into(&mut body, assertion);
        }
        ClientProof::BasicHeader(value) => headers.push(("authorization", value.clone())),
    }
    IntrospectionRequest { headers, body }
}

/// `application/x-www-form-urlencoded` encoding: everything but RFC 3986's
/// unreserved characters is percent-encoded.
pub fn form_encode_into(out: &mut String, value: &str) {
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
}

/// The parts of the issuer's HTTP answer the verdict depends on.
#[derive(Debug, Clone, Copy)]
pub struct IssuerResponse<'a> {
    pub status: Option<u16>,
    pub content_type: Option<&'a str>,
    pub body: &'a [u8],
}

/// Draws the verdict from the issuer's answer at time `now` (unix seconds).
pub fn evaluate(response: IssuerResponse<'_>, expected: &Expectations, now: u64) -> Result<Verdict, IssuerError> {
    let status = response.status.ok_or(IssuerError::NoStatus)?;
    if status != 200 {
        return Err(classify_error_status(status, response.body));
    }
    let is_json = response
        .content_type
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(IssuerError::ContentType);
    }
    let answer: Map<String, Value> = serde_json::from_slice(response.body).map_err(|_| IssuerError::NotJson)?;
    verdict_from_answer(&answer, expected, now)
}

fn classify_error_status(status: u16, body: &[u8]) -> IssuerError {
    let oauth_error = serde_json::from_slice::<Map<String, Value>>(body)
        .ok()
        .and_then(|answer| answer.get("error").and_then(Value::as_str).map(str::to_owned));
    let client_problem = matches!(oauth_error.as_deref(), Some("invalid_client" | "unauthorized_client"));
    if status == 401 || (status == 400 && client_problem) {
        IssuerError::ClientRejected(status)
    } else {
        IssuerError::Status(status)
    }
}

fn verdict_from_answer(answer: &Map<String, Value>, expected: &Expectations, now: u64) -> Result<Verdict, IssuerError> {
    match answer.get("active") {
        Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => return Ok(Verdict::Invalid(Rejection::Inactive)),
        _ => return Err(IssuerError::BadMember("active")),
    }
    let expires_at = optional_timestamp(answer, "exp")?;
    if expires_at.is_some_and(|exp| exp <= now) {
        return Ok(Verdict::Invalid(Rejection::Expired));
    }
    let not_before = optional_timestamp(answer, "nbf")?;
    if not_before.is_some_and(|nbf| nbf > now.saturating_add(expected.clock_skew_secs)) {
        return Ok(Verdict::Invalid(Rejection::NotYetValid));
    }
    if let Some(iss) = optional_string(answer, "iss")? {
        if iss != expected.issuer {
            return Ok(Verdict::Invalid(Rejection::WrongIssuer));
        }
    }
    if !audience_matches(answer.get("aud"), &expected.audiences)? {
        return Ok(Verdict::Invalid(Rejection::WrongAudience));
    }
    let mut roles = Roles::default();
    for claim in &expected.role_claims {
        roles.collect(answer.get(claim));
    }
    Ok(Verdict::Valid(Identity {
        subject: optional_string(answer, "sub")?.unwrap_or_default().to_owned(),
        client_id: optional_string(answer, "client_id")?.unwrap_or_default().to_owned(),
        roles: roles.list,
        expires_at,
    }))
}

fn optional_timestamp(answer: &Map<String, Value>, name: &'static str) -> Result<Option<u64>, IssuerError> {
    match answer.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite() && *f >= 0.0).map(|f| f as u64))
            .map(Some)
            .ok_or(IssuerError::BadMember(name)),
        Some(_) => Err(IssuerError::BadMember(name)),
    }
}

fn optional_string<'a>(answer: &'a Map<String, Value>, name: &'static str) -> Result<Option<&'a str>, IssuerError> {
    match answer.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(IssuerError::BadMember(name)),
    }
}

/// `aud` may be a string or an array of strings (RFC 7519 section 4.1.3).
/// A missing `aud` matches nothing: the filter never trusts a token that
/// does not say whom it is for.
fn audience_matches(aud: Option<&Value>, accepted: &[String]) -> Result<bool, IssuerError> {
    match aud {
        None | Some(Value::Null) => Ok(false),
        Some(Value::String(one)) => Ok(accepted.iter().any(|a| a == one)),
        Some(Value::Array(many)) => {
            let mut found = false;
            for value in many {
                let one = value.as_str().ok_or(IssuerError::BadMember("aud"))?;
                found |= accepted.iter().any(|a| a == one);
            }
            Ok(found)
        }
        Some(_) => Err(IssuerError::BadMember("aud")),
    }
}

/// Roles in first-seen order, without duplicates.
#[derive(Default)]
struct Roles {
    list: Vec<String>,
    seen: HashSet<String>,
}

impl Roles {
    /// A role claim may be ZITADEL's object (`{"role": {orgId: domain}}`, the
    /// role is the key), an array of strings, or a space-separated string such
    /// as OAuth's `scope`. Anything else holds no roles. Names that could not
    /// be forwarded unambiguously in the comma-joined roles header (`,`,
    /// spaces, quotes, control characters) are dropped.
    fn collect(&mut self, claim: Option<&Value>) {
        let mut add = |role: &str| {
            if is_role_name(role) && self.seen.insert(role.to_owned()) {
                self.list.push(role.to_owned());
            }
        };
        match claim {
            Some(Value::Object(map)) => map.keys().for_each(|k| add(k)),
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).for_each(add),
            Some(Value::String(list)) => list.split_ascii_whitespace().for_each(add),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: u64 = 1_800_000_000;
    const PROJECT: &str = "300000000000000001";

    fn expectations() -> Expectations {
        Expectations {
            issuer: "https://issuer.example".into(),
            audiences: vec![PROJECT.into(), "api@demo".into()],
            role_claims: vec![
                "urn:zitadel:iam:org:project:roles".into(),
                format!("urn:zitadel:iam:org:project:{PROJECT}:roles"),
            ],
            clock_skew_secs: 10,
        }
    }

    fn zitadel_answer() -> Value {
        json!({
            "active": true,
            "scope": "openid profile",
            "client_id": "svc-user-1",
            "token_type": "Bearer",
            "exp": NOW + 3600,
            "iat": NOW - 5,
            "nbf": NOW - 5,
            "sub": "user-1",
            "aud": [PROJECT, "other-app"],
            "iss": "https://issuer.example",
            "jti": "abc",
            "urn:zitadel:iam:org:project:roles": {"read:messages": {"org1": "org.example"}},
            format!("urn:zitadel:iam:org:project:{PROJECT}:roles"): {
                "read:messages": {"org1": "org.example"},
                "admin": {"org1": "org.example"}
            }
        })
    }

    fn eval_json(value: &Value) -> Result<Verdict, IssuerError> {
        let body = serde_json::to_vec(value).unwrap();
        evaluate(
            IssuerResponse { status: Some(200), content_type: Some("application/json; charset=utf-8"), body: &body },
            &expectations(),
            NOW,
        )
    }

    fn eval_with(change: impl FnOnce(&mut Map<String, Value>)) -> Result<Verdict, IssuerError> {
        let mut answer = zitadel_answer();
        change(answer.as_object_mut().unwrap());
        eval_json(&answer)
    }

    #[test]
    fn zitadel_active_answer_is_valid() {
        let verdict = eval_json(&zitadel_answer()).unwrap();
        assert_eq!(
            verdict,
            Verdict::Valid(Identity {
                subject: "user-1".into(),
                client_id: "svc-user-1".into(),
                roles: vec!["read:messages".into(), "admin".into()],
                expires_at: Some(NOW + 3600),
            })
        );
    }

    #[test]
    fn inactive_answer_is_rejected() {
        assert_eq!(eval_json(&json!({"active": false})), Ok(Verdict::Invalid(Rejection::Inactive)));
    }

    #[test]
    fn time_claims_are_checked() {
        assert_eq!(
            eval_with(|a| {
                a.insert("exp".into(), json!(NOW));
            }),
            Ok(Verdict::Invalid(Rejection::Expired))
        );
        assert_eq!(
            eval_with(|a| {
                a.insert("nbf".into(), json!(NOW + 11));
            }),
            Ok(Verdict::Invalid(Rejection::NotYetValid))
        );
        assert!(matches!(
            eval_with(|a| {
                a.insert("nbf".into(), json!(NOW + 10));
            }),
            Ok(Verdict::Valid(_))
        ));
        let no_exp = eval_with(|a| {
            a.remove("exp");
        })
        .unwrap();
        assert!(matches!(no_exp, Verdict::Valid(Identity { expires_at: None, .. })));
    }

    #[test]
    fn audience_and_issuer_are_checked() {
        assert_eq!(
            eval_with(|a| {
                a.insert("aud".into(), json!(["someone-else"]));
            }),
            Ok(Verdict::Invalid(Rejection::WrongAudience))
        );
        assert_eq!(
            eval_with(|a| {
                a.remove("aud");
            }),
            Ok(Verdict::Invalid(Rejection::WrongAudience))
        );
        assert!(matches!(
            eval_with(|a| {
                a.insert("aud".into(), json!("api@demo"));
            }),
            Ok(Verdict::Valid(_))
        ));
        assert_eq!(
            eval_with(|a| {
                a.insert("iss".into(), json!("https://evil.example"));
            }),
            Ok(Verdict::Invalid(Rejection::WrongIssuer))
        );
        assert!(matches!(
            eval_with(|a| {
                a.remove("iss");
            }),
            Ok(Verdict::Valid(_))
        ));
    }

    #[test]
    fn malformed_members_are_issuer_errors() {
        assert_eq!(eval_json(&json!({"active": "true"})), Err(IssuerError::BadMember("active")));
        assert_eq!(eval_json(&json!({})), Err(IssuerError::BadMember("active")));
        assert_eq!(
            eval_with(|a| {
                a.insert("exp".into(), json!("soon"));
            }),
            Err(IssuerError::BadMember("exp"))
        );
        assert_eq!(
            eval_with(|a| {
                a.insert("exp".into(), json!(-1));
            }),
            Err(IssuerError::BadMember("exp"))
        );
        assert_eq!(
            eval_with(|a| {
                a.insert("aud".into(), json!([1]));
            }),
            Err(IssuerError::BadMember("aud"))
        );
        assert_eq!(
            eval_with(|a| {
                a.insert("sub".into(), json!(7));
            }),
            Err(IssuerError::BadMember("sub"))
        );
    }

    #[test]
    fn roles_come_from_objects_arrays_and_strings() {
        let mut expected = expectations();
        expected.role_claims = vec!["roles".into(), "scope".into()];
        let body = serde_json::to_vec(&json!({
            "active": true, "aud": PROJECT, "roles": ["a", "b", 3, "x,admin", "q\"", ""], "scope": "b  c"
        }))
        .unwrap();
        let verdict = evaluate(
            IssuerResponse { status: Some(200), content_type: Some("application/json"), body: &body },
            &expected,
            NOW,
        );
        match verdict {
            Ok(Verdict::Valid(identity)) => assert_eq!(identity.roles, ["a", "b", "c"]),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn transport_failures_are_issuer_errors() {
        let expected = expectations();
        let answer = |status, content_type, body: &'static [u8]| {
            evaluate(IssuerResponse { status, content_type, body }, &expected, NOW)
        };
        assert_eq!(answer(Some(503), None, b""), Err(IssuerError::Status(503)));
        assert_eq!(answer(Some(504), None, b"upstream request timeout"), Err(IssuerError::Status(504)));
        assert_eq!(answer(None, None, b""), Err(IssuerError::NoStatus));
        assert_eq!(answer(Some(200), Some("text/html"), b"{\"active\":true}"), Err(IssuerError::ContentType));
        assert_eq!(answer(Some(200), None, b"{\"active\":true}"), Err(IssuerError::ContentType));
        assert_eq!(answer(Some(200), Some("application/json"), b"<html>"), Err(IssuerError::NotJson));
        assert_eq!(answer(Some(200), Some("application/json"), b"{\"active\":tr"), Err(IssuerError::NotJson));
        assert_eq!(answer(Some(200), Some("application/json"), b"[true]"), Err(IssuerError::NotJson));
    }

    #[test]
    fn rejected_client_credentials_are_recognised() {
        let expected = expectations();
        let answer = |status, body: &'static [u8]| {
            evaluate(
                IssuerResponse { status: Some(status), content_type: Some("application/json"), body },
                &expected,
                NOW,
            )
        };
        assert_eq!(answer(401, b"{\"error\":\"invalid_client\"}"), Err(IssuerError::ClientRejected(401)));
        assert_eq!(answer(401, b""), Err(IssuerError::ClientRejected(401)));
        assert_eq!(answer(400, b"{\"error\":\"unauthorized_client\"}"), Err(IssuerError::ClientRejected(400)));
        assert_eq!(answer(400, b"{\"error\":\"invalid_request\"}"), Err(IssuerError::Status(400)));
    }

    #[test]
    fn request_carries_token_and_assertion_form_encoded() {
        let request =
            build_request("issuer:8080", "/oauth/v2/introspect", "a+b/c=", &ClientProof::Assertion("x.y.z".into()));
        assert_eq!(
            request.body,
            "token=a%2Bb%2Fc%3D&token_type_hint=access_token&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=x.y.z"
        );
        assert!(request.headers.contains(&(":authority", "issuer:8080".into())));
        assert!(request.headers.contains(&(":path", "/oauth/v2/introspect".into())));
        assert!(!request.headers.iter().any(|(name, _)| *name == "authorization"));
    }

    #[test]
    fn request_with_basic_credentials_sets_the_header() {
        let request = build_request("i", "/p", "tok", &ClientProof::BasicHeader("Basic Zm9vOmJhcg==".into()));
        assert_eq!(request.body, "token=tok&token_type_hint=access_token");
        assert!(request.headers.contains(&("authorization", "Basic Zm9vOmJhcg==".into())));
    }
}
