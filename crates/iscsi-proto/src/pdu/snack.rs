//! SNACK Request (RFC 7143 §11.16).

use super::wire::{At, Bits, F, TTT, wire_pdu};

wire_pdu! {
    /// SNACK Request (§11.16).
    pub struct SnackRequest {
        /// Type (§11.16.1), 4 bits.
        pub snack_type: u8 = Bits { shift: 0, mask: 0x0f },
        lun, itt,
        /// Target Transfer Tag or SNACK Tag.
        pub ttt: u32 = TTT,
        exp_stat_sn,
        /// BegRun.
        pub beg_run: u32 = At(36),
        /// RunLength.
        pub run_length: u32 = At(40),
    }
    always { F => true }
}
