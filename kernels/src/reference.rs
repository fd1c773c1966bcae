//! Plain `f64` reference implementations of every kernel: the independent truth that tests,
//! fuzzers and benches compare the optimized kernels against. Written for obviousness, not speed:
//! straight loops, accumulation in `f64`, no blocking, no SIMD, no threads.
//!
//! Same argument conventions as the optimized kernels (see the crate-level contract).

// Index loops mirror the math notation; that is the point of a reference.
#![allow(clippy::needless_range_loop)]

use crate::{MatMut, MatRef};

/// `C <- alpha op(A) op(B) + beta C`, with `op(A)` m x k and `op(B)` k x n. `beta == 0` never
/// reads C.
pub fn gemm(alpha: f64, a: MatRef<'_, f64>, b: MatRef<'_, f64>, beta: f64, c: MatMut<'_, f64>) {
    crate::gemm::check_shapes(&a, &b, &c);
    let (m, n, k, ldc) = (a.rows(), b.cols(), a.cols(), c.ld());
    let c = c.into_data();
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0;
            for p in 0..k {
                acc += a.at(i, p) * b.at(p, j);
            }
            let old = if beta == 0.0 {
                0.0
            } else {
                beta * c[i * ldc + j]
            };
            c[i * ldc + j] = alpha * acc + old;
        }
    }
}

/// `y <- alpha op(A) x + beta y`: x has `op(A).cols()` entries, y `op(A).rows()`.
/// `beta == 0` never reads y.
pub fn gemv(alpha: f64, a: MatRef<'_, f64>, x: &[f64], beta: f64, y: &mut [f64]) {
    for i in 0..a.rows() {
        let mut acc = 0.0;
        for p in 0..a.cols() {
            acc += a.at(i, p) * x[p];
        }
        let old = if beta == 0.0 { 0.0 } else { beta * y[i] };
        y[i] = alpha * acc + old;
    }
}

/// `A <- A + alpha x y^T`, x `A.rows()` entries, y `A.cols()` entries.
pub fn ger(alpha: f64, x: &[f64], y: &[f64], a: MatMut<'_, f64>) {
    let (m, n, lda) = (a.rows(), a.cols(), a.ld());
    let a = a.into_data();
    for i in 0..m {
        for j in 0..n {
            a[i * lda + j] += alpha * x[i] * y[j];
        }
    }
}

/// `sum_i x_i y_i`.
pub fn dot(x: &[f64], y: &[f64]) -> f64 {
    assert_eq!(x.len(), y.len());
    x.iter().zip(y).map(|(a, b)| a * b).sum()
}

