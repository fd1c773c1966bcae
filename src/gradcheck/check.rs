//! The checks themselves (see the module documentation of [`crate::gradcheck`]).

use benign_kernels::Float;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::Serialize;

use super::cases::{Case, Domain, Input, Mode};
use super::{DEFAULT_ATOL, DEFAULT_RTOL, DEFAULT_STEP, F32_RTOL};
use crate::autodiff::{Tape, Var};

/// Step size, tolerances and seed of a gradcheck run.
#[derive(Clone, Debug)]
pub struct Config {
    /// Seed of the inputs, output weights and directions each case draws (each case derives its own
    /// stream from it and its name).
    pub seed: u64,
    /// Central finite-difference step (in input units).
    pub step: f64,
    /// Absolute tolerance: an element passes when `|analytic - numeric| <= atol + rtol |numeric|`.
    pub atol: f64,
    /// Relative tolerance of the same criterion.
    pub rtol: f64,
    /// Bound on `max|g32 - g64| / max|g64|` for the f32-against-f64 check.
    pub f32_rtol: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            seed: 0,
            step: DEFAULT_STEP,
            atol: DEFAULT_ATOL,
            rtol: DEFAULT_RTOL,
            f32_rtol: F32_RTOL,
        }
    }
}

/// The outcome of one check.
#[derive(Clone, Debug, Serialize)]
pub struct CheckResult {
    /// `"op"` or `"model"`.
    pub kind: &'static str,
    /// The case's unique name (`family/variant` for built-in ones).
    pub case: String,
    /// `jacobian`, `direction`, `f32_vs_f64`, `reentrant`, `threads`, `taylor`, `closed_form`.
    pub check: &'static str,
    /// The input (name and shape) the errors refer to, or `all`.
    pub input: String,
    /// Element type the analytic gradient was computed in.
    pub dtype: &'static str,
    /// Finite-difference step, when the check uses one.
    pub step: Option<f64>,
    /// Largest absolute difference between the gradient and its reference in this check.
    pub max_abs_error: f64,
    /// Largest difference relative to the reference's magnitude, as the check's tolerance defines
    /// it.
    pub max_rel_error: f64,
    /// The pass criterion.
    pub tolerance: String,
    /// Whether every compared element met the tolerance (NaN fails).
    pub passed: bool,
    /// Extra figures (e.g. the fitted Taylor slope).
    pub detail: String,
}

impl CheckResult {
    /// A passing result with no figures yet, to be filled in by its check.
    pub(crate) fn blank(
        kind: &'static str,
        case: &str,
        check: &'static str,
        input: String,
        dtype: &'static str,
    ) -> Self {
        CheckResult {
            kind,
            case: case.to_string(),
            check,
            input,
            dtype,
            step: None,
            max_abs_error: 0.0,
            max_rel_error: 0.0,
            tolerance: String::new(),
            passed: true,
            detail: String::new(),
        }
    }

    /// Fills in a check of bit-identity between two runs: it passes when `same` (the caller's
    /// comparison, which may cover more than the gradients given); its error is the largest
    /// difference between the two runs' gradients; `detail` says what the runs were.
    fn set_bitwise(
        &mut self,
        same: bool,
        (first, second): (&[Vec<f64>], &[Vec<f64>]),
        detail: &str,
    ) {
        self.max_abs_error = max_difference(first, second);
        self.tolerance = "bitwise equal".into();
        self.passed = same;
        self.detail = detail.into();
    }
}

/// Totals over a run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    /// Checks run.
    pub checks: usize,
    /// Checks that failed.
    pub failed: usize,
    /// Largest errors over the finite-difference checks (`jacobian`, `direction`).
    pub max_abs_error: f64,
    /// Largest relative error over the same checks.
    pub max_rel_error: f64,
    /// `case/check/input` of every failure.
    pub failures: Vec<String>,
}

