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
//! - GER then GEMV ([`ger_finite_gemv`]): each row is updated and then dotted with a vector while
//!   it is still in L1, one pass over A where the two calls make two.
//! - Projections off the rows of a matrix ([`project_out_rows`], modified Gram-Schmidt): the
//!   update by row k and the dot product with row k + 1 share one pass over the vector, and
//!   several vectors share each load of a row.
//!
//! Every output element has one fixed arithmetic sequence whatever the grouping of rows or the
//! blocking of columns (a row processed alone uses the same per-row accumulation as in a group
//! of four), so the results are bit-identical for any thread count. Threads take fixed row
//! blocks (`No`, GER) or fixed column blocks (`Yes`), see [`crate::threading`].
//!
//! In f64, when the GEMM kernels use AVX-512 ([`crate::gemm::current_variant`], decided on the
//! calling thread), GEMV, [`ger_finite_gemv`] and [`project_out_rows`] run on 512-bit vectors
//! (`level2_avx512.rs`): half the instructions and loads of the 4-lane loops, with the same
//! arithmetic sequence for every output, so the same bits (the tests compare the two paths).
//! GER then GEMV takes each row through its update and its dot product in one pass there.

use rayon::prelude::*;

use crate::level1::{axpy_finite_simd, axpy_simd, dot_simd};
#[cfg(target_arch = "x86_64")]
use crate::level2_avx512::Avx512;
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
pub(crate) fn finish<S: Simd>(alpha: S, acc: S, beta: S, y: &mut S) {
    let old = if beta == S::ZERO { S::ZERO } else { beta * *y };
    *y = alpha * acc + old;
}

