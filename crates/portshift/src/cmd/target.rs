//! `portshift target`: the multi-portal iSCSI target.
// The options' doc comments are clap's help text: `[...]` there is option syntax, not a link.
#![allow(rustdoc::broken_intra_doc_links)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use iscsi_target::{LunConfig, PortalConfig, Target, TargetConfig};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The configuration file (TOML, docs/configuration.md). Flags given on the command line
    /// override it: --portal, --balance and --pin replace the file's lists, --lun adds LUNs,
    /// every other flag replaces the file's value. SIGHUP reloads the file.
    #[arg(long, value_name = "FILE.toml")]
    config: Option<PathBuf>,
    /// Check a configuration file and exit: 0 when it is valid, 1 with a message naming the
    /// line of each problem otherwise.
    #[arg(long, value_name = "FILE.toml", conflicts_with = "config")]
    check_config: Option<PathBuf>,
    /// A portal to listen on, IP:PORT[,speed=RATE] (repeat for several portals; [IPv6]:PORT
    /// for IPv6). RATE is the link's capacity each way, in bits (400Mbit, 10Gbit) or bytes
    /// (1.25GB) per second; without it, the speed the portal's interface reports (none for
    /// loopback).
    #[arg(long = "portal", required_unless_present_any = ["config", "check_config"])]
    portals: Vec<PortalConfig>,
    /// IQN=FILE: serve FILE as a LUN of target IQN through every portal (repeatable).
    #[arg(long = "lun", required_unless_present_any = ["config", "check_config"], value_parser = parse_lun)]
    luns: Vec<(String, PathBuf)>,
    /// Create missing backing files with this size (e.g. 1G, 64M, 4096).
    #[arg(long, value_parser = parse_size)]
    size: Option<u64>,
    /// Every write of every LUN is durable (on stable storage) before its status; the
    /// Caching mode page then reports WCE=0. Without it, acknowledged writes may sit in the
    /// page cache until the initiator sends SYNCHRONIZE CACHE or writes with FUA (WCE=1).
    #[arg(long)]
    write_through: bool,
    /// Physical block size of every LUN in bytes: 512 or 4096 (logical blocks stay 512
    /// bytes; READ CAPACITY(16) reports 8 logical blocks per physical block). [default: 512,
    /// or the configuration file's per-LUN value]
    #[arg(long, value_parser = parse_physical_block_size)]
    physical_block_size: Option<u32>,
    /// iSNS servers to register with, HOST:PORT[,HOST:PORT...] (or repeat the option): the
    /// first that answers is used; when it stops answering, the next one gets the whole
    /// registration.
    #[arg(long, value_delimiter = ',', value_name = "HOST:PORT")]
    isns: Vec<SocketAddr>,
    /// Balancing rule METRIC:HIGH[:LOW]: sessions:2, iops:20000:10000, bandwidth:80%:50%
    /// (of the link capacity), cpu:90% (of the portal's processor). Repeat to combine: a portal
    /// is overloaded when any metric is at or above HIGH, and its deleted registrations come
    /// back when every metric is at or below LOW (default HIGH-1 for sessions, HIGH/2 for the
    /// others).
    #[arg(long = "balance", value_name = "METRIC:HIGH[:LOW]")]
    balance: Vec<balancer::BalanceSpec>,
    /// Cooldown, in seconds: a moved initiator is not moved again (nor moved back to the
    /// portal it left within twice the cooldown), and a deleted (target, portal) registration
    /// is not restored, until the cooldown has passed. [default: 10]
    #[arg(long)]
    cooldown: Option<u64>,
    /// An initiator name the balancer never moves (repeatable).
    #[arg(long = "pin", value_name = "INITIATOR")]
    pin: Vec<String>,
    /// On SIGTERM or SIGINT: how long to wait for the sessions to log out (each is asked to,
    /// within half of it; new logins are refused meanwhile) before stopping anyway, e.g. 10s.
    /// A second signal stops at once.
    #[arg(long, default_value = "10s", value_parser = super::io::parse_duration)]
    stop_grace: std::time::Duration,
    /// Time constant of the smoothed load figures the balancer decides on, e.g. 5s, 800ms
    /// (at most 10m): a step in a portal's load is 63% in the figures after it, 95% after
    /// three times it. Shorter reacts sooner to bursts and moves more. [default: 5s]
    #[arg(long, value_parser = parse_smoothing)]
    smoothing: Option<std::time::Duration>,
    /// Moves the balancer asks for in one interval at most. [default: 4]
    #[arg(long)]
    max_moves: Option<usize>,
    /// Let the balancer move initiators that hold a reservation or a persistent reservation
    /// registration. By default they stay: an initiator that draws a new ISID when it logs in
    /// again (libiscsi does) is a new I_T nexus after a move and loses its registration.
    /// portshift's initiator keeps its ISID, and all portals share one portal group, so it
    /// keeps them.
    #[arg(long)]
    move_reservation_holders: bool,
    /// Connections each portal serves at a time (fewer when the open-file limit leaves
    /// less room; see the start-up log). At the limit, the oldest connection still in
    /// login is closed to admit a new one. [default: 1024]
    #[arg(long)]
    max_connections: Option<usize>,
    /// Connections one client address may hold on a portal. [default: 64]
    #[arg(long)]
    max_connections_per_address: Option<usize>,
    /// Admin endpoint (GET /status; the live dashboard at GET /). [default: 127.0.0.1:3261]
    #[arg(long)]
    admin: Option<SocketAddr>,
    /// File holding the token the admin endpoint's state-changing calls need (`portshift
    /// balance`); must be private (mode 600). Without it those calls are disabled.
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
    #[command(flatten)]
    access: super::target_access::TargetAccessArgs,
}

