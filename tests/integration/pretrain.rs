//! The transformer classifier, its trainer, checkpoints and `benign pretrain`: gradient check of
//! the whole multi-head model with padding, determinism across seeds and thread counts,
//! checkpoint round trips, resumption, reuse by key, and small training runs that must learn.

use std::path::{Path, PathBuf};

use benign::autodiff::{Tape, Var};
use benign::classifier::checkpoint;
use benign::classifier::embed::InputKind;
use benign::classifier::pretrain::{self, PretrainOptions, PretrainSpec, TokenizerSpec};
use benign::classifier::{Classifier, ClassifierTrainer, Evaluation, ModelConfig, TrainConfig};
use benign::gradcheck::{self, Case, CaseKind, Domain, Input, Mode};
use benign::kernels::Float;
use benign::realdata::{DatasetName, TokenizedSplit, Tokens, PAD_ID};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn scratch(name: &str) -> PathBuf {
    super::temp_scratch("pretrain", name)
}

// ---- gradient check --------------------------------------------------------------------------

/// Two blocks, two heads, text with padding (examples of 5, 3 and 1 real tokens of 5).
fn tiny_text_config() -> ModelConfig {
    ModelConfig {
        input: InputKind::Words { vocab_size: 7 },
        seq_len: 5,
        num_classes: 3,
        dim: 8,
        heads: 2,
        layers: 2,
        mlp_dim: 12,
        ln_eps: 1e-5,
    }
}

fn tiny_text_split() -> TokenizedSplit {
    let p = PAD_ID;
    TokenizedSplit {
        n: 3,
        seq_len: 5,
        num_classes: 3,
        tokens: Tokens::Words {
            vocab_size: 7,
            ids: vec![2, 3, 4, 5, 6, 6, 2, 1, p, p, 3, p, p, p, p],
        },
        labels: vec![2, 0, 1],
    }
}

fn tiny_patch_config() -> ModelConfig {
    ModelConfig {
        input: InputKind::Patches { patch_dim: 4 },
        seq_len: 3,
        num_classes: 2,
        dim: 6,
        heads: 3,
        layers: 1,
        mlp_dim: 5,
        ln_eps: 1e-5,
    }
}

fn tiny_patch_split() -> TokenizedSplit {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    TokenizedSplit {
        n: 2,
        seq_len: 3,
        num_classes: 2,
        tokens: Tokens::Patches {
            patch_dim: 4,
            values: (0..24).map(|_| rng.random_range(0.0..1.0)).collect(),
        },
        labels: vec![1, 0],
    }
}

fn classifier_loss<T: Float>(
    tape: &mut Tape<T>,
    vars: &[Var],
    config: ModelConfig,
    split: &TokenizedSplit,
) -> Var {
    let model = Classifier::<T>::new(config, &mut ChaCha8Rng::seed_from_u64(1)).unwrap();
    let indices: Vec<usize> = (0..split.n).collect();
    let forward = model.forward_vars(tape, vars, split, &indices);
    let labels: Vec<usize> = split.labels.iter().map(|&c| c as usize).collect();
    tape.cross_entropy(forward.logits, &labels)
}

fn text_loss<T: Float>(tape: &mut Tape<T>, vars: &[Var]) -> Var {
    classifier_loss(tape, vars, tiny_text_config(), &tiny_text_split())
}

fn patch_loss<T: Float>(tape: &mut Tape<T>, vars: &[Var]) -> Var {
    classifier_loss(tape, vars, tiny_patch_config(), &tiny_patch_split())
}

/// A gradcheck case over every parameter of a model of `config`, drawn around its initial
/// scale (`N(0, 0.5^2)`; LayerNorm gains near 1).
fn case(name: &str, config: ModelConfig, build: gradcheck::Builder) -> Case {
    let model = Classifier::<f64>::new(config, &mut ChaCha8Rng::seed_from_u64(1)).unwrap();
    let inputs = model
        .store
        .ids()
        .map(|id| {
            let name = model.store.name(id);
            let dims = model.store.shape(id).dims().to_vec();
            let domain = if name.ends_with("ln1.weight")
                || name.ends_with("ln2.weight")
                || name == "norm.weight"
            {
                Domain::Positive
            } else {
                Domain::Normal(0.5)
            };
            Input::var_in("param", &dims, domain)
        })
        .collect();
    Case {
        kind: CaseKind::Model,
        family: "classifier",
        name: format!("classifier/{name}"),
        inputs,
        build,
        mode: Mode::Direction,
        // The key bias adds q.b_k to every score of a query, which the softmax cancels: its
        // true gradient is zero and the f32-vs-f64 check would compare rounding noise. The
        // ops' f32 accuracy is checked op by op in the gradcheck suite.
        f32: false,
        taylor: true,
        threads: true,
        extra: None,
    }
}

