//! The expiry deadline queue (RFC 4171 §6.2.6 Registration Period): one
//! entry per entity, `(deadline, seq)` in deadline order, so a sweep looks
//! only at entities whose deadline passed instead of scanning the registry.
//!
//! Deadlines are lazy: a refresh (any message from a registered source)
//! moves an entity's actual deadline later without touching the queue; the
//! sweep rechecks each due entry against the entity and reschedules it.

use std::collections::{BTreeSet, HashMap};

/// Pending expiry deadlines, at most one per entity.
#[derive(Debug, Clone, Default)]
pub(crate) struct DeadlineQueue {
    /// `(deadline, seq)` in deadline order.
    order: BTreeSet<(u64, u64)>,
    /// The deadline queued for each entity.
    by_seq: HashMap<u64, u64>,
}

impl DeadlineQueue {
    /// Queue (or move) the deadline of entity `seq`.
    pub(crate) fn schedule(&mut self, seq: u64, deadline: u64) {
        if let Some(old) = self.by_seq.insert(seq, deadline) {
            self.order.remove(&(old, seq));
        }
        self.order.insert((deadline, seq));
    }

    /// Forget entity `seq`.
    pub(crate) fn cancel(&mut self, seq: u64) {
        if let Some(old) = self.by_seq.remove(&seq) {
            self.order.remove(&(old, seq));
        }
    }

    /// Take the earliest entry whose deadline is before `now` (an entity
    /// expires when `now > deadline`).
    pub(crate) fn pop_due(&mut self, now: u64) -> Option<(u64, u64)> {
        let first = *self.order.first()?;
        if first.0 >= now {
            return None;
        }
        self.order.remove(&first);
        self.by_seq.remove(&first.1);
        Some(first)
    }

    /// Entries due before `now`, earliest first, without taking them.
    pub(crate) fn due(&self, now: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.order
            .iter()
            .take_while(move |(d, _)| *d < now)
            .copied()
    }

    /// Number of queued entities.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_seq.len()
    }

    /// The deadline queued for `seq`.
    #[cfg(test)]
    pub(crate) fn get(&self, seq: u64) -> Option<u64> {
        self.by_seq.get(&seq).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_deadline_order_only_when_past() {
        let mut q = DeadlineQueue::default();
        q.schedule(1, 30);
        q.schedule(2, 10);
        q.schedule(3, 20);
        assert_eq!(q.pop_due(10), None, "due means now > deadline");
        assert_eq!(q.due(21).collect::<Vec<_>>(), [(10, 2), (20, 3)]);
        assert_eq!(q.pop_due(21), Some((10, 2)));
        assert_eq!(q.pop_due(21), Some((20, 3)));
        assert_eq!(q.pop_due(21), None);
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn rescheduling_keeps_one_entry_per_entity() {
        let mut q = DeadlineQueue::default();
        q.schedule(7, 10);
        q.schedule(7, 50);
        assert_eq!(q.len(), 1);
        assert_eq!(q.get(7), Some(50));
        assert_eq!(q.pop_due(20), None, "the old deadline is gone");
        q.schedule(8, 5);
        q.cancel(8);
        assert_eq!(q.pop_due(100), Some((50, 7)));
        assert_eq!(q.pop_due(100), None);
        assert_eq!(q.len(), 0);
    }
}
