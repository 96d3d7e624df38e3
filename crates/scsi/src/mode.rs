//! MODE SENSE (6/10) parameter data (SPC-4 §7.5): header, block descriptor
//! and the Caching, Control and Informational Exceptions pages.

use crate::cdb::ModeSense;
use crate::sense::{Asc, Sense};

pub const PAGE_CACHING: u8 = 0x08;
pub const PAGE_CONTROL: u8 = 0x0A;
pub const PAGE_INFORMATIONAL_EXCEPTIONS: u8 = 0x1C;
pub const PAGE_ALL: u8 = 0x3F;

/// DEVICE-SPECIFIC PARAMETER for direct-access devices (SBC-3 §6.5.1):
/// DPOFUA set (DPO and FUA are honoured), WP clear.
pub const DEVICE_SPECIFIC_DPOFUA: u8 = 0x10;

/// One mode page, for page control `pc` (1 = changeable: all-zero mask).
fn page(code: u8, pc: u8) -> Vec<u8> {
    let mut p = match code {
        // Caching (SBC-3 §6.5.5): WCE=1, writes are cached in the host page
        // cache until SYNCHRONIZE CACHE or FUA.
        PAGE_CACHING => {
            let mut p = vec![0u8; 20];
            p[2] = 0x04;
            p
        }
        // Control (SPC-4 §7.5.8): TST 0, QUEUE ALGORITHM MODIFIER 1
        // (unrestricted reordering), QERR 0, D_SENSE 0 (fixed sense), busy
        // timeout unlimited.
        PAGE_CONTROL => {
            let mut p = vec![0u8; 12];
            p[3] = 0x10;
            p[8] = 0xFF;
            p[9] = 0xFF;
            p
        }
        // Informational Exceptions Control (SPC-4 §7.5.11): DEXCPT=1.
        _ => {
            let mut p = vec![0u8; 12];
            p[2] = 0x08;
            p
        }
    };
    if pc == 1 {
        p.fill(0);
    }
    p[0] = code;
    p[1] = (p.len() - 2) as u8;
    p
}

/// Build the full MODE SENSE response (before allocation-length truncation)
/// for a device of `num_blocks` blocks of `block_size` bytes.
pub fn mode_sense(ms: &ModeSense, num_blocks: u64, block_size: u32) -> Result<Vec<u8>, Sense> {
    if ms.pc == 3 {
        return Err(Sense::illegal_request(Asc::SAVING_PARAMETERS_NOT_SUPPORTED));
    }
    let all_subpages = ms.subpage == 0xFF;
    if ms.subpage != 0 && !(all_subpages && ms.page == PAGE_ALL) {
        return Err(Sense::invalid_field_in_cdb(3, None));
    }
    let mut pages = Vec::new();
    match ms.page {
        PAGE_ALL => {
            for code in [PAGE_CACHING, PAGE_CONTROL, PAGE_INFORMATIONAL_EXCEPTIONS] {
                pages.extend_from_slice(&page(code, ms.pc));
            }
        }
        PAGE_CACHING | PAGE_CONTROL | PAGE_INFORMATIONAL_EXCEPTIONS => {
            pages.extend_from_slice(&page(ms.page, ms.pc))
        }
        _ => return Err(Sense::invalid_field_in_cdb(2, Some(5))),
    }

    let long_lba = ms.ten && ms.llbaa;
    let mut desc = Vec::new();
    if !ms.dbd {
        if long_lba {
            // Long LBA block descriptor (SBC-3 §6.4.2.3).
            desc.extend_from_slice(&num_blocks.to_be_bytes());
            desc.extend_from_slice(&[0; 4]);
            desc.extend_from_slice(&block_size.to_be_bytes());
        } else {
            // Short LBA block descriptor (SBC-3 §6.4.2.2).
            let n = u32::try_from(num_blocks).unwrap_or(u32::MAX);
            desc.extend_from_slice(&n.to_be_bytes());
            desc.push(0);
            desc.extend_from_slice(&block_size.to_be_bytes()[1..]);
        }
    }

    let mut out = Vec::with_capacity(8 + desc.len() + pages.len());
    if ms.ten {
        // Mode parameter header (10) (SPC-4 §7.5.5, table 453).
        let total = 8 + desc.len() + pages.len();
        out.extend_from_slice(&((total - 2) as u16).to_be_bytes());
        out.extend_from_slice(&[0, DEVICE_SPECIFIC_DPOFUA, u8::from(long_lba), 0]);
        out.extend_from_slice(&(desc.len() as u16).to_be_bytes());
    } else {
        // Mode parameter header (6) (table 452).
        let total = 4 + desc.len() + pages.len();
        out.extend_from_slice(&[
            (total - 1) as u8,
            0,
            DEVICE_SPECIFIC_DPOFUA,
            desc.len() as u8,
        ]);
    }
    out.extend_from_slice(&desc);
    out.extend_from_slice(&pages);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(ten: bool, dbd: bool, page: u8) -> ModeSense {
        ModeSense {
            ten,
            dbd,
            llbaa: false,
            pc: 0,
            page,
            subpage: 0,
            alloc_len: 255,
        }
    }

    #[test]
    fn six_all_pages() {
        let d = mode_sense(&ms(false, false, PAGE_ALL), 2048, 512).unwrap();
        assert_eq!(usize::from(d[0]), d.len() - 1);
        assert_eq!(d[2], 0x10);
        assert_eq!(d[3], 8);
        assert_eq!(&d[4..12], &[0, 0, 8, 0, 0, 0, 2, 0]);
        assert_eq!(d[12], PAGE_CACHING);
        assert_eq!(d.len(), 4 + 8 + 20 + 12 + 12);
    }

    #[test]
    fn ten_long_lba_and_dbd() {
        let mut m = ms(true, false, PAGE_CONTROL);
        m.llbaa = true;
        let d = mode_sense(&m, 1 << 40, 512).unwrap();
        assert_eq!(usize::from(u16::from_be_bytes([d[0], d[1]])), d.len() - 2);
        assert_eq!(d[4], 1);
        assert_eq!(u16::from_be_bytes([d[6], d[7]]), 16);
        assert_eq!(&d[8..16], &(1u64 << 40).to_be_bytes());
        assert_eq!(d[24], PAGE_CONTROL);
        let d = mode_sense(&ms(true, true, PAGE_CONTROL), 2048, 512).unwrap();
        assert_eq!(d.len(), 8 + 12);
    }

    #[test]
    fn bad_requests() {
        let mut m = ms(false, true, 0x01);
        assert!(mode_sense(&m, 1, 512).is_err());
        m.page = PAGE_CACHING;
        m.pc = 3;
        assert_eq!(
            mode_sense(&m, 1, 512).unwrap_err().asc,
            Asc::SAVING_PARAMETERS_NOT_SUPPORTED
        );
        m.pc = 0;
        m.subpage = 1;
        assert!(mode_sense(&m, 1, 512).is_err());
        m.page = PAGE_ALL;
        m.subpage = 0xFF;
        assert!(mode_sense(&m, 1, 512).is_ok());
    }

    #[test]
    fn changeable_is_zero_mask() {
        let mut m = ms(false, true, PAGE_CACHING);
        m.pc = 1;
        let d = mode_sense(&m, 1, 512).unwrap();
        assert_eq!(&d[4..6], &[PAGE_CACHING, 18]);
        assert!(d[6..].iter().all(|&b| b == 0));
    }
}
