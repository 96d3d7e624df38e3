//! DevAttrQry (RFC 4171 §5.6.5.2) and DevGetNext (§5.6.5.3): answers in
//! registration order, with related objects as open-isns' isnsd gives them.

use std::ops::Bound;

use isns_proto::tag::ObjectType;
use isns_proto::{Attribute, Message, Status};

use super::{Answer, Entity, Registry, Res, pg_usable};
use crate::object::Object;

impl Registry {
    pub(super) fn dev_attr_qry(&self, req: &Message) -> Answer {
        let key = req.key();
        let kind = key_type(key)?;
        let wanted = req.operating();
        let mut found: Vec<(&Entity, &Object)> = Vec::new();
        // An index lookup for a node name, portal or EID key; a walk in
        // registration order for an empty (list all) or partial key.
        let viewer = self.viewer(req);
        for (e, o) in self.matching(kind, key) {
            if !self.visible(&viewer, e, o) {
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
        found.retain(|(e, o)| self.visible(&viewer, e, o)); // DD visibility (dd.rs)
        for (e, o) in found {
            let attrs = o.attributes(e.last_seen());
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

    /// DevGetNext, §5.6.5.3: the object after the key's in registration order.
    pub(super) fn dev_get_next(&self, req: &Message) -> Answer {
        let key = req.key();
        let kind = key_type(key)?;
        if key.is_empty() {
            return Err(Status::MESSAGE_FORMAT_ERROR);
        }
        let viewer = self.viewer(req);
        // Only objects the source may see (dd.rs) count, also as the
        // current one.
        let seen = |(e, o): &(&Entity, &Object)| self.visible(&viewer, e, o);
        let next = if key.iter().all(Attribute::is_nil) {
            self.objects_from(kind, ..).find(seen)
        } else {
            // The current object through the index, then on from there:
            // the rest of its entity, then the following entities.
            let (cur_e, cur_o) = self
                .matching(kind, key)
                .find(seen)
                .ok_or(Status::NO_SUCH_ENTRY)?;
            self.objects_from(kind, cur_e.seq..=cur_e.seq)
                .skip_while(|(_, o)| !std::ptr::eq(*o, cur_o))
                .skip(1)
                .chain(self.objects_from(kind, (Bound::Excluded(cur_e.seq), Bound::Unbounded)))
                .find(seen)
        };
        let (e, o) = next.ok_or(Status::NO_SUCH_ENTRY)?;
        let attrs = o.attributes(e.last_seen());
        Ok((o.key(), super::select(attrs, req.operating())))
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
