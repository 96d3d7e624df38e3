//! Ready To Transfer (RFC 7143 §11.8).

use super::wire::{At, F, STAT_SN, wire_pdu};

wire_pdu! {
    /// Ready To Transfer (§11.8).
    pub struct R2t {
        lun, itt, ttt,
        /// StatSN (not advanced by R2T).
        pub stat_sn: u32 = STAT_SN,
        exp_cmd_sn, max_cmd_sn,
        /// R2TSN.
        pub r2t_sn: u32 = At(36),
        /// Buffer Offset.
        pub buffer_offset: u32 = At(40),
        /// Desired Data Transfer Length.
        pub desired_data_transfer_length: u32 = At(44),
    }
    always { F => true }
}
