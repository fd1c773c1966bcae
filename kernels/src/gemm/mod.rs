//! GEMM: `C <- alpha op(A) op(B) + beta C`, packed and blocked in the BLIS style.
//!
//! # Algorithm
//!
//! With `op(A)` m x k, `op(B)` k x n and C m x n, the product is blocked in five loops around a
//! register-blocked microkernel (the only SIMD code: `gemm/microkernel.rs` for the portable
//! `wide` kernels, `gemm/avx512.rs` for the AVX-512 ones):
//!
//! ```text
//! for jc in column panels of C and B, NC wide          (B block of KC x NC lives in L3)
//!   for pc in depth panels, KC deep, in order          (fixes the reduction order over k)
//!     pack op(B)[pc.., jc..] into NR-wide micro-panels
//!     for ic in row panels of C and A, MC tall         (A block of MC x KC lives in L2; the
//!       pack op(A)[ic.., pc..] into MR-tall micro-panels      parallel loop: one task each)
//!       for jr in NR-wide column strips of the B block (B micro-panel lives in L1)
//!         for ir in MR-tall row strips of the A block  (jr and ir swapped by the kernel's
//!                                                        `ALONG_ROWS`: see `gemm/kernel.rs`)
//!           AB = A micro-panel x B micro-panel         (MR x NR accumulators in registers)
//!           C tile <- alpha AB + beta' C tile          (beta' = beta on the first depth
//!                                                        panel, 1 afterwards)
//! ```
//!
//! [`gemm_prepacked_b`] runs the same loops on a B block its caller has already packed (one
//! depth panel): a caller that generates B, such as the start-up's random `W_0`, writes each
//! value straight into its micro-panel.
//!
//! When the B block is narrow (at most `IN_PLACE_A_MAX_STRIPS` micro-panels, so a packed A
//! micro-panel would be used only a few times), the kernels read whole MR-row strips of
//! `op(A)` in place instead and only a last partial strip is packed: the same FMA chains, so
//! the same bits. Conversely, when C has so few rows that a packed B micro-panel would serve
//! only a few tiles (at most the kernel's `B_IN_PLACE_MAX_STRIPS` MR-row strips, and `op(B)`
//! not transposed), the kernels read B's NR-column strips in place, prefetching its rows
//! ahead, and only a last partial strip is packed (packing B for 20 x 2000 x 2000 costs as
//! much as the product itself). Again the same FMA chains.
//!
//! When one task runs the whole product and its rows fit one MC block, each B micro-panel
//! serves that block once: the row panel then packs B a few micro-panels at a time, just
//! before their tiles (`BBlock::Deferred`), so the packed values are read back from L2 instead
//! of from the L3 or memory a whole packed block spills to. The same packed values, the same
//! tiles.
//!
//! # Kernel variants
//!
//! Two microkernel families exist ([`KernelVariant`]): `Portable`, the `wide` kernels (f32
//! 6 x 16, f64 6 x 8; AVX2 + FMA in the default x86-64-v3 build), and `Avx512`, written with
//! `std::arch` intrinsics under `#[target_feature(enable = "avx512f")]` (f32 12 x 32, f64
//! 12 x 16). The variant is chosen once per process at run time ([`kernel_variant`]: AVX-512
//! when the CPU has `avx512f`, overridable with `BENIGN_GEMM_KERNEL=auto|portable|avx512`).
//! Each kernel is one [`GemmKernel`] implementation per element type (`gemm/kernel.rs`) that
//! holds its tile functions and its blocking (MR, NR, KC, MC, NC) together, and packing
//! follows the chosen kernel. Non-x86 builds have the `wide` kernels only.
//!
//! # Determinism
//!
//! Element `C[i][j]` is computed as: for each depth panel in order, an FMA chain over the panel
//! in order of `p`, scaled by alpha and added to C. KC is a constant of the kernel variant, so
//! this order depends only on `k` and the variant; threads only decide *which* tiles a task
//! owns, never how an element is summed, and partial edge tiles use the same arithmetic as full
//! tiles. Results are therefore bit-identical for any rayon pool size on one machine. They may
//! differ in the last bits between CPUs with and without AVX-512 (or with a different
//! `BENIGN_GEMM_KERNEL`): each variant is free to pick its own KC, which regroups the k-sum into
//! depth panels, and a build without FMA rounds the `wide` kernel's multiply-adds twice.
//!
//! # Threads and buffers
//!
//! Calls whose full depth panel (`m x min(n, NC) x min(k, KC)`) has at least
//! [`GEMM_PARALLEL_MIN_MULADDS`] multiply-adds run on the current rayon pool (threads join once
//! per depth panel, so it is a panel's work that has to pay for the join: a weight gradient
//! `64 x 64 x 3200 A^T B`, 13 panels of 1M multiply-adds, ran twice as slowly on two threads as
//! on one): per depth panel, the B block is packed by column ranges in parallel, then each task
//! packs and multiplies one row panel of at most MC rows (a multiple of the thread count of
//! tasks, sharing the MR-row strips evenly: see `row_tasks`). When
//! C has fewer than two MR-row strips per thread (short, wide products, `m <= MR` included),
//! tasks own NR-aligned column ranges of C over all rows instead. Packing buffers are
//! thread-local and 64-byte aligned, reused across calls and bounded by the blocking (`KC x NC`
//! for B, `MC x KC` for A): at most 8 MB + 420 KB per thread.
//!
//! # Edge cases
//!
//! `beta == 0` never reads C (NaN already in C does not leak). `k == 0` or `alpha == 0` reduce
//! to `C <- beta C` without reading A or B (the BLAS convention).

#[cfg(target_arch = "x86_64")]
mod avx512;
mod direct;
#[cfg(target_arch = "x86_64")]
mod direct_avx512;
mod kernel;
mod microkernel;
mod pack;

use rayon::prelude::*;
use std::cell::Cell;
use std::sync::OnceLock;
use std::thread::LocalKey;
use wide::f64x4;

