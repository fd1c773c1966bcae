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
//!   partial vector zero-padded), then `SimdVector::hsum` of the lanes in its fixed order.
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
use std::sync::OnceLock;

use std::cell::RefCell;

use rayon::prelude::*;
use wide::{f32x8, f64x4};

use super::{current_variant, KernelVariant, Transpose, GEMM_PARALLEL_MIN_MULADDS};
use crate::simd::{dispatch, same, SimdVector, MAX_LANES};
use crate::{Float, MatMut, MatRef};

/// Problems with at most this many multiply-adds (`m * n * k`, 64^3) take the direct path
/// whatever their shape and transposes: below it, packing A and B and padding them to whole
/// 12 x 32 tiles cost more than the product. Measured (`examples/direct_probe.rs`, f32, one
/// thread, AVX-512 machine, direct vs packed time ratio): 50x16x50 NN 2.3x faster, 50x50x16 NN
/// 1.45x, 64^3 NN 1.18x, but 96^3 NN 0.82x (slower).
pub const DIRECT_MAX_MULADDS: usize = 1 << 18;

/// Products with at most this many rows of C (`m`) and B used transposed (`x W^T`, either A)
/// take the direct path whatever `n` and `k`: each value of B is then used at most this many
/// times, too few to repay packing it, and the direct kernels read rows of B in place, along
/// the depth. Measured as above: 20x2000x2000 NT 2.3x faster than packed, TT 2.2x. Not for B
/// as stored (NN, TN: the axpy form must stride across rows of B, 0.85x of packed at
/// 20x2000x2000), nor for more rows (180x2000x2000 NT runs 0.55x of packed).
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
/// Rows of A in the register block of the dot form (16 vector registers: 12 accumulators, 3
/// vectors of B, 1 of A).
const DOT_ROWS_A: usize = 4;
/// Rows of B in the register block of the dot form.
const DOT_ROWS_B: usize = 3;
/// [`DOT_ROWS_A`] with 32 vector registers (AVX-512: 24 accumulators, 6 vectors of B, 1 of A;
/// 10 loads for 24 FMAs instead of 7 for 12).
const DOT_ROWS_A_32: usize = 4;
/// [`DOT_ROWS_B`] with 32 vector registers.
const DOT_ROWS_B_32: usize = 6;
/// Rows of B (columns of C) whose depth slabs stay in L1 while every register block of A's
/// rows uses them in the dot form (12 x [`DOT_SLAB_BYTES`] = 24 KB): a multiple of both
/// register blocks' rows of B and a divisor of [`PARALLEL_COLUMNS`].
const DOT_GROUP_B: usize = 12;
/// Bytes of each row in a depth slab of the dot form; a multiple of every vector's size.
/// Slabs of 1, 2 and 4 KB and groups of 8, 12 and 16 rows ran within a few percent of each
/// other (20 and 32 x 2000 x 2000, f32 and f64); whole rows (no slabs) 1.15x slower.
const DOT_SLAB_BYTES: usize = 2048;

/// The dot form (`ta == No`, `tb == Yes`) is used for skinny products (`m <=`
/// [`DIRECT_MAX_ROWS`]) at least this deep. Shallower, or with more rows, the horizontal sums
/// cost more than the products (64^3 NT ran 0.42x of packed): B is then transposed into a
/// `k x n` scratch (a plain copy of `n k` values, no padding) and the product runs in the axpy
/// form (64^3 NT then matches NN).
pub const DOT_MIN_DEPTH: usize = 64;

const _: () = assert!(
    PARALLEL_COLUMNS.is_multiple_of(AXPY_ROWS)
        && PARALLEL_COLUMNS.is_multiple_of(DOT_GROUP_B)
        && DOT_GROUP_B.is_multiple_of(DOT_ROWS_B)
        && DOT_GROUP_B.is_multiple_of(DOT_ROWS_B_32)
        && PARALLEL_COLUMNS.is_multiple_of(AXPY_VECTORS * MAX_LANES)
        && COLUMN_BLOCK.is_multiple_of(AXPY_VECTORS * MAX_LANES)
);

/// An element type of the direct path: its `wide` vector, its AVX-512 entry point and a
/// thread-local scratch buffer.
pub(crate) trait DirectScalar: Float {
    type Wide: SimdVector<Scalar = Self>;

    /// [`columns`] with this type's zmm vector; `None` when the build has no AVX-512 kernels.
    fn columns_avx512<O: OutRows<Self>>(
        product: Product<'_, Self>,
        cols: Range<usize>,
        scratch: &mut [Self],
        out: &mut O,
    ) -> Option<()>;

