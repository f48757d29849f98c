//! Hot reload. One task owns every trigger (file change in the watched directories, SIGHUP,
//! `POST /admin/reload`) and handles them one at a time: read → parse → compile, then swap
//! atomically or keep the last good config. Both outcomes are logged and counted.
//!
//! Directories are watched rather than files, so a Kubernetes ConfigMap update (an atomic
//! `..data` symlink swap) and cert-manager's file replacement are both seen. File events only
//! reload when the content actually changed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, warn};

use crate::config::{self, Config, TlsFiles};
use crate::state::AppState;

/// Why a reload was asked for.
#[derive(Debug)]
pub enum Trigger {
    /// Something changed in a watched directory.
    FileChanged,
    /// SIGHUP.
    Signal,
    /// `POST /admin/reload`; the outcome is sent back.
    Admin(oneshot::Sender<Outcome>),
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A new config is active.
    Applied {
        /// Its hash.
        hash: String,
    },
    /// The file was invalid; the previous config stays active.
    Refused {
        /// Every error, `FILE:LINE:COL: message`.
        errors: Vec<String>,
    },
    /// This instance has no config file to reload (demo).
    Unavailable,
}

/// Sends reload requests to the reload task.
#[derive(Debug, Clone)]
pub struct ReloadHandle(Option<mpsc::Sender<Trigger>>);

impl ReloadHandle {
    /// A handle that reloads nothing (no config file).
    pub fn disabled() -> Self {
        Self(None)
    }

    /// Asks for a reload without waiting. Triggers coalesce, so a full queue loses nothing.
    pub fn request(&self, trigger: Trigger) {
        if let Some(tx) = &self.0 {
            // Full means a reload is already queued; it will read the latest file.
            let _ = tx.try_send(trigger);
        }
    }

    /// Asks for a reload and waits for its outcome.
    pub async fn reload_now(&self) -> Outcome {
        let Some(tx) = &self.0 else {
            return Outcome::Unavailable;
        };
        let (done, outcome) = oneshot::channel();
        if tx.send(Trigger::Admin(done)).await.is_err() {
            return Outcome::Unavailable;
        }
        outcome.await.unwrap_or(Outcome::Unavailable)
    }
}

/// Creates the reload channel.
pub fn channel() -> (ReloadHandle, mpsc::Receiver<Trigger>) {
    let (tx, rx) = mpsc::channel(64);
    (ReloadHandle(Some(tx)), rx)
}

/// Watches the directories of the config file and of the TLS files.
pub fn watch(
    config_path: &Path,
    tls: Option<&TlsFiles>,
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
    let mut certs = state.config.snapshot().server.tls.as_ref().map(fingerprint);
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
        let mut pending = Some(first);
        while let Some(t) = pending.take().or_else(|| rx.try_recv().ok()) {
            match t {
                Trigger::FileChanged => {}
                Trigger::Signal => force = true,
                Trigger::Admin(w) => {
                    force = true;
                    waiters.push(w);
                }
            }
        }
        let outcome = reload_config(&state, force, &mut last_refused);
        if let (Some(w), Some(tls)) = (watcher.as_mut(), &state.config.snapshot().server.tls) {
            w.add_tls(tls);
        }
        reload_certs(&state, &mut certs);
        for w in waiters {
            let _ = w.send(outcome.clone()); // the admin client may have gone away
        }
    }
}

fn reload_config(state: &AppState, force: bool, last_refused: &mut Option<String>) -> Outcome {
    let Some(path) = &state.config_path else {
        return Outcome::Unavailable;
    };
    let current = state.config.snapshot();
    let text = match std::fs::read(path).map(String::from_utf8) {
        Ok(Ok(t)) => t,
        Ok(Err(_)) => {
            return refuse(
                state,
                vec![format!("{}: file is not valid UTF-8", path.display())],
            );
        }
        Err(e) => {
            return refuse(
                state,
                vec![format!("{}: cannot read file: {e}", path.display())],
            );
        }
    };
    let hash = config::short_hash(text.as_bytes());
    if !force && hash == current.hash {
        return Outcome::Applied {
            hash: current.hash.clone(),
        };
    }
    if !force && last_refused.as_deref() == Some(hash.as_str()) {
        return Outcome::Refused {
            errors: vec!["unchanged since the last refused reload".into()],
        };
    }
    match config::load_str(&text, path) {
        Ok(next) => {
            *last_refused = None;
            warn_restart_needed(&current, &next);
            let hash = next.hash.clone();
            state.config.replace(next);
            state.metrics.reload_ok.inc();
            state.metrics.set_policy(&hash);
            info!(policy.hash = %hash, path = %path.display(), "config reloaded");
            Outcome::Applied { hash }
        }
        Err(e) => {
            *last_refused = Some(hash);
            refuse(state, e.to_string().lines().map(str::to_owned).collect())
        }
    }
}

fn refuse(state: &AppState, errors: Vec<String>) -> Outcome {
    state.metrics.reload_error.inc();
    error!(errors = %errors.join("; "), "config reload refused; the previous config stays active");
    Outcome::Refused { errors }
}

fn reload_certs(state: &AppState, seen: &mut Option<Vec<u8>>) {
    let (Some(store), Some(files)) = (&state.tls, state.config.snapshot().server.tls.clone())
    else {
        return;
    };
    let now = fingerprint(&files);
    if seen.as_ref() == Some(&now) && store.files() == files {
        return;
    }
    match store.reload(&files) {
        Ok(()) => {
            *seen = Some(now);
            state.metrics.cert_reload_ok.inc();
            info!(cert = %files.cert.display(), "TLS certificate reloaded");
        }
        Err(e) => {
            state.metrics.cert_reload_error.inc();
            error!(error = %e, "TLS certificate reload failed; the previous certificate stays in use");
        }
    }
}

fn warn_restart_needed(old: &Config, new: &Config) {
    let (o, n) = (&old.server, &new.server);
    let mut changed = Vec::new();
    if o.listen != n.listen {
        changed.push("server.listen");
    }
    if o.admin != n.admin {
        changed.push("server.admin");
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
    if !changed.is_empty() {
        warn!(keys = %changed.join(", "), "these settings changed but apply only after a restart; still running with the old values");
    }
}

/// Content of the certificate and key files (to notice a rotation).
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
