//! Reservations of a logical unit: SPC-2 RESERVE(6)/RELEASE(6) (SPC-2
//! §7.21, §7.17; kept by SPC-4 as obsolete but still used by initiators)
//! and which commands they block from other I_T nexuses.
//!
//! The READ/WRITE path pays one atomic load while the unit is unreserved;
//! the mutex is only taken once a reservation exists.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::cdb::Command;

/// What a command does to the medium, for reservation conflict checks
/// (SPC-2 §5.5.1; SPC-4 §5.9.1 table 52).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Never blocked: INQUIRY, REQUEST SENSE, REPORT LUNS, RELEASE, ...
    Any,
    /// Neither reads nor writes the medium, but blocked by an SPC-2
    /// reservation of another nexus (TEST UNIT READY, MODE SENSE, ...).
    Other,
    /// Reads the medium.
    Read,
    /// Writes the medium.
    Write,
}

/// The access class of a parsed command.
pub fn access(cmd: &Command) -> Access {
    match cmd {
        Command::Inquiry { .. }
        | Command::RequestSense { .. }
        | Command::ReportLuns { .. }
        | Command::ReportSupportedOperationCodes { .. }
        | Command::Release6
        | Command::PreventAllowMediumRemoval { prevent: 0 } => Access::Any,
        Command::Read(_) | Command::Verify(_) | Command::PreFetch { .. } => Access::Read,
        Command::Write(_)
        | Command::WriteVerify(_)
        | Command::CompareAndWrite(_)
        | Command::OrWrite(_)
        | Command::WriteSame(_)
        | Command::Unmap { .. }
        | Command::WriteAtomic(_)
        | Command::Sanitize(_)
        | Command::SynchronizeCache { .. } => Access::Write,
        _ => Access::Other,
    }
}

/// Reservation state of one logical unit, shared by every portal thread.
#[derive(Debug, Default)]
pub struct Reservations {
    /// True while any reservation exists: the fast path checks only this.
    active: AtomicBool,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// I_T nexus holding the SPC-2 (RESERVE(6)) reservation.
    reserve6: Option<u64>,
}

impl State {
    fn is_active(&self) -> bool {
        self.reserve6.is_some()
    }
}

/// Outcome of a reservation command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    Good,
    Conflict,
}

impl Reservations {
    pub fn new() -> Reservations {
        Reservations::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let r = f(&mut st);
        self.active.store(st.is_active(), Ordering::Release);
        r
    }

    /// True when a command of class `access` from `nexus` must end with
    /// RESERVATION CONFLICT.
    #[inline]
    pub fn conflicts(&self, nexus: u64, access: Access) -> bool {
        if !self.active.load(Ordering::Acquire) || access == Access::Any {
            return false;
        }
        self.with(|st| matches!(st.reserve6, Some(h) if h != nexus))
    }

    /// True when `nexus` holds the SPC-2 reservation.
    pub fn held_by(&self, nexus: u64) -> bool {
        self.active.load(Ordering::Acquire) && self.with(|st| st.reserve6 == Some(nexus))
    }

    /// RESERVE(6) (SPC-2 §7.21): granted when free or already held by this
    /// nexus, else RESERVATION CONFLICT.
    pub fn reserve6(&self, nexus: u64) -> Reply {
        self.with(|st| match st.reserve6 {
            Some(h) if h != nexus => Reply::Conflict,
            _ => {
                st.reserve6 = Some(nexus);
                Reply::Good
            }
        })
    }

    /// RELEASE(6) (SPC-2 §7.17): releases a reservation held by this nexus;
    /// from any other nexus it is GOOD and changes nothing.
    pub fn release6(&self, nexus: u64) -> Reply {
        self.with(|st| {
            if st.reserve6 == Some(nexus) {
                st.reserve6 = None;
            }
            Reply::Good
        })
    }

    /// The I_T nexus is gone (logout, connection loss): its SPC-2
    /// reservation is released (SPC-2 §5.5.1).
    pub fn nexus_lost(&self, nexus: u64) {
        self.with(|st| {
            if st.reserve6 == Some(nexus) {
                st.reserve6 = None;
            }
        });
    }

    /// LOGICAL UNIT RESET or target reset: SPC-2 reservations are released.
    pub fn reset(&self) {
        self.with(|st| st.reserve6 = None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve6_blocks_other_nexus_only() {
        let r = Reservations::new();
        assert!(!r.conflicts(2, Access::Write));
        assert_eq!(r.reserve6(1), Reply::Good);
        assert_eq!(r.reserve6(1), Reply::Good);
        assert_eq!(r.reserve6(2), Reply::Conflict);
        for a in [Access::Other, Access::Read, Access::Write] {
            assert!(r.conflicts(2, a));
            assert!(!r.conflicts(1, a));
        }
        assert!(!r.conflicts(2, Access::Any));
        // RELEASE from the other nexus: GOOD, no effect.
        assert_eq!(r.release6(2), Reply::Good);
        assert!(r.conflicts(2, Access::Read));
        assert_eq!(r.release6(1), Reply::Good);
        assert!(!r.conflicts(2, Access::Read));
        assert_eq!(r.reserve6(2), Reply::Good);
    }

    #[test]
    fn nexus_loss_and_reset_release() {
        let r = Reservations::new();
        r.reserve6(1);
        r.nexus_lost(2);
        assert!(r.conflicts(2, Access::Write));
        r.nexus_lost(1);
        assert!(!r.conflicts(2, Access::Write));
        r.reserve6(3);
        r.reset();
        assert!(!r.conflicts(2, Access::Write));
        assert_eq!(r.reserve6(2), Reply::Good);
    }
}
