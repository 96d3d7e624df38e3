//! DDReg/DDDereg/DDSReg/DDSDereg and DD visibility (RFC 4171 §2.2.2,
//! §5.6.5.9–12), against the RFC; isnsd-compatible details are checked by the
//! isnsadm comparison in crates/portshift/tests/isns_interop.rs.

use super::*;
use crate::registry::tests::{node, ok, portal, req_from, s};
use isns_proto::{FunctionId, tag};

const ADM: &str = "iqn.adm";

fn adm(f: FunctionId, key: Vec<Attribute>, ops: Vec<Attribute>) -> Message {
    req_from(ADM, f, key, ops)
}

/// Entity `eid` with one portal and node `name` (registered by itself).
fn register(reg: &mut Registry, eid: &str, name: &str, addr: &str) {
    let ops = [portal(addr), node(name, tag::node_type::INITIATOR)].concat();
    ok(
        reg,
        &req_from(
            name,
            FunctionId::DEV_ATTR_REG,
            vec![s(tag::ENTITY_IDENTIFIER, eid)],
            ops,
        ),
    );
}

/// t (target), h1, h2, h3 registered; `iqn.adm` is a Control Node.
fn world(default_dd: bool) -> Registry {
    let mut reg = Registry::new();
    reg.set_default_dd(default_dd);
    reg.set_control_nodes([ADM.to_string()]);
    register(&mut reg, "st", "iqn.t", "127.0.0.1");
    register(&mut reg, "e1", "iqn.h1", "127.0.0.11");
    register(&mut reg, "e2", "iqn.h2", "127.0.0.12");
    register(&mut reg, "e3", "iqn.h3", "127.0.0.13");
    reg
}

fn members(names: &[&str]) -> Vec<Attribute> {
    names.iter().map(|n| s(DD_MEMBER_ISCSI_NAME, n)).collect()
}

/// DDReg creating a DD named `name`; returns its ID.
fn dd_reg(reg: &mut Registry, name: &str, names: &[&str]) -> u32 {
    let mut ops = vec![s(DD_SYMBOLIC_NAME, name)];
    ops.extend(members(names));
    let (resp, ch) = ok(reg, &adm(FunctionId::DD_REG, vec![], ops));
    assert!(ch.domains);
    resp.operating()
        .iter()
        .find(|a| a.tag == DD_ID)
        .and_then(Attribute::as_u32)
        .unwrap()
}

/// iSCSI names `source` sees by DevGetNext over nodes (as `isnsadm --list nodes`).
fn listed_nodes(reg: &mut Registry, source: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut key = Attribute::nil(tag::ISCSI_NAME);
    loop {
        let m = req_from(source, FunctionId::DEV_GET_NEXT, vec![key.clone()], vec![]);
        let resp = reg.handle(&m, 1000).response.unwrap();
        if resp.status != Some(Status::SUCCESS) {
            return out;
        }
        key = resp.key()[0].clone();
        out.push(key.as_str().unwrap().to_string());
    }
}

