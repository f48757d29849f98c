//! The `fortress` binary: argv → [`fortress::cli::run`] → exit code.

fn main() -> std::process::ExitCode {
    fortress::cli::run()
}
