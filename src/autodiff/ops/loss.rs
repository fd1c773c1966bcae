//! Losses, each a scalar mean over the batch.
//!
//! Logistic loss in softplus form, labels `y_i` in {-1, +1}:
//!
//! ```text
//! L = (1/n) sum_i log(1 + exp(-y_i f_i)),   dL/df_i = (1/n) y_i l'(y_i f_i),  l'(m) = -1/(1 + e^m)
//! ```
//!
//! Cross-entropy with integer labels over logits `z` of shape `[N, C]`:
//!
//! ```text
//! L = -(1/N) sum_i log_softmax(z_i)[y_i],   dL/dz_ij = (1/N) (softmax(z_i)_j - [j = y_i])
//! ```

use benign_kernels::{self as kernels, Float};

use crate::autodiff::tape::{write_or_add, BackwardCtx, Tape, Var};
use crate::autodiff::tensor::Shape;

use super::SingleInputOp;

/// Saves the labels.
pub(crate) struct Logistic {
    f: usize,
}

/// Saves the log-probabilities.
pub(crate) struct CrossEntropy {
    logits: usize,
    labels: Vec<usize>,
}

impl<T: Float> Tape<T> {
    /// Mean logistic loss of the outputs `f` (any shape) against labels +-1 (one per element).
    pub fn logistic_loss(&mut self, f: Var, labels: &[T]) -> Var {
        let fi = self.check(f);
        let shape = self.node_shape(fi);
        assert_eq!(
            labels.len(),
            shape.numel(),
            "logistic_loss: {} labels for outputs of shape {shape}",
            labels.len()
        );
        let fv = self.node_value(fi);
        let total: T = fv
            .iter()
            .zip(labels)
            .map(|(&f, &y)| kernels::logistic_loss(y * f))
            .sum();
        let loss = total / T::from_usize(fv.len().max(1));
        let mut out = self.buffer(1);
        out[0] = loss;
        // The labels are copied only for a backward pass that will read them.
        let saved = if self.records(&[fi]) {
            let mut saved = self.buffer(labels.len());
            saved.copy_from_slice(labels);
            saved
        } else {
            Vec::new()
        };
        self.push_op(Shape::scalar(), out, Logistic { f: fi }, saved)
    }

    /// Mean cross-entropy of logits `[N, C]` against class indices (one per row, each `< C`).
    pub fn cross_entropy(&mut self, logits: Var, labels: &[usize]) -> Var {
        let li = self.check(logits);
        let (rows, classes) = self.matrix_dims(li, "cross_entropy: logits must be [N, C]");
        assert_eq!(
            labels.len(),
            rows,
            "cross_entropy: {} labels for logits [{rows}x{classes}]",
            labels.len()
        );
        if let Some(&bad) = labels.iter().find(|&&c| c >= classes) {
            panic!("cross_entropy: label {bad} out of range for {classes} classes");
        }
        let mut log_probs = self.buffer(rows * classes);
        kernels::log_softmax_rows(classes, self.node_value(li), &mut log_probs);
        let total: T = labels
            .iter()
            .enumerate()
            .map(|(i, &c)| log_probs[i * classes + c])
            .sum();
        let mut out = self.buffer(1);
        out[0] = -total / T::from_usize(rows.max(1));
        let labels = if self.records(&[li]) {
            labels.to_vec()
        } else {
            Vec::new()
        };
        let op = CrossEntropy { logits: li, labels };
        self.push_op(Shape::scalar(), out, op, log_probs)
    }
}

impl<T: Float> SingleInputOp<T> for Logistic {
    fn backward_input(&self, ctx: &mut BackwardCtx<'_, T>, out: usize, dy: &[T]) {
        let fv = ctx.value(self.f);
        let g = dy[0] / T::from_usize(fv.len().max(1));
        let labels = ctx.saved(out);
        let (df, fresh) = ctx.grad(self.f);
        write_or_add(df, fresh, |i| {
            let y = labels[i];
            g * y * kernels::logistic_loss_derivative(y * fv[i])
        });
    }
}

single_input_op!(Logistic, f);

impl<T: Float> SingleInputOp<T> for CrossEntropy {
    fn backward_input(&self, ctx: &mut BackwardCtx<'_, T>, out: usize, dy: &[T]) {
        let log_probs = ctx.saved(out);
        let rows = self.labels.len();
        let classes = log_probs.len() / rows.max(1);
        let g = dy[0] / T::from_usize(rows.max(1));
        let labels = &self.labels;
        let (dz, fresh) = ctx.grad(self.logits);
        write_or_add(dz, fresh, |e| {
            let (i, j) = (e / classes, e % classes);
            let target = if labels[i] == j { T::ONE } else { T::ZERO };
            g * (log_probs[e].exp() - target)
        });
    }
}

single_input_op!(CrossEntropy, logits);
