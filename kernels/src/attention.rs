//! Multi-head scaled dot-product self-attention, forward and backward, fused per (sample, head).
//!
//! # Layout
//!
//! `qkv` `[B, S, 3d]` holds the packed projections `[Q | K | V]` of every token (row-major,
//! leading dimension `3d`); head `h` owns columns `h dh .. (h + 1) dh` of each third
//! (`d = H dh`). The probabilities `P` are `[B, H, S, S]` (query rows, key columns); the context
//! and its gradient are `[B, S, d]` (head `h` in columns `h dh ..`); `dqkv` is `[B, S, 3d]`.
//!
//! # Math
//!
//! For every sample `b` and head `h`, with the scale `s` and the key mask `M_b` (0 on real keys,
//! `-inf` on masked ones), and `G = dC`:
//!
//! ```text
//! P  = softmax_rows(s Q K^T + M_b)                   C  = P V
//! dP = G V^T        dZ = s P * (dP - rowsum(P * dP))  (softmax backward, times s)
//! dQ = dZ K         dK = dZ^T Q                      dV = P^T G
//! ```
//!
//! A sample whose keys are all masked gets all-zero `P` rows, hence a zero context and zero
//! gradients. Row special values follow [`softmax_rows`](crate::softmax_rows): a NaN or `+inf`
//! score makes its whole `P` row NaN.
//!
//! # How
//!
//! Attention heads are small (S ~ 50-200 tokens, dh ~ 16-64): a general GEMM call per product
//! spends as much time on edges, dispatch and call overhead as on multiply-adds, and a separate
//! softmax pass reads every score back. Here, per (sample, head), the operands are copied once
//! into zero-padded panels of whole vectors (`K^T`, `V^T` as `dh x S'`; `K`, `V`, `Q`, `G` as
//! `S x dh'`, with `S'`, `dh'` rounded up to the vector width), and every product is one
//! register-tiled loop, `tile`: `out[r, :] = sum_t A(r, t) B[t, :]` with A read in place
//! (row-major or transposed) and broadcast, and B a padded panel read as whole vectors. Score rows
//! are scaled, masked and normalized while they sit in L1; padding keys have score `-inf`, hence
//! probability exactly 0, so they add nothing to any product.
//!
//! The code is written once over `AttentionVector`: `wide`'s 256-bit vectors (f32 and f64, any target)
//! and, for f32 on CPUs with AVX-512F, 512-bit ones (`attention_avx512.rs`), chosen like the
//! GEMM kernels ([`crate::gemm::KernelVariant`], `BENIGN_GEMM_KERNEL`).
//!
//! Measured on the 2-core Ice Lake machine (`examples/attention_probe.rs`, interleaved best of
//! 20, 32 samples x 50 tokens x 4 heads of 16, one thread): the forward took 0.81-0.86 ms with
//! 512-bit vectors, 0.90-0.92 ms with 256-bit ones, and 1.2 ms as per-head GEMM calls plus a
//! softmax pass; the backward 1.3-1.4 ms with either width, against 1.4-1.5 ms. Leaving out one
//! step of the 256-bit forward at a time, the score rows' softmax (their exp) was about 40% of
//! it, the scores and the `P V` product about 20% each: the multiply-adds are not what bounds
//! these short rows, which is why the wider vectors gain little.
//!
//! Samples are independent: threads take whole samples, and each output element has one fixed
//! reduction order, so results are bit-identical for any thread count.

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use crate::gemm::{current_variant, KernelVariant};
use crate::simd::{cast, cast_mut, precision, same, Precision, Simd, SimdVector};
use crate::threading;
use crate::Float;

/// What the attention kernels need of a vector beyond [`SimdVector`], for one element type and
/// width: `wide`'s 256-bit vectors ([`Wide`]) everywhere, and 512-bit ones on AVX-512 CPUs
/// (`attention_avx512`).
pub(crate) trait AttentionVector: SimdVector {
    /// Lane-wise `|x|`.
    fn abs(self) -> Self;
    /// Lane-wise `if self < 0 { negative } else { otherwise }` (NaN lanes take `otherwise`).
    fn where_negative(self, negative: Self, otherwise: Self) -> Self;
    /// Whether every lane is below `limit` (false when a lane is NaN).
    fn all_below(self, limit: Self::Scalar) -> bool;
    /// Lane-wise maximum (either operand when one is NaN).
    fn max(self, other: Self) -> Self;
    /// Largest lane.
    fn hmax(self) -> Self::Scalar;
    /// `e^x` for `x <= 0`: about 1 ulp down to the smallest normal result, 0 below that and
    /// for `-inf` (what a softmax over max-subtracted scores needs).
    fn exp_nonpositive(self) -> Self;
    /// `self 2^n` lane-wise for integral `n` with `2^n` normal (exact when the product is
    /// normal).
    fn mul_exp2(self, n: Self) -> Self;
    /// `out[t ldo + j] = x[j ld + t]` for `j, t < LANES` (one block transposed), or `false`
    /// without touching `out` when this vector type has no fast transpose.
    fn transpose_block(
        _x: &[Self::Scalar],
        _ld: usize,
        _out: &mut [Self::Scalar],
        _ldo: usize,
    ) -> bool {
        false
    }

