//! Sense data (SPC-4 §4.5): sense keys, additional sense codes, and the
//! fixed (0x70) and descriptor (0x72) formats.

/// Sense key (SPC-4 §4.5.6, table 48).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SenseKey {
    NoSense = 0x0,
    RecoveredError = 0x1,
    NotReady = 0x2,
    MediumError = 0x3,
    HardwareError = 0x4,
    IllegalRequest = 0x5,
    UnitAttention = 0x6,
    DataProtect = 0x7,
    BlankCheck = 0x8,
    VendorSpecific = 0x9,
    CopyAborted = 0xA,
    AbortedCommand = 0xB,
    VolumeOverflow = 0xD,
    Miscompare = 0xE,
}

impl SenseKey {
    /// The sense key with this 4-bit code (SPC-4 table 48); `None` for the obsolete 0xC and
    /// the reserved 0xF.
    pub const fn from_code(code: u8) -> Option<SenseKey> {
        Some(match code & 0x0F {
            0x0 => SenseKey::NoSense,
            0x1 => SenseKey::RecoveredError,
            0x2 => SenseKey::NotReady,
            0x3 => SenseKey::MediumError,
            0x4 => SenseKey::HardwareError,
            0x5 => SenseKey::IllegalRequest,
            0x6 => SenseKey::UnitAttention,
            0x7 => SenseKey::DataProtect,
            0x8 => SenseKey::BlankCheck,
            0x9 => SenseKey::VendorSpecific,
            0xA => SenseKey::CopyAborted,
            0xB => SenseKey::AbortedCommand,
            0xD => SenseKey::VolumeOverflow,
            0xE => SenseKey::Miscompare,
            _ => return None,
        })
    }
}

/// Additional sense code and qualifier (SPC-4 §4.5.6, table 49).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asc {
    pub asc: u8,
    pub ascq: u8,
}

impl Asc {
    pub const NO_ADDITIONAL_SENSE: Asc = Asc::new(0x00, 0x00);
    pub const WRITE_ERROR: Asc = Asc::new(0x0C, 0x00);
    pub const INVALID_FIELD_IN_COMMAND_INFORMATION_UNIT: Asc = Asc::new(0x0E, 0x03);
    pub const UNRECOVERED_READ_ERROR: Asc = Asc::new(0x11, 0x00);
    pub const PARAMETER_LIST_LENGTH_ERROR: Asc = Asc::new(0x1A, 0x00);
    pub const MISCOMPARE_DURING_VERIFY: Asc = Asc::new(0x1D, 0x00);
    pub const INVALID_COMMAND_OPERATION_CODE: Asc = Asc::new(0x20, 0x00);
    pub const LBA_OUT_OF_RANGE: Asc = Asc::new(0x21, 0x00);
    pub const INVALID_FIELD_IN_CDB: Asc = Asc::new(0x24, 0x00);
    pub const LOGICAL_UNIT_NOT_SUPPORTED: Asc = Asc::new(0x25, 0x00);
    pub const INVALID_FIELD_IN_PARAMETER_LIST: Asc = Asc::new(0x26, 0x00);
    pub const WRITE_PROTECTED: Asc = Asc::new(0x27, 0x00);
    /// LOGICAL UNIT SOFTWARE WRITE PROTECTED: SWP is set (SBC-3 §4.12).
    pub const SOFTWARE_WRITE_PROTECTED: Asc = Asc::new(0x27, 0x02);
    /// POWER ON, RESET, OR BUS DEVICE RESET OCCURRED: the UNIT ATTENTION after a reset.
    pub const POWER_ON_RESET_OCCURRED: Asc = Asc::new(0x29, 0x00);
    /// The logical unit inventory changed (SPC-4 §6.33, Table F.1).
    pub const REPORTED_LUNS_DATA_HAS_CHANGED: Asc = Asc::new(0x3F, 0x0E);
    pub const SAVING_PARAMETERS_NOT_SUPPORTED: Asc = Asc::new(0x39, 0x00);
    pub const INTERNAL_TARGET_FAILURE: Asc = Asc::new(0x44, 0x00);
    /// DATA PHASE ERROR: the transport lost the command's data (e.g. Data-Out out of order).
    pub const DATA_PHASE_ERROR: Asc = Asc::new(0x4B, 0x00);

    pub const fn new(asc: u8, ascq: u8) -> Asc {
        Asc { asc, ascq }
    }
}

/// Sense-key specific field pointer (SPC-4 §4.5.2.4.2): which CDB or
/// parameter-list byte (and optionally bit) was in error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldPointer {
    /// True when the error is in the CDB (C/D bit), false for parameter data.
    pub in_cdb: bool,
    pub byte: u16,
    pub bit: Option<u8>,
}

/// Length of fixed-format sense data produced by [`Sense::to_fixed`].
pub const FIXED_SENSE_LEN: usize = 18;

/// One sense condition: key, code, and optional INFORMATION / field pointer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sense {
    pub key: SenseKey,
    pub asc: Asc,
    /// INFORMATION field (e.g. the offset of a miscompare); sets VALID.
    pub information: Option<u32>,
    pub field_pointer: Option<FieldPointer>,
}

impl Sense {
    pub const fn new(key: SenseKey, asc: Asc) -> Sense {
        Sense {
            key,
            asc,
            information: None,
            field_pointer: None,
        }
    }

