//! Optimizers (PyTorch semantics and defaults) and global gradient-norm clipping.
//!
//! Both optimizers skip frozen parameters and parameters without a gradient, and read a
//! group's learning rate and weight decay when it sets them. Scalar coefficients are computed
//! in f64 and rounded once to the element type.

use benign_kernels::Float;
use rayon::prelude::*;

use super::gradients::{Gradients, ParamGrad};
use super::params::{ParamId, ParamStore};

fn lr_and_decay<T: Float>(
    store: &ParamStore<T>,
    id: ParamId,
    lr: f64,
    weight_decay: f64,
) -> (f64, f64) {
    let group = store.group(store.group_of(id));
    (
        group.lr.unwrap_or(lr),
        group.weight_decay.unwrap_or(weight_decay),
    )
}

/// Calls `update(state, value, gradient, lr, weight_decay)` for every trainable parameter of
/// `store` that `grads` holds a gradient of, in id order, with the optimizer's per-parameter
/// `state` slot (`None` before its first update) and its group's learning rate and weight decay
/// (`lr` and `weight_decay` where the group sets none): what every optimizer's step visits.
/// Stops at the first parameter whose `update` returns false, and returns it.
fn for_each_update<T: Float, S>(
    store: &mut ParamStore<T>,
    grads: &Gradients<T>,
    (lr, weight_decay): (f64, f64),
    states: &mut Vec<Option<S>>,
    mut update: impl FnMut(&mut Option<S>, &mut [T], ParamGrad<'_, T>, f64, f64) -> bool,
) -> Result<(), ParamId> {
    states.resize_with(store.len(), || None);
    let ids: Vec<ParamId> = store.ids().collect();
    for id in ids {
        let Some(g) = grads.param_grad(id) else {
            continue;
        };
        if !store.is_trainable(id) {
            continue;
        }
        let (lr, wd) = lr_and_decay(store, id, lr, weight_decay);
        let p = store.value_mut(id);
        assert_eq!(
            g.len(),
            p.len(),
            "gradient of parameter {} has the wrong length",
            id.0
        );
        if !update(&mut states[id.0], p, g, lr, wd) {
            return Err(id);
        }
    }
    Ok(())
}

/// [`for_each_update`] for rules that read the gradient element by element: a gradient held
/// as [`Factors`](super::Factors) is formed in a scratch buffer first.
fn for_each_dense_update<T: Float, S>(
    store: &mut ParamStore<T>,
    grads: &Gradients<T>,
    defaults: (f64, f64),
    states: &mut Vec<Option<S>>,
    mut update: impl FnMut(&mut Option<S>, &mut [T], &[T], f64, f64) -> bool,
) -> Result<(), ParamId> {
    let mut scratch = Vec::new();
    for_each_update(store, grads, defaults, states, |state, p, g, lr, wd| {
        update(state, p, g.dense(&mut scratch), lr, wd)
    })
}

/// Stochastic gradient descent with momentum and (L2, coupled) weight decay, as `torch.optim.SGD`
/// with `dampening = 0`, `nesterov = false`:
///
/// ```text
/// g <- g + wd p;   b <- g (first step) or mu b + g;   p <- p - lr b   (b = g when mu = 0)
/// ```
pub struct Sgd<T> {
    /// Learning rate of parameters whose group does not set one.
    pub lr: f64,
    /// Momentum `mu` (0: plain gradient descent).
    pub momentum: f64,
    /// L2 weight decay `wd`, added to the gradient, for groups that do not set one.
    pub weight_decay: f64,
    buffers: Vec<Option<Vec<T>>>,
}

impl<T: Float> Sgd<T> {
    /// Plain SGD at learning rate `lr`: no momentum, no weight decay.
    pub fn new(lr: f64) -> Self {
        Sgd {
            lr,
            momentum: 0.0,
            weight_decay: 0.0,
            buffers: Vec::new(),
        }
    }

    /// Sets the momentum.
    pub fn with_momentum(mut self, momentum: f64) -> Self {
        self.momentum = momentum;
        self
    }

    /// Sets the weight decay.
    pub fn with_weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = weight_decay;
        self
    }

    /// Updates every trainable parameter of `store` that `grads` holds a gradient of, in place.
    pub fn step(&mut self, store: &mut ParamStore<T>, grads: &Gradients<T>) {
        let mu = T::from_f64(self.momentum);
        let defaults = (self.lr, self.weight_decay);
        let applied = for_each_dense_update(
            store,
            grads,
            defaults,
            &mut self.buffers,
            |buffer, p, g, lr, wd| {
                let (lr, wd) = (T::from_f64(lr), T::from_f64(wd));
                if self.momentum == 0.0 {
                    plain_update(p, g, lr, wd);
                    return true;
                }
                match buffer {
                    slot @ None => {
                        let buf: Vec<T> = p.iter().zip(g).map(|(&pv, &gv)| gv + wd * pv).collect();
                        for (pv, &b) in p.iter_mut().zip(&buf) {
                            *pv -= lr * b;
                        }
                        *slot = Some(buf);
                    }
                    Some(buf) => {
                        for ((pv, &gv), b) in p.iter_mut().zip(g).zip(buf.iter_mut()) {
                            *b = mu * *b + gv + wd * *pv;
                            *pv -= lr * *b;
                        }
                    }
                }
                true
            },
        );
        debug_assert!(applied.is_ok(), "every update applies");
    }
}

