//! The transformer building blocks shared by the synthetic encoder, the real-data
//! classifier and the fine-tuning experiment: a pre-LayerNorm encoder block over the autodiff
//! tape, its parameters in a [`ParamStore`] under stable names, and PyTorch's default
//! initialisation.
//!
//! ```
//! use benign::autodiff::{ParamStore, Tape};
//! use benign::transformer::{block_forward, BlockConfig, BlockParams};
//! use rand::SeedableRng;
//!
//! let config = BlockConfig::new(8, 2, 16);
//! let mut store = ParamStore::<f64>::new();
//! let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
//! let params = BlockParams::new(&mut store, "blocks.0", &config, &mut rng).unwrap();
//! let mut tape = Tape::new();
//! let x = tape.constant(&[1, 3, 8], &[0.1; 24]);
//! let mask = [true, true, false]; // the third token is padding
//! let out = block_forward(&mut tape, &store, &params, &config, x, Some(&mask));
//! assert_eq!(tape.shape(out.attention).dims(), &[1, 2, 3, 3]);
//! assert_eq!(tape.value(out.attention)[2], 0.0); // no attention on the padding key
//! ```
//!
//! [`ParamStore`]: crate::autodiff::ParamStore

pub mod block;
pub mod layers;

pub use block::{
    attention_residual_and_mlp, block_forward, block_forward_vars, cls_block_forward_vars,
    key_padding_mask, BlockConfig, BlockOutput, BlockParams, BlockVars, ClsBlockOutput,
};
pub use layers::{init_uniform, linear_forward, LayerNormParams, Linear, LinearVars};
