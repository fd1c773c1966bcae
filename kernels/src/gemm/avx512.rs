//! AVX-512 microkernels, chosen at run time on CPUs with `avx512f` (see `KernelVariant`).
//!
//! Same contract as the `wide` microkernel (`gemm/microkernel.rs`): one call computes an
//! `MR x NR` tile `AB[i][j] = sum_p a[p * MR + i] * b[p * NR + j]` (an FMA chain in order of
//! `p`) from a packed A micro-panel (`kc x MR`, k-major) and a packed B micro-panel (`kc x NR`,
//! k-major), then stores `C <- alpha AB + beta C` (each element `beta * c + (alpha * ab)` with
//! one FMA; C is not read when `beta == 0`). Partial tiles go through a full-size buffer with
//! the same arithmetic, so an element's value never depends on where tile boundaries fall.
//!
//! Register blocking: a tile row is two zmm vectors (f32: 32 columns, f64: 16 columns), and a
//! tile has `MR = 12` rows: 24 accumulators, enough independent FMA chains to hide the 4-cycle
//! FMA latency on both 512-bit FMA ports. With a packed B micro-panel both types run a pair
//! kernel ([`pair_kernels!`], OpenBLAS's Skylake-X dgemm scheme): A broadcast two rows at a
//! time against B's even and odd columns, 10 loads for 24 FMAs. The broadcast kernels (BLIS's
//! Skylake-X shape, transposed: BLIS's C is column-major: two B vectors a step and each A value
//! broadcast, 14 loads for 24 FMAs) take the tiles whose A is read by rows or whose B is read
//! in place. In `kernels/examples/microkernel_probe.rs`, the f32 pair stream ran 8-9% faster
//! than the broadcast stream with everything in cache, and a 14 x 16 f64 broadcast tile (16
//! loads for 28 FMAs) left the FMA ports idle more often than the f64 pair tile.
//!
//! Memory: the A micro-panel streams from L2 and is prefetched a few steps ahead; the C tile is
//! prefetched by the kernel itself, one row per step over the last steps of the k loop (see
//! `C_PREFETCH_STEPS`), rather than all at once before the call, and so is the tile below it,
//! the next call's, from the first steps on (see `NEXT_TILE_SPACING`). A B micro-panel read in
//! place (rows `ldb` apart) is prefetched row by row (see `B_PREFETCH_STEPS`).
//!
//! Packing: whole A micro-panels from row-major A are transposed in registers here
//! ([`pack_a_panel_f32`], [`pack_a_panel_f64`]; `pack_a` calls them): in products with few
//! columns, such as the start-up products with `W_0`, each packed value serves few
//! multiply-adds, and the portable transpose through a stack tile made packing a large part of
//! the time.
//!
//! Tiles short of rows (the bottom edge of C) run a kernel instance with fewer accumulator
//! rows (`ROWS`, rounded up to even), and tiles of at most `NARROW_MAX_COLS` columns (a strip's
//! last few) a narrow kernel whose vectors run down the rows, so their cost follows their size;
//! every element is still the same FMA chain.

use std::arch::x86_64::{
    __m512, __m512d, _mm512_castpd_ps, _mm512_castps_pd, _mm512_fmadd_pd, _mm512_fmadd_ps,
    _mm512_loadu_pd, _mm512_loadu_ps, _mm512_maskz_loadu_pd, _mm512_maskz_loadu_ps, _mm512_mul_pd,
    _mm512_mul_ps, _mm512_set1_pd, _mm512_set1_ps, _mm512_setzero_pd, _mm512_setzero_ps,
    _mm512_shuffle_f32x4, _mm512_shuffle_f64x2, _mm512_storeu_pd, _mm512_storeu_ps,
    _mm512_unpackhi_pd, _mm512_unpackhi_ps, _mm512_unpacklo_pd, _mm512_unpacklo_ps, _mm_prefetch,
    _MM_HINT_T0,
};

use crate::{MatMut, MatRef, Transpose};

/// Tiles of at most this many columns from a packed A panel run the narrow kernel (vectors down
/// the rows): up to here its `COLS x ceil(MR / lanes)` FMAs a step cost less than the one-vector
/// kernel's `MR`, and its few accumulator chains are still long enough for the loads.
const NARROW_MAX_COLS: usize = 4;

/// Rows of C computed by one f32 AVX-512 microkernel call.
pub const MR_F32: usize = 12;
/// Rows of C computed by one f64 AVX-512 microkernel call.
pub const MR_F64: usize = 12;
/// Columns of an f32 tile: two 16-lane zmm vectors.
pub const NR_F32: usize = 32;
/// Columns of an f64 tile: two 8-lane zmm vectors.
pub const NR_F64: usize = 16;

/// How many depth steps ahead the kernels prefetch the A micro-panel.
const A_PREFETCH_STEPS: usize = 8;

/// How many elements ahead of step `p` the kernels prefetch an A row read in place (row-major
/// A): 64 f32 or f64, one to four cache lines. Each row is fetched every MR steps.
const A_PREFETCH_ROW_AHEAD: usize = 64;

/// How many depth steps ahead the kernels prefetch a B micro-panel read in place: its rows are
/// `ldb` apart, so no hardware prefetcher follows them, and they come from L3 or memory (a
/// few hundred cycles, about twenty steps).
const B_PREFETCH_STEPS: usize = 24;

/// How many depth steps before the end of the k loop the kernels start fetching the C tile,
/// one row per step. C rows are `ldc` apart (no hardware prefetcher follows them) and the
/// write-back would otherwise stall on a cache miss per row; issuing all of them at once
/// before the kernel (as the `wide` variant does) fills the line-fill buffers and stalls the
/// A and B loads behind them instead.
const C_PREFETCH_STEPS: usize = 24;

/// The kernels also fetch the C tile *below* theirs (`MR` rows further down), one row every
/// `NEXT_TILE_SPACING` steps from the start of the k loop (with fewer than `C_PREFETCH_STEPS`
/// steps, one or more rows a step: see `depth_loop`). The packed path walks the tiles of
/// a B micro-panel top to bottom, so that is the next call's tile, fetched a whole kernel call
/// (thousands of cycles) ahead: enough to hide a DRAM miss, which the last-steps prefetch above
/// is not (the C of a 2000 x 2000 product does not fit in cache, and each of the k / KC depth
/// panels reads and writes all of it). In interleaved runs of sgemm on the 2-core Ice Lake
/// machine this took 2000^3 from 129-135 to 139-142 GFLOP/s and 2000 x 2000 x 160 from 124-134
/// to 151-155; fetching every second step or with a write hint measured the same or worse.
/// When there is no tile below (the last row strip, or a tile buffer), the addresses are
/// never dereferenced and the prefetches are harmless.
const NEXT_TILE_SPACING: usize = 4;

/// The A and B operands of one kernel call, as the kernel reads them: A's element `(i, p)`
/// (row `i < MR` of the tile, depth step `p < kc`) at `a + p * a_stride + i`, or at
/// `a + i * a_stride + p` when the kernel is called with `A_ROWS`; B's `(p, j)` at
/// `b + p * b_stride + j` (`b_stride == NR`: a packed micro-panel; else B read in place).
#[derive(Clone, Copy)]
struct Panels<S> {
    kc: usize,
    a: *const S,
    a_stride: usize,
    b: *const S,
    b_stride: usize,
}

