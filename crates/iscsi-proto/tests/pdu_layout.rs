//! Every PDU kind against a byte layout built by hand from the field offsets of
//! RFC 7143 §11, in both directions, plus digests, padding and AHS framing.

use bytes::{Bytes, BytesMut};
use iscsi_proto::*;

fn put(b: &mut [u8], off: usize, v: &[u8]) {
    b[off..off + v.len()].copy_from_slice(v);
}

/// A BHS with opcode byte, flags byte, DataSegmentLength and ITT set.
fn bhs(op0: u8, flags: u8, dsl: u32, itt: u32) -> Vec<u8> {
    let mut b = vec![0u8; 48];
    b[0] = op0;
    b[1] = flags;
    put(&mut b, 5, &dsl.to_be_bytes()[1..]);
    put(&mut b, 16, &itt.to_be_bytes());
    b
}

fn with_data(mut h: Vec<u8>, data: &[u8]) -> Vec<u8> {
    h.extend_from_slice(data);
    while !h.len().is_multiple_of(4) {
        h.push(0);
    }
    h
}

fn check(wire: Vec<u8>, pdu: Pdu) {
    let mut dec = PduDecoder::new(Limits::default());
    let mut buf = BytesMut::from(&wire[..]);
    let got = dec.decode(&mut buf).expect("decode").expect("complete");
    assert_eq!(got, pdu);
    assert!(buf.is_empty());
    let enc = pdu.to_bytes(Digests::NONE).unwrap();
    assert_eq!(&enc[..], &wire[..], "encoding of {:?}", pdu.opcode());
}

const LUN: u64 = 0x0001_0000_0000_0000;

#[test]
fn scsi_command() {
    let mut b = bhs(0x41, 0x80 | 0x20 | 0x01, 5, 0x0a0b0c0d);
    put(&mut b, 8, &LUN.to_be_bytes());
    put(&mut b, 20, &4096u32.to_be_bytes());
    put(&mut b, 24, &7u32.to_be_bytes());
    put(&mut b, 28, &9u32.to_be_bytes());
    let mut cdb = [0u8; 16];
    cdb[0] = 0x2a;
    cdb[8] = 8;
    put(&mut b, 32, &cdb);
    check(
        with_data(b, b"hello"),
        Pdu::ScsiCommand(ScsiCommand {
            immediate: true,
            final_: true,
            read: false,
            write: true,
            attr: 1,
            lun: LUN,
            itt: 0x0a0b0c0d,
            edtl: 4096,
            cmd_sn: 7,
            exp_stat_sn: 9,
            cdb,
            ext_cdb: None,
            bidi_read_edtl: None,
            data: Bytes::from_static(b"hello"),
        }),
    );
}

#[test]
fn scsi_command_with_ahs() {
    // 32-byte CDB: Extended CDB AHS with AHSLength = 32 - 15 = 17 (§11.2.2.3), then
    // a Bidirectional Read EDTL AHS, AHSLength 5 (§11.2.2.4).
    let mut b = bhs(0x01, 0xc0, 0, 1);
    let ext: Vec<u8> = (100..116).collect();
    let mut ahs = vec![0, 17, 1, 0];
    ahs.extend_from_slice(&ext);
    ahs.extend_from_slice(&[0, 0, 0, 0]); // pad 3+17=20 -> 20, already aligned
    ahs.truncate(20);
    ahs.extend_from_slice(&[0, 5, 2, 0, 0, 0, 0x10, 0]);
    assert_eq!(ahs.len(), 28);
    b[4] = (ahs.len() / 4) as u8;
    b.extend_from_slice(&ahs);
    check(
        b,
        Pdu::ScsiCommand(ScsiCommand {
            final_: true,
            read: true,
            itt: 1,
            ext_cdb: Some(Bytes::from(ext)),
            bidi_read_edtl: Some(0x1000),
            ..ScsiCommand::default()
        }),
    );
}

