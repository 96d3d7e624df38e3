//! A command as the transport hands it over, and its outcome
//! (SAM-5 §5.1 execute-command procedure call).

use crate::sense::Sense;

/// One SCSI command received by the target.
#[derive(Debug, Clone, Copy)]
pub struct ScsiTask<'a> {
    /// The CDB; may be padded (iSCSI carries 16 bytes or more).
    pub cdb: &'a [u8],
    /// LUN field from the transport (SAM-5 §4.7), 8 bytes big-endian.
    pub lun: u64,
    /// iSCSI Expected Data Transfer Length (RFC 7143 §11.3.4).
    pub expected_data_transfer_length: u32,
    /// Target portal group tag the command arrived through; names the
    /// SCSI target port in VPD page 0x83 (RFC 7143 §4.4.1).
    pub tpgt: u16,
    /// Identity of the I_T nexus (initiator port to target port) the
    /// command came through (SAM-5 §4.6.4), e.g. the transport's session
    /// id: reservations belong to a nexus. Distinct for every live nexus.
    pub nexus: u64,
}

/// SCSI status (SAM-5 §5.3.1, table 28).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ScsiStatus {
    Good = 0x00,
    CheckCondition = 0x02,
    ConditionMet = 0x04,
    Busy = 0x08,
    ReservationConflict = 0x18,
    TaskSetFull = 0x28,
    AcaActive = 0x30,
    TaskAborted = 0x40,
}

impl ScsiStatus {
    /// The status with this code; `None` for reserved and obsolete codes.
    pub const fn from_code(code: u8) -> Option<ScsiStatus> {
        Some(match code {
            0x00 => ScsiStatus::Good,
            0x02 => ScsiStatus::CheckCondition,
            0x04 => ScsiStatus::ConditionMet,
            0x08 => ScsiStatus::Busy,
            0x18 => ScsiStatus::ReservationConflict,
            0x28 => ScsiStatus::TaskSetFull,
            0x30 => ScsiStatus::AcaActive,
            0x40 => ScsiStatus::TaskAborted,
            _ => return None,
        })
    }
}

/// What the device server did with a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScsiOutcome {
    pub status: ScsiStatus,
    /// Present iff status is CHECK CONDITION.
    pub sense: Option<Sense>,
    /// Bytes appended to the data-in buffer (never more than the EDTL).
    pub data_in_len: u32,
    /// Bytes of data-in the command itself asked for (after allocation
    /// length truncation), before the EDTL cap: residual input.
    pub data_in_wanted: u32,
}

impl ScsiOutcome {
    pub fn good(data_in_len: u32, data_in_wanted: u32) -> ScsiOutcome {
        ScsiOutcome {
            status: ScsiStatus::Good,
            sense: None,
            data_in_len,
            data_in_wanted,
        }
    }

    /// RESERVATION CONFLICT (SPC-4 §5.9.1), no sense data.
    pub fn reservation_conflict() -> ScsiOutcome {
        ScsiOutcome {
            status: ScsiStatus::ReservationConflict,
            sense: None,
            data_in_len: 0,
            data_in_wanted: 0,
        }
    }

    pub fn check_condition(sense: Sense) -> ScsiOutcome {
        ScsiOutcome {
            status: ScsiStatus::CheckCondition,
            sense: Some(sense),
            data_in_len: 0,
            data_in_wanted: 0,
        }
    }
}

/// Residual of a transfer (RFC 7143 §11.4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Residual {
    None,
    /// The command wanted more than the EDTL; the count not transferred.
    Overflow(u32),
    /// The command wanted less than the EDTL; the count short.
    Underflow(u32),
}

impl Residual {
    /// Compare the Expected Data Transfer Length with the SCSI transfer
    /// length the command really had (`wanted`).
    pub fn compute(expected_data_transfer_length: u32, wanted: u32) -> Residual {
        use std::cmp::Ordering;
        match wanted.cmp(&expected_data_transfer_length) {
            Ordering::Equal => Residual::None,
            Ordering::Greater => Residual::Overflow(wanted - expected_data_transfer_length),
            Ordering::Less => Residual::Underflow(expected_data_transfer_length - wanted),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn residuals() {
        assert_eq!(Residual::compute(512, 512), Residual::None);
        assert_eq!(Residual::compute(200, 512), Residual::Overflow(312));
        assert_eq!(Residual::compute(10000, 512), Residual::Underflow(9488));
        assert_eq!(Residual::compute(0, 512), Residual::Overflow(512));
    }
}