/// Where a kernel call stores its tile and with which scalars: `C <- alpha AB + beta C` on the
/// elements `c + i * ldc + j` of the tile's rows `i` and columns `j`.
#[derive(Clone, Copy)]
struct CTile<S> {
    c: *mut S,
    ldc: usize,
    alpha: S,
    beta: S,
}

/// Whether the running CPU has AVX-512F (std caches the CPUID answer: a load and a test).
#[inline]
pub fn detected() -> bool {
    is_x86_feature_detected!("avx512f")
}

/// Panics unless the running CPU has AVX-512F: the public tile functions' guard before their
/// `unsafe` calls.
fn require_avx512f() {
    assert!(
        detected(),
        "gemm: the AVX-512 kernel needs a CPU with avx512f"
    );
}

/// A kernel's C tile as its depth loop fetches it: `rows` rows `ldc` apart starting at `c`,
/// each `nr` scalars (`lanes` to a vector), and the tile below it, `mr` rows further down.
struct CFetch<S> {
    c: *mut S,
    ldc: usize,
    rows: usize,
    mr: usize,
    lanes: usize,
    nr: usize,
}

impl<S> CFetch<S> {
    /// Fetches the three 64-byte lines row `row` of the tile at `tile` can touch: its first,
    /// middle and last element (NR scalars are 128 bytes). A prefetch never faults, so the
    /// addresses are formed with wrapping_add and never dereferenced.
    #[inline(always)]
    fn fetch_row(&self, tile: *mut S, row: usize) {
        let row_start = tile.wrapping_add(row * self.ldc);
        // SAFETY: SSE is part of the x86_64 baseline; a prefetch is a hint that never faults.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(row_start.cast());
            _mm_prefetch::<_MM_HINT_T0>(row_start.wrapping_add(self.lanes).cast());
            _mm_prefetch::<_MM_HINT_T0>(row_start.wrapping_add(self.nr - 1).cast());
        }
    }

    /// The fetches due at depth step `p` of `kc`, decided at the step: a row of the next tile
    /// every `NEXT_TILE_SPACING` steps from the start (when the depth is too short for all
    /// `mr` rows at that spacing, `next_rows` rows a step from the start, so that every row of
    /// the next tile is still fetched a whole call ahead), and a row of this tile a step over
    /// the last `C_PREFETCH_STEPS` (from the first step when `kc` is shorter).
    #[inline(always)]
    fn fetch_due(&self, p: usize, kc: usize, next_rows: usize) {
        let next_tile = self.c.wrapping_add(self.mr * self.ldc);
        if next_rows == 0 {
            let next_row = p / NEXT_TILE_SPACING;
            if p.is_multiple_of(NEXT_TILE_SPACING) && next_row < self.mr {
                self.fetch_row(next_tile, next_row);
            }
        } else {
            for next_row in p * next_rows..self.mr.min((p + 1) * next_rows) {
                self.fetch_row(next_tile, next_row);
            }
        }
        let c_row = p.wrapping_sub(kc.saturating_sub(C_PREFETCH_STEPS));
        if c_row < self.rows {
            self.fetch_row(self.c, c_row);
        }
    }
}

/// The depth loop of the kernels: `step(p, last)` for `p` in `0..kc` in order (`last`: `p` is
/// the last step), with the fetches of the C tiles of [`CFetch::fetch_due`]. `unrolled`
/// runs it in three stretches that differ only in what they fetch: groups of
/// `NEXT_TILE_SPACING` steps that each fetch one row of the next tile, then plain steps
/// unrolled by four, then the last steps, each of which fetches a row of this tile. Deciding
/// per step which prefetch is due costs about a dozen scalar instructions, and on a core whose
/// two 512-bit FMA ports also execute scalar arithmetic those steal FMA slots; without
/// `unrolled` every step decides (for kernels that would spill an unrolled loop).
#[inline(always)]
fn depth_loop<S>(kc: usize, unrolled: bool, tile: CFetch<S>, mut step: impl FnMut(usize, bool)) {
    // Rows of the next tile a step (0: one every NEXT_TILE_SPACING steps). A depth shorter
    // than C_PREFETCH_STEPS has no unrolled stretch (every step decides its fetches anyway),
    // and at that spacing it would fetch only a few rows of the next tile: short products
    // (the k = 20 weight updates, whose tiles are mostly C traffic) fetch it all instead.
    let next_rows = if kc >= C_PREFETCH_STEPS {
        0
    } else if kc >= tile.mr {
        1
    } else {
        tile.mr.div_ceil(kc)
    };
    let mut p = 0;
    if unrolled {
        // whole groups, as long as they end before the C tile's own fetches start
        let c_prefetch_start = kc.saturating_sub(C_PREFETCH_STEPS);
        let next_tile_groups = tile.mr.min(c_prefetch_start / NEXT_TILE_SPACING);
        let next_tile = tile.c.wrapping_add(tile.mr * tile.ldc);
        for group in 0..next_tile_groups {
            tile.fetch_row(next_tile, group);
            let p0 = group * NEXT_TILE_SPACING;
            for p in p0..p0 + NEXT_TILE_SPACING {
                step(p, false);
            }
        }
        p = next_tile_groups * NEXT_TILE_SPACING;
        while p + 4 <= c_prefetch_start {
            step(p, false);
            step(p + 1, false);
            step(p + 2, false);
            step(p + 3, false);
            p += 4;
        }
    }
    for p in p..kc {
        tile.fetch_due(p, kc, next_rows);
        step(p, p + 1 == kc);
    }
}

