//! Elementwise add, sub, mul, div with NumPy broadcasting (trailing dimensions aligned; a
//! dimension of 1 stretches), which covers row (`[R, C] + [C]`) and column (`[R, C] + [R, 1]`)
//! broadcasting. Derivatives, with `y = a op b`:
//!
//! ```text
//! add: da = dy         db = dy
//! sub: da = dy         db = -dy
//! mul: da = dy b       db = dy a
//! div: da = dy / b     db = -dy a / b^2 = -dy y / b
//! ```
//!
//! An operand that was broadcast receives the sum of `da` over the stretched dimensions.

use benign_kernels::Float;

use crate::autodiff::tape::{write_or_add, BackwardCtx, Tape, Var};
use crate::autodiff::tensor::{Shape, MAX_RANK};

use super::Op;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BinaryKind {
    Add,
    Sub,
    Mul,
    Div,
}

pub(crate) struct Binary {
    kind: BinaryKind,
    a: usize,
    b: usize,
    plan: Broadcast,
}

/// Index plan of a broadcast: output dims and each operand's strides (0 where stretched), all
/// padded on the left to [`MAX_RANK`].
#[derive(Clone, Copy)]
pub(crate) struct Broadcast {
    out: [usize; MAX_RANK],
    sa: [usize; MAX_RANK],
    sb: [usize; MAX_RANK],
    same: bool,
}

fn padded(s: Shape) -> [usize; MAX_RANK] {
    let mut d = [1; MAX_RANK];
    let r = s.rank();
    d[MAX_RANK - r..].copy_from_slice(s.dims());
    d
}

impl Broadcast {
    pub(crate) fn new(op: &str, a: Shape, b: Shape) -> (Self, Shape) {
        let (da, db) = (padded(a), padded(b));
        let mut out = [1; MAX_RANK];
        for i in 0..MAX_RANK {
            assert!(
                da[i] == db[i] || da[i] == 1 || db[i] == 1,
                "{op}: shapes {a} and {b} do not broadcast"
            );
            out[i] = da[i].max(db[i]);
        }
        let strides = |d: [usize; MAX_RANK]| {
            let mut s = [0; MAX_RANK];
            let mut acc = 1;
            for i in (0..MAX_RANK).rev() {
                s[i] = if d[i] == 1 { 0 } else { acc };
                acc *= d[i];
            }
            s
        };
        let rank = a.rank().max(b.rank());
        let shape = Shape::new(&out[MAX_RANK - rank..]);
        let plan = Broadcast {
            out,
            sa: strides(da),
            sb: strides(db),
            same: a == b,
        };
        (plan, shape)
    }

    /// Whether neither operand is stretched along the last axis, so every output row pairs a
    /// contiguous row of `a` with a contiguous row of `b` (e.g. `[R, C] + [C]`).
    fn rows_contiguous(&self) -> bool {
        self.sa[3] == 1 && self.sb[3] == 1
    }

    /// Calls `f(out_start, a_start, b_start)` for every output row of length `out[3]`, in order.
    /// The row's elements then step by `sa[3]` in `a` and `sb[3]` in `b`: callers that slice
    /// whole rows need a plan whose rows are contiguous ([`Broadcast::rows_contiguous`]).
    fn for_each_row(&self, mut f: impl FnMut(usize, usize, usize)) {
        let [d0, d1, d2, d3] = self.out;
        let mut o = 0;
        for i0 in 0..d0 {
            for i1 in 0..d1 {
                for i2 in 0..d2 {
                    let ba = i0 * self.sa[0] + i1 * self.sa[1] + i2 * self.sa[2];
                    let bb = i0 * self.sb[0] + i1 * self.sb[1] + i2 * self.sb[2];
                    f(o, ba, bb);
                    o += d3;
                }
            }
        }
    }

    /// Calls `f(out_index, a_index, b_index)` for every output element in order.
    pub(crate) fn for_each(&self, mut f: impl FnMut(usize, usize, usize)) {
        let (d3, sa3, sb3) = (self.out[3], self.sa[3], self.sb[3]);
        self.for_each_row(|o, ba, bb| {
            for i3 in 0..d3 {
                f(o + i3, ba + i3 * sa3, bb + i3 * sb3);
            }
        });
    }
}

impl<T: Float> Tape<T> {
    /// `a + b`, elementwise with NumPy broadcasting.
    pub fn add(&mut self, a: Var, b: Var) -> Var {
        self.binary(BinaryKind::Add, a, b)
    }

    /// `a - b`, elementwise with NumPy broadcasting.
    pub fn sub(&mut self, a: Var, b: Var) -> Var {
        self.binary(BinaryKind::Sub, a, b)
    }

    /// `a * b`, elementwise with NumPy broadcasting.
    pub fn mul(&mut self, a: Var, b: Var) -> Var {
        self.binary(BinaryKind::Mul, a, b)
    }

    /// `a / b`, elementwise with NumPy broadcasting (the caller keeps `b` away from zero).
    pub fn div(&mut self, a: Var, b: Var) -> Var {
        self.binary(BinaryKind::Div, a, b)
    }

