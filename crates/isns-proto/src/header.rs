//! iSNSP PDU header, RFC 4171 §5.1.

use crate::{Error, FunctionId, MAX_PDU_PAYLOAD};

/// Length of the fixed header.
pub const HEADER_LEN: usize = 12;
/// The only iSNSP version (§5.1.1).
pub const ISNSP_VERSION: u16 = 1;

/// iSNSP flags (§5.1.4). Bit 16 of the header word is the most significant bit of the 16-bit field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Flags(pub u16);

impl Flags {
    /// Sender is the iSNS client.
    pub const CLIENT: Flags = Flags(0x8000);
    /// Sender is the iSNS server.
    pub const SERVER: Flags = Flags(0x4000);
    /// An authentication block is present.
    pub const AUTH: Flags = Flags(0x2000);
    /// Replace flag (DevAttrReg only).
    pub const REPLACE: Flags = Flags(0x1000);
    /// Last PDU of the message.
    pub const LAST_PDU: Flags = Flags(0x0800);
    /// First PDU of the message.
    pub const FIRST_PDU: Flags = Flags(0x0400);

    /// Whether all bits of `other` are set.
    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        Flags(self.0 | rhs.0)
    }
}

/// The 12-byte header of one iSNSP PDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub version: u16,
    pub function: FunctionId,
    /// Length of the payload that follows the header (§5.1.3).
    pub pdu_length: u16,
    pub flags: Flags,
    /// Transaction ID (§5.1.5).
    pub xid: u16,
    /// Sequence ID of this PDU within the message (§5.1.6).
    pub seq: u16,
}

impl Header {
    /// Decode a header; checks the version and the payload length limit.
    pub fn decode(buf: &[u8]) -> Result<Header, Error> {
        let b: &[u8; HEADER_LEN] = buf
            .get(..HEADER_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or(Error::Truncated {
                need: HEADER_LEN,
                have: buf.len(),
            })?;
        let word = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        let h = Header {
            version: word(0),
            function: FunctionId(word(2)),
            pdu_length: word(4),
            flags: Flags(word(6)),
            xid: word(8),
            seq: word(10),
        };
        if h.version != ISNSP_VERSION {
            return Err(Error::Version(h.version));
        }
        let len = usize::from(h.pdu_length);
        if len > MAX_PDU_PAYLOAD || !len.is_multiple_of(4) {
            return Err(Error::PduLength(len));
        }
        Ok(h)
    }

    /// Encode into 12 bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        for (i, w) in [
            self.version,
            self.function.0,
            self.pdu_length,
            self.flags.0,
            self.xid,
            self.seq,
        ]
        .into_iter()
        .enumerate()
        {
            out[2 * i..2 * i + 2].copy_from_slice(&w.to_be_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_limits() {
        let h = Header {
            version: 1,
            function: FunctionId::DEV_ATTR_REG,
            pdu_length: 8,
            flags: Flags::CLIENT | Flags::FIRST_PDU | Flags::LAST_PDU,
            xid: 7,
            seq: 0,
        };
        assert_eq!(Header::decode(&h.encode()), Ok(h));
        let mut bad = h.encode();
        bad[1] = 2;
        assert_eq!(Header::decode(&bad), Err(Error::Version(2)));
        let mut odd = h.encode();
        odd[5] = 3;
        assert_eq!(Header::decode(&odd), Err(Error::PduLength(3)));
        assert!(matches!(
            Header::decode(&[0; 5]),
            Err(Error::Truncated { .. })
        ));
    }
}
