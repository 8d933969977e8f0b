//! A request's life in the filter: decided at once, or paused until verdicts
//! arrive from the cache, from another request's call, or from the issuer.
//! Plain Rust over the [`Host`] trait, so host tests run it whole, with
//! several engines sharing one store as Envoy's workers share shared data.
//!
//! A request whose verdict is not cached either leads (calls the issuer) or
//! waits for the leader of the same issuer and token (see `coalesce`).
//! Waiters on the leader's VM are answered the moment its verdict arrives;
//! waiters on other VMs see it on their VM's next tick. A paused request is
//! answered from outside its own callback by making it current first
//! ([`Host::act_as`]), so every step acts on "the current request".
//!
//! A call's answer comes back to the context whose callback made the call
//! (the SDK files it under the running callback, whatever request is
//! current), and is lost if that request is gone by then. So a request calls
//! an issuer only from its own callbacks or from the root's tick: a waiter
//! that needs the next issuer after its leader's verdict goes on at the next
//! tick ([`Waiting::Ready`]), not inside the leader's callback.
//!
//! A JWT of an issuer in the local JWT mode is verified here instead of
//! asked about (`jwt`), with the keys its `keyring` keeps. A request whose
//! key is not at hand waits for a fetch of the keys ([`Waiting::OnKeys`]),
//! which the root's tick starts, and goes on at the tick after it ends.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use log::{debug, error, warn};
use sha2::{Digest, Sha256};

use crate::cache::{RecentVerdicts, StoreOutcome, VerdictCache};
use crate::claims::{Rejection, Verdict};
use crate::coalesce::{Claim, Ending, InFlightTable, LeaderState};
use crate::decision::{self, Admission, Check, Decision, Failure, Protected, Request, Start, Step};
use crate::host::{CallAnswer, Host};
use crate::introspection::{self, IssuerError};
use crate::jwt;
use crate::keyring::{FetchError, Keyring, Missing};
use crate::metrics::{Counter, IssuerCounter};
use crate::policy::{ApiId, Issuer, IssuerId, LocalJwt, Policy};
use crate::probe::{Prober, PROBE_DELAY};
use crate::record::{self, Field};
use crate::request::underscore_spellings;
use crate::response::{metadata_reply, Denial};
use crate::token::TokenHash;

/// How often a VM with waiting requests looks for their leaders' verdicts.
pub const WAITER_TICK: Duration = Duration::from_millis(5);
/// A waiter whose leader vanished leads or waits again at most this often.
const MAX_ATTEMPTS: u8 = 3;
/// How often a VM with issuers in the local JWT mode looks whether their keys
/// are due for a refresh; the first look, a second after the plugin loaded,
/// fetches them.
pub const KEYS_TICK: Duration = Duration::from_secs(1);
/// Requests one VM lets wait for one issuer's keys; more get 503 at once, so
/// tokens with made-up `kid`s cannot pile up paused requests.
const MAX_KEY_WAITERS: usize = 256;
/// Headers a CORS preflight let through without a token goes upstream without: a
/// token nobody checked, and the method overrides some frameworks obey.
const PREFLIGHT_REMOVES: [&str; 4] = ["authorization", "x-http-method-override", "x-http-method", "x-method-override"];
/// Verdicts a worker keeps its own copy of (see `cache::RecentVerdicts`).
const RECENT_VERDICTS: usize = 1024;
/// Tokens remembered per VM so that a stale admission is logged once per token.
const STALE_LOGGED: usize = 1024;

/// The shared-data namespace of a plugin instance, from its name and root
/// id: shared data is per VM id, and several plugins (two listeners' filters,
/// say) may share a VM while holding different configurations.
pub fn namespace(plugin_name: &[u8], root_id: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(plugin_name);
    hasher.update([0u8]);
    hasher.update(root_id);
    hasher.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Whether the current request goes on now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Pause,
}

/// A request paused until a verdict from `issuer` about its token arrives.
struct Paused {
    context_id: u32,
    check: Check,
    issuer: IssuerId,
    hash: TokenHash,
    tries: Tries,
    waiting: Waiting,
}

/// How far a request's check got with the issuer it is at.
#[derive(Debug, Clone, Copy, Default)]
struct Tries {
    /// Times it led or waited again after a leader vanished.
    attempts: u8,
    /// It waited for a fetch of the issuer's keys once already.
    waited_for_keys: bool,
}

enum Waiting {
    /// This request leads: its introspection call is under way.
    OnCall { call_id: u32, slot: Option<u32> },
    /// Another request leads; give up on it after `deadline_ms`.
    OnLeader { slot: u32, deadline_ms: u64 },
    /// Its check goes on at the next tick, with the next issuer.
    Ready,
    /// Its JWT's key is not at hand: a fetch of the issuer's keys is under
    /// way or asked for; give up on it after `deadline_ms`.
    OnKeys { deadline_ms: u64 },
}

/// A JWT verified locally, or why not yet.
enum Local {
    Verdict(Verdict),
    Wait,
    Unavailable,
}