pub use crate::matrix::Transpose;
use crate::simd::{cast, dispatch, same};
use crate::{Float, MatMut, MatRef};
pub use kernel::{Avx512, Blocking, GemmKernel, Portable};
use kernel::{Kernel, MAX_TILE};
#[doc(hidden)]
pub use microkernel::{microkernel, prefetch_tile, tile_cols, write_back, Tile, MR, NR_VECTORS};
use pack::{pack_a, pack_b};

pub use direct::{
    use_direct, with_gemm_path, GemmPath, DIRECT_MAX_MULADDS, DIRECT_MAX_ROWS, DOT_MIN_DEPTH,
    PARALLEL_COLUMNS,
};

/// Products with fewer multiply-adds than this per fork/join run on the calling thread (per
/// depth panel on the packed path, `m * n * k` on the direct path, which joins once): below
/// about 2M multiply-adds (roughly 50 µs on one core) rayon's fork/join costs more than the
/// second core brings.
pub const GEMM_PARALLEL_MIN_MULADDS: usize = 1 << 21;

/// The microkernel family a GEMM call runs with, and with it the f64 level-2 kernels (GEMV,
/// GER then GEMV, the Gram-Schmidt projections: `Avx512` runs them on 512-bit vectors with
/// the portable kernels' bits, see `level2_avx512.rs`).
///
/// Chosen once per process by [`kernel_variant`]: `Avx512` when the CPU has AVX-512F (x86-64
/// only; detected at run time, so an x86-64-v3 build uses it on AVX-512 machines), `Portable`
/// otherwise. The environment variable `BENIGN_GEMM_KERNEL` (`auto`, `portable` or `avx512`,
/// read once; `avx2`, the portable kernel's former name, is accepted too) overrides the
/// choice; an unknown value or `avx512` on a CPU without it falls back to `auto` with a
/// warning on stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelVariant {
    /// The portable `wide` kernels (f32x8 6 x 16, f64x4 6 x 8): AVX2 + FMA instructions when
    /// the build targets x86-64-v3, whatever `wide` lowers to elsewhere ([`Portable`]).
    Portable,
    /// 512-bit kernels (f32 12 x 32, f64 12 x 16) written with `std::arch` intrinsics
    /// ([`Avx512`]).
    Avx512,
}

impl KernelVariant {
    /// Whether this variant can run on this CPU.
    pub fn is_available(self) -> bool {
        match self {
            KernelVariant::Portable => true,
            #[cfg(target_arch = "x86_64")]
            KernelVariant::Avx512 => avx512::detected(),
            #[cfg(not(target_arch = "x86_64"))]
            KernelVariant::Avx512 => false,
        }
    }

    /// The variants this CPU can run, portable first.
    pub fn available() -> Vec<KernelVariant> {
        [KernelVariant::Portable, KernelVariant::Avx512]
            .into_iter()
            .filter(|variant| variant.is_available())
            .collect()
    }

    /// The name `BENIGN_GEMM_KERNEL` accepts for it.
    pub fn name(self) -> &'static str {
        match self {
            KernelVariant::Portable => "portable",
            KernelVariant::Avx512 => "avx512",
        }
    }
}

/// The process-wide kernel variant (see [`KernelVariant`]); decided at the first call.
pub fn kernel_variant() -> KernelVariant {
    static SELECTED: OnceLock<KernelVariant> = OnceLock::new();
    *SELECTED.get_or_init(|| {
        let best = *KernelVariant::available()
            .last()
            .unwrap_or(&KernelVariant::Portable);
        let requested = std::env::var("BENIGN_GEMM_KERNEL").unwrap_or_default();
        match requested.as_str() {
            "" | "auto" => best,
            "portable" | "avx2" => KernelVariant::Portable,
            "avx512" if KernelVariant::Avx512.is_available() => KernelVariant::Avx512,
            other => {
                eprintln!(
                    "warning: BENIGN_GEMM_KERNEL={other:?} is not usable here (valid: auto, \
                     portable, avx512 on CPUs with avx512f); using {}",
                    best.name()
                );
                best
            }
        }
    })
}

thread_local! {
    /// A per-thread override of [`kernel_variant`], set by [`with_kernel_variant`].
    static VARIANT_OVERRIDE: Cell<Option<KernelVariant>> = const { Cell::new(None) };
}

/// Runs `f` with GEMM calls made *from this thread* using `variant` (the work they spread over
/// rayon follows the caller's choice). For tests and benchmarks of both kernels in one process.
///
/// # Panics
///
/// If `variant` is not available on this CPU.
#[doc(hidden)]
pub fn with_kernel_variant<R>(variant: KernelVariant, f: impl FnOnce() -> R) -> R {
    assert!(
        variant.is_available(),
        "gemm: kernel variant {variant:?} is not available on this CPU"
    );
    let previous = VARIANT_OVERRIDE.with(|cell| cell.replace(Some(variant)));
    let result = f();
    VARIANT_OVERRIDE.with(|cell| cell.set(previous));
    result
}

/// The variant a [`gemm`] call made now on this thread uses: [`kernel_variant`] unless
/// [`with_kernel_variant`] overrides it. Callers that spread their own GEMM calls over rayon
/// pass it on to the workers with [`with_kernel_variant`] (the override is per thread).
pub fn current_variant() -> KernelVariant {
    VARIANT_OVERRIDE
        .with(Cell::get)
        .unwrap_or_else(kernel_variant)
}

/// The blocking `gemm::<T>` uses with `variant` (for the edge-case tests).
#[doc(hidden)]
pub fn blocking<T: Float>(variant: KernelVariant) -> Blocking {
    dispatch!(T, S => S::kernel(variant).blocking)
}

