//! The shell around the engine as a stranger meets it: a build that needs nothing but Rust,
//! figures that never cost the data, progress in batch logs, Slurm arrays, provenance, re-runs
//! from a saved configuration, and tables that load as typed columns.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use super::{
    assert_exit, bin, in_ci, json_file, json_lines_without_time, ok, stderr, sweep_records,
    temp_scratch, SMALL_GRID,
};

const SMALL_RUN: [&str; 8] = [
    "-d",
    "60",
    "--steps",
    "40",
    "--test-size",
    "50",
    "--eval-every",
    "10",
];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_build_links_no_font_or_image_library() {
    // Every package the lock file can pull in, for any target.
    let lock = std::fs::read_to_string(repo().join("Cargo.lock")).unwrap();
    let forbidden = ["fontconfig", "freetype", "servo-", "font-kit", "expat-sys"];
    for line in lock.lines().filter(|l| l.starts_with("name = ")) {
        let name = line.trim_start_matches("name = ").trim_matches('"');
        assert!(
            !forbidden.iter().any(|f| name.contains(f)),
            "Cargo.lock pulls in {name}, which needs a system library"
        );
    }
    let ldd = Command::new("ldd")
        .arg(env!("CARGO_BIN_EXE_benign"))
        .output();
    match ldd {
        Ok(out) if out.status.success() => {
            let libs = String::from_utf8_lossy(&out.stdout).to_lowercase();
            for lib in ["fontconfig", "freetype", "png", "expat", "brotli", "libz"] {
                assert!(!libs.contains(lib), "the binary links {lib}:\n{libs}");
            }
        }
        _ if in_ci() => panic!("ldd is needed in CI to check the binary's libraries"),
        _ => eprintln!("skipped the ldd check: ldd is not available"),
    }
}

