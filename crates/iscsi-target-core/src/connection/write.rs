//! SCSI commands and their data-out (RFC 7143 §11.3, §11.7, §11.8): immediate and unsolicited
//! data up to FirstBurstLength, R2Ts for the rest (MaxBurstLength, MaxOutstandingR2T). A
//! command whose data is all in becomes a [`crate::ScsiRequest`].

use bytes::{Bytes, BytesMut};
use iscsi_proto::{DataOut, Pdu, R2t, RESERVED_TAG, ScsiCommand, reject_reason};
use scsi::{Asc, Sense, SenseKey};

use super::{Connection, MAX_WRITE_EDTL};
use crate::request::Cdb;

/// What execution needs of a SCSI Command.
#[derive(Debug, Clone)]
pub(super) struct CmdInfo {
    pub(super) lun: u64,
    pub(super) itt: u32,
    pub(super) edtl: u32,
    pub(super) read: bool,
    pub(super) write: bool,
    pub(super) cdb: Cdb,
}

/// A write waiting for its data (§11.7, §11.8).
#[derive(Debug)]
pub(super) struct WriteTask {
    pub(super) cmd: CmdInfo,
    buf: BytesMut,
    received: u32,
    /// Unsolicited data runs up to here.
    unsol_end: u32,
    unsol_next: u32,
    unsol_data_sn: u32,
    next_r2t_offset: u32,
    r2t_sn: u32,
    r2ts: Vec<R2tState>,
}

/// An R2T waiting for its data.
#[derive(Debug, Clone, Copy)]
struct R2tState {
    ttt: u32,
    offset: u32,
    len: u32,
    received: u32,
    data_sn: u32,
}

impl Connection {
    pub(super) fn on_scsi_command(&mut self, c: ScsiCommand) {
        let Some(s) = self.session() else { return };
        if s.writes.contains_key(&c.itt) {
            return self.reject(reject_reason::TASK_IN_PROGRESS, &Pdu::ScsiCommand(c));
        }
        let cmd = CmdInfo {
            lun: c.lun,
            itt: c.itt,
            edtl: c.edtl,
            read: c.read,
            write: c.write,
            cdb: Cdb::new(c.cdb, c.ext_cdb.as_ref()),
        };
        if !c.write || c.edtl == 0 {
            if !c.data.is_empty() {
                return self.reject(reject_reason::PROTOCOL_ERROR, &Pdu::ScsiCommand(c));
            }
            return self.submit(cmd, Bytes::new(), false, 0);
        }
        let p = &s.params;
        let first_burst = if p.immediate_data || !p.initial_r2t {
            p.first_burst_length.min(c.edtl)
        } else {
            0
        };
        let imm = c.data.len() as u32;
        if c.edtl > MAX_WRITE_EDTL || imm > first_burst || (imm > 0 && !p.immediate_data) {
            return self.reject(reject_reason::PROTOCOL_ERROR, &Pdu::ScsiCommand(c));
        }
        let unsol_end = if c.final_ || p.initial_r2t {
            imm
        } else {
            first_burst
        };
        if imm == c.edtl {
            // All the data came with the command: no buffer to assemble.
            return self.submit(cmd, c.data, false, 0);
        }
        // Data-Out is appended in order as it comes; only a gap (out-of-order R2T
        // sequences) is zero-filled, to be overwritten when its data arrives.
        let mut buf = self.pool.take(c.edtl as usize);
        buf.extend_from_slice(&c.data);
        let task = WriteTask {
            cmd,
            buf,
            received: imm,
            unsol_end,
            unsol_next: imm,
            unsol_data_sn: 0,
            next_r2t_offset: unsol_end,
            r2t_sn: 0,
            r2ts: Vec::new(),
        };
        self.advance_write(task);
    }

