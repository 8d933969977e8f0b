//! One introspection call per token per Envoy, and a cap on calls in flight.
//!
//! A fixed table of shared-data keys, created when the plugin loads (a CAS on
//! a key that does not exist always succeeds, so only keys that exist make CAS
//! a lock). A token's *home* slot, picked by its hash, holds an "in flight"
//! marker while one request, the leader, asks the issuer about it; every other
//! request for that token, on any worker, sees the marker and waits for the
//! leader's verdict instead of calling too. A marker older than the call
//! timeout plus a second is stale (its VM died or its stream went away) and is
//! taken over. When a token's home slot is busy with another token, the call is
//! made without coalescing, in any free slot, so it still counts against the cap.
//!
//! The cap counts live markers: a request that would start call number
//! `max_in_flight + 1` is refused (503) instead of piling onto the issuer. The
//! count is read without a lock, so two workers racing can overshoot it by one
//! or two; it bounds load, it is not an exact quota.
//!
//! Each issuer has a table of its own (its cap is its own), named by the
//! plugin's namespace and the issuer: tokens are hashed with their issuer, so
//! requests wait only for a call to the same issuer about the same token.

use crate::cache::SharedData;
use crate::token::TokenHash;

const MARKER_VERSION: u8 = 1;
const MARKER_LEN: usize = 1 + 1 + 32 + 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    InFlight = 1,
    /// The leader's call failed (issuer error); its waiters answer 503 too.
    Failed = 2,
    /// The same, the issuer being down (refused, timed out, 5xx): an API may
    /// then admit on a recent verdict (stale-if-error).
    IssuerDown = 3,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Marker {
    state: State,
    token: TokenHash,
    at_ms: u64,
}

impl Marker {
    fn encode(&self) -> [u8; MARKER_LEN] {
        let mut out = [0u8; MARKER_LEN];
        let (head, rest) = out.split_at_mut(2);
        head.copy_from_slice(&[MARKER_VERSION, self.state as u8]);
        let (token, at) = rest.split_at_mut(32);
        token.copy_from_slice(&self.token.0);
        at.copy_from_slice(&self.at_ms.to_be_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<Marker> {
        let bytes: &[u8; MARKER_LEN] = bytes.try_into().ok()?;
        let (head, rest) = bytes.split_first_chunk::<2>()?;
        let (token, at) = rest.split_first_chunk::<32>()?;
        let state = match *head {
            [MARKER_VERSION, 1] => State::InFlight,
            [MARKER_VERSION, 2] => State::Failed,
            [MARKER_VERSION, 3] => State::IssuerDown,
            _ => return None,
        };
        Some(Marker { state, token: TokenHash(*token), at_ms: u64::from_be_bytes(at.try_into().ok()?) })
    }
}

/// What a request whose token is not cached should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Call the issuer. `slot` holds this call's marker until `finish`;
    /// `None` when a race left no slot (the call is then not counted).
    Lead { slot: Option<u32> },
    /// Another request is asking the issuer about this token: wait on `slot`.
    Wait { slot: u32 },
    /// `max_in_flight` calls are under way already.
    Full,
}

/// How a leader's call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// With a verdict (or the leader's request went away).
    Answered,
    Failed,
    /// Failed with the issuer down (refused, timed out, 5xx).
    IssuerDown,
}

/// How a waiter's leader is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaderState {
    /// Still waiting for the issuer.
    Pending,
    /// The call failed: the issuer is unavailable (`issuer_down`: refused,
    /// timed out or 5xx).
    Failed { issuer_down: bool },
    /// Finished (the verdict is in the cache, unless it could not be cached)
    /// or gone without an answer.
    Gone,
}

pub struct InFlightTable {
    key_prefix: String,
    slots: u32,
    max_in_flight: u32,
    stale_after_ms: u64,
}

impl InFlightTable {
    /// The table of one issuer (`issuer`, its configured name) of the plugin
    /// instance whose shared-data keys start with `namespace`.
    pub fn new(namespace: &str, issuer: &str, max_in_flight: u32, call_timeout_ms: u64) -> Self {
        InFlightTable {
            key_prefix: format!("oauth_introspection.v3.{namespace}.inflight.{issuer}."),
            slots: max_in_flight.saturating_mul(2).max(16),
            max_in_flight,
            stale_after_ms: call_timeout_ms.saturating_add(1000),
        }
    }

    /// Creates every slot key that does not exist yet, so later writes can CAS.
    pub fn prepare(&self, store: &impl SharedData) {
        for slot in 0..self.slots {
            let key = self.slot_key(slot);
            if store.get(&key).1.is_none() {
                store.set(&key, &[], None);
            }
        }
    }

