//! The crate's SIMD vector interface, and the helpers of the level-1/level-2 and row-wise
//! kernels.
//!
//! [`SimdVector`] is the one vector trait every SIMD kernel here is written over: the wide GEMM
//! microkernel, the direct GEMM path, the level-1/level-2 and row-wise kernels and attention.
//! It is implemented by `wide`'s `f32x8` / `f64x4` (one 256-bit AVX2 register each, a portable
//! fallback when the target lacks AVX2) and by the zmm wrappers of the AVX-512 modules; kernels
//! that need more (transcendentals, masks, attention's per-sample entry points) extend it.
//!
//! The public kernels are generic over [`Float`]; their bodies are written once, generic over
//! `Simd`, which binds each element type to its `wide` vector (`f32x8` for `f32`, `f64x4` for
//! `f64`) and adds the lane-wise math the row-wise kernels use.
//! `Precision` plus `cast` / `cast_mut` route a `T: Float` call to the matching
//! instantiation; `Float` is implemented for `f32` and `f64` only.
//!
//! Transcendentals over vectors:
//! - `Simd::vexp`: `wide`'s range-reduced polynomial exp (about 1 ulp; checked over a dense
//!   grid against `f64::exp` in the tests), with the edge cases `wide` gets wrong fixed up in a
//!   rarely taken branch: `exp(+inf) = +inf`, `exp(NaN) = NaN`, overflow to `+inf` and gradual
//!   underflow near the ends of the range.
//! - `erfc_nonneg`: `erfc(z) = t exp(-z^2 + F(4t - 2))` with `t = 2 / (2 + z)` and `F` a
//!   Chebyshev series (Numerical Recipes 3rd ed., `Erf::erfccheb`; coefficients refitted with
//!   `libm::erfc` and the erfc continued fraction at 80 Chebyshev nodes). Relative accuracy about
//!   1e-15 (f64, 25 terms) and 1e-8 (f32, 13 terms) for all `z >= 0`.
//! - `erf` (odd Maclaurin series near 0, `1 - erfc` beyond: relative accuracy everywhere)
//!   and `normal_cdf` `Phi(x) = erfc(-x / sqrt 2) / 2` (relative accuracy in the left tail).

use std::any::TypeId;
use std::ops::{Add, AddAssign, Div, Mul, MulAssign, Neg, Sub};

use wide::{f32x8, f64x4, u32x8, u64x4, CmpLt};

/// A SIMD vector of [`SimdVector::LANES`] scalars, with the operations every kernel's inner
/// loop needs. The arithmetic operators act lane-wise with one rounding each.
///
/// Contract, for every implementation:
/// - `LANES` is at most [`MAX_LANES`];
/// - `load` reads and `store` writes exactly the first `LANES` scalars of their slice (any
///   alignment), and panic when the slice is shorter;
/// - `mul_add` rounds once when the target has FMA (the AVX2 and AVX-512 builds), twice
///   otherwise;
/// - `hsum` adds the lanes in a fixed order, the same on every call, so a kernel's result does
///   not depend on anything but its inputs.
pub trait SimdVector:
    Copy + Add<Output = Self> + Sub<Output = Self> + Mul<Output = Self> + Div<Output = Self>
{
    /// The element type of each lane.
    type Scalar: Float;
    /// Scalars per vector.
    const LANES: usize;
    /// Vector registers of the instruction set these vectors live in (register blocks are
    /// sized to it): 16 for 256-bit AVX2 (and `wide`'s pairs of 128-bit registers), 32 for
    /// AVX-512.
    const REGISTERS: usize = 16;
    /// The vector with every lane `x`.
    fn splat(x: Self::Scalar) -> Self;
    /// The first `LANES` scalars of `src`.
    fn load(src: &[Self::Scalar]) -> Self;
    /// The first `len < LANES` scalars of `src`, the other lanes zero.
    #[inline(always)]
    fn load_partial(src: &[Self::Scalar], len: usize) -> Self {
        let mut lanes = [<Self::Scalar as Float>::ZERO; MAX_LANES];
        lanes[..len].copy_from_slice(&src[..len]);
        Self::load(&lanes)
    }
    /// Stores into the first `LANES` scalars of `dst`.
    fn store(self, dst: &mut [Self::Scalar]);
    /// [`SimdVector::store`] with a streaming (non-temporal) store when this vector type has
    /// one and `dst` is aligned to the vector's size (`crate::stream`); an ordinary store
    /// otherwise. The same bits either way. A thread calls [`SimdVector::stream_fence`] after
    /// its last streaming store and before anything reads what it wrote.
    #[inline(always)]
    fn store_streaming(self, dst: &mut [Self::Scalar]) {
        self.store(dst)
    }
    /// Orders this thread's streaming stores before its later memory accesses (`sfence`), as
    /// the streaming store intrinsics require; nothing for vectors without them.
    #[inline(always)]
    fn stream_fence() {}
    /// `self * m + a` lane-wise, fused when the target has FMA.
    fn mul_add(self, m: Self, a: Self) -> Self;
    /// The sum of the lanes, in a fixed order.
    fn hsum(self) -> Self::Scalar;
}

