//! Engine tests of the autodiff tape. Per-op finite-difference checks live in the gradcheck
//! suite (tests/integration/gradcheck.rs); these cover the engine's bookkeeping and the optimizers.

use benign::attention_model::closed_form::{self as attention, TokenShape};
use benign::attention_model::tape as attention_tape;
use benign::autodiff::{
    clip_grad_norm, AdamW, ParamGrad, ParamGroup, ParamStore, Sgd, Tape, Tensor,
};

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + b.abs())
}

/// Deterministic inputs of the attention model without a random generator: value `i` of a
/// vector of phase `phase` is `(wave(i freq + phase) amplitude)` clamped to `[-bound, bound]`.
/// Each test picks its own wave so that the models differ.
struct Wave {
    wave: fn(f64) -> f64,
    freq: f64,
    amplitude: f64,
    bound: f64,
}

impl Wave {
    /// `len` values of phase `phase`, each multiplied by `scale`.
    fn values(&self, len: usize, phase: f64, scale: f64) -> Vec<f64> {
        (0..len)
            .map(|i| {
                let v = ((self.wave)(i as f64 * self.freq + phase) * self.amplitude)
                    .clamp(-self.bound, self.bound);
                scale * v
            })
            .collect()
    }
}

#[test]
fn gradients_accumulate_when_a_value_is_used_several_times() {
    let mut tape = Tape::<f64>::new();
    let x = tape.variable(&[3], &[0.5, -1.0, 2.0]);
    // L = sum(x * x) + sum(3 x) + sum(exp(x)): x feeds four uses.
    let sq = tape.mul(x, x);
    let lin = tape.scale(x, 3.0);
    let e = tape.exp(x);
    let a = tape.add(sq, lin);
    let b = tape.add(a, e);
    let loss = tape.sum_all(b);
    let grads = tape.backward(loss);
    let g = grads.get(x).unwrap();
    for (gi, xi) in g.iter().zip([0.5f64, -1.0, 2.0]) {
        assert!(
            close(*gi, 2.0 * xi + 3.0 + xi.exp(), 1e-14),
            "{gi} vs {}",
            2.0 * xi + 3.0 + xi.exp()
        );
    }
}

#[test]
fn backward_wrt_returns_only_the_requested_leaves() {
    let mut tape = Tape::<f64>::new();
    let a = tape.variable(&[2], &[1.0, 2.0]);
    let b = tape.variable(&[2], &[3.0, 4.0]);
    let c = tape.mul(a, b);
    let loss = tape.sum_all(c);
    let grads = tape.backward_wrt(loss, &[b]);
    assert_eq!(grads.get(b).unwrap(), &[1.0, 2.0]);
    assert!(grads.get(a).is_none());
    // A second pass over the same tape gives the same, and all leaves when not restricted.
    let all = tape.backward(loss);
    assert_eq!(all.get(a).unwrap(), &[3.0, 4.0]);
    assert_eq!(all.get(b).unwrap(), &[1.0, 2.0]);
}

