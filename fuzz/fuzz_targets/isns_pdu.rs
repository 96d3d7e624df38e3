//! Fuzz the iSNSP stream decoder (`isns_proto::MessageDecoder`, the framing
//! the server and the client use): arbitrary bytes, fed in pieces whose size
//! the first byte chooses, through header decoding, reassembly and message
//! decoding. Every decoded message must re-encode and decode to itself; a
//! recoverable error must have consumed input. Then once more with a small
//! message size limit (`MessageDecoder::with_max_message_len`).
#![no_main]

use bytes::BytesMut;
use isns_proto::{Message, MessageDecoder};
use libfuzzer_sys::fuzz_target;

fn decode_all(bytes: &[u8]) -> Vec<Message> {
    let mut buf = BytesMut::from(bytes);
    let mut decoder = MessageDecoder::new();
    let mut out = Vec::new();
    while let Some(m) = decoder.decode(&mut buf).expect("own encoding decodes") {
        out.push(m);
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&piece, stream)) = data.split_first() else {
        return;
    };
    let piece = usize::from(piece).max(1);
    let mut decoder = MessageDecoder::new();
    let mut buf = BytesMut::new();
    'feed: for chunk in stream.chunks(piece) {
        buf.extend_from_slice(chunk);
        loop {
            let before = buf.len();
            match decoder.decode(&mut buf) {
                Ok(Some(m)) => {
                    let _ = (m.source(), m.key(), m.operating());
                    assert_eq!(decode_all(&m.to_bytes()), [m]);
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = (e.to_string(), e.error_response());
                    if e.is_fatal() {
                        break 'feed;
                    }
                    assert!(buf.len() < before, "recoverable error consumed nothing");
                }
            }
        }
    }
    // The same stream through a decoder with a small message limit (the
    // server's `max_message_bytes`): a decoded message fits it, a refusal
    // names it.
    let limit = usize::from(piece) * 16 + 4;
    let mut small = MessageDecoder::with_max_message_len(limit);
    let mut buf = BytesMut::from(stream);
    loop {
        match small.decode(&mut buf) {
            Ok(Some(m)) => assert!(m.payload().len() <= limit),
            Ok(None) => break,
            Err(e) => {
                if let isns_proto::Error::MessageTooLarge(n) = e.error {
                    assert_eq!(n, limit);
                }
                if e.is_fatal() {
                    break;
                }
            }
        }
    }
    // The payload decoders on raw bytes, too.
    let _ = isns_proto::attr::decode_attrs(stream);
    let _ = Message::decode(
        isns_proto::FunctionId(0x8002),
        Default::default(),
        0,
        stream,
    );
});
