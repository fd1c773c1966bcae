//! The paper's one-layer transformer encoder on the synthetic data (the paper's Figures
//! 6-7), every parameter trained by full-batch gradient descent.
//!
//! A learned `[CLS]` token (init `N(0, 1)`) is prepended to each sample's T tokens; one pre-LN
//! block of [`crate::transformer`] with one head, bias-free query/key/value, no output projection
//! and (unless `--no-skip`) both residuals; a final LayerNorm; a linear head `d -> 1` on the
//! `[CLS]` position. The reported attention is the `[CLS]` query's row over the T input tokens.
//!
//! # Only the `[CLS]` query is computed
//!
//! The head reads the `[CLS]` position only, and the MLP and LayerNorms act position by position,
//! so the other positions' outputs never reach the loss: the forward pass computes the block for
//! the `[CLS]` query alone. With `h_j = LN1(x_j)` and `q = W_q h_cls`, its attention needs
//!
//! ```text
//! score_j = q . (W_k h_j) / sqrt(d) = h_j . r / sqrt(d),   r = W_k^T q
//! context = sum_j a_j W_v h_j       = W_v g,               g = sum_j a_j h_j
//! ```
//!
//! so no key or value of the other positions is formed: per sample the projections are products
//! with one vector instead of `T + 1`. This is the same function with the same gradients (sums
//! reassociated); the test `matches_the_generic_block` compares it with
//! [`crate::transformer::block_forward`] on the full sequence.

use std::path::Path;
use std::sync::Arc;

use benign_kernels::Float;
use rand_distr::{Distribution, StandardNormal};

use crate::autodiff::{ParamId, ParamStore, Sgd, Tape, Tensor, Var};
use crate::transformer::{
    attention_residual_and_mlp, linear_forward, BlockConfig, BlockParams, LayerNormParams, Linear,
};
use crate::transformer::{BlockVars, LinearVars};
use crate::{Error, Result};

use super::config::{Precision, RunConfig};
use super::metrics::{Readout, StateNorms};
use super::{distance_f64, Trainer};
use crate::io;
use crate::seed::named_rng;

/// LayerNorm epsilon of the encoder (PyTorch's default).
pub const LN_EPS: f64 = 1e-5;

/// The block of the paper's encoder: one head, bias-free q/k/v, no output projection.
pub fn block_config(dim: usize, mlp_dim: usize, residual: bool) -> BlockConfig {
    BlockConfig {
        d_model: dim,
        heads: 1,
        mlp_dim,
        qkv_bias: false,
        out_proj: false,
        residual,
        ln_eps: LN_EPS,
    }
}

/// The encoder's parameters.
pub struct EncoderModel<T> {
    /// Every parameter of the model; the fields below are handles into it.
    pub store: ParamStore<T>,
    /// `cls` `[d]`.
    pub cls: ParamId,
    /// `block.*`.
    pub block: BlockParams,
    /// `final_ln.*`.
    pub final_ln: LayerNormParams,
    /// `head.weight` `[1, d]`, `head.bias` `[1]`.
    pub head: Linear,
    /// The block's sizes and options (heads, MLP width, residuals).
    pub config: BlockConfig,
}

/// The encoder's parameters as tape handles.
#[derive(Clone, Copy, Debug)]
pub struct EncoderVars {
    /// The `[CLS]` token.
    pub cls: Var,
    /// The encoder block.
    pub block: BlockVars,
    /// The final LayerNorm's `(gamma, beta)`.
    pub final_ln: (Var, Var),
    /// The classification head.
    pub head: LinearVars,
}

/// What the encoder computes for a batch.
#[derive(Clone, Copy, Debug)]
pub struct EncoderOutput {
    /// Outputs `f` `[n]`.
    pub f: Var,
    /// The `[CLS]` query's attention over `[CLS] + T` keys, `[n, T + 1]`.
    pub cls_attention: Var,
}

impl<T: Float> EncoderModel<T> {
    /// The seeded initialisation: `[CLS]` from `N(0, 1)`, then the block, final LayerNorm and head
    /// as PyTorch initialises them, all drawn from the stream named `encoder-init` of `seed`.
    pub fn new(dim: usize, mlp_dim: usize, residual: bool, seed: u64) -> Result<Self> {
        let config = block_config(dim, mlp_dim, residual);
        config.validate()?;
        let mut rng = named_rng(seed, "encoder-init");
        let mut store = ParamStore::new();
        let cls: Vec<T> = (0..dim)
            .map(|_| {
                let z: f64 = StandardNormal.sample(&mut rng);
                T::from_f64(z)
            })
            .collect();
        let cls = store.add("cls", Tensor::new(&[dim], cls));
        let block = BlockParams::new(&mut store, "block", &config, &mut rng)?;
        let final_ln = LayerNormParams::new(&mut store, "final_ln", dim);
        let head = Linear::new(&mut store, "head", dim, 1, true, &mut rng);
        Ok(EncoderModel {
            store,
            cls,
            block,
            final_ln,
            head,
            config,
        })
    }

