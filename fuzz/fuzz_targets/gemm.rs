//! Fuzz `gemm` (f32 and f64) against the f64 reference: arbitrary shapes up to 70, padded
//! leading dimensions, transposes, alpha and beta (beta == 0 with NaN in C).
//!
//! Error bound as in `kernels/tests/gemm.rs`: `|c - ref| <= 2 (k + 2) eps (|alpha| sum_p
//! |a_ip||b_pj| + |beta c_ij|)`.
#![no_main]

use arbitrary::Arbitrary;
use benign_kernels::{gemm, reference, Float, Transpose};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    double: bool,
    transpose_a: bool,
    transpose_b: bool,
    m: u8,
    n: u8,
    k: u8,
    pad_a: u8,
    pad_b: u8,
    pad_c: u8,
    /// Index into `SCALARS`.
    alpha: u8,
    beta: u8,
    /// Seed of the operand values.
    seed: u64,
}

const MAX_DIM: usize = 70;
const SCALARS: [f64; 6] = [0.0, 1.0, -1.0, 0.5, -2.25, 3.0e-3];

/// Values in [-1, 1) from a splitmix64 stream, rounded to `T`.
fn values<T: Float>(count: usize, seed: &mut u64) -> Vec<f64> {
    (0..count)
        .map(|_| {
            *seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = *seed;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            let x = (z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
            T::from_f64(x).to_f64()
        })
        .collect()
}

fn check<T: Float>(input: &Input) {
    let m = input.m as usize % (MAX_DIM + 1);
    let n = input.n as usize % (MAX_DIM + 1);
    let k = input.k as usize % (MAX_DIM + 1);
    let ta = if input.transpose_a {
        Transpose::Yes
    } else {
        Transpose::No
    };
    let tb = if input.transpose_b {
        Transpose::Yes
    } else {
        Transpose::No
    };
    let alpha = SCALARS[input.alpha as usize % SCALARS.len()];
    let beta = SCALARS[input.beta as usize % SCALARS.len()];
    let (a_rows, a_cols) = if input.transpose_a { (k, m) } else { (m, k) };
    let (b_rows, b_cols) = if input.transpose_b { (n, k) } else { (k, n) };
    let lda = a_cols + input.pad_a as usize % 5;
    let ldb = b_cols + input.pad_b as usize % 5;
    let ldc = n + input.pad_c as usize % 5;
    let mut seed = input.seed;
    let a = values::<T>(a_rows * lda, &mut seed);
    let b = values::<T>(b_rows * ldb, &mut seed);
    let mut c = values::<T>(m * ldc, &mut seed);
    if beta == 0.0 {
        c.fill(f64::NAN);
    }
    let cast = |v: &[f64]| v.iter().map(|&x| T::from_f64(x)).collect::<Vec<T>>();
    let mut got = cast(&c);
    gemm(
        ta,
        tb,
        m,
        n,
        k,
        T::from_f64(alpha),
        &cast(&a),
        lda,
        &cast(&b),
        ldb,
        T::from_f64(beta),
        &mut got,
        ldc,
    );

    let mut expected = c.clone();
    reference::gemm(
        ta,
        tb,
        m,
        n,
        k,
        alpha,
        &a,
        lda,
        &b,
        ldb,
        beta,
        &mut expected,
        ldc,
    );
    let abs = |v: &[f64]| v.iter().map(|x| x.abs()).collect::<Vec<f64>>();
    let mut magnitude = vec![0.0; m * ldc];
    reference::gemm(
        ta,
        tb,
        m,
        n,
        k,
        1.0,
        &abs(&a),
        lda,
        &abs(&b),
        ldb,
        0.0,
        &mut magnitude,
        ldc,
    );
    let tol = 2.0 * (k + 2) as f64 * T::EPSILON.to_f64();
    for i in 0..m {
        for j in 0..ldc {
            let index = i * ldc + j;
            let value = got[index].to_f64();
            if j >= n {
                // padding of C is never written
                assert!(
                    value.to_bits() == T::from_f64(c[index]).to_f64().to_bits()
                        || value.is_nan() && c[index].is_nan()
                );
                continue;
            }
            let old = if beta == 0.0 { 0.0 } else { c[index] };
            let bound = tol * (alpha.abs() * magnitude[index] + (beta * old).abs());
            assert!(
                (value - expected[index]).abs() <= bound,
                "{input:?}: C({i}, {j}) = {value}, reference {}, bound {bound}",
                expected[index]
            );
        }
    }
}

fuzz_target!(|input: Input| {
    if input.double {
        check::<f64>(&input);
    } else {
        check::<f32>(&input);
    }
});
