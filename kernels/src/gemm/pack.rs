//! Packing of A and B blocks into the micro-panel layout the microkernel reads.
//!
//! Transposes are resolved here, so the microkernel has a single code path. Rows (of A) and
//! columns (of B) beyond the matrix edge are padded with zeros: the microkernel always computes
//! full tiles, and the padding contributes exact zeros that the write-back never stores.

use std::any::Any;
use std::ops::Range;

#[cfg(target_arch = "x86_64")]
use super::avx512::{pack_a_panel_f32, pack_a_panel_f64};
use super::microkernel::prefetch_tile;
use crate::simd::{cast, cast_mut, precision, Precision};
use crate::{Float, MatRef, Transpose};

/// Packs rows `rows` and depth `depth` of `op(A)` into `dst` as `ceil(rows.len() / mr)`
/// micro-panels of `depth.len() x mr` scalars, each stored k-major (the `mr` values of one
/// column `p` contiguous); rows past the end are zero. `mr` is the kernel variant's `MR`.
pub fn pack_a<S: Float>(
    dst: &mut [S],
    a: MatRef<'_, S>,
    rows: Range<usize>,
    depth: Range<usize>,
    mr: usize,
) {
    let kc = depth.len();
    let panels = rows.len().div_ceil(mr);
    for (panel_index, panel) in dst.chunks_exact_mut(kc * mr).take(panels).enumerate() {
        let first_row = rows.start + panel_index * mr;
        let panel_rows = mr.min(rows.end - first_row);
        match a.trans() {
            Transpose::No => {
                // Row i of A is contiguous along the depth, so a micro-panel is the transpose
                // of mr source rows: the same problem as packing a transposed B, solved the
                // same way (steps of a few cache lines across all rows, so that their misses
                // overlap, then a transpose from L1) for the kernels' MR.
                let sources = &a.data()[first_row * a.ld() + depth.start..];
                match (mr, std::mem::size_of::<S>()) {
                    #[cfg(target_arch = "x86_64")]
                    (12, 4) | (12, 8) if panel_rows == mr && super::avx512::detected() => {
                        // whole panels of the AVX-512 kernels: a transpose in registers
                        let (sources, ld) = (&sources[..(mr - 1) * a.ld() + kc], a.ld());
                        match precision::<S>() {
                            Precision::F32 => pack_a_panel_f32(cast_mut(panel), cast(sources), ld),
                            Precision::F64 => pack_a_panel_f64(cast_mut(panel), cast(sources), ld),
                        }
                        continue;
                    }
                    (12, 4) => {
                        transpose_panel::<S, 12, 64, 4>(panel, sources, a.ld(), panel_rows);
                        continue;
                    }
                    (12, 8) => {
                        transpose_panel::<S, 12, 32, 2>(panel, sources, a.ld(), panel_rows);
                        continue;
                    }
                    (6, 4) => {
                        transpose_panel::<S, 6, 64, 2>(panel, sources, a.ld(), panel_rows);
                        continue;
                    }
                    (6, 8) => {
                        transpose_panel::<S, 6, 32, 2>(panel, sources, a.ld(), panel_rows);
                        continue;
                    }
                    _ => {}
                }
                // any other mr: scatter each row with stride mr
                for ii in 0..mr {
                    if ii < panel_rows {
                        let src = &a.data()[(first_row + ii) * a.ld() + depth.start..][..kc];
                        for (dst_column, &x) in panel.chunks_exact_mut(mr).zip(src) {
                            dst_column[ii] = x;
                        }
                    } else {
                        for dst_column in panel.chunks_exact_mut(mr) {
                            dst_column[ii] = S::ZERO;
                        }
                    }
                }
            }
            Transpose::Yes => {
                // column p of op(A) is contiguous in storage: copy mr at a time, with the
                // kernels' MR as a constant so that a column is a few moves, not a memcpy call
                let sources = &a.data()[first_row..];
                match mr {
                    6 => copy_columns::<S, 6>(panel, sources, a.ld(), depth.clone(), panel_rows),
                    12 => copy_columns::<S, 12>(panel, sources, a.ld(), depth.clone(), panel_rows),
                    _ => {
                        for (p, dst_column) in depth.clone().zip(panel.chunks_exact_mut(mr)) {
                            let src = &sources[p * a.ld()..][..panel_rows];
                            dst_column[..panel_rows].copy_from_slice(src);
                            dst_column[panel_rows..].fill(S::ZERO);
                        }
                    }
                }
            }
        }
    }
}

