//! Phase diagrams: heatmaps of final metrics over two grid axes, averaged over seeds; or, when a
//! single numeric axis varies, line plots over it.
//!
//! One figure per metric and per combination of the values of the remaining axes (named after
//! them, e.g. `test_loss-eta=0.1.svg`). Cells average the successful runs of their seeds; a cell
//! without one is missing (grey); small maps print the averages in their cells. A one-axis sweep
//! draws one figure per combination of the other axes (`lines-eta.svg`): each metric's mean over
//! seeds with the lowest and highest seed dashed, and the share of seeds in each observed
//! regime. The observed regime is a categorical map: the most frequent
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
    // The orders are drawn with their unknown constants set to 1; the labels say so, lest the
    // lines be read as predicted boundaries.
    let mut curves = vec![
        curve(
            "SNR = n^-1/2, constant 1:\nan order, not a prediction",
            &|d| sigma * (d / n).sqrt(),
        ),
        curve(
            "SNR = d^-1/4, constant 1:\nan order, not a prediction",
            &|d| sigma * d.powf(0.25),
        ),
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

/// The runs sharing one combination of the values of the axes not plotted, and how figures of
/// them are named (`-eta=0.1`) and captioned (`eta=0.1`).
struct Group<'a> {
    members: Vec<&'a RunRecord>,
    suffix: String,
    context: Vec<String>,
}

/// The records split by every combination of the values of the axes not in `plotted`
/// (odometer order); combinations without a record are left out.
fn groups<'a>(spec: &SweepSpec, records: &'a [RunRecord], plotted: &[&str]) -> Vec<Group<'a>> {
    let others: Vec<&super::grid::Axis> = spec
        .axes
        .iter()
        .filter(|a| !plotted.contains(&a.name.as_str()))
        .collect();
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
    combos
        .into_iter()
        .filter_map(|combo| {
            let members: Vec<&RunRecord> = records
                .iter()
                .filter(|r| {
                    others
                        .iter()
                        .zip(&combo)
                        .all(|(a, v)| r.params.get(&a.name) == Some(v))
                })
                .collect();
            if members.is_empty() {
                return None;
            }
            let named = || others.iter().zip(&combo);
            Some(Group {
                members,
                suffix: named()
                    .map(|(a, v)| format!("-{}={}", a.name, value_text(v)))
                    .collect(),
                context: named()
                    .map(|(a, v)| format!("{}={}", axis_label(&a.name), value_text(v)))
                    .collect(),
            })
        })
        .collect()
}

/// The fixed setting of a figure, for its title: the parameters it does not plot.
fn setting(spec: &SweepSpec, c: &RunConfig, context: &[String], plotted: &[&str]) -> String {
    let fixed = [
        ("samples", format!("n={}", c.samples)),
        ("tokens", format!("T={}", c.tokens)),
        ("rho", format!("rho={}", c.rho)),
        ("eta", format!("eta={}", c.eta)),
        ("sigma", format!("sigma={}", c.sigma)),
        ("steps", format!("{} steps,", c.steps)),
    ];
    let mut words: Vec<String> = fixed
        .into_iter()
        .filter(|(name, _)| !plotted.contains(name))
        .map(|(_, word)| word)
        .collect();
    words.push(format!("{} seed(s)", spec.seeds));
    let mut text = words.join(" ");
    if spec.common_random_numbers {
        text.push_str(", common random numbers");
    }
    if !context.is_empty() {
        text.push_str(&format!("; {}", context.join(" ")));
    }
    text
}

/// The only numeric axis of a sweep, when it has exactly one.
fn single_numeric_axis(spec: &SweepSpec) -> Option<String> {
    let mut numeric = spec.axes.iter().filter(|a| a.numbers().is_some());
    match (numeric.next(), numeric.next()) {
        (Some(axis), None) => Some(axis.name.clone()),
        _ => None,
    }
}

/// Renders the figures of the sweep into `dir/figures/` (SVG and PNG): heatmaps over two numeric
/// axes, or line plots over the only one. Returns the SVG paths.
pub fn render(
    dir: &Path,
    spec: &SweepSpec,
    records: &[RunRecord],
    axes: Option<(&str, &str)>,
) -> Result<Vec<PathBuf>> {
    match choose_axes(spec, axes)? {
        Some((x_name, y_name)) => render_maps(dir, spec, records, &x_name, &y_name),
        None => match single_numeric_axis(spec) {
            Some(x_name) => render_lines(dir, spec, records, &x_name),
            None => Ok(Vec::new()),
        },
    }
}

