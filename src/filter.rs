//! The proxy-wasm glue: reads the request, asks the plain-Rust modules what
//! to do, and carries it out with host calls. No decision is made here that
//! a host test could not make.
//!
//! Headers are always read as bytes: the SDK's `String` getters unwrap
//! `from_utf8`, so one non-UTF-8 header would panic the VM.

use std::rc::Rc;
use std::time::UNIX_EPOCH;

use log::{debug, error, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, MetricType};

use crate::cache::{SharedData, StoreOutcome, VerdictCache};
use crate::config::{self, Config};
use crate::introspection::{self, Identity, IssuerError, IssuerResponse, Verdict};
use crate::path::canonical_path;
use crate::response::Denial;
use crate::rules::Access;
use crate::token::{bearer_token, TokenError, TokenHash};

/// Everything a request needs, built once per VM at configure time.
struct Plugin {
    config: Config,
    cache: VerdictCache,
    metrics: Metrics,
}

#[derive(Default)]
pub struct FilterRoot {
    plugin: Option<Rc<Plugin>>,
}

impl Context for FilterRoot {}

impl RootContext for FilterRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let raw = self.get_plugin_configuration().unwrap_or_default();
        match config::parse(&raw, &|name| std::env::var(name).ok()) {
            Ok(config) => {
                let cache = VerdictCache::new(config.cache.clone());
                self.plugin = Some(Rc::new(Plugin { config, cache, metrics: Metrics::define() }));
                true
            }
            Err(err) => {
                error!("{err}");
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(match &self.plugin {
            Some(plugin) => Box::new(RequestFilter { plugin: Rc::clone(plugin), pending: None }),
            // A failed configure fails the plugin load, so this should not be
            // reached; if it is, refuse rather than pass requests unchecked.
            None => Box::new(Unconfigured),
        })
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// A request waiting for the issuer's answer.
struct PendingIntrospection {
    call_id: u32,
    token_hash: TokenHash,
    access: Access,
}

struct RequestFilter {
    plugin: Rc<Plugin>,
    pending: Option<PendingIntrospection>,
}

impl RequestFilter {
    /// Unix seconds; `None` if the host clock is unusable (then nothing is valid).
    fn now(&self) -> Option<u64> {
        self.get_current_time().duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
    }

    fn request_header(&self, name: &str) -> Option<Result<String, ()>> {
        self.get_http_request_header_bytes(name).map(|bytes| String::from_utf8(bytes).map_err(|_| ()))
    }

    fn deny(&self, denial: Denial) -> Action {
        debug!("denied: {}", denial.reason());
        self.plugin.metrics.denied(&denial);
        send_reply(self, &denial)
    }

    /// The issuer could not vouch for the token: log why, count it, answer 503.
    fn fail(&self, err: IssuerError) -> Action {
        increment(self.plugin.metrics.issuer_errors);
        if err.needs_operator() {
            error!("token introspection failed: {err}");
        } else {
            warn!("token introspection failed: {err}");
        }
        self.deny(Denial::IssuerUnavailable)
    }

    /// Applies the route's own requirement to a verdict, cached or fresh.
    fn admit(&self, identity: &Identity, access: &Access) -> Action {
        if let Err(required) = access.check_roles(&identity.roles) {
            return self.deny(Denial::InsufficientRole(required.to_vec()));
        }
        let headers = &self.plugin.config.identity_headers;
        for (name, value) in [
            (&headers.subject, header_value(&identity.subject)),
            (&headers.client_id, header_value(&identity.client_id)),
            (&headers.roles, header_value(&identity.roles.join(","))),
        ] {
            if !value.is_empty() {
                self.set_http_request_header(name, Some(&value));
            }
        }
        increment(self.plugin.metrics.allowed);
        Action::Continue
    }

    fn start_introspection(&mut self, token: &str, token_hash: TokenHash, access: Access, now: u64) -> Action {
        let plugin = Rc::clone(&self.plugin);
        let endpoint = &plugin.config.introspection;
        let client_auth = &plugin.config.client_auth;
        let signatures_before = client_auth.signatures();
        let proof = match client_auth.proof(now) {
            Ok(proof) => proof,
            Err(_) => return self.fail(IssuerError::Signing),
        };
        if client_auth.signatures() > signatures_before {
            increment(plugin.metrics.assertions_signed);
        }
        let request = introspection::build_request(&endpoint.authority, &endpoint.path, token, &proof);
        increment(plugin.metrics.introspections);
        let dispatched = self.dispatch_http_call(
            &endpoint.cluster,
            header_refs(&request.headers),
            Some(request.body.as_bytes()),
            vec![],
            endpoint.timeout,
        );
        match dispatched {
            Ok(call_id) => {
                self.pending = Some(PendingIntrospection { call_id, token_hash, access });
                Action::Pause
            }
            Err(_) => self.fail(IssuerError::Dispatch),
        }
    }

    fn issuer_verdict(&self, body_size: usize, now: u64) -> Result<Verdict, IssuerError> {
        if body_size > self.plugin.config.max_response_bytes {
            return Err(IssuerError::TooLarge);
        }
        let header = |name| self.get_http_call_response_header_bytes(name).and_then(|v| String::from_utf8(v).ok());
        let status = header(":status").and_then(|s| s.parse::<u16>().ok());
        let content_type = header("content-type");
        let body = match body_size {
            0 => Vec::new(),
            size => self.get_http_call_response_body(0, size).unwrap_or_default(),
        };
        let response = IssuerResponse { status, content_type: content_type.as_deref(), body: &body };
        introspection::evaluate(response, &self.plugin.config.expectations, now)
    }

    fn hold_while_pending(&self) -> Action {
        if self.pending.is_some() {
            Action::Pause
        } else {
            Action::Continue
        }
    }
}

impl Context for RequestFilter {
    fn on_http_call_response(&mut self, call_id: u32, _num_headers: usize, body_size: usize, _num_trailers: usize) {
        let Some(pending) = self.pending.take_if(|p| p.call_id == call_id) else {
            return;
        };
        let Some(now) = self.now() else {
            self.fail(IssuerError::Clock);
            return;
        };
        let action = match self.issuer_verdict(body_size, now) {
            Ok(Verdict::Valid(identity)) => {
                let outcome = self.plugin.cache.store(&HostSharedData, &pending.token_hash, &identity, now);
                if outcome != StoreOutcome::Stored {
                    debug!("verdict not cached: {outcome:?}");
                }
                self.admit(&identity, &pending.access)
            }
            Ok(Verdict::Invalid(rejection)) => self.deny(Denial::InvalidToken(rejection)),
            Err(err) => self.fail(err),
        };
        if action == Action::Continue {
            self.resume_http_request();
        }
    }
}

impl HttpContext for RequestFilter {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let plugin = Rc::clone(&self.plugin);
        // Identity headers come from this filter only, never from the client.
        for name in plugin.config.identity_headers.names() {
            self.set_http_request_header(name, None);
        }
        let method = self.request_header(":method").and_then(Result::ok).unwrap_or_default();
        let raw_path = self.get_http_request_header_bytes(":path").unwrap_or_default();
        let path = match canonical_path(&raw_path) {
            Ok(path) => path,
            Err(err) => return self.deny(Denial::BadPath(err)),
        };
        let access = match plugin.config.rules.access_for(&method, &path) {
            None => return self.deny(Denial::NoRule),
            Some(Access::Public) => return Action::Continue,
            Some(access) => access.clone(),
        };
        let header = match self.request_header("authorization") {
            None => None,
            Some(Ok(value)) => Some(value),
            Some(Err(())) => return self.deny(Denial::MalformedToken),
        };
        let token = match bearer_token(header.as_deref()) {
            Ok(token) => token,
            Err(err) => return self.deny(err.into()),
        };
        let Some(now) = self.now() else {
            return self.fail(IssuerError::Clock);
        };
        let token_hash = TokenHash::of(token);
        match plugin.cache.lookup(&HostSharedData, &token_hash, now) {
            Some(identity) => {
                increment(plugin.metrics.cache_hits);
                self.admit(&identity, &access)
            }
            None => {
                increment(plugin.metrics.cache_misses);
                self.start_introspection(token, token_hash, access, now)
            }
        }
    }

    // Body and trailers stay with Envoy until the verdict is in: nothing of a
    // request moves upstream while its introspection call is pending.
    fn on_http_request_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        self.hold_while_pending()
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        // An upstream that merges trailers into headers must not see forged identity either.
        for name in self.plugin.config.identity_headers.names() {
            self.set_http_request_trailer(name, None);
        }
        self.hold_while_pending()
    }
}

