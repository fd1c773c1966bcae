//! What a backward pass returns: the gradients of the leaves it was asked for, found by leaf
//! handle or, in constant time, by parameter; and the one reduction of per-chunk gradients that
//! data-parallel training uses.
//!
//! A gradient is a buffer of one value per element, or, from [`Tape::backward_factored`], the
//! two factors of a shallow product `G = L^T R` (see [`Factors`]): the weight gradient of a
//! linear layer applied to a few rows is such a product, and keeping its factors lets plain SGD
//! fold the update into one GEMM on the weight, so the gradient matrix is never written or read.

use benign_kernels::{self as kernels, Float, MatMut, MatRef};

use super::params::ParamId;
use super::tape::{Tape, Var};

/// Gradients of the leaves a backward pass was asked for, in the order it listed them.
#[derive(Debug)]
pub struct Gradients<T> {
    generation: u32,
    entries: Vec<GradEntry<T>>,
    /// Position in `entries` of the gradient of each parameter, indexed by [`ParamId`], so an
    /// optimizer step over P parameters costs P lookups, not P scans.
    by_param: Vec<Option<usize>>,
}

/// The gradient of one leaf.
#[derive(Debug)]
pub struct GradEntry<T> {
    index: usize,
    param: Option<ParamId>,
    /// The gradient, one value per element of the leaf, row-major over its shape; empty while
    /// the gradient is held as [`Factors`] ([`GradEntry::factors`]).
    pub grad: Vec<T>,
    factors: Option<Factors<T>>,
}

/// A gradient `G = L^T R` (`rows x cols`, row-major) kept as its factors: `L` is
/// `depth x rows` and `R` is `depth x cols`, both row-major, with
/// `2 <= depth <=` [`benign_kernels::SINGLE_PASS_DEPTH`] and `rows, cols >= 2`. Forming it is
/// the product the backward pass would have computed, so [`Factors::form`] gives the same bits
/// as a plain backward pass; at these depths [`benign_kernels::matmul`] writes it in one pass,
/// which is what lets SGD apply it as `W <- W - lr L^T R` in one GEMM with the same result.
#[derive(Debug)]
pub struct Factors<T> {
    left: Vec<T>,
    right: Vec<T>,
    depth: usize,
    rows: usize,
    cols: usize,
}

impl<T: Float> Factors<T> {
    /// Whether a `rows x cols` product of depth `depth` may be kept as factors (see the type).
    pub(crate) fn fits(depth: usize, rows: usize, cols: usize) -> bool {
        (2..=kernels::SINGLE_PASS_DEPTH).contains(&depth) && rows >= 2 && cols >= 2
    }

    pub(crate) fn new(left: Vec<T>, right: Vec<T>, depth: usize, rows: usize, cols: usize) -> Self {
        debug_assert!(Self::fits(depth, rows, cols));
        assert!(left.len() == depth * rows && right.len() == depth * cols);
        Factors {
            left,
            right,
            depth,
            rows,
            cols,
        }
    }

    /// `L`, `depth x rows` row-major.
    pub fn left(&self) -> &[T] {
        &self.left
    }

    /// `R`, `depth x cols` row-major.
    pub fn right(&self) -> &[T] {
        &self.right
    }

    /// The depth of the product (the rows of both factors).
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// `out <- alpha L^T R + beta out` (`out` is `rows x cols`): with `alpha = 1, beta = 0` the
    /// gradient itself, with `alpha = -lr, beta = 1` on the parameter an SGD step.
    pub fn apply(&self, alpha: T, beta: T, out: &mut [T]) {
        kernels::matmul(
            alpha,
            MatRef::new(&self.left, self.depth, self.rows).transpose(),
            MatRef::new(&self.right, self.depth, self.cols),
            beta,
            MatMut::new(out, self.rows, self.cols),
        );
    }

    /// The gradient as one value per element.
    pub fn form(&self) -> Vec<T> {
        let mut g = vec![T::ZERO; self.rows * self.cols];
        self.apply(T::ONE, T::ZERO, &mut g);
        g
    }

