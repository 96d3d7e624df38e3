//! The byte stream may arrive cut anywhere: the answers are the same.

use proptest::prelude::*;

use super::*;

/// A login, reads, a write with immediate data and a NOP-Out, as one byte stream.
fn stream() -> Vec<u8> {
    let mut b = BytesMut::new();
    let keys = [
        ("InitiatorName", INITIATOR),
        ("TargetName", TARGET),
        ("AuthMethod", "None"),
        ("ImmediateData", "Yes"),
    ];
    let pdus: Vec<Pdu> = vec![
        Pdu::LoginRequest(LoginRequest::operational([0x80, 0, 0, 0, 0, 1], 1, &keys)),
        Pdu::ScsiCommand(write10(2, 0, 3, 1, Bytes::from(vec![5u8; 512]), true)),
        Pdu::ScsiCommand(read10(3, 1, 3, 2)),
        Pdu::NopOut(iscsi_proto::NopOut {
            itt: 4,
            ttt: iscsi_proto::RESERVED_TAG,
            cmd_sn: 2,
            data: Bytes::from_static(b"hello"),
            ..iscsi_proto::NopOut::default()
        }),
        Pdu::ScsiCommand(read10(5, 3, 0, 8)),
    ];
    for p in pdus {
        p.encode(&mut b, Digests::NONE).unwrap();
    }
    b.to_vec()
}

/// Everything the target sends for `stream` cut at `cuts`, encoded.
fn answers(stream: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut h = Harness::new(TestPolicy::default());
    let mut wire = BytesMut::new();
    let mut at = 0;
    let mut ends: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    ends.push(stream.len());
    ends.sort_unstable();
    for end in ends {
        h.rbuf.extend_from_slice(&stream[at..end]);
        at = end;
        h.run();
        let mut out = Vec::new();
        h.conn.poll_transmit(&mut out);
        for (p, d) in out {
            p.encode(&mut wire, d).unwrap();
        }
    }
    assert!(h.rbuf.is_empty());
    wire.to_vec()
}

proptest! {
    #[test]
    fn answers_do_not_depend_on_how_the_stream_is_cut(
        cuts in proptest::collection::vec(any::<usize>(), 0..12)
    ) {
        let s = stream();
        let whole = answers(&s, &[]);
        prop_assert!(whole.len() > 5 * iscsi_proto::BHS_LEN);
        prop_assert_eq!(answers(&s, &cuts), whole);
    }
}
