//! Nothing lost, nothing overwritten, nothing mixed: output folders, locks, failures, and the
//! faults a cluster job meets (SIGKILL, a full disk, a read-only folder, corrupt files).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{
    assert_exit, bin, in_ci, json_file, json_lines_without_time, ok, real_data_command,
    spawn_silently, stderr, sweep_records as records, temp_scratch, SMALL_GRID as GRID,
};

const RUN: [&str; 8] = [
    "-d",
    "60",
    "--steps",
    "30",
    "--test-size",
    "40",
    "--no-plot",
    "--quiet",
];
fn run_into(dir: &Path, extra: &[&str]) -> Output {
    bin()
        .arg("run")
        .args(RUN)
        .args(extra)
        .arg("--out")
        .arg(dir)
        .output()
        .unwrap()
}

/// `benign sweep` of `grid`, quiet and without figures, into `dir`.
fn sweep_grid_into(grid: &[&str], dir: &Path, extra: &[&str]) -> Output {
    bin()
        .arg("sweep")
        .args(grid)
        .args(["--quiet", "--no-plot"])
        .args(extra)
        .arg("--out")
        .arg(dir)
        .output()
        .unwrap()
}

fn sweep_into(dir: &Path, extra: &[&str]) -> Output {
    sweep_grid_into(&GRID, dir, extra)
}

/// metrics.jsonl without its timing field, line by line.
fn metrics(dir: &Path) -> Vec<Value> {
    json_lines_without_time(&dir.join("metrics.jsonl"))
}

/// A refusal: exit status 2 with every one of `needles` in stderr.
fn assert_refused(output: &Output, needles: &[&str]) {
    assert_exit(output, 2, needles);
}

