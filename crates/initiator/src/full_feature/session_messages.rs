//! PDUs that concern the session rather than one task: NOP-In pings
//! (RFC 7143 §11.19), Asynchronous Messages (§11.9) and Reject (§11.17).

use iscsi_proto::{AsyncMessage, NopIn, NopOut, Pdu, RESERVED_TAG, Reject, async_event};
use scsi::Sense;

use super::{FullFeatureEvent, FullFeatureSession, Phase};
use crate::error::TaskError;

impl FullFeatureSession {
    pub(super) fn on_nop_in(&mut self, n: NopIn) {
        self.window(n.exp_cmd_sn, n.max_cmd_sn);
        if n.itt != RESERVED_TAG {
            // Answer to a ping of ours: StatSN advanced (§11.19.5).
            self.stat_sn(n.stat_sn);
        }
        if n.ttt != RESERVED_TAG && self.phase != Phase::Closed {
            let answer = NopOut::answer(&n, self.cmd_sn.get(), self.exp_stat_sn.get());
            self.out.push_back(Pdu::NopOut(answer));
        }
    }

    pub(super) fn on_async(&mut self, a: AsyncMessage) {
        self.window(a.exp_cmd_sn, a.max_cmd_sn);
        self.stat_sn(a.stat_sn);
        match a.async_event {
            async_event::LOGOUT_REQUESTED => {
                self.events.push_back(FullFeatureEvent::LogoutRequested {
                    within_secs: a.parameter3,
                });
                self.logout();
            }
            async_event::CONNECTION_DROP | async_event::SESSION_DROP => {
                self.close();
                self.events.push_back(FullFeatureEvent::DropAnnounced {
                    session: a.async_event == async_event::SESSION_DROP,
                    time2wait: a.parameter2,
                });
            }
            async_event::NEGOTIATION_REQUEST => {
                self.events
                    .push_back(FullFeatureEvent::RenegotiationRequested);
                self.logout();
            }
            async_event::SCSI_EVENT => {
                let sense = a.data.get(2..).and_then(Sense::parse);
                self.events.push_back(FullFeatureEvent::ScsiEvent(sense));
            }
            _ => {}
        }
    }

    pub(super) fn on_reject(&mut self, r: Reject) {
        self.window(r.exp_cmd_sn, r.max_cmd_sn);
        self.stat_sn(r.stat_sn);
        let itt = r
            .header
            .get(16..20)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
            .unwrap_or(RESERVED_TAG);
        if let Some(task) = self.tasks.remove(&itt) {
            self.fail(task.id, TaskError::Rejected(r.reason));
        }
    }
}
