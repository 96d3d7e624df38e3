//! SCSI commands and their data-out (RFC 7143 §11.3, §11.7, §11.8): immediate and unsolicited
//! data up to FirstBurstLength, R2Ts for the rest (MaxBurstLength, MaxOutstandingR2T). A
//! command whose data is all in becomes a [`crate::ScsiRequest`].

use bytes::{Bytes, BytesMut};
use iscsi_proto::{DataOut, Pdu, R2t, RESERVED_TAG, ScsiCommand, reject_reason};
use scsi::{Asc, Sense, SenseKey};

use std::time::Instant;

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
        let Some(task) = s.writes.remove(&d.itt) else {
            // Data for a task that is gone (aborted, or answered already): ignored.
            tracing::debug!(itt = d.itt, "Data-Out for no outstanding task");
            return;
        };
        self.count_data_out(task, d, d.data.len() as u32, Some(&d.data));
    }

    /// Counts `len` bytes of Data-Out `d` in for `task`, writing `data` into its buffer (None:
    /// already there, received in place), and lets the write go on; a Data-Out out of
    /// sequence ends it instead.
    fn count_data_out(&mut self, mut task: WriteTask, d: &DataOut, len: u32, data: Option<&[u8]>) {
        if !task.fits(d, len) {
            return self.data_phase_error(d, task);
        }
        task.count(d, len);
        if let Some(data) = data {
            place(&mut task.buf, d.buffer_offset as usize, data);
        }
        task.received += len;
        self.advance_write(task);
    }

    /// Without SNACK (ERL 0) data out of sequence cannot be recovered: the task ends with
    /// CHECK CONDITION, ABORTED COMMAND / DATA PHASE ERROR; its further Data-Out is ignored.
    fn data_phase_error(&mut self, d: &DataOut, task: WriteTask) {
        tracing::debug!(
            itt = d.itt,
            data_sn = d.data_sn,
            offset = d.buffer_offset,
            "Data-Out out of sequence; task aborted"
        );
        let sense = Sense::new(SenseKey::AbortedCommand, Asc::DATA_PHASE_ERROR);
        self.pool.give(task.buf);
        self.respond_sense(d.itt, sense, task.r2t_sn)
    }

    /// `Some(length of a PDU header)` while a write waits for Data-Out whose segments may be
    /// [`IN_PLACE_MIN`] bytes or more (an outstanding R2T or unsolicited data that long, and a
    /// MaxRecvDataSegmentLength that allows it): the shell then reads a header alone when its
    /// read buffer is empty, so that a large data segment that follows is received in place
    /// ([`Connection::data_out_sink`]) rather than mostly into the read buffer.
    pub fn read_header_first(&self) -> Option<usize> {
        let super::Phase::Full(s) = &self.phase else {
            return None;
        };
        if (s.params.target_max_recv_data_segment_length as usize) < IN_PLACE_MIN {
            return None;
        }
        let waits = s.writes.values().any(|t| {
            (t.unsol_end - t.unsol_next) as usize >= IN_PLACE_MIN
                || t.r2ts
                    .iter()
                    .any(|r| (r.len - r.received) as usize >= IN_PLACE_MIN)
        });
        let digest = if s.digests.header { 4 } else { 0 };
        waits.then_some(iscsi_proto::BHS_LEN + digest)
    }

    /// Call when `buf`, fed with [`Connection::on_bytes`] and its work done, holds no whole
    /// PDU. When it starts with the header of a Data-Out (§11.7) that continues its write in
    /// order (its Buffer Offset is where the write's data end so far) with a data segment of
    /// at least [`IN_PLACE_MIN`] bytes not all in `buf` yet: the header is taken from `buf`,
    /// the part of the data already read is moved into the write's buffer, and the sink
    /// returned is where the shell receives the rest from the socket before it hands it back
    /// with [`Connection::on_data_out_sink`]. Received this way the payload is not copied
    /// out of a read buffer. `None` otherwise, `buf` unchanged.
    pub fn data_out_sink(&mut self, buf: &mut BytesMut) -> Option<DataOutSink> {
        if self.closing.is_some() || !self.scsi.is_empty() || !self.events.is_empty() {
            return None;
        }
        let super::Phase::Full(s) = &mut self.phase else {
            return None;
        };
        let h = self.decoder.data_out_header(buf, IN_PLACE_MIN)?;
        let task = s.writes.get_mut(&h.pdu.itt)?;
        if task.buf.len() != h.pdu.buffer_offset as usize || !task.fits(&h.pdu, h.data_len) {
            return None;
        }
        let mut dst = std::mem::take(&mut task.buf);
        let end = dst.len() + h.data_len as usize;
        dst.reserve(end - dst.len());
        bytes::Buf::advance(buf, h.header_len);
        dst.extend_from_slice(buf);
        buf.clear();
        Some(DataOutSink {
            pdu: h.pdu,
            buf: dst,
            end,
        })
    }

    /// A sink from [`Connection::data_out_sink`] whose data the shell has received: the
    /// Data-Out is counted in as `Connection::on_data_out` would count it (its write goes
    /// on: more R2Ts, or execution once all its data is in). Time `now`, as for a PDU.
    pub fn on_data_out_sink(&mut self, sink: DataOutSink, now: Instant) {
        if self.is_closing() {
            return;
        }
        self.last_rx = now;
        let DataOutSink { pdu, buf, end } = sink;
        debug_assert_eq!(buf.len(), end, "a sink handed back before it was full");
        let Some(s) = self.session() else { return };
        let len = (end - pdu.buffer_offset as usize) as u32;
        match s.writes.remove(&pdu.itt) {
            // The task that lent its buffer (it holds none meanwhile).
            Some(mut task) if task.buf.is_empty() && buf.len() == end => {
                task.buf = buf;
                self.count_data_out(task, &pdu, len, None);
            }
            Some(task) => {
                let itt = task.cmd.itt;
                s.writes.insert(itt, task);
                self.pool.give(buf);
            }
            // The task ended while its data was coming (its session was told to end it).
            None => self.pool.give(buf),
        }
    }
}