/// One VM's filter: the compiled policy, the views of shared data, and the
/// requests paused on this VM.
pub struct Engine<H: Host> {
    host: H,
    policy: Policy,
    cache: VerdictCache,
    /// One per issuer, in the policy's order.
    in_flight: Vec<InFlightTable>,
    paused: RefCell<Vec<Paused>>,
    /// Requests let through, until they are done: only their bodies and
    /// trailers may follow them upstream.
    admitted: RefCell<Vec<u32>>,
    /// The check of the issuers' credentials after the configuration loaded.
    prober: Option<Prober>,
    /// One per issuer, in the policy's order: the keys of those in the local JWT mode.
    keyrings: Vec<Option<Keyring>>,
    /// The tokens admitted on a stale verdict lately, to log each once.
    stale_logged: RefCell<VecDeque<TokenHash>>,
    /// This worker's copy of the verdicts it read lately.
    recent: RecentVerdicts,
}

impl<H: Host> Engine<H> {
    /// `namespace` keeps this plugin's shared-data keys apart from other
    /// plugins on the same VM id.
    pub fn new(host: H, policy: Policy, namespace: &str) -> Self {
        let fingerprints = policy.issuers.iter().map(|issuer| issuer.fingerprint).collect();
        let cache = VerdictCache::new(policy.cache.clone(), namespace, fingerprints);
        let in_flight: Vec<InFlightTable> = policy
            .issuers
            .iter()
            .map(|issuer| {
                let timeout_ms = u64::try_from(issuer.endpoint.timeout.as_millis()).unwrap_or(u64::MAX);
                InFlightTable::new(namespace, &issuer.name, issuer.endpoint.max_in_flight, timeout_ms)
            })
            .collect();
        for table in &in_flight {
            table.prepare(&host);
        }
        let keyrings: Vec<Option<Keyring>> = policy
            .issuers
            .iter()
            .map(|issuer| {
                let LocalJwt { jwks_path, schedule } = issuer.jwt.as_ref()?;
                let endpoint = &issuer.endpoint;
                let source = [issuer.url(), &endpoint.cluster, &endpoint.authority, jwks_path];
                Some(Keyring::new(namespace, &issuer.name, &source, schedule.clone()))
            })
            .collect();
        for keyring in keyrings.iter().flatten() {
            keyring.prepare(&host);
        }
        if keyrings.iter().any(Option::is_some) {
            host.set_tick(KEYS_TICK);
        }
        Engine {
            host,
            policy,
            cache,
            in_flight,
            paused: RefCell::default(),
            admitted: RefCell::default(),
            prober: None,
            keyrings,
            stale_logged: RefCell::default(),
            recent: RecentVerdicts::new(RECENT_VERDICTS),
        }
    }

    /// Probes the issuers' credentials shortly (see `probe`), once per Envoy:
    /// `raw`, the configuration's text, tells this configuration from others.
    pub fn with_probe(mut self, namespace: &str, raw: &[u8]) -> Self {
        self.prober = Some(Prober::new(&self.host, namespace, raw));
        self.host.set_tick(PROBE_DELAY);
        self
    }

