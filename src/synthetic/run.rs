//! `run(config, options)`: data, start-up, training loop, metrics, and the files of a run.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::{Error, Result};

use benign_kernels::Float;

use super::config::{ModelKind, Precision, RunConfig, TrainerKind};
use super::crn::ColumnStartup;
use super::data::{balanced_labels, training_labels, training_set, Signals, TestSource, TrainSet};
use super::dense::DenseTrainer;
use super::export::LoadedData;
use super::init::InitSource;
use super::law::{self, LawVariant};
use super::metrics::{self, first_non_finite, EvalRecord, Labels, StateNorms};
use super::subspace::{StartupTimings, SubspaceSetup, SubspaceTrainer, TestDraw};
use super::theory::{classify, predict, reference_levels, Prediction, ReferenceLevels, Regime};
use super::Trainer;
use crate::provenance::Provenance;
use crate::rundir::{self, JobDir, JobSpec, JobState, Reuse};
use crate::{io, plot};

/// How to run, beyond the configuration.
#[derive(Default)]
pub struct RunOptions {
    /// Directory of the output files; `None` with `write_files` picks `runs/<UTC time>-<id>`.
    pub out_dir: Option<PathBuf>,
    /// Write config.json, metrics.jsonl, metrics.csv, attention.csv, summary.json and the
    /// figures.
    pub write_files: bool,
    /// With `write_files`: write the data files but draw no figure.
    pub no_figures: bool,
    /// Train on given data instead of generating it (shapes override the configuration's).
    pub data: Option<LoadedData>,
    /// Use this `W_0` instead of the seeded stream.
    pub init: Option<InitSource>,
    /// The `.npy` file `init` was read from, recorded in config.json so `benign run --config`
    /// can read it again.
    pub init_file: Option<PathBuf>,
    /// Replace whatever `out_dir` holds (by default a folder holding another job, or this same
    /// run complete, is refused: see [`crate::rundir`]).
    pub force: bool,
    /// How the subspace trainer obtains the test projections (default: drawn in the subspace,
    /// an independent sample of the same law; see `synthetic::subspace`).
    pub test_draw: TestDraw,
    /// Run as a cell of this column: start from its shared start-up (common random numbers,
    /// see [`super::crn`]) instead of generating the data and computing a start-up.
    pub column: Option<Arc<ColumnStartup>>,
}

/// The full attention row of one tracked training sample at every step.
#[derive(Clone, Debug, Serialize)]
pub struct TrackedSample {
    /// Index of the training sample.
    pub sample: usize,
    /// Whether its observed label is flipped.
    pub noisy: bool,
    /// `rows[step][token]`, steps `0..=steps`.
    pub rows: Vec<Vec<f64>>,
}

/// The end-of-run summary (`summary.json`).
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// The model trained.
    pub model: ModelKind,
    /// The trainer that trained it.
    pub trainer: TrainerKind,
    /// Element type of the training state.
    pub precision: Precision,
    /// Subspace rank r (subspace trainer only).
    pub subspace_rank: Option<usize>,
    /// Wall-clock time of the whole run, seconds.
    pub wall_seconds_total: f64,
    /// Seconds spent drawing or loading the data and opening the output folder.
    pub data_seconds: f64,
    /// Seconds of the start-up: the trainer's state before step 1 (e.g. the subspace basis).
    pub startup_seconds: f64,
    /// The start-up's parts, where the trainer reports them.
    pub startup: Option<StartupTimings>,
    /// Seconds of the gradient steps and evaluations.
    pub training_seconds: f64,
    /// The part of `training_seconds` spent evaluating (at each evaluated step the test
    /// readout, the norms and the metrics; after the last step the training readout too), so
    /// that the gradient steps alone take `training_seconds - evaluation_seconds`.
    pub evaluation_seconds: f64,
    /// The regime the theory's orders (or the calibrated boundaries) predict for this setting.
    pub theory: Prediction,
    /// The regime the final evaluation shows.
    pub observed_regime: Regime,
    /// First step at which every training sample (noisy ones included) is fitted.
    pub first_all_fitted_step: Option<usize>,
    /// The loss levels that identify the regimes at this `rho` and noise rate.
    pub reference_levels: ReferenceLevels,
    /// The last evaluation.
    pub final_metrics: EvalRecord,
    /// The output folder, when the run wrote one.
    pub out_dir: Option<PathBuf>,
}