fn assert_all_passed(case: &Case) {
    let results = gradcheck::run_case(case, &gradcheck::Config::default());
    assert!(results.iter().any(|r| r.check == "direction"));
    for r in &results {
        assert!(
            r.passed,
            "{} {} {}: abs {:.3e} rel {:.3e} ({}) {}",
            r.case, r.check, r.input, r.max_abs_error, r.max_rel_error, r.tolerance, r.detail
        );
    }
}

#[test]
fn gradient_check_of_the_multi_head_text_model_with_padding() {
    assert_all_passed(&case(
        "text_L2_H2_pad",
        tiny_text_config(),
        benign::gradcheck_builder!(text_loss),
    ));
}

#[test]
fn gradient_check_of_the_patch_model() {
    assert_all_passed(&case(
        "patch_L1_H3",
        tiny_patch_config(),
        benign::gradcheck_builder!(patch_loss),
    ));
}

#[test]
fn padding_tokens_do_not_change_the_logits() {
    let model =
        Classifier::<f64>::new(tiny_text_config(), &mut ChaCha8Rng::seed_from_u64(3)).unwrap();
    let split = tiny_text_split();
    let mut other = split.clone();
    // Same real tokens, different content at padded positions: only the mask marks them, so
    // give the padded slots a real id in a copy whose mask must still come from PAD.
    let logits = |split: &TokenizedSplit| {
        let mut tape = Tape::new();
        let f = model.forward(&mut tape, split, &[0, 1, 2]);
        (
            tape.value(f.logits).to_vec(),
            benign::classifier::model::cls_attention(&tape, &f),
        )
    };
    let (base, attention) = logits(&split);
    // Attention of [CLS] on padded keys is exactly zero.
    let seq = 6;
    for head in 0..2 {
        let row = &attention[(2 * 2 + head) * seq..(2 * 2 + head + 1) * seq];
        assert!(row[2..].iter().all(|&p| p == 0.0), "{row:?}");
        assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }
    // Appending more padding (longer sequences) leaves the logits unchanged up to rounding.
    if let Tokens::Words { ids, .. } = &mut other.tokens {
        let mut longer = Vec::new();
        for row in ids.chunks(5) {
            longer.extend_from_slice(row);
            longer.extend_from_slice(&[PAD_ID; 2]);
        }
        *ids = longer;
    }
    other.seq_len = 7;
    let config = ModelConfig {
        seq_len: 7,
        ..tiny_text_config()
    };
    let mut longer_model =
        Classifier::<f64>::new(config, &mut ChaCha8Rng::seed_from_u64(3)).unwrap();
    // Same parameters; positions 0..6 copied, the two extra rows are only seen by padding.
    for id in model.store.ids() {
        let name = model.store.name(id).to_string();
        let target = longer_model.store.id(&name).unwrap();
        let src = model.store.value(id).to_vec();
        longer_model.store.value_mut(target)[..src.len()].copy_from_slice(&src);
    }
    let mut tape = Tape::new();
    let f = longer_model.forward(&mut tape, &other, &[0, 1, 2]);
    for (a, b) in base.iter().zip(tape.value(f.logits)) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }
}

// ---- toy data ---------------------------------------------------------------------------------

/// Images of 4 patches of 4 values: class c has bright patch c (plus noise everywhere).
fn toy_patches(n: usize, seed: u64) -> TokenizedSplit {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut values = Vec::with_capacity(n * 16);
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let class = rng.random_range(0..4u32);
        for patch in 0..4 {
            for _ in 0..4 {
                let signal = if patch == class { 0.8 } else { 0.0 };
                values.push(signal + rng.random_range(0.0..0.3f32));
            }
        }
        labels.push(class);
    }
    TokenizedSplit {
        n,
        seq_len: 4,
        num_classes: 4,
        tokens: Tokens::Patches {
            patch_dim: 4,
            values,
        },
        labels,
    }
}

