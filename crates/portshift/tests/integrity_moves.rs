//! Acceptance: integrity under many moves, driven by each kind of load figure.
//!
//! `portshift isns`, `portshift target` with two portals (127.0.0.1:P, 127.0.0.2:P), a
//! `--balance` rule with `--cooldown 1`, and four `portshift io --verify` hosts that find their
//! target through iSNS and leave voluntarily every second (`--reconnect-every 1s`), so they keep
//! landing on the portal iSNS lists first and the balancer keeps moving them: Async Message
//! "logout requested" (RFC 7143 §11.9.1) after deleting the (target, hot portal) Portal Group in
//! iSNS (RFC 4171), restored once the portal's load is back at the low mark. One run per rule:
//! - sessions:3 (the patent's example: three sessions on a portal is too many, two is fine);
//! - bandwidth: each host paced to about a third of the link (`--rate-iops`, half reads, so
//!   about a third each way): three on a portal are over HIGH, two under LOW;
//! - cpu: each host paced to a fixed command rate, so each adds about the same work to the
//!   portal's processor; HIGH and LOW between what two and three hosts cost it, measured in
//!   the run (`cpu_marks`).
//!
//! The measured rules decide on smoothed figures: the target runs with `--smoothing 500ms`, so a
//! portal's figures follow its hosts within a few seconds (the default 5 s would take ten
//! times as long per move).
//!
//! Each host has its own target (t1..t4, one LUN each), as hosts with their own volumes do. That
//! is what makes the moves separable: the balancer deletes the (target, portal) registration of
//! the host it moves, so only that host is steered away from the hot portal. With one shared
//! target, one deletion would steer every reconnecting host to the other portal at once and pile
//! them up there, where no move is possible until the registration comes back.
//!
//! Once the target has requested enough logouts the hosts get SIGINT (bounded by
//! [`RUN_LIMIT`] in any case). Then: every host exits 0 with zero I/O errors and zero mismatches,
//! reads were verified, at least the rule's minimum of moves, every logout request was made by
//! the rule's metric, and the target's `logout_requested` events and the hosts' reported moves
//! correspond one for one (same host, same from → to portal). The runs take turns (a lock), so
//! one run's hosts do not load the processors another run measures.
//!
//! Loopback only, ports picked free at run time, files in a temporary directory.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use balancer::{AdminSnapshot, Event, EventKind, PortalId};
use common::{Proc, TwoPortalTarget, portshift, snapshot, wait_for};
use initiator::{ReconnectCause, WorkloadReport};

const HOSTS: usize = 4;
/// Stop the hosts once the target has requested this many logouts more than the rule's
/// minimum of moves (a margin for requests a host could not see, see `match_moves`).
const STOP_MARGIN: usize = 4;
/// Longest the hosts run before they are stopped regardless. Runs normally stop well before it
/// (at the rule's minimum plus the margin: the cpu rule's 54 requests in 178 s on a quiet
/// machine, the bandwidth rule's in about 100 s); a full test run on a loaded 2-core machine
/// once made 49 of the cpu rule's 50 moves in 200 s.
const RUN_LIMIT: Duration = Duration::from_secs(400);
/// One run at a time (see the module comment).
static TURN: Mutex<()> = Mutex::new(());
/// Longest a host may take to finish after SIGINT (in-flight I/O, logout, report).
const EXIT_LIMIT: Duration = Duration::from_secs(30);
/// Slack between the target's and the hosts' millisecond timestamps (same clock; the target
/// logs an event just after queuing the Async Message, so the host may see it a little earlier).
const CLOCK_SLACK_MS: u64 = 5;
/// A requested move must have been acted on within this long. Time2Logout is 2 s, but a host
/// starved of CPU on a loaded 2-core machine can see the request later; the request stays
/// pending in the balancer for 15 s, so a later one for the same session cannot come sooner.
const ACT_WITHIN_MS: u64 = 10_000;

fn target_name(i: usize) -> String {
    format!("iqn.2024-01.test.h7:t{}", i + 1)
}

fn host_name(i: usize) -> String {
    format!("iqn.2024-01.test.h7:host{}", i + 1)
}

/// (host, from, to, at_ms, reason) of a `logout_requested` event, with portals as addresses.
type Request = (String, String, String, u64, String);

