//! The exact subspace trainer (docs/model.md section 4).
//!
//! With `B` (d x r) an orthonormal basis of the training tokens (and of `mu_+`, `mu_-`),
//! `A = W_0^T B`, `G = A^T A` and `H = W_0 A`, gradient descent keeps `p = A b` and
//! `W = W_0 + B D A^T` exactly, so the state is `b` (r) and `D` (r x r):
//!
//! ```text
//! z_it  = e_it^T (I + D) G b          e_it = B^T x_it
//! a     = sum_it delta_it e_it        (g = B a)
//! b'    = b - lr (I + D^T) a          (p' = p - lr W^T g)
//! D'    = D - lr a b^T                (W' = W - lr g p^T)
//! ```
//!
//! A test token `x` needs `h = H^T x`, `c = B^T x` and `u = nu^T x` once; its logit is
//! `h^T b + c^T D G b`. `||p||^2 = b^T G b`, `||W - W_0||_F^2 = trace(D G D^T)`.
//!
//! Start-up streams `W_0` in row blocks twice (`A` needs every block before `H` can start; when
//! one block holds all of `W_0` it is generated once), so `W_0` is never held whole at large d.
//! Start-up products run in f64 by default whatever the training precision; f32 start-up
//! (`--startup-precision f32`) halves their cost.
//!
//! # The test set, drawn in the subspace
//!
//! Everything the model computes on a token `x` is a function of `P^T x` with
//! `P = [H | B | nu]` (d x (2r + 1)): the logit `h^T b + c^T D G b` and the score `u`. A generated
//! test token is `x = s + eps`, its signal part `s` a combination of `mu_+`, `mu_-` fixed by its
//! role and label, and `eps ~ N(0, sigma^2 I_d)` independent of the training set and of `W_0`.
//! Given them, `P^T eps` is exactly `N(0, sigma^2 K)` with `K = P^T P`. So with `L L^T = K`
//! (Cholesky with diagonal pivoting; `L` is (2r + 1) x k, k = rank K <= min(d, 2r + 1)) and
//! `w ~ N(0, I_k)`, `P^T x = P^T s + sigma L w` has exactly the law of the projection of a
//! d-dimensional test token ([`TestDraw::Subspace`], the default for generated test sets). It
//! costs k normal draws per token instead of d draws and a d x (2r + 1) projection, and the test
//! logits are `w^T (sigma L^T v) + s^T P v` with `v = [b; D G b]`, so the draws `w` are all that is
//! stored. The test set is then another independent sample of the same law as the projected one
//! ([`TestDraw::Tokens`], used for loaded test sets, for a test set drawn with the training seed,
//! as the reference-compatible mode does, and to compare with the dense trainer token by token).
//! Training never touches the test set, so it is bit-identical under both draws.

use benign_kernels::{self as kernels, Float, MatMut, MatRef};
use rayon::prelude::*;

use crate::{Error, Result};

use super::config::{Precision, RunConfig};
use super::data::{balanced_labels, token_signal, TestSource, TrainSet};
use super::init::{chacha_key, InitSource};
use super::{check_training_loss, mat_vec, update_error, AttentionTrainer};
use crate::seed::mix_seed;

/// Bytes of `W_0` rows generated at once during start-up: large enough that the `A` / `H`
/// operands streamed per block (d x r) cost little next to the block's multiply-adds, small
/// enough that the allocator reuses the block from run to run (fresh pages of a 200 MB block
/// cost twice as much to fault in as generating it again) and that `W_0` stays in cache-sized
/// pieces. `W_0` is generated once when it fits (d <= 1,773 in f64), twice otherwise.
pub const INIT_BLOCK_BYTES: usize = 24 << 20;
/// Test tokens generated at once: at least 64 samples (so each projection GEMM has enough
/// rows) when they fit in `TEST_CHUNK_MAX_BYTES`, else fewer; at least `TEST_CHUNK_MIN_BYTES`.
const TEST_CHUNK_MIN_BYTES: usize = 32 << 20;
const TEST_CHUNK_MAX_BYTES: usize = 256 << 20;

/// Bytes the subspace trainer needs at dimension `dim` for `train_rows` training and `test_rows`
/// test tokens: the training tokens (f64), the d x (3r + 1) start-up products in `startup`
/// precision, a block of `W_0` and a test chunk, and the test projections (r = train_rows + 2).
pub fn memory_bytes(dim: usize, train_rows: usize, test_rows: usize, startup: Precision) -> u128 {
    let (d, rows, test_rows) = (dim as u128, train_rows as u128, test_rows as u128);
    let r = rows + 2;
    let element = match startup {
        Precision::F32 => 4,
        Precision::F64 => 8,
    };
    let startup = d * (3 * r + 1) * element + INIT_BLOCK_BYTES as u128 + (256 << 20);
    rows * d * 8 + startup + test_rows * 2 * r * 8
}

/// How the subspace trainer obtains the test tokens' projections `P^T x` (module docs).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum TestDraw {
    /// Draw `P^T x` from its exact law, k <= 2r + 1 normal draws per token (the default).
    /// Applies to generated test sets with their own seed; others fall back to `Tokens`.
    #[default]
    Subspace,
    /// Generate every test token in `R^d` and project it.
    Tokens,
}

impl TestDraw {
    /// The draw actually used for `test`: `Subspace` needs a generated test set independent of
    /// the training set (not loaded, not drawn with the training seed).
    pub fn effective(self, test: &TestSource) -> TestDraw {
        match (self, test) {
            (TestDraw::Subspace, TestSource::Generated { config, seed, .. })
                if *seed != config.seed =>
            {
                TestDraw::Subspace
            }
            _ => TestDraw::Tokens,
        }
    }
}

/// Timings of the start-up, in seconds.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct StartupTimings {
    /// Building the orthonormal basis of the training tokens' span.
    pub basis_seconds: f64,
    /// The products with `W_0` (two passes over the `d x d` matrix, or its law).
    pub init_products_seconds: f64,
    /// Projecting the test tokens, or drawing their projections (see `test_draw`).
    pub test_projection_seconds: f64,
    /// How the test projections were obtained.
    pub test_draw: TestDraw,
}

/// An orthonormal basis of the columns `vectors` (each of length d), by modified Gram-Schmidt
/// with one re-orthogonalisation pass ("twice is enough"). Columns whose remainder is below
/// `1e-10` of their norm are numerically dependent and dropped. Returns the basis vectors.
pub fn orthonormal_basis(vectors: &[&[f64]]) -> Vec<Vec<f64>> {
    let (rows, _) = orthonormal_rows(vectors);
    let d = vectors.first().map_or(1, |v| v.len().max(1));
    rows.chunks_exact(d).map(<[f64]>::to_vec).collect()
}

