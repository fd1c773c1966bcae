//! The ChaCha8 block function and the ziggurat's fast path with AVX-512 intrinsics.
//!
//! The portable code of `random.rs` computes the same values (the tests compare them). What this
//! adds is that everything stays in zmm registers: the rounds, the final addition of the input
//! state and, for a keystream, the 16 x 16 transpose from one vector per state word to one
//! vector per block, stored straight into the caller's buffer.
//!
//! # Soundness
//!
//! Every function here is compiled with `avx512f` enabled and is only called after
//! `is_x86_feature_detected!("avx512f")` answered yes (`random.rs`'s `avx512_detected`), so
//! every instruction runs on a CPU that has it. Memory is touched only through the unaligned
//! loads and stores and the gathers below, each with its bounds stated beside it.

use std::arch::x86_64::{
    __m512i, _mm512_abs_pd, _mm512_add_epi32, _mm512_add_epi64, _mm512_and_si512,
    _mm512_castsi512_pd, _mm512_cmp_pd_mask, _mm512_i64gather_pd, _mm512_loadu_si512,
    _mm512_mul_pd, _mm512_or_si512, _mm512_rol_epi32, _mm512_set1_epi32, _mm512_set1_epi64,
    _mm512_set1_pd, _mm512_shuffle_i32x4, _mm512_srli_epi64, _mm512_storeu_pd, _mm512_storeu_si512,
    _mm512_sub_pd, _mm512_unpackhi_epi32, _mm512_unpackhi_epi64, _mm512_unpacklo_epi32,
    _mm512_unpacklo_epi64, _mm512_xor_si512, _CMP_LT_OQ,
};

use std::mem::MaybeUninit;

use super::ziggurat_tables::ZIG_NORM_X;
use super::{BATCH_WORDS, BLOCKS, BLOCK_WORDS, DOUBLE_ROUND, SIGMA};

/// The sixteen state words of sixteen blocks (lane `l` is block `l`) after the 4 double rounds
/// plus the input state: the portable `blocks`, in registers.
#[inline]
#[target_feature(enable = "avx512f")]
fn block_words(
    key: &[u32; 8],
    counters: &[u64; BLOCKS],
    nonces: &[u64; BLOCKS],
) -> [__m512i; BLOCK_WORDS] {
    let mut input = [_mm512_set1_epi32(0); BLOCK_WORDS];
    for (w, &word) in SIGMA.iter().chain(key.iter()).enumerate() {
        input[w] = _mm512_set1_epi32(word as i32);
    }
    let mut tail = [[0u32; BLOCKS]; 4];
    for l in 0..BLOCKS {
        tail[0][l] = counters[l] as u32;
        tail[1][l] = (counters[l] >> 32) as u32;
        tail[2][l] = nonces[l] as u32;
        tail[3][l] = (nonces[l] >> 32) as u32;
    }
    for (w, words) in tail.iter().enumerate() {
        // SAFETY: reads the 64 bytes of `words`, sixteen u32.
        input[12 + w] = unsafe { _mm512_loadu_si512(words.as_ptr().cast()) };
    }
    let mut x = input;
    // loop over the double rounds: ChaCha8 has four
    for _ in 0..4 {
        for [a, b, c, d] in DOUBLE_ROUND {
            quarter_round(&mut x, a, b, c, d);
        }
    }
    std::array::from_fn(|w| _mm512_add_epi32(x[w], input[w]))
}

/// One quarter round on state words `a`, `b`, `c`, `d` of every lane.
#[inline]
#[target_feature(enable = "avx512f")]
fn quarter_round(x: &mut [__m512i; BLOCK_WORDS], a: usize, b: usize, c: usize, d: usize) {
    let (mut va, mut vb, mut vc, mut vd) = (x[a], x[b], x[c], x[d]);
    va = _mm512_add_epi32(va, vb);
    vd = _mm512_rol_epi32::<16>(_mm512_xor_si512(vd, va));
    vc = _mm512_add_epi32(vc, vd);
    vb = _mm512_rol_epi32::<12>(_mm512_xor_si512(vb, vc));
    va = _mm512_add_epi32(va, vb);
    vd = _mm512_rol_epi32::<8>(_mm512_xor_si512(vd, va));
    vc = _mm512_add_epi32(vc, vd);
    vb = _mm512_rol_epi32::<7>(_mm512_xor_si512(vb, vc));
    (x[a], x[b], x[c], x[d]) = (va, vb, vc, vd);
}

