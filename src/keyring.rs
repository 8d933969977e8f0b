//! An issuer's signing keys, fetched once per Envoy and shared by its
//! workers, for the JWTs it verifies locally.
//!
//! Shared data holds two keys per issuer: a small state record (the key
//! set's generation, when it was fetched, whether a fetch is under way or
//! wanted, whether the last one failed) and the last good document. Each VM
//! keeps the document parsed ([`KeySet`]) and parses it again only when the
//! generation changes, never per request.
//!
//! Fetches start from the root context's tick (their answers reach the root,
//! which outlives any request): when the keys fall due for their refresh
//! (`jwks_refresh_seconds`), or when a request met a `kid` the keys lack, or
//! had no usable keys. Whichever VM wins the state's CAS fetches; the others
//! wait for its result. Two fetch starts are at least `jwks_min_refresh_seconds`
//! apart, so tokens with random `kid`s cannot drive the issuer into a storm
//! of refetches. A failed fetch keeps the last good keys, usable until
//! `jwks_max_stale_seconds` past their refresh time; after that, or before
//! any fetch succeeded, there are no usable keys and a JWT gets 503. A
//! request whose key is missing waits for the next fetch (at most
//! `jwks_min_refresh_seconds` away), so the first tokens signed with a new
//! key pass as soon as the issuer publishes it.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::Rc;

use sha2::{Digest, Sha256};

use crate::cache::SharedData;
use crate::jwks::{JwksError, KeySet};

/// When an issuer's keys are fetched and how long they are used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySchedule {
    pub refresh_ms: u64,
    pub min_refresh_ms: u64,
    pub max_stale_ms: u64,
    /// A fetch not finished this long after it started is taken to be lost.
    pub stale_fetch_ms: u64,
}

const STATE_VERSION: u8 = 1;
const STATE_LEN: usize = 1 + 1 + 4 + 8 + 8;
const FETCHING: u8 = 1;
const FAILED: u8 = 2;
const WANTED: u8 = 4;

/// The shared record of an issuer's keys.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct State {
    /// Successful fetches so far; 0 = none yet.
    generation: u32,
    fetched_at_ms: u64,
    /// When the last fetch started; 0 = never.
    attempt_at_ms: u64,
    fetching: bool,
    /// The last fetch failed (the document, if any, is older).
    failed: bool,
    /// A request asked for a fetch.
    wanted: bool,
}

impl State {
    fn encode(&self) -> [u8; STATE_LEN] {
        let mut out = [0u8; STATE_LEN];
        let flag = |on: bool, bit: u8| if on { bit } else { 0 };
        let flags = flag(self.fetching, FETCHING) | flag(self.failed, FAILED) | flag(self.wanted, WANTED);
        let (head, rest) = out.split_at_mut(2);
        head.copy_from_slice(&[STATE_VERSION, flags]);
        let (generation, times) = rest.split_at_mut(4);
        generation.copy_from_slice(&self.generation.to_be_bytes());
        let (fetched, attempt) = times.split_at_mut(8);
        fetched.copy_from_slice(&self.fetched_at_ms.to_be_bytes());
        attempt.copy_from_slice(&self.attempt_at_ms.to_be_bytes());
        out
    }

    /// An empty or unreadable record is the state before any fetch.
    fn decode(bytes: &[u8]) -> State {
        let Ok(bytes) = <&[u8; STATE_LEN]>::try_from(bytes) else { return State::default() };
        let [STATE_VERSION, flags, g0, g1, g2, g3, rest @ ..] = *bytes else { return State::default() };
        let [f0, f1, f2, f3, f4, f5, f6, f7, a0, a1, a2, a3, a4, a5, a6, a7] = rest;
        State {
            generation: u32::from_be_bytes([g0, g1, g2, g3]),
            fetched_at_ms: u64::from_be_bytes([f0, f1, f2, f3, f4, f5, f6, f7]),
            attempt_at_ms: u64::from_be_bytes([a0, a1, a2, a3, a4, a5, a6, a7]),
            fetching: flags & FETCHING != 0,
            failed: flags & FAILED != 0,
            wanted: flags & WANTED != 0,
        }
    }

    /// A fetch is under way (and not lost).
    fn in_flight(&self, now_ms: u64, schedule: &KeySchedule) -> bool {
        self.fetching && now_ms < self.attempt_at_ms.saturating_add(schedule.stale_fetch_ms)
    }

