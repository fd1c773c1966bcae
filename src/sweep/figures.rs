//! Phase diagrams: heatmaps of final metrics over two grid axes, averaged over seeds.
//!
//! One figure per metric and per combination of the values of the remaining axes (named after
//! them, e.g. `test_loss-eta=0.1.svg`). Cells average the successful runs of their seeds; a cell
//! without one is missing (grey). The observed regime is a categorical map: the most frequent
//! regime over seeds, ties going to the first in the legend's order. When the axes are `d` and
//! `||mu||`, the theory's boundaries are drawn over the map: `SNR = ||mu|| / (sigma sqrt d)`
//! equals `n^(-1/2)` on `||mu|| = sigma sqrt(d / n)` and `d^(-1/4)` on `||mu|| = sigma d^(1/4)`;
//! and, over the d where the calibration in use describes the runs (same protocol and
//! effective step, `crate::boundary::calibration`), the measured boundaries
//! `||mu|| = SNR*(d, n) sigma sqrt(d)`.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::plot::{self, Heatmap, Series};
use crate::synthetic::metrics::EvalRecord;
use crate::synthetic::theory::Regime;
use crate::synthetic::RunConfig;
use crate::{Error, Result};

use super::grid::{parameter, SweepSpec};
use super::results::RunRecord;

/// The regimes in legend order.
const REGIMES: [Regime; 4] = [
    Regime::NotOverfitting,
    Regime::BenignOverfitting,
    Regime::HarmfulOverfitting,
    Regime::NotYetFitted,
];

type Extract = fn(&EvalRecord) -> Option<f64>;

/// The continuous maps: file stem, title, colour-bar label, value.
const METRICS: [(&str, &str, &str, Extract); 4] = [
    ("train_loss", "final train loss", "train loss", |m| {
        Some(m.train_loss)
    }),
    ("test_loss", "final test loss", "test loss", |m| {
        Some(m.test_loss)
    }),
    ("test_acc", "final test accuracy", "test accuracy", |m| {
        Some(m.test_acc)
    }),
    (
        "train_acc_noisy",
        "final train accuracy on noisy samples",
        "noisy-sample train accuracy",
        |m| m.train_acc_noisy,
    ),
];

