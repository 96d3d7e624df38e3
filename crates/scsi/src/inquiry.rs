//! INQUIRY data (SPC-4 §6.6): standard data and the VPD pages (SPC-4 §7.8,
//! SBC-3 §6.6).

use crate::identity::{Identity, PRODUCT, REVISION, VENDOR};
use crate::lu::Limits;
use crate::sense::Sense;

/// Length of the standard INQUIRY data returned.
pub const STANDARD_LEN: usize = 96;

/// VPD pages supported, in ascending order (SPC-4 §7.8.13).
pub const SUPPORTED_VPD_PAGES: [u8; 7] = [0x00, 0x80, 0x83, 0x8F, 0xB0, 0xB1, 0xB2];

/// Version descriptors claimed (SPC-4 table 144): SAM-5, iSCSI, SPC-4, SBC-3.
const VERSION_DESCRIPTORS: [u16; 4] = [0x00A0, 0x0960, 0x0460, 0x04C0];

/// Peripheral qualifier 011b + device type 1Fh: no LU at this LUN
/// (SPC-4 §6.6.2).
pub const NO_LUN_PERIPHERAL: u8 = 0x7F;

/// Standard INQUIRY data for a direct-access block device (SPC-4 §6.6.2).
/// `peripheral` is byte 0 (0x00 for a present disk).
pub fn standard(peripheral: u8) -> [u8; STANDARD_LEN] {
    let mut b = [0u8; STANDARD_LEN];
    b[0] = peripheral;
    b[2] = 0x06; // VERSION: SPC-4
    b[3] = 0x12; // HISUP, RESPONSE DATA FORMAT 2
    b[4] = (STANDARD_LEN - 5) as u8;
    b[7] = 0x02; // CMDQUE
    b[8..16].copy_from_slice(VENDOR);
    b[16..32].copy_from_slice(PRODUCT);
    b[32..36].copy_from_slice(REVISION);
    for (i, v) in VERSION_DESCRIPTORS.iter().enumerate() {
        b[58 + 2 * i..60 + 2 * i].copy_from_slice(&v.to_be_bytes());
    }
    b
}

fn page(code: u8, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + body.len());
    v.extend_from_slice(&[0x00, code]);
    v.extend_from_slice(&(body.len() as u16).to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// A VPD page, or INVALID FIELD IN CDB for an unsupported page code.
pub fn vpd(code: u8, id: &Identity, limits: &Limits, tpgt: u16) -> Result<Vec<u8>, Sense> {
    Ok(match code {
        0x00 => page(code, &SUPPORTED_VPD_PAGES),
        0x80 => page(code, id.serial.as_bytes()),
        0x83 => page(code, &id.designators(tpgt)),
        // Third-party Copy (SPC-4 §7.8.17).
        0x8F => page(code, &crate::xcopy::third_party_copy_vpd()),
        0xB0 => page(code, &block_limits(limits)),
        0xB1 => {
            // Block Device Characteristics (SBC-3 §6.6.2): non-rotating medium.
            let mut body = [0u8; 0x3C];
            body[0..2].copy_from_slice(&1u16.to_be_bytes());
            body[3] = crate::sanitize::BDC_WABEREQ_READS_GOOD;
            page(code, &body)
        }
        0xB2 => {
            // Logical Block Provisioning (SBC-3 §6.6.4): UNMAP, WRITE SAME
            // (16) and (10) with UNMAP, unmapped blocks read zero; thin.
            page(code, &[0x00, 0x80 | 0x40 | 0x20 | 0x04, 0x02, 0x00])
        }
        _ => return Err(Sense::invalid_field_in_cdb(2, None)),
    })
}

/// Block Limits VPD page body (SBC-3 §6.6.3).
fn block_limits(l: &Limits) -> [u8; 0x3C] {
    let mut b = [0u8; 0x3C];
    b[0] = 0x01; // WSNZ: WRITE SAME with 0 blocks is rejected
    b[1] = l.max_compare_and_write_blocks;
    b[2..4].copy_from_slice(&8u16.to_be_bytes()); // optimal granularity: 4 KiB
    b[4..8].copy_from_slice(&l.max_transfer_blocks.to_be_bytes());
    b[8..12].copy_from_slice(&l.max_transfer_blocks.to_be_bytes());
    b[12..16].copy_from_slice(&l.max_transfer_blocks.to_be_bytes()); // max prefetch
    b[16..20].copy_from_slice(&l.max_unmap_blocks.to_be_bytes());
    b[20..24].copy_from_slice(&l.max_unmap_descriptors.to_be_bytes());
    b[24..28].copy_from_slice(&1u32.to_be_bytes()); // optimal unmap granularity
    b[32..40].copy_from_slice(&u64::from(l.max_write_same_blocks).to_be_bytes());
    crate::atomic::block_limits_fields(&mut b, l.max_transfer_blocks);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_fields() {
        let s = standard(0);
        assert_eq!(s[0], 0);
        assert_eq!(s[2], 6);
        assert_eq!(s[3] & 0x0F, 2);
        assert_eq!(usize::from(s[4]), STANDARD_LEN - 5);
        assert_eq!(s[7] & 0x02, 0x02);
        assert!(s[8..36].iter().all(|&c| (0x20..=0x7E).contains(&c)));
        assert_eq!(&s[64..66], &[0x04, 0xC0]); // SBC-3 claimed
    }

    #[test]
    fn pages_have_right_lengths() {
        let id = Identity::new("iqn.2024-01.test:t", 0).unwrap();
        let l = Limits::default();
        for &p in &SUPPORTED_VPD_PAGES {
            let v = vpd(p, &id, &l, 1).unwrap();
            assert_eq!(v[1], p);
            assert_eq!(usize::from(u16::from_be_bytes([v[2], v[3]])), v.len() - 4);
        }
        assert_eq!(vpd(0xB0, &id, &l, 1).unwrap()[3], 0x3C);
        assert!(vpd(0x81, &id, &l, 1).is_err());
        assert!(SUPPORTED_VPD_PAGES.windows(2).all(|w| w[0] < w[1]));
    }
}
