//! The control plane and the balancer loop on a virtual clock: every time is explicit.

use balancer::{BalancePolicy, Balancer, EventKind, PortalId};

use super::*;
use crate::policy::{LoginDecision, LoginPolicy};

const P0: PortalId = PortalId(0);
const P1: PortalId = PortalId(1);

fn two_portals() -> Vec<PortalInfo> {
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

fn plane(targets: usize) -> ControlPlane {
    let targets = (1..=targets).map(|i| format!("iqn.t{i}")).collect();
    ControlPlane::new(two_portals(), targets, None, None)
}

fn policy(s: &str, cooldown_ms: u64) -> BalancePolicy {
    BalancePolicy::parse(&[s])
        .unwrap()
        .with_cooldown_ms(cooldown_ms)
}

/// Logs in iqn.i{n}/iqn.t{n} on `portal` at `at`, for each n in `ns`; returns the session ids.
fn login_all(p: &mut ControlPlane, portal: PortalId, ns: &[usize], at: u64) -> Vec<u64> {
    ns.iter()
        .map(|n| {
            let (i, t) = (format!("iqn.i{n}"), format!("iqn.t{n}"));
            assert_eq!(
                p.decide_login(portal, &i, &t, at),
                LoginDecision::Accept {
                    portal_group_tag: portal.0 + 1
                }
            );
            p.session_started(portal, &i, &t, at)
        })
        .collect()
}

/// Carries out `actions` in order, every one succeeding and every session reachable (unless
/// it is no longer live), at `now`.
fn carry_out(b: &mut BalanceLoop, p: &mut ControlPlane, actions: &[Action], now: u64) {
    for a in actions {
        match a {
            Action::DeleteRegistration { target, portal } => {
                b.registration_deleted(p, target, *portal, Ok::<(), &str>(()), now)
            }
            Action::RequestLogout { session_id, .. } => {
                let live = p.is_live(*session_id);
                b.logout_request_sent(p, *session_id, live, now)
            }
            Action::RestoreRegistration { target, portal } => {
                b.registration_restored(p, target, *portal, Ok::<(), &str>(()), now)
            }
        }
    }
    assert!(b.is_settled());
}

fn labels(p: &ControlPlane) -> Vec<&'static str> {
    p.events()
        .iter()
        .map(|e| e.kind.label())
        .filter(|l| *l != "login" && *l != "logout")
        .collect()
}

/// Three sessions on P0 with sessions:2: one move is due at t=1000.
fn hot_p0(cooldown_ms: u64) -> (ControlPlane, BalanceLoop, Vec<u64>) {
    let mut p = plane(3);
    let ids = vec![
        login_all(&mut p, P0, &[1], 100)[0],
        login_all(&mut p, P0, &[2], 200)[0],
        login_all(&mut p, P0, &[3], 300)[0],
    ];
    let b = BalanceLoop::new(Balancer::new(policy("sessions:2", cooldown_ms)));
    (p, b, ids)
}

#[test]
fn a_hot_portal_deletes_the_registration_then_requests_the_newest_sessions_logout() {
    let (mut p, mut b, ids) = hot_p0(0);
    let actions = b.step(&mut p, 1_000);
    assert_eq!(
        actions,
        [
            Action::DeleteRegistration {
                target: "iqn.t3".into(),
                portal: P0
            },
            Action::RequestLogout {
                session_id: ids[2],
                time2logout: TIME2LOGOUT
            },
        ]
    );
    // Nothing is recorded before the shell reports: the registration is still there and the
    // initiator is not yet placed elsewhere.
    assert!(p.is_registered("iqn.t3", P0));
    assert_eq!(p.placement("iqn.i3", "iqn.t3"), None);
    b.registration_deleted(&mut p, "iqn.t3", P0, Ok::<(), &str>(()), 1_010);
    // The placement is recorded once the delete was attempted, before the logout goes out.
    assert!(!p.is_registered("iqn.t3", P0));
    assert_eq!(p.placement("iqn.i3", "iqn.t3"), Some(P1));
    b.logout_request_sent(&mut p, ids[2], true, 1_020);
    assert!(b.is_settled());

    let ev: Vec<_> = p.events().iter().filter(|e| e.seq > 3).collect();
    assert_eq!(ev.len(), 2);
    assert_eq!(
        ev[0].kind,
        EventKind::RegistrationDeleted {
            target: "iqn.t3".into(),
            portal: P0
        }
    );
    assert_eq!(ev[0].at_ms, 1_010);
    assert_eq!(
        ev[1].kind,
        EventKind::LogoutRequested {
            initiator: "iqn.i3".into(),
            target: "iqn.t3".into(),
            from: P0,
            to: P1
        }
    );
    assert_eq!(ev[1].at_ms, 1_020);
    assert_eq!(
        ev[0].reason,
        "sessions 3 ≥ 2 on P0; moves 1 of it (P0 → 2); P1 0 → 1 < 2; \
         no single move brings it under high: the largest share that fits; newest login"
    );
    assert_eq!(ev[1].reason, ev[0].reason);
    let reg = p
        .snapshot()
        .registrations
        .into_iter()
        .find(|r| r.target == "iqn.t3" && r.portal == P0)
        .unwrap();
    assert!(!reg.registered);
}

