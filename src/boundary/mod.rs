//! `benign boundary`: the theory's two phase boundaries, measured.
//!
//! The paper's theory places benign overfitting in the band `d^(-1/4) << SNR << n^(-1/2)`,
//! `SNR = ||mu|| / (sigma sqrt(d))`, with unknown constants. This module measures where the two
//! transitions actually happen, for each `(d, n)` of a grid, at a stated horizon.
//!
//! # What is measured
//!
//! A run's outcome at its last step (the horizon, `steps`) gives two indicators:
//! - *generalises*: test accuracy at least [`GOOD_TEST_ACCURACY`];
//! - *fits every label*: training accuracy 1 (every noisy sample predicted as its noisy label).
//!
//! Low SNR is harmful overfitting (fits every label, does not generalise), the band is benign
//! (fits, generalises), high SNR is not overfitting (generalises, the noisy labels not fitted).
//! So each boundary is where one indicator switches as the SNR grows:
//! - **harmful -> benign**: *generalises* switches from false to true;
//! - **benign -> not overfitting**: *fits every label* switches from true to false.
//!
//! For one seed (one training set, `W_0` and test set; the signal strength changes only the
//! signal parts of the tokens, so the seed's draws are shared along the SNR axis) the transition
//! SNR is found by a scan with one point per decade over `[snr_low, snr_high]`, then bisection in
//! `log10 SNR` inside the first decade where the indicator switches: `bisection_steps` halvings
//! give a resolution of `2^-steps` decades. A seed whose indicator is already switched at
//! `snr_low` is *below range*, one that never switches is *above range*, and a scan with more
//! than one switch is counted as *non-monotone* (its first switch is kept).
//!
//! A boundary `SNR*` at `(d, n)` is the median over seeds of the per-seed transition SNRs: the
//! SNR at which half the seeds have switched. Its confidence interval is a percentile bootstrap
//! over seeds; the fit `log10 SNR* = c + a log10 d + b log10 n` is by least squares over the grid
//! points with a finite median, its intervals by the same bootstrap (every grid point resampled,
//! the fit redone). [`estimate`] holds the statistics.
//!
//! # Step size across decades of d
//!
//! One gradient step moves a training token's logit by about `lr sigma^2 d / 3` times its
//! gradient (docs/law.md), so with `lr` fixed the dynamics at `d = 10^7` are not those at
//! `d = 2000`. [`StepScaling::PerDim`] (the default) uses `lr = lr0 * d0 / d` with
//! `d0 =` [`REFERENCE_DIM`]: the effective step `lr sigma^2 d` is held at the paper's default, and
//! the boundaries measure the theory's d-dependence rather than a change of step size.
//!
//! # Files
//!
//! `boundary.json` (the spec and provenance), `thresholds.jsonl` (one durable line per
//! `(d, n, seed)`, with every evaluation of its search; shards write
//! `thresholds.shard-i-of-N.jsonl`), and once every line is in: `boundaries.csv`, `fit.json`,
//! `boundary.svg` / `.png`. A rerun resumes; a failed search is retried.

pub mod calibration;
pub mod estimate;
pub mod report;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::io::jsonl::{self, RecordFile};
use crate::rundir::{self, JobDir};
use crate::sweep::Shard;
pub use crate::synthetic::config::{StepScaling, REFERENCE_DIM};
use crate::synthetic::theory::GOOD_TEST_ACCURACY;
use crate::synthetic::{self, RunConfig, RunOptions};
use crate::{Error, Result};

/// The spec file of a boundary folder.
pub const SPEC_FILE: &str = "boundary.json";
/// The thresholds of an unsharded measurement.
pub const THRESHOLDS_FILE: &str = "thresholds.jsonl";
/// Most `(d, n, seed)` searches one measurement may plan.
pub const MAX_SEARCHES: usize = 1_000_000;

/// The two transitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Boundary {
    /// The SNR above which the model generalises (test accuracy reaches the good level).
    HarmfulBenign,
    /// The SNR above which the model no longer fits every noisy training label.
    BenignNotOverfitting,
}