    /// One sample's forward; vectors that need CPU features wrap it in a function compiled
    /// with them.
    fn forward_sample(
        panels: &Panels<Self>,
        scale: Self::Scalar,
        qkv: &[Self::Scalar],
        real_keys: Option<&[bool]>,
        probs: &mut [Self::Scalar],
        context: &mut [Self::Scalar],
        ws: &mut Workspace<Self::Scalar>,
    ) {
        forward_sample(panels, scale, qkv, real_keys, probs, context, ws)
    }

    /// One sample's backward (see [`AttentionVector::forward_sample`]).
    #[allow(clippy::too_many_arguments)]
    fn backward_sample(
        panels: &Panels<Self>,
        scale: Self::Scalar,
        qkv: &[Self::Scalar],
        probs: &[Self::Scalar],
        dcontext: &[Self::Scalar],
        beta: Self::Scalar,
        dqkv: &mut [Self::Scalar],
        ws: &mut Workspace<Self::Scalar>,
    ) {
        backward_sample(panels, scale, qkv, probs, dcontext, beta, dqkv, ws)
    }
}

/// `wide`'s vectors: `f32x8` / `f64x4` (AVX2 + FMA on x86-64-v3, portable elsewhere), wrapped
/// so that [`AttentionVector`] can be implemented once for both through [`Simd`].
#[derive(Clone, Copy)]
pub(crate) struct Wide<S: Simd>(pub(crate) S::V);

macro_rules! impl_wide_operator {
    ($($trait:ident $method:ident),*) => {$(
        impl<S: Simd> std::ops::$trait for Wide<S> {
            type Output = Self;
            #[inline(always)]
            fn $method(self, other: Self) -> Self {
                Wide(std::ops::$trait::$method(self.0, other.0))
            }
        }
    )*};
}
impl_wide_operator!(Add add, Sub sub, Mul mul, Div div);

impl<S: Simd> SimdVector for Wide<S> {
    type Scalar = S;
    const LANES: usize = S::V::LANES;
    #[inline(always)]
    fn splat(x: S) -> Self {
        Wide(S::V::splat(x))
    }
    #[inline(always)]
    fn load(src: &[S]) -> Self {
        Wide(S::V::load(src))
    }
    #[inline(always)]
    fn store(self, dst: &mut [S]) {
        self.0.store(dst)
    }
    #[inline(always)]
    fn store_streaming(self, dst: &mut [S]) {
        self.0.store_streaming(dst)
    }
    #[inline(always)]
    fn stream_fence() {
        S::V::stream_fence()
    }
    #[inline(always)]
    fn mul_add(self, m: Self, a: Self) -> Self {
        Wide(self.0.mul_add(m.0, a.0))
    }
    #[inline(always)]
    fn hsum(self) -> S {
        self.0.hsum()
    }
}

impl<S: Simd> AttentionVector for Wide<S> {
    #[inline(always)]
    fn abs(self) -> Self {
        Wide(S::vabs(self.0))
    }
    #[inline(always)]
    fn where_negative(self, negative: Self, otherwise: Self) -> Self {
        let mask = S::vlt(self.0, S::V::splat(S::ZERO));
        Wide(S::select(mask, negative.0, otherwise.0))
    }
    #[inline(always)]
    fn all_below(self, limit: S) -> bool {
        S::all(S::vlt(self.0, S::V::splat(limit)))
    }
    #[inline(always)]
    fn max(self, other: Self) -> Self {
        Wide(S::vmax(self.0, other.0))
    }
    #[inline(always)]
    fn hmax(self) -> S {
        S::hmax(self.0)
    }
    #[inline(always)]
    fn exp_nonpositive(self) -> Self {
        // wide's exp maps lanes out of its range (and -inf) to 0.
        Wide(S::wide_exp(self.0))
    }
    #[inline(always)]
    fn mul_exp2(self, n: Self) -> Self {
        Wide(S::vmul_exp2(self.0, n.0))
    }
    #[inline(always)]
    fn transpose_block(x: &[S], ld: usize, out: &mut [S], ldo: usize) -> bool {
        let l = S::V::LANES;
        let mut block = [S::ZERO; 64];
        let mut columns = [S::V::splat(S::ZERO); 8];
        for (j, row) in block[..l * l].chunks_exact_mut(l).enumerate() {
            row.copy_from_slice(&x[j * ld..j * ld + l]);
        }
        if !S::transpose_in(&block[..l * l], &mut columns) {
            return false;
        }
        for (t, &column) in columns[..l].iter().enumerate() {
            S::V::store(column, &mut out[t * ldo..t * ldo + l]);
        }
        true
    }
}