#[test]
fn a_stock_initiator_reconnecting_to_the_old_portal_is_redirected() {
    let (mut p, mut b, ids) = hot_p0(0);
    let actions = b.step(&mut p, 1_000);
    carry_out(&mut b, &mut p, &actions, 1_000);
    assert!(p.session_ended(ids[2], "logout", 1_500));
    // It asks the old portal again (it does not use iSNS): answered 0x0101 towards P1.
    assert_eq!(
        p.decide_login(P0, "iqn.i3", "iqn.t3", 1_600),
        LoginDecision::Redirect {
            address: "127.0.0.2:3260".into()
        }
    );
    let last = p.events().iter().last().unwrap();
    assert_eq!(
        last.kind,
        EventKind::Redirected {
            initiator: "iqn.i3".into(),
            target: "iqn.t3".into(),
            from: P0,
            to: P1
        }
    );
    assert_eq!(last.at_ms, 1_600);
    // Another initiator on P0, and the moved one on P1, are accepted.
    assert_eq!(
        p.decide_login(P0, "iqn.i9", "iqn.t3", 1_600),
        LoginDecision::Accept {
            portal_group_tag: 1
        }
    );
    assert_eq!(
        p.decide_login(P1, "iqn.i3", "iqn.t3", 1_700),
        LoginDecision::Accept {
            portal_group_tag: 2
        }
    );
    assert_eq!(
        p.decide_login(P0, "iqn.i3", "iqn.nope", 1_700),
        LoginDecision::NotFound
    );
    let id = p.session_started(P1, "iqn.i3", "iqn.t3", 1_700);
    assert_eq!(p.table().portals[1].sessions[0].session_id, id);
    assert_eq!(
        labels(&p),
        ["registration-deleted", "logout-requested", "redirected"]
    );
}

#[test]
fn the_registration_returns_and_placements_are_forgotten_once_the_load_falls() {
    let (mut p, mut b, ids) = hot_p0(5_000);
    let actions = b.step(&mut p, 1_000);
    carry_out(&mut b, &mut p, &actions, 1_000);
    p.session_ended(ids[2], "logout", 1_200);
    p.session_started(P1, "iqn.i3", "iqn.t3", 1_300);
    // P0 is at 2 sessions (the high mark): nothing to restore, nothing can move (P1 would reach
    // 2 as well).
    assert!(b.step(&mut p, 2_000).is_empty());
    // i1 leaves: P0 is at the low mark, but the deletion is held for more than the cooldown
    // (deleted at 1,000, cooldown 5,000: still held at 6,000).
    p.session_ended(ids[0], "logout", 2_500);
    assert!(b.step(&mut p, 3_000).is_empty());
    assert!(b.step(&mut p, 6_000).is_empty());
    assert!(!p.is_registered("iqn.t3", P0));
    let actions = b.step(&mut p, 6_001);
    assert_eq!(
        actions,
        [Action::RestoreRegistration {
            target: "iqn.t3".into(),
            portal: P0
        }]
    );
    // Still held deleted until the shell reports the restore.
    assert_eq!(p.placement("iqn.i3", "iqn.t3"), Some(P1));
    carry_out(&mut b, &mut p, &actions, 6_010);
    assert!(p.is_registered("iqn.t3", P0));
    assert!(p.registrations().iter().all(|r| r.registered));
    assert_eq!(p.placement("iqn.i3", "iqn.t3"), None);
    // The initiator may log in through P0 again.
    assert_eq!(
        p.decide_login(P0, "iqn.i3", "iqn.t3", 6_100),
        LoginDecision::Accept {
            portal_group_tag: 1
        }
    );
    let last = p.events().iter().last().unwrap();
    assert_eq!(
        last.kind,
        EventKind::RegistrationRestored {
            target: "iqn.t3".into(),
            portal: P0
        }
    );
    assert!(
        last.reason
            .starts_with("every metric at or below low on P0: sessions 1 ≤ 1; deleted "),
        "{}",
        last.reason
    );
    assert_eq!(last.at_ms, 6_010);
    assert_eq!(
        labels(&p),
        [
            "registration-deleted",
            "logout-requested",
            "registration-restored"
        ]
    );
}

