//! `benign`: an engine for studying how attention selects tokens when training labels are noisy.
//!
//! Modules follow the data's path: the synthetic data and model of the paper, the trainers, the
//! metrics and the reports; underneath them a small tape-based autodiff over the SIMD kernels of
//! [`benign_kernels`], and the gradient checker that verifies it.

#![warn(missing_docs)]

pub mod attention_model;
pub mod autodiff;
pub mod bench;
pub mod boundary;
pub mod classifier;
pub mod cpu;
pub mod error;
pub mod finetune;
pub mod gradcheck;
pub mod io;
pub mod plot;
pub mod provenance;
pub mod realdata;
pub mod rundir;
pub mod seed;
#[cfg(test)]
pub(crate) mod stats;
pub mod sweep;
pub mod synthetic;
pub mod transformer;

pub use benign_kernels as kernels;
pub use cpu::MAX_THREADS;
pub use error::{Error, Result};