/// Everything a run produced.
#[derive(Clone, Debug)]
pub struct RunResult {
    /// The resolved configuration.
    pub config: RunConfig,
    /// One record per evaluation, in step order (`metrics.jsonl`).
    pub records: Vec<EvalRecord>,
    /// The attention rows of the tracked training samples.
    pub tracked: Vec<TrackedSample>,
    /// The end-of-run summary (`summary.json`).
    pub summary: Summary,
}

/// `config.json`: the resolved configuration, the inputs it was given, and where and how it ran.
/// `benign run --config` reads it back.
#[derive(Serialize)]
struct ConfigFile<'a> {
    #[serde(flatten)]
    config: &'a RunConfig,
    data_dir: Option<&'a Path>,
    /// How `W_0` was obtained when not from the run's own seed.
    init_w: Option<String>,
    init_w_file: Option<&'a Path>,
    #[serde(skip_serializing_if = "Option::is_none")]
    provenance: Option<Provenance>,
}

/// Where a run writes its files, and whether it draws figures there. The folder is a locked
/// job folder ([`crate::rundir`]); a run dropped before it completed is marked failed.
pub(crate) struct RunDir {
    pub(crate) path: PathBuf,
    pub(crate) figures: bool,
    pub(crate) job: JobDir,
}

impl RunDir {
    /// Marks the run failed with `error`.
    pub(crate) fn fail(&mut self, error: &Error) {
        self.job.fail(&error.to_string());
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if self.job.state() == Some(JobState::Running) {
            self.job.fail("the run stopped before it finished");
        }
    }
}

/// The inputs a run's config.json records besides its configuration.
#[derive(Default)]
pub(crate) struct RunInputs<'a> {
    pub(crate) data_dir: Option<&'a Path>,
    pub(crate) init_label: Option<String>,
    pub(crate) init_file: Option<&'a Path>,
}

/// Opens a run's output folder (`runs/<UTC time>-<id>` when none is given) under the folder
/// policy of [`crate::rundir`] and writes its config.json with the provenance of this process.
pub(crate) fn open_run_dir(
    out_dir: Option<PathBuf>,
    figures: bool,
    force: bool,
    config: &RunConfig,
    inputs: RunInputs<'_>,
) -> Result<RunDir> {
    let path = out_dir.unwrap_or_else(default_out_dir);
    let mut file = ConfigFile {
        config,
        data_dir: inputs.data_dir,
        init_w: inputs.init_label,
        init_w_file: inputs.init_file,
        provenance: None,
    };
    let defining = serde_json::to_string(&file).map_err(|e| Error::Format {
        path: path.join("config.json"),
        message: e.to_string(),
    })?;
    let job = JobDir::open(
        &path,
        &JobSpec {
            force,
            ..JobSpec::new(
                "run",
                rundir::job_key(&defining),
                format!(
                    "run {} seed={} ({} steps)",
                    config.data_label(),
                    config.seed,
                    config.steps
                ),
                Reuse::Refuse,
            )
        },
    )?;
    file.provenance = Some(Provenance::capture(rayon::current_num_threads()));
    io::write_json_atomic(&path.join("config.json"), &file)?;
    Ok(RunDir { path, figures, job })
}

/// Runs the synthetic experiment; see [`run_with`].
pub fn run(config: RunConfig, options: RunOptions) -> Result<RunResult> {
    run_with(config, options, &mut |_, _| {})
}

/// Runs the synthetic experiment, calling `observe(record, steps)` after every evaluation.
///
/// The one pipeline of every synthetic run, whatever the model and trainer: validate the
/// configuration and what the options add to it; check memory; generate or load the data (or
/// only the labels, where the trainer draws its inputs: the law trainer, a cell of a column);
/// open the output folder; build the trainer (its start-up); then `train_loop` and the summary
/// and files.
pub fn run_with(
    config: RunConfig,
    options: RunOptions,
    observe: &mut dyn FnMut(&EvalRecord, usize),
) -> Result<RunResult> {
    run_pipeline(config, options, observe, LawVariant::Exact)
}

