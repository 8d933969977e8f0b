use super::*;
use crate::cache::tests::MemoryStore;
use crate::jwks::tests::rsa_jwk;
use serde_json::json;

const T0: u64 = 1_800_000_000_000;

fn schedule() -> KeySchedule {
    KeySchedule { refresh_ms: 300_000, min_refresh_ms: 10_000, max_stale_ms: 3_600_000, stale_fetch_ms: 4_000 }
}

/// Two workers' views of one issuer's keys.
fn workers(store: &MemoryStore) -> (Keyring, Keyring) {
    let ring =
        || Keyring::new("ns", "main", &["https://issuer.example", "main", "issuer.example", "/keys"], schedule());
    let (a, b) = (ring(), ring());
    a.prepare(store);
    b.prepare(store);
    (a, b)
}

fn document(kids: &[&str]) -> Vec<u8> {
    let keys: Vec<Value> = kids.iter().map(|kid| rsa_jwk(kid)).collect();
    serde_json::to_vec(&json!({ "keys": keys })).unwrap()
}

use serde_json::Value;

#[test]
fn state_record_round_trips_and_garbage_reads_as_no_fetch_yet() {
    let state =
        State { generation: 7, fetched_at_ms: T0, attempt_at_ms: T0 + 5, fetching: true, failed: false, wanted: true };
    assert_eq!(State::decode(&state.encode()), state);
    for garbage in [&b""[..], b"x", &[9u8; STATE_LEN]] {
        assert_eq!(State::decode(garbage), State::default());
    }
}

#[test]
fn one_worker_fetches_and_every_worker_uses_the_keys() {
    let store = MemoryStore::default();
    let (a, b) = workers(&store);
    assert!(a.keys(&store, T0).is_none());
    assert!(a.claim_fetch(&store, T0), "no keys yet: due");
    assert!(!b.claim_fetch(&store, T0), "one fetch per Envoy");
    a.started(11);
    assert!(a.is_call(11) && !b.is_call(11));
    let keys = a.finish(&store, Ok(&document(&["k1"])), T0 + 50).unwrap();
    assert!(keys.get("k1").is_some());
    assert!(!a.is_call(11));
    let seen = b.keys(&store, T0 + 60).expect("the other worker reads the shared document");
    assert!(seen.get("k1").is_some());
    // Parsed once per generation: the same Rc until the next fetch.
    assert!(Rc::ptr_eq(&seen, &b.keys(&store, T0 + 70).unwrap()));
}

#[test]
fn keys_are_refreshed_when_due_and_not_before() {
    let store = MemoryStore::default();
    let (a, b) = workers(&store);
    assert!(a.claim_fetch(&store, T0));
    a.finish(&store, Ok(&document(&["k1"])), T0).unwrap();
    assert!(!a.claim_fetch(&store, T0 + 299_999));
    assert!(b.claim_fetch(&store, T0 + 300_000));
    b.finish(&store, Ok(&document(&["k2"])), T0 + 300_100).unwrap();
    let keys = a.keys(&store, T0 + 300_200).unwrap();
    assert!(keys.get("k2").is_some() && keys.get("k1").is_none());
}

#[test]
fn an_unknown_kid_asks_for_one_fetch_then_is_unknown() {
    let store = MemoryStore::default();
    let (a, b) = workers(&store);
    assert!(a.claim_fetch(&store, T0));
    a.finish(&store, Ok(&document(&["k1"])), T0).unwrap();
    let keys = a.keys(&store, T0 + 20_000);
    // Ten seconds and more since the last fetch: wait, and a fetch is asked for.
    assert_eq!(a.missing(&store, keys.as_deref(), false, T0 + 20_000), Missing::Wait);
    assert!(!a.settled(&store, T0 + 20_001));
    assert!(b.claim_fetch(&store, T0 + 20_005), "the ask makes the keys due at once");
    assert_eq!(a.missing(&store, keys.as_deref(), false, T0 + 20_006), Missing::Wait, "a fetch is under way");
    b.finish(&store, Ok(&document(&["k1"])), T0 + 20_100).unwrap();
    assert!(a.settled(&store, T0 + 20_101));
    // After the fetch the kid is still unknown: refused.
    assert_eq!(a.missing(&store, keys.as_deref(), true, T0 + 20_101), Missing::UnknownKey);
    // Another unknown kid soon after waits for the next fetch, which starts once the last is
    // ten seconds old: a key the issuer began to sign with in between is found then.
    assert_eq!(a.missing(&store, keys.as_deref(), false, T0 + 25_000), Missing::Wait);
    assert!(!a.settled(&store, T0 + 25_000));
    assert!(!a.claim_fetch(&store, T0 + 30_004));
    assert!(b.claim_fetch(&store, T0 + 30_005));
    b.finish(&store, Ok(&document(&["k1", "k2"])), T0 + 30_100).unwrap();
    assert!(a.settled(&store, T0 + 30_101));
    assert!(a.keys(&store, T0 + 30_101).unwrap().get("k2").is_some());
    assert_eq!(a.wait_limit_ms(), 14_000);
}

