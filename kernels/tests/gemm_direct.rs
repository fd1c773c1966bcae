//! The direct (unpacked) GEMM path (`gemm/direct.rs`) against the plain f64 reference: forced
//! with `with_gemm_path(GemmPath::Direct, ..)` over awkward shapes, all transposes, alpha and
//! beta in {0, 1, other}, padded leading dimensions (NaN in the padding of A and B, a sentinel
//! in the padding of C that must survive), NaN in C when beta is 0, both element types and
//! every kernel variant of this CPU; then the shape rule at its thresholds, and bit-identical
//! results for 1 and 4 threads.
//!
//! Harness and error bound per element as in `tests/common/mod.rs`: `|c - ref| <= 2 (k + 2) eps (|alpha| sum_p
//! |a_ip| |b_pj| + |beta c_ij|)`.

use benign_kernels::gemm::{
    use_direct, with_gemm_path, with_kernel_variant, GemmPath, KernelVariant, DIRECT_MAX_MULADDS,
    DIRECT_MAX_ROWS, DOT_MIN_DEPTH, PARALLEL_COLUMNS,
};
mod common;

use benign_kernels::{gemm, Float, MatMut, MatRef, Transpose};
use common::{check_case, check_grid, check_on_threads, Case, ALPHAS, BETAS, TRANSPOSES};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Rows and columns: around the register blocks (4 rows; 8 / 16 lanes times 1..3 vectors).
const SIDES: [usize; 12] = [0, 1, 2, 7, 8, 9, 15, 16, 17, 31, 32, 33];
/// Depths: around the vector widths, the dot-form threshold and the axpy depth block (64).
const DEPTHS: [usize; 12] = [0, 1, 2, 7, 8, 9, 17, 33, 63, 64, 65, 129];
// Every (m, n, k) of `SIDES x SIDES x DEPTHS` with every transpose pair, forced direct; alpha,
// beta and padding cycle with the case index.
common::tests_per_kernel_variant! {
    direct_grid_f32 => check_grid::<f32>(GemmPath::Direct, (&SIDES, &DEPTHS), 4, 21);
    direct_grid_f64 => check_grid::<f64>(GemmPath::Direct, (&SIDES, &DEPTHS), 4, 22);
}

/// Shapes the grid cannot reach: several column slabs and depth blocks of the axpy form
/// (n > 96, k > 128), the dot form over long rows with a partial last vector, the transposed
/// scratch for many rows, the attention and encoder shapes.
fn direct_larger<T: Float>(kernel: KernelVariant, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let shapes = [
        (20, 200, 150),
        (5, 193, 257),
        (33, 97, 200),
        (50, 50, 16),
        (50, 16, 50),
        (20, 300, 301),
        (70, 45, 30),
    ];
    for (index, (m, n, k)) in shapes.into_iter().enumerate() {
        for (t, transposes) in TRANSPOSES.into_iter().enumerate() {
            let case = Case {
                alpha: ALPHAS[1 + (index + t) % 2],
                beta: BETAS[(index + t) % 3],
                pad: (index + t) % 2,
                ..Case::new(kernel, GemmPath::Direct, transposes, (m, n, k))
            };
            check_case::<T>(case, &mut rng);
        }
    }
}

common::tests_per_kernel_variant! {
    direct_larger_f32 => direct_larger::<f32>(23);
    direct_larger_f64 => direct_larger::<f64>(24);
}

