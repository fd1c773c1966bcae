//! Multi-head scaled dot-product self-attention in one op, read straight from the packed
//! projections `qkv = [q | k | v]` of shape `[B, S, 3d]` (head `h` owns columns
//! `h dh .. (h + 1) dh` of each third, `dh = d / H`), so no head is ever split, permuted or
//! merged by a copy. For every sample `b` and head `h`, with `s = 1 / sqrt(dh)` and the additive
//! key-padding mask `M` (0 on real keys, `-inf` on padding):
//!
//! ```text
//! P_bh = softmax_rows(s Q_bh K_bh^T + M_b)        [S, S]   (max-subtracted)
//! C_bh = P_bh V_bh                                 [S, dh]  written into columns h dh .. of C
//! ```
//!
//! Derivatives, with `G = dC_bh`:
//!
//! ```text
//! dP   = G V^T
//! dZ   = s P (dP - rowsum(dP P))                   (softmax backward times s; 0 on masked keys)
//! dQ   = dZ K          dK = dZ^T Q          dV = P^T G
//! ```
//!
//! Both directions are one call each to the fused kernels
//! [`benign_kernels::attention_forward`] / [`benign_kernels::attention_backward`], which keep
//! every head's operands in L1 and normalize the score rows in place. The probabilities `P`
//! `[B, H, S, S]` are a second, non-differentiable output (the models report attention rows);
//! the backward pass reads them instead of recomputing the softmax. Results do not depend on the
//! number of threads.

use benign_kernels::{self as kernels, Float};

use crate::autodiff::tape::{BackwardCtx, Tape, Var};
use crate::autodiff::tensor::Shape;

use super::SingleInputOp;

pub(crate) struct MultiHeadAttention {
    qkv: usize,
    probs: usize,
    batch: usize,
    seq: usize,
    heads: usize,
    head_dim: usize,
}

/// What [`Tape::multi_head_attention`] returns.
#[derive(Clone, Copy, Debug)]
pub struct AttentionOutput {
    /// `[B, S, d]`: every head's context in its own columns.
    pub context: Var,
    /// `[B, H, S, S]` attention probabilities (query rows, key columns); no gradient flows
    /// through this handle.
    pub probabilities: Var,
}

impl MultiHeadAttention {
    fn kernel_shape(&self) -> kernels::AttentionShape {
        kernels::AttentionShape {
            batch: self.batch,
            seq: self.seq,
            heads: self.heads,
            head_dim: self.head_dim,
        }
    }

    fn scale<T: Float>(&self) -> T {
        T::from_f64(1.0 / (self.head_dim as f64).sqrt())
    }
}

impl<T: Float> Tape<T> {
    /// Self-attention of `heads` heads from packed projections `qkv` `[B, S, 3d]` (see the
    /// module documentation). `real_tokens` (`B x S`, `true` for a real token) masks padding
    /// keys out: they get probability exactly 0, and a sample without any real key gets
    /// all-zero rows (no NaN).
    pub fn multi_head_attention(
        &mut self,
        qkv: Var,
        heads: usize,
        real_tokens: Option<&[bool]>,
    ) -> AttentionOutput {
        let qi = self.check(qkv);
        let shape = self.node_shape(qi);
        assert!(
            shape.rank() == 3 && heads > 0 && shape.dim(2).is_multiple_of(3 * heads),
            "multi_head_attention: qkv must be [batch, seq, 3 d] with {heads} heads dividing d, \
             got {shape}"
        );
        let (batch, seq, d) = (shape.dim(0), shape.dim(1), shape.dim(2) / 3);
        if let Some(real) = real_tokens {
            assert_eq!(
                real.len(),
                batch * seq,
                "multi_head_attention: key padding mask has {} entries for batch {batch} x seq \
                 {seq}",
                real.len()
            );
        }
        let op = MultiHeadAttention {
            qkv: qi,
            probs: 0,
            batch,
            seq,
            heads,
            head_dim: d / heads,
        };
        let mut probs = self.buffer(batch * heads * seq * seq);
        let mut context = self.buffer(batch * seq * d);
        kernels::attention_forward(
            op.kernel_shape(),
            op.scale::<T>(),
            self.node_value(qi),
            real_tokens,
            &mut probs,
            &mut context,
        );
        let probabilities = self.push_untracked(Shape::new(&[batch, heads, seq, seq]), probs);
        let op = MultiHeadAttention {
            probs: probabilities.index(),
            ..op
        };
        let context = self.push_op(Shape::new(&[batch, seq, d]), context, op, Vec::new());
        AttentionOutput {
            context,
            probabilities,
        }
    }
}

impl<T: Float> SingleInputOp<T> for MultiHeadAttention {
    fn backward_input(&self, ctx: &mut BackwardCtx<'_, T>, _out: usize, dc: &[T]) {
        let (x, probs) = (ctx.value(self.qkv), ctx.value(self.probs));
        let (dx, fresh) = ctx.grad(self.qkv);
        let beta = if fresh { T::ZERO } else { T::ONE };
        kernels::attention_backward(
            self.kernel_shape(),
            self.scale::<T>(),
            x,
            probs,
            dc,
            beta,
            dx,
        );
    }
}

