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

use std::fs::File;
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
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

fn format_error(path: &Path, message: impl Into<String>) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Reads an IDX file of unsigned bytes, raw or gzip-compressed.
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    let io_err = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io_err)?;
    let file_len = file.metadata().map_err(io_err)?.len();
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut magic = [0u8; 2];
    let peeked = read_up_to(&mut reader, &mut magic).map_err(io_err)?;
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
        format_error(
            path,
            format!("cannot read at {where_} {offset}: {e} (truncated or corrupt file?)"),
        )
    };
    let mut fixed = [0u8; 4];
    let got = read_up_to(&mut reader, &mut fixed).map_err(|e| read_err(0, e))?;
    if got < 4 {
        return Err(format_error(
            path,
            format!("file ends at {where_} {got}, inside the 4-byte IDX magic"),
        ));
    }
    if fixed[0] != 0 || fixed[1] != 0 {
        return Err(format_error(
            path,
            format!(
                "not an IDX file: magic {:02x?} at {where_} 0 (expected 00 00 08 <ndims>)",
                fixed
            ),
        ));
    }
    if fixed[2] != TYPE_U8 {
        return Err(format_error(
            path,
            format!(
                "IDX data type 0x{:02x} at {where_} 2 is not supported (only 0x08, unsigned byte)",
                fixed[2]
            ),
        ));
    }
    let ndims = usize::from(fixed[3]);
    if ndims == 0 {
        return Err(format_error(
            path,
            format!("IDX file declares 0 dimensions at {where_} 3"),
        ));
    }
    let mut raw_dims = vec![0u8; 4 * ndims];
    let got = read_up_to(&mut reader, &mut raw_dims).map_err(|e| read_err(4, e))?;
    if got < raw_dims.len() {
        return Err(format_error(
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
            format_error(
                path,
                format!(
                    "IDX dimensions {dims:?} at {where_} 4 need more data than the file can \
                     hold: at most {bound}"
                ),
            )
        })?;
    let count = usize::try_from(count).map_err(|_| {
        format_error(
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
        return Err(format_error(
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
        return Err(format_error(
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
        return Err(format_error(
            images,
            format!(
                "expected 3 dimensions (images x rows x columns), found {:?}",
                image_array.dims
            ),
        ));
    };
    let [n_labels] = label_array.dims[..] else {
        return Err(format_error(
            labels,
            format!(
                "expected 1 dimension (labels), found {:?}",
                label_array.dims
            ),
        ));
    };
    if n_labels != n {
        return Err(format_error(
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
        return Err(format_error(
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
        return Err(format_error(
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
