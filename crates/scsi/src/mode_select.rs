//! MODE SELECT (6/10) (SPC-4 §6.9, §6.10): the parameter list is checked as a whole, then
//! the changeable parameters of [`ModeState`] are set. Only WCE (Caching page) and SWP
//! (Control page) are changeable; any other field must keep its current value. Saving
//! (SP = 1) is not supported: there is one set of current parameters, lost at restart.

use crate::cdb::{be16, be32, be64};
use crate::mode::{self, CACHING_WCE, CONTROL_SWP, ModeState, PAGE_CACHING, PAGE_CONTROL};
use crate::sense::{Asc, Sense};

/// A MODE SELECT CDB (SPC-4 §6.9, §6.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModeSelect {
    /// MODE SELECT(10) rather than (6).
    pub ten: bool,
    /// PF: the pages follow the page format (required).
    pub pf: bool,
    /// SP: save the pages (not supported).
    pub sp: bool,
    pub param_len: u16,
}

/// What the parameter list asks for: the new WCE and SWP, when their page was sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Changes {
    pub wce: Option<bool>,
    pub swp: Option<bool>,
}

fn too_short() -> Sense {
    Sense::illegal_request(Asc::PARAMETER_LIST_LENGTH_ERROR)
}

/// Parse and check a MODE SELECT parameter list against the current parameters: the mode
/// parameter header, at most one block descriptor (which must describe the current
/// capacity, or 0 blocks, and `block_size`), then whole mode pages. A field that is not
/// changeable and differs from its current value is INVALID FIELD IN PARAMETER LIST
/// pointing at it; a list that ends inside a header, descriptor or page is PARAMETER LIST
/// LENGTH ERROR.
pub fn parse(
    cdb: &ModeSelect,
    data: &[u8],
    num_blocks: u64,
    block_size: u32,
    state: &ModeState,
) -> Result<Changes, Sense> {
    if cdb.sp {
        return Err(Sense::invalid_field_in_cdb(1, Some(0)));
    }
    if !cdb.pf && !data.is_empty() {
        return Err(Sense::invalid_field_in_cdb(1, Some(4)));
    }
    let data = data
        .get(..usize::from(cdb.param_len))
        .ok_or_else(too_short)?;
    if data.is_empty() {
        return Ok(Changes::default());
    }
    let (header_len, long_lba, bd_len) = if cdb.ten {
        let h = data.get(..8).ok_or_else(too_short)?;
        (8, h[4] & 0x01 != 0, usize::from(be16(h, 6)))
    } else {
        let h = data.get(..4).ok_or_else(too_short)?;
        (4, false, usize::from(h[3]))
    };
    let descs = data
        .get(header_len..header_len + bd_len)
        .ok_or_else(too_short)?;
    let desc_len = if long_lba { 16 } else { 8 };
    if !descs.is_empty() {
        if descs.len() != desc_len {
            let at = if cdb.ten { 6 } else { 3 };
            return Err(Sense::invalid_field_in_parameter_list(at));
        }
        check_block_descriptor(descs, long_lba, header_len, num_blocks, block_size)?;
    }
    let mut changes = Changes::default();
    let mut at = header_len + bd_len;
    while at < data.len() {
        let p = &data[at..];
        let code = p[0] & 0x3F;
        if p[0] & 0x40 != 0 {
            // SPF: no subpages are supported.
            return Err(Sense::invalid_field_in_parameter_list(at as u16));
        }
        if !matches!(
            code,
            PAGE_CACHING | PAGE_CONTROL | mode::PAGE_INFORMATIONAL_EXCEPTIONS
        ) {
            return Err(Sense::invalid_field_in_parameter_list(at as u16));
        }
        let current = mode::page(code, 0, state);
        let mask = mode::page(code, 1, state);
        let len = *p.get(1).ok_or_else(too_short)?;
        if usize::from(len) != current.len() - 2 {
            return Err(Sense::invalid_field_in_parameter_list(at as u16 + 1));
        }
        let new = p.get(..current.len()).ok_or_else(too_short)?;
        // Byte 0 (PS is reserved here) and 1 were checked; the rest must match outside the
        // changeable bits.
        for i in 2..current.len() {
            if (new[i] ^ current[i]) & !mask[i] != 0 {
                return Err(Sense::invalid_field_in_parameter_list((at + i) as u16));
            }
        }
        match code {
            PAGE_CACHING => changes.wce = Some(new[2] & CACHING_WCE != 0),
            PAGE_CONTROL => changes.swp = Some(new[4] & CONTROL_SWP != 0),
            _ => {}
        }
        at += current.len();
    }
    Ok(changes)
}

