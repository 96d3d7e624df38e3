//! Issuing commands inside the command window (RFC 7143 §3.2.2.1, §4.2.2.1):
//! CmdSN numbering, ExpCmdSN/MaxCmdSN, StatSN acknowledgement, ITT allocation,
//! and the Logout Request once a draining session has nothing in flight (§11.14).

use bytes::BytesMut;
use iscsi_proto::{LogoutRequest, Pdu, RESERVED_TAG, ScsiCommand, SerialNumber, logout_reason};

use super::{Data, FullFeatureSession, Phase, Task};
use crate::cdb::{ScsiRequest, Transfer};

impl FullFeatureSession {
    pub(super) fn alloc_itt(&mut self) -> u32 {
        loop {
            let itt = self.next_itt;
            self.next_itt = self.next_itt.wrapping_add(1);
            if itt != RESERVED_TAG && !self.tasks.contains_key(&itt) && itt != self.logout_itt {
                return itt;
            }
        }
    }

    /// Issue queued requests while allowed; send Logout when drained.
    pub(super) fn pump(&mut self) {
        while self.phase == Phase::FullFeature
            && self.tasks.len() < self.queue_depth
            && self.cmd_sn.le(self.max_cmd_sn)
        {
            let Some((id, lun, req)) = self.queue.pop_front() else {
                break;
            };
            self.issue(id, lun, req);
        }
        if self.phase == Phase::Draining && self.tasks.is_empty() {
            self.logout_itt = self.alloc_itt();
            self.out.push_back(Pdu::LogoutRequest(LogoutRequest {
                immediate: true,
                reason_code: logout_reason::CLOSE_SESSION,
                itt: self.logout_itt,
                cid: 0,
                cmd_sn: self.cmd_sn.get(),
                exp_stat_sn: self.exp_stat_sn.get(),
            }));
            self.phase = Phase::LoggingOut;
        }
    }

    /// Send the SCSI Command (and any unsolicited Data-Out) for a request whose LUN
    /// field is already encoded.
    pub(super) fn issue(&mut self, id: u64, lun: u64, req: ScsiRequest) {
        let itt = self.alloc_itt();
        let cmd_sn = self.cmd_sn;
        self.cmd_sn = self.cmd_sn.next();
        let mut cmd = ScsiCommand {
            final_: true,
            lun,
            itt,
            cmd_sn: cmd_sn.get(),
            exp_stat_sn: self.exp_stat_sn.get(),
            cdb: req.cdb,
            attr: 1, // SIMPLE task attribute (§11.3.1.3)
            ..Default::default()
        };
        let mut unsolicited = Vec::new();
        let data = match req.transfer {
            Transfer::None => Data::None,
            Transfer::Read(n) => {
                cmd.read = true;
                cmd.edtl = n;
                // Capacity only: Data-In in order is appended, with no zero-fill first.
                Data::Read {
                    buf: BytesMut::new(),
                    whole: None,
                    next_data_sn: 0,
                }
            }
            Transfer::Write(data) => {
                unsolicited = self.unsolicited_data(&mut cmd, &data);
                Data::Write { data }
            }
        };
        let edtl = cmd.edtl;
        self.out.push_back(Pdu::ScsiCommand(cmd));
        self.out.extend(unsolicited);
        self.tasks.insert(
            itt,
            Task {
                id,
                lun,
                edtl,
                data,
                fault: None,
            },
        );
    }

    /// Update MaxCmdSN (§4.2.2.1): ignore when MaxCmdSN < ExpCmdSN - 1; never move back.
    /// ExpCmdSN itself is not kept: at ErrorRecoveryLevel 0 nothing is retransmitted.
    pub(super) fn window(&mut self, exp: u32, max: u32) {
        let (exp, max) = (SerialNumber(exp), SerialNumber(max));
        if max.lt(exp.add(u32::MAX)) {
            return;
        }
        if max.gt(self.max_cmd_sn) {
            self.max_cmd_sn = max;
        }
    }

    pub(super) fn stat_sn(&mut self, stat_sn: u32) {
        let next = SerialNumber(stat_sn).next();
        if next.gt(self.exp_stat_sn) {
            self.exp_stat_sn = next;
        }
    }
}
