//! 512-bit vectors for the fused attention kernels (`attention.rs`) on CPUs with AVX-512F,
//! f32 only (training runs in f32; f64 keeps `wide`'s 256-bit vectors).
//!
//! The attention code is written once, generic over [`AttentionVector`]; [`F32x16`] implements it with
//! `std::arch` intrinsics, and its `forward_sample` / `backward_sample` enter that generic code
//! through functions compiled with `avx512f` enabled, so everything they inline (the
//! `#[inline(always)]` generic functions and these methods) is compiled for AVX-512 too.
//!
//! # Soundness
//!
//! An `F32x16` is only ever created inside those two entry points, [`gelu_pass`] (the f32
//! GELU kernels of `activation.rs`, written over the same trait) and [`softmax_rows`] (the long
//! f32 rows of `softmax.rs`), and `attention.rs`, `activation.rs` and `softmax.rs` call them
//! only when [`crate::gemm::current_variant`] is `Avx512`, which is
//! never the case unless the running CPU reports `avx512f` (`KernelVariant::is_available`). So
//! every intrinsic below runs on a CPU that has it.

use std::arch::x86_64::{
    __m512, _mm512_abs_ps, _mm512_add_ps, _mm512_cmp_ps_mask, _mm512_div_ps, _mm512_fmadd_ps,
    _mm512_fnmadd_ps, _mm512_loadu_ps, _mm512_mask_blend_ps, _mm512_maskz_scalef_ps, _mm512_max_ps,
    _mm512_mul_ps, _mm512_reduce_add_ps, _mm512_reduce_max_ps, _mm512_roundscale_ps,
    _mm512_scalef_ps, _mm512_set1_ps, _mm512_setzero_ps, _mm512_storeu_ps, _mm512_stream_ps,
    _mm512_sub_ps, _mm_sfence, _CMP_GE_OQ, _CMP_LT_OQ, _MM_FROUND_NO_EXC,
    _MM_FROUND_TO_NEAREST_INT,
};

use crate::activation::{run_gelu_pass, GeluPass};
use crate::attention::{backward_sample, forward_sample, AttentionVector, Panels, Workspace};
use crate::simd::SimdVector;
use crate::softmax::softmax_block;
use crate::stream::OutputStores;

/// Sixteen f32 lanes in a zmm register.
#[derive(Clone, Copy)]
pub(crate) struct F32x16(__m512);

/// Below this `e^x` is not a normal f32 (`e^-87.33 = 2^-126`); the kernels' exp returns 0 there.
const EXP_MIN: f32 = -87.33;

macro_rules! impl_f32x16_operator {
    ($($trait:ident $method:ident $intrinsic:ident),*) => {$(
        impl std::ops::$trait for F32x16 {
            type Output = Self;
            #[inline(always)]
            fn $method(self, other: Self) -> Self {
                // SAFETY: register-only arithmetic; AVX-512F is present whenever an F32x16
                // exists (module documentation).
                F32x16(unsafe { $intrinsic(self.0, other.0) })
            }
        }
    )*};
}
impl_f32x16_operator!(
    Add add _mm512_add_ps,
    Sub sub _mm512_sub_ps,
    Mul mul _mm512_mul_ps,
    Div div _mm512_div_ps
);

impl SimdVector for F32x16 {
    type Scalar = f32;
    const LANES: usize = 16;
    const REGISTERS: usize = 32;

    #[inline(always)]
    fn splat(x: f32) -> Self {
        // SAFETY: see the module documentation (AVX-512F is present whenever an F32x16 exists).
        F32x16(unsafe { _mm512_set1_ps(x) })
    }
    #[inline(always)]
    fn load(src: &[f32]) -> Self {
        let src = &src[..16];
        // SAFETY: 16 readable f32 (sliced above); unaligned load; AVX-512F as above.
        F32x16(unsafe { _mm512_loadu_ps(src.as_ptr()) })
    }
    #[inline(always)]
    fn store(self, dst: &mut [f32]) {
        let dst = &mut dst[..16];
        // SAFETY: 16 writable f32 (sliced above), uniquely borrowed; AVX-512F as above.
        unsafe { _mm512_storeu_ps(dst.as_mut_ptr(), self.0) }
    }
    #[inline(always)]
    fn store_streaming(self, dst: &mut [f32]) {
        let dst = &mut dst[..16];
        if dst.as_ptr().align_offset(64) != 0 {
            return self.store(dst);
        }
        // SAFETY: 16 writable f32 (sliced above), uniquely borrowed and 64-byte aligned
        // (checked above), as the streaming store needs; AVX-512F as above. The callers fence
        // (`stream_fence`) before the memory is read again.
        unsafe { _mm512_stream_ps(dst.as_mut_ptr(), self.0) }
    }
    #[inline(always)]
    fn stream_fence() {
        // SAFETY: `sfence` has no operands and needs only SSE (every x86-64 CPU).
        unsafe { _mm_sfence() }
    }
    #[inline(always)]
    fn mul_add(self, m: Self, a: Self) -> Self {
        // SAFETY: register-only arithmetic; AVX-512F as above.
        F32x16(unsafe { _mm512_fmadd_ps(self.0, m.0, a.0) })
    }
    #[inline(always)]
    fn hsum(self) -> f32 {
        // SAFETY: as for `mul_add` (a fixed tree of adds: deterministic).
        unsafe { _mm512_reduce_add_ps(self.0) }
    }
}

