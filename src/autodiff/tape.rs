//! The tape: a plain arena of nodes, values addressed by `Copy` handles.
//!
//! Every op appends one node holding its output value and, when it records, its backward rule
//! (an `Op`: input indices and sizes) plus at most one saved buffer of statistics.
//! [`Tape::backward`] walks the arena once in reverse. Buffers come from a pool keyed by length, so
//! after [`Tape::clear`] the next step of a training loop reuses the same allocations: memory stays
//! flat however many steps run.
//!
//! Graph construction errors (mismatched shapes, a handle from a cleared tape, an axis out of
//! range) are programming errors: they panic with a message naming the op and the shapes.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use benign_kernels::{self as kernels, Float, MatMut, MatRef};

use super::gradients::{Factors, GradEntry, Gradients};
use super::ops::matmul::product;
use super::ops::Op;
use super::params::{ParamId, ParamStore};
use super::tensor::{Shape, Tensor};

/// Every tape and every [`Tape::clear`] gets a new generation, so a stale handle is caught.
static NEXT_GENERATION: AtomicU32 = AtomicU32::new(1);

fn next_generation() -> u32 {
    NEXT_GENERATION.fetch_add(1, Ordering::Relaxed)
}

/// A value on a tape: an index into its arena plus the tape generation it belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Var {
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

impl Var {
    /// Position of the value in the tape's arena.
    pub fn index(&self) -> usize {
        self.index as usize
    }
}

/// A node's value: owned (from the pool) or shared with a caller without copying (parameters,
/// large constant inputs).
pub(crate) enum Storage<T> {
    Owned(Vec<T>),
    Shared(Arc<Vec<T>>),
}

impl<T> Storage<T> {
    pub(crate) fn as_slice(&self) -> &[T] {
        match self {
            Storage::Owned(v) => v,
            Storage::Shared(v) => v,
        }
    }
}

pub(crate) struct Node<T> {
    pub(crate) shape: Shape,
    pub(crate) value: Storage<T>,
    /// The backward rule; `None` for leaves and for values computed with recording off.
    op: Option<Box<dyn Op<T>>>,
    /// Elements the backward rule reads besides the values (empty when there are none). Owned
    /// here rather than by the op, so clearing returns it to the pool for every op alike.
    saved: Vec<T>,
    pub(crate) requires_grad: bool,
    pub(crate) param: Option<ParamId>,
}

/// Hashes a buffer length with one multiply (SipHash dominated small-graph overhead).
#[derive(Default)]
struct LengthHasher(u64);

impl Hasher for LengthHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.0 = (n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// Buffers by exact length. A training loop requests the same lengths every step, so after the
/// first step every request is served from here.
pub(crate) struct Pool<T> {
    free: HashMap<usize, Vec<Vec<T>>, BuildHasherDefault<LengthHasher>>,
    pooled_bytes: usize,
    fresh_allocations: u64,
}

impl<T: Float> Pool<T> {
    fn new() -> Self {
        Pool {
            free: HashMap::default(),
            pooled_bytes: 0,
            fresh_allocations: 0,
        }
    }

    /// A buffer of `len` elements with unspecified contents: the caller overwrites all of them.
    pub(crate) fn take(&mut self, len: usize) -> Vec<T> {
        if let Some(buf) = self.free.get_mut(&len).and_then(Vec::pop) {
            self.pooled_bytes -= len * std::mem::size_of::<T>();
            return buf;
        }
        self.fresh_allocations += 1;
        vec![T::ZERO; len]
    }

    pub(crate) fn put(&mut self, buf: Vec<T>) {
        if buf.capacity() == 0 {
            return;
        }
        self.pooled_bytes += buf.len() * std::mem::size_of::<T>();
        self.free.entry(buf.len()).or_default().push(buf);
    }
}

/// What a tape holds, for tests and diagnostics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryStats {
    /// Nodes currently recorded.
    pub nodes: usize,
    /// Nodes the arena can hold without growing.
    pub node_capacity: usize,
    /// Bytes of element buffers owned by nodes (values and saved statistics) and gradients.
    pub live_bytes: usize,
    /// Bytes of element buffers waiting in the pool for reuse.
    pub pooled_bytes: usize,
    /// Element buffers allocated from the system since the tape was created.
    pub fresh_allocations: u64,
}

