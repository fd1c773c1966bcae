//! Row-wise kernels (softmax, log-softmax, layer norm, GELU, their backward passes) and the
//! vector exp / erf approximations, against the plain f64 references.
//!
//! Tolerances, relative to the reference value (plus an absolute floor for values near 0):
//! each output is a short chain of roundings plus one length-`cols` reduction (the softmax
//! denominator, the layer-norm mean / variance, the backward inner products). The reduction
//! contributes at most gamma_cols ~ cols EPSILON/2 relative to its absolute-term sum and the
//! vector exp / erfc a few ulp, so `(cols + 16) EPSILON` is a safe bound that still catches
//! any indexing, masking or formula error (those are O(1)). For f32 at cols = 197 that is
//! 2.5e-5 relative.

use benign_kernels::gemm::with_kernel_variant;
use benign_kernels::{reference, simd::testing, Float};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

mod common;
use common::{assert_close, bits, pool, random, widen};

const COLS: [usize; 16] = [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 33, 63, 64, 65];

fn tol<T: Float>(cols: usize) -> f64 {
    (cols as f64 + 16.0) * T::EPSILON.to_f64()
}

fn check_softmax<T: Float>(rng: &mut ChaCha8Rng, rows: usize, cols: usize, spread: f64) {
    let x = random::<T>(rng, rows * cols, spread);
    let xw = widen(&x);
    let t = tol::<T>(cols);
    let what = format!("rows={rows} cols={cols} spread={spread}");

    let mut y = vec![T::ZERO; x.len()];
    benign_kernels::softmax_rows(cols, &x, &mut y);
    let mut yw = vec![0.0; x.len()];
    reference::softmax_rows(cols, &xw, &mut yw);
    assert_close(&format!("softmax {what}"), &y, &yw, t, 1e-300);

    let mut ly = vec![T::ZERO; x.len()];
    benign_kernels::log_softmax_rows(cols, &x, &mut ly);
    let mut lyw = vec![0.0; x.len()];
    reference::log_softmax_rows(cols, &xw, &mut lyw);
    // x - lse loses relative accuracy when the result is near 0: absolute floor from |x|.
    assert_close(
        &format!("log_softmax {what}"),
        &ly,
        &lyw,
        t,
        t * (spread + 1.0),
    );

    let dy = random::<T>(rng, x.len(), 1.0);
    let dyw = widen(&dy);
    let mut dx = vec![T::ZERO; x.len()];
    benign_kernels::softmax_rows_backward(cols, &y, &dy, &mut dx);
    let mut dxw = vec![0.0; x.len()];
    reference::softmax_rows_backward(cols, &widen(&y), &dyw, &mut dxw);
    // dx_j = y_j (dy_j - <dy, y>): absolute error ~ y_j (|dy_j| + sum|dy y|) t <= 2 y_j t.
    let scale: Vec<f64> = widen(&y).iter().map(|v| 2.0 * v.abs() * t).collect();
    for (i, ((&g, &w), &s)) in dx.iter().zip(&dxw).zip(&scale).enumerate() {
        assert!(
            (g.to_f64() - w).abs() <= s + 1e-300,
            "softmax backward {what}: {i}: {g} vs {w}"
        );
    }
    let mut dx = vec![T::ZERO; x.len()];
    benign_kernels::log_softmax_rows_backward(cols, &ly, &dy, &mut dx);
    let mut dxw = vec![0.0; x.len()];
    reference::log_softmax_rows_backward(cols, &widen(&ly), &dyw, &mut dxw);
    // dx_j = dy_j - p_j sum dy: error ~ (|dy_j| + p_j sum|dy|) t <= (1 + cols) t.
    assert_close(
        &format!("log_softmax backward {what}"),
        &dx,
        &dxw,
        t,
        (cols as f64 + 1.0) * t,
    );
}

/// Every kernel variant this CPU has: long f32 rows run on 512-bit vectors under `Avx512`.
#[test]
fn softmax_family_matches_reference() {
    for variant in common::kernel_variants() {
        with_kernel_variant(variant, || {
            let mut rng = ChaCha8Rng::seed_from_u64(10);
            for &cols in COLS.iter().chain(&[127, 128, 197, 1000]) {
                for rows in [0, 1, 3, 9] {
                    for spread in [1.0, 30.0] {
                        check_softmax::<f32>(&mut rng, rows, cols, spread);
                        check_softmax::<f64>(&mut rng, rows, cols, spread);
                    }
                }
            }
            // Threaded shapes (>= 2^18 elements): the paper's 8000 x 8 and ViT-like 197 columns.
            check_softmax::<f32>(&mut rng, 8000, 8, 5.0);
            check_softmax::<f32>(&mut rng, 20 * 197, 197, 5.0);
            check_softmax::<f64>(&mut rng, 20 * 197, 197, 5.0);
        })
    }
}

