//! `benign finetune`: the noisy-label fine-tuning table of paper section 5 (library:
//! `benign::finetune`).

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;

use benign::classifier::pretrain::{self, PretrainResult, PretrainSpec};
use benign::classifier::Schedule;
use benign::finetune::{self, report, Event, FinetuneConfig, FinetuneOptions, Plan};
use benign::realdata::DatasetName;
use benign::Error;

use super::common::{set_if_given, CommonArgs};
use super::pretrain::{apply_tokenizer_options, check_data_dir, clip_bound, CheckpointArgs};
use super::progress::Field;

#[derive(Args)]
pub struct FinetuneArgs {
    /// The dataset (its folder under --data-dir).
    #[arg(long, value_enum, ignore_case = true)]
    pub dataset: DatasetName,
    /// Folder holding one folder per dataset (`<DIR>/mnist/...`).
    #[arg(long, value_name = "DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Fine-tuning subset sizes.
    #[arg(long, value_delimiter = ',', default_value = "20,200,1000")]
    pub n: Vec<usize>,
    /// Label-noise rates in [0, 1].
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0,0.2",
        conflicts_with = "eta_grid"
    )]
    pub eta: Vec<f64>,
    /// A grid of noise rates START:STOP:STEP (inclusive), e.g. 0:0.2:0.01 (Figure 8).
    #[arg(long, value_name = "START:STOP:STEP")]
    pub eta_grid: Option<String>,
    /// Seeds 0..SEEDS per (n, eta) cell.
    #[arg(long, default_value_t = 3)]
    pub seeds: usize,
    /// Phase-2 epochs [default: 200].
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Phase-2 peak learning rate (AdamW, cosine decay) [default: 1e-2; AG news 3e-3].
    #[arg(long)]
    pub lr: Option<f64>,
    /// Phase-2 learning-rate schedule [default: cosine].
    #[arg(long, value_enum)]
    pub schedule: Option<Schedule>,
    /// Heads of the last block's attention in phase 2 (must divide the width; 4 is the
    /// pretrained models' own) [default: 64, one per coordinate].
    #[arg(long)]
    pub last_heads: Option<usize>,
    /// Factor on the last block's attention scores in phase 2 (inverse temperature)
    /// [default: 1].
    #[arg(long)]
    pub score_scale: Option<f64>,
    /// Width of each head's query and key in the last block's attention in phase 2, 1 to 1024:
    /// a width other than the model's width over `--last-heads` draws a new query and key
    /// projection of `heads x width` outputs [default: width / heads, the block's own].
    #[arg(long)]
    pub last_qk_dim: Option<usize>,
    /// Phase-1 (head only) epochs [default: 2].
    #[arg(long)]
    pub phase1_epochs: Option<usize>,
    /// Phase-1 peak learning rate [default: 1e-3].
    #[arg(long)]
    pub phase1_lr: Option<f64>,
    /// Batch size of both phases [default: 16].
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Gradient-norm clipping bound of both phases (0: none) [default: 1].
    #[arg(long)]
    pub clip_norm: Option<f64>,
    /// AdamW weight decay of both phases [default: 0.01].
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Keep the pretrained query and key of the last block instead of redrawing them.
    #[arg(long)]
    pub no_reinit: bool,
    /// Test examples for every test measurement (a fixed stratified subset), or `all`
    /// [default: 1000].
    #[arg(long)]
    pub test_examples: Option<String>,
    /// Test measurements every this many phase-2 epochs [default: 50].
    #[arg(long)]
    pub eval_every: Option<usize>,
    /// Size of the clean pretraining subset [default: 10,000; TREC 3,000; BreastMNIST 200;
    /// SST-2 and AG news 5,000]. The fine-tuning subsets are drawn from the rest of the training
    /// split, so SST-2's 6,920 and AG news's 10,001 training examples need the smaller one.
    #[arg(long)]
    pub pretrain_subset: Option<usize>,
    /// Seed of the pretraining run (phases 0 and 1).
    #[arg(long, default_value_t = pretrain::DEFAULT_SEED)]
    pub pretrain_seed: u64,
    /// Patch side in pixels of the pretrained model (images; 2 gives 196 tokens on 28x28)
    /// [default: `benign pretrain`'s, 4].
    #[arg(long)]
    pub pretrain_patch: Option<usize>,
    /// Tokens per sentence of the pretrained model (text) [default: `benign pretrain`'s: TREC
    /// 24, SST-2 48, AG news 64].
    #[arg(long)]
    pub pretrain_max_len: Option<usize>,
    /// Width of the pretrained model [default: `benign pretrain`'s, 64].
    #[arg(long)]
    pub pretrain_dim: Option<usize>,
    /// Transformer blocks of the pretrained model, at least 1 (with 1 the last block reads the
    /// embeddings) [default: 3 for MNIST and Fashion-MNIST, 1 for the others; see
    /// docs/reproduction.md].
    #[arg(long)]
    pub pretrain_layers: Option<usize>,
    /// Phase 0 is `benign pretrain --dataset D` with the `--pretrain-*` settings, read from (or
    /// trained into) this folder.
    #[command(flatten)]
    pub checkpoints: CheckpointArgs,
    /// Parent folder of the phase-1 and table folders.
    #[arg(long, value_name = "DIR", default_value = "runs/finetune")]
    pub out: PathBuf,
    /// Write the tables but draw no figure.
    #[arg(long)]
    pub no_plot: bool,
    // `--json` prints the table (the `table` of table.json) instead of its markdown.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Most noise rates `--eta-grid` may give (each is a column of the table).
