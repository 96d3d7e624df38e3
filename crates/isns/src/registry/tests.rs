use super::*;
use isns_proto::Flags;
use std::net::IpAddr;

pub(super) fn s(t: u32, v: &str) -> Attribute {
    Attribute::string(t, v)
}
pub(super) fn ip(t: u32, v: &str) -> Attribute {
    Attribute::ip(t, v.parse::<IpAddr>().unwrap())
}
/// A request from `iqn.t1` (a node of [`storage`]'s entity).
pub(super) fn req(f: FunctionId, key: Vec<Attribute>, ops: Vec<Attribute>) -> Message {
    req_from("iqn.t1", f, key, ops)
}
pub(super) fn req_from(
    source: &str,
    f: FunctionId,
    key: Vec<Attribute>,
    ops: Vec<Attribute>,
) -> Message {
    Message::request(f, 1, s(tag::ISCSI_NAME, source), key, ops)
}
pub(super) fn portal(addr: &str) -> Vec<Attribute> {
    vec![
        ip(tag::PORTAL_IP_ADDRESS, addr),
        Attribute::tcp_port(tag::PORTAL_PORT, 3260),
    ]
}
pub(super) fn node(name: &str, ty: u32) -> Vec<Attribute> {
    vec![
        s(tag::ISCSI_NAME, name),
        Attribute::u32(tag::ISCSI_NODE_TYPE, ty),
    ]
}
pub(super) fn pg(name: &str, addr: &str, pgt: Option<u32>) -> Vec<Attribute> {
    vec![
        s(tag::PG_ISCSI_NAME, name),
        ip(tag::PG_PORTAL_IP_ADDR, addr),
        Attribute::tcp_port(tag::PG_PORTAL_PORT, 3260),
        pgt.map_or(Attribute::nil(tag::PG_TAG), |t| {
            Attribute::u32(tag::PG_TAG, t)
        }),
    ]
}
pub(super) fn ok(reg: &mut Registry, m: &Message) -> (Message, Changes) {
    let out = reg.handle(m, 1000);
    let resp = out.response.unwrap();
    assert_eq!(resp.status, Some(Status::SUCCESS), "{m:?}");
    (resp, out.changes)
}
/// stor1 with portals .2, .1, .3 (in that order) and targets t1, t2.
pub(super) fn storage() -> Registry {
    let mut reg = Registry::new();
    let ops = [
        portal("127.0.0.2"),
        portal("127.0.0.1"),
        portal("127.0.0.3"),
        node("iqn.t1", 1),
        node("iqn.t2", 1),
    ]
    .concat();
    ok(
        &mut reg,
        &req(
            FunctionId::DEV_ATTR_REG,
            vec![s(tag::ENTITY_IDENTIFIER, "stor1")],
            ops,
        ),
    );
    reg
}
fn target_portals(reg: &mut Registry, target: &str) -> Vec<String> {
    let q = req(
        FunctionId::DEV_ATTR_QRY,
        vec![s(tag::ISCSI_NAME, target)],
        [
            tag::PG_ISCSI_NAME,
            tag::PG_PORTAL_IP_ADDR,
            tag::PG_PORTAL_PORT,
            tag::PG_TAG,
        ]
        .map(Attribute::nil)
        .to_vec(),
    );
    let resp = reg.handle(&q, 0).response.unwrap();
    crate::request::portals_from_pgs(resp.operating(), target)
        .iter()
        .map(|a| a.ip().to_string())
        .collect()
}

#[test]
fn implicit_portal_groups_in_registration_order() {
    let mut reg = storage();
    let pgs: Vec<_> = reg
        .objects(ObjectType::PortalGroup)
        .into_iter()
        .map(|(_, o)| o.get(tag::PG_TAG).and_then(Attribute::as_u32))
        .collect();
    assert_eq!(pgs, vec![Some(1); 6]);
    assert_eq!(
        target_portals(&mut reg, "iqn.t1"),
        ["127.0.0.2", "127.0.0.1", "127.0.0.3"]
    );
    assert!(target_portals(&mut reg, "iqn.unknown").is_empty());
}

