//! Matrix product, batched over leading dimensions, either operand transposed.
//!
//! `C = op(A) op(B)` with `op(A)` m x k and `op(B)` k x n. Derivatives:
//!
//! ```text
//! d op(A) = dC op(B)^T        d op(B) = op(A)^T dC
//! ```
//!
//! so `dA = dC op(B)^T` (or its transpose `op(B) dC^T` when A is used transposed) and
//! `dB = op(A)^T dC` (or `dC^T op(A)`). Every product goes through [`product`], that is
//! [`kernels::matmul`], which sends a vector operand to GEMV, an inner dimension of 1 (an outer
//! product, e.g. `dW = dq p^T` for `q = W p`) to GER or a direct write, and everything else to
//! GEMM.
//!
//! A rank-1 operand is a vector: `A` of shape `[k]` is a 1 x k row, `B` of shape `[k]` a k x 1
//! column, and the corresponding output dimension is dropped (as in NumPy). Batch dimensions
//! must be equal, or one operand has none and is shared by every batch.

use benign_kernels::{self as kernels, Float, MatMut, MatRef, Transpose};

use crate::autodiff::tape::{BackwardCtx, Tape, Var};
use crate::autodiff::tensor::Shape;

use super::Op;

pub(crate) struct MatMul {
    a: usize,
    b: usize,
    ta: bool,
    tb: bool,
    batch: usize,
    a_batched: bool,
    b_batched: bool,
    m: usize,
    n: usize,
    k: usize,
}

fn tr(t: bool) -> Transpose {
    if t {
        Transpose::Yes
    } else {
        Transpose::No
    }
}

/// `C <- op(A) op(B) + beta C` (`beta` is 0 or 1) over contiguous row-major storage, by the
/// cheapest kernel for the shape ([`kernels::matmul`]). With `beta == 0`, C is only written.
pub(crate) fn product<T: Float>(a: MatRef<'_, T>, b: MatRef<'_, T>, beta: T, c: MatMut<'_, T>) {
    debug_assert!(beta == T::ZERO || beta == T::ONE);
    kernels::matmul(T::ONE, a, b, beta, c);
}

impl<T: Float> Tape<T> {
    /// `A B` (see the module documentation for shapes).
    pub fn matmul(&mut self, a: Var, b: Var) -> Var {
        self.matmul_t(a, b, false, false)
    }

    /// `op(A) op(B)` where `op` transposes the last two dimensions when its flag is set.
    pub fn matmul_t(&mut self, a: Var, b: Var, transpose_a: bool, transpose_b: bool) -> Var {
        let (ai, bi) = (self.check(a), self.check(b));
        let (sa, sb) = (self.node_shape(ai), self.node_shape(bi));
        assert!(
            sa.rank() >= 1 && sb.rank() >= 1,
            "matmul of a scalar: {sa} x {sb}"
        );
        let (a_vec, b_vec) = (sa.rank() == 1, sb.rank() == 1);
        let (m, ka) = if a_vec {
            (1, sa.dim(0))
        } else {
            let (r, c) = (sa.dim(sa.rank() - 2), sa.dim(sa.rank() - 1));
            if transpose_a {
                (c, r)
            } else {
                (r, c)
            }
        };
        let (kb, n) = if b_vec {
            (sb.dim(0), 1)
        } else {
            let (r, c) = (sb.dim(sb.rank() - 2), sb.dim(sb.rank() - 1));
            if transpose_b {
                (c, r)
            } else {
                (r, c)
            }
        };
        assert_eq!(
            ka,
            kb,
            "matmul: inner dimensions differ: {sa}{} x {sb}{}",
            if transpose_a { "^T" } else { "" },
            if transpose_b { "^T" } else { "" }
        );
        let batch_a = &sa.dims()[..sa.rank().saturating_sub(2)];
        let batch_b = &sb.dims()[..sb.rank().saturating_sub(2)];
        let batch_dims: Vec<usize> = if batch_a == batch_b || batch_b.is_empty() {
            batch_a.to_vec()
        } else if batch_a.is_empty() {
            batch_b.to_vec()
        } else {
            panic!("matmul: batch dimensions differ: {sa} x {sb}");
        };
        let batch: usize = batch_dims.iter().product();
        let mut out_dims = batch_dims.clone();
        if !a_vec {
            out_dims.push(m);
        }
        if !b_vec {
            out_dims.push(n);
        }
        let out_shape = Shape::new(&out_dims);
        let (mut a_batched, b_batched) = (!batch_a.is_empty(), !batch_b.is_empty());
        let (mut batch, mut m) = (batch, m);
        // A shared B and an untransposed batched A: one product with the batch folded into m.
        if a_batched && !b_batched && !transpose_a {
            m *= batch;
            batch = 1;
            a_batched = false;
        }
        let op = MatMul {
            a: ai,
            b: bi,
            ta: transpose_a,
            tb: transpose_b,
            batch,
            a_batched,
            b_batched,
            m,
            n,
            k: ka,
        };
        let mut out = self.buffer(out_shape.numel());
        op.forward(self.node_value(ai), self.node_value(bi), &mut out);
        self.push_op(out_shape, out, op, Vec::new())
    }
}

