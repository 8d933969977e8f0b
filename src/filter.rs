//! The proxy-wasm glue: reads the request, asks the plain-Rust modules what
//! to do, and carries it out with host calls. No decision is made here that
//! a host test could not make.
//!
//! Headers are always read as bytes: the SDK's `String` getters unwrap
//! `from_utf8`, so one non-UTF-8 header would panic the VM.
//!
//! A request whose token is not cached either leads (calls the issuer) or
//! waits for the leader of the same token (see `coalesce`). Waiters on the
//! leader's VM are answered the moment its verdict arrives; waiters on other
//! VMs see it on their VM's next tick. Answering a request from outside its
//! own callback goes through `set_effective_context`, so every decision is a
//! method of `Plugin` that acts on "the current request".

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use log::{debug, error, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, MapType, MetricType};

use crate::cache::{SharedData, StoreOutcome, VerdictCache};
use crate::coalesce::{Claim, InFlightTable, LeaderState};
use crate::config::{self, Config};
use crate::introspection::{self, Identity, IssuerError, IssuerResponse, Verdict};
use crate::path::canonical_path;
use crate::response::Denial;
use crate::rules::Access;
use crate::token::{bearer_token, TokenError, TokenHash};

/// How often a VM with waiting requests looks for their leaders' verdicts.
const WAITER_TICK: Duration = Duration::from_millis(5);
/// A waiter whose leader vanished leads or waits again at most this often.
const MAX_ATTEMPTS: u8 = 3;

/// A request paused until a verdict arrives.
struct Paused {
    context_id: u32,
    token: String,
    token_hash: TokenHash,
    access: Access,
    attempts: u8,
    waiting: Waiting,
}

enum Waiting {
    /// This request leads: its introspection call is under way.
    OnCall { call_id: u32, slot: Option<u32> },
    /// Another request leads; give up on it after `deadline_ms`.
    OnLeader { slot: u32, deadline_ms: u64 },
}

/// Everything a VM needs, built once at configure time and shared by the
/// root context and every request of the VM (one thread, so `RefCell`).
struct Plugin {
    config: Config,
    cache: VerdictCache,
    in_flight: InFlightTable,
    metrics: Metrics,
    paused: RefCell<Vec<Paused>>,
}

#[derive(Default)]
pub struct FilterRoot {
    plugin: Option<Rc<Plugin>>,
}

impl Context for FilterRoot {
    fn on_http_call_response(&mut self, call_id: u32, num_headers: usize, body_size: usize, _num_trailers: usize) {
        // Calls a waiter made after its leader vanished were dispatched from here.
        if let Some(plugin) = &self.plugin {
            plugin.on_call_response(call_id, num_headers, body_size);
        }
    }
}

