//! Row softmax, log-softmax, their backward passes, and the stable softplus / logistic loss.
//!
//! The row kernels are fused single-row passes: (1) the row max, (2) `e = exp(x - max)` stored
//! into the output while summing, (3) normalisation, so each row is read twice and written
//! twice while it sits in L1. They run on `wide`'s 256-bit vectors, except f32 rows longer than
//! `ACROSS_MAX_COLS` (16) on CPUs whose GEMM kernels use AVX-512: those run the same passes on
//! 512-bit vectors (`attention_avx512::softmax_rows`, with the fused attention's exp), twice the
//! lanes and a cheaper exp (`vscalefps` for `2^r`, no range blend); that exp is most of a row's
//! work once the row is in L1. Their sums have 16 lanes instead of 8, so such rows round
//! differently from the 256-bit kernel (within the tolerance of the f64 reference tests). Short
//! rows (at most 16 columns) are vectorised across rows instead (rows of 8 `f32`, the
//! paper's T = 8, are one vector each). Rows are independent, so threads take fixed row blocks
//! and results are bit-identical for any pool size.
//!
//! Long rows of a call larger than the last-level cache (`crate::stream`) keep each row's
//! exponentials in a scratch row instead of the output, fetch the next row while computing
//! them, and write the output once with streaming stores: the output is never read, so its
//! lines are not fetched before they are written. The backward passes of such calls write `dx`
//! with streaming stores. The same values either way.
//!
//! Special values, per row (other rows are never affected):
//! - all entries `-inf`: softmax gives all zeros (the row attends to nothing), log-softmax all
//!   `-inf`; `-inf` entries in an otherwise finite row get probability exactly 0;
//! - any `NaN`, or any `+inf` (then `inf - inf` is undefined): the whole row is `NaN`, as in
//!   the f64 reference;
//! - entries more than about 87 (f32) / 708 (f64) below the row max get probability exactly 0
//!   (the true value is below 1e-38 / 1e-307 of the max entry's).

use crate::attention::{AttentionVector, Wide};
use crate::simd::{
    cast, cast_mut, dispatch, f32_on_512_bit_vectors, map_lanes, precision, prefetch, Precision,
    Simd, SimdVector,
};
use crate::stream::{first_aligned, output_stores, OutputStores};
use crate::threading;
use crate::Float;

/// Row softmax over contiguous rows of `cols` entries (`x.len() == y.len()`, a multiple of
/// `cols`): `y_ij = exp(x_ij - max_j x_ij) / sum_j exp(x_ij - max_j x_ij)`.
/// A row whose entries are all `-inf` yields all zeros (it attends to nothing) and never affects
/// other rows.
pub fn softmax_rows<T: Float>(cols: usize, x: &[T], y: &mut [T]) {
    rows_forward(cols, x, y, false)
}

/// Row log-softmax: `y_ij = x_ij - logsumexp_j x_ij`. An all `-inf` row yields all `-inf`.
pub fn log_softmax_rows<T: Float>(cols: usize, x: &[T], y: &mut [T]) {
    rows_forward(cols, x, y, true)
}

/// Whether there are rows to compute (none when `cols == 0`); panics unless `len` entries are
/// whole rows of `cols`.
fn whole_rows(what: &str, len: usize, cols: usize) -> bool {
    if cols == 0 {
        return false;
    }
    assert_eq!(len % cols, 0, "{what}: length is not a multiple of cols");
    true
}

fn rows_forward<T: Float>(cols: usize, x: &[T], y: &mut [T], log: bool) {
    assert_eq!(x.len(), y.len(), "softmax: x and y lengths differ");
    if !whole_rows("softmax", x.len(), cols) {
        return;
    }
    // read on the calling thread (see `f32_on_512_bit_vectors`), used by every block
    let long_f32_rows_512 =
        cols > ACROSS_MAX_COLS && precision::<T>() == Precision::F32 && f32_on_512_bit_vectors();
    let stores = output_stores(2 * std::mem::size_of_val(x));
    dispatch!(T, S => {
        let (x, y): (&[S], &mut [S]) = (cast(x), cast_mut(y));
        threading::for_row_blocks(cols, x.len(), y, |row0, yb| {
            let xb = &x[row0 * cols..row0 * cols + yb.len()];
            if long_f32_rows_512 {
                rows_on_512_bit_vectors(cols, cast(xb), cast_mut(yb), log, stores);
            } else if !log && cols <= ACROSS_MAX_COLS {
                softmax_rows_across::<S>(cols, xb, yb);
            } else {
                softmax_block::<Wide<S>>(cols, xb, yb, log, stores);
            }
        })
    })
}