impl Summary {
    /// Counts one result, and its errors if it is a finite-difference check.
    pub fn add(&mut self, r: &CheckResult) {
        self.checks += 1;
        if !r.passed {
            self.failed += 1;
            self.failures
                .push(format!("{}/{}/{}", r.case, r.check, r.input));
        }
        if matches!(r.check, "jacobian" | "direction") {
            self.max_abs_error = self.max_abs_error.max(r.max_abs_error);
            self.max_rel_error = self.max_rel_error.max(r.max_rel_error);
        }
    }

    /// Whether no check failed.
    pub fn all_passed(&self) -> bool {
        self.failed == 0
    }
}

/// Rayon pools of 1 and 4 threads for the thread-count check.
pub(crate) struct Pools {
    one: rayon::ThreadPool,
    four: rayon::ThreadPool,
}

impl Pools {
    pub(crate) fn new() -> Self {
        let pool = |n| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .expect("building a rayon pool")
        };
        Pools {
            one: pool(1),
            four: pool(4),
        }
    }
}

/// Runs every check of one case.
pub fn run_case(case: &Case, config: &Config) -> Vec<CheckResult> {
    run_case_with(case, config, &Pools::new())
}

/// Runs every check of `case` with the default configuration and panics naming each failed one:
/// the assertion of the op families' own gradient tests.
#[cfg(test)]
pub(crate) fn assert_case_passes(case: &Case) {
    let results = run_case(case, &Config::default());
    assert!(!results.is_empty());
    for r in &results {
        assert!(
            r.passed,
            "{} {} {}: {:e} ({})",
            r.case, r.check, r.input, r.max_abs_error, r.detail
        );
    }
}

fn seed_for(case: &Case, config: &Config) -> u64 {
    // Each case draws its own stream, independent of suite order.
    crate::seed::fnv1a(case.name.as_bytes()) ^ config.seed
}

fn draw(input: &Input, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let n = input.numel();
    let normal = |rng: &mut ChaCha8Rng| -> f64 { StandardNormal.sample(rng) };
    match &input.domain {
        Domain::Normal(s) => (0..n).map(|_| s * normal(rng)).collect(),
        Domain::Uniform(a) => (0..n).map(|_| rng.random_range(-a..*a)).collect(),
        Domain::Positive => (0..n).map(|_| rng.random_range(0.5..2.0)).collect(),
        Domain::AwayFromZero => (0..n)
            .map(|_| {
                let m: f64 = rng.random_range(0.3..1.5);
                if rng.random::<bool>() {
                    m
                } else {
                    -m
                }
            })
            .collect(),
        Domain::Labels => (0..n)
            .map(|_| if rng.random::<bool>() { 1.0 } else { -1.0 })
            .collect(),
        Domain::Values(v) => {
            assert_eq!(
                v.len(),
                n,
                "input `{}`: {} fixed values for {n} elements",
                input.name,
                v.len()
            );
            v.clone()
        }
    }
}

/// Records the case on `tape` (cleared first) and returns the input handles and the output.
fn record<T: Float>(
    tape: &mut Tape<T>,
    case: &Case,
    build: fn(&mut Tape<T>, &[Var]) -> Var,
    values: &[Vec<f64>],
) -> (Vec<Var>, Var) {
    tape.clear();
    let vars: Vec<Var> = case
        .inputs
        .iter()
        .zip(values)
        .map(|(input, v)| {
            let data: Vec<T> = v.iter().map(|&x| T::from_f64(x)).collect();
            if input.differentiable {
                tape.variable(&input.dims, &data)
            } else {
                tape.constant(&input.dims, &data)
            }
        })
        .collect();
    let out = build(tape, &vars);
    (vars, out)
}

/// Gradients of `<seed, y>` with respect to every differentiable input (zeros where the output
/// does not depend on it), in f64, and the output.
fn gradients<T: Float>(
    tape: &mut Tape<T>,
    case: &Case,
    build: fn(&mut Tape<T>, &[Var]) -> Var,
    values: &[Vec<f64>],
    seed: &[f64],
) -> (Vec<f64>, Vec<Vec<f64>>) {
    tape.set_grad_enabled(true);
    let (vars, out) = record(tape, case, build, values);
    let output: Vec<f64> = tape.value(out).iter().map(|v| v.to_f64()).collect();
    let seed_t: Vec<T> = seed.iter().map(|&v| T::from_f64(v)).collect();
    let grads = backward_once(tape, case, &vars, out, &seed_t);
    (output, grads)
}