/// [`run_with`] with the law trainer's variant (the wrong laws exist for its tests).
pub(crate) fn run_pipeline(
    mut config: RunConfig,
    options: RunOptions,
    observe: &mut dyn FnMut(&EvalRecord, usize),
    law_variant: LawVariant,
) -> Result<RunResult> {
    let started = Instant::now();
    let RunOptions {
        out_dir,
        write_files,
        no_figures,
        data,
        init,
        init_file,
        force,
        test_draw,
        column,
    } = options;
    if let Some(loaded) = &data {
        // The data fixes the shapes.
        config.samples = loaded.train.samples;
        config.tokens = loaded.train.tokens_per_sample;
        config.dim = loaded.train.dim;
        config.test_size = loaded.test_labels.len();
    }
    // The one validation of a run: everything below may rely on it.
    config.validate()?;
    refuse_inputs(&config, data.is_some(), init.is_some(), column.as_deref())?;
    if column.is_none() {
        check_memory(&config, data.is_some())?;
    }
    let data_dir = data.as_ref().map(|d| d.dir.clone());
    let draws_its_inputs = column.is_some()
        || (config.model == ModelKind::Attention && config.trainer == TrainerKind::Law);
    let tokens = match data {
        Some(loaded) => {
            log::info!("data: loading {}", loaded.dir.display());
            let test = TestSource::Loaded {
                tokens_per_sample: loaded.train.tokens_per_sample,
                dim: loaded.train.dim,
                tokens: loaded.test_tokens,
                labels: loaded.test_labels,
            };
            Some(Tokens {
                train: loaded.train,
                test,
                nu: loaded.nu,
                signals: Vec::new(),
            })
        }
        None if draws_its_inputs => None,
        None => {
            log::info!(
                "data: generating n = {}, T = {}, d = {}",
                config.samples,
                config.tokens,
                config.dim
            );
            let signals = Signals::new(&config);
            let train = training_set(&config, &signals);
            let nu = signals.nu.clone();
            let signal_vectors = vec![signals.mu_plus.clone(), signals.mu_minus.clone()];
            let test = TestSource::generated(&config, signals);
            Some(Tokens {
                train,
                test,
                nu,
                signals: signal_vectors,
            })
        }
    };
    let labels = match &tokens {
        Some(tokens) => Labels {
            train: tokens.train.labels.clone(),
            clean: tokens.train.clean_labels.clone(),
            noisy: tokens.train.noisy.clone(),
            test: tokens.test.labels(),
        },
        None => {
            let (clean, train, noisy) = training_labels(&config);
            Labels {
                train,
                clean,
                noisy,
                test: balanced_labels(config.test_size),
            }
        }
    };
    config.resolve(&labels.noisy);
    if let Some(init) = init.as_ref().filter(|i| i.dim() != config.dim) {
        return Err(Error::invalid(
            "init-w",
            format!(
                "W_0 is {0} x {0} but the tokens have dimension {1}",
                init.dim(),
                config.dim
            ),
        ));
    }
    let init_label = init.as_ref().map(|i| match i {
        InitSource::Matrix { .. } => "given matrix".to_string(),
        InitSource::Stream { seed, .. } => format!("stream of seed {seed}"),
    });
    let out_dir = write_files
        .then(|| {
            open_run_dir(
                out_dir,
                !no_figures,
                force,
                &config,
                RunInputs {
                    data_dir: data_dir.as_deref(),
                    init_label,
                    init_file: init_file.as_deref(),
                },
            )
        })
        .transpose()?;
    let data_seconds = started.elapsed().as_secs_f64();

    let clock = Instant::now();
    let startup = match (column, tokens) {
        (Some(column), _) => column.cell(&config, &labels)?,
        (None, None) => law::trainer(&config, &labels, law_variant)?,
        (None, Some(tokens)) => tokens.trainer(&config, &labels, init, test_draw)?,
    };
    let startup_seconds = clock.elapsed().as_secs_f64();
    log::info!("training: {} steps", config.steps);
    let Startup {
        mut trainer,
        subspace_rank,
        timings: startup,
    } = startup;
    let timings = StageTimings {
        started,
        data_seconds,
        startup_seconds,
        startup,
        subspace_rank,
    };
    let clock = Instant::now();
    let outcome = train_loop(&config, &labels, trainer.as_mut(), observe);
    let training_seconds = clock.elapsed().as_secs_f64();
    drop(trainer);
    let mut out_dir = out_dir;
    match outcome {
        Ok(output) => report_run(
            config,
            &labels.noisy,
            output,
            training_seconds,
            timings,
            out_dir,
        ),
        Err((err, records)) => {
            // The metrics recorded before the failure are kept.
            if let Some(dir) = &mut out_dir {
                write_metrics(&dir.path, &records)?;
                dir.fail(&err);
            }
            Err(err)
        }
    }
}