/// iSCSI names in `source`'s DevAttrQry for node `name`.
fn query_names(reg: &mut Registry, source: &str, name: &str) -> Vec<String> {
    let m = req_from(
        source,
        FunctionId::DEV_ATTR_QRY,
        vec![s(tag::ISCSI_NAME, name)],
        vec![],
    );
    let (resp, _) = ok(reg, &m);
    resp.operating()
        .iter()
        .filter(|a| a.tag == tag::ISCSI_NAME || a.tag == tag::ENTITY_IDENTIFIER)
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn default_dd_on_lets_nodes_in_no_dd_see_each_other() {
    let mut reg = world(true);
    assert_eq!(
        listed_nodes(&mut reg, "iqn.h1"),
        ["iqn.t", "iqn.h1", "iqn.h2", "iqn.h3"]
    );
    // A source that is no registered node sees the default DD too (isnsd).
    assert_eq!(listed_nodes(&mut reg, "iqn.nobody").len(), 4);
}

#[test]
fn default_dd_off_shows_only_the_own_entity() {
    let mut reg = world(false);
    assert_eq!(listed_nodes(&mut reg, "iqn.h1"), ["iqn.h1"]);
    assert!(listed_nodes(&mut reg, "iqn.nobody").is_empty());
    assert!(query_names(&mut reg, "iqn.h1", "iqn.t").is_empty());
    // Control nodes see everything.
    assert_eq!(listed_nodes(&mut reg, ADM).len(), 4);
}

#[test]
fn members_of_a_dd_see_each_other_and_nobody_else() {
    for default_dd in [true, false] {
        let mut reg = world(default_dd);
        let id = dd_reg(&mut reg, "dd1", &["iqn.t", "iqn.h1"]);
        assert_eq!(id, 1, "the server assigns the first DD ID");
        assert_eq!(listed_nodes(&mut reg, "iqn.h1"), ["iqn.t", "iqn.h1"]);
        assert_eq!(
            query_names(&mut reg, "iqn.h1", "iqn.t"),
            ["st", "iqn.t"],
            "entity and node of a DD partner"
        );
        // h2 is in no DD: it sees the default DD's members (h3) when on.
        let h2 = listed_nodes(&mut reg, "iqn.h2");
        if default_dd {
            assert_eq!(h2, ["iqn.h2", "iqn.h3"]);
        } else {
            assert_eq!(h2, ["iqn.h2"]);
        }
        assert!(query_names(&mut reg, "iqn.h2", "iqn.t").is_empty());
    }
}

#[test]
fn portals_and_portal_groups_follow_their_node() {
    let mut reg = world(false);
    dd_reg(&mut reg, "dd1", &["iqn.t", "iqn.h1"]);
    let portals = |reg: &mut Registry, src: &str| {
        let m = req_from(
            src,
            FunctionId::DEV_ATTR_QRY,
            vec![Attribute::nil(tag::PORTAL_IP_ADDRESS)],
            vec![Attribute::nil(tag::PORTAL_IP_ADDRESS)],
        );
        ok(reg, &m).0.operating().len()
    };
    assert_eq!(
        portals(&mut reg, "iqn.h1"),
        2,
        "own portal and the target's"
    );
    assert_eq!(portals(&mut reg, "iqn.h2"), 1, "only its own");
    let pgs = |reg: &mut Registry, src: &str| {
        let m = req_from(
            src,
            FunctionId::DEV_ATTR_QRY,
            vec![Attribute::nil(tag::PG_ISCSI_NAME)],
            vec![Attribute::nil(tag::PG_ISCSI_NAME)],
        );
        ok(reg, &m).0.operating().len()
    };
    assert_eq!(pgs(&mut reg, "iqn.h1"), 2);
    assert_eq!(pgs(&mut reg, "iqn.h3"), 1);
}

#[test]
fn adding_and_removing_members_and_deregistering_a_dd() {
    let mut reg = world(false);
    let id = dd_reg(&mut reg, "dd1", &["iqn.t", "iqn.h1"]);
    // Add h2 by ID (message key).
    let (resp, _) = ok(
        &mut reg,
        &adm(
            FunctionId::DD_REG,
            vec![Attribute::u32(DD_ID, id)],
            members(&["iqn.h2"]),
        ),
    );
    let names: Vec<_> = resp
        .operating()
        .iter()
        .filter(|a| a.tag == DD_MEMBER_ISCSI_NAME)
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(names, ["iqn.t", "iqn.h1", "iqn.h2"], "members in order");
    assert_eq!(
        listed_nodes(&mut reg, "iqn.h2"),
        ["iqn.t", "iqn.h1", "iqn.h2"]
    );
    // Remove h1.
    ok(
        &mut reg,
        &adm(
            FunctionId::DD_DEREG,
            vec![Attribute::u32(DD_ID, id)],
            members(&["iqn.h1"]),
        ),
    );
    assert_eq!(listed_nodes(&mut reg, "iqn.h1"), ["iqn.h1"]);
    assert_eq!(listed_nodes(&mut reg, "iqn.h2"), ["iqn.t", "iqn.h2"]);
    // Deregister the DD: members stay registered, see only themselves.
    ok(
        &mut reg,
        &adm(
            FunctionId::DD_DEREG,
            vec![Attribute::u32(DD_ID, id)],
            vec![],
        ),
    );
    assert_eq!(listed_nodes(&mut reg, "iqn.h2"), ["iqn.h2"]);
    assert_eq!(listed_nodes(&mut reg, ADM).len(), 4);
    assert!(reg.domains().dds().is_empty());
}

#[test]
fn a_member_may_be_named_before_it_registers() {
    let mut reg = world(false);
    let (resp, _) = ok(
        &mut reg,
        &adm(
            FunctionId::DD_REG,
            vec![],
            members(&["iqn.h1", "iqn.later"]),
        ),
    );
    let idx: Vec<u32> = resp
        .operating()
        .iter()
        .filter(|a| a.tag == DD_MEMBER_ISCSI_INDEX)
        .map(|a| a.as_u32().unwrap())
        .collect();
    assert_eq!(idx.len(), 2);
    assert!(
        idx[1] != 0,
        "an index is handed out for the unregistered member"
    );
    register(&mut reg, "e9", "iqn.later", "127.0.0.19");
    assert_eq!(listed_nodes(&mut reg, "iqn.later"), ["iqn.h1", "iqn.later"]);
}

#[test]
fn malformed_and_unauthorized_dd_requests_get_a_clear_status() {
    let mut reg = world(true);
    let id = dd_reg(&mut reg, "dd1", &["iqn.h1"]);
    let cases = [
        // Not a Control Node.
        (
            req_from("iqn.h1", FunctionId::DD_REG, vec![], members(&["iqn.h2"])),
            Status::SOURCE_UNAUTHORIZED,
        ),
        // Unknown DD_ID in the key.
        (
            adm(FunctionId::DD_REG, vec![Attribute::u32(DD_ID, 99)], vec![]),
            Status::INVALID_REGISTRATION,
        ),
        // Key of the wrong tag, or DD_ID 0.
        (
            adm(FunctionId::DD_REG, vec![s(tag::ISCSI_NAME, "x")], vec![]),
            Status::INVALID_REGISTRATION,
        ),
        (
            adm(FunctionId::DD_REG, vec![Attribute::u32(DD_ID, 0)], vec![]),
            Status::INVALID_REGISTRATION,
        ),
        // Name taken by another DD.
        (
            adm(FunctionId::DD_REG, vec![], vec![s(DD_SYMBOLIC_NAME, "dd1")]),
            Status::INVALID_REGISTRATION,
        ),
        // ID taken.
        (
            adm(FunctionId::DD_REG, vec![], vec![Attribute::u32(DD_ID, id)]),
            Status::INVALID_REGISTRATION,
        ),
        // Portal member address without its port; short address.
        (
            adm(
                FunctionId::DD_REG,
                vec![],
                vec![Attribute::ip(
                    DD_MEMBER_PORTAL_IP_ADDR,
                    [127, 0, 0, 1].into(),
                )],
            ),
            Status::INVALID_REGISTRATION,
        ),
        (
            adm(
                FunctionId::DD_REG,
                vec![],
                vec![
                    Attribute::u32(DD_MEMBER_PORTAL_IP_ADDR, 1),
                    Attribute::u32(DD_MEMBER_PORTAL_PORT, 3260),
                ],
            ),
            Status::INVALID_REGISTRATION,
        ),
        // Empty member name, a member index nobody has, a foreign tag.
        (
            adm(
                FunctionId::DD_REG,
                vec![],
                vec![s(DD_MEMBER_ISCSI_NAME, "")],
            ),
            Status::INVALID_REGISTRATION,
        ),
        (
            adm(
                FunctionId::DD_REG,
                vec![],
                vec![Attribute::u32(DD_MEMBER_ISCSI_INDEX, 9999)],
            ),
            Status::INVALID_REGISTRATION,
        ),
        (
            adm(FunctionId::DD_REG, vec![], node("iqn.x", 1)),
            Status::INVALID_REGISTRATION,
        ),
        // DDDereg of an unknown DD, without key.
        (
            adm(
                FunctionId::DD_DEREG,
                vec![Attribute::u32(DD_ID, 77)],
                vec![],
            ),
            Status::INVALID_DEREGISTRATION,
        ),
        (
            adm(FunctionId::DD_DEREG, vec![], vec![]),
            Status::INVALID_DEREGISTRATION,
        ),
        // DDS: unknown member DD, unknown set.
        (
            adm(FunctionId::DDS_REG, vec![], vec![Attribute::u32(DD_ID, 55)]),
            Status::INVALID_REGISTRATION,
        ),
        (
            adm(
                FunctionId::DDS_DEREG,
                vec![Attribute::u32(DDS_ID, 5)],
                vec![],
            ),
            Status::INVALID_DEREGISTRATION,
        ),
        (
            req_from("iqn.h1", FunctionId::DDS_REG, vec![], vec![]),
            Status::SOURCE_UNAUTHORIZED,
        ),
    ];
    let before = reg.clone();
    for (m, want) in cases {
        let out = reg.handle(&m, 1000);
        assert_eq!(out.response.unwrap().status, Some(want), "{m:?}");
        assert!(out.changes.is_empty(), "a refused request changes nothing");
    }
    assert_eq!(reg, before);
    assert_eq!(reg.domains().dds().len(), 1);
}

#[test]
fn dd_objects_are_queried_and_walked_like_isnsd() {
    let mut reg = world(true);
    dd_reg(&mut reg, "dd1", &["iqn.t", "iqn.h1"]);
    dd_reg(&mut reg, "dd2", &["iqn.h2"]);
    let walk = |reg: &mut Registry, src: &str| {
        let mut ids = Vec::new();
        let mut key = Attribute::nil(DD_ID);
        loop {
            let m = req_from(src, FunctionId::DEV_GET_NEXT, vec![key.clone()], vec![]);
            let resp = reg.handle(&m, 1000).response.unwrap();
            if resp.status != Some(Status::SUCCESS) {
                assert_eq!(resp.status, Some(Status::NO_SUCH_ENTRY));
                return ids;
            }
            key = resp.key()[0].clone();
            ids.push(key.as_u32().unwrap());
        }
    };
    assert_eq!(
        walk(&mut reg, ADM),
        [0, 1, 2],
        "the default DD is listed as 0"
    );
    assert_eq!(walk(&mut reg, "iqn.h1"), [1]);
    assert_eq!(walk(&mut reg, "iqn.h3"), [0]);
    let (resp, _) = ok(
        &mut reg,
        &req_from(
            "iqn.h1",
            FunctionId::DEV_ATTR_QRY,
            vec![Attribute::u32(DD_ID, 1)],
            vec![],
        ),
    );
    let tags: Vec<u32> = resp.operating().iter().map(|a| a.tag).collect();
    assert_eq!(
        tags,
        [
            DD_ID,
            DD_SYMBOLIC_NAME,
            DD_FEATURES,
            DD_MEMBER_ISCSI_INDEX,
            DD_MEMBER_ISCSI_NAME,
            DD_MEMBER_ISCSI_INDEX,
            DD_MEMBER_ISCSI_NAME
        ]
    );
    // A non-member's query of dd1 is empty.
    let (resp, _) = ok(
        &mut reg,
        &req_from(
            "iqn.h2",
            FunctionId::DEV_ATTR_QRY,
            vec![Attribute::u32(DD_ID, 1)],
            vec![],
        ),
    );
    assert!(resp.operating().is_empty());
}

#[test]
fn a_disabled_dds_hides_its_dds_members_from_each_other() {
    let mut reg = world(false);
    let dd = dd_reg(&mut reg, "dd1", &["iqn.t", "iqn.h1"]);
    assert_eq!(listed_nodes(&mut reg, "iqn.h1"), ["iqn.t", "iqn.h1"]);
    // A new set is disabled unless its status says otherwise.
    let (resp, ch) = ok(
        &mut reg,
        &adm(
            FunctionId::DDS_REG,
            vec![],
            vec![s(DDS_SYMBOLIC_NAME, "set1"), Attribute::u32(DD_ID, dd)],
        ),
    );
    assert!(ch.domains);
    assert_eq!(
        resp.operating(),
        [
            Attribute::u32(DDS_ID, 1),
            s(DDS_SYMBOLIC_NAME, "set1"),
            Attribute::u32(DDS_STATUS, 0),
            Attribute::u32(DD_ID, dd),
        ]
    );
    assert_eq!(listed_nodes(&mut reg, "iqn.h1"), ["iqn.h1"], "set disabled");
    // Enable it (DDS Status bit 0).
    ok(
        &mut reg,
        &adm(
            FunctionId::DDS_REG,
            vec![Attribute::u32(DDS_ID, 1)],
            vec![Attribute::u32(DDS_STATUS, DDS_ENABLED)],
        ),
    );
    assert_eq!(listed_nodes(&mut reg, "iqn.h1"), ["iqn.t", "iqn.h1"]);
    // A second, disabled set holding the DD does not hide it: one enabled set is enough.
    ok(
        &mut reg,
        &adm(FunctionId::DDS_REG, vec![], vec![Attribute::u32(DD_ID, dd)]),
    );
    assert_eq!(listed_nodes(&mut reg, "iqn.h1"), ["iqn.t", "iqn.h1"]);
    // Take the DD out of the enabled set: only the disabled one holds it.
    ok(
        &mut reg,
        &adm(
            FunctionId::DDS_DEREG,
            vec![Attribute::u32(DDS_ID, 1)],
            vec![Attribute::u32(DD_ID, dd)],
        ),
    );
    assert_eq!(listed_nodes(&mut reg, "iqn.h1"), ["iqn.h1"]);
    // Remove the disabled set: a DD in no set is active again.
    ok(
        &mut reg,
        &adm(
            FunctionId::DDS_DEREG,
            vec![Attribute::u32(DDS_ID, 2)],
            vec![],
        ),
    );
    assert_eq!(listed_nodes(&mut reg, "iqn.h1"), ["iqn.t", "iqn.h1"]);
    // DDS objects are queried by DDS key.
    let (resp, _) = ok(
        &mut reg,
        &adm(
            FunctionId::DEV_GET_NEXT,
            vec![Attribute::nil(DDS_ID)],
            vec![],
        ),
    );
    assert_eq!(resp.key(), [Attribute::u32(DDS_ID, 1)]);
}

#[test]
fn membership_changes_notify_the_members_concerned() {
    let mut reg = world(false);
    for n in ["iqn.t", "iqn.h1", "iqn.h2"] {
        ok(
            &mut reg,
            &req_from(
                n,
                FunctionId::SCN_REG,
                vec![s(tag::ISCSI_NAME, n)],
                vec![Attribute::u32(
                    tag::ISCSI_SCN_BITMAP,
                    tag::scn::DD_MEMBER_ADDED
                        | tag::scn::DD_MEMBER_REMOVED
                        | tag::scn::OBJECT_ADDED,
                )],
            ),
        );
    }
    let out = reg.handle(
        &adm(FunctionId::DD_REG, vec![], members(&["iqn.t", "iqn.h1"])),
        1000,
    );
    let to = |out: &super::super::Outcome| -> Vec<String> {
        out.notifications
            .iter()
            .map(|n| n.message.key()[0].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(to(&out), ["iqn.t", "iqn.h1"], "h2 is not told");
    let bits: Vec<u32> = out.notifications[0]
        .message
        .key()
        .iter()
        .filter(|a| a.tag == tag::ISCSI_SCN_BITMAP)
        .map(|a| a.as_u32().unwrap())
        .collect();
    assert_eq!(bits, [tag::scn::DD_MEMBER_ADDED]);
    // A new node's registration is told only to those who can see it (nobody: default off).
    let ops = [portal("127.0.0.30"), node("iqn.h9", 2)].concat();
    let out = reg.handle(
        &req_from(
            "iqn.h9",
            FunctionId::DEV_ATTR_REG,
            vec![s(tag::ENTITY_IDENTIFIER, "e9")],
            ops,
        ),
        1000,
    );
    assert!(to(&out).is_empty(), "{:?}", to(&out));
    let out = reg.handle(
        &adm(
            FunctionId::DD_DEREG,
            vec![Attribute::u32(DD_ID, 1)],
            members(&["iqn.h1"]),
        ),
        1000,
    );
    assert_eq!(to(&out), ["iqn.t", "iqn.h1"]);
}

#[test]
fn portal_group_changes_reach_only_who_sees_the_target() {
    // The balancer deletes a (target, portal) registration with a NIL-PGT Portal Group
    // (DevAttrReg); the SCN about it goes only to subscribers that share a DD with the target.
    let mut reg = world(false);
    dd_reg(&mut reg, "dd1", &["iqn.t", "iqn.h1"]);
    for n in ["iqn.h1", "iqn.h2"] {
        ok(
            &mut reg,
            &req_from(
                n,
                FunctionId::SCN_REG,
                vec![s(tag::ISCSI_NAME, n)],
                vec![Attribute::u32(
                    tag::ISCSI_SCN_BITMAP,
                    tag::scn::OBJECT_UPDATED | tag::scn::OBJECT_ADDED,
                )],
            ),
        );
    }
    let pg = crate::registry::tests::pg("iqn.t", "127.0.0.1", None);
    let out = reg.handle(
        &req_from(
            "iqn.t",
            FunctionId::DEV_ATTR_REG,
            vec![s(tag::ENTITY_IDENTIFIER, "st")],
            pg,
        ),
        1000,
    );
    assert_eq!(out.response.unwrap().status, Some(Status::SUCCESS));
    let to: Vec<_> = out
        .notifications
        .iter()
        .map(|n| n.message.key()[0].as_str().unwrap().to_string())
        .collect();
    assert_eq!(to, ["iqn.h1"]);
}

#[test]
fn domains_survive_a_store_reload() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dd.redb");
    let mut reg = world(true);
    {
        let store = crate::store::Store::open(&path).unwrap();
        let all = Changes {
            upserted: reg.entities().map(|e| e.seq).collect(),
            ..Changes::default()
        };
        store.commit(&reg, &all).unwrap();
        let apply = |reg: &mut Registry, m: &Message| {
            let out = reg.handle(m, 1000);
            assert_eq!(out.response.unwrap().status, Some(Status::SUCCESS));
            store.commit(reg, &out.changes).unwrap();
        };
        apply(
            &mut reg,
            &adm(FunctionId::DD_REG, vec![], members(&["iqn.t", "iqn.ghost"])),
        );
        apply(
            &mut reg,
            &adm(
                FunctionId::DDS_REG,
                vec![],
                vec![
                    Attribute::u32(DDS_STATUS, DDS_ENABLED),
                    Attribute::u32(DD_ID, 1),
                ],
            ),
        );
        let ops = [portal("127.0.0.40"), node("iqn.h4", 2)].concat();
        apply(
            &mut reg,
            &req_from(
                "iqn.h4",
                FunctionId::DEV_ATTR_REG,
                vec![s(tag::ENTITY_IDENTIFIER, "e4")],
                ops,
            ),
        );
    }
    let loaded = crate::store::Store::open(&path).unwrap().load().unwrap();
    assert_eq!(loaded, reg);
    assert_eq!(loaded.domains().dds(), reg.domains().dds());
    assert_eq!(loaded.domains().sets(), reg.domains().sets());
    assert_eq!(loaded.domains().next_ids(), reg.domains().next_ids());
}

mod props {
    //! Random DD/DDS operation sequences: never a panic, the indexes stay
    //! consistent, a refused request changes nothing, and DD partners in an
    //! active DD see each other.
    use super::*;
    use proptest::prelude::*;

    const NAMES: [&str; 5] = ["iqn.t", "iqn.h1", "iqn.h2", "iqn.h3", "iqn.ghost"];
    const SOURCES: [&str; 3] = [ADM, "iqn.h1", "iqn.nobody"];

    fn member() -> impl Strategy<Value = Vec<Attribute>> {
        prop_oneof![
            (0..NAMES.len()).prop_map(|i| vec![s(DD_MEMBER_ISCSI_NAME, NAMES[i])]),
            (0u32..12).prop_map(|i| vec![Attribute::u32(DD_MEMBER_ISCSI_INDEX, i)]),
            (1u8..4).prop_map(|d| vec![
                Attribute::ip(DD_MEMBER_PORTAL_IP_ADDR, [127, 0, 0, d].into()),
                Attribute::u32(DD_MEMBER_PORTAL_PORT, 3260),
            ]),
        ]
    }

    /// An attribute of the DD/DDS ranges with a value that may be malformed.
    fn any_dd_attr() -> impl Strategy<Value = Attribute> {
        (
            prop_oneof![Just(DD_ID), Just(DDS_ID), 2049u32..2080, 0u32..70],
            prop::collection::vec(any::<u8>(), 0..9),
        )
            .prop_map(|(tag, value)| Attribute { tag, value })
    }

    fn op() -> impl Strategy<Value = Message> {
        let id = || prop_oneof![Just(None), (0u32..5).prop_map(Some)];
        let key = move |t: u32| {
            id().prop_map(move |i| {
                i.map(|i| Attribute::u32(t, i))
                    .into_iter()
                    .collect::<Vec<_>>()
            })
        };
        let name = prop::option::of(prop_oneof![Just("a"), Just("b"), Just("")]);
        prop_oneof![
            (
                0..SOURCES.len(),
                key(DD_ID),
                name.clone(),
                prop::collection::vec(member(), 0..4)
            )
                .prop_map(|(src, key, name, members)| {
                    let mut ops: Vec<Attribute> =
                        name.map(|n| s(DD_SYMBOLIC_NAME, n)).into_iter().collect();
                    ops.extend(members.concat());
                    req_from(SOURCES[src], FunctionId::DD_REG, key, ops)
                }),
            (
                0..SOURCES.len(),
                key(DD_ID),
                prop::collection::vec(member(), 0..3)
            )
                .prop_map(|(src, key, members)| {
                    req_from(SOURCES[src], FunctionId::DD_DEREG, key, members.concat())
                }),
            (
                0..SOURCES.len(),
                key(DDS_ID),
                prop::option::of(0u32..4),
                prop::collection::vec(0u32..5, 0..3)
            )
                .prop_map(|(src, key, status, dds)| {
                    let mut ops: Vec<Attribute> = status
                        .map(|v| Attribute::u32(DDS_STATUS, v))
                        .into_iter()
                        .collect();
                    ops.extend(dds.into_iter().map(|d| Attribute::u32(DD_ID, d)));
                    req_from(SOURCES[src], FunctionId::DDS_REG, key, ops)
                }),
            (
                0..SOURCES.len(),
                key(DDS_ID),
                prop::collection::vec(0u32..5, 0..2)
            )
                .prop_map(|(src, key, dds)| {
                    let ops = dds.into_iter().map(|d| Attribute::u32(DD_ID, d)).collect();
                    req_from(SOURCES[src], FunctionId::DDS_DEREG, key, ops)
                }),
            (
                prop_oneof![
                    Just(FunctionId::DD_REG),
                    Just(FunctionId::DD_DEREG),
                    Just(FunctionId::DDS_REG),
                    Just(FunctionId::DDS_DEREG),
                    Just(FunctionId::DEV_ATTR_QRY),
                    Just(FunctionId::DEV_GET_NEXT)
                ],
                prop::collection::vec(any_dd_attr(), 0..3),
                prop::collection::vec(any_dd_attr(), 0..5),
            )
                .prop_map(|(f, key, ops)| adm(f, key, ops)),
            (0..4usize).prop_map(|i| {
                let n = NAMES[i];
                let ops = [portal(&format!("127.0.0.{}", 50 + i)), node(n, 2)].concat();
                req_from(
                    n,
                    FunctionId::DEV_ATTR_REG,
                    vec![s(tag::ENTITY_IDENTIFIER, &format!("p{i}"))],
                    ops,
                )
            }),
            (0..4usize).prop_map(|i| {
                adm(
                    FunctionId::DEV_DEREG,
                    vec![],
                    vec![s(tag::ISCSI_NAME, NAMES[i])],
                )
            }),
        ]
    }

    proptest! {
        #[test]
        fn random_dd_operations_keep_the_registry_consistent(
            default_dd in any::<bool>(),
            ops in prop::collection::vec(op(), 1..40),
        ) {
            let mut reg = world(default_dd);
            for m in &ops {
                let before = reg.clone();
                let out = reg.handle(m, 1000);
                let status = out.response.as_ref().and_then(|r| r.status).unwrap();
                if status != Status::SUCCESS {
                    prop_assert!(out.changes.is_empty() && out.notifications.is_empty());
                    prop_assert_eq!(&reg, &before);
                    prop_assert_eq!(reg.domains().dds(), before.domains().dds());
                }
                // Responses encode and decode (the server sends them).
                let resp = out.response.unwrap();
                let mut dec = isns_proto::MessageDecoder::new();
                let mut buf = bytes::BytesMut::from(resp.to_bytes().as_slice());
                prop_assert!(dec.decode(&mut buf).is_ok());
                if let Err(e) = reg.domains().check() {
                    prop_assert!(false, "after {:?}: {}", m, e);
                }
            }
            // Members of a DD in no set see each other (sets aside: one may disable it).
            let d = reg.domains().clone();
            if d.sets().is_empty() {
                for dd in d.dds() {
                    let names: Vec<&str> = dd.members.iter().filter_map(|m| match m {
                        Member::Node { name, .. } => Some(name.as_str()),
                        Member::Portal { .. } => None,
                    }).collect();
                    for a in &names {
                        for b in &names {
                            prop_assert!(d.share_active(a, b));
                        }
                    }
                }
            }
        }

        #[test]
        fn malformed_dd_requests_get_a_clear_status(
            f in prop_oneof![
                Just(FunctionId::DD_REG),
                Just(FunctionId::DD_DEREG),
                Just(FunctionId::DDS_REG),
                Just(FunctionId::DDS_DEREG),
            ],
            len in prop_oneof![1usize..4, 5usize..8],
            bad_key in any::<bool>(),
        ) {
            // A non-NIL ID of the wrong length (not 4 bytes) in the key or among the operating
            // attributes.
            let id_tag = if f == FunctionId::DD_REG || f == FunctionId::DD_DEREG { DD_ID } else { DDS_ID };
            let bad = Attribute { tag: id_tag, value: vec![1; len] };
            let m = if bad_key {
                adm(f, vec![bad], vec![])
            } else {
                adm(f, vec![Attribute::u32(id_tag, 1)], vec![bad.clone(), bad])
            };
            let mut reg = world(true);
            dd_reg(&mut reg, "dd1", &["iqn.h1"]);
            ok(&mut reg, &adm(FunctionId::DDS_REG, vec![], vec![Attribute::u32(DD_ID, 1)]));
            let before = reg.clone();
            let out = reg.handle(&m, 1000);
            let status = out.response.unwrap().status.unwrap();
            prop_assert!(
                [Status::INVALID_REGISTRATION, Status::INVALID_DEREGISTRATION, Status::MESSAGE_FORMAT_ERROR]
                    .contains(&status),
                "{:?} answered {}", m, status
            );
            prop_assert!(out.changes.is_empty());
            prop_assert_eq!(reg, before);
        }
    }
}