    /// Runs `f` on a thread-local buffer of `len` scalars, reused across calls (a nested call
    /// on the same thread gets a fresh one).
    fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [Self]) -> R) -> R;
}

macro_rules! impl_direct_scalar {
    ($scalar:ty, $wide:ty, $slot:ident, $avx512:ident) => {
        thread_local! {
            static $slot: RefCell<Vec<$scalar>> = const { RefCell::new(Vec::new()) };
        }

        impl DirectScalar for $scalar {
            type Wide = $wide;

            #[allow(unused_variables)]
            fn columns_avx512<O: OutRows<Self>>(
                product: Product<'_, Self>,
                cols: Range<usize>,
                scratch: &mut [Self],
                out: &mut O,
            ) -> Option<()> {
                #[cfg(target_arch = "x86_64")]
                {
                    super::direct_avx512::$avx512(product, cols, scratch, out);
                    Some(())
                }
                #[cfg(not(target_arch = "x86_64"))]
                None
            }

            fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [Self]) -> R) -> R {
                let mut buffer = $slot.with(|slot| slot.take());
                if buffer.len() < len {
                    buffer.resize(len, 0.0);
                }
                let result = f(&mut buffer[..len]);
                $slot.with(|slot| slot.replace(buffer));
                result
            }
        }
    };
}

impl_direct_scalar!(f32, f32x8, SCRATCH_F32, columns_f32);
impl_direct_scalar!(f64, f64x4, SCRATCH_F64, columns_f64);

/// Which GEMM algorithm a call uses: chosen by shape ([`use_direct`]) unless overridden for
/// the process with the environment variable `BENIGN_GEMM_PATH=auto|packed|direct` (read
/// once), or for a thread with [`with_gemm_path`] (tests and benchmarks; it takes precedence).
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
/// [`DIRECT_MAX_MULADDS`] multiply-adds, or B is used transposed and C has at most
/// [`DIRECT_MAX_ROWS`] rows, unless [`with_gemm_path`] says otherwise. A function of the shape
/// and transposes only (see the module docs).
pub fn use_direct(tb: Transpose, m: usize, n: usize, k: usize) -> bool {
    let path = match PATH_OVERRIDE.with(Cell::get) {
        GemmPath::Auto => process_path(),
        forced => forced,
    };
    match path {
        GemmPath::Packed => false,
        GemmPath::Direct => true,
        GemmPath::Auto => {
            m.saturating_mul(n).saturating_mul(k) <= DIRECT_MAX_MULADDS
                || (tb == Transpose::Yes && m <= DIRECT_MAX_ROWS)
        }
    }
}

/// The process-wide path: `BENIGN_GEMM_PATH` (`auto`, `packed` or `direct`, read once; for
/// before/after measurements of whole programs), `Auto` when unset or unknown (with a warning).
fn process_path() -> GemmPath {
    static SELECTED: OnceLock<GemmPath> = OnceLock::new();
    *SELECTED.get_or_init(|| {
        match std::env::var("BENIGN_GEMM_PATH")
            .unwrap_or_default()
            .as_str()
        {
            "" | "auto" => GemmPath::Auto,
            "packed" => GemmPath::Packed,
            "direct" => GemmPath::Direct,
            other => {
                eprintln!(
                    "warning: BENIGN_GEMM_PATH={other:?} is not one of auto, packed, direct; \
                     using auto"
                );
                GemmPath::Auto
            }
        }
    })
}

/// Whether the `(No, Yes)` product runs in the dot form (else B is transposed into scratch).
fn dot_form_for(m: usize, k: usize) -> bool {
    m <= DIRECT_MAX_ROWS && k >= DOT_MIN_DEPTH
}

/// `C <- alpha op(A) op(B) + beta C` by the direct path. The caller (`gemm`) has checked the
/// shapes and handled `m == 0`, `n == 0`, `k == 0` and `alpha == 0`; `c`'s storage ends at its
/// last element.
pub(crate) fn gemm_direct<T: Float>(
    alpha: T,
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    beta: T,
    c: MatMut<'_, T>,
) {
    dispatch!(T, S => {
        let product = Product {
            a: a.cast::<S>(),
            b: b.cast::<S>(),
            scalars: Scalars { alpha: same(alpha), beta: same(beta) },
        };
        direct::<S>(product, c.cast::<S>())
    })
}

/// The operands of one product `alpha op(A) op(B) + beta C`, all but C.
#[derive(Clone, Copy)]
pub(crate) struct Product<'a, S> {
    pub a: MatRef<'a, S>,
    pub b: MatRef<'a, S>,
    pub scalars: Scalars<S>,
}

#[derive(Clone, Copy)]
pub(crate) struct Scalars<S> {
    pub alpha: S,
    pub beta: S,
}

