//! The pre-LayerNorm encoder block:
//!
//! ```text
//! h   = LN1(x)
//! q, k, v = h Wq^T (+ bq), h Wk^T (+ bk), h Wv^T (+ bv)          split into H heads of width d/H
//! A   = softmax(q k^T / sqrt(d/H) + mask)                          [batch, H, seq, seq]
//! c   = concat_heads(A v) (Wo^T + bo, if out_proj)
//! x1  = x + c                  (c alone without residual)
//! out = x1 + fc2(GELU(fc1(LN2(x1))))      (without the x1 term without residual)
//! ```
//!
//! The mask is additive: 0 on real keys and `-inf` on padding keys, so padding receives exactly
//! zero probability, and a query at a padded position still attends the real keys (no NaN). A
//! sample with no real token at all gets an all-zero attention row (the softmax kernel's rule for
//! an all `-inf` row), again without NaN.
//!
//! Query, key and value have separate parameters (the fine-tuning experiment freezes all but the
//! last block's query and key and redraws those); the forward pass stacks them and computes
//! all three projections as one GEMM over all `batch * seq` rows. The fused
//! [`Tape::multi_head_attention`] op reads the heads in place from that packed output (no
//! split, permute or merge copies), and the MLP's first layer is one fused linear + GELU op.

use benign_kernels::Float;
use rand::Rng;

use super::layers::{linear_forward, LayerNormParams, Linear, LinearVars};
use crate::autodiff::{ParamId, ParamStore, Tape, Var};
use crate::{Error, Result};

/// The shape and variant of a block.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BlockConfig {
    /// Width d of the token representations.
    pub d_model: usize,
    /// Attention heads H (must divide `d_model`); scores are scaled by `1/sqrt(d_model / H)`.
    pub heads: usize,
    /// Hidden width of the MLP.
    pub mlp_dim: usize,
    /// Biases on the query, key and value projections (and on the output projection).
    pub qkv_bias: bool,
    /// A learned output projection after the heads are merged.
    pub out_proj: bool,
    /// The two residual connections (both or neither).
    pub residual: bool,
    /// LayerNorm epsilon.
    pub ln_eps: f64,
}

impl BlockConfig {
    /// A standard (ViT/BERT-style) block: biases, output projection, residuals, eps 1e-5.
    pub fn new(d_model: usize, heads: usize, mlp_dim: usize) -> Self {
        BlockConfig {
            d_model,
            heads,
            mlp_dim,
            qkv_bias: true,
            out_proj: true,
            residual: true,
            ln_eps: 1e-5,
        }
    }

    /// Width of one head.
    pub fn head_dim(&self) -> usize {
        self.d_model / self.heads.max(1)
    }

    /// Checks the sizes; errors name the field and its valid range.
    pub fn validate(&self) -> Result<()> {
        if self.d_model == 0 {
            return Err(Error::invalid("d-model", "must be at least 1, got 0"));
        }
        check_heads(self.heads, ("d-model", self.d_model))?;
        if self.mlp_dim == 0 {
            return Err(Error::invalid("mlp-dim", "must be at least 1, got 0"));
        }
        if !(self.ln_eps.is_finite() && self.ln_eps > 0.0) {
            return Err(Error::invalid(
                "ln-eps",
                format!("must be a finite number > 0, got {}", self.ln_eps),
            ));
        }
        Ok(())
    }
}

/// `heads` must be at least 1 and divide the model width (named `width_name` in the error), so
/// that every head gets the same number of columns.
pub(crate) fn check_heads(heads: usize, (width_name, width): (&str, usize)) -> Result<()> {
    if heads == 0 || !width.is_multiple_of(heads) {
        return Err(Error::invalid(
            "heads",
            format!("must be at least 1 and divide {width_name} = {width}, got {heads}"),
        ));
    }
    Ok(())
}

