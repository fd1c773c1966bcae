//! The ops, one file per family. Each file adds its recording methods to [`Tape`] and keeps
//! its backward rule next to them, with the derivative written in the module documentation.
//!
//! [`Tape`]: crate::autodiff::Tape

pub(crate) mod attention;
pub(crate) mod binary;
pub(crate) mod embedding;
pub(crate) mod layer_norm;
pub(crate) mod layout;
pub(crate) mod linear;
pub(crate) mod loss;
pub(crate) mod matmul;
pub(crate) mod reduce;
pub(crate) mod softmax;
pub(crate) mod unary;

use benign_kernels::Float;

use super::tape::{BackwardCtx, Pool};

/// What a node records for the backward pass. `Leaf` also marks values computed with
/// recording off.
pub(crate) enum Op<T> {
    Leaf,
    MatMul(matmul::MatMul),
    Binary(binary::Binary),
    Unary(unary::Unary<T>),
    Reduce(reduce::Reduce),
    Softmax(softmax::Softmax),
    Logistic(loss::Logistic<T>),
    CrossEntropy(loss::CrossEntropy<T>),
    LayerNorm(layer_norm::LayerNorm<T>),
    Concat(layout::Concat),
    Slice(layout::Slice),
    Reshape(layout::Reshape),
    Permute(layout::Permute),
    Embedding(embedding::Embedding),
    Linear(linear::Linear<T>),
    Attention(attention::MultiHeadAttention),
}

impl<T: Float> Op<T> {
    pub(crate) fn is_leaf(&self) -> bool {
        matches!(self, Op::Leaf)
    }

    /// Calls `f` with the arena index of every input.
    pub(crate) fn for_each_input(&self, mut f: impl FnMut(usize)) {
        let f = &mut f;
        match self {
            Op::Leaf => {}
            Op::MatMul(op) => op.inputs(f),
            Op::Binary(op) => op.inputs(f),
            Op::Unary(op) => op.inputs(f),
            Op::Reduce(op) => op.inputs(f),
            Op::Softmax(op) => op.inputs(f),
            Op::Logistic(op) => op.inputs(f),
            Op::CrossEntropy(op) => op.inputs(f),
            Op::LayerNorm(op) => op.inputs(f),
            Op::Concat(op) => op.inputs(f),
            Op::Slice(op) => op.inputs(f),
            Op::Reshape(op) => op.inputs(f),
            Op::Permute(op) => op.inputs(f),
            Op::Embedding(op) => op.inputs(f),
            Op::Linear(op) => op.inputs(f),
            Op::Attention(op) => op.inputs(f),
        }
    }

    /// Adds this node's contribution to its inputs' gradients, given its output gradient `dy`.
    pub(crate) fn backward(&self, ctx: &mut BackwardCtx<'_, T>, out: usize, dy: &[T]) {
        match self {
            Op::Leaf => {}
            Op::MatMul(op) => op.backward(ctx, dy),
            Op::Binary(op) => op.backward(ctx, out, dy),
            Op::Unary(op) => op.backward(ctx, out, dy),
            Op::Reduce(op) => op.backward(ctx, dy),
            Op::Softmax(op) => op.backward(ctx, out, dy),
            Op::Logistic(op) => op.backward(ctx, dy),
            Op::CrossEntropy(op) => op.backward(ctx, dy),
            Op::LayerNorm(op) => op.backward(ctx, dy),
            Op::Concat(op) => op.backward(ctx, dy),
            Op::Slice(op) => op.backward(ctx, dy),
            Op::Reshape(op) => op.backward(ctx, dy),
            Op::Permute(op) => op.backward(ctx, dy),
            Op::Embedding(op) => op.backward(ctx, dy),
            Op::Linear(op) => op.backward(ctx, dy),
            Op::Attention(op) => op.backward(ctx, dy),
        }
    }

    /// Returns saved element buffers to the pool.
    pub(crate) fn release(self, pool: &mut Pool<T>) {
        match self {
            Op::Logistic(op) => op.release(pool),
            Op::CrossEntropy(op) => op.release(pool),
            Op::LayerNorm(op) => op.release(pool),
            Op::Linear(op) => op.release(pool),
            _ => {}
        }
    }

    /// Elements of saved buffers, for memory accounting.
    pub(crate) fn saved_len(&self) -> usize {
        match self {
            Op::Logistic(op) => op.saved_len(),
            Op::CrossEntropy(op) => op.saved_len(),
            Op::LayerNorm(op) => op.saved_len(),
            Op::Linear(op) => op.saved_len(),
            _ => 0,
        }
    }
}
