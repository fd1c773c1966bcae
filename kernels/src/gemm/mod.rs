//! GEMM: `C <- alpha op(A) op(B) + beta C`, packed and blocked in the BLIS style.
//!
//! # Algorithm
//!
//! With `op(A)` m x k, `op(B)` k x n and C m x n, the product is blocked in five loops around a
//! register-blocked microkernel (`gemm/microkernel.rs`, the only SIMD code):
//!
//! ```text
//! for jc in column panels of C and B, NC wide          (B block of KC x NC lives in L3)
//!   for pc in depth panels, KC deep, in order          (fixes the reduction order over k)
//!     pack op(B)[pc.., jc..] into NR-wide micro-panels
//!     for ic in row panels of C and A, MC tall         (A block of MC x KC lives in L2; the
//!       pack op(A)[ic.., pc..] into MR-tall micro-panels      parallel loop: one task each)
//!       for jr in NR-wide column strips of the B block (B micro-panel lives in L1)
//!         for ir in MR-tall row strips of the A block
//!           AB = A micro-panel x B micro-panel         (MR x NR accumulators in registers)
//!           C tile <- alpha AB + beta' C tile          (beta' = beta on the first depth
//!                                                        panel, 1 afterwards)
//! ```
//!
//! # Determinism
//!
//! Element `C[i][j]` is computed as: for each depth panel in order, an FMA chain over the panel
//! in order of `p`, scaled by alpha and added to C. KC is a per-type constant, so this order
//! depends only on `k`; threads only decide *which* row panels a task owns, never how an
//! element is summed, and partial edge tiles use the same arithmetic as full tiles. Results
//! are therefore bit-identical for any rayon pool size.
//!
//! # Threads and buffers
//!
//! Calls with at least [`GEMM_PARALLEL_MIN_MULADDS`] multiply-adds run on the current rayon
//! pool: per depth panel, the B block is packed by column ranges in parallel, then each task
//! packs and multiplies one row panel of at most MC rows (at least one task per thread when
//! `m` allows: C is split by rows only, so `m <= MR` runs on one thread). Packing buffers are
//! thread-local `Vec`s of SIMD vectors (32-byte aligned), reused across calls and bounded by
//! the blocking (`KC x NC` for B, `MC x KC` for A): at most 8 MB + 288 KB per thread.
//!
//! # Edge cases
//!
//! `beta == 0` never reads C (NaN already in C does not leak). `k == 0` or `alpha == 0` reduce
//! to `C <- beta C` without reading A or B (the BLAS convention).

mod microkernel;
mod pack;

use rayon::prelude::*;
use std::cell::Cell;
use std::thread::LocalKey;
use wide::{f32x8, f64x4};

use crate::Float;
#[doc(hidden)]
pub use microkernel::{microkernel, prefetch_tile, write_back, Lanes, Tile, MR, NR_VECTORS};
use pack::{pack_a, pack_b, Operand};

/// Whether an operand is used as stored (`No`) or transposed (`Yes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transpose {
    No,
    Yes,
}

/// Problems with fewer multiply-adds (`m * n * k`) than this run on the calling thread: below
/// about 2M multiply-adds (roughly 50 µs on one core) rayon's fork/join per depth panel costs
/// more than the second core brings.
pub const GEMM_PARALLEL_MIN_MULADDS: usize = 1 << 21;

/// Cache blocking of one element type (exposed for the edge-case tests).
#[doc(hidden)]
#[derive(Clone, Copy, Debug)]
pub struct Blocking {
    /// Rows of a microkernel tile.
    pub mr: usize,
    /// Columns of a microkernel tile.
    pub nr: usize,
    /// Depth of a panel.
    pub kc: usize,
    /// Rows of an A block; a multiple of `mr`.
    pub mc: usize,
    /// Columns of a B block; a multiple of `nr`.
    pub nc: usize,
}

