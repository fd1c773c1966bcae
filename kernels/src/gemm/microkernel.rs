//! The portable register-blocked GEMM microkernel (`wide`; the `Portable` kernel, see
//! `gemm/kernel.rs`); the AVX-512 one is in `gemm/avx512.rs`.
//!
//! One call computes an `MR x NR` tile of `A B` from a packed A micro-panel (`kc x MR`, stored
//! k-major: the `MR` values of column `p` are contiguous) and a packed B micro-panel (`kc x NR`,
//! stored k-major as `NR_VECTORS` SIMD vectors per `p`):
//!
//! ```text
//! AB[i][j] = sum_{p = 0}^{kc - 1} a[p * MR + i] * b[p * NR + j]      (summed in order of p)
//! ```
//!
//! with one fused multiply-add per term (`wide`'s `mul_add`, a single FMA instruction when the
//! target has FMA, `x * y + z` otherwise). The `MR x NR_VECTORS` accumulators stay in registers:
//! f32 uses 6 x 16 (`f32x8`), f64 uses 6 x 8 (`f64x4`), 12 vector accumulators either way, plus
//! two B vectors and one broadcast A value: 15 of the 16 AVX2 registers.
//!
//! [`write_back`] then stores `C <- alpha AB + beta C` for the tile; C is not read when
//! `beta == 0`. Partial tiles at the right and bottom edges of C go through a small buffer with
//! exactly the same vector arithmetic, and a bottom tile of fewer than `MR` rows updates only
//! its own rows ([`microkernel_rows`]) with the same FMA chains, so an element's value never
//! depends on where the tile boundaries fall. Two variants read an operand in place instead of
//! packed, again with the same FMA chains: a whole strip of A ([`microkernel_strided`]) and,
//! in products of few rows, the B micro-panel ([`microkernel_b_rows`]).

use bytemuck::Pod;

use crate::simd::{prefetch, SimdVector};
use crate::{Float, MatMut, MatRef, Transpose};

/// Rows of C computed by one microkernel call.
pub const MR: usize = 6;

/// SIMD vectors per row of a C tile: a tile has `NR = NR_VECTORS * LANES` columns.
pub const NR_VECTORS: usize = 2;

/// Columns of a C tile of vector type `V`: `NR_VECTORS * LANES`.
pub const fn tile_cols<V: SimdVector>() -> usize {
    NR_VECTORS * V::LANES
}

/// The accumulators of one C tile: row `i`, vector `v` holds columns `v * LANES ..`.
pub type Tile<V> = [[V; NR_VECTORS]; MR];

/// `AB = sum_p a_panel[p] b_panel[p]^T` over `kc` steps (see the module docs for the layout).
///
/// `a_panel` holds at least `kc * MR` scalars, `b_panel` at least `kc * NR_VECTORS` vectors.
#[doc(hidden)]
#[inline]
pub fn microkernel<V: SimdVector + Pod>(
    kc: usize,
    a_panel: &[V::Scalar],
    b_panel: &[V],
) -> Tile<V> {
    microkernel_rows::<V, MR>(kc, a_panel, b_panel)
}

/// [`microkernel`] for the first `ROWS` rows of the tile only (`1 <= ROWS <= MR`; the other
/// rows are returned as zeros, and the write-back never stores them): the bottom strip of a C
/// whose row count is not a multiple of `MR` (20 rows are three strips of 6 and one of 2).
/// Computing the whole tile there would spend `MR / ROWS` times the multiply-adds; the rows it
/// does compute are the same FMA chains, so the result is bit-identical.
#[doc(hidden)]
#[inline(never)]
pub fn microkernel_rows<V: SimdVector + Pod, const ROWS: usize>(
    kc: usize,
    a_panel: &[V::Scalar],
    b_panel: &[V],
) -> Tile<V> {
    const { assert!(ROWS >= 1 && ROWS <= MR) };
    let a_panel = &a_panel[..kc * MR];
    let b_panel = &b_panel[..kc * NR_VECTORS];
    let mut ab = [[V::splat(V::Scalar::ZERO); NR_VECTORS]; MR];
    // loop over the depth: one rank-1 update of the tile's first ROWS rows per step
    for (a_column, b_row) in a_panel
        .chunks_exact(MR)
        .zip(b_panel.chunks_exact(NR_VECTORS))
    {
        let a_column: &[V::Scalar; ROWS] = a_column[..ROWS].try_into().unwrap();
        rank_one_update(&mut ab, a_column, b_row.try_into().unwrap());
    }
    ab
}

