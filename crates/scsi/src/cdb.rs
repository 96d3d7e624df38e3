//! Sans-IO CDB parsing (SPC-4 §4.2, SBC-3 §5): bytes in, [`Command`] or
//! [`Sense`] out. Range checks against the medium happen at execution.

use crate::sense::{Asc, Sense};

/// Operation codes handled by this crate (SPC-4 annex D, SBC-3 table 12).
pub mod opcode {
    pub const TEST_UNIT_READY: u8 = 0x00;
    pub const REQUEST_SENSE: u8 = 0x03;
    pub const READ_6: u8 = 0x08;
    pub const WRITE_6: u8 = 0x0A;
    pub const INQUIRY: u8 = 0x12;
    pub const RESERVE_6: u8 = 0x16;
    pub const RELEASE_6: u8 = 0x17;
    pub const MODE_SENSE_6: u8 = 0x1A;
    pub const START_STOP_UNIT: u8 = 0x1B;
    pub const PREVENT_ALLOW_MEDIUM_REMOVAL: u8 = 0x1E;
    pub const READ_CAPACITY_10: u8 = 0x25;
    pub const READ_10: u8 = 0x28;
    pub const WRITE_10: u8 = 0x2A;
    pub const WRITE_AND_VERIFY_10: u8 = 0x2E;
    pub const VERIFY_10: u8 = 0x2F;
    pub const PRE_FETCH_10: u8 = 0x34;
    pub const SYNCHRONIZE_CACHE_10: u8 = 0x35;
    pub const WRITE_SAME_10: u8 = 0x41;
    pub const UNMAP: u8 = 0x42;
    pub const MODE_SENSE_10: u8 = 0x5A;
    pub const PERSISTENT_RESERVE_IN: u8 = 0x5E;
    pub const PERSISTENT_RESERVE_OUT: u8 = 0x5F;
    pub const READ_16: u8 = 0x88;
    pub const COMPARE_AND_WRITE: u8 = 0x89;
    pub const WRITE_16: u8 = 0x8A;
    pub const ORWRITE_16: u8 = 0x8B;
    pub const WRITE_AND_VERIFY_16: u8 = 0x8E;
    pub const VERIFY_16: u8 = 0x8F;
    pub const PRE_FETCH_16: u8 = 0x90;
    pub const SYNCHRONIZE_CACHE_16: u8 = 0x91;
    pub const WRITE_SAME_16: u8 = 0x93;
    pub const SERVICE_ACTION_IN_16: u8 = 0x9E;
    pub const REPORT_LUNS: u8 = 0xA0;
    pub const MAINTENANCE_IN: u8 = 0xA3;
    pub const READ_12: u8 = 0xA8;
    pub const WRITE_12: u8 = 0xAA;
    pub const WRITE_AND_VERIFY_12: u8 = 0xAE;
    pub const VERIFY_12: u8 = 0xAF;
    pub const MODE_SELECT_6: u8 = 0x15;
    pub const MODE_SELECT_10: u8 = 0x55;
    pub const READ_DEFECT_DATA_10: u8 = 0x37;
    pub const READ_DEFECT_DATA_12: u8 = 0xB7;
    pub const WRITE_ATOMIC_16: u8 = 0x9C;
    pub const EXTENDED_COPY: u8 = 0x83;
    pub const RECEIVE_COPY_RESULTS: u8 = 0x84;
    pub const SANITIZE: u8 = 0x48;
}

/// Service actions of SERVICE ACTION IN (16) (SBC-3 §5.15, §5.7).
pub mod service_action {
    pub const READ_CAPACITY_16: u8 = 0x10;
    pub const GET_LBA_STATUS: u8 = 0x12;
    /// MAINTENANCE IN: REPORT SUPPORTED OPERATION CODES (SPC-4 §6.35).
    pub const REPORT_SUPPORTED_OPERATION_CODES: u8 = 0x0C;
}

/// Common fields of READ/WRITE (6/10/12/16) (SBC-3 §5.8–5.11, §5.32–5.35).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rw {
    pub lba: u64,
    /// Number of logical blocks; READ(6)/WRITE(6) with 0 already became 256.
    pub blocks: u32,
    /// Force unit access: the data must be on the medium before GOOD.
    pub fua: bool,
}