fn check_softmax_invariants<T: Float>(rng: &mut ChaCha8Rng, cols: usize) {
    let rows = 7;
    // Multiples of 1/64 in [-4, 4]: adding 3 is exact in f32, so the shift must not change a bit.
    let x: Vec<T> = (0..rows * cols)
        .map(|_| T::from_f64(rng.random_range(-256i32..256) as f64 / 64.0))
        .collect();
    let mut y = vec![T::ZERO; x.len()];
    benign_kernels::softmax_rows(cols, &x, &mut y);
    for (r, row) in y.chunks(cols).enumerate() {
        let s: f64 = row.iter().map(|v| v.to_f64()).sum();
        assert!((s - 1.0).abs() <= tol::<T>(cols), "row {r} sums to {s}");
        assert!(row.iter().all(|&v| v >= T::ZERO && v <= T::ONE));
    }
    let shifted: Vec<T> = x.iter().map(|&v| v + T::from_f64(3.0)).collect();
    let mut ys = vec![T::ZERO; x.len()];
    benign_kernels::softmax_rows(cols, &shifted, &mut ys);
    assert_eq!(
        bits(&y),
        bits(&ys),
        "softmax not shift invariant (cols {cols})"
    );

    // Huge logits, -inf entries, an all -inf row, a NaN row and a +inf row between normal rows.
    let mut x = random::<T>(rng, 6 * cols, 1.0);
    x[0] = T::from_f64(1e30);
    if cols > 1 {
        x[1] = T::from_f64(-1e30);
    }
    for v in &mut x[cols..2 * cols] {
        *v = T::NEG_INFINITY;
    }
    if cols > 1 {
        x[2 * cols + 1] = T::NEG_INFINITY;
    }
    x[3 * cols + cols / 2] = T::from_f64(f64::NAN);
    x[4 * cols + cols - 1] = T::INFINITY;
    // A large logit away from column 0: overflows exp unless the row max is subtracted.
    x[5 * cols + cols - 1] = T::from_f64(800.0);
    let mut y = vec![T::from_f64(f64::NAN); x.len()];
    benign_kernels::softmax_rows(cols, &x, &mut y);
    assert_eq!(y[0], T::ONE, "huge logit takes all the mass");
    assert!(y[1..cols].iter().all(|&v| v == T::ZERO));
    assert!(
        y[cols..2 * cols].iter().all(|&v| v == T::ZERO),
        "all -inf row gives zeros"
    );
    if cols > 1 {
        assert_eq!(y[2 * cols + 1], T::ZERO, "-inf entry gets probability 0");
    }
    let s2: f64 = y[2 * cols..3 * cols].iter().map(|v| v.to_f64()).sum();
    assert!(
        (s2 - 1.0).abs() <= tol::<T>(cols),
        "row with a -inf entry sums to {s2}"
    );
    assert!(
        y[3 * cols..4 * cols].iter().all(|v| v.is_nan()),
        "NaN row is NaN"
    );
    assert!(
        y[4 * cols..5 * cols].iter().all(|v| v.is_nan()),
        "+inf row is NaN"
    );
    let s5: f64 = y[5 * cols..].iter().map(|v| v.to_f64()).sum();
    assert!(
        (s5 - 1.0).abs() <= tol::<T>(cols),
        "last row poisoned: sums to {s5}"
    );

    let mut ly = vec![T::ZERO; x.len()];
    benign_kernels::log_softmax_rows(cols, &x, &mut ly);
    assert!(
        ly[cols..2 * cols].iter().all(|&v| v == T::NEG_INFINITY),
        "log of all -inf row"
    );
    assert_eq!(ly[0], T::ZERO);
    assert!(ly[5 * cols..].iter().all(|v| v.is_finite()));
}

#[test]
fn softmax_invariants_and_special_values() {
    for variant in common::kernel_variants() {
        with_kernel_variant(variant, || {
            let mut rng = ChaCha8Rng::seed_from_u64(11);
            for &cols in COLS.iter().chain(&[197]) {
                check_softmax_invariants::<f32>(&mut rng, cols);
                check_softmax_invariants::<f64>(&mut rng, cols);
            }
        })
    }
}