/// `y <- alpha x + y`.
pub fn axpy(alpha: f64, x: &[f64], y: &mut [f64]) {
    assert_eq!(x.len(), y.len());
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

/// `x <- alpha x`.
pub fn scale(alpha: f64, x: &mut [f64]) {
    for xi in x {
        *xi *= alpha;
    }
}

/// `sum_i x_i`.
pub fn sum(x: &[f64]) -> f64 {
    x.iter().sum()
}

/// `out_i <- sum_j X_ij` for X rows x cols (leading dimension ldx).
pub fn row_sums(rows: usize, cols: usize, x: &[f64], ldx: usize, out: &mut [f64]) {
    for i in 0..rows {
        out[i] = x[i * ldx..i * ldx + cols].iter().sum();
    }
}

/// `out_j <- sum_i X_ij` for X rows x cols (leading dimension ldx).
pub fn col_sums(rows: usize, cols: usize, x: &[f64], ldx: usize, out: &mut [f64]) {
    for (j, o) in out.iter_mut().enumerate().take(cols) {
        *o = (0..rows).map(|i| x[i * ldx + j]).sum();
    }
}

/// The maximum of a row, NaN when the row holds a NaN (`f64::max` alone would skip it, and an
/// all-NaN row would pass for an all `-inf` one).
fn row_max(row: &[f64]) -> f64 {
    if row.iter().any(|v| v.is_nan()) {
        f64::NAN
    } else {
        row.iter().cloned().fold(f64::NEG_INFINITY, f64::max)
    }
}

/// The softmax family row by row over contiguous rows of `cols` entries: with `m_i` the row's
/// maximum ([`row_max`]) and `s_i = sum_j exp(x_ij - m_i)`, `y_ij = entry(x_ij - m_i, s_i)`; a row
/// whose entries are all `-inf` is filled with `empty` instead.
fn shifted_rows(
    cols: usize,
    x: &[f64],
    y: &mut [f64],
    empty: f64,
    entry: impl Fn(f64, f64) -> f64,
) {
    if cols == 0 {
        return;
    }
    for (xr, yr) in x.chunks_exact(cols).zip(y.chunks_exact_mut(cols)) {
        let m = row_max(xr);
        if m == f64::NEG_INFINITY {
            yr.iter_mut().for_each(|v| *v = empty);
            continue;
        }
        let s: f64 = xr.iter().map(|v| (v - m).exp()).sum();
        for (yv, xv) in yr.iter_mut().zip(xr) {
            *yv = entry(xv - m, s);
        }
    }
}

/// The backward pass of the softmax family row by row from the output y: with `r_i =
/// reduce(y_i, dy_i)` over the row, `dx_ij = entry(y_ij, dy_ij, r_i)`.
fn rows_backward(
    cols: usize,
    y: &[f64],
    dy: &[f64],
    dx: &mut [f64],
    reduce: impl Fn(&[f64], &[f64]) -> f64,
    entry: impl Fn(f64, f64, f64) -> f64,
) {
    if cols == 0 {
        return;
    }
    for ((yr, dyr), dxr) in y
        .chunks_exact(cols)
        .zip(dy.chunks_exact(cols))
        .zip(dx.chunks_exact_mut(cols))
    {
        let r = reduce(yr, dyr);
        for ((d, &yv), &dyv) in dxr.iter_mut().zip(yr).zip(dyr) {
            *d = entry(yv, dyv, r);
        }
    }
}

/// Row softmax over contiguous rows of `cols` entries: `y_ij = exp(x_ij - m_i) / sum_j exp(..)`.
/// A row whose entries are all `-inf` yields all zeros (it attends to nothing); a row holding a NaN
/// or `+inf` yields all NaN.
pub fn softmax_rows(cols: usize, x: &[f64], y: &mut [f64]) {
    shifted_rows(cols, x, y, 0.0, |shifted, s| shifted.exp() / s);
}

/// Softmax backward: `dx = y * (dy - <dy, y>)` row by row.
pub fn softmax_rows_backward(cols: usize, y: &[f64], dy: &[f64], dx: &mut [f64]) {
    rows_backward(
        cols,
        y,
        dy,
        dx,
        |yr, dyr| yr.iter().zip(dyr).map(|(a, b)| a * b).sum(),
        |yv, dyv, inner| yv * (dyv - inner),
    );
}

/// Row log-softmax: `y_ij = x_ij - m_i - log sum_j exp(x_ij - m_i)`. An all `-inf` row yields
/// all `-inf`.
pub fn log_softmax_rows(cols: usize, x: &[f64], y: &mut [f64]) {
    shifted_rows(cols, x, y, f64::NEG_INFINITY, |shifted, s| shifted - s.ln());
}

/// Log-softmax backward from its output y: `dx = dy - exp(y) * sum_j dy_j`.
pub fn log_softmax_rows_backward(cols: usize, y: &[f64], dy: &[f64], dx: &mut [f64]) {
    rows_backward(
        cols,
        y,
        dy,
        dx,
        |_, dyr| dyr.iter().sum(),
        |yv, dyv, s| dyv - yv.exp() * s,
    );
}

/// `log(1 + e^x)`, computed as `max(x, 0) + log1p(e^-|x|)`.
pub fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// Logistic loss of a margin `m = y f`: `log(1 + e^-m)`.
pub fn logistic_loss(margin: f64) -> f64 {
    softplus(-margin)
}

/// `d/dm log(1 + e^-m) = -1 / (1 + e^m)`.
pub fn logistic_loss_derivative(margin: f64) -> f64 {
    if margin >= 0.0 {
        let e = (-margin).exp();
        -e / (1.0 + e)
    } else {
        -1.0 / (1.0 + margin.exp())
    }
}

/// Layer norm over contiguous rows of `cols`: `y = (x - mean) * rstd * gamma + beta` with
/// `rstd = 1 / sqrt(var + eps)` (biased variance). Also returns per-row mean and rstd.
#[allow(clippy::too_many_arguments)]
pub fn layer_norm(
    cols: usize,
    eps: f64,
    x: &[f64],
    gamma: &[f64],
    beta: &[f64],
    y: &mut [f64],
    mean: &mut [f64],
    rstd: &mut [f64],
) {
    if cols == 0 {
        return;
    }
    for (r, (xr, yr)) in x
        .chunks_exact(cols)
        .zip(y.chunks_exact_mut(cols))
        .enumerate()
    {
        let mu = xr.iter().sum::<f64>() / cols as f64;
        let var = xr.iter().map(|v| (v - mu) * (v - mu)).sum::<f64>() / cols as f64;
        let rs = 1.0 / (var + eps).sqrt();
        for j in 0..cols {
            yr[j] = (xr[j] - mu) * rs * gamma[j] + beta[j];
        }
        mean[r] = mu;
        rstd[r] = rs;
    }
}

/// Layer norm backward. With `xhat = (x - mean) rstd` and `g = dy * gamma`:
/// `dx = rstd (g - mean_j(g) - xhat mean_j(g xhat))`, `dgamma = sum_rows dy xhat`,
/// `dbeta = sum_rows dy`. dgamma and dbeta are overwritten.
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_backward(
    cols: usize,
    x: &[f64],
    gamma: &[f64],
    mean: &[f64],
    rstd: &[f64],
    dy: &[f64],
    dx: &mut [f64],
    dgamma: &mut [f64],
    dbeta: &mut [f64],
) {
    dgamma[..cols].iter_mut().for_each(|v| *v = 0.0);
    dbeta[..cols].iter_mut().for_each(|v| *v = 0.0);
    if cols == 0 {
        return;
    }
    let n = cols as f64;
    for (r, ((xr, dyr), dxr)) in x
        .chunks_exact(cols)
        .zip(dy.chunks_exact(cols))
        .zip(dx.chunks_exact_mut(cols))
        .enumerate()
    {
        let xhat: Vec<f64> = xr.iter().map(|v| (v - mean[r]) * rstd[r]).collect();
        let g: Vec<f64> = dyr.iter().zip(gamma).map(|(d, w)| d * w).collect();
        let mg = g.iter().sum::<f64>() / n;
        let mgx = g.iter().zip(&xhat).map(|(a, b)| a * b).sum::<f64>() / n;
        for j in 0..cols {
            dxr[j] = rstd[r] * (g[j] - mg - xhat[j] * mgx);
            dgamma[j] += dyr[j] * xhat[j];
            dbeta[j] += dyr[j];
        }
    }
}

/// The error function, by its Maclaurin series for |x| < 2 and its continued fraction beyond:
/// accurate to about 1e-15, independent of the vector approximations the kernels use.
/// (The series alternates with terms up to ~1e3 near |x| = 3, which cost 2e-14 of accuracy
/// there, so it stops at 2 where the continued fraction already converges in 60 terms.)
pub fn erf(x: f64) -> f64 {
    let ax = x.abs();
    let r = if ax < 2.0 {
        // erf(x) = 2/sqrt(pi) sum_n (-1)^n x^(2n+1) / (n! (2n+1))
        let mut term = ax;
        let mut s = ax;
        let x2 = ax * ax;
        let mut n = 0.0;
        while term.abs() > 1e-17 * s.abs() {
            n += 1.0;
            term *= -x2 / n;
            s += term / (2.0 * n + 1.0);
        }
        s * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        // erfc(x) = exp(-x^2)/sqrt(pi) * 1/(x + 1/2/(x + 1/(x + 3/2/(x + ...)))) (Lentz-free,
        // evaluated bottom-up with enough terms for x >= 2)
        let mut f = 0.0;
        for k in (1..60).rev() {
            f = (k as f64 / 2.0) / (ax + f);
        }
        1.0 - (-ax * ax).exp() / std::f64::consts::PI.sqrt() / (ax + f)
    };
    if x < 0.0 {
        -r
    } else {
        r
    }
}

/// GELU, erf form: `gelu(x) = x Phi(x) = x/2 (1 + erf(x / sqrt 2))`.
pub fn gelu(x: &[f64], y: &mut [f64]) {
    for (yv, &xv) in y.iter_mut().zip(x) {
        *yv = 0.5 * xv * (1.0 + erf(xv / std::f64::consts::SQRT_2));
    }
}

/// GELU backward: `dx = dy (Phi(x) + x phi(x))` with phi the standard normal density.
pub fn gelu_backward(x: &[f64], dy: &[f64], dx: &mut [f64]) {
    for ((d, &xv), &g) in dx.iter_mut().zip(x).zip(dy) {
        let cdf = 0.5 * (1.0 + erf(xv / std::f64::consts::SQRT_2));
        let pdf = (-0.5 * xv * xv).exp() / (2.0 * std::f64::consts::PI).sqrt();
        *d = g * (cdf + xv * pdf);
    }
}

/// Multi-head self-attention forward (layout and math in [`crate::attention`]): for each sample
/// `b` and head `h`, `P = softmax_rows(scale Q K^T + M_b)` into `probs` `[B, H, S, S]` and
/// `C = P V` into `context` `[B, S, d]`, with `M_b` `-inf` on the keys where `real_keys` is false.
pub fn attention_forward(
    shape: crate::attention::AttentionShape,
    scale: f64,
    qkv: &[f64],
    real_keys: Option<&[bool]>,
    probs: &mut [f64],
    context: &mut [f64],
) {
    let (seq, dh) = (shape.seq, shape.head_dim);
    let at = |b: usize, i: usize, part: usize, h: usize, t: usize| {
        qkv[token_index(shape, 3, (b, i), part, (h, t))]
    };
    let mut scores = vec![0.0; seq * seq];
    for b in 0..shape.batch {
        for h in 0..shape.heads {
            for i in 0..seq {
                for j in 0..seq {
                    let real = real_keys.is_none_or(|r| r[b * seq + j]);
                    scores[i * seq + j] = if real {
                        scale
                            * (0..dh)
                                .map(|t| at(b, i, 0, h, t) * at(b, j, 1, h, t))
                                .sum::<f64>()
                    } else {
                        f64::NEG_INFINITY
                    };
                }
            }
            let p = &mut probs[(b * shape.heads + h) * seq * seq..][..seq * seq];
            softmax_rows(seq, &scores, p);
            attention_context(shape, b, h, qkv, p, Terms::Signed, context);
        }
    }
}

/// Where a `[B, S, parts d]` tensor holds entry `t` of head `h` of part `part` of token `i` of
/// sample `b`: `qkv` has three parts per token (`[Q | K | V]`, `part` 0, 1, 2), `context` and
/// `dcontext` one; within a part, head `h` spans columns `h dh..(h + 1) dh`.
fn token_index(
    shape: crate::attention::AttentionShape,
    parts: usize,
    (b, i): (usize, usize),
    part: usize,
    (h, t): (usize, usize),
) -> usize {
    let d = shape.heads * shape.head_dim;
    (b * shape.seq + i) * parts * d + part * d + h * shape.head_dim + t
}

/// Which sum the reference attention computes: the value itself, or the sum of the absolute
/// values of its terms, with each difference counted as a sum. A length-n reduction in floating
/// point errs by at most about `n eps / 2` of its absolute-term sum, so the second is the scale
/// a kernel's rounding error is measured against; the value alone can cancel far below it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Terms {
    /// The value itself, terms keeping their signs.
    Signed,
    /// The sum of the terms' absolute values: the scale a rounding error is measured against.
    Absolute,
}

