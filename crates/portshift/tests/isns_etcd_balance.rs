//! Acceptance (issue 16, point 2, the balancer's half): with one etcd member and the first of
//! two `portshift isns` servers SIGKILLed, a balancer move on a storage system works end to
//! end through the surviving server.
//!
//! A three-member etcd cluster on loopback (`common::etcd`), iSNS servers A and B on it, and
//! two storage systems: S1 (two portals, `--isns A,B`, `--balance sessions:2`) and S2 (one
//! portal, `--isns B,A`). Both register; then etcd member 0 and A are SIGKILLed. The test
//! asserts:
//! - S1 fails over to B (its status names B) and B still answers for both systems;
//! - a pinned libiscsi `iscsi-perf` host and a `portshift io --verify --isns A,B` host log in
//!   through P0 (the first portal B lists): P0 reaches the threshold and the balancer moves the
//!   `portshift io` host: (its target, P0) is deleted in iSNS — B then lists only P1 for it —,
//!   the host is asked to log out, asks iSNS again (A is dead: B answers) and logs in through
//!   P1;
//! - once P0's load falls, the registration is restored: B lists P0 again;
//! - the verifying host ends with 0 errors and 0 mismatches, and iscsi-perf saw no failed
//!   command.
//!
//! Loopback only, ports picked free at run time, files in a temporary directory, every wait
//! bounded.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use balancer::{EventKind, PortalId};
use common::etcd::{CONTROL_NODE, EtcdCluster, isns_on_etcd};
use common::{
    Proc, free_addr, free_port_on_both, portshift, portshift_server, snapshot, tool, wait_for,
};
use initiator::WorkloadReport;

const S1_IO: &str = "iqn.2024-01.test.fleet:s1-io";
const S1_PERF: &str = "iqn.2024-01.test.fleet:s1-perf";
const S2_DISK: &str = "iqn.2024-01.test.fleet:s2-disk";
const IO_HOST: &str = "iqn.2024-01.test.fleet:io-host";
const PERF_HOST: &str = "iqn.2024-01.test.fleet:perf-host";
const P0: PortalId = PortalId(0);
const P1: PortalId = PortalId(1);

