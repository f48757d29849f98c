//! Hot reload. One task owns every trigger (file change in the watched directories, SIGHUP,
//! `POST /admin/reload`) and handles them one at a time: read → parse → compile (on a
//! blocking thread, so a reload never stalls requests on the async runtime), then bind the
//! new policy to the live state and swap it in atomically, or keep the last good policy. Both
//! outcomes are logged and counted.
//!
//! Directories are watched rather than files, so a Kubernetes ConfigMap update (an atomic
//! `..data` symlink swap) and cert-manager's file replacement are both seen. File events only
//! reload when the content actually changed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::config::{self, LoadError};
use crate::policy::{Policy, TlsFiles};
use crate::state::{AppState, Outcome, ReloadHandle, Trigger};

/// Watches the directories of the config file and of the TLS files.
pub fn watch(
    config_path: &Path,
    tls: Option<&TlsFiles>,
    input_files: &[PathBuf],
    handle: ReloadHandle,
) -> Option<DirWatcher> {
    let watcher = match notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(event) = res
            && !matches!(event.kind, EventKind::Access(_))
        {
            handle.request(Trigger::FileChanged);
        }
    }) {
        Ok(w) => w,
        Err(e) => {
            warn!(error = %e, "file watching unavailable; reload with SIGHUP or POST /admin/reload");
            return None;
        }
    };
    let mut dirs = DirWatcher {
        watcher,
        dirs: BTreeSet::new(),
    };
    dirs.add(&parent(config_path));
    if let Some(t) = tls {
        dirs.add_tls(t);
    }
    dirs.add_files(input_files);
    Some(dirs)
}

/// A directory watcher and the directories it watches.
pub struct DirWatcher {
    watcher: RecommendedWatcher,
    dirs: BTreeSet<PathBuf>,
}

impl std::fmt::Debug for DirWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirWatcher")
            .field("dirs", &self.dirs)
            .finish()
    }
}

impl DirWatcher {
    fn add(&mut self, dir: &Path) {
        if self.dirs.contains(dir) {
            return;
        }
        match self.watcher.watch(dir, RecursiveMode::NonRecursive) {
            Ok(()) => {
                self.dirs.insert(dir.to_path_buf());
            }
            Err(e) => warn!(dir = %dir.display(), error = %e, "cannot watch directory"),
        }
    }

    fn add_tls(&mut self, tls: &TlsFiles) {
        self.add(&parent(&tls.cert));
        self.add(&parent(&tls.key));
    }

    fn add_files(&mut self, files: &[PathBuf]) {
        for f in files {
            self.add(&parent(f));
        }
    }
}

/// The reload task: runs until `stop` turns true.
pub async fn run(
    state: AppState,
    mut rx: mpsc::Receiver<Trigger>,
    mut stop: watch::Receiver<bool>,
    mut watcher: Option<DirWatcher>,
) {
    // The hash of the last file content that was refused: a file event that sees it again is
    // not counted again (SIGHUP and the admin API always retry).
    let mut last_refused: Option<String> = None;
    // What the files the policy read besides itself (secrets, keys) held when it was
    // compiled: a change there reloads too (key rotation without SIGHUP).
    let mut last_inputs = {
        let files = state.config.snapshot().input_files.clone();
        blocking(move || inputs_hash(&files))
            .await
            .unwrap_or_default()
    };
    let tls = state.config.snapshot().server.tls.clone();
    let mut certs = match tls {
        Some(files) => blocking(move || fingerprint(&files)).await,
        None => None,
    };
    loop {
        let first = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            t = rx.recv() => match t { Some(t) => t, None => return },
        };
        // Editors and kubelet write in bursts: wait a moment and take the burst as one.
        if matches!(first, Trigger::FileChanged) {
            tokio::time::sleep(DEBOUNCE).await;
        }
        let mut force = false;
        let mut waiters = Vec::new();
        let mut caller: Option<crate::state::reload::Caller> = None;
        let mut pending = Some(first);
        while let Some(t) = pending.take().or_else(|| rx.try_recv().ok()) {
            match t {
                Trigger::FileChanged => {}
                Trigger::Signal => force = true,
                Trigger::Admin(w) => {
                    force = true;
                    waiters.push(w);
                }
                Trigger::AdminBy(w, c) => {
                    force = true;
                    waiters.push(w);
                    // Coalesced admin reloads: the record names the first caller.
                    caller.get_or_insert(c);
                }
            }
        }
        let outcome = reload_config(
            &state,
            force,
            &mut last_refused,
            &mut last_inputs,
            caller.as_ref(),
        )
        .await;
        if let Some(w) = watcher.as_mut() {
            let snapshot = state.config.snapshot();
            if let Some(tls) = &snapshot.server.tls {
                w.add_tls(tls);
            }
            w.add_files(&snapshot.input_files);
        }
        reload_certs(&state, &mut certs).await;
        for w in waiters {
            let _ = w.send(outcome.clone()); // the admin client may have gone away
        }
    }
}

