//! Phase 2 on cached activations: with only the last block's query and key trainable, the
//! input of the last block is fixed per example, and so are its first LayerNorm, its values
//! and the `[CLS]` row of its residual stream. [`LastBlockInputs`] computes them once (no tape),
//! and [`CachedTrainer`] trains and evaluates on them, forming per step only
//!
//! ```text
//! h = LN1(x_{L-1})                     cached   [S + 1, d]
//! V = h W_v^T + b_v                     cached   [S + 1, d]
//! q = W_q h_cls + b_q,  K = h W_k^T + b_k          (the trainable part)
//! a_h = softmax(s q_h K_h^T / sqrt(d / H) + padding mask)     [CLS] query only, H heads
//! out = x_cls + W_o concat_h(a_h V_h) + b_o, then the MLP on that one row
//! logits = LN(out) W_head^T + b_head
//! ```
//!
//! With the model's own head count and `s = 1` this is
//! [`crate::classifier::Classifier::forward`]'s function of the query and key (the
//! head reads the `[CLS]` position only, and everything after the attention acts token by token,
//! so the other positions' outputs never reach the loss). Only the summation order of some
//! products differs; the test `cached_last_block_inputs_give_the_full_models_logits_and_training`
//! compares the two.
//!
//! Phase 2 may also split the last block's attention into a different number of heads `H`
//! (the query and key are redrawn anyway; the values are cut into `H` slices of `d / H`
//! coordinates, each mixed by its own attention row), scale the scores by `s` (an inverse
//! temperature), and score with a query and key of its own width `H * w` instead of the
//! block's `d` (each head then compares `w`-wide query and key slices and the score divisor is
//! `sqrt(w)`; the values keep their `d / H` coordinates a head): [`Phase2Attention`].
//!
//! The training loop is [`crate::classifier::ClassifierTrainer::run_epoch`]'s (same shuffles, chunks,
//! clipping, AdamW and schedule), on the cached inputs.

use benign_kernels::Float;
use rayon::prelude::*;

use crate::autodiff::{clip_grad_norm, sum_chunk_gradients, AdamW, Gradients, Tape, Var};
use crate::classifier::embed::key_padding_mask;
use crate::classifier::model::max_cls_attention;
use crate::classifier::{Classifier, ClassifierTrainer, Evaluation, TrainConfig};
use crate::realdata::TokenizedSplit;
use crate::transformer::{attention_residual_and_mlp, block_forward_vars, linear_forward, Linear};
use crate::{Error, Result};

/// Examples per no-tape forward pass when filling the cache or evaluating.
const CACHE_CHUNK: usize = 128;

/// How phase 2 computes the last block's `[CLS]` attention.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Phase2Attention {
    /// Heads (must divide the width).
    pub heads: usize,
    /// Factor on the scores `q . k / sqrt(w)`, `w` the query and key width of a head (1: the
    /// model's attention).
    pub score_scale: f64,
    /// The `[CLS]` query's projection, `d -> heads * w` (the last block's own, or a wider one).
    pub query: Linear,
    /// The keys' projection, the same shape as `query`.
    pub key: Linear,
}

impl Phase2Attention {
    /// The model's own attention.
    pub fn of<T: Float>(model: &Classifier<T>) -> Self {
        let last = model.blocks.last().expect("at least one block");
        Phase2Attention {
            heads: model.config.heads,
            score_scale: 1.0,
            query: last.query,
            key: last.key,
        }
    }

    /// Width of one head's query and key.
    pub fn query_key_head_dim(&self) -> usize {
        self.query.out_features / self.heads
    }
}

/// The fixed inputs of the last block for every example of a split.
#[derive(Clone, Debug)]
pub struct LastBlockInputs<T> {
    /// Number of examples.
    pub examples: usize,
    /// Positions per example, `[CLS]` included.
    pub seq: usize,
    /// Width d of the token representations.
    pub dim: usize,
    /// `LN1(x)` of the last block, `[examples, seq, dim]`.
    pub normed: Vec<T>,
    /// The last block's values, `[examples, seq, dim]`.
    pub values: Vec<T>,
    /// The `[CLS]` row of the last block's input (its residual stream), `[examples, dim]`.
    pub cls_input: Vec<T>,
    /// Additive key mask, `[examples, seq]`: 0 on real tokens, `-inf` on padding (`None` for
    /// images, which have no padding).
    pub key_mask: Option<Vec<T>>,
}

