//! End-to-end tests of the synthetic experiment: the two trainers agree, they follow the closed
//! form, the presets show their regimes, outputs and bad input behave.

use std::ops::RangeInclusive;
use std::path::PathBuf;

use benign::attention_model::closed_form::{self as attention, TokenShape};
use benign::synthetic::data::{training_set, Signals, TestSource, TrainSet};
use benign::synthetic::dense::DenseTrainer;
use benign::synthetic::init::InitSource;
use benign::synthetic::metrics::EvalRecord;
use benign::synthetic::metrics::Readout;
use benign::synthetic::subspace::{orthonormal_basis, SubspaceSetup, SubspaceTrainer, TestDraw};
use benign::synthetic::{
    run, AttentionTrainer, Precision, Preset, RunConfig, RunOptions, TrainerKind,
};

use super::{bin, exit_stderr, ok};

fn quick(config: RunConfig) -> benign::synthetic::RunResult {
    run(config, RunOptions::default()).expect("run succeeds")
}

/// A run whose test tokens are generated in R^d and projected, like the dense trainer's.
fn quick_tokens(config: RunConfig) -> benign::synthetic::RunResult {
    let options = RunOptions {
        test_draw: TestDraw::Tokens,
        ..RunOptions::default()
    };
    run(config, options).expect("run succeeds")
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / a.abs().max(b.abs()).max(1e-12)
}

/// Largest relative difference between two runs' records over the compared quantities.
fn max_disagreement(a: &[EvalRecord], b: &[EvalRecord]) -> f64 {
    assert_eq!(a.len(), b.len());
    let mut worst: f64 = 0.0;
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.step, y.step);
        let pairs = [
            (x.train_loss, y.train_loss),
            (x.test_loss, y.test_loss),
            (x.train_acc, y.train_acc),
            (x.test_acc, y.test_acc),
            (x.p_norm, y.p_norm),
            (x.w_delta_norm, y.w_delta_norm),
        ];
        for (u, v) in pairs {
            worst = worst.max(rel(u, v));
        }
        for (ra, rb) in [
            (x.attention_clean, y.attention_clean),
            (x.attention_noisy, y.attention_noisy),
        ] {
            let (ra, rb) = (ra.unwrap(), rb.unwrap());
            for (u, v) in [
                (ra.relevant, rb.relevant),
                (ra.weak_same, rb.weak_same),
                (ra.weak_other, rb.weak_other),
                (ra.max_irrelevant, rb.max_irrelevant),
            ] {
                worst = worst.max(rel(u, v));
            }
        }
    }
    worst
}

fn agreement(dim: usize, precision: Precision, test_size: usize) -> f64 {
    let base = RunConfig {
        dim,
        test_size,
        precision,
        ..RunConfig::default()
    };
    let dense = quick(RunConfig {
        trainer: TrainerKind::Dense,
        ..base.clone()
    });
    let subspace = quick_tokens(RunConfig {
        trainer: TrainerKind::Subspace,
        ..base
    });
    let worst = max_disagreement(&dense.records, &subspace.records);
    eprintln!("d={dim} {precision:?}: max relative dense/subspace disagreement over 1000 steps {worst:.3e}");
    worst
}

// The docs state "about 1e-13 relative in f64, 3e-5 in f32" (measured 8.6e-14 and 8.2e-14 in
// f64, 3.1e-5 in f32, on AVX-512); the bounds are 10x the stated agreement, room for another
// machine's kernels to round differently.
#[test]
fn dense_and_subspace_agree_in_f64_at_d250() {
    assert!(agreement(250, Precision::F64, 1000) < 1e-12);
}

#[test]
fn dense_and_subspace_agree_in_f64_at_d2000() {
    assert!(agreement(2000, Precision::F64, 200) < 1e-12);
}

#[test]
fn dense_and_subspace_agree_in_f32_to_rounding() {
    assert!(agreement(250, Precision::F32, 1000) < 3e-4);
}

/// Panics unless each `actual[i]` is within `tol` of `expected[i]`; `what` heads the message.
fn assert_all_within(actual: &[f64], expected: &[f64], tol: f64, what: &str) {
    for (a, b) in actual.iter().zip(expected) {
        assert!((a - b).abs() <= tol, "{what}: {a} vs {b}");
    }
}

