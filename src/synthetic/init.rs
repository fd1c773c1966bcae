//! The initial `W_0`, entrywise `U(-1/sqrt(d), 1/sqrt(d))` (default) or `N(0, 1/(3d))`, from a
//! counter-based stream.
//!
//! Uniform: row `i` of `W_0` is the ChaCha8 stream number `i` under the key `mix_seed(seed,
//! "w0")` (`rand_chacha`'s `ChaCha8Rng` seeded with it, `set_stream(i)`): entry `(i, j)` comes
//! from the `j`-th 32-bit word of that stream, mapped to the midpoint of its cell,
//! `(2 (u + 1/2) / 2^32 - 1) / sqrt(d)`. The words come from the kernels crate's sixteen-block
//! ChaCha8 ([`benign_kernels::random`]), which is that stream word for word.
//!
//! Gaussian: row `i` is the ChaCha8 stream number `i` under the key `mix_seed(seed,
//! "w0-gaussian")` (a different key, so the two laws never share words); its entries are the
//! successive `StandardNormal` draws (rand_distr's ziggurat, which consumes a variable number of
//! words per draw) of that stream from word 0, times `1 / sqrt(3d)`, the variance of the uniform
//! draw. A row is therefore still a function of `(seed, i)` alone.
//!
//! Either way any block of rows can be generated on its own, in parallel, bit-identically: the
//! dense trainer (which stores `W`) and the subspace trainer (which streams `W_0` twice and never
//! stores it) see the same matrix. The uniform stream also gives any rectangle on its own (entry
//! `(i, j)` is word `j` of stream `i`, and ChaCha seeks to a word in constant time), which is what
//! lets [`init_products`] stream `W_0` in tiles that stay in cache.
//!
//! # The start-up products
//!
//! The subspace trainer needs `A = W_0^T B` and `H = W_0 A` (docs/model.md section 4): two passes
//! over `W_0`, `2 d^2 r` multiply-adds, `d^2` stream words each. [`init_products`] computes them:
//!
//! - With the uniform stream (or a given matrix) both passes run on tiles `W0[I, J]`, each
//!   generated straight into the GEMM's packed B micro-panels
//!   ([`kernels::gemm::gemm_prepacked_b`], layouts [`BlockLayout`]), so every entry is written
//!   once, where the microkernel reads it, instead of into a tile that the GEMM then copies.
//!   Both products are computed transposed for that (`A^T = B^T W_0`, `H^T = A^T W_0^T`, then
//!   transposed back): a B micro-panel is NR = 16 (f64) consecutive columns of C, and sixteen
//!   is the number of ChaCha8 streams (rows of `W_0`) and of words (columns) that one call of
//!   the block function gives. `fma(a, b, c) = fma(b, a, c)`, so each element is the same FMA
//!   chain either way.
//!   Pass 1 sums `A[J, :] = sum_I W0[I, J]^T B[I, :]` over row blocks `I` of `block_rows`
//!   rows (all of `d` when `W_0` fits in [`INIT_BLOCK_BYTES`]), one column block `J` a worker,
//!   its rows `A[J, :]` (a few hundred KB) kept in cache while every row block adds to it;
//!   pass 2 forms `H[I, :]` for a row block `I` a worker, every column block `J`, `KC`
//!   columns (the GEMM kernel's panel depth), adding to it. Generating `W0[I, :]` whole
//!   instead made pass 1 read and write all of `A` (`d x r`, 65 MB at d = 100,000) once per
//!   row block, and pass 2 pack all of `A` once per row block; generating all of `W_0` once
//!   when it fits made both GEMMs pack it from memory. Pass 2 generates its tiles again
//!   rather than reading them from a `W_0` stored in pass 1: the tiles are generated in
//!   cache, whereas a stored `W_0` (200 MB at d = 5,000) is written to memory and read back,
//!   and that traffic costs more than the ChaCha8 words it saves.
//! - The Gaussian stream cannot be cut into columns (a draw consumes a variable number of
//!   words), so it generates whole row blocks and multiplies them by ordinary GEMMs.
//!
//! The tiles change no bit against the row-block GEMMs: pass 1 keeps the row blocks and cuts
//! each into the KC-deep panels the GEMM over it would (so each element of `A` sums the same
//! runs in the same order, each panel added to `C` by the same `beta = 1` step), and pass 2's
//! column blocks are whole KC panels (so `H`'s element sums the same panels in the same order
//! as one GEMM over all of `d`). The prepacked GEMM is the packed path's arithmetic, which the
//! row-block form took at these sizes, except for a last row block short enough (`m r d` at
//! most `DIRECT_MAX_MULADDS`) that its GEMMs took the direct path: its rows are computed as the
//! row-block form computes them.

use std::ops::Range;

use benign_kernels::gemm::{current_variant, with_gemm_path, with_kernel_variant, GemmPath};
use benign_kernels::{self as kernels, random, Float, MatMut, MatRef, Transpose};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use rayon::prelude::*;

use super::config::{InitKind, RunConfig};
use super::subspace::INIT_BLOCK_BYTES;
use crate::seed::mix_seed;