impl Boundary {
    /// Both boundaries, in increasing order of SNR.
    pub const ALL: [Boundary; 2] = [Boundary::HarmfulBenign, Boundary::BenignNotOverfitting];

    /// The name in files and reports: `harmful-benign` or `benign-not-overfitting`.
    pub fn name(self) -> &'static str {
        match self {
            Boundary::HarmfulBenign => "harmful-benign",
            Boundary::BenignNotOverfitting => "benign-not-overfitting",
        }
    }

    /// The theory's exponents `(a, b)` of `SNR* ~ d^a n^b`.
    pub fn theory_slopes(self) -> (f64, f64) {
        match self {
            Boundary::HarmfulBenign => (-0.25, 0.0),
            Boundary::BenignNotOverfitting => (0.0, -0.5),
        }
    }

    /// Whether an evaluation lies above this boundary (the indicator that switches on).
    fn above(self, e: &Evaluation) -> bool {
        match self {
            Boundary::HarmfulBenign => e.test_acc >= GOOD_TEST_ACCURACY,
            Boundary::BenignNotOverfitting => e.train_acc < 1.0,
        }
    }
}

/// A boundary measurement: the grid, the seeds, the search and the base configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BoundarySpec {
    /// Every setting but `dim`, `samples`, `signal_norm`, `seed` and (with per-d scaling) `lr`.
    pub base: RunConfig,
    /// The grid's token dimensions d, increasing, without repeats.
    pub dims: Vec<usize>,
    /// The grid's training-set sizes n, increasing, without repeats.
    pub samples: Vec<usize>,
    /// Independent searches (training set, `W_0`, test set) per `(d, n)`; the boundary is their
    /// median.
    pub seeds: usize,
    /// Seeds of the searches and the bootstrap are derived from it.
    #[serde(with = "crate::io::seed_text")]
    pub base_seed: u64,
    /// Lowest SNR `||mu|| / (sigma sqrt(d))` of the scan (> 0).
    pub snr_low: f64,
    /// Highest SNR of the scan (> `snr_low`); the scan has one point per decade in between.
    pub snr_high: f64,
    /// Halvings of the decade where a seed's indicator switches: the resolution is
    /// `2^-bisection_steps` decades of SNR.
    pub bisection_steps: usize,
    /// How the learning rate follows d (see the module docs).
    pub step_scaling: StepScaling,
    /// Bootstrap resamples for the confidence intervals.
    pub bootstrap: usize,
}

impl Default for BoundarySpec {
    /// The measurement `benign boundary` runs when given only `--out`: d from 10^3 to 10^7 (one
    /// per decade), n in {10, 20, 50}, 16 seeds, SNR searched over `[1e-3, 1e2]` to 2^-7 decades,
    /// on the paper's defaults but for the trainer and `W_0`'s law: [`TrainerKind::Law`], whose
    /// cost does not grow with d, and the Gaussian start it needs.
    ///
    /// [`TrainerKind::Law`]: crate::synthetic::config::TrainerKind::Law
    fn default() -> Self {
        let base = RunConfig {
            trainer: synthetic::config::TrainerKind::Law,
            init: synthetic::config::InitKind::Gaussian,
            ..RunConfig::default()
        };
        BoundarySpec {
            base_seed: base.seed,
            base,
            dims: vec![1_000, 10_000, 100_000, 1_000_000, 10_000_000],
            samples: vec![10, 20, 50],
            seeds: 16,
            snr_low: 1e-3,
            snr_high: 1e2,
            bisection_steps: 7,
            step_scaling: StepScaling::PerDim,
            bootstrap: 2000,
        }
    }
}

/// One `(d, n, seed)` search.
#[derive(Clone, Debug, PartialEq)]
pub struct Search {
    /// Position in the measurement's plan (d, then n, then seed): the key of its record.
    pub index: usize,
    /// Token dimension d.
    pub dim: usize,
    /// Training-set size n.
    pub samples: usize,
    /// Which of the `seeds` draws at this `(d, n)`, from 0.
    pub seed_index: usize,
    /// The seed of this search's training set, `W_0` and test set, derived from the base seed.
    pub seed: u64,
}