/// One depth step of a tile: `ab[i] += a_column[i] b_row` for its first `ROWS` rows, one FMA
/// per element (every microkernel's step, whatever it reads A and B from).
#[inline(always)]
fn rank_one_update<V: SimdVector, const ROWS: usize>(
    ab: &mut Tile<V>,
    a_column: &[V::Scalar; ROWS],
    b_row: &[V; NR_VECTORS],
) {
    for (ab_row, &a) in ab.iter_mut().zip(a_column) {
        let a = V::splat(a);
        for (acc, &b) in ab_row.iter_mut().zip(b_row) {
            *acc = a.mul_add(b, *acc);
        }
    }
}

/// [`microkernel`] with a whole `MR`-row strip of A read in place instead of from a packed
/// micro-panel: A's element `(i, p)` is `a[i * a_stride + p]` when `A_ROWS` (A stored
/// row-major), `a[p * a_stride + i]` otherwise (`op(A)` stored transposed). Each element is the
/// same FMA chain in order of `p`, so the tile is bit-identical to packing the strip first.
#[doc(hidden)]
#[inline(never)]
pub fn microkernel_strided<V: SimdVector + Pod, const A_ROWS: bool>(
    kc: usize,
    a: &[V::Scalar],
    a_stride: usize,
    b_panel: &[V],
) -> Tile<V> {
    let b_panel = &b_panel[..kc * NR_VECTORS];
    let mut ab = [[V::splat(V::Scalar::ZERO); NR_VECTORS]; MR];
    // one rank-1 update of the tile per depth step, as in `microkernel`
    if A_ROWS {
        // the strip's rows, each exactly kc long, so `row[p]` needs no bounds check
        let rows: [&[V::Scalar]; MR] = std::array::from_fn(|i| &a[i * a_stride..][..kc]);
        for p in 0..kc {
            let b_row: &[V; NR_VECTORS] =
                b_panel[p * NR_VECTORS..][..NR_VECTORS].try_into().unwrap();
            let a_column: [V::Scalar; MR] = std::array::from_fn(|i| rows[i][p]);
            rank_one_update(&mut ab, &a_column, b_row);
        }
    } else {
        for (a_row, b_row) in a.chunks(a_stride).zip(b_panel.chunks_exact(NR_VECTORS)) {
            let a_column: &[V::Scalar; MR] = a_row[..MR].try_into().unwrap();
            rank_one_update(&mut ab, a_column, b_row.try_into().unwrap());
        }
    }
    ab
}

/// `$kernel::<V, ROWS>(args)` with the const `ROWS` equal to the run-time `rows` (1 to `MR`):
/// the kernels of a bottom tile compute only its own rows. The `_` in the call marks where
/// `ROWS` goes.
macro_rules! by_rows {
    ($rows:expr, $kernel:ident::<V, _>($($arg:expr),*)) => {{
        const { assert!(MR == 6, "the arms below name every row count up to MR") };
        match $rows {
            1 => $kernel::<V, 1>($($arg),*),
            2 => $kernel::<V, 2>($($arg),*),
            3 => $kernel::<V, 3>($($arg),*),
            4 => $kernel::<V, 4>($($arg),*),
            5 => $kernel::<V, 5>($($arg),*),
            _ => $kernel::<V, MR>($($arg),*),
        }
    }};
}

/// How many depth steps ahead [`microkernel_b_rows`] fetches the B row it will read: the rows
/// are `ldb` apart, so no hardware prefetcher follows them (the AVX-512 kernels' distance).
const B_ROW_PREFETCH_STEPS: usize = 24;

/// [`microkernel_rows`] with the B micro-panel read in place: its row `p` is
/// `b[p * ldb..][..NR]` (B's storage, not transposed) instead of a packed row. The same FMA
/// chains, so the same bits as packing it first.
#[inline(never)]
fn microkernel_b_rows<V: SimdVector + Pod, const ROWS: usize>(
    kc: usize,
    a_panel: &[V::Scalar],
    b: &[V::Scalar],
    ldb: usize,
) -> Tile<V> {
    const { assert!(ROWS >= 1 && ROWS <= MR) };
    let a_panel = &a_panel[..kc * MR];
    let nr = tile_cols::<V>();
    let mut ab = [[V::splat(V::Scalar::ZERO); NR_VECTORS]; MR];
    // loop over the depth: one rank-1 update of the tile's first ROWS rows per step
    for (p, a_column) in a_panel.chunks_exact(MR).enumerate() {
        let ahead = (p + B_ROW_PREFETCH_STEPS) * ldb;
        prefetch(b, ahead);
        prefetch(b, ahead + nr - 1);
        let row = &b[p * ldb..][..nr];
        let b_row: [V; NR_VECTORS] = std::array::from_fn(|v| V::load(&row[v * V::LANES..]));
        let a_column: &[V::Scalar; ROWS] = a_column[..ROWS].try_into().unwrap();
        rank_one_update(&mut ab, a_column, &b_row);
    }
    ab
}

