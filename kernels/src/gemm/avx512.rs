//! AVX-512 microkernels, chosen at run time on CPUs with `avx512f` (see `KernelVariant`).
//!
//! Same contract as the `wide` microkernel (`gemm/microkernel.rs`): one call computes an
//! `MR x NR` tile `AB[i][j] = sum_p a[p * MR + i] * b[p * NR + j]` (an FMA chain in order of
//! `p`) from a packed A micro-panel (`kc x MR`, k-major) and a packed B micro-panel (`kc x NR`,
//! k-major), then stores `C <- alpha AB + beta C` (each element `beta * c + (alpha * ab)` with
//! one FMA; C is not read when `beta == 0`). Partial tiles go through a full-size buffer with
//! the same arithmetic, so an element's value never depends on where tile boundaries fall.
//!
//! Register blocking: a tile row is two zmm vectors (f32: 32 columns, f64: 16 columns). f32
//! uses `MR = 12` rows (24 accumulators), f64 `MR = 14` (28 accumulators), plus two B vectors
//! and one broadcast A value: at most 31 of the 32 zmm registers. That many independent FMA
//! chains hide the 4-cycle FMA latency on both 512-bit FMA ports, and each pair of B loads
//! is amortised over 24 or 28 FMAs. These are BLIS's Skylake-X shapes (transposed: BLIS's C is
//! column-major).
//!
//! Memory: the A micro-panel streams from L2 and is prefetched a few steps ahead; the C tile is
//! prefetched by the kernel itself, one row per step over the last steps of the k loop (see
//! `C_PREFETCH_STEPS`), rather than all at once before the call, and so is the tile below it,
//! the next call's, from the first steps on (see `NEXT_TILE_SPACING`).

use std::arch::x86_64::{
    _mm512_fmadd_pd, _mm512_fmadd_ps, _mm512_loadu_pd, _mm512_loadu_ps, _mm512_mul_pd,
    _mm512_mul_ps, _mm512_set1_pd, _mm512_set1_ps, _mm512_setzero_pd, _mm512_setzero_ps,
    _mm512_storeu_pd, _mm512_storeu_ps, _mm_prefetch, _MM_HINT_T0,
};

use crate::{MatMut, MatRef, Transpose};

/// Rows of C computed by one f32 AVX-512 microkernel call.
pub const MR_F32: usize = 12;
/// Rows of C computed by one f64 AVX-512 microkernel call.
pub const MR_F64: usize = 14;
/// Columns of an f32 tile: two 16-lane zmm vectors.
pub const NR_F32: usize = 32;
/// Columns of an f64 tile: two 8-lane zmm vectors.
pub const NR_F64: usize = 16;

/// How many depth steps ahead the kernels prefetch the A micro-panel.
const A_PREFETCH_STEPS: usize = 8;

/// How many elements ahead of step `p` the kernels prefetch an A row read in place (row-major
/// A): 64 f32 or f64, one to four cache lines. Each row is fetched every MR steps.
const A_PREFETCH_ROW_AHEAD: usize = 64;

/// How many depth steps before the end of the k loop the kernels start fetching the C tile,
/// one row per step. C rows are `ldc` apart (no hardware prefetcher follows them) and the
/// write-back would otherwise stall on a cache miss per row; issuing all of them at once
/// before the kernel (as the `wide` variant does) fills the line-fill buffers and stalls the
/// A and B loads behind them instead.
const C_PREFETCH_STEPS: usize = 24;

/// The kernels also fetch the C tile *below* theirs (`MR` rows further down), one row every
/// `NEXT_TILE_SPACING` steps from the start of the k loop. The packed path walks the tiles of
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
/// `b + p * NR + j` (a packed micro-panel).
#[derive(Clone, Copy)]
struct Panels<S> {
    kc: usize,
    a: *const S,
    a_stride: usize,
    b: *const S,
}

/// Whether the running CPU has AVX-512F (std caches the CPUID answer: a load and a test).
#[inline]
pub fn detected() -> bool {
    is_x86_feature_detected!("avx512f")
}

