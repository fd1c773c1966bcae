//! The Table-2-style summary of a fine-tuning run (Markdown, CSV, JSON) and its figures:
//! Figure-8-style heatmaps of final train and test loss over (eta, n), Figure-9-style curves of
//! the `[CLS]` attention and the noisy-label train loss over the epochs.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{read_records, CellOutcome, EpochRecord, FinetuneRun};
use crate::plot::{render_heatmap, render_panels, Heatmap, Panel, Series};
use crate::Result;

/// Mean and sample standard deviation (`ddof = 1`; 0 for a single value).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MeanStd {
    /// Arithmetic mean.
    pub mean: f64,
    /// Sample standard deviation (`ddof = 1`); 0 for a single value.
    pub std: f64,
}

impl MeanStd {
    /// The mean and standard deviation of `values`; `None` if there are none.
    pub fn of(values: &[f64]) -> Option<MeanStd> {
        if values.is_empty() {
            return None;
        }
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let std = if values.len() > 1 {
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
        } else {
            0.0
        };
        Some(MeanStd { mean, std })
    }
}

/// One (eta, n) entry of the table, over the seeds that finished. Accuracies are fractions in
/// [0, 1], as everywhere in `benign`'s outputs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TableRow {
    /// Label-noise rate of the entry, in [0, 1].
    pub eta: f64,
    /// Fine-tuning subset size of the entry.
    pub n: usize,
    /// Number of seeds that finished (the figures are over these).
    pub seeds: usize,
    /// Final cross-entropy on the noisy labels (an evaluation pass after the last epoch).
    pub train_loss: Option<MeanStd>,
    /// Final test accuracy, a fraction.
    pub test_accuracy: Option<MeanStd>,
    /// Final test cross-entropy.
    pub test_loss: Option<MeanStd>,
    /// Final fraction of flipped examples predicted as their noisy label (noise fitted).
    pub train_accuracy_flipped: Option<MeanStd>,
    /// Final mean over examples of the largest `[CLS]` attention probability.
    pub max_cls_attention: Option<MeanStd>,
    /// Why the entry is empty, if it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

/// The table of a run. Accuracies are fractions in [0, 1].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Table {
    /// Name of the dataset (as in its folder under `--data-dir`).
    pub dataset: String,
    /// Key of the phase-0 (pretraining) settings, as in `benign pretrain`'s run folders.
    pub pretrain_key: String,
    /// The phase-0 checkpoint the run started from.
    pub pretrain_checkpoint: PathBuf,
    /// True if that checkpoint was reused (a finished `benign pretrain` of the same settings),
    /// false if this run trained it.
    pub pretrain_reused: bool,
    /// Phase-0 (pretrained) test accuracy (fraction), on the whole test split.
    pub pretrain_test_accuracy: f64,
    /// Phase-1 test accuracy (fraction), on the run's test examples.
    pub baseline_test_accuracy: f64,
    /// Number of test examples the baseline and the cells are evaluated on.
    pub test_examples: usize,
    /// One entry per (eta, n), eta-major in the plan's order.
    pub rows: Vec<TableRow>,
}

/// Aggregates the cells of a run by (eta, n), in the plan's order.
pub fn table(run: &FinetuneRun) -> Table {
    let mut rows = Vec::new();
    for &eta in &run.plan.etas {
        for &n in &run.plan.ns {
            let mut done = Vec::new();
            let mut skipped = None;
            for outcome in &run.outcomes {
                match outcome {
                    CellOutcome::Done(r) if r.cell.n == n && r.cell.eta == eta => {
                        done.push(r.final_record.clone())
                    }
                    CellOutcome::Skipped { cell, reason } if cell.n == n && cell.eta == eta => {
                        skipped = Some(reason.clone())
                    }
                    _ => {}
                }
            }
            let stat = |f: &dyn Fn(&EpochRecord) -> Option<f64>| {
                MeanStd::of(&done.iter().filter_map(f).collect::<Vec<_>>())
            };
            rows.push(TableRow {
                eta,
                n,
                seeds: done.len(),
                train_loss: stat(&|r| Some(r.train_loss)),
                test_accuracy: stat(&|r| r.test_accuracy),
                test_loss: stat(&|r| r.test_loss),
                train_accuracy_flipped: stat(&|r| r.train_accuracy_flipped),
                max_cls_attention: stat(&|r| Some(r.mean_max_cls_attention)),
                skipped,
            });
        }
    }
    Table {
        dataset: run.pretrain.dataset.to_string(),
        pretrain_key: run.pretrain.key.clone(),
        pretrain_checkpoint: run.pretrain_checkpoint.clone(),
        pretrain_reused: run.pretrain.reused,
        pretrain_test_accuracy: run.pretrain.test_accuracy,
        baseline_test_accuracy: run.baseline_test_accuracy,
        test_examples: run.test_examples,
        rows,
    }
}