/// Rows of C restricted to a range of columns `first..`: `row(i)[j - first]` is `C[i][j]`.
pub(crate) trait OutRows<S> {
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

fn direct<S: DirectScalar>(product: Product<'_, S>, c: MatMut<'_, S>) {
    let (m, n, k, ldc) = (product.a.rows(), product.b.cols(), product.a.cols(), c.ld());
    let c = c.into_data();
    let parallel = m.saturating_mul(n).saturating_mul(k) >= GEMM_PARALLEL_MIN_MULADDS
        && rayon::current_num_threads() > 1
        && n > PARALLEL_COLUMNS;
    let avx512 = current_variant() == KernelVariant::Avx512;
    if !parallel {
        let mut out = Strided { c, ldc, first: 0 };
        columns_by_variant(avx512, product, 0..n, &mut out);
        return;
    }
    // the dot form's copy of A on cache lines, made once here for every task
    let mut a_copy = Vec::new();
    let product = if dot_form_for_product(&product) {
        a_copy.resize(dot_scratch_len::<S>(m, k), S::ZERO);
        Product {
            a: rows_on_lines(&mut a_copy, product.a),
            ..product
        }
    } else {
        product
    };
    // loop over fixed chunks of PARALLEL_COLUMNS columns of C, one rayon task each
    super::column_parts(c, (m, ldc), 0..n, PARALLEL_COLUMNS)
        .into_par_iter()
        .enumerate()
        .for_each(|(chunk, mut rows)| {
            let first = chunk * PARALLEL_COLUMNS;
            let cols = first..n.min(first + PARALLEL_COLUMNS);
            let mut out = Split(&mut rows);
            columns_by_variant(avx512, product, cols, &mut out);
        });
}

/// [`columns`] with the zmm vectors when `avx512` (the caller's kernel variant), the `wide`
/// ones otherwise.
fn columns_by_variant<S: DirectScalar, O: OutRows<S>>(
    avx512: bool,
    product: Product<'_, S>,
    cols: Range<usize>,
    out: &mut O,
) {
    // scratch, taken here outside the AVX-512 functions: the dot form's copy of A on cache
    // lines (none when its rows already are), or the shallow `A B^T`'s transposed copy of B
    // (see `DOT_MIN_DEPTH`)
    let (m, k) = (product.a.rows(), product.a.cols());
    let transposes = (product.a.trans(), product.b.trans());
    let scratch_len = if dot_form_for_product(&product) {
        if on_lines(product.a) {
            0
        } else {
            dot_scratch_len::<S>(m, k)
        }
    } else if transposes == (Transpose::No, Transpose::Yes) {
        k * cols.len()
    } else {
        0
    };
    S::with_scratch(scratch_len, |scratch| {
        if avx512 && S::columns_avx512(product, cols.clone(), scratch, out).is_some() {
            return;
        }
        columns::<S::Wide, O>(product, cols, scratch, out);
    });
}

/// Columns `cols` of C (all rows), by the kernel of the transpose combination, with vector
/// type `V`. Everything from here down is `#[inline(always)]`: the AVX-512 entry points
/// (`gemm/direct_avx512.rs`) compile this whole tree inside one `avx512f` function.
#[inline(always)]
pub(crate) fn columns<V: SimdVector, O: OutRows<V::Scalar>>(
    product: Product<'_, V::Scalar>,
    cols: Range<usize>,
    scratch: &mut [V::Scalar],
    out: &mut O,
) {
    let Product { a, b, scalars } = product;
    let (m, k) = (a.rows(), a.cols());
    let (ta, lda, tb, ldb) = (a.trans(), a.ld(), b.trans(), b.ld());
    let (a, b) = (a.data(), b.data());
    // every combination but the deep dot form is an axpy form V = X Y: which operand is X and
    // which Y, and whether V is C or C^T
    let (x, y, ldy, y_first, transposed) = match (ta, tb) {
        (Transpose::No, Transpose::Yes) if dot_form_for(m, k) => {
            return dot_form::<V, O>(product, cols, scratch, out);
        }
        (Transpose::No, Transpose::No) | (Transpose::Yes, Transpose::No) => {
            let x = XView {
                data: a,
                ld: lda,
                column_major: ta == Transpose::Yes,
            };
            (x, b, ldb, 0, false)
        }
        (Transpose::Yes, Transpose::Yes) => {
            // C^T = B_stored A_stored: V rows are columns of C, V columns are rows of C
            let x = XView {
                data: b,
                ld: ldb,
                column_major: false,
            };
            (x, a, lda, 0, true)
        }
        (Transpose::No, Transpose::Yes) => {
            // shallow or tall: B^T (rows cols of B) copied into a k x width scratch
            let width = cols.len();
            let b_transposed = &mut scratch[..k * width];
            for (j, b_row) in b[cols.start * ldb..].chunks(ldb).take(width).enumerate() {
                for (p, &value) in b_row[..k].iter().enumerate() {
                    b_transposed[p * width + j] = value;
                }
            }
            let x = XView {
                data: a,
                ld: lda,
                column_major: false,
            };
            (x, &*b_transposed, width, cols.start, false)
        }
    };
    let view = AxpyView {
        x,
        y,
        ldy,
        y_first,
        k,
        transposed,
        first: cols.start,
    };
    // only B as stored is streamed from memory and worth blocking over the depth; A (in the
    // transposed form) and the scratch copy are read once per register block
    let block_depth = tb == Transpose::No && k > DEPTH_BLOCK;
    // V's rows and columns: those of C, or swapped when V = C^T
    let (rows, view_cols) = if transposed {
        (cols, 0..m)
    } else {
        (0..m, cols)
    };
    axpy_form::<V, O>(&view, rows, view_cols, scalars, block_depth, out);
}

/// `X[r][p]`: `data[r * ld + p]` (row-major) or `data[p * ld + r]` (`column_major`).
#[derive(Clone, Copy)]
struct XView<'a, S> {
    data: &'a [S],
    ld: usize,
    column_major: bool,
}

