//! TLV attributes, RFC 4171 §5.3, with the value encodings of §6.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use crate::{Error, MAX_ATTR_LEN, MAX_ATTRIBUTES};

/// Size of the tag + length words in front of every value.
pub const TL_LEN: usize = 8;
/// UDP flag in a TCP/UDP port attribute (§6.3.2): set for UDP, clear for TCP.
pub const PORT_UDP_FLAG: u32 = 0x0001_0000;

/// One attribute: tag and raw value (already padded to a multiple of 4, empty for NIL).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Attribute {
    pub tag: u32,
    pub value: Vec<u8>,
}

impl Attribute {
    /// A NIL (zero-length) attribute, used in queries to name a wanted attribute (§5.6.5.2).
    pub fn nil(tag: u32) -> Attribute {
        Attribute {
            tag,
            value: Vec::new(),
        }
    }

    /// A NUL-terminated UTF-8 string padded to 4 bytes (§5.4).
    pub fn string(tag: u32, s: &str) -> Attribute {
        let mut value = s.as_bytes().to_vec();
        value.push(0);
        while !value.len().is_multiple_of(4) {
            value.push(0);
        }
        Attribute { tag, value }
    }

    /// A 32-bit unsigned integer.
    pub fn u32(tag: u32, v: u32) -> Attribute {
        Attribute {
            tag,
            value: v.to_be_bytes().to_vec(),
        }
    }

    /// A 64-bit unsigned integer (e.g. Timestamp, §6.2.4).
    pub fn u64(tag: u32, v: u64) -> Attribute {
        Attribute {
            tag,
            value: v.to_be_bytes().to_vec(),
        }
    }

    /// A 16-byte IP address; IPv4 is stored IPv4-mapped (§6.3.1).
    pub fn ip(tag: u32, ip: IpAddr) -> Attribute {
        let v6 = match ip {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        };
        Attribute {
            tag,
            value: v6.octets().to_vec(),
        }
    }

    /// A TCP port attribute (§6.3.2, UDP flag clear).
    pub fn tcp_port(tag: u32, port: u16) -> Attribute {
        Attribute::u32(tag, u32::from(port))
    }

    /// Whether the attribute is NIL (zero-length value).
    pub fn is_nil(&self) -> bool {
        self.value.is_empty()
    }

    /// The value as a string, without terminating NULs.
    pub fn as_str(&self) -> Option<&str> {
        let end = self
            .value
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.value.len());
        std::str::from_utf8(self.value.get(..end)?).ok()
    }

    /// The value as a 32-bit integer.
    pub fn as_u32(&self) -> Option<u32> {
        let b: [u8; 4] = self.value.as_slice().try_into().ok()?;
        Some(u32::from_be_bytes(b))
    }

    /// The value as a 64-bit integer.
    pub fn as_u64(&self) -> Option<u64> {
        let b: [u8; 8] = self.value.as_slice().try_into().ok()?;
        Some(u64::from_be_bytes(b))
    }

    /// The value as an IP address; IPv4-mapped addresses become IPv4.
    pub fn as_ip(&self) -> Option<IpAddr> {
        let b: [u8; 16] = self.value.as_slice().try_into().ok()?;
        Some(IpAddr::V6(Ipv6Addr::from(b)).to_canonical())
    }

    /// The TCP port of a port attribute; `None` for UDP or a malformed value.
    pub fn as_tcp_port(&self) -> Option<u16> {
        let v = self.as_u32()?;
        if v & PORT_UDP_FLAG != 0 {
            return None;
        }
        u16::try_from(v & 0xffff).ok()
    }

    /// Append the TLV encoding to `out`. Values are padded to 4 bytes.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let padded = self.value.len().div_ceil(4) * 4;
        out.extend_from_slice(&self.tag.to_be_bytes());
        // Values are built by the constructors above or decoded with MAX_ATTR_LEN, so fit in u32.
        out.extend_from_slice(&u32::try_from(padded).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(&self.value);
        out.resize(out.len() + (padded - self.value.len()), 0);
    }
}

