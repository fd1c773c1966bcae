//! The element types the kernels work on.

use std::fmt::{Debug, Display};
use std::iter::Sum;
use std::ops::{Add, AddAssign, Div, DivAssign, Mul, MulAssign, Neg, Sub, SubAssign};

/// A floating-point element type: implemented for `f32` and `f64` only.
///
/// The arithmetic surface is what the kernels, the autodiff engine and the models need; the
/// conversions through `f64` are exact for `f64` and round-to-nearest for `f32`.
pub trait Float:
    Copy
    + Send
    + Sync
    + Default
    + Debug
    + Display
    + PartialEq
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + Sum
    + 'static
{
    /// Additive identity, `0.0`.
    const ZERO: Self;
    /// Multiplicative identity, `1.0`.
    const ONE: Self;
    /// Positive infinity: the neutral start of a running minimum.
    const INFINITY: Self;
    /// Negative infinity: the neutral start of a running maximum (softmax's row max).
    const NEG_INFINITY: Self;
    /// Machine epsilon: the gap between 1 and the next representable value.
    const EPSILON: Self;
    /// `"f32"` or `"f64"`, for reports.
    const NAME: &'static str;

    /// Converts from `f64`: exact for `f64`, round-to-nearest for `f32` (out-of-range values
    /// become infinite).
    fn from_f64(x: f64) -> Self;
    /// Converts to `f64`; always exact.
    fn to_f64(self) -> f64;
    /// Converts a count or index, through `f64` (exact up to 2^53, 2^24 for `f32`).
    fn from_usize(x: usize) -> Self {
        Self::from_f64(x as f64)
    }
    /// `e^self`, the standard library's.
    fn exp(self) -> Self;
    /// Natural logarithm (NaN below zero, `-inf` at zero).
    fn ln(self) -> Self;
    /// `ln(1 + self)`, accurate for `self` near zero (the logistic loss needs it).
    fn ln_1p(self) -> Self;
    /// Square root (NaN below zero).
    fn sqrt(self) -> Self;
    /// Hyperbolic tangent.
    fn tanh(self) -> Self;
    /// Absolute value.
    fn abs(self) -> Self;
    /// `self` to the integer power `n`.
    fn powi(self, n: i32) -> Self;
    /// The larger of the two; if one is NaN, the other.
    fn max(self, other: Self) -> Self;
    /// The smaller of the two; if one is NaN, the other.
    fn min(self, other: Self) -> Self;
    /// `self * a + b` with one rounding (a fused multiply-add).
    fn mul_add(self, a: Self, b: Self) -> Self;
    /// Neither infinite nor NaN.
    fn is_finite(self) -> bool;
    /// Is NaN.
    fn is_nan(self) -> bool;
}

/// The [`Float`] methods that are the primitive type's inherent method of the same name and
/// arguments, returning `Self`.
macro_rules! delegate_to_std {
    ($t:ty; $($method:ident($($arg:ident: $arg_t:ty),*),)*) => {$(
        #[inline(always)]
        fn $method(self $(, $arg: $arg_t)*) -> Self {
            <$t>::$method(self $(, $arg)*)
        }
    )*};
}

macro_rules! impl_float {
    ($t:ty, $name:literal) => {
        impl Float for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const INFINITY: Self = <$t>::INFINITY;
            const NEG_INFINITY: Self = <$t>::NEG_INFINITY;
            const EPSILON: Self = <$t>::EPSILON;
            const NAME: &'static str = $name;

            #[inline(always)]
            fn from_f64(x: f64) -> Self {
                x as $t
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            delegate_to_std!($t;
                exp(),
                ln(),
                ln_1p(),
                sqrt(),
                tanh(),
                abs(),
                powi(n: i32),
                max(other: Self),
                min(other: Self),
                mul_add(a: Self, b: Self),
            );
            #[inline(always)]
            fn is_finite(self) -> bool {
                <$t>::is_finite(self)
            }
            #[inline(always)]
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
        }
    };
}

impl_float!(f32, "f32");
impl_float!(f64, "f64");
