//! `deopt model` (being written).
#[derive(Debug, clap::Args)]
pub struct ModelArgs {}
pub fn run(_args: ModelArgs) -> anyhow::Result<()> {
    anyhow::bail!("deopt model is being written")
}
