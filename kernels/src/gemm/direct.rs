//! Direct GEMM for small and skinny problems: `C <- alpha op(A) op(B) + beta C` computed
//! straight from the strided operands, without packing.
//!
//! # Why
//!
//! The packed path (`gemm/mod.rs`) copies `op(A)` and `op(B)` into micro-panels before
//! multiplying. For tiny products (per-head attention: 50 x 50 x 16, 50 x 16 x 50) that copy and
//! the padding of the 12 x 32 tiles cost more than the product; for skinny ones (20 rows times
//! a 2000 x 2000 weight) packing B reads and writes 16 MB to use every value only 20 times.
//! Here the operands are read in place by register-blocked `wide` kernels (f32x8 / f64x4).
//!
//! # Kernels
//!
//! Every transpose combination maps onto one of two register-blocked kernels:
//!
//! ```text
//! axpy form  V[r][c] = sum_p X[r][p] Y[p][c]   Y rows contiguous: vectors along c, X broadcast
//!   (No,  No ):  V = C,    X = A (rows),     Y = B          (k x n as stored)
//!   (Yes, No ):  V = C,    X = A (columns),  Y = B
//!   (Yes, Yes):  V = C^T,  X = B (rows),     Y = A          (C^T = B_stored A_stored)
//! dot form   C[i][j] = sum_p A[i][p] B[j][p]    (No, Yes): rows of A and rows of B (x W^T)
//!            are both contiguous along k: vectors along p, one horizontal sum per element
//! ```
//!
//! The axpy kernel keeps a 4 x 3-vector block of `V` in 12 registers (4 x 24 for f32, 4 x 12
//! for f64); the dot kernel keeps 4 rows of A against 3 rows of B (12 vector accumulators).
//! For the axpy form with `Y = B` streamed from memory (`k > DEPTH_BLOCK`), the depth is
//! blocked so a `DEPTH_BLOCK x COLUMN_BLOCK` slab of B stays in L1 while every row of `V` uses
//! it; partial sums wait in a small buffer between depth blocks (storing a float and loading it
//! back is exact, so this does not change a bit).
//!
//! # Arithmetic and determinism
//!
//! Element `C[i][j]` is `alpha * s + beta * C[i][j]` (one fused multiply-add; `beta == 0`
//! never reads C), where `s` is
//! - axpy form: one FMA chain over `p = 0, 1, .., k - 1` in order (each lane of a vector is
//!   its own element; columns past the last full vector use a zero-padded vector, same lanes);
//! - dot form: `LANES` FMA chains, lane `l` over `p = l, l + LANES, ..` in order (the last
//!   partial vector zero-padded), then `Simd::hsum` of the lanes in its fixed order.
//!
//! Neither depends on where a register block, a column chunk or a thread boundary falls, so
//! the result is a function of the shape only: bit-identical for any rayon pool size. It
//! differs in the last bits from the packed path (another summation grouping), which is why
//! the choice between the two ([`use_direct`]) depends on the shape only too.
//!
//! # Threads
//!
//! Problems of at least [`super::GEMM_PARALLEL_MIN_MULADDS`] multiply-adds are split over the
//! current rayon pool in fixed chunks of [`PARALLEL_COLUMNS`] columns of C.

use std::array;
use std::cell::Cell;
use std::ops::Range;

use rayon::prelude::*;

use super::{Transpose, GEMM_PARALLEL_MIN_MULADDS};
use crate::simd::{cast, cast_mut, dispatch, same, Simd};
use crate::Float;

/// Problems with at most this many multiply-adds (`m * n * k`) take the direct path whatever
/// their shape: below it, packing A and B and padding to whole tiles cost more than the
/// product. Measured with `cargo bench --bench gemm -- direct` (see `benches/gemm.rs`).
pub const DIRECT_MAX_MULADDS: usize = 1 << 18;

/// Products with at most this many rows of C (`m`) take the direct path whatever `n` and `k`:
/// each value of B is then used at most this many times, too few to repay packing it.
pub const DIRECT_MAX_ROWS: usize = 32;