impl MatMul {
    fn lda(&self) -> usize {
        if self.ta {
            self.m
        } else {
            self.k
        }
    }

    fn ldb(&self) -> usize {
        if self.tb {
            self.k
        } else {
            self.n
        }
    }

    /// Where batch entry `bi` of A and of B starts (an operand that is not batched is shared by
    /// every entry).
    fn offsets(&self, bi: usize) -> (usize, usize) {
        let a = if self.a_batched {
            bi * self.m * self.k
        } else {
            0
        };
        let b = if self.b_batched {
            bi * self.k * self.n
        } else {
            0
        };
        (a, b)
    }

    /// `visit((a offset, b offset), beta, dC_bi)` for every batch entry `bi`, towards the
    /// gradient of an operand that is `batched` or not: `beta` is 0 where the entry overwrites
    /// a `fresh` gradient (every entry of a batched operand, the first of a shared one), 1 where
    /// it adds to it.
    fn for_each_entry<T: Float>(
        &self,
        dc: &[T],
        (fresh, batched): (bool, bool),
        mut visit: impl FnMut((usize, usize), T, &[T]),
    ) {
        for bi in 0..self.batch {
            let beta = if fresh && (batched || bi == 0) {
                T::ZERO
            } else {
                T::ONE
            };
            visit(self.offsets(bi), beta, &dc[bi * self.m * self.n..]);
        }
    }

    fn forward<T: Float>(&self, a: &[T], b: &[T], c: &mut [T]) {
        let (m, n, kk) = (self.m, self.n, self.k);
        for bi in 0..self.batch {
            let (ao, bo) = self.offsets(bi);
            product(
                MatRef::op_with_ld(tr(self.ta), &a[ao..], m, kk, self.lda()),
                MatRef::op_with_ld(tr(self.tb), &b[bo..], kk, n, self.ldb()),
                T::ZERO,
                MatMut::new(&mut c[bi * m * n..], m, n),
            );
        }
    }
}

impl<T: Float> Op<T> for MatMul {
    fn inputs(&self, f: &mut dyn FnMut(usize)) {
        f(self.a);
        f(self.b);
    }

    fn backward(&self, ctx: &mut BackwardCtx<'_, T>, _out: usize, dc: &[T]) {
        let (m, n, kk) = (self.m, self.n, self.k);
        let (ta, tb) = (tr(self.ta), tr(self.tb));
        let (a, b) = (ctx.value(self.a), ctx.value(self.b));
        let (lda, ldb) = (self.lda(), self.ldb());
        if ctx.needs(self.a) {
            let (da, fresh) = ctx.grad(self.a);
            self.for_each_entry(dc, (fresh, self.a_batched), |(ao, bo), beta, dcb| {
                if self.ta {
                    // dA (k x m) = op(B) dC^T
                    product(
                        MatRef::op_with_ld(tb, &b[bo..], kk, n, ldb),
                        MatRef::new(dcb, m, n).transpose(),
                        beta,
                        MatMut::new(&mut da[ao..], kk, m),
                    );
                } else {
                    // dA (m x k) = dC op(B)^T
                    product(
                        MatRef::new(dcb, m, n),
                        MatRef::op_with_ld(tb.flip(), &b[bo..], n, kk, ldb),
                        beta,
                        MatMut::new(&mut da[ao..], m, kk),
                    );
                }
            });
        }
        if ctx.needs(self.b) && self.batch == 1 && !self.ta && !self.tb {
            // dB (k x n) = A^T dC, with A (m x k) and dC (m x n) stored row by row
            ctx.add_transposed_product(self.b, (a, dc), m, (kk, n));
        } else if ctx.needs(self.b) {
            let (db, fresh) = ctx.grad(self.b);
            self.for_each_entry(dc, (fresh, self.b_batched), |(ao, bo), beta, dcb| {
                if self.tb {
                    // dB (n x k) = dC^T op(A)
                    product(
                        MatRef::new(dcb, m, n).transpose(),
                        MatRef::op_with_ld(ta, &a[ao..], m, kk, lda),
                        beta,
                        MatMut::new(&mut db[bo..], n, kk),
                    );
                } else {
                    // dB (k x n) = op(A)^T dC
                    product(
                        MatRef::op_with_ld(ta.flip(), &a[ao..], kk, m, lda),
                        MatRef::new(dcb, m, n),
                        beta,
                        MatMut::new(&mut db[bo..], kk, n),
                    );
                }
            });
        }
    }
}
