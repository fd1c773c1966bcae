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
//!         for ir in MR-tall row strips of the A block
//!           AB = A micro-panel x B micro-panel         (MR x NR accumulators in registers)
//!           C tile <- alpha AB + beta' C tile          (beta' = beta on the first depth
//!                                                        panel, 1 afterwards)
//! ```
//!
//! When the B block is narrow (at most `IN_PLACE_A_MAX_STRIPS` micro-panels, so a packed A
//! micro-panel would be used only a few times), the kernels read whole MR-row strips of
//! `op(A)` in place instead and only a last partial strip is packed: the same FMA chains, so
//! the same bits.
//!
//! # Kernel variants
//!
//! Two microkernel families exist ([`KernelVariant`]): `Avx2`, the portable `wide` kernels
//! (f32 6 x 16, f64 6 x 8; AVX2 + FMA in the default x86-64-v3 build), and `Avx512`, written
//! with `std::arch` intrinsics under `#[target_feature(enable = "avx512f")]` (f32 12 x 32, f64
//! 14 x 16). The variant is chosen once per process at run time ([`kernel_variant`]: AVX-512
//! when the CPU has `avx512f`, overridable with `BENIGN_GEMM_KERNEL=auto|avx2|avx512`); each
//! has its own blocking (MR, NR, KC, MC, NC), and packing follows the chosen variant. Non-x86
//! builds have the `wide` kernels only.
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
//! Calls with at least [`GEMM_PARALLEL_MIN_MULADDS`] multiply-adds run on the current rayon
//! pool: per depth panel, the B block is packed by column ranges in parallel, then each task
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
mod microkernel;
mod pack;

use rayon::prelude::*;
use std::cell::Cell;
use std::sync::OnceLock;
use std::thread::LocalKey;
use wide::{f32x8, f64x4};

use crate::Float;
#[cfg(target_arch = "x86_64")]
#[doc(hidden)]
pub use avx512::{tile_f32 as avx512_tile_f32, tile_f64 as avx512_tile_f64};
#[doc(hidden)]
pub use microkernel::{microkernel, prefetch_tile, write_back, Lanes, Tile, MR, NR_VECTORS};
use microkernel::{strided_tile_wide, tile_wide, TileFn};
use pack::{pack_a, pack_b, Operand};

pub use direct::{
    use_direct, with_gemm_path, GemmPath, DIRECT_MAX_MULADDS, DIRECT_MAX_ROWS, DOT_MIN_DEPTH,
    PARALLEL_COLUMNS,
};

/// Whether an operand is used as stored (`No`) or transposed (`Yes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transpose {
    /// The operand as stored: `op(A) = A`.
    No,
    /// The operand's transpose: `op(A) = A^T`, read from the same storage.
    Yes,
}

/// Problems with fewer multiply-adds (`m * n * k`) than this run on the calling thread: below
/// about 2M multiply-adds (roughly 50 µs on one core) rayon's fork/join per depth panel costs
/// more than the second core brings.
pub const GEMM_PARALLEL_MIN_MULADDS: usize = 1 << 21;

/// The microkernel family a GEMM call runs with.
///
/// Chosen once per process by [`kernel_variant`]: `Avx512` when the CPU has AVX-512F (x86-64
/// only; detected at run time, so an x86-64-v3 build uses it on AVX-512 machines), `Avx2`
/// otherwise. The environment variable `BENIGN_GEMM_KERNEL` (`auto`, `avx2` or `avx512`, read
/// once) overrides the choice; an unknown value or `avx512` on a CPU without it falls back to
/// `auto` with a warning on stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelVariant {
    /// The portable `wide` kernels (f32x8 6 x 16, f64x4 6 x 8): AVX2 + FMA instructions when
    /// the build targets x86-64-v3, whatever `wide` lowers to elsewhere.
    Avx2,
    /// 512-bit kernels (f32 12 x 32, f64 14 x 16) written with `std::arch` intrinsics.
    Avx512,
}

