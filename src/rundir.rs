//! Output folders: one policy for every command that writes one.
//!
//! A job's folder holds `job.json`, which says what it holds: the kind of job (`run`, `sweep`,
//! `export`, `merge`, `finetune`, `pretrain`), a key (a hash of everything that defines the job),
//! a one-line description, its state (`running`, `complete` or `failed`, with the error) and the
//! provenance of the process that wrote it. [`JobDir::open`] decides what to do with a folder
//! before anything is written into it:
//!
//! | the folder holds | `--force` | what happens |
//! |---|---|---|
//! | nothing (or does not exist) | - | the job starts |
//! | another job, or files that are not a job | no | refused, exit 2, saying what it holds |
//! | another job, or files that are not a job | yes | emptied, then the job starts |
//! | the same job, unfinished (killed, failed) | - | resumed ([`Reuse::Resume`]) or emptied and redone |
//! | the same job, complete | no | resumed (resumable jobs find nothing to do), redone whole ([`Reuse::Replace`], derived outputs), or refused ([`Reuse::Refuse`]) |
//! | the same job, complete | yes | emptied, then redone |
//!
//! A replaced folder is emptied before the new job writes anything, so old and new files never
//! mix; a job that fails is marked `failed` with its error, so partial output never looks
//! complete.
//!
//! **Locks.** A writer holds an exclusive advisory lock (`flock`) on a lock file in the folder
//! for as long as its [`JobDir`] lives; the lock file names the holder's pid, host and start
//! time, and a second writer is refused with that. Jobs that several processes write at once by
//! design (the shards of one sweep) lock one file per writer instead. Locks are released by the
//! kernel when the process dies, so a killed job never leaves a stale lock. Over NFS, `flock`
//! is only as reliable as the server's lock manager.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::provenance::{utc_timestamp, Provenance};
use crate::{io, Error, Result};

/// The marker file of a job folder.
pub const MARKER: &str = "job.json";
/// The default lock file of a job folder.
pub const LOCK: &str = ".benign.lock";

/// What may be done with a folder that already holds the same job, complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reuse {
    /// Continue: a resumable job skips what it has done (sweep, finetune, pretrain).
    Resume,
    /// Redo it whole without asking: the outputs are derived and cheap (merge).
    Replace,
    /// Refuse unless `--force`: redoing would silently overwrite finished results (run, export).
    Refuse,
}

/// The state of the job in a folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// The job is writing (or was killed while writing).
    Running,
    /// The job finished and its outputs are whole.
    Complete,
    /// The job stopped on an error (recorded in the marker).
    Failed,
}

/// `job.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Marker {
    /// The kind of job: `run`, `sweep`, `export`, `merge`, `finetune`, `pretrain`, ...
    pub kind: String,
    /// A hash of everything that defines the job.
    pub key: String,
    /// What the job is, in one line (shown when the folder is refused).
    pub description: String,
    /// Whether the job is running, complete or failed.
    pub state: JobState,
    /// The error of a failed job.
    #[serde(default)]
    pub error: Option<String>,
    /// Version, machine and time of the process that wrote the folder.
    pub provenance: Provenance,
}

/// What a job is, for [`JobDir::open`].
#[derive(Clone, Debug)]
pub struct JobSpec {
    /// The kind of job, as [`Marker::kind`].
    pub kind: &'static str,
    /// A hash of everything that defines the job: a folder with another key holds another job.
    pub key: String,
    /// What the job is, in one line (shown when the folder is refused).
    pub description: String,
    /// What to do with a folder holding this same job.
    pub reuse: Reuse,
    /// Replace whatever the folder holds.
    pub force: bool,
    /// The option that named the folder, for messages (`out`, `checkpoints`).
    pub option: &'static str,
    /// A file by which a folder written before job markers existed is recognised as a job of
    /// this kind (e.g. a sweep's `sweep.json`); such a folder is adopted, and the caller checks
    /// that it is the same job.
    pub legacy_file: Option<&'static str>,
    /// The lock file's name (default [`LOCK`]); writers that share a folder by design use one
    /// each.
    pub lock_name: Option<String>,
    /// Whether the job records `complete` and `failed` in the marker. Jobs written by several
    /// processes at once (sweeps) know their completeness from their results instead.
    pub track_state: bool,
    /// Threads, for the marker's provenance.
    pub threads: usize,
}

impl JobSpec {
    /// A single-writer job named by `--out` that tracks its state, with no `--force`, on the
    /// current thread pool: the common case; change fields with struct update syntax.
    pub fn new(kind: &'static str, key: String, description: String, reuse: Reuse) -> Self {
        JobSpec {
            kind,
            key,
            description,
            reuse,
            force: false,
            option: "out",
            legacy_file: None,
            lock_name: None,
            track_state: true,
            threads: rayon::current_num_threads(),
        }
    }
}

