//! Execution of a command as a transport with an Expected Data Transfer Length carries it
//! (iSCSI, RFC 7143 §11.4.5): the residual between the EDTL and the SCSI transfer length, and
//! a write whose EDTL is shorter than its transfer.

use crate::cdb::{self, opcode};
use crate::data_in::DataSink;
use crate::lu::LogicalUnit;
use crate::lun::LunTable;
use crate::task::{Residual, ScsiOutcome, ScsiStatus, ScsiTask};

impl LunTable {
    /// Executes `task` (see [`LunTable::execute`]) and computes its residual. `write` is the
    /// transport's write flag: for a write, the residual compares the EDTL with the data-out
    /// length of the CDB, and a write whose EDTL is shorter than its transfer writes only the
    /// EDTL's whole blocks and reports the overflow (RFC 7143 §11.4.5.1, as libiscsi's
    /// iSCSIResiduals tests expect). The residual is [`Residual::None`] unless the status is
    /// GOOD. The command is counted in its unit's statistics (or the table's unaddressed
    /// ones).
    pub fn execute_transfer(
        &self,
        task: &ScsiTask<'_>,
        write: bool,
        data_out: &[u8],
        data_in: &mut dyn DataSink,
    ) -> (ScsiOutcome, Residual) {
        let unit = self.get(task.lun).map(|u| &**u);
        let (outcome, residual) = self.transfer(unit, task, write, data_out, data_in);
        let written = if write { data_out.len() } else { 0 };
        match unit {
            Some(u) => u.statistics().record(&outcome, written),
            None => self.unaddressed().record(&outcome, written),
        }
        (outcome, residual)
    }

    /// Parses the CDB once: for the data-out length of a write and for its execution (again
    /// only when a write's EDTL shortens its transfer).
    fn transfer(
        &self,
        unit: Option<&LogicalUnit>,
        task: &ScsiTask<'_>,
        write: bool,
        data_out: &[u8],
        data_in: &mut dyn DataSink,
    ) -> (ScsiOutcome, Residual) {
        let edtl = task.expected_data_transfer_length;
        let mut write_len = None;
        let mut cmd = cdb::parse(task.cdb);
        let mut shortened = None;
        let bs = unit.map_or(crate::device::BLOCK_SIZE, LogicalUnit::block_size);
        if write
            && let Ok(c) = &cmd
            && let Ok(tl) = cdb::data_out_length_of(c, bs)
        {
            write_len = Some(tl);
            if tl > edtl {
                let mut short = task.cdb.to_vec();
                match shorten_transfer(&mut short, edtl / bs.max(1)) {
                    Some(true) => {
                        cmd = cdb::parse(&short);
                        shortened = Some(short);
                    }
                    // WRITE(6) cannot say "0 blocks": nothing is written.
                    Some(false) => {
                        if let Some(s) = self.unit_attention(task) {
                            return (ScsiOutcome::check_condition(s), Residual::None);
                        }
                        return (ScsiOutcome::good(0, 0), Residual::compute(edtl, tl));
                    }
                    // Not a WRITE (MODE SELECT, UNMAP, ...): executed as it came.
                    None => {}
                }
            }
        }
        let t = ScsiTask {
            cdb: shortened.as_deref().unwrap_or(task.cdb),
            ..*task
        };
        let outcome = self.execute_parsed(unit, cmd, &t, data_out, data_in);
        let residual = if outcome.status == ScsiStatus::Good {
            Residual::compute(edtl, write_len.unwrap_or(outcome.data_in_wanted))
        } else {
            Residual::None
        };
        (outcome, residual)
    }
}

