//! IDX files (MNIST, Fashion-MNIST), raw or gzip-compressed.
//!
//! Layout: two zero bytes, a type byte (`0x08` = unsigned byte, the only type these datasets
//! use), the number of dimensions, then each dimension as a big-endian `u32`, then the data,
//! row-major, exactly the product of the dimensions in bytes. Images are `n x rows x cols`
//! (`idx3`), labels `n` (`idx1`).
//!
//! A gzip file is recognised by its magic bytes (`1f 8b`), not its name. The header's dimensions
//! are checked against what the file can hold before the data buffer is allocated: the file
//! length for a raw file, and the largest ratio deflate can reach (1032:1) for a compressed one,
//! so a 4-byte dimension claiming gigabytes is refused up front. Errors name the file and the byte
//! offset (in the decompressed stream for a gzip file).

use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;

use super::{DatasetName, ImageSplit, RawDataset, Split};
use crate::{Error, Result};

/// Class names of MNIST, in label order.
pub const MNIST_CLASSES: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
/// Class names of Fashion-MNIST, in label order (Zalando's release).
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Type byte of unsigned-byte data.
const TYPE_U8: u8 = 0x08;
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// Deflate cannot expand more than about 1032:1; a header claiming more data than this times
/// the compressed size is a lie, refused before allocating.
const MAX_DEFLATE_RATIO: u64 = 1032;

/// An IDX array of bytes: its dimensions and row-major data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxArray {
    /// Size of each dimension, outermost first (e.g. `[60000, 28, 28]` for MNIST images).
    pub dims: Vec<usize>,
    /// The bytes, row-major over `dims`.
    pub data: Vec<u8>,
}

/// Reads an IDX file of unsigned bytes, raw or gzip-compressed.
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    let (file, file_len) = crate::io::open_with_len(path)?;
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut magic = [0u8; 2];
    let peeked = read_up_to(&mut reader, &mut magic).map_err(|source| Error::io(path, source))?;
    let prefix = std::io::Cursor::new(magic[..peeked].to_vec());
    if peeked == 2 && magic == GZIP_MAGIC {
        let limit = file_len.saturating_mul(MAX_DEFLATE_RATIO);
        let decoder = GzDecoder::new(prefix.chain(reader));
        parse_idx(
            path,
            BufReader::with_capacity(1 << 16, decoder),
            limit,
            true,
        )
    } else {
        parse_idx(path, prefix.chain(reader), file_len, false)
    }
}

