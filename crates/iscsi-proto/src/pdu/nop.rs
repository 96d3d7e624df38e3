//! NOP-Out and NOP-In (RFC 7143 §11.18-§11.19).

use bytes::Bytes;

use super::wire::{DATA, F, ITT, TTT, wire_pdu};
use crate::bhs::RESERVED_TAG;

wire_pdu! {
    /// NOP-Out (§11.18).
    pub struct NopOut {
        immediate, lun,
        /// Initiator Task Tag; 0xffffffff when answering a NOP-In (§11.18.1).
        pub itt: u32 = ITT,
        /// Target Transfer Tag; 0xffffffff unless answering a NOP-In (§11.18.2).
        pub ttt: u32 = TTT,
        cmd_sn, exp_stat_sn,
        /// Ping data.
        pub data: Bytes = DATA,
    }
    always { F => true }
}

wire_pdu! {
    /// NOP-In (§11.19).
    pub struct NopIn {
        lun,
        /// Initiator Task Tag (0xffffffff for a target-initiated ping).
        pub itt: u32 = ITT,
        /// Target Transfer Tag (0xffffffff when no answer is wanted).
        pub ttt: u32 = TTT,
        stat_sn, exp_cmd_sn, max_cmd_sn,
        /// Ping data.
        pub data: Bytes = DATA,
    }
    always { F => true }
}

impl NopOut {
    /// A NOP-Out answering `ping` (§11.18.1): ITT 0xffffffff, TTT copied, immediate.
    pub fn answer(ping: &NopIn, cmd_sn: u32, exp_stat_sn: u32) -> Self {
        NopOut {
            immediate: true,
            lun: ping.lun,
            itt: RESERVED_TAG,
            ttt: ping.ttt,
            cmd_sn,
            exp_stat_sn,
            data: ping.data.clone(),
        }
    }
}
