//! SCSI command descriptor blocks the initiator issues (SBC-4, SPC-5) and the
//! parsing of their parameter data. Only what the workload and tools need.

use bytes::Bytes;

/// Direction and size of a command's data transfer (RFC 7143 §11.3.1: R/W bits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transfer {
    /// No data.
    None,
    /// Data-In of at most this many bytes.
    Read(u32),
    /// Data-Out of exactly these bytes.
    Write(Bytes),
}

/// One SCSI command ready to be carried in a SCSI Command PDU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScsiRequest {
    /// LUN (single-level, SAM-5 peripheral device addressing for LUN < 256).
    pub lun: u16,
    /// CDB (16 bytes or fewer; padded with zeros in the PDU).
    pub cdb: [u8; 16],
    /// Data phase.
    pub transfer: Transfer,
}

fn request(lun: u16, cdb: [u8; 16], transfer: Transfer) -> ScsiRequest {
    ScsiRequest { lun, cdb, transfer }
}

/// TEST UNIT READY (SPC-5 §6.47).
pub fn test_unit_ready(lun: u16) -> ScsiRequest {
    request(lun, [0; 16], Transfer::None)
}

/// Standard INQUIRY with the given allocation length (SPC-5 §6.7).
pub fn inquiry(lun: u16, alloc: u16) -> ScsiRequest {
    let mut c = [0u8; 16];
    c[0] = 0x12;
    c[3..5].copy_from_slice(&alloc.to_be_bytes());
    request(lun, c, Transfer::Read(alloc as u32))
}

/// READ CAPACITY (16) (SBC-4 §5.20), 32 bytes of parameter data.
pub fn read_capacity16(lun: u16) -> ScsiRequest {
    let mut c = [0u8; 16];
    c[0] = 0x9e;
    c[1] = 0x10;
    c[10..14].copy_from_slice(&32u32.to_be_bytes());
    request(lun, c, Transfer::Read(32))
}

/// REPORT LUNS (SPC-5 §6.33) with the given allocation length; sent to LUN 0.
pub fn report_luns(alloc: u32) -> ScsiRequest {
    let mut c = [0u8; 16];
    c[0] = 0xa0;
    c[6..10].copy_from_slice(&alloc.to_be_bytes());
    request(0, c, Transfer::Read(alloc))
}

/// READ (16) of `blocks` blocks of `block_size` bytes at `lba` (SBC-4 §5.16).
pub fn read16(lun: u16, lba: u64, blocks: u32, block_size: u32) -> ScsiRequest {
    let mut c = [0u8; 16];
    c[0] = 0x88;
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[10..14].copy_from_slice(&blocks.to_be_bytes());
    request(lun, c, Transfer::Read(blocks.saturating_mul(block_size)))
}

/// WRITE (16) of `data` (a whole number of blocks of `block_size`) at `lba` (SBC-4 §5.40).
pub fn write16(lun: u16, lba: u64, block_size: u32, data: Bytes) -> ScsiRequest {
    let blocks = (data.len() as u64 / block_size.max(1) as u64) as u32;
    let mut c = [0u8; 16];
    c[0] = 0x8a;
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[10..14].copy_from_slice(&blocks.to_be_bytes());
    request(lun, c, Transfer::Write(data))
}

/// Capacity from READ CAPACITY (16) parameter data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Capacity {
    /// Number of logical blocks (RETURNED LOGICAL BLOCK ADDRESS + 1).
    pub blocks: u64,
    /// Logical block length in bytes.
    pub block_size: u32,
}

/// Parse READ CAPACITY (16) parameter data; `None` when shorter than 12 bytes.
pub fn parse_capacity16(d: &[u8]) -> Option<Capacity> {
    let last: [u8; 8] = d.get(0..8)?.try_into().ok()?;
    let bs: [u8; 4] = d.get(8..12)?.try_into().ok()?;
    Some(Capacity {
        blocks: u64::from_be_bytes(last).checked_add(1)?,
        block_size: u32::from_be_bytes(bs),
    })
}

/// Identification fields of standard INQUIRY data (SPC-5 §6.7.2).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InquiryData {
    /// PERIPHERAL DEVICE TYPE (0 = direct access block device, 0x0c = controller).
    pub device_type: u8,
    /// T10 VENDOR IDENTIFICATION.
    pub vendor: String,
    /// PRODUCT IDENTIFICATION.
    pub product: String,
    /// PRODUCT REVISION LEVEL.
    pub revision: String,
}

/// Parse standard INQUIRY data; `None` when shorter than 36 bytes.
pub fn parse_inquiry(d: &[u8]) -> Option<InquiryData> {
    let text = |r: std::ops::Range<usize>| {
        d.get(r)
            .map(|b| String::from_utf8_lossy(b).trim_end().to_string())
    };
    Some(InquiryData {
        device_type: d.first()? & 0x1f,
        vendor: text(8..16)?,
        product: text(16..32)?,
        revision: text(32..36)?,
    })
}

/// Parse REPORT LUNS parameter data into LUN numbers (bounded by the list length);
/// entries in an addressing method other than peripheral or flat space are skipped.
pub fn parse_report_luns(d: &[u8]) -> Vec<u16> {
    let Some(len) = d
        .get(0..4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)
    else {
        return Vec::new();
    };
    let list = d.get(8..).unwrap_or(&[]);
    list.chunks_exact(8)
        .take(len as usize / 8)
        .filter_map(|c| c.try_into().ok().map(u64::from_be_bytes))
        .filter_map(scsi::decode_lun)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_write_cdbs() {
        let r = read16(1, 0x0102_0304_0506_0708, 3, 512);
        assert_eq!(r.cdb[0], 0x88);
        assert_eq!(&r.cdb[2..10], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&r.cdb[10..14], &[0, 0, 0, 3]);
        assert_eq!(r.transfer, Transfer::Read(1536));
        let w = write16(1, 9, 512, Bytes::from(vec![0u8; 1024]));
        assert_eq!(w.cdb[0], 0x8a);
        assert_eq!(&w.cdb[10..14], &[0, 0, 0, 2]);
    }

    #[test]
    fn parse_parameter_data() {
        let mut cap = vec![0u8; 32];
        cap[7] = 99;
        cap[10] = 2;
        assert_eq!(
            parse_capacity16(&cap),
            Some(Capacity {
                blocks: 100,
                block_size: 512
            })
        );
        assert_eq!(parse_capacity16(&cap[..5]), None);
        let mut inq = vec![0u8; 36];
        inq[8..16].copy_from_slice(b"IET     ");
        inq[16..32].copy_from_slice(b"VIRTUAL-DISK    ");
        inq[32..36].copy_from_slice(b"0001");
        let i = parse_inquiry(&inq).unwrap();
        assert_eq!(
            (i.vendor.as_str(), i.product.as_str()),
            ("IET", "VIRTUAL-DISK")
        );
        assert_eq!(parse_inquiry(&inq[..20]), None);
        let mut rl = vec![0, 0, 0, 16, 0, 0, 0, 0];
        rl.extend_from_slice(&0u64.to_be_bytes()); // LUN 0
        rl.extend_from_slice(&0x0001_0000_0000_0000u64.to_be_bytes()); // LUN 1
        rl.extend_from_slice(&[0xff; 3]); // truncated garbage is ignored
        assert_eq!(parse_report_luns(&rl), vec![0, 1]);
        assert!(parse_report_luns(&[1]).is_empty());
    }
}
