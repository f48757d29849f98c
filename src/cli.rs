//! The command line: `run`, `check`, `schema`, `explain`, `test`, `diff`, `replay`, `audit`,
//! `demo`, `token`, `health`, `version`.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tracing::{error, warn};

use crate::{Fortress, config, demo, server};

/// Fortress: a fail-closed governance sidecar for unmodified HTTP apps.
#[derive(Debug, Parser)]
#[command(name = "fortress", version, about)]
pub struct Cli {
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy with a config file (hot-reloaded on change, SIGHUP or POST /admin/reload).
    Run {
        /// The config file (YAML).
        #[arg(long, short)]
        config: PathBuf,
        /// Worker threads (default: one per core).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Validate config files; prints every error as FILE:LINE:COL and exits 1 if any is invalid.
    /// Outside `environment: local`, every reason `fortress run` would refuse to start is an
    /// error too (docs/production.md).
    Check {
        /// Files to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Skip the checks that need the runtime environment (`{ env: NAME }` secrets, TLS
        /// and secret files, `FORTRESS_*` variables): for linting a policy repository in CI.
        #[arg(long)]
        offline: bool,
    },
    /// Print the environment variables fortress reads (`.env.schema`).
    Env,
    /// Print the JSON Schema of the config file.
    Schema,
    /// Show how a request would be decided, stage by stage (exit 0 allow, 1 deny).
    Explain(crate::explain::ExplainRequest),
    /// Run an embedded demo app behind fortress with policies/demo.yaml.
    Demo {
        /// Proxy listener.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Admin listener.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
        /// Directory of the demo's audit trail (default: fortress-demo-audit in the system
        /// temp directory).
        #[arg(long)]
        audit_dir: Option<PathBuf>,
    },
    /// Mint an HS256 token for local testing (refused when the config says production).
    Token {
        /// Environment variable holding the HMAC secret.
        #[arg(long, conflicts_with = "secret_file")]
        secret_env: Option<String>,
        /// File holding the HMAC secret.
        #[arg(long)]
        secret_file: Option<PathBuf>,
        /// Config file: its issuer/audience are the defaults, and production configs refuse.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Subject (`sub`).
        #[arg(long)]
        sub: String,
        /// Roles, comma-separated.
        #[arg(long, value_delimiter = ',')]
        roles: Vec<String>,
        /// Tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// Lifetime, e.g. 15m or 1h.
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// Issuer (default: the config's).
        #[arg(long)]
        iss: Option<String>,
        /// Audience (default: the config's first).
        #[arg(long)]
        aud: Option<String>,
        /// Token id (`jti`).
        #[arg(long)]
        jti: Option<String>,
    },
    /// Run decision tables (`*.tests.yaml`) against their policy, offline (docs/policy-testing.md).
    Test(crate::policytest::TestArgs),
    /// What changed between two policies: routes, permissions, roles, settings (exit 0: none,
    /// 1: changes, 2: a file cannot be used).
    Diff(crate::diff::DiffArgs),
    /// Re-decide the requests an audit trail recorded under a new policy and print the ones
    /// whose decision would change (exit 0: none, 1: some, 2: bad input).
    Replay(crate::replay::ReplayArgs),
    /// Check (`verify`) or search (`query`) an audit trail.
    #[command(subcommand)]
    Audit(crate::audit::cmd::AuditCommand),
    /// GET a loopback URL (the image's HEALTHCHECK): exit 0 on 2xx within the timeout, else 1.
    Health {
        /// `http://127.0.0.1:PORT/PATH` (loopback only), e.g. http://127.0.0.1:9901/readyz.
        url: String,
        /// How long to wait for the answer.
        #[arg(long, default_value = crate::health::DEFAULT_TIMEOUT)]
        timeout: String,
    },
    /// Print the version.
    Version,
}

/// Log output format.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Writes `text` to stdout. A reader that went away (`fortress schema | head`) is not an
/// error: the output was not wanted any more (exit 0, no panic); any other write error is
/// (exit 1).
fn print_out(text: &str) -> ExitCode {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fortress: cannot write to stdout: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Parses argv and runs the command.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { files, offline } => check(&files, offline),
        Command::Env => print_out(crate::env::SCHEMA),
        Command::Explain(req) => crate::explain::run(&req),
        Command::Audit(cmd) => crate::audit::cmd::run(cmd),
        Command::Test(args) => crate::policytest::run(&args),
        Command::Diff(args) => crate::diff::run(&args),
        Command::Replay(args) => crate::replay::run(&args),
        Command::Schema => print_out(&format!("{}\n", config::json_schema())),
        Command::Token {
            secret_env,
            secret_file,
            config,
            sub,
            roles,
            tenant,
            ttl,
            iss,
            aud,
            jti,
        } => {
            let args = TokenArgs {
                secret_env,
                secret_file,
                config,
                spec: (sub, roles, tenant, ttl, iss, aud, jti),
            };
            match token(args) {
                Ok(t) => {
                    println!("{t}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("fortress token: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Health { url, timeout } => crate::health::run(&url, &timeout),
        Command::Version => {
            println!("fortress {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Run { config, threads } => {
            init_logging(cli.log_format);
            // Settings and the environment policy first: every reason not to start, in one
            // fatal line, before anything is bound (SPEC §4).
            let reviewed = match config::load_file_reviewed(
                &config,
                &config::production::Runtime::process(false),
            ) {
                Ok(r) => r,
                Err(e) => {
                    error!(reasons = %e.one_line(), "fortress cannot start");
                    return ExitCode::from(EXIT_REFUSED);
                }
            };
            for r in &reviewed.relaxations {
                warn!(relaxation = %r, "local relaxation (environment: local)");
            }
            block_on(threads, async move {
                let hup = server::signals::sighup();
                let term = server::signals::install_terminate();
                serve(
                    Fortress::start_with(reviewed.policy, Some(config)).await,
                    hup,
                    term,
                )
                .await
            })
        }
        Command::Demo {
            listen,
            admin,
            audit_dir,
        } => {
            init_logging(cli.log_format);
            let audit_dir = audit_dir.unwrap_or_else(demo::default_audit_dir);
            block_on(None, async move {
                let term = server::signals::install_terminate();
                let started = demo::start(listen, admin, &audit_dir).await;
                if let Ok(f) = &started {
                    println!("{}", demo::banner(f, &audit_dir));
                }
                serve(started, None, term).await
            })
        }
    }
}

struct TokenArgs {
    secret_env: Option<String>,
    secret_file: Option<PathBuf>,
    config: Option<PathBuf>,
    #[allow(clippy::type_complexity)]
    spec: (
        String,
        Vec<String>,
        Option<String>,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
    ),
}

fn token(args: TokenArgs) -> Result<String, String> {
    let (sub, roles, tenant, ttl, iss, aud, jti) = args.spec;
    let (mut default_iss, mut default_aud) = (None, None);
    if let Some(path) = &args.config {
        let config = config::load_file(path).map_err(|e| e.one_line())?;
        if config.server.environment == config::Environment::Production {
            return Err(format!(
                "{} says `environment: production`: tokens are minted for local testing only",
                path.display()
            ));
        }
        if let Some(a) = &config.auth {
            default_iss = Some(a.jwt.issuer.clone());
            default_aud = a.jwt.audiences.first().cloned();
        }
    }
    let secret = match (&args.secret_env, &args.secret_file) {
        (Some(name), _) => config::Env::var(&config::ProcessEnv, name)
            .ok_or_else(|| format!("environment variable `{name}` is not set"))?,
        (None, Some(p)) => std::fs::read_to_string(p)
            .map_err(|e| format!("{}: {e}", p.display()))?
            .trim_end_matches(['\n', '\r'])
            .to_string(),
        (None, None) => {
            return Err("give the secret with --secret-env NAME or --secret-file PATH".into());
        }
    };
    let ttl = config::compile::parse_duration(&ttl)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("`{ttl}` is not a duration (e.g. 15m, 1h)"))?;
    let spec = crate::auth::token::TokenSpec {
        subject: sub,
        roles,
        tenant,
        issuer: iss
            .or(default_iss)
            .ok_or("give --iss (or --config with authentication)")?,
        audience: aud
            .or(default_aud)
            .ok_or("give --aud (or --config with authentication)")?,
        ttl_secs: ttl.as_secs(),
        jti,
    };
    crate::auth::token::mint(
        &spec,
        secret.as_bytes(),
        jsonwebtoken::get_current_timestamp(),
    )
}

/// `fortress run`'s exit code when the config or the environment policy refuses the start.
pub const EXIT_REFUSED: u8 = 2;

fn check(files: &[PathBuf], offline: bool) -> ExitCode {
    let mut ok = true;
    let rt = config::production::Runtime::process(offline);
    for f in files {
        match config::load_file_reviewed(f, &rt) {
            Ok(config::Reviewed {
                policy: c,
                relaxations,
            }) => {
                for w in &c.warnings {
                    eprintln!("warning: {w}");
                }
                for r in &relaxations {
                    eprintln!("warning: {}: local relaxation: {r}", f.display());
                }
                println!("{}: ok (policy hash {})", f.display(), c.hash);
            }
            Err(e) => {
                ok = false;
                eprintln!("{e}");
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn serve(
    started: Result<Fortress, crate::StartError>,
    hup: Option<tokio::signal::unix::Signal>,
    term: server::signals::Terminate,
) -> ExitCode {
    let fortress = match started {
        Ok(f) => f,
        Err(e) => {
            error!(reasons = %e.to_string().replace('\n', "; "), "fortress cannot start");
            return ExitCode::FAILURE;
        }
    };
    if let Some(hup) = hup {
        tokio::spawn(server::signals::forward_sighup(
            hup,
            fortress.state.reload.clone(),
        ));
    }
    let mut term = term;
    server::signals::terminate(&mut term).await;
    fortress.shutdown();
    // A second SIGTERM/SIGINT during `shutdown_delay` drains at once.
    if term.installed() {
        let stopper = fortress.stopper();
        tokio::spawn(async move {
            server::signals::terminate(&mut term).await;
            stopper.now();
        });
    }
    fortress.wait().await;
    ExitCode::SUCCESS
}

fn block_on<F: std::future::Future<Output = ExitCode>>(threads: Option<usize>, fut: F) -> ExitCode {
    // `--threads`, else tokio's own TOKIO_WORKER_THREADS, else one worker per core.
    let threads = threads
        .or_else(|| crate::env::var(crate::env::TOKIO_WORKER_THREADS).and_then(|v| v.parse().ok()));
    // One thread: the current-thread scheduler does the same work without the work-stealing
    // machinery (fewer atomics and wake-ups, lower tail latency, less memory).
    let mut builder = match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n.max(1));
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    builder.enable_all();
    match builder.build() {
        Ok(rt) => rt.block_on(fut),
        Err(e) => {
            eprintln!("fortress: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = crate::env::var(crate::env::RUST_LOG)
        .and_then(|f| tracing_subscriber::EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