/// The most lanes of any [`SimdVector`] (f32 in a zmm register).
pub const MAX_LANES: usize = 16;

macro_rules! impl_simd_vector_wide {
    ($vector:ty, $scalar:ty, $lanes:literal, $loadu_256:ident, $stream_256:ident) => {
        impl SimdVector for $vector {
            type Scalar = $scalar;
            const LANES: usize = $lanes;
            #[inline(always)]
            fn splat(x: $scalar) -> Self {
                <$vector>::splat(x)
            }
            #[inline(always)]
            fn load(src: &[$scalar]) -> Self {
                let lanes: [$scalar; $lanes] = src[..$lanes].try_into().unwrap();
                <$vector>::from(lanes)
            }
            #[inline(always)]
            fn load_partial(src: &[$scalar], len: usize) -> Self {
                let mut lanes = [0.0; $lanes];
                lanes[..len].copy_from_slice(&src[..len]);
                <$vector>::from(lanes)
            }
            #[inline(always)]
            fn store(self, dst: &mut [$scalar]) {
                dst[..$lanes].copy_from_slice(self.as_array_ref());
            }
            #[cfg(all(target_arch = "x86_64", target_feature = "avx"))]
            #[inline(always)]
            fn store_streaming(self, dst: &mut [$scalar]) {
                let dst = &mut dst[..$lanes];
                if dst.as_ptr().align_offset(32) != 0 {
                    return self.store(dst);
                }
                // SAFETY: `dst` is $lanes writable scalars (32 bytes, sliced above), uniquely
                // borrowed and 32-byte aligned (checked above), as the streaming store needs;
                // the build enables AVX (the cfg above). The callers fence (`stream_fence`)
                // before the memory is read again.
                unsafe {
                    use std::arch::x86_64::{$loadu_256, $stream_256};
                    let vector = $loadu_256(self.as_array_ref().as_ptr());
                    $stream_256(dst.as_mut_ptr(), vector)
                }
            }
            #[cfg(all(target_arch = "x86_64", target_feature = "avx"))]
            #[inline(always)]
            fn stream_fence() {
                // SAFETY: `sfence` has no operands and needs only SSE (every x86-64 CPU).
                unsafe { std::arch::x86_64::_mm_sfence() }
            }
            #[inline(always)]
            fn mul_add(self, m: Self, a: Self) -> Self {
                <$vector>::mul_add(self, m, a)
            }
            #[inline(always)]
            fn hsum(self) -> $scalar {
                self.reduce_add()
            }
        }
    };
}

impl_simd_vector_wide!(f32x8, f32, 8, _mm256_loadu_ps, _mm256_stream_ps);
impl_simd_vector_wide!(f64x4, f64, 4, _mm256_loadu_pd, _mm256_stream_pd);

use crate::stream::{first_aligned, OutputStores};
use crate::Float;

/// Which concrete element type a `T: Float` is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Precision {
    F32,
    F64,
}

