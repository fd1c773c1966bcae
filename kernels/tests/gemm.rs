//! `gemm` against the plain f64 reference over awkward shapes, block edges, all transposes,
//! scalars, padded leading dimensions, both element types and several thread counts.
//!
//! Error bound, per element:
//!
//! ```text
//! |c - ref| <= tol * (|alpha| * sum_p |a_ip| |b_pj| + |beta c_ij|),   tol = 2 (k + 2) eps
//! ```
//!
//! A length-k dot product accumulated with FMAs has a worst-case error of about `k u` (`u =
//! eps / 2`) relative to `sum |a||b|`; on top come one rounding for alpha and one for the add
//! to C per depth panel, and one for beta. `(k + 2) eps` is `2 (k + 2) u`, which covers all of
//! them with room to spare; the extra factor 2 keeps the test from depending on luck. Inputs
//! are rounded to the element type first, so the f64 reference sees exactly the same numbers.
//!
//! Padding in A and B (between the width and the leading dimension) is NaN, so a kernel that
//! reads outside the matrix fails; padding in C must come back untouched.
//!
//! Every test runs once per kernel variant this CPU has (`Avx2`, and `Avx512` on AVX-512
//! machines), selected per call with `with_kernel_variant`.

use benign_kernels::gemm::{
    blocking, with_gemm_path, with_kernel_variant, GemmPath, KernelVariant,
};
use benign_kernels::{gemm, reference, Float, Transpose};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const SIZES: [usize; 12] = [0, 1, 2, 7, 8, 9, 15, 16, 17, 63, 64, 65];
const TRANSPOSES: [(Transpose, Transpose); 4] = [
    (Transpose::No, Transpose::No),
    (Transpose::No, Transpose::Yes),
    (Transpose::Yes, Transpose::No),
    (Transpose::Yes, Transpose::Yes),
];
const ALPHAS: [f64; 3] = [0.0, 1.0, -1.7];
const BETAS: [f64; 3] = [0.0, 1.0, 0.6];
/// Sentinel stored in the padding of C: must survive the call.
const C_PADDING: f64 = 12345.0;

#[derive(Clone, Copy, Debug)]
struct Case {
    kernel: KernelVariant,
    ta: Transpose,
    tb: Transpose,
    m: usize,
    n: usize,
    k: usize,
    alpha: f64,
    beta: f64,
    /// Extra columns of storage beyond the width, for A, B and C.
    pad: usize,
}

/// Operands of one case: values already rounded to the element type, stored as f64.
struct Operands {
    a: Vec<f64>,
    lda: usize,
    b: Vec<f64>,
    ldb: usize,
    c: Vec<f64>,
    ldc: usize,
}

/// A `rows x cols` matrix with leading dimension `ld`: uniform values rounded to `T` inside,
/// `padding` outside.
fn matrix<T: Float>(
    rows: usize,
    cols: usize,
    ld: usize,
    padding: f64,
    rng: &mut ChaCha8Rng,
) -> Vec<f64> {
    let mut data = vec![padding; rows * ld];
    for row in data.chunks_mut(ld.max(1)) {
        for x in &mut row[..cols] {
            *x = T::from_f64(rng.random_range(-1.0..1.0)).to_f64();
        }
    }
    data
}

fn operands<T: Float>(case: &Case, rng: &mut ChaCha8Rng) -> Operands {
    let (a_rows, a_cols) = if case.ta == Transpose::No {
        (case.m, case.k)
    } else {
        (case.k, case.m)
    };
    let (b_rows, b_cols) = if case.tb == Transpose::No {
        (case.k, case.n)
    } else {
        (case.n, case.k)
    };
    let (lda, ldb, ldc) = (a_cols + case.pad, b_cols + case.pad, case.n + case.pad);
    let a = matrix::<T>(a_rows, a_cols, lda, f64::NAN, rng);
    let b = matrix::<T>(b_rows, b_cols, ldb, f64::NAN, rng);
    let mut c = matrix::<T>(case.m, case.n, ldc, C_PADDING, rng);
    if case.beta == 0.0 {
        // beta == 0 must never read C: NaN must not leak into the result
        for row in c.chunks_mut(ldc.max(1)) {
            row[..case.n].fill(f64::NAN);
        }
    }
    Operands {
        a,
        lda,
        b,
        ldb,
        c,
        ldc,
    }
}

fn to_type<T: Float>(values: &[f64]) -> Vec<T> {
    values.iter().map(|&x| T::from_f64(x)).collect()
}

