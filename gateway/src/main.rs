//! mcp-gateway binary: parse arguments, set up logs, run until SIGTERM or Ctrl-C.

use clap::Parser;
use mcp_gateway::config::Args;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = if args.worker_threads == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(args.worker_threads.into()).enable_all().build()?
    };
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if std::env::var("LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
    if let Some(admin) = args.drain {
        mcp_gateway::admin::request_drain(admin).await?;
        tracing::info!(%admin, "drained");
        return Ok(());
    }
    if let Some(to) = &args.install_to {
        mcp_gateway::config::install_self(to)?;
        tracing::info!(path = %to.display(), "installed");
        return Ok(());
    }
    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    mcp_gateway::server::run(args, shutdown, |_| {}).await
}
