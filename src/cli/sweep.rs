//! `benign sweep`: grids of runs and their phase diagrams (library: `benign::sweep`).

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use clap::{Args, Subcommand};

use benign::sweep::figures::parse_axes;
use benign::sweep::{self, grid, ExecOptions, Progress, Shard, SweepFile, SweepSpec};
use benign::synthetic::config::StepScaling;
use benign::synthetic::RunConfig;
use benign::Error;

use super::common::CommonArgs;
use super::data::RunConfigArgs;
use super::progress::{Field, Reporter};

/// Seeds per grid cell when neither `--seeds` nor the sweep file sets them.
pub const DEFAULT_SEEDS: usize = 1;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SweepArgs {
    #[command(subcommand)]
    pub action: Option<SweepAction>,
    #[command(flatten)]
    pub run: SweepRunArgs,
}

#[derive(Subcommand)]
pub enum SweepAction {
    /// Combine the outputs of several shards (or partial runs) of one sweep and report missing
    /// or duplicated runs.
    Merge(MergeArgs),
}

#[derive(Args)]
pub struct MergeArgs {
    /// Output directories of the same sweep (each holds its sweep.json).
    #[arg(required = true)]
    pub dirs: Vec<PathBuf>,
    /// Where the merged results.jsonl, results.csv and figures go.
    #[arg(long)]
    pub out: PathBuf,
    /// Heatmap axes, e.g. `d,signal_norm`.
    #[arg(long)]
    pub axes: Option<String>,
    /// Do not draw figures.
    #[arg(long)]
    pub no_plot: bool,
    /// Print the report (missing runs with their parameters, seed and shard) as JSON.
    #[arg(long)]
    pub json: bool,
    /// Replace what --out holds when it is not an earlier merge of this sweep.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args)]
#[command(allow_negative_numbers = true)]
pub struct SweepRunArgs {
    /// A TOML sweep file (keys `out`, `seeds`, `common_random_numbers`, tables `[base]` of run
    /// options and `[grid]` of axes); command-line options override it.
    pub file: Option<PathBuf>,
    /// Re-run the sweep saved in a sweep's sweep.json (into --out; run options given as well
    /// override its base configuration).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["file", "grid"])]
    pub config: Option<PathBuf>,
    /// An axis: NAME=start:stop:step (stop included when on the grid), NAME=log:start:stop:count
    /// (count log-spaced values, both ends included) or NAME=v1,v2,...
    /// NAME is a run parameter (d, signal_norm, n, T, rho, eta, sigma, lr, steps, eval_every,
    /// test_size, trainer, init, precision, label_noise, signal_directions). Repeatable.
    #[arg(long = "grid", value_name = "NAME=VALUES")]
    pub grid: Vec<String>,
    /// Seeds per grid cell [default: 1].
    #[arg(long)]
    pub seeds: Option<usize>,
    /// Output directory (rerunning into it resumes the sweep).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Share noise and W_0 across cells differing only in signal_norm, rho or eta (one start-up
    /// per column; smoother maps with correlated errors).
    #[arg(long)]
    pub common_random_numbers: bool,
    /// Learning rate across d: fixed uses --lr at every d; per-dim uses lr * 2000 / d, holding
    /// the effective step lr sigma^2 d at its d = 2000 value, so a grid over decades of d
    /// compares like with like [default: fixed, or the saved sweep's].
    #[arg(long, value_enum)]
    pub step_scaling: Option<StepScaling>,
    /// Run only shard i of N (i/N, 0-based) [default under a Slurm array: (SLURM_ARRAY_TASK_ID -
    /// SLURM_ARRAY_TASK_MIN) / SLURM_ARRAY_TASK_STEP of SLURM_ARRAY_TASK_COUNT].
    #[arg(long, value_name = "i/N")]
    pub shard: Option<String>,
    /// Keep each run's own outputs under OUT/runs/<id>/.
    #[arg(long)]
    pub save_runs: bool,
    /// Replace what --out holds, this sweep's own results included (the folder is emptied
    /// first; never with shards of it still running).
    #[arg(long)]
    pub force: bool,
    /// Heatmap axes [default: d,signal_norm when both vary, else the first two numeric axes].
    #[arg(long, value_name = "X,Y")]
    pub axes: Option<String>,
    /// Do not draw figures at the end.
    #[arg(long)]
    pub no_plot: bool,
    // Each worker thread runs one run at a time.
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub settings: RunConfigArgs,
}

/// The sweep these arguments describe and its output directory.
fn spec_from(args: &SweepRunArgs) -> anyhow::Result<(SweepSpec, PathBuf)> {
    if let Some(path) = &args.config {
        let saved = sweep::results::read_spec_file(path)?;
        let base = args.settings.apply(saved.base);
        let mut spec = SweepSpec::new(
            base,
            saved.axes,
            args.seeds.unwrap_or(saved.seeds),
            args.common_random_numbers || saved.common_random_numbers,
        )?;
        spec.step_scaling = args.step_scaling.unwrap_or(saved.step_scaling);
        let out = args.out.clone().ok_or_else(|| {
            Error::invalid(
                "out",
                "--config re-runs a saved sweep into a new directory: give --out DIR",
            )
        })?;
        return Ok((spec, out));
    }
    let file = match &args.file {
        Some(path) => SweepFile::read(path)?,
        None => SweepFile::default(),
    };
    let config = args.settings.apply(file.apply_base(RunConfig::default())?);
    let mut axes = file.axes;
    for text in &args.grid {
        axes.push(grid::parse_axis(text)?);
    }
    let seeds = args.seeds.or(file.seeds).unwrap_or(DEFAULT_SEEDS);
    let mut spec = SweepSpec::new(
        config,
        axes,
        seeds,
        args.common_random_numbers || file.common_random_numbers,
    )?;
    spec.step_scaling = args.step_scaling.unwrap_or_default();
    let out = args.out.clone().or(file.out).ok_or_else(|| {
        Error::invalid(
            "out",
            "an output directory is required (--out DIR or `out` in the sweep file)",
        )
    })?;
    Ok((spec, out))
}

/// The shard this process runs: `--shard i/N`, else the Slurm array task's, else none.
pub fn resolve_shard(text: Option<&str>) -> anyhow::Result<Option<Shard>> {
    Ok(match text {
        Some(text) => Some(Shard::parse(text)?),
        None => Shard::from_slurm_env()?,
    })
}

/// Says which shard runs and where it came from (`--shard`, or the Slurm array variables).
pub fn announce_shard(progress: &Reporter, from_option: bool, shard: Option<Shard>) {
    if let Some(shard) = shard {
        let source = if from_option {
            "--shard"
        } else {
            "the Slurm array variables"
        };
        progress.event(
            &format!("shard {} (from {source})", shard.label()),
            Vec::new(),
        );
    }
}

pub fn execute(args: SweepArgs) -> anyhow::Result<i32> {
    match args.action {
        Some(SweepAction::Merge(merge)) => execute_merge(merge),
        None => execute_sweep(args.run),
    }
}

fn execute_sweep(args: SweepRunArgs) -> anyhow::Result<i32> {
    let (spec, out) = spec_from(&args)?;
    let shard = resolve_shard(args.shard.as_deref())?;
    let axes = parse_axes(args.axes.as_deref())?;
    if !args.no_plot {
        // Reject bad axes before running.
        sweep::figures::choose_axes(&spec, axes.as_ref().map(|(x, y)| (x.as_str(), y.as_str())))?;
    }
    // Expanding validates every configuration before anything starts.
    spec.expand()?;
    let options = ExecOptions {
        threads: args.common.threads.count(),
        shard,
        save_runs: args.save_runs,
        force: args.force,
    };
    // The bound of every other entry point; `run_sweep` does not check it itself.
    benign::cpu::check_threads(options.threads)?;
    let progress = args.common.reporter("sweep", "runs", false);
    announce_shard(&progress, args.shard.is_some(), shard);
    let failed = AtomicU64::new(0);
    let on_progress = |event: &Progress| match event {
        Progress::Planned {
            in_shard, skipped, ..
        } => {
            progress.set_total(*in_shard as u64, *skipped as u64);
            if *skipped > 0 {
                progress.event(
                    &format!("resuming: {skipped} of {in_shard} runs already recorded"),
                    Vec::new(),
                );
            }
        }
        Progress::Finished { failed: f, .. } => {
            if *f {
                failed.fetch_add(1, Ordering::Relaxed);
            }
            progress.increment(vec![(
                "failed",
                Field::Count(failed.load(Ordering::Relaxed)),
            )]);
        }
    };
    let report = sweep::run_sweep(&spec, &out, &options, &on_progress);
    progress.finish();
    let report = report?;
    let outputs = sweep::finish(
        &out,
        axes.as_ref().map(|(x, y)| (x.as_str(), y.as_str())),
        !args.no_plot && shard.is_none(),
    )?;
    let mut stdout = std::io::stdout();
    if args.common.json {
        let _ = writeln!(stdout, "{}", serde_json::to_string_pretty(&report)?);
    } else {
        let rate = report.ran as f64 / report.wall_seconds.max(1e-9);
        let _ = writeln!(
            stdout,
            "{} runs done ({} skipped as already recorded, {} failed) of {}{} in {:.1} s ({:.2} runs/s, {} threads)",
            report.ran,
            report.skipped,
            report.failed,
            report.in_shard,
            shard.map_or(String::new(), |s| format!(" in shard {}/{} of {} runs", s.index, s.count, report.total)),
            report.wall_seconds,
            rate,
            report.threads
        );
        let _ = writeln!(
            stdout,
            "results: {} ({} records), {}",
            report.results_file.display(),
            outputs.records,
            outputs.csv.display()
        );
        if !outputs.figures.is_empty() {
            let _ = writeln!(
                stdout,
                "figures: {} ({} figures, SVG and PNG)",
                out.join("figures").display(),
                outputs.figures.len()
            );
        } else if shard.is_some() {
            let _ = writeln!(
                stdout,
                "after every shard finished: benign sweep merge DIR... --out MERGED"
            );
        }
    }
    Ok(if report.failed > 0 { 1 } else { 0 })
}

fn execute_merge(args: MergeArgs) -> anyhow::Result<i32> {
    let axes = parse_axes(args.axes.as_deref())?;
    let report = sweep::merge(&args.dirs, &args.out, args.force)?;
    let outputs = sweep::finish(
        &args.out,
        axes.as_ref().map(|(x, y)| (x.as_str(), y.as_str())),
        !args.no_plot,
    )?;
    let mut stdout = std::io::stdout();
    if args.json {
        let _ = writeln!(stdout, "{}", serde_json::to_string_pretty(&report)?);
        return Ok(if report.missing.is_empty() { 0 } else { 1 });
    }
    let _ = writeln!(
        stdout,
        "merged {} of {} runs into {} ({} figures)",
        report.merged,
        report.expected,
        report.out_dir.display(),
        outputs.figures.len()
    );
    if !report.missing.is_empty() {
        let _ = writeln!(stdout, "missing {} runs:", report.missing.len());
        for run in &report.missing {
            let params: Vec<String> = run.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = writeln!(
                stdout,
                "  {} {} seed_index={} seed={}{}",
                run.run_id,
                params.join(" "),
                run.seed_index,
                run.seed,
                run.shard.as_ref().map_or(String::new(), |s| format!(
                    " (shard {s}: rerun with --shard {s})"
                ))
            );
        }
        if report.shard_counts.len() > 1 {
            let _ = writeln!(
                stdout,
                "  (shard files of several shard counts {:?}: owning shards not named)",
                report.shard_counts
            );
        }
    }
    // Each non-empty list of ids on one line: what happened to them, their count, the first ten.
    for (verb, ids, what) in [
        ("duplicated", &report.duplicated, "runs (kept once)"),
        ("dropped", &report.unexpected, "records not in the sweep"),
    ] {
        if !ids.is_empty() {
            let shown: Vec<&str> = ids.iter().take(10).map(String::as_str).collect();
            let more = if ids.len() > 10 { " ..." } else { "" };
            let _ = writeln!(
                stdout,
                "{verb} {} {what}: {}{more}",
                ids.len(),
                shown.join(" ")
            );
        }
    }
    Ok(if report.missing.is_empty() { 0 } else { 1 })
}
