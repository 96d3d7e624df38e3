use super::*;
use crate::{Attribute, HEADER_LEN, ISNSP_VERSION, MAX_PDU_PAYLOAD, tag};
use proptest::prelude::*;

fn header(function: FunctionId, len: usize, flags: Flags, xid: u16, seq: u16) -> Header {
    Header {
        version: ISNSP_VERSION,
        function,
        pdu_length: u16::try_from(len).unwrap(),
        flags,
        xid,
        seq,
    }
}

fn pdu(h: Header, payload: &[u8]) -> Vec<u8> {
    let mut out = h.encode().to_vec();
    out.extend_from_slice(payload);
    out
}

/// `m` as PDUs carrying at most `max` payload bytes each (a multiple of 4),
/// as another implementation may split it.
fn encode_in_pdus(m: &Message, max: usize) -> Vec<u8> {
    let payload = m.payload();
    let chunks: Vec<&[u8]> = if payload.is_empty() {
        vec![&[]]
    } else {
        payload.chunks(max).collect()
    };
    let last = chunks.len() - 1;
    let mut out = Vec::new();
    for (i, c) in chunks.into_iter().enumerate() {
        let mut flags = m.flags;
        if i == 0 {
            flags = flags | Flags::FIRST_PDU;
        }
        if i == last {
            flags = flags | Flags::LAST_PDU;
        }
        let seq = u16::try_from(i).unwrap();
        out.extend(pdu(header(m.function, c.len(), flags, m.xid, seq), c));
    }
    out
}

fn query(xid: u16) -> Message {
    Message::request(
        FunctionId::DEV_ATTR_QRY,
        xid,
        Attribute::string(tag::ISCSI_NAME, "iqn.i"),
        vec![Attribute::string(tag::ISCSI_NAME, "iqn.t")],
        vec![Attribute::nil(tag::PG_TAG)],
    )
}

fn decode_one(bytes: &[u8]) -> Result<Option<Message>, DecodeError> {
    MessageDecoder::new().decode(&mut BytesMut::from(bytes))
}

#[test]
fn partial_input_waits_then_decodes() {
    let bytes = query(3).to_bytes();
    let mut d = MessageDecoder::new();
    let mut buf = BytesMut::new();
    for (i, b) in bytes.iter().enumerate() {
        assert_eq!(d.decode(&mut buf), Ok(None), "after {i} bytes");
        buf.extend_from_slice(&[*b]);
    }
    assert_eq!(d.decode(&mut buf), Ok(Some(query(3))));
    assert!(buf.is_empty());
    assert!(!d.is_pending());
}

#[test]
fn bad_header_is_fatal_and_not_consumed() {
    let mut bad = query(5).to_bytes();
    bad[1] = 9;
    let mut buf = BytesMut::from(bad.as_slice());
    let e = MessageDecoder::new().decode(&mut buf).unwrap_err();
    assert_eq!(e.error, Error::Version(9));
    assert_eq!((e.function, e.xid), (FunctionId::DEV_ATTR_QRY, 5));
    assert!(e.is_fatal());
    assert_eq!(e.status(), Status::VERSION_NOT_SUPPORTED);
    assert_eq!(buf.len(), bad.len());
    let resp = e.error_response().unwrap();
    assert_eq!(resp.function, FunctionId::DEV_ATTR_QRY.response());
    assert_eq!(resp.status, Some(Status::VERSION_NOT_SUPPORTED));

    // Length not a multiple of 4: Message Format Error.
    let odd = [0, 1, 0, 2, 0xff, 0xff, 0x8c, 0, 0, 1, 0, 0];
    let e = decode_one(&odd).unwrap_err();
    assert_eq!(e.error, Error::PduLength(0xffff));
    assert!(e.is_fatal());
    assert_eq!(e.status(), Status::MESSAGE_FORMAT_ERROR);
    // A bad response header is not answered.
    let e = decode_one(&[0, 9, 0x80, 2, 0, 0, 0x4c, 0, 0, 1, 0, 0]).unwrap_err();
    assert!(e.error_response().is_none());
}

#[test]
fn malformed_message_is_consumed_and_stream_continues() {
    let bad_attr = [0, 0, 0, 32, 0, 0, 0, 3, 1, 2, 3, 4];
    let flags = Flags::CLIENT | Flags::FIRST_PDU | Flags::LAST_PDU;
    let mut bytes = pdu(header(FunctionId::DEV_ATTR_QRY, 12, flags, 7, 0), &bad_attr);
    bytes.extend(query(8).to_bytes());
    let mut buf = BytesMut::from(bytes.as_slice());
    let mut d = MessageDecoder::new();
    let e = d.decode(&mut buf).unwrap_err();
    assert_eq!(e.error, Error::AttrLength { tag: 32, len: 3 });
    assert!(!e.is_fatal());
    assert_eq!(e.xid, 7);
    assert_eq!(d.decode(&mut buf), Ok(Some(query(8))));
    // A response without status code.
    let e = decode_one(&pdu(header(FunctionId(0x8002), 0, flags, 1, 0), &[])).unwrap_err();
    assert_eq!(e.error, Error::MissingStatus);
    assert!(!e.is_fatal());
}

