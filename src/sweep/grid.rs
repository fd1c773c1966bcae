//! Sweep specifications: axes over run parameters, their canonical expansion, run ids and seeds.
//!
//! An axis is a [`RunConfig`] field and a list of values, written `start:stop:step` (inclusive
//! of `stop` when it lands on the grid) or `v1,v2,...`. Axes are sorted by the fixed order of
//! [`PARAMETERS`] whatever order they were given in; values keep the given order; seeds vary
//! fastest. A run's id is 16 hex digits of FNV-1a over the canonical JSON of its configuration
//! without the seed, plus the seed index (and the sampling mode), so it names the same run in
//! every invocation, shard and thread count; the run's seed is derived from the base seed and
//! that id (or, with common random numbers, the id of its column).

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::seed::mix_seed;
use crate::synthetic::config::StepScaling;
use crate::synthetic::RunConfig;
use crate::{Error, Result};

/// What kind of values a parameter takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A count (`usize` field).
    Integer,
    /// A real number.
    Real,
    /// One of named choices (a `clap::ValueEnum` field, kebab-case).
    Choice(&'static [&'static str]),
}

/// A parameter that can vary: its [`RunConfig`] field name, other accepted spellings, its kind.
#[derive(Clone, Copy, Debug)]
pub struct Parameter {
    /// The [`RunConfig`] field it sets, its canonical name.
    pub field: &'static str,
    /// Other spellings accepted for it (e.g. `d` for `dim`).
    pub aliases: &'static [&'static str],
    /// What values it takes.
    pub kind: Kind,
}

/// Every parameter an axis can vary, in canonical order (the order axes are expanded in).
pub const PARAMETERS: &[Parameter] = &[
    Parameter {
        field: "dim",
        aliases: &["d"],
        kind: Kind::Integer,
    },
    Parameter {
        field: "signal_norm",
        aliases: &["signal-norm", "mu"],
        kind: Kind::Real,
    },
    Parameter {
        field: "samples",
        aliases: &["n"],
        kind: Kind::Integer,
    },
    Parameter {
        field: "tokens",
        aliases: &["T"],
        kind: Kind::Integer,
    },
    Parameter {
        field: "rho",
        aliases: &[],
        kind: Kind::Real,
    },
    Parameter {
        field: "eta",
        aliases: &[],
        kind: Kind::Real,
    },
    Parameter {
        field: "sigma",
        aliases: &[],
        kind: Kind::Real,
    },
    Parameter {
        field: "lr",
        aliases: &[],
        kind: Kind::Real,
    },
    Parameter {
        field: "steps",
        aliases: &[],
        kind: Kind::Integer,
    },
    Parameter {
        field: "eval_every",
        aliases: &["eval-every"],
        kind: Kind::Integer,
    },
    Parameter {
        field: "test_size",
        aliases: &["test-size"],
        kind: Kind::Integer,
    },
    Parameter {
        field: "trainer",
        aliases: &[],
        kind: Kind::Choice(&["dense", "subspace", "law"]),
    },
    Parameter {
        field: "init",
        aliases: &[],
        kind: Kind::Choice(&["uniform", "gaussian"]),
    },
    Parameter {
        field: "precision",
        aliases: &[],
        kind: Kind::Choice(&["f32", "f64"]),
    },
    Parameter {
        field: "label_noise",
        aliases: &["label-noise"],
        kind: Kind::Choice(&["block", "bernoulli"]),
    },
    Parameter {
        field: "signal_directions",
        aliases: &["signal-directions"],
        kind: Kind::Choice(&["axis", "random"]),
    },
];

/// Most runs one sweep may have (grid cells x seeds). Every invocation and every shard expands
/// the whole sweep, holding each run's configuration in memory: about 1 KB and 17 us per run,
/// so 1 GB and 20 s at this limit. A bigger study is several sweeps.
pub const MAX_RUNS: usize = 1_000_000;

/// Parameters that common random numbers may vary inside one column (they only scale the
/// signal parts of the tokens, never the noise or `W_0`).
pub const SIGNAL_PARAMETERS: &[&str] = &["signal_norm", "rho", "eta"];