#[test]
fn scsi_response_with_sense() {
    let sense = [0x70, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24, 0, 0, 0, 0, 0];
    let mut data = vec![0, sense.len() as u8];
    data.extend_from_slice(&sense);
    let mut b = bhs(0x21, 0x80 | 0x02, data.len() as u32, 3);
    b[2] = 0;
    b[3] = 0x02;
    put(&mut b, 20, &0u32.to_be_bytes());
    put(&mut b, 24, &100u32.to_be_bytes());
    put(&mut b, 28, &8u32.to_be_bytes());
    put(&mut b, 32, &40u32.to_be_bytes());
    put(&mut b, 36, &2u32.to_be_bytes());
    put(&mut b, 44, &512u32.to_be_bytes());
    check(
        with_data(b, &data),
        Pdu::ScsiResponse(ScsiResponse {
            residual_underflow: true,
            status: 2,
            itt: 3,
            stat_sn: 100,
            exp_cmd_sn: 8,
            max_cmd_sn: 40,
            exp_data_sn: 2,
            residual_count: 512,
            sense: Bytes::copy_from_slice(&sense),
            ..ScsiResponse::default()
        }),
    );
}

#[test]
fn task_mgmt() {
    let mut b = bhs(0x42, 0x80 | 0x01, 0, 5);
    put(&mut b, 8, &LUN.to_be_bytes());
    put(&mut b, 20, &4u32.to_be_bytes());
    put(&mut b, 24, &10u32.to_be_bytes());
    put(&mut b, 28, &11u32.to_be_bytes());
    put(&mut b, 32, &9u32.to_be_bytes());
    put(&mut b, 36, &1u32.to_be_bytes());
    check(
        b,
        Pdu::TaskMgmtRequest(TaskMgmtRequest {
            immediate: true,
            function: 1,
            lun: LUN,
            itt: 5,
            referenced_task_tag: 4,
            cmd_sn: 10,
            exp_stat_sn: 11,
            ref_cmd_sn: 9,
            exp_data_sn: 1,
        }),
    );
    let mut b = bhs(0x22, 0x80, 0, 5);
    b[2] = 0x05;
    put(&mut b, 24, &1u32.to_be_bytes());
    put(&mut b, 28, &2u32.to_be_bytes());
    put(&mut b, 32, &3u32.to_be_bytes());
    check(
        b,
        Pdu::TaskMgmtResponse(TaskMgmtResponse {
            response: 5,
            itt: 5,
            stat_sn: 1,
            exp_cmd_sn: 2,
            max_cmd_sn: 3,
        }),
    );
}

#[test]
fn data_out_and_in() {
    let mut b = bhs(0x05, 0x80, 8, 6);
    put(&mut b, 8, &LUN.to_be_bytes());
    put(&mut b, 20, &0x77u32.to_be_bytes());
    put(&mut b, 28, &12u32.to_be_bytes());
    put(&mut b, 36, &3u32.to_be_bytes());
    put(&mut b, 40, &8192u32.to_be_bytes());
    check(
        with_data(b, b"abcdefgh"),
        Pdu::DataOut(DataOut {
            final_: true,
            lun: LUN,
            itt: 6,
            ttt: 0x77,
            exp_stat_sn: 12,
            data_sn: 3,
            buffer_offset: 8192,
            data: Bytes::from_static(b"abcdefgh"),
        }),
    );
    let mut b = bhs(0x25, 0x80 | 0x04 | 0x01, 3, 6);
    b[3] = 0;
    put(&mut b, 8, &LUN.to_be_bytes());
    put(&mut b, 20, &RESERVED_TAG.to_be_bytes());
    put(&mut b, 24, &50u32.to_be_bytes());
    put(&mut b, 28, &51u32.to_be_bytes());
    put(&mut b, 32, &52u32.to_be_bytes());
    put(&mut b, 36, &1u32.to_be_bytes());
    put(&mut b, 40, &4u32.to_be_bytes());
    put(&mut b, 44, &9u32.to_be_bytes());
    check(
        with_data(b, b"xyz"),
        Pdu::DataIn(DataIn {
            final_: true,
            residual_overflow: true,
            status_present: true,
            lun: LUN,
            itt: 6,
            ttt: RESERVED_TAG,
            stat_sn: 50,
            exp_cmd_sn: 51,
            max_cmd_sn: 52,
            data_sn: 1,
            buffer_offset: 4,
            residual_count: 9,
            data: Bytes::from_static(b"xyz"),
            ..DataIn::default()
        }),
    );
}

