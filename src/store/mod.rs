//! The live state store: state of a running fortress instance that is not part of the policy and
//! must survive policy reloads. Rate limits, budgets, concurrency slots, revocations and
//! toggle overrides. [`MemoryStore`] keeps it in process; a Redis backend will share it between
//! instances ([`redis::RedisStore`], docs/shared-state.md). This module imports nothing from
//! the rest of the crate.
//!
//! This documentation is the contract every backend implements.
//!
//! # Clock
//!
//! Time is [`Millis`], milliseconds since the Unix epoch (UTC), and is always passed in by the
//! caller; a store never reads a clock. The caller uses wall-clock time (`SystemTime`), so
//! calendar windows line up with UTC days and months, and tests control time exactly. The
//! algorithms tolerate a clock that goes backwards (state simply looks further in the future;
//! nothing underflows). Instances sharing a store must keep their clocks synchronized (NTP): a
//! skew of `s` ms between instances shows up as up to `s` ms of error in the limits.
//!
//! Revocation times ([`Revocation`]'s `expires_at`, `before` and a token's `iat`) are Unix
//! **seconds**, as in JWT claims; a revocation is kept while `now < expires_at * 1000`.
//!
//! # Keys
//!
//! The caller builds each [`LimitCheck::key`] fully qualified: the limit's id, a fingerprint of
//! its specification (kind and parameters) and the keyed value (client, subject, tenant ...).
//! A store treats keys as opaque. A key's stored state is interpreted with the parameters of the
//! check that reads it; because the fingerprint is in the key, those parameters never change
//! under an existing state. Should a key nevertheless hold state of another kind, that state is
//! treated as absent and replaced.
//!
//! # Limits
//!
//! * [`LimitKind::Rate`]: GCRA, see [`gcra`]. Each request costs 1. Emission interval
//!   `T = period_ms / limit` (exact, not rounded), up to `burst` requests at once, then one per
//!   `T`. `retry_after_ms` is exact at millisecond resolution. `limit == 0` refuses everything.
//! * [`LimitKind::Budget`]: a fixed-window counter. A request of `cost` units is refused when
//!   `used + cost > limit`, so once [`StateStore::charge`] has overdrawn a budget even a cost-0
//!   request is refused until the window ends. The window is a UTC calendar day or month, or a
//!   fixed period aligned to the epoch ([`Window::bounds`]); a new window starts from 0 and the
//!   old window's state is dropped. `retry_after_ms` is the time to the window end (a cost
//!   larger than `limit` never passes; it is still the window end).
//! * [`LimitKind::Concurrency`]: `limit` slots. An allowed admission takes a lease that is held
//!   until [`StateStore::release`] or until `lease_ms` passes (so a crashed or lost request
//!   cannot leak a slot forever). `release` names keys, not leases: it drops the lease of that
//!   key that expires last (the one that would otherwise block longest; a lease already lost to
//!   a crash then still expires on time). Releasing a key that holds no lease does nothing;
//!   counts never underflow. `retry_after_ms` is when the next lease expires, an upper bound
//!   (a release may free a slot earlier). `lease_ms == 0` gives a lease that is expired at once.
//!
//! # Atomicity: one call, all or nothing
//!
//! [`StateStore::admit`] is the only call on the request path before forwarding, and it is
//! atomic: every check is evaluated and, only if all pass, all are consumed. A refusal by one
//! check consumes nothing of the others (no rate tokens, budget units or slots). Checks are
//! evaluated in order; a key that appears twice sees the first occurrence's consumption. The
//! returned [`Admission::states`] has one entry per check, same order: for a refused admission,
//! the refusing checks report their refusal and the others their current, unconsumed state.
//! `release` and `charge` are separate, later calls (response end); they are atomic per key.
//!
//! # Expiry and memory
//!
//! Every piece of state has an expiry after which it is equivalent to no state at all: a rate
//! limit when its TAT has passed (back to a full burst), a budget at its window end, a lease at
//! its `lease_ms`, a revocation at its `expires_at`. Expired state is ignored on read and dropped
//! by [`StateStore::sweep`] (called periodically) or by key TTLs in a backend that has them.
//! A store may be bounded: [`MemoryStore`] evicts expired entries first, then the entry that
//! expires soonest; it never refuses a request because it is full. Evicting limit state forgets
//! consumption (fails open for that key), which is why the bound should be generous.
//!
//! # Policy reloads
//!
//! The store lives in the long-lived application state, not in the compiled policy, so a reload
//! keeps everything: a limit whose specification is unchanged keeps its counters; a changed one
//! gets a new fingerprint, hence new keys starting fresh, and the old keys expire on their own.
//! Revocations and toggle overrides are operational state and survive reloads unchanged (an
//! override of a toggle the new policy no longer has is kept and simply unused).
//!
//! # Revocations and toggles
//!
//! [`StateStore::is_revoked`] and [`StateStore::toggle`] are synchronous and lock-free: they are
//! read on every request. A token is revoked when its `jti` has an unexpired
//! [`Revocation::Token`], or its subject has an unexpired [`Revocation::Subject`] and its `iat` is
//! `< before` or **missing** (fail closed). Revoking the same `jti` or subject again merges:
//! `before` and `expires_at` become the maximum of old and new, the reason is the new one. There
//! is no un-revoke; a revocation ends at its expiry. A revocation that is already expired when written
//! is ignored. A toggle override is `Some(bool)` until cleared with `None`; it never expires.
//!
//! # Errors
//!
//! [`StoreError::Unavailable`] means the backend could not answer (network, Redis down). The
//! caller decides per limit whether that fails open or closed. [`MemoryStore`] never returns it.
//!
//! # A Redis backend must
//!
//! * use the same algorithms with the same results: [`gcra`] (ported to the script as the
//!   relative-tick arithmetic described there, state stored as the two integers of
//!   [`gcra::Tat`]), budgets keyed per window with window bounds computed by the caller in Rust
//!   ([`Window::bounds`]) and passed in, leases as a sorted set of expiry times;
//! * read time from the Redis server (`TIME` in the script) for rate limits, leases and budget
//!   periods, not from the caller's `now`: replicas with skewed clocks then share one schedule
//!   (the drift of limiters that trust each client's clock). Its tests therefore run in real
//!   time; the arithmetic is the same as here, and the in-memory tests pin it with a
//!   controlled clock;
//! * answer `admit` in **one round trip**: one `EVALSHA` of a script that receives all keys and
//!   parameters, checks everything, then writes everything (a Redis script runs atomically, which
//!   gives all-or-nothing). In Redis Cluster all keys of one admission must hash to one slot
//!   (a hash tag), otherwise the atomicity cannot be kept;
//! * set a TTL (`PEXPIREAT`) on every key at its expiry, which replaces `sweep` for limit state;
//! * write revocations and toggles to Redis and keep a **local mirror** (an immutable snapshot
//!   behind an atomic pointer) that answers `is_revoked` and `toggle` without I/O, updated on
//!   local writes at once and from other instances by pub/sub plus a periodic full resync; when
//!   Redis is unreachable the mirror keeps its last contents (revocations stay revoked until they
//!   expire) and `sweep` prunes expired entries from it;
//! * return [`StoreError::Unavailable`] instead of blocking a request when Redis does not answer
//!   within its timeout (or, configured so, decide on a local share of each limit);
//! * report a mirror that has not synced for its `max_staleness` as [`StateStore::is_stale`],
//!   and share throttled clients ([`StateStore::block`], [`StateStore::blocked`]) so the
//!   check before authentication needs no round trip.

