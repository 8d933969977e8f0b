//! The RFC 7662 introspection call: the request the filter sends and the
//! verdict it draws from the issuer's answer (see `claims` for what the
//! answer's claims mean).

use std::fmt::{self, Write as _};

use serde_json::{Map, Value};

use crate::claims::{self, BadClaim, Extraction, Rejection, Verdict};
use crate::json::{parse_strict, StrictError};

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
    /// Envoy could not connect to the issuer; its 503 local reply gives the
    /// reset reason ("remote connection failure" for a refused connection and
    /// for a TLS handshake the cluster refused alike).
    Unreachable(String),
    /// The response has no status at all.
    NoStatus,
    /// Not `application/json`.
    ContentType,
    /// The body exceeds the configured limit.
    TooLarge,
    /// Not a JSON object.
    NotJson,
    /// A member appears twice: the answer could be read two ways.
    Ambiguous,
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
            IssuerError::Unreachable(reason) => write!(f, "could not connect to the issuer ({reason})"),
            IssuerError::NoStatus => f.write_str("the issuer's answer has no status (or its connection broke off)"),
            IssuerError::ContentType => f.write_str("the issuer's answer is not application/json"),
            IssuerError::TooLarge => f.write_str("the issuer's answer is larger than allowed"),
            IssuerError::NotJson => f.write_str("the issuer's answer is not a JSON object"),
            IssuerError::Ambiguous => f.write_str("the issuer's answer repeats a member name"),
            IssuerError::BadMember(name) => {
                write!(f, "the issuer's answer has an invalid `{name}` member")
            }
        }
    }
}

impl IssuerError {
    /// True when the issuer is down rather than wrong: the connection refused
    /// or broken, a timeout (504), a 5xx. Not a 4xx (the filter's own
    /// credentials, a bad request) and not an answer that could not be read.
    pub fn is_outage(&self) -> bool {
        match self {
            // A refused certificate or handshake is a misconfiguration, or someone in between.
            IssuerError::Unreachable(reason) => {
                !reason.contains("CERTIFICATE_VERIFY_FAILED") && !reason.contains("TLS_error")
            }
            IssuerError::NoStatus => true,
            IssuerError::Status(status) => *status >= 500,
            _ => false,
        }
    }

    /// True when the cause is on the filter's side (its credentials, cluster,
    /// key or clock): logged at error level because only an operator can fix it.
    pub fn needs_operator(&self) -> bool {
        matches!(
            self,
            IssuerError::Dispatch | IssuerError::Signing | IssuerError::Clock | IssuerError::ClientRejected(_)
        )
    }
}