/// Columns of C per parallel task: a multiple of every register block width (24 and 12
/// columns in the axpy form, 3 rows of B in the dot form) and of 4 (the row block of the
/// transposed axpy form), fixed so that the split depends on the shape only.
pub const PARALLEL_COLUMNS: usize = 96;

/// Depth of one block of B in the axpy form when B is streamed (`k` larger than this): with
/// [`COLUMN_BLOCK`] columns it is a 24 KB (f32) slab that stays in L1 while all rows of C use it.
const DEPTH_BLOCK: usize = 64;

/// Columns of C per slab of B in the axpy form (four 24-column f32 blocks, eight f64 ones).
const COLUMN_BLOCK: usize = 96;

/// Rows of the register block of the axpy form.
const AXPY_ROWS: usize = 4;
/// Vectors per row of the register block of the axpy form.
const AXPY_VECTORS: usize = 3;
/// Rows of A in the register block of the dot form.
const DOT_ROWS_A: usize = 4;
/// Rows of B in the register block of the dot form.
const DOT_ROWS_B: usize = 3;

const _: () = assert!(
    PARALLEL_COLUMNS.is_multiple_of(AXPY_ROWS)
        && PARALLEL_COLUMNS.is_multiple_of(DOT_ROWS_B)
        && PARALLEL_COLUMNS.is_multiple_of(24)
        && COLUMN_BLOCK.is_multiple_of(24)
);

/// Which GEMM algorithm a call uses: chosen by shape ([`use_direct`]) unless overridden with
/// [`with_gemm_path`] (tests and benchmarks).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GemmPath {
    /// By shape: direct for small and skinny problems, packed otherwise.
    Auto,
    /// Always the packed, blocked path.
    Packed,
    /// Always the direct path of this module.
    Direct,
}

thread_local! {
    /// A per-thread override of the shape rule, set by [`with_gemm_path`].
    static PATH_OVERRIDE: Cell<GemmPath> = const { Cell::new(GemmPath::Auto) };
}

/// Runs `f` with GEMM calls made *from this thread* using `path` (the work they spread over
/// rayon follows the caller's choice). For tests and benchmarks of both paths in one process.
#[doc(hidden)]
pub fn with_gemm_path<R>(path: GemmPath, f: impl FnOnce() -> R) -> R {
    let previous = PATH_OVERRIDE.with(|cell| cell.replace(path));
    let result = f();
    PATH_OVERRIDE.with(|cell| cell.set(previous));
    result
}

/// Whether `gemm` sends an `m x n x k` product to the direct path: when it has at most
/// [`DIRECT_MAX_MULADDS`] multiply-adds or at most [`DIRECT_MAX_ROWS`] rows, unless
/// [`with_gemm_path`] says otherwise. A function of the shape only (see the module docs).
pub fn use_direct(m: usize, n: usize, k: usize) -> bool {
    match PATH_OVERRIDE.with(Cell::get) {
        GemmPath::Packed => false,
        GemmPath::Direct => true,
        GemmPath::Auto => {
            m.saturating_mul(n).saturating_mul(k) <= DIRECT_MAX_MULADDS || m <= DIRECT_MAX_ROWS
        }
    }
}

/// `C <- alpha op(A) op(B) + beta C` by the direct path. The caller (`gemm`) has checked the
/// operands and handled `m == 0`, `n == 0`, `k == 0` and `alpha == 0`; `c` ends at the last
/// element of C.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_direct<T: Float>(
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
    dispatch!(T, S => direct::<S>(
        ta,
        tb,
        Shape { m, n, k },
        Scalars { alpha: same(alpha), beta: same(beta) },
        (cast(a), lda),
        (cast(b), ldb),
        cast_mut(c),
        ldc,
    ))
}

#[derive(Clone, Copy)]
struct Shape {
    m: usize,
    n: usize,
    k: usize,
}

#[derive(Clone, Copy)]
struct Scalars<S> {
    alpha: S,
    beta: S,
}

/// Rows of C restricted to a range of columns `first..`: `row(i)[j - first]` is `C[i][j]`.
trait OutRows<S> {
    fn row(&mut self, i: usize) -> &mut [S];
}

/// All of C, from column `first`.
struct Strided<'a, S> {
    c: &'a mut [S],
    ldc: usize,
    first: usize,
}