impl<T: Float> Sgd<T> {
    /// [`Sgd::step`] applying only finite gradients: returns the first parameter, in id order,
    /// whose gradient holds an infinity or a NaN, as soon as it meets it. Without momentum the
    /// check and the update share one pass over memory, chunk by chunk on the current rayon pool
    /// (each chunk checked just before it is applied; the update is elementwise, so the thread
    /// count never changes a bit): on error the parameters before the reported one, and chunks of
    /// it, are already updated, and the caller is expected to abandon the state (a run stops at
    /// a non-finite gradient). With momentum every gradient is checked before any update.
    ///
    /// A gradient held as [`Factors`](super::Factors) (from [`Tape::backward_factored`]) is
    /// applied without being formed, as one GEMM `p <- p - lr L^T R` into the parameter, when
    /// there is no weight decay and the factors bound every element of the product below
    /// overflow ([`Factors::certainly_finite`](super::Factors::certainly_finite)): bit for bit
    /// the update of the formed gradient, for every finite parameter. Otherwise it is formed
    /// and checked as any other.
    ///
    /// [`Tape::backward_factored`]: super::Tape::backward_factored
    pub fn step_finite(
        &mut self,
        store: &mut ParamStore<T>,
        grads: &Gradients<T>,
    ) -> Result<(), ParamId> {
        let mut scratch = Vec::new();
        if self.momentum != 0.0 {
            let applied = |id: &ParamId| store.is_trainable(*id) && grads.param_grad(*id).is_some();
            let ids: Vec<ParamId> = store.ids().filter(applied).collect();
            if let Some(&bad) = ids.iter().find(|&&id| {
                !grads
                    .param_grad(id)
                    .is_some_and(|g| all_finite(g.dense(&mut scratch)))
            }) {
                return Err(bad);
            }
            self.step(store, grads);
            return Ok(());
        }
        let defaults = (self.lr, self.weight_decay);
        // Plain SGD keeps no state: the slots are zero-sized.
        let mut stateless: Vec<Option<()>> = Vec::new();
        for_each_update(store, grads, defaults, &mut stateless, |_, p, g, lr, wd| {
            let (lr, wd) = (T::from_f64(lr), T::from_f64(wd));
            if let ParamGrad::Factored(f) = g {
                // `p - lr (g + 0 p)` is `p - lr g` for a finite p, whatever the signs of zeros.
                if wd == T::ZERO && f.certainly_finite() {
                    f.apply(T::ZERO - lr, T::ONE, p);
                    return true;
                }
            }
            let g = g.dense(&mut scratch);
            p.par_chunks_mut(CHECKED_CHUNK)
                .zip(g.par_chunks(CHECKED_CHUNK))
                .all(|(p, g)| {
                    let finite = all_finite(g);
                    if finite {
                        plain_update(p, g, lr, wd);
                    }
                    finite
                })
        })
    }
}

/// Elements of a gradient [`Sgd::step_finite`] checks and applies at a time: the chunk of the
/// gradient and of the parameter stay in the core's L1/L2 cache between the two.
const CHECKED_CHUNK: usize = 8192;

