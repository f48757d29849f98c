//! `fortress test`: decision tables (`*.tests.yaml`) run through the proxy's own `decide()`,
//! offline. `table.rs` is the file format (strict, located), `judge.rs` loads a policy with a
//! test key and decides one request, `run.rs` runs a table, `junit.rs` writes the CI report.
//! Reference: docs/policy-testing.md.

pub mod judge;
pub mod junit;
pub mod run;
pub mod table;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use judge::TestPolicy;
use table::Table;

/// `fortress test` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct TestArgs {
    /// Tests files (`*.tests.yaml` / `*.tests.yml`), and optionally one policy file: given,
    /// it is tested instead of the policy each tests file names with `policy:`.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Also write a JUnit XML report here.
    #[arg(long)]
    pub junit: Option<PathBuf>,
    /// Fail when a route of the policy is reached by no case.
    #[arg(long)]
    pub require_coverage: bool,
}

/// Exit code when a file cannot be used (unreadable, invalid table or policy).
pub const EXIT_BAD_INPUT: u8 = 2;

/// Whether `path` names a tests file (by its name: `*.tests.yaml` or `*.tests.yml`).
pub fn is_tests_file(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".tests.yaml") || n.ends_with(".tests.yml"))
}

/// Runs `fortress test`: 0 every case passed, 1 a case failed (or, with
/// `--require-coverage`, a route went unexercised), 2 bad input.
pub fn run(args: &TestArgs) -> ExitCode {
    let (tables, policies): (Vec<&PathBuf>, Vec<&PathBuf>) =
        args.files.iter().partition(|p| is_tests_file(p));
    if policies.len() > 1 {
        eprintln!(
            "fortress test: at most one policy file may be given ({}); tests files are named \
             *.tests.yaml",
            policies
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        return ExitCode::from(EXIT_BAD_INPUT);
    }
    if tables.is_empty() {
        eprintln!("fortress test: no tests file (*.tests.yaml) given");
        return ExitCode::from(EXIT_BAD_INPUT);
    }
    let mut loaded = Vec::new();
    let mut bad = false;
    for t in &tables {
        match Table::load(t) {
            Ok(t) => loaded.push(t),
            Err(errors) => {
                bad = true;
                for e in errors {
                    eprintln!("{e}");
                }
            }
        }
    }
    let cli_policy = match policies.first().map(|p| TestPolicy::load(p)).transpose() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    if bad {
        return ExitCode::from(EXIT_BAD_INPUT);
    }
    let rt = match judge::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fortress test: {e}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    let mut results = Vec::new();
    for table in &loaded {
        let policy = match &cli_policy {
            Some(p) => p.clone(),
            None => {
                let Some(path) = table.policy_path() else {
                    eprintln!(
                        "{}: no `policy:` in the file and no policy file given",
                        table.path.display()
                    );
                    return ExitCode::from(EXIT_BAD_INPUT);
                };
                match TestPolicy::load(&path) {
                    Ok(p) => p,
                    Err(e) => {
                        eprintln!("{e}");
                        return ExitCode::from(EXIT_BAD_INPUT);
                    }
                }
            }
        };
        match run::run_table(table, &policy, &rt) {
            Ok(r) => results.push(r),
            Err(e) => {
                eprintln!("{}: {e}", table.path.display());
                return ExitCode::from(EXIT_BAD_INPUT);
            }
        }
    }
    let mut failed = false;
    for r in &results {
        for line in r.failure_lines() {
            println!("{line}");
        }
        let n_failed = r.failures().count();
        failed |= n_failed > 0;
        println!(
            "{}: {} passed, {n_failed} failed (policy {}, hash {})",
            r.path.display(),
            r.cases.len() - n_failed,
            r.policy.display(),
            r.policy_hash
        );
        if r.uncovered.is_empty() {
            println!(
                "coverage: every route reached ({} of {})",
                r.routes, r.routes
            );
        } else {
            println!(
                "coverage: {} of {} routes reached; no case reaches: {}",
                r.routes - r.uncovered.len(),
                r.routes,
                r.uncovered.join(", ")
            );
            failed |= args.require_coverage;
        }
    }
    if let Some(path) = &args.junit
        && let Err(e) = std::fs::write(path, junit::render(&results))
    {
        eprintln!("fortress test: {}: {e}", path.display());
        return ExitCode::from(EXIT_BAD_INPUT);
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
