//! Acceptance: the operator's calls (`portshift balance …`) over real sockets, against the real
//! binaries and real libiscsi hosts.
//!
//! `portshift isns` and `portshift target` with two portals (127.0.0.1:P, 127.0.0.2:P), no
//! `--balance` (only the operator moves anyone) and `--admin-token-file`:
//! - a mutating call without the token, or with a wrong one (raw HTTP and `portshift balance`
//!   with a wrong token file), is answered 401 and changes nothing: same sessions on the same
//!   portals, every registration in place, no logout request, not paused, nothing drained;
//! - `portshift balance move HOST --to P1` moves the named libiscsi `iscsi-perf` host to the
//!   second portal (its session ends on P0 and it logs in on P1) while the other host stays,
//!   and both runs finish without an I/O error;
//! - `portshift balance drain P0` empties the first portal of three `iscsi-perf` hosts and a
//!   `portshift io --verify` host: its registrations are deleted, the hosts returning to it are
//!   redirected, the command shows progress until it is empty; no host sees an I/O error and
//!   the verifying host no mismatch; `undrain` registers it again.
//!
//! Needs `libiscsi-bin` (iscsi-perf). Loopback only, ports picked free at run time, files in a
//! temporary directory.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use balancer::{AdminSnapshot, EventKind, PortalId};
use common::{Proc, TwoPortalTarget, portshift, snapshot, tool, wait_for};
use initiator::WorkloadReport;

const P0: PortalId = PortalId(0);
const P1: PortalId = PortalId(1);
const TOKEN: &str = "c0ffee-operator-token";
/// Seconds each iscsi-perf runs.
const PERF_SECONDS: u64 = 20;

fn target(i: usize) -> String {
    format!("iqn.2024-01.test.ops:t{i}")
}

fn host(i: usize) -> String {
    format!("iqn.2024-01.test.ops:host{i}")
}

/// A private file holding `token`.
fn token_file(dir: &Path, name: &str, token: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("{token}\n")).expect("token file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

/// A raw HTTP/1.1 POST of `body` to `path` on the admin endpoint: (status, whole answer).
fn post(admin: SocketAddr, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&admin, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("answer");
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, out)
}