/// Whether every element is finite; no early exit, so the loop vectorises.
fn all_finite<T: Float>(values: &[T]) -> bool {
    values.iter().fold(true, |all, v| all & v.is_finite())
}

/// `p <- p - lr (g + wd p)`, plain SGD's update.
fn plain_update<T: Float>(p: &mut [T], g: &[T], lr: T, wd: T) {
    for (pv, &gv) in p.iter_mut().zip(g) {
        *pv -= lr * (gv + wd * *pv);
    }
}

/// AdamW (decoupled weight decay, bias correction), as `torch.optim.AdamW` with its defaults
/// `lr = 1e-3, betas = (0.9, 0.999), eps = 1e-8, weight_decay = 1e-2`:
///
/// ```text
/// p <- p (1 - lr wd)
/// m <- b1 m + (1 - b1) g          v <- b2 v + (1 - b2) g^2
/// p <- p - (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps)
/// ```
pub struct AdamW<T> {
    /// Learning rate of parameters whose group does not set one.
    pub lr: f64,
    /// Decay of the first-moment average `b1`.
    pub beta1: f64,
    /// Decay of the second-moment average `b2`.
    pub beta2: f64,
    /// Added to the bias-corrected root second moment, against division by zero.
    pub eps: f64,
    /// Decoupled weight decay `wd`, for groups that do not set one.
    pub weight_decay: f64,
    state: Vec<Option<AdamState<T>>>,
}

struct AdamState<T> {
    step: i32,
    m: Vec<T>,
    v: Vec<T>,
}

impl<T: Float> Default for AdamW<T> {
    fn default() -> Self {
        AdamW {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-2,
            state: Vec::new(),
        }
    }
}

impl<T: Float> AdamW<T> {
    /// PyTorch defaults with learning rate `lr`.
    pub fn new(lr: f64) -> Self {
        AdamW {
            lr,
            ..Self::default()
        }
    }

    /// Sets the weight decay.
    pub fn with_weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = weight_decay;
        self
    }

    /// Sets `b1` and `b2`.
    pub fn with_betas(mut self, beta1: f64, beta2: f64) -> Self {
        self.beta1 = beta1;
        self.beta2 = beta2;
        self
    }

    /// Sets `eps`.
    pub fn with_eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }

    /// Updates every trainable parameter of `store` that `grads` holds a gradient of, in place;
    /// each parameter's step count starts at its first update.
    pub fn step(&mut self, store: &mut ParamStore<T>, grads: &Gradients<T>) {
        let (b1, b2, eps) = (
            T::from_f64(self.beta1),
            T::from_f64(self.beta2),
            T::from_f64(self.eps),
        );
        let defaults = (self.lr, self.weight_decay);
        let applied = for_each_dense_update(
            store,
            grads,
            defaults,
            &mut self.state,
            |state, p, g, lr, wd| {
                let state = state.get_or_insert_with(|| AdamState {
                    step: 0,
                    m: vec![T::ZERO; g.len()],
                    v: vec![T::ZERO; g.len()],
                });
                state.step += 1;
                let bias1 = 1.0 - self.beta1.powi(state.step);
                let bias2 = 1.0 - self.beta2.powi(state.step);
                let decay = T::from_f64(1.0 - lr * wd);
                let step_size = T::from_f64(lr / bias1);
                let inv_sqrt_bias2 = T::from_f64(1.0 / bias2.sqrt());
                for (((pv, &gv), m), v) in p.iter_mut().zip(g).zip(&mut state.m).zip(&mut state.v) {
                    *pv *= decay;
                    *m = b1 * *m + (T::ONE - b1) * gv;
                    *v = b2 * *v + (T::ONE - b2) * gv * gv;
                    let denom = v.sqrt() * inv_sqrt_bias2 + eps;
                    *pv -= step_size * *m / denom;
                }
                true
            },
        );
        debug_assert!(applied.is_ok(), "every update applies");
    }
}

impl<T: Float> AdamW<T> {
    /// Step count and first and second moment estimates of parameter `id` (`None` before its
    /// first update), e.g. to save them in a checkpoint.
    pub fn moments(&self, id: ParamId) -> Option<(i32, &[T], &[T])> {
        self.state
            .get(id.0)?
            .as_ref()
            .map(|s| (s.step, s.m.as_slice(), s.v.as_slice()))
    }