#[test]
fn nil_pgt_hides_portal_and_restore_keeps_order() {
    let mut reg = storage();
    let key = vec![s(tag::ISCSI_NAME, "iqn.t1")];
    ok(
        &mut reg,
        &req(
            FunctionId::DEV_ATTR_REG,
            key.clone(),
            pg("iqn.t1", "127.0.0.2", None),
        ),
    );
    assert_eq!(
        target_portals(&mut reg, "iqn.t1"),
        ["127.0.0.1", "127.0.0.3"]
    );
    assert_eq!(
        target_portals(&mut reg, "iqn.t2"),
        ["127.0.0.2", "127.0.0.1", "127.0.0.3"]
    );
    ok(
        &mut reg,
        &req(
            FunctionId::DEV_ATTR_REG,
            key,
            pg("iqn.t1", "127.0.0.2", Some(1)),
        ),
    );
    assert_eq!(
        target_portals(&mut reg, "iqn.t1"),
        ["127.0.0.2", "127.0.0.1", "127.0.0.3"]
    );
}

#[test]
fn explicit_pg_in_registration_prevents_default() {
    let mut reg = Registry::new();
    let ops = [
        portal("127.0.0.1"),
        portal("127.0.0.2"),
        node("iqn.t", 1),
        pg("iqn.t", "127.0.0.1", Some(0)),
    ]
    .concat();
    ok(&mut reg, &req(FunctionId::DEV_ATTR_REG, vec![], ops));
    assert_eq!(reg.entities().next().unwrap().id(), "isns.entity.0001");
    assert_eq!(target_portals(&mut reg, "iqn.t"), ["127.0.0.2"]);
}

#[test]
fn replace_flag_drops_previous_objects() {
    let mut reg = storage();
    let mut m = req(
        FunctionId::DEV_ATTR_REG,
        vec![s(tag::ENTITY_IDENTIFIER, "stor1")],
        [portal("127.0.0.9"), node("iqn.t3", 1)].concat(),
    );
    m.flags = m.flags | Flags::REPLACE;
    ok(&mut reg, &m);
    let e = &reg.entities().next().unwrap();
    assert_eq!(e.of_kind(ObjectType::IscsiNode).count(), 1);
    assert_eq!(e.of_kind(ObjectType::Portal).count(), 1);
    assert_eq!(e.of_kind(ObjectType::PortalGroup).count(), 1);
    // Without the flag, objects are added (by a node still in the entity).
    ok(
        &mut reg,
        &req_from(
            "iqn.t3",
            FunctionId::DEV_ATTR_REG,
            vec![s(tag::ENTITY_IDENTIFIER, "stor1")],
            node("iqn.t4", 1),
        ),
    );
    assert_eq!(
        reg.entities()
            .next()
            .unwrap()
            .of_kind(ObjectType::IscsiNode)
            .count(),
        2
    );
}

#[test]
fn node_name_is_unique_across_entities() {
    let mut reg = storage();
    let m = req(
        FunctionId::DEV_ATTR_REG,
        vec![s(tag::ENTITY_IDENTIFIER, "other")],
        node("iqn.t1", 1),
    );
    assert_eq!(
        reg.handle(&m, 0).response.unwrap().status,
        Some(Status::INVALID_REGISTRATION)
    );
    assert_eq!(reg.entities().len(), 1);
}

#[test]
fn dereg_node_then_entity_cascades() {
    let mut reg = storage();
    let (_, ch) = ok(
        &mut reg,
        &req(
            FunctionId::DEV_DEREG,
            vec![],
            vec![s(tag::ISCSI_NAME, "iqn.t2")],
        ),
    );
    assert!(ch.upserted.contains(&1));
    assert_eq!(reg.objects(ObjectType::PortalGroup).len(), 3);
    // Removing all portals and the last node removes the entity (§5.6.5.4).
    let ops = [
        portal("127.0.0.1"),
        portal("127.0.0.2"),
        portal("127.0.0.3"),
        vec![s(tag::ISCSI_NAME, "iqn.t1")],
    ]
    .concat();
    let (_, ch) = ok(&mut reg, &req(FunctionId::DEV_DEREG, vec![], ops));
    assert!(ch.removed.contains(&1));
    assert!(reg.entities().len() == 0);
}

