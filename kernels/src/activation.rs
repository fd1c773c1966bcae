//! GELU (erf form) forward and backward, elementwise, on SIMD vectors.
//!
//! `gelu(x) = x Phi(x)` and `gelu'(x) = Phi(x) + x phi(x)`. Both need `q = Phi(-|x|) =
//! erfc(z) / 2` with `z = |x| / sqrt 2`; then `gelu(x) = max(x, 0) - |x| q` (one fused
//! multiply-add, no cancellation on either side) and `Phi(x)` is `q` for `x < 0`, `1 - q`
//! otherwise.
//!
//! f32 (what training runs in), on `wide`'s 256-bit vectors or, when the GEMM kernels use
//! AVX-512, 512-bit ones (`attention_avx512.rs`), for `|x| < F32_NEAR`:
//! - `erfc(z) = 2 r G(u) e^(-z^2)` with `r = 1 / (2 + z)` and `u = 4r - 1 = (2 - z) / (2 + z)`
//!   in `(-1, 1]`, where `G = erfcx(z) (2 + z) / 2` lies in `[0.28, 1]` and is smooth in `u`:
//!   a degree-12 polynomial (`ERFCX_POLY`) fits it to 1.5 f32 ulp. One division, one
//!   polynomial and one exp, shared by the forward and backward formulas (`phi = e^(-z^2) /
//!   sqrt(2 pi)`).
//! - The exponent `z^2 = x^2 / 2` is carried as an exact sum `h + l` (`x / 2` is exact and an
//!   FMA gives the product's rounding error `l`), and `e^(-h - l) = e^(-h) (1 - l)`: rounding
//!   the exponent would otherwise cost about `x^2 / 2` ulp in the left tail.
//! - Lanes with `|x| >= F32_NEAR`, infinities and NaN (rare: the products above would leave
//!   the normal range there) are recomputed in f64 (`gelu_f64_lane`) in a cold branch, so
//!   gradual underflow in the left tail and the special values follow the f64 path.
//!
//! f64 uses `normal_cdf_and_pdf` (an erfc Chebyshev approximation, relative error about
//! 1e-15, with gradual underflow) on `wide`'s vectors.
//!
//! The last `len % LANES` elements go through the same vector code on a zero-padded copy, so
//! every element gets the same formula. Elementwise, so threads (fixed blocks of
//! [`crate::threading::CHUNK_ELEMS`]) cannot change any bit.

use rayon::prelude::*;

use crate::attention::{AttentionVector, Wide};
#[cfg(target_arch = "x86_64")]
use crate::gemm::{current_variant, KernelVariant};
use crate::simd::{cast, cast_mut, normal_cdf_and_pdf, precision, Precision, Simd, SimdVector};
use crate::threading;
use crate::Float;

/// `|x|` below which the f32 formula runs as is: there `e^(-x^2/2) >= e^-78` and every product
/// formed from it stays a normal f32 (`gelu(-12.5) = -3e-35`).
const F32_NEAR: f32 = 12.5;

/// `1 / sqrt(2 pi)`.
const FRAC_1_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

/// `G(u) = erfcx(z) (2 + z) / 2` with `z = 2 (1 - u) / (1 + u)`, as a polynomial in `u` on
/// `(-1, 1]`, constant term first: the monomial form of its first 13 Chebyshev coefficients
/// (computed at 120 Chebyshev nodes with 40-digit `erfc`; the dropped terms sum to 9e-10).
/// Evaluated by Horner in f32 its relative error is below 1.5 ulp over the whole interval.
const ERFCX_POLY: [f32; 13] = [
    0.510_791_36,
    0.343_580_34,
    0.139_736_03,
    0.018_221_384,
    -0.010_755_116,
    -0.003_241_855,
    0.001_544_047_7,
    0.000_427_020_16,
    -0.000_328_100_14,
    -3.295_154e-5,
    6.768_780_4e-5,
    -1.327_395_5e-6,
    -8.508_869_5e-6,
];

/// `y = gelu(x) = x Phi(x) = x/2 (1 + erf(x / sqrt 2))`, elementwise.
pub fn gelu<T: Float>(x: &[T], y: &mut [T]) {
    assert_eq!(x.len(), y.len(), "gelu: x and y lengths differ");
    let wide512 = use_512_bit_f32();
    threading::for_row_blocks(1, x.len() * 16, y, |i0, yb| {
        let xb = &x[i0..i0 + yb.len()];
        match precision::<T>() {
            Precision::F32 => gelu_f32(
                wide512,
                GeluPass::Value {
                    x: cast(xb),
                    y: cast_mut(yb),
                },
            ),
            Precision::F64 => map_vectors::<Wide<f64>, 1, 1>([cast(xb)], [cast_mut(yb)], |[xv]| {
                [Wide(gelu_f64_vector(xv.0).0)]
            }),
        }
    })
}