#[test]
fn r2t() {
    let mut b = bhs(0x31, 0x80, 0, 8);
    put(&mut b, 8, &LUN.to_be_bytes());
    put(&mut b, 20, &0x99u32.to_be_bytes());
    put(&mut b, 24, &1u32.to_be_bytes());
    put(&mut b, 28, &2u32.to_be_bytes());
    put(&mut b, 32, &3u32.to_be_bytes());
    put(&mut b, 36, &4u32.to_be_bytes());
    put(&mut b, 40, &65536u32.to_be_bytes());
    put(&mut b, 44, &262144u32.to_be_bytes());
    check(
        b,
        Pdu::R2t(R2t {
            lun: LUN,
            itt: 8,
            ttt: 0x99,
            stat_sn: 1,
            exp_cmd_sn: 2,
            max_cmd_sn: 3,
            r2t_sn: 4,
            buffer_offset: 65536,
            desired_data_transfer_length: 262144,
        }),
    );
}

#[test]
fn async_logout_requested() {
    let mut b = bhs(0x32, 0x80, 0, RESERVED_TAG);
    put(&mut b, 24, &10u32.to_be_bytes());
    put(&mut b, 28, &11u32.to_be_bytes());
    put(&mut b, 32, &12u32.to_be_bytes());
    b[36] = 1;
    b[37] = 0;
    put(&mut b, 42, &5u16.to_be_bytes());
    check(
        b,
        Pdu::AsyncMessage(AsyncMessage {
            stat_sn: 10,
            exp_cmd_sn: 11,
            max_cmd_sn: 12,
            async_event: async_event::LOGOUT_REQUESTED,
            parameter3: 5,
            ..AsyncMessage::default()
        }),
    );
}

#[test]
fn text_request_response() {
    let mut b = bhs(0x44, 0x80, 18, 2);
    put(&mut b, 20, &RESERVED_TAG.to_be_bytes());
    put(&mut b, 24, &3u32.to_be_bytes());
    put(&mut b, 28, &4u32.to_be_bytes());
    check(
        with_data(b, b"SendTargets=All\0\0\0"),
        Pdu::TextRequest(TextRequest {
            immediate: true,
            final_: true,
            itt: 2,
            ttt: RESERVED_TAG,
            cmd_sn: 3,
            exp_stat_sn: 4,
            data: Bytes::from_static(b"SendTargets=All\0\0\0"),
            ..TextRequest::default()
        }),
    );
    let mut b = bhs(0x24, 0x40, 4, 2);
    put(&mut b, 20, &0x10u32.to_be_bytes());
    put(&mut b, 24, &5u32.to_be_bytes());
    check(
        with_data(b, b"a=b\0"),
        Pdu::TextResponse(TextResponse {
            continue_: true,
            itt: 2,
            ttt: 0x10,
            stat_sn: 5,
            data: Bytes::from_static(b"a=b\0"),
            ..TextResponse::default()
        }),
    );
}

#[test]
fn login_request_response() {
    // T=1, CSG=1, NSG=3 -> 0x87 (§11.12.3).
    let mut b = bhs(0x43, 0x87, 4, 0x11);
    b[2] = 0;
    b[3] = 0;
    put(&mut b, 8, &[0x80, 1, 2, 3, 4, 5]);
    put(&mut b, 14, &0u16.to_be_bytes());
    put(&mut b, 20, &1u16.to_be_bytes());
    put(&mut b, 24, &77u32.to_be_bytes());
    check(
        with_data(b, b"k=v\0"),
        Pdu::LoginRequest(LoginRequest {
            transit: true,
            csg: Stage::LoginOperationalNegotiation,
            nsg: Stage::FullFeaturePhase,
            isid: [0x80, 1, 2, 3, 4, 5],
            itt: 0x11,
            cid: 1,
            cmd_sn: 77,
            data: Bytes::from_static(b"k=v\0"),
            ..LoginRequest::default()
        }),
    );
    let data = b"TargetAddress=127.0.0.2:3260\0";
    let mut b = bhs(0x23, 0x00, data.len() as u32, 0x11);
    put(&mut b, 8, &[0x80, 1, 2, 3, 4, 5]);
    put(&mut b, 14, &9u16.to_be_bytes());
    put(&mut b, 24, &1u32.to_be_bytes());
    put(&mut b, 28, &77u32.to_be_bytes());
    put(&mut b, 32, &78u32.to_be_bytes());
    b[36] = 1;
    b[37] = 1;
    check(
        with_data(b, data),
        Pdu::LoginResponse(LoginResponse {
            isid: [0x80, 1, 2, 3, 4, 5],
            tsih: 9,
            itt: 0x11,
            stat_sn: 1,
            exp_cmd_sn: 77,
            max_cmd_sn: 78,
            status_class: 1,
            status_detail: 1,
            data: Bytes::from_static(data),
            ..LoginResponse::default()
        }),
    );
}

