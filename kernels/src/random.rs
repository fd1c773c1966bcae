//! The ChaCha8 keystream, sixteen blocks at a time.
//!
//! ChaCha (Bernstein) turns a 256-bit key, a 64-bit block counter and a 64-bit nonce into a
//! 16-word block: the state
//!
//! ```text
//! words  0..4   "expand 32-byte k"      words  4..12  the key (little-endian words)
//! words 12..14  block counter (low, high)  words 14..16  nonce (low, high)
//! ```
//!
//! goes through 4 double rounds (ChaCha8: a column round and a diagonal round of quarter rounds
//! `a += b; d ^= a; d <<<= 16; c += d; b ^= c; b <<<= 12; a += b; d ^= a; d <<<= 8; c += d;
//! b ^= c; b <<<= 7`), and the block is that result plus the input state, word by word. Word `w`
//! of the stream is word `w % 16` of block `w / 16`. This is the stream of `rand_chacha`'s
//! `ChaCha8Rng` with the nonce as its stream number (`set_stream`) and `w` as its word position
//! (`set_word_pos`); the tests check it word for word.
//!
//! # Why here
//!
//! The uniform `W_0` of the subspace trainer is `d^2` stream words, generated twice at start-up
//! (10^10 words at d = 100,000). `rand_chacha` produces four blocks per call with 128-bit
//! vectors; here sixteen are computed at once, one per lane of a 512-bit vector: the state is
//! held as sixteen vectors of sixteen lanes (word `w` of lane `l`), so every operation of a
//! round is one lane-wise vector operation. Where the CPU has AVX-512 this is written with
//! intrinsics (`random/avx512.rs`), so the state, the final addition and the transpose to stream
//! order stay in registers and the blocks are stored straight into the caller's buffer;
//! elsewhere the portable `blocks` computes the same words on arrays the compiler vectorises.
//! The lanes are either sixteen consecutive blocks of one stream ([`chacha8_keystream`], stored
//! block after block, i.e. in stream order) or the same block of sixteen consecutive streams
//! ([`chacha8_streams`], already in the order of a column-major tile of a matrix whose rows are
//! streams).
//!
//! # Standard normals
//!
//! [`NormalStream`] draws standard normals from one keystream exactly as rand_distr 0.5's
//! `StandardNormal` (the ZIGNOR ziggurat) draws them from `ChaCha8Rng` on that stream from
//! word 0: the same `u64`s (two words, the first in the low half) and the same arithmetic, so
//! the same values bit for bit, rare tail and wedge draws included. It is faster because the
//! fast path, taken by about 99% of the draws, runs over a buffer of 256 keystream words with
//! no per-word refill test, eight candidates per AVX-512 vector where the CPU has it (the same
//! IEEE operations lane by lane, the table entries gathered), and only a draw that leaves it goes
//! through the scalar code that consumes further words. [`normal_rows`] writes such draws
//! straight into rows of a new matrix (the test tokens of the subspace trainer), which is
//! never zeroed first.

/// State words 0..4 of every block: "expand 32-byte k".
const SIGMA: [u32; 4] = [0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574];

/// The quarter rounds of a double round, by the state words they take: a column round, then
/// a diagonal round.
const DOUBLE_ROUND: [[usize; 4]; 8] = [
    [0, 4, 8, 12],
    [1, 5, 9, 13],
    [2, 6, 10, 14],
    [3, 7, 11, 15],
    [0, 5, 10, 15],
    [1, 6, 11, 12],
    [2, 7, 8, 13],
    [3, 4, 9, 14],
];

/// Blocks computed together: one per lane of a 512-bit vector of `u32`.
const BLOCKS: usize = 16;

/// Words of one ChaCha block.
const BLOCK_WORDS: usize = 16;

/// Words computed by one call of the block function.
const BATCH_WORDS: usize = BLOCKS * BLOCK_WORDS;

/// State word `w` of each of the [`BLOCKS`] blocks, lane `l` being block `l`.
type Lanes = [[u32; BLOCKS]; BLOCK_WORDS];

/// Streams (nonces) computed together by [`chacha8_streams`]: one per lane of a 512-bit vector.
pub const STREAMS: usize = BLOCKS;