impl Terms {
    fn of(self, x: f64) -> f64 {
        match self {
            Terms::Signed => x,
            Terms::Absolute => x.abs(),
        }
    }

    fn minus(self, a: f64, b: f64) -> f64 {
        match self {
            Terms::Signed => a - b,
            Terms::Absolute => a + b,
        }
    }
}

/// `C = P V` for sample `b`, head `h`, from that head's probabilities `p` (`[S, S]`).
fn attention_context(
    shape: crate::attention::AttentionShape,
    b: usize,
    h: usize,
    qkv: &[f64],
    p: &[f64],
    terms: Terms,
    context: &mut [f64],
) {
    let (seq, dh) = (shape.seq, shape.head_dim);
    for i in 0..seq {
        for t in 0..dh {
            context[token_index(shape, 1, (b, i), 0, (h, t))] = (0..seq)
                .map(|j| p[i * seq + j] * terms.of(qkv[token_index(shape, 3, (b, j), 2, (h, t))]))
                .sum();
        }
    }
}

/// The rounding scale of [`attention_forward`]'s `context` (see [`Terms`]): `sum_j P_ij |V_j|`
/// from the reference probabilities `probs`.
pub fn attention_context_magnitude(
    shape: crate::attention::AttentionShape,
    qkv: &[f64],
    probs: &[f64],
    context: &mut [f64],
) {
    let seq = shape.seq;
    for b in 0..shape.batch {
        for h in 0..shape.heads {
            let p = &probs[(b * shape.heads + h) * seq * seq..][..seq * seq];
            attention_context(shape, b, h, qkv, p, Terms::Absolute, context);
        }
    }
}

