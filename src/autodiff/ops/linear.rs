//! The affine map of a linear layer in one op, optionally followed by GELU: over the last
//! axis of `x` `[..., in]`, with `W` `[out, in]` (PyTorch layout) and `b` `[out]`,
//!
//! ```text
//! z = x W^T + b          y = z            (linear)
//!                        y = gelu(z)      (linear_gelu; gelu'(z) is kept for the backward pass)
//!                        y = r + z        (linear_residual: a residual connection r [..., out])
//! ```
//!
//! The bias (plus the residual) is written into the output first and the GEMM accumulates onto
//! it (`beta = 1`), so there is no separate broadcast-add or residual-add node or pass.
//! Derivatives, with `dz = dy` (linear, residual) or `dz = dy gelu'(z)`:
//!
//! ```text
//! dx = dz W        dW = dz^T x        db = sum_rows dz     (rows summed in order)
//! dr = dy
//! ```

use benign_kernels::{self as kernels, Float, MatMut, MatRef};

use crate::autodiff::tape::{write_or_add, BackwardCtx, Tape, Var};

use super::matmul::product;
use super::Op;

/// Saves `gelu'(z)` when GELU follows and the tape records gradients (nothing otherwise): the
/// forward pass evaluates `Phi(z)` once for both `gelu(z)` and `gelu'(z)`.
pub(crate) struct Linear {
    x: usize,
    weight: usize,
    bias: Option<usize>,
    residual: Option<usize>,
    rows: usize,
    inputs: usize,
    outputs: usize,
}

impl<T: Float> Tape<T> {
    /// `x W^T + b` over the last axis (`b` optional).
    pub fn linear(&mut self, x: Var, weight: Var, bias: Option<Var>) -> Var {
        self.linear_impl(x, weight, bias, None, false)
    }

    /// `gelu(x W^T + b)` (erf form) over the last axis.
    pub fn linear_gelu(&mut self, x: Var, weight: Var, bias: Option<Var>) -> Var {
        self.linear_impl(x, weight, bias, None, true)
    }

    /// `residual + x W^T + b` over the last axis; `residual` has the output's shape.
    pub fn linear_residual(
        &mut self,
        x: Var,
        weight: Var,
        bias: Option<Var>,
        residual: Var,
    ) -> Var {
        self.linear_impl(x, weight, bias, Some(residual), false)
    }

    fn linear_impl(
        &mut self,
        x: Var,
        weight: Var,
        bias: Option<Var>,
        residual: Option<Var>,
        gelu: bool,
    ) -> Var {
        let (xi, wi) = (self.check(x), self.check(weight));
        let bi = bias.map(|b| self.check(b));
        let ri = residual.map(|r| self.check(r));
        let (sx, sw) = (self.node_shape(xi), self.node_shape(wi));
        assert!(
            sx.rank() >= 1 && sw.rank() == 2 && sw.dim(1) == sx.last(),
            "linear: x {sx} and weight {sw} (must be [out, {}])",
            sx.last()
        );
        let (inputs, outputs) = (sw.dim(1), sw.dim(0));
        if let Some(bi) = bi {
            let sb = self.node_shape(bi);
            assert!(
                sb.rank() == 1 && sb.dim(0) == outputs,
                "linear: bias must have shape [{outputs}], got {sb}"
            );
        }
        let rows = sx.numel() / inputs.max(1);
        let out_shape = sx.with_axis(sx.rank() - 1, outputs);
        if let Some(ri) = ri {
            let sr = self.node_shape(ri);
            assert_eq!(
                sr, out_shape,
                "linear_residual: residual {sr} must have the output's shape {out_shape}"
            );
        }
        let mut z = self.buffer(rows * outputs);
        let width = outputs.max(1);
        let beta = match (bi, ri) {
            (Some(bi), None) => {
                fill_rows(&mut z, self.node_value(bi));
                T::ONE
            }
            (Some(bi), Some(ri)) => {
                let (b, r) = (self.node_value(bi), self.node_value(ri));
                for (row, res) in z.chunks_exact_mut(width).zip(r.chunks_exact(width)) {
                    for ((o, &rv), &bv) in row.iter_mut().zip(res).zip(b) {
                        *o = rv + bv;
                    }
                }
                T::ONE
            }
            (None, Some(ri)) => {
                z.copy_from_slice(self.node_value(ri));
                T::ONE
            }
            (None, None) => T::ZERO,
        };
        product(
            MatRef::new(self.node_value(xi), rows, inputs),
            MatRef::new(self.node_value(wi), outputs, inputs).transpose(),
            beta,
            MatMut::new(&mut z, rows, outputs),
        );
        let (out, gelu_slope) = if !gelu {
            (z, Vec::new())
        } else if self.grad_enabled() {
            // Phi(z) is the costly part of gelu and of gelu': evaluate it once, keep gelu'(z).
            let (mut y, mut slope) = (self.buffer(z.len()), self.buffer(z.len()));
            kernels::gelu_with_derivative(&z, &mut y, &mut slope);
            self.recycle(z);
            (y, slope)
        } else {
            let mut y = self.buffer(z.len());
            kernels::gelu(&z, &mut y);
            self.recycle(z);
            (y, Vec::new())
        };
        let op = Linear {
            x: xi,
            weight: wi,
            bias: bi,
            residual: ri,
            rows,
            inputs,
            outputs,
        };
        self.push_op(out_shape, out, op, gelu_slope)
    }
}

