//! Scrape-time metrics: the state other parts publish (audit writer, JWKS, serving
//! certificate), read when `/metrics` is scraped and appended to the registry's text in the
//! Prometheus text format. Nothing here runs on the request path.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};

use crate::audit::AuditStats;
use crate::auth::jwks::JwksStats;

/// Hex digits of the chain head hash published as `fortress_audit_chain_head_hash_prefix`:
/// 13 digits are 52 bits, exact in a float64 sample.
pub const HASH_PREFIX_DIGITS: usize = 13;

/// What the instance attached at startup.
#[derive(Debug, Default)]
pub struct Attached {
    pub audit: OnceLock<Arc<AuditStats>>,
    pub jwks: OnceLock<Arc<JwksStats>>,
    pub cert_expiry: OnceLock<Arc<AtomicI64>>,
    pub store: OnceLock<Arc<crate::store::redis::StoreHealth>>,
    pub upstream_owned: OnceLock<UpstreamCounts>,
}

/// Upstream connections owned by client connections, and those of them parked.
pub type UpstreamCounts = (
    Arc<std::sync::atomic::AtomicUsize>,
    Arc<std::sync::atomic::AtomicUsize>,
);

/// Metric types of the text format.
#[derive(Clone, Copy)]
pub enum Kind {
    Counter,
    Gauge,
}

/// Writes one metric family with a single unlabelled sample.
pub fn family(out: &mut String, name: &str, kind: Kind, help: &str, value: f64) {
    let kind = match kind {
        Kind::Counter => "counter",
        Kind::Gauge => "gauge",
    };
    let _infallible = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

/// Unix time now, in seconds (0 if the system clock is before 1970).
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The first [`HASH_PREFIX_DIGITS`] hex digits of `hash` as an integer (`None` when the hash
/// is shorter or not hex).
pub fn hash_prefix(hash: &str) -> Option<u64> {
    let prefix = hash.get(..HASH_PREFIX_DIGITS)?;
    u64::from_str_radix(prefix, 16).ok()
}

impl Attached {
    /// Appends the attached families to `out` (the registry's text).
    pub fn render(&self, out: &mut Vec<u8>) {
        let mut s = String::with_capacity(2048);
        self.render_audit(&mut s);
        self.render_jwks(&mut s);
        self.render_store(&mut s);
        if let Some((owned, parked)) = self.upstream_owned.get() {
            family(
                &mut s,
                "fortress_upstream_owned_connections",
                Kind::Gauge,
                "Upstream connections owned by HTTP/1.1 client connections, parked ones included (connection affinity; the pool's are not counted).",
                owned.load(Ordering::Relaxed) as f64,
            );
            family(
                &mut s,
                "fortress_upstream_parked_connections",
                Kind::Gauge,
                "Owned upstream connections parked between client connections (idle or closed clients).",
                parked.load(Ordering::Relaxed) as f64,
            );
        }
        if let Some(t) = self.cert_expiry.get() {
            let not_after = t.load(Ordering::Relaxed);
            if not_after > 0 {
                family(
                    &mut s,
                    "fortress_tls_cert_expiry_timestamp_seconds",
                    Kind::Gauge,
                    "notAfter of the serving certificate (the first of the chain), Unix seconds.",
                    not_after as f64,
                );
            }
        }
        out.extend_from_slice(s.as_bytes());
    }

    fn render_store(&self, s: &mut String) {
        let Some(h) = self.store.get() else {
            // The in-memory store always answers (alerts can watch one series everywhere).
            family(
                s,
                "fortress_store_up",
                Kind::Gauge,
                "1 while the state store answers (always 1 for the in-memory store).",
                1.0,
            );
            return;
        };
        let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed) as f64;
        family(
            s,
            "fortress_store_up",
            Kind::Gauge,
            "1 while the state store answers (always 1 for the in-memory store).",
            if h.up.load(Ordering::Relaxed) {
                1.0
            } else {
                0.0
            },
        );
        family(
            s,
            "fortress_store_errors_total",
            Kind::Counter,
            "Shared state store calls that failed or timed out.",
            load(&h.errors),
        );
        family(
            s,
            "fortress_store_local_decisions_total",
            Kind::Counter,
            "Requests whose limits were decided locally because the shared store failed (on_store_error: allow_local).",
            load(&h.local_decisions),
        );
        family(
            s,
            "fortress_store_sync_age_seconds",
            Kind::Gauge,
            "Seconds since the local copy of revocations and toggles last synced with the shared store (-1: never).",
            h.sync_age_secs().unwrap_or(-1.0),
        );
    }

    fn render_audit(&self, s: &mut String) {
        let Some(a) = self.audit.get() else {
            family(
                s,
                "fortress_audit_enabled",
                Kind::Gauge,
                "1 when the audit trail is on.",
                0.0,
            );
            return;
        };
        let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed) as f64;
        family(
            s,
            "fortress_audit_enabled",
            Kind::Gauge,
            "1 when the audit trail is on.",
            1.0,
        );
        family(
            s,
            "fortress_audit_queue_depth",
            Kind::Gauge,
            "Audit records waiting for the writer.",
            a.queued.load(Ordering::Relaxed) as f64,
        );
        family(
            s,
            "fortress_audit_records_written_total",
            Kind::Counter,
            "Audit records written to the sink.",
            load(&a.written),
        );
        family(
            s,
            "fortress_audit_write_errors_total",
            Kind::Counter,
            "Audit batches whose write failed (the sink then fails closed until it recovers).",
            load(&a.write_errors),
        );
        family(
            s,
            "fortress_audit_records_refused_total",
            Kind::Counter,
            "Audit records refused (queue full or sink failing): their requests got 503 audit_unavailable.",
            load(&a.refused),
        );
        family(
            s,
            "fortress_audit_sink_up",
            Kind::Gauge,
            "1 when the audit sink is healthy, 0 while it fails (fortress fails closed).",
            if a.failing.load(Ordering::Relaxed) {
                0.0
            } else {
                1.0
            },
        );
        // The chain anchor: absent before the first record.
        if let Some((seq, hash)) = a.head() {
            family(
                s,
                "fortress_audit_chain_head_seq",
                Kind::Gauge,
                "seq of the last audit record written (the chain head).",
                seq as f64,
            );
            if let Some(prefix) = hash_prefix(&hash) {
                family(
                    s,
                    "fortress_audit_chain_head_hash_prefix",
                    Kind::Gauge,
                    "The first 13 hex digits of the chain head's hash, as an integer.",
                    prefix as f64,
                );
            }
        }
    }

    fn render_jwks(&self, s: &mut String) {
        let Some(j) = self.jwks.get() else { return };
        let ok = j.fetch_ok.load(Ordering::Relaxed);
        let error = j.fetch_error.load(Ordering::Relaxed);
        let _infallible = writeln!(
            s,
            "# HELP fortress_jwks_fetch_total JWKS fetch attempts by result.\n\
             # TYPE fortress_jwks_fetch_total counter\n\
             fortress_jwks_fetch_total{{result=\"ok\"}} {ok}\n\
             fortress_jwks_fetch_total{{result=\"error\"}} {error}"
        );
        let last_ok = j.last_ok_unix_ms.load(Ordering::Relaxed);
        if last_ok > 0 {
            let age = (unix_now() - last_ok as f64 / 1000.0).max(0.0);
            family(
                s,
                "fortress_jwks_age_seconds",
                Kind::Gauge,
                "Seconds since the current JWKS source was last fetched successfully.",
                age,
            );
        }
    }
}