    /// Restores the state [`AdamW::moments`] returned, so a resumed run continues exactly.
    pub fn set_moments(&mut self, id: ParamId, step: i32, m: Vec<T>, v: Vec<T>) {
        assert_eq!(m.len(), v.len(), "AdamW moments of different lengths");
        if self.state.len() <= id.0 {
            self.state.resize_with(id.0 + 1, || None);
        }
        self.state[id.0] = Some(AdamState { step, m, v });
    }
}

/// Scales all gradients by `max_norm / (norm + 1e-6)` when their global L2 norm exceeds
/// `max_norm` (as `torch.nn.utils.clip_grad_norm_`). Returns the norm before clipping.
pub fn clip_grad_norm<T: Float>(grads: &mut Gradients<T>, max_norm: f64) -> f64 {
    grads.densify();
    let total: f64 = grads
        .entries()
        .iter()
        .flat_map(|e| e.grad.iter())
        .map(|&g| g.to_f64() * g.to_f64())
        .sum::<f64>()
        .sqrt();
    if total > max_norm {
        let factor = T::from_f64(max_norm / (total + 1e-6));
        for e in grads.entries_mut() {
            benign_kernels::scale(factor, &mut e.grad);
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autodiff::gradients::{Factors, GradEntry};
    use crate::autodiff::Tensor;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Three parameters, the middle one spanning several checked chunks, with gradients.
    fn setup(seed: u64) -> (ParamStore<f32>, Gradients<f32>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut draw =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-2.0..2.0)).collect() };
        let mut store = ParamStore::new();
        let mut entries = Vec::new();
        for (i, len) in [7, 3 * CHECKED_CHUNK + 5, 300].into_iter().enumerate() {
            let id = store.add(&format!("p{i}"), Tensor::new(&[len], draw(len)));
            entries.push(GradEntry::new(i, Some(id), draw(len)));
        }
        (store, Gradients::new(0, entries))
    }

    /// Two `rows x cols` parameters whose gradients are held as factors of depth 20, beside a
    /// plain one, every value drawn with zeros of both signs among them; and the same
    /// gradients formed.
    fn factored_setup(seed: u64) -> (ParamStore<f32>, Gradients<f32>, Gradients<f32>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut draw = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|i| match i % 11 {
                    0 => 0.0,
                    1 => -0.0,
                    _ => rng.random_range(-2.0..2.0),
                })
                .collect()
        };
        let (depth, rows, cols) = (20, 30, 70);
        let mut store = ParamStore::new();
        let (mut factored, mut formed) = (Vec::new(), Vec::new());
        for i in 0..2 {
            let id = store.add(
                &format!("w{i}"),
                Tensor::new(&[rows, cols], draw(rows * cols)),
            );
            let f = Factors::new(draw(depth * rows), draw(depth * cols), depth, rows, cols);
            formed.push(GradEntry::new(i, Some(id), f.form()));
            factored.push(GradEntry::factored(i, Some(id), f));
        }
        let id = store.add("b", Tensor::new(&[9], draw(9)));
        let g = draw(9);
        formed.push(GradEntry::new(2, Some(id), g.clone()));
        factored.push(GradEntry::new(2, Some(id), g));
        (
            store,
            Gradients::new(0, factored),
            Gradients::new(0, formed),
        )
    }

    /// A gradient held as factors updates the parameters bit for bit as the formed gradient
    /// does: through the one-GEMM update (plain SGD) and through the formed path (weight
    /// decay, momentum), on 1 and 3 threads, over two steps.
    #[test]
    fn factored_gradients_update_as_formed_ones() {
        for (momentum, weight_decay) in [(0.0, 0.0), (0.0, 0.03), (0.9, 0.0)] {
            let make = || sgd(momentum, weight_decay);
            let (mut expected, _, formed) = factored_setup(3);
            let mut sgd = make();
            sgd.step_finite(&mut expected, &formed).unwrap();
            sgd.step_finite(&mut expected, &formed).unwrap();
            for threads in [1, 3] {
                let (mut store, factored, _) = factored_setup(3);
                let mut sgd = make();
                in_pool(threads, || {
                    sgd.step_finite(&mut store, &factored).unwrap();
                    sgd.step_finite(&mut store, &factored).unwrap();
                });
                let bits = |s: &ParamStore<f32>| -> Vec<Vec<u32>> {
                    values(s)
                        .iter()
                        .map(|v| v.iter().map(|x| x.to_bits()).collect())
                        .collect()
                };
                assert_eq!(
                    bits(&store),
                    bits(&expected),
                    "momentum {momentum}, wd {weight_decay}, {threads} threads"
                );
            }
        }
    }

    /// A factor holding a non-finite value, or finite factors whose product overflows, names
    /// the parameter as a formed non-finite gradient would.
    #[test]
    fn factored_gradients_that_are_not_finite_are_refused() {
        let (depth, rows, cols) = (4, 3, 5);
        let cases: [(f32, f32); 3] = [(f32::NAN, 1.0), (f32::INFINITY, 1.0), (3e19, 3e19)];
        for (left, right) in cases {
            let mut store = ParamStore::<f32>::new();
            let first = store.add("first", Tensor::new(&[2], vec![1.0, 2.0]));
            let id = store.add("w", Tensor::new(&[rows, cols], vec![0.5; rows * cols]));
            let mut l = vec![1.0; depth * rows];
            l[5] = left;
            let f = Factors::new(l, vec![right; depth * cols], depth, rows, cols);
            assert!(!f.certainly_finite());
            let grads = Gradients::new(
                0,
                vec![
                    GradEntry::new(0, Some(first), vec![0.25, 0.5]),
                    GradEntry::factored(1, Some(id), f),
                ],
            );
            let result = Sgd::new(0.1).step_finite(&mut store, &grads);
            assert_eq!(result, Err(id), "factors {left} and {right}");
        }
    }

    /// The SGD the step tests compare, at learning rate 0.07.
    fn sgd(momentum: f64, weight_decay: f64) -> Sgd<f32> {
        Sgd::new(0.07)
            .with_momentum(momentum)
            .with_weight_decay(weight_decay)
    }

    fn values(store: &ParamStore<f32>) -> Vec<Vec<f32>> {
        store.ids().map(|id| store.value(id).to_vec()).collect()
    }

    fn in_pool<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(f)
    }

    /// On finite gradients `step_finite` is `step` bit for bit, on 1 and 3 threads, with and
    /// without weight decay and momentum (two steps, so momentum's buffers are used).
    #[test]
    fn step_finite_is_step_on_finite_gradients() {
        for (momentum, weight_decay) in [(0.0, 0.0), (0.0, 0.03), (0.9, 0.01)] {
            let make = || sgd(momentum, weight_decay);
            let (mut expected, grads) = setup(1);
            let mut sgd = make();
            sgd.step(&mut expected, &grads);
            sgd.step(&mut expected, &grads);
            for threads in [1, 3] {
                let (mut store, grads) = setup(1);
                let mut sgd = make();
                in_pool(threads, || {
                    sgd.step_finite(&mut store, &grads).unwrap();
                    sgd.step_finite(&mut store, &grads).unwrap();
                });
                assert_eq!(
                    values(&store),
                    values(&expected),
                    "momentum {momentum}, wd {weight_decay}, {threads} threads"
                );
            }
        }
    }

    /// A non-finite value anywhere names the first parameter holding one; with momentum nothing
    /// is updated, and parameters after the reported one never are.
    #[test]
    fn step_finite_names_the_first_non_finite_gradient() {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            for momentum in [0.0, 0.5] {
                let (mut store, mut grads) = setup(2);
                let before = values(&store);
                // in the middle parameter's last chunk, and in the last parameter
                grads.entries_mut()[1].grad[3 * CHECKED_CHUNK + 1] = bad;
                grads.entries_mut()[2].grad[0] = bad;
                let mut sgd = Sgd::new(0.1).with_momentum(momentum);
                let ids: Vec<ParamId> = store.ids().collect();
                assert_eq!(sgd.step_finite(&mut store, &grads), Err(ids[1]));
                let after = values(&store);
                assert_eq!(after[2], before[2]);
                if momentum != 0.0 {
                    assert_eq!(after, before);
                } else {
                    assert_ne!(after[0], before[0]);
                }
            }
        }
    }
}
