//! Layer norm forward and backward over contiguous rows.
//!
//! Row passes use `wide` vectors with two-pass statistics (mean, then the biased variance of
//! `x - mean`, which avoids the cancellation of `E[x^2] - mean^2`). Threads take fixed row
//! blocks for the row outputs; the backward's `dgamma` / `dbeta` are column sums over rows, so
//! they run as a second pass over fixed column blocks, each column summed from row 0 down.
//! Every output element has one arithmetic sequence, whatever the thread count.
//!
//! A call larger than the last-level cache (`crate::stream`) writes `y` / `dx` with streaming
//! stores, and the forward fetches the next row while it computes a row's variance: the same
//! bits (`map_lanes` keeps each element's formula), less memory traffic.

use rayon::prelude::*;

use crate::simd::{cast, cast_mut, dispatch, map_lanes, prefetch, same, Simd, SimdVector};
use crate::stream::{output_stores, OutputStores};
use crate::threading;
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
    assert_eq!(x.len(), y.len(), "layer_norm: x and y lengths differ");
    assert_eq!(
        x.len() % cols,
        0,
        "layer_norm: length is not a multiple of cols"
    );
    let rows = x.len() / cols;
    let (gamma, beta) = (&gamma[..cols], &beta[..cols]);
    let (mean, rstd) = (&mut mean[..rows], &mut rstd[..rows]);
    let stores = output_stores(2 * std::mem::size_of_val(x));
    dispatch!(T, S => {
        let (x, gamma, beta): (&[S], &[S], &[S]) = (cast(x), cast(gamma), cast(beta));
        let (y, mean, rstd): (&mut [S], &mut [S], &mut [S]) =
            (cast_mut(y), cast_mut(mean), cast_mut(rstd));
        let eps: S = same(eps);
        let block = |row0: usize, y: &mut [S], mean: &mut [S], rstd: &mut [S]| {
            let xb = &x[row0 * cols..row0 * cols + y.len()];
            for (r, (((xr, yr), mu), rs)) in xb
                .chunks_exact(cols)
                .zip(y.chunks_exact_mut(cols))
                .zip(mean.iter_mut())
                .zip(rstd.iter_mut())
                .enumerate()
            {
                // a streaming call's rows come from memory: fetch the next one meanwhile
                let next_row = match stores {
                    OutputStores::Cached => &[],
                    OutputStores::Streaming => {
                        xb.get((r + 1) * cols..(r + 2) * cols).unwrap_or(&[])
                    }
                };
                (*mu, *rs) = layer_norm_row::<S>(eps, xr, gamma, beta, yr, next_row, stores);
            }
            if stores == OutputStores::Streaming {
                <S as Simd>::V::stream_fence();
            }
        };
        if threading::parallel(x.len()) {
            let rb = threading::rows_per_chunk(cols);
            y.par_chunks_mut(rb * cols)
                .zip(mean.par_chunks_mut(rb))
                .zip(rstd.par_chunks_mut(rb))
                .enumerate()
                .for_each(|(b, ((y, m), r))| block(b * rb, y, m, r));
        } else {
            block(0, y, mean, rstd);
        }
    })
}

/// One row: returns `(mean, rstd)`. Fetches `next_row` (empty: nothing) into cache during
/// the variance pass; writes `y` as `stores` says (the caller fences).
#[inline(always)]
fn layer_norm_row<S: Simd>(
    eps: S,
    x: &[S],
    gamma: &[S],
    beta: &[S],
    y: &mut [S],
    next_row: &[S],
    stores: OutputStores,
) -> (S, S) {
    let n = S::from_usize(x.len());
    let mu = crate::level1::sum_simd(x) / n;
    let l = S::V::LANES;
    let muv = S::V::splat(mu);
    // Biased variance of x - mu, two accumulators.
    let zero = S::V::splat(S::ZERO);
    let (mut a0, mut a1) = (zero, zero);
    let mut pairs = x.chunks_exact(2 * l);
    for (j, c) in (&mut pairs).enumerate() {
        if !next_row.is_empty() {
            prefetch(next_row, 2 * l * j);
        }
        let d0 = S::V::load(&c[..l]) - muv;
        let d1 = S::V::load(&c[l..]) - muv;
        a0 = S::V::mul_add(d0, d0, a0);
        a1 = S::V::mul_add(d1, d1, a1);
    }
    let mut rest = pairs.remainder().chunks_exact(l);
    for c in &mut rest {
        let d = S::V::load(c) - muv;
        a0 = S::V::mul_add(d, d, a0);
    }
    let mut ss = S::V::hsum(a0 + a1);
    for &v in rest.remainder() {
        ss += (v - mu) * (v - mu);
    }
    let rs = S::ONE / (ss / n + eps).sqrt();
    let rsv = S::V::splat(rs);
    map_lanes::<S, 3>(
        y,
        [x, gamma, beta],
        |[x, g, b]| S::V::mul_add((x - muv) * rsv, g, b),
        |[x, g, b]| (x - mu) * rs * g + b,
        stores,
    );
    (mu, rs)
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
    let (dgamma, dbeta) = (&mut dgamma[..cols], &mut dbeta[..cols]);
    dgamma.iter_mut().for_each(|v| *v = T::ZERO);
    dbeta.iter_mut().for_each(|v| *v = T::ZERO);
    if cols == 0 {
        return;
    }
    assert!(
        x.len() == dy.len() && x.len() == dx.len(),
        "layer_norm_backward: lengths differ"
    );
    assert_eq!(
        x.len() % cols,
        0,
        "layer_norm_backward: length is not a multiple of cols"
    );
    let rows = x.len() / cols;
    let (gamma, mean, rstd) = (&gamma[..cols], &mean[..rows], &rstd[..rows]);
    let stores = output_stores(3 * std::mem::size_of_val(x));
    dispatch!(T, S => {
        let (x, gamma, dy): (&[S], &[S], &[S]) = (cast(x), cast(gamma), cast(dy));
        let (mean, rstd): (&[S], &[S]) = (cast(mean), cast(rstd));
        let (dx, dgamma, dbeta): (&mut [S], &mut [S], &mut [S]) =
            (cast_mut(dx), cast_mut(dgamma), cast_mut(dbeta));
        // Pass 1: dx, row blocks.
        threading::for_row_blocks(cols, x.len(), dx, |row0, dxb| {
            let range = row0 * cols..row0 * cols + dxb.len();
            for (r, ((xr, dyr), dxr)) in x[range.clone()]
                .chunks_exact(cols)
                .zip(dy[range].chunks_exact(cols))
                .zip(dxb.chunks_exact_mut(cols))
                .enumerate()
            {
                let (mu, rs) = (mean[row0 + r], rstd[row0 + r]);
                layer_norm_backward_row::<S>(xr, gamma, mu, rs, dyr, dxr, stores);
            }
            if stores == OutputStores::Streaming {
                <S as Simd>::V::stream_fence();
            }
        });
        // Pass 2: dgamma, dbeta, column blocks.
        let cb_block = |col0: usize, dg: &mut [S], db: &mut [S]| {
            param_grads_block::<S>(cols, x, mean, rstd, dy, col0, dg, db)
        };
        if threading::parallel(x.len()) {
            let cb = threading::cols_per_chunk(rows);
            dgamma
                .par_chunks_mut(cb)
                .zip(dbeta.par_chunks_mut(cb))
                .enumerate()
                .for_each(|(b, (dg, db))| cb_block(b * cb, dg, db));
        } else {
            cb_block(0, dgamma, dbeta);
        }
    })
}

