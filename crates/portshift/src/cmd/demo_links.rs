//! `portshift demo --links`: the balancer's gain on real, rate-limited links — scenario (b) of
//! `bench/balance.sh`. Three portals, each behind its own 400 Mbit/s link (veth pairs into a
//! network namespace, `tc tbf` on the target's end); two streamers (1 MiB reads, queue depth 4)
//! and two light hosts (4 KiB random reads, queue depth 1) in the namespace, all logging in
//! through the first portal iSNS lists. It runs the scenario twice, balancer off and then
//! `--balance bandwidth:80%:50%`, and prints the streamers' throughput and the light hosts'
//! IOPS and latency for each. Needs root (namespaces, tc); removes what it created.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use initiator::WorkloadReport;

const NS: &str = "psdemo";
const PORTALS: usize = 3;
const RATE_MBIT: u32 = 400;
const IQN: &str = "iqn.2026-11.org.example:links";
const BALANCE: &str = "bandwidth:80%:50%";
const LUN_BYTES: u64 = 256 << 20;

/// The namespace and veth pairs; removed when dropped.
struct Links;

fn ip_cmd(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("running {}", args[0]))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Links {
    fn create() -> anyhow::Result<Links> {
        // Left over from an interrupted run.
        let _ = Command::new("ip")
            .args(["netns", "del", NS])
            .stderr(Stdio::null())
            .status();
        ip_cmd(&["ip", "netns", "add", NS])?;
        let links = Links;
        ip_cmd(&["ip", "netns", "exec", NS, "ip", "link", "set", "lo", "up"])?;
        for i in 1..=PORTALS {
            let (t, h) = (format!("psdemo-t{i}"), format!("psdemo-h{i}"));
            let _ = Command::new("ip")
                .args(["link", "del", &t])
                .stderr(Stdio::null())
                .status();
            ip_cmd(&["ip", "link", "add", &t, "type", "veth", "peer", "name", &h])?;
            ip_cmd(&["ip", "link", "set", &h, "netns", NS])?;
            ip_cmd(&["ip", "addr", "add", &format!("10.78.{i}.1/24"), "dev", &t])?;
            ip_cmd(&["ip", "link", "set", &t, "up"])?;
            ip_cmd(&[
                "ip",
                "netns",
                "exec",
                NS,
                "ip",
                "addr",
                "add",
                &format!("10.78.{i}.2/24"),
                "dev",
                &h,
            ])?;
            ip_cmd(&["ip", "netns", "exec", NS, "ip", "link", "set", &h, "up"])?;
            ip_cmd(&[
                "tc",
                "qdisc",
                "add",
                "dev",
                &t,
                "root",
                "tbf",
                "rate",
                &format!("{RATE_MBIT}mbit"),
                "burst",
                "256kb",
                "latency",
                "50ms",
            ])?;
        }
        Ok(links)
    }
}