#[test]
fn get_next_walks_registration_order() {
    let mut reg = Registry::new();
    for (eid, n) in [("zeta", "iqn.z"), ("alpha", "iqn.a"), ("mid", "iqn.m")] {
        ok(
            &mut reg,
            &req(
                FunctionId::DEV_ATTR_REG,
                vec![s(tag::ENTITY_IDENTIFIER, eid)],
                node(n, 2),
            ),
        );
    }
    let mut key = vec![Attribute::nil(tag::ISCSI_NAME)];
    let mut seen = Vec::new();
    for _ in 0..10 {
        let m = req(FunctionId::DEV_GET_NEXT, key.clone(), vec![]);
        let resp = reg.handle(&m, 0).response.unwrap();
        if resp.status == Some(Status::NO_SUCH_ENTRY) {
            break;
        }
        key = resp.key().to_vec();
        seen.push(key[0].as_str().unwrap().to_string());
    }
    assert_eq!(seen, ["iqn.z", "iqn.a", "iqn.m"]);
}

#[test]
fn query_errors() {
    let mut reg = storage();
    let mixed = req(
        FunctionId::DEV_ATTR_QRY,
        vec![
            s(tag::ISCSI_NAME, "iqn.t1"),
            s(tag::ENTITY_IDENTIFIER, "stor1"),
        ],
        vec![],
    );
    assert_eq!(
        reg.handle(&mixed, 0).response.unwrap().status,
        Some(Status::INVALID_QUERY)
    );
    let mut anon = req(FunctionId::DEV_ATTR_QRY, vec![], vec![]);
    anon.attrs.remove(0);
    assert_eq!(
        reg.handle(&anon, 0).response.unwrap().status,
        Some(Status::SOURCE_ABSENT)
    );
    let unsupported = req(FunctionId(0x00ff), vec![], vec![]);
    assert_eq!(
        reg.handle(&unsupported, 0).response.unwrap().status,
        Some(Status::MESSAGE_NOT_SUPPORTED)
    );
    let bad_reg = req(
        FunctionId::DEV_ATTR_REG,
        vec![],
        vec![Attribute::tcp_port(tag::PORTAL_PORT, 1)],
    );
    assert_eq!(
        reg.handle(&bad_reg, 0).response.unwrap().status,
        Some(Status::INVALID_REGISTRATION)
    );
    // A failed request changes nothing.
    assert_eq!(reg, storage());
}

#[test]
fn entities_expire_unless_refreshed() {
    let mut reg = Registry::new();
    let with_period = |eid: &str, name: &str, period: u32| {
        req(
            FunctionId::DEV_ATTR_REG,
            vec![s(tag::ENTITY_IDENTIFIER, eid)],
            [
                vec![Attribute::u32(tag::REGISTRATION_PERIOD, period)],
                node(name, 1),
            ]
            .concat(),
        )
    };
    for (eid, name, period) in [
        ("old", "iqn.old", 60),
        ("kept", "iqn.kept", 60),
        ("forever", "iqn.forever", 0),
    ] {
        ok(&mut reg, &with_period(eid, name, period));
    }
    // `kept` keeps talking (a query with itself as source) at t=1050.
    let mut q = req(
        FunctionId::DEV_ATTR_QRY,
        vec![s(tag::ISCSI_NAME, "iqn.kept")],
        vec![],
    );
    q.attrs[0] = s(tag::ISCSI_NAME, "iqn.kept");
    reg.handle(&q, 1050);
    assert!(reg.expire(1060).changes.is_empty());
    let ch = reg.expire(1061).changes;
    assert_eq!(ch.removed.into_iter().collect::<Vec<_>>(), vec![1]);
    let ids: Vec<_> = reg.entities().map(Entity::id).collect();
    assert_eq!(ids, ["kept", "forever"]);
    assert!(reg.has_expired(4000));
    assert!(!reg.expire(4000).changes.is_empty());
    assert_eq!(
        reg.entities().map(Entity::id).collect::<Vec<_>>(),
        ["forever"]
    );
    // "forever" asked for 0 and was granted the default period.
    let last = 1000 + u64::from(DEFAULT_REGISTRATION_PERIOD);
    assert!(!reg.has_expired(last));
    assert!(!reg.expire(last + 1).changes.is_empty());
    assert!(reg.entities().len() == 0);
}

