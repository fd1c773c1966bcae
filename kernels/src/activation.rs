//! GELU (erf form) forward and backward.
//!
//! PLACEHOLDER BODIES (via the f64 reference erf) to be replaced by SIMD implementations.

use crate::Float;

/// `y = gelu(x) = x Phi(x) = x/2 (1 + erf(x / sqrt 2))`, elementwise.
pub fn gelu<T: Float>(x: &[T], y: &mut [T]) {
    for (yv, &xv) in y.iter_mut().zip(x) {
        let v = xv.to_f64();
        *yv = T::from_f64(0.5 * v * (1.0 + crate::reference::erf(v / std::f64::consts::SQRT_2)));
    }
}

/// `dx = dy (Phi(x) + x phi(x))`, elementwise (phi the standard normal density).
pub fn gelu_backward<T: Float>(x: &[T], dy: &[T], dx: &mut [T]) {
    for ((d, &xv), &g) in dx.iter_mut().zip(x).zip(dy) {
        let v = xv.to_f64();
        let cdf = 0.5 * (1.0 + crate::reference::erf(v / std::f64::consts::SQRT_2));
        let pdf = (-0.5 * v * v).exp() / (2.0 * std::f64::consts::PI).sqrt();
        *d = g * T::from_f64(cdf + v * pdf);
    }
}
