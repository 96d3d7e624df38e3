//! The sans-IO iSNS registry: handles one request [`Message`] at a time and
//! returns the response, the changes to persist and the state change
//! notifications to deliver, RFC 4171 §5.6.5 / §5.7.5. Time comes in as an
//! argument (`now`, seconds since the Unix epoch); nothing here does I/O.
//!
//! One module per RFC 4171 concept: `dev_attr_reg` (§5.6.5.1),
//! `dev_attr_qry` (DevAttrQry §5.6.5.2, DevGetNext §5.6.5.3), `dereg`
//! (DevDereg §5.6.5.4), [`scn`] (SCNReg/SCNDereg §5.6.5.5-6 and the SCN
//! message §5.6.5.8), `scn_event` (SCNEvent §5.6.5.7), [`esi`] (Entity
//! Status Inquiry §5.6.5.13: which portals are polled, their misses), [`dd`]
//! (DDReg/DDDereg/DDSReg/DDSDereg §5.6.5.9-12). This module keeps the registry's invariants: entities
//! in registration order (`seq` ascending), objects inside an entity in
//! registration order, index counters advanced only by successful requests,
//! the lookup indexes (`index`) and expiry deadlines (`deadline`) exact.
//!
//! Behaviour follows what open-isns' isnsd does (discovery domains, sets and
//! the default DD in [`dd`]; what a source may see is decided there):
//! implicit portal groups with PGT 1 for every node/portal pair of an entity,
//! query answers made of the container entity, the object and its related
//! objects, PGs with a NIL or 0 tag hiding a portal from a node. Unlike isnsd,
//! every listing is in registration order: entities in the order they were
//! first registered, objects inside an entity in the order they were registered.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

pub mod dd;
mod deadline;
mod dereg;
mod dev_attr_qry;
mod dev_attr_reg;
pub mod esi;
mod index;
#[cfg(test)]
mod index_tests;
pub mod scn;
mod scn_event;
mod sync;
#[cfg(test)]
mod tests;

use isns_proto::tag::{self, ObjectType};
use isns_proto::{Attribute, FunctionId, Message, Status};

use crate::object::Object;

pub use esi::{EsiConfig, EsiProbe};
pub use scn::{Notification, ScnConnection, ScnDestination};

/// Default registration period (§6.2.6), seconds: granted to entities that
/// give none, ask for 0 (never expire) or ask for more than the maximum.
pub const DEFAULT_REGISTRATION_PERIOD: u32 = 3600;
/// Default longest registration period (§6.2.6) the server grants, seconds.
pub const MAX_REGISTRATION_PERIOD: u32 = 86_400;
/// Total number of entities, a bound on the registry's memory (each entity
/// holds at most [`MAX_OBJECTS_PER_ENTITY`] objects). The fairness limit is
/// per client address ([`Limits::max_entities_per_address`]).
pub const MAX_ENTITIES: usize = 65_536;
/// Default limit on the entities registered from one client address.
pub const MAX_ENTITIES_PER_ADDRESS: usize = 64;
/// Default limit on the portals, nodes and portal groups (implicit ones
/// included) of one entity ([`Limits::max_objects_per_entity`]).
pub const MAX_OBJECTS_PER_ENTITY: usize = 4096;

/// What the server grants: registration periods (and, with them, how long an
/// abandoned registration can hold its place).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Period granted when a registration gives none, asks for 0 (never
    /// expire) or asks for more than `max_registration_period`.
    pub default_registration_period: u32,
    /// Longest period granted as asked.
    pub max_registration_period: u32,
    /// Entities that registrations from one client IP address may hold;
    /// a DevAttrReg creating one more is refused (see
    /// [`Registry::handle_from`]).
    pub max_entities_per_address: usize,
    /// Entities in all (at most [`MAX_ENTITIES`]); a DevAttrReg creating one
    /// more is refused with status 3.
    pub max_entities: usize,
    /// Portals, nodes and portal groups (implicit ones included) one entity
    /// may hold; a DevAttrReg that would leave an entity with more is
    /// refused with status 3 "Invalid Registration" and changes nothing.
    pub max_objects_per_entity: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            default_registration_period: DEFAULT_REGISTRATION_PERIOD,
            max_registration_period: MAX_REGISTRATION_PERIOD,
            max_entities_per_address: MAX_ENTITIES_PER_ADDRESS,
            max_entities: MAX_ENTITIES,
            max_objects_per_entity: MAX_OBJECTS_PER_ENTITY,
        }
    }
}