/// A row panel reads A in place, without packing it, when the B block has at most this many
/// NR-wide strips: a packed A micro-panel is reused once per strip, so with few strips
/// packing (a transpose when A is stored row-major) costs a large part of the multiply.
/// Measured on the 2-core Ice Lake machine (sgemm, AVX-512, best of interleaved runs), in
/// place against packed: 3200 x 64 x 192 NT 143 against 115 GFLOP/s, 3200 x 64 x 128 139
/// against 108, 64 x 64 x 3200 TN 96 against 81 (the shapes of the classifier's linear
/// layers), 2000 x 256 x 2000 127 against 123; with up to 64 strips, 2000 x 512 x 2000 TN fell
/// from 126 to 106 and 2000^3 from 135 to 121 (A re-read 16 to 63 times from its strided
/// storage costs more than packing it once). The `wide` (AVX2) kernel reads in place too; on
/// the 2-core Zen 1 machine the gain is smaller (`direct_probe`, the packed path's speed
/// relative to `matrixmultiply` in the same process, three alternating runs per binary):
/// 3200 x 64 x 64 NT 0.90-0.93 before against 0.95-1.05, 3200 x 64 x 128 NN 0.95-1.00
/// against 1.00-1.08, 64 x 64 x 3200 TN 0.83-0.89 against 0.86-0.95, other shapes within the
/// noise (`microkernel_strided` broadcasts A from six rows instead of one packed panel).
const IN_PLACE_A_MAX_STRIPS: usize = 8;

/// An element type with SIMD GEMM kernels.
pub(crate) trait GemmScalar: Float + bytemuck::Pod {
    /// The kernel of `variant` (which must be available: checked again by the AVX-512 tile).
    fn kernel(variant: KernelVariant) -> Kernel<Self>;

