//! One module per subcommand. Each exposes `Args` (clap) and `run(Args) -> anyhow::Result<ExitCode>`.

pub mod balance;
pub mod chap_file;
pub mod demo;
pub mod demo_links;
pub mod io;
pub mod isns;
pub mod isns_bench;
pub mod packaging;
pub mod simulate;
pub mod status;
pub mod target;
pub mod target_access;

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};

/// The runtime of the subcommands that serve or drive I/O: two workers, like the machine's cores.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting tokio runtime")
}

/// Waits for SIGINT or SIGTERM: how a foreground server is told to stop.
pub async fn until_stopped() -> anyhow::Result<()> {
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    Ok(())
}