/// What a trainer is built from: the signals, training set and seeded `W_0` of a configuration,
/// and a generated test set.
struct Problem {
    signals: Signals,
    train: TrainSet,
    init: InitSource,
    test: TestSource,
}

impl Problem {
    /// The problem of `config`, its test set drawn with `test_seed`.
    fn new(config: &RunConfig, test_seed: u64) -> Self {
        let signals = Signals::new(config);
        Problem {
            train: training_set(config, &signals),
            init: InitSource::from_seed(config.seed, config.dim),
            test: TestSource::Generated {
                config: config.clone(),
                signals: signals.clone(),
                seed: test_seed,
            },
            signals,
        }
    }

    /// `mu_+` and `mu_-`: the directions the subspace spans beside the training tokens.
    fn extra_directions(&self) -> [&[f64]; 2] {
        [
            self.signals.mu_plus.as_slice(),
            self.signals.mu_minus.as_slice(),
        ]
    }

    /// The subspace trainer of this problem with an f64 start-up.
    fn subspace_trainer(&self, lr: f64, draw: TestDraw) -> SubspaceTrainer<f64> {
        SubspaceTrainer::new(SubspaceSetup {
            train: &self.train,
            extra_directions: &self.extra_directions(),
            nu: &self.signals.nu,
            init: &self.init,
            test: &self.test,
            lr,
            startup: Precision::F64,
            draw,
        })
        .unwrap()
    }
}

/// Dense GD steps 1..3 equal steps taken with `closed_form_gradient` directly, and the subspace
/// state maps back to the dense one: `p = A b`, `W = W_0 + B D A^T`.
#[test]
fn trainers_follow_the_closed_form_gradient() {
    let config = RunConfig {
        dim: 60,
        samples: 6,
        tokens: 5,
        test_size: 4,
        ..RunConfig::default()
    };
    let problem = Problem::new(&config, 1);
    let (signals, train, init) = (&problem.signals, &problem.train, &problem.init);
    let mut test_tokens = Vec::new();
    problem
        .test
        .for_each_chunk(4, |_, t| test_tokens.extend_from_slice(t));
    let shape = TokenShape {
        samples: 6,
        tokens: 5,
        dim: 60,
    };
    let d = config.dim;
    let mut dense =
        DenseTrainer::<f64>::new(train, &test_tokens, &signals.nu, init, config.lr).unwrap();
    let extra = problem.extra_directions();
    let mut subspace = problem.subspace_trainer(config.lr, TestDraw::Tokens);
    let (mut w, mut p): (Vec<f64>, Vec<f64>) = (init.matrix(), vec![0.0; d]);
    for step in 0..3 {
        let grad = attention::closed_form_gradient(
            shape,
            &train.tokens,
            &train.labels,
            &w,
            &p,
            &signals.nu,
        );
        let grad_w = attention::dense_grad_w(&grad.token_direction, &p);
        w.iter_mut()
            .zip(&grad_w)
            .for_each(|(v, g)| *v -= config.lr * g);
        p.iter_mut()
            .zip(&grad.grad_p)
            .for_each(|(v, g)| *v -= config.lr * g);
        dense.step_logits(step).unwrap();
        subspace.step_logits(step).unwrap();
        let (dw, dp) = dense.state();
        let scale = p.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let p_tol = |relative: f64| relative * scale.max(1e-300);
        assert_all_within(dp, &p, p_tol(1e-12), &format!("step {step}: p"));
        assert_all_within(dw, &w, 1e-13, &format!("step {step}: W"));
        let (sp, sw) = subspace.reconstruct_dense(train, &extra, init);
        assert_all_within(&sp, &p, p_tol(1e-10), &format!("step {step}: subspace p"));
        assert_all_within(&sw, &w, 1e-12, &format!("step {step}: subspace W"));
    }
    // After more steps the two states still coincide.
    for step in 3..200 {
        dense.step_logits(step).unwrap();
        subspace.step_logits(step).unwrap();
    }
    let (dw, dp) = dense.state();
    let (sp, sw) = subspace.reconstruct_dense(train, &extra, init);
    let pmax = dp.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert_all_within(dp, &sp, 1e-9 * pmax, "step 200: p");
    assert_all_within(dw, &sw, 1e-11, "step 200: W");
    assert!(rel(dense.p_norm(), subspace.p_norm()) < 1e-9);
    assert!(rel(dense.w_delta_norm(), subspace.w_delta_norm()) < 1e-9);
    let (zt_dense, zt_sub) = (dense.test_logits(), subspace.test_logits());
    for (a, b) in zt_dense.iter().zip(&zt_sub) {
        assert!((a - b).abs() < 1e-9 * (1.0 + a.abs()));
    }
}

