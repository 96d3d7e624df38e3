//! Logout Request and Logout Response (RFC 7143 §11.14-§11.15).

use super::wire::{
    At, Bits, CMD_SN, EXP_CMD_SN, EXP_STAT_SN, F, I, ITT, MAX_CMD_SN, STAT_SN, wire_pdu,
};

/// Logout reason codes (§11.14.1).
pub mod logout_reason {
    /// Close the session.
    pub const CLOSE_SESSION: u8 = 0;
    /// Close the connection.
    pub const CLOSE_CONNECTION: u8 = 1;
    /// Remove the connection for recovery.
    pub const REMOVE_FOR_RECOVERY: u8 = 2;
}

wire_pdu! {
    /// Logout Request (§11.14).
    pub struct LogoutRequest {
        /// I bit.
        pub immediate: bool = I,
        /// Reason Code (§11.14.1), 7 bits.
        pub reason_code: u8 = Bits { shift: 0, mask: 0x7f },
        /// Initiator Task Tag.
        pub itt: u32 = ITT,
        /// CID (reserved for reason 0).
        pub cid: u16 = At(20),
        /// CmdSN.
        pub cmd_sn: u32 = CMD_SN,
        /// ExpStatSN.
        pub exp_stat_sn: u32 = EXP_STAT_SN,
    }
    always { F => true }
}

wire_pdu! {
    /// Logout Response (§11.15).
    pub struct LogoutResponse {
        /// Response (§11.15.1): 0 closed successfully, 1 CID not found, ...
        pub response: u8 = At(2),
        /// Initiator Task Tag.
        pub itt: u32 = ITT,
        /// StatSN.
        pub stat_sn: u32 = STAT_SN,
        /// ExpCmdSN.
        pub exp_cmd_sn: u32 = EXP_CMD_SN,
        /// MaxCmdSN.
        pub max_cmd_sn: u32 = MAX_CMD_SN,
        /// Time2Wait (§11.15.2).
        pub time2wait: u16 = At(40),
        /// Time2Retain (§11.15.3).
        pub time2retain: u16 = At(42),
    }
    always { F => true }
}