const MAX_ETAS: usize = 1000;

/// `--eta-grid START:STOP:STEP`: the values of a sweep axis's range (`benign sweep --grid
/// eta=START:STOP:STEP` gives the same), increasing, in [0, 1], at most [`MAX_ETAS`].
pub fn parse_eta_grid(text: &str) -> Result<Vec<f64>, Error> {
    let etas = benign::sweep::grid::parse_real_range("eta-grid", text)?;
    let increasing = etas.windows(2).all(|w| w[0] < w[1]);
    let in_range = etas.iter().all(|e| (0.0..=1.0).contains(e));
    if !(increasing && in_range && etas.len() <= MAX_ETAS) {
        return Err(Error::invalid(
            "eta-grid",
            format!(
                "`{text}`: expected START:STOP:STEP with 0 <= START <= STOP <= 1, STEP > 0 and \
                 at most {MAX_ETAS} values (e.g. 0:0.2:0.01)"
            ),
        ));
    }
    Ok(etas)
}

/// The configuration of both phases: defaults with the options applied.
pub fn config_from(args: &FinetuneArgs) -> anyhow::Result<FinetuneConfig> {
    let mut config = FinetuneConfig::for_dataset(args.dataset);
    set_if_given(&mut config.phase2.epochs, args.epochs);
    set_if_given(&mut config.phase2.lr, args.lr);
    set_if_given(&mut config.phase2.schedule, args.schedule);
    if args.last_heads.is_some() {
        config.last_heads = args.last_heads;
    }
    set_if_given(&mut config.score_scale, args.score_scale);
    if args.last_qk_dim.is_some() {
        config.last_qk_dim = args.last_qk_dim;
    }
    set_if_given(&mut config.phase1.epochs, args.phase1_epochs);
    set_if_given(&mut config.phase1.lr, args.phase1_lr);
    for phase in [&mut config.phase1, &mut config.phase2] {
        set_if_given(&mut phase.batch_size, args.batch_size);
        set_if_given(&mut phase.clip_norm, args.clip_norm.map(clip_bound));
        set_if_given(&mut phase.weight_decay, args.weight_decay);
    }
    config.reinit = !args.no_reinit;
    if let Some(text) = &args.test_examples {
        config.test_examples = if text.trim() == "all" {
            None
        } else {
            Some(text.trim().parse().map_err(|_| {
                Error::invalid(
                    "test-examples",
                    format!("must be a number >= 1 or `all`, got '{text}'"),
                )
            })?)
        };
    }
    set_if_given(&mut config.eval_every, args.eval_every);
    config.validate()?;
    Ok(config)
}

