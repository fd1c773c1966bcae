//! Level-1 kernels: dot, axpy, scale, sums.
//!
//! Written for memory bandwidth with `wide` vectors (see [`crate::simd`]): reductions keep four
//! vector accumulators in flight to hide FMA latency, and combine them in a fixed order
//! (`(acc0 + acc1) + (acc2 + acc3)`, lanes pairwise, then the scalar tail in index order), so a
//! result depends only on the input, never on threads. `dot` and `sum` stay on the calling
//! thread (a single pass over memory; on the target machines one core nearly saturates it).

use crate::simd::{cast, cast_mut, dispatch, same, Simd, SimdVector};
use crate::threading;
use crate::Float;

/// `sum_i x_i y_i`.
pub fn dot<T: Float>(x: &[T], y: &[T]) -> T {
    assert_eq!(x.len(), y.len());
    dispatch!(T, S => same(dot_simd::<S>(cast(x), cast(y))))
}

/// `sum_i x_i`.
pub fn sum<T: Float>(x: &[T]) -> T {
    dispatch!(T, S => same(sum_simd::<S>(cast(x))))
}

/// `y <- alpha x + y`.
pub fn axpy<T: Float>(alpha: T, x: &[T], y: &mut [T]) {
    assert_eq!(x.len(), y.len());
    dispatch!(T, S => axpy_simd::<S>(same(alpha), cast(x), cast_mut(y)))
}

/// `y <- alpha x + y` (the same values as [`axpy`]); returns whether every updated `y_i` is
/// finite. The check rides along in the same pass (one multiply-add per vector on data already
/// in registers), so a trainer can test its parameters after every update at no memory cost.
pub fn axpy_finite<T: Float>(alpha: T, x: &[T], y: &mut [T]) -> bool {
    assert_eq!(x.len(), y.len());
    dispatch!(T, S => axpy_finite_simd::<S>(same(alpha), cast(x), cast_mut(y)))
}

/// `x <- alpha x`.
pub fn scale<T: Float>(alpha: T, x: &mut [T]) {
    dispatch!(T, S => scale_simd::<S>(same(alpha), cast_mut(x)))
}

/// `out_i <- sum_j X_ij`, X rows x cols with leading dimension ldx (each row summed as [`sum`]).
pub fn row_sums<T: Float>(rows: usize, cols: usize, x: &[T], ldx: usize, out: &mut [T]) {
    let out = &mut out[..rows];
    if rows == 0 {
        return;
    }
    assert!(cols == 0 || (ldx >= cols && x.len() >= (rows - 1) * ldx + cols));
    let block = |first_row: usize, out: &mut [T]| {
        for (r, o) in out.iter_mut().enumerate() {
            let start = (first_row + r) * ldx;
            *o = if cols == 0 {
                T::ZERO
            } else {
                sum(&x[start..start + cols])
            };
        }
    };
    let rb = threading::rows_per_chunk(cols);
    threading::for_parts(out, threading::parallel(rows * cols), (rb, rb), block);
}

/// `out_j <- sum_i X_ij`, X rows x cols with leading dimension ldx. Each column is summed from
/// row 0 down in order (`((0 + X_0j) + X_1j) + ...`); threads take fixed column blocks.
pub fn col_sums<T: Float>(rows: usize, cols: usize, x: &[T], ldx: usize, out: &mut [T]) {
    let out = &mut out[..cols];
    if cols == 0 {
        return;
    }
    assert!(rows == 0 || (ldx >= cols && x.len() >= (rows - 1) * ldx + cols));
    dispatch!(T, S => {
        let x: &[S] = cast(x);
        let out: &mut [S] = cast_mut(out);
        let cb = threading::cols_per_chunk(rows);
        threading::for_parts(out, threading::parallel(rows * cols), (cb, cb), |first_col, o| {
            col_sums_block::<S>(rows, x, ldx, first_col, o)
        });
    })
}

/// Column sums of the block of columns `first_col..first_col + out.len()`.
fn col_sums_block<S: Simd>(rows: usize, x: &[S], ldx: usize, first_col: usize, out: &mut [S]) {
    out.iter_mut().for_each(|v| *v = S::ZERO);
    let w = out.len();
    for i in 0..rows {
        let row = &x[i * ldx + first_col..i * ldx + first_col + w];
        let mut oc = out.chunks_exact_mut(S::V::LANES);
        let mut rc = row.chunks_exact(S::V::LANES);
        for (o, r) in (&mut oc).zip(&mut rc) {
            S::V::store(S::V::load(o) + S::V::load(r), o);
        }
        for (o, &r) in oc.into_remainder().iter_mut().zip(rc.remainder()) {
            *o += r;
        }
    }
}

