//! The connection core and the control plane together, without sockets, on a virtual clock:
//! SendTargets agrees with the registrations the balancer holds deleted, and a session that
//! ignores a logout request is dropped and counted as a forced move.

use std::sync::Arc;
use std::time::{Duration, Instant};

use balancer::{BalancePolicy, Balancer, EventKind, PortalId};
use bytes::BytesMut;
use iscsi_proto::params::SessionType;
use iscsi_proto::text::TextPairs;
use iscsi_proto::{Digests, LoginRequest, LogoutRequest, Pdu, RESERVED_TAG, TextRequest};
use iscsi_target_core::connection::LOGOUT_GRACE;
use iscsi_target_core::control::PortalInfo;
use iscsi_target_core::{
    Action, BalanceLoop, Catalog, CatalogPortal, CatalogTarget, CloseReason, Connection,
    ControlPlane, Event, ScsiRequest, SessionCommand,
};

const P0: PortalId = PortalId(0);
const P1: PortalId = PortalId(1);
const T1: &str = "iqn.2024-01.test:t1";
const T2: &str = "iqn.2024-01.test:t2";
const A0: &str = "127.0.0.1:3260,1";
const A1: &str = "127.0.0.2:3260,2";

fn portals() -> Vec<PortalInfo> {
    vec![
        PortalInfo {
            id: P0,
            address: "127.0.0.1:3260".parse().unwrap(),
            tag: 1,
        },
        PortalInfo {
            id: P1,
            address: "127.0.0.2:3260".parse().unwrap(),
            tag: 2,
        },
    ]
}

/// A target process in memory: the control plane, the balancer loop and the catalog the
/// connection cores see, at a virtual time (`t0` + `ms`).
struct World {
    plane: ControlPlane,
    balance: BalanceLoop,
    catalog: Arc<Catalog>,
    t0: Instant,
    ms: u64,
}

/// One connection and what its shell knows of it.
struct Conn {
    conn: Connection,
    portal: PortalId,
    session: Option<u64>,
    digests: Digests,
}

impl World {
    /// Two portals, targets T1 and T2, `sessions:2`, cooldown 0.
    fn new() -> World {
        let policy = BalancePolicy::parse(&["sessions:2"])
            .unwrap()
            .with_cooldown_ms(0);
        let targets = vec![T1.to_string(), T2.to_string()];
        let plane = ControlPlane::new(portals(), targets.clone(), None, Some(policy.clone()));
        let catalog = Catalog {
            targets: targets
                .iter()
                .map(|name| CatalogTarget {
                    name: name.clone(),
                    luns: vec![0],
                    ..Default::default()
                })
                .collect(),
            portals: portals()
                .iter()
                .map(|p| CatalogPortal {
                    id: p.id,
                    address: p.address,
                    tag: p.tag,
                })
                .collect(),
            ..Default::default()
        };
        World {
            plane,
            balance: BalanceLoop::new(Balancer::new(policy)),
            catalog: Arc::new(catalog),
            t0: Instant::now(),
            ms: 1_000,
        }
    }

    fn now(&self) -> Instant {
        self.t0 + Duration::from_millis(self.ms)
    }

    fn connect(&self, portal: PortalId) -> Conn {
        Conn {
            conn: Connection::new(self.catalog.clone(), portal, self.now()),
            portal,
            session: None,
            digests: Digests::NONE,
        }
    }

    /// Sends `pdu` on `c` as the initiator would; the shell's work is done and the PDUs the
    /// target answered are returned.
    fn send(&mut self, c: &mut Conn, pdu: impl Into<Pdu>) -> Vec<Pdu> {
        let mut buf = BytesMut::new();
        pdu.into().encode(&mut buf, c.digests).unwrap();
        self.plane.set_now(self.ms);
        let now = self.now();
        loop {
            c.conn.on_bytes(&mut buf, now, &mut self.plane);
            let events = self.events(c);
            let mut work = false;
            while let Some(r) = c.conn.poll_scsi() {
                work = true;
                assert!(matches!(r, ScsiRequest::NexusLost { .. }), "{r:?}");
            }
            if !events && !work {
                break;
            }
        }
        if let Some(p) = c.conn.params() {
            c.digests = p.digests();
        }
        out(c)
    }