/// The precision of `T`. Panics for a type other than `f32` / `f64` (the only `Float` impls).
#[inline(always)]
pub(crate) fn precision<T: Float>() -> Precision {
    if TypeId::of::<T>() == TypeId::of::<f32>() {
        Precision::F32
    } else if TypeId::of::<T>() == TypeId::of::<f64>() {
        Precision::F64
    } else {
        panic!("benign-kernels supports f32 and f64 only, not {}", T::NAME)
    }
}

/// Reinterpret `&[T]` as `&[U]` when `T` and `U` are the same type; panics otherwise.
#[inline(always)]
pub(crate) fn cast<T: 'static, U: 'static>(x: &[T]) -> &[U] {
    assert_eq!(TypeId::of::<T>(), TypeId::of::<U>());
    // SAFETY: T and U are the same type (checked above), so the pointer, length, alignment and
    // lifetime of the slice are valid for U.
    unsafe { std::slice::from_raw_parts(x.as_ptr().cast::<U>(), x.len()) }
}

/// Reinterpret `&mut [T]` as `&mut [U]` when `T` and `U` are the same type; panics otherwise.
#[inline(always)]
pub(crate) fn cast_mut<T: 'static, U: 'static>(x: &mut [T]) -> &mut [U] {
    assert_eq!(TypeId::of::<T>(), TypeId::of::<U>());
    // SAFETY: T and U are the same type (checked above); the unique borrow of `x` is moved
    // into the returned slice, so no aliasing is introduced.
    unsafe { std::slice::from_raw_parts_mut(x.as_mut_ptr().cast::<U>(), x.len()) }
}

/// Convert a scalar between two `Float` types that are the same type (exact through f64).
#[inline(always)]
pub(crate) fn same<T: Float, U: Float>(v: T) -> U {
    U::from_f64(v.to_f64())
}

/// Route a generic call to its `f32` or `f64` SIMD instantiation. The body names the concrete
/// type `S`; use `cast` / `cast_mut` / `same` on the arguments inside it.
macro_rules! dispatch {
    ($T:ty, $S:ident => $body:expr) => {
        match $crate::simd::precision::<$T>() {
            $crate::simd::Precision::F32 => {
                type $S = f32;
                $body
            }
            $crate::simd::Precision::F64 => {
                type $S = f64;
                $body
            }
        }
    };
}
pub(crate) use dispatch;

/// Asks the CPU to bring the cache line holding `data[index]` into L1: a hint that never
/// faults and never changes a value (any `index`), nothing off x86-64.
#[inline(always)]
pub(crate) fn prefetch<T>(data: &[T], index: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `prefetcht0` needs only SSE (every x86-64 CPU), never faults and does not change
    // memory; the address is formed with wrapping_add and never dereferenced.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(data.as_ptr().wrapping_add(index).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (data, index);
}

/// Whether the f32 row-wise kernels (GELU, long softmax rows) run on 512-bit vectors: when the
/// GEMM kernels use AVX-512. Read on the calling thread (the GEMM variant override is
/// thread-local) and passed to the blocks that threads run.
pub(crate) fn f32_on_512_bit_vectors() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        crate::gemm::current_variant() == crate::gemm::KernelVariant::Avx512
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// An element type together with its 256-bit `wide` vector, and the lane-wise math of the
/// row-wise kernels over it.
pub(crate) trait Simd: Float {
    type V: SimdVector<Scalar = Self> + Neg<Output = Self::V> + AddAssign + MulAssign;
    /// Chebyshev coefficients of `F` in [`erfc_nonneg`] (precision-dependent truncation).
    const ERFC_CHEB: &'static [Self];
    /// `|x|` below which [`erf`] uses its Maclaurin series (above it, `1 - erfc` would lose
    /// relative accuracy as erf shrinks).
    const ERF_SERIES_MAX: f64;
    /// Maclaurin terms of `erf(x) / x` in powers of `x^2`, enough for `|x| < ERF_SERIES_MAX`.
    const ERF_TAYLOR_TERMS: usize;
    /// `|x|` below which `wide`'s exp is used as is.
    const EXP_SAFE: f64;

