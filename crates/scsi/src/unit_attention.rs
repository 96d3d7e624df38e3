//! Unit attention conditions after resets (SAM-5 §5.12, §6.3; SPC-4 §5.14).
//!
//! A LOGICAL UNIT RESET or target reset establishes a UNIT ATTENTION for every I_T nexus
//! known at that time; the next command of each nexus, other than INQUIRY, REPORT LUNS and
//! REQUEST SENSE, is then terminated with CHECK CONDITION, UNIT ATTENTION / POWER ON, RESET,
//! OR BUS DEVICE RESET OCCURRED, which clears it. A nexus established after the reset sees
//! nothing. A change of the target's logical unit inventory (a LUN added or removed by a
//! configuration reload) likewise establishes REPORTED LUNS DATA HAS CHANGED for every nexus
//! (SPC-4 §6.33), reported after a pending reset condition. While no condition is pending,
//! checking a command is one relaxed atomic load.

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
    /// Nexuses with REPORTED LUNS DATA HAS CHANGED pending (counted in `pending` too).
    inventory: Mutex<std::collections::HashSet<u64>>,
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
        if self.inventory().remove(&nexus) {
            self.pending.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn inventory(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<u64>> {
        self.inventory.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The logical unit inventory changed: every established nexus gets REPORTED LUNS DATA
    /// HAS CHANGED (once, however many changes until it is reported).
    pub fn inventory_changed(&self) {
        let map = self.nexuses();
        let mut inv = self.inventory();
        for n in map.keys() {
            if inv.insert(*n) {
                self.pending.fetch_add(1, Ordering::Relaxed);
            }
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
        if self.pending.load(Ordering::Relaxed) == 0 {
            return None;
        }
        if op == opcode::REPORT_LUNS {
            // REPORT LUNS reports the new inventory: it clears that condition (SPC-4 §6.33).
            if self.inventory().remove(&nexus) {
                self.pending.fetch_sub(1, Ordering::Relaxed);
            }
            return None;
        }
        if matches!(op, opcode::INQUIRY | opcode::REQUEST_SENSE) {
            return None;
        }
        let mut map = self.nexuses();
        if let Some(pending) = map.get_mut(&nexus).filter(|p| **p) {
            *pending = false;
            self.pending.fetch_sub(1, Ordering::Relaxed);
            return Some(Sense::new(
                SenseKey::UnitAttention,
                Asc::POWER_ON_RESET_OCCURRED,
            ));
        }
        drop(map);
        if self.inventory().remove(&nexus) {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            return Some(Sense::new(
                SenseKey::UnitAttention,
                Asc::REPORTED_LUNS_DATA_HAS_CHANGED,
            ));
        }
        None
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

    #[test]
    fn an_inventory_change_is_reported_once_to_every_known_nexus_after_a_reset() {
        let ua = UnitAttentions::default();
        ua.nexus_established(1);
        ua.nexus_established(2);
        ua.reset_occurred();
        ua.inventory_changed();
        ua.inventory_changed();
        ua.nexus_established(3);
        assert_eq!(ua.check(1, opcode::INQUIRY), None, "INQUIRY is exempt");
        assert_eq!(
            ua.check(2, opcode::REPORT_LUNS),
            None,
            "REPORT LUNS is exempt"
        );
        assert_eq!(
            ua.check(2, opcode::READ_10).map(|s| s.asc),
            Some(Asc::POWER_ON_RESET_OCCURRED),
            "REPORT LUNS cleared the inventory change only"
        );
        assert_eq!(ua.check(2, opcode::READ_10), None);
        let asc = |s: Option<Sense>| s.map(|s| (s.key, s.asc));
        let ua_of = |a| Some((SenseKey::UnitAttention, a));
        assert_eq!(
            asc(ua.check(1, opcode::READ_10)),
            ua_of(Asc::POWER_ON_RESET_OCCURRED)
        );
        assert_eq!(
            asc(ua.check(1, opcode::READ_10)),
            ua_of(Asc::REPORTED_LUNS_DATA_HAS_CHANGED)
        );
        assert_eq!(ua.check(1, opcode::READ_10), None, "each reported once");
        assert_eq!(
            ua.check(3, opcode::READ_10),
            None,
            "established after the change"
        );
        ua.nexus_lost(2);
        assert_eq!(ua.pending.load(Ordering::Relaxed), 0);
    }
}
