//! The engine whole, on an in-memory host: several engines sharing one store
//! are the workers of one Envoy; the issuer is played by the test, which
//! answers each dispatched call. Tests assert on replies, forwarded headers
//! and issuer calls, never on the order of host calls.
//!
//! The fake delivers a call's answer as the proxy-wasm SDK does: to the
//! context whose callback dispatched it (the root's, for calls made on a
//! tick), and not at all once that request has ended.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use serde_json::{json, Value};

use super::*;
use crate::cache::tests::MemoryStore;
use crate::cache::SharedData;
use crate::decision::tests::{gateway, jwt, local_gateway, MAIN, PARTNER};
use crate::record::Field;
use crate::response::Reply;

/// What all "workers" share: shared data, the clock, and the issuer's inbox.
#[derive(Default)]
struct Shared {
    store: MemoryStore,
    now_ms: Cell<u64>,
    calls: RefCell<Vec<Call>>,
    /// The next this many reads of a cache slot find nothing: another worker's
    /// verdict not yet written when they happen.
    hidden_cache_reads: Cell<u32>,
}

#[derive(Debug, Clone)]
struct Call {
    id: u32,
    cluster: String,
    path: String,
    token: String,
    /// The context whose callback made the call (0: the root), which gets its answer.
    registered: u32,
}

#[derive(Debug, Default)]
struct Outcome {
    set: Vec<(String, Option<String>)>,
    reply: Option<Reply>,
    resumed: bool,
    recorded: Vec<(Field, String)>,
}

struct FakeHost {
    shared: Rc<Shared>,
    /// The context whose callback is running (0: the root's).
    callback: Cell<u32>,
    /// The request `act_as` made current.
    current: Cell<u32>,
    /// Requests that ended (answered locally, or their client left).
    ended: RefCell<HashSet<u32>>,
    outcomes: RefCell<HashMap<u32, Outcome>>,
    response: RefCell<(u16, Vec<u8>)>,
    ticking: Cell<bool>,
    clock_broken: Cell<bool>,
    counters: RefCell<Vec<Counter>>,
    issuer_counters: RefCell<Vec<(IssuerId, IssuerCounter)>>,
}

impl SharedData for FakeHost {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        let hidden = self.shared.hidden_cache_reads.get();
        if hidden > 0 && key.contains(".slot.") {
            self.shared.hidden_cache_reads.set(hidden - 1);
            return (None, None);
        }
        self.shared.store.get(key)
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        self.shared.store.set(key, value, cas)
    }
}

impl Host for FakeHost {
    fn now_ms(&self) -> Option<u64> {
        (!self.clock_broken.get()).then(|| self.shared.now_ms.get())
    }

    fn now_us(&self) -> Option<u64> {
        self.now_ms().map(|ms| ms * 1000)
    }

    fn dispatch(&self, cluster: &str, headers: &[(&str, &str)], body: &[u8], _timeout: Duration) -> Option<u32> {
        let path = headers.iter().find(|(name, _)| *name == ":path").map(|(_, value)| value.to_string())?;
        // An introspection POST carries the token; a GET of the issuer's keys nothing.
        let token = if body.is_empty() {
            String::new()
        } else {
            let body = String::from_utf8(body.to_vec()).ok()?;
            let encoded = body.strip_prefix("token=")?.split('&').next()?;
            encoded.replace("%2B", "+").replace("%2F", "/").replace("%3D", "=")
        };
        let mut calls = self.shared.calls.borrow_mut();
        let id = u32::try_from(calls.len()).ok()? + 1;
        calls.push(Call { id, cluster: cluster.to_string(), path, token, registered: self.callback.get() });
        Some(id)
    }

    fn call_response_header(&self, name: &str) -> Option<Vec<u8>> {
        match name {
            ":status" => Some(self.response.borrow().0.to_string().into_bytes()),
            "content-type" => Some(b"application/json".to_vec()),
            _ => None,
        }
    }

    fn call_response_body(&self, size: usize) -> Vec<u8> {
        self.response.borrow().1.iter().take(size).copied().collect()
    }

    fn set_tick(&self, period: Duration) {
        self.ticking.set(!period.is_zero());
    }

    fn act_as(&self, context_id: u32) -> bool {
        self.current.set(context_id);
        true
    }

    fn set_request_header(&self, name: &str, value: Option<&str>) {
        let mut outcomes = self.outcomes.borrow_mut();
        let outcome = outcomes.entry(self.current.get()).or_default();
        outcome.set.push((name.to_string(), value.map(str::to_string)));
    }

    fn reply(&self, reply: &Reply) {
        self.outcomes.borrow_mut().entry(self.current.get()).or_default().reply = Some(reply.clone());
        self.ended.borrow_mut().insert(self.current.get());
    }

    fn resume(&self) {
        self.outcomes.borrow_mut().entry(self.current.get()).or_default().resumed = true;
    }

    fn record(&self, field: Field, value: &str) {
        let mut outcomes = self.outcomes.borrow_mut();
        outcomes.entry(self.current.get()).or_default().recorded.push((field, value.to_string()));
    }

    fn count_by(&self, counter: Counter, amount: u64) {
        self.counters.borrow_mut().extend(std::iter::repeat_n(counter, usize::try_from(amount).unwrap_or(0)));
    }

    fn count_issuer(&self, issuer: IssuerId, counter: IssuerCounter) {
        self.issuer_counters.borrow_mut().push((issuer, counter));
    }
}

const NOW_MS: u64 = 1_800_000_000_000;

fn shared() -> Rc<Shared> {
    let shared = Shared::default();
    shared.now_ms.set(NOW_MS);
    Rc::new(shared)
}

/// One worker's engine with `policy`, its shared data in `namespace`.
fn worker_with(shared: &Rc<Shared>, policy: Policy, namespace: &str) -> Engine<FakeHost> {
    let host = FakeHost {
        shared: Rc::clone(shared),
        callback: Cell::new(0),
        current: Cell::new(0),
        ended: RefCell::default(),
        outcomes: RefCell::default(),
        response: RefCell::new((200, Vec::new())),
        ticking: Cell::new(false),
        clock_broken: Cell::new(false),
        counters: RefCell::default(),
        issuer_counters: RefCell::default(),
    };
    Engine::new(host, policy, namespace)
}

fn worker(shared: &Rc<Shared>) -> Engine<FakeHost> {
    worker_with(shared, gateway(), "gateway")
}

/// Sends request `id` to `host` with `token`.
fn send(engine: &Engine<FakeHost>, id: u32, host: &str, token: &str) -> Flow {
    engine.host().callback.set(id);
    engine.host().current.set(id);
    let authorization = format!("Bearer {token}");
    let request = Request {
        method: b"GET",
        authority: host.as_bytes(),
        path: b"/x",
        authorization: Some(authorization.as_bytes()),
        ..Request::default()
    };
    engine.on_request_headers(id, &request)
}

