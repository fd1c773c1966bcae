//! The fused multi-head attention kernels against the plain f64 references.
//!
//! Tolerance: every output is a short chain of roundings around two reductions, one of length
//! `dh` (a score, or `dP`) and one of length `S` (the softmax sum, the products with `P` or
//! `dZ`). A length-n reduction errs by at most about `n eps / 2` relative to its absolute-term
//! sum, and a score error `e` perturbs the probabilities by a relative `e` (softmax is
//! 1-Lipschitz in that sense), so `tol = 8 (S + dh + 16) eps` relative to the largest
//! absolute-term sum of the same output covers the worst case with room; an indexing, masking or
//! formula error is O(1) and fails by orders of magnitude. For f32 at S = 65, dh = 17 that is
//! 9e-5; for f64 2e-13.
//!
//! f32 runs with every vector width this CPU has (the `wide` 256-bit vectors and, with
//! AVX-512F, the 512-bit ones), selected like the GEMM kernels (`KernelVariant`); without
//! AVX-512 the run says on stderr that the 512-bit kernels were not exercised.

use benign_kernels::gemm::{with_kernel_variant, KernelVariant};
use benign_kernels::{attention_backward, attention_forward, reference, AttentionShape, Float};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

mod common;
use common::{assert_close, bits, pool, random, widen};

/// `|got - want| <= tol (|want| + max magnitude)` element by element (NaN only where the
/// reference has NaN), `magnitude` the reference's absolute-term sums
/// ([`reference::Terms::Absolute`]): outputs that cancel to far below their terms are still
/// measured against the terms' scale, which is what their rounding error scales with.
fn assert_scaled_close<T: Float>(what: &str, got: &[T], want: &[f64], magnitude: &[f64], tol: f64) {
    let scale = magnitude
        .iter()
        .filter(|w| w.is_finite())
        .fold(0.0f64, |m, w| m.max(w.abs()));
    assert_close(what, got, want, tol, tol * scale);
}

#[derive(Clone, Copy, Debug)]
enum Mask {
    None,
    /// Random keys masked, and the last sample's keys all masked.
    Random,
}

struct Problem<T> {
    shape: AttentionShape,
    scale: T,
    qkv: Vec<T>,
    real: Option<Vec<bool>>,
    dcontext: Vec<T>,
}

impl<T: Float> Problem<T> {
    fn new(rng: &mut ChaCha8Rng, shape: AttentionShape, mask: Mask) -> Self {
        let real = match mask {
            Mask::None => None,
            Mask::Random => {
                let mut real: Vec<bool> = (0..shape.batch * shape.seq)
                    .map(|_| rng.random_range(0.0..1.0) < 0.7)
                    .collect();
                if shape.batch > 1 {
                    let last = (shape.batch - 1) * shape.seq;
                    real[last..].iter_mut().for_each(|r| *r = false);
                }
                Some(real)
            }
        };
        Self {
            shape,
            scale: T::from_f64(1.0 / (shape.head_dim.max(1) as f64).sqrt()),
            qkv: random(rng, shape.qkv_len(), 2.0),
            real,
            dcontext: random(rng, shape.context_len(), 1.0),
        }
    }

    fn forward(&self) -> (Vec<T>, Vec<T>) {
        let mut probs = vec![T::from_f64(f64::NAN); self.shape.probs_len()];
        let mut context = vec![T::from_f64(f64::NAN); self.shape.context_len()];
        attention_forward(
            self.shape,
            self.scale,
            &self.qkv,
            self.real.as_deref(),
            &mut probs,
            &mut context,
        );
        (probs, context)
    }

    /// `dqkv <- dQKV + beta dqkv` by the kernel, from the forward's probabilities `probs`.
    fn backward(&self, probs: &[T], beta: T, dqkv: &mut [T]) {
        attention_backward(
            self.shape,
            self.scale,
            &self.qkv,
            probs,
            &self.dcontext,
            beta,
            dqkv,
        );
    }

    /// The reference context's absolute-term sums ([`reference::Terms::Absolute`]) from the
    /// probabilities `probs`.
    fn reference_context_terms(&self, probs: &[f64]) -> Vec<f64> {
        let mut terms = vec![0.0; self.shape.context_len()];
        reference::attention_context_magnitude(self.shape, &widen(&self.qkv), probs, &mut terms);
        terms
    }

    fn reference_forward(&self) -> (Vec<f64>, Vec<f64>) {
        let mut probs = vec![0.0; self.shape.probs_len()];
        let mut context = vec![0.0; self.shape.context_len()];
        reference::attention_forward(
            self.shape,
            self.scale.to_f64(),
            &widen(&self.qkv),
            self.real.as_deref(),
            &mut probs,
            &mut context,
        );
        (probs, context)
    }

