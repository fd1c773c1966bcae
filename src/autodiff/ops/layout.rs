//! Ops that move elements without arithmetic: concat, slice / select, reshape, permute /
//! transpose. Each backward routes `dy` back to where the element came from:
//!
//! ```text
//! concat:  dx_i = the block of dy that x_i occupies
//! slice:   dx = dy inside the slice, 0 outside        (select: a slice of length 1, axis dropped)
//! reshape: dx = dy (same elements, same order)
//! permute: dx = permute(dy, inverse permutation)
//! ```

use benign_kernels::Float;

use crate::autodiff::tape::{write_or_add, BackwardCtx, Tape, Var};
use crate::autodiff::tensor::{Shape, MAX_RANK};

use super::{Op, SingleInputOp};

pub(crate) struct Concat {
    inputs: Vec<usize>,
    lens: Vec<usize>,
    outer: usize,
    inner: usize,
}

pub(crate) struct Slice {
    x: usize,
    outer: usize,
    len: usize,
    inner: usize,
    start: usize,
    take: usize,
}

pub(crate) struct Reshape {
    x: usize,
}

pub(crate) struct Permute {
    x: usize,
    /// Output dims and, for each output axis, the input stride it walks (left-padded to 4-D).
    out_dims: [usize; MAX_RANK],
    in_strides: [usize; MAX_RANK],
}

impl Permute {
    /// Calls `f(out_index, in_index)` in output order.
    fn for_each(&self, mut f: impl FnMut(usize, usize)) {
        let [d0, d1, d2, d3] = self.out_dims;
        let s = self.in_strides;
        let mut o = 0;
        for i0 in 0..d0 {
            for i1 in 0..d1 {
                for i2 in 0..d2 {
                    let base = i0 * s[0] + i1 * s[1] + i2 * s[2];
                    for i3 in 0..d3 {
                        f(o, base + i3 * s[3]);
                        o += 1;
                    }
                }
            }
        }
    }
}

impl<T: Float> Tape<T> {
    /// Concatenation along `axis`; all other dimensions must agree.
    pub fn concat(&mut self, xs: &[Var], axis: usize) -> Var {
        assert!(!xs.is_empty(), "concat of no tensors");
        let idx: Vec<usize> = xs.iter().map(|&v| self.check(v)).collect();
        let first = self.node_shape(idx[0]);
        assert!(
            axis < first.rank(),
            "concat: axis {axis} out of range for shape {first}"
        );
        let mut lens = Vec::with_capacity(idx.len());
        for &i in &idx {
            let s = self.node_shape(i);
            assert!(
                s.rank() == first.rank() && s.with_axis(axis, 1) == first.with_axis(axis, 1),
                "concat along axis {axis}: shapes {first} and {s} differ elsewhere"
            );
            lens.push(s.dim(axis));
        }
        let total: usize = lens.iter().sum();
        let out_shape = first.with_axis(axis, total);
        let (outer, _, inner) = first.split_at_axis(axis);
        let mut out = self.buffer(out_shape.numel());
        let mut offset = 0;
        for (&i, &len) in idx.iter().zip(&lens) {
            let xv = self.node_value(i);
            for o in 0..outer {
                let dst = (o * total + offset) * inner;
                out[dst..dst + len * inner]
                    .copy_from_slice(&xv[o * len * inner..(o + 1) * len * inner]);
            }
            offset += len;
        }
        let op = Concat {
            inputs: idx,
            lens,
            outer,
            inner,
        };
        self.push_op(out_shape, out, op, Vec::new())
    }

    /// Elements `start .. start + len` along `axis` (the axis keeps its place, with size len).
    pub fn slice(&mut self, x: Var, axis: usize, start: usize, len: usize) -> Var {
        let xi = self.check(x);
        let shape = self.node_shape(xi);
        let out_shape = shape.with_axis(axis, len);
        self.slice_impl(xi, axis, start, len, out_shape)
    }

    /// Entry `index` along `axis`, with the axis removed (e.g. the `[CLS]` row of `[B, T, D]`
    /// is `select(x, 1, 0)`, of shape `[B, D]`).
    pub fn select(&mut self, x: Var, axis: usize, index: usize) -> Var {
        let xi = self.check(x);
        let shape = self.node_shape(xi);
        assert!(
            axis < shape.rank(),
            "select: axis {axis} out of range for shape {shape}"
        );
        let out_shape = shape.without_axis(axis);
        self.slice_impl(xi, axis, index, 1, out_shape)
    }

    fn slice_impl(
        &mut self,
        xi: usize,
        axis: usize,
        start: usize,
        take: usize,
        out_shape: Shape,
    ) -> Var {
        let shape = self.node_shape(xi);
        assert!(
            axis < shape.rank(),
            "slice: axis {axis} out of range for shape {shape}"
        );
        let (outer, len, inner) = shape.split_at_axis(axis);
        assert!(
            start + take <= len,
            "slice: {start}..{} out of range for axis {axis} of shape {shape}",
            start + take
        );
        let mut out = self.buffer(outer * take * inner);
        let xv = self.node_value(xi);
        for o in 0..outer {
            let src = (o * len + start) * inner;
            out[o * take * inner..(o + 1) * take * inner]
                .copy_from_slice(&xv[src..src + take * inner]);
        }
        let op = Slice {
            x: xi,
            outer,
            len,
            inner,
            start,
            take,
        };
        self.push_op(out_shape, out, op, Vec::new())
    }

