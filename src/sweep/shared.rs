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
//! A = W_0^T B,  G = A^T A,  H = W_0 A                          (two streamed passes over W_0)
//! [H | B | nu_1]^T eps   for every training and test noise token  (nu_1 = (e_+ - e_-)/sqrt 2)
//! [H | B | nu_1]^T e_+, [H | B | nu_1]^T e_-
//! ```
//!
//! and a cell combines them: `h_x = h_eps + c h_e`, `c_x = c_eps + c c_e`, and
//! `u_x = (nu_1^T eps + c nu_1^T e) / ||mu||` since `nu = nu_1 / ||mu||`. The cell's run then
//! follows exactly the dynamics of an independent run with the column's seed (the same data and
//! `W_0`, another basis of the same span), to rounding.

use std::time::Instant;

use benign_kernels::{self as k, Transpose};

use crate::synthetic::data::{balanced_labels, fill_samples, training_labels, Signals};
use crate::synthetic::init::InitSource;
use crate::synthetic::run::{run_prepared, PreparedRun};
use crate::synthetic::subspace::{
    orthonormal_basis, StartupTimings, SubspaceParts, SubspaceTrainer,
};
use crate::synthetic::{Precision, RunConfig, RunResult, Trainer};
use crate::Result;

/// Bytes of `W_0` rows generated at once.
const INIT_BLOCK_BYTES: usize = 32 << 20;
/// Bytes of test tokens generated at once.
const TEST_CHUNK_BYTES: usize = 32 << 20;

/// Projections of one token part onto `[H | B | nu_1]`: `width = 2r + 1` values per row.
struct Projected {
    /// Row-major, `width` columns.
    rows: Vec<f64>,
}

/// The start-up shared by a column: noise projections and the projections of `e_+`, `e_-`.
pub struct SharedStartup {
    /// The column's configuration (any cell's; only the shared fields are used).
    column: RunConfig,
    rank: usize,
    gram: Vec<f64>,
    train_noise: Projected,
    test_noise: Projected,
    /// `[H | B | nu_1]^T e_+` and `... e_-`.
    plus: Vec<f64>,
    minus: Vec<f64>,
    pub timings: StartupTimings,
    pub seconds: f64,
}