/// The axpy form `V = X Y` of one call: `Y[p][c] = y[p * ldy + c - y_first]`, and `V[r][c]`
/// is `C[r][c]`, or `C[c][r]` when `transposed`. `first` is the first column of C the output
/// rows start at.
struct AxpyView<'a, S> {
    x: XView<'a, S>,
    y: &'a [S],
    ldy: usize,
    y_first: usize,
    k: usize,
    transposed: bool,
    first: usize,
}

/// `V[rows][cols] <- alpha X Y + beta V` in register blocks; with `block_depth`, blocked over
/// the depth in slabs of `DEPTH_BLOCK x COLUMN_BLOCK` (see the module docs).
#[inline(always)]
fn axpy_form<V: SimdVector, O: OutRows<V::Scalar>>(
    view: &AxpyView<'_, V::Scalar>,
    rows: Range<usize>,
    cols: Range<usize>,
    scalars: Scalars<V::Scalar>,
    block_depth: bool,
    out: &mut O,
) {
    let k = view.k;
    if !block_depth {
        axpy_depth_block::<V, O>(view, rows, cols, 0..k, None, Some(scalars), out);
        return;
    }
    let mut partial = vec![V::Scalar::ZERO; rows.len() * COLUMN_BLOCK];
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
            axpy_depth_block::<V, O>(
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
#[inline(always)]
fn axpy_depth_block<V: SimdVector, O: OutRows<V::Scalar>>(
    view: &AxpyView<'_, V::Scalar>,
    rows: Range<usize>,
    cols: Range<usize>,
    depth: Range<usize>,
    mut partial: Option<Partial<'_, V::Scalar>>,
    finish: Option<Scalars<V::Scalar>>,
    out: &mut O,
) {
    let lanes = V::LANES;
    // loop over the AXPY_ROWS-tall row blocks of V
    let mut row = rows.start;
    while row < rows.end {
        let height = edge_rows(AXPY_ROWS, rows.end - row);
        // loop over the column blocks: 3 vectors, then the last 1 or 2 (the last one of them
        // partial when the columns end inside it)
        let mut col = cols.start;
        while col < cols.end {
            let remaining = cols.end - col;
            let vectors = remaining.div_ceil(lanes).min(AXPY_VECTORS);
            let width = remaining.min(vectors * lanes);
            let block = Block {
                row,
                col,
                width,
                depth: depth.clone(),
            };
            let p = &mut partial;
            match (height, vectors) {
                (AXPY_ROWS, 3) => axpy_block::<V, AXPY_ROWS, 3, O>(view, &block, p, finish, out),
                (AXPY_ROWS, 2) => axpy_block::<V, AXPY_ROWS, 2, O>(view, &block, p, finish, out),
                (AXPY_ROWS, _) => axpy_block::<V, AXPY_ROWS, 1, O>(view, &block, p, finish, out),
                (_, 3) => axpy_block::<V, 1, 3, O>(view, &block, p, finish, out),
                (_, 2) => axpy_block::<V, 1, 2, O>(view, &block, p, finish, out),
                (_, _) => axpy_block::<V, 1, 1, O>(view, &block, p, finish, out),
            }
            col += width;
        }
        row += height;
    }
}

/// A register block of V: rows `row..row + R`, columns `col..col + width` (`NV` vectors, the
/// last one possibly partial), over `depth`.
struct Block {
    row: usize,
    col: usize,
    width: usize,
    depth: Range<usize>,
}

/// `Y[p][col..col + width]` as `NV` vectors, `y_row` starting at `Y[p][col]`. Lanes past
/// `width` are never written to C (each lane of the axpy form is its own element), so when the
/// storage holds whole vectors (`whole`) they are loaded as they are, whatever they contain;
/// otherwise the last vector is zero-padded.
///
/// No closures here or below: the AVX-512 instantiation relies on everything down to the
/// intrinsics being inlined into its `avx512f` function, and closures are not forced inline.
#[inline(always)]
fn load_row<V: SimdVector, const NV: usize>(
    y_row: &[V::Scalar],
    width: usize,
    whole: bool,
) -> [V; NV] {
    let lanes = V::LANES;
    let mut vectors = [V::splat(V::Scalar::ZERO); NV];
    if whole {
        let y_row = &y_row[..NV * lanes];
        for (v, vector) in vectors.iter_mut().enumerate() {
            *vector = V::load(&y_row[v * lanes..][..lanes]);
        }
    } else {
        for (v, vector) in vectors.iter_mut().enumerate() {
            let start = v * lanes;
            *vector = if start + lanes <= width {
                V::load(&y_row[start..][..lanes])
            } else {
                V::load_partial(&y_row[start..], width - start)
            };
        }
    }
    vectors
}

/// The height of the next register block: the full `block` rows while `remaining` holds them,
/// else 1 (the last rows go one at a time). Every `R x NV` shape of [`axpy_block`] and
/// [`dot_block`] is inlined whole for each vector type and output; with 2- and 3-row edge shapes
/// too, they were over half of this crate's code and of its compile time (a fuzz build
/// instruments all of it), for a few rows at the bottom edge. Each element's sum is the same
/// whatever block it falls in, so this does not change a bit.
#[inline(always)]
fn edge_rows(block: usize, remaining: usize) -> usize {
    if remaining >= block {
        block
    } else {
        1
    }
}

/// The rank-`depth` update of one `R x NV`-vector register block, then its write (see
/// [`axpy_depth_block`]).
#[inline(always)]
fn axpy_block<V: SimdVector, const R: usize, const NV: usize, O: OutRows<V::Scalar>>(
    view: &AxpyView<'_, V::Scalar>,
    block: &Block,
    partial: &mut Option<Partial<'_, V::Scalar>>,
    finish: Option<Scalars<V::Scalar>>,
    out: &mut O,
) {
    let lanes = V::LANES;
    let Block {
        row,
        col,
        width,
        ref depth,
    } = *block;
    let mut acc = [[V::splat(V::Scalar::ZERO); NV]; R];
    if let Some(partial) = partial.as_ref().filter(|partial| !partial.fresh) {
        for (r, acc_row) in acc.iter_mut().enumerate() {
            let start = (row + r - partial.first_row) * COLUMN_BLOCK + col - partial.first_col;
            let sums = &partial.sums[start..][..NV * lanes];
            for (v, acc) in acc_row.iter_mut().enumerate() {
                *acc = V::load(&sums[v * lanes..][..lanes]);
            }
        }
    }
    let y = &view.y[col - view.y_first..];
    let ldy = view.ldy;
    let x = view.x;
    // loop over the depth: one rank-1 update of the block per step
    // steps whose Y row is followed by a whole register block of storage load it whole
    let whole_rows = (y.len() + ldy).saturating_sub(NV * lanes) / ldy.max(1);
    if x.column_major {
        for p in depth.clone() {
            let y_row: [V; NV] = load_row::<V, NV>(&y[p * ldy..], width, p < whole_rows);
            let x_column = &x.data[p * x.ld + row..][..R];
            for (acc_row, &x_value) in acc.iter_mut().zip(x_column) {
                let x_value = V::splat(x_value);
                for (acc, &y_value) in acc_row.iter_mut().zip(&y_row) {
                    *acc = V::mul_add(x_value, y_value, *acc);
                }
            }
        }
    } else {
        let x_rows: [&[V::Scalar]; R] =
            array::from_fn(|r| &x.data[(row + r) * x.ld + depth.start..][..depth.len()]);
        for (step, p) in depth.clone().enumerate() {
            let y_row: [V; NV] = load_row::<V, NV>(&y[p * ldy..], width, p < whole_rows);
            for (acc_row, x_row) in acc.iter_mut().zip(&x_rows) {
                let x_value = V::splat(x_row[step]);
                for (acc, &y_value) in acc_row.iter_mut().zip(&y_row) {
                    *acc = V::mul_add(x_value, y_value, *acc);
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
                    acc.store(&mut sums[v * lanes..][..lanes]);
                }
            }
        }
        Some(scalars) if !view.transposed => {
            write_rows::<V, R, NV, O>(&acc, row, col - view.first, width, scalars, out)
        }
        Some(scalars) => {
            write_transposed::<V, R, NV, O>(&acc, row - view.first, col, width, scalars, out)
        }
    }
}

/// `C[row + r][col + c] <- alpha acc + beta C` for the block (`col` relative to the output
/// rows), whole vectors where the block is whole.
#[inline(always)]
fn write_rows<V: SimdVector, const R: usize, const NV: usize, O: OutRows<V::Scalar>>(
    acc: &[[V; NV]; R],
    row: usize,
    col: usize,
    width: usize,
    Scalars { alpha, beta }: Scalars<V::Scalar>,
    out: &mut O,
) {
    let lanes = V::LANES;
    let (alpha_v, beta_v) = (V::splat(alpha), V::splat(beta));
    for (r, acc_row) in acc.iter().enumerate() {
        let c_row = &mut out.row(row + r)[col..][..width];
        for (v, &acc) in acc_row.iter().enumerate() {
            let start = v * lanes;
            if start + lanes <= width {
                let c_lanes = &mut c_row[start..][..lanes];
                let scaled = acc * alpha_v;
                let result = if beta == V::Scalar::ZERO {
                    scaled
                } else {
                    V::mul_add(beta_v, V::load(c_lanes), scaled)
                };
                result.store(c_lanes);
            } else {
                let mut sums = [V::Scalar::ZERO; MAX_LANES];
                acc.store(&mut sums[..lanes]);
                for (c_value, &sum) in c_row[start..].iter_mut().zip(&sums) {
                    *c_value = scale_add(sum, alpha, beta, *c_value);
                }
            }
        }
    }
}

/// `C[col + c][row + r] <- alpha acc[r][c] + beta C` for a block of `V = C^T` (`row`
/// relative to the output rows).
#[inline(always)]
fn write_transposed<V: SimdVector, const R: usize, const NV: usize, O: OutRows<V::Scalar>>(
    acc: &[[V; NV]; R],
    row: usize,
    col: usize,
    width: usize,
    Scalars { alpha, beta }: Scalars<V::Scalar>,
    out: &mut O,
) {
    let lanes = V::LANES;
    let mut sums = [[V::Scalar::ZERO; AXPY_VECTORS * MAX_LANES]; R];
    for (sums_row, acc_row) in sums.iter_mut().zip(acc) {
        for (v, &acc) in acc_row.iter().enumerate() {
            acc.store(&mut sums_row[v * lanes..][..lanes]);
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

/// The dot form `C[i][j] <- alpha sum_p A[i][p] B[j][p] + beta C[i][j]` for rows `0..m`
/// (at most [`DIRECT_MAX_ROWS`]) and columns `cols`.
///
/// Rows are as long as the depth (8 KB in f32 at k = 2000), so a few rows of B do not stay in
/// L1 while all of A's row blocks pass them at full depth. The depth is therefore cut into
/// slabs of [`DOT_SLAB_BYTES`] a row: for each group of [`DOT_GROUP_B`] rows of B, slab by
/// slab, the group's slab stays in L1 while every block of A's rows passes (A, a few hundred
/// KB, streams from L2), and each register block's accumulators wait in `partials` between
/// slabs. Storing a vector and loading it back is exact, so every lane is the same FMA chain
/// over the whole depth as without slabs, and the result does not depend on the slab or
/// group size (nor on the register block).
#[inline(always)]
fn dot_form<V: SimdVector, O: OutRows<V::Scalar>>(
    product: Product<'_, V::Scalar>,
    cols: Range<usize>,
    scratch: &mut [V::Scalar],
    out: &mut O,
) {
    // A's rows copied to start on cache lines (unless they do: the caller's copy for all
    // tasks of a parallel product): a zmm load across two lines costs two, and rows of a heap
    // allocation start 16 bytes past a line (B, far larger, stays in place)
    let product = if on_lines(product.a) {
        product
    } else {
        Product {
            a: rows_on_lines(scratch, product.a),
            ..product
        }
    };
    // the register block: RA x RB accumulators, RB vectors of B and one of A in registers
    if V::REGISTERS >= 32 {
        dot_slabs::<V, DOT_ROWS_A_32, DOT_ROWS_B_32, O>(product, cols, out)
    } else {
        dot_slabs::<V, DOT_ROWS_A, DOT_ROWS_B, O>(product, cols, out)
    }
}

/// Bytes of a cache line.
const CACHE_LINE: usize = 64;

/// Scalars between the rows of [`dot_form`]'s copy of A: `k` rounded up to whole cache lines.
fn dot_row_stride<S>(k: usize) -> usize {
    k.next_multiple_of(CACHE_LINE / std::mem::size_of::<S>())
}

/// The scratch [`dot_form`] needs: its copy of A and the slack to start it on a cache line.
fn dot_scratch_len<S>(m: usize, k: usize) -> usize {
    m * dot_row_stride::<S>(k) + MAX_LANES
}

/// Whether `a`'s rows all start on a cache line.
fn on_lines<S>(a: MatRef<'_, S>) -> bool {
    let line = CACHE_LINE / std::mem::size_of::<S>();
    a.data().as_ptr().align_offset(CACHE_LINE) == 0
        && (a.rows() <= 1 || a.ld().is_multiple_of(line))
}

/// `a` (not transposed) copied into `buffer` (at least [`dot_scratch_len`]) with every row
/// on a cache line, `dot_row_stride` apart.
fn rows_on_lines<'s, S: Copy>(buffer: &'s mut [S], a: MatRef<'_, S>) -> MatRef<'s, S> {
    let (m, k) = (a.rows(), a.cols());
    let stride = dot_row_stride::<S>(k);
    let start = buffer.as_ptr().align_offset(CACHE_LINE).min(MAX_LANES);
    let copy = &mut buffer[start..][..m * stride];
    for (row, copy_row) in copy.chunks_exact_mut(stride).enumerate() {
        copy_row[..k].copy_from_slice(&a.data()[row * a.ld()..][..k]);
    }
    MatRef::with_ld(copy, m, k, stride)
}

/// Whether a product runs in the dot form.
fn dot_form_for_product<S>(product: &Product<'_, S>) -> bool {
    (product.a.trans(), product.b.trans()) == (Transpose::No, Transpose::Yes)
        && dot_form_for(product.a.rows(), product.a.cols())
}

/// [`dot_form`] with `RA x RB` register blocks.
#[inline(always)]
fn dot_slabs<V: SimdVector, const RA: usize, const RB: usize, O: OutRows<V::Scalar>>(
    product: Product<'_, V::Scalar>,
    cols: Range<usize>,
    out: &mut O,
) {
    let (m, k) = (product.a.rows(), product.a.cols());
    assert!(m <= DIRECT_MAX_ROWS);
    let slab = DOT_SLAB_BYTES / std::mem::size_of::<V::Scalar>();
    // element (i, cols.start + g + j) of a group starting at g: partials[i * DOT_GROUP_B + j]
    let mut partials = [V::splat(V::Scalar::ZERO); DIRECT_MAX_ROWS * DOT_GROUP_B];
    let Scalars { alpha, beta } = product.scalars;
    // loop over groups of DOT_GROUP_B rows of B (columns of C)
    for group in cols.clone().step_by(DOT_GROUP_B) {
        let group_end = cols.end.min(group + DOT_GROUP_B);
        // loop over depth slabs: the group's slab of B stays in L1 while A's row blocks pass
        for start in (0..k).step_by(slab) {
            let depth = start..k.min(start + slab);
            // loop over RB rows of B (single rows at the group's edge)
            let mut col = group;
            while col < group_end {
                let width = if group_end - col >= RB { RB } else { 1 };
                // loop over RA rows of A (single rows at the bottom edge)
                let mut row = 0;
                while row < m {
                    let height = edge_rows(RA, m - row);
                    let block = DotBlock {
                        row,
                        col,
                        slot: row * DOT_GROUP_B + col - group,
                        depth: depth.clone(),
                    };
                    match (height == RA, width == RB) {
                        (true, true) => dot_block::<V, RA, RB>(product, block, &mut partials),
                        (true, false) => dot_block::<V, RA, 1>(product, block, &mut partials),
                        (false, true) => dot_block::<V, 1, RB>(product, block, &mut partials),
                        (false, false) => dot_block::<V, 1, 1>(product, block, &mut partials),
                    }
                    row += height;
                }
                col += width;
            }
        }
        for i in 0..m {
            let c_row = &mut out.row(i)[group - cols.start..group_end - cols.start];
            let sums = &partials[i * DOT_GROUP_B..];
            for (c_value, sum) in c_row.iter_mut().zip(sums) {
                *c_value = scale_add(sum.hsum(), alpha, beta, *c_value);
            }
        }
    }
}

/// Where a register block of the dot form works: rows `row..` of A and C, rows `col..` of B
/// (columns of C), over `depth`; its accumulators wait in the partial sums from `slot` on,
/// [`DOT_GROUP_B`] apart for each row.
struct DotBlock {
    row: usize,
    col: usize,
    slot: usize,
    depth: Range<usize>,
}

/// One step of [`dot_block`]: `acc[r][s] += A_r B_s` lane-wise, where `a_parts[r]` and
/// `b_parts[s]` hold the step's `len` scalars of each row (`len` at most `LANES`; with fewer the
/// vectors are zero-padded). Called with `len == LANES` in the main loop, where the test in
/// [`load_lanes`] folds away.
#[inline(always)]
fn dot_step<V: SimdVector, const RA: usize, const RB: usize>(
    acc: &mut [[V; RB]; RA],
    a_parts: [&[V::Scalar]; RA],
    b_parts: [&[V::Scalar]; RB],
    len: usize,
) {
    let mut b_vectors = [V::splat(V::Scalar::ZERO); RB];
    for (b_vector, b_part) in b_vectors.iter_mut().zip(b_parts) {
        *b_vector = load_lanes::<V>(b_part, len);
    }
    for (acc_row, a_part) in acc.iter_mut().zip(a_parts) {
        let a_vector = load_lanes::<V>(a_part, len);
        for (acc, &b_vector) in acc_row.iter_mut().zip(&b_vectors) {
            *acc = V::mul_add(a_vector, b_vector, *acc);
        }
    }
}

/// `rows[r][p..p + len]` for every row, without bounds checks: in the dot form's main loop
/// the checked slices cost two compares and branches per row and step, and with seven rows
/// those integer instructions, not the FMAs, bounded the loop (about 1.4x slower at 20 x 2000
/// x 2000 on a Zen 1 core, f32 and f64).
///
/// # Safety
///
/// `p + len` is at most the length of every row.
#[inline(always)]
unsafe fn parts<'a, S, const R: usize>(rows: &[&'a [S]; R], p: usize, len: usize) -> [&'a [S]; R] {
    let mut parts: [&[S]; R] = [&[]; R];
    for (part, row) in parts.iter_mut().zip(rows) {
        // SAFETY: `p..p + len` lies within the row, by the caller's contract.
        *part = unsafe { row.get_unchecked(p..p + len) };
    }
    parts
}

/// The first `len` scalars of `src` (at most `LANES`) as a vector, zero-padded when fewer.
#[inline(always)]
fn load_lanes<V: SimdVector>(src: &[V::Scalar], len: usize) -> V {
    if len == V::LANES {
        V::load(&src[..len])
    } else {
        V::load_partial(src, len)
    }
}

/// The accumulators of `RA x RB` elements of the dot form over one depth slab: loaded from
/// `partials` (zero on the first slab), one FMA chain per lane through the slab, stored back.
#[inline(always)]
fn dot_block<V: SimdVector, const RA: usize, const RB: usize>(
    product: Product<'_, V::Scalar>,
    DotBlock {
        row,
        col,
        slot,
        depth,
    }: DotBlock,
    partials: &mut [V],
) {
    let Product { a, b, .. } = product;
    let (k, lda, ldb, a, b) = (a.cols(), a.ld(), b.ld(), a.data(), b.data());
    let lanes = V::LANES;
    let a_rows: [&[V::Scalar]; RA] = array::from_fn(|r| &a[(row + r) * lda..][..k]);
    let b_rows: [&[V::Scalar]; RB] = array::from_fn(|r| &b[(col + r) * ldb..][..k]);
    let mut acc = [[V::splat(V::Scalar::ZERO); RB]; RA];
    if depth.start > 0 {
        for (r, acc_row) in acc.iter_mut().enumerate() {
            acc_row.copy_from_slice(&partials[slot + r * DOT_GROUP_B..][..RB]);
        }
    }
    // only the last slab ends off a whole vector (slabs are whole vectors deep)
    let whole = depth.end - (depth.end - depth.start) % lanes;
    // loop over the slab, one vector of each row at a time
    for p in (depth.start..whole).step_by(lanes) {
        // SAFETY: every row is `k` long (sliced above), and `p + lanes <= whole <= depth.end
        // <= k`.
        let (a_parts, b_parts) = unsafe { (parts(&a_rows, p, lanes), parts(&b_rows, p, lanes)) };
        dot_step::<V, RA, RB>(&mut acc, a_parts, b_parts, lanes);
    }
    if whole < depth.end {
        // the last partial vector, zero-padded
        // SAFETY: every row is `k` long, and `whole + (depth.end - whole) = depth.end <= k`.
        let (a_parts, b_parts) = unsafe {
            (
                parts(&a_rows, whole, depth.end - whole),
                parts(&b_rows, whole, depth.end - whole),
            )
        };
        dot_step::<V, RA, RB>(&mut acc, a_parts, b_parts, depth.end - whole);
    }
    for (r, acc_row) in acc.iter().enumerate() {
        partials[slot + r * DOT_GROUP_B..][..RB].copy_from_slice(acc_row);
    }
}
