//! The verdict cache in Envoy's shared data, one for all worker threads.
//!
//! Envoy never frees a shared-data key, so a key per token would grow without
//! bound. The cache is a fixed table of `slots` keys instead: a token hash
//! picks two candidate slots (two-choice hashing), and a new verdict replaces
//! whichever candidate is free, stale, or expires first. Memory is bounded by
//! `slots × (max_entry_bytes + ~130 bytes of key and Envoy overhead)`.
//!
//! Time is kept in milliseconds, so an entry lives its whole TTL whenever in
//! a second it was written (`exp`, whole seconds, is converted exactly).
//!
//! A valid verdict never outlives the token's `exp` or `max_ttl_secs`. An
//! invalid one (inactive, expired, another issuer's...) is kept for the short
//! `negative_ttl_secs`, so a replayed bad token does not reach the issuer each
//! time; it never displaces a live valid entry, so a flood of bad tokens cannot
//! push good ones out. An API's own requirements (audiences, roles) are
//! checked by the caller on every hit; the cache only answers "who is this
//! token, according to this issuer, if anyone".
//!
//! Entries are keyed by issuer and token (see `TokenHash`), and each records
//! the fingerprint of its issuer's configuration: what one issuer said never
//! answers for another, and what an older configuration kept is not trusted.

use crate::claims::{Identity, Rejection, Verdict};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use crate::token::TokenHash;

/// Access to proxy-wasm shared data, behind a trait so the cache is plain
/// Rust that host tests can drive with an in-memory map.
pub trait SharedData {
    /// The value and its CAS token, or `(None, _)` when the key is unset or empty.
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>);
    /// Writes `value` if `cas` still matches (or unconditionally with `None`).
    /// Returns false on a CAS mismatch or a host error.
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSettings {
    pub slots: u32,
    pub max_ttl_secs: u64,
    /// How long an invalid verdict is kept; 0 keeps none.
    pub negative_ttl_secs: u64,
    pub max_entry_bytes: usize,
}

/// The cache of one plugin instance. Its keys start with a namespace of its
/// own, because shared data is per VM id and every plugin on the VM sees it.
pub struct VerdictCache {
    settings: CacheSettings,
    key_prefix: String,
    /// The fingerprints of the configured issuers: an entry under any other
    /// was written by an older configuration and counts as free.
    live_fingerprints: Vec<u64>,
}

/// What `store` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOutcome {
    Stored,
    /// The entry would exceed `max_entry_bytes`, the token is about to expire,
    /// or it is an invalid verdict and negative caching is off.
    NotCacheable,
    /// An invalid verdict found both its slots holding live valid entries.
    NoRoom,
    /// Another worker wrote the slot between our read and write.
    Raced,
}

impl VerdictCache {
    pub fn new(settings: CacheSettings, namespace: &str, live_fingerprints: Vec<u64>) -> Self {
        VerdictCache { settings, key_prefix: format!("oauth_introspection.v3.{namespace}.slot."), live_fingerprints }
    }

    /// The cached verdict for this issuer's token (`hash`), if a live entry
    /// written under the issuer's `fingerprint` exists at `now_ms`.
    pub fn lookup(&self, store: &impl SharedData, hash: &TokenHash, fingerprint: u64, now_ms: u64) -> Option<Verdict> {
        self.lookup_until(store, hash, fingerprint, now_ms).map(|(verdict, _)| verdict)
    }

    /// [`VerdictCache::lookup`], with the time (unix ms) the entry ends.
    pub fn lookup_until(
        &self,
        store: &impl SharedData,
        hash: &TokenHash,
        fingerprint: u64,
        now_ms: u64,
    ) -> Option<(Verdict, u64)> {
        self.candidate_slots(hash).into_iter().find_map(|slot| {
            let (value, _) = store.get(&self.slot_key(slot));
            let entry = decode_entry(&value?)?;
            (entry.fingerprint == fingerprint && entry.token == *hash && entry.valid_until_ms > now_ms)
                .then_some((entry.verdict, entry.valid_until_ms))
        })
    }