pub(crate) fn dot_simd<S: Simd>(x: &[S], y: &[S]) -> S {
    let l = S::V::LANES;
    let zero = S::V::splat(S::ZERO);
    let (mut a0, mut a1, mut a2, mut a3) = (zero, zero, zero, zero);
    let mut xb = x.chunks_exact(4 * l);
    let mut yb = y.chunks_exact(4 * l);
    for (xs, ys) in (&mut xb).zip(&mut yb) {
        a0 = S::V::mul_add(S::V::load(&xs[..l]), S::V::load(&ys[..l]), a0);
        a1 = S::V::mul_add(S::V::load(&xs[l..2 * l]), S::V::load(&ys[l..2 * l]), a1);
        a2 = S::V::mul_add(
            S::V::load(&xs[2 * l..3 * l]),
            S::V::load(&ys[2 * l..3 * l]),
            a2,
        );
        a3 = S::V::mul_add(S::V::load(&xs[3 * l..]), S::V::load(&ys[3 * l..]), a3);
    }
    let mut xv = xb.remainder().chunks_exact(l);
    let mut yv = yb.remainder().chunks_exact(l);
    for (xs, ys) in (&mut xv).zip(&mut yv) {
        a0 = S::V::mul_add(S::V::load(xs), S::V::load(ys), a0);
    }
    let mut s = S::V::hsum((a0 + a1) + (a2 + a3));
    for (&a, &b) in xv.remainder().iter().zip(yv.remainder()) {
        s += a * b;
    }
    s
}

pub(crate) fn sum_simd<S: Simd>(x: &[S]) -> S {
    let l = S::V::LANES;
    let zero = S::V::splat(S::ZERO);
    let (mut a0, mut a1, mut a2, mut a3) = (zero, zero, zero, zero);
    let mut xb = x.chunks_exact(4 * l);
    for xs in &mut xb {
        a0 += S::V::load(&xs[..l]);
        a1 += S::V::load(&xs[l..2 * l]);
        a2 += S::V::load(&xs[2 * l..3 * l]);
        a3 += S::V::load(&xs[3 * l..]);
    }
    let mut xv = xb.remainder().chunks_exact(l);
    for xs in &mut xv {
        a0 += S::V::load(xs);
    }
    let mut s = S::V::hsum((a0 + a1) + (a2 + a3));
    for &a in xv.remainder() {
        s += a;
    }
    s
}

pub(crate) fn axpy_simd<S: Simd>(alpha: S, x: &[S], y: &mut [S]) {
    let av = S::V::splat(alpha);
    let mut yc = y.chunks_exact_mut(S::V::LANES);
    let mut xc = x.chunks_exact(S::V::LANES);
    for (ys, xs) in (&mut yc).zip(&mut xc) {
        S::V::store(S::V::mul_add(av, S::V::load(xs), S::V::load(ys)), ys);
    }
    for (yv, &xv) in yc.into_remainder().iter_mut().zip(xc.remainder()) {
        *yv += alpha * xv;
    }
}

/// [`axpy_simd`] that also returns whether every updated element is finite: `v * 0` is 0 for a
/// finite `v` and NaN for an infinite or NaN one, so the accumulated sum stays 0 exactly when
/// every `v` is finite.
pub(crate) fn axpy_finite_simd<S: Simd>(alpha: S, x: &[S], y: &mut [S]) -> bool {
    let av = S::V::splat(alpha);
    let zero = S::V::splat(S::ZERO);
    let mut probe = zero;
    let mut yc = y.chunks_exact_mut(S::V::LANES);
    let mut xc = x.chunks_exact(S::V::LANES);
    for (ys, xs) in (&mut yc).zip(&mut xc) {
        let v = S::V::mul_add(av, S::V::load(xs), S::V::load(ys));
        S::V::store(v, ys);
        probe = S::V::mul_add(v, zero, probe);
    }
    let mut tail = S::ZERO;
    for (yv, &xv) in yc.into_remainder().iter_mut().zip(xc.remainder()) {
        *yv += alpha * xv;
        tail += *yv * S::ZERO;
    }
    (S::V::hsum(probe) + tail) == S::ZERO
}

pub(crate) fn scale_simd<S: Simd>(alpha: S, x: &mut [S]) {
    let av = S::V::splat(alpha);
    let mut xc = x.chunks_exact_mut(S::V::LANES);
    for xs in &mut xc {
        S::V::store(av * S::V::load(xs), xs);
    }
    for v in xc.into_remainder() {
        *v *= alpha;
    }
}
