//! Two-sample tests over seeds, shared by the distribution tests (`synthetic::law`'s tests,
//! `synthetic::init_compare`). Test-only: nothing in a run depends on them.
//!
//! Each test returns a two-sided p-value from a large-sample approximation (normal for the
//! means, Kolmogorov's series for KS), which is what the callers, with 150 or more seeds per
//! side, need.

/// `erfc` (Numerical Recipes' Chebyshev fit, relative error below 1.2e-7).
pub(crate) fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let ans = t * poly.exp();
    if x >= 0.0 {
        ans
    } else {
        2.0 - ans
    }
}

/// Sample mean and unbiased variance.
pub(crate) fn mean_var(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0);
    (m, var)
}

/// The difference of means `mean(a) - mean(b)` and its standard error
/// `sqrt(var_a / n_a + var_b / n_b)` (independent samples).
pub(crate) fn mean_difference(a: &[f64], b: &[f64]) -> (f64, f64) {
    let ((ma, va), (mb, vb)) = (mean_var(a), mean_var(b));
    (ma - mb, (va / a.len() as f64 + vb / b.len() as f64).sqrt())
}

/// Two-sided p-value of the difference of means over its standard error (normal).
pub(crate) fn mean_test(a: &[f64], b: &[f64]) -> f64 {
    let (diff, se) = mean_difference(a, b);
    if se == 0.0 {
        return if diff == 0.0 { 1.0 } else { 0.0 };
    }
    erfc(diff.abs() / se / std::f64::consts::SQRT_2)
}

/// Two-sample Kolmogorov-Smirnov: the statistic and its asymptotic p-value (with the
/// small-sample correction of Stephens). Ties make it conservative.
pub(crate) fn ks_test(a: &[f64], b: &[f64]) -> (f64, f64) {
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j, mut dmax) = (0usize, 0usize, 0.0f64);
    while i < a.len() && j < b.len() {
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        dmax = dmax.max((i as f64 / na - j as f64 / nb).abs());
    }
    let ne = (na * nb / (na + nb)).sqrt();
    let lambda = (ne + 0.12 + 0.11 / ne) * dmax;
    let mut p = 0.0;
    if lambda < 0.2 {
        return (dmax, 1.0);
    }
    for k in 1..=100 {
        let term = (-2.0 * (k * k) as f64 * lambda * lambda).exp();
        p += if k % 2 == 1 { 2.0 * term } else { -2.0 * term };
        if term < 1e-12 {
            break;
        }
    }
    (dmax, p.clamp(0.0, 1.0))
}

/// The median (of a copy).
pub(crate) fn median(v: &[f64]) -> f64 {
    crate::boundary::estimate::median(&mut v.to_vec())
}

/// Brown-Forsythe test of equal spread: the mean test on each sample's absolute deviations
/// from its own median. Returns the ratio of the mean absolute deviations (a over b) and the
/// two-sided p-value. KS is weak against a pure change of scale at a few hundred seeds; this
/// is the test for it.
pub(crate) fn spread_test(a: &[f64], b: &[f64]) -> (f64, f64) {
    let deviations = |v: &[f64]| {
        let m = median(v);
        v.iter().map(|x| (x - m).abs()).collect::<Vec<f64>>()
    };
    let (da, db) = (deviations(a), deviations(b));
    let (ma, mb) = (mean_var(&da).0, mean_var(&db).0);
    let ratio = if mb == 0.0 {
        if ma == 0.0 {
            1.0
        } else {
            f64::INFINITY
        }
    } else {
        ma / mb
    };
    (ratio, mean_test(&da, &db))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erfc_matches_known_values() {
        // erfc(0) = 1, erfc(1) = 0.157299207, erfc(1.959964) = 0.05, erfc(-1) = 1.842700793.
        assert!((erfc(0.0) - 1.0).abs() < 1e-7);
        assert!((erfc(1.0) - 0.157_299_207).abs() < 1e-7);
        assert!((erfc(1.959_964 / std::f64::consts::SQRT_2) - 0.05).abs() < 1e-7);
        assert!((erfc(-1.0) - 1.842_700_793).abs() < 1e-7);
    }

    #[test]
    fn tests_on_deterministic_samples() {
        // Two equal samples: nothing to see. A shifted copy: KS D = 1. A scaled copy around a
        // common median: the spread ratio is the scale.
        let a: Vec<f64> = (0..200).map(|i| (i as f64 * 0.618_034).fract()).collect();
        assert_eq!(ks_test(&a, &a), (0.0, 1.0));
        assert!((mean_test(&a, &a) - 1.0).abs() < 1e-7);
        let shifted: Vec<f64> = a.iter().map(|x| x + 2.0).collect();
        let (d, p) = ks_test(&a, &shifted);
        assert_eq!(d, 1.0);
        assert!(p < 1e-12);
        let m = median(&a);
        let scaled: Vec<f64> = a.iter().map(|x| m + 0.5 * (x - m)).collect();
        let (ratio, p) = spread_test(&a, &scaled);
        assert!((ratio - 2.0).abs() < 1e-12, "ratio {ratio}");
        assert!(p < 1e-6);
        assert!(ks_test(&a, &scaled).1 > p);
    }
}
