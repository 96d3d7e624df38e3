//! The shell's view of the control plane's event log (the log itself is
//! [`iscsi_target_core::control::EventLog`]): events pushed here are stamped with the wall clock.

use std::sync::{Arc, Mutex};

use balancer::clock::unix_ms;
use balancer::{Event, EventKind};

use crate::control::{Inner, lock};

pub use iscsi_target_core::control::EVENT_LOG_CAPACITY;

/// A handle on the shared control plane's event log.
#[derive(Debug)]
pub struct Events {
    inner: Arc<Mutex<Inner>>,
}

impl Events {
    pub(crate) fn new(inner: Arc<Mutex<Inner>>) -> Self {
        Events { inner }
    }

    /// Appends an event that happens now and returns it (with its sequence number).
    pub fn push(&self, kind: EventKind, reason: impl Into<String>) -> Event {
        lock(&self.inner).plane.push_event(unix_ms(), kind, reason)
    }

    /// Every kept event, oldest first.
    pub fn snapshot(&self) -> Vec<Event> {
        lock(&self.inner).plane.events().snapshot()
    }
}
