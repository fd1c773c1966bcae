//! `gemm` on the packed path against the plain f64 reference over awkward shapes, block
//! edges, all transposes, scalars, padded leading dimensions, both element types and several
//! thread counts (the harness and its error bound: `tests/common/mod.rs`). Every case forces
//! `GemmPath::Packed`: the direct path of small and skinny shapes has its own tests in
//! `tests/gemm_direct.rs`, and here the packed blocking edges must stay covered.
//!
//! Every test runs once per kernel variant this CPU has (`Avx2`, and `Avx512` on AVX-512
//! machines), selected per call with `with_kernel_variant`; without AVX-512 the run says on
//! stderr that the 512-bit kernels were not exercised (`common::kernel_variants`).

mod common;

use common::{
    assert_bitwise_equal, check_case, check_grid, check_on_threads, operands, pool, run, Case,
    Operands, ALPHAS, BETAS, TRANSPOSES,
};

use benign_kernels::gemm::{blocking, GemmPath, KernelVariant};
use benign_kernels::{gemm, Float, MatMut, MatRef, Transpose};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const SIZES: [usize; 12] = [0, 1, 2, 7, 8, 9, 15, 16, 17, 63, 64, 65];
// Every (m, n, k) over `SIZES`; transposes, alpha, beta and padding cycle with the case index
// so that each combination shows up across the grid.
common::tests_per_kernel_variant! {
    shape_grid_f32 => check_grid::<f32>(GemmPath::Packed, (&SIZES, &SIZES), 1, 1);
    shape_grid_f64 => check_grid::<f64>(GemmPath::Packed, (&SIZES, &SIZES), 1, 2);
}

/// All transposes x alpha x beta on a few shapes crossing tile edges.
fn transposes_and_scalars<T: Float>(kernel: KernelVariant, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for (m, n, k) in [(7, 9, 17), (17, 16, 65), (65, 63, 9), (1, 33, 2)] {
        for transposes in TRANSPOSES {
            for alpha in ALPHAS {
                for beta in BETAS {
                    for pad in [0, 5] {
                        let base = Case::new(kernel, GemmPath::Packed, transposes, (m, n, k));
                        let case = Case {
                            alpha,
                            beta,
                            pad,
                            ..base
                        };
                        check_case::<T>(case, &mut rng);
                    }
                }
            }
        }
    }
}

common::tests_per_kernel_variant! {
    transposes_and_scalars_f32 => transposes_and_scalars::<f32>(3);
    transposes_and_scalars_f64 => transposes_and_scalars::<f64>(4);
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
        let base = Case::new(kernel, GemmPath::Packed, TRANSPOSES[index % 4], (m, n, k));
        let case = Case {
            beta: BETAS[index % 3],
            pad: 1,
            ..base
        };
        check_on_threads::<T>(&case, &mut rng, &[4]);
    }
}

common::tests_per_kernel_variant! {
    block_edges_f32 => block_edges::<f32>(5);
    block_edges_f64 => block_edges::<f64>(6);
}

/// One large case against the reference (1 thread), then bit-identical on 2, 3 and 4 threads
/// and for the other transposes.
fn large<T: Float>(kernel: KernelVariant, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // ta = No, tb = Yes makes the reference's inner loop contiguous (it takes seconds otherwise)
    let transposes = (Transpose::No, Transpose::Yes);
    let case = Case {
        alpha: 0.8,
        ..Case::new(kernel, GemmPath::Packed, transposes, (2000, 2000, 160))
    };
    check_on_threads::<T>(&case, &mut rng, &[2, 3, 4]);
    for transposes in TRANSPOSES {
        let case = Case {
            beta: 0.6,
            pad: 3,
            ..Case::new(kernel, GemmPath::Packed, transposes, (700, 300, 600))
        };
        let ops = operands::<T>(&case, &mut rng);
        let serial = pool(1).install(|| run::<T>(&case, &ops));
        let parallel = pool(4).install(|| run::<T>(&case, &ops));
        assert_bitwise_equal(&serial, &parallel, &case);
    }
}

common::tests_per_kernel_variant! {
    large_2000x2000x160_f32 => large::<f32>(7);
    large_2000x2000x160_f64 => large::<f64>(8);
}