impl<S> OutRows<S> for Strided<'_, S> {
    #[inline(always)]
    fn row(&mut self, i: usize) -> &mut [S] {
        &mut self.c[i * self.ldc + self.first..]
    }
}

/// One parallel task's column range of every row of C.
struct Split<'s, 'a, S>(&'s mut [&'a mut [S]]);

impl<S> OutRows<S> for Split<'_, '_, S> {
    #[inline(always)]
    fn row(&mut self, i: usize) -> &mut [S] {
        &mut *self.0[i]
    }
}

#[allow(clippy::too_many_arguments)]
fn direct<S: Simd>(
    ta: Transpose,
    tb: Transpose,
    shape: Shape,
    scalars: Scalars<S>,
    a: (&[S], usize),
    b: (&[S], usize),
    c: &mut [S],
    ldc: usize,
) {
    let Shape { m, n, k } = shape;
    let parallel = m.saturating_mul(n).saturating_mul(k) >= GEMM_PARALLEL_MIN_MULADDS
        && rayon::current_num_threads() > 1
        && n > PARALLEL_COLUMNS;
    if !parallel {
        let mut out = Strided { c, ldc, first: 0 };
        columns(ta, tb, shape, scalars, a, b, 0..n, &mut out);
        return;
    }
    // loop over fixed chunks of PARALLEL_COLUMNS columns of C, one rayon task each
    let chunks = n.div_ceil(PARALLEL_COLUMNS);
    let mut parts: Vec<Vec<&mut [S]>> = (0..chunks).map(|_| Vec::with_capacity(m)).collect();
    for c_row in c.chunks_mut(ldc).take(m) {
        let mut rest = &mut c_row[..n];
        for part in &mut parts {
            let (head, tail) = rest.split_at_mut(PARALLEL_COLUMNS.min(rest.len()));
            part.push(head);
            rest = tail;
        }
    }
    parts
        .into_par_iter()
        .enumerate()
        .for_each(|(chunk, mut rows)| {
            let first = chunk * PARALLEL_COLUMNS;
            let cols = first..n.min(first + PARALLEL_COLUMNS);
            columns(ta, tb, shape, scalars, a, b, cols, &mut Split(&mut rows));
        });
}

/// Columns `cols` of C (all rows), by the kernel of the transpose combination.
#[allow(clippy::too_many_arguments)]
fn columns<S: Simd, O: OutRows<S>>(
    ta: Transpose,
    tb: Transpose,
    shape: Shape,
    scalars: Scalars<S>,
    (a, lda): (&[S], usize),
    (b, ldb): (&[S], usize),
    cols: Range<usize>,
    out: &mut O,
) {
    let Shape { m, k, .. } = shape;
    let first = cols.start;
    match (ta, tb) {
        (Transpose::No, Transpose::No) | (Transpose::Yes, Transpose::No) => {
            let x = XView {
                data: a,
                ld: lda,
                column_major: ta == Transpose::Yes,
            };
            let view = AxpyView {
                x,
                y: b,
                ldy: ldb,
                k,
                transposed: false,
                first,
            };
            axpy_form(&view, 0..m, cols, scalars, k > DEPTH_BLOCK, out);
        }
        (Transpose::Yes, Transpose::Yes) => {
            // C^T = B_stored A_stored: V rows are columns of C, V columns are rows of C
            let x = XView {
                data: b,
                ld: ldb,
                column_major: false,
            };
            let view = AxpyView {
                x,
                y: a,
                ldy: lda,
                k,
                transposed: true,
                first,
            };
            axpy_form(&view, cols, 0..m, scalars, false, out);
        }
        (Transpose::No, Transpose::Yes) => dot_form(a, lda, b, ldb, m, cols, k, scalars, out),
    }
}

/// `X[r][p]`: `data[r * ld + p]` (row-major) or `data[p * ld + r]` (`column_major`).
#[derive(Clone, Copy)]
struct XView<'a, S> {
    data: &'a [S],
    ld: usize,
    column_major: bool,
}

