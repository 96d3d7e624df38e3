//! Text key=value data (RFC 7143 §6.1): UTF-8 `key=value` strings, each
//! terminated by NUL, kept in order; and reassembly of text split across PDUs
//! with the C (continue) bit (§6.2, §11.10.2, §11.12.2).

use bytes::{BufMut, BytesMut};

use crate::error::TextError;

/// Longest key name (§6.1).
pub const MAX_KEY_LEN: usize = 63;
/// Longest value for most keys (§6.1: 255 unless the key says otherwise).
pub const MAX_VALUE_LEN: usize = 255;
/// Longest value for keys allowed large values (CHAP binary values, §12.1.3).
pub const MAX_LARGE_VALUE_LEN: usize = 8192;
/// Default bound on total text per negotiation sequence.
pub const DEFAULT_MAX_TEXT_LEN: usize = 64 * 1024;
/// Bound on the number of pairs in one negotiation sequence.
pub const MAX_PAIRS: usize = 1024;

/// Ordered list of key=value pairs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TextPairs(pub Vec<(String, String)>);

/// The value length limit for `key`.
pub fn max_value_len(key: &str) -> usize {
    if key.starts_with("CHAP_") || key.starts_with("X-") || key.starts_with("X#") {
        MAX_LARGE_VALUE_LEN
    } else {
        MAX_VALUE_LEN
    }
}

fn check_key(key: &str) -> Result<(), TextError> {
    if key.is_empty() {
        return Err(TextError::EmptyKey);
    }
    if key.len() > MAX_KEY_LEN {
        return Err(TextError::KeyTooLong);
    }
    // standard-label / key-name characters (§6.1): letters, digits, '.', '-', '+', '@', '_', '#'.
    if !key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'+' | b'@' | b'_' | b'#'))
    {
        return Err(TextError::InvalidKey);
    }
    Ok(())
}

fn check_value(key: &str, value: &str) -> Result<(), TextError> {
    let limit = max_value_len(key);
    if value.len() > limit {
        return Err(TextError::ValueTooLong {
            key: key.to_string(),
            limit,
        });
    }
    Ok(())
}

impl TextPairs {
    /// Empty list.
    pub fn new() -> Self {
        TextPairs(Vec::new())
    }

    /// Parse a complete text data segment. Empty strings (extra NULs, e.g.
    /// padding) are skipped; the final string must be NUL-terminated.
    pub fn parse(data: &[u8]) -> Result<Self, TextError> {
        if data.len() > DEFAULT_MAX_TEXT_LEN {
            return Err(TextError::TooLarge(data.len()));
        }
        let mut pairs = Vec::new();
        let mut rest = data;
        while !rest.is_empty() {
            let nul = rest
                .iter()
                .position(|&b| b == 0)
                .ok_or(TextError::Unterminated)?;
            let (item, tail) = rest.split_at(nul);
            rest = tail.get(1..).unwrap_or(&[]);
            if item.is_empty() {
                continue;
            }
            let s = std::str::from_utf8(item).map_err(|_| TextError::NotUtf8)?;
            let (k, v) = s.split_once('=').ok_or(TextError::MissingEquals)?;
            check_key(k)?;
            check_value(k, v)?;
            if pairs.len() >= MAX_PAIRS {
                return Err(TextError::TooManyPairs);
            }
            pairs.push((k.to_string(), v.to_string()));
        }
        Ok(TextPairs(pairs))
    }

