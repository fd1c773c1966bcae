//! Level-1 and level-2 kernels (dot, axpy, scale, sums, GEMV, GER) against the plain f64
//! references, over awkward shapes, in f32 and f64, and bit-identical across thread counts.
//!
//! Tolerances: a length-k reduction computed in precision u (u = EPSILON/2) in any order,
//! fused or not, satisfies |fl(s) - s| <= gamma_k sum|terms| with gamma_k = k u / (1 - k u)
//! (Higham, Accuracy and Stability, 3.1). The kernels add at most three more roundings (alpha,
//! beta, the final add), so we allow `(k + 4) EPSILON sum|terms|`: twice the worst case, yet
//! for f32 at k = 2000 still only 2.4e-4 of the absolute term sum, which catches any indexing
//! or blocking error (those are O(1) relative). The reference inputs are the same f32 values
//! widened exactly to f64, so the reference error is negligible.

use benign_kernels::{reference, Float, MatMut, MatRef, Transpose};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

mod common;
use common::{bits, pool, random, widen};

const SIZES: [usize; 15] = [0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 33, 63, 64, 65];

/// `|got - want| <= (k + 4) eps scale + tiny`, element by element, with a message.
fn assert_close<T: Float>(what: &str, got: &[T], want: &[f64], k: usize, scale: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let eps = T::EPSILON.to_f64();
    for (i, ((&g, &w), &s)) in got.iter().zip(want).zip(scale).enumerate() {
        let tol = (k as f64 + 4.0) * eps * s + 1e-300;
        let err = (g.to_f64() - w).abs();
        assert!(
            err <= tol,
            "{what} ({}): element {i}: got {g}, want {w}, err {err:e} > tol {tol:e}",
            T::NAME
        );
    }
}

fn check_level1<T: Float>(rng: &mut ChaCha8Rng) {
    for &n in SIZES.iter().chain(&[127, 128, 129, 1000, 4097]) {
        let x = random::<T>(rng, n, 1.0);
        let y = random::<T>(rng, n, 1.0);
        let (xw, yw) = (widen(&x), widen(&y));
        let abs_dot: f64 = xw.iter().zip(&yw).map(|(a, b)| (a * b).abs()).sum();
        assert_close(
            "dot",
            &[benign_kernels::dot(&x, &y)],
            &[reference::dot(&xw, &yw)],
            n,
            &[abs_dot],
        );
        let abs_sum: f64 = xw.iter().map(|a| a.abs()).sum();
        assert_close(
            "sum",
            &[benign_kernels::sum(&x)],
            &[reference::sum(&xw)],
            n,
            &[abs_sum],
        );

        let alpha = T::from_f64(-1.75);
        let mut got = y.clone();
        benign_kernels::axpy(alpha, &x, &mut got);
        let mut want = yw.clone();
        reference::axpy(-1.75, &xw, &mut want);
        let scale: Vec<f64> = xw
            .iter()
            .zip(&yw)
            .map(|(a, b)| 1.75 * a.abs() + b.abs())
            .collect();
        assert_close("axpy", &got, &want, 1, &scale);

        let mut got = x.clone();
        benign_kernels::scale(alpha, &mut got);
        let mut want = xw.clone();
        reference::scale(-1.75, &mut want);
        let scale: Vec<f64> = want.iter().map(|v| v.abs()).collect();
        assert_close("scale", &got, &want, 0, &scale);
    }
}

#[test]
fn level1_matches_reference() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    check_level1::<f32>(&mut rng);
    check_level1::<f64>(&mut rng);
}