impl<T: Float> LastBlockInputs<T> {
    /// Runs `model` up to the last block's attention on every example of `split`, recording
    /// nothing.
    pub fn compute(model: &Classifier<T>, split: &TokenizedSplit) -> Result<Self> {
        model.check_split(split, "fine-tuning split")?;
        let c = model.config;
        let (seq, dim) = (c.seq_len + 1, c.dim);
        let indices: Vec<usize> = (0..split.n).collect();
        let parts: Vec<(Vec<T>, Vec<T>, Vec<T>)> = indices
            .par_chunks(CACHE_CHUNK)
            .map(|chunk| {
                let mut tape = Tape::<T>::new();
                tape.no_grad(|tape| {
                    let vars = model.param_vars(tape);
                    let real = key_padding_mask(split, chunk);
                    let block_config = c.block();
                    let mut x = model.embed.forward(tape, &vars, split, chunk);
                    let (last, earlier) = model.blocks.split_last().expect("at least one block");
                    for block in earlier {
                        let block_vars = block.vars(tape, &model.store);
                        x = block_forward_vars(
                            tape,
                            &block_vars,
                            &block_config,
                            x,
                            real.as_deref(),
                        )
                        .out;
                    }
                    let last_vars = last.vars(tape, &model.store);
                    let eps = T::from_f64(c.ln_eps);
                    let normed = tape.layer_norm(x, last_vars.ln1.0, last_vars.ln1.1, eps);
                    let values = linear_forward(tape, normed, &last_vars.value);
                    let cls_input = tape.select(x, 1, 0);
                    (
                        tape.value(normed).to_vec(),
                        tape.value(values).to_vec(),
                        tape.value(cls_input).to_vec(),
                    )
                })
            })
            .collect();
        let mut inputs = LastBlockInputs {
            examples: split.n,
            seq,
            dim,
            normed: Vec::with_capacity(split.n * seq * dim),
            values: Vec::with_capacity(split.n * seq * dim),
            cls_input: Vec::with_capacity(split.n * dim),
            key_mask: key_padding_mask(split, &indices).map(|real| {
                real.iter()
                    .map(|&r| if r { T::ZERO } else { T::NEG_INFINITY })
                    .collect()
            }),
        };
        for (normed, values, cls_input) in parts {
            inputs.normed.extend(normed);
            inputs.values.extend(values);
            inputs.cls_input.extend(cls_input);
        }
        Ok(inputs)
    }

    /// Rows `indices` of a `[examples, width]` buffer, in order.
    fn gather(buffer: &[T], width: usize, indices: &[usize]) -> Vec<T> {
        let mut out = Vec::with_capacity(indices.len() * width);
        for &i in indices {
            out.extend_from_slice(&buffer[i * width..(i + 1) * width]);
        }
        out
    }
}

/// What [`forward_cached`] records.
struct CachedForward {
    /// `[batch, classes]`.
    logits: Var,
    /// The `[CLS]` query's attention, `[batch, heads, 1, seq]`.
    cls_attention: Var,
}

