//! `benign boundary`: the phase boundaries measured over a grid of (d, n) (library:
//! `benign::boundary`).

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use clap::Args;

use benign::boundary::{self, report, BoundarySpec, Progress, StepScaling};
use benign::Error;

use super::common::CommonArgs;
use super::data::RunConfigArgs;
use super::progress::Field;

/// The options of `benign boundary`. It takes the data and training options of `benign run`,
/// but the grid and the search set some of them (refused when given: hidden from the help) and
/// it trains with other defaults (the help states them).
#[derive(Args)]
#[command(mut_arg("samples", |a| a.long(None).hide(true)))]
#[command(mut_arg("dim", |a| a.hide(true)))]
#[command(mut_arg("signal_norm", |a| a.hide(true)))]
#[command(mut_arg("preset", |a| a.hide(true)))]
#[command(mut_arg("test_seed", |a| a.hide(true)))]
#[command(mut_arg("reference_compat", |a| a.hide(true)))]
#[command(mut_arg("eval_every", |a| a.hide(true)))]
#[command(mut_arg("init", |a| a.help(
    "Entrywise law of W_0: N(0, 1/(3d)), which `--trainer law` needs, or the reference's \
     U(-1/sqrt(d), 1/sqrt(d)) [default: gaussian]"
).long_help(None)))]
#[command(mut_arg("trainer", |a| a.help(
    "Trainer [default: law, whose cost does not grow with d]"
).long_help(None)))]
pub struct BoundaryArgs {
    /// Output directory (rerunning into it resumes; shards share it).
    #[arg(long)]
    pub out: PathBuf,
    /// Dimensions: a list (`1000,20000`), log:START:STOP:COUNT (COUNT values log-spaced from
    /// START to STOP, rounded to whole numbers) or START:STOP:STEP, as a sweep's axes.
    #[arg(long, default_value = "log:1e3:1e7:5")]
    pub dims: String,
    /// Training-set sizes n, in the same forms as --dims.
    // Its own id: the data options' `-n` (refused here) has the id `samples`.
    #[arg(
        id = "grid_samples",
        long = "samples",
        value_name = "SAMPLES",
        default_value = "10,20,50"
    )]
    pub samples: String,
    /// Seeds per (d, n).
    #[arg(long, default_value_t = 16)]
    pub seeds: usize,
    /// The SNR range searched, LOW:HIGH (one scan point per decade, then bisection).
    #[arg(long, default_value = "1e-3:1e2")]
    pub snr_range: String,
    /// Bisection steps inside the decade where a seed's regime switches (resolution 2^-steps
    /// decades).
    #[arg(long, default_value_t = 7)]
    pub bisection_steps: usize,
    /// Learning rate across d: per-dim holds lr sigma^2 d at its value at d = 2000 (lr = lr0 *
    /// 2000 / d); fixed keeps lr0.
    #[arg(long, value_enum, default_value_t = StepScaling::PerDim)]
    pub step_scaling: StepScaling,
    /// Bootstrap resamples for the 95% intervals.
    #[arg(long, default_value_t = 2000)]
    pub bootstrap: usize,
    /// Do not run: write the estimates, table, fit and figure from the thresholds saved in --out.
    #[arg(long)]
    pub report: bool,
    /// Run only shard i of N (i/N, 0-based) [default under a Slurm array: from its variables].
    #[arg(long, value_name = "i/N")]
    pub shard: Option<String>,
    /// Replace what --out holds, this measurement's own thresholds included.
    #[arg(long)]
    pub force: bool,
    /// Do not draw the figure.
    #[arg(long)]
    pub no_plot: bool,
    // `--json` prints the fits.
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub settings: RunConfigArgs,
}

/// Parses `--dims` / `--samples` with the sweep's axis syntax for `d` / `n`, sorted and
/// without repeats; errors name `option`.
pub fn parse_sizes(option: &str, parameter: &str, text: &str) -> Result<Vec<usize>, Error> {
    let param = benign::sweep::grid::parameter(parameter)?;
    let values = benign::sweep::grid::parse_axis_values(param, text).map_err(|e| match e {
        Error::InvalidOption { message, .. } => Error::invalid(option, message),
        other => other,
    })?;
    let mut sizes: Vec<usize> = values
        .iter()
        .map(|v| v.as_u64().map(|x| x as usize))
        .collect::<Option<_>>()
        .ok_or_else(|| Error::invalid(option, format!("`{text}`: whole numbers expected")))?;
    sizes.sort_unstable();
    sizes.dedup();
    Ok(sizes)
}

/// Parses `--snr-range` (`LOW:HIGH`); [`BoundarySpec::validate`] checks the bounds.
pub fn parse_range(text: &str) -> Result<(f64, f64), Error> {
    let bad = || {
        Error::invalid(
            "snr-range",
            format!("`{text}`: expected LOW:HIGH, 0 < LOW < HIGH"),
        )
    };
    let (lo, hi) = text.split_once(':').ok_or_else(bad)?;
    let lo: f64 = lo.trim().parse().map_err(|_| bad())?;
    let hi: f64 = hi.trim().parse().map_err(|_| bad())?;
    Ok((lo, hi))
}

