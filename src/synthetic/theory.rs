//! What the theory predicts for a configuration, and the regime a finished run shows.
//!
//! The paper's conditions are asymptotic orders (constants unknown): with
//! `SNR = ||mu|| / (sigma sqrt(d))`,
//! - `SNR >= n^(-1/2)`: not overfitting (the signal dominates, noisy samples are not fitted);
//! - else `SNR <= d^(-1/4)`: harmful overfitting;
//! - else (`d^(-1/4) < SNR < n^(-1/2)`): benign overfitting.
//!
//! With the constants set to 1 these *bare orders* are only a rough guide (at the paper's
//! default they predict "not overfitting" for a run that is benign). So the prediction uses the
//! boundaries measured by `benign boundary` when a calibration describes the run's protocol
//! (`crate::boundary::calibration`), the same rule with `SNR*` in place of the orders, and says
//! which it used.
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

/// A training regime of the theory, as predicted or as observed (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Regime {
    /// The signal dominates: clean samples fitted, noisy ones not, and the model generalises.
    NotOverfitting,
    /// Every training label fitted, noisy ones included, and the model still generalises.
    BenignOverfitting,
    /// Every training label fitted, and test accuracy below the good level.
    HarmfulOverfitting,
    /// None of the above at the horizon (observed only): training has not settled.
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

/// What the prediction was based on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PredictionBasis {
    /// The boundaries measured by `benign boundary` (a calibration, `crate::boundary::calibration`).
    Calibrated,
    /// The asymptotic orders with their unknown constants set to 1.
    BareOrders,
}

/// The signal-to-noise ratio, the theory's two thresholds, and the predicted regime.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// `||mu|| / (sigma sqrt(d))`.
    pub snr: f64,
    /// `n^(-1/2)`: the bare order of the benign|not-overfitting boundary.
    pub n_pow_minus_half: f64,
    /// `d^(-1/4)`: the bare order of the harmful|benign boundary.
    pub d_pow_minus_quarter: f64,
    /// From the calibrated boundaries when a calibration describes this run's protocol, else
    /// from the bare orders.
    pub predicted: Regime,
    /// Whether `predicted` comes from calibrated boundaries or the bare orders.
    pub basis: PredictionBasis,
    /// The bare orders' regime, always.
    pub predicted_by_orders: Regime,
    /// The calibrated boundary SNRs at this (d, n), when calibrated.
    pub snr_harmful_benign: Option<f64>,
    /// The calibrated benign|not-overfitting boundary SNR, when calibrated.
    pub snr_benign_not_overfitting: Option<f64>,
    /// The calibration used, or why none applies; and whether (d, n) was extrapolated.
    pub calibration: String,
    /// The rule applied, in words.
    pub rule: String,
}

/// The regime of `snr` between a lower (harmful|benign) and an upper (benign|not overfitting)
/// boundary.
fn regime_between(snr: f64, lower: f64, upper: f64) -> Regime {
    if snr >= upper {
        Regime::NotOverfitting
    } else if snr <= lower {
        Regime::HarmfulOverfitting
    } else {
        Regime::BenignOverfitting
    }
}

/// The prediction for a configuration, with the calibration in use
/// ([`crate::boundary::calibration::current`]).
pub fn predict(config: &RunConfig) -> Prediction {
    predict_with(config, crate::boundary::calibration::current())
}

/// The prediction for a configuration with a given calibration.
pub fn predict_with(
    config: &RunConfig,
    calibration: &crate::boundary::calibration::Calibration,
) -> Prediction {
    let snr = config.signal_norm / (config.sigma * (config.dim as f64).sqrt());
    let n_bound = (config.samples as f64).powf(-0.5);
    let d_bound = (config.dim as f64).powf(-0.25);
    let by_orders = regime_between(snr, d_bound, n_bound);
    let orders_rule = "SNR >= n^-1/2: not overfitting; else SNR <= d^-1/4: harmful; else benign \
                       (asymptotic orders, constants unknown)";
    match calibration.boundaries(config) {
        Ok(b) => Prediction {
            snr,
            n_pow_minus_half: n_bound,
            d_pow_minus_quarter: d_bound,
            predicted: regime_between(snr, b.snr_harmful_benign, b.snr_benign_not_overfitting),
            basis: PredictionBasis::Calibrated,
            predicted_by_orders: by_orders,
            snr_harmful_benign: Some(b.snr_harmful_benign),
            snr_benign_not_overfitting: Some(b.snr_benign_not_overfitting),
            calibration: match b.extrapolated {
                Some(note) => format!("{} ({note})", calibration.source),
                None => calibration.source.clone(),
            },
            rule: "SNR >= SNR*(benign|not overfitting): not overfitting; else SNR <= \
                   SNR*(harmful|benign): harmful; else benign (boundaries measured by \
                   `benign boundary`: medians over seeds at the calibration's horizon)"
                .into(),
        },
        Err(why) => Prediction {
            snr,
            n_pow_minus_half: n_bound,
            d_pow_minus_quarter: d_bound,
            predicted: by_orders,
            basis: PredictionBasis::BareOrders,
            predicted_by_orders: by_orders,
            snr_harmful_benign: None,
            snr_benign_not_overfitting: None,
            calibration: format!("not used ({}): {why}", calibration.source),
            rule: orders_rule.into(),
        },
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
            predict(&RunConfig::preset(Preset::Harmful)).predicted_by_orders,
            Regime::HarmfulOverfitting
        );
        assert_eq!(
            predict(&RunConfig::preset(Preset::LargeSignal)).predicted_by_orders,
            Regime::NotOverfitting
        );
        let snr = predict(&RunConfig::default()).snr;
        assert!((snr - 20.0 / 2000f64.sqrt()).abs() < 1e-12);
    }

    /// The calibrated rule: below the lower boundary harmful, above the upper one not
    /// overfitting, benign between; the paper's default run (benign, docs/model.md) is predicted
    /// benign by the built-in calibration, where the bare orders say "not overfitting".
    #[test]
    fn calibrated_predictions_follow_the_measured_boundaries() {
        let default = predict(&RunConfig::default());
        assert_eq!(default.basis, PredictionBasis::Calibrated, "{default:?}");
        assert_eq!(default.predicted, Regime::BenignOverfitting, "{default:?}");
        assert_eq!(default.predicted_by_orders, Regime::NotOverfitting);
        let (lower, upper) = (
            default.snr_harmful_benign.unwrap(),
            default.snr_benign_not_overfitting.unwrap(),
        );
        let at = |snr: f64| {
            let config = RunConfig {
                signal_norm: snr * 2000f64.sqrt(),
                ..RunConfig::default()
            };
            predict(&config).predicted
        };
        assert_eq!(at(lower * 0.9), Regime::HarmfulOverfitting);
        assert_eq!(at(lower * 1.1), Regime::BenignOverfitting);
        assert_eq!(at(upper * 0.9), Regime::BenignOverfitting);
        assert_eq!(at(upper * 1.1), Regime::NotOverfitting);
        let other = predict(&RunConfig {
            rho: 0.3,
            ..RunConfig::default()
        });
        assert_eq!(other.basis, PredictionBasis::BareOrders);
        assert!(other.calibration.contains("rho"), "{other:?}");
    }
}
