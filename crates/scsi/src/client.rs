//! The application client's side (SAM-5 §4.3): the CDBs an initiator sends,
//! and the parsing of what a device server returns (sense data, READ CAPACITY,
//! standard INQUIRY and REPORT LUNS parameter data). The device server's side
//! of the same layouts is in [`cdb`](crate::cdb), [`sense`](crate::sense),
//! [`inquiry`](crate::inquiry) and [`lun`](crate::lun).

use crate::cdb::{opcode, service_action};
use crate::lun::decode_lun;
use crate::sense::{Asc, FieldPointer, Sense, SenseKey};

/// Length of the CDBs built here (iSCSI carries 16 bytes, zero padded).
pub const CDB_LEN: usize = 16;

/// A CDB padded to [`CDB_LEN`] bytes.
pub type Cdb = [u8; CDB_LEN];

/// Length of READ CAPACITY (16) parameter data (SBC-3 §5.16.2).
pub const READ_CAPACITY_16_LEN: u32 = 32;

/// TEST UNIT READY (SPC-4 §6.47).
pub fn test_unit_ready() -> Cdb {
    let mut c = [0u8; CDB_LEN];
    c[0] = opcode::TEST_UNIT_READY;
    c
}

/// Standard INQUIRY (EVPD 0) with ALLOCATION LENGTH `alloc` (SPC-4 §6.6).
pub fn inquiry(alloc: u16) -> Cdb {
    let mut c = [0u8; CDB_LEN];
    c[0] = opcode::INQUIRY;
    c[3..5].copy_from_slice(&alloc.to_be_bytes());
    c
}

/// READ CAPACITY (16) with ALLOCATION LENGTH [`READ_CAPACITY_16_LEN`] (SBC-3 §5.16).
pub fn read_capacity16() -> Cdb {
    let mut c = [0u8; CDB_LEN];
    c[0] = opcode::SERVICE_ACTION_IN_16;
    c[1] = service_action::READ_CAPACITY_16;
    c[10..14].copy_from_slice(&READ_CAPACITY_16_LEN.to_be_bytes());
    c
}

/// REPORT LUNS, SELECT REPORT 0, with ALLOCATION LENGTH `alloc` (SPC-4 §6.33).
pub fn report_luns(alloc: u32) -> Cdb {
    let mut c = [0u8; CDB_LEN];
    c[0] = opcode::REPORT_LUNS;
    c[6..10].copy_from_slice(&alloc.to_be_bytes());
    c
}

/// READ (16) or WRITE (16): opcode, LBA in bytes 2..10, TRANSFER LENGTH in 10..14.
fn rw16(op: u8, lba: u64, blocks: u32) -> Cdb {
    let mut c = [0u8; CDB_LEN];
    c[0] = op;
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[10..14].copy_from_slice(&blocks.to_be_bytes());
    c
}

/// READ (16) of `blocks` logical blocks at `lba` (SBC-3 §5.11).
pub fn read16(lba: u64, blocks: u32) -> Cdb {
    rw16(opcode::READ_16, lba, blocks)
}

/// WRITE (16) of `blocks` logical blocks at `lba` (SBC-3 §5.35).
pub fn write16(lba: u64, blocks: u32) -> Cdb {
    rw16(opcode::WRITE_16, lba, blocks)
}

/// PERSISTENT RESERVE IN with `service_action` and ALLOCATION LENGTH `alloc` (SPC-4 §6.13).
pub fn persistent_reserve_in(service_action: u8, alloc: u16) -> Cdb {
    let mut c = [0u8; CDB_LEN];
    c[0] = opcode::PERSISTENT_RESERVE_IN;
    c[1] = service_action & 0x1F;
    c[7..9].copy_from_slice(&alloc.to_be_bytes());
    c
}