/// Looks a parameter up by field name or alias (`-` and `_` interchangeable except in `T`).
pub fn parameter(name: &str) -> Result<&'static Parameter> {
    let wanted = name.trim();
    PARAMETERS
        .iter()
        .find(|p| {
            p.field == wanted || p.field == wanted.replace('-', "_") || p.aliases.contains(&wanted)
        })
        .ok_or_else(|| {
            let valid: Vec<String> = PARAMETERS
                .iter()
                .map(|p| {
                    if p.aliases.is_empty() {
                        p.field.to_string()
                    } else {
                        format!("{} ({})", p.field, p.aliases.join(", "))
                    }
                })
                .collect();
            let hint = if wanted == "seed" {
                " (seeds are set with --seeds and the base --seed)"
            } else {
                ""
            };
            Error::invalid(
                "grid",
                format!(
                    "unknown parameter `{wanted}`{hint}; valid: {}",
                    valid.join(", ")
                ),
            )
        })
}

/// One varying parameter and its values in the order given.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Axis {
    /// Canonical field name.
    pub name: String,
    /// The values, in the order given.
    pub values: Vec<Value>,
}

impl Axis {
    /// Numeric values (`None` for a choice axis).
    pub fn numbers(&self) -> Option<Vec<f64>> {
        self.values.iter().map(Value::as_f64).collect()
    }
}

/// Number of decimals written in a number's text (`2.5` → 1, `1e-3` → 3, `100` → 0).
fn decimals(text: &str) -> usize {
    let lower = text.trim().to_ascii_lowercase();
    let (mantissa, exponent) = match lower.split_once('e') {
        Some((m, e)) => (m.to_string(), e.parse::<i64>().unwrap_or(0)),
        None => (lower.clone(), 0),
    };
    let frac = mantissa.split_once('.').map_or(0, |(_, f)| f.len()) as i64;
    (frac - exponent).clamp(0, 15) as usize
}

fn parse_number(name: &str, text: &str) -> Result<f64> {
    let v: f64 = text
        .trim()
        .parse()
        .map_err(|_| Error::invalid(name, format!("`{text}` is not a number")))?;
    if !v.is_finite() {
        return Err(Error::invalid(
            name,
            format!("`{text}` is not a finite number"),
        ));
    }
    Ok(v)
}

/// A number as the JSON value of a parameter of `kind`.
fn number_value(param: &Parameter, v: f64, text: &str) -> Result<Value> {
    match param.kind {
        Kind::Integer => {
            if v.fract() != 0.0 || !(0.0..=9.0e15).contains(&v) {
                return Err(Error::invalid(
                    param.field,
                    format!("`{text}` is not a non-negative whole number"),
                ));
            }
            Ok(Value::from(v as u64))
        }
        Kind::Real => Ok(Value::from(v)),
        Kind::Choice(choices) => Err(Error::invalid(
            param.field,
            format!("`{text}` is not one of {}", choices.join(", ")),
        )),
    }
}

/// Values of one item of a list (a number or a choice name).
fn item_value(param: &Parameter, text: &str) -> Result<Value> {
    let text = text.trim();
    match param.kind {
        Kind::Choice(choices) => {
            let lower = text.to_ascii_lowercase().replace('_', "-");
            if choices.contains(&lower.as_str()) {
                Ok(Value::from(lower))
            } else {
                Err(Error::invalid(
                    param.field,
                    format!("`{text}` is not one of {}", choices.join(", ")),
                ))
            }
        }
        _ => number_value(param, parse_number(param.field, text)?, text),
    }
}

/// Expands `start:stop:step`. The count is `round((stop - start) / step) + 1` when `stop` lands
/// on the grid (within 1e-9 of a step), `floor(...) + 1` otherwise; values are `start + i step`
/// rounded to the decimals written in `start` and `step`, so `0:0.3:0.1` gives 0, 0.1, 0.2, 0.3.
fn expand_range(param: &Parameter, text: &str) -> Result<Vec<Value>> {
    let parts: [&str; 3] = range_parts(param, text, "a range is start:stop:step")?;
    let (start, stop, step) = (
        parse_number(param.field, parts[0])?,
        parse_number(param.field, parts[1])?,
        parse_number(param.field, parts[2])?,
    );
    if step == 0.0 {
        return Err(Error::invalid(
            param.field,
            format!("`{text}`: the step must not be zero"),
        ));
    }
    let span = (stop - start) / step;
    if span < -1e-9 {
        return Err(Error::invalid(
            param.field,
            format!("`{text}`: empty range (the step {step} goes away from stop {stop})"),
        ));
    }
    let nearest = span.round();
    let count = if (span - nearest).abs() <= 1e-9 * nearest.abs().max(1.0) {
        nearest
    } else {
        span.floor()
    } + 1.0;
    if count > 1.0e6 {
        return Err(Error::invalid(
            param.field,
            format!("`{text}` expands to {count} values (at most 1000000 per axis)"),
        ));
    }
    let places = decimals(parts[0]).max(decimals(parts[2]));
    let factor = 10f64.powi(places as i32);
    (0..count as usize)
        .map(|i| {
            let raw = start + i as f64 * step;
            let v = (raw * factor).round() / factor;
            let v = if (v - raw).abs() <= 1e-9 * step.abs() {
                v
            } else {
                raw
            };
            number_value(param, v, &format!("{v} (from {text})"))
        })
        .collect()
}

