//! The whole fleet as one iSNS registry shows it (`portshift status --isns`): every Network
//! Entity (a storage system), its portals, its Storage Nodes, and for each target node which
//! of its entity's portals it is registered through and which registrations are deleted.
//!
//! Sans-IO: [`queries`] are the requests, [`Fleet::add`] reads their answers. Four DevAttrQry
//! (RFC 4171 §5.6.5.2) with a NIL key list every entity, portal, node and Portal Group in
//! registration order; each listed object comes after its entity's Entity Identifier, which is
//! how portals, nodes and PGs are attributed to entities.
//!
//! How a deleted registration is known: an entity registers all of its portals and all of its
//! target nodes, so every (target, portal) pair of one entity is a registration the storage
//! system could offer. A pair is registered when a Portal Group joins them with a PGT (§6.5.4),
//! and deleted when its Portal Group has a NIL tag — how a balancer deletes a registration
//! (patent step 107) — or no Portal Group joins them at all: then a query for the target does
//! not return that portal (§3.4).

use std::net::SocketAddr;

use isns_proto::attr::socket_addr;
use isns_proto::tag;
use isns_proto::{Attribute, FunctionId, Message, Status};

use crate::client::ClientError;

/// One registration of a target: the pair (target, `portal`) and its PGT, `None` when deleted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PortalRegistration {
    pub portal: SocketAddr,
    /// The Portal Group Tag; `None`: deleted (a NIL tag, or no Portal Group).
    pub tag: Option<u32>,
}

impl PortalRegistration {
    pub fn deleted(&self) -> bool {
        self.tag.is_none()
    }
}

/// A Storage Node of an entity.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeView {
    pub name: String,
    /// iSCSI Node Type bits (§6.4.2); 0 when not given.
    pub node_type: u32,
    /// For a target: one registration per portal of its entity, in portal order.
    pub registrations: Vec<PortalRegistration>,
}

impl NodeView {
    pub fn is_target(&self) -> bool {
        self.node_type & tag::node_type::TARGET != 0
    }
}

/// A Network Entity (a storage system, or a host).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EntityView {
    pub id: String,
    /// Its portals in registration order.
    pub portals: Vec<SocketAddr>,
    /// Its nodes in registration order.
    pub nodes: Vec<NodeView>,
}

/// A Portal Group as listed: node, portal, tag (`None`: NIL or absent).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pg {
    entity: usize,
    node: String,
    portal: Option<SocketAddr>,
    tag: Option<u32>,
}

/// The fleet, built from the answers to [`queries`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Fleet {
    /// Entities in registration order.
    pub entities: Vec<EntityView>,
    #[serde(skip)]
    pgs: Vec<Pg>,
}

/// The four requests, sent as `source`: entities, portals, nodes, Portal Groups.
pub fn queries(source: &str) -> [Message; 4] {
    let q = |key: &[u32], wanted: &[u32]| {
        Message::request(
            FunctionId::DEV_ATTR_QRY,
            0,
            Attribute::string(tag::ISCSI_NAME, source),
            key.iter().copied().map(Attribute::nil).collect(),
            std::iter::once(tag::ENTITY_IDENTIFIER)
                .chain(wanted.iter().copied())
                .map(Attribute::nil)
                .collect(),
        )
    };
    let portal = [tag::PORTAL_IP_ADDRESS, tag::PORTAL_PORT];
    let pg = [
        tag::PG_ISCSI_NAME,
        tag::PG_PORTAL_IP_ADDR,
        tag::PG_PORTAL_PORT,
    ];
    [
        q(&[tag::ENTITY_IDENTIFIER], &[]),
        q(&portal, &portal),
        q(&[tag::ISCSI_NAME], &[tag::ISCSI_NAME, tag::ISCSI_NODE_TYPE]),
        q(&pg, &[pg[0], pg[1], pg[2], tag::PG_TAG]),
    ]
}