/// [`orthonormal_basis`] as one `r x d` row-major array, with r.
///
/// Each vector takes the same operations in the same order as one at a time (both passes over
/// the basis found before it, `c = dot(q, w)` then `w <- w - c q` per basis vector), so the
/// values are those of the textbook loop. The order of work between vectors is what changes:
/// the second pass of one vector and the first pass of the next run over the same basis vectors,
/// so they share each pass over them ([`kernels::level2::project_out_rows`]); the next vector
/// then takes its first pass over the vector just added, if any.
pub fn orthonormal_rows(vectors: &[&[f64]]) -> (Vec<f64>, usize) {
    let d = vectors.first().map_or(0, |v| v.len());
    let mut basis: Vec<f64> = Vec::with_capacity(vectors.len() * d);
    // A zero vector spans nothing and is skipped.
    let mut pending = vectors.iter().filter_map(|v| {
        let original = kernels::dot(v, v).sqrt();
        (original != 0.0).then(|| (v.to_vec(), original))
    });
    // The vector whose first pass is done, and its norm before the passes.
    let mut current = pending.next();
    while let Some((mut w, original)) = current.take() {
        let known = basis.len();
        current = pending.next();
        match &mut current {
            Some((next, _)) => kernels::level2::project_out_rows(&basis, d, [&mut w, next]),
            None => kernels::level2::project_out_rows(&basis, d, [&mut w]),
        }
        let norm = kernels::dot(&w, &w).sqrt();
        if norm > 1e-10 * original {
            kernels::scale(1.0 / norm, &mut w);
            basis.extend_from_slice(&w);
            if let Some((next, _)) = &mut current {
                kernels::level2::project_out_rows(&basis[known..], d, [next]);
            }
        }
    }
    let r = basis.len().checked_div(d).unwrap_or(0);
    (basis, r)
}

/// The projector `P = [H | B | nu]` (d x (2r + 1), row-major) before the start-up products:
/// the basis (`r x d` row-major, [`orthonormal_rows`]) in columns `r..2r`, `nu` in the last
/// column, zeros where `init_products` writes `H`.
pub(crate) fn basis_projector<S: Float>(basis: &[f64], r: usize, nu: &[f64]) -> Vec<S> {
    let d = nu.len();
    let width = 2 * r + 1;
    let mut projector = vec![S::ZERO; d * width];
    for (i, row) in projector.chunks_exact_mut(width).enumerate() {
        for (j, cell) in row[r..2 * r].iter_mut().enumerate() {
            *cell = S::from_f64(basis[j * d + i]);
        }
        row[2 * r] = S::from_f64(nu[i]);
    }
    projector
}

pub use super::init::init_products;

/// A factor `L` (n x rank, row-major) with `L L^T = K` for a symmetric positive semi-definite
/// `K` (n x n, row-major), by Cholesky with diagonal pivoting (the largest remaining pivot first);
/// it stops when every remaining pivot is at most `tolerance`, which is where `K` is singular to
/// rounding (rank < n when d < n, or when columns of the projector are dependent). Returns
/// `(L, rank)`. Left-looking: column j of `L` takes one dot product per remaining row.
pub fn psd_factor(gram: &[f64], n: usize, tolerance: f64) -> (Vec<f64>, usize) {
    let mut residual: Vec<f64> = (0..n).map(|i| gram[i * n + i]).collect();
    let mut full = vec![0.0f64; n * n];
    let mut chosen = vec![false; n];
    let mut rank = 0;
    for j in 0..n {
        let pivot = (0..n)
            .filter(|&i| !chosen[i])
            .max_by(|&a, &b| residual[a].total_cmp(&residual[b]));
        let Some(p) = pivot else { break };
        // A NaN pivot stops the factor too.
        let positive = residual[p] > tolerance;
        if !positive {
            break;
        }
        let lpp = residual[p].sqrt();
        chosen[p] = true;
        full[p * n + j] = lpp;
        for i in 0..n {
            if chosen[i] {
                continue;
            }
            let dot = kernels::dot(&full[i * n..i * n + j], &full[p * n..p * n + j]);
            let v = (gram[i * n + p] - dot) / lpp;
            full[i * n + j] = v;
            residual[i] -= v * v;
        }
        rank = j + 1;
    }
    let mut factor = vec![0.0f64; n * rank];
    for i in 0..n {
        factor[i * rank..(i + 1) * rank].copy_from_slice(&full[i * n..i * n + rank]);
    }
    (factor, rank)
}

/// Columns of `P^T P` per GEMM in [`projector_gram`]: narrower blocks skip more of the lower
/// triangle but pack the left columns of `P` again for each block.
const GRAM_BLOCK_COLS: usize = 64;

/// `P^T P` (width x width, row-major) for `projector` = P, d x `width` row-major: the GEMM
/// `P^T P`'s bits, at about three fifths of its multiply-adds (at width 325).
///
/// Entries `(i, j)` and `(j, i)` of that GEMM are the same FMA chains (the products
/// `P[p][i] P[p][j]` commute exactly, in the same order of p), so only its upper block triangle
/// is computed, a GEMM per block of columns `J` (`P[:, ..J.end]^T P[:, J]`), and mirrored. Every
/// element is summed as in the one GEMM: the packed path sums it the same way whatever the
/// shape of the call (KC panels of the depth in order, each an FMA chain in order), and these
/// calls are kept on it. Shapes for which the one GEMM would take the direct path take it.
fn projector_gram<S: Float>(projector: &[S], d: usize, width: usize) -> Vec<S> {
    let mut gram = vec![S::ZERO; width * width];
    if kernels::gemm::use_direct(kernels::Transpose::No, width, width, d) {
        kernels::gemm(
            S::ONE,
            MatRef::new(projector, d, width).transpose(),
            MatRef::new(projector, d, width),
            S::ZERO,
            MatMut::new(&mut gram, width, width),
        );
        return gram;
    }
    kernels::gemm::with_gemm_path(kernels::gemm::GemmPath::Packed, || {
        for first in (0..width).step_by(GRAM_BLOCK_COLS) {
            let end = width.min(first + GRAM_BLOCK_COLS);
            kernels::gemm(
                S::ONE,
                MatRef::with_ld(projector, d, end, width).transpose(),
                MatRef::with_ld(&projector[first..], d, end - first, width),
                S::ZERO,
                MatMut::with_ld(&mut gram[first..], end, end - first, width),
            );
        }
    });
    for i in 0..width {
        for j in 0..i {
            gram[i * width + j] = gram[j * width + i];
        }
    }
    gram
}

