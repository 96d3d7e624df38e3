//! SNACK Request (RFC 7143 §11.16).

use super::wire::{At, Bits, EXP_STAT_SN, F, ITT, LUN, TTT, wire_pdu};

wire_pdu! {
    /// SNACK Request (§11.16).
    pub struct SnackRequest {
        /// Type (§11.16.1), 4 bits.
        pub snack_type: u8 = Bits { shift: 0, mask: 0x0f },
        /// LUN.
        pub lun: u64 = LUN,
        /// Initiator Task Tag.
        pub itt: u32 = ITT,
        /// Target Transfer Tag or SNACK Tag.
        pub ttt: u32 = TTT,
        /// ExpStatSN.
        pub exp_stat_sn: u32 = EXP_STAT_SN,
        /// BegRun.
        pub beg_run: u32 = At(36),
        /// RunLength.
        pub run_length: u32 = At(40),
    }
    always { F => true }
}
