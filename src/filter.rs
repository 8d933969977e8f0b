//! The proxy-wasm glue, and the only module that imports `proxy_wasm`: it
//! reads a request's headers into a [`Request`], hands it to the [`Engine`],
//! and implements [`Host`] with host calls. No decision is made here.
//!
//! Headers are always read as bytes: the SDK's `String` getters unwrap
//! `from_utf8`, so one non-UTF-8 header would panic the VM.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use log::error;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, MapType, MetricType, Status};

use crate::cache::SharedData;
use crate::engine::{namespace, Engine, Flow};
use crate::host::Host;
use crate::load::load;
use crate::metrics::{self, Counter, IssuerCounter, COUNTERS, ISSUER_COUNTERS};
use crate::policy::{IssuerId, Policy};
use crate::record::Field;
use crate::request::{header_pairs, Request};
use crate::response::{Denial, Reply};

#[derive(Default)]
pub struct FilterRoot {
    engine: Option<Rc<Engine<HostCalls>>>,
}

impl Context for FilterRoot {
    fn on_http_call_response(&mut self, call_id: u32, num_headers: usize, body_size: usize, _num_trailers: usize) {
        // Calls made for waiters whose leader vanished were dispatched from here.
        if let Some(engine) = &self.engine {
            engine.on_call_response(call_id, num_headers, body_size);
        }
    }
}

impl RootContext for FilterRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let raw = self.get_plugin_configuration().unwrap_or_default();
        match load(&raw, &|name| std::env::var(name).ok()) {
            Ok(policy) => {
                let name = self.get_property(vec!["plugin_name"]).unwrap_or_default();
                let root_id = self.get_property(vec!["plugin_root_id"]).unwrap_or_default();
                let host = HostCalls::new(Metrics::define(&policy));
                let namespace = namespace(&name, &root_id);
                self.engine = Some(Rc::new(Engine::new(host, policy, &namespace).with_probe(&namespace, &raw)));
                true
            }
            Err(err) => {
                error!("{err}");
                false
            }
        }
    }

    fn on_tick(&mut self) {
        if let Some(engine) = &self.engine {
            engine.on_tick();
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(match &self.engine {
            Some(engine) => Box::new(RequestFilter { engine: Rc::clone(engine), context_id }),
            // A failed configure fails the plugin load, so this should not be
            // reached; if it is, refuse rather than pass requests unchecked.
            None => Box::new(Unconfigured),
        })
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct RequestFilter {
    engine: Rc<Engine<HostCalls>>,
    context_id: u32,
}

impl RequestFilter {
    /// A body or trailers go on only behind admitted headers.
    fn hold_unless_admitted(&self) -> Action {
        if self.engine.may_go_on(self.context_id) {
            Action::Continue
        } else {
            Action::Pause
        }
    }
}

impl Context for RequestFilter {
    fn on_http_call_response(&mut self, call_id: u32, num_headers: usize, body_size: usize, _num_trailers: usize) {
        self.engine.on_call_response(call_id, num_headers, body_size);
    }

    fn on_done(&mut self) -> bool {
        self.engine.on_done(self.context_id);
        true
    }
}

impl HttpContext for RequestFilter {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let block = request_header_block();
        // A block that does not parse yields no headers: no host, so 400.
        let pairs = header_pairs(&block).unwrap_or_default();
        // Which virtual host and route Envoy's router picked, only when a rule asks:
        // two host calls that other configurations need not pay for.
        let binds = self.engine.policy().rules.binds_to_routes();
        let property = |path: Vec<&str>| binds.then(|| hostcalls::get_property(path).ok().flatten()).flatten();
        let virtual_host = property(vec!["xds", "virtual_host_name"]);
        let route = property(vec!["xds", "route_name"]);
        let request = Request {
            virtual_host: virtual_host.as_deref(),
            route: route.as_deref(),
            end_of_stream,
            ..Request::from_pairs(&pairs)
        };
        match self.engine.on_request_headers(self.context_id, &request) {
            Flow::Continue => Action::Continue,
            Flow::Pause => Action::Pause,
        }
    }

    // Body and trailers stay with Envoy until the verdict is in: nothing of a
    // request moves upstream while it waits for the issuer.
    fn on_http_request_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        self.hold_unless_admitted()
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        // An upstream that merges trailers into headers must not see forged identity either.
        for name in &self.engine.policy().forwarded_headers {
            self.set_http_request_trailer(name, None);
        }
        self.hold_unless_admitted()
    }
}

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_header_map_pairs(
        map_type: MapType,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> Status;
}