fn parse_smoothing(v: &str) -> Result<std::time::Duration, String> {
    let d = super::io::parse_duration(v)?;
    if d > std::time::Duration::from_secs(600) {
        return Err(format!("--smoothing {v:?}: at most 10m"));
    }
    Ok(d)
}

fn parse_physical_block_size(s: &str) -> Result<u32, String> {
    match s {
        "512" => Ok(512),
        "4096" | "4K" | "4k" => Ok(4096),
        _ => Err(format!("--physical-block-size {s:?}: 512 or 4096")),
    }
}

fn parse_lun(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((iqn, file)) if !iqn.is_empty() && !file.is_empty() => {
            Ok((iqn.to_string(), PathBuf::from(file)))
        }
        _ => Err(format!("expected IQN=FILE, got {s:?}")),
    }
}

/// A byte count with an optional K/M/G/T suffix (powers of 1024).
fn parse_size(s: &str) -> Result<u64, String> {
    iscsi_target::config_file::parse_size(s)
}

/// The configuration: the file's (if any) with the command line's flags over it.
fn configuration(args: &Args, file: Option<TargetConfig>) -> anyhow::Result<TargetConfig> {
    let mut cfg = file.unwrap_or_else(|| TargetConfig {
        admin: iscsi_target::admin::DEFAULT_ADMIN.parse().ok(),
        ..Default::default()
    });
    if !args.portals.is_empty() {
        cfg.portals = args.portals.clone();
    }
    cfg.luns
        .extend(args.luns.iter().map(|(iqn, path)| LunConfig {
            iqn: iqn.clone(),
            path: path.clone(),
            size: args.size,
            ..Default::default()
        }));
    for l in &mut cfg.luns {
        l.write_through |= args.write_through;
        if let Some(b) = args.physical_block_size {
            l.physical_block_size = b;
        }
    }
    if !args.isns.is_empty() {
        cfg.isns = args.isns.clone();
    }
    if !args.balance.is_empty() {
        cfg.balance = args.balance.clone();
    }
    if let Some(c) = args.cooldown {
        cfg.cooldown_ms = c.saturating_mul(1000);
    }
    if !args.pin.is_empty() {
        cfg.pin = args.pin.clone();
    }
    if let Some(m) = args.max_moves {
        cfg.max_moves = m;
    }
    cfg.move_reservation_holders |= args.move_reservation_holders;
    if let Some(s) = args.smoothing {
        cfg.smoothing_ms = s.as_millis() as u64;
    }
    if let Some(a) = args.admin {
        cfg.admin = Some(a);
    }
    if let Some(path) = &args.admin_token_file {
        cfg.admin_token = Some(iscsi_target::admin_ops::read_token_file(path)?);
    }
    if let Some(m) = args.max_connections {
        cfg.limits.total = m;
    }
    if let Some(m) = args.max_connections_per_address {
        cfg.limits.per_address = m;
    }
    args.access.clone().apply(cfg)
}

