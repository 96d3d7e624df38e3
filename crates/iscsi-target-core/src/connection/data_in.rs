//! Completion of SCSI commands (RFC 7143 §11.4, §11.7.3): Data-In PDUs of at most the
//! initiator's MaxRecvDataSegmentLength with the status collapsed into the last one, or a SCSI
//! Response; residuals (§11.4.5).

use bytes::{Bytes, BytesMut};
use iscsi_proto::{DataIn, Pdu, RESERVED_TAG, ScsiResponse, SessionParams};
use scsi::{LendingDataIn, LentView, Residual, ScsiOutcome, ScsiStatus, Sense};

use super::write::CmdInfo;
use super::{Connection, Phase};
use crate::request::{ScsiCommandRequest, ScsiRequest};

/// Data-in room reserved up front at most: a larger EDTL (up to 4 GiB, from the wire) grows
/// the buffer only as the command really produces data.
const MAX_DATA_IN_RESERVE: usize = super::buffers::MAX_POOLED;

impl Connection {
    /// Queues `cmd` for execution by the shell with all its data-out.
    pub(super) fn submit(&mut self, cmd: CmdInfo, data_out: Bytes, pooled_out: bool, r2ts: u32) {
        // A data digest is computed over the data in user space: no lent views then (see
        // scsi::device's Mapping).
        let lending = match &self.phase {
            Phase::Full(s) => !s.digests.data,
            Phase::Login(_) => false,
        };
        let reserve = (cmd.edtl as usize).min(MAX_DATA_IN_RESERVE);
        // A READ that may lend the medium's pages starts with no buffer when the pool would
        // not serve one anyway (small reads): most are lent, and one that is copied after all
        // (a device without views) grows it then. Taking one here cost an allocation and a
        // free per 4 KiB READ.
        let buf = if cmd.read && !(lending && reserve < super::buffers::MIN_POOLED) {
            self.pool.take(reserve)
        } else {
            BytesMut::new()
        };
        let data_in = LendingDataIn::new(buf, lending);
        self.scsi
            .push_back(ScsiRequest::Command(ScsiCommandRequest {
                token: cmd.itt,
                lun: cmd.lun,
                edtl: cmd.edtl,
                read: cmd.read,
                write: cmd.write,
                nexus: self.nexus,
                tpgt: self.tpgt,
                data_out,
                data_in,
                cdb: cmd.cdb,
                r2ts,
                pooled_out,
            }));
    }

    /// A command from [`Connection::poll_scsi`] executed with `outcome` and `residual` (as
    /// [`scsi::LunTable::execute_transfer`] gives them): queues its Data-In and/or response
    /// and takes its buffers back.
    pub fn on_scsi_complete(
        &mut self,
        req: ScsiCommandRequest,
        outcome: ScsiOutcome,
        residual: Residual,
    ) {
        let ScsiCommandRequest {
            token: itt,
            lun,
            read,
            data_in,
            data_out,
            r2ts,
            pooled_out,
            ..
        } = req;
        if pooled_out && let Ok(buf) = data_out.try_into_mut() {
            self.pool.give(buf);
        }
        let LendingDataIn {
            buf: mut data_in,
            view,
            ..
        } = data_in;
        if !read {
            data_in.clear();
        }
        let status = outcome.status as u8;
        if outcome.status == ScsiStatus::Good
            && read
            && let Some(view) = view.filter(|v| !v.data.is_empty())
        {
            // The medium's pages, lent: the buffer goes back unused.
            self.pool.give(data_in);
            let data = self.keep_lent(view);
            return self.data_in(lun, itt, data, status, residual);
        }
        if outcome.status == ScsiStatus::Good && !data_in.is_empty() {
            let data = data_in.freeze();
            self.pool.lend(&data);
            return self.data_in(lun, itt, data, status, residual);
        }
        self.pool.give(data_in);
        let Some(s) = self.session() else { return };
        let (o, u, count) = residual_fields(residual);
        let r = ScsiResponse {
            residual_overflow: o,
            residual_underflow: u,
            response: 0,
            status,
            itt,
            stat_sn: s.next_stat_sn(),
            exp_cmd_sn: s.exp_cmd_sn,
            max_cmd_sn: s.max_cmd_sn(),
            exp_data_sn: r2ts,
            residual_count: count,
            sense: outcome
                .sense
                .map(|x| Bytes::copy_from_slice(&x.to_fixed()))
                .unwrap_or_default(),
            ..ScsiResponse::default()
        };
        self.push(r);
    }