    pub fn claim(&self, store: &impl SharedData, token: &TokenHash, now_ms: u64) -> Claim {
        let home = self.home_slot(token);
        let (home_value, home_cas) = store.get(&self.slot_key(home));
        let home_marker = home_value.as_deref().and_then(Marker::decode);
        let home_busy = home_marker.filter(|m| self.is_live(m, now_ms));
        if home_busy.is_some_and(|m| m.token == *token) {
            return Claim::Wait { slot: home };
        }
        let mut live = u32::from(home_busy.is_some());
        let mut spare = None;
        for slot in (0..self.slots).filter(|&s| s != home) {
            let (value, cas) = store.get(&self.slot_key(slot));
            match value.as_deref().and_then(Marker::decode) {
                Some(marker) if self.is_live(&marker, now_ms) => live += 1,
                _ => {
                    spare.get_or_insert((slot, cas));
                }
            }
        }
        if live >= self.max_in_flight {
            return Claim::Full;
        }
        let mine = Marker { state: State::InFlight, token: *token, at_ms: now_ms }.encode();
        if home_busy.is_none() {
            if store.set(&self.slot_key(home), &mine, home_cas) {
                return Claim::Lead { slot: Some(home) };
            }
            // Another worker won the home slot: perhaps for this very token.
            let (value, _) = store.get(&self.slot_key(home));
            if value.as_deref().and_then(Marker::decode).is_some_and(|m| m.token == *token && self.is_live(&m, now_ms))
            {
                return Claim::Wait { slot: home };
            }
        }
        match spare {
            Some((slot, cas)) if store.set(&self.slot_key(slot), &mine, cas) => Claim::Lead { slot: Some(slot) },
            _ => Claim::Lead { slot: None },
        }
    }

    /// Releases a leader's slot: emptied after a verdict (now in the cache),
    /// or marked failed so that its waiters answer 503 without a call of their own.
    pub fn finish(&self, store: &impl SharedData, slot: u32, token: &TokenHash, ending: Ending, now_ms: u64) {
        let key = self.slot_key(slot);
        let (value, cas) = store.get(&key);
        let ours =
            value.as_deref().and_then(Marker::decode).is_some_and(|m| m.token == *token && m.state == State::InFlight);
        if ours {
            let failed = |state| Marker { state, token: *token, at_ms: now_ms }.encode().to_vec();
            let next = match ending {
                Ending::Answered => Vec::new(),
                Ending::Failed => failed(State::Failed),
                Ending::IssuerDown => failed(State::IssuerDown),
            };
            store.set(&key, &next, cas);
        }
    }

    pub fn leader_state(&self, store: &impl SharedData, slot: u32, token: &TokenHash, now_ms: u64) -> LeaderState {
        let (value, _) = store.get(&self.slot_key(slot));
        match value.as_deref().and_then(Marker::decode) {
            Some(m) if m.token == *token && m.state == State::Failed => LeaderState::Failed { issuer_down: false },
            Some(m) if m.token == *token && m.state == State::IssuerDown => LeaderState::Failed { issuer_down: true },
            Some(m) if m.token == *token && self.is_live(&m, now_ms) => LeaderState::Pending,
            _ => LeaderState::Gone,
        }
    }

    /// How long a waiter waits before it makes a call of its own.
    pub fn wait_limit_ms(&self) -> u64 {
        self.stale_after_ms
    }

    fn is_live(&self, marker: &Marker, now_ms: u64) -> bool {
        marker.state == State::InFlight && now_ms.saturating_sub(marker.at_ms) < self.stale_after_ms
    }

    fn slot_key(&self, slot: u32) -> String {
        format!("{}{slot}", self.key_prefix)
    }

