//! Running a sweep: parallel workers, resume by run id, shards.
//!
//! Work is split into groups: one run each with independent draws, one column (the runs that
//! share a start-up) with common random numbers. `threads` workers take groups in canonical
//! order from a shared counter; each worker runs its group inside its own rayon pool of
//! `threads / workers` threads (one by default), so at most `workers` runs (or column start-ups)
//! are alive at once and memory stays bounded whatever the grid size. Results do not depend on
//! the thread count or the shard: every run's seed derives from its id, and the kernels reduce
//! in a fixed order.
//!
//! Runs evaluate only at their last step unless `--save-runs` keeps their own files: a record
//! holds the final metrics, which evaluation does not influence, so they are bit-identical to
//! those of a run evaluating every `eval_every` steps (the configuration recorded is the one
//! asked for).
//!
//! A shard `i/N` takes the groups whose position is `i mod N` (whole columns under common random
//! numbers) and writes `results.shard-i-of-N.jsonl`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;

use crate::rundir::{self, JobDir};
use crate::synthetic::crn::{CellOutcome, ColumnStartup, LOCKSTEP_CELLS};
use crate::synthetic::theory::predict;
use crate::synthetic::{run, Precision, RunConfig, RunOptions, RunResult};
use crate::{Error, Result};

use super::grid::{PlannedRun, SweepSpec};
use super::results::{shard_file_name, ResultsFile, RunRecord, RESULTS_FILE, SPEC_FILE};

/// A slice of the sweep for one process of a cluster job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Shard {
    /// Which shard, `0 <= index < count`: it runs the runs whose index is `index` modulo `count`.
    pub index: usize,
    /// Number of shards the sweep is split into.
    pub count: usize,
}

impl Shard {
    /// Parses `i/N` with `0 <= i < N`.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = || Error::invalid("shard", format!("`{text}`: expected i/N with 0 <= i < N"));
        let (i, n) = text.split_once('/').ok_or_else(bad)?;
        let index: usize = i.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        Self::new(index, count)
    }

    /// Shard `index` of `count`; invalid (naming `shard`) unless `index < count`.
    pub fn new(index: usize, count: usize) -> Result<Self> {
        if count == 0 {
            return Err(Error::invalid(
                "shard",
                "the shard count must be at least 1",
            ));
        }
        if index >= count {
            return Err(Error::invalid(
                "shard",
                format!("shard index {index} must be below the shard count {count}"),
            ));
        }
        Ok(Shard { index, count })
    }

    /// The shard of a Slurm array task, if `SLURM_ARRAY_TASK_ID` is set: task
    /// `(SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN) / SLURM_ARRAY_TASK_STEP` of
    /// `SLURM_ARRAY_TASK_COUNT` (MIN 0 and STEP 1 when unset), so `--array=0-15`,
    /// `--array=1-16` and `--array=0-30:2` all cover shards 0 to 15. An id without a count is an
    /// error: running the whole sweep in every array task is never what was meant.
    pub fn from_slurm_env() -> Result<Option<Self>> {
        Self::from_slurm_vars(|name| std::env::var(name).ok())
    }

    /// [`Shard::from_slurm_env`] over any source of variables.
    pub fn from_slurm_vars(read: impl Fn(&str) -> Option<String>) -> Result<Option<Self>> {
        if read("SLURM_ARRAY_TASK_ID").is_none() {
            return Ok(None);
        }
        let number = |name: &str, default: Option<usize>| -> Result<usize> {
            match read(name) {
                Some(v) => v.trim().parse::<usize>().map_err(|_| {
                    Error::invalid("shard", format!("{name}=`{v}` is not a whole number"))
                }),
                None => default.ok_or_else(|| {
                    Error::invalid(
                        "shard",
                        format!(
                            "SLURM_ARRAY_TASK_ID is set but {name} is not: cannot tell this task's \
                             shard; run under `sbatch --array`, or give --shard i/N"
                        ),
                    )
                }),
            }
        };
        let id = number("SLURM_ARRAY_TASK_ID", None)?;
        let count = number("SLURM_ARRAY_TASK_COUNT", None)?;
        let min = number("SLURM_ARRAY_TASK_MIN", Some(0))?;
        let step = number("SLURM_ARRAY_TASK_STEP", Some(1))?;
        if step == 0 {
            return Err(Error::invalid("shard", "SLURM_ARRAY_TASK_STEP is 0"));
        }
        if id < min || (id - min) % step != 0 {
            return Err(Error::invalid(
                "shard",
                format!(
                    "SLURM_ARRAY_TASK_ID={id} is not on the array's grid (minimum {min}, step {step})"
                ),
            ));
        }
        let index = (id - min) / step;
        if index >= count {
            return Err(Error::invalid(
                "shard",
                format!(
                    "SLURM_ARRAY_TASK_ID={id} is task {index} of an array of \
                     SLURM_ARRAY_TASK_COUNT={count} tasks (minimum {min}, step {step}); \
                     Slurm arrays with gaps (`--array=1,5,9`) are not supported: use a range"
                ),
            ));
        }
        Self::new(index, count).map(Some)
    }

    /// `i/N`.
    pub fn label(&self) -> String {
        format!("{}/{}", self.index, self.count)
    }

    /// The results file this shard writes.
    pub fn file_name(&self) -> String {
        shard_file_name(self.index, self.count)
    }
}