    /// Maximum of the lanes, halving them each step (lane `l` against lane `l + half`): a
    /// fixed order.
    #[inline(always)]
    fn hmax(v: Self::V) -> Self {
        let mut lanes = [Self::ZERO; MAX_LANES];
        v.store(&mut lanes);
        let mut half = Self::V::LANES;
        while half > 1 {
            half /= 2;
            for l in 0..half {
                lanes[l] = lanes[l].max(lanes[l + half]);
            }
        }
        lanes[0]
    }
    fn vmax(a: Self::V, b: Self::V) -> Self::V;
    fn vabs(v: Self::V) -> Self::V;
    /// Lane-wise `if mask { t } else { f }` with the mask from `lt` / `gt`.
    fn select(mask: Self::V, t: Self::V, f: Self::V) -> Self::V;
    fn vlt(a: Self::V, b: Self::V) -> Self::V;
    fn all(mask: Self::V) -> bool;
    /// Transpose a `LANES x LANES` block (rows contiguous in `block`) into `LANES` column
    /// vectors; `false` when this type has no fast transpose (the caller then gathers).
    fn transpose_in(_block: &[Self], _columns: &mut [Self::V]) -> bool {
        false
    }
    /// Inverse of [`Simd::transpose_in`]: column vectors back to contiguous rows.
    fn transpose_out(_columns: &[Self::V], _block: &mut [Self]) -> bool {
        false
    }
    /// `wide`'s exp: accurate for `|x| < EXP_SAFE`, wrong (0) outside.
    fn wide_exp(v: Self::V) -> Self::V;
    /// `v 2^n` lane-wise for integral `n` with `2^n` a normal number (exact when the product
    /// is normal): `2^n` is built in the exponent field, `n + bias` shifted into place.
    fn vmul_exp2(v: Self::V, n: Self::V) -> Self::V;

    /// `e^x` lane-wise, about 1 ulp, IEEE edge cases: `+inf -> +inf`, `-inf -> 0`, `NaN -> NaN`.
    #[inline(always)]
    fn vexp(x: Self::V) -> Self::V {
        let e = Self::wide_exp(x);
        let safe = Self::vlt(
            Self::vabs(x),
            Self::V::splat(Self::from_f64(Self::EXP_SAFE)),
        );
        if Self::all(safe) {
            return e;
        }
        exp_edges::<Self>(x, e, safe)
    }
}

/// `out = f(inputs)` elementwise: whole vectors through `vector`, the last `out.len() % LANES`
/// elements one at a time through `scalar`, its twin on scalars (which keeps the kernel's own
/// rounding there, fused or not). Every input holds at least `out.len()` elements.
///
/// With streaming `stores` (`crate::stream`) the vectors from `out`'s first vector-aligned
/// element on are written with [`SimdVector::store_streaming`] (the caller fences), and the
/// ones before it and the last, partial one of the vector part go through zero-padded vectors
/// with ordinary stores: every element keeps the formula it has with ordinary stores (vector or
/// scalar), so the values are the same bits.
#[inline(always)]
pub(crate) fn map_lanes<S: Simd, const K: usize>(
    out: &mut [S],
    inputs: [&[S]; K],
    vector: impl Fn([S::V; K]) -> S::V,
    scalar: impl Fn([S; K]) -> S,
    stores: OutputStores,
) {
    let l = S::V::LANES;
    let len = out.len();
    let full = len - len % l;
    let streamed = match stores {
        OutputStores::Cached => 0..0,
        OutputStores::Streaming => {
            let start = first_aligned(out, l).min(full);
            start..start + (full - start) / l * l
        }
    };
    // the vector part outside `streamed`, through zero-padded vectors (lane-wise arithmetic, so
    // the padding never reaches the real lanes)
    let padded = |out: &mut [S], range: std::ops::Range<usize>| {
        for start in range.clone().step_by(l) {
            let end = (start + l).min(range.end);
            let lanes =
                std::array::from_fn(|i| S::V::load_partial(&inputs[i][start..end], end - start));
            let mut buffer = [S::ZERO; MAX_LANES];
            S::V::store(vector(lanes), &mut buffer[..l]);
            out[start..end].copy_from_slice(&buffer[..end - start]);
        }
    };
    if streamed.is_empty() {
        let mut input_chunks = inputs.map(|x| x[..full].chunks_exact(l));
        for o in out[..full].chunks_exact_mut(l) {
            let lanes = std::array::from_fn(|i| match input_chunks[i].next() {
                Some(chunk) => S::V::load(chunk),
                None => unreachable!("every input is as long as the output"),
            });
            S::V::store(vector(lanes), o);
        }
    } else {
        padded(out, 0..streamed.start);
        for j in streamed.clone().step_by(l) {
            let lanes = std::array::from_fn(|i| S::V::load(&inputs[i][j..j + l]));
            vector(lanes).store_streaming(&mut out[j..j + l]);
        }
        padded(out, streamed.end..full);
    }
    for j in full..len {
        out[j] = scalar(std::array::from_fn(|i| inputs[i][j]));
    }
}

