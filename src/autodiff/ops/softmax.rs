//! Softmax and log-softmax over the last axis, with an optional additive mask (e.g. `-inf` on
//! padding). With `y = softmax(x + mask)` row by row:
//!
//! ```text
//! softmax:     dx = y (dy - <dy, y>)
//! log-softmax: dx = dy - softmax(x + mask) sum_j dy_j = dy - exp(y) sum_j dy_j
//! ```
//!
//! The mask is a constant whose shape is the trailing part of `x`'s shape (e.g. `[T]` or
//! `[S, T]` for `x` of shape `[B, S, T]`); it is repeated over the leading rows.

use benign_kernels::{self as kernels, Float};

use crate::autodiff::tape::{BackwardCtx, Tape, Var};

use super::SingleInputOp;

pub(crate) struct Softmax {
    x: usize,
    cols: usize,
    log: bool,
}

impl<T: Float> Tape<T> {
    /// Softmax over the last axis (max-subtracted), optionally of `x + mask`.
    pub fn softmax(&mut self, x: Var, mask: Option<Var>) -> Var {
        self.softmax_impl(x, mask, false)
    }

    /// Log-softmax over the last axis, optionally of `x + mask`.
    pub fn log_softmax(&mut self, x: Var, mask: Option<Var>) -> Var {
        self.softmax_impl(x, mask, true)
    }

    fn softmax_impl(&mut self, x: Var, mask: Option<Var>, log: bool) -> Var {
        let xi = self.check(x);
        let shape = self.node_shape(xi);
        assert!(shape.rank() >= 1, "softmax of a scalar");
        let cols = shape.last();
        let mut out = self.buffer(shape.numel());
        match mask {
            None => {
                let xv = self.node_value(xi);
                if log {
                    kernels::log_softmax_rows(cols, xv, &mut out);
                } else {
                    kernels::softmax_rows(cols, xv, &mut out);
                }
            }
            Some(mask) => {
                let mi = self.check(mask);
                let mshape = self.node_shape(mi);
                let dims = shape.dims();
                assert!(
                    mshape.rank() <= shape.rank() && dims[dims.len() - mshape.rank()..] == *mshape.dims(),
                    "softmax: mask of shape {mshape} does not match the trailing dimensions of {shape}"
                );
                assert!(
                    !self.nodes[mi].requires_grad,
                    "softmax: the mask must be a constant (no gradient flows into it)"
                );
                let mut shifted = self.buffer(shape.numel());
                let (xv, mv) = (self.node_value(xi), self.node_value(mi));
                for (chunk, xs) in shifted
                    .chunks_mut(mv.len().max(1))
                    .zip(xv.chunks(mv.len().max(1)))
                {
                    for ((s, &a), &b) in chunk.iter_mut().zip(xs).zip(mv) {
                        *s = a + b;
                    }
                }
                if log {
                    kernels::log_softmax_rows(cols, &shifted, &mut out);
                } else {
                    kernels::softmax_rows(cols, &shifted, &mut out);
                }
                self.pool.put(shifted);
            }
        }
        self.push_op(shape, out, Softmax { x: xi, cols, log }, Vec::new())
    }
}

impl<T: Float> SingleInputOp<T> for Softmax {
    fn backward_input(&self, ctx: &mut BackwardCtx<'_, T>, out: usize, dy: &[T]) {
        let y = ctx.value(out);
        let run = |dx: &mut [T]| {
            if self.log {
                kernels::log_softmax_rows_backward(self.cols, y, dy, dx);
            } else {
                kernels::softmax_rows_backward(self.cols, y, dy, dx);
            }
        };
        let (dx, fresh) = ctx.grad(self.x);
        if fresh {
            run(dx);
        } else {
            let mut tmp = ctx.scratch(y.len());
            run(&mut tmp);
            ctx.accumulate(self.x, tmp);
        }
    }
}

single_input_op!(Softmax, x);
