//! Common random numbers: one start-up serves a whole column of runs.
//!
//! Runs of a column differ only in `signal_norm`, `rho` or `eta`; they share the seed, hence the
//! token noise `eps`, `W_0`, the signal directions `e_+`, `e_-` (unit vectors) and the test noise.
//! Every token is `x = eps + c e_{+-}` with a coefficient `c` (`||mu||`, `rho ||mu||` or 0) that
//! depends on the cell, and every projection the subspace trainer needs is linear in `x`. So the
//! column computes once, with `B` an orthonormal basis of the training noise tokens and `e_+`,
//! `e_-` (r = nT + 2, the same span as a single run's basis of its tokens and `mu_+`, `mu_-`):
//!
//! ```text
//! A = W_0^T B,  G = A^T A,  H = W_0 A        (subspace::init_products, streamed passes over W_0)
//! P^T eps   for every training noise token, P = [H | B | nu_1], nu_1 = (e_+ - e_-)/sqrt 2
//! P^T eps   for every test noise token, drawn from its exact law N(0, sigma^2 P^T P)
//! P^T e_+, P^T e_-
//! ```
//!
//! and a cell combines them: `h_x = h_eps + c h_e`, `c_x = c_eps + c c_e`, and
//! `u_x = (nu_1^T eps + c nu_1^T e) / ||mu||` since `nu = nu_1 / ||mu||`. The cell's run then
//! follows exactly the training dynamics of an independent run with the column's seed (the same
//! data and `W_0`, another basis of the same span), to rounding. Its test noise is drawn in the
//! subspace as in `synthetic::subspace` (shared by the column; an independent sample of the law
//! of projected test tokens, not the standalone run's sample); with [`TestDraw::Tokens`] the
//! column projects generated test tokens instead and matches the standalone run with that draw
//! to rounding, test metrics included.

use std::time::Instant;

use benign_kernels::{self as kernels, MatMut, MatRef, Transpose};

use crate::synthetic::data::TestSource;
use crate::synthetic::data::{
    balanced_labels, fill_samples, token_signal, training_labels, Signals,
};
use crate::synthetic::init::InitSource;
use crate::synthetic::metrics::{self, first_non_finite, EvalRecord, Labels, Readout, StateNorms};
use crate::synthetic::run::Startup;
use crate::synthetic::subspace::{
    basis_projector, fill_test_normals, init_products, loss_and_delta, orthonormal_rows,
    projection_noise_factor, StartupTimings, SubspaceParts, SubspaceTrainer, SubspaceTraining,
    TestDraw,
};
use crate::synthetic::theory::{classify, Regime};
use crate::synthetic::{check_training_loss, mat_vec, Precision, RunConfig, Trainer};
use crate::Result;

/// Bytes of test tokens generated at once.
const TEST_CHUNK_BYTES: usize = 32 << 20;

/// Cells of a column run in lockstep at once. Larger blocks make the shared products wider
/// (better GEMMs) but push the cells' `D` matrices (r x r each, 210 KB at the paper's r = 162)
/// out of cache; 8 balances the two at the paper's sizes (r = 162).
pub const LOCKSTEP_CELLS: usize = 8;

/// Projections of one token part onto `[H | B | nu_1]`: `width = 2r + 1` values per row.
struct Projected {
    /// Row-major, `width` columns.
    rows: Vec<f64>,
}

/// The start-up shared by a column: noise projections and the projections of `e_+`, `e_-`.
pub struct ColumnStartup {
    /// The column's configuration (any cell's; only the shared fields are used).
    column: RunConfig,
    rank: usize,
    gram: Vec<f64>,
    train_noise: Projected,
    test_noise: Projected,
    /// `[H | B | nu_1]^T e_+` and `... e_-`.
    plus: Vec<f64>,
    minus: Vec<f64>,
    /// How long each part of the shared start-up took.
    pub timings: StartupTimings,
    /// Wall-clock time of the whole shared start-up, seconds.
    pub seconds: f64,
}

impl ColumnStartup {
    /// The start-up of the column of `config` (its seed, dimension, sizes, sigma, ...), with
    /// the test noise drawn in the subspace ([`TestDraw::Subspace`]).
    pub fn new(config: &RunConfig) -> Result<Self> {
        Self::with_test_draw(config, TestDraw::Subspace)
    }

