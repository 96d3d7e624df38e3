//! In-memory byte pipes, one per initiator connection: what one side writes the other reads,
//! in order, after the link's latency, with an orderly close from either side (bytes written
//! before a close are still delivered, then the close).
//!
//! Writers append to `out_to_*`; [`Links::transmit`] puts what was written on the wire (or
//! straight into the reader's buffer with no latency); [`Links::deliver`] moves what has
//! arrived into `to_*`, the buffers the readers decode from.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use balancer::PortalId;
use bytes::{Bytes, BytesMut};

/// A connection's id, unique for the life of a [`crate::World`].
pub type ConnId = u64;

#[derive(Debug)]
enum Item {
    ToTarget(Bytes),
    ToInitiator(Bytes),
    InitiatorClosed,
    TargetClosed,
}

/// One TCP connection.
#[derive(Debug)]
pub struct Link {
    /// The portal the initiator connected to.
    pub portal: PortalId,
    /// Arrived at the target, not yet read.
    pub to_target: BytesMut,
    /// Arrived at the initiator, not yet read.
    pub to_initiator: BytesMut,
    /// Written by the initiator, not yet sent.
    pub out_to_target: BytesMut,
    /// Written by the target, not yet sent.
    pub out_to_initiator: BytesMut,
    /// The target has seen the initiator close (EOF once `to_target` is read).
    pub initiator_closed: bool,
    /// The initiator has seen the target close (EOF once `to_initiator` is read).
    pub target_closed: bool,
    /// The initiator closed its end.
    pub initiator_gone: bool,
    /// The target closed its end.
    pub target_gone: bool,
    wire: VecDeque<(Instant, Item)>,
}

impl Link {
    fn send(&mut self, at: Instant, latency: Duration) -> bool {
        let mut any = false;
        for (out, to_target) in [
            (&mut self.out_to_target, true),
            (&mut self.out_to_initiator, false),
        ] {
            if out.is_empty() {
                continue;
            }
            any = true;
            let bytes = out.split().freeze();
            let item = if to_target {
                Item::ToTarget(bytes)
            } else {
                Item::ToInitiator(bytes)
            };
            self.wire.push_back((at + latency, item));
        }
        any
    }

    fn arrive(&mut self, now: Instant) -> bool {
        let mut any = false;
        while self.wire.front().is_some_and(|(t, _)| *t <= now) {
            let Some((_, item)) = self.wire.pop_front() else {
                break;
            };
            any = true;
            match item {
                Item::ToTarget(b) => self.to_target.extend_from_slice(&b),
                Item::ToInitiator(b) => self.to_initiator.extend_from_slice(&b),
                Item::InitiatorClosed => self.initiator_closed = true,
                Item::TargetClosed => self.target_closed = true,
            }
        }
        any
    }
}

/// Every open connection.
#[derive(Debug, Default)]
pub struct Links {
    next: ConnId,
    links: BTreeMap<ConnId, Link>,
    latency: Duration,
    now: Option<Instant>,
}

impl Links {
    /// Links that deliver `latency` after sending.
    pub fn new(latency: Duration) -> Self {
        Links {
            latency,
            ..Links::default()
        }
    }

    /// The time sends are stamped with.
    pub fn set_now(&mut self, now: Instant) {
        self.now = Some(now);
    }

    /// Connects to `portal`.
    pub fn open(&mut self, portal: PortalId) -> ConnId {
        self.next += 1;
        self.links.insert(
            self.next,
            Link {
                portal,
                to_target: BytesMut::new(),
                to_initiator: BytesMut::new(),
                out_to_target: BytesMut::new(),
                out_to_initiator: BytesMut::new(),
                initiator_closed: false,
                target_closed: false,
                initiator_gone: false,
                target_gone: false,
                wire: VecDeque::new(),
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

    fn at(&self) -> Instant {
        self.now.unwrap_or_else(Instant::now)
    }

    /// Closes the initiator's end, after what it wrote.
    pub fn close_initiator(&mut self, id: ConnId) {
        self.close(id, true);
    }

    /// Closes the target's end, after what it wrote.
    pub fn close_target(&mut self, id: ConnId) {
        self.close(id, false);
    }

    fn close(&mut self, id: ConnId, initiator: bool) {
        let (at, latency) = (self.at(), self.latency);
        let Some(l) = self.links.get_mut(&id) else {
            return;
        };
        let gone = if initiator {
            &mut l.initiator_gone
        } else {
            &mut l.target_gone
        };
        if *gone {
            return;
        }
        *gone = true;
        l.send(at, latency);
        let item = if initiator {
            Item::InitiatorClosed
        } else {
            Item::TargetClosed
        };
        l.wire.push_back((at + latency, item));
        if latency.is_zero() {
            l.arrive(at);
        }
        self.reap(id);
    }

    /// Puts everything written on the wire (delivering at once without latency); true if
    /// anything was written.
    pub fn transmit(&mut self) -> bool {
        let (at, latency) = (self.at(), self.latency);
        let mut any = false;
        for l in self.links.values_mut() {
            if l.send(at, latency) {
                any = true;
                if latency.is_zero() {
                    l.arrive(at);
                }
            }
        }
        any
    }

    /// Delivers what has arrived by `now`; true if anything did.
    pub fn deliver(&mut self, now: Instant) -> bool {
        let mut any = false;
        for id in self.ids() {
            if let Some(l) = self.links.get_mut(&id) {
                any |= l.arrive(now);
            }
            self.reap(id);
        }
        any
    }

    /// When the next bytes arrive.
    pub fn next_arrival(&self) -> Option<Instant> {
        self.links
            .values()
            .filter_map(|l| l.wire.front().map(|(t, _)| *t))
            .min()
    }

    /// Forgets a link both ends have closed, once nothing is left on the wire.
    fn reap(&mut self, id: ConnId) {
        if self
            .links
            .get(&id)
            .is_some_and(|l| l.initiator_gone && l.target_gone && l.wire.is_empty())
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