#[test]
fn broadcasting_shapes_and_values() {
    let mut tape = Tape::<f64>::new();
    let m = tape.variable(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let row = tape.variable(&[3], &[10.0, 20.0, 30.0]);
    let col = tape.variable(&[2, 1], &[100.0, 200.0]);
    let s = tape.variable(&[], &[0.5]);
    let r = tape.add(m, row);
    assert_eq!(tape.shape(r).dims(), [2, 3]);
    assert_eq!(tape.value(r), &[11.0, 22.0, 33.0, 14.0, 25.0, 36.0]);
    let c = tape.sub(r, col);
    assert_eq!(
        tape.value(c),
        &[-89.0, -78.0, -67.0, -186.0, -175.0, -164.0]
    );
    let outer = tape.mul(col, row); // [2, 1] x [3] -> [2, 3]
    assert_eq!(tape.shape(outer).dims(), [2, 3]);
    assert_eq!(
        tape.value(outer),
        &[1000.0, 2000.0, 3000.0, 2000.0, 4000.0, 6000.0]
    );
    let scaled = tape.mul(c, s);
    let sum = tape.add(scaled, outer);
    let loss = tape.sum_all(sum);
    let grads = tape.backward(loss);
    // d/d row: each row entry is added to 2 rows (through r) and multiplied by col (outer).
    assert_eq!(grads.get(row).unwrap(), &[2.0 * 0.5 + 300.0; 3]);
    // d/d col: -s per element of its row through c, + sum(row) through outer.
    assert_eq!(grads.get(col).unwrap(), &[-1.5 + 60.0, -1.5 + 60.0]);
    // d/d s: sum of c.
    let sum_c: f64 = [-89.0, -78.0, -67.0, -186.0, -175.0, -164.0].iter().sum();
    assert_eq!(grads.get(s).unwrap(), &[sum_c]);
    let b3 = tape.variable(&[2, 1, 4], &[0.0; 8]);
    let a3 = tape.variable(&[3, 1], &[0.0; 3]);
    let both = tape.add(a3, b3);
    assert_eq!(tape.shape(both).dims(), [2, 3, 4]);
}

#[test]
#[should_panic(expected = "inner dimensions differ")]
fn matmul_shape_mismatch_panics_with_the_shapes() {
    let mut tape = Tape::<f32>::new();
    let a = tape.variable(&[2, 3], &[0.0; 6]);
    let b = tape.variable(&[4, 5], &[0.0; 20]);
    tape.matmul(a, b);
}

#[test]
#[should_panic(expected = "do not broadcast")]
fn incompatible_broadcast_panics() {
    let mut tape = Tape::<f64>::new();
    let a = tape.variable(&[2, 3], &[0.0; 6]);
    let b = tape.variable(&[2], &[0.0; 2]);
    tape.add(a, b);
}

#[test]
#[should_panic(expected = "cleared")]
fn a_handle_from_a_cleared_tape_panics() {
    let mut tape = Tape::<f64>::new();
    let a = tape.variable(&[1], &[1.0]);
    tape.clear();
    tape.value(a);
}

#[test]
fn evaluation_mode_records_nothing() {
    let mut tape = Tape::<f64>::new();
    let (recorded, live) = tape.no_grad(|t| {
        let x = t.variable(&[4, 3], &[0.25; 12]);
        let g = t.variable(&[3], &[1.0; 3]);
        let b = t.variable(&[3], &[0.0; 3]);
        let h = t.layer_norm(x, g, b, 1e-5);
        let logits = t.log_softmax(h, None);
        let loss = t.cross_entropy(logits, &[0, 1, 2, 0]);
        assert!(!t.requires_grad(loss));
        (t.recorded_ops(), t.memory().live_bytes)
    });
    assert_eq!(recorded, 0);
    // Only the values the handles point at: 3 leaves (12 + 3 + 3), layer norm (12),
    // log-softmax (12), loss (1) — no saved statistics (mean, rstd, log-probabilities).
    assert_eq!(live, (12 + 3 + 3 + 12 + 12 + 1) * 8);
    assert!(tape.grad_enabled());
    // The same graph with recording on keeps its backward state.
    let x = tape.variable(&[4, 3], &[0.25; 12]);
    let y = tape.tanh(x);
    tape.sum_all(y);
    assert_eq!(tape.recorded_ops(), 2);
}

#[test]
#[should_panic(expected = "evaluation (no-grad) mode")]
fn backward_through_an_evaluation_value_panics() {
    let mut tape = Tape::<f64>::new();
    tape.set_grad_enabled(false);
    let x = tape.variable(&[2], &[1.0, 2.0]);
    let y = tape.exp(x);
    let loss = tape.sum_all(y);
    tape.set_grad_enabled(true);
    let _ = tape.backward(loss);
}

fn quadratic_store() -> (
    ParamStore<f64>,
    benign::autodiff::ParamId,
    benign::autodiff::ParamId,
) {
    let mut store = ParamStore::new();
    let frozen_group = store.add_group(ParamGroup {
        name: "frozen".into(),
        lr: None,
        weight_decay: None,
        frozen: true,
    });
    let a = store.add("a", Tensor::new(&[2], vec![1.0, -2.0]));
    let b = store.add_to(frozen_group, "b", Tensor::new(&[2], vec![0.5, 0.25]));
    (store, a, b)
}

/// L = sum(c * a * b) with c = (3, -1): dL/da = c b.
fn linear_loss(
    tape: &mut Tape<f64>,
    store: &ParamStore<f64>,
    a: benign::autodiff::ParamId,
    b: benign::autodiff::ParamId,
) -> benign::autodiff::Gradients<f64> {
    tape.clear();
    let av = tape.param(store, a);
    let bv = tape.param(store, b);
    let c = tape.constant(&[2], &[3.0, -1.0]);
    let ab = tape.mul(av, bv);
    let cab = tape.mul(ab, c);
    let loss = tape.sum_all(cab);
    tape.backward(loss)
}

#[test]
fn frozen_parameters_get_no_gradient_and_no_update() {
    let (mut store, a, b) = quadratic_store();
    let mut tape = Tape::new();
    let grads = linear_loss(&mut tape, &store, a, b);
    assert!(
        grads.param(b).is_none(),
        "a frozen parameter enters as a constant"
    );
    assert_eq!(grads.param(a).unwrap(), &[1.5, -0.25]);
    let mut opt = AdamW::new(0.1);
    opt.step(&mut store, &grads);
    assert_eq!(store.value(b), &[0.5, 0.25]);
    assert_ne!(store.value(a), &[1.0, -2.0]);
    // Unfreezing the group makes b trainable again.
    let group = store.group_of(b);
    store.group_mut(group).frozen = false;
    let grads = linear_loss(&mut tape, &store, a, b);
    assert!(grads.param(b).is_some());
}

#[test]
#[allow(clippy::needless_range_loop)] // mirrors the formula coordinate by coordinate
fn sgd_with_momentum_and_weight_decay_matches_hand_computation() {
    let (mut store, a, b) = quadratic_store();
    let mut tape = Tape::new();
    let mut opt = Sgd::new(0.1).with_momentum(0.9).with_weight_decay(0.01);
    let g = [1.5, -0.25]; // c * b, constant
    let mut p = [1.0f64, -2.0];
    let mut buf = [0.0f64; 2];
    for step in 0..3 {
        let grads = linear_loss(&mut tape, &store, a, b);
        tape.clear();
        opt.step(&mut store, &grads);
        for i in 0..2 {
            let d = g[i] + 0.01 * p[i];
            buf[i] = if step == 0 { d } else { 0.9 * buf[i] + d };
            p[i] -= 0.1 * buf[i];
        }
        for i in 0..2 {
            assert!(
                close(store.value(a)[i], p[i], 1e-15),
                "step {step}: {} vs {}",
                store.value(a)[i],
                p[i]
            );
        }
    }
}

#[test]
fn adamw_steps_match_the_formula() {
    let (mut store, a, b) = quadratic_store();
    let mut tape = Tape::new();
    let mut opt = AdamW::<f64>::default(); // lr 1e-3, betas (0.9, 0.999), eps 1e-8, wd 1e-2
    opt.lr = 0.05;
    let g = [1.5, -0.25];
    let mut p = [1.0f64, -2.0];
    let (mut m, mut v) = ([0.0f64; 2], [0.0f64; 2]);
    for t in 1..=3 {
        let grads = linear_loss(&mut tape, &store, a, b);
        tape.clear();
        opt.step(&mut store, &grads);
        for i in 0..2 {
            p[i] *= 1.0 - 0.05 * 0.01;
            m[i] = 0.9 * m[i] + 0.1 * g[i];
            v[i] = 0.999 * v[i] + 0.001 * g[i] * g[i];
            let m_hat = m[i] / (1.0 - 0.9f64.powi(t));
            let v_hat = v[i] / (1.0 - 0.999f64.powi(t));
            p[i] -= 0.05 * m_hat / (v_hat.sqrt() + 1e-8);
            assert!(
                close(store.value(a)[i], p[i], 1e-13),
                "step {t}: {} vs {}",
                store.value(a)[i],
                p[i]
            );
        }
    }
    // First step of Adam moves each coordinate by about lr * sign(g).
    let (mut store, a, b) = quadratic_store();
    let grads = linear_loss(&mut tape, &store, a, b);
    tape.clear();
    AdamW::new(0.05)
        .with_weight_decay(0.0)
        .step(&mut store, &grads);
    assert!(close(store.value(a)[0], 1.0 - 0.05, 1e-6));
    assert!(close(store.value(a)[1], -2.0 + 0.05, 1e-6));
}

#[test]
fn group_learning_rate_overrides_the_optimizer() {
    let mut store = ParamStore::<f64>::new();
    let slow = store.add_group(ParamGroup {
        name: "slow".into(),
        lr: Some(0.01),
        weight_decay: None,
        frozen: false,
    });
    let fast = store.add("fast", Tensor::new(&[1], vec![1.0]));
    let slow_p = store.add_to(slow, "slow", Tensor::new(&[1], vec![1.0]));
    let mut tape = Tape::new();
    let f = tape.param(&store, fast);
    let s = tape.param(&store, slow_p);
    let sum = tape.add(f, s);
    let loss = tape.sum_all(sum);
    let grads = tape.backward(loss);
    tape.clear();
    Sgd::new(1.0).step(&mut store, &grads);
    assert_eq!(store.value(fast), &[0.0]);
    assert_eq!(store.value(slow_p), &[0.99]);
}

#[test]
fn gradient_clipping_scales_to_the_global_norm() {
    let mut tape = Tape::<f64>::new();
    let a = tape.variable(&[1], &[0.0]);
    let b = tape.variable(&[1], &[0.0]);
    let sa = tape.scale(a, 3.0);
    let sb = tape.scale(b, 4.0);
    let s = tape.add(sa, sb);
    let loss = tape.sum_all(s);
    let mut grads = tape.backward(loss);
    let norm = clip_grad_norm(&mut grads, 10.0);
    assert_eq!(norm, 5.0);
    assert_eq!(
        grads.get(a).unwrap(),
        &[3.0],
        "below the bound nothing changes"
    );
    let norm = clip_grad_norm(&mut grads, 1.0);
    assert_eq!(norm, 5.0);
    let (ga, gb) = (grads.get(a).unwrap()[0], grads.get(b).unwrap()[0]);
    assert!(close(ga, 0.6, 1e-6) && close(gb, 0.8, 1e-6));
    assert!(close((ga * ga + gb * gb).sqrt(), 1.0, 1e-6));
}

/// A 1000-step training loop over one tape: after warm-up the tape allocates nothing and holds
/// the same number of bytes at step 10 and at step 1000.
#[test]
fn memory_is_flat_over_1000_training_steps() {
    let shape = TokenShape {
        samples: 6,
        tokens: 4,
        dim: 16,
    };
    let d = shape.dim;
    let wave = Wave {
        wave: f64::sin,
        freq: 0.37,
        amplitude: 1.7,
        bound: 1.0,
    };
    let tokens = wave.values(shape.total_tokens() * d, 0.3, 1.0);
    let labels: Vec<f64> = (0..shape.samples)
        .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 })
        .collect();
    let mut store = ParamStore::<f64>::new();
    let w = store.add("W", Tensor::new(&[d, d], wave.values(d * d, 1.1, 0.2)));
    let p = store.add("p", Tensor::zeros(&[d]));
    let mut opt = AdamW::new(1e-2);
    let mut tape = Tape::new();
    let mut snapshots = Vec::new();
    let mut losses = Vec::new();
    for step in 1..=1000 {
        tape.clear();
        let x = tape.constant(&[shape.total_tokens(), d], &tokens);
        let nu = tape.constant(&[d], &tokens[..d]);
        let vars = attention_tape::AttentionVars {
            tokens: x,
            w: tape.param(&store, w),
            p: tape.param(&store, p),
            nu,
        };
        let loss = attention_tape::record(&mut tape, shape, vars, Some(&labels))
            .loss
            .unwrap();
        losses.push(tape.scalar(loss));
        let mut grads = tape.backward(loss);
        clip_grad_norm(&mut grads, 1.0);
        let stats = tape.memory();
        if step == 10 || step == 1000 {
            snapshots.push(stats);
        }
        tape.clear();
        opt.step(&mut store, &grads);
        tape.recycle_gradients(grads);
    }
    let (early, late) = (snapshots[0], snapshots[1]);
    assert_eq!(
        early.fresh_allocations, late.fresh_allocations,
        "buffers allocated after warm-up"
    );
    assert_eq!(early.live_bytes, late.live_bytes);
    assert_eq!(early.pooled_bytes, late.pooled_bytes);
    assert_eq!(early.node_capacity, late.node_capacity);
    assert!(early.live_bytes > 0);
    assert!(
        losses[999] < losses[0],
        "training lowers the loss: {} -> {}",
        losses[0],
        losses[999]
    );
}

