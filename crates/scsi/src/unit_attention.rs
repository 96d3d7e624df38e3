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
//!
//! The power on (this process's start) is announced the same way to each initiator port
//! ([`UnitAttentions::power_on_for`]): the first I_T nexus of every initiator port after the
//! start gets POWER ON, RESET, OR BUS DEVICE RESET OCCURRED on its first command, so a host
//! that reconnects to a restarted target learns that it restarted (as tgtd does for each new
//! nexus). A port is told once: a session that moves to another portal keeps its initiator
//! port (name and ISID, one portal group) and is not told again.

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
    /// Nexuses whose pending condition announces the power on, with their port's key; and
    /// the ports already told.
    power_on: Mutex<PowerOn>,
}

#[derive(Debug, Default)]
struct PowerOn {
    /// Whether the power on is announced at all ([`UnitAttentions::announce_power_on`]).
    enabled: bool,
    pending: HashMap<u64, u64>,
    told: std::collections::HashSet<u64>,
}

impl UnitAttentions {
    fn nexuses(&self) -> std::sync::MutexGuard<'_, HashMap<u64, bool>> {
        self.nexuses.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An I_T nexus was established (login): later resets concern it.
    pub fn nexus_established(&self, nexus: u64) {
        self.nexuses().entry(nexus).or_insert(false);
    }

    fn power_on(&self) -> std::sync::MutexGuard<'_, PowerOn> {
        self.power_on.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Announce the power on to each initiator port from now on (a target process sets this
    /// on the tables it serves; a table built for a test does not).
    pub fn announce_power_on(&self) {
        self.power_on().enabled = true;
    }

    /// The established `nexus` belongs to the initiator port with key `port`: unless that port
    /// was already told, its next command reports the power on (once announced).
    pub fn power_on_for(&self, nexus: u64, port: u64) {
        let mut po = self.power_on();
        if !po.enabled || po.told.contains(&port) || po.pending.values().any(|p| *p == port) {
            return;
        }
        let mut map = self.nexuses();
        let pending = map.entry(nexus).or_insert(false);
        if !*pending {
            *pending = true;
            self.pending.fetch_add(1, Ordering::Relaxed);
        }
        po.pending.insert(nexus, port);
    }

    /// The I_T nexus is gone: its pending condition, if any, goes with it.
    pub fn nexus_lost(&self, nexus: u64) {
        self.power_on().pending.remove(&nexus);
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
            drop(map);
            let mut po = self.power_on();
            if let Some(port) = po.pending.remove(&nexus) {
                po.told.insert(port);
            }
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
    fn the_power_on_is_told_once_to_each_initiator_port() {
        let ua = UnitAttentions::default();
        ua.nexus_established(1);
        ua.power_on_for(1, 100);
        assert_eq!(ua.check(1, opcode::READ_10), None, "not announced");
        ua.announce_power_on();
        ua.power_on_for(1, 100);
        assert_eq!(ua.check(1, opcode::INQUIRY), None, "INQUIRY is exempt");
        assert_eq!(
            ua.check(1, opcode::READ_10).map(|s| (s.key, s.asc)),
            Some((SenseKey::UnitAttention, Asc::POWER_ON_RESET_OCCURRED))
        );
        assert_eq!(ua.check(1, opcode::READ_10), None, "reported once");
        // The same port again (a move, a reconnect): not told again; another port is.
        ua.nexus_lost(1);
        ua.nexus_established(2);
        ua.power_on_for(2, 100);
        assert_eq!(ua.check(2, opcode::READ_10), None);
        ua.nexus_established(3);
        ua.power_on_for(3, 200);
        // A nexus lost before it was told: its port's next nexus is told.
        ua.nexus_lost(3);
        assert_eq!(ua.pending.load(Ordering::Relaxed), 0);
        ua.nexus_established(4);
        ua.power_on_for(4, 200);
        assert_eq!(
            ua.check(4, opcode::WRITE_10).map(|s| s.asc),
            Some(Asc::POWER_ON_RESET_OCCURRED)
        );
        assert_eq!(ua.pending.load(Ordering::Relaxed), 0);
    }

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
