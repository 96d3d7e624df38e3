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
    /// Maximum simultaneous client connections; when reached, the oldest idle connection is
    /// closed to admit a new one.
    #[arg(long, default_value_t = isns::server::MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Maximum simultaneous connections from one client address.
    #[arg(long, default_value_t = isns::server::MAX_CONNECTIONS_PER_ADDRESS)]
    pub max_connections_per_address: usize,
    /// Seconds a new connection has to deliver its first whole message.
    #[arg(long, default_value_t = isns::server::FIRST_MESSAGE_TIMEOUT.as_secs())]
    pub first_message_timeout: u64,
    /// Source name of a Control Node (RFC 4171 §5.6.1), which may change or deregister any
    /// entity; repeat for more. Any other source changes only the entity holding its own node.
    #[arg(long = "control-node")]
    pub control_nodes: Vec<String>,
    /// The default discovery domain, as isnsd's `DefaultDiscoveryDomain` (RFC 4171 §2.2.2):
    /// `on` puts every node that is in no discovery domain in a default one, where they see
    /// each other; `off` leaves such a node seeing only its own entity.
    #[arg(long, value_name = "on|off", default_value = "on", action = clap::ArgAction::Set, value_parser = parse_on_off)]
    pub default_dd: bool,
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" | "1" | "true" | "yes" => Ok(true),
        "off" | "0" | "false" | "no" => Ok(false),
        _ => Err(format!("expected on or off, not {s:?}")),
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    super::runtime()?.block_on(async {
        let mut config = isns::ServerConfig::new(args.listen, args.db.clone());
        config.max_connections = args.max_connections;
        config.max_connections_per_address = args.max_connections_per_address;
        config.first_message_timeout = std::time::Duration::from_secs(args.first_message_timeout);
        config.control_nodes = args.control_nodes.clone();
        config.default_dd = args.default_dd;
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
