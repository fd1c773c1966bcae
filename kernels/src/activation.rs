//! GELU (erf form) forward and backward, elementwise, on SIMD vectors.
//!
//! `gelu(x) = x Phi(x)` and `gelu'(x) = Phi(x) + x phi(x)`. Both need `q = Phi(-|x|) =
//! erfc(z) / 2` with `z = |x| / sqrt 2`; then `gelu(x) = max(x, 0) - |x| q` (one fused
//! multiply-add, no cancellation on either side) and `Phi(x)` is `q` for `x < 0`, `1 - q`
//! otherwise.
//!
//! f32 (what training runs in), on `wide`'s 256-bit vectors or, when the GEMM kernels use
//! AVX-512, 512-bit ones (`attention_avx512.rs`), for `|x| < F32_NEAR`:
//! - `erfc(z) = 2 r G(v) e^(-z^2)` with `r = 1 / (2 + RECIP_SCALE |x|)` and `v` affine in `r`
//!   (`[-1, 1]` over the range), where `G = erfcx(z) / (2 r)` lies in `[0.33, 1]` and is
//!   smooth in `v`: a degree-8 polynomial (`ERFCX_POLY`, from `scripts/fit_gelu_f32.py`) fits
//!   it to 1.6 x 2^-24 relative. One division, one polynomial and one exp, shared by the
//!   forward and backward formulas (`phi = e^(-z^2) / sqrt(2 pi)`). The scale `11/16` (an
//!   effective shift `2 / RECIP_SCALE = 2.06` in `z`) balances the polynomial's degree
//!   against the rounding of `2 + RECIP_SCALE |x|`: it moves erfcx's argument by up to
//!   `2^-24 (2 / RECIP_SCALE + |x|) / sqrt 2`, about 2.3 x 2^-24 relative in `q` near `x = 0`,
//!   and a larger shift (which would allow degree 7 or less) scales that up.
//! - `e^(-x^2 / 2) = 2^n e^(-w / 2)` with `n = round(-x^2 / (2 ln 2))` and `w = x^2 + 2 n ln 2`
//!   formed by FMAs from the exact product `x x` (`ln 2` in two parts, the first exact in
//!   `n 2 ln 2`): rounding the exponent `x^2 / 2` first would cost about `x^2 / 2` ulp in the
//!   left tail. `e^(-w / 2)` is a degree-6 polynomial (`EXP_HALF_POLY`) and `2^n` is applied
//!   through the exponent field (`vscalefps` on AVX-512).
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
//!
//! A call whose inputs and outputs together exceed the last-level cache writes its outputs with
//! streaming stores and fetches its inputs a page ahead (`crate::stream`): the same bits, and
//! the output lines are not read before they are written.

use rayon::prelude::*;

use crate::attention::{AttentionVector, Wide};
use crate::simd::{
    cast, cast_mut, f32_on_512_bit_vectors, normal_cdf_and_pdf, precision, prefetch, Precision,
    Simd, SimdVector,
};
use crate::stream::{first_aligned, output_stores, OutputStores};
use crate::threading;
use crate::Float;

/// `|x|` below which the f32 formula runs as is: there `e^(-x^2/2) >= e^-78` and every product
/// formed from it stays a normal f32 (`gelu(-12.5) = -3e-35`).
const F32_NEAR: f32 = 12.5;

/// `1 / sqrt(2 pi)`.
const FRAC_1_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

/// `r = 1 / (2 + RECIP_SCALE |x|)`: with this scale (exact in binary) `G` below takes values
/// in `[0.33, 1]` and degree 8 reaches f32 accuracy; larger shifts `2 / RECIP_SCALE` shorten
/// the polynomial but magnify the rounding of `2 + RECIP_SCALE |x|` near `x = 0`
/// (`scripts/fit_gelu_f32.py` compares scales).
const RECIP_SCALE: f32 = 0.687_5;

/// `v = ERFC_V_SCALE r + ERFC_V_OFFSET` maps `r` from `[1 / (2 + RECIP_SCALE F32_NEAR), 1/2]`
/// (`|x|` from `F32_NEAR` down to 0) onto `[-1, 1]`.
const ERFC_V_SCALE: f32 = 4.930_909;
/// See [`ERFC_V_SCALE`].
const ERFC_V_OFFSET: f32 = -1.465_454_6;

