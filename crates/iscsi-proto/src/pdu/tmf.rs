//! SCSI Task Management Function Request and Response (RFC 7143 §11.5-§11.6), with the
//! function codes (§11.5.1) and response codes (§11.6.1).

use super::wire::{At, Bits, F, TTT, wire_pdu};

wire_pdu! {
    /// SCSI Task Management Function Request (§11.5).
    pub struct TaskMgmtRequest {
        immediate,
        /// Function (§11.5.1), 7 bits.
        pub function: u8 = Bits { shift: 0, mask: 0x7f },
        lun, itt,
        /// Referenced Task Tag (§11.5.2).
        pub referenced_task_tag: u32 = TTT,
        cmd_sn, exp_stat_sn,
        /// RefCmdSN (§11.5.3).
        pub ref_cmd_sn: u32 = At(32),
        /// ExpDataSN (§11.5.4).
        pub exp_data_sn: u32 = At(36),
    }
    always { F => true }
}

wire_pdu! {
    /// SCSI Task Management Function Response (§11.6).
    pub struct TaskMgmtResponse {
        /// Response (§11.6.1).
        pub response: u8 = At(2),
        itt, stat_sn, exp_cmd_sn, max_cmd_sn,
    }
    always { F => true }
}

/// The Function field of a Task Management Function Request (§11.5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum TmfFunction {
    /// Aborts the task identified by the Referenced Task Tag.
    AbortTask = 1,
    /// Aborts every task issued via this session on the LU.
    AbortTaskSet = 2,
    /// Clears the Auto Contingent Allegiance condition.
    ClearAca = 3,
    /// Aborts every task in the task set of the LU.
    ClearTaskSet = 4,
    LogicalUnitReset = 5,
    TargetWarmReset = 6,
    /// Also drops every connection of the target.
    TargetColdReset = 7,
    /// Reassigns a task's connection allegiance (ErrorRecoveryLevel 2).
    TaskReassign = 8,
}

impl TryFrom<u8> for TmfFunction {
    type Error = u8;

    /// The function of a 7-bit Function field; the unknown value back as the error.
    fn try_from(v: u8) -> Result<Self, u8> {
        Ok(match v {
            1 => TmfFunction::AbortTask,
            2 => TmfFunction::AbortTaskSet,
            3 => TmfFunction::ClearAca,
            4 => TmfFunction::ClearTaskSet,
            5 => TmfFunction::LogicalUnitReset,
            6 => TmfFunction::TargetWarmReset,
            7 => TmfFunction::TargetColdReset,
            8 => TmfFunction::TaskReassign,
            other => return Err(other),
        })
    }
}

/// Values of the Response field of a Task Management Function Response (§11.6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TmfResponse;

impl TmfResponse {
    pub const FUNCTION_COMPLETE: u8 = 0;
    pub const TASK_DOES_NOT_EXIST: u8 = 1;
    pub const LUN_DOES_NOT_EXIST: u8 = 2;
    pub const TASK_STILL_ALLEGIANT: u8 = 3;
    pub const TASK_ALLEGIANCE_REASSIGNMENT_NOT_SUPPORTED: u8 = 4;
    pub const FUNCTION_NOT_SUPPORTED: u8 = 5;
    pub const AUTHORIZATION_FAILED: u8 = 6;
    pub const FUNCTION_REJECTED: u8 = 255;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn functions_round_trip_and_unknown_ones_are_errors() {
        for v in 1..=8u8 {
            assert_eq!(TmfFunction::try_from(v).map(|f| f as u8), Ok(v));
        }
        assert_eq!(TmfFunction::try_from(0), Err(0));
        assert_eq!(TmfFunction::try_from(9), Err(9));
    }
}
