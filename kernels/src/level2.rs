//! Level-2 kernels: GEMV and the rank-1 update GER.
//!
//! Both are bound by memory bandwidth (each element of A is used once), so the loops are shaped
//! to stream A exactly once at full speed:
//! - GEMV `No` (`y = A x`): four rows at a time share every load of `x`; each row keeps two
//!   vector accumulators (even and odd vectors of `x`), so eight FMA chains are in flight.
//! - GEMV `Yes` (`y = A^T x`): rows of A are streamed and axpy'd, four at a time, into an
//!   accumulator block of y columns that fits in L1 (32 KiB), so A is read in long contiguous
//!   runs and y never goes back to memory between rows.
//! - GER: one fused `a_i <- (alpha x_i) y + a_i` per row (y stays in cache).
//!
//! Every output element has one fixed arithmetic sequence whatever the grouping of rows or the
//! blocking of columns (a row processed alone uses the same per-row accumulation as in a group
//! of four), so the results are bit-identical for any thread count. Threads take fixed row
//! blocks (`No`, GER) or fixed column blocks (`Yes`), see [`crate::threading`].

use rayon::prelude::*;

use crate::simd::{cast, cast_mut, dispatch, same, Simd, SimdVector};
use crate::threading;
use crate::{Float, MatMut, MatRef, Transpose};

/// Rows that share each load of `x` in GEMV `No` / each accumulator pass in GEMV `Yes`.
const ROW_GROUP: usize = 4;

/// Bytes of the y accumulator block of GEMV `Yes` (about L1).
const YES_BLOCK_BYTES: usize = 32 * 1024;

/// Fewest columns of y per parallel task of the transposed GEMV (a multiple of 64: see
/// `threading::cols_per_chunk`).
const YES_MIN_TASK_COLS: usize = 1024;

