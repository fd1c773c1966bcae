//! Where and how an output was produced.
//!
//! Every `config.json` and `sweep.json` carries a [`Provenance`]: benign's version and the git
//! commit it was built from (embedded at build time by `build.rs`, so a binary launched from
//! another repository still records its own code), whether that build had uncommitted changes,
//! the full command line, the start time in RFC 3339 UTC, the host, the thread count, the CPU's
//! SIMD features, and the Slurm job and array ids when the process runs under Slurm.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// benign's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The commit benign was built from (12 hex digits), or `unknown` outside a git checkout.
pub const COMMIT: &str = env!("BENIGN_GIT_COMMIT");
/// Whether tracked files differed from [`COMMIT`] at build time: `true`, `false` or `unknown`.
pub const DIRTY: &str = env!("BENIGN_GIT_DIRTY");
/// `benign --version`'s text after the program name.
pub const VERSION_TEXT: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("BENIGN_GIT_COMMIT"),
    ", uncommitted changes: ",
    env!("BENIGN_GIT_DIRTY"),
    ")"
);

/// The Slurm variables recorded when present: the job, and the array task and its layout.
pub const SLURM_VARIABLES: [&str; 8] = [
    "SLURM_JOB_ID",
    "SLURM_JOB_NAME",
    "SLURM_ARRAY_JOB_ID",
    "SLURM_ARRAY_TASK_ID",
    "SLURM_ARRAY_TASK_COUNT",
    "SLURM_ARRAY_TASK_MIN",
    "SLURM_ARRAY_TASK_MAX",
    "SLURM_ARRAY_TASK_STEP",
];

/// Where and how an output was produced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// benign's version ([`VERSION`]).
    pub version: String,
    /// The commit benign was built from ([`COMMIT`]).
    pub commit: String,
    /// Whether that build had uncommitted changes to tracked files (`None`: unknown).
    pub dirty: Option<bool>,
    /// The process's full command line, program name first.
    pub command_line: Vec<String>,
    /// When the job started, RFC 3339 UTC (`2026-12-05T19:04:05Z`).
    pub started_at: String,
    /// The host name.
    pub host: String,
    /// Threads the job computes on.
    pub threads: usize,
    /// SIMD features of the CPU it ran on.
    pub cpu_features: Vec<String>,
    /// The Slurm variables of [`SLURM_VARIABLES`] that were set (empty outside Slurm).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub slurm: BTreeMap<String, String>,
}

impl Provenance {
    /// The provenance of a job of this process starting now on `threads` threads.
    pub fn capture(threads: usize) -> Self {
        Provenance {
            version: VERSION.to_string(),
            commit: COMMIT.to_string(),
            dirty: match DIRTY {
                "true" => Some(true),
                "false" => Some(false),
                _ => None,
            },
            command_line: std::env::args_os()
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
            started_at: utc_timestamp(SystemTime::now()),
            host: host_name(),
            threads,
            cpu_features: crate::cpu::detected_features()
                .into_iter()
                .map(String::from)
                .collect(),
            slurm: SLURM_VARIABLES
                .iter()
                .filter_map(|&name| {
                    let value = std::env::var(name).ok()?;
                    Some((name.to_string(), value))
                })
                .collect(),
        }
    }
}

/// The host name (Linux's `/proc/sys/kernel/hostname`, else `/etc/hostname`, else `$HOSTNAME`),
/// or `unknown`.
pub fn host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .chain(std::env::var("HOSTNAME").ok())
        .map(|s| s.trim().to_string())
        .find(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

/// The UTC calendar fields of a time: (year, month, day, hour, minute, second).
fn utc_fields(time: SystemTime) -> (i64, u32, u32, u64, u64, u64) {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    (y, m, d, rem / 3600, rem / 60 % 60, rem % 60)
}

/// RFC 3339 UTC to the second: `2026-12-05T19:04:05Z`.
pub fn utc_timestamp(time: SystemTime) -> String {
    let (y, m, d, h, min, s) = utc_fields(time);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}Z")
}

/// The same instant for file names (no separators): `20261205T190405Z`.
pub fn utc_compact(time: SystemTime) -> String {
    let (y, m, d, h, min, s) = utc_fields(time);
    format!("{y:04}{m:02}{d:02}T{h:02}{min:02}{s:02}Z")
}

/// Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        // 2000-02-29T12:34:56Z (a leap day) and the epoch.
        let t = UNIX_EPOCH + Duration::from_secs(951_827_696);
        assert_eq!(utc_timestamp(t), "2000-02-29T12:34:56Z");
        assert_eq!(utc_compact(t), "20000229T123456Z");
        assert_eq!(utc_timestamp(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        // 2026-12-31T23:59:59Z
        let t = UNIX_EPOCH + Duration::from_secs(1_798_761_599);
        assert_eq!(utc_timestamp(t), "2026-12-31T23:59:59Z");
    }

    #[test]
    fn provenance_records_the_build_and_the_process() {
        let p = Provenance::capture(3);
        assert_eq!(p.version, VERSION);
        assert_eq!(p.commit, COMMIT);
        assert_eq!(p.threads, 3);
        assert!(!p.command_line.is_empty());
        assert!(!p.host.is_empty());
        assert!(p.started_at.ends_with('Z') && p.started_at.len() == 20);
        let json = serde_json::to_string(&p).unwrap();
        let back: Provenance = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p);
    }
}