/// The issuer's answer to call `id`, delivered to the engine that made it, in the
/// callback of the context that made it; false when that request has ended (lost).
fn deliver(engine: &Engine<FakeHost>, id: u32, status: u16, body: Vec<u8>) -> bool {
    let call = engine.host().shared.calls.borrow().iter().find(|c| c.id == id).cloned().expect("a call with that id");
    if call.registered != 0 && engine.host().ended.borrow().contains(&call.registered) {
        return false;
    }
    engine.host().callback.set(call.registered);
    engine.host().current.set(call.registered);
    let size = body.len();
    *engine.host().response.borrow_mut() = (status, body);
    engine.on_call_response(id, 2, size);
    true
}

fn answer(engine: &Engine<FakeHost>, id: u32, body: &Value) {
    assert!(deliver(engine, id, 200, body.to_string().into_bytes()), "the answer to call {id} was lost");
}

fn fail(engine: &Engine<FakeHost>, id: u32) {
    assert!(deliver(engine, id, 503, Vec::new()), "the answer to call {id} was lost");
}

fn tick(engine: &Engine<FakeHost>) {
    engine.host().callback.set(0);
    engine.on_tick();
}

fn done(engine: &Engine<FakeHost>, id: u32) {
    engine.host().ended.borrow_mut().insert(id);
    engine.on_done(id);
}

/// ZITADEL's answer for an active token of `project` with `roles` there.
fn active(iss: &str, project: &str, roles: &[&str]) -> Value {
    let roles: serde_json::Map<String, Value> =
        roles.iter().map(|r| (r.to_string(), json!({"org": "org.example"}))).collect();
    json!({
        "active": true, "iss": iss, "aud": [project, format!("app@{project}")], "sub": format!("user-of-{project}"),
        "client_id": "client", "exp": NOW_MS / 1000 + 3600,
        format!("urn:zitadel:iam:org:project:{project}:roles"): roles,
        "urn:zitadel:iam:user:resourceowner:id": "org-1"
    })
}

fn calls(shared: &Shared) -> Vec<Call> {
    shared.calls.borrow().clone()
}

/// The status a request was answered with: a reply's, or 200 for a request that went upstream.
fn status(engine: &Engine<FakeHost>, id: u32) -> Option<u32> {
    let outcomes = engine.host().outcomes.borrow();
    let outcome = outcomes.get(&id)?;
    match &outcome.reply {
        Some(reply) => Some(reply.status),
        None => outcome.resumed.then_some(200),
    }
}

fn description(engine: &Engine<FakeHost>, id: u32) -> String {
    let outcomes = engine.host().outcomes.borrow();
    let body = outcomes.get(&id).and_then(|o| o.reply.as_ref()).map(|r| r.body.clone()).unwrap_or_default();
    serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["error_description"].as_str().map(str::to_string))
        .unwrap_or(body)
}

fn header(engine: &Engine<FakeHost>, id: u32, name: &str) -> Option<String> {
    let outcomes = engine.host().outcomes.borrow();
    outcomes.get(&id)?.set.iter().rev().find(|(n, _)| n == name).and_then(|(_, v)| v.clone())
}

#[test]
fn miss_then_hit_makes_one_call() {
    let shared = shared();
    let vm = worker(&shared);
    assert_eq!(send(&vm, 1, "orders.example.com", "t-1"), Flow::Pause);
    let [call] = &calls(&shared)[..] else { panic!("one call") };
    assert_eq!((call.cluster.as_str(), call.token.as_str()), ("main", "t-1"));
    answer(&vm, call.id, &active(MAIN, "100", &["orders:write"]));
    assert_eq!(status(&vm, 1), Some(200));
    assert_eq!(header(&vm, 1, "x-auth-roles").as_deref(), Some("orders:write"));
    assert_eq!(header(&vm, 1, "x-auth-org").as_deref(), Some("org-1"));
    assert_eq!(send(&vm, 2, "orders.example.com", "t-1"), Flow::Continue);
    assert_eq!(header(&vm, 2, "x-auth-subject").as_deref(), Some("user-of-100"));
    assert_eq!(calls(&shared).len(), 1);
}

fn recorded(engine: &Engine<FakeHost>, id: u32) -> Vec<(Field, String)> {
    engine.host().outcomes.borrow().get(&id).map(|o| o.recorded.clone()).unwrap_or_default()
}

/// What the access log reads: who, for which API, and why; never the token.
#[test]
fn each_outcome_is_recorded_for_the_access_log() {
    let shared = shared();
    let vm = worker(&shared);
    send(&vm, 1, "orders.example.com", "t-1");
    let [call] = &calls(&shared)[..] else { panic!("one call") };
    answer(&vm, call.id, &active(MAIN, "100", &["orders:write"]));
    let allow = [
        (Field::Api, "orders"),
        (Field::Decision, "allow"),
        (Field::Reason, "valid_token"),
        (Field::Issuer, "main"),
        (Field::Subject, "user-of-100"),
        (Field::ClientId, "client"),
    ];
    assert_eq!(recorded(&vm, 1), allow.map(|(f, v)| (f, v.to_string())));
    send(&vm, 2, "billing.example.com", "t-1");
    let deny = [(Field::Api, "billing"), (Field::Decision, "deny"), (Field::Reason, "invalid_token")];
    assert_eq!(recorded(&vm, 2), deny.map(|(f, v)| (f, v.to_string())));
    send(&vm, 3, "shipping.example.com", "t-1");
    let no_rule = [(Field::Decision, "deny"), (Field::Reason, "no_rule")];
    assert_eq!(recorded(&vm, 3), no_rule.map(|(f, v)| (f, v.to_string())));
    for id in 1..=3 {
        assert!(recorded(&vm, id).iter().all(|(_, value)| !value.contains("t-1")));
    }
}

/// Regression: a request that missed the cache just before the leader stored
/// its verdict, and won the slot just after the leader released it, called the
/// issuer again (`make bench` (f) counted 1.05 calls per token).
#[test]
fn a_leader_that_finds_the_verdict_after_winning_the_slot_makes_no_call() {
    let shared = shared();
    let (one, two) = (worker(&shared), worker(&shared));
    send(&one, 1, "orders.example.com", "t-1");
    let [call] = &calls(&shared)[..] else { panic!("one call") };
    answer(&one, call.id, &active(MAIN, "100", &["orders:write"]));
    // Worker two's lookup (both candidate slots) runs before the verdict is written.
    shared.hidden_cache_reads.set(2);
    assert_eq!(send(&two, 2, "orders.example.com", "t-1"), Flow::Continue);
    assert_eq!(header(&two, 2, "x-auth-subject").as_deref(), Some("user-of-100"));
    assert_eq!(calls(&shared).len(), 1);
    // And the slot it won is free again: a new token leads at once.
    send(&two, 3, "orders.example.com", "t-2");
    assert_eq!(calls(&shared).len(), 2);
}