/// VERIFY (10/12/16) (SBC-3 §5.29).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verify {
    pub lba: u64,
    pub blocks: u32,
    /// 0: medium check only; 1: compare `blocks` blocks of data-out;
    /// 3: compare one data-out block against every block.
    pub bytchk: u8,
}

/// WRITE AND VERIFY (10/12/16) (SBC-3 §5.37–5.39): a write, then a check
/// of the written blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteVerify {
    pub lba: u64,
    pub blocks: u32,
    /// 0: verify the medium only; 1: compare the medium with the data-out.
    pub bytchk: u8,
}

/// COMPARE AND WRITE (SBC-3 §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompareAndWrite {
    pub lba: u64,
    /// NUMBER OF LOGICAL BLOCKS; the data-out is twice this many blocks
    /// (verify data, then write data).
    pub blocks: u8,
    pub fua: bool,
}

/// WRITE SAME (10/16) (SBC-3 §5.40, §5.41).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteSame {
    pub lba: u64,
    pub blocks: u32,
    pub unmap: bool,
    /// No data-out buffer: the block is zeros.
    pub ndob: bool,
}

/// MODE SENSE (6/10) (SPC-4 §6.11, §6.12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModeSense {
    /// MODE SENSE(10) rather than (6).
    pub ten: bool,
    /// Disable block descriptors.
    pub dbd: bool,
    /// Long LBA block descriptor accepted (10 only).
    pub llbaa: bool,
    /// Page control: 0 current, 1 changeable, 2 default, 3 saved.
    pub pc: u8,
    pub page: u8,
    pub subpage: u8,
    pub alloc_len: u16,
}

/// A parsed command descriptor block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    TestUnitReady,
    RequestSense {
        desc: bool,
        alloc_len: u8,
    },
    Inquiry {
        evpd: bool,
        page: u8,
        alloc_len: u16,
    },
    ModeSense(ModeSense),
    ReadCapacity10,
    ReadCapacity16 {
        alloc_len: u32,
    },
    GetLbaStatus {
        lba: u64,
        alloc_len: u32,
    },
    Read(Rw),
    Write(Rw),
    Verify(Verify),
    WriteVerify(WriteVerify),
    CompareAndWrite(CompareAndWrite),
    /// ORWRITE (16) (SBC-3 §5.9): medium := medium OR data-out.
    OrWrite(Rw),
    WriteSame(WriteSame),
    Unmap {
        param_len: u16,
    },
    SynchronizeCache {
        lba: u64,
        blocks: u32,
    },
    PreFetch {
        lba: u64,
        blocks: u32,
    },
    StartStopUnit,
    PreventAllowMediumRemoval {
        prevent: u8,
    },
    Reserve6,
    Release6,
    /// PERSISTENT RESERVE IN (SPC-4 §6.13).
    PersistentReserveIn {
        service_action: u8,
        alloc_len: u16,
    },
    /// PERSISTENT RESERVE OUT (SPC-4 §6.14).
    PersistentReserveOut {
        service_action: u8,
        scope: u8,
        pr_type: u8,
        param_len: u32,
    },
    ReportLuns {
        select_report: u8,
        alloc_len: u32,
    },
    ReportSupportedOperationCodes {
        rctd: bool,
        options: u8,
        opcode: u8,
        service_action: u16,
        alloc_len: u32,
    },
    /// MODE SELECT (6/10) (SPC-4 §6.9, §6.10), see [`crate::mode_select`].
    ModeSelect(crate::mode_select::ModeSelect),
    /// READ DEFECT DATA (10/12) (SBC-3 §5.17, §5.18), see [`crate::defect`].
    ReadDefectData(crate::defect::ReadDefectData),
    /// WRITE ATOMIC (16) (SBC-4 §5.48), see [`crate::atomic`].
    WriteAtomic(Rw),
    /// EXTENDED COPY (LID1) (SPC-4 §6.4), see [`crate::xcopy`].
    ExtendedCopy {
        param_len: u32,
    },
    /// SANITIZE (SBC-4 §5.30), see [`crate::sanitize`].
    Sanitize(crate::sanitize::Sanitize),
    /// RECEIVE COPY RESULTS (SPC-4 §6.23), see [`crate::xcopy`].
    ReceiveCopyResults {
        service_action: u8,
        list_id: u8,
        alloc_len: u32,
    },
}

