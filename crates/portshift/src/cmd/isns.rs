//! `portshift isns`: run the iSNS server (RFC 4171) until SIGINT/SIGTERM.
//! Settings come from the defaults, then the configuration file (`--config`,
//! docs/isns.md), then the flags given on the command line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The configuration file (TOML, `version = 1`, docs/isns.md). Flags given on the command
    /// line override it; --listen and --control-node replace the file's lists.
    #[arg(long, value_name = "FILE.toml")]
    pub config: Option<PathBuf>,
    /// Check a configuration file (with the flags given) and exit: print the effective
    /// settings and exit 0 when valid, or each problem with its line and exit 1.
    #[arg(long, value_name = "FILE.toml", conflicts_with = "config")]
    pub check_config: Option<PathBuf>,
    /// TCP address to listen on; repeat for several [default: 127.0.0.1:3205].
    #[arg(long = "listen")]
    pub listen: Vec<SocketAddr>,
    /// redb database file holding the registry (created if missing)
    /// [default: portshift-isns.redb].
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// Keep the registry in this etcd cluster instead of --db (client URLs, comma-separated:
    /// http://H:P,http://H:P). Every server given the same cluster serves the same registry
    /// (docs/isns.md, "Several servers on etcd").
    #[arg(long, value_name = "URL[,URL...]", value_delimiter = ',')]
    pub etcd: Vec<String>,
    /// Key prefix of the registry in etcd [default: /portshift/isns/].
    #[arg(long, value_name = "PREFIX")]
    pub etcd_prefix: Option<String>,
    /// Maximum simultaneous client connections; when reached, the oldest idle connection is
    /// closed to admit a new one [default: 256].
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Maximum simultaneous connections from one client address [default: 64].
    #[arg(long)]
    pub max_connections_per_address: Option<usize>,
    /// Seconds a new connection has to deliver its first whole message [default: 10].
    #[arg(long)]
    pub first_message_timeout: Option<u64>,
    /// Source name of a Control Node (RFC 4171 §5.6.1), which may change or deregister any
    /// entity and register for management SCNs; repeat for more. Any other source changes
    /// only the entity holding its own node.
    #[arg(long = "control-node")]
    pub control_nodes: Vec<String>,
    /// Portals, nodes and portal groups one entity may hold; more is refused with status 3
    /// [default: 4096].
    #[arg(long)]
    pub max_objects_per_entity: Option<usize>,
    /// Largest request accepted, bytes (at most 1048576); a larger one is answered with
    /// status 2 and its connection closed [default: 1048576].
    #[arg(long)]
    pub max_message_bytes: Option<usize>,
    /// Smallest ESI interval granted, seconds [default: 60].
    #[arg(long)]
    pub esi_min_interval: Option<u32>,
    /// Consecutive unanswered ESI messages after which a portal is deregistered [default: 3].
    #[arg(long)]
    pub esi_allowed_misses: Option<u32>,
    /// The default discovery domain, as isnsd's `DefaultDiscoveryDomain` (RFC 4171 §2.2.2):
    /// `on` puts every node that is in no discovery domain in a default one, where they see
    /// each other; `off` leaves such a node seeing only its own entity.
    #[arg(long, value_name = "on|off", value_parser = parse_on_off)]
    pub default_dd: Option<bool>,
    /// Serve the admin endpoint (HTTP: `GET /metrics` in the Prometheus text format,
    /// `GET /status` the object counts as JSON; docs/metrics.md) on this address; given without
    /// a value, on 127.0.0.1:3206 (loopback). Off unless given.
    #[arg(long, value_name = "IP:PORT", num_args = 0..=1, default_missing_value = DEFAULT_ADMIN)]
    pub admin: Option<SocketAddr>,
}

/// Where `--admin` without a value serves: loopback.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:3206";

/// The effective settings: defaults, then the file, then the flags.
fn settings(args: &Args, file: Option<&Path>) -> anyhow::Result<isns::ServerConfig> {
    let mut c = match file {
        Some(path) => isns::config::load(path)?,
        None => isns::config::defaults(),
    };
    if let Some((first, rest)) = args.listen.split_first() {
        c.listen = *first;
        c.extra_listen = rest.to_vec();
    }
    if let Some(db) = &args.db {
        c.db = db.clone();
    }
    if !args.etcd.is_empty() {
        c.etcd = args.etcd.clone();
    }
    if let Some(p) = &args.etcd_prefix {
        c.etcd_prefix = p.clone();
    }
    if let Some(n) = args.max_connections {
        c.max_connections = n;
    }
    if let Some(n) = args.max_connections_per_address {
        c.max_connections_per_address = n;
    }
    if let Some(s) = args.first_message_timeout {
        c.first_message_timeout = Duration::from_secs(s);
    }
    if !args.control_nodes.is_empty() {
        c.control_nodes = args.control_nodes.clone();
    }
    if let Some(n) = args.max_objects_per_entity {
        anyhow::ensure!(n > 0, "--max-objects-per-entity must be at least 1");
        c.max_objects_per_entity = n;
    }
    if let Some(n) = args.max_message_bytes {
        let range = isns::config::MIN_MESSAGE_BYTES..=isns_proto::MAX_MESSAGE_LEN;
        anyhow::ensure!(
            range.contains(&n),
            "--max-message-bytes must be within {}..={}",
            range.start(),
            range.end()
        );
        c.max_message_len = n;
    }
    if let Some(n) = args.esi_min_interval {
        anyhow::ensure!(n > 0, "--esi-min-interval must be at least 1");
        c.esi.min_interval = n;
    }
    if let Some(on) = args.default_dd {
        c.default_dd = on;
    }
    if let Some(n) = args.esi_allowed_misses {
        anyhow::ensure!(n > 0, "--esi-allowed-misses must be at least 1");
        c.esi.allowed_misses = n;
    }
    Ok(c)
}

/// `--check-config FILE`: the effective settings on stdout, exit 0; or every problem on
/// stderr, exit 1.
fn check_config(args: &Args, path: &Path) -> ExitCode {
    match settings(args, Some(path)) {
        Ok(c) => {
            println!("# {}: valid; effective settings:", path.display());
            print!("{}", isns::config::describe(&c));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e:#}");
            ExitCode::from(1)
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(path) = &args.check_config {
        return Ok(check_config(&args, path));
    }
    let config = settings(&args, args.config.as_deref())?;
    super::runtime()?.block_on(async {
        let listen = config.listen;
        let db = if config.etcd.is_empty() {
            config.db.display().to_string()
        } else {
            format!("etcd {}", config.etcd.join(","))
        };
        let server = isns::Server::bind(config)
            .await
            .with_context(|| format!("starting iSNS server on {listen} with {db}"))?;
        for addr in server.local_addrs()? {
            tracing::info!(%addr, %db, "iSNS server listening");
            eprintln!("portshift isns: listening on {addr}");
        }
        let _admin = match args.admin {
            Some(addr) => {
                let (bound, task) = isns::admin::serve(addr, server.stats())
                    .await
                    .with_context(|| format!("starting the admin endpoint on {addr}"))?;
                tracing::info!(%bound, "iSNS admin endpoint listening");
                eprintln!("portshift isns: admin endpoint on http://{bound}/metrics");
                Some(task)
            }
            None => None,
        };
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

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" | "1" | "true" | "yes" => Ok(true),
        "off" | "0" | "false" | "no" => Ok(false),
        _ => Err(format!("expected on or off, not {s:?}")),
    }
}