/// Append the TLV encoding of each of `attrs` to `out`, in order (§5.5).
pub fn encode_attrs<'a>(attrs: impl IntoIterator<Item = &'a Attribute>, out: &mut Vec<u8>) {
    for a in attrs {
        a.encode(out);
    }
}

/// A portal address from an (IP, port) attribute pair.
pub fn socket_addr(ip: &Attribute, port: &Attribute) -> Option<SocketAddr> {
    Some(SocketAddr::new(ip.as_ip()?, port.as_tcp_port()?))
}

/// Decode a sequence of TLV attributes filling `buf` exactly (§5.3).
pub fn decode_attrs(mut buf: &[u8]) -> Result<Vec<Attribute>, Error> {
    let mut attrs = Vec::new();
    while !buf.is_empty() {
        if attrs.len() >= MAX_ATTRIBUTES {
            return Err(Error::TooManyAttributes(MAX_ATTRIBUTES));
        }
        let (tl, rest) = buf.split_first_chunk::<TL_LEN>().ok_or(Error::Truncated {
            need: TL_LEN,
            have: buf.len(),
        })?;
        let tag = u32::from_be_bytes([tl[0], tl[1], tl[2], tl[3]]);
        let len = u32::from_be_bytes([tl[4], tl[5], tl[6], tl[7]]);
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if !len.is_multiple_of(4) || len > MAX_ATTR_LEN {
            return Err(Error::AttrLength { tag, len });
        }
        let value = rest.get(..len).ok_or(Error::Truncated {
            need: len,
            have: rest.len(),
        })?;
        attrs.push(Attribute {
            tag,
            value: value.to_vec(),
        });
        buf = rest.get(len..).unwrap_or_default();
    }
    Ok(attrs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tag;
    use proptest::prelude::*;

    #[test]
    fn typed_values() {
        let s = Attribute::string(tag::ISCSI_NAME, "iqn.a");
        assert_eq!(s.value, b"iqn.a\0\0\0");
        assert_eq!(s.as_str(), Some("iqn.a"));
        let empty = Attribute::string(tag::ENTITY_IDENTIFIER, "");
        assert_eq!(empty.value.len(), 4);
        assert_eq!(empty.as_str(), Some(""));
        let ip = Attribute::ip(tag::PORTAL_IP_ADDRESS, "127.0.0.2".parse().unwrap());
        assert_eq!(&ip.value[10..], &[0xff, 0xff, 127, 0, 0, 2]);
        assert_eq!(ip.as_ip(), Some("127.0.0.2".parse().unwrap()));
        let port = Attribute::tcp_port(tag::PORTAL_PORT, 3260);
        assert_eq!(port.as_tcp_port(), Some(3260));
        assert_eq!(
            Attribute::u32(tag::PORTAL_PORT, 3260 | PORT_UDP_FLAG).as_tcp_port(),
            None
        );
    }

    #[test]
    fn rejects_bad_lengths() {
        let mut buf = Vec::new();
        Attribute::u32(1, 5).encode(&mut buf);
        buf[7] = 3;
        assert!(matches!(decode_attrs(&buf), Err(Error::AttrLength { .. })));
        buf[7] = 8;
        assert!(matches!(decode_attrs(&buf), Err(Error::Truncated { .. })));
        assert!(matches!(
            decode_attrs(&buf[..5]),
            Err(Error::Truncated { .. })
        ));
    }

    proptest! {
        #[test]
        fn attrs_round_trip(list in proptest::collection::vec(
            (any::<u32>(), proptest::collection::vec(any::<[u8; 4]>(), 0..8)), 0..16)) {
            let attrs: Vec<Attribute> = list.into_iter()
                .map(|(tag, words)| Attribute { tag, value: words.concat() })
                .collect();
            let mut buf = Vec::new();
            encode_attrs(&attrs, &mut buf);
            prop_assert_eq!(decode_attrs(&buf).unwrap(), attrs);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_attrs(&bytes);
        }
    }
}
