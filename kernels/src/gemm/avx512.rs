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
//! `C_PREFETCH_STEPS`), rather than all at once before the call.

use std::arch::x86_64::{
    _mm512_fmadd_pd, _mm512_fmadd_ps, _mm512_loadu_pd, _mm512_loadu_ps, _mm512_mul_pd,
    _mm512_mul_ps, _mm512_set1_pd, _mm512_set1_ps, _mm512_setzero_pd, _mm512_setzero_ps,
    _mm512_storeu_pd, _mm512_storeu_ps, _mm_prefetch, _MM_HINT_T0,
};

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

/// How many depth steps before the end of the k loop the kernels start fetching the C tile,
/// one row per step. C rows are `ldc` apart (no hardware prefetcher follows them) and the
/// write-back would otherwise stall on a cache miss per row; issuing all of them at once
/// before the kernel (as the `wide` variant does) fills the line-fill buffers and stalls the
/// A and B loads behind them instead.
const C_PREFETCH_STEPS: usize = 24;

/// Whether the running CPU has AVX-512F (std caches the CPUID answer: a load and a test).
#[inline]
pub fn detected() -> bool {
    is_x86_feature_detected!("avx512f")
}

macro_rules! avx512_tile {
    (
        $tile:ident, $kernel:ident, $scalar:ty, $mr:expr, $nr:expr, $lanes:expr,
        $setzero:ident, $set1:ident, $loadu:ident, $storeu:ident, $fmadd:ident, $mul:ident
    ) => {
        /// `C <- alpha AB + beta C` on the `rows x cols` top-left part of an `$mr x NR` tile
        /// (`1 <= rows <= $mr`, `1 <= cols <= NR`, element `(i, j)` is `c[i * ldc + j]`), with
        /// `AB` from `a_panel` (at least `kc * $mr` scalars) and `b_panel` (at least `kc * NR`).
        ///
        /// # Panics
        ///
        /// If the CPU lacks AVX-512F, or a slice is too short for the tile it must hold.
        #[allow(clippy::too_many_arguments)]
        pub fn $tile(
            kc: usize,
            a_panel: &[$scalar],
            b_panel: &[$scalar],
            alpha: $scalar,
            beta: $scalar,
            c: &mut [$scalar],
            ldc: usize,
            rows: usize,
            cols: usize,
        ) {
            assert!(
                detected(),
                "gemm: the AVX-512 kernel needs a CPU with avx512f"
            );
            let a_panel = &a_panel[..kc * $mr];
            let b_panel = &b_panel[..kc * $nr];
            assert!((1..=$mr).contains(&rows) && (1..=$nr).contains(&cols));
            if rows == $mr && cols == $nr {
                let c = &mut c[..($mr - 1) * ldc + $nr];
                assert!(ldc >= $nr);
                // SAFETY: avx512f is present (asserted above). The panels hold kc * $mr and
                // kc * NR scalars (sliced above), exactly what the kernel reads; C rows
                // i * ldc .. i * ldc + NR for i < $mr lie within `c` (its length is checked by
                // the slice above, and ldc >= NR keeps the rows disjoint).
                unsafe {
                    $kernel(
                        kc,
                        a_panel.as_ptr(),
                        b_panel.as_ptr(),
                        alpha,
                        beta,
                        c.as_mut_ptr(),
                        ldc,
                    )
                };
                return;
            }
            // A partial tile: through a full-size buffer, so the arithmetic is the same as above.
            let mut buffer = [0.0 as $scalar; $mr * $nr];
            if beta != 0.0 {
                for (i, tile_row) in buffer.chunks_exact_mut($nr).enumerate().take(rows) {
                    tile_row[..cols].copy_from_slice(&c[i * ldc..][..cols]);
                }
            }
            // SAFETY: avx512f is present (asserted above); the panels are as above and the
            // buffer is exactly $mr rows of NR scalars with ldc = NR.
            unsafe {
                $kernel(
                    kc,
                    a_panel.as_ptr(),
                    b_panel.as_ptr(),
                    alpha,
                    beta,
                    buffer.as_mut_ptr(),
                    $nr,
                )
            };
            for (i, tile_row) in buffer.chunks_exact($nr).enumerate().take(rows) {
                c[i * ldc..][..cols].copy_from_slice(&tile_row[..cols]);
            }
        }

        /// The full-tile kernel behind the function of the same type without `kernel`.
        ///
        /// # Safety
        ///
        /// The CPU has avx512f; `a` points to `kc * $mr` readable scalars, `b` to `kc * NR`, and
        /// `c + i * ldc .. c + i * ldc + NR` is writable (and readable when `beta != 0`) for
        /// every `i < $mr`.
        #[target_feature(enable = "avx512f")]
        unsafe fn $kernel(
            kc: usize,
            a: *const $scalar,
            b: *const $scalar,
            alpha: $scalar,
            beta: $scalar,
            c: *mut $scalar,
            ldc: usize,
        ) {
            let mut ab = [[$setzero(); 2]; $mr];
            // The C tile is fetched during the last C_PREFETCH_STEPS steps, one row per step
            // (see C_PREFETCH_STEPS); with kc shorter than that, from the first step on.
            let c_prefetch_start = kc.saturating_sub(C_PREFETCH_STEPS);
            // loop over the depth: one rank-1 update of the tile per step
            for p in 0..kc {
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
                // The A micro-panel streams from L2: ask for it a few steps ahead. A prefetch
                // never faults, so running past the panel's end (wrapping_add, no deref) is fine.
                _mm_prefetch::<_MM_HINT_T0>(a.wrapping_add((p + A_PREFETCH_STEPS) * $mr).cast());
                // SAFETY: p < kc, so b[p * NR .. p * NR + NR] and a[p * MR .. p * MR + MR] are
                // within the panels (the caller's contract).
                let (b_low, b_high, a_column) = unsafe {
                    (
                        $loadu(b.add(p * $nr)),
                        $loadu(b.add(p * $nr + $lanes)),
                        a.add(p * $mr),
                    )
                };
                for (i, ab_row) in ab.iter_mut().enumerate() {
                    // SAFETY: i < MR, within the A column of step p.
                    let a_value = $set1(unsafe { *a_column.add(i) });
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