/// The rare lanes of [`Simd::vexp`]: `|x| >= EXP_SAFE`, infinities and NaN.
#[cold]
#[inline(never)]
fn exp_edges<S: Simd>(x: S::V, e: S::V, safe: S::V) -> S::V {
    // e^x = (e^(x/2))^2 extends wide's range to overflow and gradual underflow.
    let half = S::wide_exp(x * S::V::splat(S::from_f64(0.5)));
    let mut xs = [S::ZERO; 8];
    let mut sq = [S::ZERO; 8];
    let mut ok = [S::ZERO; 8];
    let mut out = [S::ZERO; 8];
    let l = S::V::LANES;
    S::V::store(x, &mut xs[..l]);
    S::V::store(half * half, &mut sq[..l]);
    S::V::store(
        S::select(safe, S::V::splat(S::ONE), S::V::splat(S::ZERO)),
        &mut ok[..l],
    );
    S::V::store(e, &mut out[..l]);
    for k in 0..l {
        if ok[k] == S::ONE {
            continue;
        }
        let v = xs[k];
        out[k] = if v.is_nan() {
            v
        } else if v > S::ZERO {
            // wide zeroes lanes beyond its range: those overflow.
            if sq[k].is_finite() && sq[k] > S::ZERO {
                sq[k]
            } else {
                S::INFINITY
            }
        } else {
            sq[k]
        };
    }
    S::V::load(&out[..l])
}

/// `erfc(z)` for `z >= 0` lane-wise (relative accuracy; `+inf -> 0`, NaN -> NaN).
#[inline(always)]
pub(crate) fn erfc_nonneg<S: Simd>(z: S::V) -> S::V {
    let (t, f) = erfc_parts::<S>(z);
    t * S::vexp(f - z * z)
}

/// `(t, F(4t - 2))` with `erfc(z) = t exp(F - z^2)` for `z >= 0`; `F` lies in
/// `[log(1 / (2 sqrt pi)), 0] = [-1.27, 0]`, so `exp(F)` needs no range handling.
#[inline(always)]
fn erfc_parts<S: Simd>(z: S::V) -> (S::V, S::V) {
    let two = S::V::splat(S::from_f64(2.0));
    let t = two / (two + z);
    // ty = 4t - 2 in (-2, 2]; Clenshaw recurrence in ty (= 2u, u the Chebyshev variable).
    let ty = S::V::mul_add(S::V::splat(S::from_f64(4.0)), t, -two);
    let c = S::ERFC_CHEB;
    let mut d = S::V::splat(S::ZERO);
    let mut dd = S::V::splat(S::ZERO);
    for &cj in c[1..].iter().rev() {
        let tmp = d;
        d = S::V::mul_add(ty, d, S::V::splat(cj) - dd);
        dd = tmp;
    }
    let half = S::V::splat(S::from_f64(0.5));
    (
        t,
        S::V::mul_add(half, S::V::mul_add(ty, d, S::V::splat(c[0])), -dd),
    )
}

