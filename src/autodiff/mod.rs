//! Tape-based reverse-mode automatic differentiation over the kernels of [`benign_kernels`].
//!
//! ```
//! use benign::autodiff::Tape;
//!
//! let mut tape = Tape::<f64>::new();
//! let x = tape.variable(&[2, 2], &[1.0, 2.0, 3.0, 4.0]);
//! let w = tape.variable(&[2], &[0.5, -1.0]);
//! let y = tape.matmul(x, w); // [2]: a GEMV
//! let y2 = tape.mul(y, y);
//! let loss = tape.mean_all(y2);
//! let grads = tape.backward(loss);
//! assert_eq!(grads.get(w).unwrap().len(), 2);
//! ```
//!
//! - [`Tensor`]: up to 4-D, contiguous row-major, `f32` or `f64` ([`Float`]).
//! - [`Tape`]: an arena of nodes; [`Var`] is a `Copy` handle (index + generation). Ops are methods
//!   of the tape (files under `ops/`, one per family), each recording its backward rule beside
//!   its forward pass; buffers an op saves belong to the tape, which pools them for every op.
//!   [`Tape::backward`] returns [`Gradients`] for the leaves; a value used several times
//!   accumulates its gradients. [`Tape::clear`] keeps every allocation for the next step.
//! - [`Gradients`]: found by leaf handle or, in constant time, by [`ParamId`];
//!   [`sum_chunk_gradients`] sums a data-parallel batch's chunks in a fixed order.
//! - [`ParamStore`], [`Sgd`], [`AdamW`], [`clip_grad_norm`]: training.
//!
//! Graph-construction mistakes (shape mismatches, stale handles) are programming errors and
//! panic with a message naming the op and the shapes; they never produce silent garbage.
//!
//! [`Float`]: benign_kernels::Float

pub mod gradients;
mod ops;
pub mod optim;
pub mod params;
pub mod tape;
pub mod tensor;

pub use gradients::{sum_chunk_gradients, Factors, GradEntry, Gradients, ParamGrad};
pub use ops::attention::AttentionOutput;
pub use optim::{clip_grad_norm, AdamW, Sgd};
pub use params::{GroupId, ParamGroup, ParamId, ParamStore};
pub use tape::{MemoryStats, Tape, Var};
pub use tensor::{Shape, Tensor, MAX_RANK};
