//! What the theory predicts for a configuration, and the regime a finished run shows.
//!
//! The paper's conditions are asymptotic orders (constants unknown), so the predicted regime is
//! only a rough guide: with `SNR = ||mu|| / (sigma sqrt(d))`,
//! - `SNR >= n^(-1/2)`: not overfitting (the signal dominates, noisy samples are not fitted);
//! - else `SNR <= d^(-1/4)`: harmful overfitting;
//! - else (`d^(-1/4) < SNR < n^(-1/2)`): benign overfitting.
//!
//! The observed regime of a finished run uses the final metrics:
//! - all training samples fitted and test accuracy >= [`GOOD_TEST_ACCURACY`]: benign overfitting
//!   (with no label noise there is nothing to overfit; the label still reads "benign");
//! - all fitted, test accuracy below it: harmful overfitting;
//! - every clean sample fitted, no noisy sample fitted, test accuracy >= the threshold:
//!   not overfitting;
//! - anything else: not yet fitted.

use serde::{Deserialize, Serialize};

use super::config::RunConfig;
use super::metrics::EvalRecord;

/// Test accuracy from which a run counts as generalising.
pub const GOOD_TEST_ACCURACY: f64 = 0.95;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Regime {
    NotOverfitting,
    BenignOverfitting,
    HarmfulOverfitting,
    NotYetFitted,
}

impl std::fmt::Display for Regime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Regime::NotOverfitting => "not overfitting",
            Regime::BenignOverfitting => "benign overfitting",
            Regime::HarmfulOverfitting => "harmful overfitting",
            Regime::NotYetFitted => "not yet fitted",
        })
    }
}

/// The signal-to-noise ratio and the two thresholds of the theory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub snr: f64,
    pub n_pow_minus_half: f64,
    pub d_pow_minus_quarter: f64,
    pub predicted: Regime,
    pub rule: String,
}

/// The prediction for a configuration.
pub fn predict(config: &RunConfig) -> Prediction {
    let snr = config.signal_norm / (config.sigma * (config.dim as f64).sqrt());
    let n_bound = (config.samples as f64).powf(-0.5);
    let d_bound = (config.dim as f64).powf(-0.25);
    let predicted = if snr >= n_bound {
        Regime::NotOverfitting
    } else if snr <= d_bound {
        Regime::HarmfulOverfitting
    } else {
        Regime::BenignOverfitting
    };
    Prediction {
        snr,
        n_pow_minus_half: n_bound,
        d_pow_minus_quarter: d_bound,
        predicted,
        rule: "SNR >= n^-1/2: not overfitting; else SNR <= d^-1/4: harmful; else benign \
               (asymptotic orders, constants unknown)"
            .into(),
    }
}

/// The regime shown by the final metrics (rule in the module documentation).
pub fn classify(last: &EvalRecord) -> Regime {
    let good = last.test_acc >= GOOD_TEST_ACCURACY;
    if last.train_acc >= 1.0 {
        if good {
            Regime::BenignOverfitting
        } else {
            Regime::HarmfulOverfitting
        }
    } else if last.train_acc_clean == Some(1.0) && last.train_acc_noisy == Some(0.0) && good {
        Regime::NotOverfitting
    } else {
        Regime::NotYetFitted
    }
}

/// Loss levels that identify the regime (docs/model.md section 5), computed from `rho` and the noisy
/// fraction: the head scores the relevant token `+-1/sqrt(2)` and a weak token `+-rho/sqrt(2)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReferenceLevels {
    /// A clean sample fitted through its relevant token: `log(1 + e^{-1/sqrt 2})`.
    pub clean_fitted_by_relevant: f64,
    /// A noisy sample fitted through its weak-other token: `log(1 + e^{-rho/sqrt 2})`.
    pub noisy_fitted_by_weak_other: f64,
    /// A noisy sample left unfitted (attending its relevant token): `log(1 + e^{1/sqrt 2})`.
    pub noisy_unfitted: f64,
    /// The noisy fraction used below (the realised one of the training set).
    pub noisy_fraction: f64,
    /// Training loss of benign overfitting: clean by relevant, noisy by weak-other.
    pub benign_train_loss: f64,
    /// Training loss of not overfitting: clean by relevant, noisy unfitted.
    pub not_overfitting_train_loss: f64,
}

/// The reference levels for `rho` and a noisy fraction.
pub fn reference_levels(rho: f64, noisy_fraction: f64) -> ReferenceLevels {
    let softplus = |x: f64| benign_kernels::softplus(x);
    let relevant = std::f64::consts::FRAC_1_SQRT_2;
    let clean = softplus(-relevant);
    let noisy_fit = softplus(-rho * relevant);
    let noisy_unfit = softplus(relevant);
    ReferenceLevels {
        clean_fitted_by_relevant: clean,
        noisy_fitted_by_weak_other: noisy_fit,
        noisy_unfitted: noisy_unfit,
        noisy_fraction,
        benign_train_loss: (1.0 - noisy_fraction) * clean + noisy_fraction * noisy_fit,
        not_overfitting_train_loss: (1.0 - noisy_fraction) * clean + noisy_fraction * noisy_unfit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_levels_match_the_spec_at_the_defaults() {
        let l = reference_levels(0.1, 0.2);
        let close = |a: f64, b: f64| (a - b).abs() < 5e-4;
        assert!(close(l.clean_fitted_by_relevant, 0.401), "{l:?}");
        assert!(close(l.noisy_fitted_by_weak_other, 0.658), "{l:?}");
        assert!(close(l.noisy_unfitted, 1.108), "{l:?}");
        assert!(close(l.benign_train_loss, 0.452), "{l:?}");
        assert!(close(l.not_overfitting_train_loss, 0.542), "{l:?}");
    }

    #[test]
    fn presets_predictions() {
        use super::super::config::Preset;
        assert_eq!(
            predict(&RunConfig::preset(Preset::Harmful)).predicted,
            Regime::HarmfulOverfitting
        );
        assert_eq!(
            predict(&RunConfig::preset(Preset::LargeSignal)).predicted,
            Regime::NotOverfitting
        );
        let snr = predict(&RunConfig::default()).snr;
        assert!((snr - 20.0 / 2000f64.sqrt()).abs() < 1e-12);
    }
}
