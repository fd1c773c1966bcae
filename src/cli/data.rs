//! `benign data export`: writes the synthetic data, W_0 and the configuration as .npy files.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::common::set_if_given;

use benign::synthetic::{
    InitKind, LabelNoise, ModelKind, Precision, Preset, RunConfig, SignalDirections, TrainerKind,
};

/// The options that determine the synthetic data (shared by `run` and `data export`).
/// Unset options keep the preset's or the paper's default.
#[derive(Args, Clone, Debug, Default)]
pub struct DataArgs {
    /// Start from a preset of the paper's Figure 3 (explicit options override it).
    #[arg(long, value_enum)]
    pub preset: Option<Preset>,
    /// Training samples n (>= 2) [default: 20].
    #[arg(short = 'n', long)]
    pub samples: Option<usize>,
    /// Tokens per sample T (>= 3) [default: 8].
    #[arg(short = 'T', long)]
    pub tokens: Option<usize>,
    /// Token dimension d (>= 3) [default: 2000].
    #[arg(short = 'd', long)]
    pub dim: Option<usize>,
    /// Norm of each class signal ||mu|| (> 0) [default: 20].
    #[arg(long)]
    pub signal_norm: Option<f64>,
    /// Strength of the weakly relevant tokens rho (> 0) [default: 0.1].
    #[arg(long)]
    pub rho: Option<f64>,
    /// Label-noise rate eta in [0, 0.5) [default: 0.2].
    #[arg(long)]
    pub eta: Option<f64>,
    /// Token noise standard deviation sigma (>= 0) [default: 1].
    #[arg(long)]
    pub sigma: Option<f64>,
    /// Class signal directions [default: axis].
    #[arg(long, value_enum)]
    pub signal_directions: Option<SignalDirections>,
    /// How training labels are flipped [default: block].
    #[arg(long, value_enum)]
    pub label_noise: Option<LabelNoise>,
    /// Entrywise law of W_0: the reference's U(-1/sqrt(d), 1/sqrt(d)), or N(0, 1/(3d)) (same
    /// variance; needed by `--trainer law`) [default: uniform].
    #[arg(long, value_enum)]
    pub init: Option<InitKind>,
    /// Seed of the training set and W_0 [default: 42].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Seed of the test set [default: derived from --seed, independent of the training set].
    #[arg(long)]
    pub test_seed: Option<u64>,
    /// Test samples (>= 1) [default: 1000].
    #[arg(long)]
    pub test_size: Option<usize>,
    /// Reproduce the reference code's quirks: block flips, axis signals and the test set drawn
    /// with the training seed (test samples 0..9 are training inputs 0..9).
    #[arg(long)]
    pub reference_compat: bool,
}

impl DataArgs {
    /// Applies these options to `base` (preset first, then explicit values).
    /// The options given that a data set fixes (everything but the seeds of `W_0`), as the
    /// user typed them.
    pub fn data_fixed_options(&self) -> Vec<&'static str> {
        let given = [
            (self.preset.is_some(), "--preset"),
            (self.samples.is_some(), "-n/--samples"),
            (self.tokens.is_some(), "-T/--tokens"),
            (self.dim.is_some(), "-d/--dim"),
            (self.signal_norm.is_some(), "--signal-norm"),
            (self.rho.is_some(), "--rho"),
            (self.eta.is_some(), "--eta"),
            (self.sigma.is_some(), "--sigma"),
            (self.signal_directions.is_some(), "--signal-directions"),
            (self.label_noise.is_some(), "--label-noise"),
            (self.test_seed.is_some(), "--test-seed"),
            (self.test_size.is_some(), "--test-size"),
            (self.reference_compat, "--reference-compat"),
        ];
        given
            .into_iter()
            .filter_map(|(set, name)| set.then_some(name))
            .collect()
    }

    pub fn apply(&self, mut config: RunConfig) -> RunConfig {
        if let Some(preset) = self.preset {
            config.apply_preset(preset);
        }
        macro_rules! set {
            ($($field:ident),*) => { $( if let Some(v) = self.$field { config.$field = v; } )* };
        }
        if self.reference_compat {
            // The quirks first: options given explicitly override them.
            config.apply_reference_compat();
        }
        set!(
            samples,
            tokens,
            dim,
            signal_norm,
            rho,
            eta,
            sigma,
            signal_directions,
            label_noise,
            seed,
            test_size,
            init
        );
        if let Some(seed) = self.test_seed {
            config.test_seed = Some(seed);
        }
        config
    }
}