/// f32: 6 x 16 tiles (12 `f32x8` accumulators).
#[doc(hidden)]
pub const SGEMM_BLOCKING: Blocking = Blocking {
    mr: MR,
    nr: 16,
    kc: 256,
    mc: 168,
    nc: 4080,
};

/// f64: 6 x 8 tiles (12 `f64x4` accumulators).
#[doc(hidden)]
pub const DGEMM_BLOCKING: Blocking = Blocking {
    mr: MR,
    nr: 8,
    kc: 256,
    mc: 144,
    nc: 4080,
};

/// An element type with a SIMD GEMM: its vector type and cache blocking.
///
/// The blocking starts from BLIS's Haswell choices for the same 6 x 16 / 6 x 8 microkernels: a
/// `KC x NR` B micro-panel (16 KB) plus an `MR x KC` A micro-panel (6 KB f32, 12 KB f64) stay
/// in L1, the `MC x KC` A block (168 KB f32, 288 KB f64) in L2, the `KC x NC` B block (4 MB
/// f32, 8 MB f64) in L3. Other choices (KC 384, MC 72..168, NC 1024..4080) measured within
/// the noise of the shared benchmark machine; f64 MC was raised from BLIS's 72 to 144.
pub(crate) trait GemmScalar: Float + bytemuck::Pod {
    type Vector: Lanes<Scalar = Self>;
    /// Depth of a panel; also fixes the reduction order (see the module docs).
    const KC: usize;
    /// Rows of an A block; a multiple of `MR`.
    const MC: usize;
    /// Columns of a B block; a multiple of `NR`.
    const NC: usize;
}

impl GemmScalar for f32 {
    type Vector = f32x8;
    const KC: usize = SGEMM_BLOCKING.kc;
    const MC: usize = SGEMM_BLOCKING.mc;
    const NC: usize = SGEMM_BLOCKING.nc;
}

impl GemmScalar for f64 {
    type Vector = f64x4;
    const KC: usize = DGEMM_BLOCKING.kc;
    const MC: usize = DGEMM_BLOCKING.mc;
    const NC: usize = DGEMM_BLOCKING.nc;
}

// The blocking tables agree with the vector types and with each other.
const _: () = {
    assert!(SGEMM_BLOCKING.nr == <f32x8 as Lanes>::NR && DGEMM_BLOCKING.nr == <f64x4 as Lanes>::NR);
    assert!(SGEMM_BLOCKING.mc % MR == 0 && SGEMM_BLOCKING.nc % SGEMM_BLOCKING.nr == 0);
    assert!(DGEMM_BLOCKING.mc % MR == 0 && DGEMM_BLOCKING.nc % DGEMM_BLOCKING.nr == 0);
};