/// Human label of an axis.
fn axis_label(name: &str) -> String {
    match name {
        "dim" => "d".into(),
        "signal_norm" => "||mu||".into(),
        "samples" => "n".into(),
        "tokens" => "T".into(),
        other => other.into(),
    }
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Parses the axes of the maps as written (`--axes X,Y`); [`choose_axes`] checks them.
pub fn parse_axes(text: Option<&str>) -> Result<Option<(String, String)>> {
    let Some(text) = text else { return Ok(None) };
    let (x, y) = text.split_once(',').ok_or_else(|| {
        Error::invalid(
            "axes",
            format!("`{text}`: expected X,Y (e.g. d,signal_norm)"),
        )
    })?;
    Ok(Some((x.trim().to_string(), y.trim().to_string())))
}

/// The two axes of the maps: the requested ones, else `d` and `||mu||` when both vary, else the
/// first two numeric axes. `None` when fewer than two numeric axes vary.
pub fn choose_axes(
    spec: &SweepSpec,
    requested: Option<(&str, &str)>,
) -> Result<Option<(String, String)>> {
    let numeric = |name: &str| spec.axis(name).is_some_and(|a| a.numbers().is_some());
    if let Some((x, y)) = requested {
        // An unknown name is an error of `--axes` (the lookup's own errors name `--grid`).
        let field = |name: &str| {
            parameter(name).map(|p| p.field).map_err(|e| match e {
                Error::InvalidOption { message, .. } => Error::invalid("axes", message),
                other => other,
            })
        };
        let (x, y) = (field(x)?, field(y)?);
        for name in [x, y] {
            if !numeric(name) {
                let varying: Vec<&str> = spec.axes.iter().map(|a| a.name.as_str()).collect();
                return Err(Error::invalid(
                    "axes",
                    format!(
                        "`{name}` is not a numeric axis of this sweep (axes: {})",
                        varying.join(", ")
                    ),
                ));
            }
        }
        if x == y {
            return Err(Error::invalid("axes", "needs two different axes"));
        }
        return Ok(Some((x.to_string(), y.to_string())));
    }
    if numeric("dim") && numeric("signal_norm") {
        return Ok(Some(("dim".into(), "signal_norm".into())));
    }
    let names: Vec<&str> = spec
        .axes
        .iter()
        .filter(|a| numeric(&a.name))
        .map(|a| a.name.as_str())
        .collect();
    Ok((names.len() >= 2).then(|| (names[0].to_string(), names[1].to_string())))
}

/// Sorted distinct values of a numeric axis.
fn sorted_values(spec: &SweepSpec, name: &str) -> Vec<f64> {
    let mut v = spec
        .axis(name)
        .and_then(|a| a.numbers())
        .unwrap_or_default();
    v.sort_by(f64::total_cmp);
    v.dedup();
    v
}

/// The boundaries `||mu|| = sigma sqrt(d / n)` and `||mu|| = sigma d^(1/4)` as curves over the
/// range of `d`, in (x, y) order of the map.
fn boundaries(
    d_values: &[f64],
    example: &RunConfig,
    spec: &SweepSpec,
    d_is_x: bool,
) -> Vec<Series> {
    let (lo, hi) = (d_values[0], d_values[d_values.len() - 1]);
    let (sigma, n) = (example.sigma, example.samples as f64);
    let samples = 200;
    // Log-spaced samples where the axis spans a decade or more (the map is then drawn on a log
    // scale), linear otherwise.
    let log = lo > 0.0 && hi >= 10.0 * lo;
    let d_at = |i: usize| {
        let t = i as f64 / samples as f64;
        if log {
            10f64.powf(lo.log10() + t * (hi.log10() - lo.log10()))
        } else {
            lo + (hi - lo) * t
        }
    };
    let curve = |label: &str, f: &dyn Fn(f64) -> f64| Series {
        label: label.into(),
        points: (0..=samples)
            .map(|i| {
                let d = d_at(i);
                if d_is_x {
                    (d, f(d))
                } else {
                    (f(d), d)
                }
            })
            .collect(),
        dashed: true,
    };
    let mut curves = vec![
        curve("order SNR = n^-1/2", &|d| sigma * (d / n).sqrt()),
        curve("order SNR = d^-1/4", &|d| sigma * d.powf(0.25)),
    ];
    // The measured boundaries where the calibration describes the runs at that d (the
    // learning rate of an `lr` axis varies per cell: no single curve then).
    if spec.axis("lr").is_none() {
        let calibration = crate::boundary::calibration::current();
        let at = |d: f64| {
            let config = RunConfig {
                dim: d.round() as usize,
                lr: spec.step_scaling.lr(spec.base.lr, d.round() as usize),
                ..example.clone()
            };
            calibration.boundaries(&config).ok()
        };
        let lower = curve("measured harmful|benign", &|d| {
            at(d).map_or(f64::NAN, |b| b.snr_harmful_benign * sigma * d.sqrt())
        });
        let upper = curve("measured benign|not overfitting", &|d| {
            at(d).map_or(f64::NAN, |b| {
                b.snr_benign_not_overfitting * sigma * d.sqrt()
            })
        });
        for measured in [lower, upper] {
            if measured
                .points
                .iter()
                .any(|p| p.0.is_finite() && p.1.is_finite())
            {
                curves.push(measured);
            }
        }
    }
    curves
}

/// Renders every map of the sweep into `dir/figures/` (SVG and PNG). Returns the SVG paths.
pub fn render(
    dir: &Path,
    spec: &SweepSpec,
    records: &[RunRecord],
    axes: Option<(&str, &str)>,
) -> Result<Vec<PathBuf>> {
    let Some((x_name, y_name)) = choose_axes(spec, axes)? else {
        return Ok(Vec::new());
    };
    let xs = sorted_values(spec, &x_name);
    let ys = sorted_values(spec, &y_name);
    let others: Vec<&super::grid::Axis> = spec
        .axes
        .iter()
        .filter(|a| a.name != x_name && a.name != y_name)
        .collect();
    // Every combination of the other axes' values (odometer order).
    let mut combos: Vec<Vec<Value>> = vec![Vec::new()];
    for axis in &others {
        combos = combos
            .into_iter()
            .flat_map(|prefix| {
                axis.values.iter().map(move |v| {
                    let mut c = prefix.clone();
                    c.push(v.clone());
                    c
                })
            })
            .collect();
    }
    let figures = dir.join("figures");
    let mut written = Vec::new();
    let (nx, ny) = (xs.len(), ys.len());
    let index_of =
        |values: &[f64], v: Option<f64>| v.and_then(|v| values.iter().position(|&w| w == v));
    for combo in combos {
        let members: Vec<&RunRecord> = records
            .iter()
            .filter(|r| {
                others
                    .iter()
                    .zip(&combo)
                    .all(|(a, v)| r.params.get(&a.name) == Some(v))
            })
            .collect();
        let Some(example) = members.first() else {
            continue;
        };
        let suffix: String = others
            .iter()
            .zip(&combo)
            .map(|(a, v)| format!("-{}={}", a.name, value_text(v)))
            .collect();
        let context: Vec<String> = others
            .iter()
            .zip(&combo)
            .map(|(a, v)| format!("{}={}", axis_label(&a.name), value_text(v)))
            .collect();
        // cells[iy * nx + ix] = the records of that cell.
        let mut cells: Vec<Vec<&RunRecord>> = vec![Vec::new(); nx * ny];
        for r in &members {
            let ix = index_of(&xs, r.params.get(&x_name).and_then(Value::as_f64));
            let iy = index_of(&ys, r.params.get(&y_name).and_then(Value::as_f64));
            if let (Some(ix), Some(iy)) = (ix, iy) {
                cells[iy * nx + ix].push(r);
            }
        }
        let overlays = match (x_name.as_str(), y_name.as_str()) {
            ("dim", "signal_norm") => boundaries(&xs, &example.config, spec, true),
            ("signal_norm", "dim") => boundaries(&ys, &example.config, spec, false),
            _ => Vec::new(),
        };
        let c = &example.config;
        let setting = format!(
            "n={} T={} rho={} eta={} sigma={} {} steps, {} seed(s){}{}",
            c.samples,
            c.tokens,
            c.rho,
            c.eta,
            c.sigma,
            c.steps,
            spec.seeds,
            if spec.common_random_numbers {
                ", common random numbers"
            } else {
                ""
            },
            if context.is_empty() {
                String::new()
            } else {
                format!("; {}", context.join(" "))
            }
        );
        let base = Heatmap {
            title: String::new(),
            x_label: axis_label(&x_name),
            y_label: axis_label(&y_name),
            x_values: xs.clone(),
            y_values: ys.clone(),
            values: Vec::new(),
            value_label: String::new(),
            categories: None,
            overlays,
        };
        for (stem, title, label, extract) in METRICS {
            let values = cells
                .iter()
                .map(|cell| {
                    let v: Vec<f64> = cell
                        .iter()
                        .filter_map(|r| r.final_metrics.as_ref().and_then(extract))
                        .collect();
                    if v.is_empty() {
                        f64::NAN
                    } else {
                        v.iter().sum::<f64>() / v.len() as f64
                    }
                })
                .collect();
            let map = Heatmap {
                title: format!("{title} ({setting})"),
                values,
                value_label: label.into(),
                ..base.clone()
            };
            let svg = figures.join(format!("{stem}{suffix}.svg"));
            plot::render_heatmap(&map, &svg, &figures.join(format!("{stem}{suffix}.png")))?;
            written.push(svg);
        }
        let values = cells
            .iter()
            .map(|cell| {
                let mut counts = [0usize; REGIMES.len()];
                for r in cell {
                    if let Some(g) = r.observed_regime {
                        if let Some(k) = REGIMES.iter().position(|&x| x == g) {
                            counts[k] += 1;
                        }
                    }
                }
                let best = counts.iter().copied().max().unwrap_or(0);
                if best == 0 {
                    f64::NAN
                } else {
                    counts
                        .iter()
                        .position(|&c| c == best)
                        .map_or(f64::NAN, |k| k as f64)
                }
            })
            .collect();
        let map = Heatmap {
            title: format!("observed regime, most frequent over seeds ({setting})"),
            values,
            value_label: "regime".into(),
            categories: Some(REGIMES.iter().map(|g| g.to_string()).collect()),
            ..base.clone()
        };
        let svg = figures.join(format!("regime{suffix}.svg"));
        plot::render_heatmap(&map, &svg, &figures.join(format!("regime{suffix}.png")))?;
        written.push(svg);
    }
    Ok(written)
}