    pub fn host(&self) -> &H {
        &self.host
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// A request's headers are in: answer, forward, or pause it.
    pub fn on_request_headers(&self, context_id: u32, request: &Request<'_>) -> Flow {
        // Underscore spellings of forwarded headers go first, whatever the route:
        // the shipped Envoy config refuses them, Envoy's default lets them through.
        for name in underscore_spellings(&request.names, &self.policy.forwarded_headers) {
            if let Ok(name) = std::str::from_utf8(name) {
                self.host.set_request_header(name, None);
            }
        }
        match decision::start(&self.policy, request) {
            Start::Deny(denial) => self.deny(context_id, denial, None),
            Start::Refuse { protected, denial } => {
                self.record_api(protected.api);
                self.deny(context_id, denial, Some(protected))
            }
            Start::Public => self.pass(context_id, record::PUBLIC),
            Start::Preflight { api } => {
                self.record_api(api);
                self.host.count(Counter::CorsPreflights);
                // Nothing unchecked goes with it: no token, no method override.
                for name in PREFLIGHT_REMOVES {
                    self.host.set_request_header(name, None);
                }
                self.pass(context_id, record::CORS_PREFLIGHT)
            }
            Start::Metadata { api, method } => {
                self.record_api(api);
                let Some(metadata) = self.policy.api(api).and_then(|api| api.metadata.as_ref()) else {
                    return self.deny(context_id, Denial::NoRule, None);
                };
                self.host.count(Counter::MetadataServed);
                self.host.record(Field::Decision, "answer");
                self.host.record(Field::Reason, record::RESOURCE_METADATA);
                self.host.reply(&metadata_reply(metadata, method));
                Flow::Pause
            }
            Start::Check(check) => match self.host.now_ms() {
                Some(now_ms) => {
                    self.record_api(check.api());
                    self.advance(context_id, check, Tries::default(), now_ms)
                }
                None => {
                    self.note_issuer_error(None, &IssuerError::Clock);
                    self.deny(context_id, Denial::IssuerUnavailable, Some(check.protected()))
                }
            },
        }
    }

    /// Lets a request go on without a token, and without any of the forwarded
    /// headers a client may have sent.
    fn pass(&self, context_id: u32, reason: &str) -> Flow {
        for name in &self.policy.forwarded_headers {
            self.host.set_request_header(name, None);
        }
        self.host.record(Field::Decision, "allow");
        self.host.record(Field::Reason, reason);
        self.admitted.borrow_mut().push(context_id);
        Flow::Continue
    }

    /// Whether a request's body and trailers may go on: only once it is
    /// admitted. Paused (or, should it ever happen, forgotten) requests hold them.
    pub fn may_go_on(&self, context_id: u32) -> bool {
        self.admitted.borrow().contains(&context_id)
    }

    /// Takes verdicts for the current request until one decides or it must
    /// wait. Acts on the current (effective) request, `context_id`.
    fn advance(&self, context_id: u32, mut check: Check, mut tries: Tries, now_ms: u64) -> Flow {
        let protected = check.protected();
        loop {
            let issuer_id = match check.step() {
                Step::Done(decision) => return self.conclude(context_id, decision, protected),
                Step::Ask(issuer) => issuer,
            };
            let (Some(issuer), Some(table)) = (self.policy.issuer(issuer_id), self.in_flight.get(issuer_id.0)) else {
                // Cannot happen: every id comes from the same policy.
                if let Some(decision) = check.record(&self.policy, Err(Failure::Unavailable)) {
                    return self.conclude(context_id, decision, protected);
                }
                continue;
            };
            let hash = issuer.token_hash(check.token());
            if let Some(verdict) = self.cached(&hash, issuer.fingerprint, now_ms) {
                self.host.count(Counter::CacheHits);
                if let Some(decision) = check.record(&self.policy, Ok(&*verdict)) {
                    return self.conclude(context_id, decision, protected);
                }
                tries = Tries::default();
                continue;
            }
            self.host.count(Counter::CacheMisses);
            if let Some(decision) = self.cached_later(&check, now_ms) {
                return self.conclude(context_id, decision, protected);
            }
            let keyring = self.keyrings.get(issuer_id.0).and_then(Option::as_ref).filter(|_| check.is_jwt());
            if let Some(keyring) = keyring {
                let outcome = match self.verify_locally(issuer, keyring, check.token(), tries.waited_for_keys, now_ms) {
                    Local::Verdict(verdict) => {
                        self.cache.store(&self.host, &hash, issuer.fingerprint, &verdict, now_ms);
                        check.record(&self.policy, Ok(&verdict))
                    }
                    Local::Unavailable => check.record(&self.policy, Err(Failure::Unavailable)),
                    Local::Wait if self.key_waiters(issuer_id) >= MAX_KEY_WAITERS => {
                        warn!("issuer {}: {MAX_KEY_WAITERS} requests wait for its keys, refusing more", issuer.name);
                        check.record(&self.policy, Err(Failure::Overloaded))
                    }
                    Local::Wait => {
                        self.host.set_tick(WAITER_TICK);
                        let waiting = Waiting::OnKeys { deadline_ms: now_ms.saturating_add(keyring.wait_limit_ms()) };
                        let paused = Paused { context_id, check, issuer: issuer_id, hash, tries, waiting };
                        self.paused.borrow_mut().push(paused);
                        return Flow::Pause;
                    }
                };
                if let Some(decision) = outcome {
                    return self.conclude(context_id, decision, protected);
                }
                tries = Tries::default();
                continue;
            }
            let waiting = match table.claim(&self.host, &hash, now_ms) {
                Claim::Full => {
                    warn!(
                        "issuer {}: {} introspection calls in flight, refusing more",
                        issuer.name, issuer.endpoint.max_in_flight
                    );
                    // A hanging issuer fills the table: an API may bridge that outage too.
                    if let Some(decision) = self.take_outcome(&mut check, Err(Failure::Overloaded), now_ms) {
                        return self.conclude(context_id, decision, protected);
                    }
                    tries = Tries::default();
                    continue;
                }
                Claim::Wait { slot } => {
                    self.host.count(Counter::Coalesced);
                    self.host.set_tick(WAITER_TICK);
                    Waiting::OnLeader { slot, deadline_ms: now_ms.saturating_add(table.wait_limit_ms()) }
                }
                // A request that missed the cache just before another leader stored its
                // verdict, and won the slot just after that leader released it, finds the
                // verdict now: it gives the slot back and takes the verdict from the cache
                // on the next round. One call per token, always.
                Claim::Lead { slot } if self.cache.lookup(&self.host, &hash, issuer.fingerprint, now_ms).is_some() => {
                    if let Some(slot) = slot {
                        table.finish(&self.host, slot, &hash, Ending::Answered, now_ms);
                    }
                    continue;
                }
                Claim::Lead { slot } => match self.dispatch(issuer_id, issuer, check.token(), now_ms) {
                    Ok(call_id) => Waiting::OnCall { call_id, slot },
                    Err(err) => {
                        if let Some(slot) = slot {
                            table.finish(&self.host, slot, &hash, Ending::Failed, now_ms);
                        }
                        self.note_issuer_error(Some(issuer_id), &err);
                        if let Some(decision) = check.record(&self.policy, Err(Failure::Unavailable)) {
                            return self.conclude(context_id, decision, protected);
                        }
                        tries = Tries::default();
                        continue;
                    }
                },
            };
            let paused = Paused { context_id, check, issuer: issuer_id, hash, tries, waiting };
            self.paused.borrow_mut().push(paused);
            return Flow::Pause;
        }
    }

    /// A token's verdict at an issuer (`hash` names both): this worker's recent
    /// copy, or the shared cache's, copied for the next request.
    fn cached(&self, hash: &TokenHash, fingerprint: u64, now_ms: u64) -> Option<Rc<Verdict>> {
        if let Some(verdict) = self.recent.get(hash, now_ms) {
            return Some(verdict);
        }
        let (verdict, until_ms) = self.cache.lookup_until(&self.host, hash, fingerprint, now_ms)?;
        let verdict = Rc::new(verdict);
        self.recent.put(*hash, Rc::clone(&verdict), until_ms, now_ms);
        Some(verdict)
    }

    /// An admission a later issuer of the check gives from its cached verdict.
    fn cached_later(&self, check: &Check, now_ms: u64) -> Option<Decision<'_>> {
        check.later().iter().find_map(|&id| {
            let issuer = self.policy.issuer(id)?;
            let hash = issuer.token_hash(check.token());
            match &*self.cached(&hash, issuer.fingerprint, now_ms)? {
                Verdict::Valid(identity) => check.admitted_by(&self.policy, id, identity).map(Decision::Admit),
                Verdict::Invalid(_) => None,
            }
        })
    }

