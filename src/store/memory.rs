//! [`MemoryStore`]: the in-process [`StateStore`].
//!
//! * Limit state is split over shards (`Mutex<Shard>`, chosen by a keyed SipHash of the key), so
//!   requests for different keys rarely contend. `admit` locks the shards its checks need in
//!   ascending shard order (deduplicated, so no deadlock between concurrent admissions), checks
//!   everything, commits everything, unlocks. No lock is held across an `.await`: every
//!   operation completes before its (already ready) future is returned.
//! * Each shard holds at most its share of `max_entries`, with an index by expiry: making room
//!   drops expired entries first, then evicts the entry that expires soonest. Both are
//!   `O(log n)` per entry, so a flood of distinct keys costs no scans. `sweep` walks the same
//!   index: it drops every entry whose state is entirely expired; expired leases of a key that
//!   still holds live ones are ignored on read and pruned at that key's next write (a key never
//!   holds more than `limit` leases).
//! * Revocations and toggles are immutable maps behind [`ArcSwap`]: reads are one atomic load,
//!   writes copy the map (they are rare, admin operations).
//!
//! A poisoned shard mutex is recovered with [`PoisonError::into_inner`] rather than reported as
//! unavailable: nothing in a critical section panics by design (no unwrap, saturating
//! arithmetic), and the worst a panic could leave behind is a partly committed admission, which
//! is still valid limit state. Making every limit on that shard unavailable forever would be
//! worse.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::future::ready;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use arc_swap::ArcSwap;

use super::gcra::{self, Tat};
use super::{
    Admission, LimitCheck, LimitKind, LimitState, Millis, Revocation, StateStore, StoreFuture,
    Window,
};

/// Shards used by [`MemoryStore::new`] (fewer when `max_entries` is smaller).
pub const DEFAULT_SHARDS: usize = 32;

/// Expired entries a sweep drops per shard lock.
const SWEEP_BATCH: usize = 1024;

/// Keyed entries kept by default (about 100 MiB at worst); past it the soonest-expiring go.
pub const DEFAULT_MAX_ENTRIES: usize = 1 << 19;

/// The in-process state store. See the [module documentation](super) for the contract.
pub struct MemoryStore {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    max_entries: usize,
    revocations: ArcSwap<RevocationSet>,
    toggles: ArcSwap<HashMap<String, bool>>,
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("shards", &self.shards.len())
            .field("max_entries", &self.max_entries)
            .finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// A store holding at most `max_entries` keyed limit states (at least 1), over
    /// [`DEFAULT_SHARDS`] shards. Revocations and toggles are not counted.
    pub fn new(max_entries: usize) -> Self {
        Self::with_shards(max_entries, DEFAULT_SHARDS)
    }

    /// Like [`new`](Self::new) with a chosen number of shards (clamped to `1..=max_entries`).
    /// The capacity is split exactly: the shards' bounds add up to `max_entries`.
    pub fn with_shards(max_entries: usize, shards: usize) -> Self {
        let max_entries = max_entries.max(1);
        let n = shards.clamp(1, max_entries);
        let (base, extra) = (max_entries / n, max_entries % n);
        let shards = (0..n)
            .map(|i| Mutex::new(Shard::new(base + usize::from(i < extra))))
            .collect();
        Self {
            shards,
            hasher: RandomState::new(),
            max_entries,
            revocations: ArcSwap::default(),
            toggles: ArcSwap::default(),
        }
    }

    /// Replaces every revocation and toggle override at once (a shared store's mirror, after a
    /// sync): one atomic swap each, so readers see either the old or the new set.
    pub fn replace_shared(&self, revocations: Vec<Revocation>, toggles: HashMap<String, bool>) {
        let mut set = RevocationSet::default();
        for r in revocations {
            set.insert(r);
        }
        self.revocations.store(Arc::new(set));
        self.toggles.store(Arc::new(toggles));
    }

    /// The bound on keyed entries.
    pub fn max_entries(&self) -> usize {
        self.max_entries
    }

