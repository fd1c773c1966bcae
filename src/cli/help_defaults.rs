//! Every default a help text states, checked against the value it stands for.
//!
//! Options whose absence means "the library decides" (`Option<T>` fields) cannot let clap print
//! the library's value, so their help writes it as `[default: ...]`; options with a clap default
//! show it the same way. This test reads each option of every command as `--help` shows it and
//! compares every stated default with the library's value (or, for the few defaults that belong
//! to the command line itself, the constant the command uses). A default stated nowhere in the
//! table below, or a table row no option states any more, fails the test too.

use std::collections::{BTreeMap, BTreeSet};

use clap::{CommandFactory, ValueEnum};

use benign::boundary::BoundarySpec;
use benign::classifier::pretrain::{self, PretrainSpec, TokenizerSpec};
use benign::finetune::{self, FinetuneConfig};
use benign::realdata::DatasetName;
use benign::synthetic::config::StepScaling;
use benign::synthetic::subspace::TestDraw;
use benign::synthetic::RunConfig;

use super::Cli;

/// What a stated default must say.
enum Expected {
    /// Exactly these numbers, as a set (a per-dataset default states several).
    Numbers(Vec<f64>),
    /// This word first: a choice's name or a path.
    Word(String),
    /// Text the command's own parser reads as this value (both written with `{:?}`).
    Parsed {
        value: String,
        parse: fn(&str) -> String,
    },
    /// A rule in words (e.g. "all cores", "derived from --seed"): no single value to compare.
    Described,
}

/// How `benign boundary` reads a list of sizes, for [`Expected::Parsed`].
fn boundary_sizes(text: &str) -> String {
    super::boundary::parse_sizes("dims", "d", text)
        .map_or_else(|e| e.to_string(), |sizes| format!("{sizes:?}"))
}

fn word<T: ValueEnum>(value: T) -> Expected {
    Expected::Word(
        value
            .to_possible_value()
            .expect("no skipped variants")
            .get_name()
            .to_string(),
    )
}

fn numbers(values: impl IntoIterator<Item = f64>) -> Expected {
    Expected::Numbers(values.into_iter().collect())
}

fn one(value: impl Into<f64>) -> Expected {
    Expected::Numbers(vec![value.into()])
}

/// A setting's value in every dataset's pretraining spec (`benign pretrain`'s
/// [`PretrainSpec::defaults`] or finetune's [`finetune::backbone`]), over the datasets it
/// applies to.
fn per_dataset(
    spec_of: fn(DatasetName) -> PretrainSpec,
    value: impl Fn(&PretrainSpec) -> Option<f64>,
) -> Expected {
    numbers(
        DatasetName::ALL
            .iter()
            .filter_map(|&name| value(&spec_of(name))),
    )
}

