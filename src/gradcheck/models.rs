//! Composite models checked end to end. Add a model by writing its graph builder (generic over
//! the element type) and a [`Case`] with `kind: Model` to [`model_cases`].

use benign_kernels::Float;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use super::cases::{Case, Domain, Input, Mode};
use super::check::{normwise_error, CheckResult, Config};
use crate::attention_model::closed_form::{self as attention, TokenShape};
use crate::attention_model::tape::{self as attention_tape, AttentionVars, SharedInputs};
use crate::autodiff::{Tape, Var};

/// The paper model's mean logistic loss. Inputs: tokens `[n, T, d]`, labels `[n]`, `W`, `p`,
/// `nu`.
fn attention_loss<T: Float>(tape: &mut Tape<T>, v: &[Var]) -> Var {
    let dims = tape.shape(v[0]);
    let shape = TokenShape {
        samples: dims.dim(0),
        tokens: dims.dim(1),
        dim: dims.dim(2),
    };
    let tokens = tape.reshape(v[0], &[shape.total_tokens(), shape.dim]);
    let labels = tape.value(v[1]).to_vec();
    let vars = AttentionVars {
        tokens,
        w: v[2],
        p: v[3],
        nu: v[4],
    };
    attention_tape::record(tape, shape, vars, Some(&labels))
        .loss
        .expect("labels were given")
}

fn attention_case(
    variant: &str,
    shape: TokenShape,
    mode: Mode,
    extra: Option<fn(&Config) -> Vec<CheckResult>>,
) -> Case {
    let TokenShape {
        samples: n,
        tokens: t,
        dim: d,
    } = shape;
    let scale = 1.0 / (d as f64).sqrt();
    let inputs = vec![
        Input::constant("tokens", &[n, t, d], Domain::Normal(1.0)),
        Input::constant("labels", &[n], Domain::Labels),
        Input::var_in("W", &[d, d], Domain::Uniform(scale)),
        Input::var_in("p", &[d], Domain::Normal(2.0 * scale)),
        Input::constant("nu", &[d], Domain::Normal(scale)),
    ];
    Case {
        extra,
        ..Case::model(
            "attention",
            variant,
            inputs,
            crate::gradcheck_builder!(attention_loss),
            mode,
        )
    }
}

/// A one-block encoder classifier touching most op families: embedding, layer norm,
/// self-attention with a padding mask, residual (a value used twice), GELU, [CLS] select,
/// cross-entropy. Inputs: embedding table `[6, 4]`, gamma, beta `[4]`, `Wq`, `Wk`, `Wv` `[4, 4]`,
/// `Wo` `[4, 3]`.
fn tiny_encoder_loss<T: Float>(tape: &mut Tape<T>, v: &[Var]) -> Var {
    let (batch, seq, width) = (2, 3, 4);
    let embedded = tape.embedding(v[0], &[0, 3, 5, 2, 2, 1]);
    let x = tape.reshape(embedded, &[batch, seq, width]);
    let h = tape.layer_norm(x, v[1], v[2], T::from_f64(1e-5));
    let q = tape.matmul(h, v[3]);
    let k = tape.matmul(h, v[4]);
    let values = tape.matmul(h, v[5]);
    let scores = tape.matmul_t(q, k, false, true);
    let scores = tape.scale(scores, T::from_f64(0.5));
    let mask = tape.constant(&[seq], &[T::ZERO, T::ZERO, T::NEG_INFINITY]);
    let weights = tape.softmax(scores, Some(mask));
    let context = tape.matmul(weights, values);
    let residual = tape.add(context, x);
    let activated = tape.gelu(residual);
    let cls = tape.select(activated, 1, 0);
    let logits = tape.matmul(cls, v[6]);
    tape.cross_entropy(logits, &[2, 0])
}

