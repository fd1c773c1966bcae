//! Result records: one JSON line per finished run, appended durably; the flat CSV; merging.
//!
//! Lines are appended durably by [`crate::io::jsonl`] and end with `"complete":true`: a process
//! killed mid-write leaves at most one torn last line, which readers ignore and
//! [`ResultsFile::open`] cuts off before appending, so a restarted sweep neither loses nor
//! duplicates a finished run.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::io::jsonl::{self, io_err};
use crate::provenance::Provenance;
use crate::rundir::{JobDir, JobSpec, Reuse};
use crate::synthetic::metrics::EvalRecord;
use crate::synthetic::theory::Regime;
use crate::synthetic::RunConfig;
use crate::{io, Error, Result};

use super::grid::SweepSpec;

/// Name of the file holding the sweep specification in an output directory.
pub const SPEC_FILE: &str = "sweep.json";
/// Results of an unsharded sweep (and of a merge).
pub const RESULTS_FILE: &str = "results.jsonl";
/// The flat table.
pub const CSV_FILE: &str = "results.csv";
/// One line per invocation that worked on the sweep (its shard and provenance).
pub const INVOCATIONS_FILE: &str = "invocations.jsonl";

/// Writes `sweep.json` with this process's provenance.
pub fn write_spec(dir: &Path, spec: &SweepSpec, threads: usize) -> Result<()> {
    crate::rundir::write_spec_file(&dir.join(SPEC_FILE), spec, threads)
}

/// One line of `invocations.jsonl`.
#[derive(Serialize)]
struct Invocation<'a> {
    /// `i/N`, or `None` for the whole sweep.
    shard: Option<String>,
    results_file: &'a str,
    provenance: Provenance,
}

/// Appends this invocation (its shard and provenance) to `invocations.jsonl`: every process
/// that worked on a sweep, shards on other hosts included, is on record.
pub fn record_invocation(
    dir: &Path,
    shard: Option<String>,
    results_file: &str,
    threads: usize,
) -> Result<()> {
    let path = dir.join(INVOCATIONS_FILE);
    let mut line = serde_json::to_vec(&Invocation {
        shard,
        results_file,
        provenance: Provenance::capture(threads),
    })
    .map_err(|e| Error::Format {
        path: path.clone(),
        message: e.to_string(),
    })?;
    line.push(b'\n');
    // One write of a whole line in append mode: lines of concurrent shards do not interleave.
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(&line))
        .map_err(io_err(&path))
}

/// The shard count N of a file named `results.shard-i-of-N.jsonl`.
fn shard_count_of(name: &str) -> Option<usize> {
    name.strip_prefix("results.shard-")?
        .strip_suffix(".jsonl")?
        .split_once("-of-")?
        .1
        .parse()
        .ok()
}

/// The results file of shard `index` of `count`.
pub fn shard_file_name(index: usize, count: usize) -> String {
    format!("results.shard-{index}-of-{count}.jsonl")
}

/// One finished run (one line of `results.jsonl`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// As [`PlannedRun::id`](super::PlannedRun::id).
    pub run_id: String,
    /// Position in the canonical expansion of the sweep.
    pub index: usize,
    /// Which of the cell's seeds, from 0.
    pub seed_index: usize,
    /// The run's seed, a decimal string in JSON (exact beyond 2^53).
    #[serde(with = "crate::io::seed_text")]
    pub seed: u64,
    /// Values of the varying parameters.
    pub params: BTreeMap<String, Value>,
    /// The run's full configuration, seed included.
    pub config: RunConfig,
    /// `None` when the run succeeded; the error otherwise (a failure is a result too: it is
    /// deterministic, and rerunning would fail the same way).
    pub error: Option<String>,
    /// Metrics at the last step (train/test loss and accuracy, clean/noisy train accuracy,
    /// attention by role, gaps, norms).
    pub final_metrics: Option<EvalRecord>,
    /// The regime the final metrics show; `None` when the run failed.
    pub observed_regime: Option<Regime>,
    /// The regime the theory predicts for the run's setting.
    pub predicted_regime: Regime,
    /// `||mu|| / (sigma sqrt(d))` of the run.
    pub snr: f64,
    /// First step at which every training sample (noisy ones included) is fitted.
    pub first_all_fitted_step: Option<usize>,
    /// Wall-clock time of the run, seconds.
    pub wall_seconds: f64,
    /// Always `true`; a line without it is torn.
    pub complete: bool,
}