#[test]
fn logout() {
    let mut b = bhs(0x46, 0x80 | 0x01, 0, 0x20);
    put(&mut b, 20, &3u16.to_be_bytes());
    put(&mut b, 24, &5u32.to_be_bytes());
    put(&mut b, 28, &6u32.to_be_bytes());
    check(
        b,
        Pdu::LogoutRequest(LogoutRequest {
            immediate: true,
            reason_code: logout_reason::CLOSE_CONNECTION,
            itt: 0x20,
            cid: 3,
            cmd_sn: 5,
            exp_stat_sn: 6,
        }),
    );
    let mut b = bhs(0x26, 0x80, 0, 0x20);
    put(&mut b, 24, &6u32.to_be_bytes());
    put(&mut b, 28, &5u32.to_be_bytes());
    put(&mut b, 32, &36u32.to_be_bytes());
    put(&mut b, 40, &2u16.to_be_bytes());
    put(&mut b, 42, &20u16.to_be_bytes());
    check(
        b,
        Pdu::LogoutResponse(LogoutResponse {
            response: 0,
            itt: 0x20,
            stat_sn: 6,
            exp_cmd_sn: 5,
            max_cmd_sn: 36,
            time2wait: 2,
            time2retain: 20,
        }),
    );
}

#[test]
fn snack() {
    let mut b = bhs(0x10, 0x80 | 0x01, 0, 4);
    put(&mut b, 20, &RESERVED_TAG.to_be_bytes());
    put(&mut b, 28, &7u32.to_be_bytes());
    put(&mut b, 36, &2u32.to_be_bytes());
    put(&mut b, 40, &3u32.to_be_bytes());
    check(
        b,
        Pdu::SnackRequest(SnackRequest {
            snack_type: 1,
            itt: 4,
            ttt: RESERVED_TAG,
            exp_stat_sn: 7,
            beg_run: 2,
            run_length: 3,
            ..SnackRequest::default()
        }),
    );
}

#[test]
fn reject_and_nops() {
    let rejected = bhs(0x1c, 0x80, 0, 1);
    let mut b = bhs(0x3f, 0x80, 48, RESERVED_TAG);
    b[2] = reject_reason::COMMAND_NOT_SUPPORTED;
    put(&mut b, 24, &1u32.to_be_bytes());
    check(
        with_data(b, &rejected),
        Pdu::Reject(Reject {
            reason: 5,
            stat_sn: 1,
            header: Bytes::from(rejected.clone()),
            ..Reject::default()
        }),
    );
    let mut b = bhs(0x40, 0x80, 2, RESERVED_TAG);
    put(&mut b, 20, &0x55u32.to_be_bytes());
    put(&mut b, 24, &9u32.to_be_bytes());
    let ping = NopIn {
        itt: RESERVED_TAG,
        ttt: 0x55,
        data: Bytes::from_static(b"hi"),
        ..NopIn::default()
    };
    check(
        with_data(b, b"hi"),
        Pdu::NopOut(NopOut::answer(&ping, 9, 0)),
    );
    let mut b = bhs(0x20, 0x80, 2, RESERVED_TAG);
    put(&mut b, 20, &0x55u32.to_be_bytes());
    check(with_data(b, b"hi"), Pdu::NopIn(ping));
}

#[test]
fn digests_crc32c_little_endian() {
    // RFC 3720 B.4 / iSCSI CRC32C check value: crc32c("123456789") = 0xe3069283.
    assert_eq!(iscsi_proto::codec::crc32c(b"123456789"), 0xe306_9283);
    let pdu = Pdu::NopOut(NopOut {
        immediate: true,
        itt: 1,
        ttt: RESERVED_TAG,
        data: Bytes::from_static(b"abcde"),
        ..NopOut::default()
    });
    let d = Digests {
        header: true,
        data: true,
    };
    let wire = pdu.to_bytes(d).unwrap();
    assert_eq!(wire.len(), 48 + 4 + 8 + 4);
    let hcrc = iscsi_proto::codec::crc32c(&wire[..48]);
    assert_eq!(&wire[48..52], &hcrc.to_le_bytes());
    let dcrc = iscsi_proto::codec::crc32c(&wire[52..60]);
    assert_eq!(&wire[60..64], &dcrc.to_le_bytes());
    let mut dec = PduDecoder::new(Limits::default());
    dec.set_digests(d);
    let mut buf = BytesMut::from(&wire[..]);
    assert_eq!(dec.decode(&mut buf).unwrap(), Some(pdu.clone()));
    // Corrupt the data: DataDigest error, PDU consumed, stream stays usable.
    let mut bad = BytesMut::from(&wire[..]);
    bad[53] ^= 1;
    bad.extend_from_slice(&wire);
    assert!(matches!(
        dec.decode(&mut bad),
        Err(DecodeError::DataDigest { .. })
    ));
    assert_eq!(dec.decode(&mut bad).unwrap(), Some(pdu.clone()));
    // Corrupt the header.
    let mut bad = BytesMut::from(&wire[..]);
    bad[20] ^= 1;
    assert!(matches!(
        dec.decode(&mut bad),
        Err(DecodeError::HeaderDigest { .. })
    ));
}