    fn tol(&self) -> f64 {
        8.0 * (self.shape.seq + self.shape.head_dim + 16) as f64 * T::EPSILON.to_f64()
    }
}

fn check<T: Float>(rng: &mut ChaCha8Rng, shape: AttentionShape, mask: Mask, beta: f64) {
    let problem = Problem::<T>::new(rng, shape, mask);
    let initial: Vec<T> = if beta == 0.0 {
        vec![T::from_f64(f64::NAN); shape.qkv_len()]
    } else {
        random(rng, shape.qkv_len(), 1.0)
    };
    check_problem(
        &problem,
        &initial,
        beta,
        &format!("{shape:?} {mask:?} beta {beta}"),
    );
}

/// The kernels' forward and backward against the reference on one problem, the backward
/// accumulating into `initial` with `beta`.
fn check_problem<T: Float>(problem: &Problem<T>, initial: &[T], beta: f64, what: &str) {
    let shape = problem.shape;
    let (probs, context) = problem.forward();
    let (want_probs, want_context) = problem.reference_forward();
    let tol = problem.tol();
    let context_terms = problem.reference_context_terms(&want_probs);
    assert_scaled_close(
        &format!("probs {what}"),
        &probs,
        &want_probs,
        &want_probs,
        tol,
    );
    assert_scaled_close(
        &format!("context {what}"),
        &context,
        &want_context,
        &context_terms,
        tol,
    );

    // The backward from the kernel's own probabilities (what the autodiff op does), against the
    // reference from the same probabilities.
    let mut dqkv = initial.to_vec();
    problem.backward(&probs, T::from_f64(beta), &mut dqkv);
    let backward_args = (
        problem.scale.to_f64(),
        widen(&problem.qkv),
        widen(&probs),
        widen(&problem.dcontext),
    );
    let (scale, qkv, p, dcontext) = &backward_args;
    let mut want = widen(initial);
    reference::attention_backward(shape, *scale, qkv, p, dcontext, beta, &mut want);
    let mut want_terms = widen(initial);
    reference::attention_backward_terms(
        shape,
        *scale,
        qkv,
        p,
        dcontext,
        beta,
        reference::Terms::Absolute,
        &mut want_terms,
    );
    assert_scaled_close(&format!("dqkv {what}"), &dqkv, &want, &want_terms, tol);
    if let Some(real) = &problem.real {
        // Masked keys get probability exactly 0; a sample without real keys is all zeros.
        let (b, s, h) = (shape.batch, shape.seq, shape.heads);
        for (row, p) in probs.chunks_exact(s.max(1)).enumerate() {
            let sample = row / (h * s).max(1);
            for (j, &pj) in p.iter().enumerate() {
                if !real[sample * s + j] {
                    assert_eq!(
                        pj.to_f64(),
                        0.0,
                        "{what}: masked key {j} of sample {sample}"
                    );
                }
            }
        }
        if b > 1 {
            let last = (b - 1) * s * shape.width();
            assert!(context[last..].iter().all(|c| c.to_f64() == 0.0));
        }
    }
}

/// `f` under each kernel variant this CPU can run.
fn for_each_variant(f: impl Fn(KernelVariant)) {
    for variant in common::kernel_variants() {
        with_kernel_variant(variant, || f(variant));
    }
}

#[test]
fn forward_and_backward_match_the_reference() {
    for_each_variant(|_| shape_grid());
}

fn shape_grid() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut index = 0;
    for seq in [0, 1, 2, 7, 8, 9, 17, 50, 65] {
        for head_dim in [1, 3, 8, 16, 17] {
            for (batch, heads) in [(1, 1), (3, 2), (2, 3)] {
                let shape = AttentionShape {
                    batch,
                    seq,
                    heads,
                    head_dim,
                };
                let mask = if index % 2 == 0 {
                    Mask::Random
                } else {
                    Mask::None
                };
                let beta = [0.0, 1.0, 0.6][index % 3];
                check::<f32>(&mut rng, shape, mask, beta);
                check::<f64>(&mut rng, shape, mask, beta);
                index += 1;
            }
        }
    }
}

#[test]
fn large_heads_match_the_reference() {
    for_each_variant(|_| large_heads());
}

fn large_heads() {
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let shape = AttentionShape {
        batch: 2,
        seq: 197,
        heads: 2,
        head_dim: 64,
    };
    check::<f32>(&mut rng, shape, Mask::Random, 0.0);
    check::<f64>(&mut rng, shape, Mask::None, 1.0);
}

