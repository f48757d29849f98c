//! How the running instance is asked to reload: the handle every trigger (file watcher,
//! SIGHUP, `POST /admin/reload`) sends through. The reload task itself is `crate::reload`.

use tokio::sync::{mpsc, oneshot};

/// Why a reload was asked for.
#[derive(Debug)]
pub enum Trigger {
    /// Something changed in a watched directory.
    FileChanged,
    /// SIGHUP.
    Signal,
    /// `POST /admin/reload`; the outcome is sent back.
    Admin(oneshot::Sender<Outcome>),
    /// `POST /admin/reload` by an authenticated caller (named in the reload's audit record);
    /// the outcome is sent back.
    AdminBy(oneshot::Sender<Outcome>, Caller),
}

/// Who asked for a reload through the admin API (for the audit record).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    /// The token's subject.
    pub subject: String,
    /// The token's roles.
    pub roles: Vec<String>,
    /// The admin request's id.
    pub request_id: String,
    /// The admin request's trace id.
    pub trace_id: String,
    /// The TCP peer.
    pub client_ip: String,
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
        self.reload_now_by(None).await
    }

    /// Like [`ReloadHandle::reload_now`], naming the caller in the reload's audit record.
    pub async fn reload_now_by(&self, caller: Option<Caller>) -> Outcome {
        let Some(tx) = &self.0 else {
            return Outcome::Unavailable;
        };
        let (done, outcome) = oneshot::channel();
        let trigger = match caller {
            Some(c) => Trigger::AdminBy(done, c),
            None => Trigger::Admin(done),
        };
        if tx.send(trigger).await.is_err() {
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