pub mod classes;
pub mod gcra;
pub mod live;
pub mod memory;
pub mod persist;
pub mod persist_admin;
pub mod redis;

use std::future::Future;
use std::pin::Pin;

pub use memory::MemoryStore;

/// A boxed future returned by the asynchronous store operations.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Why a store operation failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    /// The backend could not answer (e.g. Redis unreachable).
    #[error("state store unavailable: {0}")]
    Unavailable(String),
}

/// Time as milliseconds since the Unix epoch; always passed in by the caller (tests control the
/// clock).
pub type Millis = u64;

/// Milliseconds in a UTC day.
pub const DAY_MS: Millis = 86_400_000;

/// One limit to check for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitCheck<'a> {
    /// Fully qualified key: limit id, fingerprint of its spec, and the keyed value.
    pub key: &'a str,
    /// What kind of limit and its parameters.
    pub kind: LimitKind,
}

/// The kind of a limit and its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitKind {
    /// GCRA: `limit` requests per `period_ms`, up to `burst` at once (>= 1; 0 counts as 1).
    /// Each request costs 1.
    Rate {
        /// Requests per period.
        limit: u64,
        /// The period in milliseconds (0 counts as 1).
        period_ms: u64,
        /// Requests allowed at once from a full state.
        burst: u64,
    },
    /// Fixed-window counter: refused when `used + cost > limit`.
    Budget {
        /// Units per window.
        limit: u64,
        /// The window.
        window: Window,
        /// Units this request costs.
        cost: u64,
    },
    /// `limit` slots, each held until released or until `lease_ms` passes.
    Concurrency {
        /// Slots.
        limit: u64,
        /// Lease duration in milliseconds (crash safety).
        lease_ms: u64,
    },
}