/// Multi-head self-attention backward (math in [`crate::attention`]): from `qkv`, the forward's
/// `probs` and `dcontext`, `dqkv <- [dQ | dK | dV] + beta dqkv` (`beta == 0` never reads it).
pub fn attention_backward(
    shape: crate::attention::AttentionShape,
    scale: f64,
    qkv: &[f64],
    probs: &[f64],
    dcontext: &[f64],
    beta: f64,
    dqkv: &mut [f64],
) {
    attention_backward_terms(
        shape,
        scale,
        qkv,
        probs,
        dcontext,
        beta,
        Terms::Signed,
        dqkv,
    );
}

/// [`attention_backward`] computing the sums `terms` asks for: with [`Terms::Absolute`], the
/// rounding scale of each `dqkv` entry, `dP - <P, dP>` counted as `|dP| + <P, |dP|>` and
/// `beta dqkv` as `|beta dqkv|`.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward_terms(
    shape: crate::attention::AttentionShape,
    scale: f64,
    qkv: &[f64],
    probs: &[f64],
    dcontext: &[f64],
    beta: f64,
    terms: Terms,
    dqkv: &mut [f64],
) {
    let crate::attention::AttentionShape {
        batch,
        seq,
        heads,
        head_dim: dh,
    } = shape;
    let mut dz = vec![0.0; seq * seq];
    for b in 0..batch {
        for h in 0..heads {
            let p = &probs[(b * heads + h) * seq * seq..][..seq * seq];
            let g =
                |i: usize, t: usize| terms.of(dcontext[token_index(shape, 1, (b, i), 0, (h, t))]);
            let x = |b: usize, i: usize, part: usize, h: usize, t: usize| {
                terms.of(qkv[token_index(shape, 3, (b, i), part, (h, t))])
            };
            for i in 0..seq {
                let dp: Vec<f64> = (0..seq)
                    .map(|j| (0..dh).map(|t| g(i, t) * x(b, j, 2, h, t)).sum())
                    .collect();
                let inner: f64 = (0..seq).map(|j| p[i * seq + j] * dp[j]).sum();
                for j in 0..seq {
                    dz[i * seq + j] = terms.of(scale) * p[i * seq + j] * terms.minus(dp[j], inner);
                }
            }
            for i in 0..seq {
                for t in 0..dh {
                    let dq: f64 = (0..seq).map(|j| dz[i * seq + j] * x(b, j, 1, h, t)).sum();
                    let dk: f64 = (0..seq).map(|j| dz[j * seq + i] * x(b, j, 0, h, t)).sum();
                    let dv: f64 = (0..seq).map(|j| p[j * seq + i] * g(j, t)).sum();
                    for (part, value) in [(0, dq), (1, dk), (2, dv)] {
                        let o = &mut dqkv[token_index(shape, 3, (b, i), part, (h, t))];
                        *o = if beta == 0.0 {
                            value
                        } else {
                            value + terms.of(beta * *o)
                        };
                    }
                }
            }
        }
    }
}