#[test]
fn run_out_is_never_overwritten_or_mixed() {
    let dir = temp_scratch("safety", "run-out");
    ok(&run_into(&dir, &[]));
    let first = metrics(&dir);
    // The same run again, and another run, are refused; the folder is untouched.
    assert_refused(
        &run_into(&dir, &[]),
        &["this same run, complete", "--force"],
    );
    assert_refused(
        &run_into(&dir, &["--eta", "0.3"]),
        &["another run", "--force"],
    );
    assert_eq!(metrics(&dir), first);
    // --force replaces it whole: nothing of the old run survives.
    std::fs::write(dir.join("notes.txt"), "stale").unwrap();
    ok(&run_into(&dir, &["--eta", "0.3", "--force"]));
    assert!(!dir.join("notes.txt").exists());
    assert_ne!(metrics(&dir), first);
    assert_eq!(json_file(&dir.join("config.json"))["eta"], 0.3);
    // A folder of someone else's files is refused without touching them.
    let foreign = temp_scratch("safety", "foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("paper.tex"), "precious").unwrap();
    assert_refused(&run_into(&foreign, &[]), &["not a benign run (paper.tex)"]);
    assert_eq!(
        std::fs::read_to_string(foreign.join("paper.tex")).unwrap(),
        "precious"
    );
    for d in [dir, foreign] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn a_failed_run_is_marked_failed_and_redone_on_rerun() {
    let dir = temp_scratch("safety", "failed-run");
    assert_exit(&run_into(&dir, &["--lr", "1e300"]), 1, &[]);
    let job = json_file(&dir.join("job.json"));
    assert_eq!(job["state"], "failed");
    assert!(
        job["error"].as_str().unwrap().contains("non-finite"),
        "{job}"
    );
    assert!(
        !dir.join("summary.json").exists(),
        "a failed run looks complete"
    );
    // The same run again is not refused (it never finished) and replaces the failed output.
    let out = run_into(&dir, &["--lr", "1e300"]);
    assert_eq!(out.status.code(), Some(1));
    ok(&run_into(&dir, &["--force"]));
    assert_eq!(json_file(&dir.join("job.json"))["state"], "complete");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn export_and_merge_refuse_folders_holding_other_jobs() {
    let export = temp_scratch("safety", "export");
    let args = ["data", "export", "-d", "30", "--test-size", "20", "--out"];
    ok(&bin().args(args).arg(&export).output().unwrap());
    let again = bin().args(args).arg(&export).output().unwrap();
    assert_refused(&again, &["this same export, complete"]);
    let sweep = temp_scratch("safety", "merge-input");
    ok(&sweep_into(&sweep, &[]));
    let before = std::fs::read(sweep.join("results.jsonl")).unwrap();
    // Merging into the sweep's own folder, or into the export, is refused.
    let merge_into = |out: &Path| {
        bin()
            .args(["sweep", "merge"])
            .arg(&sweep)
            .arg("--out")
            .arg(out)
            .arg("--no-plot")
            .output()
            .unwrap()
    };
    for out in [&sweep, &export] {
        assert_refused(&merge_into(out), &["already holds"]);
    }
    assert_eq!(std::fs::read(sweep.join("results.jsonl")).unwrap(), before);
    // An earlier merge of the same sweep is replaced whole.
    let merged = temp_scratch("safety", "merged");
    for _ in 0..2 {
        ok(&merge_into(&merged));
    }
    assert_eq!(records(&merged.join("results.jsonl")).len(), 12);
    for d in [export, sweep, merged] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn a_second_writer_of_a_sweep_is_refused_with_the_holder_named() {
    let dir = temp_scratch("safety", "two-writers");
    let slow = [
        "--grid",
        "d=300,400,500,600",
        "--grid",
        "signal_norm=5,10,15",
        "--steps",
        "2000",
    ];
    let writer = || {
        let mut command = bin();
        command
            .arg("sweep")
            .args(slow)
            .args(["--threads", "1", "--quiet", "--no-plot", "--out"])
            .arg(&dir);
        command
    };
    let mut first = spawn_silently(&mut writer());
    let deadline = Instant::now() + Duration::from_secs(60);
    while !dir.join("sweep.json").is_file() {
        assert!(Instant::now() < deadline, "the first sweep never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    let second = writer().output().unwrap();
    let still_running = first.try_wait().unwrap().is_none();
    assert!(first.wait().unwrap().success());
    if still_running {
        assert_refused(
            &second,
            &[
                "being written by another process",
                &format!("pid {}", first.id()),
            ],
        );
    }
    // Either way, every run is recorded exactly once.
    let all = records(&dir.join("results.jsonl"));
    assert_eq!(all.len(), 12, "records duplicated or lost");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn failed_sweep_cells_are_reported_and_retried() {
    let dir = temp_scratch("safety", "failed-cells");
    let grid = [
        "--grid",
        "lr=0.005,1e300",
        "-d",
        "40",
        "--steps",
        "20",
        "--test-size",
        "20",
    ];
    let out = sweep_grid_into(&grid, &dir, &[]);
    assert_exit(&out, 1, &["failed: non-finite"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 failed"));
    // The rerun does the failed cell again (it is not done), and says so again.
    let out = sweep_grid_into(&grid, &dir, &[]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("1 runs done (1 skipped") && stdout.contains("1 failed"),
        "{stdout}"
    );
    // The table has each cell once, the failure with its error.
    let csv = std::fs::read_to_string(dir.join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(csv.contains("non-finite"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn data_fixes_its_options() {
    let export = temp_scratch("safety", "data-authority");
    ok(&bin()
        .args([
            "data",
            "export",
            "-d",
            "50",
            "--signal-norm",
            "20",
            "--eta",
            "0.1",
            "--test-size",
            "30",
            "--out",
        ])
        .arg(&export)
        .output()
        .unwrap());
    let out = bin()
        .args([
            "run",
            "--no-write",
            "--quiet",
            "--signal-norm",
            "5",
            "-d",
            "99",
            "--data",
        ])
        .arg(&export)
        .output()
        .unwrap();
    assert_refused(&out, &["--signal-norm", "-d/--dim", "fixes the data"]);
    let dir = temp_scratch("safety", "data-run");
    ok(&bin()
        .args(["run", "--quiet", "--no-plot", "--steps", "10", "--data"])
        .arg(&export)
        .arg("--out")
        .arg(&dir)
        .output()
        .unwrap());
    let config = json_file(&dir.join("config.json"));
    assert_eq!(
        (config["signal_norm"].as_f64(), config["eta"].as_f64()),
        (Some(20.0), Some(0.1))
    );
    assert_eq!(config["dim"], 50);
    for d in [export, dir] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn corrupt_result_lines_are_set_aside_and_their_runs_redone() {
    let reference = temp_scratch("safety", "corrupt-reference");
    ok(&sweep_into(&reference, &[]));
    let dir = temp_scratch("safety", "corrupt");
    ok(&sweep_into(&dir, &[]));
    let path = dir.join("results.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    lines[4] = lines[4].replace("\"final_metrics\"", "\"final_metr");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let out = sweep_into(&dir, &[]);
    ok(&out);
    assert!(
        stderr(&out).contains("1 corrupt line(s) (5)"),
        "{}",
        stderr(&out)
    );
    let aside = std::fs::read_to_string(dir.join("results.jsonl.corrupt")).unwrap();
    assert!(aside.starts_with("line 5: "), "{aside}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 runs done (11 skipped"));
    assert_eq!(records(&path), records(&reference.join("results.jsonl")));
    for d in [reference, dir] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

/// Starts `command`, kills it (SIGKILL) after `delay`, and waits for it: whether the kill
/// stopped it, read from how it ended (it may finish between any check and the kill).
fn kill_after(mut command: Command, delay: Duration) -> bool {
    use std::os::unix::process::ExitStatusExt;
    let mut child = spawn_silently(&mut command);
    std::thread::sleep(delay);
    let _ = child.kill();
    child.wait().unwrap().signal() == Some(9)
}

#[test]
fn killed_runs_and_finetunes_rerun_to_the_uninterrupted_results() {
    // run: killed at several points (seeded, so the test is repeatable), then rerun into the
    // same folder: the unfinished run is redone whole and equals an uninterrupted one.
    let args = [
        "-d",
        "600",
        "--steps",
        "20000",
        "--test-size",
        "200",
        "--quiet",
    ];
    let run_command = |dir: &Path| {
        let mut command = bin();
        command.arg("run").args(args).arg("--out").arg(dir);
        command
    };
    let reference = temp_scratch("safety", "kill-run-reference");
    ok(&run_command(&reference).output().unwrap());
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut killed = 0;
    for round in 0..3 {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let delay = Duration::from_millis(20 + (state >> 33) % 400);
        let dir = temp_scratch("safety", &format!("kill-run-{round}"));
        let was_killed = kill_after(run_command(&dir), delay);
        killed += usize::from(was_killed);
        // A run that finished before the kill is complete, and a rerun would be refused.
        if was_killed {
            ok(&run_command(&dir).output().unwrap());
        }
        assert_eq!(
            metrics(&dir),
            metrics(&reference),
            "round {round} (killed after {delay:?})"
        );
        assert_eq!(json_file(&dir.join("job.json"))["state"], "complete");
        std::fs::remove_dir_all(&dir).unwrap();
    }
    assert!(
        killed > 0,
        "no run was still going when killed: make it longer"
    );
    std::fs::remove_dir_all(&reference).unwrap();

    // finetune: killed mid-table, resumed with the same command.
    let data = temp_scratch("safety", "kill-finetune-data");
    super::pretrain::mnist_fixture(&data);
    let finetune = |out: &Path, checkpoints: &Path| {
        finetune_mnist(&data, checkpoints, out, ["10,20", "0,0.2", "3"])
    };
    let checkpoints = temp_scratch("safety", "kill-finetune-checkpoints");
    let reference = temp_scratch("safety", "kill-finetune-reference");
    ok(&finetune(&reference, &checkpoints).output().unwrap());
    let killed_dir = temp_scratch("safety", "kill-finetune");
    kill_after(
        finetune(&killed_dir, &checkpoints),
        Duration::from_millis(300),
    );
    ok(&finetune(&killed_dir, &checkpoints).output().unwrap());
    let table = |dir: &Path| -> Vec<Value> {
        let mut rows =
            json_file(&super::table_folder(dir).join("table.json"))["table"]["rows"].clone();
        for row in rows.as_array_mut().unwrap() {
            row.as_object_mut()
                .unwrap()
                .retain(|k, _| !k.contains("seconds"));
        }
        rows.as_array().unwrap().clone()
    };
    assert_eq!(table(&killed_dir), table(&reference));
    for d in [data, checkpoints, reference, killed_dir] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

/// `benign finetune` on the MNIST fixture in `data`, one thread, one seed, no figures, with
/// `[n, eta, epochs]` as given.
fn finetune_mnist(
    data: &Path,
    checkpoints: &Path,
    out: &Path,
    [n, eta, epochs]: [&str; 3],
) -> Command {
    let mut args = vec!["finetune", "--dataset", "mnist", "--pretrain-subset", "100"];
    args.extend(["--n", n, "--eta", eta, "--seeds", "1", "--epochs", epochs]);
    args.extend([
        "--test-examples",
        "all",
        "--threads",
        "1",
        "--quiet",
        "--no-plot",
    ]);
    real_data_command(&args, data, checkpoints, out)
}

/// `benign pretrain` of a 100-image MNIST fixture in `data` for one epoch on one thread, with
/// `extra` options; its result is printed as JSON.
fn pretrain_mnist(data: &Path, checkpoints: &Path, extra: &[&str]) -> Output {
    bin()
        .args(["pretrain", "--dataset", "mnist", "--subset", "100"])
        .args(["--epochs", "1", "--threads", "1", "--quiet", "--json"])
        .args(extra)
        .arg("--data-dir")
        .arg(data)
        .arg("--checkpoints")
        .arg(checkpoints)
        .output()
        .unwrap()
}

/// Mounts a tmpfs of `size` (read-only with `ro`) at a fresh folder, or says why it cannot.
struct Mount(PathBuf);

impl Mount {
    fn new(name: &str, options: &str) -> Option<Mount> {
        let dir = temp_scratch("safety", name);
        std::fs::create_dir_all(&dir).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(&dir)
            .output()
            .is_ok_and(|o| o.status.success());
        if mounted {
            Some(Mount(dir))
        } else {
            assert!(
                !in_ci(),
                "CI runs as root and must be able to mount a tmpfs"
            );
            eprintln!("skipped: cannot mount a tmpfs here (needs root)");
            None
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).output();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_full_disk_or_a_read_only_folder_fails_cleanly() {
    // 48 KiB: config.json and the marker fit, metrics.jsonl (about 80 KB at 1000 steps) does not.
    if let Some(disk) = Mount::new("full-disk", "size=48k") {
        let dir = disk.0.join("run");
        let out = bin()
            .args(["run", "-d", "100", "--test-size", "50", "--quiet", "--out"])
            .arg(&dir)
            .output()
            .unwrap();
        assert_exit(&out, 1, &["No space left on device"]);
        assert_eq!(
            stderr(&out).matches("No space left on device").count(),
            1,
            "{}",
            stderr(&out)
        );
        assert!(
            !dir.join("summary.json").exists(),
            "a run that could not write looks complete"
        );
        let leftovers: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    }
    if let Some(read_only) = Mount::new("read-only", "ro,size=16k") {
        let out = bin()
            .arg("run")
            .args(RUN)
            .arg("--out")
            .arg(read_only.0.join("run"))
            .output()
            .unwrap();
        assert_exit(&out, 1, &["Read-only file system"]);
        assert_exit(&sweep_into(&read_only.0.join("sweep"), &[]), 1, &[]);
    }
}

#[test]
fn a_checkpoint_of_other_settings_is_never_reused() {
    let data = temp_scratch("safety", "swap-data");
    super::pretrain::mnist_fixture(&data);
    let checkpoints = temp_scratch("safety", "swap-checkpoints");
    let pretrain = |seed: &str| pretrain_mnist(&data, &checkpoints, &["--seed", seed]);
    let folder = |out: &Output| {
        let result: Value = serde_json::from_slice(&out.stdout).unwrap();
        PathBuf::from(result["run_dir"].as_str().unwrap())
    };
    let first = pretrain("0");
    ok(&first);
    let second = pretrain("1");
    ok(&second);
    // The same shape, other settings: seed 1's files swapped into seed 0's folder.
    for file in ["checkpoint.safetensors", "result.json"] {
        std::fs::copy(folder(&second).join(file), folder(&first).join(file)).unwrap();
    }
    assert_exit(&pretrain("0"), 1, &["other settings"]);
    for d in [data, checkpoints] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn plot_says_when_a_sweep_has_no_results() {
    let dir = temp_scratch("safety", "plot-empty");
    ok(&sweep_into(&dir, &["--shard", "0/2"]));
    std::fs::remove_file(dir.join("results.shard-0-of-2.jsonl")).unwrap();
    let out = bin().arg("plot").arg(&dir).output().unwrap();
    assert_exit(&out, 1, &["has no results yet"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_finetune_with_another_plan_keeps_the_first_table() {
    let data = temp_scratch("safety", "plan-data");
    super::pretrain::mnist_fixture(&data);
    let checkpoints = temp_scratch("safety", "plan-checkpoints");
    let out = temp_scratch("safety", "plan-out");
    let finetune = |n: &str| {
        finetune_mnist(&data, &checkpoints, &out, [n, "0.2", "2"])
            .output()
            .unwrap()
    };
    let tables = || -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().path().join("table.json"))
            .filter(|p| p.is_file())
            .collect();
        v.sort();
        v
    };
    ok(&finetune("10"));
    let first = tables();
    assert_eq!(first.len(), 1);
    let before = std::fs::read(&first[0]).unwrap();
    ok(&finetune("20"));
    // The second plan gets a table of its own; the first is untouched.
    assert_eq!(tables().len(), 2);
    assert_eq!(std::fs::read(&first[0]).unwrap(), before);
    for d in [data, checkpoints, out] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn a_moved_checkpoint_folder_reports_where_it_is_now() {
    let data = temp_scratch("safety", "moved-data");
    super::pretrain::mnist_fixture(&data);
    let first = temp_scratch("safety", "moved-first");
    let second = temp_scratch("safety", "moved-second");
    let pretrain = |checkpoints: &Path| {
        let out = pretrain_mnist(&data, checkpoints, &[]);
        ok(&out);
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let trained = pretrain(&first);
    assert_eq!(trained["reused"], false);
    std::fs::rename(&first, &second).unwrap();
    let reused = pretrain(&second);
    assert_eq!(reused["reused"], true, "{reused}");
    let run_dir = PathBuf::from(reused["run_dir"].as_str().unwrap());
    assert!(
        run_dir.starts_with(&second),
        "reports {}",
        run_dir.display()
    );
    assert!(run_dir.join("checkpoint.safetensors").is_file());
    for d in [data, second] {
        std::fs::remove_dir_all(d).unwrap();
    }
}
