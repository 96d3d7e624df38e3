//! Ready To Transfer (RFC 7143 §11.8).

use super::wire::{At, EXP_CMD_SN, F, ITT, LUN, MAX_CMD_SN, STAT_SN, TTT, wire_pdu};

wire_pdu! {
    /// Ready To Transfer (§11.8).
    pub struct R2t {
        /// LUN.
        pub lun: u64 = LUN,
        /// Initiator Task Tag.
        pub itt: u32 = ITT,
        /// Target Transfer Tag.
        pub ttt: u32 = TTT,
        /// StatSN (not advanced by R2T).
        pub stat_sn: u32 = STAT_SN,
        /// ExpCmdSN.
        pub exp_cmd_sn: u32 = EXP_CMD_SN,
        /// MaxCmdSN.
        pub max_cmd_sn: u32 = MAX_CMD_SN,
        /// R2TSN.
        pub r2t_sn: u32 = At(36),
        /// Buffer Offset.
        pub buffer_offset: u32 = At(40),
        /// Desired Data Transfer Length.
        pub desired_data_transfer_length: u32 = At(44),
    }
    always { F => true }
}
