//! Where the AVX-512 sgemm loses against the FMA peak: the microkernel alone, called the way
//! the packed path calls it (24 A micro-panels of KC = 256 per B micro-panel), with the B
//! micro-panel fixed or cycling over a 4 MB block, and the C tiles hot in cache or cold (spread
//! over a 2000 x 2000 matrix, as in a large product). Each line is the best of 5 timings.
//!
//! `cargo run --release -p benign-kernels --example microkernel_probe`
//!
//! On the 2-core Ice Lake machine the kernel reaches 85-92% of the peak with hot C tiles and
//! 68-80% with cold ones: the C write-back, not the FMA loop, is what a large product loses.

#[cfg(target_arch = "x86_64")]
fn main() {
    use benign_kernels::gemm::{Avx512, GemmKernel};
    use benign_kernels::probe;
    use benign_kernels::MatMut;
    use std::hint::black_box;
    use std::time::{Duration, Instant};

    let Some(peak) = probe::fma_peak_gflops_f32_avx512(Duration::from_millis(300)) else {
        println!("no avx512f on this CPU: nothing to probe");
        return;
    };
    println!("512-bit FMA peak: {peak:.1} GFLOP/s f32");
    let (mr, nr, kc) = (12, 32, 256);
    let (a_panels, b_panels, ldc) = (24, 63, 2000);
    // 64-byte aligned like the packing buffers: a B load split over two cache lines would
    // halve the kernel's load throughput
    let aligned = |len: usize, seed: usize| -> Vec<f32> {
        let store: Vec<f32> = (0..len + 16)
            .map(|i| ((i * seed) % 13) as f32 * 0.01)
            .collect();
        store[store.as_ptr().align_offset(64)..][..len].to_vec()
    };
    let a = aligned(kc * mr * a_panels, 7);
    let b_store: Vec<f32> = (0..kc * nr * b_panels + 16)
        .map(|i| ((i * 5) % 13) as f32 * 0.01)
        .collect();
    let b = &b_store[b_store.as_ptr().align_offset(64)..];
    let mut c = vec![0.0f32; 2000 * ldc];
    let calls = a_panels * b_panels * 4;
    for (b_cycles, c_cold) in [(false, false), (true, false), (false, true), (true, true)] {
        let mut best = f64::MAX;
        for _ in 0..5 {
            let start = Instant::now();
            for call in 0..calls {
                let ir = call % a_panels;
                let jr = (call / a_panels) % b_panels;
                let sweep = call / (a_panels * b_panels);
                let (row, col) = if c_cold {
                    ((ir + a_panels * sweep) * mr % (2000 - mr), jr * 31)
                } else {
                    (ir * mr, 0)
                };
                let b_panel = &b[if b_cycles { jr } else { 0 } * kc * nr..];
                let c_tile = MatMut::with_ld(&mut c[row * ldc + col..], mr, nr, ldc);
                <Avx512 as GemmKernel<f32>>::tile(
                    kc,
                    &a[ir * kc * mr..],
                    b_panel,
                    1.0,
                    1.0,
                    c_tile,
                );
            }
            best = best.min(start.elapsed().as_secs_f64());
        }
        black_box(&c);
        let gflops = 2.0 * (mr * nr * kc * calls) as f64 / best / 1e9;
        println!(
            "B micro-panel {:7}, C tiles {}: {gflops:6.1} GFLOP/s, {:3.0}% of peak",
            if b_cycles { "cycling" } else { "fixed" },
            if c_cold { "cold" } else { "hot " },
            100.0 * gflops / peak
        );
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn main() {
    println!("the AVX-512 microkernel exists on x86-64 only");
}