    /// Append a pair (validated).
    pub fn push(&mut self, key: &str, value: impl Into<String>) -> Result<(), TextError> {
        let value = value.into();
        check_key(key)?;
        check_value(key, &value)?;
        if self.0.len() >= MAX_PAIRS {
            return Err(TextError::TooManyPairs);
        }
        self.0.push((key.to_string(), value));
        Ok(())
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// All values of `key` in order (SendTargets responses repeat keys).
    pub fn get_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Iterate the pairs.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Error on the first key appearing twice (§6.2 forbids it in negotiations).
    pub fn check_unique(&self) -> Result<(), TextError> {
        for (i, (k, _)) in self.0.iter().enumerate() {
            if self.0.iter().skip(i + 1).any(|(k2, _)| k2 == k) {
                return Err(TextError::DuplicateKey(k.clone()));
            }
        }
        Ok(())
    }

    /// Append `key=value\0` for each pair.
    pub fn serialize_into(&self, out: &mut BytesMut) {
        for (k, v) in &self.0 {
            out.reserve(k.len() + v.len() + 2);
            out.put_slice(k.as_bytes());
            out.put_u8(b'=');
            out.put_slice(v.as_bytes());
            out.put_u8(0);
        }
    }

    /// Serialized bytes.
    pub fn to_bytes(&self) -> bytes::Bytes {
        let mut b = BytesMut::new();
        self.serialize_into(&mut b);
        b.freeze()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for TextPairs {
    fn from_iter<T: IntoIterator<Item = (K, V)>>(iter: T) -> Self {
        TextPairs(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

/// Reassembles text that spans PDUs with the C bit (§6.2): feed each PDU's data
/// and C bit; a complete list is returned once a PDU arrives with C clear.
#[derive(Debug, Clone)]
pub struct TextAssembler {
    buf: BytesMut,
    limit: usize,
}

impl Default for TextAssembler {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_TEXT_LEN)
    }
}

impl TextAssembler {
    /// With a total size bound.
    pub fn new(limit: usize) -> Self {
        TextAssembler {
            buf: BytesMut::new(),
            limit,
        }
    }

    /// Add one PDU's data. `Ok(None)` while C is set.
    pub fn push(&mut self, data: &[u8], continue_: bool) -> Result<Option<TextPairs>, TextError> {
        let total = self.buf.len() + data.len();
        if total > self.limit {
            self.buf.clear();
            return Err(TextError::TooLarge(total));
        }
        self.buf.extend_from_slice(data);
        if continue_ {
            return Ok(None);
        }
        let whole = self.buf.split();
        TextPairs::parse(&whole).map(Some)
    }

    /// True when a partial text is buffered.
    pub fn in_progress(&self) -> bool {
        !self.buf.is_empty()
    }
}

/// Split serialized text into chunks of at most `max` bytes for PDUs with the
/// C bit set on all but the last (§6.2). `max` of 0 is treated as 1.
pub fn split_text(data: &bytes::Bytes, max: usize) -> Vec<bytes::Bytes> {
    let max = max.max(1);
    if data.is_empty() {
        return vec![bytes::Bytes::new()];
    }
    let mut out = Vec::with_capacity(data.len().div_ceil(max));
    let mut off = 0;
    while off < data.len() {
        let end = (off + max).min(data.len());
        out.push(data.slice(off..end));
        off = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_serialize() {
        let raw = b"InitiatorName=iqn.a:b\0SessionType=Normal\0\0";
        let p = TextPairs::parse(raw).unwrap();
        assert_eq!(p.get("InitiatorName"), Some("iqn.a:b"));
        assert_eq!(p.len(), 2);
        assert_eq!(&p.to_bytes()[..], &raw[..raw.len() - 1]);
    }

    #[test]
    fn value_may_contain_equals_and_be_empty() {
        let p = TextPairs::parse(b"X-a=b=c\0K=\0").unwrap();
        assert_eq!(p.get("X-a"), Some("b=c"));
        assert_eq!(p.get("K"), Some(""));
    }

    #[test]
    fn errors() {
        assert_eq!(TextPairs::parse(b"abc\0"), Err(TextError::MissingEquals));
        assert_eq!(TextPairs::parse(b"a=b"), Err(TextError::Unterminated));
        assert_eq!(TextPairs::parse(b"=b\0"), Err(TextError::EmptyKey));
        assert_eq!(TextPairs::parse(b"a b=c\0"), Err(TextError::InvalidKey));
        assert_eq!(TextPairs::parse(b"a=\xff\0"), Err(TextError::NotUtf8));
        let long_key = format!("{}=v\0", "k".repeat(64));
        assert_eq!(
            TextPairs::parse(long_key.as_bytes()),
            Err(TextError::KeyTooLong)
        );
        let long_val = format!("k={}\0", "v".repeat(256));
        assert!(matches!(
            TextPairs::parse(long_val.as_bytes()),
            Err(TextError::ValueTooLong { .. })
        ));
        let chap = format!("CHAP_C=0x{}\0", "a".repeat(1000));
        assert!(TextPairs::parse(chap.as_bytes()).is_ok());
        let dup = TextPairs::parse(b"a=1\0a=2\0").unwrap();
        assert_eq!(dup.check_unique(), Err(TextError::DuplicateKey("a".into())));
    }

    #[test]
    fn reassembly_across_pdus() {
        let text = b"TargetName=iqn.x\0TargetAddress=127.0.0.1:3260,1\0";
        let mut asm = TextAssembler::default();
        let (a, b) = text.split_at(13);
        assert_eq!(asm.push(a, true).unwrap(), None);
        assert!(asm.in_progress());
        let p = asm.push(b, false).unwrap().unwrap();
        assert_eq!(p.get("TargetAddress"), Some("127.0.0.1:3260,1"));
        assert!(!asm.in_progress());
        let mut small = TextAssembler::new(10);
        assert!(matches!(
            small.push(text, true),
            Err(TextError::TooLarge(_))
        ));
    }

    #[test]
    fn split() {
        let d = bytes::Bytes::from_static(b"0123456789");
        let parts = split_text(&d, 4);
        assert_eq!(parts.len(), 3);
        assert_eq!(&parts[2][..], b"89");
        assert_eq!(split_text(&bytes::Bytes::new(), 4).len(), 1);
    }

    proptest::proptest! {
        #[test]
        fn roundtrip(pairs in proptest::collection::vec(("[A-Za-z][A-Za-z0-9.+@_-]{0,62}", "[^\u{0}]{0,60}"), 0..20)) {
            let p: TextPairs = pairs.into_iter().collect();
            let bytes = p.to_bytes();
            proptest::prop_assume!(bytes.len() <= DEFAULT_MAX_TEXT_LEN);
            let back = TextPairs::parse(&bytes).unwrap();
            proptest::prop_assert_eq!(back, p);
        }

        #[test]
        fn parse_never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = TextPairs::parse(&data);
        }
    }
}
