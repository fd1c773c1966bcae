//! GEMM throughput: `benign_kernels::gemm` vs `matrixmultiply` on square and workload shapes.
//!
//! Throughput is `Elements(2 m n k)`, so criterion's "elem/s" reads as **FLOP/s**.
//!
//! Groups (`sgemm` for f32, `dgemm` for f64), one benchmark id per `impl/threads/shape`:
//! - `ours/1t/..`: our kernel inside a 1-thread rayon pool, with the process's kernel variant
//!   (AVX-512 on CPUs with avx512f, see `benign_kernels::gemm::KernelVariant`),
//! - `ours-avx2/1t/..`: the same forced to the portable `wide` (AVX2 + FMA) variant, on
//!   AVX-512 CPUs only (elsewhere it is what `ours` runs),
//! - `matrixmultiply/1t/..`: `matrixmultiply::{s,d}gemm`, forced single-threaded (its
//!   `threading` feature otherwise uses one thread per physical core, read once from
//!   `MATMUL_NUM_THREADS`). Its default `avx512` feature is on in this workspace, so like ours
//!   it dispatches to AVX-512 kernels at run time on CPUs that have them,
//! - `ours/2t/..`: our kernel inside a 2-thread rayon pool (parallel scaling).
//!
//! Group `direct` (f32, 1 thread unless the id says `2t`): the small and skinny shapes of the
//! models with their transposes (`NN`, `NT` = B transposed, `TN`; id `impl/shape-transposes`),
//! plus the shapes the dispatch thresholds were measured on:
//! - `auto`: `gemm` as called (the shape rule picks the direct or the packed path),
//! - `packed` / `direct`: the path forced with `with_gemm_path`,
//! - `matrixmultiply`: `matrixmultiply::sgemm` on the same strided operands (1 thread).
//!
//! Filter, e.g.: `cargo bench --bench gemm -- 'sgemm/.*/2000x2000x2000' --warm-up-time 1`.

use std::time::Duration;

use benign_kernels::baseline::matrixmultiply_gemm;
use benign_kernels::gemm::{
    kernel_variant, with_gemm_path, with_kernel_variant, GemmPath, KernelVariant,
};
use benign_kernels::{gemm, Float, MatMut, MatRef, Transpose};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// (m, n, k): square shapes, then the workload shapes of the model.
const SHAPES: [(usize, usize, usize); 8] = [
    (64, 64, 64),
    (256, 256, 256),
    (512, 512, 512),
    (1024, 1024, 1024),
    (2000, 2000, 2000),
    (160, 2000, 2000),
    (180, 2000, 6000),
    (2000, 2000, 160),
];

fn random<T: Float>(len: usize, rng: &mut ChaCha8Rng) -> Vec<T> {
    (0..len)
        .map(|_| T::from_f64(rng.random_range(-1.0..1.0)))
        .collect()
}

fn bench_type<T: Float>(criterion: &mut Criterion, group_name: &str) {
    let pools: Vec<(usize, rayon::ThreadPool)> = [1, 2]
        .into_iter()
        .map(|threads| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            (threads, pool)
        })
        .collect();
    let mut group = criterion.benchmark_group(group_name);
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(2));
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for (m, n, k) in SHAPES {
        let shape = format!("{m}x{n}x{k}");
        let a = random::<T>(m * k, &mut rng);
        let b = random::<T>(k * n, &mut rng);
        let mut c = vec![T::ZERO; m * n];
        group.throughput(Throughput::Elements(2 * (m * n * k) as u64));
        let ours = |c: &mut [T]| {
            gemm(
                T::ONE,
                MatRef::new(black_box(&a), m, k),
                MatRef::new(black_box(&b), k, n),
                T::ZERO,
                MatMut::new(c, m, n),
            )
        };
        for (threads, pool) in &pools {
            group.bench_function(
                BenchmarkId::new(format!("ours/{threads}t"), &shape),
                |bench| pool.install(|| bench.iter(|| ours(&mut c))),
            );
        }
        if kernel_variant() != KernelVariant::Portable {
            group.bench_function(BenchmarkId::new("ours-avx2/1t", &shape), |bench| {
                pools[0].1.install(|| {
                    with_kernel_variant(KernelVariant::Portable, || bench.iter(|| ours(&mut c)))
                })
            });
        }
        group.bench_function(BenchmarkId::new("matrixmultiply/1t", &shape), |bench| {
            bench.iter(|| {
                matrixmultiply_gemm(
                    MatRef::new(black_box(&a), m, k),
                    MatRef::new(black_box(&b), k, n),
                    MatMut::new(&mut c, m, n),
                )
            })
        });
    }
    group.finish();
}

