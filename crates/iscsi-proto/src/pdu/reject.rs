//! Reject (RFC 7143 §11.17).

use bytes::Bytes;

use super::wire::{At, DATA, F, ITT, wire_pdu};
use crate::bhs::RESERVED_TAG;

/// Reject reasons (§11.17.1).
pub mod reject_reason {
    /// Data (payload) digest error.
    pub const DATA_DIGEST_ERROR: u8 = 0x02;
    /// SNACK Reject.
    pub const SNACK_REJECT: u8 = 0x03;
    /// Protocol Error.
    pub const PROTOCOL_ERROR: u8 = 0x04;
    /// Command not supported.
    pub const COMMAND_NOT_SUPPORTED: u8 = 0x05;
    /// Immediate command reject - too many immediate commands.
    pub const IMMEDIATE_COMMAND_REJECT: u8 = 0x06;
    /// Task in progress.
    pub const TASK_IN_PROGRESS: u8 = 0x07;
    /// Invalid data ack.
    pub const INVALID_DATA_ACK: u8 = 0x08;
    /// Invalid PDU field.
    pub const INVALID_PDU_FIELD: u8 = 0x09;
    /// Long operation reject - out of resources.
    pub const OUT_OF_RESOURCES: u8 = 0x0a;
    /// Waiting for Logout.
    pub const WAITING_FOR_LOGOUT: u8 = 0x0c;
}

wire_pdu! {
    /// Reject (§11.17).
    pub struct Reject {
        /// Reason (§11.17.1), see [`reject_reason`].
        pub reason: u8 = At(2),
        stat_sn, exp_cmd_sn, max_cmd_sn,
        /// DataSN/R2TSN (for SNACK rejects).
        pub data_sn: u32 = At(36),
        /// The complete header of the rejected PDU.
        pub header: Bytes = DATA,
    }
    always { F => true, ITT => RESERVED_TAG }
}
