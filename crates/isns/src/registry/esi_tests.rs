use super::super::tests::{node, ok, req_from, s};
use super::*;
use crate::registry::Limits;
use isns_proto::tag::scn::OBJECT_REMOVED;
use std::net::IpAddr;

const EID: &str = "esi-ent";
const NAME: &str = "iqn.esi";

fn esi_portal(ip: &str, port: u16, interval: u32, esi_port: Option<u16>) -> Vec<Attribute> {
    let mut v = vec![
        Attribute::ip(tag::PORTAL_IP_ADDRESS, ip.parse::<IpAddr>().unwrap()),
        Attribute::tcp_port(tag::PORTAL_PORT, port),
        Attribute::u32(tag::ESI_INTERVAL, interval),
    ];
    v.extend(esi_port.map(|p| Attribute::tcp_port(tag::ESI_PORT, p)));
    v
}

fn register(reg: &mut Registry, portals: Vec<Vec<Attribute>>, at: u64) -> Message {
    let ops = [portals.concat(), node(NAME, 1)].concat();
    let m = req_from(
        NAME,
        FunctionId::DEV_ATTR_REG,
        vec![s(tag::ENTITY_IDENTIFIER, EID)],
        ops,
    );
    let out = reg.handle(&m, at);
    let resp = out.response.unwrap();
    assert_eq!(resp.status, Some(Status::SUCCESS));
    resp
}

fn config(min_interval: u32, allowed_misses: u32) -> EsiConfig {
    EsiConfig {
        enabled: true,
        min_interval,
        allowed_misses,
    }
}