/// The `N` colon-separated parts of a range; any other count is refused with `form`, the
/// syntax the range should have had.
fn range_parts<'t, const N: usize>(
    param: &Parameter,
    text: &'t str,
    form: &str,
) -> Result<[&'t str; N]> {
    let parts: Vec<&str> = text.split(':').collect();
    parts
        .try_into()
        .map_err(|_| Error::invalid(param.field, format!("`{text}`: {form}")))
}

/// `start:stop:step` as real numbers by the rule of a sweep's axes (`expand_range`), for the
/// ranges of options outside a sweep (`benign finetune --eta-grid`); errors name `option`.
pub fn parse_real_range(option: &'static str, text: &str) -> Result<Vec<f64>> {
    let param = Parameter {
        field: option,
        aliases: &[],
        kind: Kind::Real,
    };
    let values = expand_range(&param, text.trim())?;
    Ok(values
        .iter()
        .map(|v| v.as_f64().expect("a real range holds numbers"))
        .collect())
}

/// `log:START:STOP:COUNT`: COUNT values log-spaced from START to STOP (both included, both
/// positive), `START (STOP/START)^(i/(COUNT-1))`, rounded to whole numbers for integer
/// parameters (where two would round alike the axis is refused: fewer values were asked for
/// than given).
fn expand_log_range(param: &Parameter, text: &str) -> Result<Vec<Value>> {
    let parts: [&str; 4] = range_parts(param, text, "a log range is log:start:stop:count")?;
    let (start, stop) = (
        parse_number(param.field, parts[1])?,
        parse_number(param.field, parts[2])?,
    );
    let count: usize = parts[3]
        .trim()
        .parse()
        .ok()
        .filter(|c| (1..=1_000_000).contains(c))
        .ok_or_else(|| {
            Error::invalid(
                param.field,
                format!(
                    "`{text}`: count `{}` must be a whole number in 1..=1000000",
                    parts[3]
                ),
            )
        })?;
    if !(start > 0.0 && stop >= start) {
        return Err(Error::invalid(
            param.field,
            format!("`{text}`: a log range needs 0 < start <= stop"),
        ));
    }
    let values: Vec<Value> = (0..count)
        .map(|i| {
            let t = if count == 1 {
                0.0
            } else {
                i as f64 / (count - 1) as f64
            };
            let raw = 10f64.powf(start.log10() + t * (stop.log10() - start.log10()));
            let v = match param.kind {
                Kind::Integer => raw.round(),
                _ => raw,
            };
            number_value(param, v, &format!("{v} (from {text})"))
        })
        .collect::<Result<_>>()?;
    if values.windows(2).any(|w| w[0] == w[1]) {
        return Err(Error::invalid(
            param.field,
            format!(
                "`{text}`: {count} whole numbers between {start} and {stop} repeat; ask for fewer"
            ),
        ));
    }
    Ok(values)
}

/// Parses one axis from its text form: `start:stop:step`, `log:start:stop:count` or a
/// comma-separated list.
pub fn parse_axis_values(param: &Parameter, text: &str) -> Result<Vec<Value>> {
    let text = text.trim();
    if text.is_empty() {
        return Err(Error::invalid(param.field, "no values given"));
    }
    if let Some(rest) = text.strip_prefix("log:") {
        if matches!(param.kind, Kind::Choice(_)) {
            return Err(Error::invalid(
                param.field,
                "a range needs a numeric parameter",
            ));
        }
        return expand_log_range(param, &format!("log:{rest}"));
    }
    if text.contains(':') {
        if matches!(param.kind, Kind::Choice(_)) {
            return Err(Error::invalid(
                param.field,
                "a range needs a numeric parameter",
            ));
        }
        expand_range(param, text)
    } else {
        text.split(',')
            .map(|item| item_value(param, item))
            .collect()
    }
}

