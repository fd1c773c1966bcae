//! Training the paper's attention model from Rust: the Figure-3 setting (the defaults of
//! `benign run`) on a few seeds, without writing files, and what each run shows.
//!
//! `cargo run --release --example run_synthetic` (about a second per seed).

use benign::synthetic::{self, RunConfig, RunOptions};

fn main() -> Result<(), benign::Error> {
    println!("seed  observed regime        first step fitting all  train acc  test acc");
    for seed in 1..=3 {
        let config = RunConfig {
            seed,
            ..RunConfig::default()
        };
        // `RunOptions::default()` keeps everything in memory; `write_files` with an `out_dir`
        // writes the files `benign run` writes.
        let result = synthetic::run(config, RunOptions::default())?;
        let summary = &result.summary;
        let last = &summary.final_metrics;
        let fitted = summary
            .first_all_fitted_step
            .map_or("never".to_string(), |s| s.to_string());
        println!(
            "{seed:<5} {:<22} {fitted:<23} {:<10.3} {:.3}",
            summary.observed_regime.to_string(),
            last.train_acc,
            last.test_acc
        );
        // The whole history is in `result.records`, one entry per evaluation.
        assert_eq!(result.records.last().map(|r| r.step), Some(last.step));
    }
    Ok(())
}