/// One head of width 1 whose three real keys' values cancel under the probabilities: the context
/// is about 1e-8 while its terms are about 1e-2, so the error allowed is set by the terms. Found
/// by the `attention` fuzz target.
#[test]
fn cancelling_outputs_are_measured_against_their_terms() {
    let shape = AttentionShape {
        batch: 1,
        seq: 12,
        heads: 1,
        head_dim: 1,
    };
    let value = |i: usize| -1.0 / 32.0 + (i % 7) as f64 / 64.0;
    let qkv: Vec<f32> = (0..shape.qkv_len()).map(|i| value(i) as f32).collect();
    let real: Vec<bool> = (0..shape.seq).map(|j| [1, 2, 4].contains(&j)).collect();
    let problem = Problem {
        shape,
        scale: 1.0f32,
        qkv,
        real: Some(real),
        dcontext: (0..shape.context_len())
            .map(|i| value(i + 3) as f32)
            .collect(),
    };
    let (probs, context) = problem.reference_forward();
    let terms = problem.reference_context_terms(&probs);
    let largest = |v: &[f64]| v.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    assert!(
        largest(&context) < 1e-4 * largest(&terms),
        "the context should cancel: {} against terms {}",
        largest(&context),
        largest(&terms)
    );
    let initial: Vec<f32> = (0..shape.qkv_len()).map(|i| value(i + 5) as f32).collect();
    for_each_variant(|_| check_problem(&problem, &initial, 0.5, "cancelling context"));
}

#[test]
fn zero_width_heads_still_give_probabilities() {
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    for seq in [0, 1, 5] {
        let shape = AttentionShape {
            batch: 2,
            seq,
            heads: 3,
            head_dim: 0,
        };
        check::<f32>(&mut rng, shape, Mask::Random, 0.0);
    }
}

/// Above the parallel threshold samples run on several threads: the bits must not change.
#[test]
fn bit_identical_for_any_thread_count() {
    fn run<T: Float>() {
        let mut rng = ChaCha8Rng::seed_from_u64(14);
        let shape = AttentionShape {
            batch: 12,
            seq: 50,
            heads: 4,
            head_dim: 16,
        };
        let problem = Problem::<T>::new(&mut rng, shape, Mask::Random);
        // The variant is chosen on the thread that makes the call (here a pool worker); the
        // samples it hands to other workers use the same vectors.
        let outputs = |variant: KernelVariant, threads: usize| {
            pool(threads).install(|| {
                let (probs, context) = with_kernel_variant(variant, || problem.forward());
                let mut dqkv = vec![T::ZERO; shape.qkv_len()];
                with_kernel_variant(variant, || problem.backward(&probs, T::ZERO, &mut dqkv));
                [bits(&probs), bits(&context), bits(&dqkv)]
            })
        };
        for variant in common::kernel_variants() {
            let one = outputs(variant, 1);
            assert!(
                one == outputs(variant, 2),
                "{} {variant:?}: 1 vs 2 threads",
                T::NAME
            );
            assert!(
                one == outputs(variant, 4),
                "{} {variant:?}: 1 vs 4 threads",
                T::NAME
            );
        }
    }
    run::<f32>();
    run::<f64>();
}

/// A NaN in one sample's queries poisons that sample's rows only.
#[test]
fn nan_stays_in_its_sample() {
    let mut rng = ChaCha8Rng::seed_from_u64(15);
    let shape = AttentionShape {
        batch: 2,
        seq: 9,
        heads: 2,
        head_dim: 8,
    };
    let clean = Problem::<f32>::new(&mut rng, shape, Mask::None);
    let mut poisoned = Problem {
        qkv: clean.qkv.clone(),
        dcontext: clean.dcontext.clone(),
        real: None,
        ..clean
    };
    poisoned.qkv[0] = f32::NAN; // sample 0, token 0, head 0, query column 0
    let (p_nan, c_nan) = poisoned.forward();
    let (p, c) = clean.forward();
    let ss = shape.seq * shape.seq;
    // Sample 0, head 0, query row 0 is NaN; its other rows and head 1 are finite.
    assert!(p_nan[..shape.seq].iter().all(|v| v.is_nan()));
    assert!(p_nan[shape.seq..ss].iter().all(|v| v.is_finite()));
    assert_eq!(
        bits(&p_nan[2 * ss..]),
        bits(&p[2 * ss..]),
        "sample 1 probabilities"
    );
    let per_sample = shape.seq * shape.width();
    assert_eq!(
        bits(&c_nan[per_sample..]),
        bits(&c[per_sample..]),
        "sample 1 context"
    );
}
