//! Files the engine writes and reads: atomic writes, JSON, CSV cells, and NumPy's `.npy` arrays.
//!
//! Every output goes through [`write_atomic_with`]: the bytes land in a temporary file next to
//! the destination (same directory, hence same file system), which is flushed, fsynced and then
//! renamed over the destination. A reader therefore sees either the old file or the complete new
//! one, never a half-written one, even if the process is killed mid-write.

pub mod jsonl;
pub mod npy;
pub mod table;

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Error, Result};

/// Distinguishes temporary files of concurrent writes from the same process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// `path` opened for reading, with its length in bytes: what a reader checks a header's sizes
/// against before it allocates anything. Either failure is an I/O error naming the file.
pub fn open_with_len(path: &Path) -> Result<(File, u64)> {
    let file = File::open(path).map_err(|source| Error::io(path, source))?;
    let len = file
        .metadata()
        .map_err(|source| Error::io(path, source))?
        .len();
    Ok((file, len))
}

/// Reads a JSON file into `D`; a missing or unreadable file is an I/O error naming it, bad JSON a
/// format error naming it.
pub fn read_json<D: serde::de::DeserializeOwned>(path: &Path) -> Result<D> {
    let text = fs::read_to_string(path).map_err(|source| Error::io(path, source))?;
    serde_json::from_str(&text).map_err(|e| Error::Format {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |out| out.write_all(bytes))
}

/// Same as [`write_atomic`], streaming: the closure writes into a buffered writer over the
/// temporary file. The parent directory is created if missing. On any error the temporary file
/// is removed and the destination is left untouched.
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    let file_name = path.file_name().ok_or_else(|| {
        Error::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the output path does not name a file",
            ),
        )
    })?;
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;

    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(file_name);
    temp_name.push(format!(
        ".tmp-{}-{}",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let temp_path = dir.join(temp_name);

    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp_path)
        .map_err(|e| Error::io(&temp_path, e))?;
    let outcome = fill_and_sync(file, write).and_then(|()| fs::rename(&temp_path, path));
    if let Err(source) = outcome {
        // Best effort: the write already failed, a failure to clean up adds nothing useful.
        let _ = fs::remove_file(&temp_path);
        return Err(Error::io(path, source));
    }
    sync_directory(&dir);
    Ok(())
}

fn fill_and_sync(
    file: File,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut out = BufWriter::with_capacity(1 << 16, file);
    write(&mut out)?;
    out.flush()?;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()
}