/// The confusion matrix of issue 8 on the host: a token minted for orders is
/// refused at billing on the miss path, the hit path and the coalesced path.
#[test]
fn token_for_orders_is_refused_at_billing_on_every_path() {
    let shared = shared();
    let (vm, other_vm) = (worker(&shared), worker(&shared));
    let orders_token = active(MAIN, "100", &["billing:read"]);

    // Miss: billing asks the issuer itself, then refuses.
    send(&vm, 1, "billing.example.com", "orders-token");
    answer(&vm, 1, &orders_token);
    assert_eq!((status(&vm, 1), description(&vm, 1).as_str()), (Some(401), "token is not meant for this API"));
    // Hit: no call, same refusal; orders itself admits from the same entry.
    assert_eq!(send(&vm, 2, "billing.example.com", "orders-token"), Flow::Pause);
    assert_eq!(status(&vm, 2), Some(401));
    assert_eq!(send(&vm, 3, "orders.example.com", "orders-token"), Flow::Continue);
    assert_eq!(calls(&shared).len(), 1);

    // Coalesced: orders leads; billing waits on the same VM and on another.
    send(&vm, 4, "orders.example.com", "fresh");
    send(&vm, 5, "billing.example.com", "fresh");
    send(&other_vm, 6, "billing.example.com", "fresh");
    assert_eq!(calls(&shared).len(), 2, "waiters make no calls of their own");
    assert!(other_vm.host().ticking.get());
    answer(&vm, 2, &orders_token);
    assert_eq!((status(&vm, 4), status(&vm, 5)), (Some(200), Some(401)));
    tick(&other_vm);
    assert_eq!(status(&other_vm, 6), Some(401));
    assert!(!other_vm.host().ticking.get());
    assert_eq!(calls(&shared).len(), 2);
}

#[test]
fn roles_of_one_project_do_not_open_another_projects_route() {
    let shared = shared();
    let vm = worker(&shared);
    // Billing's audience, but billing:read held in the orders project only.
    let mut answer_body = active(MAIN, "200", &[]);
    answer_body["urn:zitadel:iam:org:project:100:roles"] = json!({"billing:read": {}});
    send(&vm, 1, "billing.example.com", "t");
    answer(&vm, 1, &answer_body);
    assert_eq!(status(&vm, 1), Some(403));
}

#[test]
fn jwt_goes_only_to_the_issuer_it_names() {
    let shared = shared();
    let vm = worker(&shared);
    // Orders trusts main only: the partner's JWT never reaches an issuer.
    assert_eq!(send(&vm, 1, "orders.example.com", &jwt(PARTNER)), Flow::Pause);
    assert_eq!(
        (status(&vm, 1), description(&vm, 1).as_str()),
        (Some(401), "token is from an issuer this API does not trust")
    );
    // Partners trusts both, partner first: a main JWT is asked at main only.
    send(&vm, 2, "eu.partners.example.com", &jwt(MAIN));
    let [call] = &calls(&shared)[..] else { panic!("one call") };
    assert_eq!(call.cluster, "main");
    answer(&vm, call.id, &active(MAIN, "300", &[]));
    assert_eq!(status(&vm, 2), Some(200));
}

#[test]
fn opaque_token_is_asked_in_order_then_served_from_the_cache() {
    let shared = shared();
    let vm = worker(&shared);
    send(&vm, 1, "eu.partners.example.com", "opaque");
    answer(&vm, 1, &json!({"active": false}));
    let asked: Vec<String> = calls(&shared).iter().map(|c| c.cluster.clone()).collect();
    assert_eq!(asked, ["partner", "main"]);
    answer(&vm, 2, &active(MAIN, "300", &[]));
    assert_eq!(status(&vm, 1), Some(200));
    // Cached: the partner's "no" and main's "yes".
    assert_eq!(send(&vm, 2, "eu.partners.example.com", "opaque"), Flow::Continue);
    // The partner's negative entry ends after 10 s; main's valid one does not,
    // and it decides without asking the partner again.
    shared.now_ms.set(NOW_MS + 11_000);
    assert_eq!(send(&vm, 3, "eu.partners.example.com", "opaque"), Flow::Continue);
    assert_eq!(calls(&shared).len(), 2);
}

#[test]
fn what_one_issuer_said_never_answers_for_another() {
    let shared = shared();
    let vm = worker(&shared);
    // The partner vouches for a token at the partners API ...
    send(&vm, 1, "eu.partners.example.com", "shared-token");
    answer(&vm, 1, &active(PARTNER, "300", &[]));
    assert_eq!(status(&vm, 1), Some(200));
    // ... which says nothing about it at orders, whose issuer is main.
    assert_eq!(send(&vm, 2, "orders.example.com", "shared-token"), Flow::Pause);
    let last = calls(&shared).last().cloned().unwrap();
    assert_eq!(last.cluster, "main");
    answer(&vm, last.id, &json!({"active": false}));
    assert_eq!(status(&vm, 2), Some(401));
}

#[test]
fn answer_naming_another_issuer_is_refused() {
    let shared = shared();
    let vm = worker(&shared);
    send(&vm, 1, "orders.example.com", "t");
    answer(&vm, 1, &active(PARTNER, "100", &[]));
    assert_eq!((status(&vm, 1), description(&vm, 1).as_str()), (Some(401), "token is from another issuer"));
}

#[test]
fn one_failing_issuer_and_one_no_is_503() {
    let shared = shared();
    let vm = worker(&shared);
    send(&vm, 1, "eu.partners.example.com", "t");
    fail(&vm, 1);
    answer(&vm, 2, &json!({"active": false}));
    assert_eq!(status(&vm, 1), Some(503));
}

#[test]
fn a_failed_leader_fails_its_waiters_on_every_worker() {
    let shared = shared();
    let (vm, other_vm) = (worker(&shared), worker(&shared));
    send(&vm, 1, "orders.example.com", "t");
    send(&vm, 2, "orders.example.com", "t");
    send(&other_vm, 3, "orders.example.com", "t");
    fail(&vm, 1);
    tick(&other_vm);
    assert_eq!([status(&vm, 1), status(&vm, 2), status(&other_vm, 3)], [Some(503); 3]);
    assert_eq!(calls(&shared).len(), 1);
}