/// Rows of `H` (and of a pass-2 tile) per worker come in multiples of this: a multiple of the
/// AVX-512 kernels' NR (16 f64, 32 f32 columns of the transposed product), so the GEMM's
/// B micro-panels have no zero padding.
const H_ROWS_QUANTUM: usize = 160;

/// At most this many [`H_ROWS_QUANTUM`]s of rows (pass 2) or KC-wide column blocks (pass 1) per
/// task. Each pass-2 GEMM packs its `A[J, :]` (KC x r, read from memory: `A` is far larger than
/// the caches) and each pass-1 GEMM its `B[I, :]`; taller or wider tasks share that packing
/// among more multiply-adds. Four keeps a tile under 1.1 MB, so it stays in L2 next to its
/// accumulator.
const MAX_QUANTA_PER_TASK: usize = 4;

/// Quanta per task for `units` quanta of work on the current pool: as many as keep four tasks per
/// thread (so the threads stay balanced), between 1 and [`MAX_QUANTA_PER_TASK`]. Only speed
/// depends on it: neither pass's arithmetic depends on how its rows or columns are split.
fn quanta_per_task(units: usize) -> usize {
    (units / (4 * rayon::current_num_threads())).clamp(1, MAX_QUANTA_PER_TASK)
}

/// Where `W_0` comes from.
#[derive(Clone, Debug)]
pub enum InitSource {
    /// Generated from the counter-based stream of a seed.
    Stream {
        /// The run seed the stream is derived from.
        seed: u64,
        /// Dimension d of the `d x d` matrix.
        dim: usize,
        /// The entrywise law.
        kind: InitKind,
    },
    /// Given explicitly (d x d row-major), e.g. loaded from `w0.npy`.
    Matrix {
        /// Dimension d.
        dim: usize,
        /// The `d^2` entries, row-major.
        values: Vec<f64>,
    },
}

impl InitSource {
    /// The uniform stream of a run seed.
    pub fn from_seed(seed: u64, dim: usize) -> Self {
        Self::from_seed_with(seed, dim, InitKind::Uniform)
    }

    /// The stream of a run seed with the given entrywise law.
    pub fn from_seed_with(seed: u64, dim: usize, kind: InitKind) -> Self {
        InitSource::Stream { seed, dim, kind }
    }

    /// The stream a configuration names (its seed, `d` and `init`).
    pub fn from_config(config: &RunConfig) -> Self {
        Self::from_seed_with(config.seed, config.dim, config.init)
    }

    /// Dimension d of the `d x d` matrix.
    pub fn dim(&self) -> usize {
        match self {
            InitSource::Stream { dim, .. } | InitSource::Matrix { dim, .. } => *dim,
        }
    }

    /// Writes rows `first .. first + out.len() / d` of `W_0` into `out` (row-major).
    pub fn fill_rows<T: Float>(&self, first: usize, out: &mut [T]) {
        let d = self.dim();
        assert_eq!(out.len() % d, 0, "out must hold whole rows");
        match self {
            InitSource::Stream {
                seed,
                kind: InitKind::Gaussian,
                ..
            } => {
                let key = chacha_key(mix_seed(*seed, "w0-gaussian"));
                let scale = 1.0 / (3.0 * d as f64).sqrt();
                out.par_chunks_mut(d).enumerate().for_each(|(r, row)| {
                    let mut rng = ChaChaStream::new(&key, (first + r) as u64);
                    for cell in row.iter_mut() {
                        let e: f64 = rng.sample(StandardNormal);
                        *cell = T::from_f64(e * scale);
                    }
                });
            }
            InitSource::Stream { seed, .. } => {
                let key = uniform_key(*seed);
                out.par_chunks_mut(d).enumerate().for_each(|(r, row)| {
                    uniform_segment(&key, d, first + r, 0, row);
                });
            }
            InitSource::Matrix { values, .. } => {
                let (start, len) = (first * d, out.len());
                for (o, &v) in out.iter_mut().zip(&values[start..start + len]) {
                    *o = T::from_f64(v);
                }
            }
        }
    }

    /// The whole matrix (only for dense training and tests).
    pub fn matrix<T: Float>(&self) -> Vec<T> {
        let d = self.dim();
        let mut w = vec![T::ZERO; d * d];
        self.fill_rows(0, &mut w);
        w
    }

    /// Whether [`InitSource::fill_block`] can give any rectangle: the uniform stream (entry
    /// `(i, j)` is one word at a known position) and a given matrix, not the Gaussian stream.
    pub fn has_random_access(&self) -> bool {
        !matches!(
            self,
            InitSource::Stream {
                kind: InitKind::Gaussian,
                ..
            }
        )
    }