fn pm(value: Option<MeanStd>, digits: usize) -> String {
    match value {
        Some(v) => format!("{:.digits$} ± {:.digits$}", v.mean, v.std),
        None => "-".into(),
    }
}

impl Table {
    /// Rows `eta`, columns `n`; each entry "train loss, test accuracy" as in the paper.
    pub fn markdown(&self) -> String {
        let mut ns: Vec<usize> = self.rows.iter().map(|r| r.n).collect();
        ns.dedup();
        ns.sort_unstable();
        ns.dedup();
        let mut etas: Vec<f64> = Vec::new();
        for r in &self.rows {
            if !etas.contains(&r.eta) {
                etas.push(r.eta);
            }
        }
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{}: pretrained test accuracy {:.3} (checkpoint `{}`, {}), baseline (phase 1) {:.3} \
             on {} test examples. Entries: final train loss on the noisy labels, test accuracy \
             (a fraction; mean ± std over seeds [seeds done]).\n",
            self.dataset,
            self.pretrain_test_accuracy,
            self.pretrain_checkpoint.display(),
            if self.pretrain_reused {
                "reused"
            } else {
                "trained by this run"
            },
            self.baseline_test_accuracy,
            self.test_examples
        );
        let _ = write!(out, "| dataset (baseline) | eta |");
        for n in &ns {
            let _ = write!(out, " n = {n} |");
        }
        let _ = write!(out, "\n|---|---|");
        for _ in &ns {
            let _ = write!(out, "---|");
        }
        out.push('\n');
        for (i, eta) in etas.iter().enumerate() {
            if i == 0 {
                let _ = write!(
                    out,
                    "| {} ({:.3}) | {eta} |",
                    self.dataset, self.baseline_test_accuracy
                );
            } else {
                let _ = write!(out, "| | {eta} |");
            }
            for n in &ns {
                let row = self.rows.iter().find(|r| r.n == *n && r.eta == *eta);
                let text = match row {
                    Some(r) if r.seeds > 0 => format!(
                        "{}, {} [{}]",
                        pm(r.train_loss, 2),
                        pm(r.test_accuracy, 3),
                        r.seeds
                    ),
                    Some(TableRow {
                        skipped: Some(reason),
                        ..
                    }) => format!("- ({reason})"),
                    _ => "-".into(),
                };
                let _ = write!(out, " {text} |");
            }
            out.push('\n');
        }
        out
    }

    /// A header and one line per (eta, n) with every statistic, through the `csv` crate: floats
    /// in [`crate::io::float_cell`]'s form (`0.0`, never `0`), missing values as empty cells,
    /// accuracies as fractions.
    pub fn csv(&self) -> String {
        let mut out = csv::Writer::from_writer(Vec::new());
        out.write_record(CSV_COLUMNS).expect("writing to memory");
        let float = |v: f64| crate::io::float_cell(v);
        let stats = |v: Option<MeanStd>| match v {
            Some(v) => [float(v.mean), float(v.std)],
            None => [String::new(), String::new()],
        };
        for r in &self.rows {
            let mut record = vec![
                self.dataset.clone(),
                self.pretrain_key.clone(),
                float(self.pretrain_test_accuracy),
                float(self.baseline_test_accuracy),
                self.test_examples.to_string(),
                float(r.eta),
                r.n.to_string(),
                r.seeds.to_string(),
            ];
            for stat in [
                r.train_loss,
                r.test_accuracy,
                r.test_loss,
                r.train_accuracy_flipped,
                r.max_cls_attention,
            ] {
                record.extend(stats(stat));
            }
            record.push(r.skipped.clone().unwrap_or_default());
            out.write_record(&record).expect("writing to memory");
        }
        String::from_utf8(out.into_inner().expect("writing to memory")).expect("UTF-8 cells")
    }
}

/// The columns of `table.csv`, in order.
pub const CSV_COLUMNS: [&str; 19] = [
    "dataset",
    "pretrain_key",
    "pretrain_test_accuracy",
    "baseline_test_accuracy",
    "test_examples",
    "eta",
    "n",
    "seeds",
    "train_loss_mean",
    "train_loss_std",
    "test_accuracy_mean",
    "test_accuracy_std",
    "test_loss_mean",
    "test_loss_std",
    "train_accuracy_flipped_mean",
    "train_accuracy_flipped_std",
    "max_cls_attention_mean",
    "max_cls_attention_std",
    "skipped",
];

