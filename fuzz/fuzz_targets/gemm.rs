//! Fuzz `gemm` (f32 and f64) against the f64 reference: padded leading dimensions,
//! transposes, alpha and beta (beta == 0 with NaN in C), and two kinds of shape:
//! - small: every dimension up to 70 (the direct path, and the packed one at the top);
//! - blocked (every other input, by `blocked`): `m` and `k` just below, at or just above one or
//!   two MC rows / KC depths of the running kernel's blocking, and `n` at least large enough
//!   for the product to take the packed path, so the row-block and depth-panel edges (and the
//!   `beta` of later depth panels) are crossed.
//!
//! Counted once by instrumenting this target (`-seed=1 -runs=4000`): 553 of the first 1000
//! inputs it decoded (55%) reached the packed path (`use_direct` false).
//!
//! Error bound as in `kernels/tests/gemm.rs`: `|c - ref| <= 2 (k + 2) eps (|alpha| sum_p
//! |a_ip||b_pj| + |beta c_ij|)`.
#![no_main]

use arbitrary::Arbitrary;
use benign_kernels::gemm::{blocking, kernel_variant, DIRECT_MAX_MULADDS};
use benign_kernels::{gemm, reference, Float, Transpose, MatMut, MatRef};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    double: bool,
    /// Shapes at the MC / KC block edges (module documentation).
    blocked: bool,
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

/// `edge * (1 + byte % 2) - 1 + (byte / 2) % 4`: one less than, at, or one to two more than
/// one or two block edges.
fn near_edge(edge: usize, byte: u8) -> usize {
    edge * (1 + byte as usize % 2) - 1 + (byte as usize / 2) % 4
}

/// `(m, n, k)` of the input (module documentation).
fn shape<T: Float>(input: &Input) -> (usize, usize, usize) {
    let n = input.n as usize % (MAX_DIM + 1);
    if !input.blocked {
        let m = input.m as usize % (MAX_DIM + 1);
        let k = input.k as usize % (MAX_DIM + 1);
        return (m, n, k);
    }
    let block = blocking::<T>(kernel_variant());
    let m = near_edge(block.mc, input.m);
    let k = near_edge(block.kc, input.k);
    // Above DIRECT_MAX_MULADDS; m > DIRECT_MAX_ROWS, so B transposed stays packed too.
    (m, n.max(DIRECT_MAX_MULADDS / (m * k) + 1), k)
}

fn check<T: Float>(input: &Input) {
    let (m, n, k) = shape::<T>(input);
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
    gemm(T::from_f64(alpha), MatRef::op_with_ld(ta, &cast(&a), m, k, lda), MatRef::op_with_ld(tb, &cast(&b), k, n, ldb), T::from_f64(beta), MatMut::with_ld(&mut got, m, n, ldc));

    let mut expected = c.clone();
    reference::gemm(alpha, MatRef::op_with_ld(ta, &a, m, k, lda), MatRef::op_with_ld(tb, &b, k, n, ldb), beta, MatMut::with_ld(&mut expected, m, n, ldc));
    let abs = |v: &[f64]| v.iter().map(|x| x.abs()).collect::<Vec<f64>>();
    let mut magnitude = vec![0.0; m * ldc];
    reference::gemm(1.0, MatRef::op_with_ld(ta, &abs(&a), m, k, lda), MatRef::op_with_ld(tb, &abs(&b), k, n, ldb), 0.0, MatMut::with_ld(&mut magnitude, m, n, ldc));
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
