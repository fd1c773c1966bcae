//! `matmul`, the shape-dispatching product: against the f64 reference over the degenerate
//! shapes it routes (vectors, outer products, empty depth) with every transpose, scalar and
//! padding, and bit for bit against the kernel each dispatch rule names, so that a change of
//! route shows up here before it changes a caller's results.

mod common;

use common::{bits, check, operands, random, run_entry, Case, ALPHAS, BETAS, TRANSPOSES};

use benign_kernels::gemm::{with_gemm_path, with_kernel_variant, GemmPath, KernelVariant};
use benign_kernels::{
    gemm, gemv, ger, matmul, Float, MatMut, MatRef, Transpose, SINGLE_PASS_DEPTH,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const SIZES: [usize; 6] = [0, 1, 2, 5, 17, 40];

/// Every (m, n, k) over `SIZES` with at least one of them at most 1 (the shapes with a rule of
/// their own) plus a few ordinary ones, under every transpose, alpha, beta and padding (a padded
/// one-column operand is not adjacent in storage and must fall through to `gemm`).
fn against_reference<T: Float>(seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let kernel = *common::kernel_variants().last().unwrap();
    for m in SIZES {
        for n in SIZES {
            for k in SIZES {
                if m.min(n).min(k) > 1 && (m, n, k) != (17, 40, 5) {
                    continue;
                }
                for transposes in TRANSPOSES {
                    for (alpha, beta) in ALPHAS.into_iter().zip(BETAS).chain([(1.0, 1.0)]) {
                        for pad in [0, 3] {
                            let case = Case {
                                alpha,
                                beta,
                                pad,
                                ..Case::new(kernel, GemmPath::Auto, transposes, (m, n, k))
                            };
                            let ops = operands::<T>(&case, &mut rng);
                            let got = run_entry::<T>(&case, &ops, matmul::<T>);
                            check::<T>(&case, &ops, &got);
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn against_reference_f32() {
    against_reference::<f32>(11);
}

#[test]
fn against_reference_f64() {
    against_reference::<f64>(12);
}

/// `matmul` on contiguous operands, and the result of the kernel its dispatch rule names.
fn routed<T: Float>(ta: Transpose, tb: Transpose, (m, n, k): (usize, usize, usize), beta: T) {
    let mut rng = ChaCha8Rng::seed_from_u64((m * 10_000 + n * 100 + k) as u64);
    let alpha = T::from_f64(-1.25);
    let (a, b, c0) = (
        random::<T>(&mut rng, m * k, 1.0),
        random::<T>(&mut rng, k * n, 1.0),
        random::<T>(&mut rng, m * n, 1.0),
    );
    let op_a = MatRef::op_with_ld(ta, &a, m, k, if ta == Transpose::No { k } else { m });
    let op_b = MatRef::op_with_ld(tb, &b, k, n, if tb == Transpose::No { n } else { k });
    let mut got = c0.clone();
    matmul(alpha, op_a, op_b, beta, MatMut::new(&mut got, m, n));
    let mut want = c0;
    if n == 1 {
        gemv(alpha, op_a, &b, beta, &mut want);
    } else if m == 1 {
        gemv(alpha, op_b.transpose(), &a, beta, &mut want);
    } else if k == 1 && beta == T::ONE {
        ger(alpha, &a, &b, MatMut::new(&mut want, m, n));
    } else if k == 1 && beta == T::ZERO {
        for (row, &x) in want.chunks_mut(n).zip(&a) {
            for (w, &y) in row.iter_mut().zip(&b) {
                *w = alpha * x * y;
            }
        }
    } else {
        gemm(alpha, op_a, op_b, beta, MatMut::new(&mut want, m, n));
    }
    assert_eq!(
        bits(&got),
        bits(&want),
        "{} {ta:?}{tb:?} {m}x{n}x{k} beta {}",
        T::NAME,
        beta.to_f64()
    );
}

fn every_rule<T: Float>() {
    let shapes = [
        (300, 1, 70),
        (1, 300, 70),
        (1, 1, 70),
        (60, 50, 1),
        (1, 1, 1),
        (40, 30, 20),
        (3, 700, 500),
    ];
    for (ta, tb) in TRANSPOSES {
        for shape in shapes {
            for beta in [0.0, 1.0, 0.5] {
                routed::<T>(ta, tb, shape, T::from_f64(beta));
            }
        }
    }
}

#[test]
fn every_rule_picks_its_kernel_f32() {
    every_rule::<f32>();
}

#[test]
fn every_rule_picks_its_kernel_f64() {
    every_rule::<f64>();
}

/// At depths up to `SINGLE_PASS_DEPTH`, `matmul(-lr, L^T, R, 1, W)` is bit for bit
/// `W - lr G` with `G = matmul(1, L^T, R, 0, _)`, the promise SGD relies on to fold its update
/// into the product: on both paths (direct and packed), every kernel variant, 1 and 3 threads,
/// at the shallowest and deepest such depths and across tile and block edges.
fn folds_an_update<T: Float>(kernel: KernelVariant) {
    let lr = T::from_f64(0.0123);
    let shapes = [
        (2, 2, 2),
        (20, 2000, 20),
        (161, 37, 7),
        (300, 290, SINGLE_PASS_DEPTH),
        (13, 529, SINGLE_PASS_DEPTH - 1),
    ];
    for (rows, cols, depth) in shapes {
        let mut rng = ChaCha8Rng::seed_from_u64((rows * 7 + cols * 3 + depth) as u64);
        let left = random::<T>(&mut rng, depth * rows, 1.0);
        let right = random::<T>(&mut rng, depth * cols, 1.0);
        let w0 = random::<T>(&mut rng, rows * cols, 1.0);
        let l = MatRef::new(&left, depth, rows).transpose();
        let r = MatRef::new(&right, depth, cols);
        for path in [GemmPath::Auto, GemmPath::Packed, GemmPath::Direct] {
            for threads in [1, 3] {
                let (fused, separate) = common::pool(threads).install(|| {
                    with_kernel_variant(kernel, || {
                        with_gemm_path(path, || {
                            let mut fused = w0.clone();
                            matmul(
                                T::ZERO - lr,
                                l,
                                r,
                                T::ONE,
                                MatMut::new(&mut fused, rows, cols),
                            );
                            let mut g = vec![T::ZERO; rows * cols];
                            matmul(T::ONE, l, r, T::ZERO, MatMut::new(&mut g, rows, cols));
                            let separate: Vec<T> =
                                w0.iter().zip(&g).map(|(&w, &g)| w - lr * g).collect();
                            (fused, separate)
                        })
                    })
                });
                assert_eq!(
                    bits(&fused),
                    bits(&separate),
                    "{kernel:?} {path:?}, {threads} threads, {rows} x {cols} of depth {depth}"
                );
            }
        }
    }
}

common::tests_per_kernel_variant! {
    single_pass_depth_folds_an_update_f32 => folds_an_update::<f32>();
    single_pass_depth_folds_an_update_f64 => folds_an_update::<f64>();
}