#[test]
fn random_kids_cannot_fetch_more_than_once_per_min_refresh() {
    let store = MemoryStore::default();
    let (a, b) = workers(&store);
    assert!(a.claim_fetch(&store, T0));
    a.finish(&store, Ok(&document(&["k1"])), T0).unwrap();
    let mut fetches = 0;
    for second in 0..60u64 {
        let now = T0 + second * 1000;
        for worker in [&a, &b] {
            let keys = worker.keys(&store, now);
            let _ = worker.missing(&store, keys.as_deref(), false, now);
            if worker.claim_fetch(&store, now) {
                fetches += 1;
                worker.finish(&store, Ok(&document(&["k1"])), now).unwrap();
            }
        }
    }
    assert_eq!(fetches, 5, "at 10, 20, 30, 40 and 50 s");
}

#[test]
fn a_failed_fetch_keeps_the_last_good_keys_until_they_are_too_stale() {
    let store = MemoryStore::default();
    let (a, _) = workers(&store);
    assert!(a.claim_fetch(&store, T0));
    a.finish(&store, Ok(&document(&["k1"])), T0).unwrap();
    let due = T0 + 300_000;
    assert!(a.claim_fetch(&store, due));
    let failed = a.finish(&store, Err(FetchError::Answer("HTTP 503".into())), due + 10);
    assert_eq!(failed.err(), Some(FetchError::Answer("HTTP 503".into())));
    assert!(a.keys(&store, due + 10).unwrap().get("k1").is_some(), "the last good keys stay");
    assert_eq!(a.usable_for_ms(&store, due + 10), Some(3_600_000 - 10));
    // Retried every min_refresh while due.
    assert!(!a.claim_fetch(&store, due + 9_999));
    assert!(a.claim_fetch(&store, due + 10_000));
    let garbage = a.finish(&store, Ok(b"<html>"), due + 10_100);
    assert_eq!(garbage.err(), Some(FetchError::Document(JwksError::NotJwks)));
    // An unknown kid after a failed fetch is not known to be unknown.
    let keys = a.keys(&store, due + 10_200);
    assert_eq!(a.missing(&store, keys.as_deref(), true, due + 10_200), Missing::Unavailable);
    assert!(a.keys(&store, due + 3_600_000 - 1).is_some());
    assert!(a.keys(&store, due + 3_600_000).is_none(), "past max_stale: no usable keys");
    assert_eq!(a.missing(&store, None, true, due + 3_600_000), Missing::Unavailable);
}

#[test]
fn no_keys_yet_is_unavailable_not_unknown() {
    let store = MemoryStore::default();
    let (a, _) = workers(&store);
    assert_eq!(a.missing(&store, None, false, T0), Missing::Wait);
    assert!(a.claim_fetch(&store, T0 + 5));
    a.finish(&store, Err(FetchError::Answer("timeout".into())), T0 + 3000).unwrap_err();
    assert_eq!(a.missing(&store, None, true, T0 + 3000), Missing::Unavailable);
    // Within min_refresh of a failed attempt nothing can change: 503 at once, no wait.
    assert_eq!(a.missing(&store, None, false, T0 + 4000), Missing::Unavailable);
    // An empty key set verifies nothing: unavailable too, never a 401.
    assert!(a.claim_fetch(&store, T0 + 10_005));
    let empty = a.finish(&store, Ok(br#"{"keys": []}"#), T0 + 10_010).unwrap();
    assert!(empty.is_empty());
    let keys = a.keys(&store, T0 + 10_020);
    assert_eq!(a.missing(&store, keys.as_deref(), true, T0 + 10_020), Missing::Unavailable);
}

#[test]
fn a_lost_fetch_is_taken_over_after_its_stale_limit() {
    let store = MemoryStore::default();
    let (a, b) = workers(&store);
    assert!(a.claim_fetch(&store, T0));
    // a's VM never reports back.
    assert!(!b.claim_fetch(&store, T0 + 3_999));
    assert!(!b.settled(&store, T0 + 3_999));
    assert!(b.settled(&store, T0 + 4_000), "the lost fetch is over");
    assert!(!b.claim_fetch(&store, T0 + 4_000), "min_refresh after the lost attempt");
    assert!(b.claim_fetch(&store, T0 + 10_000));
}

#[test]
fn a_lost_fetch_says_nothing_about_a_kid() {
    let store = MemoryStore::default();
    let (a, b) = workers(&store);
    assert!(a.claim_fetch(&store, T0));
    a.finish(&store, Ok(&document(&["k1"])), T0).unwrap();
    // b claims the refresh and its VM dies: the flag stays, the fetch is lost.
    assert!(b.claim_fetch(&store, T0 + 300_000));
    let keys = a.keys(&store, T0 + 304_000);
    assert_eq!(a.missing(&store, keys.as_deref(), true, T0 + 304_000), Missing::Unavailable);
}

#[test]
fn an_unread_record_is_never_overwritten() {
    /// Shared data whose reads fail: no value, no CAS.
    struct Unreadable(MemoryStore);
    impl SharedData for Unreadable {
        fn get(&self, _key: &str) -> (Option<Vec<u8>>, Option<u32>) {
            (None, None)
        }
        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
            self.0.set(key, value, cas)
        }
    }
    let store = Unreadable(MemoryStore::default());
    let (a, _) = workers(&store.0);
    assert!(a.claim_fetch(&store.0, T0));
    a.finish(&store.0, Ok(&document(&["k1"])), T0).unwrap();
    let before = store.0.get(&a.state_key);
    assert_eq!(a.missing(&store, None, false, T0 + 20_000), Missing::Wait);
    assert_eq!(store.0.get(&a.state_key), before);
    assert!(!a.claim_fetch(&store, T0 + 20_000), "no claim without a CAS value");
}
