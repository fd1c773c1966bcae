//! The microkernel contract: everything that defines a GEMM kernel for one instruction set and
//! element type, in one trait implementation.
//!
//! A kernel is its register tile (`MR x NR`), the cache blocking built around that tile (`KC`,
//! `MC`, `NC`) and its two tile functions. Keeping them in one `impl` means the blocking the
//! packed path uses can never disagree with the tile the kernel computes: the packing width
//! comes from the same constants as the tile, and [`Blocking::of`] checks at compile time that
//! the blocks are whole multiples of the tile (the matrixmultiply crate's `GemmKernel` in the
//! same spirit).
//!
//! Two kernels exist: [`Portable`], the `wide` kernels (`gemm/microkernel.rs`: f32x8 and
//! f64x4, AVX2 + FMA instructions in the default x86-64-v3 build, whatever `wide` lowers to
//! elsewhere), and [`Avx512`], written with `std::arch` intrinsics (`gemm/avx512.rs`, x86-64
//! only, run only on CPUs with avx512f).

use wide::{f32x8, f64x4};

#[cfg(target_arch = "x86_64")]
use super::avx512;
use super::microkernel::{
    b_in_place_tile_wide, strided_tile_wide, tile_cols, tile_wide, MR, SHALLOW_DEPTH,
};
use crate::{MatMut, MatRef, Transpose};

/// One GEMM microkernel for element type `S`: tile shape, cache blocking and tile functions.
pub trait GemmKernel<S> {
    /// Rows of a C tile.
    const MR: usize;
    /// Columns of a C tile.
    const NR: usize;
    /// Depth of a panel: the k-sum of an element is grouped in panels of `KC` (this fixes the
    /// rounding, so it belongs to the kernel, not to the call).
    const KC: usize;
    /// Rows of an A block; a multiple of `MR`.
    const MC: usize;
    /// Columns of a B block; a multiple of `NR`.
    const NC: usize;
    /// The packed path reads B's micro-panels in place ([`GemmKernel::b_in_place_tile`])
    /// instead of packing them when C has at most this many MR-row strips. Packing B is a
    /// pass over all of it for every depth panel, repaid only when each micro-panel serves
    /// enough tiles; read in place, each of its `kc` rows sits on its own page (more pages
    /// than the L1 TLB holds) and, at widths a multiple of 256 bytes, in a quarter of L1's
    /// sets, which every tile pays again. 0: never.
    const B_IN_PLACE_MAX_STRIPS: usize = 0;
    /// Whether the packed path visits the tiles of a packed B block along C's rows (for each A
    /// micro-panel, every B micro-panel of the block) instead of down each B micro-panel's
    /// column strip (the BLIS order, where the B micro-panel stays in L1). Along the rows,
    /// consecutive tiles continue the same C rows, sequential streams the hardware prefetchers
    /// follow, and the A micro-panel (or an A strip read in place) stays in L1 while the B
    /// micro-panels stream from L2 or L3; down the column strips each tile starts on `MR`
    /// new C rows, which the kernel has to fetch ahead itself. The same tiles, so the same
    /// bits.
    const ALONG_ROWS: bool = false;
    /// With B read in place ([`GemmKernel::b_in_place_tile`]), depth panels shallower than
    /// this visit their tiles along C's rows; deeper ones go down the column strips, so that
    /// each B micro-panel is fetched from B's storage once for all the (few) strips of A.
    /// 0: always down the column strips.
    const B_IN_PLACE_ALONG_ROWS_MAX_DEPTH: usize = 0;