impl Drop for Links {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", NS]).status();
        for i in 1..=PORTALS {
            let _ = Command::new("ip")
                .args(["link", "del", &format!("psdemo-t{i}")])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A child process, killed when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What one phase measured.
struct Phase {
    streamers_mbps: f64,
    light_iops: f64,
    light_p99_us: u64,
    moves: usize,
}

fn free_local_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Runs the scenario once with `balance` (None: balancer off) for `seconds`.
fn phase(dir: &Path, balance: Option<&str>, seconds: u64) -> anyhow::Result<Phase> {
    let exe = std::env::current_exe().context("finding the portshift binary")?;
    let isns: SocketAddr = "10.78.1.1:3205".parse()?;
    let db = dir.join(format!("isns-{}.redb", balance.map_or("off", |_| "on")));
    let log = |name: &str| std::fs::File::create(dir.join(name));
    let _isns = Child(
        Command::new(&exe)
            .args(["isns", "--listen", &isns.to_string(), "--db"])
            .arg(&db)
            .stdout(Stdio::null())
            .stderr(log("isns.log")?)
            .spawn()
            .context("starting the iSNS server")?,
    );
    let mut target = Command::new(&exe);
    target.arg("target");
    for i in 1..=PORTALS {
        target.args([
            "--portal",
            &format!("10.78.{i}.1:3260,speed={RATE_MBIT}Mbit"),
        ]);
    }
    target
        .args(["--lun", &format!("{IQN}={}", dir.join("lun.img").display())])
        .args(["--size", &LUN_BYTES.to_string()])
        .args(["--isns", &isns.to_string(), "--cooldown", "5"])
        .args(["--admin", &format!("127.0.0.1:{}", free_local_port()?)]);
    if let Some(b) = balance {
        target.args(["--balance", b]);
    }
    let mut target = Child(
        target
            .stdout(Stdio::null())
            .stderr(log("target.log")?)
            .spawn()
            .context("starting the target")?,
    );
    // Wait until iSNS lists every portal for the target.
    let rt = super::runtime()?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = rt
            .block_on(initiator::discovery::isns_portals(
                isns,
                "iqn.2026-11.org.example:probe",
                IQN,
                Duration::from_secs(2),
            ))
            .unwrap_or_default();
        if got.len() == PORTALS {
            break;
        }
        if let Ok(Some(status)) = target.0.try_wait() {
            let log = std::fs::read_to_string(dir.join("target.log")).unwrap_or_default();
            bail!("the target exited ({status}): {}", log.trim());
        }
        if Instant::now() > deadline {
            bail!(
                "the target did not register its {PORTALS} portals in iSNS within 15 s (see {})",
                dir.join("target.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // The hosts, in the namespace, through iSNS (portal 1 listed first).
    let host = |name: &str, qd: &str, blocks: &str| -> anyhow::Result<std::process::Child> {
        Command::new("ip")
            .args(["netns", "exec", NS])
            .arg(&exe)
            .args(["io", "--isns", &isns.to_string(), "--target", IQN])
            .args([
                "--initiator-name",
                &format!("iqn.2026-11.org.example:{name}"),
            ])
            .args(["--queue-depth", qd, "--blocks-per-io", blocks])
            .args(["--read-percent", "100", "--json"])
            .args(["--duration", &format!("{seconds}s")])
            .stdout(Stdio::piped())
            .stderr(log(&format!("{name}.log"))?)
            .spawn()
            .with_context(|| format!("starting host {name}"))
    };
    let mut hosts = Vec::new();
    for n in 1..=2 {
        hosts.push((true, host(&format!("streamer-{n}"), "4", "2048")?));
    }
    for n in 1..=2 {
        hosts.push((false, host(&format!("light-{n}"), "1", "8")?));
    }
    let mut result = Phase {
        streamers_mbps: 0.0,
        light_iops: 0.0,
        light_p99_us: 0,
        moves: 0,
    };
    for (streamer, child) in hosts {
        let out = child.wait_with_output().context("waiting for a host")?;
        let report: WorkloadReport = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("a host's report (logs in {})", dir.display()))?;
        if report.errors > 0 || report.mismatches > 0 {
            bail!(
                "a host saw {} errors and {} mismatches",
                report.errors,
                report.mismatches
            );
        }
        result.moves += report.moves.len();
        if streamer {
            result.streamers_mbps +=
                report.bytes as f64 / 1e6 / (report.elapsed_ms.max(1) as f64 / 1000.0);
        } else {
            result.light_iops += report.iops;
            result.light_p99_us = result.light_p99_us.max(report.latency.p99_us);
        }
    }
    Ok(result)
}

/// `portshift demo --links`.
pub fn run(seconds: u64, keep: bool) -> anyhow::Result<ExitCode> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "portshift demo --links needs root: it creates a network namespace, veth pairs and tc \
             rate limits (run it with sudo, or run `portshift demo` for the loopback demo)"
        );
    }
    let dir = tempfile::Builder::new()
        .prefix("portshift-demo-links-")
        .tempdir()?;
    println!(
        "portshift demo --links: three portals on {RATE_MBIT} Mbit/s links; two streamers and two \
         light hosts, all starting on the first portal; {seconds} s with the balancer off, then \
         {seconds} s with --balance {BALANCE}"
    );
    let links = Links::create()?;
    let phases = phase(dir.path(), None, seconds)
        .and_then(|off| Ok((off, phase(dir.path(), Some(BALANCE), seconds)?)));
    drop(links);
    let (off, on) = match phases {
        Ok(p) => p,
        Err(e) => {
            // Keep the logs the error points to.
            let kept = dir.keep();
            return Err(e.context(format!("logs kept in {}", kept.display())));
        }
    };
    println!();
    println!("| | streamers MB/s | light hosts IOPS | light p99 µs | moves |");
    println!("|---|---|---|---|---|");
    for (name, p) in [("balancer off", &off), (BALANCE, &on)] {
        println!(
            "| {name} | {:.1} | {:.0} | {} | {} |",
            p.streamers_mbps, p.light_iops, p.light_p99_us, p.moves
        );
    }
    println!(
        "\nthroughput {:.2}×, light hosts' IOPS {:.2}× (figures over each whole run, the time to \
         converge included)",
        on.streamers_mbps / off.streamers_mbps.max(1e-9),
        on.light_iops / off.light_iops.max(1e-9)
    );
    if keep {
        println!("logs kept in {}", dir.keep().display());
    }
    Ok(ExitCode::SUCCESS)
}