/// Parses a results file's text: complete records and the number of ignored (torn or foreign)
/// lines.
pub fn parse_records(text: &str) -> (Vec<RunRecord>, usize) {
    jsonl::parse_records(text)
}

/// Reads the complete records of a results file (missing file: none).
pub fn read_records(path: &Path) -> Result<(Vec<RunRecord>, usize)> {
    jsonl::read_records(path)
}

impl jsonl::Record for RunRecord {
    fn complete(&self) -> bool {
        self.complete
    }
}

/// An append-only results file.
pub type ResultsFile = jsonl::RecordFile<RunRecord>;

/// Every results file in a directory (`results.jsonl` and the shard files), sorted by name.
pub fn results_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io_err(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n == RESULTS_FILE || (n.starts_with("results.shard-") && n.ends_with(".jsonl"))
            })
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Reads a directory's `sweep.json`.
pub fn read_spec(dir: &Path) -> Result<SweepSpec> {
    read_spec_file(&dir.join(SPEC_FILE))
}

/// Reads a `sweep.json` (its provenance is not part of the spec).
pub fn read_spec_file(path: &Path) -> Result<SweepSpec> {
    crate::rundir::read_spec_file(path)
}

/// The complete records of a directory, one per run id (first occurrence in file order), sorted
/// by index, and the ids seen more than once.
pub fn collect(dirs: &[PathBuf]) -> Result<(Vec<RunRecord>, Vec<String>)> {
    let mut by_id: HashMap<String, RunRecord> = HashMap::new();
    let mut duplicated = Vec::new();
    for dir in dirs {
        for file in results_files(dir)? {
            let (file_records, ignored) = read_records(&file)?;
            if ignored > 0 {
                log::warn!(
                    "{}: {ignored} line(s) are not complete records and were left out",
                    file.display()
                );
            }
            for record in file_records {
                match by_id.get(&record.run_id) {
                    // A failed run that ran again: its new record supersedes the failure.
                    Some(old) if old.error.is_some() => {
                        by_id.insert(record.run_id.clone(), record);
                    }
                    Some(_) if record.error.is_some() => {}
                    Some(_) => duplicated.push(record.run_id.clone()),
                    None => {
                        by_id.insert(record.run_id.clone(), record);
                    }
                }
            }
        }
    }
    let mut records: Vec<RunRecord> = by_id.into_values().collect();
    records.sort_by_key(|r| r.index);
    duplicated.sort();
    duplicated.dedup();
    Ok((records, duplicated))
}

fn opt(v: Option<f64>) -> String {
    v.map_or(String::new(), io::float_cell)
}

