//! The control plane's event log: a bounded, ordered record of logins, logouts and balancer
//! actions. The time of every event is given by the caller.

use std::collections::VecDeque;

use balancer::{Event, EventKind};

/// How many events the log keeps; older ones are dropped first.
pub const EVENT_LOG_CAPACITY: usize = 1024;

/// A ring of the most recent [`Event`]s, numbered from 1 in the order they were pushed.
#[derive(Debug, Clone)]
pub struct EventLog {
    /// Sequence number of the last event pushed (0: none yet).
    last_seq: u64,
    capacity: usize,
    events: VecDeque<Event>,
    /// Events pushed since the start, by [`EventKind::label`] (dropped ones included).
    counts: Vec<(&'static str, u64)>,
}

impl Default for EventLog {
    fn default() -> Self {
        EventLog::with_capacity(EVENT_LOG_CAPACITY)
    }
}

impl EventLog {
    /// A log keeping the `capacity` most recent events (at least one).
    pub fn with_capacity(capacity: usize) -> Self {
        EventLog {
            last_seq: 0,
            capacity: capacity.max(1),
            events: VecDeque::new(),
            counts: Vec::new(),
        }
    }

    /// Appends an event that happened at `now_ms` and returns it (with its sequence number).
    pub fn push(&mut self, now_ms: u64, kind: EventKind, reason: impl Into<String>) -> Event {
        self.last_seq += 1;
        let ev = Event {
            seq: self.last_seq,
            at_ms: now_ms,
            kind,
            reason: reason.into(),
        };
        let label = ev.kind.label();
        match self.counts.iter_mut().find(|(l, _)| *l == label) {
            Some((_, n)) => *n += 1,
            None => self.counts.push((label, 1)),
        }
        tracing::info!(seq = ev.seq, kind = ev.kind.label(), reason = %ev.reason, "event");
        if self.events.len() == self.capacity {
            self.events.pop_front();
        }
        self.events.push_back(ev.clone());
        ev
    }

    /// Sequence number of the most recent event (0 if none was pushed).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// How many events of each kind were pushed since the start (also those the ring has
    /// dropped), by [`EventKind::label`], in the order each kind first appeared.
    pub fn counts(&self) -> &[(&'static str, u64)] {
        &self.counts
    }

    /// Every kept event, oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Event> {
        self.events.iter()
    }

    /// Every kept event, oldest first, as a vector.
    pub fn snapshot(&self) -> Vec<Event> {
        self.events.iter().cloned().collect()
    }

    /// Kept events with a sequence number above `seq`, oldest first.
    pub fn since(&self, seq: u64) -> impl Iterator<Item = &Event> {
        self.events.iter().filter(move |e| e.seq > seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_events_keeps_their_time_and_drops_the_oldest() {
        let mut log = EventLog::default();
        for i in 0..(EVENT_LOG_CAPACITY + 5) {
            log.push(
                i as u64 * 10,
                EventKind::Failed {
                    what: format!("{i}"),
                },
                "x",
            );
        }
        let s = log.snapshot();
        assert_eq!(s.len(), EVENT_LOG_CAPACITY);
        assert_eq!(s[0].seq, 6);
        assert_eq!(s[0].at_ms, 50);
        assert_eq!(s.last().unwrap().seq, (EVENT_LOG_CAPACITY + 5) as u64);
        assert_eq!(log.last_seq(), (EVENT_LOG_CAPACITY + 5) as u64);
        assert_eq!(log.since(log.last_seq() - 2).count(), 2);
        // The counts go on past the ring's capacity.
        assert_eq!(log.counts(), [("failed", (EVENT_LOG_CAPACITY + 5) as u64)]);
    }
}