    /// Writes the block `rows x cols` of `W_0` into `out` in `layout` (entry `(i, j)` of `W_0`
    /// at [`BlockLayout::offset`]`(i - rows.start, j - cols.start)`, the padding of GEMM
    /// micro-panels zero), on the calling thread; the values are those
    /// [`InitSource::fill_rows`] gives. The uniform stream comes sixteen rows (streams) at a
    /// time, one column (word) per vector ([`random::chacha8_streams`]), so each word goes
    /// straight to its place in the layout.
    ///
    /// # Panics
    ///
    /// If `out` is not [`BlockLayout::len`] long, the block leaves the matrix, or the source has
    /// no random access (the Gaussian stream).
    pub fn fill_block<T: Float>(
        &self,
        rows: Range<usize>,
        cols: Range<usize>,
        layout: BlockLayout,
        out: &mut [T],
    ) {
        let d = self.dim();
        let shape = (rows.len(), cols.len());
        assert!(rows.end <= d && cols.end <= d, "the block leaves W_0");
        assert_eq!(out.len(), layout.len(shape), "out must hold the block");
        if out.is_empty() {
            return;
        }
        layout.zero_padding(shape, out);
        match self {
            InitSource::Stream {
                kind: InitKind::Gaussian,
                ..
            } => panic!("the Gaussian W_0 stream has no random access to columns"),
            InitSource::Stream { seed, .. } => {
                let key = uniform_key(*seed);
                let cell = UniformCell::new(d);
                let mut words = [0u32; 16 * random::STREAMS];
                let mut values = [T::ZERO; 16 * random::STREAMS];
                // loop over groups of sixteen rows (one ChaCha stream per vector lane)
                for first_row in rows.clone().step_by(random::STREAMS) {
                    let lanes = (rows.end - first_row).min(random::STREAMS);
                    let group = first_row - rows.start;
                    // loop over the 16-word blocks the columns touch
                    for block in cols.start / 16..cols.end.div_ceil(16) {
                        random::chacha8_streams(&key, first_row as u64, block as u64, &mut words);
                        let first_col = (16 * block).max(cols.start);
                        let (skip, width) = (
                            first_col - 16 * block,
                            (16 * block + 16).min(cols.end) - first_col,
                        );
                        let col0 = first_col - cols.start;
                        // A whole 16 x 16 block that is one micro-panel's run of 256 scalars
                        // (f64's NR is 16): converted straight into place.
                        let full = lanes == 16 && width == 16;
                        match layout {
                            BlockLayout::RowPanels { size: 16 }
                                if full && group.is_multiple_of(16) =>
                            {
                                // word-major, as the words come
                                let at = layout.offset((group, col0), shape);
                                for (o, &u) in out[at..][..256].iter_mut().zip(&words) {
                                    *o = cell.value(u);
                                }
                                continue;
                            }
                            BlockLayout::ColumnPanels { size: 16 }
                                if full && col0.is_multiple_of(16) =>
                            {
                                // stream-major: the words transposed
                                let at = layout.offset((group, col0), shape);
                                for (l, row) in out[at..][..256].chunks_exact_mut(16).enumerate() {
                                    for (w, o) in row.iter_mut().enumerate() {
                                        *o = cell.value(words[w * random::STREAMS + l]);
                                    }
                                }
                                continue;
                            }
                            _ => {}
                        }
                        if layout.columns_contiguous() {
                            // stream by stream: row `group + l` of the block, `width` columns
                            for (w, column) in words.chunks_exact(random::STREAMS).enumerate() {
                                for (l, &u) in column.iter().enumerate() {
                                    values[l * 16 + w] = cell.value(u);
                                }
                            }
                            for l in 0..lanes {
                                let at = layout.row_offset(group + l, shape);
                                let row = &values[l * 16 + skip..][..width];
                                layout.copy_runs(col0, row, |offset, run| {
                                    out[at + layout.col_offset(offset, shape)..][..run.len()]
                                        .copy_from_slice(run)
                                });
                            }
                        } else {
                            // word by word: column `col0 + w` of the block, `lanes` rows
                            for (v, &u) in values.iter_mut().zip(&words) {
                                *v = cell.value(u);
                            }
                            for w in 0..width {
                                let at = layout.col_offset(col0 + w, shape);
                                let column = &values[(skip + w) * random::STREAMS..][..lanes];
                                layout.copy_runs(group, column, |offset, run| {
                                    out[at + layout.row_offset(offset, shape)..][..run.len()]
                                        .copy_from_slice(run)
                                });
                            }
                        }
                    }
                }
            }
            InitSource::Matrix { values, .. } => {
                for (i, row) in rows.clone().enumerate() {
                    let at = layout.row_offset(i, shape);
                    for (j, &v) in values[row * d + cols.start..row * d + cols.end]
                        .iter()
                        .enumerate()
                    {
                        out[at + layout.col_offset(j, shape)] = T::from_f64(v);
                    }
                }
            }
        }
    }
}

/// How [`InitSource::fill_block`] lays out a block of `height x width` entries of `W_0`: entry
/// `(i, j)` of the block at `row_offset(i) + col_offset(j)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockLayout {
    /// Transposed: column by column, `(i, j)` at `j height + i`.
    Transposed,
    /// The block's transpose as a GEMM's B operand (the block's columns the depth, its rows
    /// N), packed as [`kernels::gemm::gemm_prepacked_b`] reads it: micro-panels of `size`
    /// rows, `(i, j)` at `(i / size) width size + j size + i % size`, rows past `height` zero.
    RowPanels {
        /// Rows per micro-panel, the GEMM kernel's NR.
        size: usize,
    },
    /// The block as a GEMM's B operand (its rows the depth, its columns N), packed the same
    /// way: `(i, j)` at `(j / size) height size + i size + j % size`, columns past `width`
    /// zero.
    ColumnPanels {
        /// Columns per micro-panel, the GEMM kernel's NR.
        size: usize,
    },
}