/// Reads into `buf` until it is full or the reader ends; returns the bytes read.
fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Parses an IDX stream. `max_len` bounds the stream's length (the file length for raw data, the
/// deflate bound for gzip); `compressed` only changes the wording of errors.
fn parse_idx(
    path: &Path,
    mut reader: impl Read,
    max_len: u64,
    compressed: bool,
) -> Result<IdxArray> {
    let where_ = if compressed {
        "decompressed byte offset"
    } else {
        "byte offset"
    };
    let read_err = |offset: u64, e: std::io::Error| {
        Error::format(
            path,
            format!("cannot read at {where_} {offset}: {e} (truncated or corrupt file?)"),
        )
    };
    let mut fixed = [0u8; 4];
    let got = read_up_to(&mut reader, &mut fixed).map_err(|e| read_err(0, e))?;
    if got < 4 {
        return Err(Error::format(
            path,
            format!("file ends at {where_} {got}, inside the 4-byte IDX magic"),
        ));
    }
    if fixed[0] != 0 || fixed[1] != 0 {
        return Err(Error::format(
            path,
            format!(
                "not an IDX file: magic {:02x?} at {where_} 0 (expected 00 00 08 <ndims>)",
                fixed
            ),
        ));
    }
    if fixed[2] != TYPE_U8 {
        return Err(Error::format(
            path,
            format!(
                "IDX data type 0x{:02x} at {where_} 2 is not supported (only 0x08, unsigned byte)",
                fixed[2]
            ),
        ));
    }
    let ndims = usize::from(fixed[3]);
    if ndims == 0 {
        return Err(Error::format(
            path,
            format!("IDX file declares 0 dimensions at {where_} 3"),
        ));
    }
    let mut raw_dims = vec![0u8; 4 * ndims];
    let got = read_up_to(&mut reader, &mut raw_dims).map_err(|e| read_err(4, e))?;
    if got < raw_dims.len() {
        return Err(Error::format(
            path,
            format!(
                "file ends at {where_} {}, inside the {ndims} dimensions of the header",
                4 + got
            ),
        ));
    }
    let dims: Vec<usize> = raw_dims
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    let header_len = 4 + 4 * ndims as u64;
    let count = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .filter(|&c| {
            c.checked_add(header_len)
                .is_some_and(|total| total <= max_len)
        })
        .ok_or_else(|| {
            let bound = if compressed {
                format!("{max_len} bytes (the most a gzip file of this size can expand to)")
            } else {
                format!("{max_len} bytes (the file length)")
            };
            Error::format(
                path,
                format!(
                    "IDX dimensions {dims:?} at {where_} 4 need more data than the file can \
                     hold: at most {bound}"
                ),
            )
        })?;
    let count = usize::try_from(count).map_err(|_| {
        Error::format(
            path,
            format!("IDX dimensions {dims:?} overflow this platform"),
        )
    })?;
    let mut data = Vec::with_capacity(count);
    let read = (&mut reader)
        .take(count as u64)
        .read_to_end(&mut data)
        .map_err(|e| read_err(header_len + data.len() as u64, e))?;
    if read < count {
        return Err(Error::format(
            path,
            format!(
                "truncated data: dimensions {dims:?} need {count} bytes from {where_} \
                 {header_len}, the file ends at {where_} {}",
                header_len + read as u64
            ),
        ));
    }
    // Reading to the end also lets the gzip decoder check its CRC and length trailer.
    let mut probe = [0u8; 1];
    let extra =
        read_up_to(&mut reader, &mut probe).map_err(|e| read_err(header_len + count as u64, e))?;
    if extra > 0 {
        return Err(Error::format(
            path,
            format!(
                "unexpected trailing bytes at {where_} {} after the {count} data bytes",
                header_len + count as u64
            ),
        ));
    }
    Ok(IdxArray { dims, data })
}

/// The path of an IDX file in `dir`: `stem`, `stem.gz`, or the same with the `-idx` written
/// `.idx` as some mirrors do. A missing file is an [`Error::Io`] naming the names tried.
pub fn find_idx_file(dir: &Path, stem: &str) -> Result<PathBuf> {
    let dotted = stem.replacen("-idx", ".idx", 1);
    let candidates = [
        stem.to_string(),
        format!("{stem}.gz"),
        dotted.clone(),
        format!("{dotted}.gz"),
    ];
    candidates
        .iter()
        .map(|name| dir.join(name))
        .find(|path| path.is_file())
        .ok_or_else(|| Error::Io {
            path: dir.join(stem),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no IDX file found (tried {})", candidates.join(", ")),
            ),
        })
}

/// Reads an image file (`n x rows x cols`) and a label file (`n`) into a split, checking that
/// they agree on `n` and that every label is below `num_classes`.
pub fn read_image_split(images: &Path, labels: &Path, num_classes: usize) -> Result<ImageSplit> {
    let image_array = read_idx(images)?;
    let label_array = read_idx(labels)?;
    let [n, height, width] = image_array.dims[..] else {
        return Err(Error::format(
            images,
            format!(
                "expected 3 dimensions (images x rows x columns), found {:?}",
                image_array.dims
            ),
        ));
    };
    let [n_labels] = label_array.dims[..] else {
        return Err(Error::format(
            labels,
            format!(
                "expected 1 dimension (labels), found {:?}",
                label_array.dims
            ),
        ));
    };
    if n_labels != n {
        return Err(Error::format(
            labels,
            format!("{n_labels} labels for {n} images in {}", images.display()),
        ));
    }
    let header_len = 8;
    if let Some(at) = label_array
        .data
        .iter()
        .position(|&label| usize::from(label) >= num_classes)
    {
        return Err(Error::format(
            labels,
            format!(
                "label {} at byte offset {} (decompressed) is not a class index below {num_classes}",
                label_array.data[at],
                header_len + at
            ),
        ));
    }
    Ok(ImageSplit {
        height,
        width,
        pixels: image_array.data,
        labels: label_array.data.into_iter().map(u32::from).collect(),
        num_classes,
    })
}