#[test]
fn only_may_change_functions_record_changes() {
    for f in 0..=0x20u16 {
        let f = FunctionId(f);
        if Registry::may_change(f) {
            continue;
        }
        for key in [vec![], vec![s(tag::ISCSI_NAME, "iqn.t1")]] {
            let mut reg = storage();
            let ch = reg.handle(&req(f, key, portal("127.0.0.9")), 2000).changes;
            assert!(ch.is_empty(), "{} recorded {ch:?}", f.name());
        }
    }
    let mut reg = storage();
    let m = req(
        FunctionId::DEV_ATTR_REG,
        vec![s(tag::ENTITY_IDENTIFIER, "stor1")],
        portal("127.0.0.9"),
    );
    assert!(Registry::may_change(m.function));
    assert!(!ok(&mut reg, &m).1.is_empty());
}

#[test]
fn failed_registration_keeps_counters() {
    let mut reg = storage();
    let before = reg.counters();
    // A new entity (sequence number, index, server-chosen identifier) whose
    // node name is taken: refused after allocating.
    let clash = req(
        FunctionId::DEV_ATTR_REG,
        vec![],
        [portal("127.0.0.7"), node("iqn.t1", 1)].concat(),
    );
    let status = reg.handle(&clash, 0).response.unwrap().status;
    assert_eq!(status, Some(Status::INVALID_REGISTRATION));
    // A PG linking objects of another entity: refused after the new portal got an index.
    let foreign_pg = req(
        FunctionId::DEV_ATTR_REG,
        vec![s(tag::ENTITY_IDENTIFIER, "stor1")],
        [
            portal("127.0.0.8"),
            pg("iqn.elsewhere", "127.0.0.8", Some(2)),
        ]
        .concat(),
    );
    let status = reg.handle(&foreign_pg, 0).response.unwrap().status;
    assert_eq!(status, Some(Status::INVALID_REGISTRATION));
    assert_eq!(reg.counters(), before);
    assert_eq!(reg, storage());
    // The next successful registration gets the numbers the failed ones took.
    ok(
        &mut reg,
        &req(FunctionId::DEV_ATTR_REG, vec![], node("iqn.new", 2)),
    );
    let e = &reg.entities().nth(1).unwrap();
    assert_eq!((e.id(), e.seq), ("isns.entity.0001", before.next_seq));
    assert_eq!(e.object.index, before.next_index);
}

#[test]
fn from_parts_restores_order_and_counters() {
    let reg = storage();
    let mut two = storage();
    ok(
        &mut two,
        &req(
            FunctionId::DEV_ATTR_REG,
            vec![s(tag::ENTITY_IDENTIFIER, "second")],
            node("iqn.second", 2),
        ),
    );
    let mut entities = two.entities().cloned().collect::<Vec<_>>();
    entities.reverse();
    let rebuilt = Registry::from_parts(entities.clone(), two.counters());
    assert_eq!(rebuilt, two);
    // Stale counters are raised past what is stored.
    let stale = Registry::from_parts(entities, reg.counters());
    assert_eq!(stale.counters(), two.counters());
}

fn status(reg: &mut Registry, m: &Message) -> Status {
    let out = reg.handle(m, 1000);
    if out.response.as_ref().and_then(|r| r.status) != Some(Status::SUCCESS) {
        assert!(out.changes.is_empty() && out.notifications.is_empty());
    }
    out.response.and_then(|r| r.status).unwrap()
}

