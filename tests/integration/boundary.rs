//! `benign boundary` end to end: a small grid gives the same estimates whatever the shards and
//! threads, resumes without redoing a search, refuses options the measurement sets, and each
//! recorded threshold is where an independent run at that SNR shows its regime switch.

use std::path::{Path, PathBuf};
use std::process::Output;

use benign::boundary::{collect, read_spec, Boundary, BoundarySpec};
use benign::synthetic::config::{InitKind, TrainerKind};
use benign::synthetic::{self, RunConfig, RunOptions};

use super::{bin, ok};

fn scratch(name: &str) -> PathBuf {
    super::temp_scratch("boundary", name)
}

/// Two dimensions a hundredfold apart, n = 10, 4 seeds, a short horizon: 8 searches of 6 + 2 x 3
/// runs each.
const GRID: [&str; 16] = [
    "--dims",
    "1e3,1e5",
    "--samples",
    "10",
    "--seeds",
    "4",
    "--bisection-steps",
    "3",
    "--bootstrap",
    "200",
    "--steps",
    "300",
    "--test-size",
    "300",
    "--snr-range",
    "1e-3:1e2",
];

fn boundary(out: &Path, extra: &[&str]) -> Output {
    super::grid_command("boundary", &GRID, out, extra)
        .output()
        .expect("benign runs")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn shards_threads_and_resumption_give_the_same_estimates() {
    let whole = scratch("whole");
    let out = boundary(&whole, &["--threads", "1"]);
    ok(&out);
    let table = read(&whole.join("boundaries.csv"));
    assert_eq!(table.lines().count(), 1 + 2 * 2, "{table}");

    // A rerun finds every search recorded and rewrites the same estimates.
    let again = boundary(&whole, &["--threads", "2"]);
    ok(&again);
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(stdout.contains("0 searches done (8 skipped"), "{stdout}");
    assert_eq!(read(&whole.join("boundaries.csv")), table);

    // Two shards on two threads: the first alone writes no estimate and says what is missing.
    let sharded = scratch("sharded");
    let first = boundary(&sharded, &["--shard", "0/2", "--threads", "2"]);
    ok(&first);
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(
        stdout.contains("4 of 8 searches not yet recorded"),
        "{stdout}"
    );
    assert!(!sharded.join("boundaries.csv").exists());
    let report = bin()
        .args(["boundary", "--report", "--quiet", "--no-plot", "--out"])
        .arg(&sharded)
        .output()
        .unwrap();
    assert_eq!(report.status.code(), Some(1), "an incomplete report fails");
    ok(&boundary(&sharded, &["--shard", "1/2", "--threads", "2"]));
    assert_eq!(read(&sharded.join("boundaries.csv")), table);
    let fit = |dir: &Path| -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_str(&read(&dir.join("fit.json"))).unwrap();
        v["fits"].clone()
    };
    assert_eq!(fit(&sharded), fit(&whole));

    // Every search ran the scan (6 decades' points) and 3 bisection steps per switched boundary.
    let records = collect(&whole).unwrap();
    assert_eq!(records.len(), 8);
    for r in &records {
        let bisected = Boundary::ALL
            .iter()
            .filter(|b| r.threshold(**b).unwrap().censored.is_none())
            .count();
        assert_eq!(r.evaluations.len(), 6 + 3 * bisected, "{r:?}");
    }
    let _ = std::fs::remove_dir_all(&whole);
    let _ = std::fs::remove_dir_all(&sharded);
}

/// The recorded threshold of a seed brackets its switch: a run at the top of the final bisection
/// interval is on the far side of the boundary, one at its bottom on the near side, with the run
/// configured here from the documented rule (`||mu|| = SNR sigma sqrt(d)`, `lr = lr0 2000 / d`),
/// not by the search's own code. Over every seed of the grid and both boundaries.
#[test]
fn each_threshold_is_where_its_runs_switch() {
    let dir = scratch("thresholds");
    ok(&boundary(&dir, &["--threads", "2"]));
    let spec: BoundarySpec = read_spec(&dir).unwrap();
    let decade = 1.0; // one scan point per decade over 1e-3..1e2
    let half_width = decade / 2f64.powi(spec.bisection_steps as i32) / 2.0;
    let mut checked = 0;
    for r in collect(&dir).unwrap() {
        for boundary in Boundary::ALL {
            let t = r.threshold(boundary).unwrap();
            if t.censored.is_some() || t.scan_switches > 1 {
                continue;
            }
            for (offset, want_above) in [(half_width, true), (-half_width, false)] {
                let x = t.log10_snr + offset;
                let config = RunConfig {
                    dim: r.dim,
                    samples: r.samples,
                    seed: r.seed,
                    signal_norm: 10f64.powf(x) * 1.0 * (r.dim as f64).sqrt(),
                    lr: 0.005 * 2000.0 / r.dim as f64,
                    steps: 300,
                    eval_every: 300,
                    test_size: 300,
                    trainer: TrainerKind::Law,
                    init: InitKind::Gaussian,
                    ..RunConfig::default()
                };
                let last = synthetic::run(config, RunOptions::default())
                    .unwrap()
                    .summary
                    .final_metrics;
                let above = match boundary {
                    Boundary::HarmfulBenign => last.test_acc >= 0.95,
                    Boundary::BenignNotOverfitting => last.train_acc < 1.0,
                };
                assert_eq!(
                    above, want_above,
                    "{boundary:?} d={} n={} seed {} at log10 SNR {x} (threshold {})",
                    r.dim, r.samples, r.seed_index, t.log10_snr
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 24, "only {checked} thresholds could be checked");
    // The benign band is not empty: at every grid point the harmful boundary lies below the
    // not-overfitting one.
    let table = read(&dir.join("boundaries.csv"));
    let medians: Vec<(String, String, f64)> = table
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].to_string(), f[1].to_string(), f[3].parse().unwrap())
        })
        .collect();
    for d in ["1000", "100000"] {
        let at = |b: &str| medians.iter().find(|m| m.0 == b && m.1 == d).unwrap().2;
        assert!(
            at("harmful-benign") < at("benign-not-overfitting"),
            "d = {d}: {medians:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn options_the_measurement_sets_are_refused() {
    let dir = scratch("refused");
    for (extra, needle) in [
        (&["-d", "500"][..], "-d/--dim"),
        (&["-n", "30"][..], "-n (use --samples"),
        (&["--signal-norm", "3"][..], "--signal-norm"),
        (&["--eval-every", "5"][..], "--eval-every"),
        (&["--init", "uniform"][..], "--init gaussian"),
        (&["--dims", "0,10"][..], "dims"),
        (&["--samples", "1:10:0"][..], "samples"),
        (&["--snr-range", "1:0.5"][..], "snr-range"),
        (&["--bisection-steps", "0"][..], "bisection-steps"),
    ] {
        let out = boundary(&dir, extra);
        let stderr = super::exit_stderr(&out, 2, &format!("{extra:?}"));
        assert!(stderr.contains(needle), "{extra:?}: {stderr}");
        assert!(!dir.join("thresholds.jsonl").exists(), "{extra:?} ran");
    }
    let report = bin()
        .args(["boundary", "--report", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(report.status.code(), Some(2));
}
