//! The Table-2-style summary of a fine-tuning run (Markdown, CSV, JSON) and its figures:
//! Figure-8-style heatmaps of final train and test loss over (eta, n), Figure-9-style curves of
//! the [CLS] attention and the noisy-label train loss over the epochs.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{read_records, CellOutcome, EpochRecord, FinetuneRun};
use crate::plot::{render_heatmap, render_panels, Heatmap, Panel, Series};
use crate::Result;

/// Mean and sample standard deviation (`ddof = 1`; 0 for a single value).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MeanStd {
    pub mean: f64,
    pub std: f64,
}

impl MeanStd {
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

/// One (eta, n) entry of the table, over the seeds that finished.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TableRow {
    pub eta: f64,
    pub n: usize,
    pub seeds: usize,
    /// Final cross-entropy on the noisy labels.
    pub train_loss: Option<MeanStd>,
    /// Final test accuracy in percent.
    pub test_accuracy: Option<MeanStd>,
    pub test_loss: Option<MeanStd>,
    /// Final fraction of flipped examples predicted as their noisy label (noise fitted).
    pub train_accuracy_flipped: Option<MeanStd>,
    /// Final mean over examples of the largest [CLS] attention probability.
    pub max_cls_attention: Option<MeanStd>,
    /// Why the entry is empty, if it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

/// The table of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Table {
    pub dataset: String,
    /// Phase-0 (pretrained) test accuracy in percent, on the whole test split.
    pub pretrain_test_accuracy: f64,
    /// Phase-1 test accuracy in percent, on the run's test examples.
    pub baseline_test_accuracy: f64,
    pub test_examples: usize,
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
                test_accuracy: stat(&|r| r.test_accuracy.map(|a| 100.0 * a)),
                test_loss: stat(&|r| r.test_loss),
                train_accuracy_flipped: stat(&|r| r.train_accuracy_flipped),
                max_cls_attention: stat(&|r| Some(r.mean_max_cls_attention)),
                skipped,
            });
        }
    }
    Table {
        dataset: run.pretrain.dataset.to_string(),
        pretrain_test_accuracy: 100.0 * run.pretrain.test_accuracy,
        baseline_test_accuracy: 100.0 * run.baseline_test_accuracy,
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
            "{}: pretrained {:.1}% test accuracy, baseline (phase 1) {:.1}% on {} test examples. \
             Entries: final train loss on the noisy labels, test accuracy % (mean ± std over seeds \
             [seeds done]).\n",
            self.dataset,
            self.pretrain_test_accuracy,
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
                    "| {} ({:.1}) | {eta} |",
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
                        pm(r.test_accuracy, 1),
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

    /// One line per (eta, n) with every statistic.
    pub fn csv(&self) -> String {
        let mut out = String::from(
            "dataset,pretrain_test_accuracy,baseline_test_accuracy,test_examples,eta,n,seeds,\
             train_loss_mean,train_loss_std,test_accuracy_mean,test_accuracy_std,test_loss_mean,\
             test_loss_std,train_accuracy_flipped_mean,train_accuracy_flipped_std,\
             max_cls_attention_mean,max_cls_attention_std\n",
        );
        let cols = |v: Option<MeanStd>| match v {
            Some(v) => format!("{},{}", v.mean, v.std),
            None => ",".into(),
        };
        for r in &self.rows {
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{},{},{},{},{},{}",
                self.dataset,
                self.pretrain_test_accuracy,
                self.baseline_test_accuracy,
                self.test_examples,
                r.eta,
                r.n,
                r.seeds,
                cols(r.train_loss),
                cols(r.test_accuracy),
                cols(r.test_loss),
                cols(r.train_accuracy_flipped),
                cols(r.max_cls_attention)
            );
        }
        out
    }
}

/// Paths of the files [`write_outputs`] wrote.
#[derive(Clone, Debug, Default)]
pub struct Outputs {
    pub files: Vec<PathBuf>,
}

/// Writes `table.md`, `table.csv`, `table.json` and the figures into the run's folder
/// (atomically). Heatmaps need at least two etas; attention curves need finished cells.
pub fn write_outputs(run: &FinetuneRun, table: &Table) -> Result<Outputs> {
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
    let mut json = serde_json::to_vec_pretty(&(table, run)).expect("the table serializes");
    json.push(b'\n');
    put("table.json", &json)?;
    let mut outputs = Outputs { files };
    heatmaps(run, table, dir, &mut outputs)?;
    attention_curves(run, dir, &mut outputs)?;
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