/// `G(v) = erfcx(z) (2 + RECIP_SCALE |x|) / 2` with `z = |x| / sqrt 2` (so that `Phi(-|x|) =
/// erfc(z) / 2 = r G e^(-z^2)`), smooth in `v` on `[-1, 1]`, as a polynomial in `v`, constant
/// term first: the monomial form of its degree-8 Chebyshev interpolant against 40-digit
/// `erfc` (`scripts/fit_gelu_f32.py`; truncation error 0.36 x 2^-24 relative), rounded to
/// f32. Horner in f32 stays within 1.6 x 2^-24 relative.
const ERFCX_POLY: [f32; 9] = [
    0.568_782_5,
    0.324_067_3,
    0.104_068_25,
    0.008_732_324,
    -0.005_280_695,
    -0.000_831_395_5,
    0.000_461_089_42,
    4.178_114_3e-5,
    -4.116_174_8e-5,
];

/// `e^(-w / 2)` for `w` in `[-ln 2, ln 2]`, constant term first: the monomial form of the
/// degree-6 Chebyshev interpolant (`scripts/fit_gelu_f32.py`), rounded to f32; relative error
/// about 1 ulp with Horner in f32.
const EXP_HALF_POLY: [f32; 7] = [
    1.0,
    -0.5,
    0.125,
    -0.020_833_02,
    0.002_604_138_6,
    -0.000_261_722_77,
    2.179_465_8e-5,
];

/// `ln 2` in two parts for the exact reduction: `LN2_HI` has 9 significant bits, so
/// `n 2 LN2_HI` is exact for every `|n| < 2^15`.
const LN2_HI: f32 = 0.693_359_4;
/// `ln 2 - LN2_HI`.
const LN2_LO: f32 = -2.121_944_4e-4;

/// Adding `1.5 * 2^23` to an f32 of magnitude below `2^22` rounds it to an integer (the sum's
/// ulp is 1); subtracting it again gives that integer exactly.
const ROUND_TO_INTEGER: f32 = 12_582_912.0;

/// `y = gelu(x) = x Phi(x) = x/2 (1 + erf(x / sqrt 2))`, elementwise.
pub fn gelu<T: Float>(x: &[T], y: &mut [T]) {
    assert_eq!(x.len(), y.len(), "gelu: x and y lengths differ");
    let wide512 = f32_on_512_bit_vectors();
    let stores = output_stores(2 * std::mem::size_of_val(x));
    threading::for_row_blocks(1, x.len() * 16, y, |i0, yb| {
        let xb = &x[i0..i0 + yb.len()];
        gelu_block(wide512, GeluPass::Value { x: xb, y: yb }, stores)
    })
}

