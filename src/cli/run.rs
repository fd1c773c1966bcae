//! `benign run`: the paper's synthetic experiment (library: `benign::synthetic::run`).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use benign::synthetic::subspace::TestDraw;
use benign::synthetic::{self, export, Precision, RunConfig, RunOptions};

use super::data::{DataArgs, TrainingArgs};

#[derive(Args)]
#[command(allow_negative_numbers = true)]
pub struct RunArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub training: TrainingArgs,
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
    /// Output directory [default: runs/<UTC time>-<id>].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Do not write any file.
    #[arg(long)]
    pub no_write: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// The configuration these arguments describe: defaults < preset < an export directory's
/// config.json < explicit options.
pub fn config_from(args: &RunArgs) -> anyhow::Result<RunConfig> {
    let mut base = RunConfig::default();
    if let Some(dir) = &args.data_dir {
        let path = dir.join("config.json");
        if path.exists() {
            let text = std::fs::read_to_string(&path)?;
            base = serde_json::from_str(&text).map_err(|e| benign::Error::Format {
                path: path.clone(),
                message: e.to_string(),
            })?;
            base.track_samples = None;
        }
    }
    let config = args.data.apply(base);
    let mut config = args.training.apply(config);
    if let Some(v) = args.startup_precision {
        config.startup_precision = Some(v);
    }
    if let Some(v) = &args.track_samples {
        config.track_samples = Some(v.clone());
    }
    Ok(config)
}

pub fn execute(args: RunArgs) -> anyhow::Result<i32> {
    let config = config_from(&args)?;
    config.validate()?;
    let data = args
        .data_dir
        .as_deref()
        .map(export::load_data)
        .transpose()?;
    let init = args.init_w.as_deref().map(export::load_init).transpose()?;
    if let Some(dir) = &args.save_init {
        if config.model != synthetic::ModelKind::Encoder {
            return Err(
                benign::Error::invalid("save-init", "applies to `--model encoder` only").into(),
            );
        }
        synthetic::encoder::save_initial_params(&config, dir)?;
    }
    let options = RunOptions {
        out_dir: args.out.clone(),
        write_files: !args.no_write,
        data,
        init,
        test_draw: args.test_draw,
    };
    let show = !args.quiet && std::io::stderr().is_terminal();
    let bar = if show {
        let bar = ProgressBar::new(config.steps as u64);
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} steps {elapsed_precise} {msg}")
                .expect("valid template"),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut observe = |record: &synthetic::metrics::EvalRecord, _steps: usize| {
        bar.set_position(record.step as u64);
        bar.set_message(format!(
            "train acc {:.3} test acc {:.3} train loss {:.4}",
            record.train_acc, record.test_acc, record.train_loss
        ));
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads.unwrap_or(0))
        .build()?;
    let result = pool.install(|| synthetic::run_with(config, options, &mut observe));
    bar.finish_and_clear();
    let result = result?;
    let text = if args.json {
        serde_json::to_string_pretty(&result.summary)?
    } else {
        synthetic::run::human_summary(&result)
    };
    // A closed stdout (e.g. `| head`) is not an error of the run.
    let _ = writeln!(std::io::stdout(), "{text}");
    Ok(0)
}
