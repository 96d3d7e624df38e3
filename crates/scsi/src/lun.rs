//! LUN addressing (SAM-5 §4.7), REPORT LUNS (SPC-4 §6.33) and the table of
//! logical units of one target, which routes commands by LUN.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::data_in::DataSink;

use crate::cdb::{self, Command};
use crate::inquiry;
use crate::lu::{LogicalUnit, request_sense_data, respond};
use crate::persistent_reservation::NexusPort;
use crate::sense::{Asc, Sense};
use crate::task::{ScsiOutcome, ScsiTask};
use crate::unit_attention::UnitAttentions;

/// Largest LUN representable with flat space addressing.
pub const MAX_LUN: u16 = 0x3FFF;

/// Encode a LUN as the 8-byte LUN field: peripheral device addressing below
/// 256, flat space addressing above (SAM-5 §4.7.7, §4.7.9). `None` if
/// `lun` exceeds [`MAX_LUN`].
pub fn encode_lun(lun: u16) -> Option<u64> {
    let first_level = match lun {
        0..=255 => u64::from(lun),
        256..=MAX_LUN => 0x4000 | u64::from(lun),
        _ => return None,
    };
    Some(first_level << 48)
}

/// Decode an 8-byte LUN field in peripheral (bus 0) or flat space
/// addressing; `None` for other methods or a non-zero second level.
pub fn decode_lun(field: u64) -> Option<u16> {
    if field & 0x0000_FFFF_FFFF_FFFF != 0 {
        return None;
    }
    let top = (field >> 48) as u16;
    match top >> 14 {
        0b00 if top >> 8 == 0 => Some(top & 0xFF),
        0b01 => Some(top & 0x3FFF),
        _ => None,
    }
}

