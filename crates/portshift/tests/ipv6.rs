//! IPv6 portals over `::1`: libiscsi lists (`TargetAddress=[::1]:PORT,TPGT` in SendTargets),
//! writes and reads back (qemu-img over `iscsi://[::1]:PORT/IQN/0`) through them, isnsadm
//! lists the IPv6 Portal and Portal Group objects the target registered (16-byte IP address
//! attributes) with portshift's iSNS server and with Debian's isnsd, portshift's initiator works through them (directly and found through iSNS),
//! and a login redirect to an IPv6 portal (the balancer's move of a stock initiator) is
//! followed by libiscsi.
//!
//! Needs `libiscsi-bin`, `qemu-utils qemu-block-extra`, `open-isns-utils` and
//! `open-isns-server`; fails when they
//! are missing. Everything listens on loopback, on ports picked free at run time.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use balancer::{EventKind, PortalId};
use common::{
    Proc, free_addr, isns_server, isnsadm, isnsadm_conf, portshift, portshift_server, snapshot,
    tool, wait_for,
};
use initiator::WorkloadReport;

const IQN: &str = "iqn.2024-01.test.ipv6:disk";

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// A target with portals on `::1` (free ports), each of `targets` on its own 16 MiB file in
/// `dir`, `extra` options last; (process, portals, admin).
fn target(
    dir: &Path,
    portals: usize,
    targets: &[&str],
    extra: &[String],
) -> (Proc, Vec<SocketAddr>, SocketAddr) {
    let addrs: Vec<SocketAddr> = (0..portals).map(|_| free_addr("::1")).collect();
    let admin = free_addr("127.0.0.1");
    let mut args = strings(&["target", "--size", "16M", "--admin", &admin.to_string()]);
    for a in &addrs {
        args.extend(["--portal".into(), a.to_string()]);
    }
    for (i, t) in targets.iter().enumerate() {
        args.extend([
            "--lun".into(),
            format!("{t}={}", dir.join(format!("l{i}.img")).display()),
        ]);
    }
    args.extend(extra.iter().cloned());
    let p = portshift_server(&args, admin, &dir.join("target.log"));
    (p, addrs, admin)
}

fn run_ok(name: &str, package: &str, args: &[&str]) -> String {
    let o = Command::new(tool(name, package))
        .args(args)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{name} {args:?}: {}\n{out}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

fn io(dir: &Path, name: &str, args: &[&str]) -> WorkloadReport {
    // 256 blocks: 500 random I/Os surely read back blocks they wrote (verified reads).
    let mut a = strings(&[
        "io",
        "--json",
        "--verify",
        "--max-ios",
        "500",
        "--region-blocks",
        "256",
    ]);
    a.extend(strings(args));
    let (out, err) = (
        dir.join(format!("{name}.json")),
        dir.join(format!("{name}.err")),
    );
    let mut p = portshift(&a, &out, &err);
    let status = wait_for(Duration::from_secs(60), || p.0.try_wait().unwrap())
        .unwrap_or_else(|| panic!("{name}: portshift io did not finish in 60 s"));
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(
        status.success(),
        "{name}: {status}\n{text}\n{}",
        std::fs::read_to_string(&err).unwrap_or_default()
    );
    serde_json::from_str(&text).unwrap()
}

#[test]
fn libiscsi_isnsadm_and_portshift_io_through_ipv6_portals() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_isns, isns) = isns_server(d, &[]);
    let (_t, portals, _admin) = target(d, 2, &[IQN], &strings(&["--isns", &isns.to_string()]));

    // SendTargets: TargetAddress=[::1]:PORT,TPGT for both portals, in the one portal group
    // every portal of a target shares (so a move keeps the I_T nexus).
    let ls = run_ok(
        "iscsi-ls",
        "libiscsi-bin",
        &["-s", &format!("iscsi://{}", portals[0])],
    );
    for p in &portals {
        let want = format!("Target:{IQN} Portal:{p},1");
        assert!(p.is_ipv6() && ls.contains(&want), "{want:?} not in {ls}");
    }

    // libiscsi writes through one IPv6 portal and reads it back through the other.
    let src = d.join("src.raw");
    let back = d.join("back.raw");
    let data: Vec<u8> = (0..8u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&src, &data).unwrap();
    let url = |p: &SocketAddr| format!("iscsi://{p}/{IQN}/0");
    let qemu = "qemu-utils qemu-block-extra";
    run_ok(
        "qemu-img",
        qemu,
        &[
            "convert",
            "-n",
            "-f",
            "raw",
            "-O",
            "raw",
            src.to_str().unwrap(),
            &url(&portals[0]),
        ],
    );
    run_ok(
        "qemu-img",
        qemu,
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "raw",
            &url(&portals[1]),
            back.to_str().unwrap(),
        ],
    );
    let got = std::fs::read(&back).unwrap();
    assert!(got[..data.len()] == data[..], "data read back differs");

    // iSNS holds the IPv6 portals and portal groups, as isnsadm lists them.
    let conf = isnsadm_conf(d, "adm.conf", isns, "iqn.2024-01.test.ipv6:admin");
    let (ok, listed) = isnsadm(&conf, &["--list", "portals"]);
    assert!(ok, "{listed}");
    for p in &portals {
        let port = format!("Portal TCP/UDP port = {}/tcp", p.port());
        assert!(listed.contains(&port), "{port:?} not in {listed}");
    }
    assert_eq!(
        listed.matches("Portal IP address = ::1").count(),
        2,
        "{listed}"
    );
    let (ok, groups) = isnsadm(&conf, &["--list", "portal-groups"]);
    assert!(
        ok && groups.matches("Portal group address = ::1").count() == 2,
        "{groups}"
    );

    // portshift's initiator: through SendTargets on an IPv6 portal, and through iSNS.
    let p0 = portals[0].to_string();
    let r = io(d, "direct", &["--portal", &p0, "--target", IQN]);
    assert_eq!((r.errors, r.mismatches), (0, 0), "{r:?}");
    assert!(r.verified_reads > 0, "{r:?}");
    let r = io(d, "isns", &["--isns", &isns.to_string(), "--target", IQN]);
    assert_eq!((r.errors, r.mismatches), (0, 0), "{r:?}");
}