/// `dx = dy (Phi(x) + x phi(x))`, elementwise (phi the standard normal density).
pub fn gelu_backward<T: Float>(x: &[T], dy: &[T], dx: &mut [T]) {
    assert!(
        x.len() == dy.len() && x.len() == dx.len(),
        "gelu_backward: lengths differ"
    );
    let wide512 = use_512_bit_f32();
    threading::for_row_blocks(1, x.len() * 16, dx, |i0, db| {
        let range = i0..i0 + db.len();
        let (xb, gb) = (&x[range.clone()], &dy[range]);
        match precision::<T>() {
            Precision::F32 => gelu_f32(
                wide512,
                GeluPass::Backward {
                    x: cast(xb),
                    dy: cast(gb),
                    dx: cast_mut(db),
                },
            ),
            Precision::F64 => {
                map_vectors::<Wide<f64>, 2, 1>([cast(xb), cast(gb)], [cast_mut(db)], |[xv, g]| {
                    [Wide(g.0 * gelu_f64_vector(xv.0).1)]
                })
            }
        }
    })
}

/// `y = gelu(x)` and `dydx = gelu'(x) = Phi(x) + x phi(x)` in one pass, elementwise.
///
/// For a forward pass that will be differentiated: `Phi(x)` is the costly part of both the
/// forward and the backward formula, and this evaluates it once. `dx = dy * dydx` then gives
/// exactly the bits of [`gelu_backward`] (the same slope and one product).
pub fn gelu_with_derivative<T: Float>(x: &[T], y: &mut [T], dydx: &mut [T]) {
    assert!(
        x.len() == y.len() && x.len() == dydx.len(),
        "gelu_with_derivative: lengths differ"
    );
    let wide512 = use_512_bit_f32();
    let block = |xb: &[T], yb: &mut [T], db: &mut [T]| match precision::<T>() {
        Precision::F32 => gelu_f32(
            wide512,
            GeluPass::ValueAndSlope {
                x: cast(xb),
                y: cast_mut(yb),
                dydx: cast_mut(db),
            },
        ),
        Precision::F64 => {
            map_vectors::<Wide<f64>, 1, 2>([cast(xb)], [cast_mut(yb), cast_mut(db)], |[xv]| {
                let (value, slope) = gelu_f64_vector(xv.0);
                [Wide(value), Wide(slope)]
            })
        }
    };
    if threading::parallel(x.len() * 24) {
        // Fixed blocks (a function of the length only): elementwise, so no bit depends on
        // the split.
        let rows = threading::rows_per_chunk(1);
        x.par_chunks(rows)
            .zip(y.par_chunks_mut(rows))
            .zip(dydx.par_chunks_mut(rows))
            .for_each(|((xb, yb), db)| block(xb, yb, db));
    } else {
        block(x, y, dydx);
    }
}

/// Whether the f32 kernels run on 512-bit vectors; read on the calling thread (the GEMM
/// variant override is thread-local) and passed to the blocks.
fn use_512_bit_f32() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        current_variant() == KernelVariant::Avx512
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// One f32 GELU pass over a block of elements.
pub(crate) enum GeluPass<'a> {
    Value {
        x: &'a [f32],
        y: &'a mut [f32],
    },
    Backward {
        x: &'a [f32],
        dy: &'a [f32],
        dx: &'a mut [f32],
    },
    ValueAndSlope {
        x: &'a [f32],
        y: &'a mut [f32],
        dydx: &'a mut [f32],
    },
}

fn gelu_f32(wide512: bool, pass: GeluPass) {
    #[cfg(target_arch = "x86_64")]
    if wide512 {
        return crate::attention_avx512::gelu_pass(pass);
    }
    debug_assert!(!wide512, "512-bit vectors exist on x86-64 only");
    run_gelu_pass::<Wide<f32>>(pass)
}

/// Run one f32 pass with vectors `V` (inlined into the AVX-512 entry point for `F32x16`).
#[inline(always)]
pub(crate) fn run_gelu_pass<V: AttentionVector<Scalar = f32>>(pass: GeluPass) {
    // The closures are inlined so that, in the AVX-512 entry point, they are compiled with its
    // target features too (an outlined closure would call every intrinsic out of line).
    match pass {
        GeluPass::Value { x, y } => map_vectors::<V, 1, 1>(
            [x],
            [y],
            #[inline(always)]
            |[xv]| [gelu_f32_vector(xv).0],
        ),
        GeluPass::Backward { x, dy, dx } => map_vectors::<V, 2, 1>(
            [x, dy],
            [dx],
            #[inline(always)]
            |[xv, g]| [g.mul(gelu_f32_vector(xv).1)],
        ),
        GeluPass::ValueAndSlope { x, y, dydx } => map_vectors::<V, 1, 2>(
            [x],
            [y, dydx],
            #[inline(always)]
            |[xv]| {
                let (value, slope) = gelu_f32_vector(xv);
                [value, slope]
            },
        ),
    }
}

