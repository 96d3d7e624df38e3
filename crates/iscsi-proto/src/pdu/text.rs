//! Text Request and Text Response (RFC 7143 §11.10-§11.11).

use bytes::Bytes;

use super::wire::{
    C, CMD_SN, DATA, EXP_CMD_SN, EXP_STAT_SN, F, I, ITT, LUN, MAX_CMD_SN, STAT_SN, TTT, wire_pdu,
};

wire_pdu! {
    /// Text Request (§11.10).
    pub struct TextRequest {
        /// I bit.
        pub immediate: bool = I,
        /// F bit.
        pub final_: bool = F,
        /// C bit: text continues in the next PDU.
        pub continue_: bool = C,
        /// LUN (reserved unless used by a key).
        pub lun: u64 = LUN,
        /// Initiator Task Tag.
        pub itt: u32 = ITT,
        /// Target Transfer Tag (0xffffffff for a new request).
        pub ttt: u32 = TTT,
        /// CmdSN.
        pub cmd_sn: u32 = CMD_SN,
        /// ExpStatSN.
        pub exp_stat_sn: u32 = EXP_STAT_SN,
        /// key=value text.
        pub data: Bytes = DATA,
    }
}

wire_pdu! {
    /// Text Response (§11.11).
    pub struct TextResponse {
        /// F bit.
        pub final_: bool = F,
        /// C bit.
        pub continue_: bool = C,
        /// LUN.
        pub lun: u64 = LUN,
        /// Initiator Task Tag.
        pub itt: u32 = ITT,
        /// Target Transfer Tag (0xffffffff when F is set).
        pub ttt: u32 = TTT,
        /// StatSN.
        pub stat_sn: u32 = STAT_SN,
        /// ExpCmdSN.
        pub exp_cmd_sn: u32 = EXP_CMD_SN,
        /// MaxCmdSN.
        pub max_cmd_sn: u32 = MAX_CMD_SN,
        /// key=value text.
        pub data: Bytes = DATA,
    }
}
