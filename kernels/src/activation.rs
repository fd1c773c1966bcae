//! GELU (erf form) forward and backward, elementwise with `wide` vectors.
//!
//! `Phi` and `phi` are evaluated together by [`crate::simd::normal_cdf_and_pdf`] (an erfc
//! Chebyshev approximation, relative error about 1e-15 in f64 and a few f32 ulp in f32, accurate
//! far into the left tail where `1 + erf` would cancel; one shared `exp(-x^2 / 2)`). The last
//! `len % LANES` elements go through the same vector code on a zero-padded copy, so every
//! element gets the same formula.
//! Elementwise, so threads (fixed blocks of [`crate::threading::CHUNK_ELEMS`]) cannot change
//! any bit.

use crate::simd::{cast, cast_mut, dispatch, normal_cdf_and_pdf, Simd};
use crate::threading;
use crate::Float;

/// `y = gelu(x) = x Phi(x) = x/2 (1 + erf(x / sqrt 2))`, elementwise.
pub fn gelu<T: Float>(x: &[T], y: &mut [T]) {
    assert_eq!(x.len(), y.len(), "gelu: x and y lengths differ");
    dispatch!(T, S => {
        let (x, y): (&[S], &mut [S]) = (cast(x), cast_mut(y));
        threading::for_row_blocks(1, x.len() * 16, y, |i0, yb| {
            let xb = &x[i0..i0 + yb.len()];
            map_lanes::<S, _>(&[xb], yb, |[xv]| xv * normal_cdf_and_pdf::<S>(xv).0);
        })
    })
}

/// `dx = dy (Phi(x) + x phi(x))`, elementwise (phi the standard normal density).
pub fn gelu_backward<T: Float>(x: &[T], dy: &[T], dx: &mut [T]) {
    assert!(
        x.len() == dy.len() && x.len() == dx.len(),
        "gelu_backward: lengths differ"
    );
    dispatch!(T, S => {
        let (x, dy, dx): (&[S], &[S], &mut [S]) = (cast(x), cast(dy), cast_mut(dx));
        threading::for_row_blocks(1, x.len() * 16, dx, |i0, db| {
            let range = i0..i0 + db.len();
            map_lanes::<S, _>(&[&x[range.clone()], &dy[range]], db, |[xv, g]| {
                g * gelu_derivative::<S>(xv)
            });
        })
    })
}

/// `y = gelu(x)` and `dydx = gelu'(x) = Phi(x) + x phi(x)` in one pass, elementwise.
///
/// For a forward pass that will be differentiated: `Phi(x)` is the costly part of both the
/// forward and the backward formula, and this evaluates it once. `dx = dy * dydx` then gives
/// exactly the bits of [`gelu_backward`] (the same `fma(x, phi, Phi)` and one product).
pub fn gelu_with_derivative<T: Float>(x: &[T], y: &mut [T], dydx: &mut [T]) {
    use rayon::prelude::*;
    assert!(
        x.len() == y.len() && x.len() == dydx.len(),
        "gelu_with_derivative: lengths differ"
    );
    dispatch!(T, S => {
        let (x, y, dydx): (&[S], &mut [S], &mut [S]) = (cast(x), cast_mut(y), cast_mut(dydx));
        if threading::parallel(x.len() * 24) {
            // Fixed blocks (a function of the length only): elementwise, so no bit depends on
            // the split.
            let block = threading::rows_per_chunk(1);
            x.par_chunks(block)
                .zip(y.par_chunks_mut(block))
                .zip(dydx.par_chunks_mut(block))
                .for_each(|((xb, yb), db)| gelu_with_derivative_block::<S>(xb, yb, db));
        } else {
            gelu_with_derivative_block::<S>(x, y, dydx);
        }
    })
}

/// One block of [`gelu_with_derivative`]; the tail runs on a zero-padded vector.
#[inline(always)]
fn gelu_with_derivative_block<S: Simd>(x: &[S], y: &mut [S], dydx: &mut [S]) {
    let l = S::LANES;
    let both = |xv: S::V| {
        let (cdf, pdf) = normal_cdf_and_pdf::<S>(xv);
        (xv * cdf, S::fma(xv, pdf, cdf))
    };
    let full = x.len() - x.len() % l;
    // Two vectors per step, as in `map_lanes`: independent dependency chains side by side.
    let pairs = full - full % (2 * l);
    for ((xc, yc), dc) in x[..pairs]
        .chunks_exact(2 * l)
        .zip(y[..pairs].chunks_exact_mut(2 * l))
        .zip(dydx[..pairs].chunks_exact_mut(2 * l))
    {
        let (value0, slope0) = both(S::load(&xc[..l]));
        let (value1, slope1) = both(S::load(&xc[l..]));
        S::store(value0, &mut yc[..l]);
        S::store(value1, &mut yc[l..]);
        S::store(slope0, &mut dc[..l]);
        S::store(slope1, &mut dc[l..]);
    }
    if pairs < full {
        let (value, slope) = both(S::load(&x[pairs..full]));
        S::store(value, &mut y[pairs..full]);
        S::store(slope, &mut dydx[pairs..full]);
    }
    let tail = x.len() - full;
    if tail > 0 {
        let mut buf = [S::ZERO; 8];
        buf[..tail].copy_from_slice(&x[full..]);
        let (value, slope) = both(S::load(&buf[..l]));
        let mut out = [S::ZERO; 8];
        S::store(value, &mut out[..l]);
        y[full..].copy_from_slice(&out[..tail]);
        S::store(slope, &mut out[..l]);
        dydx[full..].copy_from_slice(&out[..tail]);
    }
}

#[inline(always)]
fn gelu_derivative<S: Simd>(xv: S::V) -> S::V {
    let (cdf, pdf) = normal_cdf_and_pdf::<S>(xv);
    S::fma(xv, pdf, cdf)
}

/// `out = f(inputs)` vector by vector; the tail runs on zero-padded vectors.
#[inline(always)]
fn map_lanes<S: Simd, const K: usize>(
    inputs: &[&[S]; K],
    out: &mut [S],
    f: impl Fn([S::V; K]) -> S::V,
) {
    let l = S::LANES;
    let full = out.len() - out.len() % l;
    // Two vectors per step: the erfc recurrence and the exp are long dependency chains, and
    // two independent ones in one basic block overlap better than successive iterations.
    let pairs = full - full % (2 * l);
    for (k, o) in out[..pairs].chunks_exact_mut(2 * l).enumerate() {
        let j = 2 * k * l;
        let v0 = std::array::from_fn(|i| S::load(&inputs[i][j..j + l]));
        let v1 = std::array::from_fn(|i| S::load(&inputs[i][j + l..j + 2 * l]));
        let (r0, r1) = (f(v0), f(v1));
        S::store(r0, &mut o[..l]);
        S::store(r1, &mut o[l..]);
    }
    if pairs < full {
        let v = std::array::from_fn(|i| S::load(&inputs[i][pairs..full]));
        S::store(f(v), &mut out[pairs..full]);
    }
    let tail = out.len() - full;
    if tail > 0 {
        let v = std::array::from_fn(|i| {
            let mut buf = [S::ZERO; 8];
            buf[..tail].copy_from_slice(&inputs[i][full..]);
            S::load(&buf[..l])
        });
        let mut buf = [S::ZERO; 8];
        S::store(f(v), &mut buf[..l]);
        out[full..].copy_from_slice(&buf[..tail]);
    }
}