/// The axpy form `V = X Y` of one call: `Y[p][c] = y[p * ldy + c]`, and `V[r][c]` is
/// `C[r][c]`, or `C[c][r]` when `transposed`. `first` is the first column of C the output
/// rows start at.
struct AxpyView<'a, S> {
    x: XView<'a, S>,
    y: &'a [S],
    ldy: usize,
    k: usize,
    transposed: bool,
    first: usize,
}

/// `V[rows][cols] <- alpha X Y + beta V` in register blocks; with `block_depth`, blocked over
/// the depth in slabs of `DEPTH_BLOCK x COLUMN_BLOCK` (see the module docs).
fn axpy_form<S: Simd, O: OutRows<S>>(
    view: &AxpyView<'_, S>,
    rows: Range<usize>,
    cols: Range<usize>,
    scalars: Scalars<S>,
    block_depth: bool,
    out: &mut O,
) {
    let k = view.k;
    if !block_depth {
        axpy_depth_block(view, rows, cols, 0..k, None, Some(scalars), out);
        return;
    }
    let mut partial = vec![S::ZERO; rows.len() * COLUMN_BLOCK];
    // loop over COLUMN_BLOCK-wide slabs of Y
    for slab_start in cols.clone().step_by(COLUMN_BLOCK) {
        let slab = slab_start..cols.end.min(slab_start + COLUMN_BLOCK);
        // loop over the depth blocks, in order
        for depth_start in (0..k).step_by(DEPTH_BLOCK) {
            let depth = depth_start..k.min(depth_start + DEPTH_BLOCK);
            let last = depth.end == k;
            let partial = Partial {
                sums: &mut partial,
                first_row: rows.start,
                first_col: slab.start,
                fresh: depth_start == 0,
            };
            let finish = if last { Some(scalars) } else { None };
            axpy_depth_block(
                view,
                rows.clone(),
                slab.clone(),
                depth,
                Some(partial),
                finish,
                out,
            );
        }
    }
}

/// Raw sums of a `rows x COLUMN_BLOCK` part of V carried between depth blocks (row-major,
/// leading dimension COLUMN_BLOCK); `fresh`: this is the first depth block (start from zero).
struct Partial<'p, S> {
    sums: &'p mut [S],
    first_row: usize,
    first_col: usize,
    fresh: bool,
}

/// One depth range of the axpy form over `rows x cols` of V, register block by register
/// block. Accumulators start from zero (`partial` absent or fresh) or from `partial`; they end
/// in `partial` unless `finish` gives the scalars of the final write to C.
fn axpy_depth_block<S: Simd, O: OutRows<S>>(
    view: &AxpyView<'_, S>,
    rows: Range<usize>,
    cols: Range<usize>,
    depth: Range<usize>,
    mut partial: Option<Partial<'_, S>>,
    finish: Option<Scalars<S>>,
    out: &mut O,
) {
    let lanes = S::LANES;
    // loop over the AXPY_ROWS-tall row blocks of V
    let mut row = rows.start;
    while row < rows.end {
        let height = AXPY_ROWS.min(rows.end - row);
        // loop over the column blocks: 3 vectors, then the last 1 or 2, then a partial one
        let mut col = cols.start;
        while col < cols.end {
            let remaining = cols.end - col;
            let (vectors, width) = if remaining >= AXPY_VECTORS * lanes {
                (AXPY_VECTORS, AXPY_VECTORS * lanes)
            } else if remaining >= lanes {
                (remaining / lanes, remaining / lanes * lanes)
            } else {
                (1, remaining)
            };
            let block = Block {
                row,
                col,
                width,
                depth: depth.clone(),
            };
            match (height, vectors) {
                (4, 3) => axpy_block::<S, 4, 3, O>(view, &block, &mut partial, finish, out),
                (4, 2) => axpy_block::<S, 4, 2, O>(view, &block, &mut partial, finish, out),
                (4, _) => axpy_block::<S, 4, 1, O>(view, &block, &mut partial, finish, out),
                (3, 3) => axpy_block::<S, 3, 3, O>(view, &block, &mut partial, finish, out),
                (3, 2) => axpy_block::<S, 3, 2, O>(view, &block, &mut partial, finish, out),
                (3, _) => axpy_block::<S, 3, 1, O>(view, &block, &mut partial, finish, out),
                (2, 3) => axpy_block::<S, 2, 3, O>(view, &block, &mut partial, finish, out),
                (2, 2) => axpy_block::<S, 2, 2, O>(view, &block, &mut partial, finish, out),
                (2, _) => axpy_block::<S, 2, 1, O>(view, &block, &mut partial, finish, out),
                (_, 3) => axpy_block::<S, 1, 3, O>(view, &block, &mut partial, finish, out),
                (_, 2) => axpy_block::<S, 1, 2, O>(view, &block, &mut partial, finish, out),
                (_, _) => axpy_block::<S, 1, 1, O>(view, &block, &mut partial, finish, out),
            }
            col += width;
        }
        row += height;
    }
}

