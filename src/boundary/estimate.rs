//! The statistics of a boundary measurement: medians over seeds, percentile-bootstrap intervals,
//! and the power-law fit `log10 SNR* = c + a log10 d + b log10 n`.
//!
//! Values are per-seed transition points in `log10 SNR`, `-inf` / `+inf` for seeds censored
//! below / above the searched range. The median is taken with the censored values in place (a
//! censored seed is on a known side of every point in range), so it is finite while fewer than
//! half the seeds are censored on one side. The bootstrap resamples seeds with replacement within
//! each grid point, from one named random stream in a fixed order, so the intervals are
//! reproducible.
//!
//! The fits use the grid points with a benign band (the upper boundary's median above the
//! lower one's), the same rule applied to each bootstrap replicate's medians.

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::{Boundary, BoundarySpec, ThresholdRecord};

/// Confidence level of every interval.
pub const CONFIDENCE: f64 = 0.95;

/// One boundary at one grid point.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PointEstimate {
    /// Which of the two transitions.
    pub boundary: Boundary,
    /// The grid point's token dimension d.
    pub dim: usize,
    /// The grid point's training-set size n.
    pub samples: usize,
    /// Median over seeds of `log10` of the transition SNR; `None` when half or more of the seeds
    /// are censored on one side.
    pub log10_snr: Option<f64>,
    /// Percentile-bootstrap interval of the median; an end is `None` where it is censored.
    pub ci_low: Option<f64>,
    /// Upper end of that interval.
    pub ci_high: Option<f64>,
    /// Seeds searched at this point.
    pub seeds: usize,
    /// Seeds already switched at the low end of the SNR range.
    pub below_range: usize,
    /// Seeds that never switched within the range.
    pub above_range: usize,
    /// Seeds whose scan switched more than once.
    pub non_monotone: usize,
    /// Whether this `(d, n)` has a benign band: the benign|not-overfitting median above the
    /// harmful|benign one. Without one the model never both fits every label and generalises
    /// at the horizon (e.g. it has not fitted the noisy labels yet at any SNR), neither
    /// boundary is the transition it names, and the point is left out of the fits.
    pub benign_band: bool,
}

/// One fitted exponent (or intercept) with its interval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Coefficient {
    /// The least-squares estimate on the full grid.
    pub value: f64,
    /// Lower end of its percentile-bootstrap interval.
    pub ci_low: f64,
    /// Upper end of that interval.
    pub ci_high: f64,
}

/// `log10 SNR* = intercept + a log10 d + b log10 n` for one boundary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fit {
    /// Which of the two transitions.
    pub boundary: Boundary,
    /// `log10 SNR*` at `d = n = 1`: the unknown constant of the theory's order.
    pub intercept: Coefficient,
    /// `None` when the grid has one dimension only.
    pub a: Option<Coefficient>,
    /// `None` when the grid has one sample size only.
    pub b: Option<Coefficient>,
    /// The theory's exponents, for comparison.
    pub theory_a: f64,
    /// The theory's exponent of n, for comparison with `b`.
    pub theory_b: f64,
    /// Grid points fitted: a finite median and a benign band.
    pub points: usize,
    /// Grid points left out for want of a benign band.
    pub excluded_no_band: usize,
    /// Root mean square residual of the fit, in decades.
    pub rms_residual: f64,
    /// Bootstrap replicates whose fit could be made (enough finite medians).
    pub replicates: usize,
}

/// Everything estimated from a complete set of thresholds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Estimates {
    /// One estimate per boundary and grid point.
    pub points: Vec<PointEstimate>,
    /// One fit per boundary.
    pub fits: Vec<Fit>,
}

/// The median of `values` (sorted in place; `-inf` and `+inf` allowed): the middle value, or the
/// mean of the two middle values (infinite if either is; NaN, no median, for `-inf` and `+inf`).
pub fn median(values: &mut [f64]) -> f64 {
    assert!(!values.is_empty(), "median of no value");
    values.sort_by(f64::total_cmp);
    let m = values.len() / 2;
    if values.len() % 2 == 1 {
        values[m]
    } else {
        0.5 * (values[m - 1] + values[m])
    }
}

