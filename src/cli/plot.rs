//! `benign plot DIR`: re-renders a sweep's table and figures (heatmaps over two numeric axes,
//! line plots over a single one) from its saved results.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

#[derive(Args)]
pub struct PlotArgs {
    /// A sweep output directory (holds sweep.json and results*.jsonl).
    pub dir: PathBuf,
    /// Heatmap axes [default: d,signal_norm when both vary, else the first two numeric axes].
    #[arg(long, value_name = "X,Y")]
    pub axes: Option<String>,
}

pub fn execute(args: PlotArgs) -> anyhow::Result<i32> {
    let axes = benign::sweep::figures::parse_axes(args.axes.as_deref())?;
    let axes = axes.as_ref().map(|(x, y)| (x.as_str(), y.as_str()));
    // Bad axes are bad input (exit 2), not a drawing failure.
    let spec = benign::sweep::results::read_spec(&args.dir)?;
    benign::sweep::figures::choose_axes(&spec, axes)?;
    let outputs = benign::sweep::finish(&args.dir, axes, true)?;
    if outputs.records == 0 {
        return Err(anyhow::anyhow!(
            "{} has no results yet (no complete record in its results files): nothing to draw",
            args.dir.display()
        ));
    }
    if let Some(error) = outputs.figure_error {
        // Drawing is this command's whole job.
        return Err(anyhow::anyhow!("no figure drawn: {error}"));
    }
    let mut stdout = std::io::stdout();
    let _ = writeln!(
        stdout,
        "{} records; table {}",
        outputs.records,
        outputs.csv.display()
    );
    for f in &outputs.figures {
        let _ = writeln!(stdout, "{}", f.display());
    }
    if outputs.figures.is_empty() {
        let _ = writeln!(stdout, "no figure: the sweep varies no numeric parameter");
    }
    Ok(0)
}