    /// A valid verdict for this issuer's token that ended less than `window_ms`
    /// ago and whose token has not expired: what stale-if-error may admit on
    /// while the issuer is down. Best effort: an ended entry's slot is free for
    /// other tokens.
    pub fn lookup_stale(
        &self,
        store: &impl SharedData,
        hash: &TokenHash,
        fingerprint: u64,
        now_ms: u64,
        window_ms: u64,
    ) -> Option<Identity> {
        let mut found = None;
        for slot in self.candidate_slots(hash) {
            let (value, _) = store.get(&self.slot_key(slot));
            let Some(entry) = value.as_deref().and_then(decode_entry) else { continue };
            if entry.fingerprint != fingerprint || entry.token != *hash {
                continue;
            }
            match entry.verdict {
                // A refusal of the token, even an ended one, is the last word: nothing to bridge.
                Verdict::Invalid(_) => return None,
                Verdict::Valid(identity) => {
                    let recent = now_ms < entry.valid_until_ms.saturating_add(window_ms);
                    let unexpired = identity.expires_at.is_none_or(|exp| exp.saturating_mul(1000) > now_ms);
                    if recent && unexpired {
                        found = Some(identity);
                    }
                }
            }
        }
        found
    }

    /// Keeps `verdict` from `now_ms` on: a valid one until the token's `exp`
    /// or `max_ttl_secs` from now, whichever is first; an invalid one for
    /// `negative_ttl_secs`.
    pub fn store(
        &self,
        store: &impl SharedData,
        hash: &TokenHash,
        fingerprint: u64,
        verdict: &Verdict,
        now_ms: u64,
    ) -> StoreOutcome {
        let after = |secs: u64| now_ms.saturating_add(secs.saturating_mul(1000));
        let valid_until_ms = match verdict {
            Verdict::Valid(identity) => {
                let max_until = after(self.settings.max_ttl_secs);
                identity.expires_at.map_or(max_until, |exp| exp.saturating_mul(1000).min(max_until))
            }
            Verdict::Invalid(_) => after(self.settings.negative_ttl_secs),
        };
        if valid_until_ms <= now_ms {
            // An invalid verdict that is not kept still ends what was kept of the token:
            // a later outage must not admit it on its older valid verdict.
            if matches!(verdict, Verdict::Invalid(_)) {
                self.forget(store, hash, fingerprint);
            }
            return StoreOutcome::NotCacheable;
        }
        let entry = CacheEntry { fingerprint, token: *hash, valid_until_ms, verdict: verdict.clone() };
        let Some(bytes) = encode_entry(&entry).filter(|bytes| bytes.len() <= self.settings.max_entry_bytes) else {
            return StoreOutcome::NotCacheable;
        };
        let Some((slot, cas)) = self.choose_victim(store, hash, matches!(verdict, Verdict::Valid(_)), now_ms) else {
            self.forget(store, hash, fingerprint);
            return StoreOutcome::NoRoom;
        };
        if !store.set(&self.slot_key(slot), &bytes, cas) {
            // Another worker wrote the slot: a refusal must still end what was kept.
            if matches!(verdict, Verdict::Invalid(_)) {
                self.forget(store, hash, fingerprint);
            }
            return StoreOutcome::Raced;
        }
        // The token's older entry in its other slot, if any, is not to be read again.
        self.forget_except(store, hash, fingerprint, Some(slot));
        StoreOutcome::Stored
    }

    /// The candidate slot to overwrite, with the CAS token read from it: a
    /// free, stale or same-token slot first, else the entry that ends first.
    /// An invalid verdict (`valid == false`) only takes a slot that holds no
    /// live valid entry.
    fn choose_victim(
        &self,
        store: &impl SharedData,
        hash: &TokenHash,
        valid: bool,
        now_ms: u64,
    ) -> Option<(u32, Option<u32>)> {
        let [first, second] = self.candidate_slots(hash);
        // Rank: (false, 0) = free, stale or this token: take it; else (holds a valid entry, its end).
        let rank = |slot: u32| {
            let (value, cas) = store.get(&self.slot_key(slot));
            let rank = match value.as_deref().and_then(decode_entry) {
                Some(e)
                    if e.token != *hash
                        && self.live_fingerprints.contains(&e.fingerprint)
                        && e.valid_until_ms > now_ms =>
                {
                    (matches!(e.verdict, Verdict::Valid(_)), e.valid_until_ms)
                }
                _ => (false, 0),
            };
            (rank, slot, cas)
        };
        let a = rank(first);
        let b = if a.0 .1 == 0 || first == second { a } else { rank(second) };
        let (rank, slot, cas) = if b.0 < a.0 { b } else { a };
        (valid || !rank.0).then_some((slot, cas))
    }

