//! The f64 level-2 kernels of `level2.rs` (GEMV both ways, GER then GEMV, the projections of
//! modified Gram-Schmidt with the dot products and axpys they start and end with) on 512-bit
//! vectors, with the bits of the portable `wide` (f64x4) versions.
//!
//! The portable kernels fix every output's arithmetic by their 4-lane accumulator layout, and
//! each layout maps onto 8-lane registers exactly:
//! - element-wise updates (the accumulators of transposed GEMV, the rows GER updates, the
//!   vectors the projections update) take one FMA per element whatever the width: 8 lanes at a
//!   time, then one masked 4-lane step where the portable code has its last whole vector, then
//!   the same scalar tail (`n % 4` elements, unfused, in the same order);
//! - a GEMV row's two accumulators (even and odd 4-vectors of each 8-element pair) are the low
//!   and high halves of one register, the last unpaired 4-vector a masked FMA into the low
//!   half, `acc0 + acc1` the sum of the halves;
//! - the dot products' four accumulators (4-vectors `u = 0..3` of each 16-element block) are the
//!   halves of two registers, the unpaired 4-vectors masked FMAs into the low half of the
//!   first, `(acc0 + acc1) + (acc2 + acc3)` the same sums of halves;
//!
//! and the final lane sum is `wide`'s own `f64x4` sum on that 4-lane vector, so even its order
//! is the portable one. The FMAs are fused here always, and in the portable kernels only when
//! the build targets FMA (the default x86-64-v3 build); [`Avx512::for_f64`] therefore hands out
//! these paths only in builds with FMA.
//!
//! # Soundness
//!
//! Every function here that uses an intrinsic is a `#[target_feature(enable = "avx512f")]`
//! function, entered only through the methods of [`Avx512`], a token that exists only when
//! [`crate::gemm::current_variant`] is `Avx512` (never the case unless the running CPU reports
//! avx512f: `KernelVariant::is_available`). Loads and stores go through [`load`], [`store`]
//! and their masked twins, which check their bounds against the slice they read or write;
//! masked moves touch no memory in masked-off lanes.
//!
//! The functions here use loops, not closures: a closure does not inherit `avx512f`, so one
//! touching a vector is compiled apart (not inlined) and its vectors go through memory.

use std::arch::x86_64::{
    __m256d, __m512d, __mmask8, _mm256_add_pd, _mm256_storeu_pd, _mm512_castpd512_pd256,
    _mm512_extractf64x4_pd, _mm512_fmadd_pd, _mm512_loadu_pd, _mm512_mask3_fmadd_pd,
    _mm512_mask_storeu_pd, _mm512_maskz_loadu_pd, _mm512_reduce_add_pd, _mm512_set1_pd,
    _mm512_setzero_pd, _mm512_storeu_pd,
};

use wide::f64x4;

use crate::gemm::{current_variant, KernelVariant};
use crate::level2::finish;
use crate::simd::{precision, Precision, SimdVector};
use crate::Float;

/// Lanes of an f64 zmm register.
const LANES: usize = 8;
/// Lanes of the portable kernels' `f64x4`.
const HALF: usize = 4;
/// The low four lanes (one portable vector).
const LOW_HALF: __mmask8 = 0x0f;

/// Proof that the 512-bit f64 kernels may run on this thread: the running CPU has AVX-512F
/// (the `Avx512` GEMM variant is in use here, see [`crate::gemm::KernelVariant`]) and the build
/// fuses the portable kernels' multiply-adds, so both paths give the same bits (module docs).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx512(());

impl Avx512 {
    /// The token when `T` is f64 and the 512-bit kernels may run (see [`Avx512`]).
    #[inline]
    pub(crate) fn for_f64<T: Float>() -> Option<Avx512> {
        let usable = cfg!(target_feature = "fma")
            && precision::<T>() == Precision::F64
            && current_variant() == KernelVariant::Avx512;
        usable.then_some(Avx512(()))
    }