/// Runs `gemm::<T>` with the case's kernel variant in the current rayon pool, on the packed
/// path whatever the shape (the direct path of small and skinny shapes has its own tests in
/// `tests/gemm_direct.rs`; here the packed blocking edges must stay covered).
fn run<T: Float>(case: &Case, ops: &Operands) -> Vec<T> {
    let mut c = to_type::<T>(&ops.c);
    let (a, b) = (to_type::<T>(&ops.a), to_type::<T>(&ops.b));
    with_gemm_path(GemmPath::Packed, || {
        with_kernel_variant(case.kernel, || {
            gemm(
                case.ta,
                case.tb,
                case.m,
                case.n,
                case.k,
                T::from_f64(case.alpha),
                &a,
                ops.lda,
                &b,
                ops.ldb,
                T::from_f64(case.beta),
                &mut c,
                ops.ldc,
            )
        })
    });
    c
}

/// Checks `got` against the f64 reference within the error bound of the module docs.
fn check<T: Float>(case: &Case, ops: &Operands, got: &[T]) {
    let Case {
        kernel: _,
        ta,
        tb,
        m,
        n,
        k,
        alpha,
        beta,
        ..
    } = *case;
    let alpha = T::from_f64(alpha).to_f64();
    let beta = T::from_f64(beta).to_f64();
    let mut expected = ops.c.clone();
    reference::gemm(
        ta,
        tb,
        m,
        n,
        k,
        alpha,
        &ops.a,
        ops.lda,
        &ops.b,
        ops.ldb,
        beta,
        &mut expected,
        ops.ldc,
    );
    let abs = |v: &[f64]| v.iter().map(|x| x.abs()).collect::<Vec<_>>();
    let mut magnitude = vec![0.0; ops.c.len()];
    reference::gemm(
        ta,
        tb,
        m,
        n,
        k,
        1.0,
        &abs(&ops.a),
        ops.lda,
        &abs(&ops.b),
        ops.ldb,
        0.0,
        &mut magnitude,
        ops.ldc,
    );
    let tol = 2.0 * (k + 2) as f64 * T::EPSILON.to_f64();
    for i in 0..m {
        for j in 0..ops.ldc {
            let index = i * ops.ldc + j;
            let value = got[index].to_f64();
            if j >= n {
                assert_eq!(
                    value,
                    C_PADDING,
                    "{case:?} {}: padding of C at ({i}, {j}) was written",
                    T::NAME
                );
                continue;
            }
            let old_c = if beta == 0.0 { 0.0 } else { ops.c[index] };
            let bound = tol * (alpha.abs() * magnitude[index] + (beta * old_c).abs());
            assert!(
                (value - expected[index]).abs() <= bound,
                "{case:?} {}: C({i}, {j}) = {value}, reference {}, bound {bound}",
                T::NAME,
                expected[index]
            );
        }
    }
}

fn check_case<T: Float>(case: Case, rng: &mut ChaCha8Rng) {
    let ops = operands::<T>(&case, rng);
    let got = run::<T>(&case, &ops);
    check::<T>(&case, &ops, &got);
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
}

/// Every (m, n, k) over `SIZES`; transposes, alpha, beta and padding cycle with the case index
/// so that each combination shows up across the grid.
fn shape_grid<T: Float>(kernel: KernelVariant, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut index = 0;
    for m in SIZES {
        for n in SIZES {
            for k in SIZES {
                let (ta, tb) = TRANSPOSES[index % 4];
                let case = Case {
                    kernel,
                    ta,
                    tb,
                    m,
                    n,
                    k,
                    alpha: ALPHAS[(index / 4) % 3],
                    beta: BETAS[(index / 12) % 3],
                    pad: index % 3,
                };
                check_case::<T>(case, &mut rng);
                index += 1;
            }
        }
    }
}

#[test]
fn shape_grid_f32() {
    for kernel in KernelVariant::available() {
        shape_grid::<f32>(kernel, 1);
    }
}

#[test]
fn shape_grid_f64() {
    for kernel in KernelVariant::available() {
        shape_grid::<f64>(kernel, 2);
    }
}