/// An open job folder: locked, marked, ready to write.
#[derive(Debug)]
pub struct JobDir {
    path: PathBuf,
    marker: Option<Marker>,
    /// Held for the job's lifetime; dropping it releases the lock.
    _lock: File,
    /// Whether an unfinished or complete run of the same job was found and kept.
    pub resumed: bool,
}

/// A stable short hash of a job's defining text (64-bit FNV-1a, hex).
pub fn job_key(defining: &str) -> String {
    crate::seed::hex_key(defining.as_bytes())
}

/// The entries of a folder other than hidden ones: lock files, the temporary files of atomic
/// writes in progress, and whatever else hides (which is never counted and never removed).
fn entries(dir: &Path) -> Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    Ok(names)
}

fn read_marker(dir: &Path) -> Result<Option<Marker>> {
    let path = dir.join(MARKER);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| Error::Format {
                path,
                message: format!("not a job marker: {e}"),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(&path, e)),
    }
}

/// Empties a folder, keeping its lock files.
fn empty(dir: &Path) -> Result<()> {
    for name in entries(dir)? {
        let path = dir.join(&name);
        let removed = if path.is_dir() && !path.is_symlink() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(|e| Error::io(&path, e))?;
    }
    Ok(())
}

fn list(names: &[String]) -> String {
    let shown: Vec<&str> = names.iter().take(5).map(String::as_str).collect();
    format!(
        "{}{}",
        shown.join(", "),
        if names.len() > 5 { ", ..." } else { "" }
    )
}

/// Takes a lock file of the folder, retrying for up to `patience` (zero: one try); a lock still
/// held then is an error naming its holder.
fn lock(dir: &Path, name: &str, option: &str, patience: std::time::Duration) -> Result<File> {
    let path = dir.join(name);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    let deadline = std::time::Instant::now() + patience;
    let mut attempt = file.try_lock();
    while matches!(attempt, Err(std::fs::TryLockError::WouldBlock))
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
        attempt = file.try_lock();
    }
    match attempt {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(Error::invalid(
                option,
                format!(
                    "{} is being written by another process ({}); wait for it to finish, or \
                     choose another --{option}",
                    dir.display(),
                    if holder.is_empty() {
                        "holder unknown"
                    } else {
                        holder
                    }
                ),
            ));
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
    }
    let holder = format!(
        "pid {} on host {} since {}\n",
        std::process::id(),
        crate::provenance::host_name(),
        utc_timestamp(std::time::SystemTime::now())
    );
    file.set_len(0)
        .and_then(|()| file.write_all(holder.as_bytes()))
        .map_err(|e| Error::io(&path, e))?;
    Ok(file)
}

