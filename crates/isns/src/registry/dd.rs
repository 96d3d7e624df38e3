//! Discovery Domains and Discovery Domain Sets, RFC 4171 §2.2.2: DDReg
//! (§5.6.5.9), DDDereg (§5.6.5.10), DDSReg (§5.6.5.11), DDSDereg
//! (§5.6.5.12), the DD and DDS objects (§6.11, §6.12), queries of them
//! (DevAttrQry / DevGetNext with a DD or DDS key) and the visibility rule
//! every other query and SCN obeys: a source sees the Storage Nodes that share
//! an active DD with it (and their entities, portals and portal groups), its
//! own entity, and, as a Control Node, everything.
//!
//! A DD is active when it belongs to no DDS or to at least one enabled DDS
//! (DDS Status bit 0, §6.12.3); a DD has no enable bit of its own. The default
//! DD (ID 0, isnsd's `DefaultDiscoveryDomain`), when on, holds every node that
//! is in no DD (as isnsd's "domainless" nodes), and a source that is no
//! registered node is looked at as one of its members. It is computed, never
//! stored: a node leaves it when added to a DD and returns when it leaves the
//! last one. (isnsd differs in one bug: nodes named in the DDReg that creates
//! a DD keep a phantom membership after leaving it, so they never return.)
//!
//! Members are kept by name (iSCSI name, or portal address and port), so a
//! member may be named before it registers (§5.6.5.9: the server hands out an
//! index for it). Everything is indexed: node name → DD IDs, DD ID → active.

use std::collections::{BTreeSet, HashMap, HashSet};

use isns_proto::tag::{self, ObjectType};
use isns_proto::{Attribute, Message, Status};

use super::{Answer, Changes, Entity, Registry, Res, ScnEvent, source_name};
use crate::object::Object;

// Tags of §6.11 and §6.12 (RFC 4171 §6.1 table).
pub const DDS_ID: u32 = 2049;
pub const DDS_SYMBOLIC_NAME: u32 = 2050;
pub const DDS_STATUS: u32 = 2051;
pub const DDS_NEXT_ID: u32 = 2052;
pub const DD_ID: u32 = tag::DD_ID;
pub const DD_SYMBOLIC_NAME: u32 = tag::DD_SYMBOLIC_NAME;
pub const DD_MEMBER_ISCSI_INDEX: u32 = 2067;
pub const DD_MEMBER_ISCSI_NAME: u32 = 2068;
pub const DD_MEMBER_FC_PORT_NAME: u32 = 2069;
pub const DD_MEMBER_PORTAL_INDEX: u32 = 2070;
pub const DD_MEMBER_PORTAL_IP_ADDR: u32 = 2071;
pub const DD_MEMBER_PORTAL_PORT: u32 = 2072;
pub const DD_FEATURES: u32 = 2078;
pub const DD_NEXT_ID: u32 = 2079;
/// DDS Status bit 0 (the least significant): the set is enabled (§6.12.3).
pub const DDS_ENABLED: u32 = 1;
/// The default DD's ID (isnsd lists it as DD 0).
pub const DEFAULT_DD_ID: u32 = 0;
/// Longest DD/DDS symbolic name accepted (§6.11.1.2: up to 255 bytes).
const MAX_NAME: usize = 255;

/// Whether a tag belongs to the DD or DDS object (§6.1: 2049–2079).
pub fn is_dd_tag(t: u32) -> bool {
    (DDS_ID..=DD_NEXT_ID).contains(&t)
}

/// One DD member (§6.11.1.3–8).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Member {
    /// A Storage Node by iSCSI name; `index` is the index handed out when it
    /// was named before registering (0: it was registered).
    Node { name: String, index: u32 },
    /// A portal by its 16-byte address and TCP/UDP port attribute value.
    Portal { ip: Vec<u8>, port: u32 },
}

/// A Discovery Domain (§6.11).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dd {
    pub id: u32,
    pub name: Option<String>,
    /// DD_Features (§6.11.1.9); `None` when never given (answered as 0).
    pub features: Option<u32>,
    /// Members in the order they were added.
    pub members: Vec<Member>,
}

/// A Discovery Domain Set (§6.12).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dds {
    pub id: u32,
    pub name: Option<String>,
    /// DDS_Status (§6.12.3); bit 0 enables the set.
    pub status: u32,
    /// Member DD IDs in the order they were added.
    pub dds: Vec<u32>,
}

impl Dds {
    /// The set as attributes (§6.12): ID, name, status, member DD IDs, as
    /// answered to a query and as stored.
    pub fn attributes(&self) -> Vec<Attribute> {
        let mut out = vec![Attribute::u32(DDS_ID, self.id)];
        if let Some(n) = &self.name {
            out.push(Attribute::string(DDS_SYMBOLIC_NAME, n));
        }
        out.push(Attribute::u32(DDS_STATUS, self.status));
        out.extend(self.dds.iter().map(|id| Attribute::u32(DD_ID, *id)));
        out
    }
}