/// PERSISTENT RESERVE OUT with `service_action`, LU scope, TYPE `pr_type` and a
/// parameter list of `param_len` bytes (SPC-4 §6.14).
pub fn persistent_reserve_out(service_action: u8, pr_type: u8, param_len: u32) -> Cdb {
    let mut c = [0u8; CDB_LEN];
    c[0] = opcode::PERSISTENT_RESERVE_OUT;
    c[1] = service_action & 0x1F;
    c[2] = pr_type & 0x0F;
    c[5..9].copy_from_slice(&param_len.to_be_bytes());
    c
}

/// The basic 24-byte PERSISTENT RESERVE OUT parameter list (SPC-4 §6.14.3):
/// RESERVATION KEY, SERVICE ACTION RESERVATION KEY, ALL_TG_PT and APTPL.
pub fn prout_parameters(key: u64, sa_key: u64, all_tg_pt: bool, aptpl: bool) -> [u8; 24] {
    let mut p = [0u8; 24];
    p[0..8].copy_from_slice(&key.to_be_bytes());
    p[8..16].copy_from_slice(&sa_key.to_be_bytes());
    p[20] = u8::from(all_tg_pt) << 2 | u8::from(aptpl);
    p
}

/// READ KEYS parameter data: PRGENERATION and the registered keys.
pub fn parse_read_keys(d: &[u8]) -> Option<(u32, Vec<u64>)> {
    let generation = u32::from_be_bytes(d.get(0..4)?.try_into().ok()?);
    let len = u32::from_be_bytes(d.get(4..8)?.try_into().ok()?) as usize;
    let keys = d.get(8..)?;
    let keys = keys.get(..len.min(keys.len()))?;
    Some((
        generation,
        keys.chunks_exact(8)
            .map(|k| u64::from_be_bytes(k.try_into().unwrap_or([0; 8])))
            .collect(),
    ))
}

/// READ RESERVATION parameter data: PRGENERATION and, when a reservation
/// exists, its key and TYPE.
pub fn parse_read_reservation(d: &[u8]) -> Option<(u32, Option<(u64, u8)>)> {
    let generation = u32::from_be_bytes(d.get(0..4)?.try_into().ok()?);
    let len = u32::from_be_bytes(d.get(4..8)?.try_into().ok()?);
    if len < 16 {
        return Some((generation, None));
    }
    let key = u64::from_be_bytes(d.get(8..16)?.try_into().ok()?);
    Some((generation, Some((key, d.get(21)? & 0x0F))))
}

/// Sense-key specific bytes with SKSV set, as a field pointer (SPC-4 §4.5.2.4.2).
fn field_pointer(key: SenseKey, b: &[u8]) -> Option<FieldPointer> {
    let [first, hi, lo]: [u8; 3] = b.get(..3)?.try_into().ok()?;
    if key != SenseKey::IllegalRequest || first & 0x80 == 0 {
        return None;
    }
    Some(FieldPointer {
        in_cdb: first & 0x40 != 0,
        byte: u16::from_be_bytes([hi, lo]),
        bit: (first & 0x08 != 0).then_some(first & 0x07),
    })
}

impl Sense {
    /// Parse sense data (SPC-4 §4.5): response codes 0x70/0x71 (fixed) and
    /// 0x72/0x73 (descriptor), with the INFORMATION field and the field pointer
    /// when present. `None` for other response codes, data too short to hold a
    /// sense key, or a sense key [`SenseKey::from_code`] does not name.
    /// The inverse of [`Sense::to_fixed`] and [`Sense::to_descriptor`].
    pub fn parse(d: &[u8]) -> Option<Sense> {
        let byte = |i: usize| d.get(i).copied().unwrap_or(0);
        match d.first()? & 0x7F {
            0x70 | 0x71 => {
                let key = SenseKey::from_code(*d.get(2)?)?;
                let mut s = Sense::new(key, Asc::new(byte(12), byte(13)));
                if d[0] & 0x80 != 0 {
                    s.information = d
                        .get(3..7)
                        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                }
                s.field_pointer = d.get(15..).and_then(|b| field_pointer(key, b));
                Some(s)
            }
            0x72 | 0x73 => {
                let key = SenseKey::from_code(*d.get(1)?)?;
                let mut s = Sense::new(key, Asc::new(byte(2), byte(3)));
                let end = (8 + usize::from(byte(7))).min(d.len());
                let mut rest = d.get(8..end).unwrap_or(&[]);
                while let [kind, len, body @ ..] = rest {
                    let body = body.get(..usize::from(*len)).unwrap_or(body);
                    match kind {
                        // Information descriptor (§4.5.2.2): VALID, reserved, 8-byte INFORMATION.
                        0x00 if body.first().is_some_and(|v| v & 0x80 != 0) => {
                            let info = body.get(2..10).and_then(|b| b.try_into().ok());
                            s.information = info
                                .map(u64::from_be_bytes)
                                .and_then(|v| u32::try_from(v).ok());
                        }
                        // Sense key specific descriptor (§4.5.2.5): reserved, reserved, 3 bytes.
                        0x02 => s.field_pointer = body.get(2..).and_then(|b| field_pointer(key, b)),
                        _ => {}
                    }
                    rest = rest.get(2 + body.len()..).unwrap_or(&[]);
                }
                Some(s)
            }
            _ => None,
        }
    }