macro_rules! avx512_tile {
    (
        $tile:ident, $strided:ident, $b_in_place:ident, $run:ident, $rows_dispatch:ident, $kernel:ident,
        $narrow_dispatch:ident, $narrow_kernel:ident, $scalar:ty, $mask:ty, $mr:expr, $nr:expr, $lanes:expr,
        $setzero:ident, $set1:ident, $loadu:ident, $maskz_loadu:ident, $storeu:ident, $fmadd:ident, $mul:ident
        $(, pairs = $pair_dispatch:ident)?
    ) => {
        /// `C <- alpha AB + beta C` on the tile `c` (`1 <= rows <= $mr`, `1 <= cols <= NR`),
        /// with `AB` from `a_panel` (at least `kc * $mr` scalars) and `b_panel` (at least
        /// `kc * NR`).
        ///
        /// # Panics
        ///
        /// If the CPU lacks AVX-512F, or a slice is too short for the tile it must hold.
        pub fn $tile(
            kc: usize,
            a_panel: &[$scalar],
            b_panel: &[$scalar],
            alpha: $scalar,
            beta: $scalar,
            c: MatMut<'_, $scalar>,
        ) {
            require_avx512f();
            let a_panel = &a_panel[..kc * $mr];
            let b_panel = &b_panel[..kc * $nr];
            let panels = Panels {
                kc,
                a: a_panel.as_ptr(),
                a_stride: $mr,
                b: b_panel.as_ptr(),
                b_stride: $nr,
            };
            // SAFETY: avx512f is present (require_avx512f above); the panels hold kc * $mr and kc * NR
            // scalars (sliced above), exactly what the kernel reads with a_stride = $mr.
            unsafe { $run::<false, true, true>(panels, alpha, beta, c) }
        }

        /// Like the function of the same type without `strided`, for a whole `$mr`-row strip of
        /// A (`a`, `$mr x kc`, used as stored or transposed) read in place instead of from a
        /// packed micro-panel; `c` has `$mr` rows. The result is bit-identical to packing the
        /// strip first.
        ///
        /// # Panics
        ///
        /// If the CPU lacks AVX-512F, `kc == 0`, or a slice is too short for what it must hold.
        pub fn $strided(
            a: MatRef<'_, $scalar>,
            b_panel: &[$scalar],
            alpha: $scalar,
            beta: $scalar,
            c: MatMut<'_, $scalar>,
        ) {
            require_avx512f();
            let kc = a.cols();
            assert!(kc >= 1 && a.rows() == $mr && c.rows() == $mr);
            let b_panel = &b_panel[..kc * $nr];
            let (a_rows, a_stride) = (a.trans() == Transpose::No, a.ld());
            let (depth_stride, row_stride) = if a_rows { (1, a_stride) } else { (a_stride, 1) };
            // the view guarantees a_stride >= kc (A_ROWS) or >= $mr (transposed)
            let a = a.data();
            // the last element the kernel reads: row $mr - 1, step kc - 1
            let a = &a[..($mr - 1) * row_stride + (kc - 1) * depth_stride + 1];
            let run = if a_rows {
                $run::<true, false, true>
            } else {
                $run::<false, false, true>
            };
            let panels = Panels {
                kc,
                a: a.as_ptr(),
                a_stride,
                b: b_panel.as_ptr(),
                b_stride: $nr,
            };
            // SAFETY: avx512f is present (require_avx512f above). Every element the kernel reads,
            // (i, p) for i < $mr and p < kc, is at i * row_stride + p * depth_stride, at most
            // the last index of `a` as sliced above; the B panel is sliced to kc * NR.
            unsafe { run(panels, alpha, beta, c) }
        }

        /// Like the function of the same type without `b_in_place`, with the B micro-panel
        /// read in place: `b` is `kc x NR` as stored (not transposed, rows `b.ld()` apart)
        /// instead of packed. The result is bit-identical to packing it first.
        ///
        /// # Panics
        ///
        /// If the CPU lacks AVX-512F, `b` is transposed or not `NR` columns wide, or a slice is
        /// too short for what it must hold.
        pub fn $b_in_place(
            a_panel: &[$scalar],
            b: MatRef<'_, $scalar>,
            alpha: $scalar,
            beta: $scalar,
            c: MatMut<'_, $scalar>,
        ) {
            require_avx512f();
            let kc = b.rows();
            assert!(kc >= 1 && b.cols() == $nr && b.trans() == Transpose::No);
            let a_panel = &a_panel[..kc * $mr];
            let ldb = b.ld();
            // the last element the kernel reads: row kc - 1, column NR - 1
            let b_data = &b.data()[..(kc - 1) * ldb + $nr];
            let panels = Panels {
                kc,
                a: a_panel.as_ptr(),
                a_stride: $mr,
                b: b_data.as_ptr(),
                b_stride: ldb,
            };
            // SAFETY: avx512f is present (require_avx512f above); the A panel holds kc * $mr scalars
            // and every B element (p, j), p < kc and j < NR, is at p * ldb + j, within
            // `b_data` as sliced above.
            unsafe { $run::<false, true, false>(panels, alpha, beta, c) }
        }

        /// The kernel on an A block the caller has checked, storing the `rows x cols` part of
        /// the tile. A tile short of rows (only at the bottom edge of a packed block) runs the
        /// kernel with the fewest rows (an even number) that covers it, so a 20-row product
        /// does not pay for 28; each element is the same FMA chain whatever the kernel's row
        /// count. Likewise a tile of at most one vector of columns (a strip's last) runs the
        /// one-vector kernel, and a tile of at most `NARROW_MAX_COLS` columns from a packed A
        /// panel the narrow kernel. The tile is stored in place when the kernel's rows and
        /// columns are exactly the tile's, else through a full-size buffer with the same
        /// arithmetic.
        ///
        /// # Safety
        ///
        /// The CPU has avx512f, and `panels` are as the kernel requires.
        unsafe fn $run<const A_ROWS: bool, const A_PACKED: bool, const B_PACKED: bool>(
            panels: Panels<$scalar>,
            alpha: $scalar,
            beta: $scalar,
            c: MatMut<'_, $scalar>,
        ) {
            let (rows, cols, ldc) = (c.rows(), c.cols(), c.ld());
            let c = c.into_data();
            assert!((1..=$mr).contains(&rows) && (1..=$nr).contains(&cols));
            if A_PACKED && cols <= NARROW_MAX_COLS {
                let c = &mut c[..(rows - 1) * ldc + cols];
                assert!(ldc >= cols);
                // SAFETY: the caller's contract for A (a packed micro-panel: kc * $mr scalars),
                // B and avx512f; C's rows i * ldc .. i * ldc + cols for i < rows lie within `c`
                // (sliced above; ldc >= cols keeps them disjoint).
                let out = CTile {
                    c: c.as_mut_ptr(),
                    ldc,
                    alpha,
                    beta,
                };
                unsafe { $narrow_dispatch::<B_PACKED>(cols, rows, panels, out) };
                return;
            }
            // strided A is always a whole strip of $mr rows
            let kernel_rows = if A_PACKED {
                rows.next_multiple_of(2).min($mr)
            } else {
                $mr
            };
            // a strip's last tile may need only one of the two vectors of a row
            let kernel_cols = if cols <= $lanes { $lanes } else { $nr };
            // SAFETY (both arms): the caller's contract for A, B and avx512f; the two calls below
            // pass a C whose `kernel_rows` rows of `kernel_cols` scalars, `ldc` apart, are
            // writable (and readable): this tile in place, or the full-size buffer.
            let run_kernel = |c: *mut $scalar, ldc: usize| unsafe {
                let out = CTile {
                    c,
                    ldc,
                    alpha,
                    beta,
                };
                if kernel_cols == $lanes {
                    $rows_dispatch::<A_ROWS, A_PACKED, B_PACKED, 1>(kernel_rows, panels, out)
                } else {
                    $rows_dispatch::<A_ROWS, A_PACKED, B_PACKED, 2>(kernel_rows, panels, out)
                }
            };
            if rows == kernel_rows && cols == kernel_cols {
                let c = &mut c[..(rows - 1) * ldc + cols];
                assert!(ldc >= cols);
                // C rows i * ldc .. i * ldc + cols for i < rows lie within `c` (its length is
                // checked by the slice above, and ldc >= cols keeps the rows disjoint).
                run_kernel(c.as_mut_ptr(), ldc);
                return;
            }
            // A partial tile: through a full-size buffer, so the arithmetic is the same as above.
            let mut buffer = [0.0 as $scalar; $mr * $nr];
            if beta != 0.0 {
                for (i, tile_row) in buffer.chunks_exact_mut($nr).enumerate().take(rows) {
                    tile_row[..cols].copy_from_slice(&c[i * ldc..][..cols]);
                }
            }
            // the buffer is $mr >= kernel_rows rows of NR >= kernel_cols scalars, ldc = NR
            run_kernel(buffer.as_mut_ptr(), $nr);
            for (i, tile_row) in buffer.chunks_exact($nr).enumerate().take(rows) {
                c[i * ldc..][..cols].copy_from_slice(&tile_row[..cols]);
            }
        }

        /// The kernel with `rows` rows (even, at most `$mr`; odd counts round up) and `VECS`
        /// vectors a row.
        ///
        /// # Safety
        ///
        /// As for the kernel, with its row count `rows` rounded up to even.
        #[target_feature(enable = "avx512f")]
        unsafe fn $rows_dispatch<
            const A_ROWS: bool,
            const A_PACKED: bool,
            const B_PACKED: bool,
            const VECS: usize,
        >(
            rows: usize,
            panels: Panels<$scalar>,
            out: CTile<$scalar>,
        ) {
            $(
                // A's rows come in adjacent pairs at each depth step unless A is read by rows;
                // the pair kernels take packed B micro-panels only (see `pair_kernels!`)
                if !A_ROWS && VECS == 2 && B_PACKED {
                    // SAFETY: the caller's contract, which is the pair kernel's
                    return unsafe { $pair_dispatch(rows, panels, out) };
                }
            )?
            // SAFETY (every arm): the caller's contract, for the arm's row count.
            unsafe {
                match rows {
                    1 | 2 => $kernel::<A_ROWS, A_PACKED, B_PACKED, VECS, 2>(panels, out),
                    3 | 4 => $kernel::<A_ROWS, A_PACKED, B_PACKED, VECS, 4>(panels, out),
                    5 | 6 => $kernel::<A_ROWS, A_PACKED, B_PACKED, VECS, 6>(panels, out),
                    7 | 8 => $kernel::<A_ROWS, A_PACKED, B_PACKED, VECS, 8>(panels, out),
                    9 | 10 => $kernel::<A_ROWS, A_PACKED, B_PACKED, VECS, 10>(panels, out),
                    11 | 12 if $mr > 12 => {
                        $kernel::<A_ROWS, A_PACKED, B_PACKED, VECS, 12>(panels, out)
                    }
                    _ => $kernel::<A_ROWS, A_PACKED, B_PACKED, VECS, { $mr }>(panels, out),
                }
            }
        }

        /// The narrow kernel with `cols` columns (`1 ..= NARROW_MAX_COLS`) on the first `rows`
        /// rows of the tile.
        ///
        /// # Safety
        ///
        /// As for the narrow kernel, with `COLS = cols`.
        #[target_feature(enable = "avx512f")]
        unsafe fn $narrow_dispatch<const B_PACKED: bool>(
            cols: usize,
            rows: usize,
            panels: Panels<$scalar>,
            out: CTile<$scalar>,
        ) {
            // SAFETY (every arm): the caller's contract, for the arm's column count.
            unsafe {
                match cols {
                    1 => $narrow_kernel::<B_PACKED, 1>(rows, panels, out),
                    2 => $narrow_kernel::<B_PACKED, 2>(rows, panels, out),
                    3 => $narrow_kernel::<B_PACKED, 3>(rows, panels, out),
                    _ => $narrow_kernel::<B_PACKED, NARROW_MAX_COLS>(rows, panels, out),
                }
            }
        }

        /// `C <- alpha AB + beta C` on the first `rows` rows and `COLS` columns of a tile, from
        /// a packed A micro-panel: the kernel for a strip's last few columns (a product with
        /// 162 columns leaves 2 after ten 16-column strips). The vectors run down the tile's
        /// rows instead of along them: each depth step loads the `$mr` values of the A panel
        /// as `$mr / $lanes` vectors (rounded up, the last one masked) and broadcasts each of
        /// the `COLS` B values, so a step costs `COLS` times that many FMAs, where the
        /// one-vector kernel pays `$mr` for any width. Every element is the same FMA chain in
        /// order of `p` (`a * b + acc`, the product commutes exactly) and the same
        /// `beta * c + (alpha * ab)` FMA, so the values are the full kernel's bit for bit.
        ///
        /// # Safety
        ///
        /// The CPU has avx512f; `panels.a` points to a packed micro-panel of `kc * $mr`
        /// readable scalars; `panels.b` to a B block with every element `(p, j)`, `p < kc`,
        /// `j < COLS`, readable at `p * b_stride + j` (`b_stride == NR` when `B_PACKED`); and
        /// `out.c + i * out.ldc + j` is writable (and readable when `out.beta != 0`) for every
        /// `i < rows`, `j < COLS`.
        #[target_feature(enable = "avx512f")]
        unsafe fn $narrow_kernel<const B_PACKED: bool, const COLS: usize>(
            rows: usize,
            panels: Panels<$scalar>,
            out: CTile<$scalar>,
        ) {
            const ROW_VECS: usize = $mr.div_ceil($lanes);
            // lanes of row vector v that hold rows of the tile (the last one is partial)
            let row_mask = |v: usize| -> $mask {
                let lanes = ($mr - v * $lanes).min($lanes);
                ((1u32 << lanes) - 1) as $mask
            };
            let Panels { kc, a, b, .. } = panels;
            let (c, ldc) = (out.c, out.ldc);
            let b_stride = if B_PACKED { $nr } else { panels.b_stride };
            let mut ab = [[$setzero(); ROW_VECS]; COLS];
            for p in 0..kc {
                // SAFETY: p < kc, so the step's $mr values a[p * $mr ..][..$mr] are in the
                // panel; the masked-off lanes past them are not read.
                let a_vectors: [_; ROW_VECS] = std::array::from_fn(|v| unsafe {
                    $maskz_loadu(row_mask(v), a.add(p * $mr + v * $lanes))
                });
                for (j, ab_column) in ab.iter_mut().enumerate() {
                    // SAFETY: p < kc and j < COLS: a readable element of B.
                    let b_value = $set1(unsafe { *b.add(p * b_stride + j) });
                    for (acc, &a_vector) in ab_column.iter_mut().zip(&a_vectors) {
                        *acc = $fmadd(a_vector, b_value, *acc);
                    }
                }
            }
            let alpha = $set1(out.alpha);
            for (j, ab_column) in ab.iter().enumerate() {
                for (v, &acc) in ab_column.iter().enumerate() {
                    let mut scaled = [0.0 as $scalar; $lanes];
                    // SAFETY: `scaled` holds one vector.
                    unsafe { $storeu(scaled.as_mut_ptr(), $mul(acc, alpha)) };
                    let tile_rows = (v * $lanes..rows).take($lanes);
                    for (i, &value) in tile_rows.zip(&scaled) {
                        // SAFETY: i < rows and j < COLS: an element of the C tile.
                        let c_element = unsafe { &mut *c.add(i * ldc + j) };
                        *c_element = if out.beta == 0.0 {
                            value
                        } else {
                            c_element.mul_add(out.beta, value)
                        };
                    }
                }
            }
        }

        /// The kernel behind the function of the same type without `kernel`, on the first
        /// `ROWS` rows and `VECS` vectors (1 or 2) of columns of a tile (`ROWS <= $mr`;
        /// `$mr` rows and 2 vectors are the whole tile).
        ///
        /// A's element `(i, p)` (row `i < ROWS` of the tile, depth step `p < kc`) is read at
        /// `a + p * a_stride + i` (`A_ROWS == false`: a packed micro-panel, `A_PACKED` with
        /// `a_stride = $mr`, or `op(A)` stored transposed with `a_stride = lda`) or at
        /// `a + i * a_stride + p` (`A_ROWS == true`: A stored row-major, `a_stride = lda`).
        /// Either way each element is the same FMA chain in order of `p`.
        ///
        /// The depth loop, with its fetches of the C tiles, is [`depth_loop`]'s.
        ///
        /// # Safety
        ///
        /// The CPU has avx512f; `panels.a` points to an A block with every element above
        /// readable (`panels.a_stride == $mr` when `A_PACKED`), `panels.b` to a B block with
        /// every element `(p, j)`, `p < kc`, `j < NR`, readable at `p * b_stride + j`
        /// (`panels.b_stride == NR` when `B_PACKED`), and `out.c + i * out.ldc ..` (`VECS *
        /// LANES` scalars) is writable (and readable when `out.beta != 0`) for every `i < ROWS`.
        #[target_feature(enable = "avx512f")]
        unsafe fn $kernel<
            const A_ROWS: bool,
            const A_PACKED: bool,
            const B_PACKED: bool,
            const VECS: usize,
            const ROWS: usize,
        >(
            panels: Panels<$scalar>,
            out: CTile<$scalar>,
        ) {
            let Panels { kc, a, b, .. } = panels;
            let (c, ldc) = (out.c, out.ldc);
            // compile-time strides let the packed loads use fixed offsets
            let a_stride = if A_PACKED { $mr } else { panels.a_stride };
            let b_stride = if B_PACKED { $nr } else { panels.b_stride };
            let mut ab = [[$setzero(); VECS]; ROWS];
            let tile = CFetch {
                c,
                ldc,
                rows: ROWS,
                mr: $mr,
                lanes: $lanes,
                nr: $nr,
            };
            // A read in place by rows needs a register per row already; an unrolled loop would
            // spill, so that form decides the prefetches step by step. The step, one rank-1
            // update of the tile, is inlined (like `depth_loop`) so that its intrinsics are
            // compiled with the kernel's target features.
            depth_loop(kc, !A_ROWS, tile, #[inline(always)] |p: usize, _last: bool| {
                let ab = &mut ab;
                // A streams from L2: ask for it a few steps ahead (stored by rows: one row's
                // next cache lines per step, each row every MR steps). A prefetch never
                // faults, so running past A's end (wrapping_add, no deref) is fine.
                let a_ahead = if A_ROWS {
                    a.wrapping_add((p % $mr) * a_stride + p + A_PREFETCH_ROW_AHEAD)
                } else {
                    a.wrapping_add((p + A_PREFETCH_STEPS) * a_stride)
                };
                _mm_prefetch::<_MM_HINT_T0>(a_ahead.cast());
                if !A_ROWS && $mr * std::mem::size_of::<$scalar>() > 64 {
                    // a step's A column can be longer than a cache line (f64: 96 bytes), and one
                    // fetch a step would then skip lines
                    _mm_prefetch::<_MM_HINT_T0>(
                        a_ahead
                            .wrapping_add(64 / std::mem::size_of::<$scalar>())
                            .cast(),
                    );
                }
                if !B_PACKED {
                    // B's rows in place: the three lines of the row B_PREFETCH_STEPS ahead
                    let b_ahead = b.wrapping_add((p + B_PREFETCH_STEPS) * b_stride);
                    _mm_prefetch::<_MM_HINT_T0>(b_ahead.cast());
                    _mm_prefetch::<_MM_HINT_T0>(b_ahead.wrapping_add($lanes).cast());
                    _mm_prefetch::<_MM_HINT_T0>(b_ahead.wrapping_add($nr - 1).cast());
                }
                // SAFETY: p < kc, so b[p * b_stride .. p * b_stride + NR] is within B.
                let b_row = unsafe { b.add(p * b_stride) };
                // SAFETY: as above; the second vector is loaded only when the kernel uses it.
                let b_low = unsafe { $loadu(b_row) };
                let b_high = if VECS == 2 {
                    unsafe { $loadu(b_row.add($lanes)) }
                } else {
                    b_low
                };
                for (i, ab_row) in ab.iter_mut().enumerate() {
                    let a_element = if A_ROWS {
                        a.wrapping_add(i * a_stride + p)
                    } else {
                        a.wrapping_add(p * a_stride + i)
                    };
                    // SAFETY: i < MR and p < kc: a readable element of A (the caller's
                    // contract).
                    let a_value = $set1(unsafe { *a_element });
                    for (acc, &b_vector) in ab_row.iter_mut().zip(&[b_low, b_high]) {
                        *acc = $fmadd(a_value, b_vector, *acc);
                    }
                }
            });
            let alpha = $set1(out.alpha);
            let beta_is_zero = out.beta == 0.0;
            let beta = $set1(out.beta);
            for (i, ab_row) in ab.iter().enumerate() {
                for (v, &acc) in ab_row.iter().enumerate() {
                    // SAFETY: i < ROWS and v < VECS: within row i of the C tile.
                    let c_lanes = unsafe { c.add(i * ldc + v * $lanes) };
                    let scaled = $mul(acc, alpha);
                    let result = if beta_is_zero {
                        scaled
                    } else {
                        // SAFETY: as above; C is readable when beta != 0.
                        $fmadd(unsafe { $loadu(c_lanes) }, beta, scaled)
                    };
                    // SAFETY: as above.
                    unsafe { $storeu(c_lanes, result) };
                }
            }
        }
    };
}

