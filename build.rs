//! Embeds benign's own source revision, so every output records the code that produced it
//! wherever the binary is launched from: `BENIGN_GIT_COMMIT` (12 hex digits, or `unknown`
//! outside a git checkout, e.g. a crates.io tarball) and `BENIGN_GIT_DIRTY` (`true`, `false` or
//! `unknown`: whether tracked files differed from that commit when this binary was built).

use std::path::Path;
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    // `--no-optional-locks`: `git status` would otherwise refresh the index, whose change makes
    // cargo run this script again on every build.
    let out = Command::new("git")
        .arg("--no-optional-locks")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let commit = git(root, &["rev-parse", "--short=12", "HEAD"]).filter(|s| !s.is_empty());
    let dirty = match &commit {
        // Untracked files do not change the build; modified tracked files do.
        Some(_) => git(root, &["status", "--porcelain", "--untracked-files=no"])
            .map_or("unknown", |s| if s.is_empty() { "false" } else { "true" }),
        None => "unknown",
    };
    println!(
        "cargo:rustc-env=BENIGN_GIT_COMMIT={}",
        commit.as_deref().unwrap_or("unknown")
    );
    println!("cargo:rustc-env=BENIGN_GIT_DIRTY={dirty}");
    // Rerun when the commit moves or the sources change (cargo scans directories recursively).
    // `--git-path` resolves each file in worktrees too (HEAD and index per worktree, refs shared).
    let mut watched = vec![
        "HEAD".to_string(),
        "index".to_string(),
        "packed-refs".to_string(),
    ];
    watched.extend(git(root, &["symbolic-ref", "-q", "HEAD"]));
    for file in watched {
        // Only existing files: cargo treats a missing one as changed, on every build.
        if let Some(path) = git(root, &["rev-parse", "--git-path", &file]) {
            let path = root.join(path);
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
    for path in ["src", "kernels/src", "Cargo.toml", "Cargo.lock", "build.rs"] {
        println!("cargo:rerun-if-changed={}", root.join(path).display());
    }
}
