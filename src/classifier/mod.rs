//! A transformer encoder classifier for the real datasets, its trainer and checkpoints
//! (`benign pretrain`), and the hooks the fine-tuning experiment needs.
//!
//! - [`model`]: [`Classifier`] = patch or word embedding + learned positions + `[CLS]`
//!   ([`embed`]), `L` pre-LN blocks of `H`-head attention with a key padding mask and a GELU MLP
//!   ([`crate::transformer`]), a final LayerNorm and a linear head on `[CLS]`.
//! - [`train`]: [`ClassifierTrainer`] (AdamW, gradient clipping, warm-up + cosine schedule, seeded
//!   shuffling, data-parallel chunks with bit-identical results for any thread count).
//! - [`checkpoint`]: safetensors files with parameters, optimizer moments and metadata.
//! - [`pretrain`](mod@pretrain): [`pretrain::pretrain`], keyed by a hash of the run's
//!   settings, reused or resumed per epoch.
//!
//! # Fine-tuning a pretrained classifier
//!
//! ```text
//! // Phase 0: the pretrained model (trained now or read back from its checkpoint) and the
//! // tokenized data (whole training split, pretraining subset indices, test split).
//! let (result, mut model, data) = pretrain::pretrain(&spec, &options, &mut |_| {})?;
//! // A disjoint fine-tuning subset: realdata::subset_disjoint over the raw split, or any
//! // indices into data.train not in data.subset; select_examples builds the split.
//! let finetune = pretrain::select_examples(&data.train, &indices);
//! // Phase 1: head only.
//! model.freeze_all_except(&model.head_params());
//! // Phase 2: redraw the last block's query and key, train only those on noisy labels.
//! let qk = model.last_query_key();
//! model.reinitialize(&qk, &mut rng);           // PyTorch default init, from a ChaCha rng
//! model.freeze_all_except(&qk);
//! let mut trainer = ClassifierTrainer::<f32>::new(TrainConfig { lr: 5e-5, batch_size: 16, .. })?;
//! let metrics = trainer.run_epoch(&mut model, &finetune, &noisy_labels, Some((&data.test,
//!     &data.test.labels)), &mut |_, _| {})?;   // one call per epoch
//! // Per-epoch measurements: loss, accuracy, per-example predictions (flipped vs clean), and
//! // the mean over examples of the largest [CLS] attention probability of the last block.
//! let eval = trainer.evaluate(&model, &finetune, &noisy_labels)?;
//! (eval.loss, eval.accuracy, eval.predictions, eval.mean_max_cls_attention)
//! ```
//!
//! For custom measurements, [`Classifier::forward`] returns the logits and the last block's
//! attention probabilities (`[batch, heads, S + 1, S + 1]`); [`model::cls_attention`] extracts
//! the `[CLS]` rows. A checkpoint is read with [`checkpoint::load`].

pub mod checkpoint;
pub mod embed;
pub mod model;
pub mod pretrain;
pub mod train;

pub use model::{Classifier, Forward, ModelConfig};
pub use pretrain::{pretrain, PretrainOptions, PretrainResult, PretrainSpec};
pub use train::{ClassifierTrainer, EpochMetrics, Evaluation, Schedule, TrainConfig};