fn check_layer_norm<T: Float>(rng: &mut ChaCha8Rng, rows: usize, cols: usize) {
    let x: Vec<T> = random::<T>(rng, rows * cols, 2.0)
        .iter()
        .map(|&v| v + T::from_f64(3.0))
        .collect();
    let gamma = random::<T>(rng, cols, 1.5);
    let beta = random::<T>(rng, cols, 1.0);
    let eps = 1e-5;
    let (xw, gw, bw) = (widen(&x), widen(&gamma), widen(&beta));
    let mut y = vec![T::ZERO; x.len()];
    let (mut mean, mut rstd) = (vec![T::ZERO; rows], vec![T::ZERO; rows]);
    benign_kernels::layer_norm(
        cols,
        T::from_f64(eps),
        &x,
        &gamma,
        &beta,
        &mut y,
        &mut mean,
        &mut rstd,
    );
    let mut yw = vec![0.0; x.len()];
    let (mut mw, mut rw) = (vec![0.0; rows], vec![0.0; rows]);
    reference::layer_norm(cols, eps, &xw, &gw, &bw, &mut yw, &mut mw, &mut rw);
    let t = tol::<T>(cols);
    let what = format!("rows={rows} cols={cols}");
    // y = xhat gamma + beta with |xhat| up to sqrt(cols): absolute error ~ t (|xhat gamma| + |beta|).
    let abs = t * (1.5 * (cols as f64).sqrt() + 1.0) * 4.0;
    assert_close(&format!("layer_norm y {what}"), &y, &yw, t, abs);
    assert_close(&format!("layer_norm mean {what}"), &mean, &mw, t, t);
    assert_close(&format!("layer_norm rstd {what}"), &rstd, &rw, t, 0.0);

    let dy = random::<T>(rng, x.len(), 1.0);
    let mut dx = vec![T::ZERO; x.len()];
    let (mut dg, mut db) = (
        vec![T::from_f64(f64::NAN); cols],
        vec![T::from_f64(f64::NAN); cols],
    );
    benign_kernels::layer_norm_backward(
        cols, &x, &gamma, &mean, &rstd, &dy, &mut dx, &mut dg, &mut db,
    );
    let mut dxw = vec![0.0; x.len()];
    let (mut dgw, mut dbw) = (vec![0.0; cols], vec![0.0; cols]);
    reference::layer_norm_backward(
        cols,
        &xw,
        &gw,
        &widen(&mean),
        &widen(&rstd),
        &widen(&dy),
        &mut dxw,
        &mut dgw,
        &mut dbw,
    );
    let max_rstd = widen(&rstd).iter().cloned().fold(0.0, f64::max);
    let abs_dx = t * max_rstd * 1.5 * 4.0 * (cols as f64).sqrt();
    assert_close(&format!("layer_norm dx {what}"), &dx, &dxw, t, abs_dx);
    let tr = tol::<T>(rows) + t;
    let abs_p = tr * rows as f64 * 2.0 * (cols as f64).sqrt();
    assert_close(&format!("layer_norm dgamma {what}"), &dg, &dgw, tr, abs_p);
    assert_close(&format!("layer_norm dbeta {what}"), &db, &dbw, tr, abs_p);
}

#[test]
fn layer_norm_matches_reference() {
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    for &cols in COLS.iter().chain(&[127, 768]) {
        for rows in [0, 1, 2, 9] {
            check_layer_norm::<f32>(&mut rng, rows, cols);
            check_layer_norm::<f64>(&mut rng, rows, cols);
        }
    }
    check_layer_norm::<f32>(&mut rng, 700, 768);
    check_layer_norm::<f64>(&mut rng, 160, 2000);
}