avx512_tile!(
    tile_f32,
    strided_tile_f32,
    b_in_place_tile_f32,
    run_f32,
    rows_dispatch_f32,
    kernel_f32,
    narrow_dispatch_f32,
    narrow_kernel_f32,
    f32,
    u16,
    MR_F32,
    NR_F32,
    16,
    _mm512_setzero_ps,
    _mm512_set1_ps,
    _mm512_loadu_ps,
    _mm512_maskz_loadu_ps,
    _mm512_storeu_ps,
    _mm512_fmadd_ps,
    _mm512_mul_ps,
    pairs = pair_dispatch_f32
);

avx512_tile!(
    tile_f64,
    strided_tile_f64,
    b_in_place_tile_f64,
    run_f64,
    rows_dispatch_f64,
    kernel_f64,
    narrow_dispatch_f64,
    narrow_kernel_f64,
    f64,
    u8,
    MR_F64,
    NR_F64,
    8,
    _mm512_setzero_pd,
    _mm512_set1_pd,
    _mm512_loadu_pd,
    _mm512_maskz_loadu_pd,
    _mm512_storeu_pd,
    _mm512_fmadd_pd,
    _mm512_mul_pd,
    pairs = pair_dispatch_f64
);

/// f64 B row for a pair step: `[even_low, odd_low, even_high, odd_high]` (`vmovddup` of the
/// row from columns 0, 1, 8 and 9). The load from column 9 reads one value past the 16-column
/// row (B's next row on every step but the last); `last` masks it off, and `vmovddup` never
/// uses that lane: it keeps the even positions 0, 2, 4, 6 (columns 9-15).
///
/// # Safety
///
/// The CPU has avx512f; `row[..NR_F64]` is readable, and so is `row[NR_F64]` unless `last`.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn pair_b_row_f64(row: *const f64, last: bool) -> [__m512d; 4] {
    use std::arch::x86_64::_mm512_movedup_pd;
    const LANES: usize = 8;
    // SAFETY: the caller's contract: columns 0..16 of the row, and column 16 unless `last`.
    unsafe {
        let odd_high = if last {
            _mm512_maskz_loadu_pd(0x7F, row.add(LANES + 1))
        } else {
            _mm512_loadu_pd(row.add(LANES + 1))
        };
        [
            _mm512_movedup_pd(_mm512_loadu_pd(row)),
            _mm512_movedup_pd(_mm512_loadu_pd(row.add(1))),
            _mm512_movedup_pd(_mm512_loadu_pd(row.add(LANES))),
            _mm512_movedup_pd(odd_high),
        ]
    }
}

