//! The Basic Header Segment and Additional Header Segments (RFC 7143 §11.2).

/// Length of the Basic Header Segment (§11.2.1).
pub const BHS_LEN: usize = 48;
/// Length of a CRC32C digest (§13.1).
pub const DIGEST_LEN: usize = 4;
/// The largest value of the 24-bit DataSegmentLength field (§11.2.1.5).
pub const MAX_DATA_SEGMENT_LENGTH: u32 = (1 << 24) - 1;
/// Reserved tag value 0xffffffff (§11.2.1.8, §11.18.1).
pub const RESERVED_TAG: u32 = 0xffff_ffff;

/// The I (immediate delivery) bit in byte 0 (§11.2.1.2).
pub const IMMEDIATE_BIT: u8 = 0x40;
/// The F (final) bit in byte 1 (§11.2.1.3).
pub const FINAL_BIT: u8 = 0x80;

/// PDU opcodes (§11.2.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Opcode {
    /// NOP-Out (§11.18).
    NopOut = 0x00,
    /// SCSI Command (§11.3).
    ScsiCommand = 0x01,
    /// SCSI Task Management Function Request (§11.5).
    TaskMgmtRequest = 0x02,
    /// Login Request (§11.12).
    LoginRequest = 0x03,
    /// Text Request (§11.10).
    TextRequest = 0x04,
    /// SCSI Data-Out (§11.7).
    DataOut = 0x05,
    /// Logout Request (§11.14).
    LogoutRequest = 0x06,
    /// SNACK Request (§11.16).
    SnackRequest = 0x10,
    /// NOP-In (§11.19).
    NopIn = 0x20,
    /// SCSI Response (§11.4).
    ScsiResponse = 0x21,
    /// SCSI Task Management Function Response (§11.6).
    TaskMgmtResponse = 0x22,
    /// Login Response (§11.13).
    LoginResponse = 0x23,
    /// Text Response (§11.11).
    TextResponse = 0x24,
    /// SCSI Data-In (§11.7).
    DataIn = 0x25,
    /// Logout Response (§11.15).
    LogoutResponse = 0x26,
    /// Ready To Transfer (§11.8).
    R2t = 0x31,
    /// Asynchronous Message (§11.9).
    AsyncMessage = 0x32,
    /// Reject (§11.17).
    Reject = 0x3f,
}

impl Opcode {
    /// Map the 6-bit opcode field; `None` for opcodes RFC 7143 does not define.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v & 0x3f {
            0x00 => Opcode::NopOut,
            0x01 => Opcode::ScsiCommand,
            0x02 => Opcode::TaskMgmtRequest,
            0x03 => Opcode::LoginRequest,
            0x04 => Opcode::TextRequest,
            0x05 => Opcode::DataOut,
            0x06 => Opcode::LogoutRequest,
            0x10 => Opcode::SnackRequest,
            0x20 => Opcode::NopIn,
            0x21 => Opcode::ScsiResponse,
            0x22 => Opcode::TaskMgmtResponse,
            0x23 => Opcode::LoginResponse,
            0x24 => Opcode::TextResponse,
            0x25 => Opcode::DataIn,
            0x26 => Opcode::LogoutResponse,
            0x31 => Opcode::R2t,
            0x32 => Opcode::AsyncMessage,
            0x3f => Opcode::Reject,
            _ => return None,
        })
    }

    /// True for initiator opcodes (§11.2.1.2: 0x00-0x1f).
    pub fn is_initiator(self) -> bool {
        (self as u8) < 0x20
    }
}

/// Read/write helpers over a raw 48-byte BHS; offsets are compile-time constants.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bhs(pub [u8; BHS_LEN]);

