//! Real datasets (MNIST, Fashion-MNIST, BreastMNIST, TREC, SST-2, AG news): the loaders that
//! parse their standard files, and the tokenizers that turn examples into token sequences for the
//! transformer classifier.
//!
//! The data's path: [`load`] reads a dataset's files into a [`RawDataset`] (images as bytes, texts
//! as strings, labels as class indices); a tokenizer turns a split into a [`TokenizedSplit`]
//! (patches for images via [`patchify`], word ids for text via [`Vocabulary::tokenize`]), which
//! is what the models and trainers consume. [`subset()`](subset::subset) draws the seeded,
//! class-stratified subsets (a clean pretraining subset, then a disjoint fine-tuning one).
//!
//! Files read for each dataset (in the folder [`default_dir`] names under a data directory):
//!
//! | dataset | train | test | parser |
//! |---|---|---|---|
//! | `mnist`, `fashion-mnist` | `train-images-idx3-ubyte(.gz)`, `train-labels-idx1-ubyte(.gz)` | `t10k-*` | [`idx`] |
//! | `breastmnist` | `breastmnist.npz`: `train_images`, `train_labels` | `test_images`, `test_labels` | [`npz`] |
//! | `trec` | `TREC.train` (or `train_5500.label`) | `TREC.test` (or `TREC_10.label`) | [`text`] |
//! | `sst2` | `stsa.binary.train` | `stsa.binary.test` | [`text`] |
//! | `agnews` | `train_subset.tsv` (or `train.csv`) | `test.csv` | [`text`] |
//!
//! BreastMNIST's validation split (78 images) is read and checked but not part of
//! [`RawDataset`]: the paper's protocol only uses a training and a test split, and keeping the
//! validation images out of both keeps the test accuracy comparable with the MedMNIST baselines.
//! [`npz::load_breastmnist_split`] reads it when wanted. SST-2's dev file is likewise not used.

pub mod idx;
pub mod npz;
pub mod patches;
pub mod subset;
pub mod text;
pub mod vocab;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

pub use patches::patchify;
pub use subset::{subset, subset_disjoint, Sampling};
pub use vocab::Vocabulary;

/// The datasets `benign` knows how to read. Serialised as their CLI spellings; the command line
/// also takes the spellings [`FromStr`] accepts, case ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetName {
    /// MNIST: 28x28 grey-scale handwritten digits, 10 classes.
    Mnist,
    /// Fashion-MNIST: 28x28 grey-scale clothing images, 10 classes.
    #[value(aliases = ["fashion_mnist", "fashionmnist"])]
    FashionMnist,
    /// BreastMNIST (MedMNIST): 28x28 breast ultrasound images, benign or malignant.
    #[serde(rename = "breastmnist")]
    #[value(name = "breastmnist", aliases = ["breast-mnist", "breast_mnist"])]
    BreastMnist,
    /// TREC: questions by answer type, 6 classes.
    Trec,
    /// SST-2: movie-review sentences, positive or negative.
    #[value(name = "sst2", aliases = ["sst-2", "sst_2"])]
    Sst2,
    /// AG News: news articles by topic, 4 classes.
    #[serde(rename = "agnews")]
    #[value(name = "agnews", aliases = ["ag-news", "ag_news"])]
    AgNews,
}

impl DatasetName {
    /// Every dataset, in the order the CLI lists them.
    pub const ALL: [DatasetName; 6] = [
        DatasetName::Mnist,
        DatasetName::FashionMnist,
        DatasetName::BreastMnist,
        DatasetName::Trec,
        DatasetName::Sst2,
        DatasetName::AgNews,
    ];

    /// The CLI spelling, which is also the folder name under a data directory.
    pub fn as_str(self) -> &'static str {
        match self {
            DatasetName::Mnist => "mnist",
            DatasetName::FashionMnist => "fashion-mnist",
            DatasetName::BreastMnist => "breastmnist",
            DatasetName::Trec => "trec",
            DatasetName::Sst2 => "sst2",
            DatasetName::AgNews => "agnews",
        }
    }

    /// True for the text datasets (TREC, SST-2, AG news), false for the image ones.
    pub fn is_text(self) -> bool {
        matches!(
            self,
            DatasetName::Trec | DatasetName::Sst2 | DatasetName::AgNews
        )
    }
}

impl fmt::Display for DatasetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DatasetName {
    type Err = Error;