/// One A micro-panel from a transposed A: column `p` of the panel is `MR` consecutive
/// scalars of storage row `p` (`sources[p * ld..]`), zero-padded past `rows`.
#[inline(always)]
fn copy_columns<S: Float, const MR: usize>(
    panel: &mut [S],
    sources: &[S],
    ld: usize,
    depth: Range<usize>,
    rows: usize,
) {
    for (p, dst_column) in depth.zip(panel.chunks_exact_mut(MR)) {
        let src = &sources[p * ld..];
        if rows == MR {
            let src: &[S; MR] = src[..MR].try_into().expect("MR scalars");
            dst_column.copy_from_slice(src);
        } else {
            copy_zero_padded::<S, MR>(dst_column, &src[..rows]);
        }
    }
}

/// `dst[..N] = src` followed by zeros (`src.len() <= N`), element by element up to the
/// constant `N`: with `src.len()` known only at run time, a copy and a fill would be a `memcpy`
/// and a `memset` call, each dearer than the few moves of a kernel's short column or row (the
/// partial micro-panels of a product whose rows or columns are not a multiple of the tile).
#[inline(always)]
fn copy_zero_padded<S: Float, const N: usize>(dst: &mut [S], src: &[S]) {
    let padded: [S; N] = std::array::from_fn(|i| src.get(i).copied().unwrap_or(S::ZERO));
    dst[..N].copy_from_slice(&padded);
}

/// Micro-panels of B packed together, row by row (see `pack_b`): 1 KB of each source row for
/// the AVX-512 kernels (32 f32 or 16 f64 wide), 512 bytes for the `wide` ones.
const PANEL_GROUP: usize = 8;

/// How many rows ahead `pack_b` fetches the source rows of a panel group.
const B_PREFETCH_ROWS: usize = 4;