/// One row of `dx`, written as `stores` says (the caller fences).
#[inline(always)]
fn layer_norm_backward_row<S: Simd>(
    x: &[S],
    gamma: &[S],
    mu: S,
    rs: S,
    dy: &[S],
    dx: &mut [S],
    stores: OutputStores,
) {
    let n = S::from_usize(x.len());
    let l = S::V::LANES;
    let (muv, rsv) = (S::V::splat(mu), S::V::splat(rs));
    let zero = S::V::splat(S::ZERO);
    let (mut mgv, mut mgxv) = (zero, zero);
    let mut xc = x.chunks_exact(l);
    let mut gc = gamma.chunks_exact(l);
    let mut dc = dy.chunks_exact(l);
    for ((xv, gv), dv) in (&mut xc).zip(&mut gc).zip(&mut dc) {
        let g = S::V::load(dv) * S::V::load(gv);
        let xhat = (S::V::load(xv) - muv) * rsv;
        mgv += g;
        mgxv = S::V::mul_add(g, xhat, mgxv);
    }
    let (mut mg, mut mgx) = (S::V::hsum(mgv), S::V::hsum(mgxv));
    for ((&xv, &gv), &dv) in xc
        .remainder()
        .iter()
        .zip(gc.remainder())
        .zip(dc.remainder())
    {
        let g = dv * gv;
        mg += g;
        mgx += g * ((xv - mu) * rs);
    }
    mg /= n;
    mgx /= n;
    let (mgv, mgxv) = (S::V::splat(mg), S::V::splat(mgx));
    map_lanes::<S, 3>(
        dx,
        [x, gamma, dy],
        |[x, gamma, dy]| rsv * (dy * gamma - mgv - (x - muv) * rsv * mgxv),
        |[x, gamma, dy]| rs * (dy * gamma - mg - (x - mu) * rs * mgx),
        stores,
    );
}

/// `dgamma_j = sum_r dy_rj xhat_rj`, `dbeta_j = sum_r dy_rj` for the columns
/// `col0..col0 + dg.len()`, rows in order (outputs start at zero).
#[allow(clippy::too_many_arguments)]
fn param_grads_block<S: Simd>(
    cols: usize,
    x: &[S],
    mean: &[S],
    rstd: &[S],
    dy: &[S],
    col0: usize,
    dg: &mut [S],
    db: &mut [S],
) {
    let w = dg.len();
    let l = S::V::LANES;
    for (r, (&mu, &rs)) in mean.iter().zip(rstd).enumerate() {
        let xr = &x[r * cols + col0..r * cols + col0 + w];
        let dyr = &dy[r * cols + col0..r * cols + col0 + w];
        let (muv, rsv) = (S::V::splat(mu), S::V::splat(rs));
        let mut gcs = dg.chunks_exact_mut(l);
        let mut bcs = db.chunks_exact_mut(l);
        let mut xc = xr.chunks_exact(l);
        let mut dc = dyr.chunks_exact(l);
        for (((g, b), xv), dv) in (&mut gcs).zip(&mut bcs).zip(&mut xc).zip(&mut dc) {
            let d = S::V::load(dv);
            let xhat = (S::V::load(xv) - muv) * rsv;
            S::V::store(S::V::mul_add(d, xhat, S::V::load(g)), g);
            S::V::store(S::V::load(b) + d, b);
        }
        for (((g, b), &xv), &dv) in gcs
            .into_remainder()
            .iter_mut()
            .zip(bcs.into_remainder())
            .zip(xc.remainder())
            .zip(dc.remainder())
        {
            *g += dv * ((xv - mu) * rs);
            *b += dv;
        }
    }
}
