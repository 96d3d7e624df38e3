//! Command numbering and ordering (RFC 7143 §4.2.2.1, §3.2.2.1 of RFC 3720): non-immediate
//! commands run in CmdSN order; one ahead of a gap is held until the gap fills; one outside
//! [ExpCmdSN, MaxCmdSN] is ignored. Immediate commands run at once.

use std::time::Instant;

use iscsi_proto::{Pdu, RESERVED_TAG, SerialNumber, reject_reason};

use super::{CMD_WINDOW, Connection};
use crate::policy::LoginPolicy;

impl Connection {
    pub(super) fn on_ffp_pdu(&mut self, pdu: Pdu, now: Instant, policy: &mut dyn LoginPolicy) {
        let (immediate, cmd_sn) = match &pdu {
            Pdu::DataOut(d) => return self.on_data_out(d),
            Pdu::NopOut(n) if n.itt == RESERVED_TAG => return self.on_ping_answer(n.ttt),
            Pdu::SnackRequest(_) => {
                // §6.7: no SNACK at ErrorRecoveryLevel 0.
                return self.reject(reject_reason::PROTOCOL_ERROR, &pdu);
            }
            Pdu::ScsiCommand(c) => (c.immediate, c.cmd_sn),
            Pdu::TaskMgmtRequest(t) => (t.immediate, t.cmd_sn),
            Pdu::TextRequest(t) => (t.immediate, t.cmd_sn),
            Pdu::LogoutRequest(l) => (l.immediate, l.cmd_sn),
            Pdu::NopOut(n) => (n.immediate, n.cmd_sn),
            _ => return self.reject(reject_reason::PROTOCOL_ERROR, &pdu),
        };
        let Some(s) = self.session() else { return };
        if immediate {
            return self.dispatch(pdu, now, policy);
        }
        let sn = SerialNumber(cmd_sn);
        let exp = SerialNumber(s.exp_cmd_sn);
        if cmd_sn == s.exp_cmd_sn {
            s.exp_cmd_sn = s.exp_cmd_sn.wrapping_add(1);
            self.dispatch(pdu, now, policy);
            self.run_ahead(now, policy);
        } else if sn.gt(exp) && sn.le(SerialNumber(s.max_cmd_sn())) {
            // Arrived ahead of a gap: held until the gap is filled.
            if s.ahead.len() < CMD_WINDOW as usize {
                s.ahead.insert(cmd_sn, pdu);
            }
        } else {
            // Outside the window: silently ignored (§4.2.2.1).
            tracing::debug!(
                cmd_sn,
                exp_cmd_sn = s.exp_cmd_sn,
                "CmdSN outside the window"
            );
        }
    }

    /// Runs the held commands that are now in order.
    fn run_ahead(&mut self, now: Instant, policy: &mut dyn LoginPolicy) {
        while let Some(s) = self.session() {
            let Some(pdu) = s.ahead.remove(&s.exp_cmd_sn) else {
                return;
            };
            s.exp_cmd_sn = s.exp_cmd_sn.wrapping_add(1);
            self.dispatch(pdu, now, policy);
        }
    }

    /// `policy` answers what SendTargets must leave out.
    fn dispatch(&mut self, pdu: Pdu, now: Instant, policy: &mut dyn LoginPolicy) {
        let discovery = self.is_discovery();
        match pdu {
            Pdu::ScsiCommand(c) if !discovery => self.on_scsi_command(c),
            Pdu::TaskMgmtRequest(t) if !discovery => self.on_task_mgmt(t),
            Pdu::TextRequest(t) => self.on_text(t, policy),
            Pdu::LogoutRequest(l) => self.on_logout(l),
            Pdu::NopOut(n) => self.on_nop_out(n, now),
            // §6.3: a Discovery session carries only Text and Logout requests.
            other => self.reject(reject_reason::PROTOCOL_ERROR, &other),
        }
    }
}
