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
//! - When `W_0` fits in [`INIT_BLOCK_BYTES`], it is generated once and both products are single
//!   GEMMs.
//! - Otherwise pass 1 sums `A = sum_I W0[I, :]^T B[I, :]` over row blocks `I` of `block_rows`
//!   rows, and pass 2 forms `H[I, :] = W0[I, :] A`. With the uniform stream both passes run on
//!   tiles `W0[I, J]`: pass 1 gives each worker a column block `J` and its rows `A[J, :]` (a
//!   few hundred KB, kept in cache while every row block adds to it), pass 2 a row block of `H`
//!   that every column block, `KC` columns (the GEMM kernel's panel depth), adds to. Generating
//!   `W0[I, :]` whole instead made pass 1 read and write all of `A` (`d x r`, 65 MB at
//!   d = 100,000) once per row block, and pass 2 pack all of `A` once per row block.
//!   Pass 2 generates its tiles again rather than reading them from a `W_0` stored in pass 1:
//!   the tiles are generated in cache, whereas a stored `W_0` (200 MB at d = 5,000) is written
//!   to memory and read back, and that traffic costs more than the ChaCha8 words it saves.
//!
//! The tiles change no bit: pass 1 keeps the row blocks (so each element of `A` sums its
//! `block_rows`-long runs in the same KC panels), and pass 2's column blocks are whole KC panels
//! (so `H`'s element sums the same panels in the same order as one GEMM over all of `d`, each
//! added to `C` by the same `beta = 1` step). Both passes take the packed GEMM path, which the
//! row-block form took at these sizes, except for a last row block short enough (`m r d` at
//! most `DIRECT_MAX_MULADDS`) that its GEMMs took the direct path: its rows are computed as the
//! row-block form computes them. The Gaussian stream cannot be cut into columns (a
//! draw consumes a variable number of words), so it keeps the row-block form.

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