/// The block descriptor (SBC-3 §6.4.2): NUMBER OF LOGICAL BLOCKS 0 (no change) or the
/// current count, BLOCK LENGTH the unit's.
fn check_block_descriptor(
    d: &[u8],
    long_lba: bool,
    base: usize,
    num_blocks: u64,
    block_size: u32,
) -> Result<(), Sense> {
    let (blocks, len, len_at) = if long_lba {
        (be64(d, 0), be32(d, 12), 12)
    } else {
        let n = u64::from(be32(d, 0));
        let l = u32::from_be_bytes([0, d[5], d[6], d[7]]);
        // A short descriptor saturates at 0xFFFFFFFF for larger units.
        let current = num_blocks.min(u64::from(u32::MAX));
        (if n == current { num_blocks } else { n }, l, 5)
    };
    if blocks != 0 && blocks != num_blocks {
        return Err(Sense::invalid_field_in_parameter_list(base as u16));
    }
    if len != block_size {
        return Err(Sense::invalid_field_in_parameter_list(
            (base + len_at) as u16,
        ));
    }
    Ok(())
}

/// Apply checked [`Changes`].
pub fn apply(changes: Changes, state: &ModeState) {
    if let Some(wce) = changes.wce {
        state.set_write_cache_enabled(wce);
    }
    if let Some(swp) = changes.swp {
        state.set_software_write_protect(swp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn six(len: usize) -> ModeSelect {
        ModeSelect {
            ten: false,
            pf: true,
            sp: false,
            param_len: len as u16,
        }
    }

    /// A MODE SELECT(6) list: header without block descriptor, then `page`.
    fn list(page: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 0, 0, 0];
        v.extend_from_slice(page);
        v
    }

    #[test]
    fn swp_and_wce_change() {
        let state = ModeState::new(false);
        let mut control = mode::page(PAGE_CONTROL, 0, &state);
        control[4] |= CONTROL_SWP;
        let mut caching = mode::page(PAGE_CACHING, 0, &state);
        caching[2] &= !CACHING_WCE;
        let mut l = list(&control);
        l.extend_from_slice(&caching);
        let c = parse(&six(l.len()), &l, 100, 512, &state).unwrap();
        assert_eq!(
            c,
            Changes {
                wce: Some(false),
                swp: Some(true)
            }
        );
        apply(c, &state);
        assert!(state.software_write_protect());
        assert!(!state.write_cache_enabled());
    }

    #[test]
    fn unchangeable_fields_and_bad_lists() {
        let state = ModeState::new(false);
        let mut control = mode::page(PAGE_CONTROL, 0, &state);
        control[2] |= 0x04; // D_SENSE: not changeable
        let l = list(&control);
        let e = parse(&six(l.len()), &l, 100, 512, &state).unwrap_err();
        assert_eq!(e.asc, Asc::INVALID_FIELD_IN_PARAMETER_LIST);
        assert_eq!(e.field_pointer.map(|f| f.byte), Some(6));
        // Cut short inside the page.
        let l = list(&mode::page(PAGE_CONTROL, 0, &state));
        let e = parse(&six(l.len() - 1), &l, 100, 512, &state).unwrap_err();
        assert_eq!(e.asc, Asc::PARAMETER_LIST_LENGTH_ERROR);
        // More promised than sent.
        let e = parse(&six(l.len() + 1), &l, 100, 512, &state).unwrap_err();
        assert_eq!(e.asc, Asc::PARAMETER_LIST_LENGTH_ERROR);
        // Unknown page, saving.
        let l = list(&[0x01, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(parse(&six(l.len()), &l, 100, 512, &state).is_err());
        let mut sp = six(0);
        sp.sp = true;
        assert_eq!(
            parse(&sp, &[], 100, 512, &state).unwrap_err().asc,
            Asc::INVALID_FIELD_IN_CDB
        );
        // A write-through unit refuses to turn its cache on.
        let wt = ModeState::new(true);
        let mut caching = mode::page(PAGE_CACHING, 0, &wt);
        caching[2] |= CACHING_WCE;
        let l = list(&caching);
        assert!(parse(&six(l.len()), &l, 100, 512, &wt).is_err());
    }

    #[test]
    fn block_descriptor_must_describe_the_unit() {
        let state = ModeState::new(false);
        let mut l = vec![0, 0, 0, 8, 0, 0, 0, 100, 0, 0, 2, 0];
        assert_eq!(
            parse(&six(l.len()), &l, 100, 512, &state),
            Ok(Changes::default())
        );
        l[11] = 1; // block length 513
        assert!(parse(&six(l.len()), &l, 100, 512, &state).is_err());
        l[11] = 0;
        l[7] = 99;
        assert!(parse(&six(l.len()), &l, 100, 512, &state).is_err());
        l[7] = 0;
        assert!(parse(&six(l.len()), &l, 100, 512, &state).is_ok());
    }

    proptest::proptest! {
        /// Any parameter list, of any claimed length, gets an answer, never a panic.
        #[test]
        fn any_list_is_answered(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80),
            ten: bool,
            param_len in 0u16..100,
        ) {
            let state = ModeState::new(false);
            let cdb = ModeSelect { ten, pf: true, sp: false, param_len };
            let _ = parse(&cdb, &data, 1000, 512, &state);
        }
    }
}
