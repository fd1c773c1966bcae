//! NumPy `.npy` files: C-order, little-endian arrays of plain numeric types.
//!
//! Layout (format versions 1.0, 2.0 and 3.0): the magic `\x93NUMPY`, a major and a minor version
//! byte, the header length (`u16` little-endian for 1.0, `u32` for 2.0 and 3.0), then the header:
//! a Python dict literal such as `{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), }`
//! padded with spaces and a final `\n` so that the data starts on a 64-byte boundary. The data
//! follows, exactly `product(shape) * itemsize` bytes.
//!
//! Reading is strict: every malformed file, including truncated data, trailing bytes, Fortran
//! order and big-endian data, is an [`Error::Format`] naming the file, what is wrong and, where
//! relevant, the byte offset. Nothing here panics on bad input.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use crate::{Error, Result};

const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// NumPy aligns the start of the data to this many bytes.
const ALIGN: usize = 64;
/// Bytes converted per read when loading data.
const READ_CHUNK: usize = 1 << 16;

/// Element types storable in `.npy`: `f32` (`<f4`), `f64` (`<f8`), `i8` (`|i1`), `u8` (`|u1`),
/// `i16` (`<i2`), `i32` (`<i4`), `u32` (`<u4`), `i64` (`<i8`), `bool` (`|b1`).
pub trait NpyElement: Copy + sealed::Sealed {
    /// The dtype string written in the header.
    const DESCR: &'static str;
    /// Bytes per element.
    const SIZE: usize;
    /// Appends the little-endian bytes of `self`.
    fn extend_le(self, out: &mut Vec<u8>);
    /// Reads one element from exactly [`Self::SIZE`] little-endian bytes.
    fn from_le_slice(bytes: &[u8]) -> Self;
}

mod sealed {
    pub trait Sealed {}
}

macro_rules! numeric_element {
    ($($ty:ty => $descr:literal),* $(,)?) => {$(
        impl sealed::Sealed for $ty {}
        impl NpyElement for $ty {
            const DESCR: &'static str = $descr;
            const SIZE: usize = std::mem::size_of::<$ty>();
            fn extend_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn from_le_slice(bytes: &[u8]) -> Self {
                let mut raw = [0u8; std::mem::size_of::<$ty>()];
                raw.copy_from_slice(bytes);
                <$ty>::from_le_bytes(raw)
            }
        }
    )*};
}

numeric_element!(
    f32 => "<f4", f64 => "<f8", i8 => "|i1", u8 => "|u1",
    i16 => "<i2", i32 => "<i4", u32 => "<u4", i64 => "<i8",
);

impl sealed::Sealed for bool {}
impl NpyElement for bool {
    const DESCR: &'static str = "|b1";
    const SIZE: usize = 1;
    fn extend_le(self, out: &mut Vec<u8>) {
        out.push(u8::from(self));
    }
    fn from_le_slice(bytes: &[u8]) -> Self {
        bytes[0] != 0
    }
}

/// The dtypes this module reads, with how each converts to `f64`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dtype {
    F4,
    F8,
    I1,
    U1,
    I2,
    I4,
    U4,
    I8,
    B1,
}

impl Dtype {
    /// Parses a dtype string. `<` and `|` are accepted for every type (NumPy writes `|` for
    /// one-byte types); big-endian data is refused rather than silently byte-swapped wrong.
    fn parse(descr: &str) -> std::result::Result<Dtype, String> {
        let (order, code) = descr.split_at(descr.len().min(1));
        if order == ">" {
            return Err(format!(
                "big-endian dtype '{descr}' is not supported (only little-endian)"
            ));
        }
        let dtype = match (order, code) {
            ("<" | "|" | "=", "f4") => Dtype::F4,
            ("<" | "|" | "=", "f8") => Dtype::F8,
            ("<" | "|" | "=", "i1") => Dtype::I1,
            ("<" | "|" | "=", "u1") => Dtype::U1,
            ("<" | "|" | "=", "i2") => Dtype::I2,
            ("<" | "|" | "=", "i4") => Dtype::I4,
            ("<" | "|" | "=", "u4") => Dtype::U4,
            ("<" | "|" | "=", "i8") => Dtype::I8,
            ("<" | "|" | "=", "b1") => Dtype::B1,
            _ => {
                return Err(format!(
                    "unsupported dtype '{descr}' (supported: <f4 <f8 |i1 |u1 <i2 <i4 <u4 <i8 |b1)"
                ))
            }
        };
        Ok(dtype)
    }