    /// Submits a write whose data is all in, or issues the R2Ts it may have outstanding.
    fn advance_write(&mut self, mut task: WriteTask) {
        if task.received >= task.cmd.edtl {
            let WriteTask {
                cmd,
                mut buf,
                r2t_sn,
                ..
            } = task;
            buf.resize(cmd.edtl as usize, 0);
            return self.submit(cmd, buf.freeze(), true, r2t_sn);
        }
        let super::Phase::Full(s) = &mut self.phase else {
            return;
        };
        let max_out = usize::from(s.params.max_outstanding_r2t.max(1));
        let burst = s.params.max_burst_length.max(512);
        while task.r2ts.len() < max_out && task.next_r2t_offset < task.cmd.edtl {
            let len = burst.min(task.cmd.edtl - task.next_r2t_offset);
            let ttt = s.ttt();
            let r2t = R2t {
                lun: task.cmd.lun,
                itt: task.cmd.itt,
                ttt,
                stat_sn: s.stat_sn,
                exp_cmd_sn: s.exp_cmd_sn,
                max_cmd_sn: s.max_cmd_sn(),
                r2t_sn: task.r2t_sn,
                buffer_offset: task.next_r2t_offset,
                desired_data_transfer_length: len,
            };
            task.r2ts.push(R2tState {
                ttt,
                offset: task.next_r2t_offset,
                len,
                received: 0,
                data_sn: 0,
            });
            task.r2t_sn += 1;
            task.next_r2t_offset += len;
            self.out.push((Pdu::R2t(r2t), s.digests));
            self.out_bytes += iscsi_proto::BHS_LEN;
        }
        s.writes.insert(task.cmd.itt, task);
    }

    pub(super) fn on_data_out(&mut self, d: &DataOut) {
        let Some(s) = self.session() else { return };
        let Some(mut task) = s.writes.remove(&d.itt) else {
            // Data for a task that is gone (aborted, or answered already): ignored.
            tracing::debug!(itt = d.itt, "Data-Out for no outstanding task");
            return;
        };
        let len = d.data.len() as u32;
        let offset = d.buffer_offset;
        let ok = if d.ttt == RESERVED_TAG {
            let fits = offset == task.unsol_next
                && d.data_sn == task.unsol_data_sn
                && offset.checked_add(len).is_some_and(|e| e <= task.unsol_end);
            if fits {
                task.unsol_next += len;
                task.unsol_data_sn += 1;
            }
            fits
        } else {
            match task.r2ts.iter().position(|r| r.ttt == d.ttt) {
                Some(i) => {
                    let r = &mut task.r2ts[i];
                    let fits = offset == r.offset + r.received
                        && d.data_sn == r.data_sn
                        && r.received + len <= r.len;
                    if fits {
                        r.received += len;
                        r.data_sn += 1;
                        if r.received == r.len {
                            task.r2ts.remove(i);
                        }
                    }
                    fits
                }
                None => false,
            }
        };
        if !ok {
            // Without SNACK (ERL 0) the data cannot be recovered: the task ends with CHECK
            // CONDITION, ABORTED COMMAND / DATA PHASE ERROR; its further Data-Out is ignored.
            tracing::debug!(
                itt = d.itt,
                data_sn = d.data_sn,
                offset,
                "Data-Out out of sequence; task aborted"
            );
            let sense = Sense::new(SenseKey::AbortedCommand, Asc::DATA_PHASE_ERROR);
            self.pool.give(task.buf);
            return self.respond_sense(d.itt, sense, task.r2t_sn);
        }
        place(&mut task.buf, offset as usize, &d.data);
        task.received += len;
        self.advance_write(task);
    }
}

/// Writes `data` at `offset` of `buf`, growing it (zero-filling any gap before `offset`).
pub(super) fn place(buf: &mut BytesMut, offset: usize, data: &[u8]) {
    if buf.len() < offset {
        buf.resize(offset, 0);
    }
    let inside = buf.len().saturating_sub(offset).min(data.len());
    let (over, beyond) = data.split_at(inside);
    if let Some(dst) = buf.get_mut(offset..offset + inside) {
        dst.copy_from_slice(over);
    }
    buf.extend_from_slice(beyond);
}