/// Envoy's own 503 when it cannot reach an upstream: "upstream connect error
/// or disconnect/reset before headers. reset reason: …, transport failure
/// reason: …". Returns the reasons, printable ASCII only and cut short.
fn envoy_connect_failure(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let rest = text.strip_prefix("upstream connect error or disconnect/reset before headers.")?;
    let reason: String = rest.trim().chars().filter(|c| c.is_ascii_graphic() || *c == ' ').take(240).collect();
    Some(reason)
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

/// Draws the verdict from the issuer's answer at time `now_ms` (unix milliseconds).
pub fn evaluate(response: IssuerResponse<'_>, expected: &Extraction, now_ms: u64) -> Result<Verdict, IssuerError> {
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
    let answer = match parse_strict(response.body) {
        Ok(Value::Object(answer)) => answer,
        Ok(_) | Err(StrictError::Syntax(_)) => return Err(IssuerError::NotJson),
        Err(StrictError::Duplicate { .. }) => return Err(IssuerError::Ambiguous),
    };
    match answer.get("active") {
        Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => return Ok(Verdict::Invalid(Rejection::Inactive)),
        _ => return Err(IssuerError::BadMember("active")),
    }
    claims::verdict(&answer, expected, now_ms).map_err(|BadClaim(name)| IssuerError::BadMember(name))
}

fn classify_error_status(status: u16, body: &[u8]) -> IssuerError {
    if status == 503 {
        if let Some(reason) = envoy_connect_failure(body) {
            return IssuerError::Unreachable(reason);
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claims::{claim_header_value, Identity, MAX_CLAIM_HEADER_BYTES};
    use serde_json::json;

    const NOW: u64 = 1_800_000_000;
    const NOW_MS: u64 = NOW * 1000;
    const PROJECT: &str = "300000000000000001";
    const ORG_CLAIM: &str = "urn:zitadel:iam:user:resourceowner:id";

    fn expectations() -> Extraction {
        Extraction {
            issuer: "https://issuer.example".into(),
            audiences: vec![PROJECT.into(), "api@demo".into()],
            role_claims: vec![
                "urn:zitadel:iam:org:project:roles".into(),
                format!("urn:zitadel:iam:org:project:{PROJECT}:roles"),
            ],
            header_claims: vec![ORG_CLAIM.into(), "username".into()],
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
            "username": "reader@demo.localhost",
            ORG_CLAIM: "300000000000000000",
            "urn:zitadel:iam:org:project:roles": {"read:messages": {"org1": "org.example"}},
            format!("urn:zitadel:iam:org:project:{PROJECT}:roles"): {
                "read:messages": {"org1": "org.example"},
                "admin": {"org1": "org.example"}
            }
        })
    }

    fn eval_body(body: &[u8]) -> Result<Verdict, IssuerError> {
        evaluate(
            IssuerResponse { status: Some(200), content_type: Some("application/json; charset=utf-8"), body },
            &expectations(),
            NOW_MS,
        )
    }

    fn eval_json(value: &Value) -> Result<Verdict, IssuerError> {
        eval_body(&serde_json::to_vec(value).unwrap())
    }

    fn eval_with(change: impl FnOnce(&mut Map<String, Value>)) -> Result<Verdict, IssuerError> {
        let mut answer = zitadel_answer();
        change(answer.as_object_mut().unwrap());
        eval_json(&answer)
    }

    fn identity(verdict: Result<Verdict, IssuerError>) -> Identity {
        match verdict {
            Ok(Verdict::Valid(identity)) => identity,
            other => panic!("not valid: {other:?}"),
        }
    }

    #[test]
    fn zitadel_active_answer_keeps_what_the_apis_check() {
        assert_eq!(
            identity(eval_json(&zitadel_answer())),
            Identity {
                subject: "user-1".into(),
                client_id: "svc-user-1".into(),
                audiences: vec![PROJECT.into()],
                // serde_json's objects are sorted by name.
                roles: vec![vec!["read:messages".into()], vec!["admin".into(), "read:messages".into()]],
                claims: vec![Some("300000000000000000".into()), Some("reader@demo.localhost".into())],
                expires_at: Some(NOW + 3600),
            }
        );
    }

    #[test]
    fn inactive_answer_is_rejected() {
        assert_eq!(eval_json(&json!({"active": false})), Ok(Verdict::Invalid(Rejection::Inactive)));
    }

    #[test]
    fn time_claims_are_checked() {
        assert_eq!(eval_with(|a| drop(a.insert("exp".into(), json!(NOW)))), Ok(Verdict::Invalid(Rejection::Expired)));
        assert_eq!(
            eval_with(|a| drop(a.insert("nbf".into(), json!(NOW + 11)))),
            Ok(Verdict::Invalid(Rejection::NotYetValid))
        );
        assert!(matches!(eval_with(|a| drop(a.insert("nbf".into(), json!(NOW + 10)))), Ok(Verdict::Valid(_))));
        assert_eq!(identity(eval_with(|a| drop(a.remove("exp")))).expires_at, None);
    }

    #[test]
    fn only_a_plain_bearer_access_token_is_valid() {
        let with = |member: &str, value: Value| eval_with(|a| drop(a.insert(member.into(), value)));
        for token_type in ["Bearer", "bearer", "BEARER"] {
            assert!(matches!(with("token_type", json!(token_type)), Ok(Verdict::Valid(_))), "{token_type}");
        }
        assert!(matches!(eval_with(|a| drop(a.remove("token_type"))), Ok(Verdict::Valid(_))));
        assert!(matches!(with("token_use", json!("access_token")), Ok(Verdict::Valid(_))));
        assert!(matches!(with("cnf", Value::Null), Ok(Verdict::Valid(_))));
        for token_type in ["refresh_token", "Refresh", "DPoP", "N_A", "urn:ietf:params:oauth:token-type:id_token", ""] {
            assert_eq!(
                with("token_type", json!(token_type)),
                Ok(Verdict::Invalid(Rejection::NotBearerAccessToken)),
                "{token_type}"
            );
        }
        for token_use in ["id", "access", "refresh_token", ""] {
            assert_eq!(
                with("token_use", json!(token_use)),
                Ok(Verdict::Invalid(Rejection::NotBearerAccessToken)),
                "{token_use}"
            );
        }
        for cnf in
            [json!({"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}), json!({"x5t#S256": "bwcK0e"}), json!({})]
        {
            assert_eq!(with("cnf", cnf.clone()), Ok(Verdict::Invalid(Rejection::SenderConstrained)), "{cnf}");
        }
        assert_eq!(with("token_type", json!(1)), Err(IssuerError::BadMember("token_type")));
        assert_eq!(with("token_use", json!(["access_token"])), Err(IssuerError::BadMember("token_use")));
        // A DPoP token is refused as bound, whatever its token_type says.
        let dpop = eval_with(|a| {
            a.insert("token_type".into(), json!("DPoP"));
            a.insert("cnf".into(), json!({"jkt": "x"}));
        });
        assert_eq!(dpop, Ok(Verdict::Invalid(Rejection::SenderConstrained)));
    }

    /// `exp` and `nbf` keep their meaning to the millisecond: valid until the
    /// exact second `exp` begins, from the exact second `nbf` minus the skew.
    #[test]
    fn time_claims_are_compared_to_the_millisecond() {
        let at = |now_ms: u64, member: &str, value: u64| {
            let mut answer = zitadel_answer();
            answer[member] = json!(value);
            let body = serde_json::to_vec(&answer).unwrap();
            let response = IssuerResponse { status: Some(200), content_type: Some("application/json"), body: &body };
            evaluate(response, &expectations(), now_ms)
        };
        assert!(matches!(at(NOW_MS + 999, "exp", NOW + 1), Ok(Verdict::Valid(_))));
        assert_eq!(at(NOW_MS + 1000, "exp", NOW + 1), Ok(Verdict::Invalid(Rejection::Expired)));
        assert_eq!(at(NOW_MS - 1, "nbf", NOW + 10), Ok(Verdict::Invalid(Rejection::NotYetValid)));
        assert!(matches!(at(NOW_MS, "nbf", NOW + 10), Ok(Verdict::Valid(_))));
    }

    #[test]
    fn issuer_is_checked_when_present() {
        assert_eq!(
            eval_with(|a| drop(a.insert("iss".into(), json!("https://evil.example")))),
            Ok(Verdict::Invalid(Rejection::WrongIssuer))
        );
        assert!(matches!(eval_with(|a| drop(a.remove("iss"))), Ok(Verdict::Valid(_))));
    }

    #[test]
    fn audiences_keep_only_those_an_api_accepts() {
        let only = |aud: Value| identity(eval_with(|a| drop(a.insert("aud".into(), aud)))).audiences;
        assert_eq!(only(json!(["someone-else"])), Vec::<String>::new());
        assert_eq!(only(json!("api@demo")), ["api@demo"]);
        assert_eq!(only(json!(["api@demo", PROJECT, "api@demo"])), ["api@demo", PROJECT]);
        assert_eq!(identity(eval_with(|a| drop(a.remove("aud")))).audiences, Vec::<String>::new());
    }

    #[test]
    fn malformed_members_are_issuer_errors() {
        assert_eq!(eval_json(&json!({"active": "true"})), Err(IssuerError::BadMember("active")));
        assert_eq!(eval_json(&json!({})), Err(IssuerError::BadMember("active")));
        assert_eq!(eval_with(|a| drop(a.insert("exp".into(), json!("soon")))), Err(IssuerError::BadMember("exp")));
        assert_eq!(eval_with(|a| drop(a.insert("exp".into(), json!(-1)))), Err(IssuerError::BadMember("exp")));
        assert_eq!(eval_with(|a| drop(a.insert("aud".into(), json!([1])))), Err(IssuerError::BadMember("aud")));
        assert_eq!(eval_with(|a| drop(a.insert("sub".into(), json!(7)))), Err(IssuerError::BadMember("sub")));
    }

    /// The answer could be read two ways: serde_json alone would keep the last `active`.
    #[test]
    fn duplicate_members_are_issuer_errors_at_any_depth() {
        for body in [
            &br#"{"active":false,"active":true,"aud":"api@demo"}"#[..],
            br#"{"active":true,"aud":"api@demo","aud":"other"}"#,
            br#"{"active":true,"aud":"api@demo","urn:zitadel:iam:org:project:roles":{"a":{},"a":{}}}"#,
            br#"{"active":true,"aud":"api@demo","x":[{"y":1,"y":2}]}"#,
        ] {
            assert_eq!(eval_body(body), Err(IssuerError::Ambiguous), "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn roles_come_from_objects_arrays_and_strings() {
        let mut expected = expectations();
        expected.role_claims = vec!["roles".into(), "scope".into(), "missing".into()];
        let body = serde_json::to_vec(&json!({
            "active": true, "aud": PROJECT, "roles": ["a", "b", 3, "x,admin", "q\"", "", "a"], "scope": "b  c"
        }))
        .unwrap();
        let verdict = evaluate(
            IssuerResponse { status: Some(200), content_type: Some("application/json"), body: &body },
            &expected,
            NOW_MS,
        );
        assert_eq!(identity(verdict).roles, [vec!["a", "b"], vec!["b", "c"], vec![]]);
    }

    #[test]
    fn claim_header_value_renders_each_json_type() {
        let long = "x".repeat(MAX_CLAIM_HEADER_BYTES + 1);
        let cases = [
            (json!("org-1"), Some("org-1")),
            (json!("  padded\r\n value\u{7f} "), Some("padded value")),
            (json!(42), Some("42")),
            (json!(1.5), Some("1.5")),
            (json!(true), Some("true")),
            (json!(["a", "b"]), Some("a,b")),
            (json!({"read:messages": {"o": "d"}, "admin": {}}), Some("admin,read:messages")),
            (json!(["a", 1]), None),
            (json!(["a,b", "c"]), None),
            (json!({"a,b": 1}), None),
            (json!([]), None),
            (json!(null), None),
            (json!("\u{0}\u{1}"), None),
            (json!(long), None),
        ];
        for (claim, expected) in cases {
            assert_eq!(claim_header_value(&claim).as_deref(), expected, "{claim}");
        }
    }

    #[test]
    fn subject_and_client_id_lose_control_characters() {
        let found = identity(eval_with(|a| {
            a.insert("sub".into(), json!("user\r\nx-evil: 1"));
            a.insert("client_id".into(), json!("\tclient "));
        }));
        assert_eq!((found.subject.as_str(), found.client_id.as_str()), ("userx-evil: 1", "client"));
    }

    #[test]
    fn transport_failures_are_issuer_errors() {
        let expected = expectations();
        let answer = |status, content_type, body: &'static [u8]| {
            evaluate(IssuerResponse { status, content_type, body }, &expected, NOW_MS)
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

    /// What Envoy's router answers a call it could not connect, as the filter gets it.
    #[test]
    fn envoys_connect_failures_are_told_apart() {
        let expected = expectations();
        let answer = |body: &'static [u8]| {
            evaluate(IssuerResponse { status: Some(503), content_type: Some("text/plain"), body }, &expected, NOW_MS)
        };
        let refused = answer(
            b"upstream connect error or disconnect/reset before headers. reset reason: remote connection failure\n\x01",
        );
        assert_eq!(refused, Err(IssuerError::Unreachable("reset reason: remote connection failure".into())));
        let message = refused.err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(message, "could not connect to the issuer (reset reason: remote connection failure)");
        assert_eq!(answer(b"no healthy upstream"), Err(IssuerError::Status(503)));
    }

    #[test]
    fn rejected_client_credentials_are_recognised() {
        let expected = expectations();
        let answer = |status, body: &'static [u8]| {
            evaluate(
                IssuerResponse { status: Some(status), content_type: Some("application/json"), body },
                &expected,
                NOW_MS,
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
