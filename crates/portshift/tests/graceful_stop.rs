//! Acceptance (issue 15, point 5): SIGTERM during I/O stops the target gracefully, and hosts
//! reconnect when it is started again.
//!
//! `portshift isns` and `portshift target` (two portals, one LUN file, `--stop-grace 6s`) on
//! loopback. Two hosts do I/O: `portshift io --verify` (found through iSNS) and libiscsi's
//! `iscsi-perf`. Then SIGTERM to the target. The test asserts that
//! - the target asks both sessions to log out, refuses the logins that follow with 0x0301
//!   "service unavailable", sees both sessions gone and exits 0, well within the grace;
//! - its registration is gone from iSNS (isnsadm lists none of its nodes);
//! - started again with the same arguments and files, both hosts log in again on their own
//!   and do I/O;
//! - the verifying host ends with 0 errors and 0 mismatches (every block written before the
//!   stop reads back), and iscsi-perf finishes its run with no failed read.
//!
//! Every wait has a deadline; ports are picked free; files live in a temporary directory.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    Proc, free_addr, free_port_on_both, isns_server, isnsadm, isnsadm_conf, portshift,
    portshift_server, snapshot, tool, wait_for,
};

const TARGET: &str = "iqn.2026-12.io.portshift:graceful";
const IO_HOST: &str = "iqn.2026-12.io.portshift:host-io";
const PERF_HOST: &str = "iqn.2026-12.io.portshift:host-perf";
const RUN: Duration = Duration::from_secs(24);
const GRACE: Duration = Duration::from_secs(6);

fn target_args(dir: &Path, port: u16, isns: SocketAddr, admin: SocketAddr) -> Vec<String> {
    vec![
        "target".into(),
        "--portal".into(),
        format!("127.0.0.1:{port}"),
        "--portal".into(),
        format!("127.0.0.2:{port}"),
        "--lun".into(),
        format!("{TARGET}={}", dir.join("lun.img").display()),
        "--size".into(),
        "32M".into(),
        "--isns".into(),
        isns.to_string(),
        "--admin".into(),
        admin.to_string(),
        "--stop-grace".into(),
        format!("{}s", GRACE.as_secs()),
        "--log".into(),
        "info".into(),
    ]
}

fn sessions(admin: SocketAddr) -> usize {
    snapshot(admin)
        .table
        .portals
        .iter()
        .map(|p| p.sessions.len())
        .sum()
}

