#![no_main]
//! GEMV (both orientations) and GER in f32 and f64 against the f64 reference on arbitrary small
//! shapes, leading dimensions and alpha / beta (including 0: y must not be read then).

use arbitrary::Arbitrary;
use benign_kernels::{reference, Float, Transpose, MatMut, MatRef};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    m: u8,
    n: u8,
    lda_pad: u8,
    transpose: bool,
    alpha: i8,
    beta: i8,
    values: Vec<i8>,
}

fn run<T: Float>(input: &Input) {
    let (m, n) = (input.m as usize % 70, input.n as usize % 70);
    let lda = n + input.lda_pad as usize % 9;
    let alpha = input.alpha as f64 / 8.0;
    let beta = input.beta as f64 / 8.0;
    let mut it = input.values.iter().cycle().map(|&v| v as f64 / 64.0);
    let mut take = |len: usize| -> Vec<f64> {
        if input.values.is_empty() {
            vec![0.5; len]
        } else {
            (0..len).map(|_| it.next().unwrap()).collect()
        }
    };
    let a = take(if m == 0 { 0 } else { (m - 1) * lda + n });
    let ta = if input.transpose {
        Transpose::Yes
    } else {
        Transpose::No
    };
    let (xl, yl, k) = if input.transpose {
        (m, n, m)
    } else {
        (n, m, n)
    };
    let x = take(xl);
    let y0 = take(yl);
    let to_t = |v: &[f64]| -> Vec<T> { v.iter().map(|&e| T::from_f64(e)).collect() };
    // Inputs are k/64 with |k| <= 128: exact in f32 and f64.
    let (at, xt) = (to_t(&a), to_t(&x));
    let mut yt = to_t(&y0);
    if beta == 0.0 {
        yt.iter_mut().for_each(|v| *v = T::from_f64(f64::NAN));
    }
    benign_kernels::gemv(T::from_f64(alpha), MatRef::with_ld(&at, m, n, lda).op(ta), &xt, T::from_f64(beta), &mut yt);
    let mut want = y0.clone();
    reference::gemv(alpha, MatRef::with_ld(&a, m, n, lda).op(ta), &x, beta, &mut want);
    let abs_a: Vec<f64> = a.iter().map(|v| v.abs()).collect();
    let abs_x: Vec<f64> = x.iter().map(|v| v.abs()).collect();
    let mut scale: Vec<f64> = y0.iter().map(|v| v.abs()).collect();
    reference::gemv(alpha.abs(), MatRef::with_ld(&abs_a, m, n, lda).op(ta), &abs_x, beta.abs(), &mut scale);
    let eps = T::EPSILON.to_f64();
    for (i, (&g, &w)) in yt.iter().zip(&want).enumerate() {
        let tol = (k as f64 + 4.0) * eps * scale[i] + 1e-300;
        assert!(
            (g.to_f64() - w).abs() <= tol,
            "gemv {ta:?} {m}x{n} lda {lda} ({}): y[{i}] = {g} vs {w}",
            T::NAME
        );
    }

    let mut ag = at.clone();
    let (xg, yg) = (take(m), take(n));
    benign_kernels::ger(T::from_f64(alpha), &to_t(&xg), &to_t(&yg), MatMut::with_ld(&mut ag, m, n, lda));
    let mut want = a.clone();
    reference::ger(alpha, &xg, &yg, MatMut::with_ld(&mut want, m, n, lda));
    for (p, (&g, &w)) in ag.iter().zip(&want).enumerate() {
        let tol = 3.0 * eps * (a[p].abs() + (w - a[p]).abs()) + 1e-300;
        assert!(
            (g.to_f64() - w).abs() <= tol,
            "ger {m}x{n} lda {lda} ({}): a[{p}] = {g} vs {w}",
            T::NAME
        );
    }
}

fuzz_target!(|input: Input| {
    run::<f32>(&input);
    run::<f64>(&input);
});
