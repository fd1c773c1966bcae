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
//! vectors; here sixteen are computed at once, one per lane of a 512-bit vector where the CPU has
//! AVX-512 (two 256-bit vectors with AVX2, from the same code): the state is held as sixteen
//! arrays of sixteen lanes (word `w` of lane `l` at `[w][l]`), so every operation of a round is
//! one lane-wise vector operation, and the compiler vectorises it for the instruction set the
//! function is compiled for. The lanes are either sixteen consecutive blocks of one stream
//! ([`chacha8_keystream`], which then transposes them into stream order) or the same block of
//! sixteen consecutive streams ([`chacha8_streams`], already in the order of a column-major tile
//! of a matrix whose rows are streams).
//!
//! # Standard normals
//!
//! [`NormalStream`] draws standard normals from one keystream exactly as rand_distr 0.5's
//! `StandardNormal` (the ZIGNOR ziggurat) draws them from `ChaCha8Rng` on that stream from
//! word 0: the same `u64`s (two words, the first in the low half) and the same arithmetic, so
//! the same values bit for bit, rare tail and wedge draws included. It is faster because the
//! fast path, taken by about 99% of the draws, reads its `u64` straight from a buffer filled
//! 512 words at a time, with no per-word refill test, and only a draw that leaves it goes
//! through the scalar code that consumes further words.

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
    if out.is_empty() {
        return;
    }
    let mut batch = [0u32; BATCH_WORDS];
    let mut block = first_word / BLOCK_WORDS as u64;
    let mut skip = (first_word % BLOCK_WORDS as u64) as usize;
    let mut rest = out;
    while !rest.is_empty() {
        let counters = std::array::from_fn(|l| block.wrapping_add(l as u64));
        let words = dispatch_blocks(key, &counters, &[nonce; BLOCKS]);
        // block after block: word w of block l at l * 16 + w
        for (w, word) in words.iter().enumerate() {
            for (l, &value) in word.iter().enumerate() {
                batch[l * BLOCK_WORDS + w] = value;
            }
        }
        let take = (BATCH_WORDS - skip).min(rest.len());
        let (head, tail) = rest.split_at_mut(take);
        head.copy_from_slice(&batch[skip..skip + take]);
        rest = tail;
        skip = 0;
        block = block.wrapping_add(BLOCKS as u64);
    }
}

/// Block `block` of each of the [`STREAMS`] keystreams with nonces `first_nonce ..` (wrapping),
/// word-major: word `w` of the stream with nonce `first_nonce + l` at `out[w * STREAMS + l]`,
/// i.e. stream words `16 block .. 16 block + 16` of sixteen consecutive streams, transposed.
/// For a matrix whose row `i` is stream `i` this is a 16 x 16 tile stored column by column, with
/// no shuffle: each state word is one vector across the streams.
pub fn chacha8_streams(key: &[u32; 8], first_nonce: u64, block: u64, out: &mut [u32; BATCH_WORDS]) {
    let nonces = std::array::from_fn(|l| first_nonce.wrapping_add(l as u64));
    let words = dispatch_blocks(key, &[block; BLOCKS], &nonces);
    for (dst, word) in out.chunks_exact_mut(BLOCKS).zip(&words) {
        dst.copy_from_slice(word);
    }
}

/// [`blocks`] with the widest vectors the CPU has.
fn dispatch_blocks(key: &[u32; 8], counters: &[u64; BLOCKS], nonces: &[u64; BLOCKS]) -> Lanes {
    #[cfg(target_arch = "x86_64")]
    if avx512_detected() {
        // SAFETY: the CPU has avx512f (checked just above); the function has no other
        // requirement (it is safe code compiled with 512-bit vectors enabled).
        return unsafe { blocks_avx512(key, counters, nonces) };
    }
    blocks(key, counters, nonces)
}

/// Whether the CPU has AVX-512F (std caches the CPUID answer).
#[cfg(target_arch = "x86_64")]
fn avx512_detected() -> bool {
    is_x86_feature_detected!("avx512f")
}

/// [`blocks`] compiled with AVX-512 enabled, so each lane-wise loop is one zmm instruction.
///
/// # Safety
///
/// The CPU has avx512f.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn blocks_avx512(key: &[u32; 8], counters: &[u64; BLOCKS], nonces: &[u64; BLOCKS]) -> Lanes {
    blocks(key, counters, nonces)
}