/// The law of a token's noise projections: for `eps ~ N(0, sigma^2 I_d)`, `P^T eps` is
/// `N(0, sigma^2 K)` with `K = P^T P`; returns `L` (width x rank, row-major, f64) with
/// `L L^T = K` and the rank. `projector` is P, d x `width` row-major.
pub fn projection_noise_factor<S: Float>(
    projector: &[S],
    d: usize,
    width: usize,
) -> Result<(Vec<f64>, usize)> {
    let gram_s = projector_gram(projector, d, width);
    let mut gram: Vec<f64> = gram_s.iter().map(|v| v.to_f64()).collect();
    check_gram_finite(&gram, "Gram matrix P^T P of the test projections")?;
    // The triangles are equal (`projector_gram`), so this average is each entry itself, except
    // one whose double overflows: that one still becomes infinite, as it always has.
    for i in 0..width {
        for j in 0..i {
            let v = 0.5 * (gram[i * width + j] + gram[j * width + i]);
            gram[i * width + j] = v;
            gram[j * width + i] = v;
        }
    }
    let largest = (0..width).map(|i| gram[i * width + i]).fold(0.0, f64::max);
    // Pivots below rounding of K's entries are numerically zero directions.
    let tolerance = largest * 4.0 * width as f64 * S::EPSILON.to_f64();
    Ok(psd_factor(&gram, width, tolerance))
}

/// Standard normal draws for the test tokens: token j of sample i gets `draws` values at
/// `out[(i T + j) stride ..][..draws]` (the other `stride - draws` entries are left alone).
/// Sample i draws from ChaCha stream i of the named stream "test-projections" of `seed`, so any
/// chunking or thread count gives the same values: rand_distr's `StandardNormal` of that stream,
/// through [`kernels::random::NormalStream`], which returns the same values faster.
pub fn fill_test_normals<T: Float>(
    seed: u64,
    tokens_per_sample: usize,
    draws: usize,
    stride: usize,
    out: &mut [T],
) {
    let key = test_normals_key(seed);
    let per_sample = (tokens_per_sample * stride).max(1);
    out.par_chunks_mut(per_sample)
        .enumerate()
        .for_each(|(i, sample)| {
            let mut normals = kernels::random::NormalStream::new(&key, i as u64);
            for token in sample.chunks_mut(stride.max(1)) {
                normals.fill_as(&mut token[..draws]);
            }
        });
}

/// The ChaCha key of the test tokens' normal draws ([`fill_test_normals`]).
fn test_normals_key(seed: u64) -> [u32; 8] {
    chacha_key(mix_seed(seed, "test-projections"))
}

/// Softmax attention, outputs, loss and `delta_it = (1/n) l'_i s_it (u_it - f_i)` from logits.
/// Returns the loss; fills `attention` and `delta` (both n T).
pub fn loss_and_delta<T: Float>(
    tokens_per_sample: usize,
    logits: &[T],
    scores: &[T],
    labels: &[T],
    attention: &mut [T],
    delta: &mut [T],
) -> T {
    let t = tokens_per_sample;
    let n = labels.len();
    debug_assert_eq!(logits.len(), n * t);
    kernels::softmax_rows(t, logits, attention);
    let inv_n = T::ONE / T::from_usize(n);
    let mut loss = T::ZERO;
    for (((&y, s), u), dl) in labels
        .iter()
        .zip(attention.chunks_exact(t))
        .zip(scores.chunks_exact(t))
        .zip(delta.chunks_exact_mut(t))
    {
        let f = kernels::dot(s, u);
        loss += kernels::logistic_loss(y * f);
        let dloss_df = y * kernels::logistic_loss_derivative(y * f) * inv_n;
        for ((dv, &sv), &uv) in dl.iter_mut().zip(s).zip(u) {
            *dv = dloss_df * sv * (uv - f);
        }
    }
    loss * inv_n
}

/// What the start-up's Gram matrix `A^T A` is called in errors.
const STARTUP_GRAM: &str = "Gram matrix A^T A of the start-up";

/// Refuses a Gram matrix of the start-up (step 0) with a non-finite entry, naming it `quantity`.
fn check_gram_finite<S: Float>(gram: &[S], quantity: &str) -> Result<()> {
    match gram.iter().find(|v| !v.is_finite()) {
        Some(bad) => Err(Error::NonFinite {
            step: 0,
            quantity: quantity.into(),
            value: bad.to_f64(),
        }),
        None => Ok(()),
    }
}

/// Clamps rounding below zero to zero but keeps NaN visible (`f64::max` would hide it).
fn non_negative(x: f64) -> f64 {
    if x < 0.0 {
        0.0
    } else {
        x
    }
}

/// The test tokens as the trainer keeps them: their logits are `rows (map v)` with
/// `v = [b; D G b]` (2r), `map` the identity when absent.
struct TestTokens<T> {
    /// (m T) x `width`: `[h | c]` of each token (projected), or its normal draws `w` and signal
    /// coefficients `(a_+, a_-)` (drawn in the subspace).
    rows: Vec<T>,
    width: usize,
    /// `width x 2r`: `[sigma L_hc^T; (P^T mu_+)_hc^T; (P^T mu_-)_hc^T]` for drawn tokens.
    map: Option<Vec<T>>,
    /// `u = nu^T x` of each token.
    scores: Vec<f64>,
}

/// Projects every test token onto `P = [H | B | nu]` (d x (2r + 1)), chunk by chunk as the
/// source generates them.
fn project_test_tokens<S: Float, T: Float>(
    test: &TestSource,
    projector: &[S],
    d: usize,
    r: usize,
    t: usize,
) -> TestTokens<T> {
    let width = 2 * r + 1;
    let test_rows = test.len() * t;
    let mut hc = vec![T::ZERO; test_rows * 2 * r];
    let mut scores = vec![0.0f64; test_rows];
    let sample_bytes = 8 * t * d;
    let chunk_samples = (TEST_CHUNK_MIN_BYTES / sample_bytes)
        .max(64)
        .min(TEST_CHUNK_MAX_BYTES / sample_bytes)
        .clamp(1, test.len().max(1));
    let mut proj = vec![S::ZERO; chunk_samples * t * width];
    let mut chunk_s: Vec<S> = Vec::new();
    test.for_each_chunk(chunk_samples, |first, tokens| {
        let m = tokens.len() / d;
        chunk_s.clear();
        chunk_s.extend(tokens.iter().map(|&v| S::from_f64(v)));
        let out = &mut proj[..m * width];
        kernels::gemm(
            S::ONE,
            MatRef::new(&chunk_s, m, d),
            MatRef::new(projector, d, width),
            S::ZERO,
            MatMut::new(out, m, width),
        );
        for (row, values) in out.chunks_exact(width).enumerate() {
            let at = first * t + row;
            for (dst, &v) in hc[at * 2 * r..(at + 1) * 2 * r]
                .iter_mut()
                .zip(&values[..2 * r])
            {
                *dst = T::from_f64(v.to_f64());
            }
            scores[at] = values[2 * r].to_f64();
        }
    });
    TestTokens {
        rows: hc,
        width: 2 * r,
        map: None,
        scores,
    }
}