#[test]
fn the_tape_model_matches_the_closed_form_forward_and_gradient() {
    let shape = TokenShape {
        samples: 4,
        tokens: 3,
        dim: 7,
    };
    let d = shape.dim;
    let wave = Wave {
        wave: f64::cos,
        freq: 0.61,
        amplitude: 1.3,
        bound: 1.2,
    };
    let tokens = wave.values(shape.total_tokens() * d, 0.2, 1.0);
    let w = wave.values(d * d, 0.9, 0.3);
    let p = wave.values(d, 1.4, 0.5);
    let nu = wave.values(d, 2.1, 0.4);
    let labels = [1.0, -1.0, -1.0, 1.0];
    let mut tape = Tape::new();
    let ours = attention_tape::loss_and_gradients(&mut tape, shape, &tokens, &labels, &w, &p, &nu);
    let closed = attention::closed_form_gradient(shape, &tokens, &labels, &w, &p, &nu);
    let closed_w = attention::dense_grad_w(&closed.token_direction, &p);
    assert!(close(ours.loss, closed.loss, 1e-14));
    for (a, b) in ours
        .grad_w
        .iter()
        .zip(&closed_w)
        .chain(ours.grad_p.iter().zip(&closed.grad_p))
    {
        assert!(close(*a, *b, 1e-13), "{a} vs {b}");
    }
    let outputs = attention_tape::forward(&mut tape, shape, &tokens, &w, &p, &nu);
    assert_eq!(tape.recorded_ops(), 0);
    let reference = attention::forward(shape, &tokens, &w, &p, &nu);
    for (a, b) in outputs.outputs.iter().zip(&reference.outputs) {
        assert!(close(*a, *b, 1e-14));
    }
    for (a, b) in outputs.attention.iter().zip(&reference.attention) {
        assert!(close(*a, *b, 1e-14));
    }
    // f32 gradients agree with f64 ones to f32 accuracy.
    let to32 = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    let mut tape32 = Tape::<f32>::new();
    let g32 = attention_tape::loss_and_gradients(
        &mut tape32,
        shape,
        &to32(&tokens),
        &to32(&labels),
        &to32(&w),
        &to32(&p),
        &to32(&nu),
    );
    let scale = closed.grad_p.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    for (a, b) in g32.grad_p.iter().zip(&closed.grad_p) {
        assert!((*a as f64 - b).abs() <= 1e-5 * scale.max(1e-3));
    }
}

