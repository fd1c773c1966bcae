//! Row softmax, log-softmax, their backward passes, and the stable softplus / logistic loss.
//!
//! PLACEHOLDER BODIES (plain loops) to be replaced by fused SIMD implementations.

use crate::Float;

/// Row softmax over contiguous rows of `cols` entries (`x.len() == y.len()`, a multiple of
/// `cols`): `y_ij = exp(x_ij - max_j x_ij) / sum_j exp(x_ij - max_j x_ij)`.
/// A row whose entries are all `-inf` yields all zeros (it attends to nothing) and never affects
/// other rows.
pub fn softmax_rows<T: Float>(cols: usize, x: &[T], y: &mut [T]) {
    if cols == 0 {
        return;
    }
    for (xr, yr) in x.chunks_exact(cols).zip(y.chunks_exact_mut(cols)) {
        let m = xr.iter().copied().fold(T::NEG_INFINITY, T::max);
        if m == T::NEG_INFINITY {
            yr.iter_mut().for_each(|v| *v = T::ZERO);
            continue;
        }
        let mut s = T::ZERO;
        for (yv, &xv) in yr.iter_mut().zip(xr) {
            *yv = (xv - m).exp();
            s += *yv;
        }
        let inv = T::ONE / s;
        yr.iter_mut().for_each(|v| *v *= inv);
    }
}

/// Softmax backward, row by row: `dx = y * (dy - <dy, y>)`.
pub fn softmax_rows_backward<T: Float>(cols: usize, y: &[T], dy: &[T], dx: &mut [T]) {
    if cols == 0 {
        return;
    }
    for ((yr, dyr), dxr) in y
        .chunks_exact(cols)
        .zip(dy.chunks_exact(cols))
        .zip(dx.chunks_exact_mut(cols))
    {
        let inner = crate::level1::dot(yr, dyr);
        for ((d, &yv), &g) in dxr.iter_mut().zip(yr).zip(dyr) {
            *d = yv * (g - inner);
        }
    }
}

/// Row log-softmax: `y_ij = x_ij - logsumexp_j x_ij`. An all `-inf` row yields all `-inf`.
pub fn log_softmax_rows<T: Float>(cols: usize, x: &[T], y: &mut [T]) {
    if cols == 0 {
        return;
    }
    for (xr, yr) in x.chunks_exact(cols).zip(y.chunks_exact_mut(cols)) {
        let m = xr.iter().copied().fold(T::NEG_INFINITY, T::max);
        if m == T::NEG_INFINITY {
            yr.iter_mut().for_each(|v| *v = T::NEG_INFINITY);
            continue;
        }
        let s: T = xr.iter().map(|&v| (v - m).exp()).sum();
        let lse = m + s.ln();
        for (yv, &xv) in yr.iter_mut().zip(xr) {
            *yv = xv - lse;
        }
    }
}

/// Log-softmax backward from its output `y`: `dx = dy - exp(y) sum_j dy_j`.
pub fn log_softmax_rows_backward<T: Float>(cols: usize, y: &[T], dy: &[T], dx: &mut [T]) {
    if cols == 0 {
        return;
    }
    for ((yr, dyr), dxr) in y
        .chunks_exact(cols)
        .zip(dy.chunks_exact(cols))
        .zip(dx.chunks_exact_mut(cols))
    {
        let s: T = dyr.iter().copied().sum();
        for ((d, &yv), &g) in dxr.iter_mut().zip(yr).zip(dyr) {
            *d = g - yv.exp() * s;
        }
    }
}

/// `log(1 + e^x)` without overflow: `max(x, 0) + log1p(e^-|x|)`.
#[inline]
pub fn softplus<T: Float>(x: T) -> T {
    x.max(T::ZERO) + (-x.abs()).exp().ln_1p()
}

/// Logistic loss of a margin `m = y f(X)`: `log(1 + e^-m) = softplus(-m)`.
#[inline]
pub fn logistic_loss<T: Float>(margin: T) -> T {
    softplus(-margin)
}

/// `d/dm log(1 + e^-m) = -1 / (1 + e^m)`, evaluated without overflow for either sign of m.
#[inline]
pub fn logistic_loss_derivative<T: Float>(margin: T) -> T {
    if margin >= T::ZERO {
        let e = (-margin).exp();
        -e / (T::ONE + e)
    } else {
        -T::ONE / (T::ONE + margin.exp())
    }
}