#[test]
fn calls_past_an_issuers_cap_get_503() {
    let shared = shared();
    let vm = worker(&shared);
    send(&vm, 1, "orders.example.com", "a");
    send(&vm, 2, "orders.example.com", "b");
    send(&vm, 3, "orders.example.com", "c");
    assert_eq!(
        (status(&vm, 3), description(&vm, 3).as_str()),
        (Some(503), "too many token checks under way, try again later")
    );
    // The partner's issuer has a cap of its own.
    send(&vm, 4, "eu.partners.example.com", "d");
    assert_eq!(calls(&shared).last().map(|c| c.cluster.clone()).as_deref(), Some("partner"));
}

#[test]
fn every_forwarded_header_is_removed_on_public_routes() {
    let shared = shared();
    let vm = worker(&shared);
    vm.host().current.set(1);
    let names: Vec<&[u8]> = vec![b"x_auth_org", b"x_unrelated"];
    let request =
        Request { method: b"GET", authority: b"billing.example.com", path: b"/health", names, ..Request::default() };
    assert_eq!(vm.on_request_headers(1, &request), Flow::Continue);
    let removed: Vec<String> =
        vm.host().outcomes.borrow()[&1].set.iter().filter(|(_, v)| v.is_none()).map(|(n, _)| n.clone()).collect();
    // The underscore spelling of a forwarded header goes too; other underscore names stay.
    assert_eq!(removed, ["x_auth_org", "x-auth-subject", "x-auth-client-id", "x-auth-roles", "x-auth-org"]);
}

/// proxy-wasm-cpp-host#203: plugins on one VM id share shared data.
#[test]
fn two_plugins_on_one_vm_do_not_share_verdicts() {
    let shared = shared();
    let one = worker_with(&shared, gateway(), "plugin-one");
    let two = worker_with(&shared, gateway(), "plugin-two");
    send(&one, 1, "orders.example.com", "t");
    answer(&one, 1, &active(MAIN, "100", &[]));
    assert_eq!(send(&two, 2, "orders.example.com", "t"), Flow::Pause);
    assert_eq!(calls(&shared).len(), 2);
}

#[test]
fn verdicts_kept_under_an_older_configuration_are_not_used() {
    let shared = shared();
    let before = worker(&shared);
    send(&before, 1, "orders.example.com", "t");
    answer(&before, 1, &active(MAIN, "100", &[]));
    // The same plugin reconfigured: orders now takes project 101 instead.
    let mut policy = gateway();
    policy.apis[1].audiences = vec!["101".into()];
    policy.issuers[0].extraction.audiences = vec!["200".into(), "101".into(), "300".into()];
    let main = &policy.issuers[0];
    let fingerprint = crate::compile::fingerprint(
        &main.extraction,
        &main.endpoint,
        main.client_auth.client_id(),
        &policy.cache,
        None,
    );
    policy.issuers[0].fingerprint = fingerprint;
    let after = worker_with(&shared, policy, "gateway");
    assert_eq!(send(&after, 2, "orders.example.com", "t"), Flow::Pause);
    answer(&after, 2, &active(MAIN, "100", &[]));
    assert_eq!(status(&after, 2), Some(401));
}

#[test]
fn a_vanished_leader_lets_a_waiter_call() {
    let shared = shared();
    let (vm, other_vm) = (worker(&shared), worker(&shared));
    send(&vm, 1, "orders.example.com", "t");
    send(&other_vm, 2, "orders.example.com", "t");
    done(&vm, 1); // the leader's client went away
    tick(&other_vm);
    assert_eq!(calls(&shared).len(), 2);
    answer(&other_vm, 2, &active(MAIN, "100", &[]));
    assert_eq!(status(&other_vm, 2), Some(200));
    assert_eq!(status(&vm, 1), None);
}

#[test]
fn counters_follow_the_path_taken() {
    let shared = shared();
    let vm = worker(&shared);
    send(&vm, 1, "orders.example.com", "t");
    answer(&vm, 1, &active(MAIN, "100", &[]));
    send(&vm, 2, "orders.example.com", "t");
    let counted = vm.host().counters.borrow().clone();
    let times = |c: Counter| counted.iter().filter(|&&x| x == c).count();
    assert_eq!(
        [times(Counter::CacheMisses), times(Counter::Calls), times(Counter::CacheHits), times(Counter::Allowed)],
        [1, 1, 1, 2]
    );
}

/// One instance, two projects' credentials: what ZITADEL told one client
/// (inactive: its project is not in the token's aud) is not the other's answer.
#[test]
fn issuers_sharing_a_url_keep_their_own_verdicts() {
    let shared = shared();
    let mut policy = gateway();
    policy.issuers[1].extraction.issuer = MAIN.into();
    policy.issuers[1].key_scope = format!("partner\0{MAIN}\0{:016x}", policy.issuers[1].fingerprint);
    let vm = worker_with(&shared, policy, "gateway");
    send(&vm, 1, "orders.example.com", "t");
    answer(&vm, 1, &active(MAIN, "100", &[]));
    assert_eq!(status(&vm, 1), Some(200));
    // At partners, main's cached verdict (for project 100) does not admit, so
    // "t" is asked with the partner entry's credentials: its own verdict.
    assert_eq!(send(&vm, 2, "eu.partners.example.com", "t"), Flow::Pause);
    assert_eq!(calls(&shared).last().map(|c| c.cluster.clone()).as_deref(), Some("partner"));
    answer(&vm, 2, &active(MAIN, "300", &[]));
    assert_eq!(status(&vm, 2), Some(200));
    assert_eq!(header(&vm, 2, "x-auth-subject").as_deref(), Some("user-of-300"));
}

/// A waiter that needs its API's next issuer after the leader's answer calls
/// it from the tick: from inside the leader's callback, the answer would go
/// to the leader, which has ended by then (its own API trusts one issuer),
/// and the waiter would hang holding a slot of the next issuer's cap.
#[test]
fn a_waiter_calls_its_next_issuer_from_the_tick() {
    let basic = json!({"method": "client_secret_basic", "client_id": "api", "client_secret": "s3cret"});
    let config = json!({
        "issuers": {
            "main": {"issuer": MAIN, "introspection": {"cluster": "main"}, "client_auth": basic},
            "partner": {"issuer": PARTNER, "introspection": {"cluster": "partner"}, "client_auth": basic}
        },
        "apis": {
            "orders": {"audiences": ["100"], "issuers": ["main"]},
            "both": {"audiences": ["300"], "issuers": ["main", "partner"]}
        },
        "rules": [
            {"host": "orders.example.com", "prefix": "/", "api": "orders", "access": "authenticated"},
            {"host": "both.example.com", "prefix": "/", "api": "both", "access": "authenticated"}
        ]
    });
    let policy = crate::load::load(config.to_string().as_bytes(), &|_| None).unwrap();
    let shared = shared();
    let vm = worker_with(&shared, policy, "ns");
    send(&vm, 1, "orders.example.com", "partner-token");
    send(&vm, 2, "both.example.com", "partner-token");
    assert_eq!(calls(&shared).len(), 1, "the second request waits for the first");
    answer(&vm, 1, &json!({"active": false}));
    assert_eq!(status(&vm, 1), Some(401));
    assert_eq!(calls(&shared).len(), 1, "no call from inside the leader's callback");
    assert!(vm.host().ticking.get());
    tick(&vm);
    let last = calls(&shared).last().cloned().unwrap();
    assert_eq!((last.cluster.as_str(), last.registered), ("partner", 0));
    answer(&vm, last.id, &active(PARTNER, "300", &[]));
    assert_eq!(status(&vm, 2), Some(200));
    assert!(!vm.may_go_on(1) && vm.may_go_on(2));
}

