//! DevAttrReg, RFC 4171 §5.6.5.1: register or update a Network Entity and
//! its Portals, iSCSI Storage Nodes and Portal Groups, creating implicit
//! Portal Groups with PGT 1 for new node/portal pairs.

use std::net::IpAddr;

use isns_proto::tag::{self, ObjectType};
use isns_proto::{Attribute, Message, Status};

use super::{Answer, Changes, Entity, Registry, Res, ScnEvent, pg_key_for};
use crate::object::Object;

impl Registry {
    pub(super) fn dev_attr_reg(
        &mut self,
        req: &Message,
        now: u64,
        client: Option<IpAddr>,
        ch: &mut Changes,
    ) -> Answer {
        let replace = req.flags.contains(isns_proto::Flags::REPLACE);
        let groups = split_objects(req.operating())?;
        let pos = self.entity_for_registration(req.key(), &groups)?;
        if let Some(p) = pos {
            // Changing an existing entity: only its own nodes (or a Control Node) may.
            self.authorize(req, p)?;
        }
        let mut entity = match pos {
            Some(p) => self
                .entities
                .get(&p)
                .cloned()
                .ok_or(Status::INTERNAL_ERROR)?,
            None => {
                self.admit_entity(client)?;
                let eid = match groups
                    .entity
                    .iter()
                    .chain(req.key())
                    .find(|a| a.tag == tag::ENTITY_IDENTIFIER)
                {
                    Some(a) if a.as_str().is_some_and(|s| !s.is_empty()) => a.clone(),
                    _ => {
                        let id = format!("isns.entity.{:04}", self.counters.next_auto_eid);
                        self.counters.next_auto_eid += 1;
                        Attribute::string(tag::ENTITY_IDENTIFIER, &id)
                    }
                };
                let seq = self.counters.next_seq;
                self.counters.next_seq += 1;
                let index = self.alloc_index();
                Entity::new(
                    seq,
                    Object::new(ObjectType::Entity, index, vec![eid]),
                    now,
                    Vec::new(),
                )
            }
        };
        if replace && pos.is_some() {
            // §5.6.5.1: with the replace bit, the entity's previous objects are removed.
            for obj in std::mem::take(&mut entity.children) {
                ch.scn.push(ScnEvent {
                    event: tag::scn::OBJECT_REMOVED,
                    object_key: obj.key(),
                });
            }
            let eid = entity.object.get(tag::ENTITY_IDENTIFIER).cloned();
            entity.object.attrs.clear();
            entity.object.attrs.extend(eid);
        }
        for a in &groups.entity {
            if !matches!(
                a.tag,
                tag::ENTITY_IDENTIFIER
                    | tag::ENTITY_INDEX
                    | tag::TIMESTAMP
                    | tag::ENTITY_NEXT_INDEX
            ) {
                entity.object.set(a.clone());
            }
        }
        if entity.object.get(tag::ENTITY_PROTOCOL).is_none() {
            entity.object.set(Attribute::u32(tag::ENTITY_PROTOCOL, 2));
        }
        // The period is the server's to grant (§6.2.6): 0 (never expire) or
        // more than the maximum is answered with, and stored as, the default.
        let asked = entity
            .object
            .get(tag::REGISTRATION_PERIOD)
            .and_then(Attribute::as_u32);
        let granted = self.limits.grant(asked);
        entity
            .object
            .set(Attribute::u32(tag::REGISTRATION_PERIOD, granted));
        entity.timestamp = now;

        // First pass: portals and nodes; second pass: explicit portal groups.
        let mut touched = Vec::new();
        for g in groups
            .objects
            .iter()
            .filter(|g| g.kind != ObjectType::PortalGroup)
        {
            let key = key_of(g)?;
            if g.kind == ObjectType::IscsiNode
                && let Some(name) = key.first()
                && let Some(owner) = self.entity_of_node(name)
                && Some(owner) != pos
            {
                return Err(Status::INVALID_REGISTRATION);
            }
            let i = self.upsert_child(&mut entity, g, &key, ch)?;
            touched.push(i);
        }
        for g in groups
            .objects
            .iter()
            .filter(|g| g.kind == ObjectType::PortalGroup)
        {
            let key = key_of(g)?;
            let [name, ip, port] = key.as_slice() else {
                return Err(Status::INVALID_REGISTRATION);
            };
            let node_key = [Attribute {
                tag: tag::ISCSI_NAME,
                value: name.value.clone(),
            }];
            let portal_key = [
                Attribute {
                    tag: tag::PORTAL_IP_ADDRESS,
                    value: ip.value.clone(),
                },
                Attribute {
                    tag: tag::PORTAL_PORT,
                    value: port.value.clone(),
                },
            ];
            if entity
                .find_child(ObjectType::IscsiNode, &node_key)
                .is_none()
                || entity.find_child(ObjectType::Portal, &portal_key).is_none()
            {
                // open-isns refuses PGs linking objects of different entities.
                return Err(Status::INVALID_REGISTRATION);
            }
            let i = self.upsert_child(&mut entity, g, &key, ch)?;
            touched.push(i);
        }
        // Implicit PGs with PGT 1 for every new node/portal pair (§5.6.5.1).
        for &i in &touched {
            let Some(obj) = entity.children.get(i).cloned() else {
                continue;
            };
            let others: Vec<Object> = match obj.kind {
                ObjectType::IscsiNode => entity.of_kind(ObjectType::Portal).cloned().collect(),
                ObjectType::Portal => entity.of_kind(ObjectType::IscsiNode).cloned().collect(),
                _ => continue,
            };
            for other in others {
                let (node, portal) = if obj.kind == ObjectType::IscsiNode {
                    (&obj, &other)
                } else {
                    (&other, &obj)
                };
                let Some(pg_key) = pg_key_for(node, portal) else {
                    continue;
                };
                if entity
                    .find_child(ObjectType::PortalGroup, &pg_key)
                    .is_none()
                {
                    let mut attrs = pg_key;
                    attrs.push(Attribute::u32(tag::PG_TAG, 1));
                    let index = self.alloc_index();
                    entity
                        .children
                        .push(Object::new(ObjectType::PortalGroup, index, attrs));
                }
            }
        }
        if entity.children.len() > self.limits.max_objects_per_entity {
            tracing::warn!(
                entity = entity.id(),
                objects = entity.children.len(),
                limit = self.limits.max_objects_per_entity,
                "registration refused: too many objects for one entity (status 3)"
            );
            return Err(Status::INVALID_REGISTRATION);
        }
        self.esi_grant(&mut entity, granted)?;
        // Response: the entity key, then entity and registered objects (§5.7.5.1).
        let key = vec![
            entity
                .object
                .get(tag::ENTITY_IDENTIFIER)
                .cloned()
                .ok_or(Status::INTERNAL_ERROR)?,
        ];
        let mut operating = entity.object.attrs.clone();
        for &i in &touched {
            if let Some(o) = entity.children.get(i) {
                operating.extend(o.attributes(entity.timestamp));
            }
        }
        ch.upserted.insert(entity.seq);
        if pos.is_none() {
            ch.scn.push(ScnEvent {
                event: tag::scn::OBJECT_ADDED,
                object_key: entity.object.key(),
            });
            self.set_owner(entity.seq, client);
        }
        self.put_entity(entity);
        Ok((key, operating))
    }

