//! Times the row-wise kernels on the workload shapes, one line of JSON per kernel and shape:
//! `cargo run --release -p benign-kernels --example rowwise_bench [reps]`.
//!
//! Runs on the current rayon pool (`RAYON_NUM_THREADS=1` for one thread). Each line has the
//! minimum and median seconds per call over `reps` calls after one warm-up call; inputs are a
//! fixed pseudo-normal sample (scaled by 1.7, like pre-activations), so `scripts/
//! compare_rowwise.py` can time PyTorch on the same shapes and values' distribution.

use std::hint::black_box;
use std::time::Instant;

fn sample(len: usize, seed: u64) -> Vec<f32> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64 ^ seed;
    let mut uniform = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    // Sum of four uniforms, centred: close enough to a normal sample for timing.
    (0..len)
        .map(|_| ((0..4).map(|_| uniform()).sum::<f32>() - 2.0) * 1.7)
        .collect()
}

fn time(reps: usize, mut call: impl FnMut()) -> (f64, f64) {
    call();
    let mut seconds: Vec<f64> = (0..reps)
        .map(|_| {
            let start = Instant::now();
            call();
            start.elapsed().as_secs_f64()
        })
        .collect();
    seconds.sort_by(f64::total_cmp);
    (seconds[0], seconds[reps / 2])
}

/// Times `call` on a `rows x cols` problem ([`time`]) and prints its line.
fn emit(kernel: &str, (rows, cols): (usize, usize), reps: usize, call: impl FnMut()) {
    let (min, median) = time(reps, call);
    println!(
        "{{\"kernel\": \"{kernel}\", \"rows\": {rows}, \"cols\": {cols}, \
         \"min_seconds\": {min:e}, \"median_seconds\": {median:e}}}"
    );
}

fn main() {
    let reps: usize = std::env::args()
        .nth(1)
        .map_or(20, |a| a.parse().expect("reps: a positive integer"));
    assert!(reps > 0, "reps: a positive integer");

    for (rows, cols) in [(4096, 2000), (180, 2000)] {
        let x = sample(rows * cols, 1);
        let dy = sample(rows * cols, 2);
        let mut y = vec![0.0f32; rows * cols];
        emit("gelu", (rows, cols), reps, || {
            benign_kernels::gelu(black_box(&x), &mut y)
        });
        emit("gelu_backward", (rows, cols), reps, || {
            benign_kernels::gelu_backward(black_box(&x), &dy, &mut y)
        });
        let gamma = sample(cols, 3);
        let beta = sample(cols, 4);
        let (mut mean, mut rstd) = (vec![0.0f32; rows], vec![0.0f32; rows]);
        emit("layer_norm", (rows, cols), reps, || {
            benign_kernels::layer_norm(
                cols,
                1e-5,
                black_box(&x),
                &gamma,
                &beta,
                &mut y,
                &mut mean,
                &mut rstd,
            )
        });
    }
    // Attention score rows: the encoder's [CLS] rows over T = 9 tokens (batch 1000 at
    // evaluation), the pretraining classifier's [CLS] rows (batch 64 x 4 heads over 49 patches
    // and [CLS]), and the benchmark's short and long rows.
    for (rows, cols) in [(1000, 9), (256, 50), (8000, 8), (4096, 4096)] {
        let x = sample(rows * cols, 5);
        let mut y = vec![0.0f32; rows * cols];
        emit("softmax_rows", (rows, cols), reps, || {
            benign_kernels::softmax_rows(cols, black_box(&x), &mut y)
        });
    }
}