/// The `wide` tile function with B read in place (see `GemmKernel::b_in_place_tile`): `b` is
/// the `kc x NR` micro-panel in B's storage. From depth [`SHALLOW_DEPTH`] on it prefetches its
/// C tile first (such tiles are walked down the column strips).
pub fn b_in_place_tile_wide<V: SimdVector + Pod>(
    a_panel: &[V::Scalar],
    b: MatRef<'_, V::Scalar>,
    alpha: V::Scalar,
    beta: V::Scalar,
    c: MatMut<'_, V::Scalar>,
) where
    V::Scalar: Pod,
{
    let (kc, ldb) = (b.rows(), b.ld());
    let (rows, cols, ldc) = (c.rows(), c.cols(), c.ld());
    assert!(
        b.cols() == tile_cols::<V>() && b.trans() == Transpose::No && rows <= MR,
        "gemm: B in place is a kc x NR micro-panel, C at most MR rows"
    );
    let c = c.into_data();
    if kc >= SHALLOW_DEPTH {
        prefetch_tile(c, ldc, rows, cols);
    }
    let b = b.data();
    let ab = by_rows!(rows, microkernel_b_rows::<V, _>(kc, a_panel, b, ldb));
    write_back::<V>(&ab, alpha, beta, c, ldc, rows, cols);
}

/// `C <- alpha AB + beta C` on the `rows x cols` top-left part of a tile (`rows <= MR`,
/// `cols <= NR`); element `(i, j)` of the tile is `c[i * ldc + j]`. Never reads C when
/// `beta == 0`. Each element is `beta * c + (alpha * ab)` with one FMA (when the target has it).
#[doc(hidden)]
#[inline]
pub fn write_back<V: SimdVector + Pod>(
    ab: &Tile<V>,
    alpha: V::Scalar,
    beta: V::Scalar,
    c: &mut [V::Scalar],
    ldc: usize,
    rows: usize,
    cols: usize,
) where
    V::Scalar: Pod,
{
    if rows == MR && cols == tile_cols::<V>() {
        write_back_full(ab, alpha, beta, c, ldc);
        return;
    }
    // A partial tile: go through a full-size buffer so the arithmetic is the same as above.
    let mut buffer = [[V::splat(V::Scalar::ZERO); NR_VECTORS]; MR];
    let tile: &mut [V::Scalar] = bytemuck::cast_slice_mut(&mut buffer);
    let nr = tile_cols::<V>();
    if beta != V::Scalar::ZERO {
        for (i, tile_row) in tile.chunks_exact_mut(nr).enumerate().take(rows) {
            tile_row[..cols].copy_from_slice(&c[i * ldc..][..cols]);
        }
    }
    write_back_full(ab, alpha, beta, tile, nr);
    for (i, tile_row) in tile.chunks_exact(nr).enumerate().take(rows) {
        c[i * ldc..][..cols].copy_from_slice(&tile_row[..cols]);
    }
}

#[inline(always)]
fn write_back_full<V: SimdVector + Pod>(
    ab: &Tile<V>,
    alpha: V::Scalar,
    beta: V::Scalar,
    c: &mut [V::Scalar],
    ldc: usize,
) {
    let alpha = V::splat(alpha);
    let beta_is_zero = beta == V::Scalar::ZERO;
    let beta = V::splat(beta);
    for (i, ab_row) in ab.iter().enumerate() {
        let c_row = &mut c[i * ldc..][..tile_cols::<V>()];
        for (c_lanes, &acc) in c_row.chunks_exact_mut(V::LANES).zip(ab_row) {
            let scaled = acc * alpha;
            let result = if beta_is_zero {
                scaled
            } else {
                V::load(c_lanes).mul_add(beta, scaled)
            };
            result.store(c_lanes);
        }
    }
}

