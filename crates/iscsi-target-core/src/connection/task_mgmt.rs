//! Task management (RFC 7143 §11.5, §11.6) at ErrorRecoveryLevel 0. Commands run to completion
//! as soon as they arrive, so only writes waiting for data can be aborted; resets are
//! [`ScsiRequest`]s for the shell, in order with the commands.

use iscsi_proto::{SerialNumber, TaskMgmtRequest, TaskMgmtResponse};
use iscsi_proto::{TmfFunction, TmfResponse};

use super::Connection;
use crate::event::CloseReason;
use crate::request::ScsiRequest;

impl Connection {
    pub(super) fn on_task_mgmt(&mut self, t: TaskMgmtRequest) {
        let lun_ok = self.target().is_some_and(|tg| tg.has_lun(t.lun));
        let Some(s) = self.session() else { return };
        let mut reset = None;
        let response = match TmfFunction::try_from(t.function) {
            Ok(TmfFunction::AbortTask) => {
                if s.writes.remove(&t.referenced_task_tag).is_some() {
                    TmfResponse::FUNCTION_COMPLETE
                } else {
                    // Not found: "function complete" only when RefCmdSN is in the valid
                    // window [ExpCmdSN, MaxCmdSN] and before this request (the command never
                    // arrived); a task already answered is outside it: "task does not exist".
                    let r = SerialNumber(t.ref_cmd_sn);
                    let here = SerialNumber(t.cmd_sn);
                    if r.ge(SerialNumber(s.exp_cmd_sn)) && r.lt(here) {
                        TmfResponse::FUNCTION_COMPLETE
                    } else {
                        TmfResponse::TASK_DOES_NOT_EXIST
                    }
                }
            }
            Ok(
                f @ (TmfFunction::AbortTaskSet
                | TmfFunction::ClearAca
                | TmfFunction::ClearTaskSet
                | TmfFunction::LogicalUnitReset),
            ) => {
                if lun_ok {
                    s.writes.retain(|_, w| w.cmd.lun != t.lun);
                    if f == TmfFunction::LogicalUnitReset {
                        reset = Some(ScsiRequest::LunReset { lun: t.lun });
                    }
                    TmfResponse::FUNCTION_COMPLETE
                } else {
                    TmfResponse::LUN_DOES_NOT_EXIST
                }
            }
            Ok(TmfFunction::TargetWarmReset | TmfFunction::TargetColdReset) => {
                s.writes.clear();
                reset = Some(ScsiRequest::TargetReset);
                TmfResponse::FUNCTION_COMPLETE
            }
            // TASK REASSIGN needs ErrorRecoveryLevel 2.
            Ok(TmfFunction::TaskReassign) => {
                TmfResponse::TASK_ALLEGIANCE_REASSIGNMENT_NOT_SUPPORTED
            }
            Err(_) => TmfResponse::FUNCTION_NOT_SUPPORTED,
        };
        let r = TaskMgmtResponse {
            response,
            itt: t.itt,
            stat_sn: s.next_stat_sn(),
            exp_cmd_sn: s.exp_cmd_sn,
            max_cmd_sn: s.max_cmd_sn(),
        };
        if let Some(req) = reset {
            self.scsi.push_back(req);
        }
        self.push(r);
        if t.function == TmfFunction::TargetColdReset as u8 {
            self.close(CloseReason::ColdReset);
        }
    }
}
