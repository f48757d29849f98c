//! The command line: `run`, `check`, `schema`, `demo`, `version`.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tracing::error;

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
    Check {
        /// Files to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the JSON Schema of the config file.
    Schema,
    /// Run an embedded demo app behind fortress with policies/demo.yaml.
    Demo {
        /// Proxy listener.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Admin listener.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
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

/// Parses argv and runs the command.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { files } => check(&files),
        Command::Schema => {
            println!("{}", config::json_schema());
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!("fortress {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Run { config, threads } => {
            init_logging(cli.log_format);
            block_on(threads, async move {
                let hup = server::signals::sighup();
                serve(Fortress::start(&config).await, hup).await
            })
        }
        Command::Demo { listen, admin } => {
            init_logging(cli.log_format);
            block_on(None, async move {
                let started = demo::start(listen, admin).await;
                if let Ok(f) = &started {
                    println!("{}", demo::banner(f));
                }
                serve(started, None).await
            })
        }
    }
}

fn check(files: &[PathBuf]) -> ExitCode {
    let mut ok = true;
    for f in files {
        match config::load_file(f) {
            Ok(c) => println!("{}: ok (policy hash {})", f.display(), c.hash),
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
    server::signals::terminate().await;
    fortress.shutdown();
    fortress.wait().await;
    ExitCode::SUCCESS
}

fn block_on<F: std::future::Future<Output = ExitCode>>(threads: Option<usize>, fut: F) -> ExitCode {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(n) = threads {
        builder.worker_threads(n.max(1));
    }
    match builder.build() {
        Ok(rt) => rt.block_on(fut),
        Err(e) => {
            eprintln!("fortress: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