/// f32 B row for a pair step: `[even_low, odd_low, even_high, odd_high]` (`vmovsldup` and
/// `vmovshdup` of each 16-column half). Written as assembly so that each is a load of its own:
/// compiled from intrinsics, the two halves are loaded once and the four duplications become
/// register shuffles, which compete with the FMAs for their port (a throwaway build measured
/// sgemm 0.92-0.97x the broadcast kernel that way).
///
/// # Safety
///
/// The CPU has avx512f and `row[..NR_F32]` is readable.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn pair_b_row_f32(row: *const f32, _last: bool) -> [__m512; 4] {
    let (even_low, odd_low, even_high, odd_high): (__m512, __m512, __m512, __m512);
    // SAFETY: the four loads read the row's 32 values (the caller's contract) and write only
    // the declared registers.
    unsafe {
        std::arch::asm!(
            "vmovsldup {even_low}, zmmword ptr [{row}]",
            "vmovshdup {odd_low}, zmmword ptr [{row}]",
            "vmovsldup {even_high}, zmmword ptr [{row} + 64]",
            "vmovshdup {odd_high}, zmmword ptr [{row} + 64]",
            row = in(reg) row,
            even_low = out(zmm_reg) even_low,
            odd_low = out(zmm_reg) odd_low,
            even_high = out(zmm_reg) even_high,
            odd_high = out(zmm_reg) odd_high,
            options(pure, readonly, nostack, preserves_flags),
        );
    }
    [even_low, odd_low, even_high, odd_high]
}