fn sgemm(criterion: &mut Criterion) {
    // matrixmultiply reads this once, at its first call: make its baseline single-threaded.
    std::env::set_var("MATMUL_NUM_THREADS", "1");
    bench_type::<f32>(criterion, "sgemm");
}

fn dgemm(criterion: &mut Criterion) {
    bench_type::<f64>(criterion, "dgemm");
}

/// (m, n, k, ta, tb) of the `direct` group: the per-head attention products of the real-data
/// classifier (sequence 50, head width 16: scores `Q K^T`, `P V`, and the backward `P^T dO`),
/// the [CLS]-only encoder's `x W^T` with 20 and 180 rows, then threshold probes.
const DIRECT_SHAPES: [(usize, usize, usize, Transpose, Transpose); 17] = {
    use Transpose::{No, Yes};
    [
        (50, 50, 16, No, Yes),
        (50, 16, 50, No, No),
        (50, 16, 50, Yes, No),
        (50, 50, 16, No, No),
        (20, 2000, 2000, No, Yes),
        (180, 2000, 2000, No, Yes),
        (20, 2000, 2000, No, No),
        (20, 2000, 2000, Yes, Yes),
        (64, 64, 64, No, No),
        (64, 64, 64, No, Yes),
        (96, 96, 96, No, No),
        (96, 96, 96, No, Yes),
        (128, 128, 128, No, No),
        (32, 2000, 2000, No, Yes),
        (48, 2000, 2000, No, Yes),
        (32, 2000, 2000, No, No),
        (48, 2000, 2000, No, No),
    ]
};

fn transpose_name(t: Transpose) -> &'static str {
    match t {
        Transpose::No => "N",
        Transpose::Yes => "T",
    }
}

/// Row and column strides of a stored `rows x cols` operand used as `op(X)`.
fn direct(criterion: &mut Criterion) {
    std::env::set_var("MATMUL_NUM_THREADS", "1");
    let pools: Vec<rayon::ThreadPool> = [1, 2]
        .into_iter()
        .map(|threads| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
        })
        .collect();
    let mut group = criterion.benchmark_group("direct");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(2));
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for (m, n, k, ta, tb) in DIRECT_SHAPES {
        let shape = format!("{m}x{n}x{k}-{}{}", transpose_name(ta), transpose_name(tb));
        let a = random::<f32>(m * k, &mut rng);
        let b = random::<f32>(k * n, &mut rng);
        let lda = if ta == Transpose::No { k } else { m };
        let ldb = if tb == Transpose::No { n } else { k };
        let mut c = vec![0.0f32; m * n];
        group.throughput(Throughput::Elements(2 * (m * n * k) as u64));
        let run = |c: &mut [f32]| {
            gemm(
                1.0,
                MatRef::op_with_ld(ta, black_box(&a), m, k, lda),
                MatRef::op_with_ld(tb, black_box(&b), k, n, ldb),
                0.0,
                MatMut::new(c, m, n),
            )
        };
        for (name, path) in [
            ("auto", GemmPath::Auto),
            ("packed", GemmPath::Packed),
            ("direct", GemmPath::Direct),
        ] {
            group.bench_function(BenchmarkId::new(name, &shape), |bench| {
                pools[0].install(|| with_gemm_path(path, || bench.iter(|| run(&mut c))))
            });
        }
        if m * n * k >= 1 << 24 {
            for (name, path) in [
                ("packed/2t", GemmPath::Packed),
                ("direct/2t", GemmPath::Direct),
            ] {
                group.bench_function(BenchmarkId::new(name, &shape), |bench| {
                    pools[1].install(|| with_gemm_path(path, || bench.iter(|| run(&mut c))))
                });
            }
        }
        group.bench_function(BenchmarkId::new("matrixmultiply", &shape), |bench| {
            bench.iter(|| {
                let (a, b) = (black_box(&a), black_box(&b));
                matrixmultiply_gemm(
                    MatRef::op_with_ld(ta, a, m, k, lda),
                    MatRef::op_with_ld(tb, b, k, n, ldb),
                    MatMut::new(&mut c, m, n),
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, sgemm, dgemm, direct);
criterion_main!(benches);