/// One figure per group: each final metric against the axis (mean over seeds, with the lowest
/// and highest seed dashed when there are several), and the share of seeds in each observed
/// regime (the regimes seen). File `lines-<axis><suffix>.svg`.
fn render_lines(
    dir: &Path,
    spec: &SweepSpec,
    records: &[RunRecord],
    x_name: &str,
) -> Result<Vec<PathBuf>> {
    let xs = sorted_values(spec, x_name);
    let x_label = axis_label(x_name);
    // A log axis where the values span a decade or more, as the maps do.
    let log_x = xs[0] > 0.0 && xs[xs.len() - 1] >= 10.0 * xs[0];
    let figures = dir.join("figures");
    let mut written = Vec::new();
    for group in groups(spec, records, &[x_name]) {
        // runs[ix] = the records at xs[ix].
        let runs: Vec<Vec<&RunRecord>> = xs
            .iter()
            .map(|&x| {
                group
                    .members
                    .iter()
                    .copied()
                    .filter(|r| r.params.get(x_name).and_then(Value::as_f64) == Some(x))
                    .collect()
            })
            .collect();
        let mut panels: Vec<plot::Panel> = METRICS
            .iter()
            .map(|&(_, title, label, extract)| {
                let per_x: Vec<Vec<f64>> = runs
                    .iter()
                    .map(|cell| {
                        cell.iter()
                            .filter_map(|r| r.final_metrics.as_ref().and_then(extract))
                            .collect()
                    })
                    .collect();
                let curve = |f: &dyn Fn(&[f64]) -> f64| -> Vec<(f64, f64)> {
                    xs.iter()
                        .zip(&per_x)
                        .map(|(&x, v)| (x, if v.is_empty() { f64::NAN } else { f(v) }))
                        .collect()
                };
                // The title says what the lines are (mean, lowest and highest seed): no legend.
                let mut series = vec![Series {
                    label: String::new(),
                    points: curve(&|v| v.iter().sum::<f64>() / v.len() as f64),
                    dashed: false,
                }];
                if spec.seeds > 1 {
                    for extreme in [f64::min, f64::max] {
                        series.push(Series {
                            label: String::new(),
                            points: curve(&|v| {
                                v.iter().copied().reduce(extreme).unwrap_or(f64::NAN)
                            }),
                            dashed: true,
                        });
                    }
                }
                plot::Panel {
                    title: title.into(),
                    x_label: x_label.clone(),
                    y_label: label.into(),
                    series,
                    y_range: None,
                    log_x,
                }
            })
            .collect();
        let seen: Vec<Regime> = REGIMES
            .iter()
            .copied()
            .filter(|&g| group.members.iter().any(|r| r.observed_regime == Some(g)))
            .collect();
        panels.push(plot::Panel {
            title: "observed regime".into(),
            x_label: x_label.clone(),
            y_label: "share of seeds".into(),
            series: seen
                .iter()
                .map(|&regime| Series {
                    label: regime.to_string(),
                    points: xs
                        .iter()
                        .zip(&runs)
                        .map(|(&x, cell)| {
                            let seen = cell.iter().filter(|r| r.observed_regime.is_some()).count();
                            let share = cell
                                .iter()
                                .filter(|r| r.observed_regime == Some(regime))
                                .count() as f64
                                / seen as f64;
                            (x, share)
                        })
                        .collect(),
                    dashed: false,
                })
                .collect(),
            y_range: Some((-0.05, 1.05)),
            log_x,
        });
        let lines = if spec.seeds > 1 {
            "; solid: mean, dashed: lowest and highest seed"
        } else {
            ""
        };
        let title = format!(
            "final metrics by {x_label} ({}){lines}",
            setting(spec, &group.members[0].config, &group.context, &[x_name])
        );
        let stem = format!("lines-{x_name}{}", group.suffix);
        let svg = figures.join(format!("{stem}.svg"));
        plot::render_panels(
            &panels,
            3,
            &title,
            &svg,
            &figures.join(format!("{stem}.png")),
        )?;
        written.push(svg);
    }
    Ok(written)
}

/// One set of maps per group: the final metrics averaged over seeds and the most frequent
/// observed regime.
fn render_maps(
    dir: &Path,
    spec: &SweepSpec,
    records: &[RunRecord],
    x_name: &str,
    y_name: &str,
) -> Result<Vec<PathBuf>> {
    let xs = sorted_values(spec, x_name);
    let ys = sorted_values(spec, y_name);
    let figures = dir.join("figures");
    let mut written = Vec::new();
    let (nx, ny) = (xs.len(), ys.len());
    let index_of =
        |values: &[f64], v: Option<f64>| v.and_then(|v| values.iter().position(|&w| w == v));
    for group in groups(spec, records, &[x_name, y_name]) {
        let example = group.members[0];
        let suffix = &group.suffix;
        // cells[iy * nx + ix] = the records of that cell.
        let mut cells: Vec<Vec<&RunRecord>> = vec![Vec::new(); nx * ny];
        for r in &group.members {
            let ix = index_of(&xs, r.params.get(x_name).and_then(Value::as_f64));
            let iy = index_of(&ys, r.params.get(y_name).and_then(Value::as_f64));
            if let (Some(ix), Some(iy)) = (ix, iy) {
                cells[iy * nx + ix].push(r);
            }
        }
        let overlays = match (x_name, y_name) {
            ("dim", "signal_norm") => boundaries(&xs, &example.config, spec, true),
            ("signal_norm", "dim") => boundaries(&ys, &example.config, spec, false),
            _ => Vec::new(),
        };
        let setting = setting(spec, &example.config, &group.context, &[x_name, y_name]);
        let base = Heatmap {
            title: String::new(),
            x_label: axis_label(x_name),
            y_label: axis_label(y_name),
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