/// Short, wide products (fewer than two MR-row strips per thread, so threads split C by
/// columns; each with a depth panel of at least `GEMM_PARALLEL_MIN_MULADDS`, so that they do
/// run on several threads): against the reference, and bit-identical for 1 to 4 threads.
fn short_and_wide<T: Float>(kernel: KernelVariant, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for (index, &(m, n, k)) in [
        (7, 4001, 600),
        (13, 1000, 300),
        (30, 517, 400),
        (47, 2000, 64),
    ]
    .iter()
    .enumerate()
    {
        let base = Case::new(kernel, GemmPath::Packed, TRANSPOSES[index % 4], (m, n, k));
        let case = Case {
            beta: BETAS[index % 3],
            pad: 2,
            ..base
        };
        check_on_threads::<T>(&case, &mut rng, &[2, 3, 4]);
    }
}

common::tests_per_kernel_variant! {
    short_and_wide_f32 => short_and_wide::<f32>(10);
    short_and_wide_f64 => short_and_wide::<f64>(11);
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
        let transposes = (Transpose::No, Transpose::No);
        let case = Case {
            alpha,
            ..Case::new(kernel, GemmPath::Packed, transposes, (m, n, k))
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

common::tests_per_kernel_variant! {
    beta_zero_ignores_c_f32 => beta_zero_ignores_c::<f32>();
    beta_zero_ignores_c_f64 => beta_zero_ignores_c::<f64>();
}

/// Operands `gemm` must refuse, with the words of the panic that names the fault.
struct Malformed {
    /// A as stored (12 elements): rows, columns, leading dimension.
    a: (usize, usize, usize),
    /// B as stored (12 elements, leading dimension its columns): rows, columns, and whether it
    /// is used transposed.
    b: (usize, usize, bool),
    /// C: rows, columns (its leading dimension), and the length of its storage.
    c: (usize, usize, usize),
    message: &'static str,
}

/// `op(A) op(B) = C` with A 3 x 4, B 4 x 3 and C 3 x 3, all well formed (no panic to name);
/// each case below spoils it in one way.
const WELL_FORMED: Malformed = Malformed {
    a: (3, 4, 4),
    b: (4, 3, false),
    c: (3, 3, 9),
    message: "",
};

const MALFORMED: [Malformed; 4] = [
    Malformed {
        a: (3, 4, 3),
        message: "leading dimension 3 is smaller than its 4 columns",
        ..WELL_FORMED
    },
    Malformed {
        c: (3, 3, 8),
        message: "8 elements, a 3 x 3 matrix with leading dimension 3 needs 9",
        ..WELL_FORMED
    },
    Malformed {
        b: (4, 3, true),
        c: (3, 4, 12),
        message: "op(A) is 3 x 4 but op(B) is 3 x 4: inner dimensions differ",
        ..WELL_FORMED
    },
    Malformed {
        c: (3, 4, 12),
        message: "op(A) op(B) is 3 x 3 but C is 3 x 4",
        ..WELL_FORMED
    },
];

fn malformed_operands_panic<T: Float>() {
    for case in MALFORMED {
        let (a, b) = (vec![T::ZERO; 12], vec![T::ZERO; 12]);
        let mut c = vec![T::ZERO; case.c.2];
        let call = std::panic::AssertUnwindSafe(|| {
            let (a_rows, a_cols, lda) = case.a;
            let (b_rows, b_cols, b_transposed) = case.b;
            let b_stored = MatRef::new(&b, b_rows, b_cols);
            let op_b = if b_transposed {
                b_stored.transpose()
            } else {
                b_stored
            };
            let op_a = MatRef::with_ld(&a, a_rows, a_cols, lda);
            gemm(
                T::ONE,
                op_a,
                op_b,
                T::ZERO,
                MatMut::new(&mut c, case.c.0, case.c.1),
            );
        });
        let panic = std::panic::catch_unwind(call).expect_err(case.message);
        let said = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        assert!(
            said.contains(case.message),
            "{}: the panic says {said:?}, not {:?}",
            T::NAME,
            case.message
        );
    }
}

#[test]
fn malformed_operands_panic_naming_the_fault() {
    malformed_operands_panic::<f32>();
    malformed_operands_panic::<f64>();
}

/// `B` (k x n, row-major) packed as `gemm_prepacked_b` takes it: micro-panels of NR columns,
/// k-major, the columns past n zero. Written from the contract, independently of the crate's
/// packing code.
fn packed_panels<T: Float>(b: &[T], (k, n): (usize, usize), nr: usize) -> Vec<T> {
    let mut panels = vec![T::ZERO; n.div_ceil(nr) * nr * k];
    for p in 0..k {
        for col in 0..n {
            panels[(col / nr) * k * nr + p * nr + col % nr] = b[p * n + col];
        }
    }
    panels
}

/// `gemm_prepacked_b` gives `gemm`'s bits on the packed path: shapes around MR, NR and MC, a
/// 162-row A (the subspace start-up's), one depth panel or less, A as stored and transposed,
/// three betas, 1 and 3 threads (the row split and the column split of short products). A
/// product deeper than KC summed as one call per depth panel, the later ones with `beta = 1`,
/// also gives `gemm`'s bits.
fn prepacked_b_is_gemm_bit_for_bit<T: Float>(kernel: KernelVariant, seed: u64) {
    use benign_kernels::gemm::{gemm_prepacked_b, with_gemm_path, with_kernel_variant};
    let blocking = blocking::<T>(kernel);
    let (mr, nr, kc) = (blocking.mr, blocking.nr, blocking.kc);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut random = |len: usize| -> Vec<T> {
        use rand::Rng;
        (0..len)
            .map(|_| T::from_f64(rng.random_range(-1.0..1.0)))
            .collect()
    };
    let by_gemm = |a: MatRef<'_, T>, b: &[T], n: usize, beta: f64, c: &mut [T]| {
        with_kernel_variant(kernel, || {
            with_gemm_path(GemmPath::Packed, || {
                gemm(
                    T::ONE,
                    a,
                    MatRef::new(b, a.cols(), n),
                    T::from_f64(beta),
                    MatMut::new(c, a.rows(), n),
                )
            })
        })
    };
    let depths = [1, 7, kc - 1, kc];
    let rows = [1, mr - 1, mr + 1, 162, blocking.mc + mr + 2];
    let cols = [1, 2, nr - 1, nr + 1, 3 * nr + 5, 672];
    for (case, (&m, &n)) in rows
        .iter()
        .flat_map(|m| cols.iter().map(move |n| (m, n)))
        .enumerate()
    {
        let k = depths[case % depths.len()];
        let beta = [0.0, 1.0, 0.6][case % 3];
        let transposed = case % 2 == 1;
        let (a, b, c0) = (random(m * k), random(k * n), random(m * n));
        let a = if transposed {
            MatRef::new(&a, k, m).transpose()
        } else {
            MatRef::new(&a, m, k)
        };
        let panels = packed_panels(&b, (k, n), nr);
        let mut expected = c0.clone();
        by_gemm(a, &b, n, beta, &mut expected);
        for threads in [1, 3] {
            let mut c = c0.clone();
            pool(threads).install(|| {
                with_kernel_variant(kernel, || {
                    gemm_prepacked_b(
                        T::ONE,
                        a,
                        &panels,
                        n,
                        T::from_f64(beta),
                        MatMut::new(&mut c, m, n),
                    )
                })
            });
            for (index, (x, y)) in expected.iter().zip(&c).enumerate() {
                assert_eq!(
                    x.to_f64().to_bits(),
                    y.to_f64().to_bits(),
                    "{kernel:?} {} {m}x{n}x{k} A transposed {transposed} beta {beta}, \
                     {threads} threads: element {index}",
                    T::NAME
                );
            }
        }
    }
    // deeper than one depth panel: one call per KC-deep panel
    let (m, n, k) = (162, 2 * nr + 3, 2 * kc + 5);
    let (a, b, c0) = (random(m * k), random(k * n), random(m * n));
    let mut expected = c0.clone();
    by_gemm(MatRef::new(&a, m, k), &b, n, 0.6, &mut expected);
    let mut c = c0;
    for first in (0..k).step_by(kc) {
        let depth = kc.min(k - first);
        let beta = if first == 0 { 0.6 } else { 1.0 };
        with_kernel_variant(kernel, || {
            gemm_prepacked_b(
                T::ONE,
                MatRef::with_ld(&a[first..], m, depth, k),
                &packed_panels(&b[first * n..][..depth * n], (depth, n), nr),
                n,
                T::from_f64(beta),
                MatMut::new(&mut c, m, n),
            )
        });
    }
    let same = expected
        .iter()
        .zip(&c)
        .all(|(x, y)| x.to_f64().to_bits() == y.to_f64().to_bits());
    assert!(
        same,
        "{kernel:?} {}: depth panels summed by calls differ",
        T::NAME
    );
}

common::tests_per_kernel_variant! {
    prepacked_b_is_gemm_bit_for_bit_f32 => prepacked_b_is_gemm_bit_for_bit::<f32>(12);
    prepacked_b_is_gemm_bit_for_bit_f64 => prepacked_b_is_gemm_bit_for_bit::<f64>(13);
}

/// On one thread a product whose rows fit one MC block packs B a few micro-panels at a time,
/// just before their tiles; that must give the bits of B packed whole, here through
/// `gemm_prepacked_b` on panels packed by this file's `packed_panels`, one call per depth
/// panel. Rows from one to MC, columns over several packing groups plus a partial panel, two
/// depth panels, op(B) as stored and transposed.
fn deferred_b_packing_is_bit_for_bit<T: Float>(kernel: KernelVariant, seed: u64) {
    use benign_kernels::gemm::{gemm_prepacked_b, with_gemm_path, with_kernel_variant};
    let blocking = blocking::<T>(kernel);
    let (mr, nr, kc, mc) = (blocking.mr, blocking.nr, blocking.kc, blocking.mc);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut random = |len: usize| -> Vec<T> {
        use rand::Rng;
        (0..len)
            .map(|_| T::from_f64(rng.random_range(-1.0..1.0)))
            .collect()
    };
    let k = kc + 7;
    for (case, &(m, n)) in [
        (1, 3),
        (mr + 1, 9 * nr + 5),
        (162, 13 * nr - 3),
        (mc, 8 * nr),
    ]
    .iter()
    .enumerate()
    {
        let b_transposed = case % 2 == 0;
        let (a, b_kn, c0) = (random(m * k), random(k * n), random(m * n));
        // op(B) = b_kn (k x n): stored as is, or stored n x k and used transposed
        let b_nk: Vec<T> = (0..n * k).map(|i| b_kn[(i % k) * n + i / k]).collect();
        let b = if b_transposed {
            MatRef::new(&b_nk, n, k).transpose()
        } else {
            MatRef::new(&b_kn, k, n)
        };
        let mut c = c0.clone();
        pool(1).install(|| {
            with_kernel_variant(kernel, || {
                with_gemm_path(GemmPath::Packed, || {
                    gemm(
                        T::ONE,
                        MatRef::new(&a, m, k),
                        b,
                        T::from_f64(0.6),
                        MatMut::new(&mut c, m, n),
                    )
                })
            })
        });
        let mut expected = c0;
        for first in (0..k).step_by(kc) {
            let depth = kc.min(k - first);
            with_kernel_variant(kernel, || {
                gemm_prepacked_b(
                    T::ONE,
                    MatRef::with_ld(&a[first..], m, depth, k),
                    &packed_panels(&b_kn[first * n..][..depth * n], (depth, n), nr),
                    n,
                    T::from_f64(if first == 0 { 0.6 } else { 1.0 }),
                    MatMut::new(&mut expected, m, n),
                )
            });
        }
        for (index, (x, y)) in expected.iter().zip(&c).enumerate() {
            assert_eq!(
                x.to_f64().to_bits(),
                y.to_f64().to_bits(),
                "{kernel:?} {} {m}x{n}x{k}, B transposed {b_transposed}: element {index}",
                T::NAME
            );
        }
    }
}

common::tests_per_kernel_variant! {
    deferred_b_packing_is_bit_for_bit_f32 => deferred_b_packing_is_bit_for_bit::<f32>(14);
    deferred_b_packing_is_bit_for_bit_f64 => deferred_b_packing_is_bit_for_bit::<f64>(15);
}