    /// Which existing entity (if any) a registration applies to (§5.6.5.1 message key rules).
    fn entity_for_registration(&self, key: &[Attribute], groups: &Groups) -> Res<Option<u64>> {
        let Some(first) = key.first() else {
            // No key: a new entity, unless the operating attributes name an existing one.
            return Ok(groups
                .entity
                .iter()
                .find(|a| a.tag == tag::ENTITY_IDENTIFIER && !a.is_nil())
                .and_then(|a| self.entity_by_id(std::slice::from_ref(a))));
        };
        match ObjectType::of_tag(first.tag) {
            Some(ObjectType::Entity) => {
                if first.as_str().is_none_or(str::is_empty) {
                    return Ok(None);
                }
                Ok(self.entity_by_id(key))
            }
            Some(kind @ (ObjectType::IscsiNode | ObjectType::Portal)) => self
                .locate(kind, key)
                .map(|(p, _)| Some(p))
                .ok_or(Status::INVALID_REGISTRATION),
            _ => Err(Status::INVALID_REGISTRATION),
        }
    }

    /// Insert or update a child object; returns its position.
    fn upsert_child(
        &mut self,
        entity: &mut Entity,
        g: &Group,
        key: &[Attribute],
        ch: &mut Changes,
    ) -> Res<usize> {
        if let Some(i) = entity.find_child(g.kind, key) {
            let obj = entity.children.get_mut(i).ok_or(Status::INTERNAL_ERROR)?;
            for a in &g.attrs {
                if a.tag != g.kind.index_tag() {
                    obj.set(a.clone());
                }
            }
            ch.scn.push(ScnEvent {
                event: tag::scn::OBJECT_UPDATED,
                object_key: obj.key(),
            });
            return Ok(i);
        }
        if g.kind == ObjectType::Portal
            && self
                .locate(g.kind, key)
                .is_some_and(|(seq, _)| seq != entity.seq)
        {
            return Err(Status::INVALID_REGISTRATION);
        }
        let attrs: Vec<Attribute> = g
            .attrs
            .iter()
            .filter(|a| a.tag != g.kind.index_tag())
            .cloned()
            .collect();
        let index = self.alloc_index();
        let obj = Object::new(g.kind, index, attrs);
        ch.scn.push(ScnEvent {
            event: tag::scn::OBJECT_ADDED,
            object_key: obj.key(),
        });
        entity.children.push(obj);
        Ok(entity.children.len() - 1)
    }
}

