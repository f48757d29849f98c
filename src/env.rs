//! Every environment variable fortress reads goes through this module, and each is declared
//! in `.env.schema` at the repository root (name, type, default, description), which
//! `fortress env` prints. `tests/env_schema.rs` fails when the code and the schema disagree.
//!
//! Two kinds of reads: [`var`] for a declared variable (one of [`NAMES`]), and [`named`] for
//! a variable the operator names (a config's `secret: { env: NAME }`, `--secret-env`,
//! `--hmac-key-env`), which is not in the schema.

use std::ffi::OsString;

/// `.env.schema`, compiled in.
pub const SCHEMA: &str = include_str!("../.env.schema");

/// The test clock file (see [`crate::clock`]).
pub const FORTRESS_TEST_CLOCK: &str = "FORTRESS_TEST_CLOCK";
/// The log filter.
pub const RUST_LOG: &str = "RUST_LOG";
/// Runtime worker threads.
pub const TOKIO_WORKER_THREADS: &str = "TOKIO_WORKER_THREADS";
/// OpenTelemetry service name (read by the trace exporter).
pub const OTEL_SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
/// OTLP endpoint for every signal.
pub const OTEL_EXPORTER_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// OTLP endpoint for traces.
pub const OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
/// Trace sampler.
pub const OTEL_TRACES_SAMPLER: &str = "OTEL_TRACES_SAMPLER";
/// Trace sampler argument.
pub const OTEL_TRACES_SAMPLER_ARG: &str = "OTEL_TRACES_SAMPLER_ARG";

/// `true` turns span export off, even with an endpoint in the config file.
pub const OTEL_SDK_DISABLED: &str = "OTEL_SDK_DISABLED";

/// `none` turns span export off.
pub const OTEL_TRACES_EXPORTER: &str = "OTEL_TRACES_EXPORTER";

/// OTLP protocol.
pub const OTEL_EXPORTER_OTLP_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";

/// OTLP protocol for traces (over OTEL_EXPORTER_OTLP_PROTOCOL).
pub const OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL";

/// Timeout of one export call, in milliseconds.
pub const OTEL_EXPORTER_OTLP_TIMEOUT: &str = "OTEL_EXPORTER_OTLP_TIMEOUT";

/// Timeout of one trace export call, in milliseconds (over OTEL_EXPORTER_OTLP_TIMEOUT).
pub const OTEL_EXPORTER_OTLP_TRACES_TIMEOUT: &str = "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT";

/// Spans waiting for export, at most.
pub const OTEL_BSP_MAX_QUEUE_SIZE: &str = "OTEL_BSP_MAX_QUEUE_SIZE";

/// Longest wait before a batch is sent, in milliseconds.
pub const OTEL_BSP_SCHEDULE_DELAY: &str = "OTEL_BSP_SCHEDULE_DELAY";

/// Most spans per export call.
pub const OTEL_BSP_MAX_EXPORT_BATCH_SIZE: &str = "OTEL_BSP_MAX_EXPORT_BATCH_SIZE";

/// Every declared variable, in schema order.
pub const NAMES: &[&str] = &[
    FORTRESS_TEST_CLOCK,
    RUST_LOG,
    TOKIO_WORKER_THREADS,
    OTEL_SERVICE_NAME,
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    OTEL_TRACES_SAMPLER,
    OTEL_TRACES_SAMPLER_ARG,
    OTEL_SDK_DISABLED,
    OTEL_TRACES_EXPORTER,
    OTEL_EXPORTER_OTLP_PROTOCOL,
    OTEL_EXPORTER_OTLP_TRACES_PROTOCOL,
    OTEL_EXPORTER_OTLP_TIMEOUT,
    OTEL_EXPORTER_OTLP_TRACES_TIMEOUT,
    OTEL_BSP_MAX_QUEUE_SIZE,
    OTEL_BSP_SCHEDULE_DELAY,
    OTEL_BSP_MAX_EXPORT_BATCH_SIZE,
];

/// One declared variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    /// Its name.
    pub name: String,
    /// `string`, `path`, `integer`, `url`, `float` or `filter`.
    pub kind: String,
    /// The default (`-`: unset).
    pub default: String,
    /// What it does.
    pub description: String,
}

/// The declarations of `.env.schema`; a malformed line is reported as `Err(line number)`.
pub fn schema() -> Result<Vec<Declared>, usize> {
    let mut out = Vec::new();
    for (i, line) in SCHEMA.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut f = line.splitn(4, " | ").map(str::trim);
        match (f.next(), f.next(), f.next(), f.next()) {
            (Some(n), Some(k), Some(d), Some(desc)) if !n.is_empty() && !desc.is_empty() => out
                .push(Declared {
                    name: n.to_owned(),
                    kind: k.to_owned(),
                    default: d.to_owned(),
                    description: desc.to_owned(),
                }),
            _ => return Err(i + 1),
        }
    }
    Ok(out)
}

/// Whether `name` is declared.
pub fn is_declared(name: &str) -> bool {
    NAMES.contains(&name)
}

/// A declared variable's value (set and valid UTF-8). `name` must be one of [`NAMES`].
pub fn var(name: &str) -> Option<String> {
    debug_assert!(is_declared(name), "{name} is not declared in .env.schema");
    std::env::var(name).ok()
}

/// A declared variable's raw value (a path need not be UTF-8).
pub fn var_os(name: &str) -> Option<OsString> {
    debug_assert!(is_declared(name), "{name} is not declared in .env.schema");
    std::env::var_os(name)
}

/// A variable the operator named (config secrets, `--secret-env`): not in the schema.
pub fn named(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The names of the `FORTRESS_*` variables set in the process environment.
pub fn fortress_var_names() -> Vec<String> {
    std::env::vars_os()
        .map(|(k, _)| k.to_string_lossy().into_owned())
        .filter(|k| k.starts_with("FORTRESS_"))
        .collect()
}

/// The `FORTRESS_*` variables set in the process environment that the schema does not
/// declare, sorted.
pub fn undeclared_fortress_vars() -> Vec<String> {
    undeclared_among(fortress_var_names())
}

/// [`undeclared_fortress_vars`] over a given list of names.
pub fn undeclared_among(names: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = names
        .into_iter()
        .filter(|n| n.starts_with("FORTRESS_") && !is_declared(n))
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_parses_and_lists_exactly_the_declared_names() {
        let names: Vec<String> = schema()
            .expect("well-formed")
            .into_iter()
            .map(|d| d.name)
            .collect();
        assert_eq!(
            names,
            NAMES.iter().map(|s| s.to_string()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn only_undeclared_fortress_names_are_reported() {
        let got = undeclared_among(
            [
                "FORTRESS_TEST_CLOCK",
                "FORTRESS_TEST_CLOK",
                "PATH",
                "FORTRESS_X",
                "FORTRESS_X",
            ]
            .map(String::from),
        );
        assert_eq!(
            got,
            vec!["FORTRESS_TEST_CLOK".to_string(), "FORTRESS_X".to_string()]
        );
    }
}
