//! `benign pretrain`: train a classifier on a clean subset of a real dataset, or reuse the
//! checkpoint of an identical earlier run.
//!
//! A run is identified by its [`PretrainSpec`] (dataset, subset size, seed, tokenizer, model,
//! trainer): its key is 16 hex digits of FNV-1a over the spec's canonical JSON, and its files
//! live in `<checkpoints>/<dataset>-<key>/`, where `<checkpoints>` is the one checkpoint folder
//! that `benign pretrain` and `benign finetune` share (`--checkpoints`, default
//! [`DEFAULT_CHECKPOINTS_DIR`]), so a fine-tuning run reuses a finished pretraining run of the
//! same settings:
//!
//! - `checkpoint.safetensors`: parameters, AdamW moments, epochs done, the spec, the vocabulary
//!   of a text model; rewritten atomically after every epoch, so a killed run resumes from its
//!   last completed epoch;
//! - `metrics.jsonl`: one [`EpochMetrics`] per epoch;
//! - `result.json`: the final [`PretrainResult`] (its presence with a complete checkpoint means
//!   the run is reused as is; `force` retrains from scratch).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::checkpoint::{self, Checkpoint};
use super::embed::InputKind;
use super::model::{Classifier, ModelConfig};
use super::train::{ClassifierTrainer, EpochMetrics, Evaluation, TrainConfig};
use crate::io::jsonl;
use crate::realdata::{self, DatasetName, RawDataset, Split, TokenizedSplit, Tokens, Vocabulary};
use crate::rundir::{JobDir, JobSpec, Reuse};
use crate::seed::named_rng;
use crate::{Error, Result};

/// The default checkpoint folder of `benign pretrain` and `benign finetune` (relative to the
/// working directory).
pub const DEFAULT_CHECKPOINTS_DIR: &str = "checkpoints";

/// The seed of a pretraining run when none is given (`benign pretrain --seed`, `benign
/// finetune --pretrain-seed`). It is part of every checkpoint's key, so it stays what it has
/// always been rather than follow the synthetic experiment's 42: another value would retrain
/// every cached checkpoint.
pub const DEFAULT_SEED: u64 = 0;

/// How examples become tokens.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenizerSpec {
    /// Square patches of `patch x patch` pixels.
    Patches {
        /// Side of a patch in pixels; must divide the images' height and width.
        patch: usize,
    },
    /// Words of a vocabulary built from the pretraining subset (lower-cased; at least
    /// `min_count` occurrences, at most `max_vocab` entries with PAD and UNK), truncated or
    /// padded to `max_len` tokens.
    Words {
        /// Tokens per example after truncation or padding.
        max_len: usize,
        /// Fewest occurrences in the pretraining subset for a word to enter the vocabulary.
        min_count: usize,
        /// Largest vocabulary size, PAD and UNK included.
        max_vocab: usize,
    },
}

/// The model's size (its input side follows from the data).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelSize {
    /// Number of transformer blocks.
    pub layers: usize,
    /// Attention heads per block; must divide `dim`.
    pub heads: usize,
    /// Width d of the token representations.
    pub dim: usize,
    /// Hidden width of each block's MLP.
    pub mlp_dim: usize,
}

/// Everything that determines a pretraining run's result (hashed into its key).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PretrainSpec {
    /// The dataset, read from `<data_dir>/<dataset>/`.
    pub dataset: DatasetName,
    /// Training examples drawn (class-stratified, seeded) from the training split; `None` or a
    /// number at least the split's size: all of it.
    pub subset: Option<usize>,
    /// Seeds the subset, the initialisation and the shuffling (each its own stream).
    pub seed: u64,
    /// How its examples become tokens.
    pub tokenizer: TokenizerSpec,
    /// The transformer's size.
    pub model: ModelSize,
    /// The trainer's settings (epochs, batches, optimizer, schedule, shuffling seed).
    pub train: TrainConfig,
}