/// Softmax or log-softmax of whole f32 rows on 512-bit vectors; called only when
/// `f32_on_512_bit_vectors` holds, which it never does off x86-64.
fn rows_on_512_bit_vectors(cols: usize, x: &[f32], y: &mut [f32], log: bool, stores: OutputStores) {
    #[cfg(target_arch = "x86_64")]
    crate::attention_avx512::softmax_rows(cols, x, y, log, stores);
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (cols, x, y, log, stores);
        unreachable!("512-bit vectors exist on x86-64 only");
    }
}

/// Rows up to this many columns are vectorised across rows: a vector holds one column of
/// `LANES` consecutive rows, so the max, the exp and the sum are plain lane-wise operations
/// with no horizontal reductions (the 8000 x 8 attention shape spends most of its time there
/// otherwise).
const ACROSS_MAX_COLS: usize = 16;

/// Softmax of short rows (`cols <= ACROSS_MAX_COLS`), `LANES` rows at a time, transposed
/// through registers; the last `rows % LANES` rows and any block holding a special row (all
/// `-inf`, NaN, `+inf`) go through [`softmax_row`], which gives the same values up to the
/// order of the sum.
fn softmax_rows_across<S: Simd>(cols: usize, x: &[S], y: &mut [S]) {
    let l = S::V::LANES;
    let block = l * cols;
    let mut xblocks = x.chunks_exact(block);
    let mut yblocks = y.chunks_exact_mut(block);
    let mut column = [S::V::splat(S::ZERO); ACROSS_MAX_COLS];
    let mut lanes = [S::ZERO; 8];
    for (xb, yb) in (&mut xblocks).zip(&mut yblocks) {
        // Transpose in: column[j] lane k = x[row k, col j].
        if !(cols == l && S::transpose_in(xb, &mut column)) {
            for (j, cv) in column[..cols].iter_mut().enumerate() {
                for (k, v) in lanes[..l].iter_mut().enumerate() {
                    *v = xb[k * cols + j];
                }
                *cv = S::V::load(&lanes[..l]);
            }
        }
        let mut m = column[0];
        for &cv in &column[1..cols] {
            m = S::vmax(m, cv);
        }
        // Every row max finite: no all -inf, +inf or NaN-max row. A NaN elsewhere shows up in
        // the sum of the exponents.
        let finite = S::vlt(S::vabs(m), S::V::splat(S::INFINITY));
        let mut sum = S::V::splat(S::ZERO);
        let mut dsum = S::V::splat(S::ZERO);
        for cv in &mut column[..cols] {
            let d = *cv - m;
            dsum += d;
            *cv = S::wide_exp(d);
            sum += *cv;
        }
        if !S::all(finite) || S::V::hsum(dsum).is_nan() {
            for (xr, yr) in xb.chunks_exact(cols).zip(yb.chunks_exact_mut(cols)) {
                softmax_row::<Wide<S>>(xr, yr, false, None);
            }
            continue;
        }
        let inv = S::V::splat(S::ONE) / sum;
        for cv in &mut column[..cols] {
            *cv *= inv;
        }
        // Transpose out.
        if !(cols == l && S::transpose_out(&column, yb)) {
            for (j, &cv) in column[..cols].iter().enumerate() {
                S::V::store(cv, &mut lanes[..l]);
                for (k, &v) in lanes[..l].iter().enumerate() {
                    yb[k * cols + j] = v;
                }
            }
        }
    }
    for (xr, yr) in xblocks
        .remainder()
        .chunks_exact(cols)
        .zip(yblocks.into_remainder().chunks_exact_mut(cols))
    {
        softmax_row::<Wide<S>>(xr, yr, false, None);
    }
}

/// The rows of a block (`cols` entries each), one [`softmax_row`] each. With streaming `stores`
/// (`crate::stream`), the block's exponentials go to one scratch row, each output row is written
/// once by streaming stores, and the block ends with their fence.
#[inline(always)]
pub(crate) fn softmax_block<V: AttentionVector>(
    cols: usize,
    x: &[V::Scalar],
    y: &mut [V::Scalar],
    log: bool,
    stores: OutputStores,
) {
    let rows = x.chunks_exact(cols).zip(y.chunks_exact_mut(cols));
    match stores {
        OutputStores::Cached => rows.for_each(|(xr, yr)| softmax_row::<V>(xr, yr, log, None)),
        OutputStores::Streaming => {
            let mut exps = vec![<V::Scalar as Float>::ZERO; cols];
            for (i, (xr, yr)) in rows.enumerate() {
                let next_row = x.get((i + 1) * cols..(i + 2) * cols).unwrap_or(&[]);
                let streaming = Streaming {
                    exps: &mut exps,
                    next_row,
                };
                softmax_row::<V>(xr, yr, log, Some(streaming));
            }
            V::stream_fence();
        }
    }
}

