//! Text datasets: TREC question classification, SST-2 sentences and AG news.
//!
//! - TREC (Li & Roth): one question per line, `COARSE:fine question words ...`, in latin-1 (each
//!   byte is the code point of the same value, so any byte sequence decodes). The label is the
//!   coarse class, in the fixed order [`TREC_CLASSES`].
//! - SST-2 (Kim's preprocessing): one sentence per line, `LABEL words ...`, `LABEL` 0 (negative)
//!   or 1 (positive), UTF-8.
//! - AG news (Zhang et al.): `classes.txt` names the classes, one a line, in label order;
//!   `test.csv` (and the full `train.csv`) are RFC 4180 CSV `"class","title","description"`
//!   with class 1..=classes; `train_subset.tsv` is `description<TAB>class name`. The text of an
//!   example is its description for both files, because the TSV subset only holds descriptions:
//!   training and testing on the same kind of text keeps the test accuracy meaningful. The
//!   release's escapes are undone: `\` stands for a line break (a space here), and HTML
//!   entities that lost their `&` (` #39;`, ` quot;`) become their characters.
//!
//! Errors are [`Error::Format`] naming the file and the 1-based line (and the byte offset for
//! CSV). Blank lines are skipped.

use std::path::{Path, PathBuf};

use super::{DatasetName, RawDataset, Split, TextSplit};
use crate::{Error, Result};

/// TREC's coarse classes, in label order.
pub const TREC_CLASSES: [&str; 6] = ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"];
/// SST-2's classes, in label order (the file's label 0 and 1).
pub const SST2_CLASSES: [&str; 2] = ["negative", "positive"];

fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::io(path, source))
}

/// The first of `names` that exists in `dir`, or an [`Error::Io`] listing them.
fn find_file(dir: &Path, names: &[&str]) -> Result<PathBuf> {
    names
        .iter()
        .map(|name| dir.join(name))
        .find(|path| path.is_file())
        .ok_or_else(|| Error::Io {
            path: dir.join(names[0]),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("file not found (tried {})", names.join(", ")),
            ),
        })
}

/// Non-blank lines with their 1-based numbers, without the line ending (`\n` or `\r\n`).
fn lines(bytes: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, line)| (i + 1, line.strip_suffix(b"\r").unwrap_or(line)))
        .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
}

/// The split of a file of one example per non-blank line: `parse_line` turns a line (its 1-based
/// number and its bytes) into the example's text and class.
fn parse_lines(
    bytes: &[u8],
    num_classes: usize,
    mut parse_line: impl FnMut(usize, &[u8]) -> Result<(String, u32)>,
) -> Result<TextSplit> {
    let mut split = TextSplit {
        texts: Vec::new(),
        labels: Vec::new(),
        num_classes,
    };
    for (number, raw) in lines(bytes) {
        let (text, class) = parse_line(number, raw)?;
        split.texts.push(text);
        split.labels.push(class);
    }
    Ok(split)
}

fn utf8_line<'a>(path: &Path, number: usize, line: &'a [u8]) -> Result<&'a str> {
    std::str::from_utf8(line).map_err(|e| {
        Error::format(
            path,
            format!(
                "line {number}: invalid UTF-8 at byte {} of the line",
                e.valid_up_to() + 1
            ),
        )
    })
}

/// The text of an example on line `number`, trimmed; a line whose text is empty is refused,
/// naming what the text is (`question`, `sentence`).
fn example_text(path: &Path, number: usize, text: &str, what: &str) -> Result<String> {
    let text = text.trim();
    if text.is_empty() {
        return Err(Error::format(path, format!("line {number}: empty {what}")));
    }
    Ok(text.to_string())
}

/// Latin-1 decoding: byte `b` is code point `b`.
fn latin1(line: &[u8]) -> String {
    line.iter().map(|&b| char::from(b)).collect()
}