/// The measurement these arguments describe. The grid, the search and the seeds set `-d`, `-n`,
/// `--signal-norm`, the test seed and the evaluation schedule; giving them is an error.
fn spec_from(args: &BoundaryArgs) -> anyhow::Result<BoundarySpec> {
    let set_by_grid = [
        (args.settings.data.dim.is_some(), "-d/--dim (use --dims)"),
        (
            args.settings.data.samples.is_some(),
            "-n (use --samples, the grid's training-set sizes)",
        ),
        (
            args.settings.data.signal_norm.is_some(),
            "--signal-norm (the search sets it)",
        ),
        (args.settings.data.preset.is_some(), "--preset"),
        (
            args.settings.data.test_seed.is_some(),
            "--test-seed (each seed draws its own test set)",
        ),
        (args.settings.data.reference_compat, "--reference-compat"),
        (
            args.settings.training.eval_every.is_some(),
            "--eval-every (only the horizon is evaluated)",
        ),
    ];
    if let Some((_, name)) = set_by_grid.iter().find(|(given, _)| *given) {
        return Err(Error::invalid(
            "boundary",
            format!("{name} cannot be given to `benign boundary`: the measurement sets it"),
        )
        .into());
    }
    let base = args.settings.apply(BoundarySpec::default().base);
    let (snr_low, snr_high) = parse_range(&args.snr_range)?;
    let spec = BoundarySpec {
        base_seed: base.seed,
        base,
        dims: parse_sizes("dims", "d", &args.dims)?,
        samples: parse_sizes("samples", "n", &args.samples)?,
        seeds: args.seeds,
        snr_low,
        snr_high,
        bisection_steps: args.bisection_steps,
        step_scaling: args.step_scaling,
        bootstrap: args.bootstrap,
    };
    spec.validate()?;
    Ok(spec)
}

pub fn execute(args: BoundaryArgs) -> anyhow::Result<i32> {
    if args.report {
        return write_report(&args);
    }
    let spec = spec_from(&args)?;
    let shard = super::sweep::resolve_shard(args.shard.as_deref())?;
    let options = boundary::ExecOptions {
        threads: args.common.threads.count(),
        shard,
        force: args.force,
    };
    benign::cpu::check_threads(options.threads)?;
    let progress = args.common.reporter("boundary", "searches", false);
    super::sweep::announce_shard(&progress, args.shard.is_some(), shard);
    let failed = AtomicU64::new(0);
    let on_progress = |event: &Progress| match event {
        Progress::Planned { in_shard, skipped } => {
            progress.set_total(*in_shard as u64, *skipped as u64);
            if *skipped > 0 {
                progress.event(
                    &format!("resuming: {skipped} of {in_shard} searches already recorded"),
                    Vec::new(),
                );
            }
        }
        Progress::Finished(record) => {
            if let Some(error) = &record.error {
                failed.fetch_add(1, Ordering::Relaxed);
                log::warn!(
                    "search d={} n={} seed {} failed: {error}",
                    record.dim,
                    record.samples,
                    record.seed_index
                );
            }
            progress.increment(vec![
                ("d", Field::Count(record.dim as u64)),
                ("n", Field::Count(record.samples as u64)),
                ("failed", Field::Count(failed.load(Ordering::Relaxed))),
            ]);
        }
    };
    let report = boundary::run_boundary(&spec, &args.out, &options, &on_progress);
    progress.finish();
    let report = report?;
    let mut stdout = std::io::stdout();
    let _ = writeln!(
        stdout,
        "{} searches done ({} skipped as already recorded, {} failed) of {}{} in {:.1} s ({} threads); {} of {} recorded in {}",
        report.ran,
        report.skipped,
        report.failed,
        report.in_shard,
        shard.map_or(String::new(), |s| format!(" in shard {}", s.label())),
        report.wall_seconds,
        report.threads,
        report.recorded,
        report.total,
        args.out.display()
    );
    let status = finish(&args)?;
    Ok(if report.failed > 0 { 1 } else { status })
}

fn write_report(args: &BoundaryArgs) -> anyhow::Result<i32> {
    if !args.out.join(boundary::SPEC_FILE).exists() {
        return Err(Error::invalid(
            "out",
            format!(
                "{} holds no boundary measurement ({} is missing)",
                args.out.display(),
                boundary::SPEC_FILE
            ),
        )
        .into());
    }
    finish(args)
}

/// Writes the estimates when every search is in; exit status 1 when the report had to say
/// something is missing and `--report` asked for it.
fn finish(args: &BoundaryArgs) -> anyhow::Result<i32> {
    let mut stdout = std::io::stdout();
    match report::finish(&args.out, !args.no_plot)? {
        report::Finished::Incomplete { missing, total } => {
            let _ = writeln!(
                stdout,
                "{} of {total} searches not yet recorded (first: {:?}); the estimates are written when every shard has finished (or with --report)",
                missing.len(),
                &missing[..missing.len().min(5)]
            );
            Ok(if args.report { 1 } else { 0 })
        }
        report::Finished::Written {
            estimates,
            files,
            figure_error: _,
        } => {
            if args.common.json {
                let _ = writeln!(stdout, "{}", serde_json::to_string_pretty(&estimates.fits)?);
            } else {
                let _ = write!(stdout, "{}", report::summary_text(&estimates));
                let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
                let _ = writeln!(stdout, "wrote {}", names.join(", "));
            }
            Ok(0)
        }
    }
}
