//! SCSI Task Management Function Request and Response (RFC 7143 §11.5-§11.6).

use super::wire::{
    At, Bits, CMD_SN, EXP_CMD_SN, EXP_STAT_SN, F, I, ITT, LUN, MAX_CMD_SN, STAT_SN, TTT, wire_pdu,
};

wire_pdu! {
    /// SCSI Task Management Function Request (§11.5).
    pub struct TaskMgmtRequest {
        /// I bit.
        pub immediate: bool = I,
        /// Function (§11.5.1), 7 bits.
        pub function: u8 = Bits { shift: 0, mask: 0x7f },
        /// LUN.
        pub lun: u64 = LUN,
        /// Initiator Task Tag.
        pub itt: u32 = ITT,
        /// Referenced Task Tag (§11.5.2).
        pub referenced_task_tag: u32 = TTT,
        /// CmdSN.
        pub cmd_sn: u32 = CMD_SN,
        /// ExpStatSN.
        pub exp_stat_sn: u32 = EXP_STAT_SN,
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
        /// Initiator Task Tag.
        pub itt: u32 = ITT,
        /// StatSN.
        pub stat_sn: u32 = STAT_SN,
        /// ExpCmdSN.
        pub exp_cmd_sn: u32 = EXP_CMD_SN,
        /// MaxCmdSN.
        pub max_cmd_sn: u32 = MAX_CMD_SN,
    }
    always { F => true }
}
