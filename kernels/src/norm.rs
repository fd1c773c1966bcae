//! Layer norm forward and backward over contiguous rows.
//!
//! PLACEHOLDER BODIES (plain loops) to be replaced by SIMD implementations.

use crate::Float;

/// Layer norm over contiguous rows of `cols`: `y = (x - mean) rstd gamma + beta` with
/// `rstd = 1 / sqrt(var + eps)` (biased variance, as PyTorch). Writes per-row `mean` and `rstd`
/// (one entry per row) for the backward pass.
#[allow(clippy::too_many_arguments)]
pub fn layer_norm<T: Float>(
    cols: usize,
    eps: T,
    x: &[T],
    gamma: &[T],
    beta: &[T],
    y: &mut [T],
    mean: &mut [T],
    rstd: &mut [T],
) {
    if cols == 0 {
        return;
    }
    let n = T::from_usize(cols);
    for (r, (xr, yr)) in x.chunks_exact(cols).zip(y.chunks_exact_mut(cols)).enumerate() {
        let mu = xr.iter().copied().sum::<T>() / n;
        let var = xr.iter().map(|&v| (v - mu) * (v - mu)).sum::<T>() / n;
        let rs = T::ONE / (var + eps).sqrt();
        for j in 0..cols {
            yr[j] = (xr[j] - mu) * rs * gamma[j] + beta[j];
        }
        mean[r] = mu;
        rstd[r] = rs;
    }
}

/// Layer norm backward. With `xhat = (x - mean) rstd` and `g = dy gamma`:
/// `dx = rstd (g - mean_j g - xhat mean_j(g xhat))`, `dgamma = sum_rows dy xhat`,
/// `dbeta = sum_rows dy` (dgamma and dbeta are overwritten, rows summed in order).
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_backward<T: Float>(
    cols: usize,
    x: &[T],
    gamma: &[T],
    mean: &[T],
    rstd: &[T],
    dy: &[T],
    dx: &mut [T],
    dgamma: &mut [T],
    dbeta: &mut [T],
) {
    dgamma[..cols].iter_mut().for_each(|v| *v = T::ZERO);
    dbeta[..cols].iter_mut().for_each(|v| *v = T::ZERO);
    if cols == 0 {
        return;
    }
    let n = T::from_usize(cols);
    for (r, ((xr, dyr), dxr)) in x
        .chunks_exact(cols)
        .zip(dy.chunks_exact(cols))
        .zip(dx.chunks_exact_mut(cols))
        .enumerate()
    {
        let (mu, rs) = (mean[r], rstd[r]);
        let mut mg = T::ZERO;
        let mut mgx = T::ZERO;
        for j in 0..cols {
            let g = dyr[j] * gamma[j];
            mg += g;
            mgx += g * (xr[j] - mu) * rs;
        }
        mg /= n;
        mgx /= n;
        for j in 0..cols {
            let xhat = (xr[j] - mu) * rs;
            dxr[j] = rs * (dyr[j] * gamma[j] - mg - xhat * mgx);
            dgamma[j] += dyr[j] * xhat;
            dbeta[j] += dyr[j];
        }
    }
}