/// The classifier's logits for the cached examples `indices`, parameters read from the model's
/// store (the frozen ones enter as constants).
fn forward_cached<T: Float>(
    tape: &mut Tape<T>,
    model: &Classifier<T>,
    inputs: &LastBlockInputs<T>,
    attention: Phase2Attention,
    indices: &[usize],
) -> CachedForward {
    let (batch, seq, dim, heads) = (indices.len(), inputs.seq, inputs.dim, attention.heads);
    let head_dim = dim / heads;
    let qk_dim = attention.query_key_head_dim();
    let config = model.config.block();
    let last = model.blocks.last().expect("at least one block");
    let vars = last.vars(tape, &model.store);
    let normed = LastBlockInputs::gather(&inputs.normed, seq * dim, indices);
    let normed = tape.constant(&[batch, seq, dim], &normed);
    let values = LastBlockInputs::gather(&inputs.values, seq * dim, indices);
    let values = tape.constant(&[batch, seq, heads, head_dim], &values);
    let values = tape.permute(values, &[0, 2, 1, 3]);
    let cls_input = LastBlockInputs::gather(&inputs.cls_input, dim, indices);
    let cls_input = tape.constant(&[batch, 1, dim], &cls_input);

    let cls_normed = tape.select(normed, 1, 0);
    // The block's own projections are already leaves of `vars`: one leaf per parameter.
    let (query_vars, key_vars) = if (attention.query, attention.key) == (last.query, last.key) {
        (vars.query, vars.key)
    } else {
        (
            attention.query.vars(tape, &model.store),
            attention.key.vars(tape, &model.store),
        )
    };
    let query = linear_forward(tape, cls_normed, &query_vars);
    let query = tape.reshape(query, &[batch, 1, heads, qk_dim]);
    let query = tape.permute(query, &[0, 2, 1, 3]);
    let key = linear_forward(tape, normed, &key_vars);
    let key = tape.reshape(key, &[batch, seq, heads, qk_dim]);
    let key = tape.permute(key, &[0, 2, 1, 3]);
    let scores = tape.matmul_t(query, key, false, true);
    let scores = tape.scale(
        scores,
        T::from_f64(attention.score_scale / (qk_dim as f64).sqrt()),
    );
    let mask = inputs.key_mask.as_ref().map(|mask| {
        // [batch, heads, 1, seq]: each example's key row repeated over its heads.
        let mut repeated = Vec::with_capacity(batch * heads * seq);
        for &i in indices {
            for _ in 0..heads {
                repeated.extend_from_slice(&mask[i * seq..(i + 1) * seq]);
            }
        }
        tape.constant(&[batch, heads, 1, seq], &repeated)
    });
    let cls_attention = tape.softmax(scores, mask);
    let context = tape.matmul(cls_attention, values);
    let context = tape.permute(context, &[0, 2, 1, 3]);
    let context = tape.reshape(context, &[batch, 1, dim]);
    let context = match &vars.out {
        Some(out) => linear_forward(tape, context, out),
        None => context,
    };
    let out = attention_residual_and_mlp(tape, &vars, &config, cls_input, context);
    let cls = tape.reshape(out, &[batch, dim]);
    let norm = &model.final_norm;
    let (gamma, beta) = norm.vars(tape, &model.store);
    let cls = tape.layer_norm(cls, gamma, beta, T::from_f64(model.config.ln_eps));
    let head = model.head.vars(tape, &model.store);
    let logits = linear_forward(tape, cls, &head);
    CachedForward {
        logits,
        cls_attention,
    }
}

/// Class index of the largest logit of each row (the first on ties), as the trainer's.
fn argmax_rows<T: Float>(logits: &[T], classes: usize) -> Vec<u32> {
    logits
        .chunks_exact(classes)
        .map(|row| {
            let mut best = 0;
            for (j, &v) in row.iter().enumerate() {
                if v > row[best] {
                    best = j;
                }
            }
            best as u32
        })
        .collect()
}

/// The logits of every cached example (no tape recorded), `[examples, classes]`: for tests and
/// comparisons with the full model.
pub fn cached_logits<T: Float>(
    model: &Classifier<T>,
    inputs: &LastBlockInputs<T>,
    attention: Phase2Attention,
) -> Vec<T> {
    let mut tape = Tape::new();
    let indices: Vec<usize> = (0..inputs.examples).collect();
    tape.no_grad(|tape| {
        let forward = forward_cached(tape, model, inputs, attention, &indices);
        tape.value(forward.logits).to_vec()
    })
}