/// The reverse-mode tape. One per thread; reuse it across steps with [`Tape::clear`].
pub struct Tape<T: Float> {
    pub(crate) nodes: Vec<Node<T>>,
    generation: u32,
    grad_enabled: bool,
    pub(crate) pool: Pool<T>,
    needed: Vec<bool>,
    grads: Vec<Option<Vec<T>>>,
    /// Per node, how many recorded edges of needed ops read it (only for a factored pass).
    consumers: Vec<u32>,
    /// Gradients kept as factors during a factored pass, by node.
    factored: Vec<(usize, Factors<T>)>,
}

impl<T: Float> Default for Tape<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Float> Tape<T> {
    /// An empty tape, recording on.
    pub fn new() -> Self {
        Tape {
            nodes: Vec::new(),
            generation: next_generation(),
            grad_enabled: true,
            pool: Pool::new(),
            needed: Vec::new(),
            grads: Vec::new(),
            consumers: Vec::new(),
            factored: Vec::new(),
        }
    }

    /// Forgets every value (handles become invalid) and keeps all allocations for reuse.
    pub fn clear(&mut self) {
        for node in self.nodes.drain(..) {
            if let Storage::Owned(buf) = node.value {
                self.pool.put(buf);
            }
            self.pool.put(node.saved);
        }
        for grad in self.grads.drain(..).flatten() {
            self.pool.put(grad);
        }
        self.generation = next_generation();
    }

    /// Turns recording on (the default) or off. With recording off (evaluation mode) ops compute
    /// their values but record nothing for a backward pass: no input edges, no saved
    /// statistics; each value is kept only so that its handle can be read.
    pub fn set_grad_enabled(&mut self, enabled: bool) {
        self.grad_enabled = enabled;
    }

    /// Whether ops record their backward rules.
    pub fn grad_enabled(&self) -> bool {
        self.grad_enabled
    }