/// How to execute a sweep.
#[derive(Clone, Debug, Default)]
pub struct ExecOptions {
    /// Worker threads, at most [`crate::MAX_THREADS`]; 0 = every core.
    pub threads: usize,
    /// Run only this shard's runs; `None` runs them all.
    pub shard: Option<Shard>,
    /// Write each run's own files under `DIR/runs/<id>/`.
    pub save_runs: bool,
    /// Replace whatever the output folder holds when it is not this sweep.
    pub force: bool,
}

/// Progress of a sweep, reported to the caller.
#[derive(Clone, Debug)]
pub enum Progress {
    /// Before any run: runs of the sweep, of this shard, already finished, and to run now.
    Planned {
        /// Runs in the whole sweep.
        total: usize,
        /// Runs in this invocation's shard.
        in_shard: usize,
        /// Runs of the shard already recorded.
        skipped: usize,
        /// Runs this invocation will run.
        to_run: usize,
    },
    /// A run finished (or failed).
    Finished {
        /// The run's id ([`PlannedRun::id`]).
        run_id: String,
        /// Whether it ended with an error (recorded like a result).
        failed: bool,
    },
}

/// What a sweep invocation did.
#[derive(Clone, Debug, Serialize)]
pub struct SweepReport {
    /// Runs in the whole sweep.
    pub total: usize,
    /// Runs in this invocation's shard.
    pub in_shard: usize,
    /// Runs skipped because their results were already recorded.
    pub skipped: usize,
    /// Runs this invocation ran.
    pub ran: usize,
    /// Runs of this invocation that failed (their errors are recorded).
    pub failed: usize,
    /// Wall-clock time of this invocation, seconds.
    pub wall_seconds: f64,
    /// Threads the runs ran on.
    pub threads: usize,
    /// The JSON-lines file this invocation appended to.
    pub results_file: PathBuf,
    /// The sweep's output folder.
    pub out_dir: PathBuf,
}

/// Opens the sweep's folder under the folder policy of [`crate::rundir`] (a folder holding
/// anything but this sweep is refused), locks this shard's results file against a second
/// writer, and writes `sweep.json` or checks that an existing one describes the same sweep.
pub fn prepare_dir(
    spec: &SweepSpec,
    dir: &Path,
    results_name: &str,
    threads: usize,
    force: bool,
) -> Result<JobDir> {
    let axes: Vec<String> = spec
        .axes
        .iter()
        .map(|a| format!("{} ({} values)", a.name, a.values.len()))
        .collect();
    rundir::open_shared(
        dir,
        &rundir::SharedJob {
            kind: "sweep",
            spec_file: SPEC_FILE,
            spec,
            description: format!(
                "sweep of {} runs over {}",
                spec.len(),
                if axes.is_empty() {
                    "no axis".to_string()
                } else {
                    axes.join(", ")
                }
            ),
            writer_file: results_name,
            adopt_unmarked: true,
            threads,
            force,
        },
    )
}

