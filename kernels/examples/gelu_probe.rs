//! ns per element of the GELU kernels on training-like inputs (a standard normal sample):
//! `cargo run --release -p benign-kernels --example gelu_probe [len] [reps]`.
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let len: usize = args.next().map_or(409_600, |a| a.parse().expect("len"));
    let reps: usize = args.next().map_or(50, |a| a.parse().expect("reps"));
    // a cheap normal sample: sum of 4 uniforms, centred and scaled
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut uniform = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    let x: Vec<f32> = (0..len)
        .map(|_| ((0..4).map(|_| uniform()).sum::<f32>() - 2.0) * 1.7)
        .collect();
    let (mut y, mut slope) = (vec![0.0f32; len], vec![0.0f32; len]);
    let mut best = [f64::INFINITY; 2];
    for _ in 0..reps {
        let t = Instant::now();
        benign_kernels::gelu_with_derivative(&x, &mut y, &mut slope);
        best[0] = best[0].min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        benign_kernels::gelu(&x, &mut y);
        best[1] = best[1].min(t.elapsed().as_secs_f64());
    }
    println!(
        "len {len}: gelu_with_derivative {:.2} ns/elem, gelu {:.2} ns/elem (best of {reps})",
        best[0] * 1e9 / len as f64,
        best[1] * 1e9 / len as f64
    );
}
