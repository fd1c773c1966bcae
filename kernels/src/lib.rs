//! `benign-kernels`: hand-optimized CPU kernels over plain slices.
//!
//! # Kernel contract (holds for every function in this crate)
//!
//! - Matrices are **row-major** with an explicit leading dimension: element `(i, j)` of a matrix
//!   `A` with leading dimension `lda` is `a[i * lda + j]`, and `lda >= cols` (any `lda` is fine
//!   when the matrix has zero rows or columns). The matrix kernels take them as views
//!   ([`MatRef`], [`MatMut`]: the slice with its shape, leading dimension and, for operands,
//!   whether it is used transposed), checked when made: a too-short slice or a product of
//!   disagreeing shapes panics (it is a programming error, never silent).
//! - Output elements are computed with a **fixed reduction order** that depends only on the
//!   shapes, never on the number of threads: results are bit-identical for any rayon pool size.
//! - When a kernel has a `beta` and `beta == 0`, its output is **never read**: NaN or garbage
//!   already in the output does not leak into the result.
//! - Kernels are pure functions: no allocation visible to the caller, no global state besides
//!   the rayon pool they may run on, no autodiff.
//! - Every kernel has a plain `f64` twin in [`reference`](mod@reference), used by tests, fuzzers
//!   and benches.
//!
//! Element types are `f32` and `f64` through the [`Float`] trait.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod activation;
pub mod attention;
#[cfg(target_arch = "x86_64")]
mod attention_avx512;
#[cfg(feature = "baseline")]
pub mod baseline;
pub mod float;
pub mod gemm;
pub mod level1;
pub mod level2;
#[cfg(target_arch = "x86_64")]
mod level2_avx512;
pub mod matrix;
pub mod norm;
pub mod probe;
pub mod random;
pub mod reference;
#[doc(hidden)]
pub mod simd;
pub mod softmax;
pub mod stream;
pub mod threading;

pub use activation::{gelu, gelu_backward, gelu_with_derivative};
pub use attention::{attention_backward, attention_forward, AttentionShape};
pub use float::Float;
pub use gemm::{gemm, matmul, SINGLE_PASS_DEPTH};
pub use level1::{axpy, axpy_finite, col_sums, dot, row_sums, scale, sum};
pub use level2::{gemv, ger, ger_finite};
pub use matrix::{MatMut, MatRef, Transpose};
pub use norm::{layer_norm, layer_norm_backward};
pub use softmax::{
    log_softmax_rows, log_softmax_rows_backward, logistic_loss, logistic_loss_derivative,
    softmax_rows, softmax_rows_backward, softplus,
};