/// Parses `NAME=VALUES` (the `--grid` option).
pub fn parse_axis(spec: &str) -> Result<Axis> {
    let (name, values) = spec.split_once('=').ok_or_else(|| {
        Error::invalid(
            "grid",
            format!("`{spec}`: expected NAME=start:stop:step, NAME=log:start:stop:count or NAME=v1,v2,..."),
        )
    })?;
    let param = parameter(name)?;
    Ok(Axis {
        name: param.field.to_string(),
        values: parse_axis_values(param, values)?,
    })
}

/// An axis from a TOML value: a string (range or list), an array, or a single number/string.
pub fn axis_from_toml(name: &str, value: &toml::Value) -> Result<Axis> {
    let param = parameter(name)?;
    let values = match value {
        toml::Value::String(s) => parse_axis_values(param, s)?,
        toml::Value::Array(items) => items
            .iter()
            .map(|item| match item {
                toml::Value::Integer(i) => number_value(param, *i as f64, &i.to_string()),
                toml::Value::Float(f) => number_value(param, *f, &f.to_string()),
                toml::Value::String(s) => item_value(param, s),
                other => Err(Error::invalid(
                    param.field,
                    format!("unsupported value {other}"),
                )),
            })
            .collect::<Result<_>>()?,
        toml::Value::Integer(i) => vec![number_value(param, *i as f64, &i.to_string())?],
        toml::Value::Float(f) => vec![number_value(param, *f, &f.to_string())?],
        other => {
            return Err(Error::invalid(
                param.field,
                format!("unsupported value {other}"),
            ))
        }
    };
    if values.is_empty() {
        return Err(Error::invalid(param.field, "no values given"));
    }
    Ok(Axis {
        name: param.field.to_string(),
        values,
    })
}

/// Everything that determines the set of runs of a sweep (saved as `sweep.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepSpec {
    /// Format version of this file.
    pub version: u32,
    /// The configuration every run starts from; its `seed` is the base seed.
    pub base: RunConfig,
    /// Varying parameters in canonical order.
    pub axes: Vec<Axis>,
    /// Seeds per grid cell.
    pub seeds: usize,
    /// Share the noise and `W_0` across cells that differ only in signal_norm, rho or eta.
    pub common_random_numbers: bool,
    /// How each run's learning rate follows its d (absent from sweep.json when fixed).
    #[serde(default, skip_serializing_if = "StepScaling::is_fixed")]
    pub step_scaling: StepScaling,
}

/// One run of a sweep.
#[derive(Clone, Debug)]
pub struct PlannedRun {
    /// Position in the canonical expansion.
    pub index: usize,
    /// Identifier of the run: a hash of its parameters and seed index (16 hex digits), stable
    /// across sweeps that contain it.
    pub id: String,
    /// The group of runs that share a start-up (its own id when draws are independent).
    pub column: String,
    /// Which of the cell's seeds, from 0.
    pub seed_index: usize,
    /// The values of the varying parameters, by canonical name.
    pub params: BTreeMap<String, Value>,
    /// The complete configuration, seed included.
    pub config: RunConfig,
}

pub use crate::seed::fnv1a;

/// `config` with `updates` applied through its JSON form (so any field can be set).
fn apply(base: &Value, updates: &BTreeMap<String, Value>) -> Result<RunConfig> {
    let mut value = base.clone();
    let map = value
        .as_object_mut()
        .expect("RunConfig serializes to an object");
    for (k, v) in updates {
        map.insert(k.clone(), v.clone());
    }
    serde_json::from_value(value).map_err(|e| {
        let names: Vec<String> = updates.iter().map(|(k, v)| format!("{k}={v}")).collect();
        Error::invalid("grid", format!("{}: {e}", names.join(" ")))
    })
}

/// Canonical text of a value for ids: `Value`'s JSON with sorted keys (serde_json's default map).
fn id_of(value: &Value) -> String {
    format!("{:016x}", fnv1a(value.to_string().as_bytes()))
}

