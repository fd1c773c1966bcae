//! Models of `benign`.
//!
//! [`attention`] is the paper's model `f(X) = nu^T X^T softmax(X W p)` with its closed-form
//! gradient (docs/model.md section 3); it is the oracle that the autodiff version and the trainers are
//! tested against.

pub mod attention;
pub mod attention_tape;