    /// [`gemm`] for this element type.
    fn gemm(alpha: Self, a: MatRef<'_, Self>, b: MatRef<'_, Self>, beta: Self, c: MatMut<'_, Self>);
}

macro_rules! impl_gemm_scalar {
    ($t:ty) => {
        impl GemmScalar for $t {
            // Not `#[inline]`, and not generic: the packed and direct paths are compiled once,
            // here. Reached from the generic `gemm`, an inlinable body made every crate calling
            // `gemm` compile its own copy of them (about 90 s of release build per test or
            // example binary).
            #[inline(never)]
            fn gemm(alpha: $t, a: MatRef<'_, $t>, b: MatRef<'_, $t>, beta: $t, c: MatMut<'_, $t>) {
                gemm_packed(alpha, a, b, beta, c);
            }

            fn kernel(variant: KernelVariant) -> Kernel<$t> {
                match variant {
                    #[cfg(target_arch = "x86_64")]
                    KernelVariant::Avx512 => Kernel::of::<Avx512>(),
                    _ => Kernel::of::<Portable>(),
                }
            }
        }
    };
}

impl_gemm_scalar!(f32);
impl_gemm_scalar!(f64);

/// `C <- alpha op(A) op(B) + beta C`, `op(A)` m x k, `op(B)` k x n, C m x n (row-major).
///
/// `op(A)` is `a` as used ([`MatRef::transpose`] marks a transposed operand), likewise `op(B)`.
/// `beta == 0` never reads C. Runs on the current rayon pool when the work between two joins
/// is at least [`GEMM_PARALLEL_MIN_MULADDS`] (see the module documentation); results are
/// bit-identical for any pool size.
///
/// # Panics
///
/// If the shapes of `op(A)`, `op(B)` and C do not agree (the crate contract: a programming
/// error, never silent).
pub fn gemm<T: Float>(alpha: T, a: MatRef<'_, T>, b: MatRef<'_, T>, beta: T, c: MatMut<'_, T>) {
    dispatch!(T, S => S::gemm(same(alpha), a.cast(), b.cast(), same(beta), c.cast()))
}

/// The deepest product that [`matmul`] writes to C in one pass, whatever the kernel: for
/// `m, n >= 2` and `2 <= k <= SINGLE_PASS_DEPTH` (rule 5 below), each element of C is set once,
/// to `fma(beta, c, alpha s)` with `alpha s` rounded first and `s` the element's sum of
/// products, which depends on neither `alpha` nor `beta`. (Deeper products add each KC-deep
/// panel's `alpha s_panel` to C in turn.) So at these depths `matmul(-lr, A, B, 1, W)` is, bit
/// for bit, `W - lr G` with `G = matmul(1, A, B, 0, _)`: an optimizer can fold its update into
/// the product that forms the gradient, and never write the gradient.
pub const SINGLE_PASS_DEPTH: usize = {
    const fn min(a: usize, b: usize) -> usize {
        if a < b {
            a
        } else {
            b
        }
    }
    let depth = min(
        <Portable as GemmKernel<f32>>::KC,
        <Portable as GemmKernel<f64>>::KC,
    );
    #[cfg(target_arch = "x86_64")]
    let depth = min(
        depth,
        min(
            <Avx512 as GemmKernel<f32>>::KC,
            <Avx512 as GemmKernel<f64>>::KC,
        ),
    );
    depth
};

/// `C <- alpha op(A) op(B) + beta C` by the cheapest kernel for the shape, `op(A)` m x k,
/// `op(B)` k x n, C m x n (row-major): the entry for products whose shapes are known only at run
/// time, such as the autodiff tape's.
///
/// Dispatch, first match wins (each rule a function of the shapes, transposes and leading
/// dimensions only, so results stay bit-identical for any thread count):
///
/// 1. `m == 0`, `n == 0`, `k == 0` or `alpha == 0`: as [`gemm`] (`C <- beta C`, A and B not
///    read).
/// 2. `n == 1`, with the column of `op(B)` and of C each adjacent in storage: [`gemv`],
///    `c <- alpha op(A) b + beta c`.
/// 3. `m == 1`, with the row of `op(A)` adjacent in storage: [`gemv`] on the transpose,
///    `c^T <- alpha op(B)^T a^T + beta c^T`.
/// 4. `k == 1` (the outer product `x y^T`), with x and y adjacent in storage, and `beta` 0 or
///    1: `C[i][j] <- (alpha x_i) y_j` when `beta == 0` (C only written), the [`ger`] update
///    `C[i][j] <- fma(alpha x_i, y_j, C[i][j])` when `beta == 1`.
/// 5. Otherwise [`gemm`], which itself takes the direct kernels for small and skinny
///    products ([`use_direct`]) and the packed, blocked path for the rest.
///
/// # Why a separate entry
///
/// [`gemm`] keeps the BLAS contract of one algorithm: whatever the shape, each element is
/// summed the GEMM way, which its benchmarks and tests measure and which callers with pinned
/// results rely on. The level-2 kernels group their sums differently (GEMV keeps two
/// accumulators per row, an outer product has one multiply), so sending degenerate shapes to
/// them inside `gemm` would change its results for those shapes; `matmul` is where that choice
/// is made, once, for callers that only want the product fast.
///
/// # Panics
///
/// As [`gemm`], if the shapes of `op(A)`, `op(B)` and C do not agree.
///
/// [`gemv`]: crate::gemv
/// [`ger`]: crate::ger
pub fn matmul<T: Float>(alpha: T, a: MatRef<'_, T>, b: MatRef<'_, T>, beta: T, c: MatMut<'_, T>) {
    check_shapes(&a, &b, &c);
    let (m, k, n, ldc) = (a.rows(), a.cols(), b.cols(), c.ld());
    if m == 0 || n == 0 || k == 0 || alpha == T::ZERO {
        return gemm(alpha, a, b, beta, c);
    }
    // C is one column (or one row) adjacent in storage: `ld >= cols`, so `ld == 1` means one
    // column.
    let c_adjacent = m == 1 || ldc == 1;
    if n == 1 && c_adjacent {
        if let Some(x) = b.as_vector() {
            return crate::gemv(alpha, a, x, beta, &mut c.into_data()[..m]);
        }
    }
    if m == 1 {
        if let Some(x) = a.as_vector() {
            return crate::gemv(alpha, b.transpose(), x, beta, &mut c.into_data()[..n]);
        }
    }
    if k == 1 && (beta == T::ZERO || beta == T::ONE) {
        if let (Some(x), Some(y)) = (a.as_vector(), b.as_vector()) {
            if beta == T::ONE {
                return crate::ger(alpha, x, y, c);
            }
            let rows = c.into_data().chunks_mut(ldc);
            for (&xi, row) in x.iter().zip(rows) {
                let scaled = alpha * xi;
                for (cv, &yv) in row[..n].iter_mut().zip(y) {
                    *cv = scaled * yv;
                }
            }
            return;
        }
    }
    gemm(alpha, a, b, beta, c)
}

/// Panics with a message naming the operands unless `op(A) op(B)` is a product C can hold.
pub(crate) fn check_shapes<T>(a: &MatRef<'_, T>, b: &MatRef<'_, T>, c: &MatMut<'_, T>) {
    let (m, k, n) = (a.rows(), a.cols(), b.cols());
    assert!(
        b.rows() == k,
        "gemm: op(A) is {m} x {k} but op(B) is {} x {n}: inner dimensions differ",
        b.rows()
    );
    assert!(
        c.rows() == m && c.cols() == n,
        "gemm: op(A) op(B) is {m} x {n} but C is {} x {}",
        c.rows(),
        c.cols()
    );
}

/// The typed body of [`gemm`], reached through `GemmScalar::gemm`.
pub(crate) fn gemm_packed<S: GemmScalar>(
    alpha: S,
    a: MatRef<'_, S>,
    b: MatRef<'_, S>,
    beta: S,
    c: MatMut<'_, S>,
) {
    check_shapes(&a, &b, &c);
    let (m, k, n, ldc) = (a.rows(), a.cols(), b.cols(), c.ld());
    let Some(c) = product_storage(c, (m, n, k), alpha, beta) else {
        return;
    };
    // small and skinny products: no packing (`gemm/direct.rs`)
    if use_direct(b.trans(), m, n, k) {
        direct::gemm_direct(alpha, a, b, beta, MatMut::with_ld(c, m, n, ldc));
        return;
    }
    packed_path(alpha, a, BSource::Matrix(b), n, beta, c, ldc);
}

/// `C <- alpha A B + beta C` with B (k x n) given as the packed micro-panels the packed path
/// would make of it, so that a caller that generates B (such as a random matrix drawn block by
/// block) writes each value once, where the microkernel reads it, instead of into a matrix
/// that the GEMM then copies.
///
/// `b_panels` holds `ceil(n / NR)` micro-panels of `k x NR` scalars, `NR` being
/// [`Blocking::nr`] of [`blocking`]`::<T>(`[`current_variant`]`())`: panel `s` at `s k NR`,
/// with `B[p][s NR + j]` at `s k NR + p NR + j` and zeros in the columns past `n` of the last
/// panel. `k` is at most that blocking's `kc` (one depth panel: a deeper product is the sum of
/// calls over its KC-deep panels, the first with `beta` and the others with `beta = 1`,
/// exactly as [`gemm`] sums it). `op(A)` is m x k.
///
/// The result is bit-identical to [`gemm`] on the same B with the packed path
/// ([`GemmPath::Packed`]): the same tiles, the same FMA chains. Runs on the current rayon pool
/// when `m min(n, NC) k` is at least [`GEMM_PARALLEL_MIN_MULADDS`], bit-identically for any
/// pool size.
///
/// # Panics
///
/// If `k` exceeds the depth panel, `b_panels` is shorter than the panels, or the shapes of
/// `op(A)` (m x k) and C (m x n) disagree.
pub fn gemm_prepacked_b<T: Float>(
    alpha: T,
    a: MatRef<'_, T>,
    b_panels: &[T],
    n: usize,
    beta: T,
    c: MatMut<'_, T>,
) {
    dispatch!(T, S => prepacked_b::<S>(
        same(alpha),
        a.cast(),
        cast(b_panels),
        n,
        same(beta),
        c.cast(),
    ))
}

/// The typed body of [`gemm_prepacked_b`].
fn prepacked_b<S: GemmScalar>(
    alpha: S,
    a: MatRef<'_, S>,
    b_panels: &[S],
    n: usize,
    beta: S,
    c: MatMut<'_, S>,
) {
    let Blocking { nr, kc, .. } = S::kernel(current_variant()).blocking;
    let (m, k, ldc) = (a.rows(), a.cols(), c.ld());
    assert!(k <= kc, "depth {k} exceeds one depth panel ({kc})");
    assert!(
        b_panels.len() >= n.div_ceil(nr) * nr * k,
        "the B panels hold fewer than {k} x {n} (NR {nr})"
    );
    assert!(
        c.rows() == m && c.cols() == n,
        "op(A) B is {m} x {n} but C is {} x {}",
        c.rows(),
        c.cols()
    );
    let Some(c) = product_storage(c, (m, n, k), alpha, beta) else {
        return;
    };
    packed_path(alpha, a, BSource::Packed(b_panels), n, beta, c, ldc);
}

/// C's storage (through its last element) for an `m x n x k` product with something to
/// multiply, or `None` once the degenerate products are done: nothing to write (`m` or `n`
/// zero), or `C <- beta C` without reading A or B (`k` or `alpha` zero, the BLAS convention).
fn product_storage<S: Float>(
    c: MatMut<'_, S>,
    (m, n, k): (usize, usize, usize),
    alpha: S,
    beta: S,
) -> Option<&mut [S]> {
    let ldc = c.ld();
    if m == 0 || n == 0 {
        return None;
    }
    let c = &mut c.into_data()[..(m - 1) * ldc + n];
    if k == 0 || alpha == S::ZERO {
        scale_c(beta, c, m, n, ldc);
        return None;
    }
    Some(c)
}

/// The packed, blocked loops of [`gemm_packed`] for a product with at least one row, column and
/// depth step, `op(A)` m x k and `op(B)` k x n from `b` (as stored, or already packed), on the
/// C storage `c` with leading dimension `ldc`.
fn packed_path<S: GemmScalar>(
    alpha: S,
    a: MatRef<'_, S>,
    b: BSource<'_, S>,
    n: usize,
    beta: S,
    c: &mut [S],
    ldc: usize,
) {
    let (m, k) = (a.rows(), a.cols());
    let kernel = S::kernel(current_variant());
    let Blocking { mr, nr, kc, mc, nc } = kernel.blocking;
    let panel_muladds = m.saturating_mul(n.min(nc)).saturating_mul(k.min(kc));
    let threads = if panel_muladds >= GEMM_PARALLEL_MIN_MULADDS {
        rayon::current_num_threads()
    } else {
        1
    };
    // Tasks own row panels of C, unless there are fewer than two MR-row strips per thread:
    // then they own NR-aligned column ranges (all rows) instead, so that short, wide products
    // (m <= MR included) still use every thread. Either way each element is computed by the
    // same tile arithmetic, so the split never changes a bit.
    let strips = m.div_ceil(mr);
    let split_columns = threads > 1 && strips < 2 * threads;
    let parallel_tasks = if split_columns {
        threads.min(n.min(nc).div_ceil(nr))
    } else {
        threads.min(strips)
    };
    // With so few rows that a packed B micro-panel would serve only a few tiles, the kernel
    // reads B's whole NR-column strips in place (see `GemmKernel::b_in_place_tile`)
    let b_in_place = !split_columns
        && strips <= kernel.b_in_place_max_strips
        && matches!(b, BSource::Matrix(b) if b.trans() == Transpose::No);
    // With one row block run by one task, each B micro-panel serves that block's tiles once:
    // the row panel packs B one group of micro-panels at a time, just before their tiles, so
    // the packed values are still in L2 when read (see `BBlock::Deferred`)
    let b_deferred = !b_in_place && parallel_tasks == 1 && m <= mc;

    // loop over the NC-wide column panels of C and B
    for jc in (0..n).step_by(nc) {
        let cols = jc..n.min(jc + nc);
        // loop over the KC-deep depth panels, always in increasing order
        for pc in (0..k).step_by(kc) {
            let depth = pc..k.min(pc + kc);
            let beta_panel = if pc == 0 { beta } else { S::ONE };
            let panel_len = depth.len() * nr;
            // in place, only a last partial strip is packed
            let packed_cols = if b_in_place {
                cols.end - cols.len() % nr..cols.end
            } else {
                cols.clone()
            };
            let b_len = packed_cols.len().div_ceil(nr) * panel_len;
            let panel = DepthPanel {
                a,
                depth: depth.clone(),
                alpha,
                beta: beta_panel,
                kernel,
            };
            let mut multiply = |b_pack: &[S]| {
                let b_block = match b {
                    BSource::Matrix(b) if b_in_place => BBlock::InPlace { b, partial: b_pack },
                    _ => BBlock::Packed(b_pack),
                };
                let row_block = |c_rows: &mut [S], rows: std::ops::Range<usize>| {
                    row_panel(&panel, b_block, c_rows, ldc, rows, cols.clone())
                };
                if parallel_tasks > 1 && split_columns {
                    // loop over column ranges of C, one rayon task each, all rows
                    let panels = cols.len().div_ceil(nr);
                    let panels_per_task = panels.div_ceil(parallel_tasks);
                    let task_width = panels_per_task * nr;
                    column_parts(c, (m, ldc), cols.clone(), task_width)
                        .into_par_iter()
                        .zip(b_pack.par_chunks(panels_per_task * panel_len))
                        .for_each(|(mut c_part, b_part)| {
                            column_panel(&panel, b_part, &mut c_part, 0..m)
                        });
                } else if parallel_tasks > 1 {
                    // loop over the row panels of C, one rayon task each
                    let mut c_rest = &mut *c;
                    let mut c_panels = Vec::new();
                    for rows in row_tasks(m, mr, mc, parallel_tasks) {
                        let (c_rows, tail) =
                            c_rest.split_at_mut((rows.len() * ldc).min(c_rest.len()));
                        c_panels.push((c_rows, rows));
                        c_rest = tail;
                    }
                    c_panels
                        .into_par_iter()
                        .for_each(|(c_rows, rows)| row_block(c_rows, rows));
                } else {
                    // loop over the MC-tall row panels of C
                    for (t, c_rows) in c.chunks_mut(mc * ldc).enumerate() {
                        let first = t * mc;
                        row_block(c_rows, first..m.min(first + mc));
                    }
                }
            };
            match b {
                BSource::Matrix(b) if b_deferred => {
                    row_panel(&panel, BBlock::Deferred(b), c, ldc, 0..m, cols.clone())
                }
                BSource::Matrix(b) => with_pack_buffer::<S, _>(&PACK_B, b_len, |b_pack| {
                    if b_in_place {
                        pack_b(b_pack, b, depth.clone(), packed_cols, nr);
                    } else if parallel_tasks > 1 {
                        // packing is a few percent of the work: split it too (by columns, so each
                        // task fills whole micro-panels; the packed values do not depend on it)
                        let panels = cols.len().div_ceil(nr);
                        let panels_per_task = panels.div_ceil(parallel_tasks);
                        b_pack
                            .par_chunks_mut(panels_per_task * panel_len)
                            .enumerate()
                            .for_each(|(t, b_part)| {
                                let first = cols.start + t * panels_per_task * nr;
                                let part = first..cols.end.min(first + panels_per_task * nr);
                                pack_b(b_part, b, depth.clone(), part, nr);
                            });
                    } else {
                        pack_b(b_pack, b, depth.clone(), cols.clone(), nr);
                    }
                    multiply(b_pack)
                }),
                // one depth panel (see `gemm_prepacked_b`): the micro-panels of `cols`
                BSource::Packed(panels) => {
                    multiply(&panels[cols.start / nr * panel_len..][..b_len])
                }
            }
        }
    }
}

/// The columns `cols` of the first `rows` rows of C (leading dimension `ldc`) cut into parts of
/// `width` columns (the last one narrower): part `t` holds, row by row, columns `cols.start + t
/// width ..` of every row, for one parallel task each.
pub(super) fn column_parts<S>(
    c: &mut [S],
    (rows, ldc): (usize, usize),
    cols: std::ops::Range<usize>,
    width: usize,
) -> Vec<Vec<&mut [S]>> {
    let mut parts: Vec<Vec<&mut [S]>> = (0..cols.len().div_ceil(width))
        .map(|_| Vec::with_capacity(rows))
        .collect();
    for c_row in c.chunks_mut(ldc).take(rows) {
        let mut rest = &mut c_row[cols.clone()];
        for part in &mut parts {
            let (head, tail) = rest.split_at_mut(width.min(rest.len()));
            part.push(head);
            rest = tail;
        }
    }
    parts
}

/// The row panels of C that the parallel row split hands out as tasks, in order: MR-aligned,
/// at most MC rows each, and as many as MC-row blocks need rounded up to a multiple of
/// `threads`, with the MR-row strips spread over them as evenly as possible.
///
/// Every thread then gets the same share of tiles. Rounding only to "at least one task per
/// thread" left, for example, 2000 rows with MC = 288 as 7 tasks of up to 288 rows: on 2
/// threads one of them ran 4 of the 7, 15% more than half of the work, capping sgemm 2000^3 at
/// 1.74x one thread (8 tasks of 20 or 21 strips run 996 and 1004 rows per thread). Which thread
/// runs which task never changes a bit of C.
fn row_tasks(m: usize, mr: usize, mc: usize, threads: usize) -> Vec<std::ops::Range<usize>> {
    let strips = m.div_ceil(mr);
    let tasks = strips
        .div_ceil(mc / mr)
        .next_multiple_of(threads)
        .min(strips);
    (0..tasks)
        .map(|t| (t * strips / tasks * mr)..((t + 1) * strips / tasks * mr).min(m))
        .collect()
}

/// What every row or column panel of one depth panel shares: A, the depth range, the scalars
/// (`beta` is the call's beta on the first depth panel, 1 afterwards) and the kernel.
struct DepthPanel<'a, S> {
    a: MatRef<'a, S>,
    depth: std::ops::Range<usize>,
    alpha: S,
    beta: S,
    kernel: Kernel<S>,
}