    /// Whether every element of `L^T R` is certainly finite: both factors are, and the bound
    /// `depth max|L| max|R|` on every partial sum, doubled to cover the roundings, is itself a
    /// finite value of `T`. `false` says nothing: the product may still be finite.
    pub fn certainly_finite(&self) -> bool {
        let max_abs = |v: &[T]| {
            v.iter().try_fold(0.0f64, |m, x| {
                x.is_finite().then(|| m.max(x.to_f64().abs()))
            })
        };
        match (max_abs(&self.left), max_abs(&self.right)) {
            (Some(l), Some(r)) => T::from_f64(2.0 * self.depth as f64 * l * r).is_finite(),
            _ => false,
        }
    }
}

/// A parameter's gradient as an optimizer reads it.
pub enum ParamGrad<'a, T> {
    /// One value per element.
    Dense(&'a [T]),
    /// Kept as factors.
    Factored(&'a Factors<T>),
}

impl<'a, T: Float> ParamGrad<'a, T> {
    /// The gradient as one value per element, formed in `scratch` when it is factored.
    pub fn dense<'s>(&self, scratch: &'s mut Vec<T>) -> &'s [T]
    where
        'a: 's,
    {
        match *self {
            ParamGrad::Dense(g) => g,
            ParamGrad::Factored(f) => {
                scratch.resize(f.rows * f.cols, T::ZERO);
                f.apply(T::ONE, T::ZERO, scratch);
                scratch
            }
        }
    }

    /// Elements of the gradient.
    pub fn len(&self) -> usize {
        match self {
            ParamGrad::Dense(g) => g.len(),
            ParamGrad::Factored(f) => f.rows * f.cols,
        }
    }

    /// Whether the gradient has no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T> GradEntry<T> {
    pub(crate) fn new(index: usize, param: Option<ParamId>, grad: Vec<T>) -> Self {
        GradEntry {
            index,
            param,
            grad,
            factors: None,
        }
    }

    pub(crate) fn factored(index: usize, param: Option<ParamId>, factors: Factors<T>) -> Self {
        GradEntry {
            index,
            param,
            grad: Vec::new(),
            factors: Some(factors),
        }
    }

    /// The factors of the gradient, when it is held as a product (then `grad` is empty).
    pub fn factors(&self) -> Option<&Factors<T>> {
        self.factors.as_ref()
    }

    fn dense(&self) -> &[T] {
        assert!(
            self.factors.is_none(),
            "the gradient of leaf {} is held as factors (Tape::backward_factored): form it with \
             Gradients::densify first",
            self.index
        );
        &self.grad
    }

    pub(crate) fn into_buffers(self) -> impl Iterator<Item = Vec<T>> {
        let factors = self.factors.map(|f| [f.left, f.right]);
        std::iter::once(self.grad).chain(factors.into_iter().flatten())
    }

    /// Arena index of the leaf.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The parameter the leaf was created from, if any.
    pub fn param(&self) -> Option<ParamId> {
        self.param
    }
}

impl<T: Float> Gradients<T> {
    pub(crate) fn new(generation: u32, entries: Vec<GradEntry<T>>) -> Self {
        let mut by_param = Vec::new();
        for (pos, e) in entries.iter().enumerate() {
            if let Some(id) = e.param {
                if by_param.len() <= id.0 {
                    by_param.resize(id.0 + 1, None);
                }
                by_param[id.0] = Some(pos);
            }
        }
        Gradients {
            generation,
            entries,
            by_param,
        }
    }

    /// Position of the gradient of `var`: a scan, as a pass is asked for a few leaves by handle
    /// (parameters are found through the index instead).
    fn position(&self, var: Var) -> Option<usize> {
        assert_eq!(
            var.generation, self.generation,
            "handle from another tape generation"
        );
        self.entries.iter().position(|e| e.index == var.index())
    }

