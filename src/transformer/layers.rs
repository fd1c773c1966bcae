//! The parameterised layers a transformer is made of, as [`ParamStore`] entries: a linear map
//! (PyTorch layout, `weight [out, in]`, `y = x W^T + b`) and the affine part of a LayerNorm, with
//! PyTorch's default initialisation drawn from a caller's RNG.
//!
//! PyTorch's `nn.Linear` initialises its weight with kaiming-uniform at `a = sqrt(5)`, i.e.
//! `U(-b, b)` with `b = gain sqrt(3 / fan_in)`, `gain = sqrt(2 / (1 + a^2)) = sqrt(1/3)`, which is
//! `b = 1 / sqrt(fan_in)`; its bias is `U(-1/sqrt(fan_in), 1/sqrt(fan_in)))` as well. LayerNorm
//! starts at weight 1, bias 0.

use benign_kernels::Float;
use rand::Rng;

use crate::autodiff::{ParamId, ParamStore, Tape, Tensor, Var};

/// Fills parameter `id` with independent `U(-bound, bound)` draws (drawn in f64, in element
/// order, then rounded to `T`).
pub fn init_uniform<T: Float>(
    store: &mut ParamStore<T>,
    id: ParamId,
    bound: f64,
    rng: &mut impl Rng,
) {
    for v in store.value_mut(id) {
        *v = T::from_f64(rng.random_range(-bound..bound));
    }
}

/// A linear map `y = x W^T + b` over the last axis; `weight` has shape `[out, in]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Linear {
    /// `W`, shape `[out_features, in_features]`.
    pub weight: ParamId,
    /// `b`, shape `[out_features]`; `None` for a map without bias.
    pub bias: Option<ParamId>,
    /// Width of the input's last axis.
    pub in_features: usize,
    /// Width of the output's last axis.
    pub out_features: usize,
}

/// The tape handles of a [`Linear`] (or of free variables shaped like one, for gradient checks).
#[derive(Clone, Copy, Debug)]
pub struct LinearVars {
    /// `W`, shape `[out, in]`.
    pub weight: Var,
    /// `b`, shape `[out]`, if any.
    pub bias: Option<Var>,
}

impl Linear {
    /// Adds `{name}.weight` `[out, in]` (and `{name}.bias` `[out]`) to `store`, initialised as
    /// PyTorch does (weight first, then bias).
    pub fn new<T: Float>(
        store: &mut ParamStore<T>,
        name: &str,
        in_features: usize,
        out_features: usize,
        bias: bool,
        rng: &mut impl Rng,
    ) -> Self {
        let weight = store.add(
            &format!("{name}.weight"),
            Tensor::zeros(&[out_features, in_features]),
        );
        let bias = bias.then(|| store.add(&format!("{name}.bias"), Tensor::zeros(&[out_features])));
        let linear = Linear {
            weight,
            bias,
            in_features,
            out_features,
        };
        let ids: Vec<ParamId> = linear.ids().collect();
        linear.reset(store, &ids, rng);
        linear
    }

    /// `1 / sqrt(fan_in)`, the bound of both the weight's and the bias's uniform draws.
    pub fn init_bound(&self) -> f64 {
        1.0 / (self.in_features.max(1) as f64).sqrt()
    }

    /// Redraws those of this layer's parameters that `ids` lists (weight before bias).
    pub fn reset<T: Float>(&self, store: &mut ParamStore<T>, ids: &[ParamId], rng: &mut impl Rng) {
        let bound = self.init_bound();
        for id in std::iter::once(self.weight).chain(self.bias) {
            if ids.contains(&id) {
                init_uniform(store, id, bound, rng);
            }
        }
    }

    /// Puts the layer's parameters on `tape` (trainable unless frozen) and returns their handles.
    pub fn vars<T: Float>(&self, tape: &mut Tape<T>, store: &ParamStore<T>) -> LinearVars {
        LinearVars {
            weight: tape.param(store, self.weight),
            bias: self.bias.map(|b| tape.param(store, b)),
        }
    }

    /// The weight's id, then the bias's if any.
    pub fn ids(&self) -> impl Iterator<Item = ParamId> {
        std::iter::once(self.weight).chain(self.bias)
    }
}

/// `x W^T + b` for `x` of shape `[..., in]`: one GEMM over all leading rows, accumulated onto
/// the bias (one tape op).
pub fn linear_forward<T: Float>(tape: &mut Tape<T>, x: Var, layer: &LinearVars) -> Var {
    tape.linear(x, layer.weight, layer.bias)
}

/// The affine parameters of a LayerNorm over a width-`width` axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerNormParams {
    /// The scale `gamma`, shape `[width]` (PyTorch's `weight`).
    pub gamma: ParamId,
    /// The shift `beta`, shape `[width]` (PyTorch's `bias`).
    pub beta: ParamId,
}

impl LayerNormParams {
    /// Adds `{name}.weight` (ones) and `{name}.bias` (zeros), PyTorch's names and start.
    pub fn new<T: Float>(store: &mut ParamStore<T>, name: &str, width: usize) -> Self {
        let gamma = store.add(
            &format!("{name}.weight"),
            Tensor::new(&[width], vec![T::ONE; width]),
        );
        let beta = store.add(&format!("{name}.bias"), Tensor::zeros(&[width]));
        LayerNormParams { gamma, beta }
    }

    /// Resets those of the two that `ids` lists to 1 and 0.
    pub fn reset<T: Float>(&self, store: &mut ParamStore<T>, ids: &[ParamId]) {
        if ids.contains(&self.gamma) {
            store.value_mut(self.gamma).fill(T::ONE);
        }
        if ids.contains(&self.beta) {
            store.value_mut(self.beta).fill(T::ZERO);
        }
    }

    /// Puts `(gamma, beta)` on `tape` and returns their handles.
    pub fn vars<T: Float>(&self, tape: &mut Tape<T>, store: &ParamStore<T>) -> (Var, Var) {
        (tape.param(store, self.gamma), tape.param(store, self.beta))
    }

    /// `gamma`'s id, then `beta`'s.
    pub fn ids(&self) -> impl Iterator<Item = ParamId> {
        [self.gamma, self.beta].into_iter()
    }
}