impl AttentionVector for F32x16 {
    #[inline(always)]
    fn abs(self) -> Self {
        // SAFETY: register-only arithmetic; AVX-512F as above.
        F32x16(unsafe { _mm512_abs_ps(self.0) })
    }
    #[inline(always)]
    fn where_negative(self, negative: Self, otherwise: Self) -> Self {
        // SAFETY: register-only arithmetic; AVX-512F as above.
        unsafe {
            let mask = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(self.0, _mm512_setzero_ps());
            F32x16(_mm512_mask_blend_ps(mask, otherwise.0, negative.0))
        }
    }
    #[inline(always)]
    fn all_below(self, limit: f32) -> bool {
        // SAFETY: register-only arithmetic; AVX-512F as above.
        unsafe { _mm512_cmp_ps_mask::<_CMP_LT_OQ>(self.0, _mm512_set1_ps(limit)) == 0xffff }
    }
    #[inline(always)]
    fn max(self, other: Self) -> Self {
        // SAFETY: register-only arithmetic; AVX-512F as above.
        F32x16(unsafe { _mm512_max_ps(self.0, other.0) })
    }
    #[inline(always)]
    fn hmax(self) -> f32 {
        // SAFETY: register-only arithmetic; AVX-512F as above.
        unsafe { _mm512_reduce_max_ps(self.0) }
    }
    /// `e^x = 2^r e^f` with `r = round(x log2 e)`, `f = x - r ln 2` (Cody-Waite, two parts) in
    /// `[-ln2/2, ln2/2]`, `e^f` by the same degree-7 Taylor polynomial as `wide`'s f32 exp, and
    /// `2^r` applied by `vscalefps`; lanes below [`EXP_MIN`] (and -inf, NaN) give 0.
    #[inline(always)]
    fn exp_nonpositive(self) -> Self {
        const ROUND: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
        // SAFETY: register-only arithmetic; AVX-512F as above.
        unsafe {
            let c = |v: f32| _mm512_set1_ps(v);
            let in_range = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(self.0, c(EXP_MIN));
            let x = _mm512_max_ps(self.0, c(EXP_MIN));
            let r = _mm512_roundscale_ps::<ROUND>(_mm512_mul_ps(x, c(std::f32::consts::LOG2_E)));
            let f = _mm512_fnmadd_ps(r, c(0.693_359_4), x);
            let f = _mm512_fnmadd_ps(r, c(-2.121_944_4e-4), f);
            let mut p = c(1.0 / 5040.0);
            for coefficient in [1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5] {
                p = _mm512_fmadd_ps(p, f, c(coefficient));
            }
            // e^f = 1 + f + f^2 p(f)
            let f2 = _mm512_mul_ps(f, f);
            let ef = _mm512_add_ps(_mm512_fmadd_ps(p, f2, f), c(1.0));
            F32x16(_mm512_maskz_scalef_ps(in_range, ef, r))
        }
    }
    #[inline(always)]
    fn mul_exp2(self, n: Self) -> Self {
        // SAFETY: register-only arithmetic; AVX-512F as above.
        F32x16(unsafe { _mm512_scalef_ps(self.0, n.0) })
    }

    fn forward_sample(
        panels: &Panels<Self>,
        scale: f32,
        qkv: &[f32],
        real_keys: Option<&[bool]>,
        probs: &mut [f32],
        context: &mut [f32],
        ws: &mut Workspace<f32>,
    ) {
        #[target_feature(enable = "avx512f")]
        fn run(
            panels: &Panels<F32x16>,
            scale: f32,
            qkv: &[f32],
            real_keys: Option<&[bool]>,
            probs: &mut [f32],
            context: &mut [f32],
            ws: &mut Workspace<f32>,
        ) {
            forward_sample(panels, scale, qkv, real_keys, probs, context, ws)
        }
        // SAFETY: AVX-512F is present (module documentation).
        unsafe { run(panels, scale, qkv, real_keys, probs, context, ws) }
    }

    fn backward_sample(
        panels: &Panels<Self>,
        scale: f32,
        qkv: &[f32],
        probs: &[f32],
        dcontext: &[f32],
        beta: f32,
        dqkv: &mut [f32],
        ws: &mut Workspace<f32>,
    ) {
        #[target_feature(enable = "avx512f")]
        #[allow(clippy::too_many_arguments)]
        fn run(
            panels: &Panels<F32x16>,
            scale: f32,
            qkv: &[f32],
            probs: &[f32],
            dcontext: &[f32],
            beta: f32,
            dqkv: &mut [f32],
            ws: &mut Workspace<f32>,
        ) {
            backward_sample(panels, scale, qkv, probs, dcontext, beta, dqkv, ws)
        }
        // SAFETY: AVX-512F is present (module documentation).
        unsafe { run(panels, scale, qkv, probs, dcontext, beta, dqkv, ws) }
    }
}

/// One f32 GELU pass (`activation.rs`) on 512-bit vectors; call only when
/// [`crate::gemm::current_variant`] is `Avx512` (module documentation).
pub(crate) fn gelu_pass(pass: GeluPass, stores: OutputStores) {
    #[target_feature(enable = "avx512f")]
    fn run(pass: GeluPass, stores: OutputStores) {
        run_gelu_pass::<F32x16>(pass, stores)
    }
    // SAFETY: AVX-512F is present (module documentation).
    unsafe { run(pass, stores) }
}

/// Softmax (or, with `log`, log-softmax) of the rows of `x` (`cols` entries each) into `y` on
/// 512-bit vectors (`softmax.rs`); call only when [`crate::gemm::current_variant`] is `Avx512`
/// (module documentation).
pub(crate) fn softmax_rows(cols: usize, x: &[f32], y: &mut [f32], log: bool, stores: OutputStores) {
    #[target_feature(enable = "avx512f")]
    fn run(cols: usize, x: &[f32], y: &mut [f32], log: bool, stores: OutputStores) {
        softmax_block::<F32x16>(cols, x, y, log, stores)
    }
    // SAFETY: AVX-512F is present (module documentation).
    unsafe { run(cols, x, y, log, stores) }
}