/// The parameters of one block in a [`ParamStore`], named `{prefix}.ln1.weight`,
/// `{prefix}.attn.query.weight`, `{prefix}.attn.query.bias`, `{prefix}.attn.key.*`,
/// `{prefix}.attn.value.*`, `{prefix}.attn.out.*`, `{prefix}.ln2.*`, `{prefix}.mlp.fc1.*`,
/// `{prefix}.mlp.fc2.*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockParams {
    /// LayerNorm before attention (`LN1`).
    pub ln1: LayerNormParams,
    /// Query projection `Wq`, `bq`.
    pub query: Linear,
    /// Key projection `Wk`, `bk`.
    pub key: Linear,
    /// Value projection `Wv`, `bv`.
    pub value: Linear,
    /// Output projection `Wo`, `bo`; `None` without `out_proj`.
    pub out: Option<Linear>,
    /// LayerNorm before the MLP (`LN2`).
    pub ln2: LayerNormParams,
    /// First MLP layer, width `d` to the MLP's hidden width.
    pub fc1: Linear,
    /// Second MLP layer, back to width `d`.
    pub fc2: Linear,
}

impl BlockParams {
    /// Adds a block's parameters to `store`, initialised as PyTorch does, drawing from `rng` in
    /// the order query, key, value, out, fc1, fc2 (weight, then bias, of each).
    pub fn new<T: Float>(
        store: &mut ParamStore<T>,
        prefix: &str,
        config: &BlockConfig,
        rng: &mut impl Rng,
    ) -> Result<Self> {
        config.validate()?;
        let d = config.d_model;
        let ln1 = LayerNormParams::new(store, &format!("{prefix}.ln1"), d);
        let attn = |name: &str, store: &mut ParamStore<T>, rng: &mut _| {
            Linear::new(
                store,
                &format!("{prefix}.attn.{name}"),
                d,
                d,
                config.qkv_bias,
                rng,
            )
        };
        let query = attn("query", store, rng);
        let key = attn("key", store, rng);
        let value = attn("value", store, rng);
        let out = config.out_proj.then(|| attn("out", store, rng));
        let ln2 = LayerNormParams::new(store, &format!("{prefix}.ln2"), d);
        let fc1 = Linear::new(
            store,
            &format!("{prefix}.mlp.fc1"),
            d,
            config.mlp_dim,
            true,
            rng,
        );
        let fc2 = Linear::new(
            store,
            &format!("{prefix}.mlp.fc2"),
            config.mlp_dim,
            d,
            true,
            rng,
        );
        Ok(BlockParams {
            ln1,
            query,
            key,
            value,
            out,
            ln2,
            fc1,
            fc2,
        })
    }

    fn linears(&self) -> impl Iterator<Item = Linear> + '_ {
        [self.query, self.key, self.value]
            .into_iter()
            .chain(self.out)
            .chain([self.fc1, self.fc2])
    }

    /// Every parameter id of the block, in creation order.
    pub fn ids(&self) -> Vec<ParamId> {
        let mut ids: Vec<ParamId> = self.ln1.ids().collect();
        for l in [self.query, self.key, self.value]
            .into_iter()
            .chain(self.out)
        {
            ids.extend(l.ids());
        }
        ids.extend(self.ln2.ids());
        ids.extend(self.fc1.ids());
        ids.extend(self.fc2.ids());
        ids
    }

    /// Re-initialises the listed parameters of this block as [`BlockParams::new`] did (in the
    /// block's own order whatever the order of `ids`, so the draws are reproducible); ids of other
    /// blocks are ignored. E.g. `block.reinitialize(store, &[block.query.weight,
    /// block.key.weight], rng)` for the fine-tuning experiment.
    pub fn reinitialize<T: Float>(
        &self,
        store: &mut ParamStore<T>,
        ids: &[ParamId],
        rng: &mut impl Rng,
    ) {
        self.ln1.reset(store, ids);
        self.ln2.reset(store, ids);
        for linear in self.linears() {
            linear.reset(store, ids, rng);
        }
    }

    /// The parameters as tape leaves (frozen ones as constants).
    pub fn vars<T: Float>(&self, tape: &mut Tape<T>, store: &ParamStore<T>) -> BlockVars {
        BlockVars {
            ln1: self.ln1.vars(tape, store),
            query: self.query.vars(tape, store),
            key: self.key.vars(tape, store),
            value: self.value.vars(tape, store),
            out: self.out.map(|l| l.vars(tape, store)),
            ln2: self.ln2.vars(tape, store),
            fc1: self.fc1.vars(tape, store),
            fc2: self.fc2.vars(tape, store),
        }
    }
}

