//! `benign sweep` end to end with the real binary: bad input is refused before any run, a sweep
//! killed with SIGKILL resumes to exactly the results of an uninterrupted one, results do not
//! depend on threads or shards, merge reports what is missing, and common random numbers keep
//! columns together.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use benign::sweep::results::{read_records, RunRecord};

use super::{bin, exit_stderr, grid_command, ok, spawn_silently};

fn scratch(name: &str) -> PathBuf {
    super::temp_scratch("sweep", name)
}

/// 4 x 3 cells x 2 seeds = 24 runs of `steps` steps, evaluated every `eval_every`.
const fn grid_of(steps: &'static str, eval_every: &'static str) -> [&'static str; 12] {
    [
        "--grid",
        "d=20:50:10",
        "--grid",
        "signal_norm=5,15,40",
        "--seeds",
        "2",
        "--steps",
        steps,
        "--test-size",
        "60",
        "--eval-every",
        eval_every,
    ]
}

/// A small fast grid.
const GRID: [&str; 12] = grid_of("150", "25");

fn sweep(out: &Path, extra: &[&str]) -> Output {
    sweep_grid(&GRID, out, extra)
}

/// `benign sweep` of `grid` into `out`, quiet, without figures, outside any Slurm array.
fn sweep_command(grid: &[&str], out: &Path, extra: &[&str]) -> Command {
    grid_command("sweep", grid, out, extra)
}

fn sweep_grid(grid: &[&str], out: &Path, extra: &[&str]) -> Output {
    sweep_command(grid, out, extra)
        .output()
        .expect("benign runs")
}

/// `benign sweep merge` of `inputs` into `out`.
fn merge(inputs: &[&Path], out: &Path, extra: &[&str]) -> Output {
    bin()
        .args(["sweep", "merge"])
        .args(inputs)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

/// Records by run id, failing on duplicates.
fn by_id(records: Vec<RunRecord>) -> BTreeMap<String, RunRecord> {
    let mut map = BTreeMap::new();
    for r in records {
        let id = r.run_id.clone();
        assert!(
            map.insert(id.clone(), r).is_none(),
            "run {id} recorded twice"
        );
    }
    map
}

fn results(dir: &Path, file: &str) -> BTreeMap<String, RunRecord> {
    let (records, ignored) = read_records(&dir.join(file)).unwrap();
    assert_eq!(
        ignored,
        0,
        "no torn line left in {}",
        dir.join(file).display()
    );
    by_id(records)
}

/// Same runs, bit-identical final metrics (wall-clock times aside).
fn assert_same_results(a: &BTreeMap<String, RunRecord>, b: &BTreeMap<String, RunRecord>) {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (id, x) in a {
        let y = &b[id];
        assert_eq!(
            (x.seed, x.index, &x.config),
            (y.seed, y.index, &y.config),
            "{id}"
        );
        let (mut mx, mut my) = (
            x.final_metrics.clone().unwrap(),
            y.final_metrics.clone().unwrap(),
        );
        mx.wall_seconds = 0.0;
        my.wall_seconds = 0.0;
        assert_eq!(mx, my, "{id}: final metrics differ");
        assert_eq!(x.observed_regime, y.observed_regime, "{id}");
        assert_eq!(x.first_all_fitted_step, y.first_all_fitted_step, "{id}");
    }
}

fn line_count(path: &Path) -> usize {
    std::fs::read(path).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count())
}

/// [`GRID`] with ten times the steps, so that the sweep is still running when it is killed.
const SLOW_GRID: [&str; 12] = grid_of("1500", "250");

