//! The integration tests, one module per area, linked into one test binary: each binary links
//! the whole `benign` library with its debug info, so ten of them took most of the test build.
//! `cargo test --release --test integration run::` runs one area.

mod autodiff;
mod cli_bench;
mod cluster;
mod encoder;
mod finetune;
mod gradcheck;
mod io_plot;
mod law;
mod pretrain;
mod realdata;
mod run;
mod safety;
mod sweep;

/// The `benign` binary built with these tests.
fn bin() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_benign"))
}

/// A fresh (removed, not yet created) directory under the system temp dir for test `name` of
/// `area`, unique to this process.
fn temp_scratch(area: &str, name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("benign-{area}-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Panics with the status and both streams unless the command succeeded.
fn ok(output: &std::process::Output) {
    assert!(
        output.status.success(),
        "status {:?}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