/// Packs depth `depth` and columns `cols` of `op(B)` into `dst` as `ceil(cols.len() / nr)`
/// micro-panels of `depth.len() x nr` scalars, each stored k-major (the `nr` values of one row
/// `p` contiguous); columns past the end are zero. `nr` is the kernel variant's `NR`.
pub fn pack_b<S: Float>(
    dst: &mut [S],
    b: MatRef<'_, S>,
    depth: Range<usize>,
    cols: Range<usize>,
    nr: usize,
) {
    let kc = depth.len();
    let panel_len = kc * nr;
    let panels = cols.len().div_ceil(nr);
    let full_panels = cols.len() / nr;
    match b.trans() {
        Transpose::No => {
            // Row p of B is contiguous. The block goes by groups of PANEL_GROUP micro-panels
            // (1 KB of each row): for each p, the group's part of row p is copied to row p of
            // each of its panels, nr contiguous scalars at a time. Whole rows at once wrote
            // to every panel for every p (63 of them for n = 2000 f32: more pages than the
            // first-level TLB holds, more lines in flight than the fill buffers), and that
            // store stream was 18% of the time of the 160 x 2000 x 2000 product; a group
            // writes 8 streams. Source rows are ld apart, too far for the hardware
            // prefetcher, so the group's part of the row B_PREFETCH_ROWS ahead is fetched
            // while this one is copied.
            let group_len = PANEL_GROUP * panel_len;
            if kc > 0 {
                for (group_index, group) in dst[..full_panels * panel_len]
                    .chunks_mut(group_len)
                    .enumerate()
                {
                    let first_col = cols.start + group_index * PANEL_GROUP * nr;
                    let width = (full_panels - group_index * PANEL_GROUP).min(PANEL_GROUP) * nr;
                    for (step, p) in depth.clone().enumerate() {
                        if p + B_PREFETCH_ROWS < depth.end {
                            let ahead = &b.data()[(p + B_PREFETCH_ROWS) * b.ld() + first_col..];
                            prefetch_tile(ahead, b.ld(), 1, width);
                        }
                        let src_row = &b.data()[p * b.ld() + first_col..][..width];
                        // fixed-size copies for the kernels' NR (a call to memcpy per 64 or
                        // 128 bytes otherwise)
                        match nr {
                            8 => scatter_row::<S, 8>(group, panel_len, step, src_row),
                            16 => scatter_row::<S, 16>(group, panel_len, step, src_row),
                            32 => scatter_row::<S, 32>(group, panel_len, step, src_row),
                            _ => {
                                for (panel, src) in group
                                    .chunks_exact_mut(panel_len)
                                    .zip(src_row.chunks_exact(nr))
                                {
                                    panel[step * nr..][..nr].copy_from_slice(src);
                                }
                            }
                        }
                    }
                }
            }
            if full_panels < panels {
                // the last, partial panel: zero-padded copies
                let panel = &mut dst[full_panels * panel_len..][..panel_len];
                let first_col = cols.start + full_panels * nr;
                let panel_cols = cols.end - first_col;
                for (p, dst_row) in depth.clone().zip(panel.chunks_exact_mut(nr)) {
                    let src = &b.data()[p * b.ld() + first_col..][..panel_cols];
                    match nr {
                        8 => copy_zero_padded::<S, 8>(dst_row, src),
                        16 => copy_zero_padded::<S, 16>(dst_row, src),
                        32 => copy_zero_padded::<S, 32>(dst_row, src),
                        _ => {
                            dst_row[..panel_cols].copy_from_slice(src);
                            dst_row[panel_cols..].fill(S::ZERO);
                        }
                    }
                }
            }
        }
        Transpose::Yes => {
            // Column j of op(B) is row j of storage, contiguous along the depth, so a panel is
            // the transpose of nr source rows. Taking them one whole row at a time, scattering
            // each element with stride nr, issues the row's loads one after another behind
            // those scattered stores (2.2 to 3x the time of the untransposed product for
            // m = 20). Instead the depth goes by steps of four cache lines across all nr rows:
            // the nr runs of a step are first copied to a tile (a few vector loads per row, so
            // that their misses overlap), then the tile is transposed by blocks from L1.
            for (panel_index, panel) in dst.chunks_exact_mut(panel_len).take(panels).enumerate() {
                let first_col = cols.start + panel_index * nr;
                let panel_cols = nr.min(cols.end - first_col);
                let sources = &b.data()[first_col * b.ld() + depth.start..];
                // fixed tile sizes for the kernels' NR: steps of 256 bytes, 8 x 8 blocks of
                // f32 (one AVX2 transpose), 4 x 4 of f64
                match (nr, std::mem::size_of::<S>()) {
                    (8, 8) => transpose_panel::<S, 8, 32, 4>(panel, sources, b.ld(), panel_cols),
                    (16, 8) => transpose_panel::<S, 16, 32, 4>(panel, sources, b.ld(), panel_cols),
                    (16, 4) => transpose_panel::<S, 16, 64, 8>(panel, sources, b.ld(), panel_cols),
                    (32, 4) => transpose_panel::<S, 32, 64, 8>(panel, sources, b.ld(), panel_cols),
                    _ => transpose_panel_any(panel, sources, b.ld(), panel_cols, nr),
                }
            }
        }
    }
}

