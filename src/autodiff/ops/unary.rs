//! Elementwise functions of one tensor. Derivatives, with `y = f(x)`:
//!
//! ```text
//! scale(alpha): dx = alpha dy
//! exp:          dx = dy y
//! log:          dx = dy / x
//! tanh:         dx = dy (1 - y^2)
//! relu:         dx = dy [x > 0]            (0 at the kink, as PyTorch)
//! gelu:         dx = dy (Phi(x) + x phi(x)) (erf form; kernels::gelu_backward)
//! map(f, f'):   dx = dy f'(x)              (a caller-supplied function and derivative)
//! ```

use benign_kernels::{self as kernels, Float};

use crate::autodiff::tape::{write_or_add, BackwardCtx, Tape, Var};

use super::SingleInputOp;

#[derive(Clone, Copy)]
pub(crate) enum UnaryKind<T> {
    Scale(T),
    Exp,
    Log,
    Tanh,
    Relu,
    Gelu,
    Map { derivative: fn(T) -> T },
}

pub(crate) struct Unary<T> {
    kind: UnaryKind<T>,
    x: usize,
}

impl<T: Float> Tape<T> {
    /// `alpha x`.
    pub fn scale(&mut self, x: Var, alpha: T) -> Var {
        self.unary(UnaryKind::Scale(alpha), x, |v| alpha * v)
    }

    /// `e^x`, elementwise.
    pub fn exp(&mut self, x: Var) -> Var {
        self.unary(UnaryKind::Exp, x, T::exp)
    }

    /// Natural logarithm (the caller keeps `x > 0`).
    pub fn log(&mut self, x: Var) -> Var {
        self.unary(UnaryKind::Log, x, T::ln)
    }

    /// `tanh x`, elementwise.
    pub fn tanh(&mut self, x: Var) -> Var {
        self.unary(UnaryKind::Tanh, x, T::tanh)
    }

    /// `max(x, 0)`, elementwise; its derivative at 0 is taken as 0.
    pub fn relu(&mut self, x: Var) -> Var {
        self.unary(UnaryKind::Relu, x, |v| v.max(T::ZERO))
    }

    /// GELU, erf form: `x Phi(x)`.
    pub fn gelu(&mut self, x: Var) -> Var {
        let xi = self.check(x);
        let shape = self.node_shape(xi);
        let mut out = self.buffer(shape.numel());
        kernels::gelu(self.node_value(xi), &mut out);
        let op = Unary {
            kind: UnaryKind::Gelu,
            x: xi,
        };
        self.push_op(shape, out, op, Vec::new())
    }

    /// An elementwise function with its derivative supplied by the caller: for activations the
    /// engine does not have, and for testing that the gradient checker catches a wrong
    /// derivative.
    pub fn map(&mut self, x: Var, function: fn(T) -> T, derivative: fn(T) -> T) -> Var {
        self.unary(UnaryKind::Map { derivative }, x, function)
    }

    fn unary(&mut self, kind: UnaryKind<T>, x: Var, f: impl Fn(T) -> T) -> Var {
        let xi = self.check(x);
        let shape = self.node_shape(xi);
        let mut out = self.buffer(shape.numel());
        for (o, &v) in out.iter_mut().zip(self.node_value(xi)) {
            *o = f(v);
        }
        self.push_op(shape, out, Unary { kind, x: xi }, Vec::new())
    }
}

impl<T: Float> SingleInputOp<T> for Unary<T> {
    fn backward_input(&self, ctx: &mut BackwardCtx<'_, T>, out: usize, dy: &[T]) {
        let (x, y) = (ctx.value(self.x), ctx.value(out));
        let (dx, fresh) = ctx.grad(self.x);
        match self.kind {
            UnaryKind::Scale(alpha) => write_or_add(dx, fresh, |i| alpha * dy[i]),
            UnaryKind::Exp => write_or_add(dx, fresh, |i| dy[i] * y[i]),
            UnaryKind::Log => write_or_add(dx, fresh, |i| dy[i] / x[i]),
            UnaryKind::Tanh => write_or_add(dx, fresh, |i| dy[i] * (T::ONE - y[i] * y[i])),
            UnaryKind::Relu => {
                write_or_add(dx, fresh, |i| if x[i] > T::ZERO { dy[i] } else { T::ZERO })
            }
            UnaryKind::Map { derivative } => write_or_add(dx, fresh, |i| dy[i] * derivative(x[i])),
            UnaryKind::Gelu => {
                if fresh {
                    kernels::gelu_backward(x, dy, dx);
                } else {
                    let mut tmp = ctx.scratch(x.len());
                    kernels::gelu_backward(x, dy, &mut tmp);
                    ctx.accumulate(self.x, tmp);
                }
            }
        }
    }
}

single_input_op!(Unary<T>, x);