    /// The start-up of the column of `config`, its test noise projections obtained as `draw`
    /// says (`Subspace` applies when the test seed differs from the training seed).
    pub fn with_test_draw(config: &RunConfig, draw: TestDraw) -> Result<Self> {
        config.validate()?;
        let started = Instant::now();
        let (n, t, d) = (config.samples, config.tokens, config.dim);
        let unit = Signals::new(&RunConfig {
            signal_norm: 1.0,
            ..config.clone()
        });
        let silent = Signals {
            mu_plus: vec![0.0; d],
            mu_minus: vec![0.0; d],
            nu: vec![0.0; d],
        };
        let test_seed = config.effective_test_seed();
        let draw = draw.effective(&TestSource::Generated {
            config: config.clone(),
            signals: silent.clone(),
            seed: test_seed,
        });
        // Training noise: the tokens of the column's runs without their signal parts.
        let (clean, _, _) = training_labels(config);
        let mut noise = vec![0.0; n * t * d];
        fill_samples(config, &silent, config.seed, 0, &clean, &mut noise);

        let clock = Instant::now();
        let mut columns: Vec<&[f64]> = noise.chunks_exact(d).collect();
        columns.push(&unit.mu_plus);
        columns.push(&unit.mu_minus);
        let (basis, r) = orthonormal_rows(&columns);
        let width = 2 * r + 1;
        // P = [H | B | nu_1], d x (2r + 1).
        let mut projector = basis_projector::<f64>(&basis, r, &unit.nu);
        drop(basis);
        let basis_seconds = clock.elapsed().as_secs_f64();

        let clock = Instant::now();
        let init = InitSource::from_seed_with(config.seed, d, config.init);
        let gram = init_products(&init, &mut projector, width, r);
        let init_products_seconds = clock.elapsed().as_secs_f64();

        let clock = Instant::now();
        let project = |tokens: &[f64], out: &mut [f64]| {
            let m = tokens.len() / d;
            kernels::gemm(
                1.0,
                MatRef::new(tokens, m, d),
                MatRef::new(&projector, d, width),
                0.0,
                MatMut::new(out, m, width),
            );
        };
        let mut train_rows = vec![0.0; n * t * width];
        project(&noise, &mut train_rows);
        drop(noise);
        let mut plus = vec![0.0; width];
        project(&unit.mu_plus, &mut plus);
        let mut minus = vec![0.0; width];
        project(&unit.mu_minus, &mut minus);
        let test_size = config.test_size;
        let mut test_rows = vec![0.0; test_size * t * width];
        match draw {
            TestDraw::Subspace => {
                // P^T eps = sigma L w with L L^T = P^T P, w ~ N(0, I_k): exactly the law of the
                // projected test noise (see `synthetic::subspace`).
                let (factor, rank) = projection_noise_factor(&projector, d, width)?;
                let mut normals = vec![0.0f64; test_size * t * rank];
                fill_test_normals(test_seed, t, rank, rank, &mut normals);
                kernels::gemm(
                    config.sigma,
                    MatRef::new(&normals, test_size * t, rank),
                    MatRef::new(&factor, width, rank).transpose(),
                    0.0,
                    MatMut::new(&mut test_rows, test_size * t, width),
                );
            }
            TestDraw::Tokens => {
                // Test noise, chunk by chunk, with the test seed of the column.
                let test_labels = balanced_labels(test_size);
                let chunk = (TEST_CHUNK_BYTES / (8 * t * d)).max(1);
                let mut buffer = vec![0.0; chunk.min(test_size) * t * d];
                for (c, labels) in test_labels.chunks(chunk).enumerate() {
                    let first = c * chunk;
                    let tokens = &mut buffer[..labels.len() * t * d];
                    fill_samples(config, &silent, test_seed, first, labels, tokens);
                    project(
                        tokens,
                        &mut test_rows[first * t * width..(first + labels.len()) * t * width],
                    );
                }
            }
        }
        let test_projection_seconds = clock.elapsed().as_secs_f64();
        Ok(ColumnStartup {
            column: config.clone(),
            rank: r,
            gram,
            train_noise: Projected { rows: train_rows },
            test_noise: Projected { rows: test_rows },
            plus,
            minus,
            timings: StartupTimings {
                basis_seconds,
                init_products_seconds,
                test_projection_seconds,
                test_draw: draw,
            },
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// Rank r of the shared basis.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Whether `config` belongs to this column (differs at most in signal_norm, rho, eta).
    pub fn serves(&self, config: &RunConfig) -> bool {
        let strip = |c: &RunConfig| RunConfig {
            signal_norm: 1.0,
            rho: 1.0,
            eta: 0.0,
            track_samples: None,
            ..c.clone()
        };
        strip(config) == strip(&self.column)
    }

    /// `(h, c, u)` of the tokens of samples with clean labels `labels`: noise rows plus each
    /// token role's signal part (`c e_y` on 0, `rho c e_y` on 1, `rho c e_{-y}` on 2).
    fn combine(
        &self,
        noise: &Projected,
        labels: &[f64],
        config: &RunConfig,
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let (r, t) = (self.rank, config.tokens);
        let width = 2 * r + 1;
        let s = config.signal_norm;
        let rows = labels.len() * t;
        let (mut h, mut c, mut u) = (vec![0.0; rows * r], vec![0.0; rows * r], vec![0.0; rows]);
        for (i, &y) in labels.iter().enumerate() {
            for pos in 0..t {
                let row = i * t + pos;
                let base = &noise.rows[row * width..(row + 1) * width];
                let (hr, cr) = (
                    &mut h[row * r..(row + 1) * r],
                    &mut c[row * r..(row + 1) * r],
                );
                hr.copy_from_slice(&base[..r]);
                cr.copy_from_slice(&base[r..2 * r]);
                let mut score = base[2 * r];
                let (a_plus, a_minus) = token_signal(y, pos, config.rho);
                for (e, a) in [(&self.plus, a_plus), (&self.minus, a_minus)] {
                    if a != 0.0 {
                        let coef = a * s;
                        kernels::axpy(coef, &e[..r], hr);
                        kernels::axpy(coef, &e[r..2 * r], cr);
                        score += coef * e[2 * r];
                    }
                }
                u[row] = score / s;
            }
        }
        (h, c, u)
    }

    /// Refuses a configuration outside this column.
    pub(crate) fn check_serves(&self, config: &RunConfig) -> Result<()> {
        if self.serves(config) {
            Ok(())
        } else {
            Err(crate::Error::invalid(
                "common-random-numbers",
                "the configuration is not in this column (it differs in more than signal_norm, rho, eta)",
            ))
        }
    }

    /// The subspace trainer of one cell of the column, for the resolved configuration of a run
    /// that [`Self::check_serves`] accepted before resolving it (the pipeline of
    /// [`crate::synthetic::run_with`] does both, given this column in its options).
    pub(crate) fn cell(&self, config: &RunConfig, labels: &Labels) -> Result<Startup> {
        let (_, coords, train_scores) = self.combine(&self.train_noise, &labels.clean, config);
        let (test_h, test_c, test_scores) = self.combine(&self.test_noise, &labels.test, config);
        let parts = SubspaceParts {
            training: SubspaceTraining {
                tokens_per_sample: config.tokens,
                rank: self.rank,
                lr: config.lr,
                coords,
                train_scores,
                labels: labels.train.clone(),
                gram: self.gram.clone(),
                timings: self.timings.clone(),
            },
            test_h,
            test_c,
            test_scores,
        };
        let trainer: Box<dyn Trainer> = match config.precision {
            Precision::F64 => Box::new(SubspaceTrainer::<f64>::from_parts(parts)?),
            Precision::F32 => Box::new(SubspaceTrainer::<f32>::from_parts(parts)?),
        };
        Ok(Startup {
            trainer,
            subspace_rank: Some(self.rank),
            timings: Some(self.timings.clone()),
        })
    }
}

/// The final state of one cell of a column run in lockstep.
#[derive(Clone, Debug)]
pub struct CellOutcome {
    /// The cell's last evaluation.
    pub final_metrics: EvalRecord,
    /// The regime that evaluation shows.
    pub observed_regime: Regime,
    /// First evaluated step with every training sample fitted, if any.
    pub first_all_fitted_step: Option<usize>,
}

/// A cell's fixed data in the column's coordinates: observed labels, noise flags, and the
/// signal coefficient of every token on `e_+` and on `e_-`.
struct CellData {
    labels: Vec<f64>,
    noisy: Vec<bool>,
    coef_plus: Vec<f64>,
    coef_minus: Vec<f64>,
    scores: Vec<f64>,
}

/// Coefficients of `e_+` and `e_-` in each token of samples with clean labels `clean`.
fn signal_coefficients(
    clean: &[f64],
    t: usize,
    signal_norm: f64,
    rho: f64,
) -> (Vec<f64>, Vec<f64>) {
    let (mut plus, mut minus) = (vec![0.0; clean.len() * t], vec![0.0; clean.len() * t]);
    for (i, &y) in clean.iter().enumerate() {
        for pos in 0..t {
            let (a_plus, a_minus) = token_signal(y, pos, rho);
            plus[i * t + pos] = a_plus * signal_norm;
            minus[i * t + pos] = a_minus * signal_norm;
        }
    }
    (plus, minus)
}

/// The dot products of `plus` and of `minus` with column `k` of the row-major matrix `m` of
/// `stride` columns (one row per entry of `plus`), summed in row order.
fn column_dots(plus: &[f64], minus: &[f64], m: &[f64], stride: usize, k: usize) -> (f64, f64) {
    let (mut dot_plus, mut dot_minus) = (0.0, 0.0);
    for (row, (p, q)) in plus.iter().zip(minus).enumerate() {
        let x = m[row * stride + k];
        dot_plus += p * x;
        dot_minus += q * x;
    }
    (dot_plus, dot_minus)
}

impl ColumnStartup {
    /// `u = nu^T x` of tokens with the given signal coefficients, from the noise rows.
    fn scores(&self, noise: &Projected, plus: &[f64], minus: &[f64], signal_norm: f64) -> Vec<f64> {
        let (r, width) = (self.rank, 2 * self.rank + 1);
        noise
            .rows
            .chunks_exact(width)
            .zip(plus.iter().zip(minus))
            .map(|(row, (p, m))| {
                (row[2 * r] + p * self.plus[2 * r] + m * self.minus[2 * r]) / signal_norm
            })
            .collect()
    }

    /// Runs every cell of the column together (f64 subspace dynamics), evaluating at the last
    /// step only. The products shared by the cells become matrix-matrix products: with
    /// `C = B^T eps` the noise coordinates of the training tokens, a cell's coordinates are
    /// `C + coef_+ c_+^T + coef_- c_-^T`, so `coords v` and `coords^T delta` for all cells at once
    /// are `C [v_1 .. v_K]` and `C^T [delta_1 .. delta_K]` plus rank-two corrections; only the
    /// products with each cell's own `D` stay matrix-vector. Same mathematics as the single-cell
    /// pipeline (`ColumnStartup::cell` under [`crate::synthetic::run_with`]), so the two agree
    /// to rounding.
    ///
    /// The result of a cell depends on the whole column (the products' shapes include K):
    /// callers pass the complete column for results independent of resumption and sharding.
    pub fn run_column(&self, cells: &[RunConfig]) -> Vec<Result<CellOutcome>> {
        let kk = cells.len();
        let (r, width) = (self.rank, 2 * self.rank + 1);
        let t = self.column.tokens;
        let rows = self.train_noise.rows.len() / width;
        let steps = self.column.steps;
        let mut outcome: Vec<Option<Result<CellOutcome>>> = (0..kk).map(|_| None).collect();
        for (k, c) in cells.iter().enumerate() {
            if let Err(e) = c.validate() {
                outcome[k] = Some(Err(e));
            } else if !self.serves(c) || c.precision != Precision::F64 {
                outcome[k] = Some(Err(crate::Error::invalid(
                    "common-random-numbers",
                    "a lockstep column needs f64 cells of this column",
                )));
            }
        }
        let data: Vec<CellData> = cells
            .iter()
            .map(|c| {
                let (clean, observed, noisy) = training_labels(c);
                let (coef_plus, coef_minus) = signal_coefficients(&clean, t, c.signal_norm, c.rho);
                let scores = self.scores(&self.train_noise, &coef_plus, &coef_minus, c.signal_norm);
                CellData {
                    labels: observed,
                    noisy,
                    coef_plus,
                    coef_minus,
                    scores,
                }
            })
            .collect();
        // C (rows x r) with the row stride of the noise projections.
        let coords = &self.train_noise.rows[r..];
        // `op(C) X` into `out`, for `X` with one column per cell.
        let coords_times = |trans: Transpose, x: &[f64], out: &mut [f64]| {
            let c = MatRef::with_ld(coords, rows, r, width).op(trans);
            let (inner, outer) = (c.cols(), c.rows());
            kernels::gemm(
                1.0,
                c,
                MatRef::new(x, inner, kk),
                0.0,
                MatMut::new(out, outer, kk),
            );
        };
        let (c_plus, c_minus) = (&self.plus[r..2 * r], &self.minus[r..2 * r]);
        // States: b as the columns of an r x K matrix, D per cell.
        let mut b = vec![0.0f64; r * kk];
        let mut d = vec![vec![0.0f64; r * r]; kk];
        let mut gb = vec![0.0f64; r * kk];
        let mut v = vec![0.0f64; r * kk];
        let mut dgb_all = vec![0.0f64; r * kk];
        let mut z_all = vec![0.0f64; rows * kk];
        let mut delta_all = vec![0.0f64; rows * kk];
        let mut a_all = vec![0.0f64; r * kk];
        let mut first_fit: Vec<Option<usize>> = vec![None; kk];
        // A non-finite entry of a cell's D written by the last update (reported after the
        // check of its `||p||`, as the single-run trainer orders them).
        let mut bad_d: Vec<Option<f64>> = vec![None; kk];
        let mut last_logits: Vec<Vec<f64>> = vec![Vec::new(); kk];
        let (mut z, mut attention, mut delta, mut column) = (
            vec![0.0; rows],
            vec![0.0; rows],
            vec![0.0; rows],
            vec![0.0; r],
        );
        let live = |outcome: &[Option<Result<CellOutcome>>], k: usize| outcome[k].is_none();
        for step in 0..=steps {
            // Gb for every cell, then v = (I + D) G b.
            kernels::gemm(
                1.0,
                MatRef::new(&self.gram, r, r),
                MatRef::new(&b, r, kk),
                0.0,
                MatMut::new(&mut gb, r, kk),
            );
            // The state the last update produced, charged to that update's step: `||p||^2 =
            // b^T G b` as the final evaluation computes it, then the entries of D.
            if step > 0 {
                for kc in 0..kk {
                    if !live(&outcome, kc) {
                        continue;
                    }
                    let p_sq: f64 = (0..r).map(|j| b[j * kk + kc] * gb[j * kk + kc]).sum();
                    let quantity = if !p_sq.is_finite() {
                        Some((
                            "||p|| after the update",
                            (if p_sq < 0.0 { 0.0 } else { p_sq }).sqrt(),
                        ))
                    } else {
                        bad_d[kc].map(|v| ("W after the update (its coefficients D)", v))
                    };
                    if let Some((quantity, value)) = quantity {
                        outcome[kc] = Some(Err(crate::Error::NonFinite {
                            step: step - 1,
                            quantity: quantity.into(),
                            value,
                        }));
                    }
                }
            }
            for kc in 0..kk {
                for j in 0..r {
                    column[j] = gb[j * kk + kc];
                }
                let dgb = mat_vec(MatRef::new(&d[kc], r, r), &column);
                for j in 0..r {
                    v[j * kk + kc] = column[j] + dgb[j];
                    dgb_all[j * kk + kc] = dgb[j];
                }
            }
            // Logits of every cell: C V plus the signal parts.
            coords_times(Transpose::No, &v, &mut z_all);
            for kc in 0..kk {
                if !live(&outcome, kc) {
                    continue;
                }
                let cell = &data[kc];
                let (sp, sm) = column_dots(c_plus, c_minus, &v, kk, kc);
                for row in 0..rows {
                    z[row] =
                        z_all[row * kk + kc] + cell.coef_plus[row] * sp + cell.coef_minus[row] * sm;
                }
                if let Some(bad) = z.iter().find(|x| !x.is_finite()) {
                    outcome[kc] = Some(Err(crate::Error::NonFinite {
                        step,
                        quantity: "training token logit".into(),
                        value: *bad,
                    }));
                    continue;
                }
                let loss = loss_and_delta(
                    t,
                    &z,
                    &cell.scores,
                    &cell.labels,
                    &mut attention,
                    &mut delta,
                );
                if first_fit[kc].is_none() {
                    let fitted = attention
                        .chunks_exact(t)
                        .zip(cell.scores.chunks_exact(t))
                        .zip(&cell.labels)
                        .all(|((s, u), y)| y * kernels::dot(s, u) > 0.0);
                    if fitted {
                        first_fit[kc] = Some(step);
                    }
                }
                if step == steps {
                    last_logits[kc] = z.clone();
                } else if let Err(err) = check_training_loss(step, loss) {
                    outcome[kc] = Some(Err(err));
                }
                for row in 0..rows {
                    delta_all[row * kk + kc] = if outcome[kc].is_none() {
                        delta[row]
                    } else {
                        0.0
                    };
                }
            }
            if step == steps {
                break;
            }
            // a = coords^T delta for every cell: C^T Delta plus the signal parts.
            coords_times(Transpose::Yes, &delta_all, &mut a_all);
            for kc in 0..kk {
                if !live(&outcome, kc) {
                    continue;
                }
                let cell = &data[kc];
                let (dp, dm) = column_dots(&cell.coef_plus, &cell.coef_minus, &delta_all, kk, kc);
                let a: Vec<f64> = (0..r)
                    .map(|j| a_all[j * kk + kc] + dp * c_plus[j] + dm * c_minus[j])
                    .collect();
                let old_b: Vec<f64> = (0..r).map(|j| b[j * kk + kc]).collect();
                // b' = b - lr (a + D^T a), D' = D - lr a b^T with the old b, in one pass over D
                // (D^T a = sum_i a_i D_i, each row read before its update): the cells' D
                // (r x r each, 210 KB at r = 162) do not fit in L2 together, and passes over
                // them are a large part of a step.
                let lr = cells[kc].lr;
                let mut step_b = a.clone();
                let mut d_finite = true;
                for (row, &ai) in d[kc].chunks_exact_mut(r).zip(&a) {
                    kernels::axpy(ai, row, &mut step_b);
                    d_finite &= kernels::axpy_finite(-lr * ai, &old_b, row);
                }
                if !d_finite {
                    bad_d[kc] = d[kc].iter().copied().find(|v| !v.is_finite());
                }
                for j in 0..r {
                    b[j * kk + kc] = old_b[j] - lr * step_b[j];
                }
            }
        }
        // Final evaluation: test logits of every cell from one product with the noise rows.
        let test_rows = self.test_noise.rows.len() / width;
        let mut w = vec![0.0f64; 2 * r * kk];
        for kc in 0..kk {
            for j in 0..r {
                w[j * kk + kc] = b[j * kk + kc];
                w[(r + j) * kk + kc] = dgb_all[j * kk + kc];
            }
        }
        let mut zt_all = vec![0.0f64; test_rows * kk];
        kernels::gemm(
            1.0,
            MatRef::with_ld(&self.test_noise.rows, test_rows, 2 * r, width),
            MatRef::new(&w, 2 * r, kk),
            0.0,
            MatMut::new(&mut zt_all, test_rows, kk),
        );
        let test_labels = balanced_labels(self.column.test_size);
        let mut clean_test = Vec::new();
        for (kc, config) in cells.iter().enumerate() {
            if !live(&outcome, kc) {
                continue;
            }
            if clean_test.is_empty() {
                clean_test = test_labels.clone();
            }
            let (tp, tm) = signal_coefficients(&clean_test, t, config.signal_norm, config.rho);
            let test_scores = self.scores(&self.test_noise, &tp, &tm, config.signal_norm);
            let signal = |e: &[f64]| -> f64 {
                (0..r)
                    .map(|j| e[j] * w[j * kk + kc] + e[r + j] * w[(r + j) * kk + kc])
                    .sum()
            };
            let (sp, sm) = (signal(&self.plus), signal(&self.minus));
            let test_logits: Vec<f64> = (0..test_rows)
                .map(|row| zt_all[row * kk + kc] + tp[row] * sp + tm[row] * sm)
                .collect();
            let bk: Vec<f64> = (0..r).map(|j| b[j * kk + kc]).collect();
            let gbk: Vec<f64> = (0..r).map(|j| gb[j * kk + kc]).collect();
            let p_sq: f64 = bk.iter().zip(&gbk).map(|(x, y)| x * y).sum();
            let mut dg = vec![0.0; r * r];
            kernels::gemm(
                1.0,
                MatRef::new(&d[kc], r, r),
                MatRef::new(&self.gram, r, r),
                0.0,
                MatMut::new(&mut dg, r, r),
            );
            let w_sq: f64 = dg.iter().zip(&d[kc]).map(|(x, y)| x * y).sum();
            let clamp = |x: f64| if x < 0.0 { 0.0 } else { x };
            let cell = &data[kc];
            let labels = Labels {
                train: cell.labels.clone(),
                clean: Vec::new(),
                noisy: cell.noisy.clone(),
                test: test_labels.clone(),
            };
            let train = Readout::of_logits(t, std::mem::take(&mut last_logits[kc]), &cell.scores);
            let test = Readout::of_logits(t, test_logits, &test_scores);
            let record = metrics::evaluate(
                &labels,
                t,
                (&train, &test),
                steps,
                0.0,
                StateNorms {
                    p_norm: clamp(p_sq).sqrt(),
                    w_delta_norm: clamp(w_sq).sqrt(),
                },
            );
            outcome[kc] = Some(match first_non_finite(&record) {
                Some((quantity, value)) => Err(crate::Error::NonFinite {
                    step: steps,
                    quantity: quantity.into(),
                    value,
                }),
                None => Ok(CellOutcome {
                    observed_regime: classify(&record),
                    final_metrics: record,
                    first_all_fitted_step: first_fit[kc],
                }),
            });
        }
        outcome
            .into_iter()
            .map(|o| o.expect("every cell has an outcome"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{run, RunOptions, RunResult};
    use std::sync::Arc;

    /// The run of one cell of `column`, through the pipeline of every run.
    fn cell_run(column: &Arc<ColumnStartup>, config: &RunConfig) -> Result<RunResult> {
        let options = RunOptions {
            column: Some(Arc::clone(column)),
            ..RunOptions::default()
        };
        run(config.clone(), options)
    }

    /// `(signal_norm, rho, eta)` of the cells the shared start-up serves in the tests.
    const CELLS: [(f64, f64, f64); 3] = [(20.0, 0.1, 0.2), (3.0, 0.3, 0.0), (7.5, 0.05, 0.1)];

    /// Asserts that two evaluations agree: losses and norms to `rel` (relative, absolute below
    /// 1), accuracies exactly.
    fn assert_records_agree(x: &EvalRecord, y: &EvalRecord, rel: f64, context: &str) {
        for (u, v) in [
            (x.train_loss, y.train_loss),
            (x.test_loss, y.test_loss),
            (x.p_norm, y.p_norm),
            (x.w_delta_norm, y.w_delta_norm),
        ] {
            assert!(
                (u - v).abs() <= rel * v.abs().max(1.0),
                "{context}: {u} vs {v}"
            );
        }
        assert_eq!(
            (x.train_acc, x.test_acc),
            (y.train_acc, y.test_acc),
            "{context}"
        );
    }

    /// A cell run from the shared start-up follows the independent run with the same seed.
    #[test]
    fn shared_cells_match_independent_runs() {
        let base = RunConfig {
            dim: 200,
            test_size: 40,
            steps: 60,
            eval_every: 20,
            ..RunConfig::default()
        };
        // Test tokens generated and projected, as the standalone runs do with `TestDraw::Tokens`.
        let shared = Arc::new(ColumnStartup::with_test_draw(&base, TestDraw::Tokens).unwrap());
        assert_eq!(shared.rank(), 20 * 8 + 2);
        for (signal_norm, rho, eta) in CELLS {
            let config = RunConfig {
                signal_norm,
                rho,
                eta,
                ..base.clone()
            };
            let a = cell_run(&shared, &config).unwrap();
            let options = RunOptions {
                test_draw: TestDraw::Tokens,
                ..RunOptions::default()
            };
            let b = run(config.clone(), options).unwrap();
            for (x, y) in a.records.iter().zip(&b.records) {
                assert_records_agree(x, y, 1e-8, &format!("{signal_norm} {rho} {eta}"));
            }
        }
        // The lockstep column agrees with the cells run one by one.
        let cells: Vec<RunConfig> = CELLS
            .iter()
            .map(|&(signal_norm, rho, eta)| RunConfig {
                signal_norm,
                rho,
                eta,
                eval_every: 60,
                ..base.clone()
            })
            .collect();
        let shared = Arc::new(ColumnStartup::new(&cells[0]).unwrap());
        for (config, outcome) in cells.iter().zip(shared.run_column(&cells)) {
            let outcome = outcome.unwrap();
            let single = cell_run(&shared, config).unwrap();
            let (x, y) = (&outcome.final_metrics, &single.summary.final_metrics);
            assert_records_agree(x, y, 1e-9, "lockstep column");
            let (u, v) = (
                x.attention_clean.unwrap().relevant,
                y.attention_clean.unwrap().relevant,
            );
            assert!((u - v).abs() <= 1e-9 * v.abs().max(1.0), "{u} vs {v}");
            assert_eq!(
                outcome.first_all_fitted_step,
                single.summary.first_all_fitted_step
            );
            assert_eq!(outcome.observed_regime, single.summary.observed_regime);
        }
        let other = RunConfig { dim: 201, ..base };
        assert!(cell_run(&shared, &other).is_err());
    }

    /// A cell that diverges fails at the gradient step whose update produced the non-finite
    /// value, in the lockstep column as in a run of its own.
    #[test]
    fn a_diverging_cell_names_its_gradient_step() {
        let base = RunConfig {
            dim: 60,
            test_size: 10,
            steps: 30,
            eval_every: 30,
            lr: 1e300,
            ..RunConfig::default()
        };
        let cells = vec![
            base.clone(),
            RunConfig {
                signal_norm: 5.0,
                ..base.clone()
            },
        ];
        let shared = Arc::new(ColumnStartup::new(&cells[0]).unwrap());
        let mut errors: Vec<crate::Error> = shared
            .run_column(&cells)
            .into_iter()
            .map(|o| o.expect_err("diverges"))
            .collect();
        errors.push(cell_run(&shared, &cells[1]).expect_err("diverges"));
        for err in &errors {
            match err {
                crate::Error::NonFinite { step, quantity, .. } => {
                    assert_eq!(*step, 0, "{err}");
                    assert!(quantity.contains("after the update"), "{err}");
                }
                other => panic!("{other}"),
            }
        }
    }

    /// The test noise drawn in the subspace has the law of the projected test noise: the
    /// empirical covariances of the two start-ups' test noise rows (both estimates of
    /// `sigma^2 P^T P`, same basis) agree entrywise within sampling error, and would not if a
    /// part of the law were missing (the `H` block outside the span of `B`, or sigma).
    #[test]
    fn drawn_test_noise_has_the_projected_law() {
        let config = RunConfig {
            samples: 4,
            tokens: 4,
            dim: 60,
            sigma: 1.5,
            test_size: 3000,
            steps: 1,
            ..RunConfig::default()
        };
        let drawn = ColumnStartup::with_test_draw(&config, TestDraw::Subspace).unwrap();
        let projected = ColumnStartup::with_test_draw(&config, TestDraw::Tokens).unwrap();
        assert_eq!(drawn.timings.test_draw, TestDraw::Subspace);
        assert_eq!(projected.timings.test_draw, TestDraw::Tokens);
        // Training projections and Gram matrix do not depend on the test draw.
        assert_eq!(drawn.train_noise.rows, projected.train_noise.rows);
        assert_eq!(drawn.gram, projected.gram);
        let width = 2 * drawn.rank() + 1;
        let covariance = |rows: &[f64]| {
            let m = rows.len() / width;
            let mut c = vec![0.0; width * width];
            for row in rows.chunks_exact(width) {
                for i in 0..width {
                    for j in 0..width {
                        c[i * width + j] += row[i] * row[j];
                    }
                }
            }
            c.iter().map(|v| v / m as f64).collect::<Vec<f64>>()
        };
        let (cd, cp) = (
            covariance(&drawn.test_noise.rows),
            covariance(&projected.test_noise.rows),
        );
        let m = (drawn.test_noise.rows.len() / width) as f64;
        let mut worst: f64 = 0.0;
        let r = drawn.rank();
        let mut h_variance = 0.0;
        for i in 0..width {
            for j in 0..width {
                // Standard error of a covariance estimate of a Gaussian pair, for the difference
                // of two independent estimates.
                let se = ((cp[i * width + i] * cp[j * width + j] + cp[i * width + j].powi(2)) / m
                    * 2.0)
                    .sqrt()
                    .max(1e-12);
                worst = worst.max((cd[i * width + j] - cp[i * width + j]).abs() / se);
            }
            if i < r {
                h_variance += cp[i * width + i];
            }
        }
        assert!(
            worst < 6.0,
            "largest covariance difference {worst:.2} standard errors"
        );
        // The H block's variance is mostly outside span(B): a law without it would be far off.
        let inside: f64 = (0..r)
            .map(|i| {
                (0..r)
                    .map(|j| {
                        let g = drawn.gram[i * r + j];
                        g * g
                    })
                    .sum::<f64>()
            })
            .sum::<f64>()
            * config.sigma.powi(2);
        assert!(
            inside < 0.8 * h_variance,
            "in-span part {inside} of the h variance {h_variance}"
        );
    }
}