impl BoundarySpec {
    /// Checks every option, naming it, before anything runs.
    pub fn validate(&self) -> Result<()> {
        let positive_sorted = |name: &str, v: &[usize], min: usize| -> Result<()> {
            if v.is_empty() {
                return Err(Error::invalid(name, "give at least one value"));
            }
            if let Some(bad) = v.iter().find(|&&x| x < min) {
                return Err(Error::invalid(
                    name,
                    format!("{bad} is below the minimum {min}"),
                ));
            }
            Ok(())
        };
        positive_sorted("dims", &self.dims, 3)?;
        positive_sorted("samples", &self.samples, 2)?;
        if self.seeds == 0 {
            return Err(Error::invalid("seeds", "must be at least 1"));
        }
        if !(self.snr_low.is_finite() && self.snr_low > 0.0) {
            return Err(Error::invalid(
                "snr-range",
                format!("the low end must be finite and > 0, got {}", self.snr_low),
            ));
        }
        if !(self.snr_high.is_finite() && self.snr_high > self.snr_low * 1.000_001) {
            return Err(Error::invalid(
                "snr-range",
                format!(
                    "the high end must be finite and above the low end {}, got {}",
                    self.snr_low, self.snr_high
                ),
            ));
        }
        if !(1..=40).contains(&self.bisection_steps) {
            return Err(Error::invalid(
                "bisection-steps",
                format!("must be in 1..=40, got {}", self.bisection_steps),
            ));
        }
        if !(100..=100_000).contains(&self.bootstrap) {
            return Err(Error::invalid(
                "bootstrap",
                format!("must be in 100..=100000, got {}", self.bootstrap),
            ));
        }
        let searches = self.dims.len() as u128 * self.samples.len() as u128 * self.seeds as u128;
        if searches > MAX_SEARCHES as u128 {
            return Err(Error::invalid(
                "seeds",
                format!(
                    "{} dims x {} samples x {} seeds = {searches} searches, more than {MAX_SEARCHES}",
                    self.dims.len(),
                    self.samples.len(),
                    self.seeds
                ),
            ));
        }
        for &d in &self.dims {
            for &n in &self.samples {
                for log10_snr in [self.snr_low.log10(), self.snr_high.log10()] {
                    let config = self.config_at(d, n, 0, log10_snr);
                    config.validate()?;
                    if config.trainer == synthetic::config::TrainerKind::Law {
                        if let Some(why) = synthetic::law::refusal(&config, &RunOptions::default())
                        {
                            return Err(Error::invalid("trainer", why));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The searches in canonical order: `d` outermost, then `n`, then the seed index.
    pub fn searches(&self) -> Vec<Search> {
        let mut out = Vec::with_capacity(self.dims.len() * self.samples.len() * self.seeds);
        for &dim in &self.dims {
            for &samples in &self.samples {
                for seed_index in 0..self.seeds {
                    out.push(Search {
                        index: out.len(),
                        dim,
                        samples,
                        seed_index,
                        seed: crate::seed::mix_seed(
                            self.base_seed,
                            &format!("boundary d={dim} n={samples} seed={seed_index}"),
                        ),
                    });
                }
            }
        }
        out
    }

    /// The learning rate at dimension `d`.
    pub fn lr_at(&self, d: usize) -> f64 {
        self.step_scaling.lr(self.base.lr, d)
    }

    /// The run at `(d, n, seed)` and `SNR = 10^log10_snr`, evaluated at step 0 and at the horizon.
    pub fn config_at(&self, dim: usize, samples: usize, seed: u64, log10_snr: f64) -> RunConfig {
        let mut c = self.base.clone();
        c.dim = dim;
        c.samples = samples;
        c.seed = seed;
        c.signal_norm = 10f64.powf(log10_snr) * c.sigma * (dim as f64).sqrt();
        c.lr = self.lr_at(dim);
        c.eval_every = c.steps;
        c
    }

    /// The scan's points in `log10 SNR`: evenly spaced, at most one decade apart, both ends.
    pub fn scan(&self) -> Vec<f64> {
        let (lo, hi) = (self.snr_low.log10(), self.snr_high.log10());
        let intervals = ((hi - lo) - 1e-9).ceil().max(1.0) as usize;
        (0..=intervals)
            .map(|i| lo + (hi - lo) * i as f64 / intervals as f64)
            .collect()
    }
}

/// A run's outcome at the horizon.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// `log10` of the SNR the run was trained at.
    pub log10_snr: f64,
    /// Training accuracy on the noisy labels at the horizon.
    pub train_acc: f64,
    /// Test accuracy (clean labels) at the horizon.
    pub test_acc: f64,
}

/// Where a seed's indicator switched.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    /// `log10` of the transition SNR (the middle of the last bisection interval); the range's
    /// end when censored.
    pub log10_snr: f64,
    /// `"below"`: already switched at the low end; `"above"`: never switched in range.
    pub censored: Option<Censoring>,
    /// Switches seen on the scan (1 for a monotone seed, 0 when censored).
    pub scan_switches: usize,
}

/// Why a seed has no transition inside the searched SNR range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Censoring {
    /// The indicator had already switched at the low end of the range.
    Below,
    /// The indicator never switched up to the high end.
    Above,
}

impl Threshold {
    /// The value the estimates use: `-inf` / `+inf` when censored.
    pub fn value(&self) -> f64 {
        match self.censored {
            None => self.log10_snr,
            Some(Censoring::Below) => f64::NEG_INFINITY,
            Some(Censoring::Above) => f64::INFINITY,
        }
    }
}

/// One finished search (one line of `thresholds.jsonl`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ThresholdRecord {
    /// As [`Search::index`].
    pub index: usize,
    /// As [`Search::dim`].
    pub dim: usize,
    /// As [`Search::samples`].
    pub samples: usize,
    /// As [`Search::seed_index`].
    pub seed_index: usize,
    /// As [`Search::seed`].
    #[serde(with = "crate::io::seed_text")]
    pub seed: u64,
    /// `None` on success; a failed search is retried on the next invocation.
    pub error: Option<String>,
    /// Where generalisation switched on; `None` when the search failed.
    pub harmful_benign: Option<Threshold>,
    /// Where fitting every label switched off; `None` when the search failed.
    pub benign_not_overfitting: Option<Threshold>,
    /// Every run of the search, in order.
    pub evaluations: Vec<Evaluation>,
    /// Wall-clock time of the search, seconds.
    pub wall_seconds: f64,
    /// Always `true`; a line without it is torn.
    pub complete: bool,
}

impl jsonl::Record for ThresholdRecord {
    fn complete(&self) -> bool {
        self.complete
    }
}

impl ThresholdRecord {
    /// This search's threshold of `boundary`.
    pub fn threshold(&self, boundary: Boundary) -> Option<&Threshold> {
        match boundary {
            Boundary::HarmfulBenign => self.harmful_benign.as_ref(),
            Boundary::BenignNotOverfitting => self.benign_not_overfitting.as_ref(),
        }
    }
}

/// Runs one seed's search for both boundaries.
pub fn search(spec: &BoundarySpec, task: &Search) -> Result<ThresholdRecord> {
    let started = Instant::now();
    let mut evaluations = Vec::new();
    let mut evaluate = |log10_snr: f64| -> Result<Evaluation> {
        let config = spec.config_at(task.dim, task.samples, task.seed, log10_snr);
        let result = synthetic::run(config, RunOptions::default())?;
        let last = result.summary.final_metrics;
        let e = Evaluation {
            log10_snr,
            train_acc: last.train_acc,
            test_acc: last.test_acc,
        };
        evaluations.push(e.clone());
        Ok(e)
    };
    let scan = spec.scan();
    let scanned: Vec<Evaluation> = scan.iter().map(|&x| evaluate(x)).collect::<Result<_>>()?;
    let mut thresholds = Vec::new();
    for boundary in Boundary::ALL {
        let above: Vec<bool> = scanned.iter().map(|e| boundary.above(e)).collect();
        let switches = above.windows(2).filter(|w| w[0] != w[1]).count();
        let threshold = match above.iter().position(|&a| a) {
            Some(0) => Threshold {
                log10_snr: scan[0],
                censored: Some(Censoring::Below),
                scan_switches: switches,
            },
            None => Threshold {
                log10_snr: scan[scan.len() - 1],
                censored: Some(Censoring::Above),
                scan_switches: switches,
            },
            Some(i) => {
                let (mut lo, mut hi) = (scan[i - 1], scan[i]);
                for _ in 0..spec.bisection_steps {
                    let mid = 0.5 * (lo + hi);
                    if boundary.above(&evaluate(mid)?) {
                        hi = mid;
                    } else {
                        lo = mid;
                    }
                }
                Threshold {
                    log10_snr: 0.5 * (lo + hi),
                    censored: None,
                    scan_switches: switches,
                }
            }
        };
        thresholds.push(threshold);
    }
    let mut thresholds = thresholds.into_iter();
    Ok(ThresholdRecord {
        index: task.index,
        dim: task.dim,
        samples: task.samples,
        seed_index: task.seed_index,
        seed: task.seed,
        error: None,
        harmful_benign: thresholds.next(),
        benign_not_overfitting: thresholds.next(),
        evaluations,
        wall_seconds: started.elapsed().as_secs_f64(),
        complete: true,
    })
}

/// Reads a folder's `boundary.json` (its provenance is not part of the spec).
pub fn read_spec(dir: &Path) -> Result<BoundarySpec> {
    rundir::read_spec_file(&dir.join(SPEC_FILE))
}

/// The thresholds file of shard `index` of `count`.
pub fn shard_file_name(index: usize, count: usize) -> String {
    format!("thresholds.shard-{index}-of-{count}.jsonl")
}

/// Every thresholds file of a folder, sorted by name.
fn thresholds_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(jsonl::io_err(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n == THRESHOLDS_FILE
                    || (n.starts_with("thresholds.shard-") && n.ends_with(".jsonl"))
            })
        })
        .collect();
    files.sort();
    Ok(files)
}

