//! Mini-batch training of a [`Classifier`]: AdamW, global gradient-norm clipping, a warm-up then
//! cosine (or linear, or constant) learning-rate schedule, seeded shuffling, evaluation with
//! recording off.
//!
//! # Determinism
//!
//! Epoch `e`'s order is a Fisher-Yates shuffle drawn from ChaCha8 seeded with the run's seed on
//! stream `e`, so it depends on nothing else (a resumed run draws the same orders). A batch is
//! cut into chunks of a fixed number of examples ([`TrainConfig::chunk_size`]); each chunk runs
//! forward and backward on its own tape (in parallel on the rayon pool), its mean loss weighted
//! by `chunk / batch`, and the chunks' gradients are summed in chunk order. Neither the cut nor
//! the order depends on the number of threads, and the kernels' results do not either, so a run
//! is bit-identical on 1 or 64 threads.

use std::time::Instant;

use benign_kernels::Float;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::model::{cls_attention, max_cls_attention, Classifier};
use crate::autodiff::{clip_grad_norm, sum_chunk_gradients, AdamW, Gradients, ParamId, Tape};
use crate::realdata::TokenizedSplit;
use crate::{Error, Result};

/// How the learning rate decays after the warm-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Schedule {
    /// Holds the peak learning rate after the warm-up.
    Constant,
    /// Decays linearly from the peak towards 0 at the end of training.
    Linear,
    /// Decays along a half cosine from the peak towards 0 at the end of training.
    Cosine,
}

/// The trainer's settings (all part of a checkpoint's key).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Passes over the training examples (at least 1).
    pub epochs: usize,
    /// Examples per optimizer step (at least 1; the last batch of an epoch may be smaller).
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f64,
    /// Fraction of all steps spent warming the learning rate up linearly from 0.
    pub warmup_fraction: f64,
    /// How the learning rate decays after the warm-up.
    pub schedule: Schedule,
    /// Global gradient-norm bound (`None`: no clipping).
    pub clip_norm: Option<f64>,
    /// Seeds the shuffling.
    pub seed: u64,
    /// Examples per data-parallel chunk of a batch. Part of the result's definition: the
    /// chunks' mean losses are combined in a fixed order.
    pub chunk_size: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 10,
            batch_size: 64,
            lr: 1e-3,
            weight_decay: 0.05,
            warmup_fraction: 0.05,
            schedule: Schedule::Cosine,
            clip_norm: Some(1.0),
            seed: 0,
            chunk_size: 32,
        }
    }
}

impl TrainConfig {
    /// Checks every setting; errors name the option and its valid range.
    pub fn validate(&self) -> Result<()> {
        let positive = |field: &str, value: usize| {
            if value == 0 {
                Err(Error::invalid(field, "must be at least 1, got 0"))
            } else {
                Ok(())
            }
        };
        positive("epochs", self.epochs)?;
        positive("batch-size", self.batch_size)?;
        positive("chunk-size", self.chunk_size)?;
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::invalid(
                "lr",
                format!("must be a finite number > 0, got {}", self.lr),
            ));
        }
        if !(self.weight_decay.is_finite()
            && self.weight_decay >= 0.0
            && self.lr * self.weight_decay < 1.0)
        {
            return Err(Error::invalid(
                "weight-decay",
                format!(
                    "must be finite, >= 0 and below 1/lr, got {}",
                    self.weight_decay
                ),
            ));
        }
        if !(0.0..1.0).contains(&self.warmup_fraction) {
            return Err(Error::invalid(
                "warmup",
                format!("must be in [0, 1), got {}", self.warmup_fraction),
            ));
        }
        if let Some(c) = self.clip_norm {
            if !(c.is_finite() && c > 0.0) {
                return Err(Error::invalid(
                    "clip-norm",
                    format!("must be a finite number > 0, got {c}"),
                ));
            }
        }
        Ok(())
    }

    /// Optimizer steps per epoch over `n` examples (the last batch may be smaller).
    pub fn steps_per_epoch(&self, n: usize) -> usize {
        n.div_ceil(self.batch_size.max(1))
    }

    /// The learning rate of step `step` (0-based) out of `total`.
    pub fn lr_at(&self, step: usize, total: usize) -> f64 {
        let warmup = (self.warmup_fraction * total as f64).round() as usize;
        if step < warmup {
            return self.lr * (step + 1) as f64 / warmup as f64;
        }
        let decay_steps = total.saturating_sub(warmup).max(1);
        let progress = ((step - warmup) as f64 / decay_steps as f64).min(1.0);
        match self.schedule {
            Schedule::Constant => self.lr,
            Schedule::Linear => self.lr * (1.0 - progress),
            Schedule::Cosine => self.lr * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
        }
    }
}