/// All DDs and DDSs with their indexes.
#[derive(Debug, Clone)]
pub struct Domains {
    /// DDs in registration order.
    pub(crate) dds: Vec<Dd>,
    /// DDSs in registration order.
    pub(crate) sets: Vec<Dds>,
    pub(crate) next_dd_id: u32,
    pub(crate) next_dds_id: u32,
    /// Whether the default DD exists (isnsd's `DefaultDiscoveryDomain`).
    pub(super) default_dd: bool,
    /// Node name → the DDs it belongs to.
    by_node: HashMap<String, BTreeSet<u32>>,
    /// IDs of active DDs (see the module comment).
    active: HashSet<u32>,
}

impl Default for Domains {
    fn default() -> Domains {
        Domains {
            dds: Vec::new(),
            sets: Vec::new(),
            next_dd_id: 1,
            next_dds_id: 1,
            default_dd: true,
            by_node: HashMap::new(),
            active: HashSet::new(),
        }
    }
}

impl PartialEq for Domains {
    fn eq(&self, o: &Domains) -> bool {
        self.dds == o.dds && self.sets == o.sets
    }
}

/// What a source may see, worked out once per request.
#[derive(Debug, Clone, Default)]
pub struct Viewer {
    /// A Control Node: sees everything.
    all: bool,
    /// Seq of the source's own entity.
    entity: Option<u64>,
    /// Active DDs the source belongs to (not the default DD).
    dds: Vec<u32>,
    /// The source is in the default DD (it belongs to no other).
    in_default: bool,
}

impl Domains {
    /// Domains from stored parts; rebuilds the indexes.
    pub fn from_parts(dds: Vec<Dd>, sets: Vec<Dds>) -> Domains {
        let mut d = Domains {
            next_dd_id: dds
                .iter()
                .map(|d| d.id)
                .max()
                .unwrap_or(0)
                .saturating_add(1),
            next_dds_id: sets
                .iter()
                .map(|s| s.id)
                .max()
                .unwrap_or(0)
                .saturating_add(1),
            dds,
            sets,
            ..Domains::default()
        };
        d.reindex();
        d
    }

    /// DDs in registration order.
    pub fn dds(&self) -> &[Dd] {
        &self.dds
    }

    /// DDSs in registration order.
    pub fn sets(&self) -> &[Dds] {
        &self.sets
    }

    /// The next DD and DDS IDs to hand out.
    pub fn next_ids(&self) -> (u32, u32) {
        (self.next_dd_id, self.next_dds_id)
    }

    /// Never hand out IDs below these (stored counters).
    pub fn raise_next_ids(&mut self, dd: u32, dds: u32) {
        self.next_dd_id = self.next_dd_id.max(dd);
        self.next_dds_id = self.next_dds_id.max(dds);
    }

    /// The invariants the indexes keep, for tests and fuzzing: IDs nonzero
    /// and unique, names unique, set members existing DDs, and the node and
    /// active indexes equal to what the DDs and sets give.
    pub fn check(&self) -> Result<(), String> {
        let mut ids = HashSet::new();
        let mut names = HashSet::new();
        for d in &self.dds {
            if d.id == 0 || !ids.insert(d.id) {
                return Err(format!("DD ID {} zero or repeated", d.id));
            }
            if let Some(n) = &d.name
                && !names.insert(n.clone())
            {
                return Err(format!("DD name {n} repeated"));
            }
            let mut seen = HashSet::new();
            if !d.members.iter().all(|m| seen.insert(m)) {
                return Err(format!("DD {} lists a member twice", d.id));
            }
        }
        let mut set_ids = HashSet::new();
        for s in &self.sets {
            if s.id == 0 || !set_ids.insert(s.id) {
                return Err(format!("DDS ID {} zero or repeated", s.id));
            }
            if let Some(id) = s.dds.iter().find(|id| !ids.contains(*id)) {
                return Err(format!("DDS {} holds missing DD {id}", s.id));
            }
        }
        let mut fresh = self.clone();
        fresh.reindex();
        if fresh.by_node != self.by_node {
            return Err("node index differs from the DDs' members".into());
        }
        if fresh.active != self.active {
            return Err("active DDs differ from the sets' status".into());
        }
        if self.dds.iter().any(|d| d.id >= self.next_dd_id)
            || self.sets.iter().any(|s| s.id >= self.next_dds_id)
        {
            return Err("next ID not above every ID".into());
        }
        Ok(())
    }

    fn reindex(&mut self) {
        self.by_node.clear();
        for dd in &self.dds {
            for m in &dd.members {
                if let Member::Node { name, .. } = m {
                    self.by_node.entry(name.clone()).or_default().insert(dd.id);
                }
            }
        }
        self.recompute_active();
    }