fn json_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Writes the flat table atomically: one row per record, axis columns first.
pub fn write_csv(path: &Path, spec: &SweepSpec, records: &[RunRecord]) -> Result<()> {
    // The configuration columns every table has, after the axes (the row below writes them in
    // this order); an axis over one of them is not repeated.
    const FIXED: [&str; 10] = [
        "samples",
        "tokens",
        "dim",
        "signal_norm",
        "rho",
        "eta",
        "sigma",
        "lr",
        "steps",
        "test_size",
    ];
    let axes: Vec<&str> = spec
        .axes
        .iter()
        .map(|a| a.name.as_str())
        .filter(|name| !FIXED.contains(name))
        .collect();
    io::write_atomic_with(path, |w| {
        let mut out = csv::Writer::from_writer(w);
        let mut header = vec!["index", "run_id", "seed_index", "seed"];
        header.extend(axes.iter().copied());
        header.extend(FIXED);
        header.extend([
            "snr",
            "predicted_regime",
            "observed_regime",
            "train_loss",
            "train_acc",
            "train_acc_clean",
            "train_acc_noisy",
            "test_loss",
            "test_acc",
            "attention_clean_relevant",
            "attention_noisy_relevant",
            "attention_noisy_weak_other",
            "attention_noisy_max_irrelevant",
            "attention_test_relevant",
            "p_norm",
            "w_delta_norm",
            "first_all_fitted_step",
            "wall_seconds",
            "error",
        ]);
        out.write_record(&header).map_err(std::io::Error::other)?;
        for r in records {
            let c = &r.config;
            let mut row: Vec<String> = vec![
                r.index.to_string(),
                r.run_id.clone(),
                r.seed_index.to_string(),
                r.seed.to_string(),
            ];
            row.extend(
                axes.iter()
                    .map(|a| r.params.get(*a).map(json_text).unwrap_or_default()),
            );
            row.extend([
                c.samples.to_string(),
                c.tokens.to_string(),
                c.dim.to_string(),
                io::float_cell(c.signal_norm),
                io::float_cell(c.rho),
                io::float_cell(c.eta),
                io::float_cell(c.sigma),
                io::float_cell(c.lr),
                c.steps.to_string(),
                c.test_size.to_string(),
                io::float_cell(r.snr),
                regime_name(r.predicted_regime).to_string(),
                r.observed_regime
                    .map_or(String::new(), |g| regime_name(g).to_string()),
            ]);
            let m = r.final_metrics.as_ref();
            let f = |get: &dyn Fn(&EvalRecord) -> Option<f64>| opt(m.and_then(get));
            row.extend([
                f(&|m| Some(m.train_loss)),
                f(&|m| Some(m.train_acc)),
                f(&|m| m.train_acc_clean),
                f(&|m| m.train_acc_noisy),
                f(&|m| Some(m.test_loss)),
                f(&|m| Some(m.test_acc)),
                f(&|m| m.attention_clean.map(|a| a.relevant)),
                f(&|m| m.attention_noisy.map(|a| a.relevant)),
                f(&|m| m.attention_noisy.map(|a| a.weak_other)),
                f(&|m| m.attention_noisy.map(|a| a.max_irrelevant)),
                f(&|m| Some(m.attention_test.relevant)),
                f(&|m| Some(m.p_norm)),
                f(&|m| Some(m.w_delta_norm)),
                r.first_all_fitted_step
                    .map_or(String::new(), |s| s.to_string()),
                io::float_cell(r.wall_seconds),
                r.error.clone().unwrap_or_default(),
            ]);
            out.write_record(&row).map_err(std::io::Error::other)?;
        }
        out.flush()
    })
}

/// Kebab-case name of a regime (as in the JSON records).
pub fn regime_name(regime: Regime) -> &'static str {
    match regime {
        Regime::NotOverfitting => "not-overfitting",
        Regime::BenignOverfitting => "benign-overfitting",
        Regime::HarmfulOverfitting => "harmful-overfitting",
        Regime::NotYetFitted => "not-yet-fitted",
    }
}

/// A run of the sweep that no input has a record of.
#[derive(Clone, Debug, Serialize)]
pub struct MissingRun {
    /// As [`PlannedRun::id`](super::PlannedRun::id).
    pub run_id: String,
    /// Position in the canonical expansion.
    pub index: usize,
    /// Values of the varying parameters.
    pub params: BTreeMap<String, Value>,
    /// Which of the cell's seeds, from 0.
    pub seed_index: usize,
    /// The run's seed.
    #[serde(with = "crate::io::seed_text")]
    pub seed: u64,
    /// The shard that owns it (`i/N`), when the inputs hold shard files of one shard count.
    pub shard: Option<String>,
}

/// What [`merge`] found.
#[derive(Clone, Debug, Serialize)]
pub struct MergeReport {
    /// Runs the sweep has.
    pub expected: usize,
    /// Runs with a complete record in the merged results.
    pub merged: usize,
    /// Expected runs with no complete record, in canonical order.
    pub missing: Vec<MissingRun>,
    /// Shard counts of the shard files found in the inputs.
    pub shard_counts: Vec<usize>,
    /// Runs recorded more than once across the inputs (kept once).
    pub duplicated: Vec<String>,
    /// Records whose id is not part of the sweep (dropped).
    pub unexpected: Vec<String>,
    /// The folder the merged results were written to.
    pub out_dir: PathBuf,
}

