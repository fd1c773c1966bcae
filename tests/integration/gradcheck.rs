//! The gradient-check suite as a test: every op and model passes, and the checker does fail on
//! a wrong gradient.

use benign::autodiff::{Tape, Var};
use benign::gradcheck::{self, run_case, Case, Config, Domain, Input, Mode, Selection};
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

/// An op case of every check (f32, Taylor, threads) in `mode`.
fn sine_case(build: gradcheck::Builder, mode: Mode) -> Case {
    let inputs = vec![
        Input::var("x", &[3, 4]),
        Input::var_in("scale", &[4], Domain::Normal(1.0)),
    ];
    Case {
        mode,
        taylor: true,
        threads: true,
        ..Case::op("sine", "test", inputs, build)
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

/// The selection of the ops named `ops` (no model), as `--op` makes it.
fn ops(ops: &[&str]) -> Selection {
    Selection {
        ops: ops.iter().map(|&op| op.into()).collect(),
        models: vec![],
    }
}

#[test]
fn unknown_names_are_invalid_options_listing_the_valid_ones() {
    let err = gradcheck::select(&ops(&["matmull"])).unwrap_err();
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
    let cases = gradcheck::select(&ops(&["softmax"])).unwrap();
    assert!(!cases.is_empty());
    assert!(cases.iter().all(|c| c.family == "softmax"));
}

#[test]
fn the_cli_reports_json_and_exit_statuses() {
    let gradcheck = |args: &[&str]| super::bin().arg("gradcheck").args(args).output().unwrap();
    let out = gradcheck(&["--op", "layer_norm", "--json"]);
    super::ok(&out);
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

    super::assert_exit(&gradcheck(&["--model", "nope"]), 2, &["attention"]);

    // Impossible tolerances make checks fail: exit status 1.
    let out = gradcheck(&["--op", "exp", "--atol", "1e-30", "--rtol", "1e-30"]);
    assert_eq!(out.status.code(), Some(1));
}

/// Bad values are errors of their option (a negative `--step` is a value, not an unknown
/// argument) and nothing is printed to stdout before the arguments are known to be valid.
#[test]
fn the_cli_validates_before_printing() {
    for (args, needle) in [
        (&["gradcheck", "--step", "-1"][..], "`step`"),
        (&["gradcheck", "--atol", "-1e-3"][..], "`atol`"),
        (&["gradcheck", "--op", "nosuchop"][..], "nosuchop"),
        (&["gradcheck", "--model", "nosuchmodel"][..], "nosuchmodel"),
    ] {
        let out = super::bin().args(args).output().unwrap();
        let stderr = super::exit_stderr(&out, 2, &format!("{args:?}"));
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

#[test]
fn check_graph_passes_a_correct_op_and_catches_a_wrong_derivative() {
    let inputs = || {
        vec![
            Input::var("x", &[3, 4]),
            Input::given("scale", &[4], vec![0.5, -1.0, 2.0, 0.25]),
        ]
    };
    let config = Config::default();
    let check = |build| gradcheck::check_graph("sine", inputs(), build, &config).unwrap();
    let good = check(benign::gradcheck_builder!(good_sine));
    assert!(good.passed(), "{}", good.table());
    // 16 input elements x 12 outputs: small enough for the full Jacobian.
    let checks: Vec<&str> = good.results.iter().map(|r| r.check).collect();
    for check in ["jacobian", "f32_vs_f64", "reentrant", "threads"] {
        assert!(checks.contains(&check), "{checks:?}");
    }
    assert!(good.results.iter().all(|r| r.kind == "custom"));

    let bad = check(benign::gradcheck_builder!(broken_sine));
    assert!(!bad.passed());
    assert_eq!(bad.summary.failures, ["sine/jacobian/x[3, 4]"]);
    assert!(bad.table().contains("FAILED: sine/jacobian/x[3, 4]"));
}

#[test]
fn check_graph_refuses_given_values_that_do_not_fit_their_shape() {
    let err = gradcheck::check_graph(
        "sine",
        vec![
            Input::var("x", &[3, 4]),
            Input::given("scale", &[4], vec![1.0; 3]),
        ],
        benign::gradcheck_builder!(good_sine),
        &Config::default(),
    )
    .unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert!(err.to_string().contains("`scale` has 3 values"), "{err}");
}

fn logsumexp(x: &[f64]) -> f64 {
    let max = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    max + x.iter().map(|v| (v - max).exp()).sum::<f64>().ln()
}

fn softmax(x: &[f64]) -> Vec<f64> {
    let l = logsumexp(x);
    x.iter().map(|v| (v - l).exp()).collect()
}

#[test]
fn check_gradient_compares_a_closed_form_with_finite_differences() {
    let x = [0.3, -1.2, 2.0, 0.7];
    let config = Config::default();
    let good = gradcheck::check_gradient("logsumexp", &x, logsumexp, softmax, &config).unwrap();
    assert!(good.passed(), "{}", good.table());
    assert_eq!(good.results.len(), 1);
    assert_eq!(good.results[0].check, "jacobian");
    assert_eq!(good.results[0].input, "x[4]");
    assert!(good.results[0].max_abs_error < 1e-8);

    // A gradient 0.1% too large in one entry fails.
    let off = |x: &[f64]| {
        let mut g = softmax(x);
        g[2] *= 1.001;
        g
    };
    let bad = gradcheck::check_gradient("logsumexp", &x, logsumexp, off, &config).unwrap();
    assert!(!bad.passed(), "{}", bad.table());

    let short = |x: &[f64]| softmax(&x[..3]);
    let err = gradcheck::check_gradient("logsumexp", &x, logsumexp, short, &config).unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert!(err.to_string().contains("`vjp`"), "{err}");
}

/// `y = A tanh(x)` with 100 inputs and 100 outputs: beyond the full Jacobian's size, so one
/// random direction is checked, and it catches a transposed `A`.
#[test]
fn check_vjp_checks_a_direction_on_large_functions() {
    let n = 100;
    let matrix: Vec<f64> = (0..n * n)
        .map(|k| ((k * 7919 % 101) as f64 - 50.0) / 50.0)
        .collect();
    let a = matrix.as_slice();
    let f = |x: &[f64]| -> Vec<f64> {
        (0..n)
            .map(|i| (0..n).map(|j| a[i * n + j] * x[j].tanh()).sum())
            .collect()
    };
    // `v^T A diag(tanh'(x))`, reading `A_ij` at `a[at(i, j)]`: the VJP when `at` is row-major,
    // a wrong one (through `A^T`) when it is column-major.
    let vjp_reading = |at: fn(usize, usize, usize) -> usize| {
        move |x: &[f64], v: &[f64]| -> Vec<f64> {
            (0..n)
                .map(|j| {
                    let column: f64 = (0..n).map(|i| v[i] * a[at(n, i, j)]).sum();
                    column * (1.0 - x[j].tanh().powi(2))
                })
                .collect()
        }
    };
    let vjp = vjp_reading(|n, i, j| i * n + j);
    let transposed = vjp_reading(|n, i, j| j * n + i);
    let x: Vec<f64> = (0..n).map(|k| (k as f64 * 0.37).sin()).collect();
    let config = Config::default();
    let good = gradcheck::check_vjp("dense_tanh", &x, f, vjp, &config).unwrap();
    assert!(good.passed(), "{}", good.table());
    assert_eq!(good.results.len(), 1);
    assert_eq!(good.results[0].check, "direction");
    let bad = gradcheck::check_vjp("dense_tanh", &x, f, transposed, &config).unwrap();
    assert!(!bad.passed(), "{}", bad.table());
}

/// The library's report of the cases `--op layer_norm` selects is, line for line, what the
/// command prints.
#[test]
fn the_report_prints_what_the_cli_prints() {
    let selection = ops(&["layer_norm"]);
    let config = Config::default();
    let mut results = Vec::new();
    for case in gradcheck::select(&selection).unwrap() {
        results.extend(gradcheck::check_case(&case, &config).unwrap().results);
    }
    let report = gradcheck::Report::new(results);
    for (extra, expected) in [
        (None, report.table()),
        (Some("--json"), report.json_lines()),
    ] {
        let out = super::bin()
            .args(["gradcheck", "--op", "layer_norm"])
            .args(extra)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        assert_eq!(String::from_utf8(out.stdout).unwrap(), expected + "\n");
    }
}