/// `--check-config FILE`: every problem on stderr (with its line), exit 1; or "valid".
fn check_config(path: &std::path::Path) -> ExitCode {
    match iscsi_target::config_file::load(path) {
        Ok(f) => {
            let c = &f.config;
            let targets: std::collections::BTreeSet<&str> =
                c.luns.iter().map(|l| l.iqn.as_str()).collect();
            if c.portals.is_empty() {
                eprintln!(
                    "{}: no [[portal]] (give --portal when starting)",
                    path.display()
                );
            }
            println!(
                "{}: valid (format version {}): {} portals, {} targets, {} LUNs",
                path.display(),
                iscsi_target::config_file::CURRENT_VERSION,
                c.portals.len(),
                targets.len(),
                c.luns.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}

/// The file's configuration, or why it cannot be used.
fn load_file(path: &std::path::Path) -> anyhow::Result<TargetConfig> {
    Ok(iscsi_target::config_file::load(path)?.config)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(path) = &args.check_config {
        return Ok(check_config(path));
    }
    let file = args.config.as_deref().map(load_file).transpose()?;
    let cfg = configuration(&args, file)?;
    let lun_files: Vec<String> = cfg
        .luns
        .iter()
        .map(|l| format!("{}={}", l.iqn, l.path.display()))
        .collect();
    let mut handle = Target::start(cfg)?;
    for p in handle.portals() {
        println!("portal {p}");
    }
    for (name, luns) in handle.targets() {
        println!("target {name} luns {luns:?}");
    }
    for f in &lun_files {
        println!("lun {f}");
    }
    if let Some(a) = handle.admin() {
        println!("admin http://{a}/status");
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let mut stop = StopSignals::new()?;
            serve(&args, &mut handle, &mut stop).await?;
            // SIGTERM or SIGINT: stop gracefully within the grace; a second one stops at once.
            let grace = args.stop_grace;
            println!(
                "stopping: refusing logins, asking every session to log out (grace {} s)",
                grace.as_secs_f64()
            );
            tokio::select! {
                r = handle.drain_for_stop(grace) => {
                    println!("stopping: {} sessions asked to log out, {} left", r.asked, r.left);
                }
                _ = stop.next() => println!("stopping at once (second signal)"),
            }
            anyhow::Ok(())
        })?;
    // Deregisters from iSNS and stops the processors.
    handle.shutdown();
    println!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// SIGINT and SIGTERM, installed once so that a second signal during the graceful stop is
/// caught too.
struct StopSignals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn new() -> anyhow::Result<StopSignals> {
        use anyhow::Context;
        use tokio::signal::unix::{SignalKind, signal};
        Ok(StopSignals {
            int: signal(SignalKind::interrupt()).context("installing SIGINT handler")?,
            term: signal(SignalKind::terminate()).context("installing SIGTERM handler")?,
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}

/// Waits for SIGINT or SIGTERM; on SIGHUP reloads the configuration file (with the same
/// command-line flags over it). A reload that fails changes nothing and says why.
async fn serve(
    args: &Args,
    handle: &mut iscsi_target::TargetHandle,
    stop: &mut StopSignals,
) -> anyhow::Result<()> {
    use anyhow::Context;
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    loop {
        tokio::select! {
            _ = stop.next() => return Ok(()),
            _ = hup.recv() => {
                let Some(path) = &args.config else {
                    tracing::warn!("SIGHUP: no --config file to reload; nothing changed");
                    continue;
                };
                let reloaded = load_file(path)
                    .and_then(|file| handle.reload(configuration(args, Some(file))?));
                match reloaded {
                    Ok(report) => {
                        for what in &report.need_restart {
                            tracing::warn!(
                                "SIGHUP: {what} changed in {}: needs a restart; keeping the running one",
                                path.display()
                            );
                        }
                        tracing::info!("SIGHUP: reloaded {}: {report}", path.display());
                        println!("reloaded {}: {report}", path.display());
                    }
                    Err(e) => {
                        tracing::error!("SIGHUP: {} not reloaded, nothing changed: {e:#}", path.display());
                        eprintln!("reload failed, nothing changed: {e:#}");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_luns() {
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("1X").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("G").is_err());
        assert_eq!(
            parse_lun("iqn.a:b=/tmp/x"),
            Ok(("iqn.a:b".into(), PathBuf::from("/tmp/x")))
        );
        assert!(parse_lun("nofile").is_err());
        assert_eq!(parse_physical_block_size("4096"), Ok(4096));
        assert_eq!(parse_physical_block_size("512"), Ok(512));
        assert!(parse_physical_block_size("1024").is_err());
    }

    #[derive(clap::Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn parse(extra: &[&str]) -> Result<Args, clap::Error> {
        use clap::Parser;
        let mut argv = vec![
            "target",
            "--portal",
            "127.0.0.1:3260",
            "--lun",
            "iqn.a:b=/tmp/x",
        ];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).map(|c| c.args)
    }

    #[test]
    fn balance_and_pin_repeat() {
        let a = parse(&[
            "--balance",
            "sessions:8",
            "--balance",
            "bandwidth:80%:50%",
            "--pin",
            "iqn.db",
            "--pin",
            "iqn.web",
        ])
        .unwrap();
        let specs: Vec<String> = a.balance.iter().map(|s| s.to_string()).collect();
        assert_eq!(specs, ["sessions:8:7", "bandwidth:80%:50%"]);
        assert_eq!(a.pin, ["iqn.db", "iqn.web"]);
        assert_eq!(a.max_moves, None);
        assert!(parse(&[]).unwrap().balance.is_empty());
        let e = parse(&["--balance", "cpu:90"]).unwrap_err().to_string();
        assert!(e.contains("percentages"), "{e}");
    }

    #[test]
    fn durability_and_physical_block_flags() {
        let a = parse(&[]).unwrap();
        assert!(!a.write_through);
        assert_eq!(a.physical_block_size, None);
        let a = parse(&["--write-through", "--physical-block-size", "4096"]).unwrap();
        assert!(a.write_through);
        assert_eq!(a.physical_block_size, Some(4096));
        assert!(parse(&["--physical-block-size", "2048"]).is_err());
    }

    #[test]
    fn portals_with_a_link_speed() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: Args,
        }
        let cli = Cli::try_parse_from([
            "target",
            "--portal",
            "127.0.0.1:3260",
            "--portal",
            "127.0.0.2:3260,speed=400Mbit",
            "--lun",
            "iqn.a:b=/tmp/x",
        ])
        .unwrap();
        let p = &cli.args.portals;
        assert_eq!(
            p[0].address,
            "127.0.0.1:3260".parse::<SocketAddr>().unwrap()
        );
        assert_eq!((p[0].link_capacity, p[1].link_capacity), (None, Some(50e6)));
        let e = Cli::try_parse_from([
            "target",
            "--portal",
            "127.0.0.1:3260,speed=400",
            "--lun",
            "iqn.a:b=/tmp/x",
        ])
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("no unit, bits or bytes?"), "{e}");
    }

    #[test]
    fn flags_override_the_file() {
        let file = TargetConfig {
            portals: vec!["127.0.0.9:3260".parse().unwrap()],
            luns: vec![LunConfig {
                iqn: "iqn.f:t".into(),
                path: PathBuf::from("null:1048576"),
                ..Default::default()
            }],
            cooldown_ms: 3_000,
            max_moves: 2,
            pin: vec!["iqn.file".into()],
            ..Default::default()
        };
        // Without flags: the file as it is.
        let a = parse(&[]).unwrap();
        let mut bare = a;
        bare.portals.clear();
        bare.luns.clear();
        let c = configuration(&bare, Some(file.clone())).unwrap();
        assert_eq!((c.portals.len(), c.luns.len()), (1, 1));
        assert_eq!((c.cooldown_ms, c.max_moves), (3_000, 2));
        // Given flags: lists replaced (portals, pins), LUNs added, values replaced.
        let a = parse(&[
            "--cooldown",
            "7",
            "--pin",
            "iqn.cli",
            "--admin",
            "127.0.0.1:9",
        ])
        .unwrap();
        let c = configuration(&a, Some(file)).unwrap();
        assert_eq!(c.portals[0].address.to_string(), "127.0.0.1:3260");
        assert_eq!(c.portals.len(), 1);
        let luns: Vec<&str> = c.luns.iter().map(|l| l.iqn.as_str()).collect();
        assert_eq!(luns, ["iqn.f:t", "iqn.a:b"]);
        assert_eq!((c.cooldown_ms, c.max_moves), (7_000, 2));
        assert_eq!(c.pin, ["iqn.cli"]);
        assert_eq!(c.admin, Some("127.0.0.1:9".parse().unwrap()));
        // Without a file, the defaults of the flags.
        let c = configuration(&parse(&[]).unwrap(), None).unwrap();
        assert_eq!(c.cooldown_ms, 10_000);
        assert_eq!(c.admin, iscsi_target::admin::DEFAULT_ADMIN.parse().ok());
        // --config alone is enough; --check-config too.
        use clap::Parser;
        assert!(Cli::try_parse_from(["target", "--config", "f.toml"]).is_ok());
        assert!(Cli::try_parse_from(["target", "--check-config", "f.toml"]).is_ok());
        assert!(Cli::try_parse_from(["target"]).is_err());
    }
}
