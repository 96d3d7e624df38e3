//! Identity of a logical unit: INQUIRY strings, unit serial number and the
//! designators of the Device Identification VPD page (SPC-4 §7.8.6).

/// T10 vendor identification (SPC-4 §4.4.1: ASCII, space padded).
pub const VENDOR: &[u8; 8] = b"PORTSHFT";
/// Product identification.
pub const PRODUCT: &[u8; 16] = b"portshift disk  ";
/// Product revision level.
pub const REVISION: &[u8; 4] = b"0001";

/// Longest iSCSI name accepted (RFC 7143 §4.2.7.1: 223 bytes).
pub const MAX_NAME_LEN: usize = 223;

/// Errors building an [`Identity`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("target name is {0} bytes; iSCSI names are at most {MAX_NAME_LEN}")]
    NameTooLong(usize),
    #[error("target name is empty")]
    EmptyName,
}

/// Stable identity of one LU of one target, derived from (IQN, LUN).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub target_name: String,
    pub lun: u16,
    /// Unit serial number (VPD 0x80): 16 upper-case hex digits.
    pub serial: String,
    /// NAA IEEE locally assigned (NAA 3) identifier, 8 bytes (SPC-4 §7.8.6.6.2).
    pub naa: [u8; 8],
}

/// FNV-1a, 64 bit: a fixed, version-independent hash for identifiers.
fn fnv1a64(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in *p {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

impl Identity {
    /// Identity of LU `lun` of target `target_name`.
    pub fn new(target_name: &str, lun: u16) -> Result<Identity, IdentityError> {
        if target_name.is_empty() {
            return Err(IdentityError::EmptyName);
        }
        if target_name.len() > MAX_NAME_LEN {
            return Err(IdentityError::NameTooLong(target_name.len()));
        }
        let h = fnv1a64(&[target_name.as_bytes(), b"\0", &lun.to_be_bytes()]);
        let naa = ((0x3u64 << 60) | (h & 0x0FFF_FFFF_FFFF_FFFF)).to_be_bytes();
        Ok(Identity {
            target_name: target_name.to_owned(),
            lun,
            serial: format!("{h:016X}"),
            naa,
        })
    }

    /// Designation descriptors for VPD page 0x83, as seen through the target
    /// port of portal group `tpgt` (SPC-4 §7.8.6.1).
    pub fn designators(&self, tpgt: u16) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + 2 * self.target_name.len());
        // NAA, binary, associated with the logical unit.
        push_designator(&mut out, 0x01, 0x03, &self.naa);
        // T10 vendor ID based, ASCII, logical unit.
        let mut t10 = VENDOR.to_vec();
        t10.extend_from_slice(self.serial.as_bytes());
        push_designator(&mut out, 0x02, 0x01, &t10);
        // Relative target port identifier (PIV, iSCSI, target port).
        let rtpi = relative_target_port(tpgt);
        push_designator(&mut out, 0x51, 0x94, &[0, 0, (rtpi >> 8) as u8, rtpi as u8]);
        // SCSI name string of the target port: "<iqn>,t,0x<tpgt>".
        let port = format!("{},t,0x{tpgt:04x}", self.target_name);
        push_designator(&mut out, 0x53, 0x98, &name_string(&port));
        // SCSI name string of the target device.
        push_designator(&mut out, 0x53, 0xA8, &name_string(&self.target_name));
        out
    }
}

/// Relative target port identifier of portal group `tpgt`: TPGT + 1, as 0
/// is reserved (SPC-4 §7.8.6.7).
pub fn relative_target_port(tpgt: u16) -> u16 {
    tpgt.saturating_add(1)
}

/// SCSI name string: UTF-8, null terminated, padded to a multiple of four
/// (SPC-4 §7.8.6.11).
fn name_string(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    while !v.len().is_multiple_of(4) {
        v.push(0);
    }
    v
}

/// Append one designation descriptor; `b0` = protocol id + code set,
/// `b1` = PIV + association + designator type.
fn push_designator(out: &mut Vec<u8>, b0: u8, b1: u8, value: &[u8]) {
    out.extend_from_slice(&[b0, b1, 0, value.len() as u8]);
    out.extend_from_slice(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_distinct() {
        let a = Identity::new("iqn.2024-01.org.example:disk", 0).unwrap();
        let b = Identity::new("iqn.2024-01.org.example:disk", 0).unwrap();
        let c = Identity::new("iqn.2024-01.org.example:disk", 1).unwrap();
        assert_eq!(a, b);
        assert_ne!(a.naa, c.naa);
        assert_ne!(a.serial, c.serial);
        assert_eq!(a.naa[0] >> 4, 3);
        assert_eq!(a.serial.len(), 16);
    }

    #[test]
    fn name_limits() {
        assert_eq!(Identity::new("", 0), Err(IdentityError::EmptyName));
        let long = "a".repeat(224);
        assert_eq!(
            Identity::new(&long, 0),
            Err(IdentityError::NameTooLong(224))
        );
        let max = "a".repeat(223);
        let id = Identity::new(&max, 0).unwrap();
        // Every designator fits its one-byte length.
        let d = id.designators(u16::MAX);
        let mut at = 0;
        let mut n = 0;
        while at < d.len() {
            at += 4 + usize::from(d[at + 3]);
            n += 1;
        }
        assert_eq!((at, n), (d.len(), 5));
    }

    #[test]
    fn designator_layout() {
        let id = Identity::new("iqn.x", 3).unwrap();
        let d = id.designators(1);
        assert_eq!(&d[0..4], &[0x01, 0x03, 0x00, 0x08]);
        assert_eq!(&d[4..12], &id.naa);
        let t10_len = usize::from(d[15]);
        assert_eq!(&d[16..24], VENDOR);
        let rtp = 16 + t10_len;
        assert_eq!(&d[rtp..rtp + 8], &[0x51, 0x94, 0, 4, 0, 0, 0, 2]);
        let port = rtp + 8;
        assert_eq!(&d[port..port + 2], &[0x53, 0x98]);
        let plen = usize::from(d[port + 3]);
        assert_eq!(plen % 4, 0);
        assert_eq!(&d[port + 4..port + 4 + 15], b"iqn.x,t,0x0001\0");
    }
}