/// Where the packed path reads `op(B)`: a matrix it packs itself, or B micro-panels packed by
/// the caller ([`gemm_prepacked_b`]: one depth panel, every NR-column strip in order).
#[derive(Clone, Copy)]
enum BSource<'a, S> {
    Matrix(MatRef<'a, S>),
    Packed(&'a [S]),
}

/// Where a row panel reads its B micro-panels: all packed (`kc x NR` each, in order); whole
/// NR-column strips read in place from `b` (not transposed; its rows `depth`) with only a
/// last partial strip packed in `partial`; or packed by the row panel itself from `op(B)`,
/// [`B_DEFERRED_PANELS`] micro-panels at a time, each group just before its tiles.
#[derive(Clone, Copy)]
enum BBlock<'a, S> {
    Packed(&'a [S]),
    InPlace { b: MatRef<'a, S>, partial: &'a [S] },
    Deferred(MatRef<'a, S>),
}

/// B micro-panels a row panel packs at a time with [`BBlock::Deferred`]: 128 KB of f32 (NR 32,
/// KC 256) or 96 KB of f64 for the AVX-512 kernels, so a group stays in L2 from its packing to
/// its last tile. Packed all at once instead, the block (4 MB for 2000 f32 columns) goes out to
/// L3 or memory and comes back, while packing was already a fifth of a 180 x 2000 x 2000
/// product on one thread. Groups of 8 and 16 panels measured level with 4 or slower.
const B_DEFERRED_PANELS: usize = 4;

/// One row panel: packs `op(A)[rows, depth]` and updates `C[rows, cols]` (whose first row is
/// `c_rows[0..]`) with the B block, tile by tile, packing a deferred B block group by group.
/// With a packed or deferred B block of at most [`IN_PLACE_A_MAX_STRIPS`] strips, whole MR-row
/// strips of A are read in place and only a last partial strip is packed (zero-padded); the
/// arithmetic is the same.
fn row_panel<S: GemmScalar>(
    panel: &DepthPanel<'_, S>,
    b_block: BBlock<'_, S>,
    c_rows: &mut [S],
    ldc: usize,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
) {
    let Blocking { mr, nr, .. } = panel.kernel.blocking;
    let depth = &panel.depth;
    let kc = depth.len();
    // The first `in_place_strips` MR-row strips are read from A's storage, the rest packed.
    let in_place = match b_block {
        BBlock::Packed(_) | BBlock::Deferred(_) => cols.len().div_ceil(nr) <= IN_PLACE_A_MAX_STRIPS,
        BBlock::InPlace { .. } => false,
    };
    let in_place_strips = if in_place { rows.len() / mr } else { 0 };
    let first_packed_row = rows.start + in_place_strips * mr;
    let a_len = (rows.end - first_packed_row).div_ceil(mr) * mr * kc;
    with_pack_buffer::<S, _>(&PACK_A, a_len, |a_pack| {
        pack_a(
            a_pack,
            panel.a,
            first_packed_row..rows.end,
            depth.clone(),
            mr,
        );
        let packed_a = PackedA {
            pack: &*a_pack,
            in_place_strips,
        };
        let BBlock::Deferred(b) = b_block else {
            return row_panel_tiles(panel, b_block, packed_a, c_rows, ldc, rows, cols);
        };
        // loop over groups of B_DEFERRED_PANELS micro-panels: pack, then their tiles
        let group_len = B_DEFERRED_PANELS * kc * nr;
        with_pack_buffer::<S, _>(&PACK_B, group_len, |b_pack| {
            for first in cols.clone().step_by(B_DEFERRED_PANELS * nr) {
                let group = first..cols.end.min(first + B_DEFERRED_PANELS * nr);
                let b_pack = &mut b_pack[..group.len().div_ceil(nr) * kc * nr];
                pack_b(b_pack, b, depth.clone(), group.clone(), nr);
                let b_block = BBlock::Packed(&*b_pack);
                row_panel_tiles(panel, b_block, packed_a, c_rows, ldc, rows.clone(), group);
            }
        });
    });
}

/// A row panel's A block: its first `in_place_strips` MR-row strips are read from A's storage,
/// the others packed in `pack`.
#[derive(Clone, Copy)]
struct PackedA<'a, S> {
    pack: &'a [S],
    in_place_strips: usize,
}

/// The tiles of a row panel for the columns `cols` of its B block (not `Deferred`).
fn row_panel_tiles<S: GemmScalar>(
    panel: &DepthPanel<'_, S>,
    b_block: BBlock<'_, S>,
    packed_a: PackedA<'_, S>,
    c_rows: &mut [S],
    ldc: usize,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
) {
    let DepthPanel {
        a,
        ref depth,
        alpha,
        beta,
        kernel,
    } = *panel;
    let Blocking { mr, nr, .. } = kernel.blocking;
    let PackedA {
        pack: a_pack,
        in_place_strips,
    } = packed_a;
    let kc = depth.len();
    let row_count = rows.len();
    let (b_panels, a_strips) = (cols.len().div_ceil(nr), row_count.div_ceil(mr));
    // the walk order (see `GemmKernel::ALONG_ROWS`)
    let along_rows = match b_block {
        BBlock::InPlace { .. } => kc < kernel.b_in_place_along_rows_max_depth,
        BBlock::Packed(_) | BBlock::Deferred(_) => kernel.along_rows,
    };
    let (outer, inner) = if along_rows {
        (a_strips, b_panels)
    } else {
        (b_panels, a_strips)
    };
    // loop over the NR-wide strips of the B block, and in each over the MR-tall strips of the
    // A block (the other way round along the rows)
    for outer_index in 0..outer {
        for inner_index in 0..inner {
            let (ir, jr) = if along_rows {
                (outer_index, inner_index)
            } else {
                (inner_index, outer_index)
            };
            let first_col = cols.start + jr * nr;
            let tile_cols = nr.min(cols.end - first_col);
            let first_row = rows.start + ir * mr;
            let c_tile = &mut c_rows[ir * mr * ldc + first_col..];
            let tile_rows = mr.min(rows.end - first_row);
            let c_tile = MatMut::with_ld(c_tile, tile_rows, tile_cols, ldc);
            if ir < in_place_strips {
                let BBlock::Packed(b_pack) = b_block else {
                    unreachable!("A is read in place only with a packed B block")
                };
                let b_panel = &b_pack[jr * kc * nr..][..kc * nr];
                let ld = a.ld();
                let a_strip = match a.trans() {
                    Transpose::No => {
                        let strip = &a.data()[first_row * ld + depth.start..];
                        MatRef::with_ld(strip, mr, kc, ld)
                    }
                    Transpose::Yes => {
                        let strip = &a.data()[depth.start * ld + first_row..];
                        MatRef::with_ld(strip, kc, mr, ld).transpose()
                    }
                };
                (kernel.strided)(a_strip, b_panel, alpha, beta, c_tile);
                continue;
            }
            let a_panel = &a_pack[(ir - in_place_strips) * kc * mr..][..kc * mr];
            match b_block {
                BBlock::Packed(b_pack) => {
                    let b_panel = &b_pack[jr * kc * nr..][..kc * nr];
                    (kernel.tile)(kc, a_panel, b_panel, alpha, beta, c_tile);
                }
                BBlock::InPlace { b, .. } if tile_cols == nr => {
                    let ld = b.ld();
                    let strip = &b.data()[depth.start * ld + first_col..];
                    let b_strip = MatRef::with_ld(strip, kc, nr, ld);
                    (kernel.b_in_place)(a_panel, b_strip, alpha, beta, c_tile);
                }
                BBlock::InPlace { partial, .. } => {
                    (kernel.tile)(kc, a_panel, partial, alpha, beta, c_tile);
                }
                BBlock::Deferred(_) => unreachable!("row_panel packs a deferred B block"),
            }
        }
    }
}

/// One column range of C for all rows `rows`: packs `op(A)[rows, depth]` and updates
/// `c_rows[i][..]` (row `rows.start + i` of C, restricted to the range) with the packed B
/// micro-panels `b_pack` of the range. The tiles go through a full-size buffer, which is the
/// same arithmetic as writing them in place (partial tiles do that anyway).
fn column_panel<S: GemmScalar>(
    panel: &DepthPanel<'_, S>,
    b_pack: &[S],
    c_rows: &mut [&mut [S]],
    rows: std::ops::Range<usize>,
) {
    let (alpha, beta, tile) = (panel.alpha, panel.beta, panel.kernel.tile);
    let Blocking { mr, nr, .. } = panel.kernel.blocking;
    assert!(mr * nr <= MAX_TILE);
    let kc = panel.depth.len();
    let row_count = rows.len();
    let a_len = row_count.div_ceil(mr) * mr * kc;
    let mut buffer = [S::ZERO; MAX_TILE];
    let buffer = &mut buffer[..mr * nr];
    with_pack_buffer::<S, _>(&PACK_A, a_len, |a_pack| {
        pack_a(a_pack, panel.a, rows, panel.depth.clone(), mr);
        // loop over the NR-wide strips of the range
        for (jr, b_panel) in b_pack.chunks_exact(kc * nr).enumerate() {
            let first_col = jr * nr;
            // loop over the MR-tall strips of A
            for (a_panel, c_tile_rows) in a_pack.chunks_exact(kc * mr).zip(c_rows.chunks_mut(mr)) {
                let tile_cols = nr.min(c_tile_rows[0].len() - first_col);
                if beta != S::ZERO {
                    for (buffer_row, c_row) in buffer.chunks_exact_mut(nr).zip(&*c_tile_rows) {
                        buffer_row[..tile_cols].copy_from_slice(&c_row[first_col..][..tile_cols]);
                    }
                }
                tile(
                    kc,
                    a_panel,
                    b_panel,
                    alpha,
                    beta,
                    MatMut::new(buffer, mr, nr),
                );
                for (buffer_row, c_row) in buffer.chunks_exact(nr).zip(c_tile_rows) {
                    c_row[first_col..][..tile_cols].copy_from_slice(&buffer_row[..tile_cols]);
                }
            }
        }
    });
}

/// `C <- beta C` without reading C when `beta == 0` (nor touching it when `beta == 1`).
fn scale_c<S: Float>(beta: S, c: &mut [S], m: usize, n: usize, ldc: usize) {
    if beta == S::ONE {
        return;
    }
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

/// Alignment of the packed blocks: one cache line, and one zmm vector.
const PACK_ALIGN: usize = 64;

/// Runs `f` on a thread-local buffer of `len` scalars (64-byte aligned), reused across calls.
///
/// The buffer is taken out of its slot for the duration of `f`, so a nested call on the same
/// thread (rayon may run another task while this one waits) simply gets a fresh buffer.
fn with_pack_buffer<S: bytemuck::Pod, R>(
    slot: &'static LocalKey<Cell<Vec<f64x4>>>,
    len: usize,
    f: impl FnOnce(&mut [S]) -> R,
) -> R {
    let mut buffer = slot.with(Cell::take);
    // f64x4 is 32-byte aligned: one extra cache line leaves room to align to 64
    let vectors = (len * std::mem::size_of::<S>() + PACK_ALIGN).div_ceil(32);
    if buffer.len() < vectors {
        buffer.resize(vectors, f64x4::ZERO);
    }
    // f64x4 is 32 bytes with 32-byte alignment and S is 4 or 8 bytes: the cast cannot fail.
    let scalars: &mut [S] = bytemuck::cast_slice_mut(&mut buffer[..vectors]);
    let offset = scalars.as_ptr().align_offset(PACK_ALIGN);
    let result = f(&mut scalars[offset..][..len]);
    slot.with(|cell| cell.set(buffer));
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The row split covers `0..m` in order with MR-aligned panels of at most MC rows, hands
    /// each thread the same number of tasks, and no task more than one strip above another.
    #[test]
    fn row_tasks_tile_the_rows_evenly() {
        for (mr, mc) in [(12, 288), (14, 280), (6, 168), (6, 144)] {
            for threads in 2..=5 {
                for m in (2 * threads * mr..3000).step_by(7).chain([2000, 1024, 160]) {
                    let tasks = row_tasks(m, mr, mc, threads);
                    let strips = m.div_ceil(mr);
                    assert_eq!(tasks.first().unwrap().start, 0);
                    assert_eq!(tasks.last().unwrap().end, m);
                    for pair in tasks.windows(2) {
                        assert_eq!(pair[0].end, pair[1].start, "m {m}: gap or overlap");
                    }
                    let sizes: Vec<usize> = tasks.iter().map(|r| r.len().div_ceil(mr)).collect();
                    assert!(tasks.iter().all(|r| r.start % mr == 0 && r.len() <= mc));
                    assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
                    if strips >= tasks.len().next_multiple_of(threads) {
                        assert_eq!(tasks.len() % threads, 0, "m {m}, {threads} threads");
                    }
                }
            }
        }
        // the case that motivated it: 2000 rows of sgemm AVX-512 on 2 threads
        let tasks = row_tasks(2000, 12, 288, 2);
        let first_half: usize = tasks[..4].iter().map(|r| r.len()).sum();
        assert_eq!((tasks.len(), first_half), (8, 996));
    }
}
