//! Whether an elementwise or row-wise kernel writes its output with streaming (non-temporal)
//! stores.
//!
//! An ordinary store first brings the line it writes into the cache (a read for ownership), so
//! a kernel whose output goes out to memory moves every output byte twice: in, then back out.
//! A streaming store sends whole lines to memory through the write-combining buffers without
//! reading them, and leaves them out of the cache. That wins when the output would have left
//! the cache before anything reads it, and loses when its consumer would have found it there.
//!
//! The rule is a property of the call alone: a call streams when the bytes it reads and writes
//! together exceed the last-level cache. Past that point an LRU cache has already evicted the
//! output's first lines by the time the call ends, so a consumer reading the output from its
//! start misses in cache whichever store wrote it. Below it, ordinary stores keep the output
//! for its consumer.
//!
//! Values never depend on the choice: a streaming store writes the same bits, only the path to
//! memory differs. Vectors without a streaming store fall back to an ordinary one
//! ([`crate::simd::SimdVector::store_streaming`]).
//!
//! `BENIGN_STREAMING_STORES` (`auto`, `always` or `never`, read once) overrides the rule for the
//! whole process, and [`with_output_stores`] for calls made from one thread (tests, benchmarks).

use std::cell::Cell;
use std::sync::OnceLock;

/// How a kernel call writes its outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputStores {
    /// Ordinary stores: the output stays in cache for whatever reads it next.
    Cached,
    /// Streaming stores where the vectors have them (module documentation).
    Streaming,
}

/// Last-level cache assumed when the machine does not report one (not Linux, or no cache
/// information in sysfs): a common size for the L3 one core shares with its neighbours.
const FALLBACK_LAST_LEVEL_CACHE_BYTES: usize = 32 << 20;

/// The size in bytes of the largest cache of CPU 0, as Linux reports it
/// (`/sys/devices/system/cpu/cpu0/cache/index*/size`), or `None`.
fn reported_last_level_cache_bytes() -> Option<usize> {
    let caches = std::fs::read_dir("/sys/devices/system/cpu/cpu0/cache").ok()?;
    caches
        .filter_map(|entry| {
            let size = std::fs::read_to_string(entry.ok()?.path().join("size")).ok()?;
            parse_cache_size(size.trim())
        })
        .max()
}

/// Parses sysfs's cache sizes: `49152K`, `32M`, or plain bytes.
fn parse_cache_size(text: &str) -> Option<usize> {
    let (digits, unit) = match text.char_indices().last()? {
        (i, 'K') => (&text[..i], 1 << 10),
        (i, 'M') => (&text[..i], 1 << 20),
        (i, 'G') => (&text[..i], 1 << 30),
        _ => (text, 1),
    };
    digits.parse::<usize>().ok()?.checked_mul(unit)
}

/// The last-level cache size the rule compares with: the largest cache Linux reports for CPU 0,
/// else 32 MiB. Read once.
pub fn last_level_cache_bytes() -> usize {
    static BYTES: OnceLock<usize> = OnceLock::new();
    *BYTES.get_or_init(|| {
        reported_last_level_cache_bytes().unwrap_or(FALLBACK_LAST_LEVEL_CACHE_BYTES)
    })
}

/// The process-wide override from `BENIGN_STREAMING_STORES`: `None` for `auto` (the rule).
fn environment_override() -> Option<OutputStores> {
    static OVERRIDE: OnceLock<Option<OutputStores>> = OnceLock::new();
    *OVERRIDE.get_or_init(|| {
        let requested = std::env::var("BENIGN_STREAMING_STORES").unwrap_or_default();
        match requested.as_str() {
            "" | "auto" => None,
            "always" => Some(OutputStores::Streaming),
            "never" => Some(OutputStores::Cached),
            other => {
                eprintln!(
                    "warning: BENIGN_STREAMING_STORES={other:?} is not valid (valid: auto, \
                     always, never); using auto"
                );
                None
            }
        }
    })
}

thread_local! {
    /// A per-thread override, set by [`with_output_stores`].
    static THREAD_OVERRIDE: Cell<Option<OutputStores>> = const { Cell::new(None) };
}

/// Runs `f` with the kernel calls made *from this thread* writing their outputs as `stores`
/// says, whatever their size (the blocks they spread over rayon follow the caller's choice).
/// For tests and benchmarks of both paths in one process.
#[doc(hidden)]
pub fn with_output_stores<R>(stores: OutputStores, f: impl FnOnce() -> R) -> R {
    let previous = THREAD_OVERRIDE.with(|cell| cell.replace(Some(stores)));
    let result = f();
    THREAD_OVERRIDE.with(|cell| cell.set(previous));
    result
}

/// Where streaming stores of `lanes`-element vectors can begin in `out`: the index of its first
/// element aligned to the vector's size (the streaming store's requirement), or `out.len()`
/// when there is none.
pub(crate) fn first_aligned<T>(out: &[T], lanes: usize) -> usize {
    out.as_ptr()
        .align_offset(lanes * std::mem::size_of::<T>())
        .min(out.len())
}

/// How a call that reads and writes `bytes_touched` bytes in all writes its outputs (module
/// documentation). Read on the calling thread and passed to the blocks threads run.
pub(crate) fn output_stores(bytes_touched: usize) -> OutputStores {
    THREAD_OVERRIDE
        .with(Cell::get)
        .or_else(environment_override)
        .unwrap_or(if bytes_touched > last_level_cache_bytes() {
            OutputStores::Streaming
        } else {
            OutputStores::Cached
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_sizes_parse_as_sysfs_writes_them() {
        assert_eq!(parse_cache_size("49152K"), Some(48 << 20));
        assert_eq!(parse_cache_size("32M"), Some(32 << 20));
        assert_eq!(parse_cache_size("1G"), Some(1 << 30));
        assert_eq!(parse_cache_size("65536"), Some(65536));
        assert_eq!(parse_cache_size("K"), None);
        assert_eq!(parse_cache_size("12X"), None);
        assert_eq!(parse_cache_size(""), None);
    }

    #[test]
    fn calls_past_the_last_level_cache_stream_unless_overridden() {
        let llc = last_level_cache_bytes();
        assert!(llc > 0);
        if environment_override().is_none() {
            assert_eq!(output_stores(llc), OutputStores::Cached);
            assert_eq!(output_stores(llc + 1), OutputStores::Streaming);
        }
        with_output_stores(OutputStores::Cached, || {
            assert_eq!(output_stores(usize::MAX), OutputStores::Cached);
            with_output_stores(OutputStores::Streaming, || {
                assert_eq!(output_stores(0), OutputStores::Streaming)
            });
            assert_eq!(output_stores(usize::MAX), OutputStores::Cached);
        });
    }
}
