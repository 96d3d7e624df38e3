//! `portshift demo`: the whole system on loopback, showing a real rebalance.
//!
//! It starts an iSNS server, a target with two portals (127.0.0.1 and 127.0.0.2, one processor
//! each) serving three disk images from a temporary directory and registered in iSNS, and three
//! initiators that each ask iSNS for their target and log in through the first portal listed,
//! running verifying I/O. With the `sessions` metric and a high threshold of 2, the balancer
//! deletes one (target, first portal) registration, sends that initiator "logout requested", and
//! the initiator asks iSNS again and logs in through the second portal. When the first host
//! finishes, the first portal's load falls and the registration is restored.

use std::net::{SocketAddr, TcpListener};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use balancer::{AdminSnapshot, EventKind, PortalId};
use initiator::{
    BalancedConfig, BalancedInitiator, InitiatorEvent, PortalSource, WorkloadConfig,
    WorkloadReport, run_workload,
};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// How long the two longer-running hosts do I/O, in seconds (the first host stops halfway).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Keep the temporary directory (disk images, iSNS database) and print its path.
    #[arg(long)]
    keep: bool,
    /// Instead: the balancer's gain on three rate-limited links (network namespace, veth,
    /// tc; needs root): throughput and light hosts' latency with the balancer off and on.
    #[arg(long)]
    links: bool,
}

const HOSTS: usize = 3;
const DISK_BYTES: u64 = 64 << 20;
const BALANCE: &str = "sessions:2";
/// The cooldown: a moved initiator is not moved again, and a deleted registration is not
/// restored, until it has passed.
const COOLDOWN_MS: u64 = 3000;

use balancer::clock::unix_ms;