impl SweepSpec {
    /// Builds a spec: axes sorted into canonical order; a parameter given twice is an error.
    pub fn new(
        base: RunConfig,
        mut axes: Vec<Axis>,
        seeds: usize,
        common_random_numbers: bool,
    ) -> Result<Self> {
        if seeds == 0 {
            return Err(Error::invalid("seeds", "must be at least 1, got 0"));
        }
        let mut seen = HashSet::new();
        for axis in &axes {
            if !seen.insert(axis.name.clone()) {
                return Err(Error::invalid(
                    "grid",
                    format!("parameter `{}` is given twice", axis.name),
                ));
            }
            let mut distinct = HashSet::new();
            for v in &axis.values {
                if !distinct.insert(v.to_string()) {
                    return Err(Error::invalid(
                        &axis.name,
                        format!("value {v} appears twice"),
                    ));
                }
            }
        }
        let rank = |name: &str| {
            PARAMETERS
                .iter()
                .position(|p| p.field == name)
                .unwrap_or(usize::MAX)
        };
        axes.sort_by_key(|a| rank(&a.name));
        let spec = SweepSpec {
            version: 1,
            base,
            axes,
            seeds,
            common_random_numbers,
            step_scaling: StepScaling::Fixed,
        };
        spec.checked_len()?;
        Ok(spec)
    }

    /// Number of grid cells (the product of the axes' lengths), `None` beyond `usize`.
    fn cells(&self) -> Option<usize> {
        self.axes
            .iter()
            .try_fold(1usize, |n, a| n.checked_mul(a.values.len()))
    }

    /// Number of runs, or [`Error::InvalidOption`] when it exceeds [`MAX_RUNS`] (checked with
    /// overflow-free arithmetic, before anything is allocated for the runs).
    pub fn checked_len(&self) -> Result<usize> {
        let cells = self.cells();
        let total = cells.and_then(|c| c.checked_mul(self.seeds));
        match total {
            Some(total) if total <= MAX_RUNS => Ok(total),
            _ => {
                let cells_text =
                    cells.map_or_else(|| format!("more than {}", usize::MAX), |c| c.to_string());
                let total_text =
                    total.map_or_else(|| format!("more than {}", usize::MAX), |t| t.to_string());
                // Name the grid when it alone is too large, else the seeds.
                let field = if cells.is_none_or(|c| c > MAX_RUNS) {
                    "grid"
                } else {
                    "seeds"
                };
                Err(Error::invalid(
                    field,
                    format!(
                        "the sweep has {cells_text} grid cells x {} seeds = {total_text} runs, \
                         above the limit of {MAX_RUNS} runs; use fewer or shorter --grid axes or \
                         fewer --seeds, or split the study into several sweeps",
                        self.seeds
                    ),
                ))
            }
        }
    }

    /// The axis of a name, if it varies.
    pub fn axis(&self, name: &str) -> Option<&Axis> {
        self.axes.iter().find(|a| a.name == name)
    }

    /// Number of runs (saturating at `usize::MAX`; [`Self::checked_len`] refuses more than
    /// [`MAX_RUNS`]).
    pub fn len(&self) -> usize {
        self.cells()
            .and_then(|c| c.checked_mul(self.seeds))
            .unwrap_or(usize::MAX)
    }