#[test]
fn a_moved_initiator_is_not_moved_again_within_its_cooldown() {
    // sessions:3; i3 is moved at t=0, the policy restores nothing (cooldown 10 s), and i3 comes
    // straight back to P0 on a new session (say, an initiator that ignores the redirect).
    // Once i3 may move again, the never-moved i2 still goes first unless i1 and i2 are pinned.
    for (cooldown, now, pin, moved) in [
        (10_000, 600, false, 2usize),
        (10_000, 10_000, false, 2),
        (10_000, 10_000, true, 3),
        (0, 600, true, 3),
    ] {
        let mut p = plane(3);
        let ids = login_all(&mut p, P0, &[1, 2, 3], 0);
        let mut policy = policy("sessions:3", cooldown);
        if pin {
            policy = policy.with_pinned(["iqn.i1", "iqn.i2"]);
        }
        let mut b = BalanceLoop::new(Balancer::new(policy));
        let actions = b.step(&mut p, 0);
        assert_eq!(
            actions[1],
            Action::RequestLogout {
                session_id: ids[2],
                time2logout: TIME2LOGOUT
            }
        );
        carry_out(&mut b, &mut p, &actions, 0);
        p.session_ended(ids[2], "logout", 100);
        let back = p.session_started(P0, "iqn.i3", "iqn.t3", 500);
        let actions = b.step(&mut p, now);
        // (iqn.t3, P0) is still held deleted, so moving i3 again deletes nothing.
        let mut expected = Vec::new();
        let session_id = if moved == 3 {
            back
        } else {
            expected.push(Action::DeleteRegistration {
                target: format!("iqn.t{moved}"),
                portal: P0,
            });
            ids[moved - 1]
        };
        expected.push(Action::RequestLogout {
            session_id,
            time2logout: TIME2LOGOUT,
        });
        assert_eq!(actions, expected, "cooldown {cooldown} at {now}");
    }
}

#[test]
fn failures_are_recorded_and_the_move_still_goes_ahead() {
    let (mut p, mut b, ids) = hot_p0(0);
    let actions = b.step(&mut p, 1_000);
    assert_eq!(actions.len(), 2);
    b.registration_deleted(&mut p, "iqn.t3", P0, Err("connection refused"), 1_001);
    // iSNS did not delete it: the table and the policy both still hold it registered ...
    assert!(p.is_registered("iqn.t3", P0));
    assert!(!b.policy().is_deleted("iqn.t3", P0));
    // ... but the placement redirects the initiator's next login all the same.
    assert_eq!(p.placement("iqn.i3", "iqn.t3"), Some(P1));
    // The session ended before the request could be sent.
    p.session_ended(ids[2], "connection lost", 1_002);
    b.logout_request_sent(&mut p, ids[2], false, 1_003);
    let what: Vec<String> = p
        .events()
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Failed { what } => Some(what.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        what,
        [
            "deleting (iqn.t3, P0): connection refused",
            "logout request to iqn.i3 (iqn.t3) not sent: the session on P0 had already ended"
        ]
    );
}