    /// Rows `row0..row0 + y.len()` of GEMV `No`: `y_i <- alpha (A x)_i + beta y_i` with A's rows
    /// `n` long at stride `lda` (the values of `level2::gemv_no`).
    pub(crate) fn gemv_no_rows(
        self,
        (alpha, beta): (f64, f64),
        a: &[f64],
        (lda, n): (usize, usize),
        row0: usize,
        x: &[f64],
        y: &mut [f64],
    ) {
        // SAFETY: the token exists only when the CPU has avx512f (module docs).
        unsafe { gemv_no_rows((alpha, beta), a, (lda, n), row0, x, y) }
    }

    /// `acc_j <- acc_j + sum_i A_(i, c0 + j) x_i` over rows `i = 0..rows` in order, one FMA
    /// per element on the columns of whole 4-vectors and `acc + a x` on the last `w % 4`
    /// (the values of `level2::axpy_rows` over every row).
    pub(crate) fn axpy_all_rows(
        self,
        a: &[f64],
        (lda, rows): (usize, usize),
        c0: usize,
        x: &[f64],
        acc: &mut [f64],
    ) {
        // SAFETY: as in `gemv_no_rows`.
        unsafe { axpy_all_rows(a, (lda, rows), c0, x, acc) }
    }

    /// The rows of A in `a` (`z.len()` rows, `y.len()` columns, stride `lda`): each updated as
    /// `A_ij <- fma(alpha x_i, y_j, A_ij)` (unfused on the last `n % 4`), then `z_i <- A_i v`;
    /// returns whether every updated entry is finite (the values of `level2::ger_finite_gemv`
    /// on one row block).
    pub(crate) fn ger_finite_gemv_rows(
        self,
        alpha: f64,
        (x, y): (&[f64], &[f64]),
        a: &mut [f64],
        lda: usize,
        v: &[f64],
        z: &mut [f64],
    ) -> bool {
        // SAFETY: as in `gemv_no_rows`.
        unsafe { ger_finite_gemv_rows(alpha, x, y, a, lda, v, z) }
    }

    /// `level2::project_out_rows` on f64: each vector of `ws` projected off the rows of `q`
    /// (`dim` long) in turn, with the values of `dot` then `axpy` per row.
    pub(crate) fn project_out_rows<const M: usize>(
        self,
        q: &[f64],
        dim: usize,
        ws: &mut [&mut [f64]; M],
    ) {
        // SAFETY: as in `gemv_no_rows`.
        unsafe { project_out_rows(q, dim, ws) }
    }
}

/// The 8 scalars of `s` from `j`.
#[target_feature(enable = "avx512f")]
#[inline]
fn load(s: &[f64], j: usize) -> __m512d {
    assert!(j + LANES <= s.len());
    // SAFETY: the 8 scalars from `j` lie in `s` (asserted); unaligned load.
    unsafe { _mm512_loadu_pd(s.as_ptr().add(j)) }
}

/// The 4 scalars of `s` from `j` in the low lanes, zeros above.
#[target_feature(enable = "avx512f")]
#[inline]
fn load_low(s: &[f64], j: usize) -> __m512d {
    assert!(j + HALF <= s.len());
    // SAFETY: the 4 unmasked scalars from `j` lie in `s` (asserted); masked-off lanes touch no
    // memory.
    unsafe { _mm512_maskz_loadu_pd(LOW_HALF, s.as_ptr().add(j)) }
}

/// Stores the 8 lanes of `v` into `s` from `j`.
#[target_feature(enable = "avx512f")]
#[inline]
fn store(v: __m512d, s: &mut [f64], j: usize) {
    assert!(j + LANES <= s.len());
    // SAFETY: the 8 scalars from `j` lie in `s` (asserted), uniquely borrowed.
    unsafe { _mm512_storeu_pd(s.as_mut_ptr().add(j), v) }
}

/// Stores the low 4 lanes of `v` into `s` from `j`.
#[target_feature(enable = "avx512f")]
#[inline]
fn store_low(v: __m512d, s: &mut [f64], j: usize) {
    assert!(j + HALF <= s.len());
    // SAFETY: the 4 unmasked scalars from `j` lie in `s` (asserted), uniquely borrowed;
    // masked-off lanes touch no memory.
    unsafe { _mm512_mask_storeu_pd(s.as_mut_ptr().add(j), LOW_HALF, v) }
}

