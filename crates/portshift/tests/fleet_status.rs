//! Acceptance (issue 16, build item 6): `portshift status --isns H:P` shows the whole fleet from
//! the iSNS registry — every entity (storage system), its portals, its targets and their
//! registrations — and which (target, portal) registrations a balancer has deleted right now.
//!
//! One `portshift isns`, two `portshift target`s registered with it: storage system A (two
//! portals, two targets, `--balance sessions:2`, a long cooldown so a deletion stays) and
//! storage system B (one portal, one target). The test asserts that the fleet view lists both
//! entities with their portals and targets and nothing deleted; then two `portshift io` hosts
//! log in through A's first portal, the balancer deletes a registration and moves one host,
//! and the fleet view shows exactly the pairs A's own table says are deleted (DELETED in the
//! target's row, and in the list of deleted registrations).
//!
//! Loopback only, ports picked free at run time, files in a temporary directory.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::{free_addr, free_port_on_both, isns_server, portshift, portshift_server, snapshot};

const A1: &str = "iqn.2024-01.test.fleet:a1";
const A2: &str = "iqn.2024-01.test.fleet:a2";
const B1: &str = "iqn.2024-01.test.fleet:b1";

/// `portshift status --isns SERVER [--json]`: its stdout.
fn fleet_status(isns: SocketAddr, json: bool) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_portshift"));
    cmd.args(["status", "--isns", &isns.to_string()]);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().expect("portshift status --isns");
    assert!(
        out.status.success(),
        "portshift status --isns failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

fn fleet_json(isns: SocketAddr) -> serde_json::Value {
    serde_json::from_str(&fleet_status(isns, true)).expect("status --isns --json document")
}

/// The deleted pairs of a `--json` fleet document.
fn deleted(doc: &serde_json::Value) -> Vec<(String, String)> {
    doc["deleted"]
        .as_array()
        .expect("deleted list")
        .iter()
        .map(|d| {
            (
                d["target"].as_str().unwrap_or_default().to_string(),
                d["portal"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn status_isns_shows_the_fleet_and_a_balancer_deleted_registration() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_isns, isns) = isns_server(dir.path(), &[]);

    // Storage system A: two portals, two targets, balanced.
    let port = free_port_on_both();
    let a_portals = [format!("127.0.0.1:{port}"), format!("127.0.0.2:{port}")];
    let a_admin = free_addr("127.0.0.1");
    let mut args: Vec<String> = vec!["target".into()];
    for p in &a_portals {
        args.extend(["--portal".into(), p.clone()]);
    }
    for (i, t) in [A1, A2].iter().enumerate() {
        let lun = dir.path().join(format!("a{i}.img"));
        args.extend(["--lun".into(), format!("{t}={}", lun.display())]);
    }
    args.extend(
        [
            "--size",
            "16M",
            "--isns",
            &isns.to_string(),
            "--admin",
            &a_admin.to_string(),
            "--balance",
            "sessions:2",
            "--cooldown",
            "600",
        ]
        .map(String::from),
    );
    let _a = portshift_server(&args, a_admin, &dir.path().join("a.log"));

    // Storage system B: one portal, one target.
    let b_portal = free_addr("127.0.0.3").to_string();
    let b_admin = free_addr("127.0.0.1");
    let b_args: Vec<String> = [
        "target",
        "--portal",
        &b_portal,
        "--lun",
        &format!("{B1}={}", dir.path().join("b.img").display()),
        "--size",
        "16M",
        "--isns",
        &isns.to_string(),
        "--admin",
        &b_admin.to_string(),
    ]
    .map(String::from)
    .to_vec();
    let _b = portshift_server(&b_args, b_admin, &dir.path().join("b.log"));

    // Both storage systems, their portals and targets; nothing deleted.
    let both = common::wait_for(Duration::from_secs(15), || {
        let doc = fleet_json(isns);
        (doc["entities"].as_array().map(Vec::len) == Some(2)).then_some(doc)
    })
    .unwrap_or_else(|| {
        panic!(
            "the fleet never showed two entities:\n{}",
            fleet_status(isns, false)
        )
    });
    let entities = both["entities"].as_array().unwrap();
    let portals = |e: &serde_json::Value| -> Vec<String> {
        e["portals"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect()
    };
    let nodes = |e: &serde_json::Value| -> Vec<String> {
        e["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(portals(&entities[0]), a_portals, "{both:#}");
    assert_eq!(nodes(&entities[0]), [A1, A2], "{both:#}");
    assert_eq!(
        portals(&entities[1]),
        std::slice::from_ref(&b_portal),
        "{both:#}"
    );
    assert_eq!(nodes(&entities[1]), [B1], "{both:#}");
    assert!(deleted(&both).is_empty(), "{both:#}");
    let text = fleet_status(isns, false);
    assert!(
        text.contains("2 entities, 3 portals, 3 targets, 0 deleted registrations"),
        "{text}"
    );
    assert!(text.contains("DELETED REGISTRATIONS\n  none"), "{text}");

    // Two hosts through A's first portal: it reaches HIGH, the balancer deletes a registration
    // and moves a host.
    let _hosts: Vec<_> = [A1, A2]
        .iter()
        .enumerate()
        .map(|(i, t)| {
            portshift(
                &[
                    "io",
                    "--isns",
                    &isns.to_string(),
                    "--target",
                    t,
                    "--initiator-name",
                    &format!("iqn.2024-01.test.fleet:host{i}"),
                    "--verify",
                    "--json",
                    "--duration",
                    "120s",
                ]
                .map(String::from),
                &dir.path().join(format!("host{i}.json")),
                &dir.path().join(format!("host{i}.err")),
            )
        })
        .collect();
    let table = common::wait_for(Duration::from_secs(30), || {
        let s = snapshot(a_admin);
        let gone: Vec<(String, String)> = s
            .registrations
            .iter()
            .filter(|r| !r.registered)
            .map(|r| {
                let addr = &s.table.portal(r.portal).expect("portal").address;
                (r.target.clone(), addr.clone())
            })
            .collect();
        (s.logout_requests > 0 && !gone.is_empty()).then_some(gone)
    })
    .unwrap_or_else(|| {
        panic!(
            "the balancer never deleted a registration: {:?}",
            snapshot(a_admin)
        )
    });
    assert!(
        table.iter().all(|(_, p)| *p == a_portals[0]),
        "deleted elsewhere than the first portal: {table:?}"
    );

    // The fleet view shows exactly what A's table says is deleted.
    let shown = common::wait_for(Duration::from_secs(5), || {
        let d = deleted(&fleet_json(isns));
        (d == table).then_some(d)
    });
    assert!(
        shown.is_some(),
        "A's table has {table:?} deleted, the fleet view:\n{}",
        fleet_status(isns, false)
    );
    let text = fleet_status(isns, false);
    for (t, p) in &table {
        assert!(text.contains(&format!("({t}, {p})")), "{text}");
        let row = text
            .lines()
            .find(|l| l.trim_start().starts_with(t.as_str()))
            .unwrap_or_else(|| panic!("no row for {t}:\n{text}"));
        assert!(
            row.contains("DELETED") && row.contains("PGT"),
            "{t} is not DELETED on P0 and registered on P1: {row}\n{text}"
        );
    }
    eprintln!("{text}");
}
