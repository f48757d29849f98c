//! `telemetry:` and the standard OpenTelemetry variables → [`TelemetrySettings`].
//!
//! A value in the file wins over its variable; a variable fills what the file leaves out.
//! Export is off unless an endpoint is known (`otlp_endpoint`,
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT`), and off whatever
//! the endpoint (the file's too) with `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`.

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use super::Env;
use super::yaml::{ConfigError, Located};
use crate::policy::telemetry::{OtlpSettings, Root, Sampler, TelemetrySettings};

/// `telemetry:` settings (trace sampling and OTLP/HTTP export of one span per request).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTelemetry {
    /// OTLP/HTTP collector base URL (`http://HOST:4318`); spans are POSTed to
    /// `<otlp_endpoint>/v1/traces` as OTLP JSON. Overrides `OTEL_EXPORTER_OTLP_ENDPOINT`.
    /// Restart to change.
    #[serde(default)]
    pub otlp_endpoint: Option<Located<String>>,
    /// `service.name` of the exported spans (default `OTEL_SERVICE_NAME`, else `fortress`).
    #[serde(default)]
    pub service_name: Option<Located<String>>,
    /// `always_on`, `always_off`, `traceidratio`, `parentbased_always_on` (default),
    /// `parentbased_always_off`, `parentbased_traceidratio` (as `OTEL_TRACES_SAMPLER`). The
    /// `parentbased_*` samplers keep the `sampled` flag of a trusted peer's `traceparent`.
    #[serde(default)]
    pub sampler: Option<Located<String>>,
    /// The fraction of traces the `*traceidratio` samplers keep, 0 to 1 (as
    /// `OTEL_TRACES_SAMPLER_ARG`; default 1).
    #[serde(default)]
    pub ratio: Option<Located<f64>>,
    /// Finished requests waiting for export at most (default 2048, at most 1000000, as
    /// `OTEL_BSP_MAX_QUEUE_SIZE`); beyond, their spans are dropped and counted, never waited
    /// for. Restart to change.
    #[serde(default)]
    pub queue: Option<Located<u32>>,
}

const DEFAULT_QUEUE: usize = 2048;
/// A bound on the queue (each waiting request holds up to about 1.5 KiB).
const MAX_QUEUE: usize = 1_000_000;
const DEFAULT_BATCH: usize = 512;
const DEFAULT_DELAY: Duration = Duration::from_millis(1000);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Compiles `telemetry:` (possibly absent) with the `OTEL_*` variables of `env`.
pub fn compile(
    raw: Option<&RawTelemetry>,
    env: &dyn Env,
    errors: &mut Vec<ConfigError>,
) -> TelemetrySettings {
    let var = |name: &str| env.var(name).filter(|v| !v.trim().is_empty());
    let ratio = match raw.and_then(|r| r.ratio.as_ref()) {
        Some(r) if (0.0..=1.0).contains(&r.value) => r.value,
        Some(r) => {
            errors.push(ConfigError::at(r.pos, "`ratio` must be between 0 and 1"));
            1.0
        }
        None => match var("OTEL_TRACES_SAMPLER_ARG") {
            None => 1.0,
            Some(v) => match v.trim().parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => r,
                _ => {
                    errors.push(ConfigError::whole(format!(
                        "OTEL_TRACES_SAMPLER_ARG=`{v}`: expected a ratio between 0 and 1"
                    )));
                    1.0
                }
            },
        },
    };
    let sampler = match raw.and_then(|r| r.sampler.as_ref()) {
        Some(s) => parse_sampler(&s.value, ratio).unwrap_or_else(|| {
            errors.push(ConfigError::at(s.pos, sampler_error(&s.value)));
            Sampler::default()
        }),
        None => match var("OTEL_TRACES_SAMPLER") {
            None => Sampler::default(),
            Some(v) => parse_sampler(v.trim(), ratio).unwrap_or_else(|| {
                errors.push(ConfigError::whole(format!(
                    "OTEL_TRACES_SAMPLER: {}",
                    sampler_error(&v)
                )));
                Sampler::default()
            }),
        },
    };
    TelemetrySettings {
        sampler,
        otlp: otlp(raw, &var, errors),
    }
}