/// A register block of V: rows `row..row + R`, columns `col..col + width` (`width` is `NV`
/// whole vectors, or fewer than one vector's lanes with `NV == 1`), over `depth`.
struct Block {
    row: usize,
    col: usize,
    width: usize,
    depth: Range<usize>,
}

/// `V` values `Y[p][col..col + width]` as `NV` vectors, zero-padded past `width`.
#[inline(always)]
fn load_row<S: Simd, const NV: usize>(y_row: &[S], width: usize) -> [S::V; NV] {
    let lanes = S::LANES;
    if width == NV * lanes {
        let y_row = &y_row[..NV * lanes];
        array::from_fn(|v| S::load(&y_row[v * lanes..][..lanes]))
    } else {
        let mut padded = [S::ZERO; 8];
        padded[..width].copy_from_slice(&y_row[..width]);
        array::from_fn(|_| S::load(&padded[..lanes]))
    }
}

/// The rank-`depth` update of one `R x NV`-vector register block, then its write (see
/// [`axpy_depth_block`]).
#[inline(always)]
fn axpy_block<S: Simd, const R: usize, const NV: usize, O: OutRows<S>>(
    view: &AxpyView<'_, S>,
    block: &Block,
    partial: &mut Option<Partial<'_, S>>,
    finish: Option<Scalars<S>>,
    out: &mut O,
) {
    let lanes = S::LANES;
    let Block {
        row,
        col,
        width,
        ref depth,
    } = *block;
    let mut acc = [[S::splat(S::ZERO); NV]; R];
    if let Some(partial) = partial.as_ref().filter(|partial| !partial.fresh) {
        for (r, acc_row) in acc.iter_mut().enumerate() {
            let start = (row + r - partial.first_row) * COLUMN_BLOCK + col - partial.first_col;
            let sums = &partial.sums[start..][..NV * lanes];
            *acc_row = array::from_fn(|v| S::load(&sums[v * lanes..][..lanes]));
        }
    }
    let y = &view.y[col..];
    let ldy = view.ldy;
    let x = view.x;
    // loop over the depth: one rank-1 update of the block per step
    if x.column_major {
        for p in depth.clone() {
            let y_row: [S::V; NV] = load_row::<S, NV>(&y[p * ldy..], width);
            let x_column = &x.data[p * x.ld + row..][..R];
            for (acc_row, &x_value) in acc.iter_mut().zip(x_column) {
                let x_value = S::splat(x_value);
                for (acc, &y_value) in acc_row.iter_mut().zip(&y_row) {
                    *acc = S::fma(x_value, y_value, *acc);
                }
            }
        }
    } else {
        let x_rows: [&[S]; R] =
            array::from_fn(|r| &x.data[(row + r) * x.ld + depth.start..][..depth.len()]);
        for (step, p) in depth.clone().enumerate() {
            let y_row: [S::V; NV] = load_row::<S, NV>(&y[p * ldy..], width);
            for (acc_row, x_row) in acc.iter_mut().zip(&x_rows) {
                let x_value = S::splat(x_row[step]);
                for (acc, &y_value) in acc_row.iter_mut().zip(&y_row) {
                    *acc = S::fma(x_value, y_value, *acc);
                }
            }
        }
    }
    match finish {
        None => {
            let partial = partial
                .as_mut()
                .expect("gemm direct: a depth block without its partial sums");
            for (r, acc_row) in acc.iter().enumerate() {
                let start = (row + r - partial.first_row) * COLUMN_BLOCK + col - partial.first_col;
                let sums = &mut partial.sums[start..][..NV * lanes];
                for (v, &acc) in acc_row.iter().enumerate() {
                    S::store(acc, &mut sums[v * lanes..][..lanes]);
                }
            }
        }
        Some(scalars) if !view.transposed => write_rows::<S, R, NV, O>(
            &acc,
            row,
            col - view.first,
            width,
            scalars,
            out,
        ),
        Some(scalars) => write_transposed::<S, R, NV, O>(
            &acc,
            row - view.first,
            col,
            width,
            scalars,
            out,
        ),
    }
}