/// The ChaCha8 block function of [`BLOCKS`] blocks at once, lane `l` with block counter
/// `counters[l]` and nonce `nonces[l]`; returns the blocks word-major (word `w` of lane `l` at
/// `[w][l]`), for whatever vectors the caller is compiled for.
#[inline(always)]
fn blocks(key: &[u32; 8], counters: &[u64; BLOCKS], nonces: &[u64; BLOCKS]) -> Lanes {
    const SIGMA: [u32; 4] = [0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574];
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
        quarter_round(&mut x, 0, 4, 8, 12);
        quarter_round(&mut x, 1, 5, 9, 13);
        quarter_round(&mut x, 2, 6, 10, 14);
        quarter_round(&mut x, 3, 7, 11, 15);
        quarter_round(&mut x, 0, 5, 10, 15);
        quarter_round(&mut x, 1, 6, 11, 12);
        quarter_round(&mut x, 2, 7, 8, 13);
        quarter_round(&mut x, 3, 4, 9, 14);
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

mod ziggurat_tables;

use ziggurat_tables::{ZIG_NORM_F, ZIG_NORM_R, ZIG_NORM_X};

/// `u64`s buffered by a [`NormalStream`]: 512 keystream words, two batches of the block
/// function.
const NORMAL_BUFFER_U64S: usize = BATCH_WORDS;

/// Standard normal draws from the ChaCha8 keystream of one key and nonce, read from word 0:
/// value for value (bits included) what `rand_distr::StandardNormal` (0.5) samples from
/// `rand_chacha::ChaCha8Rng` seeded with that key after `set_stream(nonce)` (module docs).
///
/// Every draw consumes whole `u64`s (one on the fast path, one more per uniform of a slow
/// path), so the stream is read two words at a time from an even position and a buffer of
/// `u64`s holds it.
pub struct NormalStream {
    key: [u32; 8],
    nonce: u64,
    /// Stream position (in words) of the first word the next refill reads.
    next_refill: u64,
    /// `u64` `k` is stream words `2k` (low half) and `2k + 1` (high half).
    buffer: Box<[u64; NORMAL_BUFFER_U64S]>,
    /// Next unread entry of `buffer` (`NORMAL_BUFFER_U64S` when a refill is due).
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
            buffer: Box::new([0; NORMAL_BUFFER_U64S]),
            at: NORMAL_BUFFER_U64S,
        }
    }

    /// Refills the buffer with the next `2 NORMAL_BUFFER_U64S` words.
    fn refill(&mut self) {
        let mut words = [0u32; 2 * NORMAL_BUFFER_U64S];
        chacha8_keystream(&self.key, self.nonce, self.next_refill, &mut words);
        for (dst, pair) in self.buffer.iter_mut().zip(words.chunks_exact(2)) {
            *dst = u64::from(pair[0]) | (u64::from(pair[1]) << 32);
        }
        self.next_refill = self.next_refill.wrapping_add(2 * NORMAL_BUFFER_U64S as u64);
        self.at = 0;
    }

    /// The next `u64` of the stream (`ChaCha8Rng::next_u64`).
    fn next_u64(&mut self) -> u64 {
        if self.at == NORMAL_BUFFER_U64S {
            self.refill();
        }
        let bits = self.buffer[self.at];
        self.at += 1;
        bits
    }

    /// Fills `out` with the next `out.len()` standard normals of the stream.
    pub fn fill(&mut self, out: &mut [f64]) {
        let mut done = 0;
        while done < out.len() {
            if self.at == NORMAL_BUFFER_U64S {
                self.refill();
            }
            let run = (NORMAL_BUFFER_U64S - self.at).min(out.len() - done);
            // The fast path over the buffered u64s, up to the first draw that leaves it.
            let mut fast = run;
            let words = &self.buffer[self.at..self.at + run];
            for (k, (&bits, value)) in words.iter().zip(&mut out[done..done + run]).enumerate() {
                let (x, i) = ziggurat_candidate(bits);
                *value = x;
                if x.abs() >= ZIG_NORM_X[i + 1] {
                    fast = k;
                    break;
                }
            }
            self.at += fast;
            done += fast;
            if fast < run {
                // That draw's u64 is consumed; the slow path may consume more.
                let (x, i) = ziggurat_candidate(self.buffer[self.at]);
                self.at += 1;
                out[done] = self.slow_path(x, i);
                done += 1;
            }
        }
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

    /// The dispatched blocks (AVX-512 where the CPU has it) equal the portable ones; on a CPU
    /// without AVX-512 this compares the portable code with itself, so it says so.
    #[test]
    fn dispatched_blocks_equal_portable_blocks() {
        #[cfg(target_arch = "x86_64")]
        if !avx512_detected() {
            eprintln!("no avx512f on this CPU: the AVX-512 ChaCha blocks were not exercised");
        }
        let key = [0x0123_4567, 9, 8, 7, 6, 5, 4, u32::MAX];
        for first in [0, 1, u64::from(u32::MAX) - 3, u64::MAX - 5] {
            let counters = std::array::from_fn(|l| first.wrapping_add(l as u64));
            let nonces = std::array::from_fn(|l| first ^ (l as u64) << 40);
            assert_eq!(
                dispatch_blocks(&key, &counters, &nonces),
                blocks(&key, &counters, &nonces),
                "first counter {first}"
            );
        }
    }
}