    /// Parses the CLI spellings (`mnist|fashion-mnist|breastmnist|trec|sst2|agnews`), ignoring
    /// case, and accepting `_` for `-` and the spellings with or without the dash
    /// (`fashion_mnist`, `fashionmnist`, `sst-2`, `ag-news`, `ag_news`).
    fn from_str(text: &str) -> Result<Self> {
        let key: String = text
            .trim()
            .chars()
            .filter(|c| !matches!(c, '-' | '_'))
            .flat_map(char::to_lowercase)
            .collect();
        DatasetName::ALL
            .into_iter()
            .find(|name| name.as_str().replace('-', "") == key)
            .ok_or_else(|| {
                Error::invalid(
                    "dataset",
                    format!(
                        "unknown dataset '{text}' (valid: mnist, fashion-mnist, breastmnist, \
                         trec, sst2, agnews)"
                    ),
                )
            })
    }
}

/// The folder of dataset `name` under a data directory: `data_dir/<cli spelling>`, e.g.
/// `../shared/data/fashion-mnist`.
pub fn default_dir(data_dir: &Path, name: DatasetName) -> PathBuf {
    data_dir.join(name.as_str())
}

/// Reads dataset `name` from its folder `dir` (see the table in the module docs for the files).
/// A missing folder or file is an [`Error::Io`] naming it; malformed content an
/// [`Error::Format`] naming the file and the byte offset or line.
pub fn load(name: DatasetName, dir: &Path) -> Result<RawDataset> {
    if !dir.is_dir() {
        return Err(Error::Io {
            path: dir.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("the {name} data folder does not exist or is not a directory"),
            ),
        });
    }
    match name {
        DatasetName::Mnist => idx::load_mnist_like(name, dir, &idx::MNIST_CLASSES),
        DatasetName::FashionMnist => idx::load_mnist_like(name, dir, &idx::FASHION_MNIST_CLASSES),
        DatasetName::BreastMnist => npz::load_breastmnist(dir),
        DatasetName::Trec => text::load_trec(dir),
        DatasetName::Sst2 => text::load_sst2(dir),
        DatasetName::AgNews => text::load_agnews(dir),
    }
}

/// Grey-scale images, row-major `n x height x width` bytes, with one class index per image.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageSplit {
    /// Rows of every image, pixels.
    pub height: usize,
    /// Columns of every image, pixels.
    pub width: usize,
    /// Grey levels 0..=255, row-major `n x height x width`.
    pub pixels: Vec<u8>,
    /// Class index of each image, below `num_classes`.
    pub labels: Vec<u32>,
    /// Number of classes of the dataset (labels are below it), kept with the split because a
    /// subset may miss a class.
    pub num_classes: usize,
}

impl ImageSplit {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the split has no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The `height * width` bytes of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let size = self.height * self.width;
        &self.pixels[i * size..(i + 1) * size]
    }

    /// The images at `indices`, in that order. An index out of range is an
    /// [`Error::InvalidOption`] naming `indices`.
    pub fn select(&self, indices: &[usize]) -> Result<ImageSplit> {
        check_indices(indices, self.len())?;
        let mut pixels = Vec::with_capacity(indices.len() * self.height * self.width);
        for &i in indices {
            pixels.extend_from_slice(self.image(i));
        }
        Ok(ImageSplit {
            height: self.height,
            width: self.width,
            pixels,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            num_classes: self.num_classes,
        })
    }
}

/// Sentences as read from the files (before lower-casing and tokenizing), one class per sentence.
#[derive(Clone, Debug, PartialEq)]
pub struct TextSplit {
    /// The sentences, as in the files.
    pub texts: Vec<String>,
    /// Class index of each sentence, below `num_classes`.
    pub labels: Vec<u32>,
    /// Number of classes of the dataset (labels are below it).
    pub num_classes: usize,
}

impl TextSplit {
    /// Number of sentences.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the split has no sentence.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The sentences at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Result<TextSplit> {
        check_indices(indices, self.len())?;
        Ok(TextSplit {
            texts: indices.iter().map(|&i| self.texts[i].clone()).collect(),
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            num_classes: self.num_classes,
        })
    }
}

fn check_indices(indices: &[usize], len: usize) -> Result<()> {
    match indices.iter().find(|&&i| i >= len) {
        Some(i) => Err(Error::invalid(
            "indices",
            format!("index {i} is out of range for a split of {len} examples"),
        )),
        None => Ok(()),
    }
}

/// One split of a dataset, either images or text.
#[derive(Clone, Debug, PartialEq)]
pub enum Split {
    /// An image dataset's split.
    Images(ImageSplit),
    /// A text dataset's split.
    Text(TextSplit),
}

