//! The integration tests, one module per area, linked into one test binary: each binary links
//! the whole `benign` library with its debug info, so ten of them took most of the test build.
//! `cargo test --release --test integration run::` runs one area.

mod autodiff;
mod boundary;
mod cli_bench;
mod cluster;
mod encoder;
mod finetune;
mod gradcheck;
mod io_plot;
mod law;
mod pretrain;
mod realdata;
mod run;
mod safety;
mod sweep;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

/// A 3 x 2 grid of short runs, 2 seeds each: 12 runs that take a fraction of a second.
const SMALL_GRID: [&str; 10] = [
    "--grid",
    "d=40,60,80",
    "--grid",
    "signal_norm=5,10",
    "--seeds",
    "2",
    "--steps",
    "30",
    "--test-size",
    "40",
];

/// The `benign` binary built with these tests.
fn bin() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_benign"))
}

/// A fresh (removed, not yet created) directory under the system temp dir for test `name` of
/// `area`, unique to this process.
fn temp_scratch(area: &str, name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("benign-{area}-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Panics with the status and both streams unless the command succeeded.
fn ok(output: &std::process::Output) {
    assert!(
        output.status.success(),
        "status {:?}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A command's stderr as text.
fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The stderr of a command that must have exited with `code`; `context` (the arguments, say)
/// heads the failure message.
fn exit_stderr(output: &Output, code: i32, context: &str) -> String {
    let stderr = stderr(output);
    assert_eq!(output.status.code(), Some(code), "{context}: {stderr}");
    stderr
}

/// Panics unless the command exited with `code` and its stderr holds every one of `needles`.
fn assert_exit(output: &Output, code: i32, needles: &[&str]) {
    let stderr = exit_stderr(output, code, "exit status");
    for needle in needles {
        assert!(stderr.contains(needle), "no `{needle}` in: {stderr}");
    }
}

/// Starts `command` with its output thrown away, for a test that kills it or races it.
fn spawn_silently(command: &mut Command) -> Child {
    command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// `benign <command>` of `grid` into `out`, quiet, without figures and outside any Slurm array
/// (its variables would pick a shard), with `extra` options.
fn grid_command(command: &str, grid: &[&str], out: &Path, extra: &[&str]) -> Command {
    let mut c = bin();
    c.arg(command)
        .args(grid)
        .args(["--quiet", "--no-plot", "--out"])
        .arg(out)
        .args(extra)
        .env_remove("SLURM_ARRAY_TASK_ID")
        .env_remove("SLURM_ARRAY_TASK_COUNT");
    c
}

/// `benign <args>` (a `finetune`) reading its datasets from `data`, its pretrained checkpoints
/// from `checkpoints`, and writing into `out`.
fn real_data_command(args: &[&str], data: &Path, checkpoints: &Path, out: &Path) -> Command {
    let mut command = bin();
    command
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .arg("--checkpoints")
        .arg(checkpoints)
        .arg("--out")
        .arg(out);
    command
}

/// Panics unless `dir` holds every file `benign run` writes, figures included, none empty.
fn assert_run_files(dir: &Path) {
    for file in [
        "config.json",
        "metrics.jsonl",
        "attention.csv",
        "summary.json",
        "dynamics.svg",
        "dynamics.png",
    ] {
        let size = dir.join(file).metadata().map_or(0, |m| m.len());
        assert!(size > 0, "{file} missing or empty in {}", dir.display());
    }
}

/// The folder a `benign finetune` wrote its table into under its `--out` folder `out`.
fn table_folder(out: &Path) -> std::path::PathBuf {
    std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("table.json").is_file())
        .expect("a table folder")
}

/// A JSON file, parsed; a missing or unreadable file panics with its path.
fn json_file(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// The lines of a JSON-lines file without their timing fields (`wall_seconds`, also inside
/// `final_metrics`): what two runs of the same job must agree on.
fn json_lines_without_time(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| {
            let mut record: Value = serde_json::from_str(l).unwrap();
            record.as_object_mut().unwrap().remove("wall_seconds");
            if let Some(m) = record
                .get_mut("final_metrics")
                .and_then(Value::as_object_mut)
            {
                m.remove("wall_seconds");
            }
            record
        })
        .collect()
}

/// A sweep's results file without timing fields, in run-index order (workers finish in any).
fn sweep_records(path: &Path) -> Vec<Value> {
    let mut records = json_lines_without_time(path);
    records.sort_by_key(|r| r["index"].as_u64());
    records
}

/// Whether the tests run in CI (`CI=true`), where nothing they need may be missing.
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Reports that `what` is missing: a failure in CI, a printed skip elsewhere. Returns false so
/// a test can `return` on it.
fn missing(what: &str) -> bool {
    assert!(
        !in_ci(),
        "{what}: required in CI (CI=true), where a test may not skip"
    );
    eprintln!("SKIPPED: {what}");
    false
}

/// The folder of the real datasets: `BENIGN_DATA_DIR`, else `../shared/data` beside the
/// project.
fn data_root() -> std::path::PathBuf {
    match std::env::var_os("BENIGN_DATA_DIR") {
        Some(dir) => std::path::PathBuf::from(dir),
        None => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"),
    }
}

/// The Python the tests call for numpy and pandas cross-checks: `BENIGN_PYTHON`, else `python3`.
fn python() -> String {
    std::env::var("BENIGN_PYTHON").unwrap_or_else(|_| "python3".into())
}