    /// UNIT ATTENTION: the command was not executed and may simply be issued again.
    pub fn is_unit_attention(&self) -> bool {
        self.key == SenseKey::UnitAttention
    }
}

/// READ CAPACITY (16) parameter data (SBC-3 §5.16.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// Number of logical blocks (RETURNED LOGICAL BLOCK ADDRESS + 1).
    pub blocks: u64,
    /// LOGICAL BLOCK LENGTH IN BYTES.
    pub block_size: u32,
}

impl Capacity {
    /// Parse READ CAPACITY (16) parameter data; `None` when shorter than 12 bytes.
    pub fn parse(d: &[u8]) -> Option<Capacity> {
        let last: [u8; 8] = d.get(0..8)?.try_into().ok()?;
        let bs: [u8; 4] = d.get(8..12)?.try_into().ok()?;
        Some(Capacity {
            blocks: u64::from_be_bytes(last).checked_add(1)?,
            block_size: u32::from_be_bytes(bs),
        })
    }
}

/// The identification fields of standard INQUIRY data (SPC-4 §6.6.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandardInquiry {
    /// PERIPHERAL DEVICE TYPE (0 = direct access block device, 0x0C = controller).
    pub device_type: u8,
    /// T10 VENDOR IDENTIFICATION.
    pub vendor: String,
    /// PRODUCT IDENTIFICATION.
    pub product: String,
    /// PRODUCT REVISION LEVEL.
    pub revision: String,
}

impl StandardInquiry {
    /// Parse standard INQUIRY data; `None` when shorter than 36 bytes.
    pub fn parse(d: &[u8]) -> Option<StandardInquiry> {
        let text = |r: std::ops::Range<usize>| {
            d.get(r)
                .map(|b| String::from_utf8_lossy(b).trim_end().to_string())
        };
        Some(StandardInquiry {
            device_type: d.first()? & 0x1F,
            vendor: text(8..16)?,
            product: text(16..32)?,
            revision: text(32..36)?,
        })
    }
}

