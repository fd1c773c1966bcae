//! The paper's synthetic experiment end to end (docs/model.md).
//!
//! [`config`] holds the settings, presets and validation; [`data`] generates the tokens;
//! [`init`] streams `W_0`; [`dense`] and [`subspace`] are the two trainers, which agree to
//! rounding; [`metrics`] and [`theory`] turn logits into what a run records; [`run`] ties them
//! together and writes the outputs; [`export`] writes and reads the data as .npy files.

pub mod config;
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

use crate::Result;

/// Full-batch gradient descent on the attention model, as the run loop drives it.
///
/// Logits are sample-major (`i * T + t`) and returned in f64 whatever the training precision.
pub trait Trainer {
    /// `u = nu^T x` of every training token.
    fn train_scores(&self) -> &[f64];
    /// `u = nu^T x` of every test token.
    fn test_scores(&self) -> &[f64];
    /// Logits `z = x^T W p` of the training tokens at the current state.
    fn train_logits(&mut self) -> Vec<f64>;
    /// Logits of the test tokens at the current state.
    fn test_logits(&mut self) -> Vec<f64>;
    /// One gradient-descent step; returns the training logits of the state *before* the step.
    /// `step` (the number of steps taken so far) names the step in errors.
    ///
    /// A trainer checks the state each update produces (at least `||p||` and the entries of
    /// `W`). A non-finite one is reported as [`crate::Error::NonFinite`] with the step of that
    /// update, by the next call of `step`, so that this call still returns the logits of the
    /// finite state before the update (its evaluation is recorded); after the last step,
    /// [`Self::pending_error`] returns it.
    fn step(&mut self, step: usize) -> Result<Vec<f64>>;
    /// The error of the last update not yet returned by [`Self::step`] (taken: returned once).
    fn pending_error(&mut self) -> Option<crate::Error> {
        None
    }
    /// `||p||`.
    fn p_norm(&self) -> f64;
    /// `||W - W_0||_F`.
    fn w_delta_norm(&self) -> f64;
}
