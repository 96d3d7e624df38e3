//! The SCSI requests the initiator issues: a CDB from [`scsi::client`] plus the
//! LUN and the data phase that iSCSI carries with it (RFC 7143 §11.3.1).

use bytes::Bytes;
use scsi::client::{self, Cdb, READ_CAPACITY_16_LEN};

pub use scsi::client::{Capacity, StandardInquiry, parse_report_luns};

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
    /// LUN (encoded with [`scsi::encode_lun`] when issued).
    pub lun: u16,
    /// CDB (padded with zeros).
    pub cdb: Cdb,
    /// Data phase.
    pub transfer: Transfer,
}

fn request(lun: u16, cdb: Cdb, transfer: Transfer) -> ScsiRequest {
    ScsiRequest { lun, cdb, transfer }
}

/// TEST UNIT READY.
pub fn test_unit_ready(lun: u16) -> ScsiRequest {
    request(lun, client::test_unit_ready(), Transfer::None)
}

/// Standard INQUIRY with the given allocation length.
pub fn inquiry(lun: u16, alloc: u16) -> ScsiRequest {
    request(lun, client::inquiry(alloc), Transfer::Read(alloc as u32))
}

/// READ CAPACITY (16).
pub fn read_capacity16(lun: u16) -> ScsiRequest {
    let c = client::read_capacity16();
    request(lun, c, Transfer::Read(READ_CAPACITY_16_LEN))
}

/// REPORT LUNS with the given allocation length; sent to LUN 0.
pub fn report_luns(alloc: u32) -> ScsiRequest {
    request(0, client::report_luns(alloc), Transfer::Read(alloc))
}

/// READ (16) of `blocks` blocks of `block_size` bytes at `lba`.
pub fn read16(lun: u16, lba: u64, blocks: u32, block_size: u32) -> ScsiRequest {
    let len = blocks.saturating_mul(block_size);
    request(lun, client::read16(lba, blocks), Transfer::Read(len))
}

/// WRITE (16) of `data` (a whole number of blocks of `block_size`) at `lba`.
pub fn write16(lun: u16, lba: u64, block_size: u32, data: Bytes) -> ScsiRequest {
    let blocks = (data.len() as u64 / block_size.max(1) as u64) as u32;
    request(lun, client::write16(lba, blocks), Transfer::Write(data))
}

/// PERSISTENT RESERVE IN with `service_action` (SPC-4 §6.13), reading at most `alloc` bytes.
pub fn persistent_reserve_in(lun: u16, service_action: u8, alloc: u16) -> ScsiRequest {
    let c = client::persistent_reserve_in(service_action, alloc);
    request(lun, c, Transfer::Read(u32::from(alloc)))
}

/// PERSISTENT RESERVE OUT with `service_action` and TYPE `pr_type` (SPC-4 §6.14), carrying
/// the basic parameter list: RESERVATION KEY `key`, SERVICE ACTION RESERVATION KEY `sa_key`,
/// and the APTPL bit.
pub fn persistent_reserve_out(
    lun: u16,
    service_action: u8,
    pr_type: u8,
    key: u64,
    sa_key: u64,
    aptpl: bool,
) -> ScsiRequest {
    let p = client::prout_parameters(key, sa_key, false, aptpl);
    let c = client::persistent_reserve_out(service_action, pr_type, p.len() as u32);
    request(lun, c, Transfer::Write(Bytes::copy_from_slice(&p)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use scsi::cdb::opcode;

    #[test]
    fn data_phase_matches_the_cdb() {
        let r = read16(1, 5, 3, 512);
        assert_eq!(r.cdb, client::read16(5, 3));
        assert_eq!(r.transfer, Transfer::Read(1536));
        let w = write16(1, 9, 512, Bytes::from(vec![0u8; 1024]));
        assert_eq!(w.cdb[0], opcode::WRITE_16);
        assert_eq!(&w.cdb[10..14], &[0, 0, 0, 2]);
        assert_eq!(read_capacity16(0).transfer, Transfer::Read(32));
        assert_eq!(report_luns(4096).lun, 0);
    }
}