/// Fills a `kc x NR` micro-panel of op(B) (`kc = panel.len() / NR`, k-major) with the
/// transpose of the first `panel_cols` rows of storage `sources` (row `jj` at `jj * ld`, at
/// least `kc` long each), zeros in the columns past `panel_cols`: `STEP`-deep steps of the
/// depth at a time through an `NR x STEP` tile, transposed by `BLOCK x BLOCK` blocks
/// (`BLOCK` divides `NR` and `STEP`).
#[inline(always)]
fn transpose_panel<S: Float, const NR: usize, const STEP: usize, const BLOCK: usize>(
    panel: &mut [S],
    sources: &[S],
    ld: usize,
    panel_cols: usize,
) {
    // rows past `panel_cols` are never written: they stay the zero padding
    let mut tile = [[S::ZERO; STEP]; NR];
    let (steps, rest) = panel.as_chunks_mut::<NR>();
    // loop over the whole STEP-deep steps of the depth
    let (whole_steps, last_steps) = steps.as_chunks_mut::<STEP>();
    for (step_index, dst_rows) in whole_steps.iter_mut().enumerate() {
        let first_p = step_index * STEP;
        for (jj, tile_row) in tile.iter_mut().enumerate().take(panel_cols) {
            *tile_row = *sources[jj * ld + first_p..]
                .first_chunk::<STEP>()
                .expect("source rows hold the whole depth");
        }
        // loop over the BLOCK x BLOCK blocks of the tile, each transposed as a whole
        for first_jj in (0..NR).step_by(BLOCK) {
            for first_t in (0..STEP).step_by(BLOCK) {
                let block: [[S; BLOCK]; BLOCK] = std::array::from_fn(|r| {
                    *tile[first_jj + r][first_t..]
                        .first_chunk::<BLOCK>()
                        .expect("BLOCK divides STEP")
                });
                let transposed = transpose_block(&block);
                for (dst_row, transposed_row) in dst_rows[first_t..].iter_mut().zip(transposed) {
                    *dst_row[first_jj..]
                        .first_chunk_mut::<BLOCK>()
                        .expect("BLOCK divides NR") = transposed_row;
                }
            }
        }
    }
    debug_assert!(rest.is_empty());
    // the last, partial step
    let first_p = whole_steps.len() * STEP;
    for (t, dst_row) in last_steps.iter_mut().enumerate() {
        for (jj, x) in dst_row.iter_mut().enumerate() {
            *x = if jj < panel_cols {
                sources[jj * ld + first_p + t]
            } else {
                S::ZERO
            };
        }
    }
}

/// The transpose of a square block: with `wide`'s 8 x 8 shuffle network for f32 (the
/// unpack/shuffle/permute sequence of `i32x8::transpose`: bit moves only, so values are
/// unchanged), element by element otherwise (the compiler does not vectorize that form).
#[inline(always)]
fn transpose_block<S: Float, const BLOCK: usize>(
    block: &[[S; BLOCK]; BLOCK],
) -> [[S; BLOCK]; BLOCK] {
    // `S` and `BLOCK` are fixed at monomorphization, so this type test folds away
    let f32_8x8 = (block as &dyn Any)
        .downcast_ref::<[[f32; 8]; 8]>()
        .map(|block| {
            let rows: [wide::i32x8; 8] = bytemuck::cast(*block);
            let columns: [[f32; 8]; 8] = bytemuck::cast(wide::i32x8::transpose(rows));
            columns
        });
    if let Some(columns) = f32_8x8 {
        if let Some(&columns) = (&columns as &dyn Any).downcast_ref::<[[S; BLOCK]; BLOCK]>() {
            return columns;
        }
    }
    std::array::from_fn(|t| std::array::from_fn(|r| block[r][t]))
}

/// [`transpose_panel`] for any `nr` (no tile: one source row at a time).
fn transpose_panel_any<S: Float>(
    panel: &mut [S],
    sources: &[S],
    ld: usize,
    panel_cols: usize,
    nr: usize,
) {
    let kc = panel.len() / nr;
    for jj in 0..nr {
        if jj < panel_cols {
            let src = &sources[jj * ld..][..kc];
            for (dst_row, &x) in panel.chunks_exact_mut(nr).zip(src) {
                dst_row[jj] = x;
            }
        } else {
            for dst_row in panel.chunks_exact_mut(nr) {
                dst_row[jj] = S::ZERO;
            }
        }
    }
}