    /// ILLEGAL REQUEST with the given additional sense code.
    pub const fn illegal_request(asc: Asc) -> Sense {
        Sense::new(SenseKey::IllegalRequest, asc)
    }

    /// ILLEGAL REQUEST, INVALID COMMAND OPERATION CODE.
    pub const fn invalid_opcode() -> Sense {
        Sense::illegal_request(Asc::INVALID_COMMAND_OPERATION_CODE)
    }

    /// ILLEGAL REQUEST, INVALID FIELD IN CDB, pointing at `byte` (and `bit`).
    pub const fn invalid_field_in_cdb(byte: u16, bit: Option<u8>) -> Sense {
        let mut s = Sense::illegal_request(Asc::INVALID_FIELD_IN_CDB);
        s.field_pointer = Some(FieldPointer {
            in_cdb: true,
            byte,
            bit,
        });
        s
    }

    /// ILLEGAL REQUEST, INVALID FIELD IN PARAMETER LIST, pointing at `byte`.
    pub const fn invalid_field_in_parameter_list(byte: u16) -> Sense {
        let mut s = Sense::illegal_request(Asc::INVALID_FIELD_IN_PARAMETER_LIST);
        s.field_pointer = Some(FieldPointer {
            in_cdb: false,
            byte,
            bit: None,
        });
        s
    }

    /// ILLEGAL REQUEST, LOGICAL BLOCK ADDRESS OUT OF RANGE.
    pub const fn lba_out_of_range() -> Sense {
        Sense::illegal_request(Asc::LBA_OUT_OF_RANGE)
    }

    /// Set the INFORMATION field.
    pub const fn with_information(mut self, information: u32) -> Sense {
        self.information = Some(information);
        self
    }

    /// Fixed-format sense data, current error (SPC-4 §4.5.3).
    pub fn to_fixed(&self) -> [u8; FIXED_SENSE_LEN] {
        let mut b = [0u8; FIXED_SENSE_LEN];
        b[0] = 0x70;
        if let Some(info) = self.information {
            b[0] |= 0x80;
            b[3..7].copy_from_slice(&info.to_be_bytes());
        }
        b[2] = self.key as u8;
        b[7] = (FIXED_SENSE_LEN - 8) as u8;
        b[12] = self.asc.asc;
        b[13] = self.asc.ascq;
        if let Some(fp) = self.field_pointer {
            b[15..18].copy_from_slice(&sense_key_specific(fp));
        }
        b
    }

    /// Descriptor-format sense data, current error (SPC-4 §4.5.2), with an
    /// information descriptor and a sense-key specific descriptor as needed.
    pub fn to_descriptor(&self) -> Vec<u8> {
        let mut b = vec![
            0x72,
            self.key as u8,
            self.asc.asc,
            self.asc.ascq,
            0,
            0,
            0,
            0,
        ];
        if let Some(info) = self.information {
            // Information descriptor (§4.5.2.2): type 0, length 0x0A, VALID.
            b.extend_from_slice(&[0x00, 0x0A, 0x80, 0x00]);
            b.extend_from_slice(&u64::from(info).to_be_bytes());
        }
        if let Some(fp) = self.field_pointer {
            // Sense key specific descriptor (SPC-4 §4.5.2.5, table 30): type 2, length 6,
            // two reserved bytes, the three sense-key-specific bytes, one reserved byte.
            b.extend_from_slice(&[0x02, 0x06, 0x00, 0x00]);
            b.extend_from_slice(&sense_key_specific(fp));
            b.extend_from_slice(&[0x00]);
        }
        b[7] = (b.len() - 8) as u8;
        b
    }
}

/// SKSV + field pointer bytes (SPC-4 §4.5.2.4.2, table 28).
fn sense_key_specific(fp: FieldPointer) -> [u8; 3] {
    let mut first = 0x80u8;
    if fp.in_cdb {
        first |= 0x40;
    }
    if let Some(bit) = fp.bit {
        first |= 0x08 | (bit & 0x07);
    }
    let [hi, lo] = fp.byte.to_be_bytes();
    [first, hi, lo]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_layout_lba_out_of_range() {
        let b = Sense::lba_out_of_range().to_fixed();
        assert_eq!(
            b,
            [
                0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x21, 0x00, 0, 0, 0, 0
            ]
        );
    }

    #[test]
    fn fixed_layout_field_pointer_and_information() {
        let b = Sense::invalid_field_in_cdb(1, Some(5))
            .with_information(0x0102_0304)
            .to_fixed();
        assert_eq!(b[0], 0xF0);
        assert_eq!(&b[3..7], &[1, 2, 3, 4]);
        assert_eq!(b[2], 0x05);
        assert_eq!((b[12], b[13]), (0x24, 0x00));
        assert_eq!(&b[15..18], &[0x80 | 0x40 | 0x08 | 5, 0x00, 0x01]);
    }

    #[test]
    fn descriptor_layout() {
        let d = Sense::new(SenseKey::Miscompare, Asc::MISCOMPARE_DURING_VERIFY)
            .with_information(7)
            .to_descriptor();
        assert_eq!(&d[..4], &[0x72, 0x0E, 0x1D, 0x00]);
        assert_eq!(usize::from(d[7]), d.len() - 8);
        assert_eq!(&d[8..12], &[0x00, 0x0A, 0x80, 0x00]);
        assert_eq!(&d[12..20], &7u64.to_be_bytes());
    }
}