/// What reading and compiling the file gave (computed on a blocking thread).
enum Loaded {
    Unreadable(String),
    Text {
        hash: String,
        /// The config file and the files it reads are as they were: nothing to do.
        unchanged: bool,
        /// The config text and its input files' fingerprint (a refused reload is not retried
        /// on file events until one of them changes).
        key: String,
        compiled: Option<Result<Box<Policy>, LoadError>>,
    },
}

/// A fingerprint of `files`' contents (a file that cannot be read counts as its error).
/// Kept in memory only: it covers secret files.
fn inputs_hash(files: &[PathBuf]) -> String {
    let mut all = Vec::new();
    for f in files {
        all.extend_from_slice(f.as_os_str().as_encoded_bytes());
        all.push(0);
        match std::fs::read(f) {
            Ok(bytes) => all.extend_from_slice(config::short_hash(&bytes).as_bytes()),
            Err(e) => all.extend_from_slice(format!("unreadable: {:?}", e.kind()).as_bytes()),
        }
        all.push(0);
    }
    config::short_hash(&all)
}

async fn reload_config(
    state: &AppState,
    force: bool,
    last_refused: &mut Option<String>,
    last_inputs: &mut String,
    caller: Option<&crate::state::reload::Caller>,
) -> Outcome {
    let Some(path) = state.config_path.clone() else {
        return Outcome::Unavailable;
    };
    let current = state.config.snapshot();
    let current_hash = current.hash.clone();
    let skip_refused = if force { None } else { last_refused.clone() };
    let input_files = current.input_files.clone();
    let inputs_before = last_inputs.clone();
    // File IO and compiling (which reads key and secret files) block: off the runtime.
    let loaded = blocking(move || {
        let bytes = match read_settled(&path) {
            Ok(b) => b,
            Err(e) => return Loaded::Unreadable(e),
        };
        let Ok(text) = String::from_utf8(bytes) else {
            return Loaded::Unreadable(format!("{}: file is not valid UTF-8", path.display()));
        };
        let hash = config::short_hash(text.as_bytes());
        let inputs = inputs_hash(&input_files);
        let key = format!("{hash}/{inputs}");
        let unchanged = !force && hash == current_hash && inputs == inputs_before;
        let refused_before = skip_refused.as_deref() == Some(key.as_str());
        let compiled = (!unchanged && !refused_before).then(|| {
            // The environment policy of startup holds for a reload too: a production
            // config is not swapped for one that could not start.
            let rt = config::production::Runtime::process(false);
            config::load_str_reviewed(&text, &path, &rt).map(|r| Box::new(r.policy))
        });
        Loaded::Text {
            hash,
            unchanged,
            key,
            compiled,
        }
    })
    .await;
    let (hash, unchanged, key, compiled) = match loaded {
        None => return refuse(state, vec!["the reload thread failed".into()], caller),
        Some(Loaded::Unreadable(e)) => return refuse(state, vec![e], caller),
        Some(Loaded::Text {
            hash,
            unchanged,
            key,
            compiled,
        }) => (hash, unchanged, key, compiled),
    };
    match compiled {
        None if unchanged => {
            // The file is the active config again (a refused edit reverted): reloading works.
            state.metrics.reload_matches_active();
            Outcome::Applied { hash }
        }
        None => Outcome::Refused {
            errors: vec!["unchanged since the last refused reload".into()],
        },
        Some(Ok(next)) => {
            if let Some(conflict) = state
                .audit
                .as_ref()
                .and_then(|t| t.reload_conflict(next.audit.as_ref()))
            {
                *last_refused = Some(key.clone());
                return refuse(state, vec![conflict], caller);
            }
            if next.store != current.policy.store {
                *last_refused = Some(key.clone());
                return refuse(
                    state,
                    vec![
                        "`store` changed: the state store is chosen at startup; restart to change it (the running instance keeps its store)".to_owned(),
                    ],
                    caller,
                );
            }
            *last_refused = None;
            warn_restart_needed(&current, &next);
            let hash = next.hash.clone();
            let files = next.input_files.clone();
            state.install(*next).await;
            *last_inputs = blocking(move || inputs_hash(&files))
                .await
                .unwrap_or_default();
            state.admin.reloaded(state.live.clock().now_ms());
            state.metrics.reload_ok.inc();
            info!(policy.hash = %hash, "config reloaded");
            audit_reload(state, Some(&current.hash), &hash, &[], caller);
            Outcome::Applied { hash }
        }
        Some(Err(e)) => {
            *last_refused = Some(key.clone());
            refuse(
                state,
                e.to_string().lines().map(str::to_owned).collect(),
                caller,
            )
        }
    }
}

