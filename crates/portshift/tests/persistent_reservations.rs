//! Persistent reservations (SPC-4 §5.9) across a move and across a crash of the target.
//!
//! - A portshift initiator registers a key and reserves Write Exclusive through portal 1; a
//!   second, pinned initiator on the same portal makes it overloaded (`--balance sessions:2`),
//!   and with `--move-reservation-holders` the balancer moves the holder to portal 2. Its ISID
//!   is kept and both portals are one portal group, so it is the same I_T nexus: READ KEYS and
//!   READ RESERVATION still show its key and reservation, its writes succeed, and the other
//!   initiator's writes still get RESERVATION CONFLICT.
//! - A libiscsi host (tests/c/pr_hold.c, compiled with `cc -liscsi`) holding a registration is
//!   left in place by the balancer by default (libiscsi draws a new ISID when it logs in
//!   again, so a move would lose its registration), while a stock host beside it is moved
//!   although the balancer moves the newest login first and the registrant logged in last.
//! - With APTPL, registrations and the reservation survive SIGKILL of the target: after a
//!   restart on the same LUN file they are read back, and the holder (same initiator port)
//!   writes while another initiator is refused.
//!
//! Loopback only, ports picked free at run time, files in a temporary directory.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use balancer::EventKind;
use bytes::Bytes;
use common::{
    Proc, TwoPortalTarget, free_addr, portshift_server, snapshot, status, tool, wait_for,
};
use initiator::cdb::{persistent_reserve_in, persistent_reserve_out, write16};
use initiator::{
    BalancedConfig, BalancedInitiator, PortalSource, Session, SessionConfig, TaskError,
};
use scsi::client::{parse_read_keys, parse_read_reservation};
use scsi::persistent_reservation::{prin, prout};

const TARGET: &str = "iqn.2024-01.test.pr:disk";
const HOLDER: &str = "iqn.2024-01.test.pr:holder";
const OTHER: &str = "iqn.2024-01.test.pr:other";
const KEY: u64 = 0x1234_5678_9abc_def0;
/// Write Exclusive (SPC-4 table 169).
const WRITE_EXCLUSIVE: u8 = 1;
/// RESERVATION CONFLICT (SAM-5 table 28).
const RESERVATION_CONFLICT: u8 = 0x18;

/// Anything that runs a SCSI request.
trait Exec {
    async fn run(&self, req: initiator::cdb::ScsiRequest) -> Result<Bytes, TaskError>;
}

impl Exec for BalancedInitiator {
    async fn run(&self, req: initiator::cdb::ScsiRequest) -> Result<Bytes, TaskError> {
        self.execute(req).await.map(|r| r.data)
    }
}

impl Exec for Session {
    async fn run(&self, req: initiator::cdb::ScsiRequest) -> Result<Bytes, TaskError> {
        self.client.execute(req).await.map(|r| r.data)
    }
}

async fn register_and_reserve(h: &impl Exec, aptpl: bool) {
    h.run(persistent_reserve_out(0, prout::REGISTER, 0, 0, KEY, aptpl))
        .await
        .expect("REGISTER");
    h.run(persistent_reserve_out(
        0,
        prout::RESERVE,
        WRITE_EXCLUSIVE,
        KEY,
        0,
        false,
    ))
    .await
    .expect("RESERVE");
}

/// READ KEYS and READ RESERVATION: the keys, and the reservation's (key, type).
async fn pr_state(h: &impl Exec) -> (Vec<u64>, Option<(u64, u8)>) {
    let keys = h
        .run(persistent_reserve_in(0, prin::READ_KEYS, 1024))
        .await
        .expect("READ KEYS");
    let res = h
        .run(persistent_reserve_in(0, prin::READ_RESERVATION, 1024))
        .await
        .expect("READ RESERVATION");
    (
        parse_read_keys(&keys).expect("READ KEYS data").1,
        parse_read_reservation(&res)
            .expect("READ RESERVATION data")
            .1,
    )
}

