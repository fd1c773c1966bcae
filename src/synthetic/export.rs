//! The data of a run as .npy files (`benign data export`) and back (`benign run --data`).
//!
//! Files (/work/notes/shared_io_plot.md): `train_x.npy` (n, T, d), `train_y.npy` (n,) observed
//! labels, `train_y_clean.npy` (n,), `train_noisy.npy` bool (n,), `test_x.npy` (m, T, d),
//! `test_y.npy` (m,), `w0.npy` (d, d), `nu.npy` (d,), all f64, and `config.json`.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

use super::config::RunConfig;
use super::data::{training_set, Signals, TestSource, TrainSet};
use super::dense::available_memory_bytes;
use super::init::InitSource;
use crate::io::{self, npy};
use crate::rundir::{self, JobDir, JobSpec, Reuse};

/// A data set read from an export directory.
#[derive(Clone, Debug)]
pub struct LoadedData {
    /// The export folder it was read from.
    pub dir: PathBuf,
    /// The training set.
    pub train: TrainSet,
    /// Test tokens, sample-major as in [`TrainSet::tokens`](super::data::TrainSet::tokens).
    pub test_tokens: Vec<f64>,
    /// Clean test labels `+-1`.
    pub test_labels: Vec<f64>,
    /// The fixed head `nu`, length d.
    pub nu: Vec<f64>,
}

/// Writes the data, `W_0` and the resolved configuration of `config` to `dir`.
/// Returns the resolved configuration.
pub fn export_data(mut config: RunConfig, dir: &Path, force: bool) -> Result<RunConfig> {
    config.validate()?;
    let (n, t, d, m) = (config.samples, config.tokens, config.dim, config.test_size);
    let needed = ((d * d + (n + m) * t * d) as u128) * 8;
    if let Some(available) = available_memory_bytes() {
        if needed > available {
            return Err(Error::OutOfMemory {
                what: "exporting W_0 and the data as f64 arrays".into(),
                needed_bytes: needed,
                hint: format!(
                    "only {available} bytes are available; export a smaller --dim or --test-size"
                ),
            });
        }
    }
    let defining = serde_json::to_string(&config).map_err(|e| Error::Format {
        path: dir.join("config.json"),
        message: e.to_string(),
    })?;
    let mut job = JobDir::open(
        dir,
        &JobSpec {
            force,
            ..JobSpec::new(
                "export",
                rundir::job_key(&defining),
                format!(
                    "export n={} T={} d={} test={} seed={}",
                    n, t, d, m, config.seed
                ),
                Reuse::Refuse,
            )
        },
    )?;
    let result = write_export(&mut config, dir);
    job.finish(result.map(|()| config))
}

/// The arrays and config.json of an export, into an opened folder.
fn write_export(config: &mut RunConfig, dir: &Path) -> Result<()> {
    let (n, t, d, m) = (config.samples, config.tokens, config.dim, config.test_size);
    let signals = Signals::new(config);
    let train = training_set(config, &signals);
    config.resolve(&train.noisy);
    npy::write_npy(&dir.join("train_x.npy"), &[n, t, d], &train.tokens)?;
    npy::write_npy(&dir.join("train_y.npy"), &[n], &train.labels)?;
    npy::write_npy(&dir.join("train_y_clean.npy"), &[n], &train.clean_labels)?;
    npy::write_npy(&dir.join("train_noisy.npy"), &[n], &train.noisy)?;
    npy::write_npy(&dir.join("nu.npy"), &[d], &signals.nu)?;
    let test = TestSource::generated(config, signals);
    let test_x = test.materialise(t * d);
    npy::write_npy(&dir.join("test_x.npy"), &[m, t, d], &test_x)?;
    drop(test_x);
    npy::write_npy(&dir.join("test_y.npy"), &[m], &test.labels())?;
    let w0: Vec<f64> = InitSource::from_config(config).matrix();
    npy::write_npy(&dir.join("w0.npy"), &[d, d], &w0)?;
    io::write_json_atomic(&dir.join("config.json"), &*config)
}

