//! One training step of each trainer at the paper's defaults (n = 20, T = 8, d = 2000), and the
//! subspace trainer's start-up (basis, the two streamed passes over W_0, test projections).
//!
//! `cargo bench --bench train_step -- --warm-up-time 1 --measurement-time 2`

use criterion::{criterion_group, criterion_main, Criterion};

use benign::synthetic::data::{training_set, Signals, TestSource};
use benign::synthetic::dense::DenseTrainer;
use benign::synthetic::encoder::{EncoderModel, EncoderTrainer};
use benign::synthetic::init::InitSource;
use benign::synthetic::subspace::{SubspaceSetup, SubspaceTrainer, TestDraw};
use benign::synthetic::{AttentionTrainer, Precision, RunConfig, Trainer};

/// The generated test set of `config` (drawn with its own test seed) and its tokens.
fn test_set(config: &RunConfig, signals: &Signals) -> (TestSource, Vec<f64>) {
    let test = TestSource::Generated {
        config: config.clone(),
        signals: signals.clone(),
        seed: config.effective_test_seed(),
    };
    let mut tokens = Vec::new();
    test.for_each_chunk(100, |_, t| tokens.extend_from_slice(t));
    (test, tokens)
}

fn train_step(c: &mut Criterion) {
    let config = RunConfig::default();
    let signals = Signals::new(&config);
    let train = training_set(&config, &signals);
    let init = InitSource::from_seed(config.seed, config.dim);
    // A small test set: the steps do not touch it, the start-up projects it.
    let test_config = RunConfig {
        test_size: 100,
        ..config.clone()
    };
    let (test, test_tokens) = test_set(&test_config, &signals);
    let extra = [signals.mu_plus.as_slice(), signals.mu_minus.as_slice()];

    let mut group = c.benchmark_group("train_step");
    group.sample_size(10);
    let mut dense =
        DenseTrainer::<f64>::new(&train, &test_tokens, &signals.nu, &init, config.lr).unwrap();
    let mut step = 0;
    group.bench_function("dense_f64_d2000", |b| {
        b.iter(|| {
            step += 1;
            dense.step_logits(step).unwrap()
        })
    });
    let setup = |startup| SubspaceSetup {
        train: &train,
        extra_directions: &extra,
        nu: &signals.nu,
        init: &init,
        test: &test,
        lr: config.lr,
        startup,
        draw: TestDraw::Tokens,
    };
    let mut subspace = SubspaceTrainer::<f64>::new(setup(Precision::F64)).unwrap();
    group.bench_function("subspace_f64_d2000", |b| {
        b.iter(|| {
            step += 1;
            subspace.step_logits(step).unwrap()
        })
    });
    for (name, startup) in [
        ("subspace_startup_f64_d2000_test100", Precision::F64),
        ("subspace_startup_f32_d2000_test100", Precision::F32),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| SubspaceTrainer::<f64>::new(setup(startup)).unwrap())
        });
    }
    group.finish();
}

/// One step of the one-layer transformer encoder (f32, d = mlp = 2000, n = 20, T = 8 + [CLS]),
/// and its evaluation on 1000 test samples.
fn encoder_step(c: &mut Criterion) {
    let config = RunConfig::default();
    let signals = Signals::new(&config);
    let train = training_set(&config, &signals);
    let (_, test_tokens) = test_set(&config, &signals);
    let model = EncoderModel::<f32>::new(config.dim, config.dim, true, config.seed).unwrap();
    let mut trainer = EncoderTrainer::new(
        model,
        config.tokens,
        &train.tokens,
        &train.labels,
        &test_tokens,
        config.lr,
    );
    let mut group = c.benchmark_group("train_step");
    group.sample_size(10);
    let mut step = 0;
    group.bench_function("encoder", |b| {
        b.iter(|| {
            step += 1;
            trainer.step(step).unwrap()
        })
    });
    group.bench_function("encoder_eval_test1000", |b| {
        b.iter(|| trainer.test_readout())
    });
    group.finish();
}

/// One optimizer step of the real-data classifier at its MNIST defaults (4x4 patches: 49 tokens
/// + [CLS], d = 64, 4 heads, 3 blocks, MLP 128, batch 64), on MNIST-shaped random patches.
fn classifier_step(c: &mut Criterion) {
    use benign::classifier::pretrain::{PretrainSpec, TokenizerSpec};
    use benign::classifier::{embed::InputKind, Classifier, ClassifierTrainer, ModelConfig};
    use benign::realdata::{DatasetName, TokenizedSplit, Tokens};
    use rand::{Rng, SeedableRng};

    let spec = PretrainSpec::defaults(DatasetName::Mnist);
    let TokenizerSpec::Patches { patch } = spec.tokenizer else {
        unreachable!("MNIST takes patches")
    };
    let (batch, seq, patch_dim) = (
        spec.train.batch_size,
        (28 / patch) * (28 / patch),
        patch * patch,
    );
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let split = TokenizedSplit {
        n: batch,
        seq_len: seq,
        num_classes: 10,
        tokens: Tokens::Patches {
            patch_dim,
            values: (0..batch * seq * patch_dim)
                .map(|_| rng.random_range(0.0..1.0))
                .collect(),
        },
        labels: (0..batch).map(|_| rng.random_range(0..10)).collect(),
    };
    let config = ModelConfig {
        input: InputKind::Patches { patch_dim },
        seq_len: seq,
        num_classes: 10,
        dim: spec.model.dim,
        heads: spec.model.heads,
        layers: spec.model.layers,
        mlp_dim: spec.model.mlp_dim,
        ln_eps: 1e-5,
    };
    let mut model = Classifier::<f32>::new(config, &mut rng).unwrap();
    let mut train_config = spec.train.clone();
    train_config.epochs = 1_000_000;
    let mut trainer = ClassifierTrainer::new(train_config).unwrap();
    let mut group = c.benchmark_group("train_step");
    group.sample_size(10);
    group.bench_function("classifier", |b| {
        b.iter(|| {
            trainer
                .run_epoch(&mut model, &split, &split.labels, None, &mut |_, _| {})
                .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, train_step, encoder_step, classifier_step);
criterion_main!(benches);