    /// No fetch under way, and the last one started long enough ago.
    fn may_fetch(&self, now_ms: u64, schedule: &KeySchedule) -> bool {
        !self.in_flight(now_ms, schedule)
            && (self.attempt_at_ms == 0 || now_ms >= self.attempt_at_ms.saturating_add(schedule.min_refresh_ms))
    }

    /// The keys should be fetched: none yet, a request asked, or refresh time.
    fn due(&self, now_ms: u64, schedule: &KeySchedule) -> bool {
        self.generation == 0 || self.wanted || now_ms >= self.fetched_at_ms.saturating_add(schedule.refresh_ms)
    }

    /// Whether keys fetched at `fetched_at_ms` may still be used.
    fn usable(&self, now_ms: u64, schedule: &KeySchedule) -> bool {
        let until = self.fetched_at_ms.saturating_add(schedule.refresh_ms).saturating_add(schedule.max_stale_ms);
        self.generation > 0 && now_ms < until
    }
}

/// What a request whose token's key is not in the usable keys should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// A fetch is under way or about to start: wait for it.
    Wait,
    /// The issuer's current keys lack the token's `kid`: refuse it (401).
    UnknownKey,
    /// No usable keys, or the last fetch failed: nothing can be said (503).
    Unavailable,
}

/// This VM's parsed copy of the document of one generation.
struct Parsed {
    generation: u32,
    /// `None` when the document did not parse (it did when fetched, so only
    /// a document damaged in shared data).
    keys: Option<Rc<KeySet>>,
}

/// The result of one fetch, as the engine reads the issuer's answer.
pub type FetchResult<'a> = Result<&'a [u8], FetchError>;

/// Why a fetch brought no keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// The call failed or the answer was not a usable JSON document (the text says why).
    Answer(String),
    Document(JwksError),
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::Answer(reason) => f.write_str(reason),
            FetchError::Document(err) => err.fmt(f),
        }
    }
}

/// One issuer's keys as one VM sees them.
pub struct Keyring {
    state_key: String,
    document_key: String,
    schedule: KeySchedule,
    parsed: RefCell<Parsed>,
    /// This VM's fetch under way, by call id.
    call: Cell<Option<u32>>,
}

impl Keyring {
    /// `source` says where the keys come from (the issuer's URL, cluster,
    /// authority and keys path): only an issuer entry with the same source
    /// shares them, and a configuration change elsewhere (audiences, TTLs)
    /// keeps them, so shared data does not gain keys with each change.
    pub fn new(namespace: &str, issuer: &str, source: &[&str], schedule: KeySchedule) -> Self {
        let mut hasher = Sha256::new();
        for part in source {
            hasher.update(part.as_bytes());
            hasher.update([0u8]);
        }
        let scope: String = hasher.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect();
        let prefix = format!("oauth_introspection.v3.{namespace}.jwks.{issuer}.{scope}");
        Keyring {
            state_key: format!("{prefix}.state"),
            document_key: format!("{prefix}.document"),
            schedule,
            parsed: RefCell::new(Parsed { generation: 0, keys: None }),
            call: Cell::new(None),
        }
    }

    /// Creates the state key if it does not exist yet, so later writes can CAS.
    pub fn prepare(&self, store: &impl SharedData) {
        if store.get(&self.state_key).1.is_none() {
            store.set(&self.state_key, &[], None);
        }
    }

    /// The usable keys, as of the shared state (parsed again only if it
    /// changed generation); `None` when there are none.
    pub fn keys(&self, store: &impl SharedData, now_ms: u64) -> Option<Rc<KeySet>> {
        let state = self.state(store).0;
        if !state.usable(now_ms, &self.schedule) {
            return None;
        }
        let mut parsed = self.parsed.borrow_mut();
        if parsed.generation != state.generation {
            let document = store.get(&self.document_key).0.unwrap_or_default();
            *parsed = Parsed { generation: state.generation, keys: KeySet::parse(&document).ok().map(Rc::new) };
        }
        parsed.keys.clone()
    }

