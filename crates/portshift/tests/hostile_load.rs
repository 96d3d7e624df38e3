//! Hostile and heavy load against the real `portshift` processes and real peers (issue 11,
//! "Hold under hostile and heavy load"): floods of idle and slow connections, a peer that never
//! reads its READ data, strangers changing another node's iSNS registration, registration
//! floods under rotating names. Each test reproduces one failure and asserts the budget that
//! ARCHITECTURE.md ("Budgets under hostile load") states.
//!
//! Loopback only. Attackers bind their source address to 127.0.0.10 … 127.0.0.20 and to
//! 127.0.0.1, the legitimate clients' own address, so per-address limits are exercised. Every
//! loop is bounded in count and time. The tests are heavy (over a thousand sockets each): they
//! run one at a time (`serial`), and the test process raises its own soft open-file limit.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::raw::RawSession;
use common::{
    Proc, Timed, free_addr, free_port_on_both, isns_server, isnsadm_conf,
    portshift_server_with_nofile, run_timed, snapshot, tool, wait_for,
};
use initiator::login::{LoginConfig, LoginExchange};
use iscsi_proto::{Digests, Pdu};
use isns::request;
use isns_proto::{Attribute, Flags, FunctionId, Message, MessageDecoder, Status, tag};
use tokio::net::TcpSocket;

const IQN: &str = "iqn.2024-01.org.portshift:hostile";
const INITIATOR: &str = "iqn.2024-01.org.portshift:hostile-raw";
/// isnsadm's source name, a Control Node of every iSNS server started here (it lists and
/// queries everything).
const ADM_SOURCE: &str = "iqn.2024-01.test:adm";
/// The hard open-file limit of the servers in the descriptor tests.
const FD_LIMIT: u64 = 1024;
/// How long a connect of a flood may take (a full accept queue drops SYNs; the client
/// retransmits after 1 s).
const CONNECT_WITHIN: Duration = Duration::from_secs(3);

/// The tests of this file run one at a time; a failed one must not stop the others.
static LOCK: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    let guard = LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    let mut soft = rlimit::increase_nofile_limit(u64::MAX).expect("raise RLIMIT_NOFILE");
    if soft < 4096 {
        // A low hard limit: root (CAP_SYS_RESOURCE) may raise it.
        let _ = rlimit::setrlimit(rlimit::Resource::NOFILE, 8192, 8192);
        soft = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(soft, |(s, _)| s);
    }
    assert!(
        soft >= 4096,
        "the test needs about 2,500 descriptors; soft limit is {soft}"
    );
    guard
}

/// The attackers' source addresses: 127.0.0.1 (the legitimate clients' own) and
/// 127.0.0.10 … 127.0.0.20.
fn attackers() -> Vec<IpAddr> {
    std::iter::once(1)
        .chain(10..=20)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)))
        .collect()
}

fn stranger_addr() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A TCP connection from `from` (bound before connect) to `to`, with an optional receive
/// buffer size (set before connect, so the window is small from the start).
async fn connect_from_async(
    from: IpAddr,
    to: SocketAddr,
    rcvbuf: Option<u32>,
    within: Duration,
) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    if let Some(size) = rcvbuf {
        s.set_recv_buffer_size(size)?;
    }
    s.bind(SocketAddr::new(from, 0))?;
    let stream = tokio::time::timeout(within, s.connect(to))
        .await
        .map_err(|_| std::io::Error::from(ErrorKind::TimedOut))??;
    stream.into_std()
}

/// A blocking connection from `from` to `to` (5 s to connect, 10 s read timeout).
fn connect_from(from: IpAddr, to: SocketAddr, rcvbuf: Option<u32>) -> TcpStream {
    let s = runtime()
        .block_on(connect_from_async(from, to, rcvbuf, Duration::from_secs(5)))
        .unwrap_or_else(|e| panic!("connect {from} -> {to}: {e}"));
    s.set_nonblocking(false).expect("blocking socket");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    s
}