    /// Keyed entries currently held (expired ones included until swept). Locks each shard in
    /// turn, so it is only a snapshot under concurrent use.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).map.len()).sum()
    }

    /// Whether no keyed entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every unexpired budget entry (for persistence: budgets survive restarts, rate limits
    /// start fresh). Locks each shard in turn.
    pub fn export_budgets(&self, now: Millis) -> Vec<BudgetEntry> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let shard = lock(shard);
            for entry in shard.map.values() {
                if let Slot::Budget { start, used } = entry.slot
                    && entry.expires_at > now
                {
                    out.push(BudgetEntry {
                        key: entry.key.to_string(),
                        start,
                        used,
                        expires_at: entry.expires_at,
                    });
                }
            }
        }
        out.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// Restores budget entries (startup). Entries of windows that already ended are skipped;
    /// a key that already holds budget state of the same window keeps the larger usage.
    pub fn import_budgets(&self, now: Millis, entries: &[BudgetEntry]) {
        for e in entries {
            if e.expires_at <= now || e.start > now {
                continue;
            }
            let mut shard = lock(&self.shards[self.shard_of(&e.key)]);
            let used = budget_used(shard.get(&e.key), e.start).max(e.used);
            shard.put(
                now,
                &e.key,
                Slot::Budget {
                    start: e.start,
                    used,
                },
                e.expires_at,
            );
        }
    }

    fn shard_of(&self, key: &str) -> usize {
        // Truncating the hash is fine: it only picks a shard.
        (self.hasher.hash_one(key) as usize) % self.shards.len()
    }

    fn admit_now(&self, now: Millis, checks: &[LimitCheck<'_>]) -> Admission {
        // One check (a route's one limit: the common case): one lock, no working copies; the
        // same answer as the general path below.
        if let [check] = checks {
            let mut shard = lock(&self.shards[self.shard_of(check.key)]);
            let (state, next) = evaluate(now, check.kind, shard.get(check.key), true);
            if state.allowed
                && let Some((slot, expires_at)) = next
            {
                shard.put(now, check.key, slot, expires_at);
            }
            return Admission {
                allowed: state.allowed,
                states: vec![state],
            };
        }
        let shard_ids: Vec<usize> = checks.iter().map(|c| self.shard_of(c.key)).collect();
        let mut order = shard_ids.clone();
        order.sort_unstable();
        order.dedup();
        // Ascending order, each shard once: no deadlock with other admissions.
        let mut guards: Vec<MutexGuard<'_, Shard>> =
            order.iter().map(|&i| lock(&self.shards[i])).collect();
        let guard_of: Vec<usize> = shard_ids
            .iter()
            .map(|id| order.binary_search(id).unwrap_or(0))
            .collect();

        // Phase 1: evaluate every check on working copies (a key seen twice sees the first
        // occurrence's consumption).
        let mut work: Vec<Work<'_>> = Vec::with_capacity(checks.len());
        let mut states = Vec::with_capacity(checks.len());
        let mut allowed = true;
        for (check, &g) in checks.iter().zip(&guard_of) {
            let w = match work.iter().position(|w| w.key == check.key) {
                Some(w) => w,
                None => {
                    work.push(Work {
                        key: check.key,
                        guard: g,
                        slot: guards[g].get(check.key).cloned(),
                        expires_at: None,
                    });
                    work.len() - 1
                }
            };
            let (state, next) = evaluate(now, check.kind, work[w].slot.as_ref(), true);
            if let Some((slot, expires_at)) = next {
                work[w].slot = Some(slot);
                work[w].expires_at = Some(expires_at);
            }
            allowed &= state.allowed;
            states.push(state);
        }

        if allowed {
            // Phase 2: commit everything.
            for w in work {
                if let (Some(slot), Some(expires_at)) = (w.slot, w.expires_at) {
                    guards[w.guard].put(now, w.key, slot, expires_at);
                }
            }
        } else {
            // Nothing is committed; checks that passed report their current, unconsumed state.
            for ((check, &g), state) in checks.iter().zip(&guard_of).zip(states.iter_mut()) {
                if state.allowed {
                    *state = evaluate(now, check.kind, guards[g].get(check.key), false).0;
                }
            }
        }
        Admission { allowed, states }
    }

    fn release_now(&self, now: Millis, keys: &[&str]) {
        for key in keys {
            lock(&self.shards[self.shard_of(key)]).release(now, key);
        }
    }

    fn charge_now(
        &self,
        now: Millis,
        key: &str,
        limit: u64,
        window: Window,
        units: u64,
    ) -> LimitState {
        let (start, end) = window.bounds(now);
        let mut shard = lock(&self.shards[self.shard_of(key)]);
        let used = budget_used(shard.get(key), start).saturating_add(units);
        if units > 0 {
            shard.put(now, key, Slot::Budget { start, used }, end);
        }
        LimitState::after_charge(limit, used, end.saturating_sub(now))
    }

    fn revoke_now(&self, now: Millis, r: Revocation) {
        if !unexpired(now, r.expires_at()) {
            return;
        }
        self.revocations.rcu(|current| {
            let mut next = RevocationSet::clone(current);
            next.retain_unexpired(now);
            next.insert(r.clone());
            Arc::new(next)
        });
    }

    fn revocations_now(&self, now: Millis) -> Vec<Revocation> {
        let set = self.revocations.load();
        let mut tokens: Vec<Revocation> = set
            .tokens
            .iter()
            .filter(|(_, t)| unexpired(now, t.expires_at))
            .map(|(jti, t)| Revocation::Token {
                jti: jti.clone(),
                expires_at: t.expires_at,
                reason: t.reason.clone(),
            })
            .collect();
        tokens.sort_unstable_by(|a, b| rev_name(a).cmp(rev_name(b)));
        let mut subjects: Vec<Revocation> = set
            .subjects
            .iter()
            .filter(|(_, s)| unexpired(now, s.expires_at))
            .map(|(subject, s)| Revocation::Subject {
                subject: subject.clone(),
                before: s.before,
                expires_at: s.expires_at,
                reason: s.reason.clone(),
            })
            .collect();
        subjects.sort_unstable_by(|a, b| rev_name(a).cmp(rev_name(b)));
        tokens.append(&mut subjects);
        tokens
    }

    fn set_toggle_now(&self, name: &str, value: Option<bool>) {
        self.toggles.rcu(|current| {
            let mut next = HashMap::clone(current);
            match value {
                Some(v) => {
                    next.insert(name.to_owned(), v);
                }
                None => {
                    next.remove(name);
                }
            }
            Arc::new(next)
        });
    }

    fn toggles_now(&self) -> Vec<(String, bool)> {
        let mut all: Vec<(String, bool)> = self
            .toggles
            .load()
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        all.sort_unstable();
        all
    }
}

