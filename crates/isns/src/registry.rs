//! The sans-IO iSNS registry: handles one request [`Message`] at a time and
//! returns the response, RFC 4171 §5.6.5 / §5.7.5.
//!
//! Behaviour follows what open-isns' isnsd does with `DefaultDiscoveryDomain = 1`
//! (every node can see every other node; discovery domains are not implemented):
//! implicit portal groups with PGT 1 for every node/portal pair of an entity,
//! query answers made of the container entity, the object and its related
//! objects, PGs with a NIL or 0 tag hiding a portal from a node. Unlike isnsd,
//! every listing is in registration order: entities in the order they were
//! first registered, objects inside an entity in the order they were registered.

use std::collections::BTreeSet;

use isns_proto::tag::{self, ObjectType};
use isns_proto::{Attribute, FunctionId, Message, Status};

use crate::object::Object;

/// Default registration period (§6.2.6) reported for entities that do not give one.
pub const DEFAULT_REGISTRATION_PERIOD: u32 = 3600;
/// Limits on the registry size, so that no client can exhaust memory.
pub const MAX_ENTITIES: usize = 4096;
pub const MAX_OBJECTS_PER_ENTITY: usize = 4096;

/// A Network Entity and the objects it contains (§4.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entity {
    /// Registration order of the entity; also its persistent key.
    pub seq: u64,
    pub object: Object,
    /// Time of last registration or update, seconds since the Unix epoch (§6.2.4).
    pub timestamp: u64,
    /// Portals, storage nodes and portal groups, in registration order.
    pub children: Vec<Object>,
}

impl Entity {
    /// Entity Identifier (§6.2.1).
    pub fn id(&self) -> &str {
        self.object.get_str(tag::ENTITY_IDENTIFIER).unwrap_or("")
    }

    /// Children of one kind, in registration order.
    pub fn of_kind(&self, kind: ObjectType) -> impl Iterator<Item = &Object> {
        self.children.iter().filter(move |o| o.kind == kind)
    }

    fn find_child(&self, kind: ObjectType, key: &[Attribute]) -> Option<usize> {
        self.children
            .iter()
            .position(|o| o.kind == kind && o.matches(key))
    }

    /// Portal groups with a usable (non-NIL, non-zero) tag that join `node` and `portal`
    /// keys, as open-isns uses them for relations.
    fn pg_between(&self, node: &Object, portal: &Object) -> Option<&Object> {
        let pg_key = pg_key_for(node, portal)?;
        self.of_kind(ObjectType::PortalGroup)
            .find(|pg| pg.matches(&pg_key))
    }
}

/// The PG key attributes (48, 49, 50) linking a node and a portal.
fn pg_key_for(node: &Object, portal: &Object) -> Option<Vec<Attribute>> {
    let name = node.get(tag::ISCSI_NAME)?;
    let ip = portal.get(tag::PORTAL_IP_ADDRESS)?;
    let port = portal.get(tag::PORTAL_PORT)?;
    Some(vec![
        Attribute {
            tag: tag::PG_ISCSI_NAME,
            value: name.value.clone(),
        },
        Attribute {
            tag: tag::PG_PORTAL_IP_ADDR,
            value: ip.value.clone(),
        },
        Attribute {
            tag: tag::PG_PORTAL_PORT,
            value: port.value.clone(),
        },
    ])
}

fn pg_usable(pg: &Object) -> bool {
    pg.get(tag::PG_TAG)
        .and_then(Attribute::as_u32)
        .is_some_and(|t| t != 0)
}

/// What a state change notification should report (§5.6.5.8, §6.4.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScnEvent {
    /// SCN event bit (`tag::scn::OBJECT_ADDED` etc.).
    pub event: u32,
    /// Key attributes of the changed object.
    pub object_key: Vec<Attribute>,
}

/// Persistent-state changes made by one request, for the store.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Entities (by seq) created or modified.
    pub upserted: BTreeSet<u64>,
    /// Entities (by seq) removed.
    pub removed: BTreeSet<u64>,
    /// State change notifications to send.
    pub scn: Vec<ScnEvent>,
}