/// The sizes of one batched multi-head attention problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionShape {
    /// Samples `B`.
    pub batch: usize,
    /// Tokens per sample `S` (queries and keys).
    pub seq: usize,
    /// Heads `H`.
    pub heads: usize,
    /// Columns per head `dh`; the model width is `d = H dh`.
    pub head_dim: usize,
}

impl AttentionShape {
    /// The model width `d = H dh`.
    pub fn width(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Entries of `qkv` and `dqkv`: `B S 3d`.
    pub fn qkv_len(&self) -> usize {
        self.batch * self.seq * 3 * self.width()
    }

    /// Entries of the probabilities: `B H S S`.
    pub fn probs_len(&self) -> usize {
        self.batch * self.heads * self.seq * self.seq
    }

    /// Entries of the context and its gradient: `B S d`.
    pub fn context_len(&self) -> usize {
        self.batch * self.seq * self.width()
    }

    fn check(&self, what: &str, name: &str, len: usize, expected: usize) {
        assert_eq!(
            len, expected,
            "{what}: {name} has {len} entries, the shape {self:?} needs {expected}"
        );
    }
}

/// Evaluate `$body` with `$V` the [`AttentionVector`] for `$T` on this CPU: 512-bit vectors for f32 when
/// the GEMM kernels use AVX-512 (see [`crate::gemm::KernelVariant`]), `wide`'s otherwise.
macro_rules! with_lanes {
    ($T:ty, $V:ident => $body:expr) => {
        match precision::<$T>() {
            Precision::F32 => {
                #[cfg(target_arch = "x86_64")]
                if current_variant() == KernelVariant::Avx512 {
                    type $V = crate::attention_avx512::F32x16;
                    return $body;
                }
                type $V = Wide<f32>;
                $body
            }
            Precision::F64 => {
                type $V = Wide<f64>;
                $body
            }
        }
    };
}

/// Attention forward (see the module documentation): `probs <- P`, `context <- P V`.
/// `real_keys` (`B S` entries, `true` on a real token) masks keys out; `None` attends to all.
/// Neither output is read.
pub fn attention_forward<T: Float>(
    shape: AttentionShape,
    scale: T,
    qkv: &[T],
    real_keys: Option<&[bool]>,
    probs: &mut [T],
    context: &mut [T],
) {
    let what = "attention_forward";
    shape.check(what, "qkv", qkv.len(), shape.qkv_len());
    shape.check(what, "probs", probs.len(), shape.probs_len());
    shape.check(what, "context", context.len(), shape.context_len());
    if let Some(real) = real_keys {
        shape.check(what, "real_keys", real.len(), shape.batch * shape.seq);
    }
    if shape.batch * shape.seq * shape.heads == 0 {
        return;
    }
    with_lanes!(T, V => forward_with::<V>(
        shape,
        same(scale),
        cast(qkv),
        real_keys,
        cast_mut(probs),
        cast_mut(context),
    ))
}

/// [`attention_forward`] with the vectors `V`, sample by sample (in parallel above
/// [`threading::PARALLEL_MIN_FLOPS`]).
fn forward_with<V: AttentionVector>(
    shape: AttentionShape,
    scale: V::Scalar,
    qkv: &[V::Scalar],
    real_keys: Option<&[bool]>,
    probs: &mut [V::Scalar],
    context: &mut [V::Scalar],
) {
    let panels = Panels::<V>::new(shape);
    let (seq, d) = (shape.seq, shape.width());
    let per_qkv = seq * 3 * d;
    let sample =
        |ws: &mut Workspace<V::Scalar>, b: usize, p: &mut [V::Scalar], c: &mut [V::Scalar]| {
            let real = real_keys.map(|r| &r[b * seq..(b + 1) * seq]);
            let x = &qkv[b * per_qkv..][..per_qkv];
            V::forward_sample(&panels, scale, x, real, p, c, ws);
        };
    // Each sample's context rows (none when d = 0: the probabilities are still defined).
    let contexts: Vec<&mut [V::Scalar]> = if d == 0 {
        (0..shape.batch)
            .map(|_| <&mut [V::Scalar]>::default())
            .collect()
    } else {
        context.chunks_exact_mut(seq * d).collect()
    };
    let outputs = probs
        .chunks_exact_mut(shape.heads * seq * seq)
        .zip(contexts);
    for_each_sample(&panels, outputs.collect(), |ws, b, (p, c)| {
        sample(ws, b, p, c)
    });
}

/// `sample(workspace, b, output_b)` for every sample `b`: on the rayon pool when the problem is
/// large enough (one workspace per task), else in order on this thread.
fn for_each_sample<V: AttentionVector, O: Send>(
    panels: &Panels<V>,
    outputs: Vec<O>,
    sample: impl Fn(&mut Workspace<V::Scalar>, usize, O) + Sync,
) {
    if threading::parallel(work(panels.shape)) {
        outputs
            .into_par_iter()
            .enumerate()
            .for_each_init(|| panels.workspace(), |ws, (b, o)| sample(ws, b, o));
    } else {
        let mut ws = panels.workspace();
        for (b, o) in outputs.into_iter().enumerate() {
            sample(&mut ws, b, o);
        }
    }
}

/// Attention backward (see the module documentation): from `qkv`, the forward's `probs` and
/// `dcontext = G`, `dqkv <- [dQ | dK | dV] + beta dqkv` (`beta == 0` never reads `dqkv`).
pub fn attention_backward<T: Float>(
    shape: AttentionShape,
    scale: T,
    qkv: &[T],
    probs: &[T],
    dcontext: &[T],
    beta: T,
    dqkv: &mut [T],
) {
    let what = "attention_backward";
    shape.check(what, "qkv", qkv.len(), shape.qkv_len());
    shape.check(what, "probs", probs.len(), shape.probs_len());
    shape.check(what, "dcontext", dcontext.len(), shape.context_len());
    shape.check(what, "dqkv", dqkv.len(), shape.qkv_len());
    if dqkv.is_empty() {
        return;
    }
    with_lanes!(T, V => backward_with::<V>(
        shape,
        same(scale),
        cast(qkv),
        cast(probs),
        cast(dcontext),
        same(beta),
        cast_mut(dqkv),
    ))
}

/// [`attention_backward`] with the vectors `V`, sample by sample.
fn backward_with<V: AttentionVector>(
    shape: AttentionShape,
    scale: V::Scalar,
    qkv: &[V::Scalar],
    probs: &[V::Scalar],
    dcontext: &[V::Scalar],
    beta: V::Scalar,
    dqkv: &mut [V::Scalar],
) {
    let panels = Panels::<V>::new(shape);
    let (seq, d) = (shape.seq, shape.width());
    let (per_qkv, per_probs, per_ctx) = (seq * 3 * d, shape.heads * seq * seq, seq * d);
    let sample = |ws: &mut Workspace<V::Scalar>, b: usize, dx: &mut [V::Scalar]| {
        V::backward_sample(
            &panels,
            scale,
            &qkv[b * per_qkv..][..per_qkv],
            &probs[b * per_probs..][..per_probs],
            &dcontext[b * per_ctx..][..per_ctx],
            beta,
            dx,
            ws,
        );
    };
    for_each_sample(&panels, dqkv.chunks_exact_mut(per_qkv).collect(), sample);
}

/// Multiply-adds of the forward pass (the backward does twice as many).
fn work(shape: AttentionShape) -> usize {
    2 * shape.batch * shape.heads * shape.seq * shape.seq * shape.head_dim
}

/// Rows of one register tile, and its width in vectors. 6 rows x 2 vectors of accumulators,
/// the 2 loaded B vectors and a broadcast A value fit AVX2's 16 vector registers; per step, 2
/// loads and 6 broadcasts feed 12 FMAs, enough independent chains to cover the FMA latency on
/// two pipes (4 rows, 8 chains, left the backward about 8% slower, docs/performance.md). A
/// remainder of 1 to 5 rows gets a tile of its height.
const TILE_ROWS: usize = 6;
const TILE_VECS: usize = 2;

/// `acc[r][c] = sum_{t < k} A(r, t) B[t, c L .. (c + 1) L]` for `r < R`, `c < C`, with
/// `A(r, t) = a[r lda + t]`, or `a[t lda + r]` when `A_TRANSPOSED`, and `B[t, j] = b[t ldb + j]`.
/// Each accumulator sums `t = 0, 1, ..` in order.
///
/// No closures here or in [`product`]: a closure is a function of its own, compiled without
/// the CPU features of the `#[target_feature]` function the rest is inlined into, so the
/// vector intrinsics inside it would become calls.
#[inline(always)]
fn tile<V: AttentionVector, const R: usize, const C: usize, const A_TRANSPOSED: bool>(
    k: usize,
    a: &[V::Scalar],
    lda: usize,
    b: &[V::Scalar],
    ldb: usize,
) -> [[V; C]; R] {
    let l = V::LANES;
    let zero = V::splat(V::Scalar::ZERO);
    let mut acc = [[zero; C]; R];
    let (mut av, mut bv) = ([zero; R], [zero; C]);
    if k == 0 {
        return acc;
    }
    // Every element the loop reads lies in `a` and `b`, checked once here: checked reads in
    // the loop cost more integer instructions per step (one compare and branch per row of A
    // and two for B) than its `R x C` FMAs.
    let a_end = if A_TRANSPOSED {
        span_end(k - 1, lda, R)
    } else {
        span_end(R - 1, lda, k)
    };
    let b_end = span_end(k - 1, ldb, C * l);
    assert!(matches!(a_end, Some(e) if e <= a.len()) && matches!(b_end, Some(e) if e <= b.len()));
    for t in 0..k {
        if A_TRANSPOSED {
            // SAFETY: t < k, so t lda + R <= (k - 1) lda + R = a_end <= a.len() (asserted,
            // without overflow).
            let column = unsafe { a.get_unchecked(t * lda..t * lda + R) };
            for (v, &x) in av.iter_mut().zip(column) {
                *v = V::splat(x);
            }
        } else {
            for (r, v) in av.iter_mut().enumerate() {
                // SAFETY: r < R and t < k, so r lda + t < (R - 1) lda + k = a_end <= a.len()
                // (asserted, without overflow).
                *v = V::splat(unsafe { *a.get_unchecked(r * lda + t) });
            }
        }
        // SAFETY: t < k, so t ldb + C L <= (k - 1) ldb + C L = b_end <= b.len() (asserted,
        // without overflow).
        let bt = unsafe { b.get_unchecked(t * ldb..t * ldb + C * l) };
        for (v, chunk) in bv.iter_mut().zip(bt.chunks_exact(l)) {
            *v = V::load(chunk);
        }
        for (acc_r, &a_rt) in acc.iter_mut().zip(&av) {
            for (acc_rc, &b_tc) in acc_r.iter_mut().zip(&bv) {
                *acc_rc = V::mul_add(a_rt, b_tc, *acc_rc);
            }
        }
    }
    acc
}

/// `rows ld + width`, the end of `width` elements starting `rows` leading dimensions in, or
/// `None` when it overflows (a wrapped bound would pass [`tile`]'s check).
#[inline(always)]
fn span_end(rows: usize, ld: usize, width: usize) -> Option<usize> {
    rows.checked_mul(ld)?.checked_add(width)
}

/// Where the vectors of a [`product`] go.
trait Sink<V: AttentionVector> {
    /// Vector `c` of output row `r`.
    fn put(&mut self, r: usize, c: usize, v: V);
}

/// Whole-vector rows of a padded panel: `out[r ld + c L ..] = v`, or `scale v + mask[c L ..]`
/// (the scores) when `masked` is given.
struct Panel<'a, V: AttentionVector> {
    out: &'a mut [V::Scalar],
    ld: usize,
    masked: Option<(V, &'a [V::Scalar])>,
}

impl<V: AttentionVector> Sink<V> for Panel<'_, V> {
    #[inline(always)]
    fn put(&mut self, r: usize, c: usize, v: V) {
        let l = V::LANES;
        let v = match self.masked {
            Some((scale, mask)) => V::mul_add(v, scale, V::load(&mask[c * l..(c + 1) * l])),
            None => v,
        };
        let start = r * self.ld + c * l;
        v.store(&mut self.out[start..start + l]);
    }
}