/// `storage()` plus entity `other` holding node `iqn.x`.
fn storage_and_other() -> Registry {
    let mut reg = storage();
    ok(
        &mut reg,
        &req_from(
            "iqn.x",
            FunctionId::DEV_ATTR_REG,
            vec![s(tag::ENTITY_IDENTIFIER, "other")],
            [portal("127.0.0.7"), node("iqn.x", 2)].concat(),
        ),
    );
    reg
}

#[test]
fn strangers_cannot_deregister_or_replace_an_entity() {
    let mut reg = storage_and_other();
    let before = reg.clone();
    let eid = || vec![s(tag::ENTITY_IDENTIFIER, "stor1")];
    for (source, expected) in [
        ("iqn.nobody", Status::SOURCE_UNKNOWN),
        ("iqn.x", Status::SOURCE_UNAUTHORIZED),
    ] {
        let dereg_entity = req_from(source, FunctionId::DEV_DEREG, vec![], eid());
        assert_eq!(status(&mut reg, &dereg_entity), expected, "{source}");
        let dereg_node = req_from(
            source,
            FunctionId::DEV_DEREG,
            vec![],
            vec![s(tag::ISCSI_NAME, "iqn.t2")],
        );
        assert_eq!(status(&mut reg, &dereg_node), expected, "{source}");
        let dereg_portal = req_from(source, FunctionId::DEV_DEREG, vec![], portal("127.0.0.1"));
        assert_eq!(status(&mut reg, &dereg_portal), expected, "{source}");
        let mut replace = req_from(
            source,
            FunctionId::DEV_ATTR_REG,
            eid(),
            [portal("10.6.6.6"), node("iqn.rogue", 1)].concat(),
        );
        replace.flags = replace.flags | Flags::REPLACE;
        assert_eq!(status(&mut reg, &replace), expected, "{source}");
        let add_portal = req_from(source, FunctionId::DEV_ATTR_REG, eid(), portal("10.6.6.6"));
        assert_eq!(status(&mut reg, &add_portal), expected, "{source}");
        let by_node_key = req_from(
            source,
            FunctionId::DEV_ATTR_REG,
            vec![s(tag::ISCSI_NAME, "iqn.t1")],
            pg("iqn.t1", "127.0.0.1", None),
        );
        assert_eq!(status(&mut reg, &by_node_key), expected, "{source}");
        assert_eq!(reg, before, "{source} changed the registry");
    }
    assert_eq!(target_portals(&mut reg, "iqn.t1").len(), 3);
    // Deregistering nothing that exists stays a success for anyone.
    let nothing = req_from(
        "iqn.nobody",
        FunctionId::DEV_DEREG,
        vec![],
        vec![s(tag::ENTITY_IDENTIFIER, "nonexistent")],
    );
    assert_eq!(status(&mut reg, &nothing), Status::SUCCESS);
    // A fresh registration of a new entity stays open to anyone.
    ok(
        &mut reg,
        &req_from(
            "iqn.new",
            FunctionId::DEV_ATTR_REG,
            vec![s(tag::ENTITY_IDENTIFIER, "e3")],
            node("iqn.new", 2),
        ),
    );
}

#[test]
fn owners_update_and_deregister_their_entity() {
    let mut reg = storage_and_other();
    // The target's own NIL-PGT update, keyed by its entity, from its second node.
    ok(
        &mut reg,
        &req_from(
            "iqn.t2",
            FunctionId::DEV_ATTR_REG,
            vec![s(tag::ENTITY_IDENTIFIER, "stor1")],
            pg("iqn.t1", "127.0.0.1", None),
        ),
    );
    assert_eq!(
        target_portals(&mut reg, "iqn.t1"),
        ["127.0.0.2", "127.0.0.3"]
    );
    ok(
        &mut reg,
        &req(
            FunctionId::DEV_DEREG,
            vec![],
            vec![s(tag::ISCSI_NAME, "iqn.t2")],
        ),
    );
    ok(
        &mut reg,
        &req(
            FunctionId::DEV_DEREG,
            vec![],
            vec![s(tag::ENTITY_IDENTIFIER, "stor1")],
        ),
    );
    let ids: Vec<&str> = reg.entities().map(Entity::id).collect();
    assert_eq!(ids, ["other"]);
}