/// REPORT LUNS parameter data for SELECT REPORT `select_report` over `luns`.
pub fn report_luns(select_report: u8, luns: &[u16]) -> Result<Vec<u8>, Sense> {
    let listed: &[u16] = match select_report {
        // All LUNs, well-known ones included (there are none).
        0x00 | 0x02 => luns,
        // Only well-known LUNs: none.
        0x01 => &[],
        _ => return Err(Sense::invalid_field_in_cdb(2, None)),
    };
    let mut out = Vec::with_capacity(8 + 8 * listed.len());
    out.extend_from_slice(&((8 * listed.len()) as u32).to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    for &l in listed {
        out.extend_from_slice(&encode_lun(l).unwrap_or(0).to_be_bytes());
    }
    Ok(out)
}

/// The logical units of one target, by LUN.
#[derive(Debug, Default, Clone)]
pub struct LunTable {
    units: BTreeMap<u16, Arc<LogicalUnit>>,
    /// Pending UNIT ATTENTIONs after resets, by I_T nexus (shared by clones).
    unit_attentions: Arc<UnitAttentions>,
    /// The I_T nexus of every live session (shared by clones), told to units added later.
    ports: Arc<std::sync::Mutex<std::collections::HashMap<u64, NexusPort>>>,
    /// The commands addressed to no unit of the table (shared by clones).
    unaddressed: Arc<crate::statistics::LuStatistics>,
}

impl LunTable {
    pub fn new() -> LunTable {
        LunTable::default()
    }

    /// Add (or replace) the unit at `lun`; `lun` must be at most [`MAX_LUN`].
    pub fn insert(&mut self, lun: u16, unit: Arc<LogicalUnit>) -> Result<(), Sense> {
        if lun > MAX_LUN {
            return Err(Sense::illegal_request(Asc::LOGICAL_UNIT_NOT_SUPPORTED));
        }
        for (nexus, port) in self.ports_map().iter() {
            unit.nexus_port(*nexus, port.clone());
        }
        self.units.insert(lun, unit);
        Ok(())
    }

    /// Takes the unit at `lun` out of the table (a configuration reload removed it).
    pub fn remove(&mut self, lun: u16) -> Option<Arc<LogicalUnit>> {
        self.units.remove(&lun)
    }

    /// The unit numbered `lun`.
    pub fn unit(&self, lun: u16) -> Option<&Arc<LogicalUnit>> {
        self.units.get(&lun)
    }

    /// The target's logical unit inventory changed (units added or removed): every
    /// established nexus gets REPORTED LUNS DATA HAS CHANGED (SPC-4 §6.33). Clones of this
    /// table share the condition.
    pub fn inventory_changed(&self) {
        self.unit_attentions.inventory_changed();
    }

    fn ports_map(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, NexusPort>> {
        self.ports.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The unit addressed by a transport LUN field.
    pub fn get(&self, lun_field: u64) -> Option<&Arc<LogicalUnit>> {
        decode_lun(lun_field).and_then(|l| self.units.get(&l))
    }

    /// The statistics of the commands addressed to a LUN the table does not hold.
    pub fn unaddressed(&self) -> &crate::statistics::LuStatistics {
        &self.unaddressed
    }

    pub fn luns(&self) -> Vec<u16> {
        self.units.keys().copied().collect()
    }

    /// The I_T nexus `nexus` was established (a session logged in): resets from now on
    /// establish a UNIT ATTENTION for it (SAM-5 §5.12).
    pub fn nexus_established(&self, nexus: u64) {
        self.unit_attentions.nexus_established(nexus);
    }

    /// Session `nexus` is the I_T nexus `port` (initiator name + ISID, portal group tag):
    /// persistent reservations of every unit follow the port, not the session.
    pub fn nexus_port(&self, nexus: u64, port: NexusPort) {
        self.ports_map().insert(nexus, port.clone());
        self.units
            .values()
            .for_each(|u| u.nexus_port(nexus, port.clone()));
    }

    /// True when session `nexus` holds a RESERVE(6) reservation or a persistent
    /// reservation registration on any unit.
    pub fn holds_reservation(&self, nexus: u64) -> bool {
        self.units.values().any(|u| u.holds_reservation(nexus))
    }

    /// The I_T nexus `nexus` ended (logout, connection loss): every unit
    /// releases what it held for it. Call once when a session ends.
    pub fn nexus_lost(&self, nexus: u64) {
        self.ports_map().remove(&nexus);
        self.units.values().for_each(|u| u.nexus_lost(nexus));
        self.unit_attentions.nexus_lost(nexus);
    }

    /// LOGICAL UNIT RESET of the unit at `lun_field` (no-op if absent); every
    /// established nexus gets a UNIT ATTENTION.
    pub fn reset_lun(&self, lun_field: u64) {
        if let Some(u) = self.get(lun_field) {
            u.reset();
        }
        self.unit_attentions.reset_occurred();
    }

    /// TARGET WARM/COLD RESET: every unit is reset; every established nexus
    /// gets a UNIT ATTENTION.
    pub fn reset_all(&self) {
        self.units.values().for_each(|u| u.reset());
        self.unit_attentions.reset_occurred();
    }

    /// The UNIT ATTENTION `task` must be terminated with, if one is pending for
    /// its nexus (clearing it).
    pub(crate) fn unit_attention(&self, task: &ScsiTask<'_>) -> Option<Sense> {
        let op = task.cdb.first().copied().unwrap_or(0);
        self.unit_attentions.check(task.nexus, op)
    }

    /// Bytes of data-out the command transfers (see [`cdb::data_out_length`]),
    /// using the addressed unit's block size.
    pub fn data_out_length(&self, lun_field: u64, cdb_bytes: &[u8]) -> Result<u32, Sense> {
        let bs = self
            .get(lun_field)
            .map_or(crate::device::BLOCK_SIZE, |u| u.block_size());
        cdb::data_out_length(cdb_bytes, bs)
    }

    /// Execute a command: REPORT LUNS is answered for the whole target,
    /// others go to the addressed unit; an absent LUN gets the SPC-4 §6.6.2
    /// INQUIRY data (qualifier 011b) or LOGICAL UNIT NOT SUPPORTED. A pending
    /// UNIT ATTENTION of the task's nexus terminates it first.
    pub fn execute(
        &self,
        task: &ScsiTask<'_>,
        data_out: &[u8],
        data_in: &mut dyn DataSink,
    ) -> ScsiOutcome {
        self.execute_parsed(
            self.get(task.lun).map(|u| &**u),
            cdb::parse(task.cdb),
            task,
            data_out,
            data_in,
        )
    }

    /// [`LunTable::execute`] of a CDB already parsed (`cmd` is `cdb::parse(task.cdb)`)
    /// addressed to `unit` (`self.get(task.lun)`).
    pub(crate) fn execute_parsed(
        &self,
        unit: Option<&LogicalUnit>,
        cmd: Result<Command, Sense>,
        task: &ScsiTask<'_>,
        data_out: &[u8],
        data_in: &mut dyn DataSink,
    ) -> ScsiOutcome {
        if let Some(ua) = self.unit_attention(task) {
            return ScsiOutcome::check_condition(ua);
        }
        let edtl = task.expected_data_transfer_length;
        if let Ok(Command::ReportLuns {
            select_report,
            alloc_len,
        }) = cmd
        {
            return match report_luns(select_report, &self.luns()) {
                Ok(buf) => respond(data_in.buf(), &buf, alloc_len, edtl),
                Err(s) => ScsiOutcome::check_condition(s),
            };
        }
        if let Some(unit) = unit {
            if let Ok(Command::ExtendedCopy { param_len }) = cmd {
                // The copy may name any unit of this target (SPC-4 §6.4).
                let units: Vec<&LogicalUnit> = self.units.values().map(|u| &**u).collect();
                return unit.extended_copy(&units, param_len, task, data_out);
            }
            return unit.execute_parsed(cmd, task, data_out, data_in);
        }
        let not_supported = Sense::illegal_request(Asc::LOGICAL_UNIT_NOT_SUPPORTED);
        match cmd {
            Ok(Command::Inquiry {
                evpd: false,
                alloc_len,
                ..
            }) => respond(
                data_in.buf(),
                &inquiry::standard(inquiry::NO_LUN_PERIPHERAL),
                u32::from(alloc_len),
                edtl,
            ),
            Ok(Command::RequestSense { desc, alloc_len }) => respond(
                data_in.buf(),
                &request_sense_data(&not_supported, desc),
                u32::from(alloc_len),
                edtl,
            ),
            Err(s) => ScsiOutcome::check_condition(s),
            Ok(_) => ScsiOutcome::check_condition(not_supported),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lun_encoding_roundtrip() {
        assert_eq!(encode_lun(0), Some(0));
        assert_eq!(encode_lun(5), Some(0x0005_0000_0000_0000));
        assert_eq!(encode_lun(300), Some(0x412C_0000_0000_0000));
        assert_eq!(encode_lun(0x4000), None);
        for l in [0u16, 1, 255, 256, 1000, MAX_LUN] {
            assert_eq!(decode_lun(encode_lun(l).unwrap()), Some(l));
        }
        assert_eq!(decode_lun(0x0105_0000_0000_0000), None); // bus 1
        assert_eq!(decode_lun(0x0005_0000_0000_0001), None);
        assert_eq!(decode_lun(0xC000_0000_0000_0000), None);
    }

    #[test]
    fn report_luns_layout() {
        let r = report_luns(0, &[0, 300]).unwrap();
        assert_eq!(&r[0..8], &[0, 0, 0, 16, 0, 0, 0, 0]);
        assert_eq!(&r[8..16], &[0; 8]);
        assert_eq!(&r[16..18], &[0x41, 0x2C]);
        assert_eq!(report_luns(1, &[0]).unwrap(), vec![0; 8]);
        assert!(report_luns(3, &[0]).is_err());
    }
}