impl RootContext for FilterRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let raw = self.get_plugin_configuration().unwrap_or_default();
        match config::parse(&raw, &|name| std::env::var(name).ok()) {
            Ok(config) => {
                let cache = VerdictCache::new(config.cache.clone());
                let timeout_ms = u64::try_from(config.introspection.timeout.as_millis()).unwrap_or(u64::MAX);
                let in_flight = InFlightTable::new(config.introspection.max_in_flight, timeout_ms);
                in_flight.prepare(&HostSharedData);
                let metrics = Metrics::define();
                self.plugin = Some(Rc::new(Plugin { config, cache, in_flight, metrics, paused: RefCell::default() }));
                true
            }
            Err(err) => {
                error!("{err}");
                false
            }
        }
    }

    fn on_tick(&mut self) {
        if let Some(plugin) = &self.plugin {
            plugin.poll_waiters();
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(match &self.plugin {
            Some(plugin) => Box::new(RequestFilter { plugin: Rc::clone(plugin), context_id }),
            // A failed configure fails the plugin load, so this should not be
            // reached; if it is, refuse rather than pass requests unchecked.
            None => Box::new(Unconfigured),
        })
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

impl Plugin {
    /// Answers a request whose token has no cached verdict at `now_ms`: lead, wait, or 503.
    /// Acts on the current (effective) context, which must be `context_id`'s.
    fn resolve_miss(
        &self,
        context_id: u32,
        token: String,
        token_hash: TokenHash,
        access: Access,
        attempts: u8,
        now_ms: u64,
    ) -> Action {
        let waiting = match self.in_flight.claim(&HostSharedData, &token_hash, now_ms) {
            Claim::Full => {
                warn!("{} introspection calls in flight: refusing more", self.config.introspection.max_in_flight);
                return self.deny(Denial::Overloaded);
            }
            Claim::Wait { slot } => {
                increment(self.metrics.coalesced);
                let _ = hostcalls::set_tick_period(WAITER_TICK);
                Waiting::OnLeader { slot, deadline_ms: now_ms.saturating_add(self.in_flight.wait_limit_ms()) }
            }
            Claim::Lead { slot } => match self.dispatch(&token, now_ms / 1000) {
                Ok(call_id) => Waiting::OnCall { call_id, slot },
                Err(err) => {
                    if let Some(slot) = slot {
                        self.in_flight.finish(&HostSharedData, slot, &token_hash, true, now_ms);
                    }
                    return self.fail(err);
                }
            },
        };
        self.paused.borrow_mut().push(Paused { context_id, token, token_hash, access, attempts, waiting });
        Action::Pause
    }

    fn dispatch(&self, token: &str, now: u64) -> Result<u32, IssuerError> {
        let endpoint = &self.config.introspection;
        let client_auth = &self.config.client_auth;
        let signatures_before = client_auth.signatures();
        let proof = client_auth.proof(now).map_err(|_| IssuerError::Signing)?;
        if client_auth.signatures() > signatures_before {
            increment(self.metrics.assertions_signed);
        }
        let request = introspection::build_request(&endpoint.authority, &endpoint.path, token, &proof);
        increment(self.metrics.introspections);
        hostcalls::dispatch_http_call(
            &endpoint.cluster,
            header_refs(&request.headers),
            Some(request.body.as_bytes()),
            vec![],
            endpoint.timeout,
        )
        .map_err(|_| IssuerError::Dispatch)
    }

    /// The issuer answered call `call_id`: cache the verdict, release the
    /// slot, answer the leader and every waiter of this VM.
    fn on_call_response(&self, call_id: u32, num_headers: usize, body_size: usize) {
        let leader = {
            let mut paused = self.paused.borrow_mut();
            let Some(at) =
                paused.iter().position(|p| matches!(p.waiting, Waiting::OnCall { call_id: id, .. } if id == call_id))
            else {
                return;
            };
            paused.swap_remove(at)
        };
        // Read the answer while the calling context is still the effective one.
        let now_ms = now_millis();
        let outcome = match now_ms {
            Some(now_ms) => self.issuer_verdict(num_headers, body_size, now_ms / 1000),
            None => Err(IssuerError::Clock),
        };
        let now_ms = now_ms.unwrap_or_default();
        if let Ok(verdict) = &outcome {
            let stored = self.cache.store(&HostSharedData, &leader.token_hash, verdict, now_ms / 1000);
            if stored != StoreOutcome::Stored {
                debug!("verdict not cached: {stored:?}");
            }
        }
        if let Waiting::OnCall { slot: Some(slot), .. } = leader.waiting {
            self.in_flight.finish(&HostSharedData, slot, &leader.token_hash, outcome.is_err(), now_ms);
        }
        if let Err(err) = &outcome {
            self.note_issuer_error(err);
        }
        let local_waiters =
            self.take_paused(|p| p.token_hash == leader.token_hash && matches!(p.waiting, Waiting::OnLeader { .. }));
        for request in std::iter::once(leader).chain(local_waiters) {
            self.answer(request.context_id, |plugin| plugin.apply(&outcome, &request.access));
        }
    }

    /// On each tick: answer waiters whose leader finished, failed or vanished.
    fn poll_waiters(&self) {
        let Some(now_ms) = now_millis() else { return };
        for request in self.take_paused(|p| matches!(p.waiting, Waiting::OnLeader { .. })) {
            let Waiting::OnLeader { slot, deadline_ms } = request.waiting else { continue };
            let state = self.in_flight.leader_state(&HostSharedData, slot, &request.token_hash, now_ms);
            if state == LeaderState::Pending && now_ms < deadline_ms {
                self.paused.borrow_mut().push(request);
                continue;
            }
            let cached = self.cache.lookup(&HostSharedData, &request.token_hash, now_ms / 1000);
            let context_id = request.context_id;
            match (state, cached) {
                (LeaderState::Failed, _) => self.answer(context_id, |plugin| plugin.deny(Denial::IssuerUnavailable)),
                (_, Some(verdict)) => self.answer(context_id, |plugin| plugin.apply(&Ok(verdict), &request.access)),
                // Gone without a cached verdict, or waited too long: ask again.
                _ if request.attempts + 1 >= MAX_ATTEMPTS => {
                    self.answer(context_id, |plugin| plugin.deny(Denial::IssuerUnavailable))
                }
                _ => self.answer(context_id, |plugin| {
                    plugin.resolve_miss(
                        context_id,
                        request.token,
                        request.token_hash,
                        request.access,
                        request.attempts + 1,
                        now_ms,
                    )
                }),
            }
        }
        if !self.paused.borrow().iter().any(|p| matches!(p.waiting, Waiting::OnLeader { .. })) {
            let _ = hostcalls::set_tick_period(Duration::ZERO);
        }
    }

    /// A request's stream ended (client gone) while paused: forget it, and
    /// free its slot so its waiters need not wait for the stale limit.
    fn forget(&self, context_id: u32) {
        for request in self.take_paused(|p| p.context_id == context_id) {
            if let (Waiting::OnCall { slot: Some(slot), .. }, Some(now_ms)) = (request.waiting, now_millis()) {
                debug!("a request went away during its introspection call: slot {slot} released");
                self.in_flight.finish(&HostSharedData, slot, &request.token_hash, false, now_ms);
            }
        }
    }

    fn is_paused(&self, context_id: u32) -> bool {
        self.paused.borrow().iter().any(|p| p.context_id == context_id)
    }

    fn take_paused(&self, mut pick: impl FnMut(&Paused) -> bool) -> Vec<Paused> {
        let mut paused = self.paused.borrow_mut();
        let (taken, kept) = std::mem::take(&mut *paused).into_iter().partition(|p| pick(p));
        *paused = kept;
        taken
    }

    /// Runs `decide` as request `context_id` and resumes it if allowed.
    fn answer(&self, context_id: u32, decide: impl FnOnce(&Plugin) -> Action) {
        if hostcalls::set_effective_context(context_id).is_err() {
            return; // the stream is gone
        }
        if decide(self) == Action::Continue {
            let _ = hostcalls::resume_http_request();
        }
    }

    fn issuer_verdict(&self, num_headers: usize, body_size: usize, now: u64) -> Result<Verdict, IssuerError> {
        // A call reset after its headers arrived (a truncated body) comes with
        // no header map at all, and the SDK's map getters panic on that.
        if num_headers == 0 {
            return Err(IssuerError::NoStatus);
        }
        if body_size > self.config.max_response_bytes {
            return Err(IssuerError::TooLarge);
        }
        let header = |name| {
            hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, name)
                .ok()
                .flatten()
                .and_then(|v| String::from_utf8(v).ok())
        };
        let status = header(":status").and_then(|s| s.parse::<u16>().ok());
        let content_type = header("content-type");
        let body = match body_size {
            0 => Vec::new(),
            size => hostcalls::get_buffer(proxy_wasm::types::BufferType::HttpCallResponseBody, 0, size)
                .ok()
                .flatten()
                .unwrap_or_default(),
        };
        let response = IssuerResponse { status, content_type: content_type.as_deref(), body: &body };
        introspection::evaluate(response, &self.config.expectations, now)
    }

    /// Applies a verdict (or the issuer's failure) to the current request.
    fn apply(&self, outcome: &Result<Verdict, IssuerError>, access: &Access) -> Action {
        match outcome {
            Ok(Verdict::Valid(identity)) => self.admit(identity, access),
            Ok(Verdict::Invalid(rejection)) => self.deny(Denial::InvalidToken(*rejection)),
            Err(_) => self.deny(Denial::IssuerUnavailable),
        }
    }

    /// Applies the route's own requirement to a verdict, cached or fresh.
    fn admit(&self, identity: &Identity, access: &Access) -> Action {
        if let Err(required) = access.check_roles(&identity.roles) {
            return self.deny(Denial::InsufficientRole(required.to_vec()));
        }
        let headers = &self.config.identity_headers;
        for (name, value) in [
            (&headers.subject, header_value(&identity.subject)),
            (&headers.client_id, header_value(&identity.client_id)),
            (&headers.roles, header_value(&identity.roles.join(","))),
        ] {
            // Replaces any value the client sent; an empty one removes it.
            let value = Some(value.as_str()).filter(|v| !v.is_empty());
            let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value);
        }
        increment(self.metrics.allowed);
        Action::Continue
    }

    fn deny(&self, denial: Denial) -> Action {
        debug!("denied: {}", denial.reason());
        self.metrics.denied(&denial);
        send_reply(&denial)
    }

    /// The issuer could not vouch for the token: log why, count it, answer 503.
    fn fail(&self, err: IssuerError) -> Action {
        self.note_issuer_error(&err);
        self.deny(Denial::IssuerUnavailable)
    }

    fn note_issuer_error(&self, err: &IssuerError) {
        increment(self.metrics.issuer_errors);
        if err.needs_operator() {
            error!("token introspection failed: {err}");
        } else {
            warn!("token introspection failed: {err}");
        }
    }
}