    /// The canonical dtype string, as NumPy writes it.
    fn descr(self) -> &'static str {
        match self {
            Dtype::F4 => "<f4",
            Dtype::F8 => "<f8",
            Dtype::I1 => "|i1",
            Dtype::U1 => "|u1",
            Dtype::I2 => "<i2",
            Dtype::I4 => "<i4",
            Dtype::U4 => "<u4",
            Dtype::I8 => "<i8",
            Dtype::B1 => "|b1",
        }
    }

    fn size(self) -> usize {
        match self {
            Dtype::I1 | Dtype::U1 | Dtype::B1 => 1,
            Dtype::I2 => 2,
            Dtype::F4 | Dtype::I4 | Dtype::U4 => 4,
            Dtype::F8 | Dtype::I8 => 8,
        }
    }

    /// The value of one element as `f64`; `i64` beyond 2^53 rounds to the nearest double.
    fn to_f64(self, b: &[u8]) -> f64 {
        match self {
            Dtype::F4 => f64::from(f32::from_le_slice(b)),
            Dtype::F8 => f64::from_le_slice(b),
            Dtype::I1 => f64::from(i8::from_le_slice(b)),
            Dtype::U1 => f64::from(b[0]),
            Dtype::I2 => f64::from(i16::from_le_slice(b)),
            Dtype::I4 => f64::from(i32::from_le_slice(b)),
            Dtype::U4 => f64::from(u32::from_le_slice(b)),
            Dtype::I8 => i64::from_le_slice(b) as f64,
            Dtype::B1 => f64::from(u8::from(b[0] != 0)),
        }
    }
}

fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &n| acc.checked_mul(n))
}

/// The header dict for a C-order array, padded so the data starts on a 64-byte boundary.
/// Returns the full preamble: magic, version, header length and header.
fn preamble(descr: &str, shape: &[usize]) -> Vec<u8> {
    let dims = match shape {
        [] => "()".to_string(),
        [n] => format!("({n},)"),
        _ => {
            let parts: Vec<String> = shape.iter().map(usize::to_string).collect();
            format!("({})", parts.join(", "))
        }
    };
    let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {dims}, }}");
    // Version 1.0 stores the header length in 2 bytes; 2.0 in 4.
    let (version, len_bytes) = if padded_len(dict.len(), 10) <= usize::from(u16::MAX) {
        (1u8, 2usize)
    } else {
        (2u8, 4usize)
    };
    let prefix = MAGIC.len() + 2 + len_bytes;
    let header_len = padded_len(dict.len(), prefix);
    let mut out = Vec::with_capacity(prefix + header_len);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[version, 0]);
    if version == 1 {
        out.extend_from_slice(&(header_len as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&(header_len as u32).to_le_bytes());
    }
    out.extend_from_slice(dict.as_bytes());
    out.resize(prefix + header_len - 1, b' ');
    out.push(b'\n');
    out
}

/// Length of a header of `dict_len` bytes plus the newline, padded so that
/// `prefix + length` is a multiple of [`ALIGN`].
fn padded_len(dict_len: usize, prefix: usize) -> usize {
    let unpadded = prefix + dict_len + 1;
    unpadded.div_ceil(ALIGN) * ALIGN - prefix
}

