//! A GEMM problem as the timing examples take it on the command line, and its operands.
//!
//! Shared by several examples through `#[path]` (each compiles its own copy); not an example
//! itself, since cargo only discovers `examples/*.rs` and `examples/*/main.rs`.

use benign_kernels::{Float, MatMut, MatRef, Transpose};

/// `C (m x n) <- op(A) (m x k) op(B) (k x n)`, with A stored `k x m` when `ta` is `Yes` and B
/// stored `n x k` when `tb` is `Yes`, both contiguous.
#[derive(Clone, Copy, Debug)]
pub struct GemmCase {
    /// Rows of C and of `op(A)`.
    pub m: usize,
    /// Columns of C and of `op(B)`.
    pub n: usize,
    /// The inner dimension.
    pub k: usize,
    /// Whether A is stored transposed.
    pub ta: Transpose,
    /// Whether B is stored transposed.
    pub tb: Transpose,
}

impl GemmCase {
    /// Parses `MxNxK` or `MxNxK-TT` (each `T` is `N` or `T`, for A then B; `NN` when absent),
    /// e.g. `3200x64x192-NT` for `C = A B^T`.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let (dims, transposes) = spec.split_once('-').unwrap_or((spec, "NN"));
        let dims: Vec<usize> = dims
            .split('x')
            .map(|d| {
                d.parse()
                    .map_err(|_| format!("{spec}: {d:?} is not a size"))
            })
            .collect::<Result<_, _>>()?;
        let &[m, n, k] = dims.as_slice() else {
            return Err(format!("{spec}: expected MxNxK"));
        };
        let transpose = |c| match c {
            'N' => Ok(Transpose::No),
            'T' => Ok(Transpose::Yes),
            _ => Err(format!(
                "{spec}: the transposes are two of N and T, e.g. -NT"
            )),
        };
        let flags: Vec<char> = transposes.chars().collect();
        let &[a, b] = flags.as_slice() else {
            return Err(format!(
                "{spec}: the transposes are two of N and T, e.g. -NT"
            ));
        };
        Ok(GemmCase {
            m,
            n,
            k,
            ta: transpose(a)?,
            tb: transpose(b)?,
        })
    }

    /// Deterministic operands `(a, b)` in [-1, 1), stored as [`GemmCase`] says.
    pub fn operands<T: Float>(&self) -> (Vec<T>, Vec<T>) {
        (filled(self.m * self.k, 1), filled(self.k * self.n, 2))
    }

    /// `op(A)` and `op(B)` over the stored operands.
    pub fn views<'a, T>(&self, a: &'a [T], b: &'a [T]) -> (MatRef<'a, T>, MatRef<'a, T>) {
        let lda = if self.ta == Transpose::No {
            self.k
        } else {
            self.m
        };
        let ldb = if self.tb == Transpose::No {
            self.n
        } else {
            self.k
        };
        (
            MatRef::op_with_ld(self.ta, a, self.m, self.k, lda),
            MatRef::op_with_ld(self.tb, b, self.k, self.n, ldb),
        )
    }

    /// `C <- alpha op(A) op(B) + beta C` through `benign_kernels::gemm`.
    pub fn run<T: Float>(&self, alpha: T, a: &[T], b: &[T], beta: T, c: &mut [T]) {
        let (a, b) = self.views(a, b);
        benign_kernels::gemm(alpha, a, b, beta, MatMut::new(c, self.m, self.n));
    }
}

/// `len` deterministic values in [-1, 1) (an xorshift stream; no RNG needed for timing).
fn filled<T: Float>(len: usize, seed: u64) -> Vec<T> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            T::from_f64((state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0)
        })
        .collect()
}