/// What a record keeps of a run.
fn outcome_of(result: Result<RunResult>) -> Result<CellOutcome> {
    result.map(|r| CellOutcome {
        final_metrics: r.summary.final_metrics,
        observed_regime: r.summary.observed_regime,
        first_all_fitted_step: r.summary.first_all_fitted_step,
    })
}

/// The record of a finished (or failed) run.
fn record_of(planned: &PlannedRun, outcome: Result<CellOutcome>, wall_seconds: f64) -> RunRecord {
    let theory = predict(&planned.config);
    let (error, final_metrics, observed, first_fit) = match outcome {
        Ok(o) => (
            None,
            Some(o.final_metrics),
            Some(o.observed_regime),
            o.first_all_fitted_step,
        ),
        Err(e) => (Some(e.to_string()), None, None, None),
    };
    RunRecord {
        run_id: planned.id.clone(),
        index: planned.index,
        seed_index: planned.seed_index,
        seed: planned.config.seed,
        params: planned.params.clone(),
        config: planned.config.clone(),
        error,
        final_metrics,
        observed_regime: observed,
        predicted_regime: theory.predicted,
        snr: theory.snr,
        first_all_fitted_step: first_fit,
        wall_seconds,
        complete: true,
    }
}

/// The shard index of each planned run (in the order given) when the sweep is split into
/// `count` shards: a shard takes the groups whose position is its index mod `count`.
pub fn shard_indices(runs: &[PlannedRun], count: usize) -> std::collections::HashMap<&str, usize> {
    groups(runs)
        .into_iter()
        .enumerate()
        .flat_map(|(g, members)| members.into_iter().map(move |r| (r.id.as_str(), g % count)))
        .collect()
}

/// Groups of runs in canonical order: runs sharing a column stay together.
fn groups(runs: &[PlannedRun]) -> Vec<Vec<&PlannedRun>> {
    let mut order: Vec<&str> = Vec::new();
    let mut members: std::collections::HashMap<&str, Vec<&PlannedRun>> =
        std::collections::HashMap::new();
    for r in runs {
        members
            .entry(r.column.as_str())
            .or_insert_with(|| {
                order.push(r.column.as_str());
                Vec::new()
            })
            .push(r);
    }
    order
        .into_iter()
        .map(|c| members.remove(c).unwrap_or_default())
        .collect()
}

