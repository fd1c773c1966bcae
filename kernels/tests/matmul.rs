//! `matmul`, the shape-dispatching product: against the f64 reference over the degenerate
//! shapes it routes (vectors, outer products, empty depth) with every transpose, scalar and
//! padding, and bit for bit against the kernel each dispatch rule names, so that a change of
//! route shows up here before it changes a caller's results.

mod common;

use common::{bits, check, operands, random, run_entry, Case, ALPHAS, BETAS, TRANSPOSES};

use benign_kernels::gemm::GemmPath;
use benign_kernels::{gemm, gemv, ger, matmul, Float, MatMut, MatRef, Transpose};
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