fn otlp(
    raw: Option<&RawTelemetry>,
    var: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
) -> Option<OtlpSettings> {
    // The operator's switches win over everything, the file's endpoint included.
    let disabled = var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    match var("OTEL_TRACES_EXPORTER").as_deref().map(str::trim) {
        None | Some("otlp") => {}
        Some("none") => return None,
        Some(v) => {
            errors.push(ConfigError::whole(format!(
                "OTEL_TRACES_EXPORTER=`{v}`: fortress exports `otlp` (or `none`)"
            )));
            return None;
        }
    }
    if disabled {
        return None;
    }
    let configured = raw.and_then(|r| r.otlp_endpoint.as_ref());
    let (url, pos, name) = match configured {
        Some(e) => (traces_url(&e.value), Some(e.pos), "`otlp_endpoint`"),
        None => {
            match (
                var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
                var("OTEL_EXPORTER_OTLP_ENDPOINT"),
            ) {
                (Some(t), _) => (
                    t.trim().to_owned(),
                    None,
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                ),
                (None, Some(b)) => (traces_url(&b), None, "OTEL_EXPORTER_OTLP_ENDPOINT"),
                (None, None) => return None,
            }
        }
    };
    let mut fail = |msg: String| match pos {
        Some(p) => errors.push(ConfigError::at(p, msg)),
        None => errors.push(ConfigError::whole(msg)),
    };
    let endpoint = match url.parse::<http::Uri>() {
        Ok(u) if u.scheme_str() == Some("http") && u.authority().is_some() => u,
        Ok(u) if u.scheme_str() == Some("https") => {
            fail(format!(
                "{name}: `{url}`: fortress exports over plain HTTP only; send spans to a \
                 collector or agent on this host or pod (http://127.0.0.1:4318)"
            ));
            return None;
        }
        _ => {
            fail(format!(
                "{name}: `{url}` is not an http:// URL with a host (e.g. http://127.0.0.1:4318)"
            ));
            return None;
        }
    };
    for protocol in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        if let Some(p) = var(protocol)
            && !matches!(p.trim(), "http/json" | "http/protobuf")
        {
            errors.push(ConfigError::whole(format!(
                "{protocol}=`{p}`: fortress exports OTLP/HTTP (JSON); use the collector's \
                 HTTP receiver (port 4318) with `http/json` or `http/protobuf`"
            )));
            return None;
        }
    }
    let service_name = match raw.and_then(|r| r.service_name.as_ref()) {
        Some(s) if !s.value.trim().is_empty() => s.value.clone(),
        Some(s) => {
            errors.push(ConfigError::at(s.pos, "`service_name` must not be empty"));
            return None;
        }
        None => var("OTEL_SERVICE_NAME").unwrap_or_else(|| "fortress".to_owned()),
    };
    let queue = match raw.and_then(|r| r.queue.as_ref()) {
        Some(q) if q.value == 0 || q.value as usize > MAX_QUEUE => {
            errors.push(ConfigError::at(
                q.pos,
                format!("`queue` must be between 1 and {MAX_QUEUE}"),
            ));
            return None;
        }
        Some(q) => q.value as usize,
        None => match number(var, "OTEL_BSP_MAX_QUEUE_SIZE", errors) {
            Some(n) if n > MAX_QUEUE => {
                errors.push(ConfigError::whole(format!(
                    "OTEL_BSP_MAX_QUEUE_SIZE=`{n}`: at most {MAX_QUEUE}"
                )));
                return None;
            }
            n => n.unwrap_or(DEFAULT_QUEUE),
        },
    };
    let batch = number(var, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", errors).unwrap_or(DEFAULT_BATCH);
    let delay = number(var, "OTEL_BSP_SCHEDULE_DELAY", errors)
        .map_or(DEFAULT_DELAY, |ms| Duration::from_millis(ms as u64));
    let timeout = number(var, "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", errors)
        .or_else(|| number(var, "OTEL_EXPORTER_OTLP_TIMEOUT", errors))
        .map_or(DEFAULT_TIMEOUT, |ms| Duration::from_millis(ms as u64));
    Some(OtlpSettings {
        endpoint,
        service_name,
        queue,
        batch: batch.min(queue),
        delay,
        timeout,
    })
}