#[test]
fn a_failed_restore_is_recorded_and_tried_again() {
    let mut p = plane(2);
    let ids = login_all(&mut p, P0, &[1, 2], 0);
    let mut b = BalanceLoop::new(Balancer::new(policy("sessions:2", 0)));
    let actions = b.step(&mut p, 0);
    carry_out(&mut b, &mut p, &actions, 0);
    p.session_ended(ids[1], "logout", 10);
    let restore = [Action::RestoreRegistration {
        target: "iqn.t2".into(),
        portal: P0,
    }];
    assert_eq!(b.step(&mut p, 1_000), restore);
    b.registration_restored(&mut p, "iqn.t2", P0, Err("timed out"), 1_001);
    assert!(!p.is_registered("iqn.t2", P0));
    assert_eq!(p.placement("iqn.i2", "iqn.t2"), Some(P1));
    match &p.events().iter().last().unwrap().kind {
        EventKind::Failed { what } => assert_eq!(what, "restoring (iqn.t2, P0): timed out"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(b.step(&mut p, 1_100), restore);
    carry_out(&mut b, &mut p, &restore, 1_101);
    assert!(p.is_registered("iqn.t2", P0));
}

#[test]
fn iops_are_measured_over_the_sample_window() {
    let mut p = plane(1);
    let id = p.session_started(P1, "iqn.i1", "iqn.t1", 1_000);
    p.record_commands(id, 500);
    let t = p.sample(2_000);
    let s = &t.portals[1].sessions[0];
    assert_eq!((s.iops, s.commands, s.login_ms), (500.0, 500, 1_000));
    // Too soon after the last sample: the figure is kept, the total is current.
    p.add_commands(id, 100);
    let s = p.sample(2_100).portals[1].sessions[0].clone();
    assert_eq!((s.iops, s.commands), (500.0, 600));
    p.add_commands(id, 100);
    let s = p.sample(2_500).portals[1].sessions[0].clone();
    assert_eq!((s.iops, s.commands), (400.0, 700));
    assert!(p.table().portals[0].sessions.is_empty());
    // Counts for a session that is gone are ignored.
    p.session_ended(id, "logout", 3_000);
    p.record_commands(id, 9);
    assert!(p.sample(4_000).portals[1].sessions.is_empty());
}

#[test]
fn sessions_bytes_outstanding_and_shares_fill_the_table() {
    let mut p = plane(2);
    let a = p.session_started(P0, "iqn.i1", "iqn.t1", 1_000);
    let b = p.session_started(P0, "iqn.i2", "iqn.t2", 1_000);
    p.set_link_capacity(P0, Some(50e6));
    p.record_portal_load(
        P0,
        PortalLoad {
            sent_bps: 30e6,
            received_bps: 1e6,
            cpu_busy: 0.4,
            outstanding: 99, // the plane's own count wins
            ..Default::default()
        },
    );
    // `a` reads 20 MB/s in 1 MiB commands; `b` does 1,000 small commands a second.
    p.record_session(
        a,
        SessionCounters {
            commands: 20,
            bytes_sent: 20 << 20,
            bytes_received: 20 * 48,
            outstanding: 3,
        },
    );
    p.record_session(
        b,
        SessionCounters {
            commands: 1_000,
            bytes_sent: 1_000 * 560,
            bytes_received: 1_000 * 48,
            outstanding: 2,
        },
    );
    let t = p.sample(2_000);
    let row = &t.portals[0];
    let (sa, sb) = (&row.sessions[0], &row.sessions[1]);
    let near = |a: f64, b: f64| (a - b).abs() < 1e-6 * b;
    assert!(near(sa.read_bps, (20 << 20) as f64), "{sa:?}");
    assert!(near(sa.write_bps, 960.0), "{sa:?}");
    assert_eq!((sa.outstanding, sb.outstanding), (3, 2));
    assert_eq!(row.load.outstanding, 5);
    assert_eq!(row.load.link_capacity, Some(50e6));
    assert_eq!(row.load.link_utilisation(), Some(0.6));
    assert_eq!(row.load.cpu_busy, 0.4);
    // Work: a = 20 + 20 MiB/16 KiB = 1,300.06; b = 1,000 + 608,000/16 KiB = 1,037.1.
    let wa = measure::work(20.0, (20 << 20) as f64 + 960.0);
    let wb = measure::work(1_000.0, 608_000.0);
    assert!((sa.cpu_share - wa / (wa + wb)).abs() < 1e-12, "{sa:?}");
    assert!((sa.cpu_share + sb.cpu_share - 1.0).abs() < 1e-12);
    assert!(sa.cpu_share > 0.5 && sb.cpu_share > 0.4);
    // Another portal: nothing measured, no capacity.
    let p1 = &t.portals[1].load;
    assert_eq!((p1.link_capacity, p1.link_utilisation()), (None, None));
    // The rates are smoothed: a quiet second lowers them without zeroing them (the two
    // windows weigh about the same this early: 45% of the first rate).
    let t = p.sample(3_000);
    let sa = &t.portals[0].sessions[0];
    let expected =
        (20 << 20) as f64 * (-0.2f64).exp() * (1.0 - (-0.2f64).exp()) / (1.0 - (-0.4f64).exp());
    assert!(near(sa.read_bps, expected), "{sa:?}");
    assert_eq!(sa.iops, 0.0, "IOPS are the last window's");
}

#[test]
fn the_plane_is_a_login_policy_at_the_time_it_was_given() {
    let mut p = plane(1);
    p.place("iqn.i1", "iqn.t1", P1);
    p.set_now(42_000);
    let policy: &mut dyn LoginPolicy = &mut p;
    assert_eq!(
        policy.login_decision(P0, "iqn.i1", "iqn.t1"),
        LoginDecision::Redirect {
            address: "127.0.0.2:3260".into()
        }
    );
    assert_eq!(
        policy.login_decision(P0, "iqn.i1", "iqn.t2"),
        LoginDecision::NotFound
    );
    assert_eq!(
        policy.login_decision(PortalId(7), "iqn.i1", "iqn.t1"),
        LoginDecision::NotFound
    );
    let a = policy.next_tsih();
    let b = policy.next_tsih();
    assert_eq!((a, b), (1, 2));
    let e = p.events().iter().last().unwrap();
    assert_eq!((e.seq, e.at_ms, e.kind.label()), (1, 42_000, "redirected"));
    // TSIHs are never zero, also after wrapping.
    for _ in 0..70_000 {
        assert_ne!(p.allocate_tsih(), 0);
    }
}

#[test]
fn ping_pongs_among_the_logout_requests_are_counted() {
    let cooldown = 5_000;
    let mut p = ControlPlane::new(
        two_portals(),
        vec!["iqn.t1".into()],
        None,
        Some(policy("sessions:2", cooldown)),
    );
    let mv = |at_ms: u64, initiator: &str, from: u16, to: u16| MoveRecord {
        at_ms,
        initiator: initiator.into(),
        target: "iqn.t1".into(),
        from: PortalId(from),
        to: PortalId(to),
    };
    // Moved P0 → P1, then after the cooldown back to P0, within twice it: a ping-pong.
    p.logout_request_delivered(mv(0, "iqn.a", 0, 1));
    p.logout_request_delivered(mv(6_000, "iqn.a", 1, 0));
    assert_eq!(
        p.snapshot().ping_pongs,
        1,
        "back to P0 within twice the cooldown"
    );
    // Another initiator: moved again within the cooldown.
    p.logout_request_delivered(mv(20_000, "iqn.b", 0, 1));
    p.logout_request_delivered(mv(22_000, "iqn.b", 1, 0));
    assert_eq!(p.snapshot().ping_pongs, 2);
    // Back after twice the cooldown: fine.
    p.logout_request_delivered(mv(40_000, "iqn.c", 0, 1));
    p.logout_request_delivered(mv(51_000, "iqn.c", 1, 0));
    let s = p.snapshot();
    assert_eq!((s.logout_requests, s.ping_pongs), (6, 2));
}

#[test]
fn redirects_and_registrations_name_ipv6_portals_in_brackets() {
    let mut portals = two_portals();
    portals[0].address = "[::1]:3260".parse().unwrap();
    portals[1].address = "[fd00::2]:3261".parse().unwrap();
    let mut p = ControlPlane::new(portals, vec!["iqn.t1".into()], None, None);
    p.place("iqn.i1", "iqn.t1", P1);
    assert_eq!(
        p.decide_login(P0, "iqn.i1", "iqn.t1", 0),
        LoginDecision::Redirect {
            address: "[fd00::2]:3261".into()
        }
    );
    let rows = p.snapshot().registrations;
    assert_eq!(rows[0].address, "[::1]:3260");
}

#[test]
fn set_targets_adds_and_removes_registrations_and_placements() {
    let mut p = plane(2);
    p.place("iqn.i1", "iqn.t2", P1);
    p.set_targets(vec!["iqn.t1".into(), "iqn.t3".into()]);
    assert_eq!(p.targets(), ["iqn.t1", "iqn.t3"]);
    let rows: Vec<(String, PortalId, bool)> = p
        .snapshot()
        .registrations
        .iter()
        .map(|r| (r.target.clone(), r.portal, r.registered))
        .collect();
    assert_eq!(
        rows,
        [
            ("iqn.t1".to_string(), P0, true),
            ("iqn.t1".to_string(), P1, true),
            ("iqn.t3".to_string(), P0, true),
            ("iqn.t3".to_string(), P1, true),
        ]
    );
    assert_eq!(p.placement("iqn.i1", "iqn.t2"), None);
    assert_eq!(
        p.decide_login(P0, "iqn.i1", "iqn.t2", 0),
        LoginDecision::NotFound
    );
    assert!(matches!(
        p.decide_login(P0, "iqn.i1", "iqn.t3", 0),
        LoginDecision::Accept { .. }
    ));
}

// ---- the operator's requests (`portshift balance`) ------------------------------------------

/// Drain: the portal's registrations are deleted first, then each session is asked to log
/// out and placed elsewhere; logins there are redirected, SendTargets leaves it out, the
/// balancer neither moves anyone there nor restores it; undrain restores it.
#[test]
fn a_drained_portal_is_emptied_and_takes_nobody_until_undrained() {
    let mut p = plane(2);
    let ids = login_all(&mut p, P0, &[1, 2], 0);
    assert_eq!(p.find_portal("P0"), Ok(P0));
    assert_eq!(p.find_portal("1"), Ok(P1));
    assert_eq!(p.find_portal("127.0.0.2:3260"), Ok(P1));
    assert!(matches!(
        p.find_portal("P7"),
        Err(OperatorError::UnknownPortal(_))
    ));
    let plan = p.drain(P0).unwrap();
    assert_eq!(
        plan.actions,
        vec![
            Action::DeleteRegistration {
                target: "iqn.t1".into(),
                portal: P0
            },
            Action::DeleteRegistration {
                target: "iqn.t2".into(),
                portal: P0
            },
            Action::RequestLogout {
                session_id: ids[0],
                time2logout: TIME2LOGOUT
            },
            Action::RequestLogout {
                session_id: ids[1],
                time2logout: TIME2LOGOUT
            },
        ]
    );
    assert!(plan.moves.iter().all(|m| m.from == P0 && m.to == P1));
    // The last portal cannot be drained too.
    assert_eq!(p.drain(P1), Err(OperatorError::LastPortal(P1)));
    for t in ["iqn.t1", "iqn.t2"] {
        p.operator_registration_changed(t, P0, true, Ok(()), "drain", 1);
    }
    for m in &plan.moves {
        p.operator_logout_sent(m, true, "drain", 1);
    }
    assert_eq!(p.withheld_portals("iqn.t1"), [P0]);
    // A newcomer and a returning host are both sent to P1.
    for i in ["iqn.new", "iqn.i1"] {
        assert!(matches!(
            p.decide_login(P0, i, "iqn.t1", 2),
            LoginDecision::Redirect { address } if address == "127.0.0.2:3260"
        ));
    }
    // The balancer may not move anyone to the drained portal, even with P1 over HIGH.
    for id in ids {
        p.session_ended(id, "logout", 3);
    }
    login_all(&mut p, P1, &[1, 2], 3);
    let mut b = BalanceLoop::new(Balancer::new(policy("sessions:2", 0)));
    assert!(b.step(&mut p, 4).is_empty());
    let plan = p.undrain(P0).unwrap();
    assert_eq!(plan.actions.len(), 2);
    for t in ["iqn.t1", "iqn.t2"] {
        p.operator_registration_changed(t, P0, false, Ok(()), "undrain", 5);
    }
    assert!(p.withheld_portals("iqn.t1").is_empty());
    assert!(p.registrations().iter().all(|r| r.registered));
    assert!(matches!(
        p.decide_login(P0, "iqn.new", "iqn.t1", 6),
        LoginDecision::Accept { .. }
    ));
    assert!(!b.step(&mut p, 7).is_empty(), "P0 takes sessions again");
}

/// A drain's delete that failed stays owed (the table still says registered) until a retry
/// succeeds; an undrain forgives it; a portal that is not drained owes nothing.
#[test]
fn a_failed_drain_delete_stays_owed_until_it_succeeds() {
    let mut p = plane(2);
    login_all(&mut p, P0, &[1, 2], 0);
    assert!(p.drain_deletions_owed().is_empty());
    p.drain(P0).unwrap();
    p.operator_registration_changed("iqn.t1", P0, true, Ok(()), "drain", 1);
    p.operator_registration_changed("iqn.t2", P0, true, Err("timeout".into()), "drain", 1);
    let owed = vec![Action::DeleteRegistration {
        target: "iqn.t2".into(),
        portal: P0,
    }];
    assert_eq!(p.drain_deletions_owed(), owed);
    // Still owed after another failure; gone once the retry succeeds.
    p.operator_registration_changed("iqn.t2", P0, true, Err("timeout".into()), "retry", 2);
    assert_eq!(p.drain_deletions_owed(), owed);
    p.operator_registration_changed("iqn.t2", P0, true, Ok(()), "retry", 3);
    assert!(p.drain_deletions_owed().is_empty());
    // Undrained before the retry: nothing is owed any more.
    p.undrain(P0).unwrap();
    for t in ["iqn.t1", "iqn.t2"] {
        p.operator_registration_changed(t, P0, false, Ok(()), "undrain", 4);
    }
    p.drain(P0).unwrap();
    p.operator_registration_changed("iqn.t1", P0, true, Err("timeout".into()), "drain", 4);
    p.operator_registration_changed("iqn.t2", P0, true, Ok(()), "drain", 4);
    assert_eq!(p.drain_deletions_owed().len(), 1);
    p.undrain(P0).unwrap();
    assert!(p.drain_deletions_owed().is_empty());
}

/// An undrain's restore that failed stays owed until a restore succeeds, the balancer deletes
/// the registration itself, or the portal is drained again; one that succeeded is not owed.
#[test]
fn a_failed_undrain_restore_stays_owed_until_it_is_settled() {
    let restore = |t: &str| Action::RestoreRegistration {
        target: t.into(),
        portal: P0,
    };
    let mut p = plane(2);
    login_all(&mut p, P0, &[1, 2], 0);
    p.drain(P0).unwrap();
    for t in ["iqn.t1", "iqn.t2"] {
        p.operator_registration_changed(t, P0, true, Ok(()), "drain", 1);
    }
    assert!(p.undrain_restores_owed().is_empty());
    let plan = p.undrain(P0).unwrap();
    assert_eq!(plan.actions, vec![restore("iqn.t1"), restore("iqn.t2")]);
    p.operator_registration_changed("iqn.t1", P0, false, Ok(()), "undrain", 2);
    p.operator_registration_changed("iqn.t2", P0, false, Err("timeout".into()), "undrain", 2);
    assert_eq!(p.undrain_restores_owed(), vec![restore("iqn.t2")]);
    p.operator_registration_changed("iqn.t2", P0, false, Err("timeout".into()), "retry", 3);
    assert_eq!(p.undrain_restores_owed(), vec![restore("iqn.t2")]);
    p.operator_registration_changed("iqn.t2", P0, false, Ok(()), "retry", 4);
    assert!(p.undrain_restores_owed().is_empty());
    assert!(p.is_registered("iqn.t2", P0));

    // Owed again, then settled by the balancer deleting the registration for its own reasons.
    p.drain(P0).unwrap();
    p.operator_registration_changed("iqn.t1", P0, true, Ok(()), "drain", 5);
    p.undrain(P0).unwrap();
    p.operator_registration_changed("iqn.t1", P0, false, Err("timeout".into()), "undrain", 6);
    assert_eq!(p.undrain_restores_owed(), vec![restore("iqn.t1")]);
    p.delete_registration("iqn.t1", P0);
    assert!(p.undrain_restores_owed().is_empty());

    // Owed again, then the portal is drained again: a drain owes deletes, not restores.
    p.restore_registration("iqn.t1", P0);
    p.drain(P0).unwrap();
    p.operator_registration_changed("iqn.t1", P0, true, Ok(()), "drain", 7);
    p.operator_registration_changed("iqn.t2", P0, true, Ok(()), "drain", 7);
    p.undrain(P0).unwrap();
    p.operator_registration_changed("iqn.t2", P0, false, Err("timeout".into()), "undrain", 8);
    assert!(!p.undrain_restores_owed().is_empty());
    p.drain(P0).unwrap();
    assert!(p.undrain_restores_owed().is_empty());
}

/// Move: the named host (all its sessions) is placed on the destination and asked to log out;
/// nobody else is; unknown hosts and drained destinations are refused with nothing changed.
#[test]
fn an_operator_move_places_the_host_and_asks_it_to_log_out() {
    let mut p = plane(2);
    let ids = login_all(&mut p, P0, &[1, 2], 0);
    assert_eq!(
        p.operator_move("iqn.nobody", None),
        Err(OperatorError::UnknownInitiator("iqn.nobody".into()))
    );
    let plan = p.operator_move("IQN.I1", Some(P1)).unwrap();
    assert_eq!(
        plan.actions,
        vec![Action::RequestLogout {
            session_id: ids[0],
            time2logout: TIME2LOGOUT
        }]
    );
    p.operator_logout_sent(&plan.moves[0], true, "operator", 1);
    assert_eq!(p.snapshot().logout_requests, 1);
    assert!(matches!(
        p.decide_login(P0, "iqn.i1", "iqn.t1", 2),
        LoginDecision::Redirect { .. }
    ));
    assert!(matches!(
        p.decide_login(P0, "iqn.i2", "iqn.t2", 2),
        LoginDecision::Accept { .. }
    ));
    // Already there: nothing to do.
    p.session_ended(ids[0], "logout", 3);
    login_all(&mut p, P1, &[1], 3);
    assert!(
        p.operator_move("iqn.i1", Some(P1))
            .unwrap()
            .actions
            .is_empty()
    );
    p.drain(P1).unwrap();
    assert_eq!(
        p.operator_move("iqn.i2", Some(P1)),
        Err(OperatorError::DestinationDrained(P1))
    );
    assert_eq!(
        p.operator_move("iqn.i2", None),
        Err(OperatorError::NoDestination)
    );
}

/// Pause stops every decision; a pin keeps the pinned host where it is.
#[test]
fn pause_and_pin_hold_the_balancer() {
    let mut p = plane(3);
    login_all(&mut p, P0, &[1, 2, 3], 0);
    let mut b = BalanceLoop::new(Balancer::new(policy("sessions:2", 0)));
    p.set_paused(true, 900);
    assert!(b.step(&mut p, 1_000).is_empty());
    p.set_paused(false, 1_100);
    for i in ["iqn.i1", "iqn.I2", "iqn.i3"] {
        p.set_pinned(i, true, 1_200);
    }
    assert!(p.is_operator_pinned("IQN.I2"));
    assert!(b.step(&mut p, 2_000).is_empty());
    p.set_pinned("iqn.i3", false, 2_500);
    // Each operator call is in the event log.
    let ops: Vec<String> = p
        .events()
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Operator { action } => Some(action.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        ops,
        [
            "balancer paused",
            "balancer resumed",
            "iqn.i1 pinned",
            "iqn.I2 pinned",
            "iqn.i3 pinned",
            "iqn.i3 unpinned"
        ]
    );
    let actions = b.step(&mut p, 3_000);
    assert!(
        actions.contains(&Action::RequestLogout {
            session_id: 3,
            time2logout: TIME2LOGOUT
        }),
        "{actions:?}"
    );
}

proptest::proptest! {
    /// Whatever an operator types as a portal, `find_portal` answers without panicking, and
    /// only a portal's id (`P1`, `p1`, `1`) or exact address names it.
    #[test]
    fn find_portal_takes_any_text(name in "\\PC{0,24}") {
        let p = plane(1);
        let expected = match name.trim() {
            "P0" | "p0" | "0" | "127.0.0.1:3260" => Some(P0),
            "P1" | "p1" | "1" | "127.0.0.2:3260" => Some(P1),
            n => {
                let digits = n.strip_prefix(['P', 'p']).unwrap_or(n);
                match digits.parse::<u16>() {
                    Ok(0) => Some(P0),
                    Ok(1) => Some(P1),
                    _ => None,
                }
            }
        };
        proptest::prop_assert_eq!(p.find_portal(&name).ok(), expected);
    }

    /// Draining and undraining in any order never leaves every portal drained, and a login
    /// is answered Accept only on a portal that is not drained.
    #[test]
    fn drains_never_close_every_portal(ops in proptest::collection::vec((0u16..3, proptest::bool::ANY), 0..12)) {
        let mut p = plane(1);
        for (portal, drain) in ops {
            let id = PortalId(portal);
            let r = if drain { p.drain(id) } else { p.undrain(id) };
            if portal > 1 {
                proptest::prop_assert!(r.is_err());
            }
            proptest::prop_assert!(p.operator().drained.len() < 2);
            for at in [P0, P1] {
                let accepted = matches!(
                    p.decide_login(at, "iqn.x", "iqn.t1", 0),
                    LoginDecision::Accept { .. }
                );
                proptest::prop_assert_eq!(accepted, !p.is_drained(at));
            }
        }
    }
}
