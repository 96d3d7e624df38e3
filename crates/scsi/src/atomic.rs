//! WRITE ATOMIC (16) (SBC-4 §5.48): the CDB and the Block Limits VPD fields that advertise
//! it. The unit writes the blocks under its range lock with a single write call, so other
//! COMPARE AND WRITE, ORWRITE and WRITE ATOMIC commands on overlapping blocks see all or
//! nothing of it; READs hold the range shared while they copy, so they do too. (A file system
//! gives no all-or-nothing guarantee across a crash for a write larger than its block: see
//! docs/conformance.md.)

use crate::cdb::Rw;
use crate::sense::Sense;

/// MAXIMUM ATOMIC TRANSFER LENGTH advertised (blocks): 256 × 512 bytes = 128 KiB.
pub const MAX_ATOMIC_TRANSFER_BLOCKS: u32 = 256;
/// ATOMIC ALIGNMENT and ATOMIC TRANSFER LENGTH GRANULARITY: no constraint (1 block).
pub const ATOMIC_ALIGNMENT: u32 = 1;
pub const ATOMIC_GRANULARITY: u32 = 1;

/// Parse WRITE ATOMIC (16): WRPROTECT must be 0, LBA bytes 2-9, TRANSFER LENGTH bytes
/// 12-13 (a two-byte field), FUA byte 1 bit 3.
pub fn parse_cdb(c: &[u8]) -> Result<Rw, Sense> {
    if c[1] & 0xE0 != 0 {
        return Err(Sense::invalid_field_in_cdb(1, Some(7)));
    }
    let mut lba = [0u8; 8];
    lba.copy_from_slice(&c[2..10]);
    Ok(Rw {
        lba: u64::from_be_bytes(lba),
        blocks: u32::from(u16::from_be_bytes([c[12], c[13]])),
        fua: c[1] & 0x08 != 0,
    })
}

/// Fill the atomic fields of a Block Limits VPD page body (SBC-4 §6.6.4, table 233; body
/// offsets are page offsets - 4): MAXIMUM ATOMIC TRANSFER LENGTH (44), ATOMIC ALIGNMENT
/// (48), ATOMIC TRANSFER LENGTH GRANULARITY (52). No atomic boundaries (56-63 zero).
pub fn block_limits_fields(body: &mut [u8; 0x3C], max_transfer_blocks: u32) {
    let max = MAX_ATOMIC_TRANSFER_BLOCKS.min(max_transfer_blocks);
    body[40..44].copy_from_slice(&max.to_be_bytes());
    body[44..48].copy_from_slice(&ATOMIC_ALIGNMENT.to_be_bytes());
    body[48..52].copy_from_slice(&ATOMIC_GRANULARITY.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdb_fields() {
        let mut c = [0u8; 16];
        c[0] = 0x9C;
        c[1] = 0x08;
        c[2..10].copy_from_slice(&7u64.to_be_bytes());
        c[12..14].copy_from_slice(&300u16.to_be_bytes());
        assert_eq!(
            parse_cdb(&c),
            Ok(Rw {
                lba: 7,
                blocks: 300,
                fua: true
            })
        );
        c[1] = 0x20;
        assert!(parse_cdb(&c).is_err());
    }

    #[test]
    fn fields_in_block_limits() {
        let mut b = [0u8; 0x3C];
        block_limits_fields(&mut b, 16384);
        assert_eq!(&b[40..44], &256u32.to_be_bytes());
        block_limits_fields(&mut b, 128);
        assert_eq!(&b[40..44], &128u32.to_be_bytes());
        assert_eq!(&b[44..52], &[0, 0, 0, 1, 0, 0, 0, 1]);
    }
}