fn check_gelu<T: Float>(rng: &mut ChaCha8Rng, len: usize, spread: f64) {
    let mut x = random::<T>(rng, len, spread);
    if len > 3 {
        x[0] = T::from_f64(-40.0);
        x[1] = T::from_f64(40.0);
        x[2] = T::ZERO;
    }
    let xw = widen(&x);
    let mut y = vec![T::ZERO; len];
    benign_kernels::gelu(&x, &mut y);
    let mut yw = vec![0.0; len];
    reference::gelu(&xw, &mut yw);
    let t = 16.0 * T::EPSILON.to_f64();
    // The reference forms 1 + erf(x / sqrt 2), which cancels for x << 0: its absolute error is
    // about EPSILON |x| there, so allow that much (our kernel uses erfc directly).
    for (i, ((&g, &w), &a)) in y.iter().zip(&yw).zip(&xw).enumerate() {
        let err = (g.to_f64() - w).abs();
        // In the left tail Phi's relative error grows like x^2 EPSILON (rounding of x / sqrt 2
        // and of the exp argument ~ x^2 / 2; see `simd::normal_cdf`).
        let rel = t + if a < 0.0 {
            a * a * T::EPSILON.to_f64()
        } else {
            0.0
        };
        let bound = rel * w.abs() + 4.0 * f64::EPSILON * a.abs();
        assert!(
            err <= bound,
            "gelu len={len} ({}): {i}: x {a}: got {g}, want {w}",
            T::NAME
        );
    }
    let dy = random::<T>(rng, len, 1.0);
    let mut dx = vec![T::ZERO; len];
    benign_kernels::gelu_backward(&x, &dy, &mut dx);
    let mut dxw = vec![0.0; len];
    reference::gelu_backward(&xw, &widen(&dy), &mut dxw);
    // Phi + x phi cancels for x < 0: absolute error ~ t |dy| (Phi + |x| phi) <= t.
    assert_close(&format!("gelu backward len={len}"), &dx, &dxw, t, t);

    // The one-pass forward (value and slope) must give the same bits as the two separate
    // kernels: the same gelu, and dy * slope = gelu_backward's dy (Phi + x phi).
    let (mut y2, mut slope) = (vec![T::ZERO; len], vec![T::ZERO; len]);
    benign_kernels::gelu_with_derivative(&x, &mut y2, &mut slope);
    for i in 0..len {
        assert_eq!(
            y2[i].to_f64().to_bits(),
            y[i].to_f64().to_bits(),
            "gelu_with_derivative value {i}"
        );
        assert_eq!(
            (dy[i] * slope[i]).to_f64().to_bits(),
            dx[i].to_f64().to_bits(),
            "gelu_with_derivative slope {i} (x {})",
            xw[i]
        );
    }
}

#[test]
fn gelu_matches_reference() {
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    for &len in COLS.iter().chain(&[0, 100, 1000]) {
        for spread in [0.5, 3.0, 12.0] {
            check_gelu::<f32>(&mut rng, len, spread);
            check_gelu::<f64>(&mut rng, len, spread);
        }
    }
    check_gelu::<f32>(&mut rng, 4096 * 77, 4.0);
}

/// f32 GELU and its slope against `x Phi(x)`, `Phi(x) + x phi(x)` in f64 with `Phi(x) =
/// erfc(-x / sqrt 2) / 2` (`libm::erfc`: relative accuracy in the left tail too). The kernels
/// stay within 5.5 f32 ulp (`examples/gelu_accuracy.rs`, 36 M points); the bound here is 8
/// ulp: the value's ulp for gelu, the ulp of `Phi + |x| phi` (its terms' size) for the slope,
/// which cancels near x = -0.75. Runs each vector width this CPU has (256-bit `wide`, and
/// 512-bit where AVX-512F is present; it says so when it is not).
#[test]
fn gelu_f32_is_within_ulps_of_the_f64_reference() {
    use benign_kernels::gemm::KernelVariant;
    if !KernelVariant::Avx512.is_available() {
        eprintln!("no avx512f on this CPU: the 512-bit GELU kernels were not exercised");
    }
    for variant in KernelVariant::available() {
        with_kernel_variant(variant, check_gelu_f32_ulps);
    }
}