impl LimitKind {
    /// The configured limit.
    pub fn limit(&self) -> u64 {
        match *self {
            Self::Rate { limit, .. }
            | Self::Budget { limit, .. }
            | Self::Concurrency { limit, .. } => limit,
        }
    }
}

/// A budget window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Window {
    /// A UTC calendar day, `[00:00, next 00:00)`.
    Day,
    /// A UTC calendar month, `[1st 00:00, next month's 1st 00:00)`.
    Month,
    /// `[k * period_ms, (k + 1) * period_ms)` aligned to the epoch (0 counts as 1).
    Fixed {
        /// Window length in milliseconds.
        period_ms: u64,
    },
}

impl Window {
    /// The window containing `now`: `(start, end)`, `start <= now < end` (except that `end`
    /// saturates at `u64::MAX` at the very end of time).
    pub fn bounds(&self, now: Millis) -> (Millis, Millis) {
        match *self {
            Self::Day => {
                let start = now - now % DAY_MS;
                (start, start.saturating_add(DAY_MS))
            }
            Self::Month => {
                let days = now / DAY_MS;
                let (y, m, _) = civil_from_days(days);
                let start = days_from_civil(y, m, 1);
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                let end = days_from_civil(ny, nm, 1);
                (start.saturating_mul(DAY_MS), end.saturating_mul(DAY_MS))
            }
            Self::Fixed { period_ms } => {
                let p = period_ms.max(1);
                let start = now - now % p;
                (start, start.saturating_add(p))
            }
        }
    }
}

/// The state of one limit after a check (or a charge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitState {
    /// Whether this check passed (for `charge`: whether the budget is not overdrawn).
    pub allowed: bool,
    /// The configured limit.
    pub limit: u64,
    /// How many more requests (rate, concurrency) or units (budget) would pass now.
    pub remaining: u64,
    /// Milliseconds until the limit is back to full (rate: burst refilled; budget: window end;
    /// concurrency: last current lease expires).
    pub reset_after_ms: u64,
    /// `Some` only when refused (or a budget overdrawn by `charge`): milliseconds to wait.
    pub retry_after_ms: Option<u64>,
    /// Budgets: units used in the window after this request. Concurrency: slots held after this
    /// request. Rate: 0.
    pub used: u64,
}

impl LimitState {
    /// A budget's state after a [`StateStore::charge`] left `used` units in a window that ends
    /// in `reset_after_ms` (every backend answers a charge the same way).
    pub fn after_charge(limit: u64, used: u64, reset_after_ms: u64) -> Self {
        let allowed = used <= limit;
        Self {
            allowed,
            limit,
            remaining: limit.saturating_sub(used),
            reset_after_ms,
            retry_after_ms: (!allowed).then_some(reset_after_ms.max(1)),
            used,
        }
    }
}

/// The answer to [`StateStore::admit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// Whether every check passed (and everything was consumed).
    pub allowed: bool,
    /// One state per check, in the same order.
    pub states: Vec<LimitState>,
}

/// A revocation entry. Times are Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Revocation {
    /// One token by its `jti`.
    Token {
        /// The token id.
        jti: String,
        /// Unix seconds; kept until then (the token's own `exp` is enough).
        expires_at: u64,
        /// Why, for the audit trail.
        reason: String,
    },
    /// Every token of a subject issued before a time.
    Subject {
        /// The subject (`sub`).
        subject: String,
        /// Tokens with `iat < before` (or no `iat`) are revoked.
        before: u64,
        /// Unix seconds; kept until then (`before` + the longest token lifetime).
        expires_at: u64,
        /// Why, for the audit trail.
        reason: String,
    },
}

impl Revocation {
    /// When the entry may be forgotten (Unix seconds).
    pub fn expires_at(&self) -> u64 {
        match self {
            Self::Token { expires_at, .. } | Self::Subject { expires_at, .. } => *expires_at,
        }
    }
}

