//! Data-Out received in place ([`Connection::data_out_sink`]): the shell reads a large data
//! segment straight into its write's buffer; what is written is what was sent, and whatever
//! the sink cannot take goes through the decoder as before.

use bytes::BufMut;
use iscsi_proto::{DataOut, R2t};

use super::*;
use crate::connection::IN_PLACE_MIN;

const SEG: usize = 256 * 1024;

/// Logged in with InitialR2T=Yes, 256 KiB bursts and one R2T outstanding: a 1 MiB write
/// sends 64 KiB with the command and the rest as R2Ts of 256 KiB.
fn session() -> Harness {
    logged_in(&[
        ("InitialR2T", "Yes"),
        ("ImmediateData", "Yes"),
        ("FirstBurstLength", "65536"),
        ("MaxBurstLength", "262144"),
        ("MaxOutstandingR2T", "1"),
    ])
}

fn payload() -> Bytes {
    (0..1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect::<Vec<u8>>()
        .into()
}

fn only_r2t(o: &[Pdu]) -> R2t {
    match o {
        [Pdu::R2t(r)] => r.clone(),
        _ => panic!("{o:?}: one R2T expected"),
    }
}

fn data_out(r: &R2t, data: Bytes) -> DataOut {
    DataOut {
        final_: true,
        itt: r.itt,
        ttt: r.ttt,
        data_sn: 0,
        buffer_offset: r.buffer_offset,
        data,
        ..DataOut::default()
    }
}

fn read_back(h: &mut Harness, itt: u32, cmd_sn: u32) -> Vec<u8> {
    h.send(read10(itt, cmd_sn, 0, 2048))
        .iter()
        .flat_map(|p| match p {
            Pdu::DataIn(d) => d.data.to_vec(),
            _ => vec![],
        })
        .collect()
}

#[test]
fn a_large_data_out_received_in_place_is_written_as_sent() {
    let mut h = session();
    let data = payload();
    assert_eq!(h.conn.read_header_first(), None, "no write waits yet");
    let o = h.send(write10(5, 10, 0, 2048, data.slice(..65536), true));
    let mut r2t = only_r2t(&o);
    assert_eq!(
        (r2t.buffer_offset, r2t.desired_data_transfer_length),
        (65536, SEG as u32)
    );
    // With the header read first, and with some of the data read together with it.
    for (i, read_with_header) in [0usize, 1000, 4, 70_000].into_iter().enumerate() {
        assert_eq!(h.conn.read_header_first(), Some(iscsi_proto::BHS_LEN));
        let off = r2t.buffer_offset as usize;
        let len = r2t.desired_data_transfer_length as usize;
        assert_eq!(len, SEG.min(data.len() - off));
        let mut wire = BytesMut::new();
        Pdu::DataOut(data_out(&r2t, data.slice(off..off + len)))
            .encode(&mut wire, h.digests)
            .unwrap();
        let first = iscsi_proto::BHS_LEN + read_with_header;
        h.rbuf.extend_from_slice(&wire[..first]);
        h.run();
        assert!(h.out().is_empty());
        let mut sink = h.conn.data_out_sink(&mut h.rbuf).expect("taken in place");
        assert!(
            h.rbuf.is_empty(),
            "header and early data moved out of the read buffer"
        );
        assert_eq!(sink.missing(), wire.len() - first);
        // The rest from the "socket", in uneven pieces.
        let mut at = first;
        while !sink.is_full() {
            let n = (sink.missing()).min(12_345 + at % 7);
            let mut spare = sink.spare();
            assert!(spare.remaining_mut() >= n);
            spare.put_slice(&wire[at..at + n]);
            at += n;
        }
        assert_eq!(at, wire.len());
        h.conn.on_data_out_sink(sink, h.now);
        h.run();
        let o = h.out();
        if i < 3 {
            r2t = only_r2t(&o);
            assert_eq!(r2t.buffer_offset as usize, 65536 + (i + 1) * SEG);
        } else {
            let [Pdu::ScsiResponse(r)] = &o[..] else {
                panic!("{o:?}")
            };
            assert_eq!((r.status, r.residual_count), (0, 0));
        }
    }
    assert_eq!(h.conn.read_header_first(), None, "the write is done");
    assert!(read_back(&mut h, 6, 11) == data[..], "read back differs");
}

#[test]
fn what_cannot_go_in_place_is_left_to_the_decoder() {
    let mut h = session();
    let data = payload();
    let r2t = only_r2t(&h.send(write10(5, 10, 0, 2048, data.slice(..65536), true)));
    let off = r2t.buffer_offset as usize;
    let header_and_some = |d: DataOut, h: &Harness| {
        let mut wire = BytesMut::new();
        Pdu::DataOut(d).encode(&mut wire, h.digests).unwrap();
        wire
    };
    // A segment shorter than IN_PLACE_MIN, a whole PDU already read, and one out of sequence
    // (wrong offset): none is taken, the read buffer is left as it was.
    let short = data_out(&r2t, data.slice(off..off + IN_PLACE_MIN - 512));
    let mut wrong_offset = data_out(&r2t, data.slice(off..off + SEG));
    wrong_offset.buffer_offset += 512;
    let mut unknown_task = data_out(&r2t, data.slice(off..off + SEG));
    unknown_task.itt = 99;
    for (what, pdu, cut) in [
        ("short", short.clone(), 100),
        ("wrong offset", wrong_offset.clone(), 100),
        ("unknown task", unknown_task, 100),
        ("whole", data_out(&r2t, data.slice(off..off + SEG)), 0),
    ] {
        let wire = header_and_some(pdu, &h);
        let held = BytesMut::from(&wire[..wire.len() - cut]);
        let mut rbuf = held.clone();
        assert!(h.conn.data_out_sink(&mut rbuf).is_none(), "{what}");
        assert_eq!(rbuf, held, "{what}: read buffer changed");
    }
    // Fed whole, the out-of-sequence Data-Out ends the write as it always did.
    h.feed_only(wrong_offset);
    h.run();
    let o = h.out();
    let [Pdu::ScsiResponse(r)] = &o[..] else {
        panic!("{o:?}")
    };
    assert_eq!((r.status, r.sense[2] & 0x0f), (2, 0x0b), "ABORTED COMMAND");
    assert_eq!(h.conn.read_header_first(), None);
}

#[test]
fn no_header_first_when_segments_cannot_be_large() {
    // MaxRecvDataSegmentLength is the target's, 256 KiB, unless the initiator's offer
    // lowers MaxBurstLength: R2Ts of 32 KiB never carry a segment worth receiving in place.
    let mut h = logged_in(&[
        ("InitialR2T", "Yes"),
        ("ImmediateData", "Yes"),
        ("FirstBurstLength", "8192"),
        ("MaxBurstLength", "32768"),
    ]);
    let data = payload();
    let o = h.send(write10(5, 10, 0, 2048, data.slice(..8192), true));
    assert!(matches!(o.first(), Some(Pdu::R2t(_))), "{o:?}");
    assert_eq!(h.conn.read_header_first(), None);
}
