//! A shared registry (the etcd deployment): changes another server stored,
//! applied to this server's copy. Each arrives as an entity in its stored
//! state (or its removal), the counters or the discovery domains; applying
//! it keeps the indexes, deadlines, owners and ESI monitoring exact, as a
//! local request does, and yields the state change notifications
//! (§5.6.5.8) it amounts to, found by comparing the old and new entity.

use std::net::IpAddr;

use isns_proto::tag::{self, ObjectType};

use super::dd::Domains;
use super::{Changes, Counters, Entity, Outcome, Registry, ScnEvent};
use crate::object::Object;

impl Registry {
    /// Put entity `seq` in the state another server stored (`None`: it is
    /// gone), with the address that created it. Returns the changes and the
    /// SCN messages for this registry's subscribers; nothing when the entity
    /// is already in that state.
    pub fn apply_stored(
        &mut self,
        seq: u64,
        stored: Option<(Entity, Option<IpAddr>)>,
        now: u64,
    ) -> Outcome {
        let mut changes = Changes::default();
        let same = match (self.entities.get(&seq), &stored) {
            (Some(old), Some((new, owner))) => old == new && self.owner(seq) == *owner,
            (None, None) => true,
            _ => false,
        };
        if same {
            if let (Some(old), Some((new, _))) = (self.entities.get(&seq), &stored) {
                old.refresh(new.last_seen());
            }
            return Outcome::default();
        }
        let old = self.take_entity(seq);
        changes.scn = stored_events(old.as_ref(), stored.as_ref().map(|(e, _)| e));
        match stored {
            Some((new, owner)) => {
                if let Some(old) = &old {
                    new.refresh(old.last_seen());
                }
                self.raise_counters_past(&new);
                self.put_entity(new);
                self.set_owner(seq, owner);
                changes.upserted.insert(seq);
            }
            None => {
                changes.removed.insert(seq);
            }
        }
        self.settle(changes, now)
    }

    /// Counters another server stored: each raised to at least the stored
    /// value (a sequence number or index handed out anywhere is never
    /// handed out again).
    pub fn raise_counters(&mut self, stored: Counters) {
        let c = &mut self.counters;
        c.next_seq = c.next_seq.max(stored.next_seq);
        c.next_index = c.next_index.max(stored.next_index);
        c.next_auto_eid = c.next_auto_eid.max(stored.next_auto_eid);
    }

    /// Put the counters back to the stored ones (undoing what a request
    /// whose write was refused took).
    pub fn set_counters(&mut self, stored: Counters) {
        self.counters = stored;
    }

    /// Discovery domains and sets another server stored.
    pub fn set_domains(&mut self, domains: Domains) {
        let on = self.domains.default_dd;
        self.domains = domains;
        self.domains.default_dd = on;
    }

    /// The Registration Period (§6.2.6) granted to entity `seq`, seconds.
    pub fn registration_period(&self, seq: u64) -> Option<u32> {
        let e = self.entities.get(&seq)?;
        let asked = e
            .object
            .get(tag::REGISTRATION_PERIOD)
            .and_then(isns_proto::Attribute::as_u32);
        Some(self.limits.grant(asked))
    }

    fn raise_counters_past(&mut self, e: &Entity) {
        let c = &mut self.counters;
        c.next_seq = c.next_seq.max(e.seq.saturating_add(1));
        for o in std::iter::once(&e.object).chain(&e.children) {
            if let Some(next) = o.index.checked_add(1) {
                c.next_index = c.next_index.max(next);
            }
        }
    }
}

/// Whether two versions of an object differ in what a client registered
/// (the SCN bitmap is the subscriber's own business, not a change to report).
fn differs(a: &Object, b: &Object) -> bool {
    let strip = |o: &Object| {
        let mut o = o.clone();
        o.unset(tag::ISCSI_SCN_BITMAP);
        o
    };
    strip(a) != strip(b)
}

/// The SCN events (§6.4.4) that turn `old` into `new`: the entity added or
/// removed, or its portals and nodes added, updated and removed.
fn stored_events(old: Option<&Entity>, new: Option<&Entity>) -> Vec<ScnEvent> {
    let ev = |event, o: &Object| ScnEvent {
        event,
        object_key: o.key(),
    };
    let reported = |o: &&Object| o.kind != ObjectType::PortalGroup;
    let mut out = Vec::new();
    match (old, new) {
        (None, Some(n)) => {
            out.push(ev(tag::scn::OBJECT_ADDED, &n.object));
            for c in n.children.iter().filter(reported) {
                out.push(ev(tag::scn::OBJECT_ADDED, c));
            }
        }
        (Some(o), None) => out.push(ev(tag::scn::OBJECT_REMOVED, &o.object)),
        (Some(o), Some(n)) => {
            if differs(&o.object, &n.object) {
                out.push(ev(tag::scn::OBJECT_UPDATED, &n.object));
            }
            let find = |list: &[Object], c: &Object| {
                list.iter()
                    .position(|x| x.kind == c.kind && x.key() == c.key())
            };
            for c in n.children.iter().filter(reported) {
                match find(&o.children, c) {
                    None => out.push(ev(tag::scn::OBJECT_ADDED, c)),
                    Some(i) if differs(&o.children[i], c) => {
                        out.push(ev(tag::scn::OBJECT_UPDATED, c));
                    }
                    Some(_) => {}
                }
            }
            for c in o.children.iter().filter(reported) {
                if find(&n.children, c).is_none() {
                    out.push(ev(tag::scn::OBJECT_REMOVED, c));
                }
            }
        }
        (None, None) => {}
    }
    out
}

#[cfg(test)]
#[path = "sync_tests.rs"]
mod tests;
