//! `portshift target`: the multi-portal iSCSI target.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use iscsi_target::{LunConfig, PortalConfig, Target, TargetConfig};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A portal to listen on, IP:PORT[,speed=RATE] (repeat for several portals). RATE is
    /// the link's capacity each way, in bits (400Mbit, 10Gbit) or bytes (1.25GB) per
    /// second; without it, the speed the portal's interface reports (none for loopback).
    #[arg(long = "portal", required = true)]
    portals: Vec<PortalConfig>,
    /// IQN=FILE: serve FILE as a LUN of target IQN through every portal (repeatable).
    #[arg(long = "lun", required = true, value_parser = parse_lun)]
    luns: Vec<(String, PathBuf)>,
    /// Create missing backing files with this size (e.g. 1G, 64M, 4096).
    #[arg(long, value_parser = parse_size)]
    size: Option<u64>,
    /// iSNS server to register with, HOST:PORT.
    #[arg(long)]
    isns: Option<SocketAddr>,
    /// Balancing rule METRIC:HIGH[:LOW]: sessions:2, iops:20000:10000, bandwidth:80%:50%
    /// (of the link capacity), cpu:90% (of the portal's processor). Repeat to combine: a portal
    /// is overloaded when any metric is at or above HIGH, and its deleted registrations come
    /// back when every metric is at or below LOW (default HIGH-1 for sessions, HIGH/2 for the
    /// others).
    #[arg(long = "balance", value_name = "METRIC:HIGH[:LOW]")]
    balance: Vec<balancer::BalanceSpec>,
    /// Cooldown, in seconds: a moved initiator is not moved again (nor moved back to the
    /// portal it left within twice the cooldown), and a deleted (target, portal) registration
    /// is not restored, until the cooldown has passed.
    #[arg(long, default_value_t = 10)]
    cooldown: u64,
    /// An initiator name the balancer never moves (repeatable).
    #[arg(long = "pin", value_name = "INITIATOR")]
    pin: Vec<String>,
    /// Time constant of the smoothed load figures the balancer decides on, e.g. 5s, 800ms
    /// (at most 10m): a step in a portal's load is 63% in the figures after it, 95% after
    /// three times it. Shorter reacts sooner to bursts and moves more.
    #[arg(long, default_value = "5s", value_parser = parse_smoothing)]
    smoothing: std::time::Duration,
    /// Moves the balancer asks for in one interval at most.
    #[arg(long, default_value_t = balancer::DEFAULT_MAX_MOVES)]
    max_moves: usize,
    /// Let the balancer move initiators that hold a reservation or a persistent reservation
    /// registration. By default they stay: an initiator that draws a new ISID when it logs in
    /// again (libiscsi does) is a new I_T nexus after a move and loses its registration.
    /// portshift's initiator keeps its ISID, and all portals share one portal group, so it
    /// keeps them.
    #[arg(long)]
    move_reservation_holders: bool,
    /// Connections each portal serves at a time (fewer when the open-file limit leaves
    /// less room; see the start-up log). At the limit, the oldest connection still in
    /// login is closed to admit a new one.
    #[arg(long, default_value_t = iscsi_target::portal::MAX_CONNECTIONS)]
    max_connections: usize,
    /// Connections one client address may hold on a portal.
    #[arg(long, default_value_t = iscsi_target::portal::MAX_CONNECTIONS_PER_ADDRESS)]
    max_connections_per_address: usize,
    /// Admin endpoint (GET /status).
    #[arg(long, default_value = iscsi_target::admin::DEFAULT_ADMIN)]
    admin: SocketAddr,
}

fn parse_smoothing(v: &str) -> Result<std::time::Duration, String> {
    let d = super::io::parse_duration(v)?;
    if d > std::time::Duration::from_secs(600) {
        return Err(format!("--smoothing {v:?}: at most 10m"));
    }
    Ok(d)
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
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("unknown size suffix in {s:?} (use K, M, G or T)")),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("invalid size {s:?}"))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let cfg = TargetConfig {
        portals: args.portals,
        luns: args
            .luns
            .into_iter()
            .map(|(iqn, path)| LunConfig {
                iqn,
                path,
                size: args.size,
                ..Default::default()
            })
            .collect(),
        isns: args.isns,
        balance: args.balance,
        cooldown_ms: args.cooldown.saturating_mul(1000),
        pin: args.pin,
        max_moves: args.max_moves,
        move_reservation_holders: args.move_reservation_holders,
        smoothing_ms: args.smoothing.as_millis() as u64,
        admin: Some(args.admin),
        limits: iscsi_target::portal::PortalLimits {
            total: args.max_connections,
            per_address: args.max_connections_per_address,
        },
        ..Default::default()
    };
    let lun_files: Vec<String> = cfg
        .luns
        .iter()
        .map(|l| format!("{}={}", l.iqn, l.path.display()))
        .collect();
    let handle = Target::start(cfg)?;
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
        .block_on(super::until_stopped())?;
    handle.shutdown();
    Ok(ExitCode::SUCCESS)
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
        assert_eq!(a.max_moves, balancer::DEFAULT_MAX_MOVES);
        assert!(parse(&[]).unwrap().balance.is_empty());
        let e = parse(&["--balance", "cpu:90"]).unwrap_err().to_string();
        assert!(e.contains("percentages"), "{e}");
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
}