impl PretrainSpec {
    /// The defaults for `dataset`: the paper's clean-subset sizes (10,000 examples; 3,000 for
    /// TREC, 200 for BreastMNIST) and a small model that trains in minutes on two cores.
    pub fn defaults(dataset: DatasetName) -> Self {
        let image = |subset, epochs| PretrainSpec {
            dataset,
            subset: Some(subset),
            seed: DEFAULT_SEED,
            tokenizer: TokenizerSpec::Patches { patch: 4 },
            model: ModelSize {
                layers: 3,
                heads: 4,
                dim: 64,
                mlp_dim: 128,
            },
            train: TrainConfig {
                epochs,
                batch_size: 64,
                lr: 1e-3,
                weight_decay: 0.05,
                ..TrainConfig::default()
            },
        };
        let text = |subset, max_len, epochs| PretrainSpec {
            dataset,
            subset: Some(subset),
            seed: DEFAULT_SEED,
            tokenizer: TokenizerSpec::Words {
                max_len,
                min_count: 1,
                max_vocab: 20_000,
            },
            model: ModelSize {
                layers: 2,
                heads: 4,
                dim: 64,
                mlp_dim: 128,
            },
            train: TrainConfig {
                epochs,
                batch_size: 32,
                lr: 5e-4,
                weight_decay: 0.05,
                ..TrainConfig::default()
            },
        };
        let spec = match dataset {
            DatasetName::Mnist | DatasetName::FashionMnist => image(10_000, 20),
            DatasetName::BreastMnist => image(200, 60),
            DatasetName::Trec => text(3_000, 24, 20),
            DatasetName::Sst2 => text(10_000, 48, 10),
            DatasetName::AgNews => text(10_000, 64, 10),
        };
        spec.with_seed(DEFAULT_SEED)
    }

    /// The same settings with `seed` driving the subset, the initialisation and the shuffling
    /// (the `--seed` of `benign pretrain`, the `--pretrain-seed` of `benign finetune`: both go
    /// through here, so equal options give equal keys).
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self.train.seed = seed;
        self
    }

    /// Checks the settings; errors name the option.
    pub fn validate(&self) -> Result<()> {
        match self.tokenizer {
            TokenizerSpec::Patches { patch: 0 } => {
                return Err(Error::invalid("patch", "must be at least 1, got 0"))
            }
            TokenizerSpec::Words { max_len: 0, .. } => {
                return Err(Error::invalid("max-len", "must be at least 1, got 0"))
            }
            _ => {}
        }
        if self.subset == Some(0) {
            return Err(Error::invalid("subset", "must be at least 1, got 0"));
        }
        if self.dataset.is_text() != matches!(self.tokenizer, TokenizerSpec::Words { .. }) {
            return Err(Error::invalid(
                "tokenizer",
                format!(
                    "{} needs {} tokens",
                    self.dataset,
                    if self.dataset.is_text() {
                        "word"
                    } else {
                        "patch"
                    }
                ),
            ));
        }
        self.train.validate()
    }

    /// 16 hex digits of FNV-1a over the canonical JSON of the spec.
    pub fn key(&self) -> String {
        let value = serde_json::to_value(self).expect("the spec serializes");
        format!(
            "{:016x}",
            crate::sweep::grid::fnv1a(value.to_string().as_bytes())
        )
    }

    /// The run's folder under `out`.
    pub fn run_dir(&self, out: &Path) -> PathBuf {
        out.join(format!("{}-{}", self.dataset, self.key()))
    }
}

/// A dataset tokenized for a spec: the whole training split (so later experiments can pick
/// other subsets with the same tokens), the pretraining subset's indices into it, the test split.
pub struct PreparedData {
    /// Class names, in label order.
    pub classes: Vec<String>,
    /// The whole training split, tokenized.
    pub train: TokenizedSplit,
    /// Sorted indices of the pretraining subset in `train`.
    pub subset: Vec<usize>,
    /// The whole test split, tokenized.
    pub test: TokenizedSplit,
    /// The vocabulary of a text dataset (built from the pretraining subset).
    pub vocabulary: Option<Vocabulary>,
}

