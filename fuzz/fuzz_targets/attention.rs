#![no_main]
//! The fused multi-head attention kernels against the f64 reference on arbitrary shapes
//! (batch 1-3, 0-40 tokens, 1-3 heads of 1-20 columns), key masks (including samples with no
//! real key) and beta in {0, 1, 0.5} with NaN in dqkv for beta = 0, f32 and f64. Tolerance as in
//! `kernels/tests/attention.rs`: `8 (S + dh + 16) eps` relative to the output's largest
//! absolute-term sum (`reference::Terms::Absolute`), which outputs that cancel fall far below.

use arbitrary::Arbitrary;
use benign_kernels::{attention_backward, attention_forward, reference, AttentionShape, Float};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    batch: u8,
    seq: u8,
    heads: u8,
    head_dim: u8,
    beta: u8,
    /// Inputs as small integers over 32.
    values: Vec<i8>,
    /// Bit i: key i is real (cycled); `None`: no mask.
    mask: Option<u64>,
}

fn check_close(what: &str, got: &[f64], want: &[f64], magnitude: &[f64], tol: f64) {
    let scale = magnitude
        .iter()
        .filter(|w| w.is_finite())
        .fold(0.0f64, |m, w| m.max(w.abs()));
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        assert!(
            g == w || err <= tol * (w.abs() + scale),
            "{what}[{i}]: got {g:e}, want {w:e}"
        );
    }
}

fn run<T: Float>(shape: AttentionShape, input: &Input, real: Option<&[bool]>, beta: f64) {
    let value = |i: usize| {
        let v = input
            .values
            .get(i % input.values.len().max(1))
            .copied()
            .unwrap_or(1);
        T::from_f64(v as f64 / 32.0 + (i % 7) as f64 / 64.0)
    };
    let qkv: Vec<T> = (0..shape.qkv_len()).map(value).collect();
    let dcontext: Vec<T> = (0..shape.context_len()).map(|i| value(i + 3)).collect();
    let scale = T::from_f64(1.0 / (shape.head_dim as f64).sqrt());
    let (mut probs, mut context) = (
        vec![T::ZERO; shape.probs_len()],
        vec![T::ZERO; shape.context_len()],
    );
    attention_forward(shape, scale, &qkv, real, &mut probs, &mut context);
    let widen = |v: &[T]| v.iter().map(|x| x.to_f64()).collect::<Vec<f64>>();
    let (mut want_probs, mut want_context) = (vec![0.0; probs.len()], vec![0.0; context.len()]);
    reference::attention_forward(
        shape,
        scale.to_f64(),
        &widen(&qkv),
        real,
        &mut want_probs,
        &mut want_context,
    );
    let tol = 8.0 * (shape.seq + shape.head_dim + 16) as f64 * T::EPSILON.to_f64();
    let mut context_terms = vec![0.0; context.len()];
    reference::attention_context_magnitude(shape, &widen(&qkv), &want_probs, &mut context_terms);
    check_close("probs", &widen(&probs), &want_probs, &want_probs, tol);
    check_close(
        "context",
        &widen(&context),
        &want_context,
        &context_terms,
        tol,
    );

    let initial: Vec<T> = (0..shape.qkv_len())
        .map(|i| {
            if beta == 0.0 {
                T::from_f64(f64::NAN)
            } else {
                value(i + 5)
            }
        })
        .collect();
    let mut dqkv = initial.clone();
    attention_backward(
        shape,
        scale,
        &qkv,
        &probs,
        &dcontext,
        T::from_f64(beta),
        &mut dqkv,
    );
    let (qkv, probs, dcontext) = (widen(&qkv), widen(&probs), widen(&dcontext));
    let scale = scale.to_f64();
    let mut want = widen(&initial);
    reference::attention_backward(shape, scale, &qkv, &probs, &dcontext, beta, &mut want);
    let mut terms = widen(&initial);
    reference::attention_backward_terms(
        shape,
        scale,
        &qkv,
        &probs,
        &dcontext,
        beta,
        reference::Terms::Absolute,
        &mut terms,
    );
    check_close("dqkv", &widen(&dqkv), &want, &terms, tol);
}

fuzz_target!(|input: Input| {
    let shape = AttentionShape {
        batch: input.batch as usize % 3 + 1,
        seq: input.seq as usize % 41,
        heads: input.heads as usize % 3 + 1,
        head_dim: input.head_dim as usize % 20 + 1,
    };
    let real: Option<Vec<bool>> = input.mask.map(|bits| {
        (0..shape.batch * shape.seq)
            .map(|i| bits >> (i % 64) & 1 == 1)
            .collect()
    });
    let beta = [0.0, 1.0, 0.5][input.beta as usize % 3];
    run::<f32>(shape, &input, real.as_deref(), beta);
    run::<f64>(shape, &input, real.as_deref(), beta);
});
