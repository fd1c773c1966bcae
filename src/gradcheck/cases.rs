//! The registry of checked graphs: one or more cases per op family here, composite models in
//! `models.rs`. A case lists its inputs (shape, how to draw them, whether they are
//! differentiable) and a graph builder, written once generically and instantiated for f64 and
//! f32.

use benign_kernels::Float;

use super::check::{CheckResult, Config};
use crate::autodiff::{Tape, Var};

/// Built-in op, built-in composite model, or a graph or function of the caller's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaseKind {
    /// One of the engine's built-in ops (`benign gradcheck --op`).
    Op,
    /// One of the engine's composite models (`benign gradcheck --model`).
    Model,
    /// A graph or function the caller supplied through the library API.
    Custom,
}

impl CaseKind {
    /// The kind as written in reports: `op`, `model` or `custom`.
    pub fn as_str(&self) -> &'static str {
        match self {
            CaseKind::Op => "op",
            CaseKind::Model => "model",
            CaseKind::Custom => "custom",
        }
    }
}

/// Full Jacobian (small shapes) or a random-direction product (realistic shapes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Every entry of the Jacobian, one backward pass per output element.
    Jacobian,
    /// One random direction: `v^T J u` from one backward pass against a central difference along
    /// `u`.
    Direction,
    /// The full Jacobian when it has at most [`super::AUTO_JACOBIAN_ENTRIES`] entries (checked
    /// input elements times outputs), else a direction.
    Auto,
}

/// How an input is drawn.
#[derive(Clone, Debug)]
pub enum Domain {
    /// `N(0, scale^2)`.
    Normal(f64),
    /// `U(-a, a)`.
    Uniform(f64),
    /// `U(0.5, 2)`: for `log` and denominators.
    Positive,
    /// `|x|` in `[0.3, 1.5]` with a random sign: keeps finite differences off a kink.
    AwayFromZero,
    /// +1 or -1.
    Labels,
    /// Fixed values.
    Values(Vec<f64>),
}

/// One input of a case.
#[derive(Clone, Debug)]
pub struct Input {
    /// Name in reports (e.g. `x`, `W`).
    pub name: &'static str,
    /// Shape, outermost first; the values are row-major over it.
    pub dims: Vec<usize>,
    /// How its values are drawn (or the fixed values).
    pub domain: Domain,
    /// Whether gradients with respect to it are checked (a constant input is not).
    pub differentiable: bool,
}

impl Input {
    /// A differentiable input drawn from `N(0, 1)`.
    pub fn var(name: &'static str, dims: &[usize]) -> Self {
        Input::var_in(name, dims, Domain::Normal(1.0))
    }

    /// A differentiable input drawn from `domain`.
    pub fn var_in(name: &'static str, dims: &[usize], domain: Domain) -> Self {
        Input {
            name,
            dims: dims.to_vec(),
            domain,
            differentiable: true,
        }
    }

    /// A differentiable input at given values (row-major over `dims`).
    pub fn given(name: &'static str, dims: &[usize], values: Vec<f64>) -> Self {
        Input::var_in(name, dims, Domain::Values(values))
    }

    /// A constant input.
    pub fn constant(name: &'static str, dims: &[usize], domain: Domain) -> Self {
        Input {
            name,
            dims: dims.to_vec(),
            domain,
            differentiable: false,
        }
    }

    /// Number of elements: the product of `dims`.
    pub fn numel(&self) -> usize {
        self.dims.iter().product()
    }
}

/// A graph builder for both element types: given the inputs' handles (in order), records the
/// graph and returns its output.
#[derive(Clone, Copy, Debug)]
pub struct Builder {
    /// The graph recorded in f64 (the finite-difference checks run here).
    pub f64: fn(&mut Tape<f64>, &[Var]) -> Var,
    /// The same graph in f32, compared with the f64 gradients.
    pub f32: fn(&mut Tape<f32>, &[Var]) -> Var,
}

/// Instantiates a generic `fn name<T: Float>(&mut Tape<T>, &[Var]) -> Var` for both types.
#[macro_export]
macro_rules! gradcheck_builder {
    ($f:ident) => {
        $crate::gradcheck::Builder {
            f64: $f::<f64>,
            f32: $f::<f32>,
        }
    };
}

/// A checked graph.
#[derive(Clone, Debug)]
pub struct Case {
    /// Built-in op, built-in model or the caller's.
    pub kind: CaseKind,
    /// Name selected by `--op` / `--model`.
    pub family: &'static str,
    /// Unique name of this case, `family/variant`.
    pub name: String,
    /// The inputs, in the order the builder receives their handles.
    pub inputs: Vec<Input>,
    /// Records the graph on a tape and returns its output.
    pub build: Builder,
    /// Full Jacobian, a random direction, or chosen by size.
    pub mode: Mode,
    /// Also compare f32 gradients with f64 ones (`f32_vs_f64`).
    pub f32: bool,
    /// Also check that the first-order Taylor remainder shrinks with slope 2 (`taylor`).
    pub taylor: bool,
    /// Also check that gradients are bit-identical on 1 and 4 threads (`threads`).
    pub threads: bool,
    /// Further checks specific to this case (e.g. against a closed form).
    pub extra: Option<fn(&Config) -> Vec<CheckResult>>,
}