/// The tape handles of a block's parameters: from a [`ParamStore`] ([`BlockParams::vars`]) or
/// free variables (gradient checks). Layer norms are `(gamma, beta)`.
#[derive(Clone, Copy, Debug)]
pub struct BlockVars {
    /// `LN1`'s `(gamma, beta)`.
    pub ln1: (Var, Var),
    /// Query projection.
    pub query: LinearVars,
    /// Key projection.
    pub key: LinearVars,
    /// Value projection.
    pub value: LinearVars,
    /// Output projection; `None` without `out_proj`.
    pub out: Option<LinearVars>,
    /// `LN2`'s `(gamma, beta)`.
    pub ln2: (Var, Var),
    /// First MLP layer.
    pub fc1: LinearVars,
    /// Second MLP layer.
    pub fc2: LinearVars,
}

/// What a block computes.
#[derive(Clone, Copy, Debug)]
pub struct BlockOutput {
    /// `[batch, seq, d_model]`.
    pub out: Var,
    /// Attention probabilities `[batch, heads, seq (query), seq (key)]`.
    pub attention: Var,
}

/// The additive key-padding mask for scores of shape `[batch, seq, seq]` (one head) or
/// `[batch, heads, seq, seq]`: 0 where the key is a real token, `-inf` where it is padding.
/// `real` is `batch x seq`, `true` for a real token.
pub fn key_padding_mask<T: Float>(
    tape: &mut Tape<T>,
    real: &[bool],
    batch: usize,
    heads: usize,
    seq: usize,
) -> Var {
    assert_eq!(
        real.len(),
        batch * seq,
        "key padding mask has {} entries for batch {batch} x seq {seq}",
        real.len()
    );
    let mut mask = Vec::with_capacity(batch * heads * seq * seq);
    for sample in real.chunks_exact(seq.max(1)) {
        let row: Vec<T> = sample
            .iter()
            .map(|&r| if r { T::ZERO } else { T::NEG_INFINITY })
            .collect();
        for _ in 0..heads * seq {
            mask.extend_from_slice(&row);
        }
    }
    if heads == 1 {
        tape.constant(&[batch, seq, seq], &mask)
    } else {
        tape.constant(&[batch, heads, seq, seq], &mask)
    }
}

/// One block over `x` `[batch, seq, d_model]`, reading the parameters from `store`.
/// `key_padding_mask` is `batch x seq`, `true` for a real token. Works with recording on or off.
pub fn block_forward<T: Float>(
    tape: &mut Tape<T>,
    store: &ParamStore<T>,
    params: &BlockParams,
    config: &BlockConfig,
    x: Var,
    key_padding_mask: Option<&[bool]>,
) -> BlockOutput {
    let vars = params.vars(tape, store);
    block_forward_vars(tape, &vars, config, x, key_padding_mask)
}

/// [`block_forward`] with the parameters given as tape handles.
pub fn block_forward_vars<T: Float>(
    tape: &mut Tape<T>,
    vars: &BlockVars,
    config: &BlockConfig,
    x: Var,
    real_tokens: Option<&[bool]>,
) -> BlockOutput {
    check_block_input(tape, vars, config, x, "block_forward");
    let eps = T::from_f64(config.ln_eps);
    let h = tape.layer_norm(x, vars.ln1.0, vars.ln1.1, eps);
    let qkv = packed_qkv(tape, h, vars);
    let attention = tape.multi_head_attention(qkv, config.heads, real_tokens);
    BlockOutput {
        out: after_attention(tape, vars, config, x, attention.context),
        attention: attention.probabilities,
    }
}

/// What [`cls_block_forward_vars`] computes.
#[derive(Clone, Copy, Debug)]
pub struct ClsBlockOutput {
    /// The block's output at position 0 (the `[CLS]` token), `[batch, d_model]`.
    pub out: Var,
    /// The `[CLS]` query's attention, `[batch, heads, seq (key)]`: row 0 of
    /// [`BlockOutput::attention`].
    pub attention: Var,
}

