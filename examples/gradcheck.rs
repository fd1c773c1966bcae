//! Checking the gradients of your own code in one call.
//!
//! 1. A graph recorded on `benign`'s tape with an op of your own: a gated layer
//!    `y = sigmoid(x a) * tanh(x b)`, where `sigmoid` is an elementwise op with a hand-written
//!    derivative (`Tape::map`), checked against central differences in f64, f32 against f64,
//!    reentrancy and 1 against 4 threads.
//! 2. A plain function with a hand-derived gradient: the paper model's logistic loss as a
//!    function of its attention parameter `p`, against the closed form.
//!
//! `cargo run --release --example gradcheck`; exits with status 1 if a check fails.

use benign::autodiff::{Tape, Var};
use benign::gradcheck::{self, Config, Input};
use benign::kernels::Float;

fn sigmoid<T: Float>(z: T) -> T {
    T::from_f64(1.0 / (1.0 + (-z.to_f64()).exp()))
}

/// `sigmoid'(z) = sigmoid(z) (1 - sigmoid(z))`: the derivative under test.
fn sigmoid_derivative<T: Float>(z: T) -> T {
    let s = sigmoid(z).to_f64();
    T::from_f64(s * (1.0 - s))
}

fn gated_layer<T: Float>(tape: &mut Tape<T>, v: &[Var]) -> Var {
    let (x, a, b) = (v[0], v[1], v[2]);
    let gate_logits = tape.matmul(x, a);
    let gate = tape.map(gate_logits, sigmoid::<T>, sigmoid_derivative::<T>);
    let value_logits = tape.matmul(x, b);
    let value = tape.tanh(value_logits);
    tape.mul(gate, value)
}

/// The model of the paper for one sample: `f = sum_t softmax(X W p)_t u_t` with `W` fixed, and
/// the logistic loss `log(1 + exp(-y f))`, as a function of `p` alone.
struct OneSample {
    /// `X W`, T x k.
    xw: Vec<Vec<f64>>,
    /// Token scores `u_t`.
    u: Vec<f64>,
    y: f64,
}

impl OneSample {
    fn attention(&self, p: &[f64]) -> Vec<f64> {
        let logits: Vec<f64> = self
            .xw
            .iter()
            .map(|row| row.iter().zip(p).map(|(a, b)| a * b).sum())
            .collect();
        let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let exp: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
        let total: f64 = exp.iter().sum();
        exp.iter().map(|e| e / total).collect()
    }

    fn output(&self, p: &[f64]) -> f64 {
        self.attention(p)
            .iter()
            .zip(&self.u)
            .map(|(s, u)| s * u)
            .sum()
    }

    fn loss(&self, p: &[f64]) -> f64 {
        let margin = self.y * self.output(p);
        // log(1 + e^-m) without overflow.
        (-margin).max(0.0) + (-margin.abs()).exp().ln_1p()
    }

    /// `dL/dp = -y sigmoid(-y f) sum_t s_t (u_t - f) (X W)_t`.
    fn gradient(&self, p: &[f64]) -> Vec<f64> {
        let s = self.attention(p);
        let f: f64 = s.iter().zip(&self.u).map(|(s, u)| s * u).sum();
        let outer = -self.y / (1.0 + (self.y * f).exp());
        let mut g = vec![0.0; p.len()];
        for ((row, s_t), u_t) in self.xw.iter().zip(&s).zip(&self.u) {
            for (g_k, x) in g.iter_mut().zip(row) {
                *g_k += outer * s_t * (u_t - f) * x;
            }
        }
        g
    }
}

fn main() -> Result<(), benign::Error> {
    let config = Config::default();

    let inputs = vec![
        Input::var("x", &[4, 3]),
        Input::var("a", &[3, 2]),
        Input::var("b", &[3, 2]),
    ];
    let layer = gradcheck::check_graph(
        "gated_layer",
        inputs,
        benign::gradcheck_builder!(gated_layer),
        &config,
    )?;
    println!("{}\n", layer.table());

    let sample = OneSample {
        xw: vec![
            vec![0.9, -0.3, 0.2],
            vec![-0.4, 0.8, 0.1],
            vec![0.3, 0.3, -0.7],
            vec![0.05, -0.2, 0.4],
        ],
        u: vec![1.0, -0.5, 0.3, 0.0],
        y: 1.0,
    };
    let p = [0.5, -1.0, 0.25];
    let closed_form = gradcheck::check_gradient(
        "paper_loss_wrt_p",
        &p,
        |p| sample.loss(p),
        |p| sample.gradient(p),
        &config,
    )?;
    println!("{}", closed_form.table());

    if !(layer.passed() && closed_form.passed()) {
        std::process::exit(1);
    }
    Ok(())
}