/// Copies the whole `NR`-wide chunks of one row of B, `src_row`, to row `step` of consecutive
/// micro-panels of `panel_len` scalars in `dst`.
#[inline(always)]
fn scatter_row<S: Copy, const NR: usize>(
    dst: &mut [S],
    panel_len: usize,
    step: usize,
    src_row: &[S],
) {
    let (chunks, _) = src_row.as_chunks::<NR>();
    for (panel, src) in dst.chunks_exact_mut(panel_len).zip(chunks) {
        let dst_row: &mut [S; NR] = (&mut panel[step * NR..][..NR]).try_into().unwrap();
        *dst_row = *src;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distinct, exactly representable values (the element's index + 1), so that a misplaced
    /// or missing copy cannot go unnoticed; storage padding past each row is -1.
    fn stored<S: Float>(rows: usize, cols: usize, ld: usize) -> Vec<S> {
        (0..rows * ld)
            .map(|index| {
                let (r, c) = (index / ld, index % ld);
                S::from_f64(if c < cols {
                    (r * cols + c + 1) as f64
                } else {
                    -1.0
                })
            })
            .collect()
    }

    /// The micro-panel layout written out element by element: in panel `q`, depth step `p`
    /// and lane `l` hold `op(X)(o, p)` for A (`outer_is_row`), `op(X)(p, o)` for B, where
    /// `o = outer.start + q * width + l`; zero when `o` is past `outer.end`.
    fn naive_pack<S: Float>(
        x: MatRef<'_, S>,
        outer: Range<usize>,
        depth: Range<usize>,
        width: usize,
        outer_is_row: bool,
    ) -> Vec<S> {
        let mut packed = Vec::new();
        for q in 0..outer.len().div_ceil(width) {
            for p in depth.clone() {
                for lane in 0..width {
                    let o = outer.start + q * width + lane;
                    packed.push(if o >= outer.end {
                        S::ZERO
                    } else if outer_is_row {
                        x.at(o, p)
                    } else {
                        x.at(p, o)
                    });
                }
            }
        }
        packed
    }

    /// `pack_a` and `pack_b`, both transposes, against [`naive_pack`]: widths of the kernels
    /// and odd ones, ranges starting inside the matrix, depths shorter than, equal to and not a
    /// multiple of a tile step, partial last panels, leading dimensions past the width.
    fn check_packing<S: Float>() {
        let sizes: [usize; 8] = [1, 3, 8, 17, 33, 64, 70, 140];
        // 549: more than one group of PANEL_GROUP B micro-panels at every width, the last
        // group and the last panel partial
        let outer_sizes: [usize; 9] = [1, 3, 8, 17, 33, 64, 70, 140, 549];
        for &width in &[4, 6, 8, 12, 14, 16, 32] {
            for &outer_len in &outer_sizes {
                for &depth_len in &sizes {
                    for trans in [Transpose::No, Transpose::Yes] {
                        // op(X) is (outer_start + outer_len + 2) x (depth_start + depth_len + 3)
                        // for A, its transpose for B; start inside the matrix
                        let (outer_start, depth_start) = (2, 1);
                        let outer_total = outer_start + outer_len + 2;
                        let depth_total = depth_start + depth_len + 3;
                        let outer = outer_start..outer_start + outer_len;
                        let depth = depth_start..depth_start + depth_len;
                        let canary = S::from_f64(-7.0);
                        let len = outer_len.div_ceil(width) * width * depth_len;

                        // op(A) is outer_total x depth_total, op(B) its transpose; the
                        // stored matrices have 5 and 3 columns of padding
                        for (name, outer_is_row, pad) in [("pack_a", true, 5), ("pack_b", false, 3)]
                        {
                            let (op_rows, op_cols) = if outer_is_row {
                                (outer_total, depth_total)
                            } else {
                                (depth_total, outer_total)
                            };
                            let (rows, cols) = match trans {
                                Transpose::No => (op_rows, op_cols),
                                Transpose::Yes => (op_cols, op_rows),
                            };
                            let data = stored::<S>(rows, cols, cols + pad);
                            let x = MatRef::with_ld(&data, rows, cols, cols + pad).op(trans);
                            let mut packed = vec![canary; len + 3];
                            if outer_is_row {
                                pack_a(&mut packed, x, outer.clone(), depth.clone(), width);
                            } else {
                                pack_b(&mut packed, x, depth.clone(), outer.clone(), width);
                            }
                            let expected =
                                naive_pack(x, outer.clone(), depth.clone(), width, outer_is_row);
                            assert!(
                                packed[..len] == expected[..] && packed[len..] == [canary; 3],
                                "{name} {} {trans:?} width {width} outer {outer:?} depth {depth:?}",
                                S::NAME
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn packing_matches_naive_packing_f32_and_f64() {
        check_packing::<f32>();
        check_packing::<f64>();
    }
}
