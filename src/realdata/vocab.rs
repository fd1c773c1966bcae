//! Word vocabularies for the text datasets, built from a training split only.
//!
//! Words: the text is lower-cased, then split at whitespace; inside each piece, runs of
//! letters and digits are words (an apostrophe between two letters or digits stays inside, so
//! `don't` is one word) and every other character is a word of its own (`?`, `,`, `$`), because
//! punctuation carries signal (`?` in TREC, `!` in sentiment). Id 0 is [`PAD_ID`] (`<pad>`), 1
//! is [`UNK_ID`] (`<unk>`); the other words get ids 2.. by decreasing count in the training
//! texts, ties broken by the word's byte order, so the same texts always give the same
//! vocabulary. The vocabulary serialises to JSON (the word list plus the build settings) so a
//! checkpoint can store it.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{TextSplit, TokenizedSplit, Tokens, PAD_ID, UNK_ID};
use crate::{Error, Result};

/// The text of the padding token.
pub const PAD_WORD: &str = "<pad>";
/// The text of the unknown-word token.
pub const UNK_WORD: &str = "<unk>";

/// Lower-cased words of `text` (see the module docs).
pub fn words(text: &str) -> Vec<String> {
    let lower = text.to_lowercase();
    let chars: Vec<char> = lower.chars().collect();
    let mut out = Vec::new();
    let mut current = String::new();
    for (i, &c) in chars.iter().enumerate() {
        let inner_apostrophe = matches!(c, '\'' | '’')
            && !current.is_empty()
            && chars.get(i + 1).is_some_and(|n| n.is_alphanumeric());
        if c.is_alphanumeric() || inner_apostrophe {
            current.push(c);
            continue;
        }
        if !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
        if !c.is_whitespace() && !c.is_control() {
            out.push(c.to_string());
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// A word vocabulary: word list in id order, with the settings it was built with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "VocabularyFile", into = "VocabularyFile")]
pub struct Vocabulary {
    words: Vec<String>,
    index: HashMap<String, u32>,
    min_count: usize,
    max_size: usize,
}

/// The serialised form: the index is rebuilt (and the list validated) when reading.
#[derive(Serialize, Deserialize)]
struct VocabularyFile {
    min_count: usize,
    max_size: usize,
    words: Vec<String>,
}

impl From<Vocabulary> for VocabularyFile {
    fn from(vocab: Vocabulary) -> Self {
        VocabularyFile {
            min_count: vocab.min_count,
            max_size: vocab.max_size,
            words: vocab.words,
        }
    }
}

impl TryFrom<VocabularyFile> for Vocabulary {
    type Error = String;

    fn try_from(file: VocabularyFile) -> std::result::Result<Self, String> {
        if file.words.len() < 2
            || file.words[PAD_ID as usize] != PAD_WORD
            || file.words[UNK_ID as usize] != UNK_WORD
        {
            return Err(format!(
                "a vocabulary starts with '{PAD_WORD}' and '{UNK_WORD}'"
            ));
        }
        if file.words.len() > u32::MAX as usize {
            return Err("too many words for u32 ids".into());
        }
        let mut index = HashMap::with_capacity(file.words.len());
        for (id, word) in file.words.iter().enumerate() {
            if index.insert(word.clone(), id as u32).is_some() {
                return Err(format!("word '{word}' appears twice"));
            }
        }
        Ok(Vocabulary {
            words: file.words,
            index,
            min_count: file.min_count,
            max_size: file.max_size,
        })
    }
}

impl Vocabulary {
    /// Builds the vocabulary of `texts` (a training split's): the words seen at least
    /// `min_count` times, the most frequent first, at most `max_size` entries in all (counting
    /// `<pad>` and `<unk>`). `min_count` must be at least 1 and `max_size` at least 2.
    pub fn build(texts: &[String], min_count: usize, max_size: usize) -> Result<Vocabulary> {
        if min_count == 0 {
            return Err(Error::invalid("min_count", "must be at least 1"));
        }
        if max_size < 2 {
            return Err(Error::invalid(
                "max_size",
                format!("{max_size} leaves no room for <pad> and <unk>: must be at least 2"),
            ));
        }
        let mut counts: HashMap<String, usize> = HashMap::new();
        for text in texts {
            for word in words(text) {
                *counts.entry(word).or_insert(0) += 1;
            }
        }
        let mut ranked: Vec<(String, usize)> = counts
            .into_iter()
            .filter(|(word, count)| *count >= min_count && word != PAD_WORD && word != UNK_WORD)
            .collect();
        ranked.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        ranked.truncate(max_size.min(u32::MAX as usize) - 2);
        let words = [PAD_WORD.to_string(), UNK_WORD.to_string()]
            .into_iter()
            .chain(ranked.into_iter().map(|(word, _)| word))
            .collect();
        Ok(VocabularyFile {
            min_count,
            max_size,
            words,
        }
        .try_into()
        .expect("a freshly built vocabulary is well formed"))
    }

    /// Number of ids, `<pad>` and `<unk>` included.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// Never true: `<pad>` and `<unk>` are always there.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// Words in id order.
    pub fn words(&self) -> &[String] {
        &self.words
    }

    /// The id of a (lower-cased) word, [`UNK_ID`] when absent.
    pub fn id(&self, word: &str) -> u32 {
        self.index.get(word).copied().unwrap_or(UNK_ID)
    }

    /// The ids of `text`'s words, unpadded and untruncated.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        words(text).iter().map(|word| self.id(word)).collect()
    }

    /// The word ids of every sentence, truncated to `max_len` and padded with [`PAD_ID`] to it.
    /// `max_len` must be at least 1. A sentence with no words is one `<unk>` token, so that every
    /// example has a token to attend to besides `[CLS]` and padding.
    pub fn tokenize(&self, split: &TextSplit, max_len: usize) -> Result<TokenizedSplit> {
        if max_len == 0 {
            return Err(Error::invalid("max_len", "must be at least 1"));
        }
        if split.texts.len() != split.labels.len() {
            return Err(Error::invalid(
                "split",
                format!(
                    "{} texts with {} labels",
                    split.texts.len(),
                    split.labels.len()
                ),
            ));
        }
        let mut ids = Vec::with_capacity(split.len() * max_len);
        for text in &split.texts {
            let mut encoded = self.encode(text);
            if encoded.is_empty() {
                encoded.push(UNK_ID);
            }
            encoded.resize(max_len, PAD_ID);
            ids.extend_from_slice(&encoded);
        }
        Ok(TokenizedSplit {
            n: split.len(),
            seq_len: max_len,
            num_classes: split.num_classes,
            tokens: Tokens::Words {
                vocab_size: self.len(),
                ids,
            },
            labels: split.labels.clone(),
        })
    }

    /// Fraction of the words of `split` that map to `<unk>` (0 for no words).
    pub fn unknown_rate(&self, split: &TextSplit) -> f64 {
        let (mut unknown, mut total) = (0usize, 0usize);
        for text in &split.texts {
            for word in words(text) {
                total += 1;
                unknown += usize::from(self.id(&word) == UNK_ID);
            }
        }
        if total == 0 {
            0.0
        } else {
            unknown as f64 / total as f64
        }
    }

    /// Sentence lengths in words, for choosing `max_len`: the `q`-quantile (0..=1) over `split`.
    pub fn length_quantile(split: &TextSplit, q: f64) -> usize {
        let mut lengths: Vec<usize> = split.texts.iter().map(|t| words(t).len()).collect();
        if lengths.is_empty() {
            return 0;
        }
        lengths.sort_unstable();
        let at = ((lengths.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
        lengths[at]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn words_split_punctuation_and_keep_inner_apostrophes() {
        assert_eq!(
            words("What's the GDP of Côte d'Ivoire, in $?  It 's \"fine\"!"),
            [
                "what's", "the", "gdp", "of", "côte", "d'ivoire", ",", "in", "$", "?", "it", "'",
                "s", "\"", "fine", "\"", "!"
            ]
        );
        assert_eq!(words("  \t "), Vec::<String>::new());
        assert_eq!(
            words("re-imagining 1930s"),
            ["re", "-", "imagining", "1930s"]
        );
    }

    #[test]
    fn ids_follow_count_then_word_order() {
        let train = texts(&["b a c a", "c b a", "d"]);
        let vocab = Vocabulary::build(&train, 1, 100).unwrap();
        // a: 3, b: 2, c: 2, d: 1 -> ties between b and c by word.
        assert_eq!(vocab.words(), ["<pad>", "<unk>", "a", "b", "c", "d"]);
        let vocab = Vocabulary::build(&train, 2, 100).unwrap();
        assert_eq!(vocab.words(), ["<pad>", "<unk>", "a", "b", "c"]);
        let vocab = Vocabulary::build(&train, 1, 4).unwrap();
        assert_eq!(vocab.words(), ["<pad>", "<unk>", "a", "b"]);
        assert_eq!(vocab.encode("A c zebra"), [2, UNK_ID, UNK_ID]);
    }

    #[test]
    fn same_texts_same_vocabulary_in_any_order() {
        let train = texts(&["x y z", "y z", "z w", "w v"]);
        let mut shuffled = train.clone();
        shuffled.reverse();
        assert_eq!(
            Vocabulary::build(&train, 1, 10).unwrap(),
            Vocabulary::build(&shuffled, 1, 10).unwrap()
        );
    }

    #[test]
    fn tokenize_truncates_pads_and_marks_empty_sentences() {
        let vocab = Vocabulary::build(&texts(&["a b c d"]), 1, 10).unwrap();
        let split = TextSplit {
            texts: texts(&["a b c d e", "b", "..."]),
            labels: vec![1, 0, 1],
            num_classes: 2,
        };
        let tokens = vocab.tokenize(&split, 3).unwrap();
        assert_eq!((tokens.n, tokens.seq_len, tokens.num_classes), (3, 3, 2));
        let Tokens::Words { vocab_size, ids } = &tokens.tokens else {
            panic!("text tokens must be words")
        };
        assert_eq!(*vocab_size, 6);
        // "..." is three "." tokens, all unknown.
        assert_eq!(ids, &[2, 3, 4, 3, PAD_ID, PAD_ID, UNK_ID, UNK_ID, UNK_ID]);
        let empty = TextSplit {
            texts: texts(&[" "]),
            labels: vec![0],
            num_classes: 2,
        };
        let Tokens::Words { ids, .. } = vocab.tokenize(&empty, 2).unwrap().tokens else {
            unreachable!()
        };
        assert_eq!(ids, [UNK_ID, PAD_ID]);
    }

    #[test]
    fn invalid_settings_name_their_field() {
        let train = texts(&["a"]);
        for (result, field) in [
            (Vocabulary::build(&train, 0, 10).map(|_| ()), "min_count"),
            (Vocabulary::build(&train, 1, 1).map(|_| ()), "max_size"),
            (
                Vocabulary::build(&train, 1, 10)
                    .unwrap()
                    .tokenize(
                        &TextSplit {
                            texts: train.clone(),
                            labels: vec![0],
                            num_classes: 1,
                        },
                        0,
                    )
                    .map(|_| ()),
                "max_len",
            ),
        ] {
            let err = result.unwrap_err();
            assert!(
                matches!(&err, Error::InvalidOption { field: f, .. } if f == field),
                "{err}"
            );
        }
    }

    #[test]
    fn json_round_trip_and_validation() {
        let vocab = Vocabulary::build(&texts(&["the cat sat on the mat ."]), 1, 50).unwrap();
        let json = serde_json::to_string(&vocab).unwrap();
        let back: Vocabulary = serde_json::from_str(&json).unwrap();
        assert_eq!(back, vocab);
        assert_eq!(back.id("the"), vocab.id("the"));
        for bad in [
            r#"{"min_count":1,"max_size":5,"words":["<unk>","<pad>","a"]}"#,
            r#"{"min_count":1,"max_size":5,"words":["<pad>","<unk>","a","a"]}"#,
            r#"{"min_count":1,"max_size":5,"words":["<pad>"]}"#,
        ] {
            assert!(serde_json::from_str::<Vocabulary>(bad).is_err(), "{bad}");
        }
    }
}