pub fn execute(args: FinetuneArgs) -> anyhow::Result<i32> {
    // Phase 0 is `benign pretrain` with the dataset's backbone: the same spec gives the same key
    // and the same run folder under the shared checkpoint folder.
    let mut spec = finetune::backbone(args.dataset).with_seed(args.pretrain_seed);
    if let Some(n) = args.pretrain_subset {
        spec.subset = Some(n);
    }
    apply_pretrain_model_options(&mut spec, &args)?;
    // The spec's `subset`, `patch`, `max-len` and `dim` are this command's `--pretrain-*`.
    spec.validate().map_err(|e| match e {
        Error::InvalidOption { field, message }
            if ["subset", "patch", "max-len", "dim"].contains(&field.as_str()) =>
        {
            Error::invalid(format!("pretrain-{field}"), message)
        }
        other => other,
    })?;
    let config = config_from(&args)?;
    // Before the pretraining (minutes to an hour): the settings that depend on its model.
    config.validate_for(&spec)?;
    let etas = match &args.eta_grid {
        Some(text) => parse_eta_grid(text)?,
        None => args.eta.clone(),
    };
    let plan = Plan {
        ns: args.n.clone(),
        etas,
        seeds: args.seeds,
    };
    plan.validate()?;
    check_data_dir(&args.data_dir)?;
    let checkpoints = args.checkpoints.checkpoints.clone();
    refuse_old_pretrain_folder(&spec, &checkpoints, &args.out)?;
    let options = FinetuneOptions {
        data_dir: args.data_dir.clone(),
        checkpoints,
        out: args.out.clone(),
    };
    let total = plan.cells().len() as u64;
    let progress = args.common.reporter("finetune", "cells", true);
    progress.set_total(total, 0);
    let epochs = config.phase2.epochs;
    let say = |line: String| progress.event(&line, Vec::new());
    let mut observe = |event: Event<'_>| match event {
        Event::Pretrain(pretrain::Event::Start { epochs, epoch, .. }) => {
            say(format!("pretraining epoch {}/{epochs}", epoch + 1));
        }
        Event::Pretrain(pretrain::Event::Step { .. }) => {}
        Event::Pretrain(pretrain::Event::Epoch(m)) => {
            say(format!(
                "pretrain epoch {}: test acc {:.4}, {:.0} ex/s",
                m.epoch,
                m.test_accuracy.unwrap_or(f64::NAN),
                m.examples_per_second
            ));
        }
        Event::Pretrained(result) => say(pretrained_line(result)),
        Event::Phase1Start { epochs, examples } => {
            say(format!("phase 1: {epochs} epochs on {examples} examples"));
        }
        Event::Phase1Epoch {
            epoch,
            test_accuracy,
        } => say(format!(
            "phase 1 epoch {epoch}: test acc {test_accuracy:.4}"
        )),
        Event::CellStart { .. } => {}
        Event::CellEpoch(r) => {
            progress.update(
                progress.done(),
                vec![
                    ("epoch", Field::Count(r.epoch as u64)),
                    ("of", Field::Count(epochs as u64)),
                    ("train_loss", Field::Float(r.train_loss, 4)),
                ],
            );
        }
        Event::CellDone { result, reused, .. } => {
            progress.increment(Vec::new());
            {
                let r = &result.final_record;
                say(format!(
                    "n={} eta={} seed={}: train loss {:.4} (flipped fitted {}), test acc {:.4}, max attention {:.3}, {:.0} s{}",
                    result.cell.n,
                    result.cell.eta,
                    result.cell.seed,
                    r.train_loss,
                    r.train_accuracy_flipped
                        .map_or("-".to_string(), |a| format!("{a:.2}")),
                    r.test_accuracy.unwrap_or(f64::NAN),
                    r.mean_max_cls_attention,
                    result.seconds,
                    if reused { " [done earlier]" } else { "" }
                ));
            }
        }
        Event::CellSkipped { cell, reason, .. } => {
            progress.increment(Vec::new());
            say(format!(
                "n={} eta={} seed={}: skipped: {reason}",
                cell.n, cell.eta, cell.seed
            ));
        }
    };
    let pool = args.common.pool()?;
    let outcome =
        pool.install(|| finetune::finetune(&spec, &config, &plan, &options, &mut observe));
    progress.finish();
    let run = outcome?;
    let table = report::table(&run);
    let outputs = report::write_outputs(&run, &table, !args.no_plot)?;
    let mut stdout = std::io::stdout();
    if args.common.json {
        let _ = writeln!(stdout, "{}", serde_json::to_string_pretty(&table)?);
        return Ok(0);
    }
    let _ = writeln!(stdout, "{}", pretrained_line(&run.pretrain));
    let _ = writeln!(stdout, "{}", table.markdown());
    for f in &outputs.files {
        let _ = writeln!(stdout, "wrote {}", f.display());
    }
    Ok(0)
}

