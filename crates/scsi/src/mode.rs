//! MODE SENSE (6/10) parameter data (SPC-4 §7.5): header, block descriptor
//! and the Caching, Control and Informational Exceptions pages, and the mode
//! parameters MODE SELECT may change ([`ModeState`]).

use std::sync::atomic::{AtomicBool, Ordering};

use crate::cdb::ModeSense;
use crate::sense::{Asc, Sense};

pub const PAGE_CACHING: u8 = 0x08;
pub const PAGE_CONTROL: u8 = 0x0A;
pub const PAGE_INFORMATIONAL_EXCEPTIONS: u8 = 0x1C;
pub const PAGE_ALL: u8 = 0x3F;

/// DEVICE-SPECIFIC PARAMETER for direct-access devices (SBC-3 §6.5.1):
/// DPOFUA set (DPO and FUA are honoured), WP clear.
pub const DEVICE_SPECIFIC_DPOFUA: u8 = 0x10;

/// WCE (write cache enable), byte 2 of the Caching page (SBC-3 §6.5.5).
pub const CACHING_WCE: u8 = 0x04;
/// SWP (software write protect), byte 4 of the Control page (SPC-4 §7.5.8).
pub const CONTROL_SWP: u8 = 0x08;
/// WP in the DEVICE-SPECIFIC PARAMETER (SBC-3 §6.5.1): the medium is write-protected.
pub const DEVICE_SPECIFIC_WP: u8 = 0x80;

/// The mode parameters of one logical unit that MODE SELECT may change: the write cache
/// (WCE) and software write protection (SWP). Shared by every nexus (one saved set, no
/// per-nexus parameters).
#[derive(Debug)]
pub struct ModeState {
    /// Writes may sit in the host page cache until SYNCHRONIZE CACHE (WCE = 1); when clear,
    /// every write is durable before its status (write-through).
    wce: AtomicBool,
    /// Every command that writes the medium is refused with DATA PROTECT.
    swp: AtomicBool,
    /// The unit was configured write-through (`--write-through`): WCE stays 0, and MODE
    /// SELECT cannot turn the cache on.
    write_through: bool,
}

impl ModeState {
    /// The parameters of a unit with the write cache on, or of a write-through unit.
    pub fn new(write_through: bool) -> ModeState {
        ModeState {
            wce: AtomicBool::new(!write_through),
            swp: AtomicBool::new(false),
            write_through,
        }
    }

    /// WCE: acknowledged writes may be in the page cache, not yet durable.
    pub fn write_cache_enabled(&self) -> bool {
        self.wce.load(Ordering::Acquire)
    }

    /// SWP: the medium is write-protected by MODE SELECT.
    pub fn software_write_protect(&self) -> bool {
        self.swp.load(Ordering::Acquire)
    }

    pub(crate) fn set_write_cache_enabled(&self, on: bool) {
        self.wce.store(on && !self.write_through, Ordering::Release);
    }

    pub(crate) fn set_software_write_protect(&self, on: bool) {
        self.swp.store(on, Ordering::Release);
    }

    /// The default WCE (page control 2): the unit's configuration.
    fn default_wce(&self) -> bool {
        !self.write_through
    }
}

/// One mode page, for page control `pc` (0 current, 1 changeable mask, 2 default).
pub(crate) fn page(code: u8, pc: u8, state: &ModeState) -> Vec<u8> {
    let changeable = pc == 1;
    let mut p = match code {
        // Caching (SBC-3 §6.5.5): WCE=1 when writes may sit in the host page cache until
        // SYNCHRONIZE CACHE or FUA; WCE=0 for a write-through unit (every write durable
        // before its status). Changeable unless the unit was configured write-through.
        PAGE_CACHING => {
            let mut p = vec![0u8; 20];
            let wce = match pc {
                0 => state.write_cache_enabled(),
                1 => !state.write_through,
                _ => state.default_wce(),
            };
            if wce {
                p[2] = CACHING_WCE;
            }
            p
        }
        // Control (SPC-4 §7.5.8): TST 0, QUEUE ALGORITHM MODIFIER 1
        // (unrestricted reordering), QERR 0, D_SENSE 0 (fixed sense), busy
        // timeout unlimited; SWP (byte 4), set by MODE SELECT, is the one changeable field.
        PAGE_CONTROL => {
            let mut p = vec![0u8; 12];
            if changeable {
                p[4] = CONTROL_SWP;
            } else {
                p[3] = 0x10;
                p[8] = 0xFF;
                p[9] = 0xFF;
                if pc == 0 && state.software_write_protect() {
                    p[4] = CONTROL_SWP;
                }
            }
            p
        }
        // Informational Exceptions Control (SPC-4 §7.5.11): DEXCPT=1, nothing changeable.
        _ => {
            let mut p = vec![0u8; 12];
            if !changeable {
                p[2] = 0x08;
            }
            p
        }
    };
    p[0] = code;
    p[1] = (p.len() - 2) as u8;
    p
}