#[test]
fn control_nodes_may_change_any_entity() {
    let mut reg = storage_and_other();
    reg.set_control_nodes(["iqn.adm".to_string()]);
    let m = req_from(
        "iqn.adm",
        FunctionId::DEV_DEREG,
        vec![],
        vec![s(tag::ISCSI_NAME, "iqn.t2")],
    );
    ok(&mut reg, &m);
    let m = req_from(
        "iqn.adm",
        FunctionId::DEV_DEREG,
        vec![],
        vec![s(tag::ENTITY_IDENTIFIER, "stor1")],
    );
    ok(&mut reg, &m);
    assert_eq!(reg.entities().len(), 1);
}

#[test]
fn registration_period_is_granted_by_the_server() {
    let mut reg = Registry::new();
    reg.set_limits(Limits {
        default_registration_period: 900,
        max_registration_period: 86_400,
        ..Limits::default()
    });
    let with_period = |eid: &str, name: &str, period: u32| {
        req_from(
            name,
            FunctionId::DEV_ATTR_REG,
            vec![s(tag::ENTITY_IDENTIFIER, eid)],
            [
                vec![Attribute::u32(tag::REGISTRATION_PERIOD, period)],
                node(name, 1),
            ]
            .concat(),
        )
    };
    let granted = |resp: &Message| {
        resp.operating()
            .iter()
            .find(|a| a.tag == tag::REGISTRATION_PERIOD)
            .and_then(Attribute::as_u32)
    };
    // 0 (never expire) and more than the maximum are answered with the default.
    for (eid, name, asked, expect) in [
        ("zero", "iqn.zero", 0, 900),
        ("huge", "iqn.huge", u32::MAX, 900),
        ("max", "iqn.max", 86_400, 86_400),
        ("short", "iqn.short", 60, 60),
    ] {
        let (resp, _) = ok(&mut reg, &with_period(eid, name, asked));
        assert_eq!(granted(&resp), Some(expect), "{eid}");
        let e = reg.entities().find(|e| e.id() == eid).unwrap();
        assert_eq!(
            e.object
                .get(tag::REGISTRATION_PERIOD)
                .and_then(Attribute::as_u32),
            Some(expect),
            "{eid} stored"
        );
    }
    // An update asking for 0 again is granted the default too.
    let (resp, _) = ok(&mut reg, &with_period("short", "iqn.short", 0));
    assert_eq!(granted(&resp), Some(900));
    // Registered at t=1000 with 900 s: gone after 1900.
    assert!(!reg.has_expired(1900));
    let out = reg.expire(1901);
    assert_eq!(out.changes.removed.len(), 3);
    let ids: Vec<_> = reg.entities().map(Entity::id).collect();
    assert_eq!(ids, ["max"]);
    assert!(reg.expire(1000 + 86_400).changes.is_empty());
    assert!(!reg.expire(1000 + 86_400 + 1).changes.is_empty());
    assert!(reg.entities().len() == 0);
}

#[test]
fn stored_period_of_zero_expires_after_the_default() {
    // An entity stored by an older version with period 0 is not kept forever.
    let mut reg = Registry::new();
    let r = req_from(
        "iqn.z",
        FunctionId::DEV_ATTR_REG,
        vec![s(tag::ENTITY_IDENTIFIER, "z")],
        node("iqn.z", 1),
    );
    ok(&mut reg, &r);
    let mut entities = reg.entities().cloned().collect::<Vec<_>>();
    entities[0]
        .object
        .set(Attribute::u32(tag::REGISTRATION_PERIOD, 0));
    let mut reg = Registry::from_parts(entities, reg.counters());
    let late = 1000 + u64::from(DEFAULT_REGISTRATION_PERIOD) + 1;
    assert!(reg.has_expired(late));
    assert_eq!(reg.expire(late).changes.removed.len(), 1);
}