/// Parses a TREC file: `COARSE:fine question` per line, latin-1.
pub fn parse_trec(path: &Path, bytes: &[u8]) -> Result<TextSplit> {
    parse_lines(bytes, TREC_CLASSES.len(), |number, raw| {
        let line = latin1(raw);
        let (label, question) = line.split_once(' ').ok_or_else(|| {
            Error::format(
                path,
                format!("line {number}: expected 'COARSE:fine question', found no space"),
            )
        })?;
        let (coarse, fine) = label.split_once(':').ok_or_else(|| {
            Error::format(
                path,
                format!("line {number}: label '{label}' is not of the form COARSE:fine"),
            )
        })?;
        let class = TREC_CLASSES
            .iter()
            .position(|&c| c == coarse)
            .ok_or_else(|| {
                Error::format(
                    path,
                    format!(
                        "line {number}: unknown coarse class '{coarse}' (valid: {})",
                        TREC_CLASSES.join(" ")
                    ),
                )
            })?;
        if fine.is_empty() {
            return Err(Error::format(
                path,
                format!("line {number}: empty fine class in '{label}'"),
            ));
        }
        Ok((
            example_text(path, number, question, "question")?,
            class as u32,
        ))
    })
}

/// Parses an SST-2 file: `LABEL words` per line, `LABEL` 0 or 1, UTF-8.
pub fn parse_sst2(path: &Path, bytes: &[u8]) -> Result<TextSplit> {
    parse_lines(bytes, SST2_CLASSES.len(), |number, raw| {
        let line = utf8_line(path, number, raw)?;
        let (label, sentence) = line.split_once(' ').unwrap_or((line, ""));
        let class = match label {
            "0" => 0,
            "1" => 1,
            _ => {
                return Err(Error::format(
                    path,
                    format!("line {number}: label '{label}' is not 0 or 1"),
                ))
            }
        };
        Ok((example_text(path, number, sentence, "sentence")?, class))
    })
}

/// Parses AG news `classes.txt`: one class name a line, in label order.
pub fn parse_agnews_classes(path: &Path, bytes: &[u8]) -> Result<Vec<String>> {
    let mut classes = Vec::new();
    for (number, raw) in lines(bytes) {
        let name = utf8_line(path, number, raw)?.trim().to_string();
        if classes.contains(&name) {
            return Err(Error::format(
                path,
                format!("line {number}: class '{name}' is listed twice"),
            ));
        }
        classes.push(name);
    }
    if classes.is_empty() {
        return Err(Error::format(path, "no class names"));
    }
    Ok(classes)
}

/// Parses an AG news CSV (`"class","title","description"`, class 1..=`num_classes`, RFC 4180).
pub fn parse_agnews_csv(path: &Path, bytes: &[u8], num_classes: usize) -> Result<TextSplit> {
    let mut split = TextSplit {
        texts: Vec::new(),
        labels: Vec::new(),
        num_classes,
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(false)
        .from_reader(bytes);
    let mut record = csv::StringRecord::new();
    let mut last_start = None;
    loop {
        let more = reader.read_record(&mut record).map_err(|e| {
            let at = e
                .position()
                .map(|p| format!("line {}, byte offset {}: ", p.line(), p.byte()))
                .unwrap_or_default();
            Error::format(path, format!("{at}malformed CSV: {e}"))
        })?;
        if !more {
            break;
        }
        let (line, byte) = record.position().map_or((0, 0), |p| (p.line(), p.byte()));
        last_start = Some((line, byte));
        let at = format!("line {line}, byte offset {byte}");
        if record.len() != 3 {
            return Err(Error::format(
                path,
                format!(
                    "{at}: expected 3 fields (class, title, description), found {} \
                     (an unbalanced quote?)",
                    record.len()
                ),
            ));
        }
        let class = record[0]
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|c| (1..=num_classes).contains(c))
            .ok_or_else(|| {
                Error::format(
                    path,
                    format!(
                        "{at}: class '{}' is not a number in 1..={num_classes}",
                        &record[0]
                    ),
                )
            })?;
        split.texts.push(clean_agnews(&record[2]));
        split.labels.push(class as u32 - 1);
    }
    // The csv crate ends a quoted field silently at the end of input. An unterminated quote
    // swallows everything after it into the last record, and leaves an odd number of quotes
    // from that record's start on.
    if let Some((line, byte)) = last_start {
        let tail = bytes.get(byte as usize..).unwrap_or_default();
        if tail.iter().filter(|&&b| b == b'"').count() % 2 == 1 {
            return Err(Error::format(
                path,
                format!(
                    "line {line}, byte offset {byte}: a quoted field of this record is never \
                     closed (unbalanced quote)"
                ),
            ));
        }
    }
    Ok(split)
}