/// The block's output at position 0 only: the `[CLS]` row of [`block_forward_vars`], for a last
/// block whose other rows nothing reads (a classifier head on `[CLS]`). Everything after the
/// attention acts row by row, so only the `[CLS]` query's attention is needed, and the key and
/// value projections fold into that one query (per head `h`, with `s = 1/sqrt(d/H)`):
///
/// ```text
/// score_j = s q_h . (Wk_h h_j + bk_h) = s (Wk_h^T q_h) . h_j + const   (the constant cancels
///                                                                       in the softmax)
/// c_h     = sum_j a_j (Wv_h h_j + bv_h) = Wv_h (sum_j a_j h_j) + bv_h   (sum_j a_j = 1)
/// ```
///
/// so no key or value is formed for any token: the cost is `O(batch (H d^2 + H seq d))`
/// instead of the full block's `O(batch seq d (4 d + 2 mlp + 2 seq))`. Position 0 must be a real
/// token in every sample (the `[CLS]` token always is), which is what makes `sum_j a_j = 1`. The
/// query is `Wk_h^T q_h` for every head at once as `(q masked to head h) Wk`, and the context
/// as the head-masked sum of `(sum_j a_j h_j) Wv^T`: `H` times the multiply-adds of the
/// per-head products, and still small (MNIST's classifier, d = 64, H = 4, 50 tokens: about 4%
/// of the full block's multiply-adds), without per-head weight slices. `bk` is not used, so it
/// gets no gradient (in the full block its gradient is rounding noise around zero).
pub fn cls_block_forward_vars<T: Float>(
    tape: &mut Tape<T>,
    vars: &BlockVars,
    config: &BlockConfig,
    x: Var,
    real_tokens: Option<&[bool]>,
) -> ClsBlockOutput {
    let [batch, seq] = check_block_input(tape, vars, config, x, "cls_block_forward");
    assert!(seq > 0, "cls_block_forward: x has no position 0");
    let (d, heads) = (config.d_model, config.heads);
    let head_dim = d / heads;
    let eps = T::from_f64(config.ln_eps);
    let h = tape.layer_norm(x, vars.ln1.0, vars.ln1.1, eps);
    let h_cls = tape.select(h, 1, 0);
    let query = linear_forward(tape, h_cls, &vars.query);
    // head_mask[h, c] = 1 on head h's columns c
    let head_mask: Vec<T> = (0..heads * d)
        .map(|i| {
            T::from_f64(if (i % d) / head_dim == i / d {
                1.0
            } else {
                0.0
            })
        })
        .collect();
    let head_mask = tape.constant(&[heads, d], &head_mask);
    let query = tape.reshape(query, &[batch, 1, d]);
    let query_per_head = tape.mul(query, head_mask);
    // [batch, heads, d]: row h is Wk_h^T q_h
    let folded_query = tape.matmul(query_per_head, vars.key.weight);
    let scores = tape.matmul_t(folded_query, h, false, true);
    let scores = tape.scale(scores, T::from_f64(1.0 / (head_dim as f64).sqrt()));
    let mask = real_tokens.map(|real| {
        assert_eq!(
            real.len(),
            batch * seq,
            "cls_block_forward: key padding mask has {} entries for batch {batch} x seq {seq}",
            real.len()
        );
        // [batch, heads, seq]: each sample's key row repeated over its heads
        let mut repeated = Vec::with_capacity(batch * heads * seq);
        for sample in real.chunks_exact(seq) {
            assert!(
                sample[0],
                "cls_block_forward: position 0 must be a real token"
            );
            let row = sample
                .iter()
                .map(|&r| if r { T::ZERO } else { T::NEG_INFINITY });
            for _ in 0..heads {
                repeated.extend(row.clone());
            }
        }
        tape.constant(&[batch, heads, seq], &repeated)
    });
    let attention = tape.softmax(scores, mask);
    // [batch, heads, d]: row h is sum_j a_hj h_j
    let mixed = tape.matmul(attention, h);
    let values = tape.matmul_t(mixed, vars.value.weight, false, true);
    let values = tape.mul(values, head_mask);
    let context = tape.sum_axis(values, 1);
    let context = match vars.value.bias {
        Some(bias) => tape.add(context, bias),
        None => context,
    };
    let x_cls = tape.select(x, 1, 0);
    ClsBlockOutput {
        out: after_attention(tape, vars, config, x_cls, context),
        attention,
    }
}

