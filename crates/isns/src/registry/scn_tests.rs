use super::super::tests::{node, ok, portal, req, req_from, s, storage};
use super::*;
use crate::registry::{Registry, ScnEvent};
use isns_proto::tag::scn::{OBJECT_ADDED, OBJECT_REMOVED, OBJECT_UPDATED};

#[test]
fn scn_registration_sets_bitmap() {
    let mut reg = storage();
    let m = req(
        FunctionId::SCN_REG,
        vec![s(tag::ISCSI_NAME, "iqn.t1")],
        vec![Attribute::u32(
            tag::ISCSI_SCN_BITMAP,
            tag::scn::OBJECT_REMOVED,
        )],
    );
    ok(&mut reg, &m);
    assert_eq!(
        reg.scn_subscribers(),
        vec![("iqn.t1".to_string(), tag::scn::OBJECT_REMOVED)]
    );
    ok(
        &mut reg,
        &req(
            FunctionId::SCN_DEREG,
            vec![s(tag::ISCSI_NAME, "iqn.t1")],
            vec![],
        ),
    );
    assert!(reg.scn_subscribers().is_empty());
}

/// A registry with three subscribers in registration order:
/// `iqn.a` (portal 10.0.0.1 with SCN port 5000, wants additions),
/// `iqn.b` (no SCN port, wants removals), `iqn.c` (no SCN port, wants
/// additions and updates).
fn subscribers() -> Registry {
    let mut reg = Registry::new();
    reg.set_scn_source("iqn.server");
    let with_scn_port = [
        portal("10.0.0.1"),
        vec![Attribute::tcp_port(tag::SCN_PORT, 5000)],
    ]
    .concat();
    for (eid, name, portal_attrs, bitmap) in [
        ("ea", "iqn.a", with_scn_port, OBJECT_ADDED),
        ("eb", "iqn.b", portal("10.0.0.2"), OBJECT_REMOVED),
        ("ec", "iqn.c", vec![], OBJECT_ADDED | OBJECT_UPDATED),
    ] {
        let ops = [portal_attrs, node(name, 2)].concat();
        let m = req(
            FunctionId::DEV_ATTR_REG,
            vec![s(tag::ENTITY_IDENTIFIER, eid)],
            ops,
        );
        ok(&mut reg, &m);
        let sub = req_from(
            name,
            FunctionId::SCN_REG,
            vec![s(tag::ISCSI_NAME, name)],
            vec![Attribute::u32(tag::ISCSI_SCN_BITMAP, bitmap)],
        );
        let out = reg.handle(&sub, 1000);
        assert_eq!(out.scn_connection, Some(ScnConnection::Bind(name.into())));
        assert!(out.notifications.is_empty());
    }
    reg
}

fn destinations(out: &[Notification]) -> Vec<ScnDestination> {
    out.iter().map(|n| n.destination.clone()).collect()
}

fn conn(node: &str) -> ScnDestination {
    ScnDestination::Connection { node: node.into() }
}

#[test]
fn additions_go_to_subscribers_of_additions() {
    let mut reg = subscribers();
    let m = req_from(
        "iqn.t",
        FunctionId::DEV_ATTR_REG,
        vec![s(tag::ENTITY_IDENTIFIER, "stor")],
        node("iqn.t", 1),
    );
    let out = reg.handle(&m, 2000);
    assert_eq!(
        destinations(&out.notifications),
        [
            ScnDestination::Portal("10.0.0.1:5000".parse().unwrap()),
            conn("iqn.c"),
        ]
    );
    let first = &out.notifications[0].message;
    assert_eq!(first.function, FunctionId::SCN);
    assert_eq!(first.flags, Flags::SERVER);
    assert_eq!(first.source(), Some(&s(tag::ISCSI_NAME, "iqn.server")));
    assert_eq!(
        first.key(),
        [
            s(tag::ISCSI_NAME, "iqn.a"),
            Attribute::u64(tag::TIMESTAMP, 2000),
            // The node, then the entity (events in the order they happened).
            Attribute::u32(tag::ISCSI_SCN_BITMAP, OBJECT_ADDED),
            s(tag::ISCSI_NAME, "iqn.t"),
            Attribute::u32(tag::ISCSI_SCN_BITMAP, OBJECT_ADDED),
            s(tag::ENTITY_IDENTIFIER, "stor"),
        ]
    );
    let second = &out.notifications[1].message;
    assert_eq!(second.xid, first.xid.wrapping_add(1));
    assert_eq!(second.key()[0], s(tag::ISCSI_NAME, "iqn.c"));

    // An update reaches only `iqn.c`, with the next transaction ID.
    let out = reg.handle(&m, 2001);
    assert_eq!(destinations(&out.notifications), [conn("iqn.c")]);
    assert_eq!(
        &out.notifications[0].message.key()[2..],
        [
            Attribute::u32(tag::ISCSI_SCN_BITMAP, OBJECT_UPDATED),
            s(tag::ISCSI_NAME, "iqn.t"),
        ]
    );
    assert_eq!(out.notifications[0].message.xid, second.xid.wrapping_add(1));
}

