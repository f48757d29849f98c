//! The `fortress` binary: argv → [`fortress::cli::run`] → exit code.

fn main() -> std::process::ExitCode {
    fortress::cli::run()
}

/// mimalloc instead of glibc's malloc: about 45 allocations per proxied request cost 6 % fewer
/// instructions and +9–11 % req/s on the bench, at the same idle and per-connection memory
/// (built without transparent huge pages: with them, idle RSS went from 14 to 24 MiB).
/// docs/performance.md#allocator has the figures.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