macro_rules! avx512_tile {
    (
        $tile:ident, $strided:ident, $run:ident, $kernel:ident, $scalar:ty, $mr:expr, $nr:expr, $lanes:expr,
        $setzero:ident, $set1:ident, $loadu:ident, $storeu:ident, $fmadd:ident, $mul:ident
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
            assert!(
                detected(),
                "gemm: the AVX-512 kernel needs a CPU with avx512f"
            );
            let a_panel = &a_panel[..kc * $mr];
            let b_panel = &b_panel[..kc * $nr];
            let panels = Panels {
                kc,
                a: a_panel.as_ptr(),
                a_stride: $mr,
                b: b_panel.as_ptr(),
            };
            // SAFETY: avx512f is present (asserted above); the panels hold kc * $mr and kc * NR
            // scalars (sliced above), exactly what the kernel reads with a_stride = $mr.
            unsafe { $run::<false>(panels, alpha, beta, c) }
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
            assert!(
                detected(),
                "gemm: the AVX-512 kernel needs a CPU with avx512f"
            );
            let kc = a.cols();
            assert!(kc >= 1 && a.rows() == $mr && c.rows() == $mr);
            let b_panel = &b_panel[..kc * $nr];
            let (a_rows, a_stride) = (a.trans() == Transpose::No, a.ld());
            let (depth_stride, row_stride) = if a_rows { (1, a_stride) } else { (a_stride, 1) };
            // the view guarantees a_stride >= kc (A_ROWS) or >= $mr (transposed)
            let a = a.data();
            // the last element the kernel reads: row $mr - 1, step kc - 1
            let a = &a[..($mr - 1) * row_stride + (kc - 1) * depth_stride + 1];
            let run = if a_rows { $run::<true> } else { $run::<false> };
            let panels = Panels {
                kc,
                a: a.as_ptr(),
                a_stride,
                b: b_panel.as_ptr(),
            };
            // SAFETY: avx512f is present (asserted above). Every element the kernel reads,
            // (i, p) for i < $mr and p < kc, is at i * row_stride + p * depth_stride, at most
            // the last index of `a` as sliced above; the B panel is sliced to kc * NR.
            unsafe { run(panels, alpha, beta, c) }
        }

        /// The kernel on an A block the caller has checked, storing the `rows x cols` part of
        /// the tile: in place when whole, else through a full-size buffer, so the arithmetic
        /// is the same.
        ///
        /// # Safety
        ///
        /// The CPU has avx512f, and `panels` are as the kernel requires.
        unsafe fn $run<const A_ROWS: bool>(
            panels: Panels<$scalar>,
            alpha: $scalar,
            beta: $scalar,
            c: MatMut<'_, $scalar>,
        ) {
            let (rows, cols, ldc) = (c.rows(), c.cols(), c.ld());
            let c = c.into_data();
            assert!((1..=$mr).contains(&rows) && (1..=$nr).contains(&cols));
            if rows == $mr && cols == $nr {
                let c = &mut c[..($mr - 1) * ldc + $nr];
                assert!(ldc >= $nr);
                // SAFETY: A, B and avx512f are the caller's contract; C rows
                // i * ldc .. i * ldc + NR for i < $mr lie within `c` (its length is checked by
                // the slice above, and ldc >= NR keeps the rows disjoint).
                unsafe { $kernel::<A_ROWS>(panels, alpha, beta, c.as_mut_ptr(), ldc) };
                return;
            }
            // A partial tile: through a full-size buffer, so the arithmetic is the same as above.
            let mut buffer = [0.0 as $scalar; $mr * $nr];
            if beta != 0.0 {
                for (i, tile_row) in buffer.chunks_exact_mut($nr).enumerate().take(rows) {
                    tile_row[..cols].copy_from_slice(&c[i * ldc..][..cols]);
                }
            }
            // SAFETY: A, B and avx512f as above; the buffer is exactly $mr rows of NR scalars
            // with ldc = NR.
            unsafe { $kernel::<A_ROWS>(panels, alpha, beta, buffer.as_mut_ptr(), $nr) };
            for (i, tile_row) in buffer.chunks_exact($nr).enumerate().take(rows) {
                c[i * ldc..][..cols].copy_from_slice(&tile_row[..cols]);
            }
        }

        /// The full-tile kernel behind the function of the same type without `kernel`.
        ///
        /// A's element `(i, p)` (row `i < $mr` of the tile, depth step `p < kc`) is read at
        /// `a + p * a_stride + i` (`A_ROWS == false`: a packed micro-panel with
        /// `a_stride = $mr`, or `op(A)` stored transposed with `a_stride = lda`) or at
        /// `a + i * a_stride + p` (`A_ROWS == true`: A stored row-major, `a_stride = lda`).
        /// Either way each element is the same FMA chain in order of `p`.
        ///
        /// # Safety
        ///
        /// The CPU has avx512f; `panels.a` points to an A block with every element above
        /// readable, `panels.b` to `kc * NR` readable scalars, and
        /// `c + i * ldc .. c + i * ldc + NR` is writable (and readable when `beta != 0`) for
        /// every `i < $mr`.
        #[target_feature(enable = "avx512f")]
        unsafe fn $kernel<const A_ROWS: bool>(
            panels: Panels<$scalar>,
            alpha: $scalar,
            beta: $scalar,
            c: *mut $scalar,
            ldc: usize,
        ) {
            let Panels { kc, a, a_stride, b } = panels;
            let mut ab = [[$setzero(); 2]; $mr];
            // The C tile is fetched during the last C_PREFETCH_STEPS steps, one row per step
            // (see C_PREFETCH_STEPS); with kc shorter than that, from the first step on.
            let c_prefetch_start = kc.saturating_sub(C_PREFETCH_STEPS);
            // loop over the depth: one rank-1 update of the tile per step
            for p in 0..kc {
                // The next tile's rows (see NEXT_TILE_SPACING), one row every few steps.
                let next_row = p / NEXT_TILE_SPACING;
                if p % NEXT_TILE_SPACING == 0 && next_row < $mr {
                    let row_start = c.wrapping_add(($mr + next_row) * ldc);
                    _mm_prefetch::<_MM_HINT_T0>(row_start.cast());
                    _mm_prefetch::<_MM_HINT_T0>(row_start.wrapping_add($lanes).cast());
                    _mm_prefetch::<_MM_HINT_T0>(row_start.wrapping_add($nr - 1).cast());
                }
                let c_row = p.wrapping_sub(c_prefetch_start);
                if c_row < $mr {
                    // Every 64-byte line row `c_row` can touch: its first, middle and last
                    // element (NR scalars are 128 bytes). A prefetch never faults, so the
                    // addresses are formed with wrapping_add and never dereferenced.
                    let row_start = c.wrapping_add(c_row * ldc);
                    _mm_prefetch::<_MM_HINT_T0>(row_start.cast());
                    _mm_prefetch::<_MM_HINT_T0>(row_start.wrapping_add($lanes).cast());
                    _mm_prefetch::<_MM_HINT_T0>(row_start.wrapping_add($nr - 1).cast());
                }
                // A streams from L2: ask for it a few steps ahead (stored by rows: one row's
                // next cache lines per step, each row every MR steps). A prefetch never faults,
                // so running past A's end (wrapping_add, no deref) is fine.
                let a_ahead = if A_ROWS {
                    a.wrapping_add((p % $mr) * a_stride + p + A_PREFETCH_ROW_AHEAD)
                } else {
                    a.wrapping_add((p + A_PREFETCH_STEPS) * a_stride)
                };
                _mm_prefetch::<_MM_HINT_T0>(a_ahead.cast());
                // SAFETY: p < kc, so b[p * NR .. p * NR + NR] is within the B panel.
                let (b_low, b_high) =
                    unsafe { ($loadu(b.add(p * $nr)), $loadu(b.add(p * $nr + $lanes))) };
                for (i, ab_row) in ab.iter_mut().enumerate() {
                    let a_element = if A_ROWS {
                        a.wrapping_add(i * a_stride + p)
                    } else {
                        a.wrapping_add(p * a_stride + i)
                    };
                    // SAFETY: i < MR and p < kc: a readable element of A (the caller's contract).
                    let a_value = $set1(unsafe { *a_element });
                    ab_row[0] = $fmadd(a_value, b_low, ab_row[0]);
                    ab_row[1] = $fmadd(a_value, b_high, ab_row[1]);
                }
            }
            let alpha = $set1(alpha);
            let beta_is_zero = beta == 0.0;
            let beta = $set1(beta);
            for (i, ab_row) in ab.iter().enumerate() {
                for (v, &acc) in ab_row.iter().enumerate() {
                    // SAFETY: i < $mr and v * LANES + LANES <= NR: within row i of the C tile.
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
    run_f32,
    kernel_f32,
    f32,
    MR_F32,
    NR_F32,
    16,
    _mm512_setzero_ps,
    _mm512_set1_ps,
    _mm512_loadu_ps,
    _mm512_storeu_ps,
    _mm512_fmadd_ps,
    _mm512_mul_ps
);

avx512_tile!(
    tile_f64,
    strided_tile_f64,
    run_f64,
    kernel_f64,
    f64,
    MR_F64,
    NR_F64,
    8,
    _mm512_setzero_pd,
    _mm512_set1_pd,
    _mm512_loadu_pd,
    _mm512_storeu_pd,
    _mm512_fmadd_pd,
    _mm512_mul_pd
);