/// Data-Out data segments at least this long are received in place when they can be
/// ([`Connection::data_out_sink`]).
pub const IN_PLACE_MIN: usize = 64 * 1024;

/// The rest of a Data-Out's data segment, to be received from the socket straight into its
/// write's buffer ([`Connection::data_out_sink`]).
#[derive(Debug)]
pub struct DataOutSink {
    pdu: DataOut,
    buf: BytesMut,
    end: usize,
}

impl DataOutSink {
    /// Bytes still to come.
    pub fn missing(&self) -> usize {
        self.end - self.buf.len()
    }

    /// Where the next bytes from the socket go: at most [`DataOutSink::missing`] of them.
    pub fn spare(&mut self) -> bytes::buf::Limit<&mut BytesMut> {
        let n = self.missing();
        bytes::BufMut::limit(&mut self.buf, n)
    }

    /// Whether all of the segment is in.
    pub fn is_full(&self) -> bool {
        self.missing() == 0
    }
}

impl WriteTask {
    /// Whether `len` bytes of Data-Out `d` come in sequence: unsolicited data continuing at
    /// the next offset with the next DataSN within FirstBurstLength (§11.7.5), or solicited
    /// data continuing an outstanding R2T's (§11.7.4, §11.8).
    fn fits(&self, d: &DataOut, len: u32) -> bool {
        let offset = d.buffer_offset;
        if d.ttt == RESERVED_TAG {
            offset == self.unsol_next
                && d.data_sn == self.unsol_data_sn
                && offset.checked_add(len).is_some_and(|e| e <= self.unsol_end)
        } else {
            self.r2ts.iter().find(|r| r.ttt == d.ttt).is_some_and(|r| {
                offset == r.offset + r.received
                    && d.data_sn == r.data_sn
                    && r.received + len <= r.len
            })
        }
    }

    /// Counts `len` bytes of Data-Out `d`, which [`WriteTask::fits`]: the next offset and
    /// DataSN, and the R2T it answers (done once all its data is in).
    fn count(&mut self, d: &DataOut, len: u32) {
        if d.ttt == RESERVED_TAG {
            self.unsol_next += len;
            self.unsol_data_sn += 1;
        } else if let Some(i) = self.r2ts.iter().position(|r| r.ttt == d.ttt) {
            let r = &mut self.r2ts[i];
            r.received += len;
            r.data_sn += 1;
            if r.received == r.len {
                self.r2ts.remove(i);
            }
        }
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
