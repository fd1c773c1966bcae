//! Level-2 kernels: GEMV and the rank-1 update GER.
//!
//! PLACEHOLDER BODIES (plain loops) to be replaced by SIMD implementations.

use crate::{Float, Transpose};

/// `y <- alpha op(A) x + beta y` with A stored m x n (leading dimension lda).
/// `ta == No`: x has n entries and y has m; `ta == Yes`: x has m entries and y has n.
/// `beta == 0` never reads y.
#[allow(clippy::too_many_arguments)]
pub fn gemv<T: Float>(
    ta: Transpose,
    m: usize,
    n: usize,
    alpha: T,
    a: &[T],
    lda: usize,
    x: &[T],
    beta: T,
    y: &mut [T],
) {
    match ta {
        Transpose::No => {
            for i in 0..m {
                let acc = crate::level1::dot(&a[i * lda..i * lda + n], &x[..n]);
                let old = if beta == T::ZERO { T::ZERO } else { beta * y[i] };
                y[i] = alpha * acc + old;
            }
        }
        Transpose::Yes => {
            for j in 0..n {
                let mut acc = T::ZERO;
                for i in 0..m {
                    acc += a[i * lda + j] * x[i];
                }
                let old = if beta == T::ZERO { T::ZERO } else { beta * y[j] };
                y[j] = alpha * acc + old;
            }
        }
    }
}

/// `A <- A + alpha x y^T`, A m x n (leading dimension lda), x m entries, y n entries.
pub fn ger<T: Float>(m: usize, n: usize, alpha: T, x: &[T], y: &[T], a: &mut [T], lda: usize) {
    for i in 0..m {
        let s = alpha * x[i];
        for j in 0..n {
            a[i * lda + j] += s * y[j];
        }
    }
}