    /// Puts every parameter on `tape` and returns their handles.
    pub fn vars(&self, tape: &mut Tape<T>) -> EncoderVars {
        EncoderVars {
            cls: tape.param(&self.store, self.cls),
            block: self.block.vars(tape, &self.store),
            final_ln: self.final_ln.vars(tape, &self.store),
            head: self.head.vars(tape, &self.store),
        }
    }
}

/// The encoder on `tokens` `[n, T, d]` (see the module documentation).
pub fn encoder_forward<T: Float>(
    tape: &mut Tape<T>,
    vars: &EncoderVars,
    config: &BlockConfig,
    tokens: Var,
) -> EncoderOutput {
    let shape = tape.shape(tokens);
    assert!(
        shape.rank() == 3 && shape.dim(2) == config.d_model,
        "encoder: tokens must be [n, T, {}], got {shape}",
        config.d_model
    );
    assert!(
        config.heads == 1 && !config.qkv_bias && !config.out_proj,
        "encoder: the paper's block has one head, no q/k/v bias and no output projection"
    );
    let (n, t, d) = (shape.dim(0), shape.dim(1), config.d_model);
    let eps = T::from_f64(config.ln_eps);
    let block = &vars.block;
    // [CLS] repeated for every sample (its gradient sums over them) and prepended.
    let cls = tape.reshape(vars.cls, &[1, 1, d]);
    let zeros = tape.zeros(&[n, 1, d]);
    let cls_rows = tape.add(zeros, cls);
    let x = tape.concat(&[cls_rows, tokens], 1);
    let h = tape.layer_norm(x, block.ln1.0, block.ln1.1, eps);
    let h_cls = tape.select(h, 1, 0);
    let q = linear_forward(tape, h_cls, &block.query);
    // r = W_k^T q: the key projection folded into the query, one vector per sample.
    let r = tape.matmul(q, block.key.weight);
    let r = tape.reshape(r, &[n, d, 1]);
    let scores = tape.matmul(h, r);
    let scores = tape.reshape(scores, &[n, 1, t + 1]);
    let scores = tape.scale(scores, T::from_f64(1.0 / (d as f64).sqrt()));
    let attention = tape.softmax(scores, None);
    // g = sum_j a_j h_j, then the value projection of that one vector.
    let mixed = tape.matmul(attention, h);
    let mixed = tape.reshape(mixed, &[n, d]);
    let context = linear_forward(tape, mixed, &block.value);
    let x_cls = tape.select(cls_rows, 1, 0);
    let out = attention_residual_and_mlp(tape, block, config, x_cls, context);
    let normed = tape.layer_norm(out, vars.final_ln.0, vars.final_ln.1, eps);
    let f = linear_forward(tape, normed, &vars.head);
    let f = tape.reshape(f, &[n]);
    let cls_attention = tape.reshape(attention, &[n, t + 1]);
    EncoderOutput { f, cls_attention }
}

/// Appends the readout of a forward pass: outputs `f`, and the [CLS] query's attention over
/// the input tokens (the probability it keeps on itself is left out, so a row sums to at most
/// one) with its logarithm as the logits: equal to the [CLS] scores up to a per-sample
/// constant, so differences are score gaps.
fn push_readout<T: Float>(readout: &mut Readout, f: &[T], cls_attention: &[T], tokens: usize) {
    readout.outputs.extend(f.iter().map(|v| v.to_f64()));
    for row in cls_attention.chunks_exact(tokens + 1) {
        for &a in &row[1..] {
            let a = a.to_f64();
            readout.attention.push(a);
            // Clamped so that an underflowed probability gives a large finite gap.
            readout.logits.push(a.max(f64::MIN_POSITIVE).ln());
        }
    }
}

/// What a non-finite encoder output on the training set is called in errors.
const TRAINING_OUTPUT: &str = "encoder output f on the training set";

