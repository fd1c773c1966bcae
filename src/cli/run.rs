//! `benign run`: the paper's synthetic experiment (library: `benign::synthetic::run`).

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use benign::synthetic::subspace::TestDraw;
use benign::synthetic::{self, export, Precision, RunConfig, RunOptions};

use super::common::CommonArgs;
use super::data::RunConfigArgs;
use super::progress::Field;

#[derive(Args)]
#[command(allow_negative_numbers = true)]
pub struct RunArgs {
    /// Re-run the configuration saved in a run's config.json (options given as well override
    /// it); its data directory and initial W are reused when it names them.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub settings: RunConfigArgs,
    /// Element type of the subspace start-up products (f32 halves their cost)
    /// [default: f64 below d = 50,000, f32 from there on].
    #[arg(long, value_enum)]
    pub startup_precision: Option<Precision>,
    /// Training samples whose full attention row is recorded every step [default: first clean, first noisy].
    #[arg(long, value_delimiter = ',')]
    pub track_samples: Option<Vec<usize>>,
    /// Train on the data of a `benign data export` directory instead of generating it.
    #[arg(long = "data", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Initial W (d x d .npy) instead of the seeded stream.
    #[arg(long)]
    pub init_w: Option<PathBuf>,
    /// Encoder only: also write its seeded initial parameters to DIR as <name>.npy.
    #[arg(long, value_name = "DIR")]
    pub save_init: Option<PathBuf>,
    /// How the subspace trainer gets the test tokens' projections: `subspace` draws them from
    /// their exact law (k <= 2r + 1 normals per token), `tokens` generates each test token in
    /// R^d and projects it. Two independent samples of the same test law; `tokens` is used
    /// anyway for loaded test sets and a test set drawn with the training seed.
    #[arg(long, value_enum, default_value_t = TestDraw::Subspace)]
    pub test_draw: TestDraw,
    /// A `benign boundary` fit.json whose measured boundaries predict the regime
    /// [default: the built-in calibration, assets/calibration/boundary-fit.json].
    #[arg(long, value_name = "FILE")]
    pub calibration: Option<PathBuf>,
    /// Output directory [default: runs/<UTC time>-<id>].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Do not write any file.
    #[arg(long)]
    pub no_write: bool,
    /// Write the data files but draw no figure.
    #[arg(long)]
    pub no_plot: bool,
    /// Replace what --out holds (a finished run, another job): the folder is emptied first.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// A saved run's config.json: the configuration and where its data and initial W came from.
#[derive(serde::Deserialize)]
struct SavedRun {
    #[serde(flatten)]
    config: RunConfig,
    #[serde(default)]
    data_dir: Option<PathBuf>,
    #[serde(default)]
    init_w_file: Option<PathBuf>,
}

fn read_saved_run(path: &std::path::Path) -> anyhow::Result<SavedRun> {
    let text = std::fs::read_to_string(path).map_err(|source| benign::Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(
        serde_json::from_str(&text).map_err(|e| benign::Error::Format {
            path: path.to_path_buf(),
            message: format!("not a run's config.json: {e}"),
        })?,
    )
}

/// The configuration these arguments describe: defaults < preset < a saved config.json
/// (`--config`) or an export directory's config.json < explicit options.
pub fn config_from(args: &RunArgs) -> anyhow::Result<RunConfig> {
    let mut base = RunConfig::default();
    if let Some(path) = &args.config {
        base = read_saved_run(path)?.config;
    } else if let Some(dir) = &args.data_dir {
        let path = dir.join("config.json");
        if path.exists() {
            base = read_saved_run(&path)?.config;
            base.track_samples = None;
        }
    }
    let mut config = args.settings.apply(base);
    if let Some(v) = args.startup_precision {
        config.startup_precision = Some(v);
    }
    if let Some(v) = &args.track_samples {
        config.track_samples = Some(v.clone());
    }
    Ok(config)
}

pub fn execute(mut args: RunArgs) -> anyhow::Result<i32> {
    if let Some(path) = &args.calibration {
        benign::boundary::calibration::install(benign::boundary::calibration::Calibration::read(
            path,
        )?)?;
    }
    if let Some(path) = &args.config {
        // The saved run's data directory and initial W, unless given again.
        let saved = read_saved_run(path)?;
        if args.data_dir.is_none() {
            args.data_dir = saved.data_dir;
        }
        if args.init_w.is_none() {
            args.init_w = saved.init_w_file;
        }
    }
    if let Some(dir) = &args.data_dir {
        // The data fixes these; silently overriding them would report a configuration the
        // data was not made with.
        let fixed = args.settings.data.data_fixed_options();
        if !fixed.is_empty() {
            return Err(benign::Error::invalid(
                "data",
                format!(
                    "{} fixes the data, so {} cannot be given with it (the data's own values are \
                     in {}/config.json)",
                    dir.display(),
                    fixed.join(", "),
                    dir.display()
                ),
            )
            .into());
        }
    }
    // Validated once, by the library's run pipeline.
    let mut config = config_from(&args)?;
    let data = args
        .data_dir
        .as_deref()
        .map(export::load_data)
        .transpose()?;
    let init = args.init_w.as_deref().map(export::load_init).transpose()?;
    // Above law::AUTO_DIM with no trainer named (here or in a saved config), the d-free law
    // trainer where it applies; a warning where it does not.
    let mut chosen = None;
    if args.settings.training.trainer.is_none() && args.config.is_none() {
        match synthetic::law::automatic_choice(&config, data.is_some(), init.is_some()) {
            synthetic::law::AutomaticChoice::Law(why) => {
                config.trainer = synthetic::TrainerKind::Law;
                chosen = Some(why);
            }
            synthetic::law::AutomaticChoice::Keep(Some(warning)) => log::warn!("{warning}"),
            synthetic::law::AutomaticChoice::Keep(None) => {}
        }
    }
    if args.save_init.is_some() && config.model != synthetic::ModelKind::Encoder {
        return Err(
            benign::Error::invalid("save-init", "applies to `--model encoder` only").into(),
        );
    }
    let options = RunOptions {
        out_dir: args.out.clone(),
        write_files: !args.no_write,
        no_figures: args.no_plot,
        data,
        init,
        init_file: args.init_w.clone(),
        force: args.force,
        test_draw: args.test_draw,
        column: None,
    };
    let pool = args.common.pool()?;
    // The bar (or the first log line) starts before the start-up, which can take minutes at
    // large d; the library reports its phases through the log.
    let progress = args.common.reporter("run", "steps", true);
    progress.set_total(config.steps as u64, 0);
    if let Some(why) = &chosen {
        progress.event(why, Vec::new());
    }
    let mut observe = |record: &synthetic::metrics::EvalRecord, _steps: usize| {
        progress.update(
            record.step as u64,
            vec![
                ("train_acc", Field::Float(record.train_acc, 3)),
                ("test_acc", Field::Float(record.test_acc, 3)),
                ("train_loss", Field::Float(record.train_loss, 4)),
            ],
        );
    };
    let result = pool.install(|| synthetic::run_with(config, options, &mut observe));
    progress.finish();
    let result = result?;
    // After the run, so that DIR may lie inside the run's own folder.
    if let Some(dir) = &args.save_init {
        synthetic::encoder::save_initial_params(&result.config, dir)?;
    }
    let text = if args.common.json {
        serde_json::to_string_pretty(&result.summary)?
    } else {
        let summary = synthetic::run::human_summary(&result);
        match &chosen {
            Some(why) => format!("{why}\n{summary}"),
            None => summary,
        }
    };
    // A closed stdout (e.g. `| head`) is not an error of the run.
    let _ = writeln!(std::io::stdout(), "{text}");
    Ok(0)
}