/// All transposes x alpha x beta on a few shapes crossing tile edges.
fn transposes_and_scalars<T: Float>(kernel: KernelVariant, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for (m, n, k) in [(7, 9, 17), (17, 16, 65), (65, 63, 9), (1, 33, 2)] {
        for (ta, tb) in TRANSPOSES {
            for alpha in ALPHAS {
                for beta in BETAS {
                    for pad in [0, 5] {
                        check_case::<T>(
                            Case {
                                kernel,
                                ta,
                                tb,
                                m,
                                n,
                                k,
                                alpha,
                                beta,
                                pad,
                            },
                            &mut rng,
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn transposes_and_scalars_f32() {
    for kernel in KernelVariant::available() {
        transposes_and_scalars::<f32>(kernel, 3);
    }
}

#[test]
fn transposes_and_scalars_f64() {
    for kernel in KernelVariant::available() {
        transposes_and_scalars::<f64>(kernel, 4);
    }
}

/// Shapes one below, at and one above the microkernel tile (MR, NR) and the cache blocks (KC,
/// MC, NC), on 1 and 4 threads.
fn block_edges<T: Float>(kernel: KernelVariant, seed: u64) {
    let blocking = blocking::<T>(kernel);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let around = |x: usize| [x - 1, x, x + 1];
    let mut shapes = Vec::new();
    for m in around(blocking.mr) {
        for n in around(blocking.nr) {
            shapes.push((m, n, 3));
        }
    }
    for k in around(blocking.kc) {
        for m in around(blocking.mc) {
            shapes.push((m, 2 * blocking.nr + 1, k));
        }
        shapes.push((blocking.mr + 1, blocking.nr - 1, k));
        shapes.push((2 * blocking.kc / 3, 2 * blocking.kc / 3, 2 * k + 1));
    }
    for n in around(blocking.nc) {
        shapes.push((blocking.mr + 1, n, blocking.kc + 1));
        shapes.push((2 * blocking.mc + 1, n, 9));
    }
    for (index, &(m, n, k)) in shapes.iter().enumerate() {
        let (ta, tb) = TRANSPOSES[index % 4];
        let case = Case {
            kernel,
            ta,
            tb,
            m,
            n,
            k,
            alpha: -1.7,
            beta: BETAS[index % 3],
            pad: 1,
        };
        let ops = operands::<T>(&case, &mut rng);
        let serial = pool(1).install(|| run::<T>(&case, &ops));
        check::<T>(&case, &ops, &serial);
        let parallel = pool(4).install(|| run::<T>(&case, &ops));
        assert_bitwise_equal(&serial, &parallel, &case);
    }
}

#[test]
fn block_edges_f32() {
    for kernel in KernelVariant::available() {
        block_edges::<f32>(kernel, 5);
    }
}

#[test]
fn block_edges_f64() {
    for kernel in KernelVariant::available() {
        block_edges::<f64>(kernel, 6);
    }
}

fn assert_bitwise_equal<T: Float>(serial: &[T], parallel: &[T], case: &Case) {
    assert_eq!(serial.len(), parallel.len());
    for (index, (s, p)) in serial.iter().zip(parallel).enumerate() {
        assert!(
            s.to_f64().to_bits() == p.to_f64().to_bits() || (s.is_nan() && p.is_nan()),
            "{case:?} {}: element {index} differs between 1 thread ({s}) and more ({p})",
            T::NAME
        );
    }
}

/// One large case against the reference (1 thread), then bit-identical on 2, 3 and 4 threads
/// and for the other transposes.
fn large<T: Float>(kernel: KernelVariant, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // ta = No, tb = Yes makes the reference's inner loop contiguous (it takes seconds otherwise)
    let case = Case {
        kernel,
        ta: Transpose::No,
        tb: Transpose::Yes,
        m: 2000,
        n: 2000,
        k: 160,
        alpha: 0.8,
        beta: 0.0,
        pad: 0,
    };
    let ops = operands::<T>(&case, &mut rng);
    let serial = pool(1).install(|| run::<T>(&case, &ops));
    check::<T>(&case, &ops, &serial);
    for threads in [2, 3, 4] {
        let parallel = pool(threads).install(|| run::<T>(&case, &ops));
        assert_bitwise_equal(&serial, &parallel, &case);
    }
    for (ta, tb) in TRANSPOSES {
        let case = Case {
            kernel,
            ta,
            tb,
            m: 700,
            n: 300,
            k: 600,
            alpha: -1.7,
            beta: 0.6,
            pad: 3,
        };
        let ops = operands::<T>(&case, &mut rng);
        let serial = pool(1).install(|| run::<T>(&case, &ops));
        let parallel = pool(4).install(|| run::<T>(&case, &ops));
        assert_bitwise_equal(&serial, &parallel, &case);
    }
}

#[test]
fn large_2000x2000x160_f32() {
    for kernel in KernelVariant::available() {
        large::<f32>(kernel, 7);
    }
}

#[test]
fn large_2000x2000x160_f64() {
    for kernel in KernelVariant::available() {
        large::<f64>(kernel, 8);
    }
}

/// Short, wide products (fewer than two MR-row strips per thread, so threads split C by
/// columns): against the reference, and bit-identical for 1 to 4 threads.
fn short_and_wide<T: Float>(kernel: KernelVariant, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for (index, &(m, n, k)) in [
        (1, 4001, 600),
        (13, 1000, 300),
        (30, 517, 400),
        (47, 2000, 64),
    ]
    .iter()
    .enumerate()
    {
        let (ta, tb) = TRANSPOSES[index % 4];
        let case = Case {
            kernel,
            ta,
            tb,
            m,
            n,
            k,
            alpha: -1.7,
            beta: BETAS[index % 3],
            pad: 2,
        };
        let ops = operands::<T>(&case, &mut rng);
        let serial = pool(1).install(|| run::<T>(&case, &ops));
        check::<T>(&case, &ops, &serial);
        for threads in [2, 3, 4] {
            let parallel = pool(threads).install(|| run::<T>(&case, &ops));
            assert_bitwise_equal(&serial, &parallel, &case);
        }
    }
}

#[test]
fn short_and_wide_f32() {
    for kernel in KernelVariant::available() {
        short_and_wide::<f32>(kernel, 10);
    }
}

#[test]
fn short_and_wide_f64() {
    for kernel in KernelVariant::available() {
        short_and_wide::<f64>(kernel, 11);
    }
}

/// beta == 0 with NaN and infinity in C: the result is alpha op(A) op(B) exactly as if C were
/// zero, also on the `alpha == 0` and `k == 0` shortcuts.
fn beta_zero_ignores_c<T: Float>(kernel: KernelVariant) {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    for (m, n, k, alpha) in [
        (13, 21, 7, 1.0),
        (13, 21, 0, 1.0),
        (13, 21, 7, 0.0),
        (300, 100, 200, -1.0),
    ] {
        let case = Case {
            kernel,
            ta: Transpose::No,
            tb: Transpose::No,
            m,
            n,
            k,
            alpha,
            beta: 0.0,
            pad: 0,
        };
        let ops = operands::<T>(&case, &mut rng);
        let mut zero_c = ops.c.clone();
        zero_c.fill(0.0);
        let clean = run::<T>(
            &case,
            &Operands {
                c: zero_c,
                ..ops_clone(&ops)
            },
        );
        for garbage in [f64::NAN, f64::INFINITY] {
            let mut dirty_c = ops.c.clone();
            dirty_c.fill(garbage);
            let dirty = run::<T>(
                &case,
                &Operands {
                    c: dirty_c,
                    ..ops_clone(&ops)
                },
            );
            assert_bitwise_equal(&clean, &dirty, &case);
            assert!(
                dirty.iter().all(|x| x.is_finite()),
                "{case:?}: C leaked into the result"
            );
        }
    }
}

fn ops_clone(ops: &Operands) -> Operands {
    Operands {
        a: ops.a.clone(),
        lda: ops.lda,
        b: ops.b.clone(),
        ldb: ops.ldb,
        c: ops.c.clone(),
        ldc: ops.ldc,
    }
}

#[test]
fn beta_zero_ignores_c_f32() {
    for kernel in KernelVariant::available() {
        beta_zero_ignores_c::<f32>(kernel);
    }
}

#[test]
fn beta_zero_ignores_c_f64() {
    for kernel in KernelVariant::available() {
        beta_zero_ignores_c::<f64>(kernel);
    }
}

#[test]
#[should_panic(expected = "leading dimension of A")]
fn leading_dimension_too_small_panics() {
    let a = vec![0.0f32; 12];
    let b = vec![0.0f32; 12];
    let mut c = vec![0.0f32; 9];
    gemm(
        Transpose::No,
        Transpose::No,
        3,
        3,
        4,
        1.0,
        &a,
        3,
        &b,
        3,
        0.0,
        &mut c,
        3,
    );
}

#[test]
#[should_panic(expected = "C has 8 elements")]
fn short_output_panics() {
    let a = vec![0.0f64; 12];
    let b = vec![0.0f64; 12];
    let mut c = vec![0.0f64; 8];
    gemm(
        Transpose::No,
        Transpose::No,
        3,
        3,
        4,
        1.0,
        &a,
        4,
        &b,
        3,
        0.0,
        &mut c,
        3,
    );
}