/// Reads the file once it has stopped changing: two reads `SETTLE` apart must give the same
/// bytes, so a file caught half-written by an editor or `cp` is never parsed (a truncated
/// file can be valid YAML). Writers that replace the file atomically (rename, as kubelet's
/// ConfigMap `..data` swap does) pass at the first comparison. Blocking.
fn read_settled(path: &Path) -> Result<Vec<u8>, String> {
    let read =
        || std::fs::read(path).map_err(|e| format!("{}: cannot read file: {e}", path.display()));
    let mut last = read()?;
    for _ in 0..SETTLE_ROUNDS {
        std::thread::sleep(SETTLE);
        let next = read()?;
        if next == last {
            return Ok(next);
        }
        last = next;
    }
    Err(format!(
        "{}: the file kept changing for {} ms; not applied (write it atomically, e.g. rename)",
        path.display(),
        SETTLE.as_millis() * u128::from(SETTLE_ROUNDS)
    ))
}

/// Runs blocking work on the blocking pool; `None` if it panicked.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(f).await.ok()
}

fn refuse(
    state: &AppState,
    errors: Vec<String>,
    caller: Option<&crate::state::reload::Caller>,
) -> Outcome {
    state.metrics.reload_error.inc();
    state
        .admin
        .reload_refused(state.live.clock().now_ms(), &errors);
    error!(errors = %errors.join("; "), "config reload refused; the previous config stays active");
    audit_reload(state, None, &state.config.snapshot().hash, &errors, caller);
    Outcome::Refused { errors }
}

/// Audits a reload (always, whatever `audit.include` says): `from` is the previous policy's
/// hash when the reload was applied (`None`: refused, and `hash` is the policy that stays).
fn audit_reload(
    state: &AppState,
    from: Option<&str>,
    hash: &str,
    errors: &[String],
    caller: Option<&crate::state::reload::Caller>,
) {
    let Some(trail) = &state.audit else {
        return;
    };
    let mut r = crate::audit::Record::new(
        crate::audit::Event::PolicyReload,
        state.live.clock().now_ms(),
    );
    r.decision = Some(if from.is_some() { "applied" } else { "refused" }.into());
    r.reason = from.is_none().then(|| "invalid_config".into());
    r.policy_version = Some(hash.to_owned());
    // Through the admin API: who asked, and the admin request's ids.
    if let Some(c) = caller {
        r.subject = Some(c.subject.clone());
        r.roles = Some(c.roles.clone());
        r.request_id = Some(c.request_id.clone());
        r.trace_id = Some(c.trace_id.clone());
        r.client_ip = Some(c.client_ip.clone());
        r.method = Some("POST".into());
        r.path = Some("/admin/reload".into());
    }
    r.detail = Some(serde_json::json!({
        "previous_version": from,
        "errors": errors,
    }));
    trail.event(r, None);
}

async fn reload_certs(state: &AppState, seen: &mut Option<Vec<u8>>) {
    let (Some(store), Some(files)) = (
        state.tls.clone(),
        state.config.snapshot().server.tls.clone(),
    ) else {
        return;
    };
    let (now, result) = {
        let seen = seen.clone();
        let Some(r) = blocking(move || {
            let now = fingerprint(&files);
            if seen.as_ref() == Some(&now) && store.files() == files {
                return (now, None);
            }
            let result = store.reload(&files).map(|()| files.cert.clone());
            (now, Some(result))
        })
        .await
        else {
            return;
        };
        r
    };
    match result {
        None => {}
        Some(Ok(cert)) => {
            *seen = Some(now);
            state.metrics.cert_reload_ok.inc();
            info!(cert = %cert.display(), "TLS certificate reloaded");
        }
        Some(Err(e)) => {
            state.metrics.cert_reload_error.inc();
            error!(error = %e, "TLS certificate reload failed; the previous certificate stays in use");
        }
    }
}

fn warn_restart_needed(old: &Policy, new: &Policy) {
    let (o, n) = (&old.server, &new.server);
    let mut changed = Vec::new();
    if o.listen != n.listen {
        changed.push("server.listen");
    }
    if o.admin != n.admin {
        changed.push("server.admin");
    }
    if o.probes != n.probes {
        changed.push("server.probes");
    }
    if o.tls.is_some() != n.tls.is_some() {
        changed.push("server.tls (on/off)");
    }
    if o.max_connections != n.max_connections {
        changed.push("server.max_connections");
    }
    if o.timeouts.upstream_connect != n.timeouts.upstream_connect {
        changed.push("server.timeouts.upstream_connect");
    }
    if old.telemetry.otlp != new.telemetry.otlp {
        changed.push("telemetry (OTLP export: endpoint, service_name, queue)");
    }
    if !changed.is_empty() {
        warn!(keys = %changed.join(", "), "these settings changed but apply only after a restart; still running with the old values");
    }
}

/// Content of the certificate and key files (to notice a rotation). Blocking IO.
fn fingerprint(files: &TlsFiles) -> Vec<u8> {
    let mut out = std::fs::read(&files.cert).unwrap_or_default();
    out.extend(std::fs::read(&files.key).unwrap_or_default());
    out
}

fn parent(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

const DEBOUNCE: Duration = Duration::from_millis(50);
/// How long a file must stay unchanged before it is parsed.
const SETTLE: Duration = Duration::from_millis(250);
/// Give up (and wait for the next change) after this many rounds of `SETTLE`.
const SETTLE_ROUNDS: u32 = 20;
