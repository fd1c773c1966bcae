//! What a backward pass returns: the gradients of the leaves it was asked for, found by leaf
//! handle or, in constant time, by parameter; and the one reduction of per-chunk gradients that
//! data-parallel training uses.

use benign_kernels::Float;

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
    /// The gradient, one value per element of the leaf, row-major over its shape.
    pub grad: Vec<T>,
}

impl<T> GradEntry<T> {
    pub(crate) fn new(index: usize, param: Option<ParamId>, grad: Vec<T>) -> Self {
        GradEntry { index, param, grad }
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
    pub fn get(&self, var: Var) -> Option<&[T]> {
        self.position(var)
            .map(|pos| self.entries[pos].grad.as_slice())
    }

    /// Moves the gradient of `var` out (no copy).
    pub fn take(&mut self, var: Var) -> Option<Vec<T>> {
        let pos = self.position(var)?;
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
    pub fn param(&self, id: ParamId) -> Option<&[T]> {
        let pos = (*self.by_param.get(id.0)?)?;
        Some(self.entries[pos].grad.as_slice())
    }

    /// Every leaf's gradient, in the order of the leaves on the tape.
    pub fn entries(&self) -> &[GradEntry<T>] {
        &self.entries
    }

    /// The same, mutable (e.g. to clip or scale gradients before a step).
    pub fn entries_mut(&mut self) -> &mut [GradEntry<T>] {
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
