//! GCRA (generic cell rate algorithm) as pure functions over integer milliseconds.
//!
//! # Model
//!
//! A limit of `limit` requests per `period_ms` has the emission interval `T = period_ms / limit`
//! milliseconds. The only state is the theoretical arrival time (TAT): the instant at which the
//! limit would be back to "full" if no further request arrived. A request at `now` moves it to
//! `new_tat = max(tat, now) + T` and is allowed when `new_tat - now <= burst * T`. From a fresh
//! state `burst` requests pass at the same instant; after that one request per `T`.
//!
//! # Exact arithmetic
//!
//! `T` is rarely a whole number of milliseconds (3 per second is 333.3 ms), and rounding it would
//! either drift from the configured rate or, when `limit > period_ms`, collapse to 0 and stop
//! limiting at all. So all arithmetic is done in *ticks* of `1 / limit` ms, where `T` is exactly
//! `period_ms` ticks and the tolerance `burst * T` is exactly `burst * period_ms` ticks.
//!
//! The TAT is kept as [`Tat`] `{ ms, rem }` = `ms + rem / limit` milliseconds. Every decision
//! only needs `ahead`, the distance of the TAT beyond `now` in ticks (0 when the TAT is in the
//! past), which is at most `(burst + 1) * period_ms`. A Lua port in a Redis script (numbers are
//! doubles, exact below 2^53) therefore never forms an absolute tick count: it computes
//! `ahead = max(0, (ms - now) * limit + rem)` and works from there. Here everything is `u128`,
//! where no product of two `u64` can overflow, and sums saturate.
//!
//! Degenerate parameters never panic: `limit == 0` refuses everything, `burst == 0` is treated as
//! 1 and `period_ms == 0` as 1.
//!
//! # Millisecond clock and high rates
//!
//! Requests that arrive in the same millisecond see the same `now`. A rate above one request per
//! millisecond (`limit > period_ms`) is therefore only reachable with
//! `burst >= ceil(limit / period_ms)`. And `burst == 1` is GCRA without tolerance: a request
//! that arrives a fraction of a millisecond after its slot restarts the schedule from its
//! arrival, so with a non-integral `T` a client polling every millisecond gets slightly less
//! than the rate (3 per second becomes one per 334 ms); `burst >= 2` reaches it exactly. In no
//! case does the long-run rate exceed `limit / period_ms` (plus the initial burst).

use super::Millis;

/// A theoretical arrival time: `ms + rem / limit` milliseconds since the epoch.
///
/// `rem < limit` for values produced here; a larger `rem` (e.g. read back from a corrupted store)
/// is still interpreted as `ms * limit + rem` ticks and never panics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Tat {
    /// Whole milliseconds.
    pub ms: Millis,
    /// Remainder in ticks of `1 / limit` ms.
    pub rem: u64,
}

/// The outcome of [`check`] or [`peek`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request passes.
    pub allowed: bool,
    /// The TAT to store. `Some` only when [`check`] allowed the request; `None` means "leave the
    /// stored state as it is".
    pub new_tat: Option<Tat>,
    /// How many more requests would pass at `now` (after this one, for [`check`]).
    pub remaining: u64,
    /// Milliseconds until the state is back to full (TAT <= now), rounded up.
    pub reset_after_ms: u64,
    /// On refusal, the exact number of milliseconds after which the same request passes:
    /// at `now + retry_after_ms` it passes, at `now + retry_after_ms - 1` it does not.
    /// `None` when allowed.
    pub retry_after_ms: Option<u64>,
}

/// Normalized parameters in ticks.
struct Params {
    /// Ticks per millisecond (`limit`, >= 1).
    per_ms: u128,
    /// Emission interval in ticks (`period_ms`, >= 1).
    t: u128,
    /// Tolerance in ticks (`burst * period_ms`).
    tau: u128,
}

impl Params {
    /// `None` when `limit == 0` (everything is refused).
    fn new(limit: u64, period_ms: u64, burst: u64) -> Option<Self> {
        if limit == 0 {
            return None;
        }
        let t = u128::from(period_ms.max(1));
        Some(Self {
            per_ms: u128::from(limit),
            t,
            tau: u128::from(burst.max(1)) * t,
        })
    }
}

