//! Fuzz the iSCSI PDU decoder (RFC 7143 §11) and text parser (§6.1): arbitrary
//! bytes must never panic; whatever decodes must re-encode and decode identically.
#![no_main]

use iscsi_proto::bytes::BytesMut;
use iscsi_proto::text::{TextAssembler, TextPairs};
use iscsi_proto::{Digests, Limits, PduDecoder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&cfg, data)) = input.split_first() else {
        return;
    };
    let digests = Digests {
        header: cfg & 1 != 0,
        data: cfg & 2 != 0,
    };
    // Small limits (64 bytes .. 16 MiB) chosen by the input.
    let limit = 64u32 << (cfg >> 2 & 0x0f).min(18);
    let mut dec = PduDecoder::new(Limits {
        max_recv_data_segment_length: limit,
    });
    dec.set_digests(digests);
    // A Data-Out header read ahead of its data is the one a whole decode gives.
    if let Some(h) = dec.data_out_header(data, 4) {
        let mut whole = BytesMut::from(data);
        whole.resize(h.header_len + h.data_len as usize, 0);
        if let Ok(Some(iscsi_proto::Pdu::DataOut(mut full))) = dec.clone().decode(&mut whole) {
            assert_eq!(full.data.len(), h.data_len as usize);
            full.data = iscsi_proto::bytes::Bytes::new();
            assert_eq!(full, h.pdu);
        } else {
            panic!("a header read ahead that a whole decode refuses");
        }
    }
    let mut buf = BytesMut::from(data);
    for _ in 0..64 {
        match dec.decode(&mut buf) {
            Ok(Some(pdu)) => {
                let wire = pdu.to_bytes(digests).expect("decoded PDU must re-encode");
                let mut again = BytesMut::from(&wire[..]);
                let mut dec2 = PduDecoder::new(Limits {
                    max_recv_data_segment_length: 1 << 24,
                });
                dec2.set_digests(digests);
                let back = dec2.decode(&mut again).expect("re-encoded PDU must decode");
                assert_eq!(back.as_ref(), Some(&pdu));
                assert!(again.is_empty());
            }
            Ok(None) => break,
            Err(e) if e.is_recoverable() => {}
            Err(_) => break,
        }
    }

    if let Ok(pairs) = TextPairs::parse(data) {
        assert_eq!(TextPairs::parse(&pairs.to_bytes()), Ok(pairs));
    }
    let mut asm = TextAssembler::new(4096);
    for (i, chunk) in data.chunks(7).enumerate().take(1024) {
        let _ = asm.push(chunk, i % 5 != 4);
    }
});