    /// A DD is active when no DDS holds it or an enabled one does.
    fn recompute_active(&mut self) {
        let mut in_set = HashSet::new();
        let mut enabled = HashSet::new();
        for s in &self.sets {
            for id in &s.dds {
                in_set.insert(*id);
                if s.status & DDS_ENABLED != 0 {
                    enabled.insert(*id);
                }
            }
        }
        self.active = self
            .dds
            .iter()
            .map(|d| d.id)
            .filter(|id| !in_set.contains(id) || enabled.contains(id))
            .collect();
    }

    fn is_active(&self, id: u32) -> bool {
        if id == DEFAULT_DD_ID {
            self.default_dd
        } else {
            self.active.contains(&id)
        }
    }

    /// The DDs (active or not) `name` belongs to.
    pub fn dds_of(&self, name: &str) -> impl Iterator<Item = u32> + '_ {
        self.by_node.get(name).into_iter().flatten().copied()
    }

    /// Whether nodes `a` and `b` share an active DD.
    pub fn share_active(&self, a: &str, b: &str) -> bool {
        if self.default_dd && self.domainless(a) && self.domainless(b) {
            return true;
        }
        let (Some(x), Some(y)) = (self.by_node.get(a), self.by_node.get(b)) else {
            return false;
        };
        x.intersection(y).any(|id| self.is_active(*id))
    }

    fn dd_pos(&self, id: u32) -> Option<usize> {
        self.dds.iter().position(|d| d.id == id)
    }

    fn dds_pos(&self, id: u32) -> Option<usize> {
        self.sets.iter().position(|s| s.id == id)
    }

    /// No DDs and the default DD on: every node sees every node (what the
    /// server did before discovery domains; checked first, in O(1)).
    fn all_see_all(&self) -> bool {
        self.default_dd && self.dds.is_empty()
    }

    /// Whether `name` is in no DD (so in the default DD when that is on).
    fn domainless(&self, name: &str) -> bool {
        self.by_node.get(name).is_none_or(BTreeSet::is_empty)
    }
}

/// A parsed DD member attribute group of a DDReg/DDDereg.
fn parse_members(attrs: &[Attribute], registration: bool) -> Res<Vec<Member>> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(a) = attrs.get(i) {
        i += 1;
        match a.tag {
            DD_ID | DD_FEATURES if !a.is_nil() && a.as_u32().is_none() => {
                return Err(invalid(registration));
            }
            DD_ID | DD_SYMBOLIC_NAME | DD_FEATURES => {}
            DD_MEMBER_ISCSI_NAME => {
                let name = a
                    .as_str()
                    .filter(|n| !n.is_empty() && n.len() <= 223)
                    .ok_or(invalid(registration))?;
                out.push(Member::Node {
                    name: name.to_string(),
                    index: 0,
                });
            }
            DD_MEMBER_PORTAL_IP_ADDR => {
                let port = attrs
                    .get(i)
                    .filter(|p| p.tag == DD_MEMBER_PORTAL_PORT)
                    .and_then(Attribute::as_u32)
                    .ok_or(invalid(registration))?;
                i += 1;
                if a.value.len() != 16 {
                    return Err(invalid(registration));
                }
                out.push(Member::Portal {
                    ip: a.value.clone(),
                    port,
                });
            }
            // Members by index (§6.11.1.3, .6) are resolved against registered objects.
            DD_MEMBER_ISCSI_INDEX | DD_MEMBER_PORTAL_INDEX => {
                // Resolved by `resolve_member`: an empty name stands for "by index".
                out.push(Member::Node {
                    name: String::new(),
                    index: a.as_u32().ok_or(invalid(registration))?,
                });
            }
            DD_MEMBER_FC_PORT_NAME => return Err(Status::ATTRIBUTE_NOT_IMPLEMENTED),
            _ => return Err(invalid(registration)),
        }
    }
    Ok(out)
}

fn invalid(registration: bool) -> Status {
    if registration {
        Status::INVALID_REGISTRATION
    } else {
        Status::INVALID_DEREGISTRATION
    }
}

/// A symbolic name attribute: UTF-8, 1..=255 bytes.
fn name_of(a: &Attribute) -> Option<String> {
    a.as_str()
        .filter(|n| !n.is_empty() && n.len() <= MAX_NAME)
        .map(str::to_string)
}

/// The single message-key ID of a DD/DDS request: `None` when the key is
/// empty or NIL; an error when it is anything else but one `id_tag`.
fn key_id(key: &[Attribute], id_tag: u32, err: Status) -> Res<Option<u32>> {
    match key {
        [] => Ok(None),
        [a] if a.tag == id_tag && a.is_nil() => Ok(None),
        [a] if a.tag == id_tag => match a.as_u32() {
            Some(0) | None => Err(err),
            Some(id) => Ok(Some(id)),
        },
        _ => Err(err),
    }
}