#[test]
fn out_of_order_and_orphans_rejected() {
    let f = FunctionId::DEV_ATTR_QRY;
    let h = |seq, flags| pdu(header(f, 0, flags, 1, seq), &[]);
    let mut d = MessageDecoder::new();
    let mut run = |bytes: Vec<u8>| d.decode(&mut BytesMut::from(bytes.as_slice()));
    let e = run(h(1, Flags::CLIENT)).unwrap_err();
    assert!(matches!(e.error, Error::Sequence(_)) && e.is_fatal());
    assert_eq!(run(h(0, Flags::CLIENT | Flags::FIRST_PDU)), Ok(None));
    assert!(run(h(2, Flags::CLIENT)).is_err());
    assert!(run(h(3, Flags::FIRST_PDU)).is_err());
    let done = run(h(0, Flags::FIRST_PDU | Flags::LAST_PDU)).unwrap();
    assert!(done.is_some());
    // Another transaction interleaved with a pending message.
    assert_eq!(run(h(0, Flags::FIRST_PDU)), Ok(None));
    let other = pdu(header(f, 0, Flags::CLIENT, 2, 1), &[]);
    assert!(run(other).is_err());
}

#[test]
fn limits_on_pdu_count_and_message_size() {
    let f = FunctionId::DEV_ATTR_REG;
    let mut stream = Vec::new();
    for seq in 0..=MAX_PDUS_PER_MESSAGE {
        let flags = if seq == 0 { Flags::FIRST_PDU } else { Flags(0) };
        stream.extend(pdu(header(f, 0, flags, 1, seq as u16), &[]));
    }
    let mut buf = BytesMut::from(stream.as_slice());
    let e = MessageDecoder::new().decode(&mut buf).unwrap_err();
    assert_eq!(e.error, Error::TooManyPdus(MAX_PDUS_PER_MESSAGE));
    assert!(e.is_fatal());

    let big = vec![0u8; MAX_PDU_PAYLOAD];
    let mut d = MessageDecoder::new();
    let mut result = Ok(None);
    for seq in 0..=(MAX_MESSAGE_LEN / MAX_PDU_PAYLOAD) {
        let flags = if seq == 0 { Flags::FIRST_PDU } else { Flags(0) };
        let bytes = pdu(header(f, big.len(), flags, 1, seq as u16), &big);
        result = d.decode(&mut BytesMut::from(bytes.as_slice()));
        if result.is_err() {
            break;
        }
    }
    assert_eq!(
        result.unwrap_err().error,
        Error::MessageTooLarge(MAX_MESSAGE_LEN)
    );
    assert!(!d.is_pending());
}

#[test]
fn full_size_pdus_of_a_large_message() {
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
    assert!(bytes.len() > HEADER_LEN + MAX_PDU_PAYLOAD);
    assert_eq!(decode_one(&bytes), Ok(Some(m)));
}

fn arb_message() -> impl Strategy<Value = Message> {
    (
        any::<bool>(),
        1u16..0x20,
        any::<u16>(),
        any::<u32>(),
        proptest::collection::vec(
            (
                1u32..3000,
                proptest::collection::vec(any::<[u8; 4]>(), 0..6),
            ),
            0..12,
        ),
    )
        .prop_map(|(response, func, xid, status, attrs)| Message {
            function: if response {
                FunctionId(func).response()
            } else {
                FunctionId(func)
            },
            flags: if response {
                Flags::SERVER
            } else {
                Flags::CLIENT
            },
            xid,
            status: response.then_some(Status(status)),
            attrs: attrs
                .into_iter()
                .map(|(tag, w)| Attribute {
                    tag,
                    value: w.concat(),
                })
                .collect(),
        })
}

