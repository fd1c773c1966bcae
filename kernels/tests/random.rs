//! The ChaCha8 keystream against `rand_chacha`'s `ChaCha8Rng`, word for word.

use benign_kernels::random::chacha8_keystream;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// `len` words of `ChaCha8Rng` from `seed` on stream `nonce` from word `first_word`.
fn rand_chacha_words(seed: [u8; 32], nonce: u64, first_word: u64, len: usize) -> Vec<u32> {
    let mut rng = ChaCha8Rng::from_seed(seed);
    rng.set_stream(nonce);
    rng.set_word_pos(u128::from(first_word));
    (0..len).map(|_| rng.next_u32()).collect()
}

fn key_words(seed: &[u8; 32]) -> [u32; 8] {
    std::array::from_fn(|i| u32::from_le_bytes(seed[4 * i..4 * i + 4].try_into().unwrap()))
}

#[test]
fn keystream_matches_rand_chacha_at_any_position_and_length() {
    let mut draw = ChaCha8Rng::seed_from_u64(11);
    for case in 0..200 {
        let seed: [u8; 32] = draw.random();
        let nonce: u64 = draw.random();
        // unaligned starts, lengths across several 256-word batches, counters crossing the
        // 32-bit boundary of the low counter word, and word positions up to 2^64
        let first_word = match case % 4 {
            0 => draw.random_range(0..5000),
            1 => (u64::from(u32::MAX) << 4) - draw.random_range(0..600),
            2 => u64::MAX - draw.random_range(0..600),
            _ => draw.random::<u64>() >> 8,
        };
        let len = draw.random_range(0..1100);
        let mut ours = vec![0u32; len];
        chacha8_keystream(&key_words(&seed), nonce, first_word, &mut ours);
        assert_eq!(
            ours,
            rand_chacha_words(seed, nonce, first_word, len),
            "case {case}: nonce {nonce}, first word {first_word}, {len} words"
        );
    }
}

#[test]
fn streams_are_the_same_block_of_consecutive_streams() {
    let mut draw = ChaCha8Rng::seed_from_u64(12);
    for case in 0..50 {
        let seed: [u8; 32] = draw.random();
        let first_nonce = if case % 2 == 0 {
            draw.random_range(0..1000)
        } else {
            u64::MAX - 7
        };
        let block = if case % 3 == 0 {
            u64::from(u32::MAX)
        } else {
            draw.random_range(0..10_000)
        };
        let mut ours = [0u32; 256];
        benign_kernels::random::chacha8_streams(&key_words(&seed), first_nonce, block, &mut ours);
        for l in 0..16u64 {
            let expected = rand_chacha_words(seed, first_nonce.wrapping_add(l), 16 * block, 16);
            let column: Vec<u32> = (0..16).map(|w| ours[w * 16 + l as usize]).collect();
            assert_eq!(
                column,
                expected,
                "case {case}: stream {}",
                first_nonce.wrapping_add(l)
            );
        }
    }
}
