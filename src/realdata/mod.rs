//! Real datasets (MNIST, Fashion-MNIST, BreastMNIST, TREC, SST-2, AG news): the loaders that
//! parse their standard files, and the tokenizers that turn examples into token sequences for the
//! transformer classifier.
//!
//! The data's path: [`load`] reads a dataset's files into a [`RawDataset`] (images as bytes, texts
//! as strings, labels as class indices); a tokenizer turns a split into a [`TokenizedSplit`]
//! (patches for images, word ids for text), which is what the models and trainers consume.

use serde::{Deserialize, Serialize};

/// The datasets `benign` knows how to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetName {
    Mnist,
    FashionMnist,
    BreastMnist,
    Trec,
    Sst2,
    AgNews,
}

/// Grey-scale images, row-major `n x height x width` bytes, with one class index per image.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageSplit {
    pub height: usize,
    pub width: usize,
    pub pixels: Vec<u8>,
    pub labels: Vec<u32>,
}

/// Sentences as read from the files (before lower-casing and tokenizing), one class per sentence.
#[derive(Clone, Debug, PartialEq)]
pub struct TextSplit {
    pub texts: Vec<String>,
    pub labels: Vec<u32>,
}

/// One split of a dataset, either images or text.
#[derive(Clone, Debug, PartialEq)]
pub enum Split {
    Images(ImageSplit),
    Text(TextSplit),
}

/// A dataset as parsed from its files: class names, a training and a test split.
#[derive(Clone, Debug, PartialEq)]
pub struct RawDataset {
    pub name: DatasetName,
    pub classes: Vec<String>,
    pub train: Split,
    pub test: Split,
}

/// The token inputs of a split, `n` examples of `seq_len` tokens each (before the [CLS] token,
/// which the model prepends).
#[derive(Clone, Debug, PartialEq)]
pub enum Tokens {
    /// Image patches: `values` is `n x seq_len x patch_dim`, pixels scaled to [0, 1].
    Patches { patch_dim: usize, values: Vec<f32> },
    /// Word ids, `n x seq_len`, padded with [`PAD_ID`] (masked out of attention); unknown words
    /// map to [`UNK_ID`]. Ids are below `vocab_size`.
    Words { vocab_size: usize, ids: Vec<u32> },
}

/// Id of the padding token in every vocabulary.
pub const PAD_ID: u32 = 0;
/// Id of the unknown-word token in every vocabulary.
pub const UNK_ID: u32 = 1;

/// A tokenized split: `n` examples of `seq_len` tokens, one class index per example.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenizedSplit {
    pub n: usize,
    pub seq_len: usize,
    pub num_classes: usize,
    pub tokens: Tokens,
    pub labels: Vec<u32>,
}