/// A positive integer variable (`None` when unset; an error when not a positive integer).
fn number(
    var: &dyn Fn(&str) -> Option<String>,
    name: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<usize> {
    let v = var(name)?;
    match v.trim().parse::<usize>() {
        Ok(n) if n > 0 => Some(n),
        _ => {
            errors.push(ConfigError::whole(format!(
                "{name}=`{v}`: expected a positive integer"
            )));
            None
        }
    }
}

/// `BASE/v1/traces`, as the OTLP/HTTP exporters build it from `OTEL_EXPORTER_OTLP_ENDPOINT`.
fn traces_url(base: &str) -> String {
    format!("{}/v1/traces", base.trim().trim_end_matches('/'))
}

fn parse_sampler(name: &str, ratio: f64) -> Option<Sampler> {
    Some(match name {
        "always_on" => Sampler::AlwaysOn,
        "always_off" => Sampler::AlwaysOff,
        "traceidratio" => Sampler::TraceIdRatio(ratio),
        "parentbased_always_on" => Sampler::ParentBased(Root::AlwaysOn),
        "parentbased_always_off" => Sampler::ParentBased(Root::AlwaysOff),
        "parentbased_traceidratio" => Sampler::ParentBased(Root::TraceIdRatio(ratio)),
        _ => return None,
    })
}

fn sampler_error(name: &str) -> String {
    format!(
        "unknown sampler `{name}`: expected always_on, always_off, traceidratio, \
         parentbased_always_on, parentbased_always_off or parentbased_traceidratio"
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    struct MapEnv(HashMap<&'static str, &'static str>);

    impl Env for MapEnv {
        fn var(&self, name: &str) -> Option<String> {
            self.0.get(name).map(|v| (*v).to_owned())
        }
    }

    fn from_env(vars: &[(&'static str, &'static str)]) -> (TelemetrySettings, Vec<String>) {
        let env = MapEnv(vars.iter().copied().collect());
        let mut errors = Vec::new();
        let s = compile(None, &env, &mut errors);
        (s, errors.into_iter().map(|e| e.message).collect())
    }

    #[test]
    fn off_by_default() {
        let (s, errors) = from_env(&[]);
        assert!(errors.is_empty());
        assert_eq!(s.otlp, None);
        assert_eq!(s.sampler, Sampler::ParentBased(Root::AlwaysOn));
    }

    #[test]
    fn standard_variables() {
        let (s, errors) = from_env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
            ("OTEL_SERVICE_NAME", "checkout-sidecar"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ]);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(s.sampler, Sampler::ParentBased(Root::TraceIdRatio(0.25)));
        let o = s.otlp.expect("on");
        assert_eq!(o.endpoint, "http://collector:4318/v1/traces");
        assert_eq!(o.service_name, "checkout-sidecar");
        assert_eq!(o.delay, Duration::from_millis(200));
        assert_eq!((o.queue, o.batch), (2048, 512));
        // The traces endpoint is taken as it is.
        let (s, _) = from_env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://b:9999/custom"),
        ]);
        assert_eq!(s.otlp.expect("on").endpoint, "http://b:9999/custom");
        // Disabled whatever the endpoint.
        for off in [
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ] {
            let (s, errors) = from_env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4318"), off]);
            assert!(errors.is_empty());
            assert_eq!(s.otlp, None, "{off:?}");
        }
    }

    #[test]
    fn the_switches_win_over_the_file() {
        let text = "version: 1\nserver:\n  listen: 127.0.0.1:0\n  upstream: http://127.0.0.1:1\n  \
                    environment: local\ntelemetry:\n  otlp_endpoint: http://c:4318\n  \
                    service_name: from-file\n";
        let load = |vars: &[(&'static str, &'static str)]| {
            let env = MapEnv(vars.iter().copied().collect());
            crate::config::load_str_with_env(text, std::path::Path::new("f.yaml"), &env)
                .expect("valid")
                .telemetry
                .otlp
        };
        let on = load(&[
            ("OTEL_SERVICE_NAME", "from-env"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318"),
        ])
        .expect("on");
        assert_eq!(on.endpoint, "http://c:4318/v1/traces");
        assert_eq!(on.service_name, "from-file");
        assert_eq!(load(&[("OTEL_SDK_DISABLED", "true")]), None);
        assert_eq!(load(&[("OTEL_TRACES_EXPORTER", "none")]), None);
    }

    #[test]
    fn bad_variables_are_errors() {
        for (vars, expected) in [
            (
                vec![("OTEL_TRACES_SAMPLER", "sometimes")],
                "OTEL_TRACES_SAMPLER: unknown sampler `sometimes`",
            ),
            (
                vec![("OTEL_TRACES_SAMPLER_ARG", "1.5")],
                "OTEL_TRACES_SAMPLER_ARG=`1.5`",
            ),
            (
                vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4318")],
                "plain HTTP only",
            ),
            (
                vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")],
                "not an http:// URL",
            ),
            (
                vec![
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                    ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ],
                "OTEL_EXPORTER_OTLP_PROTOCOL=`grpc`",
            ),
            (
                vec![
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                    ("OTEL_BSP_MAX_QUEUE_SIZE", "0"),
                ],
                "OTEL_BSP_MAX_QUEUE_SIZE=`0`",
            ),
            (
                vec![
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                    ("OTEL_BSP_MAX_QUEUE_SIZE", "1000001"),
                ],
                "OTEL_BSP_MAX_QUEUE_SIZE=`1000001`: at most 1000000",
            ),
            (
                vec![
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                    ("OTEL_TRACES_EXPORTER", "zipkin"),
                ],
                "OTEL_TRACES_EXPORTER=`zipkin`",
            ),
        ] {
            let (_, errors) = from_env(&vars);
            assert_eq!(errors.len(), 1, "{vars:?}: {errors:?}");
            assert!(errors[0].contains(expected), "{vars:?}: {errors:?}");
        }
    }

    #[test]
    fn samplers() {
        let t = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert!(Sampler::AlwaysOn.sample(t, Some(false)));
        assert!(!Sampler::AlwaysOff.sample(t, Some(true)));
        let pb = Sampler::ParentBased(Root::AlwaysOn);
        assert!(!pb.sample(t, Some(false)));
        assert!(pb.sample(t, None));
        assert!(!Sampler::ParentBased(Root::AlwaysOff).sample(t, None));
        assert!(Sampler::ParentBased(Root::AlwaysOff).sample(t, Some(true)));
        // Ratio: the low 64 bits of the trace id, shifted to 63, against ratio · 2^63.
        let low = "00000000000000000000000000000000";
        let high = "0000000000000000fffffffffffffffe";
        assert!(Sampler::TraceIdRatio(0.5).sample(low, None));
        assert!(!Sampler::TraceIdRatio(0.5).sample(high, None));
        assert!(!Sampler::TraceIdRatio(0.0).sample(low, None));
        assert!(Sampler::TraceIdRatio(1.0).sample(high, None));
        // About the ratio over many random trace ids.
        let kept = (0u64..10_000)
            .filter(|i| {
                let id = format!("{:016x}{:016x}", i, i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
                Sampler::TraceIdRatio(0.25).sample(&id, None)
            })
            .count();
        assert!((2_200..2_800).contains(&kept), "{kept}");
    }
}