    /// A JWT of an issuer in the local JWT mode: its verdict from the issuer's
    /// keys, or a wait for them (once), or none when no usable keys are at hand.
    fn verify_locally(&self, issuer: &Issuer, keyring: &Keyring, token: &str, waited: bool, now_ms: u64) -> Local {
        let header = match jwt::read_header(token) {
            Ok(header) => header,
            Err(rejection) => return Local::Verdict(Verdict::Invalid(rejection)),
        };
        let keys = keyring.keys(&self.host, now_ms);
        if let Some(key) = keys.as_deref().and_then(|keys| keys.get(&header.kid)) {
            let started = self.host.now_us();
            let verdict = jwt::verify(token, &header, key, &issuer.extraction, now_ms);
            self.host.count(Counter::JwtVerifications);
            if let (Some(started), Some(ended)) = (started, self.host.now_us()) {
                self.host.count_by(Counter::JwtVerificationMicros, ended.saturating_sub(started));
            }
            return Local::Verdict(verdict);
        }
        match keyring.missing(&self.host, keys.as_deref(), waited, now_ms) {
            Missing::Wait => Local::Wait,
            Missing::UnknownKey => Local::Verdict(Verdict::Invalid(Rejection::UnknownKey)),
            Missing::Unavailable => {
                debug!("issuer {}: no usable keys to verify a JWT with", issuer.name);
                Local::Unavailable
            }
        }
    }

    fn dispatch(&self, id: IssuerId, issuer: &Issuer, token: &str, now_ms: u64) -> Result<u32, IssuerError> {
        let client_auth = &issuer.client_auth;
        let signatures_before = client_auth.signatures();
        // An assertion's `iat` and `exp` are whole seconds; rounding down keeps `iat`
        // from lying in the future, the direction issuers refuse.
        let proof = client_auth.proof(now_ms / 1000).map_err(|_| IssuerError::Signing)?;
        if client_auth.signatures() > signatures_before {
            self.host.count(Counter::Signatures);
        }
        let endpoint = &issuer.endpoint;
        let request = introspection::build_request(&endpoint.authority, &endpoint.path, token, &proof);
        self.host.count(Counter::Calls);
        self.host.count_issuer(id, IssuerCounter::Calls);
        let headers: Vec<(&str, &str)> = request.headers.iter().map(|(name, value)| (*name, value.as_str())).collect();
        self.host
            .dispatch(&endpoint.cluster, &headers, request.body.as_bytes(), endpoint.timeout)
            .ok_or(IssuerError::Dispatch)
    }

