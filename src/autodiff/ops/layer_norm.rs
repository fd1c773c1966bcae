//! Layer norm over the last axis with affine parameters, `y = xhat gamma + beta` with
//! `xhat = (x - mean) rstd`, `rstd = 1 / sqrt(var + eps)` (biased variance). With `g = dy gamma`:
//!
//! ```text
//! dx     = rstd (g - mean_j g - xhat mean_j(g xhat))
//! dgamma = sum_rows dy xhat
//! dbeta  = sum_rows dy
//! ```

use benign_kernels::{self as kernels, Float};

use crate::autodiff::tape::{BackwardCtx, Tape, Var};

use super::Op;

/// Saves each row's mean followed by each row's `rstd` (`2 rows` elements).
pub(crate) struct LayerNorm {
    x: usize,
    gamma: usize,
    beta: usize,
    cols: usize,
}

impl<T: Float> Tape<T> {
    /// Layer norm of `x` over its last axis (of size C); `gamma` and `beta` have shape `[C]`.
    pub fn layer_norm(&mut self, x: Var, gamma: Var, beta: Var, eps: T) -> Var {
        let (xi, gi, bi) = (self.check(x), self.check(gamma), self.check(beta));
        let shape = self.node_shape(xi);
        let cols = shape.last();
        for (name, i) in [("gamma", gi), ("beta", bi)] {
            let s = self.node_shape(i);
            assert!(
                s.rank() == 1 && s.dim(0) == cols,
                "layer_norm: {name} must have shape [{cols}] for input {shape}, got {s}"
            );
        }
        let rows = shape.numel() / cols.max(1);
        let mut out = self.buffer(shape.numel());
        let mut stats = self.buffer(2 * rows);
        let (mean, rstd) = stats.split_at_mut(rows);
        kernels::layer_norm(
            cols,
            eps,
            self.node_value(xi),
            self.node_value(gi),
            self.node_value(bi),
            &mut out,
            mean,
            rstd,
        );
        let op = LayerNorm {
            x: xi,
            gamma: gi,
            beta: bi,
            cols,
        };
        self.push_op(shape, out, op, stats)
    }
}

impl<T: Float> Op<T> for LayerNorm {
    fn inputs(&self, f: &mut dyn FnMut(usize)) {
        f(self.x);
        f(self.gamma);
        f(self.beta);
    }

    fn backward(&self, ctx: &mut BackwardCtx<'_, T>, out: usize, dy: &[T]) {
        let (x, gamma) = (ctx.value(self.x), ctx.value(self.gamma));
        let stats = ctx.saved(out);
        let (mean, rstd) = stats.split_at(stats.len() / 2);
        let mut dx = ctx.scratch(x.len());
        let mut dgamma = ctx.scratch(self.cols);
        let mut dbeta = ctx.scratch(self.cols);
        kernels::layer_norm_backward(
            self.cols,
            x,
            gamma,
            mean,
            rstd,
            dy,
            &mut dx,
            &mut dgamma,
            &mut dbeta,
        );
        for (input, grad) in [(self.x, dx), (self.gamma, dgamma), (self.beta, dbeta)] {
            if ctx.needs(input) {
                ctx.accumulate(input, grad);
            } else {
                ctx.pool.put(grad);
            }
        }
    }
}