/// Parse REPORT LUNS parameter data (SPC-4 §6.33.2) into LUN numbers, bounded by
/// the LUN LIST LENGTH; entries in another addressing method than peripheral or
/// flat space are skipped.
pub fn parse_report_luns(d: &[u8]) -> Vec<u16> {
    let Some(len) = d
        .get(0..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    else {
        return Vec::new();
    };
    let list = d.get(8..).unwrap_or(&[]);
    list.chunks_exact(8)
        .take(len as usize / 8)
        .filter_map(|c| c.try_into().ok().map(u64::from_be_bytes))
        .filter_map(decode_lun)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::ScsiStatus;

    #[test]
    fn cdbs_use_the_named_layouts() {
        let r = read16(0x0102_0304_0506_0708, 3);
        assert_eq!(r[0], opcode::READ_16);
        assert_eq!(&r[2..10], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&r[10..14], &[0, 0, 0, 3]);
        assert_eq!(write16(9, 2)[0], opcode::WRITE_16);
        // The device server's parser reads back what the client built.
        let crate::Command::Read(rw) = crate::cdb::parse(&read16(7, 5)).unwrap() else {
            panic!("READ (16) not parsed as a read");
        };
        assert_eq!((rw.lba, rw.blocks), (7, 5));
        assert!(crate::cdb::parse(&inquiry(96)).is_ok());
        assert!(crate::cdb::parse(&read_capacity16()).is_ok());
        assert!(crate::cdb::parse(&report_luns(4096)).is_ok());
        assert!(crate::cdb::parse(&test_unit_ready()).is_ok());
    }

    #[test]
    fn sense_round_trips_both_formats() {
        let conditions = [
            Sense::lba_out_of_range(),
            Sense::invalid_field_in_cdb(1, Some(5)).with_information(0x0102_0304),
            Sense::invalid_field_in_parameter_list(9),
            Sense::new(SenseKey::UnitAttention, Asc::new(0x29, 0x01)),
            Sense::new(SenseKey::Miscompare, Asc::MISCOMPARE_DURING_VERIFY).with_information(7),
        ];
        for s in conditions {
            assert_eq!(Sense::parse(&s.to_fixed()), Some(s), "fixed {s:?}");
            assert_eq!(
                Sense::parse(&s.to_descriptor()),
                Some(s),
                "descriptor {s:?}"
            );
        }
        // Sense key specific descriptor as SPC-4 table 30 lays it out: two reserved
        // bytes, SKSV|C/D|BPV|bit, field pointer, one reserved byte.
        let d = [
            0x72, 0x05, 0x24, 0x00, 0, 0, 0, 8, 0x02, 0x06, 0, 0, 0xCD, 0x00, 0x01, 0,
        ];
        assert_eq!(
            Sense::parse(&d),
            Some(Sense::invalid_field_in_cdb(1, Some(5)))
        );
        assert_eq!(Sense::invalid_field_in_cdb(1, Some(5)).to_descriptor(), d);
        assert!(
            Sense::parse(&[0x72, 0x06, 0x29, 0x01])
                .unwrap()
                .is_unit_attention()
        );
        assert_eq!(Sense::parse(&[0x70]), None);
        assert_eq!(Sense::parse(&[0x12, 0, 0]), None);
        assert_eq!(Sense::parse(&[]), None);
        // Truncated fixed data still yields the key.
        let s = Sense::parse(&[0x70, 0, 0x05]).unwrap();
        assert_eq!(
            (s.key, s.asc),
            (SenseKey::IllegalRequest, Asc::NO_ADDITIONAL_SENSE)
        );
    }

    #[test]
    fn status_codes() {
        for s in [ScsiStatus::Good, ScsiStatus::Busy, ScsiStatus::TaskSetFull] {
            assert_eq!(ScsiStatus::from_code(s as u8), Some(s));
        }
        assert_eq!(ScsiStatus::from_code(0x01), None);
    }

    #[test]
    fn parameter_data() {
        let mut cap = vec![0u8; 32];
        cap[7] = 99;
        cap[10] = 2;
        assert_eq!(
            Capacity::parse(&cap),
            Some(Capacity {
                blocks: 100,
                block_size: 512
            })
        );
        assert_eq!(Capacity::parse(&cap[..5]), None);
        let inq = crate::inquiry::standard(0);
        let i = StandardInquiry::parse(&inq).unwrap();
        assert_eq!(i.device_type, 0);
        assert_eq!(
            i.vendor.as_bytes(),
            crate::identity::VENDOR.trim_ascii_end()
        );
        assert_eq!(StandardInquiry::parse(&inq[..20]), None);
        let rl = crate::lun::report_luns(0, &[0, 1, 300]).unwrap();
        assert_eq!(parse_report_luns(&rl), vec![0, 1, 300]);
        let mut short = rl.clone();
        short.truncate(8 + 8 + 3); // a truncated entry is ignored
        assert_eq!(parse_report_luns(&short), vec![0]);
        assert!(parse_report_luns(&[1]).is_empty());
    }
}
