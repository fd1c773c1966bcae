//! `benign pretrain`: train (or reuse) a transformer classifier on a real dataset (library:
//! `benign::classifier::pretrain`).

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;

use benign::classifier::pretrain::{
    self, Event, PretrainOptions, PretrainSpec, TokenizerSpec, DEFAULT_CHECKPOINTS_DIR,
};
use benign::classifier::Schedule;
use benign::realdata::DatasetName;

use super::common::{set_if_given, CommonArgs};
use super::progress::Field;

/// The checkpoint folder, declared once and flattened into `benign pretrain` and `benign
/// finetune`, so both commands read and write the same pretraining runs.
#[derive(Args, Clone, Debug)]
pub struct CheckpointArgs {
    /// Checkpoint folder shared by `benign pretrain` and `benign finetune`: a pretraining run
    /// lives in `<DIR>/<dataset>-<key>/` (the key is a hash of its settings) and either command
    /// reuses a finished one of the same settings.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_CHECKPOINTS_DIR)]
    pub checkpoints: PathBuf,
}

/// Refuses a `--data-dir` that is not a folder, before any work starts (`benign pretrain` and
/// `benign finetune`).
pub fn check_data_dir(data_dir: &Path) -> Result<(), benign::Error> {
    if data_dir.is_dir() {
        return Ok(());
    }
    Err(benign::Error::invalid(
        "data-dir",
        format!(
            "{} does not exist or is not a directory (expected one folder per dataset, e.g. {}/mnist)",
            data_dir.display(),
            data_dir.display()
        ),
    ))
}

