//! The GEMM test harness shared by `tests/gemm.rs` (the packed path) and
//! `tests/gemm_direct.rs` (the direct path), and the small helpers (random inputs, f64 copies,
//! bit patterns, pools) the row-wise and attention tests share: cases, operands with padded leading dimensions,
//! the run under a chosen kernel variant and path, and the check against the f64 reference.
//!
//! Error bound, per element:
//!
//! ```text
//! |c - ref| <= tol * (|alpha| * sum_p |a_ip| |b_pj| + |beta c_ij|),   tol = 2 (k + 2) eps
//! ```
//!
//! A length-k dot product accumulated with FMAs has a worst-case error of about `k u` (`u =
//! eps / 2`) relative to `sum |a||b|`; on top come one rounding for alpha and one for the add
//! to C per depth panel, and one for beta. `(k + 2) eps` is `2 (k + 2) u`, which covers all of
//! them with room to spare; the extra factor 2 keeps the test from depending on luck. Inputs
//! are rounded to the element type first, so the f64 reference sees exactly the same numbers.
//!
//! Padding in A and B (between the width and the leading dimension) is NaN, so a kernel that
//! reads outside the matrix fails; padding in C must come back untouched.

// Each test crate that includes this module uses a different subset of it.
#![allow(dead_code)]

use benign_kernels::gemm::{with_gemm_path, with_kernel_variant, GemmPath, KernelVariant};
use benign_kernels::{gemm, reference, Float, MatMut, MatRef, Transpose};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The kernel variants this CPU runs (`KernelVariant::available`), for the tests to loop over.
/// Without AVX-512 the 512-bit kernels cannot run here, and a green run must not read as
/// having covered them: the first call says so on stderr, written to the stream directly
/// because the test harness captures `eprintln!` of passing tests.
pub fn kernel_variants() -> Vec<KernelVariant> {
    static NOTE: std::sync::Once = std::sync::Once::new();
    let variants = KernelVariant::available();
    if !variants.contains(&KernelVariant::Avx512) {
        NOTE.call_once(|| {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "note: this CPU lacks AVX-512: the AVX-512 kernels were NOT exercised by the {} tests",
                env!("CARGO_CRATE_NAME")
            );
        });
    }
    variants
}

/// `#[test]` functions that each run a check once per kernel variant this CPU has
/// ([`kernel_variants`]): `name => check::<T>(args);` calls `check::<T>(kernel, args)`.
#[allow(unused_macros)] // not every test crate including this module has per-variant tests
macro_rules! tests_per_kernel_variant {
    ($($name:ident => $check:ident::<$t:ty>($($arg:expr),*);)*) => {$(
        #[test]
        fn $name() {
            for kernel in crate::common::kernel_variants() {
                $check::<$t>(kernel $(, $arg)*);
            }
        }
    )*};
}
#[allow(unused_imports)]
pub(crate) use tests_per_kernel_variant;

pub const TRANSPOSES: [(Transpose, Transpose); 4] = [
    (Transpose::No, Transpose::No),
    (Transpose::No, Transpose::Yes),
    (Transpose::Yes, Transpose::No),
    (Transpose::Yes, Transpose::Yes),
];
pub const ALPHAS: [f64; 3] = [0.0, 1.0, -1.7];
pub const BETAS: [f64; 3] = [0.0, 1.0, 0.6];
/// Sentinel stored in the padding of C: must survive the call.
pub const C_PADDING: f64 = 12345.0;

#[derive(Clone, Copy, Debug)]
pub struct Case {
    pub kernel: KernelVariant,
    /// Packed, direct, or the shape rule's choice (`Auto`).
    pub path: GemmPath,
    pub ta: Transpose,
    pub tb: Transpose,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub alpha: f64,
    pub beta: f64,
    /// Extra columns of storage beyond the width, for A, B and C.
    pub pad: usize,
}

impl Case {
    /// A case of `op(A)` m x k times `op(B)` k x n with alpha = -1.7, beta = 0 and no padding;
    /// a test sets what it varies with struct update syntax (`Case { beta, ..Case::new(..) }`).
    pub fn new(
        kernel: KernelVariant,
        path: GemmPath,
        (ta, tb): (Transpose, Transpose),
        (m, n, k): (usize, usize, usize),
    ) -> Case {
        Case {
            kernel,
            path,
            ta,
            tb,
            m,
            n,
            k,
            alpha: -1.7,
            beta: 0.0,
            pad: 0,
        }
    }