/// Writes a C-order `.npy` (format 1.0, or 2.0 when the header needs it) atomically.
/// `data.len()` must equal the product of `shape` (1 for a 0-d array).
pub fn write_npy<T: NpyElement>(path: &Path, shape: &[usize], data: &[T]) -> Result<()> {
    match element_count(shape) {
        Some(count) if count == data.len() => {}
        Some(count) => {
            return Err(Error::invalid(
                "data",
                format!(
                    "{} has {} elements but shape {shape:?} needs {count}",
                    path.display(),
                    data.len()
                ),
            ))
        }
        None => {
            return Err(Error::invalid(
                "shape",
                format!("{shape:?} overflows the element count"),
            ))
        }
    }
    let header = preamble(T::DESCR, shape);
    super::write_atomic_with(path, |out| {
        out.write_all(&header)?;
        let mut buffer = Vec::with_capacity(READ_CHUNK);
        for chunk in data.chunks((READ_CHUNK / T::SIZE).max(1)) {
            buffer.clear();
            for &value in chunk {
                value.extend_le(&mut buffer);
            }
            out.write_all(&buffer)?;
        }
        Ok(())
    })
}

/// A parsed header.
struct Header {
    dtype: Dtype,
    shape: Vec<usize>,
    /// Offset of the first data byte.
    data_offset: usize,
}

/// Reads a C-order little-endian `.npy`; any numeric dtype in the file converts to `f64`
/// (exactly, except `i64` beyond 2^53). Errors name the file and what is wrong.
pub fn read_npy_f64(path: &Path) -> Result<(Vec<usize>, Vec<f64>)> {
    let (header, mut reader, count) = open(path)?;
    let dtype = header.dtype;
    let data = read_data(path, &header, &mut reader, count, |bytes, out| {
        out.extend(bytes.chunks_exact(dtype.size()).map(|b| dtype.to_f64(b)));
    })?;
    Ok((header.shape, data))
}

/// Reads a C-order little-endian `.npy` whose dtype is exactly `T`'s.
pub fn read_npy<T: NpyElement>(path: &Path) -> Result<(Vec<usize>, Vec<T>)> {
    let (header, mut reader, count) = open(path)?;
    read_exact_dtype(
        path,
        header,
        &mut reader,
        count,
        " (use read_npy_f64 to convert)",
    )
}

/// The data of a file whose dtype must be exactly `T`'s; on a mismatch, an error ending with
/// `hint`.
fn read_exact_dtype<T: NpyElement>(
    path: &Path,
    header: Header,
    reader: &mut impl Read,
    count: usize,
    hint: &str,
) -> Result<(Vec<usize>, Vec<T>)> {
    let wanted = Dtype::parse(T::DESCR).expect("every NpyElement has a supported descr");
    if header.dtype != wanted {
        return Err(Error::format(
            path,
            format!(
                "dtype is '{}', expected '{}'{hint}",
                header.dtype.descr(),
                T::DESCR
            ),
        ));
    }
    let data = read_data(path, &header, reader, count, |bytes, out| {
        out.extend(bytes.chunks_exact(T::SIZE).map(T::from_le_slice));
    })?;
    Ok((header.shape, data))
}

/// Opens the file, parses the header and checks that the file length matches the shape before
/// anything is allocated for the data.
fn open(path: &Path) -> Result<(Header, BufReader<File>, usize)> {
    let (file, file_len) = crate::io::open_with_len(path)?;
    let mut reader = BufReader::new(file);
    let header = read_header(path, &mut reader)?;
    let count = check_length(path, &header, file_len)?;
    Ok((header, reader, count))
}

/// The element count of the array, after checking that a file of `file_len` bytes holds exactly
/// its data after the header.
fn check_length(path: &Path, header: &Header, file_len: u64) -> Result<usize> {
    let count = element_count(&header.shape)
        .ok_or_else(|| Error::format(path, format!("shape {:?} overflows", header.shape)))?;
    let expected = count
        .checked_mul(header.dtype.size())
        .and_then(|n| u64::try_from(n).ok())
        .ok_or_else(|| Error::format(path, format!("shape {:?} overflows", header.shape)))?;
    let available = file_len.saturating_sub(header.data_offset as u64);
    if available < expected {
        return Err(Error::format(
            path,
            format!(
                "truncated data: shape {:?} of '{}' needs {expected} bytes from offset {}, \
                 the file has {available}",
                header.shape,
                header.dtype.descr(),
                header.data_offset
            ),
        ));
    }
    if available > expected {
        return Err(Error::format(
            path,
            format!(
                "{} unexpected trailing bytes at offset {}",
                available - expected,
                header.data_offset as u64 + expected
            ),
        ));
    }
    Ok(count)
}