/// Two adjacent f64 A values `[a_i, a_i+1]` in every 128-bit lane (`vbroadcastf32x4`).
///
/// # Safety
///
/// The CPU has avx512f; `a[0]` and `a[1]` are readable.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn pair_a_f64(a: *const f64) -> __m512d {
    use std::arch::x86_64::{_mm512_broadcast_f32x4, _mm_castpd_ps, _mm_loadu_pd};
    // SAFETY: the caller's contract.
    let two = _mm_castpd_ps(unsafe { _mm_loadu_pd(a) });
    _mm512_castps_pd(_mm512_broadcast_f32x4(two))
}

/// Two adjacent f32 A values `[a_i, a_i+1]` in every 64-bit lane (`vbroadcastsd`).
///
/// # Safety
///
/// The CPU has avx512f; `a[0]` and `a[1]` are readable.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn pair_a_f32(a: *const f32) -> __m512 {
    // SAFETY: the caller's contract: the two values as one unaligned 8-byte read.
    let two = unsafe { a.cast::<f64>().read_unaligned() };
    _mm512_castpd_ps(_mm512_set1_pd(two))
}

/// An f64 pair's accumulators (`pair x [even_low, odd_low, even_high, odd_high]`) back into
/// its two rows, `[[row 2k low, high], [row 2k + 1 low, high]]`: row 2k is in the even lanes,
/// row 2k + 1 in the odd ones (`vunpcklpd` / `vunpckhpd`).
#[target_feature(enable = "avx512f")]
#[inline]
fn pair_rows_f64(acc: [__m512d; 4]) -> [[__m512d; 2]; 2] {
    [
        [
            _mm512_unpacklo_pd(acc[0], acc[1]),
            _mm512_unpacklo_pd(acc[2], acc[3]),
        ],
        [
            _mm512_unpackhi_pd(acc[0], acc[1]),
            _mm512_unpackhi_pd(acc[2], acc[3]),
        ],
    ]
}

/// An f32 pair's accumulators back into its two rows: row 2k takes the even lanes of the
/// even-column product and, in the odd lanes, the odd-column product's even lanes moved up
/// (`vmovsldup`); row 2k + 1 the even-column product's odd lanes moved down (`vmovshdup`) and
/// the odd-column product's odd lanes.
#[target_feature(enable = "avx512f")]
#[inline]
fn pair_rows_f32(acc: [__m512; 4]) -> [[__m512; 2]; 2] {
    use std::arch::x86_64::{_mm512_mask_blend_ps, _mm512_movehdup_ps, _mm512_moveldup_ps};
    const ODD_LANES: u16 = 0xAAAA;
    let row = |even: __m512, odd: __m512| {
        [
            _mm512_mask_blend_ps(ODD_LANES, even, _mm512_moveldup_ps(odd)),
            _mm512_mask_blend_ps(ODD_LANES, _mm512_movehdup_ps(even), odd),
        ]
    };
    let [low_first, low_second] = row(acc[0], acc[1]);
    let [high_first, high_second] = row(acc[2], acc[3]);
    [[low_first, high_first], [low_second, high_second]]
}

/// The pair kernels: for every full-width tile whose A comes by depth steps (packed
/// micro-panels, or `op(A)` stored transposed) and whose B micro-panel is packed, each step
/// broadcasts A's values two rows at a time against B's even and odd columns, each
/// duplicated, so one FMA updates two rows at half the columns of a vector each: `PAIRS` A
/// loads and four B loads for `4 PAIRS` FMAs, where broadcasting each A value takes `2 PAIRS`
/// A loads. (OpenBLAS's Skylake-X dgemm kernel does the same.) The write-back interleaves each
/// pair of accumulators back into rows; every element is the same chain of `a b + acc` FMAs in
/// order of `p` and the same `beta c + (alpha ab)` FMA as in the broadcast kernels, so the
/// values are bit for bit the same.
///
/// Generates `$dispatch(rows, panels, out)` (the kernel with `rows` rows: even, at most the
/// type's MR; odd counts round up) and `$kernel::<PAIRS>`, with the broadcast kernels'
/// contract for a packed B micro-panel, for the first `2 PAIRS` rows. (With B read in place,
/// rows `ldb` apart, the broadcast kernels measured as fast or faster: sgemm 20 x 2000 x 2000
/// ran at 0.63x on the f32 pair kernel.)
macro_rules! pair_kernels {
    (
        $dispatch:ident, $kernel:ident, $scalar:ty, $mr:ident, $nr:ident, $lanes:expr,
        $b_row:ident, $a_pair:ident, $pair_rows:ident,
        $setzero:ident, $set1:ident, $loadu:ident, $storeu:ident, $fmadd:ident, $mul:ident
    ) => {
        /// The pair kernel with `rows` rows (see [`pair_kernels!`]).
        ///
        /// # Safety
        ///
        /// As for the pair kernel, with its row count `rows` rounded up to even.
        #[target_feature(enable = "avx512f")]
        unsafe fn $dispatch(rows: usize, panels: Panels<$scalar>, out: CTile<$scalar>) {
            // SAFETY (every arm): the caller's contract, for the arm's row pairs.
            unsafe {
                match rows {
                    1 | 2 => $kernel::<1>(panels, out),
                    3 | 4 => $kernel::<2>(panels, out),
                    5 | 6 => $kernel::<3>(panels, out),
                    7 | 8 => $kernel::<4>(panels, out),
                    9 | 10 => $kernel::<5>(panels, out),
                    _ => $kernel::<{ $mr / 2 }>(panels, out),
                }
            }
        }

        /// The pair kernel on the first `2 PAIRS` rows of a full-width tile (see
        /// [`pair_kernels!`]).
        ///
        /// # Safety
        ///
        /// The CPU has avx512f; `panels.a` points to A with every element `(i, p)`,
        /// `i < 2 PAIRS`, `p < kc`, readable at `p * a_stride + i`; `panels.b` to a packed B
        /// micro-panel, element `(p, j)` at `p * NR + j` for `p < kc`, `j < NR`; and
        /// `out.c + i * out.ldc ..` (NR scalars) is writable (and readable when
        /// `out.beta != 0`) for every `i < 2 PAIRS`.
        #[target_feature(enable = "avx512f")]
        unsafe fn $kernel<const PAIRS: usize>(panels: Panels<$scalar>, out: CTile<$scalar>) {
            const LANES: usize = $lanes;
            let Panels {
                kc, a, a_stride, b, ..
            } = panels;
            let (c, ldc) = (out.c, out.ldc);
            // ab[k]: rows 2k and 2k + 1 times [even_low, odd_low, even_high, odd_high]
            let mut ab = [[$setzero(); 4]; PAIRS];
            let tile = CFetch {
                c,
                ldc,
                rows: 2 * PAIRS,
                mr: $mr,
                lanes: LANES,
                nr: $nr,
            };
            // one rank-1 update a step, inlined (like `depth_loop`) so that its intrinsics are
            // compiled with the kernel's target features
            depth_loop(
                kc,
                true,
                tile,
                #[inline(always)]
                |p: usize, last: bool| {
                    // A a few steps ahead, a line for every 64 bytes of a step; never
                    // dereferenced
                    let a_ahead = a.wrapping_add((p + A_PREFETCH_STEPS) * a_stride);
                    _mm_prefetch::<_MM_HINT_T0>(a_ahead.cast());
                    if $mr * std::mem::size_of::<$scalar>() > 64 {
                        let next_line = 64 / std::mem::size_of::<$scalar>();
                        _mm_prefetch::<_MM_HINT_T0>(a_ahead.wrapping_add(next_line).cast());
                    }
                    // SAFETY: p < kc, so the micro-panel's row p, b[p * NR ..][..NR], is
                    // readable, and so is the value after it on any step but the last (the
                    // next row's first): what `$b_row` asks for.
                    let b_vectors = unsafe { $b_row(b.add(p * $nr), last) };
                    for (k, acc) in ab.iter_mut().enumerate() {
                        // SAFETY: rows 2k and 2k + 1 < 2 PAIRS at step p < kc: adjacent
                        // readable elements of A (the caller's contract).
                        let pair = unsafe { $a_pair(a.add(p * a_stride + 2 * k)) };
                        for (acc, &b_vector) in acc.iter_mut().zip(&b_vectors) {
                            *acc = $fmadd(pair, b_vector, *acc);
                        }
                    }
                },
            );
            let alpha = $set1(out.alpha);
            let beta_is_zero = out.beta == 0.0;
            let beta = $set1(out.beta);
            for (k, &acc) in ab.iter().enumerate() {
                for (half, row) in $pair_rows(acc).iter().enumerate() {
                    for (v, &values) in row.iter().enumerate() {
                        // SAFETY: row 2k + half < 2 PAIRS and v < 2: within that row of the C
                        // tile.
                        let c_lanes = unsafe { c.add((2 * k + half) * ldc + v * LANES) };
                        let scaled = $mul(values, alpha);
                        let result = if beta_is_zero {
                            scaled
                        } else {
                            // SAFETY: as above; C is readable when beta != 0.
                            $fmadd(unsafe { $loadu(c_lanes) }, beta, scaled)
                        };
                        // SAFETY: as above.
                        unsafe { $storeu(c_lanes, result) };
                    }
                }
            }
        }
    };
}

