//! A small sweep from Rust: label-noise rate eta in {0.1, 0.2} x 2 seeds on the Figure-3
//! setting (200 steps), run in parallel into a temporary folder, then read back.
//!
//! `cargo run --release --example sweep`.

use benign::sweep::{self, parse_axis, ExecOptions, SweepSpec};
use benign::synthetic::RunConfig;

fn main() -> Result<(), benign::Error> {
    let base = RunConfig {
        steps: 200,
        ..RunConfig::default()
    };
    let spec = SweepSpec::new(base, vec![parse_axis("eta=0.1,0.2")?], 2, false)?;
    let dir = std::env::temp_dir().join(format!("benign-example-sweep-{}", std::process::id()));
    let report = sweep::run_sweep(&spec, &dir, &ExecOptions::default(), &|_| {})?;
    println!(
        "{} runs ({} failed) in {:.1} s on {} threads",
        report.ran, report.failed, report.wall_seconds, report.threads
    );
    // One durable record per run; `benign plot DIR` would draw the figures from them.
    let (records, _) = sweep::results::collect(std::slice::from_ref(&dir))?;
    for r in &records {
        let test_acc = r.final_metrics.as_ref().map_or(f64::NAN, |m| m.test_acc);
        println!(
            "eta={} seed#{}  regime {:<20} test acc {test_acc:.3}",
            r.params["eta"],
            r.seed_index,
            r.observed_regime
                .map_or("(failed)".to_string(), |g| g.to_string()),
        );
    }
    std::fs::remove_dir_all(&dir).map_err(|source| benign::Error::Io { path: dir, source })?;
    Ok(())
}