/// Depth from which a `wide` tile with B read in place ([`b_in_place_tile_wide`]) prefetches
/// its C tile, the packed path then walking those tiles down B's column strips
/// (`GemmKernel::B_IN_PLACE_ALONG_ROWS_MAX_DEPTH`), so that each B micro-panel is fetched
/// from B's storage once for the few strips of A. Down a column strip every tile starts on
/// `MR` new C rows, `ldc` apart, which no hardware prefetcher follows, and the write-back
/// would miss on each without the prefetch. A shallow tile is mostly C traffic (at k = 20 a
/// 6 x 16 f32 tile is 120 cycles of FMAs), and the six prefetches issued together just before
/// it stall it: shallower panels walk along C's rows instead, where consecutive tiles continue
/// the same rows (sequential streams the hardware prefetchers follow), without the prefetch.
/// The other `wide` tiles are always walked along the rows (`GemmKernel::ALONG_ROWS`).
pub(crate) const SHALLOW_DEPTH: usize = 64;

/// The `wide` tile function (see `GemmKernel::tile`): [`microkernel`] then [`write_back`],
/// without a C prefetch (the packed path walks these tiles along C's rows), with the B
/// micro-panel given as scalars (`kc * NR` of them). From the packing buffers it is 32-byte
/// aligned (they are 64-byte aligned and each micro-panel is a whole number of vectors long)
/// and is read as vectors; an unaligned one (packed by a caller into its own buffer,
/// `gemm_prepacked_b`) is read with unaligned loads, in place as well.
pub fn tile_wide<V: SimdVector + Pod>(
    kc: usize,
    a_panel: &[V::Scalar],
    b_panel: &[V::Scalar],
    alpha: V::Scalar,
    beta: V::Scalar,
    c: MatMut<'_, V::Scalar>,
) where
    V::Scalar: Pod,
{
    let (rows, cols, ldc) = (c.rows(), c.cols(), c.ld());
    assert!(
        rows <= MR && cols <= tile_cols::<V>(),
        "gemm: a {rows} x {cols} tile exceeds {MR} x {}",
        tile_cols::<V>()
    );
    let c = c.into_data();
    let b_panel = &b_panel[..kc * tile_cols::<V>()];
    let ab = match bytemuck::try_cast_slice::<V::Scalar, V>(b_panel) {
        Ok(b_vectors) if rows == MR => microkernel::<V>(kc, a_panel, b_vectors),
        Ok(b_vectors) => rows_tile::<V>(rows, kc, a_panel, b_vectors),
        // Not aligned for the vector type: B micro-panels a caller packed into its own buffer
        // (`gemm_prepacked_b`, such as the start-up's W_0 panels). Read in place with unaligned
        // loads, as a B micro-panel in B's storage is (its rows NR apart here): the same FMA
        // chains, and no copy of the panel for every tile.
        Err(_) => by_rows!(
            rows,
            microkernel_b_rows::<V, _>(kc, a_panel, b_panel, tile_cols::<V>())
        ),
    };
    write_back::<V>(&ab, alpha, beta, c, ldc, rows, cols);
}

/// The tile of `rows` rows (any count up to `MR`), computing only those rows: a bottom strip of
/// fewer than `MR` rows costs its own rows. Kept out of [`tile_wide`], whose full tiles from the
/// packing buffers stay a direct call of [`microkernel`].
#[cold]
#[inline(never)]
fn rows_tile<V: SimdVector + Pod>(
    rows: usize,
    kc: usize,
    a_panel: &[V::Scalar],
    b_vectors: &[V],
) -> Tile<V> {
    by_rows!(rows, microkernel_rows::<V, _>(kc, a_panel, b_vectors))
}