fn backward_once<T: Float>(
    tape: &mut Tape<T>,
    case: &Case,
    vars: &[Var],
    out: Var,
    seed: &[T],
) -> Vec<Vec<f64>> {
    let wrt: Vec<Var> = differentiable(case).map(|i| vars[i]).collect();
    let grads = tape.backward_from(out, seed, Some(&wrt));
    let result = differentiable(case)
        .map(|i| match grads.get(vars[i]) {
            Some(g) => g.iter().map(|v| v.to_f64()).collect(),
            None => vec![0.0; case.inputs[i].numel()],
        })
        .collect();
    tape.recycle_gradients(grads);
    result
}

fn differentiable(case: &Case) -> impl Iterator<Item = usize> + '_ {
    case.inputs
        .iter()
        .enumerate()
        .filter(|(_, i)| i.differentiable)
        .map(|(i, _)| i)
}

/// The output of a forward pass in f64, recording nothing.
fn output(tape: &mut Tape<f64>, case: &Case, values: &[Vec<f64>]) -> Vec<f64> {
    tape.set_grad_enabled(false);
    let (_, out) = record(tape, case, case.build.f64, values);
    let y = tape.value(out).to_vec();
    tape.set_grad_enabled(true);
    y
}

fn weighted_output(tape: &mut Tape<f64>, case: &Case, values: &[Vec<f64>], weights: &[f64]) -> f64 {
    let y = output(tape, case, values);
    y.iter().zip(weights).map(|(a, b)| a * b).sum()
}

fn describe(input: &Input) -> String {
    format!("{}{:?}", input.name, input.dims)
}

/// `(max abs error, max rel error, all within atol + rtol |numeric|)`.
fn compare(analytic: &[f64], numeric: &[f64], config: &Config) -> (f64, f64, bool) {
    let (mut max_abs, mut max_rel, mut ok) = (0.0f64, 0.0f64, true);
    for (&a, &n) in analytic.iter().zip(numeric) {
        let err = (a - n).abs();
        if err.is_nan() {
            return (f64::NAN, f64::NAN, false);
        }
        max_abs = max_abs.max(err);
        max_rel = max_rel.max(err / n.abs().max(config.atol));
        ok &= err <= config.atol + config.rtol * n.abs();
    }
    (max_abs, max_rel, ok)
}