/// Same as [`read_npy`] for a `.npy` already in memory (e.g. a member of an `.npz` archive);
/// `path` names it in errors.
pub fn read_npy_bytes<T: NpyElement>(path: &Path, bytes: &[u8]) -> Result<(Vec<usize>, Vec<T>)> {
    let mut reader = bytes;
    let header = read_header(path, &mut reader)?;
    let count = check_length(path, &header, bytes.len() as u64)?;
    read_exact_dtype(path, header, &mut reader, count, "")
}

/// Same as [`read_npy_f64`] for a `.npy` already in memory; `path` names it in errors.
pub fn read_npy_f64_bytes(path: &Path, bytes: &[u8]) -> Result<(Vec<usize>, Vec<f64>)> {
    let mut reader = bytes;
    let header = read_header(path, &mut reader)?;
    let count = check_length(path, &header, bytes.len() as u64)?;
    let dtype = header.dtype;
    let data = read_data(path, &header, &mut reader, count, |bytes, out| {
        out.extend(bytes.chunks_exact(dtype.size()).map(|b| dtype.to_f64(b)));
    })?;
    Ok((header.shape, data))
}

fn read_data<T>(
    path: &Path,
    header: &Header,
    reader: &mut impl Read,
    count: usize,
    mut convert: impl FnMut(&[u8], &mut Vec<T>),
) -> Result<Vec<T>> {
    let size = header.dtype.size();
    let mut out = Vec::with_capacity(count);
    let mut remaining = count * size;
    let mut buffer = vec![0u8; READ_CHUNK.min(remaining).max(size)];
    while remaining > 0 {
        let take = remaining.min(buffer.len() / size * size);
        let offset = header.data_offset + count * size - remaining;
        reader.read_exact(&mut buffer[..take]).map_err(|e| {
            Error::format(path, format!("cannot read data at offset {offset}: {e}"))
        })?;
        convert(&buffer[..take], &mut out);
        remaining -= take;
    }
    Ok(out)
}

fn read_header(path: &Path, reader: &mut impl Read) -> Result<Header> {
    let mut fixed = [0u8; 8];
    reader
        .read_exact(&mut fixed)
        .map_err(|_| Error::format(path, "file too short for the .npy magic and version"))?;
    if &fixed[..6] != MAGIC {
        return Err(Error::format(
            path,
            format!(
                "not a .npy file: bad magic {:02x?} at offset 0",
                &fixed[..6]
            ),
        ));
    }
    let (major, minor) = (fixed[6], fixed[7]);
    let header_len = match major {
        1 => {
            let mut len = [0u8; 2];
            reader.read_exact(&mut len).map_err(|_| {
                Error::format(path, "file ends inside the header length at offset 8")
            })?;
            usize::from(u16::from_le_bytes(len))
        }
        2 | 3 => {
            let mut len = [0u8; 4];
            reader.read_exact(&mut len).map_err(|_| {
                Error::format(path, "file ends inside the header length at offset 8")
            })?;
            u32::from_le_bytes(len) as usize
        }
        _ => {
            return Err(Error::format(
                path,
                format!("unsupported .npy format version {major}.{minor} at offset 6"),
            ))
        }
    };
    let prefix = if major == 1 { 10 } else { 12 };
    // Bounded by the format (u32) and read incrementally: a lying length cannot allocate more
    // than the file holds.
    let mut raw = Vec::new();
    reader
        .take(header_len as u64)
        .read_to_end(&mut raw)
        .map_err(|e| Error::format(path, format!("cannot read header: {e}")))?;
    if raw.len() < header_len {
        return Err(Error::format(
            path,
            format!(
                "truncated header: {header_len} bytes announced at offset {prefix}, file ends at offset {}",
                prefix + raw.len()
            ),
        ));
    }
    // Versions 1 and 2 are latin-1; the dict itself is ASCII in both, so requiring UTF-8 only
    // rejects headers that cannot be valid anyway.
    let text = std::str::from_utf8(&raw).map_err(|e| {
        Error::format(
            path,
            format!(
                "header is not text (byte offset {})",
                prefix + e.valid_up_to()
            ),
        )
    })?;
    let dict = parse_header_dict(text.trim_end()).map_err(|(at, message)| {
        Error::format(
            path,
            format!("garbled header at byte offset {}: {message}", prefix + at),
        )
    })?;
    let (dtype, fortran_order, shape) = dict;
    let dtype = Dtype::parse(&dtype).map_err(|m| Error::format(path, m))?;
    if fortran_order {
        return Err(Error::format(
            path,
            "fortran_order is True: only C-order arrays are supported \
             (save with numpy.ascontiguousarray first)",
        ));
    }
    Ok(Header {
        dtype,
        shape,
        data_offset: prefix + header_len,
    })
}