/// The live state store. See the module documentation for the contract.
pub trait StateStore: Send + Sync + std::fmt::Debug {
    /// Checks every limit; only if ALL pass is anything consumed (all-or-nothing), in one call
    /// per request. A refusal by one check must not consume tokens/units/slots of the others.
    fn admit<'a>(&'a self, now: Millis, checks: &'a [LimitCheck<'a>])
    -> StoreFuture<'a, Admission>;

    /// Gives back concurrency slots taken by an allowed admit (keys of the Concurrency checks).
    /// Idempotence not required but must never underflow.
    fn release<'a>(&'a self, now: Millis, keys: &'a [&'a str]) -> StoreFuture<'a, ()>;

    /// Adds units to a budget after the fact (cost metered by the app in a response header);
    /// never refused, returns the new state.
    fn charge<'a>(
        &'a self,
        now: Millis,
        key: &'a str,
        limit: u64,
        window: Window,
        units: u64,
    ) -> StoreFuture<'a, LimitState>;

    /// Records a revocation (merged with an existing one for the same jti/subject).
    fn revoke<'a>(&'a self, now: Millis, r: Revocation) -> StoreFuture<'a, ()>;

    /// The unexpired revocations: tokens by jti, then subjects by name.
    fn revocations<'a>(&'a self, now: Millis) -> StoreFuture<'a, Vec<Revocation>>;

    /// Synchronous, lock-free read on the request path (the Redis backend will answer it from a
    /// local mirror). `issued_at` is the token's `iat` in Unix seconds; a missing `iat` counts as
    /// revoked when the subject is revoked.
    fn is_revoked(
        &self,
        now: Millis,
        jti: Option<&str>,
        subject: &str,
        issued_at: Option<u64>,
    ) -> bool;

    /// Sets (`Some`) or clears (`None`) a toggle override.
    fn set_toggle<'a>(&'a self, name: &'a str, value: Option<bool>) -> StoreFuture<'a, ()>;

    /// Synchronous, lock-free read of a toggle override.
    fn toggle(&self, name: &str) -> Option<bool>;

    /// Every toggle override, sorted by name.
    fn toggles<'a>(&'a self) -> StoreFuture<'a, Vec<(String, bool)>>;

    /// Drops expired state (limits whose state is back to "fresh", budgets of past windows,
    /// expired leases and revocations). Called periodically.
    fn sweep(&self, now: Millis);

    /// Whether other instances write to this store too (a Redis backend): then a caller may
    /// not skip a read because *this* process wrote nothing recently. The in-memory store is
    /// not shared.
    fn is_shared(&self) -> bool {
        false
    }

    /// Whether the local copy of shared state (revocations, toggle overrides, throttled
    /// clients) is too old to be trusted: a shared store that has not synced for its
    /// `max_staleness`. Requests that depend on it are refused (503 `state_unavailable`). The
    /// in-memory store is its own source of truth and never stale.
    fn is_stale(&self) -> bool {
        false
    }

    /// A shared store: milliseconds for which `key` (a client throttled for failed
    /// authentication) stays blocked on every instance, from the local mirror (no I/O).
    /// The in-memory store answers `None` (its callers read the counter itself).
    fn blocked(&self, _now: Millis, _key: &str) -> Option<Millis> {
        None
    }

    /// Blocks `key` until `until` (ms) on every instance sharing the store (a shared store
    /// only; the in-memory store does nothing).
    fn block<'a>(&'a self, _key: &'a str, _until: Millis) -> StoreFuture<'a, ()> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// Days since 1970-01-01 → (year, month 1..=12, day 1..=31), proleptic Gregorian.
