//! Tests of the in-memory store.
use std::task::{Context, Poll, Waker};

use super::super::{DAY_MS, StoreError, days_from_civil};
use super::*;

/// Polls a store future once: `MemoryStore` futures are always ready.
fn run<T>(mut f: StoreFuture<'_, T>) -> Result<T, StoreError> {
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(r) => r,
        Poll::Pending => Err(StoreError::Unavailable("pending".into())),
    }
}

fn admit(s: &dyn StateStore, now: Millis, checks: &[LimitCheck<'_>]) -> Admission {
    run(s.admit(now, checks)).expect("admit")
}

fn rate(key: &str, limit: u64, period_ms: u64, burst: u64) -> LimitCheck<'_> {
    LimitCheck {
        key,
        kind: LimitKind::Rate {
            limit,
            period_ms,
            burst,
        },
    }
}

fn budget(key: &str, limit: u64, window: Window, cost: u64) -> LimitCheck<'_> {
    LimitCheck {
        key,
        kind: LimitKind::Budget {
            limit,
            window,
            cost,
        },
    }
}

fn conc(key: &str, limit: u64, lease_ms: u64) -> LimitCheck<'_> {
    LimitCheck {
        key,
        kind: LimitKind::Concurrency { limit, lease_ms },
    }
}

fn at(y: u64, m: u64, d: u64, hh: u64, mm: u64, ss: u64, ms: u64) -> Millis {
    days_from_civil(y, m, d) * DAY_MS + ((hh * 60 + mm) * 60 + ss) * 1_000 + ms
}

fn state(
    allowed: bool,
    limit: u64,
    remaining: u64,
    reset: u64,
    retry: Option<u64>,
    used: u64,
) -> LimitState {
    LimitState {
        allowed,
        limit,
        remaining,
        reset_after_ms: reset,
        retry_after_ms: retry,
        used,
    }
}