/// Elements of the largest activation, `[samples, T + 1, d]`, of one evaluation pass: bounds
/// the tape's memory (2^25 elements, 128 MiB in f32). A test set within it is evaluated in one
/// pass, as PyTorch does, so that each weight matrix is packed for the GEMM once per evaluation
/// instead of once per chunk; rows are independent, so the chunking never changes a bit.
pub const EVAL_CHUNK_ELEMENTS: usize = 1 << 25;

/// Samples per forward pass when evaluating a large set of samples of `tokens` tokens of width
/// `dim`: as many as [`EVAL_CHUNK_ELEMENTS`] allows, at least one.
pub fn eval_chunk(tokens: usize, dim: usize) -> usize {
    (EVAL_CHUNK_ELEMENTS / ((tokens + 1) * dim).max(1)).max(1)
}

/// Full-batch gradient descent on the encoder.
pub struct EncoderTrainer<T: Float> {
    /// The model being trained.
    pub model: EncoderModel<T>,
    tokens_per_sample: usize,
    train_tokens: Arc<Vec<T>>,
    train_labels: Vec<T>,
    /// The test tokens in chunks of [`eval_chunk`] samples, each shared with the tape of its
    /// forward pass without a copy.
    test_chunks: Vec<Arc<Vec<T>>>,
    tape: Tape<T>,
    sgd: Sgd<T>,
    initial_attention_weights: Vec<T>,
}

impl<T: Float> EncoderTrainer<T> {
    /// `train_tokens` and `test_tokens` are sample-major `[samples, T, d]`.
    pub fn new(
        model: EncoderModel<T>,
        tokens_per_sample: usize,
        train_tokens: &[f64],
        train_labels: &[f64],
        test_tokens: &[f64],
        lr: f64,
    ) -> Self {
        let convert = |v: &[f64]| -> Vec<T> { v.iter().map(|&x| T::from_f64(x)).collect() };
        let initial_attention_weights = model.attention_weights();
        let chunk = eval_chunk(tokens_per_sample, model.config.d_model);
        let test_chunks = test_tokens
            .chunks(chunk * tokens_per_sample * model.config.d_model)
            .map(|c| Arc::new(convert(c)))
            .collect();
        EncoderTrainer {
            tokens_per_sample,
            train_tokens: Arc::new(convert(train_tokens)),
            train_labels: convert(train_labels),
            test_chunks,
            tape: Tape::new(),
            sgd: Sgd::new(lr),
            initial_attention_weights,
            model,
        }
    }

    fn dim(&self) -> usize {
        self.model.config.d_model
    }

    /// One step of gradient descent; returns the training readout before it. `step` names the
    /// step in errors.
    fn gradient_step(&mut self, step: usize) -> Result<Readout> {
        let (t, d) = (self.tokens_per_sample, self.dim());
        let n = self.train_labels.len();
        self.tape.clear();
        self.tape.set_grad_enabled(true);
        let tokens = self.tape.constant_shared(&[n, t, d], &self.train_tokens);
        let vars = self.model.vars(&mut self.tape);
        let out = encoder_forward(&mut self.tape, &vars, &self.model.config, tokens);
        let loss = self.tape.logistic_loss(out.f, &self.train_labels);
        let mut readout = Readout::default();
        push_readout(
            &mut readout,
            self.tape.value(out.f),
            self.tape.value(out.cls_attention),
            t,
        );
        let loss_value = self.tape.scalar(loss).to_f64();
        if !loss_value.is_finite() {
            return Err(Error::NonFinite {
                step,
                quantity: "encoder training loss".into(),
                value: loss_value,
            });
        }
        // The weights' gradients stay factored: SGD applies each as one GEMM into the weight.
        let grads = self.tape.backward_factored(loss);
        // Cleared first, so that the parameters are no longer shared and update in place.
        self.tape.clear();
        // Every gradient is a parameter's (the tokens are constants), checked as it is applied.
        let applied = self.sgd.step_finite(&mut self.model.store, &grads);
        self.tape.recycle_gradients(grads);
        if let Err(bad) = applied {
            return Err(Error::NonFinite {
                step,
                quantity: format!("gradient of {}", self.model.store.name(bad)),
                value: f64::NAN,
            });
        }
        Ok(readout)
    }

