//! The paper's synthetic experiment end to end (docs/model.md).
//!
//! [`config`] holds the settings, presets and validation; [`data`] generates the tokens;
//! [`init`] streams `W_0`. The trainers all implement [`Trainer`]: [`dense`] and [`subspace`]
//! train the attention model on its tokens (they agree to rounding), [`law`] on inputs drawn from
//! their law at any `d`, [`crn`] a column of runs from one shared start-up (common random
//! numbers), and [`encoder`] the one-layer transformer. [`metrics`] and [`theory`] turn readouts
//! into what a run records; [`run()`] is the one pipeline (data, start-up, `run::train_loop`,
//! summary, files) behind `benign run`, `benign sweep` and the library; [`export`] writes and
//! reads the data as .npy files.

pub mod config;
pub mod crn;
pub mod data;
pub mod dense;
pub mod encoder;
pub mod export;
pub mod init;
#[cfg(test)]
mod init_compare;
pub mod law;
pub mod metrics;
pub mod run;
pub mod subspace;
pub mod theory;

pub use config::{
    InitKind, LabelNoise, ModelKind, Precision, Preset, RunConfig, SignalDirections, TrainerKind,
};
pub use run::{run, run_with, RunOptions, RunResult, Summary};

use benign_kernels::{Float, MatRef};

use crate::Result;
use metrics::{Readout, StateNorms};

/// A model trained by full-batch gradient descent on the synthetic data, as the one training
/// loop (`run::train_loop`) drives it: the attention model's trainers (subspace, dense, law,
/// a common-random-numbers cell) through [`AttentionTrainer`], and the encoder.
///
/// A trainer checks the state each update produces. A non-finite one is reported as
/// [`crate::Error::NonFinite`] with the step of that update, by the next call of `step`, so that
/// this call still returns the readout of the finite state before the update (its evaluation is
/// recorded); after the last step, [`Self::pending_error`] returns it.
pub trait Trainer {
    /// One gradient-descent step; returns the training readout of the state *before* the step.
    /// `step` (the number of steps taken so far) names the step in errors.
    fn step(&mut self, step: usize) -> Result<Readout>;
    /// The training readout at the current state (after the last step, numbered `step`).
    fn train_readout(&mut self, step: usize) -> Result<Readout>;
    /// The test readout at the current state.
    fn test_readout(&mut self) -> Readout;
    /// The error of the last update not yet returned by [`Self::step`] (taken: returned once).
    fn pending_error(&mut self) -> Option<crate::Error> {
        None
    }
    /// The state norms recorded with an evaluation.
    fn norms(&self) -> StateNorms;
}

/// A trainer of the attention model `f(X) = sum_t softmax(X W p)_t nu^T x_t`, read out through
/// its token logits `z = x^T W p` and token scores `u = nu^T x`. Logits are sample-major
/// (`i * T + t`) and in f64 whatever the training precision. Every such trainer is a [`Trainer`].
pub trait AttentionTrainer {
    /// Tokens per sample, `T`.
    fn tokens_per_sample(&self) -> usize;
    /// `u = nu^T x` of every training token.
    fn train_scores(&self) -> &[f64];
    /// `u = nu^T x` of every test token.
    fn test_scores(&self) -> &[f64];
    /// Logits of the training tokens at the current state.
    fn train_logits(&mut self) -> Vec<f64>;
    /// Logits of the test tokens at the current state.
    fn test_logits(&mut self) -> Vec<f64>;
    /// One gradient-descent step (see [`Trainer`]); returns the training logits of the state
    /// before the step.
    fn step_logits(&mut self, step: usize) -> Result<Vec<f64>>;
    /// The error of the last update not yet returned (see [`Trainer::pending_error`]).
    fn pending_error(&mut self) -> Option<crate::Error> {
        None
    }
    /// `||p||`.
    fn p_norm(&self) -> f64;
    /// `||W - W_0||_F`.
    fn w_delta_norm(&self) -> f64;
}

/// The error of an update that left a non-finite state, charged to that update's `step`:
/// `||p||` first (`p_finite` false or `p_norm` not finite), then the first non-finite entry of
/// `w` (the entries of `W` a trainer holds, called `w_name`) when `w_finite` is false.
pub(crate) fn update_error<T: Float>(
    step: usize,
    (p_finite, p_norm): (bool, f64),
    (w_finite, w, w_name): (bool, &[T], &str),
) -> Option<crate::Error> {
    let (quantity, value) = if !(p_finite && p_norm.is_finite()) {
        ("||p|| after the update".to_string(), p_norm)
    } else if !w_finite {
        let bad = w.iter().find(|v| !v.is_finite()).copied();
        (
            format!("{w_name} after the update"),
            bad.map_or(f64::NAN, T::to_f64),
        )
    } else {
        return None;
    };
    Some(crate::Error::NonFinite {
        step,
        quantity,
        value,
    })
}

/// The error of a step whose training loss is not finite (the attention model's trainers).
pub(crate) fn check_training_loss<T: Float>(step: usize, loss: T) -> Result<()> {
    if loss.is_finite() {
        Ok(())
    } else {
        Err(crate::Error::NonFinite {
            step,
            quantity: "training loss".into(),
            value: loss.to_f64(),
        })
    }
}

/// `op(A) x` as a new vector of `a.rows()` entries.
pub(crate) fn mat_vec<T: Float>(a: MatRef<'_, T>, x: &[T]) -> Vec<T> {
    let mut y = vec![T::ZERO; a.rows()];
    benign_kernels::gemv(T::ONE, a, x, T::ZERO, &mut y);
    y
}

/// The Euclidean (Frobenius) distance between two sequences of the same length (arrays, or
/// several arrays chained), accumulated in f64 in order.
pub(crate) fn distance_f64<'a, T: Float>(
    a: impl IntoIterator<Item = &'a T>,
    b: impl IntoIterator<Item = &'a T>,
) -> f64 {
    a.into_iter()
        .zip(b)
        .map(|(x, y)| {
            let diff = x.to_f64() - y.to_f64();
            diff * diff
        })
        .sum::<f64>()
        .sqrt()
}

/// What a non-finite training logit is called in errors.
const TRAINING_LOGIT: &str = "training token logit";

impl<A: AttentionTrainer> Trainer for A {
    fn step(&mut self, step: usize) -> Result<Readout> {
        let logits = self.step_logits(step)?;
        Readout::of_logits(self.tokens_per_sample(), logits, self.train_scores())
            .finite(step, TRAINING_LOGIT)
    }

    fn train_readout(&mut self, step: usize) -> Result<Readout> {
        let logits = self.train_logits();
        Readout::of_logits(self.tokens_per_sample(), logits, self.train_scores())
            .finite(step, TRAINING_LOGIT)
    }

    fn test_readout(&mut self) -> Readout {
        let logits = self.test_logits();
        Readout::of_logits(self.tokens_per_sample(), logits, self.test_scores())
    }

    fn pending_error(&mut self) -> Option<crate::Error> {
        AttentionTrainer::pending_error(self)
    }

    fn norms(&self) -> StateNorms {
        StateNorms {
            p_norm: self.p_norm(),
            w_delta_norm: self.w_delta_norm(),
        }
    }
}