/// Length of the CDB for an operation code, from its group (SPC-4 §4.2.5.1).
pub fn cdb_len(opcode: u8) -> Option<usize> {
    match opcode >> 5 {
        0 => Some(6),
        1 | 2 => Some(10),
        4 => Some(16),
        5 => Some(12),
        _ => None,
    }
}

/// Byte offset of the TRANSFER LENGTH (or NUMBER OF LOGICAL BLOCKS) field
/// for a READ/WRITE/VERIFY/WRITE SAME opcode, for sense field pointers.
pub fn transfer_length_byte(opcode: u8) -> u16 {
    match cdb_len(opcode) {
        Some(6) => 4,
        Some(12) => 6,
        Some(16) => 10,
        _ => 7,
    }
}

/// Big-endian fields at byte `at` of a CDB or parameter list (the caller checked the
/// length).
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
pub(crate) fn be64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

/// LOGICAL BLOCK ADDRESS and TRANSFER LENGTH of a 10, 12 or 16 byte
/// block command (SBC-3 §5: bytes 2.. and 7/6/10..).
fn lba_and_length(c: &[u8]) -> (u64, u32) {
    match c.len() {
        16 => (be64(c, 2), be32(c, 10)),
        12 => (u64::from(be32(c, 2)), be32(c, 6)),
        _ => (u64::from(be32(c, 2)), u32::from(be16(c, 7))),
    }
}

/// Reject a nonzero RDPROTECT/WRPROTECT/VRPROTECT field (byte 1 bits 7..5):
/// this device has no protection information (SBC-3 §4.22).
fn no_protect(cdb: &[u8]) -> Result<(), Sense> {
    if cdb[1] & 0xE0 != 0 {
        return Err(Sense::invalid_field_in_cdb(1, Some(7)));
    }
    Ok(())
}

fn rw(cdb: &[u8], lba: u64, blocks: u32) -> Result<Rw, Sense> {
    no_protect(cdb)?;
    Ok(Rw {
        lba,
        blocks,
        fua: cdb[1] & 0x08 != 0,
    })
}

fn verify(cdb: &[u8], lba: u64, blocks: u32) -> Result<Verify, Sense> {
    no_protect(cdb)?;
    let bytchk = (cdb[1] >> 1) & 0x03;
    if bytchk == 2 {
        return Err(Sense::invalid_field_in_cdb(1, Some(2)));
    }
    Ok(Verify {
        lba,
        blocks,
        bytchk,
    })
}

fn write_verify(cdb: &[u8], lba: u64, blocks: u32) -> Result<WriteVerify, Sense> {
    no_protect(cdb)?;
    let bytchk = (cdb[1] >> 1) & 0x03;
    if bytchk > 1 {
        return Err(Sense::invalid_field_in_cdb(1, Some(2)));
    }
    Ok(WriteVerify {
        lba,
        blocks,
        bytchk,
    })
}

fn write_same(cdb: &[u8], lba: u64, blocks: u32, sixteen: bool) -> Result<WriteSame, Sense> {
    no_protect(cdb)?;
    if cdb[1] & 0x10 != 0 {
        // ANCHOR: anchored LBAs are not supported (ANC_SUP = 0).
        return Err(Sense::invalid_field_in_cdb(1, Some(4)));
    }
    let ndob = sixteen && cdb[1] & 0x01 != 0;
    let unmap = cdb[1] & 0x08 != 0;
    if blocks == 0 {
        // WSNZ = 1 in the Block Limits VPD page: zero is not allowed.
        return Err(Sense::invalid_field_in_cdb(
            if sixteen { 10 } else { 7 },
            None,
        ));
    }
    Ok(WriteSame {
        lba,
        blocks,
        unmap,
        ndob,
    })
}

fn mode_sense(cdb: &[u8], ten: bool) -> ModeSense {
    ModeSense {
        ten,
        dbd: cdb[1] & 0x08 != 0,
        llbaa: ten && cdb[1] & 0x10 != 0,
        pc: cdb[2] >> 6,
        page: cdb[2] & 0x3F,
        subpage: cdb[3],
        alloc_len: if ten { be16(cdb, 7) } else { u16::from(cdb[4]) },
    }
}