/// One run: the target's balancing rule and link speed, the hosts' pacing, the moves needed.
struct Rule {
    /// `--balance` value; `cpu` alone: marks measured by [`cpu_marks`].
    balance: &'static str,
    /// `speed=` of each portal, if any.
    speed: Option<&'static str>,
    /// Extra `portshift io` arguments.
    host_args: &'static [&'static str],
    /// Moves the run must see.
    min_moves: usize,
}

/// The target's event log, gathered across polls: the target keeps only its most recent events
/// (a bounded log), so the test reads it often and keeps every event once, in order.
#[derive(Default)]
struct EventTrail {
    events: Vec<Event>,
    portals: HashMap<PortalId, String>,
}

impl EventTrail {
    /// Adds the events of `snap` not seen yet; panics on a gap (events dropped between polls).
    fn add(&mut self, snap: &AdminSnapshot) {
        for p in &snap.table.portals {
            self.portals.insert(p.id, p.address.clone());
        }
        let last = self.events.last().map_or(0, |e| e.seq);
        for e in snap.events.iter().filter(|e| e.seq > last) {
            let expected = self.events.last().map_or(1, |l| l.seq + 1);
            assert_eq!(
                e.seq, expected,
                "the target's event log dropped events between polls"
            );
            self.events.push(e.clone());
        }
    }

    /// The events naming `initiator`, and registration changes, within 3 s of `at_ms`.
    fn around(&self, initiator: &str, at_ms: u64) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| e.at_ms.abs_diff(at_ms) <= 3_000)
            .filter(|e| {
                let k = serde_json::to_string(&e.kind).unwrap_or_default();
                k.contains(initiator) || k.contains("registration")
            })
            .map(|e| format!("{} {:?} {}", e.at_ms, e.kind, e.reason))
            .collect()
    }

    fn logout_requests(&self) -> Vec<Request> {
        let address = |id| {
            self.portals
                .get(&id)
                .cloned()
                .unwrap_or_else(|| format!("unknown portal {id}"))
        };
        self.events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::LogoutRequested {
                    initiator,
                    from,
                    to,
                    ..
                } => Some((
                    initiator.clone(),
                    address(*from),
                    address(*to),
                    e.at_ms,
                    e.reason.clone(),
                )),
                _ => None,
            })
            .collect()
    }
}

/// Matches the target's logout requests for one host against the host's report, in order.
/// Returns the requests the host could not have seen (see the tolerance below); panics on
/// anything else that does not correspond.
fn match_moves(host: &str, requests: &[&Request], report: &WorkloadReport) -> Vec<Request> {
    let mut moves = report.moves.iter().peekable();
    let mut voluntary: Vec<_> = report
        .reconnects
        .iter()
        .filter(|r| r.cause == ReconnectCause::Voluntary)
        .collect();
    let mut unseen = Vec::new();
    for (k, &req) in requests.iter().enumerate() {
        let (_, from, to, at, _) = req;
        // The next request is for a later session, so the host saw this one before it was
        // made. (Not necessarily before the host had noted its new login: the target may ask
        // a session to leave as soon as it has answered the login.)
        let next = requests.get(k + 1).map_or(u64::MAX, |r| r.3);
        let matches = moves.peek().is_some_and(|m| {
            m.from.to_string() == *from
                && m.to.to_string() == *to
                && m.at_ms + CLOCK_SLACK_MS >= *at
                && m.at_ms <= at + ACT_WITHIN_MS
                && m.at_ms <= next
        });
        if matches {
            moves.next();
            continue;
        }
        // Tolerance: the target queues "logout requested" for a session that is, at that very
        // moment, already ending on the host's own initiative — a voluntary reconnect that had
        // drained and sent its Logout, or the final logout after SIGINT. The target logs the
        // request (its session was still in the table), but the Async Message never reaches the
        // host, which closes on the Logout Response. (A request that does arrive while the host
        // is draining is reported as a move, and matched above.) So a request is excused only
        // when it falls inside one voluntary logout of this host from the same portal — between
        // the logout's start and the next login — each logout excusing at most one request, or
        // after the host's I/O phase ended.
        let excused = voluntary.iter().position(|r| {
            r.from.to_string() == *from
                && r.at_ms <= at + CLOCK_SLACK_MS
                && *at <= r.at_ms + r.pause_ms + CLOCK_SLACK_MS
        });
        if let Some(i) = excused {
            voluntary.remove(i);
        } else if *at + CLOCK_SLACK_MS < report.ended_at_ms {
            // First on stdout: a failure's report shows the start of it.
            let near: Vec<_> = report
                .moves
                .iter()
                .filter(|m| m.at_ms.abs_diff(*at) <= 30_000)
                .collect();
            println!(
                "MISMATCH {host}: request {k} {from} -> {to} at {at} not matched; next request \
                 at {next}; the host's moves within 30 s: {near:?}"
            );
            panic!(
                "{host}: the target requested a logout {from} -> {to} at {at} that the host \
                 does not list as a move: moves {:?}, reconnects {:?}",
                report.moves, report.reconnects
            );
        }
        unseen.push(req.clone());
    }
    let rest: Vec<_> = moves.collect();
    assert!(
        rest.is_empty(),
        "{host}: moves the target never requested: {rest:?} (requests {requests:?})"
    );
    unseen
}