/// Build the full MODE SENSE response (before allocation-length truncation)
/// for a device of `num_blocks` blocks of `block_size` bytes with mode parameters `state`.
pub fn mode_sense(
    ms: &ModeSense,
    num_blocks: u64,
    block_size: u32,
    state: &ModeState,
) -> Result<Vec<u8>, Sense> {
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
                pages.extend_from_slice(&page(code, ms.pc, state));
            }
        }
        PAGE_CACHING | PAGE_CONTROL | PAGE_INFORMATIONAL_EXCEPTIONS => {
            pages.extend_from_slice(&page(ms.page, ms.pc, state))
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

    let device_specific = if state.software_write_protect() {
        DEVICE_SPECIFIC_DPOFUA | DEVICE_SPECIFIC_WP
    } else {
        DEVICE_SPECIFIC_DPOFUA
    };
    let mut out = Vec::with_capacity(8 + desc.len() + pages.len());
    if ms.ten {
        // Mode parameter header (10) (SPC-4 §7.5.5, table 453).
        let total = 8 + desc.len() + pages.len();
        out.extend_from_slice(&((total - 2) as u16).to_be_bytes());
        out.extend_from_slice(&[0, device_specific, u8::from(long_lba), 0]);
        out.extend_from_slice(&(desc.len() as u16).to_be_bytes());
    } else {
        // Mode parameter header (6) (table 452).
        let total = 4 + desc.len() + pages.len();
        out.extend_from_slice(&[(total - 1) as u8, 0, device_specific, desc.len() as u8]);
    }
    out.extend_from_slice(&desc);
    out.extend_from_slice(&pages);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cached() -> ModeState {
        ModeState::new(false)
    }

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
        let d = mode_sense(&ms(false, false, PAGE_ALL), 2048, 512, &cached()).unwrap();
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
        let d = mode_sense(&m, 1 << 40, 512, &cached()).unwrap();
        assert_eq!(usize::from(u16::from_be_bytes([d[0], d[1]])), d.len() - 2);
        assert_eq!(d[4], 1);
        assert_eq!(u16::from_be_bytes([d[6], d[7]]), 16);
        assert_eq!(&d[8..16], &(1u64 << 40).to_be_bytes());
        assert_eq!(d[24], PAGE_CONTROL);
        let d = mode_sense(&ms(true, true, PAGE_CONTROL), 2048, 512, &cached()).unwrap();
        assert_eq!(d.len(), 8 + 12);
    }

    #[test]
    fn bad_requests() {
        let mut m = ms(false, true, 0x01);
        assert!(mode_sense(&m, 1, 512, &cached()).is_err());
        m.page = PAGE_CACHING;
        m.pc = 3;
        assert_eq!(
            mode_sense(&m, 1, 512, &cached()).unwrap_err().asc,
            Asc::SAVING_PARAMETERS_NOT_SUPPORTED
        );
        m.pc = 0;
        m.subpage = 1;
        assert!(mode_sense(&m, 1, 512, &cached()).is_err());
        m.page = PAGE_ALL;
        m.subpage = 0xFF;
        assert!(mode_sense(&m, 1, 512, &cached()).is_ok());
    }

    #[test]
    fn changeable_mask_is_wce_and_swp() {
        let mut m = ms(false, true, PAGE_CACHING);
        m.pc = 1;
        let d = mode_sense(&m, 1, 512, &cached()).unwrap();
        assert_eq!(&d[4..6], &[PAGE_CACHING, 18]);
        assert_eq!(d[6], CACHING_WCE);
        assert!(d[7..].iter().all(|&b| b == 0));
        // A write-through unit cannot turn its cache on.
        let d = mode_sense(&m, 1, 512, &ModeState::new(true)).unwrap();
        assert!(d[6..].iter().all(|&b| b == 0));
        m.page = PAGE_CONTROL;
        let d = mode_sense(&m, 1, 512, &cached()).unwrap();
        assert_eq!(&d[4..7], &[PAGE_CONTROL, 10, 0]);
        assert_eq!(d[8], CONTROL_SWP);
    }

    #[test]
    fn caching_page_tells_the_truth_about_the_write_cache() {
        let m = ms(false, true, PAGE_CACHING);
        let state = cached();
        assert_eq!(mode_sense(&m, 1, 512, &state).unwrap()[6], CACHING_WCE);
        let wt = ModeState::new(true);
        assert_eq!(mode_sense(&m, 1, 512, &wt).unwrap()[6], 0);
        state.set_write_cache_enabled(false);
        assert_eq!(mode_sense(&m, 1, 512, &state).unwrap()[6], 0);
        // Write-through stays write-through.
        wt.set_write_cache_enabled(true);
        assert!(!wt.write_cache_enabled());
    }

    #[test]
    fn swp_sets_wp_in_the_header() {
        let state = cached();
        let m = ms(false, true, PAGE_CONTROL);
        assert_eq!(
            mode_sense(&m, 1, 512, &state).unwrap()[2],
            DEVICE_SPECIFIC_DPOFUA
        );
        state.set_software_write_protect(true);
        let d = mode_sense(&m, 1, 512, &state).unwrap();
        assert_eq!(d[2], DEVICE_SPECIFIC_DPOFUA | DEVICE_SPECIFIC_WP);
        assert_eq!(d[8] & CONTROL_SWP, CONTROL_SWP);
    }
}