/// Parse a CDB. `cdb` may be longer than the command's length (iSCSI
/// carries 16 bytes); a shorter one is an error.
pub fn parse(cdb: &[u8]) -> Result<Command, Sense> {
    use opcode::*;
    let Some(&op) = cdb.first() else {
        return Err(Sense::invalid_opcode());
    };
    let len = cdb_len(op).ok_or_else(Sense::invalid_opcode)?;
    if cdb.len() < len {
        return Err(Sense::invalid_opcode());
    }
    let c = &cdb[..len];
    let cmd = match op {
        TEST_UNIT_READY => Command::TestUnitReady,
        REQUEST_SENSE => Command::RequestSense {
            desc: c[1] & 0x01 != 0,
            alloc_len: c[4],
        },
        INQUIRY => {
            let evpd = c[1] & 0x01 != 0;
            if !evpd && c[2] != 0 {
                return Err(Sense::invalid_field_in_cdb(2, None));
            }
            Command::Inquiry {
                evpd,
                page: c[2],
                alloc_len: be16(c, 3),
            }
        }
        MODE_SENSE_6 => Command::ModeSense(mode_sense(c, false)),
        MODE_SENSE_10 => Command::ModeSense(mode_sense(c, true)),
        READ_CAPACITY_10 => {
            // PMI = 0 requires LOGICAL BLOCK ADDRESS = 0 (SBC-3 §5.16).
            if c[8] & 0x01 == 0 && be32(c, 2) != 0 {
                return Err(Sense::invalid_field_in_cdb(2, None));
            }
            Command::ReadCapacity10
        }
        SERVICE_ACTION_IN_16 => match c[1] & 0x1F {
            service_action::READ_CAPACITY_16 => Command::ReadCapacity16 {
                alloc_len: be32(c, 10),
            },
            service_action::GET_LBA_STATUS => Command::GetLbaStatus {
                lba: be64(c, 2),
                alloc_len: be32(c, 10),
            },
            _ => return Err(Sense::invalid_field_in_cdb(1, Some(4))),
        },
        READ_6 | WRITE_6 => {
            let lba = u64::from(u32::from_be_bytes([0, c[1] & 0x1F, c[2], c[3]]));
            // SBC-3 §5.8: TRANSFER LENGTH 0 means 256 blocks.
            let blocks = if c[4] == 0 { 256 } else { u32::from(c[4]) };
            let rw = Rw {
                lba,
                blocks,
                fua: false,
            };
            if op == READ_6 {
                Command::Read(rw)
            } else {
                Command::Write(rw)
            }
        }
        READ_10 | READ_12 | READ_16 => {
            let (lba, n) = lba_and_length(c);
            Command::Read(rw(c, lba, n)?)
        }
        WRITE_10 | WRITE_12 | WRITE_16 => {
            let (lba, n) = lba_and_length(c);
            Command::Write(rw(c, lba, n)?)
        }
        VERIFY_10 | VERIFY_12 | VERIFY_16 => {
            let (lba, n) = lba_and_length(c);
            Command::Verify(verify(c, lba, n)?)
        }
        WRITE_AND_VERIFY_10 | WRITE_AND_VERIFY_12 | WRITE_AND_VERIFY_16 => {
            let (lba, n) = lba_and_length(c);
            Command::WriteVerify(write_verify(c, lba, n)?)
        }
        COMPARE_AND_WRITE => {
            no_protect(c)?;
            Command::CompareAndWrite(CompareAndWrite {
                lba: be64(c, 2),
                blocks: c[13],
                fua: c[1] & 0x08 != 0,
            })
        }
        ORWRITE_16 => {
            let (lba, n) = lba_and_length(c);
            Command::OrWrite(rw(c, lba, n)?)
        }
        WRITE_SAME_10 | WRITE_SAME_16 => {
            let (lba, n) = lba_and_length(c);
            Command::WriteSame(write_same(c, lba, n, op == WRITE_SAME_16)?)
        }
        UNMAP => {
            if c[1] & 0x01 != 0 {
                return Err(Sense::invalid_field_in_cdb(1, Some(0)));
            }
            Command::Unmap {
                param_len: be16(c, 7),
            }
        }
        SYNCHRONIZE_CACHE_10 | SYNCHRONIZE_CACHE_16 => {
            let (lba, blocks) = lba_and_length(c);
            Command::SynchronizeCache { lba, blocks }
        }
        PRE_FETCH_10 | PRE_FETCH_16 => {
            let (lba, blocks) = lba_and_length(c);
            Command::PreFetch { lba, blocks }
        }
        START_STOP_UNIT => Command::StartStopUnit,
        PREVENT_ALLOW_MEDIUM_REMOVAL => Command::PreventAllowMediumRemoval {
            prevent: c[4] & 0x03,
        },
        RESERVE_6 => Command::Reserve6,
        RELEASE_6 => Command::Release6,
        PERSISTENT_RESERVE_IN => Command::PersistentReserveIn {
            service_action: c[1] & 0x1F,
            alloc_len: be16(c, 7),
        },
        PERSISTENT_RESERVE_OUT => Command::PersistentReserveOut {
            service_action: c[1] & 0x1F,
            scope: c[2] >> 4,
            pr_type: c[2] & 0x0F,
            param_len: be32(c, 5),
        },
        REPORT_LUNS => Command::ReportLuns {
            select_report: c[2],
            alloc_len: be32(c, 6),
        },
        MAINTENANCE_IN if c[1] & 0x1F == service_action::REPORT_SUPPORTED_OPERATION_CODES => {
            Command::ReportSupportedOperationCodes {
                rctd: c[2] & 0x80 != 0,
                options: c[2] & 0x07,
                opcode: c[3],
                service_action: be16(c, 4),
                alloc_len: be32(c, 6),
            }
        }
        MAINTENANCE_IN => return Err(Sense::invalid_field_in_cdb(1, Some(4))),
        MODE_SELECT_6 | MODE_SELECT_10 => Command::ModeSelect(crate::mode_select::ModeSelect {
            ten: op == MODE_SELECT_10,
            pf: c[1] & 0x10 != 0,
            sp: c[1] & 0x01 != 0,
            param_len: if op == MODE_SELECT_10 {
                be16(c, 7)
            } else {
                u16::from(c[4])
            },
        }),
        READ_DEFECT_DATA_10 | READ_DEFECT_DATA_12 => {
            Command::ReadDefectData(crate::defect::parse_cdb(c)?)
        }
        WRITE_ATOMIC_16 => Command::WriteAtomic(crate::atomic::parse_cdb(c)?),
        EXTENDED_COPY if c[1] & 0x1F == crate::xcopy::SA_EXTENDED_COPY_LID1 => {
            Command::ExtendedCopy {
                param_len: be32(c, 10),
            }
        }
        EXTENDED_COPY => return Err(Sense::invalid_field_in_cdb(1, Some(4))),
        SANITIZE => Command::Sanitize(crate::sanitize::parse_cdb(c)?),
        RECEIVE_COPY_RESULTS => Command::ReceiveCopyResults {
            service_action: c[1] & 0x1F,
            list_id: c[2],
            alloc_len: be32(c, 10),
        },
        _ => return Err(Sense::illegal_request(Asc::INVALID_COMMAND_OPERATION_CODE)),
    };
    // CONTROL byte NACA bit (SAM-5 §5.2): NormACA is not supported.
    if c[len - 1] & 0x04 != 0 {
        return Err(Sense::invalid_field_in_cdb((len - 1) as u16, Some(2)));
    }
    Ok(cmd)
}