    fn binary(&mut self, kind: BinaryKind, a: Var, b: Var) -> Var {
        let (ai, bi) = (self.check(a), self.check(b));
        let name = match kind {
            BinaryKind::Add => "add",
            BinaryKind::Sub => "sub",
            BinaryKind::Mul => "mul",
            BinaryKind::Div => "div",
        };
        let (plan, shape) = Broadcast::new(name, self.node_shape(ai), self.node_shape(bi));
        let mut out = self.buffer(shape.numel());
        let (av, bv) = (self.node_value(ai), self.node_value(bi));
        let f = |x: T, y: T| match kind {
            BinaryKind::Add => x + y,
            BinaryKind::Sub => x - y,
            BinaryKind::Mul => x * y,
            BinaryKind::Div => x / y,
        };
        // The kind is matched once per row, not per element, so the row loops vectorize.
        let rows = |out: &mut [T], x: &[T], y: &[T]| match kind {
            BinaryKind::Add => zip_rows(out, x, y, |x, y| x + y),
            BinaryKind::Sub => zip_rows(out, x, y, |x, y| x - y),
            BinaryKind::Mul => zip_rows(out, x, y, |x, y| x * y),
            BinaryKind::Div => zip_rows(out, x, y, |x, y| x / y),
        };
        if plan.same {
            rows(&mut out, av, bv);
        } else if plan.rows_contiguous() {
            let width = plan.out[3];
            plan.for_each_row(|o, ia, ib| {
                rows(
                    &mut out[o..o + width],
                    &av[ia..ia + width],
                    &bv[ib..ib + width],
                )
            });
        } else {
            plan.for_each(|o, ia, ib| out[o] = f(av[ia], bv[ib]));
        }
        let op = Binary {
            kind,
            a: ai,
            b: bi,
            plan,
        };
        self.push_op(shape, out, op, Vec::new())
    }
}

impl<T: Float> Op<T> for Binary {
    fn inputs(&self, f: &mut dyn FnMut(usize)) {
        f(self.a);
        f(self.b);
    }

    fn backward(&self, ctx: &mut BackwardCtx<'_, T>, out: usize, dy: &[T]) {
        let (a, b, y) = (ctx.value(self.a), ctx.value(self.b), ctx.value(out));
        let kind = self.kind;
        // Local derivative of y with respect to each operand at (out, a, b) indices.
        let da = |o: usize, _ia: usize, ib: usize| match kind {
            BinaryKind::Add | BinaryKind::Sub => dy[o],
            BinaryKind::Mul => dy[o] * b[ib],
            BinaryKind::Div => dy[o] / b[ib],
        };
        let db = |o: usize, ia: usize, ib: usize| match kind {
            BinaryKind::Add => dy[o],
            BinaryKind::Sub => -dy[o],
            BinaryKind::Mul => dy[o] * a[ia],
            BinaryKind::Div => -dy[o] * y[o] / b[ib],
        };
        for (input, local) in [
            (self.a, &da as &dyn Fn(usize, usize, usize) -> T),
            (self.b, &db),
        ] {
            if !ctx.needs(input) {
                continue;
            }
            let is_a = input == self.a;
            if self.plan.same && kind == BinaryKind::Add {
                // The common residual case, without a dynamic call per element.
                let (g, fresh) = ctx.grad(input);
                write_or_add(g, fresh, |i| dy[i]);
            } else if self.plan.same {
                let (g, fresh) = ctx.grad(input);
                write_or_add(g, fresh, |i| local(i, i, i));
            } else if kind == BinaryKind::Add && self.plan.rows_contiguous() {
                // d(a + b) = dy row by row: a stretched operand sums the rows it was copied to
                // (e.g. a bias), in output order as the general path does.
                let len = ctx.shape(input).numel();
                let mut g = ctx.scratch(len);
                g.iter_mut().for_each(|v| *v = T::ZERO);
                let width = self.plan.out[3];
                self.plan.for_each_row(|o, ia, ib| {
                    let start = if is_a { ia } else { ib };
                    for (gv, &d) in g[start..start + width].iter_mut().zip(&dy[o..o + width]) {
                        *gv += d;
                    }
                });
                ctx.accumulate(input, g);
            } else {
                let len = ctx.shape(input).numel();
                let mut g = ctx.scratch(len);
                g.iter_mut().for_each(|v| *v = T::ZERO);
                self.plan.for_each(|o, ia, ib| {
                    g[if is_a { ia } else { ib }] += local(o, ia, ib);
                });
                ctx.accumulate(input, g);
            }
        }
    }
}

/// `out[i] = f(x[i], y[i])` over equal-length rows.
#[inline(always)]
fn zip_rows<T: Float>(out: &mut [T], x: &[T], y: &[T], f: impl Fn(T, T) -> T) {
    let n = out.len();
    let (x, y) = (&x[..n], &y[..n]);
    for i in 0..n {
        out[i] = f(x[i], y[i]);
    }
}