pair_kernels!(
    pair_dispatch_f32,
    pair_kernel_f32,
    f32,
    MR_F32,
    NR_F32,
    16,
    pair_b_row_f32,
    pair_a_f32,
    pair_rows_f32,
    _mm512_setzero_ps,
    _mm512_set1_ps,
    _mm512_loadu_ps,
    _mm512_storeu_ps,
    _mm512_fmadd_ps,
    _mm512_mul_ps
);

pair_kernels!(
    pair_dispatch_f64,
    pair_kernel_f64,
    f64,
    MR_F64,
    NR_F64,
    8,
    pair_b_row_f64,
    pair_a_f64,
    pair_rows_f64,
    _mm512_setzero_pd,
    _mm512_set1_pd,
    _mm512_loadu_pd,
    _mm512_storeu_pd,
    _mm512_fmadd_pd,
    _mm512_mul_pd
);

/// Packs one whole f64 A micro-panel from row-major A: `panel[p * MR_F64 + i] = a[i * ld + p]`
/// for the `MR_F64` rows `i` and the `kc = panel.len() / MR_F64` depth steps `p` (the layout
/// `pack_a` writes). Values are moved, never computed, so the panel is bit for bit the one the
/// portable transpose writes.
///
/// Eight depth steps at a time: the 12 rows' next eight values are loaded as 12 zmm vectors and
/// transposed as two 8 x 8 blocks (rows 0-7, and rows 8-11 with four zero rows) by three rounds
/// of shuffles, so each step's 12 values leave as one full and one 4-lane masked store. The
/// portable form goes through a stack tile and 2 x 2 blocks, about three times the loads and
/// stores per value.
///
/// # Panics
///
/// If the CPU lacks AVX-512F, `panel.len()` is not a multiple of `MR_F64`, or `a` is shorter
/// than `(MR_F64 - 1) * ld + kc`.
pub fn pack_a_panel_f64(panel: &mut [f64], a: &[f64], ld: usize) {
    let kc = checked_panel_depth(panel.len(), a.len(), ld, MR_F64);
    // SAFETY: avx512f and the bounds of every access were checked by `checked_panel_depth`.
    unsafe { pack_a_panel_f64_avx512(panel.as_mut_ptr(), a.as_ptr(), ld, kc) }
}

/// The guard of the public packing functions: panics unless the CPU has AVX-512F, the panel
/// holds whole steps of `mr` values and A holds `mr` rows of the panel's depth `ld` apart;
/// returns that depth `kc`. The kernels then read row `i < mr` of A at `i * ld + p` and write
/// the panel at `p * mr + i`, for `p < kc`: all within the checked lengths.
fn checked_panel_depth(panel_len: usize, a_len: usize, ld: usize, mr: usize) -> usize {
    require_avx512f();
    assert!(panel_len.is_multiple_of(mr), "whole panel steps");
    let kc = panel_len / mr;
    assert!(
        kc == 0 || (ld >= kc && a_len >= (mr - 1) * ld + kc),
        "A holds the panel's rows"
    );
    kc
}

/// The body of [`pack_a_panel_f64`]; `a` holds `MR_F64` rows of `kc` values `ld` apart, `panel`
/// `kc * MR_F64` values.
#[target_feature(enable = "avx512f")]
unsafe fn pack_a_panel_f64_avx512(panel: *mut f64, a: *const f64, ld: usize, kc: usize) {
    use std::arch::x86_64::_mm512_mask_storeu_pd;
    const LANES: usize = 8;
    // loop over the whole 8-step stretches of the depth
    let whole = kc / LANES * LANES;
    for p in (0..whole).step_by(LANES) {
        let row = |i: usize| {
            if i < MR_F64 {
                // SAFETY: row i < MR_F64 of A, values p..p + 8 <= kc (the caller's bounds)
                unsafe { _mm512_loadu_pd(a.add(i * ld + p)) }
            } else {
                _mm512_setzero_pd()
            }
        };
        let top = transpose_8x8(std::array::from_fn(row));
        let bottom = transpose_8x8(std::array::from_fn(|i| row(LANES + i)));
        for t in 0..LANES {
            // SAFETY: step p + t < kc of the panel: its MR_F64 values, 8 stored whole and the
            // other 6 under the mask (the masked-off lanes are not written)
            unsafe {
                let dst = panel.add((p + t) * MR_F64);
                _mm512_storeu_pd(dst, top[t]);
                _mm512_mask_storeu_pd(dst.add(LANES), (1 << (MR_F64 - LANES)) - 1, bottom[t]);
            }
        }
    }
    // the last steps, one value at a time
    for p in whole..kc {
        for i in 0..MR_F64 {
            // SAFETY: p < kc and i < MR_F64, within the caller's bounds
            unsafe { *panel.add(p * MR_F64 + i) = *a.add(i * ld + p) };
        }
    }
}

