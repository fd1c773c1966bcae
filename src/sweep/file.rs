//! Sweep files: the TOML form of a sweep (`benign sweep FILE`).
//!
//! ```toml
//! out = "runs/figure5"
//! seeds = 4
//! common_random_numbers = true
//! [base]          # run options, by RunConfig field name or grid alias
//! steps = 2000
//! [grid]          # axes, in any of the forms `--grid` takes, or TOML arrays
//! d = "250:5000:125"
//! signal_norm = [5, 10, 20]
//! ```
//!
//! Every key is checked here; the axes go through [`grid`]'s one parser, so a file and the
//! command line read the same text the same way.

use std::path::{Path, PathBuf};

use crate::sweep::grid::{self, Axis};
use crate::synthetic::RunConfig;
use crate::{Error, Result};

/// The parts of a sweep file, each absent when the file does not set it.
#[derive(Clone, Debug, Default)]
pub struct SweepFile {
    /// `out = "DIR"`: the output folder.
    pub out: Option<PathBuf>,
    /// `seeds = N`: seeds per cell.
    pub seeds: Option<usize>,
    /// `common_random_numbers = true`: the cells of a column share their draws.
    pub common_random_numbers: bool,
    /// The `[base]` table of run options.
    pub base: Option<toml::Table>,
    /// The `[grid]` table: one axis per key, in the table's (sorted) key order.
    pub axes: Vec<Axis>,
}

impl SweepFile {
    /// Reads and checks a sweep file; a bad key or value is an invalid `sweep file` naming it.
    pub fn read(path: &Path) -> Result<SweepFile> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            Error::InvalidOption { field, message } if field == "sweep file" => {
                Error::invalid("sweep file", format!("{}: {message}", path.display()))
            }
            other => other,
        })
    }

    /// Parses the text of a sweep file.
    pub fn parse(text: &str) -> Result<SweepFile> {
        let bad = |message: String| Error::invalid("sweep file", message);
        let table: toml::Table =
            toml::from_str(text).map_err(|e| bad(format!("malformed TOML: {e}")))?;
        let mut file = SweepFile::default();
        for (key, value) in table {
            match (key.as_str(), value) {
                ("out", toml::Value::String(s)) => file.out = Some(PathBuf::from(s)),
                ("seeds", toml::Value::Integer(i)) if i >= 0 => file.seeds = Some(i as usize),
                ("common_random_numbers" | "common-random-numbers", toml::Value::Boolean(b)) => {
                    file.common_random_numbers = b;
                }
                ("base", toml::Value::Table(t)) => file.base = Some(t),
                ("grid", toml::Value::Table(t)) => {
                    for (name, v) in t {
                        file.axes.push(grid::axis_from_toml(&name, &v)?);
                    }
                }
                (key, value) => {
                    return Err(bad(format!(
                        "unexpected `{key} = {value}` (valid: out = \"DIR\", seeds = N, \
                         common_random_numbers = bool, [base], [grid])"
                    )))
                }
            }
        }
        Ok(file)
    }

    /// `config` with the `[base]` table applied (keys: field names or the grid's aliases).
    pub fn apply_base(&self, config: RunConfig) -> Result<RunConfig> {
        let Some(table) = &self.base else {
            return Ok(config);
        };
        let mut value = serde_json::to_value(&config).expect("RunConfig serializes");
        let map = value.as_object_mut().expect("RunConfig is an object");
        for (key, v) in table {
            let field = match grid::parameter(key) {
                Ok(p) => p.field.to_string(),
                Err(_) if map.contains_key(key.as_str()) => key.clone(),
                Err(_) => {
                    let fields: Vec<&String> = map.keys().collect();
                    return Err(Error::invalid(
                        "sweep file",
                        format!("[base] has unknown key `{key}`; valid: {fields:?}"),
                    ));
                }
            };
            let v = serde_json::to_value(v)
                .map_err(|e| Error::invalid("sweep file", format!("[base] {key}: {e}")))?;
            map.insert(field, v);
        }
        serde_json::from_value(value)
            .map_err(|e| Error::invalid("sweep file", format!("[base]: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_sets_its_keys_and_the_base_by_field_or_alias() {
        let file = SweepFile::parse(
            "out = \"o\"\nseeds = 3\ncommon-random-numbers = true\n\
             [base]\nsteps = 50\nd = 300\n[grid]\nsignal_norm = \"5:15:5\"\nn = [10, 20]\n",
        )
        .unwrap();
        assert_eq!(file.out, Some(PathBuf::from("o")));
        assert_eq!(file.seeds, Some(3));
        assert!(file.common_random_numbers);
        // A TOML table's keys come in sorted order (`n` before `signal_norm`), as they always
        // have: the axes' order is the table's, with aliases resolved.
        let names: Vec<&str> = file.axes.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["samples", "signal_norm"]);
        assert_eq!(
            file.axes[1],
            grid::parse_axis("signal_norm=5:15:5").unwrap()
        );
        let config = file.apply_base(RunConfig::default()).unwrap();
        assert_eq!((config.steps, config.dim), (50, 300));
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        for (text, named) in [
            ("outt = \"o\"", "outt"),
            ("seeds = -1", "seeds"),
            ("[base]\nwidth = 3", "width"),
            ("[grid]\nwidth = \"1,2\"", "width"),
        ] {
            let err = SweepFile::parse(text)
                .and_then(|f| f.apply_base(RunConfig::default()))
                .unwrap_err();
            assert_eq!(err.exit_code(), 2, "{text}");
            assert!(err.to_string().contains(named), "{text}: {err}");
        }
    }
}