    /// Empties the slots holding an entry of this issuer's token.
    fn forget(&self, store: &impl SharedData, hash: &TokenHash, fingerprint: u64) {
        self.forget_except(store, hash, fingerprint, None);
    }

    /// Empties the slots holding an entry of this issuer's token, but `keep`;
    /// a write another worker raced is tried once more.
    fn forget_except(&self, store: &impl SharedData, hash: &TokenHash, fingerprint: u64, keep: Option<u32>) {
        for slot in self.candidate_slots(hash).into_iter().filter(|&slot| Some(slot) != keep) {
            for _ in 0..2 {
                let (value, cas) = store.get(&self.slot_key(slot));
                let entry = value.as_deref().and_then(decode_entry);
                if !entry.is_some_and(|e| e.token == *hash && e.fingerprint == fingerprint) {
                    break;
                }
                if store.set(&self.slot_key(slot), &[], cas) {
                    break;
                }
            }
        }
    }

    fn candidate_slots(&self, hash: &TokenHash) -> [u32; 2] {
        let (a, b) = hash.slot_seeds();
        let slots = self.settings.slots.max(1);
        [a % slots, b % slots]
    }

    fn slot_key(&self, slot: u32) -> String {
        format!("{}{slot}", self.key_prefix)
    }
}

/// A worker's own copy of the verdicts it read from shared data lately, so
/// that a token's next requests on this worker skip the shared-data read
/// (a host call and a copy) and the decoding. An entry ends when the shared
/// one it copies ends, so the documented bounds (`max_ttl_seconds`, the
/// negative TTL) hold; a configuration change starts an empty copy (the
/// engine is new). At most `capacity` entries: when full, the ended ones go,
/// and if none has, all of them.
pub struct RecentVerdicts {
    entries: RefCell<HashMap<TokenHash, (Rc<Verdict>, u64)>>,
    capacity: usize,
}

impl RecentVerdicts {
    pub fn new(capacity: usize) -> Self {
        RecentVerdicts { entries: RefCell::default(), capacity }
    }

    pub fn get(&self, hash: &TokenHash, now_ms: u64) -> Option<Rc<Verdict>> {
        let entries = self.entries.borrow();
        let (verdict, until) = entries.get(hash)?;
        (*until > now_ms).then(|| Rc::clone(verdict))
    }

    pub fn put(&self, hash: TokenHash, verdict: Rc<Verdict>, until_ms: u64, now_ms: u64) {
        let mut entries = self.entries.borrow_mut();
        if entries.len() >= self.capacity && !entries.contains_key(&hash) {
            entries.retain(|_, (_, until)| *until > now_ms);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(hash, (verdict, until_ms));
    }
}

/// One slot's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    /// The fingerprint of the issuer (and its configuration) that gave the verdict.
    pub fingerprint: u64,
    /// The issuer and token the verdict is about.
    pub token: TokenHash,
    /// The entry is used only while `now_ms < valid_until_ms` (unix milliseconds).
    pub valid_until_ms: u64,
    pub verdict: Verdict,
}

const ENTRY_VERSION: u8 = 4;

const KIND_VALID: u8 = 0;
/// The rejections an issuer's answer or a locally verified JWT gives, and so
/// the only ones cached. Not `UnknownKey`: the next key refresh may change it.
const REJECTIONS: [(u8, Rejection); 9] = [
    (1, Rejection::Inactive),
    (2, Rejection::Expired),
    (3, Rejection::NotYetValid),
    (5, Rejection::WrongIssuer),
    (6, Rejection::NotBearerAccessToken),
    (7, Rejection::SenderConstrained),
    (8, Rejection::BadHeader),
    (9, Rejection::BadSignature),
    (10, Rejection::BadClaims),
];

