//! Fuzz the iSNSP decoder: arbitrary bytes as a stream of PDUs through
//! header decoding, reassembly and message decoding; any decoded message must
//! re-encode and decode to itself.
#![no_main]

use isns_proto::{HEADER_LEN, Header, Message, Reassembler};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut reasm = Reassembler::default();
    let mut rest = data;
    for _ in 0..64 {
        let Ok(h) = Header::decode(rest) else { break };
        let end = HEADER_LEN + usize::from(h.pdu_length);
        let Some(payload) = rest.get(HEADER_LEN..end) else { break };
        rest = rest.get(end..).unwrap_or_default();
        if let Ok(Some(m)) = reasm.push(&h, payload) {
            let _ = (m.source(), m.key(), m.operating());
            let mut again = Reassembler::default();
            let mut decoded = None;
            for pdu in m.encode() {
                let h2 = Header::decode(&pdu).expect("own header decodes");
                decoded = again.push(&h2, &pdu[HEADER_LEN..]).expect("own PDUs reassemble");
            }
            assert_eq!(decoded.as_ref(), Some(&m));
        }
    }
    // The payload decoders on raw bytes, too.
    let _ = isns_proto::attr::decode_attrs(data);
    let _ = Message::decode(isns_proto::FunctionId(0x8002), Default::default(), 0, data);
});