/// Loss, accuracy and `[CLS]` attention of a model on a split.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Mean cross-entropy.
    pub loss: f64,
    /// Fraction in [0, 1] of examples whose predicted class (largest logit) is the label given.
    pub accuracy: f64,
    /// Mean over examples of the largest probability the last block's `[CLS]` query gives an
    /// input token (averaged over heads).
    pub mean_max_cls_attention: f64,
    /// Predicted class of each example, in split order.
    #[serde(skip)]
    pub predictions: Vec<u32>,
}

/// One epoch's record (a line of `metrics.jsonl`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based.
    pub epoch: usize,
    /// Optimizer steps so far.
    pub steps: usize,
    /// Learning rate of the epoch's last step.
    pub lr: f64,
    /// Running mean of the training loss over the epoch's minibatches, each taken with the
    /// parameters before its own step (so the parameters change along the way): not the loss of
    /// the parameters at the end of the epoch. Written `train_loss` before it was renamed;
    /// older `metrics.jsonl` files still read.
    #[serde(alias = "train_loss")]
    pub train_loss_running: f64,
    /// Running fraction of the epoch's examples classified correctly, each counted in its
    /// minibatch before the step (as `train_loss_running`). Formerly `train_accuracy`.
    #[serde(alias = "train_accuracy")]
    pub train_accuracy_running: f64,
    /// Mean gradient norm before clipping.
    pub grad_norm: f64,
    /// Mean cross-entropy on the test split after the epoch (`None` when no test split was given).
    pub test_loss: Option<f64>,
    /// Fraction in [0, 1] of the test split classified correctly after the epoch (`None` when no
    /// test split was given).
    pub test_accuracy: Option<f64>,
    /// Wall time of the epoch's training steps (evaluation excluded).
    pub train_seconds: f64,
    /// Training examples per second of `train_seconds`.
    pub examples_per_second: f64,
    /// Wall time of the epoch's evaluation on the test split, in seconds.
    pub eval_seconds: f64,
}

/// What one chunk's forward and backward pass produced.
struct ChunkResult<T: Float> {
    loss_sum: f64,
    correct: usize,
    grads: Gradients<T>,
}

/// The moment estimates of one parameter's AdamW state, for checkpoints.
#[derive(Clone, Debug, PartialEq)]
pub struct Moments<T> {
    /// The parameter the moments belong to.
    pub param: ParamId,
    /// AdamW steps taken on it (they set its bias correction).
    pub step: i32,
    /// First-moment estimate, one value per parameter element.
    pub m: Vec<T>,
    /// Second-moment estimate, one value per parameter element.
    pub v: Vec<T>,
}

/// Trains a classifier epoch by epoch; holds the optimizer state and one tape per chunk.
pub struct ClassifierTrainer<T: Float> {
    /// The settings, checked by [`ClassifierTrainer::new`].
    pub config: TrainConfig,
    optimizer: AdamW<T>,
    tapes: Vec<Tape<T>>,
    /// Epochs completed (a resumed trainer starts from its checkpoint's count).
    pub epochs_done: usize,
    /// Optimizer steps taken so far (they place the learning-rate schedule).
    pub steps_done: usize,
}

/// Class index of the largest logit of each row (the first on ties).
fn argmax_rows<T: Float>(logits: &[T], classes: usize) -> impl Iterator<Item = u32> + '_ {
    logits.chunks_exact(classes).map(|row| {
        let mut best = 0;
        for (j, &v) in row.iter().enumerate() {
            if v > row[best] {
                best = j;
            }
        }
        best as u32
    })
}