/// The law of a test token's projections `P^T x = sigma L w + a_+ P^T mu_+ + a_- P^T mu_-`
/// (module docs), `P = [H | B | nu]` of width 2r + 1, `w` a vector of `rank` standard normals.
struct ProjectedTestLaw<'a> {
    /// Subspace rank r of the run.
    r: usize,
    /// `L`, (2r + 1) x rank.
    factor: &'a [f64],
    /// Normals per token, k.
    rank: usize,
    /// `P^T mu_+` and `P^T mu_-`.
    plus: &'a [f64],
    minus: &'a [f64],
}

/// Draws the test tokens' projections in the subspace from their law: token `x = s + eps` of
/// the balanced test set of `config` (seed `seed`) keeps its draws `w` and its signal
/// coefficients `(a_+, a_-)`.
fn draw_test_tokens<T: Float>(
    config: &RunConfig,
    seed: u64,
    law: &ProjectedTestLaw<'_>,
) -> TestTokens<T> {
    let (samples, t, rho, sigma) = (config.test_size, config.tokens, config.rho, config.sigma);
    let ProjectedTestLaw {
        r,
        factor,
        rank,
        plus,
        minus,
    } = *law;
    let two_r = 2 * r;
    let width = rank + 2;
    let labels = balanced_labels(samples);
    let nu_row: Vec<T> = factor[two_r * rank..(two_r + 1) * rank]
        .iter()
        .map(|&v| T::from_f64(v))
        .collect();
    // The normals of `fill_test_normals` (the same streams), each row completed (signal
    // coefficients and score) while it is in cache, and never zeroed first.
    let (rows, scores) = kernels::random::normal_rows::<T>(
        &test_normals_key(seed),
        samples,
        t,
        rank,
        width,
        |i, pos, normals, signal| {
            let (a_plus, a_minus) = token_signal(labels[i], pos, rho);
            signal[0] = T::from_f64(a_plus);
            signal[1] = T::from_f64(a_minus);
            sigma * kernels::dot(&nu_row, normals).to_f64()
                + a_plus * plus[two_r]
                + a_minus * minus[two_r]
        },
    );
    let mut map = vec![T::ZERO; width * two_r];
    for j in 0..rank {
        for col in 0..two_r {
            map[j * two_r + col] = T::from_f64(sigma * factor[col * rank + j]);
        }
    }
    for col in 0..two_r {
        map[rank * two_r + col] = T::from_f64(plus[col]);
        map[(rank + 1) * two_r + col] = T::from_f64(minus[col]);
    }
    TestTokens {
        rows,
        width,
        map: Some(map),
        scores,
    }
}

/// Gradient descent in the span of the training tokens.
pub struct SubspaceTrainer<T> {
    tokens_per_sample: usize,
    rank: usize,
    lr: T,
    /// `e_it = B^T x_it`, (n T) x r.
    coords: Vec<T>,
    scores: Vec<T>,
    labels: Vec<T>,
    gram: Vec<T>,
    b: Vec<T>,
    /// `G b`, updated with `b` (each step's update checks `||p||^2 = b^T G b` with it, and the
    /// next step's logits use it).
    gb: Vec<T>,
    d: Vec<T>,
    /// `D G b`, updated with `D` in the same pass over it (the next step's logits, the test
    /// logits and the step's change of `||W - W_0||_F^2` use it).
    dgb: Vec<T>,
    /// A non-finite state found after an update, reported by the next `step` call.
    diverged: Option<Error>,
    test: TestTokens<T>,
    train_scores: Vec<f64>,
    attention: Vec<T>,
    delta: Vec<T>,
    /// The vectors of a step, kept from step to step so that a step allocates only the logits
    /// it returns.
    work: StepVectors<T>,
    /// `||W - W_0||_F^2 = tr(D G D^T)`, kept up to date by each step: the rank-one update of
    /// `D` changes it by `-2 lr a^T D G b + lr^2 ||a||^2 b^T G b` (both from the step's own
    /// `G b`, `D G b`), where recomputing it costs an r x r x r product per evaluation, the
    /// largest cost of a run at large r.
    w_delta_sq: f64,
    /// How long the start-up took, by part.
    pub timings: StartupTimings,
}

/// The vectors one step computes besides the state (each overwritten whole by the step).
struct StepVectors<T> {
    /// `G b + D G b`, what the training logits are `E` times.
    query: Vec<T>,
    /// `a = E^T delta`.
    grad: Vec<T>,
    /// `a + D^T a`, the step of `b` per unit learning rate.
    b_step: Vec<T>,
    /// `b` before the step (the update of `D` uses it).
    old_b: Vec<T>,
}

impl<T> Default for StepVectors<T> {
    fn default() -> Self {
        StepVectors {
            query: Vec::new(),
            grad: Vec::new(),
            b_step: Vec::new(),
            old_b: Vec::new(),
        }
    }
}

/// What the subspace trainer starts from when it computes its own start-up.
#[derive(Clone, Copy)]
pub struct SubspaceSetup<'a> {
    /// The training set.
    pub train: &'a TrainSet,
    /// Directions the basis spans after the training tokens (e.g. `mu_+`, `mu_-`).
    pub extra_directions: &'a [&'a [f64]],
    /// The fixed head `nu`.
    pub nu: &'a [f64],
    /// Where `W_0` comes from (drawn from a seed, or read from a file).
    pub init: &'a InitSource,
    /// The test set.
    pub test: &'a TestSource,
    /// Learning rate.
    pub lr: f64,
    /// Element type of the start-up products (f32 halves their cost).
    pub startup: Precision,
    /// How the test projections are obtained.
    pub draw: TestDraw,
}

impl<T: Float> SubspaceTrainer<T> {
    /// Start-up: basis, the two streamed passes over `W_0`, and the test projections (obtained
    /// as `setup.draw` says, falling back to [`TestDraw::Tokens`] where `Subspace` does not
    /// apply, see [`TestDraw::effective`]).
    pub fn new(setup: SubspaceSetup<'_>) -> Result<Self> {
        let draw = setup.draw.effective(setup.test);
        match setup.startup {
            Precision::F64 => Self::build::<f64>(&setup, draw),
            Precision::F32 => Self::build::<f32>(&setup, draw),
        }
    }