/// Binary layout: version u8, fingerprint u64, token hash [32],
/// valid_until_ms u64, kind u8 (0 = valid, else the rejection). A valid entry goes on with
/// exp u64 (0 = none), subject, client id, the audience list, the number of
/// role lists (u16) and each list, the number of claims (u16) and each claim
/// as a u8 (0 = absent, 1 = present) and, if present, its string. A string is
/// a u16 length and UTF-8 bytes, a list a u16 count and its strings.
/// Integers big-endian. `None` when a string or list is too long for its
/// length field: such an identity is used but not cached, never cached in a
/// shortened form.
pub fn encode_entry(entry: &CacheEntry) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(192);
    out.push(ENTRY_VERSION);
    out.extend_from_slice(&entry.fingerprint.to_be_bytes());
    out.extend_from_slice(&entry.token.0);
    out.extend_from_slice(&entry.valid_until_ms.to_be_bytes());
    let identity = match &entry.verdict {
        Verdict::Invalid(rejection) => {
            out.push(REJECTIONS.iter().find(|(_, r)| r == rejection)?.0);
            return Some(out);
        }
        Verdict::Valid(identity) => identity,
    };
    out.push(KIND_VALID);
    out.extend_from_slice(&identity.expires_at.unwrap_or(0).to_be_bytes());
    push_str(&mut out, &identity.subject)?;
    push_str(&mut out, &identity.client_id)?;
    push_list(&mut out, &identity.audiences)?;
    push_len(&mut out, identity.roles.len())?;
    for roles in &identity.roles {
        push_list(&mut out, roles)?;
    }
    push_len(&mut out, identity.claims.len())?;
    for claim in &identity.claims {
        match claim {
            None => out.push(0),
            Some(value) => {
                out.push(1);
                push_str(&mut out, value)?;
            }
        }
    }
    Some(out)
}

fn push_len(out: &mut Vec<u8>, len: usize) -> Option<()> {
    out.extend_from_slice(&u16::try_from(len).ok()?.to_be_bytes());
    Some(())
}

fn push_str(out: &mut Vec<u8>, value: &str) -> Option<()> {
    push_len(out, value.len())?;
    out.extend_from_slice(value.as_bytes());
    Some(())
}

fn push_list(out: &mut Vec<u8>, values: &[String]) -> Option<()> {
    push_len(out, values.len())?;
    values.iter().try_for_each(|value| push_str(out, value))
}

