//! Acceptance (issue 16, build item 5): clients of several iSNS servers fail over.
//!
//! Two `portshift isns` servers A and B (each its own embedded registry), a `portshift target`
//! with two portals given `--isns A,B`, and a `portshift io --verify` host. The test asserts:
//! - the target registers with A (both portals listed there, nothing at B);
//! - after A is SIGKILLed, B lists the target's portals within 5 s (the target re-registered
//!   there) and the target's status names B;
//! - a new `portshift io --isns A,B` host, with A dead, discovers the second target through B (it says
//!   so on stderr) and runs with no error and no mismatch;
//! - with B killed as well no iSNS server answers, and the first host's I/O goes on; B started
//!   again (empty registry, same address) gets the whole registration again;
//! - the first host ran throughout with 0 errors and 0 mismatches.
//!
//! Loopback only, ports picked free at run time, files in a temporary directory.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Proc, free_addr, free_port_on_both, portshift, portshift_server, snapshot, wait_for};
use initiator::WorkloadReport;

const TARGET: &str = "iqn.2024-01.test.failover:disk";
/// The second host's disk (a verifying host needs a disk of its own).
const TARGET2: &str = "iqn.2024-01.test.failover:disk2";
/// How long the target may take to re-register with B once A is dead (the figure).
const FAILOVER_LIMIT: Duration = Duration::from_secs(5);

/// `portshift isns` on `addr` with its database in `dir`.
fn isns_at(dir: &Path, addr: SocketAddr) -> Proc {
    std::fs::create_dir_all(dir).expect("isns dir");
    let args: Vec<String> = vec![
        "isns".into(),
        "--listen".into(),
        addr.to_string(),
        "--db".into(),
        dir.join("isns.redb").display().to_string(),
    ];
    portshift_server(&args, addr, &dir.join("isns.log"))
}

/// The portals `server` lists for TARGET (empty when it does not know it or does not answer).
fn listed(server: SocketAddr) -> Vec<SocketAddr> {
    common::isns_listed(server, "iqn.2024-01.test.failover:probe", TARGET)
}

fn report(out: &Path, err: &Path) -> WorkloadReport {
    let text = std::fs::read_to_string(out).unwrap_or_default();
    let errs = std::fs::read_to_string(err).unwrap_or_default();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("report ({e}):\n{text}\n{errs}"))
}