/// `row_sums` or `col_sums`: `(rows, cols, x, ldx, out)`.
type Sums<S> = fn(usize, usize, &[S], usize, &mut [S]);
/// A sums kernel to check: its name, the kernel, its reference, its outputs and the terms each
/// output sums.
type SumsCase<T> = (&'static str, Sums<T>, Sums<f64>, usize, usize);

fn check_sums<T: Float>(rng: &mut ChaCha8Rng, rows: usize, cols: usize, ldx: usize) {
    let x = random::<T>(
        rng,
        if rows == 0 {
            0
        } else {
            (rows - 1) * ldx + cols
        },
        1.0,
    );
    let xw = widen(&x);
    let abs: Vec<f64> = xw.iter().map(|v| v.abs()).collect();
    let sums: [SumsCase<T>; 2] = [
        (
            "row_sums",
            benign_kernels::row_sums,
            reference::row_sums,
            rows,
            cols,
        ),
        (
            "col_sums",
            benign_kernels::col_sums,
            reference::col_sums,
            cols,
            rows,
        ),
    ];
    for (name, kernel, reference, outputs, terms) in sums {
        let mut got = vec![T::from_f64(f64::NAN); outputs];
        kernel(rows, cols, &x, ldx, &mut got);
        let mut want = vec![0.0; outputs];
        reference(rows, cols, &xw, ldx, &mut want);
        let mut scale = vec![0.0; outputs];
        reference(rows, cols, &abs, ldx, &mut scale);
        assert_close(&format!("{name} {rows}x{cols}"), &got, &want, terms, &scale);
    }
}

#[test]
fn row_and_col_sums_match_reference() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for &r in &SIZES {
        for &c in &SIZES {
            check_sums::<f32>(&mut rng, r, c, c + 3);
            check_sums::<f64>(&mut rng, r, c, c);
        }
    }
    // Threaded shapes, column-block edges (blocks are multiples of 64 columns).
    check_sums::<f32>(&mut rng, 1000, 513, 515);
    check_sums::<f64>(&mut rng, 8192, 65, 65);
}

/// GEMV of an `m x n` matrix stored with leading dimension `lda`, used as `ta` says, against
/// the f64 reference.
fn check_gemv<T: Float>(
    rng: &mut ChaCha8Rng,
    ta: Transpose,
    (m, n, lda): (usize, usize, usize),
    (alpha, beta): (f64, f64),
) {
    let a = random::<T>(rng, if m == 0 { 0 } else { (m - 1) * lda + n }, 1.0);
    let (xl, yl) = match ta {
        Transpose::No => (n, m),
        Transpose::Yes => (m, n),
    };
    let x = random::<T>(rng, xl, 1.0);
    let mut y = random::<T>(rng, yl, 1.0);
    if beta == 0.0 {
        // beta == 0 must never read y.
        y.iter_mut().for_each(|v| *v = T::from_f64(f64::NAN));
    }
    let (aw, xw, yw) = (widen(&a), widen(&x), widen(&y));
    let mut want = yw.clone();
    reference::gemv(
        alpha,
        MatRef::with_ld(&aw, m, n, lda).op(ta),
        &xw,
        beta,
        &mut want,
    );
    // Scale: the same product on absolute values.
    let abs_a: Vec<f64> = aw.iter().map(|v| v.abs()).collect();
    let abs_x: Vec<f64> = xw.iter().map(|v| v.abs()).collect();
    let mut scale: Vec<f64> = yw
        .iter()
        .map(|v| if beta == 0.0 { 0.0 } else { v.abs() })
        .collect();
    reference::gemv(
        alpha.abs(),
        MatRef::with_ld(&abs_a, m, n, lda).op(ta),
        &abs_x,
        beta.abs(),
        &mut scale,
    );
    benign_kernels::gemv(
        T::from_f64(alpha),
        MatRef::with_ld(&a, m, n, lda).op(ta),
        &x,
        T::from_f64(beta),
        &mut y,
    );
    let k = match ta {
        Transpose::No => n,
        Transpose::Yes => m,
    };
    let what = format!("gemv {ta:?} m={m} n={n} lda={lda} alpha={alpha} beta={beta}");
    assert_close(&what, &y, &want, k, &scale);
}

#[test]
fn gemv_matches_reference_over_awkward_shapes() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for ta in [Transpose::No, Transpose::Yes] {
        for &m in &SIZES {
            for &n in &SIZES {
                for (alpha, beta) in [(1.0, 0.0), (0.0, 1.0), (-0.7, 1.3), (1.0, 1.0), (2.5, 0.0)] {
                    check_gemv::<f32>(&mut rng, ta, (m, n, n + 5), (alpha, beta));
                    check_gemv::<f64>(&mut rng, ta, (m, n, n), (alpha, beta));
                }
            }
        }
    }
}

