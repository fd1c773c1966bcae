//! The synthetic data of docs/model.md section 2.
//!
//! A sample is `T` tokens in `R^d`: position 0 is relevant (`mu_{y*} + eps`), 1 weakly relevant for
//! the clean class (`rho mu_{y*} + eps`), 2 weakly relevant for the other class
//! (`rho mu_{-y*} + eps`), and 3.. are irrelevant (`eps`), with `eps ~ N(0, sigma^2 I_d)`.
//!
//! Every sample's noise comes from its own ChaCha stream (`set_stream(sample index)` under a key
//! derived from the set's seed), so any range of samples can be generated on its own, in
//! parallel, with the same result; in reference-compatible mode the test set uses the training
//! seed, so test sample i has the noise of training sample i.

use rand::Rng;
use rand_distr::StandardNormal;
use rayon::prelude::*;

use super::config::{LabelNoise, RunConfig, SignalDirections};

use super::init::chacha_key;
use crate::seed::{mix_seed, named_rng};
use benign_kernels::random::NormalStream;

/// The class signals and the fixed head `nu = (mu_+ - mu_-) / ||mu_+ - mu_-|| / ||mu||`.
#[derive(Clone, Debug)]
pub struct Signals {
    /// `mu_+`, the signal of class +1, length d (generated: norm `signal_norm`).
    pub mu_plus: Vec<f64>,
    /// `mu_-`, the signal of class -1, length d (generated: orthogonal to `mu_+`, same norm).
    pub mu_minus: Vec<f64>,
    /// The fixed head `nu`, length d.
    pub nu: Vec<f64>,
}

impl Signals {
    /// The signals of a configuration.
    pub fn new(config: &RunConfig) -> Self {
        let d = config.dim;
        let (mut plus, mut minus) = (vec![0.0; d], vec![0.0; d]);
        match config.signal_directions {
            SignalDirections::Axis => {
                plus[0] = 1.0;
                minus[1] = 1.0;
            }
            SignalDirections::Random => {
                let mut rng = named_rng(config.seed, "signal-directions");
                plus.iter_mut()
                    .for_each(|v| *v = rng.sample(StandardNormal));
                minus
                    .iter_mut()
                    .for_each(|v| *v = rng.sample(StandardNormal));
                normalise(&mut plus);
                let overlap: f64 = plus.iter().zip(&minus).map(|(a, b)| a * b).sum();
                minus
                    .iter_mut()
                    .zip(&plus)
                    .for_each(|(m, p)| *m -= overlap * p);
                normalise(&mut minus);
            }
        }
        let s = config.signal_norm;
        plus.iter_mut().for_each(|v| *v *= s);
        minus.iter_mut().for_each(|v| *v *= s);
        Self::from_signals(plus, minus)
    }

    /// Builds `nu` from the two signals.
    pub fn from_signals(mu_plus: Vec<f64>, mu_minus: Vec<f64>) -> Self {
        let diff: Vec<f64> = mu_plus.iter().zip(&mu_minus).map(|(a, b)| a - b).collect();
        let diff_norm = diff.iter().map(|v| v * v).sum::<f64>().sqrt();
        let mu_norm = mu_plus.iter().map(|v| v * v).sum::<f64>().sqrt();
        let nu = diff.iter().map(|v| v / diff_norm / mu_norm).collect();
        Signals {
            mu_plus,
            mu_minus,
            nu,
        }
    }

    /// `mu_y` for a label `y = +-1`.
    pub fn class_signal(&self, y: f64) -> &[f64] {
        if y > 0.0 {
            &self.mu_plus
        } else {
            &self.mu_minus
        }
    }
}

fn normalise(v: &mut [f64]) {
    let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
}

/// A training set: tokens `(n T) x d` sample-major, observed and clean labels, noise flags.
#[derive(Clone, Debug)]
pub struct TrainSet {
    /// Training samples n.
    pub samples: usize,
    /// Tokens per sample T.
    pub tokens_per_sample: usize,
    /// Token dimension d.
    pub dim: usize,
    /// The `n T` tokens of length d, sample-major: token `t` of sample `i` starts at `(i T + t) d`.
    pub tokens: Vec<f64>,
    /// Observed (possibly flipped) labels `+-1`.
    pub labels: Vec<f64>,
    /// Clean labels `+-1` (the signals follow them).
    pub clean_labels: Vec<f64>,
    /// Whether the observed label differs from the clean one.
    pub noisy: Vec<bool>,
}

/// Balanced labels in order: the first `floor(m/2)` are `+1`, the rest `-1`.
pub fn balanced_labels(m: usize) -> Vec<f64> {
    (0..m).map(|i| if i < m / 2 { 1.0 } else { -1.0 }).collect()
}

