//! `weir-bench engine`: the in-process storage benchmark (filled in with the engine).

#[derive(clap::Args, Debug)]
pub struct EngineArgs {}

pub fn run(_args: EngineArgs) -> anyhow::Result<()> {
    anyhow::bail!("weir-bench engine is not built yet")
}