    /// Whether the sweep has no run.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every run in canonical order (first axis slowest, seeds fastest), each configuration
    /// validated. Errors name the parameter and the grid point. A spec of more than
    /// [`MAX_RUNS`] runs (e.g. read from a `sweep.json`) is refused before allocating.
    pub fn expand(&self) -> Result<Vec<PlannedRun>> {
        let total = self.checked_len()?;
        if self.seeds == 0 {
            return Err(Error::invalid("seeds", "must be at least 1, got 0"));
        }
        self.base.validate()?;
        if self.common_random_numbers {
            if self.base.model != crate::synthetic::ModelKind::Attention {
                return Err(Error::invalid(
                    "common-random-numbers",
                    "applies to the attention model only (the encoder has no shared start-up)",
                ));
            }
            if self.base.trainer != crate::synthetic::TrainerKind::Subspace {
                return Err(Error::invalid(
                    "common-random-numbers",
                    "needs the subspace trainer (the shared start-up is its projection)",
                ));
            }
            if self.axis("trainer").is_some() {
                return Err(Error::invalid(
                    "common-random-numbers",
                    "cannot vary the trainer",
                ));
            }
            if self.base.reference_compat {
                return Err(Error::invalid(
                    "common-random-numbers",
                    "is not available in reference-compatible mode (its test set reuses the training noise)",
                ));
            }
        }
        let base_value = serde_json::to_value(&self.base).expect("RunConfig serializes");
        let mut runs = Vec::with_capacity(total);
        let mut ids = HashSet::with_capacity(total);
        let mut position = vec![0usize; self.axes.len()];
        let cells = total / self.seeds;
        for cell in 0..cells {
            // Mixed-radix digits of the cell index, last axis fastest.
            let mut rest = cell;
            for (k, axis) in self.axes.iter().enumerate().rev() {
                position[k] = rest % axis.values.len();
                rest /= axis.values.len();
            }
            let params: BTreeMap<String, Value> = self
                .axes
                .iter()
                .zip(&position)
                .map(|(a, &i)| (a.name.clone(), a.values[i].clone()))
                .collect();
            let mut config = apply(&base_value, &params)?;
            config.lr = self.step_scaling.lr(config.lr, config.dim);
            let mut canonical = serde_json::to_value(&config).expect("RunConfig serializes");
            let map = canonical.as_object_mut().expect("object");
            map.remove("seed");
            if self.common_random_numbers {
                map.insert("common_random_numbers".into(), Value::from(true));
            }
            for seed_index in 0..self.seeds {
                let mut keyed = canonical.clone();
                keyed
                    .as_object_mut()
                    .expect("object")
                    .insert("seed_index".into(), Value::from(seed_index));
                let id = id_of(&keyed);
                let column = if self.common_random_numbers {
                    let map = keyed.as_object_mut().expect("object");
                    for name in SIGNAL_PARAMETERS {
                        map.remove(*name);
                    }
                    id_of(&keyed)
                } else {
                    id.clone()
                };
                let mut config = config.clone();
                config.seed = mix_seed(self.base.seed, &column);
                config.validate().map_err(|e| match e {
                    Error::InvalidOption { field, message } => {
                        let at: Vec<String> =
                            params.iter().map(|(k, v)| format!("{k}={v}")).collect();
                        Error::invalid(field, format!("{message} (at grid point {})", at.join(" ")))
                    }
                    other => other,
                })?;
                if !ids.insert(id.clone()) {
                    return Err(Error::invalid(
                        "grid",
                        format!("two runs share the id {id}"),
                    ));
                }
                runs.push(PlannedRun {
                    index: runs.len(),
                    id,
                    column,
                    seed_index,
                    params: params.clone(),
                    config,
                });
            }
        }
        Ok(runs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(spec: &str) -> Vec<f64> {
        parse_axis(spec).unwrap().numbers().unwrap()
    }

    #[test]
    fn log_ranges_include_both_ends_and_refuse_repeats() {
        let d = parse_axis("d=log:1e3:1e7:5").unwrap();
        let want: Vec<Value> = [1000u64, 10_000, 100_000, 1_000_000, 10_000_000]
            .into_iter()
            .map(Value::from)
            .collect();
        assert_eq!(d.values, want);
        let d = parse_axis("d=log:1000:1e7:25").unwrap();
        assert_eq!(d.values.len(), 25);
        assert_eq!(d.values[24], Value::from(10_000_000u64));
        // 10^(4 * 6/24) = 10: exact values stay exact.
        assert_eq!(d.values[6], Value::from(10_000u64));
        let mu = parse_axis("signal_norm=log:0.1:10:3").unwrap();
        let reals: Vec<f64> = mu.values.iter().map(|v| v.as_f64().unwrap()).collect();
        assert!(
            (reals[1] - 1.0).abs() < 1e-12 && (reals[2] - 10.0).abs() < 1e-12,
            "{reals:?}"
        );
        for bad in [
            "d=log:1:5:10",
            "d=log:0:10:3",
            "d=log:10:1:3",
            "d=log:1:10",
            "d=log:1:10:0",
        ] {
            assert!(parse_axis(bad).is_err(), "{bad}");
        }
        assert!(parse_axis("trainer=log:1:2:2").is_err());
    }

    #[test]
    fn per_dim_step_scaling_sets_each_runs_learning_rate() {
        let mut spec = SweepSpec::new(
            RunConfig::default(),
            vec![parse_axis("d=1000,4000").unwrap()],
            1,
            false,
        )
        .unwrap();
        let fixed: Vec<f64> = spec.expand().unwrap().iter().map(|r| r.config.lr).collect();
        assert_eq!(fixed, vec![0.005, 0.005]);
        spec.step_scaling = StepScaling::PerDim;
        let runs = spec.expand().unwrap();
        let scaled: Vec<f64> = runs.iter().map(|r| r.config.lr).collect();
        assert_eq!(scaled, vec![0.01, 0.0025]);
        // Another learning rate is another run: the ids differ from the fixed sweep's.
        let fixed_ids: Vec<String> = {
            spec.step_scaling = StepScaling::Fixed;
            spec.expand().unwrap().into_iter().map(|r| r.id).collect()
        };
        assert!(runs.iter().zip(&fixed_ids).all(|(r, id)| &r.id != id));
        // A fixed spec's sweep.json is unchanged (no step_scaling key), a per-dim one records it.
        assert!(!serde_json::to_string(&spec)
            .unwrap()
            .contains("step_scaling"));
        spec.step_scaling = StepScaling::PerDim;
        let text = serde_json::to_string(&spec).unwrap();
        assert!(text.contains("\"step_scaling\":\"per-dim\""), "{text}");
        let back: SweepSpec = serde_json::from_str(&text).unwrap();
        assert_eq!(back, spec);
    }

    #[test]
    fn ranges_are_inclusive_and_rounding_safe() {
        let d = values("d=250:5000:125");
        assert_eq!(d.len(), 39);
        assert_eq!((d[0], d[38]), (250.0, 5000.0));
        let mu = values("signal_norm=5:100:2.5");
        assert_eq!(mu.len(), 39);
        assert_eq!(mu[1], 7.5);
        assert_eq!(values("eta=0:0.3:0.1"), vec![0.0, 0.1, 0.2, 0.3]);
        assert_eq!(values("eta=0:0.25:0.1"), vec![0.0, 0.1, 0.2]);
        assert_eq!(values("rho=0.3:0.1:-0.1"), vec![0.3, 0.2, 0.1]);
        assert_eq!(values("lr=1e-3:3e-3:1e-3"), vec![0.001, 0.002, 0.003]);
        assert_eq!(values("eta=0,0.1,0.2"), vec![0.0, 0.1, 0.2]);
        assert_eq!(values("n=7:7:1"), vec![7.0]);
    }

    #[test]
    fn bad_specs_name_the_problem() {
        let message = |spec: &str| parse_axis(spec).unwrap_err().to_string();
        assert!(
            message("depth=1,2").contains("valid: dim (d)"),
            "{}",
            message("depth=1,2")
        );
        assert!(message("d=10:5:1").contains("empty range"));
        assert!(message("d=5:10:0").contains("must not be zero"));
        assert!(message("d=2.5").contains("whole number"));
        assert!(message("eta=").contains("no values"));
        assert!(message("eta=a,b").contains("not a number"));
        assert!(message("trainer=fast").contains("dense, subspace"));
        assert!(message("seed=1,2").contains("--seeds"));
    }

    #[test]
    fn expansion_is_canonical_and_ids_are_stable() {
        let axes_a = vec![
            parse_axis("eta=0,0.1").unwrap(),
            parse_axis("d=10,20").unwrap(),
        ];
        let axes_b = vec![
            parse_axis("d=10,20").unwrap(),
            parse_axis("eta=0,0.1").unwrap(),
        ];
        let base = RunConfig {
            steps: 5,
            test_size: 4,
            ..RunConfig::default()
        };
        let a = SweepSpec::new(base.clone(), axes_a, 2, false)
            .unwrap()
            .expand()
            .unwrap();
        let b = SweepSpec::new(base.clone(), axes_b, 2, false)
            .unwrap()
            .expand()
            .unwrap();
        assert_eq!(a.len(), 8);
        let ids = |runs: &[PlannedRun]| runs.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&a), ids(&b));
        // d slowest, then eta, seeds fastest.
        assert_eq!(
            (a[0].config.dim, a[0].config.eta, a[0].seed_index),
            (10, 0.0, 0)
        );
        assert_eq!((a[1].config.dim, a[1].seed_index), (10, 1));
        assert_eq!((a[2].config.eta, a[4].config.dim), (0.1, 20));
        assert_ne!(a[0].config.seed, a[1].config.seed);
        assert!(a.iter().all(|r| r.id.len() == 16));
        // A different base seed changes seeds, not ids.
        let other = SweepSpec::new(
            RunConfig { seed: 7, ..base },
            vec![parse_axis("d=10,20").unwrap()],
            1,
            false,
        )
        .unwrap()
        .expand()
        .unwrap();
        assert_ne!(other[0].config.seed, a[0].config.seed);
    }

