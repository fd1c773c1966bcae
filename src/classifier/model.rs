//! The transformer encoder classifier:
//!
//! ```text
//! h_0 = embed(tokens)                        [batch, S + 1, d]   ([CLS] first, positions added)
//! h_l = block_l(h_{l-1}, key padding mask)   l = 1..L            (pre-LN, H heads, GELU MLP)
//! logits = LN(h_L[:, 0]) W_head^T + b_head   [batch, classes]
//! ```
//!
//! The head reads the `[CLS]` row only, and everything after a block's attention acts token by
//! token, so the last block computes that one row ([`cls_block_forward_vars`]: the `[CLS]`
//! query's attention, with the key and value projections folded into it), and the final
//! LayerNorm normalises that row alone. The function is the same as running the full last block and
//! reading `h_L[:, 0]`; the work of that block falls from about a third of the model's to a few
//! percent of it.

use benign_kernels::Float;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::embed::{key_padding_mask, EmbedParams, InputKind, TokenParams};
use crate::autodiff::{ParamId, ParamStore, Tape, Var};
use crate::realdata::{TokenizedSplit, Tokens};
use crate::transformer::block::check_heads;
use crate::transformer::{
    block_forward_vars, cls_block_forward_vars, linear_forward, BlockConfig, BlockParams,
    BlockVars, LayerNormParams, Linear, LinearVars,
};
use crate::{Error, Result};

/// The shape of a classifier.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// What the model reads (patch width or vocabulary size).
    pub input: InputKind,
    /// Input tokens per example (the `[CLS]` token is added on top).
    pub seq_len: usize,
    /// Number of classes, the width of the head's output.
    pub num_classes: usize,
    /// Width d of the token representations.
    pub dim: usize,
    /// Attention heads per block; must divide `dim`.
    pub heads: usize,
    /// Number of transformer blocks.
    pub layers: usize,
    /// Hidden width of each block's MLP.
    pub mlp_dim: usize,
    /// Epsilon of every LayerNorm (added to the variance).
    pub ln_eps: f64,
}

impl ModelConfig {
    /// The configuration of every block (ViT/BERT-style: biases, output projection, residuals).
    pub fn block(&self) -> BlockConfig {
        BlockConfig {
            ln_eps: self.ln_eps,
            ..BlockConfig::new(self.dim, self.heads, self.mlp_dim)
        }
    }

    /// Checks every size; errors name the option and its valid range.
    pub fn validate(&self) -> Result<()> {
        let at_least = |field: &str, value: usize, min: usize| {
            if value < min {
                Err(Error::invalid(
                    field,
                    format!("must be at least {min}, got {value}"),
                ))
            } else {
                Ok(())
            }
        };
        at_least("layers", self.layers, 1)?;
        at_least("dim", self.dim, 1)?;
        at_least("mlp-dim", self.mlp_dim, 1)?;
        at_least("seq-len", self.seq_len, 1)?;
        at_least("classes", self.num_classes, 2)?;
        match self.input {
            InputKind::Patches { patch_dim } => at_least("patch dimension", patch_dim, 1)?,
            InputKind::Words { vocab_size } => at_least("vocabulary size", vocab_size, 2)?,
        }
        check_heads(self.heads, ("dim", self.dim))?;
        // A generous bound that keeps parameter counts (and the memory asked for) sane.
        let params = self.parameter_count();
        if params > 1 << 31 {
            return Err(Error::OutOfMemory {
                what: "classifier parameters".into(),
                needed_bytes: params as u128 * 4,
                hint: "reduce --dim, --mlp-dim or --layers".into(),
            });
        }
        self.block().validate()
    }

    /// Number of scalar parameters (saturating, for the size check).
    pub fn parameter_count(&self) -> usize {
        let d = self.dim;
        let tokens = match self.input {
            InputKind::Patches { patch_dim } => patch_dim.saturating_mul(d).saturating_add(d),
            InputKind::Words { vocab_size } => vocab_size.saturating_mul(d),
        };
        let block = 4 * (d * d + d) + 2 * d * self.mlp_dim + self.mlp_dim + d + 4 * d;
        tokens
            .saturating_add(d * (self.seq_len.saturating_add(2)))
            .saturating_add(self.layers.saturating_mul(block))
            .saturating_add(2 * d + self.num_classes * (d + 1))
    }
}

