//! Token embeddings of the classifier: a linear patch embedding (images) or a word-embedding
//! table (text), a learned `[CLS]` token prepended to every sequence, and learned positions.
//!
//! ```text
//! images: x_t = W_patch^T p_t + b_patch      text: x_t = E[id_t]
//! h = [cls; x_1; ...; x_S] + positions        (shape [batch, S + 1, d])
//! ```
//!
//! Initialisation follows PyTorch/BERT practice: the patch projection as `nn.Linear`
//! (`U(-1/sqrt(fan_in), 1/sqrt(fan_in))` for weight and bias), word embeddings, `[CLS]` and
//! positions `N(0, 0.02^2)`.

use benign_kernels::Float;
use rand::Rng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

use crate::autodiff::{ParamId, ParamStore, Tape, Tensor, Var};
use crate::realdata::{TokenizedSplit, Tokens, PAD_ID};
use crate::transformer::{linear_forward, Linear, LinearVars};

/// Standard deviation of the embeddings, `[CLS]` and positions at initialisation.
const EMBEDDING_STD: f64 = 0.02;

/// What the classifier reads: image patches of `patch_dim` values, or word ids below
/// `vocab_size`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputKind {
    /// Image patches, flattened.
    Patches {
        /// Values per patch (its `patch * patch` grey levels, scaled to [0, 1]).
        patch_dim: usize,
    },
    /// Word ids.
    Words {
        /// Size of the vocabulary, PAD and UNK included; every id is below it.
        vocab_size: usize,
    },
}

impl InputKind {
    /// The input kind of a tokenized split.
    pub fn of(split: &TokenizedSplit) -> Self {
        match &split.tokens {
            Tokens::Patches { patch_dim, .. } => InputKind::Patches {
                patch_dim: *patch_dim,
            },
            Tokens::Words { vocab_size, .. } => InputKind::Words {
                vocab_size: *vocab_size,
            },
        }
    }
}

/// How the input tokens enter the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenParams {
    /// A linear map `[patch_dim] -> [d]`.
    Patches {
        /// Handles of its weight `[d, patch_dim]` and bias `[d]` (PyTorch layout).
        projection: Linear,
    },
    /// A lookup table, one row per word id.
    Words {
        /// Handle of the table, `[vocab_size, d]`.
        table: ParamId,
    },
}

/// The embedding's parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EmbedParams {
    /// How the input tokens are embedded (patch projection or word table).
    pub tokens: TokenParams,
    /// `[1, d]`.
    pub cls: ParamId,
    /// `[seq_len + 1, d]` (position 0 is the `[CLS]` token's).
    pub positions: ParamId,
}

/// `N(0, std^2)` values.
pub(crate) fn normal<T: Float>(rng: &mut impl Rng, len: usize, std: f64) -> Vec<T> {
    let dist = Normal::new(0.0, std).expect("a positive standard deviation");
    (0..len).map(|_| T::from_f64(dist.sample(rng))).collect()
}

impl EmbedParams {
    /// Adds the embedding's parameters (named `embed.*`) to `store`, drawn from `rng`.
    pub fn new<T: Float>(
        store: &mut ParamStore<T>,
        input: InputKind,
        seq_len: usize,
        dim: usize,
        rng: &mut impl Rng,
    ) -> Self {
        let tokens = match input {
            InputKind::Patches { patch_dim } => TokenParams::Patches {
                projection: Linear::new(store, "embed.patch", patch_dim, dim, true, rng),
            },
            InputKind::Words { vocab_size } => {
                let mut values = normal::<T>(rng, vocab_size * dim, EMBEDDING_STD);
                // The padding row never reaches an unmasked position; zero it as PyTorch's
                // `padding_idx` does so checkpoints do not carry noise there.
                let pad = PAD_ID as usize;
                values[pad * dim..(pad + 1) * dim].fill(T::ZERO);
                let table = store.add("embed.word.weight", Tensor::new(&[vocab_size, dim], values));
                TokenParams::Words { table }
            }
        };
        let cls = store.add(
            "embed.cls",
            Tensor::new(&[1, dim], normal(rng, dim, EMBEDDING_STD)),
        );
        let positions = store.add(
            "embed.positions",
            Tensor::new(
                &[seq_len + 1, dim],
                normal(rng, (seq_len + 1) * dim, EMBEDDING_STD),
            ),
        );
        EmbedParams {
            tokens,
            cls,
            positions,
        }
    }

