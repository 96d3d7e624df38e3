//! `portshift io`: a verifying I/O workload through portshift's own initiator,
//! following the target's portal moves (iSNS or a fixed portal). With
//! `--reconnect-every` the host also comes and goes on its own. SIGINT or SIGTERM
//! stops issuing I/O; the report is still printed.
//!
//! On a terminal (stderr), a progress bar shows the run's time with live IOPS, MB/s, moves and
//! errors; piped, the output is the events and the summary only (`--json`: the report only).

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use initiator::{
    BalancedConfig, BalancedInitiator, InitiatorEvent, PortalSource, Progress, WorkloadConfig,
    WorkloadReport, run_workload,
};

/// Bound on connecting to an iSNS server and on its answer before the next one is asked.
const ISNS_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("discovery").required(true).args(["isns", "portal"])))]
pub struct Args {
    /// iSNS servers, HOST:PORT[,HOST:PORT...]: log in through the first portal the first
    /// server that answers lists for --target (a server that does not answer within 3 s is
    /// left for the next, also when the host asks again after a move).
    #[arg(long, value_delimiter = ',', value_name = "HOST:PORT")]
    isns: Vec<SocketAddr>,
    /// Fixed portal (IP:PORT); without --target the first SendTargets answer is used.
    #[arg(long)]
    portal: Option<SocketAddr>,
    /// Target name (IQN); required with --isns.
    #[arg(long)]
    target: Option<String>,
    /// With --portal and --target: skip SendTargets and log in directly.
    #[arg(long)]
    no_send_targets: bool,
    /// Our iSCSI name.
    #[arg(long, default_value = "iqn.2024-01.io.portshift:initiator")]
    initiator_name: String,
    /// LUN (portshift's target serves LUN 0; tgtd's first data LUN is 1).
    #[arg(long, default_value_t = 0)]
    lun: u16,
    /// Concurrent I/Os.
    #[arg(long, default_value_t = 8)]
    queue_depth: usize,
    /// Logical block size expected (must match READ CAPACITY); default: READ CAPACITY's.
    #[arg(long)]
    block_size: Option<u32>,
    /// Blocks per I/O.
    #[arg(long, default_value_t = 1)]
    blocks_per_io: u32,
    /// Percentage of reads.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u8).range(0..=100))]
    read_percent: u8,
    /// Run time, e.g. 10s, 500ms, 2m.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Stop after this many I/Os.
    #[arg(long)]
    max_ios: Option<u64>,
    /// Issue at most this many I/Os per second, evenly paced (a host of known demand).
    #[arg(long, value_parser = parse_rate)]
    rate_iops: Option<f64>,
    /// Write checksummed patterns and verify every read.
    #[arg(long)]
    verify: bool,
    /// Limit I/O to the first N blocks of the LUN.
    #[arg(long)]
    region_blocks: Option<u64>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// Leave voluntarily this long after each login (drain, log out, look the portals up
    /// again, log in through the first), e.g. 2s; reported as reconnects, not moves.
    #[arg(long, value_parser = parse_reconnect_every)]
    reconnect_every: Option<Duration>,
    #[command(flatten)]
    chap: super::target_access::InitiatorChapArgs,
}