/// Panics (naming `what`) unless `x` is `[batch, seq, d_model]`, the heads divide `d_model` and
/// the output projection's parameters match the config; returns `[batch, seq]`.
fn check_block_input<T: Float>(
    tape: &Tape<T>,
    vars: &BlockVars,
    config: &BlockConfig,
    x: Var,
    what: &str,
) -> [usize; 2] {
    let shape = tape.shape(x);
    assert!(
        shape.rank() == 3 && shape.dim(2) == config.d_model,
        "{what}: x must be [batch, seq, {}], got {shape}",
        config.d_model
    );
    assert!(
        config.heads > 0 && config.d_model.is_multiple_of(config.heads),
        "{what}: {} heads do not divide d_model {}",
        config.heads,
        config.d_model
    );
    assert_eq!(
        vars.out.is_some(),
        config.out_proj,
        "{what}: output projection parameters do not match config.out_proj"
    );
    [shape.dim(0), shape.dim(1)]
}

/// The block after the heads are merged into `context`: the output projection (if any), the
/// residual and the MLP sub-layer.
fn after_attention<T: Float>(
    tape: &mut Tape<T>,
    vars: &BlockVars,
    config: &BlockConfig,
    x: Var,
    context: Var,
) -> Var {
    match (&vars.out, config.residual) {
        // x1 = x + c Wo^T + bo in one op.
        (Some(out), true) => {
            let x1 = tape.linear_residual(context, out.weight, out.bias, x);
            mlp_sublayer(tape, vars, config, x1)
        }
        (Some(out), false) => {
            let context = linear_forward(tape, context, out);
            attention_residual_and_mlp(tape, vars, config, x, context)
        }
        (None, _) => attention_residual_and_mlp(tape, vars, config, x, context),
    }
}

/// `h [Wq; Wk; Wv]^T + [bq; bk; bv]`: the three projections as one GEMM over the stacked
/// weights, `[batch, seq, 3 d]`, which the attention op reads head by head without copies.
/// Stacking copies `3 d^2` parameters per step; the GEMM reads `h` (`batch * seq` rows) once
/// instead of three times.
fn packed_qkv<T: Float>(tape: &mut Tape<T>, h: Var, vars: &BlockVars) -> Var {
    let weight = tape.concat(&[vars.query.weight, vars.key.weight, vars.value.weight], 0);
    let bias = match (vars.query.bias, vars.key.bias, vars.value.bias) {
        (Some(q), Some(k), Some(v)) => Some(tape.concat(&[q, k, v], 0)),
        (None, None, None) => None,
        _ => panic!("block_forward: query, key and value must all have a bias or none"),
    };
    tape.linear(h, weight, bias)
}

/// The block after its attention: `x1 = x + context` (or `context` without the residual), then
/// the MLP sub-layer `out = x1 + fc2(gelu(fc1(LN2(x1))))` (or without its residual). Shared by
/// [`block_forward_vars`] and models that compute the attention for a subset of the queries.
pub fn attention_residual_and_mlp<T: Float>(
    tape: &mut Tape<T>,
    vars: &BlockVars,
    config: &BlockConfig,
    x: Var,
    context: Var,
) -> Var {
    let x1 = if config.residual {
        tape.add(x, context)
    } else {
        context
    };
    mlp_sublayer(tape, vars, config, x1)
}

