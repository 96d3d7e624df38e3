//! `portshift isns`: run the iSNS server (RFC 4171) until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// TCP address to listen on.
    #[arg(long, default_value = "127.0.0.1:3205")]
    pub listen: SocketAddr,
    /// redb database file holding the registry (created if missing).
    #[arg(long, default_value = "portshift-isns.redb")]
    pub db: PathBuf,
    /// Maximum simultaneous client connections.
    #[arg(long, default_value_t = 256)]
    pub max_connections: usize,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    super::runtime()?.block_on(async {
        let mut config = isns::ServerConfig::new(args.listen, args.db.clone());
        config.max_connections = args.max_connections;
        let server = isns::Server::bind(config).await.with_context(|| {
            format!(
                "starting iSNS server on {} with {}",
                args.listen,
                args.db.display()
            )
        })?;
        let addr = server.local_addr()?;
        tracing::info!(%addr, db = %args.db.display(), "iSNS server listening");
        eprintln!("portshift isns: listening on {addr}");
        let stop = super::until_stopped();
        server
            .run(async move {
                if let Err(e) = stop.await {
                    tracing::error!("{e:#}");
                }
            })
            .await?;
        Ok(ExitCode::SUCCESS)
    })
}
