//! The initial `W_0`, entrywise `U(-1/sqrt(d), 1/sqrt(d))` (default) or `N(0, 1/(3d))`, from a
//! counter-based stream.
//!
//! Uniform: row `i` of `W_0` is the ChaCha8 stream number `i` under the key `mix_seed(seed,
//! "w0")`: entry `(i, j)` comes from the `j`-th 32-bit word of that stream, mapped to the
//! midpoint of its cell, `(2 (u + 1/2) / 2^32 - 1) / sqrt(d)`.
//!
//! Gaussian: row `i` is the ChaCha8 stream number `i` under the key `mix_seed(seed,
//! "w0-gaussian")` (a different key, so the two laws never share words); its entries are the
//! successive `StandardNormal` draws (rand_distr's ziggurat, which consumes a variable number of
//! words per draw) of that stream from word 0, times `1 / sqrt(3d)`, the variance of the uniform
//! draw. A row is therefore still a function of `(seed, i)` alone.
//!
//! Either way any block of rows can be generated on its own, in parallel, bit-identically: the
//! dense trainer (which stores `W`) and the subspace trainer (which streams `W_0` twice and never
//! stores it) see the same matrix.

use benign_kernels::Float;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use rayon::prelude::*;

use super::config::{InitKind, RunConfig};
use crate::seed::mix_seed;

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
                let base = ChaCha8Rng::seed_from_u64(mix_seed(*seed, "w0-gaussian"));
                let scale = 1.0 / (3.0 * d as f64).sqrt();
                out.par_chunks_mut(d).enumerate().for_each(|(r, row)| {
                    let mut rng = base.clone();
                    rng.set_stream((first + r) as u64);
                    rng.set_word_pos(0);
                    for cell in row.iter_mut() {
                        let e: f64 = rng.sample(StandardNormal);
                        *cell = T::from_f64(e * scale);
                    }
                });
            }
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
