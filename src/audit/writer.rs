//! The writer: one OS thread that owns the files. Records arrive through a bounded queue;
//! the thread takes everything waiting (group commit), numbers and chains each record, writes
//! the batch with one `write` call (then `fsync` when configured) and only then acknowledges
//! the waiting requests. Files are daily (`audit-YYYY-MM-DD.jsonl`, UTC, by the record's
//! time); a `seal` record ends a file at rotation and a run at shutdown. At startup the chain
//! continues from the newest file's last complete line (a partial last line from a crash is
//! cut off first: it was never acknowledged).
//!
//! A write failure (disk full, permissions) rolls the chain back to before the batch, answers
//! the batch's waiters with an error and marks the sink failing: new records are refused at
//! once (the request path answers 503) until a probe (every second) can open the file again.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::oneshot;
use tracing::{error, info, warn};

use super::chain::{Chain, ChainKey, GENESIS};
use super::record::{Event, Record, file_day, file_name};
use crate::clock::Clock;
use crate::store::DAY_MS;

/// Most records written in one batch.
const MAX_BATCH: usize = 1024;
/// How often a failing sink is probed, and the chain head logged at most.
const PROBE_EVERY: Duration = Duration::from_secs(1);
const ANCHOR_EVERY: Duration = Duration::from_secs(60);

/// Where and how records are written.
#[derive(Debug, Clone)]
pub struct WriterSettings {
    /// Directory of the daily files (`None`: stdout only).
    pub dir: Option<PathBuf>,
    /// Also write each record to stdout.
    pub stdout: bool,
    /// `fsync` each batch.
    pub fsync: bool,
    /// Queue capacity (records waiting for the writer).
    pub queue: usize,
    /// Files of days older than this many days are deleted.
    pub retention_days: Option<u32>,
    /// Oldest files are deleted while the directory holds more bytes than this.
    pub max_total_size: Option<u64>,
    /// HMAC key for the chain.
    pub key: Option<ChainKey>,
}

/// Why a record could not be taken or written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    /// The queue is full (the writer cannot keep up).
    #[error("audit queue full")]
    QueueFull,
    /// The sink failed (and has not recovered yet), or the writer is gone.
    #[error("audit sink unavailable")]
    SinkFailed,
}

/// Counters the metrics read.
#[derive(Debug, Default)]
pub struct AuditStats {
    /// Records waiting in the queue.
    pub queued: AtomicUsize,
    /// Records written.
    pub written: AtomicU64,
    /// Batches that failed to write.
    pub write_errors: AtomicU64,
    /// Records refused (queue full or sink failing).
    pub refused: AtomicU64,
    /// Whether the sink is failing now.
    pub failing: AtomicBool,
    /// The chain head: seq of the last record written (+1; 0 = none yet).
    pub head_next_seq: AtomicU64,
    /// The chain head: (seq of the next record, hash of the last one), kept together so a
    /// reader never pairs a seq with another record's hash. Read at scrape time only.
    pub head: std::sync::Mutex<(u64, String)>,
}

impl AuditStats {
    /// Publishes the chain head (seq of the next record, hash of the last one).
    fn set_head(&self, next_seq: u64, hash: &str) {
        self.head_next_seq.store(next_seq, Ordering::Relaxed);
        if let Ok(mut h) = self.head.lock() {
            h.0 = next_seq;
            h.1.clear();
            h.1.push_str(hash);
        }
    }

    /// The chain head: (seq of the last record, its hash), `None` before the first record.
    pub fn head(&self) -> Option<(u64, String)> {
        let h = self.head.lock().ok()?;
        (h.0 > 0).then(|| (h.0 - 1, h.1.clone()))
    }
}

enum Msg {
    Record(Box<Record>, Option<oneshot::Sender<Result<(), AuditError>>>),
    Close(oneshot::Sender<()>),
}

/// A handle to the writer; cheap to clone.
#[derive(Debug, Clone)]
pub struct Writer {
    tx: SyncSender<Msg>,
    stats: Arc<AuditStats>,
}

