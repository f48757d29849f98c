//! The running audit trail: the writer plus what every record goes through on its way in
//! (redaction), and the rule of what happens when the writer cannot take a record.
//!
//! * Request records ([`Trail::submit_request`]): `strict` returns a receiver the response
//!   waits on; `batched` returns at once. Either way a record the writer refuses (queue full,
//!   sink failing) is an error, and the request path answers 503 `audit_unavailable`.
//! * Events nobody waits for (startup, reloads, stream violations, budget crossings):
//!   [`Trail::event`]; a refused event is logged (once per state change, by the writer).
//!
//! The writer's settings (directory, stdout, fsync, queue, retention, HMAC key) are fixed at
//! startup; a reload that changes them is refused (see [`Trail::reload_conflict`]), so a reload
//! can never turn the trail off or move it silently.

use std::sync::Arc;

use aws_lc_rs::hmac;
use tokio::sync::oneshot;

use super::chain::{ChainKey, hex};
use super::record::{Event, Record};
use super::writer::{AuditError, AuditStats, Writer, WriterSettings};
use crate::clock::Clock;
use crate::policy::audit::{AuditSettings, Redact};

/// A record the response waits for (`strict`).
pub type Ack = oneshot::Receiver<Result<(), AuditError>>;

/// The audit trail of a running fortress.
#[derive(Debug)]
pub struct Trail {
    writer: Writer,
    /// A full queue was logged and has not cleared since (one log line per state change).
    queue_full: std::sync::atomic::AtomicBool,
    /// What the writer was started with (a reload must not change it).
    fixed: Fixed,
}

/// The settings a reload cannot change.
#[derive(Debug, Clone, PartialEq)]
struct Fixed {
    dir: Option<std::path::PathBuf>,
    stdout: bool,
    fsync: bool,
    queue: usize,
    retention_days: Option<u32>,
    max_total_size: Option<u64>,
    hmac_key: Option<String>,
}

impl Fixed {
    fn of(s: &AuditSettings) -> Self {
        Self {
            dir: s.dir.clone(),
            stdout: s.stdout,
            fsync: s.fsync,
            queue: s.queue,
            retention_days: s.retention_days,
            max_total_size: s.max_total_size,
            hmac_key: s.hmac_key.clone(),
        }
    }
}

impl Trail {
    /// Opens the trail (continuing the chain) and starts the writer.
    pub fn start(settings: &AuditSettings, clock: Arc<Clock>) -> Result<Self, String> {
        let writer = Writer::start(
            WriterSettings {
                dir: settings.dir.clone(),
                stdout: settings.stdout,
                fsync: settings.fsync,
                queue: settings.queue,
                retention_days: settings.retention_days,
                max_total_size: settings.max_total_size,
                key: settings
                    .hmac_key
                    .as_ref()
                    .map(|k| ChainKey::new(k.as_bytes())),
            },
            clock,
        )?;
        Ok(Self {
            writer,
            queue_full: std::sync::atomic::AtomicBool::new(false),
            fixed: Fixed::of(settings),
        })
    }

    /// The writer's counters (metrics).
    pub fn stats(&self) -> &Arc<AuditStats> {
        self.writer.stats()
    }

