//! Memory of keyed rate-limit state under a flood of distinct clients (not a timed test):
//! feeds 1 M distinct random client IPs through `StateStore::admit` with the key format and
//! GCRA parameters of a policy-wide `rate_limit: { key: ip, limit: 60, per: 1m, burst: 10 }`,
//! then sweeps once every key's state has expired. Prints the entries held and the process RSS
//! (from /proc/self/status: peak `VmHWM`, current `VmRSS`) at each step.
//!
//! Run: `cargo bench --bench limiter_keys` (optionally `-- KEYS MAX_ENTRIES`).

use std::task::{Context, Poll, Waker};
use std::time::Instant;

use fortress::store::memory::{DEFAULT_MAX_ENTRIES, MemoryStore};
use fortress::store::{Admission, LimitCheck, LimitKind, StateStore};

/// `VmHWM` and `VmRSS` in KiB (0 where /proc is unavailable).
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn admit(store: &MemoryStore, now: u64, checks: &[LimitCheck<'_>]) -> Admission {
    let mut fut = store.admit(now, checks);
    let mut cx = Context::from_waker(Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(Ok(a)) => a,
        // The in-memory store answers at once and never fails.
        _ => unreachable!("MemoryStore::admit is always ready"),
    }
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with('-'));
    let keys: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let max_entries: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(DEFAULT_MAX_ENTRIES);
    let store = MemoryStore::new(max_entries);
    let kind = LimitKind::Rate {
        limit: 60,
        period_ms: 60_000,
        burst: 10,
    };
    let (_, base) = rss_kib();
    println!("limiter_keys: {keys} distinct client IPs, max_entries {max_entries}");
    println!("baseline                 rss {base:>8} KiB");
    // xorshift64*: distinct-enough random IPv4 addresses without a crate.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let start_ms: u64 = 1_767_225_600_000;
    let started = Instant::now();
    let mut key = String::with_capacity(64);
    let mut refused = 0u64;
    for i in 0..keys {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let ip = (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as u32;
        let ip = std::net::Ipv4Addr::from(ip);
        key.clear();
        key.push_str("rl|default|b92a44e09e777ab5|ip:");
        key.push_str(&ip.to_string());
        // 1 M keys over 100 s of traffic (10 k new clients per second).
        let now = start_ms + i / 10;
        let a = admit(&store, now, &[LimitCheck { key: &key, kind }]);
        refused += u64::from(!a.allowed);
    }
    let took = started.elapsed();
    let (peak, rss) = rss_kib();
    println!(
        "after {keys} admits     rss {rss:>8} KiB  peak {peak:>8} KiB  entries {:>8}  ({:.0} ns/admit, {refused} refused)",
        store.len(),
        took.as_nanos() as f64 / keys as f64
    );
    // Every state is back to "fresh" one period after the last request: swept.
    let later = start_ms + keys / 10 + 60_000;
    let started = Instant::now();
    store.sweep(later);
    let took = started.elapsed();
    let (peak, rss) = rss_kib();
    println!(
        "after sweep              rss {rss:>8} KiB  peak {peak:>8} KiB  entries {:>8}  (sweep {} ms)",
        store.len(),
        took.as_millis()
    );
    // The freed memory is reused: a second flood does not raise the peak much.
    for i in 0..keys {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let ip = std::net::Ipv4Addr::from((x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as u32);
        key.clear();
        key.push_str("rl|default|b92a44e09e777ab5|ip:");
        key.push_str(&ip.to_string());
        admit(&store, later + i / 10, &[LimitCheck { key: &key, kind }]);
    }
    let (peak, rss) = rss_kib();
    println!(
        "after a second flood     rss {rss:>8} KiB  peak {peak:>8} KiB  entries {:>8}",
        store.len()
    );
}