/// The portals `server` lists for `target` (empty when it does not answer).
fn listed(server: SocketAddr, target: &str) -> Vec<SocketAddr> {
    common::isns_listed(server, CONTROL_NODE, target)
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn a_balancer_move_works_through_the_surviving_isns_server() {
    tool("iscsi-perf", "libiscsi-bin");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = EtcdCluster::start(dir.path());
    let endpoints = cluster.endpoints();
    let (isns_a, a) = isns_on_etcd(dir.path(), "a", &endpoints);
    let (_isns_b, b) = isns_on_etcd(dir.path(), "b", &endpoints);
    let mut isns_a = Some(isns_a);

    // S1: two portals, balanced on sessions; S2: one portal.
    let port = free_port_on_both();
    let p: [SocketAddr; 2] = [
        format!("127.0.0.1:{port}").parse().unwrap(),
        format!("127.0.0.2:{port}").parse().unwrap(),
    ];
    let admin1 = free_addr("127.0.0.1");
    let s1_log = dir.path().join("s1.log");
    let _s1 = portshift_server(
        &strings(&[
            "target",
            "--portal",
            &p[0].to_string(),
            "--portal",
            &p[1].to_string(),
            "--lun",
            &format!("{S1_IO}={}", dir.path().join("io.img").display()),
            "--lun",
            &format!("{S1_PERF}={}", dir.path().join("perf.img").display()),
            "--size",
            "16M",
            "--isns",
            &format!("{a},{b}"),
            "--admin",
            &admin1.to_string(),
            "--balance",
            "sessions:2",
            "--cooldown",
            "3",
            "--pin",
            PERF_HOST,
        ]),
        admin1,
        &s1_log,
    );
    let s2_portal = free_addr("127.0.0.3");
    let admin2 = free_addr("127.0.0.1");
    let _s2 = portshift_server(
        &strings(&[
            "target",
            "--portal",
            &s2_portal.to_string(),
            "--lun",
            &format!("{S2_DISK}={}", dir.path().join("s2.img").display()),
            "--size",
            "16M",
            "--isns",
            &format!("{b},{a}"),
            "--admin",
            &admin2.to_string(),
        ]),
        admin2,
        &dir.path().join("s2.log"),
    );
    let s1_text = || std::fs::read_to_string(&s1_log).unwrap_or_default();
    let both = wait_for(Duration::from_secs(15), || {
        (listed(b, S1_IO) == p && listed(a, S2_DISK) == [s2_portal]).then_some(())
    });
    assert!(
        both.is_some(),
        "the two systems are not listed by both servers: B {:?}, A {:?}\n{}",
        listed(b, S1_IO),
        listed(a, S2_DISK),
        s1_text()
    );

    // One etcd member and A die.
    cluster.kill(0);
    drop(isns_a.take());
    let moved = common::wait_isns_contact(admin1, b, Duration::from_secs(10));
    assert!(
        moved.is_some(),
        "S1 did not move to B: {:?}\n{}",
        snapshot(admin1).isns_contact,
        s1_text()
    );
    assert_eq!(listed(b, S1_IO), p, "B no longer lists S1");
    assert_eq!(listed(b, S2_DISK), [s2_portal], "B no longer lists S2");

    // A pinned libiscsi host and a verifying host through P0: P0 reaches sessions:2.
    let perf_out = dir.path().join("perf.out");
    let mut perf = Proc(
        Command::new(tool("iscsi-perf", "libiscsi-bin"))
            .args([
                "-t", "25", "-b", "8", "-m", "4", "-r", "-x", "100", "-i", PERF_HOST,
            ])
            .arg(format!("iscsi://{}/{S1_PERF}/0", p[0]))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&perf_out).expect("perf log"))
            .stderr(Stdio::piped())
            .spawn()
            .expect("start iscsi-perf"),
    );
    let (io_out, io_err) = (dir.path().join("io.json"), dir.path().join("io.err"));
    let mut io = portshift(
        &strings(&[
            "io",
            "--isns",
            &format!("{a},{b}"),
            "--target",
            S1_IO,
            "--initiator-name",
            IO_HOST,
            "--verify",
            "--region-blocks",
            "256",
            "--queue-depth",
            "4",
            "--json",
            "--duration",
            "20s",
        ]),
        &io_out,
        &io_err,
    );

    // The balancer moves the verifying host: (S1_IO, P0) deleted in iSNS (B lists P1 only),
    // the host asked to log out, and back on P1.
    let deleted = wait_for(Duration::from_secs(20), || {
        snapshot(admin1).events.into_iter().find(|e| {
            matches!(&e.kind, EventKind::RegistrationDeleted { target, portal }
                if target == S1_IO && *portal == P0)
        })
    });
    assert!(
        deleted.is_some(),
        "the balancer deleted no registration: {:#?}\n{}",
        snapshot(admin1).events,
        s1_text()
    );
    let only_p1 = wait_for(Duration::from_secs(5), || {
        let l = listed(b, S1_IO);
        (l == [p[1]] || snapshot(admin1).events.iter().any(|e| {
            matches!(&e.kind, EventKind::RegistrationRestored { target, .. } if target == S1_IO)
        }))
        .then_some(l)
    });
    assert_eq!(
        only_p1.as_deref(),
        Some(&[p[1]][..]),
        "B did not list only P1 for {S1_IO} after the deletion"
    );
    let on_p1 = wait_for(Duration::from_secs(15), || {
        let s = snapshot(admin1);
        s.table.portals[P1.0 as usize]
            .sessions
            .iter()
            .any(|x| x.initiator == IO_HOST)
            .then_some(())
    });
    assert!(
        on_p1.is_some(),
        "the verifying host is not on P1: {:?}\n{}",
        snapshot(admin1).table,
        s1_text()
    );
    assert!(
        snapshot(admin1).events.iter().any(|e| matches!(&e.kind,
            EventKind::LogoutRequested { initiator, from, to, .. }
                if initiator == IO_HOST && *from == P0 && *to == P1)),
        "no logout request moved the verifying host from P0 to P1"
    );

    // P0 has only the pinned host left: after the cooldown the registration is restored (S1
    // records it once B has acknowledged it), and B lists P0 again. (B may list it a little
    // before S1 records it: the answer to S1 is still on its way.)
    let restored = wait_for(Duration::from_secs(20), || {
        snapshot(admin1).events.into_iter().find(|e| {
            matches!(&e.kind, EventKind::RegistrationRestored { target, portal }
                if target == S1_IO && *portal == P0)
        })
    });
    assert!(
        restored.is_some(),
        "S1 did not restore ({S1_IO}, P0): {:#?}\n{}\nB:\n{}",
        snapshot(admin1).events,
        s1_text(),
        std::fs::read_to_string(dir.path().join("b.log")).unwrap_or_default()
    );
    assert_eq!(
        listed(b, S1_IO),
        p,
        "B does not list P0 again for {S1_IO} after acknowledging its restore"
    );

    // Both hosts end clean.
    let done = wait_for(Duration::from_secs(60), || io.0.try_wait().unwrap());
    assert!(done.is_some(), "portshift io did not end");
    let text = std::fs::read_to_string(&io_out).unwrap_or_default();
    let errs = std::fs::read_to_string(&io_err).unwrap_or_default();
    let report: WorkloadReport =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("report ({e}):\n{text}\n{errs}"));
    assert_eq!(report.errors, 0, "{text}\n{errs}");
    assert_eq!(report.mismatches, 0, "{text}\n{errs}");
    assert!(report.verified_reads > 0, "{text}");
    assert!(
        report.moves.iter().any(|m| m.from == p[0] && m.to == p[1]),
        "the host's report shows no move from P0 to P1: {text}"
    );
    let perf_done = wait_for(Duration::from_secs(60), || perf.0.try_wait().unwrap());
    let perf_log = std::fs::read_to_string(&perf_out)
        .unwrap_or_default()
        .replace('\r', "\n");
    let mut perf_err = String::new();
    if let Some(mut e) = perf.0.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut perf_err);
    }
    assert!(perf_done.is_some(), "iscsi-perf did not end:\n{perf_log}");
    assert!(
        !perf_log.contains("failed") && !perf_err.contains("failed"),
        "iscsi-perf saw a failed command:\n{perf_err}\n{perf_log}"
    );
}