impl Registry {
    /// Set whether the default DD exists (isnsd's `DefaultDiscoveryDomain`):
    /// on (the default), nodes in no DD see each other; off, a node in no DD
    /// sees only its own entity.
    pub fn set_default_dd(&mut self, on: bool) {
        self.domains.default_dd = on;
    }

    /// The discovery domains and sets.
    pub fn domains(&self) -> &Domains {
        &self.domains
    }

    /// The same registry with stored discovery domains.
    pub fn with_domains(mut self, domains: Domains) -> Registry {
        let on = self.domains.default_dd;
        self.domains = domains;
        self.domains.default_dd = on;
        self
    }

    /// DD and DDS management is for Control Nodes (§5.6.1); others get 8.
    fn authorize_dd(&self, req: &Message) -> Res<()> {
        if self.is_control(source_name(req)) {
            Ok(())
        } else {
            tracing::warn!(
                function = req.function.name(),
                "refused: discovery domains are managed by control nodes only"
            );
            Err(Status::SOURCE_UNAUTHORIZED)
        }
    }

    /// What the source of `req` may see.
    pub(super) fn viewer(&self, req: &Message) -> Viewer {
        self.viewer_for(req.source().filter(|s| s.tag == tag::ISCSI_NAME))
    }

    /// The viewer of an SCN subscriber (a node name).
    pub(super) fn viewer_of(&self, name: &str) -> Viewer {
        self.viewer_for(Some(&Attribute::string(tag::ISCSI_NAME, name)))
    }

    /// What the node named by `src` (an iSCSI Name attribute, or none) may
    /// see. Allocates only when there are DDs to list.
    fn viewer_for(&self, src: Option<&Attribute>) -> Viewer {
        let name = src.and_then(Attribute::as_str);
        if self.is_control(name) {
            return Viewer {
                all: true,
                ..Viewer::default()
            };
        }
        if self.domains.all_see_all() {
            // No DDs, default DD on: everyone is in the default DD; no lookup needed.
            return Viewer {
                in_default: true,
                ..Viewer::default()
            };
        }
        let name = name.unwrap_or("");
        let d = &self.domains;
        Viewer {
            all: false,
            entity: src.and_then(|s| self.entity_of_node(s)),
            dds: d.dds_of(name).filter(|id| d.is_active(*id)).collect(),
            // Also a source that is no registered node (isnsd).
            in_default: d.default_dd && d.domainless(name),
        }
    }

    /// Whether `v` may see the node called `name`.
    fn node_visible(&self, v: &Viewer, name: &str) -> bool {
        v.all
            || self.domains.dds_of(name).any(|id| v.dds.contains(&id))
            || v.in_default && self.domains.domainless(name)
    }

    /// §2.2.2, §5.6.5.2: whether `v` may see `o` of entity `e`: a node when
    /// it shares an active DD with the source; an entity, portal or portal
    /// group when a node of its entity is visible (a PG: its own node); all
    /// objects of the source's own entity.
    pub(super) fn visible(&self, v: &Viewer, e: &Entity, o: &Object) -> bool {
        if v.all || v.entity == Some(e.seq) || self.domains.all_see_all() {
            return true;
        }
        match o.kind {
            ObjectType::IscsiNode => o
                .get_str(tag::ISCSI_NAME)
                .is_some_and(|n| self.node_visible(v, n)),
            ObjectType::PortalGroup => o
                .get_str(tag::PG_ISCSI_NAME)
                .is_some_and(|n| self.node_visible(v, n)),
            ObjectType::Entity | ObjectType::Portal => e
                .of_kind(ObjectType::IscsiNode)
                .filter_map(|n| n.get_str(tag::ISCSI_NAME))
                .any(|n| self.node_visible(v, n)),
        }
    }

    /// Whether an SCN about the object with `key` may go to subscriber
    /// `name` (§5.6.5.8: only about objects it can see). Objects already
    /// gone are judged by the node name in their key; a removed entity or
    /// portal (no name in its key) is reported.
    pub(super) fn scn_visible(&self, v: &Viewer, key: &[Attribute]) -> bool {
        if v.all || self.domains.all_see_all() {
            return true;
        }
        if let Some(n) = key
            .iter()
            .find(|a| a.tag == tag::ISCSI_NAME || a.tag == tag::PG_ISCSI_NAME)
            .and_then(Attribute::as_str)
        {
            return self.node_visible(v, n)
                || self
                    .entity_of_node(&Attribute::string(tag::ISCSI_NAME, n))
                    .is_some_and(|seq| Some(seq) == v.entity);
        }
        let kind = key.first().and_then(|a| ObjectType::of_tag(a.tag));
        // An entity or portal key: found through the index (dd.rs has no
        // scan of its own).
        let found = kind.and_then(|k| self.matching(k, key).next());
        found.is_none_or(|(e, o)| self.visible(v, e, o))
    }