/// The `wide` strided tile function (see `GemmKernel::strided_tile`): like [`tile_wide`] (no
/// C prefetch), for a whole `MR`-row strip of A (`a`, `MR x kc`) read in place
/// ([`microkernel_strided`]).
pub fn strided_tile_wide<V: SimdVector + Pod>(
    a: MatRef<'_, V::Scalar>,
    b_panel: &[V::Scalar],
    alpha: V::Scalar,
    beta: V::Scalar,
    c: MatMut<'_, V::Scalar>,
) where
    V::Scalar: Pod,
{
    let kc = a.cols();
    assert!(
        a.rows() == MR && c.rows() == MR && c.cols() <= tile_cols::<V>(),
        "gemm: a strided tile is {MR} rows of at most {} columns",
        tile_cols::<V>()
    );
    if kc == 0 {
        // the packed path's tile with an empty depth: AB = 0
        return tile_wide::<V>(0, &[], b_panel, alpha, beta, c);
    }
    // the view guarantees a_stride >= kc (rows) or >= MR (transposed) and that `a` holds it
    let (a_rows, a_stride) = (a.trans() == Transpose::No, a.ld());
    let a = a.data();
    let (cols, ldc) = (c.cols(), c.ld());
    let c = c.into_data();
    let b_panel = &b_panel[..kc * tile_cols::<V>()];
    let strip = |b_vectors: &[V]| {
        if a_rows {
            microkernel_strided::<V, true>(kc, a, a_stride, b_vectors)
        } else {
            microkernel_strided::<V, false>(kc, a, a_stride, b_vectors)
        }
    };
    let ab = match bytemuck::try_cast_slice::<V::Scalar, V>(b_panel) {
        Ok(b_vectors) => strip(b_vectors),
        // Not aligned for the vector type: a caller's own B panels (`gemm_prepacked_b`) with A
        // read in place, at most IN_PLACE_A_MAX_STRIPS strips of B. Copied into vectors (same
        // values); unlike `tile_wide`'s, this case is rare (the start-up reaches it only in
        // tasks of at most 8 strips), so it keeps the copy.
        Err(_) => strip(
            &b_panel
                .chunks_exact(V::LANES)
                .map(V::load)
                .collect::<Vec<V>>(),
        ),
    };
    write_back::<V>(&ab, alpha, beta, c, ldc, MR, cols);
}

