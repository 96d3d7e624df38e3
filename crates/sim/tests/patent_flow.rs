//! The patent's rebalance, end to end and in order, in memory: three initiators log in through
//! the first portal while doing verified I/O; at three sessions (`sessions:3`) the balancer
//! deletes (target, portal 0) in iSNS and asks the quietest initiator to log out; it drains,
//! logs out, asks iSNS again (only portal 1 is listed), logs in there; after the cooldown, with
//! portal 0 at the low mark, the registration comes back. A stock initiator that ignores iSNS
//! is redirected at its old address instead.

use std::net::SocketAddr;
use std::time::Duration;

use initiator::follower::InitiatorEvent;
use portshift_sim::audit::line;
use portshift_sim::{Discovery, InitiatorConfig, World, WorldConfig};

const TARGET: &str = "iqn.2024-01.sim:t";
const COOLDOWN: Duration = Duration::from_secs(5);

fn world(stock_third: bool) -> (World, SocketAddr, SocketAddr) {
    let mut w = World::new(WorldConfig::two_portals(
        &[TARGET],
        Some("sessions:3"),
        COOLDOWN,
    ));
    let (p0, p1) = (w.portal_address(0), w.portal_address(1));
    // I/O rates 50, 40 and 20 commands/s: the third is the quietest and the one to move. It
    // issues bursts of 4 every 200 ms through a session that sends one at a time, so the
    // logout request (at 1 s, with a burst) finds commands queued: they come back unfinished
    // and are re-issued on the next session.
    for (i, ms, burst) in [(1u64, 20u64, 1usize), (2, 25, 1), (3, 200, 4)] {
        let discovery = if stock_third && i == 3 {
            Discovery::Fixed(p0)
        } else {
            Discovery::Isns
        };
        let mut c = InitiatorConfig::new(&format!("iqn.i{i}"), TARGET, discovery);
        c.interval = Some(Duration::from_millis(ms));
        c.burst = burst;
        c.session_depth = if burst > 1 { 1 } else { 4 };
        c.lba_base = i * 100;
        w.add_initiator(c);
    }
    (w, p0, p1)
}

fn lines(w: &World) -> Vec<String> {
    w.events().iter().map(|e| line(&e.kind)).collect()
}

fn run(stock: bool) {
    let (mut w, p0, p1) = world(stock);
    assert_eq!(w.query_portals(TARGET), [p0, p1]);

    // All three log in through the first portal listed.
    assert!(w.run_until(Duration::from_millis(500), |w| {
        w.initiators.iter().all(|i| i.portal() == Some(p0))
    }));
    assert_eq!(
        lines(&w),
        ["login iqn.i1 P0", "login iqn.i2 P0", "login iqn.i3 P0"]
    );

    // The balancer (first step at 1 s): delete (target, P0), then ask the quietest to log out;
    // the initiator gets the Async Message, drains, logs out and logs in at P1.
    assert!(
        w.run_until(Duration::from_secs(3), |w| w.initiators[2].portal()
            == Some(p1))
    );
    let mut expected: Vec<String> = vec![
        format!("registration-deleted {TARGET} P0"),
        "logout-requested iqn.i3 P0->P1".into(),
        "logout iqn.i3 P0".into(),
    ];
    if stock {
        expected.push("redirected iqn.i3 P0->P1".into());
    }
    expected.push("login iqn.i3 P1".into());
    assert_eq!(lines(&w)[3..], expected[..]);
    let requested_at = w.events()[4].at_ms;
    assert_eq!(requested_at, portshift_sim::UNIX_BASE_MS + 1000);
    assert_eq!(w.query_portals(TARGET), [p1]);
    let i3: Vec<InitiatorEvent> = w.initiators[2].events.iter().map(|e| e.1.clone()).collect();
    let mut want = vec![
        InitiatorEvent::Discovered { portals: vec![p0] },
        InitiatorEvent::LoggedIn {
            portal: p0,
            redirected_from: None,
        },
        InitiatorEvent::LogoutRequested { portal: p0 },
        InitiatorEvent::LoggedOut { portal: p0 },
    ];
    if stock {
        want.push(InitiatorEvent::Discovered { portals: vec![p0] });
        want.push(InitiatorEvent::LoggedIn {
            portal: p1,
            redirected_from: Some(p0),
        });
    } else {
        want[0] = InitiatorEvent::Discovered {
            portals: vec![p0, p1],
        };
        want.push(InitiatorEvent::IsnsQueried { portals: vec![p1] });
        want.push(InitiatorEvent::LoggedIn {
            portal: p1,
            redirected_from: None,
        });
    }
    assert_eq!(i3[..want.len()], want[..], "{i3:#?}");
    let moved = &w.initiators[2].moves;
    assert_eq!(moved.len(), 1);
    assert_eq!((moved[0].from, moved[0].to), (p0, p1));
    if stock {
        let answers = &w.initiators[2].logins;
        let redirect = answers
            .iter()
            .find(|a| a.status_class == 1)
            .expect("a redirect");
        assert_eq!(
            (redirect.portal, redirect.status_detail),
            (p0, 1),
            "{answers:?}"
        );
        assert_eq!(redirect.target_address.as_deref(), Some("127.0.0.2:3260"));
    }
    // The others stayed where they were, and nobody else moved.
    assert_eq!(w.initiators[0].portal(), Some(p0));
    assert_eq!(w.initiators[1].portal(), Some(p0));
    w.audit_at_most_once().unwrap();

    // P0 is at the low mark (2 sessions); the registration comes back after the cooldown.
    assert_eq!(w.query_portals(TARGET), [p1]);
    assert!(w.run_until(Duration::from_secs(10), |w| {
        w.events()
            .iter()
            .any(|e| line(&e.kind).starts_with("registration-restored"))
    }));
    let events = w.events();
    assert_eq!(
        lines(&w)[3 + expected.len()..],
        [format!("registration-restored {TARGET} P0")]
    );
    let restored_at = events.last().unwrap().at_ms;
    // The first balancer step once more than the cooldown since the deletion (at 1 s) has
    // passed: the step one interval (1 s) after the cooldown's end.
    assert_eq!(
        restored_at,
        requested_at + COOLDOWN.as_millis() as u64 + 1_000
    );
    assert_eq!(w.query_portals(TARGET), [p0, p1]);

    // Verified I/O went on throughout; nothing lost or done twice.
    for i in &w.initiators {
        assert!(
            i.completed.len() > 50,
            "{}: {}",
            i.name(),
            i.completed.len()
        );
    }
    for i in &mut w.initiators {
        i.leave();
    }
    assert!(w.run_until(Duration::from_secs(5), |w| {
        w.initiators.iter().all(|i| i.is_done())
    }));
    w.audit_exactly_once().unwrap();
    assert!(w.initiators[2].reissued > 0, "nothing was re-issued");
    let tail = lines(&w);
    let n = tail.len();
    assert_eq!(
        tail[n - 3..],
        ["logout iqn.i1 P0", "logout iqn.i2 P0", "logout iqn.i3 P1"]
    );
    w.run_for(Duration::from_millis(10));
    assert_eq!((w.links.len(), w.target.connections()), (0, 0));
}

#[test]
fn patent_flow_isns_initiator_follows_the_registration() {
    run(false);
}

#[test]
fn patent_flow_stock_initiator_is_redirected() {
    run(true);
}