impl SharedStartup {
    /// The start-up of the column of `config` (its seed, dimension, sizes, sigma, ...).
    pub fn new(config: &RunConfig) -> Result<Self> {
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
        // Training noise: the tokens of the column's runs without their signal parts.
        let (clean, _, _) = training_labels(config);
        let mut noise = vec![0.0; n * t * d];
        fill_samples(config, &silent, config.seed, 0, &clean, &mut noise);

        let clock = Instant::now();
        let mut columns: Vec<&[f64]> = noise.chunks_exact(d).collect();
        columns.push(&unit.mu_plus);
        columns.push(&unit.mu_minus);
        let basis = orthonormal_basis(&columns);
        let r = basis.len();
        let width = 2 * r + 1;
        // P = [H | B | nu_1], d x (2r + 1).
        let mut projector = vec![0.0f64; d * width];
        for (j, q) in basis.iter().enumerate() {
            for (i, &v) in q.iter().enumerate() {
                projector[i * width + r + j] = v;
            }
        }
        drop(basis);
        for (i, &v) in unit.nu.iter().enumerate() {
            projector[i * width + 2 * r] = v;
        }
        let basis_seconds = clock.elapsed().as_secs_f64();

        let clock = Instant::now();
        let init = InitSource::from_seed(config.seed, d);
        let block_rows = (INIT_BLOCK_BYTES / (8 * d)).clamp(1, d);
        let mut w0_block = vec![0.0f64; block_rows * d];
        let mut a = vec![0.0f64; d * r];
        for first in (0..d).step_by(block_rows) {
            let m = block_rows.min(d - first);
            let blk = &mut w0_block[..m * d];
            init.fill_rows(first, blk);
            k::gemm(
                Transpose::Yes,
                Transpose::No,
                d,
                r,
                m,
                1.0,
                blk,
                d,
                &projector[first * width + r..],
                width,
                if first == 0 { 0.0 } else { 1.0 },
                &mut a,
                r,
            );
        }
        let mut gram = vec![0.0f64; r * r];
        k::gemm(
            Transpose::Yes,
            Transpose::No,
            r,
            r,
            d,
            1.0,
            &a,
            r,
            &a,
            r,
            0.0,
            &mut gram,
            r,
        );
        for first in (0..d).step_by(block_rows) {
            let m = block_rows.min(d - first);
            let blk = &mut w0_block[..m * d];
            init.fill_rows(first, blk);
            k::gemm(
                Transpose::No,
                Transpose::No,
                m,
                r,
                d,
                1.0,
                blk,
                d,
                &a,
                r,
                0.0,
                &mut projector[first * width..],
                width,
            );
        }
        drop(w0_block);
        drop(a);
        let init_products_seconds = clock.elapsed().as_secs_f64();

        let clock = Instant::now();
        let project = |tokens: &[f64], out: &mut [f64]| {
            let m = tokens.len() / d;
            k::gemm(
                Transpose::No,
                Transpose::No,
                m,
                width,
                d,
                1.0,
                tokens,
                d,
                &projector,
                width,
                0.0,
                out,
                width,
            );
        };
        let mut train_rows = vec![0.0; n * t * width];
        project(&noise, &mut train_rows);
        drop(noise);
        let mut plus = vec![0.0; width];
        project(&unit.mu_plus, &mut plus);
        let mut minus = vec![0.0; width];
        project(&unit.mu_minus, &mut minus);
        // Test noise, chunk by chunk, with the test seed of the column.
        let test_size = config.test_size;
        let test_labels = balanced_labels(test_size);
        let chunk = (TEST_CHUNK_BYTES / (8 * t * d)).max(1);
        let mut buffer = vec![0.0; chunk.min(test_size) * t * d];
        let mut test_rows = vec![0.0; test_size * t * width];
        let test_seed = config.effective_test_seed();
        for (c, labels) in test_labels.chunks(chunk).enumerate() {
            let first = c * chunk;
            let tokens = &mut buffer[..labels.len() * t * d];
            fill_samples(config, &silent, test_seed, first, labels, tokens);
            project(
                tokens,
                &mut test_rows[first * t * width..(first + labels.len()) * t * width],
            );
        }
        let test_projection_seconds = clock.elapsed().as_secs_f64();
        Ok(SharedStartup {
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
            let (same, other) = if y > 0.0 {
                (&self.plus, &self.minus)
            } else {
                (&self.minus, &self.plus)
            };
            for pos in 0..t {
                let row = i * t + pos;
                let base = &noise.rows[row * width..(row + 1) * width];
                let signal: Option<(&Vec<f64>, f64)> = match pos {
                    0 => Some((same, s)),
                    1 => Some((same, config.rho * s)),
                    2 => Some((other, config.rho * s)),
                    _ => None,
                };
                let (hr, cr) = (
                    &mut h[row * r..(row + 1) * r],
                    &mut c[row * r..(row + 1) * r],
                );
                hr.copy_from_slice(&base[..r]);
                cr.copy_from_slice(&base[r..2 * r]);
                let mut score = base[2 * r];
                if let Some((e, coef)) = signal {
                    k::axpy(coef, &e[..r], hr);
                    k::axpy(coef, &e[r..2 * r], cr);
                    score += coef * e[2 * r];
                }
                u[row] = score / s;
            }
        }
        (h, c, u)
    }

    /// Runs one cell of the column; `out_dir` receives the run's files when given.
    pub fn run(
        &self,
        config: &RunConfig,
        out_dir: Option<std::path::PathBuf>,
    ) -> Result<RunResult> {
        config.validate()?;
        if !self.serves(config) {
            return Err(crate::Error::invalid(
                "common-random-numbers",
                "the configuration is not in this column (it differs in more than signal_norm, rho, eta)",
            ));
        }
        let clock = Instant::now();
        let (clean, observed, noisy) = training_labels(config);
        let (_, coords, train_scores) = self.combine(&self.train_noise, &clean, config);
        let test_labels = balanced_labels(config.test_size);
        let (test_h, test_c, test_scores) = self.combine(&self.test_noise, &test_labels, config);
        let parts = SubspaceParts {
            tokens_per_sample: config.tokens,
            rank: self.rank,
            lr: config.lr,
            coords,
            train_scores,
            labels: observed.clone(),
            gram: self.gram.clone(),
            test_h,
            test_c,
            test_scores,
            timings: self.timings.clone(),
        };
        let trainer: Box<dyn Trainer> = match config.precision {
            Precision::F64 => Box::new(SubspaceTrainer::<f64>::from_parts(parts)?),
            Precision::F32 => Box::new(SubspaceTrainer::<f32>::from_parts(parts)?),
        };
        let prepared = PreparedRun {
            trainer,
            train_labels: observed,
            clean_labels: clean,
            noisy,
            test_labels,
            subspace_rank: Some(self.rank),
            data_seconds: 0.0,
            startup_seconds: clock.elapsed().as_secs_f64(),
            startup: Some(self.timings.clone()),
            out_dir,
        };
        run_prepared(config.clone(), prepared, &mut |_, _| {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{run, RunOptions};

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
        let shared = SharedStartup::new(&base).unwrap();
        assert_eq!(shared.rank(), 20 * 8 + 2);
        for (signal_norm, rho, eta) in [(20.0, 0.1, 0.2), (3.0, 0.3, 0.0), (7.5, 0.05, 0.1)] {
            let config = RunConfig {
                signal_norm,
                rho,
                eta,
                ..base.clone()
            };
            let a = shared.run(&config, None).unwrap();
            let b = run(config.clone(), RunOptions::default()).unwrap();
            for (x, y) in a.records.iter().zip(&b.records) {
                for (u, v) in [
                    (x.train_loss, y.train_loss),
                    (x.test_loss, y.test_loss),
                    (x.p_norm, y.p_norm),
                    (x.w_delta_norm, y.w_delta_norm),
                ] {
                    assert!(
                        (u - v).abs() <= 1e-8 * v.abs().max(1.0),
                        "{signal_norm} {rho} {eta}: {u} vs {v}"
                    );
                }
                assert_eq!(x.train_acc, y.train_acc);
                assert_eq!(x.test_acc, y.test_acc);
            }
        }
        let other = RunConfig { dim: 201, ..base };
        assert!(shared.run(&other, None).is_err());
    }
}