/// The transpose of eight rows of eight f64: `columns[t][i] = rows[i][t]`. Round one
/// interleaves row pairs, rounds two and three gather 128-bit lanes (`0x88` takes lanes 0 and
/// 2 of each source, `0xDD` lanes 1 and 3).
#[target_feature(enable = "avx512f")]
fn transpose_8x8(r: [__m512d; 8]) -> [__m512d; 8] {
    let t0 = _mm512_unpacklo_pd(r[0], r[1]);
    let t1 = _mm512_unpackhi_pd(r[0], r[1]);
    let t2 = _mm512_unpacklo_pd(r[2], r[3]);
    let t3 = _mm512_unpackhi_pd(r[2], r[3]);
    let t4 = _mm512_unpacklo_pd(r[4], r[5]);
    let t5 = _mm512_unpackhi_pd(r[4], r[5]);
    let t6 = _mm512_unpacklo_pd(r[6], r[7]);
    let t7 = _mm512_unpackhi_pd(r[6], r[7]);
    let u0 = _mm512_shuffle_f64x2::<0x88>(t0, t2);
    let u1 = _mm512_shuffle_f64x2::<0xDD>(t0, t2);
    let u2 = _mm512_shuffle_f64x2::<0x88>(t1, t3);
    let u3 = _mm512_shuffle_f64x2::<0xDD>(t1, t3);
    let u4 = _mm512_shuffle_f64x2::<0x88>(t4, t6);
    let u5 = _mm512_shuffle_f64x2::<0xDD>(t4, t6);
    let u6 = _mm512_shuffle_f64x2::<0x88>(t5, t7);
    let u7 = _mm512_shuffle_f64x2::<0xDD>(t5, t7);
    [
        _mm512_shuffle_f64x2::<0x88>(u0, u4),
        _mm512_shuffle_f64x2::<0x88>(u2, u6),
        _mm512_shuffle_f64x2::<0x88>(u1, u5),
        _mm512_shuffle_f64x2::<0x88>(u3, u7),
        _mm512_shuffle_f64x2::<0xDD>(u0, u4),
        _mm512_shuffle_f64x2::<0xDD>(u2, u6),
        _mm512_shuffle_f64x2::<0xDD>(u1, u5),
        _mm512_shuffle_f64x2::<0xDD>(u3, u7),
    ]
}

/// [`pack_a_panel_f64`] for f32: `panel[p * MR_F32 + i] = a[i * ld + p]` for the `MR_F32` rows
/// and `kc = panel.len() / MR_F32` steps, sixteen steps at a time through one 16 x 16 transpose
/// (rows 12-15 zero) and a 12-lane masked store per step.
///
/// # Panics
///
/// If the CPU lacks AVX-512F, `panel.len()` is not a multiple of `MR_F32`, or `a` is shorter
/// than `(MR_F32 - 1) * ld + kc`.
pub fn pack_a_panel_f32(panel: &mut [f32], a: &[f32], ld: usize) {
    let kc = checked_panel_depth(panel.len(), a.len(), ld, MR_F32);
    // SAFETY: avx512f and the bounds of every access were checked by `checked_panel_depth`.
    unsafe { pack_a_panel_f32_avx512(panel.as_mut_ptr(), a.as_ptr(), ld, kc) }
}

/// The body of [`pack_a_panel_f32`]; `a` holds `MR_F32` rows of `kc` values `ld` apart, `panel`
/// `kc * MR_F32` values.
#[target_feature(enable = "avx512f")]
unsafe fn pack_a_panel_f32_avx512(panel: *mut f32, a: *const f32, ld: usize, kc: usize) {
    use std::arch::x86_64::_mm512_mask_storeu_ps;
    const LANES: usize = 16;
    // loop over the whole 16-step stretches of the depth
    let whole = kc / LANES * LANES;
    for p in (0..whole).step_by(LANES) {
        let columns = transpose_16x16(std::array::from_fn(|i| {
            if i < MR_F32 {
                // SAFETY: row i < MR_F32 of A, values p..p + 16 <= kc (the caller's bounds)
                unsafe { _mm512_loadu_ps(a.add(i * ld + p)) }
            } else {
                _mm512_setzero_ps()
            }
        }));
        for (t, column) in columns.into_iter().enumerate() {
            // SAFETY: step p + t < kc of the panel: its MR_F32 values under the mask (the
            // masked-off lanes are not written)
            unsafe {
                _mm512_mask_storeu_ps(panel.add((p + t) * MR_F32), (1 << MR_F32) - 1, column)
            };
        }
    }
    // the last steps, one value at a time
    for p in whole..kc {
        for i in 0..MR_F32 {
            // SAFETY: p < kc and i < MR_F32, within the caller's bounds
            unsafe { *panel.add(p * MR_F32 + i) = *a.add(i * ld + p) };
        }
    }
}

/// The transpose of sixteen rows of sixteen f32: `columns[c][i] = rows[i][c]`. Round one
/// interleaves row pairs (32-bit), round two pairs of those (64-bit): vector `u[4 g + j]` then
/// holds, in 128-bit lane `l`, column `j + 4 l` of rows `4 g .. 4 g + 4`. Rounds three and four
/// gather those lanes (`0x88`: lanes 0 and 2 of each source, `0xDD`: 1 and 3).
#[target_feature(enable = "avx512f")]
fn transpose_16x16(r: [__m512; 16]) -> [__m512; 16] {
    let t: [__m512; 16] = std::array::from_fn(|i| {
        let (a, b) = (r[i & !1], r[i | 1]);
        if i % 2 == 0 {
            _mm512_unpacklo_ps(a, b)
        } else {
            _mm512_unpackhi_ps(a, b)
        }
    });
    let u: [__m512; 16] = std::array::from_fn(|i| {
        // group g = i / 4 of rows, column offset j = i % 4 within a lane
        let (g, j) = (i / 4, i % 4);
        let (a, b) = (
            _mm512_castps_pd(t[4 * g + j / 2]),
            _mm512_castps_pd(t[4 * g + 2 + j / 2]),
        );
        _mm512_castpd_ps(if j % 2 == 0 {
            _mm512_unpacklo_pd(a, b)
        } else {
            _mm512_unpackhi_pd(a, b)
        })
    });
    let mut columns = [_mm512_setzero_ps(); 16];
    for j in 0..4 {
        let v_even = _mm512_shuffle_f32x4::<0x88>(u[j], u[4 + j]);
        let v_odd = _mm512_shuffle_f32x4::<0xDD>(u[j], u[4 + j]);
        let w_even = _mm512_shuffle_f32x4::<0x88>(u[8 + j], u[12 + j]);
        let w_odd = _mm512_shuffle_f32x4::<0xDD>(u[8 + j], u[12 + j]);
        columns[j] = _mm512_shuffle_f32x4::<0x88>(v_even, w_even);
        columns[j + 8] = _mm512_shuffle_f32x4::<0xDD>(v_even, w_even);
        columns[j + 4] = _mm512_shuffle_f32x4::<0x88>(v_odd, w_odd);
        columns[j + 12] = _mm512_shuffle_f32x4::<0xDD>(v_odd, w_odd);
    }
    columns
}
