//! SCSI Response (RFC 7143 §11.4).

use bytes::{BufMut, Bytes, BytesMut};

use super::wire::{At, F, Field, Flag, Parts, Received, TTT, wire_pdu};
use crate::error::EncodeError;

wire_pdu! {
    /// SCSI Response (§11.4).
    pub struct ScsiResponse {
        /// o bit: Bidirectional Read Residual Overflow.
        pub bidi_read_residual_overflow: bool = Flag(0x10),
        /// u bit: Bidirectional Read Residual Underflow.
        pub bidi_read_residual_underflow: bool = Flag(0x08),
        /// O bit: Residual Overflow.
        pub residual_overflow: bool = Flag(0x04),
        /// U bit: Residual Underflow.
        pub residual_underflow: bool = Flag(0x02),
        /// Response (§11.4.3): 0x00 Command Completed at Target, 0x01 Target Failure.
        pub response: u8 = At(2),
        /// SCSI status (§11.4.2).
        pub status: u8 = At(3),
        itt,
        /// SNACK Tag (§11.4.6).
        pub snack_tag: u32 = TTT,
        stat_sn, exp_cmd_sn, max_cmd_sn,
        /// ExpDataSN (§11.4.8).
        pub exp_data_sn: u32 = At(36),
        /// Bidirectional Read Residual Count (§11.4.5).
        pub bidi_read_residual_count: u32 = At(40),
        /// Residual Count (§11.4.5).
        pub residual_count: u32 = At(44),
        /// Sense data; sent with its 2-byte SenseLength prefix (§11.4.7.2).
        pub sense: Bytes = SenseData,
    }
    always { F => true }
}

/// The data segment as SenseLength followed by the sense data (§11.4.7.2);
/// empty when there is no sense data.
struct SenseData;

impl Field<Bytes> for SenseData {
    fn put(&self, sense: &Bytes, out: &mut Parts) -> Result<(), EncodeError> {
        if sense.is_empty() {
            return Ok(());
        }
        let len =
            u16::try_from(sense.len()).map_err(|_| EncodeError::SenseTooLarge(sense.len()))?;
        let mut b = BytesMut::with_capacity(2 + sense.len());
        b.put_u16(len);
        b.extend_from_slice(sense);
        out.data = b.freeze();
        Ok(())
    }

    fn get(&self, input: &mut Received<'_>) -> Result<Bytes, &'static str> {
        let data = &input.data;
        match **data {
            [] => Ok(Bytes::new()),
            [l0, l1, ..] => {
                let end = 2 + u16::from_be_bytes([l0, l1]) as usize;
                if end > data.len() {
                    return Err("SenseLength exceeds the data segment");
                }
                Ok(data.slice(2..end))
            }
            [_] => Err("data segment too short for SenseLength"),
        }
    }
}