fn preset_run(preset: Preset) -> benign::synthetic::RunResult {
    let result = quick(RunConfig::preset(preset));
    let last = &result.summary.final_metrics;
    eprintln!(
        "{preset:?}: train acc {} test acc {} train loss {:.4} test loss {:.4}, first fit {:?}, observed {}",
        last.train_acc,
        last.test_acc,
        last.train_loss,
        last.test_loss,
        result.summary.first_all_fitted_step,
        result.summary.observed_regime
    );
    result
}

/// Runs `preset` and checks its final accuracies: the train accuracy exactly (1 when every
/// sample is fitted, 0.8 when the 20% noisy ones are not), the test accuracy within `test_acc`.
fn assert_preset_accuracies(preset: Preset, train_acc: f64, test_acc: RangeInclusive<f64>) {
    let r = preset_run(preset);
    let last = &r.summary.final_metrics;
    assert_eq!(last.train_acc, train_acc);
    assert!(
        test_acc.contains(&last.test_acc),
        "test acc {}",
        last.test_acc
    );
}

#[test]
fn preset_balanced_overfits_benignly() {
    assert_preset_accuracies(Preset::Balanced, 1.0, 0.99..=1.0);
}

#[test]
fn preset_harmful_overfits_harmfully() {
    assert_preset_accuracies(Preset::Harmful, 1.0, 0.0..=0.92);
}

#[test]
fn preset_large_signal_does_not_overfit() {
    assert_preset_accuracies(Preset::LargeSignal, 0.8, 0.99..=1.0);
}

/// The reference code's figures lead one to expect the balanced preset's noisy samples to put "about 0.7 to 0.97" of
/// their attention on the weak-other token. That describes one noisy sample of one data draw (the
/// reference's plot notebook shows the first noisy sample of a run on its seed-42 data, which
/// happens to favour the weak-other token). Over data draws, each noisy sample is fitted through
/// the token that supports its flipped label most at the start: the weak-other token carries
/// `y u = rho / sqrt(2) = 0.071` plus noise of standard deviation `sigma / ||mu|| = 0.05`, an
/// irrelevant token the noise alone, so the weak-other token wins against the best of the T - 3
/// irrelevant ones with probability 0.59, and an irrelevant token is attended otherwise
/// (`scripts/weak_other_seeds.py`: the reference's data generator and model give the same
/// distribution, mean weak-other attention 0.56 +- 0.05 against our 0.53 +- 0.05 over 16 seeds).
/// Pooled over 16 seeds (64 noisy samples), checked here: the share attending the weak-other
/// token most, and that the initial-support rule predicts which role each sample attends.
#[test]
fn balanced_noisy_samples_attend_the_token_supporting_their_flipped_label() {
    let noisy_ids = vec![0, 1, 10, 11];
    let (mut weak_other_most, mut predicted, mut rule_agrees, mut total) = (0, 0, 0, 0usize);
    for seed in 1..=16u64 {
        let config = RunConfig {
            seed,
            test_size: 10,
            eval_every: 1000,
            track_samples: Some(noisy_ids.clone()),
            ..RunConfig::preset(Preset::Balanced)
        };
        let result = quick(config.clone());
        let signals = Signals::new(&result.config);
        let train = training_set(&result.config, &signals);
        let (t, d) = (config.tokens, config.dim);
        for tracked in &result.tracked {
            let i = tracked.sample;
            assert!(train.noisy[i], "sample {i} of seed {seed} is not noisy");
            let last = tracked.rows.last().expect("rows for every step");
            let attended = (0..t).max_by(|&a, &b| last[a].total_cmp(&last[b])).unwrap();
            // Support of each token for the observed (flipped) label: y nu^T x_t.
            let support: Vec<f64> = (0..t)
                .map(|k| {
                    let x = &train.tokens[(i * t + k) * d..(i * t + k + 1) * d];
                    train.labels[i] * x.iter().zip(&signals.nu).map(|(a, b)| a * b).sum::<f64>()
                })
                .collect();
            let best_irrelevant = support[3..].iter().copied().fold(f64::MIN, f64::max);
            let predicted_weak_other = support[2] > best_irrelevant;
            weak_other_most += usize::from(attended == 2);
            predicted += usize::from(predicted_weak_other);
            rule_agrees += usize::from((attended == 2) == predicted_weak_other && attended != 0);
            total += 1;
        }
    }
    let share = weak_other_most as f64 / total as f64;
    let predicted_share = predicted as f64 / total as f64;
    let agreement = rule_agrees as f64 / total as f64;
    // Agreement of a rule unrelated to the outcome with the same marginals.
    let chance = share * predicted_share + (1.0 - share) * (1.0 - predicted_share);
    eprintln!(
        "{total} noisy samples: weak-other attended most {share:.3}, predicted {predicted_share:.3}, \
         support rule agrees {agreement:.3} (chance {chance:.3})"
    );
    assert_eq!(total, 64);
    // 0.59 expected; 64 samples give a standard error of about 0.06.
    assert!((0.4..=0.8).contains(&share), "weak-other share {share}");
    // A standard error of about 0.06 too: the rule must beat chance by well over one.
    assert!(
        agreement >= chance + 0.1,
        "support rule agreement {agreement}, chance {chance}"
    );
}