/// `dx = dy (Phi(x) + x phi(x))`, elementwise (phi the standard normal density).
pub fn gelu_backward<T: Float>(x: &[T], dy: &[T], dx: &mut [T]) {
    assert!(
        x.len() == dy.len() && x.len() == dx.len(),
        "gelu_backward: lengths differ"
    );
    let wide512 = f32_on_512_bit_vectors();
    let stores = output_stores(3 * std::mem::size_of_val(x));
    threading::for_row_blocks(1, x.len() * 16, dx, |i0, db| {
        let range = i0..i0 + db.len();
        let (xb, gb) = (&x[range.clone()], &dy[range]);
        gelu_block(
            wide512,
            GeluPass::Backward {
                x: xb,
                dy: gb,
                dx: db,
            },
            stores,
        )
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
    let wide512 = f32_on_512_bit_vectors();
    let stores = output_stores(3 * std::mem::size_of_val(x));
    let block = |x: &[T], y: &mut [T], dydx: &mut [T]| {
        gelu_block(wide512, GeluPass::ValueAndSlope { x, y, dydx }, stores)
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

/// One GELU pass over a block of elements (f32 unless said otherwise: the 512-bit vectors take
/// f32 passes only).
pub(crate) enum GeluPass<'a, S = f32> {
    Value {
        x: &'a [S],
        y: &'a mut [S],
    },
    Backward {
        x: &'a [S],
        dy: &'a [S],
        dx: &'a mut [S],
    },
    ValueAndSlope {
        x: &'a [S],
        y: &'a mut [S],
        dydx: &'a mut [S],
    },
}

impl<'a, T: Float> GeluPass<'a, T> {
    /// The same pass over the same slices, typed as `S` (`T` itself: see `simd::cast`).
    fn cast<S: Float>(self) -> GeluPass<'a, S> {
        match self {
            GeluPass::Value { x, y } => GeluPass::Value {
                x: cast(x),
                y: cast_mut(y),
            },
            GeluPass::Backward { x, dy, dx } => GeluPass::Backward {
                x: cast(x),
                dy: cast(dy),
                dx: cast_mut(dx),
            },
            GeluPass::ValueAndSlope { x, y, dydx } => GeluPass::ValueAndSlope {
                x: cast(x),
                y: cast_mut(y),
                dydx: cast_mut(dydx),
            },
        }
    }
}

/// One pass over a block in the caller's element type: f32 on the vectors `wide512` selects,
/// f64 on `wide`'s; outputs written as `stores` says.
fn gelu_block<T: Float>(wide512: bool, pass: GeluPass<'_, T>, stores: OutputStores) {
    match precision::<T>() {
        Precision::F32 => gelu_f32(wide512, pass.cast(), stores),
        Precision::F64 => run_gelu_pass::<Wide<f64>>(pass.cast(), stores),
    }
}

fn gelu_f32(wide512: bool, pass: GeluPass, stores: OutputStores) {
    #[cfg(target_arch = "x86_64")]
    if wide512 {
        return crate::attention_avx512::gelu_pass(pass, stores);
    }
    debug_assert!(!wide512, "512-bit vectors exist on x86-64 only");
    run_gelu_pass::<Wide<f32>>(pass, stores)
}

/// A vector type the GELU passes run on, with its element type's formula.
pub(crate) trait GeluVector: AttentionVector {
    /// The formula's constants as vectors (none for f64, whose formula splats its own).
    type Constants: Copy;
    /// The constants, made once per pass and passed to every [`GeluVector::value_and_slope`].
    fn constants() -> Self::Constants;
    /// `(gelu(x), gelu'(x))` lane-wise.
    fn value_and_slope(self, k: &Self::Constants) -> (Self, Self);
}

impl GeluVector for Wide<f32> {
    type Constants = GeluF32Constants<Self>;
    #[inline(always)]
    fn constants() -> Self::Constants {
        // opaque to the optimizer (see `GeluF32Constants`)
        std::hint::black_box(GeluF32Constants::new())
    }
    #[inline(always)]
    fn value_and_slope(self, k: &Self::Constants) -> (Self, Self) {
        gelu_f32_vector(self, k)
    }
}

#[cfg(target_arch = "x86_64")]
impl GeluVector for crate::attention_avx512::F32x16 {
    type Constants = GeluF32Constants<Self>;
    #[inline(always)]
    fn constants() -> Self::Constants {
        GeluF32Constants::new()
    }
    #[inline(always)]
    fn value_and_slope(self, k: &Self::Constants) -> (Self, Self) {
        gelu_f32_vector(self, k)
    }
}

impl GeluVector for Wide<f64> {
    type Constants = ();
    #[inline(always)]
    fn constants() {}
    #[inline(always)]
    fn value_and_slope(self, _: &()) -> (Self, Self) {
        let (value, slope) = gelu_f64_vector(self.0);
        (Wide(value), Wide(slope))
    }
}

/// Run one pass with vectors `V` (inlined into the AVX-512 entry point for `F32x16`). Where a
/// pass needs only the value, the slope's arithmetic is dead code and compiled away.
#[inline(always)]
pub(crate) fn run_gelu_pass<V: GeluVector>(pass: GeluPass<'_, V::Scalar>, stores: OutputStores) {
    let k = &V::constants();
    // The closures are inlined so that, in the AVX-512 entry point, they are compiled with its
    // target features too (an outlined closure would call every intrinsic out of line).
    match pass {
        GeluPass::Value { x, y } => map_vectors::<V, 1, 1>(
            [x],
            [y],
            #[inline(always)]
            |[xv]| [xv.value_and_slope(k).0],
            stores,
        ),
        GeluPass::Backward { x, dy, dx } => map_vectors::<V, 2, 1>(
            [x, dy],
            [dx],
            #[inline(always)]
            |[xv, g]| [g * xv.value_and_slope(k).1],
            stores,
        ),
        GeluPass::ValueAndSlope { x, y, dydx } => map_vectors::<V, 1, 2>(
            [x],
            [y, dydx],
            #[inline(always)]
            |[xv]| {
                let (value, slope) = xv.value_and_slope(k);
                [value, slope]
            },
            stores,
        ),
    }
}

/// The f32 formula's constants as vectors, made once per pass. On `wide`'s vectors they pass
/// through [`std::hint::black_box`], so that the compiler cannot see their values: with 16
/// vector registers (AVX2) it would otherwise re-broadcast a known constant from the constant
/// pool before each use inside the loop (about 20 `vbroadcastss` a vector, each an instruction
/// of its own), while values it cannot see through are read from the stack as memory operands
/// of the multiply-adds, in the same instruction. The 512-bit vectors keep them visible:
/// AVX-512 folds a broadcast constant into the instruction that uses it (`{1to16}`). The
/// arithmetic, and so every bit, is the same either way.
#[derive(Clone, Copy)]
pub(crate) struct GeluF32Constants<V> {
    zero: V,
    one: V,
    two: V,
    /// `-log2(e) / 2`.
    neg_half_log2e: V,
    /// [`ROUND_TO_INTEGER`].
    round_to_integer: V,
    /// `2 LN2_HI`.
    two_ln2_hi: V,
    /// `2 LN2_LO`.
    two_ln2_lo: V,
    exp_half_poly: [V; 7],
    recip_scale: V,
    erfc_v_scale: V,
    erfc_v_offset: V,
    erfcx_poly: [V; 9],
    frac_1_sqrt_2pi: V,
}

impl<V: AttentionVector<Scalar = f32>> GeluF32Constants<V> {
    #[inline(always)]
    fn new() -> Self {
        Self {
            zero: V::splat(0.0),
            one: V::splat(1.0),
            two: V::splat(2.0),
            neg_half_log2e: V::splat(-0.5 * std::f32::consts::LOG2_E),
            round_to_integer: V::splat(ROUND_TO_INTEGER),
            two_ln2_hi: V::splat(2.0 * LN2_HI),
            two_ln2_lo: V::splat(2.0 * LN2_LO),
            exp_half_poly: EXP_HALF_POLY.map(V::splat),
            recip_scale: V::splat(RECIP_SCALE),
            erfc_v_scale: V::splat(ERFC_V_SCALE),
            erfc_v_offset: V::splat(ERFC_V_OFFSET),
            erfcx_poly: ERFCX_POLY.map(V::splat),
            frac_1_sqrt_2pi: V::splat(FRAC_1_SQRT_2PI as f32),
        }
    }
}

/// `(gelu(x), gelu'(x))` lane-wise in f32 (module documentation), with the constants `k`.
#[inline(always)]
fn gelu_f32_vector<V: AttentionVector<Scalar = f32>>(x: V, k: &GeluF32Constants<V>) -> (V, V) {
    let ax = x.abs();
    // e^(-x^2 / 2) = 2^n e^(-w / 2) with n = round(-x^2 / (2 ln 2)) and w = x^2 + 2 n ln 2 in
    // [-ln 2, ln 2], formed from the exact product x x (one rounding in the FMA). n is in
    // [-113, 0] for |x| < F32_NEAR; other lanes are recomputed below.
    let x2 = x.mul(x);
    let shifted = V::mul_add(x2, k.neg_half_log2e, k.round_to_integer);
    let n = shifted.sub(k.round_to_integer);
    let w = V::mul_add(x, x, n.mul(k.two_ln2_hi));
    let w = V::mul_add(n, k.two_ln2_lo, w);
    let [rest @ .., highest] = k.exp_half_poly;
    let mut e = highest;
    for &c in rest.iter().rev() {
        e = V::mul_add(e, w, c);
    }
    let e = e.mul_exp2(n);
    // r = 1 / (2 + RECIP_SCALE |x|), and the polynomial variable v, affine in r.
    let r = k.one.div(V::mul_add(ax, k.recip_scale, k.two));
    let v = V::mul_add(r, k.erfc_v_scale, k.erfc_v_offset);
    let [rest @ .., highest] = k.erfcx_poly;
    let mut g = highest;
    for &c in rest.iter().rev() {
        g = V::mul_add(g, v, c);
    }
    // q = Phi(-|x|) = erfc(z) / 2 = r G e^(-z^2).
    let q = g.mul(r).mul(e);
    let mut value = V::mul_add(k.zero.sub(ax), q, x.max(k.zero));
    let cdf = x.where_negative(q, k.one.sub(q));
    let mut slope = V::mul_add(x, e.mul(k.frac_1_sqrt_2pi), cdf);
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

/// How far ahead of its loads a streaming [`map_vectors`] pass fetches its inputs.
const STREAM_PREFETCH_BYTES: usize = 4096;

/// `outputs = f(inputs)` vector by vector; the tail runs on zero-padded vectors. With
/// streaming `stores`, the elements before the first output's first vector-aligned one go
/// through ordinary stores, the rest through [`SimdVector::store_streaming`] with the inputs
/// fetched ahead, and the pass ends with the fence those stores need.
#[inline(always)]
fn map_vectors<V: AttentionVector, const K: usize, const M: usize>(
    inputs: [&[V::Scalar]; K],
    mut outputs: [&mut [V::Scalar]; M],
    f: impl Fn([V; K]) -> [V; M],
    stores: OutputStores,
) {
    if stores == OutputStores::Cached {
        return map_vectors_storing::<V, K, M, false>(inputs, outputs, &f);
    }
    let head = first_aligned(outputs[0], V::LANES);
    map_vectors_storing::<V, K, M, false>(
        inputs.map(|input| &input[..head]),
        outputs.each_mut().map(|output| &mut output[..head]),
        &f,
    );
    map_vectors_storing::<V, K, M, true>(
        inputs.map(|input| &input[head..]),
        outputs.each_mut().map(|output| &mut output[head..]),
        &f,
    );
    V::stream_fence();
}

/// [`map_vectors`] with every whole vector stored by [`SimdVector::store_streaming`] when
/// `STREAM`, by [`SimdVector::store`] otherwise.
#[inline(always)]
fn map_vectors_storing<V: AttentionVector, const K: usize, const M: usize, const STREAM: bool>(
    inputs: [&[V::Scalar]; K],
    mut outputs: [&mut [V::Scalar]; M],
    f: &impl Fn([V; K]) -> [V; M],
) {
    let store = |v: V, out: &mut [V::Scalar]| {
        if STREAM {
            v.store_streaming(out)
        } else {
            v.store(out)
        }
    };
    let l = V::LANES;
    let len = outputs[0].len();
    let full = len - len % l;
    // Two vectors per step: the polynomial, division and exp are long dependency chains, and
    // two independent ones in one basic block overlap better than successive iterations.
    let pairs = full - full % (2 * l);
    // a streaming pass's inputs come from memory: fetch them a page ahead of the loads (the
    // hardware prefetchers stop at page boundaries, and this loop is long enough per line for
    // their restarts to show)
    let ahead = STREAM_PREFETCH_BYTES / std::mem::size_of::<V::Scalar>();
    for j in (0..pairs).step_by(2 * l) {
        if STREAM {
            for input in &inputs {
                prefetch(input, j + ahead);
                prefetch(input, j + ahead + l);
            }
        }
        let first = f(std::array::from_fn(|i| V::load(&inputs[i][j..j + l])));
        let second = f(std::array::from_fn(|i| {
            V::load(&inputs[i][j + l..j + 2 * l])
        }));
        for ((out, a), b) in outputs.iter_mut().zip(first).zip(second) {
            store(a, &mut out[j..j + l]);
            store(b, &mut out[j + l..j + 2 * l]);
        }
    }
    if pairs < full {
        let result = f(std::array::from_fn(|i| V::load(&inputs[i][pairs..full])));
        for (out, v) in outputs.iter_mut().zip(result) {
            store(v, &mut out[pairs..full]);
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
