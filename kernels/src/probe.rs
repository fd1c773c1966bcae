//! Machine probes: what this CPU can do at best, to judge the kernels against.
//!
//! - [`fma_peak_gflops_f32`] / [`fma_peak_gflops_f64`]: the fused multiply-add throughput of
//!   one core with 256-bit vectors (`wide::f32x8` / `f64x4`, i.e. AVX2+FMA when built for
//!   x86-64-v3), the width of the portable kernels.
//! - [`fma_peak_gflops_f32_avx512`] / [`fma_peak_gflops_f64_avx512`]: the same with 512-bit
//!   AVX-512 vectors, on CPUs that have them (`None` elsewhere). The GEMM runs 512-bit kernels
//!   there, so this is its ceiling; on Ice Lake-SP, with two 512-bit FMA ports, it is about
//!   1.7 times the 256-bit figure.
//! - [`gemm_fma_peak_gflops`]: the one of the two a GEMM call of this process is bounded by
//!   (the width of [`crate::gemm::kernel_variant`]). A GEMM cannot beat it per core.
//! - [`triad_bandwidth_gbps`]: main-memory bandwidth measured with the STREAM triad
//!   `a[i] = b[i] + s c[i]`. A memory-bound kernel (GEMV, GER, row-wise ops on large inputs)
//!   cannot beat this.
//!
//! The baseline the GEMM is compared with, `matrixmultiply`, is in [`crate::baseline`] (behind
//! the `baseline` feature, so that the kernels do not depend on it).
//!
//! Every probe reports the best of a few repetitions: interference from other processes only
//! ever makes a repetition slower, so the best one is the closest to what the machine can do.

use std::hint::black_box;
use std::time::{Duration, Instant};

use rayon::prelude::*;
use wide::{f32x8, f64x4};

/// How many timed repetitions each probe runs (the best one is reported).
const REPETITIONS: u32 = 3;

/// Independent accumulator chains in the FMA probe. An FMA has a latency of 4 cycles and two
/// ports issue one each per cycle, so at least 8 chains must be in flight to saturate them; 12
/// leaves slack for the loop overhead and for cores with a latency of 5 or 6, and still fits in
/// the 16 ymm registers together with the two operands.
const FMA_CHAINS: usize = 12;

/// FMA steps per chain between two looks at the clock (each look costs ~25 ns; 4096 steps of
/// 12 chains take ~20 us on a 3 GHz core, so the clock is < 0.2 % of the time).
const FMA_STEPS_PER_BATCH: usize = 4096;

macro_rules! fma_probe {
    ($name:ident, $vector:ty, $scalar:ty, $lanes:expr) => {
        /// Best-of-repetitions FMA throughput of the calling thread, in GFLOP/s (one FMA on
        #[doc = concat!("`", stringify!($vector), "` counts ", stringify!($lanes), " x 2 flops).")]
        ///
        /// Runs `FMA_CHAINS` independent chains `acc <- acc * m + a` for about `duration`
        /// in total (split over the repetitions). With `m` just below 1 every chain converges
        /// to `a / (1 - m)`, so values stay normal (no denormal slow path, no overflow).
        pub fn $name(duration: Duration) -> f64 {
            let per_repetition = duration / REPETITIONS;
            let mut best: f64 = 0.0;
            for _ in 0..REPETITIONS {
                // black_box: the compiler must not know the operands (it would fold the chains).
                let m = <$vector>::splat(black_box(0.999_999 as $scalar));
                let a = <$vector>::splat(black_box(1.0e-6 as $scalar));
                let mut acc = [<$vector>::splat(black_box(1.0 as $scalar)); FMA_CHAINS];
                let start = Instant::now();
                let mut batches: u64 = 0;
                loop {
                    for _ in 0..FMA_STEPS_PER_BATCH {
                        // Unrolled by the compiler over the fixed-size array: 12 independent
                        // vfmadd instructions per step.
                        for chain in acc.iter_mut() {
                            *chain = chain.mul_add(m, a);
                        }
                    }
                    batches += 1;
                    if start.elapsed() >= per_repetition {
                        break;
                    }
                }
                let seconds = start.elapsed().as_secs_f64();
                black_box(&acc);
                let fmas = batches as f64 * (FMA_STEPS_PER_BATCH * FMA_CHAINS) as f64;
                best = best.max(fmas * ($lanes as f64) * 2.0 / seconds / 1e9);
            }
            best
        }
    };
}

fma_probe!(fma_peak_gflops_f32, f32x8, f32, 8);
fma_probe!(fma_peak_gflops_f64, f64x4, f64, 4);