pub(crate) fn run_case_with(case: &Case, config: &Config, pools: &Pools) -> Vec<CheckResult> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed_for(case, config));
    let values: Vec<Vec<f64>> = case.inputs.iter().map(|i| draw(i, &mut rng)).collect();
    let mut tape = Tape::<f64>::new();
    let y0 = output(&mut tape, case, &values);
    // Output weights v (the seed of every backward pass) and a unit input direction u.
    let (weights, direction) = draw_weights_and_direction(
        &mut rng,
        y0.len(),
        differentiable(case).map(|i| case.inputs[i].numel()),
    );

    let result = |check: &'static str, input: String, dtype: &'static str| {
        CheckResult::blank(case.kind.as_str(), &case.name, check, input, dtype)
    };

    // Finite differences.
    let wrt: Vec<(usize, String)> = differentiable(case)
        .map(|i| (i, describe(&case.inputs[i])))
        .collect();
    let mut probe = TapeProbe {
        tape: &mut tape,
        case,
    };
    let mut results = finite_difference_checks(
        &mut probe,
        &FiniteDifferences {
            mode: case.mode,
            values: &values,
            wrt: &wrt,
            weights: &weights,
            direction: &direction,
        },
        config,
        &|check| result(check, "all".into(), "f64"),
    );
    let (y64, g64) = gradients(&mut tape, case, case.build.f64, &values, &weights);

    // f32 analytic gradients against f64 analytic gradients, normwise per input.
    if case.f32 {
        let mut tape32 = Tape::<f32>::new();
        let (_, g32) = gradients(&mut tape32, case, case.build.f32, &values, &weights);
        for ((slot, i), (a, b)) in differentiable(case).enumerate().zip(g32.iter().zip(&g64)) {
            let _ = slot;
            let (err, rel) = normwise_error(a, b);
            let mut r = result("f32_vs_f64", describe(&case.inputs[i]), "f32");
            r.max_abs_error = err;
            r.max_rel_error = rel;
            r.tolerance = format!("max|g32 - g64| <= {:e} max|g64|", config.f32_rtol);
            r.passed = rel <= config.f32_rtol && !err.is_nan();
            results.push(r);
        }
    }

    // Two backward passes over one recorded tape.
    {
        tape.set_grad_enabled(true);
        let (vars, out) = record(&mut tape, case, case.build.f64, &values);
        let first = backward_once(&mut tape, case, &vars, out, &weights);
        let second = backward_once(&mut tape, case, &vars, out, &weights);
        let same = bitwise_equal(&first, &second) && bitwise_equal(&first, &g64);
        let mut r = result("reentrant", "all".into(), "f64");
        r.set_bitwise(
            same,
            (&first, &second),
            "two backward passes, and a fresh tape",
        );
        results.push(r);
    }

    // 1 vs 4 threads.
    if case.threads {
        let run = |pool: &rayon::ThreadPool| {
            pool.install(|| {
                let mut t = Tape::<f64>::new();
                gradients(&mut t, case, case.build.f64, &values, &weights)
            })
        };
        let (y1, g1) = run(&pools.one);
        let (y4, g4) = run(&pools.four);
        let same = bitwise_equal(&g1, &g4)
            && bitwise_equal(std::slice::from_ref(&y1), &[y4])
            && bitwise_equal(&[y1], &[y64]);
        let mut r = result("threads", "all".into(), "f64");
        r.set_bitwise(same, (&g1, &g4), "rayon pools of 1 and 4 threads");
        results.push(r);
    }

    // Taylor remainder slope.
    if case.taylor {
        let base = weighted_output(&mut tape, case, &values, &weights);
        let slope_term: f64 = g64
            .iter()
            .flatten()
            .zip(direction.iter().flatten())
            .map(|(g, u)| g * u)
            .sum();
        let steps = [1e-1, 5e-2, 2e-2, 1e-2, 5e-3, 2e-3, 1e-3, 5e-4, 2e-4, 1e-4];
        let mut points = Vec::new();
        for &h in &steps {
            let mut v = values.clone();
            for (slot, i) in differentiable(case).enumerate() {
                for (x, u) in v[i].iter_mut().zip(&direction[slot]) {
                    *x += h * u;
                }
            }
            let remainder =
                (weighted_output(&mut tape, case, &v, &weights) - base - h * slope_term).abs();
            if remainder > 0.0 {
                points.push((h.ln(), remainder.ln()));
            }
        }
        let slope = fit_slope(&points);
        let mut r = result("taylor", "all".into(), "f64");
        r.max_abs_error = (slope - 2.0).abs();
        r.max_rel_error = (slope - 2.0).abs() / 2.0;
        r.tolerance = "log-log slope in [1.8, 2.2]".into();
        r.passed = points.len() >= 5 && (1.8..=2.2).contains(&slope);
        r.detail = format!(
            "slope {slope:.4} over h = 1e-1..1e-4 ({} points)",
            points.len()
        );
        results.push(r);
    }

    if let Some(extra) = case.extra {
        results.extend(extra(config));
    }
    results
}

/// Above this many Jacobian entries (checked input elements times outputs), [`Mode::Auto`]
/// checks a random direction instead of the full Jacobian: the Jacobian costs one backward
/// pass per output and two forward passes per input element.
pub const AUTO_JACOBIAN_ENTRIES: usize = 4096;

/// A function of several inputs as the finite-difference checks see it: its output, and the
/// vector-Jacobian products of the analytic gradient under test.
pub(crate) trait Probe {
    /// The flattened output at `values` (one vector per input).
    fn output(&mut self, values: &[Vec<f64>]) -> Vec<f64>;