/// Sentences of 1..=6 random filler words (ids 4..20), padded to 8; class 1 contains word 2
/// somewhere, class 0 word 3.
fn toy_words(n: usize, seed: u64) -> TokenizedSplit {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut ids = Vec::with_capacity(n * 8);
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let class = rng.random_range(0..2u32);
        let len = rng.random_range(1..=6usize);
        let marker = rng.random_range(0..len);
        for t in 0..8 {
            ids.push(if t >= len {
                PAD_ID
            } else if t == marker {
                3 - class
            } else {
                rng.random_range(4..20)
            });
        }
        labels.push(class);
    }
    TokenizedSplit {
        n,
        seq_len: 8,
        num_classes: 2,
        tokens: Tokens::Words {
            vocab_size: 20,
            ids,
        },
        labels,
    }
}

fn toy_model(split: &TokenizedSplit, seed: u64) -> Classifier<f32> {
    let config = ModelConfig {
        input: InputKind::of(split),
        seq_len: split.seq_len,
        num_classes: split.num_classes,
        dim: 16,
        heads: 2,
        layers: 2,
        mlp_dim: 32,
        ln_eps: 1e-5,
    };
    Classifier::new(config, &mut ChaCha8Rng::seed_from_u64(seed)).unwrap()
}

fn toy_train_config(epochs: usize) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: 20,
        lr: 3e-3,
        chunk_size: 8,
        seed: 11,
        ..TrainConfig::default()
    }
}

fn train(
    model: &mut Classifier<f32>,
    split: &TokenizedSplit,
    config: TrainConfig,
    threads: usize,
) -> ClassifierTrainer<f32> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let mut trainer = ClassifierTrainer::new(config).unwrap();
        while trainer.epochs_done < trainer.config.epochs {
            trainer
                .run_epoch(model, split, &split.labels, None, &mut |_, _| {})
                .unwrap();
        }
        trainer
    })
}

fn params(model: &Classifier<f32>) -> Vec<Vec<u32>> {
    model
        .store
        .ids()
        .map(|id| model.store.value(id).iter().map(|v| v.to_bits()).collect())
        .collect()
}

/// A toy model of seed `seed` trained on `split` for 12 epochs on two threads, evaluated on
/// `split` itself and on `test`.
fn learn_toy(split: &TokenizedSplit, test: &TokenizedSplit, seed: u64) -> [Evaluation; 2] {
    let mut model = toy_model(split, seed);
    let mut trainer = train(&mut model, split, toy_train_config(12), 2);
    [split, test].map(|s| trainer.evaluate(&model, s, &s.labels).unwrap())
}

#[test]
fn toy_images_are_learned() {
    let [train_eval, test_eval] = learn_toy(&toy_patches(400, 1), &toy_patches(200, 2), 3);
    assert!(train_eval.accuracy >= 0.95, "{train_eval:?}");
    assert!(test_eval.accuracy >= 0.95, "{test_eval:?}");
    assert!(test_eval.loss < 0.3, "{test_eval:?}");
}

#[test]
fn toy_sentences_with_padding_are_learned() {
    let [_, test_eval] = learn_toy(&toy_words(300, 4), &toy_words(200, 5), 6);
    assert!(test_eval.accuracy >= 0.95, "{test_eval:?}");
    assert!(test_eval.mean_max_cls_attention > 0.0 && test_eval.mean_max_cls_attention <= 1.0);
}

#[test]
fn training_is_deterministic_for_a_seed_and_any_thread_count() {
    let split = toy_words(90, 7);
    let run = |threads, seed| {
        let mut model = toy_model(&split, 8);
        let config = TrainConfig {
            seed,
            ..toy_train_config(2)
        };
        train(&mut model, &split, config, threads);
        params(&model)
    };
    let one = run(1, 11);
    assert_eq!(one, run(2, 11), "1 vs 2 threads");
    assert_eq!(one, run(3, 11), "1 vs 3 threads");
    assert_ne!(one, run(1, 12), "another shuffling seed changes the result");
}

