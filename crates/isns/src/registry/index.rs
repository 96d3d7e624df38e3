//! Lookup indexes of the registry: iSCSI Name, Portal (IP address, port) and
//! Entity Identifier → the holding entity's registration seq, and the
//! entities with SCN subscribers (§6.4.4). Keys are the attribute values as
//! stored (the bytes `Object::matches` compares). The registry updates them
//! on every insertion and removal of an entity, so a lookup is exact.

use std::collections::{BTreeSet, HashMap};

use isns_proto::Attribute;
use isns_proto::tag::{self, ObjectType};

use super::Entity;

/// Indexes over all entities.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Indexes {
    pub(crate) by_name: HashMap<Vec<u8>, u64>,
    pub(crate) by_portal: HashMap<(Vec<u8>, Vec<u8>), u64>,
    pub(crate) by_eid: HashMap<Vec<u8>, u64>,
    /// Entities with a node holding an SCN bitmap, in registration order.
    pub(crate) subscribers: BTreeSet<u64>,
}

/// The index key of an object's full key attributes, when it is indexed.
fn portal_key(ip: &[u8], port: &[u8]) -> (Vec<u8>, Vec<u8>) {
    (ip.to_vec(), port.to_vec())
}

impl Indexes {
    /// Index every object of `e`.
    pub(crate) fn add(&mut self, e: &Entity) {
        if let Some(a) = e.object.get(tag::ENTITY_IDENTIFIER) {
            self.by_eid.insert(a.value.clone(), e.seq);
        }
        let mut subscribed = false;
        for o in &e.children {
            match o.kind {
                ObjectType::IscsiNode => {
                    if let Some(a) = o.get(tag::ISCSI_NAME) {
                        self.by_name.insert(a.value.clone(), e.seq);
                    }
                    subscribed |= o.get(tag::ISCSI_SCN_BITMAP).is_some();
                }
                ObjectType::Portal => {
                    if let (Some(ip), Some(port)) =
                        (o.get(tag::PORTAL_IP_ADDRESS), o.get(tag::PORTAL_PORT))
                    {
                        self.by_portal
                            .insert(portal_key(&ip.value, &port.value), e.seq);
                    }
                }
                _ => {}
            }
        }
        if subscribed {
            self.subscribers.insert(e.seq);
        }
    }

    /// Drop the index entries of `e` (those still pointing at it).
    pub(crate) fn remove(&mut self, e: &Entity) {
        let seq = e.seq;
        if let Some(a) = e.object.get(tag::ENTITY_IDENTIFIER)
            && self.by_eid.get(&a.value) == Some(&seq)
        {
            self.by_eid.remove(&a.value);
        }
        for o in &e.children {
            match o.kind {
                ObjectType::IscsiNode => {
                    if let Some(a) = o.get(tag::ISCSI_NAME)
                        && self.by_name.get(&a.value) == Some(&seq)
                    {
                        self.by_name.remove(&a.value);
                    }
                }
                ObjectType::Portal => {
                    if let (Some(ip), Some(port)) =
                        (o.get(tag::PORTAL_IP_ADDRESS), o.get(tag::PORTAL_PORT))
                    {
                        let k = portal_key(&ip.value, &port.value);
                        if self.by_portal.get(&k) == Some(&seq) {
                            self.by_portal.remove(&k);
                        }
                    }
                }
                _ => {}
            }
        }
        self.subscribers.remove(&seq);
    }

    /// The entity holding the object named by a complete, non-NIL `key` of
    /// `kind`. `None` when the key is not one the indexes answer (partial,
    /// NIL, a Portal Group key): the caller walks the entities then.
    pub(crate) fn lookup(&self, kind: ObjectType, key: &[Attribute]) -> Option<Option<u64>> {
        if key.iter().any(Attribute::is_nil) {
            return None;
        }
        match (kind, key) {
            (ObjectType::Entity, [eid]) if eid.tag == tag::ENTITY_IDENTIFIER => {
                Some(self.by_eid.get(&eid.value).copied())
            }
            (ObjectType::IscsiNode, [name]) if name.tag == tag::ISCSI_NAME => {
                Some(self.by_name.get(&name.value).copied())
            }
            (ObjectType::Portal, [a, b]) => {
                let (ip, port) = match (a.tag, b.tag) {
                    (tag::PORTAL_IP_ADDRESS, tag::PORTAL_PORT) => (a, b),
                    (tag::PORTAL_PORT, tag::PORTAL_IP_ADDRESS) => (b, a),
                    _ => return None,
                };
                Some(
                    self.by_portal
                        .get(&portal_key(&ip.value, &port.value))
                        .copied(),
                )
            }
            _ => None,
        }
    }
}