#[test]
fn layout_ops_produce_expected_values() {
    let mut tape = Tape::<f64>::new();
    let x = tape.variable(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let t = tape.transpose(x, 0, 1);
    assert_eq!(tape.shape(t).dims(), [3, 2]);
    assert_eq!(tape.value(t), &[1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    let cls = tape.select(x, 1, 0);
    assert_eq!(tape.value(cls), &[1.0, 4.0]);
    let c = tape.concat(&[x, x], 0);
    assert_eq!(tape.shape(c).dims(), [4, 3]);
    let e = tape.embedding(x, &[1, 1, 0]);
    assert_eq!(
        tape.value(e),
        &[4.0, 5.0, 6.0, 4.0, 5.0, 6.0, 1.0, 2.0, 3.0]
    );
    let loss = tape.sum_all(e);
    let grads = tape.backward(loss);
    assert_eq!(grads.get(x).unwrap(), &[1.0, 1.0, 1.0, 2.0, 2.0, 2.0]);
}

/// Per-op bookkeeping cost, for `perf stat` (ignored by default): 20 elementwise ops on 8 x 8
/// plus backward, 100,000 times.
#[test]
#[ignore]
fn overhead_loop() {
    let mut tape = Tape::<f64>::new();
    let x = vec![0.5; 64];
    let mut total = 0.0;
    for _ in 0..100_000 {
        tape.clear();
        let mut h = tape.variable(&[8, 8], &x);
        let leaf = h;
        for _ in 0..19 {
            h = tape.scale(h, 0.9);
        }
        let loss = tape.sum_all(h);
        let grads = tape.backward(loss);
        total += grads.get(leaf).unwrap()[0];
        tape.recycle_gradients(grads);
    }
    assert!(total > 0.0);
}

#[test]
fn the_training_entry_point_allocates_nothing_after_the_first_step() {
    let shape = TokenShape {
        samples: 5,
        tokens: 3,
        dim: 12,
    };
    let d = shape.dim;
    let wave = Wave {
        wave: f64::sin,
        freq: 0.83,
        amplitude: 1.5,
        bound: 1.0,
    };
    let inputs = attention_tape::SharedInputs {
        tokens: std::sync::Arc::new(wave.values(shape.total_tokens() * d, 0.1, 1.0)),
        w: std::sync::Arc::new(wave.values(d * d, 0.4, 0.3)),
        p: std::sync::Arc::new(wave.values(d, 0.7, 0.5)),
        nu: std::sync::Arc::new(wave.values(d, 1.9, 0.3)),
    };
    let labels = [1.0, -1.0, 1.0, 1.0, -1.0];
    let mut tape = Tape::new();
    let (mut gw, mut gp) = (Vec::new(), Vec::new());
    let mut allocations = Vec::new();
    for _ in 0..5 {
        attention_tape::loss_and_gradients_into(
            &mut tape, shape, &inputs, &labels, &mut gw, &mut gp,
        );
        allocations.push(tape.memory().fresh_allocations);
    }
    assert_eq!(allocations[1], allocations[4], "{allocations:?}");
    let reference =
        attention_tape::loss_and_gradients_shared(&mut Tape::new(), shape, &inputs, &labels);
    assert_eq!(gw, reference.grad_w);
    assert_eq!(gp, reference.grad_p);
}

/// Every op that saves a buffer for its backward pass (layer norm, linear with GELU,
/// cross-entropy, logistic loss) hands it back to the pool on clear: after a warm-up step the
/// tape allocates nothing, and a cleared tape holds no live bytes.
#[test]
fn saved_buffers_return_to_the_pool() {
    let mut store = ParamStore::<f64>::new();
    let w = store.add(
        "w",
        Tensor::new(&[3, 4], (0..12).map(|i| 0.1 * i as f64 - 0.5).collect()),
    );
    let gamma = store.add("gamma", Tensor::new(&[4], vec![1.0; 4]));
    let beta = store.add("beta", Tensor::zeros(&[4]));
    let x: Vec<f64> = (0..8).map(|i| (i as f64 * 0.7).sin()).collect();
    let mut tape = Tape::new();
    let mut stats = Vec::new();
    for _ in 0..4 {
        tape.clear();
        assert_eq!(tape.memory().live_bytes, 0, "a cleared tape holds nothing");
        let xv = tape.constant(&[2, 4], &x);
        let (g, b) = (tape.param(&store, gamma), tape.param(&store, beta));
        let h = tape.layer_norm(xv, g, b, 1e-5);
        let wv = tape.param(&store, w);
        let logits = tape.linear_gelu(h, wv, None);
        let ce = tape.cross_entropy(logits, &[0, 2]);
        let margin = tape.sum_axis(logits, 1);
        let logistic = tape.logistic_loss(margin, &[1.0, -1.0]);
        let loss = tape.add(ce, logistic);
        let grads = tape.backward(loss);
        assert_eq!(grads.entries().len(), 3);
        tape.recycle_gradients(grads);
        stats.push(tape.memory());
    }
    tape.clear();
    assert_eq!(tape.memory().live_bytes, 0);
    assert_eq!(stats[1].fresh_allocations, stats[3].fresh_allocations);
    assert_eq!(stats[1].live_bytes, stats[3].live_bytes);
}

#[test]
fn gradients_are_found_by_parameter_and_chunks_sum_by_parameter() {
    let mut store = ParamStore::<f64>::new();
    let a = store.add("a", Tensor::new(&[2], vec![1.0, 2.0]));
    let b = store.add("b", Tensor::new(&[2], vec![3.0, 4.0]));
    let c = store.add("c", Tensor::new(&[1], vec![0.5]));
    let mut tapes: Vec<Tape<f64>> = (0..3).map(|_| Tape::new()).collect();
    let mut parts = Vec::new();
    for (i, tape) in tapes.iter_mut().enumerate() {
        // L = (i + 1) c sum(a b): dL/da = (i + 1) c b, dL/db = (i + 1) c a, dL/dc = (i + 1) 11.
        let (av, bv, cv) = (
            tape.param(&store, a),
            tape.param(&store, b),
            tape.param(&store, c),
        );
        let ab = tape.mul(av, bv);
        let abc = tape.mul(ab, cv);
        let scaled = tape.scale(abc, (i + 1) as f64);
        let loss = tape.sum_all(scaled);
        let grads = tape.backward(loss);
        assert_eq!(grads.param(c).unwrap(), &[11.0 * (i + 1) as f64]);
        if i == 0 {
            // Taking a leaf's gradient out moves another entry; the index follows it.
            let mut copy = tape.backward(loss);
            assert_eq!(copy.take(av).unwrap(), &[1.5, 2.0]);
            assert!(copy.param(a).is_none());
            assert_eq!(copy.param(b).unwrap(), &[0.5, 1.0]);
            assert_eq!(copy.param(c).unwrap(), &[11.0]);
            tape.recycle_gradients(copy);
        }
        parts.push(grads);
    }
    let sum = benign::autodiff::sum_chunk_gradients(parts, &mut tapes);
    assert_eq!(sum.param(a).unwrap(), &[9.0, 12.0]);
    assert_eq!(sum.param(b).unwrap(), &[3.0, 6.0]);
    assert_eq!(sum.param(c).unwrap(), &[66.0]);
}

/// What one pass of [`factored_network`] gives, as bits: each parameter's formed gradient, each
/// parameter after one plain SGD step, and which gradients the pass held as factors.
#[derive(Debug, PartialEq)]
struct NetworkStep {
    gradients: Vec<Option<Vec<u64>>>,
    params: Vec<Vec<u64>>,
    held_as_factors: Vec<bool>,
}

/// A small network whose parameters cover each case of `backward_factored`: a linear weight
/// and a product's right operand read once on 6 rows (kept as factors), a bias, a weight read
/// twice, a weight applied to one row and one applied to more rows than
/// `SINGLE_PASS_DEPTH` (formed), through a factored or a plain pass.
fn factored_network(factored: bool) -> NetworkStep {
    let draw = |n: usize, phase: f64| -> Vec<f64> {
        (0..n).map(|i| (0.37 * i as f64 + phase).sin()).collect()
    };
    let mut store = ParamStore::<f64>::new();
    let ids = [
        store.add("linear", Tensor::new(&[5, 7], draw(35, 0.1))),
        store.add("bias", Tensor::new(&[5], draw(5, 0.2))),
        store.add("right", Tensor::new(&[5, 4], draw(20, 0.3))),
        store.add("twice", Tensor::new(&[4, 4], draw(16, 0.4))),
        store.add("one_row", Tensor::new(&[3, 4], draw(12, 0.5))),
        store.add("deep", Tensor::new(&[3, 4], draw(12, 0.7))),
    ];
    let mut tape = Tape::new();
    let [linear, bias, right, twice, one_row, deep] = ids.map(|id| tape.param(&store, id));
    let x = tape.constant(&[6, 7], &draw(42, 0.6));
    let h = tape.linear_gelu(x, linear, Some(bias));
    let r = tape.matmul(h, right);
    let r = tape.matmul(r, twice);
    let r = tape.linear(r, twice, None);
    let last = tape.mean_axis(r, 0);
    let last = tape.reshape(last, &[1, 4]);
    let out = tape.linear(last, one_row, None);
    // applied to more rows than a single-pass product is deep
    let rows = benign_kernels::SINGLE_PASS_DEPTH + 1;
    let deep_x = tape.constant(&[rows, 4], &draw(rows * 4, 0.8));
    let deep_out = tape.linear(deep_x, deep, None);
    let (out, deep_out) = (tape.mean_all(out), tape.mean_all(deep_out));
    let loss = tape.add(out, deep_out);
    let mut grads = if factored {
        tape.backward_factored(loss)
    } else {
        tape.backward(loss)
    };
    let held_as_factors: Vec<bool> = ids
        .iter()
        .map(|&id| {
            grads
                .param_grad(id)
                .is_some_and(|g| matches!(g, ParamGrad::Factored(_)))
        })
        .collect();
    tape.clear();
    Sgd::new(0.3).step_finite(&mut store, &grads).unwrap();
    let to_bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let params = ids.iter().map(|&id| to_bits(store.value(id))).collect();
    grads.densify();
    let gradients = ids.iter().map(|&id| grads.param(id).map(to_bits)).collect();
    NetworkStep {
        gradients,
        params,
        held_as_factors,
    }
}

#[test]
fn factored_backward_keeps_the_shallow_weight_gradients_and_changes_no_bit() {
    let plain = factored_network(false);
    let factored = factored_network(true);
    assert_eq!(plain.held_as_factors, [false; 6]);
    assert_eq!(
        factored.held_as_factors,
        [true, false, true, false, false, false]
    );
    assert_eq!(
        factored.gradients, plain.gradients,
        "formed factors against plain gradients"
    );
    assert_eq!(factored.params, plain.params, "one SGD step");
}
