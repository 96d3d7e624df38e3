//! Write data (RFC 7143 §11.7, §11.8, §13.10-§13.14): immediate data and the
//! unsolicited Data-Out burst when a command is issued, and the solicited
//! Data-Out sequences that answer R2Ts (bounded by MaxBurstLength).

use bytes::Bytes;
use iscsi_proto::{DataOut, Pdu, R2t, RESERVED_TAG, ScsiCommand};

use super::{Data, FullFeatureSession};
use crate::error::Error;

impl FullFeatureSession {
    /// Mark `cmd` as a write of `data`, put the immediate data in it and return
    /// the unsolicited Data-Out PDUs to send after it (ImmediateData, InitialR2T,
    /// FirstBurstLength).
    pub(super) fn unsolicited_data(&self, cmd: &mut ScsiCommand, data: &Bytes) -> Vec<Pdu> {
        cmd.write = true;
        let len = data.len() as u32;
        cmd.edtl = len;
        let p = &self.params;
        let first_burst = p.first_burst_length.min(len);
        let mut sent = 0u32;
        if p.immediate_data {
            sent = first_burst.min(p.target_max_recv_data_segment_length);
            cmd.data = data.slice(..sent as usize);
        }
        if p.initial_r2t || sent >= first_burst {
            return Vec::new();
        }
        cmd.final_ = false;
        self.data_out_sequence(
            cmd.itt,
            cmd.lun,
            RESERVED_TAG,
            data,
            sent,
            first_burst - sent,
        )
    }

    /// Data-Out PDUs for `[offset, offset+len)`, DataSN from 0, F on the last (§11.7).
    pub(super) fn data_out_sequence(
        &self,
        itt: u32,
        lun: u64,
        ttt: u32,
        data: &Bytes,
        offset: u32,
        len: u32,
    ) -> Vec<Pdu> {
        let max = self.params.target_max_recv_data_segment_length.max(512);
        let end = offset.saturating_add(len).min(data.len() as u32);
        let mut v = Vec::new();
        let mut off = offset;
        let mut data_sn = 0u32;
        while off < end {
            let n = max.min(end - off);
            v.push(Pdu::DataOut(DataOut {
                final_: off + n == end,
                lun,
                itt,
                ttt,
                exp_stat_sn: self.exp_stat_sn.get(),
                data_sn,
                buffer_offset: off,
                data: data.slice(off as usize..(off + n) as usize),
            }));
            off += n;
            data_sn += 1;
        }
        v
    }

    /// Answer an R2T with the Data-Out sequence it asks for (§11.8).
    pub(super) fn on_r2t(&mut self, r: R2t) -> Result<(), Error> {
        self.window(r.exp_cmd_sn, r.max_cmd_sn);
        let Some(task) = self.tasks.get(&r.itt) else {
            return Err(Error::Protocol(format!("R2T for unknown ITT {:#x}", r.itt)));
        };
        let Data::Write { data } = &task.data else {
            return Err(Error::Protocol("R2T for a task without write data".into()));
        };
        let end = r.buffer_offset as u64 + r.desired_data_transfer_length as u64;
        if end > data.len() as u64 || r.desired_data_transfer_length > self.params.max_burst_length
        {
            return Err(Error::Protocol(format!(
                "R2T offset {} length {} outside the transfer or above MaxBurstLength",
                r.buffer_offset, r.desired_data_transfer_length
            )));
        }
        let pdus = self.data_out_sequence(
            r.itt,
            task.lun,
            r.ttt,
            data,
            r.buffer_offset,
            r.desired_data_transfer_length,
        );
        self.out.extend(pdus);
        Ok(())
    }
}