/// Clean and observed training labels under the configured label noise.
pub fn training_labels(config: &RunConfig) -> (Vec<f64>, Vec<f64>, Vec<bool>) {
    let n = config.samples;
    let mut clean = balanced_labels(n);
    let mut noisy = vec![false; n];
    match config.label_noise {
        LabelNoise::Block => {
            // k = ceil(n eta) flips, floor(k/2) from the start of each class block; an odd k
            // drops one flip, as the reference does.
            let k = (n as f64 * config.eta - 1e-9).ceil().max(0.0) as usize;
            let per_class = k / 2;
            let positives = n / 2;
            noisy[..per_class.min(positives)].fill(true);
            noisy[positives..(positives + per_class).min(n)].fill(true);
        }
        LabelNoise::Bernoulli => {
            let mut rng = named_rng(config.seed, "label-noise");
            // Fisher-Yates shuffle of the balanced labels, then independent flips.
            for i in (1..n).rev() {
                let j = rng.random_range(0..=i);
                clean.swap(i, j);
            }
            for flag in noisy.iter_mut() {
                *flag = rng.random_bool(config.eta);
            }
        }
    }
    let observed = clean
        .iter()
        .zip(&noisy)
        .map(|(&y, &f)| if f { -y } else { y })
        .collect();
    (clean, observed, noisy)
}

/// The token recipe: coefficients `(a_+, a_-)` of the signal part `a_+ mu_+ + a_- mu_-` of token
/// `position` of a sample with clean label `y` (docs/model.md section 2). Position 0 (relevant)
/// carries `mu_y`, position 1 (weak, same class) `rho mu_y`, position 2 (weak, other class)
/// `rho mu_-y`, the rest none. Every place that builds a token or its projections uses it.
pub fn token_signal(y: f64, position: usize, rho: f64) -> (f64, f64) {
    let (same, other) = match position {
        0 => (1.0, 0.0),
        1 => (rho, 0.0),
        2 => (0.0, rho),
        _ => (0.0, 0.0),
    };
    if y > 0.0 {
        (same, other)
    } else {
        (other, same)
    }
}

/// Generates the tokens of samples `first .. first + labels.len()` of the set with seed `seed`
/// into `out` (`labels.len() * T * d` entries, sample-major), in parallel over samples.
pub fn fill_samples(
    config: &RunConfig,
    signals: &Signals,
    seed: u64,
    first: usize,
    clean_labels: &[f64],
    out: &mut [f64],
) {
    let (t, d) = (config.tokens, config.dim);
    assert_eq!(out.len(), clean_labels.len() * t * d);
    // The normals of `named_rng(seed, "token-noise")` after `set_stream(sample)`, drawn by
    // `NormalStream` (rand_distr's StandardNormal on that stream, value for value, faster).
    let key = chacha_key(mix_seed(seed, "token-noise"));
    let (sigma, rho) = (config.sigma, config.rho);
    out.par_chunks_mut(t * d)
        .zip(clean_labels.par_iter())
        .enumerate()
        .for_each(|(offset, (sample, &y))| {
            NormalStream::new(&key, (first + offset) as u64).fill(sample);
            for v in sample.iter_mut() {
                *v *= sigma;
            }
            for (position, token) in sample.chunks_exact_mut(d).enumerate() {
                let (a_plus, a_minus) = token_signal(y, position, rho);
                for (signal, scale) in [(&signals.mu_plus, a_plus), (&signals.mu_minus, a_minus)] {
                    if scale != 0.0 {
                        token
                            .iter_mut()
                            .zip(signal)
                            .for_each(|(v, s)| *v += scale * s);
                    }
                }
            }
        });
}

/// The training set of a configuration.
pub fn training_set(config: &RunConfig, signals: &Signals) -> TrainSet {
    let (clean, observed, noisy) = training_labels(config);
    let (n, t, d) = (config.samples, config.tokens, config.dim);
    let mut tokens = vec![0.0; n * t * d];
    fill_samples(config, signals, config.seed, 0, &clean, &mut tokens);
    TrainSet {
        samples: n,
        tokens_per_sample: t,
        dim: d,
        tokens,
        labels: observed,
        clean_labels: clean,
        noisy,
    }
}

/// Where test samples come from: generated chunk by chunk, or a set loaded from files.
#[derive(Clone, Debug)]
pub enum TestSource {
    /// Drawn from the configuration's law, a chunk at a time, never held whole.
    Generated {
        /// The data settings (`test_size` samples of `tokens` x `dim`).
        config: RunConfig,
        /// The class signals the test tokens carry (the training set's).
        signals: Signals,
        /// Seed of the test draw (the configuration's effective test seed).
        seed: u64,
    },
    /// A test set read from files (`--data-dir`).
    Loaded {
        /// Tokens per sample T.
        tokens_per_sample: usize,
        /// Token dimension d.
        dim: usize,
        /// The tokens, sample-major as in [`TrainSet::tokens`].
        tokens: Vec<f64>,
        /// Clean labels `+-1`.
        labels: Vec<f64>,
    },
}

impl TestSource {
    /// The test set of `config`, drawn from its law with the training set's `signals` and the
    /// configuration's effective test seed.
    pub fn generated(config: &RunConfig, signals: Signals) -> TestSource {
        TestSource::Generated {
            config: config.clone(),
            signals,
            seed: config.effective_test_seed(),
        }
    }

