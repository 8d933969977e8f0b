//! A check of the filter's own credentials at an issuer, before traffic
//! depends on them: it introspects a token nobody holds, authenticated as
//! every real call is (the signed assertion, or the client secret). An issuer
//! that takes the credentials answers `active: false`; one that does not says
//! why (`invalid_client`, "invalid signature"...). Run by `check-config
//! --probe` and, once per Envoy, shortly after a configuration loads; never on
//! a request's path.

use std::cell::RefCell;
use std::fmt;
use std::time::Duration;

use log::{error, info};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::client_auth::SigningError;
use crate::host::{CallAnswer, Host};
use crate::introspection::{self, IntrospectionRequest, IssuerError, IssuerResponse};
use crate::metrics::IssuerCounter;
use crate::policy::{Issuer, IssuerId, Policy};

/// How long after a configuration loads its issuers are probed.
pub const PROBE_DELAY: Duration = Duration::from_secs(1);

/// What the issuer made of the filter's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The issuer authenticated the filter (and called the token unknown).
    Accepted,
    /// The issuer refused the filter's credentials: its status and its own
    /// words (`error`, `error_description`).
    Rejected { status: u16, error: String },
    /// No answer about the credentials: the issuer could not be reached, or
    /// answered something else (a 5xx, not JSON...).
    Failed(String),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Accepted => f.write_str("credentials accepted"),
            Outcome::Rejected { status, error } => {
                write!(f, "credentials rejected: the issuer answered HTTP {status}: {error}")
            }
            Outcome::Failed(why) => write!(f, "credentials not checked: {why}"),
        }
    }
}

/// The introspection request of a probe of `issuer` at `now` (unix seconds),
/// for a random token.
pub fn request(issuer: &Issuer, now: u64) -> Result<IntrospectionRequest, SigningError> {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes).map_err(|_| SigningError)?;
    let token: String = std::iter::once("probe-".to_string()).chain(bytes.iter().map(|b| format!("{b:02x}"))).collect();
    let proof = issuer.client_auth.proof(now)?;
    let endpoint = &issuer.endpoint;
    Ok(introspection::build_request(&endpoint.authority, &endpoint.path, &token, &proof))
}

/// What the issuer's answer to a probe says of the credentials.
pub fn outcome(issuer: &Issuer, response: IssuerResponse<'_>, now_ms: u64) -> Outcome {
    match introspection::evaluate(response, &issuer.extraction, now_ms) {
        Ok(_) => Outcome::Accepted,
        Err(IssuerError::ClientRejected(status)) => Outcome::Rejected { status, error: issuer_error(response.body) },
        Err(err) => Outcome::Failed(err.to_string()),
    }
}

/// The probe of one plugin configuration inside Envoy: once per Envoy, not
/// per VM. Every VM creates the configuration's shared-data key when it loads
/// (a CAS on a key that does not exist always succeeds, so the key must exist
/// first); a second later, on a tick, the one VM whose CAS marks it probes
/// each issuer from its root context, logs one line per issuer and counts.
pub struct Prober {
    key: String,
    state: RefCell<State>,
}

enum State {
    /// Not yet tried.
    Due,
    /// These calls are under way, one per issuer.
    Sent(Vec<(u32, IssuerId)>),
    /// Done here, or by another VM.
    Done,
}

impl Prober {
    /// The prober of the configuration `raw`, whose shared-data keys start with `namespace`.
    pub fn new(host: &impl Host, namespace: &str, raw: &[u8]) -> Self {
        let digest: String = Sha256::digest(raw).iter().take(8).map(|b| format!("{b:02x}")).collect();
        let key = format!("oauth_introspection.v3.{namespace}.probe.{digest}");
        if host.get(&key).1.is_none() {
            host.set(&key, &[], None);
        }
        Prober { key, state: RefCell::new(State::Due) }
    }

    /// Whether the probe still waits for its tick.
    pub fn is_due(&self) -> bool {
        matches!(*self.state.borrow(), State::Due)
    }

    /// On a tick of the root context: probe every issuer, if no other VM has.
    pub fn on_tick(&self, host: &impl Host, policy: &Policy, now_ms: u64) {
        if !self.is_due() {
            return;
        }
        // The one VM whose CAS marks the key probes; a missing key (no CAS
        // possible) or a marked one means another VM does, or will.
        let (value, cas) = host.get(&self.key);
        if value.is_some() || cas.is_none() || !host.set(&self.key, b"probed", cas) {
            *self.state.borrow_mut() = State::Done;
            return;
        }
        let mut sent = Vec::new();
        for (at, issuer) in policy.issuers.iter().enumerate() {
            let call = request(issuer, now_ms / 1000).ok().and_then(|request| {
                let headers: Vec<(&str, &str)> = request.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
                host.dispatch(&issuer.endpoint.cluster, &headers, request.body.as_bytes(), issuer.endpoint.timeout)
            });
            match call {
                Some(call_id) => sent.push((call_id, IssuerId(at))),
                None => report(host, IssuerId(at), issuer, &Outcome::Failed("the probe could not be sent".into())),
            }
        }
        *self.state.borrow_mut() = if sent.is_empty() { State::Done } else { State::Sent(sent) };
    }