/// How far, in ticks of `1 / limit` ms, `tat` lies beyond `now` (0 when fresh or in the past).
pub fn ahead(now: Millis, tat: Option<Tat>, limit: u64) -> u128 {
    let Some(tat) = tat else { return 0 };
    let per_ms = u128::from(limit.max(1));
    let tat_ticks = u128::from(tat.ms) * per_ms + u128::from(tat.rem);
    tat_ticks.saturating_sub(u128::from(now) * per_ms)
}

/// The first millisecond at which `tat` is no longer in the future, i.e. the state is back to
/// full and may be forgotten: `ceil(tat)`.
pub fn expires_at(tat: Tat, limit: u64) -> Millis {
    let per_ms = limit.max(1);
    tat.ms.saturating_add(tat.rem.div_ceil(per_ms))
}

/// Whether `tat` is equivalent to no state at all at `now`.
pub fn is_fresh(now: Millis, tat: Tat, limit: u64) -> bool {
    expires_at(tat, limit) <= now
}

/// Evaluates one request (cost 1) at `now` and, when it passes, returns the TAT to store.
pub fn check(now: Millis, tat: Option<Tat>, limit: u64, period_ms: u64, burst: u64) -> Decision {
    let Some(p) = Params::new(limit, period_ms, burst) else {
        return refuse_all(period_ms);
    };
    let ahead = ahead(now, tat, limit);
    let ahead_new = ahead.saturating_add(p.t);
    if ahead_new <= p.tau {
        Decision {
            allowed: true,
            new_tat: Some(tat_at(now, ahead_new, p.per_ms)),
            remaining: to_u64((p.tau - ahead_new) / p.t),
            reset_after_ms: ceil_ms(ahead_new, p.per_ms),
            retry_after_ms: None,
        }
    } else {
        Decision {
            allowed: false,
            new_tat: None,
            remaining: 0,
            reset_after_ms: ceil_ms(ahead, p.per_ms),
            retry_after_ms: Some(ceil_ms(ahead_new - p.tau, p.per_ms)),
        }
    }
}

/// Like [`check`] without consuming: whether one request would pass at `now`, how many would
/// (`remaining`, counting that one), and when the state is full again. `new_tat` is always
/// `None`.
pub fn peek(now: Millis, tat: Option<Tat>, limit: u64, period_ms: u64, burst: u64) -> Decision {
    let Some(p) = Params::new(limit, period_ms, burst) else {
        return refuse_all(period_ms);
    };
    let ahead = ahead(now, tat, limit);
    let ahead_new = ahead.saturating_add(p.t);
    let allowed = ahead_new <= p.tau;
    Decision {
        allowed,
        new_tat: None,
        // Requests k = 1.. pass while ahead + k*T <= tau.
        remaining: to_u64(p.tau.saturating_sub(ahead) / p.t),
        reset_after_ms: ceil_ms(ahead, p.per_ms),
        retry_after_ms: (!allowed).then(|| ceil_ms(ahead_new - p.tau, p.per_ms)),
    }
}

/// `limit == 0`: nothing ever passes. There is no exact retry time; `period_ms` (at least 1) is
/// reported so that a `Retry-After` header stays meaningful.
fn refuse_all(period_ms: u64) -> Decision {
    Decision {
        allowed: false,
        new_tat: None,
        remaining: 0,
        reset_after_ms: 0,
        retry_after_ms: Some(period_ms.max(1)),
    }
}

/// The TAT `ahead` ticks after `now`.
fn tat_at(now: Millis, ahead: u128, per_ms: u128) -> Tat {
    Tat {
        ms: now.saturating_add(to_u64(ahead / per_ms)),
        // < per_ms, which came from a u64.
        rem: to_u64(ahead % per_ms),
    }
}

/// `ticks` rounded up to whole milliseconds.
fn ceil_ms(ticks: u128, per_ms: u128) -> u64 {
    to_u64(ticks.div_ceil(per_ms))
}