/// One head's columns `0 .. dh` of row-major rows: `out[r ld + c L ..] <- v + beta out`,
/// clipped to `dh` (`beta == 0` never reads `out`).
struct HeadColumns<'a, V: AttentionVector> {
    out: &'a mut [V::Scalar],
    ld: usize,
    dh: usize,
    beta: V::Scalar,
}

impl<V: AttentionVector> Sink<V> for HeadColumns<'_, V> {
    #[inline(always)]
    fn put(&mut self, r: usize, c: usize, v: V) {
        let l = V::LANES;
        let start = c * l;
        let row = &mut self.out[r * self.ld..];
        if start + l <= self.dh {
            let out = &mut row[start..start + l];
            let v = if self.beta == V::Scalar::ZERO {
                v
            } else {
                V::mul_add(V::splat(self.beta), V::load(out), v)
            };
            v.store(out);
        } else {
            let mut lanes = [V::Scalar::ZERO; 16];
            v.store(&mut lanes[..l]);
            for (o, &x) in row[start..self.dh].iter_mut().zip(&lanes) {
                *o = if self.beta == V::Scalar::ZERO {
                    x
                } else {
                    self.beta.mul_add(*o, x)
                };
            }
        }
    }
}

/// The two factors of a [`product`] over depth `k`: `A(r, t)` is `a[r lda + t]`, or
/// `a[t lda + r]` when the product is `A_TRANSPOSED`, and `B[t, j]` is `b[t ldb + j]`.
#[derive(Clone, Copy)]
struct Factors<'a, E> {
    a: &'a [E],
    lda: usize,
    b: &'a [E],
    ldb: usize,
    k: usize,
}