    /// The current index of a registered node or portal member, else the
    /// index handed out when it was named.
    fn member_index(&self, m: &Member) -> u32 {
        match m {
            Member::Node { name, index } => self
                .locate(
                    ObjectType::IscsiNode,
                    &[Attribute::string(tag::ISCSI_NAME, name)],
                )
                .and_then(|(seq, i)| self.entities.get(&seq)?.children.get(i))
                .map_or(*index, |o| o.index),
            Member::Portal { ip, port } => self
                .locate(
                    ObjectType::Portal,
                    &[
                        Attribute {
                            tag: tag::PORTAL_IP_ADDRESS,
                            value: ip.clone(),
                        },
                        Attribute::u32(tag::PORTAL_PORT, *port),
                    ],
                )
                .and_then(|(seq, i)| self.entities.get(&seq)?.children.get(i))
                .map_or(0, |o| o.index),
        }
    }

    /// Resolve members given by index to the registered object's name.
    fn resolve_member(&self, m: Member, registration: bool) -> Res<Member> {
        match m {
            Member::Node { name, index } if name.is_empty() => {
                let o = self
                    .entities
                    .values()
                    .flat_map(|e| e.children.iter())
                    .find(|o| o.index == index)
                    .ok_or(invalid(registration))?;
                match o.kind {
                    ObjectType::IscsiNode => Ok(Member::Node {
                        name: o.get_str(tag::ISCSI_NAME).unwrap_or("").to_string(),
                        index: 0,
                    }),
                    ObjectType::Portal => Ok(Member::Portal {
                        ip: o
                            .get(tag::PORTAL_IP_ADDRESS)
                            .map(|a| a.value.clone())
                            .unwrap_or_default(),
                        port: o
                            .get(tag::PORTAL_PORT)
                            .and_then(Attribute::as_u32)
                            .unwrap_or(0),
                    }),
                    _ => Err(invalid(registration)),
                }
            }
            m => Ok(m),
        }
    }

    /// The attributes of a DD as isnsd answers them: ID, name, features,
    /// then each member's index and key.
    fn dd_attributes(&self, dd: &Dd) -> Vec<Attribute> {
        let mut out = vec![Attribute::u32(DD_ID, dd.id)];
        if let Some(n) = &dd.name {
            out.push(Attribute::string(DD_SYMBOLIC_NAME, n));
        }
        // §6.11.1.9: the default value of DD_Features is 0.
        out.push(Attribute::u32(DD_FEATURES, dd.features.unwrap_or(0)));
        for m in &dd.members {
            match m {
                Member::Node { name, .. } => {
                    out.push(Attribute::u32(DD_MEMBER_ISCSI_INDEX, self.member_index(m)));
                    out.push(Attribute::string(DD_MEMBER_ISCSI_NAME, name));
                }
                Member::Portal { ip, port } => {
                    out.push(Attribute::u32(DD_MEMBER_PORTAL_INDEX, self.member_index(m)));
                    out.push(Attribute {
                        tag: DD_MEMBER_PORTAL_IP_ADDR,
                        value: ip.clone(),
                    });
                    out.push(Attribute::u32(DD_MEMBER_PORTAL_PORT, *port));
                }
            }
        }
        out
    }

    /// The default DD as isnsd lists it: ID 0 and the names of the
    /// registered nodes in no DD, in registration order.
    fn default_dd_attributes(&self) -> Vec<Attribute> {
        let mut out = vec![Attribute::u32(DD_ID, DEFAULT_DD_ID)];
        for (_, n) in self.objects(ObjectType::IscsiNode) {
            if let Some(name) = n.get_str(tag::ISCSI_NAME)
                && self.domains.domainless(name)
            {
                out.push(Attribute::string(DD_MEMBER_ISCSI_NAME, name));
            }
        }
        out
    }