/// Rewrites the TRANSFER LENGTH of a WRITE / WRITE AND VERIFY CDB (SBC-3 §5.40-§5.47) to
/// `blocks`: `Some(true)` done; `Some(false)` when WRITE(6) cannot express 0 blocks (0 means
/// 256), so nothing must be written; `None` for other commands, left as they are.
pub fn shorten_transfer(cdb: &mut [u8], blocks: u32) -> Option<bool> {
    let (at, width) = match *cdb.first()? {
        opcode::WRITE_6 if blocks == 0 => return Some(false),
        opcode::WRITE_6 => (4, 1),
        opcode::WRITE_10 | opcode::WRITE_AND_VERIFY_10 => (7, 2),
        opcode::WRITE_12 | opcode::WRITE_AND_VERIFY_12 => (6, 4),
        opcode::WRITE_16 | opcode::WRITE_AND_VERIFY_16 => (10, 4),
        _ => return None,
    };
    let bytes = blocks.to_be_bytes();
    let dst = cdb.get_mut(at..at + width)?;
    dst.copy_from_slice(bytes.get(4 - width..)?);
    Some(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Identity, LogicalUnit, MemDevice};
    use bytes::BytesMut;
    use std::sync::Arc;

    fn table() -> LunTable {
        let mut t = LunTable::new();
        let lu = LogicalUnit::new(
            Arc::new(MemDevice::new(64)),
            Identity::new("iqn.t", 0).unwrap(),
        );
        t.insert(0, Arc::new(lu)).unwrap();
        t
    }

    fn task(cdb: &[u8], edtl: u32) -> ScsiTask<'_> {
        ScsiTask {
            cdb,
            lun: 0,
            expected_data_transfer_length: edtl,
            tpgt: 1,
            nexus: 1,
        }
    }

    #[test]
    fn shortens_writes_only() {
        let mut w10 = [opcode::WRITE_10, 0, 0, 0, 0, 0, 0, 0, 8, 0];
        assert_eq!(shorten_transfer(&mut w10, 3), Some(true));
        assert_eq!(&w10[7..9], &[0, 3]);
        assert_eq!(
            shorten_transfer(&mut [opcode::WRITE_6, 0, 0, 0, 4, 0], 0),
            Some(false)
        );
        assert_eq!(shorten_transfer(&mut [opcode::READ_10; 10], 1), None);
    }

    #[test]
    fn commands_to_a_missing_lun_are_counted_apart() {
        let t = table();
        let read = [opcode::READ_10, 0, 0, 0, 0, 1, 0, 0, 1, 0];
        let mut to_lun_3 = task(&read, 512);
        to_lun_3.lun = crate::encode_lun(3).unwrap();
        let (o, _) = t.execute_transfer(&to_lun_3, false, &[], &mut BytesMut::new());
        assert_eq!(o.status, ScsiStatus::CheckCondition);
        let f = t.unaddressed().figures();
        assert_eq!(f.commands, 1);
        assert_eq!(f.errors_with(crate::ErrorStatus::CheckCondition), 1);
        assert_eq!(t.unit(0).unwrap().statistics().figures().commands, 0);
    }

    #[test]
    fn a_write_longer_than_its_edtl_writes_the_edtl_and_reports_overflow() {
        let t = table();
        // WRITE(10) of 2 blocks with an EDTL of one block.
        let cdb = [opcode::WRITE_10, 0, 0, 0, 0, 1, 0, 0, 2, 0];
        let data = vec![0xab; 512];
        let (o, r) = t.execute_transfer(&task(&cdb, 512), true, &data, &mut BytesMut::new());
        assert_eq!((o.status, r), (ScsiStatus::Good, Residual::Overflow(512)));
        let read = [opcode::READ_10, 0, 0, 0, 0, 1, 0, 0, 2, 0];
        let mut got = BytesMut::new();
        let (o, r) = t.execute_transfer(&task(&read, 1024), false, &[], &mut got);
        let f = t.unit(0).unwrap().statistics().figures();
        assert_eq!((f.commands, f.written_bytes, f.read_bytes), (2, 512, 1024));
        assert_eq!((o.status, r), (ScsiStatus::Good, Residual::None));
        assert_eq!(&got[..512], &data[..]);
        assert_eq!(
            &got[512..],
            &[0; 512][..],
            "the second block was not written"
        );
        // A read with a larger EDTL: underflow.
        let (_, r) = t.execute_transfer(&task(&read, 4096), false, &[], &mut BytesMut::new());
        assert_eq!(r, Residual::Underflow(3072));
    }

    #[test]
    fn unit_attention_after_lun_reset_once_per_nexus() {
        let t = table();
        t.nexus_established(1);
        t.reset_lun(0);
        let read = [opcode::READ_10, 0, 0, 0, 0, 0, 0, 0, 1, 0];
        let (o, r) = t.execute_transfer(&task(&read, 512), false, &[], &mut BytesMut::new());
        let s = o.sense.unwrap();
        assert_eq!((o.status, r), (ScsiStatus::CheckCondition, Residual::None));
        assert_eq!(
            (s.key, s.asc),
            (
                crate::SenseKey::UnitAttention,
                crate::Asc::POWER_ON_RESET_OCCURRED
            )
        );
        let (o, _) = t.execute_transfer(&task(&read, 512), false, &[], &mut BytesMut::new());
        assert_eq!(o.status, ScsiStatus::Good);
    }
}