fn check_gelu_f32_ulps() {
    fn ulp(v: f64) -> f64 {
        let v = v.abs().max(f64::from(f32::MIN_POSITIVE));
        2f64.powi(v.log2().floor() as i32 - 23)
    }
    let mut rng = ChaCha8Rng::seed_from_u64(16);
    for len in [0, 1, 7, 15, 16, 17, 31, 32, 33, 100, 1000, 4099] {
        for spread in [0.5, 3.0, 16.0] {
            let mut x = random::<f32>(&mut rng, len, spread);
            // Tails, the f64 fallback's edge, zero and special values at rotating positions.
            // -0.0074 is near the slope's largest error (the rounding of `2 + |x| 11/16`).
            let specials = [
                -14.0,
                -13.2,
                -12.5,
                12.5,
                0.0,
                -0.0,
                f32::INFINITY,
                -1e-30,
                -0.007_376_061,
                -12.499_999,
            ];
            for (k, v) in specials.into_iter().enumerate().take(len) {
                x[(k * 5) % len] = v;
            }
            let (mut y, mut slope) = (vec![0.0f32; len], vec![0.0f32; len]);
            benign_kernels::gelu_with_derivative(&x, &mut y, &mut slope);
            for ((&xi, &v), &s) in x.iter().zip(&y).zip(&slope) {
                if xi.is_infinite() {
                    assert!(v == xi && s.is_nan(), "gelu(inf) = inf, gelu'(inf) = NaN");
                    continue;
                }
                let xd = f64::from(xi);
                let cdf = 0.5 * libm::erfc(-xd * std::f64::consts::FRAC_1_SQRT_2);
                let pdf = (-0.5 * xd * xd).exp() * 0.398_942_280_401_432_7;
                let (want, want_slope) = (xd * cdf, cdf + xd * pdf);
                assert!(
                    (f64::from(v) - want).abs() <= 8.0 * ulp(want),
                    "gelu len={len}: x {xi}: got {v}, want {want}"
                );
                assert!(
                    (f64::from(s) - want_slope).abs() <= 8.0 * ulp(cdf + (xd * pdf).abs()),
                    "gelu' len={len}: x {xi}: got {s}, want {want_slope}"
                );
            }
        }
    }
    let (mut y, mut slope) = ([0.0f32; 3], [0.0f32; 3]);
    benign_kernels::gelu_with_derivative(&[f32::NAN, f32::NEG_INFINITY, 1.0], &mut y, &mut slope);
    assert!(y[0].is_nan() && slope[0].is_nan() && y[1].is_nan() && slope[1].is_nan());
}

#[test]
fn vector_exp_is_accurate_over_a_dense_grid() {
    // f32: every 1/1024 over the whole range, plus the edges.
    let mut x: Vec<f32> = (-105 * 1024..90 * 1024)
        .map(|i| i as f32 / 1024.0)
        .collect();
    x.extend([
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        88.7,
        88.8,
        -87.5,
        -103.0,
        0.0,
    ]);
    let mut y = vec![0.0f32; x.len()];
    testing::exp(&x, &mut y);
    for (&a, &e) in x.iter().zip(&y) {
        let want = (a as f64).exp();
        if a.is_nan() {
            assert!(e.is_nan());
            continue;
        }
        let want32 = want as f32;
        if want32 == 0.0 || want32.is_infinite() || want < f32::MIN_POSITIVE as f64 {
            // Subnormal / overflow region: absolute check against f32's resolution there.
            assert!(
                (e as f64 - want).abs() <= 2.0 * 1.5e-45 + 4.0 * f32::EPSILON as f64 * want
                    || e == want32,
                "exp({a}) = {e}, want {want}"
            );
            continue;
        }
        let ulps = ((e as f64 - want) / want).abs() / f32::EPSILON as f64;
        assert!(ulps <= 2.0, "exp({a}) = {e}, want {want}: {ulps} eps");
    }
    let mut x: Vec<f64> = (-745 * 256..710 * 256)
        .map(|i| i as f64 / 256.0 + 1e-7)
        .collect();
    x.extend([f64::INFINITY, f64::NEG_INFINITY, f64::NAN, 709.7, 709.8]);
    let mut y = vec![0.0f64; x.len()];
    testing::exp(&x, &mut y);
    for (&a, &e) in x.iter().zip(&y) {
        let want = a.exp();
        if a.is_nan() {
            assert!(e.is_nan());
            continue;
        }
        if want < f64::MIN_POSITIVE || want.is_infinite() {
            assert!(
                e == want || (e - want).abs() <= 1e-308 * 1e-15 + 4.0 * f64::EPSILON * want,
                "exp({a}) = {e:e}, want {want:e}"
            );
            continue;
        }
        let ulps = ((e - want) / want).abs() / f64::EPSILON;
        assert!(ulps <= 2.0, "exp({a}) = {e:e}, want {want:e}: {ulps} eps");
    }
}