impl Writer {
    /// Opens the trail (continuing the chain from the newest file) and starts the thread.
    pub fn start(settings: WriterSettings, clock: Arc<Clock>) -> Result<Self, String> {
        let stats = Arc::new(AuditStats::default());
        let (chain, truncated) = match &settings.dir {
            Some(dir) => recover(dir, settings.key.clone())?,
            None => (Chain::new(0, GENESIS.into(), settings.key.clone()), 0),
        };
        stats.set_head(chain.next_seq, &chain.prev_hash);
        if truncated > 0 {
            warn!(
                bytes = truncated,
                "audit: the newest file ended in a partial line (a crash); it was cut off"
            );
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(settings.queue.max(1));
        let mut thread = Thread {
            settings,
            clock,
            chain,
            stats: stats.clone(),
            file: None,
            file_day: None,
            file_count: 0,
            last_probe: Instant::now(),
            last_anchor: Instant::now(),
        };
        std::thread::Builder::new()
            .name("fortress-audit".into())
            .spawn(move || thread.run(rx))
            .map_err(|e| format!("cannot start the audit writer: {e}"))?;
        Ok(Self { tx, stats })
    }

    /// The writer's counters.
    pub fn stats(&self) -> &Arc<AuditStats> {
        &self.stats
    }

    /// Queues a record without waiting for it (`batched`, and events nobody waits for).
    pub fn submit(&self, record: Record) -> Result<(), AuditError> {
        self.send(Msg::Record(Box::new(record), None))
    }

    /// Queues a record; the receiver answers once it is written (`strict`).
    pub fn submit_acked(
        &self,
        record: Record,
    ) -> Result<oneshot::Receiver<Result<(), AuditError>>, AuditError> {
        let (tx, rx) = oneshot::channel();
        self.send(Msg::Record(Box::new(record), Some(tx)))?;
        Ok(rx)
    }

    fn send(&self, msg: Msg) -> Result<(), AuditError> {
        if self.stats.failing.load(Ordering::Acquire) {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            return Err(AuditError::SinkFailed);
        }
        self.stats.queued.fetch_add(1, Ordering::AcqRel);
        match self.tx.try_send(msg) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.stats.queued.fetch_sub(1, Ordering::AcqRel);
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                Err(match e {
                    TrySendError::Full(_) => AuditError::QueueFull,
                    TrySendError::Disconnected(_) => AuditError::SinkFailed,
                })
            }
        }
    }

    /// Writes everything queued, seals the trail and stops the thread (shutdown). Waits for
    /// room in the queue (shutdown must not lose the seal).
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        let sender = self.tx.clone();
        let sent = tokio::task::spawn_blocking(move || sender.send(Msg::Close(tx)).is_ok())
            .await
            .unwrap_or(false);
        if sent {
            let _ = rx.await;
        }
    }
}

struct Thread {
    settings: WriterSettings,
    clock: Arc<Clock>,
    chain: Chain,
    stats: Arc<AuditStats>,
    file: Option<File>,
    file_day: Option<u64>,
    /// Records in the open file so far (the seal's `count`).
    file_count: u64,
    last_probe: Instant,
    last_anchor: Instant,
}

type Waiter = Option<oneshot::Sender<Result<(), AuditError>>>;