/// A port free on both 127.0.0.1 and 127.0.0.2, so the two portals differ only by address.
fn free_port_pair() -> anyhow::Result<u16> {
    for _ in 0..20 {
        let a = TcpListener::bind("127.0.0.1:0")?;
        let port = a.local_addr()?.port();
        if TcpListener::bind(("127.0.0.2", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no port free on both 127.0.0.1 and 127.0.0.2")
}

/// Initiator-side events, stamped when they arrive.
type HostLog = Arc<Mutex<Vec<(u64, String, InitiatorEvent)>>>;

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.links {
        return super::demo_links::run(args.seconds.max(5), args.keep);
    }
    super::runtime()?.block_on(demo(args))
}

async fn demo(args: Args) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let t0 = unix_ms();
    let dir = tempfile::Builder::new()
        .prefix("portshift-demo-")
        .tempdir()?;
    println!(
        "portshift demo: iSCSI port load balancing with iSNS (patent JP4675664B2), on loopback"
    );
    println!("working directory: {}\n", dir.path().display());

    // 1. The iSNS server.
    let server = isns::Server::bind(isns::ServerConfig::new(
        "127.0.0.1:0".parse()?,
        dir.path().join("isns.redb"),
    ))
    .await
    .context("starting the iSNS server")?;
    let isns_addr = server.local_addr()?;
    let (stop_isns, stop_isns_rx) = tokio::sync::oneshot::channel::<()>();
    let isns_task = tokio::spawn(server.run(async move {
        let _ = stop_isns_rx.await;
    }));
    println!("[1] iSNS server on {isns_addr}");

    // 2. The target: two portals, three disks, registered in iSNS, balancing on.
    let port = free_port_pair()?;
    let portals: Vec<SocketAddr> = vec![
        format!("127.0.0.1:{port}").parse()?,
        format!("127.0.0.2:{port}").parse()?,
    ];
    let disks: Vec<String> = (1..=HOSTS)
        .map(|i| format!("iqn.2026-11.org.example:disk{i}"))
        .collect();
    let cfg = iscsi_target::TargetConfig {
        portals: portals.iter().map(|&a| a.into()).collect(),
        luns: disks
            .iter()
            .enumerate()
            .map(|(i, iqn)| iscsi_target::LunConfig {
                iqn: iqn.clone(),
                path: dir.path().join(format!("disk{}.img", i + 1)),
                size: Some(DISK_BYTES),
                ..Default::default()
            })
            .collect(),
        isns: vec![isns_addr],
        balance: vec![BALANCE.parse()?],
        cooldown_ms: COOLDOWN_MS,
        pin: Vec::new(),
        max_moves: balancer::DEFAULT_MAX_MOVES,
        smoothing_ms: balancer::SMOOTHING_TAU_MS,
        admin: Some("127.0.0.1:0".parse()?),
        limits: Default::default(),
        ..Default::default()
    };
    let handle = tokio::task::block_in_place(|| iscsi_target::Target::start(cfg))?;
    let admin = handle.admin().context("admin endpoint")?.to_string();
    println!(
        "[2] target: portals P0 {} (cpu0) and P1 {} (cpu1), three 64 MiB disks, balance {BALANCE}, admin {admin}",
        portals[0], portals[1]
    );

    // Wait for the registrations to reach iSNS, and show what an initiator is told.
    let probe = "iqn.2026-11.org.example:probe";
    let deadline = Instant::now() + Duration::from_secs(10);
    for d in &disks {
        loop {
            let got =
                initiator::discovery::isns_portals(isns_addr, probe, d, Duration::from_secs(2))
                    .await
                    .unwrap_or_default();
            if got.len() == portals.len() {
                println!("    iSNS answers for {d}: {}", join(&got));
                break;
            }
            if Instant::now() > deadline {
                bail!("the target's registrations did not reach iSNS within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // 3. Three hosts, each asking iSNS and logging in through the first portal listed.
    let log: HostLog = Arc::new(Mutex::new(Vec::new()));
    let mut runs = Vec::new();
    let mut inits = Vec::new();
    for (i, disk) in disks.iter().enumerate() {
        let name = format!("iqn.2026-11.org.example:host{}", i + 1);
        let short = format!("host{}", i + 1);
        let mut bc = BalancedConfig::new(&name, Some(disk), PortalSource::Isns(isns_addr));
        bc.queue_depth = 8;
        let (init, mut events) = BalancedInitiator::connect(bc)
            .await
            .with_context(|| format!("{short}: login"))?;
        let sink = log.clone();
        let who = short.clone();
        tokio::spawn(async move {
            while let Some(e) = events.recv().await {
                if let Ok(mut l) = sink.lock() {
                    l.push((unix_ms(), who.clone(), e));
                }
            }
        });
        let mut wc = WorkloadConfig::new(&name);
        wc.lun = 0;
        wc.block_size = None;
        wc.queue_depth = 4;
        wc.verify = true;
        wc.read_percent = 50;
        wc.region_blocks = Some(8192);
        wc.seed = i as u64 + 1;
        // host1 leaves halfway, so the first portal's load falls and the registration returns.
        wc.duration = Duration::from_secs(if i == 0 {
            (args.seconds / 2).max(3)
        } else {
            args.seconds
        });
        let w = init.clone();
        runs.push((
            short,
            tokio::spawn(async move {
                let r = run_workload(&w, &wc).await;
                // A host that is done logs out, so its portal's load falls.
                w.shutdown(Duration::from_secs(2)).await;
                r
            }),
        ));
        inits.push(init);
    }
    let before = crate::cmd::status::fetch(&admin).await?;
    println!("\n[3] three hosts logged in, all through the first portal iSNS listed. BEFORE:\n");
    print_tables(&before);

    // 4. Wait for the rebalance: a logout request and the moved host's login on P1.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut after;
    loop {
        after = crate::cmd::status::fetch(&admin).await?;
        let requested = after
            .events
            .iter()
            .any(|e| matches!(e.kind, EventKind::LogoutRequested { .. }));
        let on_p1 = after
            .table
            .portal(PortalId(1))
            .is_some_and(|p| !p.sessions.is_empty());
        if requested && on_p1 {
            break;
        }
        if Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("\n[4] the balancer acted. AFTER:\n");
    print_tables(&after);

    // 5. Let the hosts finish; host1 leaves first, and the registration must come back.
    let mut reports: Vec<(String, anyhow::Result<WorkloadReport>)> = Vec::new();
    for (who, task) in runs {
        let r = match task.await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(anyhow::anyhow!("{e}")),
            Err(e) => Err(anyhow::anyhow!("workload task: {e}")),
        };
        reports.push((who, r));
    }
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut last;
    loop {
        last = crate::cmd::status::fetch(&admin).await?;
        let restored = last
            .events
            .iter()
            .any(|e| matches!(e.kind, EventKind::RegistrationRestored { .. }));
        if restored || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for init in &inits {
        init.shutdown(Duration::from_secs(2)).await;
    }
    // Give the target a moment to record the logouts.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let last = crate::cmd::status::fetch(&admin).await.unwrap_or(last);

    println!("\n[5] events, in order (target and hosts):\n");
    print_timeline(&last, &log, t0);

    println!("\nfinal state:\n");
    print_tables(&last);

    // Summary and verdict.
    println!("\nsummary:");
    let mut problems = Vec::new();
    let mut moves = 0usize;
    for (who, r) in &reports {
        match r {
            Ok(r) => {
                moves += r.moves.len();
                let pauses: Vec<String> = r
                    .moves
                    .iter()
                    .map(|m| format!("{} -> {} paused {} ms", m.from, m.to, m.pause_ms))
                    .collect();
                println!(
                    "  {who}: {} I/Os ({} verified reads), {} errors, {} mismatches, {:.0} IOPS, p99 {} us{}",
                    r.ios,
                    r.verified_reads,
                    r.errors,
                    r.mismatches,
                    r.iops,
                    r.latency.p99_us,
                    if pauses.is_empty() {
                        String::new()
                    } else {
                        format!("; moved: {}", pauses.join(", "))
                    }
                );
                if r.errors > 0 || r.mismatches > 0 {
                    problems.push(format!(
                        "{who}: {} errors, {} mismatches",
                        r.errors, r.mismatches
                    ));
                }
                if r.ios == 0 {
                    problems.push(format!("{who}: no I/O completed"));
                }
            }
            Err(e) => problems.push(format!("{who}: {e:#}")),
        }
    }
    let deleted = count(&last, |k| {
        matches!(k, EventKind::RegistrationDeleted { .. })
    });
    let restored = count(&last, |k| {
        matches!(k, EventKind::RegistrationRestored { .. })
    });
    let redirected = count(&last, |k| matches!(k, EventKind::Redirected { .. }));
    let forced = count(&last, |k| matches!(k, EventKind::ForcedMove { .. }));
    println!(
        "  moves: {moves} ({forced} forced); registrations deleted: {deleted}, restored: {restored}; login redirects: {redirected}; {:.1} s",
        started.elapsed().as_secs_f64()
    );
    if moves == 0 {
        problems.push("no host was moved: no rebalance happened".into());
    }
    if restored == 0 {
        problems.push("the deleted registration was not restored".into());
    }

    handle.shutdown();
    let _ = stop_isns.send(());
    let _ = isns_task.await;
    if args.keep {
        let kept = dir.keep();
        println!("  kept {}", kept.display());
    }
    if problems.is_empty() {
        println!("\nOK: rebalanced with no I/O error and no data mismatch.");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("\nFAILED:");
        for p in &problems {
            println!("  {p}");
        }
        Ok(ExitCode::FAILURE)
    }
}

fn join(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn count(s: &AdminSnapshot, f: impl Fn(&EventKind) -> bool) -> usize {
    s.events.iter().filter(|e| f(&e.kind)).count()
}

fn print_tables(s: &AdminSnapshot) {
    let text = crate::render::status(s, 0);
    // The event list is printed separately as one timeline.
    for line in text.lines().take_while(|l| !l.starts_with("Events")) {
        println!("    {line}");
    }
}

/// Target events and host events merged by time.
fn print_timeline(s: &AdminSnapshot, log: &HostLog, t0: u64) {
    let mut lines: Vec<(u64, String)> = s
        .events
        .iter()
        .map(|e| (e.at_ms, format!("target  {}", crate::render::event_line(e))))
        .collect();
    if let Ok(l) = log.lock() {
        for (at, who, e) in l.iter() {
            let what = match e {
                InitiatorEvent::Discovered { portals } => {
                    format!("asked iSNS, got [{}]", join(portals))
                }
                InitiatorEvent::LoggedIn {
                    portal,
                    redirected_from,
                } => match redirected_from {
                    Some(r) => format!("logged in through {portal} (redirected from {r})"),
                    None => format!("logged in through {portal}"),
                },
                InitiatorEvent::LogoutRequested { portal } => {
                    format!("received Async Message \"logout requested\" on {portal}")
                }
                InitiatorEvent::LoggedOut { portal } => format!("logged out of {portal}"),
                InitiatorEvent::ConnectionLost { portal, reason } => {
                    format!("connection to {portal} lost: {reason}")
                }
                InitiatorEvent::IsnsQueried { portals } => {
                    format!("asked iSNS again, got [{}]", join(portals))
                }
                InitiatorEvent::Moved { from, to, pause_ms } => {
                    format!("MOVED {from} -> {to}, I/O paused {pause_ms} ms")
                }
                other => format!("{other:?}"),
            };
            lines.push((*at, format!("{who:<7} {what}")));
        }
    }
    lines.sort_by_key(|(at, _)| *at);
    for (at, l) in lines {
        println!("  +{:>6.3}s  {l}", at.saturating_sub(t0) as f64 / 1000.0);
    }
}