    #[test]
    fn init_is_an_axis_and_uniform_keeps_old_ids() {
        let base = RunConfig {
            steps: 5,
            test_size: 4,
            ..RunConfig::default()
        };
        let runs = SweepSpec::new(
            base.clone(),
            vec![parse_axis("init=uniform,gaussian").unwrap()],
            1,
            false,
        )
        .unwrap()
        .expand()
        .unwrap();
        use crate::synthetic::InitKind;
        assert_eq!(runs[0].config.init, InitKind::Uniform);
        assert_eq!(runs[1].config.init, InitKind::Gaussian);
        assert_ne!(runs[0].id, runs[1].id);
        // The default law is omitted from the canonical JSON: the id of a uniform run is the id
        // it had before `init` existed.
        let plain = SweepSpec::new(base, vec![], 1, false)
            .unwrap()
            .expand()
            .unwrap();
        assert_eq!(plain[0].id, runs[0].id);
    }

    #[test]
    fn columns_group_signal_parameters_under_common_random_numbers() {
        let axes = vec![
            parse_axis("d=10,20").unwrap(),
            parse_axis("mu=5,10,15").unwrap(),
        ];
        let runs = SweepSpec::new(RunConfig::default(), axes, 1, true)
            .unwrap()
            .expand()
            .unwrap();
        assert_eq!(runs[0].column, runs[2].column);
        assert_eq!(runs[0].config.seed, runs[2].config.seed);
        assert_ne!(runs[0].column, runs[3].column);
        assert_ne!(runs[0].id, runs[1].id);
    }