/// The `--pretrain-patch`, `--pretrain-max-len`, `--pretrain-dim` and `--pretrain-layers`
/// options on the phase-0 spec (`benign pretrain`'s `--patch`, `--max-len`, `--dim` and
/// `--layers`: the same settings give the same checkpoint key), each refused on the wrong kind
/// of dataset or at 0.
fn apply_pretrain_model_options(spec: &mut PretrainSpec, args: &FinetuneArgs) -> Result<(), Error> {
    apply_tokenizer_options(
        &mut spec.tokenizer,
        args.pretrain_patch,
        args.pretrain_max_len,
        "pretrain-",
    )?;
    if let Some(dim) = args.pretrain_dim {
        if dim == 0 || !dim.is_multiple_of(spec.model.heads) {
            return Err(Error::invalid(
                "pretrain-dim",
                format!(
                    "must be a positive multiple of the pretrained model's {} heads, got {dim}",
                    spec.model.heads
                ),
            ));
        }
        spec.model.dim = dim;
    }
    if let Some(layers) = args.pretrain_layers {
        if layers == 0 {
            return Err(Error::invalid(
                "pretrain-layers",
                "must be at least 1, got 0",
            ));
        }
        spec.model.layers = layers;
    }
    Ok(())
}

/// Which phase-0 checkpoint a run uses and whether it was reused.
fn pretrained_line(result: &PretrainResult) -> String {
    let how = if result.reused {
        "reused the pretrained checkpoint"
    } else {
        "pretrained now, checkpoint"
    };
    format!(
        "phase 0: {how} {} (key {}, test acc {:.4})",
        result.checkpoint_path().display(),
        result.key,
        result.test_accuracy
    )
}

/// Earlier versions kept phase 0 in `<out>/pretrain/`. Rather than pretrain again next to a
/// finished run of the same settings there, stop and say how to move it into the shared
/// checkpoint folder.
fn refuse_old_pretrain_folder(
    spec: &PretrainSpec,
    checkpoints: &Path,
    out: &Path,
) -> Result<(), Error> {
    let old = spec.run_dir(&out.join("pretrain"));
    let new = spec.run_dir(checkpoints);
    if old.join("checkpoint.safetensors").is_file() && !new.exists() {
        return Err(Error::invalid(
            "checkpoints",
            format!(
                "the pretraining of these settings is in {}, where earlier versions kept it; \
                 move it with `mkdir -p {} && mv {} {}` (or pass --checkpoints {}) to reuse it",
                old.display(),
                checkpoints.display(),
                old.display(),
                new.display(),
                out.join("pretrain").display()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The values of the rule `--eta-grid` had before it became the sweep's: up to STOP with a
    /// tolerance of STEP/1000, rounded to 9 decimals.
    fn former_rule(start: f64, stop: f64, step: f64) -> Vec<f64> {
        let count = ((stop - start) / step + 1e-3).floor() as usize + 1;
        (0..count)
            .map(|i| ((start + i as f64 * step) * 1e9).round() / 1e9)
            .collect()
    }

    #[test]
    fn eta_grid_keeps_the_values_of_the_former_rule_where_it_stopped_at_stop() {
        for (text, start, stop, step) in [
            ("0:0.2:0.01", 0.0, 0.2, 0.01),
            ("0:0.2:0.05", 0.0, 0.2, 0.05),
            ("0.1:0.3:0.1", 0.1, 0.3, 0.1),
            ("0:0.2:0.03", 0.0, 0.2, 0.03),
            ("0.05:0.05:0.1", 0.05, 0.05, 0.1),
        ] {
            assert_eq!(
                parse_eta_grid(text).unwrap(),
                former_rule(start, stop, step),
                "{text}"
            );
        }
        assert_eq!(parse_eta_grid("0:0.3:0.1").unwrap(), [0.0, 0.1, 0.2, 0.3]);
    }

    #[test]
    fn eta_grid_never_passes_stop() {
        // The former rule's tolerance of STEP/1000 added 0.3 here, beyond STOP.
        assert_eq!(former_rule(0.0, 0.29995, 0.1).len(), 4);
        assert_eq!(parse_eta_grid("0:0.29995:0.1").unwrap(), [0.0, 0.1, 0.2]);
    }

    #[test]
    fn eta_grid_refusals_name_the_option_and_the_range() {
        for bad in [
            "0:1.5:0.5",
            "0.2:0:0.1",
            "0.2:0:-0.1",
            "0:0.2:0",
            "0:0.2",
            "a:b:c",
            "0:1:0.0001",
        ] {
            let err = parse_eta_grid(bad).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad}");
            let text = err.to_string();
            assert!(text.contains("eta-grid"), "{bad}: {text}");
        }
        let err = parse_eta_grid("0:1.5:0.5").unwrap_err().to_string();
        assert!(err.contains("0 <= START <= STOP <= 1"), "{err}");
    }
}