#[test]
fn vector_erf_and_normal_cdf_are_accurate_over_a_dense_grid() {
    // f64: erf to 1e-14 absolute (and relative near 0), Phi relative in the left tail.
    let x: Vec<f64> = (-80_000..=80_000)
        .map(|i| i as f64 / 10_000.0 + 3e-9)
        .collect();
    let mut e = vec![0.0; x.len()];
    testing::erf(&x, &mut e);
    let mut p = vec![0.0; x.len()];
    testing::normal_cdf(&x, &mut p);
    for ((&a, &got), &phi) in x.iter().zip(&e).zip(&p) {
        let want = reference::erf(a);
        assert!(
            (got - want).abs() <= 1e-14 && (got - want).abs() <= 1e-14 * want.abs().max(1e-2),
            "erf({a}) = {got:e}, want {want:e}"
        );
        let want_phi = 0.5 * reference_erfc(-a / std::f64::consts::SQRT_2);
        assert!(
            (phi - want_phi).abs() <= 1e-13 * want_phi + 1e-300,
            "Phi({a}) = {phi:e}, want {want_phi:e}"
        );
    }
    // f32: erf to ~1e-7 relative.
    let x: Vec<f32> = (-60_000..=60_000).map(|i| i as f32 / 10_000.0).collect();
    let mut e = vec![0.0f32; x.len()];
    testing::erf(&x, &mut e);
    for (&a, &got) in x.iter().zip(&e) {
        let want = reference::erf(a as f64);
        let err = (got as f64 - want).abs();
        assert!(
            err <= 2.0 * f32::EPSILON as f64 * want.abs() + 1e-30,
            "erf({a}) = {got:e}, want {want:e}, rel {:e}",
            err / want.abs()
        );
    }
    // erfc deep in the tail keeps relative accuracy, up to the rounding of the exp argument
    // -z^2 + F (|z^2| EPSILON absolute, hence relative in erfc).
    let z: Vec<f64> = (0..2600).map(|i| i as f64 / 100.0).collect();
    let mut c = vec![0.0; z.len()];
    testing::erfc(&z, &mut c);
    for (&a, &got) in z.iter().zip(&c) {
        let want = reference_erfc(a);
        let rel = (16.0 + 2.0 * a * a) * f64::EPSILON;
        assert!(
            (got - want).abs() <= rel * want + 1e-300,
            "erfc({a}) = {got:e}, want {want:e}"
        );
    }
}

/// erfc with relative accuracy in the tail: musl's `libm::erfc` (an independent
/// implementation, about 1 ulp).
fn reference_erfc(x: f64) -> f64 {
    libm::erfc(x)
}

fn threaded_bits<T: Float>(rng: &mut ChaCha8Rng) -> Vec<u64> {
    let (rows, cols) = (1201, 197);
    let x = random::<T>(rng, rows * cols, 4.0);
    let dy = random::<T>(rng, rows * cols, 1.0);
    let gamma = random::<T>(rng, cols, 1.0);
    let run = |threads: usize| {
        pool(threads).install(|| {
            let mut out = Vec::new();
            let mut y = vec![T::ZERO; x.len()];
            let mut dx = vec![T::ZERO; x.len()];
            benign_kernels::softmax_rows(cols, &x, &mut y);
            benign_kernels::softmax_rows_backward(cols, &y, &dy, &mut dx);
            out.extend(bits(&y));
            out.extend(bits(&dx));
            benign_kernels::log_softmax_rows(cols, &x, &mut y);
            benign_kernels::log_softmax_rows_backward(cols, &y, &dy, &mut dx);
            out.extend(bits(&y));
            out.extend(bits(&dx));
            let (mut m, mut r) = (vec![T::ZERO; rows], vec![T::ZERO; rows]);
            benign_kernels::layer_norm(
                cols,
                T::from_f64(1e-5),
                &x,
                &gamma,
                &gamma,
                &mut y,
                &mut m,
                &mut r,
            );
            let (mut dg, mut db) = (vec![T::ZERO; cols], vec![T::ZERO; cols]);
            benign_kernels::layer_norm_backward(
                cols, &x, &gamma, &m, &r, &dy, &mut dx, &mut dg, &mut db,
            );
            for v in [&y, &m, &r, &dx, &dg, &db] {
                out.extend(bits(v));
            }
            benign_kernels::gelu(&x, &mut y);
            benign_kernels::gelu_backward(&x, &dy, &mut dx);
            out.extend(bits(&y));
            out.extend(bits(&dx));
            out
        })
    };
    let one = run(1);
    assert_eq!(one, run(4), "{}: 1 vs 4 threads", T::NAME);
    assert_eq!(one, run(2), "{}: 1 vs 2 threads", T::NAME);
    one
}

