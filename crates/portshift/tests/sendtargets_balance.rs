//! SendTargets agrees with iSNS while the balancer holds a registration deleted.
//!
//! `portshift isns`, `portshift target` with two portals (127.0.0.1:P, 127.0.0.2:P), two targets,
//! `--balance sessions:2 --cooldown 10`; two libiscsi `iscsi-perf` runs, one per target, both
//! through the first portal. P0 reaches the high mark, the balancer deletes one (target, P0)
//! registration and moves that initiator to P1. While it is deleted, libiscsi's `iscsi-ls`
//! (SendTargets=All in a discovery session) asked on either portal lists that target through
//! P1 only, and the other target through both; once P0 has stayed at the low mark for the
//! cooldown the registration is restored and `iscsi-ls` lists both portals again.
//!
//! Needs `libiscsi-bin` (iscsi-perf, iscsi-ls); fails when it is missing. Everything listens
//! on loopback, on ports picked free at run time; the test takes about 20 s.

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use balancer::{EventKind, PortalId};
use common::{Proc, TwoPortalTarget, snapshot, status, tool, wait_for};

/// The target's --cooldown: the least time the deleted registration stays deleted.
const COOLDOWN_SECONDS: u64 = 10;
const TARGETS: [&str; 2] = ["iqn.2024-01.test.st:t1", "iqn.2024-01.test.st:t2"];
const P0: PortalId = PortalId(0);

/// `iscsi-ls iscsi://PORTAL`: target name → the `IP:PORT,TPGT` addresses it lists, sorted
/// (libiscsi prints a target's addresses in the reverse of the answer's order).
fn iscsi_ls(portal: &str) -> BTreeMap<String, Vec<String>> {
    let out = Command::new(tool("iscsi-ls", "libiscsi-bin"))
        .args(["-i", "iqn.2024-01.test.st:ls", &format!("iscsi://{portal}")])
        .output()
        .expect("run iscsi-ls");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "iscsi-ls iscsi://{portal} failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut listed: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        // "Target:NAME Portal:IP:PORT,TPGT"
        let mut words = line.split_whitespace();
        let (Some(t), Some(p)) = (words.next(), words.next()) else {
            continue;
        };
        if let (Some(t), Some(p)) = (t.strip_prefix("Target:"), p.strip_prefix("Portal:")) {
            listed.entry(t.to_string()).or_default().push(p.to_string());
        }
    }
    listed.values_mut().for_each(|a| a.sort());
    listed
}

/// An `iscsi-perf` run of `initiator` on `url` that holds its session; killed on drop.
fn perf(initiator: &str, url: &str) -> Proc {
    let child = Command::new(tool("iscsi-perf", "libiscsi-bin"))
        .args(["-t", "60", "-b", "8", "-m", "4", "-r", "-x", "100"])
        .args(["-i", initiator, url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn iscsi-perf");
    Proc(child)
}

#[test]
fn send_targets_leaves_out_a_deleted_registration_until_it_is_restored() {
    tool("iscsi-ls", "libiscsi-bin");
    tool("iscsi-perf", "libiscsi-bin");
    let dir = tempfile::tempdir().unwrap();
    let cooldown = COOLDOWN_SECONDS.to_string();
    let balance = ["--balance", "sessions:2", "--cooldown", &cooldown];
    let stack = TwoPortalTarget::start(dir.path(), &TARGETS, "16M", &balance);
    let [p0, p1] = stack.portals.clone();
    let (admin, target_log) = (stack.admin, stack.log.clone());
    let both = |t: &str| (t.to_string(), vec![format!("{p0},1"), format!("{p1},1")]);
    let everything: BTreeMap<String, Vec<String>> = TARGETS.into_iter().map(both).collect();
    for p in [&p0, &p1] {
        assert_eq!(
            iscsi_ls(p),
            everything,
            "iscsi-ls iscsi://{p} before any load"
        );
    }

    // Two hosts, one per target, both through P0 (the second once the first is logged in):
    // P0 reaches sessions:2 and the balancer moves one of them.
    let mut hosts = Vec::new();
    for (i, t) in TARGETS.iter().enumerate() {
        let ini = format!("iqn.2024-01.test.st:host{}", i + 1);
        hosts.push(perf(&ini, &format!("iscsi://{p0}/{t}/0")));
        let logged_in = wait_for(Duration::from_secs(10), || {
            snapshot(admin)
                .events
                .iter()
                .any(|e| matches!(&e.kind, EventKind::Login { initiator, .. } if *initiator == ini))
                .then_some(())
        });
        assert!(
            logged_in.is_some(),
            "{ini} never logged in:\n{}",
            status(admin, false)
        );
    }
    let moved = wait_for(Duration::from_secs(10), || {
        snapshot(admin).events.iter().find_map(|e| match &e.kind {
            EventKind::RegistrationDeleted { target, portal } if *portal == P0 => {
                Some(target.clone())
            }
            _ => None,
        })
    })
    .unwrap_or_else(|| {
        panic!(
            "no registration deleted:\n{}\ntarget log:\n{}",
            status(admin, false),
            std::fs::read_to_string(&target_log).unwrap_or_default()
        )
    });
    let deleted_now = || {
        snapshot(admin)
            .registrations
            .iter()
            .any(|r| r.target == moved && r.portal == P0 && !r.registered)
    };
    assert!(deleted_now());

    // While (moved, P0) is deleted, SendTargets on either portal lists `moved` through P1 only.
    let mut expected = everything.clone();
    expected.insert(moved.clone(), vec![format!("{p1},1")]);
    for p in [&p1, &p0] {
        assert_eq!(
            iscsi_ls(p),
            expected,
            "iscsi-ls iscsi://{p} while ({moved}, P0) is deleted:\n{}",
            status(admin, false)
        );
    }
    assert!(
        deleted_now(),
        "the registration came back before the listing was checked (cooldown {COOLDOWN_SECONDS} s)"
    );

    // P0 is at the low mark (1 session): after the cooldown the registration is restored and
    // SendTargets lists both portals again.
    let restored = wait_for(Duration::from_secs(COOLDOWN_SECONDS + 10), || {
        snapshot(admin).events.iter().find_map(|e| match &e.kind {
            EventKind::RegistrationRestored { target, portal }
                if *target == moved && *portal == P0 =>
            {
                Some(())
            }
            _ => None,
        })
    });
    assert!(
        restored.is_some(),
        "({moved}, P0) never restored:\n{}",
        status(admin, false)
    );
    for p in [&p1, &p0] {
        assert_eq!(
            iscsi_ls(p),
            everything,
            "iscsi-ls iscsi://{p} after the restore"
        );
    }
    // Both hosts cooperated: no forced move.
    assert_eq!(snapshot(admin).forced_moves, 0, "{}", status(admin, false));
    drop(hosts);
}
