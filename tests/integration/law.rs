//! `--init gaussian` and the d-free `--trainer law`: the trainers agree under a Gaussian `W_0`,
//! and `law` reproduces the materialised trainer's outputs in distribution.

use benign::synthetic::subspace::TestDraw;
use benign::synthetic::{run, InitKind, Precision, RunConfig, RunOptions, TrainerKind};

fn run_ok(config: RunConfig, test_draw: TestDraw) -> benign::synthetic::RunResult {
    let options = RunOptions {
        test_draw,
        ..RunOptions::default()
    };
    run(config, options).expect("run succeeds")
}

/// Under a Gaussian `W_0` the dense and subspace trainers still see the same matrix and agree to
/// rounding, and the Gaussian draw is not the uniform one.
#[test]
fn gaussian_init_dense_and_subspace_agree() {
    let base = RunConfig {
        dim: 250,
        test_size: 100,
        steps: 200,
        init: InitKind::Gaussian,
        precision: Precision::F64,
        ..RunConfig::default()
    };
    let trained_by = |trainer| {
        run_ok(
            RunConfig {
                trainer,
                ..base.clone()
            },
            TestDraw::Tokens,
        )
    };
    let (dense, subspace) = (
        trained_by(TrainerKind::Dense),
        trained_by(TrainerKind::Subspace),
    );
    for (a, b) in dense.records.iter().zip(&subspace.records) {
        for (u, v) in [
            (a.train_loss, b.train_loss),
            (a.test_loss, b.test_loss),
            (a.p_norm, b.p_norm),
            (a.w_delta_norm, b.w_delta_norm),
        ] {
            assert!((u - v).abs() <= 1e-6 * u.abs().max(v.abs()).max(1e-12));
        }
    }
    let uniform = run_ok(
        RunConfig {
            init: InitKind::Uniform,
            trainer: TrainerKind::Subspace,
            ..base
        },
        TestDraw::Tokens,
    );
    let last = |r: &benign::synthetic::RunResult| r.records.last().unwrap().p_norm;
    assert_ne!(last(&uniform), last(&subspace));
    assert_eq!(subspace.config.init, InitKind::Gaussian);
}

/// Exports the data of a 4-sample problem of dimension `dim` with a Gaussian `W_0` into `dir`.
fn export_gaussian(dim: &str, dir: &std::path::Path) {
    crate::ok(
        &crate::bin()
            .args(["data", "export", "-d", dim, "-n", "4", "--test-size", "2"])
            .args(["--init", "gaussian", "--out"])
            .arg(dir)
            .output()
            .unwrap(),
    );
}

/// `benign data export --init gaussian` writes the Gaussian `W_0` and records the law.
#[test]
fn data_export_writes_the_gaussian_w0() {
    let dir = crate::temp_scratch("law", "export");
    export_gaussian("40", &dir);
    let config = crate::json_file(&dir.join("config.json"));
    assert_eq!(config["init"], "gaussian");
    let w0 = benign::synthetic::export::load_init(&dir.join("w0.npy")).unwrap();
    let expected: Vec<f64> =
        benign::synthetic::init::InitSource::from_seed_with(42, 40, InitKind::Gaussian).matrix();
    assert_eq!(w0.matrix::<f64>(), expected);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--trainer law` runs only where its law is the model's: refused with exit 2, naming the
/// option and why, with a uniform `W_0`, given data, a given `W_0`, or a test set that reuses
/// the training noise.
#[test]
fn law_is_refused_where_its_law_does_not_hold() {
    let dir = crate::temp_scratch("law", "refusals");
    export_gaussian("30", &dir);
    let w0 = dir.join("w0.npy");
    let data = dir.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec![], "--init gaussian"),
        (vec!["--init", "gaussian", "--data", data], "--data"),
        (
            vec![
                "--init",
                "gaussian",
                "-d",
                "30",
                "--init-w",
                w0.to_str().unwrap(),
            ],
            "--init-w",
        ),
        (
            vec!["--init", "gaussian", "--reference-compat"],
            "independent",
        ),
    ];
    for (args, why) in cases {
        let out = crate::bin()
            .args(["run", "--trainer", "law", "--quiet", "--no-write"])
            .args(["--steps", "2"])
            .args(&args)
            .output()
            .unwrap();
        let stderr = crate::exit_stderr(&out, 2, &format!("{args:?}"));
        assert!(
            stderr.contains("trainer") && stderr.contains(why),
            "{args:?}: {stderr}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Where the subspace trainer cannot hold its d x r start-up, the refusal points at `law`; `law`
/// itself runs there in a fraction of a second.
#[test]
fn law_runs_where_subspace_is_refused() {
    let refused = crate::bin()
        .args([
            "run",
            "--trainer",
            "subspace",
            "--init",
            "gaussian",
            "-d",
            "1000000000",
            "--quiet",
            "--no-write",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(stderr.contains("--trainer law"), "{stderr}");
    let result = run_ok(
        RunConfig {
            dim: 1_000_000_000,
            steps: 100,
            trainer: TrainerKind::Law,
            init: InitKind::Gaussian,
            ..RunConfig::default()
        },
        TestDraw::Subspace,
    );
    let last = result.records.last().unwrap();
    assert!(last.train_loss.is_finite() && last.test_loss.is_finite());
    assert_eq!(result.summary.subspace_rank, Some(162));
    assert_eq!(result.tracked.len(), 2);
}

/// With no trainer named, a Gaussian run above `law::AUTO_DIM` runs with the law trainer and says
/// so; naming a trainer keeps it.
#[test]
fn run_chooses_the_law_trainer_above_the_automatic_dimension() {
    let out = super::bin()
        .args([
            "run",
            "-d",
            "1000000",
            "--init",
            "gaussian",
            "--no-write",
            "--log-format",
            "json",
        ])
        .output()
        .unwrap();
    super::ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("trainer law chosen: d = 1000000"),
        "{stdout}"
    );
    assert!(stdout.contains("(Law trainer"), "{stdout}");
    assert!(stderr.contains("trainer law chosen"), "{stderr}");
    let named = super::bin()
        .args(["run", "-d", "1000000", "--init", "gaussian"])
        .args(["--trainer", "dense", "--no-write"])
        .output()
        .unwrap();
    // The dense trainer cannot hold a 10^6 x 10^6 W: refused before any work, not replaced.
    let stderr = super::exit_stderr(&named, 1, "--trainer dense");
    assert!(
        stderr.contains("refusing to allocate") && !stderr.contains("law chosen"),
        "{stderr}"
    );
}