#[test]
fn four_verifying_hosts_survive_many_moves_by_sessions() {
    run(Rule {
        balance: "sessions:3",
        speed: None,
        host_args: &["--queue-depth", "4"],
        min_moves: 20,
    });
}

/// Each host: 200 I/Os of 16 KiB per second, half of them reads: about 1.6 MB/s each way,
/// 33% of a 40 Mbit/s link. Two hosts on a portal make 66% (at or under LOW), three 98% (over
/// HIGH); a moved host adds 33% to a portal that had one host.
#[test]
fn four_verifying_hosts_survive_many_moves_by_bandwidth() {
    run(Rule {
        balance: "bandwidth:85%:72%",
        speed: Some("40Mbit"),
        host_args: &[
            "--queue-depth",
            "4",
            "--blocks-per-io",
            "32",
            "--rate-iops",
            "200",
        ],
        min_moves: 50,
    });
}

/// Each host: 4,500 commands of 4 KiB per second. What that costs the portal's processor
/// depends on the build and the machine (in a release build on this 2-core machine, after the
/// mapped reads: 1,500 cost about 4% of it, too little above the noise of the measured figures
/// — 34 moves in 300 s on a quiet machine —, 3,000 about 8.6%: 54 moves in 255 s; 4,500 about
/// 8%: 54 in 178 s), so the marks come from a measurement of this run (`cpu_marks`). On CI
/// (loaded, 2 cores) marks scaled from the four hosts' figure stalled the run: 37 moves in
/// 400 s, with pauses of up to 131 s in which two hosts stayed over LOW.
#[test]
fn four_verifying_hosts_survive_many_moves_by_cpu() {
    run(Rule {
        balance: "cpu",
        speed: None,
        host_args: &[
            "--queue-depth",
            "4",
            "--blocks-per-io",
            "8",
            "--rate-iops",
            "4500",
        ],
        min_moves: 50,
    });
}

/// Starts iSNS and the two-portal target (one LUN per host) in `dir` with `balance` (plus a
/// 500 ms smoothing and a 1 s cooldown); returns once iSNS lists both portals for every target.
fn start_stack(dir: &Path, balance: &str, speed: Option<&str>) -> TwoPortalTarget {
    let names: Vec<String> = (0..HOSTS).map(target_name).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let args = [
        "--balance",
        balance,
        "--smoothing",
        "500ms",
        "--cooldown",
        "1",
    ];
    let stack = TwoPortalTarget::start_with_speed(dir, &names, "16M", speed, &args);
    // Every target is listed by iSNS, through the first portal first.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for i in 0..HOSTS {
        let mut listed = Vec::new();
        let all = wait_for(Duration::from_secs(15), || {
            listed = rt
                .block_on(initiator::discovery::isns_portals(
                    stack.isns,
                    "iqn.2024-01.test.h7:probe",
                    &target_name(i),
                    Duration::from_secs(2),
                ))
                .unwrap_or_default()
                .iter()
                .map(|p| p.to_string())
                .collect();
            (listed == stack.portals).then_some(())
        });
        assert!(
            all.is_some(),
            "iSNS never listed {:?} for {}: {listed:?}",
            stack.portals,
            target_name(i)
        );
    }
    stack
}