/// Independent accumulator chains in the AVX-512 FMA probe: two 512-bit FMA ports with a
/// latency of 4 cycles need 8 in flight; 16 leave the same slack as [`FMA_CHAINS`] and fit in
/// the 32 zmm registers with the two operands.
#[cfg(target_arch = "x86_64")]
const FMA_CHAINS_AVX512: usize = 16;

#[cfg(target_arch = "x86_64")]
macro_rules! fma_probe_avx512 {
    (
        $name:ident, $batch:ident, $scalar:ty, $lanes:expr,
        $set1:ident, $fmadd:ident, $add:ident, $reduce:ident
    ) => {
        /// Best-of-repetitions FMA throughput of the calling thread with 512-bit AVX-512
        #[doc = concat!("vectors, in GFLOP/s (one FMA counts ", stringify!($lanes), " x 2 flops), or `None` when")]
        /// the CPU lacks `avx512f` (or is not x86-64). Same chains and timing as the 256-bit
        /// probe, `FMA_CHAINS_AVX512` of them.
        pub fn $name(duration: Duration) -> Option<f64> {
            if !crate::gemm::KernelVariant::Avx512.is_available() {
                return None;
            }
            let per_repetition = duration / REPETITIONS;
            let mut best: f64 = 0.0;
            for _ in 0..REPETITIONS {
                let start = Instant::now();
                let mut batches: u64 = 0;
                let mut checksum = 0.0;
                loop {
                    // black_box: the compiler must not know the operands (it would fold the
                    // chains).
                    // SAFETY: the CPU has avx512f (checked above), the only requirement of
                    // the batch.
                    checksum += unsafe {
                        $batch(
                            black_box(0.999_999),
                            black_box(1.0e-6),
                            black_box(1.0),
                        )
                    };
                    batches += 1;
                    if start.elapsed() >= per_repetition {
                        break;
                    }
                }
                let seconds = start.elapsed().as_secs_f64();
                black_box(checksum);
                let fmas = batches as f64 * (FMA_STEPS_PER_BATCH * FMA_CHAINS_AVX512) as f64;
                best = best.max(fmas * ($lanes as f64) * 2.0 / seconds / 1e9);
            }
            Some(best)
        }

        /// One batch of the probe: [`FMA_STEPS_PER_BATCH`] steps of `acc <- acc * m + a` on
        /// [`FMA_CHAINS_AVX512`] zmm chains starting at `start`, summed at the end (so that
        /// the work cannot be discarded).
        ///
        /// # Safety
        ///
        /// The CPU has avx512f.
        #[target_feature(enable = "avx512f")]
        unsafe fn $batch(m: $scalar, a: $scalar, start: $scalar) -> $scalar {
            use std::arch::x86_64::{$add, $fmadd, $reduce, $set1};
            let (m, a) = ($set1(m), $set1(a));
            let mut acc = [$set1(start); FMA_CHAINS_AVX512];
            for _ in 0..FMA_STEPS_PER_BATCH {
                // unrolled over the fixed-size array: 16 independent vfmadd per step
                for chain in acc.iter_mut() {
                    *chain = $fmadd(*chain, m, a);
                }
            }
            // a plain loop, no closure: a closure does not get the target feature, is not
            // inlined, and its reference to `acc` would keep the chains in memory
            let mut total = $set1(0.0);
            for chain in acc {
                total = $add(total, chain);
            }
            $reduce(total)
        }
    };
}

#[cfg(target_arch = "x86_64")]
fma_probe_avx512!(
    fma_peak_gflops_f32_avx512,
    fma_batch_f32_avx512,
    f32,
    16,
    _mm512_set1_ps,
    _mm512_fmadd_ps,
    _mm512_add_ps,
    _mm512_reduce_add_ps
);
#[cfg(target_arch = "x86_64")]
fma_probe_avx512!(
    fma_peak_gflops_f64_avx512,
    fma_batch_f64_avx512,
    f64,
    8,
    _mm512_set1_pd,
    _mm512_fmadd_pd,
    _mm512_add_pd,
    _mm512_reduce_add_pd
);

/// 512-bit FMA throughput: not available off x86-64.
#[cfg(not(target_arch = "x86_64"))]
pub fn fma_peak_gflops_f32_avx512(_duration: Duration) -> Option<f64> {
    None
}

/// 512-bit FMA throughput: not available off x86-64.
#[cfg(not(target_arch = "x86_64"))]
pub fn fma_peak_gflops_f64_avx512(_duration: Duration) -> Option<f64> {
    None
}