fn answer(probe: &EsiProbe) -> Message {
    let mut m = Message::error_response(FunctionId::ESI, probe.message.xid, Status::SUCCESS);
    m.attrs = probe.message.attrs.clone();
    m
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn the_interval_is_granted_within_the_minimum_and_half_the_period() {
    let mut reg = Registry::new();
    reg.set_esi(config(20, 3));
    let resp = register(
        &mut reg,
        vec![
            esi_portal("10.0.0.1", 3260, 5, Some(4000)),
            esi_portal("10.0.0.2", 3260, 100_000, Some(4000)),
            esi_portal("10.0.0.3", 3260, 30, None),
        ],
        1000,
    );
    let granted: Vec<u32> = resp
        .operating()
        .iter()
        .filter(|a| a.tag == tag::ESI_INTERVAL)
        .filter_map(Attribute::as_u32)
        .collect();
    // Raised to the minimum; lowered to half the default period (3600 s).
    assert_eq!(granted, [20, 1800, 30]);
    // A portal without an ESI Port is not monitored.
    assert_eq!(
        reg.esi_monitored(),
        [(addr("10.0.0.1:3260"), 20), (addr("10.0.0.2:3260"), 1800)]
    );
    assert_eq!(reg.esi_next_due(), Some(1020));
}

#[test]
fn disabled_esi_refuses_registrations_asking_for_it() {
    let mut reg = Registry::new();
    reg.set_esi(EsiConfig {
        enabled: false,
        ..EsiConfig::default()
    });
    let m = req_from(
        NAME,
        FunctionId::DEV_ATTR_REG,
        vec![s(tag::ENTITY_IDENTIFIER, EID)],
        [esi_portal("10.0.0.1", 3260, 30, Some(4000)), node(NAME, 1)].concat(),
    );
    let out = reg.handle(&m, 0);
    assert_eq!(
        out.response.unwrap().status,
        Some(Status::ESI_NOT_AVAILABLE)
    );
    assert!(reg.entities().next().is_none());
}

#[test]
fn esi_messages_are_due_one_interval_after_the_last_answer() {
    let mut reg = Registry::new();
    reg.set_esi(config(10, 3));
    register(
        &mut reg,
        vec![esi_portal("10.0.0.1", 3260, 10, Some(4000))],
        1000,
    );
    assert!(reg.esi_due(1009).is_empty());
    let probes = reg.esi_due(1010);
    assert_eq!(probes.len(), 1);
    let p = &probes[0];
    assert_eq!(p.portal, addr("10.0.0.1:3260"));
    assert_eq!(p.destination, addr("10.0.0.1:4000"));
    assert_eq!(p.message.function, FunctionId::ESI);
    assert_eq!(
        p.message.attrs,
        vec![
            Attribute::u64(tag::TIMESTAMP, 1010),
            s(tag::ENTITY_IDENTIFIER, EID),
            Attribute::ip(tag::PORTAL_IP_ADDRESS, "10.0.0.1".parse().unwrap()),
            Attribute::tcp_port(tag::PORTAL_PORT, 3260),
        ]
    );
    // Not sent again while awaiting the answer.
    assert!(reg.esi_due(1020).is_empty());
    // A wrong transaction ID is not an answer.
    let mut wrong = answer(p);
    wrong.xid = wrong.xid.wrapping_add(1);
    assert!(!reg.esi_answered(p.portal, &wrong, 1012));
    assert!(reg.esi_answered(p.portal, &answer(p), 1012));
    // The answer refreshed the registration.
    assert_eq!(reg.entities().next().unwrap().last_seen(), 1012);
    assert!(reg.esi_due(1021).is_empty());
    assert_eq!(reg.esi_due(1022).len(), 1);
}

#[test]
fn a_portal_goes_after_the_allowed_misses_and_its_silent_entity_with_it() {
    let mut reg = Registry::new();
    reg.set_esi(config(10, 3));
    reg.set_scn_source("iqn.server");
    register(
        &mut reg,
        vec![esi_portal("10.0.0.1", 3260, 30, Some(4000))],
        1000,
    );
    // Another node watches for removals.
    let watcher = req_from(
        "iqn.w",
        FunctionId::DEV_ATTR_REG,
        vec![s(tag::ENTITY_IDENTIFIER, "w")],
        node("iqn.w", 2),
    );
    ok(&mut reg, &watcher);
    let sub = req_from(
        "iqn.w",
        FunctionId::SCN_REG,
        vec![s(tag::ISCSI_NAME, "iqn.w")],
        vec![Attribute::u32(tag::ISCSI_SCN_BITMAP, OBJECT_REMOVED)],
    );
    ok(&mut reg, &sub);
    let portal = addr("10.0.0.1:3260");
    // Misses 1 and 2: retried every interval / allowed misses (10 s).
    let mut at = 1030;
    for _ in 0..2 {
        assert_eq!(reg.esi_due(at).len(), 1);
        let out = reg.esi_failed(portal, at);
        assert!(out.changes.is_empty());
        assert_eq!(reg.entities().len(), 2);
        assert!(reg.esi_due(at + 9).is_empty());
        at += 10;
    }
    // Miss 3 of 3: the portal goes; nothing was heard from the entity since
    // it registered, so the entity goes with it.
    assert_eq!(reg.esi_due(at).len(), 1);
    let out = reg.esi_failed(portal, at);
    assert_eq!(at, 1050, "all retransmissions within twice the interval");
    assert_eq!(reg.entities().len(), 1);
    assert_eq!(reg.entities().next().unwrap().id(), "w");
    assert_eq!(out.changes.removed.len(), 1);
    let removed: Vec<_> = out
        .changes
        .scn
        .iter()
        .filter(|e| e.event == OBJECT_REMOVED)
        .map(|e| e.object_key[0].clone())
        .collect();
    assert!(removed.contains(&Attribute::ip(
        tag::PORTAL_IP_ADDRESS,
        "10.0.0.1".parse().unwrap()
    )));
    assert!(removed.contains(&s(tag::ENTITY_IDENTIFIER, EID)));
    assert_eq!(out.notifications.len(), 1, "the watcher is told");
    assert!(reg.esi_monitored().is_empty());
    assert_eq!(reg.esi_next_due(), None);
}

#[test]
fn an_entity_that_spoke_since_keeps_its_other_objects() {
    let mut reg = Registry::new();
    reg.set_esi(config(10, 1));
    register(
        &mut reg,
        vec![
            esi_portal("10.0.0.1", 3260, 10, Some(4000)),
            esi_portal("10.0.0.2", 3260, 0, None),
        ],
        1000,
    );
    assert_eq!(reg.esi_due(1010).len(), 1);
    // The client queries (a refresh, §6.2.6) before the ESI fails.
    let q = req_from(
        NAME,
        FunctionId::DEV_ATTR_QRY,
        vec![s(tag::ISCSI_NAME, NAME)],
        vec![],
    );
    reg.handle(&q, 1012);
    let out = reg.esi_failed(addr("10.0.0.1:3260"), 1015);
    assert!(out.changes.removed.is_empty());
    assert_eq!(out.changes.upserted.len(), 1);
    let e = reg.entities().next().unwrap();
    let portals: Vec<_> = e.of_kind(ObjectType::Portal).collect();
    assert_eq!(portals.len(), 1);
    assert_eq!(
        portals[0]
            .get(tag::PORTAL_IP_ADDRESS)
            .and_then(Attribute::as_ip),
        Some("10.0.0.2".parse().unwrap())
    );
}

#[test]
fn monitoring_follows_registration_changes() {
    let mut reg = Registry::new();
    reg.set_esi(config(10, 3));
    register(
        &mut reg,
        vec![esi_portal("10.0.0.1", 3260, 10, Some(4000))],
        1000,
    );
    assert_eq!(reg.esi_due(1010).len(), 1);
    // Re-registering the same portal keeps its schedule (still in flight).
    register(
        &mut reg,
        vec![esi_portal("10.0.0.1", 3260, 10, Some(4000))],
        1011,
    );
    assert!(reg.esi_due(1012).is_empty());
    // Turning ESI off for the portal stops monitoring it.
    register(&mut reg, vec![esi_portal("10.0.0.1", 3260, 0, None)], 1013);
    assert!(reg.esi_monitored().is_empty());
    // Deregistering stops it too.
    register(
        &mut reg,
        vec![esi_portal("10.0.0.1", 3260, 10, Some(4000))],
        1014,
    );
    assert_eq!(reg.esi_monitored().len(), 1);
    let dereg = req_from(
        NAME,
        FunctionId::DEV_DEREG,
        vec![],
        vec![s(tag::ENTITY_IDENTIFIER, EID)],
    );
    ok(&mut reg, &dereg);
    assert!(reg.esi_monitored().is_empty());
    // A stale answer or failure for a portal no longer monitored does nothing.
    let out = reg.esi_failed(addr("10.0.0.1:3260"), 1100);
    assert_eq!(out, Outcome::default());
}

#[test]
fn monitoring_is_rebuilt_after_a_reload() {
    let mut reg = Registry::new();
    reg.set_limits(Limits::default());
    reg.set_esi(config(10, 3));
    register(
        &mut reg,
        vec![esi_portal("10.0.0.1", 3260, 10, Some(4000))],
        1000,
    );
    let mut reloaded = Registry::from_parts(reg.entities().cloned().collect(), reg.counters());
    reloaded.set_esi(config(10, 3));
    assert!(reloaded.esi_monitored().is_empty());
    reloaded.esi_sync_all(2000);
    assert_eq!(reloaded.esi_monitored(), [(addr("10.0.0.1:3260"), 10)]);
    assert_eq!(reloaded.esi_next_due(), Some(2010));
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Step {
        /// Time passes, then the due ESIs go out.
        Tick(u8),
        /// The in-flight ESI to portal `i` is answered (correctly or not).
        Answer(usize, bool),
        /// The in-flight ESI to portal `i` fails.
        Fail(usize),
        /// The client registers again (a refresh).
        Reregister,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0u8..40).prop_map(Step::Tick),
            (0usize..2, any::<bool>()).prop_map(|(i, ok)| Step::Answer(i, ok)),
            (0usize..2).prop_map(Step::Fail),
            Just(Step::Reregister),
        ]
    }

    proptest! {
        /// Whatever the order of answers, failures, refreshes and time: an ESI is
        /// never sent twice while awaiting its answer, a portal goes exactly at its
        /// `allowed_misses`-th consecutive miss, and a portal goes only then.
        #[test]
        fn misses_answers_and_time(
            allowed in 1u32..4,
            steps in proptest::collection::vec(step(), 0..60),
        ) {
            let mut reg = Registry::new();
            reg.set_esi(config(10, allowed));
            let portals = ["10.0.0.1", "10.0.0.2"];
            let reg_msg = |reg: &mut Registry, at: u64| {
                register(
                    reg,
                    portals.iter().map(|p| esi_portal(p, 3260, 20, Some(4000))).collect(),
                    at,
                );
            };
            reg_msg(&mut reg, 0);
            let addrs: Vec<SocketAddr> =
                portals.iter().map(|p| addr(&format!("{p}:3260"))).collect();
            let mut now = 0u64;
            let mut in_flight: BTreeMap<SocketAddr, EsiProbe> = BTreeMap::new();
            let mut misses: BTreeMap<SocketAddr, u32> = BTreeMap::new();
            let mut gone = false;
            for s in steps {
                match s {
                    Step::Tick(dt) => {
                        now += u64::from(dt);
                        for p in reg.esi_due(now) {
                            prop_assert!(!in_flight.contains_key(&p.portal), "sent twice");
                            in_flight.insert(p.portal, p);
                        }
                    }
                    Step::Answer(i, correct) => {
                        let Some(p) = in_flight.get(&addrs[i]).cloned() else { continue };
                        let mut a = answer(&p);
                        if !correct {
                            a.xid = a.xid.wrapping_add(1);
                        }
                        let accepted = reg.esi_answered(p.portal, &a, now);
                        prop_assert_eq!(accepted, correct);
                        if accepted {
                            in_flight.remove(&p.portal);
                            misses.insert(p.portal, 0);
                        }
                    }
                    Step::Fail(i) => {
                        if in_flight.remove(&addrs[i]).is_none() {
                            continue;
                        }
                        let m = misses.entry(addrs[i]).or_insert(0);
                        *m += 1;
                        let before = reg.esi_monitored().len();
                        let out = reg.esi_failed(addrs[i], now);
                        let removed = reg.esi_monitored().len() < before;
                        prop_assert_eq!(removed, *m >= allowed);
                        prop_assert_eq!(out.changes.is_empty(), !removed);
                        if removed {
                            misses.remove(&addrs[i]);
                            if reg.entities().next().is_none() {
                                gone = true;
                                break;
                            }
                        }
                    }
                    Step::Reregister => {
                        reg_msg(&mut reg, now);
                        // Portals that were dropped come back as new ones.
                        for a in &addrs {
                            if !misses.contains_key(a) && !in_flight.contains_key(a) {
                                misses.insert(*a, 0);
                            }
                        }
                    }
                }
            }
            if !gone {
                prop_assert_eq!(reg.entities().len(), 1);
            }
        }

        /// Arbitrary messages offered as ESI answers never panic and are
        /// accepted only when they are the right ESI Response.
        #[test]
        fn arbitrary_answers(
            function in any::<u16>(),
            xid in any::<u16>(),
            status in proptest::option::of(0u32..3),
            attrs in proptest::collection::vec(
                (0u32..40, proptest::collection::vec(any::<u8>(), 0..20)), 0..8),
        ) {
            let mut reg = Registry::new();
            reg.set_esi(config(10, 3));
            register(&mut reg, vec![esi_portal("10.0.0.1", 3260, 10, Some(4000))], 0);
            let probe = reg.esi_due(10).remove(0);
            let m = Message {
                function: FunctionId(function),
                flags: Flags::CLIENT,
                xid,
                status: status.map(Status),
                attrs: attrs.into_iter().map(|(tag, value)| Attribute { tag, value }).collect(),
            };
            let right = m.function == FunctionId::ESI.response()
                && m.xid == probe.message.xid
                && m.status.is_none_or(|s| s == Status::SUCCESS)
                && matches!(
                    (
                        m.attrs.iter().find(|a| a.tag == tag::PORTAL_IP_ADDRESS),
                        m.attrs.iter().find(|a| a.tag == tag::PORTAL_PORT),
                    ),
                    (Some(ip), Some(port)) if socket_addr(ip, port) == Some(probe.portal)
                );
            prop_assert_eq!(reg.esi_answered(probe.portal, &m, 11), right);
        }
    }
}