    /// DDReg, §5.6.5.9: create a DD (no key, or a NIL DD_ID key) or add to
    /// the DD the key names. The DD_ID is the one asked for in the operating
    /// attributes or the next free one; names must be unique; members named
    /// before they register get an index now. Invalid requests: status 3.
    pub(super) fn dd_reg(&mut self, req: &Message, ch: &mut Changes) -> Answer {
        self.authorize_dd(req)?;
        let bad = Status::INVALID_REGISTRATION;
        let key_id = key_id(req.key(), DD_ID, bad)?;
        let ops = req.operating();
        let existing = match key_id {
            Some(id) => Some(self.domains.dd_pos(id).ok_or(bad)?),
            None => None,
        };
        let mut dd = match existing {
            Some(p) => self
                .domains
                .dds
                .get(p)
                .cloned()
                .ok_or(Status::INTERNAL_ERROR)?,
            None => Dd {
                id: 0,
                name: None,
                features: None,
                members: Vec::new(),
            },
        };
        for a in ops {
            match a.tag {
                DD_ID if a.is_nil() => {}
                DD_ID => {
                    let id = a.as_u32().filter(|id| *id != 0).ok_or(bad)?;
                    if existing.is_some() && id != dd.id {
                        return Err(bad);
                    }
                    if existing.is_none() && self.domains.dd_pos(id).is_some() {
                        return Err(bad);
                    }
                    dd.id = id;
                }
                DD_SYMBOLIC_NAME if a.is_nil() => {}
                DD_SYMBOLIC_NAME => {
                    let n = name_of(a).ok_or(bad)?;
                    let clash = self
                        .domains
                        .dds
                        .iter()
                        .any(|d| d.id != dd.id && d.name.as_deref() == Some(&n));
                    if clash {
                        return Err(bad);
                    }
                    dd.name = Some(n);
                }
                DD_FEATURES if a.is_nil() => {}
                DD_FEATURES => dd.features = Some(a.as_u32().ok_or(bad)?),
                _ => {}
            }
        }
        let mut added = Vec::new();
        for m in parse_members(ops, true)? {
            let m = self.resolve_member(m, true)?;
            let dup = dd.members.iter().chain(&added).any(|x| same_member(x, &m));
            if !dup {
                added.push(m);
            }
        }
        // Everything checked: take IDs and indices, then change state.
        let domains = &mut self.domains;
        dd.id = take_id(dd.id, &mut domains.next_dd_id, |id| {
            domains.dds.iter().any(|d| d.id == id)
        })?;
        for m in &mut added {
            if let Member::Node { name, index } = m {
                let key = Attribute::string(tag::ISCSI_NAME, name);
                if self.entity_of_node(&key).is_none() {
                    *index = self.alloc_index();
                }
            }
        }
        let old_members: Vec<String> = node_names(&dd.members).collect();
        dd.members.extend(added.iter().cloned());
        let id = dd.id;
        match existing {
            Some(p) => {
                if let Some(slot) = self.domains.dds.get_mut(p) {
                    *slot = dd;
                }
            }
            None => self.domains.dds.push(dd),
        }
        for n in node_names(&added) {
            self.domains.by_node.entry(n).or_default().insert(id);
        }
        self.domains.recompute_active();
        self.dd_member_scn(id, &old_members, node_names(&added).collect(), true, ch);
        ch.domains = true;
        let p = self.domains.dd_pos(id).ok_or(Status::INTERNAL_ERROR)?;
        let dd = self.domains.dds.get(p).ok_or(Status::INTERNAL_ERROR)?;
        Ok((Vec::new(), self.dd_attributes(dd)))
    }

    /// DDDereg, §5.6.5.10: no operating attributes removes the DD (its
    /// members stay registered); otherwise the members named are removed.
    /// Unknown DD: status 22 (Invalid Deregistration), as isnsd.
    pub(super) fn dd_dereg(&mut self, req: &Message, ch: &mut Changes) -> Answer {
        self.authorize_dd(req)?;
        let bad = Status::INVALID_DEREGISTRATION;
        let id = key_id(req.key(), DD_ID, bad)?.ok_or(bad)?;
        let p = self.domains.dd_pos(id).ok_or(bad)?;
        let ops = req.operating();
        let members = parse_members(ops, false)?;
        let mut gone = Vec::new();
        let dd = self
            .domains
            .dds
            .get(p)
            .cloned()
            .ok_or(Status::INTERNAL_ERROR)?;
        if ops.is_empty() {
            self.domains.dds.remove(p);
            for s in &mut self.domains.sets {
                s.dds.retain(|x| *x != id);
            }
            gone.extend(dd.members.iter().cloned());
        } else {
            let mut kept = dd.members.clone();
            for m in members {
                let Ok(m) = self.resolve_member(m, false) else {
                    continue;
                };
                if let Some(i) = kept.iter().position(|x| same_member(x, &m)) {
                    gone.push(kept.remove(i));
                }
            }
            if let Some(slot) = self.domains.dds.get_mut(p) {
                slot.members = kept;
            }
        }
        for n in node_names(&gone) {
            if let Some(s) = self.domains.by_node.get_mut(&n) {
                s.remove(&id);
                if s.is_empty() {
                    self.domains.by_node.remove(&n);
                }
            }
        }
        self.domains.recompute_active();
        let remaining: Vec<String> = self
            .domains
            .dd_pos(id)
            .and_then(|p| self.domains.dds.get(p))
            .map(|d| node_names(&d.members).collect())
            .unwrap_or_default();
        self.dd_member_scn(id, &remaining, node_names(&gone).collect(), false, ch);
        ch.domains = true;
        Ok((Vec::new(), Vec::new()))
    }