/// `(command, option) -> expected` for every option whose help states a default.
fn table() -> BTreeMap<(&'static str, &'static str), Expected> {
    let run = RunConfig::default();
    let finetune_config = FinetuneConfig::default();
    let gradcheck = benign::gradcheck::Config::default();
    let boundary = BoundarySpec::default();
    let mut rows: Vec<((&str, &str), Expected)> = Vec::new();
    // The synthetic data and training options, in every command that takes them.
    for command in ["run", "sweep", "data export"] {
        rows.push(((command, "samples"), one(run.samples as f64)));
    }
    // `benign boundary` trains from its own base configuration, and hides the options its grid
    // and search set (`-n`, `-d`, `--signal-norm`, `--test-seed`, `--eval-every`).
    let commands = [
        ("run", &run),
        ("sweep", &run),
        ("boundary", &boundary.base),
        ("data export", &run),
    ];
    for (command, base) in commands {
        rows.extend([
            ((command, "tokens"), one(base.tokens as f64)),
            ((command, "rho"), one(base.rho)),
            ((command, "eta"), one(base.eta)),
            ((command, "sigma"), one(base.sigma)),
            ((command, "signal-directions"), word(base.signal_directions)),
            ((command, "label-noise"), word(base.label_noise)),
            ((command, "init"), word(base.init)),
            ((command, "seed"), one(base.seed as f64)),
            ((command, "test-size"), one(base.test_size as f64)),
        ]);
        if command != "boundary" {
            rows.extend([
                ((command, "dim"), one(base.dim as f64)),
                ((command, "signal-norm"), one(base.signal_norm)),
                ((command, "test-seed"), Expected::Described),
            ]);
        }
    }
    for (command, base) in &commands[..3] {
        assert_eq!(base.mlp_dim, None, "--mlp-dim's help says the default is d");
        rows.extend([
            ((*command, "lr"), one(base.lr)),
            ((*command, "steps"), one(base.steps as f64)),
            ((*command, "trainer"), word(base.trainer)),
            ((*command, "precision"), word(base.precision)),
            ((*command, "model"), word(base.model)),
            ((*command, "mlp-dim"), Expected::Described),
        ]);
        if *command != "boundary" {
            rows.push(((*command, "eval-every"), one(base.eval_every as f64)));
        }
    }
    // Progress and threads, in every long command.
    for command in ["run", "sweep", "boundary", "pretrain", "finetune"] {
        rows.extend([
            ((command, "threads"), Expected::Described),
            (
                (command, "log-every"),
                one(super::progress::DEFAULT_LOG_EVERY),
            ),
            (
                (command, "log-format"),
                word(super::progress::LogFormat::Text),
            ),
        ]);
    }
    rows.extend([
        (("bench", "threads"), Expected::Described),
        (("run", "startup-precision"), Expected::Described),
        (("run", "track-samples"), Expected::Described),
        (("run", "test-draw"), word(TestDraw::default())),
        (("run", "calibration"), Expected::Described),
        (("run", "out"), Expected::Described),
        (("sweep", "seeds"), one(super::sweep::DEFAULT_SEEDS as f64)),
        (("sweep", "step-scaling"), word(StepScaling::default())),
        (("sweep", "axes"), Expected::Described),
        (("plot", "axes"), Expected::Described),
        (
            ("boundary", "dims"),
            Expected::Parsed {
                value: format!("{:?}", boundary.dims),
                parse: boundary_sizes,
            },
        ),
        (
            ("boundary", "samples"),
            Expected::Parsed {
                value: format!("{:?}", boundary.samples),
                parse: boundary_sizes,
            },
        ),
        (("boundary", "seeds"), one(boundary.seeds as f64)),
        (
            ("boundary", "snr-range"),
            Expected::Parsed {
                value: format!("{:?}", (boundary.snr_low, boundary.snr_high)),
                parse: |text| {
                    super::boundary::parse_range(text)
                        .map_or_else(|e| e.to_string(), |range| format!("{range:?}"))
                },
            },
        ),
        (
            ("boundary", "bisection-steps"),
            one(boundary.bisection_steps as f64),
        ),
        (("boundary", "step-scaling"), word(boundary.step_scaling)),
        (("boundary", "bootstrap"), one(boundary.bootstrap as f64)),
        (("gradcheck", "seed"), one(gradcheck.seed as f64)),
        (("gradcheck", "step"), one(gradcheck.step)),
        (("gradcheck", "atol"), one(gradcheck.atol)),
        (("gradcheck", "rtol"), one(gradcheck.rtol)),
    ]);
    let checkpoints = Expected::Word(pretrain::DEFAULT_CHECKPOINTS_DIR.to_string());
    rows.extend([
        (("pretrain", "data-dir"), Expected::Word("data".into())),
        (("pretrain", "checkpoints"), checkpoints),
        (("pretrain", "seed"), one(pretrain::DEFAULT_SEED as f64)),
        (
            ("pretrain", "subset"),
            per_dataset(PretrainSpec::defaults, |s| s.subset.map(|n| n as f64)),
        ),
        (
            ("pretrain", "epochs"),
            per_dataset(PretrainSpec::defaults, |s| Some(s.train.epochs as f64)),
        ),
        (
            ("pretrain", "heads"),
            per_dataset(PretrainSpec::defaults, |s| Some(s.model.heads as f64)),
        ),
        (
            ("pretrain", "mlp-dim"),
            per_dataset(PretrainSpec::defaults, |s| Some(s.model.mlp_dim as f64)),
        ),
        (
            ("pretrain", "batch-size"),
            per_dataset(PretrainSpec::defaults, |s| Some(s.train.batch_size as f64)),
        ),
        (
            ("pretrain", "lr"),
            per_dataset(PretrainSpec::defaults, |s| Some(s.train.lr)),
        ),
        (
            ("pretrain", "weight-decay"),
            per_dataset(PretrainSpec::defaults, |s| Some(s.train.weight_decay)),
        ),
        (
            ("pretrain", "schedule"),
            word(PretrainSpec::defaults(DatasetName::Mnist).train.schedule),
        ),
        (
            ("pretrain", "clip-norm"),
            per_dataset(PretrainSpec::defaults, |s| {
                Some(s.train.clip_norm.unwrap_or(0.0))
            }),
        ),
    ]);
    // The backbone's shape: `benign pretrain`'s own options, and finetune's phase-0 ones, which
    // default to the dataset's fine-tuning backbone.
    let backbone = [
        (
            "pretrain",
            PretrainSpec::defaults as fn(DatasetName) -> PretrainSpec,
            ["layers", "dim", "patch", "max-len"],
        ),
        (
            "finetune",
            finetune::backbone as fn(DatasetName) -> PretrainSpec,
            [
                "pretrain-layers",
                "pretrain-dim",
                "pretrain-patch",
                "pretrain-max-len",
            ],
        ),
    ];
    for (command, spec_of, [layers, dim, patch, max_len]) in backbone {
        rows.extend([
            (
                (command, layers),
                per_dataset(spec_of, |s| Some(s.model.layers as f64)),
            ),
            (
                (command, dim),
                per_dataset(spec_of, |s| Some(s.model.dim as f64)),
            ),
            (
                (command, patch),
                per_dataset(spec_of, |s| match s.tokenizer {
                    TokenizerSpec::Patches { patch } => Some(patch as f64),
                    TokenizerSpec::Words { .. } => None,
                }),
            ),
            (
                (command, max_len),
                per_dataset(spec_of, |s| match s.tokenizer {
                    TokenizerSpec::Words { max_len, .. } => Some(max_len as f64),
                    TokenizerSpec::Patches { .. } => None,
                }),
            ),
        ]);
    }
    let checkpoints = Expected::Word(pretrain::DEFAULT_CHECKPOINTS_DIR.to_string());
    let both_phases = |value: fn(&benign::classifier::TrainConfig) -> f64| {
        numbers([
            value(&finetune_config.phase1),
            value(&finetune_config.phase2),
        ])
    };
    rows.extend([
        (("finetune", "data-dir"), Expected::Word("data".into())),
        (("finetune", "checkpoints"), checkpoints),
        (("finetune", "out"), Expected::Word("runs/finetune".into())),
        (("finetune", "n"), numbers([20.0, 200.0, 1000.0])),
        (("finetune", "eta"), numbers([0.0, 0.2])),
        (("finetune", "seeds"), one(3)),
        (
            ("finetune", "epochs"),
            one(finetune_config.phase2.epochs as f64),
        ),
        (
            ("finetune", "lr"),
            numbers(
                DatasetName::ALL
                    .iter()
                    .map(|&name| FinetuneConfig::for_dataset(name).phase2.lr),
            ),
        ),
        (
            ("finetune", "schedule"),
            word(finetune_config.phase2.schedule),
        ),
        (
            ("finetune", "last-heads"),
            numbers(finetune_config.last_heads.map(|h| h as f64)),
        ),
        (
            ("finetune", "score-scale"),
            one(finetune_config.score_scale),
        ),
        (
            ("finetune", "phase1-epochs"),
            one(finetune_config.phase1.epochs as f64),
        ),
        (("finetune", "phase1-lr"), one(finetune_config.phase1.lr)),
        (
            ("finetune", "batch-size"),
            both_phases(|t| t.batch_size as f64),
        ),
        (
            ("finetune", "clip-norm"),
            both_phases(|t| t.clip_norm.unwrap_or(0.0)),
        ),
        (
            ("finetune", "weight-decay"),
            both_phases(|t| t.weight_decay),
        ),
        (
            ("finetune", "test-examples"),
            numbers(finetune_config.test_examples.map(|n| n as f64)),
        ),
        (
            ("finetune", "eval-every"),
            one(finetune_config.eval_every as f64),
        ),
        (
            ("finetune", "pretrain-subset"),
            per_dataset(finetune::backbone, |s| s.subset.map(|n| n as f64)),
        ),
        (
            ("finetune", "pretrain-seed"),
            one(pretrain::DEFAULT_SEED as f64),
        ),
        (("finetune", "last-qk-dim"), Expected::Described),
    ]);
    let mut table = BTreeMap::new();
    for (key, expected) in rows {
        assert!(table.insert(key, expected).is_none(), "{key:?} twice");
    }
    table
}

