//! `fortress audit verify` and `fortress audit query`: arguments and exit codes.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::chain::ChainKey;
use super::query::{self, Filter, Format};
use super::record::parse_ts;
use super::verify::{Verdict, VerifyError, verify};

/// `fortress audit …`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain of an audit directory. Exit 0: intact and sealed; 1: tampered
    /// (the first bad file and line are printed); 2: cannot check; 3: intact but unsealed (the
    /// newest file ends without a seal: a crash, or a cut tail — compare the printed last seq
    /// with a published chain anchor).
    Verify {
        /// The audit directory.
        dir: PathBuf,
        /// Environment variables holding the HMAC keys the trail was written with (repeat for
        /// rotated keys).
        #[arg(long = "hmac-key-env")]
        hmac_key_env: Vec<String>,
    },
    /// Print the records that match every given filter, oldest first (JSON lines, or a table).
    Query(Box<QueryArgs>),
}

/// Filters and output of `audit query`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The audit directory.
    pub dir: PathBuf,
    /// Records of this trace.
    #[arg(long)]
    pub trace_id: Option<String>,
    /// Records of this request.
    #[arg(long)]
    pub request_id: Option<String>,
    /// Records of this subject.
    #[arg(long)]
    pub subject: Option<String>,
    /// Records whose token tenant or requested tenant is this.
    #[arg(long)]
    pub tenant: Option<String>,
    /// `allow`, `deny`, `dry_run_deny`, `error`.
    #[arg(long)]
    pub decision: Option<String>,
    /// `request`, `stream_violation`, `policy_reload`, `seal`, …
    #[arg(long)]
    pub event: Option<String>,
    /// Route name.
    #[arg(long)]
    pub route: Option<String>,
    /// From this time on (`2026-01-01`, `2026-01-01T10:00:00Z`, `…T10:00:00.000Z`).
    #[arg(long)]
    pub since: Option<String>,
    /// Before this time.
    #[arg(long)]
    pub until: Option<String>,
    /// At most this many records.
    #[arg(long)]
    pub limit: Option<usize>,
    /// One tab-separated line per record instead of the JSON records.
    #[arg(long)]
    pub table: bool,
    /// Keep printing records as they are written (like `tail -f`).
    #[arg(long)]
    pub follow: bool,
}

/// Runs an `audit` subcommand.
pub fn run(cmd: AuditCommand) -> ExitCode {
    match cmd {
        AuditCommand::Verify { dir, hmac_key_env } => {
            let mut keys = Vec::new();
            for name in &hmac_key_env {
                match crate::env::named(name) {
                    Some(v) if !v.is_empty() => keys.push(ChainKey::new(v.as_bytes())),
                    _ => {
                        eprintln!("fortress audit verify: environment variable {name} is not set");
                        return ExitCode::from(2);
                    }
                }
            }
            match verify(&dir, &keys) {
                Ok(Verdict::Sealed(s)) => {
                    let (seq, hash) = s.last.unwrap_or_default();
                    println!(
                        "ok: {} records in {} files, sealed; chain head seq {seq} hash {hash}",
                        s.records, s.files
                    );
                    ExitCode::SUCCESS
                }
                Ok(Verdict::Unsealed(s)) => {
                    let (seq, hash) = s.last.unwrap_or_default();
                    println!(
                        "unsealed: {} records in {} files check, but the newest file ends without \
                         a seal{}; last seq {seq} hash {hash} (compare with the published anchor)",
                        s.records,
                        s.files,
                        if s.partial_tail {
                            " (and a partial last line, never acknowledged)"
                        } else {
                            ""
                        }
                    );
                    ExitCode::from(3)
                }
                Err(e @ VerifyError::Tampered { .. }) => {
                    println!("TAMPERED: {e}");
                    ExitCode::FAILURE
                }
                Err(VerifyError::Cannot(e)) => {
                    eprintln!("fortress audit verify: {e}");
                    ExitCode::from(2)
                }
            }
        }
        AuditCommand::Query(q) => {
            let q = *q;
            let time = |s: &Option<String>, what: &str| -> Result<Option<u64>, String> {
                match s {
                    None => Ok(None),
                    Some(t) => parse_ts(t).map(Some).ok_or_else(|| {
                        format!("--{what} {t}: expected 2026-01-01, 2026-01-01T10:00:00Z or …T10:00:00.000Z")
                    }),
                }
            };
            let (since, until) = match (time(&q.since, "since"), time(&q.until, "until")) {
                (Ok(s), Ok(u)) => (s, u),
                (Err(e), _) | (_, Err(e)) => {
                    eprintln!("fortress audit query: {e}");
                    return ExitCode::from(2);
                }
            };
            let filter = Filter {
                trace_id: q.trace_id,
                request_id: q.request_id,
                subject: q.subject,
                tenant: q.tenant,
                decision: q.decision,
                event: q.event,
                route: q.route,
                since,
                until,
            };
            let format = if q.table { Format::Table } else { Format::Json };
            let mut out = std::io::stdout().lock();
            match query::run(&q.dir, &filter, q.limit, format, q.follow, &mut out) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("fortress audit query: {}: {e}", q.dir.display());
                    ExitCode::from(2)
                }
            }
        }
    }
}