    #[test]
    fn invalid_grid_points_are_found_before_running() {
        let axes = vec![parse_axis("eta=0.1,0.6").unwrap()];
        let err = SweepSpec::new(RunConfig::default(), axes, 1, false)
            .unwrap()
            .expand()
            .unwrap_err();
        assert!(
            err.to_string().contains("eta") && err.to_string().contains("0.6"),
            "{err}"
        );
    }

    #[test]
    fn huge_totals_are_refused_before_expanding() {
        let huge = |axes: Vec<Axis>, seeds: usize| {
            SweepSpec::new(RunConfig::default(), axes, seeds, false)
                .unwrap_err()
                .to_string()
        };
        let message = huge(
            vec![
                parse_axis("d=3:900000:1").unwrap(),
                parse_axis("rho=0.001:900:0.001").unwrap(),
            ],
            1,
        );
        assert!(
            message.contains("809998200000") && message.contains("1000000 runs"),
            "{message}"
        );
        let message = huge(Vec::new(), 1_000_000_000_000);
        assert!(message.contains("--seeds"), "{message}");
        // The product overflows 64 bits: still refused, not wrapped around.
        let message = huge(
            vec![
                parse_axis("d=3:900000:1").unwrap(),
                parse_axis("rho=0.001:900:0.001").unwrap(),
            ],
            usize::MAX / 2,
        );
        assert!(message.contains("more than"), "{message}");
        // A spec read from a sweep.json skips `new`: expanding refuses it just the same.
        let spec = SweepSpec {
            version: 1,
            base: RunConfig::default(),
            axes: Vec::new(),
            seeds: usize::MAX,
            common_random_numbers: false,
            step_scaling: StepScaling::Fixed,
        };
        assert!(spec.expand().is_err());
        // At the limit is fine.
        let spec = SweepSpec::new(
            RunConfig::default(),
            vec![parse_axis("d=1:10000:1").unwrap()],
            100,
            false,
        )
        .unwrap();
        assert_eq!(spec.len(), MAX_RUNS);
        assert!(SweepSpec::new(spec.base, spec.axes, 101, false).is_err());
    }
}
