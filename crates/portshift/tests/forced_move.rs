//! Acceptance: a host that ignores the balancer's logout request is dropped after Time2Logout
//! and counted as a forced move — over real sockets, against the real binaries.
//!
//! `portshift isns` and `portshift target` with two portals (127.0.0.1:P, 127.0.0.2:P), one
//! LUN, `--balance sessions:2` and `--pin` for the bystander. Two raw sessions (our own PDUs,
//! built with the workspace's codecs, `common::raw`) log in through the first portal: the
//! pinned bystander, then the host under test. The first portal is then at HIGH and the host
//! is the only session the balancer may move (the second portal, with it, stays under HIGH):
//! the choice is deterministic.
//!
//! The host answers NOP-In pings and otherwise does nothing: it ignores the Async Message
//! AsyncEvent 1 "logout requested" (RFC 7143 §11.9.1). The test asserts that
//! - the request arrives, with a Parameter3 (Time2Logout) equal to the one the target's event
//!   log gives the forced move;
//! - the target announces the drop with AsyncEvent 2 "target will drop this connection"
//!   (Parameter2 DefaultTime2Wait, Parameter3 DefaultTime2Retain, as negotiated) and then
//!   closes the connection, both no earlier than Time2Logout plus the target's grace
//!   (`LOGOUT_GRACE`) after the request, less [`EARLY_SLACK`], and within [`LATE_SLACK`] of it;
//! - the admin snapshot counts one logout request and one forced move, its event log has one
//!   `logout_requested` and one `forced_move` for the host from the first portal to the second
//!   (and none for the bystander), and `portshift status` prints them;
//! - the bystander is still connected, and the host's next login on the first portal is
//!   redirected to the second.
//!
//! Every wait has a deadline. Loopback only, ports picked free at run time, files in a
//! temporary directory.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use balancer::{AdminSnapshot, Event, EventKind, PortalId};
use common::raw::{Login, RawSession, Received};
use common::{TwoPortalTarget, snapshot, status};
use iscsi_proto::{Pdu, async_event};
use iscsi_target_core::connection::LOGOUT_GRACE;

const TARGET: &str = "iqn.2024-01.test.forced:disk";
/// The host that ignores the logout request.
const IGNORER: &str = "iqn.2024-01.test.forced:ignorer";
/// A pinned host that keeps the first portal at HIGH.
const BYSTANDER: &str = "iqn.2024-01.test.forced:bystander";
/// Longest the balancer may take to ask for the move (it runs every second).
const ASK_LIMIT: Duration = Duration::from_secs(15);
/// How much earlier than its deadline the drop may be seen (the target starts the clock when
/// it queues the request; we stop ours when we have read it).
const EARLY_SLACK: Duration = Duration::from_millis(100);
/// How much later than its deadline the drop may come: the portal checks its connections'
/// timers on a 1 s tick, plus scheduling on a loaded machine.
const LATE_SLACK: Duration = Duration::from_secs(4);
/// Slack between the target's event timestamps and ours (same wall clock, but we read ours
/// after the PDU crossed the socket and the target writes its event after queuing it).
const CLOCK_SLACK_MS: u64 = 1_000;

fn connect(to: SocketAddr) -> TcpStream {
    TcpStream::connect_timeout(&to, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect to {to}: {e}"))
}

/// A PDU the host reads after login: answers a ping (and reads on), or returns anything else.
/// Panics on the close or the deadline, naming `waiting_for`.
fn next_pdu(host: &mut RawSession, deadline: Instant, waiting_for: &str) -> (Pdu, Instant) {
    loop {
        match host.recv_before(deadline) {
            Received::Pdu(Pdu::NopIn(ping)) => {
                host.answer_ping(&ping);
            }
            Received::Pdu(p) => return (p, Instant::now()),
            Received::Closed => panic!("the target closed the connection before {waiting_for}"),
            Received::TimedOut => panic!("no {waiting_for} by the deadline"),
        }
    }
}

fn portal_id(snap: &AdminSnapshot, address: &str) -> PortalId {
    snap.table
        .portals
        .iter()
        .find(|p| p.address == address)
        .unwrap_or_else(|| panic!("no portal {address} in {:?}", snap.table.portals))
        .id
}

fn events_of<'a>(snap: &'a AdminSnapshot, label: &str, initiator: &str) -> Vec<&'a Event> {
    snap.events
        .iter()
        .filter(|e| e.kind.label() == label)
        .filter(|e| match &e.kind {
            EventKind::LogoutRequested { initiator: i, .. }
            | EventKind::ForcedMove { initiator: i, .. } => i == initiator,
            _ => false,
        })
        .collect()
}