/// The tiles of `R` rows starting at row `r` of [`product`].
#[inline(always)]
fn row_tiles<V: AttentionVector, const R: usize, const A_TRANSPOSED: bool>(
    r: usize,
    vecs: usize,
    factors: Factors<'_, V::Scalar>,
    sink: &mut impl Sink<V>,
) {
    let Factors { a, lda, b, ldb, k } = factors;
    let l = V::LANES;
    let a = if A_TRANSPOSED { &a[r..] } else { &a[r * lda..] };
    let mut c = 0;
    while c + TILE_VECS <= vecs {
        let acc = tile::<V, R, TILE_VECS, A_TRANSPOSED>(k, a, lda, &b[c * l..], ldb);
        for (i, row) in acc.iter().enumerate() {
            for (j, &v) in row.iter().enumerate() {
                sink.put(r + i, c + j, v);
            }
        }
        c += TILE_VECS;
    }
    if c < vecs {
        let acc = tile::<V, R, 1, A_TRANSPOSED>(k, a, lda, &b[c * l..], ldb);
        for (i, row) in acc.iter().enumerate() {
            sink.put(r + i, c, row[0]);
        }
    }
}

/// `sink.put(r, c, v)` with `v = sum_t A(r, t) B[t, c L .. (c + 1) L]` for every row `r < m`
/// and vector `c < vecs` (A and B as in [`Factors`]), tile by tile.
#[inline(always)]
fn product<V: AttentionVector, const A_TRANSPOSED: bool>(
    m: usize,
    vecs: usize,
    factors: Factors<'_, V::Scalar>,
    mut sink: impl Sink<V>,
) {
    let mut r = 0;
    while r + TILE_ROWS <= m {
        row_tiles::<V, TILE_ROWS, A_TRANSPOSED>(r, vecs, factors, &mut sink);
        r += TILE_ROWS;
    }
    match m - r {
        5 => row_tiles::<V, 5, A_TRANSPOSED>(r, vecs, factors, &mut sink),
        4 => row_tiles::<V, 4, A_TRANSPOSED>(r, vecs, factors, &mut sink),
        3 => row_tiles::<V, 3, A_TRANSPOSED>(r, vecs, factors, &mut sink),
        2 => row_tiles::<V, 2, A_TRANSPOSED>(r, vecs, factors, &mut sink),
        1 => row_tiles::<V, 1, A_TRANSPOSED>(r, vecs, factors, &mut sink),
        _ => {}
    }
}