/// Starts the verifying hosts `which` (of the four; reports and errors in `dir`); SIGINT stops
/// them.
fn start_hosts(
    dir: &Path,
    isns: SocketAddr,
    host_args: &[&str],
    which: std::ops::Range<usize>,
) -> Vec<Proc> {
    which
        .map(|i| {
            let args = [
                "io",
                "--isns",
                &isns.to_string(),
                "--target",
                &target_name(i),
                "--initiator-name",
                &host_name(i),
                "--verify",
                "--json",
                // Longer than the run: SIGINT is what stops them.
                "--duration",
                &format!("{}s", RUN_LIMIT.as_secs() + 60),
                "--reconnect-every",
                "1s",
            ]
            .into_iter()
            .chain(host_args.iter().copied())
            .map(String::from)
            .collect::<Vec<_>>();
            portshift(
                &args,
                &dir.join(format!("io{i}.json")),
                &dir.join(format!("io{i}.err")),
            )
        })
        .collect()
}

/// Panics if a host has exited.
fn check_running(dir: &Path, hosts: &mut [Proc]) {
    for (i, h) in hosts.iter_mut().enumerate() {
        if let Ok(Some(status)) = h.0.try_wait() {
            panic!(
                "host {} exited early ({status}): {}",
                i + 1,
                std::fs::read_to_string(dir.join(format!("io{i}.err"))).unwrap_or_default()
            );
        }
    }
}

