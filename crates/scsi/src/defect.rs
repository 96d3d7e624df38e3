//! READ DEFECT DATA (10/12) (SBC-3 §5.17, §5.18): a file has no defects the target knows
//! of, so the answer is a correctly formatted, empty list in the format asked for.

use crate::sense::Sense;

/// A READ DEFECT DATA CDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadDefectData {
    /// READ DEFECT DATA(12) (8-byte header) rather than (10) (4-byte header).
    pub twelve: bool,
    /// REQ_PLIST / REQ_GLIST: the primary / grown list is asked for.
    pub plist: bool,
    pub glist: bool,
    /// DEFECT LIST FORMAT (SBC-3 table 13).
    pub format: u8,
    pub alloc_len: u32,
}

/// DEFECT LIST FORMAT 111b is reserved (SBC-3 §6.2.1 table 180).
const RESERVED_FORMAT: u8 = 0x07;

/// Parse the CDB fields (byte 2 of (10), byte 1 of (12)).
pub fn parse_cdb(c: &[u8]) -> Result<ReadDefectData, Sense> {
    let twelve = c.len() == 12;
    let (flags_at, alloc_len) = if twelve {
        (1, u32::from_be_bytes([c[6], c[7], c[8], c[9]]))
    } else {
        (2, u32::from(u16::from_be_bytes([c[7], c[8]])))
    };
    let flags = c[flags_at];
    let format = flags & 0x07;
    if format == RESERVED_FORMAT {
        return Err(Sense::invalid_field_in_cdb(flags_at as u16, Some(0)));
    }
    Ok(ReadDefectData {
        twelve,
        plist: flags & 0x10 != 0,
        glist: flags & 0x08 != 0,
        format,
        alloc_len,
    })
}

/// The defect data: a header saying which lists are valid (those asked for) in the format
/// asked for, with DEFECT LIST LENGTH 0.
pub fn data(r: &ReadDefectData) -> Vec<u8> {
    let flags = if r.plist { 0x10 } else { 0 } | if r.glist { 0x08 } else { 0 } | r.format;
    if r.twelve {
        // SBC-3 table 29: byte 1 flags, bytes 2-3 generation code (0: not supported),
        // bytes 4-7 DEFECT LIST LENGTH.
        vec![0, flags, 0, 0, 0, 0, 0, 0]
    } else {
        // SBC-3 table 27: byte 1 flags, bytes 2-3 DEFECT LIST LENGTH.
        vec![0, flags, 0, 0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_lists_in_the_format_asked_for() {
        let r = parse_cdb(&[0x37, 0, 0x18 | 0x05, 0, 0, 0, 0, 0, 32, 0]).unwrap();
        assert_eq!(
            (r.plist, r.glist, r.format, r.alloc_len),
            (true, true, 5, 32)
        );
        assert_eq!(data(&r), vec![0, 0x1D, 0, 0]);
        let r = parse_cdb(&[0xB7, 0x08, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]).unwrap();
        assert_eq!(r.alloc_len, 256);
        assert_eq!(data(&r), vec![0, 0x08, 0, 0, 0, 0, 0, 0]);
        assert!(parse_cdb(&[0x37, 0, 0x07, 0, 0, 0, 0, 0, 32, 0]).is_err());
    }
}
