use super::super::tests::{node, ok, portal, req, req_from, s};
use crate::registry::{Registry, ScnDestination};
use isns_proto::tag::scn::{OBJECT_ADDED, OBJECT_REMOVED};
use isns_proto::tag::{self};
use isns_proto::{Attribute, FunctionId};

/// Two copies of one registry (two servers) holding subscriber `iqn.sub`, which receives
/// additions and removals on its connection.
fn two_copies() -> (Registry, Registry) {
    let mut reg = Registry::new();
    let m = req(
        FunctionId::DEV_ATTR_REG,
        vec![s(tag::ENTITY_IDENTIFIER, "sub")],
        node("iqn.sub", 2),
    );
    ok(&mut reg, &m);
    let sub = req_from(
        "iqn.sub",
        FunctionId::SCN_REG,
        vec![s(tag::ISCSI_NAME, "iqn.sub")],
        vec![Attribute::u32(
            tag::ISCSI_SCN_BITMAP,
            OBJECT_ADDED | OBJECT_REMOVED,
        )],
    );
    ok(&mut reg, &sub);
    (reg.clone(), reg)
}

/// `stor` with node `iqn.t` on 10.0.0.7, registered through `reg`; its seq.
fn register_storage(reg: &mut Registry) -> u64 {
    let m = req_from(
        "iqn.t",
        FunctionId::DEV_ATTR_REG,
        vec![s(tag::ENTITY_IDENTIFIER, "stor")],
        [portal("10.0.0.7"), node("iqn.t", 1)].concat(),
    );
    let (_, changes) = ok(reg, &m);
    *changes.upserted.first().unwrap()
}

#[test]
fn another_servers_registration_is_applied_with_its_scn() {
    let (mut a, mut b) = two_copies();
    let seq = register_storage(&mut b);
    let stored = b.entity(seq).cloned().unwrap();
    let out = a.apply_stored(seq, Some((stored, None)), 2000);
    assert_eq!(a, b, "the copies agree");
    assert_eq!(out.notifications.len(), 1);
    let n = &out.notifications[0];
    assert_eq!(
        n.destination,
        ScnDestination::Connection {
            node: "iqn.sub".into()
        }
    );
    assert!(n.message.key().contains(&s(tag::ISCSI_NAME, "iqn.t")));
    // Applying the same state again changes nothing and tells nobody.
    let again = a.apply_stored(seq, b.entity(seq).cloned().map(|e| (e, None)), 2001);
    assert!(again.notifications.is_empty());
    assert!(again.changes.is_empty());
    // The copy answers queries for it and hands out later numbers after it.
    assert_eq!(a.counters(), b.counters());
}

#[test]
fn another_servers_removal_is_applied_once() {
    let (mut a, mut b) = two_copies();
    let seq = register_storage(&mut b);
    a.apply_stored(seq, b.entity(seq).cloned().map(|e| (e, None)), 2000);
    let out = a.apply_stored(seq, None, 2001);
    assert!(a.entity(seq).is_none());
    assert_eq!(out.changes.removed.len(), 1);
    assert_eq!(out.notifications.len(), 1);
    assert!(
        out.notifications[0]
            .message
            .key()
            .contains(&Attribute::u32(tag::ISCSI_SCN_BITMAP, OBJECT_REMOVED))
    );
    // A second delete of the same entity (seen twice) reports nothing.
    assert!(a.apply_stored(seq, None, 2002).notifications.is_empty());
}

#[test]
fn counters_are_raised_never_lowered_and_set_on_undo() {
    let (mut a, mut b) = two_copies();
    register_storage(&mut b);
    let before = a.counters();
    a.raise_counters(b.counters());
    assert_eq!(a.counters(), b.counters());
    a.raise_counters(before);
    assert_eq!(a.counters(), b.counters(), "never lowered");
    a.set_counters(before);
    assert_eq!(a.counters(), before);
}