    /// `C <- alpha AB + beta C` on the tile `c` (at most `MR x NR`; C is not read when
    /// `beta == 0`), `AB[i][j] = sum_p a_panel[p * MR + i] * b_panel[p * NR + j]` over the
    /// depth `kc`, one FMA chain per element in order of `p`. Partial tiles use the same
    /// arithmetic as full ones. A kernel walked down the column strips
    /// ([`GemmKernel::ALONG_ROWS`] false) brings the C tile into cache itself.
    fn tile(kc: usize, a_panel: &[S], b_panel: &[S], alpha: S, beta: S, c: MatMut<'_, S>);

    /// [`GemmKernel::tile`] for a whole `MR`-row strip of A read in place (`a` is the strip,
    /// `MR x kc`, used as stored or transposed) instead of a packed micro-panel; `c` has `MR`
    /// rows. Bit-identical to packing the strip first.
    fn strided_tile(a: MatRef<'_, S>, b_panel: &[S], alpha: S, beta: S, c: MatMut<'_, S>);

    /// [`GemmKernel::tile`] with the B micro-panel read in place: `b` is `kc x NR`, not
    /// transposed (rows `b.ld()` apart). Bit-identical to packing it first, which is what this
    /// default does (a kernel with `B_IN_PLACE_MAX_STRIPS == 0` is never called this way by
    /// the packed path).
    fn b_in_place_tile(a_panel: &[S], b: MatRef<'_, S>, alpha: S, beta: S, c: MatMut<'_, S>)
    where
        S: Copy,
    {
        assert!(b.cols() == Self::NR && b.trans() == Transpose::No);
        let b_panel: Vec<S> = (0..b.rows())
            .flat_map(|p| b.data()[p * b.ld()..][..Self::NR].iter().copied())
            .collect();
        Self::tile(b.rows(), a_panel, &b_panel, alpha, beta, c);
    }
}

/// The portable `wide` kernels: f32 6 x 16 (12 `f32x8` accumulators), f64 6 x 8 (12 `f64x4`).
#[derive(Clone, Copy, Debug)]
pub struct Portable;

/// The 512-bit kernels: f32 12 x 32 and f64 12 x 16 (24 zmm accumulators each).
#[derive(Clone, Copy, Debug)]
pub struct Avx512;

/// `impl GemmKernel<$scalar> for $kernel` with the given constants, forwarding to the tile
/// functions `$tile` and `$strided`.
macro_rules! gemm_kernel {
    (
        $(#[$doc:meta])*
        $kernel:ty, $scalar:ty,
        MR = $mr:expr, NR = $nr:expr, KC = $kc:expr, MC = $mc:expr, NC = $nc:expr,
        $tile:path, $strided:path
        $(, ALONG_ROWS = $along_rows:expr, B_IN_PLACE_ALONG_ROWS_MAX_DEPTH = $b_along_rows:expr)?
        $(, B_IN_PLACE_MAX_STRIPS = $b_strips:expr, $b_in_place:path)?
    ) => {
        $(#[$doc])*
        impl GemmKernel<$scalar> for $kernel {
            const MR: usize = $mr;
            const NR: usize = $nr;
            const KC: usize = $kc;
            const MC: usize = $mc;
            const NC: usize = $nc;
            $(
                const ALONG_ROWS: bool = $along_rows;
                const B_IN_PLACE_ALONG_ROWS_MAX_DEPTH: usize = $b_along_rows;
            )?
            $(const B_IN_PLACE_MAX_STRIPS: usize = $b_strips;)?

            fn tile(
                kc: usize,
                a_panel: &[$scalar],
                b_panel: &[$scalar],
                alpha: $scalar,
                beta: $scalar,
                c: MatMut<'_, $scalar>,
            ) {
                $tile(kc, a_panel, b_panel, alpha, beta, c);
            }

            fn strided_tile(
                a: MatRef<'_, $scalar>,
                b_panel: &[$scalar],
                alpha: $scalar,
                beta: $scalar,
                c: MatMut<'_, $scalar>,
            ) {
                $strided(a, b_panel, alpha, beta, c);
            }

            $(
                fn b_in_place_tile(
                    a_panel: &[$scalar],
                    b: MatRef<'_, $scalar>,
                    alpha: $scalar,
                    beta: $scalar,
                    c: MatMut<'_, $scalar>,
                ) {
                    $b_in_place(a_panel, b, alpha, beta, c);
                }
            )?
        }
    };
}

gemm_kernel!(
    /// The `Portable` blocking starts from BLIS's Haswell choices for the same 6 x 16 / 6 x 8
    /// microkernels: `KC x NR` B micro-panels (16 KB), `MR x KC` A micro-panels (6 KB f32,
    /// 12 KB f64), the `MC x KC` A block (168 KB f32, 288 KB f64) in L2, the `KC x NC` B
    /// block (4 MB f32, 8 MB f64) in L3. Other choices (KC 384, MC 72..168, NC 1024..4080)
    /// measured within the noise of the shared benchmark machine; f64 MC was raised from
    /// BLIS's 72 to 144. The tiles of a packed B block are visited along C's rows: the A
    /// micro-panel stays in L1 while the B micro-panels stream from L3 (about 11 bytes a
    /// cycle at the FMA peak, well within a core's L3 bandwidth), and C's rows are sequential
    /// streams, so the tile functions need no C prefetch, which stalled them down the column
    /// strips (docs/performance.md: 1.01-1.13x at the fastest calls on every packed shape
    /// measured on one thread, f32 and f64).
    /// With B read in place, deep panels keep the column order (see
    /// `microkernel::SHALLOW_DEPTH`).
    Portable, f32,
    MR = MR, NR = tile_cols::<f32x8>(), KC = 256, MC = 168, NC = 4080,
    tile_wide::<f32x8>, strided_tile_wide::<f32x8>,
    ALONG_ROWS = true, B_IN_PLACE_ALONG_ROWS_MAX_DEPTH = SHALLOW_DEPTH,
    B_IN_PLACE_MAX_STRIPS = PORTABLE_B_IN_PLACE_MAX_STRIPS, b_in_place_tile_wide::<f32x8>
);

gemm_kernel!(
    /// See the f32 implementation.
    Portable, f64,
    MR = MR, NR = tile_cols::<f64x4>(), KC = 256, MC = 144, NC = 4080,
    tile_wide::<f64x4>, strided_tile_wide::<f64x4>,
    ALONG_ROWS = true, B_IN_PLACE_ALONG_ROWS_MAX_DEPTH = SHALLOW_DEPTH,
    B_IN_PLACE_MAX_STRIPS = PORTABLE_B_IN_PLACE_MAX_STRIPS, b_in_place_tile_wide::<f64x4>
);

/// Row strips up to which the `wide` kernels read B in place (36 rows). On Zen 3
/// (`scripts/compare_gemm_builds.py` against packing, one thread, 2000 columns,
/// docs/performance.md) reading in place was 1.4-1.8x faster at 2 strips, 1.2-1.4x at 4 and
/// 1.1-1.3x at 5 and 6, and no longer a clear gain at 8 and 12.
const PORTABLE_B_IN_PLACE_MAX_STRIPS: usize = 6;

/// Row strips up to which the AVX-512 kernels read B in place. Since a product that fits one
/// row panel packs B a few micro-panels at a time just before their tiles (deferred packing),
/// packing wins from 3 strips on Ice Lake (Xeon model 106, `scripts/compare_gemm_builds.py`,
/// 2000 columns: 1.04-1.13x at 3 strips, 1.11-1.23x at 4, 1.21-1.25x at 6) and still loses
/// at 2 (0.82-0.86x f32, level f64); docs/performance.md has the earlier measurements, from
/// before deferred packing, that had put the limit at 6.
#[cfg(target_arch = "x86_64")]
const AVX512_B_IN_PLACE_MAX_STRIPS: usize = 2;

#[cfg(target_arch = "x86_64")]
gemm_kernel!(
    /// 12 x 32 tiles (24 zmm accumulators; with a packed B micro-panel A is broadcast two rows
    /// at a time, see `avx512.rs`). The B micro-panel (`KC x 32`, 32 KB) stays in Ice
    /// Lake's 48 KB L1 while A micro-panels (12 KB) stream from L2, which holds the `MC x KC`
    /// A block (288 KB of 1.25 MB); the B block (`KC x NC`, 4 MB) lives in L3.
    Avx512, f32,
    MR = avx512::MR_F32, NR = avx512::NR_F32, KC = 256, MC = 288, NC = 4096,
    avx512::tile_f32, avx512::strided_tile_f32,
    B_IN_PLACE_MAX_STRIPS = AVX512_B_IN_PLACE_MAX_STRIPS, avx512::b_in_place_tile_f32
);

#[cfg(target_arch = "x86_64")]
gemm_kernel!(
    /// 12 x 16 tiles (24 zmm accumulators, A broadcast two rows at a time: OpenBLAS's
    /// Skylake-X dgemm scheme, see `avx512.rs`). KC 192: the B micro-panel (24 KB) and an A
    /// micro-panel (18 KB) share the 48 KB L1, the A block (414 KB) stays in L2 and the B block
    /// (3 MB) in L3. A product with k up to 192 (such as 2000 x 2000 x 160) is one depth panel,
    /// so C is read and written once. KC also fixes f64's summation grouping (each depth panel
    /// is added to C in turn), so changing it changes bits; deeper panels measured no faster
    /// (docs/performance.md).
    Avx512, f64,
    MR = avx512::MR_F64, NR = avx512::NR_F64, KC = 192, MC = 276, NC = 2048,
    avx512::tile_f64, avx512::strided_tile_f64,
    B_IN_PLACE_MAX_STRIPS = AVX512_B_IN_PLACE_MAX_STRIPS, avx512::b_in_place_tile_f64
);

/// Largest tile of any kernel, in scalars (f32 AVX-512: 12 x 32): the size of the tile buffers
/// of the column split.
pub(crate) const MAX_TILE: usize = 12 * 32;

/// Cache blocking of one kernel (exposed for the edge-case tests and the fuzzer).
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

impl Blocking {
    /// The blocking of kernel `K`, checked: blocks are whole multiples of the tile and the tile
    /// fits the tile buffers. Evaluated in a `const` block, so a kernel that breaks this fails
    /// to compile.
    pub(crate) const fn of<S, K: GemmKernel<S>>() -> Blocking {
        assert!(K::MR > 0 && K::NR > 0 && K::KC > 0);
        assert!(K::MC.is_multiple_of(K::MR) && K::NC.is_multiple_of(K::NR));
        assert!(K::MR * K::NR <= MAX_TILE);
        Blocking {
            mr: K::MR,
            nr: K::NR,
            kc: K::KC,
            mc: K::MC,
            nc: K::NC,
        }
    }
}

/// A tile function (see [`GemmKernel::tile`]).
pub(crate) type TileFn<S> = fn(usize, &[S], &[S], S, S, MatMut<'_, S>);

/// A strided tile function (see [`GemmKernel::strided_tile`]).
pub(crate) type StridedTileFn<S> = fn(MatRef<'_, S>, &[S], S, S, MatMut<'_, S>);

/// A tile function reading B in place (see [`GemmKernel::b_in_place_tile`]).
pub(crate) type BInPlaceTileFn<S> = fn(&[S], MatRef<'_, S>, S, S, MatMut<'_, S>);

/// One kernel as values, so the packed path is compiled once per element type and picks the
/// kernel at run time: built only from a [`GemmKernel`] implementation ([`Kernel::of`]).
#[derive(Clone, Copy)]
pub(crate) struct Kernel<S> {
    pub blocking: Blocking,
    pub tile: TileFn<S>,
    pub strided: StridedTileFn<S>,
    pub b_in_place: BInPlaceTileFn<S>,
    pub b_in_place_max_strips: usize,
    pub along_rows: bool,
    pub b_in_place_along_rows_max_depth: usize,
}

impl<S: Copy> Kernel<S> {
    pub(crate) fn of<K: GemmKernel<S>>() -> Kernel<S> {
        Kernel {
            blocking: const { Blocking::of::<S, K>() },
            tile: K::tile,
            strided: K::strided_tile,
            b_in_place: K::b_in_place_tile,
            b_in_place_max_strips: K::B_IN_PLACE_MAX_STRIPS,
            along_rows: K::ALONG_ROWS,
            b_in_place_along_rows_max_depth: K::B_IN_PLACE_ALONG_ROWS_MAX_DEPTH,
        }
    }
}