/// `(gelu(x), gelu'(x))` lane-wise in f32 (module documentation).
#[inline(always)]
fn gelu_f32_vector<V: AttentionVector<Scalar = f32>>(x: V) -> (V, V) {
    let zero = V::splat(0.0);
    let ax = x.abs();
    // x^2 / 2 = h + l exactly.
    let half_x = x.mul(V::splat(0.5));
    let h = half_x.mul(x);
    let l = V::mul_add(half_x, x, zero.sub(h));
    let e_h = zero.sub(h).exp_nonpositive();
    let e = V::mul_add(e_h, zero.sub(l), e_h);
    let z = ax.mul(V::splat(std::f32::consts::FRAC_1_SQRT_2));
    let r = V::splat(1.0).div(V::splat(2.0).add(z));
    let u = V::mul_add(V::splat(4.0), r, V::splat(-1.0));
    let mut g = V::splat(ERFCX_POLY[12]);
    for &c in ERFCX_POLY[..12].iter().rev() {
        g = V::mul_add(g, u, V::splat(c));
    }
    // q = Phi(-|x|) = erfc(z) / 2 = r G e^(-z^2).
    let q = g.mul(r).mul(e);
    let mut value = V::mul_add(zero.sub(ax), q, x.max(zero));
    let cdf = x.where_negative(q, V::splat(1.0).sub(q));
    let mut slope = V::mul_add(x, e.mul(V::splat(FRAC_1_SQRT_2PI as f32)), cdf);
    if !ax.all_below(F32_NEAR) {
        let l = V::LANES;
        let (mut xs, mut values, mut slopes) = ([0.0f32; 16], [0.0f32; 16], [0.0f32; 16]);
        x.store(&mut xs[..l]);
        value.store(&mut values[..l]);
        slope.store(&mut slopes[..l]);
        gelu_f32_far_lanes(&xs[..l], &mut values[..l], &mut slopes[..l]);
        value = V::load(&values[..l]);
        slope = V::load(&slopes[..l]);
    }
    (value, slope)
}

/// The lanes of [`gelu_f32_vector`] outside `|x| < F32_NEAR` (tails, infinities, NaN), in f64.
#[cold]
#[inline(never)]
fn gelu_f32_far_lanes(x: &[f32], value: &mut [f32], slope: &mut [f32]) {
    for ((&xk, v), s) in x.iter().zip(value).zip(slope) {
        if xk.abs() >= F32_NEAR || xk.is_nan() {
            let (vf, sf) = gelu_f64_lane(f64::from(xk));
            (*v, *s) = (vf as f32, sf as f32);
        }
    }
}

/// `(gelu(x), gelu'(x))` for one f64 value, through the f64 vector formula.
fn gelu_f64_lane(x: f64) -> (f64, f64) {
    let (value, slope) = gelu_f64_vector(<f64 as Simd>::V::splat(x));
    let (mut v, mut s) = ([0.0; 4], [0.0; 4]);
    value.store(&mut v);
    slope.store(&mut s);
    (v[0], s[0])
}

/// `(gelu(x), gelu'(x))` lane-wise in f64: `x Phi(x)` and `fma(x, phi(x), Phi(x))`.
#[inline(always)]
fn gelu_f64_vector(x: <f64 as Simd>::V) -> (<f64 as Simd>::V, <f64 as Simd>::V) {
    let (cdf, pdf) = normal_cdf_and_pdf::<f64>(x);
    (x * cdf, x.mul_add(pdf, cdf))
}

/// `outputs = f(inputs)` vector by vector; the tail runs on zero-padded vectors.
#[inline(always)]
fn map_vectors<V: AttentionVector, const K: usize, const M: usize>(
    inputs: [&[V::Scalar]; K],
    mut outputs: [&mut [V::Scalar]; M],
    f: impl Fn([V; K]) -> [V; M],
) {
    let l = V::LANES;
    let len = outputs[0].len();
    let full = len - len % l;
    // Two vectors per step: the polynomial, division and exp are long dependency chains, and
    // two independent ones in one basic block overlap better than successive iterations.
    let pairs = full - full % (2 * l);
    for j in (0..pairs).step_by(2 * l) {
        let first = f(std::array::from_fn(|i| V::load(&inputs[i][j..j + l])));
        let second = f(std::array::from_fn(|i| {
            V::load(&inputs[i][j + l..j + 2 * l])
        }));
        for ((out, a), b) in outputs.iter_mut().zip(first).zip(second) {
            a.store(&mut out[j..j + l]);
            b.store(&mut out[j + l..j + 2 * l]);
        }
    }
    if pairs < full {
        let result = f(std::array::from_fn(|i| V::load(&inputs[i][pairs..full])));
        for (out, v) in outputs.iter_mut().zip(result) {
            v.store(&mut out[pairs..full]);
        }
    }
    let tail = len - full;
    if tail > 0 {
        let result = f(std::array::from_fn(|i| {
            let mut buf = [V::Scalar::ZERO; 16];
            buf[..tail].copy_from_slice(&inputs[i][full..]);
            V::load(&buf[..l])
        }));
        for (out, v) in outputs.iter_mut().zip(result) {
            let mut buf = [V::Scalar::ZERO; 16];
            v.store(&mut buf[..l]);
            out[full..].copy_from_slice(&buf[..tail]);
        }
    }
}
