//! What the CPU supports, whether it supports what this binary was compiled for, and how many
//! threads a computation may ask for.

use crate::{Error, Result};

/// Most threads any entry point accepts (`--threads`, [`crate::bench::BenchOptions::threads`],
/// `sweep::ExecOptions::threads`): a guard against typos such as `--threads 100000`, which
/// would start that many OS threads. Above every machine this code targets.
pub const MAX_THREADS: usize = 1024;

/// Every core this process may run on (its affinity mask and cgroup quota, as reported by
/// [`std::thread::available_parallelism`]), at most [`MAX_THREADS`].
pub fn all_cores() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_THREADS)
}

/// `threads` if it is in `1..=MAX_THREADS`, else [`Error::InvalidOption`] for `threads`.
pub fn check_threads(threads: usize) -> Result<usize> {
    if (1..=MAX_THREADS).contains(&threads) {
        Ok(threads)
    } else {
        Err(Error::invalid(
            "threads",
            format!("must be in 1..={MAX_THREADS}, got {threads}"),
        ))
    }
}

/// SIMD features the binary was compiled to use (from `-C target-cpu` / `target-feature`).
pub fn compiled_features() -> Vec<&'static str> {
    // `cfg!` takes the feature as a literal, not a runtime string: each name with its test.
    macro_rules! compiled {
        ($($feature:literal),*) => {
            [$((cfg!(target_feature = $feature), $feature)),*]
        };
    }
    compiled!("sse4.2", "avx", "avx2", "fma", "avx512f", "neon")
        .into_iter()
        .filter_map(|(compiled, name)| compiled.then_some(name))
        .collect()
}

/// Whether the running CPU supports `feature` (always true on non-x86 targets for the features
/// the target itself guarantees).
pub fn cpu_supports(feature: &str) -> bool {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        match feature {
            "sse4.2" => std::arch::is_x86_feature_detected!("sse4.2"),
            "avx" => std::arch::is_x86_feature_detected!("avx"),
            "avx2" => std::arch::is_x86_feature_detected!("avx2"),
            "fma" => std::arch::is_x86_feature_detected!("fma"),
            "avx512f" => std::arch::is_x86_feature_detected!("avx512f"),
            _ => false,
        }
    }
    #[cfg(not(any(target_arch = "x86", target_arch = "x86_64")))]
    {
        let _ = feature;
        true
    }
}

/// SIMD features of the running CPU that are relevant to the kernels.
pub fn detected_features() -> Vec<&'static str> {
    ["sse4.2", "avx", "avx2", "fma", "avx512f", "neon"]
        .into_iter()
        .filter(|f| cpu_supports(f))
        .collect()
}

/// Checks that the CPU supports every feature the binary was compiled for. On failure returns a
/// message that says what is missing and how to rebuild for this CPU.
pub fn check_compiled_features() -> Result<(), String> {
    let missing: Vec<&str> = compiled_features()
        .into_iter()
        .filter(|f| !cpu_supports(f))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "this binary was compiled for CPU features this processor lacks: {}.\n\
             Rebuild for this machine with\n    \
             RUSTFLAGS=\"-C target-cpu=native\" cargo build --release\n\
             or, for any x86-64 CPU,\n    \
             RUSTFLAGS=\"-C target-cpu=x86-64\" cargo build --release\n\
             (the default x86-64-v3 target is set in .cargo/config.toml)",
            missing.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_counts_are_bounded() {
        assert_eq!(check_threads(1).unwrap(), 1);
        assert_eq!(check_threads(MAX_THREADS).unwrap(), MAX_THREADS);
        for bad in [0, MAX_THREADS + 1, 100_000] {
            let err = check_threads(bad).unwrap_err();
            assert_eq!(err.exit_code(), 2);
            assert!(err.to_string().contains("1..=1024"), "{err}");
        }
        assert!((1..=MAX_THREADS).contains(&all_cores()));
    }
}