/// Decodes a slot; `None` for anything malformed (another version, a
/// truncated or corrupted value). Never panics.
pub fn decode_entry(bytes: &[u8]) -> Option<CacheEntry> {
    let mut reader = Reader(bytes);
    if reader.take::<1>()? != [ENTRY_VERSION] {
        return None;
    }
    let fingerprint = u64::from_be_bytes(reader.take()?);
    let token = TokenHash(reader.take()?);
    let valid_until_ms = u64::from_be_bytes(reader.take()?);
    let [kind] = reader.take::<1>()?;
    let verdict = if kind == KIND_VALID {
        Verdict::Valid(reader.identity()?)
    } else {
        Verdict::Invalid(REJECTIONS.iter().find(|(code, _)| *code == kind)?.1)
    };
    if !reader.0.is_empty() {
        return None;
    }
    Some(CacheEntry { fingerprint, token, valid_until_ms, verdict })
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }

    fn identity(&mut self) -> Option<Identity> {
        let exp = u64::from_be_bytes(self.take()?);
        let subject = self.string()?;
        let client_id = self.string()?;
        let audiences = self.list()?;
        let groups = self.len()?;
        let mut roles = Vec::with_capacity(groups.min(16));
        for _ in 0..groups {
            roles.push(self.list()?);
        }
        let count = self.len()?;
        let mut claims = Vec::with_capacity(count.min(32));
        for _ in 0..count {
            claims.push(match self.take::<1>()? {
                [0] => None,
                [1] => Some(self.string()?),
                _ => return None,
            });
        }
        Some(Identity { subject, client_id, audiences, roles, claims, expires_at: (exp != 0).then_some(exp) })
    }

    fn len(&mut self) -> Option<usize> {
        Some(usize::from(u16::from_be_bytes(self.take()?)))
    }

    fn string(&mut self) -> Option<String> {
        let len = self.len()?;
        let (head, rest) = self.0.split_at_checked(len)?;
        self.0 = rest;
        String::from_utf8(head.to_vec()).ok()
    }

    fn list(&mut self) -> Option<Vec<String>> {
        let count = self.len()?;
        let mut items = Vec::with_capacity(count.min(64));
        for _ in 0..count {
            items.push(self.string()?);
        }
        Some(items)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;

    /// Shared data as Envoy implements it: CAS counters per key.
    #[derive(Default)]
    pub(crate) struct MemoryStore(pub RefCell<HashMap<String, (Vec<u8>, u32)>>);

    impl SharedData for MemoryStore {
        fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
            match self.0.borrow().get(key) {
                Some((value, cas)) => ((!value.is_empty()).then(|| value.clone()), Some(*cas)),
                None => (None, None),
            }
        }

        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
            let mut map = self.0.borrow_mut();
            let current = map.get(key).map(|(_, c)| *c);
            if let (Some(expected), Some(current)) = (cas, current) {
                if expected != current {
                    return false;
                }
            }
            map.insert(key.to_string(), (value.to_vec(), current.unwrap_or(0) + 1));
            true
        }
    }

    const FP: u64 = 7;
    /// Unix time 1000 s, in milliseconds (the cache's unit); `exp` values are in seconds.
    const T0: u64 = 1_000_000;

    fn identity(exp: Option<u64>) -> Identity {
        Identity {
            subject: "user-1".into(),
            client_id: "client-1".into(),
            audiences: vec!["300000000000000001".into()],
            roles: vec![vec!["read:messages".into(), "admin".into()], vec![]],
            claims: vec![Some("org-1".into()), None],
            expires_at: exp,
        }
    }

    fn valid(exp: Option<u64>) -> Verdict {
        Verdict::Valid(identity(exp))
    }

    fn token(name: &str) -> TokenHash {
        TokenHash::of("https://issuer.example", name)
    }

    fn settings(slots: u32) -> CacheSettings {
        CacheSettings { slots, max_ttl_secs: 300, negative_ttl_secs: 10, max_entry_bytes: 1024 }
    }

    fn cache(slots: u32) -> VerdictCache {
        VerdictCache::new(settings(slots), "test", vec![FP])
    }

    #[test]
    fn entry_round_trips() {
        let entry = CacheEntry { fingerprint: 9, token: token("t"), valid_until_ms: 42, verdict: valid(Some(50)) };
        assert_eq!(decode_entry(&encode_entry(&entry).unwrap()), Some(entry.clone()));
        let no_exp = CacheEntry { verdict: valid(None), ..entry.clone() };
        assert_eq!(decode_entry(&encode_entry(&no_exp).unwrap()), Some(no_exp));
        let mut subject = identity(None);
        subject.subject = "s".repeat(70_000);
        assert_eq!(encode_entry(&CacheEntry { verdict: Verdict::Valid(subject), ..entry.clone() }), None);
        for (_, rejection) in REJECTIONS {
            let invalid = CacheEntry { verdict: Verdict::Invalid(rejection), ..entry.clone() };
            assert_eq!(decode_entry(&encode_entry(&invalid).unwrap()), Some(invalid));
        }
    }

    /// Audience and trust are each API's own decision, never cached; nor is an
    /// unknown key, which the next refresh of the issuer's keys may bring.
    #[test]
    fn api_level_and_unknown_key_rejections_are_not_cacheable() {
        for rejection in
            [Rejection::WrongAudience, Rejection::UntrustedIssuer, Rejection::NoIssuer, Rejection::UnknownKey]
        {
            let entry = CacheEntry {
                fingerprint: 9,
                token: token("t"),
                valid_until_ms: 42,
                verdict: Verdict::Invalid(rejection),
            };
            assert_eq!(encode_entry(&entry), None, "{rejection:?}");
        }
    }

    #[test]
    fn every_truncation_or_extension_is_refused() {
        let entry = CacheEntry { fingerprint: 9, token: token("t"), valid_until_ms: 42, verdict: valid(Some(50)) };
        let bytes = encode_entry(&entry).unwrap();
        for len in 0..bytes.len() {
            assert_eq!(decode_entry(&bytes[..len]), None, "truncated to {len}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode_entry(&longer), None);
        let mut other_version = bytes;
        other_version[0] = 2;
        assert_eq!(decode_entry(&other_version), None);
    }

    #[test]
    fn hit_after_store_and_miss_for_other_tokens() {
        let store = MemoryStore::default();
        let cache = cache(64);
        assert_eq!(cache.lookup(&store, &token("a"), FP, T0), None);
        assert_eq!(cache.store(&store, &token("a"), FP, &valid(Some(5000)), T0), StoreOutcome::Stored);
        assert_eq!(cache.lookup(&store, &token("a"), FP, T0 + 1000), Some(valid(Some(5000))));
        assert_eq!(cache.lookup(&store, &token("b"), FP, T0 + 1000), None);
    }

    #[test]
    fn one_issuers_verdict_never_answers_for_another() {
        let store = MemoryStore::default();
        let cache = VerdictCache::new(settings(64), "test", vec![FP, FP + 1]);
        let at_a = TokenHash::of("https://a.example", "same-token");
        let at_b = TokenHash::of("https://b.example", "same-token");
        cache.store(&store, &at_a, FP, &valid(Some(5000)), T0);
        assert_eq!(cache.lookup(&store, &at_b, FP, T0 + 1000), None);
        assert_eq!(cache.lookup(&store, &at_b, FP + 1, T0 + 1000), None);
        // And the right key under another issuer's fingerprint does not count either.
        assert_eq!(cache.lookup(&store, &at_a, FP + 1, T0 + 1000), None);
    }

    #[test]
    fn namespaces_keep_two_plugins_apart() {
        let store = MemoryStore::default();
        let one = VerdictCache::new(settings(64), "one", vec![FP]);
        let two = VerdictCache::new(settings(64), "two", vec![FP]);
        one.store(&store, &token("t"), FP, &valid(Some(5000)), T0);
        assert!(one.lookup(&store, &token("t"), FP, T0 + 1000).is_some());
        assert_eq!(two.lookup(&store, &token("t"), FP, T0 + 1000), None);
        assert!(store.0.borrow().keys().all(|key| key.starts_with("oauth_introspection.v3.one.slot.")));
    }

    #[test]
    fn entry_lives_until_min_of_max_ttl_and_exp() {
        let store = MemoryStore::default();
        let cache = cache(64);
        cache.store(&store, &token("long"), FP, &valid(Some(100_000)), T0);
        assert!(cache.lookup(&store, &token("long"), FP, T0 + 299_999).is_some());
        assert!(cache.lookup(&store, &token("long"), FP, T0 + 300_000).is_none());

        cache.store(&store, &token("short"), FP, &valid(Some(1010)), T0);
        assert!(cache.lookup(&store, &token("short"), FP, 1_009_999).is_some());
        assert!(cache.lookup(&store, &token("short"), FP, 1_010_000).is_none());

        assert_eq!(cache.store(&store, &token("x"), FP, &valid(Some(1000)), T0), StoreOutcome::NotCacheable);
    }

    /// Regression: time was counted in whole seconds, so an entry written at
    /// x.95 s with a 1 s TTL lived 50 ms, and its token cost a second call.
    #[test]
    fn an_entry_lives_its_whole_ttl_whenever_in_a_second_it_is_written() {
        let store = MemoryStore::default();
        let short = VerdictCache::new(
            CacheSettings { max_ttl_secs: 1, negative_ttl_secs: 1, ..settings(64) },
            "test",
            vec![FP],
        );
        let written = T0 + 950;
        short.store(&store, &token("valid"), FP, &valid(None), written);
        short.store(&store, &token("inactive"), FP, &Verdict::Invalid(Rejection::Inactive), written);
        for name in ["valid", "inactive"] {
            assert!(short.lookup(&store, &token(name), FP, written + 999).is_some(), "{name}");
            assert!(short.lookup(&store, &token(name), FP, written + 1000).is_none(), "{name}");
        }
    }

    #[test]
    fn invalid_verdicts_live_for_the_negative_ttl() {
        let store = MemoryStore::default();
        let inactive = Verdict::Invalid(Rejection::Inactive);
        assert_eq!(cache(64).store(&store, &token("revoked"), FP, &inactive, T0), StoreOutcome::Stored);
        assert_eq!(cache(64).lookup(&store, &token("revoked"), FP, T0 + 9_999), Some(inactive.clone()));
        assert_eq!(cache(64).lookup(&store, &token("revoked"), FP, T0 + 10_000), None);
        let off = VerdictCache::new(CacheSettings { negative_ttl_secs: 0, ..settings(64) }, "test", vec![FP]);
        assert_eq!(off.store(&store, &token("other"), FP, &inactive, T0), StoreOutcome::NotCacheable);
    }

    #[test]
    fn a_stale_verdict_is_found_within_its_window_and_before_exp_only() {
        let store = MemoryStore::default();
        let cache = cache(64);
        // Valid until T0 + 300 s (max_ttl); the token's exp at 2000 s.
        cache.store(&store, &token("t"), FP, &valid(Some(2000)), T0);
        let Verdict::Valid(identity) = valid(Some(2000)) else { unreachable!() };
        assert_eq!(cache.lookup_stale(&store, &token("t"), FP, T0 + 359_999, 60_000), Some(identity));
        assert_eq!(cache.lookup_stale(&store, &token("t"), FP, T0 + 360_000, 60_000), None);
        assert_eq!(cache.lookup_stale(&store, &token("t"), FP + 1, T0 + 310_000, 60_000), None);
        // Never past exp.
        cache.store(&store, &token("short"), FP, &valid(Some(1301)), T0);
        assert!(cache.lookup_stale(&store, &token("short"), FP, 1_300_999, 600_000).is_some());
        assert_eq!(cache.lookup_stale(&store, &token("short"), FP, 1_301_000, 600_000), None);
    }

    /// Regression (found in review): a refusal stored in the token's first slot left its older
    /// valid verdict in the second, where a later outage found and bridged it.
    #[test]
    fn a_refusal_in_one_slot_ends_the_valid_verdict_in_the_other() {
        let store = MemoryStore::default();
        let cache = cache(64);
        let t = (0..).map(|i| token(&format!("t{i}"))).find(|t| {
            let [first, second] = cache.candidate_slots(t);
            first != second
        });
        let t = t.unwrap();
        let [first, second] = cache.candidate_slots(&t);
        // Another token's live valid entry in the first slot: t's verdict goes to the second.
        let other =
            CacheEntry { fingerprint: FP, token: token("other"), valid_until_ms: T0 + 200_000, verdict: valid(None) };
        store.set(&cache.slot_key(first), &encode_entry(&other).unwrap(), None);
        cache.store(&store, &t, FP, &valid(Some(5000)), T0);
        // Later the first slot is free again, and the issuer refuses t.
        let (later, inactive) = (T0 + 301_000, Verdict::Invalid(Rejection::Inactive));
        assert_eq!(cache.store(&store, &t, FP, &inactive, later), StoreOutcome::Stored);
        assert_eq!(cache.lookup_stale(&store, &t, FP, later + 20_000, 600_000), None);
        // And an ended refusal still wins over a valid entry written beside it by an older worker.
        let stale_valid = CacheEntry { fingerprint: FP, token: t, valid_until_ms: later, verdict: valid(Some(5000)) };
        store.set(&cache.slot_key(second), &encode_entry(&stale_valid).unwrap(), None);
        assert_eq!(cache.lookup_stale(&store, &t, FP, later + 20_000, 600_000), None);
    }

    /// An invalid verdict ends the stale one even when negative caching is off.
    #[test]
    fn an_invalid_verdict_not_kept_still_forgets_the_valid_one() {
        let store = MemoryStore::default();
        let off = VerdictCache::new(CacheSettings { negative_ttl_secs: 0, ..settings(64) }, "test", vec![FP]);
        off.store(&store, &token("t"), FP, &valid(Some(2000)), T0);
        let inactive = Verdict::Invalid(Rejection::Inactive);
        assert_eq!(off.store(&store, &token("t"), FP, &inactive, T0 + 301_000), StoreOutcome::NotCacheable);
        assert_eq!(off.lookup_stale(&store, &token("t"), FP, T0 + 302_000, 600_000), None);
    }

    #[test]
    fn recent_verdicts_end_with_their_shared_entry_and_stay_bounded() {
        let recent = RecentVerdicts::new(2);
        let verdict = Rc::new(valid(Some(5000)));
        recent.put(token("a"), Rc::clone(&verdict), T0 + 1000, T0);
        assert_eq!(recent.get(&token("a"), T0 + 999).as_deref(), Some(&*verdict));
        assert_eq!(recent.get(&token("a"), T0 + 1000), None, "ends when the shared entry ends");
        recent.put(token("b"), Rc::clone(&verdict), T0 + 5000, T0);
        // Full: the ended one goes.
        recent.put(token("c"), Rc::clone(&verdict), T0 + 5000, T0 + 2000);
        assert!(recent.get(&token("b"), T0 + 2000).is_some() && recent.get(&token("c"), T0 + 2000).is_some());
        // Full of live ones: all go.
        recent.put(token("d"), Rc::clone(&verdict), T0 + 5000, T0 + 2000);
        assert!(recent.get(&token("b"), T0 + 2000).is_none());
        assert!(recent.get(&token("d"), T0 + 2000).is_some());
        assert_eq!(recent.entries.borrow().len(), 1);
    }

    #[test]
    fn invalid_verdicts_never_displace_live_valid_ones() {
        let store = MemoryStore::default();
        let cache = cache(1);
        cache.store(&store, &token("good"), FP, &valid(Some(5000)), T0);
        let bad = Verdict::Invalid(Rejection::Inactive);
        for i in 0..100 {
            assert_eq!(cache.store(&store, &token(&format!("bad-{i}")), FP, &bad, T0), StoreOutcome::NoRoom);
        }
        assert_eq!(cache.lookup(&store, &token("good"), FP, T0 + 1000), Some(valid(Some(5000))));
        // Once the valid entry has ended, the slot is free for anything.
        assert_eq!(cache.store(&store, &token("bad-0"), FP, &bad, 5_000_000), StoreOutcome::Stored);
    }

    /// Another issuer's live entry is as live as one's own: a flood of bad
    /// tokens at one issuer cannot push out another issuer's valid verdicts.
    #[test]
    fn invalid_verdicts_never_displace_another_issuers_valid_ones() {
        let store = MemoryStore::default();
        let cache = VerdictCache::new(settings(1), "test", vec![FP, FP + 1]);
        cache.store(&store, &TokenHash::of("https://a.example", "good"), FP, &valid(Some(5000)), T0);
        let bad = Verdict::Invalid(Rejection::Inactive);
        let other = TokenHash::of("https://b.example", "bad");
        assert_eq!(cache.store(&store, &other, FP + 1, &bad, T0), StoreOutcome::NoRoom);
        // An entry under a fingerprint no configured issuer has is stale: free.
        let newer = VerdictCache::new(settings(1), "test", vec![FP + 1]);
        assert_eq!(newer.store(&store, &other, FP + 1, &bad, T0), StoreOutcome::Stored);
    }

    #[test]
    fn oversized_entries_are_not_cached() {
        let store = MemoryStore::default();
        let cache = cache(64);
        let mut big = identity(Some(5000));
        big.roles = vec![(0..200).map(|i| format!("role-{i}")).collect()];
        assert_eq!(cache.store(&store, &token("big"), FP, &Verdict::Valid(big), T0), StoreOutcome::NotCacheable);
        assert!(store.0.borrow().is_empty());
    }

    #[test]
    fn entries_from_another_configuration_are_ignored() {
        let store = MemoryStore::default();
        cache(64).store(&store, &token("token"), FP, &valid(Some(5000)), T0);
        assert_eq!(cache(64).lookup(&store, &token("token"), FP + 1, T0 + 1000), None);
    }

    #[test]
    fn the_table_never_grows_past_its_slots() {
        let store = MemoryStore::default();
        let cache = cache(16);
        for i in 0..1000 {
            cache.store(&store, &token(&format!("token-{i}")), FP, &valid(Some(5000)), T0);
        }
        assert!(store.0.borrow().len() <= 16);
        // The most recent token is always findable: it was just written.
        assert!(cache.lookup(&store, &token("token-999"), FP, T0 + 1000).is_some());
    }

    #[test]
    fn two_choice_keeps_more_than_direct_mapping_would() {
        let store = MemoryStore::default();
        let cache = cache(1024);
        let tokens: Vec<TokenHash> = (0..512).map(|i| token(&format!("t{i}"))).collect();
        for (i, token) in tokens.iter().enumerate() {
            cache.store(&store, token, FP, &valid(Some(5000 + i as u64)), T0);
        }
        let hits = tokens.iter().filter(|t| cache.lookup(&store, t, FP, T0 + 1000).is_some()).count();
        // Direct mapping at load 0.5 keeps about 79% (403); two choices keep ~93%.
        assert!(hits >= 460, "only {hits} of 512 kept");
    }

    #[test]
    fn a_concurrent_write_is_not_clobbered() {
        struct RacingStore(MemoryStore);
        impl SharedData for RacingStore {
            fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
                let got = self.0.get(key);
                // Another worker writes right after every read.
                self.0.set(key, b"other", None);
                got
            }
            fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
                self.0.set(key, value, cas)
            }
        }
        let store = RacingStore(MemoryStore::default());
        store.0.set(&cache(1).slot_key(0), b"seed", None);
        assert_eq!(cache(1).store(&store, &token("t"), FP, &valid(Some(5000)), T0), StoreOutcome::Raced);
    }
}
