//! The dense trainer: stores `W` (d x d) and takes plain full-batch gradient-descent steps.
//!
//! Per step it runs the model forward and backward through the autodiff tape
//! ([`attention_tape`]), which computes `W p` first (d^2) and the token logits and scores
//! (n T d), then takes the gradient step `W <- W - lr dL/dW`, `p <- p - lr dL/dp` in place. The
//! tape shares `W`, `p`, the tokens and `nu` without copying and reuses its buffers, so a step
//! allocates nothing after the first. It is the independent check of the subspace trainer (which
//! never touches the tape) and the trainer of choice only at small d.

use std::sync::Arc;

use benign_kernels::{self as kernels, Float, MatRef};

use crate::attention_model::closed_form::{self as attention, TokenShape};
use crate::attention_model::tape::{self as attention_tape, SharedInputs};
use crate::autodiff::Tape;
use crate::{Error, Result};

use super::data::TrainSet;
use super::init::InitSource;
use super::{check_training_loss, distance_f64, mat_vec, update_error, AttentionTrainer};

/// Bytes the dense trainer allocates for `W`, `W_0`, the training and the test tokens.
pub fn dense_bytes(
    dim: usize,
    train_tokens: usize,
    test_tokens: usize,
    element_bytes: usize,
) -> u128 {
    let d = dim as u128;
    (2 * d * d + (train_tokens as u128 + test_tokens as u128 + 4) * d) * element_bytes as u128
}

/// Memory the kernel reports as available (`MemAvailable` in /proc/meminfo), if known.
pub fn available_memory_bytes() -> Option<u128> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u128 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Refuses up front when the dense trainer's arrays would not fit in available memory.
pub fn check_dense_fits(
    dim: usize,
    train_tokens: usize,
    test_tokens: usize,
    element_bytes: usize,
) -> Result<()> {
    let needed = dense_bytes(dim, train_tokens, test_tokens, element_bytes);
    if let Some(available) = available_memory_bytes() {
        if needed > available {
            return Err(Error::OutOfMemory {
                what: format!("the dense trainer (W and W_0 are {dim} x {dim}, plus the test set)"),
                needed_bytes: needed,
                hint: dense_hint(dim, train_tokens, test_tokens, available),
            });
        }
    }
    Ok(())
}

/// The advice when the dense trainer does not fit in `available` bytes: the subspace trainer
/// when its own arrays fit (at the start-up precision it picks for `dim`), else smaller data.
pub fn dense_hint(dim: usize, train_tokens: usize, test_tokens: usize, available: u128) -> String {
    let subspace = super::subspace::memory_bytes(
        dim,
        train_tokens,
        test_tokens,
        super::config::auto_startup_precision(dim),
    );
    if subspace <= available {
        format!(
            "only {available} bytes are available; use `--trainer subspace`, which never stores W \
             (about {subspace} bytes here)"
        )
    } else {
        format!(
            "only {available} bytes are available, and the subspace trainer would need about \
             {subspace}; use data of a smaller --dim"
        )
    }
}

/// Dense gradient descent on `(W, p)`.
pub struct DenseTrainer<T: Float> {
    shape: TokenShape,
    labels: Vec<T>,
    /// Tokens, `W`, `p` and `nu`, shared with the tape during a step.
    inputs: SharedInputs<T>,
    w0: Vec<T>,
    /// A non-finite state found after an update, reported by the next `step` call.
    diverged: Option<Error>,
    tape: Tape<T>,
    grad_w: Vec<T>,
    grad_p: Vec<T>,
    lr: T,
    test_tokens: Vec<T>,
    train_scores: Vec<f64>,
    test_scores: Vec<f64>,
}

impl<T: Float> DenseTrainer<T> {
    /// Builds the trainer; `test_tokens` is the whole test set `(m T) x d`.
    pub fn new(
        train: &TrainSet,
        test_tokens: &[f64],
        nu: &[f64],
        init: &InitSource,
        lr: f64,
    ) -> Result<Self> {
        let d = train.dim;
        check_dense_fits(
            d,
            train.tokens.len() / d,
            test_tokens.len() / d,
            std::mem::size_of::<T>(),
        )?;
        let shape = TokenShape {
            samples: train.samples,
            tokens: train.tokens_per_sample,
            dim: d,
        };
        let cast = |v: &[f64]| v.iter().map(|&x| T::from_f64(x)).collect::<Vec<T>>();
        let tokens = cast(&train.tokens);
        let nu_t = cast(nu);
        let test = cast(test_tokens);
        let scores = |x: &[T]| {
            let u = mat_vec(MatRef::new(x, x.len() / d, d), &nu_t);
            u.into_iter().map(T::to_f64).collect::<Vec<f64>>()
        };
        let train_scores = scores(&tokens);
        let test_scores = scores(&test);
        let w0: Vec<T> = init.matrix();
        Ok(DenseTrainer {
            shape,
            labels: cast(&train.labels),
            inputs: SharedInputs {
                tokens: Arc::new(tokens),
                w: Arc::new(w0.clone()),
                p: Arc::new(vec![T::ZERO; d]),
                nu: Arc::new(nu_t),
            },
            w0,
            diverged: None,
            tape: Tape::new(),
            grad_w: Vec::new(),
            grad_p: Vec::new(),
            lr: T::from_f64(lr),
            test_tokens: test,
            train_scores,
            test_scores,
        })
    }

