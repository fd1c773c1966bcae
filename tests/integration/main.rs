//! The integration tests, one module per area, linked into one test binary: each binary links
//! the whole `benign` library with its debug info, so ten of them took most of the test build.
//! `cargo test --release --test integration run::` runs one area.

mod autodiff;
mod cli_bench;
mod encoder;
mod finetune;
mod gradcheck;
mod io_plot;
mod pretrain;
mod realdata;
mod run;
mod sweep;