#[test]
fn checkpoints_round_trip_and_resume_exactly() {
    let dir = scratch("roundtrip");
    let split = toy_words(60, 9);
    // Two epochs straight.
    let mut straight = toy_model(&split, 10);
    train(&mut straight, &split, toy_train_config(2), 2);
    // One epoch, a checkpoint, then a fresh process-like resume for the second.
    let mut first = toy_model(&split, 10);
    let config = toy_train_config(2);
    let mut trainer = ClassifierTrainer::new(config.clone()).unwrap();
    trainer
        .run_epoch(&mut first, &split, &split.labels, None, &mut |_, _| {})
        .unwrap();
    let path = dir.join("ck.safetensors");
    let mut metadata = std::collections::BTreeMap::new();
    metadata.insert("note".to_string(), "hello".to_string());
    checkpoint::save(&path, &first, Some(&trainer), &metadata).unwrap();
    let loaded = checkpoint::load::<f32>(&path).unwrap();
    assert_eq!(params(&loaded.model), params(&first));
    assert_eq!(loaded.model.config, first.config);
    assert_eq!(
        loaded.metadata.get("note").map(String::as_str),
        Some("hello")
    );
    assert_eq!(loaded.state.epochs_done, 1);
    assert_eq!(loaded.state.steps_done, 3);
    // Every parameter but the last block's key bias has moments: the [CLS]-only last block
    // folds the key into the query, and that bias shifts all of a row's scores alike, which
    // the softmax cancels. It never gets a gradient, so AdamW never steps it (as PyTorch skips a
    // parameter whose `grad` is None).
    let key_bias = loaded.model.store.id("blocks.1.attn.key.bias").unwrap();
    assert!(loaded.moments.iter().all(|m| m.param != key_bias));
    assert_eq!(loaded.moments.len(), loaded.model.store.len() - 1);
    let mut resumed = loaded.model;
    let mut trainer = ClassifierTrainer::new(config).unwrap();
    trainer.restore(
        loaded.moments,
        loaded.state.epochs_done,
        loaded.state.steps_done,
    );
    trainer
        .run_epoch(&mut resumed, &split, &split.labels, None, &mut |_, _| {})
        .unwrap();
    assert_eq!(params(&resumed), params(&straight));

    // A truncated or foreign file is an error naming the file, not a panic.
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = checkpoint::load::<f32>(&path)
        .err()
        .expect("truncated file");
    assert!(err.to_string().contains("ck.safetensors"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn fine_tuning_hooks_freeze_and_reinitialize() {
    let split = toy_words(40, 12);
    let mut model = toy_model(&split, 13);
    let qk = model.last_query_key();
    assert_eq!(qk.len(), 4);
    for id in &qk {
        assert!(model.store.name(*id).starts_with("blocks.1.attn."));
    }
    let head = model.head_params();
    assert_eq!(head.len(), 2);
    let before = params(&model);
    model.reinitialize(&qk, &mut ChaCha8Rng::seed_from_u64(1));
    let after = params(&model);
    for id in model.store.ids() {
        let changed = before[id.index()] != after[id.index()];
        assert_eq!(changed, qk.contains(&id), "{}", model.store.name(id));
    }
    model.freeze_all_except(&qk);
    let frozen = params(&model);
    train(&mut model, &split, toy_train_config(1), 1);
    let trained = params(&model);
    // The last key bias cancels in the softmax: it has no gradient and stays (see
    // `checkpoints_round_trip_and_resume_exactly`).
    let key_bias = model.store.id("blocks.1.attn.key.bias").unwrap();
    for id in model.store.ids() {
        assert_eq!(
            frozen[id.index()] != trained[id.index()],
            qk.contains(&id) && id != key_bias,
            "{}",
            model.store.name(id)
        );
    }
}

// ---- benign pretrain on fixture files ---------------------------------------------------------

fn write_idx(path: &Path, dims: &[u32], data: &[u8]) {
    let mut bytes = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend_from_slice(data);
    std::fs::write(path, bytes).unwrap();
}

/// An MNIST-format folder of 8x8 images (120 training, 40 test): class 0 has a bright top half,
/// class 1 a bright bottom half.
pub(crate) fn mnist_fixture(root: &Path) {
    let dir = root.join("mnist");
    std::fs::create_dir_all(&dir).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    for (prefix, n) in [("train", 120u32), ("t10k", 40)] {
        let mut pixels = Vec::new();
        let mut labels = Vec::new();
        for i in 0..n {
            let class = (i % 2) as u8;
            for row in 0..8 {
                for _ in 0..8 {
                    let bright = (row < 4) == (class == 0);
                    let base: u8 = if bright { 180 } else { 20 };
                    pixels.push(base + rng.random_range(0..60u8));
                }
            }
            labels.push(class);
        }
        write_idx(
            &dir.join(format!("{prefix}-images-idx3-ubyte")),
            &[n, 8, 8],
            &pixels,
        );
        write_idx(
            &dir.join(format!("{prefix}-labels-idx1-ubyte")),
            &[n],
            &labels,
        );
    }
}

fn fixture_spec() -> PretrainSpec {
    let mut spec = PretrainSpec::defaults(DatasetName::Mnist);
    spec.subset = Some(100);
    spec.tokenizer = TokenizerSpec::Patches { patch: 4 };
    spec.model.dim = 16;
    spec.model.heads = 2;
    spec.model.layers = 1;
    spec.model.mlp_dim = 16;
    spec.train.epochs = 4;
    spec.train.batch_size = 10;
    spec.train.lr = 3e-3;
    spec
}

#[test]
fn pretrain_trains_saves_and_reuses_by_key() {
    let root = scratch("reuse");
    mnist_fixture(&root.join("data"));
    let options = PretrainOptions {
        data_dir: root.join("data"),
        out: root.join("out"),
        force: false,
    };
    let spec = fixture_spec();
    let mut epochs_seen = 0;
    let (first, model, data) = pretrain::pretrain(&spec, &options, &mut |e| {
        if let pretrain::Event::Epoch(_) = e {
            epochs_seen += 1
        }
    })
    .unwrap();
    assert_eq!(epochs_seen, 4);
    assert!(!first.reused);
    assert_eq!(first.train_examples, 100);
    assert_eq!(data.subset.len(), 100);
    assert!(first.test_accuracy >= 0.9, "{first:?}");
    let dir = spec.run_dir(&options.out);
    for file in ["checkpoint.safetensors", "metrics.jsonl", "result.json"] {
        assert!(dir.join(file).exists(), "{file}");
    }
    let metrics = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 4);

    // Same settings: reused without training, same parameters and figures.
    let mut trained_again = false;
    let (second, reused_model, _) = pretrain::pretrain(&spec, &options, &mut |e| {
        if let pretrain::Event::Epoch(_) = e {
            trained_again = true
        }
    })
    .unwrap();
    assert!(second.reused && !trained_again);
    assert_eq!(second.test_accuracy, first.test_accuracy);
    assert_eq!(params(&reused_model), params(&model));

    // Another seed is another key; `force` retrains (to the same result: deterministic).
    let mut other = spec.clone();
    other.seed = 1;
    assert_ne!(other.key(), spec.key());
    let forced = PretrainOptions {
        force: true,
        ..options.clone()
    };
    let (third, forced_model, _) = pretrain::pretrain(&spec, &forced, &mut |_| {}).unwrap();
    assert!(!third.reused);
    assert_eq!(params(&forced_model), params(&model));

    // A run killed after its second epoch's checkpoint resumes from it to the same result.
    let killed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pretrain::pretrain(&spec, &forced, &mut |e| {
            if let pretrain::Event::Epoch(m) = e {
                assert!(m.epoch < 2, "killed after epoch {}", m.epoch);
            }
        })
    }));
    assert!(killed.is_err());
    assert!(
        !dir.join("result.json").exists(),
        "a retraining run drops the old result"
    );
    let partial = checkpoint::load::<f32>(&dir.join("checkpoint.safetensors")).unwrap();
    assert_eq!(partial.state.epochs_done, 2);
    let mut resumed_epochs = Vec::new();
    let (resumed, resumed_model, _) = pretrain::pretrain(&spec, &options, &mut |e| {
        if let pretrain::Event::Epoch(m) = e {
            resumed_epochs.push(m.epoch)
        }
    })
    .unwrap();
    assert_eq!(resumed_epochs, vec![3, 4]);
    assert!(!resumed.reused);
    assert_eq!(params(&resumed_model), params(&model));
    assert_eq!(resumed.test_accuracy, first.test_accuracy);
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn pretrain_cli_rejects_a_missing_data_dir() {
    let missing = scratch("missing").join("nowhere");
    let output = super::bin()
        .args(["pretrain", "--dataset", "mnist", "--data-dir"])
        .arg(&missing)
        .output()
        .unwrap();
    let stderr = super::exit_stderr(&output, 2, "a missing --data-dir");
    assert!(
        stderr.contains("nowhere") && stderr.contains("data-dir"),
        "{stderr}"
    );
    let output = super::bin()
        .args(["pretrain", "--dataset", "imagenet", "--data-dir", "."])
        .output()
        .unwrap();
    // The parser refuses it, naming the option and every valid dataset.
    let stderr = super::exit_stderr(&output, 2, "--dataset imagenet");
    assert!(
        stderr.contains("--dataset")
            && stderr.contains("fashion-mnist")
            && stderr.contains("agnews"),
        "{stderr}"
    );
}