/// `(Phi(x), phi(x))` lane-wise for the GELU kernels, sharing one `e = exp(-x^2 / 2)`:
/// `phi(x) = e / sqrt(2 pi)`, and with `z = |x| / sqrt 2`, `erfc(z) = t exp(F) e` (as in
/// [`erfc_nonneg`], since `z^2 = x^2 / 2`), `Phi(x) = erfc(z) / 2` for `x < 0` and
/// `1 - erfc(z) / 2` otherwise. Relative accuracy of `Phi` in the left tail as for
/// [`normal_cdf`] (the exponent's rounding, about `x^2 eps / 2`).
#[inline(always)]
pub(crate) fn normal_cdf_and_pdf<S: Simd>(x: S::V) -> (S::V, S::V) {
    let half = S::V::splat(S::from_f64(0.5));
    let e = S::vexp(x * x * -half);
    let z = S::vabs(x * S::V::splat(S::from_f64(std::f64::consts::FRAC_1_SQRT_2)));
    let (t, f) = erfc_parts::<S>(z);
    let half_erfc = t * S::wide_exp(f) * e * half;
    let cdf = S::select(
        S::vlt(x, S::V::splat(S::ZERO)),
        half_erfc,
        S::V::splat(S::ONE) - half_erfc,
    );
    (cdf, e * S::V::splat(S::from_f64(0.398_942_280_401_432_7)))
}

/// `erf(x)` lane-wise: `sign(x) (1 - erfc|x|)` for `|x| >= ERF_SERIES_MAX` (1/2 in f64, 1 in
/// f32), Maclaurin series below.
#[inline(always)]
pub(crate) fn erf<S: Simd>(x: S::V) -> S::V {
    let ax = S::vabs(x);
    let x2 = x * x;
    // erf(x) = 2/sqrt(pi) sum_n (-1)^n x^(2n+1) / (n! (2n+1)); Horner in x^2.
    let mut p = S::V::splat(S::ZERO);
    for n in (0..S::ERF_TAYLOR_TERMS).rev() {
        let coef = taylor_coef(n);
        p = S::V::mul_add(p, x2, S::V::splat(S::from_f64(coef)));
    }
    let small = p * x;
    let one = S::V::splat(S::ONE);
    let tail = one - erfc_nonneg::<S>(ax);
    // copysign(tail, x): x < 0 -> -tail.
    let tail = S::select(S::vlt(x, S::V::splat(S::ZERO)), -tail, tail);
    S::select(
        S::vlt(ax, S::V::splat(S::from_f64(S::ERF_SERIES_MAX))),
        small,
        tail,
    )
}

/// `2/sqrt(pi) (-1)^n / (n! (2n+1))`.
#[inline(always)]
fn taylor_coef(n: usize) -> f64 {
    let mut fact = 1.0;
    for k in 1..=n {
        fact *= k as f64;
    }
    let sign = if n.is_multiple_of(2) { 1.0 } else { -1.0 };
    std::f64::consts::FRAC_2_SQRT_PI * sign / (fact * (2 * n + 1) as f64)
}

/// Standard normal cdf `Phi(x) = erfc(-x / sqrt 2) / 2` lane-wise: `erfc(|u|)/2` for
/// `u = x/sqrt 2 < 0` (accurate far in the left tail), `1 - erfc(u)/2` otherwise.
#[inline(always)]
pub(crate) fn normal_cdf<S: Simd>(x: S::V) -> S::V {
    let u = x * S::V::splat(S::from_f64(std::f64::consts::FRAC_1_SQRT_2));
    let half_erfc = erfc_nonneg::<S>(S::vabs(u)) * S::V::splat(S::from_f64(0.5));
    S::select(
        S::vlt(u, S::V::splat(S::ZERO)),
        half_erfc,
        S::V::splat(S::ONE) - half_erfc,
    )
}