#[test]
fn libiscsi_follows_a_redirect_to_an_ipv6_portal() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let targets = ["iqn.2024-01.test.ipv6:t1", "iqn.2024-01.test.ipv6:t2"];
    let (_t, portals, admin) = target(
        d,
        2,
        &targets,
        &strings(&["--balance", "sessions:2", "--cooldown", "3"]),
    );
    // Both hosts log in through the first portal: two sessions there, the balancer moves one.
    let mut perfs: Vec<Proc> = targets
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let child = Command::new(tool("iscsi-perf", "libiscsi-bin"))
                .args(["-t", "12", "-b", "8", "-m", "4", "-r", "-x", "100"])
                .args(["-i", &format!("iqn.2024-01.test.ipv6:host{i}")])
                .arg(format!("iscsi://{}/{t}/0", portals[0]))
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(d.join(format!("perf{i}.out"))).unwrap())
                .stderr(std::fs::File::create(d.join(format!("perf{i}.err"))).unwrap())
                .spawn()
                .unwrap();
            Proc(child)
        })
        .collect();
    let redirected = wait_for(Duration::from_secs(20), || {
        let snap = snapshot(admin);
        let redirect = snap.events.iter().find(|e| {
            matches!(
                e.kind,
                EventKind::Redirected {
                    from: PortalId(0),
                    to: PortalId(1),
                    ..
                }
            )
        })?;
        let on_second = snap.table.portals.get(1)?.sessions.len();
        (on_second == 1).then(|| redirect.clone())
    });
    let redirected = redirected.unwrap_or_else(|| {
        panic!(
            "no redirect followed to {}: {}",
            portals[1],
            std::fs::read_to_string(d.join("target.log")).unwrap_or_default()
        )
    });
    println!("{redirected:?}");
    for (i, p) in perfs.iter_mut().enumerate() {
        let status = wait_for(Duration::from_secs(40), || p.0.try_wait().unwrap())
            .expect("iscsi-perf did not finish");
        let out = std::fs::read_to_string(d.join(format!("perf{i}.out"))).unwrap_or_default();
        let err = std::fs::read_to_string(d.join(format!("perf{i}.err"))).unwrap_or_default();
        assert!(status.success(), "iscsi-perf {i}: {status}\n{out}\n{err}");
    }
}

#[test]
fn debian_isnsd_holds_the_ipv6_portals_the_target_registers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let isns = free_addr("127.0.0.1");
    let _isnsd = common::isnsd(d, isns);
    let (_t, portals, _admin) = target(d, 1, &[IQN], &strings(&["--isns", &isns.to_string()]));
    let conf = isnsadm_conf(d, "adm.conf", isns, "iqn.2024-01.test.ipv6:admin");
    let port = format!("Portal TCP/UDP port = {}/tcp", portals[0].port());
    let listed = wait_for(Duration::from_secs(10), || {
        let (ok, out) = isnsadm(&conf, &["--list", "portals"]);
        (ok && out.contains(&port)).then_some(out)
    })
    .expect("isnsd does not list the portal");
    assert!(listed.contains("Portal IP address = ::1"), "{listed}");
    let (ok, groups) = isnsadm(&conf, &["--list", "portal-groups"]);
    assert!(
        ok && groups.contains("Portal group address = ::1"),
        "{groups}"
    );
}