    fn build<S: Float>(setup: &SubspaceSetup<'_>, draw: TestDraw) -> Result<Self> {
        let SubspaceSetup {
            train,
            extra_directions,
            nu,
            init,
            test,
            lr,
            ..
        } = *setup;
        let d = train.dim;
        let rows = train.samples * train.tokens_per_sample;
        log::info!("start-up: basis of the span of the {rows} training tokens (d = {d})");
        let clock = std::time::Instant::now();
        let mut columns: Vec<&[f64]> = train.tokens.chunks_exact(d).collect();
        columns.extend_from_slice(extra_directions);
        let (basis, r) = orthonormal_rows(&columns);
        // P = [H | B | nu], d x (2r + 1): one GEMM projects a test chunk onto all three.
        let width = 2 * r + 1;
        let mut projector = basis_projector::<S>(&basis, r, nu);
        drop(basis);
        // e_it = B^T x_it and u_it = nu^T x_it for the training tokens.
        let train_tokens: Vec<S> = train.tokens.iter().map(|&v| S::from_f64(v)).collect();
        let mut train_proj = vec![S::ZERO; rows * (r + 1)];
        kernels::gemm(
            S::ONE,
            MatRef::new(&train_tokens, rows, d),
            MatRef::with_ld(&projector[r..], d, r + 1, width),
            S::ZERO,
            MatMut::new(&mut train_proj, rows, r + 1),
        );
        drop(train_tokens);
        let basis_seconds = clock.elapsed().as_secs_f64();

        log::info!("start-up: products with W_0 (two passes over {d} x {d}, rank {r})");
        let clock = std::time::Instant::now();
        let gram = init_products(init, &mut projector, width, r);
        let init_products_seconds = clock.elapsed().as_secs_f64();

        log::info!(
            "start-up: test projections ({} samples, {})",
            test.len(),
            match draw {
                TestDraw::Subspace => "drawn in the subspace",
                TestDraw::Tokens => "tokens generated and projected",
            }
        );
        let clock = std::time::Instant::now();
        let t = train.tokens_per_sample;
        let test_tokens = match (draw, test) {
            (
                TestDraw::Subspace,
                TestSource::Generated {
                    config,
                    signals,
                    seed,
                },
            ) => {
                let (factor, k_rank) = projection_noise_factor(&projector, d, width)?;
                let project = |mu: &[f64]| {
                    let mu_s: Vec<S> = mu.iter().map(|&v| S::from_f64(v)).collect();
                    let out = mat_vec(MatRef::new(&projector, d, width).transpose(), &mu_s);
                    out.into_iter().map(S::to_f64).collect::<Vec<f64>>()
                };
                let (plus, minus) = (project(&signals.mu_plus), project(&signals.mu_minus));
                draw_test_tokens(
                    config,
                    *seed,
                    &ProjectedTestLaw {
                        r,
                        factor: &factor,
                        rank: k_rank,
                        plus: &plus,
                        minus: &minus,
                    },
                )
            }
            _ => project_test_tokens(test, &projector, d, r, t),
        };
        let test_projection_seconds = clock.elapsed().as_secs_f64();

        let mut coords = vec![T::ZERO; rows * r];
        let mut train_scores = vec![0.0f64; rows];
        for (row, values) in train_proj.chunks_exact(r + 1).enumerate() {
            for j in 0..r {
                coords[row * r + j] = T::from_f64(values[j].to_f64());
            }
            train_scores[row] = values[r].to_f64();
        }
        check_gram_finite(&gram, STARTUP_GRAM)?;
        let cast = |v: &[f64]| v.iter().map(|&x| T::from_f64(x)).collect::<Vec<T>>();
        let mut trainer = SubspaceTrainer {
            tokens_per_sample: t,
            rank: r,
            lr: T::from_f64(lr),
            coords,
            scores: cast(&train_scores),
            labels: cast(&train.labels),
            gram: gram.iter().map(|v| T::from_f64(v.to_f64())).collect(),
            b: vec![T::ZERO; r],
            gb: Vec::new(),
            d: vec![T::ZERO; r * r],
            dgb: Vec::new(),
            diverged: None,
            test: test_tokens,
            train_scores,
            attention: vec![T::ZERO; rows],
            delta: vec![T::ZERO; rows],
            work: StepVectors::default(),
            w_delta_sq: 0.0,
            timings: StartupTimings {
                basis_seconds,
                init_products_seconds,
                test_projection_seconds,
                test_draw: draw,
            },
        };
        trainer.start_queries();
        Ok(trainer)
    }

    /// Rank r of the basis.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The state `(b, D)`.
    pub fn state(&self) -> (&[T], &[T]) {
        (&self.b, &self.d)
    }

    /// Reconstructs the dense state `(p, W)` = `(A b, W_0 + B D A^T)` from the same training set,
    /// extra directions and `W_0` the trainer was built from. Materialises `W_0`: small d only
    /// (tests and checks).
    pub fn reconstruct_dense(
        &self,
        train: &TrainSet,
        extra_directions: &[&[f64]],
        init: &InitSource,
    ) -> (Vec<f64>, Vec<f64>) {
        let d = train.dim;
        let mut columns: Vec<&[f64]> = train.tokens.chunks_exact(d).collect();
        columns.extend_from_slice(extra_directions);
        let basis = orthonormal_basis(&columns);
        let r = basis.len();
        assert_eq!(
            r, self.rank,
            "reconstruct from the data the trainer was built from"
        );
        let mut b_mat = vec![0.0f64; d * r];
        for (j, q) in basis.iter().enumerate() {
            for (i, &v) in q.iter().enumerate() {
                b_mat[i * r + j] = v;
            }
        }
        let w0: Vec<f64> = init.matrix();
        let mut a = vec![0.0f64; d * r];
        kernels::gemm(
            1.0,
            MatRef::new(&w0, d, d).transpose(),
            MatRef::new(&b_mat, d, r),
            0.0,
            MatMut::new(&mut a, d, r),
        );
        let coeff: Vec<f64> = self.b.iter().map(|v| v.to_f64()).collect();
        let dmat: Vec<f64> = self.d.iter().map(|v| v.to_f64()).collect();
        let p = mat_vec(MatRef::new(&a, d, r), &coeff);
        // W = W_0 + (B D) A^T
        let mut bd = vec![0.0f64; d * r];
        kernels::gemm(
            1.0,
            MatRef::new(&b_mat, d, r),
            MatRef::new(&dmat, r, r),
            0.0,
            MatMut::new(&mut bd, d, r),
        );
        let mut w = w0;
        kernels::gemm(
            1.0,
            MatRef::new(&bd, d, r),
            MatRef::new(&a, d, r).transpose(),
            1.0,
            MatMut::new(&mut w, d, d),
        );
        (p, w)
    }

    /// `G b` from `b`, written over `self.gb` (no new vector each step; `beta = 0`, so the
    /// old values are never read and the result is that of a fresh [`mat_vec`]).
    fn gram_times_b(&mut self) {
        let r = self.rank;
        self.gb.resize(r, T::ZERO);
        kernels::gemv(
            T::ONE,
            MatRef::new(&self.gram, r, r),
            &self.b,
            T::ZERO,
            &mut self.gb,
        );
    }

    /// `G b` and `D G b` of the initial state.
    fn start_queries(&mut self) {
        let r = self.rank;
        self.gram_times_b();
        self.dgb = mat_vec(MatRef::new(&self.d, r, r), &self.gb);
    }