impl Limits {
    /// The period the server grants for a requested one (§6.2.6 lets the
    /// server answer with its own): `requested` if it is within 1..=max,
    /// else the default (itself at least 1 s and at most the maximum).
    pub fn grant(&self, requested: Option<u32>) -> u32 {
        let max = self.max_registration_period.max(1);
        match requested {
            Some(p) if (1..=max).contains(&p) => p,
            _ => self.default_registration_period.clamp(1, max),
        }
    }
}

/// A Network Entity and the objects it contains (§4.1).
///
/// Equality and cloning cover the registered state; the last refresh time
/// ([`Entity::last_seen`]) is copied by `clone` and ignored by `==`.
pub struct Entity {
    /// Registration order of the entity; also its persistent key.
    pub seq: u64,
    pub object: Object,
    /// Time of last registration or update, seconds since the Unix epoch (§6.2.4).
    pub timestamp: u64,
    /// Portals, storage nodes and portal groups, in registration order.
    pub children: Vec<Object>,
    /// Last message from one of its nodes (§6.2.6), seconds since the Unix
    /// epoch; raised under shared access (see [`Registry::handle_read`]).
    refreshed: AtomicU64,
}

impl Clone for Entity {
    fn clone(&self) -> Entity {
        Entity {
            seq: self.seq,
            object: self.object.clone(),
            timestamp: self.timestamp,
            children: self.children.clone(),
            refreshed: AtomicU64::new(self.refreshed.load(Ordering::Relaxed)),
        }
    }
}

impl PartialEq for Entity {
    fn eq(&self, other: &Entity) -> bool {
        self.seq == other.seq
            && self.object == other.object
            && self.timestamp == other.timestamp
            && self.children == other.children
    }
}

impl Eq for Entity {}

impl std::fmt::Debug for Entity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entity")
            .field("seq", &self.seq)
            .field("object", &self.object)
            .field("timestamp", &self.timestamp)
            .field("refreshed", &self.refreshed.load(Ordering::Relaxed))
            .field("children", &self.children)
            .finish()
    }
}

impl Entity {
    /// A registered entity (last refreshed at `timestamp`).
    pub fn new(seq: u64, object: Object, timestamp: u64, children: Vec<Object>) -> Entity {
        Entity {
            seq,
            object,
            timestamp,
            children,
            refreshed: AtomicU64::new(timestamp),
        }
    }

    /// Last registration, update or refresh (any message from one of its
    /// nodes, §6.2.6), seconds since the Unix epoch: the Timestamp (§6.2.4)
    /// clients see and the start of the running Registration Period.
    pub fn last_seen(&self) -> u64 {
        self.timestamp.max(self.refreshed.load(Ordering::Relaxed))
    }

    /// Record contact at `at` (never moves the time back). Returns whether
    /// the time moved on.
    pub fn refresh(&self, at: u64) -> bool {
        self.refreshed.fetch_max(at, Ordering::Relaxed) < at
    }

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

    /// Whether the Registration Period ran out at `now` (§6.2.6). A stored
    /// period the server would not grant now (0 = never expire, or above the
    /// maximum; e.g. stored by an older version) counts as the default.
    fn expired(&self, now: u64, limits: &Limits) -> bool {
        now > self.deadline(limits)
    }

    /// Last second of the running Registration Period.
    fn deadline(&self, limits: &Limits) -> u64 {
        let asked = self
            .object
            .get(tag::REGISTRATION_PERIOD)
            .and_then(Attribute::as_u32);
        let period = limits.grant(asked);
        self.last_seen().saturating_add(u64::from(period))
    }

