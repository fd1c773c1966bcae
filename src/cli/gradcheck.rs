//! `benign gradcheck`: verifies every autodiff op and model against finite differences.

use std::io::Write;

use clap::Args;

use benign::gradcheck::{self, CheckResult, Config, Selection};

#[derive(Args)]
#[command(allow_negative_numbers = true)]
pub struct GradcheckArgs {
    /// Print one JSON object per check per line instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Check only this op family (repeatable); unknown names list the valid ones.
    #[arg(long = "op", value_name = "NAME")]
    pub ops: Vec<String>,
    /// Check only this model (repeatable).
    #[arg(long = "model", value_name = "NAME")]
    pub models: Vec<String>,
    /// Seed of the random inputs and directions.
    #[arg(long, default_value_t = Config::default().seed)]
    pub seed: u64,
    /// Central-difference step (> 0).
    #[arg(long, default_value_t = gradcheck::DEFAULT_STEP, allow_hyphen_values = true)]
    pub step: f64,
    /// Absolute tolerance (> 0).
    #[arg(long, default_value_t = gradcheck::DEFAULT_ATOL, allow_hyphen_values = true)]
    pub atol: f64,
    /// Relative tolerance (> 0).
    #[arg(long, default_value_t = gradcheck::DEFAULT_RTOL, allow_hyphen_values = true)]
    pub rtol: f64,
}

fn row(r: &CheckResult) -> String {
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

pub fn execute(args: GradcheckArgs) -> anyhow::Result<i32> {
    for (field, value) in [
        ("step", args.step),
        ("atol", args.atol),
        ("rtol", args.rtol),
    ] {
        if !(value.is_finite() && value > 0.0) {
            return Err(benign::Error::invalid(
                field,
                format!("must be a positive finite number, got {value}"),
            )
            .into());
        }
    }
    let config = Config {
        seed: args.seed,
        step: args.step,
        atol: args.atol,
        rtol: args.rtol,
        ..Config::default()
    };
    let selection = Selection {
        ops: args.ops,
        models: args.models,
    };
    // Unknown names are refused before the table's header is printed.
    gradcheck::select(&selection)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if !args.json {
        writeln!(
            out,
            "{:<4} {:<5} {:<30} {:<11} {:<20} {:<3} {:>6} {:>10} {:>10}  detail",
            "", "kind", "case", "check", "input", "dt", "step", "max_abs", "max_rel"
        )?;
    }
    let mut write_error = None;
    let summary = gradcheck::run(&config, &selection, |r| {
        let line = if args.json {
            serde_json::to_string(r).expect("a check result serialises")
        } else {
            row(r)
        };
        if let Err(e) = writeln!(out, "{line}") {
            write_error.get_or_insert(e);
        }
    })?;
    let status = if summary.all_passed() { 0 } else { 1 };
    let finish = |out: &mut std::io::StdoutLock<'_>| -> std::io::Result<()> {
        if let Some(e) = write_error {
            return Err(e);
        }
        if args.json {
            writeln!(out, "{}", serde_json::json!({ "summary": summary }))?;
        } else {
            writeln!(
                out,
                "\n{} checks, {} failed; finite-difference checks: max abs error {:.2e}, max rel error {:.2e}",
                summary.checks, summary.failed, summary.max_abs_error, summary.max_rel_error
            )?;
            for f in &summary.failures {
                writeln!(out, "FAILED: {f}")?;
            }
        }
        out.flush()
    };
    match finish(&mut out) {
        // A closed pipe (`| head`) is not a failure of the checks.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(status),
        Err(e) => Err(e.into()),
        Ok(()) => Ok(status),
    }
}
