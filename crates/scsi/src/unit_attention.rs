//! Unit attention conditions after resets (SAM-5 §5.12, §6.3; SPC-4 §5.14).
//!
//! A LOGICAL UNIT RESET or target reset establishes a UNIT ATTENTION for every I_T nexus
//! known at that time; the next command of each nexus, other than INQUIRY, REPORT LUNS and
//! REQUEST SENSE, is then terminated with CHECK CONDITION, UNIT ATTENTION / POWER ON, RESET,
//! OR BUS DEVICE RESET OCCURRED, which clears it. A nexus established after the reset sees
//! nothing. While no condition is pending, checking a command is one relaxed atomic load.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::cdb::opcode;
use crate::sense::{Asc, Sense, SenseKey};

/// The pending unit attentions of one target's logical units, by I_T nexus.
#[derive(Debug, Default)]
pub struct UnitAttentions {
    /// Nexuses with a condition pending (the fast path reads only this).
    pending: AtomicUsize,
    /// Every established nexus, and whether a condition is pending for it.
    nexuses: Mutex<HashMap<u64, bool>>,
}

impl UnitAttentions {
    fn nexuses(&self) -> std::sync::MutexGuard<'_, HashMap<u64, bool>> {
        self.nexuses.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An I_T nexus was established (login): later resets concern it.
    pub fn nexus_established(&self, nexus: u64) {
        self.nexuses().entry(nexus).or_insert(false);
    }

    /// The I_T nexus is gone: its pending condition, if any, goes with it.
    pub fn nexus_lost(&self, nexus: u64) {
        if self.nexuses().remove(&nexus) == Some(true) {
            self.pending.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// A reset occurred: every established nexus gets a condition.
    pub fn reset_occurred(&self) {
        let mut map = self.nexuses();
        for pending in map.values_mut().filter(|p| !**p) {
            *pending = true;
            self.pending.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The sense to terminate a command with `opcode` from `nexus` with, clearing the
    /// condition; `None` when nothing is pending or the command is exempt (SPC-4 §5.14).
    pub fn check(&self, nexus: u64, op: u8) -> Option<Sense> {
        if self.pending.load(Ordering::Relaxed) == 0
            || matches!(
                op,
                opcode::INQUIRY | opcode::REPORT_LUNS | opcode::REQUEST_SENSE
            )
        {
            return None;
        }
        let mut map = self.nexuses();
        let pending = map.get_mut(&nexus).filter(|p| **p)?;
        *pending = false;
        self.pending.fetch_sub(1, Ordering::Relaxed);
        Some(Sense::new(
            SenseKey::UnitAttention,
            Asc::POWER_ON_RESET_OCCURRED,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_condition_per_reset_for_known_nexuses_only() {
        let ua = UnitAttentions::default();
        ua.nexus_established(1);
        ua.nexus_established(2);
        assert_eq!(ua.check(1, opcode::READ_10), None, "no reset yet");
        ua.reset_occurred();
        ua.nexus_established(3);
        assert_eq!(ua.check(1, opcode::INQUIRY), None, "INQUIRY is exempt");
        let s = ua.check(1, opcode::READ_10).unwrap();
        assert_eq!(
            (s.key, s.asc),
            (SenseKey::UnitAttention, Asc::POWER_ON_RESET_OCCURRED)
        );
        assert_eq!(ua.check(1, opcode::READ_10), None, "reported once");
        assert_eq!(
            ua.check(3, opcode::READ_10),
            None,
            "established after the reset"
        );
        ua.nexus_lost(2);
        assert_eq!(ua.pending.load(Ordering::Relaxed), 0);
        assert_eq!(ua.check(2, opcode::READ_10), None);
    }
}
