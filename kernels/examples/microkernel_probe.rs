//! Where the AVX-512 GEMM loses against the FMA peak: each microkernel (f32 and f64) alone,
//! called the way the packed path calls it (24 A micro-panels per B micro-panel, the kernel's
//! own KC), with the B micro-panel fixed or cycling over a 4 MB block, and the C tiles hot in
//! cache or cold (spread over a 2000 x 2000 matrix, as in a large product). Each line is the
//! best of 5 timings, as a fraction of the FMA peak of the same vector width measured first.
//!
//! `cargo run --release -p benign-kernels --example microkernel_probe`
//!
//! With a fixed B micro-panel and hot C tiles everything the kernel reads is in L1 or L2, so
//! that line is the kernel's own ceiling; the cold and cycling lines show what the C write-back
//! and B's stream from L2 cost on top.

#[cfg(target_arch = "x86_64")]
fn main() {
    use benign_kernels::gemm::{kernel_variant, Avx512, KernelVariant};
    use benign_kernels::probe;
    use std::time::Duration;

    if kernel_variant() != KernelVariant::Avx512 {
        println!("no avx512f on this CPU (or BENIGN_GEMM_KERNEL=portable): nothing to probe");
        return;
    }
    for is_f32 in [true, false] {
        let peak =
            probe::gemm_fma_peak_gflops(KernelVariant::Avx512, is_f32, Duration::from_millis(300));
        if is_f32 {
            println!("512-bit FMA peak: {peak:.1} GFLOP/s f32");
            probe_kernel::<f32, Avx512>(peak);
        } else {
            println!("512-bit FMA peak: {peak:.1} GFLOP/s f64");
            probe_kernel::<f64, Avx512>(peak);
        }
    }
}

/// Times kernel `K` in the four settings of the module docs against `peak` (GFLOP/s).
#[cfg(target_arch = "x86_64")]
fn probe_kernel<S: benign_kernels::Float, K: benign_kernels::gemm::GemmKernel<S>>(peak: f64) {
    use benign_kernels::MatMut;
    use std::hint::black_box;
    use std::time::Instant;

    let (mr, nr, kc) = (K::MR, K::NR, K::KC);
    let ldc = 2000;
    let a_panels = 24;
    // a 4 MB B block, whatever the element size
    let b_panels = (4 << 20) / (kc * nr * std::mem::size_of::<S>());
    // 64-byte aligned like the packing buffers: a B load split over two cache lines would
    // halve the kernel's load throughput
    let aligned = |len: usize, seed: usize| -> Vec<S> {
        let store: Vec<S> = (0..len + 16)
            .map(|i| S::from_f64(((i * seed) % 13) as f64 * 0.01))
            .collect();
        store[store.as_ptr().align_offset(64)..][..len].to_vec()
    };
    let a = aligned(kc * mr * a_panels, 7);
    let b = aligned(kc * nr * b_panels, 5);
    let mut c = vec![S::ZERO; 2000 * ldc];
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
                    (
                        (ir + a_panels * sweep) * mr % (2000 - mr),
                        jr * 31 % (ldc - nr),
                    )
                } else {
                    (ir * mr, 0)
                };
                let b_panel = &b[if b_cycles { jr } else { 0 } * kc * nr..];
                let c_tile = MatMut::with_ld(&mut c[row * ldc + col..], mr, nr, ldc);
                K::tile(kc, &a[ir * kc * mr..], b_panel, S::ONE, S::ONE, c_tile);
            }
            best = best.min(start.elapsed().as_secs_f64());
        }
        black_box(&c);
        let gflops = 2.0 * (mr * nr * kc * calls) as f64 / best / 1e9;
        println!(
            "{} {mr} x {nr}, B micro-panel {:7}, C tiles {}: {gflops:6.1} GFLOP/s, {:3.0}% of peak",
            S::NAME,
            if b_cycles { "cycling" } else { "fixed" },
            if c_cold { "cold" } else { "hot " },
            100.0 * gflops / peak
        );
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn main() {
    println!("the AVX-512 microkernels exist on x86-64 only");
}