/// The padded panel geometry of one head.
pub(crate) struct Panels<V> {
    shape: AttentionShape,
    /// `S'`: keys rounded up to whole vectors.
    seq_padded: usize,
    /// `dh'`: head columns rounded up to whole vectors.
    dim_padded: usize,
    _vectors: std::marker::PhantomData<fn() -> V>,
}

/// Per-thread scratch for one head at a time (every buffer is rewritten before it is read).
pub(crate) struct Workspace<E> {
    /// `dh x S'`: `K^T` (forward) or `V^T` (backward), zero beyond `S` keys.
    transposed: Vec<E>,
    /// `S x dh'` row panels, zero beyond `dh` columns: `V` (forward); `K`, `Q`, `G` (backward).
    /// Used only when `dh` is not a whole number of vectors (else the rows are read in place).
    rows: [Vec<E>; 3],
    /// `S x S'`: the scores (forward), `P` (backward), zero beyond `S` keys.
    probs: Vec<E>,
    /// `S x S'`: `dP`, then `dZ` (backward).
    dscores: Vec<E>,
    /// `S'`: the additive key mask of the current sample (`-inf` on padding keys too).
    mask: Vec<E>,
}

/// The sizes one head's loops use.
struct Dims {
    /// Tokens `S`.
    seq: usize,
    /// Head columns `dh`.
    dh: usize,
    /// Model width `d` (the context's leading dimension; `qkv`'s is `3d`).
    d: usize,
    /// `S'`, `dh'`: rounded up to whole vectors.
    sp: usize,
    dp: usize,
}

impl<V: AttentionVector> Panels<V> {
    fn dims(&self) -> Dims {
        Dims {
            seq: self.shape.seq,
            dh: self.shape.head_dim,
            d: self.shape.width(),
            sp: self.seq_padded,
            dp: self.dim_padded,
        }
    }

    fn new(shape: AttentionShape) -> Self {
        let l = V::LANES;
        Self {
            shape,
            seq_padded: shape.seq.div_ceil(l) * l,
            dim_padded: shape.head_dim.div_ceil(l) * l,
            _vectors: std::marker::PhantomData,
        }
    }

    fn workspace(&self) -> Workspace<V::Scalar> {
        let (seq, sp, dp) = (self.shape.seq, self.seq_padded, self.dim_padded);
        let zeros = |n: usize| vec![V::Scalar::ZERO; n];
        Workspace {
            transposed: zeros(self.shape.head_dim * sp),
            rows: std::array::from_fn(|_| {
                zeros(if self.shape.head_dim == dp {
                    0
                } else {
                    seq * dp
                })
            }),
            probs: zeros(seq * sp),
            dscores: zeros(seq * sp),
            mask: zeros(sp),
        }
    }