#[test]
fn gemv_matches_reference_on_large_and_threaded_shapes() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    for ta in [Transpose::No, Transpose::Yes] {
        // Parallel (>= 2^18 multiply-adds), row/column-block edges, L1 y-block edges (Yes:
        // 8192 f32 / 4096 f64 columns per block).
        check_gemv::<f32>(&mut rng, ta, (2000, 2000, 2000), (0.5, 0.0));
        check_gemv::<f64>(&mut rng, ta, (2000, 2000, 2003), (1.0, -2.0));
        check_gemv::<f32>(&mut rng, ta, (8192, 513, 513), (1.0, 1.0));
        check_gemv::<f64>(&mut rng, ta, (513, 8197, 8200), (-1.5, 0.0));
        check_gemv::<f32>(&mut rng, ta, (65, 8193, 8193), (1.0, 0.0));
    }
}

fn check_ger<T: Float>(rng: &mut ChaCha8Rng, m: usize, n: usize, lda: usize, alpha: f64) {
    let mut a = random::<T>(rng, if m == 0 { 0 } else { (m - 1) * lda + n }, 1.0);
    let x = random::<T>(rng, m, 1.0);
    let y = random::<T>(rng, n, 1.0);
    let (xw, yw) = (widen(&x), widen(&y));
    let mut want = widen(&a);
    reference::ger(alpha, &xw, &yw, MatMut::with_ld(&mut want, m, n, lda));
    let scale: Vec<f64> = (0..a.len())
        .map(|p| {
            let (i, j) = (p / lda.max(1), p % lda.max(1));
            let prod = if j < n {
                (alpha * xw[i] * yw[j]).abs()
            } else {
                0.0
            };
            a[p].to_f64().abs() + prod
        })
        .collect();
    benign_kernels::ger(
        T::from_f64(alpha),
        &x,
        &y,
        MatMut::with_ld(&mut a, m, n, lda),
    );
    assert_close(
        &format!("ger m={m} n={n} lda={lda} alpha={alpha}"),
        &a,
        &want,
        2,
        &scale,
    );
}

#[test]
fn ger_matches_reference() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for &m in &SIZES {
        for &n in &SIZES {
            for alpha in [0.0, 1.0, -0.3] {
                check_ger::<f32>(&mut rng, m, n, n + 2, alpha);
                check_ger::<f64>(&mut rng, m, n, n, alpha);
            }
        }
    }
    check_ger::<f32>(&mut rng, 2000, 2000, 2001, 0.25);
    check_ger::<f64>(&mut rng, 8192, 513, 513, -1.0);
}

fn threaded_bits<T: Float>(rng: &mut ChaCha8Rng) {
    let (m, n) = (1031, 1543);
    let a = random::<T>(rng, m * n, 1.0);
    let xs = random::<T>(rng, n.max(m), 1.0);
    let y0 = random::<T>(rng, n.max(m), 1.0);
    let run = |threads: usize| {
        pool(threads).install(|| {
            let mut out = Vec::new();
            for ta in [Transpose::No, Transpose::Yes] {
                let mut y = y0.clone();
                benign_kernels::gemv(
                    T::ONE,
                    MatRef::new(&a, m, n).op(ta),
                    &xs,
                    T::from_f64(0.5),
                    &mut y,
                );
                out.extend(bits(&y));
            }
            let mut g = a.clone();
            benign_kernels::ger(
                T::from_f64(0.3),
                &xs[..m],
                &xs[..n],
                MatMut::new(&mut g, m, n),
            );
            out.extend(bits(&g));
            let mut rs = vec![T::ZERO; m];
            benign_kernels::row_sums(m, n, &a, n, &mut rs);
            let mut cs = vec![T::ZERO; n];
            benign_kernels::col_sums(m, n, &a, n, &mut cs);
            out.extend(bits(&rs));
            out.extend(bits(&cs));
            out.push(benign_kernels::dot(&a, &a).to_f64().to_bits());
            out
        })
    };
    assert_eq!(
        run(1),
        run(4),
        "{}: results differ between 1 and 4 threads",
        T::NAME
    );
    assert_eq!(
        run(1),
        run(3),
        "{}: results differ between 1 and 3 threads",
        T::NAME
    );
}

#[test]
fn results_are_bit_identical_for_any_thread_count() {
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    threaded_bits::<f32>(&mut rng);
    threaded_bits::<f64>(&mut rng);
}