/// Refuses inputs the configuration's model or trainer cannot use, before any work.
fn refuse_inputs(
    config: &RunConfig,
    given_data: bool,
    given_init: bool,
    column: Option<&ColumnStartup>,
) -> Result<()> {
    if let Some(column) = column {
        if given_data || given_init {
            return Err(Error::invalid(
                "common-random-numbers",
                "a cell of a column starts from the column's data and W_0, not given ones",
            ));
        }
        return column.check_serves(config);
    }
    match (config.model, config.trainer) {
        (ModelKind::Encoder, _) if given_init => Err(Error::invalid(
            "init-w",
            "sets W_0 of the attention model; the encoder initialises from --seed",
        )),
        (ModelKind::Attention, TrainerKind::Law) => {
            match law::refusal_given(config, given_data, given_init) {
                Some(why) => Err(Error::invalid("trainer", why)),
                None => Ok(()),
            }
        }
        _ => Ok(()),
    }
}

/// A run's training and test tokens, generated or loaded, with `nu` and the signal vectors the
/// subspace basis spans.
struct Tokens {
    train: TrainSet,
    test: TestSource,
    nu: Vec<f64>,
    /// `mu_+` and `mu_-` when generated (loaded tokens carry theirs inside).
    signals: Vec<Vec<f64>>,
}

impl Tokens {
    /// The trainer of `config` on these tokens: the encoder, or the attention model's subspace
    /// or dense trainer, in the configuration's precision.
    fn trainer(
        self,
        config: &RunConfig,
        labels: &Labels,
        init: Option<InitSource>,
        test_draw: TestDraw,
    ) -> Result<Startup> {
        let Tokens {
            train,
            test,
            nu,
            signals,
        } = self;
        if config.model == ModelKind::Encoder {
            let test_tokens = test.materialise(config.tokens * config.dim);
            drop(test);
            return Ok(Startup {
                trainer: super::encoder::trainer(
                    config,
                    &train.tokens,
                    &labels.train,
                    &test_tokens,
                )?,
                subspace_rank: None,
                timings: None,
            });
        }
        // A given W_0's size was checked before the output folder was opened.
        let init = init.unwrap_or_else(|| InitSource::from_config(config));
        let signals: Vec<&[f64]> = signals.iter().map(Vec::as_slice).collect();
        match config.trainer {
            TrainerKind::Subspace => {
                let setup = SubspaceSetup {
                    train: &train,
                    extra_directions: &signals,
                    nu: &nu,
                    init: &init,
                    test: &test,
                    lr: config.lr,
                    startup: config.effective_startup_precision(),
                    draw: test_draw,
                };
                fn build<T: Float>(setup: SubspaceSetup<'_>) -> Result<Startup> {
                    let trainer = SubspaceTrainer::<T>::new(setup)?;
                    Ok(Startup {
                        subspace_rank: Some(trainer.rank()),
                        timings: Some(trainer.timings.clone()),
                        trainer: Box::new(trainer),
                    })
                }
                match config.precision {
                    Precision::F64 => build::<f64>(setup),
                    Precision::F32 => build::<f32>(setup),
                }
            }
            TrainerKind::Dense => {
                let test_tokens = test.materialise(config.tokens * config.dim);
                drop(test);
                fn build<T: Float>(
                    train: &TrainSet,
                    test_tokens: &[f64],
                    nu: &[f64],
                    init: &InitSource,
                    lr: f64,
                ) -> Result<Box<dyn Trainer>> {
                    Ok(Box::new(DenseTrainer::<T>::new(
                        train,
                        test_tokens,
                        nu,
                        init,
                        lr,
                    )?))
                }
                let build = match config.precision {
                    Precision::F64 => build::<f64>,
                    Precision::F32 => build::<f32>,
                };
                Ok(Startup {
                    trainer: build(&train, &test_tokens, &nu, &init, config.lr)?,
                    subspace_rank: None,
                    timings: None,
                })
            }
            TrainerKind::Law => unreachable!("the law trainer draws its inputs"),
        }
    }
}

/// A trainer ready to train, and what its start-up built.
pub(crate) struct Startup {
    pub(crate) trainer: Box<dyn Trainer>,
    /// Subspace rank r (the subspace and law trainers, a column's cells).
    pub(crate) subspace_rank: Option<usize>,
    pub(crate) timings: Option<StartupTimings>,
}

