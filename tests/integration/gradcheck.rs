//! The gradient-check suite as a test: every op and model passes, and the checker does fail on
//! a wrong gradient.

use benign::autodiff::{Tape, Var};
use benign::gradcheck::{self, run_case, Case, CaseKind, Config, Domain, Input, Mode, Selection};
use benign_kernels::Float;

#[test]
fn the_default_suite_passes() {
    let mut lines = Vec::new();
    let summary = gradcheck::run(&Config::default(), &Selection::default(), |r| {
        lines.push(format!(
            "{} {} {} {:e} {}",
            r.case, r.check, r.input, r.max_abs_error, r.passed
        ));
    })
    .unwrap();
    assert!(
        summary.all_passed(),
        "failures: {:?}\n{}",
        summary.failures,
        lines.join("\n")
    );
    // Every op family and model is present, with each kind of check.
    for name in gradcheck::op_names()
        .iter()
        .chain(&gradcheck::model_names())
    {
        assert!(
            lines.iter().any(|l| l.starts_with(&format!("{name}/"))),
            "{name} not checked"
        );
    }
    for check in [
        "jacobian",
        "direction",
        "f32_vs_f64",
        "reentrant",
        "threads",
        "taylor",
        "closed_form",
    ] {
        assert!(
            lines.iter().any(|l| l.split(' ').nth(1) == Some(check)),
            "no {check} check ran"
        );
    }
    assert!(summary.checks > 200);
}

fn sine<T: Float>(x: T) -> T {
    T::from_f64(x.to_f64().sin())
}

fn cosine<T: Float>(x: T) -> T {
    T::from_f64(x.to_f64().cos())
}

/// A derivative that is off by 0.1%: a subtle bug the checker must catch.
fn almost_cosine<T: Float>(x: T) -> T {
    T::from_f64(1.001 * x.to_f64().cos())
}

fn good_sine<T: Float>(tape: &mut Tape<T>, v: &[Var]) -> Var {
    let y = tape.map(v[0], sine::<T>, cosine::<T>);
    tape.mul(y, v[1])
}

fn broken_sine<T: Float>(tape: &mut Tape<T>, v: &[Var]) -> Var {
    let y = tape.map(v[0], sine::<T>, almost_cosine::<T>);
    tape.mul(y, v[1])
}

fn sine_case(build: gradcheck::Builder, mode: Mode) -> Case {
    Case {
        kind: CaseKind::Op,
        family: "sine",
        name: "sine/test".into(),
        inputs: vec![
            Input::var("x", &[3, 4]),
            Input::var_in("scale", &[4], Domain::Normal(1.0)),
        ],
        build,
        mode,
        f32: true,
        taylor: true,
        threads: true,
        extra: None,
    }
}

#[test]
fn a_correct_custom_op_passes_every_check() {
    for mode in [Mode::Jacobian, Mode::Direction] {
        let results = run_case(
            &sine_case(benign::gradcheck_builder!(good_sine), mode),
            &Config::default(),
        );
        assert!(results.iter().all(|r| r.passed), "{results:#?}");
    }
}

#[test]
fn a_wrong_derivative_is_caught() {
    let config = Config::default();
    let results = run_case(
        &sine_case(benign::gradcheck_builder!(broken_sine), Mode::Jacobian),
        &config,
    );
    let failed = |check: &str, input: &str| {
        results
            .iter()
            .any(|r| r.check == check && r.input.starts_with(input) && !r.passed)
    };
    assert!(failed("jacobian", "x"), "{results:#?}");
    assert!(
        failed("taylor", "all"),
        "the Taylor slope drops to 1 with a wrong gradient: {results:#?}"
    );
    // The other input's gradient does not involve the broken derivative.
    assert!(results
        .iter()
        .any(|r| r.check == "jacobian" && r.input.starts_with("scale") && r.passed));

    let results = run_case(
        &sine_case(benign::gradcheck_builder!(broken_sine), Mode::Direction),
        &config,
    );
    assert!(
        results.iter().any(|r| r.check == "direction" && !r.passed),
        "{results:#?}"
    );
}

#[test]
fn unknown_names_are_invalid_options_listing_the_valid_ones() {
    let err = gradcheck::select(&Selection {
        ops: vec!["matmull".into()],
        models: vec![],
    })
    .unwrap_err();
    assert_eq!(err.exit_code(), 2);
    let message = err.to_string();
    assert!(
        message.contains("matmull")
            && message.contains("matmul,")
            && message.contains("layer_norm"),
        "{message}"
    );
    let err = gradcheck::select(&Selection {
        ops: vec![],
        models: vec!["gpt".into()],
    })
    .unwrap_err();
    assert!(err.to_string().contains("attention"));
}

#[test]
fn selection_runs_only_the_named_cases() {
    let cases = gradcheck::select(&Selection {
        ops: vec!["softmax".into()],
        models: vec![],
    })
    .unwrap();
    assert!(!cases.is_empty());
    assert!(cases.iter().all(|c| c.family == "softmax"));
}

#[test]
fn the_cli_reports_json_and_exit_statuses() {
    let bin = env!("CARGO_BIN_EXE_benign");
    let out = std::process::Command::new(bin)
        .args(["gradcheck", "--op", "layer_norm", "--json"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() > 3);
    assert!(lines[..lines.len() - 1]
        .iter()
        .all(|v| v["passed"] == true && v["case"].is_string()));
    assert_eq!(lines.last().unwrap()["summary"]["failed"], 0);

    let out = std::process::Command::new(bin)
        .args(["gradcheck", "--model", "nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("attention"));

    // Impossible tolerances make checks fail: exit status 1.
    let out = std::process::Command::new(bin)
        .args([
            "gradcheck",
            "--op",
            "exp",
            "--atol",
            "1e-30",
            "--rtol",
            "1e-30",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

/// Bad values are errors of their option (a negative `--step` is a value, not an unknown
/// argument) and nothing is printed to stdout before the arguments are known to be valid.
#[test]
fn the_cli_validates_before_printing() {
    let bin = env!("CARGO_BIN_EXE_benign");
    for (args, needle) in [
        (&["gradcheck", "--step", "-1"][..], "`step`"),
        (&["gradcheck", "--atol", "-1e-3"][..], "`atol`"),
        (&["gradcheck", "--op", "nosuchop"][..], "nosuchop"),
        (&["gradcheck", "--model", "nosuchmodel"][..], "nosuchmodel"),
    ] {
        let out = std::process::Command::new(bin).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("unexpected argument"),
            "{args:?}: {stderr}"
        );
        assert!(
            out.stdout.is_empty(),
            "{args:?} printed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}