fn keys(s: &MemoryStore) -> Vec<String> {
    let mut all: Vec<String> = s
        .shards
        .iter()
        .flat_map(|sh| {
            lock(sh)
                .map
                .keys()
                .map(|k| k.to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    all.sort();
    all
}

#[test]
fn rate_burst_steady_and_retry_after() {
    let s = MemoryStore::new(100);
    // 2 per second, burst 2: T = 500 ms.
    let c = [rate("r", 2, 1_000, 2)];
    assert_eq!(admit(&s, 0, &c).states, [state(true, 2, 1, 500, None, 0)]);
    assert_eq!(admit(&s, 0, &c).states, [state(true, 2, 0, 1_000, None, 0)]);
    let refused = admit(&s, 0, &c);
    assert!(!refused.allowed);
    assert_eq!(refused.states, [state(false, 2, 0, 1_000, Some(500), 0)]);
    assert_eq!(admit(&s, 499, &c).states[0].retry_after_ms, Some(1));
    assert!(admit(&s, 500, &c).allowed);
    // Steady: one every 500 ms, never earlier.
    for t in (1_000..20_000).step_by(500) {
        assert!(!admit(&s, t - 1, &c).allowed, "at {}", t - 1);
        assert!(admit(&s, t, &c).allowed, "at {t}");
        assert!(!admit(&s, t, &c).allowed, "twice at {t}");
    }
}

#[test]
fn all_or_nothing_across_rates_and_budget() {
    let s = MemoryStore::new(100);
    let a = rate("a", 10, 1_000, 5);
    let b = rate("b", 1, 60_000, 1);
    let c = budget("c", 10, Window::Day, 3);
    assert!(admit(&s, 0, &[b]).allowed);

    // b refuses: neither a nor c is consumed; they report their current state.
    let r = admit(&s, 10, &[a, b, c]);
    assert!(!r.allowed);
    assert_eq!(
        r.states,
        [
            state(true, 10, 5, 0, None, 0),
            state(false, 1, 0, 59_990, Some(59_990), 0),
            state(true, 10, 10, DAY_MS - 10, None, 0),
        ]
    );
    assert_eq!(admit(&s, 10, &[a]).states[0].remaining, 4);
    assert_eq!(admit(&s, 10, &[c]).states[0].used, 3);

    // A budget refusal consumes nothing of two passing rate limits nor of a slot.
    let big = budget("c", 10, Window::Day, 8);
    let d = rate("d", 1, 1_000, 1);
    let k = conc("k", 1, 5_000);
    let r = admit(&s, 20, &[a, d, big, k]);
    assert!(!r.allowed);
    assert_eq!(
        r.states.iter().map(|st| st.allowed).collect::<Vec<_>>(),
        [true, true, false, true]
    );
    assert_eq!(
        r.states[2],
        state(false, 10, 7, DAY_MS - 20, Some(DAY_MS - 20), 3)
    );
    assert_eq!(r.states[3], state(true, 1, 1, 0, None, 0));
    assert!(admit(&s, 20, &[d]).allowed);
    assert_eq!(admit(&s, 20, &[k]).states[0].used, 1);
    assert_eq!(admit(&s, 20, &[a]).states[0].remaining, 3);

    // When everything passes, everything is consumed.
    let r = admit(&s, 60_000, &[a, b, c]);
    assert!(r.allowed);
    assert_eq!(r.states[1], state(true, 1, 0, 60_000, None, 0));
    assert_eq!(r.states[2].used, 6);
    assert!(!admit(&s, 60_000, &[b]).allowed);
}

#[test]
fn duplicate_key_sees_first_consumption() {
    let s = MemoryStore::new(100);
    let d = rate("d", 1, 1_000, 1);
    let r = admit(&s, 0, &[d, d]);
    assert!(!r.allowed);
    assert!(r.states[0].allowed && !r.states[1].allowed);
    // Nothing consumed.
    assert!(admit(&s, 0, &[d]).allowed);
}

#[test]
fn empty_admission_is_allowed() {
    let s = MemoryStore::new(10);
    assert_eq!(
        admit(&s, 0, &[]),
        Admission {
            allowed: true,
            states: vec![]
        }
    );
}

#[test]
fn budget_daily_rollover_at_utc_midnight() {
    let s = MemoryStore::new(100);
    let c = [budget("day", 5, Window::Day, 2)];
    let t = at(2024, 3, 10, 23, 59, 59, 0);
    assert_eq!(admit(&s, t, &c).states, [state(true, 5, 3, 1_000, None, 2)]);
    assert_eq!(admit(&s, t, &c).states, [state(true, 5, 1, 1_000, None, 4)]);
    assert_eq!(
        admit(&s, t, &c).states,
        [state(false, 5, 1, 1_000, Some(1_000), 4)]
    );
    let last = at(2024, 3, 10, 23, 59, 59, 999);
    assert_eq!(
        admit(&s, last, &c).states,
        [state(false, 5, 1, 1, Some(1), 4)]
    );
    let midnight = at(2024, 3, 11, 0, 0, 0, 0);
    assert_eq!(
        admit(&s, midnight, &c).states,
        [state(true, 5, 3, DAY_MS, None, 2)]
    );
}

#[test]
fn budget_monthly_rollover() {
    let s = MemoryStore::new(100);
    let c = [budget("month", 1, Window::Month, 1)];
    // Leap year: Feb 29 -> Mar 1 (31 days in March).
    let feb29 = at(2024, 2, 29, 23, 59, 59, 999);
    assert_eq!(admit(&s, feb29, &c).states, [state(true, 1, 0, 1, None, 1)]);
    assert_eq!(
        admit(&s, feb29, &c).states,
        [state(false, 1, 0, 1, Some(1), 1)]
    );
    let mar1 = at(2024, 3, 1, 0, 0, 0, 0);
    assert_eq!(
        admit(&s, mar1, &c).states,
        [state(true, 1, 0, 31 * DAY_MS, None, 1)]
    );
    assert!(!admit(&s, at(2024, 3, 31, 23, 59, 59, 999), &c).allowed);

    // Year end: Dec 31 -> Jan 1.
    let c = [budget("year-end", 1, Window::Month, 1)];
    let dec31 = at(2023, 12, 31, 23, 59, 59, 999);
    assert!(admit(&s, dec31, &c).allowed);
    assert_eq!(admit(&s, dec31, &c).states[0].retry_after_ms, Some(1));
    let jan1 = at(2024, 1, 1, 0, 0, 0, 0);
    assert_eq!(
        admit(&s, jan1, &c).states,
        [state(true, 1, 0, 31 * DAY_MS, None, 1)]
    );

    // February of a leap year is 29 days long.
    let c = [budget("feb", 1, Window::Month, 1)];
    let feb1 = at(2024, 2, 1, 0, 0, 0, 0);
    assert_eq!(admit(&s, feb1, &c).states[0].reset_after_ms, 29 * DAY_MS);
}

#[test]
fn charge_beyond_limit() {
    let s = MemoryStore::new(100);
    let t = at(2024, 5, 5, 12, 0, 0, 0);
    let reset = 12 * 3_600_000;
    assert!(admit(&s, t, &[budget("k", 10, Window::Day, 4)]).allowed);
    assert_eq!(
        run(s.charge(t, "k", 10, Window::Day, 20)),
        Ok(state(false, 10, 0, reset, Some(reset), 24))
    );
    // Overdrawn: even cost 0 is refused until the window ends.
    assert_eq!(
        admit(&s, t, &[budget("k", 10, Window::Day, 0)]).states,
        [state(false, 10, 0, reset, Some(reset), 24)]
    );
    assert!(!admit(&s, t, &[budget("k", 10, Window::Day, 1)]).allowed);
    assert_eq!(
        run(s.charge(t, "k", 10, Window::Day, 0)).map(|st| st.used),
        Ok(24)
    );
    // Next day: fresh.
    assert_eq!(
        admit(&s, t + reset, &[budget("k", 10, Window::Day, 1)]).states,
        [state(true, 10, 9, DAY_MS, None, 1)]
    );
    // Within the limit a charge reports allowed; huge charges saturate.
    assert_eq!(
        run(s.charge(t, "fresh", 10, Window::Day, 10)),
        Ok(state(true, 10, 0, reset, None, 10))
    );
    let _ = run(s.charge(t, "sat", 10, Window::Day, u64::MAX));
    assert_eq!(
        run(s.charge(t, "sat", 10, Window::Day, u64::MAX)).map(|st| st.used),
        Ok(u64::MAX)
    );
}

#[test]
fn budget_and_concurrency_limit_zero() {
    let s = MemoryStore::new(100);
    assert!(!admit(&s, 0, &[budget("z", 0, Window::Day, 1)]).allowed);
    assert!(admit(&s, 0, &[budget("z", 0, Window::Day, 0)]).allowed);
    assert_eq!(
        admit(&s, 0, &[conc("z0", 0, 700)]).states,
        [state(false, 0, 0, 0, Some(700), 0)]
    );
    assert!(!admit(&s, 0, &[rate("zr", 0, 1_000, 1)]).allowed);
}

#[test]
fn concurrency_acquire_release_expiry_no_underflow() {
    let s = MemoryStore::new(100);
    let c = [conc("c", 2, 1_000)];
    assert_eq!(admit(&s, 0, &c).states, [state(true, 2, 1, 1_000, None, 1)]);
    assert_eq!(
        admit(&s, 100, &c).states,
        [state(true, 2, 0, 1_000, None, 2)]
    );
    // Full: the earliest lease (expires at 1000) frees a slot at the latest.
    assert_eq!(
        admit(&s, 200, &c).states,
        [state(false, 2, 0, 900, Some(800), 2)]
    );

    run(s.release(300, &["c"])).expect("release");
    assert_eq!(
        admit(&s, 300, &c).states,
        [state(true, 2, 0, 1_000, None, 2)]
    );

    // Releasing more often than acquired never underflows.
    for _ in 0..5 {
        run(s.release(400, &["c", "unknown"])).expect("release");
    }
    assert_eq!(
        admit(&s, 400, &c).states,
        [state(true, 2, 1, 1_000, None, 1)]
    );
    run(s.release(400, &["c"])).expect("release");
    assert!(s.is_empty());

    // A lease that is never released expires after lease_ms.
    assert!(admit(&s, 1_000, &c).allowed);
    assert!(admit(&s, 1_000, &c).allowed);
    assert!(!admit(&s, 1_999, &c).allowed);
    assert_eq!(
        admit(&s, 2_000, &c).states,
        [state(true, 2, 1, 1_000, None, 1)]
    );

    // Releasing a key of another kind does nothing.
    let r = [rate("r", 1, 1_000, 1)];
    assert!(admit(&s, 0, &r).allowed);
    run(s.release(0, &["r"])).expect("release");
    assert!(!admit(&s, 0, &r).allowed);
}

#[test]
fn release_frees_the_lease_that_expires_last() {
    let s = MemoryStore::new(100);
    let c = [conc("c", 2, 1_000)];
    assert!(admit(&s, 0, &c).allowed); // expires 1000 (say, its holder crashed)
    assert!(admit(&s, 500, &c).allowed); // expires 1500
    run(s.release(600, &["c"])).expect("release");
    // The leaked lease is the one left, and it expires at 1000, not 1500.
    assert_eq!(admit(&s, 999, &c).states[0].used, 2);
    run(s.release(999, &["c"])).expect("release");
    assert_eq!(admit(&s, 1_000, &c).states[0].used, 1);
}

#[test]
fn revocation_by_jti_with_expiry() {
    let s = MemoryStore::new(10);
    let r = Revocation::Token {
        jti: "t1".into(),
        expires_at: 100,
        reason: "leaked".into(),
    };
    run(s.revoke(1_000, r.clone())).expect("revoke");
    assert!(s.is_revoked(99_999, Some("t1"), "bob", Some(1)));
    assert!(!s.is_revoked(99_999, Some("t2"), "bob", Some(1)));
    assert!(!s.is_revoked(99_999, None, "bob", None));
    assert_eq!(run(s.revocations(50_000)), Ok(vec![r]));
    assert!(!s.is_revoked(100_000, Some("t1"), "bob", Some(1)));
    assert_eq!(run(s.revocations(100_000)), Ok(vec![]));

    // Already expired when written: ignored.
    run(s.revoke(
        200_000,
        Revocation::Token {
            jti: "old".into(),
            expires_at: 200,
            reason: String::new(),
        },
    ))
    .expect("revoke");
    assert!(!s.is_revoked(199_000, Some("old"), "bob", None));

    // Revoking again extends, never shortens.
    for expires_at in [300, 250] {
        run(s.revoke(
            200_000,
            Revocation::Token {
                jti: "t3".into(),
                expires_at,
                reason: format!("r{expires_at}"),
            },
        ))
        .expect("revoke");
    }
    assert!(s.is_revoked(299_999, Some("t3"), "bob", None));
    assert_eq!(
        run(s.revocations(200_000)),
        Ok(vec![Revocation::Token {
            jti: "t3".into(),
            expires_at: 300,
            reason: "r250".into()
        }])
    );
}

#[test]
fn subject_revocation_by_iat() {
    let s = MemoryStore::new(10);
    let r = Revocation::Subject {
        subject: "alice".into(),
        before: 1_000,
        expires_at: 5_000,
        reason: "offboarded".into(),
    };
    run(s.revoke(0, r.clone())).expect("revoke");
    let now = 2_000_000;
    assert!(s.is_revoked(now, None, "alice", Some(999)));
    assert!(!s.is_revoked(now, None, "alice", Some(1_000)));
    assert!(!s.is_revoked(now, Some("j"), "alice", Some(1_001)));
    // Missing iat: fail closed.
    assert!(s.is_revoked(now, None, "alice", None));
    assert!(s.is_revoked(now, Some("j"), "alice", None));
    assert!(!s.is_revoked(now, None, "bob", None));
    // Expired.
    assert!(!s.is_revoked(5_000_000, None, "alice", None));
    // Merge keeps the later cut-off.
    run(s.revoke(
        0,
        Revocation::Subject {
            subject: "alice".into(),
            before: 500,
            expires_at: 5_000,
            reason: "again".into(),
        },
    ))
    .expect("revoke");
    assert!(s.is_revoked(now, None, "alice", Some(999)));

    // Listing: tokens by jti, then subjects by name.
    let token = Revocation::Token {
        jti: "a".into(),
        expires_at: 5_000,
        reason: String::new(),
    };
    run(s.revoke(0, token.clone())).expect("revoke");
    let listed = run(s.revocations(now)).expect("list");
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0], token);
    assert!(
        matches!(&listed[1], Revocation::Subject { subject, before: 1_000, .. } if subject == "alice")
    );
}

#[test]
fn toggle_overrides_set_and_clear() {
    let s = MemoryStore::new(10);
    assert_eq!(s.toggle("x"), None);
    run(s.set_toggle("x", Some(true))).expect("set");
    assert_eq!(s.toggle("x"), Some(true));
    run(s.set_toggle("x", Some(false))).expect("set");
    assert_eq!(s.toggle("x"), Some(false));
    run(s.set_toggle("a", Some(true))).expect("set");
    assert_eq!(
        run(s.toggles()),
        Ok(vec![("a".to_owned(), true), ("x".to_owned(), false)])
    );
    run(s.set_toggle("x", None)).expect("clear");
    run(s.set_toggle("never-set", None)).expect("clear");
    assert_eq!(s.toggle("x"), None);
    assert_eq!(run(s.toggles()), Ok(vec![("a".to_owned(), true)]));
}

#[test]
fn sweep_drops_expired() {
    let s = MemoryStore::new(100);
    assert!(
        admit(
            &s,
            0,
            &[
                rate("r", 1, 1_000, 1),
                budget("b", 10, Window::Fixed { period_ms: 5_000 }, 1),
                conc("c", 3, 3_000),
            ]
        )
        .allowed
    );
    run(s.revoke(
        0,
        Revocation::Token {
            jti: "j".into(),
            expires_at: 4,
            reason: String::new(),
        },
    ))
    .expect("revoke");
    assert_eq!(s.len(), 3);
    s.sweep(999);
    assert_eq!(s.len(), 3);
    s.sweep(1_000);
    assert_eq!(keys(&s), ["b", "c"]);
    s.sweep(3_000);
    assert_eq!(keys(&s), ["b"]);
    assert_eq!(s.revocations.load().tokens.len(), 1);
    s.sweep(4_000);
    assert!(s.revocations.load().tokens.is_empty());
    s.sweep(5_000);
    assert!(s.is_empty());
    // A swept rate limit is fresh again.
    assert!(admit(&s, 5_000, &[rate("r", 1, 1_000, 1)]).allowed);
}

#[test]
fn capacity_bound_under_flood() {
    let s = MemoryStore::new(256);
    let mut last = String::new();
    for i in 0..20_000u64 {
        last = format!("flood:{i}");
        // All three kinds, none expiring during the flood.
        let check = match i % 3 {
            0 => budget(
                &last,
                10,
                Window::Fixed {
                    period_ms: 3_600_000,
                },
                1,
            ),
            1 => conc(&last, 1, 3_600_000),
            _ => rate(&last, 1, 3_600_000, 1),
        };
        assert!(admit(&s, i, &[check]).allowed);
        if i % 1_000 == 0 {
            assert!(s.len() <= 256);
        }
    }
    // 32 shards of 8 entries each, all full.
    assert_eq!(s.len(), 256);
    // The most recent key, which expires last, is still tracked.
    assert_eq!(last, "flood:19999");
    assert!(!admit(&s, 20_000, &[conc(&last, 1, 3_600_000)]).allowed);
}

#[test]
fn eviction_drops_expired_then_soonest() {
    let s = MemoryStore::with_shards(3, 1);
    for (key, period) in [("a", 300), ("b", 100), ("c", 200)] {
        assert!(admit(&s, 0, &[rate(key, 1, period, 1)]).allowed);
    }
    assert!(admit(&s, 0, &[rate("d", 1, 400, 1)]).allowed);
    assert_eq!(keys(&s), ["a", "c", "d"]);
    // At 250, "c" (200) has expired: it goes first, although "a" (300) is live.
    assert!(admit(&s, 250, &[rate("e", 1, 1_000, 1)]).allowed);
    assert_eq!(keys(&s), ["a", "d", "e"]);
    // No expired entry: the soonest to expire ("a", 300) is evicted.
    assert!(admit(&s, 250, &[rate("f", 1, 1_000, 1)]).allowed);
    assert_eq!(keys(&s), ["d", "e", "f"]);
    assert_eq!(s.len(), 3);
}

#[test]
fn tiny_capacities_never_panic() {
    for max in [0, 1, 2] {
        let s = MemoryStore::new(max);
        for i in 0..50u64 {
            let k = format!("k{i}");
            let _ = admit(
                &s,
                i,
                &[
                    rate(&k, 1, 10, 1),
                    budget("b", 5, Window::Day, 1),
                    conc(&k, 1, 5),
                ],
            );
            run(s.release(i, &[&k])).expect("release");
        }
        assert!(s.len() <= max.max(1));
    }
}

#[test]
fn concurrent_admissions_are_atomic() {
    let s = MemoryStore::new(10_000);
    let allowed = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|scope| {
        for t in 0..4 {
            let (s, allowed) = (&s, &allowed);
            scope.spawn(move || {
                for i in 0..100 {
                    // Lock order differs per thread only in which keys come first.
                    let own = format!("own:{t}:{i}");
                    let checks = [
                        rate("shared-rate", 50, 1_000, 50),
                        budget("shared-budget", 1_000, Window::Day, 1),
                        rate(&own, 1, 1_000, 1),
                    ];
                    if admit(s, 0, &checks).allowed {
                        allowed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
    });
    assert_eq!(allowed.into_inner(), 50);
    assert_eq!(
        admit(&s, 0, &[budget("shared-budget", 1_000, Window::Day, 0)]).states[0].used,
        50
    );
}

#[test]
fn poisoned_shard_is_recovered() {
    let s = MemoryStore::with_shards(10, 1);
    let _ = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let _guard = s.shards[0].lock();
                panic!("poison the shard");
            })
            .join()
    });
    assert!(s.shards[0].is_poisoned());
    assert!(admit(&s, 0, &[rate("p", 1, 1_000, 1)]).allowed);
    assert!(!admit(&s, 0, &[rate("p", 1, 1_000, 1)]).allowed);
    s.sweep(1_000);
    assert!(s.is_empty());
}

#[test]
fn usable_as_shared_trait_object() {
    let s: Arc<dyn StateStore> = Arc::new(MemoryStore::new(8));
    let checks = [rate("x", 1, 1_000, 1)];
    assert!(admit(&*s, 0, &checks).allowed);
    assert!(format!("{s:?}").contains("MemoryStore"));
}

#[test]
fn budgets_export_and_import_round_trip() {
    let s = MemoryStore::new(64);
    let now = at(2026, 3, 10, 12, 0, 0, 0);
    assert!(admit(&s, now, &[budget("b|day|t1", 100, Window::Day, 7)]).allowed);
    assert!(admit(&s, now, &[budget("b|month|t1", 1_000, Window::Month, 9)]).allowed);
    assert!(admit(&s, now, &[rate("rl|x", 5, 1_000, 5)]).allowed);
    let out = s.export_budgets(now);
    assert_eq!(out.len(), 2, "rate state is not exported: {out:?}");
    assert_eq!(out[0].key, "b|day|t1");
    assert_eq!(out[0].used, 7);
    assert_eq!(out[0].start, at(2026, 3, 10, 0, 0, 0, 0));
    assert_eq!(out[0].expires_at, at(2026, 3, 11, 0, 0, 0, 0));

    let fresh = MemoryStore::new(64);
    fresh.import_budgets(now, &out);
    let st = admit(&fresh, now, &[budget("b|day|t1", 100, Window::Day, 0)]).states[0];
    assert_eq!(st.used, 7);
    let st = admit(
        &fresh,
        now,
        &[budget("b|month|t1", 1_000, Window::Month, 0)],
    )
    .states[0];
    assert_eq!(st.used, 9);
    // The next day, the day entry is of a past window: not imported.
    let later = MemoryStore::new(64);
    later.import_budgets(at(2026, 3, 11, 0, 0, 0, 0), &out);
    assert_eq!(keys(&later), vec!["b|month|t1".to_owned()]);
    // An import never lowers usage already counted.
    assert!(admit(&fresh, now, &[budget("b|day|t1", 100, Window::Day, 50)]).allowed);
    fresh.import_budgets(now, &out);
    let st = admit(&fresh, now, &[budget("b|day|t1", 100, Window::Day, 0)]).states[0];
    assert_eq!(st.used, 57);
}
