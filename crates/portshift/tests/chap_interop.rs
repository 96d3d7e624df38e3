//! CHAP (RFC 7143 §12.1.3) and allow lists against real peers: libiscsi's tools
//! (libiscsi-bin) and portshift's own initiator against `portshift target`, and portshift's
//! initiator against Debian's tgtd accounts. Loopback only, ports picked free at run time.
//!
//! A refused login is checked twice: the target's log names the initiator and its address
//! with status 0x0201, and portshift's initiator, logging in the same way, reads the status
//! from the Login Response (`LoginFailed { class: 2, detail: 1 }`).

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::tgtd::Tgtd;
use common::{Proc, TwoPortalTarget, free_addr, free_port_on_both, portshift_server, tool};
use initiator::login::{ChapAuth, LoginConfig};
use initiator::session::LoginAttempt;
use initiator::{Session, SessionConfig};
use iscsi_target::Credentials;

const T1: &str = "iqn.2024-01.test.chap:one";
const T2: &str = "iqn.2024-01.test.chap:two";
const ME: &str = "iqn.2024-01.test.chap:host";
const ALICE: (&str, &str) = ("alice", "alice-secret-1");
const ARRAY: (&str, &str) = ("array", "array-secret-1");

fn creds((user, secret): (&str, &str)) -> Credentials {
    Credentials {
        user: user.into(),
        secret: secret.into(),
    }
}

fn auth(chap: (&str, &str), mutual: Option<(&str, &str)>) -> Option<ChapAuth> {
    Some(ChapAuth {
        chap: creds(chap),
        mutual: mutual.map(creds),
    })
}

/// A `portshift target` on 127.0.0.1:P and 127.0.0.2:P serving T1 and T2 (sparse 64 MiB files) with
/// `extra` flags; its log in `dir/target.log`.
struct Target {
    portals: [SocketAddr; 2],
    log: PathBuf,
    _proc: Proc,
}