    /// Portal groups with a usable (non-NIL, non-zero) tag that join `node` and `portal`
    /// keys, as open-isns uses them for relations.
    fn pg_between(&self, node: &Object, portal: &Object) -> Option<&Object> {
        let pg_key = pg_key_for(node, portal)?;
        self.of_kind(ObjectType::PortalGroup)
            .find(|pg| pg.matches(&pg_key))
    }
}

/// All of `attrs`, or those with a tag in `wanted` (the operating
/// attributes of a query, §5.6.5.2: which attributes to return).
pub(super) fn select(attrs: Vec<Attribute>, wanted: &[Attribute]) -> Vec<Attribute> {
    if wanted.is_empty() {
        attrs
    } else {
        attrs
            .into_iter()
            .filter(|a| wanted.iter().any(|w| w.tag == a.tag))
            .collect()
    }
}

/// The iSCSI SCN Bitmap (§6.4.4) among the operating attributes of an
/// SCNReg or SCNEvent; Message Format Error (2) without one.
pub(super) fn scn_bitmap(req: &Message) -> Res<u32> {
    req.operating()
        .iter()
        .find(|a| a.tag == tag::ISCSI_SCN_BITMAP)
        .and_then(Attribute::as_u32)
        .ok_or(Status::MESSAGE_FORMAT_ERROR)
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
    /// State change events, turned into SCN messages by the registry.
    pub scn: Vec<ScnEvent>,
    /// Discovery domains, sets or default-DD membership changed (`dd`):
    /// the store rewrites them.
    pub domains: bool,
    /// SCN events for one node each (DD membership changes, §6.4.4):
    /// (recipient iSCSI name, event).
    pub dd_scn: Vec<(String, ScnEvent)>,
}

impl Changes {
    /// Whether anything must be persisted.
    pub fn is_empty(&self) -> bool {
        self.upserted.is_empty() && self.removed.is_empty() && !self.domains
    }
}

/// Everything one request (or one expiry sweep) produced.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The response to send, if the function has one.
    pub response: Option<Message>,
    /// What to persist before answering.
    pub changes: Changes,
    /// SCN messages to deliver once the changes are persisted (§5.6.5.8).
    pub notifications: Vec<Notification>,
    /// A successful SCNReg/SCNDereg: bind/unbind the requesting connection.
    pub scn_connection: Option<ScnConnection>,
}

/// The counters stored with the entities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// Next object index to hand out (open-isns style: one counter for all objects).
    pub next_index: u32,
    /// Next entity registration sequence number.
    pub next_seq: u64,
    /// Counter for server-assigned entity identifiers (`isns.entity.NNNN`).
    pub next_auto_eid: u32,
}

impl Default for Counters {
    fn default() -> Counters {
        Counters {
            next_index: 1,
            next_seq: 1,
            next_auto_eid: 1,
        }
    }
}

/// Entities refreshed since the last [`Registry::take_refreshed`], by seq
/// (each at most once per second it was refreshed in).
#[derive(Debug, Default)]
struct RefreshLog(Mutex<Vec<u64>>);

impl RefreshLog {
    fn push(&self, seq: u64) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(seq);
    }

    fn take(&self) -> Vec<u64> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Clone for RefreshLog {
    fn clone(&self) -> RefreshLog {
        RefreshLog(Mutex::new(
            self.0.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        ))
    }
}

/// The registry of all entities in registration order.
///
/// Entities live in an ordered map keyed by their registration seq
/// (registration order without sorting), with hash indexes from iSCSI Name,
/// Portal and Entity Identifier to the holding entity (`index`) and a
/// queue of expiry deadlines (`deadline`); every insertion and removal
/// goes through `put_entity`/`take_entity`, which keep them exact. No
/// request clones or walks the whole registry unless its key asks for all
/// objects.
///
/// Equality compares the persistent state (entities and counters), not the
/// transient SCN sender state.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    /// Entities by registration seq.
    entities: BTreeMap<u64, Entity>,
    index: index::Indexes,
    deadlines: deadline::DeadlineQueue,
    counters: Counters,
    scn: scn::Sender,
    /// Source names allowed to change any entity (Control Nodes, §5.6.1).
    control_nodes: BTreeSet<String>,
    limits: Limits,
    /// Client address each entity (by seq) was created from; persisted with
    /// the entities (`store`), so the per-address limit holds across a
    /// restart.
    owners: HashMap<u64, IpAddr>,
    /// Entities per client address (the counts of `owners`).
    owner_counts: HashMap<IpAddr, usize>,
    /// Addresses refused at their limit and already logged at WARN; an
    /// address leaves the set when one of its entities goes.
    warned: HashSet<IpAddr>,
    /// The total limit was hit and logged at WARN (reset when an entity goes).
    warned_total: bool,
    /// Entities refreshed since the refresh times were last taken for storing.
    refreshed: RefreshLog,
    /// Entity Status Inquiry monitoring (transient).
    esi: esi::EsiState,
    /// Discovery domains and sets, and who sees whom (`dd`).
    domains: dd::Domains,
}