/// Writes words `first_word, first_word + 1, ..` (as many as `out` holds) of the ChaCha8
/// keystream of `key` (the 32-byte seed read as eight little-endian words) and `nonce` into
/// `out`. The block counter wraps at 2^64, as `rand_chacha`'s does.
pub fn chacha8_keystream(key: &[u32; 8], nonce: u64, first_word: u64, out: &mut [u32]) {
    let mut batch = [0u32; BATCH_WORDS];
    let mut block = first_word / BLOCK_WORDS as u64;
    let mut skip = (first_word % BLOCK_WORDS as u64) as usize;
    let mut rest = out;
    while !rest.is_empty() {
        let take = (BATCH_WORDS - skip).min(rest.len());
        let (head, tail) = rest.split_at_mut(take);
        match <&mut [u32; BATCH_WORDS]>::try_from(&mut *head) {
            // a whole batch: the blocks are written in place
            Ok(whole) => keystream_batch(key, nonce, block, whole),
            Err(_) => {
                keystream_batch(key, nonce, block, &mut batch);
                head.copy_from_slice(&batch[skip..skip + take]);
            }
        }
        rest = tail;
        skip = 0;
        block = block.wrapping_add(BLOCKS as u64);
    }
}

/// Stream words `16 block ..` of `key` and `nonce`, [`BATCH_WORDS`] of them (sixteen blocks),
/// in stream order.
fn keystream_batch(key: &[u32; 8], nonce: u64, block: u64, out: &mut [u32; BATCH_WORDS]) {
    let counters = std::array::from_fn(|l| block.wrapping_add(l as u64));
    let nonces = [nonce; BLOCKS];
    #[cfg(target_arch = "x86_64")]
    if avx512_detected() {
        // SAFETY: the CPU has avx512f (checked just above), the function's only requirement.
        unsafe { avx512::blocks_in_stream_order(key, &counters, &nonces, out) };
        return;
    }
    let words = blocks(key, &counters, &nonces);
    // block after block: word w of block l at l * 16 + w
    for (w, word) in words.iter().enumerate() {
        for (l, &value) in word.iter().enumerate() {
            out[l * BLOCK_WORDS + w] = value;
        }
    }
}

/// Block `block` of each of the [`STREAMS`] keystreams with nonces `first_nonce ..` (wrapping),
/// word-major: word `w` of the stream with nonce `first_nonce + l` at `out[w * STREAMS + l]`,
/// i.e. stream words `16 block .. 16 block + 16` of sixteen consecutive streams, transposed.
/// For a matrix whose row `i` is stream `i` this is a 16 x 16 tile stored column by column, with
/// no shuffle: each state word is one vector across the streams.
pub fn chacha8_streams(key: &[u32; 8], first_nonce: u64, block: u64, out: &mut [u32; BATCH_WORDS]) {
    let nonces = std::array::from_fn(|l| first_nonce.wrapping_add(l as u64));
    let counters = [block; BLOCKS];
    #[cfg(target_arch = "x86_64")]
    if avx512_detected() {
        // SAFETY: the CPU has avx512f (checked just above), the function's only requirement.
        unsafe { avx512::blocks_word_major(key, &counters, &nonces, out) };
        return;
    }
    let words = blocks(key, &counters, &nonces);
    for (dst, word) in out.chunks_exact_mut(BLOCKS).zip(&words) {
        dst.copy_from_slice(word);
    }
}

/// Whether the CPU has AVX-512F (std caches the CPUID answer).
#[cfg(target_arch = "x86_64")]
fn avx512_detected() -> bool {
    is_x86_feature_detected!("avx512f")
}

/// The ChaCha8 block function of [`BLOCKS`] blocks at once, lane `l` with block counter
/// `counters[l]` and nonce `nonces[l]`; returns the blocks word-major (word `w` of lane `l` at
/// `[w][l]`), for whatever vectors the caller is compiled for.
#[inline(always)]
fn blocks(key: &[u32; 8], counters: &[u64; BLOCKS], nonces: &[u64; BLOCKS]) -> Lanes {
    let mut input: Lanes = [[0; BLOCKS]; BLOCK_WORDS];
    for (w, &word) in SIGMA.iter().chain(key.iter()).enumerate() {
        input[w] = [word; BLOCKS];
    }
    for l in 0..BLOCKS {
        input[12][l] = counters[l] as u32;
        input[13][l] = (counters[l] >> 32) as u32;
        input[14][l] = nonces[l] as u32;
        input[15][l] = (nonces[l] >> 32) as u32;
    }
    let mut x = input;
    // loop over the double rounds: ChaCha8 has four
    for _ in 0..4 {
        for [a, b, c, d] in DOUBLE_ROUND {
            quarter_round(&mut x, a, b, c, d);
        }
    }
    // each block is the rounds' result plus the input, word by word
    std::array::from_fn(|w| add(x[w], input[w]))
}