/// `a b + c` on the low 4 lanes, the high ones of `c` unchanged.
#[target_feature(enable = "avx512f")]
#[inline]
fn fma_low(a: __m512d, b: __m512d, c: __m512d) -> __m512d {
    _mm512_mask3_fmadd_pd(a, b, c, LOW_HALF)
}

/// Low half plus high half: the portable `acc0 + acc1` of two 4-lane accumulators.
#[target_feature(enable = "avx512f")]
#[inline]
fn halves_sum(v: __m512d) -> __m256d {
    _mm256_add_pd(_mm512_castpd512_pd256(v), _mm512_extractf64x4_pd::<1>(v))
}

/// `wide`'s lane sum of the 4-lane vector `v` (the portable kernels' `hsum`, same order).
#[target_feature(enable = "avx512f")]
#[inline]
fn wide_sum(v: __m256d) -> f64 {
    let mut lanes = [0.0; HALF];
    // SAFETY: `lanes` holds the 4 scalars written.
    unsafe { _mm256_storeu_pd(lanes.as_mut_ptr(), v) };
    f64x4::from(lanes).hsum()
}

/// Dot products of `R` rows (each `x.len()` long) with `x`, as `level2::rows_dot`.
#[target_feature(enable = "avx512f")]
#[inline]
fn rows_dot<const R: usize>(rows: [&[f64]; R], x: &[f64]) -> [f64; R] {
    let n = x.len();
    let mut acc = [_mm512_setzero_pd(); R];
    let mut j = 0;
    while j + LANES <= n {
        let xv = load(x, j);
        for r in 0..R {
            acc[r] = _mm512_fmadd_pd(load(rows[r], j), xv, acc[r]);
        }
        j += LANES;
    }
    if j + HALF <= n {
        let xv = load_low(x, j);
        for r in 0..R {
            acc[r] = fma_low(load_low(rows[r], j), xv, acc[r]);
        }
        j += HALF;
    }
    let mut sums = [0.0; R];
    for r in 0..R {
        sums[r] = wide_sum(halves_sum(acc[r]));
        for t in j..n {
            sums[r] += rows[r][t] * x[t];
        }
    }
    sums
}

/// Rows sharing each load of `x` in [`gemv_no_rows`] (any count gives the same values).
const DOT_ROWS: usize = 4;

#[target_feature(enable = "avx512f")]
fn gemv_no_rows(
    (alpha, beta): (f64, f64),
    a: &[f64],
    (lda, n): (usize, usize),
    row0: usize,
    x: &[f64],
    y: &mut [f64],
) {
    let x = &x[..n];
    let mut groups = y.chunks_exact_mut(DOT_ROWS);
    let mut i = row0;
    for yg in &mut groups {
        let mut rows = [&a[..0]; DOT_ROWS];
        for (r, row) in rows.iter_mut().enumerate() {
            *row = &a[(i + r) * lda..(i + r) * lda + n];
        }
        let sums = rows_dot::<DOT_ROWS>(rows, x);
        for (yi, &s) in yg.iter_mut().zip(&sums) {
            finish(alpha, s, beta, yi);
        }
        i += DOT_ROWS;
    }
    for yi in groups.into_remainder() {
        let [s] = rows_dot::<1>([&a[i * lda..i * lda + n]], x);
        finish(alpha, s, beta, yi);
        i += 1;
    }
}

/// Rows accumulated per pass over the accumulator block in [`axpy_all_rows`] (each element
/// takes its FMAs in row order whatever the count).
const AXPY_ROWS: usize = 8;

/// `acc_j <- acc_j + A_(i0 + r, c0 + j) x_(i0 + r)` for r = 0..R in order.
#[target_feature(enable = "avx512f")]
#[inline]
fn axpy_rows<const R: usize>(
    a: &[f64],
    lda: usize,
    i0: usize,
    c0: usize,
    x: &[f64],
    acc: &mut [f64],
) {
    let w = acc.len();
    let mut rows = [&a[..0]; R];
    let mut xs = [0.0; R];
    let mut xv = [_mm512_setzero_pd(); R];
    for r in 0..R {
        let start = (i0 + r) * lda + c0;
        rows[r] = &a[start..start + w];
        xs[r] = x[i0 + r];
        xv[r] = _mm512_set1_pd(xs[r]);
    }
    let mut j = 0;
    while j + LANES <= w {
        let mut v = load(acc, j);
        for r in 0..R {
            v = _mm512_fmadd_pd(load(rows[r], j), xv[r], v);
        }
        store(v, acc, j);
        j += LANES;
    }
    if j + HALF <= w {
        let mut v = load_low(acc, j);
        for r in 0..R {
            v = _mm512_fmadd_pd(load_low(rows[r], j), xv[r], v);
        }
        store_low(v, acc, j);
        j += HALF;
    }
    for (t, av) in acc[j..].iter_mut().enumerate() {
        for r in 0..R {
            *av += rows[r][j + t] * xs[r];
        }
    }
}

