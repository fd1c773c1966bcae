//! Largest error of the f32 GELU kernels against an f64 reference, over every `step`-th f32
//! with `|x| <= 16` plus the special values:
//! `cargo run --release -p benign-kernels --example gelu_accuracy [step]`.
//!
//! The value's error is in f32 ulp of the reference value (denormal ulp `2^-149` at the
//! bottom). The slope `Phi(x) + x phi(x)` cancels near its zero (x = -0.75), so its error is
//! in f32 ulp of `Phi(x) + |x| phi(x)`, the size of its terms. The reference is
//! `Phi(x) = erfc(-x / sqrt 2) / 2` with `libm::erfc` in f64 (relative accuracy in the left
//! tail, where `1 + erf` would cancel).

fn reference(x: f64) -> (f64, f64, f64) {
    let cdf = 0.5 * libm::erfc(-x * std::f64::consts::FRAC_1_SQRT_2);
    let pdf = (-0.5 * x * x).exp() * 0.398_942_280_401_432_7;
    (x * cdf, cdf + x * pdf, cdf + (x * pdf).abs())
}

/// One f32 ulp at the magnitude of `v`.
fn ulp(v: f64) -> f64 {
    let v = v.abs().max(f64::from(f32::MIN_POSITIVE));
    2f64.powi(v.log2().floor() as i32 - 23)
}

fn main() {
    let step: u32 = std::env::args()
        .nth(1)
        .map_or(61, |a| a.parse().expect("step: a positive integer"));
    assert!(step > 0, "step: a positive integer");
    let limit = 16f32.to_bits();
    let mut x: Vec<f32> = (0..=limit)
        .step_by(step as usize)
        .flat_map(|b| [f32::from_bits(b), -f32::from_bits(b)])
        .collect();
    x.extend([
        0.0,
        -0.0,
        16.0,
        -16.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
    ]);
    let (mut value, mut slope) = (vec![0.0f32; x.len()], vec![0.0f32; x.len()]);
    benign_kernels::gelu_with_derivative(&x, &mut value, &mut slope);
    let (mut worst_value, mut worst_slope) = ((0.0, 0.0f32), (0.0, 0.0f32));
    for ((&xi, &v), &s) in x.iter().zip(&value).zip(&slope) {
        if !xi.is_finite() {
            println!("x = {xi}: gelu {v}, gelu' {s}");
            continue;
        }
        let (rv, rs, scale) = reference(f64::from(xi));
        let ev = (f64::from(v) - rv).abs() / ulp(rv);
        let es = (f64::from(s) - rs).abs() / ulp(scale);
        if ev > worst_value.0 {
            worst_value = (ev, xi);
        }
        if es > worst_slope.0 {
            worst_slope = (es, xi);
        }
    }
    println!(
        "{} points: gelu max error {:.2} ulp (at x = {}), gelu' max error {:.2} ulp of \
         Phi + |x| phi (at x = {})",
        x.len(),
        worst_value.0,
        worst_value.1,
        worst_slope.0,
        worst_slope.1
    );
}