/// A transformer classifier: its configuration, parameters and their handles.
pub struct Classifier<T: Float> {
    /// The shape the parameters were built for.
    pub config: ModelConfig,
    /// Every parameter's values (and frozen flags), addressed by the handles below.
    pub store: ParamStore<T>,
    /// Handles of the embedding's parameters.
    pub embed: EmbedParams,
    /// Handles of each block's parameters, first block first.
    pub blocks: Vec<BlockParams>,
    /// LayerNorm on the final `[CLS]` representation.
    pub final_norm: LayerNormParams,
    /// `[classes, d]` weight and `[classes]` bias.
    pub head: Linear,
}

/// What [`Classifier::forward`] records.
#[derive(Clone, Copy, Debug)]
pub struct Forward {
    /// `[batch, classes]`.
    pub logits: Var,
    /// The last block's `[CLS]` query attention `[batch, heads, S + 1]` (keys in order, `[CLS]`
    /// first).
    pub cls_attention: Var,
}

impl<T: Float> Classifier<T> {
    /// A freshly initialised classifier, drawing every parameter from `rng` (embedding, blocks
    /// in order, final norm, head).
    pub fn new(config: ModelConfig, rng: &mut impl Rng) -> Result<Self> {
        config.validate()?;
        let mut store = ParamStore::new();
        let embed = EmbedParams::new(&mut store, config.input, config.seq_len, config.dim, rng);
        let block_config = config.block();
        let blocks = (0..config.layers)
            .map(|l| BlockParams::new(&mut store, &format!("blocks.{l}"), &block_config, rng))
            .collect::<Result<Vec<_>>>()?;
        let final_norm = LayerNormParams::new(&mut store, "norm", config.dim);
        let head = Linear::new(
            &mut store,
            "head",
            config.dim,
            config.num_classes,
            true,
            rng,
        );
        Ok(Classifier {
            config,
            store,
            embed,
            blocks,
            final_norm,
            head,
        })
    }

    /// Checks that `split` can be fed to this model (token kind, sizes, ids, labels).
    pub fn check_split(&self, split: &TokenizedSplit, what: &str) -> Result<()> {
        let c = &self.config;
        let mismatch = |message: String| Err(Error::invalid(what, message));
        if split.seq_len != c.seq_len {
            return mismatch(format!(
                "{} tokens per example, the model takes {}",
                split.seq_len, c.seq_len
            ));
        }
        if split.num_classes > c.num_classes {
            return mismatch(format!(
                "{} classes, the model has {}",
                split.num_classes, c.num_classes
            ));
        }
        if split.labels.len() != split.n {
            return mismatch(format!(
                "{} labels for {} examples",
                split.labels.len(),
                split.n
            ));
        }
        match (&split.tokens, c.input) {
            (Tokens::Patches { patch_dim, values }, InputKind::Patches { patch_dim: p }) => {
                if *patch_dim != p {
                    return mismatch(format!(
                        "patches of {patch_dim} values, the model takes {p}"
                    ));
                }
                if values.len() != split.n * split.seq_len * patch_dim {
                    return mismatch(format!(
                        "{} patch values, expected n x seq x patch",
                        values.len()
                    ));
                }
            }
            (Tokens::Words { ids, .. }, InputKind::Words { vocab_size }) => {
                if ids.len() != split.n * split.seq_len {
                    return mismatch(format!("{} word ids, expected n x seq", ids.len()));
                }
                if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab_size) {
                    return mismatch(format!(
                        "word id {bad} outside the vocabulary of {vocab_size}"
                    ));
                }
            }
            _ => return mismatch("image patches for a text model or the reverse".into()),
        }
        Ok(())
    }

    /// The tape handles of every parameter, indexed by [`ParamId::index`] (frozen ones enter as
    /// constants).
    pub fn param_vars(&self, tape: &mut Tape<T>) -> Vec<Var> {
        self.store
            .ids()
            .map(|id| tape.param(&self.store, id))
            .collect()
    }

    /// Logits and last-block attention for the examples `indices` of `split`, parameters read
    /// from the store.
    pub fn forward(
        &self,
        tape: &mut Tape<T>,
        split: &TokenizedSplit,
        indices: &[usize],
    ) -> Forward {
        let vars = self.param_vars(tape);
        self.forward_vars(tape, &vars, split, indices)
    }

    /// [`Classifier::forward`] with the parameters given as tape handles (gradient checks).
    pub fn forward_vars(
        &self,
        tape: &mut Tape<T>,
        vars: &[Var],
        split: &TokenizedSplit,
        indices: &[usize],
    ) -> Forward {
        assert_eq!(vars.len(), self.store.len(), "one handle per parameter");
        let real = key_padding_mask(split, indices);
        let block_config = self.config.block();
        let mut h = self.embed.forward(tape, vars, split, indices);
        let (last, first) = self.blocks.split_last().expect("at least one block");
        for block in first {
            let block_vars = block_vars(block, vars);
            h = block_forward_vars(tape, &block_vars, &block_config, h, real.as_deref()).out;
        }
        // The head reads [CLS] only: the last block computes that one row.
        let last = block_vars(last, vars);
        let last = cls_block_forward_vars(tape, &last, &block_config, h, real.as_deref());
        let cls = tape.layer_norm(
            last.out,
            vars[self.final_norm.gamma.index()],
            vars[self.final_norm.beta.index()],
            T::from_f64(self.config.ln_eps),
        );
        let logits = linear_forward(tape, cls, &linear_vars(&self.head, vars));
        Forward {
            logits,
            cls_attention: last.attention,
        }
    }

    /// The classifier head's parameters (weight, bias).
    pub fn head_params(&self) -> Vec<ParamId> {
        self.head.ids().collect()
    }

    /// The last block's query and key projections (weights and biases): what the fine-tuning
    /// experiment trains.
    pub fn last_query_key(&self) -> Vec<ParamId> {
        let last = self.blocks.last().expect("at least one block");
        last.query.ids().chain(last.key.ids()).collect()
    }

    /// Freezes every parameter except `trainable` (which are unfrozen).
    pub fn freeze_all_except(&mut self, trainable: &[ParamId]) {
        let ids: Vec<ParamId> = self.store.ids().collect();
        for id in ids {
            self.store.set_frozen(id, !trainable.contains(&id));
        }
    }

    /// Redraws the listed parameters as [`Classifier::new`] initialised them (PyTorch defaults),
    /// from `rng`, in the model's parameter order whatever the order of `ids`.
    pub fn reinitialize(&mut self, ids: &[ParamId], rng: &mut impl Rng) {
        self.embed.reinitialize(&mut self.store, ids, rng);
        for block in &self.blocks {
            block.reinitialize(&mut self.store, ids, rng);
        }
        self.final_norm.reset(&mut self.store, ids);
        self.head.reset(&mut self.store, ids, rng);
    }

    /// Whether the token kind of the model is text.
    pub fn is_text(&self) -> bool {
        matches!(self.embed.tokens, TokenParams::Words { .. })
    }
}

