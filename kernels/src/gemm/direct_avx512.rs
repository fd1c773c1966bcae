//! The direct GEMM path (`gemm/direct.rs`) with 512-bit vectors, for the `Avx512` kernel
//! variant: the same `#[inline(always)]` kernels instantiated with zmm vectors inside one
//! `#[target_feature(enable = "avx512f")]` function per element type.
//!
//! Soundness rests on one invariant: the vector types of this file ([`Zmm32`], [`Zmm64`]) are
//! private to it and only created inside the `avx512f` functions below, which run only after
//! [`super::avx512::detected`] has confirmed AVX-512F. Their memory accesses are bounded by
//! the slices they are given: full loads and stores slice `LANES` scalars first, partial ones
//! use AVX-512 masked moves, which touch no memory in masked-off lanes.

use std::arch::x86_64::{
    __m512, __m512d, _mm512_add_pd, _mm512_add_ps, _mm512_div_pd, _mm512_div_ps, _mm512_fmadd_pd,
    _mm512_fmadd_ps, _mm512_loadu_pd, _mm512_loadu_ps, _mm512_maskz_loadu_pd,
    _mm512_maskz_loadu_ps, _mm512_mul_pd, _mm512_mul_ps, _mm512_reduce_add_pd,
    _mm512_reduce_add_ps, _mm512_set1_pd, _mm512_set1_ps, _mm512_storeu_pd, _mm512_storeu_ps,
    _mm512_sub_pd, _mm512_sub_ps,
};
use std::ops::{Add, Div, Mul, Range, Sub};

use super::direct::{columns, OutRows, Product};
use crate::simd::SimdVector;

/// Sixteen f32 lanes in a zmm register.
#[derive(Clone, Copy)]
struct Zmm32(__m512);

/// Eight f64 lanes in a zmm register.
#[derive(Clone, Copy)]
struct Zmm64(__m512d);

macro_rules! impl_zmm_operator {
    ($vector:ident, $($trait:ident $method:ident $intrinsic:ident),*) => {$(
        impl $trait for $vector {
            type Output = Self;
            #[inline(always)]
            fn $method(self, other: Self) -> Self {
                // SAFETY: a vector of this type exists only inside the avx512f functions of
                // this file, entered after detection (module docs).
                $vector(unsafe { $intrinsic(self.0, other.0) })
            }
        }
    )*};
}

impl_zmm_operator!(
    Zmm32,
    Add add _mm512_add_ps,
    Sub sub _mm512_sub_ps,
    Mul mul _mm512_mul_ps,
    Div div _mm512_div_ps
);
impl_zmm_operator!(
    Zmm64,
    Add add _mm512_add_pd,
    Sub sub _mm512_sub_pd,
    Mul mul _mm512_mul_pd,
    Div div _mm512_div_pd
);

macro_rules! impl_zmm {
    (
        $vector:ident, $scalar:ty, $lanes:literal, $mask:ty, $set1:ident, $loadu:ident,
        $maskz_loadu:ident, $storeu:ident, $fmadd:ident, $reduce_add:ident
    ) => {
        impl SimdVector for $vector {
            type Scalar = $scalar;
            const LANES: usize = $lanes;
            const REGISTERS: usize = 32;
            #[inline(always)]
            fn splat(x: $scalar) -> Self {
                // SAFETY: only called inside the avx512f functions of this file (module docs).
                $vector(unsafe { $set1(x) })
            }
            #[inline(always)]
            fn load(src: &[$scalar]) -> Self {
                let src = &src[..$lanes];
                // SAFETY: avx512f as above; `src` holds the LANES scalars read (unaligned load).
                $vector(unsafe { $loadu(src.as_ptr()) })
            }
            #[inline(always)]
            fn load_partial(src: &[$scalar], len: usize) -> Self {
                let src = &src[..len];
                let mask: $mask = ((1u32 << len) - 1) as $mask;
                // SAFETY: avx512f as above; `len < LANES` lanes are read, all inside `src`
                // (sliced above); masked-off lanes touch no memory and are zeroed.
                $vector(unsafe { $maskz_loadu(mask, src.as_ptr()) })
            }
            #[inline(always)]
            fn store(self, dst: &mut [$scalar]) {
                let dst = &mut dst[..$lanes];
                // SAFETY: avx512f as above; `dst` holds the LANES scalars written.
                unsafe { $storeu(dst.as_mut_ptr(), self.0) }
            }
            #[inline(always)]
            fn mul_add(self, m: Self, a: Self) -> Self {
                // SAFETY: avx512f as above.
                $vector(unsafe { $fmadd(self.0, m.0, a.0) })
            }
            #[inline(always)]
            fn hsum(self) -> $scalar {
                // SAFETY: avx512f as above. A fixed sequence of shuffles and adds.
                unsafe { $reduce_add(self.0) }
            }
        }
    };
}

impl_zmm!(
    Zmm32,
    f32,
    16,
    u16,
    _mm512_set1_ps,
    _mm512_loadu_ps,
    _mm512_maskz_loadu_ps,
    _mm512_storeu_ps,
    _mm512_fmadd_ps,
    _mm512_reduce_add_ps
);
impl_zmm!(
    Zmm64,
    f64,
    8,
    u8,
    _mm512_set1_pd,
    _mm512_loadu_pd,
    _mm512_maskz_loadu_pd,
    _mm512_storeu_pd,
    _mm512_fmadd_pd,
    _mm512_reduce_add_pd
);

macro_rules! entry {
    ($name:ident, $inner:ident, $scalar:ty, $vector:ident) => {
        /// [`columns`] with zmm vectors.
        ///
        /// # Panics
        ///
        /// If the CPU lacks AVX-512F (the caller checks the kernel variant first).
        pub(crate) fn $name<O: OutRows<$scalar>>(
            product: Product<'_, $scalar>,
            cols: Range<usize>,
            scratch: &mut [$scalar],
            out: &mut O,
        ) {
            assert!(
                super::avx512::detected(),
                "gemm: the AVX-512 direct kernels need a CPU with avx512f"
            );
            // SAFETY: avx512f is present (asserted above); the function only needs that.
            unsafe { $inner(product, cols, scratch, out) }
        }

        #[target_feature(enable = "avx512f")]
        fn $inner<O: OutRows<$scalar>>(
            product: Product<'_, $scalar>,
            cols: Range<usize>,
            scratch: &mut [$scalar],
            out: &mut O,
        ) {
            columns::<$vector, O>(product, cols, scratch, out)
        }
    };
}

entry!(columns_f32, columns_f32_avx512, f32, Zmm32);
entry!(columns_f64, columns_f64_avx512, f64, Zmm64);