async fn write_block(h: &impl Exec, lba: u64) -> Result<Bytes, TaskError> {
    h.run(write16(0, lba, 512, Bytes::from(vec![0xA5u8; 512])))
        .await
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_moved_reservation_holder_keeps_its_registration_and_reservation() {
    let dir = tempfile::tempdir().unwrap();
    let stack = TwoPortalTarget::start(
        dir.path(),
        &[TARGET],
        "16M",
        &[
            "--balance",
            "sessions:2",
            "--cooldown",
            "1",
            "--pin",
            OTHER,
            "--move-reservation-holders",
        ],
    );
    let p0: SocketAddr = stack.portals[0].parse().unwrap();
    let p1: SocketAddr = stack.portals[1].parse().unwrap();
    let rt = runtime();
    rt.block_on(async {
        let cfg = |name: &str| {
            let mut c = BalancedConfig::new(name, Some(TARGET), PortalSource::Isns(stack.isns));
            c.recovery_timeout = Duration::from_secs(30);
            c
        };
        // The holder logs in alone first (iSNS lists portal 1 first) and reserves.
        let (holder, _ev) = BalancedInitiator::connect(cfg(HOLDER)).await.unwrap();
        assert_eq!(holder.portal(), Some(p0), "the holder starts on portal 1");
        register_and_reserve(&holder, false).await;
        // The second initiator makes portal 1 hold two sessions; it is pinned, so the
        // balancer can only move the reservation holder.
        let (other, _ev2) = BalancedInitiator::connect(cfg(OTHER)).await.unwrap();
        assert_eq!(other.portal(), Some(p0));
        assert_eq!(
            write_block(&other, 1).await,
            Err(TaskError::Status(RESERVATION_CONFLICT)),
            "before the move"
        );
        // Keep the holder busy until it has been moved.
        let moved = async {
            for i in 0..600u64 {
                if holder.portal() == Some(p1) && !holder.moves().is_empty() {
                    return true;
                }
                write_block(&holder, i % 64).await.expect("holder write");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            false
        }
        .await;
        assert!(
            moved,
            "the balancer never moved the reservation holder:\n{}",
            status(stack.admin, false)
        );
        let m = holder.moves();
        eprintln!("holder moved: {m:?}");
        // Same I_T nexus after the move: its key and reservation are there.
        assert_eq!(
            pr_state(&holder).await,
            (vec![KEY], Some((KEY, WRITE_EXCLUSIVE))),
            "READ KEYS / READ RESERVATION after the move"
        );
        write_block(&holder, 7)
            .await
            .expect("the holder writes after the move");
        assert_eq!(
            write_block(&other, 7).await,
            Err(TaskError::Status(RESERVATION_CONFLICT)),
            "another initiator's write after the move"
        );
        // The table marked it as a holder while it was on portal 2.
        let snap = snapshot(stack.admin);
        let row = snap
            .table
            .portals
            .iter()
            .flat_map(|p| p.sessions.iter())
            .find(|s| s.initiator == HOLDER)
            .expect("holder session listed");
        assert!(row.holds_reservation, "the table marks the holder");
        holder.shutdown(Duration::from_secs(5)).await;
        other.shutdown(Duration::from_secs(5)).await;
    });
}

/// One-portal `portshift target` on `lun`: a child process (SIGKILLed on drop).
fn start_target(dir: &std::path::Path, portal: SocketAddr, lun: &std::path::Path) -> common::Proc {
    let admin = free_addr("127.0.0.1");
    let args: Vec<String> = [
        "target",
        "--portal",
        &portal.to_string(),
        "--lun",
        &format!("{TARGET}={}", lun.display()),
        "--size",
        "16M",
        "--admin",
        &admin.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let p = portshift_server(&args, admin, &dir.join("target.log"));
    let up = wait_for(Duration::from_secs(10), || {
        std::net::TcpStream::connect(portal).ok()
    });
    assert!(up.is_some(), "target did not listen on {portal}");
    p
}

#[test]
fn aptpl_state_survives_sigkill_of_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let lun = dir.path().join("lun.img");
    let portal = free_addr("127.0.0.1");
    let rt = runtime();
    let holder_cfg = SessionConfig::new(HOLDER, TARGET);
    let mut target = start_target(dir.path(), portal, &lun);
    rt.block_on(async {
        let s = Session::login(portal, &holder_cfg).await.unwrap();
        register_and_reserve(&s, true).await;
        assert_eq!(
            pr_state(&s).await,
            (vec![KEY], Some((KEY, WRITE_EXCLUSIVE)))
        );
    });
    assert!(
        lun.with_extension("img.pr").exists(),
        "APTPL state stored beside the LUN file"
    );
    // SIGKILL: no clean shutdown.
    target.0.kill().unwrap();
    target.0.wait().unwrap();
    drop(target);
    let _target = start_target(dir.path(), portal, &lun);
    rt.block_on(async {
        // The same initiator port (same name and ISID) is the same I_T nexus.
        let s = Session::login(portal, &holder_cfg).await.unwrap();
        assert_eq!(
            pr_state(&s).await,
            (vec![KEY], Some((KEY, WRITE_EXCLUSIVE))),
            "after SIGKILL and restart"
        );
        write_block(&s, 3).await.expect("the holder writes");
        let o = Session::login(portal, &SessionConfig::new(OTHER, TARGET))
            .await
            .unwrap();
        assert_eq!(
            write_block(&o, 3).await,
            Err(TaskError::Status(RESERVATION_CONFLICT)),
            "another initiator is refused after the restart"
        );
    });
}

/// tests/c/pr_hold.c compiled into `dir` against libiscsi.
fn pr_hold_binary(dir: &std::path::Path) -> std::path::PathBuf {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/pr_hold.c");
    let out = dir.join("pr_hold");
    let o = std::process::Command::new(tool("cc", "gcc"))
        .args(["-Wall", "-O2", "-o"])
        .arg(&out)
        .arg(&src)
        .arg("-liscsi")
        .output()
        .expect("run cc");
    assert!(
        o.status.success(),
        "cannot compile pr_hold.c against libiscsi (install libiscsi-dev): {}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

#[test]
fn a_libiscsi_registrant_is_left_in_place_by_default() {
    const T1: &str = "iqn.2024-01.test.pr:t1";
    const T2: &str = "iqn.2024-01.test.pr:t2";
    const LIBISCSI_HOLDER: &str = "iqn.2024-01.test.pr:libiscsi-holder";
    const MOVABLE: &str = "iqn.2024-01.test.pr:movable";
    const HOLD_SECONDS: u64 = 12;
    let perf = tool("iscsi-perf", "libiscsi-bin");
    let dir = tempfile::tempdir().unwrap();
    let hold = pr_hold_binary(dir.path());
    let stack = TwoPortalTarget::start(
        dir.path(),
        &[T1, T2],
        "16M",
        &["--balance", "sessions:2", "--cooldown", "1"],
    );
    let [p0, _] = stack.portals.clone();
    let admin = stack.admin;
    let logged_in = |who: &str| {
        snapshot(admin)
            .events
            .iter()
            .any(|e| matches!(&e.kind, EventKind::Login { initiator, .. } if initiator == who))
            .then_some(())
    };
    // A stock host first, alone on portal 1.
    let _perf = Proc(
        std::process::Command::new(perf)
            .args(["-i", MOVABLE, &format!("iscsi://{p0}/{T2}/0")])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn iscsi-perf"),
    );
    assert!(wait_for(Duration::from_secs(10), || logged_in(MOVABLE)).is_some());
    std::thread::sleep(Duration::from_millis(1500));
    // Then the registrant on the same portal: over sessions:2, and the newest login.
    let out = dir.path().join("pr_hold.out");
    let err = dir.path().join("pr_hold.err");
    let mut holder = Proc(
        std::process::Command::new(&hold)
            .args([
                LIBISCSI_HOLDER,
                &format!("iscsi://{p0}/{T1}/0"),
                &KEY.to_string(),
                &HOLD_SECONDS.to_string(),
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .expect("spawn pr_hold"),
    );
    let registered = wait_for(Duration::from_secs(10), || {
        let s = std::fs::read_to_string(&out).unwrap_or_default();
        s.contains("registered").then_some(())
    });
    assert!(
        registered.is_some(),
        "pr_hold did not register: {}",
        std::fs::read_to_string(&err).unwrap_or_default()
    );
    // The table marks the libiscsi session as a registrant.
    let marked = wait_for(Duration::from_secs(5), || {
        snapshot(admin)
            .table
            .portals
            .iter()
            .flat_map(|p| p.sessions.iter())
            .any(|s| s.initiator == LIBISCSI_HOLDER && s.holds_reservation)
            .then_some(())
    });
    assert!(marked.is_some(), "{}", status(admin, false));
    let moved = wait_for(Duration::from_secs(10), || {
        snapshot(admin)
            .events
            .iter()
            .any(|e| matches!(&e.kind, EventKind::LogoutRequested { initiator, .. } if initiator == MOVABLE))
            .then_some(())
    });
    // The holder runs to its end without an error, its key still registered.
    let exited = wait_for(Duration::from_secs(HOLD_SECONDS + 15), || {
        holder.0.try_wait().unwrap()
    })
    .expect("pr_hold did not finish");
    let stdout = std::fs::read_to_string(&out).unwrap_or_default();
    let events = snapshot(admin).events;
    let touched: Vec<_> = events
        .iter()
        .filter(|e| match &e.kind {
            EventKind::LogoutRequested { initiator, .. }
            | EventKind::ForcedMove { initiator, .. }
            | EventKind::Redirected { initiator, .. } => initiator == LIBISCSI_HOLDER,
            _ => false,
        })
        .collect();
    assert!(
        touched.is_empty(),
        "the registrant was asked to move: {touched:?}"
    );
    assert!(
        moved.is_some(),
        "the stock host was never moved:\n{}",
        status(admin, false)
    );
    assert!(
        exited.success() && stdout.contains("io "),
        "pr_hold failed: {stdout}\n{}",
        std::fs::read_to_string(&err).unwrap_or_default()
    );
    let logins = events
        .iter()
        .filter(|e| matches!(&e.kind, EventKind::Login { initiator, .. } if initiator == LIBISCSI_HOLDER))
        .count();
    assert_eq!(logins, 1, "the registrant logged in once: {events:?}");
    eprintln!("pr_hold: {}", stdout.trim().replace('\n', "; "));
}