/// Parse `10s`, `250ms`, `2m` or a plain number of seconds.
pub(crate) fn parse_duration(v: &str) -> Result<Duration, String> {
    let (num, unit) = match v.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => v.split_at(i),
        None => (v, "s"),
    };
    let n: f64 = num.parse().map_err(|_| format!("bad duration {v:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("bad duration unit in {v:?} (use ms, s, m, h)")),
    };
    if !(0.0..=86_400.0).contains(&secs) {
        return Err(format!("duration {v:?} out of range (at most 24h)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Shortest `--reconnect-every`: each reconnect re-issues what was queued, and a host that
/// never stays long enough to finish an I/O would exhaust the re-issue bound.
const MIN_RECONNECT_EVERY: Duration = Duration::from_millis(100);

fn parse_reconnect_every(v: &str) -> Result<Duration, String> {
    let d = parse_duration(v)?;
    if d < MIN_RECONNECT_EVERY {
        return Err(format!(
            "--reconnect-every {v:?} is shorter than {} ms",
            MIN_RECONNECT_EVERY.as_millis()
        ));
    }
    Ok(d)
}

fn parse_rate(v: &str) -> Result<f64, String> {
    match v.parse::<f64>() {
        Ok(r) if r > 0.0 && r <= 10_000_000.0 => Ok(r),
        _ => Err(format!(
            "--rate-iops {v:?}: expected I/Os per second, above 0 and at most 10,000,000"
        )),
    }
}

/// One thread, like iscsi-perf: the session's reader, writer and workers hand each other work
/// without a cross-thread wake-up (a futex and an eventfd write each) per I/O; on this two-core
/// machine the other core is the target's (BENCHMARKS.md, issue 17).
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    keep_freed_memory();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("starting tokio runtime: {e}"))?
        .block_on(async {
            // A spawned task, not the block_on future: waking it from the session's tasks
            // is a push on the run queue, where waking the block_on future is an eventfd
            // write per I/O.
            tokio::spawn(run_async(args))
                .await
                .map_err(|e| anyhow::anyhow!("the I/O task failed: {e}"))?
        })
}

/// Each Data-In of a large read is a fresh buffer of the PDU's size, freed when the I/O is
/// accounted. With glibc's defaults (top-of-heap trimmed past 128 KiB, growing with the largest
/// mmap freed) the heap shrank and grew again about every fifth 1 MiB read, and every page came
/// back through a page fault and a zeroing: 1 MiB reads at QD4 spent more system time per I/O
/// than iscsi-perf's. Keeping up to 64 MiB of freed memory (and serving blocks up to 32 MiB
/// from the heap) reuses the same pages.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes two glibc malloc tunables; it is called before the runtime
    // (and any other thread of this process) exists. Measured in bench/profile.sh: see the
    // commit that added it.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}

fn print_event(e: &InitiatorEvent) {
    match e {
        InitiatorEvent::Moved { from, to, pause_ms } => {
            println!("moved: {from} -> {to} (pause {pause_ms} ms)")
        }
        InitiatorEvent::LoggedIn {
            portal,
            redirected_from: Some(r),
        } => println!("logged in: {portal} (redirected from {r})"),
        InitiatorEvent::LoggedIn { portal, .. } => println!("logged in: {portal}"),
        InitiatorEvent::LogoutRequested { portal } => {
            println!("logout requested by target on {portal}")
        }
        InitiatorEvent::IsnsQueried { portals } | InitiatorEvent::Discovered { portals } => {
            let list: Vec<String> = portals.iter().map(|p| p.to_string()).collect();
            println!("portals: [{}]", list.join(", "))
        }
        InitiatorEvent::ConnectionLost { portal, reason } => {
            println!("connection lost on {portal}: {reason}")
        }
        InitiatorEvent::Reconnected {
            from,
            to,
            cause,
            pause_ms,
        } => println!("reconnected ({cause:?}): {from} -> {to} (pause {pause_ms} ms)"),
        InitiatorEvent::Leaving { portal } => println!("leaving {portal} (voluntary logout)"),
        InitiatorEvent::Failed { reason } => println!("recovery failed: {reason}"),
        InitiatorEvent::LoggedOut { .. } => {}
    }
}

fn print_summary(r: &WorkloadReport) {
    println!(
        "target {}: {} I/Os ({} reads, {} writes) in {} ms = {:.0} IOPS, {} errors, {} mismatches ({} reads verified)",
        r.target,
        r.ios,
        r.reads,
        r.writes,
        r.elapsed_ms,
        r.iops,
        r.errors,
        r.mismatches,
        r.verified_reads
    );
    let l = &r.latency;
    println!(
        "latency us: mean {:.0} p50 {} p90 {} p99 {} p99.9 {} max {}",
        l.mean_us, l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us
    );
    println!("moves (requested by the target): {}", r.moves.len());
    for m in &r.moves {
        println!("  {} -> {} pause {} ms", m.from, m.to, m.pause_ms);
    }
    println!("reconnects (not requested): {}", r.reconnects.len());
    for m in &r.reconnects {
        println!(
            "  {:?}: {} -> {} pause {} ms",
            m.cause, m.from, m.to, m.pause_ms
        );
    }
    for e in &r.error_samples {
        println!("  error: {e}");
    }
}

/// The live display on a terminal: the run's time as a bar, and the rates of the last second.
struct LiveBar {
    bar: ProgressBar,
    /// Moves seen so far (from the initiator's events).
    moves: Arc<AtomicU64>,
}

impl LiveBar {
    /// A bar on stderr when it is a terminal and the report is text; otherwise none.
    fn new(json: bool, duration: Duration) -> Option<LiveBar> {
        if json || !std::io::stderr().is_terminal() {
            return None;
        }
        let bar = ProgressBar::with_draw_target(
            Some(duration.as_millis().max(1) as u64),
            ProgressDrawTarget::stderr_with_hz(4),
        );
        let style = ProgressStyle::with_template("{elapsed:>4} [{bar:24}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        Some(LiveBar {
            bar,
            moves: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Redraws twice a second from `progress` until the bar is finished.
    async fn run(bar: ProgressBar, moves: Arc<AtomicU64>, progress: Arc<Progress>) {
        let start = Instant::now();
        let mut last = (start, 0u64, 0u64);
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        while !bar.is_finished() {
            tick.tick().await;
            let now = Instant::now();
            let ios = progress.ios.load(Ordering::Relaxed);
            let bytes = progress.bytes.load(Ordering::Relaxed);
            let dt = now.duration_since(last.0).as_secs_f64().max(1e-3);
            bar.set_message(live_message(
                (ios - last.1) as f64 / dt,
                (bytes - last.2) as f64 / dt,
                moves.load(Ordering::Relaxed),
                progress.errors.load(Ordering::Relaxed),
            ));
            bar.set_position(now.duration_since(start).as_millis() as u64);
            last = (now, ios, bytes);
        }
    }
}

/// The bar's text: `12,345 IOPS  48.2 MB/s  moves 1  errors 0`.
fn live_message(iops: f64, bytes_per_s: f64, moves: u64, errors: u64) -> String {
    format!(
        "{} IOPS  {:.1} MB/s  moves {moves}  errors {errors}",
        thousands(iops.round() as u64),
        bytes_per_s / 1e6
    )
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Sets `stop` on the first SIGINT or SIGTERM.
async fn stop_on_signal(stop: Arc<AtomicBool>) {
    match super::until_stopped().await {
        Ok(()) => stop.store(true, Ordering::Relaxed),
        Err(e) => tracing::warn!("{e:#}"),
    }
}

async fn run_async(args: Args) -> anyhow::Result<ExitCode> {
    let source = match (args.isns.as_slice(), args.portal) {
        ([server], _) => {
            anyhow::ensure!(args.target.is_some(), "--isns needs --target IQN");
            PortalSource::Isns(*server)
        }
        ([_, _, ..], _) => {
            anyhow::ensure!(args.target.is_some(), "--isns needs --target IQN");
            PortalSource::IsnsServers(initiator::discovery::IsnsServers::new(
                args.isns.clone(),
                ISNS_TIMEOUT,
            ))
        }
        ([], Some(portal)) => PortalSource::Fixed {
            portal,
            send_targets: !(args.no_send_targets && args.target.is_some()),
        },
        ([], None) => anyhow::bail!("give --isns HOST:PORT or --portal IP:PORT"),
    };
    let mut bc = BalancedConfig::new(&args.initiator_name, args.target.as_deref(), source);
    bc.queue_depth = args.queue_depth.max(1);
    bc.reconnect_every = args.reconnect_every;
    (bc.auth, bc.discovery_auth) = args.chap.auth()?;
    let (init, mut events) = BalancedInitiator::connect(bc).await?;
    let json = args.json;
    let live = LiveBar::new(json, args.duration);
    let (bar, moves) = match &live {
        Some(l) => (Some(l.bar.clone()), l.moves.clone()),
        None => (None, Arc::new(AtomicU64::new(0))),
    };
    let printer = tokio::spawn(async move {
        while let Some(e) = events.recv().await {
            if matches!(e, InitiatorEvent::Moved { .. }) {
                moves.fetch_add(1, Ordering::Relaxed);
            }
            match (&bar, json) {
                (_, true) => {}
                // Printed above the bar, which is drawn again below.
                (Some(bar), false) => bar.suspend(|| print_event(&e)),
                (None, false) => print_event(&e),
            }
        }
    });
    let mut wc = WorkloadConfig::new(&args.initiator_name);
    wc.lun = args.lun;
    wc.queue_depth = args.queue_depth;
    wc.block_size = args.block_size;
    wc.blocks_per_io = args.blocks_per_io;
    wc.read_percent = args.read_percent;
    wc.duration = args.duration;
    wc.max_ios = args.max_ios;
    wc.rate_iops = args.rate_iops;
    wc.verify = args.verify;
    wc.region_blocks = args.region_blocks;
    wc.seed = std::process::id() as u64;
    let stop = Arc::new(AtomicBool::new(false));
    wc.stop = Some(stop.clone());
    let signals = tokio::spawn(stop_on_signal(stop));
    let drawing = live.as_ref().map(|l| {
        let progress = Arc::new(Progress::default());
        wc.progress = Some(progress.clone());
        tokio::spawn(LiveBar::run(l.bar.clone(), l.moves.clone(), progress))
    });
    let report = run_workload(&init, &wc).await;
    signals.abort();
    if let Some(l) = &live {
        l.bar.finish_and_clear();
    }
    if let Some(d) = drawing {
        d.abort();
    }
    init.shutdown(Duration::from_secs(5)).await;
    // A move that completed between the last I/O and the final logout belongs in the report.
    let report = report.map(|mut r| {
        r.moves = init.moves();
        r.reconnects = init.reconnects();
        r
    });
    drop(init);
    let _ = tokio::time::timeout(Duration::from_secs(1), printer).await;
    let report = report?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_summary(&report);
    }
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("3d").is_err());
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("100h").is_err());
        assert_eq!(parse_reconnect_every("1s"), Ok(Duration::from_secs(1)));
        assert!(parse_reconnect_every("50ms").is_err());
        assert!(parse_reconnect_every("0").is_err());
    }

    #[test]
    fn live_message_reads_as_rates() {
        assert_eq!(
            live_message(12_345.4, 48_210_000.0, 1, 0),
            "12,345 IOPS  48.2 MB/s  moves 1  errors 0"
        );
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
