//! The resolved configuration of a synthetic run, its presets and its validation.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Where the two class signals point.
/// The dimension whose learning rate [`StepScaling::PerDim`] holds fixed: the paper's d = 2000.
pub const REFERENCE_DIM: usize = 2000;

/// How a sweep or a boundary measurement sets the learning rate across dimensions. One step
/// moves a token's logit by about `lr sigma^2 d / 3` (docs/law.md), so a fixed `lr` is a
/// different experiment at each d.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum StepScaling {
    /// The learning rate as given, at every d.
    #[default]
    Fixed,
    /// `lr0 * REFERENCE_DIM / d`: the effective step `lr sigma^2 d` of `lr0` at d = 2000.
    PerDim,
}

impl StepScaling {
    /// The learning rate at dimension `dim` for the given one, `lr0`.
    pub fn lr(self, lr0: f64, dim: usize) -> f64 {
        match self {
            StepScaling::Fixed => lr0,
            StepScaling::PerDim => lr0 * REFERENCE_DIM as f64 / dim as f64,
        }
    }

    /// Whether the learning rate stays as given at every d.
    pub fn is_fixed(&self) -> bool {
        *self == StepScaling::Fixed
    }
}

/// How the two class signals are oriented.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SignalDirections {
    /// `mu_+ = ||mu|| e_1`, `mu_- = ||mu|| e_2` (the reference code).
    Axis,
    /// A random orthonormal pair drawn from the seed.
    Random,
}

/// How training labels are corrupted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum LabelNoise {
    /// The reference's deterministic flips: balanced ordered labels, `k = ceil(n eta)`, the first
    /// `floor(k/2)` samples of each class block flipped.
    Block,
    /// Independent Bernoulli(eta) flips, samples in shuffled order (what the theory assumes).
    Bernoulli,
}

/// Which trainer integrates gradient descent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum TrainerKind {
    /// Stores `W` (d x d) and steps it in place.
    Dense,
    /// The exact reduction to the span of the training tokens (docs/model.md section 4); never stores `W`.
    Subspace,
    /// The exact reduction with its inputs drawn from their joint law, never forming a d-vector:
    /// cost independent of d (`--init gaussian` and generated data only; see `synthetic::law`).
    Law,
}

/// The entrywise law of `W_0`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum InitKind {
    /// `U(-1/sqrt(d), 1/sqrt(d))`, the reference's draw.
    #[default]
    Uniform,
    /// `N(0, 1/(3d))`: the uniform draw's variance, and a rotation-invariant law, which is what
    /// lets `--trainer law` sample the start-up without forming `W_0`.
    Gaussian,
}

impl InitKind {
    /// Whether this is the default (omitted from config.json, so that run ids and job keys of
    /// configurations written before the option existed are unchanged).
    pub fn is_uniform(&self) -> bool {
        *self == InitKind::Uniform
    }
}

/// Which model is trained on the data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    /// The paper's model: attention with a trainable `W` (or `p`) and the fixed head `nu`.
    #[default]
    Attention,
    /// The one-layer transformer encoder of the paper's appendix (Figures 6-7), every parameter
    /// trained.
    Encoder,
}

impl ModelKind {
    /// The precision a model trains in unless told otherwise: f64 for the attention model (its
    /// dynamics are compared with closed forms), f32 for the encoder, as PyTorch trains it.
    pub fn default_precision(self) -> Precision {
        match self {
            ModelKind::Attention => Precision::F64,
            ModelKind::Encoder => Precision::F32,
        }
    }
}

/// Element type of the training state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    /// Single precision: half the memory traffic of f64, relative rounding about 6e-8.
    F32,
    /// Double precision.
    F64,
}

impl Precision {
    /// Bytes of one element.
    pub fn bytes(self) -> usize {
        match self {
            Precision::F32 => 4,
            Precision::F64 => 8,
        }
    }
}

/// The three settings of the paper's Figure 3.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// Benign overfitting: d = 2000, ||mu|| = 20.
    Balanced,
    /// Harmful overfitting (large noise): d = 4500, ||mu|| = 5.
    Harmful,
    /// Not overfitting (large signal): d = 500, ||mu|| = 100.
    LargeSignal,
}

impl Preset {
    /// `(dim, signal_norm)` of the preset.
    pub fn dim_and_signal(self) -> (usize, f64) {
        match self {
            Preset::Balanced => (2000, 20.0),
            Preset::Harmful => (4500, 5.0),
            Preset::LargeSignal => (500, 100.0),
        }
    }
}

