//! Back-to-back timing of `gemm` with a transposed operand against the same product untransposed.
//!
//! For each shape `m x n x k` and element type it times `C <- op(A) op(B)` with
//! `(No, No)`, `(No, Yes)` and `(Yes, No)`, interleaved round by round in a 1-thread rayon pool
//! (other processes share the machine: interleaving keeps the ratios fair), and prints the
//! median time of each and the ratio to `(No, No)`. Times are the pool thread's CPU time from
//! `/proc/thread-self/schedstat` where Linux provides it (time spent descheduled by a loaded
//! machine is left out), wall-clock time otherwise; since the kernel may account CPU time in
//! scheduler ticks, each sample runs the product enough times for about 2 G multiply-adds.
//!
//! Run: `cargo run --release -p benign-kernels --example gemm_transpose_timing [rounds] [small]`
//! (`small`: skip the 2000 x 2000 x 2000 products).

use std::hint::black_box;
use std::time::Instant;

use benign_kernels::{Float, Transpose};

// This example builds its cases itself: `GemmCase::parse`, for shapes read from the command
// line, goes unused here.
#[allow(dead_code)]
#[path = "common/gemm_case.rs"]
mod gemm_case;
use gemm_case::GemmCase;

/// Seconds of CPU time of the calling thread so far, if Linux's schedstat is readable.
fn thread_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanoseconds: u64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(nanoseconds as f64 * 1e-9)
}

/// Runs `f` and returns how long it took: thread CPU time where available, else wall-clock.
fn timed(f: impl FnOnce()) -> f64 {
    let (cpu_start, wall_start) = (thread_cpu_seconds(), Instant::now());
    f();
    match (cpu_start, thread_cpu_seconds()) {
        (Some(start), Some(end)) => end - start,
        _ => wall_start.elapsed().as_secs_f64(),
    }
}

fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn time_shape<T: Float>(m: usize, n: usize, k: usize, rounds: usize) {
    let cases = [
        (Transpose::No, Transpose::No, "A B"),
        (Transpose::No, Transpose::Yes, "A B^T"),
        (Transpose::Yes, Transpose::No, "A^T B"),
    ];
    // The same storage read either way: only the layout changes, not the work.
    let (a, b) = GemmCase {
        m,
        n,
        k,
        ta: Transpose::No,
        tb: Transpose::No,
    }
    .operands::<T>();
    let mut c = vec![T::ZERO; m * n];
    let mut times = vec![Vec::new(); cases.len()];
    let repeats = (2_000_000_000 / (m * n * k).max(1)).max(1);
    for _ in 0..rounds {
        for (index, &(ta, tb, _)) in cases.iter().enumerate() {
            let case = GemmCase { m, n, k, ta, tb };
            let seconds = timed(|| {
                for _ in 0..repeats {
                    case.run(T::ONE, black_box(&a), black_box(&b), T::ZERO, &mut c);
                }
            });
            times[index].push(seconds / repeats as f64);
            black_box(&c);
        }
    }
    let base = median(times[0].clone());
    let mut line = format!("{:>4} {m:>5}x{n}x{k}:", T::NAME);
    for (case, &(_, _, label)) in cases.iter().enumerate() {
        let t = median(times[case].clone());
        line += &format!("  {label} {:8.3} ms ({:.2}x)", t * 1e3, t / base);
    }
    println!("{line}");
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("rounds: a positive integer"))
        .unwrap_or(15);
    let small = std::env::args().nth(2).is_some_and(|arg| arg == "small");
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("a 1-thread rayon pool");
    pool.install(|| {
        for &(m, n, k) in &[(20, 2000, 2000), (180, 2000, 2000)] {
            time_shape::<f32>(m, n, k, rounds);
            time_shape::<f64>(m, n, k, rounds);
        }
        if !small {
            time_shape::<f32>(2000, 2000, 2000, rounds.div_ceil(5));
            time_shape::<f64>(2000, 2000, 2000, rounds.div_ceil(5));
        }
    });
}
