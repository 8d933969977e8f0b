//! The proxy-wasm glue: reads the request, asks the plain-Rust modules what
//! to do, and carries it out with host calls. No decision is made here that
//! a host test could not make.

use std::rc::Rc;
use std::time::UNIX_EPOCH;

use log::{debug, error, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, MetricType};

use crate::cache::{SharedData, VerdictCache};
use crate::config::{self, Config};
use crate::introspection::{self, Identity, IssuerError, IssuerResponse, Verdict};
use crate::response::Denial;
use crate::rules::Access;
use crate::token::{bearer_token, TokenHash};

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
        let plugin = self.plugin.clone()?;
        Some(Box::new(RequestFilter { plugin, pending: None }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// A request waiting for the issuer's answer.
struct PendingIntrospection {
    call_id: u32,
    token: TokenHash,
    access: Access,
}

struct RequestFilter {
    plugin: Rc<Plugin>,
    pending: Option<PendingIntrospection>,
}

impl RequestFilter {
    fn now(&self) -> u64 {
        self.get_current_time().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
    }

    fn deny(&self, denial: Denial) {
        debug!("denied: {}", denial.reason());
        self.plugin.metrics.denied(&denial);
        let reply = denial.reply();
        let headers: Vec<(&str, &str)> = reply.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        self.send_http_response(reply.status, headers, Some(reply.body.as_bytes()));
    }

    /// Applies the route's own requirement to a verdict, cached or fresh.
    /// Returns true when the request may go on.
    fn admit(&self, identity: &Identity, access: &Access) -> bool {
        if let Err(required) = access.check_roles(&identity.roles) {
            self.deny(Denial::InsufficientRole(required.to_vec()));
            return false;
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
        true
    }

    fn start_introspection(&mut self, token: &str, hash: TokenHash, access: Access) -> Action {
        let plugin = Rc::clone(&self.plugin);
        let endpoint = &plugin.config.introspection;
        let client_auth = &plugin.config.client_auth;
        let signatures_before = client_auth.signatures();
        let proof = match client_auth.proof(self.now()) {
            Ok(proof) => proof,
            Err(err) => {
                error!("{err}");
                self.deny(Denial::IssuerUnavailable);
                return Action::Pause;
            }
        };
        if client_auth.signatures() > signatures_before {
            increment(plugin.metrics.assertions_signed);
        }
        let request = introspection::build_request(&endpoint.authority, &endpoint.path, token, &proof);
        let headers: Vec<(&str, &str)> = request.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        increment(plugin.metrics.introspections);
        match self.dispatch_http_call(
            &endpoint.cluster,
            headers,
            Some(request.body.as_bytes()),
            vec![],
            endpoint.timeout,
        ) {
            Ok(call_id) => {
                self.pending = Some(PendingIntrospection { call_id, token: hash, access });
                Action::Pause
            }
            Err(status) => {
                error!("introspection call to cluster {} could not be dispatched: {status:?}", endpoint.cluster);
                increment(plugin.metrics.issuer_errors);
                self.deny(Denial::IssuerUnavailable);
                Action::Pause
            }
        }
    }

    fn hold_while_pending(&self) -> Action {
        if self.pending.is_some() {
            Action::Pause
        } else {
            Action::Continue
        }
    }

    fn issuer_response(&self, body_size: usize) -> Result<Verdict, IssuerError> {
        let max = self.plugin.config.max_response_bytes;
        if body_size > max {
            return Err(IssuerError::TooLarge);
        }
        let status = self.get_http_call_response_header(":status").and_then(|s| s.parse::<u16>().ok());
        let content_type = self.get_http_call_response_header("content-type");
        let body = if body_size == 0 {
            Vec::new()
        } else {
            self.get_http_call_response_body(0, body_size).unwrap_or_default()
        };
        let response = IssuerResponse { status, content_type: content_type.as_deref(), body: &body };
        introspection::evaluate(response, &self.plugin.config.expectations, self.now())
    }
}

impl Context for RequestFilter {
    fn on_http_call_response(&mut self, call_id: u32, _num_headers: usize, body_size: usize, _num_trailers: usize) {
        let Some(pending) = self.pending.take_if(|p| p.call_id == call_id) else {
            return;
        };
        match self.issuer_response(body_size) {
            Ok(Verdict::Valid(identity)) => {
                let plugin = Rc::clone(&self.plugin);
                plugin.cache.store(&HostSharedData, &pending.token, &identity, self.now());
                if self.admit(&identity, &pending.access) {
                    self.resume_http_request();
                }
            }
            Ok(Verdict::Invalid(rejection)) => self.deny(Denial::InvalidToken(rejection)),
            Err(err) => {
                increment(self.plugin.metrics.issuer_errors);
                match err {
                    IssuerError::ClientRejected(_) => error!("token introspection failed: {err}"),
                    _ => warn!("token introspection failed: {err}"),
                }
                self.deny(Denial::IssuerUnavailable);
            }
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
        let method = self.get_http_request_header(":method").unwrap_or_default();
        let path = self.get_http_request_header(":path").unwrap_or_default();
        let access = match plugin.config.rules.access_for(&method, &path) {
            None => {
                self.deny(Denial::NoRule);
                return Action::Pause;
            }
            Some(Access::Public) => return Action::Continue,
            Some(access) => access.clone(),
        };
        let header = self.get_http_request_header("authorization");
        let token = match bearer_token(header.as_deref()) {
            Ok(token) => token,
            Err(err) => {
                self.deny(match err {
                    crate::token::TokenError::Missing => Denial::MissingToken,
                    crate::token::TokenError::Malformed => Denial::MalformedToken,
                });
                return Action::Pause;
            }
        };
        let hash = TokenHash::of(token);
        match plugin.cache.lookup(&HostSharedData, &hash, self.now()) {
            Some(identity) => {
                increment(plugin.metrics.cache_hits);
                if self.admit(&identity, &access) {
                    Action::Continue
                } else {
                    Action::Pause
                }
            }
            None => {
                increment(plugin.metrics.cache_misses);
                self.start_introspection(token, hash, access)
            }
        }
    }

    // Body and trailers stay with Envoy until the verdict is in: nothing of a
    // request moves upstream while its introspection call is pending.
    fn on_http_request_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        self.hold_while_pending()
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        self.hold_while_pending()
    }
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