/// How [`softmax_row`] writes a row that goes out to memory: a scratch row for the
/// exponentials (at least as long as the row) and the next row of the input, to fetch
/// meanwhile (empty after the last).
pub(crate) struct Streaming<'a, S> {
    exps: &'a mut [S],
    next_row: &'a [S],
}

/// One row of softmax (`log == false`) or log-softmax on the vectors `V`: `wide`'s
/// ([`Wide`]) everywhere, 512-bit ones for long f32 rows on AVX-512 CPUs (through
/// `attention_avx512::softmax_rows`, which compiles this function with AVX-512 enabled).
///
/// With `streaming`, pass 2 keeps the exponentials in its scratch row instead of in `y` and
/// fetches the next row meanwhile, and pass 3 writes `y` with streaming stores
/// ([`SimdVector::store_streaming`]), so `y` is written once and never read; the caller fences
/// ([`SimdVector::stream_fence`]). The same values either way.
#[inline(always)]
pub(crate) fn softmax_row<V: AttentionVector>(
    x: &[V::Scalar],
    y: &mut [V::Scalar],
    log: bool,
    mut streaming: Option<Streaming<'_, V::Scalar>>,
) {
    let l = V::LANES;
    let neg_infinity = <V::Scalar as Float>::NEG_INFINITY;
    // Pass 1: the row max.
    let mut xc = x.chunks_exact(l);
    let mut m = neg_infinity;
    if let Some(first) = xc.next() {
        let mut mv = V::load(first);
        for c in &mut xc {
            mv = mv.max(V::load(c));
        }
        m = mv.hmax();
    }
    for &v in xc.remainder() {
        m = m.max(v);
    }
    if m == neg_infinity {
        // All -inf, or -inf and NaN (max skips NaN).
        let fill = if x.iter().any(|v| v.is_nan()) {
            <V::Scalar as Float>::from_f64(f64::NAN)
        } else if log {
            neg_infinity
        } else {
            <V::Scalar as Float>::ZERO
        };
        y.iter_mut().for_each(|v| *v = fill);
        return;
    }
    // Pass 2: e = exp(x - m) into y (or `exps`), summed.
    let mv = V::splat(m);
    let (s, bad) = match streaming {
        None => exponentials::<V>(x, m, y, &[]),
        Some(ref mut to) => exponentials::<V>(x, m, &mut to.exps[..x.len()], to.next_row),
    };
    if bad {
        y.iter_mut()
            .for_each(|v| *v = <V::Scalar as Float>::from_f64(f64::NAN));
        return;
    }
    // Pass 3: normalise.
    if log {
        // (x - m) - log s, not x - (m + log s): with a huge max (1e30) the latter loses log s.
        let log_sum = s.ln();
        let log_sum_v = V::splat(log_sum);
        let vector = |xv: V| (xv - mv) - log_sum_v;
        let scalar = |xv: V::Scalar| (xv - m) - log_sum;
        if streaming.is_some() {
            return stream_row(x, y, vector, scalar);
        }
        let mut yc = y.chunks_exact_mut(l);
        let mut xc = x.chunks_exact(l);
        for (yv, xv) in (&mut yc).zip(&mut xc) {
            vector(V::load(xv)).store(yv);
        }
        for (yv, &xv) in yc.into_remainder().iter_mut().zip(xc.remainder()) {
            *yv = scalar(xv);
        }
    } else {
        let inv = <V::Scalar as Float>::ONE / s;
        let inv_v = V::splat(inv);
        let vector = |ev: V| inv_v * ev;
        let scalar = |e: V::Scalar| e * inv;
        if let Some(to) = streaming {
            return stream_row(&to.exps[..x.len()], y, vector, scalar);
        }
        let mut yc = y.chunks_exact_mut(l);
        for yv in &mut yc {
            vector(V::load(yv)).store(yv);
        }
        for v in yc.into_remainder() {
            *v = scalar(*v);
        }
    }
}

/// Pass 2 of [`softmax_row`]: `e = exp(x - m)` into `e` (as long as `x`), the sum of `e`
/// with whether the row holds a NaN or `+inf`: `dsum` sums the exponents `d = x - m <= 0`,
/// which is NaN exactly then (the vector exp maps those lanes to 0). Fetches `next_row`
/// (empty: nothing) into cache meanwhile, a vector's width per vector of `x`.
#[inline(always)]
fn exponentials<V: AttentionVector>(
    x: &[V::Scalar],
    m: V::Scalar,
    e: &mut [V::Scalar],
    next_row: &[V::Scalar],
) -> (V::Scalar, bool) {
    let l = V::LANES;
    let mv = V::splat(m);
    let zero = V::splat(<V::Scalar as Float>::ZERO);
    let (mut sv, mut dsum) = (zero, zero);
    let mut ec = e.chunks_exact_mut(l);
    let mut xc = x.chunks_exact(l);
    for (j, (ev, xv)) in (&mut ec).zip(&mut xc).enumerate() {
        if !next_row.is_empty() {
            prefetch(next_row, j * l);
        }
        let d = V::load(xv) - mv;
        dsum = dsum + d;
        let exp = d.exp_nonpositive();
        sv = sv + exp;
        exp.store(ev);
    }
    let mut s = sv.hsum();
    let mut bad = dsum.hsum().is_nan();
    for (ev, &xv) in ec.into_remainder().iter_mut().zip(xc.remainder()) {
        let d = xv - m;
        bad |= d.is_nan();
        *ev = d.exp();
        s += *ev;
    }
    (s, bad)
}