/// Everything that determines a synthetic run. [`RunConfig::default`] is the paper's setting
/// (docs/model.md section 4); [`RunConfig::resolve`] fills in the derived fields so that the written
/// `config.json` is complete.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// Training samples n.
    pub samples: usize,
    /// Tokens per sample T (positions 0, 1, 2 carry signal; 3.. are irrelevant).
    pub tokens: usize,
    /// Token dimension d.
    pub dim: usize,
    /// `||mu||`, the norm of each class signal.
    pub signal_norm: f64,
    /// Strength of the weakly relevant tokens.
    pub rho: f64,
    /// Label-noise rate.
    pub eta: f64,
    /// Standard deviation of the Gaussian token noise.
    pub sigma: f64,
    /// How the class signals are oriented.
    pub signal_directions: SignalDirections,
    /// How training labels are flipped.
    pub label_noise: LabelNoise,
    /// Seed of the training set, `W_0` and the random signal directions (a decimal string in
    /// JSON, exact beyond 2^53).
    #[serde(with = "crate::io::seed_text")]
    pub seed: u64,
    /// Seed of the test set; `None` until resolved (then derived from `seed`, or equal to it in
    /// reference-compatible mode).
    #[serde(default, with = "crate::io::seed_text::option")]
    pub test_seed: Option<u64>,
    /// Test samples (clean labels).
    pub test_size: usize,
    /// Reproduce the reference code's quirks: block flips, axis signals, test set drawn with the
    /// training seed.
    pub reference_compat: bool,
    /// Learning rate of full-batch gradient descent.
    pub lr: f64,
    /// Gradient-descent steps.
    pub steps: usize,
    /// Evaluate the metrics every this many steps (and at the last step).
    pub eval_every: usize,
    /// The algorithm that trains the model.
    pub trainer: TrainerKind,
    /// The entrywise law of `W_0` (absent from older config.json files: uniform).
    #[serde(default, skip_serializing_if = "InitKind::is_uniform")]
    pub init: InitKind,
    /// Element type of the training state.
    pub precision: Precision,
    /// Element type of the subspace trainer's start-up products (`W_0^T B`, `W_0 A`, test
    /// projections); `None` until resolved, then [`auto_startup_precision`].
    #[serde(default)]
    pub startup_precision: Option<Precision>,
    /// Training samples whose full attention row is recorded at every step; `None` until resolved
    /// (then the first clean and the first noisy sample).
    pub track_samples: Option<Vec<usize>>,
    /// The model trained.
    #[serde(default)]
    pub model: ModelKind,
    /// Hidden width of the encoder's MLP; `None`: equal to `dim`.
    #[serde(default)]
    pub mlp_dim: Option<usize>,
    /// The encoder without its two residual connections.
    #[serde(default)]
    pub no_skip: bool,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            samples: 20,
            tokens: 8,
            dim: 2000,
            signal_norm: 20.0,
            rho: 0.1,
            eta: 0.2,
            sigma: 1.0,
            signal_directions: SignalDirections::Axis,
            label_noise: LabelNoise::Block,
            seed: 42,
            test_seed: None,
            test_size: 1000,
            reference_compat: false,
            lr: 5e-3,
            steps: 1000,
            eval_every: 10,
            trainer: TrainerKind::Subspace,
            init: InitKind::Uniform,
            precision: Precision::F64,
            startup_precision: None,
            track_samples: None,
            model: ModelKind::Attention,
            mlp_dim: None,
            no_skip: false,
        }
    }
}

/// From this dimension on, the start-up products run in f32 unless told otherwise.
pub const F32_STARTUP_FROM_DIM: usize = 50_000;

/// The start-up precision used when none is given: f64, except f32 from
/// [`F32_STARTUP_FROM_DIM`] on, where the O(d^2 r) products dominate the run and f32 halves
/// their cost. It changes the trajectory by rounding only (the integration test
/// `an_f32_startup_changes_the_final_metrics_by_rounding_only` bounds it); with the subspace test
/// draw the test metrics become another sample of the same law.
pub fn auto_startup_precision(dim: usize) -> Precision {
    if dim >= F32_STARTUP_FROM_DIM {
        Precision::F32
    } else {
        Precision::F64
    }
}

