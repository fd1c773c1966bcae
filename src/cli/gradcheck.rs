//! `benign gradcheck`: verifies every autodiff op and model against finite differences; the
//! checks, the table and the JSON lines are the library's (`benign::gradcheck`).

use std::io::Write;

use clap::Args;

use benign::gradcheck::{self, Config, Selection};

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

pub fn execute(args: GradcheckArgs) -> anyhow::Result<i32> {
    let config = Config {
        seed: args.seed,
        step: args.step,
        atol: args.atol,
        rtol: args.rtol,
        ..Config::default()
    };
    gradcheck::validate_config(&config)?;
    let selection = Selection {
        ops: args.ops,
        models: args.models,
    };
    // Unknown names are refused before the table's header is printed.
    gradcheck::select(&selection)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if !args.json {
        writeln!(out, "{}", gradcheck::table_header())?;
    }
    // Each result is printed as it comes: the whole suite takes seconds.
    let mut write_error = None;
    let summary = gradcheck::run(&config, &selection, |r| {
        let line = if args.json {
            gradcheck::json_line(r)
        } else {
            gradcheck::table_row(r)
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
            writeln!(out, "{}", gradcheck::summary_json_line(&summary))?;
        } else {
            writeln!(out, "{}", gradcheck::summary_text(&summary))?;
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