/// One quarter round on state words `a`, `b`, `c`, `d` of every lane.
#[inline(always)]
fn quarter_round(x: &mut Lanes, a: usize, b: usize, c: usize, d: usize) {
    let (mut va, mut vb, mut vc, mut vd) = (x[a], x[b], x[c], x[d]);
    va = add(va, vb);
    vd = xor_rotate(vd, va, 16);
    vc = add(vc, vd);
    vb = xor_rotate(vb, vc, 12);
    va = add(va, vb);
    vd = xor_rotate(vd, va, 8);
    vc = add(vc, vd);
    vb = xor_rotate(vb, vc, 7);
    (x[a], x[b], x[c], x[d]) = (va, vb, vc, vd);
}

/// Lane-wise wrapping sum (one vector addition; whole arrays, so the compiler keeps a state
/// word in one register instead of vectorising across the words of a lane).
#[inline(always)]
fn add(u: [u32; BLOCKS], v: [u32; BLOCKS]) -> [u32; BLOCKS] {
    std::array::from_fn(|l| u[l].wrapping_add(v[l]))
}

/// Lane-wise `(u ^ v) <<< bits`.
#[inline(always)]
fn xor_rotate(u: [u32; BLOCKS], v: [u32; BLOCKS], bits: u32) -> [u32; BLOCKS] {
    std::array::from_fn(|l| (u[l] ^ v[l]).rotate_left(bits))
}

#[cfg(target_arch = "x86_64")]
mod avx512;
mod ziggurat_tables;

use ziggurat_tables::{ZIG_NORM_F, ZIG_NORM_R, ZIG_NORM_X};

use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::float::Float;
use crate::simd::{cast_mut, precision, Precision};

/// `u64`s buffered by a [`NormalStream`]: one batch of the block function (256 words). A
/// stream's last refill is only partly used, so a smaller buffer wastes fewer blocks.
const NORMAL_BUFFER_U64S: usize = BATCH_WORDS / 2;

/// Standard normal draws from the ChaCha8 keystream of one key and nonce, read from word 0:
/// value for value (bits included) what `rand_distr::StandardNormal` (0.5) samples from
/// `rand_chacha::ChaCha8Rng` seeded with that key after `set_stream(nonce)` (module docs).
///
/// Every draw consumes whole `u64`s (one on the fast path, one more per uniform of a slow
/// path), so the stream is read two words at a time from an even position.
pub struct NormalStream {
    key: [u32; 8],
    nonce: u64,
    /// Stream position (in words) of the first word the next refill reads.
    next_refill: u64,
    /// Stream words `next_refill - 256 ..`: `u64` `k` is words `2k` (low half) and `2k + 1`.
    words: Box<[u32; BATCH_WORDS]>,
    /// Next unread `u64` of `words` (`NORMAL_BUFFER_U64S` when a refill is due).
    at: usize,
}

impl NormalStream {
    /// The keystream of `key` (the 32-byte seed as eight little-endian words) and `nonce`, at
    /// word 0.
    pub fn new(key: &[u32; 8], nonce: u64) -> Self {
        NormalStream {
            key: *key,
            nonce,
            next_refill: 0,
            words: Box::new([0; BATCH_WORDS]),
            at: NORMAL_BUFFER_U64S,
        }
    }

    /// Refills the buffer with the next [`BATCH_WORDS`] words (a whole batch: `next_refill` is
    /// a multiple of it).
    fn refill(&mut self) {
        keystream_batch(
            &self.key,
            self.nonce,
            self.next_refill / BLOCK_WORDS as u64,
            &mut self.words,
        );
        self.next_refill = self.next_refill.wrapping_add(BATCH_WORDS as u64);
        self.at = 0;
    }