fn to_u64(v: u128) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Applies `check` and returns the decision, updating `tat` when allowed.
    fn hit(tat: &mut Option<Tat>, now: Millis, limit: u64, period: u64, burst: u64) -> Decision {
        let d = check(now, *tat, limit, period, burst);
        if let Some(t) = d.new_tat {
            *tat = Some(t);
        }
        d
    }

    #[test]
    fn burst_then_steady_rate() {
        // 10 per second, T = 100 ms, burst 3.
        let mut tat = None;
        for expected_remaining in [2, 1, 0] {
            let d = hit(&mut tat, 1_000, 10, 1_000, 3);
            assert!(d.allowed);
            assert_eq!(d.remaining, expected_remaining);
            assert_eq!(d.retry_after_ms, None);
        }
        assert_eq!(tat, Some(Tat { ms: 1_300, rem: 0 }));
        let d = hit(&mut tat, 1_000, 10, 1_000, 3);
        assert_eq!(
            d,
            Decision {
                allowed: false,
                new_tat: None,
                remaining: 0,
                reset_after_ms: 300,
                retry_after_ms: Some(100),
            }
        );
        // Steady state: exactly one request every 100 ms.
        for i in 1..=50u64 {
            let t = 1_000 + i * 100;
            assert!(!hit(&mut tat, t - 1, 10, 1_000, 3).allowed, "at {}", t - 1);
            let d = hit(&mut tat, t, 10, 1_000, 3);
            assert!(d.allowed, "at {t}");
            assert_eq!(d.remaining, 0);
            assert_eq!(d.reset_after_ms, 300);
            assert!(!hit(&mut tat, t, 10, 1_000, 3).allowed);
        }
        // Idle long enough: full burst again.
        let t = 1_000 + 50 * 100 + 300;
        assert_eq!(peek(t, tat, 10, 1_000, 3).remaining, 3);
        assert!(is_fresh(t, tat.unwrap_or_default(), 10));
        assert!(!is_fresh(t - 1, tat.unwrap_or_default(), 10));
    }

    #[test]
    fn fractional_interval_is_exact() {
        // 3 per second, burst 2: T = 333.33 ms, no rounding drift. After the burst at 0, the
        // n-th further request passes at ceil(n * 1000 / 3).
        let mut tat = None;
        let mut allowed_at = Vec::new();
        for now in 0..3_000 {
            while hit(&mut tat, now, 3, 1_000, 2).allowed {
                allowed_at.push(now);
            }
        }
        assert_eq!(
            allowed_at,
            [0, 0, 334, 667, 1000, 1334, 1667, 2000, 2334, 2667]
        );
        // Over a long run exactly 3 per second (plus the one extra of the burst).
        let mut tat = None;
        let count = (0..600_000)
            .filter(|&now| hit(&mut tat, now, 3, 1_000, 2).allowed)
            .count();
        assert_eq!(count, 1_801);
    }

    #[test]
    fn burst_one_does_not_bank_lateness() {
        // burst 1 is GCRA without tolerance: a request arriving 0.67 ms after its slot restarts
        // the schedule from its arrival, so on a millisecond clock T = 333.33 becomes 334.
        let mut tat = None;
        let allowed_at: Vec<u64> = (0..3_000)
            .filter(|&now| hit(&mut tat, now, 3, 1_000, 1).allowed)
            .collect();
        assert_eq!(
            allowed_at,
            [0, 334, 668, 1002, 1336, 1670, 2004, 2338, 2672]
        );
        // With an integral T nothing is lost.
        let mut tat = None;
        let count = (0..10_000)
            .filter(|&now| hit(&mut tat, now, 4, 1_000, 1).allowed)
            .count();
        assert_eq!(count, 40);
    }

    #[test]
    fn retry_after_is_exact_exhaustively() {
        for limit in 1..=7u64 {
            for period in [1u64, 3, 7, 10, 1_000] {
                for burst in 1..=4u64 {
                    let mut tat = None;
                    let mut now = 5_000u64;
                    let mut refusals = 0;
                    // Hammer at a fixed instant then follow retry_after exactly, 20 times.
                    while refusals < 20 {
                        let d = hit(&mut tat, now, limit, period, burst);
                        if d.allowed {
                            continue;
                        }
                        refusals += 1;
                        let r = d.retry_after_ms.unwrap_or(0);
                        assert!(r >= 1, "limit={limit} period={period} burst={burst}");
                        let before = peek(now + r - 1, tat, limit, period, burst);
                        assert!(
                            !before.allowed,
                            "passes early: limit={limit} period={period} burst={burst} now={now} r={r}"
                        );
                        assert_eq!(before.remaining, 0);
                        assert_eq!(before.retry_after_ms, Some(1));
                        let at = peek(now + r, tat, limit, period, burst);
                        assert!(
                            at.allowed,
                            "still refused: limit={limit} period={period} burst={burst} now={now} r={r}"
                        );
                        now += r;
                    }
                }
            }
        }
    }

    #[test]
    fn remaining_counts_what_passes() {
        for limit in 1..=5u64 {
            for period in [1u64, 4, 1_000] {
                for burst in 1..=5u64 {
                    for idle in [0u64, 1, 150, 400] {
                        let mut tat = None;
                        // Partly drain, then wait `idle`.
                        for _ in 0..burst / 2 + 1 {
                            hit(&mut tat, 100, limit, period, burst);
                        }
                        let now = 100 + idle;
                        let predicted = peek(now, tat, limit, period, burst).remaining;
                        let mut passed = 0;
                        while hit(&mut tat, now, limit, period, burst).allowed {
                            passed += 1;
                        }
                        assert_eq!(
                            passed, predicted,
                            "limit={limit} period={period} burst={burst} idle={idle}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn reset_after_is_when_state_is_full() {
        let mut tat = None;
        hit(&mut tat, 0, 3, 1_000, 3);
        let d = hit(&mut tat, 0, 3, 1_000, 3);
        // Two requests: TAT = 666.67 ms.
        assert_eq!(d.reset_after_ms, 667);
        assert_eq!(tat.map(|t| expires_at(t, 3)), Some(667));
        assert_eq!(peek(666, tat, 3, 1_000, 3).remaining, 2);
        assert_eq!(peek(667, tat, 3, 1_000, 3).remaining, 3);
        assert_eq!(peek(667, tat, 3, 1_000, 3).reset_after_ms, 0);
    }

    #[test]
    fn high_rate_needs_burst_per_millisecond() {
        // 10,000 per second = 10 per ms; burst 10 reaches it.
        let mut tat = None;
        let mut count = 0;
        for now in 0..1_000 {
            while hit(&mut tat, now, 10_000, 1_000, 10).allowed {
                count += 1;
            }
        }
        assert_eq!(count, 10_000);
        // Burst 1: one per ms, never more than the configured rate.
        let mut tat = None;
        let mut count = 0;
        for now in 0..1_000 {
            while hit(&mut tat, now, 10_000, 1_000, 1).allowed {
                count += 1;
            }
        }
        assert_eq!(count, 1_000);
    }

    #[test]
    fn limit_zero_refuses_everything() {
        for now in [0, 1, 1_000_000, u64::MAX] {
            let d = check(now, None, 0, 1_000, 5);
            assert!(!d.allowed);
            assert_eq!(d.new_tat, None);
            assert_eq!(d.remaining, 0);
            assert_eq!(d.retry_after_ms, Some(1_000));
            assert!(!peek(now, None, 0, 1_000, 5).allowed);
        }
    }

    #[test]
    fn degenerate_parameters_do_not_panic() {
        let big = u64::MAX;
        for (limit, period, burst) in [
            (big, big, big),
            (1, big, big),
            (big, 1, 1),
            (1, 0, 0),
            (big, 0, big),
        ] {
            for now in [0, 1, big - 1, big] {
                let mut tat = Some(Tat { ms: big, rem: big });
                let _ = hit(&mut tat, now, limit, period, burst);
                let mut tat = None;
                for _ in 0..3 {
                    let _ = hit(&mut tat, now, limit, period, burst);
                }
                let _ = peek(now, tat, limit, period, burst);
                let _ = tat.map(|t| expires_at(t, limit));
            }
        }
        // burst 0 behaves as 1, period 0 as 1.
        assert_eq!(check(0, None, 1, 1_000, 0), check(0, None, 1, 1_000, 1));
        assert_eq!(check(0, None, 2, 0, 1), check(0, None, 2, 1, 1));
    }

    #[test]
    fn ahead_ignores_past_tat() {
        let tat = Some(Tat { ms: 100, rem: 1 });
        assert_eq!(ahead(200, tat, 3), 0);
        assert_eq!(ahead(100, tat, 3), 1);
        assert_eq!(ahead(99, tat, 3), 4);
        assert_eq!(ahead(0, None, 3), 0);
    }
}