#[test]
fn killed_sweep_resumes_to_the_uninterrupted_results() {
    let reference = scratch("reference");
    ok(&sweep_grid(&SLOW_GRID, &reference, &["--threads", "1"]));
    let expected = results(&reference, "results.jsonl");
    assert_eq!(expected.len(), 24);

    let dir = scratch("killed");
    let mut child = spawn_silently(&mut sweep_command(&SLOW_GRID, &dir, &["--threads", "2"]));
    let file = dir.join("results.jsonl");
    let deadline = Instant::now() + Duration::from_secs(120);
    while line_count(&file) < 3 {
        assert!(Instant::now() < deadline, "no results appeared");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the sweep ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let partial = read_records(&file).unwrap().0.len();
    assert!(
        partial < 24,
        "the sweep finished before the kill ({partial} records)"
    );

    let resumed = sweep_grid(&SLOW_GRID, &dir, &["--threads", "2"]);
    ok(&resumed);
    let text = String::from_utf8_lossy(&resumed.stdout);
    assert!(text.contains(&format!("{partial} skipped")), "{text}");
    assert_same_results(&expected, &results(&dir, "results.jsonl"));

    // Records equal a standalone run of their configuration, which evaluates every 25 steps.
    let record = expected.values().nth(5).unwrap();
    let standalone = benign::synthetic::run(record.config.clone(), Default::default()).unwrap();
    let mut direct = standalone.summary.final_metrics.clone();
    let mut recorded = record.final_metrics.clone().unwrap();
    direct.wall_seconds = 0.0;
    recorded.wall_seconds = 0.0;
    assert_eq!(direct, recorded);
    assert_eq!(standalone.records.len(), 7);

    // A third invocation finds nothing to do.
    let again = sweep_grid(&SLOW_GRID, &dir, &[]);
    ok(&again);
    assert!(String::from_utf8_lossy(&again.stdout).starts_with("0 runs done (24 skipped"));
    for d in [reference, dir] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn shards_merge_to_the_unsharded_sweep() {
    let whole = scratch("whole");
    ok(&sweep(&whole, &["--threads", "2"]));
    let (a, b) = (scratch("shard-a"), scratch("shard-b"));
    ok(&sweep(&a, &["--shard", "0/2", "--threads", "1"]));
    // The second shard from the SLURM array variables.
    let output = sweep_command(&GRID, &b, &[])
        .env("SLURM_ARRAY_TASK_ID", "1")
        .env("SLURM_ARRAY_TASK_COUNT", "2")
        .output()
        .unwrap();
    ok(&output);
    let first = results(&a, "results.shard-0-of-2.jsonl");
    let second = results(&b, "results.shard-1-of-2.jsonl");
    assert_eq!(first.len() + second.len(), 24);
    assert!(first.keys().all(|k| !second.contains_key(k)));

    // One shard alone: merge reports the missing runs and fails.
    let merged = scratch("merged");
    let partial = merge(&[&a], &merged, &["--no-plot"]);
    assert_eq!(partial.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&partial.stdout)
        .contains(&format!("missing {} runs", second.len())));

    // Both shards, one given twice: complete, duplicates reported and kept once.
    let full = merge(&[&a, &b, &a], &merged, &["--no-plot"]);
    ok(&full);
    let text = String::from_utf8_lossy(&full.stdout);
    assert!(
        text.contains("merged 24 of 24")
            && text.contains(&format!("duplicated {} runs", first.len())),
        "{text}"
    );
    assert_same_results(
        &results(&whole, "results.jsonl"),
        &results(&merged, "results.jsonl"),
    );
    let csv = std::fs::read_to_string(merged.join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 25);

    // Merging directories of different sweeps is refused.
    let other = scratch("other");
    ok(&sweep(&other, &["--seed", "7", "--shard", "0/4"]));
    let mixed = merge(&[&a, &other], &merged, &[]);
    assert_eq!(mixed.status.code(), Some(2));
    for d in [whole, a, b, merged, other] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn common_random_numbers_share_columns_and_keep_them_in_one_shard() {
    let dir = scratch("crn");
    ok(&sweep(
        &dir,
        &[
            "--common-random-numbers",
            "--shard",
            "1/3",
            "--threads",
            "2",
        ],
    ));
    let shard = results(&dir, "results.shard-1-of-3.jsonl");
    assert!(!shard.is_empty());
    // Columns are (d, seed index): each present column is complete (3 signal norms), one seed.
    let mut columns: BTreeMap<(u64, usize), Vec<&RunRecord>> = BTreeMap::new();
    for r in shard.values() {
        columns
            .entry((r.config.dim as u64, r.seed_index))
            .or_default()
            .push(r);
    }
    for ((d, s), runs) in &columns {
        assert_eq!(runs.len(), 3, "column d={d} seed {s} split across shards");
        assert!(runs.iter().all(|r| r.seed == runs[0].seed));
    }
    // A cell trains exactly like, to rounding, the standalone run of its configuration (the
    // column's seed). Both draw their test sets in the subspace, each in its own basis of the
    // same span: two independent test samples of the same law, compared exactly in
    // `synthetic::crn`'s tests with projected test tokens.
    for record in shard.values().take(4) {
        let standalone = benign::synthetic::run(record.config.clone(), Default::default()).unwrap();
        let (a, b) = (
            standalone.summary.final_metrics,
            record.final_metrics.clone().unwrap(),
        );
        for (u, v) in [
            (a.train_loss, b.train_loss),
            (a.w_delta_norm, b.w_delta_norm),
            (a.p_norm, b.p_norm),
        ] {
            assert!(
                (u - v).abs() <= 1e-8 * u.abs().max(1.0),
                "{}: {u} vs {v}",
                record.run_id
            );
        }
        assert_eq!(a.train_acc, b.train_acc);
    }
    // Sharding and threads do not change a bit (columns run whole, in lockstep).
    let whole = scratch("crn-whole");
    ok(&sweep(
        &whole,
        &["--common-random-numbers", "--threads", "1"],
    ));
    let all = results(&whole, "results.jsonl");
    let same: BTreeMap<String, RunRecord> = all
        .iter()
        .filter(|(k, _)| shard.contains_key(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_same_results(&shard, &same);
    std::fs::remove_dir_all(whole).unwrap();
    let independent = scratch("crn-independent");
    ok(&sweep(&independent, &["--shard", "1/3"]));
    let ids = results(&independent, "results.shard-1-of-3.jsonl");
    assert!(
        shard.keys().all(|k| !ids.contains_key(k)),
        "the two modes must not share run ids"
    );
    std::fs::remove_dir_all(dir).unwrap();
    std::fs::remove_dir_all(independent).unwrap();
}

#[test]
fn sweep_files_match_the_command_line_and_plot_rerenders() {
    let dir = scratch("toml");
    let file = dir.with_extension("toml");
    std::fs::write(
        &file,
        format!(
            "out = {:?}\nseeds = 2\n[base]\nsteps = 150\ntest_size = 60\neval-every = 25\n[grid]\nsignal_norm = [5, 15, 40]\nd = \"20:50:10\"\n",
            dir.to_str().unwrap()
        ),
    )
    .unwrap();
    let output = bin()
        .arg("sweep")
        .arg(&file)
        .args(["--quiet", "--threads", "2"])
        .output()
        .unwrap();
    ok(&output);
    let from_file = results(&dir, "results.jsonl");
    let cli = scratch("toml-cli");
    ok(&sweep(&cli, &["--shard", "0/5"]));
    let from_cli = results(&cli, "results.shard-0-of-5.jsonl");
    assert!(from_cli.keys().all(|k| from_file.contains_key(k)));
    assert_eq!(from_file.len(), 24);

    let figures = dir.join("figures");
    for stem in [
        "train_loss",
        "test_loss",
        "test_acc",
        "train_acc_noisy",
        "regime",
    ] {
        assert!(figures.join(format!("{stem}.svg")).exists(), "{stem}.svg");
        assert!(figures.join(format!("{stem}.png")).exists(), "{stem}.png");
    }
    let svg = std::fs::read_to_string(figures.join("test_loss.svg")).unwrap();
    assert!(
        svg.contains("SNR = n^-1/2") && svg.contains("SNR = d^-1/4"),
        "boundaries are drawn"
    );
    std::fs::remove_dir_all(&figures).unwrap();
    std::fs::remove_file(dir.join("results.csv")).unwrap();
    let plot = |args: &[&str]| bin().arg("plot").arg(&dir).args(args).output().unwrap();
    ok(&plot(&[]));
    assert!(figures.join("regime.png").exists() && dir.join("results.csv").exists());
    ok(&plot(&["--axes", "signal_norm,d"]));
    assert_eq!(plot(&["--axes", "d,eta"]).status.code(), Some(2));
    std::fs::remove_dir_all(dir).unwrap();
    std::fs::remove_dir_all(cli).unwrap();
    std::fs::remove_file(file).unwrap();
}

/// `benign sweep args --out dir` outside a Slurm array, for arguments it must refuse.
fn unwritten_sweep(args: &[&str], dir: &Path) -> Output {
    bin()
        .arg("sweep")
        .args(args)
        .arg("--out")
        .arg(dir)
        .env_remove("SLURM_ARRAY_TASK_ID")
        .output()
        .unwrap()
}

#[test]
fn bad_input_is_refused_before_any_run() {
    let dir = scratch("bad");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--grid", "depth=1,2"], "valid: dim (d)"),
        (vec!["--grid", "d=100:50:10"], "empty range"),
        (vec!["--grid", "d=50:100:0"], "must not be zero"),
        (vec!["--grid", "d=50:100:-10"], "empty range"),
        (vec!["--grid", "eta=0.1,0.7"], "eta"),
        (vec!["--grid", "d=2,20"], "dim"),
        (vec!["--grid", "d=20", "--grid", "d=30"], "given twice"),
        (
            vec!["--grid", "d=20,30", "--shard", "2/2"],
            "below the shard count",
        ),
        (vec!["--grid", "d=20,30", "--seeds", "0"], "seeds"),
        (
            vec!["--grid", "d=20,30", "--axes", "d,eta"],
            "not a numeric axis",
        ),
        (
            vec![
                "--grid",
                "d=20,30",
                "--trainer",
                "dense",
                "--common-random-numbers",
            ],
            "subspace",
        ),
    ];
    for (args, needle) in cases {
        let stderr = exit_stderr(&unwritten_sweep(&args, &dir), 2, &format!("{args:?}"));
        assert!(
            stderr.contains(needle),
            "{args:?}: expected `{needle}` in {stderr}"
        );
        assert!(!dir.exists(), "{args:?} started before refusing");
    }
    let toml = scratch("bad-toml").with_extension("toml");
    for (text, needle) in [
        ("[grid\nd = 1", "malformed TOML"),
        ("[grid]\nwidth = \"1,2\"", "unknown parameter"),
        ("[base]\nfoo = 1", "unknown key"),
        ("seeds = \"x\"", "unexpected"),
    ] {
        std::fs::write(&toml, text).unwrap();
        let output = bin()
            .arg("sweep")
            .arg(&toml)
            .arg("--out")
            .arg(&dir)
            .output()
            .unwrap();
        let stderr = exit_stderr(&output, 2, text);
        assert!(
            stderr.contains(needle),
            "{text}: expected `{needle}` in {stderr}"
        );
    }
    std::fs::remove_file(toml).unwrap();
    // An output directory of another sweep is not overwritten.
    ok(&sweep(&dir, &["--shard", "0/24"]));
    let other = bin()
        .arg("sweep")
        .args([
            "--grid",
            "d=20,30",
            "--steps",
            "10",
            "--test-size",
            "5",
            "--quiet",
            "--out",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(other.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&other.stderr).contains("already holds another sweep"),
        "{}",
        String::from_utf8_lossy(&other.stderr)
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn saved_runs_keep_their_own_files() {
    for (name, extra) in [
        ("save", vec![]),
        ("save-crn", vec!["--common-random-numbers"]),
    ] {
        let dir = scratch(name);
        let mut args = vec!["--save-runs", "--shard", "0/6"];
        args.extend(extra.iter().copied());
        ok(&sweep(&dir, &args));
        let records = results(&dir, "results.shard-0-of-6.jsonl");
        assert!(!records.is_empty());
        for (id, record) in &records {
            let run = dir.join("runs").join(id);
            let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
            // Every 25 of 150 steps, step 0 included.
            assert_eq!(metrics.lines().count(), 7, "{name} {id}");
            let last: benign::synthetic::metrics::EvalRecord =
                serde_json::from_str(metrics.lines().last().unwrap()).unwrap();
            assert_eq!(
                last.train_loss,
                record.final_metrics.as_ref().unwrap().train_loss
            );
            assert!(run.join("summary.json").exists() && run.join("dynamics.png").exists());
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}

/// A sweep whose total (grid cells x seeds) is beyond the limit is refused with exit 2 naming
/// --grid and --seeds, the total and the limit, before anything is allocated or written.
#[test]
fn huge_sweeps_are_refused_before_allocating() {
    let dir = scratch("huge");
    let cases: [(&[&str], &str); 3] = [
        (
            &["--grid", "d=3:900000:1", "--grid", "rho=0.001:900:0.001"],
            "809998200000",
        ),
        (&["--seeds", "1000000000000"], "1000000000000"),
        (
            &["--grid", "d=3:900000:1", "--seeds", "100000000000000"],
            "more than",
        ),
    ];
    for (args, total) in cases {
        let stderr = exit_stderr(&unwritten_sweep(args, &dir), 2, &format!("{args:?}"));
        for needle in ["--grid", "--seeds", total, "limit of 1000000 runs"] {
            assert!(
                stderr.contains(needle),
                "{args:?}: no `{needle}` in {stderr}"
            );
        }
        assert!(!dir.exists(), "{args:?} wrote before refusing");
    }
}

/// `--axes` with an unknown name is an error of `--axes`, not of `--grid`, in `sweep` and `plot`.
#[test]
fn unknown_heatmap_axes_name_axes() {
    let dir = scratch("axes");
    let grid = ["--grid", "d=20,30", "--grid", "mu=5,10"];
    ok(&sweep_grid(
        &grid,
        &dir,
        &["--steps", "20", "--test-size", "20"],
    ));
    let plot = bin()
        .arg("plot")
        .arg(&dir)
        .args(["--axes", "d,foo"])
        .output()
        .unwrap();
    let never_written = scratch("axes-sweep");
    let sweep = bin()
        .arg("sweep")
        .args(grid)
        .args(["--axes", "d,foo", "--quiet", "--out"])
        .arg(&never_written)
        .env_remove("SLURM_ARRAY_TASK_ID")
        .output()
        .unwrap();
    for o in [plot, sweep] {
        let stderr = exit_stderr(&o, 2, "--axes d,foo");
        assert!(
            stderr.contains("`axes`") && stderr.contains("foo") && !stderr.contains("`grid`"),
            "{stderr}"
        );
    }
    assert!(!never_written.exists());
    std::fs::remove_dir_all(dir).unwrap();
}

/// A sweep with one numeric axis draws line plots over it (one figure per value of the other
/// axes), with the seeds' spread when there are several seeds, and no degenerate heatmap.
#[test]
fn a_one_axis_sweep_draws_line_plots() {
    let dir = scratch("one-axis");
    let output = bin()
        .arg("sweep")
        .args([
            "--grid",
            "eta=0,0.1,0.2",
            "--grid",
            "trainer=subspace,dense",
            "--seeds",
            "3",
            "--dim",
            "40",
            "--steps",
            "150",
            "--test-size",
            "60",
            "--eval-every",
            "25",
            "--quiet",
            "--out",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    ok(&output);
    let figures = dir.join("figures");
    let mut names: Vec<String> = std::fs::read_dir(&figures)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "lines-eta-trainer=dense.png",
            "lines-eta-trainer=dense.svg",
            "lines-eta-trainer=subspace.png",
            "lines-eta-trainer=subspace.svg",
        ]
    );
    let svg = std::fs::read_to_string(figures.join("lines-eta-trainer=subspace.svg")).unwrap();
    for text in [
        "final metrics by eta",
        "trainer=subspace",
        "3 seed(s); trainer=subspace); solid: mean, dashed: lowest and highest seed",
        "final test accuracy",
        "share of seeds",
    ] {
        assert!(svg.contains(text), "the line plot lacks '{text}'");
    }
    // The plotted axis is not part of the fixed setting in the title.
    assert!(!svg.contains("eta=0 "), "eta is the x axis, not a setting");
    assert!(
        ["not overfitting", "benign overfitting", "not yet fitted"]
            .iter()
            .any(|g| svg.contains(g)),
        "the regime panel names the regimes seen"
    );

    // One seed: the mean alone, and `benign plot` redraws the same files.
    let single = scratch("one-axis-single");
    ok(&sweep_grid(
        &[
            "--grid",
            "eta=0,0.2",
            "--dim",
            "40",
            "--steps",
            "100",
            "--test-size",
            "60",
        ],
        &single,
        &[],
    ));
    ok(&bin().arg("plot").arg(&single).output().unwrap());
    let svg = std::fs::read_to_string(single.join("figures/lines-eta.svg")).unwrap();
    assert!(svg.contains("1 seed(s))") && !svg.contains("dashed"));
    std::fs::remove_dir_all(dir).unwrap();
    std::fs::remove_dir_all(single).unwrap();
}