/// Connection attempts to one address, all made at once from the attacker addresses, on a
/// thread of their own.
struct Flood {
    established: Arc<AtomicUsize>,
    thread: Option<JoinHandle<Vec<TcpStream>>>,
}

impl Flood {
    /// Starts `n` connection attempts to `to`, the i-th from `attackers()[i % 12]`, each given
    /// `within` to complete.
    fn start(to: SocketAddr, n: usize, within: Duration) -> Flood {
        let established = Arc::new(AtomicUsize::new(0));
        let count = established.clone();
        let sources = attackers();
        let thread = std::thread::spawn(move || {
            runtime().block_on(async {
                let mut set = tokio::task::JoinSet::new();
                for i in 0..n {
                    let from = sources[i % sources.len()];
                    let count = count.clone();
                    set.spawn(async move {
                        let r = connect_from_async(from, to, None, within).await;
                        if r.is_ok() {
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                        r
                    });
                }
                let mut open = Vec::with_capacity(n);
                while let Some(r) = set.join_next().await {
                    if let Ok(Ok(s)) = r {
                        open.push(s);
                    }
                }
                open
            })
        });
        Flood {
            established,
            thread: Some(thread),
        }
    }

    /// Connections established so far.
    fn established(&self) -> usize {
        self.established.load(Ordering::Relaxed)
    }

    /// Waits until every attempt has ended; the established connections (non-blocking).
    fn finish(mut self) -> Vec<TcpStream> {
        self.thread
            .take()
            .map(|t| t.join().expect("flood thread"))
            .unwrap_or_default()
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Opens `n` connections to `to` at once (see [`Flood`]); returns the ones whose handshake
/// completed within [`CONNECT_WITHIN`].
fn flood(to: SocketAddr, n: usize) -> Vec<TcpStream> {
    Flood::start(to, n, CONNECT_WITHIN).finish()
}

/// Writes one byte of `message` to each stream every second (never the whole message) until
/// stopped or `rounds` seconds have passed.
struct Trickle {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl Trickle {
    fn start(streams: Vec<TcpStream>, message: Vec<u8>, rounds: usize) -> Trickle {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let (stop2, sent2) = (stop.clone(), sent.clone());
        let thread = std::thread::spawn(move || {
            let mut streams = streams;
            for round in 0..rounds.min(message.len() - 1) {
                for s in &mut streams {
                    if let Ok(1) = s.write(&message[round..=round]) {
                        sent2.fetch_add(1, Ordering::Relaxed);
                    }
                }
                for _ in 0..20 {
                    if stop2.load(Ordering::Relaxed) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        });
        Trickle {
            stop,
            sent,
            thread: Some(thread),
        }
    }

    fn bytes_sent(&self) -> usize {
        self.sent.load(Ordering::Relaxed)
    }
}

impl Drop for Trickle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A `portshift target` on 127.0.0.1:PORT and 127.0.0.2:PORT serving one file-backed LUN.
struct Target {
    proc: Proc,
    portals: [SocketAddr; 2],
    admin: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Target {
    fn start(size: &str, nofile: Option<u64>, isns: Option<SocketAddr>) -> Target {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port_on_both();
        let portals: [SocketAddr; 2] = [
            SocketAddr::from(([127, 0, 0, 1], port)),
            SocketAddr::from(([127, 0, 0, 2], port)),
        ];
        let admin = free_addr("127.0.0.1");
        let disk = dir.path().join("disk.img");
        let log = dir.path().join("target.log");
        let mut args: Vec<String> = vec!["target".into()];
        for p in &portals {
            args.extend(["--portal".into(), p.to_string()]);
        }
        args.extend([
            "--lun".into(),
            format!("{IQN}={}", disk.display()),
            "--size".into(),
            size.into(),
            "--admin".into(),
            admin.to_string(),
        ]);
        if let Some(server) = isns {
            args.extend(["--isns".into(), server.to_string()]);
        }
        let proc = portshift_server_with_nofile(&args, portals[0], &log, nofile);
        let up = wait_for(Duration::from_secs(10), || {
            TcpStream::connect_timeout(&admin, Duration::from_millis(200)).ok()
        });
        assert!(up.is_some(), "admin endpoint {admin} not up");
        if let Some(n) = nofile {
            let limits = std::fs::read_to_string(format!("/proc/{}/limits", proc.0.id()))
                .expect("/proc/PID/limits");
            let open_files: Vec<&str> = limits
                .lines()
                .find(|l| l.starts_with("Max open files"))
                .map(|l| l.split_whitespace().skip(3).take(2).collect())
                .unwrap_or_default();
            let n = n.to_string();
            assert_eq!(
                open_files,
                [n.as_str(), n.as_str()],
                "target's open-file limits (soft, hard)"
            );
        }
        Target {
            proc,
            portals,
            admin,
            log,
            _dir: dir,
        }
    }

    fn url(&self, portal: usize) -> String {
        format!("iscsi://{}/{IQN}/0", self.portals[portal])
    }

    fn pid(&self) -> u32 {
        self.proc.0.id()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Lines of the log containing `needle`: their count and the first one (without colours).
    fn log_lines(&self, needle: &str) -> (usize, String) {
        let text = strip_ansi(&self.log_text());
        let mut hits = text.lines().filter(|l| l.contains(needle));
        let first = hits.next().unwrap_or("").to_string();
        (usize::from(!first.is_empty()) + hits.count(), first)
    }

    /// Descriptors the target has open now.
    fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).map_or(0, Iterator::count)
    }

    /// Whether the target's last iSNS registration was accepted (`portshift status --json`).
    fn isns_registered(&self) -> bool {
        snapshot(self.admin).isns_contact.is_some_and(|c| c.ok)
    }
}

/// `text` without ANSI colour sequences (ESC [ ... m).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `iscsi-inq` (libiscsi) against `url`, killed after 10 s.
fn iscsi_inq(url: &str) -> Timed {
    run_timed(
        Command::new(tool("iscsi-inq", "libiscsi-bin")).arg(url),
        Duration::from_secs(10),
    )
}

/// Asserts that `iscsi-inq` through `t`'s first portal succeeds in under 2 s; `context` is
/// added to the failure message.
fn assert_inq_fast(t: &Target, context: &str) {
    let fds = t.open_fds();
    let inq = iscsi_inq(&t.url(0));
    eprintln!(
        "iscsi-inq: ok {} in {:?} (timed out: {}); target had {fds} descriptors open",
        inq.ok, inq.elapsed, inq.timed_out
    );
    let (accept_errors, first_accept_error) = t.log_lines("accept:");
    assert!(
        inq.ok && inq.stdout.contains("Vendor:PORTSHFT") && inq.elapsed < Duration::from_secs(2),
        "iscsi-inq {} under {context}: ok {}, {:?}{}; stderr: {}; target: {fds} descriptors open, \
         {accept_errors} accept errors logged, first: {first_accept_error}",
        t.url(0),
        inq.ok,
        inq.elapsed,
        if inq.timed_out {
            " (killed at the limit)"
        } else {
            ""
        },
        inq.stderr.trim(),
    );
}

/// The bytes of a Login Request as an attacker's first PDU.
fn login_request_bytes() -> Vec<u8> {
    let mut login = LoginExchange::new(LoginConfig::normal(INITIATOR, IQN), 1, 1);
    let req = login.start().expect("first login request");
    Pdu::LoginRequest(req)
        .to_bytes(Digests::default())
        .expect("encode login")
        .to_vec()
}

/// Issue 11: idle and slowloris connections exhaust a portal. 1,100 connections (half silent,
/// half trickling a Login Request one byte a second, from 127.0.0.10–20 and the initiator's
/// own 127.0.0.1) against a target whose descriptor limit is 1,024. Before the portal limits
/// were sized from that limit (462 per portal) and per client address (64), accept failed
/// with EMFILE and a real initiator was locked out until the login timeout freed descriptors.
#[test]
fn portal_idle_and_slowloris_flood_does_not_lock_out_an_initiator() {
    let _serial = serial();
    let t = Target::start("16M", Some(FD_LIMIT), None);
    let started = Instant::now();
    let mut conns = flood(t.portals[0], 1100);
    eprintln!(
        "portal flood: {} of 1100 connections established in {:?}",
        conns.len(),
        started.elapsed()
    );
    assert!(
        conns.len() >= 1000,
        "the flood itself failed: only {} connections",
        conns.len()
    );
    let trickling = conns.split_off(conns.len() / 2);
    let trickle = Trickle::start(trickling, login_request_bytes(), 60);
    // Every trickling connection has sent a byte or two when the initiator arrives.
    std::thread::sleep(Duration::from_millis(1500));
    assert_inq_fast(&t, "an idle + slowloris flood of one portal");
    assert!(trickle.bytes_sent() > 0, "the slowloris half never sent");
    eprintln!("trickled {} bytes", trickle.bytes_sent());
    drop(trickle);
    drop(conns);
}

/// VmRSS of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// 8 MiB: 16,384 blocks of 512 bytes.
const READ_BLOCKS: u16 = 16384;
/// What one connection may make the target hold: OUTPUT_BUDGET (8 MiB) + one command's
/// Data-In (8 MiB) + the 512 KiB read buffer ≈ 16.5 MiB (ARCHITECTURE.md), with slack for
/// allocator rounding and the connection's own state.
const RSS_GROWTH_BOUND_KIB: u64 = 24 * 1024;

/// Issue 11: a peer that sends READs and never reads the answers makes the target buffer
/// the Data-In without bound. 256 READs of 8 MiB (2 GiB of answers) on one connection that
/// is never read: the target's RSS must grow by at most one connection's output bound, and
/// come back once the connection is gone.
#[test]
fn unread_read_answers_stay_within_the_output_budget() {
    let _serial = serial();
    let t = Target::start("64M", None, None);
    let pid = t.pid();
    // Warm up: threads, pools and buffers of a normal session reading 8 MiB at a time.
    {
        let mut warm = RawSession::login(
            connect_from(IpAddr::V4(Ipv4Addr::LOCALHOST), t.portals[0], None),
            INITIATOR,
            IQN,
        );
        for i in 0..8u32 {
            let cmd = warm.read10(i * u32::from(READ_BLOCKS), READ_BLOCKS);
            warm.send(&cmd);
            let tally = warm.complete(1);
            assert_eq!(tally.bytes, 8 << 20, "warm-up READ {i} data");
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    let baseline = rss_kib(pid);

    let mut s = RawSession::login(
        connect_from(stranger_addr(), t.portals[0], Some(4096)),
        INITIATOR,
        IQN,
    );
    let mut burst = Vec::new();
    for i in 0..256u32 {
        let cmd = s.read10((i % 8) * u32::from(READ_BLOCKS), READ_BLOCKS);
        burst.extend_from_slice(&cmd.to_bytes(Digests::default()).expect("encode READ"));
    }
    s.s.write_all(&burst).expect("send 256 READs");
    // Never read: sample the target's RSS for 5 s.
    let mut peak = baseline;
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        peak = peak.max(rss_kib(pid));
        std::thread::sleep(Duration::from_millis(50));
    }
    let growth = peak.saturating_sub(baseline);
    eprintln!(
        "unread READs: RSS baseline {baseline} KiB, peak {peak} KiB, growth {growth} KiB \
         (bound {RSS_GROWTH_BOUND_KIB} KiB)"
    );
    assert!(
        growth <= RSS_GROWTH_BOUND_KIB,
        "target RSS grew by {growth} KiB (baseline {baseline}, peak {peak}) for one connection \
         that does not read; bound {RSS_GROWTH_BOUND_KIB} KiB"
    );

    drop(s);
    let limit = baseline + baseline / 10;
    let mut after = rss_kib(pid);
    let back = wait_for(Duration::from_secs(10), || {
        after = rss_kib(pid);
        (after <= limit).then_some(())
    });
    eprintln!("after close: RSS {after} KiB (baseline {baseline} KiB, limit {limit} KiB)");
    assert!(
        back.is_some(),
        "target RSS did not return within 10% of the baseline 10 s after the connection \
         closed: baseline {baseline} KiB, peak {peak} KiB, after {after} KiB"
    );
}

/// `portshift isns` on a free 127.0.0.1 port, isnsadm's source a Control Node.
struct IsnsServer {
    _proc: Proc,
    addr: SocketAddr,
    adm: PathBuf,
    _dir: tempfile::TempDir,
}

impl IsnsServer {
    fn start() -> IsnsServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let (proc, addr) = isns_server(dir.path(), &["--control-node", ADM_SOURCE]);
        let adm = isnsadm_conf(dir.path(), "adm.conf", addr, ADM_SOURCE);
        IsnsServer {
            _proc: proc,
            addr,
            adm,
            _dir: dir,
        }
    }

    /// isnsadm ARGS, killed after 10 s.
    fn isnsadm(&self, args: &[&str]) -> Timed {
        run_timed(
            Command::new(tool("isnsadm", "open-isns-utils"))
                .arg("-c")
                .arg(&self.adm)
                .args(args),
            Duration::from_secs(10),
        )
    }

    /// `isnsadm --query iscsi-name=NAME`: success and output.
    fn query(&self, name: &str) -> Timed {
        self.isnsadm(&["--query", &format!("iscsi-name={name}")])
    }
}

/// Sends `req` on `s` (transaction ID `xid`) and returns the answer.
fn isns_call(s: &mut TcpStream, mut req: Message, xid: u16) -> Message {
    req.xid = xid;
    s.write_all(&req.to_bytes()).expect("send iSNS request");
    let mut buf = BytesMut::new();
    let mut dec = MessageDecoder::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "no iSNS answer in 10 s");
        if let Some(m) = dec.decode(&mut buf).expect("decode iSNS answer") {
            assert_eq!(m.xid, xid, "answer to another request");
            return m;
        }
        let n = s.read(&mut chunk).expect("read iSNS answer");
        assert!(n > 0, "iSNS server closed the connection");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Issue 11: idle connections exhaust the iSNS server. 1,000 silent connections from the
/// attacker addresses (127.0.0.1 included); isnsadm must still be answered within 1 s.
#[test]
fn isns_idle_flood_does_not_lock_out_isnsadm() {
    let _serial = serial();
    let server = IsnsServer::start();
    let node = "iqn.2024-01.test:flooded-target";
    let reg = server.isnsadm(&[
        "--register",
        "entity=flooded",
        &format!("target={node}"),
        "portal=127.0.0.1:3260",
    ]);
    assert!(reg.ok, "isnsadm --register: {}", reg.stderr);
    let started = Instant::now();
    let conns = flood(server.addr, 1000);
    eprintln!(
        "iSNS flood: {} of 1000 connections established in {:?}",
        conns.len(),
        started.elapsed()
    );
    assert!(
        conns.len() >= 900,
        "the flood itself failed: only {} connections",
        conns.len()
    );
    let q = server.query(node);
    eprintln!("isnsadm --query: ok {} in {:?}", q.ok, q.elapsed);
    assert!(
        q.ok && q.stdout.contains(node) && q.elapsed < Duration::from_secs(1),
        "isnsadm --query under an idle flood: ok {}, {:?} (killed: {}); stdout: {}; stderr: {}",
        q.ok,
        q.elapsed,
        q.timed_out,
        q.stdout.trim(),
        q.stderr.trim()
    );
    drop(conns);
}

/// The values of the isnsadm output lines `NNNN  type  : Label = value` whose label is
/// `label`, quotes removed.
fn adm_values(out: &str, label: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.split_once(" = "))
        .filter(|(head, _)| head.rsplit(": ").next().map(str::trim) == Some(label))
        .map(|(_, v)| v.trim().trim_matches('"').to_string())
        .collect()
}

/// Issue 11: a stranger (a source never registered) deregisters or replaces another node's
/// entity. The target registers in iSNS; a stranger from 127.0.0.10 sends a DevDereg of the
/// target's entity and a DevAttrReg with the Replace flag adding portal 127.0.0.66 to it:
/// both must be refused (status 6 or 8) and the registry must be unchanged.
#[test]
fn stranger_cannot_deregister_or_replace_a_target_entity() {
    let _serial = serial();
    let server = IsnsServer::start();
    let t = Target::start("16M", None, Some(server.addr));
    let registered = wait_for(Duration::from_secs(15), || {
        t.isns_registered().then_some(())
    });
    assert!(registered.is_some(), "target did not register in iSNS");
    let before = server.query(IQN);
    assert!(
        before.ok && before.stdout.contains(IQN),
        "{}",
        before.stdout
    );
    let entity = adm_values(&before.stdout, "Entity identifier")
        .pop()
        .unwrap_or_else(|| panic!("no entity identifier in:\n{}", before.stdout));
    let own_portals = |out: &str| {
        let mut v: Vec<String> = adm_values(out, "Portal IP address")
            .into_iter()
            .zip(adm_values(out, "Portal TCP/UDP port"))
            .map(|(ip, port)| format!("{ip}:{}", port.trim_end_matches("/tcp")))
            .collect();
        v.sort();
        v
    };
    let expected: Vec<String> = t.portals.iter().map(SocketAddr::to_string).collect();
    assert_eq!(own_portals(&before.stdout), expected, "{}", before.stdout);

    let stranger = "iqn.2024-01.test:stranger";
    let mut s = connect_from(stranger_addr(), server.addr, None);
    let dereg = isns_call(&mut s, request::entity_dereg(stranger, &entity), 1);
    let mut replace = Message::request(
        FunctionId::DEV_ATTR_REG,
        0,
        Attribute::string(tag::ISCSI_NAME, stranger),
        vec![Attribute::string(tag::ENTITY_IDENTIFIER, &entity)],
        vec![
            Attribute::string(tag::ENTITY_IDENTIFIER, &entity),
            Attribute::u32(tag::ENTITY_PROTOCOL, 2),
            Attribute::ip(
                tag::PORTAL_IP_ADDRESS,
                IpAddr::V4(Ipv4Addr::new(127, 0, 0, 66)),
            ),
            Attribute::tcp_port(tag::PORTAL_PORT, 3260),
        ],
    );
    replace.flags = replace.flags | Flags::REPLACE;
    let replaced = isns_call(&mut s, replace, 2);
    eprintln!(
        "stranger DevDereg: status {:?}; DevAttrReg+Replace: status {:?}",
        dereg.status, replaced.status
    );
    let refused = |m: &Message| {
        matches!(
            m.status,
            Some(Status::SOURCE_UNKNOWN | Status::SOURCE_UNAUTHORIZED)
        )
    };
    assert!(
        refused(&dereg),
        "stranger's DevDereg of {entity}: status {:?}",
        dereg.status
    );
    assert!(
        refused(&replaced),
        "stranger's DevAttrReg with Replace of {entity}: status {:?}",
        replaced.status
    );

    let after = server.query(IQN);
    assert!(
        after.ok && after.stdout.contains(IQN),
        "target gone from the registry:\n{}",
        after.stdout
    );
    assert_eq!(
        adm_values(&after.stdout, "Entity identifier"),
        [entity.as_str()],
        "{}",
        after.stdout
    );
    assert_eq!(
        own_portals(&after.stdout),
        expected,
        "the target's portals after the stranger's requests:\n{}",
        after.stdout
    );
    let all = server.isnsadm(&["--list", "portals"]);
    assert!(all.ok, "isnsadm --list portals: {}", all.stderr);
    assert!(
        !all.stdout.contains("127.0.0.66"),
        "the stranger's portal was registered:\n{}",
        all.stdout
    );
}

/// Issue 11: one address fills the registry by registering entities under a new name each
/// time. From 127.0.0.10, 200 DevAttrRegs of new entities with new source names: beyond the
/// per-address quota (64) they are refused with status 3; a real target registering from
/// 127.0.0.1 afterwards is still registered.
#[test]
fn registration_flood_under_rotating_names_is_capped_per_address() {
    let _serial = serial();
    let server = IsnsServer::start();
    let mut s = connect_from(stranger_addr(), server.addr, None);
    let (mut ok, mut refused, mut other) = (0usize, 0usize, Vec::new());
    let started = Instant::now();
    for i in 0..200u16 {
        let reg = isns::Registration {
            entity: format!("flood{i}"),
            portals: vec![SocketAddr::from(([127, 0, 0, 10], 4000 + i))],
            nodes: vec![isns::NodeRegistration {
                name: format!("iqn.2024-01.test:flood{i}"),
                node_type: isns::NodeType::Target,
                alias: None,
            }],
            replace: true,
            ..isns::Registration::default()
        };
        let req = request::dev_attr_reg(&reg).expect("registration with a node");
        let resp = isns_call(&mut s, req, i + 1);
        match resp.status {
            Some(Status::SUCCESS) => ok += 1,
            Some(Status::INVALID_REGISTRATION) => refused += 1,
            st => other.push((i, st)),
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "registration flood too slow"
        );
    }
    eprintln!(
        "registration flood: {ok} accepted, {refused} refused (status 3), other {other:?}, in {:?}",
        started.elapsed()
    );
    assert!(
        refused > 0,
        "200 entities from one address under rotating names: none refused ({ok} accepted)"
    );
    assert!(
        ok <= 64,
        "{ok} entities accepted from one address (quota 64)"
    );
    assert!(other.is_empty(), "unexpected statuses: {other:?}");

    let t = Target::start("16M", None, Some(server.addr));
    let registered = wait_for(Duration::from_secs(15), || {
        t.isns_registered().then_some(())
    });
    assert!(
        registered.is_some(),
        "target not registered after the flood: {:?}",
        snapshot(t.admin).isns_contact
    );
    let q = server.query(IQN);
    assert!(
        q.ok && q.stdout.contains(IQN),
        "target not in the registry:\n{}",
        q.stdout
    );
}

/// Issue 11: connections to the admin endpoint take the portals' descriptors. With a hard
/// descriptor limit of 1,024, 1,100 idle connections are attempted to the admin endpoint at
/// once (those it does not accept wait in the kernel's backlog or keep retrying their SYNs);
/// meanwhile an initiator must log in through a portal within 2 s.
#[test]
fn admin_flood_under_fd_limit_does_not_lock_out_an_initiator() {
    let _serial = serial();
    let t = Target::start("16M", Some(FD_LIMIT), None);
    let started = Instant::now();
    let attack = Flood::start(t.admin, 1100, Duration::from_secs(8));
    // Until the endpoint and its backlog are full: no new connection between two polls.
    let mut last = 0;
    let settled = wait_for(Duration::from_secs(5), || {
        let now = attack.established();
        let stable = now > 0 && now == last;
        last = now;
        stable.then_some(now)
    });
    let established = attack.established();
    eprintln!(
        "admin flood: {established} of 1100 connections established after {:?} (settled: {})",
        started.elapsed(),
        settled.is_some()
    );
    // The endpoint accepts 32 at a time and the kernel queues a backlog beyond them.
    assert!(
        established >= 100,
        "the flood itself failed: only {established} connections"
    );
    assert_inq_fast(&t, "1,100 idle connections to the admin endpoint");
    let conns = attack.finish();
    eprintln!(
        "admin flood: {} connections established in all after {:?}",
        conns.len(),
        started.elapsed()
    );
}
