//! iSNSP messages, RFC 4171 §5.6.1 (requests) and §5.7.1 (responses).
//!
//! A request payload is `Source attribute, Message Key attributes, Delimiter,
//! Operating attributes`; a response payload is `Status code, Message Key
//! attributes, Delimiter, Operating attributes`. [`Message`] keeps the payload
//! attributes in wire order and offers those views.

use crate::attr::{self, Attribute};
use crate::header::{Flags, HEADER_LEN, Header, ISNSP_VERSION};
use crate::tag::DELIMITER;
use crate::{Error, FunctionId, MAX_PDU_PAYLOAD, Status};

/// One iSNSP message (possibly spanning several PDUs on the wire).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub function: FunctionId,
    /// Sender, replace and authentication flags; first/last PDU flags are set by [`Message::encode_into`].
    pub flags: Flags,
    pub xid: u16,
    /// Status code; present exactly when `function` is a response.
    pub status: Option<Status>,
    /// Payload attributes in wire order, including source and delimiter.
    pub attrs: Vec<Attribute>,
}

impl Message {
    /// A client request: `source`, `key`, delimiter, `operating` (§5.6.1).
    pub fn request(
        function: FunctionId,
        xid: u16,
        source: Attribute,
        key: Vec<Attribute>,
        operating: Vec<Attribute>,
    ) -> Message {
        let mut attrs = Vec::with_capacity(key.len() + operating.len() + 2);
        attrs.push(source);
        attrs.extend(key);
        attrs.push(Attribute::nil(DELIMITER));
        attrs.extend(operating);
        Message {
            function,
            flags: Flags::CLIENT,
            xid,
            status: None,
            attrs,
        }
    }

    /// A server response to `request`: status, `key`, delimiter, `operating` (§5.7.1).
    pub fn response(
        request: &Message,
        status: Status,
        key: Vec<Attribute>,
        operating: Vec<Attribute>,
    ) -> Message {
        let mut attrs = key;
        attrs.push(Attribute::nil(DELIMITER));
        attrs.extend(operating);
        Message {
            function: request.function.response(),
            flags: Flags::SERVER,
            xid: request.xid,
            status: Some(status),
            attrs,
        }
    }

    /// An error response carrying only the status code (as open-isns sends).
    pub fn error_response(function: FunctionId, xid: u16, status: Status) -> Message {
        Message {
            function: function.response(),
            flags: Flags::SERVER,
            xid,
            status: Some(status),
            attrs: Vec::new(),
        }
    }

    fn delimiter_pos(&self) -> Option<usize> {
        self.attrs.iter().position(|a| a.tag == DELIMITER)
    }

    fn key_start(&self) -> usize {
        // Requests start with the source attribute unless the payload opens with the delimiter.
        match self.attrs.first() {
            Some(first) if self.status.is_none() && first.tag != DELIMITER => 1,
            _ => 0,
        }
    }

    /// The source attribute of a request (§5.6.1), if any.
    pub fn source(&self) -> Option<&Attribute> {
        if self.key_start() == 1 {
            self.attrs.first()
        } else {
            None
        }
    }

    /// Message key attributes (between source and delimiter).
    pub fn key(&self) -> &[Attribute] {
        let start = self.key_start();
        let end = self.delimiter_pos().unwrap_or(self.attrs.len()).max(start);
        self.attrs.get(start..end).unwrap_or_default()
    }

    /// Operating attributes (after the delimiter).
    pub fn operating(&self) -> &[Attribute] {
        match self.delimiter_pos() {
            Some(p) => self.attrs.get(p + 1..).unwrap_or_default(),
            None => &[],
        }
    }

    /// The payload bytes: status (responses) then the attributes.
    pub fn payload(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_payload(&mut out);
        out
    }

    /// Appends the payload bytes ([`Message::payload`]) to `out`.
    fn encode_payload(&self, out: &mut Vec<u8>) {
        if let Some(s) = self.status {
            out.extend_from_slice(&s.0.to_be_bytes());
        }
        attr::encode_attrs(&self.attrs, out);
    }