    /// `||p||^2 = b^T G b`, accumulated in f64.
    fn p_norm_squared(&self) -> f64 {
        self.b
            .iter()
            .zip(&self.gb)
            .map(|(x, y)| x.to_f64() * y.to_f64())
            .sum()
    }

    /// The training logits `z = E (G b + D G b)`.
    fn logits(&mut self) -> Vec<T> {
        let query = &mut self.work.query;
        query.clone_from(&self.gb);
        kernels::axpy(T::ONE, &self.dgb, query);
        mat_vec(
            MatRef::new(&self.coords, self.scores.len(), self.rank),
            query,
        )
    }
}

impl<T: Float> AttentionTrainer for SubspaceTrainer<T> {
    fn tokens_per_sample(&self) -> usize {
        self.tokens_per_sample
    }

    fn train_scores(&self) -> &[f64] {
        &self.train_scores
    }

    fn test_scores(&self) -> &[f64] {
        &self.test.scores
    }

    fn train_logits(&mut self) -> Vec<f64> {
        self.logits().into_iter().map(T::to_f64).collect()
    }

    fn test_logits(&mut self) -> Vec<f64> {
        let r = self.rank;
        // z = h^T b + c^T (D G b) = [h | c] v with v = [b; D G b], or (w, a) (map v) for drawn
        // tokens.
        let mut v = self.b.clone();
        v.extend_from_slice(&self.dgb);
        let test = &self.test;
        let coefficients = match &test.map {
            Some(map) => mat_vec(MatRef::new(map, test.width, 2 * r), &v),
            None => v,
        };
        let rows = test.scores.len();
        let z = mat_vec(MatRef::new(&test.rows, rows, test.width), &coefficients);
        z.into_iter().map(T::to_f64).collect()
    }

    fn step_logits(&mut self, step: usize) -> Result<Vec<f64>> {
        if let Some(err) = self.diverged.take() {
            return Err(err);
        }
        let r = self.rank;
        let z = self.logits();
        let rows = self.scores.len();
        let loss = loss_and_delta(
            self.tokens_per_sample,
            &z,
            &self.scores,
            &self.labels,
            &mut self.attention,
            &mut self.delta,
        );
        check_training_loss(step, loss)?;
        let StepVectors {
            grad: a,
            b_step,
            old_b,
            ..
        } = &mut self.work;
        a.resize(r, T::ZERO);
        let coords = MatRef::new(&self.coords, rows, r);
        kernels::gemv(T::ONE, coords.transpose(), &self.delta, T::ZERO, a);
        // b' = b - lr (a + D^T a), then D' = D - lr a b^T with the old b.
        b_step.clone_from(a);
        kernels::gemv(
            T::ONE,
            MatRef::new(&self.d, r, r).transpose(),
            a,
            T::ONE,
            b_step,
        );
        // a^T D G b, ||a||^2 and b^T G b, each summed in f64 in index order from -0.0 (as
        // `Iterator::sum`), three independent sums in one loop
        let (mut a_dgb, mut a_a, mut b_gb) = (-0.0, -0.0, -0.0);
        for (((&ai, &dgbi), &bi), &gbi) in a.iter().zip(&self.dgb).zip(&self.b).zip(&self.gb) {
            a_dgb += ai.to_f64() * dgbi.to_f64();
            a_a += ai.to_f64() * ai.to_f64();
            b_gb += bi.to_f64() * gbi.to_f64();
        }
        let lr = self.lr.to_f64();
        self.w_delta_sq += -2.0 * lr * a_dgb + lr * lr * a_a * b_gb;
        old_b.clone_from(&self.b);
        let b_finite = kernels::axpy_finite(-self.lr, b_step, &mut self.b);
        self.gram_times_b();
        // D' = D - lr a b^T and D' G b' in one pass over D.
        let StepVectors { grad: a, old_b, .. } = &self.work;
        let d_finite = kernels::level2::ger_finite_gemv(
            -self.lr,
            a,
            old_b,
            MatMut::new(&mut self.d, r, r),
            &self.gb,
            &mut self.dgb,
        );
        // The updated state, charged to this step: `||p||` as the evaluations compute it, and
        // every coefficient of `W - W_0 = B D A^T`.
        let p_sq = self.p_norm_squared();
        self.diverged = update_error(
            step,
            (b_finite && p_sq.is_finite(), non_negative(p_sq).sqrt()),
            (d_finite, &self.d, "W (its coefficients D)"),
        );
        Ok(z.into_iter().map(T::to_f64).collect())
    }

    fn pending_error(&mut self) -> Option<Error> {
        self.diverged.take()
    }

    fn p_norm(&self) -> f64 {
        non_negative(self.p_norm_squared()).sqrt()
    }

    fn w_delta_norm(&self) -> f64 {
        non_negative(self.w_delta_sq).sqrt()
    }
}

/// The training side of a [`SubspaceTrainer`] built from projections computed elsewhere (a
/// column's shared start-up, [`super::crn`], or inputs drawn from their law, [`super::law`]):
/// f64, row-major with `rank` columns.
pub struct SubspaceTraining {
    /// Tokens per sample T.
    pub tokens_per_sample: usize,
    /// Dimension r of the basis (at most n T, plus the extra directions).
    pub rank: usize,
    /// Learning rate.
    pub lr: f64,
    /// `e_it = B^T x_it` of the training tokens in an orthonormal basis of their span, (n T) x r.
    pub coords: Vec<f64>,
    /// `u_it = nu^T x_it` of the training tokens.
    pub train_scores: Vec<f64>,
    /// Observed training labels `+-1`.
    pub labels: Vec<f64>,
    /// `G = A^T A` in the same basis, r x r.
    pub gram: Vec<f64>,
    /// How long computing these took, by part.
    pub timings: StartupTimings,
}

/// A trainer's inputs whose test tokens are given by their projections `h = H^T x` and
/// `c = B^T x` (a column of common random numbers).
pub struct SubspaceParts {
    /// The training side.
    pub training: SubspaceTraining,
    /// `h = H^T x` of the test tokens, (m T) x r.
    pub test_h: Vec<f64>,
    /// `c = B^T x` of the test tokens, (m T) x r.
    pub test_c: Vec<f64>,
    /// `u = nu^T x` of the test tokens.
    pub test_scores: Vec<f64>,
}

impl<T: Float> SubspaceTrainer<T> {
    /// A trainer at the initial state (`b = 0`, `D = 0`) from given projections.
    pub fn from_parts(parts: SubspaceParts) -> Result<Self> {
        let (r, test_rows) = (parts.training.rank, parts.test_scores.len());
        if parts.test_h.len() != test_rows * r || parts.test_c.len() != test_rows * r {
            return Err(Error::invalid("subspace parts", "inconsistent shapes"));
        }
        let test = TestTokens {
            rows: parts
                .test_h
                .chunks_exact(r.max(1))
                .zip(parts.test_c.chunks_exact(r.max(1)))
                .flat_map(|(h, c)| h.iter().chain(c))
                .map(|&x| T::from_f64(x))
                .collect(),
            width: 2 * r,
            map: None,
            scores: parts.test_scores,
        };
        Self::assemble(parts.training, test, "subspace parts")
    }