impl StateStore for MemoryStore {
    fn admit<'a>(
        &'a self,
        now: Millis,
        checks: &'a [LimitCheck<'a>],
    ) -> StoreFuture<'a, Admission> {
        Box::pin(ready(Ok(self.admit_now(now, checks))))
    }

    fn release<'a>(&'a self, now: Millis, keys: &'a [&'a str]) -> StoreFuture<'a, ()> {
        self.release_now(now, keys);
        Box::pin(ready(Ok(())))
    }

    fn charge<'a>(
        &'a self,
        now: Millis,
        key: &'a str,
        limit: u64,
        window: Window,
        units: u64,
    ) -> StoreFuture<'a, LimitState> {
        Box::pin(ready(Ok(self.charge_now(now, key, limit, window, units))))
    }

    fn revoke<'a>(&'a self, now: Millis, r: Revocation) -> StoreFuture<'a, ()> {
        self.revoke_now(now, r);
        Box::pin(ready(Ok(())))
    }

    fn revocations<'a>(&'a self, now: Millis) -> StoreFuture<'a, Vec<Revocation>> {
        Box::pin(ready(Ok(self.revocations_now(now))))
    }

    fn is_revoked(
        &self,
        now: Millis,
        jti: Option<&str>,
        subject: &str,
        issued_at: Option<u64>,
    ) -> bool {
        let set = self.revocations.load();
        if let Some(jti) = jti
            && set
                .tokens
                .get(jti)
                .is_some_and(|t| unexpired(now, t.expires_at))
        {
            return true;
        }
        set.subjects.get(subject).is_some_and(|s| {
            unexpired(now, s.expires_at) && issued_at.is_none_or(|iat| iat < s.before)
        })
    }

    fn set_toggle<'a>(&'a self, name: &'a str, value: Option<bool>) -> StoreFuture<'a, ()> {
        self.set_toggle_now(name, value);
        Box::pin(ready(Ok(())))
    }

    fn toggle(&self, name: &str) -> Option<bool> {
        self.toggles.load().get(name).copied()
    }

    fn toggles<'a>(&'a self) -> StoreFuture<'a, Vec<(String, bool)>> {
        Box::pin(ready(Ok(self.toggles_now())))
    }

    fn sweep(&self, now: Millis) {
        // In batches: a shard's lock is never held for a whole large sweep, so admissions on
        // that shard wait for at most one batch.
        for shard in self.shards.iter() {
            while lock(shard).drop_expired_batch(now, SWEEP_BATCH) {}
        }
        if self.revocations.load().has_expired(now) {
            self.revocations.rcu(|current| {
                let mut next = RevocationSet::clone(current);
                next.retain_unexpired(now);
                Arc::new(next)
            });
        }
    }
}