/// `C[row + r][col + c] <- alpha acc + beta C` for the block (`col` relative to the output
/// rows), whole vectors where the block is whole.
#[inline(always)]
fn write_rows<S: Simd, const R: usize, const NV: usize, O: OutRows<S>>(
    acc: &[[S::V; NV]; R],
    row: usize,
    col: usize,
    width: usize,
    Scalars { alpha, beta }: Scalars<S>,
    out: &mut O,
) {
    let lanes = S::LANES;
    let (alpha_v, beta_v) = (S::splat(alpha), S::splat(beta));
    for (r, acc_row) in acc.iter().enumerate() {
        let c_row = &mut out.row(row + r)[col..][..width];
        if width == NV * lanes {
            for (c_lanes, &acc) in c_row.chunks_exact_mut(lanes).zip(acc_row) {
                let scaled = acc * alpha_v;
                let result = if beta == S::ZERO {
                    scaled
                } else {
                    S::fma(beta_v, S::load(c_lanes), scaled)
                };
                S::store(result, c_lanes);
            }
        } else {
            let mut sums = [S::ZERO; 8];
            S::store(acc_row[0], &mut sums[..lanes]);
            for (c_value, &sum) in c_row.iter_mut().zip(&sums) {
                *c_value = scale_add(sum, alpha, beta, *c_value);
            }
        }
    }
}

/// `C[col + c][row + r] <- alpha acc[r][c] + beta C` for a block of `V = C^T` (`row`
/// relative to the output rows).
#[inline(always)]
fn write_transposed<S: Simd, const R: usize, const NV: usize, O: OutRows<S>>(
    acc: &[[S::V; NV]; R],
    row: usize,
    col: usize,
    width: usize,
    Scalars { alpha, beta }: Scalars<S>,
    out: &mut O,
) {
    let lanes = S::LANES;
    let mut sums = [[S::ZERO; 24]; R];
    for (sums_row, acc_row) in sums.iter_mut().zip(acc) {
        for (v, &acc) in acc_row.iter().enumerate() {
            S::store(acc, &mut sums_row[v * lanes..][..lanes]);
        }
    }
    for c in 0..width {
        let c_row = &mut out.row(col + c)[row..][..R];
        for (c_value, sums_row) in c_row.iter_mut().zip(&sums) {
            *c_value = scale_add(sums_row[c], alpha, beta, *c_value);
        }
    }
}

/// `alpha sum + beta c` with one FMA, the scalar twin of the vector write (C unread when
/// `beta == 0`).
#[inline(always)]
fn scale_add<S: Float>(sum: S, alpha: S, beta: S, c: S) -> S {
    let scaled = sum * alpha;
    if beta == S::ZERO {
        scaled
    } else {
        beta.mul_add(c, scaled)
    }
}