    /// A case of a shape grid: the transposes, alpha, beta and the padding cycle with the case's
    /// `index`, so that every combination shows up across the grid.
    pub fn cycled(
        kernel: KernelVariant,
        path: GemmPath,
        mnk: (usize, usize, usize),
        index: usize,
    ) -> Case {
        Case {
            alpha: ALPHAS[(index / 4) % 3],
            beta: BETAS[(index / 12) % 3],
            pad: index % 3,
            ..Case::new(kernel, path, TRANSPOSES[index % 4], mnk)
        }
    }
}

/// Operands of one case: values already rounded to the element type, stored as f64.
pub struct Operands {
    pub a: Vec<f64>,
    pub lda: usize,
    pub b: Vec<f64>,
    pub ldb: usize,
    pub c: Vec<f64>,
    pub ldc: usize,
}

/// A `rows x cols` matrix with leading dimension `ld`: uniform values rounded to `T` inside,
/// `padding` outside.
pub fn matrix<T: Float>(
    rows: usize,
    cols: usize,
    ld: usize,
    padding: f64,
    rng: &mut ChaCha8Rng,
) -> Vec<f64> {
    let mut data = vec![padding; rows * ld];
    for row in data.chunks_mut(ld.max(1)) {
        for x in &mut row[..cols] {
            *x = T::from_f64(rng.random_range(-1.0..1.0)).to_f64();
        }
    }
    data
}

pub fn operands<T: Float>(case: &Case, rng: &mut ChaCha8Rng) -> Operands {
    let (a_rows, a_cols) = if case.ta == Transpose::No {
        (case.m, case.k)
    } else {
        (case.k, case.m)
    };
    let (b_rows, b_cols) = if case.tb == Transpose::No {
        (case.k, case.n)
    } else {
        (case.n, case.k)
    };
    let (lda, ldb, ldc) = (a_cols + case.pad, b_cols + case.pad, case.n + case.pad);
    let a = matrix::<T>(a_rows, a_cols, lda, f64::NAN, rng);
    let b = matrix::<T>(b_rows, b_cols, ldb, f64::NAN, rng);
    let mut c = matrix::<T>(case.m, case.n, ldc, C_PADDING, rng);
    if case.beta == 0.0 {
        // beta == 0 must never read C: NaN must not leak into the result
        for row in c.chunks_mut(ldc.max(1)) {
            row[..case.n].fill(f64::NAN);
        }
    }
    Operands {
        a,
        lda,
        b,
        ldb,
        c,
        ldc,
    }
}

pub fn to_type<T: Float>(values: &[f64]) -> Vec<T> {
    values.iter().map(|&x| T::from_f64(x)).collect()
}

/// Runs `gemm::<T>` with the case's kernel variant and GEMM path in the current rayon pool.
pub fn run<T: Float>(case: &Case, ops: &Operands) -> Vec<T> {
    run_entry(case, ops, gemm::<T>)
}

