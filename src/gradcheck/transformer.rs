//! The transformer block of [`crate::transformer`] checked end to end: every parameter and the
//! input tokens are free variables, the key-padding mask is fixed (one padded token in the
//! second sample), and each variant (heads, biases, output projection, residuals) is its own
//! case.

use benign_kernels::Float;

use super::cases::{Case, Domain, Input, Mode};
use crate::autodiff::{Tape, Var};
use crate::gradcheck_builder as builder;
use crate::transformer::{block_forward_vars, BlockConfig, BlockVars, LinearVars};

/// The inputs of a block case, in the order [`block_vars`] consumes them.
fn block_inputs(config: &BlockConfig, batch: usize, seq: usize) -> Vec<Input> {
    let (d, m) = (config.d_model, config.mlp_dim);
    let weight = |name, rows, cols| Input::var_in(name, &[rows, cols], Domain::Normal(0.5));
    let bias = |name, len| Input::var_in(name, &[len], Domain::Normal(0.2));
    let mut inputs = vec![
        Input::var("x", &[batch, seq, d]),
        Input::var_in("ln1.gamma", &[d], Domain::Normal(1.0)),
        bias("ln1.beta", d),
    ];
    for (w, b) in [
        ("query.weight", "query.bias"),
        ("key.weight", "key.bias"),
        ("value.weight", "value.bias"),
    ]
    .into_iter()
    .chain(config.out_proj.then_some(("out.weight", "out.bias")))
    {
        inputs.push(weight(w, d, d));
        if config.qkv_bias {
            // The key bias adds `q . b_k` to every score of a query's row, which the softmax
            // cancels: its gradient is zero up to rounding, so a relative f32-vs-f64 comparison
            // of it measures only noise. It enters as a constant; its value still shifts the
            // scores, so a wrong bias handling in the forward pass shows in the other checks.
            inputs.push(if b == "key.bias" {
                Input::constant(b, &[d], Domain::Normal(0.2))
            } else {
                bias(b, d)
            });
        }
    }
    inputs.extend([
        Input::var_in("ln2.gamma", &[d], Domain::Normal(1.0)),
        bias("ln2.beta", d),
        weight("fc1.weight", m, d),
        bias("fc1.bias", m),
        weight("fc2.weight", d, m),
        bias("fc2.bias", d),
    ]);
    inputs
}

/// `(x, parameters)` from the handles of [`block_inputs`].
fn block_vars(config: &BlockConfig, v: &[Var]) -> (Var, BlockVars) {
    let mut next = v.iter().copied();
    let mut take = || next.next().expect("as many handles as block_inputs");
    let linear = |take: &mut dyn FnMut() -> Var, bias: bool| LinearVars {
        weight: take(),
        bias: bias.then(take),
    };
    let x = take();
    let qkv_bias = config.qkv_bias;
    // Fields are evaluated in order, so the handles are taken in block_inputs' order.
    let vars = BlockVars {
        ln1: (take(), take()),
        query: linear(&mut take, qkv_bias),
        key: linear(&mut take, qkv_bias),
        value: linear(&mut take, qkv_bias),
        out: config.out_proj.then(|| linear(&mut take, qkv_bias)),
        ln2: (take(), take()),
        fc1: linear(&mut take, true),
        fc2: linear(&mut take, true),
    };
    (x, vars)
}

/// The block's output for `x` `[batch, seq, d]` with the last token of every sample but the
/// first marked as padding.
fn block_output<T: Float>(tape: &mut Tape<T>, v: &[Var], config: &BlockConfig) -> Var {
    let dims = tape.shape(v[0]);
    let (batch, seq) = (dims.dim(0), dims.dim(1));
    let mut real = vec![true; batch * seq];
    for b in 1..batch {
        real[b * seq + seq - 1] = false;
    }
    let (x, vars) = block_vars(config, v);
    block_forward_vars(tape, &vars, config, x, Some(&real)).out
}

/// A builder per variant: `fn` pointers cannot capture the configuration.
macro_rules! block_case {
    ($name:ident, $config:expr) => {
        fn $name<T: Float>(tape: &mut Tape<T>, v: &[Var]) -> Var {
            block_output(tape, v, &$config)
        }
    };
}

const FULL: BlockConfig = BlockConfig {
    d_model: 4,
    heads: 2,
    mlp_dim: 6,
    qkv_bias: true,
    out_proj: true,
    residual: true,
    ln_eps: 1e-5,
};
const BARE: BlockConfig = BlockConfig {
    qkv_bias: false,
    out_proj: false,
    ..FULL
};
const NO_SKIP: BlockConfig = BlockConfig {
    residual: false,
    ..FULL
};
const BARE_ONE_HEAD_NO_SKIP: BlockConfig = BlockConfig {
    heads: 1,
    residual: false,
    ..BARE
};
const WIDE: BlockConfig = BlockConfig {
    d_model: 48,
    heads: 4,
    mlp_dim: 64,
    ..FULL
};
const WIDE_ONE_HEAD: BlockConfig = BlockConfig {
    heads: 1,
    qkv_bias: false,
    out_proj: false,
    ..WIDE
};

block_case!(full, FULL);
block_case!(bare, BARE);
block_case!(no_skip, NO_SKIP);
block_case!(bare_one_head_no_skip, BARE_ONE_HEAD_NO_SKIP);
block_case!(wide, WIDE);
block_case!(wide_one_head, WIDE_ONE_HEAD);