/// Every request header in one host call, serialized as the ABI defines
/// (see `request::header_pairs`). The SDK's own getter for this unwraps each
/// name as UTF-8; this one leaves the bytes to the parser.
fn request_header_block() -> Vec<u8> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the host writes a pointer to `size` bytes it allocated through
    // the SDK's `proxy_on_memory_allocate` (a boxed slice of exactly `size`
    // bytes), which this Vec then owns and frees; the SDK's getters do the same.
    unsafe {
        if proxy_get_header_map_pairs(MapType::HttpRequestHeaders, &mut data, &mut size) != Status::Ok || data.is_null()
        {
            return Vec::new();
        }
        Vec::from_raw_parts(data, size, size)
    }
}

/// Answers 503 to everything: used only if a VM has no valid configuration.
struct Unconfigured;

impl Context for Unconfigured {}

impl HttpContext for Unconfigured {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        send_reply(&Denial::IssuerUnavailable.reply());
        Action::Pause
    }
}

fn send_reply(reply: &Reply) {
    let headers: Vec<(&str, &str)> = reply.headers.iter().map(|(name, value)| (*name, value.as_str())).collect();
    let _ = hostcalls::send_http_response(reply.status, headers, Some(reply.body.as_bytes()));
}

/// How often counts kept back reach Envoy's stats (see [`HostCalls`]).
const COUNTER_FLUSH: Duration = Duration::from_secs(1);

/// The host as proxy-wasm offers it.
///
/// Counts are kept in the VM and handed to Envoy on the root's tick, at most
/// a second late: every host call costs microseconds, and a cache hit would
/// otherwise make two of them for its counters alone. A tick runs while
/// counts are pending, whatever the engine asks for.
pub struct HostCalls {
    metrics: Metrics,
    /// Counts not yet in Envoy, in the order of `metrics`.
    pending: RefCell<Pending>,
    /// The tick period last asked for.
    tick: Cell<Duration>,
}

#[derive(Default)]
struct Pending {
    global: Vec<u64>,
    issuers: Vec<Vec<u64>>,
    any: bool,
}

impl HostCalls {
    fn new(metrics: Metrics) -> Self {
        let pending = Pending {
            global: vec![0; metrics.global.len()],
            issuers: metrics.issuers.iter().map(|ids| vec![0; ids.len()]).collect(),
            any: false,
        };
        HostCalls { metrics, pending: RefCell::new(pending), tick: Cell::new(Duration::ZERO) }
    }

    /// Adds to the pending count `pick` finds, and makes sure a tick will hand it over.
    fn add(&self, pick: impl FnOnce(&mut Pending) -> Option<&mut u64>, amount: u64) {
        let first = {
            let mut pending = self.pending.borrow_mut();
            let Some(count) = pick(&mut pending) else { return };
            *count = count.saturating_add(amount);
            !std::mem::replace(&mut pending.any, true)
        };
        if first && self.tick.get().is_zero() {
            self.set_tick(COUNTER_FLUSH);
        }
    }
}

impl SharedData for HostCalls {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        hostcalls::get_shared_data(key).unwrap_or((None, None))
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        hostcalls::set_shared_data(key, Some(value), cas).is_ok()
    }
}