/// `C <- alpha op(A) op(B) + beta C`, `op(A)` m x k, `op(B)` k x n, C m x n (row-major).
///
/// `ta == No`: A stored m x k (`lda >= k`); `ta == Yes`: A stored k x m (`lda >= m`). Same for B
/// (`tb == No`: stored k x n, `ldb >= n`; `Yes`: stored n x k, `ldb >= k`); `ldc >= n`.
/// `beta == 0` never reads C. Runs on the current rayon pool when `m * n * k` is at least
/// [`GEMM_PARALLEL_MIN_MULADDS`]; results are bit-identical for any pool size.
///
/// # Panics
///
/// If a leading dimension is smaller than the width it strides over, or a slice is too short
/// for the elements it must hold (the crate contract: a programming error, never silent).
#[allow(clippy::too_many_arguments)]
pub fn gemm<T: Float>(
    ta: Transpose,
    tb: Transpose,
    m: usize,
    n: usize,
    k: usize,
    alpha: T,
    a: &[T],
    lda: usize,
    b: &[T],
    ldb: usize,
    beta: T,
    c: &mut [T],
    ldc: usize,
) {
    T::gemm_dispatch(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

/// Panics with a message naming `name` unless a `rows x cols` matrix with leading dimension
/// `ld` fits in `len` elements.
fn check_operand(name: &str, rows: usize, cols: usize, ld: usize, len: usize) {
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(
        ld >= cols,
        "gemm: leading dimension of {name} is {ld}, must be >= {cols}"
    );
    let needed = (rows - 1) * ld + cols;
    assert!(
        len >= needed,
        "gemm: {name} has {len} elements, a {rows} x {cols} matrix with leading dimension {ld} needs {needed}"
    );
}

/// The typed body of [`gemm`], reached through `Float::gemm_dispatch`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_packed<S: GemmScalar>(
    ta: Transpose,
    tb: Transpose,
    m: usize,
    n: usize,
    k: usize,
    alpha: S,
    a: &[S],
    lda: usize,
    b: &[S],
    ldb: usize,
    beta: S,
    c: &mut [S],
    ldc: usize,
) {
    let (a_rows, a_cols) = if ta == Transpose::No { (m, k) } else { (k, m) };
    let (b_rows, b_cols) = if tb == Transpose::No { (k, n) } else { (n, k) };
    check_operand("A", a_rows, a_cols, lda, a.len());
    check_operand("B", b_rows, b_cols, ldb, b.len());
    check_operand("C", m, n, ldc, c.len());
    if m == 0 || n == 0 {
        return;
    }
    let c = &mut c[..(m - 1) * ldc + n];
    if k == 0 || alpha == S::ZERO {
        scale_c(beta, c, m, n, ldc);
        return;
    }
    let a = Operand {
        data: a,
        ld: lda,
        trans: ta,
    };
    let b = Operand {
        data: b,
        ld: ldb,
        trans: tb,
    };
    let nr = S::Vector::NR;
    let parallel_tasks = if m.saturating_mul(n).saturating_mul(k) >= GEMM_PARALLEL_MIN_MULADDS {
        rayon::current_num_threads().min(m.div_ceil(MR))
    } else {
        1
    };

    // loop over the NC-wide column panels of C and B
    for jc in (0..n).step_by(S::NC) {
        let cols = jc..n.min(jc + S::NC);
        // loop over the KC-deep depth panels, always in increasing order
        for pc in (0..k).step_by(S::KC) {
            let depth = pc..k.min(pc + S::KC);
            let beta_panel = if pc == 0 { beta } else { S::ONE };
            let b_vectors = depth.len() * cols.len().div_ceil(nr) * NR_VECTORS;
            with_pack_buffer::<S::Vector, _>(&PACK_B, b_vectors, |b_pack| {
                if parallel_tasks > 1 {
                    // packing is a few percent of the work: split it too (by columns, so each
                    // task fills whole micro-panels; the packed values do not depend on it)
                    let panels = cols.len().div_ceil(nr);
                    let panels_per_task = panels.div_ceil(parallel_tasks);
                    let panel_len = depth.len() * NR_VECTORS;
                    b_pack
                        .par_chunks_mut(panels_per_task * panel_len)
                        .enumerate()
                        .for_each(|(t, b_part)| {
                            let first = cols.start + t * panels_per_task * nr;
                            let part = first..cols.end.min(first + panels_per_task * nr);
                            pack_b::<S::Vector>(b_part, b, depth.clone(), part);
                        });
                } else {
                    pack_b::<S::Vector>(b_pack, b, depth.clone(), cols.clone());
                }
                let b_pack: &[S::Vector] = b_pack;
                let row_block = |c_rows: &mut [S], rows: std::ops::Range<usize>| {
                    row_panel(
                        c_rows,
                        ldc,
                        a,
                        rows,
                        depth.clone(),
                        cols.clone(),
                        b_pack,
                        alpha,
                        beta_panel,
                    )
                };
                if parallel_tasks > 1 {
                    // loop over the row panels of C, one rayon task each: as many tasks as
                    // needed for MC-row blocks, at least one per thread
                    let tasks = m.div_ceil(S::MC).max(parallel_tasks);
                    let rows_per_task = m.div_ceil(tasks).next_multiple_of(MR);
                    c.par_chunks_mut(rows_per_task * ldc)
                        .enumerate()
                        .for_each(|(t, c_rows)| {
                            let first = t * rows_per_task;
                            row_block(c_rows, first..m.min(first + rows_per_task));
                        });
                } else {
                    // loop over the MC-tall row panels of C
                    for (t, c_rows) in c.chunks_mut(S::MC * ldc).enumerate() {
                        let first = t * S::MC;
                        row_block(c_rows, first..m.min(first + S::MC));
                    }
                }
            });
        }
    }
}

/// One row panel: packs `op(A)[rows, depth]` and updates `C[rows, cols]` (whose first row is
/// `c_rows[0..]`) with the packed B block, tile by tile.
#[allow(clippy::too_many_arguments)]
fn row_panel<S: GemmScalar>(
    c_rows: &mut [S],
    ldc: usize,
    a: Operand<'_, S>,
    rows: std::ops::Range<usize>,
    depth: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
    b_pack: &[S::Vector],
    alpha: S,
    beta: S,
) {
    let kc = depth.len();
    let mc = rows.len();
    let nr = S::Vector::NR;
    let a_vectors = (mc.div_ceil(MR) * MR * kc).div_ceil(S::Vector::LANES);
    with_pack_buffer::<S::Vector, _>(&PACK_A, a_vectors, |a_pack| {
        let a_pack: &mut [S] = bytemuck::cast_slice_mut(a_pack);
        pack_a(a_pack, a, rows, depth);
        // loop over the NR-wide strips of the B block
        for (jr, b_panel) in b_pack.chunks_exact(kc * NR_VECTORS).enumerate() {
            let first_col = cols.start + jr * nr;
            let tile_cols = nr.min(cols.end - first_col);
            // loop over the MR-tall strips of the A block
            for (ir, a_panel) in a_pack
                .chunks_exact(kc * MR)
                .take(mc.div_ceil(MR))
                .enumerate()
            {
                let tile_rows = MR.min(mc - ir * MR);
                let c_tile = &mut c_rows[ir * MR * ldc + first_col..];
                prefetch_tile(c_tile, ldc, tile_rows);
                let ab = microkernel::<S::Vector>(kc, a_panel, b_panel);
                write_back::<S::Vector>(&ab, alpha, beta, c_tile, ldc, tile_rows, tile_cols);
            }
        }
    });
}

/// `C <- beta C` without reading C when `beta == 0`.
fn scale_c<S: Float>(beta: S, c: &mut [S], m: usize, n: usize, ldc: usize) {
    for row in c.chunks_mut(ldc).take(m) {
        let row = &mut row[..n];
        if beta == S::ZERO {
            row.fill(S::ZERO);
        } else {
            row.iter_mut().for_each(|x| *x *= beta);
        }
    }
}

thread_local! {
    /// Packed A block of the row panel this thread is working on.
    static PACK_A: Cell<Vec<f64x4>> = const { Cell::new(Vec::new()) };
    /// Packed B block of the GEMM call this thread is driving.
    static PACK_B: Cell<Vec<f64x4>> = const { Cell::new(Vec::new()) };
}

/// Runs `f` on a thread-local buffer of `len` vectors (32-byte aligned), reused across calls.
///
/// The buffer is taken out of its slot for the duration of `f`, so a nested call on the same
/// thread (rayon may run another task while this one waits) simply gets a fresh buffer.
fn with_pack_buffer<V: Lanes, R>(
    slot: &'static LocalKey<Cell<Vec<f64x4>>>,
    len: usize,
    f: impl FnOnce(&mut [V]) -> R,
) -> R {
    let mut buffer = slot.with(Cell::take);
    if buffer.len() < len {
        buffer.resize(len, f64x4::ZERO);
    }
    // f64x4 and both vector types are 32 bytes with 32-byte alignment: the cast cannot fail.
    let result = f(bytemuck::cast_slice_mut(&mut buffer[..len]));
    slot.with(|cell| cell.set(buffer));
    result
}
