//! A boundary measurement's outputs: `boundaries.csv`, `fit.json` and the log-log figure, written
//! from the saved thresholds once every search is in.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::estimate::{self, Estimates, Fit, PointEstimate};
use super::{collect, read_spec, Boundary, BoundarySpec, ThresholdRecord, REFERENCE_DIM};
use crate::plot::{self, Panel, Series};
use crate::provenance::Provenance;
use crate::{io, Error, Result};

/// The per-point table of a boundary folder: one row per boundary and `(d, n)`.
pub const CSV_FILE: &str = "boundaries.csv";
/// The fits, the spec and the provenance (also the calibration format `benign run` reads).
pub const FIT_FILE: &str = "fit.json";

/// `fit.json`: the estimates, the spec they come from and the provenance of the report. This is
/// also the calibration format `benign run` reads.
#[derive(Serialize)]
pub struct FitFile<'a> {
    /// The measurement.
    pub spec: &'a BoundarySpec,
    /// The d at which per-d step scaling keeps the given learning rate.
    pub reference_dim: usize,
    /// The effective step `lr sigma^2 d` of every run (per-d scaling), or `None` when it varies.
    pub effective_step: Option<f64>,
    /// One fit per boundary.
    pub fits: &'a [Fit],
    /// One estimate per boundary and grid point.
    pub points: &'a [PointEstimate],
    /// Version, machine and time of this report.
    pub provenance: Provenance,
}

/// What [`finish`] wrote, or why it could not yet.
pub enum Finished {
    /// Every search is in: the estimates, and the files written.
    Written {
        /// The estimates the files hold.
        estimates: Estimates,
        /// Every file written.
        files: Vec<PathBuf>,
        /// Why the figure was not drawn, when drawing failed (the other files are written).
        figure_error: Option<String>,
    },
    /// Searches not yet recorded (by any shard), by index.
    Incomplete {
        /// Indices of the missing searches, in the plan's order.
        missing: Vec<usize>,
        /// Searches in the whole plan.
        total: usize,
    },
}

/// Writes the estimates, table, fit and figure of a folder from its saved thresholds, if every
/// search is recorded.
pub fn finish(dir: &Path, draw: bool) -> Result<Finished> {
    let spec = read_spec(dir)?;
    let records = collect(dir)?;
    let total = spec.searches().len();
    let have: std::collections::HashSet<usize> = records.iter().map(|r| r.index).collect();
    let missing: Vec<usize> = (0..total).filter(|i| !have.contains(i)).collect();
    if !missing.is_empty() {
        return Ok(Finished::Incomplete { missing, total });
    }
    let estimates = estimate::estimate(&spec, &records);
    let csv = dir.join(CSV_FILE);
    write_csv(&csv, &spec, &estimates)?;
    let fit = dir.join(FIT_FILE);
    io::write_json_atomic(
        &fit,
        &FitFile {
            spec: &spec,
            reference_dim: REFERENCE_DIM,
            effective_step: effective_step(&spec),
            fits: &estimates.fits,
            points: &estimates.points,
            provenance: Provenance::capture(rayon::current_num_threads()),
        },
    )?;
    let mut files = vec![csv, fit];
    let mut figure_error = None;
    if draw {
        let (svg, png) = (dir.join("boundary.svg"), dir.join("boundary.png"));
        match render(&spec, &estimates, &records, &svg, &png) {
            Ok(()) => files.extend([svg, png]),
            Err(e) => {
                log::warn!("no figure drawn ({e}); the data files are complete");
                figure_error = Some(e.to_string());
            }
        }
    }
    Ok(Finished::Written {
        estimates,
        files,
        figure_error,
    })
}

/// `lr sigma^2 d`, when the step scaling holds it fixed.
pub fn effective_step(spec: &BoundarySpec) -> Option<f64> {
    let steps: Vec<f64> = spec
        .dims
        .iter()
        .map(|&d| spec.lr_at(d) * spec.base.sigma.powi(2) * d as f64)
        .collect();
    let first = steps[0];
    steps
        .iter()
        .all(|s| (s - first).abs() <= 1e-12 * first.abs())
        .then_some(first)
}

fn cell(v: Option<f64>) -> String {
    v.map_or(String::new(), io::float_cell)
}

fn write_csv(path: &Path, spec: &BoundarySpec, estimates: &Estimates) -> Result<()> {
    io::write_atomic_with(path, |w| {
        let mut out = csv::Writer::from_writer(w);
        let to_io = |e: csv::Error| std::io::Error::other(e.to_string());
        out.write_record([
            "boundary",
            "dim",
            "samples",
            "log10_snr",
            "ci_low",
            "ci_high",
            "snr",
            "signal_norm",
            "seeds",
            "below_range",
            "above_range",
            "non_monotone",
            "benign_band",
        ])
        .map_err(to_io)?;
        for p in &estimates.points {
            let snr = p.log10_snr.map(|x| 10f64.powf(x));
            let signal_norm = snr.map(|s| s * spec.base.sigma * (p.dim as f64).sqrt());
            out.write_record([
                p.boundary.name().to_string(),
                p.dim.to_string(),
                p.samples.to_string(),
                cell(p.log10_snr),
                cell(p.ci_low),
                cell(p.ci_high),
                cell(snr),
                cell(signal_norm),
                p.seeds.to_string(),
                p.below_range.to_string(),
                p.above_range.to_string(),
                p.non_monotone.to_string(),
                p.benign_band.to_string(),
            ])
            .map_err(to_io)?;
        }
        out.flush()
    })
}

