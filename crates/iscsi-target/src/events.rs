//! The target's event log: a bounded, ordered record of logins, logouts and balancer actions.

use std::collections::VecDeque;
use std::sync::Mutex;

use balancer::{Event, EventKind};

/// How many events the log keeps; older ones are dropped first.
pub const EVENT_LOG_CAPACITY: usize = 1024;

/// Thread-safe event log with sequence numbers from 1.
#[derive(Debug, Default)]
pub struct EventLog {
    inner: Mutex<(u64, VecDeque<Event>)>,
}

pub(crate) use balancer::clock::unix_ms as now_ms;

impl EventLog {
    /// Appends an event and returns it (with its sequence number).
    pub fn push(&self, kind: EventKind, reason: impl Into<String>) -> Event {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.0 += 1;
        let ev = Event {
            seq: g.0,
            at_ms: now_ms(),
            kind,
            reason: reason.into(),
        };
        tracing::info!(seq = ev.seq, kind = ev.kind.label(), reason = %ev.reason, "event");
        if g.1.len() == EVENT_LOG_CAPACITY {
            g.1.pop_front();
        }
        g.1.push_back(ev.clone());
        ev
    }

    /// Every kept event, oldest first.
    pub fn snapshot(&self) -> Vec<Event> {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.1.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_events_and_drops_the_oldest() {
        let log = EventLog::default();
        for i in 0..(EVENT_LOG_CAPACITY + 5) {
            log.push(
                EventKind::Failed {
                    what: format!("{i}"),
                },
                "x",
            );
        }
        let s = log.snapshot();
        assert_eq!(s.len(), EVENT_LOG_CAPACITY);
        assert_eq!(s[0].seq, 6);
        assert_eq!(s.last().unwrap().seq, (EVENT_LOG_CAPACITY + 5) as u64);
    }
}