#[test]
fn same_result_whatever_the_thread_count() {
    let config = RunConfig {
        dim: 300,
        steps: 100,
        ..RunConfig::default()
    };
    let run_on = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| quick(config.clone()))
    };
    let (one, two) = (run_on(1), run_on(2));
    for (a, b) in one.records.iter().zip(&two.records) {
        assert_eq!(
            (
                a.train_loss.to_bits(),
                a.test_loss.to_bits(),
                a.p_norm.to_bits()
            ),
            (
                b.train_loss.to_bits(),
                b.test_loss.to_bits(),
                b.p_norm.to_bits()
            )
        );
    }
}

fn temp_dir(name: &str) -> PathBuf {
    super::temp_scratch("run", name)
}

#[test]
fn run_writes_every_output_file() {
    let out = temp_dir("outputs");
    ok(&bin()
        .args(["run", "--quiet", "--dim", "120", "--steps", "50"])
        .args(["--test-size", "50", "--out"])
        .arg(&out)
        .output()
        .unwrap());
    super::assert_run_files(&out);
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let steps: Vec<u64> = metrics
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(steps, vec![0, 10, 20, 30, 40, 50]);
    let csv = std::fs::read_to_string(out.join("attention.csv")).unwrap();
    // 51 steps x 2 tracked samples x 8 tokens + header.
    assert_eq!(csv.lines().count(), 51 * 2 * 8 + 1);
    let summary = super::json_file(&out.join("summary.json"));
    let seconds = |key: &str| summary[key].as_f64().unwrap();
    assert!(seconds("wall_seconds_total") > 0.0);
    // six evaluations, each a test readout, norms and metrics, are part of the training loop
    assert!(seconds("evaluation_seconds") > 0.0);
    assert!(seconds("evaluation_seconds") < seconds("training_seconds"));
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn exported_data_reproduces_the_generated_run() {
    let dir = temp_dir("export");
    let config = RunConfig {
        dim: 90,
        steps: 60,
        test_size: 30,
        ..RunConfig::default()
    };
    benign::synthetic::export::export_data(config.clone(), &dir, false).unwrap();
    // Loaded test sets are projected token by token: compare with the same draw.
    let direct = quick_tokens(config.clone());
    for trainer in [TrainerKind::Subspace, TrainerKind::Dense] {
        let loaded = RunOptions {
            data: Some(benign::synthetic::export::load_data(&dir).unwrap()),
            init: Some(benign::synthetic::export::load_init(&dir.join("w0.npy")).unwrap()),
            ..RunOptions::default()
        };
        let from_files = run(
            RunConfig {
                trainer,
                ..config.clone()
            },
            loaded,
        )
        .unwrap();
        let worst = max_disagreement(&direct.records, &from_files.records);
        assert!(worst < 1e-9, "{trainer:?}: {worst}");
    }
    // And through the command line.
    let out = dir.join("out");
    let o = bin()
        .args(["run", "--quiet", "--json", "--data"])
        .arg(&dir)
        .arg("--init-w")
        .arg(dir.join("w0.npy"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    ok(&o);
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let final_loss = summary["final_metrics"]["train_loss"].as_f64().unwrap();
    assert!(rel(final_loss, direct.summary.final_metrics.train_loss) < 1e-9);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn invalid_options_exit_with_status_2_naming_the_option() {
    let cases: [(&[&str], &str); 9] = [
        (&["--samples", "1"], "samples"),
        (&["--tokens", "2"], "tokens"),
        (&["--dim", "2"], "dim"),
        (&["--rho", "0"], "rho"),
        (&["--eta", "0.5"], "eta"),
        (&["--lr", "-1"], "lr"),
        (&["--test-size", "0"], "test-size"),
        (&["--eval-every", "0"], "eval-every"),
        (&["--lr", "NaN"], "lr"),
    ];
    for (args, field) in cases {
        let o = bin()
            .args(["run", "--quiet", "--no-write"])
            .args(args)
            .output()
            .unwrap();
        let stderr = exit_stderr(&o, 2, &format!("{args:?}"));
        assert!(stderr.contains(field), "{args:?}: {stderr}");
    }
}

#[test]
fn dense_trainer_refuses_a_w_that_cannot_fit() {
    let o = bin()
        .args(["run", "--quiet", "--no-write", "--trainer", "dense"])
        .args(["--dim", "300000"])
        .output()
        .unwrap();
    let stderr = exit_stderr(&o, 1, "--dim 300000");
    // W alone is 720 GB; the subspace trainer needs about 1 GB here.
    assert!(stderr.contains("--trainer subspace"), "{stderr}");
}

#[test]
fn a_diverging_run_names_the_step_and_keeps_its_metrics() {
    let out = temp_dir("diverge");
    let o = bin()
        .args(["run", "--quiet", "--dim", "50", "--test-size", "10"])
        .args(["--eval-every", "1", "--lr", "1e300", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = exit_stderr(&o, 1, "--lr 1e300");
    assert!(stderr.contains("non-finite value at step"), "{stderr}");
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert!(metrics.lines().count() >= 1);
    let _ = std::fs::remove_dir_all(&out);
}

/// Mean and variance of a sample.
fn moments(values: &[f64]) -> (f64, f64) {
    let m = values.len() as f64;
    let mean = values.iter().sum::<f64>() / m;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (m - 1.0);
    (mean, var)
}

/// Drawing the test projections in the subspace (`TestDraw::Subspace`) leaves training
/// bit-identical and gives the test tokens the law of projected d-dimensional tokens.
///
/// At a trained state `(p, W)` a test token `x = s + eps` has logit `z = x^T W p` and score
/// `u = nu^T x`: a Gaussian pair with means `(s^T W p, nu^T s)` and covariance
/// `sigma^2 [|Wp|^2, (Wp).nu; (Wp).nu, |nu|^2]`. Both draws must match these moments, role by
/// role, within 5 standard errors over 3000 test samples (at most 18% on a variance); a law
/// missing the part of `W p` outside span(B) (checked to carry over 35% of `|W p|^2`) would miss
/// the variance of `z` by about twice that. The
/// mean test loss of the two draws agrees within 5 standard errors of the difference.
#[test]
fn test_projections_drawn_in_the_subspace_have_the_projected_law() {
    // d large next to r = n T + 2 = 18, so that W_0 p is far from span(B).
    let config = RunConfig {
        dim: 300,
        samples: 4,
        tokens: 4,
        signal_norm: 4.0,
        sigma: 1.5,
        test_size: 3000,
        ..RunConfig::default()
    };
    let problem = Problem::new(&config, config.effective_test_seed());
    let (signals, train, test) = (&problem.signals, &problem.train, &problem.test);
    let extra = problem.extra_directions();
    let (mut drawn, mut projected) = (
        problem.subspace_trainer(0.05, TestDraw::Subspace),
        problem.subspace_trainer(0.05, TestDraw::Tokens),
    );
    assert_eq!(drawn.timings.test_draw, TestDraw::Subspace);
    assert_eq!(projected.timings.test_draw, TestDraw::Tokens);
    // Training is exactly the same: logits, norms, state, bit for bit.
    for step in 0..60 {
        let (a, b) = (
            drawn.step_logits(step).unwrap(),
            projected.step_logits(step).unwrap(),
        );
        assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
    }
    assert_eq!(drawn.train_logits(), projected.train_logits());
    assert_eq!(drawn.p_norm().to_bits(), projected.p_norm().to_bits());
    assert_eq!(drawn.state(), projected.state());

    let (p, w) = drawn.reconstruct_dense(train, &extra, &problem.init);
    let d = config.dim;
    let mut wp = vec![0.0; d];
    for i in 0..d {
        wp[i] = (0..d).map(|j| w[i * d + j] * p[j]).sum();
    }
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let sigma2 = config.sigma * config.sigma;
    let (var_z, var_u, cov_zu) = (
        sigma2 * dot(&wp, &wp),
        sigma2 * dot(&signals.nu, &signals.nu),
        sigma2 * dot(&wp, &signals.nu),
    );
    // Most of W p lies outside span(B): a law that kept only the in-span part of h would be off.
    let mut columns: Vec<&[f64]> = train.tokens.chunks_exact(d).collect();
    columns.extend_from_slice(&extra);
    let basis = orthonormal_basis(&columns);
    let inside: f64 = basis.iter().map(|q| dot(q, &wp).powi(2)).sum();
    let share = inside / dot(&wp, &wp);
    eprintln!("share of |W p|^2 inside span(B): {share:.3}");
    // The variance tolerance below is at most 18%: a law without the outside part would miss
    // the variance of z by over 35%.
    assert!(share < 0.65, "W p is mostly in span(B): {share}");

    let t = config.tokens;
    let labels = test.labels();
    for trainer in [&mut drawn, &mut projected] {
        let (z, u) = (trainer.test_logits(), trainer.test_scores().to_vec());
        for y in [1.0, -1.0] {
            for role in 0..4 {
                let positions: Vec<usize> = if role < 3 {
                    vec![role]
                } else {
                    (3..t).collect()
                };
                let (mut zs, mut us) = (Vec::new(), Vec::new());
                for (i, _) in labels.iter().enumerate().filter(|(_, &l)| l == y) {
                    for &pos in &positions {
                        zs.push(z[i * t + pos]);
                        us.push(u[i * t + pos]);
                    }
                }
                let signal: Vec<f64> = {
                    let (same, other) = (signals.class_signal(y), signals.class_signal(-y));
                    match role {
                        0 => same.to_vec(),
                        1 => same.iter().map(|v| v * config.rho).collect(),
                        2 => other.iter().map(|v| v * config.rho).collect(),
                        _ => vec![0.0; d],
                    }
                };
                let m = zs.len() as f64;
                let (mz, vz) = moments(&zs);
                let (mu_, vu) = moments(&us);
                let cz: f64 = zs
                    .iter()
                    .zip(&us)
                    .map(|(a, b)| (a - mz) * (b - mu_))
                    .sum::<f64>()
                    / (m - 1.0);
                let context = format!("{:?} y={y} role {role}", trainer.timings.test_draw);
                assert!(
                    (mz - dot(&signal, &wp)).abs() < 5.0 * (var_z / m).sqrt(),
                    "{context}: mean z {mz} vs {}",
                    dot(&signal, &wp)
                );
                assert!(
                    (mu_ - dot(&signal, &signals.nu)).abs() < 5.0 * (var_u / m).sqrt(),
                    "{context}: mean u"
                );
                assert!(
                    (vz / var_z - 1.0).abs() < 5.0 * (2.0 / m).sqrt(),
                    "{context}: var z {vz} vs {var_z}"
                );
                assert!(
                    (vu / var_u - 1.0).abs() < 5.0 * (2.0 / m).sqrt(),
                    "{context}: var u {vu} vs {var_u}"
                );
                assert!(
                    (cz - cov_zu).abs() < 5.0 * ((var_z * var_u + cov_zu * cov_zu) / m).sqrt(),
                    "{context}: cov {cz} vs {cov_zu}"
                );
            }
        }
    }
    // The test loss, sample by sample: the two means agree within sampling error.
    let losses = |trainer: &mut SubspaceTrainer<f64>| -> Vec<f64> {
        let out = Readout::of_logits(t, trainer.test_logits(), trainer.test_scores());
        out.outputs
            .iter()
            .zip(&labels)
            .map(|(f, y)| (1.0 + (-y * f).exp()).ln())
            .collect()
    };
    let (ld, lp) = (losses(&mut drawn), losses(&mut projected));
    let ((md, vd), (mp, vp)) = (moments(&ld), moments(&lp));
    let se = ((vd + vp) / ld.len() as f64).sqrt();
    eprintln!("test loss: drawn {md:.5}, projected {mp:.5}, standard error {se:.5}");
    assert!((md - mp).abs() < 5.0 * se, "{md} vs {mp} (se {se})");
}

/// `run` draws the test set in the subspace by default and records it; training metrics are
/// bit-identical to those of the projected test set. Reference-compatible runs (test set drawn
/// with the training seed) fall back to projected tokens.
#[test]
fn run_records_its_test_draw_and_keeps_training_exact() {
    let config = RunConfig {
        dim: 120,
        steps: 80,
        eval_every: 20,
        test_size: 100,
        ..RunConfig::default()
    };
    let drawn = quick(config.clone());
    let projected = quick_tokens(config.clone());
    let draw_of = |r: &benign::synthetic::RunResult| r.summary.startup.as_ref().unwrap().test_draw;
    assert_eq!(draw_of(&drawn), TestDraw::Subspace);
    assert_eq!(draw_of(&projected), TestDraw::Tokens);
    for (a, b) in drawn.records.iter().zip(&projected.records) {
        assert_eq!(a.train_loss.to_bits(), b.train_loss.to_bits());
        assert_eq!(a.train_acc, b.train_acc);
        assert_eq!(a.attention_clean, b.attention_clean);
        assert_eq!(a.attention_noisy, b.attention_noisy);
        assert_eq!(a.p_norm.to_bits(), b.p_norm.to_bits());
        assert_eq!(a.w_delta_norm.to_bits(), b.w_delta_norm.to_bits());
    }
    assert_ne!(
        drawn.summary.final_metrics.test_loss,
        projected.summary.final_metrics.test_loss
    );
    let mut compat = config;
    compat.apply_reference_compat();
    assert_eq!(draw_of(&quick(compat)), TestDraw::Tokens);
}

/// Runs `benign args`, killed after `seconds`: a command that hangs fails its test instead of
/// stalling the suite.
fn output_within(args: &[&str], seconds: u64) -> std::process::Output {
    use std::process::Stdio;
    let mut child = bin()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "`benign {}` still running after {seconds} s; stderr: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// `--threads` means the same in every command: 1..=1024, refused by the parser (exit 2, the
/// option and its range named) before anything starts, 0 included.
#[test]
fn every_command_refuses_threads_outside_1_to_1024() {
    let out = temp_dir("threads");
    let out_text = out.to_str().unwrap();
    let commands: [&[&str]; 5] = [
        &["run", "-d", "300", "--steps", "10", "--no-write", "--quiet"],
        &["sweep", "--grid", "d=20,30", "--quiet", "--out", out_text],
        &["pretrain", "--dataset", "mnist", "--data-dir", out_text],
        &["finetune", "--dataset", "mnist", "--data-dir", out_text],
        &["bench", "--quick"],
    ];
    for value in ["0", "-3", "1025", "100000"] {
        for command in commands {
            let mut args = command.to_vec();
            args.extend(["--threads", value]);
            let o = output_within(&args, 20);
            let stderr = exit_stderr(&o, 2, &format!("{args:?}"));
            assert!(
                stderr.contains("--threads") && stderr.contains("1..=1024"),
                "{args:?}: {stderr}"
            );
            assert!(o.stdout.is_empty(), "{args:?} printed before refusing");
            assert!(!out.exists(), "{args:?} wrote before refusing");
        }
    }
}

/// The step of a non-finite value is the gradient step whose update produced it, whatever the
/// evaluation schedule, trainer or precision, and the error names the quantity.
#[test]
fn a_diverging_run_names_the_gradient_step_that_diverged() {
    for (trainer, precision) in [("subspace", "f64"), ("subspace", "f32"), ("dense", "f64")] {
        for eval_every in ["1", "10"] {
            let args = [
                "run",
                "--quiet",
                "--no-write",
                "-d",
                "50",
                "--test-size",
                "10",
                "--steps",
                "30",
                "--lr",
                "1e300",
                "--trainer",
                trainer,
                "--precision",
                precision,
                "--eval-every",
                eval_every,
            ];
            let o = bin().args(args).output().unwrap();
            let stderr = exit_stderr(&o, 1, &format!("{args:?}"));
            assert!(
                stderr.contains("non-finite value at step 0:")
                    && stderr.contains("after the update"),
                "{args:?}: {stderr}"
            );
        }
    }
}

/// An I/O error prints its OS error once: the error's own text names the file and the cause,
/// and the cause chain does not repeat it.
#[test]
fn an_io_error_prints_its_cause_once() {
    let missing = temp_dir("io-cause").join("config.json");
    let o = bin()
        .args(["run", "--quiet", "--no-write", "--config"])
        .arg(&missing)
        .output()
        .unwrap();
    let stderr = exit_stderr(&o, 1, "--config");
    assert!(stderr.contains("config.json"), "{stderr}");
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "{stderr}"
    );
}

/// An f32 start-up (the default from `F32_STARTUP_FROM_DIM` on) changes a run only by
/// rounding: with the test tokens generated and projected (`TestDraw::Tokens`), final losses,
/// norms and attention agree with the f64 start-up to a relative 2e-6 over seeds (about 2e-7
/// seen). With the default subspace test draw the training side agrees as closely, but the test
/// metrics are another sample of the same law (the normals pass through a factor computed in
/// the start-up's precision), so they differ by sampling error: they are not compared here.
#[test]
fn an_f32_startup_changes_the_final_metrics_by_rounding_only() {
    let mut worst = 0.0f64;
    for seed in 0..3 {
        let final_metrics = |startup: Precision| {
            let config = RunConfig {
                dim: 3000,
                steps: 300,
                eval_every: 300,
                test_size: 200,
                seed,
                startup_precision: Some(startup),
                ..RunConfig::default()
            };
            let options = RunOptions {
                test_draw: TestDraw::Tokens,
                ..RunOptions::default()
            };
            let f = run(config, options).unwrap().summary.final_metrics;
            let clean = f.attention_clean.unwrap();
            vec![
                f.train_loss,
                f.test_loss,
                f.p_norm,
                f.w_delta_norm,
                clean.relevant,
                clean.weak_same,
            ]
        };
        let (a, b) = (final_metrics(Precision::F64), final_metrics(Precision::F32));
        for (x, y) in a.iter().zip(&b) {
            worst = worst.max((x - y).abs() / x.abs().max(1e-12));
        }
    }
    println!("largest relative disagreement of an f32 start-up: {worst:.2e}");
    assert!(worst < 2e-6, "{worst}");
    assert!(
        worst > 0.0,
        "the two start-ups must differ in rounding at least"
    );
}

/// A given `W_0` of the wrong size is refused naming `init-w`, before the output folder exists.
#[test]
fn a_wrong_sized_initial_matrix_is_refused_before_any_folder_is_made() {
    let out = super::temp_scratch("run", "wrong-init").join("run");
    let options = RunOptions {
        out_dir: Some(out.clone()),
        write_files: true,
        init: Some(InitSource::Matrix {
            dim: 10,
            values: vec![0.0; 100],
        }),
        ..RunOptions::default()
    };
    let err = run(RunConfig::default(), options).expect_err("a 10 x 10 W_0 at d = 2000");
    assert!(
        matches!(&err, benign::Error::InvalidOption { field, .. } if field == "init-w"),
        "{err}"
    );
    assert!(!out.exists(), "{} was created", out.display());
}
