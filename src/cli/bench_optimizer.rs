//! `deopt bench optimizer` (being written).
#[derive(Debug, clap::Args)]
pub struct BenchOptimizerArgs {}
pub fn run(_args: BenchOptimizerArgs) -> anyhow::Result<()> {
    anyhow::bail!("deopt bench optimizer is being written")
}