/// Asks the cache to fetch the first `rows` rows of a C tile `width` scalars wide before the
/// microkernel runs: C rows are `ldc` apart, too far apart for the hardware prefetcher, and the
/// write-back would otherwise stall on a cache miss per row. A hint only: no effect on results.
#[inline(always)]
pub fn prefetch_tile<S: Float>(c: &[S], ldc: usize, rows: usize, width: usize) {
    #[cfg(target_arch = "x86_64")]
    for i in 0..rows {
        let row = &c[i * ldc..];
        let row = &row[..row.len().min(width)];
        // one prefetch per 64-byte line the row can touch: every 64 bytes, and the last element
        let line = 64 / std::mem::size_of::<S>();
        for element in row.iter().step_by(line).chain(row.last()) {
            // SAFETY: SSE is part of the x86_64 baseline, and a prefetch is a hint that never
            // faults or changes memory; the pointer comes from a live reference anyway.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    (element as *const S).cast::<i8>(),
                );
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (c, ldc, rows, width);
}

#[cfg(test)]
mod tests {
    use super::super::kernel::{Avx512, GemmKernel, Portable};
    use super::*;
    use wide::{f32x8, f64x4};

    /// `count` values in [-1, 1) from a small deterministic generator (the kernel tests in
    /// `tests/gemm.rs` use ChaCha; here a fixed LCG keeps the unit tests dependency-free),
    /// rounded to `S`.
    fn values<S: Float>(count: usize, seed: u64) -> Vec<S> {
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..count)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                S::from_f64(((state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0)
            })
            .collect()
    }

    /// Entry (i, j) of a tile, `got`, against the f64 value of `alpha A B + beta old` from the
    /// packed panels of depth `kc` (`A(i, p) = a[p mr + i]`, `B(p, j) = b[p nr + j]`), within
    /// `2 (kc + 2) eps` of the magnitude of its terms. `tile` (rows, cols) names the case.
    fn assert_tile_entry<S: Float>(
        (a, mr, b, nr): (&[S], usize, &[S], usize),
        (kc, i, j): (usize, usize, usize),
        (alpha, beta): (f64, f64),
        (old, got): (f64, f64),
        tile: (usize, usize),
    ) {
        let (mut exact, mut magnitude) = (0.0, 0.0);
        for p in 0..kc {
            let term = a[p * mr + i].to_f64() * b[p * nr + j].to_f64();
            exact += term;
            magnitude += term.abs();
        }
        let beta_c = if beta == 0.0 { 0.0 } else { beta * old };
        let expected = alpha * exact + beta_c;
        let bound =
            2.0 * (kc + 2) as f64 * S::EPSILON.to_f64() * (alpha * magnitude + beta_c.abs());
        let (rows, cols) = tile;
        assert!(
            (got - expected).abs() <= bound,
            "kc={kc} rows={rows} cols={cols} beta={beta} ({i},{j}): {got} vs {expected}"
        );
    }

    /// C (leading dimension `ldc`) after a `rows x cols` tile was written over `c_old`: the
    /// entries outside the tile as they were, those inside within the bound of
    /// [`assert_tile_entry`] (A and B the packed panels of depth `kc`) and, given `full`,
    /// equal bit for bit to the full tile's.
    fn assert_written_tile<S: Float>(
        (c, c_old, full): (&[S], &[S], Option<&[S]>),
        (ldc, rows, cols): (usize, usize, usize),
        panels: (&[S], usize, &[S], usize),
        kc: usize,
        scalars: (f64, f64),
    ) {
        for i in 0..c.len() / ldc {
            for j in 0..ldc {
                let (got, old) = (c[i * ldc + j].to_f64(), c_old[i * ldc + j].to_f64());
                if i >= rows || j >= cols {
                    assert_eq!(got, old, "outside the tile ({i}, {j}) was written");
                    continue;
                }
                if let Some(full) = full {
                    assert_eq!(
                        got.to_bits(),
                        full[i * ldc + j].to_f64().to_bits(),
                        "partial tile {rows}x{cols} differs from the full tile at ({i}, {j})"
                    );
                }
                assert_tile_entry(panels, (kc, i, j), scalars, (old, got), (rows, cols));
            }
        }
    }

    /// Fills the `rows x cols` tile of C (leading dimension `ldc`) with NaN: with `beta == 0`
    /// a tile function must not read it, or the NaN would show in the result.
    fn poison_tile<S: Float>(c: &mut [S], ldc: usize, rows: usize, cols: usize) {
        for row in c.chunks_mut(ldc).take(rows) {
            row[..cols].fill(S::from_f64(f64::NAN));
        }
    }

    fn check_microkernel<V: SimdVector + Pod>()
    where
        V::Scalar: Pod,
    {
        let nr = tile_cols::<V>();
        for kc in [0, 1, 2, 5, 16, 257] {
            let a: Vec<V::Scalar> = values(kc * MR, 1);
            let b_scalars: Vec<V::Scalar> = values(kc * nr, 2);
            let b: Vec<V> = b_scalars.chunks_exact(V::LANES).map(V::load).collect();
            let ab = microkernel::<V>(kc, &a, &b);
            for (rows, cols) in [
                (MR, nr),
                (1, 1),
                (MR - 1, nr - 1),
                (MR, 3),
                (2, nr),
                (MR - 1, nr),
            ] {
                for beta in [0.0, 1.0, -0.75] {
                    let alpha = 1.5;
                    // C embedded in a wider matrix (ldc = nr + 3) with a sentinel everywhere
                    let ldc = nr + 3;
                    let c_old: Vec<V::Scalar> = values((MR + 1) * ldc, 3);
                    let mut c = c_old.clone();
                    if beta == 0.0 {
                        poison_tile(&mut c, ldc, rows, cols);
                    }
                    write_back::<V>(
                        &ab,
                        Float::from_f64(alpha),
                        Float::from_f64(beta),
                        &mut c,
                        ldc,
                        rows,
                        cols,
                    );
                    assert_written_tile(
                        (&c, &c_old, None),
                        (ldc, rows, cols),
                        (&a, MR, &b_scalars, nr),
                        kc,
                        (alpha, beta),
                    );
                }
            }
        }
    }

    #[test]
    fn microkernel_full_and_partial_tiles_f32x8_and_f64x4() {
        check_microkernel::<f32x8>();
        check_microkernel::<f64x4>();
    }

    #[test]
    fn partial_tile_matches_full_tile_bitwise() {
        // The same accumulators written as a full tile and as partial tiles give identical bits.
        let kc = 37;
        let a: Vec<f32> = values(kc * MR, 4);
        let b: Vec<f32x8> = values::<f32>(kc * 16, 5)
            .chunks_exact(8)
            .map(<f32x8 as SimdVector>::load)
            .collect();
        let ab = microkernel::<f32x8>(kc, &a, &b);
        let c0: Vec<f32> = values(MR * 16, 6);
        let mut full = c0.clone();
        write_back::<f32x8>(&ab, 0.3, 0.7, &mut full, 16, MR, 16);
        let mut partial = c0.clone();
        write_back::<f32x8>(&ab, 0.3, 0.7, &mut partial, 16, MR - 1, 15);
        for i in 0..MR - 1 {
            for j in 0..15 {
                assert_eq!(full[i * 16 + j].to_bits(), partial[i * 16 + j].to_bits());
            }
        }
    }

    /// Column counts of a tile at and around the AVX-512 narrow kernel's (1 to 4 columns).
    const NARROW_WIDTHS: [usize; 5] = [1, 2, 3, 4, 5];

    /// A tile function against the f64 sum on full and partial tiles, `beta` 0 (C holds NaN,
    /// never read), 1 and another value, C embedded in a wider matrix whose other elements must
    /// stay untouched; then partial tiles must equal the matching part of the full tile bitwise.
    fn check_tile_fn<S: Float, K: GemmKernel<S>>() {
        let (mr, nr) = (K::MR, K::NR);
        // 23..=25: around the start of the AVX-512 kernels' C prefetch window; 30, 81, 98
        // and 257 end their groups of next-tile fetches early, or leave 1, 2 or 3 steps
        // after the unrolled stretch
        for kc in [1, 2, 5, 16, 23, 24, 25, 30, 81, 98, 257] {
            let a: Vec<S> = values(kc * mr, 11);
            let b: Vec<S> = values(kc * nr, 12);
            let ldc = nr + 3;
            let c_old: Vec<S> = values((mr + 1) * ldc, 13);
            let (alpha, beta_values) = (1.5, [0.0, 1.0, -0.75]);
            for beta in beta_values {
                let mut full = c_old.clone();
                let (alpha_s, beta_s) = (S::from_f64(alpha), S::from_f64(beta));
                let c = MatMut::with_ld(&mut full, mr, nr, ldc);
                K::tile(kc, &a, &b, alpha_s, beta_s, c);
                // every row count, stored in place (all columns, or the first half: one
                // vector of the AVX-512 kernels), through the buffer, and the few columns of
                // the AVX-512 narrow kernel
                let shapes = (1..=mr)
                    .flat_map(|rows| {
                        [(rows, nr), (rows, nr - 1), (rows, nr / 2)]
                            .into_iter()
                            .chain(NARROW_WIDTHS.map(|cols| (rows, cols)))
                    })
                    .chain([(mr, nr / 2 + 1)]);
                for (rows, cols) in shapes {
                    let mut c = c_old.clone();
                    if beta == 0.0 {
                        poison_tile(&mut c, ldc, rows, cols);
                    }
                    K::tile(
                        kc,
                        &a,
                        &b,
                        alpha_s,
                        beta_s,
                        MatMut::with_ld(&mut c, rows, cols, ldc),
                    );
                    assert_written_tile(
                        (&c, &c_old, Some(&full)),
                        (ldc, rows, cols),
                        (&a, mr, &b, nr),
                        kc,
                        (alpha, beta),
                    );
                }
            }
        }
    }

    /// A strided tile function (A read in place, row-major or transposed, inside a wider
    /// matrix) against the packed tile function on the same values: bitwise equal, full and
    /// partial column counts, `beta` 0 (C holds NaN), 1 and another value.
    fn check_strided_tile_fn<S: Float, K: GemmKernel<S>>() {
        let (mr, nr) = (K::MR, K::NR);
        for kc in [1, 2, 23, 24, 25, 64, 257] {
            // A stored with 3 spare rows and columns around the strip, so reading past the
            // strip would read other values (and past the slice, panic)
            let lda_rows = kc + 3;
            let stored_rows: Vec<S> = values((mr + 3) * lda_rows, 21);
            let lda_transposed = mr + 3;
            let stored_transposed: Vec<S> = values((kc + 3) * lda_transposed, 22);
            let b: Vec<S> = values(kc * nr, 23);
            let c_old: Vec<S> = values(mr * nr, 24);
            for (a_rows, stored, lda) in [
                (true, &stored_rows, lda_rows),
                (false, &stored_transposed, lda_transposed),
            ] {
                // the strip starts at row 1, depth 2 of the stored matrix
                let (offset, element) = if a_rows {
                    (
                        lda + 2,
                        Box::new(move |i: usize, p: usize| i * lda + p) as Box<dyn Fn(_, _) -> _>,
                    )
                } else {
                    (
                        2 * lda + 1,
                        Box::new(move |i: usize, p: usize| p * lda + i) as Box<dyn Fn(_, _) -> _>,
                    )
                };
                let a_strip = &stored[offset..];
                // the strip as the packed path gives it to the strided tile: mr x kc, as stored or transposed
                let strip = if a_rows {
                    MatRef::with_ld(&stored[lda + 2..], mr, kc, lda)
                } else {
                    MatRef::with_ld(&stored[2 * lda + 1..], kc, mr, lda).transpose()
                };
                let mut packed = vec![S::ZERO; kc * mr];
                for p in 0..kc {
                    for i in 0..mr {
                        packed[p * mr + i] = a_strip[element(i, p)];
                    }
                }
                for beta in [0.0, 1.0, -0.75] {
                    for cols in [nr, nr - 1, nr / 2, 1] {
                        let (alpha_s, beta_s) = (S::from_f64(1.5), S::from_f64(beta));
                        assert_matches_packed_tile::<S, K>(
                            (kc, &packed, &b),
                            &c_old,
                            (mr, cols),
                            (alpha_s, beta_s),
                            |c| K::strided_tile(strip, &b, alpha_s, beta_s, c),
                            &format!("kc={kc} a_rows={a_rows} beta={beta} cols={cols}"),
                        );
                    }
                }
            }
        }
    }

    /// A tile function reading an operand in place (`in_place`, given the `rows x cols` tile of
    /// C with leading dimension `NR`) against the packed one (`K::tile` on the panels `kc`,
    /// A, B) on the same tile of `c_old`: bit for bit equal. With `beta == 0` the in-place
    /// function's C holds NaN, which it must not read. `case` names the case.
    fn assert_matches_packed_tile<S: Float, K: GemmKernel<S>>(
        (kc, a_panel, b_panel): (usize, &[S], &[S]),
        c_old: &[S],
        (rows, cols): (usize, usize),
        (alpha, beta): (S, S),
        in_place: impl FnOnce(MatMut<'_, S>),
        case: &str,
    ) {
        let nr = K::NR;
        let mut expected = c_old.to_vec();
        let c = MatMut::with_ld(&mut expected, rows, cols, nr);
        K::tile(kc, a_panel, b_panel, alpha, beta, c);
        let mut got = c_old.to_vec();
        if beta == S::ZERO {
            poison_tile(&mut got, nr, rows, cols);
        }
        in_place(MatMut::with_ld(&mut got, rows, cols, nr));
        for (index, (g, e)) in got.iter().zip(&expected).enumerate() {
            assert_eq!(
                g.to_f64().to_bits(),
                e.to_f64().to_bits(),
                "{case} at {index}"
            );
        }
    }

    /// The tile function reading B in place (a `kc x NR` strip of a wider row-major matrix)
    /// against the packed tile function on the same values: bitwise equal, for every row
    /// count, full and partial columns of C, `beta` 0 (C holds NaN), 1 and another value.
    fn check_b_in_place_tile_fn<S: Float, K: GemmKernel<S>>() {
        let (mr, nr) = (K::MR, K::NR);
        for kc in [1, 2, 23, 24, 25, 30, 64, 257] {
            let a: Vec<S> = values(kc * mr, 31);
            // B stored with spare columns on both sides and a spare row: reading outside the
            // strip would read other values (and past the slice, panic)
            let ldb = nr + 7;
            let stored: Vec<S> = values((kc + 1) * ldb, 32);
            let b_strip = MatRef::with_ld(&stored[ldb + 3..], kc, nr, ldb);
            let packed: Vec<S> = (0..kc)
                .flat_map(|p| stored[(p + 1) * ldb + 3..][..nr].to_vec())
                .collect();
            let c_old: Vec<S> = values(mr * nr, 33);
            for beta in [0.0, 1.0, -0.75] {
                let shapes = (1..=mr).flat_map(|rows| {
                    [(rows, nr), (rows, nr - 1), (rows, nr / 2)]
                        .into_iter()
                        .chain(NARROW_WIDTHS.map(|cols| (rows, cols)))
                });
                for (rows, cols) in shapes {
                    let (alpha_s, beta_s) = (S::from_f64(-1.25), S::from_f64(beta));
                    assert_matches_packed_tile::<S, K>(
                        (kc, &a, &packed),
                        &c_old,
                        (rows, cols),
                        (alpha_s, beta_s),
                        |c| K::b_in_place_tile(&a, b_strip, alpha_s, beta_s, c),
                        &format!("kc={kc} rows={rows} cols={cols} beta={beta}"),
                    );
                }
            }
        }
    }

    /// All tile functions of kernel `K`, both element types: full and partial tiles, and the
    /// strided and B-in-place tiles bit for bit against the packed one.
    fn check_kernel<K: GemmKernel<f32> + GemmKernel<f64>>() {
        check_tile_fn::<f32, K>();
        check_tile_fn::<f64, K>();
        check_strided_tile_fn::<f32, K>();
        check_strided_tile_fn::<f64, K>();
        check_b_in_place_tile_fn::<f32, K>();
        check_b_in_place_tile_fn::<f64, K>();
    }

    #[test]
    fn wide_tiles_full_partial_and_strided() {
        check_kernel::<Portable>();
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_tiles_full_partial_and_strided() {
        if !super::super::avx512::detected() {
            eprintln!("no avx512f on this CPU: the AVX-512 tiles cannot run here");
            return;
        }
        check_kernel::<Avx512>();
    }
}
