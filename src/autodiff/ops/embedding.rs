//! Embedding lookup: row `ids[r]` of a table `[V, D]` becomes row `r` of the output
//! `[ids.len(), D]`. Backward scatter-adds: `dtable[ids[r]] += dy[r]` (an id that appears twice
//! receives both rows).

use benign_kernels::{self as kernels, Float};

use crate::autodiff::tape::{BackwardCtx, Tape, Var};
use crate::autodiff::tensor::Shape;

use super::SingleInputOp;

pub(crate) struct Embedding {
    table: usize,
    ids: Vec<usize>,
    width: usize,
}

impl<T: Float> Tape<T> {
    /// Gathers rows of `table` (shape `[V, D]`) by id; the output has shape `[ids.len(), D]`.
    pub fn embedding(&mut self, table: Var, ids: &[usize]) -> Var {
        let ti = self.check(table);
        let (vocab, width) = self.matrix_dims(ti, "embedding: table must be [V, D]");
        if let Some(&bad) = ids.iter().find(|&&id| id >= vocab) {
            panic!("embedding: id {bad} out of range for a table of {vocab} rows");
        }
        let mut out = self.buffer(ids.len() * width);
        let tv = self.node_value(ti);
        for (row, &id) in out.chunks_exact_mut(width.max(1)).zip(ids) {
            row.copy_from_slice(&tv[id * width..(id + 1) * width]);
        }
        let shape = Shape::new(&[ids.len(), width]);
        // The ids are copied only for a backward pass that will read them.
        let ids = if self.records(&[ti]) {
            ids.to_vec()
        } else {
            Vec::new()
        };
        let op = Embedding {
            table: ti,
            ids,
            width,
        };
        self.push_op(shape, out, op, Vec::new())
    }
}

impl<T: Float> SingleInputOp<T> for Embedding {
    fn backward_input(&self, ctx: &mut BackwardCtx<'_, T>, _out: usize, dy: &[T]) {
        let width = self.width;
        let (dt, fresh) = ctx.grad(self.table);
        if fresh {
            dt.iter_mut().for_each(|v| *v = T::ZERO);
        }
        for (r, &id) in self.ids.iter().enumerate() {
            kernels::axpy(
                T::ONE,
                &dy[r * width..(r + 1) * width],
                &mut dt[id * width..(id + 1) * width],
            );
        }
    }
}

single_input_op!(Embedding, table);
