//! GEMM: `C <- alpha op(A) op(B) + beta C`.
//!
//! PLACEHOLDER BODY (naive loops) to be replaced by the packed, blocked SIMD implementation.

use crate::Float;

/// Whether an operand is used as stored (`No`) or transposed (`Yes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transpose {
    No,
    Yes,
}

/// `C <- alpha op(A) op(B) + beta C`, `op(A)` m x k, `op(B)` k x n, C m x n.
///
/// `ta == No`: A stored m x k (`lda >= k`); `ta == Yes`: A stored k x m (`lda >= m`). Same for B.
/// `beta == 0` never reads C.
#[allow(clippy::too_many_arguments)]
pub fn gemm<T: Float>(
    ta: Transpose,
    tb: Transpose,
    m: usize,
    n: usize,
    k: usize,
    alpha: T,
    a: &[T],
    lda: usize,
    b: &[T],
    ldb: usize,
    beta: T,
    c: &mut [T],
    ldc: usize,
) {
    let at = |i: usize, p: usize| match ta {
        Transpose::No => a[i * lda + p],
        Transpose::Yes => a[p * lda + i],
    };
    let bt = |p: usize, j: usize| match tb {
        Transpose::No => b[p * ldb + j],
        Transpose::Yes => b[j * ldb + p],
    };
    for i in 0..m {
        for j in 0..n {
            let mut acc = T::ZERO;
            for p in 0..k {
                acc += at(i, p) * bt(p, j);
            }
            let old = if beta == T::ZERO {
                T::ZERO
            } else {
                beta * c[i * ldc + j]
            };
            c[i * ldc + j] = alpha * acc + old;
        }
    }
}