impl Thread {
    fn run(&mut self, rx: Receiver<Msg>) {
        if self.settings.dir.is_some() {
            self.retention(self.clock.now_ms());
        }
        loop {
            let first = match rx.recv_timeout(PROBE_EVERY) {
                Ok(m) => m,
                Err(RecvTimeoutError::Timeout) => {
                    self.idle();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.seal("shutdown");
                    return;
                }
            };
            let mut batch: Vec<(Box<Record>, Waiter)> = Vec::new();
            let mut close = None;
            let push = |m: Msg, batch: &mut Vec<_>, close: &mut Option<_>| match m {
                Msg::Record(r, w) => batch.push((r, w)),
                Msg::Close(done) => *close = Some(done),
            };
            push(first, &mut batch, &mut close);
            while close.is_none() && batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(m) => push(m, &mut batch, &mut close),
                    Err(_) => break,
                }
            }
            self.stats
                .queued
                .fetch_sub(batch.len() + usize::from(close.is_some()), Ordering::AcqRel);
            if !batch.is_empty() {
                self.write_batch(batch);
            }
            if let Some(done) = close {
                self.seal("shutdown");
                let _ = done.send(());
                return;
            }
            self.idle();
        }
    }

    /// Periodic work: probe a failing sink, publish the chain head.
    fn idle(&mut self) {
        if self.stats.failing.load(Ordering::Acquire) && self.last_probe.elapsed() >= PROBE_EVERY {
            self.last_probe = Instant::now();
            let day = self.clock.now_ms() / DAY_MS;
            if self.probe(day) {
                self.stats.failing.store(false, Ordering::Release);
                info!("audit sink recovered; accepting records again");
            }
        }
        if self.last_anchor.elapsed() >= ANCHOR_EVERY {
            self.last_anchor = Instant::now();
            self.anchor("periodic");
        }
    }

    /// Logs the chain head (an external system can keep it as an anchor).
    fn anchor(&self, why: &str) {
        if self.chain.next_seq > 0 {
            info!(
                audit.seq = self.chain.next_seq - 1,
                audit.hash = %self.chain.prev_hash,
                why,
                "audit chain head"
            );
        }
    }

    fn probe(&mut self, day: u64) -> bool {
        let Some(dir) = &self.settings.dir else {
            return true;
        };
        self.file = None;
        match open_append(&dir.join(file_name(day * DAY_MS))) {
            Ok((f, count)) => {
                // A probe never moves to another day on its own: the next record does.
                if self.file_day.is_none_or(|d| d == day) {
                    self.file = Some(f);
                    self.file_day = Some(day);
                    self.file_count = count;
                }
                true
            }
            Err(_) => false,
        }
    }

    fn write_batch(&mut self, batch: Vec<(Box<Record>, Waiter)>) {
        // The chain as of the last durable write: a failure goes back to it.
        let mut saved = self.chain.clone();
        let mut buf = String::with_capacity(batch.len() * 600);
        let mut lines = 0u64;
        // Waiters of records in `buf` (not written yet), and of records already written.
        let mut waiters = Vec::with_capacity(batch.len());
        let mut written: Vec<Waiter> = Vec::new();
        let mut result = Ok(());
        for (record, waiter) in batch {
            if result.is_err() {
                waiters.push(waiter);
                continue;
            }
            let day = record.at_ms / DAY_MS;
            // A later day: write what is pending to the old file, seal it, move on.
            if self.settings.dir.is_some() && self.file_day.is_some_and(|d| day > d) {
                result = self.flush(&buf, lines);
                if result.is_ok() {
                    self.stats.written.fetch_add(lines, Ordering::Relaxed);
                    written.append(&mut waiters);
                    saved = self.chain.clone();
                    result = self.seal_file("rotation", record.at_ms);
                }
                buf.clear();
                lines = 0;
                self.file = None;
                self.file_count = 0;
                self.file_day = Some(day);
                if result.is_ok() {
                    self.retention(record.at_ms);
                    saved = self.chain.clone();
                } else {
                    waiters.push(waiter);
                    continue;
                }
            }
            waiters.push(waiter);
            if self.file_day.is_none() {
                self.file_day = Some(day);
            }
            let chained = self.chain.link(record.to_object());
            buf.push_str(&chained.line);
            buf.push('\n');
            lines += 1;
        }
        if result.is_ok() {
            result = self.flush(&buf, lines);
        }
        for w in written.into_iter().flatten() {
            let _ = w.send(Ok(()));
        }
        match result {
            Ok(()) => {
                self.stats.written.fetch_add(lines, Ordering::Relaxed);
                self.stats
                    .set_head(self.chain.next_seq, &self.chain.prev_hash);
                for w in waiters.into_iter().flatten() {
                    let _ = w.send(Ok(()));
                }
            }
            Err(e) => {
                // Nothing of this batch counts: the chain goes back to before it (a partly
                // written batch is cut off when the file is reopened).
                self.chain = saved;
                self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                if !self.stats.failing.swap(true, Ordering::AcqRel) {
                    error!(error = %e, "audit sink failed; refusing requests that need a record until it recovers");
                }
                self.file = None;
                self.last_probe = Instant::now();
                for w in waiters.into_iter().flatten() {
                    let _ = w.send(Err(AuditError::SinkFailed));
                }
            }
        }
    }

    /// Opens the current day's file if it is not open (counting the records already in it,
    /// and cutting off a partial last line).
    fn ensure_open(&mut self) -> Result<(), String> {
        let Some(dir) = &self.settings.dir else {
            return Ok(());
        };
        if self.file.is_none() {
            let day = match self.file_day {
                Some(d) => d,
                None => {
                    let d = self.clock.now_ms() / DAY_MS;
                    self.file_day = Some(d);
                    d
                }
            };
            let (f, count) = open_append(&dir.join(file_name(day * DAY_MS)))
                .map_err(|e| format!("open: {e}"))?;
            self.file = Some(f);
            self.file_count = count;
        }
        Ok(())
    }

    /// Appends `buf` (`lines` records) to the current day's file (and stdout).
    fn flush(&mut self, buf: &str, lines: u64) -> Result<(), String> {
        if buf.is_empty() {
            return Ok(());
        }
        self.ensure_open()?;
        if let Some(f) = self.file.as_mut() {
            f.write_all(buf.as_bytes())
                .map_err(|e| format!("write: {e}"))?;
            if self.settings.fsync {
                f.sync_data().map_err(|e| format!("fsync: {e}"))?;
            }
            self.file_count += lines;
        }
        if self.settings.stdout {
            let mut out = std::io::stdout().lock();
            out.write_all(buf.as_bytes())
                .and_then(|()| out.flush())
                .map_err(|e| format!("stdout: {e}"))?;
        }
        Ok(())
    }

    /// Writes a seal record ending the current file's run: `count` is the number of records
    /// in the file, the seal included.
    fn seal_file(&mut self, reason: &str, at_ms: u64) -> Result<(), String> {
        let saved = self.chain.clone();
        self.ensure_open()?;
        let mut r = Record::new(Event::Seal, at_ms);
        let file = self
            .file_day
            .map(|d| file_name(d * DAY_MS))
            .unwrap_or_default();
        r.detail = Some(json!({
            "reason": reason,
            "file": file,
            "count": self.file_count + 1,
        }));
        let chained = self.chain.link(r.to_object());
        let mut line = chained.line;
        line.push('\n');
        let res = self.flush(&line, 1);
        if res.is_ok() {
            self.stats.written.fetch_add(1, Ordering::Relaxed);
            self.stats
                .set_head(self.chain.next_seq, &self.chain.prev_hash);
            self.anchor("seal");
        } else {
            self.chain = saved;
        }
        res
    }

    fn seal(&mut self, reason: &str) {
        if self.settings.dir.is_none() && !self.settings.stdout {
            return;
        }
        if self.file_day.is_none() {
            self.file_day = Some(self.clock.now_ms() / DAY_MS);
        }
        let now = self.clock.now_ms();
        if let Err(e) = self.seal_file(reason, now) {
            error!(error = %e, "audit: could not write the seal record");
        }
        if let Some(f) = self.file.as_mut() {
            let _ = f.sync_all();
        }
    }

    /// Deletes files older than `retention_days` and the oldest while over `max_total_size`
    /// (never today's), then records what it deleted and where the kept trail starts.
    fn retention(&mut self, now_ms: u64) {
        let Some(dir) = self.settings.dir.clone() else {
            return;
        };
        if self.settings.retention_days.is_none() && self.settings.max_total_size.is_none() {
            return;
        }
        let Ok(mut files) = list(&dir) else {
            return;
        };
        let today = now_ms / DAY_MS;
        let mut deleted = Vec::new();
        let mut total: u64 = files.iter().map(|f| f.2).sum();
        files.retain(|(day, path, size)| {
            let too_old = self
                .settings
                .retention_days
                .is_some_and(|days| *day + u64::from(days) < today);
            let too_big = self.settings.max_total_size.is_some_and(|max| total > max);
            if *day < today && (too_old || too_big) && std::fs::remove_file(path).is_ok() {
                total = total.saturating_sub(*size);
                deleted.push(path.file_name().map(|n| n.to_string_lossy().into_owned()));
                false
            } else {
                true
            }
        });
        if deleted.is_empty() {
            return;
        }
        // The kept trail starts where the first kept file starts: its first record links to
        // the last deleted one.
        let first = files
            .first()
            .and_then(|(_, p, _)| first_record(p).ok().flatten());
        let mut r = Record::new(Event::Retention, now_ms);
        // No file kept (every older one went, today's is not written yet): the kept trail
        // starts with this very record.
        let (kept_seq, kept_prev) = match &first {
            Some(v) => (v.get("seq").cloned(), v.get("prev_hash").cloned()),
            None => (
                Some(Value::from(self.chain.next_seq)),
                Some(Value::String(self.chain.prev_hash.clone())),
            ),
        };
        r.detail = Some(json!({
            "deleted": deleted,
            "kept_from_seq": kept_seq,
            "kept_from_prev_hash": kept_prev,
        }));
        info!(files = deleted.len(), "audit retention deleted old files");
        let saved = self.chain.clone();
        let chained = self.chain.link(r.to_object());
        let mut line = chained.line;
        line.push('\n');
        match self.flush(&line, 1) {
            Ok(()) => {
                self.stats.written.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .set_head(self.chain.next_seq, &self.chain.prev_hash);
            }
            Err(e) => {
                self.chain = saved;
                error!(error = %e, "audit: could not write the retention record");
            }
        }
    }
}

