//! The one-layer transformer encoder on the synthetic task: the paper's expectations
//! with fixed seeds, determinism across thread counts, and `benign run` / `benign sweep` with
//! `--model encoder` end to end.

use std::path::PathBuf;

use benign::sweep::results::{read_records, RESULTS_FILE};
use benign::synthetic::{run, ModelKind, Precision, Preset, RunConfig, RunOptions};

use super::{bin, ok};

fn scratch(name: &str) -> PathBuf {
    super::temp_scratch("encoder", name)
}

fn encoder(config: RunConfig) -> RunConfig {
    RunConfig {
        model: ModelKind::Encoder,
        precision: Precision::F32,
        ..config
    }
}

/// The paper's Figures 6-7, balanced preset at the paper's size (d = mlp = 2000, 1000 steps
/// of lr 5e-3): every training sample fitted, noisy ones included, and a training loss far below
/// the fixed-head model's (whose head cannot grow); the clean samples' [CLS] attention goes to
/// their relevant token.
///
/// Not asserted: the issue also expects the noisy samples' [CLS] attention on their weak-other
/// token above 0.5 by step 1000 (SPEC: "rising to about 0.9"). With this seed this model puts it
/// on an irrelevant token instead (step 1000: weak-other 0.026, largest irrelevant 0.767), and
/// PyTorch running the same model from the same data and initial parameters follows the same
/// trajectory (`scripts/compare_encoder.py`: losses equal to 2e-7 relative). Over draws it is not
/// what the reference produces either: `scripts/weak_other_seeds.py --model encoder --dim 500
/// --seeds 1-5` gives the reference (its data generator, the paper's module in PyTorch, PyTorch's
/// initialisation) a mean weak-other attention of 0.26 +- 0.08 over its 20 noisy samples (median
/// 0.03, 6 of 20 above 0.5) against 0.15 +- 0.07 for this model (permutation p = 0.28), and at
/// d = 2000 the reference's own seed-42 data gives 0.018, 0.015 and 0.418 with three of our
/// initialisations (`--sides refdata --reference-data-seed 42`). The
/// trainable head and MLP fit the flipped labels whichever token the [CLS] query attends, so a
/// single seed's weak-other attention is a coin with a small chance of heads: asserting it would
/// only test the seed. See docs/reproduction.md, the encoder section.
/// About a minute and a half in release mode on two cores.
#[test]
fn balanced_preset_fits_every_sample_with_a_trainable_head() {
    let config = RunConfig {
        eval_every: 1000,
        test_size: 100,
        ..RunConfig::preset(Preset::Balanced)
    };
    let result = run(encoder(config.clone()), RunOptions::default()).unwrap();
    let last = &result.summary.final_metrics;
    let fixed_head = run(config, RunOptions::default()).unwrap();
    let fixed_loss = fixed_head.summary.final_metrics.train_loss;
    assert_eq!(last.step, 1000);
    assert_eq!(last.train_acc, 1.0, "{last:?}");
    assert_eq!(last.train_acc_noisy, Some(1.0), "{last:?}");
    assert!(
        last.train_loss < 0.05 * fixed_loss,
        "encoder train loss {} vs fixed-head {fixed_loss}",
        last.train_loss
    );
    let noisy = last.attention_noisy.expect("the preset has noisy samples");
    let clean = last.attention_clean.expect("clean samples");
    eprintln!("step 1000 [CLS] attention: clean {clean:?}, noisy {noisy:?}");
    assert!(clean.relevant > 0.5, "{clean:?}");
    assert!(clean.relevant > noisy.relevant, "{clean:?} vs {noisy:?}");
}