    /// Looks the parameters up by name in a store built by [`EmbedParams::new`].
    pub fn find<T: Float>(store: &ParamStore<T>) -> Option<Self> {
        let tokens = match store.id("embed.word.weight") {
            Some(table) => TokenParams::Words { table },
            None => {
                let weight = store.id("embed.patch.weight")?;
                let shape = store.shape(weight);
                TokenParams::Patches {
                    projection: Linear {
                        weight,
                        bias: Some(store.id("embed.patch.bias")?),
                        in_features: shape.dim(1),
                        out_features: shape.dim(0),
                    },
                }
            }
        };
        Some(EmbedParams {
            tokens,
            cls: store.id("embed.cls")?,
            positions: store.id("embed.positions")?,
        })
    }

    /// Every parameter id.
    pub fn ids(&self) -> Vec<ParamId> {
        let mut ids = match self.tokens {
            TokenParams::Patches { projection } => projection.ids().collect(),
            TokenParams::Words { table } => vec![table],
        };
        ids.extend([self.cls, self.positions]);
        ids
    }

    /// Embeds the examples `indices` of `split`: `[indices.len(), seq_len + 1, d]`. `vars`
    /// holds the tape handle of every parameter, indexed by [`ParamId::index`].
    ///
    /// Panics if the split's token kind does not match the parameters (a programming error:
    /// [`crate::classifier::Classifier::check_split`] reports it as an error first).
    pub fn forward<T: Float>(
        &self,
        tape: &mut Tape<T>,
        vars: &[Var],
        split: &TokenizedSplit,
        indices: &[usize],
    ) -> Var {
        let (batch, seq) = (indices.len(), split.seq_len);
        let positions = vars[self.positions.index()];
        let dim = tape.shape(positions).dim(1);
        let tokens = match (self.tokens, &split.tokens) {
            (TokenParams::Patches { projection }, Tokens::Patches { patch_dim, values }) => {
                let example = seq * patch_dim;
                let mut gathered = Vec::with_capacity(batch * example);
                for &i in indices {
                    gathered.extend(
                        values[i * example..(i + 1) * example]
                            .iter()
                            .map(|&v| T::from_f64(f64::from(v))),
                    );
                }
                let patches = tape.constant(&[batch * seq, *patch_dim], &gathered);
                let layer = LinearVars {
                    weight: vars[projection.weight.index()],
                    bias: projection.bias.map(|b| vars[b.index()]),
                };
                linear_forward(tape, patches, &layer)
            }
            (TokenParams::Words { table }, Tokens::Words { ids, .. }) => {
                let gathered: Vec<usize> = indices
                    .iter()
                    .flat_map(|&i| ids[i * seq..(i + 1) * seq].iter().map(|&id| id as usize))
                    .collect();
                tape.embedding(vars[table.index()], &gathered)
            }
            _ => panic!("embedding: the split's tokens do not match the model's input kind"),
        };
        let tokens = tape.reshape(tokens, &[batch, seq, dim]);
        let cls = tape.embedding(vars[self.cls.index()], &vec![0; batch]);
        let cls = tape.reshape(cls, &[batch, 1, dim]);
        let sequence = tape.concat(&[cls, tokens], 1);
        tape.add(sequence, positions)
    }

    /// Redraws those of the embedding's parameters that `ids` lists, as [`EmbedParams::new`]
    /// drew them.
    pub fn reinitialize<T: Float>(
        &self,
        store: &mut ParamStore<T>,
        ids: &[ParamId],
        rng: &mut impl Rng,
    ) {
        if let TokenParams::Patches { projection } = self.tokens {
            projection.reset(store, ids, rng);
        }
        let normal_ids = match self.tokens {
            TokenParams::Words { table } => vec![table, self.cls, self.positions],
            TokenParams::Patches { .. } => vec![self.cls, self.positions],
        };
        for id in normal_ids.into_iter().filter(|id| ids.contains(id)) {
            let len = store.value(id).len();
            let values = normal::<T>(rng, len, EMBEDDING_STD);
            store.value_mut(id).copy_from_slice(&values);
            if matches!(self.tokens, TokenParams::Words { table } if table == id) {
                let dim = store.shape(id).dim(1);
                let pad = PAD_ID as usize;
                store.value_mut(id)[pad * dim..(pad + 1) * dim].fill(T::ZERO);
            }
        }
    }
}

/// Key padding mask of the examples `indices`: `[indices.len() * (seq_len + 1)]`, true for a
/// real token (`[CLS]` always), false for padding. `None` for images (nothing is padded).
pub fn key_padding_mask(split: &TokenizedSplit, indices: &[usize]) -> Option<Vec<bool>> {
    let Tokens::Words { ids, .. } = &split.tokens else {
        return None;
    };
    let seq = split.seq_len;
    let mut mask = Vec::with_capacity(indices.len() * (seq + 1));
    for &i in indices {
        mask.push(true);
        mask.extend(ids[i * seq..(i + 1) * seq].iter().map(|&id| id != PAD_ID));
    }
    Some(mask)
}
