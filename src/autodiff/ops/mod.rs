//! The ops, one file per family. Each file adds its recording methods to [`Tape`] (the forward
//! pass) and implements [`Op`] (the backward rule) right beside them, with the derivative written
//! in the module documentation. Adding an op is a new file here plus its `mod` line.
//!
//! [`Tape`]: crate::autodiff::Tape

/// Implements [`Op`] for a [`SingleInputOp`] whose input index is the field `$input`. A blanket
/// impl over every `SingleInputOp` would need no macro, but coherence rejects it beside the
/// multi-input ops' own `Op` impls.
macro_rules! single_input_op {
    ($ty:ty, $input:ident) => {
        impl<T: benign_kernels::Float> $crate::autodiff::ops::Op<T> for $ty {
            fn inputs(&self, f: &mut dyn FnMut(usize)) {
                f(self.$input);
            }

            fn backward(
                &self,
                ctx: &mut $crate::autodiff::tape::BackwardCtx<'_, T>,
                out: usize,
                dy: &[T],
            ) {
                if ctx.needs(self.$input) {
                    $crate::autodiff::ops::SingleInputOp::<T>::backward_input(self, ctx, out, dy);
                }
            }
        }
    };
}

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

use super::tape::BackwardCtx;

/// What a recorded node keeps for the backward pass: its input edges and its backward rule.
///
/// An op holds indices and sizes only. Element buffers its backward rule needs (statistics,
/// saved derivatives) are handed to `Tape::push_op` as the node's one saved buffer and read back
/// with [`BackwardCtx::saved`]; the tape owns them, so it returns every one of them to the pool
/// and counts them in [`Tape::memory`] whatever the op, and there is no per-op release code to
/// forget.
///
/// [`Tape::memory`]: crate::autodiff::Tape::memory
pub(crate) trait Op<T: Float>: Send + Sync + 'static {
    /// Calls `f` with the arena index of every input.
    fn inputs(&self, f: &mut dyn FnMut(usize));

    /// Adds this node's contribution to its inputs' gradients, given the gradient `dy` of its
    /// output, node `out`.
    fn backward(&self, ctx: &mut BackwardCtx<'_, T>, out: usize, dy: &[T]);
}

/// The backward rule of an op with exactly one input, as most ops are; `single_input_op!` turns
/// it into an [`Op`], so the input is named once and the skip for an input that wants no
/// gradient is written once.
pub(crate) trait SingleInputOp<T: Float>: Send + Sync + 'static {
    /// Adds this node's contribution to its input's gradient, given the gradient `dy` of its
    /// output, node `out`. Called only when the input wants a gradient.
    fn backward_input(&self, ctx: &mut BackwardCtx<'_, T>, out: usize, dy: &[T]);
}