/// `table.json`: the table and the run it summarises.
#[derive(Serialize)]
struct TableJson<'a> {
    table: &'a Table,
    run: &'a FinetuneRun,
}

/// Paths of the files [`write_outputs`] wrote.
#[derive(Clone, Debug, Default)]
pub struct Outputs {
    /// Every file written, in writing order.
    pub files: Vec<PathBuf>,
}

/// Writes `table.md`, `table.csv`, `table.json` (`{"table": ..., "run": ...}`) and the figures
/// into the run's folder (atomically). Heatmaps need at least two etas; attention curves need finished cells.
pub fn write_outputs(run: &FinetuneRun, table: &Table, figures: bool) -> Result<Outputs> {
    let dir = &run.dir;
    let mut files = Vec::new();
    let mut put = |name: &str, bytes: &[u8]| -> Result<()> {
        let path = dir.join(name);
        crate::io::write_atomic(&path, bytes)?;
        files.push(path);
        Ok(())
    };
    put("table.md", table.markdown().as_bytes())?;
    put("table.csv", table.csv().as_bytes())?;
    let mut json =
        serde_json::to_vec_pretty(&TableJson { table, run }).expect("the table serializes");
    json.push(b'\n');
    put("table.json", &json)?;
    let mut outputs = Outputs { files };
    if figures {
        // The tables are written: a figure that cannot be drawn costs only the figure.
        let drawn = heatmaps(run, table, dir, &mut outputs)
            .and_then(|()| attention_curves(run, dir, &mut outputs));
        if let Err(err) = drawn {
            log::warn!("not every figure was drawn ({err}); the tables are complete");
        }
    }
    Ok(outputs)
}

/// Reads one statistic of a table row.
type Pick = dyn Fn(&TableRow) -> Option<MeanStd>;

fn heatmaps(run: &FinetuneRun, table: &Table, dir: &Path, outputs: &mut Outputs) -> Result<()> {
    let mut etas = run.plan.etas.clone();
    etas.sort_by(f64::total_cmp);
    etas.dedup();
    let mut ns = run.plan.ns.clone();
    ns.sort_unstable();
    ns.dedup();
    if etas.len() < 2 {
        return Ok(());
    }
    let value = |eta: f64, n: usize, pick: &Pick| {
        table
            .rows
            .iter()
            .find(|r| r.eta == eta && r.n == n)
            .and_then(pick)
            .map_or(f64::NAN, |v| v.mean)
    };
    let maps: [(&str, &str, &Pick); 2] = [
        ("train_loss", "final train loss (noisy labels)", &|r| {
            r.train_loss
        }),
        ("test_loss", "final test loss", &|r| r.test_loss),
    ];
    for (name, label, pick) in maps {
        let map = Heatmap {
            title: format!("{}: {label}, mean over seeds", table.dataset),
            x_label: "eta (label noise)".into(),
            y_label: "n (fine-tuning examples)".into(),
            x_values: etas.clone(),
            y_values: ns.iter().map(|&n| n as f64).collect(),
            values: ns
                .iter()
                .flat_map(|&n| etas.iter().map(move |&eta| (eta, n)))
                .map(|(eta, n)| value(eta, n, pick))
                .collect(),
            value_label: label.into(),
            categories: None,
            overlays: Vec::new(),
        };
        let svg = dir.join(format!("heatmap_{name}.svg"));
        let png = dir.join(format!("heatmap_{name}.png"));
        render_heatmap(&map, &svg, &png)?;
        outputs.files.push(svg);
        outputs.files.push(png);
    }
    Ok(())
}

/// Mean over the finished seeds of a per-epoch quantity, epoch by epoch.
fn mean_curve(curves: &[Vec<EpochRecord>], pick: impl Fn(&EpochRecord) -> f64) -> Vec<(f64, f64)> {
    let epochs = curves.iter().map(Vec::len).min().unwrap_or(0);
    (0..epochs)
        .map(|e| {
            let sum: f64 = curves.iter().map(|c| pick(&c[e])).sum();
            (curves[0][e].epoch as f64, sum / curves.len() as f64)
        })
        .collect()
}

