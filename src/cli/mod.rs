//! Command-line front end. Each subcommand lives in its own file, holds only argument parsing
//! and printing, and calls a library function that a Rust user could call directly.

use clap::{Parser, Subcommand};

mod bench;
mod boundary;
mod common;
mod data;
mod finetune;
mod gradcheck;
#[cfg(test)]
mod help_defaults;
mod plot;
mod pretrain;
mod progress;
mod run;
mod sweep;

#[derive(Parser)]
#[command(
    name = "benign",
    version = benign::provenance::VERSION_TEXT,
    about = "Benign overfitting in attention token selection"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Measure the kernels on this machine (GFLOP/s, GB/s, ratios to matrixmultiply and peak).
    Bench(bench::BenchArgs),
    /// Verify autodiff gradients against finite differences (exit 1 if any check fails).
    Gradcheck(gradcheck::GradcheckArgs),
    /// Train the paper's attention model on its synthetic data and record the dynamics.
    Run(Box<run::RunArgs>),
    /// Export or inspect the synthetic data.
    Data(data::DataCommand),
    /// Run a grid of synthetic runs (in parallel, resumable, shardable) and draw phase diagrams.
    Sweep(Box<sweep::SweepArgs>),
    /// Measure the two phase boundaries (harmful|benign, benign|not overfitting) over a grid of
    /// d and n, with bootstrap intervals and a power-law fit against the theory's slopes.
    Boundary(Box<boundary::BoundaryArgs>),
    /// Re-render a sweep's results.csv and heatmaps from its saved results.
    Plot(plot::PlotArgs),
    /// Train (or reuse) a transformer classifier on a real dataset; prints train/test accuracy.
    Pretrain(Box<pretrain::PretrainArgs>),
    /// Fine-tune the last attention layer's query/key on noisy labels (paper Table 2, Figures 8-9).
    Finetune(Box<finetune::FinetuneArgs>),
}

/// Parses the command line, runs the subcommand, and returns the process exit status:
/// 0 success, 1 failure, 2 invalid input.
pub fn main() -> i32 {
    let cli = Cli::parse();
    // Library warnings reach stderr in every command; long commands widen this with progress.
    progress::warnings_only();
    let result = match cli.command {
        Command::Bench(args) => bench::execute(args),
        Command::Gradcheck(args) => gradcheck::execute(args),
        Command::Run(args) => run::execute(*args),
        Command::Boundary(args) => boundary::execute(*args),
        Command::Data(args) => data::execute(args),
        Command::Sweep(args) => sweep::execute(*args),
        Command::Plot(args) => plot::execute(args),
        Command::Pretrain(args) => pretrain::execute(*args),
        Command::Finetune(args) => finetune::execute(*args),
    };
    match result {
        Ok(code) => code,
        Err(err) => report(&err),
    }
}

/// Prints an error with its causes and returns its exit status.
fn report(err: &anyhow::Error) -> i32 {
    for line in report_lines(err) {
        eprintln!("{line}");
    }
    err.downcast_ref::<benign::Error>()
        .map_or(1, benign::Error::exit_code)
}

/// The lines [`report`] prints: the error, then each cause whose text the line before does not
/// already include (`benign::Error::Io` shows its OS error and also returns it as its source).
fn report_lines(err: &anyhow::Error) -> Vec<String> {
    let mut lines = vec![format!("error: {err}")];
    let mut previous = err.to_string();
    for cause in err.chain().skip(1) {
        let text = cause.to_string();
        if !previous.contains(&text) {
            lines.push(format!("  caused by: {text}"));
        }
        previous = text;
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_is_printed_once() {
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let err = anyhow::Error::new(benign::Error::Io {
            path: "a/b.json".into(),
            source: io(),
        });
        assert_eq!(report_lines(&err), ["error: a/b.json: no such file"]);
        let err = anyhow::Error::new(io()).context("writing the report");
        assert_eq!(
            report_lines(&err),
            ["error: writing the report", "  caused by: no such file"]
        );
    }
}