/// Operating attributes split into the entity's attributes and child objects.
#[derive(Debug, Default)]
pub(super) struct Groups {
    pub(super) entity: Vec<Attribute>,
    pub(super) objects: Vec<Group>,
}

#[derive(Debug)]
pub(super) struct Group {
    pub(super) kind: ObjectType,
    pub(super) attrs: Vec<Attribute>,
}

/// Split operating attributes into objects: a key attribute (Portal IP address,
/// iSCSI Name, PG iSCSI Name) starts a new object; following attributes of the
/// same type belong to it (§5.6.5.1). Unknown tags are ignored.
pub(super) fn split_objects(ops: &[Attribute]) -> Res<Groups> {
    let mut g = Groups::default();
    for a in ops {
        let Some(kind) = ObjectType::of_tag(a.tag) else {
            continue;
        };
        if kind == ObjectType::Entity {
            g.entity.push(a.clone());
            continue;
        }
        let starts = a.tag == kind.key_tags().first().copied().unwrap_or(0);
        match g.objects.last_mut() {
            Some(cur) if cur.kind == kind && !starts => cur.attrs.push(a.clone()),
            _ if starts => g.objects.push(Group {
                kind,
                attrs: vec![a.clone()],
            }),
            _ => return Err(Status::INVALID_REGISTRATION),
        }
    }
    Ok(g)
}

/// Key attributes of an object group; all must be present and non-NIL.
pub(super) fn key_of(g: &Group) -> Res<Vec<Attribute>> {
    g.kind
        .key_tags()
        .iter()
        .map(|t| {
            g.attrs
                .iter()
                .find(|a| a.tag == *t && !a.is_nil())
                .cloned()
                .ok_or(Status::INVALID_REGISTRATION)
        })
        .collect()
}