impl PartialEq for Registry {
    fn eq(&self, other: &Registry) -> bool {
        self.entities == other.entities
            && self.counters == other.counters
            && self.domains == other.domains
    }
}

impl Eq for Registry {}

/// Error of a request: the status to return.
type Res<T> = Result<T, Status>;

/// Message key and operating attributes of a successful response.
type Answer = Res<(Vec<Attribute>, Vec<Attribute>)>;

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// A registry from stored entities and counters (see [`Registry::entities`],
    /// [`Registry::counters`]). Entities are put in registration order and the
    /// counters raised past every stored sequence number and index.
    pub fn from_parts(entities: Vec<Entity>, mut counters: Counters) -> Registry {
        let mut reg = Registry::default();
        for e in entities {
            counters.next_seq = counters.next_seq.max(e.seq.saturating_add(1));
            for o in std::iter::once(&e.object).chain(&e.children) {
                if let Some(next) = o.index.checked_add(1) {
                    counters.next_index = counters.next_index.max(next);
                }
            }
            reg.put_entity(e);
        }
        reg.counters = counters;
        reg
    }

    /// Set the registration periods the server grants (see [`Limits`]).
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
        let deadlines: Vec<(u64, u64)> = self
            .entities
            .values()
            .map(|e| (e.seq, e.deadline(&limits)))
            .collect();
        for (seq, d) in deadlines {
            self.deadlines.schedule(seq, d);
        }
    }

    /// All entities in registration order.
    pub fn entities(
        &self,
    ) -> impl DoubleEndedIterator<Item = &Entity> + ExactSizeIterator + Clone + '_ {
        self.entities.values()
    }

    /// The entity registered as `seq`.
    pub fn entity(&self, seq: u64) -> Option<&Entity> {
        self.entities.get(&seq)
    }

    /// The counters to store with the entities.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Put the persistent state of `stored` (entities, counters, owners) in
    /// place of this registry's, keeping its settings (limits, Control
    /// Nodes, SCN source): how the server undoes a batch whose commit
    /// failed, by reloading what the store holds.
    /// ESI monitoring is rebuilt from the restored entities as of `now`.
    pub fn restore(&mut self, stored: Registry, now: u64) {
        let scn = std::mem::take(&mut self.scn);
        let control_nodes = std::mem::take(&mut self.control_nodes);
        let limits = self.limits;
        let esi = self.esi.config;
        let default_dd = self.domains.default_dd;
        *self = stored;
        self.set_default_dd(default_dd);
        self.scn = scn;
        self.control_nodes = control_nodes;
        self.set_limits(limits);
        self.set_esi(esi);
        self.esi_sync_all(now);
    }

    /// Set the source name (§5.6.1) of the SCN messages this registry builds.
    pub fn set_scn_source(&mut self, name: &str) {
        self.scn.source = name.to_string();
    }

    /// Source names (iSCSI Names) that may change or deregister any entity,
    /// as Control Nodes may (§5.6.1). Every other source may change only the
    /// entity holding its own node.
    pub fn set_control_nodes(&mut self, names: impl IntoIterator<Item = String>) {
        self.control_nodes = names.into_iter().collect();
    }

    /// Insert or replace entity `e` (by seq), keeping the indexes and the
    /// deadline queue exact. Every change of an entity goes through here or
    /// [`Registry::take_entity`].
    fn put_entity(&mut self, e: Entity) {
        if let Some(old) = self.entities.remove(&e.seq) {
            self.index.remove(&old);
        }
        self.index.add(&e);
        self.deadlines.schedule(e.seq, e.deadline(&self.limits));
        self.entities.insert(e.seq, e);
    }

    /// Remove entity `seq` with its index entries and deadline.
    fn take_entity(&mut self, seq: u64) -> Option<Entity> {
        let e = self.entities.remove(&seq)?;
        self.index.remove(&e);
        self.deadlines.cancel(seq);
        Some(e)
    }

    /// §5.6.1: a request that changes or removes objects of the entity
    /// `seq` must come from a Control Node or from a Storage Node of that
    /// entity. Refusals: Source Unknown (6) when the source names no
    /// registered node, Source Unauthorized (8) when it names a node of
    /// another entity.
    fn authorize(&self, req: &Message, seq: u64) -> Res<()> {
        let Some(src) = req.source() else {
            return Err(Status::SOURCE_ABSENT);
        };
        let name = source_name(req);
        if self.is_control(name) {
            return Ok(());
        }
        let owner = name.and_then(|_| self.entity_of_node(src));
        if owner == Some(seq) {
            return Ok(());
        }
        let status = if owner.is_some() {
            Status::SOURCE_UNAUTHORIZED
        } else {
            Status::SOURCE_UNKNOWN
        };
        let target = self.entities.get(&seq).map_or("", Entity::id);
        tracing::warn!(
            source = name.unwrap_or("(not an iSCSI name)"),
            function = req.function.name(),
            entity = target,
            status = status.0,
            "refused: the source is not a node of the entity it would change"
        );
        Err(status)
    }

    fn alloc_index(&mut self) -> u32 {
        let i = self.counters.next_index;
        self.counters.next_index = i.wrapping_add(1).max(1);
        i
    }

    /// Whether [`Registry::handle`] can record persistent [`Changes`] for
    /// `function` (the mutating requests of §5.6.5).
    pub fn may_change(function: FunctionId) -> bool {
        matches!(
            function,
            FunctionId::DEV_ATTR_REG
                | FunctionId::DEV_DEREG
                | FunctionId::SCN_REG
                | FunctionId::SCN_DEREG
                | FunctionId::DD_REG
                | FunctionId::DD_DEREG
                | FunctionId::DDS_REG
                | FunctionId::DDS_DEREG
        )
    }

    /// Whether [`Registry::handle_read`] answers `function` (under shared
    /// access): the queries DevAttrQry and DevGetNext.
    pub fn is_read_only(function: FunctionId) -> bool {
        matches!(
            function,
            FunctionId::DEV_ATTR_QRY | FunctionId::DEV_GET_NEXT
        )
    }

    /// Handle one request; `now` is seconds since the Unix epoch. Returns the
    /// response (if the function has one), the state changes to persist and
    /// the SCNs to deliver. A failed request changes nothing.
    pub fn handle(&mut self, req: &Message, now: u64) -> Outcome {
        self.handle_from(req, now, None)
    }

    /// Answer a query ([`Registry::is_read_only`]) with shared access: the
    /// server runs it under a read lock, concurrently with other queries.
    /// The source's entity is refreshed (§6.2.6) through its atomic refresh
    /// time. `None` for any other function: use [`Registry::handle_from`].
    pub fn handle_read(&self, req: &Message, now: u64) -> Option<Outcome> {
        let f = req.function;
        if !Registry::is_read_only(f) {
            return None;
        }
        let result = if req.source().is_none() {
            Err(Status::SOURCE_ABSENT)
        } else {
            self.touch_source(req, now);
            // Keyed by a DD or DDS attribute: a discovery domain query (dd.rs).
            let dd_key = req.key().first().is_some_and(|a| dd::is_dd_tag(a.tag));
            match f {
                FunctionId::DEV_ATTR_QRY if dd_key => self.dd_qry(req),
                FunctionId::DEV_GET_NEXT if dd_key => self.dd_get_next(req),
                FunctionId::DEV_ATTR_QRY => self.dev_attr_qry(req),
                _ => self.dev_get_next(req),
            }
        };
        let response = match result {
            Ok((key, operating)) => Message::response(req, Status::SUCCESS, key, operating),
            Err(status) => Message::error_response(f, req.xid, status),
        };
        Some(Outcome {
            response: Some(response),
            ..Outcome::default()
        })
    }

    /// [`Registry::handle`] for a request that came from `client` (the
    /// peer's IP address; `None` when unknown). A DevAttrReg that would
    /// create a new entity is refused with status 3 "Invalid Registration"
    /// when `client` already holds [`Limits::max_entities_per_address`]
    /// entities, or when the registry holds [`MAX_ENTITIES`]. The limit
    /// counts entities by the address that created them, whatever source
    /// names they use, and frees as they are deregistered or expire.
    ///
    /// Why status 3: RFC 4171 §5.7.3 has no quota status. 3 is what the RFC
    /// gives for a registration the server will not accept and what clients
    /// already treat as "this registration failed"; 12 "Busy" would invite
    /// an immediate retry that cannot succeed, and 23 "Registration Feature
    /// Not Supported" claims a missing feature. The server logs the reason
    /// (once per address while it stays at its limit) at WARN.
    pub fn handle_from(&mut self, req: &Message, now: u64, client: Option<IpAddr>) -> Outcome {
        if let Some(outcome) = self.handle_read(req, now) {
            return outcome;
        }
        let mut changes = Changes::default();
        let f = req.function;
        if f.is_response() || f == FunctionId::HEARTBEAT {
            // Responses to our own requests (e.g. ESI) and heartbeats need no answer.
            return Outcome::default();
        }
        let counters = self.counters;
        let result = if req.source().is_none() {
            Err(Status::SOURCE_ABSENT)
        } else {
            self.touch_source(req, now);
            match f {
                FunctionId::DD_REG => self.dd_reg(req, &mut changes),
                FunctionId::DD_DEREG => self.dd_dereg(req, &mut changes),
                FunctionId::DDS_REG => self.dds_reg(req, &mut changes),
                FunctionId::DDS_DEREG => self.dds_dereg(req, &mut changes),
                FunctionId::DEV_ATTR_REG => self.dev_attr_reg(req, now, client, &mut changes),
                FunctionId::DEV_DEREG => self.dev_dereg(req, &mut changes),
                FunctionId::SCN_REG => self.scn_reg(req, true, &mut changes),
                FunctionId::SCN_DEREG => self.scn_reg(req, false, &mut changes),
                FunctionId::SCN_EVENT => self.scn_event(req, &mut changes),
                _ => Err(Status::MESSAGE_NOT_SUPPORTED),
            }
        };
        let response = match result {
            Ok((key, operating)) => Message::response(req, Status::SUCCESS, key, operating),
            Err(status) => {
                // Handlers change entities only once nothing can fail any
                // more; undo what they took from the counters.
                self.counters = counters;
                let response = Message::error_response(f, req.xid, status);
                return Outcome {
                    response: Some(response),
                    ..Outcome::default()
                };
            }
        };
        self.forget_owners(&changes);
        self.esi_sync(&changes, now);
        let notifications = self.notifications(&changes, now);
        Outcome {
            response: Some(response),
            changes,
            notifications,
            scn_connection: scn::connection_change(req),
        }
    }

    /// Contact from a registered node keeps its entity registered (§6.2.6):
    /// the entity's refresh time is raised (an atomic, so queries need only
    /// shared access) and the entity noted for the next
    /// [`Registry::take_refreshed`], at most once per second.
    fn touch_source(&self, req: &Message, now: u64) {
        let Some(src) = req.source().filter(|a| a.tag == tag::ISCSI_NAME) else {
            return;
        };
        if let Some(e) = self.entity_of_node(src).and_then(|s| self.entities.get(&s))
            && e.refresh(now)
        {
            self.refreshed.push(e.seq);
        }
    }

    /// The entities refreshed since the last call, with their last refresh
    /// time, for persisting (the server stores them every persistence
    /// interval, coalesced). Entities gone since are left out.
    pub fn take_refreshed(&self) -> Vec<(u64, u64)> {
        let mut seqs = self.refreshed.take();
        seqs.sort_unstable();
        seqs.dedup();
        seqs.into_iter()
            .filter_map(|seq| Some((seq, self.entities.get(&seq)?.last_seen())))
            .collect()
    }

    /// Whether some entity's Registration Period ran out at `now` (§6.2.6):
    /// [`Registry::expire`] would change something. Looks only at the
    /// deadlines already due.
    pub fn has_expired(&self, now: u64) -> bool {
        self.deadlines.due(now).any(|(_, seq)| {
            self.entities
                .get(&seq)
                .is_some_and(|e| e.expired(now, &self.limits))
        })
    }

    /// Remove entities not refreshed within their Registration Period.
    /// Returns the changes to persist and the SCNs to deliver. Only due
    /// deadlines are looked at; an entity refreshed since its deadline was
    /// queued is queued again with its actual deadline.
    pub fn expire(&mut self, now: u64) -> Outcome {
        let mut changes = Changes::default();
        let mut gone = Vec::new();
        while let Some((_, seq)) = self.deadlines.pop_due(now) {
            let Some(e) = self.entities.get(&seq) else {
                continue;
            };
            if e.expired(now, &self.limits) {
                gone.push(seq);
            } else {
                let d = e.deadline(&self.limits);
                self.deadlines.schedule(seq, d);
            }
        }
        gone.sort_unstable();
        for seq in gone {
            if let Some(e) = self.take_entity(seq) {
                changes.removed.insert(e.seq);
                changes.scn.push(ScnEvent {
                    event: tag::scn::OBJECT_REMOVED,
                    object_key: e.object.key(),
                });
            }
        }
        self.settle(changes, now)
    }

    /// The end of every change not made by a request: owners of removed entities forgotten,
    /// ESI monitoring brought in line, and the notifications the change amounts to.
    fn settle(&mut self, changes: Changes, now: u64) -> Outcome {
        self.forget_owners(&changes);
        self.esi_sync(&changes, now);
        let notifications = self.notifications(&changes, now);
        Outcome {
            changes,
            notifications,
            ..Outcome::default()
        }
    }

    /// Free the per-address quota of removed entities.
    fn forget_owners(&mut self, changes: &Changes) {
        if changes.removed.is_empty() {
            return;
        }
        self.warned_total = false;
        for seq in &changes.removed {
            if let Some(ip) = self.owners.remove(seq) {
                self.warned.remove(&ip);
                if let Some(n) = self.owner_counts.get_mut(&ip) {
                    *n -= 1;
                    if *n == 0 {
                        self.owner_counts.remove(&ip);
                    }
                }
            }
        }
    }

    /// Refuse creating one more entity for `client` beyond the per-address
    /// or total limit.
    fn admit_entity(&mut self, client: Option<IpAddr>) -> Res<()> {
        let total = self.limits.max_entities.min(MAX_ENTITIES);
        if self.entities.len() >= total {
            if !std::mem::replace(&mut self.warned_total, true) {
                tracing::warn!(
                    client = ?client,
                    limit = total,
                    "registry full: refusing new entities (status 3)"
                );
            }
            return Err(Status::INVALID_REGISTRATION);
        }
        let Some(ip) = client else {
            return Ok(());
        };
        let limit = self.limits.max_entities_per_address;
        if self.entities_of(ip) >= limit {
            if self.warned.insert(ip) {
                tracing::warn!(
                    %ip,
                    limit,
                    "client address holds its limit of entities: refusing new entities from it (status 3)"
                );
            } else {
                tracing::debug!(%ip, "per-address entity limit: refused");
            }
            return Err(Status::INVALID_REGISTRATION);
        }
        Ok(())
    }

    /// The same registry with the client addresses its entities were created
    /// from (as [`Registry::owner`] gave them); addresses of entities it does
    /// not hold are dropped.
    pub fn with_owners(mut self, owners: HashMap<u64, IpAddr>) -> Registry {
        self.owners.clear();
        self.owner_counts.clear();
        for (seq, ip) in owners {
            if self.entities.contains_key(&seq) {
                self.set_owner(seq, Some(ip));
            }
        }
        self
    }

    /// The client address the entity `seq` was created from, when known.
    pub fn owner(&self, seq: u64) -> Option<IpAddr> {
        self.owners.get(&seq).copied()
    }

    /// Entities created from `ip` that are still registered.
    pub fn entities_of(&self, ip: IpAddr) -> usize {
        self.owner_counts.get(&ip).copied().unwrap_or(0)
    }

    /// Record that the entity `seq` was created from `client`.
    fn set_owner(&mut self, seq: u64, client: Option<IpAddr>) {
        if let Some(ip) = client {
            if let Some(old) = self.owners.insert(seq, ip)
                && let Some(n) = self.owner_counts.get_mut(&old)
            {
                *n -= 1;
            }
            *self.owner_counts.entry(ip).or_insert(0) += 1;
        }
    }

    /// All objects of `kind` in registration order, with their entity (a
    /// walk over the whole registry: for listings and tests).
    pub fn objects(&self, kind: ObjectType) -> Vec<(&Entity, &Object)> {
        self.objects_from(kind, ..).collect()
    }

    /// Objects of `kind` in registration order, with their entity, from
    /// the entities whose seq lies in `seqs`.
    fn objects_from(
        &self,
        kind: ObjectType,
        seqs: impl std::ops::RangeBounds<u64>,
    ) -> impl Iterator<Item = (&Entity, &Object)> {
        self.entities.range(seqs).flat_map(move |(_, e)| {
            let own = (kind == ObjectType::Entity).then_some((e, &e.object));
            own.into_iter().chain(e.of_kind(kind).map(move |o| (e, o)))
        })
    }

    /// Objects of `kind` matching `key` in registration order: one index
    /// lookup for a complete Entity Identifier, iSCSI Name or Portal key
    /// (each names at most one object), a walk otherwise.
    fn matching<'a>(
        &'a self,
        kind: ObjectType,
        key: &'a [Attribute],
    ) -> impl Iterator<Item = (&'a Entity, &'a Object)> + 'a {
        let seqs = match self.index.lookup(kind, key) {
            Some(Some(seq)) => Some(seq..=seq),
            Some(None) => None,
            None => Some(0..=u64::MAX),
        };
        seqs.into_iter()
            .flat_map(move |r| self.objects_from(kind, r))
            .filter(move |(_, o)| o.matches(key))
    }

    /// Seq of the entity and position of its child of `kind` matching `key`.
    fn locate(&self, kind: ObjectType, key: &[Attribute]) -> Option<(u64, usize)> {
        match self.index.lookup(kind, key) {
            Some(seq) => {
                let e = self.entities.get(&seq?)?;
                Some((e.seq, e.find_child(kind, key)?))
            }
            None => self
                .entities
                .values()
                .find_map(|e| Some((e.seq, e.find_child(kind, key)?))),
        }
    }

    /// The entity (seq) with Entity Identifier `eid` (matching as `key`).
    fn entity_by_id(&self, key: &[Attribute]) -> Option<u64> {
        match self.index.lookup(ObjectType::Entity, key) {
            Some(seq) => {
                seq.filter(|s| self.entities.get(s).is_some_and(|e| e.object.matches(key)))
            }
            None => self
                .entities
                .values()
                .find(|e| e.object.matches(key))
                .map(|e| e.seq),
        }
    }

    /// Whether `name` is a configured Control Node (§5.6.1): it may change any
    /// entity, manage discovery domains, see everything and register for
    /// management SCNs.
    fn is_control(&self, name: Option<&str>) -> bool {
        name.is_some_and(|n| self.control_nodes.contains(n))
    }

    /// The entity holding the node named by `name` (an iSCSI Name attribute, tag 32).
    fn entity_of_node(&self, name: &Attribute) -> Option<u64> {
        self.locate(ObjectType::IscsiNode, std::slice::from_ref(name))
            .map(|(seq, _)| seq)
    }
}

/// The request's source when it is an iSCSI Name (tag 32), the only kind of
/// source a node has.
fn source_name(req: &Message) -> Option<&str> {
    req.source()
        .filter(|s| s.tag == tag::ISCSI_NAME)
        .and_then(Attribute::as_str)
}
