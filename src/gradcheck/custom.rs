//! Checking the caller's own gradients in one call, as `torch.autograd.gradcheck` and JAX's
//! `check_grads` do: a graph recorded on the tape ([`check_graph`]), or a plain function with
//! its gradient ([`check_gradient`]) or vector-Jacobian product ([`check_vjp`]), e.g. a closed
//! form. Each returns a [`Report`] holding the results `benign gradcheck` prints, as its table
//! ([`Report::table`]) or its JSON lines ([`Report::json_lines`]).

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::cases::{Builder, Case, Domain, Input, Mode};
use super::check::{
    draw_weights_and_direction, finite_difference_checks, CheckResult, Config, FiniteDifferences,
    Pools, Probe, Summary,
};
use crate::{Error, Result};

/// The results of a set of checks and their totals.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// One result per check, in the order they ran.
    pub results: Vec<CheckResult>,
    /// Counts of checks passed and failed, and the worst errors.
    pub summary: Summary,
}

impl Report {
    /// A report of these results.
    pub fn new(results: Vec<CheckResult>) -> Self {
        let mut summary = Summary::default();
        for r in &results {
            summary.add(r);
        }
        Report { results, summary }
    }

    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.summary.all_passed()
    }

    /// The table `benign gradcheck` prints: header, one row per check, totals and failures.
    pub fn table(&self) -> String {
        let mut text = table_header();
        for r in &self.results {
            text.push('\n');
            text.push_str(&table_row(r));
        }
        text.push('\n');
        text.push_str(&summary_text(&self.summary));
        text
    }

    /// The lines `benign gradcheck --json` prints: one JSON object per check, then
    /// `{"summary": ...}`.
    pub fn json_lines(&self) -> String {
        let mut text = String::new();
        for r in &self.results {
            text.push_str(&json_line(r));
            text.push('\n');
        }
        text.push_str(&summary_json_line(&self.summary));
        text
    }
}

/// The header of the table of checks.
pub fn table_header() -> String {
    format!(
        "{:<4} {:<5} {:<30} {:<11} {:<20} {:<3} {:>6} {:>10} {:>10}  detail",
        "", "kind", "case", "check", "input", "dt", "step", "max_abs", "max_rel"
    )
}

/// One check as a row of the table.
pub fn table_row(r: &CheckResult) -> String {
    let step = r.step.map_or("-".to_string(), |h| format!("{h:.0e}"));
    format!(
        "{:<4} {:<5} {:<30} {:<11} {:<20} {:<3} {:>6} {:>10.2e} {:>10.2e}  {}",
        if r.passed { "ok" } else { "FAIL" },
        r.kind,
        r.case,
        r.check,
        r.input,
        r.dtype,
        step,
        r.max_abs_error,
        r.max_rel_error,
        r.detail
    )
}

/// The totals below the table: a blank line, the counts and largest errors, then one
/// `FAILED: case/check/input` line per failure.
pub fn summary_text(summary: &Summary) -> String {
    let mut text = format!(
        "\n{} checks, {} failed; finite-difference checks: max abs error {:.2e}, max rel error {:.2e}",
        summary.checks, summary.failed, summary.max_abs_error, summary.max_rel_error
    );
    for f in &summary.failures {
        text.push_str(&format!("\nFAILED: {f}"));
    }
    text
}

/// One check as a JSON object on one line.
pub fn json_line(r: &CheckResult) -> String {
    serde_json::to_string(r).expect("a check result serialises")
}

/// The totals as the JSON line `{"summary": ...}`.
pub fn summary_json_line(summary: &Summary) -> String {
    serde_json::json!({ "summary": summary }).to_string()
}

/// Checks a graph of the caller's, recorded on the tape by `build` from `inputs` (drawn as
/// their [`Domain`] says, or given with [`Input::given`]): the checks of [`Case::custom`].
///
/// ```
/// use benign::autodiff::{Tape, Var};
/// use benign::gradcheck::{self, Config, Input};
/// use benign::kernels::Float;
///
/// // y = tanh(x w): written once for both element types.
/// fn layer<T: Float>(tape: &mut Tape<T>, v: &[Var]) -> Var {
///     let z = tape.matmul(v[0], v[1]);
///     tape.tanh(z)
/// }
/// let inputs = vec![Input::var("x", &[3, 4]), Input::var("w", &[4, 2])];
/// let report = gradcheck::check_graph("layer", inputs, benign::gradcheck_builder!(layer), &Config::default())?;
/// assert!(report.passed(), "{}", report.table());
/// # Ok::<(), benign::Error>(())
/// ```
pub fn check_graph(
    name: &str,
    inputs: Vec<Input>,
    build: Builder,
    config: &Config,
) -> Result<Report> {
    check_case(&Case::custom(name, inputs, build), config)
}

