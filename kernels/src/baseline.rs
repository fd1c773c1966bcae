//! The baseline the GEMM of this crate is compared with: safe row-major wrappers around the
//! `matrixmultiply` crate, for the benchmarks, the probes and the tests.
//!
//! Only with the `baseline` feature (which `benign` enables for `benign bench`): the kernels
//! themselves never call `matrixmultiply`, so without the feature it is not a dependency.

use crate::gemm::check_shapes;
use crate::simd::{precision, Precision};
use crate::{Float, MatMut, MatRef, Transpose};

macro_rules! matrixmultiply_gemm {
    ($name:ident, $op_name:ident, $t:ty, $inner:path) => {
        #[doc = concat!("`C <- A B` with `matrixmultiply::", stringify!($inner), "`, all ")]
        /// operands row-major and contiguous (A m x k, B k x n, C m x n; C is overwritten, never
        /// read). The baseline the GEMM of this crate is compared with. `matrixmultiply` runs on
        /// its own threads, not on rayon: their number is read once per process from the
        /// environment variable `MATMUL_NUM_THREADS` (default: physical cores, capped at 4).
        ///
        /// # Panics
        /// If a slice is shorter than its shape requires.
        pub fn $name(m: usize, n: usize, k: usize, a: &[$t], b: &[$t], c: &mut [$t]) {
            $op_name(
                MatRef::new(a, m, k),
                MatRef::new(b, k, n),
                MatMut::new(c, m, n),
            );
        }

        /// The general form behind the function of the same name without `op`.
        fn $op_name(a: MatRef<'_, $t>, b: MatRef<'_, $t>, c: MatMut<'_, $t>) {
            check_shapes(&a, &b, &c);
            let (m, n, k, ldc) = (a.rows(), b.cols(), a.cols(), c.ld());
            if m == 0 || n == 0 {
                return;
            }
            let (ta, lda, a) = (a.trans(), a.ld(), a.data());
            let (tb, ldb, b) = (b.trans(), b.ld(), b.data());
            let c = c.into_data();
            let strides = |t: Transpose, ld: usize| match t {
                Transpose::No => (ld as isize, 1),
                Transpose::Yes => (1, ld as isize),
            };
            let ((rsa, csa), (rsb, csb)) = (strides(ta, lda), strides(tb, ldb));
            // SAFETY: the views were checked when made (each slice holds its stored matrix with
            // its leading dimension) and `check_shapes` above that the shapes agree, so every
            // element addressed through these strides lies inside its slice: op(A) (i, p) is A's
            // stored (i, p) or (p, i); likewise B and C. `c` is borrowed mutably, so it cannot alias `a` or `b`. With beta = 0
            // matrixmultiply does not read C (it may hold anything).
            unsafe {
                $inner(
                    m,
                    k,
                    n,
                    1.0,
                    a.as_ptr(),
                    rsa,
                    csa,
                    b.as_ptr(),
                    rsb,
                    csb,
                    0.0,
                    c.as_mut_ptr(),
                    ldc as isize,
                    1,
                );
            }
        }
    };
}

matrixmultiply_gemm!(matrixmultiply_sgemm, sgemm_op, f32, matrixmultiply::sgemm);
matrixmultiply_gemm!(matrixmultiply_dgemm, dgemm_op, f64, matrixmultiply::dgemm);