impl JobDir {
    /// Opens `path` for the job `spec` under the policy of the module documentation.
    pub fn open(path: &Path, spec: &JobSpec) -> Result<Self> {
        let option = spec.option;
        if path.exists() && !path.is_dir() {
            return Err(Error::invalid(
                option,
                format!("{} is a file, not a folder", path.display()),
            ));
        }
        let refuse = |what: String| {
            Error::invalid(
                option,
                format!(
                    "{} already holds {what}; choose another --{option}, or add --force to \
                     replace it whole",
                    path.display()
                ),
            )
        };
        // Decide what the folder holds before touching it.
        if path.is_dir() && !spec.force {
            let marker = read_marker(path)?;
            let names = entries(path)?;
            match &marker {
                None if names.is_empty() => {}
                None if spec.legacy_file.is_some_and(|f| path.join(f).is_file()) => {}
                None => {
                    return Err(refuse(format!(
                        "files that are not a benign {} ({})",
                        spec.kind,
                        list(&names)
                    )))
                }
                Some(m) if m.kind != spec.kind || m.key != spec.key => {
                    return Err(refuse(format!(
                        "another {}: {} ({}, started {})",
                        m.kind,
                        m.description,
                        match m.state {
                            JobState::Running => "unfinished",
                            JobState::Complete => "complete",
                            JobState::Failed => "failed",
                        },
                        m.provenance.started_at
                    )))
                }
                Some(m) if m.state == JobState::Complete && spec.reuse == Reuse::Refuse => {
                    return Err(refuse(format!(
                        "this same {}, complete ({}, started {})",
                        m.kind, m.description, m.provenance.started_at
                    )))
                }
                Some(_) => {}
            }
        }
        std::fs::create_dir_all(path).map_err(|e| Error::io(path, e))?;
        // The folder lock: held for the job's life by a single writer; taken only while deciding
        // by writers that share the folder by design (they wait for each other's decision, a
        // moment, and then hold a lock of their own).
        let folder_lock = match spec.lock_name {
            None => lock(path, LOCK, option, std::time::Duration::ZERO)?,
            Some(_) => lock(path, LOCK, option, std::time::Duration::from_secs(30))?,
        };
        // Under the lock, the folder cannot change under us: look again and act.
        let existing = read_marker(path)?;
        let same = existing
            .as_ref()
            .is_some_and(|m| m.kind == spec.kind && m.key == spec.key);
        let legacy = existing.is_none() && spec.legacy_file.is_some_and(|f| path.join(f).is_file());
        let resumed = !spec.force
            && match spec.reuse {
                Reuse::Resume => same || legacy,
                Reuse::Replace | Reuse::Refuse => false,
            };
        if !resumed {
            if !spec.force && !entries(path)?.is_empty() && !same && !legacy {
                // Another process filled the folder between the look and the lock.
                return Err(refuse("files written meanwhile by another process".into()));
            }
            empty(path)?;
        }
        let marker = Marker {
            kind: spec.kind.to_string(),
            key: spec.key.clone(),
            description: spec.description.clone(),
            state: JobState::Running,
            error: None,
            provenance: Provenance::capture(spec.threads),
        };
        let marker = match (resumed, existing, spec.track_state) {
            // Concurrent writers of one folder keep the first marker.
            (true, Some(first), false) => Some(first),
            (_, _, _) => {
                io::write_json_atomic(&path.join(MARKER), &marker)?;
                Some(marker)
            }
        };
        let lock_file = match &spec.lock_name {
            None => folder_lock,
            Some(name) => {
                let own = lock(path, name, option, std::time::Duration::ZERO)?;
                drop(folder_lock);
                own
            }
        };
        Ok(JobDir {
            path: path.to_path_buf(),
            marker,
            _lock: lock_file,
            resumed,
        })
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The state recorded in the marker (`None` for jobs that do not track it).
    pub fn state(&self) -> Option<JobState> {
        self.marker.as_ref().map(|m| m.state)
    }

    fn set_state(&mut self, state: JobState, error: Option<String>) -> Result<()> {
        if let Some(marker) = &mut self.marker {
            marker.state = state;
            marker.error = error;
            io::write_json_atomic(&self.path.join(MARKER), marker)?;
        }
        Ok(())
    }

    /// Marks the job complete.
    pub fn complete(&mut self) -> Result<()> {
        self.set_state(JobState::Complete, None)
    }

    /// Marks the job failed with `error` (best effort: the job's own error is what matters).
    pub fn fail(&mut self, error: &str) {
        let _ = self.set_state(JobState::Failed, Some(error.to_string()));
    }

    /// Marks the job complete on `Ok`, failed with the error on `Err`, and passes the result on.
    pub fn finish<T>(&mut self, result: Result<T>) -> Result<T> {
        match &result {
            Ok(_) => self.complete()?,
            Err(e) => self.fail(&e.to_string()),
        }
        result
    }
}

/// A job whose folder several writers fill by design (the shards of a sweep or of a boundary
/// measurement), described by a spec file.
pub struct SharedJob<'a, S> {
    /// The kind of job, as [`Marker::kind`].
    pub kind: &'static str,
    /// The spec file's name (`sweep.json`, `boundary.json`).
    pub spec_file: &'static str,
    /// The spec the folder's spec file must hold for a writer to join it.
    pub spec: &'a S,
    /// What the job is, in one line (shown when the folder is refused).
    pub description: String,
    /// This writer's own file; its lock keeps a second writer of the same file out.
    pub writer_file: &'a str,
    /// Whether a folder holding the spec file but no marker (written before markers) is adopted.
    pub adopt_unmarked: bool,
    /// Threads this writer runs on (recorded in the marker's provenance).
    pub threads: usize,
    /// Replace whatever the folder holds, other writers' files included.
    pub force: bool,
}

/// `<spec file>`: the spec, and the provenance of the invocation that created the file.
#[derive(Serialize)]
struct SpecWithProvenance<'a, S> {
    #[serde(flatten)]
    spec: &'a S,
    provenance: Provenance,
}