    /// The readout of `tokens` (`[samples, T, d]`) at the current parameters, without recording.
    fn readout(&mut self, which: Which) -> Readout {
        let (t, d) = (self.tokens_per_sample, self.dim());
        let per_sample = t * d;
        let chunks = match which {
            // The training set in one pass: a training step's tape holds it whole already.
            Which::Train => std::slice::from_ref(&self.train_tokens),
            Which::Test => self.test_chunks.as_slice(),
        };
        let mut readout = Readout::default();
        for chunk in chunks.iter().filter(|c| !c.is_empty()) {
            let n = chunk.len() / per_sample;
            self.tape.clear();
            self.tape.set_grad_enabled(false);
            let tokens = self.tape.constant_shared(&[n, t, d], chunk);
            let vars = self.model.vars(&mut self.tape);
            let out = encoder_forward(&mut self.tape, &vars, &self.model.config, tokens);
            push_readout(
                &mut readout,
                self.tape.value(out.f),
                self.tape.value(out.cls_attention),
                t,
            );
        }
        self.tape.clear();
        self.tape.set_grad_enabled(true);
        readout
    }

    /// `||head.weight||`, the counterpart of the fixed-head model's `||p||`.
    pub fn head_norm(&self) -> f64 {
        norm(self.model.store.value(self.model.head.weight))
    }

    /// `||(W_q, W_k) - (W_q, W_k)_0||_F`, the counterpart of `||W - W_0||_F`: the f64 sum of
    /// squared differences over `W_q` then `W_k`, in that order, read in place (forming their
    /// concatenation allocated and faulted in 2 d^2 values at every evaluation).
    pub fn attention_weights_delta(&self) -> f64 {
        let store = &self.model.store;
        let block = &self.model.block;
        let current = store
            .value(block.query.weight)
            .iter()
            .chain(store.value(block.key.weight));
        distance_f64(current, &self.initial_attention_weights)
    }
}

impl<T: Float> Trainer for EncoderTrainer<T> {
    fn step(&mut self, step: usize) -> Result<Readout> {
        self.gradient_step(step)?.finite(step, TRAINING_OUTPUT)
    }

    fn train_readout(&mut self, step: usize) -> Result<Readout> {
        self.readout(Which::Train).finite(step, TRAINING_OUTPUT)
    }

    fn test_readout(&mut self) -> Readout {
        self.readout(Which::Test)
    }

    fn norms(&self) -> StateNorms {
        StateNorms {
            p_norm: self.head_norm(),
            w_delta_norm: self.attention_weights_delta(),
        }
    }
}

#[derive(Clone, Copy)]
enum Which {
    Train,
    Test,
}

fn norm<T: Float>(v: &[T]) -> f64 {
    v.iter()
        .map(|x| x.to_f64() * x.to_f64())
        .sum::<f64>()
        .sqrt()
}

impl<T: Float> EncoderModel<T> {
    /// `W_q` and `W_k`, concatenated.
    fn attention_weights(&self) -> Vec<T> {
        let mut all = self.store.value(self.block.query.weight).to_vec();
        all.extend_from_slice(self.store.value(self.block.key.weight));
        all
    }
}

/// Bytes an encoder run holds at its peak: tokens (f64 and converted), parameters with
/// gradients and the tape of a training step and of an evaluation chunk.
pub fn encoder_bytes(
    dim: usize,
    mlp_dim: usize,
    tokens: usize,
    samples: usize,
    test_samples: usize,
    element: usize,
) -> u128 {
    let (d, m, t) = (dim as u128, mlp_dim as u128, tokens as u128 + 1);
    let params = 3 * d * d + 2 * d * m + 8 * d + m;
    let data = ((samples + test_samples) as u128) * (tokens as u128) * d;
    let rows = (samples.max(eval_chunk(tokens, dim).min(test_samples)) as u128) * t;
    let tape = 8 * rows * d + 12 * (samples as u128) * (d + m);
    data * 8 + (data + 3 * params + tape) * element as u128
}

/// The encoder of `config` in its precision, ready to train on sample-major `[samples, T, d]`
/// training and test tokens.
pub(crate) fn trainer(
    config: &RunConfig,
    train_tokens: &[f64],
    train_labels: &[f64],
    test_tokens: &[f64],
) -> Result<Box<dyn Trainer>> {
    fn build<T: Float>(
        config: &RunConfig,
        train_tokens: &[f64],
        train_labels: &[f64],
        test_tokens: &[f64],
    ) -> Result<Box<dyn Trainer>> {
        let model = EncoderModel::<T>::new(
            config.dim,
            config.effective_mlp_dim(),
            !config.no_skip,
            config.seed,
        )?;
        Ok(Box::new(EncoderTrainer::new(
            model,
            config.tokens,
            train_tokens,
            train_labels,
            test_tokens,
            config.lr,
        )))
    }
    match config.precision {
        Precision::F32 => build::<f32>(config, train_tokens, train_labels, test_tokens),
        Precision::F64 => build::<f64>(config, train_tokens, train_labels, test_tokens),
    }
}