    /// The gradient of `<seed, y>` with respect to each checked input, in the order of
    /// [`FiniteDifferences::wrt`].
    fn vjp(&mut self, values: &[Vec<f64>], seed: &[f64]) -> Vec<Vec<f64>>;

    /// The analytic Jacobian, row `j` (the gradient of output `j`) passed to `row(j, grads)`.
    fn jacobian_rows(
        &mut self,
        values: &[Vec<f64>],
        outputs: usize,
        row: &mut dyn FnMut(usize, Vec<Vec<f64>>),
    ) {
        let mut seed = vec![0.0; outputs];
        for j in 0..outputs {
            seed[j] = 1.0;
            row(j, self.vjp(values, &seed));
            seed[j] = 0.0;
        }
    }
}

/// A recorded case: its backward passes are the gradients under test.
struct TapeProbe<'a> {
    tape: &'a mut Tape<f64>,
    case: &'a Case,
}

impl Probe for TapeProbe<'_> {
    fn output(&mut self, values: &[Vec<f64>]) -> Vec<f64> {
        output(self.tape, self.case, values)
    }

    fn vjp(&mut self, values: &[Vec<f64>], seed: &[f64]) -> Vec<Vec<f64>> {
        gradients(self.tape, self.case, self.case.build.f64, values, seed).1
    }

    fn jacobian_rows(
        &mut self,
        values: &[Vec<f64>],
        outputs: usize,
        row: &mut dyn FnMut(usize, Vec<Vec<f64>>),
    ) {
        // One recording serves every backward pass.
        self.tape.set_grad_enabled(true);
        let (vars, out) = record(self.tape, self.case, self.case.build.f64, values);
        let mut seed = vec![0.0; outputs];
        for j in 0..outputs {
            seed[j] = 1.0;
            row(j, backward_once(self.tape, self.case, &vars, out, &seed));
            seed[j] = 0.0;
        }
    }
}

/// What the finite-difference checks compare, at one point.
pub(crate) struct FiniteDifferences<'a> {
    pub mode: Mode,
    pub values: &'a [Vec<f64>],
    /// The checked inputs: index into `values` and description (name and shape).
    pub wrt: &'a [(usize, String)],
    /// Output weights `v` of the direction check (one per output element).
    pub weights: &'a [f64],
    /// Unit input direction `u`, one vector per checked input.
    pub direction: &'a [Vec<f64>],
}