single_input_op!(MultiHeadAttention, qkv);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{assert_case_passes, Case, Input, Mode};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Sample 1's last key is padding.
    const REAL: [bool; 8] = [true, true, true, true, true, true, true, false];

    fn weighted<T: Float>(t: &mut Tape<T>, v: &[Var], mask: Option<&[bool]>, heads: usize) -> Var {
        let out = t.multi_head_attention(v[0], heads, mask);
        // A fixed random weighting, so every output element matters differently.
        t.mul(out.context, v[1])
    }

    fn two_heads<T: Float>(t: &mut Tape<T>, v: &[Var]) -> Var {
        weighted(t, v, Some(&REAL), 2)
    }

    fn one_head<T: Float>(t: &mut Tape<T>, v: &[Var]) -> Var {
        weighted(t, v, None, 1)
    }

    fn case(variant: &str, heads: usize, build: crate::gradcheck::Builder, mode: Mode) -> Case {
        let d = 2 * heads;
        Case::op(
            "multi_head_attention",
            variant,
            vec![
                Input::var("qkv", &[2, 4, 3 * d]),
                Input::constant(
                    "weights",
                    &[2, 4, d],
                    crate::gradcheck::Domain::Uniform(1.0),
                ),
            ],
            build,
        )
        .with_mode(mode)
    }

    #[test]
    fn central_differences_in_f64_agree() {
        for case in [
            case(
                "h2_masked",
                2,
                crate::gradcheck_builder!(two_heads),
                Mode::Jacobian,
            ),
            case(
                "h1_unmasked",
                1,
                crate::gradcheck_builder!(one_head),
                Mode::Jacobian,
            ),
            case(
                "h2_masked_direction",
                2,
                crate::gradcheck_builder!(two_heads),
                Mode::Direction,
            ),
        ] {
            assert_case_passes(&case);
        }
    }

    /// The fused op against the unfused graph it replaces (reshape, permute, batched matmuls,
    /// scale, masked softmax, merge), forward and backward.
    #[test]
    fn matches_the_unfused_graph() {
        let (batch, seq, heads, dh) = (3, 5, 4, 3);
        let d = heads * dh;
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let qkv: Vec<f32> = (0..batch * seq * 3 * d)
            .map(|_| rng.random_range(-2.0..2.0))
            .collect();
        let seed: Vec<f32> = (0..batch * seq * d)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let mut real = vec![true; batch * seq];
        real[seq + 4] = false;
        real[seq + 2] = false;
        for r in &mut real[2 * seq..] {
            *r = false;
        }
        let dims = [batch, seq, 3 * d];

        let mut tape = Tape::<f32>::new();
        let x = tape.variable(&dims, &qkv);
        let fused = tape.multi_head_attention(x, heads, Some(&real));
        let grads = tape.backward_from(fused.context, &seed, None);
        let (context, probs) = (
            tape.value(fused.context).to_vec(),
            tape.value(fused.probabilities).to_vec(),
        );
        let dx = grads.get(x).unwrap().to_vec();

        let mut tape = Tape::<f32>::new();
        let x = tape.variable(&dims, &qkv);
        let part = |tape: &mut Tape<f32>, i: usize| {
            let p = tape.slice(x, 2, i * d, d);
            let p = tape.reshape(p, &[batch, seq, heads, dh]);
            tape.permute(p, &[0, 2, 1, 3])
        };
        let (q, kk, v) = (part(&mut tape, 0), part(&mut tape, 1), part(&mut tape, 2));
        let z = tape.matmul_t(q, kk, false, true);
        let z = tape.scale(z, 1.0 / (dh as f32).sqrt());
        let mask = crate::transformer::key_padding_mask(&mut tape, &real, batch, heads, seq);
        let p = tape.softmax(z, Some(mask));
        let c = tape.matmul(p, v);
        let c = tape.permute(c, &[0, 2, 1, 3]);
        let c = tape.reshape(c, &[batch, seq, d]);
        let grads = tape.backward_from(c, &seed, None);
        // The same products and roundings in the same order: equal up to how the GEMM blocks
        // a strided versus a contiguous operand.
        let close = |a: &[f32], b: &[f32], what: &str| {
            assert_eq!(a.len(), b.len());
            for (i, (u, v)) in a.iter().zip(b).enumerate() {
                assert!(
                    (u - v).abs() <= 1e-6 * (1.0 + v.abs()),
                    "{what}[{i}]: {u} vs {v}"
                );
            }
        };
        close(tape.value(c), &context, "context");
        close(tape.value(p), &probs, "probabilities");
        close(grads.get(x).unwrap(), &dx, "dqkv");
        // Padding keys get nothing; the sample without real keys has all-zero rows.
        assert!(probs[2 * heads * seq * seq..].iter().all(|&p| p == 0.0));
        assert!(context.iter().chain(&dx).all(|v| v.is_finite()));
    }
}