/// The test seed used when none is given: a fixed function of the training seed that differs
/// from it, so the two sets are independent draws.
pub fn derived_test_seed(seed: u64) -> u64 {
    crate::seed::mix_seed(seed, "test-set")
}

impl RunConfig {
    /// The default configuration with a preset's `d` and `||mu||`.
    pub fn preset(preset: Preset) -> Self {
        let mut config = RunConfig::default();
        config.apply_preset(preset);
        config
    }

    /// Sets `d` and `||mu||` from a preset.
    pub fn apply_preset(&mut self, preset: Preset) {
        let (dim, signal_norm) = preset.dim_and_signal();
        self.dim = dim;
        self.signal_norm = signal_norm;
    }

    /// Turns on every quirk of the reference code: block flips, axis signals, and a test set
    /// drawn with the training seed (the test seed is cleared, so it follows `seed` however that
    /// is set afterwards; see [`Self::effective_test_seed`]). Settings made after this call
    /// override the quirks.
    pub fn apply_reference_compat(&mut self) {
        self.reference_compat = true;
        self.label_noise = LabelNoise::Block;
        self.signal_directions = SignalDirections::Axis;
        self.test_seed = None;
    }

    /// Sets the model, with its default training precision ([`ModelKind::default_precision`]);
    /// a precision set afterwards overrides it.
    pub fn set_model(&mut self, model: ModelKind) {
        self.model = model;
        self.precision = model.default_precision();
    }

    /// The data's settings in one line, `n=20 T=8 d=2000 ||mu||=20 rho=0.1 eta=0.2`, for titles,
    /// job descriptions and summaries.
    pub fn data_label(&self) -> String {
        format!(
            "n={} T={} d={} ||mu||={} rho={} eta={}",
            self.samples, self.tokens, self.dim, self.signal_norm, self.rho, self.eta
        )
    }

    /// The start-up precision in effect.
    pub fn effective_startup_precision(&self) -> Precision {
        self.startup_precision
            .unwrap_or_else(|| auto_startup_precision(self.dim))
    }

    /// The encoder's MLP width in effect.
    pub fn effective_mlp_dim(&self) -> usize {
        self.mlp_dim.unwrap_or(self.dim)
    }

    /// The test seed in effect.
    pub fn effective_test_seed(&self) -> u64 {
        match (self.test_seed, self.reference_compat) {
            (Some(s), _) => s,
            (None, true) => self.seed,
            (None, false) => derived_test_seed(self.seed),
        }
    }

    /// Checks every setting; errors name the option and its valid range. [`Self::resolve`]
    /// expects a configuration that passed it.
    pub fn validate(&self) -> Result<()> {
        // Each real-valued setting with its valid range, in the order errors report them: every
        // one is checked finite first, its range only after the counts below.
        let ranges: [(&str, f64, bool, &str); 5] = [
            (
                "signal-norm",
                self.signal_norm,
                self.signal_norm > 0.0,
                "> 0",
            ),
            ("rho", self.rho, self.rho > 0.0, "> 0"),
            (
                "eta",
                self.eta,
                (0.0..0.5).contains(&self.eta),
                "in [0, 0.5)",
            ),
            ("sigma", self.sigma, self.sigma >= 0.0, ">= 0"),
            ("lr", self.lr, self.lr > 0.0, "> 0"),
        ];
        if let Some(&(field, v, ..)) = ranges.iter().find(|(_, v, ..)| !v.is_finite()) {
            return Err(Error::invalid(
                field,
                format!("must be a finite number, got {v}"),
            ));
        }
        if self.samples < 2 {
            return Err(Error::invalid(
                "samples",
                format!("must be at least 2, got {}", self.samples),
            ));
        }
        if self.tokens < 3 {
            return Err(Error::invalid(
                "tokens",
                format!(
                    "must be at least 3 (relevant, weak-same, weak-other), got {}",
                    self.tokens
                ),
            ));
        }
        if self.dim < 3 {
            return Err(Error::invalid(
                "dim",
                format!("must be at least 3, got {}", self.dim),
            ));
        }
        if let Some(&(field, v, _, range)) = ranges.iter().find(|(_, _, ok, _)| !ok) {
            return Err(Error::invalid(field, format!("must be {range}, got {v}")));
        }
        if self.test_size == 0 {
            return Err(Error::invalid("test-size", "must be at least 1, got 0"));
        }
        if self.steps == 0 {
            return Err(Error::invalid("steps", "must be at least 1, got 0"));
        }
        if self.eval_every == 0 {
            return Err(Error::invalid("eval-every", "must be at least 1, got 0"));
        }
        if self.reference_compat
            && (self.label_noise != LabelNoise::Block
                || self.signal_directions != SignalDirections::Axis
                || self.effective_test_seed() != self.seed)
        {
            return Err(Error::invalid(
                "reference-compat",
                "implies --label-noise block, --signal-directions axis and the training seed for the test set",
            ));
        }
        if self.mlp_dim == Some(0) {
            return Err(Error::invalid("mlp-dim", "must be at least 1, got 0"));
        }
        if self.model == ModelKind::Attention && (self.mlp_dim.is_some() || self.no_skip) {
            return Err(Error::invalid(
                if self.no_skip { "no-skip" } else { "mlp-dim" },
                "applies to `--model encoder` only",
            ));
        }
        if let Some(tracked) = &self.track_samples {
            if let Some(&bad) = tracked.iter().find(|&&i| i >= self.samples) {
                return Err(Error::invalid(
                    "track-samples",
                    format!("sample {bad} is out of range 0..{}", self.samples),
                ));
            }
        }
        Ok(())
    }

