//! `mcp-operator`: wiring only; everything else is in the library.
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    mcp_operator::runtime::run(mcp_operator::runtime::Args::parse()).await
}