    /// `out[t S' + j] = x[j ld + t]` for `j < S`, `t < dh` (the padding stays zero): whole
    /// `L x L` blocks by [`AttentionVector::transpose_block`] where the vector type has one, the rest
    /// element by element.
    #[inline(always)]
    fn pack_transposed(&self, x: &[V::Scalar], ld: usize, out: &mut [V::Scalar]) {
        let (seq, dh, sp, l) = (
            self.shape.seq,
            self.shape.head_dim,
            self.seq_padded,
            V::LANES,
        );
        if dh == 0 {
            return;
        }
        let (mut full_seq, full_dh) = (seq - seq % l, dh - dh % l);
        'blocks: for j0 in (0..full_seq).step_by(l) {
            for t0 in (0..full_dh).step_by(l) {
                if !V::transpose_block(&x[j0 * ld + t0..], ld, &mut out[t0 * sp + j0..], sp) {
                    full_seq = 0;
                    break 'blocks;
                }
            }
        }
        for (t, out_row) in out.chunks_exact_mut(sp).enumerate() {
            // the block columns of this row are done when t < full_dh
            let start = if t < full_dh { full_seq } else { 0 };
            for (j, o) in out_row[..seq].iter_mut().enumerate().skip(start) {
                *o = x[j * ld + t];
            }
        }
    }

    /// The `S x dh` rows `x[j ld ..][..dh]` as a B operand of [`product`] (which reads `dh'`
    /// columns of each row): in place when `dh` is a whole number of vectors (`dh' = dh`), else
    /// packed into `out` as `out[j dh' + t] = x[j ld + t]` with zero padding.
    #[inline(always)]
    fn rows<'a>(
        &self,
        x: &'a [V::Scalar],
        ld: usize,
        out: &'a mut [V::Scalar],
    ) -> (&'a [V::Scalar], usize) {
        let (dh, dp) = (self.shape.head_dim, self.dim_padded);
        if dh == dp {
            return (x, ld);
        }
        for (row, packed) in x.chunks(ld).zip(out.chunks_exact_mut(dp)) {
            copy_short::<V>(&row[..dh], &mut packed[..dh]);
        }
        (out, dp)
    }
}

/// `out.copy_from_slice(x)` by whole vectors, for the short rows packed here (a `memcpy` call
/// per 64-byte row costs more than the copy).
#[inline(always)]
fn copy_short<V: AttentionVector>(x: &[V::Scalar], out: &mut [V::Scalar]) {
    let l = V::LANES;
    let full = x.len() - x.len() % l;
    for (o, v) in out[..full].chunks_exact_mut(l).zip(x.chunks_exact(l)) {
        V::load(v).store(o);
    }
    for (o, &v) in out[full..].iter_mut().zip(&x[full..]) {
        *o = v;
    }
}

/// One sample's forward, head by head.
#[inline(always)]
pub(crate) fn forward_sample<V: AttentionVector>(
    panels: &Panels<V>,
    scale: V::Scalar,
    qkv: &[V::Scalar],
    real_keys: Option<&[bool]>,
    probs: &mut [V::Scalar],
    context: &mut [V::Scalar],
    ws: &mut Workspace<V::Scalar>,
) {
    let Dims { seq, dh, d, sp, dp } = panels.dims();
    let (ld, l) = (3 * d, V::LANES);
    for (j, m) in ws.mask.iter_mut().enumerate() {
        let real = j < seq && real_keys.is_none_or(|r| r[j]);
        *m = if real {
            V::Scalar::ZERO
        } else {
            V::Scalar::NEG_INFINITY
        };
    }
    let scale_v = V::splat(scale);
    let [values, _, _] = &mut ws.rows;
    for (h, head_probs) in probs.chunks_exact_mut(seq * seq).enumerate() {
        let [q, k, v] = [0, d, 2 * d].map(|part| &qkv[part + h * dh..]);
        panels.pack_transposed(k, ld, &mut ws.transposed);
        let (values, ldv) = panels.rows(v, ld, values);
        // Z = s Q K^T + M, row by row into the padded score panel.
        let scores = Panel {
            out: &mut ws.probs,
            ld: sp,
            masked: Some((scale_v, &ws.mask)),
        };
        product::<V, false>(
            seq,
            sp / l,
            Factors {
                a: q,
                lda: ld,
                b: &ws.transposed,
                ldb: sp,
                k: dh,
            },
            scores,
        );
        for (padded, out) in ws
            .probs
            .chunks_exact_mut(sp)
            .zip(head_probs.chunks_exact_mut(seq))
        {
            softmax_padded_row::<V>(padded, out);
        }
        // C = P V
        let out = HeadColumns {
            out: &mut context[h * dh..],
            ld: d,
            dh,
            beta: V::Scalar::ZERO,
        };
        product::<V, false>(
            seq,
            dp / l,
            Factors {
                a: head_probs,
                lda: seq,
                b: values,
                ldb: ldv,
                k: seq,
            },
            out,
        );
    }
}