/// `x1 + fc2(gelu(fc1(LN2(x1))))` (without the `x1` term without the residual), with the GELU
/// fused into fc1 and the residual into fc2.
fn mlp_sublayer<T: Float>(
    tape: &mut Tape<T>,
    vars: &BlockVars,
    config: &BlockConfig,
    x1: Var,
) -> Var {
    let eps = T::from_f64(config.ln_eps);
    let h2 = tape.layer_norm(x1, vars.ln2.0, vars.ln2.1, eps);
    let hidden = tape.linear_gelu(h2, vars.fc1.weight, vars.fc1.bias);
    if config.residual {
        tape.linear_residual(hidden, vars.fc2.weight, vars.fc2.bias, x1)
    } else {
        linear_forward(tape, hidden, &vars.fc2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn setup(config: &BlockConfig, seed: u64) -> (ParamStore<f64>, BlockParams) {
        let mut store = ParamStore::new();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let params = BlockParams::new(&mut store, "blocks.0", config, &mut rng).unwrap();
        (store, params)
    }

    fn tokens(batch: usize, seq: usize, d: usize, seed: u64) -> Vec<f64> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..batch * seq * d)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect()
    }

    #[test]
    fn names_shapes_and_pytorch_init() {
        let config = BlockConfig::new(12, 3, 20);
        let (store, p) = setup(&config, 1);
        assert_eq!(store.len(), 4 + 2 * 4 + 4);
        assert_eq!(store.id("blocks.0.attn.query.weight"), Some(p.query.weight));
        assert_eq!(store.id("blocks.0.attn.key.bias"), p.key.bias);
        assert_eq!(
            store.id("blocks.0.attn.out.weight"),
            Some(p.out.unwrap().weight)
        );
        assert_eq!(store.id("blocks.0.mlp.fc2.bias"), p.fc2.bias);
        assert_eq!(store.id("blocks.0.ln2.weight"), Some(p.ln2.gamma));
        assert_eq!(store.shape(p.fc1.weight).dims(), &[20, 12]);
        assert_eq!(store.shape(p.fc2.weight).dims(), &[12, 20]);
        assert!(store.value(p.ln1.gamma).iter().all(|&v| v == 1.0));
        assert!(store.value(p.ln1.beta).iter().all(|&v| v == 0.0));
        for (linear, fan_in) in [(p.query, 12.0), (p.fc1, 12.0), (p.fc2, 20.0)] {
            let bound = 1.0 / f64::sqrt(fan_in);
            for id in linear.ids() {
                let v = store.value(id);
                assert!(v.iter().all(|x| x.abs() < bound));
                // Spread over the interval, not a constant.
                let max = v.iter().fold(0.0f64, |m, x| m.max(x.abs()));
                assert!(max > 0.5 * bound, "{}", store.name(id));
            }
        }
        let bare = BlockConfig {
            qkv_bias: false,
            out_proj: false,
            ..config
        };
        let (store, p) = setup(&bare, 1);
        assert!(p.query.bias.is_none() && p.out.is_none());
        assert_eq!(store.len(), 4 + 3 + 4);
        assert_eq!(p.ids().len(), store.len());
    }

    #[test]
    fn reinitialize_redraws_only_the_listed_params() {
        let config = BlockConfig::new(8, 2, 8);
        let (mut store, p) = setup(&config, 3);
        let before: Vec<Vec<f64>> = store.ids().map(|id| store.value(id).to_vec()).collect();
        store.value_mut(p.ln1.gamma)[0] = 5.0;
        let chosen = [p.query.weight, p.key.weight, p.ln1.gamma];
        let mut rng = ChaCha8Rng::seed_from_u64(99);
        p.reinitialize(&mut store, &chosen, &mut rng);
        for (id, old) in store.ids().zip(&before) {
            let changed = store.value(id) != old.as_slice();
            let expected = chosen[..2].contains(&id);
            assert_eq!(changed, expected, "{}", store.name(id));
        }
        assert!(store
            .value(p.query.weight)
            .iter()
            .all(|x| x.abs() < 1.0 / 8f64.sqrt()));
        // Same RNG state and list in another order: the same draws.
        let mut again = setup(&config, 3).0;
        let mut rng = ChaCha8Rng::seed_from_u64(99);
        p.reinitialize(&mut again, &[p.key.weight, p.query.weight], &mut rng);
        assert_eq!(again.value(p.key.weight), store.value(p.key.weight));
    }

    #[test]
    fn invalid_configs_name_the_field() {
        for (config, field) in [
            (BlockConfig::new(0, 1, 4), "d-model"),
            (BlockConfig::new(10, 3, 4), "heads"),
            (BlockConfig::new(10, 0, 4), "heads"),
            (BlockConfig::new(10, 2, 0), "mlp-dim"),
            (
                BlockConfig {
                    ln_eps: -1.0,
                    ..BlockConfig::new(4, 1, 4)
                },
                "ln-eps",
            ),
        ] {
            match config.validate() {
                Err(Error::InvalidOption { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    fn forward(
        store: &ParamStore<f64>,
        p: &BlockParams,
        config: &BlockConfig,
        x: &[f64],
        dims: [usize; 3],
        mask: Option<&[bool]>,
        grad: bool,
    ) -> (Vec<f64>, Vec<f64>) {
        let mut tape = Tape::new();
        tape.set_grad_enabled(grad);
        let xv = tape.constant(&dims, x);
        let out = block_forward(&mut tape, store, p, config, xv, mask);
        (
            tape.value(out.out).to_vec(),
            tape.value(out.attention).to_vec(),
        )
    }

    #[test]
    fn padding_keys_get_zero_attention_and_do_not_change_real_outputs() {
        let (batch, seq, d, heads) = (3, 5, 8, 2);
        for residual in [true, false] {
            let config = BlockConfig {
                residual,
                ..BlockConfig::new(d, heads, 12)
            };
            let (store, p) = setup(&config, 5);
            // Sample 0 all real, sample 1 two padding tokens at the end, sample 2 only padding.
            let mut mask = vec![true; batch * seq];
            mask[seq + 3] = false;
            mask[seq + 4] = false;
            for m in &mut mask[2 * seq..] {
                *m = false;
            }
            let x = tokens(batch, seq, d, 11);
            let mut y = x.clone();
            for (pos, &real) in mask.iter().enumerate() {
                if !real {
                    for v in &mut y[pos * d..(pos + 1) * d] {
                        *v = 100.0 * *v + 3.0;
                    }
                }
            }
            let dims = [batch, seq, d];
            let (out_x, att_x) = forward(&store, &p, &config, &x, dims, Some(&mask), true);
            let (out_y, att_y) = forward(&store, &p, &config, &y, dims, Some(&mask), false);
            assert!(out_x.iter().chain(&out_y).all(|v| v.is_finite()));
            assert!(att_x.iter().all(|v| v.is_finite()));
            for b in 0..batch {
                for h in 0..heads {
                    for q in 0..seq {
                        let row = &att_x[((b * heads + h) * seq + q) * seq..][..seq];
                        for (kpos, &a) in row.iter().enumerate() {
                            if !mask[b * seq + kpos] {
                                assert_eq!(a, 0.0, "padding key {kpos} of sample {b}");
                            }
                        }
                        let total: f64 = row.iter().sum();
                        let expected = if b == 2 { 0.0 } else { 1.0 };
                        assert!((total - expected).abs() < 1e-12);
                    }
                }
            }
            for (pos, &real) in mask.iter().enumerate() {
                if real {
                    let (a, b) = (&out_x[pos * d..][..d], &out_y[pos * d..][..d]);
                    for (u, v) in a.iter().zip(b) {
                        assert!((u - v).abs() < 1e-12, "position {pos}: {u} vs {v}");
                    }
                }
            }
            // Attention rows of real queries do not depend on the padding either.
            for (row, (a, b)) in att_x.chunks(seq).zip(att_y.chunks(seq)).enumerate() {
                let (sample, query) = (row / (heads * seq), row % seq);
                if mask[sample * seq + query] {
                    assert_eq!(a, b, "attention row {row}");
                }
            }
        }
    }

    /// `|a - b| <= 1e-10 (1 + max |b|)` elementwise, with the same length.
    fn assert_close(a: &[f64], b: &[f64], what: &str) {
        assert_eq!(a.len(), b.len(), "{what}: lengths");
        let scale = 1.0 + b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for (i, (u, v)) in a.iter().zip(b).enumerate() {
            assert!(
                (u - v).abs() <= 1e-10 * scale,
                "{what}: entry {i}: {u} vs {v}"
            );
        }
    }

    /// `cls_block_forward_vars` against row 0 of the full block in f64: the output, the [CLS]
    /// attention row, and the gradients of a random linear function of the output with
    /// respect to the input and every parameter, over head counts, block variants and padding.
    #[test]
    fn cls_block_equals_row_zero_of_the_full_block_with_its_gradients() {
        let (batch, seq, d) = (3, 6, 8);
        // sample 1 has two padding tokens, sample 2 one in the middle
        let mut mask = vec![true; batch * seq];
        mask[seq + 4] = false;
        mask[seq + 5] = false;
        mask[2 * seq + 2] = false;
        for heads in [1, 2, 4] {
            for (qkv_bias, out_proj, residual) in [
                (true, true, true),
                (false, false, true),
                (true, true, false),
            ] {
                let config = BlockConfig {
                    qkv_bias,
                    out_proj,
                    residual,
                    ..BlockConfig::new(d, heads, 12)
                };
                let (store, p) = setup(&config, 21);
                let x = tokens(batch, seq, d, 22);
                let weights = tokens(batch, 1, d, 23);
                for padding in [None, Some(mask.as_slice())] {
                    let run = |cls_only: bool| {
                        let mut tape = Tape::<f64>::new();
                        let xv = tape.variable(&[batch, seq, d], &x);
                        let vars = p.vars(&mut tape, &store);
                        let (out, attention) = if cls_only {
                            let out =
                                cls_block_forward_vars(&mut tape, &vars, &config, xv, padding);
                            (out.out, tape.value(out.attention).to_vec())
                        } else {
                            let out = block_forward_vars(&mut tape, &vars, &config, xv, padding);
                            let rows = tape.value(out.attention).chunks(seq * seq);
                            let first: Vec<f64> = rows.flat_map(|r| r[..seq].to_vec()).collect();
                            (tape.select(out.out, 1, 0), first)
                        };
                        let w = tape.constant(&[batch, d], &weights);
                        let weighted = tape.mul(out, w);
                        let loss = tape.sum_all(weighted);
                        let value = tape.value(out).to_vec();
                        let grads = tape.backward(loss);
                        // the key bias is unused by the [CLS] path (its gradient is zero)
                        let mut all = vec![grads.get(xv).unwrap().to_vec()];
                        for id in p.ids() {
                            let zero = vec![0.0; store.value(id).len()];
                            all.push(grads.param(id).map_or(zero, |g| g.to_vec()));
                        }
                        (value, attention, all)
                    };
                    let (out_c, att_c, grads_c) = run(true);
                    let (out_f, att_f, grads_f) = run(false);
                    let what = format!("heads {heads}, bias {qkv_bias}, out {out_proj}, residual {residual}, padding {}", padding.is_some());
                    assert_close(&out_c, &out_f, &format!("output, {what}"));
                    assert_close(&att_c, &att_f, &format!("attention, {what}"));
                    for (i, (gc, gf)) in grads_c.iter().zip(&grads_f).enumerate() {
                        assert_close(gc, gf, &format!("gradient {i}, {what}"));
                    }
                }
            }
        }
    }

    #[test]
    fn grad_and_no_grad_agree_in_f32_and_f64_and_one_head_matches_its_split() {
        let (batch, seq, d) = (2, 4, 6);
        let config = BlockConfig {
            qkv_bias: false,
            out_proj: false,
            ..BlockConfig::new(d, 1, 10)
        };
        let (store, p) = setup(&config, 8);
        let x = tokens(batch, seq, d, 4);
        let mask = [true, true, true, false, true, true, true, true];
        let dims = [batch, seq, d];
        let (a, att_a) = forward(&store, &p, &config, &x, dims, Some(&mask), true);
        let (b, att_b) = forward(&store, &p, &config, &x, dims, Some(&mask), false);
        assert_eq!(a, b);
        assert_eq!(att_a, att_b);
        // f32 run of the same parameters.
        let mut store32 = ParamStore::<f32>::new();
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        let p32 = BlockParams::new(&mut store32, "blocks.0", &config, &mut rng).unwrap();
        let mut tape = Tape::<f32>::new();
        let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let xv = tape.constant(&dims, &x32);
        let out = block_forward(&mut tape, &store32, &p32, &config, xv, Some(&mask));
        for (u, v) in tape.value(out.out).iter().zip(&a) {
            assert!((f64::from(*u) - v).abs() < 1e-4 * (1.0 + v.abs()));
        }
        // One-head attention computed by hand from the tape's projections.
        let mut tape = Tape::<f64>::new();
        let xv = tape.constant(&dims, &x);
        let vars = p.vars(&mut tape, &store);
        let h = tape.layer_norm(xv, vars.ln1.0, vars.ln1.1, 1e-5);
        let q = linear_forward(&mut tape, h, &vars.query);
        let k = linear_forward(&mut tape, h, &vars.key);
        let (qv, kv) = (tape.value(q).to_vec(), tape.value(k).to_vec());
        for bi in 0..batch {
            for i in 0..seq {
                let mut logits = vec![f64::NEG_INFINITY; seq];
                for (j, l) in logits.iter_mut().enumerate() {
                    if mask[bi * seq + j] {
                        let dot: f64 = (0..d)
                            .map(|c| qv[(bi * seq + i) * d + c] * kv[(bi * seq + j) * d + c])
                            .sum();
                        *l = dot / (d as f64).sqrt();
                    }
                }
                let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = logits.iter().map(|l| (l - m).exp()).sum();
                for j in 0..seq {
                    let expected = (logits[j] - m).exp() / z;
                    let got = att_a[(bi * seq + i) * seq + j];
                    assert!((expected - got).abs() < 1e-14);
                }
            }
        }
    }
}