/// Phase-2 training of the last block's query and key on cached inputs: the step loop of
/// [`ClassifierTrainer::run_epoch`] (its epoch orders, chunks of `chunk_size` summed in chunk order,
/// clipping, AdamW with the schedule over `epochs`).
pub struct CachedTrainer {
    /// Holds the settings and draws the epoch orders.
    schedule: ClassifierTrainer<f32>,
    attention: Phase2Attention,
    optimizer: AdamW<f32>,
    tapes: Vec<Tape<f32>>,
}

/// One epoch's outcome.
#[derive(Clone, Copy, Debug)]
pub struct CachedEpoch {
    /// Learning rate of the last step.
    pub lr: f64,
    /// Mean gradient norm before clipping.
    pub grad_norm: f64,
}

impl CachedTrainer {
    /// A trainer with a fresh optimizer for the query and key of `attention`; errors if a setting
    /// of `config` is out of range ([`TrainConfig::validate`]).
    pub fn new(config: TrainConfig, attention: Phase2Attention) -> Result<Self> {
        let optimizer = AdamW::new(config.lr).with_weight_decay(config.weight_decay);
        Ok(CachedTrainer {
            schedule: ClassifierTrainer::new(config)?,
            attention,
            optimizer,
            tapes: Vec::new(),
        })
    }

    /// The trainer's settings.
    pub fn config(&self) -> &TrainConfig {
        &self.schedule.config
    }

    /// One epoch over the cached examples with `labels`.
    pub fn run_epoch(
        &mut self,
        model: &mut Classifier<f32>,
        inputs: &LastBlockInputs<f32>,
        labels: &[u32],
    ) -> Result<CachedEpoch> {
        let n = inputs.examples;
        check_labels(labels, n, model.config.num_classes)?;
        let config = self.schedule.config.clone();
        let epoch = self.schedule.epochs_done;
        let order = self.schedule.epoch_order(epoch, n);
        let total_steps = config.steps_per_epoch(n) * config.epochs;
        let (mut norm_sum, mut steps, mut lr) = (0.0, 0usize, 0.0);
        for (batch_index, batch) in order.chunks(config.batch_size).enumerate() {
            let chunks: Vec<&[usize]> = batch.chunks(config.chunk_size).collect();
            if self.tapes.len() < chunks.len() {
                self.tapes.resize_with(chunks.len(), Tape::new);
            }
            let batch_len = batch.len() as f64;
            let model_ref: &Classifier<f32> = model;
            let attention = self.attention;
            let results: Vec<(f64, Gradients<f32>)> = self.tapes[..chunks.len()]
                .par_iter_mut()
                .zip(chunks.par_iter())
                .map(|(tape, &indices)| {
                    tape.clear();
                    tape.set_grad_enabled(true);
                    let forward = forward_cached(tape, model_ref, inputs, attention, indices);
                    let targets: Vec<usize> = indices.iter().map(|&i| labels[i] as usize).collect();
                    let loss = tape.cross_entropy(forward.logits, &targets);
                    let loss_value = tape.scalar(loss).to_f64();
                    let weighted = tape.scale(loss, indices.len() as f32 / batch_len as f32);
                    let grads = tape.backward(weighted);
                    // Release the tape's share of the parameters before the optimizer writes.
                    tape.clear();
                    (loss_value * indices.len() as f64, grads)
                })
                .collect();
            let step = self.schedule.steps_done;
            // -0.0 is the exact identity of addition: the sum is the first chunk's loss plus the
            // others in chunk order, as the gradients are summed.
            let batch_loss = results.iter().map(|r| r.0).fold(-0.0, |a, b| a + b);
            let mut grads = sum_chunk_gradients(results.into_iter().map(|r| r.1), &mut self.tapes);
            if !(batch_loss / batch_len).is_finite() {
                return Err(Error::NonFinite {
                    step,
                    quantity: format!(
                        "phase-2 training loss (epoch {}, batch {batch_index})",
                        epoch + 1
                    ),
                    value: batch_loss / batch_len,
                });
            }
            let norm = clip_grad_norm(&mut grads, config.clip_norm.unwrap_or(f64::INFINITY));
            if !norm.is_finite() {
                return Err(Error::NonFinite {
                    step,
                    quantity: format!(
                        "phase-2 gradient norm (epoch {}, batch {batch_index})",
                        epoch + 1
                    ),
                    value: norm,
                });
            }
            lr = config.lr_at(step, total_steps);
            self.optimizer.lr = lr;
            self.optimizer.step(&mut model.store, &grads);
            self.tapes[0].recycle_gradients(grads);
            self.schedule.steps_done += 1;
            steps += 1;
            norm_sum += norm;
        }
        self.schedule.epochs_done += 1;
        Ok(CachedEpoch {
            lr,
            grad_norm: norm_sum / steps.max(1) as f64,
        })
    }