impl Changes {
    /// Whether anything must be persisted.
    pub fn is_empty(&self) -> bool {
        self.upserted.is_empty() && self.removed.is_empty()
    }
}

/// The registry of all entities in registration order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registry {
    pub entities: Vec<Entity>,
    /// Next object index to hand out (open-isns style: one counter for all objects).
    pub next_index: u32,
    /// Next entity registration sequence number.
    pub next_seq: u64,
    /// Counter for server-assigned entity identifiers (`isns.entity.NNNN`).
    pub next_auto_eid: u32,
}

/// Error of a request: the status to return.
type Res<T> = Result<T, Status>;

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry {
            entities: Vec::new(),
            next_index: 1,
            next_seq: 1,
            next_auto_eid: 1,
        }
    }

    fn alloc_index(&mut self) -> u32 {
        let i = self.next_index;
        self.next_index = self.next_index.wrapping_add(1).max(1);
        i
    }

    /// Whether [`Registry::handle`] can record persistent [`Changes`] for
    /// `function` (the mutating requests of §5.6.5). Callers that persist the
    /// changes need an undo copy of the registry only for these.
    pub fn may_change(function: FunctionId) -> bool {
        matches!(
            function,
            FunctionId::DEV_ATTR_REG
                | FunctionId::DEV_DEREG
                | FunctionId::SCN_REG
                | FunctionId::SCN_DEREG
        )
    }

    /// Handle one request; `now` is seconds since the Unix epoch. Returns the
    /// response (if the function has one) and the state changes to persist.
    pub fn handle(&mut self, req: &Message, now: u64) -> (Option<Message>, Changes) {
        let mut changes = Changes::default();
        let f = req.function;
        let result = if f.is_response() || f == FunctionId::HEARTBEAT {
            // Responses to our own requests (e.g. ESI) and heartbeats need no answer.
            return (None, changes);
        } else if req.source().is_none() {
            Err(Status::SOURCE_ABSENT)
        } else {
            self.touch_source(req, now);
            match f {
                FunctionId::DEV_ATTR_REG => self.dev_attr_reg(req, now, &mut changes),
                FunctionId::DEV_ATTR_QRY => self.dev_attr_qry(req),
                FunctionId::DEV_GET_NEXT => self.dev_get_next(req),
                FunctionId::DEV_DEREG => self.dev_dereg(req, &mut changes),
                FunctionId::SCN_REG => self.scn_reg(req, true, &mut changes),
                FunctionId::SCN_DEREG => self.scn_reg(req, false, &mut changes),
                _ => Err(Status::MESSAGE_NOT_SUPPORTED),
            }
        };
        let resp = match result {
            Ok((key, operating)) => Message::response(req, Status::SUCCESS, key, operating),
            Err(status) => {
                changes = Changes::default();
                Message::error_response(f, req.xid, status)
            }
        };
        (Some(resp), changes)
    }

    /// Contact from a registered node keeps its entity registered (§6.2.6):
    /// the entity's timestamp is refreshed in memory (not persisted; loading
    /// the store grants a fresh period instead).
    fn touch_source(&mut self, req: &Message, now: u64) {
        let Some(src) = req.source().filter(|a| a.tag == tag::ISCSI_NAME) else {
            return;
        };
        if let Some(p) = self.entity_of_node(src)
            && let Some(e) = self.entities.get_mut(p)
        {
            e.timestamp = e.timestamp.max(now);
        }
    }

    /// Remove entities not refreshed within their Registration Period
    /// (§6.2.6; a period of 0 never expires). Returns the changes to persist.
    pub fn expire(&mut self, now: u64) -> Changes {
        let mut ch = Changes::default();
        self.entities.retain(|e| {
            let period = e
                .object
                .get(tag::REGISTRATION_PERIOD)
                .and_then(Attribute::as_u32)
                .unwrap_or(0);
            let alive = period == 0 || now <= e.timestamp.saturating_add(u64::from(period));
            if !alive {
                ch.removed.insert(e.seq);
                ch.scn.push(ScnEvent {
                    event: tag::scn::OBJECT_REMOVED,
                    object_key: e.object.key(),
                });
            }
            alive
        });
        ch
    }

    /// Give every entity a fresh registration period from `now` (after loading from disk).
    pub fn grant_grace(&mut self, now: u64) {
        for e in &mut self.entities {
            e.timestamp = e.timestamp.max(now);
        }
    }

    /// All objects of `kind` in registration order, with their entity.
    pub fn objects(&self, kind: ObjectType) -> Vec<(&Entity, &Object)> {
        self.entities
            .iter()
            .flat_map(|e| {
                let own = (kind == ObjectType::Entity).then_some((e, &e.object));
                own.into_iter().chain(e.of_kind(kind).map(move |o| (e, o)))
            })
            .collect()
    }

    /// Position of the entity and of its child of `kind` matching `key`.
    fn locate(&self, kind: ObjectType, key: &[Attribute]) -> Option<(usize, usize)> {
        self.entities
            .iter()
            .enumerate()
            .find_map(|(p, e)| Some((p, e.find_child(kind, key)?)))
    }

    /// The entity holding the node named by `name` (an iSCSI Name attribute, tag 32).
    fn entity_of_node(&self, name: &Attribute) -> Option<usize> {
        self.locate(ObjectType::IscsiNode, std::slice::from_ref(name))
            .map(|(p, _)| p)
    }

    // ---- DevAttrReg, §5.6.5.1 ----

    fn dev_attr_reg(
        &mut self,
        req: &Message,
        now: u64,
        ch: &mut Changes,
    ) -> Res<(Vec<Attribute>, Vec<Attribute>)> {
        let replace = req.flags.contains(isns_proto::Flags::REPLACE);
        let groups = split_objects(req.operating())?;
        let pos = self.entity_for_registration(req.key(), &groups)?;
        let mut entity = match pos {
            Some(p) => self
                .entities
                .get(p)
                .cloned()
                .ok_or(Status::INTERNAL_ERROR)?,
            None => {
                if self.entities.len() >= MAX_ENTITIES {
                    return Err(Status::INVALID_REGISTRATION);
                }
                let eid = match groups
                    .entity
                    .iter()
                    .chain(req.key())
                    .find(|a| a.tag == tag::ENTITY_IDENTIFIER)
                {
                    Some(a) if a.as_str().is_some_and(|s| !s.is_empty()) => a.clone(),
                    _ => {
                        let id = format!("isns.entity.{:04}", self.next_auto_eid);
                        self.next_auto_eid += 1;
                        Attribute::string(tag::ENTITY_IDENTIFIER, &id)
                    }
                };
                let seq = self.next_seq;
                self.next_seq += 1;
                let index = self.alloc_index();
                Entity {
                    seq,
                    object: Object::new(ObjectType::Entity, index, vec![eid]),
                    timestamp: now,
                    children: Vec::new(),
                }
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
        if entity.object.get(tag::REGISTRATION_PERIOD).is_none() {
            entity.object.set(Attribute::u32(
                tag::REGISTRATION_PERIOD,
                DEFAULT_REGISTRATION_PERIOD,
            ));
        }
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
        if entity.children.len() > MAX_OBJECTS_PER_ENTITY {
            return Err(Status::INVALID_REGISTRATION);
        }
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
        match pos {
            Some(p) => {
                if let Some(slot) = self.entities.get_mut(p) {
                    *slot = entity;
                }
            }
            None => {
                ch.scn.push(ScnEvent {
                    event: tag::scn::OBJECT_ADDED,
                    object_key: entity.object.key(),
                });
                self.entities.push(entity);
            }
        }
        Ok((key, operating))
    }

    /// Which existing entity (if any) a registration applies to (§5.6.5.1 message key rules).
    fn entity_for_registration(&self, key: &[Attribute], groups: &Groups) -> Res<Option<usize>> {
        let Some(first) = key.first() else {
            // No key: a new entity, unless the operating attributes name an existing one.
            return Ok(groups
                .entity
                .iter()
                .find(|a| a.tag == tag::ENTITY_IDENTIFIER && !a.is_nil())
                .and_then(|a| {
                    self.entities
                        .iter()
                        .position(|e| e.object.get(tag::ENTITY_IDENTIFIER) == Some(a))
                }));
        };
        match ObjectType::of_tag(first.tag) {
            Some(ObjectType::Entity) => {
                if first.as_str().is_none_or(str::is_empty) {
                    return Ok(None);
                }
                Ok(self.entities.iter().position(|e| e.object.matches(key)))
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
                .entities
                .iter()
                .any(|e| e.seq != entity.seq && e.find_child(g.kind, key).is_some())
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

    // ---- DevAttrQry, §5.6.5.2 ----

    fn dev_attr_qry(&self, req: &Message) -> Res<(Vec<Attribute>, Vec<Attribute>)> {
        let key = req.key();
        let kind = key_type(key)?;
        let wanted = req.operating();
        let mut found: Vec<(&Entity, &Object)> = Vec::new();
        for (e, o) in self.objects(kind) {
            if !key.is_empty() && !o.matches(key) {
                continue;
            }
            if kind != ObjectType::Entity {
                found.push((e, &e.object));
            }
            found.push((e, o));
            related(e, o, &mut found);
        }
        // No match: isnsd (open-isns 0.10x) answers Success with no operating
        // attributes, which isnsadm shows as an empty list; do the same.
        let mut operating = Vec::new();
        for (e, o) in found {
            let attrs = o.attributes(e.timestamp);
            if wanted.is_empty() {
                operating.extend(attrs);
            } else {
                for w in wanted {
                    operating.extend(attrs.iter().filter(|a| a.tag == w.tag).cloned());
                }
            }
        }
        Ok((key.to_vec(), operating))
    }

    // ---- DevGetNext, §5.6.5.3 ----

    fn dev_get_next(&self, req: &Message) -> Res<(Vec<Attribute>, Vec<Attribute>)> {
        let key = req.key();
        let kind = key_type(key)?;
        if key.is_empty() {
            return Err(Status::MESSAGE_FORMAT_ERROR);
        }
        let all = self.objects(kind);
        let next = if key.iter().all(Attribute::is_nil) {
            all.first()
        } else {
            let cur = all
                .iter()
                .position(|(_, o)| o.matches(key))
                .ok_or(Status::NO_SUCH_ENTRY)?;
            all.get(cur + 1)
        };
        let (e, o) = next.ok_or(Status::NO_SUCH_ENTRY)?;
        let attrs = o.attributes(e.timestamp);
        let wanted = req.operating();
        let operating = if wanted.is_empty() {
            attrs
        } else {
            attrs
                .into_iter()
                .filter(|a| wanted.iter().any(|w| w.tag == a.tag))
                .collect()
        };
        Ok((o.key(), operating))
    }

    // ---- DevDereg, §5.6.5.4 ----

    fn dev_dereg(
        &mut self,
        req: &Message,
        ch: &mut Changes,
    ) -> Res<(Vec<Attribute>, Vec<Attribute>)> {
        let groups = split_objects(req.operating())?;
        let mut targets: Vec<(ObjectType, Vec<Attribute>)> = Vec::new();
        if let Some(eid) = groups
            .entity
            .iter()
            .find(|a| a.tag == tag::ENTITY_IDENTIFIER)
        {
            targets.push((ObjectType::Entity, vec![eid.clone()]));
        }
        for g in &groups.objects {
            targets.push((g.kind, key_of(g)?));
        }
        for (kind, key) in targets {
            self.remove(kind, &key, ch);
        }
        Ok((Vec::new(), Vec::new()))
    }

    fn remove(&mut self, kind: ObjectType, key: &[Attribute], ch: &mut Changes) {
        if kind == ObjectType::Entity {
            if let Some(p) = self.entities.iter().position(|e| e.object.matches(key)) {
                let e = self.entities.remove(p);
                ch.removed.insert(e.seq);
                ch.upserted.remove(&e.seq);
                ch.scn.push(ScnEvent {
                    event: tag::scn::OBJECT_REMOVED,
                    object_key: e.object.key(),
                });
            }
            return;
        }
        let Some((p, i)) = self.locate(kind, key) else {
            return;
        };
        let Some(e) = self.entities.get_mut(p) else {
            return;
        };
        let obj = e.children.remove(i);
        ch.scn.push(ScnEvent {
            event: tag::scn::OBJECT_REMOVED,
            object_key: obj.key(),
        });
        // Removing a node or portal removes its portal groups (§5.6.5.4).
        let pg_tags: &[(u32, u32)] = match kind {
            ObjectType::IscsiNode => &[(tag::ISCSI_NAME, tag::PG_ISCSI_NAME)],
            ObjectType::Portal => &[
                (tag::PORTAL_IP_ADDRESS, tag::PG_PORTAL_IP_ADDR),
                (tag::PORTAL_PORT, tag::PG_PORTAL_PORT),
            ],
            _ => &[],
        };
        if !pg_tags.is_empty() {
            let pg_key: Vec<Attribute> = pg_tags
                .iter()
                .filter_map(|(from, to)| {
                    obj.get(*from).map(|a| Attribute {
                        tag: *to,
                        value: a.value.clone(),
                    })
                })
                .collect();
            e.children
                .retain(|c| !(c.kind == ObjectType::PortalGroup && c.matches(&pg_key)));
        }
        // An entity without nodes and portals is removed too (§5.6.5.4).
        if e.children.iter().all(|c| c.kind == ObjectType::PortalGroup) {
            let e = self.entities.remove(p);
            ch.removed.insert(e.seq);
            ch.scn.push(ScnEvent {
                event: tag::scn::OBJECT_REMOVED,
                object_key: e.object.key(),
            });
        } else {
            ch.upserted.insert(e.seq);
        }
    }

    // ---- SCNReg / SCNDereg, §5.6.5.5 and §5.6.5.6 ----

    fn scn_reg(
        &mut self,
        req: &Message,
        register: bool,
        ch: &mut Changes,
    ) -> Res<(Vec<Attribute>, Vec<Attribute>)> {
        let name = req
            .key()
            .iter()
            .find(|a| a.tag == tag::ISCSI_NAME)
            .ok_or(Status::MESSAGE_FORMAT_ERROR)?;
        let (p, i) = self
            .locate(ObjectType::IscsiNode, std::slice::from_ref(name))
            .ok_or(Status::NO_SUCH_ENTRY)?;
        let e = self.entities.get_mut(p).ok_or(Status::INTERNAL_ERROR)?;
        let node = e.children.get_mut(i).ok_or(Status::INTERNAL_ERROR)?;
        if register {
            let bitmap = req
                .operating()
                .iter()
                .find(|a| a.tag == tag::ISCSI_SCN_BITMAP)
                .and_then(Attribute::as_u32)
                .ok_or(Status::MESSAGE_FORMAT_ERROR)?;
            node.set(Attribute::u32(tag::ISCSI_SCN_BITMAP, bitmap));
        } else {
            node.unset(tag::ISCSI_SCN_BITMAP);
        }
        ch.upserted.insert(e.seq);
        Ok((Vec::new(), Vec::new()))
    }

    /// iSCSI names of nodes registered for SCNs, with their bitmap (§6.4.4).
    pub fn scn_subscribers(&self) -> Vec<(String, u32)> {
        self.objects(ObjectType::IscsiNode)
            .into_iter()
            .filter_map(|(_, n)| {
                let bitmap = n.get(tag::ISCSI_SCN_BITMAP)?.as_u32()?;
                Some((n.get_str(tag::ISCSI_NAME)?.to_string(), bitmap))
            })
            .collect()
    }
}

/// Related objects of a query match, as open-isns' `isns_scope_get_related`:
/// entity → its nodes, then (portal, PG) pairs; node → (portal, PG) pairs;
/// portal → (node, PG) pairs. PGs with a NIL or 0 tag relate nothing.
fn related<'a>(e: &'a Entity, o: &'a Object, out: &mut Vec<(&'a Entity, &'a Object)>) {
    let portals_of =
        |node: &'a Object, out: &mut Vec<(&'a Entity, &'a Object)>, seen: &mut Vec<u32>| {
            for portal in e.of_kind(ObjectType::Portal) {
                if let Some(pg) = e.pg_between(node, portal).filter(|pg| pg_usable(pg)) {
                    if !seen.contains(&portal.index) {
                        seen.push(portal.index);
                        out.push((e, portal));
                    }
                    out.push((e, pg));
                }
            }
        };
    match o.kind {
        ObjectType::Entity => {
            let mut seen = Vec::new();
            let mut pairs = Vec::new();
            for node in e.of_kind(ObjectType::IscsiNode) {
                out.push((e, node));
                portals_of(node, &mut pairs, &mut seen);
            }
            out.extend(pairs);
        }
        ObjectType::IscsiNode => portals_of(o, out, &mut Vec::new()),
        ObjectType::Portal => {
            for node in e.of_kind(ObjectType::IscsiNode) {
                if let Some(pg) = e.pg_between(node, o).filter(|pg| pg_usable(pg)) {
                    out.push((e, node));
                    out.push((e, pg));
                }
            }
        }
        ObjectType::PortalGroup => {}
    }
}

/// The single object type of a message key (§5.6.5.2: all key attributes
/// from one object type); an empty key means Network Entities.
fn key_type(key: &[Attribute]) -> Res<ObjectType> {
    let mut kind = None;
    for a in key {
        let k = ObjectType::of_tag(a.tag).ok_or(Status::ATTRIBUTE_NOT_IMPLEMENTED)?;
        if kind.is_some_and(|prev| prev != k) {
            return Err(Status::INVALID_QUERY);
        }
        kind = Some(k);
    }
    Ok(kind.unwrap_or(ObjectType::Entity))
}

/// Operating attributes split into the entity's attributes and child objects.
#[derive(Debug, Default)]
struct Groups {
    entity: Vec<Attribute>,
    objects: Vec<Group>,
}

#[derive(Debug)]
struct Group {
    kind: ObjectType,
    attrs: Vec<Attribute>,
}

/// Split operating attributes into objects: a key attribute (Portal IP address,
/// iSCSI Name, PG iSCSI Name) starts a new object; following attributes of the
/// same type belong to it (§5.6.5.1). Unknown tags are ignored.
fn split_objects(ops: &[Attribute]) -> Res<Groups> {
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
fn key_of(g: &Group) -> Res<Vec<Attribute>> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use isns_proto::Flags;
    use std::net::IpAddr;

    fn s(t: u32, v: &str) -> Attribute {
        Attribute::string(t, v)
    }
    fn ip(t: u32, v: &str) -> Attribute {
        Attribute::ip(t, v.parse::<IpAddr>().unwrap())
    }
    fn req(f: FunctionId, key: Vec<Attribute>, ops: Vec<Attribute>) -> Message {
        Message::request(f, 1, s(tag::ISCSI_NAME, "iqn.src"), key, ops)
    }
    fn portal(addr: &str) -> Vec<Attribute> {
        vec![
            ip(tag::PORTAL_IP_ADDRESS, addr),
            Attribute::tcp_port(tag::PORTAL_PORT, 3260),
        ]
    }
    fn node(name: &str, ty: u32) -> Vec<Attribute> {
        vec![
            s(tag::ISCSI_NAME, name),
            Attribute::u32(tag::ISCSI_NODE_TYPE, ty),
        ]
    }
    fn pg(name: &str, addr: &str, pgt: Option<u32>) -> Vec<Attribute> {
        vec![
            s(tag::PG_ISCSI_NAME, name),
            ip(tag::PG_PORTAL_IP_ADDR, addr),
            Attribute::tcp_port(tag::PG_PORTAL_PORT, 3260),
            pgt.map_or(Attribute::nil(tag::PG_TAG), |t| {
                Attribute::u32(tag::PG_TAG, t)
            }),
        ]
    }
    fn ok(reg: &mut Registry, m: &Message) -> (Message, Changes) {
        let (resp, ch) = reg.handle(m, 1000);
        let resp = resp.unwrap();
        assert_eq!(resp.status, Some(Status::SUCCESS), "{m:?}");
        (resp, ch)
    }
    /// stor1 with portals .2, .1, .3 (in that order) and targets t1, t2.
    fn storage() -> Registry {
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
        let (resp, _) = reg.handle(&q, 0);
        let resp = resp.unwrap();
        crate::client::portals_from_pgs(resp.operating(), target)
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
        assert_eq!(reg.entities[0].id(), "isns.entity.0001");
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
        let e = &reg.entities[0];
        assert_eq!(e.of_kind(ObjectType::IscsiNode).count(), 1);
        assert_eq!(e.of_kind(ObjectType::Portal).count(), 1);
        assert_eq!(e.of_kind(ObjectType::PortalGroup).count(), 1);
        // Without the flag, objects are added.
        ok(
            &mut reg,
            &req(
                FunctionId::DEV_ATTR_REG,
                vec![s(tag::ENTITY_IDENTIFIER, "stor1")],
                node("iqn.t4", 1),
            ),
        );
        assert_eq!(reg.entities[0].of_kind(ObjectType::IscsiNode).count(), 2);
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
            reg.handle(&m, 0).0.unwrap().status,
            Some(Status::INVALID_REGISTRATION)
        );
        assert_eq!(reg.entities.len(), 1);
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
        assert!(reg.entities.is_empty());
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
            let (resp, _) = reg.handle(&req(FunctionId::DEV_GET_NEXT, key.clone(), vec![]), 0);
            let resp = resp.unwrap();
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
            reg.handle(&mixed, 0).0.unwrap().status,
            Some(Status::INVALID_QUERY)
        );
        let mut anon = req(FunctionId::DEV_ATTR_QRY, vec![], vec![]);
        anon.attrs.remove(0);
        assert_eq!(
            reg.handle(&anon, 0).0.unwrap().status,
            Some(Status::SOURCE_ABSENT)
        );
        let unsupported = req(FunctionId::DD_REG, vec![], vec![]);
        assert_eq!(
            reg.handle(&unsupported, 0).0.unwrap().status,
            Some(Status::MESSAGE_NOT_SUPPORTED)
        );
        let bad_reg = req(
            FunctionId::DEV_ATTR_REG,
            vec![],
            vec![Attribute::tcp_port(tag::PORTAL_PORT, 1)],
        );
        assert_eq!(
            reg.handle(&bad_reg, 0).0.unwrap().status,
            Some(Status::INVALID_REGISTRATION)
        );
        // A failed request changes nothing.
        assert_eq!(reg, storage_with_same_counters(&reg));
    }

    fn storage_with_same_counters(r: &Registry) -> Registry {
        let mut s = storage();
        s.next_auto_eid = r.next_auto_eid;
        s
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
        assert!(reg.expire(1060).is_empty());
        let ch = reg.expire(1061);
        assert_eq!(ch.removed.into_iter().collect::<Vec<_>>(), vec![1]);
        let ids: Vec<_> = reg.entities.iter().map(Entity::id).collect();
        assert_eq!(ids, ["kept", "forever"]);
        assert!(!reg.expire(5000).is_empty());
        assert_eq!(
            reg.entities.iter().map(Entity::id).collect::<Vec<_>>(),
            ["forever"]
        );
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
                let (_, ch) = reg.handle(&req(f, key, portal("127.0.0.9")), 2000);
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
}
