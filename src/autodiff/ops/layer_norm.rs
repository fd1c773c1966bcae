//! Layer norm over the last axis with affine parameters, `y = xhat gamma + beta` with
//! `xhat = (x - mean) rstd`, `rstd = 1 / sqrt(var + eps)` (biased variance). With `g = dy gamma`:
//!
//! ```text
//! dx     = rstd (g - mean_j g - xhat mean_j(g xhat))
//! dgamma = sum_rows dy xhat
//! dbeta  = sum_rows dy
//! ```

use benign_kernels::{self as k, Float};

use crate::autodiff::tape::{BackwardCtx, Pool, Tape, Var};

use super::Op;

pub(crate) struct LayerNorm<T> {
    x: usize,
    gamma: usize,
    beta: usize,
    cols: usize,
    mean: Vec<T>,
    rstd: Vec<T>,
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
        let mut mean = self.buffer(rows);
        let mut rstd = self.buffer(rows);
        k::layer_norm(
            cols,
            eps,
            self.node_value(xi),
            self.node_value(gi),
            self.node_value(bi),
            &mut out,
            &mut mean,
            &mut rstd,
        );
        let op = if self.records(&[xi, gi, bi]) {
            Op::LayerNorm(LayerNorm {
                x: xi,
                gamma: gi,
                beta: bi,
                cols,
                mean,
                rstd,
            })
        } else {
            self.pool.put(mean);
            self.pool.put(rstd);
            Op::Leaf
        };
        self.push_op(shape, out, op)
    }
}

impl<T: Float> LayerNorm<T> {
    pub(crate) fn inputs(&self, f: &mut impl FnMut(usize)) {
        f(self.x);
        f(self.gamma);
        f(self.beta);
    }

    pub(crate) fn release(self, pool: &mut Pool<T>) {
        pool.put(self.mean);
        pool.put(self.rstd);
    }

    pub(crate) fn saved_len(&self) -> usize {
        self.mean.len() + self.rstd.len()
    }

    pub(crate) fn backward(&self, ctx: &mut BackwardCtx<'_, T>, dy: &[T]) {
        let (x, gamma) = (ctx.value(self.x), ctx.value(self.gamma));
        let mut dx = ctx.scratch(x.len());
        let mut dgamma = ctx.scratch(self.cols);
        let mut dbeta = ctx.scratch(self.cols);
        k::layer_norm_backward(
            self.cols,
            x,
            gamma,
            &self.mean,
            &self.rstd,
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