/// The successful records of every thresholds file of a folder, one per search index (the first
/// found when shards overlap), in index order.
pub fn collect(dir: &Path) -> Result<Vec<ThresholdRecord>> {
    let mut by_index = std::collections::BTreeMap::new();
    for file in thresholds_files(dir)? {
        let (records, _) = jsonl::read_records::<ThresholdRecord>(&file)?;
        for r in records.into_iter().filter(|r| r.error.is_none()) {
            by_index.entry(r.index).or_insert(r);
        }
    }
    Ok(by_index.into_values().collect())
}

/// How to execute a measurement.
#[derive(Clone, Debug, Default)]
pub struct ExecOptions {
    /// Threads the searches run on.
    pub threads: usize,
    /// Run only this shard of the plan; `None` runs all of it.
    pub shard: Option<Shard>,
    /// Empty the folder first (its own earlier results included).
    pub force: bool,
}

/// What an invocation did.
#[derive(Clone, Debug, Serialize)]
pub struct ExecReport {
    /// Searches in the whole plan.
    pub total: usize,
    /// Searches in this invocation's shard.
    pub in_shard: usize,
    /// Searches of the shard already recorded, not rerun.
    pub skipped: usize,
    /// Searches run by this invocation.
    pub ran: usize,
    /// Searches of this invocation that failed (retried by the next one).
    pub failed: usize,
    /// Searches recorded in the folder by every shard, after this invocation.
    pub recorded: usize,
    /// Wall-clock time of this invocation, seconds.
    pub wall_seconds: f64,
    /// Threads the searches ran on.
    pub threads: usize,
    /// The JSON-lines file this invocation appended to.
    pub thresholds_file: PathBuf,
}