#[derive(Args)]
pub struct PretrainArgs {
    /// The dataset (its folder under --data-dir).
    #[arg(long, value_enum, ignore_case = true)]
    pub dataset: DatasetName,
    /// Folder holding one folder per dataset (`<DIR>/mnist/...`).
    #[arg(long, value_name = "DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Training examples (class-stratified, seeded) [default: 10,000; TREC 3,000; BreastMNIST 200].
    #[arg(long)]
    pub subset: Option<usize>,
    /// Train on the whole training split.
    #[arg(long, conflicts_with = "subset")]
    pub full: bool,
    /// Passes over the training subset [default: 20 for MNIST, Fashion-MNIST and TREC; 60
    /// BreastMNIST; 10 SST-2 and AG news].
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Transformer blocks [default: 3 for images, 2 for text].
    #[arg(long)]
    pub layers: Option<usize>,
    /// Attention heads per block; must divide --dim [default: 4].
    #[arg(long)]
    pub heads: Option<usize>,
    /// Width of the token representations [default: 64].
    #[arg(long)]
    pub dim: Option<usize>,
    /// Hidden width of each block's MLP [default: 128].
    #[arg(long)]
    pub mlp_dim: Option<usize>,
    /// Patch side in pixels (images) [default: 4].
    #[arg(long)]
    pub patch: Option<usize>,
    /// Tokens per sentence (text) [default: TREC 24, SST-2 48, AG news 64].
    #[arg(long)]
    pub max_len: Option<usize>,
    /// Examples per optimizer step [default: 64 for images, 32 for text].
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Peak learning rate (AdamW) [default: 1e-3 for images, 5e-4 for text].
    #[arg(long)]
    pub lr: Option<f64>,
    /// AdamW's decoupled weight decay [default: 0.05].
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Learning-rate decay after the warm-up (5% of the steps) [default: cosine].
    #[arg(long, value_enum)]
    pub schedule: Option<Schedule>,
    /// Gradient-norm clipping bound (0: none) [default: 1].
    #[arg(long)]
    pub clip_norm: Option<f64>,
    /// Seeds the subset, the initialisation and the shuffling.
    #[arg(long, default_value_t = pretrain::DEFAULT_SEED)]
    pub seed: u64,
    #[command(flatten)]
    pub checkpoints: CheckpointArgs,
    /// Renamed `--checkpoints`: rejected with a message saying so.
    #[arg(long, value_name = "DIR", hide = true)]
    pub out: Option<PathBuf>,
    /// Retrain even if a finished checkpoint with the same settings exists.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Sets the patch side (image datasets) or the sentence length (text datasets) of a tokenizer;
/// the option that does not apply to its kind of data is refused, named with `prefix` (`""` in
/// `benign pretrain`, `"pretrain-"` in `benign finetune`).
pub fn apply_tokenizer_options(
    tokenizer: &mut TokenizerSpec,
    patch: Option<usize>,
    max_len: Option<usize>,
    prefix: &str,
) -> Result<(), benign::Error> {
    let (value, target, other, other_name, data) = match tokenizer {
        TokenizerSpec::Patches { patch: side } => (patch, side, max_len, "max-len", "text"),
        TokenizerSpec::Words { max_len: len, .. } => (max_len, len, patch, "patch", "image"),
    };
    set_if_given(target, value);
    if other.is_some() {
        return Err(benign::Error::invalid(
            format!("{prefix}{other_name}"),
            format!("applies to {data} datasets only"),
        ));
    }
    Ok(())
}

/// `--clip-norm` as the bound it sets: 0 means no clipping.
pub fn clip_bound(clip_norm: f64) -> Option<f64> {
    (clip_norm != 0.0).then_some(clip_norm)
}

/// The run's spec: the dataset's defaults with the given options applied.
pub fn spec_from(args: &PretrainArgs) -> anyhow::Result<PretrainSpec> {
    if args.out.is_some() {
        return Err(benign::Error::invalid(
            "out",
            "was renamed --checkpoints (the checkpoint folder `benign finetune` shares)",
        )
        .into());
    }
    let mut spec = PretrainSpec::defaults(args.dataset).with_seed(args.seed);
    if args.full {
        spec.subset = None;
    } else if let Some(n) = args.subset {
        spec.subset = Some(n);
    }
    set_if_given(&mut spec.train.epochs, args.epochs);
    set_if_given(&mut spec.model.layers, args.layers);
    set_if_given(&mut spec.model.heads, args.heads);
    set_if_given(&mut spec.model.dim, args.dim);
    set_if_given(&mut spec.model.mlp_dim, args.mlp_dim);
    set_if_given(&mut spec.train.batch_size, args.batch_size);
    apply_tokenizer_options(&mut spec.tokenizer, args.patch, args.max_len, "")?;
    set_if_given(&mut spec.train.lr, args.lr);
    set_if_given(&mut spec.train.weight_decay, args.weight_decay);
    set_if_given(&mut spec.train.schedule, args.schedule);
    set_if_given(&mut spec.train.clip_norm, args.clip_norm.map(clip_bound));
    spec.validate()?;
    Ok(spec)
}

pub fn execute(args: PretrainArgs) -> anyhow::Result<i32> {
    let spec = spec_from(&args)?;
    check_data_dir(&args.data_dir)?;
    let options = PretrainOptions {
        data_dir: args.data_dir.clone(),
        out: args.checkpoints.checkpoints.clone(),
        force: args.force,
    };
    let progress = args.common.reporter("pretrain", "examples", true);
    let mut per_epoch = 0u64;
    let mut observe = |event: Event<'_>| match event {
        Event::Start {
            epochs,
            epoch,
            examples,
        } => {
            per_epoch = examples as u64;
            progress.set_total((epochs * examples) as u64, (epoch * examples) as u64);
        }
        Event::Step {
            epoch,
            examples_done,
            loss,
        } => {
            progress.update(
                (epoch as u64 - 1) * per_epoch + examples_done as u64,
                vec![
                    ("epoch", Field::Count(epoch as u64)),
                    ("batch_loss", Field::Float(loss, 4)),
                ],
            );
        }
        Event::Epoch(m) => {
            let mut fields = vec![
                ("train_loss_running", Field::Float(m.train_loss_running, 4)),
                (
                    "train_accuracy_running",
                    Field::Float(m.train_accuracy_running, 4),
                ),
            ];
            if let (Some(loss), Some(accuracy)) = (m.test_loss, m.test_accuracy) {
                fields.push(("test_loss", Field::Float(loss, 4)));
                fields.push(("test_accuracy", Field::Float(accuracy, 4)));
            }
            fields.push((
                "examples_per_second",
                Field::Float(m.examples_per_second, 0),
            ));
            progress.event(
                &format!("epoch {}/{} done", m.epoch, spec.train.epochs),
                fields,
            );
        }
    };
    let pool = args.common.pool()?;
    let outcome = pool.install(|| pretrain::pretrain(&spec, &options, &mut observe));
    progress.finish();
    let (result, _, _) = outcome?;
    let text = if args.common.json {
        serde_json::to_string_pretty(&result)?
    } else {
        format!(
            "{} ({}): train acc {:.4} loss {:.4} (evaluated after training), test acc {:.4} loss {:.4}; {} epochs on {} examples, {:.1} s training ({:.0} ex/s, {} threads){}\nrun folder: {}\ncheckpoint: {}",
            result.dataset,
            result.key,
            result.train_accuracy_eval,
            result.train_loss_eval,
            result.test_accuracy,
            result.test_loss,
            result.epochs,
            result.train_examples,
            result.train_seconds,
            result.examples_per_second,
            result.threads,
            if result.reused { " [reused checkpoint]" } else { "" },
            result.run_dir.display(),
            result.checkpoint_path().display()
        )
    };
    let _ = writeln!(std::io::stdout(), "{text}");
    Ok(0)
}