/// The examples `indices` of a tokenized split, in that order.
pub fn select_examples(split: &TokenizedSplit, indices: &[usize]) -> TokenizedSplit {
    let seq = split.seq_len;
    let tokens = match &split.tokens {
        Tokens::Patches { patch_dim, values } => {
            let example = seq * patch_dim;
            Tokens::Patches {
                patch_dim: *patch_dim,
                values: indices
                    .iter()
                    .flat_map(|&i| values[i * example..(i + 1) * example].iter().copied())
                    .collect(),
            }
        }
        Tokens::Words { vocab_size, ids } => Tokens::Words {
            vocab_size: *vocab_size,
            ids: indices
                .iter()
                .flat_map(|&i| ids[i * seq..(i + 1) * seq].iter().copied())
                .collect(),
        },
    };
    TokenizedSplit {
        n: indices.len(),
        seq_len: seq,
        num_classes: split.num_classes,
        tokens,
        labels: indices.iter().map(|&i| split.labels[i]).collect(),
    }
}

/// Loads `spec.dataset` from `data_dir/<dataset>` and tokenizes it as the spec says. A text
/// dataset's vocabulary is built from the pretraining subset only, unless `vocabulary` is given
/// (e.g. read back from a checkpoint).
pub fn prepare_data(
    spec: &PretrainSpec,
    data_dir: &Path,
    vocabulary: Option<Vocabulary>,
) -> Result<PreparedData> {
    let dir = realdata::default_dir(data_dir, spec.dataset);
    let RawDataset {
        classes,
        train,
        test,
        ..
    } = realdata::load(spec.dataset, &dir)?;
    let subset = match spec.subset {
        Some(n) if n < train.len() => realdata::subset(&train, n, spec.seed)?,
        _ => (0..train.len()).collect(),
    };
    let (train, test, vocabulary) = match (&spec.tokenizer, train, test) {
        (TokenizerSpec::Patches { patch }, Split::Images(train), Split::Images(test)) => (
            realdata::patchify(&train, *patch)?,
            realdata::patchify(&test, *patch)?,
            None,
        ),
        (
            TokenizerSpec::Words {
                max_len,
                min_count,
                max_vocab,
            },
            Split::Text(train),
            Split::Text(test),
        ) => {
            let vocabulary = match vocabulary {
                Some(v) => v,
                None => {
                    let texts: Vec<String> =
                        subset.iter().map(|&i| train.texts[i].clone()).collect();
                    Vocabulary::build(&texts, *min_count, *max_vocab)?
                }
            };
            (
                vocabulary.tokenize(&train, *max_len)?,
                vocabulary.tokenize(&test, *max_len)?,
                Some(vocabulary),
            )
        }
        _ => {
            return Err(Error::invalid(
                "tokenizer",
                format!("does not match the kind of data of {}", spec.dataset),
            ))
        }
    };
    Ok(PreparedData {
        classes,
        train,
        subset,
        test,
        vocabulary,
    })
}

/// The model configuration of a spec over prepared data.
pub fn model_config(spec: &PretrainSpec, data: &PreparedData) -> ModelConfig {
    ModelConfig {
        input: InputKind::of(&data.train),
        seq_len: data.train.seq_len,
        num_classes: data.classes.len().max(data.train.num_classes),
        dim: spec.model.dim,
        heads: spec.model.heads,
        layers: spec.model.layers,
        mlp_dim: spec.model.mlp_dim,
        ln_eps: 1e-5,
    }
}

/// What a pretraining run reports (`result.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PretrainResult {
    /// The dataset trained on.
    pub dataset: DatasetName,
    /// The run's key: 16 hex digits of FNV-1a over the spec's canonical JSON.
    pub key: String,
    /// The run's folder, `<checkpoints>/<dataset>-<key>/`.
    pub run_dir: PathBuf,
    /// True if an identical earlier run was reused without training.
    #[serde(default)]
    pub reused: bool,
    /// Size of the pretraining subset.
    pub train_examples: usize,
    /// Size of the test split the test figures are taken on.
    pub test_examples: usize,
    /// Number of scalar parameters of the model.
    pub parameters: usize,
    /// Epochs trained (the spec's, whether or not some were resumed from a checkpoint).
    pub epochs: usize,
    /// Loss of an evaluation pass over the pretraining subset with the final parameters (not
    /// the running mean over the last epoch's minibatches: that is `metrics.jsonl`'s
    /// `train_loss_running`). Written `train_loss` before it was renamed; older `result.json`
    /// files still read.
    #[serde(alias = "train_loss")]
    pub train_loss_eval: f64,
    /// Accuracy of the same evaluation pass. Formerly `train_accuracy`.
    #[serde(alias = "train_accuracy")]
    pub train_accuracy_eval: f64,
    /// Mean cross-entropy on the test split with the final parameters.
    pub test_loss: f64,
    /// Fraction in [0, 1] of the test split classified correctly with the final parameters.
    pub test_accuracy: f64,
    /// Wall time of the training steps (evaluations excluded), summed over epochs and resumes.
    pub train_seconds: f64,
    /// Training examples processed per second of `train_seconds`.
    pub examples_per_second: f64,
    /// Size of the thread pool the run trained with (results do not depend on it).
    pub threads: usize,
    /// The settings the run was made with.
    pub spec: PretrainSpec,
}

