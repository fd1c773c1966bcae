#![no_main]
//! Softmax invariants on arbitrary rows: outputs in [0, 1]; each finite row sums to 1; adding
//! an exactly representable constant to a row changes no bit; huge and -inf logits; an all
//! -inf row gives zeros (log-softmax: -inf) and never poisons other rows; NaN / +inf rows give
//! NaN rows only. Also f32 and f64 against the f64 reference.

use arbitrary::Arbitrary;
use benign_kernels::reference;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    cols: u8,
    /// Logits as small integers over 16 (so adding `shift` is exact), or special values.
    logits: Vec<(i16, u8)>,
    shift: i8,
}

fn decode(v: i16, kind: u8) -> f32 {
    match kind % 16 {
        0 => f32::NEG_INFINITY,
        1 => 1e30,
        2 => -1e30,
        3 => f32::NAN,
        4 => f32::INFINITY,
        _ => v as f32 / 16.0,
    }
}

fuzz_target!(|input: Input| {
    let cols = (input.cols as usize % 40) + 1;
    let rows = input.logits.len() / cols;
    if rows == 0 {
        return;
    }
    let mut x: Vec<f32> = input.logits[..rows * cols]
        .iter()
        .map(|&(v, k)| decode(v, k))
        .collect();
    // Make row 0 all -inf when the shift is odd: it must not affect the others.
    if input.shift % 2 != 0 {
        x[..cols].iter_mut().for_each(|v| *v = f32::NEG_INFINITY);
    }
    let mut y = vec![0.0f32; x.len()];
    benign_kernels::softmax_rows(cols, &x, &mut y);
    let mut ly = vec![0.0f32; x.len()];
    benign_kernels::log_softmax_rows(cols, &x, &mut ly);
    let tol = (cols as f32 + 16.0) * f32::EPSILON;
    for (r, ((xr, yr), lr)) in x
        .chunks(cols)
        .zip(y.chunks(cols))
        .zip(ly.chunks(cols))
        .enumerate()
    {
        let poisoned = xr.iter().any(|v| v.is_nan() || *v == f32::INFINITY);
        if poisoned {
            assert!(
                yr.iter().all(|v| v.is_nan()),
                "row {r}: NaN/+inf row must be NaN: {yr:?}"
            );
            continue;
        }
        if xr.iter().all(|&v| v == f32::NEG_INFINITY) {
            assert!(
                yr.iter().all(|&v| v == 0.0),
                "row {r}: all -inf row must be zeros"
            );
            assert!(
                lr.iter().all(|&v| v == f32::NEG_INFINITY),
                "row {r}: log of all -inf row"
            );
            continue;
        }
        assert!(
            yr.iter().all(|&v| (0.0..=1.0).contains(&v)),
            "row {r}: {yr:?}"
        );
        let s: f32 = yr.iter().sum();
        assert!((s - 1.0).abs() <= tol, "row {r} sums to {s}");
        for (&p, &l) in yr.iter().zip(lr) {
            assert!(
                l <= 0.0 && (p == 0.0 || (l.exp() - p).abs() <= tol * 4.0),
                "row {r}: log {l} vs p {p}"
            );
        }
    }
    // Shift invariance: every finite logit is k/16 with |k| < 2^15, so adding an integer shift
    // is exact in f32 and x - max is unchanged; huge (1e30) logits absorb the shift, also
    // leaving x - max unchanged whenever the max is huge. Rows mixing 1e30 with finite values
    // where the max is finite cannot occur (1e30 is the max), so compare every row.
    let shift = input.shift as f32;
    let xs: Vec<f32> = x
        .iter()
        .map(|&v| if v.abs() < 1e29 { v + shift } else { v })
        .collect();
    let mut ys = vec![0.0f32; x.len()];
    benign_kernels::softmax_rows(cols, &xs, &mut ys);
    for (r, (a, b)) in y.chunks(cols).zip(ys.chunks(cols)).enumerate() {
        let huge_and_finite = x[r * cols..(r + 1) * cols].iter().any(|v| v.abs() >= 1e29)
            && x[r * cols..(r + 1) * cols].iter().any(|v| v.abs() < 1e29);
        if huge_and_finite {
            continue; // the shift is not applied uniformly to such a row
        }
        for (p, q) in a.iter().zip(b) {
            assert!(
                p.to_bits() == q.to_bits() || (p.is_nan() && q.is_nan()),
                "row {r}: shift changed {p} to {q}"
            );
        }
    }
    // f32 against the f64 reference on the same (widened) logits: relative error within the
    // row-wise tests' bound, plus an absolute floor for results that underflow f32.
    let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let mut want32 = vec![0.0f64; x.len()];
    reference::softmax_rows(cols, &x64, &mut want32);
    for (i, (&g, &w)) in y.iter().zip(&want32).enumerate() {
        let g = g as f64;
        assert!(
            (g.is_nan() && w.is_nan()) || (g - w).abs() <= tol as f64 * w.abs() + 1e-37,
            "f32 element {i}: {g} vs {w}"
        );
    }
    // f64 against the reference.
    let mut y64 = vec![0.0f64; x.len()];
    benign_kernels::softmax_rows(cols, &x64, &mut y64);
    let mut want = vec![0.0f64; x.len()];
    reference::softmax_rows(cols, &x64, &mut want);
    let tol64 = (cols as f64 + 16.0) * f64::EPSILON;
    for (i, (&g, &w)) in y64.iter().zip(&want).enumerate() {
        assert!(
            g == w || (g.is_nan() && w.is_nan()) || (g - w).abs() <= tol64 * w.abs() + 1e-300,
            "f64 element {i}: {g} vs {w}"
        );
    }
});