/// `portshift balance --admin ADMIN ARGS`: (exit 0, stdout, stderr).
fn balance(admin: SocketAddr, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_portshift"))
        .args(["balance", "--admin", &admin.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run portshift balance");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// (session id, portal) of every session of `initiator`.
fn sessions_of(snap: &AdminSnapshot, initiator: &str) -> Vec<(u64, PortalId)> {
    snap.table
        .portals
        .iter()
        .flat_map(|p| {
            p.sessions
                .iter()
                .filter(|s| s.initiator == initiator)
                .map(move |s| (s.session_id, p.id))
        })
        .collect()
}

/// An `iscsi-perf` run with its output in files.
struct Perf {
    proc: Proc,
    initiator: String,
    out: PathBuf,
}

impl Perf {
    fn start(dir: &Path, initiator: String, url: &str) -> Perf {
        let out = dir.join(format!("{}.perf", initiator.replace(':', "_")));
        let file = std::fs::File::create(&out).expect("perf log");
        let child = Command::new(tool("iscsi-perf", "libiscsi-bin"))
            .args(["-t", &PERF_SECONDS.to_string(), "-b", "8", "-m", "4", "-r"])
            .args(["-x", "100", "-i", &initiator, url])
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("perf log"))
            .stderr(file)
            .spawn()
            .expect("spawn iscsi-perf");
        Perf {
            proc: Proc(child),
            initiator,
            out,
        }
    }

    /// Waits for the run to end; it must exit 0, say "finished." and report no error.
    fn finish_cleanly(&mut self) {
        let status = wait_for(Duration::from_secs(PERF_SECONDS + 30), || {
            self.proc.0.try_wait().unwrap()
        })
        .unwrap_or_else(|| panic!("{} still running", self.initiator));
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        assert!(
            status.success(),
            "{} exited {status}:\n{text}",
            self.initiator
        );
        let bad: Vec<&str> = text
            .split(['\r', '\n'])
            .filter(|l| {
                let l = l.to_ascii_lowercase();
                ["error", "fail", "abort"].iter().any(|w| l.contains(w))
            })
            .collect();
        assert!(bad.is_empty(), "{}: {bad:?}", self.initiator);
        assert!(
            text.split(['\r', '\n']).any(|l| l.trim() == "finished."),
            "{} did not finish:\n{text}",
            self.initiator
        );
    }
}

/// Waits until every one of `hosts` has a session on `portal`.
fn wait_on(admin: SocketAddr, hosts: &[String], portal: PortalId, limit: Duration) {
    let ok = wait_for(limit, || {
        let s = snapshot(admin);
        hosts
            .iter()
            .all(|h| sessions_of(&s, h).iter().any(|(_, p)| *p == portal))
            .then_some(())
    });
    assert!(
        ok.is_some(),
        "{hosts:?} not all on {portal}: {:?}",
        snapshot(admin).table
    );
}

#[test]
fn mutating_calls_need_the_token_and_move_moves_a_named_libiscsi_host() {
    tool("iscsi-perf", "libiscsi-bin");
    let dir = tempfile::tempdir().expect("tempdir");
    let token = token_file(dir.path(), "admin.token", TOKEN);
    let wrong = token_file(dir.path(), "wrong.token", "not-the-token");
    let targets = [target(1), target(2)];
    let stack = TwoPortalTarget::start(
        dir.path(),
        &[targets[0].as_str(), targets[1].as_str()],
        "16M",
        &["--admin-token-file", &token.display().to_string()],
    );
    let (admin, p0) = (stack.admin, stack.portals[0].clone());
    let hosts = [host(1), host(2)];
    let mut perfs: Vec<Perf> = (0..2)
        .map(|i| {
            Perf::start(
                dir.path(),
                hosts[i].clone(),
                &format!("iscsi://{p0}/{}/0", targets[i]),
            )
        })
        .collect();
    wait_on(admin, &hosts, P0, Duration::from_secs(15));
    let before = snapshot(admin);
    let sessions_before: Vec<_> = hosts.iter().map(|h| sessions_of(&before, h)).collect();

    // 1. Without the token, or with a wrong one: 401, and nothing changes.
    let move_body = format!(r#"{{"initiator":"{}","to":"P1"}}"#, hosts[0]);
    for (path, body) in [
        ("/balance/move", move_body.as_str()),
        ("/balance/drain", r#"{"portal":"P0"}"#),
        ("/balance/pause", "{}"),
        ("/balance/pin", r#"{"initiator":"x"}"#),
    ] {
        for t in [None, Some("not-the-token"), Some("c0ffee")] {
            let (status, answer) = post(admin, path, t, body);
            assert_eq!(status, 401, "{path} with {t:?}: {answer}");
        }
    }
    let (ok, out, err) = balance(
        admin,
        &[
            "--token-file",
            &wrong.display().to_string(),
            "move",
            &hosts[0],
        ],
    );
    assert!(!ok && err.contains("401"), "{out}\n{err}");
    let (ok, _, err) = balance(admin, &["drain", "P0"]);
    assert!(!ok && err.contains("--token-file"), "{err}");
    std::thread::sleep(Duration::from_secs(2));
    let after = snapshot(admin);
    for (h, s) in hosts.iter().zip(&sessions_before) {
        assert_eq!(&sessions_of(&after, h), s, "{h} was touched");
    }
    assert!(after.registrations.iter().all(|r| r.registered));
    assert_eq!(after.logout_requests, 0);
    assert!(!after.events.iter().any(|e| matches!(
        e.kind,
        EventKind::LogoutRequested { .. } | EventKind::RegistrationDeleted { .. }
    )));
    let (ok, shown, _) = balance(admin, &["show"]);
    assert!(ok, "{shown}");
    assert!(
        shown.contains("balancer: running") && shown.contains("pinned:   -"),
        "{shown}"
    );
    assert!(!shown.contains("drained:"), "{shown}");

    // 2. With it: the named host moves to P1, the other stays.
    let (ok, out, err) = balance(
        admin,
        &[
            "--token-file",
            &token.display().to_string(),
            "move",
            &hosts[0],
            "--to",
            "P1",
        ],
    );
    assert!(ok, "{out}\n{err}");
    assert!(
        out.contains(&format!("{} ({}): P0 -> P1", hosts[0], targets[0])),
        "{out}"
    );
    wait_on(admin, &hosts[..1], P1, Duration::from_secs(20));
    let moved = snapshot(admin);
    assert_eq!(sessions_of(&moved, &hosts[0]).len(), 1, "{:?}", moved.table);
    assert_eq!(sessions_of(&moved, &hosts[1]), sessions_before[1]);
    assert!(moved.events.iter().any(|e| matches!(
        &e.kind,
        EventKind::LogoutRequested { initiator, from: P0, to: P1, .. } if *initiator == hosts[0]
    ) && e.reason.contains("operator")));

    // 3. Both runs end without an I/O error.
    for p in &mut perfs {
        p.finish_cleanly();
    }
}

#[test]
fn drain_empties_a_portal_of_libiscsi_hosts_and_a_verifying_host() {
    tool("iscsi-perf", "libiscsi-bin");
    let dir = tempfile::tempdir().expect("tempdir");
    let token = token_file(dir.path(), "admin.token", TOKEN);
    let token_arg = token.display().to_string();
    let targets: Vec<String> = (1..=4).map(target).collect();
    let names: Vec<&str> = targets.iter().map(String::as_str).collect();
    let stack = TwoPortalTarget::start(
        dir.path(),
        &names,
        "16M",
        &["--admin-token-file", &token_arg],
    );
    let (admin, p0) = (stack.admin, stack.portals[0].clone());
    let hosts: Vec<String> = (1..=4).map(host).collect();

    // Three libiscsi hosts through P0, and a verifying host that finds its portal in iSNS
    // (P0 is listed first).
    let mut perfs: Vec<Perf> = (0..3)
        .map(|i| {
            Perf::start(
                dir.path(),
                hosts[i].clone(),
                &format!("iscsi://{p0}/{}/0", targets[i]),
            )
        })
        .collect();
    let io_out = dir.path().join("io.json");
    let io_err = dir.path().join("io.err");
    let mut io = portshift(
        &[
            "io",
            "--isns",
            &stack.isns.to_string(),
            "--target",
            &targets[3],
            "--initiator-name",
            &hosts[3],
            "--verify",
            "--json",
            "--duration",
            "120s",
        ]
        .map(String::from),
        &io_out,
        &io_err,
    );
    wait_on(admin, &hosts, P0, Duration::from_secs(15));
    std::thread::sleep(Duration::from_secs(2));

    // Drain P0: the command shows progress and returns once it is empty.
    let (ok, out, err) = balance(
        admin,
        &[
            "--token-file",
            &token_arg,
            "drain",
            "P0",
            "--timeout",
            "40s",
        ],
    );
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("session(s) left"), "{out}");
    assert!(out.contains("P0 is empty"), "{out}");
    let snap = snapshot(admin);
    assert!(
        snap.table.portals[0].sessions.is_empty(),
        "{:?}",
        snap.table
    );
    // Every registration of P0 is deleted. A deletion the iSNS server did not answer in time
    // (a loaded machine) is sent again by the registration keeper every 2 s once the server
    // answers (reason "retrying the drain of P0"), so it may complete after the portal emptied.
    let deleted = wait_for(Duration::from_secs(10), || {
        let snap = snapshot(admin);
        snap.registrations
            .iter()
            .all(|r| r.portal != P0 || !r.registered)
            .then_some(())
    });
    if deleted.is_none() {
        let snap = snapshot(admin);
        let stuck: Vec<_> = snap
            .registrations
            .iter()
            .filter(|r| r.portal == P0 && r.registered)
            .collect();
        panic!(
            "{stuck:?} still registered 10 s after the drain; events: {:#?}\ntarget log:\n{}",
            snap.events,
            std::fs::read_to_string(&stack.log).unwrap_or_default()
        );
    }
    // Every host is back, on P1; the libiscsi hosts came back to P0 and were redirected.
    wait_on(admin, &hosts, P1, Duration::from_secs(20));
    let snap = snapshot(admin);
    for h in &hosts[..3] {
        assert!(
            snap.events.iter().any(|e| matches!(
                &e.kind,
                EventKind::Redirected { initiator, from: P0, to: P1, .. } if initiator == h
            )),
            "{h} was not redirected"
        );
    }
    let (ok, shown, _) = balance(admin, &["show"]);
    assert!(
        ok && shown.contains("drained:  P0") && shown.contains("(0 session(s) left)"),
        "{shown}"
    );

    // Undrain: registrations back.
    let (ok, out, err) = balance(admin, &["--token-file", &token_arg, "undrain", "P0"]);
    assert!(ok, "{out}\n{err}");
    let snap = snapshot(admin);
    assert!(snap.registrations.iter().all(|r| r.registered));

    // No I/O error anywhere, no mismatch.
    for p in &mut perfs {
        p.finish_cleanly();
    }
    let pid = io.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .is_ok_and(|s| s.success())
    );
    let status = wait_for(Duration::from_secs(20), || io.0.try_wait().unwrap())
        .expect("portshift io did not exit after SIGINT");
    let text = std::fs::read_to_string(&io_out).unwrap_or_default();
    let errs = std::fs::read_to_string(&io_err).unwrap_or_default();
    assert!(
        status.success(),
        "portshift io exited {status}:\n{text}\n{errs}"
    );
    let report: WorkloadReport =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("report ({e}):\n{text}"));
    assert_eq!((report.errors, report.mismatches), (0, 0), "{text}");
    assert!(report.verified_reads > 0, "{text}");
    assert!(
        !report.moves.is_empty(),
        "the verifying host was not moved: {text}"
    );
}
