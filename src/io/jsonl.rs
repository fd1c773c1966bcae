//! Append-only JSON-lines files of records, written durably and read back tolerantly.
//!
//! A record is written with one `write` on a file opened for appending, then `fsync`ed, and
//! carries a field that is true only when complete (its last field, so a torn line never
//! parses as complete). A process killed mid-write leaves at most one torn last line, which
//! readers ignore and [`RecordFile::open`] cuts off before appending; lines that are not records
//! at all (a crash of the file system, a stray edit) are moved to `<file>.corrupt` with their line
//! numbers, so the work they stood for is done again and nothing is silently lost.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{Error, Result};

/// One line of a records file.
pub trait Record: Serialize + DeserializeOwned {
    /// Whether the line was written whole (its completeness field).
    fn complete(&self) -> bool;
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::io(path, source)
}

/// Parses a records file's text: complete records and the number of ignored (torn or foreign)
/// lines.
pub fn parse_records<R: Record>(text: &str) -> (Vec<R>, usize) {
    let (records, ignored) = split_records(text);
    (records, ignored.len())
}

/// The complete records of a file's text, and the 1-based numbers of the lines that are not
/// records. Blank lines are neither.
fn split_records<R: Record>(text: &str) -> (Vec<R>, Vec<usize>) {
    let mut records = Vec::new();
    let mut corrupt = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<R>(line) {
            Ok(r) if r.complete() => records.push(r),
            _ => corrupt.push(i + 1),
        }
    }
    (records, corrupt)
}

/// Reads the complete records of a file (missing file: none) and the number of ignored lines.
pub fn read_records<R: Record>(path: &Path) -> Result<(Vec<R>, usize)> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(parse_records(&text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((Vec::new(), 0)),
        Err(source) => Err(Error::io(path, source)),
    }
}

/// Parses every line of a file written whole (not appended to, so a bad line is a fault, not a
/// torn write) as a `T`; the first line that does not parse is an error naming the file and its
/// 1-based line number.
pub fn parse_every_line<'a, T: DeserializeOwned>(
    path: &Path,
    lines: impl Iterator<Item = &'a str>,
) -> Result<Vec<T>> {
    lines
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|e| Error::Format {
                path: path.to_path_buf(),
                message: format!("line {}: {e}", i + 1),
            })
        })
        .collect()
}

/// Moves the corrupt lines of a records file to `<file>.corrupt` (appended, each with its line
/// number), rewrites the file without them, warns, and reopens it.
fn set_aside(
    path: &Path,
    text: &str,
    corrupt: &[usize],
    reopen: impl Fn() -> Result<File>,
) -> Result<File> {
    let mut aside_name = path.as_os_str().to_owned();
    aside_name.push(".corrupt");
    let aside = PathBuf::from(aside_name);
    let mut kept = String::with_capacity(text.len());
    let mut moved = String::new();
    for (i, line) in text.lines().enumerate() {
        if corrupt.contains(&(i + 1)) {
            moved.push_str(&format!("line {}: {line}\n", i + 1));
        } else if !line.trim().is_empty() {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(&aside)
        .and_then(|mut f| f.write_all(moved.as_bytes()).and_then(|()| f.sync_all()))
        .map_err(io_err(&aside))?;
    super::write_atomic(path, kept.as_bytes())?;
    let shown: Vec<String> = corrupt.iter().take(10).map(usize::to_string).collect();
    log::warn!(
        "{}: {} corrupt line(s) ({}{}) moved to {}; their work will be done again",
        path.display(),
        corrupt.len(),
        shown.join(", "),
        if corrupt.len() > 10 { ", ..." } else { "" },
        aside.display()
    );
    reopen()
}

/// An append-only file of records of type `R`.
pub struct RecordFile<R> {
    path: PathBuf,
    file: File,
    records: PhantomData<fn(&R)>,
}

impl<R: Record> RecordFile<R> {
    /// Opens (creating) `path` for appending, after cutting a torn last line (bytes after the
    /// last newline) so the next record starts on a line of its own and setting corrupt lines
    /// aside. Returns the file and the complete records already in it.
    pub fn open(path: &Path) -> Result<(Self, Vec<R>)> {
        let open = || {
            OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .open(path)
                .map_err(io_err(path))
        };
        let mut file = open()?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io_err(path))?;
        let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
        if keep < bytes.len() {
            file.set_len(keep as u64).map_err(io_err(path))?;
            file.sync_all().map_err(io_err(path))?;
        }
        let text = String::from_utf8_lossy(&bytes[..keep]).into_owned();
        let (records, corrupt) = split_records(&text);
        if !corrupt.is_empty() {
            file = set_aside(path, &text, &corrupt, open)?;
        }
        file.seek(SeekFrom::End(0)).map_err(io_err(path))?;
        Ok((
            RecordFile {
                path: path.to_path_buf(),
                file,
                records: PhantomData,
            },
            records,
        ))
    }

    /// Appends one record as a single write, then fsyncs.
    pub fn append(&mut self, record: &R) -> Result<()> {
        let mut line = serde_json::to_vec(record).map_err(|e| Error::Format {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        line.push(b'\n');
        self.file.write_all(&line).map_err(io_err(&self.path))?;
        self.file.sync_data().map_err(io_err(&self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_every_line_reads_each_line_and_names_the_first_bad_one() {
        let path = Path::new("cells/x.jsonl");
        let read: Vec<u32> = parse_every_line(path, "1\n2\n3".lines()).unwrap();
        assert_eq!(read, [1, 2, 3]);
        let limited: Vec<u32> = parse_every_line(path, "1\n2\nbad".lines().take(2)).unwrap();
        assert_eq!(limited, [1, 2]);
        match parse_every_line::<u32>(path, "1\n{\n\"x\"".lines()) {
            Err(Error::Format {
                path: named,
                message,
            }) => {
                assert_eq!(named, path);
                assert!(message.starts_with("line 2: "), "{message}");
            }
            other => panic!("expected a format error, got {other:?}"),
        }
    }
}