/// `F` Chebyshev coefficients for f64 (|c_j| down to ~1e-15).
const ERFC_CHEB_F64: [f64; 25] = [
    -1.302_653_719_781_709_4e0,
    6.419_697_923_564_902e-1,
    1.947_647_320_418_603_4e-2,
    -9.561_514_786_808_773e-3,
    -9.465_953_444_819_708e-4,
    3.668_394_978_527_278_4e-4,
    4.252_332_480_705_889e-5,
    -2.027_857_811_263_689_2e-5,
    -1.624_290_004_537_121_2e-6,
    1.303_655_835_288_575_1e-6,
    1.562_644_199_037_954_8e-8,
    -8.523_809_627_014_601e-8,
    6.529_054_580_317_605_6e-9,
    5.059_343_743_951_672e-9,
    -9.913_641_907_388_638e-10,
    -2.273_644_494_898_974_1e-10,
    9.646_782_817_007_704e-11,
    2.394_318_077_136_858_7e-12,
    -6.886_108_350_201_426e-12,
    8.946_121_621_278_28e-13,
    3.129_774_217_569_547_7e-13,
    -1.129_152_327_195_015_4e-13,
    9.436_895_709_313_83e-16,
    5.739_853_037_312_06e-15,
    -1.859_623_566_247_137_2e-15,
];

/// The first 13 coefficients rounded to f32: the dropped terms sum to below 2e-8, under half an
/// f32 ulp relative to erfc.
const ERFC_CHEB_F32: [f32; 13] = {
    let mut c = [0.0f32; 13];
    let mut j = 0;
    while j < 13 {
        c[j] = ERFC_CHEB_F64[j] as f32;
        j += 1;
    }
    c
};

/// The [`Simd`] lane-wise operations that are the same call on both of `wide`'s vector types.
macro_rules! wide_lane_ops {
    ($v:ty) => {
        #[inline(always)]
        fn vmax(a: $v, b: $v) -> $v {
            a.fast_max(b)
        }
        #[inline(always)]
        fn vabs(v: $v) -> $v {
            v.abs()
        }
        #[inline(always)]
        fn select(mask: $v, t: $v, f: $v) -> $v {
            mask.blend(t, f)
        }
        #[inline(always)]
        fn vlt(a: $v, b: $v) -> $v {
            a.cmp_lt(b)
        }
        #[inline(always)]
        fn all(mask: $v) -> bool {
            mask.all()
        }
        #[inline(always)]
        fn wide_exp(v: $v) -> $v {
            v.exp()
        }
    };
}

impl Simd for f32 {
    type V = f32x8;
    const ERFC_CHEB: &'static [f32] = &ERFC_CHEB_F32;
    const ERF_SERIES_MAX: f64 = 1.0;
    // Next term at |x| = 1 is below 1.3e-8 relative.
    const ERF_TAYLOR_TERMS: usize = 11;
    const EXP_SAFE: f64 = 87.0;

    wide_lane_ops!(f32x8);
    #[inline(always)]
    fn transpose_in(block: &[f32], columns: &mut [f32x8]) -> bool {
        let rows: [f32x8; 8] =
            std::array::from_fn(|k| <f32x8 as SimdVector>::load(&block[8 * k..8 * k + 8]));
        columns[..8].copy_from_slice(&f32x8::transpose(rows));
        true
    }
    #[inline(always)]
    fn transpose_out(columns: &[f32x8], block: &mut [f32]) -> bool {
        let cols: [f32x8; 8] = columns[..8].try_into().expect("8 columns");
        for (k, row) in f32x8::transpose(cols).iter().enumerate() {
            SimdVector::store(*row, &mut block[8 * k..8 * k + 8]);
        }
        true
    }
    #[inline(always)]
    fn vmul_exp2(v: f32x8, n: f32x8) -> f32x8 {
        // n + 2^23 + 127 holds n + 127 in its low mantissa bits; shifted into the exponent
        // field they make 2^n (the bits shifted out are the constant's exponent).
        let biased = n + f32x8::splat(8_388_608.0 + 127.0);
        v * bytemuck::cast::<u32x8, f32x8>(bytemuck::cast::<f32x8, u32x8>(biased) << 23)
    }
}