    /// Runs `f` with recording off, restoring the previous mode afterwards.
    pub fn no_grad<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        let previous = self.grad_enabled;
        self.grad_enabled = false;
        let result = f(self);
        self.grad_enabled = previous;
        result
    }

    /// Number of nodes that recorded a backward rule (0 in evaluation mode).
    pub fn recorded_ops(&self) -> usize {
        self.nodes.iter().filter(|n| n.op.is_some()).count()
    }

    /// Number of values (nodes) on the tape, leaves and constants included.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the tape holds no value.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// What the tape holds now: nodes, live and pooled bytes, allocations so far.
    pub fn memory(&self) -> MemoryStats {
        let size = std::mem::size_of::<T>();
        let values: usize = self
            .nodes
            .iter()
            .map(|n| match &n.value {
                Storage::Owned(v) => v.len() * size,
                Storage::Shared(_) => 0,
            } + n.saved.len() * size)
            .sum();
        let grads: usize = self.grads.iter().flatten().map(|g| g.len() * size).sum();
        MemoryStats {
            nodes: self.nodes.len(),
            node_capacity: self.nodes.capacity(),
            live_bytes: values + grads,
            pooled_bytes: self.pool.pooled_bytes,
            fresh_allocations: self.pool.fresh_allocations,
        }
    }

    /// Hands a buffer (e.g. a gradient taken out of [`Gradients`]) back to the pool.
    pub fn recycle(&mut self, buf: Vec<T>) {
        self.pool.put(buf);
    }

    /// Hands every gradient buffer back to the pool.
    pub fn recycle_gradients(&mut self, grads: Gradients<T>) {
        for buf in grads
            .into_entries()
            .into_iter()
            .flat_map(GradEntry::into_buffers)
        {
            self.pool.put(buf);
        }
    }

    // ---- leaves -------------------------------------------------------------------------------

    fn push_leaf(
        &mut self,
        shape: Shape,
        value: Storage<T>,
        requires_grad: bool,
        param: Option<ParamId>,
    ) -> Var {
        assert_eq!(
            value.as_slice().len(),
            shape.numel(),
            "leaf of shape {shape} needs {} elements, got {}",
            shape.numel(),
            value.as_slice().len()
        );
        self.push_node(Node {
            shape,
            value,
            op: None,
            saved: Vec::new(),
            requires_grad,
            param,
        })
    }

    fn copy_in(&mut self, data: &[T]) -> Storage<T> {
        let mut buf = self.pool.take(data.len());
        buf.copy_from_slice(data);
        Storage::Owned(buf)
    }

    /// A constant (no gradient), copied into the tape.
    pub fn constant(&mut self, dims: &[usize], data: &[T]) -> Var {
        let value = self.copy_in(data);
        self.push_leaf(Shape::new(dims), value, false, None)
    }

    /// A constant shared with the caller without copying.
    pub fn constant_shared(&mut self, dims: &[usize], data: &Arc<Vec<T>>) -> Var {
        self.push_leaf(
            Shape::new(dims),
            Storage::Shared(Arc::clone(data)),
            false,
            None,
        )
    }

    /// A constant of zeros, in a buffer from the pool (a fresh allocation every step would
    /// fault its pages in anew, and grow the pool by one buffer per step).
    pub fn zeros(&mut self, dims: &[usize]) -> Var {
        let shape = Shape::new(dims);
        let mut buf = self.pool.take(shape.numel());
        buf.fill(T::ZERO);
        self.push_leaf(shape, Storage::Owned(buf), false, None)
    }

    /// A constant moved in from a tensor.
    pub fn constant_tensor(&mut self, t: Tensor<T>) -> Var {
        self.push_leaf(t.shape, Storage::Owned(t.data), false, None)
    }

    /// A leaf whose gradient [`Tape::backward`] computes, copied into the tape.
    pub fn variable(&mut self, dims: &[usize], data: &[T]) -> Var {
        let value = self.copy_in(data);
        let requires_grad = self.grad_enabled;
        self.push_leaf(Shape::new(dims), value, requires_grad, None)
    }

    /// A differentiable leaf shared with the caller without copying.
    pub fn variable_shared(&mut self, dims: &[usize], data: &Arc<Vec<T>>) -> Var {
        let requires_grad = self.grad_enabled;
        self.push_leaf(
            Shape::new(dims),
            Storage::Shared(Arc::clone(data)),
            requires_grad,
            None,
        )
    }

    /// A parameter of `store`, shared without copying. Frozen parameters enter as constants, so
    /// no gradient is computed for them.
    pub fn param(&mut self, store: &ParamStore<T>, id: ParamId) -> Var {
        let requires_grad = self.grad_enabled && store.is_trainable(id);
        let shape = store.shape(id);
        let value = Storage::Shared(Arc::clone(store.shared(id)));
        self.push_leaf(shape, value, requires_grad, Some(id))
    }

    // ---- reading values -----------------------------------------------------------------------

    pub(crate) fn check(&self, var: Var) -> usize {
        assert_eq!(
            var.generation, self.generation,
            "value handle {} belongs to another tape or to a cleared one",
            var.index
        );
        var.index()
    }

    /// The value of `var`, row-major over its shape; panics on a handle of another or a cleared
    /// tape.
    pub fn value(&self, var: Var) -> &[T] {
        let i = self.check(var);
        self.nodes[i].value.as_slice()
    }

    /// The shape of `var`.
    pub fn shape(&self, var: Var) -> Shape {
        let i = self.check(var);
        self.nodes[i].shape
    }

    /// The value of a one-element tensor.
    pub fn scalar(&self, var: Var) -> T {
        let v = self.value(var);
        assert_eq!(
            v.len(),
            1,
            "scalar() on a tensor of shape {}",
            self.shape(var)
        );
        v[0]
    }

    /// A copy of the value as a tensor.
    pub fn tensor(&self, var: Var) -> Tensor<T> {
        Tensor {
            shape: self.shape(var),
            data: self.value(var).to_vec(),
        }
    }

    /// Whether a backward pass reaches a gradient to `var` (it is, or depends on, a differentiable
    /// leaf).
    pub fn requires_grad(&self, var: Var) -> bool {
        let i = self.check(var);
        self.nodes[i].requires_grad
    }

    // ---- recording (used by the op files) -----------------------------------------------------

    /// Whether an op over these inputs must record its backward rule.
    pub(crate) fn records(&self, inputs: &[usize]) -> bool {
        self.grad_enabled && inputs.iter().any(|&i| self.nodes[i].requires_grad)
    }

    pub(crate) fn buffer(&mut self, len: usize) -> Vec<T> {
        self.pool.take(len)
    }

    pub(crate) fn node_value(&self, i: usize) -> &[T] {
        self.nodes[i].value.as_slice()
    }

    pub(crate) fn node_shape(&self, i: usize) -> Shape {
        self.nodes[i].shape
    }

    /// The rows and columns of node `i`, which must be a matrix: otherwise panics with
    /// `"{what}, got {shape}"`, `what` saying which op wanted which matrix.
    pub(crate) fn matrix_dims(&self, i: usize, what: &str) -> (usize, usize) {
        let shape = self.node_shape(i);
        assert_eq!(shape.rank(), 2, "{what}, got {shape}");
        (shape.dim(0), shape.dim(1))
    }

    /// Appends an op's output with its backward rule and the buffer that rule reads (`saved`,
    /// empty for none). Both are dropped, the buffer back to the pool, when nothing upstream
    /// requires a gradient, so evaluation mode records nothing.
    pub(crate) fn push_op(
        &mut self,
        shape: Shape,
        value: Vec<T>,
        op: impl Op<T>,
        saved: Vec<T>,
    ) -> Var {
        debug_assert_eq!(value.len(), shape.numel());
        let mut requires_grad = false;
        op.inputs(&mut |i| requires_grad |= self.nodes[i].requires_grad);
        requires_grad &= self.grad_enabled;
        let (op, saved) = if requires_grad {
            (Some(Box::new(op) as Box<dyn Op<T>>), saved)
        } else {
            self.pool.put(saved);
            (None, Vec::new())
        };
        self.push_node(Node {
            shape,
            value: Storage::Owned(value),
            op,
            saved,
            requires_grad,
            param: None,
        })
    }

    /// Appends a by-product of an op (e.g. attention probabilities) that no gradient flows
    /// into or through; the op that produced it may read it in its backward pass.
    pub(crate) fn push_untracked(&mut self, shape: Shape, value: Vec<T>) -> Var {
        debug_assert_eq!(value.len(), shape.numel());
        self.push_node(Node {
            shape,
            value: Storage::Owned(value),
            op: None,
            saved: Vec::new(),
            requires_grad: false,
            param: None,
        })
    }

    fn push_node(&mut self, node: Node<T>) -> Var {
        let index = u32::try_from(self.nodes.len()).expect("a tape holds at most 2^32 nodes");
        self.nodes.push(node);
        Var {
            index,
            generation: self.generation,
        }
    }

    // ---- backward -----------------------------------------------------------------------------

    /// Gradients of a scalar `loss` with respect to every leaf that requires one.
    pub fn backward(&mut self, loss: Var) -> Gradients<T> {
        self.check_scalar(loss);
        let seed = [T::ONE];
        self.backward_pass(loss, &seed, None, false)
    }

    /// [`Tape::backward`], keeping as [`Factors`] the gradient of every parameter that one
    /// shallow product determines: a parameter read by a single op whose backward rule forms
    /// its gradient as `L^T R` of depth at most [`benign_kernels::SINGLE_PASS_DEPTH`] (the
    /// weight of a linear layer, or the right operand of a matrix product, applied to a few
    /// rows). [`Sgd::step_finite`](super::Sgd::step_finite) applies such a gradient in one GEMM
    /// on the parameter, bit-identical to forming it first; other readers form it
    /// ([`Gradients::densify`]).
    pub fn backward_factored(&mut self, loss: Var) -> Gradients<T> {
        self.check_scalar(loss);
        let seed = [T::ONE];
        self.backward_pass(loss, &seed, None, true)
    }

    /// Gradients of a scalar `loss` with respect to the listed leaves only; parts of the graph
    /// that lead to no listed leaf are skipped.
    pub fn backward_wrt(&mut self, loss: Var, wrt: &[Var]) -> Gradients<T> {
        self.check_scalar(loss);
        let seed = [T::ONE];
        self.backward_pass(loss, &seed, Some(wrt), false)
    }

    fn check_scalar(&self, loss: Var) {
        let shape = self.shape(loss);
        assert_eq!(
            shape.numel(),
            1,
            "backward() needs a one-element loss, got shape {shape}; use backward_from with a seed"
        );
    }

    /// Vector-Jacobian product: gradients of `<seed, output>` with respect to the leaves in `wrt`
    /// (all leaves requiring a gradient when `None`). The tape's values are not modified, so
    /// backward may run any number of times.
    pub fn backward_from(&mut self, output: Var, seed: &[T], wrt: Option<&[Var]>) -> Gradients<T> {
        self.backward_pass(output, seed, wrt, false)
    }

    fn backward_pass(
        &mut self,
        output: Var,
        seed: &[T],
        wrt: Option<&[Var]>,
        factor: bool,
    ) -> Gradients<T> {
        let out = self.check(output);
        assert_eq!(
            seed.len(),
            self.nodes[out].shape.numel(),
            "seed has {} elements, output has shape {}",
            seed.len(),
            self.nodes[out].shape
        );
        assert!(
            self.nodes[out].requires_grad,
            "backward from a value that needs no gradient: it was computed in evaluation \
             (no-grad) mode or from constants only"
        );
        let count = out + 1;
        // A node is needed when a wanted leaf lies upstream of it (inputs precede their users).
        self.needed.clear();
        self.needed.resize(count, false);
        let mut wanted_leaves = Vec::new();
        match wrt {
            Some(list) => {
                for &v in list {
                    let i = self.check(v);
                    if i < count && self.nodes[i].requires_grad {
                        self.needed[i] = true;
                        wanted_leaves.push(i);
                    }
                }
            }
            None => {
                for (i, node) in self.nodes[..count].iter().enumerate() {
                    if node.requires_grad && node.op.is_none() {
                        self.needed[i] = true;
                        wanted_leaves.push(i);
                    }
                }
            }
        }
        for i in 0..count {
            if !self.needed[i] && self.nodes[i].requires_grad {
                if let Some(op) = &self.nodes[i].op {
                    let mut any = false;
                    op.inputs(&mut |j| any |= self.needed[j]);
                    self.needed[i] = any;
                }
            }
        }
        for grad in self.grads.drain(..).flatten() {
            self.pool.put(grad);
        }
        self.grads.resize_with(count, || None);
        self.consumers.clear();
        if factor {
            self.consumers.resize(count, 0);
            for (node, _) in self.nodes[..count]
                .iter()
                .zip(&self.needed)
                .filter(|(_, &n)| n)
            {
                if let Some(op) = &node.op {
                    op.inputs(&mut |j| self.consumers[j] += 1);
                }
            }
        }
        if self.needed[out] {
            let mut buf = self.pool.take(seed.len());
            buf.copy_from_slice(seed);
            self.grads[out] = Some(buf);
        }
        let mut ctx = BackwardCtx {
            nodes: &self.nodes,
            needed: &self.needed,
            grads: &mut self.grads,
            consumers: &self.consumers,
            factored: &mut self.factored,
            pool: &mut self.pool,
        };
        let nodes = ctx.nodes;
        for i in (0..count).rev() {
            let Some(op) = &nodes[i].op else {
                continue;
            };
            if !ctx.needed[i] {
                continue;
            }
            let Some(dy) = ctx.grads[i].take() else {
                continue;
            };
            op.backward(&mut ctx, i, &dy);
            ctx.pool.put(dy);
        }
        let mut factored = std::mem::take(&mut self.factored);
        let entries = wanted_leaves
            .into_iter()
            .filter_map(|i| {
                let param = self.nodes[i].param;
                if let Some(pos) = factored.iter().position(|&(node, _)| node == i) {
                    let (_, factors) = factored.swap_remove(pos);
                    return Some(GradEntry::factored(i, param, factors));
                }
                let grad = self.grads[i].take()?;
                Some(GradEntry::new(i, param, grad))
            })
            .collect();
        debug_assert!(
            factored.is_empty(),
            "factors are kept for wanted leaves only"
        );
        self.factored = factored;
        Gradients::new(self.generation, entries)
    }
}