    /// Gradient with respect to `var`, or `None` if the loss does not depend on it.
    ///
    /// # Panics
    /// If the gradient is held as [`Factors`]; [`Gradients::densify`] forms them.
    pub fn get(&self, var: Var) -> Option<&[T]> {
        self.position(var).map(|pos| self.entries[pos].dense())
    }

    /// Forms every gradient held as [`Factors`], so that each entry's `grad` holds its values.
    pub fn densify(&mut self) {
        for entry in &mut self.entries {
            if let Some(f) = entry.factors.take() {
                entry.grad = f.form();
            }
        }
    }

    /// Moves the gradient of `var` out (no copy unless it is held as factors).
    pub fn take(&mut self, var: Var) -> Option<Vec<T>> {
        let pos = self.position(var)?;
        if let Some(f) = self.entries[pos].factors.take() {
            self.entries[pos].grad = f.form();
        }
        let taken = self.entries.swap_remove(pos);
        if let Some(id) = taken.param {
            self.by_param[id.0] = None;
        }
        // The last entry moved into `pos`.
        if let Some(id) = self.entries.get(pos).and_then(|e| e.param) {
            self.by_param[id.0] = Some(pos);
        }
        Some(taken.grad)
    }

    /// Gradient with respect to a parameter of a [`ParamStore`](super::ParamStore).
    ///
    /// # Panics
    /// If the gradient is held as [`Factors`]; [`Gradients::param_grad`] reads either form.
    pub fn param(&self, id: ParamId) -> Option<&[T]> {
        let pos = (*self.by_param.get(id.0)?)?;
        Some(self.entries[pos].dense())
    }

    /// Gradient with respect to a parameter, in whichever form it is held.
    pub fn param_grad(&self, id: ParamId) -> Option<ParamGrad<'_, T>> {
        let pos = (*self.by_param.get(id.0)?)?;
        let entry = &self.entries[pos];
        Some(match &entry.factors {
            Some(f) => ParamGrad::Factored(f),
            None => ParamGrad::Dense(&entry.grad),
        })
    }

    /// Every leaf's gradient, in the order of the leaves on the tape (an entry held as
    /// [`Factors`] has an empty `grad`; [`Gradients::entries_mut`] forms them).
    pub fn entries(&self) -> &[GradEntry<T>] {
        &self.entries
    }

    /// The same, mutable (e.g. to clip or scale gradients before a step), with every gradient
    /// held as [`Factors`] formed first.
    pub fn entries_mut(&mut self) -> &mut [GradEntry<T>] {
        self.densify();
        &mut self.entries
    }

    pub(crate) fn into_entries(self) -> Vec<GradEntry<T>> {
        self.entries
    }

    /// Whether no leaf received a gradient.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds `other`'s gradient of every parameter this holds a gradient of (`self += other`).
    fn add_params(&mut self, other: &Gradients<T>) {
        for entry in &mut self.entries {
            let param = entry
                .param
                .expect("chunk gradients are parameters' gradients");
            if let Some(g) = other.param(param) {
                for (a, &b) in entry.grad.iter_mut().zip(g) {
                    *a += b;
                }
            }
        }
    }
}

/// Sums the parameter gradients of one batch's chunks, `parts[i]` computed on `tapes[i]`, in
/// chunk order, `((g_0 + g_1) + g_2) + ...`: the order is fixed by the chunks, not by the threads
/// that computed them, so the sum is bit-identical whatever the thread count. The result holds the
/// first part's buffers; the others are handed back to their tapes' pools.
pub fn sum_chunk_gradients<T: Float>(
    parts: impl IntoIterator<Item = Gradients<T>>,
    tapes: &mut [Tape<T>],
) -> Gradients<T> {
    let mut parts = parts.into_iter();
    let mut sum = parts.next().expect("a batch has at least one chunk");
    for (i, part) in parts.enumerate() {
        sum.add_params(&part);
        tapes[i + 1].recycle_gradients(part);
    }
    sum
}
