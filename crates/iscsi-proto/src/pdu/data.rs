//! SCSI Data-Out and Data-In (RFC 7143 §11.7).

use bytes::Bytes;

use super::wire::{At, DATA, F, Flag, STAT_SN, TTT, wire_pdu};

/// DataSN, bytes 36-39 (§11.7.5).
const DATA_SN: At = At(36);
/// Buffer Offset, bytes 40-43 (§11.7.6).
const BUFFER_OFFSET: At = At(40);

wire_pdu! {
    /// SCSI Data-Out (§11.7).
    pub struct DataOut {
        /// F bit: last PDU of the sequence.
        pub final_: bool = F,
        lun, itt,
        /// Target Transfer Tag (0xffffffff for unsolicited data).
        pub ttt: u32 = TTT,
        exp_stat_sn,
        /// DataSN.
        pub data_sn: u32 = DATA_SN,
        /// Buffer Offset.
        pub buffer_offset: u32 = BUFFER_OFFSET,
        /// Payload.
        pub data: Bytes = DATA,
    }
}

wire_pdu! {
    /// SCSI Data-In (§11.7).
    pub struct DataIn {
        final_,
        /// A bit: acknowledge requested (§11.7.2).
        pub ack: bool = Flag(0x40),
        /// O bit (valid with S).
        pub residual_overflow: bool = Flag(0x04),
        /// U bit (valid with S).
        pub residual_underflow: bool = Flag(0x02),
        /// S bit: status is present (§11.7.3).
        pub status_present: bool = Flag(0x01),
        /// SCSI status (valid with S).
        pub status: u8 = At(3),
        lun, itt, ttt,
        /// StatSN (valid with S).
        pub stat_sn: u32 = STAT_SN,
        exp_cmd_sn, max_cmd_sn,
        /// DataSN.
        pub data_sn: u32 = DATA_SN,
        /// Buffer Offset.
        pub buffer_offset: u32 = BUFFER_OFFSET,
        /// Residual Count (valid with S).
        pub residual_count: u32 = At(44),
        /// Payload.
        pub data: Bytes = DATA,
    }
}