/// Feed `bytes` to one decoder in pieces of the given sizes (cycled).
fn feed(bytes: &[u8], cuts: &[usize]) -> (Vec<Message>, Vec<DecodeError>) {
    let mut d = MessageDecoder::new();
    let mut buf = BytesMut::new();
    let (mut out, mut errors) = (Vec::new(), Vec::new());
    let mut rest = bytes;
    let mut sizes = cuts.iter().cycle();
    while !rest.is_empty() {
        let n = sizes.next().copied().unwrap_or(1).clamp(1, rest.len());
        let (piece, tail) = rest.split_at(n);
        buf.extend_from_slice(piece);
        rest = tail;
        loop {
            let before = buf.len();
            match d.decode(&mut buf) {
                Ok(Some(m)) => out.push(m),
                Ok(None) => {
                    // Waiting means no complete PDU is buffered.
                    if let Ok(h) = Header::decode(&buf) {
                        assert!(buf.len() < HEADER_LEN + usize::from(h.pdu_length));
                    } else {
                        assert!(buf.len() < HEADER_LEN);
                    }
                    break;
                }
                Err(e) => {
                    let fatal = e.is_fatal();
                    errors.push(e);
                    if fatal {
                        return (out, errors);
                    }
                    // A recoverable error consumed input.
                    assert!(buf.len() < before);
                }
            }
        }
    }
    (out, errors)
}

proptest! {
    #[test]
    fn any_chunking_of_a_valid_stream_gives_the_same_messages(
        msgs in proptest::collection::vec((arb_message(), 1usize..6), 1..8),
        cuts in proptest::collection::vec(1usize..200, 1..16),
    ) {
        let mut stream = Vec::new();
        for (m, words) in &msgs {
            stream.extend(encode_in_pdus(m, words * 4));
        }
        let expected: Vec<Message> = msgs.into_iter().map(|(m, _)| m).collect();
        let (got, errors) = feed(&stream, &cuts);
        prop_assert!(errors.is_empty(), "{:?}", errors);
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_errors_are_clear(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        valid_header in any::<bool>(),
        cuts in proptest::collection::vec(1usize..64, 1..8),
    ) {
        let mut bytes = bytes;
        if valid_header && bytes.len() >= HEADER_LEN {
            // Steer towards the paths past header decoding.
            bytes[0] = 0;
            bytes[1] = 1;
            bytes[4] = 0;
            bytes[5] &= 0xfc;
        }
        let (_, errors) = feed(&bytes, &cuts);
        for e in errors {
            let text = e.to_string();
            prop_assert!(text.contains(&format!("transaction {}", e.xid)), "{}", text);
            prop_assert_eq!(e.error_response().is_some(), !e.function.is_response());
        }
    }
}

#[test]
fn a_configured_message_limit_refuses_larger_messages() {
    let ops: Vec<Attribute> = (0..40)
        .map(|i| Attribute::string(tag::ISCSI_ALIAS, &format!("alias-{i:020}")))
        .collect();
    let m = Message::request(
        FunctionId::DEV_ATTR_REG,
        9,
        Attribute::string(tag::ISCSI_NAME, "iqn.x"),
        vec![],
        ops,
    );
    let len = m.payload().len();
    let mut exact = MessageDecoder::with_max_message_len(len);
    assert_eq!(exact.max_message_len(), len);
    let mut buf = BytesMut::from(m.to_bytes().as_slice());
    assert_eq!(exact.decode(&mut buf), Ok(Some(m.clone())));
    let mut small = MessageDecoder::with_max_message_len(len - 4);
    let mut buf = BytesMut::from(m.to_bytes().as_slice());
    let e = small.decode(&mut buf).unwrap_err();
    assert_eq!(e.error, Error::MessageTooLarge(len - 4));
    assert!(e.is_fatal());
    assert_eq!(e.status(), Status::MESSAGE_FORMAT_ERROR);
    // The limit never goes above the codec's own.
    assert_eq!(
        MessageDecoder::with_max_message_len(usize::MAX).max_message_len(),
        MAX_MESSAGE_LEN
    );
}

proptest! {
    /// With any configured limit, a message decodes exactly when its payload
    /// fits, however it is split into PDUs.
    #[test]
    fn configured_limit_decides_by_payload_length(
        limit in 4usize..3000,
        aliases in 0usize..60,
        cut in 1usize..200,
    ) {
        let ops: Vec<Attribute> = (0..aliases)
            .map(|i| Attribute::string(tag::ISCSI_ALIAS, &format!("alias-{i:020}")))
            .collect();
        let m = Message::request(
            FunctionId::DEV_ATTR_REG,
            3,
            Attribute::string(tag::ISCSI_NAME, "iqn.x"),
            vec![],
            ops,
        );
        let bytes = m.to_bytes();
        let mut d = MessageDecoder::with_max_message_len(limit);
        let mut buf = BytesMut::new();
        let mut result = Ok(None);
        for chunk in bytes.chunks(cut) {
            buf.extend_from_slice(chunk);
            result = d.decode(&mut buf);
            if !matches!(result, Ok(None)) {
                break;
            }
        }
        if m.payload().len() <= limit {
            prop_assert_eq!(result, Ok(Some(m)));
        } else {
            let e = result.unwrap_err();
            prop_assert_eq!(&e.error, &Error::MessageTooLarge(limit));
            prop_assert!(e.is_fatal());
        }
    }
}