#[test]
fn entities_per_client_address_are_limited() {
    let mut reg = Registry::new();
    let a: IpAddr = "127.0.0.10".parse().unwrap();
    let b: IpAddr = "127.0.0.11".parse().unwrap();
    // A new entity under a fresh source name each time, as a flood would.
    let register = |reg: &mut Registry, i: usize, from: IpAddr| {
        let name = format!("iqn.flood{i}");
        let r = req_from(
            &name,
            FunctionId::DEV_ATTR_REG,
            vec![s(tag::ENTITY_IDENTIFIER, &format!("e{i}"))],
            node(&name, 1),
        );
        reg.handle_from(&r, 1000, Some(from))
            .response
            .unwrap()
            .status
            .unwrap()
    };
    for i in 0..MAX_ENTITIES_PER_ADDRESS {
        assert_eq!(register(&mut reg, i, a), Status::SUCCESS, "{i}");
    }
    assert_eq!(reg.entities_of(a), 64);
    let before = reg.clone();
    assert_eq!(register(&mut reg, 64, a), Status::INVALID_REGISTRATION);
    assert_eq!(reg, before, "a refused registration changes nothing");
    assert_eq!(register(&mut reg, 65, b), Status::SUCCESS);
    // Updating an entity it already holds is still allowed at the limit.
    let update = req_from(
        "iqn.flood3",
        FunctionId::DEV_ATTR_REG,
        vec![s(tag::ENTITY_IDENTIFIER, "e3")],
        portal("10.0.0.3"),
    );
    let resp = reg.handle_from(&update, 1001, Some(a)).response.unwrap();
    assert_eq!(resp.status, Some(Status::SUCCESS));
    // Deregistering one of the first address's entities frees its quota.
    let dereg = req_from(
        "iqn.flood0",
        FunctionId::DEV_DEREG,
        vec![],
        vec![s(tag::ENTITY_IDENTIFIER, "e0")],
    );
    let resp = reg.handle_from(&dereg, 1002, Some(a)).response.unwrap();
    assert_eq!(resp.status, Some(Status::SUCCESS));
    assert_eq!(reg.entities_of(a), 63);
    assert_eq!(register(&mut reg, 66, a), Status::SUCCESS);
    assert_eq!(register(&mut reg, 67, a), Status::INVALID_REGISTRATION);
    // Expiry frees the quota too.
    let late = 1002 + u64::from(DEFAULT_REGISTRATION_PERIOD) + 1;
    assert_eq!(reg.expire(late).changes.removed.len(), 65);
    assert_eq!(reg.entities_of(a), 0);
    assert_eq!(register(&mut reg, 68, a), Status::SUCCESS);
}

#[test]
fn per_address_limit_is_configurable_and_unknown_addresses_are_not_counted() {
    let mut reg = Registry::new();
    reg.set_limits(Limits {
        max_entities_per_address: 2,
        ..Limits::default()
    });
    let a: IpAddr = "192.0.2.1".parse().unwrap();
    let r = |i: usize| {
        let name = format!("iqn.n{i}");
        req_from(
            &name,
            FunctionId::DEV_ATTR_REG,
            vec![s(tag::ENTITY_IDENTIFIER, &format!("n{i}"))],
            node(&name, 1),
        )
    };
    let status = |o: Outcome| o.response.unwrap().status.unwrap();
    assert_eq!(status(reg.handle_from(&r(0), 1, Some(a))), Status::SUCCESS);
    assert_eq!(status(reg.handle_from(&r(1), 1, Some(a))), Status::SUCCESS);
    assert_eq!(
        status(reg.handle_from(&r(2), 1, Some(a))),
        Status::INVALID_REGISTRATION
    );
    // `handle` (no address known) is bounded only by the total.
    assert_eq!(status(reg.handle(&r(3), 1)), Status::SUCCESS);
    // After a reload the addresses are unknown: nothing is counted.
    let mut reloaded =
        Registry::from_parts(reg.entities().cloned().collect::<Vec<_>>(), reg.counters());
    reloaded.set_limits(Limits {
        max_entities_per_address: 2,
        ..Limits::default()
    });
    assert_eq!(reloaded.entities_of(a), 0);
    assert_eq!(
        status(reloaded.handle_from(&r(4), 1, Some(a))),
        Status::SUCCESS
    );
}
