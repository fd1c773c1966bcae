//! NumPy `.npz` archives (a zip of `.npy` members, stored or deflated), as MedMNIST ships them.
//!
//! BreastMNIST (`breastmnist.npz`): `{train,val,test}_images` (`uint8`, `n x 28 x 28`) and
//! `{train,val,test}_labels` (`uint8`, `n` or `n x 1`; 0 = malignant, 1 = normal/benign). The
//! members are parsed by the `.npy` reader of [`crate::io::npy`]. A member's declared size is
//! checked against what its compressed bytes can expand to before its buffer is allocated.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::{DatasetName, ImageSplit, RawDataset, Split};
use crate::io::npy;
use crate::{Error, Result};

/// BreastMNIST's classes, in label order (MedMNIST's `INFO['breastmnist']['label']`).
pub const BREASTMNIST_CLASSES: [&str; 2] = ["malignant", "normal, benign"];
/// Deflate expands at most about 1032:1 (plus a small constant for tiny members).
const MAX_DEFLATE_RATIO: u64 = 1032;
const SMALL_MEMBER: u64 = 1 << 16;

/// An opened `.npz` archive.
pub struct Npz {
    path: PathBuf,
    archive: zip::ZipArchive<File>,
    /// Length of the archive file: no member's compressed data can be longer.
    file_len: u64,
}

impl Npz {
    /// Opens the archive and reads its central directory.
    pub fn open(path: &Path) -> Result<Npz> {
        let (file, file_len) = crate::io::open_with_len(path)?;
        let archive = zip::ZipArchive::new(file)
            .map_err(|e| Error::format(path, format!("not a readable zip (.npz) archive: {e}")))?;
        Ok(Npz {
            path: path.to_path_buf(),
            archive,
            file_len,
        })
    }

    /// The array names (member names without `.npy`), in archive order.
    pub fn keys(&self) -> Vec<String> {
        self.archive
            .file_names()
            .filter_map(|name| name.ok())
            .map(|name| name.strip_suffix(".npy").unwrap_or(&name).to_string())
            .collect()
    }

    /// The raw bytes of member `key.npy`, and the path naming it in errors
    /// (`archive.npz/key.npy`).
    fn member(&mut self, key: &str) -> Result<(PathBuf, Vec<u8>)> {
        let member_name = format!("{key}.npy");
        let member_path = self.path.join(&member_name);
        let keys = self.keys().join(", ");
        let mut member = self.archive.by_name(&member_name).map_err(|e| {
            Error::format(
                &self.path,
                format!("no array '{key}' ({e}); the archive holds: {keys}"),
            )
        })?;
        let declared = member.size();
        let bound = member
            .compressed_size()
            .min(self.file_len)
            .saturating_mul(MAX_DEFLATE_RATIO)
            .saturating_add(SMALL_MEMBER);
        if declared > bound {
            return Err(Error::format(
                &member_path,
                format!(
                    "declares {declared} uncompressed bytes, more than its {} compressed bytes \
                     can hold",
                    member.compressed_size()
                ),
            ));
        }
        let mut bytes = Vec::with_capacity(declared as usize);
        // One byte past the declared size reveals a lying directory entry without reading on.
        (&mut member)
            .take(declared + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| {
                Error::format(
                    &member_path,
                    format!(
                        "cannot decompress (corrupt or truncated archive?) at byte offset {} of \
                         the member: {e}",
                        bytes.len()
                    ),
                )
            })?;
        if bytes.len() as u64 != declared {
            return Err(Error::format(
                &member_path,
                format!(
                    "decompressed to {} bytes, the archive declares {declared}",
                    bytes.len()
                ),
            ));
        }
        Ok((member_path, bytes))
    }

    /// Array `key` as exactly `u8` data, with its shape.
    pub fn read_u8(&mut self, key: &str) -> Result<(PathBuf, Vec<usize>, Vec<u8>)> {
        let (path, bytes) = self.member(key)?;
        let (shape, data) = npy::read_npy_bytes::<u8>(&path, &bytes)?;
        Ok((path, shape, data))
    }

    /// Array `key` of any numeric dtype converted to `f64`, with its shape.
    pub fn read_f64(&mut self, key: &str) -> Result<(PathBuf, Vec<usize>, Vec<f64>)> {
        let (path, bytes) = self.member(key)?;
        let (shape, data) = npy::read_npy_f64_bytes(&path, &bytes)?;
        Ok((path, shape, data))
    }
}