/// The FMA peak of one core (GFLOP/s, `f32` when `is_f32`, else `f64`) with the vector width
/// of `variant`'s GEMM microkernels: 512-bit for [`KernelVariant::Avx512`], 256-bit for
/// [`KernelVariant::Portable`]. Pass [`crate::gemm::kernel_variant`] for the ceiling of the GEMM
/// calls of this process.
///
/// [`KernelVariant::Avx512`]: crate::gemm::KernelVariant::Avx512
/// [`KernelVariant::Portable`]: crate::gemm::KernelVariant::Portable
pub fn gemm_fma_peak_gflops(
    variant: crate::gemm::KernelVariant,
    is_f32: bool,
    duration: Duration,
) -> f64 {
    let avx512 = match (variant, is_f32) {
        (crate::gemm::KernelVariant::Portable, _) => None,
        (crate::gemm::KernelVariant::Avx512, true) => fma_peak_gflops_f32_avx512(duration),
        (crate::gemm::KernelVariant::Avx512, false) => fma_peak_gflops_f64_avx512(duration),
    };
    avx512.unwrap_or_else(|| {
        if is_f32 {
            fma_peak_gflops_f32(duration)
        } else {
            fma_peak_gflops_f64(duration)
        }
    })
}

/// Elements per parallel chunk of the triad (fixed, so the split does not depend on the pool).
const TRIAD_CHUNK: usize = 1 << 16;

/// STREAM triad bandwidth `a[i] = b[i] + s c[i]` over three `f64` arrays of `bytes_per_array`
/// bytes each, in GB/s (10^9 bytes per second), best of a few repetitions taking about
/// `duration` in total (at least one repetition each).
///
/// Byte count follows the STREAM convention: 3 arrays moved, 24 bytes per element (read `b`,
/// read `c`, write `a`); the extra read of `a` caused by write-allocate is *not* counted, so
/// the hardware moves up to 4/3 of the reported figure. Use arrays several times larger than
/// the last-level cache (e.g. 128 MB each for a 48 MB L3) or the figure measures the cache.
///
/// Runs on the current rayon pool: with more than one thread the arrays are split into chunks
/// of fixed size, and the arrays are first written by the same split so pages are spread as
/// they will be used.
pub fn triad_bandwidth_gbps(bytes_per_array: usize, duration: Duration) -> f64 {
    let len = (bytes_per_array / std::mem::size_of::<f64>()).max(1);
    let parallel = rayon::current_num_threads() > 1;
    let fill = |v: &mut [f64], value: f64| {
        if parallel {
            v.par_chunks_mut(TRIAD_CHUNK).for_each(|c| c.fill(value));
        } else {
            v.fill(value);
        }
    };
    let mut a = vec![0.0f64; len];
    let mut b = vec![0.0f64; len];
    let mut c = vec![0.0f64; len];
    fill(&mut a, 0.0);
    fill(&mut b, 1.0);
    fill(&mut c, 2.0);
    let s = black_box(3.0f64);

    let triad = |a: &mut [f64], b: &[f64], c: &[f64]| {
        if parallel {
            a.par_chunks_mut(TRIAD_CHUNK)
                .zip(b.par_chunks(TRIAD_CHUNK))
                .zip(c.par_chunks(TRIAD_CHUNK))
                .for_each(|((a, b), c)| triad_chunk(a, b, c, s));
        } else {
            triad_chunk(a, b, c, s);
        }
    };

    // One untimed pass: faults the pages of `a` in and warms the TLB.
    triad(&mut a, &b, &c);
    let per_repetition = duration / REPETITIONS;
    let mut best: f64 = 0.0;
    for _ in 0..REPETITIONS {
        let start = Instant::now();
        let mut passes: u64 = 0;
        loop {
            triad(black_box(&mut a), black_box(&b), black_box(&c));
            passes += 1;
            if start.elapsed() >= per_repetition {
                break;
            }
        }
        let seconds = start.elapsed().as_secs_f64();
        let bytes = passes as f64 * (3 * len * std::mem::size_of::<f64>()) as f64;
        best = best.max(bytes / seconds / 1e9);
    }
    black_box(&a);
    best
}