/// What an op's backward rule sees: the forward values, and the gradient buffers of its inputs.
pub(crate) struct BackwardCtx<'a, T> {
    nodes: &'a [Node<T>],
    needed: &'a [bool],
    grads: &'a mut Vec<Option<Vec<T>>>,
    /// Empty unless the pass keeps factors (see [`Tape::backward_factored`]).
    consumers: &'a [u32],
    factored: &'a mut Vec<(usize, Factors<T>)>,
    pub(crate) pool: &'a mut Pool<T>,
}

impl<'a, T: Float> BackwardCtx<'a, T> {
    pub(crate) fn value(&self, i: usize) -> &'a [T] {
        self.nodes[i].value.as_slice()
    }

    pub(crate) fn shape(&self, i: usize) -> Shape {
        self.nodes[i].shape
    }

    /// The buffer node `i` saved for its backward rule (see [`Tape::push_op`]).
    pub(crate) fn saved(&self, i: usize) -> &'a [T] {
        &self.nodes[i].saved
    }

    /// Whether node `i` wants a gradient contribution.
    pub(crate) fn needs(&self, i: usize) -> bool {
        self.needed[i]
    }

    /// The gradient buffer of node `i` and whether it is fresh. A fresh buffer holds garbage:
    /// the first contribution overwrites it (no zero fill followed by an add).
    pub(crate) fn grad(&mut self, i: usize) -> (&mut [T], bool) {
        let fresh = self.grads[i].is_none();
        if fresh {
            let len = self.nodes[i].shape.numel();
            self.grads[i] = Some(self.pool.take(len));
        }
        (self.grads[i].as_mut().expect("just set"), fresh)
    }

    /// Adds `L^T R` to the gradient of node `i` (`rows x cols`), where `L` is `depth x rows` and
    /// `R` is `depth x cols`, both row-major: kept as [`Factors`] in a factored pass when this is
    /// the only contribution a parameter receives and the shape allows it, else computed by
    /// [`product`] as every other contribution.
    pub(crate) fn add_transposed_product(
        &mut self,
        i: usize,
        (left, right): (&[T], &[T]),
        depth: usize,
        (rows, cols): (usize, usize),
    ) {
        let only_contribution = self.consumers.get(i) == Some(&1) && self.grads[i].is_none();
        let leaf_param = self.nodes[i].op.is_none() && self.nodes[i].param.is_some();
        if only_contribution && leaf_param && Factors::<T>::fits(depth, rows, cols) {
            let copy = |pool: &mut Pool<T>, v: &[T]| {
                let mut buf = pool.take(v.len());
                buf.copy_from_slice(v);
                buf
            };
            let factors = Factors::new(
                copy(self.pool, left),
                copy(self.pool, right),
                depth,
                rows,
                cols,
            );
            self.factored.push((i, factors));
            return;
        }
        let (g, fresh) = self.grad(i);
        product(
            MatRef::new(left, depth, rows).transpose(),
            MatRef::new(right, depth, cols),
            if fresh { T::ZERO } else { T::ONE },
            MatMut::new(g, rows, cols),
        );
    }

    /// Adds `contribution` to the gradient of `i`, moving it in when it is the first one.
    pub(crate) fn accumulate(&mut self, i: usize, contribution: Vec<T>) {
        match &mut self.grads[i] {
            Some(g) => {
                kernels::axpy(T::ONE, &contribution, g);
                self.pool.put(contribution);
            }
            slot @ None => *slot = Some(contribution),
        }
    }

    pub(crate) fn scratch(&mut self, len: usize) -> Vec<T> {
        self.pool.take(len)
    }
}

/// `dst = f(i)` when `fresh`, else `dst += f(i)`.
#[inline]
pub(crate) fn write_or_add<T: Float>(dst: &mut [T], fresh: bool, f: impl Fn(usize) -> T) {
    if fresh {
        for (i, d) in dst.iter_mut().enumerate() {
            *d = f(i);
        }
    } else {
        for (i, d) in dst.iter_mut().enumerate() {
            *d += f(i);
        }
    }
}
