//! `benign bench`: the kernel report for this machine.

use std::io::Write;

use benign::bench::{BenchOptions, BenchRecord, BenchRow, MachineFigures, PeakKind, Progress};
use clap::Args;

use super::common::ThreadsArg;

#[derive(Args)]
pub struct BenchArgs {
    /// Print JSON lines instead of a table: one object per kernel measurement, each standing
    /// alone with the same keys (`benign::bench::BenchRow`): kernel, dtype, integer dimensions
    /// (`m`, `n`, `k` for GEMM; `m`, `n` for GEMV and GER; `rows`, `cols` for the row-wise
    /// kernels; the others null), shape, threads, gflops, gbps, ratio_vs_matrixmultiply,
    /// vs_matrixmultiply, frac_of_peak, peak, ceiling_gflops / ceiling_gbps, median_seconds,
    /// min_seconds, iqr_seconds, runs, single_call, load_average_1min, warnings, and the machine
    /// figures (cpu_model, pool_threads, gemm_kernel, the FMA peaks, triad_gbps, logical_cpus,
    /// machine_warnings, ...). Warnings are also printed to stderr.
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
    let mut json_state = JsonState::default();
    let mut logical_cpus = 1;
    benign::bench::run(&options, |event| {
        if write_error.is_some() {
            return;
        }
        let result = if args.json {
            print_json(&mut out, &mut json_state, event)
        } else {
            print_table(&mut out, &mut logical_cpus, event)
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

/// What `--json` output remembers between events.
#[derive(Default)]
struct JsonState {
    /// The machine figures, repeated on every line.
    machine: Option<MachineFigures>,
    /// The load warning last printed to stderr.
    last_load_warning: Option<String>,
}

/// One line per record, with the machine figures (reported once, first) on each. Warnings
/// also go to stderr, where someone piping stdout to a file still sees them; a load warning
/// only when its text changes, since it holds for row after row.
fn print_json(
    out: &mut impl Write,
    state: &mut JsonState,
    event: Progress<'_>,
) -> std::io::Result<()> {
    match event {
        Progress::Machine(figures) => {
            for warning in &figures.warnings {
                eprintln!("benign bench: warning: {warning}");
            }
            state.last_load_warning =
                benign::bench::load_warning(figures.load_average_1min, figures.logical_cpus);
            state.machine = Some(figures.clone());
            Ok(())
        }
        Progress::Record(record) => {
            let figures = state
                .machine
                .as_ref()
                .expect("the machine figures come before the first record");
            let load_warning =
                benign::bench::load_warning(record.times.load_average_1min, figures.logical_cpus);
            for warning in &record.warnings {
                if Some(warning) == load_warning.as_ref() {
                    if state.last_load_warning.as_ref() == Some(warning) {
                        continue;
                    }
                    state.last_load_warning = Some(warning.clone());
                }
                eprintln!("benign bench: warning: {}: {warning}", row_name(record));
            }
            let line = serde_json::to_string(&BenchRow::new(figures, record))?;
            writeln!(out, "{line}")
        }
    }
}

/// `kernel shape dtype, N thread(s)`: what a warning is about.
fn row_name(r: &BenchRecord) -> String {
    format!(
        "{} {} {}, {} thread{}",
        r.kernel,
        r.dims.label(),
        r.dtype,
        r.threads,
        if r.threads == 1 { "" } else { "s" }
    )
}

/// Column widths of the table (kernel, shape, dtype, threads, GFLOP/s, GB/s, vs mm, verdict,
/// of peak, median, min, IQR, runs, load).
const WIDTHS: [usize; 14] = [21, 14, 5, 7, 9, 8, 6, 13, 10, 10, 10, 6, 6, 6];

fn print_table(
    out: &mut impl Write,
    logical_cpus: &mut usize,
    event: Progress<'_>,
) -> std::io::Result<()> {
    match event {
        Progress::Machine(machine) => {
            *logical_cpus = machine.logical_cpus;
            print_header(out, machine)
        }
        Progress::Record(record) => print_row(out, *logical_cpus, record),
    }
}

fn print_header(out: &mut impl Write, m: &MachineFigures) -> std::io::Result<()> {
    let peaks = &m.ceilings;
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
        peaks.fma_peak_per_core.f32,
        peaks.fma_peak_per_core.f64,
        m.threads,
        peaks.fma_peak_all_threads.f32,
        peaks.fma_peak_all_threads.f64
    )?;
    match (
        peaks.fma_peak_per_core.f32_avx512,
        peaks.fma_peak_per_core.f64_avx512,
    ) {
        (Some(f32_peak), Some(f64_peak)) => writeln!(
            out,
            "FMA peak per core, 512-bit (AVX-512): {f32_peak:.1} GFLOP/s f32, {f64_peak:.1} GFLOP/s f64; all {} threads at once: {:.1} f32, {:.1} f64",
            m.threads,
            peaks.fma_peak_all_threads.f32_avx512.unwrap_or(0.0),
            peaks.fma_peak_all_threads.f64_avx512.unwrap_or(0.0)
        )?,
        _ => writeln!(out, "FMA peak per core, 512-bit: - (no AVX-512 on this CPU)")?,
    }
    writeln!(
        out,
        "GEMM kernel: {} (of peak [fma] is against {:.1} GFLOP/s f32, {:.1} GFLOP/s f64 per core: the peak of its vector width)",
        peaks.gemm_kernel, peaks.gemm_peak_f32_gflops_per_core, peaks.gemm_peak_f64_gflops_per_core
    )?;
    writeln!(
        out,
        "STREAM triad: {:.1} GB/s (3 x {} MB arrays, 24 B/element, no write-allocate)",
        peaks.triad_gbps,
        peaks.triad_bytes_per_array >> 20
    )?;
    let load = m
        .load_average_1min
        .map_or_else(|| "unknown".to_string(), |l| format!("{l:.2}"));
    writeln!(
        out,
        "1-minute load average at the start: {load} ({} logical CPUs)",
        m.logical_cpus
    )?;
    writeln!(
        out,
        "vs mm = our GFLOP/s / matrixmultiply's ({} threads), faster or slower only when the IQRs do not overlap; of peak = GFLOP/s / (GEMM kernel's FMA peak per core x threads) [fma] or GB/s / triad [triad]",
        m.matrixmultiply_threads
    )?;
    writeln!(
        out,
        "Timing: ours and matrixmultiply in interleaved rounds after one untimed call each; rates at the median call; IQR in % of the median; runs 1*: a single call that overran the time budget (no spread); load: 1-minute load average before the row, ! above the logical CPUs"
    )?;
    for warning in &m.warnings {
        writeln!(out, "warning: {warning}")?;
    }
    writeln!(out)?;
    let header = [
        "kernel", "shape", "dtype", "threads", "GFLOP/s", "GB/s", "vs mm", "", "of peak", "median",
        "min", "IQR %", "runs", "load",
    ];
    let cells: Vec<String> = header.iter().map(|s| s.to_string()).collect();
    write_cells(out, &cells)?;
    let rule: Vec<String> = WIDTHS.iter().map(|&w| "-".repeat(w)).collect();
    write_cells(out, &rule)
}

/// One row, then its warnings, but for the load warning: the `load` column marks it on every
/// row it applies to, where a line each would bury the others.
fn print_row(out: &mut impl Write, logical_cpus: usize, r: &BenchRecord) -> std::io::Result<()> {
    let load_warning = benign::bench::load_warning(r.times.load_average_1min, logical_cpus);
    let num = |v: Option<f64>, digits: usize| {
        v.map_or_else(|| "-".to_string(), |v| format!("{v:.digits$}"))
    };
    let peak = match r.rates.peak {
        PeakKind::Fma => "fma",
        PeakKind::Triad => "triad",
    };
    let cells = [
        r.kernel.clone(),
        r.dims.label(),
        r.dtype.clone(),
        r.threads.to_string(),
        num(r.rates.gflops, 2),
        num(r.rates.gbps, 2),
        num(r.rates.ratio_vs_matrixmultiply, 2),
        r.rates
            .vs_matrixmultiply
            .map_or_else(String::new, |v| v.label().to_string()),
        r.rates
            .frac_of_peak
            .map_or_else(|| "-".to_string(), |f| format!("{f:.2} {peak}")),
        seconds_text(r.times.median_seconds),
        seconds_text(r.times.min_seconds),
        if r.times.single_call {
            "-".to_string()
        } else {
            format!(
                "{:.1}",
                100.0 * r.times.iqr_seconds / r.times.median_seconds
            )
        },
        if r.times.single_call {
            "1*".to_string()
        } else {
            r.times.runs.to_string()
        },
        r.times.load_average_1min.map_or_else(
            || "-".to_string(),
            |load| format!("{load:.2}{}", if load_warning.is_some() { "!" } else { "" }),
        ),
    ];
    write_cells(out, &cells)?;
    for warning in r
        .warnings
        .iter()
        .filter(|w| Some(*w) != load_warning.as_ref())
    {
        writeln!(out, "  warning: {}: {warning}", row_name(r))?;
    }
    Ok(())
}

/// A duration in the unit that keeps three or four significant digits: `812 us`, `4.21 ms`,
/// `1.93 s`.
fn seconds_text(seconds: f64) -> String {
    if seconds >= 1.0 {
        format!("{seconds:.2} s")
    } else if seconds >= 1e-3 {
        format!("{:.2} ms", seconds * 1e3)
    } else {
        format!("{:.1} us", seconds * 1e6)
    }
}

/// Left-aligns the text columns and right-aligns the numbers.
fn write_cells(out: &mut impl Write, cells: &[String]) -> std::io::Result<()> {
    let mut line = String::new();
    for (i, (cell, &width)) in cells.iter().zip(WIDTHS.iter()).enumerate() {
        if i > 0 {
            line.push_str("  ");
        }
        if i < 3 || i == 7 {
            line.push_str(&format!("{cell:<width$}"));
        } else {
            line.push_str(&format!("{cell:>width$}"));
        }
    }
    writeln!(out, "{}", line.trim_end())
}