#[test]
fn short_row_softmax_is_bit_identical_for_any_thread_count() {
    // Short rows are grouped by SIMD width across rows; the groups must not depend on threads.
    let mut rng = ChaCha8Rng::seed_from_u64(15);
    for cols in [3, 5, 8, 13] {
        let rows = 300_001 / cols;
        let x32 = random::<f32>(&mut rng, rows * cols, 6.0);
        let x64 = random::<f64>(&mut rng, rows * cols, 6.0);
        let run = |threads: usize| {
            pool(threads).install(|| {
                let mut y32 = vec![0.0f32; x32.len()];
                benign_kernels::softmax_rows(cols, &x32, &mut y32);
                let mut y64 = vec![0.0f64; x64.len()];
                benign_kernels::softmax_rows(cols, &x64, &mut y64);
                (bits(&y32), bits(&y64))
            })
        };
        let one = run(1);
        assert!(one == run(3), "cols {cols}: 1 vs 3 threads");
        assert!(one == run(4), "cols {cols}: 1 vs 4 threads");
    }
}

#[test]
fn row_kernels_are_bit_identical_for_any_thread_count() {
    let mut rng = ChaCha8Rng::seed_from_u64(14);
    threaded_bits::<f32>(&mut rng);
    threaded_bits::<f64>(&mut rng);
}

#[test]
fn stable_scalar_helpers() {
    for m in [-800.0f64, -30.0, -1.0, 0.0, 1.0, 30.0, 800.0] {
        let l = benign_kernels::logistic_loss(m);
        assert!(l.is_finite() && (l - reference::logistic_loss(m)).abs() <= 1e-15 * l.max(1e-300));
        let d = benign_kernels::logistic_loss_derivative(m);
        assert!((d - reference::logistic_loss_derivative(m)).abs() <= 1e-15);
        let l32 = benign_kernels::logistic_loss(m as f32);
        assert!(l32.is_finite());
    }
}

/// Found by the softmax fuzz target: a row of NaN once passed for an all `-inf` row in the
/// reference (its `f64::max` fold skipped the NaN) and disagreed with the kernel. A row holding a
/// NaN is all NaN in both, whatever else it holds, and leaves the other rows alone.
#[test]
fn nan_rows_are_nan_in_kernel_and_reference() {
    let nan = f64::NAN;
    let ninf = f64::NEG_INFINITY;
    for cols in [1usize, 2, 3, 8, 9, 17] {
        for row in [vec![nan; cols], {
            let mut r = vec![ninf; cols];
            r[cols - 1] = nan;
            r
        }] {
            let mut x = row.clone();
            x.extend((0..cols).map(|j| j as f64 / 4.0));
            for softmax in [
                benign_kernels::softmax_rows::<f64> as fn(usize, &[f64], &mut [f64]),
                benign_kernels::log_softmax_rows::<f64>,
                reference::softmax_rows,
                reference::log_softmax_rows,
            ] {
                let mut y = vec![0.0; x.len()];
                softmax(cols, &x, &mut y);
                assert!(y[..cols].iter().all(|v| v.is_nan()), "cols {cols}: {y:?}");
                assert!(
                    y[cols..].iter().all(|v| v.is_finite()),
                    "cols {cols}: {y:?}"
                );
            }
        }
    }
}

/// Found by the softmax fuzz target: with a huge row max, `x - (m + log s)` rounds `log s` away;
/// log-softmax computes `(x - m) - log s` so that `log_softmax([1e30, 1e30]) = -log 2`.
#[test]
fn log_softmax_keeps_the_log_sum_under_a_huge_max() {
    let mut y32 = [0.0f32; 2];
    benign_kernels::log_softmax_rows(2, &[1e30f32, 1e30], &mut y32);
    assert!(
        y32.iter()
            .all(|&v| (v + std::f32::consts::LN_2).abs() < 1e-6),
        "{y32:?}"
    );
    for f in [
        benign_kernels::log_softmax_rows::<f64> as fn(usize, &[f64], &mut [f64]),
        reference::log_softmax_rows,
    ] {
        let mut y = [0.0f64; 2];
        f(2, &[1e300, 1e300], &mut y);
        assert!(
            y.iter()
                .all(|&v| (v + std::f64::consts::LN_2).abs() < 1e-15),
            "{y:?}"
        );
    }
}