/// The `q`-quantile of sorted values (nearest rank below, `q` in [0, 1]).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

/// Least squares `y ~ X beta` by the normal equations (X has at most 3 columns; the columns are
/// centred logs, well conditioned). `None` if the system is singular or underdetermined.
pub fn least_squares(rows: &[Vec<f64>], y: &[f64]) -> Option<Vec<f64>> {
    let k = rows.first()?.len();
    if rows.len() < k {
        return None;
    }
    // Normal equations [X^T X | X^T y], solved by Gaussian elimination with partial pivoting.
    let mut m = vec![vec![0.0; k + 1]; k];
    for (row, &yi) in rows.iter().zip(y) {
        for i in 0..k {
            for j in 0..k {
                m[i][j] += row[i] * row[j];
            }
            m[i][k] += row[i] * yi;
        }
    }
    for col in 0..k {
        let pivot = (col..k).max_by(|&a, &b| m[a][col].abs().total_cmp(&m[b][col].abs()))?;
        if m[pivot][col].abs() < 1e-12 {
            return None;
        }
        m.swap(col, pivot);
        let pivot_row = m[col].clone();
        for (r, row) in m.iter_mut().enumerate() {
            if r != col {
                let f = row[col] / pivot_row[col];
                for (x, p) in row[col..].iter_mut().zip(&pivot_row[col..]) {
                    *x -= f * p;
                }
            }
        }
    }
    Some((0..k).map(|i| m[i][k] / m[i][i]).collect())
}

/// Which exponents a grid can identify: `a` needs two dimensions, `b` two sample sizes.
fn fitted_columns(spec: &BoundarySpec) -> (bool, bool) {
    (spec.dims.len() > 1, spec.samples.len() > 1)
}

/// The fit through `(d, n, log10 SNR*)` points: `[intercept, a?, b?]` and the rms residual, with
/// the logs centred on the grid's means (the intercept is reported at `d = n = 1`).
fn fit_points(points: &[(usize, usize, f64)], columns: (bool, bool)) -> Option<(Vec<f64>, f64)> {
    let (mean_d, mean_n) = (
        points.iter().map(|p| (p.0 as f64).log10()).sum::<f64>() / points.len().max(1) as f64,
        points.iter().map(|p| (p.1 as f64).log10()).sum::<f64>() / points.len().max(1) as f64,
    );
    let rows: Vec<Vec<f64>> = points
        .iter()
        .map(|&(d, n, _)| {
            let mut row = vec![1.0];
            if columns.0 {
                row.push((d as f64).log10() - mean_d);
            }
            if columns.1 {
                row.push((n as f64).log10() - mean_n);
            }
            row
        })
        .collect();
    let y: Vec<f64> = points.iter().map(|p| p.2).collect();
    let beta = least_squares(&rows, &y)?;
    let residual = rows
        .iter()
        .zip(&y)
        .map(|(row, yi)| {
            let fitted: f64 = row.iter().zip(&beta).map(|(x, b)| x * b).sum();
            (yi - fitted).powi(2)
        })
        .sum::<f64>();
    let rms = (residual / y.len() as f64).sqrt();
    // Back from centred logs to the intercept at d = n = 1.
    let mut out = vec![beta[0]];
    let mut next = 1;
    if columns.0 {
        out[0] -= beta[next] * mean_d;
        out.push(beta[next]);
        next += 1;
    }
    if columns.1 {
        out[0] -= beta[next] * mean_n;
        out.push(beta[next]);
    }
    Some((out, rms))
}

/// The per-seed values of one boundary at one grid point.
struct Group {
    boundary: Boundary,
    dim: usize,
    samples: usize,
    values: Vec<f64>,
    non_monotone: usize,
}

/// Per group: whether its grid point has a benign band under `medians` (the upper boundary's
/// median strictly above the lower one's; `+inf` above any finite value).
fn has_band(groups: &[Group], medians: &[f64]) -> Vec<bool> {
    let median_at = |boundary: Boundary, dim: usize, samples: usize| {
        groups
            .iter()
            .zip(medians)
            .find(|(g, _)| g.boundary == boundary && g.dim == dim && g.samples == samples)
            .map_or(f64::NAN, |(_, &m)| m)
    };
    groups
        .iter()
        .map(|g| {
            median_at(Boundary::BenignNotOverfitting, g.dim, g.samples)
                > median_at(Boundary::HarmfulBenign, g.dim, g.samples)
        })
        .collect()
}