/// Opens (creating) a file for appending; returns it and the number of complete records in it.
fn open_append(path: &Path) -> std::io::Result<(File, u64)> {
    let mut f = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)?;
    let mut text = Vec::new();
    f.seek(SeekFrom::Start(0))?;
    f.read_to_end(&mut text)?;
    let complete = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if complete < text.len() {
        // A partial line (a crash or a failed write): never acknowledged, cut off.
        f.set_len(complete as u64)?;
    }
    let count = text[..complete].iter().filter(|&&b| b == b'\n').count() as u64;
    Ok((f, count))
}

/// The audit files of `dir`, oldest first: (day, path, size).
pub fn list(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf, u64)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(day) = name.to_str().and_then(file_day) else {
            continue;
        };
        let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
        out.push((day, entry.path(), size));
    }
    out.sort();
    Ok(out)
}

fn first_record(path: &Path) -> std::io::Result<Option<Value>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .next()
        .and_then(|l| serde_json::from_str(l).ok()))
}

/// Where the chain continues: after the newest file's last complete record. Cuts a partial
/// last line off (returns how many bytes). A last line that does not parse is an error: the
/// trail needs `fortress audit verify` before fortress appends to it.
fn recover(dir: &Path, key: Option<ChainKey>) -> Result<(Chain, u64), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("audit directory {}: {e}", dir.display()))?;
    let files = list(dir).map_err(|e| format!("audit directory {}: {e}", dir.display()))?;
    let Some((_, newest, _)) = files.last() else {
        return Ok((Chain::new(0, GENESIS.into(), key), 0));
    };
    let text = std::fs::read(newest).map_err(|e| format!("{}: {e}", newest.display()))?;
    let complete = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let truncated = (text.len() - complete) as u64;
    if truncated > 0 {
        let f = OpenOptions::new()
            .write(true)
            .open(newest)
            .map_err(|e| format!("{}: {e}", newest.display()))?;
        f.set_len(complete as u64)
            .map_err(|e| format!("{}: {e}", newest.display()))?;
    }
    let last = text[..complete]
        .split(|&b| b == b'\n')
        .rev()
        .find(|l| !l.is_empty());
    let Some(last) = last else {
        return Ok((Chain::new(0, GENESIS.into(), key), truncated));
    };
    let v: Value = serde_json::from_slice(last).map_err(|_| {
        format!(
            "{}: the last record does not parse; run `fortress audit verify {}`",
            newest.display(),
            dir.display()
        )
    })?;
    let seq = v.get("seq").and_then(Value::as_u64);
    let hash = v.get("hash").and_then(Value::as_str);
    match (seq, hash) {
        (Some(seq), Some(hash)) => Ok((Chain::new(seq + 1, hash.to_owned(), key), truncated)),
        _ => Err(format!(
            "{}: the last record has no seq/hash; run `fortress audit verify {}`",
            newest.display(),
            dir.display()
        )),
    }
}
