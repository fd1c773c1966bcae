//! The paper's model `f(X) = nu^T X^T softmax(X W p)` built on the autodiff tape.
//!
//! The graph computes `W p` first (a GEMV), so a forward pass costs `d^2 + n T d` like the
//! closed form in [`super::closed_form`], and its backward pass produces `dW` as one outer product
//! `dq p^T` written directly into the gradient buffer:
//!
//! ```text
//! q = W p          [d]       GEMV          backward: dW = dq p^T (outer product), dp = W^T dq
//! z = X q          [n T]     GEMV          backward: dq = X^T dz
//! s = softmax_T(z) [n, T]
//! u = X nu         [n T]     GEMV          (constant: nu is fixed)
//! f = sum_T s u    [n]
//! L = mean_i log(1 + exp(-y_i f_i))
//! ```
//!
//! The tape is cleared at the start of every call and keeps its allocations, so a training
//! loop that reuses one tape allocates nothing after its first step except the returned
//! gradients (hand them back with [`Tape::recycle`] to avoid even that).

use std::sync::Arc;

use benign_kernels::Float;

use super::closed_form::TokenShape;
use crate::autodiff::{Tape, Var};

/// The model's inputs as tape values: `tokens` `[n T, d]`, `w` `[d, d]`, `p` and `nu` `[d]`.
#[derive(Clone, Copy, Debug)]
pub struct AttentionVars {
    /// The tokens, `[n T, d]`.
    pub tokens: Var,
    /// The attention matrix `W`, `[d, d]`.
    pub w: Var,
    /// The query vector `p`, `[d]`.
    pub p: Var,
    /// The fixed head `nu`, `[d]`.
    pub nu: Var,
}

/// Values recorded by [`record`].
#[derive(Clone, Copy, Debug)]
pub struct AttentionGraph {
    /// `z = X W p`, shape `[n, T]`.
    pub logits: Var,
    /// `s`, shape `[n, T]`.
    pub attention: Var,
    /// `f`, shape `[n]`.
    pub outputs: Var,
    /// The mean logistic loss (a scalar), when labels were given.
    pub loss: Option<Var>,
}

/// Inputs shared with the tape without copying (the `d x d` matrix is the expensive one).
#[derive(Clone, Debug)]
pub struct SharedInputs<T> {
    /// The tokens, `n T x d` row-major.
    pub tokens: Arc<Vec<T>>,
    /// `W`, `d x d` row-major.
    pub w: Arc<Vec<T>>,
    /// `p`, length d.
    pub p: Arc<Vec<T>>,
    /// `nu`, length d.
    pub nu: Arc<Vec<T>>,
}

/// Loss and gradients with respect to `W` (dense, `d x d` row-major) and `p`.
#[derive(Clone, Debug)]
pub struct AttentionGradients<T> {
    /// The mean logistic loss.
    pub loss: T,
    /// The token logits `z_it` of the forward pass (sample-major), for metrics.
    pub logits: Vec<T>,
    /// `dL/dW`, `d x d` row-major.
    pub grad_w: Vec<T>,
    /// `dL/dp`, length d.
    pub grad_p: Vec<T>,
}

/// Attention weights and outputs of a forward pass.
#[derive(Clone, Debug)]
pub struct AttentionOutputs<T> {
    /// `s_it`, sample-major.
    pub attention: Vec<T>,
    /// `f_i`.
    pub outputs: Vec<T>,
}

/// Records the model (and the loss when `labels` are given) on `tape`.
pub fn record<T: Float>(
    tape: &mut Tape<T>,
    shape: TokenShape,
    vars: AttentionVars,
    labels: Option<&[T]>,
) -> AttentionGraph {
    let TokenShape {
        samples: n,
        tokens: t,
        dim: d,
    } = shape;
    assert_eq!(
        tape.shape(vars.tokens).dims(),
        [n * t, d],
        "tokens must be [n T, d]"
    );
    let query = tape.matmul(vars.w, vars.p);
    let logits = tape.matmul(vars.tokens, query);
    let logits = tape.reshape(logits, &[n, t]);
    let attention = tape.softmax(logits, None);
    let token_scores = tape.matmul(vars.tokens, vars.nu);
    let token_scores = tape.reshape(token_scores, &[n, t]);
    let weighted = tape.mul(attention, token_scores);
    let outputs = tape.sum_axis(weighted, 1);
    let loss = labels.map(|y| tape.logistic_loss(outputs, y));
    AttentionGraph {
        logits,
        attention,
        outputs,
        loss,
    }
}

