//! `benign sweep`: grids of synthetic runs, on one machine or a cluster, and their phase diagrams.
//!
//! [`grid`] parses axes (`d=250:5000:125`, `eta=0,0.1,0.2`) and expands them canonically into
//! runs with stable ids and derived seeds; [`file`](mod@file) reads sweep files (TOML); [`exec`]
//! runs them in parallel, resumable and shardable; [`results`] records one durable JSON line per
//! finished run, writes the CSV and merges shards; [`figures`] draws the heatmaps. Sweeps schedule
//! runs and do no training mathematics: a run is [`crate::synthetic::run()`], and a column of
//! common random numbers is [`crate::synthetic::crn`].
//!
//! # Two ways to draw the randomness, and what each means
//!
//! - **Independent draws** (default). Every run has its own seed (derived from the base seed and
//!   its id), hence its own training noise, `W_0` and test set. Cells are independent estimates:
//!   the noise in neighbouring cells is independent, so a map shows the sampling variability of a
//!   single run per cell (averaging `--seeds` reduces it), and differences between cells carry the
//!   variance of both.
//! - **Common random numbers** (`--common-random-numbers`). Cells that differ only in
//!   `signal_norm`, `rho` or `eta` (a *column*) share the seed: the same noise tokens, the same
//!   `W_0` and the same test noise, only the signal parts of the tokens change. One start-up (the
//!   products with `W_0` and the test projections) serves the whole column. Differences between
//!   cells of a column then reflect only the parameter change: maps are smoother and comparisons
//!   along a column have much less variance. It is not more information: the cells of a column
//!   are one draw seen at several signal strengths, their errors are correlated, and a column's
//!   average over the signal axis is no better an estimate than one cell. Different columns (other
//!   `d`, `n`, `T`, `sigma`, ... or another seed index) remain independent.
//!
//! In both modes the test set is drawn in the subspace (`synthetic::subspace`, `TestDraw`): each
//! test token's projections come from their exact law given the training set and `W_0`, an
//! independent sample of the same law as generating d-dimensional test tokens and projecting
//! them, so a cell's test metrics have the same distribution either way. A cell of a column and
//! the standalone run of its configuration train identically (to rounding) but draw their test
//! samples in different bases of the same span, so their test metrics are two samples.

pub mod exec;
pub mod figures;
pub mod file;
pub mod grid;
pub mod results;

pub use exec::{run_sweep, ExecOptions, Progress, Shard, SweepReport};
pub use file::SweepFile;
pub use grid::{parse_axis, Axis, PlannedRun, SweepSpec};
pub use results::{merge, MergeReport, MissingRun, RunRecord};

use std::path::{Path, PathBuf};

use crate::Result;

/// What [`finish`] wrote.
#[derive(Clone, Debug)]
pub struct Outputs {
    /// Runs recorded in `results.csv`.
    pub records: usize,
    /// Path of the `results.csv` written.
    pub csv: PathBuf,
    /// The SVG files of the figures drawn (each has a PNG twin).
    pub figures: Vec<PathBuf>,
    /// Why the figures were not drawn, when drawing failed (the data files are written).
    pub figure_error: Option<String>,
}

/// Regenerates `results.csv` (atomically) and the figures of an output directory from its saved
/// results (every results file in it, shards included), without running anything. The table is
/// written first; a figure that cannot be drawn is logged as a warning and reported in
/// [`Outputs::figure_error`], not returned as an error.
pub fn finish(dir: &Path, axes: Option<(&str, &str)>, draw: bool) -> Result<Outputs> {
    let spec = results::read_spec(dir)?;
    let (records, _) = results::collect(&[dir.to_path_buf()])?;
    let csv = dir.join(results::CSV_FILE);
    results::write_csv(&csv, &spec, &records)?;
    let (figures, figure_error) = if draw {
        match figures::render(dir, &spec, &records, axes) {
            Ok(figures) => (figures, None),
            Err(err) => {
                log::warn!("no figure drawn ({err}); {} is complete", csv.display());
                (Vec::new(), Some(err.to_string()))
            }
        }
    } else {
        (Vec::new(), None)
    };
    Ok(Outputs {
        records: records.len(),
        csv,
        figures,
        figure_error,
    })
}