/// Bytes of data-out a command transfers (its SCSI transfer length, for
/// comparison with the iSCSI Expected Data Transfer Length). `block_size`
/// converts block counts.
pub fn data_out_length(cdb: &[u8], block_size: u32) -> Result<u32, Sense> {
    data_out_length_of(&parse(cdb)?, block_size)
}

/// [`data_out_length`] of a command already parsed: a transport that needs the length and
/// then executes the command parses its CDB once.
pub fn data_out_length_of(cmd: &Command, block_size: u32) -> Result<u32, Sense> {
    let bytes = |blocks: u32| u64::from(blocks) * u64::from(block_size);
    let n: u64 = match cmd {
        Command::Write(rw) | Command::OrWrite(rw) | Command::WriteAtomic(rw) => bytes(rw.blocks),
        Command::ModeSelect(ms) => u64::from(ms.param_len),
        Command::ExtendedCopy { param_len } => u64::from(*param_len),
        Command::WriteVerify(wv) => bytes(wv.blocks),
        Command::CompareAndWrite(caw) => 2 * bytes(u32::from(caw.blocks)),
        Command::PersistentReserveOut { param_len, .. } => u64::from(*param_len),
        Command::Verify(v) => match v.bytchk {
            0 => 0,
            3 => u64::from(block_size),
            _ => bytes(v.blocks),
        },
        Command::WriteSame(ws) if ws.ndob => 0,
        Command::WriteSame(_) => u64::from(block_size),
        Command::Unmap { param_len } => u64::from(*param_len),
        _ => 0,
    };
    // A transfer that does not fit in 32 bits cannot match any EDTL.
    u32::try_from(n).map_err(|_| Sense::invalid_field_in_cdb(0, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read6_zero_is_256() {
        let c = parse(&[0x08, 0x1F, 0xFF, 0xFF, 0, 0]).unwrap();
        assert_eq!(
            c,
            Command::Read(Rw {
                lba: 0x1F_FFFF,
                blocks: 256,
                fua: false
            })
        );
    }

    #[test]
    fn read16_fields() {
        let mut cdb = [0u8; 16];
        cdb[0] = 0x88;
        cdb[1] = 0x18;
        cdb[2..10].copy_from_slice(&0x0102_0304_0506_0708u64.to_be_bytes());
        cdb[10..14].copy_from_slice(&9u32.to_be_bytes());
        assert_eq!(
            parse(&cdb).unwrap(),
            Command::Read(Rw {
                lba: 0x0102_0304_0506_0708,
                blocks: 9,
                fua: true
            })
        );
    }

    #[test]
    fn protect_bits_rejected() {
        for p in 1..8u8 {
            let e = parse(&[0x2A, p << 5, 0, 0, 0, 0, 0, 0, 1, 0]).unwrap_err();
            assert_eq!(e.asc, Asc::INVALID_FIELD_IN_CDB);
        }
    }

    #[test]
    fn short_and_unknown() {
        assert_eq!(
            parse(&[]).unwrap_err().asc,
            Asc::INVALID_COMMAND_OPERATION_CODE
        );
        assert_eq!(
            parse(&[0x28, 0]).unwrap_err().asc,
            Asc::INVALID_COMMAND_OPERATION_CODE
        );
        assert_eq!(
            parse(&[0xC0; 16]).unwrap_err().asc,
            Asc::INVALID_COMMAND_OPERATION_CODE
        );
        assert_eq!(
            parse(&[0x04; 6]).unwrap_err().asc,
            Asc::INVALID_COMMAND_OPERATION_CODE
        );
    }

    #[test]
    fn naca_rejected() {
        let e = parse(&[0x00, 0, 0, 0, 0, 0x04]).unwrap_err();
        assert_eq!(e.asc, Asc::INVALID_FIELD_IN_CDB);
        assert_eq!(e.field_pointer.map(|f| (f.byte, f.bit)), Some((5, Some(2))));
        assert!(parse(&[0x00, 0, 0, 0, 0, 0x03]).is_ok());
    }

    #[test]
    fn inquiry_page_without_evpd() {
        let e = parse(&[0x12, 0, 0x80, 0, 255, 0]).unwrap_err();
        assert_eq!(e.asc, Asc::INVALID_FIELD_IN_CDB);
    }

    #[test]
    fn data_out_lengths() {
        assert_eq!(
            data_out_length(&[0x2A, 0, 0, 0, 0, 0, 0, 0, 3, 0], 512),
            Ok(1536)
        );
        assert_eq!(data_out_length(&[0x0A, 0, 0, 0, 0, 0], 512), Ok(256 * 512));
        assert_eq!(
            data_out_length(&[0x28, 0, 0, 0, 0, 0, 0, 0, 3, 0], 512),
            Ok(0)
        );
        assert_eq!(
            data_out_length(&[0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0], 512),
            Ok(24)
        );
        let mut w16 = [0u8; 16];
        w16[0] = 0x8A;
        w16[10..14].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(data_out_length(&w16, 512).is_err());
    }
}