    /// DD_MEMBER_ADDED / DD_MEMBER_REMOVED SCNs (§6.4.4) to the registered
    /// nodes concerned: every changed node about every other member, and the
    /// other members about it; on removal only pairs that no longer share an
    /// active DD.
    fn dd_member_scn(
        &self,
        id: u32,
        others: &[String],
        changed: Vec<String>,
        added: bool,
        ch: &mut Changes,
    ) {
        let event = if added {
            tag::scn::DD_MEMBER_ADDED
        } else {
            tag::scn::DD_MEMBER_REMOVED
        };
        let registered = |n: &str| {
            self.entity_of_node(&Attribute::string(tag::ISCSI_NAME, n))
                .is_some()
        };
        let changed: Vec<String> = changed.into_iter().filter(|n| registered(n)).collect();
        let mut told = HashSet::new();
        for c in &changed {
            for o in others.iter().chain(&changed) {
                if o == c || !registered(o) {
                    continue;
                }
                if !added && self.domains.share_active(c, o) {
                    continue;
                }
                for (to, about) in [(o, c), (c, o)] {
                    if !told.insert((to, about)) {
                        continue;
                    }
                    ch.dd_scn.push((
                        to.clone(),
                        ScnEvent {
                            event,
                            object_key: vec![
                                Attribute::u32(DD_ID, id),
                                Attribute::string(tag::ISCSI_NAME, about),
                            ],
                        },
                    ));
                }
            }
        }
    }

    /// DDSReg, §5.6.5.11: create a DDS (no key) or update the one the key
    /// names: symbolic name (unique), status, and member DDs (which must
    /// exist). A new set's status is 0 (disabled) unless given.
    pub(super) fn dds_reg(&mut self, req: &Message, ch: &mut Changes) -> Answer {
        self.authorize_dd(req)?;
        let bad = Status::INVALID_REGISTRATION;
        let key_id = key_id(req.key(), DDS_ID, bad)?;
        let existing = match key_id {
            Some(id) => Some(self.domains.dds_pos(id).ok_or(bad)?),
            None => None,
        };
        let mut s = match existing {
            Some(p) => self
                .domains
                .sets
                .get(p)
                .cloned()
                .ok_or(Status::INTERNAL_ERROR)?,
            None => Dds {
                id: 0,
                name: None,
                status: 0,
                dds: Vec::new(),
            },
        };
        for a in req.operating() {
            match a.tag {
                _ if a.is_nil() => {}
                DDS_ID => {
                    let id = a.as_u32().filter(|id| *id != 0).ok_or(bad)?;
                    if existing.is_some() && id != s.id
                        || existing.is_none() && self.domains.dds_pos(id).is_some()
                    {
                        return Err(bad);
                    }
                    s.id = id;
                }
                DDS_SYMBOLIC_NAME => {
                    let n = name_of(a).ok_or(bad)?;
                    if self
                        .domains
                        .sets
                        .iter()
                        .any(|x| x.id != s.id && x.name.as_deref() == Some(&n))
                    {
                        return Err(bad);
                    }
                    s.name = Some(n);
                }
                DDS_STATUS => s.status = a.as_u32().ok_or(bad)?,
                DD_ID => {
                    let id = a.as_u32().ok_or(bad)?;
                    self.domains.dd_pos(id).ok_or(bad)?;
                    if !s.dds.contains(&id) {
                        s.dds.push(id);
                    }
                }
                _ => return Err(bad),
            }
        }
        let domains = &mut self.domains;
        s.id = take_id(s.id, &mut domains.next_dds_id, |id| {
            domains.sets.iter().any(|x| x.id == id)
        })?;
        let answer = s.attributes();
        match existing {
            Some(p) => {
                if let Some(slot) = self.domains.sets.get_mut(p) {
                    *slot = s;
                }
            }
            None => self.domains.sets.push(s),
        }
        self.domains.recompute_active();
        ch.domains = true;
        Ok((Vec::new(), answer))
    }

    /// DDSDereg, §5.6.5.12: no operating attributes removes the set (its DDs
    /// stay); DD_IDs remove those DDs from it. Unknown set: status 22.
    pub(super) fn dds_dereg(&mut self, req: &Message, ch: &mut Changes) -> Answer {
        self.authorize_dd(req)?;
        let bad = Status::INVALID_DEREGISTRATION;
        let id = key_id(req.key(), DDS_ID, bad)?.ok_or(bad)?;
        let p = self.domains.dds_pos(id).ok_or(bad)?;
        let ops = req.operating();
        let mut drop = Vec::new();
        for a in ops {
            match a.tag {
                DD_ID => drop.push(a.as_u32().ok_or(bad)?),
                _ => return Err(bad),
            }
        }
        if ops.is_empty() {
            self.domains.sets.remove(p);
        } else if let Some(s) = self.domains.sets.get_mut(p) {
            s.dds.retain(|x| !drop.contains(x));
        }
        self.domains.recompute_active();
        ch.domains = true;
        Ok((Vec::new(), Vec::new()))
    }