impl From<TokenError> for Denial {
    fn from(err: TokenError) -> Self {
        match err {
            TokenError::Missing => Denial::MissingToken,
            TokenError::Malformed => Denial::MalformedToken,
        }
    }
}

/// Answers 503 to everything: used only if a VM has no valid configuration.
struct Unconfigured;

impl Context for Unconfigured {}

impl HttpContext for Unconfigured {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        send_reply(self, &Denial::IssuerUnavailable)
    }
}

/// Sends the denial's local reply; the request goes no further.
fn send_reply(http: &impl HttpContext, denial: &Denial) -> Action {
    let reply = denial.reply();
    http.send_http_response(reply.status, header_refs(&reply.headers), Some(reply.body.as_bytes()));
    Action::Pause
}

fn header_refs<'a>(headers: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    headers.iter().map(|(name, value)| (*name, value.as_str())).collect()
}

/// Strips what a header value must not carry; issuer data is not trusted to be clean.
fn header_value(value: &str) -> String {
    value.chars().filter(|c| !c.is_control()).collect()
}

struct HostSharedData;

impl SharedData for HostSharedData {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        hostcalls::get_shared_data(key).unwrap_or((None, None))
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        hostcalls::set_shared_data(key, Some(value), cas).is_ok()
    }
}

/// Counters in Envoy's stats as `wasmcustom.oauth_introspection.*`, summed over workers.
struct Metrics {
    allowed: Option<u32>,
    denied_missing_token: Option<u32>,
    denied_malformed_token: Option<u32>,
    denied_invalid_token: Option<u32>,
    denied_insufficient_role: Option<u32>,
    denied_bad_path: Option<u32>,
    denied_no_rule: Option<u32>,
    denied_issuer_unavailable: Option<u32>,
    cache_hits: Option<u32>,
    cache_misses: Option<u32>,
    introspections: Option<u32>,
    issuer_errors: Option<u32>,
    assertions_signed: Option<u32>,
}