    /// Clean labels of all test samples.
    pub fn labels(&self) -> Vec<f64> {
        match self {
            TestSource::Generated { config, .. } => balanced_labels(config.test_size),
            TestSource::Loaded { labels, .. } => labels.clone(),
        }
    }

    /// Number of test samples.
    pub fn len(&self) -> usize {
        match self {
            TestSource::Generated { config, .. } => config.test_size,
            TestSource::Loaded { labels, .. } => labels.len(),
        }
    }

    /// Whether there is no test sample.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every test token in one sample-major array of `len() * per_sample` values (`per_sample`
    /// = T d), for the trainers that hold the test set.
    pub fn materialise(&self, per_sample: usize) -> Vec<f64> {
        let mut tokens = Vec::with_capacity(self.len() * per_sample);
        self.for_each_chunk(64, |_, chunk| tokens.extend_from_slice(chunk));
        tokens
    }

    /// Calls `visit(first_sample, tokens)` for consecutive chunks of at most `chunk` samples;
    /// generated chunks exist only during their visit.
    pub fn for_each_chunk(&self, chunk: usize, mut visit: impl FnMut(usize, &[f64])) {
        let chunk = chunk.max(1);
        match self {
            TestSource::Generated {
                config,
                signals,
                seed,
            } => {
                let labels = balanced_labels(config.test_size);
                let per_sample = config.tokens * config.dim;
                let mut buffer = vec![0.0; chunk.min(labels.len()) * per_sample];
                for (c, block) in labels.chunks(chunk).enumerate() {
                    let first = c * chunk;
                    let out = &mut buffer[..block.len() * per_sample];
                    fill_samples(config, signals, *seed, first, block, out);
                    visit(first, out);
                }
            }
            TestSource::Loaded {
                tokens_per_sample,
                dim,
                tokens,
                ..
            } => {
                for (c, block) in tokens.chunks(chunk * tokens_per_sample * dim).enumerate() {
                    visit(c * chunk, block);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_flips_match_the_reference() {
        let config = RunConfig::default();
        let (clean, observed, noisy) = training_labels(&config);
        let flipped: Vec<usize> = (0..20).filter(|&i| noisy[i]).collect();
        assert_eq!(flipped, vec![0, 1, 10, 11]);
        assert!(clean[..10].iter().all(|&y| y == 1.0) && clean[10..].iter().all(|&y| y == -1.0));
        assert_eq!(observed[0], -1.0);
        assert_eq!(observed[10], 1.0);
        assert_eq!(observed[2], 1.0);
    }

    #[test]
    fn token_roles_carry_their_signals() {
        let config = RunConfig {
            dim: 50,
            sigma: 0.0,
            ..RunConfig::default()
        };
        let signals = Signals::new(&config);
        let set = training_set(&config, &signals);
        let d = config.dim;
        // Sample 2 is clean +1: relevant token = 20 e_1, weak-same = 2 e_1, weak-other = 2 e_2.
        let s = &set.tokens[2 * 8 * d..3 * 8 * d];
        assert_eq!((s[0], s[1]), (20.0, 0.0));
        assert!((s[d] - 2.0).abs() < 1e-12 && s[2 * d + 1] - 2.0 < 1e-12);
        assert!(s[3 * d..].iter().all(|&v| v == 0.0));
        let nu_dot_relevant: f64 = signals.nu.iter().zip(&s[..d]).map(|(a, b)| a * b).sum();
        assert!((nu_dot_relevant - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-12);
    }

    #[test]
    fn chunks_reproduce_the_whole_set_and_compat_mode_shares_noise() {
        let mut config = RunConfig {
            dim: 17,
            test_size: 23,
            ..RunConfig::default()
        };
        config.apply_reference_compat();
        let signals = Signals::new(&config);
        let train = training_set(&config, &signals);
        let source = TestSource::generated(&config, signals.clone());
        let mut whole = Vec::new();
        source.for_each_chunk(5, |first, tokens| {
            assert_eq!(first * 8 * 17, whole.len());
            whole.extend_from_slice(tokens);
        });
        assert_eq!(whole.len(), 23 * 8 * 17);
        // Test samples 0..9 are training inputs 0..9 in reference-compatible mode.
        assert_eq!(&whole[..10 * 8 * 17], &train.tokens[..10 * 8 * 17]);
        // With an independent seed they differ.
        let independent = TestSource::generated(
            &RunConfig {
                dim: 17,
                test_size: 23,
                ..RunConfig::default()
            },
            signals,
        );
        independent.for_each_chunk(64, |_, tokens| assert_ne!(tokens[5], whole[5]));
    }

    #[test]
    fn bernoulli_flips_are_seeded() {
        let config = RunConfig {
            label_noise: LabelNoise::Bernoulli,
            samples: 400,
            ..RunConfig::default()
        };
        let (_, _, a) = training_labels(&config);
        let (_, _, b) = training_labels(&config);
        assert_eq!(a, b);
        let rate = a.iter().filter(|&&f| f).count() as f64 / 400.0;
        assert!((rate - 0.2).abs() < 0.06, "flip rate {rate}");
    }
}