/// The row-wise outputs (GELU, softmax, log-softmax, layer norm, forward and backward) written
/// with streaming stores (what calls larger than the last-level cache use,
/// `benign_kernels::stream`) against ordinary stores: the same bits, for each kernel
/// variant this CPU has, both element types, outputs at every offset from a vector boundary
/// (the streaming store needs an aligned address, so each call starts with ordinary stores up
/// to the first one), lengths around the vector widths, special rows, and 1 or 3 threads.
#[test]
fn streaming_stores_write_the_same_bits() {
    for kernel in common::kernel_variants() {
        with_kernel_variant(kernel, || {
            check_streaming_bits::<f32>(kernel);
            check_streaming_bits::<f64>(kernel);
        });
    }
}

fn check_streaming_bits<T: Float>(kernel: benign_kernels::gemm::KernelVariant) {
    use benign_kernels::stream::{with_output_stores, OutputStores};
    let mut rng = ChaCha8Rng::seed_from_u64(16);
    // Every output of every kernel, under one choice of stores; `offset` shifts the outputs
    // off their allocation's alignment.
    let outputs = |stores: OutputStores, threads: usize, x: &[T], dy: &[T], cols, offset| {
        let run = || {
            let len = x.len();
            let rows = len / cols;
            let gamma: Vec<T> = (0..cols)
                .map(|j| T::from_f64(0.5 + j as f64 / 64.0))
                .collect();
            let mut out = vec![T::ZERO; 6 * (len + offset)];
            let [a, b, c, d, e, f]: [&mut [T]; 6] = {
                let mut chunks = out.chunks_exact_mut(len + offset);
                std::array::from_fn(|_| &mut chunks.next().unwrap()[offset..])
            };
            let mut all = Vec::new();
            benign_kernels::gelu(x, a);
            benign_kernels::gelu_backward(x, dy, b);
            benign_kernels::gelu_with_derivative(x, c, d);
            all.extend([&*a, &*b, &*c, &*d].map(bits).concat());
            benign_kernels::softmax_rows(cols, x, a);
            benign_kernels::log_softmax_rows(cols, x, b);
            benign_kernels::softmax_rows_backward(cols, a, dy, c);
            benign_kernels::log_softmax_rows_backward(cols, b, dy, d);
            all.extend([&*a, &*b, &*c, &*d].map(bits).concat());
            let (mut mean, mut rstd) = (vec![T::ZERO; rows], vec![T::ZERO; rows]);
            let eps = T::from_f64(1e-5);
            benign_kernels::layer_norm(cols, eps, x, &gamma, dy, e, &mut mean, &mut rstd);
            let (mut dgamma, mut dbeta) = (vec![T::ZERO; cols], vec![T::ZERO; cols]);
            benign_kernels::layer_norm_backward(
                cols,
                x,
                &gamma,
                &mean,
                &rstd,
                dy,
                f,
                &mut dgamma,
                &mut dbeta,
            );
            for v in [&*e, &*f, &mean, &rstd, &dgamma, &dbeta] {
                all.extend(bits(v));
            }
            all
        };
        pool(threads).install(|| with_kernel_variant(kernel, || with_output_stores(stores, run)))
    };
    for (rows, cols) in [(7, 17), (7, 33), (7, 100), (7, 197), (7, 1000), (300, 1000)] {
        let mut x = random::<T>(&mut rng, rows * cols, 6.0);
        // special rows: a NaN, all -inf, some -inf, a +inf
        x[cols + 3] = T::from_f64(f64::NAN);
        x[2 * cols..3 * cols].fill(T::NEG_INFINITY);
        x[3 * cols + 1] = T::NEG_INFINITY;
        x[4 * cols + cols / 2] = T::INFINITY;
        let dy = random::<T>(&mut rng, rows * cols, 1.0);
        for offset in 0..16 {
            let what = format!("{kernel:?} {} cols {cols} offset {offset}", T::NAME);
            let cached = outputs(OutputStores::Cached, 1, &x, &dy, cols, offset);
            let streamed = outputs(OutputStores::Streaming, 1, &x, &dy, cols, offset);
            assert!(cached == streamed, "{what}: streaming stores changed a bit");
            if offset % 5 == 0 {
                let threads = outputs(OutputStores::Streaming, 3, &x, &dy, cols, offset);
                assert!(
                    cached == threads,
                    "{what}: 3 threads streaming changed a bit"
                );
            }
        }
    }
}