struct RequestFilter {
    plugin: Rc<Plugin>,
    context_id: u32,
}

impl RequestFilter {
    fn request_header(&self, name: &str) -> Option<Result<String, ()>> {
        self.get_http_request_header_bytes(name).map(|bytes| String::from_utf8(bytes).map_err(|_| ()))
    }

    fn hold_while_paused(&self) -> Action {
        if self.plugin.is_paused(self.context_id) {
            Action::Pause
        } else {
            Action::Continue
        }
    }
}

impl Context for RequestFilter {
    fn on_http_call_response(&mut self, call_id: u32, num_headers: usize, body_size: usize, _num_trailers: usize) {
        self.plugin.on_call_response(call_id, num_headers, body_size);
    }

    fn on_done(&mut self) -> bool {
        self.plugin.forget(self.context_id);
        true
    }
}

impl HttpContext for RequestFilter {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let plugin = Rc::clone(&self.plugin);
        // Identity headers come from this filter only, never from the client:
        // a public request loses them here, an admitted one has each replaced
        // or removed in `admit`, a denied one never goes upstream.
        let method = self.request_header(":method").and_then(Result::ok).unwrap_or_default();
        let raw_path = self.get_http_request_header_bytes(":path").unwrap_or_default();
        let path = match canonical_path(&raw_path) {
            Ok(path) => path,
            Err(err) => return plugin.deny(Denial::BadPath(err)),
        };
        let access = match plugin.config.rules.access_for(&method, &path) {
            None => return plugin.deny(Denial::NoRule),
            Some(Access::Public) => {
                for name in plugin.config.identity_headers.names() {
                    self.set_http_request_header(name, None);
                }
                return Action::Continue;
            }
            Some(access) => access.clone(),
        };
        let header = match self.request_header("authorization") {
            None => None,
            Some(Ok(value)) => Some(value),
            Some(Err(())) => return plugin.deny(Denial::MalformedToken),
        };
        let token = match bearer_token(header.as_deref()) {
            Ok(token) => token,
            Err(err) => return plugin.deny(err.into()),
        };
        let Some(now_ms) = now_millis() else {
            return plugin.fail(IssuerError::Clock);
        };
        let token_hash = TokenHash::of(token);
        match plugin.cache.lookup(&HostSharedData, &token_hash, now_ms / 1000) {
            Some(verdict) => {
                increment(plugin.metrics.cache_hits);
                plugin.apply(&Ok(verdict), &access)
            }
            None => {
                increment(plugin.metrics.cache_misses);
                plugin.resolve_miss(self.context_id, token.to_string(), token_hash, access, 0, now_ms)
            }
        }
    }

    // Body and trailers stay with Envoy until the verdict is in: nothing of a
    // request moves upstream while it waits for the issuer.
    fn on_http_request_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        self.hold_while_paused()
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        // An upstream that merges trailers into headers must not see forged identity either.
        for name in self.plugin.config.identity_headers.names() {
            self.set_http_request_trailer(name, None);
        }
        self.hold_while_paused()
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
        send_reply(&Denial::IssuerUnavailable)
    }
}