/// [`gemv`] with `a` used as stored.
fn gemv_no<S: Simd>(alpha: S, a: MatRef<'_, S>, x: &[S], beta: S, y: &mut [S]) {
    let (m, n, lda, a) = (a.stored_rows(), a.stored_cols(), a.ld(), a.data());
    #[cfg(target_arch = "x86_64")]
    let avx512 = Avx512::for_f64::<S>();
    let block = |row0: usize, y: &mut [S]| {
        #[cfg(target_arch = "x86_64")]
        if let Some(avx512) = avx512 {
            let (a, x, y): (&[f64], &[f64], &mut [f64]) = (cast(a), cast(x), cast_mut(y));
            let scalars = (same(alpha), same(beta));
            return avx512.gemv_no_rows(scalars, a, (lda, n), row0, x, y);
        }
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
    #[cfg(target_arch = "x86_64")]
    let avx512 = Avx512::for_f64::<S>();
    let block = |col0: usize, y: &mut [S]| {
        let mut acc = vec![S::ZERO; y.len().min(jb)];
        for (s, ys) in y.chunks_mut(jb).enumerate() {
            let c0 = col0 + s * jb;
            let acc = &mut acc[..ys.len()];
            acc.iter_mut().for_each(|v| *v = S::ZERO);
            #[cfg(target_arch = "x86_64")]
            if let Some(avx512) = avx512 {
                avx512.axpy_all_rows(cast(a), (lda, m), c0, cast(x), cast_mut(acc));
                for (yj, &aj) in ys.iter_mut().zip(acc.iter()) {
                    finish(alpha, aj, beta, yj);
                }
                continue;
            }
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
                axpy_simd::<S>(alpha * x[row0 + r], y, &mut row[..n]);
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
                    axpy_finite_simd::<S>(alpha * x[row0 + r], y, &mut row[..n]);
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

/// [`ger_finite`] followed by `z <- A v` ([`gemv`] with `alpha = 1`, `beta = 0`) on the updated
/// A, with the values of those two calls: returns whether every updated entry of A is finite.
/// Rows are updated four at a time and dotted with `v` right after, while they are in L1, so A
/// is read once where the two calls read it twice; four rows also keep four independent
/// finiteness checks in flight where one row at a time waits on one chain. Threads take the
/// fixed row blocks of [`ger_finite`].
///
/// # Panics
///
/// If x, y, v or z is shorter than the shapes of A need.
pub fn ger_finite_gemv<T: Float>(
    alpha: T,
    x: &[T],
    y: &[T],
    a: MatMut<'_, T>,
    v: &[T],
    z: &mut [T],
) -> bool {
    let (m, n, lda) = (a.rows(), a.cols(), a.ld());
    let (x, y, v, z) = (&x[..m], &y[..n], &v[..n], &mut z[..m]);
    if m == 0 {
        return true;
    }
    if n == 0 {
        // nothing to update, and empty rows (any lda, possibly 0) dot to zero
        z.iter_mut().for_each(|zi| *zi = T::ZERO);
        return true;
    }
    let a = a.into_data();
    dispatch!(T, S => {
        let (x, y, v, z): (&[S], &[S], &[S], &mut [S]) = (cast(x), cast(y), cast(v), cast_mut(z));
        let a: &mut [S] = cast_mut(a);
        let a = &mut a[..(m - 1) * lda + n];
        let alpha: S = same(alpha);
        #[cfg(target_arch = "x86_64")]
        let avx512 = Avx512::for_f64::<S>();
        // rows row0.. of A (a, leading dimension lda) and of z
        let block = |row0: usize, a: &mut [S], z: &mut [S]| {
            let x = &x[row0..];
            #[cfg(target_arch = "x86_64")]
            if let Some(avx512) = avx512 {
                let (x, y, v): (&[f64], &[f64], &[f64]) = (cast(x), cast(y), cast(v));
                let (a, z): (&mut [f64], &mut [f64]) = (cast_mut(a), cast_mut(z));
                return avx512.ger_finite_gemv_rows(same(alpha), (x, y), a, lda, v, z);
            }
            let mut finite = true;
            let mut i = 0;
            while i < z.len() {
                if i + ROW_GROUP <= z.len() {
                    finite &= update_rows::<S, ROW_GROUP>(alpha, x, y, a, lda, i);
                    let acc = rows_dot::<S, ROW_GROUP>(a, lda, i, n, v);
                    for (zi, &ai) in z[i..i + ROW_GROUP].iter_mut().zip(&acc) {
                        finish(S::ONE, ai, S::ZERO, zi);
                    }
                    i += ROW_GROUP;
                } else {
                    finite &= update_rows::<S, 1>(alpha, x, y, a, lda, i);
                    let [acc] = rows_dot::<S, 1>(a, lda, i, n, v);
                    finish(S::ONE, acc, S::ZERO, &mut z[i]);
                    i += 1;
                }
            }
            finite
        };
        if threading::parallel(m * n) {
            let rb = threading::rows_per_chunk(n);
            a.par_chunks_mut(rb * lda)
                .zip(z.par_chunks_mut(rb))
                .enumerate()
                .map(|(b, (ab, zb))| block(b * rb, ab, zb))
                .reduce(|| true, |p, q| p && q)
        } else {
            block(0, a, z)
        }
    })
}

/// Rows `i0..i0 + R` of A (leading dimension `lda`, `y.len()` columns) updated as [`ger`]
/// updates them, `A_ij <- fma(alpha x_i, y_j, A_ij)` (scalar tail `A_ij + (alpha x_i) y_j`, as
/// [`axpy_simd`]); returns whether every updated entry is finite (each entry times zero,
/// accumulated: zero exactly when all are finite, as [`axpy_finite_simd`] checks).
#[inline(always)]
fn update_rows<S: Simd, const R: usize>(
    alpha: S,
    x: &[S],
    y: &[S],
    a: &mut [S],
    lda: usize,
    i0: usize,
) -> bool {
    let (n, l) = (y.len(), S::V::LANES);
    let zero = S::V::splat(S::ZERO);
    let scale: [S; R] = std::array::from_fn(|r| alpha * x[i0 + r]);
    let scale_v = scale.map(S::V::splat);
    let mut probe = [zero; R];
    let mut rows = a[i0 * lda..].chunks_mut(lda);
    let rows: [&mut [S]; R] = std::array::from_fn(|_| rows.next().expect("row of A"));
    let mut j = 0;
    while j + l <= n {
        let yv = S::V::load(&y[j..]);
        for r in 0..R {
            let cell = &mut rows[r][j..j + l];
            let updated = S::V::mul_add(scale_v[r], yv, S::V::load(cell));
            S::V::store(updated, cell);
            probe[r] = S::V::mul_add(updated, zero, probe[r]);
        }
        j += l;
    }
    let mut tail = S::ZERO;
    for r in 0..R {
        for t in j..n {
            rows[r][t] += scale[r] * y[t];
            tail += rows[r][t] * S::ZERO;
        }
    }
    probe.iter().all(|&p| S::V::hsum(p) == S::ZERO) && tail == S::ZERO
}

/// Projects each vector of `ws` off the rows of `q` (`rows x dim`, row-major) in turn, as
/// modified Gram-Schmidt does: for k = 0, 1, ... and each `w`, `c = dot(q_k, w)` and then
/// `w <- w - c q_k`, with exactly the values of [`crate::dot`] and [`crate::axpy`] called in
/// that order. The vectors are independent, so several share each pass over a row; the
/// update by row k and the dot product with row k + 1 share one pass over `w`.
///
/// # Panics
///
/// If `q` is not whole rows of `dim` or a vector of `ws` is not `dim` long.
pub fn project_out_rows<T: Float, const M: usize>(q: &[T], dim: usize, ws: [&mut [T]; M]) {
    if q.is_empty() || M == 0 {
        return;
    }
    assert!(
        dim > 0 && q.len().is_multiple_of(dim),
        "q must hold whole rows"
    );
    assert!(
        ws.iter().all(|w| w.len() == dim),
        "each vector has dim entries"
    );
    dispatch!(T, S => {
        let q: &[S] = cast(q);
        let mut ws: [&mut [S]; M] = ws.map(|w| cast_mut(w));
        #[cfg(target_arch = "x86_64")]
        if let Some(avx512) = Avx512::for_f64::<S>() {
            let mut ws: [&mut [f64]; M] = ws.map(cast_mut);
            return avx512.project_out_rows(cast(q), dim, &mut ws);
        }
        let rows: Vec<&[S]> = q.chunks_exact(dim).collect();
        let mut c: [S; M] = std::array::from_fn(|j| dot_simd::<S>(rows[0], ws[j]));
        for (k, qk) in rows.iter().enumerate() {
            let alpha = c.map(|v| -v);
            match rows.get(k + 1) {
                Some(next) => c = axpy_dot::<S, M>(alpha, qk, &mut ws, next),
                None => {
                    for (w, &al) in ws.iter_mut().zip(&alpha) {
                        axpy_simd::<S>(al, qk, w);
                    }
                }
            }
        }
    })
}

/// `w_j <- alpha_j x + w_j` for each vector of `ws` (the values of [`axpy_simd`]), then the dot
/// product of `z` with each updated `w_j` (the values of [`dot_simd`]), in one pass: the same
/// element split between vectors and scalar tail, the same four accumulators over blocks of
/// four vectors, a last unpaired vector into accumulator 0, the same final sum and tail.
#[inline(always)]
fn axpy_dot<S: Simd, const M: usize>(
    alpha: [S; M],
    x: &[S],
    ws: &mut [&mut [S]; M],
    z: &[S],
) -> [S; M] {
    let l = S::V::LANES;
    let n = x.len();
    let av = alpha.map(S::V::splat);
    let zero = S::V::splat(S::ZERO);
    let mut acc = [[zero; 4]; M];
    let blocks = n / (4 * l);
    for b in 0..blocks {
        for (u, lane_block) in (0..4).map(|u| (u, 4 * l * b + u * l)) {
            let (xv, zv) = (S::V::load(&x[lane_block..]), S::V::load(&z[lane_block..]));
            for (w, (a, acc)) in ws.iter_mut().zip(av.iter().zip(acc.iter_mut())) {
                let w = &mut w[lane_block..lane_block + l];
                let updated = S::V::mul_add(*a, xv, S::V::load(w));
                S::V::store(updated, w);
                acc[u] = S::V::mul_add(zv, updated, acc[u]);
            }
        }
    }
    let mut j = 4 * l * blocks;
    while j + l <= n {
        let (xv, zv) = (S::V::load(&x[j..]), S::V::load(&z[j..]));
        for (w, (a, acc)) in ws.iter_mut().zip(av.iter().zip(acc.iter_mut())) {
            let w = &mut w[j..j + l];
            let updated = S::V::mul_add(*a, xv, S::V::load(w));
            S::V::store(updated, w);
            acc[0] = S::V::mul_add(zv, updated, acc[0]);
        }
        j += l;
    }
    std::array::from_fn(|m| {
        let [a0, a1, a2, a3] = acc[m];
        let mut s = S::V::hsum((a0 + a1) + (a2 + a3));
        let w = &mut ws[m];
        for t in j..n {
            w[t] += alpha[m] * x[t];
            s += z[t] * w[t];
        }
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reproducible values in [-1, 1) with a few exact zeros and repeats.
    fn values(len: usize, salt: usize) -> Vec<f64> {
        (0..len)
            .map(|i| (((i * 7919 + salt * 104_729) % 2003) as f64 / 1001.5 - 1.0) * 1.7)
            .collect()
    }

    /// Modified Gram-Schmidt on each vector, one call of `dot` and `axpy` per row.
    fn project_out_by_calls<T: Float>(q: &[T], dim: usize, w: &mut [T]) {
        for qk in q.chunks_exact(dim) {
            let c = crate::dot(qk, w);
            crate::axpy(-c, qk, w);
        }
    }

    fn check_project_out<T: Float>(rows: usize, dim: usize) {
        let q: Vec<T> = values(rows * dim, 1).into_iter().map(T::from_f64).collect();
        let fresh = |salt| -> Vec<T> { values(dim, salt).into_iter().map(T::from_f64).collect() };
        let mut expected = [fresh(2), fresh(3)];
        for w in &mut expected {
            project_out_by_calls(&q, dim, w);
        }
        let (mut one, mut pair) = (fresh(2), [fresh(2), fresh(3)]);
        project_out_rows(&q, dim, [&mut one[..]]);
        let [p0, p1] = &mut pair;
        project_out_rows(&q, dim, [&mut p0[..], &mut p1[..]]);
        let bits = |v: &[T]| v.iter().map(|x| x.to_f64().to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&one), bits(&expected[0]), "{} rows x {dim}, one", rows);
        assert_eq!(
            bits(&pair[0]),
            bits(&expected[0]),
            "{} rows x {dim}, pair",
            rows
        );
        assert_eq!(
            bits(&pair[1]),
            bits(&expected[1]),
            "{} rows x {dim}, pair",
            rows
        );
    }

    #[test]
    fn project_out_rows_gives_the_values_of_dot_then_axpy() {
        // lengths with and without whole blocks of four vectors, a lone vector and a tail
        for dim in [1, 3, 4, 7, 16, 17, 29, 32, 37, 64, 100, 203] {
            for rows in [0, 1, 2, 5] {
                check_project_out::<f64>(rows, dim);
                check_project_out::<f32>(rows, dim);
            }
        }
    }

    #[test]
    fn project_out_rows_removes_orthonormal_directions() {
        // rows e_0 and (e_1 + e_2) / sqrt 2: what is left has no component along either
        let dim = 9;
        let mut q = vec![0.0f64; 2 * dim];
        q[0] = 1.0;
        q[dim + 1] = std::f64::consts::FRAC_1_SQRT_2;
        q[dim + 2] = std::f64::consts::FRAC_1_SQRT_2;
        let mut w: Vec<f64> = (1..=dim).map(|i| i as f64).collect();
        project_out_rows(&q, dim, [&mut w[..]]);
        assert_eq!(w[0], 0.0);
        assert!((w[1] + w[2]).abs() < 1e-12 && (w[1] - -0.5).abs() < 1e-12);
        assert_eq!(&w[3..], &[4.0, 5.0, 6.0, 7.0, 8.0, 9.0]);
    }

    /// `y <- alpha A^T x + beta y` as `gemv_yes` computes each entry, one column at a time:
    /// the accumulator takes `fma(A_ij, x_i, acc)` over rows in order on the columns of whole
    /// vectors, `acc + A_ij x_i` on the scalar tail (column blocks are whole vectors, so the
    /// tail is the last `n % lanes` columns).
    fn gemv_yes_by_columns<T: Float>(
        alpha: T,
        a: &[T],
        (m, n, lda): (usize, usize, usize),
        x: &[T],
        beta: T,
        y: &mut [T],
    ) {
        let lanes = 32 / std::mem::size_of::<T>();
        let vector_cols = n - n % lanes;
        for (j, yj) in y[..n].iter_mut().enumerate() {
            let mut acc = T::ZERO;
            for i in 0..m {
                acc = if j < vector_cols {
                    a[i * lda + j].mul_add(x[i], acc)
                } else {
                    acc + a[i * lda + j] * x[i]
                };
            }
            let old = if beta == T::ZERO { T::ZERO } else { beta * *yj };
            *yj = alpha * acc + old;
        }
    }

    fn check_gemv_yes<T: Float>(m: usize, n: usize, lda: usize) {
        let cast = |v: Vec<f64>| v.into_iter().map(T::from_f64).collect::<Vec<T>>();
        let a = cast(values(m.max(1) * lda, 8));
        let x = cast(values(m, 9));
        for (alpha, beta) in [(1.0, 0.0), (1.0, 1.0), (-0.75, 0.5)] {
            let (alpha, beta) = (T::from_f64(alpha), T::from_f64(beta));
            let mut expected = cast(values(n, 10));
            gemv_yes_by_columns(alpha, &a, (m, n, lda), &x, beta, &mut expected);
            let mut y = cast(values(n, 10));
            gemv(
                alpha,
                MatRef::with_ld(&a, m, n, lda).transpose(),
                &x,
                beta,
                &mut y,
            );
            let bits = |v: &[T]| v.iter().map(|x| x.to_f64().to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&y), bits(&expected), "{m} x {n}, lda {lda}");
        }
    }

    /// Runs `check` in a pool of one thread and in a pool of two.
    fn on_one_and_two_threads(check: impl Fn() + Sync) {
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(&check);
        }
    }

    #[test]
    fn gemv_transposed_is_one_fma_per_row_in_row_order() {
        // row counts around groups of four rows, column counts with and without a tail
        on_one_and_two_threads(|| {
            for m in [0, 1, 3, 7, 8, 9, 15, 16, 17, 160, 162] {
                for n in [1, 3, 4, 9, 16, 37, 162] {
                    check_gemv_yes::<f64>(m, n, n);
                    check_gemv_yes::<f64>(m, n, n + 5);
                    check_gemv_yes::<f32>(m, n, n + 1);
                }
            }
            // above the parallel threshold (column blocks on two threads), and on one thread
            // more columns than one accumulator block
            check_gemv_yes::<f64>(300, 2101, 2101);
            check_gemv_yes::<f32>(300, 2101, 2103);
            check_gemv_yes::<f64>(64, 4203, 4203);
        });
    }

    fn check_ger_gemv<T: Float>(m: usize, n: usize, lda: usize, poison: bool) {
        let cast = |v: Vec<f64>| v.into_iter().map(T::from_f64).collect::<Vec<T>>();
        let (x, y, v) = (cast(values(m, 4)), cast(values(n, 5)), cast(values(n, 6)));
        let mut a0 = cast(values(m.max(1) * lda, 7));
        if poison {
            a0[(m / 2) * lda] = T::from_f64(f64::INFINITY);
        }
        let alpha = T::from_f64(-0.37);
        let mut expected_a = a0.clone();
        let expected_finite =
            ger_finite(alpha, &x, &y, MatMut::with_ld(&mut expected_a, m, n, lda));
        let mut expected_z = vec![T::ZERO; m];
        gemv(
            T::ONE,
            MatRef::with_ld(&expected_a, m, n, lda),
            &v,
            T::ZERO,
            &mut expected_z,
        );
        let mut a = a0;
        let mut z = vec![T::from_f64(9.0); m];
        let finite = ger_finite_gemv(
            alpha,
            &x,
            &y,
            MatMut::with_ld(&mut a, m, n, lda),
            &v,
            &mut z,
        );
        let bits = |v: &[T]| v.iter().map(|x| x.to_f64().to_bits()).collect::<Vec<_>>();
        assert_eq!(finite, expected_finite, "{m} x {n}");
        assert_eq!(finite, !poison || m == 0, "{m} x {n}");
        assert_eq!(bits(&a), bits(&expected_a), "A, {m} x {n}");
        assert_eq!(bits(&z), bits(&expected_z), "z, {m} x {n}");
    }

    /// `run` under the portable kernels and under the 512-bit ones (on this thread), or `None`
    /// when the CPU lacks AVX-512 or the build does not fuse the portable kernels' multiply-adds
    /// (the 512-bit f64 paths are then never taken), which the first call notes on stderr
    /// (written to the stream directly: the harness captures `eprintln!` of passing tests).
    fn portable_and_avx512<R>(run: impl Fn() -> R) -> Option<(R, R)> {
        use crate::gemm::{with_kernel_variant, KernelVariant};
        static NOTE: std::sync::Once = std::sync::Once::new();
        if !(KernelVariant::Avx512.is_available() && cfg!(target_feature = "fma")) {
            NOTE.call_once(|| {
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "note: no AVX-512 (or a build without FMA): the 512-bit level-2 kernels were \
                     NOT exercised by the level2 tests"
                );
            });
            return None;
        }
        let portable = with_kernel_variant(KernelVariant::Portable, &run);
        let avx512 = with_kernel_variant(KernelVariant::Avx512, &run);
        Some((portable, avx512))
    }

    fn f64_bits(v: &[f64]) -> Vec<u64> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// Lengths around every boundary of the 8-lane blocks, the 4-lane step and the scalar
    /// tail, and around the trainer's r = 162.
    fn awkward_lengths() -> impl Iterator<Item = usize> {
        (0..=40).chain(158..=166)
    }

    /// Runs `check` in pools of one, two and three threads.
    fn on_one_to_three_threads(check: impl Fn() + Sync) {
        for threads in 1..=3 {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(&check);
        }
    }

    fn check_gemv_variants(m: usize, n: usize, lda: usize) {
        let a = values(m.max(1) * lda, 11);
        for transpose in [false, true] {
            let (x, y0) = if transpose {
                (values(m, 12), values(n, 13))
            } else {
                (values(n, 12), values(m, 13))
            };
            for (alpha, beta) in [(1.0, 0.0), (-0.75, 0.5), (1.0, 1.0)] {
                let run = || {
                    let mut y = y0.clone();
                    let view = MatRef::with_ld(&a, m, n, lda);
                    let view = if transpose { view.transpose() } else { view };
                    gemv(alpha, view, &x, beta, &mut y);
                    f64_bits(&y)
                };
                if let Some((portable, avx512)) = portable_and_avx512(run) {
                    assert_eq!(
                        avx512, portable,
                        "{m} x {n}, lda {lda}, transposed {transpose}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_avx512_gemv_gives_the_portable_bits() {
        on_one_to_three_threads(|| {
            for m in awkward_lengths().step_by(3).chain([1, 2, 3, 4, 5, 7, 8, 9]) {
                for n in awkward_lengths() {
                    check_gemv_variants(m, n, n);
                    check_gemv_variants(m, n, n + 3);
                }
            }
            // above the parallel threshold (row or column blocks over the threads), and more
            // columns than one accumulator block of the transposed GEMV
            check_gemv_variants(701, 403, 403);
            check_gemv_variants(300, 2101, 2105);
            check_gemv_variants(64, 4203, 4203);
        });
    }

    fn check_ger_gemv_variants(m: usize, n: usize, lda: usize, poison: bool) {
        let (x, y, v) = (values(m, 14), values(n, 15), values(n, 16));
        let mut a0 = values(m.max(1) * lda, 17);
        if poison && m > 0 && n > 0 {
            a0[(m / 2) * lda + n / 2] = f64::INFINITY;
        }
        let run = || {
            let mut a = a0.clone();
            let mut z = vec![9.0; m];
            let view = MatMut::with_ld(&mut a, m, n, lda);
            let finite = ger_finite_gemv(-0.37, &x, &y, view, &v, &mut z);
            (finite, f64_bits(&a), f64_bits(&z))
        };
        if let Some((portable, avx512)) = portable_and_avx512(run) {
            assert_eq!(avx512, portable, "{m} x {n}, lda {lda}, poison {poison}");
        }
    }

    #[test]
    fn the_avx512_ger_finite_gemv_gives_the_portable_bits() {
        on_one_to_three_threads(|| {
            for m in awkward_lengths().step_by(5).chain([1, 2, 3]) {
                for n in awkward_lengths() {
                    for poison in [false, true] {
                        check_ger_gemv_variants(m, n, n, poison);
                        check_ger_gemv_variants(m, n, n + 1, poison);
                    }
                }
            }
            check_ger_gemv_variants(701, 403, 405, false);
            check_ger_gemv_variants(701, 403, 403, true);
        });
    }

    #[test]
    fn the_avx512_projections_give_the_portable_bits() {
        for dim in awkward_lengths()
            .filter(|&d| d > 0)
            .chain([5000, 5001, 5003])
        {
            for rows in [0, 1, 2, 3, 6] {
                let q = values(rows * dim, 18);
                let run = || {
                    let (mut one, mut first, mut second) =
                        (values(dim, 19), values(dim, 19), values(dim, 20));
                    project_out_rows(&q, dim, [&mut one[..]]);
                    project_out_rows(&q, dim, [&mut first[..], &mut second[..]]);
                    [f64_bits(&one), f64_bits(&first), f64_bits(&second)]
                };
                if let Some((portable, avx512)) = portable_and_avx512(run) {
                    assert_eq!(avx512, portable, "{rows} rows x {dim}");
                }
            }
        }
    }

    #[test]
    fn ger_finite_gemv_gives_the_values_of_the_two_calls() {
        // the last shape is above the parallel threshold: row blocks on two threads
        let shapes = [
            (0, 5),
            (1, 1),
            (3, 7),
            (5, 16),
            (13, 29),
            (162, 162),
            (40, 203),
            (701, 403),
        ];
        on_one_and_two_threads(|| {
            for (m, n) in shapes {
                for poison in [false, true] {
                    check_ger_gemv::<f64>(m, n, n, poison);
                    check_ger_gemv::<f64>(m, n, n + 3, poison);
                    check_ger_gemv::<f32>(m, n, n + 1, poison);
                }
            }
        });
    }
}
