//! The integration tests, one module per area, linked into one test binary: each binary links
//! the whole `benign` library with its debug info, so ten of them took most of the test build.
//! `cargo test --release --test integration run::` runs one area.

mod autodiff;
mod boundary;
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

/// Whether the tests run in CI (`CI=true`), where nothing they need may be missing.
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Reports that `what` is missing: a failure in CI, a printed skip elsewhere. Returns false so
/// a test can `return` on it.
fn missing(what: &str) -> bool {
    assert!(
        !in_ci(),
        "{what}: required in CI (CI=true), where a test may not skip"
    );
    eprintln!("SKIPPED: {what}");
    false
}

/// The folder of the real datasets: `BENIGN_DATA_DIR`, else `../shared/data` beside the
/// project.
fn data_root() -> std::path::PathBuf {
    match std::env::var_os("BENIGN_DATA_DIR") {
        Some(dir) => std::path::PathBuf::from(dir),
        None => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"),
    }
}

/// The Python the tests call for numpy and pandas cross-checks: `BENIGN_PYTHON`, else `python3`.
fn python() -> String {
    std::env::var("BENIGN_PYTHON").unwrap_or_else(|_| "python3".into())
}