/// A parse error: byte position inside the header and a message.
type ParseError = (usize, String);

/// Parses the header dict literal into (descr, fortran_order, shape). Exactly the three keys
/// NumPy writes are accepted, in any order, with either quote style and optional trailing commas.
fn parse_header_dict(text: &str) -> std::result::Result<(String, bool, Vec<usize>), ParseError> {
    let mut p = Parser { text, pos: 0 };
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    p.expect('{')?;
    loop {
        p.skip_ws();
        if p.eat('}') {
            break;
        }
        let key_at = p.pos;
        let key = p.string()?;
        p.expect(':')?;
        p.skip_ws();
        match key.as_str() {
            "descr" if descr.is_none() => {
                if p.peek() == Some('[') {
                    return Err((p.pos, "structured dtypes are not supported".into()));
                }
                descr = Some(p.string()?);
            }
            "fortran_order" if fortran.is_none() => fortran = Some(p.boolean()?),
            "shape" if shape.is_none() => shape = Some(p.shape()?),
            "descr" | "fortran_order" | "shape" => {
                return Err((key_at, format!("duplicate key '{key}'")))
            }
            _ => return Err((key_at, format!("unexpected key '{key}'"))),
        }
        p.skip_ws();
        if !p.eat(',') {
            p.expect('}')?;
            break;
        }
    }
    p.skip_ws();
    if p.pos != text.len() {
        return Err((p.pos, "unexpected text after the header dict".into()));
    }
    let missing = |name: &str| (text.len(), format!("missing key '{name}'"));
    Ok((
        descr.ok_or_else(|| missing("descr"))?,
        fortran.ok_or_else(|| missing("fortran_order"))?,
        shape.ok_or_else(|| missing("shape"))?,
    ))
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.text[self.pos..].chars().next()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char) -> std::result::Result<(), ParseError> {
        self.skip_ws();
        if self.eat(c) {
            Ok(())
        } else {
            Err((
                self.pos,
                format!("expected '{c}', found {}", self.describe()),
            ))
        }
    }

    fn describe(&self) -> String {
        match self.peek() {
            Some(c) => format!("'{c}'"),
            None => "end of header".into(),
        }
    }

    fn string(&mut self) -> std::result::Result<String, ParseError> {
        let start = self.pos;
        let quote = match self.peek() {
            Some(q @ ('\'' | '"')) => q,
            _ => {
                return Err((
                    self.pos,
                    format!("expected a string, found {}", self.describe()),
                ))
            }
        };
        self.pos += 1;
        let rest = &self.text[self.pos..];
        let end = rest
            .find(quote)
            .ok_or_else(|| (start, "unterminated string".to_string()))?;
        self.pos += end + 1;
        Ok(rest[..end].to_string())
    }

    fn boolean(&mut self) -> std::result::Result<bool, ParseError> {
        let rest = &self.text[self.pos..];
        if rest.starts_with("True") {
            self.pos += 4;
            Ok(true)
        } else if rest.starts_with("False") {
            self.pos += 5;
            Ok(false)
        } else {
            Err((
                self.pos,
                format!("expected True or False, found {}", self.describe()),
            ))
        }
    }

    fn shape(&mut self) -> std::result::Result<Vec<usize>, ParseError> {
        self.expect('(')?;
        let mut dims = Vec::new();
        loop {
            self.skip_ws();
            if self.eat(')') {
                return Ok(dims);
            }
            let start = self.pos;
            let digits = self.text[start..]
                .bytes()
                .take_while(u8::is_ascii_digit)
                .count();
            // Python 2 era files may write long integers as `3L`.
            let dim = self.text[start..start + digits]
                .parse::<usize>()
                .map_err(|_| {
                    (
                        start,
                        format!("expected a dimension, found {}", self.describe()),
                    )
                })?;
            self.pos += digits;
            self.eat('L');
            dims.push(dim);
            self.skip_ws();
            if !self.eat(',') {
                self.expect(')')?;
                return Ok(dims);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_aligned_and_parses_back() {
        for shape in [
            vec![],
            vec![0],
            vec![3],
            vec![2, 3, 4],
            vec![usize::MAX / 16, 1],
        ] {
            let bytes = preamble("<f8", &shape);
            assert_eq!(bytes.len() % ALIGN, 0, "{shape:?}");
            assert_eq!(bytes[bytes.len() - 1], b'\n');
            let text = std::str::from_utf8(&bytes[10..]).unwrap();
            let (descr, fortran, parsed) = parse_header_dict(text.trim_end()).unwrap();
            assert_eq!((descr.as_str(), fortran, parsed), ("<f8", false, shape));
        }
    }

    #[test]
    fn long_header_switches_to_version_2() {
        // "1, " per dimension: 30,000 dimensions need a header beyond 65,535 bytes.
        let shape = vec![1usize; 30_000];
        let bytes = preamble("<f4", &shape);
        assert_eq!(bytes[6], 2);
        assert_eq!(bytes.len() % ALIGN, 0);
        let len = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
        assert_eq!(len + 12, bytes.len());
        let path = std::env::temp_dir().join(format!("benign-npy-v2-{}.npy", std::process::id()));
        write_npy(&path, &shape, &[1.5f32]).unwrap();
        let (read_shape, data) = read_npy::<f32>(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!((read_shape, data), (shape, vec![1.5]));
    }

    #[test]
    fn parser_accepts_numpy_variants_and_rejects_garbage() {
        let ok = [
            "{'descr': '<i8', 'fortran_order': False, 'shape': (2, 3)}",
            "{\"shape\": (5L,), \"descr\": \"|u1\", \"fortran_order\": True,}",
            "{ 'descr' : '<f4' , 'fortran_order' : False , 'shape' : ( ) , }",
        ];
        for text in ok {
            parse_header_dict(text).unwrap_or_else(|e| panic!("{text}: {e:?}"));
        }
        let bad = [
            (
                "{'descr': '<f8', 'fortran_order': False}",
                "missing key 'shape'",
            ),
            (
                "{'descr': '<f8', 'fortran_order': Flase, 'shape': ()}",
                "True or False",
            ),
            (
                "{'descr': '<f8', 'fortran_order': False, 'shape': (2, x)}",
                "dimension",
            ),
            (
                "{'descr': '<f8', 'fortran_order': False, 'shape': (), 'x': 1}",
                "unexpected key",
            ),
            (
                "{'descr': [('a', '<f8')], 'fortran_order': False, 'shape': ()}",
                "structured",
            ),
            ("{'descr': '<f8", "unterminated"),
            ("", "expected '{'"),
        ];
        for (text, needle) in bad {
            let (_, message) = parse_header_dict(text).unwrap_err();
            assert!(message.contains(needle), "{text}: {message}");
        }
    }
}