    /// `u64` `k` of the buffer.
    #[inline(always)]
    fn buffered(&self, k: usize) -> u64 {
        u64::from(self.words[2 * k]) | (u64::from(self.words[2 * k + 1]) << 32)
    }

    /// The next `u64` of the stream (`ChaCha8Rng::next_u64`).
    fn next_u64(&mut self) -> u64 {
        if self.at == NORMAL_BUFFER_U64S {
            self.refill();
        }
        let bits = self.buffered(self.at);
        self.at += 1;
        bits
    }

    /// Fills `out` with the next `out.len()` standard normals of the stream.
    pub fn fill(&mut self, out: &mut [f64]) {
        // SAFETY: `MaybeUninit<f64>` has the layout of `f64`, and `fill_uninit` writes only
        // initialised values, so `out` stays initialised.
        let slots = unsafe { &mut *(out as *mut [f64] as *mut [MaybeUninit<f64>]) };
        self.fill_uninit(slots);
    }

    /// Writes the next `out.len()` standard normals of the stream into `out`, every entry, and
    /// returns it initialised.
    pub fn fill_uninit<'a>(&mut self, out: &'a mut [MaybeUninit<f64>]) -> &'a mut [f64] {
        let mut done = 0;
        while done < out.len() {
            if self.at == NORMAL_BUFFER_U64S {
                self.refill();
            }
            let run = (NORMAL_BUFFER_U64S - self.at).min(out.len() - done);
            // The fast path over the buffered u64s, up to the first draw that leaves it.
            let fast = fast_prefix(
                &self.words[2 * self.at..2 * (self.at + run)],
                &mut out[done..done + run],
            );
            self.at += fast;
            done += fast;
            if fast < run {
                // That draw's u64 is consumed; the slow path may consume more.
                let (x, i) = ziggurat_candidate(self.buffered(self.at));
                self.at += 1;
                out[done].write(self.slow_path(x, i));
                done += 1;
            }
        }
        // SAFETY: every entry below `done = out.len()` was written: the fast path writes the
        // candidates it passes (`out[done..done + fast]`) and the slow path the next one.
        unsafe { assume_init_mut(out) }
    }

    /// Fills `out` with the next `out.len()` standard normals of the stream, each rounded to
    /// `T` (for f64 the values of [`NormalStream::fill`] themselves, written in place).
    pub fn fill_as<T: Float>(&mut self, out: &mut [T]) {
        // SAFETY: as in `fill`: the same layout, and only initialised values are written.
        let slots = unsafe { &mut *(out as *mut [T] as *mut [MaybeUninit<T>]) };
        self.fill_uninit_as(slots);
    }

    /// [`NormalStream::fill_uninit`] rounded to `T`: every entry of `out` written.
    pub fn fill_uninit_as<'a, T: Float>(&mut self, out: &'a mut [MaybeUninit<T>]) -> &'a mut [T] {
        match precision::<T>() {
            Precision::F64 => {
                self.fill_uninit(cast_mut(out));
            }
            Precision::F32 => {
                let mut values = [0.0f64; NORMAL_BUFFER_U64S];
                for chunk in out.chunks_mut(NORMAL_BUFFER_U64S) {
                    let values = &mut values[..chunk.len()];
                    self.fill(values);
                    for (v, &e) in chunk.iter_mut().zip(values.iter()) {
                        v.write(T::from_f64(e));
                    }
                }
            }
        }
        // SAFETY: both arms write every entry of `out`.
        unsafe { assume_init_mut(out) }
    }

    /// The rest of rand_distr's `ziggurat` loop for a candidate `x` of strip `i` that failed
    /// the rectangle test: the tail for `i = 0`, else the wedge test with one more uniform and,
    /// when it rejects, fresh candidates from the stream.
    #[cold]
    fn slow_path(&mut self, mut x: f64, mut i: usize) -> f64 {
        loop {
            if i == 0 {
                // `u < 0` exactly when `x = u x_0 < 0` (`x_0 > 0`, and `u != 0` is at least
                // 2^-51 in magnitude, so `x` does not round to zero).
                return self.tail(x < 0.0);
            }
            // rand_distr: `f_tab[i + 1] + (f_tab[i] - f_tab[i + 1]) * rng.random::<f64>() < pdf(x)`
            let uniform = self.uniform_closed_open();
            if ZIG_NORM_F[i + 1] + (ZIG_NORM_F[i] - ZIG_NORM_F[i + 1]) * uniform
                < (-x * x / 2.0).exp()
            {
                return x;
            }
            let bits = self.next_u64();
            (x, i) = ziggurat_candidate(bits);
            if x.abs() < ZIG_NORM_X[i + 1] {
                return x;
            }
        }
    }

    /// rand_distr's `zero_case`: a draw from the tail beyond `ZIG_NORM_R` (Marsaglia's
    /// method), on the negative side when the candidate's `u` was negative.
    fn tail(&mut self, negative: bool) -> f64 {
        let mut x = 1.0f64;
        let mut y = 0.0f64;
        while -2.0 * y < x * x {
            let x_open = self.uniform_open();
            let y_open = self.uniform_open();
            x = x_open.ln() / ZIG_NORM_R;
            y = y_open.ln();
        }
        if negative {
            x - ZIG_NORM_R
        } else {
            ZIG_NORM_R - x
        }
    }

    /// rand's `StandardUniform` f64 in [0, 1): the top 53 bits of a `u64` times 2^-53.
    fn uniform_closed_open(&mut self) -> f64 {
        let value = self.next_u64() >> 11;
        (1.0 / (1u64 << 53) as f64) * value as f64
    }

    /// rand's `Open01` f64 in (0, 1): the top 52 bits as the fraction of a number in [1, 2),
    /// less `1 - EPSILON / 2`.
    fn uniform_open(&mut self) -> f64 {
        let fraction = self.next_u64() >> 12;
        f64::from_bits(fraction | (1023u64 << 52)) - (1.0 - f64::EPSILON / 2.0)
    }
}