    /// The same elements under new dimensions (the element count must not change).
    pub fn reshape(&mut self, x: Var, dims: &[usize]) -> Var {
        let xi = self.check(x);
        let shape = self.node_shape(xi);
        let out_shape = Shape::new(dims);
        assert_eq!(
            shape.numel(),
            out_shape.numel(),
            "reshape: {shape} has {} elements, {out_shape} has {}",
            shape.numel(),
            out_shape.numel()
        );
        let mut out = self.buffer(shape.numel());
        out.copy_from_slice(self.node_value(xi));
        self.push_op(out_shape, out, Reshape { x: xi }, Vec::new())
    }

    /// Swaps two axes.
    pub fn transpose(&mut self, x: Var, axis0: usize, axis1: usize) -> Var {
        let rank = self.shape(x).rank();
        let mut perm: Vec<usize> = (0..rank).collect();
        assert!(
            axis0 < rank && axis1 < rank,
            "transpose: axes {axis0}, {axis1} out of range for rank {rank}"
        );
        perm.swap(axis0, axis1);
        self.permute(x, &perm)
    }

    /// Output axis `i` is input axis `perm[i]`.
    pub fn permute(&mut self, x: Var, perm: &[usize]) -> Var {
        let xi = self.check(x);
        let shape = self.node_shape(xi);
        let rank = shape.rank();
        let mut seen = [false; MAX_RANK];
        assert!(
            perm.len() == rank
                && perm
                    .iter()
                    .all(|&p| p < rank && !std::mem::replace(&mut seen[p], true)),
            "permute: {perm:?} is not a permutation of the {rank} axes of {shape}"
        );
        let strides = shape.strides();
        let mut out_dims = [1; MAX_RANK];
        let mut in_strides = [0; MAX_RANK];
        let pad = MAX_RANK - rank;
        let mut dims = Vec::with_capacity(rank);
        for (i, &p) in perm.iter().enumerate() {
            out_dims[pad + i] = shape.dim(p);
            in_strides[pad + i] = strides[p];
            dims.push(shape.dim(p));
        }
        let op = Permute {
            x: xi,
            out_dims,
            in_strides,
        };
        let mut out = self.buffer(shape.numel());
        let xv = self.node_value(xi);
        op.for_each(|o, i| out[o] = xv[i]);
        self.push_op(Shape::new(&dims), out, op, Vec::new())
    }
}

impl<T: Float> Op<T> for Concat {
    fn inputs(&self, f: &mut dyn FnMut(usize)) {
        self.inputs.iter().for_each(|&i| f(i));
    }

    fn backward(&self, ctx: &mut BackwardCtx<'_, T>, _out: usize, dy: &[T]) {
        let total: usize = self.lens.iter().sum();
        let inner = self.inner;
        let mut offset = 0;
        for (&input, &len) in self.inputs.iter().zip(&self.lens) {
            let block = len * inner;
            if ctx.needs(input) {
                let (dx, fresh) = ctx.grad(input);
                debug_assert_eq!(dx.len(), self.outer * block);
                // dx's block o is dy's block o of `total * inner`, from `offset * inner` on
                let blocks = dx.chunks_exact_mut(block.max(1));
                for (dx_o, dy_o) in blocks.zip(dy.chunks_exact((total * inner).max(1))) {
                    let src = &dy_o[offset * inner..][..block];
                    write_or_add(dx_o, fresh, |r| src[r]);
                }
            }
            offset += len;
        }
    }
}

impl<T: Float> SingleInputOp<T> for Slice {
    fn backward_input(&self, ctx: &mut BackwardCtx<'_, T>, _out: usize, dy: &[T]) {
        let (len, inner, start, take) = (self.len, self.inner, self.start, self.take);
        let (dx, fresh) = ctx.grad(self.x);
        if fresh {
            dx.iter_mut().for_each(|v| *v = T::ZERO);
        }
        for o in 0..self.outer {
            let dst = (o * len + start) * inner;
            let src = &dy[o * take * inner..(o + 1) * take * inner];
            for (d, &g) in dx[dst..dst + take * inner].iter_mut().zip(src) {
                *d += g;
            }
        }
    }
}

single_input_op!(Slice, x);

impl<T: Float> SingleInputOp<T> for Reshape {
    fn backward_input(&self, ctx: &mut BackwardCtx<'_, T>, _out: usize, dy: &[T]) {
        let (dx, fresh) = ctx.grad(self.x);
        write_or_add(dx, fresh, |i| dy[i]);
    }
}

single_input_op!(Reshape, x);

impl<T: Float> SingleInputOp<T> for Permute {
    fn backward_input(&self, ctx: &mut BackwardCtx<'_, T>, _out: usize, dy: &[T]) {
        let (dx, fresh) = ctx.grad(self.x);
        if fresh {
            self.for_each(|o, i| dx[i] = dy[o]);
        } else {
            self.for_each(|o, i| dx[i] += dy[o]);
        }
    }
}

single_input_op!(Permute, x);