impl KernelVariant {
    /// Whether this variant can run on this CPU.
    pub fn is_available(self) -> bool {
        match self {
            KernelVariant::Avx2 => true,
            #[cfg(target_arch = "x86_64")]
            KernelVariant::Avx512 => avx512::detected(),
            #[cfg(not(target_arch = "x86_64"))]
            KernelVariant::Avx512 => false,
        }
    }

    /// The variants this CPU can run, portable first.
    pub fn available() -> Vec<KernelVariant> {
        [KernelVariant::Avx2, KernelVariant::Avx512]
            .into_iter()
            .filter(|variant| variant.is_available())
            .collect()
    }

    /// The name `BENIGN_GEMM_KERNEL` accepts for it.
    pub fn name(self) -> &'static str {
        match self {
            KernelVariant::Avx2 => "avx2",
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
            .unwrap_or(&KernelVariant::Avx2);
        let requested = std::env::var("BENIGN_GEMM_KERNEL").unwrap_or_default();
        match requested.as_str() {
            "" | "auto" => best,
            "avx2" => KernelVariant::Avx2,
            "avx512" if KernelVariant::Avx512.is_available() => KernelVariant::Avx512,
            other => {
                eprintln!(
                    "warning: BENIGN_GEMM_KERNEL={other:?} is not usable here (valid: auto, \
                     avx2, avx512 on CPUs with avx512f); using {}",
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

/// The variant a call made now on this thread uses.
pub(crate) fn current_variant() -> KernelVariant {
    VARIANT_OVERRIDE
        .with(Cell::get)
        .unwrap_or_else(kernel_variant)
}

/// Cache blocking of one kernel variant and element type (exposed for the edge-case tests).
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

/// f32, `Avx2` variant: 6 x 16 tiles (12 `f32x8` accumulators).
///
/// The `Avx2` blocking starts from BLIS's Haswell choices for the same 6 x 16 / 6 x 8
/// microkernels: a `KC x NR` B micro-panel (16 KB) plus an `MR x KC` A micro-panel (6 KB f32,
/// 12 KB f64) stay in L1, the `MC x KC` A block (168 KB f32, 288 KB f64) in L2, the `KC x NC`
/// B block (4 MB f32, 8 MB f64) in L3. Other choices (KC 384, MC 72..168, NC 1024..4080)
/// measured within the noise of the shared benchmark machine; f64 MC was raised from BLIS's 72
/// to 144.
#[doc(hidden)]
pub const SGEMM_BLOCKING: Blocking = Blocking {
    mr: MR,
    nr: 16,
    kc: 256,
    mc: 168,
    nc: 4080,
};

/// f64, `Avx2` variant: 6 x 8 tiles (12 `f64x4` accumulators).
#[doc(hidden)]
pub const DGEMM_BLOCKING: Blocking = Blocking {
    mr: MR,
    nr: 8,
    kc: 256,
    mc: 144,
    nc: 4080,
};

/// f32, `Avx512` variant: 12 x 32 tiles (24 zmm accumulators). The B micro-panel (`KC x 32`,
/// 32 KB) stays in Ice Lake's 48 KB L1 while A micro-panels (12 KB) stream from L2, which holds
/// the `MC x KC` A block (288 KB of 1.25 MB); the B block (`KC x NC`, 4 MB) lives in L3.
#[doc(hidden)]
pub const SGEMM_BLOCKING_AVX512: Blocking = Blocking {
    mr: 12,
    nr: 32,
    kc: 256,
    mc: 288,
    nc: 4096,
};

/// f64, `Avx512` variant: 14 x 16 tiles (28 zmm accumulators; BLIS's Skylake-X dgemm shape).
/// KC 192: the B micro-panel (24 KB) and an A micro-panel (21 KB) share the 48 KB L1, the A
/// block (420 KB) stays in L2 and the B block (3 MB) in L3. KC 128
/// (16 + 14 KB) was chosen while the C tile was prefetched all at once before each call; once
/// the kernel fetched it row by row during its last steps, KC 192 measured 13-19% faster at
/// 2000^3 and at 2000 x 2000 x 160 (one depth panel instead of two) than 128, and 256 in
/// between, in interleaved runs on the loaded 2-core Ice Lake machine.
#[doc(hidden)]
pub const DGEMM_BLOCKING_AVX512: Blocking = Blocking {
    mr: 14,
    nr: 16,
    kc: 192,
    mc: 280,
    nc: 2048,
};

/// The blocking `gemm::<T>` uses with `variant` (for the edge-case tests).
#[doc(hidden)]
pub fn blocking<T: Float>(variant: KernelVariant) -> Blocking {
    match (T::NAME, variant) {
        ("f32", KernelVariant::Avx2) => SGEMM_BLOCKING,
        ("f32", KernelVariant::Avx512) => SGEMM_BLOCKING_AVX512,
        (_, KernelVariant::Avx2) => DGEMM_BLOCKING,
        (_, KernelVariant::Avx512) => DGEMM_BLOCKING_AVX512,
    }
}

/// One kernel variant for one element type: its blocking and its tile function.
#[derive(Clone, Copy)]
pub(crate) struct Kernel<S> {
    blocking: Blocking,
    tile: TileFn<S>,
    /// The tile function reading whole MR-row strips of A in place (see `row_panel`), for
    /// the variants that have one.
    strided: Option<StridedTileFn<S>>,
}

/// A tile function that reads a whole MR-row strip of A in place: `(kc, a, a_stride, a_rows,
/// b_panel, alpha, beta, c, ldc, cols)`, A's element `(i, p)` at `a[i * a_stride + p]` when
/// `a_rows`, else at `a[p * a_stride + i]` (see `avx512::strided_tile_f32`).
pub(crate) type StridedTileFn<S> = fn(usize, &[S], usize, bool, &[S], S, S, &mut [S], usize, usize);

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
}

impl GemmScalar for f32 {
    fn kernel(variant: KernelVariant) -> Kernel<f32> {
        match variant {
            #[cfg(target_arch = "x86_64")]
            KernelVariant::Avx512 => Kernel {
                blocking: SGEMM_BLOCKING_AVX512,
                tile: avx512::tile_f32,
                strided: Some(avx512::strided_tile_f32),
            },
            _ => Kernel {
                blocking: SGEMM_BLOCKING,
                tile: tile_wide::<f32x8>,
                strided: Some(strided_tile_wide::<f32x8>),
            },
        }
    }
}

impl GemmScalar for f64 {
    fn kernel(variant: KernelVariant) -> Kernel<f64> {
        match variant {
            #[cfg(target_arch = "x86_64")]
            KernelVariant::Avx512 => Kernel {
                blocking: DGEMM_BLOCKING_AVX512,
                tile: avx512::tile_f64,
                strided: Some(avx512::strided_tile_f64),
            },
            _ => Kernel {
                blocking: DGEMM_BLOCKING,
                tile: tile_wide::<f64x4>,
                strided: Some(strided_tile_wide::<f64x4>),
            },
        }
    }
}

// The blocking tables agree with the kernels and with themselves.
const _: () = {
    assert!(SGEMM_BLOCKING.nr == <f32x8 as Lanes>::NR && DGEMM_BLOCKING.nr == <f64x4 as Lanes>::NR);
    #[cfg(target_arch = "x86_64")]
    assert!(
        SGEMM_BLOCKING_AVX512.mr == avx512::MR_F32
            && SGEMM_BLOCKING_AVX512.nr == avx512::NR_F32
            && DGEMM_BLOCKING_AVX512.mr == avx512::MR_F64
            && DGEMM_BLOCKING_AVX512.nr == avx512::NR_F64
    );
    let tables = [
        SGEMM_BLOCKING,
        DGEMM_BLOCKING,
        SGEMM_BLOCKING_AVX512,
        DGEMM_BLOCKING_AVX512,
    ];
    let mut index = 0;
    while index < tables.len() {
        let table = tables[index];
        assert!(table.mc.is_multiple_of(table.mr) && table.nc.is_multiple_of(table.nr));
        index += 1;
    }
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
pub(crate) fn check_operand(name: &str, rows: usize, cols: usize, ld: usize, len: usize) {
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
    // small and skinny products: no packing (`gemm/direct.rs`)
    if use_direct(tb, m, n, k) {
        direct::gemm_direct(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
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
    let Kernel {
        blocking,
        tile,
        strided,
    } = S::kernel(current_variant());
    let Blocking { mr, nr, kc, mc, nc } = blocking;
    let threads = if m.saturating_mul(n).saturating_mul(k) >= GEMM_PARALLEL_MIN_MULADDS {
        rayon::current_num_threads()
    } else {
        1
    };
    // Tasks own row panels of C, unless there are fewer than two MR-row strips per thread:
    // then they own NR-aligned column ranges (all rows) instead, so that short, wide products
    // (m <= MR included) still use every thread. Either way each element is computed by the
    // same tile arithmetic, so the split never changes a bit.
    let split_columns = threads > 1 && m.div_ceil(mr) < 2 * threads;
    let parallel_tasks = if split_columns {
        threads.min(n.min(nc).div_ceil(nr))
    } else {
        threads.min(m.div_ceil(mr))
    };

    // loop over the NC-wide column panels of C and B
    for jc in (0..n).step_by(nc) {
        let cols = jc..n.min(jc + nc);
        // loop over the KC-deep depth panels, always in increasing order
        for pc in (0..k).step_by(kc) {
            let depth = pc..k.min(pc + kc);
            let beta_panel = if pc == 0 { beta } else { S::ONE };
            let panel_len = depth.len() * nr;
            let b_len = cols.len().div_ceil(nr) * panel_len;
            with_pack_buffer::<S, _>(&PACK_B, b_len, |b_pack| {
                if parallel_tasks > 1 {
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
                let b_pack: &[S] = b_pack;
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
                        blocking,
                        tile,
                        strided,
                    )
                };
                if parallel_tasks > 1 && split_columns {
                    // loop over column ranges of C, one rayon task each, all rows
                    let panels = cols.len().div_ceil(nr);
                    let panels_per_task = panels.div_ceil(parallel_tasks);
                    let task_width = panels_per_task * nr;
                    let mut c_parts: Vec<Vec<&mut [S]>> = (0..panels.div_ceil(panels_per_task))
                        .map(|_| Vec::with_capacity(m))
                        .collect();
                    for c_row in c.chunks_mut(ldc) {
                        let mut rest = &mut c_row[cols.clone()];
                        for c_part in &mut c_parts {
                            let (part_row, tail) = rest.split_at_mut(task_width.min(rest.len()));
                            c_part.push(part_row);
                            rest = tail;
                        }
                    }
                    c_parts
                        .into_par_iter()
                        .zip(b_pack.par_chunks(panels_per_task * panel_len))
                        .for_each(|(mut c_part, b_part)| {
                            column_panel(
                                &mut c_part,
                                a,
                                0..m,
                                depth.clone(),
                                b_part,
                                alpha,
                                beta_panel,
                                blocking,
                                tile,
                            )
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
            });
        }
    }
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

/// One row panel: packs `op(A)[rows, depth]` and updates `C[rows, cols]` (whose first row is
/// `c_rows[0..]`) with the packed B block, tile by tile. With a `strided` tile function and a
/// B block of at most [`IN_PLACE_A_MAX_STRIPS`] strips, whole MR-row strips of A are read in
/// place and only a last partial strip is packed (zero-padded); the arithmetic is the same.
#[allow(clippy::too_many_arguments)]
fn row_panel<S: GemmScalar>(
    c_rows: &mut [S],
    ldc: usize,
    a: Operand<'_, S>,
    rows: std::ops::Range<usize>,
    depth: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
    b_pack: &[S],
    alpha: S,
    beta: S,
    blocking: Blocking,
    tile: TileFn<S>,
    strided: Option<StridedTileFn<S>>,
) {
    let Blocking { mr, nr, .. } = blocking;
    let kc = depth.len();
    let row_count = rows.len();
    // The first `in_place_strips` MR-row strips are read from A's storage, the rest packed.
    let in_place = strided.filter(|_| b_pack.len() <= IN_PLACE_A_MAX_STRIPS * kc * nr);
    let in_place_strips = if in_place.is_some() {
        row_count / mr
    } else {
        0
    };
    let first_packed_row = rows.start + in_place_strips * mr;
    let a_len = (rows.end - first_packed_row).div_ceil(mr) * mr * kc;
    with_pack_buffer::<S, _>(&PACK_A, a_len, |a_pack| {
        pack_a(a_pack, a, first_packed_row..rows.end, depth.clone(), mr);
        // loop over the NR-wide strips of the B block
        for (jr, b_panel) in b_pack.chunks_exact(kc * nr).enumerate() {
            let first_col = cols.start + jr * nr;
            let tile_cols = nr.min(cols.end - first_col);
            // loop over the MR-tall strips of the A block
            for ir in 0..row_count.div_ceil(mr) {
                let first_row = rows.start + ir * mr;
                let c_tile = &mut c_rows[ir * mr * ldc + first_col..];
                match in_place {
                    Some(strided) if ir < in_place_strips => {
                        let (a_strip, a_rows) = match a.trans {
                            Transpose::No => (&a.data[first_row * a.ld + depth.start..], true),
                            Transpose::Yes => (&a.data[depth.start * a.ld + first_row..], false),
                        };
                        strided(
                            kc, a_strip, a.ld, a_rows, b_panel, alpha, beta, c_tile, ldc, tile_cols,
                        );
                    }
                    _ => {
                        let a_panel = &a_pack[(ir - in_place_strips) * kc * mr..][..kc * mr];
                        let tile_rows = mr.min(rows.end - first_row);
                        tile(
                            kc, a_panel, b_panel, alpha, beta, c_tile, ldc, tile_rows, tile_cols,
                        );
                    }
                }
            }
        }
    });
}

/// Largest tile of any kernel variant, in scalars (f32 AVX-512: 12 x 32).
const MAX_TILE: usize = 12 * 32;
const _: () = assert!(MAX_TILE >= 14 * 16);

/// One column range of C for all rows `rows`: packs `op(A)[rows, depth]` and updates
/// `c_rows[i][..]` (row `rows.start + i` of C, restricted to the range) with the packed B
/// micro-panels `b_pack` of the range. The tiles go through a full-size buffer, which is the
/// same arithmetic as writing them in place (partial tiles do that anyway).
#[allow(clippy::too_many_arguments)]
fn column_panel<S: GemmScalar>(
    c_rows: &mut [&mut [S]],
    a: Operand<'_, S>,
    rows: std::ops::Range<usize>,
    depth: std::ops::Range<usize>,
    b_pack: &[S],
    alpha: S,
    beta: S,
    blocking: Blocking,
    tile: TileFn<S>,
) {
    let Blocking { mr, nr, .. } = blocking;
    assert!(mr * nr <= MAX_TILE);
    let kc = depth.len();
    let row_count = rows.len();
    let a_len = row_count.div_ceil(mr) * mr * kc;
    let mut buffer = [S::ZERO; MAX_TILE];
    let buffer = &mut buffer[..mr * nr];
    with_pack_buffer::<S, _>(&PACK_A, a_len, |a_pack| {
        pack_a(a_pack, a, rows, depth, mr);
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
                tile(kc, a_panel, b_panel, alpha, beta, buffer, nr, mr, nr);
                for (buffer_row, c_row) in buffer.chunks_exact(nr).zip(c_tile_rows) {
                    c_row[first_col..][..tile_cols].copy_from_slice(&buffer_row[..tile_cols]);
                }
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