impl Host for HostCalls {
    fn now_ms(&self) -> Option<u64> {
        let since_epoch = hostcalls::get_current_time().ok()?.duration_since(UNIX_EPOCH).ok()?;
        u64::try_from(since_epoch.as_millis()).ok()
    }

    fn now_us(&self) -> Option<u64> {
        let since_epoch = hostcalls::get_current_time().ok()?.duration_since(UNIX_EPOCH).ok()?;
        u64::try_from(since_epoch.as_micros()).ok()
    }

    fn dispatch(&self, cluster: &str, headers: &[(&str, &str)], body: &[u8], timeout: Duration) -> Option<u32> {
        hostcalls::dispatch_http_call(cluster, headers.to_vec(), Some(body), vec![], timeout).ok()
    }

    fn call_response_header(&self, name: &str) -> Option<Vec<u8>> {
        hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, name).ok().flatten()
    }

    fn call_response_body(&self, size: usize) -> Vec<u8> {
        hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, size).ok().flatten().unwrap_or_default()
    }

    fn set_tick(&self, period: Duration) {
        let period = if period.is_zero() && self.pending.borrow().any { COUNTER_FLUSH } else { period };
        if period != self.tick.get() {
            self.tick.set(period);
            let _ = hostcalls::set_tick_period(period);
        }
    }

    fn act_as(&self, context_id: u32) -> bool {
        hostcalls::set_effective_context(context_id).is_ok()
    }

    fn set_request_header(&self, name: &str, value: Option<&str>) {
        let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value);
    }

    fn reply(&self, reply: &Reply) {
        send_reply(reply);
    }

    fn resume(&self) {
        let _ = hostcalls::resume_http_request();
    }

    fn record(&self, field: Field, value: &str) {
        let _ = hostcalls::set_property(vec![field.property()], Some(value.as_bytes()));
    }

    fn count_by(&self, counter: Counter, amount: u64) {
        let Some(at) = COUNTERS.iter().position(|(c, _)| *c == counter) else { return };
        self.add(|pending| pending.global.get_mut(at), amount);
    }

    fn count_issuer(&self, issuer: IssuerId, counter: IssuerCounter) {
        let Some(at) = ISSUER_COUNTERS.iter().position(|(c, _)| *c == counter) else { return };
        self.add(|pending| pending.issuers.get_mut(issuer.0).and_then(|counts| counts.get_mut(at)), 1);
    }

    fn flush_counters(&self) -> bool {
        let mut pending = self.pending.borrow_mut();
        if !pending.any {
            return false;
        }
        pending.any = false;
        let Pending { global, issuers, .. } = &mut *pending;
        for (count, id) in global.iter_mut().zip(&self.metrics.global) {
            increment(*id, std::mem::take(count));
        }
        for (counts, ids) in issuers.iter_mut().zip(&self.metrics.issuers) {
            for (count, id) in counts.iter_mut().zip(ids) {
                increment(*id, std::mem::take(count));
            }
        }
        true
    }
}

/// Metric ids from the host, in the order of `COUNTERS` (and, per issuer,
/// of `ISSUER_COUNTERS`).
struct Metrics {
    global: Vec<Option<u32>>,
    issuers: Vec<Vec<Option<u32>>>,
}

impl Metrics {
    fn define(policy: &Policy) -> Self {
        let counter = |name: String| hostcalls::define_metric(MetricType::Counter, &name).ok();
        Metrics {
            global: COUNTERS.iter().map(|(_, name)| counter(metrics::name(name))).collect(),
            issuers: policy
                .issuers
                .iter()
                .map(|issuer| {
                    ISSUER_COUNTERS.iter().map(|(_, name)| counter(metrics::issuer_name(&issuer.name, name))).collect()
                })
                .collect(),
        }
    }
}

fn increment(metric: Option<u32>, amount: u64) {
    if let (Some(id), Ok(amount @ 1..)) = (metric, i64::try_from(amount)) {
        let _ = hostcalls::increment_metric(id, amount);
    }
}
