//! Registry objects, RFC 4171 §4 (object model) and §6 (their attributes).

use isns_proto::Attribute;
use isns_proto::tag::{self, ObjectType};

/// One registered object. `attrs` holds the client-visible attributes except
/// the index (and, for entities, the timestamp), which are kept separately.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub kind: ObjectType,
    /// Object index (§6.2.7, §6.3.7, §6.4.6, §6.5.5); unique across the registry.
    pub index: u32,
    pub attrs: Vec<Attribute>,
}

impl Object {
    /// A new object with the given attributes.
    pub fn new(kind: ObjectType, index: u32, attrs: Vec<Attribute>) -> Object {
        Object { kind, index, attrs }
    }

    /// The attribute with `tag`, if present.
    pub fn get(&self, tag: u32) -> Option<&Attribute> {
        self.attrs.iter().find(|a| a.tag == tag)
    }

    /// The string value of `tag`.
    pub fn get_str(&self, tag: u32) -> Option<&str> {
        self.get(tag).and_then(Attribute::as_str)
    }

    /// Set an attribute: replace the value in place, or append it.
    pub fn set(&mut self, attr: Attribute) {
        match self.attrs.iter_mut().find(|a| a.tag == attr.tag) {
            Some(slot) => *slot = attr,
            None => self.attrs.push(attr),
        }
    }

    /// Remove the attribute with `tag`.
    pub fn unset(&mut self, tag: u32) {
        self.attrs.retain(|a| a.tag != tag);
    }

    /// The key attributes of this object (§5.6.5: entity id, portal address+port, iSCSI name, PG triple).
    pub fn key(&self) -> Vec<Attribute> {
        self.kind
            .key_tags()
            .iter()
            .filter_map(|t| self.get(*t).cloned())
            .collect()
    }

    /// Whether every attribute of `key` matches this object; NIL key values match anything.
    pub fn matches(&self, key: &[Attribute]) -> bool {
        key.iter().all(|k| match self.get(k.tag) {
            Some(a) => k.is_nil() || a.value == k.value,
            None => false,
        })
    }

    /// All attributes as sent to clients: stored ones, then timestamp (entities) and index.
    pub fn attributes(&self, timestamp: u64) -> Vec<Attribute> {
        let mut out = self.attrs.clone();
        if self.kind == ObjectType::Entity {
            out.push(Attribute::u64(tag::TIMESTAMP, timestamp));
        }
        out.push(Attribute::u32(self.kind.index_tag(), self.index));
        out
    }
}