    /// Fills in the derived fields (`test_seed`, `startup_precision`, `track_samples`) of a
    /// configuration that passed [`Self::validate`], so that it is complete. `noisy` marks the
    /// noisy training samples.
    pub fn resolve(&mut self, noisy: &[bool]) {
        self.test_seed = Some(self.effective_test_seed());
        self.startup_precision = Some(self.effective_startup_precision());
        if self.track_samples.is_none() {
            let mut tracked = Vec::new();
            if let Some(i) = noisy.iter().position(|&v| !v) {
                tracked.push(i);
            }
            if let Some(i) = noisy.iter().position(|&v| v) {
                tracked.push(i);
            }
            self.track_samples = Some(tracked);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_papers() {
        let c = RunConfig::default();
        assert_eq!(
            (c.samples, c.tokens, c.dim, c.steps, c.test_size),
            (20, 8, 2000, 1000, 1000)
        );
        assert_eq!(
            (c.signal_norm, c.rho, c.eta, c.sigma, c.lr),
            (20.0, 0.1, 0.2, 1.0, 5e-3)
        );
        c.validate().unwrap();
        assert_ne!(c.effective_test_seed(), c.seed);
    }

    #[test]
    fn init_defaults_to_uniform_and_is_written_only_when_gaussian() {
        let c = RunConfig::default();
        let mut json = serde_json::to_value(&c).unwrap();
        assert!(json.get("init").is_none());
        // A config.json written before the option existed reads as uniform.
        json.as_object_mut().unwrap().remove("init");
        let back: RunConfig = serde_json::from_value(json).unwrap();
        assert_eq!(back.init, InitKind::Uniform);
        let g = RunConfig {
            init: InitKind::Gaussian,
            ..RunConfig::default()
        };
        let json = serde_json::to_value(&g).unwrap();
        assert_eq!(json["init"], "gaussian");
        assert_eq!(serde_json::from_value::<RunConfig>(json).unwrap(), g);
    }

    #[test]
    fn rejects_out_of_range_settings_by_name() {
        type Edit = Box<dyn Fn(&mut RunConfig)>;
        let cases: Vec<(&str, Edit)> = vec![
            ("samples", Box::new(|c| c.samples = 1)),
            ("tokens", Box::new(|c| c.tokens = 2)),
            ("dim", Box::new(|c| c.dim = 2)),
            ("rho", Box::new(|c| c.rho = 0.0)),
            ("eta", Box::new(|c| c.eta = 0.5)),
            ("eta", Box::new(|c| c.eta = -0.1)),
            ("lr", Box::new(|c| c.lr = f64::NAN)),
            ("test-size", Box::new(|c| c.test_size = 0)),
            ("eval-every", Box::new(|c| c.eval_every = 0)),
            ("steps", Box::new(|c| c.steps = 0)),
            ("signal-norm", Box::new(|c| c.signal_norm = f64::INFINITY)),
        ];
        for (field, edit) in cases {
            let mut c = RunConfig::default();
            edit(&mut c);
            match c.validate() {
                Err(Error::InvalidOption { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: expected InvalidOption, got {other:?}"),
            }
        }
    }
}