    /// The issuer answered call `call_id`: cache the verdict, release the
    /// slot, go on with the leader and every waiter of this VM.
    pub fn on_call_response(&self, call_id: u32, num_headers: usize, body_size: usize) {
        if let (Some(prober), Some(now_ms)) = (&self.prober, self.host.now_ms()) {
            if prober.on_call_response(&self.host, &self.policy, call_id, num_headers, body_size, now_ms) {
                return;
            }
        }
        if let Some((id, keyring)) = self.fetch_of(call_id) {
            self.keys_fetched(id, keyring, num_headers, body_size);
            return;
        }
        let leader = {
            let mut paused = self.paused.borrow_mut();
            let Some(at) =
                paused.iter().position(|p| matches!(p.waiting, Waiting::OnCall { call_id: id, .. } if id == call_id))
            else {
                return;
            };
            paused.swap_remove(at)
        };
        let slot = match leader.waiting {
            Waiting::OnCall { slot, .. } => slot,
            _ => None,
        };
        let table = self.in_flight.get(leader.issuer.0);
        let waiters = self.take_paused(|p| p.hash == leader.hash && matches!(p.waiting, Waiting::OnLeader { .. }));
        let (Some(issuer), Some(now_ms)) = (self.policy.issuer(leader.issuer), self.host.now_ms()) else {
            // Without a clock no expiry can be checked, nor any cached verdict trusted.
            self.note_issuer_error(Some(leader.issuer), &IssuerError::Clock);
            if let (Some(slot), Some(table)) = (slot, table) {
                table.finish(&self.host, slot, &leader.hash, Ending::Failed, 0);
            }
            for request in std::iter::once(leader).chain(waiters) {
                let (context_id, protected) = (request.context_id, request.check.protected());
                self.answer(context_id, |engine| engine.deny(context_id, Denial::IssuerUnavailable, Some(protected)));
            }
            return;
        };
        // Read the answer while the calling context is still the current one.
        let outcome = self.read_verdict(issuer, num_headers, body_size, now_ms);
        if let Ok(verdict) = &outcome {
            let stored = self.cache.store(&self.host, &leader.hash, issuer.fingerprint, verdict, now_ms);
            if stored != StoreOutcome::Stored {
                debug!("verdict not cached: {stored:?}");
            }
        }
        let ending = match &outcome {
            Ok(_) => Ending::Answered,
            Err(err) if err.is_outage() => Ending::IssuerDown,
            Err(_) => Ending::Failed,
        };
        if let (Some(slot), Some(table)) = (slot, table) {
            table.finish(&self.host, slot, &leader.hash, ending, now_ms);
        }
        if let Err(err) = &outcome {
            self.note_issuer_error(Some(leader.issuer), err);
        }
        let failure = if ending == Ending::IssuerDown { Failure::Outage } else { Failure::Unavailable };
        let outcome = outcome.as_ref().map_err(|_| failure);
        // The leader may call its next issuer from here (this is its call's
        // callback); a waiter must wait for the tick (see the module documentation).
        let context_id = leader.context_id;
        self.answer(context_id, |engine| engine.resume_check(context_id, leader.check, outcome, now_ms));
        for waiter in waiters {
            self.go_on_later(waiter, outcome, now_ms);
        }
    }

    /// A paused request's verdict from its issuer is in: decide, or go on to the next issuer.
    fn resume_check(&self, context_id: u32, mut check: Check, outcome: Result<&Verdict, Failure>, now_ms: u64) -> Flow {
        let protected = check.protected();
        match self.take_outcome(&mut check, outcome, now_ms) {
            Some(decision) => self.conclude(context_id, decision, protected),
            None => self.advance(context_id, check, Tries::default(), now_ms),
        }
    }