/// Reads `{split}_images` (`uint8`, `n x h x w`) and `{split}_labels` (integers below
/// `num_classes`, shape `n` or `n x 1`) from a MedMNIST archive.
pub fn read_medmnist_split(npz: &mut Npz, split: &str, num_classes: usize) -> Result<ImageSplit> {
    let (images_path, shape, pixels) = npz.read_u8(&format!("{split}_images"))?;
    let [n, height, width] = shape[..] else {
        return Err(Error::format(
            &images_path,
            format!("expected shape (n, height, width) of grey-scale images, found {shape:?}"),
        ));
    };
    let (labels_path, label_shape, raw_labels) = npz.read_f64(&format!("{split}_labels"))?;
    if !(label_shape == [n] || label_shape == [n, 1]) {
        return Err(Error::format(
            &labels_path,
            format!("expected shape ({n},) or ({n}, 1) to match the images, found {label_shape:?}"),
        ));
    }
    let mut labels = Vec::with_capacity(n);
    for (i, &value) in raw_labels.iter().enumerate() {
        if value.fract() != 0.0 || !(0.0..num_classes as f64).contains(&value) {
            return Err(Error::format(
                &labels_path,
                format!("label {value} at element {i} is not a class index below {num_classes}"),
            ));
        }
        labels.push(value as u32);
    }
    Ok(ImageSplit {
        height,
        width,
        pixels,
        labels,
        num_classes,
    })
}