#[test]
fn a_target_and_its_hosts_fail_over_to_the_next_isns_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let mut isns_a = Some(isns_at(&dir.path().join("a"), a));
    let mut isns_b = Some(isns_at(&dir.path().join("b"), b));
    let servers = format!("{a},{b}");

    let port = free_port_on_both();
    let portals: [SocketAddr; 2] = [
        format!("127.0.0.1:{port}").parse().unwrap(),
        format!("127.0.0.2:{port}").parse().unwrap(),
    ];
    let admin = free_addr("127.0.0.1");
    let lun = dir.path().join("lun.img");
    let target_args: Vec<String> = vec![
        "target".into(),
        "--portal".into(),
        portals[0].to_string(),
        "--portal".into(),
        portals[1].to_string(),
        "--lun".into(),
        format!("{TARGET}={}", lun.display()),
        "--lun".into(),
        format!("{TARGET2}={}", dir.path().join("lun2.img").display()),
        "--size".into(),
        "16M".into(),
        "--isns".into(),
        servers.clone(),
        "--admin".into(),
        admin.to_string(),
    ];
    let target_log = dir.path().join("target.log");
    let _target = portshift_server(&target_args, admin, &target_log);
    let log = || std::fs::read_to_string(&target_log).unwrap_or_default();

    // Registered with A, the first server; B has never heard of it.
    assert!(
        wait_for(Duration::from_secs(10), || (listed(a) == portals)
            .then_some(()))
        .is_some(),
        "A never listed {portals:?}: {:?}\n{}",
        listed(a),
        log()
    );
    assert!(listed(b).is_empty(), "B lists {:?} already", listed(b));

    // A verifying host, found through iSNS, for the whole test.
    let (host_out, host_err) = (dir.path().join("host.json"), dir.path().join("host.err"));
    let mut host = portshift(
        &[
            "io",
            "--isns",
            &servers,
            "--target",
            TARGET,
            "--initiator-name",
            "iqn.2024-01.test.failover:host1",
            "--verify",
            "--json",
            "--duration",
            "30s",
        ]
        .map(String::from),
        &host_out,
        &host_err,
    );
    let on = wait_for(Duration::from_secs(10), || {
        let s = snapshot(admin);
        s.table
            .portals
            .iter()
            .any(|p| !p.sessions.is_empty())
            .then_some(())
    });
    assert!(
        on.is_some(),
        "the host never logged in: {:?}",
        snapshot(admin).table
    );

    // A dies: the target re-registers with B within the limit.
    drop(isns_a.take());
    let killed = Instant::now();
    let moved = wait_for(FAILOVER_LIMIT, || (listed(b) == portals).then_some(()));
    let took = killed.elapsed();
    assert!(
        moved.is_some(),
        "B did not list {portals:?} within {FAILOVER_LIMIT:?} of A's kill: {:?}\n{}",
        listed(b),
        log()
    );
    eprintln!(
        "re-registered with B {:.2} s after A was killed",
        took.as_secs_f64()
    );
    let contact = common::wait_isns_contact(admin, b, Duration::from_secs(5));
    assert!(
        contact.is_some(),
        "the target's status does not name B: {:?}",
        snapshot(admin).isns_contact
    );
    assert!(
        log().contains(&format!("trying {b}")),
        "the target's log does not say it moved to B:\n{}",
        log()
    );

    // A new host, with A dead, discovers through B.
    let mut second = Command::new(env!("CARGO_BIN_EXE_portshift"));
    second.args([
        "io",
        "--isns",
        &servers,
        "--target",
        TARGET2,
        "--initiator-name",
        "iqn.2024-01.test.failover:host2",
        "--verify",
        "--json",
        "--duration",
        "2s",
    ]);
    let run = common::run_timed(&mut second, Duration::from_secs(30));
    assert!(
        run.ok,
        "second host failed:\n{}\n{}",
        run.stdout, run.stderr
    );
    assert!(
        run.stderr.contains(&format!("{a} did not answer"))
            && run.stderr.contains(&format!("trying {b}")),
        "the second host does not say it asked B:\n{}",
        run.stderr
    );
    let second_report: WorkloadReport = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("report ({e}):\n{}", run.stdout));
    assert_eq!(
        (second_report.errors, second_report.mismatches),
        (0, 0),
        "{}",
        run.stdout
    );
    assert!(second_report.verified_reads > 0, "{}", run.stdout);

    // No iSNS server answers: I/O goes on. B comes back empty and gets everything again.
    drop(isns_b.take());
    let down = wait_for(Duration::from_secs(10), || {
        snapshot(admin).isns_contact.filter(|c| !c.ok)
    });
    assert!(
        down.is_some(),
        "the target never noticed that no iSNS server answers"
    );
    std::thread::sleep(Duration::from_secs(3));
    let _isns_b = isns_at(&dir.path().join("b-again"), b);
    assert!(
        wait_for(Duration::from_secs(10), || (listed(b) == portals)
            .then_some(()))
        .is_some(),
        "B, back, never got the registration: {:?}\n{}",
        listed(b),
        log()
    );

    // The first host ran throughout without an error.
    let status = wait_for(Duration::from_secs(40), || host.0.try_wait().unwrap())
        .expect("the first host did not finish");
    let r = report(&host_out, &host_err);
    assert!(
        status.success(),
        "the first host exited {status}: {}",
        std::fs::read_to_string(&host_err).unwrap_or_default()
    );
    assert_eq!((r.errors, r.mismatches), (0, 0), "{r:?}");
    assert!(r.verified_reads > 0, "{r:?}");
    assert!(
        r.reconnects.is_empty() && r.moves.is_empty(),
        "the host was disturbed: {r:?}"
    );
}