impl Case {
    /// An op case with the default checks (full Jacobian, f32 vs f64, reentrancy).
    pub fn op(family: &'static str, variant: &str, inputs: Vec<Input>, build: Builder) -> Self {
        Case {
            kind: CaseKind::Op,
            family,
            name: format!("{family}/{variant}"),
            inputs,
            build,
            mode: Mode::Jacobian,
            f32: true,
            taylor: false,
            threads: false,
            extra: None,
        }
    }

    /// A built-in model case: every check, Taylor remainder and 1 against 4 threads included.
    pub(crate) fn model(
        family: &'static str,
        variant: &str,
        inputs: Vec<Input>,
        build: Builder,
        mode: Mode,
    ) -> Self {
        Case {
            kind: CaseKind::Model,
            mode,
            taylor: true,
            threads: true,
            ..Case::op(family, variant, inputs, build)
        }
    }

    /// A graph of the caller's: the full Jacobian or a direction by size ([`Mode::Auto`]), f32
    /// against f64, reentrancy and 1 against 4 threads; no Taylor check (it needs a curved
    /// function: see [`Case::with_taylor`]).
    pub fn custom(name: &str, inputs: Vec<Input>, build: Builder) -> Self {
        Case {
            kind: CaseKind::Custom,
            family: "custom",
            name: name.to_string(),
            inputs,
            build,
            mode: Mode::Auto,
            f32: true,
            taylor: false,
            threads: true,
            extra: None,
        }
    }

    /// Adds or removes the Taylor-remainder check, which fails for functions that are linear
    /// along the direction (their remainder is rounding noise, with no slope 2).
    pub fn with_taylor(mut self, taylor: bool) -> Self {
        self.taylor = taylor;
        self
    }

    /// Sets how the gradient is compared with finite differences.
    pub fn with_mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }
}

/// `x`-shaped positive constants -> converted values.
fn consts<T: Float>(tape: &Tape<T>, v: Var) -> Vec<T> {
    tape.value(v).to_vec()
}

macro_rules! graph {
    ($name:ident, |$t:ident, $v:ident| $body:expr) => {
        fn $name<T: Float>($t: &mut Tape<T>, $v: &[Var]) -> Var {
            $body
        }
    };
}

graph!(mm, |t, v| t.matmul(v[0], v[1]));
graph!(mm_tn, |t, v| t.matmul_t(v[0], v[1], true, false));
graph!(mm_nt, |t, v| t.matmul_t(v[0], v[1], false, true));
graph!(mm_tt, |t, v| t.matmul_t(v[0], v[1], true, true));
graph!(add, |t, v| t.add(v[0], v[1]));
graph!(sub, |t, v| t.sub(v[0], v[1]));
graph!(mul, |t, v| t.mul(v[0], v[1]));
graph!(div, |t, v| t.div(v[0], v[1]));
graph!(square, |t, v| t.mul(v[0], v[0]));
graph!(scale, |t, v| t.scale(v[0], T::from_f64(-1.7)));
graph!(sum_all, |t, v| t.sum_all(v[0]));
graph!(mean_all, |t, v| t.mean_all(v[0]));
graph!(sum_axis0, |t, v| t.sum_axis(v[0], 0));
graph!(sum_axis1, |t, v| t.sum_axis(v[0], 1));
graph!(sum_axis2, |t, v| t.sum_axis(v[0], 2));
graph!(mean_axis1, |t, v| t.mean_axis(v[0], 1));
graph!(exp, |t, v| t.exp(v[0]));
graph!(log, |t, v| t.log(v[0]));
graph!(tanh, |t, v| t.tanh(v[0]));
graph!(relu, |t, v| t.relu(v[0]));
graph!(gelu, |t, v| t.gelu(v[0]));
graph!(softmax, |t, v| t.softmax(v[0], None));
graph!(softmax_masked, |t, v| t.softmax(v[0], Some(v[1])));
graph!(log_softmax, |t, v| t.log_softmax(v[0], None));
graph!(log_softmax_masked, |t, v| t.log_softmax(v[0], Some(v[1])));
graph!(logistic, |t, v| {
    let labels = consts(t, v[1]);
    t.logistic_loss(v[0], &labels)
});
graph!(cross_entropy, |t, v| t.cross_entropy(v[0], &[0, 3, 4, 1]));
graph!(layer_norm, |t, v| t.layer_norm(
    v[0],
    v[1],
    v[2],
    T::from_f64(1e-5)
));
graph!(concat0, |t, v| t.concat(&[v[0], v[1]], 0));
graph!(concat1, |t, v| t.concat(&[v[0], v[1], v[2]], 1));
graph!(slice1, |t, v| t.slice(v[0], 1, 1, 2));
graph!(select_cls, |t, v| t.select(v[0], 1, 0));
graph!(select_last, |t, v| t.select(v[0], 2, 3));
graph!(reshape, |t, v| t.reshape(v[0], &[3, 4]));
graph!(transpose, |t, v| t.transpose(v[0], 0, 1));
graph!(permute3, |t, v| t.permute(v[0], &[2, 0, 1]));
graph!(permute4, |t, v| t.permute(v[0], &[1, 3, 0, 2]));
graph!(embedding, |t, v| t.embedding(v[0], &[1, 4, 1, 0]));