fn read_shaped(dir: &Path, name: &str, dims: usize) -> Result<(Vec<usize>, Vec<f64>)> {
    let path = dir.join(name);
    let (shape, values) = npy::read_npy_f64(&path)?;
    if shape.len() != dims {
        return Err(Error::Format {
            path,
            message: format!("expected {dims} dimensions, found shape {shape:?}"),
        });
    }
    Ok((shape, values))
}

/// Reads a one-dimensional array that must have `len` entries; `describe` words a mismatch
/// from the length found.
fn read_vector(
    dir: &Path,
    name: &str,
    len: usize,
    describe: impl FnOnce(usize) -> String,
) -> Result<Vec<f64>> {
    let (shape, values) = read_shaped(dir, name, 1)?;
    if shape[0] != len {
        return Err(mismatch(dir, name, describe(shape[0])));
    }
    Ok(values)
}

fn mismatch(dir: &Path, name: &str, message: String) -> Error {
    Error::Format {
        path: dir.join(name),
        message,
    }
}

/// Reads an export directory (`train_y_clean.npy` is optional: without it no sample is noisy).
pub fn load_data(dir: &Path) -> Result<LoadedData> {
    let (xs, train_x) = read_shaped(dir, "train_x.npy", 3)?;
    let (n, t, d) = (xs[0], xs[1], xs[2]);
    let labels_for =
        |samples: usize| move |len: usize| format!("{len} labels for {samples} samples");
    let train_y = read_vector(dir, "train_y.npy", n, labels_for(n))?;
    let clean = if dir.join("train_y_clean.npy").exists() {
        read_vector(dir, "train_y_clean.npy", n, labels_for(n))?
    } else {
        train_y.clone()
    };
    let (ts, test_x) = read_shaped(dir, "test_x.npy", 3)?;
    if ts[1] != t || ts[2] != d {
        return Err(mismatch(
            dir,
            "test_x.npy",
            format!("shape {ts:?} does not match training (_, {t}, {d})"),
        ));
    }
    let test_y = read_vector(dir, "test_y.npy", ts[0], labels_for(ts[0]))?;
    let nu = read_vector(dir, "nu.npy", d, |len| {
        format!("{len} entries, tokens have dimension {d}")
    })?;
    for (name, labels) in [
        ("train_y.npy", &train_y),
        ("train_y_clean.npy", &clean),
        ("test_y.npy", &test_y),
    ] {
        if labels.iter().any(|&y| y != 1.0 && y != -1.0) {
            return Err(mismatch(dir, name, "labels must be +1 or -1".into()));
        }
    }
    if let Some(bad) = train_x
        .iter()
        .chain(&test_x)
        .chain(&nu)
        .find(|v| !v.is_finite())
    {
        return Err(mismatch(
            dir,
            "train_x.npy",
            format!("non-finite value {bad} in the data"),
        ));
    }
    let noisy = train_y.iter().zip(&clean).map(|(a, b)| a != b).collect();
    Ok(LoadedData {
        dir: dir.to_path_buf(),
        train: TrainSet {
            samples: n,
            tokens_per_sample: t,
            dim: d,
            tokens: train_x,
            labels: train_y,
            clean_labels: clean,
            noisy,
        },
        test_tokens: test_x,
        test_labels: test_y,
        nu,
    })
}

/// Reads a `W_0` (d x d) from a .npy file.
pub fn load_init(path: &Path) -> Result<InitSource> {
    let (shape, values) = npy::read_npy_f64(path)?;
    if shape.len() != 2 || shape[0] != shape[1] {
        return Err(Error::Format {
            path: path.to_path_buf(),
            message: format!("W_0 must be a square matrix, found shape {shape:?}"),
        });
    }
    if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
        return Err(Error::Format {
            path: path.to_path_buf(),
            message: format!("non-finite entry {bad}"),
        });
    }
    Ok(InitSource::Matrix {
        dim: shape[0],
        values,
    })
}