/// Softmax of one score row padded with `-inf` to whole vectors into `out` (the row's real
/// length); `row` is overwritten.
#[inline(always)]
fn softmax_padded_row<V: AttentionVector>(row: &mut [V::Scalar], out: &mut [V::Scalar]) {
    let l = V::LANES;
    let mut max_v = V::splat(V::Scalar::NEG_INFINITY);
    for c in row.chunks_exact(l) {
        max_v = max_v.max(V::load(c));
    }
    let m = max_v.hmax();
    if m == V::Scalar::NEG_INFINITY {
        // Every key masked: the row attends to nothing (NaN stays NaN).
        let fill = if row.iter().any(|v| v.is_nan()) {
            V::Scalar::from_f64(f64::NAN)
        } else {
            V::Scalar::ZERO
        };
        out.fill(fill);
        return;
    }
    let (max_v, zero) = (V::splat(m), V::splat(V::Scalar::ZERO));
    // `exponents` sums d = z - max <= 0: NaN exactly when the row holds a NaN or +inf (the
    // vector exp maps those lanes, and -inf ones, to 0).
    let (mut sum, mut exponents) = (zero, zero);
    for c in row.chunks_exact_mut(l) {
        let d = V::load(c).sub(max_v);
        exponents = exponents.add(d);
        let e = d.exp_nonpositive();
        sum = sum.add(e);
        e.store(c);
    }
    if exponents.hsum().is_nan() {
        out.fill(V::Scalar::from_f64(f64::NAN));
        return;
    }
    let inv = V::splat(V::Scalar::ONE / sum.hsum());
    let (len, full) = (out.len(), out.len() - out.len() % l);
    for (o, c) in out[..full].chunks_exact_mut(l).zip(row.chunks_exact(l)) {
        V::load(c).mul(inv).store(o);
    }
    if full < len {
        let last = &mut row[full..full + l];
        V::load(last).mul(inv).store(last);
        out[full..].copy_from_slice(&last[..len - full]);
    }
}

/// One sample's backward, head by head.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward_sample<V: AttentionVector>(
    panels: &Panels<V>,
    scale: V::Scalar,
    qkv: &[V::Scalar],
    probs: &[V::Scalar],
    dcontext: &[V::Scalar],
    beta: V::Scalar,
    dqkv: &mut [V::Scalar],
    ws: &mut Workspace<V::Scalar>,
) {
    let Dims { seq, dh, d, sp, dp } = panels.dims();
    let (ld, l) = (3 * d, V::LANES);
    let scale_v = V::splat(scale);
    let [keys, queries, grads] = &mut ws.rows;
    for (h, head_probs) in probs.chunks_exact(seq * seq).enumerate() {
        let [q, k, v] = [0, d, 2 * d].map(|part| &qkv[part + h * dh..]);
        let g = &dcontext[h * dh..];
        panels.pack_transposed(v, ld, &mut ws.transposed);
        let (keys, ldk) = panels.rows(k, ld, keys);
        let (queries, ldq) = panels.rows(q, ld, queries);
        let (grads, ldg) = panels.rows(g, d, grads);
        for (padded, row) in ws
            .probs
            .chunks_exact_mut(sp)
            .zip(head_probs.chunks_exact(seq))
        {
            copy_short::<V>(row, &mut padded[..seq]);
        }
        // dP = G V^T
        let dp_panel = Panel {
            out: &mut ws.dscores,
            ld: sp,
            masked: None,
        };
        product::<V, false>(
            seq,
            sp / l,
            Factors {
                a: g,
                lda: d,
                b: &ws.transposed,
                ldb: sp,
                k: dh,
            },
            dp_panel,
        );
        // dZ = s P (dP - <P, dP>) row by row (0 on padding keys, where P is 0).
        for (dz, p) in ws
            .dscores
            .chunks_exact_mut(sp)
            .zip(ws.probs.chunks_exact(sp))
        {
            let mut inner = V::splat(V::Scalar::ZERO);
            for (dzc, pc) in dz.chunks_exact(l).zip(p.chunks_exact(l)) {
                inner = V::mul_add(V::load(pc), V::load(dzc), inner);
            }
            let inner = V::splat(inner.hsum());
            for (dzc, pc) in dz.chunks_exact_mut(l).zip(p.chunks_exact(l)) {
                V::load(pc)
                    .mul(V::load(dzc).sub(inner))
                    .mul(scale_v)
                    .store(dzc);
            }
        }
        let dscores = &ws.dscores;
        // dQ = dZ K
        let out = &mut dqkv[h * dh..];
        let dq = HeadColumns { out, ld, dh, beta };
        product::<V, false>(
            seq,
            dp / l,
            Factors {
                a: dscores,
                lda: sp,
                b: keys,
                ldb: ldk,
                k: seq,
            },
            dq,
        );
        // dK = dZ^T Q
        let out = &mut dqkv[d + h * dh..];
        let dk = HeadColumns { out, ld, dh, beta };
        product::<V, true>(
            seq,
            dp / l,
            Factors {
                a: dscores,
                lda: sp,
                b: queries,
                ldb: ldq,
                k: seq,
            },
            dk,
        );
        // dV = P^T G
        let out = &mut dqkv[2 * d + h * dh..];
        let dv = HeadColumns { out, ld, dh, beta };
        product::<V, true>(
            seq,
            dp / l,
            Factors {
                a: head_probs,
                lda: seq,
                b: grads,
                ldb: ldg,
                k: seq,
            },
            dv,
        );
    }
}
