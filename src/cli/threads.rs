//! `--threads`: one definition for every command that takes it.

use std::num::NonZeroUsize;

use clap::Args;

use benign::cpu::{all_cores, MAX_THREADS};

/// `--threads N`, flattened into every command that runs in a thread pool.
#[derive(Args, Clone, Copy, Debug, Default)]
pub struct ThreadsArg {
    /// Threads to run on, 1..=1024 [default: all cores].
    #[arg(
        long = "threads",
        value_name = "N",
        value_parser = parse_threads,
        allow_negative_numbers = true
    )]
    pub threads: Option<NonZeroUsize>,
}

/// Parses `--threads`: a whole number in `1..=MAX_THREADS` (clap names the option in its error).
fn parse_threads(text: &str) -> Result<NonZeroUsize, String> {
    let range = format!("1..={MAX_THREADS}");
    let n: i128 = text
        .trim()
        .parse()
        .map_err(|_| format!("expected a whole number in {range}"))?;
    usize::try_from(n)
        .ok()
        .filter(|&n| n <= MAX_THREADS)
        .and_then(NonZeroUsize::new)
        .ok_or_else(|| format!("must be in {range}, got {n}"))
}

impl ThreadsArg {
    /// The number of threads: the one given, else every core.
    pub fn count(&self) -> usize {
        self.threads.map_or_else(all_cores, NonZeroUsize::get)
    }

    /// `count()` as the library's optional thread count (`None`: its own default, every core).
    pub fn given(&self) -> Option<usize> {
        self.threads.map(NonZeroUsize::get)
    }

    /// A rayon pool of `count()` threads.
    pub fn pool(&self) -> anyhow::Result<rayon::ThreadPool> {
        let threads = self.count();
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| anyhow::anyhow!("cannot start a pool of {threads} threads: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_are_whole_numbers_in_range() {
        assert_eq!(parse_threads("1").unwrap().get(), 1);
        assert_eq!(parse_threads("1024").unwrap().get(), 1024);
        for bad in [
            "0",
            "1025",
            "100000",
            "-3",
            "99999999999999999999999",
            "two",
            "",
        ] {
            let err = parse_threads(bad).unwrap_err();
            assert!(err.contains("1..=1024"), "{bad}: {err}");
        }
        assert_eq!(ThreadsArg::default().count(), all_cores());
    }
}
