//! Level-1 kernels: dot, axpy, scale, sums.
//!
//! PLACEHOLDER BODIES (plain loops) to be replaced by SIMD implementations.

use crate::Float;

/// `sum_i x_i y_i`.
pub fn dot<T: Float>(x: &[T], y: &[T]) -> T {
    assert_eq!(x.len(), y.len());
    x.iter().zip(y).map(|(&a, &b)| a * b).sum()
}

/// `y <- alpha x + y`.
pub fn axpy<T: Float>(alpha: T, x: &[T], y: &mut [T]) {
    assert_eq!(x.len(), y.len());
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

/// `x <- alpha x`.
pub fn scale<T: Float>(alpha: T, x: &mut [T]) {
    for xi in x {
        *xi *= alpha;
    }
}

/// `sum_i x_i`.
pub fn sum<T: Float>(x: &[T]) -> T {
    x.iter().copied().sum()
}

/// `out_i <- sum_j X_ij`, X rows x cols with leading dimension ldx.
pub fn row_sums<T: Float>(rows: usize, cols: usize, x: &[T], ldx: usize, out: &mut [T]) {
    for i in 0..rows {
        out[i] = sum(&x[i * ldx..i * ldx + cols]);
    }
}

/// `out_j <- sum_i X_ij`, X rows x cols with leading dimension ldx.
pub fn col_sums<T: Float>(rows: usize, cols: usize, x: &[T], ldx: usize, out: &mut [T]) {
    out[..cols].iter_mut().for_each(|v| *v = T::ZERO);
    for i in 0..rows {
        for j in 0..cols {
            out[j] += x[i * ldx + j];
        }
    }
}