#[test]
fn gemv_beta_zero_ignores_nan_in_y_and_alpha_zero_scales() {
    let a = vec![1.0f32; 9 * 17];
    let x = vec![2.0f32; 17];
    let mut y = vec![f32::NAN; 9];
    benign_kernels::gemv(1.0, MatRef::new(&a, 9, 17), &x, 0.0, &mut y);
    assert!(y.iter().all(|&v| v == 34.0), "{y:?}");
    let mut y = vec![f32::NAN; 17];
    benign_kernels::gemv(
        1.0,
        MatRef::new(&a, 9, 17).transpose(),
        &x[..9],
        0.0,
        &mut y,
    );
    assert!(y.iter().all(|&v| v == 18.0), "{y:?}");
    let mut y = vec![3.0f64; 9];
    let a64 = vec![1.0f64; 9 * 17];
    benign_kernels::gemv(0.0, MatRef::new(&a64, 9, 17), &[1.0; 17], 2.0, &mut y);
    assert!(y.iter().all(|&v| v == 6.0), "{y:?}");
}

/// `axpy_finite` and `ger_finite` write exactly what `axpy` and `ger` write and report a
/// non-finite result wherever it lands (vector body, tail, any row, any thread's block).
fn finite_checks<T: Float>(rng: &mut ChaCha8Rng) {
    for &n in &SIZES {
        let x = random::<T>(rng, n, 1.0);
        let y = random::<T>(rng, n, 1.0);
        let alpha = T::from_f64(-0.75);
        let (mut plain, mut checked) = (y.clone(), y.clone());
        benign_kernels::axpy(alpha, &x, &mut plain);
        assert!(benign_kernels::axpy_finite(alpha, &x, &mut checked));
        assert_eq!(bits(&plain), bits(&checked));
        for i in 0..n {
            for bad in [T::INFINITY, T::NEG_INFINITY, T::from_f64(f64::NAN)] {
                let mut y_bad = y.clone();
                y_bad[i] = bad;
                assert!(
                    !benign_kernels::axpy_finite(alpha, &x, &mut y_bad),
                    "{n} {i}"
                );
            }
            // Overflow of finite inputs is caught too.
            let mut huge = x.clone();
            huge[i] = T::from_f64(f32::MAX as f64);
            let mut y_over = y.clone();
            y_over[i] = T::from_f64(f32::MAX as f64);
            let big = T::from_f64(if T::NAME == "f32" { 2.0 } else { 1e300 });
            assert!(
                !benign_kernels::axpy_finite(big, &huge, &mut y_over),
                "{n} {i}"
            );
        }
    }
    for (m, n, lda) in [(1, 1, 1), (5, 9, 11), (37, 19, 19), (1031, 1543, 1543)] {
        let a = random::<T>(rng, (m - 1) * lda + n, 1.0);
        let x = random::<T>(rng, m, 1.0);
        let y = random::<T>(rng, n, 1.0);
        let alpha = T::from_f64(0.3);
        let (mut plain, mut checked) = (a.clone(), a.clone());
        benign_kernels::ger(alpha, &x, &y, MatMut::with_ld(&mut plain, m, n, lda));
        assert!(benign_kernels::ger_finite(
            alpha,
            &x,
            &y,
            MatMut::with_ld(&mut checked, m, n, lda)
        ));
        assert_eq!(bits(&plain), bits(&checked));
        for (i, j) in [(0, 0), (m - 1, n - 1), (m / 2, n / 3)] {
            let mut a_bad = a.clone();
            a_bad[i * lda + j] = T::from_f64(f64::NAN);
            assert!(
                !benign_kernels::ger_finite(alpha, &x, &y, MatMut::with_ld(&mut a_bad, m, n, lda)),
                "{m} x {n} at ({i}, {j})"
            );
        }
        // Padding between rows (lda > n) is not part of A.
        if lda > n {
            let mut padded = a.clone();
            padded[n] = T::INFINITY;
            assert!(benign_kernels::ger_finite(
                alpha,
                &x,
                &y,
                MatMut::with_ld(&mut padded, m, n, lda)
            ));
        }
    }
}

#[test]
fn finite_checking_updates_match_and_detect() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    finite_checks::<f32>(&mut rng);
    finite_checks::<f64>(&mut rng);
}
