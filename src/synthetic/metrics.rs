//! What a run records at an evaluation step, computed from the token logits `z`, the token
//! scores `u = nu^T x` and the labels (docs/model.md section 5).

use serde::{Deserialize, Serialize};

use benign_kernels as kernels;

/// Attention probability on each token role, averaged over a group of samples.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RoleAttention {
    /// Position 0 (`mu_{y*} + eps`).
    pub relevant: f64,
    /// Position 1 (`rho mu_{y*} + eps`).
    pub weak_same: f64,
    /// Position 2 (`rho mu_{-y*} + eps`).
    pub weak_other: f64,
    /// The largest probability among positions 3.. (0 when T = 3).
    pub max_irrelevant: f64,
}

/// A logit gap `z_lead - z_competitor`, min and mean over competitors, averaged over samples.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Gap {
    /// The smallest gap over competitors, averaged over samples.
    pub min: f64,
    /// The mean gap over competitors, averaged over samples.
    pub mean: f64,
}

/// One evaluation (one line of `metrics.jsonl`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    /// Gradient steps taken before this evaluation (0: the initial state).
    pub step: usize,
    /// Seconds since training started (after the start-up).
    pub wall_seconds: f64,
    /// Mean logistic loss on the observed (noisy) training labels.
    pub train_loss: f64,
    /// Training accuracy against the observed (noisy) labels.
    pub train_acc: f64,
    /// Mean logistic loss on the clean test set.
    pub test_loss: f64,
    /// Test accuracy (clean labels).
    pub test_acc: f64,
    /// Accuracy on the clean training samples; `None` without such samples.
    pub train_acc_clean: Option<f64>,
    /// Accuracy on the flipped training samples against their flipped labels; `None` without such
    /// samples.
    pub train_acc_noisy: Option<f64>,
    /// Attention by role, mean over clean training samples; `None` without such samples.
    pub attention_clean: Option<RoleAttention>,
    /// Attention by role, mean over noisy training samples; `None` without such samples.
    pub attention_noisy: Option<RoleAttention>,
    /// Test-set attention by role (test samples are clean).
    pub attention_test: RoleAttention,
    /// Lambda: clean samples, relevant token's lead over each other token.
    pub lambda_clean: Option<Gap>,
    /// Gamma: noisy samples, weak-other token's lead over each other token.
    pub gamma_noisy: Option<Gap>,
    /// `||p||` (the encoder: the norm of its classification head).
    pub p_norm: f64,
    /// `||W - W_0||_F` (the encoder: `||(W_q, W_k) - (W_q, W_k)_0||_F`).
    pub w_delta_norm: f64,
}

/// What a model computes on a set of samples at its current state: everything an evaluation,
/// the tracked attention rows and the first-fit step are computed from, whatever the model.
#[derive(Clone, Debug, Default)]
pub struct Readout {
    /// Attention logits `[samples, T]`, sample-major; only differences within a sample matter
    /// (the gaps Lambda and Gamma).
    pub logits: Vec<f64>,
    /// Attention probabilities `[samples, T]`.
    pub attention: Vec<f64>,
    /// The model's output `f_i` of each sample.
    pub outputs: Vec<f64>,
}

impl Readout {
    /// The attention model's readout from its logits `z` and token scores `u`: softmax over each
    /// sample's tokens and `f_i = sum_t s_it u_it`.
    pub fn of_logits(tokens_per_sample: usize, logits: Vec<f64>, scores: &[f64]) -> Readout {
        let t = tokens_per_sample;
        let mut attention = vec![0.0; logits.len()];
        kernels::softmax_rows(t, &logits, &mut attention);
        let outputs = attention
            .chunks_exact(t)
            .zip(scores.chunks_exact(t))
            .map(|(s, u)| kernels::dot(s, u))
            .collect();
        Readout {
            logits,
            attention,
            outputs,
        }
    }

    /// Whether every sample is fitted: `y_i f_i > 0`.
    pub fn all_fitted(&self, labels: &[f64]) -> bool {
        self.outputs.iter().zip(labels).all(|(f, y)| y * f > 0.0)
    }

    /// The readout as a training-set readout of step `step`: an error naming `quantity` when a
    /// logit or an output is not finite.
    pub fn finite(self, step: usize, quantity: &str) -> crate::Result<Readout> {
        match self
            .logits
            .iter()
            .chain(&self.outputs)
            .find(|v| !v.is_finite())
        {
            Some(&value) => Err(crate::Error::NonFinite {
                step,
                quantity: quantity.into(),
                value,
            }),
            None => Ok(self),
        }
    }
}

/// Mean logistic loss and accuracy (`y f > 0`) over the samples in `which`.
pub fn loss_and_accuracy(
    outputs: &[f64],
    labels: &[f64],
    which: impl Fn(usize) -> bool,
) -> Option<(f64, f64)> {
    let (mut loss, mut correct, mut count) = (0.0, 0usize, 0usize);
    for (i, (&f, &y)) in outputs.iter().zip(labels).enumerate() {
        if which(i) {
            loss += kernels::logistic_loss(y * f);
            correct += usize::from(y * f > 0.0);
            count += 1;
        }
    }
    (count > 0).then(|| (loss / count as f64, correct as f64 / count as f64))
}