fn check_labels(split: &TokenizedSplit, labels: &[u32], classes: usize, what: &str) -> Result<()> {
    if labels.len() != split.n {
        return Err(Error::invalid(
            what,
            format!("{} labels for {} examples", labels.len(), split.n),
        ));
    }
    if let Some(bad) = labels.iter().find(|&&c| c as usize >= classes) {
        return Err(Error::invalid(
            what,
            format!("label {bad} out of range for {classes} classes"),
        ));
    }
    Ok(())
}

impl<T: Float> ClassifierTrainer<T> {
    /// A trainer with a fresh optimizer and no progress; errors if a setting is out of range
    /// ([`TrainConfig::validate`]).
    pub fn new(config: TrainConfig) -> Result<Self> {
        config.validate()?;
        let optimizer = AdamW::new(config.lr).with_weight_decay(config.weight_decay);
        Ok(ClassifierTrainer {
            config,
            optimizer,
            tapes: Vec::new(),
            epochs_done: 0,
            steps_done: 0,
        })
    }

    /// The order of epoch `epoch` (0-based) over `n` examples.
    pub fn epoch_order(&self, epoch: usize, n: usize) -> Vec<usize> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.config.seed);
        rng.set_stream(epoch as u64);
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rng);
        order
    }

    fn ensure_tapes(&mut self, count: usize) {
        if self.tapes.len() < count {
            self.tapes.resize_with(count, Tape::new);
        }
    }

    /// One epoch of training on `split` with `labels` (e.g. noisy ones), then, if given, an
    /// evaluation on `test`. `on_step(examples_done, mean_loss_so_far)` is called after every
    /// step. The learning-rate schedule spans `config.epochs` epochs.
    pub fn run_epoch(
        &mut self,
        model: &mut Classifier<T>,
        split: &TokenizedSplit,
        labels: &[u32],
        test: Option<(&TokenizedSplit, &[u32])>,
        on_step: &mut dyn FnMut(usize, f64),
    ) -> Result<EpochMetrics> {
        model.check_split(split, "training split")?;
        check_labels(split, labels, model.config.num_classes, "training labels")?;
        if split.n == 0 {
            return Err(Error::invalid("training split", "has no examples"));
        }
        if let Some((test_split, test_labels)) = test {
            model.check_split(test_split, "test split")?;
            check_labels(
                test_split,
                test_labels,
                model.config.num_classes,
                "test labels",
            )?;
        }
        let epoch = self.epochs_done;
        let order = self.epoch_order(epoch, split.n);
        let total_steps = self.config.steps_per_epoch(split.n) * self.config.epochs;
        let classes = model.config.num_classes;
        let start = Instant::now();
        let (mut loss_sum, mut correct, mut norm_sum, mut steps, mut lr) = (0.0, 0, 0.0, 0, 0.0);
        for (batch_index, batch) in order.chunks(self.config.batch_size).enumerate() {
            let chunks: Vec<&[usize]> = batch.chunks(self.config.chunk_size).collect();
            self.ensure_tapes(chunks.len());
            let batch_len = batch.len() as f64;
            let model_ref: &Classifier<T> = model;
            let results: Vec<ChunkResult<T>> = self.tapes[..chunks.len()]
                .par_iter_mut()
                .zip(chunks.par_iter())
                .map(|(tape, &indices)| {
                    tape.clear();
                    tape.set_grad_enabled(true);
                    let forward = model_ref.forward(tape, split, indices);
                    let targets: Vec<usize> = indices.iter().map(|&i| labels[i] as usize).collect();
                    let loss = tape.cross_entropy(forward.logits, &targets);
                    let loss_value = tape.scalar(loss).to_f64();
                    let correct = argmax_rows(tape.value(forward.logits), classes)
                        .zip(&targets)
                        .filter(|(p, &t)| *p as usize == t)
                        .count();
                    let weighted = tape.scale(loss, T::from_f64(indices.len() as f64 / batch_len));
                    let grads = tape.backward(weighted);
                    // Parameters are shared with the tape until it is cleared; clearing now lets
                    // the optimizer update them in place.
                    tape.clear();
                    ChunkResult {
                        loss_sum: loss_value * indices.len() as f64,
                        correct,
                        grads,
                    }
                })
                .collect();
            let step = self.steps_done;
            // Summed in chunk order, as the gradients are (-0.0 is the exact identity of addition,
            // so the sum starts from the first chunk's loss).
            let batch_loss = results.iter().map(|r| r.loss_sum).fold(-0.0, |a, b| a + b);
            let batch_correct: usize = results.iter().map(|r| r.correct).sum();
            let mut grads =
                sum_chunk_gradients(results.into_iter().map(|r| r.grads), &mut self.tapes);
            let mean_loss = batch_loss / batch_len;
            if !mean_loss.is_finite() {
                return Err(Error::NonFinite {
                    step,
                    quantity: format!("training loss (epoch {}, batch {batch_index})", epoch + 1),
                    value: mean_loss,
                });
            }
            let norm = clip_grad_norm(&mut grads, self.config.clip_norm.unwrap_or(f64::INFINITY));
            if !norm.is_finite() {
                return Err(Error::NonFinite {
                    step,
                    quantity: format!("gradient norm (epoch {}, batch {batch_index})", epoch + 1),
                    value: norm,
                });
            }
            lr = self.config.lr_at(step, total_steps);
            self.optimizer.lr = lr;
            self.optimizer.step(&mut model.store, &grads);
            self.tapes[0].recycle_gradients(grads);
            self.steps_done += 1;
            steps += 1;
            loss_sum += batch_loss;
            correct += batch_correct;
            norm_sum += norm;
            on_step(
                (batch_index * self.config.batch_size + batch.len()).min(split.n),
                loss_sum / ((batch_index * self.config.batch_size) as f64 + batch_len),
            );
        }
        let train_seconds = start.elapsed().as_secs_f64();
        check_params_finite(model, self.steps_done, epoch)?;
        self.epochs_done += 1;
        let eval_start = Instant::now();
        let test_eval = match test {
            Some((test_split, test_labels)) => {
                Some(self.evaluate(model, test_split, test_labels)?)
            }
            None => None,
        };
        Ok(EpochMetrics {
            epoch: epoch + 1,
            steps: self.steps_done,
            lr,
            train_loss_running: loss_sum / split.n as f64,
            train_accuracy_running: correct as f64 / split.n as f64,
            grad_norm: norm_sum / steps.max(1) as f64,
            test_loss: test_eval.as_ref().map(|e| e.loss),
            test_accuracy: test_eval.as_ref().map(|e| e.accuracy),
            train_seconds,
            examples_per_second: split.n as f64 / train_seconds.max(1e-9),
            eval_seconds: eval_start.elapsed().as_secs_f64(),
        })
    }

    /// Loss, accuracy, predictions and `[CLS]` attention of `model` on `split` against `labels`,
    /// recording nothing (chunks of [`EVAL_CHUNK`] examples in parallel).
    pub fn evaluate(
        &mut self,
        model: &Classifier<T>,
        split: &TokenizedSplit,
        labels: &[u32],
    ) -> Result<Evaluation> {
        model.check_split(split, "evaluation split")?;
        check_labels(split, labels, model.config.num_classes, "evaluation labels")?;
        let indices: Vec<usize> = (0..split.n).collect();
        let chunks: Vec<&[usize]> = indices.chunks(EVAL_CHUNK).collect();
        let threads = rayon::current_num_threads().max(1);
        self.ensure_tapes(threads.min(chunks.len()).max(1));
        let classes = model.config.num_classes;
        let heads = model.config.heads;
        let seq = model.config.seq_len + 1;
        let tape_count = self.tapes.len().min(chunks.len()).max(1);
        // Each tape takes every `tape_count`-th chunk; results are put back in chunk order.
        let per_tape: Vec<Vec<ChunkEval>> = self.tapes[..tape_count]
            .par_iter_mut()
            .enumerate()
            .map(|(t, tape)| {
                let mut out = Vec::new();
                for (c, &chunk) in chunks.iter().enumerate().skip(t).step_by(tape_count) {
                    tape.clear();
                    let result = tape.no_grad(|tape| {
                        let forward = model.forward(tape, split, chunk);
                        let targets: Vec<usize> =
                            chunk.iter().map(|&i| labels[i] as usize).collect();
                        let loss = tape.cross_entropy(forward.logits, &targets);
                        let predictions: Vec<u32> =
                            argmax_rows(tape.value(forward.logits), classes).collect();
                        let rows = cls_attention(tape, &forward);
                        (
                            tape.scalar(loss).to_f64() * chunk.len() as f64,
                            predictions,
                            max_cls_attention(&rows, heads, seq),
                        )
                    });
                    tape.clear();
                    out.push((c, result.0, result.1, result.2));
                }
                out
            })
            .collect();
        let mut ordered: Vec<ChunkEval> = per_tape.into_iter().flatten().collect();
        ordered.sort_by_key(|r| r.0);
        let (mut loss, mut attention) = (0.0, 0.0);
        let mut predictions = Vec::with_capacity(split.n);
        for (_, chunk_loss, chunk_predictions, chunk_attention) in ordered {
            loss += chunk_loss;
            attention += chunk_attention.iter().sum::<f64>();
            predictions.extend(chunk_predictions);
        }
        let n = split.n.max(1) as f64;
        let correct = predictions
            .iter()
            .zip(labels)
            .filter(|(p, l)| p == l)
            .count();
        let loss = loss / n;
        if !loss.is_finite() {
            return Err(Error::NonFinite {
                step: self.steps_done,
                quantity: "evaluation loss".into(),
                value: loss,
            });
        }
        Ok(Evaluation {
            loss,
            accuracy: correct as f64 / n,
            mean_max_cls_attention: attention / n,
            predictions,
        })
    }

    /// The optimizer's moment estimates, for a checkpoint.
    pub fn moments(&self, model: &Classifier<T>) -> Vec<Moments<T>> {
        model
            .store
            .ids()
            .filter_map(|id| {
                self.optimizer.moments(id).map(|(step, m, v)| Moments {
                    param: id,
                    step,
                    m: m.to_vec(),
                    v: v.to_vec(),
                })
            })
            .collect()
    }

    /// Restores the optimizer's moment estimates and the counters of a checkpoint.
    pub fn restore(&mut self, moments: Vec<Moments<T>>, epochs_done: usize, steps_done: usize) {
        for m in moments {
            self.optimizer.set_moments(m.param, m.step, m.m, m.v);
        }
        self.epochs_done = epochs_done;
        self.steps_done = steps_done;
    }
}