/// The dot form `C[i][j] <- alpha sum_p A[i][p] B[j][p] + beta C[i][j]` for rows `0..m` and
/// columns `cols`, `DOT_ROWS_A x DOT_ROWS_B` elements at a time.
#[allow(clippy::too_many_arguments)]
fn dot_form<S: Simd, O: OutRows<S>>(
    a: &[S],
    lda: usize,
    b: &[S],
    ldb: usize,
    m: usize,
    cols: Range<usize>,
    k: usize,
    scalars: Scalars<S>,
    out: &mut O,
) {
    // loop over DOT_ROWS_B rows of B (columns of C): they stay in L1 while all of A passes
    let mut col = cols.start;
    while col < cols.end {
        let width = DOT_ROWS_B.min(cols.end - col);
        // loop over DOT_ROWS_A rows of A
        let mut row = 0;
        while row < m {
            let height = DOT_ROWS_A.min(m - row);
            let at = (row, col, cols.start);
            match (height, width) {
                (4, 3) => dot_block::<S, 4, 3, O>(a, lda, b, ldb, k, at, scalars, out),
                (4, 2) => dot_block::<S, 4, 2, O>(a, lda, b, ldb, k, at, scalars, out),
                (4, _) => dot_block::<S, 4, 1, O>(a, lda, b, ldb, k, at, scalars, out),
                (3, 3) => dot_block::<S, 3, 3, O>(a, lda, b, ldb, k, at, scalars, out),
                (3, 2) => dot_block::<S, 3, 2, O>(a, lda, b, ldb, k, at, scalars, out),
                (3, _) => dot_block::<S, 3, 1, O>(a, lda, b, ldb, k, at, scalars, out),
                (2, 3) => dot_block::<S, 2, 3, O>(a, lda, b, ldb, k, at, scalars, out),
                (2, 2) => dot_block::<S, 2, 2, O>(a, lda, b, ldb, k, at, scalars, out),
                (2, _) => dot_block::<S, 2, 1, O>(a, lda, b, ldb, k, at, scalars, out),
                (_, 3) => dot_block::<S, 1, 3, O>(a, lda, b, ldb, k, at, scalars, out),
                (_, 2) => dot_block::<S, 1, 2, O>(a, lda, b, ldb, k, at, scalars, out),
                (_, _) => dot_block::<S, 1, 1, O>(a, lda, b, ldb, k, at, scalars, out),
            }
            row += height;
        }
        col += width;
    }
}

/// `RA x RB` elements of the dot form at `(row, col)`; `first` is the first column of C the
/// output rows start at.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn dot_block<S: Simd, const RA: usize, const RB: usize, O: OutRows<S>>(
    a: &[S],
    lda: usize,
    b: &[S],
    ldb: usize,
    k: usize,
    (row, col, first): (usize, usize, usize),
    scalars: Scalars<S>,
    out: &mut O,
) {
    let lanes = S::LANES;
    let a_rows: [&[S]; RA] = array::from_fn(|r| &a[(row + r) * lda..][..k]);
    let b_rows: [&[S]; RB] = array::from_fn(|r| &b[(col + r) * ldb..][..k]);
    let mut acc = [[S::splat(S::ZERO); RB]; RA];
    let whole = k - k % lanes;
    // loop over the depth, one vector of each row at a time
    for p in (0..whole).step_by(lanes) {
        let b_vectors: [S::V; RB] = array::from_fn(|r| S::load(&b_rows[r][p..][..lanes]));
        for (acc_row, a_row) in acc.iter_mut().zip(&a_rows) {
            let a_vector = S::load(&a_row[p..][..lanes]);
            for (acc, &b_vector) in acc_row.iter_mut().zip(&b_vectors) {
                *acc = S::fma(a_vector, b_vector, *acc);
            }
        }
    }
    if whole < k {
        // the last partial vector, zero-padded
        let padded = |row: &[S]| {
            let mut lanes_buffer = [S::ZERO; 8];
            lanes_buffer[..k - whole].copy_from_slice(&row[whole..]);
            S::load(&lanes_buffer[..lanes])
        };
        let b_vectors: [S::V; RB] = array::from_fn(|r| padded(b_rows[r]));
        for (acc_row, a_row) in acc.iter_mut().zip(&a_rows) {
            let a_vector = padded(a_row);
            for (acc, &b_vector) in acc_row.iter_mut().zip(&b_vectors) {
                *acc = S::fma(a_vector, b_vector, *acc);
            }
        }
    }
    let Scalars { alpha, beta } = scalars;
    for (r, acc_row) in acc.iter().enumerate() {
        let c_row = &mut out.row(row + r)[col - first..][..RB];
        for (c_value, &acc) in c_row.iter_mut().zip(acc_row) {
            *c_value = scale_add(S::hsum(acc), alpha, beta, *c_value);
        }
    }
}