impl Bhs {
    pub(crate) fn new(opcode: Opcode, immediate: bool) -> Self {
        let mut b = [0u8; BHS_LEN];
        b[0] = opcode as u8 | if immediate { IMMEDIATE_BIT } else { 0 };
        Bhs(b)
    }
    pub(crate) fn opcode_raw(&self) -> u8 {
        self.0[0] & 0x3f
    }
    pub(crate) fn immediate(&self) -> bool {
        self.0[0] & IMMEDIATE_BIT != 0
    }
    pub(crate) fn flags(&self) -> u8 {
        self.0[1]
    }
    pub(crate) fn set_flags(&mut self, f: u8) {
        self.0[1] = f;
    }
    pub(crate) fn u8_at(&self, off: usize) -> u8 {
        self.0.get(off).copied().unwrap_or(0)
    }
    pub(crate) fn set_u8(&mut self, off: usize, v: u8) {
        if let Some(b) = self.0.get_mut(off) {
            *b = v;
        }
    }
    pub(crate) fn total_ahs_len(&self) -> usize {
        self.0[4] as usize * 4
    }
    pub(crate) fn data_segment_length(&self) -> u32 {
        u32::from_be_bytes([0, self.0[5], self.0[6], self.0[7]])
    }
    pub(crate) fn set_lengths(&mut self, ahs_words: u8, dsl: u32) {
        self.0[4] = ahs_words;
        let d = dsl.to_be_bytes();
        self.0[5..8].copy_from_slice(&d[1..4]);
    }
    pub(crate) fn u16_at(&self, off: usize) -> u16 {
        let mut b = [0u8; 2];
        if let Some(s) = self.0.get(off..off + 2) {
            b.copy_from_slice(s);
        }
        u16::from_be_bytes(b)
    }
    pub(crate) fn set_u16(&mut self, off: usize, v: u16) {
        if let Some(s) = self.0.get_mut(off..off + 2) {
            s.copy_from_slice(&v.to_be_bytes());
        }
    }
    pub(crate) fn u32_at(&self, off: usize) -> u32 {
        let mut b = [0u8; 4];
        if let Some(s) = self.0.get(off..off + 4) {
            b.copy_from_slice(s);
        }
        u32::from_be_bytes(b)
    }
    pub(crate) fn set_u32(&mut self, off: usize, v: u32) {
        if let Some(s) = self.0.get_mut(off..off + 4) {
            s.copy_from_slice(&v.to_be_bytes());
        }
    }
    pub(crate) fn u64_at(&self, off: usize) -> u64 {
        let mut b = [0u8; 8];
        if let Some(s) = self.0.get(off..off + 8) {
            b.copy_from_slice(s);
        }
        u64::from_be_bytes(b)
    }
    pub(crate) fn set_u64(&mut self, off: usize, v: u64) {
        if let Some(s) = self.0.get_mut(off..off + 8) {
            s.copy_from_slice(&v.to_be_bytes());
        }
    }
    pub(crate) fn bytes<const N: usize>(&self, off: usize) -> [u8; N] {
        let mut b = [0u8; N];
        if let Some(s) = self.0.get(off..off + N) {
            b.copy_from_slice(s);
        }
        b
    }
    pub(crate) fn set_bytes(&mut self, off: usize, v: &[u8]) {
        if let Some(s) = self.0.get_mut(off..off + v.len()) {
            s.copy_from_slice(v);
        }
    }
}

/// Number of padding bytes that bring `len` to a multiple of 4 (§11.2.3).
pub const fn pad_len(len: usize) -> usize {
    (4 - (len % 4)) % 4
}

/// AHS types (§11.2.2.2).
pub mod ahs_type {
    /// Extended CDB AHS (§11.2.2.3).
    pub const EXTENDED_CDB: u8 = 1;
    /// Bidirectional Read Expected Data Transfer Length AHS (§11.2.2.4).
    pub const BIDI_READ_EDTL: u8 = 2;
}

/// One Additional Header Segment (§11.2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ahs<'a> {
    /// AHSType.
    pub ahs_type: u8,
    /// The AHS-Specific byte followed by AHSLength-1 bytes of data (unpadded).
    pub specific: &'a [u8],
}

/// Iterate the AHSs in the AHS area; `Err` on a truncated AHS.
pub fn parse_ahs(mut area: &[u8]) -> Result<Vec<Ahs<'_>>, &'static str> {
    let mut out = Vec::new();
    while !area.is_empty() {
        let [l0, l1, ahs_type, ..] = *area else {
            return Err("truncated AHS header");
        };
        let len = u16::from_be_bytes([l0, l1]) as usize;
        let body = area
            .get(3..3 + len)
            .ok_or("AHS longer than TotalAHSLength")?;
        out.push(Ahs {
            ahs_type,
            specific: body,
        });
        let total = 3 + len + pad_len(3 + len);
        area = area.get(total..).unwrap_or(&[]);
        if out.len() > 64 {
            return Err("too many AHSs");
        }
    }
    Ok(out)
}

/// Append one AHS (type, specific byte + data) with padding.
pub(crate) fn push_ahs(out: &mut Vec<u8>, ahs_type: u8, specific_and_data: &[u8]) {
    let len = specific_and_data.len();
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.push(ahs_type);
    out.extend_from_slice(specific_and_data);
    out.resize(out.len() + pad_len(3 + len), 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opcodes_map_both_ways() {
        for v in 0u8..=0x3f {
            if let Some(op) = Opcode::from_u8(v) {
                assert_eq!(op as u8, v);
                assert_eq!(op.is_initiator(), v < 0x20);
            }
        }
        assert_eq!(Opcode::from_u8(0x07), None);
        assert_eq!(Opcode::from_u8(0x1c), None);
        assert_eq!(Opcode::from_u8(0x3c), None);
    }

    #[test]
    fn ahs_roundtrip_and_truncation() {
        let mut v = Vec::new();
        push_ahs(&mut v, ahs_type::EXTENDED_CDB, &[0, 1, 2, 3, 4]);
        push_ahs(&mut v, ahs_type::BIDI_READ_EDTL, &[0, 0, 0, 2, 0]);
        assert_eq!(v.len() % 4, 0);
        let a = parse_ahs(&v).unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].specific, &[0, 1, 2, 3, 4]);
        assert_eq!(a[1].ahs_type, 2);
        assert!(parse_ahs(&v[..5]).is_err());
        assert!(parse_ahs(&[0]).is_err());
    }

    #[test]
    fn padding() {
        assert_eq!(pad_len(0), 0);
        assert_eq!(pad_len(1), 3);
        assert_eq!(pad_len(4), 0);
        assert_eq!(pad_len(7), 1);
    }
}