#[test]
fn a_lost_clock_denies_the_leader_and_its_waiters() {
    let shared = shared();
    let vm = worker(&shared);
    send(&vm, 1, "orders.example.com", "t");
    send(&vm, 2, "orders.example.com", "t");
    vm.host().clock_broken.set(true);
    answer(&vm, 1, &active(MAIN, "100", &[]));
    assert_eq!((status(&vm, 1), status(&vm, 2)), (Some(503), Some(503)));
}

#[test]
fn bodies_follow_only_admitted_requests() {
    let shared = shared();
    let vm = worker(&shared);
    send(&vm, 1, "orders.example.com", "t");
    assert!(!vm.may_go_on(1), "paused");
    answer(&vm, 1, &active(MAIN, "100", &[]));
    assert!(vm.may_go_on(1));
    send(&vm, 2, "orders.example.com", "other");
    answer(&vm, 2, &json!({"active": false}));
    assert!(!vm.may_go_on(2), "denied");
    done(&vm, 1);
    assert!(!vm.may_go_on(1), "forgotten once done");
}

/// The issuers' credentials are probed once per Envoy after a configuration
/// loads, from whichever VM marks it first, and each answer is counted; no
/// request waits for it.
#[test]
fn the_credentials_are_probed_once_per_envoy_after_a_load() {
    let shared = shared();
    let vms: Vec<Engine<FakeHost>> =
        (0..3).map(|_| worker(&shared).with_probe("gateway", b"{\"the\": \"configuration\"}")).collect();
    assert!(vms.iter().all(|vm| vm.host().ticking.get()));
    for vm in &vms {
        tick(vm);
    }
    // One call per issuer (main, partner), all from one VM's root context.
    let probes = calls(&shared);
    assert_eq!(probes.len(), 2);
    assert!(probes.iter().all(|call| call.registered == 0 && call.token.starts_with("probe-")));
    // The answers reach the VM that made the calls (the others do not know them).
    for vm in &vms {
        deliver(vm, probes[0].id, 200, br#"{"active":false}"#.to_vec());
        deliver(vm, probes[1].id, 401, br#"{"error":"invalid_client"}"#.to_vec());
    }
    let counted: Vec<(IssuerId, IssuerCounter)> =
        vms.iter().flat_map(|vm| vm.host().issuer_counters.borrow().clone()).collect();
    let outcome_of = |call: &Call| if call.cluster == "main" { IssuerId(0) } else { IssuerId(1) };
    assert_eq!(
        counted,
        [
            (outcome_of(&probes[0]), IssuerCounter::CredentialsAccepted),
            (outcome_of(&probes[1]), IssuerCounter::CredentialsRejected)
        ]
    );
    // Requests go on as ever meanwhile, and a tick after the probe makes no more calls.
    for vm in &vms {
        tick(vm);
        assert!(!vm.host().ticking.get());
    }
    assert_eq!(calls(&shared).len(), 2);
    // Another configuration is probed again.
    let reloaded = worker(&shared).with_probe("gateway", b"{\"another\": \"configuration\"}");
    tick(&reloaded);
    assert_eq!(calls(&shared).len(), 4);
}

// ---- JWTs verified locally (the main issuer in the local JWT mode) ----

/// A JWT of the main instance for project `project`, signed with the test key under `kid`.
fn local_jwt(kid: &str, project: &str, sub: &str) -> String {
    let claims = json!({
        "iss": MAIN, "sub": sub, "aud": [project], "exp": NOW_MS / 1000 + 3600, "iat": NOW_MS / 1000,
        "jti": format!("jti-{sub}"), "client_id": "client",
        "urn:zitadel:iam:user:resourceowner:id": "org-1",
    });
    crate::jwt::tests::sign(&json!({"alg": "RS256", "kid": kid, "typ": "JWT"}), &claims)
}

fn key_set(kids: &[&str]) -> Value {
    json!({ "keys": kids.iter().map(|kid| crate::jwks::tests::rsa_jwk(kid)).collect::<Vec<_>>() })
}

/// The calls made for the issuer's keys.
fn key_fetches(shared: &Shared) -> Vec<Call> {
    calls(shared).into_iter().filter(|call| call.path == "/oauth/v2/keys").collect()
}

/// The next fetch of the keys, answered with `kids`.
fn serve_keys(engine: &Engine<FakeHost>, kids: &[&str]) {
    let fetch = key_fetches(&engine.host().shared).last().cloned().expect("a fetch of the keys");
    assert_eq!(
        (fetch.cluster.as_str(), fetch.registered),
        ("main", 0),
        "fetched through the issuer's cluster, from the root"
    );
    answer(engine, fetch.id, &key_set(kids));
}

fn advance_clock(shared: &Shared, ms: u64) {
    shared.now_ms.set(shared.now_ms.get() + ms);
}

#[test]
fn a_local_jwt_is_verified_with_no_introspection_call() {
    let shared = shared();
    let vm = worker_with(&shared, local_gateway(), "gateway");
    assert!(vm.host().ticking.get(), "the first tick fetches the keys");
    tick(&vm);
    serve_keys(&vm, &["k1"]);
    assert_eq!(send(&vm, 1, "orders.example.com", &local_jwt("k1", "100", "alice")), Flow::Continue);
    assert_eq!(header(&vm, 1, "x-auth-subject").as_deref(), Some("alice"));
    assert_eq!(header(&vm, 1, "x-auth-org").as_deref(), Some("org-1"));
    // The same token again: the cached verdict, with the route's own checks.
    assert_eq!(send(&vm, 2, "orders.example.com", &local_jwt("k1", "100", "alice")), Flow::Continue);
    assert_eq!(send(&vm, 3, "billing.example.com", &local_jwt("k1", "100", "alice")), Flow::Pause);
    assert_eq!(status(&vm, 3), Some(401));
    assert_eq!(calls(&shared).len(), 1, "one fetch of the keys, no introspection");
    let verifications = vm.host().counters.borrow().iter().filter(|c| **c == Counter::JwtVerifications).count();
    assert_eq!(verifications, 1);
}

#[test]
fn jwts_before_the_first_fetch_wait_for_it_on_every_worker() {
    let shared = shared();
    let (one, two) =
        (worker_with(&shared, local_gateway(), "gateway"), worker_with(&shared, local_gateway(), "gateway"));
    assert_eq!(send(&one, 1, "orders.example.com", &local_jwt("k1", "100", "a")), Flow::Pause);
    assert_eq!(send(&two, 2, "orders.example.com", &local_jwt("k1", "100", "b")), Flow::Pause);
    tick(&two);
    tick(&one);
    assert_eq!(key_fetches(&shared).len(), 1, "one fetch per Envoy");
    serve_keys(&two, &["k1"]);
    tick(&one);
    tick(&two);
    assert_eq!((status(&one, 1), status(&two, 2)), (Some(200), Some(200)));
    assert_eq!(calls(&shared).len(), 1);
}

#[test]
fn a_new_kid_fetches_the_keys_once_then_is_admitted_or_refused() {
    let shared = shared();
    let vm = worker_with(&shared, local_gateway(), "gateway");
    tick(&vm);
    serve_keys(&vm, &["k1"]);
    advance_clock(&shared, 20_000);
    // Rotation at the issuer: a token signed under a new kid.
    assert_eq!(send(&vm, 1, "orders.example.com", &local_jwt("k2", "100", "a")), Flow::Pause);
    tick(&vm);
    serve_keys(&vm, &["k1", "k2"]);
    tick(&vm);
    assert_eq!(status(&vm, 1), Some(200));
    assert_eq!(key_fetches(&shared).len(), 2);
    // A kid the issuer does not publish: one more fetch (10 s later), then 401.
    advance_clock(&shared, 10_000);
    assert_eq!(send(&vm, 2, "orders.example.com", &local_jwt("k9", "100", "b")), Flow::Pause);
    tick(&vm);
    serve_keys(&vm, &["k1", "k2"]);
    tick(&vm);
    assert_eq!(status(&vm, 2), Some(401));
    assert_eq!(description(&vm, 2), "token is signed with a key its issuer does not publish");
    // Another unknown kid right after waits for the next fetch, ten seconds after the last:
    // no fetch before, then k9 (refused a moment ago, not cached) is published and admitted.
    assert_eq!(send(&vm, 3, "orders.example.com", &local_jwt("k9", "100", "b")), Flow::Pause);
    advance_clock(&shared, 5_000);
    tick(&vm);
    assert_eq!((status(&vm, 3), key_fetches(&shared).len()), (None, 3));
    advance_clock(&shared, 5_000);
    tick(&vm);
    serve_keys(&vm, &["k9"]);
    tick(&vm);
    assert_eq!(status(&vm, 3), Some(200));
    assert_eq!(calls(&shared).len(), 4, "keys only, never introspection");
}

#[test]
fn without_usable_keys_a_jwt_gets_503_never_401() {
    let shared = shared();
    let vm = worker_with(&shared, local_gateway(), "gateway");
    send(&vm, 1, "orders.example.com", &local_jwt("k1", "100", "a"));
    tick(&vm);
    let fetch = key_fetches(&shared)[0].clone();
    fail(&vm, fetch.id);
    tick(&vm);
    assert_eq!(status(&vm, 1), Some(503));
    send(&vm, 2, "orders.example.com", &local_jwt("k1", "100", "a"));
    assert_eq!(status(&vm, 2), Some(503), "no second fetch within min refresh");
    assert_eq!(key_fetches(&shared).len(), 1);
    let errors = vm.host().counters.borrow().iter().filter(|c| **c == Counter::JwksErrors).count();
    assert_eq!(errors, 1);
}

#[test]
fn a_failed_refresh_keeps_the_last_good_keys() {
    let shared = shared();
    let vm = worker_with(&shared, local_gateway(), "gateway");
    tick(&vm);
    serve_keys(&vm, &["k1"]);
    advance_clock(&shared, 300_000);
    tick(&vm);
    let refresh = key_fetches(&shared).last().cloned().unwrap();
    assert!(deliver(&vm, refresh.id, 200, b"<html>not keys</html>".to_vec()));
    assert_eq!(send(&vm, 1, "orders.example.com", &local_jwt("k1", "100", "a")), Flow::Continue);
    assert_eq!(key_fetches(&shared).len(), 2);
}

#[test]
fn a_forged_jwt_is_refused_and_the_refusal_cached() {
    let shared = shared();
    let vm = worker_with(&shared, local_gateway(), "gateway");
    tick(&vm);
    serve_keys(&vm, &["k1"]);
    let token = local_jwt("k1", "100", "a");
    let (signed, _) = token.rsplit_once('.').unwrap();
    let forged = format!("{signed}.{}", "A".repeat(342));
    send(&vm, 1, "orders.example.com", &forged);
    assert_eq!(status(&vm, 1), Some(401));
    assert_eq!(description(&vm, 1), "token signature does not verify");
    send(&vm, 2, "orders.example.com", &forged);
    assert_eq!(status(&vm, 2), Some(401));
    let verifications = vm.host().counters.borrow().iter().filter(|c| **c == Counter::JwtVerifications).count();
    assert_eq!(verifications, 1, "the second refusal came from the cache");
}

#[test]
fn opaque_tokens_of_a_local_issuer_are_still_introspected() {
    let shared = shared();
    let vm = worker_with(&shared, local_gateway(), "gateway");
    assert_eq!(send(&vm, 1, "orders.example.com", "opaque-1"), Flow::Pause);
    let [call] = &calls(&shared)[..] else { panic!("one call") };
    assert_eq!((call.path.as_str(), call.token.as_str()), ("/oauth/v2/introspect", "opaque-1"));
    answer(&vm, call.id, &active(MAIN, "100", &[]));
    assert_eq!(status(&vm, 1), Some(200));
}

#[test]
fn waiters_for_keys_are_capped_per_issuer() {
    let shared = shared();
    let vm = worker_with(&shared, local_gateway(), "gateway");
    // No keys yet and no tick: each request waits, up to the cap.
    for id in 1..=256 {
        assert_eq!(send(&vm, id, "orders.example.com", &local_jwt("k1", "100", &format!("u{id}"))), Flow::Pause);
        assert_eq!(status(&vm, id), None);
    }
    send(&vm, 257, "orders.example.com", &local_jwt("k1", "100", "u257"));
    assert_eq!(status(&vm, 257), Some(503));
    assert_eq!(description(&vm, 257), "too many token checks under way, try again later");
    // The keys arrive: every waiter goes on.
    tick(&vm);
    serve_keys(&vm, &["k1"]);
    tick(&vm);
    assert!((1..=256).all(|id| status(&vm, id) == Some(200)));
}

// ---- RFC 9728 metadata, dry runs, stale-if-error ----

use crate::decision::tests::{mcp_gateway, MCP_RESOURCE};

fn send_request(engine: &Engine<FakeHost>, id: u32, method: &str, host: &str, path: &str, token: Option<&str>) -> Flow {
    engine.host().callback.set(id);
    engine.host().current.set(id);
    let authorization = token.map(|token| format!("Bearer {token}"));
    let request = Request {
        method: method.as_bytes(),
        authority: host.as_bytes(),
        path: path.as_bytes(),
        authorization: authorization.as_deref().map(str::as_bytes),
        ..Request::default()
    };
    engine.on_request_headers(id, &request)
}

fn reply_header(engine: &Engine<FakeHost>, id: u32, name: &str) -> Option<String> {
    let outcomes = engine.host().outcomes.borrow();
    let reply = outcomes.get(&id)?.reply.as_ref()?;
    reply.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone())
}

fn counted(engine: &Engine<FakeHost>, counter: Counter) -> usize {
    engine.host().counters.borrow().iter().filter(|c| **c == counter).count()
}

fn reason(engine: &Engine<FakeHost>, id: u32) -> Option<String> {
    recorded(engine, id).into_iter().rev().find(|(field, _)| *field == Field::Reason).map(|(_, value)| value)
}

#[test]
fn metadata_is_answered_and_every_challenge_of_the_api_points_at_it() {
    let shared = shared();
    let vm = worker_with(&shared, mcp_gateway(), "gateway");
    let well_known = "/.well-known/oauth-protected-resource/mcp";
    assert_eq!(send_request(&vm, 1, "GET", "mcp.example.com", well_known, None), Flow::Pause);
    assert_eq!(status(&vm, 1), Some(200));
    let body = vm.host().outcomes.borrow()[&1].reply.as_ref().unwrap().body.clone();
    let document: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(document["resource"], MCP_RESOURCE);
    assert_eq!(document["authorization_servers"], json!([MAIN]));
    assert_eq!(reply_header(&vm, 1, "access-control-allow-origin").as_deref(), Some("*"));
    assert_eq!(reason(&vm, 1).as_deref(), Some("resource_metadata"));
    let url = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp";
    send_request(&vm, 2, "POST", "mcp.example.com", "/mcp", None);
    assert_eq!(status(&vm, 2), Some(401));
    assert_eq!(reply_header(&vm, 2, "www-authenticate"), Some(format!("Bearer resource_metadata=\"{url}\"")));
    send_request(&vm, 3, "POST", "mcp.example.com", "/mcp", Some("t-1"));
    let [call] = &calls(&shared)[..] else { panic!("one call") };
    answer(&vm, call.id, &active(MAIN, "100", &[]));
    assert_eq!(status(&vm, 3), Some(401), "a token of another project");
    let challenge = reply_header(&vm, 3, "www-authenticate").unwrap();
    assert!(challenge.ends_with(&format!(", resource_metadata=\"{url}\"")), "{challenge}");
    // Other APIs' challenges say nothing of it.
    send_request(&vm, 4, "GET", "orders.example.com", "/x", None);
    assert_eq!(reply_header(&vm, 4, "www-authenticate").as_deref(), Some("Bearer"));
    assert_eq!(counted(&vm, Counter::MetadataServed), 1);
}

#[test]
fn a_dry_run_counts_a_denial_and_lets_the_request_through_without_identity() {
    let shared = shared();
    let vm = worker_with(&shared, mcp_gateway(), "gateway");
    assert_eq!(send_request(&vm, 1, "GET", "trial.example.com", "/x", None), Flow::Continue);
    assert_eq!(status(&vm, 1), None, "no reply: it went on at once");
    assert_eq!(header(&vm, 1, "x-auth-subject"), None);
    assert!(vm.host().outcomes.borrow()[&1]
        .set
        .iter()
        .any(|(name, value)| name == "x-auth-subject" && value.is_none()));
    assert_eq!(reason(&vm, 1).as_deref(), Some("missing_token"));
    assert_eq!(counted(&vm, Counter::WouldDenyMissingToken), 1);
    assert_eq!(counted(&vm, Counter::DeniedMissingToken), 0);
    // An inactive token: the issuer is asked, the request goes on without identity.
    send_request(&vm, 2, "GET", "trial.example.com", "/x", Some("bad"));
    let [call] = &calls(&shared)[..] else { panic!("one call") };
    answer(&vm, call.id, &json!({"active": false}));
    assert_eq!(status(&vm, 2), Some(200));
    assert_eq!(header(&vm, 2, "x-auth-subject"), None);
    assert_eq!(counted(&vm, Counter::WouldDenyInvalidToken), 1);
    // A valid one passes as always, with its identity.
    send_request(&vm, 3, "GET", "trial.example.com", "/x", Some("good"));
    let call = calls(&shared).last().cloned().unwrap();
    answer(&vm, call.id, &active(MAIN, "500", &[]));
    assert_eq!(header(&vm, 3, "x-auth-subject").as_deref(), Some("user-of-500"));
    // A rule's dry run: a missing role on orders' /beta.
    send_request(&vm, 4, "GET", "orders.example.com", "/beta", Some("orders"));
    let call = calls(&shared).last().cloned().unwrap();
    answer(&vm, call.id, &active(MAIN, "100", &[]));
    assert_eq!(status(&vm, 4), Some(200));
    assert_eq!(header(&vm, 4, "x-auth-subject"), None);
    assert_eq!(counted(&vm, Counter::WouldDenyInsufficientRole), 1);
}

#[test]
fn stale_if_error_admits_on_a_recent_verdict_only_while_the_issuer_is_down() {
    let shared = shared();
    let vm = worker_with(&shared, mcp_gateway(), "gateway");
    let mcp = |vm: &Engine<FakeHost>, id, token| send_request(vm, id, "POST", "mcp.example.com", "/mcp", Some(token));
    let last_call = |shared: &Shared| calls(shared).last().cloned().unwrap().id;
    // A verdict cached for 300 s (the cache's max_ttl), the token valid for an hour.
    mcp(&vm, 1, "t-1");
    answer(&vm, last_call(&shared), &active(MAIN, "400", &[]));
    assert_eq!(status(&vm, 1), Some(200));
    // 30 s after its entry ended, the issuer answers 503: admitted on the old verdict.
    advance_clock(&shared, 330_000);
    mcp(&vm, 2, "t-1");
    fail(&vm, last_call(&shared));
    assert_eq!(status(&vm, 2), Some(200));
    assert_eq!(header(&vm, 2, "x-auth-subject").as_deref(), Some("user-of-400"));
    assert_eq!(reason(&vm, 2).as_deref(), Some("stale_verdict"));
    assert_eq!(counted(&vm, Counter::StaleAdmitted), 1);
    // Past the 60 s window: 503.
    advance_clock(&shared, 31_000);
    mcp(&vm, 3, "t-1");
    fail(&vm, last_call(&shared));
    assert_eq!(status(&vm, 3), Some(503));
    // Only where the API allows it: orders has no window.
    send(&vm, 4, "orders.example.com", "t-4");
    answer(&vm, last_call(&shared), &active(MAIN, "100", &[]));
    advance_clock(&shared, 310_000);
    send(&vm, 5, "orders.example.com", "t-4");
    fail(&vm, last_call(&shared));
    assert_eq!(status(&vm, 5), Some(503));
}

#[test]
fn stale_if_error_never_follows_a_refusal_a_4xx_or_the_tokens_exp() {
    let shared = shared();
    let vm = worker_with(&shared, mcp_gateway(), "gateway");
    let mcp = |vm: &Engine<FakeHost>, id, token| send_request(vm, id, "POST", "mcp.example.com", "/mcp", Some(token));
    let last_call = |shared: &Shared| calls(shared).last().cloned().unwrap().id;
    let now = NOW_MS / 1000;
    mcp(&vm, 1, "revoked");
    answer(&vm, last_call(&shared), &active(MAIN, "400", &[]));
    mcp(&vm, 2, "rejected");
    answer(&vm, last_call(&shared), &active(MAIN, "400", &[]));
    mcp(&vm, 3, "short");
    let mut short = active(MAIN, "400", &[]);
    short["exp"] = json!(now + 305);
    answer(&vm, last_call(&shared), &short);
    advance_clock(&shared, 301_000);
    // The issuer says inactive once: that wins, now and during a later outage.
    mcp(&vm, 4, "revoked");
    answer(&vm, last_call(&shared), &json!({"active": false}));
    assert_eq!(status(&vm, 4), Some(401));
    advance_clock(&shared, 11_000);
    mcp(&vm, 5, "revoked");
    fail(&vm, last_call(&shared));
    assert_eq!(status(&vm, 5), Some(503));
    // A 4xx is no outage: the filter's own credentials, say.
    mcp(&vm, 6, "rejected");
    assert!(deliver(&vm, last_call(&shared), 401, br#"{"error":"invalid_client"}"#.to_vec()));
    assert_eq!(status(&vm, 6), Some(503));
    // Past the token's exp: nothing to stand in.
    mcp(&vm, 7, "short");
    fail(&vm, last_call(&shared));
    assert_eq!(status(&vm, 7), Some(503));
    assert_eq!(counted(&vm, Counter::StaleAdmitted), 0);
}

#[test]
fn waiters_of_a_leader_whose_issuer_is_down_are_admitted_on_the_stale_verdict_too() {
    let shared = shared();
    let (one, two) = (worker_with(&shared, mcp_gateway(), "gateway"), worker_with(&shared, mcp_gateway(), "gateway"));
    send_request(&one, 1, "POST", "mcp.example.com", "/mcp", Some("t"));
    answer(&one, calls(&shared)[0].id, &active(MAIN, "400", &[]));
    advance_clock(&shared, 320_000);
    send_request(&one, 2, "POST", "mcp.example.com", "/mcp", Some("t"));
    assert_eq!(send_request(&two, 3, "POST", "mcp.example.com", "/mcp", Some("t")), Flow::Pause);
    assert_eq!(calls(&shared).len(), 2, "the second worker waits for the first one's call");
    fail(&one, calls(&shared)[1].id);
    tick(&two);
    assert_eq!((status(&one, 2), status(&two, 3)), (Some(200), Some(200)));
}

#[test]
fn a_stale_verdict_that_does_not_admit_leaves_the_outage_a_503() {
    let shared = shared();
    let vm = worker_with(&shared, mcp_gateway(), "gateway");
    let last_call = |shared: &Shared| calls(shared).last().cloned().unwrap().id;
    send_request(&vm, 1, "POST", "mcp.example.com", "/mcp", Some("t"));
    answer(&vm, last_call(&shared), &active(MAIN, "400", &[]));
    advance_clock(&shared, 310_000);
    // The route needs a role the old verdict lacks: not a 403 during an outage, a 503.
    send_request(&vm, 2, "POST", "mcp.example.com", "/mcp/admin", Some("t"));
    fail(&vm, last_call(&shared));
    assert_eq!(status(&vm, 2), Some(503));
}

#[test]
fn a_full_in_flight_table_during_an_outage_is_bridged_too() {
    let shared = shared();
    let vm = worker_with(&shared, mcp_gateway(), "gateway");
    send_request(&vm, 1, "POST", "mcp.example.com", "/mcp", Some("t"));
    answer(&vm, calls(&shared)[0].id, &active(MAIN, "400", &[]));
    advance_clock(&shared, 310_000);
    // A hanging issuer: the main issuer's two in-flight calls (max_in_flight 2) never return.
    send(&vm, 2, "orders.example.com", "hang-1");
    send(&vm, 3, "orders.example.com", "hang-2");
    assert_eq!(send_request(&vm, 4, "POST", "mcp.example.com", "/mcp", Some("t")), Flow::Continue);
    assert_eq!(reason(&vm, 4).as_deref(), Some("stale_verdict"));
    // A token with no recent verdict still gets the cap's 503.
    send_request(&vm, 5, "POST", "mcp.example.com", "/mcp", Some("new"));
    assert_eq!(status(&vm, 5), Some(503));
}

#[test]
fn a_preflight_goes_on_without_a_token_or_a_method_override() {
    let shared = shared();
    let vm = worker_with(&shared, mcp_gateway(), "gateway");
    vm.host().current.set(1);
    let request = Request {
        method: b"OPTIONS",
        authority: b"mcp.example.com",
        path: b"/mcp",
        authorization: Some(b"Bearer unchecked"),
        origin: true,
        cors_request_method: true,
        end_of_stream: true,
        ..Request::default()
    };
    assert_eq!(vm.on_request_headers(1, &request), Flow::Continue);
    let removed: Vec<String> = vm.host().outcomes.borrow()[&1]
        .set
        .iter()
        .filter(|(_, value)| value.is_none())
        .map(|(name, _)| name.clone())
        .collect();
    for name in ["authorization", "x-http-method-override", "x-auth-subject"] {
        assert!(removed.iter().any(|r| r == name), "{name} not removed: {removed:?}");
    }
    assert!(calls(&shared).is_empty());
}