#[test]
fn same_seed_same_bits_whatever_the_thread_count() {
    let config = encoder(RunConfig {
        dim: 48,
        mlp_dim: Some(40),
        steps: 30,
        eval_every: 10,
        test_size: 50,
        ..RunConfig::default()
    });
    let in_pool = |threads: usize, config: RunConfig| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| run(config, RunOptions::default()).unwrap())
    };
    for config in [
        config.clone(),
        RunConfig {
            no_skip: true,
            precision: Precision::F64,
            ..config
        },
    ] {
        let (one, two) = (in_pool(1, config.clone()), in_pool(2, config));
        for (a, b) in one.records.iter().zip(&two.records) {
            assert_eq!(a.train_loss.to_bits(), b.train_loss.to_bits());
            assert_eq!(a.test_loss.to_bits(), b.test_loss.to_bits());
            assert_eq!(a.attention_noisy, b.attention_noisy);
        }
        assert_eq!(one.tracked[0].rows, two.tracked[0].rows);
        // The tracked [CLS] rows leave out its attention on itself: at most 1, positive.
        for row in &one.tracked[0].rows {
            let total: f64 = row.iter().sum();
            assert!(total > 0.0 && total <= 1.0 + 1e-6, "{total}");
        }
    }
}

#[test]
fn run_writes_every_output_and_rejects_bad_options() {
    let out = scratch("run");
    let init = out.join("init");
    let output = bin()
        .args(["run", "--model", "encoder", "-d", "24", "--mlp-dim", "16"])
        .args([
            "--steps",
            "12",
            "--eval-every",
            "4",
            "--test-size",
            "30",
            "--quiet",
            "--json",
        ])
        .arg("--save-init")
        .arg(&init)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    ok(&output);
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["model"], "encoder");
    assert_eq!(summary["precision"], "f32");
    super::assert_run_files(&out);
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 4); // steps 0, 4, 8, 12
    let attention = std::fs::read_to_string(out.join("attention.csv")).unwrap();
    // 13 steps x 2 tracked samples x 8 input tokens, plus the header.
    assert_eq!(attention.lines().count(), 13 * 2 * 8 + 1);
    let config = super::json_file(&out.join("config.json"));
    assert_eq!(config["model"], "encoder");
    assert_eq!(config["mlp_dim"], 16);
    let (shape, query) =
        benign::io::npy::read_npy::<f32>(&init.join("block.attn.query.weight.npy"))
            .expect("initial query weight written");
    assert_eq!(shape, vec![24, 24]);
    assert!(query.iter().all(|v| v.abs() < 1.0 / 24f32.sqrt()));
    assert!(init.join("cls.npy").is_file() && init.join("head.bias.npy").is_file());

    for bad in [
        vec!["run", "--no-skip", "--steps", "1"],
        vec!["run", "--mlp-dim", "8", "--steps", "1"],
        vec![
            "run",
            "--model",
            "encoder",
            "--mlp-dim",
            "0",
            "--steps",
            "1",
        ],
    ] {
        let output = bin().args(&bad).arg("--no-write").output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{bad:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("no-skip") || stderr.contains("mlp-dim"),
            "{stderr}"
        );
    }
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn sweep_runs_the_encoder_grid() {
    let out = scratch("sweep");
    let grid = [
        ["--model", "encoder", "--grid", "d=16,24", "--grid"].as_slice(),
        &["signal_norm=5,20", "--steps", "20", "--test-size", "40"],
        &["--mlp-dim", "16"],
    ]
    .concat();
    let output = super::grid_command("sweep", &grid, &out, &[])
        .output()
        .unwrap();
    ok(&output);
    let (records, ignored) = read_records(&out.join(RESULTS_FILE)).unwrap();
    assert_eq!((records.len(), ignored), (4, 0));
    for r in &records {
        assert!(r.error.is_none(), "{:?}", r.error);
        assert_eq!(r.config.model, ModelKind::Encoder);
        assert_eq!(r.config.precision, Precision::F32);
        assert!(r.final_metrics.as_ref().unwrap().train_loss.is_finite());
    }
    let crn = bin()
        .args(["sweep", "--model", "encoder", "--grid", "signal_norm=5,20"])
        .args(["--common-random-numbers", "--quiet", "--no-plot", "--out"])
        .arg(out.join("crn"))
        .output()
        .unwrap();
    assert_eq!(crn.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&out);
}