    /// Records the connection's events in the control plane, as the portal shell does.
    fn events(&mut self, c: &mut Conn) -> bool {
        let mut any = false;
        while let Some(ev) = c.conn.poll_event() {
            any = true;
            match ev {
                Event::FullFeature {
                    session_type: SessionType::Normal,
                    initiator,
                    target: Some(target),
                    ..
                } => {
                    let id = self
                        .plane
                        .session_started(c.portal, &initiator, &target, self.ms);
                    c.session = Some(id);
                    c.conn.set_nexus(id);
                }
                Event::FullFeature { .. } | Event::AuthenticationFailed { .. } => {}
                Event::Ended { why } => {
                    if let Some(id) = c.session.take() {
                        self.plane.session_closed(id, &why, self.ms);
                    }
                }
            }
        }
        any
    }

    /// The shell closes `c` (the socket is gone).
    fn close(&mut self, c: &mut Conn) {
        c.conn
            .on_closed(CloseReason::Transport("socket closed".into()));
        while c.conn.poll_scsi().is_some() {}
        self.events(c);
    }

    /// A normal session of `initiator` to `target` through `portal`.
    fn log_in(&mut self, portal: PortalId, initiator: &str, target: &str) -> Conn {
        let mut c = self.connect(portal);
        let o = self.send(
            &mut c,
            LoginRequest::operational(
                [0x80, 0, 0, 0, 0, 1],
                1,
                &[
                    ("InitiatorName", initiator),
                    ("TargetName", target),
                    ("AuthMethod", "None"),
                ],
            ),
        );
        let [Pdu::LoginResponse(r)] = &o[..] else {
            panic!("{o:?}")
        };
        assert_eq!(r.status_class, 0, "{r:?}");
        assert!(c.session.is_some());
        c
    }

    /// A discovery session through `portal`.
    fn discover(&mut self, portal: PortalId) -> Conn {
        let mut c = self.connect(portal);
        let o = self.send(
            &mut c,
            LoginRequest::operational(
                [0x80, 0, 0, 0, 0, 2],
                1,
                &[
                    ("InitiatorName", "iqn.2024-01.test:discoverer"),
                    ("SessionType", "Discovery"),
                    ("AuthMethod", "None"),
                ],
            ),
        );
        assert!(matches!(&o[..], [Pdu::LoginResponse(r)] if r.status_class == 0));
        c
    }

    /// SendTargets=All on the discovery session `c`: (target, its addresses) in order.
    fn send_targets(&mut self, c: &mut Conn) -> Vec<(String, Vec<String>)> {
        self.send_targets_of(c, "All")
    }

    /// SendTargets=`request` on `c`: (target, its addresses) in order.
    fn send_targets_of(&mut self, c: &mut Conn, request: &str) -> Vec<(String, Vec<String>)> {
        let o = self.send(
            c,
            TextRequest {
                immediate: true,
                final_: true,
                itt: 7,
                ttt: RESERVED_TAG,
                data: [("SendTargets", request)]
                    .into_iter()
                    .collect::<TextPairs>()
                    .to_bytes(),
                ..TextRequest::default()
            },
        );
        let [Pdu::TextResponse(t)] = &o[..] else {
            panic!("{o:?}")
        };
        let mut listed: Vec<(String, Vec<String>)> = Vec::new();
        for (k, v) in TextPairs::parse(&t.data).unwrap().iter() {
            match k {
                "TargetName" => listed.push((v.to_owned(), Vec::new())),
                "TargetAddress" => listed.last_mut().unwrap().1.push(v.to_owned()),
                _ => {}
            }
        }
        listed
    }