#[derive(Args)]
pub struct DataCommand {
    #[command(subcommand)]
    pub action: DataAction,
}

#[derive(Subcommand)]
pub enum DataAction {
    /// Write train_x/train_y/train_y_clean/train_noisy/test_x/test_y/w0/nu .npy files and config.json.
    Export(ExportArgs),
}

#[derive(Args)]
#[command(allow_negative_numbers = true)]
pub struct ExportArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Replace what --out holds (an earlier export, another job): the folder is emptied first.
    #[arg(long)]
    pub force: bool,
}

pub fn execute(command: DataCommand) -> anyhow::Result<i32> {
    match command.action {
        DataAction::Export(args) => {
            let config = args.data.apply(RunConfig::default());
            let resolved = benign::synthetic::export::export_data(config, &args.out, args.force)?;
            eprintln!(
                "wrote n={} T={} d={} test={} to {}",
                resolved.samples,
                resolved.tokens,
                resolved.dim,
                resolved.test_size,
                args.out.display()
            );
            Ok(0)
        }
    }
}

/// Training options shared by `benign run` and `benign sweep`.
#[derive(clap::Args, Debug, Clone)]
pub struct TrainingArgs {
    /// Learning rate (> 0) [default: 0.005].
    #[arg(long)]
    pub lr: Option<f64>,
    /// Gradient-descent steps (>= 1) [default: 1000].
    #[arg(long)]
    pub steps: Option<usize>,
    /// Evaluate every this many steps (>= 1) [default: 10].
    #[arg(long)]
    pub eval_every: Option<usize>,
    /// Trainer [default: subspace, exact for this model].
    #[arg(long, value_enum)]
    pub trainer: Option<TrainerKind>,
    /// Element type of the training state [default: f64; f32 for the encoder].
    #[arg(long, value_enum)]
    pub precision: Option<Precision>,
    /// Model: the paper's attention model, or the one-layer transformer encoder of its appendix
    /// [default: attention].
    #[arg(long, value_enum)]
    pub model: Option<ModelKind>,
    /// Encoder only: hidden width of the MLP [default: d].
    #[arg(long)]
    pub mlp_dim: Option<usize>,
    /// Encoder only: drop both residual connections.
    #[arg(long)]
    pub no_skip: bool,
}

impl TrainingArgs {
    /// Overrides the configuration's training settings with the options given.
    pub fn apply(&self, mut config: RunConfig) -> RunConfig {
        set_if_given(&mut config.lr, self.lr);
        set_if_given(&mut config.steps, self.steps);
        set_if_given(&mut config.eval_every, self.eval_every);
        set_if_given(&mut config.trainer, self.trainer);
        if let Some(v) = self.model {
            config.set_model(v);
        }
        set_if_given(&mut config.precision, self.precision);
        if self.mlp_dim.is_some() {
            config.mlp_dim = self.mlp_dim;
        }
        if self.no_skip {
            config.no_skip = true;
        }
        config
    }
}

/// The options that set a synthetic run's configuration, shared by `run`, `sweep` and
/// `boundary`: the data's, then the training's.
#[derive(clap::Args, Debug, Clone)]
pub struct RunConfigArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub training: TrainingArgs,
}

impl RunConfigArgs {
    /// `base` with the data options applied, then the training options.
    pub fn apply(&self, base: RunConfig) -> RunConfig {
        self.training.apply(self.data.apply(base))
    }
}