/// `y <- alpha op(A) x + beta y`: x has `op(A).cols()` entries and y has `op(A).rows()`.
/// `beta == 0` never reads y.
///
/// # Panics
///
/// If x or y is shorter than that.
pub fn gemv<T: Float>(alpha: T, a: MatRef<'_, T>, x: &[T], beta: T, y: &mut [T]) {
    let x = &x[..a.cols()];
    let y = &mut y[..a.rows()];
    dispatch!(T, S => {
        let (a, x, y): (MatRef<'_, S>, &[S], &mut [S]) = (a.cast(), cast(x), cast_mut(y));
        let (alpha, beta): (S, S) = (same(alpha), same(beta));
        match a.trans() {
            Transpose::No => gemv_no::<S>(alpha, a, x, beta, y),
            Transpose::Yes => gemv_yes::<S>(alpha, a, x, beta, y),
        }
    })
}

/// `y_i <- alpha acc + beta y_i` (y not read when beta == 0).
#[inline(always)]
fn finish<S: Simd>(alpha: S, acc: S, beta: S, y: &mut S) {
    let old = if beta == S::ZERO { S::ZERO } else { beta * *y };
    *y = alpha * acc + old;
}

/// [`gemv`] with `a` used as stored.
fn gemv_no<S: Simd>(alpha: S, a: MatRef<'_, S>, x: &[S], beta: S, y: &mut [S]) {
    let (m, n, lda, a) = (a.stored_rows(), a.stored_cols(), a.ld(), a.data());
    let block = |row0: usize, y: &mut [S]| {
        let mut groups = y.chunks_exact_mut(ROW_GROUP);
        let mut r = row0;
        for yg in &mut groups {
            let acc = rows_dot::<S, ROW_GROUP>(a, lda, r, n, x);
            for (yi, &ai) in yg.iter_mut().zip(&acc) {
                finish(alpha, ai, beta, yi);
            }
            r += ROW_GROUP;
        }
        for yi in groups.into_remainder() {
            let [acc] = rows_dot::<S, 1>(a, lda, r, n, x);
            finish(alpha, acc, beta, yi);
            r += 1;
        }
    };
    let rb = threading::rows_per_chunk(n).div_ceil(ROW_GROUP) * ROW_GROUP;
    threading::for_parts(y, threading::parallel(m * n), (rb, rb), block);
}

/// Dot products of rows `row0..row0 + R` of A with x. Per row: accumulator 0 takes the even
/// vectors of each pair, accumulator 1 the odd ones, a last unpaired vector goes to
/// accumulator 0, then `hsum(acc0 + acc1)` and the scalar tail in index order.
#[inline(always)]
fn rows_dot<S: Simd, const R: usize>(
    a: &[S],
    lda: usize,
    row0: usize,
    n: usize,
    x: &[S],
) -> [S; R] {
    let l = S::V::LANES;
    let zero = S::V::splat(S::ZERO);
    let mut acc0 = [zero; R];
    let mut acc1 = [zero; R];
    let rows: [&[S]; R] = std::array::from_fn(|r| &a[(row0 + r) * lda..(row0 + r) * lda + n]);
    let pairs = n / (2 * l);
    for p in 0..pairs {
        let j = 2 * l * p;
        let x0 = S::V::load(&x[j..j + l]);
        let x1 = S::V::load(&x[j + l..j + 2 * l]);
        for r in 0..R {
            let row = &rows[r][j..j + 2 * l];
            acc0[r] = S::V::mul_add(S::V::load(&row[..l]), x0, acc0[r]);
            acc1[r] = S::V::mul_add(S::V::load(&row[l..]), x1, acc1[r]);
        }
    }
    let mut j = 2 * l * pairs;
    if j + l <= n {
        let x0 = S::V::load(&x[j..j + l]);
        for r in 0..R {
            acc0[r] = S::V::mul_add(S::V::load(&rows[r][j..j + l]), x0, acc0[r]);
        }
        j += l;
    }
    std::array::from_fn(|r| {
        let mut s = S::V::hsum(acc0[r] + acc1[r]);
        for (&av, &xv) in rows[r][j..].iter().zip(&x[j..]) {
            s += av * xv;
        }
        s
    })
}

/// [`gemv`] with `a` used transposed.
fn gemv_yes<S: Simd>(alpha: S, a: MatRef<'_, S>, x: &[S], beta: S, y: &mut [S]) {
    let (m, n, lda, a) = (a.stored_rows(), a.stored_cols(), a.ld(), a.data());
    // Column block of y accumulated in L1; a multiple of 64 so only the last block of the whole
    // matrix has a scalar tail.
    let jb = (YES_BLOCK_BYTES / std::mem::size_of::<S>() / 64).max(1) * 64;
    let block = |col0: usize, y: &mut [S]| {
        let mut acc = vec![S::ZERO; y.len().min(jb)];
        for (s, ys) in y.chunks_mut(jb).enumerate() {
            let c0 = col0 + s * jb;
            let acc = &mut acc[..ys.len()];
            acc.iter_mut().for_each(|v| *v = S::ZERO);
            let mut i = 0;
            while i + ROW_GROUP <= m {
                axpy_rows::<S, ROW_GROUP>(a, lda, i, c0, x, acc);
                i += ROW_GROUP;
            }
            while i < m {
                axpy_rows::<S, 1>(a, lda, i, c0, x, acc);
                i += 1;
            }
            for (yj, &aj) in ys.iter_mut().zip(acc.iter()) {
                finish(alpha, aj, beta, yj);
            }
        }
    };
    // Each task reads its columns of every row: at least YES_MIN_TASK_COLS of them, so a task
    // streams whole kilobytes per row. The shared column blocking gives 64 columns once m
    // reaches 512 rows, and at 8192 x 8192 f32 those 256-byte pieces of rows 32 KB apart ran 2
    // threads at 0.42 of the triad bandwidth, below one thread's 1.1.
    let cb = threading::cols_per_chunk(m).max(YES_MIN_TASK_COLS);
    threading::for_parts(y, threading::parallel(m * n), (cb, cb), block);
}

/// `acc_j <- acc_j + A_(i0+r, c0+j) x_(i0+r)` for r = 0..R in order, one FMA each (the same
/// sequence whatever R); the scalar tail uses `acc + a x` in the same row order.
#[inline(always)]
fn axpy_rows<S: Simd, const R: usize>(
    a: &[S],
    lda: usize,
    i0: usize,
    c0: usize,
    x: &[S],
    acc: &mut [S],
) {
    let w = acc.len();
    let rows: [&[S]; R] = std::array::from_fn(|r| &a[(i0 + r) * lda + c0..(i0 + r) * lda + c0 + w]);
    let xs: [S; R] = std::array::from_fn(|r| x[i0 + r]);
    let xv: [S::V; R] = std::array::from_fn(|r| S::V::splat(xs[r]));
    let l = S::V::LANES;
    let mut chunks = acc.chunks_exact_mut(l);
    for (k, ac) in (&mut chunks).enumerate() {
        let j = k * l;
        let mut v = S::V::load(ac);
        for r in 0..R {
            v = S::V::mul_add(S::V::load(&rows[r][j..j + l]), xv[r], v);
        }
        S::V::store(v, ac);
    }
    let j0 = w - w % l;
    for (t, av) in chunks.into_remainder().iter_mut().enumerate() {
        for r in 0..R {
            *av += rows[r][j0 + t] * xs[r];
        }
    }
}

/// `A <- A + alpha x y^T`, x `A.rows()` entries, y `A.cols()` entries.
/// Row i is updated as `A_ij <- fma(alpha x_i, y_j, A_ij)`.
///
/// # Panics
///
/// If x or y is shorter than that.
pub fn ger<T: Float>(alpha: T, x: &[T], y: &[T], a: MatMut<'_, T>) {
    let (m, n, lda) = (a.rows(), a.cols(), a.ld());
    if m == 0 || n == 0 {
        return;
    }
    let (x, y, a) = (&x[..m], &y[..n], a.into_data());
    dispatch!(T, S => {
        let (x, y, a): (&[S], &[S], &mut [S]) = (cast(x), cast(y), cast_mut(a));
        let alpha: S = same(alpha);
        let a = &mut a[..(m - 1) * lda + n];
        let block = |row0: usize, a: &mut [S]| {
            for (r, row) in a.chunks_mut(lda).enumerate() {
                crate::level1::axpy_simd::<S>(alpha * x[row0 + r], y, &mut row[..n]);
            }
        };
        let rb = threading::rows_per_chunk(n);
        threading::for_parts(a, threading::parallel(m * n), (rb * lda, rb), block);
    })
}

/// [`ger`] (the same values) that also returns whether every updated entry of A is finite,
/// checked in the same pass ([`crate::level1::axpy_finite`]).
pub fn ger_finite<T: Float>(alpha: T, x: &[T], y: &[T], a: MatMut<'_, T>) -> bool {
    let (m, n, lda) = (a.rows(), a.cols(), a.ld());
    if m == 0 || n == 0 {
        return true;
    }
    let (x, y, a) = (&x[..m], &y[..n], a.into_data());
    dispatch!(T, S => {
        let (x, y, a): (&[S], &[S], &mut [S]) = (cast(x), cast(y), cast_mut(a));
        let alpha: S = same(alpha);
        let a = &mut a[..(m - 1) * lda + n];
        let block = |row0: usize, a: &mut [S]| {
            let mut finite = true;
            for (r, row) in a.chunks_mut(lda).enumerate() {
                finite &=
                    crate::level1::axpy_finite_simd::<S>(alpha * x[row0 + r], y, &mut row[..n]);
            }
            finite
        };
        if threading::parallel(m * n) {
            let rb = threading::rows_per_chunk(n);
            a.par_chunks_mut(rb * lda)
                .enumerate()
                .map(|(b, ab)| block(b * rb, ab))
                .reduce(|| true, |p, q| p && q)
        } else {
            block(0, a)
        }
    })
}