impl Simd for f64 {
    type V = f64x4;
    const ERFC_CHEB: &'static [f64] = &ERFC_CHEB_F64;
    const ERF_SERIES_MAX: f64 = 0.5;
    // Next term at |x| = 1/2 is below 1e-17 relative.
    const ERF_TAYLOR_TERMS: usize = 13;
    const EXP_SAFE: f64 = 708.0;

    wide_lane_ops!(f64x4);
    #[inline(always)]
    fn vmul_exp2(v: f64x4, n: f64x4) -> f64x4 {
        // As for f32: n + 2^52 + 1023 holds n + 1023 in its low mantissa bits.
        let biased = n + f64x4::splat(4_503_599_627_370_496.0 + 1023.0);
        v * bytemuck::cast::<u64x4, f64x4>(bytemuck::cast::<f64x4, u64x4>(biased) << 52)
    }
}

/// Test hooks: the vector approximations applied lane-wise over a slice (tail lanes padded), so
/// integration tests can check them over dense grids against f64 references.
#[doc(hidden)]
pub mod testing {
    use super::*;

    fn map<T: Float>(x: &[T], out: &mut [T], f32f: fn(f32x8) -> f32x8, f64f: fn(f64x4) -> f64x4) {
        match precision::<T>() {
            Precision::F32 => map_vectors::<f32>(cast(x), cast_mut(out), f32f),
            Precision::F64 => map_vectors::<f64>(cast(x), cast_mut(out), f64f),
        }
    }
    /// `out = f(x)` a vector at a time, the last one zero-padded.
    fn map_vectors<S: Simd>(x: &[S], out: &mut [S], f: fn(S::V) -> S::V) {
        let lanes = S::V::LANES;
        for (xc, oc) in x.chunks(lanes).zip(out.chunks_mut(lanes)) {
            let mut buf = [S::ZERO; MAX_LANES];
            buf[..xc.len()].copy_from_slice(xc);
            f(S::V::load(&buf)).store(&mut buf);
            oc.copy_from_slice(&buf[..oc.len()]);
        }
    }

    /// Lane-wise `Simd::vexp`.
    pub fn exp<T: Float>(x: &[T], out: &mut [T]) {
        map(x, out, <f32 as Simd>::vexp, <f64 as Simd>::vexp)
    }
    /// Lane-wise vector erf.
    pub fn erf<T: Float>(x: &[T], out: &mut [T]) {
        map(x, out, super::erf::<f32>, super::erf::<f64>)
    }
    /// Lane-wise vector erfc for `x >= 0`.
    pub fn erfc<T: Float>(x: &[T], out: &mut [T]) {
        map(x, out, erfc_nonneg::<f32>, erfc_nonneg::<f64>)
    }
    /// Lane-wise standard normal cdf.
    pub fn normal_cdf<T: Float>(x: &[T], out: &mut [T]) {
        map(x, out, super::normal_cdf::<f32>, super::normal_cdf::<f64>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `vmul_exp2` builds `2^n` in the exponent field: check every normal `n` of both widths,
    /// a different `n` in each lane, against `powi`.
    #[test]
    fn vmul_exp2_scales_by_exact_powers_of_two() {
        for n0 in -126..=120 {
            let n: [f32; 8] = std::array::from_fn(|k| (n0 + k as i32) as f32);
            let got = <f32 as Simd>::vmul_exp2(f32x8::splat(1.5), f32x8::from(n)).to_array();
            for (g, &nk) in got.iter().zip(&n) {
                assert_eq!(*g, 1.5 * 2f32.powi(nk as i32), "f32, n = {nk}");
            }
        }
        for n0 in -1022..=1020 {
            let n: [f64; 4] = std::array::from_fn(|k| (n0 + k as i32) as f64);
            let got = <f64 as Simd>::vmul_exp2(f64x4::splat(-1.25), f64x4::from(n)).to_array();
            for (g, &nk) in got.iter().zip(&n) {
                assert_eq!(*g, -1.25 * 2f64.powi(nk as i32), "f64, n = {nk}");
            }
        }
    }
}