/// An op case on one variable named `a`, as most are.
fn on_a(family: &'static str, variant: &str, a: &[usize], build: Builder) -> Case {
    Case::op(family, variant, vec![Input::var("a", a)], build)
}

/// An op case on two variables named `a` and `b`.
fn on_ab(family: &'static str, variant: &str, a: &[usize], b: &[usize], build: Builder) -> Case {
    Case::op(
        family,
        variant,
        vec![Input::var("a", a), Input::var("b", b)],
        build,
    )
}

/// Every op family with small shapes (full Jacobian) and a few realistic ones (directions).
pub fn op_cases() -> Vec<Case> {
    use crate::gradcheck_builder as builder;
    use Input as I;
    let nonzero = Domain::AwayFromZero;
    let mut mask = vec![0.0; 5];
    mask[3] = f64::NEG_INFINITY;
    mask[1] = -0.7;
    // log-softmax of a -inf entry is -inf, which no finite difference can check: use a mask
    // that removes the entry just as completely (exp(-1000) = 0) but keeps outputs finite.
    let mut log_mask = mask.clone();
    log_mask[3] = -1000.0;
    // A [3, 5] input whose rows get the additive `mask`.
    let masked = |family, mask, build| {
        let inputs = vec![
            I::var("a", &[3, 5]),
            I::constant("mask", &[5], Domain::Values(mask)),
        ];
        Case::op(family, "masked", inputs, build)
    };
    // Margins f drawn with standard deviation `spread` against fixed +-1 labels.
    let logistic_loss = |variant, spread| {
        let inputs = vec![
            I::var_in("f", &[6], Domain::Normal(spread)),
            I::constant("labels", &[6], Domain::Labels),
        ];
        Case::op("logistic_loss", variant, inputs, builder!(logistic))
    };
    // Rows of x normalised over the last axis, whose width gamma and beta share.
    let layer_norm = |variant, x: &[usize]| {
        let width = x[x.len() - 1];
        let inputs = vec![
            I::var("x", x),
            I::var("gamma", &[width]),
            I::var("beta", &[width]),
        ];
        Case::op("layer_norm", variant, inputs, builder!(layer_norm))
    };
    vec![
        on_ab("matmul", "nn", &[3, 4], &[4, 5], builder!(mm)),
        on_ab("matmul", "tn", &[4, 3], &[4, 5], builder!(mm_tn)),
        on_ab("matmul", "nt", &[3, 4], &[5, 4], builder!(mm_nt)),
        on_ab("matmul", "tt", &[4, 3], &[5, 4], builder!(mm_tt)),
        Case::op(
            "matmul",
            "gemv",
            vec![I::var("a", &[3, 4]), I::var("x", &[4])],
            builder!(mm),
        ),
        Case::op(
            "matmul",
            "gemv_t",
            vec![I::var("a", &[4, 3]), I::var("x", &[4])],
            builder!(mm_tn),
        ),
        Case::op(
            "matmul",
            "vecmat",
            vec![I::var("x", &[4]), I::var("b", &[4, 5])],
            builder!(mm),
        ),
        Case::op(
            "matmul",
            "vecmat_t",
            vec![I::var("x", &[4]), I::var("b", &[5, 4])],
            builder!(mm_nt),
        ),
        on_ab("matmul", "outer", &[3, 1], &[1, 5], builder!(mm)),
        Case::op(
            "matmul",
            "dot",
            vec![I::var("x", &[4]), I::var("y", &[4])],
            builder!(mm),
        ),
        on_ab("matmul", "batched", &[2, 3, 4], &[2, 4, 5], builder!(mm)),
        on_ab(
            "matmul",
            "batched_tt",
            &[2, 4, 3],
            &[2, 5, 4],
            builder!(mm_tt),
        ),
        on_ab("matmul", "shared_b", &[2, 3, 4], &[4, 5], builder!(mm)),
        on_ab(
            "matmul",
            "shared_b_tn",
            &[2, 4, 3],
            &[4, 5],
            builder!(mm_tn),
        ),
        on_ab("matmul", "shared_a", &[3, 4], &[2, 4, 5], builder!(mm)),
        on_ab("matmul", "4d", &[2, 2, 3, 2], &[2, 2, 2, 3], builder!(mm)),
        on_ab("matmul", "large_nt", &[48, 40], &[56, 40], builder!(mm_nt))
            .with_mode(Mode::Direction),
        on_ab("add", "same", &[3, 4], &[3, 4], builder!(add)),
        on_ab("add", "row_broadcast", &[3, 4], &[4], builder!(add)),
        on_ab("add", "column_broadcast", &[3, 4], &[3, 1], builder!(add)),
        on_ab("add", "both_broadcast", &[3, 1], &[2, 1, 4], builder!(add)),
        on_ab("sub", "row_broadcast", &[2, 3, 4], &[4], builder!(sub)),
        on_ab("sub", "scalar", &[3, 4], &[], builder!(sub)),
        on_ab("mul", "same", &[3, 4], &[3, 4], builder!(mul)),
        on_ab(
            "mul",
            "column_broadcast",
            &[2, 3, 4],
            &[3, 1],
            builder!(mul),
        ),
        on_a("mul", "used_twice", &[3, 4], builder!(square)),
        Case::op(
            "div",
            "same",
            vec![
                I::var("a", &[3, 4]),
                I::var_in("b", &[3, 4], Domain::Positive),
            ],
            builder!(div),
        ),
        Case::op(
            "div",
            "row_broadcast",
            vec![I::var("a", &[3, 4]), I::var_in("b", &[4], nonzero.clone())],
            builder!(div),
        ),
        on_a("scale", "matrix", &[3, 4], builder!(scale)),
        on_a("sum", "all", &[2, 3, 4], builder!(sum_all)),
        on_a("sum", "axis0", &[2, 3, 4], builder!(sum_axis0)),
        on_a("sum", "axis1", &[2, 3, 4], builder!(sum_axis1)),
        on_a("sum", "axis2", &[2, 3, 4], builder!(sum_axis2)),
        on_a("mean", "all", &[3, 5], builder!(mean_all)),
        on_a("mean", "axis1", &[2, 3, 4], builder!(mean_axis1)),
        on_a("exp", "matrix", &[3, 4], builder!(exp)),
        Case::op(
            "log",
            "matrix",
            vec![I::var_in("a", &[3, 4], Domain::Positive)],
            builder!(log),
        ),
        on_a("tanh", "matrix", &[3, 4], builder!(tanh)),
        Case::op(
            "relu",
            "matrix",
            vec![I::var_in("a", &[3, 4], nonzero.clone())],
            builder!(relu),
        ),
        Case::op(
            "gelu",
            "matrix",
            vec![I::var_in("a", &[3, 5], Domain::Normal(2.0))],
            builder!(gelu),
        ),
        on_a("softmax", "rows", &[3, 5], builder!(softmax)),
        on_a("softmax", "batched", &[2, 3, 4], builder!(softmax)),
        masked("softmax", mask.clone(), builder!(softmax_masked)),
        on_a("log_softmax", "rows", &[3, 5], builder!(log_softmax)),
        masked("log_softmax", log_mask, builder!(log_softmax_masked)),
        logistic_loss("mean", 2.0),
        logistic_loss("large_margins", 30.0),
        Case::op(
            "cross_entropy",
            "mean",
            vec![I::var("logits", &[4, 5])],
            builder!(cross_entropy),
        ),
        layer_norm("rows", &[3, 5]),
        layer_norm("batched", &[2, 3, 4]),
        on_ab("concat", "axis0", &[2, 3], &[1, 3], builder!(concat0)),
        Case::op(
            "concat",
            "axis1",
            vec![
                I::var("a", &[2, 3, 2]),
                I::var("b", &[2, 1, 2]),
                I::var("c", &[2, 2, 2]),
            ],
            builder!(concat1),
        ),
        on_a("slice", "axis1", &[2, 4, 3], builder!(slice1)),
        on_a("select", "cls_row", &[2, 3, 4], builder!(select_cls)),
        on_a("select", "last_axis", &[2, 3, 4], builder!(select_last)),
        on_a("reshape", "2x6_to_3x4", &[2, 6], builder!(reshape)),
        on_a("transpose", "matrix", &[3, 4], builder!(transpose)),
        on_a("permute", "3d", &[2, 3, 4], builder!(permute3)),
        on_a("permute", "4d", &[2, 3, 2, 2], builder!(permute4)),
        Case::op(
            "embedding",
            "repeated_ids",
            vec![I::var("table", &[5, 3])],
            builder!(embedding),
        ),
    ]
}