#[target_feature(enable = "avx512f")]
fn axpy_all_rows(a: &[f64], (lda, rows): (usize, usize), c0: usize, x: &[f64], acc: &mut [f64]) {
    let mut i = 0;
    while i + AXPY_ROWS <= rows {
        axpy_rows::<AXPY_ROWS>(a, lda, i, c0, x, acc);
        i += AXPY_ROWS;
    }
    while i < rows {
        axpy_rows::<1>(a, lda, i, c0, x, acc);
        i += 1;
    }
}

/// One row of GER then GEMV: `row_j <- fma(scale, y_j, row_j)` (`row_j + scale y_j` on the
/// last `n % 4`), then its dot product with `v` in `rows_dot`'s order, in one pass. Returns
/// the dot product and whether every updated entry is finite.
#[target_feature(enable = "avx512f")]
#[inline]
fn update_dot_row(scale: f64, y: &[f64], row: &mut [f64], v: &[f64]) -> (f64, bool) {
    let n = y.len();
    let scale_v = _mm512_set1_pd(scale);
    let zero = _mm512_setzero_pd();
    // each updated entry times zero, accumulated: zero exactly when all are finite
    let mut probe = zero;
    let mut acc = zero;
    let mut j = 0;
    while j + LANES <= n {
        let updated = _mm512_fmadd_pd(scale_v, load(y, j), load(row, j));
        store(updated, row, j);
        probe = _mm512_fmadd_pd(updated, zero, probe);
        acc = _mm512_fmadd_pd(updated, load(v, j), acc);
        j += LANES;
    }
    if j + HALF <= n {
        // the high lanes are fma(scale, 0, 0) = 0: neither stored nor counted
        let updated = _mm512_fmadd_pd(scale_v, load_low(y, j), load_low(row, j));
        store_low(updated, row, j);
        probe = _mm512_fmadd_pd(updated, zero, probe);
        acc = fma_low(updated, load_low(v, j), acc);
        j += HALF;
    }
    let mut tail = 0.0;
    for t in j..n {
        row[t] += scale * y[t];
        tail += row[t] * 0.0;
    }
    let mut s = wide_sum(halves_sum(acc));
    for t in j..n {
        s += row[t] * v[t];
    }
    (s, _mm512_reduce_add_pd(probe) == 0.0 && tail == 0.0)
}

#[target_feature(enable = "avx512f")]
fn ger_finite_gemv_rows(
    alpha: f64,
    x: &[f64],
    y: &[f64],
    a: &mut [f64],
    lda: usize,
    v: &[f64],
    z: &mut [f64],
) -> bool {
    let n = y.len();
    let v = &v[..n];
    let mut finite = true;
    for (i, zi) in z.iter_mut().enumerate() {
        let row = &mut a[i * lda..i * lda + n];
        let (s, row_finite) = update_dot_row(alpha * x[i], y, row, v);
        finish(1.0, s, 0.0, zi);
        finite &= row_finite;
    }
    finite
}

/// The four accumulators of `level1::dot_simd` (4-vectors u = 0..3 of each 16-element block)
/// as two registers: `acc0 | acc1` and `acc2 | acc3`.
#[derive(Clone, Copy)]
struct DotAccumulators([__m512d; 2]);

impl DotAccumulators {
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn new() -> Self {
        DotAccumulators([_mm512_setzero_pd(); 2])
    }

    /// `hsum((acc0 + acc1) + (acc2 + acc3))`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn sum(self) -> f64 {
        let [first, second] = self.0;
        wide_sum(_mm256_add_pd(halves_sum(first), halves_sum(second)))
    }
}

