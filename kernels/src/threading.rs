//! Threading policy shared by the kernels.
//!
//! Kernels run on the current rayon pool (callers choose its size, e.g. with
//! `rayon::ThreadPoolBuilder::new().num_threads(n).build()?.install(..)`). Work is split into
//! chunks whose boundaries depend only on the problem shape, never on the pool size, so every
//! output element has the same reduction order whatever the thread count. In this crate the
//! kernels go further: each output element's arithmetic does not depend on the chunking at all
//! (a row, or a column, is always reduced whole by one thread in one fixed order), so whether a
//! call runs parallel or not cannot change a single bit.

/// Problems with fewer multiply-adds than this stay on the calling thread: rayon's per-call
/// overhead (a few microseconds) dominates below it.
pub const PARALLEL_MIN_FLOPS: usize = 1 << 18;

/// Target number of matrix elements per parallel task for streaming kernels (row blocks of
/// softmax / layer norm / GEMV / GER, column blocks of transposed GEMV and column sums): large
/// enough that scheduling costs are negligible, small enough to balance over many cores.
pub const CHUNK_ELEMS: usize = 1 << 15;

/// Number of threads of the current rayon pool.
pub fn current_threads() -> usize {
    rayon::current_num_threads()
}

/// Whether a problem of `work` element operations should be split over the rayon pool.
pub fn parallel(work: usize) -> bool {
    work >= PARALLEL_MIN_FLOPS && current_threads() > 1
}

/// Rows per task for a row-blocked kernel over rows of `cols` elements: a function of the
/// shape only, and a multiple of 8 so that kernels which group rows by SIMD width (softmax of
/// short rows takes 8 f32 / 4 f64 rows per vector) form the same groups whether they run on one
/// thread or many.
pub fn rows_per_chunk(cols: usize) -> usize {
    (CHUNK_ELEMS / cols.max(1)).div_ceil(8).max(1) * 8
}

/// Columns per task for a column-blocked kernel over `rows` rows, a multiple of 64 (whole SIMD
/// vectors and cache lines in every block but the last): a function of the shape only.
pub fn cols_per_chunk(rows: usize) -> usize {
    ((CHUNK_ELEMS / rows.max(1)) / 64).max(1) * 64
}

/// Run `block(first_row, out_rows)` over `out`, made of whole rows of `cols` elements, in fixed
/// blocks of [`rows_per_chunk`] rows on the rayon pool when `work` is large enough, else in one
/// call on this thread. `block` must compute each row independently of the blocking.
pub(crate) fn for_row_blocks<T: Send>(
    cols: usize,
    work: usize,
    out: &mut [T],
    block: impl Fn(usize, &mut [T]) + Sync,
) {
    if cols == 0 || out.is_empty() {
        return;
    }
    let rb = rows_per_chunk(cols);
    for_parts(out, parallel(work), (rb * cols, rb), block);
}

/// Run `block(first, part)` over `out` cut into fixed parts of `part_len` elements, part `b`
/// starting at unit (row or column) `first = b * units_per_part`, on the rayon pool when
/// `in_parallel`; else in one call on this thread over all of `out` with `first = 0`. `block`
/// must compute each unit independently of the parts, so both give the same bits.
pub(crate) fn for_parts<T: Send>(
    out: &mut [T],
    in_parallel: bool,
    (part_len, units_per_part): (usize, usize),
    block: impl Fn(usize, &mut [T]) + Sync,
) {
    use rayon::prelude::*;
    if in_parallel {
        out.par_chunks_mut(part_len)
            .enumerate()
            .for_each(|(b, part)| block(b * units_per_part, part));
    } else {
        block(0, out);
    }
}
