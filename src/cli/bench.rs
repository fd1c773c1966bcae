//! `benign bench`: the kernel report for this machine.

use clap::Args;

#[derive(Args)]
pub struct BenchArgs {
    /// Print one JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Threads to run the kernels on (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Fewer shapes and shorter timing, for a quick look.
    #[arg(long)]
    pub quick: bool,
}

pub fn execute(_args: BenchArgs) -> anyhow::Result<i32> {
    anyhow::bail!("benign bench is being written")
}
