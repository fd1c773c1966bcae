//! Times `benign_kernels::gemm` on one shape and prints the seconds of every call as one line
//! of JSON, for `scripts/compare_openblas.py` (which times OpenBLAS on the same shape in
//! interleaved rounds and reduces the figures):
//!
//! ```text
//! cargo run --release -p benign-kernels --example gemm_rate -- MxNxK[-TT] f32|f64 CALLS
//! cargo run --release -p benign-kernels --example gemm_rate -- peak
//! ```
//!
//! `MxNxK-TT` as in `direct_probe` (`3200x64x192-NT` is `C = A B^T`, `64x64x3200-TN` is
//! `C = A^T B`, operands stored contiguously, the transposed one as its transpose). One warm-up
//! call, then CALLS timed calls of `C <- A B` (`alpha` 1, `beta` 0). Runs on rayon's global
//! pool, so `RAYON_NUM_THREADS=N` sets the thread count (the line records it), as for
//! `rowwise_bench`. `peak` prints the FMA peak per core of the vector width the GEMM kernel of
//! this process runs (`benign_kernels::probe::gemm_fma_peak_gflops`), f32 and f64, the ceiling
//! *of peak* figures are judged against.

use std::hint::black_box;
use std::time::{Duration, Instant};

use benign_kernels::gemm::kernel_variant;
use benign_kernels::probe::gemm_fma_peak_gflops;
use benign_kernels::Float;

#[path = "common/gemm_case.rs"]
mod gemm_case;
use gemm_case::GemmCase;

/// How long each FMA probe runs (the probe reports the best of its repetitions within it).
const PEAK_PROBE: Duration = Duration::from_secs(1);

fn time_calls<T: Float>(case: &GemmCase, calls: usize) -> Vec<f64> {
    let (a, b) = case.operands::<T>();
    let mut c = vec![T::ZERO; case.m * case.n];
    // The warm-up call faults in C's pages and the packing buffers, and starts the pool.
    case.run(T::ONE, &a, &b, T::ZERO, &mut c);
    (0..calls)
        .map(|_| {
            let start = Instant::now();
            case.run(T::ONE, black_box(&a), black_box(&b), T::ZERO, &mut c);
            black_box(&mut c);
            start.elapsed().as_secs_f64()
        })
        .collect()
}

fn usage() -> ! {
    eprintln!("usage: gemm_rate MxNxK[-TT] f32|f64 CALLS | gemm_rate peak");
    std::process::exit(2);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let kernel = kernel_variant().name();
    if let [only] = args.as_slice() {
        if only != "peak" {
            usage();
        }
        println!(
            "{{\"gemm_kernel\": \"{kernel}\", \"fma_peak_f32_gflops_per_core\": {:.3}, \
             \"fma_peak_f64_gflops_per_core\": {:.3}}}",
            gemm_fma_peak_gflops(kernel_variant(), true, PEAK_PROBE),
            gemm_fma_peak_gflops(kernel_variant(), false, PEAK_PROBE),
        );
        return;
    }
    let [spec, dtype, calls] = args.as_slice() else {
        usage();
    };
    let case = GemmCase::parse(spec).unwrap_or_else(|message| {
        eprintln!("gemm_rate: {message}");
        usage()
    });
    let calls: usize = match calls.parse() {
        Ok(calls) if calls > 0 => calls,
        _ => usage(),
    };
    let seconds = match dtype.as_str() {
        "f32" => time_calls::<f32>(&case, calls),
        "f64" => time_calls::<f64>(&case, calls),
        _ => usage(),
    };
    let seconds: Vec<String> = seconds.iter().map(|s| format!("{s:e}")).collect();
    let transposes = spec.split_once('-').map_or("NN", |(_, t)| t);
    println!(
        "{{\"m\": {}, \"n\": {}, \"k\": {}, \"transposes\": \"{transposes}\", \"dtype\": \
         \"{dtype}\", \"threads\": {}, \"gemm_kernel\": \"{kernel}\", \"seconds\": [{}]}}",
        case.m,
        case.n,
        case.k,
        rayon::current_num_threads(),
        seconds.join(", ")
    );
}