impl PretrainResult {
    /// The run's checkpoint file.
    pub fn checkpoint_path(&self) -> PathBuf {
        self.run_dir.join(CHECKPOINT)
    }
}

/// Where the run's output goes and whether to reuse it.
#[derive(Clone, Debug)]
pub struct PretrainOptions {
    /// Parent folder of the dataset folders (`<data_dir>/mnist`, ...).
    pub data_dir: PathBuf,
    /// The checkpoint folder: parent of the run folders (`<dataset>-<key>/`).
    pub out: PathBuf,
    /// Retrain even if a checkpoint exists.
    pub force: bool,
}

/// Progress notifications of [`pretrain`].
pub enum Event<'a> {
    /// Training starts (or resumes) after `epoch` completed epochs of `epochs`, over `examples`
    /// training examples each.
    Start {
        /// Epochs the run trains in all.
        epochs: usize,
        /// Epochs already completed (nonzero when resuming).
        epoch: usize,
        /// Training examples per epoch.
        examples: usize,
    },
    /// After each step: examples done in the current epoch, its mean loss so far.
    Step {
        /// The current epoch, 1-based.
        epoch: usize,
        /// Examples of the current epoch processed so far.
        examples_done: usize,
        /// Mean training loss over those examples.
        loss: f64,
    },
    /// An epoch finished; its record was appended to `metrics.jsonl` and the checkpoint saved.
    Epoch(&'a EpochMetrics),
}

const CHECKPOINT: &str = "checkpoint.safetensors";
const METRICS: &str = "metrics.jsonl";
const RESULT: &str = "result.json";