    /// DDs `v` may see: all for a Control Node, else those it belongs to.
    fn dd_list(&self, v: &Viewer) -> Vec<(u32, Vec<Attribute>)> {
        let mut out = Vec::new();
        if self.domains.default_dd && (v.all || v.in_default) {
            out.push((DEFAULT_DD_ID, self.default_dd_attributes()));
        }
        for dd in &self.domains.dds {
            if v.all || v.dds.contains(&dd.id) {
                out.push((dd.id, self.dd_attributes(dd)));
            }
        }
        out
    }

    /// DDSs `v` may see: all for a Control Node, else those holding a DD it sees.
    fn dds_list(&self, v: &Viewer) -> Vec<(u32, Vec<Attribute>)> {
        self.domains
            .sets
            .iter()
            .filter(|s| v.all || s.dds.iter().any(|id| v.dds.contains(id)))
            .map(|s| (s.id, s.attributes()))
            .collect()
    }

    /// DevAttrQry with a DD or DDS message key (§5.6.5.2): the matching
    /// objects the source may see, all their attributes or those asked for.
    pub(super) fn dd_qry(&self, req: &Message) -> Answer {
        let key = req.key();
        let v = self.viewer(req);
        let list = self.dd_objects(key, &v)?;
        let wanted = req.operating();
        let mut operating = Vec::new();
        for (_, attrs) in list
            .into_iter()
            .filter(|(_, attrs)| key_matches(key, attrs))
        {
            operating.extend(super::select(attrs, wanted));
        }
        Ok((key.to_vec(), operating))
    }

    /// DevGetNext with a DD or DDS key (§5.6.5.3): the next visible object
    /// after the key's ID in registration order (NIL: the first).
    pub(super) fn dd_get_next(&self, req: &Message) -> Answer {
        let key = req.key();
        let v = self.viewer(req);
        let list = self.dd_objects(key, &v)?;
        let id_tag = if key.iter().all(|a| a.tag >= DD_ID) {
            DD_ID
        } else {
            DDS_ID
        };
        let next = if key.iter().all(Attribute::is_nil) {
            list.into_iter().next()
        } else {
            let cur = key
                .iter()
                .find(|a| a.tag == id_tag)
                .and_then(Attribute::as_u32)
                .ok_or(Status::NO_SUCH_ENTRY)?;
            let mut it = list.into_iter().skip_while(|(id, _)| *id != cur);
            it.next().ok_or(Status::NO_SUCH_ENTRY)?;
            it.next()
        };
        let (id, attrs) = next.ok_or(Status::NO_SUCH_ENTRY)?;
        Ok((
            vec![Attribute::u32(id_tag, id)],
            super::select(attrs, req.operating()),
        ))
    }

    /// The DD objects (key of DD tags) or DDS objects (key of DDS tags).
    fn dd_objects(&self, key: &[Attribute], v: &Viewer) -> Res<Vec<(u32, Vec<Attribute>)>> {
        if key.iter().all(|a| (DD_ID..=DD_NEXT_ID).contains(&a.tag)) {
            Ok(self.dd_list(v))
        } else if key.iter().all(|a| (DDS_ID..=DDS_NEXT_ID).contains(&a.tag)) {
            Ok(self.dds_list(v))
        } else {
            Err(Status::INVALID_QUERY)
        }
    }
}

/// Whether every non-NIL key attribute occurs with that value among `attrs`.
fn key_matches(key: &[Attribute], attrs: &[Attribute]) -> bool {
    key.iter()
        .all(|k| k.is_nil() || attrs.iter().any(|a| a.tag == k.tag && a.value == k.value))
}

fn same_member(a: &Member, b: &Member) -> bool {
    match (a, b) {
        (Member::Node { name: x, .. }, Member::Node { name: y, .. }) => x == y,
        (Member::Portal { ip: i, port: p }, Member::Portal { ip: j, port: q }) => i == j && p == q,
        _ => false,
    }
}

fn node_names(members: &[Member]) -> impl Iterator<Item = String> + '_ {
    members.iter().filter_map(|m| match m {
        Member::Node { name, .. } => Some(name.clone()),
        Member::Portal { .. } => None,
    })
}

#[cfg(test)]
#[path = "dd_tests.rs"]
mod tests;

/// The ID a DD or DDS registration gets (§5.6.5.9, §5.6.5.11): `asked`
/// when the client gave one, else the first free one from `next` (IDs
/// start at 1; 0 is the default DD). `next` moves past the ID taken.
fn take_id(asked: u32, next: &mut u32, taken: impl Fn(u32) -> bool) -> Res<u32> {
    let mut id = asked;
    if id == 0 {
        id = (*next).max(1);
        while taken(id) {
            id = id.checked_add(1).ok_or(Status::INTERNAL_ERROR)?;
        }
    }
    *next = (*next).max(id.saturating_add(1));
    Ok(id)
}