/// Every block variant: small shapes with the full Jacobian, wider ones along directions.
pub fn block_cases() -> Vec<Case> {
    let case = |variant: &str, config: &BlockConfig, (batch, seq), build, mode| {
        let inputs = block_inputs(config, batch, seq);
        Case::model("transformer_block", variant, inputs, build, mode)
    };
    let jacobian = |variant, config, build| case(variant, config, (2, 3), build, Mode::Jacobian);
    let direction = |variant, config, build| case(variant, config, (3, 9), build, Mode::Direction);
    vec![
        jacobian("h2_bias_out_residual_b2_s3_d4", &FULL, builder!(full)),
        jacobian("h2_bare_residual_b2_s3_d4", &BARE, builder!(bare)),
        jacobian("h2_bias_out_no_skip_b2_s3_d4", &NO_SKIP, builder!(no_skip)),
        jacobian(
            "h1_bare_no_skip_b2_s3_d4",
            &BARE_ONE_HEAD_NO_SKIP,
            builder!(bare_one_head_no_skip),
        ),
        direction("h4_bias_out_residual_b3_s9_d48", &WIDE, builder!(wide)),
        direction(
            "h1_bare_residual_b3_s9_d48",
            &WIDE_ONE_HEAD,
            builder!(wide_one_head),
        ),
    ]
}

/// The synthetic task's encoder ([`crate::synthetic::encoder`]) end to end: its mean logistic
/// loss. Inputs: tokens `[n, T, d]` and labels (constants), then [CLS], the block (one head, no
/// q/k/v bias, no output projection), the final LayerNorm and the head.
fn encoder_inputs(n: usize, t: usize, d: usize, mlp: usize) -> Vec<Input> {
    let scale = 1.0 / (d as f64).sqrt();
    let weight = |name, rows, cols| Input::var_in(name, &[rows, cols], Domain::Uniform(scale));
    vec![
        Input::constant("tokens", &[n, t, d], Domain::Normal(1.0)),
        Input::constant("labels", &[n], Domain::Labels),
        Input::var("cls", &[d]),
        Input::var_in("ln1.gamma", &[d], Domain::Normal(1.0)),
        Input::var_in("ln1.beta", &[d], Domain::Normal(0.2)),
        weight("query.weight", d, d),
        weight("key.weight", d, d),
        weight("value.weight", d, d),
        Input::var_in("ln2.gamma", &[d], Domain::Normal(1.0)),
        Input::var_in("ln2.beta", &[d], Domain::Normal(0.2)),
        weight("fc1.weight", mlp, d),
        Input::var_in("fc1.bias", &[mlp], Domain::Uniform(scale)),
        Input::var_in(
            "fc2.weight",
            &[d, mlp],
            Domain::Uniform(1.0 / (mlp as f64).sqrt()),
        ),
        Input::var_in("fc2.bias", &[d], Domain::Uniform(scale)),
        Input::var_in("final_ln.gamma", &[d], Domain::Normal(1.0)),
        Input::var_in("final_ln.beta", &[d], Domain::Normal(0.2)),
        weight("head.weight", 1, d),
        Input::var_in("head.bias", &[1], Domain::Uniform(scale)),
    ]
}

fn encoder_loss<T: Float>(tape: &mut Tape<T>, v: &[Var], residual: bool) -> Var {
    use crate::synthetic::encoder::{block_config, encoder_forward, EncoderVars};
    let dims = tape.shape(v[0]);
    let d = dims.dim(2);
    let mlp = tape.shape(v[10]).dim(0);
    let config = block_config(d, mlp, residual);
    let linear = |weight, bias| LinearVars {
        weight,
        bias: Some(bias),
    };
    let vars = EncoderVars {
        cls: v[2],
        block: BlockVars {
            ln1: (v[3], v[4]),
            query: LinearVars {
                weight: v[5],
                bias: None,
            },
            key: LinearVars {
                weight: v[6],
                bias: None,
            },
            value: LinearVars {
                weight: v[7],
                bias: None,
            },
            out: None,
            ln2: (v[8], v[9]),
            fc1: linear(v[10], v[11]),
            fc2: linear(v[12], v[13]),
        },
        final_ln: (v[14], v[15]),
        head: linear(v[16], v[17]),
    };
    let labels = tape.value(v[1]).to_vec();
    let out = encoder_forward(tape, &vars, &config, v[0]);
    tape.logistic_loss(out.f, &labels)
}

fn encoder_with_skip<T: Float>(tape: &mut Tape<T>, v: &[Var]) -> Var {
    encoder_loss(tape, v, true)
}

fn encoder_no_skip<T: Float>(tape: &mut Tape<T>, v: &[Var]) -> Var {
    encoder_loss(tape, v, false)
}

/// The encoder with and without its residuals: a small one with the full Jacobian, the paper's
/// n = 20, T = 8 at d = 64 along directions.
pub fn encoder_cases() -> Vec<Case> {
    let case = |variant: &str, (n, t, d, mlp), build, mode| {
        Case::model(
            "encoder",
            variant,
            encoder_inputs(n, t, d, mlp),
            build,
            mode,
        )
    };
    let (skip, no_skip) = (builder!(encoder_with_skip), builder!(encoder_no_skip));
    vec![
        case("skip_n3_T3_d4_mlp5", (3, 3, 4, 5), skip, Mode::Jacobian),
        case(
            "no_skip_n3_T3_d4_mlp5",
            (3, 3, 4, 5),
            no_skip,
            Mode::Jacobian,
        ),
        case(
            "skip_n20_T8_d64_mlp64",
            (20, 8, 64, 64),
            skip,
            Mode::Direction,
        ),
        case(
            "no_skip_n20_T8_d64_mlp48",
            (20, 8, 64, 48),
            no_skip,
            Mode::Direction,
        ),
    ]
}
