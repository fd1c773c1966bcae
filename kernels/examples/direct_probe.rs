//! Interleaved timing of the packed and direct GEMM paths (and `matrixmultiply`) on the shapes
//! given as arguments `MxNxK-TT` (e.g. `50x50x16-NT`): each round runs every variant once, and
//! the best time per variant over the rounds is reported, so load from other processes on a
//! shared machine hits all variants alike. `cargo run --release -p benign-kernels --example
//! direct_probe -- 50x50x16-NT 20x2000x2000-NT`.
//!
//! `THREADS=N` (default 1) runs every side on N threads: ours in a rayon pool of N, and
//! `matrixmultiply` (which ignores rayon and starts its own threads) with `MATMUL_NUM_THREADS`
//! set to N unless it is already set; `matrixmultiply` caps itself at 4. The line printed per
//! shape names both thread counts.

use std::hint::black_box;
use std::time::{Duration, Instant};

use benign_kernels::baseline::matrixmultiply_gemm;
use benign_kernels::gemm::{with_gemm_path, GemmPath};
use benign_kernels::MatMut;

#[path = "common/gemm_case.rs"]
mod gemm_case;
use gemm_case::GemmCase;

fn main() {
    let threads: usize = std::env::var("THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(1);
    // matrixmultiply reads the variable once, at its first call: set it before any.
    let matmul_threads: usize = match std::env::var("MATMUL_NUM_THREADS") {
        Ok(value) if !value.is_empty() => value.parse().unwrap_or(1),
        _ => {
            std::env::set_var("MATMUL_NUM_THREADS", threads.to_string());
            threads
        }
    }
    .clamp(1, 4);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    for spec in std::env::args().skip(1) {
        let case = GemmCase::parse(&spec).unwrap_or_else(|message| panic!("{message}"));
        let (m, n, k) = (case.m, case.n, case.k);
        let (a, b) = case.operands::<f32>();
        let mut c = vec![0.0f32; m * n];
        let reps = (20_000_000 / (m * n * k).max(1)).clamp(1, 10_000);
        let mut best = [Duration::MAX; 3];
        pool.install(|| {
            for _round in 0..15 {
                for (v, slot) in best.iter_mut().enumerate() {
                    let start = Instant::now();
                    for _ in 0..reps {
                        match v {
                            0 | 1 => {
                                let path = if v == 0 {
                                    GemmPath::Packed
                                } else {
                                    GemmPath::Direct
                                };
                                with_gemm_path(path, || {
                                    case.run(1.0, black_box(&a), black_box(&b), 0.0, &mut c)
                                })
                            }
                            _ => {
                                let (a, b) = case.views(black_box(&a), black_box(&b));
                                matrixmultiply_gemm(a, b, MatMut::new(&mut c, m, n))
                            }
                        }
                    }
                    *slot = (*slot).min(start.elapsed() / reps as u32);
                }
            }
        });
        let gf = |d: Duration| 2.0 * (m * n * k) as f64 / d.as_secs_f64() / 1e9;
        println!(
            "{spec:>20} {threads}t (mm {matmul_threads}t)  packed {:>10.2?} ({:5.1} GF/s)  direct {:>10.2?} ({:5.1} GF/s)  mm {:>10.2?}  packed/direct {:.2}x  mm/direct {:.2}x",
            best[0], gf(best[0]), best[1], gf(best[1]), best[2],
            best[0].as_secs_f64() / best[1].as_secs_f64(),
            best[2].as_secs_f64() / best[1].as_secs_f64()
        );
    }
}
