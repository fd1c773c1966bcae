//! The paper's single-layer attention model and its closed-form gradient.
//!
//! `f(X) = nu^T X^T softmax(X W p)`: the softmax runs over the T tokens of a sample, `p` is a
//! trainable query, `W` a trainable d x d matrix and `nu` a fixed linear head. Loss: the mean
//! logistic loss `(1/n) sum_i log(1 + exp(-y_i f(X_i)))`.
//!
//! With `z_it = x_it^T W p`, `s_i = softmax(z_i)`, `u_it = nu^T x_it`, `f_i = sum_t s_it u_it` and
//! `l'_i = -y_i / (1 + exp(y_i f_i))`:
//!
//! ```text
//! delta_it = (1/n) l'_i s_it (u_it - f_i)
//! g        = sum_it delta_it x_it          (a vector in R^d)
//! dL/dW    = g p^T                         (rank one)
//! dL/dp    = W^T g
//! ```
//!
//! `W p` is computed first, so a forward pass costs `d^2 + n T d`, not `n T d^2`.

use benign_kernels::{self as kernels, Float, MatMut, MatRef};

/// Sizes of a batch: `samples` sequences of `tokens` tokens in `R^dim`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenShape {
    /// Sequences n.
    pub samples: usize,
    /// Tokens per sequence T.
    pub tokens: usize,
    /// Token dimension d.
    pub dim: usize,
}

impl TokenShape {
    /// Number of tokens in the batch, `n T`.
    pub fn total_tokens(&self) -> usize {
        self.samples * self.tokens
    }
}

/// Everything the forward pass computes, kept for the backward pass and the metrics.
/// Per-token arrays are sample-major: entry `i * T + t`.
#[derive(Clone, Debug)]
pub struct ForwardPass<T> {
    /// `W p` (d entries).
    pub query: Vec<T>,
    /// `z_it = x_it^T W p`.
    pub logits: Vec<T>,
    /// `s_it = softmax_t(z_i)_t`.
    pub attention: Vec<T>,
    /// `u_it = nu^T x_it`.
    pub token_scores: Vec<T>,
    /// `f_i = sum_t s_it u_it`.
    pub outputs: Vec<T>,
}

/// Forward pass over a batch. `tokens` is `(n T) x d` row-major (sample-major, token-minor),
/// `w` is `d x d` row-major, `p` and `nu` have d entries.
pub fn forward<T: Float>(
    shape: TokenShape,
    tokens: &[T],
    w: &[T],
    p: &[T],
    nu: &[T],
) -> ForwardPass<T> {
    let TokenShape {
        tokens: t, dim: d, ..
    } = shape;
    let rows = shape.total_tokens();
    assert_eq!(tokens.len(), rows * d, "tokens must be (n T) x d");
    assert_eq!(w.len(), d * d, "W must be d x d");
    let mut query = vec![T::ZERO; d];
    kernels::gemv(T::ONE, MatRef::new(w, d, d), p, T::ZERO, &mut query);
    let mut logits = vec![T::ZERO; rows];
    kernels::gemv(
        T::ONE,
        MatRef::new(tokens, rows, d),
        &query,
        T::ZERO,
        &mut logits,
    );
    let mut token_scores = vec![T::ZERO; rows];
    kernels::gemv(
        T::ONE,
        MatRef::new(tokens, rows, d),
        nu,
        T::ZERO,
        &mut token_scores,
    );
    let mut attention = vec![T::ZERO; rows];
    kernels::softmax_rows(t, &logits, &mut attention);
    let outputs = attention
        .chunks_exact(t.max(1))
        .zip(token_scores.chunks_exact(t.max(1)))
        .map(|(s, u)| kernels::dot(s, u))
        .collect();
    ForwardPass {
        query,
        logits,
        attention,
        token_scores,
        outputs,
    }
}

/// Mean logistic loss `(1/n) sum_i log(1 + exp(-y_i f_i))`, in softplus form.
pub fn mean_logistic_loss<T: Float>(outputs: &[T], labels: &[T]) -> T {
    assert_eq!(outputs.len(), labels.len());
    if outputs.is_empty() {
        return T::ZERO;
    }
    let total: T = outputs
        .iter()
        .zip(labels)
        .map(|(&f, &y)| kernels::logistic_loss(y * f))
        .sum();
    total / T::from_usize(outputs.len())
}

/// The loss and the gradient in closed form. `dL/dW = token_direction p^T` is rank one and is
/// not materialised; see [`dense_grad_w`].
#[derive(Clone, Debug)]
pub struct ClosedFormGradient<T> {
    /// The mean logistic loss over the samples.
    pub loss: T,
    /// `delta_it` (sample-major).
    pub delta: Vec<T>,
    /// `g = sum_it delta_it x_it`.
    pub token_direction: Vec<T>,
    /// `dL/dp = W^T g`.
    pub grad_p: Vec<T>,
}