    /// The answer to call `call_id`, if it is a probe's: logged and counted. False
    /// when the call is not one of the probe's.
    pub fn on_call_response(
        &self,
        host: &impl Host,
        policy: &Policy,
        call_id: u32,
        num_headers: usize,
        body_size: usize,
        now_ms: u64,
    ) -> bool {
        let issuer_id = {
            let mut state = self.state.borrow_mut();
            let State::Sent(calls) = &mut *state else { return false };
            let Some(at) = calls.iter().position(|(id, _)| *id == call_id) else { return false };
            let (_, issuer_id) = calls.swap_remove(at);
            if calls.is_empty() {
                *state = State::Done;
            }
            issuer_id
        };
        if let Some(issuer) = policy.issuer(issuer_id) {
            let result = match CallAnswer::read(host, num_headers, body_size, policy.max_response_bytes) {
                Ok(answer) => outcome(issuer, answer.response(), now_ms),
                Err(err) => Outcome::Failed(err.to_string()),
            };
            report(host, issuer_id, issuer, &result);
        }
        true
    }
}

/// One log line and one counter per issuer and probe.
fn report(host: &impl Host, id: IssuerId, issuer: &Issuer, outcome: &Outcome) {
    let client = issuer.client_auth.client_id();
    match outcome {
        Outcome::Accepted => {
            info!("issuer {}: {outcome} for client {client} at {}", issuer.name, issuer.url());
            host.count_issuer(id, IssuerCounter::CredentialsAccepted);
        }
        Outcome::Rejected { .. } => {
            error!("issuer {}: {outcome} for client {client} at {}; check client_auth", issuer.name, issuer.url());
            host.count_issuer(id, IssuerCounter::CredentialsRejected);
        }
        Outcome::Failed(_) => {
            error!("issuer {}: {outcome} (client {client} at {})", issuer.name, issuer.url());
            host.count_issuer(id, IssuerCounter::CredentialsUnchecked);
        }
    }
}

/// The issuer's `error` and `error_description`, as printable text, cut short.
fn issuer_error(body: &[u8]) -> String {
    let answer: Option<Value> = serde_json::from_slice(body).ok();
    let member = |name: &str| answer.as_ref().and_then(|a| a.get(name)).and_then(Value::as_str).map(printable);
    match (member("error"), member("error_description")) {
        (Some(error), Some(description)) => format!("{error}: {description}"),
        (Some(error), None) => error,
        (None, _) => "(no OAuth error in the answer)".into(),
    }
}

fn printable(text: &str) -> String {
    text.chars().filter(|c| c.is_ascii_graphic() || *c == ' ').take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::load;
    use serde_json::json;

    fn issuer() -> Issuer {
        let config = json!({
            "issuer": "https://issuer.example", "introspection": {"cluster": "issuer"}, "project_id": "100",
            "client_auth": {"method": "client_secret_basic", "client_id": "api@demo", "client_secret": "s3cret"},
            "rules": [{"prefix": "/", "access": "authenticated"}]
        });
        load(config.to_string().as_bytes(), &|_| None).unwrap().issuers.remove(0)
    }

    fn answer(status: u16, body: &[u8]) -> Outcome {
        outcome(&issuer(), IssuerResponse { status: Some(status), content_type: Some("application/json"), body }, 0)
    }

    #[test]
    fn a_probe_introspects_a_random_token_with_the_filters_credentials() {
        let issuer = issuer();
        let one = request(&issuer, 1_700_000_000).unwrap();
        let two = request(&issuer, 1_700_000_000).unwrap();
        assert!(one.body.starts_with("token=probe-") && one.body != two.body);
        assert!(one.headers.iter().any(|(name, value)| *name == "authorization" && value.starts_with("Basic ")));
        assert!(one.headers.contains(&(":path", "/oauth/v2/introspect".into())));
    }

    #[test]
    fn an_answer_about_the_token_means_the_credentials_were_taken() {
        assert_eq!(answer(200, br#"{"active":false}"#), Outcome::Accepted);
    }

    #[test]
    fn a_refusal_of_the_credentials_is_told_in_the_issuers_words() {
        let rejected = answer(401, br#"{"error":"invalid_client","error_description":"client_assertion\ninvalid"}"#);
        assert_eq!(
            rejected,
            Outcome::Rejected { status: 401, error: "invalid_client: client_assertioninvalid".into() }
        );
        assert_eq!(
            rejected.to_string(),
            "credentials rejected: the issuer answered HTTP 401: invalid_client: client_assertioninvalid"
        );
        let zitadel = answer(400, br#"{"error":"unauthorized_client"}"#);
        assert_eq!(zitadel, Outcome::Rejected { status: 400, error: "unauthorized_client".into() });
        assert_eq!(answer(401, b""), Outcome::Rejected { status: 401, error: "(no OAuth error in the answer)".into() });
    }

    #[test]
    fn anything_else_checks_nothing() {
        assert!(matches!(answer(503, b""), Outcome::Failed(_)));
        assert!(matches!(answer(200, b"<html>"), Outcome::Failed(_)));
        assert!(matches!(answer(400, br#"{"error":"invalid_request"}"#), Outcome::Failed(_)));
    }
}