    /// Two sessions on P0 (i1 → T1, then i2 → T2) make P0 hot; the balancer step at the current
    /// time moves i2: (T2, P0) is deleted (reported done) and its logout requested (the Async
    /// Message is on its connection). Returns both connections.
    fn hot_p0_moves_i2(&mut self) -> (Conn, Conn) {
        let c1 = self.log_in(P0, "iqn.2024-01.test:i1", T1);
        self.ms += 100;
        let mut c2 = self.log_in(P0, "iqn.2024-01.test:i2", T2);
        self.ms += 900;
        let actions = self.balance.step(&mut self.plane, self.ms);
        let id2 = c2.session.unwrap();
        assert_eq!(
            actions,
            [
                Action::DeleteRegistration {
                    target: T2.into(),
                    portal: P0
                },
                Action::RequestLogout {
                    session_id: id2,
                    time2logout: 2
                }
            ]
        );
        self.balance
            .registration_deleted(&mut self.plane, T2, P0, Ok::<(), &str>(()), self.ms);
        c2.conn
            .on_command(SessionCommand::RequestLogout { time2logout: 2 }, self.now());
        let o = out(&mut c2);
        assert!(
            matches!(&o[..], [Pdu::AsyncMessage(m)] if m.async_event == 1 && m.parameter3 == 2),
            "{o:?}"
        );
        self.balance
            .logout_request_sent(&mut self.plane, id2, true, self.ms);
        assert!(self.balance.is_settled());
        (c1, c2)
    }

    fn forced_moves(&self) -> Vec<EventKind> {
        self.plane
            .events()
            .iter()
            .filter(|e| matches!(e.kind, EventKind::ForcedMove { .. }))
            .map(|e| e.kind.clone())
            .collect()
    }
}

fn out(c: &mut Conn) -> Vec<Pdu> {
    let mut v = Vec::new();
    c.conn.poll_transmit(&mut v);
    v.into_iter().map(|(p, _)| p).collect()
}

fn listing(entries: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
    entries
        .iter()
        .map(|(t, a)| (t.to_string(), a.iter().map(|a| a.to_string()).collect()))
        .collect()
}

#[test]
fn send_targets_on_any_portal_leaves_out_a_deleted_registration_until_it_is_restored() {
    let mut w = World::new();
    // A discovery session opened before the move, on P1.
    let mut early = w.discover(P1);
    let both = listing(&[(T1, &[A0, A1]), (T2, &[A0, A1])]);
    assert_eq!(w.send_targets(&mut early), both);

    let (_c1, mut c2) = w.hot_p0_moves_i2();
    assert!(!w.plane.is_registered(T2, P0));
    // While (T2, P0) is deleted, every SendTargets answer lists T2 through P1 only: on a new
    // discovery session on either portal, and on the one that was already open.
    let moved = listing(&[(T1, &[A0, A1]), (T2, &[A1])]);
    for portal in [P0, P1] {
        let mut d = w.discover(portal);
        assert_eq!(w.send_targets(&mut d), moved, "SendTargets on {portal}");
    }
    assert_eq!(
        w.send_targets(&mut early),
        moved,
        "the open discovery session"
    );
    // Asked inside a normal session too (SendTargets with an empty value: its own target).
    let mut c3 = w.log_in(P1, "iqn.2024-01.test:i3", T2);
    assert_eq!(
        w.send_targets_of(&mut c3, ""),
        listing(&[(T2, &[A1])]),
        "a normal session's SendTargets"
    );

    // i2 logs out in time; P0 is back at the low mark and the next step restores (T2, P0).
    w.ms += 500;
    let o = w.send(
        &mut c2,
        LogoutRequest {
            immediate: true,
            itt: 9,
            ..LogoutRequest::default()
        },
    );
    assert!(matches!(&o[..], [Pdu::LogoutResponse(r)] if r.response == 0));
    w.close(&mut c2);
    w.ms += 500;
    let actions = w.balance.step(&mut w.plane, w.ms);
    assert_eq!(
        actions,
        [Action::RestoreRegistration {
            target: T2.into(),
            portal: P0
        }]
    );
    // Not yet reported: still withheld.
    assert_eq!(w.send_targets(&mut early), moved);
    w.balance
        .registration_restored(&mut w.plane, T2, P0, Ok::<(), &str>(()), w.ms);
    assert_eq!(w.send_targets(&mut early), both);
    let mut d = w.discover(P0);
    assert_eq!(w.send_targets(&mut d), both);
}