impl Target {
    fn start(dir: &Path, extra: &[&str]) -> Target {
        let port = free_port_on_both();
        let portals: [SocketAddr; 2] = [
            format!("127.0.0.1:{port}").parse().unwrap(),
            format!("127.0.0.2:{port}").parse().unwrap(),
        ];
        let admin = free_addr("127.0.0.1");
        let mut args: Vec<String> = vec!["target".into()];
        for p in &portals {
            args.extend(["--portal".into(), p.to_string()]);
        }
        for (i, t) in [T1, T2].iter().enumerate() {
            let lun = dir.join(format!("lun{i}.img"));
            args.extend(["--lun".into(), format!("{t}={}", lun.display())]);
        }
        args.extend(["--size".into(), "64M".into()]);
        args.extend(["--admin".into(), admin.to_string()]);
        args.extend(extra.iter().map(|a| a.to_string()));
        let log = dir.join("target.log");
        let proc = portshift_server(&args, admin, &log);
        Target {
            portals,
            log,
            _proc: proc,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log lines about failed authentications.
    fn auth_failures(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains("authentication failed (status 0x0201)"))
            .map(str::to_owned)
            .collect()
    }

    fn url(&self, creds: Option<(&str, &str)>, target: &str) -> String {
        let who = creds.map_or(String::new(), |(u, s)| format!("{u}%{s}@"));
        format!("iscsi://{who}{}/{target}/0", self.portals[0])
    }
}

/// A secrets file with mode 600.
fn secrets(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("secrets");
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Where one login by portshift's initiator ended, when not refused.
#[derive(Debug, PartialEq, Eq)]
enum Reached {
    /// Logged in (and out again).
    In,
    /// Redirected (not followed).
    Redirected,
}

/// One login by portshift's initiator (redirects not followed), or the error
/// (`LoginFailed { class, detail }`).
fn login_once(
    portal: SocketAddr,
    initiator: &str,
    target: &str,
    auth: Option<ChapAuth>,
) -> Result<Reached, initiator::Error> {
    let cfg = SessionConfig {
        login: LoginConfig::normal(initiator, target).with_auth(auth),
        queue_depth: 4,
        timeout: Duration::from_secs(10),
    };
    rt().block_on(async {
        match Session::login_once(portal, &cfg).await? {
            LoginAttempt::LoggedIn(s) => {
                s.client.test_unit_ready(0).await.ok();
                s.logout(Duration::from_secs(5)).await?;
                Ok(Reached::In)
            }
            LoginAttempt::Redirected(_) => Ok(Reached::Redirected),
        }
    })
}

fn status_of(r: Result<Reached, initiator::Error>) -> (u8, u8) {
    match r {
        Err(initiator::Error::LoginFailed { class, detail }) => (class, detail),
        other => panic!("expected a refused login, got {other:?}"),
    }
}

/// SendTargets=All by portshift's initiator: the target names.
fn discover(
    portal: SocketAddr,
    initiator: &str,
    auth: Option<ChapAuth>,
) -> Result<Vec<String>, initiator::Error> {
    let login = LoginConfig::discovery(initiator).with_auth(auth);
    rt().block_on(initiator::discovery::send_targets_with(
        portal,
        login,
        Duration::from_secs(10),
    ))
    .map(|ts| ts.into_iter().map(|t| t.name).collect())
}

fn libiscsi(program: &str, args: &[&str]) -> Output {
    Command::new(tool(program, "libiscsi-bin"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn libiscsi_logs_in_with_chap_and_wrong_or_missing_credentials_get_0201() {
    let dir = tempfile::tempdir().unwrap();
    let file = secrets(
        dir.path(),
        &format!("# T1 needs CHAP\nchap {T1} {} {}\n", ALICE.0, ALICE.1),
    );
    let t = Target::start(dir.path(), &["--chap-file", file.to_str().unwrap()]);

    // The right credentials: iscsi-ls (discovery, then a login to list the LUNs), iscsi-inq
    // and a short iscsi-perf run.
    let o = libiscsi(
        "iscsi-ls",
        &[
            "-s",
            "-i",
            ME,
            &format!("iscsi://alice%alice-secret-1@{}", t.portals[0]),
        ],
    );
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains(T1) && out.contains("Lun:0"), "{out}");
    let o = libiscsi("iscsi-inq", &["-i", ME, &t.url(Some(ALICE), T1)]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("portshift") || text(&o).to_lowercase().contains("vendor"),
        "{}",
        text(&o)
    );
    let perf = common::run_timed(
        Command::new(tool("iscsi-perf", "libiscsi-bin")).args([
            "-i",
            ME,
            "-m",
            "4",
            &t.url(Some(ALICE), T1),
        ]),
        Duration::from_secs(3),
    );
    assert!(
        perf.timed_out && perf.stdout.contains("iops average"),
        "iscsi-perf did not run for 3 s: {perf:?}"
    );
    assert!(t.auth_failures().is_empty(), "{}", t.log());

    // A wrong secret and no credentials: refused with 0x0201 (the target's log; libiscsi says
    // authentication failure), then the same through portshift's initiator, which reads the
    // status off the Login Response.
    // libiscsi prints the status in decimal: 513 = 0x0201.
    for url in [
        t.url(Some(("alice", "wrong-secret-1")), T1),
        t.url(None, T1),
    ] {
        let o = libiscsi("iscsi-inq", &["-i", ME, &url]);
        assert!(!o.status.success(), "{}", text(&o));
        assert!(
            text(&o).contains("Authentication failure(513)"),
            "{}",
            text(&o)
        );
    }
    let failures = common::wait_for(Duration::from_secs(10), || {
        let f = t.auth_failures();
        (f.len() >= 2).then_some(f)
    })
    .unwrap_or_else(|| panic!("two failed authentications logged: {}", t.log()));
    for line in &failures {
        assert!(
            line.contains(ME) && line.contains(T1) && line.contains("127.0.0.1"),
            "{line}"
        );
    }
    assert!(
        failures[0].contains("CHAP_R does not match"),
        "{}",
        failures[0]
    );
    assert_eq!(
        status_of(login_once(
            t.portals[0],
            ME,
            T1,
            auth(("alice", "wrong-secret-1"), None)
        )),
        (2, 1)
    );
    assert_eq!(status_of(login_once(t.portals[0], ME, T1, None)), (2, 1));
    assert_eq!(
        login_once(t.portals[1], ME, T1, auth(ALICE, None)).unwrap(),
        Reached::In
    );
    // T2 has no CHAP: libiscsi without credentials gets in.
    let o = libiscsi("iscsi-inq", &["-i", ME, &t.url(None, T2)]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn mutual_chap_with_libiscsi_and_portshift_io() {
    let dir = tempfile::tempdir().unwrap();
    let chap = format!("{T1}={}:{}", ALICE.0, ALICE.1);
    let mutual = format!("{T1}={}:{}", ARRAY.0, ARRAY.1);
    let t = Target::start(dir.path(), &["--chap", &chap, "--mutual-chap", &mutual]);
    // libiscsi 1.19: target_user / target_password in the URL's query (lib/init.c).
    let url = |password: &str| {
        format!(
            "{}?target_user={}&target_password={password}",
            t.url(Some(ALICE), T1),
            ARRAY.0
        )
    };
    let o = libiscsi("iscsi-inq", &["-i", ME, &url(ARRAY.1)]);
    assert!(o.status.success(), "{}", text(&o));
    // libiscsi checks the target's answer: a target that does not know the secret it expects
    // is refused by libiscsi.
    let o = libiscsi("iscsi-inq", &["-i", ME, &url("not-the-secret")]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        t.auth_failures().is_empty(),
        "the target itself authenticated fine"
    );

    // portshift io, one-way and mutual, verifying what it writes.
    let io = |extra: &[&str]| {
        let mut args = vec![
            "io".to_string(),
            "--portal".into(),
            t.portals[0].to_string(),
            "--target".into(),
            T1.into(),
            "--initiator-name".into(),
            ME.into(),
            "--max-ios".into(),
            "200".into(),
            "--duration".into(),
            "10s".into(),
            "--verify".into(),
            "--region-blocks".into(),
            "1024".into(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        common::run_timed(
            Command::new(env!("CARGO_BIN_EXE_portshift")).args(&args),
            Duration::from_secs(30),
        )
    };
    let one_way = format!("{}:{}", ALICE.0, ALICE.1);
    let back = format!("{}:{}", ARRAY.0, ARRAY.1);
    let r = io(&["--chap", &one_way]);
    assert!(r.ok && r.stdout.contains("200 I/Os"), "{r:?}");
    let r = io(&["--chap", &one_way, "--mutual-chap", &back]);
    assert!(r.ok && r.stdout.contains("200 I/Os"), "{r:?}");
    let r = io(&["--chap", &one_way, "--mutual-chap", "array:not-the-secret"]);
    assert!(
        !r.ok,
        "a target answering with another secret is refused: {r:?}"
    );
    assert!(r.stderr.contains("CHAP"), "{r:?}");
    // The same secret both ways is refused before any login.
    let r = io(&[
        "--chap",
        &one_way,
        "--mutual-chap",
        &format!("array:{}", ALICE.1),
    ]);
    assert!(!r.ok && r.stderr.contains("same"), "{r:?}");
}

#[test]
fn the_allow_list_refuses_with_0202_and_hides_the_target_from_sendtargets() {
    let dir = tempfile::tempdir().unwrap();
    let friend = "iqn.2024-01.test.chap:friend";
    let t = Target::start(dir.path(), &["--allow", &format!("{T2}={friend}")]);
    assert_eq!(status_of(login_once(t.portals[0], ME, T2, None)), (2, 2));
    assert_eq!(
        login_once(t.portals[0], friend, T2, None).unwrap(),
        Reached::In
    );
    assert_eq!(login_once(t.portals[0], ME, T1, None).unwrap(), Reached::In);
    assert_eq!(discover(t.portals[0], ME, None).unwrap(), [T1]);
    assert_eq!(discover(t.portals[1], friend, None).unwrap(), [T1, T2]);
    // libiscsi's discovery as the stranger does not list T2 either.
    let o = libiscsi(
        "iscsi-ls",
        &["-i", ME, &format!("iscsi://{}", t.portals[0])],
    );
    assert!(o.status.success() && text(&o).contains(T1), "{}", text(&o));
    assert!(!text(&o).contains(T2), "{}", text(&o));
    let o = libiscsi("iscsi-inq", &["-i", ME, &t.url(None, T2)]);
    assert!(!o.status.success(), "{}", text(&o));
    // Said once at start-up: T1 has no rule and accepts everyone; T2 does not.
    let log = t.log();
    let open: Vec<_> = log
        .lines()
        .filter(|l| l.contains("accepts every initiator"))
        .collect();
    assert_eq!(open.len(), 1, "{log}");
    assert!(open[0].contains(T1), "{}", open[0]);
}

#[test]
fn discovery_chap_guards_sendtargets() {
    let dir = tempfile::tempdir().unwrap();
    let t = Target::start(
        dir.path(),
        &["--discovery-chap", &format!("{}:{}", ALICE.0, ALICE.1)],
    );
    assert_eq!(
        discover(t.portals[0], ME, auth(ALICE, None)).unwrap(),
        [T1, T2]
    );
    match discover(t.portals[0], ME, None) {
        Err(initiator::Error::LoginFailed {
            class: 2,
            detail: 1,
        }) => {}
        other => panic!("expected 0x0201, got {other:?}"),
    }
    let o = libiscsi(
        "iscsi-ls",
        &[
            "-i",
            ME,
            &format!("iscsi://alice%alice-secret-1@{}", t.portals[0]),
        ],
    );
    assert!(o.status.success() && text(&o).contains(T2), "{}", text(&o));
    let o = libiscsi(
        "iscsi-ls",
        &["-i", ME, &format!("iscsi://{}", t.portals[0])],
    );
    assert!(!o.status.success(), "{}", text(&o));
    let f = common::wait_for(Duration::from_secs(10), || {
        let f = t.auth_failures();
        (f.len() >= 2).then_some(f)
    })
    .unwrap_or_else(|| panic!("{}", t.log()));
    assert!(f.iter().all(|l| l.contains("(discovery)")), "{f:?}");
}

#[test]
fn a_redirected_login_must_authenticate_at_the_destination() {
    // Balancing by sessions with a pinned bystander (see forced_move.rs): two sessions on the
    // first portal, the host is moved to the second. Both log in with CHAP.
    let dir = tempfile::tempdir().unwrap();
    let bystander = "iqn.2024-01.test.chap:bystander";
    let chap = format!("{T1}={}:{}", ALICE.0, ALICE.1);
    let t = TwoPortalTarget::start(
        dir.path(),
        &[T1],
        "16M",
        &[
            "--balance",
            "sessions:2",
            "--pin",
            bystander,
            "--cooldown",
            "2",
            "--chap",
            &chap,
        ],
    );
    let p: Vec<SocketAddr> = t.portals.iter().map(|a| a.parse().unwrap()).collect();
    let rt = rt();
    let moved = rt.block_on(async {
        let cfg = SessionConfig {
            login: LoginConfig::normal(bystander, T1).with_auth(auth(ALICE, None)),
            queue_depth: 4,
            timeout: Duration::from_secs(10),
        };
        let _by = Session::login(p[0], &cfg)
            .await
            .expect("bystander with CHAP");
        let mut bc = initiator::BalancedConfig::new(
            ME,
            Some(T1),
            initiator::PortalSource::Fixed {
                portal: p[0],
                send_targets: false,
            },
        );
        bc.auth = auth(ALICE, None);
        let (host, mut events) = initiator::BalancedInitiator::connect(bc)
            .await
            .expect("host");
        let moved = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(e) = events.recv().await {
                if let initiator::InitiatorEvent::LoggedIn {
                    portal,
                    redirected_from: Some(from),
                } = e
                {
                    return Some((from, portal));
                }
            }
            None
        })
        .await;
        host.shutdown(Duration::from_secs(5)).await;
        moved
    });
    assert_eq!(
        moved.ok().flatten(),
        Some((p[0], p[1])),
        "the host was redirected from the first portal to the second and logged in there with CHAP; log: {}",
        std::fs::read_to_string(&t.log).unwrap_or_default()
    );
    // Without credentials, the same host is redirected at the first portal and refused with
    // 0x0201 at the second: the destination demands CHAP too.
    assert_eq!(login_once(p[0], ME, T1, None).unwrap(), Reached::Redirected);
    assert_eq!(status_of(login_once(p[1], ME, T1, None)), (2, 1));
    assert_eq!(
        status_of(login_once(
            p[1],
            ME,
            T1,
            auth(("alice", "wrong-secret-1"), None)
        )),
        (2, 1)
    );
}

#[test]
fn portshift_initiator_does_chap_against_tgtd_accounts() {
    // tgtd with target T1, LUN 1 (8 MiB), bound to every initiator.
    let t = Tgtd::start(T1, 8 << 20);
    for (u, s) in [ALICE, ARRAY] {
        assert!(t.adm(&[
            "--mode",
            "account",
            "--op",
            "new",
            "--user",
            u,
            "--password",
            s
        ]));
    }
    assert!(t.adm(&[
        "--mode", "account", "--op", "bind", "--tid", "1", "--user", ALICE.0
    ]));
    // One-way: in with the secret, 0x0201 without or with a wrong one.
    assert_eq!(
        login_once(t.portal, ME, T1, auth(ALICE, None)).unwrap(),
        Reached::In
    );
    assert_eq!(status_of(login_once(t.portal, ME, T1, None)), (2, 1));
    assert_eq!(
        status_of(login_once(
            t.portal,
            ME,
            T1,
            auth(("alice", "wrong-secret-1"), None)
        )),
        (2, 1)
    );
    // Mutual: tgtd answers with its outgoing account, and portshift's initiator checks it.
    assert!(t.adm(&[
        "--mode",
        "account",
        "--op",
        "bind",
        "--tid",
        "1",
        "--user",
        ARRAY.0,
        "--outgoing"
    ]));
    assert_eq!(
        login_once(t.portal, ME, T1, auth(ALICE, Some(ARRAY))).unwrap(),
        Reached::In
    );
    match login_once(
        t.portal,
        ME,
        T1,
        auth(ALICE, Some(("array", "not-the-secret"))),
    ) {
        Err(initiator::Error::Login(iscsi_proto::LoginError::Authentication(m))) => {
            assert!(m.contains("CHAP_R"), "{m}")
        }
        other => panic!("a tgtd answering with another secret must be refused: {other:?}"),
    }
    // And `portshift io` end to end, mutual, verifying its writes on LUN 1.
    let r = common::run_timed(
        Command::new(env!("CARGO_BIN_EXE_portshift")).args([
            "io",
            "--portal",
            &t.portal.to_string(),
            "--target",
            T1,
            "--no-send-targets",
            "--initiator-name",
            ME,
            "--lun",
            "1",
            "--max-ios",
            "200",
            "--verify",
            "--chap",
            "alice:alice-secret-1",
            "--mutual-chap",
            "array:array-secret-1",
        ]),
        Duration::from_secs(30),
    );
    assert!(r.ok && r.stdout.contains("200 I/Os"), "{r:?}");
}