/// The pretrained classifier of `spec`: trained now, resumed from its last epoch, or read back
/// from a finished run.
pub fn pretrain(
    spec: &PretrainSpec,
    options: &PretrainOptions,
    observe: &mut dyn FnMut(Event<'_>),
) -> Result<(PretrainResult, Classifier<f32>, PreparedData)> {
    spec.validate()?;
    if !options.data_dir.is_dir() {
        return Err(Error::invalid(
            "data-dir",
            format!(
                "{} does not exist or is not a directory",
                options.data_dir.display()
            ),
        ));
    }
    let run_dir = spec.run_dir(&options.out);
    // Locked while training: a second process on the same checkpoint is refused; `--force`
    // empties the folder before retraining.
    let mut job = JobDir::open(
        &run_dir,
        &JobSpec {
            force: options.force,
            option: "checkpoints",
            legacy_file: Some(CHECKPOINT),
            ..JobSpec::new(
                "pretrain",
                spec.key(),
                format!(
                    "pretraining of {} ({} epochs)",
                    spec.dataset, spec.train.epochs
                ),
                Reuse::Resume,
            )
        },
    )?;
    let result = pretrain_in(spec, options, &run_dir, observe);
    job.finish(result)
}

/// [`pretrain`] in its opened, locked folder.
fn pretrain_in(
    spec: &PretrainSpec,
    options: &PretrainOptions,
    run_dir: &Path,
    observe: &mut dyn FnMut(Event<'_>),
) -> Result<(PretrainResult, Classifier<f32>, PreparedData)> {
    let run_dir = run_dir.to_path_buf();
    let checkpoint_path = run_dir.join(CHECKPOINT);
    let existing = if options.force || !checkpoint_path.exists() {
        None
    } else {
        Some(checkpoint::load::<f32>(&checkpoint_path)?)
    };
    let vocabulary = match existing.as_ref().and_then(|c| c.metadata.get("vocabulary")) {
        Some(text) => Some(serde_json::from_str(text).map_err(|e| Error::Format {
            path: checkpoint_path.clone(),
            message: format!("metadata `vocabulary`: {e}"),
        })?),
        None => None,
    };
    let data = prepare_data(spec, &options.data_dir, vocabulary)?;
    let config = model_config(spec, &data);
    let train_split = select_examples(&data.train, &data.subset);

    if let Some(Checkpoint {
        model,
        state,
        metadata,
        ..
    }) = &existing
    {
        if model.config != config {
            return Err(Error::Format {
                path: checkpoint_path.clone(),
                message: "the checkpoint's model does not match its key's settings".into(),
            });
        }
        // The shape can match while the training differed (another seed, subset, schedule):
        // the checkpoint must carry this very spec, or it is not this run's.
        let stored: Option<PretrainSpec> = metadata
            .get("spec")
            .and_then(|text| serde_json::from_str(text).ok());
        if stored.as_ref() != Some(spec) {
            return Err(Error::Format {
                path: checkpoint_path.clone(),
                message: format!(
                    "the checkpoint was trained with other settings than its folder's key says \
                     (stored spec {}); move it away or retrain with --force",
                    metadata.get("spec").map_or("missing", String::as_str)
                ),
            });
        }
        let result_path = run_dir.join(RESULT);
        if state.epochs_done >= spec.train.epochs && result_path.exists() {
            let text = std::fs::read_to_string(&result_path).map_err(|source| Error::Io {
                path: result_path.clone(),
                source,
            })?;
            let mut result: PretrainResult =
                serde_json::from_str(&text).map_err(|e| Error::Format {
                    path: result_path.clone(),
                    message: e.to_string(),
                })?;
            if result.spec != *spec {
                return Err(Error::Format {
                    path: result_path.clone(),
                    message: "result.json describes another pretraining than its checkpoint; \
                              move the folder away or retrain with --force"
                        .into(),
                });
            }
            result.reused = true;
            // The folder may have been moved or reached through another path since.
            result.run_dir = run_dir.clone();
            let model = existing.expect("checked above").model;
            return Ok((result, model, data));
        }
    }

    // Training (again): an older result no longer describes the checkpoint.
    let result_path = run_dir.join(RESULT);
    if result_path.exists() {
        std::fs::remove_file(&result_path).map_err(|source| Error::Io {
            path: result_path.clone(),
            source,
        })?;
    }
    let mut trainer = ClassifierTrainer::<f32>::new(spec.train.clone())?;
    let mut history: Vec<EpochMetrics> = Vec::new();
    let mut model = match existing {
        Some(Checkpoint {
            model,
            state,
            moments,
            ..
        }) => {
            history = read_metrics(&run_dir.join(METRICS), state.epochs_done)?;
            trainer.restore(moments, state.epochs_done, state.steps_done);
            model
        }
        None => Classifier::new(config, &mut named_rng(spec.seed, "classifier-init"))?,
    };
    let mut metadata = BTreeMap::new();
    metadata.insert(
        "spec".to_string(),
        serde_json::to_string(spec).expect("the spec serializes"),
    );
    if let Some(v) = &data.vocabulary {
        metadata.insert(
            "vocabulary".to_string(),
            serde_json::to_string(v).expect("a vocabulary serializes"),
        );
    }
    let test_labels = data.test.labels.clone();
    observe(Event::Start {
        epochs: spec.train.epochs,
        epoch: trainer.epochs_done,
        examples: train_split.n,
    });
    while trainer.epochs_done < spec.train.epochs {
        let epoch = trainer.epochs_done + 1;
        let metrics = trainer.run_epoch(
            &mut model,
            &train_split,
            &train_split.labels,
            Some((&data.test, &test_labels)),
            &mut |examples_done, loss| {
                observe(Event::Step {
                    epoch,
                    examples_done,
                    loss,
                })
            },
        )?;
        history.push(metrics);
        write_metrics(&run_dir.join(METRICS), &history)?;
        checkpoint::save(&checkpoint_path, &model, Some(&trainer), &metadata)?;
        observe(Event::Epoch(history.last().expect("just pushed")));
    }
    let train_eval: Evaluation = trainer.evaluate(&model, &train_split, &train_split.labels)?;
    let test_eval = trainer.evaluate(&model, &data.test, &test_labels)?;
    let train_seconds: f64 = history.iter().map(|m| m.train_seconds).sum();
    let examples = (train_split.n * history.len()) as f64;
    let result = PretrainResult {
        dataset: spec.dataset,
        key: spec.key(),
        run_dir: run_dir.clone(),
        reused: false,
        train_examples: train_split.n,
        test_examples: data.test.n,
        parameters: model
            .store
            .ids()
            .map(|id| model.store.value(id).len())
            .sum(),
        epochs: spec.train.epochs,
        train_loss_eval: train_eval.loss,
        train_accuracy_eval: train_eval.accuracy,
        test_loss: test_eval.loss,
        test_accuracy: test_eval.accuracy,
        train_seconds,
        examples_per_second: examples / train_seconds.max(1e-9),
        threads: rayon::current_num_threads(),
        spec: spec.clone(),
    };
    crate::io::write_json_atomic(&result_path, &result)?;
    Ok((result, model, data))
}

fn write_metrics(path: &Path, history: &[EpochMetrics]) -> Result<()> {
    let mut text = String::new();
    for m in history {
        text.push_str(&serde_json::to_string(m).expect("metrics serialize"));
        text.push('\n');
    }
    crate::io::write_atomic(path, text.as_bytes())
}

/// The first `epochs` records of a metrics file (a resumed run keeps its earlier epochs).
fn read_metrics(path: &Path, epochs: usize) -> Result<Vec<EpochMetrics>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(Error::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    jsonl::parse_every_line(path, text.lines().take(epochs))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `result.json` names the post-training evaluation pass; files written before the rename
    /// (`train_loss`, `train_accuracy`) still read, so finished runs are still reused.
    #[test]
    fn result_names_the_evaluation_pass_and_reads_old_files() {
        let spec = PretrainSpec::defaults(DatasetName::Trec);
        let result = PretrainResult {
            dataset: DatasetName::Trec,
            key: spec.key(),
            run_dir: PathBuf::from("checkpoints/trec-x"),
            reused: false,
            train_examples: 3,
            test_examples: 2,
            parameters: 7,
            epochs: 1,
            train_loss_eval: 0.5,
            train_accuracy_eval: 0.75,
            test_loss: 0.25,
            test_accuracy: 0.5,
            train_seconds: 1.0,
            examples_per_second: 3.0,
            threads: 1,
            spec,
        };
        let mut json = serde_json::to_value(&result).unwrap();
        assert_eq!(json["train_loss_eval"], 0.5);
        assert_eq!(json["train_accuracy_eval"], 0.75);
        let object = json.as_object_mut().unwrap();
        assert!(!object.contains_key("train_loss") && !object.contains_key("train_accuracy"));
        let loss = object.remove("train_loss_eval").unwrap();
        let accuracy = object.remove("train_accuracy_eval").unwrap();
        object.insert("train_loss".into(), loss);
        object.insert("train_accuracy".into(), accuracy);
        let old: PretrainResult = serde_json::from_value(json).unwrap();
        assert_eq!(old, result);
        assert_eq!(
            result.checkpoint_path(),
            Path::new("checkpoints/trec-x/checkpoint.safetensors")
        );
    }

    #[test]
    fn with_seed_seeds_the_run_and_the_shuffling() {
        let spec = PretrainSpec::defaults(DatasetName::Mnist).with_seed(3);
        assert_eq!((spec.seed, spec.train.seed), (3, 3));
        let mut by_hand = PretrainSpec::defaults(DatasetName::Mnist);
        by_hand.seed = 3;
        by_hand.train.seed = 3;
        assert_eq!(spec.key(), by_hand.key());
    }
}