#[test]
fn zero_copy_header_then_payload() {
    let data = Bytes::from(vec![7u8; 4097]);
    let pdu = Pdu::DataIn(DataIn {
        itt: 1,
        data: data.clone(),
        ..DataIn::default()
    });
    let mut hdr = BytesMut::new();
    let payload = pdu
        .encode_header(
            &mut hdr,
            Digests {
                header: false,
                data: true,
            },
        )
        .unwrap();
    assert_eq!(hdr.len(), 48);
    assert_eq!(
        payload.data.as_ptr(),
        data.as_ptr(),
        "payload must be shared, not copied"
    );
    assert_eq!(payload.trailer.as_slice().len(), 3 + 4);
    let mut whole = hdr;
    whole.extend_from_slice(&payload.data);
    whole.extend_from_slice(payload.trailer.as_slice());
    let mut dec = PduDecoder::new(Limits::default());
    dec.set_digests(Digests {
        header: false,
        data: true,
    });
    assert_eq!(dec.decode(&mut whole).unwrap(), Some(pdu));
}

#[test]
fn partial_input_needs_more_and_decodes_without_copy() {
    let pdu = Pdu::DataOut(DataOut {
        data: Bytes::from(vec![1u8; 1000]),
        ..DataOut::default()
    });
    let wire = pdu.to_bytes(Digests::NONE).unwrap();
    let mut dec = PduDecoder::new(Limits::default());
    let mut buf = BytesMut::new();
    for chunk in wire.chunks(97) {
        assert_eq!(dec.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(chunk);
    }
    let start = buf.as_ptr() as usize;
    let Some(Pdu::DataOut(d)) = dec.decode(&mut buf).unwrap() else {
        panic!()
    };
    assert_eq!(
        d.data.as_ptr() as usize,
        start + 48,
        "data segment must not be copied"
    );
}

#[test]
fn limits_and_unknown_opcodes() {
    let mut dec = PduDecoder::new(Limits {
        max_recv_data_segment_length: 1024,
    });
    let mut buf = BytesMut::from(&bhs(0x05, 0x80, 1025, 1)[..]);
    assert_eq!(
        dec.decode(&mut buf),
        Err(DecodeError::DataSegmentTooLarge {
            length: 1025,
            limit: 1024
        })
    );
    let big = PduDecoder::new(Limits {
        max_recv_data_segment_length: u32::MAX,
    });
    assert_eq!(big.limits().max_recv_data_segment_length, 16 * 1024 * 1024);
    let mut buf = BytesMut::from(&with_data(bhs(0x1c, 0x80, 3, 1), b"abc")[..]);
    let err = dec.decode(&mut buf).unwrap_err();
    assert!(matches!(
        err,
        DecodeError::UnknownOpcode { opcode: 0x1c, .. }
    ));
    assert_eq!(err.header().unwrap()[0], 0x1c);
    assert!(err.is_recoverable());
    assert!(buf.is_empty(), "unknown PDU is consumed");
    // SCSI Response whose SenseLength overruns the data segment.
    let mut buf = BytesMut::from(&with_data(bhs(0x21, 0x80, 3, 1), &[0, 9, 1])[..]);
    assert!(matches!(
        dec.decode(&mut buf),
        Err(DecodeError::Malformed { .. })
    ));
    // SCSI Command with an unknown AHS type.
    let mut b = bhs(0x01, 0x80, 0, 1);
    b[4] = 1;
    b.extend_from_slice(&[0, 1, 9, 0]);
    let mut buf = BytesMut::from(&b[..]);
    assert!(matches!(
        dec.decode(&mut buf),
        Err(DecodeError::Malformed { .. })
    ));
}
