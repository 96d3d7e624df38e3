//! In-memory byte pipes, one per initiator connection: what one side writes the other reads,
//! in order, with an orderly close from either side (bytes written before a close are still
//! delivered).

use std::collections::BTreeMap;

use balancer::PortalId;
use bytes::BytesMut;

/// A connection's id, unique for the life of a [`crate::World`].
pub type ConnId = u64;

/// One TCP connection, as two byte queues.
#[derive(Debug)]
pub struct Link {
    /// The portal the initiator connected to.
    pub portal: PortalId,
    /// Bytes on their way to the target.
    pub to_target: BytesMut,
    /// Bytes on their way to the initiator.
    pub to_initiator: BytesMut,
    /// The initiator closed its end (the target sees EOF once `to_target` is drained).
    pub initiator_closed: bool,
    /// The target closed its end (the initiator sees EOF once `to_initiator` is drained).
    pub target_closed: bool,
}

/// Every open connection.
#[derive(Debug, Default)]
pub struct Links {
    next: ConnId,
    links: BTreeMap<ConnId, Link>,
}

impl Links {
    /// Connects to `portal`.
    pub fn open(&mut self, portal: PortalId) -> ConnId {
        self.next += 1;
        self.links.insert(
            self.next,
            Link {
                portal,
                to_target: BytesMut::new(),
                to_initiator: BytesMut::new(),
                initiator_closed: false,
                target_closed: false,
            },
        );
        self.next
    }

    pub fn get(&self, id: ConnId) -> Option<&Link> {
        self.links.get(&id)
    }

    pub fn get_mut(&mut self, id: ConnId) -> Option<&mut Link> {
        self.links.get_mut(&id)
    }

    /// Ids of the open links, in order.
    pub fn ids(&self) -> Vec<ConnId> {
        self.links.keys().copied().collect()
    }

    /// Closes the initiator's end.
    pub fn close_initiator(&mut self, id: ConnId) {
        if let Some(l) = self.links.get_mut(&id) {
            l.initiator_closed = true;
        }
        self.reap(id);
    }

    /// Closes the target's end.
    pub fn close_target(&mut self, id: ConnId) {
        if let Some(l) = self.links.get_mut(&id) {
            l.target_closed = true;
        }
        self.reap(id);
    }

    /// Forgets a link both ends have closed.
    fn reap(&mut self, id: ConnId) {
        if self
            .links
            .get(&id)
            .is_some_and(|l| l.initiator_closed && l.target_closed)
        {
            self.links.remove(&id);
        }
    }

    /// Number of open links.
    pub fn len(&self) -> usize {
        self.links.len()
    }

    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }
}
