//! Optimizers (PyTorch semantics and defaults) and global gradient-norm clipping.
//!
//! Both optimizers skip frozen parameters and parameters without a gradient, and read a
//! group's learning rate and weight decay when it sets them. Scalar coefficients are computed
//! in f64 and rounded once to the element type.

use benign_kernels::Float;

use super::gradients::Gradients;
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
fn for_each_update<T: Float, S>(
    store: &mut ParamStore<T>,
    grads: &Gradients<T>,
    (lr, weight_decay): (f64, f64),
    states: &mut Vec<Option<S>>,
    mut update: impl FnMut(&mut Option<S>, &mut [T], &[T], f64, f64),
) {
    states.resize_with(store.len(), || None);
    let ids: Vec<ParamId> = store.ids().collect();
    for id in ids {
        let Some(g) = grads.param(id) else { continue };
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
        update(&mut states[id.0], p, g, lr, wd);
    }
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
        for_each_update(
            store,
            grads,
            defaults,
            &mut self.buffers,
            |buffer, p, g, lr, wd| {
                let (lr, wd) = (T::from_f64(lr), T::from_f64(wd));
                if self.momentum == 0.0 {
                    for (pv, &gv) in p.iter_mut().zip(g) {
                        *pv -= lr * (gv + wd * *pv);
                    }
                    return;
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
            },
        );
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
        for_each_update(
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
            },
        );
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
