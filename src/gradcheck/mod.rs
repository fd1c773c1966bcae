//! Gradient verification: every autodiff op and every composite model checked against central
//! finite differences in f64, plus f32-vs-f64, reentrancy, thread-count and Taylor checks.
//!
//! The same checks apply to the caller's own code in one call: [`check_graph`] for a graph
//! recorded on the tape, [`check_gradient`] and [`check_vjp`] for a plain function against its
//! gradient or vector-Jacobian product (see `examples/gradcheck.rs`). `benign gradcheck` runs
//! the built-in cases ([`run`]) and prints the [`Report`] format.
//!
//! # Checks
//!
//! - `jacobian` (small shapes): the full Jacobian, one backward pass per output element
//!   against one pair of forward passes per input element.
//! - `direction` (realistic shapes): `v^T J u` from one backward pass against the central
//!   difference of `<v, y(x)>` along a random unit direction `u`.
//! - `f32_vs_f64`: f32 analytic gradients against f64 analytic gradients, normwise
//!   (`max |g32 - g64| / max |g64|`), bound [`F32_RTOL`].
//! - `reentrant`: two backward passes over one tape give bitwise-equal gradients.
//! - `threads`: forward + backward inside rayon pools of 1 and 4 threads are bitwise equal.
//! - `taylor` (models): the remainder `|L(x + h u) - L(x) - h <g, u>|` must shrink as `h^2`:
//!   the log-log slope fitted over `h = 1e-1 .. 1e-4` lies in `[1.8, 2.2]`. No step size to tune.
//! - model-specific checks, e.g. `closed_form` (the tape gradient of the paper model against
//!   `dL/dW = g p^T`, `dL/dp = W^T g`).
//!
//! # Tolerances
//!
//! An element passes when `|analytic - numeric| <= atol + rtol |numeric|`, with defaults
//! [`DEFAULT_ATOL`] `= 1e-7` and [`DEFAULT_RTOL`] `= 1e-5` at step [`DEFAULT_STEP`] `= 1e-6`: 100x
//! tighter than PyTorch's `gradcheck` (atol 1e-5, rtol 1e-3). In f64 a central difference has
//! truncation error `h^2 |f'''| / 6 ~ 2e-13 |f'''|` and rounding error `~ eps |f| / h ~
//! 2e-10 |f|` at `h = 1e-6`, so for the O(1..10) values of these checks the difference itself
//! is accurate to ~1e-9; an analytic gradient that is wrong by more than ~1e-7 is a bug, not
//! noise.

mod cases;
mod check;
mod custom;
mod models;
mod transformer;

pub use cases::{op_cases, Builder, Case, CaseKind, Domain, Input, Mode};
#[cfg(test)]
pub(crate) use check::assert_case_passes;
pub use check::{run_case, CheckResult, Config, Summary, AUTO_JACOBIAN_ENTRIES};
pub use custom::{
    check_case, check_gradient, check_graph, check_vjp, json_line, summary_json_line, summary_text,
    table_header, table_row, validate_config, Report,
};
pub use models::model_cases;

use crate::Error;

/// Default central-difference step.
pub const DEFAULT_STEP: f64 = 1e-6;
/// Default absolute tolerance.
pub const DEFAULT_ATOL: f64 = 1e-7;
/// Default relative tolerance.
pub const DEFAULT_RTOL: f64 = 1e-5;
/// Normwise bound on f32 gradients relative to f64 ones.
pub const F32_RTOL: f64 = 1e-3;

/// Which cases to run: `None` for a kind means all of it unless the other kind was selected.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// Op families to check (names from `--op`); empty: none, or all when `models` is empty too.
    pub ops: Vec<String>,
    /// Models to check (names from `--model`); empty: none, or all when `ops` is empty too.
    pub models: Vec<String>,
}

/// Names accepted by `--op` (op families).
pub fn op_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = op_cases().iter().map(|c| c.family).collect();
    names.dedup();
    names
}

/// Names accepted by `--model`.
pub fn model_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = model_cases().iter().map(|c| c.family).collect();
    names.dedup();
    names
}

/// The cases a selection names, or an [`Error::InvalidOption`] listing the valid names.
pub fn select(selection: &Selection) -> crate::Result<Vec<Case>> {
    let check = |field: &str, asked: &[String], valid: Vec<&'static str>| -> crate::Result<()> {
        for name in asked {
            if !valid.iter().any(|v| v == name) {
                return Err(Error::invalid(
                    field,
                    format!("unknown name `{name}`; valid names: {}", valid.join(", ")),
                ));
            }
        }
        Ok(())
    };
    check("op", &selection.ops, op_names())?;
    check("model", &selection.models, model_names())?;
    let everything = selection.ops.is_empty() && selection.models.is_empty();
    let mut cases = Vec::new();
    for case in op_cases() {
        if everything || selection.ops.iter().any(|n| n == case.family) {
            cases.push(case);
        }
    }
    for case in model_cases() {
        if everything || selection.models.iter().any(|n| n == case.family) {
            cases.push(case);
        }
    }
    Ok(cases)
}

/// Runs the selected cases, calling `report` after each check, and returns the summary.
pub fn run(
    config: &Config,
    selection: &Selection,
    mut report: impl FnMut(&CheckResult),
) -> crate::Result<Summary> {
    let cases = select(selection)?;
    let pools = check::Pools::new();
    let mut summary = Summary::default();
    for case in &cases {
        for result in check::run_case_with(case, config, &pools) {
            summary.add(&result);
            report(&result);
        }
    }
    Ok(summary)
}