/// Locks a shard, recovering from poisoning (see the module documentation).
fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One budget counter, as exported for persistence.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BudgetEntry {
    /// The budget key.
    pub key: String,
    /// Start of the window the usage belongs to (ms since the epoch).
    pub start: Millis,
    /// Units used in that window.
    pub used: u64,
    /// End of the window (ms since the epoch): the entry is dropped then.
    pub expires_at: Millis,
}

/// A key's working copy during an admission.
struct Work<'k> {
    key: &'k str,
    /// Index into the admission's guards.
    guard: usize,
    slot: Option<Slot>,
    /// `Some` once a check changed `slot` (it must be written on commit).
    expires_at: Option<Millis>,
}

/// Stored state of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Slot {
    /// GCRA theoretical arrival time.
    Rate(Tat),
    /// Units used in the window starting at `start`.
    Budget { start: Millis, used: u64 },
    /// Expiry times of the leases held (expired ones are ignored and pruned on write).
    Leases(Vec<Millis>),
}

#[derive(Debug)]
struct Entry {
    slot: Slot,
    expires_at: Millis,
    /// The same allocation as the map key and the expiry index element.
    key: Arc<str>,
}

/// One shard: the entries and an index of them by expiry.
#[derive(Debug)]
struct Shard {
    cap: usize,
    map: HashMap<Arc<str>, Entry>,
    by_expiry: BTreeSet<(Millis, Arc<str>)>,
}