/// Runs every check of a case (built-in, or [`Case::custom`] with its options changed), after
/// checking that given input values match their shapes.
pub fn check_case(case: &Case, config: &Config) -> Result<Report> {
    validate_config(config)?;
    if !case.inputs.iter().any(|i| i.differentiable) {
        return Err(Error::invalid(
            "inputs",
            format!("case `{}` has no differentiable input", case.name),
        ));
    }
    for input in &case.inputs {
        if let Domain::Values(values) = &input.domain {
            if values.len() != input.numel() {
                return Err(Error::invalid(
                    "inputs",
                    format!(
                        "input `{}` has {} values for shape {:?} ({} elements)",
                        input.name,
                        values.len(),
                        input.dims,
                        input.numel()
                    ),
                ));
            }
        }
    }
    Ok(Report::new(super::check::run_case_with(
        case,
        config,
        &Pools::new(),
    )))
}

/// Checks `gradient(x)` against central differences of the scalar function `f` at `x`.
///
/// ```
/// use benign::gradcheck::{self, Config};
///
/// // f(x) = log(sum exp x), whose gradient is softmax(x).
/// let f = |x: &[f64]| x.iter().map(|v| v.exp()).sum::<f64>().ln();
/// let softmax = |x: &[f64]| {
///     let total: f64 = x.iter().map(|v| v.exp()).sum();
///     x.iter().map(|v| v.exp() / total).collect()
/// };
/// let report = gradcheck::check_gradient("logsumexp", &[0.3, -1.2, 2.0], f, softmax, &Config::default())?;
/// assert!(report.passed(), "{}", report.table());
/// # Ok::<(), benign::Error>(())
/// ```
pub fn check_gradient(
    name: &str,
    x: &[f64],
    f: impl Fn(&[f64]) -> f64,
    gradient: impl Fn(&[f64]) -> Vec<f64>,
    config: &Config,
) -> Result<Report> {
    check_vjp(
        name,
        x,
        |x| vec![f(x)],
        |x, v| gradient(x).into_iter().map(|g| g * v[0]).collect(),
        config,
    )
}

/// Checks a vector-Jacobian product `vjp(x, v) = J(x)^T v` against central differences of
/// `f` at `x`: the full Jacobian (one `vjp` per output, two `f` per input element) when it has
/// at most [`super::AUTO_JACOBIAN_ENTRIES`] entries, else `v^T J u` for a random `v` and unit
/// `u`. Inputs and directions are drawn from `config.seed` and `name`.
pub fn check_vjp(
    name: &str,
    x: &[f64],
    f: impl Fn(&[f64]) -> Vec<f64>,
    vjp: impl Fn(&[f64], &[f64]) -> Vec<f64>,
    config: &Config,
) -> Result<Report> {
    validate_config(config)?;
    if x.is_empty() {
        return Err(Error::invalid("x", "the point needs at least one element"));
    }
    let outputs = f(x).len();
    if outputs == 0 {
        return Err(Error::invalid("f", "the function returned no value"));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(crate::seed::fnv1a(name.as_bytes()) ^ config.seed);
    let (weights, direction) =
        draw_weights_and_direction(&mut rng, outputs, std::iter::once(x.len()));
    let returned = vjp(x, &weights).len();
    if returned != x.len() {
        return Err(Error::invalid(
            "vjp",
            format!(
                "returned {returned} values for a point of {} elements",
                x.len()
            ),
        ));
    }
    let mut probe = FunctionProbe { f, vjp, outputs };
    let values = vec![x.to_vec()];
    let wrt = [(0, format!("x[{}]", x.len()))];
    let results = finite_difference_checks(
        &mut probe,
        &FiniteDifferences {
            mode: Mode::Auto,
            values: &values,
            wrt: &wrt,
            weights: &weights,
            direction: &direction,
        },
        config,
        &|check| CheckResult::blank("custom", name, check, String::new(), "f64"),
    );
    Ok(Report::new(results))
}

/// A plain function and its vector-Jacobian product, the gradient under test.
struct FunctionProbe<F, V> {
    f: F,
    vjp: V,
    /// The output length at the point checked.
    outputs: usize,
}

impl<F, V> Probe for FunctionProbe<F, V>
where
    F: Fn(&[f64]) -> Vec<f64>,
    V: Fn(&[f64], &[f64]) -> Vec<f64>,
{
    fn output(&mut self, values: &[Vec<f64>]) -> Vec<f64> {
        let y = (self.f)(&values[0]);
        // An output whose length changes near the point has no derivative there: NaN fails the
        // comparison instead of misaligning it.
        if y.len() == self.outputs {
            y
        } else {
            vec![f64::NAN; self.outputs]
        }
    }

    fn vjp(&mut self, values: &[Vec<f64>], seed: &[f64]) -> Vec<Vec<f64>> {
        let g = (self.vjp)(&values[0], seed);
        let len = values[0].len();
        vec![if g.len() == len {
            g
        } else {
            vec![f64::NAN; len]
        }]
    }
}

/// Step and tolerances are positive and finite.
pub fn validate_config(config: &Config) -> Result<()> {
    for (field, value) in [
        ("step", config.step),
        ("atol", config.atol),
        ("rtol", config.rtol),
        ("f32_rtol", config.f32_rtol),
    ] {
        if !(value.is_finite() && value > 0.0) {
            return Err(Error::invalid(
                field,
                format!("must be a positive finite number, got {value}"),
            ));
        }
    }
    Ok(())
}