/// Each element of the dot form (`A B^T`, few rows) is the same FMA chains whatever register
/// block, group of B's rows, depth slab boundary or edge it falls in, and whether A's rows are
/// read in place (on cache lines) or from the aligned copy: every element of a product whose
/// rows and columns cross the blocks and edges (23 rows, 29 columns, a depth of several slabs
/// with a partial last vector) equals, bit for bit, the `1 x 1` product of its row and column,
/// with A's rows one element past a line (copied) and on lines (read in place).
fn dot_form_elements_independent_of_blocks<T: Float>(kernel: KernelVariant, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (m, n, k) = (23, 29, 2100);
    let mut random = |len: usize| -> Vec<T> {
        (0..len)
            .map(|_| T::from_f64(rng.random_range(-1.0..1.0)))
            .collect()
    };
    let b = random(n * k);
    // (offset from a cache line in elements, leading dimension): copied, then in place
    let line = 64 / std::mem::size_of::<T>();
    for (offset, lda) in [(1, k), (0, k.next_multiple_of(line))] {
        let a_storage = random(m * lda + 2 * line);
        let start = a_storage.as_ptr().align_offset(64) + offset;
        let a = &a_storage[start..][..(m - 1) * lda + k];
        let mut c = vec![T::ZERO; m * n];
        with_kernel_variant(kernel, || {
            with_gemm_path(GemmPath::Direct, || {
                let b_t = MatRef::new(&b, n, k).transpose();
                let a_m = MatRef::with_ld(a, m, k, lda);
                gemm::gemm(T::ONE, a_m, b_t, T::ZERO, MatMut::new(&mut c, m, n));
                for i in 0..m {
                    for j in 0..n {
                        let mut element = [T::ZERO];
                        let a_row = MatRef::new(&a[i * lda..][..k], 1, k);
                        let b_row = MatRef::new(&b[j * k..][..k], 1, k).transpose();
                        let one = MatMut::new(&mut element, 1, 1);
                        gemm::gemm(T::ONE, a_row, b_row, T::ZERO, one);
                        assert_eq!(
                            element[0].to_f64().to_bits(),
                            c[i * n + j].to_f64().to_bits(),
                            "{kernel:?} lda {lda}: C[{i}][{j}]: the 1 x 1 product differs"
                        );
                    }
                }
            })
        });
    }
}

common::tests_per_kernel_variant! {
    dot_form_elements_independent_of_blocks_f32 => dot_form_elements_independent_of_blocks::<f32>(28);
    dot_form_elements_independent_of_blocks_f64 => dot_form_elements_independent_of_blocks::<f64>(29);
}

/// The shape rule at its thresholds (`Auto`), and `gemm` correct on both sides of each.
#[test]
fn shape_rule_thresholds() {
    use Transpose::{No, Yes};
    let side = 1usize << 6;
    assert_eq!(side * side * side, DIRECT_MAX_MULADDS);
    assert!(use_direct(No, side, side, side));
    assert!(!use_direct(No, side, side, side + 1));
    assert!(use_direct(Yes, DIRECT_MAX_ROWS, 2000, 2000));
    assert!(!use_direct(Yes, DIRECT_MAX_ROWS + 1, 2000, 2000));
    assert!(!use_direct(No, DIRECT_MAX_ROWS, 2000, 2000));
    assert!(with_gemm_path(GemmPath::Packed, || !use_direct(
        No, 1, 1, 1
    )));
    assert!(with_gemm_path(GemmPath::Direct, || use_direct(
        No, 999, 999, 999
    )));
    let mut rng = ChaCha8Rng::seed_from_u64(25);
    let shapes = [
        (side, side, side),
        (side, side, side + 1),
        (DIRECT_MAX_ROWS, 300, 100),
        (DIRECT_MAX_ROWS + 1, 300, 100),
        (DIRECT_MAX_ROWS, 100, DOT_MIN_DEPTH - 1),
        (DIRECT_MAX_ROWS, 100, DOT_MIN_DEPTH),
    ];
    for kernel in common::kernel_variants() {
        for (index, (m, n, k)) in shapes.into_iter().enumerate() {
            for transposes in TRANSPOSES {
                let case = Case {
                    beta: BETAS[index % 3],
                    pad: 1,
                    ..Case::new(kernel, GemmPath::Auto, transposes, (m, n, k))
                };
                check_case::<f32>(case, &mut rng);
                check_case::<f64>(case, &mut rng);
            }
        }
    }
}

/// Above the parallel threshold the direct path splits C into fixed column chunks: 1 and 4
/// threads must give the same bits (chunk edges: n around multiples of PARALLEL_COLUMNS).
fn threads_bit_identical<T: Float>(kernel: KernelVariant, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let shapes = [
        (20, 4 * PARALLEL_COLUMNS + 1, 1100),
        (9, 3 * PARALLEL_COLUMNS - 1, 2100),
        (32, 2 * PARALLEL_COLUMNS, 400),
    ];
    for (m, n, k) in shapes {
        assert!(m * n * k >= benign_kernels::gemm::GEMM_PARALLEL_MIN_MULADDS);
        for (index, transposes) in TRANSPOSES.into_iter().enumerate() {
            let case = Case {
                alpha: 0.7,
                beta: BETAS[index % 3],
                pad: 3,
                ..Case::new(kernel, GemmPath::Direct, transposes, (m, n, k))
            };
            check_on_threads::<T>(&case, &mut rng, &[4]);
        }
    }
}

common::tests_per_kernel_variant! {
    threads_bit_identical_f32 => threads_bit_identical::<f32>(26);
    threads_bit_identical_f64 => threads_bit_identical::<f64>(27);
}
