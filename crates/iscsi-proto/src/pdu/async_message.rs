//! Asynchronous Message (RFC 7143 §11.9).

use bytes::Bytes;

use super::wire::{At, DATA, F, ITT, LUN, wire_pdu};
use crate::bhs::RESERVED_TAG;

/// AsyncEvent codes (§11.9.1).
pub mod async_event {
    /// SCSI asynchronous event, sense data in the data segment.
    pub const SCSI_EVENT: u8 = 0;
    /// Target requests logout; Parameter3 = Time2Wait-like logout window in seconds.
    pub const LOGOUT_REQUESTED: u8 = 1;
    /// Target will drop the connection (Parameter1 CID, Parameter2 Time2Wait, Parameter3 Time2Retain).
    pub const CONNECTION_DROP: u8 = 2;
    /// Target will drop all connections of the session.
    pub const SESSION_DROP: u8 = 3;
    /// Target requests parameter renegotiation.
    pub const NEGOTIATION_REQUEST: u8 = 4;
    /// Task termination.
    pub const TASK_TERMINATION: u8 = 5;
    /// Vendor-specific.
    pub const VENDOR_SPECIFIC: u8 = 255;
}

wire_pdu! {
    /// Asynchronous Message (§11.9).
    pub struct AsyncMessage {
        /// LUN (for SCSI events).
        pub lun: u64 = LUN,
        stat_sn, exp_cmd_sn, max_cmd_sn,
        /// AsyncEvent (§11.9.1), see [`async_event`].
        pub async_event: u8 = At(36),
        /// AsyncVCode.
        pub async_vcode: u8 = At(37),
        /// Parameter1.
        pub parameter1: u16 = At(38),
        /// Parameter2.
        pub parameter2: u16 = At(40),
        /// Parameter3 (for event 1: seconds the initiator has to log out).
        pub parameter3: u16 = At(42),
        /// Sense data / iSCSI event data.
        pub data: Bytes = DATA,
    }
    always { F => true, ITT => RESERVED_TAG }
}