/// Sends the denial's local reply to the current request; it goes no further.
fn send_reply(denial: &Denial) -> Action {
    let reply = denial.reply();
    let _ = hostcalls::send_http_response(reply.status, header_refs(&reply.headers), Some(reply.body.as_bytes()));
    Action::Pause
}

fn header_refs<'a>(headers: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    headers.iter().map(|(name, value)| (*name, value.as_str())).collect()
}

/// Strips what a header value must not carry; issuer data is not trusted to be clean.
fn header_value(value: &str) -> String {
    value.chars().filter(|c| !c.is_control()).collect()
}

/// Unix time from the host; `None` if the clock is unusable (then nothing is valid).
fn now_millis() -> Option<u64> {
    let since_epoch = hostcalls::get_current_time().ok()?.duration_since(UNIX_EPOCH).ok()?;
    u64::try_from(since_epoch.as_millis()).ok()
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
    denied_overloaded: Option<u32>,
    cache_hits: Option<u32>,
    cache_misses: Option<u32>,
    introspections: Option<u32>,
    coalesced: Option<u32>,
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
            denied_overloaded: counter("denied.overloaded"),
            cache_hits: counter("cache.hits"),
            cache_misses: counter("cache.misses"),
            introspections: counter("introspection.calls"),
            coalesced: counter("introspection.coalesced"),
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
            Denial::Overloaded => self.denied_overloaded,
        });
    }
}

fn increment(metric: Option<u32>) {
    if let Some(id) = metric {
        let _ = hostcalls::increment_metric(id, 1);
    }
}
