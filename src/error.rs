//! Errors that the library reports to its callers (and the CLI maps to exit statuses).

use std::path::PathBuf;

/// The library's error type.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is outside its valid range. The CLI exits with status 2 for it.
    #[error("invalid value for `{field}`: {message}")]
    InvalidOption {
        /// The option or setting, as the CLI spells it (e.g. `snr-range`).
        field: String,
        /// What is wrong and the valid range.
        message: String,
    },
    /// A computation produced NaN or infinity.
    #[error("non-finite value at step {step}: {quantity} = {value}")]
    NonFinite {
        /// The training step (0 = before the first update) at which it appeared.
        step: usize,
        /// What went non-finite (e.g. `loss`).
        quantity: String,
        /// The value: NaN or an infinity.
        value: f64,
    },
    /// A memory request that cannot be satisfied, refused before allocating.
    #[error("refusing to allocate {needed_bytes} bytes for {what}: {hint}")]
    OutOfMemory {
        /// What the memory was for.
        what: String,
        /// Bytes the request needs (u128: a product of sizes may overflow u64).
        needed_bytes: u128,
        /// How to make the request smaller.
        hint: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A file's content is malformed.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is malformed, and where in the file when known.
        message: String,
    },
}

impl Error {
    /// Shorthand for [`Error::InvalidOption`].
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidOption {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Shorthand for [`Error::Io`] on `path`.
    pub fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Shorthand for [`Error::Format`] of the file at `path`.
    pub fn format(path: &std::path::Path, message: impl Into<String>) -> Self {
        Error::Format {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }

    /// The process exit status the CLI uses for this error: 2 for bad input, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::InvalidOption { .. } => 2,
            _ => 1,
        }
    }
}

/// Result with the library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
