//! The standard `process_*` metrics (the names the Prometheus client libraries use), read
//! from `/proc/self` at scrape time on Linux; absent elsewhere. A few reads of small files
//! instead of the prometheus crate's `process` feature, which pulls in the `procfs` crate
//! and its dependencies for the same six numbers.
//!
//! CPU times in `/proc/self/stat` are in clock ticks of `USER_HZ`, which the kernel fixes at
//! 100 for user space on every architecture fortress runs on (x86_64, aarch64).

use super::scrape::{Kind, family};

const USER_HZ: f64 = 100.0;

/// Appends the process families to `out` (nothing when `/proc/self` cannot be read).
pub fn render(out: &mut Vec<u8>) {
    let Some(p) = read() else { return };
    let mut s = String::with_capacity(1024);
    family(
        &mut s,
        "process_cpu_seconds_total",
        Kind::Counter,
        "Total user and system CPU time spent in seconds.",
        p.cpu_seconds,
    );
    family(
        &mut s,
        "process_resident_memory_bytes",
        Kind::Gauge,
        "Resident memory size in bytes.",
        p.rss_bytes,
    );
    family(
        &mut s,
        "process_virtual_memory_bytes",
        Kind::Gauge,
        "Virtual memory size in bytes.",
        p.vsize_bytes,
    );
    family(
        &mut s,
        "process_start_time_seconds",
        Kind::Gauge,
        "Start time of the process since unix epoch in seconds.",
        p.start_time,
    );
    if let Some(fds) = p.open_fds {
        family(
            &mut s,
            "process_open_fds",
            Kind::Gauge,
            "Number of open file descriptors.",
            fds,
        );
    }
    if let Some(max) = p.max_fds {
        family(
            &mut s,
            "process_max_fds",
            Kind::Gauge,
            "Maximum number of open file descriptors.",
            max,
        );
    }
    out.extend_from_slice(s.as_bytes());
}

/// What `/proc` says about this process.
#[derive(Debug, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub rss_bytes: f64,
    pub vsize_bytes: f64,
    pub start_time: f64,
    pub open_fds: Option<f64>,
    pub max_fds: Option<f64>,
}

fn read() -> Option<ProcessStats> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let boot = std::fs::read_to_string("/proc/stat").ok()?;
    let mut p = parse(&stat, &status, &boot)?;
    p.open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count() as f64);
    p.max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| max_open_files(&l));
    Some(p)
}

/// Parses `/proc/self/stat`, `/proc/self/status` and `/proc/stat`.
pub fn parse(stat: &str, status: &str, boot: &str) -> Option<ProcessStats> {
    // The command name (field 2) is in parentheses and may hold spaces and ')': the fields
    // after it start after the last ')'.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // `rest` starts at field 3 (state): field N is at index N - 3.
    let field = |n: usize| -> Option<f64> { fields.get(n - 3)?.parse::<f64>().ok() };
    let (utime, stime) = (field(14)?, field(15)?);
    let start_ticks = field(22)?;
    let vsize = field(23)?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_ascii_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())?;
    let btime = boot
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse::<f64>().ok())?;
    Some(ProcessStats {
        cpu_seconds: (utime + stime) / USER_HZ,
        rss_bytes: rss_kib * 1024.0,
        vsize_bytes: vsize,
        start_time: btime + start_ticks / USER_HZ,
        open_fds: None,
        max_fds: None,
    })
}

/// The soft limit of "Max open files" in `/proc/self/limits` (`None` when unlimited).
pub fn max_open_files(limits: &str) -> Option<f64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_ascii_whitespace()
        .next()?;
    soft.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        // A command name with a space and a ')' in it.
        let stat = "4242 (for tress) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 \
                    9 0 123400 104857600 2000 18446744073709551615";
        let status = "Name:\tfortress\nVmPeak:\t  1000 kB\nVmRSS:\t    8192 kB\nThreads:\t9\n";
        let boot = "cpu  1 2 3\nbtime 1764633600\nprocesses 12\n";
        let p = parse(stat, status, boot).expect("parsed");
        assert_eq!(
            p,
            ProcessStats {
                cpu_seconds: 3.0,
                rss_bytes: 8192.0 * 1024.0,
                vsize_bytes: 104_857_600.0,
                start_time: 1_764_633_600.0 + 1234.0,
                open_fds: None,
                max_fds: None,
            }
        );
        assert_eq!(parse("4242 (x", status, boot), None, "cut short");
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024.0));
        assert_eq!(
            max_open_files("Max open files            unlimited            unlimited   files\n"),
            None
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reads_this_process() {
        let p = read().expect("/proc/self readable");
        assert!(p.rss_bytes > 0.0);
        assert!(p.open_fds.is_some_and(|n| n >= 3.0));
        let mut out = Vec::new();
        render(&mut out);
        let text = String::from_utf8(out).expect("utf-8");
        assert!(text.contains("\nprocess_resident_memory_bytes "), "{text}");
    }
}