/// `slots` as initialised values.
///
/// # Safety
///
/// Every entry of `slots` has been written.
unsafe fn assume_init_mut<T>(slots: &mut [MaybeUninit<T>]) -> &mut [T] {
    // SAFETY: `MaybeUninit<T>` has the layout of `T` and the caller guarantees every entry is
    // initialised.
    unsafe { &mut *(slots as *mut [MaybeUninit<T>] as *mut [T]) }
}

/// Rows of standard normals with a computed tail, built without zeroing them first:
/// `samples` blocks of `rows_per_sample` rows of `width` entries, row-major. Sample `i` draws
/// from the [`NormalStream`] of `key` and nonce `i`: its rows' first `draws` entries are that
/// stream's normals in order (rounded to `T`); the other `width - draws` entries (the tail)
/// start at zero and `finish(i, row, normals, tail)` sets them and returns the row's entry of
/// the second result (one value per row). Samples run in parallel, each on its own stream, so
/// the values do not depend on the thread count.
pub fn normal_rows<T: Float>(
    key: &[u32; 8],
    samples: usize,
    rows_per_sample: usize,
    draws: usize,
    width: usize,
    finish: impl Fn(usize, usize, &[T], &mut [T]) -> f64 + Sync,
) -> (Vec<T>, Vec<f64>) {
    assert!(draws <= width, "{draws} draws in rows of {width}");
    let total = samples * rows_per_sample * width;
    let mut rows: Vec<T> = Vec::with_capacity(total);
    let mut per_row = vec![0.0f64; samples * rows_per_sample];
    if total > 0 {
        rows.spare_capacity_mut()[..total]
            .par_chunks_mut(rows_per_sample * width)
            .zip(per_row.par_chunks_mut(rows_per_sample))
            .enumerate()
            .for_each(|(i, (sample, values))| {
                let mut normals = NormalStream::new(key, i as u64);
                for (row, (slots, value)) in sample
                    .chunks_exact_mut(width)
                    .zip(values.iter_mut())
                    .enumerate()
                {
                    let (normal_slots, tail_slots) = slots.split_at_mut(draws);
                    let drawn = normals.fill_uninit_as(normal_slots);
                    tail_slots.fill(MaybeUninit::new(T::ZERO));
                    // SAFETY: every entry of the tail was just written.
                    let tail = unsafe { assume_init_mut(tail_slots) };
                    *value = finish(i, row, drawn, tail);
                }
            });
    }
    // SAFETY: the capacity is at least `total`, and when `total > 0` every sample's chunk of
    // `rows_per_sample * width` entries (`total` in all) had each row's `draws` normals and
    // its tail written above; a panic in `finish` propagates before this point, leaving the
    // vector empty.
    unsafe { rows.set_len(total) };
    (rows, per_row)
}

