//! Logout Request and Logout Response (RFC 7143 §11.14-§11.15).

use super::wire::{At, Bits, F, wire_pdu};

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
        immediate,
        /// Reason Code (§11.14.1), 7 bits.
        pub reason_code: u8 = Bits { shift: 0, mask: 0x7f },
        itt,
        /// CID (reserved for reason 0).
        pub cid: u16 = At(20),
        cmd_sn, exp_stat_sn,
    }
    always { F => true }
}

wire_pdu! {
    /// Logout Response (§11.15).
    pub struct LogoutResponse {
        /// Response (§11.15.1): 0 closed successfully, 1 CID not found, ...
        pub response: u8 = At(2),
        itt, stat_sn, exp_cmd_sn, max_cmd_sn,
        /// Time2Wait (§11.15.2).
        pub time2wait: u16 = At(40),
        /// Time2Retain (§11.15.3).
        pub time2retain: u16 = At(42),
    }
    always { F => true }
}