    /// A request's token names a key the usable keys lack, or there are none
    /// (`keys`): wait for a fetch, unless the request `waited` once already.
    /// The fetch is asked for, and starts at once or as soon as the last one
    /// is `jwks_min_refresh_seconds` old: a key an issuer has just begun to
    /// sign with is fetched, however recent the last fetch. Only after a
    /// failed fetch, before the next may start, is there nothing to wait for.
    pub fn missing(&self, store: &impl SharedData, keys: Option<&KeySet>, waited: bool, now_ms: u64) -> Missing {
        let (state, cas) = self.state(store);
        let in_flight = state.in_flight(now_ms, &self.schedule);
        if !waited && (in_flight || !state.failed || state.may_fetch(now_ms, &self.schedule)) {
            // Without a CAS value the record was not read: never overwrite it blind.
            if let (false, false, Some(cas)) = (in_flight, state.wanted, cas) {
                let wanted = State { wanted: true, ..state };
                // Lost to another writer: that one fetches, or asked already.
                store.set(&self.state_key, &wanted.encode(), Some(cas));
            }
            return Missing::Wait;
        }
        match keys {
            // The current keys, from a fetch that worked and was not lost, lack it.
            Some(keys) if !keys.is_empty() && !state.failed && !state.fetching => Missing::UnknownKey,
            _ => Missing::Unavailable,
        }
    }

    /// How long a request waits for a fetch before it gives up (503): the
    /// fetch may start only `jwks_min_refresh_seconds` after the last one.
    pub fn wait_limit_ms(&self) -> u64 {
        self.schedule.min_refresh_ms.saturating_add(self.schedule.stale_fetch_ms)
    }

    /// Whether a request that waited for a fetch may go on: no fetch is under
    /// way or asked for any more.
    pub fn settled(&self, store: &impl SharedData, now_ms: u64) -> bool {
        let state = self.state(store).0;
        !state.in_flight(now_ms, &self.schedule) && !state.wanted
    }

    /// On a tick of the root context: true when this VM should fetch now
    /// (the keys are due and it won the claim); the engine then dispatches
    /// and reports the call with [`Keyring::started`].
    pub fn claim_fetch(&self, store: &impl SharedData, now_ms: u64) -> bool {
        let (state, cas) = self.state(store);
        if cas.is_none() || !state.due(now_ms, &self.schedule) || !state.may_fetch(now_ms, &self.schedule) {
            return false;
        }
        let claimed = State { fetching: true, wanted: false, attempt_at_ms: now_ms, ..state };
        store.set(&self.state_key, &claimed.encode(), cas)
    }

    pub fn started(&self, call_id: u32) {
        self.call.set(Some(call_id));
    }

    /// Whether `call_id` is this VM's fetch of these keys.
    pub fn is_call(&self, call_id: u32) -> bool {
        self.call.get() == Some(call_id)
    }

    /// A fetch ended (`document` is the answer's body, or why there is
    /// none): store the keys for every worker, or keep the last good ones.
    /// The new key set, or why the fetch failed.
    pub fn finish(
        &self,
        store: &impl SharedData,
        result: FetchResult<'_>,
        now_ms: u64,
    ) -> Result<Rc<KeySet>, FetchError> {
        self.call.set(None);
        let parsed = result.and_then(|document| {
            let keys = KeySet::parse(document).map_err(FetchError::Document)?;
            Ok((document, keys))
        });
        for _ in 0..3 {
            let (state, cas) = self.state(store);
            // The document first, again on each try: a VM that sees the new generation
            // reads it, and a fetch that lost the race to another one does not leave its
            // document under the winner's generation.
            if let Ok((document, _)) = &parsed {
                store.set(&self.document_key, document, None);
            }
            let next = match &parsed {
                Ok(_) => State {
                    generation: state.generation.wrapping_add(1).max(1),
                    fetched_at_ms: now_ms,
                    fetching: false,
                    failed: false,
                    ..state
                },
                Err(_) => State { fetching: false, failed: true, ..state },
            };
            if store.set(&self.state_key, &next.encode(), cas) {
                break;
            }
        }
        let (_, keys) = parsed?;
        let keys = Rc::new(keys);
        let generation = self.state(store).0.generation;
        *self.parsed.borrow_mut() = Parsed { generation, keys: Some(Rc::clone(&keys)) };
        Ok(keys)
    }

    /// How long after `now_ms` the last good keys stay usable, if they are now.
    pub fn usable_for_ms(&self, store: &impl SharedData, now_ms: u64) -> Option<u64> {
        let state = self.state(store).0;
        let until =
            state.fetched_at_ms.saturating_add(self.schedule.refresh_ms).saturating_add(self.schedule.max_stale_ms);
        state.usable(now_ms, &self.schedule).then(|| until - now_ms)
    }

    fn state(&self, store: &impl SharedData) -> (State, Option<u32>) {
        let (value, cas) = store.get(&self.state_key);
        (State::decode(value.as_deref().unwrap_or_default()), cas)
    }
}

#[cfg(test)]
#[path = "keyring_tests.rs"]
mod tests;