/// The ziggurat's fast path over `words` (stream words, two per `u64`): writes candidate `k` to
/// `out[k]` and returns how many leading candidates passed the rectangle test (entries from the
/// first failing one on are unspecified), with the widest vectors the CPU has.
fn fast_prefix(words: &[u32], out: &mut [MaybeUninit<f64>]) -> usize {
    #[cfg(target_arch = "x86_64")]
    if avx512_detected() {
        // SAFETY: the CPU has avx512f (checked just above), the function's only requirement.
        return unsafe { avx512::ziggurat_fast_prefix(words, out) };
    }
    scalar_fast_prefix(words, out)
}

/// [`fast_prefix`] one candidate at a time.
fn scalar_fast_prefix(words: &[u32], out: &mut [MaybeUninit<f64>]) -> usize {
    for (k, (pair, value)) in words.chunks_exact(2).zip(out.iter_mut()).enumerate() {
        let (x, i) = ziggurat_candidate(u64::from(pair[0]) | (u64::from(pair[1]) << 32));
        value.write(x);
        if x.abs() >= ZIG_NORM_X[i + 1] {
            return k;
        }
    }
    out.len().min(words.len() / 2)
}

/// The ziggurat's candidate from one `u64`, as rand_distr computes it: strip `i` from the low
/// 8 bits, `u` in [-1, 1) from the top 52 (the fraction of a number in [2, 4), less 3), and
/// `x = u x_i`. Returns `(x, i)`.
#[inline(always)]
fn ziggurat_candidate(bits: u64) -> (f64, usize) {
    let i = (bits & 0xff) as usize;
    let u = f64::from_bits((bits >> 12) | (1024u64 << 52)) - 3.0;
    (u * ZIG_NORM_X[i], i)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AVX-512 blocks, in stream order and word-major, equal the portable ones.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_blocks_equal_portable_blocks() {
        if !avx512_detected() {
            eprintln!("no avx512f on this CPU: the AVX-512 ChaCha blocks were not exercised");
            return;
        }
        let key = [0x0123_4567, 9, 8, 7, 6, 5, 4, u32::MAX];
        for first in [0, 1, u64::from(u32::MAX) - 3, u64::MAX - 5] {
            let counters = std::array::from_fn(|l| first.wrapping_add(l as u64));
            let nonces = std::array::from_fn(|l| first ^ (l as u64) << 40);
            let portable = blocks(&key, &counters, &nonces);
            let (mut stream_order, mut word_major) = ([0u32; BATCH_WORDS], [0u32; BATCH_WORDS]);
            // SAFETY: the CPU has avx512f (checked above).
            unsafe {
                avx512::blocks_in_stream_order(&key, &counters, &nonces, &mut stream_order);
                avx512::blocks_word_major(&key, &counters, &nonces, &mut word_major);
            }
            for (w, word) in portable.iter().enumerate() {
                for (l, &value) in word.iter().enumerate() {
                    assert_eq!(stream_order[l * BLOCK_WORDS + w], value, "first {first}");
                    assert_eq!(word_major[w * BLOCKS + l], value, "first {first}");
                }
            }
        }
    }

    /// The AVX-512 fast path of the ziggurat passes the same candidates with the same values
    /// as the scalar one, on the keystream (about one candidate in a hundred fails) and on
    /// words that make every eighth candidate fail at a different lane, at every length.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_fast_prefix_equals_scalar() {
        if !avx512_detected() {
            eprintln!("no avx512f on this CPU: the AVX-512 ziggurat was not exercised");
            return;
        }
        let mut words = vec![0u32; 64 * BATCH_WORDS];
        chacha8_keystream(&[3, 1, 4, 1, 5, 9, 2, 6], 7, 0, &mut words);
        let mut planted = words.clone();
        for k in 0..planted.len() / 2 {
            if k % 8 == (k / 8) % 8 {
                // strip 0 with u just below 1: |x| close to x_0 > x_1, a failure
                planted[2 * k] = 0xffff_f000;
                planted[2 * k + 1] = 0xffff_ffff;
            }
        }
        let (mut failures, mut checked) = (0, 0);
        for source in [&words, &planted] {
            for start in (0..source.len() / 2 - 40).step_by(37) {
                for len in [0, 1, 7, 8, 9, 17, 40] {
                    let words = &source[2 * start..2 * (start + len)];
                    let mut ours = vec![MaybeUninit::new(0.0); len];
                    let mut scalar = ours.clone();
                    // SAFETY: the CPU has avx512f (checked above).
                    let passed = unsafe { avx512::ziggurat_fast_prefix(words, &mut ours) };
                    let expected = scalar_fast_prefix(words, &mut scalar);
                    assert_eq!(passed, expected, "start {start} length {len}");
                    let bits = |v: &[MaybeUninit<f64>]| {
                        v.iter()
                            // SAFETY: every entry was initialised (to 0.0) when created.
                            .map(|x| unsafe { x.assume_init() }.to_bits())
                            .collect::<Vec<_>>()
                    };
                    assert_eq!(bits(&ours[..passed]), bits(&scalar[..passed]));
                    failures += usize::from(passed < len);
                    checked += 1;
                }
            }
        }
        assert!(
            failures > checked / 4,
            "{failures} of {checked} prefixes stopped early"
        );
    }

    /// `fill_as` gives `fill`'s values, rounded for f32.
    #[test]
    fn fill_as_is_fill_rounded() {
        let key = [1, 2, 3, 4, 5, 6, 7, 8];
        let mut expected = vec![0.0f64; 3000];
        NormalStream::new(&key, 5).fill(&mut expected);
        let (mut double, mut single) = (vec![0.0f64; 3000], vec![0.0f32; 3000]);
        let (mut a, mut b) = (NormalStream::new(&key, 5), NormalStream::new(&key, 5));
        for (d, s) in double.chunks_mut(700).zip(single.chunks_mut(700)) {
            a.fill_as(d);
            b.fill_as(s);
        }
        for ((&e, &d), &s) in expected.iter().zip(&double).zip(&single) {
            assert_eq!(e.to_bits(), d.to_bits());
            assert_eq!((e as f32).to_bits(), s.to_bits());
        }
    }

    /// `normal_rows` holds each sample's stream in its rows' first `draws` entries, the tail
    /// that `finish` wrote (starting from zeros), and `finish`'s values, for f64 and f32 rows,
    /// whatever the thread count.
    #[test]
    fn normal_rows_are_the_streams_and_the_tails() {
        fn check<T: Float>(threads: usize) {
            let key = [9, 8, 7, 6, 5, 4, 3, 2];
            let (samples, per_sample, draws, width) = (37, 5, 301, 304);
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let (rows, values) = pool.install(|| {
                normal_rows::<T>(
                    &key,
                    samples,
                    per_sample,
                    draws,
                    width,
                    |i, row, normals, tail| {
                        assert!(tail.iter().all(|&v| v == T::ZERO));
                        tail[1] = T::from_f64((i * 10 + row) as f64);
                        normals[0].to_f64() + 0.5
                    },
                )
            });
            assert_eq!(rows.len(), samples * per_sample * width);
            for i in 0..samples {
                let mut expected = vec![T::ZERO; per_sample * draws];
                NormalStream::new(&key, i as u64).fill_as(&mut expected);
                for row in 0..per_sample {
                    let at = (i * per_sample + row) * width;
                    assert_eq!(&rows[at..at + draws], &expected[row * draws..][..draws]);
                    let tail = [T::ZERO, T::from_f64((i * 10 + row) as f64), T::ZERO];
                    assert_eq!(&rows[at + draws..at + width], &tail);
                    let value = expected[row * draws].to_f64() + 0.5;
                    assert_eq!(values[i * per_sample + row].to_bits(), value.to_bits());
                }
            }
        }
        for threads in [1, 3] {
            check::<f64>(threads);
            check::<f32>(threads);
        }
    }
}
