//! Acceptance: a stock initiator follows the balancer.
//!
//! `portshift isns`, `portshift target` with two portals (127.0.0.1:P, 127.0.0.2:P), three
//! targets and `--balance sessions:2`; three libiscsi `iscsi-perf` runs, one per target, all
//! through the first portal (the one iSNS lists first). The balancer must move one of them to
//! the second portal — deregistration of the (target, P0) Portal Group in iSNS, Async Message
//! "logout requested" (RFC 7143 §11.9.1), login redirect 0x0101 (§11.13.5) — without an I/O
//! error, and restore the Portal Group once the load of P0 falls.
//!
//! Needs `libiscsi-bin` (iscsi-perf) and `open-isns-utils` (isnsadm); fails when they are
//! missing. Everything listens on loopback, on ports picked free at run time.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use balancer::{Event, EventKind, PortalId};
use common::{Proc, TwoPortalTarget, isnsadm, isnsadm_conf, snapshot, status, tool, wait_for};

/// Seconds each iscsi-perf runs.
const PERF_SECONDS: u64 = 25;
/// The target's --cooldown: a moved initiator is not moved again, and a deleted registration is
/// not restored, until it has passed.
const COOLDOWN_SECONDS: u64 = 5;
const TARGETS: [&str; 3] = [
    "iqn.2024-01.test.balance:t1",
    "iqn.2024-01.test.balance:t2",
    "iqn.2024-01.test.balance:t3",
];
const P0: PortalId = PortalId(0);
const P1: PortalId = PortalId(1);

fn initiator(i: usize) -> String {
    format!("iqn.2024-01.test.balance:host{}", i + 1)
}

use balancer::clock::unix_ms as now_ms;

/// The portal of each session line in `portshift status`'s configuration table (FIG. 2):
/// (portal label, initiator) pairs.
fn status_sessions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut portal = String::new();
    for line in text
        .lines()
        .skip_while(|l| !l.starts_with("portal "))
        .skip(2)
        .take_while(|l| !l.trim().is_empty())
    {
        if line.starts_with('P') {
            portal = line
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
        }
        if let Some(ini) = line
            .split_whitespace()
            .find(|c| c.starts_with("iqn.2024-01.test.balance:host"))
        {
            out.push((portal.clone(), ini.to_string()));
        }
    }
    out
}

/// The Portal Group objects isnsadm prints for a query of `target`: (address, tag) in order.
fn isnsadm_pgs(conf: &Path, target: &str) -> Vec<(String, String)> {
    let (ok, text) = isnsadm(conf, &["--query", &format!("iscsi-name={target}")]);
    assert!(ok, "isnsadm --query {target} failed");
    let value = |l: &str| l.split_once('=').map(|(_, v)| v.trim().to_string());
    let mut pgs = Vec::new();
    let mut in_pg = false;
    let (mut ip, mut port) = (String::new(), String::new());
    for line in text.lines() {
        if line.starts_with("object[") {
            in_pg = line.contains("<iSCSI Portal Group>");
            continue;
        }
        if !in_pg {
            continue;
        }
        if line.contains("Portal group address") {
            ip = value(line).unwrap_or_default();
        } else if line.contains("Portal group port") {
            port = value(line)
                .unwrap_or_default()
                .trim_end_matches("/tcp")
                .to_string();
        } else if line.contains("Portal group tag") {
            pgs.push((format!("{ip}:{port}"), value(line).unwrap_or_default()));
        }
    }
    pgs
}

/// Output lines with their arrival time (ms since the epoch), shared with a reader thread.
type Lines = Arc<Mutex<Vec<(u64, String)>>>;

/// An `iscsi-perf` run whose output lines are timestamped as they arrive.
struct Perf {
    proc: Proc,
    initiator: String,
    /// (ms since the epoch, line) for every line on stdout ('\r' and '\n' both end a line).
    lines: Lines,
    readers: Vec<JoinHandle<()>>,
    stderr: Lines,
}