impl Metrics {
    fn define() -> Self {
        let counter =
            |name: &str| hostcalls::define_metric(MetricType::Counter, &format!("oauth_introspection.{name}")).ok();
        Metrics {
            allowed: counter("allowed"),
            denied_missing_token: counter("denied.missing_token"),
            denied_malformed_token: counter("denied.malformed_token"),
            denied_invalid_token: counter("denied.invalid_token"),
            denied_insufficient_role: counter("denied.insufficient_role"),
            denied_bad_path: counter("denied.bad_path"),
            denied_no_rule: counter("denied.no_rule"),
            denied_issuer_unavailable: counter("denied.issuer_unavailable"),
            cache_hits: counter("cache.hits"),
            cache_misses: counter("cache.misses"),
            introspections: counter("introspection.calls"),
            issuer_errors: counter("introspection.issuer_errors"),
            assertions_signed: counter("assertion.signatures"),
        }
    }

    fn denied(&self, denial: &Denial) {
        increment(match denial {
            Denial::MissingToken => self.denied_missing_token,
            Denial::MalformedToken => self.denied_malformed_token,
            Denial::InvalidToken(_) => self.denied_invalid_token,
            Denial::InsufficientRole(_) => self.denied_insufficient_role,
            Denial::BadPath(_) => self.denied_bad_path,
            Denial::NoRule => self.denied_no_rule,
            Denial::IssuerUnavailable => self.denied_issuer_unavailable,
        });
    }
}

fn increment(metric: Option<u32>) {
    if let Some(id) = metric {
        let _ = hostcalls::increment_metric(id, 1);
    }
}