impl Shard {
    fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            map: HashMap::new(),
            by_expiry: BTreeSet::new(),
        }
    }

    fn get(&self, key: &str) -> Option<&Slot> {
        self.map.get(key).map(|e| &e.slot)
    }

    /// Stores `slot` for `key`, valid until `expires_at`. State that is already expired is
    /// equivalent to none and is removed instead.
    fn put(&mut self, now: Millis, key: &str, slot: Slot, expires_at: Millis) {
        if expires_at <= now {
            self.remove(key);
            return;
        }
        if let Some(entry) = self.map.get_mut(key) {
            if entry.expires_at != expires_at {
                let k = Arc::clone(&entry.key);
                self.by_expiry.remove(&(entry.expires_at, Arc::clone(&k)));
                self.by_expiry.insert((expires_at, k));
                entry.expires_at = expires_at;
            }
            entry.slot = slot;
            return;
        }
        self.make_room(now);
        let key: Arc<str> = Arc::from(key);
        self.by_expiry.insert((expires_at, Arc::clone(&key)));
        self.map.insert(
            Arc::clone(&key),
            Entry {
                slot,
                expires_at,
                key,
            },
        );
    }

    fn remove(&mut self, key: &str) {
        if let Some(entry) = self.map.remove(key) {
            self.by_expiry.remove(&(entry.expires_at, entry.key));
        }
    }

    /// Makes room for one more entry: expired entries first, then the soonest to expire.
    fn make_room(&mut self, now: Millis) {
        if self.map.len() < self.cap {
            return;
        }
        self.drop_expired(now);
        while self.map.len() >= self.cap {
            let Some((_, key)) = self.by_expiry.pop_first() else {
                break;
            };
            self.map.remove(&*key);
        }
    }

    /// Drops up to `max` expired entries; whether more may remain.
    fn drop_expired_batch(&mut self, now: Millis, max: usize) -> bool {
        for _ in 0..max {
            match self.by_expiry.first() {
                Some((expires_at, _)) if *expires_at <= now => {
                    if let Some((_, key)) = self.by_expiry.pop_first() {
                        self.map.remove(&*key);
                    }
                }
                _ => return false,
            }
        }
        true
    }

    fn drop_expired(&mut self, now: Millis) {
        while let Some((expires_at, _)) = self.by_expiry.first()
            && *expires_at <= now
        {
            if let Some((_, key)) = self.by_expiry.pop_first() {
                self.map.remove(&*key);
            }
        }
    }

    /// Drops the lease of `key` that expires last, if any.
    fn release(&mut self, now: Millis, key: &str) {
        let Some(Slot::Leases(leases)) = self.get(key) else {
            return;
        };
        let mut live: Vec<Millis> = leases.iter().copied().filter(|&e| e > now).collect();
        if let Some(last) = live
            .iter()
            .enumerate()
            .max_by_key(|&(_, e)| *e)
            .map(|(i, _)| i)
        {
            live.swap_remove(last);
        }
        match live.iter().max().copied() {
            Some(expires_at) => self.put(now, key, Slot::Leases(live), expires_at),
            None => self.remove(key),
        }
    }
}

/// Units used in the window starting at `start` (0 for another window or another kind).
fn budget_used(slot: Option<&Slot>, start: Millis) -> u64 {
    match slot {
        Some(Slot::Budget { start: s, used }) if *s == start => *used,
        _ => 0,
    }
}