    /// Loss, accuracy, predictions and `[CLS]` attention of `model` on the cached examples
    /// against `labels` (as [`ClassifierTrainer::evaluate`], recording nothing).
    pub fn evaluate(
        &mut self,
        model: &Classifier<f32>,
        inputs: &LastBlockInputs<f32>,
        labels: &[u32],
    ) -> Result<Evaluation> {
        evaluate_cached(
            model,
            inputs,
            self.attention,
            labels,
            self.schedule.steps_done,
        )
    }
}

fn check_labels(labels: &[u32], n: usize, classes: usize) -> Result<()> {
    if labels.len() != n {
        return Err(Error::invalid(
            "labels",
            format!("{} labels for {n} examples", labels.len()),
        ));
    }
    if n == 0 {
        return Err(Error::invalid("fine-tuning split", "has no examples"));
    }
    if let Some(bad) = labels.iter().find(|&&c| c as usize >= classes) {
        return Err(Error::invalid(
            "labels",
            format!("label {bad} out of range for {classes} classes"),
        ));
    }
    Ok(())
}

/// [`CachedTrainer::evaluate`]; `step` names the training step in errors.
pub fn evaluate_cached(
    model: &Classifier<f32>,
    inputs: &LastBlockInputs<f32>,
    attention: Phase2Attention,
    labels: &[u32],
    step: usize,
) -> Result<Evaluation> {
    let n = inputs.examples;
    check_labels(labels, n, model.config.num_classes)?;
    let classes = model.config.num_classes;
    let indices: Vec<usize> = (0..n).collect();
    // Chunks in parallel, combined in chunk order.
    let parts: Vec<(f64, Vec<u32>, f64)> = indices
        .par_chunks(CACHE_CHUNK)
        .map(|chunk| {
            let mut tape = Tape::new();
            tape.no_grad(|tape| {
                let forward = forward_cached(tape, model, inputs, attention, chunk);
                let targets: Vec<usize> = chunk.iter().map(|&i| labels[i] as usize).collect();
                let loss = tape.cross_entropy(forward.logits, &targets);
                let predictions = argmax_rows(tape.value(forward.logits), classes);
                let attention: f64 = max_cls_attention(
                    tape.value(forward.cls_attention),
                    attention.heads,
                    inputs.seq,
                )
                .iter()
                .sum();
                (
                    tape.scalar(loss).to_f64() * chunk.len() as f64,
                    predictions,
                    attention,
                )
            })
        })
        .collect();
    let (mut loss, mut attention) = (0.0, 0.0);
    let mut predictions = Vec::with_capacity(n);
    for (chunk_loss, chunk_predictions, chunk_attention) in parts {
        loss += chunk_loss;
        attention += chunk_attention;
        predictions.extend(chunk_predictions);
    }
    let correct = predictions
        .iter()
        .zip(labels)
        .filter(|(p, l)| p == l)
        .count();
    let loss = loss / n as f64;
    if !loss.is_finite() {
        return Err(Error::NonFinite {
            step,
            quantity: "phase-2 evaluation loss".into(),
            value: loss,
        });
    }
    Ok(Evaluation {
        loss,
        accuracy: correct as f64 / n as f64,
        mean_max_cls_attention: attention / n as f64,
        predictions,
    })
}
