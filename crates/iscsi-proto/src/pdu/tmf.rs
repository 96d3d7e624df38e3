//! SCSI Task Management Function Request and Response (RFC 7143 §11.5-§11.6).

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