/// MNIST-layout dataset in `dir`: `train-images-idx3-ubyte(.gz)`, `train-labels-idx1-ubyte(.gz)`,
/// `t10k-images-idx3-ubyte(.gz)`, `t10k-labels-idx1-ubyte(.gz)`. The training and test files are
/// decoded in parallel.
pub fn load_mnist_like(name: DatasetName, dir: &Path, classes: &[&str]) -> Result<RawDataset> {
    let paths = |prefix: &str| -> Result<(PathBuf, PathBuf)> {
        Ok((
            find_idx_file(dir, &format!("{prefix}-images-idx3-ubyte"))?,
            find_idx_file(dir, &format!("{prefix}-labels-idx1-ubyte"))?,
        ))
    };
    let (train_images, train_labels) = paths("train")?;
    let (test_images, test_labels) = paths("t10k")?;
    let (train, test) = rayon::join(
        || read_image_split(&train_images, &train_labels, classes.len()),
        || read_image_split(&test_images, &test_labels, classes.len()),
    );
    let (train, test) = (train?, test?);
    if (train.height, train.width) != (test.height, test.width) {
        return Err(Error::format(
            &test_images,
            format!(
                "images are {}x{}, the training images {}x{}",
                test.height, test.width, train.height, train.width
            ),
        ));
    }
    Ok(RawDataset {
        name,
        classes: classes.iter().map(|c| c.to_string()).collect(),
        train: Split::Images(train),
        test: Split::Images(test),
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut out = vec![0, 0, TYPE_U8, dims.len() as u8];
        for d in dims {
            out.extend_from_slice(&d.to_be_bytes());
        }
        out.extend_from_slice(data);
        out
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn format_message(result: Result<IdxArray>) -> String {
        match result {
            Err(Error::Format { path, message }) => format!("{}: {message}", path.display()),
            other => panic!("expected a format error, got {other:?}"),
        }
    }

    #[test]
    fn raw_and_gzip_files_read_the_same() {
        let dir = crate::io::empty_scratch_dir("idx", "roundtrip");
        let data: Vec<u8> = (0..2 * 3 * 4).map(|i| i as u8 * 7).collect();
        let bytes = idx_bytes(&[2, 3, 4], &data);
        for path in [
            write(&dir, "raw", &bytes),
            write(&dir, "packed.gz", &gzip(&bytes)),
            // A gzip file is recognised by content, whatever its name.
            write(&dir, "packed-without-suffix", &gzip(&bytes)),
        ] {
            let array = read_idx(&path).unwrap();
            assert_eq!(array.dims, [2, 3, 4]);
            assert_eq!(array.data, data);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn malformed_files_are_format_errors_naming_file_and_offset() {
        let dir = crate::io::empty_scratch_dir("idx", "malformed");
        let good = idx_bytes(&[2, 2, 2], &[1; 8]);
        let packed = gzip(&good);
        let mut bad_magic = good.clone();
        bad_magic[1] = 9;
        let mut bad_type = good.clone();
        bad_type[2] = 0x0d;
        let mut trailing = good.clone();
        trailing.push(0);
        let mut corrupt_crc = packed.clone();
        let crc_at = corrupt_crc.len() - 8;
        corrupt_crc[crc_at] ^= 0xff;
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("empty", vec![], "inside the 4-byte IDX magic"),
            (
                "magic",
                bad_magic,
                "not an IDX file: magic [00, 09, 08, 03] at byte offset 0",
            ),
            ("type", bad_type, "data type 0x0d at byte offset 2"),
            ("dims", good[..9].to_vec(), "inside the 3 dimensions"),
            (
                "truncated",
                good[..20].to_vec(),
                "need more data than the file can hold",
            ),
            ("trailing", trailing, "trailing bytes at byte offset 24"),
            (
                "truncated.gz",
                packed[..packed.len() / 2].to_vec(),
                "decompressed byte offset",
            ),
            ("crc.gz", corrupt_crc, "decompressed byte offset 24"),
            // 4 GB claimed by a 24-byte file: refused before allocating.
            (
                "huge",
                idx_bytes(&[u32::MAX, 1, 1], &[0; 8]),
                "at most 24 bytes (the file length)",
            ),
            (
                "huge.gz",
                gzip(&idx_bytes(&[u32::MAX, u32::MAX, 2], &[0; 8])),
                "the most a gzip file of this size can expand to",
            ),
            ("zero-dims", vec![0, 0, 8, 0], "0 dimensions"),
        ];
        for (name, bytes, needle) in cases {
            let path = write(&dir, name, &bytes);
            let message = format_message(read_idx(&path));
            assert!(message.contains(needle), "{name}: {message}");
            assert!(
                message.contains(&*path.to_string_lossy()),
                "{name}: {message}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn truncated_gzip_data_is_reported_not_short_read() {
        // Cut inside the deflate stream of a larger file: the decoder either errors or ends
        // early; both must be a format error, never a short array.
        let dir = crate::io::empty_scratch_dir("idx", "truncated-gzip");
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 31 % 251) as u8).collect();
        let packed = gzip(&idx_bytes(&[50, 10, 10], &data));
        for cut in [11, packed.len() / 3, packed.len() - 9, packed.len() - 1] {
            let path = write(&dir, "cut.gz", &packed[..cut]);
            let message = format_message(read_idx(&path));
            assert!(message.contains("cut.gz"), "{cut}: {message}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn mnist_layout_loads_and_checks_labels() {
        let dir = crate::io::empty_scratch_dir("idx", "layout");
        let images = idx_bytes(&[3, 4, 4], &(0..48).collect::<Vec<u8>>());
        write(&dir, "train-images-idx3-ubyte.gz", &gzip(&images));
        write(
            &dir,
            "train-labels-idx1-ubyte",
            &idx_bytes(&[3], &[2, 0, 9]),
        );
        write(
            &dir,
            "t10k-images.idx3-ubyte",
            &idx_bytes(&[1, 4, 4], &[5; 16]),
        );
        write(
            &dir,
            "t10k-labels-idx1-ubyte.gz",
            &gzip(&idx_bytes(&[1], &[7])),
        );
        let dataset = load_mnist_like(DatasetName::Mnist, &dir, &MNIST_CLASSES).unwrap();
        let Split::Images(train) = &dataset.train else {
            panic!("images expected")
        };
        assert_eq!((train.len(), train.height, train.width), (3, 4, 4));
        assert_eq!(train.labels, [2, 0, 9]);
        assert_eq!(train.image(1), &(16..32).collect::<Vec<u8>>()[..]);
        assert_eq!(dataset.test.labels(), [7]);

        // An out-of-range label names its offset; a count mismatch names both files.
        write(
            &dir,
            "train-labels-idx1-ubyte",
            &idx_bytes(&[3], &[2, 10, 9]),
        );
        let err = load_mnist_like(DatasetName::Mnist, &dir, &MNIST_CLASSES).unwrap_err();
        assert!(
            err.to_string().contains("label 10 at byte offset 9"),
            "{err}"
        );
        write(&dir, "train-labels-idx1-ubyte", &idx_bytes(&[2], &[2, 1]));
        let err = load_mnist_like(DatasetName::Mnist, &dir, &MNIST_CLASSES).unwrap_err();
        assert!(err.to_string().contains("2 labels for 3 images"), "{err}");
        write(
            &dir,
            "train-labels-idx1-ubyte",
            &idx_bytes(&[3, 1], &[2, 1, 0]),
        );
        let err = load_mnist_like(DatasetName::Mnist, &dir, &MNIST_CLASSES).unwrap_err();
        assert!(err.to_string().contains("expected 1 dimension"), "{err}");

        std::fs::remove_file(dir.join("t10k-labels-idx1-ubyte.gz")).unwrap();
        let err = load_mnist_like(DatasetName::Mnist, &dir, &MNIST_CLASSES).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
        assert!(err.to_string().contains("t10k-labels-idx1-ubyte"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