/// The `[CLS]` query's attention rows of the last block, `[batch, heads, S + 1]` (keys in order,
/// `[CLS]` first), read from a recorded forward pass.
pub fn cls_attention<T: Float>(tape: &Tape<T>, forward: &Forward) -> Vec<T> {
    tape.value(forward.cls_attention).to_vec()
}

/// For each example, the largest probability the `[CLS]` query gives one input token in the last
/// block, averaged over heads (`cls_rows` from [`cls_attention`], `heads` rows of `seq` keys per
/// example; the `[CLS]` key itself is skipped: the quantity measures token selection).
pub fn max_cls_attention<T: Float>(cls_rows: &[T], heads: usize, seq: usize) -> Vec<f64> {
    cls_rows
        .chunks_exact(heads * seq)
        .map(|example| {
            let total: f64 = example
                .chunks_exact(seq)
                .map(|row| row[1..].iter().fold(0.0f64, |m, &p| m.max(p.to_f64())))
                .sum();
            total / heads as f64
        })
        .collect()
}

fn linear_vars(layer: &Linear, vars: &[Var]) -> LinearVars {
    LinearVars {
        weight: vars[layer.weight.index()],
        bias: layer.bias.map(|b| vars[b.index()]),
    }
}

fn block_vars(block: &BlockParams, vars: &[Var]) -> BlockVars {
    BlockVars {
        ln1: (vars[block.ln1.gamma.index()], vars[block.ln1.beta.index()]),
        query: linear_vars(&block.query, vars),
        key: linear_vars(&block.key, vars),
        value: linear_vars(&block.value, vars),
        out: block.out.as_ref().map(|l| linear_vars(l, vars)),
        ln2: (vars[block.ln2.gamma.index()], vars[block.ln2.beta.index()]),
        fc1: linear_vars(&block.fc1, vars),
        fc2: linear_vars(&block.fc2, vars),
    }
}