/// A product entry with `gemm`'s signature (`gemm` itself, or `matmul`).
pub type Entry<T> = fn(T, MatRef<'_, T>, MatRef<'_, T>, T, MatMut<'_, T>);

/// Runs `entry` on the case as [`run`] runs `gemm`.
pub fn run_entry<T: Float>(case: &Case, ops: &Operands, entry: Entry<T>) -> Vec<T> {
    let mut c = to_type::<T>(&ops.c);
    let (a, b) = (to_type::<T>(&ops.a), to_type::<T>(&ops.b));
    with_gemm_path(case.path, || {
        with_kernel_variant(case.kernel, || {
            entry(
                T::from_f64(case.alpha),
                MatRef::op_with_ld(case.ta, &a, case.m, case.k, ops.lda),
                MatRef::op_with_ld(case.tb, &b, case.k, case.n, ops.ldb),
                T::from_f64(case.beta),
                MatMut::with_ld(&mut c, case.m, case.n, ops.ldc),
            )
        })
    });
    c
}

/// Checks `got` against the f64 reference within the error bound of the module docs.
pub fn check<T: Float>(case: &Case, ops: &Operands, got: &[T]) {
    let Case {
        ta,
        tb,
        m,
        n,
        k,
        alpha,
        beta,
        ..
    } = *case;
    let alpha = T::from_f64(alpha).to_f64();
    let beta = T::from_f64(beta).to_f64();
    let mut expected = ops.c.clone();
    reference::gemm(
        alpha,
        MatRef::op_with_ld(ta, &ops.a, m, k, ops.lda),
        MatRef::op_with_ld(tb, &ops.b, k, n, ops.ldb),
        beta,
        MatMut::with_ld(&mut expected, m, n, ops.ldc),
    );
    let abs = |v: &[f64]| v.iter().map(|x| x.abs()).collect::<Vec<_>>();
    let mut magnitude = vec![0.0; ops.c.len()];
    reference::gemm(
        1.0,
        MatRef::op_with_ld(ta, &abs(&ops.a), m, k, ops.lda),
        MatRef::op_with_ld(tb, &abs(&ops.b), k, n, ops.ldb),
        0.0,
        MatMut::with_ld(&mut magnitude, m, n, ops.ldc),
    );
    let tol = 2.0 * (k + 2) as f64 * T::EPSILON.to_f64();
    for i in 0..m {
        for j in 0..ops.ldc {
            let index = i * ops.ldc + j;
            let value = got[index].to_f64();
            if j >= n {
                assert_eq!(
                    value,
                    C_PADDING,
                    "{case:?} {}: padding of C at ({i}, {j}) was written",
                    T::NAME
                );
                continue;
            }
            let old_c = if beta == 0.0 { 0.0 } else { ops.c[index] };
            let bound = tol * (alpha.abs() * magnitude[index] + (beta * old_c).abs());
            assert!(
                (value - expected[index]).abs() <= bound,
                "{case:?} {}: C({i}, {j}) = {value}, reference {}, bound {bound}",
                T::NAME,
                expected[index]
            );
        }
    }
}

/// Panics unless `parallel` holds the same bits as `serial` (NaN matching NaN): the same case
/// run on more threads.
pub fn assert_bitwise_equal<T: Float>(serial: &[T], parallel: &[T], case: &Case) {
    assert_eq!(serial.len(), parallel.len());
    for (index, (s, p)) in serial.iter().zip(parallel).enumerate() {
        assert!(
            s.to_f64().to_bits() == p.to_f64().to_bits() || (s.is_nan() && p.is_nan()),
            "{case:?} {}: element {index} differs between 1 thread ({s}) and more ({p})",
            T::NAME
        );
    }
}

pub fn check_case<T: Float>(case: Case, rng: &mut ChaCha8Rng) {
    let ops = operands::<T>(&case, rng);
    let got = run::<T>(&case, &ops);
    check::<T>(&case, &ops, &got);
}

/// Every (m, n, k) of `sides x sides x depths`, each `repeats` times in a row, as the cases of
/// a shape grid ([`Case::cycled`]), from the generator seeded with `seed`: 4 repeats give every
/// transpose pair of each shape.
pub fn check_grid<T: Float>(
    kernel: KernelVariant,
    path: GemmPath,
    (sides, depths): (&[usize], &[usize]),
    repeats: usize,
    seed: u64,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut index = 0;
    for &m in sides {
        for &n in sides {
            for &k in depths {
                for _ in 0..repeats {
                    check_case::<T>(Case::cycled(kernel, path, (m, n, k), index), &mut rng);
                    index += 1;
                }
            }
        }
    }
}

/// Runs the case on one thread and checks it against the reference, then runs it on each of
/// `threads` threads and requires the one-thread bits.
pub fn check_on_threads<T: Float>(case: &Case, rng: &mut ChaCha8Rng, threads: &[usize]) {
    let ops = operands::<T>(case, rng);
    let serial = pool(1).install(|| run::<T>(case, &ops));
    check::<T>(case, &ops, &serial);
    for &count in threads {
        let parallel = pool(count).install(|| run::<T>(case, &ops));
        assert_bitwise_equal(&serial, &parallel, case);
    }
}

pub fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
}

/// `len` values uniform in `[-scale, scale)`, rounded to `T`.
pub fn random<T: Float>(rng: &mut ChaCha8Rng, len: usize, scale: f64) -> Vec<T> {
    (0..len)
        .map(|_| T::from_f64(scale * rng.random_range(-1.0..1.0)))
        .collect()
}

/// The values in f64 (exact).
pub fn widen<T: Float>(v: &[T]) -> Vec<f64> {
    v.iter().map(|x| x.to_f64()).collect()
}

/// The values' bit patterns (through f64, exact), for bit-identity checks.
pub fn bits<T: Float>(v: &[T]) -> Vec<u64> {
    v.iter().map(|x| x.to_f64().to_bits()).collect()
}

/// `|got - want| <= rel |want| + abs`, with equal infinities and NaN == NaN accepted.
pub fn assert_close<T: Float>(what: &str, got: &[T], want: &[f64], rel: f64, abs: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let g = g.to_f64();
        if g == w || (g.is_nan() && w.is_nan()) {
            continue;
        }
        let err = (g - w).abs();
        assert!(
            err <= rel * w.abs() + abs,
            "{what} ({}): element {i}: got {g:e}, want {w:e}, err {err:e}",
            T::NAME
        );
    }
}