/// Rows of `H` (and of a pass-2 tile) per worker come in multiples of this: a multiple of both
/// AVX-512 tile heights (12 and 14 rows), so the GEMM's row panels have no partial tiles.
const H_ROWS_QUANTUM: usize = 168;

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

    /// Whether [`InitSource::fill_block_transposed`] can give any rectangle: the uniform stream (entry
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

    /// Writes the block `rows x cols` of `W_0`, transposed, into `out_t`: entry `(i, j)` at
    /// `out_t[(j - cols.start) * rows.len() + (i - rows.start)]`, on the calling thread; the
    /// values are those [`InitSource::fill_rows`] gives. Transposed because the uniform stream
    /// comes sixteen rows (streams) at a time, one column (word) per vector
    /// ([`random::chacha8_streams`]).
    ///
    /// # Panics
    ///
    /// If `out_t` does not hold the block, the block leaves the matrix, or the source has no
    /// random access (the Gaussian stream).
    pub fn fill_block_transposed<T: Float>(
        &self,
        rows: Range<usize>,
        cols: Range<usize>,
        out_t: &mut [T],
    ) {
        let d = self.dim();
        let height = rows.len();
        assert!(rows.end <= d && cols.end <= d, "the block leaves W_0");
        assert_eq!(
            out_t.len(),
            height * cols.len(),
            "out_t must hold the block"
        );
        if out_t.is_empty() {
            return;
        }
        match self {
            InitSource::Stream {
                kind: InitKind::Gaussian,
                ..
            } => panic!("the Gaussian W_0 stream has no random access to columns"),
            InitSource::Stream { seed, .. } => {
                let key = uniform_key(*seed);
                let cell = UniformCell::new(d);
                let mut words = [0u32; 16 * random::STREAMS];
                // loop over groups of sixteen rows (one ChaCha stream per vector lane)
                for first_row in rows.clone().step_by(random::STREAMS) {
                    let lanes = (rows.end - first_row).min(random::STREAMS);
                    let offset = first_row - rows.start;
                    // loop over the 16-word blocks the columns touch
                    for block in cols.start / 16..cols.end.div_ceil(16) {
                        random::chacha8_streams(&key, first_row as u64, block as u64, &mut words);
                        let block_cols =
                            (16 * block).max(cols.start)..(16 * block + 16).min(cols.end);
                        for j in block_cols {
                            let lane_words = &words[(j % 16) * random::STREAMS..][..lanes];
                            let dst = &mut out_t[(j - cols.start) * height + offset..][..lanes];
                            for (o, &u) in dst.iter_mut().zip(lane_words) {
                                *o = cell.value(u);
                            }
                        }
                    }
                }
            }
            InitSource::Matrix { values, .. } => {
                for (i, row) in rows.clone().enumerate() {
                    for (jj, &v) in values[row * d + cols.start..row * d + cols.end]
                        .iter()
                        .enumerate()
                    {
                        out_t[jj * height + i] = T::from_f64(v);
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
    let a = if block_rows < d && init.has_random_access() {
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

/// Both passes over whole row blocks of `W_0` (generated once when one block holds it); returns
/// `A` and writes `H`.
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
    let kc = kernels::gemm::blocking::<S>(variant).kc;
    let on_packed_path =
        |f: &mut dyn FnMut()| with_kernel_variant(variant, || with_gemm_path(GemmPath::Packed, f));

    // The row-block form's last block, when so short that its two GEMMs (m x r x d) took the
    // direct path and so another summation grouping, is computed as that form computes it.
    let tail_first = (d - 1) / block_rows * block_rows;
    let tail_direct = kernels::gemm::use_direct(Transpose::No, d - tail_first, r, d);
    let tiled_rows = if tail_direct { tail_first } else { d };

    // pass 1: A[J, :] = sum over row blocks I of W0[I, J]^T B[I, :], one column block J a task
    let mut a = vec![S::ZERO; d * r];
    let basis: &[S] = projector;
    let tile_cols = kc * quanta_per_task(d.div_ceil(kc));
    // One tile per worker, reused by its tasks: every task writes the part it reads first.
    a.par_chunks_mut(tile_cols * r).enumerate().for_each_init(
        || vec![S::ZERO; block_rows * tile_cols],
        |tile, (task, a_rows)| {
            let cols = task * tile_cols..d.min((task + 1) * tile_cols);
            on_packed_path(&mut || {
                for first in (0..d).step_by(block_rows) {
                    let rows = first..d.min(first + block_rows);
                    let tile = &mut tile[..rows.len() * cols.len()];
                    init.fill_block_transposed(rows.clone(), cols.clone(), tile);
                    let path = if first == tail_first && tail_direct {
                        GemmPath::Direct
                    } else {
                        GemmPath::Packed
                    };
                    with_gemm_path(path, || {
                        kernels::gemm(
                            S::ONE,
                            MatRef::new(tile, cols.len(), rows.len()),
                            MatRef::with_ld(&basis[first * width + r..], rows.len(), r, width),
                            if first == 0 { S::ZERO } else { S::ONE },
                            MatMut::new(a_rows, cols.len(), r),
                        )
                    });
                }
            });
        },
    );

    // pass 2: H[I, :] = sum over column blocks J of W0[I, J] A[J, :], one row block I a task;
    // the column blocks are single KC panels
    let task_rows = H_ROWS_QUANTUM * quanta_per_task(d.div_ceil(H_ROWS_QUANTUM));
    let (h_tiled, h_tail) = projector.split_at_mut(tiled_rows * width);
    h_tiled
        .par_chunks_mut(task_rows * width)
        .enumerate()
        // one tile per worker, as in pass 1
        .for_each_init(
            || vec![S::ZERO; task_rows * kc],
            |tile, (task, h_rows)| {
                let rows = task * task_rows..tiled_rows.min((task + 1) * task_rows);
                on_packed_path(&mut || {
                    for first in (0..d).step_by(kc) {
                        let cols = first..d.min(first + kc);
                        let tile = &mut tile[..rows.len() * cols.len()];
                        init.fill_block_transposed(rows.clone(), cols.clone(), tile);
                        kernels::gemm(
                            S::ONE,
                            MatRef::new(tile, cols.len(), rows.len()).transpose(),
                            MatRef::new(&a[first * r..], cols.len(), r),
                            if first == 0 { S::ZERO } else { S::ONE },
                            MatMut::with_ld(&mut *h_rows, rows.len(), r, width),
                        );
                    }
                });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transposed_blocks_are_the_rows_entries() {
        let d = 300;
        let uniform = InitSource::from_seed(7, d);
        let whole: Vec<f64> = uniform.matrix();
        let given = InitSource::Matrix {
            dim: d,
            values: whole.clone(),
        };
        // rows and columns that start and end inside a 16-row group and a 16-word block
        for source in [&uniform, &given] {
            for (rows, cols) in [(0..300, 0..300), (5..38, 17..250), (290..300, 299..300)] {
                let mut block = vec![0.0f64; rows.len() * cols.len()];
                source.fill_block_transposed(rows.clone(), cols.clone(), &mut block);
                for (i, row) in rows.clone().enumerate() {
                    for (j, col) in cols.clone().enumerate() {
                        assert_eq!(block[j * rows.len() + i], whole[row * d + col]);
                    }
                }
            }
        }
        assert!(!InitSource::from_seed_with(7, d, InitKind::Gaussian).has_random_access());
    }

    /// `A` and `H` of both product forms for one start-up, on a pool of `threads`.
    fn both_forms<S: Float>(d: usize, r: usize, block_rows: usize, threads: usize) -> [Vec<S>; 4] {
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
            let mut by_rows = basis.clone();
            let a_rows = products_by_row_blocks(&init, &mut by_rows, width, r, block_rows);
            let mut by_tiles = basis.clone();
            let a_tiles = products_by_tiles(&init, &mut by_tiles, width, r, block_rows);
            [a_rows, by_rows, a_tiles, by_tiles]
        })
    }

    #[test]
    fn tiled_products_equal_row_block_products_bit_for_bit() {
        // d not a multiple of KC or of the 168-row quantum, row blocks not dividing d, r giving
        // partial tiles in both kernels' NR; one to three threads (the tasks' shared tiles go
        // to the workers differently). The f64 case's last row block is one row (1 x 21 x 1000
        // multiply-adds: the direct path), the f32 case's 77 rows (the packed path).
        for threads in [1, 2, 3] {
            let [a_rows, h_rows, a_tiles, h_tiles] = both_forms::<f64>(1000, 21, 37, threads);
            assert_eq!(a_rows, a_tiles, "A, f64, {threads} threads");
            assert_eq!(h_rows, h_tiles, "H, f64, {threads} threads");
            let [a_rows, h_rows, a_tiles, h_tiles] = both_forms::<f32>(777, 9, 100, threads);
            assert_eq!(a_rows, a_tiles, "A, f32, {threads} threads");
            assert_eq!(h_rows, h_tiles, "H, f32, {threads} threads");
        }
        assert_eq!(
            both_forms::<f64>(1000, 21, 37, 1),
            both_forms::<f64>(1000, 21, 37, 3)
        );
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
