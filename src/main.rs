//! `mcp-operator`: wiring only; everything else is in the library.
use clap::Parser;

/// mimalloc instead of glibc's malloc: the operator holds tens of thousands of small cached
/// objects and churns through watch events, which glibc's arenas fragment (the scale benchmark's
/// resident memory is the measure).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    mcp_operator::runtime::run(mcp_operator::runtime::Args::parse()).await
}