    /// Whether a record would be taken now (the sink is not failing). Checked before a
    /// request that will need a record is forwarded, so the upstream never acts on a request
    /// whose record cannot be written.
    pub fn available(&self) -> bool {
        !self
            .writer
            .stats()
            .failing
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Queues a request's record, redacted as `settings` say. `strict`: the receiver answers
    /// once the record is written; `batched`: `None`.
    pub fn submit_request(
        &self,
        mut record: Record,
        settings: &AuditSettings,
        strict: bool,
    ) -> Result<Option<Ack>, AuditError> {
        redact(&mut record, settings);
        let sent = if strict {
            self.writer.submit_acked(record).map(Some)
        } else {
            self.writer.submit(record).map(|()| None)
        };
        self.note(&sent);
        sent
    }

    /// Logs a full queue once when it fills and once when it clears (a failing sink is logged
    /// by the writer).
    fn note<T>(&self, sent: &Result<T, AuditError>) {
        use std::sync::atomic::Ordering;
        match sent {
            Err(AuditError::QueueFull) => {
                if !self.queue_full.swap(true, Ordering::AcqRel) {
                    tracing::error!(
                        "audit queue full: refusing requests that need a record (503 audit_unavailable) until the writer catches up"
                    );
                }
            }
            Ok(_) => {
                if self.queue_full.load(Ordering::Acquire)
                    && self.queue_full.swap(false, Ordering::AcqRel)
                {
                    tracing::info!("audit queue has room again; accepting records");
                }
            }
            Err(AuditError::SinkFailed) => {}
        }
    }

    /// Queues an event nobody waits for (redacted as `settings` say, when given).
    pub fn event(&self, mut record: Record, settings: Option<&AuditSettings>) {
        if let Some(s) = settings {
            redact(&mut record, s);
        }
        let event = record.event.map_or("", Event::name);
        if let Err(e) = self.writer.submit(record) {
            // The writer logs the sink's state changes; a refused event is named here.
            tracing::error!(event, error = %e, "audit event not recorded");
        }
    }

    /// Queues an event and waits until it is written (startup and shutdown).
    pub async fn event_acked(&self, record: Record) -> Result<(), AuditError> {
        let rx = self.writer.submit_acked(record)?;
        rx.await.unwrap_or(Err(AuditError::SinkFailed))
    }

    /// Why a new policy's `audit:` cannot be applied by a reload, if it cannot.
    pub fn reload_conflict(&self, next: Option<&AuditSettings>) -> Option<String> {
        match next {
            None => Some(
                "the new policy has no `audit:` block: the audit trail cannot be turned off by \
                 a reload (restart fortress to change it)"
                    .into(),
            ),
            Some(s) if Fixed::of(s) != self.fixed => Some(
                "the new policy changes `audit:` settings that need a restart (dir, stdout, \
                 fsync, queue, retention_days, max_total_size, hmac_key); only include, \
                 durability, flush_interval and redact change on reload"
                    .into(),
            ),
            Some(_) => None,
        }
    }

    /// Writes everything queued, seals the trail and stops the writer.
    pub async fn close(&self) {
        self.writer.close().await;
    }
}

/// Replaces the fields `settings.redact` names with `hmac-sha256:` and the first 32 hex
/// digits of HMAC-SHA-256 under `redact_key`: the same value always gives the same hash (so
/// queries by a known subject still work: hash it the same way), but the value cannot be
/// read back.
pub fn redact(record: &mut Record, settings: &AuditSettings) {
    if settings.redact.is_empty() {
        return;
    }
    let Some(key) = settings.redact_key.as_deref() else {
        return;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, key.as_bytes());
    let hide = |v: &mut Option<String>| {
        if let Some(s) = v.as_mut() {
            *s = keyed_hash(&key, s);
        }
    };
    for field in &settings.redact {
        match field {
            Redact::ClientIp => hide(&mut record.client_ip),
            Redact::Subject => hide(&mut record.subject),
            Redact::Tenant => {
                hide(&mut record.tenant);
                hide(&mut record.requested_tenant);
                // Every kept header outside the fixed list is a tenant header.
                for (name, value) in record.request_headers.iter_mut().flatten() {
                    if !super::record::DECISION_HEADERS.contains(&name.as_str()) {
                        *value = keyed_hash(&key, value);
                    }
                }
            }
        }
    }
}

fn keyed_hash(key: &hmac::Key, value: &str) -> String {
    let tag = hmac::sign(key, value.as_bytes());
    let hex = hex(tag.as_ref());
    format!("hmac-sha256:{}", &hex[..32])
}

/// The redacted form of `value` under `key` (for `fortress audit query` users who need to
/// look a subject up: the same hash the trail holds).
pub fn redacted_value(key: &str, value: &str) -> String {
    keyed_hash(&hmac::Key::new(hmac::HMAC_SHA256, key.as_bytes()), value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(redact: Vec<Redact>) -> AuditSettings {
        AuditSettings {
            dir: None,
            stdout: false,
            include: Default::default(),
            durability: crate::policy::audit::Durability::Batched,
            fsync: false,
            flush_interval: std::time::Duration::from_secs(1),
            queue: 10,
            retention_days: None,
            max_total_size: None,
            hmac_key: None,
            redact,
            redact_key: Some("k".into()),
        }
    }

    #[test]
    fn redaction_hides_only_the_chosen_fields_and_is_stable() {
        let mut r = Record::new(Event::Request, 0);
        r.client_ip = Some("10.0.0.7".into());
        r.subject = Some("alice".into());
        r.tenant = Some("acme".into());
        r.requested_tenant = Some("globex".into());
        let mut a = r.clone();
        redact(&mut a, &settings(vec![Redact::ClientIp, Redact::Subject]));
        assert_eq!(a.client_ip, Some(redacted_value("k", "10.0.0.7")));
        assert_eq!(a.subject, Some(redacted_value("k", "alice")));
        assert_ne!(a.subject, Some(redacted_value("k", "bob")));
        assert!(
            a.subject.as_deref().is_some_and(
                |s| s.starts_with("hmac-sha256:") && s.len() == "hmac-sha256:".len() + 32
            )
        );
        assert_eq!(a.tenant.as_deref(), Some("acme"));
        let mut b = r.clone();
        redact(&mut b, &settings(vec![Redact::Tenant]));
        assert_eq!(b.tenant, Some(redacted_value("k", "acme")));
        assert_eq!(b.requested_tenant, Some(redacted_value("k", "globex")));
        assert_eq!(b.subject.as_deref(), Some("alice"));
        // Another key, another hash.
        assert_ne!(redacted_value("k2", "alice"), redacted_value("k", "alice"));
    }

    #[test]
    fn tenant_redaction_hides_the_tenant_headers_kept_for_replay() {
        let mut r = Record::new(Event::Request, 0);
        r.request_headers = Some(
            [("host", "app.test"), ("x-org-id", "globex")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        );
        let mut a = r.clone();
        redact(&mut a, &settings(vec![Redact::Subject]));
        assert_eq!(a.request_headers, r.request_headers);
        redact(&mut a, &settings(vec![Redact::Tenant]));
        let h = a.request_headers.unwrap_or_default();
        assert_eq!(h["host"], "app.test");
        assert_eq!(h["x-org-id"], redacted_value("k", "globex"));
    }
}
