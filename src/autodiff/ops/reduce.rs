//! Sum and mean over one axis (the axis is removed) or over all elements (a scalar).
//!
//! ```text
//! y = sum_j x_j:        dx_j = dy
//! y = (1/N) sum_j x_j:  dx_j = dy / N
//! ```

use benign_kernels::{self as kernels, Float};

use crate::autodiff::tape::{write_or_add, BackwardCtx, Tape, Var};
use crate::autodiff::tensor::Shape;

use super::SingleInputOp;

pub(crate) struct Reduce {
    x: usize,
    /// `(outer, axis, inner)` block sizes; a reduction over everything is `(1, numel, 1)`.
    outer: usize,
    len: usize,
    inner: usize,
    mean: bool,
}

impl<T: Float> Tape<T> {
    /// Sum of all elements (a scalar).
    pub fn sum_all(&mut self, x: Var) -> Var {
        self.reduce(x, None, false)
    }

    /// Mean of all elements (a scalar).
    pub fn mean_all(&mut self, x: Var) -> Var {
        self.reduce(x, None, true)
    }

    /// Sum over `axis`, which is removed from the shape.
    pub fn sum_axis(&mut self, x: Var, axis: usize) -> Var {
        self.reduce(x, Some(axis), false)
    }

    /// Mean over `axis`, which is removed from the shape.
    pub fn mean_axis(&mut self, x: Var, axis: usize) -> Var {
        self.reduce(x, Some(axis), true)
    }

    fn reduce(&mut self, x: Var, axis: Option<usize>, mean: bool) -> Var {
        let xi = self.check(x);
        let shape = self.node_shape(xi);
        let ((outer, len, inner), out_shape) = match axis {
            None => ((1, shape.numel(), 1), Shape::scalar()),
            Some(axis) => {
                assert!(
                    axis < shape.rank(),
                    "sum/mean: axis {axis} out of range for shape {shape}"
                );
                (shape.split_at_axis(axis), shape.without_axis(axis))
            }
        };
        let mut out = self.buffer(outer * inner);
        let xv = self.node_value(xi);
        if inner == 1 {
            kernels::row_sums(outer, len, xv, len, &mut out);
        } else {
            for o in 0..outer {
                let block = &xv[o * len * inner..(o + 1) * len * inner];
                kernels::col_sums(
                    len,
                    inner,
                    block,
                    inner,
                    &mut out[o * inner..(o + 1) * inner],
                );
            }
        }
        if mean {
            let inv = T::ONE / T::from_usize(len.max(1));
            kernels::scale(inv, &mut out);
        }
        let op = Reduce {
            x: xi,
            outer,
            len,
            inner,
            mean,
        };
        self.push_op(out_shape, out, op, Vec::new())
    }
}

impl<T: Float> SingleInputOp<T> for Reduce {
    fn backward_input(&self, ctx: &mut BackwardCtx<'_, T>, _out: usize, dy: &[T]) {
        let factor = if self.mean {
            T::ONE / T::from_usize(self.len.max(1))
        } else {
            T::ONE
        };
        let (len, inner) = (self.len, self.inner);
        let (dx, fresh) = ctx.grad(self.x);
        debug_assert_eq!(dx.len(), self.outer * len * inner);
        // Element (o, j, i) of x receives dy[o, i] (nothing to do when x is empty).
        let blocks = dx.chunks_exact_mut((len * inner).max(1));
        for (dx_o, dy_o) in blocks.zip(dy.chunks_exact(inner.max(1))) {
            for dx_oj in dx_o.chunks_exact_mut(inner.max(1)) {
                write_or_add(dx_oj, fresh, |i| factor * dy_o[i]);
            }
        }
    }
}

single_input_op!(Reduce, x);