/// Where the time before training went, and what the start-up built.
pub(crate) struct StageTimings {
    /// When the run's clock started.
    pub(crate) started: Instant,
    pub(crate) data_seconds: f64,
    pub(crate) startup_seconds: f64,
    pub(crate) startup: Option<StartupTimings>,
    pub(crate) subspace_rank: Option<usize>,
}

/// The summary and output files of a finished training loop.
fn report_run(
    config: RunConfig,
    noisy: &[bool],
    LoopOutput {
        records,
        tracked,
        first_fit,
        evaluation_seconds,
    }: LoopOutput,
    training_seconds: f64,
    timings: StageTimings,
    mut out_dir: Option<RunDir>,
) -> Result<RunResult> {
    let last = records
        .last()
        .cloned()
        .expect("at least the step-0 evaluation");
    let noisy_fraction = noisy.iter().filter(|&&v| v).count() as f64 / noisy.len().max(1) as f64;
    let mut summary = Summary {
        model: config.model,
        trainer: config.trainer,
        precision: config.precision,
        subspace_rank: timings.subspace_rank,
        wall_seconds_total: 0.0,
        data_seconds: timings.data_seconds,
        startup_seconds: timings.startup_seconds,
        startup: timings.startup,
        training_seconds,
        evaluation_seconds,
        theory: predict(&config),
        observed_regime: classify(&last),
        first_all_fitted_step: first_fit,
        reference_levels: reference_levels(config.rho, noisy_fraction),
        final_metrics: last,
        out_dir: out_dir.as_ref().map(|d| d.path.clone()),
    };
    // Everything but the figures, which are drawn after the summary is written.
    summary.wall_seconds_total = timings.started.elapsed().as_secs_f64();
    if let Some(run_dir) = &mut out_dir {
        let dir = &run_dir.path;
        // Data first: a figure that cannot be drawn costs the figure, never the results.
        write_metrics(dir, &records)?;
        write_attention(&dir.join("attention.csv"), &tracked)?;
        io::write_json_atomic(&dir.join("summary.json"), &summary)?;
        if run_dir.figures {
            if let Err(err) =
                write_figure(dir, &config, &records, &tracked, &summary.reference_levels)
            {
                log::warn!("no figure drawn ({err}); the data files are complete");
            }
        }
        run_dir.job.complete()?;
    }
    Ok(RunResult {
        config,
        records,
        tracked,
        summary,
    })
}

/// Refuses up front, before generating anything, a run whose arrays would not fit in the
/// available memory (dense: `W`, `W_0` and the test set; subspace: the training tokens, the
/// d x (3r + 1) start-up matrices, a `W_0` block and a test chunk; law: its drawn inputs;
/// encoder: tokens, parameters and tapes). `tokens_held`: the training tokens are loaded already.
fn check_memory(config: &RunConfig, tokens_held: bool) -> Result<()> {
    let (d, rows, test_rows) = (
        config.dim as u128,
        (config.samples * config.tokens) as u128,
        (config.test_size * config.tokens) as u128,
    );
    let train_bytes = if tokens_held { 0 } else { rows * d * 8 };
    let trainer = match config.model {
        ModelKind::Encoder => None,
        ModelKind::Attention => Some(config.trainer),
    };
    let (needed, what, hint) = match trainer {
        None => (
            super::encoder::encoder_bytes(
                config.dim,
                config.effective_mlp_dim(),
                config.tokens,
                config.samples,
                config.test_size,
                config.precision.bytes(),
            ),
            format!(
                "the encoder at d = {}, mlp {} with {} test samples",
                config.dim,
                config.effective_mlp_dim(),
                config.test_size
            ),
            "reduce --dim, --mlp-dim or --test-size".to_string(),
        ),
        Some(TrainerKind::Dense) => {
            let element = config.precision.bytes();
            (
                train_bytes
                    + super::dense::dense_bytes(
                        config.dim,
                        rows as usize,
                        test_rows as usize,
                        element,
                    ),
                format!(
                    "the dense trainer (W and W_0 are {0} x {0}, plus the test set)",
                    config.dim
                ),
                // The advice names a trainer only when that trainer would fit.
                super::dense::available_memory_bytes().map_or_else(
                    || "use `--trainer subspace`, which never stores W".to_string(),
                    |available| {
                        super::dense::dense_hint(
                            config.dim,
                            rows as usize,
                            test_rows as usize,
                            available,
                        )
                    },
                ),
            )
        }
        Some(TrainerKind::Subspace) => {
            let r = rows + 2;
            let element = config.effective_startup_precision().bytes() as u128;
            let startup =
                d * (3 * r + 1) * element + super::subspace::INIT_BLOCK_BYTES as u128 + (256 << 20);
            (
                train_bytes + startup + test_rows * 2 * r * 8,
                format!("the subspace trainer at d = {}", config.dim),
                match config.init {
                    super::InitKind::Gaussian => {
                        "reduce --dim, --samples or --tokens, or use `--trainer law`, which runs \
                         at any d"
                    }
                    super::InitKind::Uniform => {
                        "reduce --dim, --samples or --tokens, or use `--trainer law --init \
                         gaussian`, which runs at any d"
                    }
                }
                .to_string(),
            )
        }
        Some(TrainerKind::Law) => (
            super::law::law_bytes(config),
            format!(
                "the law trainer (rank {}, {} test tokens)",
                rows + 2,
                test_rows
            ),
            "reduce --samples, --tokens or --test-size".to_string(),
        ),
    };
    if let Some(available) = super::dense::available_memory_bytes() {
        if needed > available {
            let hint = if hint.starts_with("only ") {
                hint
            } else {
                format!("only {available} bytes are available; {hint}")
            };
            return Err(Error::OutOfMemory {
                what,
                needed_bytes: needed,
                hint,
            });
        }
    }
    Ok(())
}

