//! `benign bench`: the kernel report for this machine.

use std::io::Write;

use benign::bench::{BenchOptions, BenchRecord, BenchRow, MachineFigures, PeakKind, Progress};
use clap::Args;

use super::threads::ThreadsArg;

#[derive(Args)]
pub struct BenchArgs {
    /// Print JSON lines instead of a table: one object per kernel measurement, each standing
    /// alone with the same keys (`benign::bench::BenchRow`): kernel, dtype, integer dimensions
    /// (`m`, `n`, `k` for GEMM; `m`, `n` for GEMV and GER; `rows`, `cols` for the row-wise
    /// kernels; the others null), shape, threads, gflops, gbps, ratio_vs_matrixmultiply,
    /// frac_of_peak, peak, ceiling_gflops / ceiling_gbps, median_seconds, runs, and the machine
    /// figures (cpu_model, pool_threads, gemm_kernel, the FMA peaks, triad_gbps, ...).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub threads: ThreadsArg,
    /// Fewer shapes and shorter timing (a few seconds instead of about thirty).
    #[arg(long)]
    pub quick: bool,
}

pub fn execute(args: BenchArgs) -> anyhow::Result<i32> {
    let options = BenchOptions {
        threads: args.threads.given(),
        quick: args.quick,
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut write_error = None;
    let mut machine = None;
    benign::bench::run(&options, |event| {
        if write_error.is_some() {
            return;
        }
        let result = if args.json {
            print_json(&mut out, &mut machine, event)
        } else {
            print_table(&mut out, event)
        };
        if let Err(e) = result.and_then(|()| out.flush()) {
            write_error = Some(e);
        }
    })?;
    if let Some(e) = write_error {
        return Err(anyhow::Error::new(e).context("writing the report to stdout"));
    }
    Ok(0)
}

/// One line per record, with the machine figures (reported once, first) on each.
fn print_json(
    out: &mut impl Write,
    machine: &mut Option<MachineFigures>,
    event: Progress<'_>,
) -> std::io::Result<()> {
    match event {
        Progress::Machine(figures) => {
            *machine = Some(figures.clone());
            Ok(())
        }
        Progress::Record(record) => {
            let figures = machine
                .as_ref()
                .expect("the machine figures come before the first record");
            let line = serde_json::to_string(&BenchRow::new(figures, record))?;
            writeln!(out, "{line}")
        }
    }
}

/// Column widths of the table (kernel, shape, dtype, threads, GFLOP/s, GB/s, vs mm, of peak).
const WIDTHS: [usize; 8] = [21, 14, 5, 7, 9, 8, 8, 12];

fn print_table(out: &mut impl Write, event: Progress<'_>) -> std::io::Result<()> {
    match event {
        Progress::Machine(machine) => print_header(out, machine),
        Progress::Record(record) => print_row(out, record),
    }
}

fn print_header(out: &mut impl Write, m: &MachineFigures) -> std::io::Result<()> {
    writeln!(
        out,
        "CPU: {} ({} threads, built for {})",
        m.cpu_model,
        m.threads,
        m.compiled_features.join("+")
    )?;
    writeln!(
        out,
        "FMA peak per core, 256-bit: {:.1} GFLOP/s f32, {:.1} GFLOP/s f64; all {} threads at once: {:.1} f32, {:.1} f64",
        m.fma_peak_f32_gflops_per_core,
        m.fma_peak_f64_gflops_per_core,
        m.threads,
        m.fma_peak_f32_gflops_all_threads,
        m.fma_peak_f64_gflops_all_threads
    )?;
    match (
        m.fma_peak_f32_avx512_gflops_per_core,
        m.fma_peak_f64_avx512_gflops_per_core,
    ) {
        (Some(f32_peak), Some(f64_peak)) => writeln!(
            out,
            "FMA peak per core, 512-bit (AVX-512): {f32_peak:.1} GFLOP/s f32, {f64_peak:.1} GFLOP/s f64; all {} threads at once: {:.1} f32, {:.1} f64",
            m.threads,
            m.fma_peak_f32_avx512_gflops_all_threads.unwrap_or(0.0),
            m.fma_peak_f64_avx512_gflops_all_threads.unwrap_or(0.0)
        )?,
        _ => writeln!(out, "FMA peak per core, 512-bit: - (no AVX-512 on this CPU)")?,
    }
    writeln!(
        out,
        "GEMM kernel: {} (of peak [fma] is against {:.1} GFLOP/s f32, {:.1} GFLOP/s f64 per core: the peak of its vector width)",
        m.gemm_kernel, m.gemm_peak_f32_gflops_per_core, m.gemm_peak_f64_gflops_per_core
    )?;
    writeln!(
        out,
        "STREAM triad: {:.1} GB/s (3 x {} MB arrays, 24 B/element, no write-allocate)",
        m.triad_gbps,
        m.triad_bytes_per_array >> 20
    )?;
    writeln!(
        out,
        "vs mm = our GFLOP/s / matrixmultiply's ({} threads); of peak = GFLOP/s / (GEMM kernel's FMA peak per core x threads) [fma] or GB/s / triad [triad]",
        m.matrixmultiply_threads
    )?;
    writeln!(out)?;
    let header = [
        "kernel", "shape", "dtype", "threads", "GFLOP/s", "GB/s", "vs mm", "of peak",
    ];
    let cells: Vec<String> = header.iter().map(|s| s.to_string()).collect();
    write_cells(out, &cells)?;
    let rule: Vec<String> = WIDTHS.iter().map(|&w| "-".repeat(w)).collect();
    write_cells(out, &rule)
}

fn print_row(out: &mut impl Write, r: &BenchRecord) -> std::io::Result<()> {
    let num = |v: Option<f64>, digits: usize| {
        v.map_or_else(|| "-".to_string(), |v| format!("{v:.digits$}"))
    };
    let peak = match r.peak {
        PeakKind::Fma => "fma",
        PeakKind::Triad => "triad",
    };
    let cells = [
        r.kernel.clone(),
        r.dims.label(),
        r.dtype.clone(),
        r.threads.to_string(),
        num(r.gflops, 2),
        num(r.gbps, 2),
        num(r.ratio_vs_matrixmultiply, 2),
        r.frac_of_peak
            .map_or_else(|| "-".to_string(), |f| format!("{f:.2} {peak}")),
    ];
    write_cells(out, &cells)
}

/// Left-aligns the text columns and right-aligns the numbers.
fn write_cells(out: &mut impl Write, cells: &[String]) -> std::io::Result<()> {
    let mut line = String::new();
    for (i, (cell, &width)) in cells.iter().zip(WIDTHS.iter()).enumerate() {
        if i > 0 {
            line.push_str("  ");
        }
        if i < 3 {
            line.push_str(&format!("{cell:<width$}"));
        } else {
            line.push_str(&format!("{cell:>width$}"));
        }
    }
    writeln!(out, "{}", line.trim_end())
}
