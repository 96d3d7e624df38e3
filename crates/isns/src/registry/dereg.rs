//! DevDereg, RFC 4171 §5.6.5.4: remove an entity, node or portal with its
//! portal groups; an entity left without nodes and portals goes too.

use isns_proto::tag::{self, ObjectType};
use isns_proto::{Attribute, Message};

use super::dev_attr_reg::{key_of, split_objects};
use super::{Answer, Changes, Registry, ScnEvent};

impl Registry {
    pub(super) fn dev_dereg(&mut self, req: &Message, ch: &mut Changes) -> Answer {
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
        // Authorize every existing object first: a refused request removes nothing.
        for (kind, key) in &targets {
            let pos = if *kind == ObjectType::Entity {
                self.entity_by_id(key)
            } else {
                self.locate(*kind, key).map(|(p, _)| p)
            };
            if let Some(p) = pos {
                self.authorize(req, p)?;
            }
        }
        for (kind, key) in targets {
            self.remove(kind, &key, ch);
        }
        Ok((Vec::new(), Vec::new()))
    }

    /// Remove one object (and what goes with it, §5.6.5.4), recording the changes.
    pub(super) fn remove(&mut self, kind: ObjectType, key: &[Attribute], ch: &mut Changes) {
        if kind == ObjectType::Entity {
            if let Some(e) = self.entity_by_id(key).and_then(|s| self.take_entity(s)) {
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
        // The entity leaves the indexes while it changes and goes back in
        // (or stays out) below.
        let Some(mut e) = self.take_entity(p) else {
            return;
        };
        if i >= e.children.len() {
            self.put_entity(e);
            return;
        }
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
            ch.removed.insert(e.seq);
            ch.upserted.remove(&e.seq);
            ch.scn.push(ScnEvent {
                event: tag::scn::OBJECT_REMOVED,
                object_key: e.object.key(),
            });
        } else {
            ch.upserted.insert(e.seq);
            self.put_entity(e);
        }
    }
}