    /// The trainer at the initial state from its training inputs and test tokens, after checking
    /// their shapes (`what` names the caller's inputs in the error) and that `G` is finite.
    fn assemble(t: SubspaceTraining, test: TestTokens<T>, what: &str) -> Result<Self> {
        let r = t.rank;
        let rows = t.train_scores.len();
        let shapes_ok = t.tokens_per_sample > 0
            && rows == t.labels.len() * t.tokens_per_sample
            && t.coords.len() == rows * r
            && t.gram.len() == r * r
            && test.rows.len() == test.scores.len() * test.width;
        if !shapes_ok {
            return Err(Error::invalid(what, "inconsistent shapes"));
        }
        check_gram_finite(&t.gram, STARTUP_GRAM)?;
        let cast = |v: &[f64]| v.iter().map(|&x| T::from_f64(x)).collect::<Vec<T>>();
        let mut trainer = SubspaceTrainer {
            tokens_per_sample: t.tokens_per_sample,
            rank: r,
            lr: T::from_f64(t.lr),
            coords: cast(&t.coords),
            scores: cast(&t.train_scores),
            labels: cast(&t.labels),
            gram: cast(&t.gram),
            b: vec![T::ZERO; r],
            gb: Vec::new(),
            d: vec![T::ZERO; r * r],
            dgb: Vec::new(),
            diverged: None,
            test,
            train_scores: t.train_scores,
            attention: vec![T::ZERO; rows],
            delta: vec![T::ZERO; rows],
            work: StepVectors::default(),
            w_delta_sq: 0.0,
            timings: t.timings,
        };
        trainer.start_queries();
        Ok(trainer)
    }
}

/// The inputs of a [`SubspaceTrainer`] whose test logits are `rows (map v)` with
/// `v = [b; D G b]`: each test token is a row of `test_width` numbers and `map` turns the state
/// into one coefficient per column.
pub struct DrawnParts<T> {
    /// The training side.
    pub training: SubspaceTraining,
    /// Test tokens, (m T) x `test_width`.
    pub test_rows: Vec<T>,
    /// Numbers per test token row.
    pub test_width: usize,
    /// `test_width x 2r`.
    pub test_map: Vec<f64>,
    /// `u = nu^T x` of the test tokens.
    pub test_scores: Vec<f64>,
}