fn attention_curves(run: &FinetuneRun, dir: &Path, outputs: &mut Outputs) -> Result<()> {
    let mut attention_panels = Vec::new();
    let mut loss_panels = Vec::new();
    // The etas of the plan, at most 6 curves per panel (the grid's first, last and between).
    let etas: Vec<f64> = if run.plan.etas.len() <= 6 {
        run.plan.etas.clone()
    } else {
        let last = run.plan.etas.len() - 1;
        (0..6).map(|i| run.plan.etas[i * last / 5]).collect()
    };
    for &n in &run.plan.ns {
        let mut attention = Vec::new();
        let mut loss = Vec::new();
        for &eta in &etas {
            let mut curves = Vec::new();
            for outcome in &run.outcomes {
                if let CellOutcome::Done(r) = outcome {
                    if r.cell.n == n && r.cell.eta == eta {
                        curves.push(read_records(&run.dir, &r.cell)?);
                    }
                }
            }
            if curves.is_empty() {
                continue;
            }
            attention.push(Series {
                label: format!("eta = {eta}"),
                points: mean_curve(&curves, |r| r.mean_max_cls_attention),
                dashed: false,
            });
            loss.push(Series {
                label: format!("eta = {eta}"),
                points: mean_curve(&curves, |r| r.train_loss),
                dashed: false,
            });
        }
        if attention.is_empty() {
            continue;
        }
        attention_panels.push(Panel {
            title: format!("n = {n}: max [CLS] attention"),
            x_label: "epoch".into(),
            y_label: "mean max attention".into(),
            series: attention,
            y_range: Some((0.0, 1.0)),
            log_x: false,
        });
        loss_panels.push(Panel {
            title: format!("n = {n}: train loss (noisy labels)"),
            x_label: "epoch".into(),
            y_label: "cross-entropy".into(),
            series: loss,
            y_range: None,
            log_x: false,
        });
    }
    if attention_panels.is_empty() {
        return Ok(());
    }
    let columns = attention_panels.len();
    let panels: Vec<Panel> = attention_panels.into_iter().chain(loss_panels).collect();
    let svg = dir.join("attention.svg");
    let png = dir.join("attention.png");
    render_panels(
        &panels,
        columns.min(8),
        &format!(
            "{}: last-layer [CLS] attention during phase 2 (mean over seeds)",
            run.pretrain.dataset
        ),
        &svg,
        &png,
    )?;
    outputs.files.push(svg);
    outputs.files.push(png);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classifier::pretrain::{PretrainResult, PretrainSpec};
    use crate::finetune::{Cell, CellResult, FinetuneConfig, Phase1Result, Plan};
    use crate::realdata::DatasetName;

    fn final_record(train_loss: f64, test_accuracy: f64) -> EpochRecord {
        EpochRecord {
            epoch: 3,
            lr: 0.0,
            train_loss,
            train_accuracy: 1.0,
            train_accuracy_flipped: None,
            train_accuracy_clean: Some(1.0),
            test_loss: Some(0.25),
            test_accuracy: Some(test_accuracy),
            mean_max_cls_attention: 0.5,
            grad_norm: 0.0,
            seconds: 0.0,
        }
    }

    fn done(n: usize, eta: f64, seed: u64, train_loss: f64, test_accuracy: f64) -> CellOutcome {
        CellOutcome::Done(CellResult {
            cell: Cell { n, eta, seed },
            flipped: 0,
            epochs: 3,
            final_record: final_record(train_loss, test_accuracy),
            seconds: 0.0,
        })
    }

    /// Two etas, two sizes: (0, 20) with two seeds, (0, 200) impossible, (0.2, 20) with a
    /// non-finite loss, (0.2, 200) never run.
    fn run() -> FinetuneRun {
        let spec = PretrainSpec::defaults(DatasetName::Mnist);
        let dir = PathBuf::from("/tmp/benign-report-test");
        let pretrain = PretrainResult {
            dataset: DatasetName::Mnist,
            key: spec.key(),
            run_dir: dir.join("mnist-key"),
            reused: true,
            train_examples: 10,
            test_examples: 10,
            parameters: 1,
            epochs: 1,
            train_loss_eval: 0.1,
            train_accuracy_eval: 1.0,
            test_loss: 0.3,
            test_accuracy: 0.904,
            train_seconds: 1.0,
            examples_per_second: 10.0,
            threads: 1,
            spec,
        };
        FinetuneRun {
            pretrain_checkpoint: pretrain.checkpoint_path(),
            pretrain,
            phase1: Phase1Result {
                key: "k".into(),
                epochs: 1,
                train_accuracy_eval: 1.0,
                seconds: 0.0,
            },
            baseline_test_accuracy: 0.875,
            baseline_test_loss: 0.4,
            test_examples: 1000,
            config: FinetuneConfig::default(),
            plan: Plan {
                ns: vec![20, 200],
                etas: vec![0.0, 0.2],
                seeds: 2,
            },
            dir,
            outcomes: vec![
                done(20, 0.0, 0, 5.0, 0.9),
                done(20, 0.0, 1, 5.0, 0.8),
                CellOutcome::Skipped {
                    cell: Cell {
                        n: 200,
                        eta: 0.0,
                        seed: 0,
                    },
                    reason: "too few examples, \"n\" = 200".into(),
                },
                done(20, 0.2, 0, f64::NAN, 0.5),
            ],
        }
    }

    #[test]
    fn accuracies_are_fractions_in_the_table_and_its_markdown() {
        let run = run();
        let table = table(&run);
        assert_eq!(table.pretrain_test_accuracy, 0.904);
        assert_eq!(table.baseline_test_accuracy, 0.875);
        assert!(table.pretrain_reused);
        assert_eq!(
            table.pretrain_checkpoint,
            run.pretrain.run_dir.join("checkpoint.safetensors")
        );
        let row = &table.rows[0];
        assert_eq!((row.eta, row.n, row.seeds), (0.0, 20, 2));
        let acc = row.test_accuracy.unwrap();
        assert!((acc.mean - 0.85).abs() < 1e-12, "{acc:?}");
        let markdown = table.markdown();
        assert!(
            markdown.contains("pretrained test accuracy 0.904")
                && markdown.contains("baseline (phase 1) 0.875")
                && markdown.contains("| mnist (0.875) |")
                && markdown.contains("5.00 ± 0.00, 0.850 ± 0.071 [2]"),
            "{markdown}"
        );
        assert!(
            !markdown.contains("90.4") && !markdown.contains('%'),
            "{markdown}"
        );
        assert!(
            markdown.contains("mnist-key/checkpoint.safetensors`, reused)"),
            "{markdown}"
        );
    }

    #[test]
    fn csv_cells_are_floats_fractions_or_empty() {
        let table = table(&run());
        let text = table.csv();
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
        assert_eq!(header, CSV_COLUMNS);
        let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), 4);
        let column = |name: &str| CSV_COLUMNS.iter().position(|c| *c == name).unwrap();
        let integers = ["test_examples", "n", "seeds"];
        let text_columns = ["dataset", "pretrain_key", "skipped"];
        for row in &rows {
            for (name, cell) in CSV_COLUMNS.iter().zip(row.iter()) {
                if text_columns.contains(name) || cell.is_empty() {
                    continue;
                }
                if integers.contains(name) {
                    assert!(cell.parse::<u64>().is_ok(), "{name} = {cell}");
                } else {
                    // A float that stays a float: never `5` for 5.0, never `90.4` for 0.904.
                    let value: f64 = cell.parse().unwrap_or_else(|_| panic!("{name} = {cell}"));
                    assert!(
                        cell.contains(['.', 'e']) || cell == "NaN" || cell.ends_with("inf"),
                        "{name} = {cell}"
                    );
                    if name.contains("accuracy") {
                        assert!((0.0..=1.0).contains(&value), "{name} = {cell}");
                    }
                }
            }
        }
        let first = &rows[0];
        assert_eq!(&first[column("pretrain_test_accuracy")], "0.904");
        assert_eq!(&first[column("eta")], "0.0");
        assert_eq!(&first[column("train_loss_mean")], "5.0");
        assert_eq!(&first[column("train_loss_std")], "0.0");
        let acc: f64 = first[column("test_accuracy_mean")].parse().unwrap();
        assert!((acc - 0.85).abs() < 1e-12);
        // Flipped accuracy is undefined without flipped examples: an empty cell.
        assert_eq!(&first[column("train_accuracy_flipped_mean")], "");
        assert_eq!(&first[column("skipped")], "");
        // The impossible entry: empty statistics and its reason, quoted as CSV needs.
        let skipped = &rows[1];
        assert_eq!(&skipped[column("seeds")], "0");
        assert_eq!(&skipped[column("train_loss_mean")], "");
        assert_eq!(&skipped[column("skipped")], "too few examples, \"n\" = 200");
        // A non-finite mean is written as NaN, not dropped.
        assert_eq!(&rows[2][column("train_loss_mean")], "NaN");
        assert_eq!(&rows[2][column("eta")], "0.2");
    }
}