fn collect_lines(mut from: impl Read + Send + 'static) -> (Lines, JoinHandle<()>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    let h = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut cur = Vec::new();
        while let Ok(n) = from.read(&mut buf) {
            let Some(chunk) = buf.get(..n).filter(|c| !c.is_empty()) else {
                break;
            };
            for &b in chunk {
                if b == b'\r' || b == b'\n' {
                    let l = String::from_utf8_lossy(&cur).trim().to_string();
                    if !l.is_empty() {
                        sink.lock().unwrap().push((now_ms(), l));
                    }
                    cur.clear();
                } else {
                    cur.push(b);
                }
            }
        }
        let l = String::from_utf8_lossy(&cur).trim().to_string();
        if !l.is_empty() {
            sink.lock().unwrap().push((now_ms(), l));
        }
    });
    (lines, h)
}

impl Perf {
    fn start(initiator: String, url: &str) -> Perf {
        let mut child = Command::new(tool("iscsi-perf", "libiscsi-bin"))
            .args(["-t", &PERF_SECONDS.to_string(), "-b", "8", "-m", "4", "-r"])
            .args(["-x", "100", "-i", &initiator, url])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (lines, r1) = collect_lines(child.stdout.take().unwrap());
        let (stderr, r2) = collect_lines(child.stderr.take().unwrap());
        Perf {
            proc: Proc(child),
            initiator,
            lines,
            readers: vec![r1, r2],
            stderr,
        }
    }

    /// Waits (bounded) for the process to exit; returns whether it exited 0.
    fn finish(&mut self, limit: Duration) -> bool {
        let status = wait_for(limit, || self.proc.0.try_wait().unwrap());
        let status = status.unwrap_or_else(|| panic!("{} still running", self.initiator));
        for r in self.readers.drain(..) {
            r.join().unwrap();
        }
        status.success()
    }

    /// (arrival ms, "iops current" value) of every per-second IOPS line.
    fn iops(&self) -> Vec<(u64, u64)> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(t, l)| {
                let rest = l.split_once("iops current ")?.1;
                let n = rest.split_whitespace().next()?.parse().ok()?;
                Some((*t, n))
            })
            .collect()
    }

    fn all_output(&self) -> Vec<String> {
        let out = self.lines.lock().unwrap();
        let err = self.stderr.lock().unwrap();
        out.iter()
            .chain(err.iter())
            .map(|(_, l)| l.clone())
            .collect()
    }
}

fn find_event(events: &[Event], f: impl Fn(&EventKind) -> bool) -> Option<Event> {
    events.iter().find(|e| f(&e.kind)).cloned()
}