/// Every row of `z` (a whole number of `row.len()`-long rows) set to `row`: the first row
/// copied, then the filled part doubled, so that a few long copies replace one `memcpy` call
/// per row (a call costs about as much as copying a short row).
fn fill_rows<T: Copy>(z: &mut [T], row: &[T]) {
    if z.is_empty() {
        return;
    }
    debug_assert_eq!(z.len() % row.len(), 0);
    z[..row.len()].copy_from_slice(row);
    let mut filled = row.len();
    while filled < z.len() {
        let n = filled.min(z.len() - filled);
        z.copy_within(..n, filled);
        filled += n;
    }
}

impl<T: Float> Op<T> for Linear {
    fn inputs(&self, f: &mut dyn FnMut(usize)) {
        f(self.x);
        f(self.weight);
        if let Some(b) = self.bias {
            f(b);
        }
        if let Some(r) = self.residual {
            f(r);
        }
    }

    fn backward(&self, ctx: &mut BackwardCtx<'_, T>, out: usize, dy: &[T]) {
        let (rows, n_in, n_out) = (self.rows, self.inputs, self.outputs);
        let gelu_slope = ctx.saved(out);
        let gelu_grad = if gelu_slope.is_empty() {
            None
        } else {
            let mut dz = ctx.scratch(dy.len());
            for ((d, &g), &slope) in dz.iter_mut().zip(dy).zip(gelu_slope) {
                *d = g * slope;
            }
            Some(dz)
        };
        let dz: &[T] = gelu_grad.as_deref().unwrap_or(dy);
        let (x, w) = (ctx.value(self.x), ctx.value(self.weight));
        let beta = |fresh: bool| if fresh { T::ZERO } else { T::ONE };
        if ctx.needs(self.x) {
            let (dx, fresh) = ctx.grad(self.x);
            // dx (rows x in) = dz (rows x out) W (out x in)
            product(
                MatRef::new(dz, rows, n_out),
                MatRef::new(w, n_out, n_in),
                beta(fresh),
                MatMut::new(dx, rows, n_in),
            );
        }
        if ctx.needs(self.weight) {
            // dW (out x in) = dz^T (out x rows) x (rows x in)
            ctx.add_transposed_product(self.weight, (dz, x), rows, (n_out, n_in));
        }
        if let Some(b) = self.bias.filter(|&b| ctx.needs(b)) {
            let (db, fresh) = ctx.grad(b);
            if fresh {
                db.iter_mut().for_each(|v| *v = T::ZERO);
            }
            for row in dz.chunks_exact(n_out.max(1)) {
                for (g, &d) in db.iter_mut().zip(row) {
                    *g += d;
                }
            }
        }
        if let Some(r) = self.residual.filter(|&r| ctx.needs(r)) {
            let (dr, fresh) = ctx.grad(r);
            write_or_add(dr, fresh, |i| dy[i]);
        }
        if let Some(buf) = gelu_grad {
            ctx.pool.put(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{assert_case_passes, Case, Domain, Input, Mode};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Every row set, for row counts that are and are not powers of two.
    #[test]
    fn fill_rows_sets_every_row() {
        for (rows, width) in [(0, 3), (1, 3), (2, 1), (7, 3), (8, 5), (33, 4)] {
            let row: Vec<f64> = (0..width).map(|j| j as f64 + 0.5).collect();
            let mut z = vec![f64::NAN; rows * width];
            fill_rows(&mut z, &row);
            assert!(
                z.chunks_exact(width).all(|r| r == row),
                "{rows} rows of {width}"
            );
        }
    }

    fn affine<T: Float>(t: &mut Tape<T>, v: &[Var]) -> Var {
        t.linear(v[0], v[1], Some(v[2]))
    }

    fn affine_no_bias<T: Float>(t: &mut Tape<T>, v: &[Var]) -> Var {
        t.linear(v[0], v[1], None)
    }

    fn affine_gelu<T: Float>(t: &mut Tape<T>, v: &[Var]) -> Var {
        t.linear_gelu(v[0], v[1], Some(v[2]))
    }

    fn affine_residual<T: Float>(t: &mut Tape<T>, v: &[Var]) -> Var {
        t.linear_residual(v[0], v[1], Some(v[2]), v[3])
    }

    /// The residual is also the input: its gradient gets both contributions.
    fn residual_is_input<T: Float>(t: &mut Tape<T>, v: &[Var]) -> Var {
        t.linear_residual(v[0], v[1], None, v[0])
    }

    /// A value used twice, so the second contribution accumulates onto the first.
    fn shared_input<T: Float>(t: &mut Tape<T>, v: &[Var]) -> Var {
        let a = t.linear_gelu(v[0], v[1], Some(v[2]));
        let b = t.linear(v[0], v[1], None);
        t.add(a, b)
    }

    #[test]
    fn central_differences_in_f64_agree() {
        use crate::gradcheck_builder as builder;
        let inputs = |bias: bool| {
            let mut list = vec![Input::var("x", &[2, 3, 4]), Input::var("w", &[5, 4])];
            if bias {
                list.push(Input::var_in("b", &[5], Domain::Uniform(1.0)));
            }
            list
        };
        let case = |variant, inputs, build| Case::op("linear", variant, inputs, build);
        let mut with_residual = inputs(true);
        with_residual.push(Input::var("r", &[2, 3, 5]));
        let square = vec![Input::var("x", &[3, 4]), Input::var("w", &[4, 4])];
        let vector = vec![
            Input::var("x", &[4]),
            Input::var("w", &[3, 4]),
            Input::var("b", &[3]),
        ];
        for case in [
            case("bias", inputs(true), builder!(affine)),
            case("no_bias", inputs(false), builder!(affine_no_bias)),
            case("gelu", inputs(true), builder!(affine_gelu)),
            case("shared_input", inputs(true), builder!(shared_input)),
            case("residual", with_residual, builder!(affine_residual)),
            case("residual_is_input", square, builder!(residual_is_input)),
            case("vector_gelu", vector, builder!(affine_gelu)).with_mode(Mode::Direction),
        ] {
            assert_case_passes(&case);
        }
    }

    /// Same values and gradients as the unfused matmul, bias add and GELU.
    #[test]
    fn matches_the_unfused_graph() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut draw =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.5..1.5)).collect() };
        let (x, w, b, seed) = (draw(7 * 9), draw(6 * 9), draw(6), draw(7 * 6));
        let run = |fused: bool| {
            let mut tape = Tape::<f32>::new();
            let xv = tape.variable(&[7, 9], &x);
            let wv = tape.variable(&[6, 9], &w);
            let bv = tape.variable(&[6], &b);
            let y = if fused {
                tape.linear_gelu(xv, wv, Some(bv))
            } else {
                let z = tape.matmul_t(xv, wv, false, true);
                let z = tape.add(z, bv);
                tape.gelu(z)
            };
            let grads = tape.backward_from(y, &seed, None);
            let mut all = tape.value(y).to_vec();
            for v in [xv, wv, bv] {
                all.extend_from_slice(grads.get(v).unwrap());
            }
            all
        };
        for (u, v) in run(true).iter().zip(&run(false)) {
            assert!((u - v).abs() <= 1e-6 * (1.0 + v.abs()), "{u} vs {v}");
        }
    }
}