#[target_feature(enable = "avx512f")]
fn dot(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len().min(y.len());
    let mut acc = DotAccumulators::new();
    let mut j = 0;
    while j + 2 * LANES <= n {
        for h in 0..2 {
            let k = j + h * LANES;
            acc.0[h] = _mm512_fmadd_pd(load(x, k), load(y, k), acc.0[h]);
        }
        j += 2 * LANES;
    }
    while j + HALF <= n {
        acc.0[0] = fma_low(load_low(x, j), load_low(y, j), acc.0[0]);
        j += HALF;
    }
    let mut s = acc.sum();
    for (&a, &b) in x[j..n].iter().zip(&y[j..n]) {
        s += a * b;
    }
    s
}

/// `w <- alpha x + w` with the values of `level1::axpy_simd`.
#[target_feature(enable = "avx512f")]
#[inline]
fn axpy(alpha: f64, x: &[f64], w: &mut [f64]) {
    let n = w.len();
    let av = _mm512_set1_pd(alpha);
    let mut j = 0;
    while j + LANES <= n {
        store(_mm512_fmadd_pd(av, load(x, j), load(w, j)), w, j);
        j += LANES;
    }
    if j + HALF <= n {
        store_low(_mm512_fmadd_pd(av, load_low(x, j), load_low(w, j)), w, j);
        j += HALF;
    }
    for (wv, &xv) in w[j..].iter_mut().zip(&x[j..n]) {
        *wv += alpha * xv;
    }
}

/// `w_m <- alpha_m x + w_m` for each vector (as [`axpy`]), then the dot product of `z` with
/// each updated `w_m` (as [`dot`]), in one pass (`level2::axpy_dot`).
#[target_feature(enable = "avx512f")]
#[inline]
fn axpy_dot<const M: usize>(
    alpha: [f64; M],
    x: &[f64],
    ws: &mut [&mut [f64]; M],
    z: &[f64],
) -> [f64; M] {
    let n = x.len();
    let z = &z[..n];
    let mut av = [_mm512_setzero_pd(); M];
    for m in 0..M {
        av[m] = _mm512_set1_pd(alpha[m]);
    }
    let mut acc = [DotAccumulators::new(); M];
    let mut j = 0;
    while j + 2 * LANES <= n {
        for h in 0..2 {
            let k = j + h * LANES;
            let (xv, zv) = (load(x, k), load(z, k));
            for m in 0..M {
                let updated = _mm512_fmadd_pd(av[m], xv, load(ws[m], k));
                store(updated, ws[m], k);
                acc[m].0[h] = _mm512_fmadd_pd(zv, updated, acc[m].0[h]);
            }
        }
        j += 2 * LANES;
    }
    while j + HALF <= n {
        let (xv, zv) = (load_low(x, j), load_low(z, j));
        for m in 0..M {
            let updated = _mm512_fmadd_pd(av[m], xv, load_low(ws[m], j));
            store_low(updated, ws[m], j);
            acc[m].0[0] = fma_low(zv, updated, acc[m].0[0]);
        }
        j += HALF;
    }
    let mut sums = [0.0; M];
    for m in 0..M {
        sums[m] = acc[m].sum();
        let w = &mut ws[m];
        for t in j..n {
            w[t] += alpha[m] * x[t];
            sums[m] += z[t] * w[t];
        }
    }
    sums
}

#[target_feature(enable = "avx512f")]
fn project_out_rows<const M: usize>(q: &[f64], dim: usize, ws: &mut [&mut [f64]; M]) {
    let rows: Vec<&[f64]> = q.chunks_exact(dim).collect();
    let Some(first) = rows.first() else { return };
    let mut c = [0.0; M];
    for m in 0..M {
        c[m] = dot(first, ws[m]);
    }
    for (k, qk) in rows.iter().enumerate() {
        let mut alpha = c;
        for al in &mut alpha {
            *al = -*al;
        }
        match rows.get(k + 1) {
            Some(next) => c = axpy_dot::<M>(alpha, qk, ws, next),
            None => {
                for (w, &al) in ws.iter_mut().zip(&alpha) {
                    axpy(al, qk, w);
                }
            }
        }
    }
}