/// `C <- op(A) op(B)` with `matrixmultiply` (its sgemm or dgemm), the operands as for
/// [`crate::gemm()`] (C is overwritten, never read): the comparator of benches and probes on any
/// shape the GEMM takes.
///
/// # Panics
/// If the shapes of `op(A)`, `op(B)` and C do not agree.
pub fn matrixmultiply_gemm<T: Float>(a: MatRef<'_, T>, b: MatRef<'_, T>, c: MatMut<'_, T>) {
    match precision::<T>() {
        Precision::F32 => sgemm_op(a.cast(), b.cast(), c.cast()),
        Precision::F64 => dgemm_op(a.cast(), b.cast(), c.cast()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrixmultiply_wrappers_match_reference() {
        let (m, n, k) = (5, 7, 3);
        let a: Vec<f64> = (0..m * k).map(|v| v as f64 * 0.5 - 3.0).collect();
        let b: Vec<f64> = (0..k * n).map(|v| 1.0 - v as f64 * 0.25).collect();
        let mut c = vec![f64::NAN; m * n];
        matrixmultiply_dgemm(m, n, k, &a, &b, &mut c);
        let af: Vec<f32> = a.iter().map(|&v| v as f32).collect();
        let bf: Vec<f32> = b.iter().map(|&v| v as f32).collect();
        let mut cf = vec![f32::NAN; m * n];
        matrixmultiply_sgemm(m, n, k, &af, &bf, &mut cf);
        for i in 0..m {
            for j in 0..n {
                let want: f64 = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
                assert_eq!(c[i * n + j], want, "({i}, {j})");
                assert!((cf[i * n + j] as f64 - want).abs() < 1e-4, "({i}, {j})");
            }
        }
        // Empty shapes do nothing.
        matrixmultiply_dgemm(0, 3, 2, &[], &[0.0; 6], &mut []);
        matrixmultiply_dgemm(2, 3, 0, &[], &[], &mut c[..6]);
        assert_eq!(&c[..6], &[0.0; 6], "k = 0 gives C = 0");
    }

    /// The general form against the f64 reference: both transposes, padded leading
    /// dimensions, NaN in C (never read), f32 and f64.
    #[test]
    fn matrixmultiply_gemm_matches_reference_with_transposes() {
        let (m, n, k) = (6, 5, 4);
        for ta in [Transpose::No, Transpose::Yes] {
            for tb in [Transpose::No, Transpose::Yes] {
                let (a_rows, a_cols) = if ta == Transpose::No { (m, k) } else { (k, m) };
                let (b_rows, b_cols) = if tb == Transpose::No { (k, n) } else { (n, k) };
                let (lda, ldb, ldc) = (a_cols + 2, b_cols + 1, n + 3);
                let a: Vec<f64> = (0..a_rows * lda).map(|v| (v % 7) as f64 - 2.5).collect();
                let b: Vec<f64> = (0..b_rows * ldb).map(|v| 1.5 - (v % 5) as f64).collect();
                let mut want = vec![0.0; m * ldc];
                crate::reference::gemm(
                    1.0,
                    MatRef::op_with_ld(ta, &a, m, k, lda),
                    MatRef::op_with_ld(tb, &b, k, n, ldb),
                    0.0,
                    MatMut::with_ld(&mut want, m, n, ldc),
                );
                let mut c = vec![f64::NAN; m * ldc];
                matrixmultiply_gemm(
                    MatRef::op_with_ld(ta, &a, m, k, lda),
                    MatRef::op_with_ld(tb, &b, k, n, ldb),
                    MatMut::with_ld(&mut c, m, n, ldc),
                );
                let (af, bf): (Vec<f32>, Vec<f32>) = (
                    a.iter().map(|&v| v as f32).collect(),
                    b.iter().map(|&v| v as f32).collect(),
                );
                let mut cf = vec![f32::NAN; m * ldc];
                matrixmultiply_gemm(
                    MatRef::op_with_ld(ta, &af, m, k, lda),
                    MatRef::op_with_ld(tb, &bf, k, n, ldb),
                    MatMut::with_ld(&mut cf, m, n, ldc),
                );
                for i in 0..m {
                    for j in 0..n {
                        let w = want[i * ldc + j];
                        // small integers and halves: exact in both precisions
                        assert_eq!(c[i * ldc + j], w, "{ta:?}{tb:?} ({i}, {j})");
                        assert_eq!(cf[i * ldc + j] as f64, w, "{ta:?}{tb:?} ({i}, {j}) f32");
                    }
                }
            }
        }
    }
}