impl BlockLayout {
    /// Scalars the layout of a `(height, width)` block takes, padding included.
    pub fn len(self, (height, width): (usize, usize)) -> usize {
        match self {
            BlockLayout::Transposed => height * width,
            BlockLayout::RowPanels { size } => height.div_ceil(size) * size * width,
            BlockLayout::ColumnPanels { size } => width.div_ceil(size) * size * height,
        }
    }

    /// The part of entry `(i, j)`'s offset that depends on its row `i`.
    fn row_offset(self, i: usize, (height, width): (usize, usize)) -> usize {
        match self {
            BlockLayout::Transposed => i,
            BlockLayout::RowPanels { size } => i / size * width * size + i % size,
            BlockLayout::ColumnPanels { size } => {
                debug_assert!(i < height);
                i * size
            }
        }
    }

    /// The part of entry `(i, j)`'s offset that depends on its column `j`.
    fn col_offset(self, j: usize, (height, _): (usize, usize)) -> usize {
        match self {
            BlockLayout::Transposed => j * height,
            BlockLayout::RowPanels { size } => j * size,
            BlockLayout::ColumnPanels { size } => j / size * height * size + j % size,
        }
    }

    /// Whether consecutive columns of a row are adjacent in the layout (within a micro-panel),
    /// rather than consecutive rows of a column.
    fn columns_contiguous(self) -> bool {
        matches!(self, BlockLayout::ColumnPanels { .. })
    }

    /// Calls `copy(index, run)` for the runs of `values` (entries `first ..` along the
    /// contiguous direction) that stay adjacent in the layout: within one micro-panel.
    fn copy_runs<T>(self, first: usize, values: &[T], mut copy: impl FnMut(usize, &[T])) {
        let mut done = 0;
        while done < values.len() {
            let index = first + done;
            let room = match self {
                BlockLayout::Transposed => values.len(),
                BlockLayout::RowPanels { size } | BlockLayout::ColumnPanels { size } => {
                    size - index % size
                }
            };
            let run = &values[done..(done + room).min(values.len())];
            copy(index, run);
            done += run.len();
        }
    }

    /// Offset of entry `(i, j)` of a `(height, width)` block.
    pub fn offset(self, (i, j): (usize, usize), shape: (usize, usize)) -> usize {
        self.row_offset(i, shape) + self.col_offset(j, shape)
    }

    /// Zeroes the padding of the last micro-panel (rows or columns past the block).
    fn zero_padding<T: Float>(self, (height, width): (usize, usize), out: &mut [T]) {
        let shape = (height, width);
        match self {
            BlockLayout::Transposed => {}
            BlockLayout::RowPanels { size } => {
                for i in height..height.next_multiple_of(size) {
                    for j in 0..width {
                        out[self.offset((i, j), shape)] = T::ZERO;
                    }
                }
            }
            BlockLayout::ColumnPanels { size } => {
                for j in width..width.next_multiple_of(size) {
                    for i in 0..height {
                        out[self.offset((i, j), shape)] = T::ZERO;
                    }
                }
            }
        }
    }
}

/// The map from a stream word to a uniform `W_0` entry at dimension d: the midpoint of the
/// word's cell of `[-1/sqrt(d), 1/sqrt(d))`.
#[derive(Clone, Copy)]
struct UniformCell {
    scale: f64,
    bound: f64,
}

impl UniformCell {
    fn new(d: usize) -> Self {
        UniformCell {
            scale: 2.0 / (d as f64).sqrt() / 4_294_967_296.0,
            bound: 1.0 / (d as f64).sqrt(),
        }
    }

    #[inline]
    fn value<T: Float>(self, word: u32) -> T {
        T::from_f64((f64::from(word) + 0.5) * self.scale - self.bound)
    }
}

/// The key of the uniform `W_0`'s stream for a run seed: `ChaCha8Rng`'s 32-byte seed under
/// `mix_seed(seed, "w0")`, as little-endian words.
fn uniform_key(seed: u64) -> [u32; 8] {
    chacha_key(mix_seed(seed, "w0"))
}

/// The 32-byte seed of `ChaCha8Rng::seed_from_u64(seed)` as little-endian words, the key
/// [`random`] and [`ChaChaStream`] take.
pub(crate) fn chacha_key(seed: u64) -> [u32; 8] {
    let bytes = ChaCha8Rng::seed_from_u64(seed).get_seed();
    std::array::from_fn(|i| {
        u32::from_le_bytes([
            bytes[4 * i],
            bytes[4 * i + 1],
            bytes[4 * i + 2],
            bytes[4 * i + 3],
        ])
    })
}

/// Words per refill of a [`ChaChaStream`]: sixteen blocks, what one call of the block function
/// computes.
const STREAM_BUFFER_WORDS: usize = 16 * random::STREAMS;