/// What a finished training loop returns: the evaluations, the tracked samples' attention
/// rows, the first step with every training sample fitted, and the seconds spent evaluating.
struct LoopOutput {
    records: Vec<EvalRecord>,
    tracked: Vec<TrackedSample>,
    first_fit: Option<usize>,
    evaluation_seconds: f64,
}

/// The samples whose full attention row is recorded at every step (`track_samples`), before any step.
fn tracked_samples(config: &RunConfig, noisy: &[bool]) -> Vec<TrackedSample> {
    let tracked_ids = config.track_samples.clone().unwrap_or_default();
    tracked_ids
        .iter()
        .map(|&i| TrackedSample {
            sample: i,
            noisy: noisy[i],
            rows: Vec::with_capacity(config.steps + 1),
        })
        .collect()
}

/// The one training loop of every synthetic run. Steps `0..=steps`: track the chosen samples'
/// attention rows every step, evaluate every `eval_every` steps and at the last, update between.
/// On failure returns the records made so far.
fn train_loop(
    config: &RunConfig,
    labels: &Labels,
    trainer: &mut dyn Trainer,
    observe: &mut dyn FnMut(&EvalRecord, usize),
) -> std::result::Result<LoopOutput, (Error, Vec<EvalRecord>)> {
    let t = config.tokens;
    let mut tracked = tracked_samples(config, &labels.noisy);
    let mut records = Vec::with_capacity(config.steps / config.eval_every + 2);
    let mut first_fit = None;
    let mut evaluation_seconds = 0.0;
    let clock = Instant::now();
    for step in 0..=config.steps {
        let evaluate = step % config.eval_every == 0 || step == config.steps;
        let evaluation_clock = Instant::now();
        let test = evaluate.then(|| trainer.test_readout());
        let norms = if evaluate {
            trainer.norms()
        } else {
            StateNorms::default()
        };
        evaluation_seconds += evaluation_clock.elapsed().as_secs_f64();
        let readout = if step < config.steps {
            trainer.step(step)
        } else {
            // The training readout after the last update serves only the last evaluation.
            let evaluation_clock = Instant::now();
            // A non-finite state made by the last update, reported with that update's step.
            let readout = match trainer.pending_error() {
                Some(err) => Err(err),
                None => trainer.train_readout(step),
            };
            evaluation_seconds += evaluation_clock.elapsed().as_secs_f64();
            readout
        };
        let readout = match readout {
            Ok(readout) => readout,
            Err(err) => return Err((err, records)),
        };
        for sample in tracked.iter_mut() {
            let i = sample.sample;
            sample
                .rows
                .push(readout.attention[i * t..(i + 1) * t].to_vec());
        }
        if first_fit.is_none() && readout.all_fitted(&labels.train) {
            first_fit = Some(step);
        }
        if let Some(test) = test {
            let evaluation_clock = Instant::now();
            let record = metrics::evaluate(
                labels,
                t,
                (&readout, &test),
                step,
                clock.elapsed().as_secs_f64(),
                norms,
            );
            if let Some((quantity, value)) = first_non_finite(&record) {
                let err = Error::NonFinite {
                    step,
                    quantity: quantity.into(),
                    value,
                };
                records.push(record);
                return Err((err, records));
            }
            evaluation_seconds += evaluation_clock.elapsed().as_secs_f64();
            observe(&record, config.steps);
            records.push(record);
        }
    }
    Ok(LoopOutput {
        records,
        tracked,
        first_fit,
        evaluation_seconds,
    })
}