/// Stops the hosts with SIGINT; each must exit 0 with a JSON report, returned in order.
fn stop_hosts(dir: &Path, hosts: &mut [Proc]) -> Vec<WorkloadReport> {
    for h in hosts.iter() {
        let pid = h.0.id().to_string();
        let sent = Command::new("kill").args(["-INT", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -INT {pid} failed");
    }
    let deadline = Instant::now() + EXIT_LIMIT;
    let mut reports = Vec::new();
    for (i, h) in hosts.iter_mut().enumerate() {
        let status = loop {
            if let Some(s) = h.0.try_wait().expect("wait") {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "host {} did not exit after SIGINT",
                i + 1
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let out = std::fs::read_to_string(dir.join(format!("io{i}.json"))).unwrap_or_default();
        let err = std::fs::read_to_string(dir.join(format!("io{i}.err"))).unwrap_or_default();
        assert!(
            status.success(),
            "host {} exited with {status}:\n{out}\n{err}",
            i + 1
        );
        let report: WorkloadReport = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("host {}: report is not JSON ({e}):\n{out}", i + 1));
        reports.push(report);
    }
    reports
}

/// The cpu rule's marks, from what the hosts cost the processor here. The rule needs three
/// hosts on a portal at or over HIGH and two at or under LOW (then the deleted registrations
/// come back and the hosts return to the first portal, to be moved again). What n hosts cost
/// is not n times one host's cost: a portal's processor spends less per command when it
/// serves more (its replies share system calls) and waits to run more when the machine is
/// busier, so a mark set from one figure scaled by counts stalls the run (two hosts stay over
/// LOW, the registrations never come back). So the marks come from the two figures that
/// matter, measured in this run with no move possible (`cpu:99%`): the portal's processor
/// demand (CPU time plus time waiting to run) with two hosts on it, `d2`, and with three,
/// `d3`. LOW is 45% and HIGH 55% of the way from `d2` to `d3`: the figures' noise has about
/// as much room on either side.
fn cpu_marks(dir: &Path, host_args: &[&str]) -> String {
    let dir = dir.join("calibration");
    std::fs::create_dir_all(&dir).expect("calibration dir");
    let stack = start_stack(&dir, "cpu:99%:98%", None);
    let mut hosts = start_hosts(&dir, stack.isns, host_args, 0..2);
    let d2 = mean_demand(&dir, &stack, &mut hosts);
    hosts.extend(start_hosts(&dir, stack.isns, host_args, 2..3));
    let d3 = mean_demand(&dir, &stack, &mut hosts);
    for r in stop_hosts(&dir, &mut hosts) {
        assert!(r.ok(), "calibration host: {r:?}");
    }
    let (low, high) = (d2 + 0.45 * (d3 - d2), d2 + 0.55 * (d3 - d2));
    println!(
        "cpu: two hosts cost {:.1}% of a processor here, three {:.1}%; marks {:.1}% / {:.1}%",
        100.0 * d2,
        100.0 * d3,
        100.0 * high,
        100.0 * low
    );
    assert!(
        d3 - d2 >= 0.02,
        "a third host adds only {:.1}% to the processor's demand: too close to the figures' \
         noise for the cpu rule to tell two hosts from three",
        100.0 * (d3 - d2)
    );
    assert!(high < 0.99, "three hosts already cost {:.1}%", 100.0 * d3);
    format!("cpu:{:.1}%:{:.1}%", 100.0 * high, 100.0 * low)
}

/// The first portal's mean processor demand once every host of `hosts` has been on it for a
/// while (at least three half-second samples in which exactly they were logged in, all on the
/// first portal).
fn mean_demand(dir: &Path, stack: &TwoPortalTarget, hosts: &mut [Proc]) -> f64 {
    std::thread::sleep(Duration::from_secs(4));
    let mut demand = Vec::new();
    for _ in 0..8 {
        std::thread::sleep(Duration::from_millis(500));
        check_running(dir, hosts);
        let snap = snapshot(stack.admin);
        let sessions: usize = snap.table.portals.iter().map(|p| p.sessions.len()).sum();
        let p0 = &snap.table.portals[0];
        if sessions == hosts.len() && p0.sessions.len() == hosts.len() {
            demand.push(p0.load.cpu_busy + p0.load.cpu_wait);
        }
    }
    assert!(
        demand.len() >= 3,
        "the {} hosts were rarely all on the first portal: {demand:?}",
        hosts.len()
    );
    demand.iter().sum::<f64>() / demand.len() as f64
}

fn run(rule: Rule) {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let balance = match rule.balance {
        "cpu" => cpu_marks(dir.path(), rule.host_args),
        b => b.to_string(),
    };
    let stack = start_stack(dir.path(), &balance, rule.speed);
    let (portals, isns, admin) = (stack.portals.clone(), stack.isns, stack.admin);

    let started = Instant::now();
    let mut hosts = start_hosts(dir.path(), isns, rule.host_args, 0..HOSTS);

    // Let them run until the target has requested enough logouts (or the time is up).
    let mut trail = EventTrail::default();
    let mut requested = 0;
    while started.elapsed() < RUN_LIMIT && requested < rule.min_moves + STOP_MARGIN {
        std::thread::sleep(Duration::from_millis(500));
        check_running(dir.path(), &mut hosts);
        trail.add(&snapshot(admin));
        requested = trail.logout_requests().len();
    }
    let ran = started.elapsed();
    let reports = stop_hosts(dir.path(), &mut hosts);

    trail.add(&snapshot(admin));
    let requests = trail.logout_requests();
    let mut by_host: HashMap<&str, Vec<&Request>> = HashMap::new();
    for r in &requests {
        by_host.entry(r.0.as_str()).or_default().push(r);
    }

    let mut pauses = Vec::new();
    let mut unseen = Vec::new();
    for (i, r) in reports.iter().enumerate() {
        let host = host_name(i);
        assert_eq!(r.errors, 0, "{host}: I/O errors: {:?}", r.error_samples);
        assert_eq!(r.mismatches, 0, "{host}: mismatches: {:?}", r.error_samples);
        assert!(r.verified_reads > 0, "{host}: no read was verified: {r:?}");
        for m in &r.moves {
            assert_ne!(
                m.from,
                m.to,
                "{host}: a requested move that stayed put: {m:?}; the target's events for it \
                 then: {:#?}",
                trail.around(&host, m.at_ms)
            );
            assert!(
                portals.contains(&m.from.to_string()) && portals.contains(&m.to.to_string()),
                "{host}: move between unknown portals: {m:?}"
            );
            pauses.push(m.pause_ms);
        }
        let mine = by_host.get(host.as_str()).map(Vec::as_slice).unwrap_or(&[]);
        unseen.extend(match_moves(&host, mine, r));
    }
    let known: Vec<String> = (0..HOSTS).map(host_name).collect();
    let strangers: Vec<_> = requests.iter().filter(|r| !known.contains(&r.0)).collect();
    assert!(
        strangers.is_empty(),
        "logout requests for unknown hosts: {strangers:?}"
    );

    pauses.sort_unstable();
    let moves = pauses.len();
    let ios: u64 = reports.iter().map(|r| r.ios).sum();
    let verified: u64 = reports.iter().map(|r| r.verified_reads).sum();
    let voluntary: usize = reports.iter().map(|r| r.reconnects.len()).sum();
    println!(
        "{moves} moves in {:.1} s ({} logout requests, {} not seen by a host already leaving: \
         {unseen:?}); pause min {} / median {} / max {} ms; {voluntary} reconnects not \
         requested; {ios} I/Os, {verified} reads verified, 0 errors, 0 mismatches",
        ran.as_secs_f64(),
        requests.len(),
        unseen.len(),
        pauses.first().copied().unwrap_or(0),
        pauses.get(moves / 2).copied().unwrap_or(0),
        pauses.last().copied().unwrap_or(0),
    );
    let metric = balance.split(':').next().unwrap_or_default();
    let others: Vec<_> = requests
        .iter()
        .filter(|r| !r.4.starts_with(&format!("{metric} ")))
        .collect();
    assert!(
        others.is_empty(),
        "moves not made by the {metric} rule: {others:?}"
    );
    assert!(
        moves >= rule.min_moves,
        "only {moves} moves in {ran:?} (requests: {requests:?})"
    );
    assert!(
        unseen.len() <= requests.len() / 4,
        "too many logout requests unseen by the hosts: {unseen:?}"
    );
    // Last: a failure's report shows the start of stdout, which the summary above leads.
    println!("host   from -> to                          pause");
    for (i, r) in reports.iter().enumerate() {
        for m in &r.moves {
            println!("host{} {} -> {}  {:>5} ms", i + 1, m.from, m.to, m.pause_ms);
        }
    }
}

/// The checker itself: what it accepts and what it rejects.
mod checker {
    use super::*;
    use initiator::{MoveRecord, ReconnectRecord};

    const A: &str = "127.0.0.1:3260";
    const B: &str = "127.0.0.2:3260";

    fn req(at: u64) -> Request {
        ("h".into(), A.into(), B.into(), at, String::new())
    }

    fn report(moves: &[u64], voluntary: &[(u64, u64)], ended: u64) -> WorkloadReport {
        WorkloadReport {
            moves: moves
                .iter()
                .map(|&at_ms| MoveRecord {
                    at_ms,
                    from: A.parse().unwrap(),
                    to: B.parse().unwrap(),
                    pause_ms: 4,
                })
                .collect(),
            reconnects: voluntary
                .iter()
                .map(|&(at_ms, pause_ms)| ReconnectRecord {
                    at_ms,
                    from: A.parse().unwrap(),
                    to: B.parse().unwrap(),
                    cause: ReconnectCause::Voluntary,
                    pause_ms,
                })
                .collect(),
            ended_at_ms: ended,
            ..Default::default()
        }
    }

    #[test]
    fn one_for_one_and_the_two_excuses() {
        let (r1, r2, r3, r4) = (req(1000), req(2000), req(3000), req(9000));
        let reqs = [&r1, &r2, &r3, &r4];
        // Moves for 1000 and 3000; 2000 fell inside a voluntary logout (1990 + 20 ms); 9000
        // came after the I/O phase ended at 8000.
        let unseen = match_moves("h", &reqs, &report(&[1001, 3002], &[(1990, 20)], 8000));
        assert_eq!(unseen, vec![r2, r4]);
    }

    #[test]
    fn a_slow_host_still_matches_its_requests() {
        let (r1, r2) = (req(1000), req(1003));
        // The host saw the first request at 1001 but noted its new login (pause 4) only after
        // the target had asked the new session to leave at 1003; the second it saw 5 s late.
        let unseen = match_moves("h", &[&r1, &r2], &report(&[1001, 6003], &[], 9000));
        assert!(unseen.is_empty());
    }

    #[test]
    #[should_panic(expected = "does not list as a move")]
    fn a_move_seen_after_the_next_request_belongs_to_that_one() {
        // Seen at 2500, after the request at 2000: it cannot be the move for the one at 1000.
        let (r1, r2) = (req(1000), req(2000));
        match_moves("h", &[&r1, &r2], &report(&[2500], &[], 9000));
    }

    #[test]
    #[should_panic(expected = "does not list as a move")]
    fn a_request_without_a_move_or_excuse_fails() {
        let r = req(1000);
        match_moves("h", &[&r], &report(&[], &[(1500, 20)], 8000));
    }

    #[test]
    #[should_panic(expected = "never requested")]
    fn a_move_without_a_request_fails() {
        let r = req(1000);
        match_moves("h", &[&r], &report(&[1001, 5000], &[], 8000));
    }

    #[test]
    #[should_panic(expected = "does not list as a move")]
    fn a_move_to_the_wrong_portal_fails() {
        let r: Request = ("h".into(), A.into(), A.into(), 1000, String::new());
        match_moves("h", &[&r], &report(&[1001], &[], 8000));
    }
}