/// Estimates every boundary at every grid point, and the fits, from one successful record per
/// search (the caller checks completeness).
pub fn estimate(spec: &BoundarySpec, records: &[ThresholdRecord]) -> Estimates {
    // Per (boundary, grid point): the per-seed values.
    let mut groups: Vec<Group> = Vec::new();
    for boundary in Boundary::ALL {
        for &dim in &spec.dims {
            for &samples in &spec.samples {
                let mut values = Vec::new();
                let mut non_monotone = 0;
                for r in records
                    .iter()
                    .filter(|r| r.dim == dim && r.samples == samples)
                {
                    if let Some(t) = r.threshold(boundary) {
                        values.push(t.value());
                        non_monotone += usize::from(t.scan_switches > 1);
                    }
                }
                groups.push(Group {
                    boundary,
                    dim,
                    samples,
                    values,
                    non_monotone,
                });
            }
        }
    }
    let medians: Vec<f64> = groups
        .iter()
        .map(|g| {
            if g.values.is_empty() {
                f64::NAN
            } else {
                median(&mut g.values.clone())
            }
        })
        .collect();

    // Bootstrap: every group resampled in each replicate, in a fixed order from one stream.
    let mut rng = crate::seed::named_rng(spec.base_seed, "boundary bootstrap");
    let mut replicate_medians: Vec<Vec<f64>> =
        vec![Vec::with_capacity(spec.bootstrap); groups.len()];
    let columns = fitted_columns(spec);
    let mut replicate_fits: Vec<Vec<Vec<f64>>> = vec![Vec::new(); Boundary::ALL.len()];
    let mut resample = Vec::new();
    for _ in 0..spec.bootstrap {
        let mut medians_now = Vec::with_capacity(groups.len());
        for (g, out) in groups.iter().zip(replicate_medians.iter_mut()) {
            let values = &g.values;
            if values.is_empty() {
                medians_now.push(f64::NAN);
                continue;
            }
            resample.clear();
            resample.extend((0..values.len()).map(|_| values[rng.random_range(0..values.len())]));
            let m = median(&mut resample);
            out.push(m);
            medians_now.push(m);
        }
        let band = has_band(&groups, &medians_now);
        for (bi, boundary) in Boundary::ALL.iter().enumerate() {
            let points: Vec<(usize, usize, f64)> = groups
                .iter()
                .zip(&medians_now)
                .zip(&band)
                .filter(|((g, m), &b)| g.boundary == *boundary && m.is_finite() && b)
                .map(|((g, &m), _)| (g.dim, g.samples, m))
                .collect();
            if let Some((beta, _)) = fit_points(&points, columns) {
                replicate_fits[bi].push(beta);
            }
        }
    }
    let (lo_q, hi_q) = ((1.0 - CONFIDENCE) / 2.0, 1.0 - (1.0 - CONFIDENCE) / 2.0);
    let band = has_band(&groups, &medians);
    let points = groups
        .iter()
        .zip(&medians)
        .zip(replicate_medians.iter_mut())
        .zip(&band)
        .map(|(((g, &m), reps), &benign_band)| {
            reps.sort_by(f64::total_cmp);
            let (ci_low, ci_high) = if reps.is_empty() {
                (None, None)
            } else {
                (finite(quantile(reps, lo_q)), finite(quantile(reps, hi_q)))
            };
            PointEstimate {
                boundary: g.boundary,
                dim: g.dim,
                samples: g.samples,
                log10_snr: finite(m),
                ci_low,
                ci_high,
                seeds: g.values.len(),
                below_range: g.values.iter().filter(|v| **v == f64::NEG_INFINITY).count(),
                above_range: g.values.iter().filter(|v| **v == f64::INFINITY).count(),
                non_monotone: g.non_monotone,
                benign_band,
            }
        })
        .collect::<Vec<_>>();

    let mut fits = Vec::new();
    for (bi, boundary) in Boundary::ALL.into_iter().enumerate() {
        let finite_points: Vec<(usize, usize, f64)> = points
            .iter()
            .filter(|p| p.boundary == boundary && p.benign_band)
            .filter_map(|p| p.log10_snr.map(|m| (p.dim, p.samples, m)))
            .collect();
        let excluded_no_band = points
            .iter()
            .filter(|p| p.boundary == boundary && !p.benign_band)
            .count();
        let Some((beta, rms)) = fit_points(&finite_points, columns) else {
            continue;
        };
        let coefficient = |i: usize| {
            let mut reps: Vec<f64> = replicate_fits[bi].iter().map(|b| b[i]).collect();
            reps.sort_by(f64::total_cmp);
            Coefficient {
                value: beta[i],
                ci_low: if reps.is_empty() {
                    f64::NAN
                } else {
                    quantile(&reps, lo_q)
                },
                ci_high: if reps.is_empty() {
                    f64::NAN
                } else {
                    quantile(&reps, hi_q)
                },
            }
        };
        let mut next = 1;
        let mut take = |present: bool| {
            present.then(|| {
                next += 1;
                coefficient(next - 1)
            })
        };
        let a = take(columns.0);
        let b = take(columns.1);
        let (theory_a, theory_b) = boundary.theory_slopes();
        fits.push(Fit {
            boundary,
            intercept: coefficient(0),
            a,
            b,
            theory_a,
            theory_b,
            points: finite_points.len(),
            excluded_no_band,
            rms_residual: rms,
            replicates: replicate_fits[bi].len(),
        });
    }
    Estimates { points, fits }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_with_censored_values() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&mut [f64::NEG_INFINITY, 1.0, 2.0]), 1.0);
        assert_eq!(
            median(&mut [f64::NEG_INFINITY, f64::NEG_INFINITY, 2.0]),
            f64::NEG_INFINITY
        );
        assert_eq!(median(&mut [f64::INFINITY, 1.0]), f64::INFINITY);
        assert_eq!(median(&mut [f64::INFINITY, f64::INFINITY]), f64::INFINITY);
        assert!(median(&mut [f64::INFINITY, f64::NEG_INFINITY]).is_nan());
    }

    #[test]
    fn least_squares_recovers_an_exact_plane() {
        // y = 0.5 - 0.25 x1 + 2 x2 on a non-degenerate design.
        let rows: Vec<Vec<f64>> = [(0.0, 1.0), (1.0, 0.0), (2.0, 3.0), (-1.0, 0.5), (4.0, -2.0)]
            .iter()
            .map(|&(a, b)| vec![1.0, a, b])
            .collect();
        let y: Vec<f64> = rows
            .iter()
            .map(|r| 0.5 - 0.25 * r[1] + 2.0 * r[2])
            .collect();
        let beta = least_squares(&rows, &y).unwrap();
        for (got, want) in beta.iter().zip([0.5, -0.25, 2.0]) {
            assert!((got - want).abs() < 1e-12, "{beta:?}");
        }
        // Two identical columns: singular.
        let singular: Vec<Vec<f64>> = (0..4).map(|i| vec![1.0, i as f64, i as f64]).collect();
        assert!(least_squares(&singular, &[0.0, 1.0, 2.0, 3.0]).is_none());
    }

    #[test]
    fn the_fit_is_reported_at_d_and_n_equal_one() {
        // log10 SNR* = -0.3 - 0.25 log10 d - 0.5 log10 n exactly.
        let points: Vec<(usize, usize, f64)> =
            [(1000, 10), (10_000, 10), (1000, 100), (100_000, 50)]
                .iter()
                .map(|&(d, n)| {
                    (
                        d,
                        n,
                        -0.3 - 0.25 * (d as f64).log10() - 0.5 * (n as f64).log10(),
                    )
                })
                .collect();
        let (beta, rms) = fit_points(&points, (true, true)).unwrap();
        for (got, want) in beta.iter().zip([-0.3, -0.25, -0.5]) {
            assert!((got - want).abs() < 1e-12, "{beta:?}");
        }
        assert!(rms < 1e-12);
    }
}