    /// Appends the message to `out` as one or more PDUs (header + payload each), the payload
    /// split at `MAX_PDU_PAYLOAD`, sequence IDs from 0, the first and last PDU flagged
    /// (§5.1.6). The status and attributes are encoded straight after the first header; only
    /// a message spanning several PDUs is moved once more, to make room for their headers.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.resize(start + HEADER_LEN, 0);
        self.encode_payload(out);
        let len = out.len() - start - HEADER_LEN;
        if len <= MAX_PDU_PAYLOAD {
            if let Some(h) = out.get_mut(start..start + HEADER_LEN) {
                h.copy_from_slice(&self.pdu_header(len, 0, true, true).encode());
            }
            return;
        }
        let payload = out.split_off(start + HEADER_LEN);
        out.truncate(start);
        let count = payload.len().div_ceil(MAX_PDU_PAYLOAD);
        out.reserve(payload.len() + count * HEADER_LEN);
        for (i, chunk) in payload.chunks(MAX_PDU_PAYLOAD).enumerate() {
            let header = self.pdu_header(chunk.len(), i, i == 0, i + 1 == count);
            out.extend_from_slice(&header.encode());
            out.extend_from_slice(chunk);
        }
    }

    /// The header of PDU number `seq` of this message, carrying `len` payload bytes.
    fn pdu_header(&self, len: usize, seq: usize, first: bool, last: bool) -> Header {
        let mut flags = Flags(self.flags.0 & !(Flags::FIRST_PDU.0 | Flags::LAST_PDU.0));
        if first {
            flags = flags | Flags::FIRST_PDU;
        }
        if last {
            flags = flags | Flags::LAST_PDU;
        }
        Header {
            version: ISNSP_VERSION,
            function: self.function,
            // At most MAX_PDU_PAYLOAD (< 65536) bytes per PDU.
            pdu_length: u16::try_from(len).unwrap_or(u16::MAX),
            flags,
            xid: self.xid,
            seq: u16::try_from(seq).unwrap_or(u16::MAX),
        }
    }

    /// The message as PDUs in one buffer ([`Message::encode_into`]).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Decode a complete (reassembled) payload.
    pub fn decode(
        function: FunctionId,
        flags: Flags,
        xid: u16,
        payload: &[u8],
    ) -> Result<Message, Error> {
        let (status, rest) = if function.is_response() {
            let (s, rest) = payload
                .split_first_chunk::<4>()
                .ok_or(Error::MissingStatus)?;
            (Some(Status(u32::from_be_bytes(*s))), rest)
        } else {
            (None, payload)
        };
        let attrs = attr::decode_attrs(rest)?;
        Ok(Message {
            function,
            flags,
            xid,
            status,
            attrs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tag;
    use proptest::prelude::*;

    fn decode_all(bytes: &[u8]) -> Message {
        let mut buf = bytes::BytesMut::from(bytes);
        let m = crate::MessageDecoder::new()
            .decode(&mut buf)
            .unwrap()
            .unwrap();
        assert!(buf.is_empty());
        m
    }

    #[test]
    fn request_views() {
        let m = Message::request(
            FunctionId::DEV_ATTR_QRY,
            3,
            Attribute::string(tag::ISCSI_NAME, "iqn.i"),
            vec![Attribute::string(tag::ISCSI_NAME, "iqn.t")],
            vec![Attribute::nil(tag::PG_TAG)],
        );
        assert_eq!(m.source().and_then(|a| a.as_str()), Some("iqn.i"));
        assert_eq!(m.key().len(), 1);
        assert_eq!(m.operating(), &[Attribute::nil(tag::PG_TAG)]);
        assert_eq!(decode_all(&m.to_bytes()), m);
        let r = Message::response(&m, Status::NO_SUCH_ENTRY, m.key().to_vec(), vec![]);
        assert!(r.source().is_none());
        assert_eq!(r.key().len(), 1);
        assert_eq!(decode_all(&r.to_bytes()), r);
    }

    #[test]
    fn large_message_spans_pdus() {
        let ops: Vec<Attribute> = (0..3000)
            .map(|i| Attribute::string(tag::ISCSI_ALIAS, &format!("alias-{i:020}")))
            .collect();
        let m = Message::request(
            FunctionId::DEV_ATTR_REG,
            9,
            Attribute::string(tag::ISCSI_NAME, "iqn.x"),
            vec![],
            ops,
        );
        let bytes = m.to_bytes();
        // Walk the PDUs: full ones but the last, numbered from 0, first and last flagged.
        let mut at = 0;
        let mut headers = Vec::new();
        while at < bytes.len() {
            let h = Header::decode(&bytes[at..]).unwrap();
            at += HEADER_LEN + usize::from(h.pdu_length);
            headers.push(h);
        }
        assert_eq!(at, bytes.len());
        assert!(headers.len() > 1);
        for (i, h) in headers.iter().enumerate() {
            let last = i + 1 == headers.len();
            assert_eq!(usize::from(h.seq), i);
            assert_eq!(h.flags.0 & Flags::FIRST_PDU.0 != 0, i == 0);
            assert_eq!(h.flags.0 & Flags::LAST_PDU.0 != 0, last);
            assert_eq!((h.xid, h.function), (9, FunctionId::DEV_ATTR_REG));
            if !last {
                assert_eq!(usize::from(h.pdu_length), MAX_PDU_PAYLOAD);
            }
        }
        assert_eq!(decode_all(&bytes), m);
        // Appending keeps what the buffer held.
        let mut out = b"kept".to_vec();
        m.encode_into(&mut out);
        assert_eq!((&out[..4], &out[4..]), (&b"kept"[..], &bytes[..]));
    }

    proptest! {
        #[test]
        fn message_round_trip(
            response in any::<bool>(),
            func in 1u16..0x20,
            xid in any::<u16>(),
            status in any::<u32>(),
            attrs in proptest::collection::vec(
                (1u32..3000, proptest::collection::vec(any::<[u8; 4]>(), 0..6)), 0..40),
        ) {
            let attrs: Vec<Attribute> =
                attrs.into_iter().map(|(tag, w)| Attribute { tag, value: w.concat() }).collect();
            let m = Message {
                function: if response { FunctionId(func).response() } else { FunctionId(func) },
                flags: if response { Flags::SERVER } else { Flags::CLIENT },
                xid,
                status: response.then_some(Status(status)),
                attrs,
            };
            prop_assert_eq!(decode_all(&m.to_bytes()), m);
        }
    }
}