/// Opens a shared job's folder under the folder policy (a folder holding anything but this job
/// is refused), locks this writer's file, and writes the spec file with this process's
/// provenance, or checks that the one there describes the same job.
pub fn open_shared<S>(dir: &Path, job: &SharedJob<'_, S>) -> Result<JobDir>
where
    S: Serialize + serde::de::DeserializeOwned + PartialEq,
{
    let path = dir.join(job.spec_file);
    let defining = serde_json::to_string(job.spec).map_err(|e| Error::Format {
        path: path.clone(),
        message: e.to_string(),
    })?;
    let opened = JobDir::open(
        dir,
        &JobSpec {
            force: job.force,
            legacy_file: job.adopt_unmarked.then_some(job.spec_file),
            lock_name: Some(format!(".lock-{}", job.writer_file)),
            track_state: false,
            threads: job.threads,
            ..JobSpec::new(
                job.kind,
                job_key(&defining),
                job.description.clone(),
                Reuse::Resume,
            )
        },
    )?;
    if path.exists() {
        if &read_spec_file::<S>(&path)? != job.spec {
            return Err(Error::invalid(
                "out",
                format!(
                    "{} already holds a different {} ({}); use another output directory or the \
                     same options",
                    dir.display(),
                    job.kind,
                    job.spec_file
                ),
            ));
        }
    } else {
        write_spec_file(&path, job.spec, job.threads)?;
    }
    Ok(opened)
}

/// Writes a spec file: the spec with the provenance of this process (on `threads` threads).
pub fn write_spec_file<S: Serialize>(path: &Path, spec: &S, threads: usize) -> Result<()> {
    io::write_json_atomic(
        path,
        &SpecWithProvenance {
            spec,
            provenance: Provenance::capture(threads),
        },
    )
}

/// Reads a spec file written by [`open_shared`] (its provenance is not part of the spec).
pub fn read_spec_file<S: serde::de::DeserializeOwned>(path: &Path) -> Result<S> {
    io::read_json(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: &'static str, key: &str, reuse: Reuse, force: bool) -> JobSpec {
        JobSpec {
            force,
            ..JobSpec::new(kind, key.into(), format!("{kind} {key}"), reuse)
        }
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("benign-rundir-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn refusal(result: Result<JobDir>) -> String {
        match result {
            Err(Error::InvalidOption { field, message }) => {
                assert_eq!(field, "out");
                message
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_folder_with_another_job_is_refused_and_force_replaces_it_whole() {
        let dir = scratch("other");
        let mut job = JobDir::open(&dir, &spec("run", "a", Reuse::Refuse, false)).unwrap();
        std::fs::write(dir.join("metrics.jsonl"), "old").unwrap();
        job.complete().unwrap();
        drop(job);
        let message = refusal(JobDir::open(&dir, &spec("run", "b", Reuse::Refuse, false)));
        assert!(
            message.contains("another run: run a (complete"),
            "{message}"
        );
        // The same job, complete, is refused too: nothing is overwritten silently.
        let message = refusal(JobDir::open(&dir, &spec("run", "a", Reuse::Refuse, false)));
        assert!(message.contains("this same run, complete"), "{message}");
        assert!(dir.join("metrics.jsonl").is_file());
        let job = JobDir::open(&dir, &spec("run", "b", Reuse::Refuse, true)).unwrap();
        assert!(!job.resumed && !dir.join("metrics.jsonl").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unfinished_and_failed_jobs_resume_or_are_redone() {
        let dir = scratch("unfinished");
        let mut job = JobDir::open(&dir, &spec("sweep", "k", Reuse::Resume, false)).unwrap();
        std::fs::write(dir.join("results.jsonl"), "partial").unwrap();
        job.fail("boom");
        drop(job);
        let marker = read_marker(&dir).unwrap().unwrap();
        assert_eq!(
            (marker.state, marker.error.as_deref()),
            (JobState::Failed, Some("boom"))
        );
        let job = JobDir::open(&dir, &spec("sweep", "k", Reuse::Resume, false)).unwrap();
        assert!(job.resumed && dir.join("results.jsonl").is_file());
        drop(job);
        // A run that was killed (state running) is emptied and redone.
        let run = scratch("killed-run");
        let job = JobDir::open(&run, &spec("run", "k", Reuse::Refuse, false)).unwrap();
        std::fs::write(run.join("metrics.jsonl"), "partial").unwrap();
        drop(job);
        let job = JobDir::open(&run, &spec("run", "k", Reuse::Refuse, false)).unwrap();
        assert!(!job.resumed && !run.join("metrics.jsonl").exists());
        for d in [dir, run] {
            std::fs::remove_dir_all(d).unwrap();
        }
    }

    #[test]
    fn foreign_files_are_never_touched_without_force() {
        let dir = scratch("foreign");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("thesis.tex"), "precious").unwrap();
        let message = refusal(JobDir::open(
            &dir,
            &spec("export", "k", Reuse::Refuse, false),
        ));
        assert!(
            message.contains("not a benign export (thesis.tex)"),
            "{message}"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("thesis.tex")).unwrap(),
            "precious"
        );
        assert!(!dir.join(LOCK).exists() && !dir.join(MARKER).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_second_writer_is_refused_with_the_holder_named() {
        let dir = scratch("locked");
        let _first = JobDir::open(&dir, &spec("sweep", "k", Reuse::Resume, false)).unwrap();
        let message = refusal(JobDir::open(
            &dir,
            &spec("sweep", "k", Reuse::Resume, false),
        ));
        assert!(
            message.contains(&format!("pid {}", std::process::id())) && message.contains("host"),
            "{message}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
