//! The initial `W_0`, entrywise `U(-1/sqrt(d), 1/sqrt(d))`, from a counter-based stream.
//!
//! Row `i` of `W_0` is the ChaCha8 stream number `i` under a key derived from the seed: entry
//! `(i, j)` comes from the `j`-th 32-bit word of that stream, mapped to the midpoint of its cell,
//! `(2 (u + 1/2) / 2^32 - 1) / sqrt(d)`. Any block of rows can therefore be generated on its own,
//! in parallel, bit-identically: the dense trainer (which stores `W`) and the subspace trainer
//! (which streams `W_0` twice and never stores it) see the same matrix.

use benign_kernels::Float;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::data::mix_seed;

/// Where `W_0` comes from.
#[derive(Clone, Debug)]
pub enum InitSource {
    /// Generated from the counter-based stream of a seed.
    Stream { seed: u64, dim: usize },
    /// Given explicitly (d x d row-major), e.g. loaded from `w0.npy`.
    Matrix { dim: usize, values: Vec<f64> },
}

impl InitSource {
    /// The stream of a run seed.
    pub fn from_seed(seed: u64, dim: usize) -> Self {
        InitSource::Stream { seed, dim }
    }

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
            InitSource::Stream { seed, .. } => {
                let base = ChaCha8Rng::seed_from_u64(mix_seed(*seed, "w0"));
                let scale = 2.0 / (d as f64).sqrt() / 4_294_967_296.0;
                let bound = 1.0 / (d as f64).sqrt();
                out.par_chunks_mut(d).enumerate().for_each(|(r, row)| {
                    let mut rng = base.clone();
                    rng.set_stream((first + r) as u64);
                    rng.set_word_pos(0);
                    let mut bytes = [0u8; 1024];
                    for cells in row.chunks_mut(bytes.len() / 4) {
                        // `fill_bytes` over whole 4-byte words consumes one stream word per
                        // entry, exactly like `next_u32`.
                        let bytes = &mut bytes[..4 * cells.len()];
                        rng.fill_bytes(bytes);
                        for (cell, w) in cells.iter_mut().zip(bytes.chunks_exact(4)) {
                            let u = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
                            *cell = T::from_f64((f64::from(u) + 0.5) * scale - bound);
                        }
                    }
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