impl Split {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels().len()
    }

    /// Whether the split has no example.
    pub fn is_empty(&self) -> bool {
        self.labels().is_empty()
    }

    /// One class index per example.
    pub fn labels(&self) -> &[u32] {
        match self {
            Split::Images(split) => &split.labels,
            Split::Text(split) => &split.labels,
        }
    }

    /// Number of classes of the dataset (labels are below it).
    pub fn num_classes(&self) -> usize {
        match self {
            Split::Images(split) => split.num_classes,
            Split::Text(split) => split.num_classes,
        }
    }

    /// The examples at `indices`, in that order (e.g. a subset drawn by
    /// [`subset()`](subset::subset)).
    pub fn select(&self, indices: &[usize]) -> Result<Split> {
        Ok(match self {
            Split::Images(split) => Split::Images(split.select(indices)?),
            Split::Text(split) => Split::Text(split.select(indices)?),
        })
    }

    /// Examples per class, `num_classes` entries.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.num_classes()];
        for &label in self.labels() {
            if let Some(count) = counts.get_mut(label as usize) {
                *count += 1;
            }
        }
        counts
    }
}

/// A dataset as parsed from its files: class names, a training and a test split.
#[derive(Clone, Debug, PartialEq)]
pub struct RawDataset {
    /// Which dataset.
    pub name: DatasetName,
    /// Class names, indexed by label.
    pub classes: Vec<String>,
    /// The training split, as the files define it.
    pub train: Split,
    /// The test split, as the files define it.
    pub test: Split,
}

/// The token inputs of a split, `n` examples of `seq_len` tokens each (before the `[CLS]` token,
/// which the model prepends).
#[derive(Clone, Debug, PartialEq)]
pub enum Tokens {
    /// Image patches: `values` is `n x seq_len x patch_dim`, pixels scaled to [0, 1].
    Patches {
        /// Pixels per patch (`patch x patch`).
        patch_dim: usize,
        /// The patches' pixels in [0, 1].
        values: Vec<f32>,
    },
    /// Word ids, `n x seq_len`, padded with [`PAD_ID`] (masked out of attention); unknown words
    /// map to [`UNK_ID`]. Ids are below `vocab_size`.
    Words {
        /// Size of the vocabulary, padding and unknown-word tokens included.
        vocab_size: usize,
        /// The word ids.
        ids: Vec<u32>,
    },
}

/// Id of the padding token in every vocabulary.
pub const PAD_ID: u32 = 0;
/// Id of the unknown-word token in every vocabulary.
pub const UNK_ID: u32 = 1;

/// A tokenized split: `n` examples of `seq_len` tokens, one class index per example.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenizedSplit {
    /// Number of examples.
    pub n: usize,
    /// Tokens per example (before `[CLS]`).
    pub seq_len: usize,
    /// Number of classes of the dataset (labels are below it).
    pub num_classes: usize,
    /// The examples' tokens, row-major by example.
    pub tokens: Tokens,
    /// Class index of each example.
    pub labels: Vec<u32>,
}

/// What a split holds, for reports and tests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitSummary {
    /// Number of examples.
    pub examples: usize,
    /// Examples per class, in class order.
    pub class_counts: Vec<usize>,
    /// `[height, width]` for images.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_size: Option<[usize; 2]>,
    /// Mean number of words (whitespace-separated) per sentence for text, rounded down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_words: Option<usize>,
}

/// What a dataset holds: its name, classes and per-split summaries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetSummary {
    /// Which dataset.
    pub name: DatasetName,
    /// Class names, indexed by label.
    pub classes: Vec<String>,
    /// The training split.
    pub train: SplitSummary,
    /// The test split.
    pub test: SplitSummary,
}

/// Sizes, class counts and shapes of a loaded dataset.
pub fn describe(dataset: &RawDataset) -> DatasetSummary {
    DatasetSummary {
        name: dataset.name,
        classes: dataset.classes.clone(),
        train: describe_split(&dataset.train),
        test: describe_split(&dataset.test),
    }
}

fn describe_split(split: &Split) -> SplitSummary {
    let (image_size, mean_words) = match split {
        Split::Images(images) => (Some([images.height, images.width]), None),
        Split::Text(text) => {
            let words: usize = text
                .texts
                .iter()
                .map(|t| t.split_whitespace().count())
                .sum();
            (None, Some(words / text.len().max(1)))
        }
    };
    SplitSummary {
        examples: split.len(),
        class_counts: split.class_counts(),
        image_size,
        mean_words,
    }
}