#[test]
fn a_stock_initiator_follows_the_balancer() {
    tool("iscsi-perf", "libiscsi-bin");
    tool("isnsadm", "open-isns-utils");
    let dir = tempfile::tempdir().unwrap();

    // 1. iSNS server and target.
    let cooldown = COOLDOWN_SECONDS.to_string();
    let balance = ["--balance", "sessions:2", "--cooldown", &cooldown];
    let stack = TwoPortalTarget::start(dir.path(), &TARGETS, "64M", &balance);
    let [p0, p1] = stack.portals.clone();
    let (isns, admin, target_log) = (stack.isns, stack.admin, stack.log.clone());

    // What an initiator asking iSNS sees: every target through P0 first, then P1.
    let conf = isnsadm_conf(
        dir.path(),
        "isnsadm.conf",
        isns,
        "iqn.2024-01.test.balance:adm",
    );
    for t in TARGETS {
        let listed = wait_for(Duration::from_secs(10), || {
            let pgs = isnsadm_pgs(&conf, t);
            (pgs.len() == 2).then_some(pgs)
        })
        .unwrap_or_else(|| panic!("iSNS never listed both portals of {t}"));
        assert_eq!(
            listed,
            // One portal group: both portals are the same SCSI target port.
            [(p0.clone(), "1".to_string()), (p1.clone(), "1".to_string())],
            "isnsadm --query iscsi-name={t}"
        );
    }

    // 2. Three stock initiators, one per target, all through the first portal; each starts
    // once the previous one is logged in, so the order of logins is known.
    let mut perfs = Vec::new();
    for (i, t) in TARGETS.iter().enumerate() {
        let ini = initiator(i);
        perfs.push(Perf::start(ini.clone(), &format!("iscsi://{p0}/{t}/0")));
        let logged_in = wait_for(Duration::from_secs(10), || {
            find_event(
                &snapshot(admin).events,
                |k| matches!(k, EventKind::Login { initiator, .. } if *initiator == ini),
            )
        });
        assert!(logged_in.is_some(), "{ini} never logged in");
        std::thread::sleep(Duration::from_millis(1500));
    }

    // 3. One initiator is moved to P1: registration deleted, logout requested, login
    // redirected at P0, login at P1, in that order.
    let snap = wait_for(Duration::from_secs(10), || {
        let s = snapshot(admin);
        let moved = find_event(&s.events, |k| matches!(k, EventKind::Redirected { .. }))?;
        let EventKind::Redirected { initiator, .. } = &moved.kind else {
            unreachable!()
        };
        let ini = initiator.clone();
        find_event(&s.events, |k| {
            matches!(k, EventKind::Login { initiator, portal, .. } if *initiator == ini && *portal == P1)
        })?;
        Some(s)
    })
    .unwrap_or_else(|| {
        panic!(
            "no initiator was moved to P1; status:\n{}\ntarget log:\n{}",
            status(admin, false),
            std::fs::read_to_string(&target_log).unwrap_or_default()
        )
    });
    let ev = &snap.events;
    let redirected = find_event(ev, |k| matches!(k, EventKind::Redirected { .. })).unwrap();
    let EventKind::Redirected {
        initiator: moved,
        target: moved_target,
        from,
        to,
    } = redirected.kind.clone()
    else {
        unreachable!()
    };
    assert_eq!((from, to), (P0, P1));
    let seq_of = |what: &str, f: &dyn Fn(&EventKind) -> bool| {
        find_event(ev, f).unwrap_or_else(|| panic!("no {what} event for {moved}: {ev:#?}"))
    };
    let deleted = seq_of(
        "registration_deleted",
        &|k| matches!(k, EventKind::RegistrationDeleted { target, portal } if *target == moved_target && *portal == P0),
    );
    let requested = seq_of(
        "logout_requested",
        &|k| matches!(k, EventKind::LogoutRequested { initiator, from, to, .. } if *initiator == moved && *from == P0 && *to == P1),
    );
    let logout = seq_of(
        "logout",
        &|k| matches!(k, EventKind::Logout { initiator, portal, .. } if *initiator == moved && *portal == P0),
    );
    let login_p1 = seq_of(
        "login on P1",
        &|k| matches!(k, EventKind::Login { initiator, portal, .. } if *initiator == moved && *portal == P1),
    );
    let order = [&deleted, &requested, &logout, &redirected, &login_p1].map(|e| e.seq);
    assert!(
        order.is_sorted(),
        "events out of the patent's order: {order:?}: {ev:#?}"
    );
    assert!(
        !ev.iter()
            .any(|e| matches!(e.kind, EventKind::Failed { .. })),
        "failed events: {ev:#?}"
    );
    // Which host moves is the policy's switch priority (quietest session first, then the most
    // recent login; see the balancer's unit tests): here it must be one of ours.
    assert!(
        (0..3).any(|i| moved == initiator(i)),
        "moved initiator {moved} is none of the three hosts"
    );
    let move_ms = login_p1.at_ms.saturating_sub(requested.at_ms);
    eprintln!(
        "move of {moved}: logout requested -> login on P1 in {move_ms} ms (logout after {} ms, redirect after {} ms)",
        logout.at_ms.saturating_sub(requested.at_ms),
        redirected.at_ms.saturating_sub(requested.at_ms),
    );

    // `portshift status` shows the moved session on P1 and the others on P0.
    let text = status(admin, false);
    let sessions = status_sessions(&text);
    assert!(
        sessions.contains(&("P1".to_string(), moved.clone())),
        "status does not show {moved} on P1: {sessions:?}\n{text}"
    );
    let on_p0: Vec<String> = sessions
        .iter()
        .filter(|(p, _)| p == "P0")
        .map(|(_, i)| i.clone())
        .collect();
    assert_eq!(on_p0.len(), 2, "P0 sessions: {sessions:?}\n{text}");

    // During the overload iSNS no longer lists the (moved target, P0) Portal Group at all.
    let pgs = isnsadm_pgs(&conf, &moved_target);
    assert_eq!(
        pgs,
        [(p1.clone(), "1".to_string())],
        "isnsadm --query iscsi-name={moved_target} during the overload"
    );
    for t in TARGETS.iter().filter(|t| **t != moved_target) {
        assert_eq!(isnsadm_pgs(&conf, t).len(), 2, "{t} keeps both portals");
    }

    // The load falls: the most recent initiator still on P0 goes away.
    let victim = perfs
        .iter()
        .rposition(|p| on_p0.contains(&p.initiator))
        .unwrap();
    let killed_at = now_ms();
    perfs[victim].proc.0.kill().unwrap();
    let restored = wait_for(Duration::from_secs(COOLDOWN_SECONDS + 10), || {
        find_event(&snapshot(admin).events, |k| {
            matches!(k, EventKind::RegistrationRestored { target, portal } if *target == moved_target && *portal == P0)
        })
    })
    .unwrap_or_else(|| panic!("(moved target, P0) never restored:\n{}", status(admin, false)));
    eprintln!(
        "killed {} at P0: registration restored {} ms later",
        perfs[victim].initiator,
        restored.at_ms.saturating_sub(killed_at)
    );
    let pgs = wait_for(Duration::from_secs(5), || {
        let pgs = isnsadm_pgs(&conf, &moved_target);
        (pgs.len() == 2).then_some(pgs)
    });
    assert_eq!(
        pgs,
        Some(vec![
            (p0.clone(), "1".to_string()),
            (p1.clone(), "1".to_string())
        ]),
        "isnsadm --query iscsi-name={moved_target} after the restore"
    );

    // 4. Every other iscsi-perf runs to its end without an I/O error, and the moved one kept
    // doing I/O after the move.
    for (i, perf) in perfs.iter_mut().enumerate() {
        let ok = perf.finish(Duration::from_secs(PERF_SECONDS + 20));
        if i == victim {
            continue;
        }
        let out = perf.all_output();
        assert!(ok, "{} did not exit 0:\n{}", perf.initiator, out.join("\n"));
        let bad: Vec<&String> = out
            .iter()
            .filter(|l| {
                let l = l.to_ascii_lowercase();
                ["error", "fail", "abort", "reconnect"]
                    .iter()
                    .any(|w| l.contains(w))
            })
            .collect();
        assert!(bad.is_empty(), "{}: {bad:?}", perf.initiator);
        assert!(
            out.iter().any(|l| l == "finished."),
            "{} did not finish:\n{}",
            perf.initiator,
            out.join("\n")
        );
        let iops = perf.iops();
        assert!(
            iops.len() as u64 >= PERF_SECONDS - 3,
            "{}: only {} IOPS lines",
            perf.initiator,
            iops.len()
        );
        assert!(
            iops.iter().all(|(_, n)| *n > 0),
            "{}: a second without I/O: {iops:?}",
            perf.initiator
        );
        let gaps: Vec<u64> = iops.windows(2).map(|w| w[1].0 - w[0].0).collect();
        let max_gap = gaps.iter().copied().max().unwrap_or(0);
        assert!(
            max_gap < 3000,
            "{}: output stalled {max_gap} ms",
            perf.initiator
        );
        if perf.initiator == moved {
            let after: Vec<u64> = iops
                .iter()
                .filter(|(t, _)| *t > login_p1.at_ms)
                .map(|(_, n)| *n)
                .collect();
            assert!(
                after.len() as u64 >= PERF_SECONDS - 5,
                "{moved}: only {} IOPS lines after the move",
                after.len()
            );
            let first = iops.first().map(|(_, n)| *n).unwrap_or(0);
            let mut sorted = after.clone();
            sorted.sort_unstable();
            let median = sorted.get(sorted.len() / 2).copied().unwrap_or(0);
            eprintln!(
                "{moved}: {} IOPS lines, {} after the move; longest gap between lines {max_gap} ms; \
                 IOPS in the second of the move {first}, median after {median}",
                iops.len(),
                after.len()
            );
        }
    }
}