/// Runs the sweep `spec` into `dir`: skips runs already recorded there, runs the rest of this
/// shard in parallel, appends one record per finished run. `progress` is called from worker
/// threads.
pub fn run_sweep(
    spec: &SweepSpec,
    dir: &Path,
    options: &ExecOptions,
    progress: &(dyn Fn(&Progress) + Sync),
) -> Result<SweepReport> {
    let started = Instant::now();
    let threads = if options.threads == 0 {
        crate::cpu::all_cores()
    } else {
        crate::cpu::check_threads(options.threads)?
    };
    let planned = spec.expand()?;
    let results_name = options
        .shard
        .map_or(RESULTS_FILE.to_string(), |s| s.file_name());
    // Held until the sweep returns: a second writer of this results file is refused.
    let _job = prepare_dir(spec, dir, &results_name, threads, options.force)?;
    let results_path = dir.join(&results_name);
    super::results::record_invocation(
        dir,
        options.shard.map(|s| s.label()),
        &results_name,
        threads,
    )?;
    let (file, existing) = ResultsFile::open(&results_path)?;
    // Failed runs are not done: they run again, and their new record supersedes the old one.
    let done: HashSet<String> = existing
        .into_iter()
        .filter(|r| r.error.is_none())
        .map(|r| r.run_id)
        .collect();
    let all_groups = groups(&planned);
    let shard_groups: Vec<Vec<&PlannedRun>> = all_groups
        .into_iter()
        .enumerate()
        .filter(|(g, _)| options.shard.is_none_or(|s| g % s.count == s.index))
        .map(|(_, g)| g)
        .collect();
    let in_shard: usize = shard_groups.iter().map(Vec::len).sum();
    // Groups with at least one run to do; the whole group is kept (a lockstep column runs all
    // its cells so that its results never depend on which of them were done before).
    let pending: Vec<Vec<&PlannedRun>> = shard_groups
        .into_iter()
        .filter(|g| g.iter().any(|r| !done.contains(&r.id)))
        .collect();
    let to_run: usize = pending
        .iter()
        .flatten()
        .filter(|r| !done.contains(&r.id))
        .count();
    progress(&Progress::Planned {
        total: planned.len(),
        in_shard,
        skipped: in_shard - to_run,
        to_run,
    });

    let workers = threads.min(pending.len()).max(1);
    let inner_threads = (threads / workers).max(1);
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let failure: Mutex<Option<Error>> = Mutex::new(None);
    let file = Mutex::new(file);
    let failed = AtomicUsize::new(0);
    let ran = AtomicUsize::new(0);
    let runs_dir = options.save_runs.then(|| dir.join("runs"));

    let finish = |planned: &PlannedRun, outcome: Result<CellOutcome>, seconds: f64| {
        let record = record_of(planned, outcome, seconds);
        let is_failure = record.error.is_some();
        if let Some(error) = &record.error {
            let params: Vec<String> = planned
                .params
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            log::warn!(
                "run {} ({} seed_index={}) failed: {error}",
                planned.id,
                params.join(" "),
                planned.seed_index
            );
        }
        let appended = file
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .append(&record);
        match appended {
            Ok(()) => {
                ran.fetch_add(1, Ordering::Relaxed);
                if is_failure {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                progress(&Progress::Finished {
                    run_id: record.run_id,
                    failed: is_failure,
                });
            }
            Err(e) => {
                stop.store(true, Ordering::SeqCst);
                failure
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert(e);
            }
        }
    };

    // A record keeps only the final metrics, so evaluations before the last step would be
    // computed and dropped: skip them unless the run's own files are kept. Evaluating does not
    // change the trajectory, so the record is bit-identical either way.
    let executed = |planned: &PlannedRun| {
        let mut config = planned.config.clone();
        if runs_dir.is_none() {
            config.eval_every = config.steps;
        }
        config
    };
    // One run through the pipeline of `benign run` (from a column's start-up when given); its
    // folder under runs/ when the runs' own files are kept.
    let run_one = |planned: &PlannedRun, column: Option<Arc<ColumnStartup>>| {
        let clock = Instant::now();
        let options = RunOptions {
            out_dir: runs_dir.as_ref().map(|d| d.join(&planned.id)),
            write_files: runs_dir.is_some(),
            column,
            ..RunOptions::default()
        };
        let outcome = outcome_of(run(executed(planned), options));
        (outcome, clock.elapsed().as_secs_f64())
    };
    let run_group = |group: &[&PlannedRun]| {
        let todo = || group.iter().filter(|p| !done.contains(&p.id));
        if spec.common_random_numbers {
            let clock = Instant::now();
            let lockstep = runs_dir.is_none()
                && spec.base.precision == Precision::F64
                && spec.axis("precision").is_none();
            match ColumnStartup::new(&executed(group[0])).map(Arc::new) {
                Ok(shared) if lockstep => {
                    // The whole column in lockstep; each cell is charged an equal share.
                    let configs: Vec<RunConfig> = group.iter().map(|p| executed(p)).collect();
                    // Fixed blocks of the whole column: a cell's result never depends on which
                    // cells were already done or on the shard.
                    let outcomes: Vec<_> = configs
                        .chunks(LOCKSTEP_CELLS)
                        .flat_map(|cells| shared.run_column(cells))
                        .collect();
                    let share = clock.elapsed().as_secs_f64() / group.len() as f64;
                    for (planned, outcome) in group.iter().zip(outcomes) {
                        if !done.contains(&planned.id) {
                            finish(planned, outcome, share);
                        }
                    }
                }
                Ok(shared) => {
                    // The start-up's time is charged to the first run of the column.
                    let mut extra = clock.elapsed().as_secs_f64();
                    for planned in todo() {
                        if stop.load(Ordering::SeqCst) {
                            return;
                        }
                        let (outcome, seconds) = run_one(planned, Some(Arc::clone(&shared)));
                        finish(planned, outcome, seconds + extra);
                        extra = 0.0;
                    }
                }
                Err(e) => {
                    let message = e.to_string();
                    for planned in todo() {
                        finish(
                            planned,
                            Err(Error::invalid("start-up", message.clone())),
                            0.0,
                        );
                    }
                }
            }
        } else {
            for planned in todo() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let (outcome, seconds) = run_one(planned, None);
                finish(planned, outcome, seconds);
            }
        }
    };

    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                let pool = match rayon::ThreadPoolBuilder::new()
                    .num_threads(inner_threads)
                    .build()
                {
                    Ok(pool) => pool,
                    Err(e) => {
                        stop.store(true, Ordering::SeqCst);
                        failure
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .get_or_insert(Error::invalid(
                                "threads",
                                format!("cannot start a thread pool: {e}"),
                            ));
                        return;
                    }
                };
                pool.install(|| loop {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let g = next.fetch_add(1, Ordering::SeqCst);
                    let Some(group) = pending.get(g) else { break };
                    run_group(group);
                });
            });
        }
    });
    if let Some(e) = failure.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e);
    }
    Ok(SweepReport {
        total: planned.len(),
        in_shard,
        skipped: in_shard - to_run,
        ran: ran.into_inner(),
        failed: failed.into_inner(),
        wall_seconds: started.elapsed().as_secs_f64(),
        threads,
        results_file: results_path,
        out_dir: dir.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_specs_are_checked() {
        assert_eq!(Shard::parse("1/4").unwrap(), Shard { index: 1, count: 4 });
        assert!(Shard::parse("4/4")
            .unwrap_err()
            .to_string()
            .contains("below the shard count"));
        assert!(Shard::parse("1/0").is_err());
        assert!(Shard::parse("x").is_err());
        assert_eq!(
            Shard { index: 2, count: 3 }.file_name(),
            "results.shard-2-of-3.jsonl"
        );
    }

    fn slurm(vars: &[(&str, &str)]) -> Result<Option<Shard>> {
        Shard::from_slurm_vars(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn slurm_arrays_map_onto_every_shard_once() {
        assert_eq!(slurm(&[]).unwrap(), None);
        // --array=0-3, --array=1-4 and --array=10-16:2 each give shards 0..4 exactly once.
        for (min, step) in [(None, None), (Some(1), None), (Some(10), Some(2))] {
            let mut seen = Vec::new();
            for task in 0..4 {
                let id = min.unwrap_or(0) + task * step.unwrap_or(1);
                let id = id.to_string();
                let (min_text, step_text) =
                    (min.map(|m| m.to_string()), step.map(|s| s.to_string()));
                let mut vars = vec![
                    ("SLURM_ARRAY_TASK_ID", id.as_str()),
                    ("SLURM_ARRAY_TASK_COUNT", "4"),
                ];
                if let Some(m) = &min_text {
                    vars.push(("SLURM_ARRAY_TASK_MIN", m));
                }
                if let Some(s) = &step_text {
                    vars.push(("SLURM_ARRAY_TASK_STEP", s));
                }
                seen.push(slurm(&vars).unwrap().unwrap());
            }
            let want: Vec<Shard> = (0..4).map(|i| Shard { index: i, count: 4 }).collect();
            assert_eq!(seen, want, "min {min:?} step {step:?}");
        }
    }

    #[test]
    fn slurm_ids_that_cannot_be_placed_are_refused() {
        let message = |vars: &[(&str, &str)]| match slurm(vars) {
            Err(Error::InvalidOption { message, .. }) => message,
            other => panic!("expected an invalid-option error, got {other:?}"),
        };
        assert!(message(&[("SLURM_ARRAY_TASK_ID", "3")]).contains("SLURM_ARRAY_TASK_COUNT is not"));
        // 1-based array of 4 without MIN: task 4 is past the count.
        assert!(message(&[
            ("SLURM_ARRAY_TASK_ID", "4"),
            ("SLURM_ARRAY_TASK_COUNT", "4")
        ])
        .contains("task 4 of an array of"));
        assert!(message(&[
            ("SLURM_ARRAY_TASK_ID", "11"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
            ("SLURM_ARRAY_TASK_MIN", "10"),
            ("SLURM_ARRAY_TASK_STEP", "2"),
        ])
        .contains("not on the array's grid"));
        assert!(message(&[
            ("SLURM_ARRAY_TASK_ID", "x"),
            ("SLURM_ARRAY_TASK_COUNT", "4")
        ])
        .contains("not a whole number"));
    }
}
