//! Memory-bound level-1/level-2 kernels: GEMV (both orientations), GER and dot/axpy, single
//! thread, against a STREAM-like triad measured in the same run and `matrixmultiply` (GEMM with
//! n = 1 acts as a GEMV).
//!
//! Throughput is in bytes of memory traffic the kernel must do (matrix read, plus written for
//! GER; vectors read/written), so criterion's GB/s compares directly with the triad's; the
//! `*_flops` groups report 2 m n flops as elements/s. d = 2000 fits in L2/L3, d = 8192 does
//! not. Run e.g.
//! `cargo bench --bench blas2 -- --warm-up-time 1 --measurement-time 2`.

use std::hint::black_box;

use benign_kernels::baseline::matrixmultiply_gemm;
use benign_kernels::{Float, MatMut, MatRef, Transpose};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

mod common;
use common::{bench_in_pool, filled, group, one_thread, ThreadCpuTime};

/// STREAM triad `a = b + s c` over three arrays of 64 MiB (8 Mi f64), far beyond L3: the
/// single-thread memory bandwidth ceiling for the GEMV/GER figures.
fn triad(c: &mut Criterion<ThreadCpuTime>) {
    let n = 8 << 20;
    let b = filled::<f64>(n, 1, 1.0);
    let cc = filled::<f64>(n, 2, 1.0);
    let mut a = vec![0.0f64; n];
    let mut g = group(c, "triad");
    g.throughput(Throughput::Bytes((3 * n * 8) as u64));
    g.bench_function("f64_3x64MiB", |bench| {
        bench.iter(|| {
            let s = black_box(1.5);
            for ((av, &bv), &cv) in a.iter_mut().zip(&b).zip(&cc) {
                *av = bv + s * cv;
            }
            black_box(&a);
        })
    });
    g.finish();
}

fn gemv_bytes<T: Float>(m: usize, n: usize) -> u64 {
    ((m * n + m + n) * std::mem::size_of::<T>()) as u64
}

/// `matrixmultiply` as a GEMV: y (rows x 1) = op(A) (rows x inner) x (inner x 1), A m x n.
fn mm_gemv<T: Float>(ta: Transpose, m: usize, n: usize, a: &[T], x: &[T], y: &mut [T]) {
    let (rows, inner) = if ta == Transpose::No { (m, n) } else { (n, m) };
    matrixmultiply_gemm(
        MatRef::op_with_ld(ta, a, rows, inner, n),
        MatRef::new(x, inner, 1),
        MatMut::new(y, rows, 1),
    );
}

fn gemv_ger_for<T: Float>(c: &mut Criterion<ThreadCpuTime>, d: usize) {
    let pool = one_thread();
    let a = filled::<T>(d * d, 3, 1.0);
    let x = filled::<T>(d, 4, 1.0);
    let mut y = filled::<T>(d, 5, 1.0);
    for ta in [Transpose::No, Transpose::Yes] {
        let name = format!("gemv_{:?}_{}", ta, T::NAME).to_lowercase();
        let mut g = group(c, &name);
        g.throughput(Throughput::Bytes(gemv_bytes::<T>(d, d)));
        // Ours, y = op(A) x: measured for its bytes, then for its flops.
        let gemv = |y: &mut Vec<T>| {
            benign_kernels::gemv(T::ONE, MatRef::new(&a, d, d).op(ta), &x, T::ZERO, y);
            black_box(&y);
        };
        bench_in_pool(&mut g, &pool, "benign", d, || gemv(&mut y));
        g.bench_with_input(BenchmarkId::new("matrixmultiply", d), &d, |b, &d| {
            b.iter(|| {
                mm_gemv(ta, d, d, &a, &x, &mut y);
                black_box(&y);
            })
        });
        g.finish();
        let mut g = group(c, format!("{name}_flops"));
        g.throughput(Throughput::Elements((2 * d * d) as u64));
        bench_in_pool(&mut g, &pool, "benign", d, || gemv(&mut y));
        g.finish();
    }
    let mut am = a.clone();
    let mut g = group(c, format!("ger_{}", T::NAME));
    // A read and written, x and y read.
    g.throughput(Throughput::Bytes(
        ((2 * d * d + 2 * d) * std::mem::size_of::<T>()) as u64,
    ));
    bench_in_pool(&mut g, &pool, "benign", d, || {
        benign_kernels::ger(T::from_f64(1e-9), &x, &y, MatMut::new(&mut am, d, d));
        black_box(&am);
    });
    g.finish();
}

fn gemv_ger(c: &mut Criterion<ThreadCpuTime>) {
    // matrixmultiply's own thread pool: one thread, like ours.
    std::env::set_var("MATMUL_NUM_THREADS", "1");
    for d in [2000, 8192] {
        gemv_ger_for::<f32>(c, d);
        gemv_ger_for::<f64>(c, d);
    }
}

fn level1(c: &mut Criterion<ThreadCpuTime>) {
    let n = 1 << 20;
    let x = filled::<f32>(n, 6, 1.0);
    let mut y = filled::<f32>(n, 7, 1.0);
    let mut g = group(c, "level1_f32");
    g.throughput(Throughput::Bytes((2 * n * 4) as u64));
    g.bench_function("dot_1Mi", |b| {
        b.iter(|| black_box(benign_kernels::dot(&x, &y)))
    });
    g.throughput(Throughput::Bytes((3 * n * 4) as u64));
    g.bench_function("axpy_1Mi", |b| {
        b.iter(|| {
            benign_kernels::axpy(1e-9, &x, &mut y);
            black_box(&y);
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = triad, gemv_ger, level1
}
criterion_main!(benches);
