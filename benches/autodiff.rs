//! Autodiff overhead: a 20-op graph on 8 x 8 tensors (per-op cost), and the paper's attention
//! model at d = 2000, n = 20, T = 8 on the tape next to the hand-written closed form.
//!
//! `cargo bench --bench autodiff -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::sync::Arc;

use benign::attention_model::closed_form::{self as attention, TokenShape};
use benign::attention_model::tape::{self as attention_tape, SharedInputs};
use benign::autodiff::{Tape, Var};
use benign_kernels::Float;
use criterion::{criterion_group, criterion_main, Criterion};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Twenty recorded ops, then backward.
fn twenty_ops<T: Float>(
    tape: &mut Tape<T>,
    x: &[T],
    w: &[T],
    b: &[T],
    gamma: &[T],
    beta: &[T],
) -> T {
    tape.clear();
    let x = tape.variable(&[8, 8], x);
    let w = tape.variable(&[8, 8], w);
    let b = tape.variable(&[8], b);
    let gamma = tape.variable(&[8], gamma);
    let beta = tape.variable(&[8], beta);
    let h = tape.matmul(x, w); // 1
    let h = tape.add(h, b); // 2
    let t = tape.tanh(h); // 3
    let m = tape.mul(t, x); // 4
    let s = tape.sub(m, x); // 5
    let s = tape.scale(s, T::from_f64(0.5)); // 6
    let e = tape.exp(s); // 7
    let l = tape.log(e); // 8
    let a = tape.softmax(l, None); // 9
    let c = tape.matmul_t(a, w, false, true); // 10
    let r = tape.relu(c); // 11
    let g = tape.gelu(r); // 12
    let n = tape.layer_norm(g, gamma, beta, T::from_f64(1e-5)); // 13
    let tr = tape.transpose(n, 0, 1); // 14
    let re = tape.reshape(tr, &[4, 16]); // 15
    let re = tape.reshape(re, &[8, 8]); // 16
    let mean = tape.mean_axis(re, 1); // 17
    let mb = tape.mul(mean, b); // 18
    let ls = tape.log_softmax(mb, None); // 19
    let loss: Var = tape.sum_all(ls); // 20
    let grads = tape.backward(loss);
    let out = tape.scalar(loss);
    tape.recycle_gradients(grads);
    out
}

fn bench_small_graph(c: &mut Criterion) {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut v = |n: usize| {
        (0..n)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect::<Vec<f64>>()
    };
    let (x, w, b, gamma, beta) = (v(64), v(64), v(8), v(8), v(8));
    let mut group = c.benchmark_group("autodiff_20_op_graph_8x8");
    let mut tape = Tape::<f64>::new();
    group.bench_function("f64_forward_backward", |bench| {
        bench.iter(|| black_box(twenty_ops(&mut tape, &x, &w, &b, &gamma, &beta)))
    });
    let f = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    let (x, w, b, gamma, beta) = (f(&x), f(&w), f(&b), f(&gamma), f(&beta));
    let mut tape = Tape::<f32>::new();
    group.bench_function("f32_forward_backward", |bench| {
        bench.iter(|| black_box(twenty_ops(&mut tape, &x, &w, &b, &gamma, &beta)))
    });
    // Pure bookkeeping: 20 cheap elementwise ops.
    let mut tape = Tape::<f64>::new();
    let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    group.bench_function("f64_20_scale_ops_overhead", |bench| {
        bench.iter(|| {
            tape.clear();
            let mut h = tape.variable(&[8, 8], &x64);
            let leaf = h;
            for _ in 0..19 {
                h = tape.scale(h, 0.9);
            }
            let loss = tape.sum_all(h);
            let grads = tape.backward(loss);
            let g = black_box(grads.get(leaf).map(|g| g[0]));
            tape.recycle_gradients(grads);
            g
        })
    });
    group.finish();
}

fn bench_attention<T: Float>(c: &mut Criterion) {
    let shape = TokenShape {
        samples: 20,
        tokens: 8,
        dim: 2000,
    };
    let d = shape.dim;
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let scale = 1.0 / (d as f64).sqrt();
    let mut draw = |n: usize, s: f64| {
        (0..n)
            .map(|_| T::from_f64(rng.random_range(-s..s)))
            .collect::<Vec<T>>()
    };
    let tokens = draw(shape.total_tokens() * d, 2.0);
    let w = draw(d * d, scale);
    let p = draw(d, 3.0 * scale);
    let nu = draw(d, scale);
    let labels: Vec<T> = (0..shape.samples)
        .map(|i| T::from_f64(if i % 2 == 0 { 1.0 } else { -1.0 }))
        .collect();
    let mut group = c.benchmark_group(format!("autodiff_attention_d2000_{}", T::NAME));
    group.sample_size(20);
    group.bench_function("closed_form", |bench| {
        bench.iter(|| {
            let g = attention::closed_form_gradient(shape, &tokens, &labels, &w, &p, &nu);
            let gw = attention::dense_grad_w(&g.token_direction, &p);
            black_box((g.loss, gw, g.grad_p))
        })
    });
    let inputs = SharedInputs {
        tokens: Arc::new(tokens.clone()),
        w: Arc::new(w.clone()),
        p: Arc::new(p.clone()),
        nu: Arc::new(nu.clone()),
    };
    let mut tape = Tape::<T>::new();
    let (mut grad_w, mut grad_p) = (Vec::new(), Vec::new());
    group.bench_function("tape_shared_into", |bench| {
        bench.iter(|| {
            black_box(attention_tape::loss_and_gradients_into(
                &mut tape,
                shape,
                &inputs,
                &labels,
                &mut grad_w,
                &mut grad_p,
            ))
        })
    });
    let mut tape = Tape::<T>::new();
    group.bench_function("tape_shared", |bench| {
        bench.iter(|| {
            black_box(attention_tape::loss_and_gradients_shared(
                &mut tape, shape, &inputs, &labels,
            ))
        })
    });
    let mut tape = Tape::<T>::new();
    group.bench_function("tape_copying_inputs", |bench| {
        bench.iter(|| {
            let g =
                attention_tape::loss_and_gradients(&mut tape, shape, &tokens, &labels, &w, &p, &nu);
            let loss = black_box(g.loss);
            tape.recycle(g.grad_w);
            tape.recycle(g.grad_p);
            loss
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    bench_small_graph,
    bench_attention::<f64>,
    bench_attention::<f32>
);
criterion_main!(benches);
