//! Property test: after any sequence of registrations (with and without the
//! Replace flag), deregistrations, queries (refreshes) and expiry sweeps,
//! every index, the subscriber set and the deadline queue hold exactly what
//! a full scan of the entities finds, and an index lookup answers what a
//! walk in registration order answers.

use proptest::prelude::*;

use super::tests::{ip, node, portal, s};
use super::*;

const CONTROL: &str = "iqn.ctl";

#[derive(Debug, Clone)]
enum Op {
    Reg {
        eid: u8,
        nodes: Vec<u8>,
        portals: Vec<u8>,
        replace: bool,
        period: u32,
        by_node: bool,
    },
    DeregEntity(u8),
    DeregNode(u8),
    DeregPortal(u8),
    ScnReg(u8),
    Query(u8),
    Expire(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (
            0..4u8,
            proptest::collection::vec(0..6u8, 0..3),
            proptest::collection::vec(0..6u8, 0..3),
            any::<bool>(),
            1..30u32,
            any::<bool>(),
        )
            .prop_map(|(eid, nodes, portals, replace, period, by_node)| Op::Reg {
                eid,
                nodes,
                portals,
                replace,
                period,
                by_node,
            }),
        1 => (0..4u8).prop_map(Op::DeregEntity),
        1 => (0..6u8).prop_map(Op::DeregNode),
        1 => (0..6u8).prop_map(Op::DeregPortal),
        1 => (0..6u8).prop_map(Op::ScnReg),
        2 => (0..6u8).prop_map(Op::Query),
        1 => (0..20u64).prop_map(Op::Expire),
    ]
}

fn name(n: u8) -> String {
    format!("iqn.n{n}")
}
fn addr(p: u8) -> String {
    format!("127.0.1.{p}")
}

fn msg(source: &str, f: FunctionId, key: Vec<Attribute>, ops: Vec<Attribute>) -> Message {
    Message::request(f, 1, s(tag::ISCSI_NAME, source), key, ops)
}

fn apply(reg: &mut Registry, op: &Op, now: &mut u64) {
    match op {
        Op::Reg {
            eid,
            nodes,
            portals,
            replace,
            period,
            by_node,
        } => {
            let mut ops = vec![
                s(tag::ENTITY_IDENTIFIER, &format!("e{eid}")),
                Attribute::u32(tag::REGISTRATION_PERIOD, *period),
            ];
            for p in portals {
                ops.extend(portal(&addr(*p)));
            }
            for n in nodes {
                ops.extend(node(&name(*n), 1));
            }
            let source = match nodes.first() {
                Some(n) if *by_node => name(*n),
                _ => CONTROL.to_string(),
            };
            let mut m = msg(
                &source,
                FunctionId::DEV_ATTR_REG,
                vec![s(tag::ENTITY_IDENTIFIER, &format!("e{eid}"))],
                ops,
            );
            if *replace {
                m.flags = m.flags | isns_proto::Flags::REPLACE;
            }
            reg.handle(&m, *now);
        }
        Op::DeregEntity(e) => {
            let m = msg(
                CONTROL,
                FunctionId::DEV_DEREG,
                vec![],
                vec![s(tag::ENTITY_IDENTIFIER, &format!("e{e}"))],
            );
            reg.handle(&m, *now);
        }
        Op::DeregNode(n) => {
            let m = msg(CONTROL, FunctionId::DEV_DEREG, vec![], node(&name(*n), 1));
            reg.handle(&m, *now);
        }
        Op::DeregPortal(p) => {
            let m = msg(CONTROL, FunctionId::DEV_DEREG, vec![], portal(&addr(*p)));
            reg.handle(&m, *now);
        }
        Op::ScnReg(n) => {
            let m = msg(
                &name(*n),
                FunctionId::SCN_REG,
                vec![s(tag::ISCSI_NAME, &name(*n))],
                vec![Attribute::u32(
                    tag::ISCSI_SCN_BITMAP,
                    tag::scn::OBJECT_ADDED,
                )],
            );
            reg.handle(&m, *now);
        }
        Op::Query(n) => {
            let m = msg(
                &name(*n),
                FunctionId::DEV_ATTR_QRY,
                vec![s(tag::ISCSI_NAME, &name(*n))],
                vec![],
            );
            reg.handle_read(&m, *now);
        }
        Op::Expire(dt) => {
            *now += dt;
            reg.expire(*now);
            assert!(
                reg.entities().all(|e| !e.expired(*now, &reg.limits)),
                "an expired entity survived the sweep"
            );
        }
    }
}

/// Every index equals the one a full scan builds; lookups equal walks.
fn check(reg: &Registry) {
    let mut scanned = index::Indexes::default();
    for e in reg.entities() {
        scanned.add(e);
    }
    assert_eq!(scanned, reg.index);
    assert_eq!(reg.deadlines.len(), reg.entities().len());
    for e in reg.entities() {
        let queued = reg
            .deadlines
            .get(e.seq)
            .expect("every entity has a deadline");
        assert!(
            queued <= e.deadline(&reg.limits),
            "deadlines only move later"
        );
    }
    let keys: Vec<(ObjectType, Vec<Attribute>)> = (0..6u8)
        .map(|n| (ObjectType::IscsiNode, vec![s(tag::ISCSI_NAME, &name(n))]))
        .chain((0..6u8).map(|p| (ObjectType::Portal, portal(&addr(p)))))
        .chain((0..6u8).map(|p| {
            (
                ObjectType::Portal,
                vec![
                    Attribute::tcp_port(tag::PORTAL_PORT, 3260),
                    ip(tag::PORTAL_IP_ADDRESS, &addr(p)),
                ],
            )
        }))
        .chain((0..4u8).map(|e| {
            (
                ObjectType::Entity,
                vec![s(tag::ENTITY_IDENTIFIER, &format!("e{e}"))],
            )
        }))
        .collect();
    for (kind, key) in &keys {
        let walked: Vec<(u64, u32)> = reg
            .objects(*kind)
            .into_iter()
            .filter(|(_, o)| o.matches(key))
            .map(|(e, o)| (e.seq, o.index))
            .collect();
        let looked_up: Vec<(u64, u32)> = reg
            .matching(*kind, key)
            .map(|(e, o)| (e.seq, o.index))
            .collect();
        assert_eq!(walked, looked_up, "{kind:?} {key:?}");
        assert!(walked.len() <= 1, "keys name at most one object");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn indexes_match_a_full_scan(ops in proptest::collection::vec(op(), 1..40)) {
        let mut reg = Registry::new();
        reg.set_control_nodes([CONTROL.to_string()]);
        let mut now = 1000;
        for op in &ops {
            apply(&mut reg, op, &mut now);
            check(&reg);
        }
        // What the store would reload gives the same indexes.
        let reloaded = Registry::from_parts(reg.entities().cloned().collect(), reg.counters());
        check(&reloaded);
        prop_assert_eq!(reloaded.index, reg.index);
    }
}