/// Progress events of [`run_boundary`].
pub enum Progress<'a> {
    /// The plan is made: searches of this shard, and how many of them are already recorded.
    Planned {
        /// Searches in this invocation's shard.
        in_shard: usize,
        /// Of those, the ones already recorded.
        skipped: usize,
    },
    /// One search finished (successfully or not) and was recorded.
    Finished(&'a ThresholdRecord),
}

/// Runs this shard's searches that are not yet recorded, in parallel on `threads` threads, and
/// appends each to the shard's thresholds file as it finishes.
pub fn run_boundary(
    spec: &BoundarySpec,
    dir: &Path,
    options: &ExecOptions,
    on_progress: &(dyn Fn(&Progress) + Sync),
) -> Result<ExecReport> {
    spec.validate()?;
    let started = Instant::now();
    let file_name = options.shard.map_or(THRESHOLDS_FILE.to_string(), |s| {
        shard_file_name(s.index, s.count)
    });
    let _job = prepare_dir(spec, dir, &file_name, options.threads, options.force)?;
    let path = dir.join(&file_name);
    let (file, existing) = RecordFile::<ThresholdRecord>::open(&path)?;
    let done: std::collections::HashSet<usize> = existing
        .iter()
        .filter(|r| r.error.is_none())
        .map(|r| r.index)
        .collect();
    let searches = spec.searches();
    let total = searches.len();
    let mine: Vec<Search> = searches
        .into_iter()
        .filter(|s| {
            options
                .shard
                .is_none_or(|sh| s.index % sh.count == sh.index)
        })
        .collect();
    let in_shard = mine.len();
    let pending: Vec<Search> = mine
        .into_iter()
        .filter(|s| !done.contains(&s.index))
        .collect();
    let skipped = in_shard - pending.len();
    on_progress(&Progress::Planned { in_shard, skipped });
    let file = Mutex::new(file);
    let failed = std::sync::atomic::AtomicUsize::new(0);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(options.threads.max(1))
        .build()
        .map_err(|e| Error::invalid("threads", e.to_string()))?;
    let written: Result<()> = pool.install(|| {
        pending.par_iter().try_for_each(|task| {
            let record = search(spec, task).unwrap_or_else(|e| {
                failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                ThresholdRecord {
                    index: task.index,
                    dim: task.dim,
                    samples: task.samples,
                    seed_index: task.seed_index,
                    seed: task.seed,
                    error: Some(e.to_string()),
                    harmful_benign: None,
                    benign_not_overfitting: None,
                    evaluations: Vec::new(),
                    wall_seconds: 0.0,
                    complete: true,
                }
            });
            file.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .append(&record)?;
            on_progress(&Progress::Finished(&record));
            Ok(())
        })
    });
    written?;
    Ok(ExecReport {
        total,
        in_shard,
        skipped,
        ran: pending.len(),
        failed: failed.into_inner(),
        recorded: collect(dir)?.len(),
        wall_seconds: started.elapsed().as_secs_f64(),
        threads: options.threads.max(1),
        thresholds_file: path,
    })
}

/// Opens the folder under the folder policy of [`crate::rundir`] (one lock per thresholds file,
/// so shards share it) and writes `boundary.json`, or checks that the one there is this spec.
fn prepare_dir(
    spec: &BoundarySpec,
    dir: &Path,
    file_name: &str,
    threads: usize,
    force: bool,
) -> Result<JobDir> {
    rundir::open_shared(
        dir,
        &rundir::SharedJob {
            kind: "boundary",
            spec_file: SPEC_FILE,
            spec,
            description: format!(
                "boundary measurement over {} dims x {} sample sizes x {} seeds",
                spec.dims.len(),
                spec.samples.len(),
                spec.seeds
            ),
            writer_file: file_name,
            adopt_unmarked: false,
            threads,
            force,
        },
    )
}