/// Evaluates one check against `slot`. With `consume`, an allowed check returns its state after
/// this request and the slot to store (with its expiry; `None` when nothing changes). Otherwise,
/// or when refused, it returns the current state and whether a request would pass.
fn evaluate(
    now: Millis,
    kind: LimitKind,
    slot: Option<&Slot>,
    consume: bool,
) -> (LimitState, Option<(Slot, Millis)>) {
    match kind {
        LimitKind::Rate {
            limit,
            period_ms,
            burst,
        } => {
            let tat = match slot {
                Some(Slot::Rate(t)) => Some(*t),
                _ => None,
            };
            let d = if consume {
                gcra::check(now, tat, limit, period_ms, burst)
            } else {
                gcra::peek(now, tat, limit, period_ms, burst)
            };
            let state = LimitState {
                allowed: d.allowed,
                limit,
                remaining: d.remaining,
                reset_after_ms: d.reset_after_ms,
                retry_after_ms: d.retry_after_ms,
                used: 0,
            };
            let next = d
                .new_tat
                .map(|t| (Slot::Rate(t), gcra::expires_at(t, limit)));
            (state, next)
        }
        LimitKind::Budget {
            limit,
            window,
            cost,
        } => {
            let (start, end) = window.bounds(now);
            let used = budget_used(slot, start);
            let after = used.saturating_add(cost);
            let allowed = after <= limit;
            let reset_after_ms = end.saturating_sub(now);
            if allowed && consume {
                let state = LimitState {
                    allowed,
                    limit,
                    remaining: limit - after,
                    reset_after_ms,
                    retry_after_ms: None,
                    used: after,
                };
                let next = (cost > 0).then_some((Slot::Budget { start, used: after }, end));
                (state, next)
            } else {
                let state = LimitState {
                    allowed,
                    limit,
                    remaining: limit.saturating_sub(used),
                    reset_after_ms,
                    retry_after_ms: (!allowed).then_some(reset_after_ms.max(1)),
                    used,
                };
                (state, None)
            }
        }
        LimitKind::Concurrency { limit, lease_ms } => {
            let mut live: Vec<Millis> = match slot {
                Some(Slot::Leases(leases)) => leases.iter().copied().filter(|&e| e > now).collect(),
                _ => Vec::new(),
            };
            let held = u64::try_from(live.len()).unwrap_or(u64::MAX);
            let allowed = held < limit;
            if allowed && consume {
                live.push(now.saturating_add(lease_ms));
                let last = live.iter().max().copied().unwrap_or(now);
                let state = LimitState {
                    allowed,
                    limit,
                    remaining: limit - held - 1,
                    reset_after_ms: last - now,
                    retry_after_ms: None,
                    used: held + 1,
                };
                (state, Some((Slot::Leases(live), last)))
            } else {
                let first = live.iter().min().copied();
                let last = live.iter().max().copied().unwrap_or(now);
                let state = LimitState {
                    allowed,
                    limit,
                    remaining: limit.saturating_sub(held),
                    reset_after_ms: last - now,
                    // A lease frees a slot at its expiry at the latest; with no lease at all
                    // (limit 0) nothing ever frees one, lease_ms keeps Retry-After meaningful.
                    retry_after_ms: (!allowed).then(|| first.map_or(lease_ms, |f| f - now).max(1)),
                    used: held,
                };
                (state, None)
            }
        }
    }
}

/// Whether something that expires at `expires_at` (Unix seconds) is still kept at `now` (ms).
fn unexpired(now: Millis, expires_at: u64) -> bool {
    now < expires_at.saturating_mul(1_000)
}

fn rev_name(r: &Revocation) -> &str {
    match r {
        Revocation::Token { jti, .. } => jti,
        Revocation::Subject { subject, .. } => subject,
    }
}

#[derive(Debug, Clone)]
struct TokenRevocation {
    expires_at: u64,
    reason: String,
}

#[derive(Debug, Clone)]
struct SubjectRevocation {
    before: u64,
    expires_at: u64,
    reason: String,
}

/// An immutable snapshot of the revocations.
#[derive(Debug, Clone, Default)]
struct RevocationSet {
    tokens: HashMap<String, TokenRevocation>,
    subjects: HashMap<String, SubjectRevocation>,
}

impl RevocationSet {
    fn insert(&mut self, r: Revocation) {
        match r {
            Revocation::Token {
                jti,
                expires_at,
                reason,
            } => {
                let e = self.tokens.entry(jti).or_insert(TokenRevocation {
                    expires_at,
                    reason: String::new(),
                });
                e.expires_at = e.expires_at.max(expires_at);
                e.reason = reason;
            }
            Revocation::Subject {
                subject,
                before,
                expires_at,
                reason,
            } => {
                let e = self.subjects.entry(subject).or_insert(SubjectRevocation {
                    before,
                    expires_at,
                    reason: String::new(),
                });
                e.before = e.before.max(before);
                e.expires_at = e.expires_at.max(expires_at);
                e.reason = reason;
            }
        }
    }

    fn has_expired(&self, now: Millis) -> bool {
        self.tokens.values().any(|t| !unexpired(now, t.expires_at))
            || self
                .subjects
                .values()
                .any(|s| !unexpired(now, s.expires_at))
    }

    fn retain_unexpired(&mut self, now: Millis) {
        self.tokens.retain(|_, t| unexpired(now, t.expires_at));
        self.subjects.retain(|_, s| unexpired(now, s.expires_at));
    }
}

#[cfg(test)]
mod tests;