    fn home_slot(&self, token: &TokenHash) -> u32 {
        // The cache uses the first two words of the hash; use the third.
        let [.., a, b, c, d] = token.0;
        u32::from_be_bytes([a, b, c, d]) % self.slots
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::tests::MemoryStore;

    fn table(max: u32) -> InFlightTable {
        InFlightTable::new("test", "main", max, 1000)
    }

    fn token(name: &str) -> TokenHash {
        TokenHash::of("https://issuer.example", name)
    }

    #[test]
    fn each_issuer_has_its_own_keys_and_cap() {
        let store = MemoryStore::default();
        let main = table(1);
        let other = InFlightTable::new("test", "other", 1, 1000);
        main.prepare(&store);
        other.prepare(&store);
        assert_eq!(store.0.borrow().len(), 32);
        assert!(matches!(main.claim(&store, &token("a"), 10), Claim::Lead { slot: Some(_) }));
        assert_eq!(main.claim(&store, &token("b"), 10), Claim::Full);
        // The other issuer's calls are not counted against main's cap.
        let at_other = TokenHash::of("https://other.example", "a");
        assert!(matches!(other.claim(&store, &at_other, 10), Claim::Lead { slot: Some(_) }));
    }

    #[test]
    fn prepare_creates_every_key_once() {
        let store = MemoryStore::default();
        let table = table(8);
        table.prepare(&store);
        assert_eq!(store.0.borrow().len(), 16);
        // A second VM's prepare leaves a live marker alone.
        assert_eq!(table.claim(&store, &token("a"), 0), Claim::Lead { slot: Some(table.home_slot(&token("a"))) });
        table.prepare(&store);
        assert!(matches!(table.claim(&store, &token("a"), 1), Claim::Wait { .. }));
    }

    #[test]
    fn the_second_request_for_a_token_waits_for_the_first() {
        let store = MemoryStore::default();
        let table = table(8);
        table.prepare(&store);
        let Claim::Lead { slot: Some(slot) } = table.claim(&store, &token("a"), 100) else { panic!("no lead") };
        for _ in 0..63 {
            assert_eq!(table.claim(&store, &token("a"), 150), Claim::Wait { slot });
        }
        assert_eq!(table.leader_state(&store, slot, &token("a"), 150), LeaderState::Pending);
        table.finish(&store, slot, &token("a"), Ending::Answered, 200);
        assert_eq!(table.leader_state(&store, slot, &token("a"), 200), LeaderState::Gone);
        // The next miss (say the verdict was not cacheable) leads again.
        assert!(matches!(table.claim(&store, &token("a"), 300), Claim::Lead { slot: Some(_) }));
    }

    #[test]
    fn a_failed_leader_fails_its_waiters() {
        let store = MemoryStore::default();
        let table = table(8);
        table.prepare(&store);
        let Claim::Lead { slot: Some(slot) } = table.claim(&store, &token("a"), 100) else { panic!("no lead") };
        table.finish(&store, slot, &token("a"), Ending::Failed, 200);
        assert_eq!(table.leader_state(&store, slot, &token("a"), 200), LeaderState::Failed { issuer_down: false });
        // A new request does not inherit the failure: it calls again.
        assert!(matches!(table.claim(&store, &token("a"), 300), Claim::Lead { slot: Some(_) }));
        // The issuer down (refused, timed out, 5xx) is told apart, for stale-if-error.
        let Claim::Lead { slot: Some(slot) } = table.claim(&store, &token("b"), 400) else { panic!("no lead") };
        table.finish(&store, slot, &token("b"), Ending::IssuerDown, 500);
        assert_eq!(table.leader_state(&store, slot, &token("b"), 500), LeaderState::Failed { issuer_down: true });
    }

    #[test]
    fn a_stale_marker_is_taken_over() {
        let store = MemoryStore::default();
        let table = table(8);
        table.prepare(&store);
        let Claim::Lead { slot: Some(slot) } = table.claim(&store, &token("a"), 100) else { panic!("no lead") };
        assert_eq!(table.leader_state(&store, slot, &token("a"), 100 + table.wait_limit_ms()), LeaderState::Gone);
        assert_eq!(table.claim(&store, &token("a"), 100 + table.wait_limit_ms()), Claim::Lead { slot: Some(slot) });
    }

    #[test]
    fn calls_past_the_cap_are_refused_until_one_finishes() {
        let store = MemoryStore::default();
        let table = table(4);
        table.prepare(&store);
        let mut slots = Vec::new();
        for i in 0..4 {
            match table.claim(&store, &token(&format!("t{i}")), 10) {
                Claim::Lead { slot: Some(slot) } => slots.push((slot, i)),
                other => panic!("claim {i}: {other:?}"),
            }
        }
        assert_eq!(table.claim(&store, &token("t4"), 10), Claim::Full);
        // Waiting on a call already under way is not a new call.
        assert!(matches!(table.claim(&store, &token("t0"), 10), Claim::Wait { .. }));
        let (slot, i) = slots[1];
        table.finish(&store, slot, &token(&format!("t{i}")), Ending::Answered, 20);
        assert!(matches!(table.claim(&store, &token("t4"), 20), Claim::Lead { slot: Some(_) }));
        // Stale markers do not count.
        assert!(matches!(table.claim(&store, &token("t5"), 20 + table.wait_limit_ms()), Claim::Lead { .. }));
    }

    #[test]
    fn a_busy_home_slot_still_leads_from_a_spare_slot() {
        let store = MemoryStore::default();
        let table = table(8);
        table.prepare(&store);
        let a = token("a");
        let other = (0..).map(|i| token(&format!("o{i}"))).find(|t| table.home_slot(t) == table.home_slot(&a)).unwrap();
        let Claim::Lead { slot: Some(home) } = table.claim(&store, &a, 10) else { panic!() };
        let Claim::Lead { slot: Some(spare) } = table.claim(&store, &other, 10) else { panic!() };
        assert_ne!(home, spare);
        table.finish(&store, spare, &other, Ending::Answered, 20);
        // Finishing someone else's slot does nothing.
        table.finish(&store, home, &other, Ending::Failed, 20);
        assert_eq!(table.leader_state(&store, home, &a, 20), LeaderState::Pending);
    }

    #[test]
    fn marker_round_trips_and_refuses_garbage() {
        let marker = Marker { state: State::Failed, token: token("x"), at_ms: 42 };
        assert_eq!(Marker::decode(&marker.encode()), Some(marker));
        assert_eq!(Marker::decode(&[]), None);
        assert_eq!(Marker::decode(&marker.encode()[..10]), None);
        let mut other_version = marker.encode();
        other_version[0] = 9;
        assert_eq!(Marker::decode(&other_version), None);
    }
}
