//! The options every long command takes, declared once and flattened into each: `--threads`
//! (one meaning everywhere: a count in 1..=1024, every core when not given), `--json` and the
//! progress options (`--quiet`, `--log-every`, `--log-format`), with the one helper that builds
//! the thread pool, the one that starts the progress report and the one that lays a given option
//! over a default.

use std::num::NonZeroUsize;

use clap::Args;

use benign::cpu::{all_cores, MAX_THREADS};

use super::progress::{LogArgs, Reporter};

/// `--threads`, `--json` and the progress options, flattened into `run`, `sweep`, `boundary`,
/// `pretrain` and `finetune`.
#[derive(Args, Clone, Debug)]
pub struct CommonArgs {
    #[command(flatten)]
    pub threads: ThreadsArg,
    /// Print the result on stdout as JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub log: LogArgs,
}

impl CommonArgs {
    /// The thread pool the command runs in (`--threads`, else every core).
    pub fn pool(&self) -> anyhow::Result<rayon::ThreadPool> {
        self.threads.pool()
    }

    /// Starts the progress report of `command`, counted in `unit`s; `phases`: whether the
    /// library's phase messages are shown (see [`Reporter::start`]).
    pub fn reporter(&self, command: &'static str, unit: &'static str, phases: bool) -> Reporter {
        Reporter::start(&self.log, command, unit, phases)
    }
}

/// `--threads N`: part of [`CommonArgs`], and alone in `bench` (which has no progress to report).
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

/// Overrides `target` with an option's value when the option was given: how every command
/// lays its options over the defaults.
pub fn set_if_given<T>(target: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *target = value;
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
