//! The transformer block of [`crate::transformer`] checked end to end: every parameter and the
//! input tokens are free variables, the key-padding mask is fixed (one padded token in the
//! second sample), and each variant (heads, biases, output projection, residuals) is its own
//! case.

use benign_kernels::Float;

use super::cases::{Case, CaseKind, Domain, Input, Mode};
use crate::autodiff::{Tape, Var};
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
    let x = take();
    let ln1 = (take(), take());
    let mut attn = |bias: bool| LinearVars {
        weight: take(),
        bias: bias.then(&mut take),
    };
    let query = attn(config.qkv_bias);
    let key = attn(config.qkv_bias);
    let value = attn(config.qkv_bias);
    let out = config.out_proj.then(|| attn(config.qkv_bias));
    let ln2 = (take(), take());
    let fc1 = LinearVars {
        weight: take(),
        bias: Some(take()),
    };
    let fc2 = LinearVars {
        weight: take(),
        bias: Some(take()),
    };
    let vars = BlockVars {
        ln1,
        query,
        key,
        value,
        out,
        ln2,
        fc1,
        fc2,
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
    let case = |variant: &str, config: &BlockConfig, batch, seq, build, mode| Case {
        kind: CaseKind::Model,
        family: "transformer_block",
        name: format!("transformer_block/{variant}"),
        inputs: block_inputs(config, batch, seq),
        build,
        mode,
        f32: true,
        taylor: true,
        threads: true,
        extra: None,
    };
    vec![
        case(
            "h2_bias_out_residual_b2_s3_d4",
            &FULL,
            2,
            3,
            crate::gradcheck_builder!(full),
            Mode::Jacobian,
        ),
        case(
            "h2_bare_residual_b2_s3_d4",
            &BARE,
            2,
            3,
            crate::gradcheck_builder!(bare),
            Mode::Jacobian,
        ),
        case(
            "h2_bias_out_no_skip_b2_s3_d4",
            &NO_SKIP,
            2,
            3,
            crate::gradcheck_builder!(no_skip),
            Mode::Jacobian,
        ),
        case(
            "h1_bare_no_skip_b2_s3_d4",
            &BARE_ONE_HEAD_NO_SKIP,
            2,
            3,
            crate::gradcheck_builder!(bare_one_head_no_skip),
            Mode::Jacobian,
        ),
        case(
            "h4_bias_out_residual_b3_s9_d48",
            &WIDE,
            3,
            9,
            crate::gradcheck_builder!(wide),
            Mode::Direction,
        ),
        case(
            "h1_bare_residual_b3_s9_d48",
            &WIDE_ONE_HEAD,
            3,
            9,
            crate::gradcheck_builder!(wide_one_head),
            Mode::Direction,
        ),
    ]
}