/// `y = f(src)` elementwise (`vector` on whole vectors, `scalar` on the others, the same
/// values lane by lane), the whole vectors from `y`'s first vector-aligned element on written
/// with [`SimdVector::store_streaming`]. The caller fences.
#[inline(always)]
fn stream_row<V: AttentionVector>(
    src: &[V::Scalar],
    y: &mut [V::Scalar],
    vector: impl Fn(V) -> V,
    scalar: impl Fn(V::Scalar) -> V::Scalar,
) {
    let l = V::LANES;
    let head = first_aligned(y, l);
    let (y_head, y_body) = y.split_at_mut(head);
    let (src_head, src_body) = src.split_at(head);
    for (yv, &v) in y_head.iter_mut().zip(src_head) {
        *yv = scalar(v);
    }
    let mut yc = y_body.chunks_exact_mut(l);
    let mut sc = src_body.chunks_exact(l);
    for (yv, sv) in (&mut yc).zip(&mut sc) {
        vector(V::load(sv)).store_streaming(yv);
    }
    for (yv, &v) in yc.into_remainder().iter_mut().zip(sc.remainder()) {
        *yv = scalar(v);
    }
}

/// Softmax backward, row by row: `dx = y * (dy - <dy, y>)`.
pub fn softmax_rows_backward<T: Float>(cols: usize, y: &[T], dy: &[T], dx: &mut [T]) {
    rows_backward(cols, y, dy, dx, false)
}

/// Log-softmax backward from its output `y`: `dx = dy - exp(y) sum_j dy_j`.
pub fn log_softmax_rows_backward<T: Float>(cols: usize, y: &[T], dy: &[T], dx: &mut [T]) {
    rows_backward(cols, y, dy, dx, true)
}

fn rows_backward<T: Float>(cols: usize, y: &[T], dy: &[T], dx: &mut [T], log: bool) {
    assert!(
        y.len() == dy.len() && y.len() == dx.len(),
        "softmax backward: lengths differ"
    );
    if !whole_rows("softmax backward", y.len(), cols) {
        return;
    }
    let stores = output_stores(3 * std::mem::size_of_val(y));
    dispatch!(T, S => {
        let (y, dy, dx): (&[S], &[S], &mut [S]) = (cast(y), cast(dy), cast_mut(dx));
        threading::for_row_blocks(cols, y.len(), dx, |row0, dxb| {
            let range = row0 * cols..row0 * cols + dxb.len();
            let (yb, dyb) = (&y[range.clone()], &dy[range]);
            for ((yr, dyr), dxr) in yb
                .chunks_exact(cols)
                .zip(dyb.chunks_exact(cols))
                .zip(dxb.chunks_exact_mut(cols))
            {
                if log {
                    log_softmax_backward_row::<S>(yr, dyr, dxr, stores);
                } else {
                    softmax_backward_row::<S>(yr, dyr, dxr, stores);
                }
            }
            if stores == OutputStores::Streaming {
                <S as Simd>::V::stream_fence();
            }
        })
    })
}

/// One row of the softmax backward, `dx` written as `stores` says (the caller fences).
#[inline(always)]
fn softmax_backward_row<S: Simd>(y: &[S], dy: &[S], dx: &mut [S], stores: OutputStores) {
    let inner = crate::level1::dot_simd(y, dy);
    let iv = S::V::splat(inner);
    map_lanes::<S, 2>(
        dx,
        [y, dy],
        |[y, g]| y * (g - iv),
        |[y, g]| y * (g - inner),
        stores,
    );
}

/// One row of the log-softmax backward, `dx` written as `stores` says (the caller fences).
#[inline(always)]
fn log_softmax_backward_row<S: Simd>(y: &[S], dy: &[S], dx: &mut [S], stores: OutputStores) {
    let s = crate::level1::sum_simd(dy);
    let sv = S::V::splat(s);
    // dy - exp(y) s
    map_lanes::<S, 2>(
        dx,
        [y, dy],
        |[y, g]| g - S::vexp(y) * sv,
        |[y, g]| g - y.exp() * s,
        stores,
    );
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