    /// Records the current issuer's outcome in a check. When the issuer is
    /// down and the API allows it, a valid verdict that ended within its
    /// `stale_if_error` window (and whose token has not expired) stands in
    /// for the answer; the API's checks run on it as on any verdict. Never
    /// after the issuer called the token invalid: that verdict replaced it.
    fn take_outcome<'p>(
        &'p self,
        check: &mut Check,
        outcome: Result<&Verdict, Failure>,
        now_ms: u64,
    ) -> Option<Decision<'p>> {
        if matches!(outcome, Err(Failure::Outage | Failure::Overloaded)) {
            if let Some(decision) = self.bridged(check, now_ms) {
                return Some(decision);
            }
        }
        check.record(&self.policy, outcome)
    }

    /// The admission a recent verdict gives while the issuer is down, if the
    /// API bridges outages, no fresh verdict is in the cache (a refusal stored
    /// meanwhile wins), and the old verdict admits under the route's checks.
    /// Otherwise nothing is recorded: the failure stands.
    fn bridged<'p>(&'p self, check: &mut Check, now_ms: u64) -> Option<Decision<'p>> {
        let window_ms = self.policy.api(check.api())?.stale_if_error_ms;
        let issuer_id = check.current()?;
        let issuer = self.policy.issuer(issuer_id)?;
        let hash = issuer.token_hash(check.token());
        if window_ms == 0 || self.cache.lookup(&self.host, &hash, issuer.fingerprint, now_ms).is_some() {
            return None;
        }
        let identity = self.cache.lookup_stale(&self.host, &hash, issuer.fingerprint, now_ms, window_ms)?;
        check.admitted_by(&self.policy, issuer_id, &identity)?;
        match check.record(&self.policy, Ok(&Verdict::Valid(identity))) {
            Some(Decision::Admit(mut admission)) => {
                self.note_stale(&hash, admission.issuer);
                admission.stale = true;
                Some(Decision::Admit(admission))
            }
            other => other,
        }
    }

    /// One warning per token and VM (of the last `STALE_LOGGED` tokens).
    fn note_stale(&self, hash: &TokenHash, issuer: &str) {
        let mut logged = self.stale_logged.borrow_mut();
        if logged.contains(hash) {
            return;
        }
        if logged.len() >= STALE_LOGGED {
            logged.pop_front();
        }
        logged.push_back(*hash);
        warn!("issuer {issuer} is down: a token is admitted on its recent verdict (stale_if_error_seconds)");
    }

    /// A waiter's verdict is in: decide now, or ask the next issuer at the next tick.
    fn go_on_later(&self, mut request: Paused, outcome: Result<&Verdict, Failure>, now_ms: u64) {
        let (context_id, protected) = (request.context_id, request.check.protected());
        let decision = match self.take_outcome(&mut request.check, outcome, now_ms) {
            Some(decision) => decision,
            None => match request.check.step() {
                Step::Done(decision) => decision,
                Step::Ask(_) => {
                    request.waiting = Waiting::Ready;
                    self.paused.borrow_mut().push(request);
                    self.host.set_tick(WAITER_TICK);
                    return;
                }
            },
        };
        self.answer(context_id, |engine| engine.conclude(context_id, decision, protected));
    }

    /// On each tick (in the root context): go on with the requests ready for
    /// their next issuer, and with waiters whose leader finished, failed or vanished.
    pub fn on_tick(&self) {
        self.host.flush_counters();
        let Some(now_ms) = self.host.now_ms() else { return };
        if let Some(prober) = &self.prober {
            prober.on_tick(&self.host, &self.policy, now_ms);
        }
        self.fetch_due_keys(now_ms);
        for request in self.take_paused(|p| matches!(p.waiting, Waiting::Ready)) {
            let Paused { context_id, check, .. } = request;
            self.answer(context_id, |engine| engine.advance(context_id, check, Tries::default(), now_ms));
        }
        // Whether each issuer's fetch is over: one shared-data read per issuer, not per waiter.
        let settled: Vec<bool> =
            self.keyrings.iter().map(|k| k.as_ref().is_none_or(|k| k.settled(&self.host, now_ms))).collect();
        for request in self.take_paused(|p| matches!(p.waiting, Waiting::OnKeys { .. })) {
            let Waiting::OnKeys { deadline_ms } = request.waiting else { continue };
            if !settled.get(request.issuer.0).copied().unwrap_or(true) && now_ms < deadline_ms {
                self.paused.borrow_mut().push(request);
                continue;
            }
            let Paused { context_id, check, tries, .. } = request;
            let tries = Tries { waited_for_keys: true, ..tries };
            self.answer(context_id, |engine| engine.advance(context_id, check, tries, now_ms));
        }
        for request in self.take_paused(|p| matches!(p.waiting, Waiting::OnLeader { .. })) {
            let Waiting::OnLeader { slot, deadline_ms } = request.waiting else { continue };
            let (Some(issuer), Some(table)) =
                (self.policy.issuer(request.issuer), self.in_flight.get(request.issuer.0))
            else {
                let (context_id, protected) = (request.context_id, request.check.protected());
                self.answer(context_id, |engine| engine.deny(context_id, Denial::IssuerUnavailable, Some(protected)));
                continue;
            };
            let state = table.leader_state(&self.host, slot, &request.hash, now_ms);
            if state == LeaderState::Pending && now_ms < deadline_ms {
                self.paused.borrow_mut().push(request);
                continue;
            }
            let cached = self.cache.lookup(&self.host, &request.hash, issuer.fingerprint, now_ms);
            let Paused { context_id, check, tries, .. } = request;
            let outcome = match (state, &cached) {
                // A verdict in the cache first: another leader's, or a refusal stored meanwhile.
                (_, Some(verdict)) => Some(Ok(verdict)),
                (LeaderState::Failed { issuer_down: true }, _) => Some(Err(Failure::Outage)),
                (LeaderState::Failed { issuer_down: false }, _) => Some(Err(Failure::Unavailable)),
                // Gone without a cached verdict, or waited too long: ask again, a few times.
                _ if tries.attempts + 1 < MAX_ATTEMPTS => None,
                _ => Some(Err(Failure::Unavailable)),
            };
            match outcome {
                Some(outcome) => {
                    self.answer(context_id, |engine| engine.resume_check(context_id, check, outcome, now_ms))
                }
                None => {
                    let tries = Tries { attempts: tries.attempts + 1, ..tries };
                    self.answer(context_id, |engine| engine.advance(context_id, check, tries, now_ms))
                }
            }
        }
        let waiting = self.paused.borrow().iter().any(|p| !matches!(p.waiting, Waiting::OnCall { .. }));
        if !waiting {
            let keys = self.keyrings.iter().any(Option::is_some);
            let probe = self.prober.as_ref().is_some_and(Prober::is_due);
            self.host.set_tick(if keys || probe { KEYS_TICK } else { Duration::ZERO });
        }
    }

    /// On a tick: fetch the keys of each issuer in the local JWT mode whose
    /// keys are due, where this VM wins the claim (see `keyring`).
    fn fetch_due_keys(&self, now_ms: u64) {
        for (at, keyring) in self.keyrings.iter().enumerate() {
            let id = IssuerId(at);
            let Some((keyring, issuer)) = keyring.as_ref().zip(self.policy.issuer(id)) else { continue };
            let Some(LocalJwt { jwks_path, .. }) = &issuer.jwt else { continue };
            if !keyring.claim_fetch(&self.host, now_ms) {
                continue;
            }
            let endpoint = &issuer.endpoint;
            let headers = [
                (":method", "GET"),
                (":path", jwks_path.as_str()),
                (":authority", endpoint.authority.as_str()),
                ("accept", "application/jwk-set+json, application/json"),
            ];
            self.host.count(Counter::JwksFetches);
            self.host.count_issuer(id, IssuerCounter::JwksFetches);
            match self.host.dispatch(&endpoint.cluster, &headers, &[], endpoint.timeout) {
                Some(call_id) => keyring.started(call_id),
                None => {
                    let err = FetchError::Answer(IssuerError::Dispatch.to_string());
                    let _ = keyring.finish(&self.host, Err(err.clone()), now_ms);
                    self.keys_failed(id, keyring, &err, now_ms);
                }
            }
        }
    }

    fn key_waiters(&self, issuer: IssuerId) -> usize {
        let paused = self.paused.borrow();
        paused.iter().filter(|p| p.issuer == issuer && matches!(p.waiting, Waiting::OnKeys { .. })).count()
    }

    /// The issuer whose keys call `call_id` fetches, if it is such a call of this VM.
    fn fetch_of(&self, call_id: u32) -> Option<(IssuerId, &Keyring)> {
        let mut keyrings = self.keyrings.iter().enumerate();
        keyrings.find_map(|(at, keyring)| Some((IssuerId(at), keyring.as_ref().filter(|k| k.is_call(call_id))?)))
    }

    /// The answer to a fetch of an issuer's keys: kept for every worker, or
    /// the last good keys kept. Requests waiting for them go on at the next tick.
    fn keys_fetched(&self, id: IssuerId, keyring: &Keyring, num_headers: usize, body_size: usize) {
        let Some(now_ms) = self.host.now_ms() else { return };
        let answer = CallAnswer::read(&self.host, num_headers, body_size, self.policy.max_response_bytes);
        let document = answer.map_err(|err| FetchError::Answer(err.to_string()));
        let result = document.as_ref().map_err(Clone::clone).and_then(key_set_document);
        match keyring.finish(&self.host, result, now_ms) {
            Ok(keys) => {
                let name = self.policy.issuer(id).map_or("-", |issuer| issuer.name.as_str());
                debug!("issuer {name}: {} signing keys fetched ({} left out)", keys.len(), keys.skipped());
            }
            Err(err) => self.keys_failed(id, keyring, &err, now_ms),
        }
        self.host.set_tick(WAITER_TICK);
    }

    fn keys_failed(&self, id: IssuerId, keyring: &Keyring, err: &FetchError, now_ms: u64) {
        self.host.count(Counter::JwksErrors);
        self.host.count_issuer(id, IssuerCounter::JwksErrors);
        let name = self.policy.issuer(id).map_or("-", |issuer| issuer.name.as_str());
        match keyring.usable_for_ms(&self.host, now_ms) {
            Some(ms) => warn!(
                "issuer {name}: fetching its signing keys failed: {err}; the keys fetched before stay in use {} s more",
                ms / 1000
            ),
            None => {
                error!("issuer {name}: fetching its signing keys failed: {err}; its JWTs get 503 until a fetch works")
            }
        }
    }

    /// A request's stream ended (client gone) while paused: forget it, and
    /// free its slot so its waiters need not wait for the stale limit.
    pub fn on_done(&self, context_id: u32) {
        self.admitted.borrow_mut().retain(|&id| id != context_id);
        for request in self.take_paused(|p| p.context_id == context_id) {
            let table = self.in_flight.get(request.issuer.0);
            if let (Waiting::OnCall { slot: Some(slot), .. }, Some(table), Some(now_ms)) =
                (request.waiting, table, self.host.now_ms())
            {
                debug!("a request went away during its introspection call: slot {slot} released");
                table.finish(&self.host, slot, &request.hash, Ending::Answered, now_ms);
            }
        }
    }

    fn take_paused(&self, mut pick: impl FnMut(&Paused) -> bool) -> Vec<Paused> {
        let mut paused = self.paused.borrow_mut();
        let (taken, kept) = std::mem::take(&mut *paused).into_iter().partition(|p| pick(p));
        *paused = kept;
        taken
    }

    /// Runs `decide` as request `context_id` and resumes it if it may go on.
    fn answer(&self, context_id: u32, decide: impl FnOnce(&Self) -> Flow) {
        if !self.host.act_as(context_id) {
            return; // the stream is gone
        }
        if decide(self) == Flow::Continue {
            self.host.resume();
        }
    }

    fn read_verdict(
        &self,
        issuer: &Issuer,
        num_headers: usize,
        body_size: usize,
        now_ms: u64,
    ) -> Result<Verdict, IssuerError> {
        let answer = CallAnswer::read(&self.host, num_headers, body_size, self.policy.max_response_bytes)?;
        introspection::evaluate(answer.response(), &issuer.extraction, now_ms)
    }

    /// Carries a decision out on the current request.
    fn conclude(&self, context_id: u32, decision: Decision<'_>, protected: Protected) -> Flow {
        match decision {
            Decision::Admit(admission) => self.admit(context_id, &admission),
            Decision::Deny(denial) => self.deny(context_id, denial, Some(protected)),
        }
    }

    fn admit(&self, context_id: u32, admission: &Admission<'_>) -> Flow {
        // Each replaces every copy the client sent; `None` removes them.
        for (name, value) in &admission.set {
            self.host.set_request_header(name, value.as_deref());
        }
        for name in admission.remove {
            self.host.set_request_header(name, None);
        }
        self.host.count(Counter::Allowed);
        if admission.stale {
            self.host.count(Counter::StaleAdmitted);
        }
        self.host.record(Field::Decision, "allow");
        self.host.record(Field::Reason, if admission.stale { record::STALE_VERDICT } else { record::VALID_TOKEN });
        self.host.record(Field::Issuer, admission.issuer);
        self.host.record(Field::Subject, &admission.subject);
        self.host.record(Field::ClientId, &admission.client_id);
        self.admitted.borrow_mut().push(context_id);
        Flow::Continue
    }

    fn record_api(&self, api: ApiId) {
        if let Some(api) = self.policy.api(api) {
            self.host.record(Field::Api, &api.name);
        }
    }

    /// Refuses the current request; under a dry-run rule or API (`protected`)
    /// counts and logs the denial instead and lets the request go on, with no
    /// identity header (a client's copies removed, as on a public route).
    fn deny(&self, context_id: u32, denial: Denial, protected: Option<Protected>) -> Flow {
        let api = protected.and_then(|protected| self.policy.api(protected.api));
        if let (Some(true), Some(counter)) = (protected.map(|p| p.dry_run), denial.would_deny_counter()) {
            // Debug, as denials are: a client could otherwise write a log line per request.
            debug!("dry run: would deny ({}) on api {}", denial.reason(), api.map_or("-", |api| api.name.as_str()));
            self.host.count(counter);
            for name in &self.policy.forwarded_headers {
                self.host.set_request_header(name, None);
            }
            self.host.record(Field::Decision, "would_deny");
            self.host.record(Field::Reason, denial.reason());
            self.admitted.borrow_mut().push(context_id);
            return Flow::Continue;
        }
        debug!("denied: {}", denial.reason());
        self.host.count(denial.counter());
        self.host.record(Field::Decision, "deny");
        self.host.record(Field::Reason, denial.reason());
        let reply = denial.reply();
        let reply = match api.and_then(|api| api.metadata.as_ref()) {
            Some(metadata) => reply.with_resource_metadata(&metadata.url),
            None => reply,
        };
        self.host.reply(&reply);
        Flow::Pause
    }

    fn note_issuer_error(&self, issuer: Option<IssuerId>, err: &IssuerError) {
        self.host.count(Counter::IssuerErrors);
        let issuer = issuer.and_then(|id| Some((id, self.policy.issuer(id)?)));
        if let Some((id, _)) = issuer {
            self.host.count_issuer(id, IssuerCounter::Errors);
        }
        let name = issuer.map_or("-", |(_, issuer)| issuer.name.as_str());
        let https = issuer.is_some_and(|(_, issuer)| issuer.url().starts_with("https://"));
        const REFUSED_CERTIFICATE: &str = "an unknown CA, a certificate for another name than the cluster \
                                           checks, or an expired one; the cluster's ssl.fail_verify_* stats say which";
        match err {
            // Envoy up to 1.39 passes the TLS failure on ...
            IssuerError::Unreachable(reason) if reason.contains("CERTIFICATE_VERIFY_FAILED") => error!(
                "token introspection failed (issuer {name}): {err}: the issuer's TLS certificate failed \
                 verification ({REFUSED_CERTIFICATE})"
            ),
            IssuerError::Unreachable(reason) if reason.contains("TLS_error") => error!(
                "token introspection failed (issuer {name}): {err}: the TLS handshake failed; check the cluster's \
                 TLS settings"
            ),
            // ... 1.40 says only "remote connection failure", for a refused connection and
            // a refused certificate alike: name both.
            IssuerError::Unreachable(_) if https => error!(
                "token introspection failed (issuer {name}): {err}: nothing answers at the cluster's address, or \
                 the TLS handshake failed ({REFUSED_CERTIFICATE})"
            ),
            _ if err.needs_operator() => error!("token introspection failed (issuer {name}): {err}"),
            _ => warn!("token introspection failed (issuer {name}): {err}"),
        }
    }
}

/// The body of a keys endpoint's answer, if it is a 200 with a JSON document.
fn key_set_document(answer: &CallAnswer) -> Result<&[u8], FetchError> {
    let response = answer.response();
    match response.status {
        Some(200) => {}
        Some(status) => return Err(FetchError::Answer(format!("the issuer answered HTTP {status}"))),
        None => return Err(FetchError::Answer(IssuerError::NoStatus.to_string())),
    }
    let media = response.content_type.and_then(|ct| ct.split(';').next()).map(str::trim).unwrap_or_default();
    if !(media.eq_ignore_ascii_case("application/json") || media.eq_ignore_ascii_case("application/jwk-set+json")) {
        return Err(FetchError::Answer("the answer is not application/json".into()));
    }
    Ok(response.body)
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