/// Each option's stated default, as `--help` shows it, by `(command path, long name)`.
fn stated_defaults() -> BTreeMap<(String, String), String> {
    let mut found = BTreeMap::new();
    let mut pending = vec![(String::new(), Cli::command())];
    while let Some((path, command)) = pending.pop() {
        for arg in command.get_arguments() {
            // A hidden option's help is never shown.
            if !arg.get_action().takes_values() || arg.is_hide_set() {
                continue;
            }
            let name = arg
                .get_long()
                .map_or_else(|| arg.get_id().to_string(), str::to_string);
            let help = arg
                .get_long_help()
                .or(arg.get_help())
                .map(ToString::to_string)
                .unwrap_or_default();
            let stated = if let Some(start) = help.find("[default: ") {
                let rest = &help[start + "[default: ".len()..];
                let end = rest.find(']').expect("a closed [default: ...]");
                Some(rest[..end].to_string())
            } else if !arg.get_default_values().is_empty() && !arg.is_hide_default_value_set() {
                let values: Vec<String> = arg
                    .get_default_values()
                    .iter()
                    .map(|v| v.to_string_lossy().into_owned())
                    .collect();
                Some(values.join(","))
            } else {
                None
            };
            if let Some(stated) = stated {
                found.insert((path.clone(), name), stated);
            }
        }
        for sub in command.get_subcommands() {
            let sub_path = if path.is_empty() {
                sub.get_name().to_string()
            } else {
                format!("{path} {}", sub.get_name())
            };
            pending.push((sub_path, sub.clone()));
        }
    }
    found
}