/// The registered models.
pub fn model_cases() -> Vec<Case> {
    let mut cases = vec![
        attention_case(
            "n3_T4_d5",
            TokenShape {
                samples: 3,
                tokens: 4,
                dim: 5,
            },
            Mode::Jacobian,
            None,
        ),
        attention_case(
            "n20_T8_d200",
            TokenShape {
                samples: 20,
                tokens: 8,
                dim: 200,
            },
            Mode::Direction,
            Some(|c| closed_form_check(c, 200)),
        ),
        attention_case(
            "n20_T8_d2000",
            TokenShape {
                samples: 20,
                tokens: 8,
                dim: 2000,
            },
            Mode::Direction,
            Some(|c| closed_form_check(c, 2000)),
        ),
        Case::model(
            "tiny_encoder",
            "b2_s3_w4",
            vec![
                Input::var("embedding", &[6, 4]),
                Input::var("gamma", &[4]),
                Input::var("beta", &[4]),
                Input::var_in("Wq", &[4, 4], Domain::Normal(0.5)),
                Input::var_in("Wk", &[4, 4], Domain::Normal(0.5)),
                Input::var_in("Wv", &[4, 4], Domain::Normal(0.5)),
                Input::var_in("Wo", &[4, 3], Domain::Normal(0.5)),
            ],
            crate::gradcheck_builder!(tiny_encoder_loss),
            Mode::Jacobian,
        ),
    ];
    cases.extend(super::transformer::block_cases());
    cases.extend(super::transformer::encoder_cases());
    cases
}

/// The tape gradient of the paper model against the closed form `dL/dW = g p^T`,
/// `dL/dp = W^T g` (both in f64, through the copying and the sharing entry points).
fn closed_form_check(config: &Config, d: usize) -> Vec<CheckResult> {
    let shape = TokenShape {
        samples: 20,
        tokens: 8,
        dim: d,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ (0xc105_ed00 + d as u64));
    let scale = 1.0 / (d as f64).sqrt();
    let mut normal = |s: f64, len: usize| -> Vec<f64> {
        (0..len)
            .map(|_| {
                let z: f64 = StandardNormal.sample(&mut rng);
                s * z
            })
            .collect::<Vec<f64>>()
    };
    let tokens = normal(1.0, shape.total_tokens() * d);
    let p = normal(2.0 * scale, d);
    let nu = normal(scale, d);
    let mut rng2 = ChaCha8Rng::seed_from_u64(config.seed ^ (0xbeef + d as u64));
    let w: Vec<f64> = (0..d * d)
        .map(|_| rng2.random_range(-scale..scale))
        .collect();
    let labels: Vec<f64> = (0..shape.samples)
        .map(|i| if i % 3 == 0 { -1.0 } else { 1.0 })
        .collect();

    let closed = attention::closed_form_gradient(shape, &tokens, &labels, &w, &p, &nu);
    let closed_w = attention::dense_grad_w(&closed.token_direction, &p);
    let mut tape = Tape::<f64>::new();
    let copied =
        attention_tape::loss_and_gradients(&mut tape, shape, &tokens, &labels, &w, &p, &nu);
    let inputs = SharedInputs {
        tokens: tokens.clone().into(),
        w: w.clone().into(),
        p: p.clone().into(),
        nu: nu.clone().into(),
    };
    let shared = attention_tape::loss_and_gradients_shared(&mut tape, shape, &inputs, &labels);
    let bound = 1e-12;
    let mut results = Vec::new();
    for (input, ours, reference) in [
        (format!("W[{d}, {d}]"), &copied.grad_w, &closed_w),
        (format!("p[{d}]"), &copied.grad_p, &closed.grad_p),
    ] {
        let (err, rel) = normwise_error(ours, reference);
        results.push(CheckResult {
            kind: "model",
            case: format!("attention/n20_T8_d{d}"),
            check: "closed_form",
            input,
            dtype: "f64",
            step: None,
            max_abs_error: err,
            max_rel_error: rel,
            tolerance: format!(
                "max|tape - closed| <= {bound:e} max|closed|, shared = copied bitwise"
            ),
            passed: rel <= bound
                && (copied.loss - closed.loss).abs() <= bound * closed.loss.abs()
                && copied
                    .grad_w
                    .iter()
                    .zip(&shared.grad_w)
                    .all(|(a, b)| a.to_bits() == b.to_bits())
                && copied
                    .grad_p
                    .iter()
                    .zip(&shared.grad_p)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
            detail: format!(
                "loss {:.12} (tape) vs {:.12} (closed form)",
                copied.loss, closed.loss
            ),
        });
    }
    results
}