#[test]
fn a_host_ignoring_the_logout_request_is_dropped_and_counted_as_forced() {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = TwoPortalTarget::start(
        dir.path(),
        &[TARGET],
        "16M",
        &[
            "--balance",
            "sessions:2",
            "--pin",
            BYSTANDER,
            "--cooldown",
            "1",
        ],
    );
    let [p0, p1] = &stack.portals;
    let admin = stack.admin;
    let p0_addr: SocketAddr = p0.parse().expect("portal address");

    let mut bystander = RawSession::login(connect(p0_addr), BYSTANDER, TARGET);
    let mut host = RawSession::login(connect(p0_addr), IGNORER, TARGET);

    // 1. The logout request.
    let (pdu, asked_at) = next_pdu(&mut host, Instant::now() + ASK_LIMIT, "the logout request");
    let asked_ms = balancer::clock::unix_ms();
    let Pdu::AsyncMessage(request) = pdu else {
        panic!("expected the Async Message, got {:?}", pdu.opcode())
    };
    assert_eq!(
        request.async_event,
        async_event::LOGOUT_REQUESTED,
        "{request:?}"
    );
    let time2logout = request.parameter3;
    assert!(time2logout > 0, "Time2Logout 0 in {request:?}");
    host.exp_stat_sn = request.stat_sn.wrapping_add(1);
    eprintln!(
        "logout requested {:.1} s after the start, Time2Logout {time2logout} s",
        started.elapsed().as_secs_f64()
    );

    // 2. Ignored: the target announces the drop, then closes.
    let due = asked_at + Duration::from_secs(time2logout.into()) + LOGOUT_GRACE;
    let (pdu, announced_at) = next_pdu(&mut host, due + LATE_SLACK, "AsyncEvent 2");
    let Pdu::AsyncMessage(drop) = pdu else {
        panic!("expected AsyncEvent 2, got {:?}", pdu.opcode())
    };
    assert_eq!(drop.async_event, async_event::CONNECTION_DROP, "{drop:?}");
    assert_eq!(
        (drop.parameter2, drop.parameter3),
        (
            host.params.default_time2wait,
            host.params.default_time2retain
        ),
        "AsyncEvent 2 carries Time2Wait and Time2Retain: {drop:?}"
    );
    let closed_at = match host.recv_before(due + LATE_SLACK) {
        Received::Closed => Instant::now(),
        Received::Pdu(p) => panic!("a PDU after AsyncEvent 2: {p:?}"),
        Received::TimedOut => panic!("AsyncEvent 2 but no close within {LATE_SLACK:?}"),
    };
    let waited = closed_at - asked_at;
    eprintln!(
        "AsyncEvent 2 {:.3} s and close {:.3} s after the request (due after {:.3} s)",
        (announced_at - asked_at).as_secs_f64(),
        waited.as_secs_f64(),
        (due - asked_at).as_secs_f64()
    );
    assert!(
        announced_at + EARLY_SLACK >= due,
        "AsyncEvent 2 {:?} after the request, before Time2Logout {time2logout} s + grace \
         {LOGOUT_GRACE:?}",
        announced_at - asked_at
    );
    assert!(closed_at >= announced_at);

    // 3. The target's records. The session's end reaches the control plane just after the close.
    let snap = common::wait_for(Duration::from_secs(5), || {
        let s = snapshot(admin);
        (s.forced_moves > 0).then_some(s)
    })
    .unwrap_or_else(|| panic!("no forced move counted:\n{}", status(admin, false)));
    let text = status(admin, false);
    assert_eq!(
        (snap.logout_requests, snap.forced_moves),
        (1, 1),
        "logout requests, forced moves:\n{text}"
    );
    let (from, to) = (portal_id(&snap, p0), portal_id(&snap, p1));
    let requested = events_of(&snap, "logout-requested", IGNORER);
    let [req] = requested[..] else {
        panic!("one logout request for {IGNORER} expected:\n{text}")
    };
    assert!(
        matches!(&req.kind, EventKind::LogoutRequested { target, from: f, to: t, .. }
            if target == TARGET && *f == from && *t == to),
        "{req:?}"
    );
    assert!(
        req.at_ms <= asked_ms + CLOCK_SLACK_MS && asked_ms <= req.at_ms + CLOCK_SLACK_MS,
        "the target logged the request at {} ms, the host read it at {asked_ms} ms",
        req.at_ms
    );
    let forced = events_of(&snap, "forced-move", IGNORER);
    let [forced] = forced[..] else {
        panic!("one forced move for {IGNORER} expected:\n{text}")
    };
    let EventKind::ForcedMove {
        target,
        from: f,
        to: t,
        time2logout: logged_time2logout,
        waited_ms,
        ..
    } = &forced.kind
    else {
        unreachable!("filtered by label")
    };
    assert_eq!(
        (target.as_str(), *f, *t),
        (TARGET, from, Some(to)),
        "{forced:?}"
    );
    assert_eq!(
        *logged_time2logout, time2logout,
        "the Time2Logout the host was sent and the one the target logged"
    );
    let allowed = Duration::from_secs(time2logout.into()) + LOGOUT_GRACE;
    let waited_ms = Duration::from_millis(*waited_ms);
    assert!(
        waited_ms >= allowed && waited_ms <= allowed + LATE_SLACK,
        "the target waited {waited_ms:?} (Time2Logout + grace {allowed:?})"
    );
    assert!(
        waited + EARLY_SLACK >= waited_ms && waited <= waited_ms + LATE_SLACK,
        "the target says it waited {waited_ms:?}, the host saw the close after {waited:?}"
    );
    assert!(
        events_of(&snap, "logout-requested", BYSTANDER).is_empty()
            && events_of(&snap, "forced-move", BYSTANDER).is_empty(),
        "the pinned host was asked to move:\n{text}"
    );
    assert!(
        text.contains("1 logout requested, 1 forced"),
        "status does not count the forced move:\n{text}"
    );
    let line = text
        .lines()
        .find(|l| l.contains("FORCED MOVE") && l.contains(IGNORER))
        .unwrap_or_else(|| panic!("status shows no forced move of {IGNORER}:\n{text}"));
    assert!(
        line.contains(&format!("Time2Logout {time2logout} s")),
        "{line}"
    );

    // 4. The bystander was left alone; the host's next login on the old portal is redirected.
    match bystander.recv_before(Instant::now() + Duration::from_millis(200)) {
        Received::TimedOut | Received::Pdu(Pdu::NopIn(_)) => {}
        other => panic!("the pinned host got {other:?}"),
    }
    match RawSession::try_login(connect(p0_addr), IGNORER, TARGET) {
        Login::Redirected(address) => assert_eq!(&address.to_string(), p1),
        Login::Done(_) => panic!("the dropped host logged in on {p0} again, not redirected"),
    }
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
}