#[test]
fn an_initiator_that_ignores_the_logout_request_is_dropped_and_counted_as_a_forced_move() {
    let mut w = World::new();
    let (_c1, mut c2) = w.hot_p0_moves_i2();
    let asked = w.now();
    // The initiator says nothing. Just before Time2Logout + grace: still connected.
    let deadline = asked + Duration::from_secs(2) + LOGOUT_GRACE;
    assert_eq!(c2.conn.poll_timeout(), Some(deadline));
    c2.conn.handle_timeout(deadline - Duration::from_millis(1));
    assert!(out(&mut c2).is_empty() && !c2.conn.is_closing());
    assert!(w.forced_moves().is_empty());
    // At the deadline: AsyncEvent 2 (the target drops the connection) and the close.
    w.ms += 5_000;
    c2.conn.handle_timeout(deadline);
    let o = out(&mut c2);
    assert!(
        matches!(&o[..], [Pdu::AsyncMessage(m)] if m.async_event == 2),
        "{o:?}"
    );
    assert!(c2.conn.is_closing());
    let id2 = c2.session.unwrap();
    w.close(&mut c2);
    assert!(!w.plane.is_live(id2));
    assert_eq!(
        w.forced_moves(),
        [EventKind::ForcedMove {
            initiator: "iqn.2024-01.test:i2".into(),
            target: T2.into(),
            from: P0,
            to: Some(P1),
            time2logout: 2,
            waited_ms: 5_000,
        }]
    );
    let snap = w.plane.snapshot();
    assert_eq!((snap.logout_requests, snap.forced_moves), (1, 1));
    let last = snap.events.last().unwrap();
    assert!(
        last.reason
            .contains("did not log out within Time2Logout 2 s of the logout request"),
        "{}",
        last.reason
    );
    // The session's end is recorded as usual, with the reason.
    let logout = snap
        .events
        .iter()
        .rev()
        .find(|e| e.kind.label() == "logout")
        .unwrap();
    assert!(
        logout.reason.contains("did not log out when asked"),
        "{}",
        logout.reason
    );
}

#[test]
fn an_initiator_that_logs_out_in_time_is_a_normal_move() {
    let mut w = World::new();
    let (_c1, mut c2) = w.hot_p0_moves_i2();
    let asked = w.now();
    w.ms += 1_500;
    let o = w.send(
        &mut c2,
        LogoutRequest {
            immediate: true,
            itt: 9,
            ..LogoutRequest::default()
        },
    );
    assert!(matches!(&o[..], [Pdu::LogoutResponse(r)] if r.response == 0));
    assert_eq!(c2.conn.close_reason(), Some(&CloseReason::Logout));
    // The deadline passing afterwards changes nothing.
    c2.conn
        .handle_timeout(asked + Duration::from_secs(2) + LOGOUT_GRACE);
    assert!(out(&mut c2).is_empty());
    w.close(&mut c2);
    assert!(w.forced_moves().is_empty());
    let snap = w.plane.snapshot();
    assert_eq!((snap.logout_requests, snap.forced_moves), (1, 0));
    // A connection lost (not dropped by the target) within the time is no forced move either.
    let mut w = World::new();
    let (_c1, mut c2) = w.hot_p0_moves_i2();
    w.ms += 100;
    w.close(&mut c2);
    assert!(w.forced_moves().is_empty());
    assert_eq!(w.plane.snapshot().forced_moves, 0);
}