/// Writes the encoder's seeded initial parameters of `config` to `dir` as `<name>.npy` in the
/// run's precision (e.g. `block.attn.query.weight.npy`, PyTorch layout `[out, in]`), so that
/// another implementation can start from the same point (`scripts/compare_encoder.py`).
pub fn save_initial_params(config: &RunConfig, dir: &Path) -> Result<()> {
    config.validate()?;
    std::fs::create_dir_all(dir).map_err(|e| Error::Io {
        path: dir.to_path_buf(),
        source: e,
    })?;
    let (d, mlp, residual) = (config.dim, config.effective_mlp_dim(), !config.no_skip);
    match config.precision {
        Precision::F32 => write_params(
            &EncoderModel::<f32>::new(d, mlp, residual, config.seed)?,
            dir,
        ),
        Precision::F64 => write_params(
            &EncoderModel::<f64>::new(d, mlp, residual, config.seed)?,
            dir,
        ),
    }
}

fn write_params<T: Float + io::npy::NpyElement>(model: &EncoderModel<T>, dir: &Path) -> Result<()> {
    for id in model.store.ids() {
        let path = dir.join(format!("{}.npy", model.store.name(id)));
        io::npy::write_npy(&path, model.store.shape(id).dims(), model.store.value(id))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transformer::block_forward;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn matches_the_generic_block() {
        let (n, t, d, m) = (3, 5, 12, 7);
        for residual in [true, false] {
            let model = EncoderModel::<f64>::new(d, m, residual, 9).unwrap();
            let mut rng = ChaCha8Rng::seed_from_u64(2);
            let tokens: Vec<f64> = (0..n * t * d)
                .map(|_| rng.random_range(-2.0..2.0))
                .collect();
            let mut tape = Tape::new();
            let x = tape.constant(&[n, t, d], &tokens);
            let vars = model.vars(&mut tape);
            let fast = encoder_forward(&mut tape, &vars, &model.config, x);
            let f_fast = tape.value(fast.f).to_vec();
            let a_fast = tape.value(fast.cls_attention).to_vec();
            // The same model through the generic block on the whole sequence.
            let cls = model.store.value(model.cls).to_vec();
            let mut seq = Vec::new();
            for sample in tokens.chunks(t * d) {
                seq.extend_from_slice(&cls);
                seq.extend_from_slice(sample);
            }
            let mut tape = Tape::new();
            let x = tape.constant(&[n, t + 1, d], &seq);
            let out = block_forward(
                &mut tape,
                &model.store,
                &model.block,
                &model.config,
                x,
                None,
            );
            let cls_out = tape.select(out.out, 1, 0);
            let (g, b) = model.final_ln.vars(&mut tape, &model.store);
            let normed = tape.layer_norm(cls_out, g, b, LN_EPS);
            let head = model.head.vars(&mut tape, &model.store);
            let f = linear_forward(&mut tape, normed, &head);
            for (a, b) in tape.value(f).iter().zip(&f_fast) {
                assert!((a - b).abs() < 1e-12 * (1.0 + a.abs()), "{a} vs {b}");
            }
            let full = tape.value(out.attention);
            for i in 0..n {
                let row = &full[i * (t + 1) * (t + 1)..][..t + 1];
                for (a, b) in row.iter().zip(&a_fast[i * (t + 1)..][..t + 1]) {
                    assert!((a - b).abs() < 1e-14);
                }
            }
        }
    }

    #[test]
    fn seeded_init_is_reproducible_and_pytorch_shaped() {
        let a = EncoderModel::<f64>::new(16, 8, true, 3).unwrap();
        let b = EncoderModel::<f64>::new(16, 8, true, 3).unwrap();
        let c = EncoderModel::<f64>::new(16, 8, true, 4).unwrap();
        for id in a.store.ids() {
            assert_eq!(a.store.value(id), b.store.value(id), "{}", a.store.name(id));
        }
        assert_ne!(a.store.value(a.cls), c.store.value(c.cls));
        let names: Vec<&str> = a.store.ids().map(|id| a.store.name(id)).collect();
        assert!(names.contains(&"block.attn.query.weight") && names.contains(&"head.bias"));
        assert!(a.block.query.bias.is_none() && a.block.out.is_none());
        assert_eq!(a.store.shape(a.head.weight).dims(), &[1, 16]);
        assert!(matches!(
            EncoderModel::<f64>::new(16, 0, true, 3),
            Err(Error::InvalidOption { .. })
        ));
    }
}
