//! Text Request and Text Response (RFC 7143 §11.10-§11.11).

use bytes::Bytes;

use super::wire::{C, DATA, LUN, TTT, wire_pdu};

wire_pdu! {
    /// Text Request (§11.10).
    pub struct TextRequest {
        immediate, final_,
        /// C bit: text continues in the next PDU.
        pub continue_: bool = C,
        /// LUN (reserved unless used by a key).
        pub lun: u64 = LUN,
        itt,
        /// Target Transfer Tag (0xffffffff for a new request).
        pub ttt: u32 = TTT,
        cmd_sn, exp_stat_sn,
        /// key=value text.
        pub data: Bytes = DATA,
    }
}

wire_pdu! {
    /// Text Response (§11.11).
    pub struct TextResponse {
        final_,
        /// C bit.
        pub continue_: bool = C,
        lun, itt,
        /// Target Transfer Tag (0xffffffff when F is set).
        pub ttt: u32 = TTT,
        stat_sn, exp_cmd_sn, max_cmd_sn,
        /// key=value text.
        pub data: Bytes = DATA,
    }
}