/// Makes the rename itself durable. Failure only weakens durability after a power loss (the
/// file content is already synced), so it is not reported.
fn sync_directory(dir: &Path) {
    #[cfg(unix)]
    if let Ok(handle) = File::open(dir) {
        let _ = handle.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// Pretty JSON of any `Serialize` value (with a trailing newline), written atomically.
pub fn write_json_atomic<S: serde::Serialize>(path: &Path, value: &S) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| Error::Format {
        path: path.to_path_buf(),
        message: format!("cannot serialize to JSON: {e}"),
    })?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// A float as a CSV cell that every reader loads back as the same float, and as a float: Rust's
/// `Debug` form, the shortest text that round-trips, always with a `.` or an exponent (`5.0`,
/// not `5`, so pandas keeps a float column even when every value is whole; `1e-7`, `1e20`),
/// `NaN` for not-a-number and `inf` / `-inf` for the infinities (pandas, NumPy and Python's
/// `float` read all three). A missing value is the empty cell, written by the caller: this
/// takes an `f64`, never an `Option`.
pub fn float_cell(v: f64) -> String {
    format!("{v:?}")
}

/// An empty directory for one test, `benign-{module}-{name}-{pid}` under the system's
/// temporary directory: what a previous run left there is removed first. `module` and `name`
/// keep the tests of one process, which run in parallel, apart.
#[cfg(test)]
pub(crate) fn empty_scratch_dir(module: &str, name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("benign-{module}-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("benign-io-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-"))
            .collect()
    }

    #[test]
    fn writes_replace_and_create_parent() {
        let dir = scratch_dir("replace");
        let path = dir.join("nested/out.txt");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        assert!(leftovers(&dir.join("nested")).is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn failed_write_keeps_old_file_and_removes_temp() {
        let dir = scratch_dir("fail");
        let path = dir.join("out.txt");
        write_atomic(&path, b"old").unwrap();
        let err = write_atomic_with(&path, |out| {
            out.write_all(b"partial")?;
            Err(std::io::Error::other("simulated failure"))
        })
        .unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
        assert!(err.to_string().contains("simulated failure"), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert!(leftovers(&dir).is_empty(), "{:?}", leftovers(&dir));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn concurrent_writers_leave_one_complete_version() {
        let dir = scratch_dir("concurrent");
        let path = dir.join("shared.bin");
        std::thread::scope(|scope| {
            for k in 0..8u8 {
                let path = &path;
                scope.spawn(move || write_atomic(path, &vec![k; 1 << 16]).unwrap());
            }
        });
        let bytes = fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 1 << 16);
        assert!(bytes.iter().all(|&b| b == bytes[0]), "a torn write");
        assert!(leftovers(&dir).is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn json_is_pretty_and_complete() {
        let dir = scratch_dir("json");
        let path = dir.join("v.json");
        write_json_atomic(&path, &serde_json::json!({"lr": 0.005, "steps": 1000})).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(
            text.ends_with("}\n") && text.contains("\n  \"lr\": 0.005"),
            "{text}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn float_cells_stay_floats_and_round_trip() {
        for (value, text) in [
            (5.0, "5.0"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (0.904, "0.904"),
            (1e-7, "1e-7"),
            (1e20, "1e20"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
        ] {
            assert_eq!(float_cell(value), text);
        }
        for value in [
            0.1 + 0.2,
            1.0 / 3.0,
            f64::MIN_POSITIVE,
            f64::MAX,
            123456789.0,
        ] {
            let cell = float_cell(value);
            assert!(cell.contains(['.', 'e']), "{cell} would load as an integer");
            assert_eq!(cell.parse::<f64>().unwrap().to_bits(), value.to_bits());
        }
    }

    #[test]
    fn path_without_file_name_is_an_error() {
        let err = write_atomic(Path::new("/"), b"x").unwrap_err();
        assert!(err.to_string().contains("does not name a file"), "{err}");
    }
}

/// Serde for 64-bit seeds as decimal strings. Derived seeds use all 64 bits, and JSON numbers
/// above 2^53 lose their low digits in jq, JavaScript and pandas' float columns; a string keeps
/// them exact everywhere. Reading also takes a JSON number (files written before, hand-written
/// configurations). Use as `#[serde(with = "crate::io::seed_text")]`.
pub mod seed_text {
    use serde::{de, Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        Number(u64),
        String(String),
    }

    fn parse<E: de::Error>(text: Text) -> Result<u64, E> {
        match text {
            Text::Number(v) => Ok(v),
            Text::String(s) => s.trim().parse().map_err(|_| {
                E::custom(format!(
                    "seed `{s}` is not a whole number from 0 to 18446744073709551615"
                ))
            }),
        }
    }

    /// Writes the seed as a decimal string.
    pub fn serialize<S: Serializer>(seed: &u64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(seed)
    }

    /// Reads a seed written as a number or a decimal string.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        parse(Text::deserialize(deserializer)?)
    }

    /// The same for `Option<u64>` (`null` stays `null`).
    pub mod option {
        use super::{Deserialize, Deserializer, Serializer, Text};

        /// Writes `Some` as a decimal string, `None` as `null`.
        pub fn serialize<S: Serializer>(
            seed: &Option<u64>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            match seed {
                Some(v) => serializer.collect_str(v),
                None => serializer.serialize_none(),
            }
        }

        /// Reads a number, a decimal string or `null`.
        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Option<u64>, D::Error> {
            Option::<Text>::deserialize(deserializer)?
                .map(super::parse)
                .transpose()
        }
    }
}