fn role_attention(
    t: usize,
    attention: &[f64],
    which: impl Fn(usize) -> bool,
) -> Option<RoleAttention> {
    let mut sum = RoleAttention::default();
    let mut count = 0usize;
    for (i, s) in attention.chunks_exact(t).enumerate() {
        if which(i) {
            sum.relevant += s[0];
            sum.weak_same += s[1];
            sum.weak_other += s[2];
            sum.max_irrelevant += s[3..].iter().copied().fold(0.0, f64::max);
            count += 1;
        }
    }
    (count > 0).then(|| {
        let c = count as f64;
        RoleAttention {
            relevant: sum.relevant / c,
            weak_same: sum.weak_same / c,
            weak_other: sum.weak_other / c,
            max_irrelevant: sum.max_irrelevant / c,
        }
    })
}

fn gap(t: usize, logits: &[f64], lead: usize, which: impl Fn(usize) -> bool) -> Option<Gap> {
    let (mut min_sum, mut mean_sum, mut count) = (0.0, 0.0, 0usize);
    for (i, z) in logits.chunks_exact(t).enumerate() {
        if which(i) {
            let gaps = (0..t).filter(|&c| c != lead).map(|c| z[lead] - z[c]);
            let (mut lo, mut total) = (f64::INFINITY, 0.0);
            for g in gaps {
                lo = lo.min(g);
                total += g;
            }
            min_sum += lo;
            mean_sum += total / (t - 1) as f64;
            count += 1;
        }
    }
    (count > 0).then(|| Gap {
        min: min_sum / count as f64,
        mean: mean_sum / count as f64,
    })
}

/// The labels of a run: fixed for the run, whatever the model.
#[derive(Clone, Debug)]
pub struct Labels {
    /// Observed training labels `+-1` (flipped on the noisy samples).
    pub train: Vec<f64>,
    /// Training labels before the flips.
    pub clean: Vec<f64>,
    /// Which training samples had their label flipped.
    pub noisy: Vec<bool>,
    /// Test labels `+-1` (test samples are clean).
    pub test: Vec<f64>,
}

/// The state norms recorded beside the metrics: `||p||` and `||W - W_0||_F` for the attention
/// model, the encoder's counterparts for it.
#[derive(Clone, Copy, Debug, Default)]
pub struct StateNorms {
    /// As [`EvalRecord::p_norm`].
    pub p_norm: f64,
    /// As [`EvalRecord::w_delta_norm`].
    pub w_delta_norm: f64,
}

/// Every metric of one evaluation step from the training and test readouts.
pub fn evaluate(
    labels: &Labels,
    tokens_per_sample: usize,
    (train, test): (&Readout, &Readout),
    step: usize,
    wall_seconds: f64,
    norms: StateNorms,
) -> EvalRecord {
    let t = tokens_per_sample;
    let noisy = &labels.noisy;
    let (train_loss, train_acc) =
        loss_and_accuracy(&train.outputs, &labels.train, |_| true).unwrap_or_default();
    let (test_loss, test_acc) =
        loss_and_accuracy(&test.outputs, &labels.test, |_| true).unwrap_or_default();
    let clean_acc = loss_and_accuracy(&train.outputs, &labels.train, |i| !noisy[i]).map(|v| v.1);
    let noisy_acc = loss_and_accuracy(&train.outputs, &labels.train, |i| noisy[i]).map(|v| v.1);
    EvalRecord {
        step,
        wall_seconds,
        train_loss,
        train_acc,
        test_loss,
        test_acc,
        train_acc_clean: clean_acc,
        train_acc_noisy: noisy_acc,
        attention_clean: role_attention(t, &train.attention, |i| !noisy[i]),
        attention_noisy: role_attention(t, &train.attention, |i| noisy[i]),
        attention_test: role_attention(t, &test.attention, |_| true).unwrap_or_default(),
        lambda_clean: gap(t, &train.logits, 0, |i| !noisy[i]),
        gamma_noisy: gap(t, &train.logits, 2, |i| noisy[i]),
        p_norm: norms.p_norm,
        w_delta_norm: norms.w_delta_norm,
    }
}

/// Checks an evaluation for NaN/inf and names the first bad quantity.
pub fn first_non_finite(record: &EvalRecord) -> Option<(&'static str, f64)> {
    [
        ("train_loss", record.train_loss),
        ("test_loss", record.test_loss),
        ("p_norm", record.p_norm),
        ("w_delta_norm", record.w_delta_norm),
    ]
    .into_iter()
    .find(|(_, v)| !v.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_and_roles_on_a_hand_made_sample() {
        // One clean sample, T = 4, logits (3, 1, 0, 2).
        let logits = [3.0, 1.0, 0.0, 2.0];
        let g = gap(4, &logits, 0, |_| true).unwrap();
        assert_eq!(g.min, 1.0);
        assert_eq!(g.mean, (2.0 + 3.0 + 1.0) / 3.0);
        let out = Readout::of_logits(4, logits.to_vec(), &[1.0, 0.0, 0.0, 0.0]);
        let roles = role_attention(4, &out.attention, |_| true).unwrap();
        let z: f64 = logits.iter().map(|v: &f64| v.exp()).sum();
        assert!((roles.relevant - 3f64.exp() / z).abs() < 1e-15);
        assert!((roles.max_irrelevant - 2f64.exp() / z).abs() < 1e-15);
        assert!(role_attention(4, &out.attention, |_| false).is_none());
    }
}