#[test]
fn run_draws_compact_png_and_svg_with_the_embedded_font() {
    let dir = temp_scratch("cluster", "figures");
    ok(&bin()
        .arg("run")
        .args(SMALL_RUN)
        .args(["--quiet", "--out"])
        .arg(&dir)
        .output()
        .unwrap());
    let png = std::fs::read(dir.join("dynamics.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(png.len() < 300_000, "dynamics.png is {} bytes", png.len());
    let svg = std::fs::read_to_string(dir.join("dynamics.svg")).unwrap();
    assert!(
        svg.contains("<text") && svg.contains("attention"),
        "no text in the SVG"
    );
    // Text was rasterised: a PNG of the same figure without glyphs would be far more uniform.
    // Count distinct pixel rows cheaply: the compressed size of a text-free white image of this
    // size is a few kilobytes.
    assert!(
        png.len() > 20_000,
        "the PNG looks empty ({} bytes)",
        png.len()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_figure_that_cannot_be_drawn_leaves_every_data_file_and_exit_0() {
    // `benign command args` into `dir` with every figure failing to render (the renderer's
    // fault-injection switch): it succeeds with a warning.
    let figures_fail = |command: &str, args: &[&str], dir: &Path| {
        let out = bin()
            .arg(command)
            .args(args)
            .args(["--quiet", "--out"])
            .arg(dir)
            .env("BENIGN_FAIL_FIGURES", "1")
            .output()
            .unwrap();
        ok(&out);
        assert!(
            stderr(&out).contains("warning: no figure drawn"),
            "{}",
            stderr(&out)
        );
    };
    let dir = temp_scratch("cluster", "figure-fails");
    figures_fail("run", &SMALL_RUN, &dir);
    for file in [
        "config.json",
        "metrics.jsonl",
        "metrics.csv",
        "attention.csv",
        "summary.json",
    ] {
        assert!(dir.join(file).is_file(), "{file} missing");
    }

    // A sweep whose figures cannot be drawn: results.csv is written, exit 0.
    let sweep = temp_scratch("cluster", "sweep-figure-fails");
    figures_fail("sweep", &SMALL_GRID, &sweep);
    assert!(sweep.join("results.csv").is_file());

    // --no-plot draws nothing and warns about nothing.
    let quiet = temp_scratch("cluster", "no-plot");
    let out = bin()
        .arg("run")
        .args(SMALL_RUN)
        .args(["--quiet", "--no-plot", "--out"])
        .arg(&quiet)
        .output()
        .unwrap();
    ok(&out);
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
    assert!(quiet.join("summary.json").is_file() && !quiet.join("dynamics.png").exists());
    for d in [dir, sweep, quiet] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

/// The JSON lines a command wrote to a non-terminal stderr.
fn log_lines(output: &Output) -> Vec<Value> {
    stderr(output)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Checks that progress lines are at least `every` seconds apart and that a last line closes
/// the job.
fn check_rate_limited(lines: &[Value], command: &str, every: f64) -> usize {
    let progress: Vec<f64> = lines
        .iter()
        .filter(|l| l["event"] == "progress")
        .map(|l| l["elapsed_seconds"].as_f64().unwrap())
        .collect();
    for pair in progress.windows(2) {
        assert!(
            pair[1] - pair[0] >= every * 0.99,
            "{command}: lines {pair:?} closer than {every} s"
        );
    }
    for line in lines {
        assert_eq!(line["command"], command);
        let time = line["time"].as_str().unwrap();
        assert!(time.len() == 20 && time.ends_with('Z'), "{time}");
    }
    let last = lines.last().expect("at least one line");
    assert_eq!(last["event"], "finished", "{command}: {last}");
    assert_eq!(last["done"], last["total"], "{command}: {last}");
    progress.len()
}

#[test]
fn batch_logs_report_progress_at_a_bounded_rate() {
    let every = 0.05;
    let every_text = every.to_string();
    let log = ["--log-format", "json", "--log-every", every_text.as_str()];

    // run: start-up phases, then training progress.
    let run_logging = |log: &[&str]| {
        bin()
            .arg("run")
            .args(["-d", "400", "--steps", "3000", "--test-size", "200"])
            .arg("--no-write")
            .args(log)
            .output()
            .unwrap()
    };
    let out = run_logging(&log);
    ok(&out);
    let lines = log_lines(&out);
    let phases: Vec<&str> = lines
        .iter()
        .filter(|l| l["event"] == "phase")
        .map(|l| l["message"].as_str().unwrap())
        .collect();
    for phase in [
        "data:",
        "start-up: basis",
        "start-up: products with W_0",
        "start-up: test projections",
        "training:",
    ] {
        assert!(
            phases.iter().any(|p| p.starts_with(phase)),
            "no `{phase}` line in {phases:?}"
        );
    }
    assert!(
        check_rate_limited(&lines, "run", every) >= 1,
        "no run progress line"
    );
    assert_eq!(lines.last().unwrap()["total"], 3000);

    // A long interval leaves only the phases and the closing line.
    let out = run_logging(&["--log-format", "json", "--log-every", "3600"]);
    ok(&out);
    assert_eq!(check_rate_limited(&log_lines(&out), "run", 3600.0), 0);

    // sweep: runs done, failures, rate, ETA.
    let dir = temp_scratch("cluster", "sweep-log");
    let out = bin()
        .arg("sweep")
        .args([
            "--grid",
            "d=100,150,200,250",
            "--grid",
            "signal_norm=5,10,15",
            "--steps",
            "300",
        ])
        .args(["--threads", "1", "--no-plot", "--out"])
        .arg(&dir)
        .args(log)
        .output()
        .unwrap();
    ok(&out);
    let lines = log_lines(&out);
    assert!(
        check_rate_limited(&lines, "sweep", every) >= 1,
        "no sweep progress line"
    );
    let last = lines.last().unwrap();
    assert_eq!(
        (last["done"].as_u64(), last["failed"].as_u64()),
        (Some(12), Some(0))
    );
    assert!(last["rate_per_second"].as_f64().unwrap() > 0.0);
    std::fs::remove_dir_all(&dir).unwrap();

    // pretrain: one line per epoch with loss, accuracy and examples/s.
    let data = temp_scratch("cluster", "pretrain-data");
    super::pretrain::mnist_fixture(&data);
    let checkpoints = temp_scratch("cluster", "pretrain-checkpoints");
    let out = bin()
        .args(["pretrain", "--dataset", "mnist", "--subset", "100"])
        .args(["--epochs", "2", "--threads", "1", "--data-dir"])
        .arg(&data)
        .arg("--checkpoints")
        .arg(&checkpoints)
        .args(log)
        .output()
        .unwrap();
    ok(&out);
    let lines = log_lines(&out);
    let epochs: Vec<&Value> = lines
        .iter()
        .filter(|l| l["event"] == "event" && l["message"].as_str().unwrap().starts_with("epoch "))
        .collect();
    assert_eq!(epochs.len(), 2, "{lines:?}");
    for epoch in epochs {
        for key in [
            "train_loss_running",
            "train_accuracy_running",
            "examples_per_second",
        ] {
            assert!(epoch[key].is_number(), "{key} missing in {epoch}");
        }
    }
    check_rate_limited(&lines, "pretrain", every);
    std::fs::remove_dir_all(&data).unwrap();
    std::fs::remove_dir_all(&checkpoints).unwrap();
}

/// Runs one array task of a sweep under the given Slurm variables.
fn slurm_task(dir: &Path, vars: &[(&str, String)]) -> Output {
    let mut command = bin();
    command
        .arg("sweep")
        .args(SMALL_GRID)
        .args(["--quiet", "--threads", "1", "--out"])
        .arg(dir);
    for name in benign::provenance::SLURM_VARIABLES {
        command.env_remove(name);
    }
    for (name, value) in vars {
        command.env(name, value);
    }
    command.output().unwrap()
}

/// Merges a sweep's shards and returns the report.
fn merge(dir: &Path) -> (Output, Value) {
    let out = bin()
        .args(["sweep", "merge"])
        .arg(dir)
        .arg("--out")
        .arg(dir.join("merged"))
        .args(["--no-plot", "--json"])
        .output()
        .unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out, report)
}

#[test]
fn slurm_arrays_cover_every_cell_exactly_once() {
    // (MIN, STEP) of --array=1-4, --array=10-16:2 and --array=0-3 (no MIN/STEP variables).
    for (label, min, step) in [
        ("one-based", Some(1), None),
        ("stepped", Some(10), Some(2)),
        ("zero-based", None, None),
    ] {
        let dir = temp_scratch("cluster", &format!("slurm-{label}"));
        for task in 0..4 {
            let id = min.unwrap_or(0) + task * step.unwrap_or(1);
            let mut vars = vec![
                ("SLURM_JOB_ID", "777".to_string()),
                ("SLURM_ARRAY_TASK_ID", id.to_string()),
                ("SLURM_ARRAY_TASK_COUNT", "4".to_string()),
            ];
            if let Some(m) = min {
                vars.push(("SLURM_ARRAY_TASK_MIN", m.to_string()));
            }
            if let Some(s) = step {
                vars.push(("SLURM_ARRAY_TASK_STEP", s.to_string()));
            }
            ok(&slurm_task(&dir, &vars));
        }
        let (out, report) = merge(&dir);
        ok(&out);
        assert_eq!(report["expected"], 12, "{label}: {report}");
        assert_eq!(report["merged"], 12, "{label}: {report}");
        assert_eq!(report["duplicated"].as_array().unwrap().len(), 0, "{label}");
        // Every invocation is on record with its shard and the Slurm ids.
        let invocations = std::fs::read_to_string(dir.join("invocations.jsonl")).unwrap();
        let shards: Vec<String> = invocations
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .inspect(|v| assert_eq!(v["provenance"]["slurm"]["SLURM_JOB_ID"], "777"))
            .map(|v| v["shard"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(shards, ["0/4", "1/4", "2/4", "3/4"], "{label}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn slurm_misconfigurations_exit_2_and_merge_names_the_missing_shard() {
    let dir = temp_scratch("cluster", "slurm-bad");
    // An array id without the array's size.
    let out = slurm_task(&dir, &[("SLURM_ARRAY_TASK_ID", "3".to_string())]);
    assert_exit(&out, 2, &["SLURM_ARRAY_TASK_COUNT"]);
    // A 1-based array read without its minimum would ask for shard 4 of 4.
    let out = slurm_task(
        &dir,
        &[
            ("SLURM_ARRAY_TASK_ID", "4".to_string()),
            ("SLURM_ARRAY_TASK_COUNT", "4".to_string()),
        ],
    );
    assert_exit(&out, 2, &[]);

    // Three of four shards: merge names each missing run with its parameters, seed and shard.
    for shard in ["0/4", "1/4", "3/4"] {
        ok(&bin()
            .arg("sweep")
            .args(SMALL_GRID)
            .args(["--quiet", "--threads", "1", "--shard", shard, "--out"])
            .arg(&dir)
            .output()
            .unwrap());
    }
    let (out, report) = merge(&dir);
    assert_eq!(out.status.code(), Some(1));
    let missing = report["missing"].as_array().unwrap();
    assert!(!missing.is_empty() && missing.len() < 12, "{report}");
    for run in missing {
        assert_eq!(run["shard"], "2/4", "{run}");
        assert!(
            run["params"]["dim"].is_number() && run["params"]["signal_norm"].is_number(),
            "{run}"
        );
        assert!(run["seed"].as_str().unwrap().parse::<u64>().is_ok());
    }
    // The text report says how to finish.
    let text = bin()
        .args(["sweep", "merge"])
        .arg(&dir)
        .arg("--out")
        .arg(dir.join("merged"))
        .arg("--no-plot")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&text.stdout).contains("rerun with --shard 2/4"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A git repository in a temporary folder with one commit.
fn foreign_repo(name: &str) -> Option<(PathBuf, String)> {
    let dir = temp_scratch("cluster", name);
    std::fs::create_dir_all(&dir).unwrap();
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(&dir)
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "-c",
                "commit.gpgsign=false",
            ])
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
    };
    git(&["init", "-q"])?;
    std::fs::write(dir.join("f"), "x").unwrap();
    git(&["add", "f"])?;
    git(&["commit", "-q", "-m", "other project"])?;
    let head = git(&["rev-parse", "--short=12", "HEAD"])?;
    Some((
        dir,
        String::from_utf8_lossy(&head.stdout).trim().to_string(),
    ))
}

#[test]
fn provenance_names_benigns_own_commit_from_another_repository() {
    let Some((other, other_commit)) = foreign_repo("provenance") else {
        assert!(!in_ci(), "git is needed in CI");
        eprintln!("skipped: git is not available");
        return;
    };
    let version = bin().arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&version.stdout).into_owned();
    let own_commit = benign::provenance::COMMIT;
    assert!(
        version.contains(own_commit),
        "--version `{version}` lacks {own_commit}"
    );
    assert_ne!(own_commit, other_commit);

    let out = bin()
        .current_dir(&other)
        .arg("run")
        .args(SMALL_RUN)
        .args(["--quiet", "--no-plot", "--out", "run"])
        .output()
        .unwrap();
    ok(&out);
    let provenance = &json_file(&other.join("run/config.json"))["provenance"];
    assert_eq!(provenance["commit"], own_commit);
    assert_eq!(provenance["version"], env!("CARGO_PKG_VERSION"));
    let command_line: Vec<&str> = provenance["command_line"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(&command_line[1..3], ["run", "-d"]);
    for key in ["started_at", "host", "threads", "cpu_features", "dirty"] {
        assert!(!provenance[key].is_null(), "provenance lacks {key}");
    }

    // Sweeps record it in sweep.json, and in every run they keep.
    let out = bin()
        .current_dir(&other)
        .arg("sweep")
        .args(SMALL_GRID)
        .args(["--quiet", "--no-plot", "--save-runs", "--out", "sweep"])
        .env("SLURM_JOB_ID", "4242")
        .output()
        .unwrap();
    ok(&out);
    let spec = json_file(&other.join("sweep/sweep.json"));
    assert_eq!(spec["provenance"]["commit"], own_commit);
    assert_eq!(spec["provenance"]["slurm"]["SLURM_JOB_ID"], "4242");
    let runs: Vec<PathBuf> = std::fs::read_dir(other.join("sweep/runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(runs.len(), 12);
    for run in runs {
        assert_eq!(
            json_file(&run.join("config.json"))["provenance"]["commit"],
            own_commit
        );
    }
    std::fs::remove_dir_all(&other).unwrap();
}

/// metrics.jsonl without its timing field, line by line.
fn metrics_without_time(dir: &Path) -> Vec<Value> {
    json_lines_without_time(&dir.join("metrics.jsonl"))
}

#[test]
fn saved_configurations_rerun_bit_for_bit() {
    let first = temp_scratch("cluster", "rerun-first");
    let second = temp_scratch("cluster", "rerun-second");
    ok(&bin()
        .arg("run")
        .args([
            "-d",
            "90",
            "--steps",
            "60",
            "--test-size",
            "80",
            "--eta",
            "0.3",
            "--seed",
            "9",
        ])
        .args(["--rho", "0.2", "--quiet", "--no-plot", "--out"])
        .arg(&first)
        .output()
        .unwrap());
    ok(&bin()
        .arg("run")
        .arg("--config")
        .arg(first.join("config.json"))
        .args(["--quiet", "--no-plot", "--out"])
        .arg(&second)
        .output()
        .unwrap());
    let (a, b) = (metrics_without_time(&first), metrics_without_time(&second));
    assert_eq!(a.len(), 7);
    assert_eq!(a, b, "a re-run from config.json differs");
    assert_eq!(
        std::fs::read(first.join("attention.csv")).unwrap(),
        std::fs::read(second.join("attention.csv")).unwrap()
    );
    // Seeds are strings in JSON (exact beyond 2^53), and a number is still read.
    let config = json_file(&first.join("config.json"));
    assert_eq!(config["seed"], "9");
    assert!(config["test_seed"].as_str().unwrap().parse::<u64>().is_ok());

    // A saved sweep re-runs into a new folder with the same records.
    let sweep = temp_scratch("cluster", "rerun-sweep");
    let again = temp_scratch("cluster", "rerun-sweep-again");
    ok(&bin()
        .arg("sweep")
        .args(SMALL_GRID)
        .args(["--quiet", "--no-plot", "--threads", "2", "--out"])
        .arg(&sweep)
        .output()
        .unwrap());
    ok(&bin()
        .args(["sweep", "--config"])
        .arg(sweep.join("sweep.json"))
        .args(["--quiet", "--no-plot", "--threads", "1", "--out"])
        .arg(&again)
        .output()
        .unwrap());
    assert_eq!(
        sweep_records(&sweep.join("results.jsonl")),
        sweep_records(&again.join("results.jsonl"))
    );
    for d in [first, second, sweep, again] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn tables_load_in_pandas_with_float_columns() {
    let python = super::python();
    let has_pandas = Command::new(&python)
        .args(["-c", "import pandas"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_pandas {
        assert!(
            !in_ci(),
            "CI must have pandas ({python} -c 'import pandas' failed; .ci/run installs it)"
        );
        eprintln!("skipped: pandas is not installed for {python} (set BENIGN_PYTHON)");
        return;
    }
    let dir = temp_scratch("cluster", "pandas");
    let out = Command::new(&python)
        .arg(repo().join("scripts/check_tables.py"))
        .arg("--benign")
        .arg(env!("CARGO_BIN_EXE_benign"))
        .arg("--dir")
        .arg(&dir)
        .output()
        .unwrap();
    ok(&out);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_cluster_scripts_run_a_sweep_end_to_end() {
    // `bash scripts/cluster/<script> --out out SMALL_GRID`, calling this build of benign.
    let script_sweep = |script: &str, out: &Path| {
        let mut command = Command::new("bash");
        command
            .arg(repo().join("scripts/cluster").join(script))
            .arg("--out")
            .arg(out)
            .args(SMALL_GRID)
            .env("BENIGN", env!("CARGO_BIN_EXE_benign"));
        command
    };
    // The sbatch script as four tasks of `sbatch --array=1-4`.
    let dir = temp_scratch("cluster", "sbatch");
    for task in 1..=4 {
        let mut command = script_sweep("sweep.sbatch", &dir);
        command.arg("--no-plot").env("SLURM_CPUS_PER_TASK", "1");
        for name in benign::provenance::SLURM_VARIABLES {
            command.env_remove(name);
        }
        command
            .env("SLURM_ARRAY_TASK_ID", task.to_string())
            .env("SLURM_ARRAY_TASK_MIN", "1")
            .env("SLURM_ARRAY_TASK_COUNT", "4");
        let out = command.output().unwrap();
        ok(&out);
        let first = stderr(&out).lines().next().unwrap_or_default().to_string();
        assert!(
            first.contains(&format!(
                "shard {}/4 (from the Slurm array variables)",
                task - 1
            )),
            "{first}"
        );
    }
    let (out, report) = merge(&dir);
    ok(&out);
    assert_eq!(
        (report["merged"].as_u64(), report["expected"].as_u64()),
        (Some(12), Some(12))
    );
    // Outside an array the script refuses to run the whole sweep.
    let out = Command::new("bash")
        .arg(repo().join("scripts/cluster/sweep.sbatch"))
        .env_remove("SLURM_ARRAY_TASK_ID")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));

    // The GNU parallel (or xargs) recipe: three shards, then the merge.
    let parallel = temp_scratch("cluster", "parallel");
    let out = script_sweep("parallel_sweep.sh", &parallel)
        .arg("--quiet")
        .env("SHARDS", "3")
        .env("JOBS", "2")
        .output()
        .unwrap();
    ok(&out);
    let merged = std::fs::read_to_string(parallel.join("merged/results.jsonl")).unwrap();
    assert_eq!(merged.lines().count(), 12);
    for shard in 0..3 {
        assert!(parallel
            .join(format!("results.shard-{shard}-of-3.jsonl"))
            .is_file());
    }
    for d in [dir, parallel] {
        std::fs::remove_dir_all(d).unwrap();
    }
}