/// One ChaCha8 stream read from word 0 as a random number generator: the words, `u32`s, `u64`s
/// and bytes of `ChaCha8Rng::seed_from_u64(seed)` after `set_stream(stream)` and
/// `set_word_pos(0)` (key [`chacha_key`]`(seed)`), in the same order, so any distribution samples
/// the same values from it. The words come sixteen blocks at a time from
/// [`random::chacha8_keystream`] (one 512-bit vector per state word where the CPU has AVX-512)
/// instead of `rand_chacha`'s four.
pub(crate) struct ChaChaStream {
    key: [u32; 8],
    stream: u64,
    /// Stream position of the first word the next refill reads.
    next_refill: u64,
    words: [u32; STREAM_BUFFER_WORDS],
    /// Next unread entry of `words` (`STREAM_BUFFER_WORDS` when a refill is due).
    at: usize,
}

impl ChaChaStream {
    /// Stream number `stream` under `key`, at word 0.
    pub(crate) fn new(key: &[u32; 8], stream: u64) -> Self {
        ChaChaStream {
            key: *key,
            stream,
            next_refill: 0,
            words: [0; STREAM_BUFFER_WORDS],
            at: STREAM_BUFFER_WORDS,
        }
    }
}

impl rand::RngCore for ChaChaStream {
    fn next_u32(&mut self) -> u32 {
        if self.at == STREAM_BUFFER_WORDS {
            random::chacha8_keystream(&self.key, self.stream, self.next_refill, &mut self.words);
            self.next_refill += STREAM_BUFFER_WORDS as u64;
            self.at = 0;
        }
        let word = self.words[self.at];
        self.at += 1;
        word
    }

    /// Two words, the first in the low half (`BlockRng`'s order, across refills too).
    fn next_u64(&mut self) -> u64 {
        let low = u64::from(self.next_u32());
        let high = u64::from(self.next_u32());
        (high << 32) | low
    }