#[test]
fn removals_by_dereg_and_expiry_go_to_subscribers_of_removals() {
    let mut reg = subscribers();
    let dereg = req_from(
        "iqn.a",
        FunctionId::DEV_DEREG,
        vec![],
        vec![s(tag::ENTITY_IDENTIFIER, "ea")],
    );
    let out = reg.handle(&dereg, 1500);
    assert_eq!(destinations(&out.notifications), [conn("iqn.b")]);
    assert_eq!(
        &out.notifications[0].message.key()[2..],
        [
            Attribute::u32(tag::ISCSI_SCN_BITMAP, OBJECT_REMOVED),
            s(tag::ENTITY_IDENTIFIER, "ea"),
        ]
    );
    // `ec` expires after the default period; `eb` keeps itself alive.
    let keepalive = Message::request(
        FunctionId::DEV_ATTR_QRY,
        1,
        s(tag::ISCSI_NAME, "iqn.b"),
        vec![],
        vec![],
    );
    reg.handle(&keepalive, 4000);
    let late = 1000 + u64::from(crate::registry::DEFAULT_REGISTRATION_PERIOD) + 1;
    assert!(reg.has_expired(late));
    let out = reg.expire(late);
    assert_eq!(out.changes.removed.len(), 1);
    assert_eq!(destinations(&out.notifications), [conn("iqn.b")]);
    assert_eq!(
        out.notifications[0].message.key()[1],
        Attribute::u64(tag::TIMESTAMP, late)
    );
    assert!(!reg.has_expired(late));
}

#[test]
fn failed_and_read_only_requests_notify_nobody() {
    let mut reg = subscribers();
    // Node name taken by another entity.
    let clash = req(
        FunctionId::DEV_ATTR_REG,
        vec![s(tag::ENTITY_IDENTIFIER, "new")],
        node("iqn.a", 1),
    );
    let out = reg.handle(&clash, 2000);
    assert_eq!(
        out.response.unwrap().status,
        Some(Status::INVALID_REGISTRATION)
    );
    assert_eq!(out.notifications, []);
    let query = req(FunctionId::DEV_ATTR_QRY, vec![], vec![]);
    assert_eq!(reg.handle(&query, 2000).notifications, []);
}

#[test]
fn scn_connection_follows_successful_scnreg_and_scndereg() {
    let mut reg = subscribers();
    let unknown = req(
        FunctionId::SCN_REG,
        vec![s(tag::ISCSI_NAME, "iqn.nobody")],
        vec![Attribute::u32(tag::ISCSI_SCN_BITMAP, OBJECT_ADDED)],
    );
    let out = reg.handle(&unknown, 0);
    assert_eq!(out.response.unwrap().status, Some(Status::NO_SUCH_ENTRY));
    assert_eq!(out.scn_connection, None);
    let dereg = req_from(
        "iqn.c",
        FunctionId::SCN_DEREG,
        vec![s(tag::ISCSI_NAME, "iqn.c")],
        vec![],
    );
    let out = reg.handle(&dereg, 0);
    assert_eq!(
        out.scn_connection,
        Some(ScnConnection::Unbind("iqn.c".into()))
    );
    let m = req(
        FunctionId::DEV_ATTR_REG,
        vec![s(tag::ENTITY_IDENTIFIER, "stor")],
        node("iqn.t", 1),
    );
    let out = reg.handle(&m, 0);
    assert_eq!(out.scn_connection, None);
    assert_eq!(
        destinations(&out.notifications),
        [ScnDestination::Portal("10.0.0.1:5000".parse().unwrap())]
    );
}

#[test]
fn scn_events_record_what_changed() {
    let mut reg = storage();
    let m = req(
        FunctionId::DEV_DEREG,
        vec![],
        vec![s(tag::ISCSI_NAME, "iqn.t2")],
    );
    let out = reg.handle(&m, 0);
    assert_eq!(
        out.changes.scn,
        [ScnEvent {
            event: OBJECT_REMOVED,
            object_key: vec![s(tag::ISCSI_NAME, "iqn.t2")],
        }]
    );
}