/// Parses an AG news TSV (`description<TAB>class name`, names from `classes`).
pub fn parse_agnews_tsv(path: &Path, bytes: &[u8], classes: &[String]) -> Result<TextSplit> {
    parse_lines(bytes, classes.len(), |number, raw| {
        let line = utf8_line(path, number, raw)?;
        let (text, class_name) = line.rsplit_once('\t').ok_or_else(|| {
            Error::format(
                path,
                format!("line {number}: expected 'text<TAB>class name', found no tab"),
            )
        })?;
        let class = classes
            .iter()
            .position(|c| c == class_name.trim())
            .ok_or_else(|| {
                Error::format(
                    path,
                    format!(
                        "line {number}: unknown class '{class_name}' (classes.txt lists: {})",
                        classes.join(", ")
                    ),
                )
            })?;
        Ok((clean_agnews(text), class as u32))
    })
}

/// Undoes the AG news release's escapes: `\` for a line break, and HTML entities whose `&` was
/// dropped (`#39;` for `'`, ` quot;` for `"`). Unknown or control-character entities become a
/// space.
pub fn clean_agnews(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        let at_word_start = out.is_empty() || out.ends_with(char::is_whitespace);
        if c == '\\' {
            out.push(' ');
            rest = &rest[1..];
            continue;
        }
        if at_word_start {
            if let Some((decoded, len)) = entity(rest) {
                out.push_str(decoded.as_deref().unwrap_or(" "));
                rest = &rest[len..];
                continue;
            }
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// An entity without its `&` at the start of `text`: its text (None for one to drop) and length.
fn entity(text: &str) -> Option<(Option<String>, usize)> {
    // Entities are short; looking further would make cleaning quadratic in the text length.
    let end = text.bytes().take(12).position(|b| b == b';')?;
    let body = &text[..end];
    let decoded = if let Some(digits) = body.strip_prefix('#') {
        if digits.is_empty() || digits.len() > 7 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let code = digits.parse::<u32>().ok()?;
        char::from_u32(code)
            .filter(|c| !c.is_control())
            .map(String::from)
    } else {
        let named = match body {
            "quot" => "\"",
            "amp" => "&",
            "lt" => "<",
            "gt" => ">",
            "hellip" => "...",
            _ => return None,
        };
        Some(named.to_string())
    };
    Some((decoded, end + 1))
}

/// TREC from `dir`: `TREC.train` (or `train_5500.label`) and `TREC.test` (or `TREC_10.label`).
pub fn load_trec(dir: &Path) -> Result<RawDataset> {
    let files = (
        &["TREC.train", "train_5500.label"][..],
        &["TREC.test", "TREC_10.label"][..],
    );
    load_text_dataset(dir, DatasetName::Trec, &TREC_CLASSES, files, parse_trec)
}

/// SST-2 from `dir`: `stsa.binary.train` and `stsa.binary.test` (the dev file is not used).
pub fn load_sst2(dir: &Path) -> Result<RawDataset> {
    let files = (&["stsa.binary.train"][..], &["stsa.binary.test"][..]);
    load_text_dataset(dir, DatasetName::Sst2, &SST2_CLASSES, files, parse_sst2)
}

/// A dataset whose train and test files, each the first of its candidate names found in `dir`
/// (both looked for before either is read), are read by the same `parse`.
fn load_text_dataset(
    dir: &Path,
    name: DatasetName,
    classes: &[&str],
    (train_names, test_names): (&[&str], &[&str]),
    parse: fn(&Path, &[u8]) -> Result<TextSplit>,
) -> Result<RawDataset> {
    let train_path = find_file(dir, train_names)?;
    let test_path = find_file(dir, test_names)?;
    Ok(RawDataset {
        name,
        classes: classes.iter().map(|c| c.to_string()).collect(),
        train: Split::Text(parse(&train_path, &read_bytes(&train_path)?)?),
        test: Split::Text(parse(&test_path, &read_bytes(&test_path)?)?),
    })
}

/// AG news from `dir`: `classes.txt`, the training split from `train.csv` when present (the full
/// release) and otherwise `train_subset.tsv`, the test split from `test.csv`.
pub fn load_agnews(dir: &Path) -> Result<RawDataset> {
    let classes_path = find_file(dir, &["classes.txt"])?;
    let classes = parse_agnews_classes(&classes_path, &read_bytes(&classes_path)?)?;
    let train_path = find_file(dir, &["train.csv", "train_subset.tsv"])?;
    let train_bytes = read_bytes(&train_path)?;
    let train = if train_path.extension().is_some_and(|e| e == "csv") {
        parse_agnews_csv(&train_path, &train_bytes, classes.len())?
    } else {
        parse_agnews_tsv(&train_path, &train_bytes, &classes)?
    };
    let test_path = find_file(dir, &["test.csv"])?;
    let test = parse_agnews_csv(&test_path, &read_bytes(&test_path)?, classes.len())?;
    Ok(RawDataset {
        name: DatasetName::AgNews,
        classes,
        train: Split::Text(train),
        test: Split::Text(test),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `parse` refuses each input of `cases` with a format error whose message contains the
    /// text paired with it.
    fn assert_rejects(parse: impl Fn(&[u8]) -> Result<TextSplit>, cases: &[(&[u8], &str)]) {
        for &(bad, needle) in cases {
            match parse(bad) {
                Err(Error::Format { message, .. }) => {
                    assert!(message.contains(needle), "{bad:?}: {message}")
                }
                other => panic!("{bad:?}: expected a format error, got {other:?}"),
            }
        }
    }

    #[test]
    fn trec_parses_coarse_labels_and_latin1() {
        let path = Path::new("TREC.train");
        // 0xe9 is 'é' in latin-1 and invalid as UTF-8 here; it must decode, not fail.
        let bytes = b"DESC:manner How did serfdom develop ?\r\n\nNUM:date When was Caf\xe9 born ?\nABBR:exp What is .com ?\n";
        let split = parse_trec(path, bytes).unwrap();
        assert_eq!(split.labels, [1, 5, 0]);
        assert_eq!(split.texts[1], "When was Café born ?");
        assert_eq!(split.num_classes, 6);
        assert_rejects(
            |bad| parse_trec(path, bad),
            &[
                (b"FOO:bar What ?\n", "line 1: unknown coarse class 'FOO'"),
                (
                    b"DESC:def ok ?\nDESCmanner no colon\n",
                    "line 2: label 'DESCmanner'",
                ),
                (b"DESC:def\n", "line 1: expected 'COARSE:fine question'"),
                (b"DESC: What ?\n", "line 1: empty fine class"),
                (b"\n\nHUM:ind   \n", "line 3: empty question"),
            ],
        );
    }

    #[test]
    fn sst2_parses_labels_and_rejects_bad_lines() {
        let path = Path::new("stsa.binary.train");
        let split = parse_sst2(
            path,
            "1 a charming , funny film\n0 it 's a mess .\n".as_bytes(),
        )
        .unwrap();
        assert_eq!(split.labels, [1, 0]);
        assert_eq!(split.texts[1], "it 's a mess .");
        assert_rejects(
            |bad| parse_sst2(path, bad),
            &[
                (b"2 too good\n", "line 1: label '2' is not 0 or 1"),
                (b"1 fine\n1\n", "line 2: empty sentence"),
                (b"1 ok\n0 caf\xe9\n", "line 2: invalid UTF-8 at byte 6"),
            ],
        );
    }

    #[test]
    fn agnews_csv_follows_rfc4180() {
        let path = Path::new("test.csv");
        let csv = concat!(
            "\"3\",\"Title\",\"He said \"\"no\"\" to the\\\\deal, it #39;s off.\"\n",
            "\"1\",\"Multi\nline title\",\"A, B and C\"\r\n",
            "4,bare,unquoted words\n",
        );
        let split = parse_agnews_csv(path, csv.as_bytes(), 4).unwrap();
        assert_eq!(split.labels, [2, 0, 3]);
        assert_eq!(split.texts[0], "He said \"no\" to the deal, it 's off.");
        assert_eq!(split.texts[1], "A, B and C");
        assert_eq!(split.texts[2], "unquoted words");

        assert_rejects(
            |bad| parse_agnews_csv(path, bad, 4),
            &[
                (
                    b"\"5\",\"t\",\"d\"\n",
                    "line 1, byte offset 0: class '5' is not a number in 1..=4",
                ),
                (
                    b"\"1\",\"t\",\"d\"\n\"x\",\"t\",\"d\"\n",
                    "line 2, byte offset 12: class 'x'",
                ),
                (b"\"1\",\"t\",\"d\"\n\"2\",\"t\"\n", "line 2"),
                // An unbalanced quote swallows the rest of the file into one field.
                (
                    b"\"1\",\"t\",\"d\"\n\"2\",\"broken,\"d\"\n\"3\",\"t\",\"d\"\n",
                    "line 2",
                ),
                (b"\"2\",\"t\"\n", "expected 3 fields"),
                (
                    b"\"1\",\"t\",\"d\"\n\"2\",\"t\",\"never closed\n",
                    "line 2, byte offset 12: a quoted field of this record is never closed",
                ),
            ],
        );
    }

    #[test]
    fn agnews_tsv_uses_class_names() {
        let classes = parse_agnews_classes(
            Path::new("classes.txt"),
            b"World\nSports\nBusiness\nSci/Tech\n",
        )
        .unwrap();
        let path = Path::new("train_subset.tsv");
        let split = parse_agnews_tsv(
            path,
            b"Stocks \"rally\" #36;5 gain\tBusiness\nA\\B\tSci/Tech\n",
            &classes,
        )
        .unwrap();
        assert_eq!(split.labels, [2, 3]);
        assert_eq!(split.texts, ["Stocks \"rally\" $5 gain", "A B"]);
        assert_rejects(
            |bad| parse_agnews_tsv(path, bad, &classes),
            &[
                (
                    b"ok\tWorld\ntext\tWeather\n",
                    "line 2: unknown class 'Weather'",
                ),
                (b"no tab here\n", "line 1: expected 'text<TAB>class name'"),
            ],
        );
        assert!(parse_agnews_classes(Path::new("classes.txt"), b"A\nA\n").is_err());
        assert!(parse_agnews_classes(Path::new("classes.txt"), b"\n").is_err());
    }

    #[test]
    fn agnews_cleaning_decodes_dropped_ampersand_entities_only() {
        assert_eq!(clean_agnews("a quot;b quot; c"), "a \"b \" c");
        assert_eq!(clean_agnews("x #151; y #39;s"), "x y 's");
        assert_eq!(clean_agnews("AT amp;T"), "AT &T");
        // Not at a word start, or not an entity: left alone.
        assert_eq!(clean_agnews("a#39; b;c #abc; d"), "a#39; b;c #abc; d");
    }

    #[test]
    fn loaders_find_their_files_or_name_them() {
        let dir = crate::io::empty_scratch_dir("text", "loaders");
        std::fs::write(dir.join("train_5500.label"), b"HUM:ind Who ?\n").unwrap();
        let err = load_trec(&dir).unwrap_err();
        assert!(
            err.to_string().contains("TREC.test, TREC_10.label"),
            "{err}"
        );
        std::fs::write(dir.join("TREC_10.label"), b"LOC:city Where ?\n").unwrap();
        let dataset = load_trec(&dir).unwrap();
        assert_eq!(
            (dataset.train.labels(), dataset.test.labels()),
            (&[3][..], &[4][..])
        );
        std::fs::write(dir.join("classes.txt"), b"A\nB\n").unwrap();
        std::fs::write(dir.join("train_subset.tsv"), b"x\tB\n").unwrap();
        std::fs::write(dir.join("test.csv"), b"\"1\",\"t\",\"y\"\n").unwrap();
        let dataset = load_agnews(&dir).unwrap();
        assert_eq!(
            (dataset.train.labels(), dataset.test.labels()),
            (&[1][..], &[0][..])
        );
        std::fs::write(
            dir.join("train.csv"),
            b"\"2\",\"t\",\"full\"\n\"1\",\"t\",\"z\"\n",
        )
        .unwrap();
        assert_eq!(load_agnews(&dir).unwrap().train.len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