/// Writes `metrics.jsonl` (one evaluation per line) and `metrics.csv` (the same evaluations,
/// one flat column per scalar, e.g. `attention_clean_relevant`) into `dir`.
pub(crate) fn write_metrics(dir: &Path, records: &[EvalRecord]) -> Result<()> {
    io::write_atomic_with(&dir.join("metrics.jsonl"), |w| {
        for r in records {
            serde_json::to_writer(&mut *w, r)?;
            w.write_all(b"\n")?;
        }
        Ok(())
    })?;
    let rows = records
        .iter()
        .map(io::table::flatten)
        .collect::<Result<Vec<_>>>()?;
    io::table::write_csv(&dir.join("metrics.csv"), &rows)
}

/// Name of the role of token position `t`.
pub fn role_name(t: usize) -> &'static str {
    match t {
        0 => "relevant",
        1 => "weak_same",
        2 => "weak_other",
        _ => "irrelevant",
    }
}

fn write_attention(path: &Path, tracked: &[TrackedSample]) -> Result<()> {
    io::write_atomic_with(path, |w| {
        let mut out = csv::Writer::from_writer(w);
        let csv_error = std::io::Error::other;
        out.write_record(["step", "sample", "token", "role", "probability"])
            .map_err(csv_error)?;
        let steps = tracked.first().map_or(0, |s| s.rows.len());
        for step in 0..steps {
            for sample in tracked {
                for (t, p) in sample.rows[step].iter().enumerate() {
                    out.write_record([
                        step.to_string(),
                        sample.sample.to_string(),
                        t.to_string(),
                        role_name(t).to_string(),
                        io::float_cell(*p),
                    ])
                    .map_err(csv_error)?;
                }
            }
        }
        out.flush()
    })
}

fn write_figure(
    dir: &Path,
    config: &RunConfig,
    records: &[EvalRecord],
    tracked: &[TrackedSample],
    levels: &ReferenceLevels,
) -> Result<()> {
    use plot::{Panel, Series};
    let mut panels = Vec::new();
    for sample in tracked {
        let series = (0..config.tokens)
            .map(|t| Series {
                label: if t < 3 {
                    role_name(t).replace('_', " ")
                } else {
                    format!("irrelevant {t}")
                },
                points: sample
                    .rows
                    .iter()
                    .enumerate()
                    .map(|(s, row)| (s as f64, row[t]))
                    .collect(),
                dashed: t >= 3,
            })
            .collect();
        panels.push(Panel {
            title: format!(
                "{}attention of {} sample {}",
                if config.model == ModelKind::Encoder {
                    "[CLS] "
                } else {
                    ""
                },
                if sample.noisy { "noisy" } else { "clean" },
                sample.sample
            ),
            x_label: "step".into(),
            y_label: "attention probability".into(),
            series,
            y_range: Some((0.0, 1.0)),
            log_x: false,
        });
    }
    let curve = |label: &str, dashed: bool, value: &dyn Fn(&EvalRecord) -> Option<f64>| Series {
        label: label.into(),
        points: records
            .iter()
            .filter_map(|r| value(r).map(|v| (r.step as f64, v)))
            .collect(),
        dashed,
    };
    panels.push(Panel {
        title: "accuracy".into(),
        x_label: "step".into(),
        y_label: "accuracy".into(),
        series: vec![
            curve("train", false, &|r| Some(r.train_acc)),
            curve("test", false, &|r| Some(r.test_acc)),
            curve("train (noisy samples)", true, &|r| r.train_acc_noisy),
        ],
        y_range: Some((0.0, 1.02)),
        log_x: false,
    });
    let level = |label: &str, v: f64| Series {
        label: label.into(),
        points: vec![(0.0, v), (config.steps as f64, v)],
        dashed: true,
    };
    panels.push(Panel {
        title: "loss".into(),
        x_label: "step".into(),
        y_label: "mean logistic loss".into(),
        series: {
            let mut series = vec![
                curve("train", false, &|r| Some(r.train_loss)),
                curve("test", false, &|r| Some(r.test_loss)),
            ];
            // The levels are the fixed-head model's; the encoder's trainable head goes below.
            if config.model == ModelKind::Attention {
                series.push(level("benign level", levels.benign_train_loss));
                series.push(level(
                    "not-overfitting level",
                    levels.not_overfitting_train_loss,
                ));
            }
            series
        },
        y_range: None,
        log_x: false,
    });
    let title = format!("{} ({})", config.data_label(), model_label(config));
    plot::render_panels(
        &panels,
        2,
        &title,
        &dir.join("dynamics.svg"),
        &dir.join("dynamics.png"),
    )
}