    /// The current `W` (d x d) and `p`.
    pub fn state(&self) -> (&[T], &[T]) {
        (&self.inputs.w, &self.inputs.p)
    }

    fn query(&self) -> Vec<T> {
        let d = self.shape.dim;
        mat_vec(MatRef::new(&self.inputs.w, d, d), &self.inputs.p)
    }
}

impl<T: Float> AttentionTrainer for DenseTrainer<T> {
    fn tokens_per_sample(&self) -> usize {
        self.shape.tokens
    }

    fn train_scores(&self) -> &[f64] {
        &self.train_scores
    }

    fn test_scores(&self) -> &[f64] {
        &self.test_scores
    }

    fn train_logits(&mut self) -> Vec<f64> {
        let SharedInputs { tokens, w, p, nu } = &self.inputs;
        let pass = attention::forward(self.shape, tokens, w, p, nu);
        pass.logits.into_iter().map(T::to_f64).collect()
    }

    fn test_logits(&mut self) -> Vec<f64> {
        let d = self.shape.dim;
        let q = self.query();
        let rows = self.test_tokens.len() / d;
        let z = mat_vec(MatRef::new(&self.test_tokens, rows, d), &q);
        z.into_iter().map(T::to_f64).collect()
    }

    fn step_logits(&mut self, step: usize) -> Result<Vec<f64>> {
        if let Some(err) = self.diverged.take() {
            return Err(err);
        }
        let (loss, logits) = attention_tape::loss_and_gradients_into(
            &mut self.tape,
            self.shape,
            &self.inputs,
            &self.labels,
            &mut self.grad_w,
            &mut self.grad_p,
        );
        check_training_loss(step, loss)?;
        // The tape shares W and p until it is cleared; clearing keeps its buffers for the next
        // step and leaves this trainer the only owner, so the update below is in place.
        self.tape.clear();
        let w = Arc::get_mut(&mut self.inputs.w).expect("the cleared tape holds no W");
        let w_finite = kernels::axpy_finite(-self.lr, &self.grad_w, w);
        let p = Arc::get_mut(&mut self.inputs.p).expect("the cleared tape holds no p");
        let p_finite = kernels::axpy_finite(-self.lr, &self.grad_p, p);
        // The updated state, charged to this step: `||p||` as the evaluations compute it (d
        // terms), and every entry of `W` (checked during the update's own pass).
        let p_norm = self.p_norm();
        self.diverged = update_error(step, (p_finite, p_norm), (w_finite, &self.inputs.w, "W"));
        Ok(logits.into_iter().map(T::to_f64).collect())
    }

    fn pending_error(&mut self) -> Option<Error> {
        self.diverged.take()
    }

    fn p_norm(&self) -> f64 {
        self.inputs
            .p
            .iter()
            .map(|v| v.to_f64() * v.to_f64())
            .sum::<f64>()
            .sqrt()
    }

    fn w_delta_norm(&self) -> f64 {
        distance_f64(self.inputs.w.iter(), self.w0.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The advice of a refused dense trainer is one that would be accepted: the subspace
    /// trainer when its own arrays fit, a smaller `--dim` when they would not either.
    #[test]
    fn refusals_suggest_what_would_fit() {
        let Some(available) = available_memory_bytes() else {
            return;
        };
        // W alone is 720 GB at d = 300,000; the subspace trainer needs about 1 GB.
        if available > 8 << 30 && available < 700 << 30 {
            let hint = match check_dense_fits(300_000, 160, 8_000, 8) {
                Err(Error::OutOfMemory { hint, .. }) => hint,
                other => panic!("{other:?}"),
            };
            assert!(hint.contains("--trainer subspace"), "{hint}");
        }
        // At d = 10^11 the subspace trainer's token projections alone are 128 TB.
        let hint = match check_dense_fits(100_000_000_000, 160, 8_000, 8) {
            Err(Error::OutOfMemory { hint, .. }) => hint,
            other => panic!("{other:?}"),
        };
        assert!(!hint.contains("--trainer subspace"), "{hint}");
        assert!(hint.contains("--dim"), "{hint}");
    }
}