/// `a[i] = b[i] + s c[i]` on one chunk (auto-vectorised: the loop is a plain zip).
#[inline]
fn triad_chunk(a: &mut [f64], b: &[f64], c: &[f64], s: f64) {
    for ((a, &b), &c) in a.iter_mut().zip(b).zip(c) {
        *a = s.mul_add(c, b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fma_peak_is_plausible() {
        for peak in [
            fma_peak_gflops_f32(Duration::from_millis(60)),
            fma_peak_gflops_f64(Duration::from_millis(60)),
        ] {
            assert!(peak.is_finite(), "peak {peak}");
            assert!((1.0..10_000.0).contains(&peak), "peak {peak} GFLOP/s");
        }
    }

    #[test]
    fn f32_peak_is_about_twice_f64_peak() {
        // Same instruction count per second, twice the lanes: a probe that is not FMA-bound
        // (e.g. folded or latency-bound) would not show the 2x.
        // Other tests run on the same two cores at the same time and can steal either
        // measurement, so the ratio is taken over the best of alternating attempts (on a
        // loaded machine one dtype can miss its quiet slots for a few attempts in a row: up
        // to 20, stopping at the first plausible ratio).
        let (mut f32_peak, mut f64_peak) = (0.0f64, 0.0f64);
        for _ in 0..20 {
            f32_peak = f32_peak.max(fma_peak_gflops_f32(Duration::from_millis(60)));
            f64_peak = f64_peak.max(fma_peak_gflops_f64(Duration::from_millis(60)));
            if (1.3..3.0).contains(&(f32_peak / f64_peak)) {
                return;
            }
        }
        panic!("f32 {f32_peak} / f64 {f64_peak} = {}", f32_peak / f64_peak);
    }

    #[test]
    fn avx512_peak_is_plausible_and_wider_than_avx2() {
        let (Some(f32_peak), Some(f64_peak)) = (
            fma_peak_gflops_f32_avx512(Duration::from_millis(60)),
            fma_peak_gflops_f64_avx512(Duration::from_millis(60)),
        ) else {
            assert!(!crate::gemm::KernelVariant::Avx512.is_available());
            eprintln!("no avx512f on this CPU: the 512-bit probe reports None");
            return;
        };
        for peak in [f32_peak, f64_peak] {
            assert!(
                peak.is_finite() && (1.0..10_000.0).contains(&peak),
                "{peak} GFLOP/s"
            );
        }
        // Twice the lanes of the 256-bit probe: with one 512-bit FMA port (some Xeons) the
        // ratio is about 1, with two about 2. A probe that were folded away would show far
        // more, one that were latency-bound far less. As above, the best of a few alternating
        // attempts, since the other tests share the cores.
        let (mut wide, mut narrow, mut f32_best, mut f64_best) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
        for _ in 0..20 {
            wide = wide.max(fma_peak_gflops_f32_avx512(Duration::from_millis(60)).unwrap());
            narrow = narrow.max(fma_peak_gflops_f32(Duration::from_millis(60)));
            f32_best = f32_best.max(wide);
            f64_best = f64_best.max(fma_peak_gflops_f64_avx512(Duration::from_millis(60)).unwrap());
            if (0.8..2.5).contains(&(wide / narrow)) && (1.3..3.0).contains(&(f32_best / f64_best))
            {
                return;
            }
        }
        panic!(
            "512-bit / 256-bit f32 = {wide} / {narrow}; 512-bit f32 / f64 = {f32_best} / {f64_best}"
        );
    }

    #[test]
    fn gemm_peak_follows_the_kernel_width() {
        use crate::gemm::KernelVariant;
        let avx2 = gemm_fma_peak_gflops(KernelVariant::Portable, true, Duration::from_millis(30));
        assert!(avx2.is_finite() && avx2 > 0.0);
        // Without AVX-512 the 512-bit request falls back to the 256-bit probe (never panics).
        let avx512 = gemm_fma_peak_gflops(KernelVariant::Avx512, false, Duration::from_millis(30));
        assert!(avx512.is_finite() && avx512 > 0.0);
    }

    #[test]
    fn triad_bandwidth_is_plausible() {
        let gbps = triad_bandwidth_gbps(16 << 20, Duration::from_millis(60));
        assert!(
            gbps.is_finite() && gbps > 0.1 && gbps < 10_000.0,
            "{gbps} GB/s"
        );
        // Also on a 2-thread pool (exercises the chunked path).
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let gbps = pool.install(|| triad_bandwidth_gbps(16 << 20, Duration::from_millis(60)));
        assert!(
            gbps.is_finite() && gbps > 0.1 && gbps < 10_000.0,
            "{gbps} GB/s"
        );
    }

    #[test]
    fn triad_counts_tiny_arrays() {
        // Smaller than one element: still one element per array, finite result.
        let gbps = triad_bandwidth_gbps(1, Duration::from_millis(3));
        assert!(gbps.is_finite() && gbps > 0.0);
    }
}