/// Howard Hinnant's `civil_from_days`, restricted to non-negative days (no negative eras).
pub fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097; // [0, 146096]
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// (year >= 1970, month 1..=12, day 1..=31) → days since 1970-01-01. Inverse of
/// [`civil_from_days`]. Saturates at 0 for dates before the epoch.
pub fn days_from_civil(y: u64, m: u64, d: u64) -> u64 {
    let y = if m <= 2 { y.saturating_sub(1) } else { y };
    let era = y / 400;
    let yoe = y - era * 400; // [0, 399]
    let mp = if m > 2 { m - 3 } else { m + 9 }; // [0, 11]
    let doy = (153 * mp + 2) / 5 + d.saturating_sub(1); // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    (era.saturating_mul(146_097).saturating_add(doe)).saturating_sub(719_468)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unix ms of a UTC date-time.
    fn at(y: u64, m: u64, d: u64, hh: u64, mm: u64, ss: u64, ms: u64) -> Millis {
        days_from_civil(y, m, d) * DAY_MS + ((hh * 60 + mm) * 60 + ss) * 1_000 + ms
    }

    #[test]
    fn civil_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        // 2024-02-29T00:00:00Z = 1709164800 s.
        assert_eq!(days_from_civil(2024, 2, 29) * 86_400, 1_709_164_800);
        assert_eq!(civil_from_days(1_709_164_800 / 86_400), (2024, 2, 29));
        // 2000-03-01 = 11017 days; 2100-03-01 = 47541 days (2100 is not a leap year).
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(
            days_from_civil(2000, 3, 1) - days_from_civil(2000, 2, 1),
            29
        );
        assert_eq!(
            days_from_civil(2100, 3, 1) - days_from_civil(2100, 2, 1),
            28
        );
        assert_eq!(
            days_from_civil(2023, 3, 1) - days_from_civil(2023, 2, 1),
            28
        );
        assert_eq!(
            days_from_civil(2024, 1, 1) - days_from_civil(2023, 12, 31),
            1
        );
    }

    #[test]
    fn civil_round_trip_and_continuity() {
        // 1970 .. ~2520: every day maps to a valid date, consecutive days are consecutive dates.
        let mut prev = civil_from_days(0);
        for days in 0..200_000u64 {
            let (y, m, d) = civil_from_days(days);
            assert!((1..=12).contains(&m) && (1..=31).contains(&d));
            assert_eq!(days_from_civil(y, m, d), days);
            if days > 0 {
                let next_ok = (y, m, d) == (prev.0, prev.1, prev.2 + 1)
                    || (d == 1 && ((y, m) == (prev.0, prev.1 + 1) || (y, m) == (prev.0 + 1, 1)));
                assert!(next_ok, "{prev:?} -> {:?}", (y, m, d));
            }
            prev = (y, m, d);
        }
    }

    #[test]
    fn day_bounds() {
        let now = at(2024, 3, 10, 23, 59, 59, 999);
        let start = at(2024, 3, 10, 0, 0, 0, 0);
        assert_eq!(Window::Day.bounds(now), (start, start + DAY_MS));
        assert_eq!(
            Window::Day.bounds(now + 1),
            (start + DAY_MS, start + 2 * DAY_MS)
        );
    }

    #[test]
    fn month_bounds() {
        let cases = [
            // (a time in the month, month start, next month start)
            ((2024, 2, 29), (2024, 2, 1), (2024, 3, 1)),
            ((2023, 2, 28), (2023, 2, 1), (2023, 3, 1)),
            ((2023, 12, 31), (2023, 12, 1), (2024, 1, 1)),
            ((2024, 1, 1), (2024, 1, 1), (2024, 2, 1)),
            ((1970, 1, 15), (1970, 1, 1), (1970, 2, 1)),
        ];
        for ((y, m, d), (sy, sm, sd), (ey, em, ed)) in cases {
            let start = at(sy, sm, sd, 0, 0, 0, 0);
            let end = at(ey, em, ed, 0, 0, 0, 0);
            for now in [at(y, m, d, 0, 0, 0, 0), at(y, m, d, 23, 59, 59, 999)] {
                assert_eq!(Window::Month.bounds(now), (start, end), "{y}-{m}-{d}");
            }
            assert_eq!(Window::Month.bounds(end - 1), (start, end));
            assert_eq!(Window::Month.bounds(end).0, end);
        }
        let feb = Window::Month.bounds(at(2024, 2, 10, 12, 0, 0, 0));
        assert_eq!(feb.1 - feb.0, 29 * DAY_MS);
    }

    #[test]
    fn fixed_bounds_and_extremes() {
        assert_eq!(
            Window::Fixed { period_ms: 1_000 }.bounds(2_500),
            (2_000, 3_000)
        );
        assert_eq!(Window::Fixed { period_ms: 0 }.bounds(7), (7, 8));
        assert_eq!(Window::Fixed { period_ms: 10 }.bounds(u64::MAX).1, u64::MAX);
        let (s, e) = Window::Day.bounds(u64::MAX);
        assert_eq!((s, e), (u64::MAX - u64::MAX % DAY_MS, u64::MAX));
        let (s, e) = Window::Month.bounds(u64::MAX);
        assert!(s < e);
    }
}