/// The archive of BreastMNIST in `dir`: `breastmnist.npz`, or the only `*.npz` whose name
/// starts with `breastmnist` (e.g. `breastmnist_28.npz` of MedMNIST+).
pub fn find_breastmnist(dir: &Path) -> Result<PathBuf> {
    let canonical = dir.join("breastmnist.npz");
    if canonical.is_file() {
        return Ok(canonical);
    }
    let entries = std::fs::read_dir(dir).map_err(|source| Error::io(dir, source))?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("breastmnist") && n.ends_with(".npz"))
        })
        .collect();
    found.sort();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(Error::Io {
            path: canonical,
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no BreastMNIST archive"),
        }),
        _ => Err(Error::invalid(
            "data-dir",
            format!(
                "several BreastMNIST archives in {} ({}); keep one or name it breastmnist.npz",
                dir.display(),
                found
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// BreastMNIST from `dir`: the `train` and `test` splits (the `val` split is left out, see the
/// module docs of [`super`]; [`load_breastmnist_split`] reads it).
pub fn load_breastmnist(dir: &Path) -> Result<RawDataset> {
    let mut npz = Npz::open(&find_breastmnist(dir)?)?;
    let classes = BREASTMNIST_CLASSES.len();
    let train = read_medmnist_split(&mut npz, "train", classes)?;
    let test = read_medmnist_split(&mut npz, "test", classes)?;
    Ok(RawDataset {
        name: DatasetName::BreastMnist,
        classes: BREASTMNIST_CLASSES.iter().map(|c| c.to_string()).collect(),
        train: Split::Images(train),
        test: Split::Images(test),
    })
}

/// One named split (`train`, `val` or `test`) of BreastMNIST in `dir`.
pub fn load_breastmnist_split(dir: &Path, split: &str) -> Result<ImageSplit> {
    let mut npz = Npz::open(&find_breastmnist(dir)?)?;
    read_medmnist_split(&mut npz, split, BREASTMNIST_CLASSES.len())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use zip::write::SimpleFileOptions;

    use super::*;

    /// The bytes of a `.npy` holding `data` with `shape`, via the project's writer.
    fn npy_bytes<T: npy::NpyElement>(dir: &Path, shape: &[usize], data: &[T]) -> Vec<u8> {
        let path = dir.join("member.npy");
        npy::write_npy(&path, shape, data).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        bytes
    }

    fn write_npz(path: &Path, members: &[(&str, Vec<u8>)]) {
        let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
        let options =
            SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        for (name, bytes) in members {
            zip.start_file(format!("{name}.npy"), options).unwrap();
            zip.write_all(bytes).unwrap();
        }
        zip.finish().unwrap();
    }

    /// A well-formed BreastMNIST-like archive: 3 train, 1 val, 2 test images of 2x2.
    fn good_members(dir: &Path) -> Vec<(&'static str, Vec<u8>)> {
        vec![
            ("train_images", npy_bytes(dir, &[3, 2, 2], &[7u8; 12])),
            ("train_labels", npy_bytes(dir, &[3, 1], &[0u8, 1, 1])),
            ("val_images", npy_bytes(dir, &[1, 2, 2], &[1u8; 4])),
            ("val_labels", npy_bytes(dir, &[1], &[1i64])),
            ("test_images", npy_bytes(dir, &[2, 2, 2], &[9u8; 8])),
            ("test_labels", npy_bytes(dir, &[2], &[1u8, 0])),
        ]
    }

    #[test]
    fn breastmnist_archive_loads_train_and_test() {
        let dir = crate::io::empty_scratch_dir("npz", "good");
        write_npz(&dir.join("breastmnist.npz"), &good_members(&dir));
        let dataset = load_breastmnist(&dir).unwrap();
        assert_eq!(dataset.classes.len(), 2);
        let Split::Images(train) = &dataset.train else {
            panic!("images expected")
        };
        assert_eq!((train.len(), train.height, train.width), (3, 2, 2));
        assert_eq!(train.labels, [0, 1, 1]);
        assert_eq!(dataset.test.labels(), [1, 0]);
        // Labels stored as int64 convert; the val split is available separately.
        assert_eq!(load_breastmnist_split(&dir, "val").unwrap().labels, [1]);
        let keys = Npz::open(&dir.join("breastmnist.npz")).unwrap().keys();
        assert_eq!(keys.len(), 6);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn another_archive_name_is_found_when_alone() {
        let dir = crate::io::empty_scratch_dir("npz", "name");
        write_npz(&dir.join("breastmnist_28.npz"), &good_members(&dir));
        assert!(load_breastmnist(&dir).is_ok());
        write_npz(&dir.join("breastmnist_64.npz"), &good_members(&dir));
        let err = load_breastmnist(&dir).unwrap_err();
        assert!(
            err.to_string().contains("several BreastMNIST archives"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn malformed_archives_are_errors_naming_the_member() {
        let dir = crate::io::empty_scratch_dir("npz", "bad");
        let replace = |key: &str, bytes: Vec<u8>| {
            let mut members = good_members(&dir);
            for member in &mut members {
                if member.0 == key {
                    member.1 = bytes.clone();
                }
            }
            members
        };
        let mut wrong_magic = npy_bytes(&dir, &[3, 1], &[0u8, 1, 1]);
        wrong_magic[1] = b'X';
        let truncated = npy_bytes(&dir, &[3, 2, 2], &[7u8; 12]);
        let truncated = truncated[..truncated.len() - 3].to_vec();
        let cases = vec![
            (
                replace("train_labels", npy_bytes(&dir, &[3], &[0u8, 2, 1])),
                "train_labels.npy: label 2 at element 1",
            ),
            (
                replace("train_labels", npy_bytes(&dir, &[2], &[0u8, 1])),
                "expected shape (3,) or (3, 1)",
            ),
            (
                replace("train_labels", npy_bytes(&dir, &[3], &[0.5f32, 1.0, 0.0])),
                "label 0.5 at element 0",
            ),
            (
                replace("train_images", npy_bytes(&dir, &[3, 4], &[7u8; 12])),
                "expected shape (n, height, width)",
            ),
            (
                replace("train_images", npy_bytes(&dir, &[3, 2, 2], &[7f32; 12])),
                "train_images.npy: dtype is '<f4', expected '|u1'",
            ),
            (replace("train_labels", wrong_magic), "bad magic"),
            (replace("train_images", truncated), "truncated data"),
            (
                good_members(&dir)
                    .into_iter()
                    .filter(|m| m.0 != "test_labels")
                    .collect(),
                "no array 'test_labels'",
            ),
        ];
        for (i, (members, needle)) in cases.into_iter().enumerate() {
            let path = dir.join("breastmnist.npz");
            write_npz(&path, &members);
            let err = load_breastmnist(&dir).unwrap_err();
            assert!(matches!(err, Error::Format { .. }), "case {i}: {err}");
            assert!(err.to_string().contains(needle), "case {i}: {err}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_member_declaring_gigabytes_is_refused_before_allocating() {
        let dir = crate::io::empty_scratch_dir("npz", "huge");
        let path = dir.join("breastmnist.npz");
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
        let stored =
            SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        for (name, bytes) in good_members(&dir) {
            zip.start_file(format!("{name}.npy"), stored).unwrap();
            zip.write_all(&bytes).unwrap();
        }
        zip.finish().unwrap();
        // Rewrite the uncompressed size of every entry (local header offset 22, central
        // directory offset 24) to nearly 4 GB.
        let mut bytes = std::fs::read(&path).unwrap();
        for (signature, offset) in [(0x0403_4b50u32, 22), (0x0201_4b50, 24)] {
            let marker = signature.to_le_bytes();
            let starts: Vec<usize> = (0..bytes.len() - 4)
                .filter(|&i| bytes[i..i + 4] == marker)
                .collect();
            for start in starts {
                bytes[start + offset..start + offset + 4]
                    .copy_from_slice(&0xffff_fff0u32.to_le_bytes());
            }
        }
        std::fs::write(&path, &bytes).unwrap();
        let err = load_breastmnist(&dir).unwrap_err();
        assert!(matches!(err, Error::Format { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("train_images.npy: declares 4294967280 uncompressed bytes"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn not_a_zip_and_a_cut_archive_are_format_errors() {
        let dir = crate::io::empty_scratch_dir("npz", "notzip");
        let path = dir.join("breastmnist.npz");
        std::fs::write(&path, b"\x93NUMPY this is an npy, not an npz").unwrap();
        let err = load_breastmnist(&dir).unwrap_err();
        assert!(err.to_string().contains("not a readable zip"), "{err}");
        write_npz(&path, &good_members(&dir));
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let err = load_breastmnist(&dir).unwrap_err();
        assert!(matches!(err, Error::Format { .. }), "{err}");
        // A member whose deflate stream is corrupted (CRC or decoder error), directory intact.
        write_npz(&path, &good_members(&dir));
        let mut bytes = std::fs::read(&path).unwrap();
        let data_start = 30 + "train_images.npy".len();
        for b in &mut bytes[data_start + 2..data_start + 20] {
            *b ^= 0x5a;
        }
        std::fs::write(&path, &bytes).unwrap();
        let err = load_breastmnist(&dir).unwrap_err();
        assert!(err.to_string().contains("train_images.npy"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