impl<T: Float> SubspaceTrainer<T> {
    /// A trainer at the initial state (`b = 0`, `D = 0`) from drawn parts.
    pub fn from_drawn_parts(parts: DrawnParts<T>) -> Result<Self> {
        if parts.test_map.len() != parts.test_width * 2 * parts.training.rank {
            return Err(Error::invalid("drawn parts", "inconsistent shapes"));
        }
        let test = TestTokens {
            rows: parts.test_rows,
            width: parts.test_width,
            map: Some(parts.test_map.iter().map(|&x| T::from_f64(x)).collect()),
            scores: parts.test_scores,
        };
        Self::assemble(parts.training, test, "drawn parts")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;
    use rand_distr::StandardNormal;

    use super::super::init::ChaChaStream;

    /// [`ChaChaStream`] that keeps the `u64`s it hands out, so a test can tell which path of
    /// the ziggurat each `StandardNormal` draw took from the words it consumed.
    struct RecordingStream {
        inner: ChaChaStream,
        consumed: Vec<u64>,
    }

    impl rand::RngCore for RecordingStream {
        fn next_u32(&mut self) -> u32 {
            panic!("StandardNormal reads whole u64s")
        }
        fn next_u64(&mut self) -> u64 {
            let bits = self.inner.next_u64();
            self.consumed.push(bits);
            bits
        }
        fn fill_bytes(&mut self, _: &mut [u8]) {
            panic!("StandardNormal reads whole u64s")
        }
    }

    /// `NormalStream` returns rand_distr's `StandardNormal` over the same ChaCha8 stream bit
    /// for bit, in fills of every length (across buffer refills), over millions of draws of
    /// several keys and streams, with many draws of each slow path: the tail (strip 0), a
    /// wedge accepted on its extra uniform, and a wedge rejected (fresh candidates).
    #[test]
    fn normal_stream_equals_rand_distr_standard_normal() {
        let (mut tails, mut wedges, mut wedge_rejections, mut draws) = (0, 0, 0, 0usize);
        for (seed, stream) in [(0u64, 0u64), (7, 1), (12345, 999), (u64::MAX, u64::MAX - 3)] {
            let key = chacha_key(seed);
            let mut expected = RecordingStream {
                inner: ChaChaStream::new(&key, stream),
                consumed: Vec::new(),
            };
            let mut ours = kernels::random::NormalStream::new(&key, stream);
            let mut values = Vec::new();
            for fill in 0..2600usize {
                // lengths 0..=1300, so fills start and end anywhere in the buffer
                values.resize((fill * 389) % 1301, 0.0);
                ours.fill(&mut values);
                for &value in &values {
                    expected.consumed.clear();
                    let reference: f64 = expected.sample(StandardNormal);
                    assert_eq!(
                        value.to_bits(),
                        reference.to_bits(),
                        "seed {seed} stream {stream} draw {draws}"
                    );
                    draws += 1;
                    let words = &expected.consumed;
                    if words.len() > 1 {
                        if words[0] & 0xff == 0 {
                            tails += 1;
                        } else if words.len() == 2 {
                            wedges += 1;
                        } else {
                            wedge_rejections += 1;
                        }
                    }
                }
            }
        }
        assert!(draws > 5_000_000, "{draws} draws");
        assert!(tails > 100, "{tails} tail draws");
        assert!(wedges > 1000, "{wedges} wedge draws");
        assert!(wedge_rejections > 100, "{wedge_rejections} rejected wedges");
    }

    /// `draw_test_tokens` (normals written straight into the rows, each row completed while
    /// in cache) holds what its definition says, bit for bit: `fill_test_normals`'s draws, the
    /// signal coefficients of `token_signal` and the score `sigma nu_L^T w + a_+ (P^T mu_+)_nu
    /// + a_- (P^T mu_-)_nu` with `kernels::dot`, for f64 and f32 rows and any thread count.
    #[test]
    fn drawn_test_tokens_are_their_definition() {
        fn check<T: Float>(threads: usize) {
            let config = RunConfig {
                test_size: 30,
                tokens: 5,
                rho: 0.3,
                sigma: 1.7,
                ..RunConfig::default()
            };
            let (r, rank) = (4, 7);
            let rows_of_l = 2 * r + 1;
            let factor: Vec<f64> = (0..rows_of_l * rank)
                .map(|k| ((k * 37 + 5) % 23) as f64 / 23.0 - 0.4)
                .collect();
            let plus: Vec<f64> = (0..rows_of_l).map(|k| 0.1 * k as f64 - 0.3).collect();
            let minus: Vec<f64> = (0..rows_of_l).map(|k| 0.7 - 0.05 * k as f64).collect();
            let law = ProjectedTestLaw {
                r,
                factor: &factor,
                rank,
                plus: &plus,
                minus: &minus,
            };
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let drawn = pool.install(|| draw_test_tokens::<T>(&config, 11, &law));
            let (samples, t, width) = (config.test_size, config.tokens, rank + 2);
            assert_eq!(drawn.width, width);
            let mut normals = vec![T::ZERO; samples * t * width];
            fill_test_normals(11, t, rank, width, &mut normals);
            let nu_row: Vec<T> = factor[2 * r * rank..]
                .iter()
                .map(|&v| T::from_f64(v))
                .collect();
            let labels = balanced_labels(samples);
            for at in 0..samples * t {
                let row = &drawn.rows[at * width..(at + 1) * width];
                assert_eq!(
                    &row[..rank],
                    &normals[at * width..at * width + rank],
                    "{at}"
                );
                let (a_plus, a_minus) = token_signal(labels[at / t], at % t, config.rho);
                assert_eq!(row[rank..], [T::from_f64(a_plus), T::from_f64(a_minus)]);
                let score = config.sigma * kernels::dot(&nu_row, &row[..rank]).to_f64()
                    + a_plus * plus[2 * r]
                    + a_minus * minus[2 * r];
                assert_eq!(drawn.scores[at].to_bits(), score.to_bits(), "{at}");
            }
        }
        for threads in [1, 4] {
            check::<f64>(threads);
            check::<f32>(threads);
        }
    }

    #[test]
    fn the_projector_gram_is_the_full_gemms_bits() {
        fn check<S: Float>(d: usize, width: usize, threads: usize) {
            let projector: Vec<S> = (0..d * width)
                .map(|k| S::from_f64(((k * 7919 + 13) % 4001) as f64 / 4001.0 - 0.5))
                .collect();
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let (full, blocked) = pool.install(|| {
                let mut full = vec![S::ZERO; width * width];
                kernels::gemm(
                    S::ONE,
                    MatRef::new(&projector, d, width).transpose(),
                    MatRef::new(&projector, d, width),
                    S::ZERO,
                    MatMut::new(&mut full, width, width),
                );
                (full, projector_gram(&projector, d, width))
            });
            for i in 0..width {
                for j in 0..width {
                    let (want, got) = (full[i * width + j], blocked[i * width + j]);
                    assert!(
                        want.to_f64().to_bits() == got.to_f64().to_bits(),
                        "d {d} width {width} {threads} threads ({i}, {j}): {want} vs {got}"
                    );
                }
            }
            // the premise: the one GEMM is symmetric to the bit
            for i in 0..width {
                for j in 0..i {
                    assert!(full[i * width + j] == full[j * width + i]);
                }
            }
        }
        // one and several column blocks (325 = 2 r + 1 at r = 162), depths of one and several
        // KC panels, a shape on the direct path (d = 2), one to three threads
        for threads in [1, 2, 3] {
            for (d, width) in [
                (2, 325),
                (3, 7),
                (250, 325),
                (777, 325),
                (1000, 101),
                (60, 41),
            ] {
                check::<f64>(d, width, threads);
                check::<f32>(d, width, threads);
            }
        }
    }

    #[test]
    fn the_projector_holds_zeros_the_basis_and_nu() {
        // r = 0 leaves nu alone
        for (d, r) in [(1, 1), (150, 7), (64, 3), (10, 0)] {
            let basis: Vec<f64> = (0..r * d).map(|k| k as f64 * 0.25 - 3.0).collect();
            let nu: Vec<f64> = (0..d).map(|i| 1.0 / (i as f64 + 1.0)).collect();
            let width = 2 * r + 1;
            let projector = basis_projector::<f64>(&basis, r, &nu);
            assert_eq!(projector.len(), d * width);
            for i in 0..d {
                for j in 0..width {
                    let want = if j < r {
                        0.0
                    } else if j < 2 * r {
                        basis[(j - r) * d + i]
                    } else {
                        nu[i]
                    };
                    assert_eq!(projector[i * width + j], want, "d {d} r {r} ({i}, {j})");
                }
            }
            let narrow = basis_projector::<f32>(&basis, r, &nu);
            let cast: Vec<f32> = projector.iter().map(|&v| v as f32).collect();
            assert_eq!(narrow, cast);
        }
    }

    /// Modified Gram-Schmidt one vector at a time: both passes over the basis so far, then the
    /// norm test.
    fn textbook_basis(vectors: &[&[f64]]) -> Vec<Vec<f64>> {
        let mut basis: Vec<Vec<f64>> = Vec::new();
        for v in vectors {
            let original = kernels::dot(v, v).sqrt();
            if original == 0.0 {
                continue;
            }
            let mut w = v.to_vec();
            for _pass in 0..2 {
                for q in &basis {
                    let c = kernels::dot(q, &w);
                    kernels::axpy(-c, q, &mut w);
                }
            }
            let norm = kernels::dot(&w, &w).sqrt();
            if norm > 1e-10 * original {
                kernels::scale(1.0 / norm, &mut w);
                basis.push(w);
            }
        }
        basis
    }

    #[test]
    fn the_basis_is_the_textbook_loops_bit_for_bit() {
        for d in [1, 7, 37, 300] {
            let mut rng = ChaChaStream::new(&chacha_key(d as u64), 0);
            let mut vectors: Vec<Vec<f64>> = (0..12)
                .map(|_| (0..d).map(|_| rng.sample(StandardNormal)).collect())
                .collect();
            // a zero vector, a dependent one (the sum of two before it), and one after them
            vectors[2] = vec![0.0; d];
            vectors[6] = vectors[3]
                .iter()
                .zip(&vectors[4])
                .map(|(a, b)| a + b)
                .collect();
            let refs: Vec<&[f64]> = vectors.iter().map(Vec::as_slice).collect();
            for count in [0, 1, 2, 3, 7, 12] {
                let expected = textbook_basis(&refs[..count]);
                let (rows, r) = orthonormal_rows(&refs[..count]);
                assert_eq!(r, expected.len(), "d = {d}, {count} vectors");
                let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&rows), bits(&expected.concat()), "d = {d}, {count}");
                assert_eq!(orthonormal_basis(&refs[..count]), expected);
            }
            // the zero vector and the dependent one are dropped (d >= 12)
            if d >= 12 {
                assert_eq!(orthonormal_rows(&refs).1, 10);
            }
        }
    }
}