/// One evaluation chunk's index, loss sum, predictions and per-example `[CLS]` attention maxima.
type ChunkEval = (usize, f64, Vec<u32>, Vec<f64>);

/// Examples per evaluation chunk (recording off, so larger than training chunks).
pub const EVAL_CHUNK: usize = 128;

fn check_params_finite<T: Float>(model: &Classifier<T>, step: usize, epoch: usize) -> Result<()> {
    for id in model.store.ids() {
        if let Some(&bad) = model.store.value(id).iter().find(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                step,
                quantity: format!(
                    "parameter `{}` after epoch {}",
                    model.store.name(id),
                    epoch + 1
                ),
                value: bad.to_f64(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The in-epoch figures say they are running means; `metrics.jsonl` lines written before the
    /// rename (`train_loss`, `train_accuracy`) still read.
    #[test]
    fn epoch_metrics_name_the_running_figures_and_read_old_lines() {
        let metrics = EpochMetrics {
            epoch: 2,
            steps: 10,
            lr: 1e-3,
            train_loss_running: 0.5,
            train_accuracy_running: 0.75,
            grad_norm: 1.0,
            test_loss: Some(0.25),
            test_accuracy: Some(0.875),
            train_seconds: 1.0,
            examples_per_second: 100.0,
            eval_seconds: 0.5,
        };
        let json = serde_json::to_value(&metrics).unwrap();
        assert_eq!(json["train_loss_running"], 0.5);
        assert_eq!(json["train_accuracy_running"], 0.75);
        assert!(json.get("train_loss").is_none() && json.get("train_accuracy").is_none());
        let old = r#"{"epoch":2,"steps":10,"lr":0.001,"train_loss":0.5,"train_accuracy":0.75,
            "grad_norm":1.0,"test_loss":0.25,"test_accuracy":0.875,"train_seconds":1.0,
            "examples_per_second":100.0,"eval_seconds":0.5}"#;
        let read: EpochMetrics = serde_json::from_str(old).unwrap();
        assert_eq!(read, metrics);
    }
}