impl Fleet {
    /// Reads one answer to a [`queries`] request. A status other than Success is an error;
    /// attributes out of place (an object before any Entity Identifier, a port without an
    /// address) are skipped.
    pub fn add(&mut self, resp: &Message) -> Result<(), ClientError> {
        match resp.status {
            Some(Status::SUCCESS) => {}
            Some(status) => {
                return Err(ClientError::Status {
                    function: "DevAttrQry",
                    status,
                });
            }
            None => return Err(ClientError::Proto(isns_proto::Error::MissingStatus)),
        }
        let mut entity: Option<usize> = None;
        let mut ip: Option<&Attribute> = None;
        let mut pg_ip: Option<&Attribute> = None;
        for a in resp.operating() {
            match a.tag {
                tag::ENTITY_IDENTIFIER => {
                    let Some(id) = a.as_str() else { continue };
                    entity = Some(self.entity(id));
                }
                tag::PORTAL_IP_ADDRESS => ip = Some(a),
                tag::PORTAL_PORT => {
                    let (Some(e), Some(addr)) = (entity, ip.take().and_then(|i| socket_addr(i, a)))
                    else {
                        continue;
                    };
                    let portals = &mut self.entities[e].portals;
                    if !portals.contains(&addr) {
                        portals.push(addr);
                    }
                }
                tag::ISCSI_NAME => {
                    let (Some(e), Some(name)) = (entity, a.as_str()) else {
                        continue;
                    };
                    let nodes = &mut self.entities[e].nodes;
                    if !nodes.iter().any(|n| n.name == name) {
                        nodes.push(NodeView {
                            name: name.to_string(),
                            node_type: 0,
                            registrations: Vec::new(),
                        });
                    }
                }
                tag::ISCSI_NODE_TYPE => {
                    let (Some(e), Some(bits)) = (entity, a.as_u32()) else {
                        continue;
                    };
                    if let Some(n) = self.entities[e].nodes.last_mut() {
                        n.node_type = bits;
                    }
                }
                tag::PG_ISCSI_NAME => {
                    let (Some(e), Some(node)) = (entity, a.as_str()) else {
                        continue;
                    };
                    self.pgs.push(Pg {
                        entity: e,
                        node: node.to_string(),
                        portal: None,
                        tag: None,
                    });
                }
                tag::PG_PORTAL_IP_ADDR => pg_ip = Some(a),
                tag::PG_PORTAL_PORT => {
                    if let Some(pg) = self.pgs.last_mut() {
                        pg.portal = pg_ip.take().and_then(|i| socket_addr(i, a));
                    }
                }
                tag::PG_TAG => {
                    if let Some(pg) = self.pgs.last_mut() {
                        pg.tag = a.as_u32().filter(|t| *t != 0);
                    }
                }
                _ => {}
            }
        }
        self.settle();
        Ok(())
    }

    /// Index of the entity `id`, added at the end when new.
    fn entity(&mut self, id: &str) -> usize {
        match self.entities.iter().position(|e| e.id == id) {
            Some(i) => i,
            None => {
                self.entities.push(EntityView {
                    id: id.to_string(),
                    portals: Vec::new(),
                    nodes: Vec::new(),
                });
                self.entities.len() - 1
            }
        }
    }

    /// Works out every target's registrations from its entity's portals and the PGs seen.
    fn settle(&mut self) {
        for (i, e) in self.entities.iter_mut().enumerate() {
            for n in e.nodes.iter_mut().filter(|n| n.is_target()) {
                n.registrations = e
                    .portals
                    .iter()
                    .map(|p| PortalRegistration {
                        portal: *p,
                        tag: self
                            .pgs
                            .iter()
                            .filter(|pg| pg.entity == i && pg.node == n.name)
                            .find(|pg| pg.portal == Some(*p))
                            .and_then(|pg| pg.tag),
                    })
                    .collect();
            }
        }
    }