/// Combines the results of output directories of the same sweep (e.g. its shards) into
/// `out/results.jsonl` and `out/results.csv`. Every input must hold the same `sweep.json`.
pub fn merge(dirs: &[PathBuf], out: &Path, force: bool) -> Result<MergeReport> {
    let first = dirs
        .first()
        .ok_or_else(|| Error::invalid("merge", "no directory given"))?;
    let spec = read_spec(first)?;
    for dir in &dirs[1..] {
        if read_spec(dir)? != spec {
            return Err(Error::invalid(
                "merge",
                format!(
                    "{} holds a different sweep than {}",
                    dir.display(),
                    first.display()
                ),
            ));
        }
    }
    let planned = spec.expand()?;
    let (records, duplicated) = collect(dirs)?;
    let expected: HashMap<&str, usize> = planned.iter().map(|r| (r.id.as_str(), r.index)).collect();
    let (kept, unexpected): (Vec<RunRecord>, Vec<RunRecord>) = records
        .into_iter()
        .partition(|r| expected.contains_key(r.run_id.as_str()));
    let have: std::collections::HashSet<&str> = kept.iter().map(|r| r.run_id.as_str()).collect();
    let mut shard_counts: Vec<usize> = Vec::new();
    for dir in dirs {
        for file in results_files(dir)? {
            let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if let Some(count) = shard_count_of(name) {
                if !shard_counts.contains(&count) {
                    shard_counts.push(count);
                }
            }
        }
    }
    shard_counts.sort_unstable();
    let owners = match shard_counts.as_slice() {
        [count] => Some((*count, super::exec::shard_indices(&planned, *count))),
        _ => None,
    };
    let missing: Vec<MissingRun> = planned
        .iter()
        .filter(|r| !have.contains(r.id.as_str()))
        .map(|r| MissingRun {
            run_id: r.id.clone(),
            index: r.index,
            params: r.params.clone(),
            seed_index: r.seed_index,
            seed: r.config.seed,
            shard: owners
                .as_ref()
                .and_then(|(count, of)| of.get(r.id.as_str()).map(|i| format!("{i}/{count}"))),
        })
        .collect();
    // The merged folder is derived output: an earlier merge of this sweep is replaced whole;
    // anything else (a sweep's own folder, an input, another job) is refused.
    let defining = serde_json::to_string(&spec).map_err(|e| Error::Format {
        path: out.join(SPEC_FILE),
        message: e.to_string(),
    })?;
    let mut job = JobDir::open(
        out,
        &JobSpec {
            force,
            ..JobSpec::new(
                "merge",
                crate::rundir::job_key(&defining),
                format!("merge of a sweep of {} runs", planned.len()),
                Reuse::Replace,
            )
        },
    )?;
    write_spec(out, &spec, 1)?;
    io::write_atomic_with(&out.join(RESULTS_FILE), |w| {
        for r in &kept {
            serde_json::to_writer(&mut *w, r)?;
            w.write_all(b"\n")?;
        }
        Ok(())
    })?;
    write_csv(&out.join(CSV_FILE), &spec, &kept)?;
    job.complete()?;
    Ok(MergeReport {
        expected: planned.len(),
        merged: kept.len(),
        missing,
        shard_counts,
        duplicated,
        unexpected: unexpected.into_iter().map(|r| r.run_id).collect(),
        out_dir: out.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, index: usize) -> RunRecord {
        RunRecord {
            run_id: id.into(),
            index,
            seed_index: 0,
            seed: 1,
            params: BTreeMap::new(),
            config: RunConfig::default(),
            error: None,
            final_metrics: None,
            observed_regime: None,
            predicted_regime: Regime::BenignOverfitting,
            snr: 0.5,
            first_all_fitted_step: None,
            wall_seconds: 0.0,
            complete: true,
        }
    }

    #[test]
    fn torn_last_line_is_cut_before_appending() {
        let dir = crate::io::empty_scratch_dir("results", "torn-line");
        let path = dir.join(RESULTS_FILE);
        let (mut file, existing) = ResultsFile::open(&path).unwrap();
        assert!(existing.is_empty());
        file.append(&record("a", 0)).unwrap();
        drop(file);
        let mut text = std::fs::read_to_string(&path).unwrap();
        let torn = serde_json::to_string(&record("b", 1)).unwrap();
        text.push_str(&torn[..torn.len() / 2]);
        std::fs::write(&path, &text).unwrap();
        assert_eq!(read_records(&path).unwrap().1, 1);
        let (mut file, existing) = ResultsFile::open(&path).unwrap();
        assert_eq!(existing, vec![record("a", 0)]);
        file.append(&record("b", 1)).unwrap();
        let (records, ignored) = read_records(&path).unwrap();
        assert_eq!((records.len(), ignored), (2, 0));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
