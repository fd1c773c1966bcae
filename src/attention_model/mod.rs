//! The paper's attention model `f(X) = nu^T X^T softmax(X W p)` (docs/model.md section 3), the
//! oracle the trainers and the autodiff are tested against.
//!
//! [`closed_form`] computes its forward pass and closed-form gradient directly; [`tape`] builds
//! the same model on the autodiff tape (the dense trainer's path).

pub mod closed_form;
pub mod tape;