fn gradients<T: Float>(
    tape: &mut Tape<T>,
    shape: TokenShape,
    vars: AttentionVars,
    labels: &[T],
) -> AttentionGradients<T> {
    assert_eq!(labels.len(), shape.samples, "one label per sample");
    let graph = record(tape, shape, vars, Some(labels));
    let loss_var = graph.loss.expect("labels were given");
    let loss = tape.scalar(loss_var);
    let logits = tape.value(graph.logits).to_vec();
    let mut grads = tape.backward_wrt(loss_var, &[vars.w, vars.p]);
    let d = shape.dim;
    // p = 0 makes dW exactly zero but it is still a gradient the loss depends on.
    let grad_w = grads.take(vars.w).unwrap_or_else(|| vec![T::ZERO; d * d]);
    let grad_p = grads.take(vars.p).unwrap_or_else(|| vec![T::ZERO; d]);
    tape.recycle_gradients(grads);
    AttentionGradients {
        loss,
        logits,
        grad_w,
        grad_p,
    }
}

/// Loss and gradients, copying the inputs into the tape's (reused) buffers.
pub fn loss_and_gradients<T: Float>(
    tape: &mut Tape<T>,
    shape: TokenShape,
    tokens: &[T],
    labels: &[T],
    w: &[T],
    p: &[T],
    nu: &[T],
) -> AttentionGradients<T> {
    tape.clear();
    let (rows, d) = (shape.total_tokens(), shape.dim);
    let vars = AttentionVars {
        tokens: tape.constant(&[rows, d], tokens),
        w: tape.variable(&[d, d], w),
        p: tape.variable(&[d], p),
        nu: tape.constant(&[d], nu),
    };
    gradients(tape, shape, vars, labels)
}

/// Loss and gradients without copying the inputs: the tape shares them until its next clear.
pub fn loss_and_gradients_shared<T: Float>(
    tape: &mut Tape<T>,
    shape: TokenShape,
    inputs: &SharedInputs<T>,
    labels: &[T],
) -> AttentionGradients<T> {
    tape.clear();
    let (rows, d) = (shape.total_tokens(), shape.dim);
    let vars = AttentionVars {
        tokens: tape.constant_shared(&[rows, d], &inputs.tokens),
        w: tape.variable_shared(&[d, d], &inputs.w),
        p: tape.variable_shared(&[d], &inputs.p),
        nu: tape.constant_shared(&[d], &inputs.nu),
    };
    gradients(tape, shape, vars, labels)
}

/// As [`loss_and_gradients_shared`], writing the gradients into the caller's buffers without
/// copying or allocating: the new gradients are swapped into `grad_w` and `grad_p`, and their
/// previous buffers go to the tape's pool for the next step. This is the training-loop entry
/// point: after the first step it allocates nothing but the `n T` logits. Returns the loss and
/// the token logits of the forward pass.
pub fn loss_and_gradients_into<T: Float>(
    tape: &mut Tape<T>,
    shape: TokenShape,
    inputs: &SharedInputs<T>,
    labels: &[T],
    grad_w: &mut Vec<T>,
    grad_p: &mut Vec<T>,
) -> (T, Vec<T>) {
    let grads = loss_and_gradients_shared(tape, shape, inputs, labels);
    tape.recycle(std::mem::replace(grad_w, grads.grad_w));
    tape.recycle(std::mem::replace(grad_p, grads.grad_p));
    (grads.loss, grads.logits)
}

/// Forward pass only, in evaluation mode (nothing recorded for backward).
pub fn forward<T: Float>(
    tape: &mut Tape<T>,
    shape: TokenShape,
    tokens: &[T],
    w: &[T],
    p: &[T],
    nu: &[T],
) -> AttentionOutputs<T> {
    tape.clear();
    let (rows, d) = (shape.total_tokens(), shape.dim);
    tape.no_grad(|tape| {
        let vars = AttentionVars {
            tokens: tape.constant(&[rows, d], tokens),
            w: tape.constant(&[d, d], w),
            p: tape.constant(&[d], p),
            nu: tape.constant(&[d], nu),
        };
        let graph = record(tape, shape, vars, None);
        AttentionOutputs {
            attention: tape.value(graph.attention).to_vec(),
            outputs: tape.value(graph.outputs).to_vec(),
        }
    })
}