    /// One word per four bytes, little-endian; a last partial word is used up (`BlockRng`'s).
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        for chunk in dst.chunks_mut(4) {
            let bytes = self.next_u32().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

/// Entries `(row, first_col ..)` of the uniform `W_0` (as many as `out` holds): word
/// `first_col + c` of stream `row` under `key`, mapped to the midpoint of its cell.
fn uniform_segment<T: Float>(
    key: &[u32; 8],
    d: usize,
    row: usize,
    first_col: usize,
    out: &mut [T],
) {
    let cell = UniformCell::new(d);
    let mut words = [0u32; 1024];
    for (chunk, cells) in out.chunks_mut(words.len()).enumerate() {
        let words = &mut words[..cells.len()];
        let first_word = first_col + chunk * 1024;
        random::chacha8_keystream(key, row as u64, first_word as u64, words);
        for (entry, &u) in cells.iter_mut().zip(words.iter()) {
            *entry = cell.value(u);
        }
    }
}

/// The start-up products with `W_0` (see the module docs), shared by the subspace trainer and
/// the common-random-numbers column. `projector` is d x `width` row-major and holds the
/// orthonormal basis `B` in columns `r..2r`; this writes `H = W_0 A` into columns `0..r` and
/// returns `G = A^T A` (r x r), with `A = W_0^T B`.
pub fn init_products<S: Float>(
    init: &InitSource,
    projector: &mut [S],
    width: usize,
    r: usize,
) -> Vec<S> {
    let d = init.dim();
    debug_assert!(projector.len() == d * width && width >= 2 * r);
    let block_rows = (INIT_BLOCK_BYTES / (std::mem::size_of::<S>() * d)).clamp(1, d);
    let a = if init.has_random_access() {
        products_by_tiles(init, projector, width, r, block_rows)
    } else {
        products_by_row_blocks(init, projector, width, r, block_rows)
    };
    let mut gram = vec![S::ZERO; r * r];
    kernels::gemm(
        S::ONE,
        MatRef::new(&a, d, r).transpose(),
        MatRef::new(&a, d, r),
        S::ZERO,
        MatMut::new(&mut gram, r, r),
    );
    gram
}

/// Both passes over whole row blocks of `W_0` (generated once when one block holds it), by
/// ordinary GEMMs: the form of the Gaussian stream, and the reference the tiled form is tested
/// against; returns `A` and writes `H`.
fn products_by_row_blocks<S: Float>(
    init: &InitSource,
    projector: &mut [S],
    width: usize,
    r: usize,
    block_rows: usize,
) -> Vec<S> {
    let d = init.dim();
    let whole = block_rows == d;
    let mut w0_block = vec![S::ZERO; block_rows * d];
    let mut a = vec![S::ZERO; d * r];
    for first in (0..d).step_by(block_rows) {
        let m = block_rows.min(d - first);
        let blk = &mut w0_block[..m * d];
        init.fill_rows(first, blk);
        kernels::gemm(
            S::ONE,
            MatRef::new(blk, m, d).transpose(),
            MatRef::with_ld(&projector[first * width + r..], m, r, width),
            if first == 0 { S::ZERO } else { S::ONE },
            MatMut::new(&mut a, d, r),
        );
    }
    for first in (0..d).step_by(block_rows) {
        let m = block_rows.min(d - first);
        let blk = &mut w0_block[..m * d];
        if !whole {
            init.fill_rows(first, blk);
        }
        kernels::gemm(
            S::ONE,
            MatRef::new(blk, m, d),
            MatRef::new(&a, d, r),
            S::ZERO,
            MatMut::with_ld(&mut projector[first * width..], m, r, width),
        );
    }
    a
}

/// Both passes over tiles of `W_0` (see the module docs); returns `A` and writes `H`,
/// bit-identical to [`products_by_row_blocks`] with the same `block_rows`.
fn products_by_tiles<S: Float>(
    init: &InitSource,
    projector: &mut [S],
    width: usize,
    r: usize,
    block_rows: usize,
) -> Vec<S> {
    let d = init.dim();
    // The workers make their GEMM calls with the caller's kernel (the override is per thread)
    // and on the packed path, whatever the tile shapes.
    let variant = current_variant();
    let kernels::gemm::Blocking { nr, kc, .. } = kernels::gemm::blocking::<S>(variant);
    let on_packed_path =
        |f: &mut dyn FnMut()| with_kernel_variant(variant, || with_gemm_path(GemmPath::Packed, f));

    // The row-block form's last block, when so short that its two GEMMs (m x r x d) took the
    // direct path and so another summation grouping, is computed as that form computes it.
    let tail_first = (d - 1) / block_rows * block_rows;
    let tail_direct = kernels::gemm::use_direct(Transpose::No, d - tail_first, r, d);
    let tiled_rows = if tail_direct { tail_first } else { d };

    // pass 1: A[J, :] = sum over row blocks I of W0[I, J]^T B[I, :], one column block J a task,
    // computed transposed, A[J, :]^T = sum_I B[I, :]^T W0[I, J], so that each row block's
    // KC-deep panels of W0[I, J] are generated straight into the GEMM's B micro-panels
    let mut a = vec![S::ZERO; d * r];
    let basis: &[S] = projector;
    let tile_cols = kc * quanta_per_task(d.div_ceil(kc));
    let column_panels = BlockLayout::ColumnPanels { size: nr };
    let tail_tile = if tail_direct {
        (d - tail_first) * tile_cols
    } else {
        0
    };
    // One panel buffer and one transposed accumulator per worker, reused by its tasks: every
    // fill writes all of its part, and the first depth panel overwrites the accumulator.
    a.par_chunks_mut(tile_cols * r).enumerate().for_each_init(
        || {
            let panels = column_panels.len((kc, tile_cols)).max(tail_tile);
            (vec![S::ZERO; panels], vec![S::ZERO; r * tile_cols])
        },
        |(buffer, a_t), (task, a_rows)| {
            let cols = task * tile_cols..d.min((task + 1) * tile_cols);
            let a_t = &mut a_t[..r * cols.len()];
            on_packed_path(&mut || {
                for first in (0..tiled_rows).step_by(block_rows) {
                    let rows = first..d.min(first + block_rows);
                    // the depth panels of the row block, as the GEMM over it sums them
                    for depth_first in rows.clone().step_by(kc) {
                        let depth = depth_first..rows.end.min(depth_first + kc);
                        let shape = (depth.len(), cols.len());
                        let panels = &mut buffer[..column_panels.len(shape)];
                        init.fill_block(depth.clone(), cols.clone(), column_panels, panels);
                        let basis_rows = MatRef::with_ld(
                            &basis[depth.start * width + r..],
                            depth.len(),
                            r,
                            width,
                        );
                        kernels::gemm::gemm_prepacked_b(
                            S::ONE,
                            basis_rows.transpose(),
                            panels,
                            cols.len(),
                            if depth.start == 0 { S::ZERO } else { S::ONE },
                            MatMut::new(a_t, r, cols.len()),
                        );
                    }
                }
                if tiled_rows > 0 {
                    transpose_into(a_t, (r, cols.len()), a_rows, r);
                }
                if tail_direct {
                    // the row-block form's direct-path GEMM, on the block as a matrix
                    let rows = tail_first..d;
                    let tile = &mut buffer[..rows.len() * cols.len()];
                    init.fill_block(rows.clone(), cols.clone(), BlockLayout::Transposed, tile);
                    with_gemm_path(GemmPath::Direct, || {
                        kernels::gemm(
                            S::ONE,
                            MatRef::new(tile, cols.len(), rows.len()),
                            MatRef::with_ld(&basis[tail_first * width + r..], rows.len(), r, width),
                            if tail_first == 0 { S::ZERO } else { S::ONE },
                            MatMut::new(a_rows, cols.len(), r),
                        )
                    });
                }
            });
        },
    );

    // pass 2: H[I, :] = sum over column blocks J of W0[I, J] A[J, :], one row block I a task,
    // computed transposed, H[I, :]^T = sum_J A[J, :]^T W0[I, J]^T; the column blocks are single
    // KC panels, generated straight into the B micro-panels
    let task_rows = H_ROWS_QUANTUM * quanta_per_task(d.div_ceil(H_ROWS_QUANTUM));
    let row_panels = BlockLayout::RowPanels { size: nr };
    let (h_tiled, h_tail) = projector.split_at_mut(tiled_rows * width);
    h_tiled
        .par_chunks_mut(task_rows * width)
        .enumerate()
        // one panel buffer and one transposed accumulator per worker, as in pass 1
        .for_each_init(
            || {
                let panels = row_panels.len((task_rows, kc));
                (vec![S::ZERO; panels], vec![S::ZERO; r * task_rows])
            },
            |(buffer, h_t), (task, h_rows)| {
                let rows = task * task_rows..tiled_rows.min((task + 1) * task_rows);
                let h_t = &mut h_t[..r * rows.len()];
                on_packed_path(&mut || {
                    for first in (0..d).step_by(kc) {
                        let cols = first..d.min(first + kc);
                        let shape = (rows.len(), cols.len());
                        let panels = &mut buffer[..row_panels.len(shape)];
                        init.fill_block(rows.clone(), cols.clone(), row_panels, panels);
                        kernels::gemm::gemm_prepacked_b(
                            S::ONE,
                            MatRef::new(&a[first * r..], cols.len(), r).transpose(),
                            panels,
                            rows.len(),
                            if first == 0 { S::ZERO } else { S::ONE },
                            MatMut::new(h_t, r, rows.len()),
                        );
                    }
                });
                transpose_into(h_t, (r, rows.len()), h_rows, width);
            },
        );
    if tail_direct {
        let m = d - tail_first;
        let mut w0_rows = vec![S::ZERO; m * d];
        init.fill_rows(tail_first, &mut w0_rows);
        kernels::gemm(
            S::ONE,
            MatRef::new(&w0_rows, m, d),
            MatRef::new(&a, d, r),
            S::ZERO,
            MatMut::with_ld(h_tail, m, r, width),
        );
    }
    a
}

/// Writes the transpose of `source` (`rows x cols`, row-major) into the first `rows` columns of
/// `dest`, whose rows are `ld` apart.
fn transpose_into<S: Copy>(source: &[S], (rows, cols): (usize, usize), dest: &mut [S], ld: usize) {
    // blocks of 16 x 16, so that both sides stay in a few cache lines per block
    const BLOCK: usize = 16;
    for row0 in (0..rows).step_by(BLOCK) {
        for col0 in (0..cols).step_by(BLOCK) {
            for row in row0..rows.min(row0 + BLOCK) {
                for col in col0..cols.min(col0 + BLOCK) {
                    dest[col * ld + row] = source[row * cols + col];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use benign_kernels::gemm::KernelVariant;

    #[test]
    fn blocks_hold_the_rows_entries_in_every_layout() {
        let d = 300;
        let uniform = InitSource::from_seed(7, d);
        let whole: Vec<f64> = uniform.matrix();
        let given = InitSource::Matrix {
            dim: d,
            values: whole.clone(),
        };
        let layouts = [
            BlockLayout::Transposed,
            BlockLayout::RowPanels { size: 16 },
            BlockLayout::ColumnPanels { size: 16 },
            BlockLayout::ColumnPanels { size: 6 },
        ];
        // rows and columns that start and end inside a 16-row group, a 16-word block and a
        // micro-panel
        for source in [&uniform, &given] {
            for (rows, cols) in [(0..300, 0..300), (5..38, 17..250), (290..300, 299..300)] {
                for layout in layouts {
                    let shape = (rows.len(), cols.len());
                    let mut block = vec![f64::NAN; layout.len(shape)];
                    source.fill_block(rows.clone(), cols.clone(), layout, &mut block);
                    let mut written = vec![false; block.len()];
                    for (i, row) in rows.clone().enumerate() {
                        for (j, col) in cols.clone().enumerate() {
                            let at = layout.offset((i, j), shape);
                            assert_eq!(block[at], whole[row * d + col], "{layout:?}");
                            written[at] = true;
                        }
                    }
                    // everything else is the micro-panels' zero padding
                    for (at, value) in block.iter().enumerate() {
                        assert!(written[at] || *value == 0.0, "{layout:?}: {at} is {value}");
                    }
                }
            }
        }
        assert!(!InitSource::from_seed_with(7, d, InitKind::Gaussian).has_random_access());
    }

    /// Asserts that both product forms give the same `A` and `H`, bit for bit.
    fn assert_forms_agree<S: Float>(
        variant: KernelVariant,
        (d, r, block_rows): (usize, usize, usize),
        threads: usize,
    ) {
        let [a_rows, h_rows, a_tiles, h_tiles] =
            both_forms::<S>(variant, (d, r, block_rows), threads);
        let case = format!(
            "{}, {variant:?}, {block_rows} rows, {threads} threads",
            S::NAME
        );
        assert_eq!(a_rows, a_tiles, "A, {case}");
        assert_eq!(h_rows, h_tiles, "H, {case}");
    }

    /// `A` and `H` of both product forms for one start-up, on a pool of `threads`.
    fn both_forms<S: Float>(
        variant: KernelVariant,
        (d, r, block_rows): (usize, usize, usize),
        threads: usize,
    ) -> [Vec<S>; 4] {
        let init = InitSource::from_seed(3, d);
        let width = 2 * r + 1;
        let basis: Vec<S> = (0..d * width)
            .map(|i| S::from_f64(((i * 7919) % 1009) as f64 / 1009.0 - 0.5))
            .collect();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            with_kernel_variant(variant, || {
                let mut by_rows = basis.clone();
                let a_rows = products_by_row_blocks(&init, &mut by_rows, width, r, block_rows);
                let mut by_tiles = basis.clone();
                let a_tiles = products_by_tiles(&init, &mut by_tiles, width, r, block_rows);
                [a_rows, by_rows, a_tiles, by_tiles]
            })
        })
    }

    /// The GEMM kernels this CPU runs: the portable ones, and the AVX-512 ones where present.
    fn kernel_variants() -> Vec<KernelVariant> {
        let mut variants = vec![KernelVariant::Portable];
        if kernels::gemm::kernel_variant() == KernelVariant::Avx512 {
            variants.push(KernelVariant::Avx512);
        }
        variants
    }

    #[test]
    fn tiled_products_equal_row_block_products_bit_for_bit() {
        // d not a multiple of KC or of the 160-row quantum, row blocks not dividing d, r giving
        // partial tiles in both kernels' MR; one to three threads (the tasks' shared tiles go
        // to the workers differently); both kernel families. The f64 case's last row block of
        // 37 rows is one row (1 x 21 x 1000 multiply-adds: the direct path), the f32 case's 77
        // rows (the packed path). Row blocks of 450 (f64) and 600 (f32) rows span several depth
        // panels of either kernel; one block of all rows is how `init_products` takes a `W_0`
        // that fits in memory.
        for variant in kernel_variants() {
            for threads in [1, 2, 3] {
                for block_rows in [37, 450, 1000] {
                    assert_forms_agree::<f64>(variant, (1000, 21, block_rows), threads);
                }
                for block_rows in [100, 600, 777] {
                    assert_forms_agree::<f32>(variant, (777, 9, block_rows), threads);
                }
            }
        }
    }

    #[test]
    fn row_blocks_are_independent_and_bounded() {
        let source = InitSource::from_seed(7, 300);
        let whole: Vec<f64> = source.matrix();
        let mut block = vec![0.0f64; 3 * 300];
        source.fill_rows(101, &mut block);
        assert_eq!(&block[..], &whole[101 * 300..104 * 300]);
        let bound = 1.0 / 300f64.sqrt();
        assert!(whole.iter().all(|&v| v.abs() < bound));
        let mean = whole.iter().sum::<f64>() / whole.len() as f64;
        let var = whole.iter().map(|v| v * v).sum::<f64>() / whole.len() as f64;
        assert!(mean.abs() < 2e-3 * bound * 10.0);
        assert!(
            (var / (bound * bound / 3.0) - 1.0).abs() < 0.02,
            "variance {var}"
        );
        let other: Vec<f64> = InitSource::from_seed(8, 300).matrix();
        assert_ne!(other[0], whole[0]);
    }

    #[test]
    fn the_stream_generator_gives_chacha8rngs_words_and_draws() {
        use rand::RngCore;
        for (seed, stream) in [(0u64, 0u64), (7, 1), (12345, 999), (u64::MAX, u64::MAX)] {
            let key = chacha_key(seed);
            let mut expected = ChaCha8Rng::seed_from_u64(seed);
            expected.set_stream(stream);
            expected.set_word_pos(0);
            let mut ours = ChaChaStream::new(&key, stream);
            // u32, u64 and byte reads in turn, each straddling refills of either generator
            for round in 0..300usize {
                match round % 4 {
                    0 => assert_eq!(ours.next_u32(), expected.next_u32()),
                    1 => assert_eq!(ours.next_u64(), expected.next_u64()),
                    2 => {
                        let (mut a, mut b) = ([0u8; 7], [0u8; 7]);
                        ours.fill_bytes(&mut a);
                        expected.fill_bytes(&mut b);
                        assert_eq!(a, b);
                    }
                    _ => {
                        for _ in 0..round {
                            let x: f64 = ours.sample(StandardNormal);
                            let y: f64 = expected.sample(StandardNormal);
                            assert_eq!(x.to_bits(), y.to_bits(), "seed {seed} stream {stream}");
                        }
                    }
                }
            }
            assert_eq!(ours.next_u64(), expected.next_u64());
        }
    }

    #[test]
    fn gaussian_rows_are_independent_with_the_uniform_variance() {
        let d = 300;
        let source = InitSource::from_seed_with(7, d, InitKind::Gaussian);
        let whole: Vec<f64> = source.matrix();
        let mut block = vec![0.0f64; 3 * d];
        source.fill_rows(101, &mut block);
        assert_eq!(&block[..], &whole[101 * d..104 * d]);
        let m = whole.len() as f64;
        let target = 1.0 / (3.0 * d as f64);
        let mean = whole.iter().sum::<f64>() / m;
        let var = whole.iter().map(|v| v * v).sum::<f64>() / m;
        let kurt = whole.iter().map(|v| v.powi(4)).sum::<f64>() / m / (var * var);
        // 90,000 entries: sd of the mean is sqrt(target / m), of var / target about
        // sqrt(2 / m) = 0.0047, of the kurtosis about sqrt(24 / m) = 0.016; bounds at ~5 sd.
        assert!(mean.abs() < 5.0 * (target / m).sqrt(), "mean {mean}");
        assert!((var / target - 1.0).abs() < 0.025, "variance {var}");
        assert!((kurt - 3.0).abs() < 0.1, "kurtosis {kurt} (uniform: 1.8)");
        let uniform: Vec<f64> = InitSource::from_seed(7, d).matrix();
        assert_ne!(uniform[0], whole[0]);
    }
}