/// The numbers a stated default writes: `10,000` is ten thousand, `20,200` two numbers, and
/// names such as `SST-2` hold none.
fn stated_numbers(text: &str) -> BTreeSet<u64> {
    let chars: Vec<char> = text.chars().collect();
    let mut joined = String::new();
    for (i, &c) in chars.iter().enumerate() {
        let thousands = c == ','
            && i > 0
            && chars[i - 1].is_ascii_digit()
            && chars.len() > i + 3
            && chars[i + 1..i + 4].iter().all(char::is_ascii_digit)
            && !chars
                .get(i + 4)
                .is_some_and(|c| c.is_ascii_digit() || *c == ',');
        if !thousands {
            joined.push(c);
        }
    }
    joined
        .split(|c: char| c.is_whitespace() || ",;:()`'".contains(c))
        .filter_map(|token| token.trim_end_matches('.').parse::<f64>().ok())
        .map(f64::to_bits)
        .collect()
}

#[test]
fn every_stated_default_is_the_value_it_stands_for() {
    let table = table();
    let stated = stated_defaults();
    let mut problems = Vec::new();
    for ((command, option), text) in &stated {
        let Some(expected) = table.get(&(command.as_str(), option.as_str())) else {
            problems.push(format!(
                "{command} --{option} states [default: {text}], which no row of this test checks"
            ));
            continue;
        };
        let agrees = match expected {
            Expected::Numbers(values) => {
                stated_numbers(text) == values.iter().map(|v| v.to_bits()).collect()
            }
            Expected::Word(w) => text.split([' ', ',', ';']).next() == Some(w.as_str()),
            Expected::Parsed { value, parse } => parse(text) == *value,
            Expected::Described => true,
        };
        if !agrees {
            let wanted = match expected {
                Expected::Numbers(values) => format!("the numbers {values:?}"),
                Expected::Word(w) => format!("`{w}` first"),
                Expected::Parsed { value, .. } => format!("{value}, read as the command reads it"),
                Expected::Described => unreachable!(),
            };
            problems.push(format!(
                "{command} --{option} states [default: {text}]; the library's is {wanted}"
            ));
        }
    }
    for (command, option) in table.keys() {
        if !stated.contains_key(&(command.to_string(), option.to_string())) {
            problems.push(format!(
                "{command} --{option} states no default any more: drop its row"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn stated_numbers_read_thousands_lists_and_names() {
    let bits = |values: &[f64]| values.iter().map(|v| v.to_bits()).collect::<BTreeSet<_>>();
    assert_eq!(
        stated_numbers("10,000; TREC 3,000; BreastMNIST 200"),
        bits(&[10_000.0, 3_000.0, 200.0])
    );
    assert_eq!(stated_numbers("20,200,1000"), bits(&[20.0, 200.0, 1000.0]));
    assert_eq!(
        stated_numbers("10 SST-2 and AG news; 1e-3"),
        bits(&[10.0, 1e-3])
    );
    assert_eq!(stated_numbers("log:1e3:1e7:5"), bits(&[1e3, 1e7, 5.0]));
}