/// The model (and trainer) of a run, for titles and summaries.
fn model_label(config: &RunConfig) -> String {
    match config.model {
        ModelKind::Attention => format!("{:?} trainer", config.trainer),
        ModelKind::Encoder => format!(
            "encoder, mlp {}{}",
            config.effective_mlp_dim(),
            if config.no_skip { ", no skip" } else { "" }
        ),
    }
}

/// `runs/<UTC time>-<short id>`.
pub(crate) fn default_out_dir() -> PathBuf {
    let now = std::time::SystemTime::now();
    let nanos = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let id = crate::seed::mix_seed(nanos as u64 ^ u64::from(std::process::id()), "run-id");
    PathBuf::from("runs").join(format!(
        "{}-{:06x}",
        crate::provenance::utc_compact(now),
        id & 0xff_ffff
    ))
}

/// A few lines for a human: the outcome, the theory next to it, and where the files are.
pub fn human_summary(result: &RunResult) -> String {
    let s = &result.summary;
    let c = &result.config;
    let f = &s.final_metrics;
    let mut out = String::new();
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
    let _ = writeln!(
        out,
        "{} sigma={}  ({}, {:?}, {} steps)",
        c.data_label(),
        c.sigma,
        model_label(c),
        c.precision,
        c.steps
    );
    let _ = writeln!(
        out,
        "final: train acc {:.3} (clean {}, noisy {})  test acc {:.4}  train loss {:.4}  test loss {:.4}",
        f.train_acc,
        opt(f.train_acc_clean),
        opt(f.train_acc_noisy),
        f.test_acc,
        f.train_loss,
        f.test_loss
    );
    if let (Some(clean), noisy) = (f.attention_clean, f.attention_noisy) {
        let _ = write!(out, "attention: clean relevant {:.3}", clean.relevant);
        if let Some(noisy) = noisy {
            let _ = write!(
                out,
                "; noisy relevant {:.3}, weak-other {:.3}, max irrelevant {:.3}",
                noisy.relevant, noisy.weak_other, noisy.max_irrelevant
            );
        }
        let _ = writeln!(out);
    }
    let l = &s.reference_levels;
    let _ = writeln!(
        out,
        "reference train loss: benign {:.3}, not overfitting {:.3} (clean fit {:.3}, noisy fit {:.3}, noisy unfit {:.3})",
        l.benign_train_loss, l.not_overfitting_train_loss, l.clean_fitted_by_relevant, l.noisy_fitted_by_weak_other, l.noisy_unfitted
    );
    let t = &s.theory;
    let basis = match (t.snr_harmful_benign, t.snr_benign_not_overfitting) {
        (Some(lower), Some(upper)) => format!(
            "from the measured boundaries (harmful|benign at SNR {lower:.4}, benign|not overfitting at {upper:.4}; {})",
            t.calibration
        ),
        _ => format!(
            "by the bare orders (n^-1/2 {:.4}, d^-1/4 {:.4}; calibration {})",
            t.n_pow_minus_half, t.d_pow_minus_quarter, t.calibration
        ),
    };
    let _ = writeln!(
        out,
        "SNR {:.4}: predicted {} {basis}; observed {}; all samples fitted from step {}",
        t.snr,
        t.predicted,
        s.observed_regime,
        s.first_all_fitted_step
            .map_or("never".into(), |v| v.to_string())
    );
    let _ = write!(
        out,
        "time: {:.2} s total ({:.2} s data, {:.2} s start-up, {:.2} s training)",
        s.wall_seconds_total, s.data_seconds, s.startup_seconds, s.training_seconds
    );
    if let Some(dir) = &s.out_dir {
        let _ = write!(out, "\noutputs: {}", dir.display());
    }
    out
}