/// The sixteen blocks of `block_words` block after block (block `l`'s word `w` at
/// `out[16 l + w]`), i.e. stream order when the counters are consecutive.
#[target_feature(enable = "avx512f")]
pub(super) fn blocks_in_stream_order(
    key: &[u32; 8],
    counters: &[u64; BLOCKS],
    nonces: &[u64; BLOCKS],
    out: &mut [u32; BATCH_WORDS],
) {
    let x = block_words(key, counters, nonces);
    // Transpose the 16 x 16 matrix of words (row w = word w of every block) in four steps.
    // 1. Within each 128-bit lane q (blocks 4q..4q + 4): pairs of words 2i, 2i + 1 of blocks
    //    4q, 4q + 1 (unpacklo) and 4q + 2, 4q + 3 (unpackhi).
    let pairs: [__m512i; 16] = std::array::from_fn(|k| {
        let (i, high) = (k / 2, k % 2 == 1);
        if high {
            _mm512_unpackhi_epi32(x[2 * i], x[2 * i + 1])
        } else {
            _mm512_unpacklo_epi32(x[2 * i], x[2 * i + 1])
        }
    });
    // 2. Quads: `quads[4 j + s]` holds, in 128-bit lane q, words 4j..4j + 4 of block 4q + s.
    //    pairs[4j] (words 4j, 4j + 1) and pairs[4j + 2] (words 4j + 2, 4j + 3) give blocks
    //    4q (lo) and 4q + 1 (hi); pairs[4j + 1] and pairs[4j + 3] give 4q + 2 and 4q + 3.
    let quads: [__m512i; 16] = std::array::from_fn(|k| {
        let (j, s) = (k / 4, k % 4);
        let (a, b) = if s < 2 {
            (pairs[4 * j], pairs[4 * j + 2])
        } else {
            (pairs[4 * j + 1], pairs[4 * j + 3])
        };
        if s % 2 == 0 {
            _mm512_unpacklo_epi64(a, b)
        } else {
            _mm512_unpackhi_epi64(a, b)
        }
    });
    // 3-4. For each s, a 4 x 4 transpose of 128-bit lanes among quads[s], quads[4 + s],
    //    quads[8 + s], quads[12 + s]: block 4q + s gets lane q of each, in order of j.
    for s in 0..4 {
        let c = [quads[s], quads[4 + s], quads[8 + s], quads[12 + s]];
        // lanes (0, 2) and (1, 3) of c0 then c1, and of c2 then c3
        let e0 = _mm512_shuffle_i32x4::<0x88>(c[0], c[1]);
        let e1 = _mm512_shuffle_i32x4::<0xdd>(c[0], c[1]);
        let e2 = _mm512_shuffle_i32x4::<0x88>(c[2], c[3]);
        let e3 = _mm512_shuffle_i32x4::<0xdd>(c[2], c[3]);
        let rows = [
            _mm512_shuffle_i32x4::<0x88>(e0, e2),
            _mm512_shuffle_i32x4::<0x88>(e1, e3),
            _mm512_shuffle_i32x4::<0xdd>(e0, e2),
            _mm512_shuffle_i32x4::<0xdd>(e1, e3),
        ];
        for (q, row) in rows.into_iter().enumerate() {
            let block = 4 * q + s;
            // SAFETY: writes words 16 block .. 16 block + 16 of `out`, which holds 256
            // (block < 16).
            unsafe { _mm512_storeu_si512(out[BLOCK_WORDS * block..].as_mut_ptr().cast(), row) };
        }
    }
}

/// The sixteen blocks of `block_words` word-major (word `w` of block `l` at `out[16 w + l]`):
/// one store per state word.
#[target_feature(enable = "avx512f")]
pub(super) fn blocks_word_major(
    key: &[u32; 8],
    counters: &[u64; BLOCKS],
    nonces: &[u64; BLOCKS],
    out: &mut [u32; BATCH_WORDS],
) {
    let x = block_words(key, counters, nonces);
    for (w, word) in x.into_iter().enumerate() {
        // SAFETY: writes entries 16 w .. 16 w + 16 of `out`, which holds 256 (w < 16).
        unsafe { _mm512_storeu_si512(out[BLOCKS * w..].as_mut_ptr().cast(), word) };
    }
}

/// The ziggurat's fast path over `words` (stream words, two per `u64`, the first in the low
/// half) eight candidates at a time: writes candidate `k` to `out[k]` and returns how many
/// leading candidates passed the rectangle test (`|x| < x_{i+1}`), as the scalar loop of
/// `NormalStream::fill` does; entries of `out` from the first failing candidate on are
/// unspecified. Each candidate is computed with the same IEEE operations as the scalar
/// `ziggurat_candidate` (and, or, subtract, multiply, compare), so the values and decisions are
/// the same.
#[target_feature(enable = "avx512f")]
pub(super) fn ziggurat_fast_prefix(words: &[u32], out: &mut [MaybeUninit<f64>]) -> usize {
    let count = out.len().min(words.len() / 2);
    let strip_mask = _mm512_set1_epi64(0xff);
    let exponent = _mm512_set1_epi64((1024u64 << 52) as i64);
    let three = _mm512_set1_pd(3.0);
    let one = _mm512_set1_epi64(1);
    let mut k = 0;
    while k + 8 <= count {
        // SAFETY: reads words 2k .. 2k + 16 of `words`, which holds at least 2 count of them
        // (k + 8 <= count).
        let bits = unsafe { _mm512_loadu_si512(words[2 * k..].as_ptr().cast()) };
        let strip = _mm512_and_si512(bits, strip_mask);
        let u = _mm512_sub_pd(
            _mm512_castsi512_pd(_mm512_or_si512(_mm512_srli_epi64::<12>(bits), exponent)),
            three,
        );
        // SAFETY: the strips are 0..=255 and the next ones 1..=256, all indices of ZIG_NORM_X
        // (257 entries), read 8 bytes each (scale 8).
        let (x_strip, x_next) = unsafe {
            (
                _mm512_i64gather_pd::<8>(strip, ZIG_NORM_X.as_ptr()),
                _mm512_i64gather_pd::<8>(_mm512_add_epi64(strip, one), ZIG_NORM_X.as_ptr()),
            )
        };
        let x = _mm512_mul_pd(u, x_strip);
        // `|x| < x_{i+1}`: no NaN can occur (u and the table are finite), so this is exactly
        // the negation of the scalar `|x| >= x_{i+1}`.
        let passed = _mm512_cmp_pd_mask::<_CMP_LT_OQ>(_mm512_abs_pd(x), x_next);
        // SAFETY: writes entries k .. k + 8 of `out` (k + 8 <= count <= out.len()).
        unsafe { _mm512_storeu_pd(out[k..].as_mut_ptr().cast(), x) };
        if passed != 0xff {
            return k + (!passed).trailing_zeros() as usize;
        }
        k += 8;
    }
    k + super::scalar_fast_prefix(&words[2 * k..2 * count], &mut out[k..count])
}