    /// The deleted (target, portal) registrations, in entity, target and portal order.
    pub fn deleted(&self) -> Vec<(&str, SocketAddr)> {
        self.entities
            .iter()
            .flat_map(|e| &e.nodes)
            .flat_map(|n| {
                n.registrations
                    .iter()
                    .filter(|r| r.deleted())
                    .map(move |r| (n.name.as_str(), r.portal))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{NodeRegistration, NodeType, PortalGroupRegistration, Registration};
    use proptest::prelude::*;

    fn ask(r: &mut crate::Registry, source: &str) -> Fleet {
        let mut fleet = Fleet::default();
        for q in queries(source) {
            let resp = r.handle(&q, 1).response.unwrap();
            fleet.add(&resp).unwrap();
        }
        fleet
    }

    /// Two storage systems; one has deleted (t1, P0) with a NIL tag. The fleet lists both
    /// entities with their portals and nodes in registration order, t1 registered through P1
    /// only, t2 through both, and the one deleted pair.
    #[test]
    fn lists_entities_portals_targets_and_deleted_registrations() {
        let mut r = crate::Registry::new();
        let p = |s: &str| s.parse::<SocketAddr>().unwrap();
        let target = |n: &str| NodeRegistration {
            name: n.into(),
            node_type: NodeType::Target,
            alias: None,
        };
        let pgs = |node: &str, portals: &[SocketAddr]| -> Vec<PortalGroupRegistration> {
            portals
                .iter()
                .map(|pt| PortalGroupRegistration {
                    node: node.into(),
                    portal: *pt,
                    tag: 1,
                })
                .collect()
        };
        let (a0, a1, b0) = (
            p("127.0.0.1:3260"),
            p("127.0.0.2:3260"),
            p("127.0.0.3:3260"),
        );
        let a = Registration {
            entity: "array-a".into(),
            portals: vec![a0, a1],
            nodes: vec![target("iqn.t1"), target("iqn.t2")],
            portal_groups: [pgs("iqn.t1", &[a0, a1]), pgs("iqn.t2", &[a0, a1])].concat(),
            ..Registration::default()
        };
        let b = Registration {
            entity: "array-b".into(),
            portals: vec![b0],
            nodes: vec![target("iqn.t3")],
            portal_groups: pgs("iqn.t3", &[b0]),
            ..Registration::default()
        };
        for reg in [&a, &b] {
            let resp = r
                .handle(&crate::request::dev_attr_reg(reg).unwrap(), 1)
                .response
                .unwrap();
            assert_eq!(resp.status, Some(Status::SUCCESS));
        }
        let del = crate::request::portal_group_tag("array-a", "iqn.t1", a0, None);
        assert_eq!(
            r.handle(&del, 1).response.unwrap().status,
            Some(Status::SUCCESS)
        );

        let fleet = ask(&mut r, "iqn.2024-01.test:status");
        let ids: Vec<_> = fleet.entities.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["array-a", "array-b"]);
        assert_eq!(fleet.entities[0].portals, [a0, a1]);
        assert_eq!(fleet.entities[1].portals, [b0]);
        let names: Vec<_> = fleet.entities[0].nodes.iter().map(|n| &n.name).collect();
        assert_eq!(names, ["iqn.t1", "iqn.t2"]);
        let t1 = &fleet.entities[0].nodes[0];
        assert!(t1.is_target());
        assert_eq!(
            t1.registrations,
            [
                PortalRegistration {
                    portal: a0,
                    tag: None
                },
                PortalRegistration {
                    portal: a1,
                    tag: Some(1)
                }
            ]
        );
        assert!(
            fleet.entities[0].nodes[1]
                .registrations
                .iter()
                .all(|r| r.tag == Some(1))
        );
        assert_eq!(fleet.deleted(), [("iqn.t1", a0)]);
    }

    /// A refusal is an error, not an empty fleet.
    #[test]
    fn a_refusal_is_an_error() {
        let q = &queries("iqn.x")[0];
        let resp = Message::error_response(q.function, 1, Status::SOURCE_UNAUTHORIZED);
        assert!(Fleet::default().add(&resp).is_err());
    }

    proptest! {
        /// Any answer, however its attributes are ordered or filled, is read without a panic.
        #[test]
        fn any_answer_is_read_without_panic(
            attrs in prop::collection::vec(
                (prop::sample::select(vec![
                    tag::ENTITY_IDENTIFIER, tag::PORTAL_IP_ADDRESS, tag::PORTAL_PORT,
                    tag::ISCSI_NAME, tag::ISCSI_NODE_TYPE, tag::PG_ISCSI_NAME,
                    tag::PG_PORTAL_IP_ADDR, tag::PG_PORTAL_PORT, tag::PG_TAG, 0u32, 7,
                ]), prop::collection::vec(any::<u8>(), 0..20)),
                0..60,
            )
        ) {
            let q = &queries("iqn.x")[3];
            let operating = attrs
                .into_iter()
                .map(|(t, v)| Attribute { tag: t, value: v })
                .collect();
            let resp = Message::response(q, Status::SUCCESS, vec![], operating);
            let mut fleet = Fleet::default();
            prop_assert!(fleet.add(&resp).is_ok());
            let _ = fleet.deleted();
        }
    }
}