/// The `jacobian` checks (one per checked input) or the `direction` check; `blank(check)` is
/// a passing result naming the case, to be filled in.
pub(crate) fn finite_difference_checks(
    probe: &mut dyn Probe,
    at: &FiniteDifferences<'_>,
    config: &Config,
    blank: &dyn Fn(&'static str) -> CheckResult,
) -> Vec<CheckResult> {
    let h = config.step;
    let tolerance = format!("|a - n| <= {:e} + {:e} |n|", config.atol, config.rtol);
    let outputs = at.weights.len();
    let checked: usize = at.wrt.iter().map(|&(i, _)| at.values[i].len()).sum();
    let mode = match at.mode {
        Mode::Auto if checked.saturating_mul(outputs) <= AUTO_JACOBIAN_ENTRIES => Mode::Jacobian,
        Mode::Auto => Mode::Direction,
        fixed => fixed,
    };
    let finish = |check, input: String, analytic: &[f64], numeric: &[f64], detail| {
        let (max_abs, max_rel, passed) = compare(analytic, numeric, config);
        CheckResult {
            input,
            step: Some(h),
            max_abs_error: max_abs,
            max_rel_error: max_rel,
            tolerance: tolerance.clone(),
            passed,
            detail,
            ..blank(check)
        }
    };
    match mode {
        Mode::Jacobian => {
            // Analytic Jacobian, row j from the backward pass seeded with e_j.
            let mut analytic: Vec<Vec<f64>> = at
                .wrt
                .iter()
                .map(|&(i, _)| vec![0.0; outputs * at.values[i].len()])
                .collect();
            probe.jacobian_rows(at.values, outputs, &mut |j, rows| {
                for (a, row) in analytic.iter_mut().zip(rows) {
                    let len = row.len();
                    a[j * len..(j + 1) * len].copy_from_slice(&row);
                }
            });
            let mut perturbed = at.values.to_vec();
            let mut results = Vec::new();
            for (slot, (i, description)) in at.wrt.iter().enumerate() {
                let (i, len) = (*i, at.values[*i].len());
                let mut numeric = vec![0.0; outputs * len];
                for e in 0..len {
                    let x = at.values[i][e];
                    perturbed[i][e] = x + h;
                    let plus = probe.output(&perturbed);
                    perturbed[i][e] = x - h;
                    let minus = probe.output(&perturbed);
                    perturbed[i][e] = x;
                    for j in 0..outputs {
                        numeric[j * len + e] = (plus[j] - minus[j]) / (2.0 * h);
                    }
                }
                let detail = format!("{outputs} x {len} Jacobian");
                results.push(finish(
                    "jacobian",
                    description.clone(),
                    &analytic[slot],
                    &numeric,
                    detail,
                ));
            }
            results
        }
        Mode::Direction | Mode::Auto => {
            let grads = probe.vjp(at.values, at.weights);
            let analytic: f64 = grads
                .iter()
                .flatten()
                .zip(at.direction.iter().flatten())
                .map(|(g, u)| g * u)
                .sum();
            let mut weighted_at = |t: f64| -> f64 {
                let mut v = at.values.to_vec();
                for ((i, _), u) in at.wrt.iter().zip(at.direction) {
                    for (x, u) in v[*i].iter_mut().zip(u) {
                        *x += t * u;
                    }
                }
                let y = probe.output(&v);
                y.iter().zip(at.weights).map(|(a, b)| a * b).sum()
            };
            let plus = weighted_at(h);
            let minus = weighted_at(-h);
            let numeric = (plus - minus) / (2.0 * h);
            let detail = format!("v^T J u = {analytic:.6e}, finite difference {numeric:.6e}");
            vec![finish(
                "direction",
                "all".into(),
                &[analytic],
                &[numeric],
                detail,
            )]
        }
    }
}

/// Output weights `v` (1 for a scalar output, else standard normal) and a unit input direction
/// `u` over the inputs of the given sizes, drawn in this order from `rng`.
pub(crate) fn draw_weights_and_direction(
    rng: &mut ChaCha8Rng,
    outputs: usize,
    input_sizes: impl Iterator<Item = usize>,
) -> (Vec<f64>, Vec<Vec<f64>>) {
    let weights: Vec<f64> = if outputs == 1 {
        vec![1.0]
    } else {
        (0..outputs).map(|_| StandardNormal.sample(rng)).collect()
    };
    let mut direction: Vec<Vec<f64>> = input_sizes
        .map(|len| (0..len).map(|_| StandardNormal.sample(rng)).collect())
        .collect();
    let norm = direction
        .iter()
        .flatten()
        .map(|v| v * v)
        .sum::<f64>()
        .sqrt();
    direction
        .iter_mut()
        .flatten()
        .for_each(|v| *v /= norm.max(f64::MIN_POSITIVE));
    (weights, direction)
}

/// Least-squares slope of `y` against `x`.
pub(crate) fn fit_slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return f64::NAN;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = points.iter().map(|p| (p.0 - mx) * (p.0 - mx)).sum();
    sxy / sxx
}

fn bitwise_equal(a: &[Vec<f64>], b: &[Vec<f64>]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits())
        })
}

/// The normwise error of `approx` against `reference`: `max |approx - reference|`, and that over
/// `max |reference|` (the absolute error itself when the reference is all zero).
pub(crate) fn normwise_error(approx: &[f64], reference: &[f64]) -> (f64, f64) {
    let err = approx
        .iter()
        .zip(reference)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    let scale = reference.iter().map(|v| v.abs()).fold(0.0, f64::max);
    let rel = if scale > 0.0 { err / scale } else { err };
    (err, rel)
}

fn max_difference(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}