/// Loss and closed-form gradient of the mean logistic loss with respect to `W` and `p`.
pub fn closed_form_gradient<T: Float>(
    shape: TokenShape,
    tokens: &[T],
    labels: &[T],
    w: &[T],
    p: &[T],
    nu: &[T],
) -> ClosedFormGradient<T> {
    let pass = forward(shape, tokens, w, p, nu);
    closed_form_gradient_from(shape, tokens, labels, w, &pass)
}

/// As [`closed_form_gradient`], reusing a forward pass already computed.
pub fn closed_form_gradient_from<T: Float>(
    shape: TokenShape,
    tokens: &[T],
    labels: &[T],
    w: &[T],
    pass: &ForwardPass<T>,
) -> ClosedFormGradient<T> {
    let TokenShape {
        samples: n,
        tokens: t,
        dim: d,
    } = shape;
    assert_eq!(labels.len(), n);
    let loss = mean_logistic_loss(&pass.outputs, labels);
    let inv_n = T::ONE / T::from_usize(n.max(1));
    let mut delta = vec![T::ZERO; n * t];
    let per_sample = delta
        .chunks_exact_mut(t.max(1))
        .zip(pass.attention.chunks_exact(t.max(1)))
        .zip(pass.token_scores.chunks_exact(t.max(1)));
    for (((delta_i, s_i), u_i), (&y, &f)) in per_sample.zip(labels.iter().zip(&pass.outputs)) {
        // d/df log(1 + e^{-y f}) = y * l'(y f) with l'(m) = -1 / (1 + e^m)
        let dloss_df = y * kernels::logistic_loss_derivative(y * f) * inv_n;
        for ((dt, &st), &ut) in delta_i.iter_mut().zip(s_i).zip(u_i) {
            *dt = dloss_df * st * (ut - f);
        }
    }
    let mut token_direction = vec![T::ZERO; d];
    kernels::gemv(
        T::ONE,
        MatRef::new(tokens, n * t, d).transpose(),
        &delta,
        T::ZERO,
        &mut token_direction,
    );
    let mut grad_p = vec![T::ZERO; d];
    kernels::gemv(
        T::ONE,
        MatRef::new(w, d, d).transpose(),
        &token_direction,
        T::ZERO,
        &mut grad_p,
    );
    ClosedFormGradient {
        loss,
        delta,
        token_direction,
        grad_p,
    }
}

/// Materialises `dL/dW = g p^T` (d x d, row-major).
pub fn dense_grad_w<T: Float>(token_direction: &[T], p: &[T]) -> Vec<T> {
    let d = p.len();
    let mut grad = vec![T::ZERO; d * d];
    kernels::ger(T::ONE, token_direction, p, MatMut::new(&mut grad, d, d));
    grad
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Central finite differences in f64 on a tiny problem confirm the closed form.
    #[test]
    fn closed_form_matches_finite_differences() {
        let shape = TokenShape {
            samples: 3,
            tokens: 4,
            dim: 5,
        };
        let d = shape.dim;
        let det = |i: usize, s: f64| ((i as f64 * 0.7 + s).sin() * 1.3).tan().clamp(-2.0, 2.0);
        let tokens: Vec<f64> = (0..shape.total_tokens() * d).map(|i| det(i, 0.1)).collect();
        let w: Vec<f64> = (0..d * d).map(|i| 0.3 * det(i, 0.5)).collect();
        let p: Vec<f64> = (0..d).map(|i| 0.4 * det(i, 0.9)).collect();
        let nu: Vec<f64> = (0..d).map(|i| 0.5 * det(i, 1.7)).collect();
        let labels = [1.0, -1.0, 1.0];
        let grad = closed_form_gradient(shape, &tokens, &labels, &w, &p, &nu);
        let grad_w = dense_grad_w(&grad.token_direction, &p);
        let loss = |w: &[f64], p: &[f64]| {
            mean_logistic_loss(&forward(shape, &tokens, w, p, &nu).outputs, &labels)
        };
        let h = 1e-6;
        for idx in 0..d * d {
            let (mut wp, mut wm) = (w.clone(), w.clone());
            wp[idx] += h;
            wm[idx] -= h;
            let fd = (loss(&wp, &p) - loss(&wm, &p)) / (2.0 * h);
            assert!(
                (fd - grad_w[idx]).abs() < 1e-8,
                "dW[{idx}]: {fd} vs {}",
                grad_w[idx]
            );
        }
        for idx in 0..d {
            let (mut pp, mut pm) = (p.clone(), p.clone());
            pp[idx] += h;
            pm[idx] -= h;
            let fd = (loss(&w, &pp) - loss(&w, &pm)) / (2.0 * h);
            assert!(
                (fd - grad.grad_p[idx]).abs() < 1e-8,
                "dp[{idx}]: {fd} vs {}",
                grad.grad_p[idx]
            );
        }
    }
}