/// The human summary: each boundary's fit against the theory, and the grid's medians.
pub fn summary_text(estimates: &Estimates) -> String {
    let mut s = String::new();
    for fit in &estimates.fits {
        let name = fit.boundary.name();
        let exponent = |label: &str, c: &Option<estimate::Coefficient>, theory: f64| match c {
            Some(c) => format!(
                "{label} = {:.3} [{:.3}, {:.3}] (theory {theory})",
                c.value, c.ci_low, c.ci_high
            ),
            None => format!("{label}: not identified by this grid (theory {theory})"),
        };
        s.push_str(&format!(
            "{name}: log10 SNR* = {:.3} + a log10 d + b log10 n; {}; {}; {} points ({} without a benign band left out), rms residual {:.3} decades\n",
            fit.intercept.value,
            exponent("a", &fit.a, fit.theory_a),
            exponent("b", &fit.b, fit.theory_b),
            fit.points,
            fit.excluded_no_band,
            fit.rms_residual
        ));
    }
    for boundary in Boundary::ALL {
        if !estimates.fits.iter().any(|f| f.boundary == boundary) {
            s.push_str(&format!(
                "{}: no fit (too few grid points with a finite median)\n",
                boundary.name()
            ));
        }
    }
    s
}

/// Two panels: `log10 SNR*` against d (one line per n) and against n (one line per d), both
/// boundaries, 95% intervals as vertical bars, the theory's slopes dashed through each
/// boundary's mean.
fn render(
    spec: &BoundarySpec,
    estimates: &Estimates,
    records: &[ThresholdRecord],
    svg: &Path,
    png: &Path,
) -> Result<()> {
    if records.is_empty() {
        return Err(Error::invalid("boundary", "no threshold to draw"));
    }
    let short = |b: Boundary| match b {
        Boundary::HarmfulBenign => "harmful|benign",
        Boundary::BenignNotOverfitting => "benign|not overfitting",
    };
    let mut panels = Vec::new();
    for by_dim in [true, false] {
        let mut series = Vec::new();
        for boundary in Boundary::ALL {
            let points: Vec<&PointEstimate> = estimates
                .points
                .iter()
                .filter(|p| p.boundary == boundary)
                .collect();
            let lines: Vec<usize> = if by_dim {
                spec.samples.clone()
            } else {
                spec.dims.clone()
            };
            for line in lines {
                let mut curve = Vec::new();
                let mut bars = Vec::new();
                for p in points.iter().filter(|p| {
                    if by_dim {
                        p.samples == line
                    } else {
                        p.dim == line
                    }
                }) {
                    let x = if by_dim { p.dim } else { p.samples } as f64;
                    curve.push((x, p.log10_snr.unwrap_or(f64::NAN)));
                    if let (Some(lo), Some(hi)) = (p.ci_low, p.ci_high) {
                        bars.push(Series {
                            label: String::new(),
                            points: vec![(x, lo), (x, hi)],
                            dashed: false,
                        });
                    }
                }
                series.push(Series {
                    label: format!(
                        "{} {}={line}",
                        short(boundary),
                        if by_dim { "n" } else { "d" }
                    ),
                    points: curve,
                    dashed: false,
                });
                series.extend(bars);
            }
            // The theory's slope through the mean of this boundary's finite medians.
            let finite: Vec<(f64, f64)> = points
                .iter()
                .filter_map(|p| {
                    p.log10_snr
                        .map(|m| ((if by_dim { p.dim } else { p.samples }) as f64, m))
                })
                .collect();
            if finite.len() >= 2 {
                let (a, b) = boundary.theory_slopes();
                let slope = if by_dim { a } else { b };
                let mean_x = finite.iter().map(|p| p.0.log10()).sum::<f64>() / finite.len() as f64;
                let mean_y = finite.iter().map(|p| p.1).sum::<f64>() / finite.len() as f64;
                let (lo, hi) = finite.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), p| {
                    (lo.min(p.0), hi.max(p.0))
                });
                series.push(Series {
                    label: format!("theory slope {slope} ({})", short(boundary)),
                    points: [lo, hi]
                        .iter()
                        .map(|&x| (x, mean_y + slope * (x.log10() - mean_x)))
                        .collect(),
                    dashed: true,
                });
            }
        }
        panels.push(Panel {
            title: if by_dim {
                "boundary SNR against d".into()
            } else {
                "boundary SNR against n".into()
            },
            x_label: if by_dim { "d".into() } else { "n".into() },
            y_label: "log10 SNR*".into(),
            series,
            y_range: None,
            log_x: true,
        });
    }
    let title = format!(
        "Phase boundaries: median over {} seeds, 95% bootstrap intervals, horizon {} steps, lr {}",
        spec.seeds,
        spec.base.steps,
        match spec.step_scaling {
            super::StepScaling::PerDim => format!("{} x {REFERENCE_DIM}/d", spec.base.lr),
            super::StepScaling::Fixed => spec.base.lr.to_string(),
        }
    );
    plot::render_panels(&panels, 2, &title, svg, png)
}