#[test]
fn sigterm_logs_every_host_out_and_they_come_back_after_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_isns, isns) = isns_server(dir.path(), &[]);
    let port = free_port_on_both();
    let admin = free_addr("127.0.0.1");
    let args = target_args(dir.path(), port, isns, admin);
    let log1 = dir.path().join("target1.log");
    let mut target = portshift_server(&args, admin, &log1);

    let io_out = dir.path().join("io.log");
    let mut io = portshift(
        &[
            "io",
            "--isns",
            &isns.to_string(),
            "--target",
            TARGET,
            "--initiator-name",
            IO_HOST,
            "--verify",
            "--queue-depth",
            "8",
            "--duration",
            &format!("{}s", RUN.as_secs()),
        ]
        .map(String::from),
        &io_out,
        &io_out,
    );
    let perf_out = dir.path().join("perf.log");
    let mut perf = Proc(
        Command::new(tool("iscsi-perf", "libiscsi-bin"))
            .args(["-t", &RUN.as_secs().to_string(), "-b", "8", "-m", "4", "-r"])
            .args(["-x", "100", "-i", PERF_HOST])
            .arg(format!("iscsi://127.0.0.1:{port}/{TARGET}/0"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&perf_out).unwrap())
            .stderr(std::fs::File::create(dir.path().join("perf.err")).unwrap())
            .spawn()
            .expect("spawn iscsi-perf"),
    );
    assert!(
        wait_for(Duration::from_secs(15), || (sessions(admin) == 2)
            .then_some(()))
        .is_some(),
        "both hosts never logged in"
    );
    std::thread::sleep(Duration::from_secs(3));

    // SIGTERM: a graceful stop.
    let stop = Instant::now();
    // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
    assert_eq!(
        unsafe { libc::kill(target.0.id() as i32, libc::SIGTERM) },
        0
    );
    let status = wait_for(GRACE + Duration::from_secs(5), || {
        target.0.try_wait().unwrap()
    })
    .expect("the target did not exit within the grace");
    let took = stop.elapsed();
    let log = std::fs::read_to_string(&log1).unwrap();
    assert!(status.success(), "the target exited with {status}:\n{log}");
    assert!(
        took < GRACE,
        "the stop took {took:?}, the grace is {GRACE:?}:\n{log}"
    );
    assert!(
        log.contains("stopping: 2 sessions asked to log out, 0 left"),
        "not every session logged out:\n{log}"
    );
    assert!(log.contains("stopped"), "{log}");
    for host in [IO_HOST, PERF_HOST] {
        assert!(
            log.lines()
                .any(|l| l.contains("logout requested by the initiator"))
                && log.contains(host),
            "{host} did not log out:\n{log}"
        );
    }
    assert!(
        log.contains("login refused (status 0x0301): the target is shutting down"),
        "logins during the stop were not refused as unavailable:\n{log}"
    );
    // Its registration left iSNS.
    let conf = isnsadm_conf(
        dir.path(),
        "isnsadm.conf",
        isns,
        "iqn.2026-12.io.portshift:admin",
    );
    let (ok, nodes) = isnsadm(&conf, &["--list", "nodes"]);
    assert!(ok, "isnsadm --list nodes failed");
    assert!(
        !nodes.contains(TARGET),
        "the target is still registered:\n{nodes}"
    );

    // Started again: both hosts come back on their own.
    std::thread::sleep(Duration::from_secs(1));
    let restarted = Instant::now();
    let log2 = dir.path().join("target2.log");
    let _target = portshift_server(&args, admin, &log2);
    assert!(
        wait_for(Duration::from_secs(20), || (sessions(admin) == 2)
            .then_some(()))
        .is_some(),
        "the hosts did not log in again after the restart:\n{}",
        std::fs::read_to_string(&log2).unwrap_or_default()
    );
    let back = restarted.elapsed();
    // Each host's new session does I/O.
    let busy = wait_for(Duration::from_secs(10), || {
        let t = snapshot(admin).table;
        let mut hosts: Vec<(String, u64)> = t
            .portals
            .iter()
            .flat_map(|p| p.sessions.iter().map(|s| (s.initiator.clone(), s.commands)))
            .collect();
        hosts.sort();
        let names: Vec<&str> = hosts.iter().map(|(n, _)| n.as_str()).collect();
        (names == [IO_HOST, PERF_HOST] && hosts.iter().all(|(_, c)| *c > 100)).then_some(hosts)
    });
    assert!(
        busy.is_some(),
        "the hosts came back ({back:?}) but did no I/O"
    );

    let io_status = wait_for(RUN + Duration::from_secs(30), || io.0.try_wait().unwrap())
        .expect("portshift io did not finish");
    let io_log = std::fs::read_to_string(&io_out).unwrap();
    assert!(io_status.success(), "portshift io failed:\n{io_log}");
    assert!(
        io_log.contains(" 0 errors, 0 mismatches"),
        "data errors across the stop:\n{io_log}"
    );
    let verified: u64 = io_log
        .split(" reads verified")
        .next()
        .and_then(|s| s.rsplit('(').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(verified > 0, "no read was verified:\n{io_log}");

    let perf_status = wait_for(RUN + Duration::from_secs(30), || perf.0.try_wait().unwrap())
        .expect("iscsi-perf did not finish");
    let perf_log = std::fs::read_to_string(&perf_out)
        .unwrap()
        .replace('\r', "\n");
    let perf_err = std::fs::read_to_string(dir.path().join("perf.err")).unwrap();
    assert!(
        !perf_err.contains("failed") && !perf_log.contains("failed"),
        "iscsi-perf saw a failed command:\n{perf_err}\n{perf_log}"
    );
    assert!(
        perf_status.success() && perf_log.lines().any(|l| l == "finished."),
        "iscsi-perf did not finish its run ({perf_status}):\n{perf_err}\n{perf_log}"
    );
    let log2 = std::fs::read_to_string(&log2).unwrap();
    assert!(!log2.contains("ERROR"), "{log2}");
}