    /// The data of a lent `view`, recorded for the transport ([`Connection::poll_transmit_lent`])
    /// when the Data-In PDUs cut it at block boundaries (MaxRecvDataSegmentLength and
    /// MaxBurstLength multiples of the block size: then no block is split between two
    /// PDUs, and the transport only has to mind a `writev` that stops inside one); otherwise
    /// a copy made now, holding the view's range.
    fn keep_lent(&mut self, view: LentView) -> Bytes {
        let bs = view.block_size.max(1) as usize;
        let aligned = match &self.phase {
            Phase::Full(s) => {
                let (seg, burst) = data_in_cuts(&s.params);
                seg.is_multiple_of(bs) && burst.is_multiple_of(bs)
            }
            Phase::Login(_) => false,
        };
        if aligned {
            let data = view.data.clone();
            self.lent.push(view);
            data
        } else {
            let _held = view.hold();
            Bytes::copy_from_slice(&view.data)
        }
    }

    /// A SCSI Response with CHECK CONDITION and `sense`.
    pub(super) fn respond_sense(&mut self, itt: u32, sense: Sense, r2ts: u32) {
        let Some(s) = self.session() else { return };
        let r = ScsiResponse {
            status: ScsiStatus::CheckCondition as u8,
            itt,
            stat_sn: s.next_stat_sn(),
            exp_cmd_sn: s.exp_cmd_sn,
            max_cmd_sn: s.max_cmd_sn(),
            exp_data_sn: r2ts,
            sense: Bytes::copy_from_slice(&sense.to_fixed()),
            ..ScsiResponse::default()
        };
        self.push(r);
    }

    /// Data-In PDUs of at most the initiator's MaxRecvDataSegmentLength, F at each
    /// MaxBurstLength boundary, status in the last one (§11.7).
    fn data_in(&mut self, lun: u64, itt: u32, data: Bytes, status: u8, residual: Residual) {
        let Phase::Full(s) = &mut self.phase else {
            return;
        };
        let (seg, burst) = data_in_cuts(&s.params);
        let total = data.len();
        let (o, u, count) = residual_fields(residual);
        let digests = s.digests;
        let mut off = 0;
        let mut data_sn = 0u32;
        self.out.reserve(total.div_ceil(seg));
        self.out_bytes += total + total.div_ceil(seg) * iscsi_proto::BHS_LEN;
        while off < total {
            let in_burst = burst - off % burst;
            let n = seg.min(total - off).min(in_burst);
            let last = off + n == total;
            self.out.push((
                Pdu::DataIn(DataIn {
                    final_: last || n == in_burst,
                    ack: false,
                    residual_overflow: last && o,
                    residual_underflow: last && u,
                    status_present: last,
                    status: if last { status } else { 0 },
                    lun,
                    itt,
                    ttt: RESERVED_TAG,
                    stat_sn: if last { s.next_stat_sn() } else { 0 },
                    exp_cmd_sn: s.exp_cmd_sn,
                    max_cmd_sn: s.max_cmd_sn(),
                    data_sn,
                    buffer_offset: off as u32,
                    residual_count: if last { count } else { 0 },
                    data: data.slice(off..off + n),
                }),
                digests,
            ));
            data_sn += 1;
            off += n;
        }
    }
}

/// Where Data-In PDUs are cut (§11.7): (most data per PDU, the initiator's
/// MaxRecvDataSegmentLength; burst length, MaxBurstLength, at whose boundaries F is set).
fn data_in_cuts(params: &SessionParams) -> (usize, usize) {
    let seg = (params.initiator_max_recv_data_segment_length as usize).max(512);
    (seg, (params.max_burst_length as usize).max(seg))
}

/// (O, U, count) of a residual.
fn residual_fields(r: Residual) -> (bool, bool, u32) {
    match r {
        Residual::None => (false, false, 0),
        Residual::Overflow(n) => (true, false, n),
        Residual::Underflow(n) => (false, true, n),
    }
}
