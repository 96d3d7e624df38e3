//! Property tests: every PDU kind survives encode -> decode unchanged (with and
//! without digests), and arbitrary input never panics the decoder.

use bytes::{Bytes, BytesMut};
use iscsi_proto::*;
use proptest::prelude::*;

fn data() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..300).prop_map(Bytes::from)
}

fn stage() -> impl Strategy<Value = Stage> {
    (0u8..4).prop_map(Stage::from_bits)
}

fn sns() -> impl Strategy<Value = (u32, u32, u32)> {
    (any::<u32>(), any::<u32>(), any::<u32>())
}

fn pdu() -> impl Strategy<Value = Pdu> {
    prop_oneof![
        (any::<(bool, u64, u32, u32, u32, u32)>(), data()).prop_map(
            |((immediate, lun, itt, ttt, cmd_sn, exp_stat_sn), data)| {
                Pdu::NopOut(NopOut {
                    immediate,
                    lun,
                    itt,
                    ttt,
                    cmd_sn,
                    exp_stat_sn,
                    data,
                })
            }
        ),
        (
            any::<(bool, bool, bool, bool, u64, u32, u32, u32, u32)>(),
            0u8..8,
            any::<[u8; 16]>(),
            prop::option::of(prop::collection::vec(any::<u8>(), 0..240)),
            any::<Option<u32>>(),
            data()
        )
            .prop_map(
                |(
                    (immediate, final_, read, write, lun, itt, edtl, cmd_sn, exp_stat_sn),
                    attr,
                    cdb,
                    ext,
                    bidi,
                    data,
                )| {
                    Pdu::ScsiCommand(ScsiCommand {
                        immediate,
                        final_,
                        read,
                        write,
                        attr,
                        lun,
                        itt,
                        edtl,
                        cmd_sn,
                        exp_stat_sn,
                        cdb,
                        ext_cdb: ext.map(Bytes::from),
                        bidi_read_edtl: bidi,
                        data,
                    })
                }
            ),
        (any::<(bool, u64, u32, u32, u32, u32, u32, u32)>(), 0u8..128).prop_map(
            |(
                (
                    immediate,
                    lun,
                    itt,
                    referenced_task_tag,
                    cmd_sn,
                    exp_stat_sn,
                    ref_cmd_sn,
                    exp_data_sn,
                ),
                function,
            )| {
                Pdu::TaskMgmtRequest(TaskMgmtRequest {
                    immediate,
                    function,
                    lun,
                    itt,
                    referenced_task_tag,
                    cmd_sn,
                    exp_stat_sn,
                    ref_cmd_sn,
                    exp_data_sn,
                })
            }
        ),
        (
            any::<(bool, bool, u8, u8, [u8; 6], u16, u32, u16, u32, u32)>(),
            stage(),
            stage(),
            data()
        )
            .prop_map(
                |(
                    (
                        transit,
                        continue_,
                        version_max,
                        version_min,
                        isid,
                        tsih,
                        itt,
                        cid,
                        cmd_sn,
                        exp_stat_sn,
                    ),
                    csg,
                    nsg,
                    data,
                )| {
                    Pdu::LoginRequest(LoginRequest {
                        transit,
                        continue_,
                        csg,
                        nsg,
                        version_max,
                        version_min,
                        isid,
                        tsih,
                        itt,
                        cid,
                        cmd_sn,
                        exp_stat_sn,
                        data,
                    })
                }
            ),
        (any::<(bool, bool, bool, u64, u32, u32, u32, u32)>(), data()).prop_map(
            |((immediate, final_, continue_, lun, itt, ttt, cmd_sn, exp_stat_sn), data)| {
                Pdu::TextRequest(TextRequest {
                    immediate,
                    final_,
                    continue_,
                    lun,
                    itt,
                    ttt,
                    cmd_sn,
                    exp_stat_sn,
                    data,
                })
            }
        ),
        (any::<(bool, u64, u32, u32, u32, u32, u32)>(), data()).prop_map(
            |((final_, lun, itt, ttt, exp_stat_sn, data_sn, buffer_offset), data)| {
                Pdu::DataOut(DataOut {
                    final_,
                    lun,
                    itt,
                    ttt,
                    exp_stat_sn,
                    data_sn,
                    buffer_offset,
                    data,
                })
            }
        ),
        (any::<(bool, u32, u16, u32, u32)>(), 0u8..128).prop_map(
            |((immediate, itt, cid, cmd_sn, exp_stat_sn), reason_code)| {
                Pdu::LogoutRequest(LogoutRequest {
                    immediate,
                    reason_code,
                    itt,
                    cid,
                    cmd_sn,
                    exp_stat_sn,
                })
            }
        ),
        (any::<(u64, u32, u32, u32, u32, u32)>(), 0u8..16).prop_map(
            |((lun, itt, ttt, exp_stat_sn, beg_run, run_length), snack_type)| {
                Pdu::SnackRequest(SnackRequest {
                    snack_type,
                    lun,
                    itt,
                    ttt,
                    exp_stat_sn,
                    beg_run,
                    run_length,
                })
            }
        ),
        (any::<(u64, u32, u32)>(), sns(), data()).prop_map(
            |((lun, itt, ttt), (stat_sn, exp_cmd_sn, max_cmd_sn), data)| {
                Pdu::NopIn(NopIn {
                    lun,
                    itt,
                    ttt,
                    stat_sn,
                    exp_cmd_sn,
                    max_cmd_sn,
                    data,
                })
            }
        ),
        (
            any::<(bool, bool, bool, bool, u8, u8, u32, u32)>(),
            sns(),
            any::<(u32, u32, u32)>(),
            data()
        )
            .prop_map(
                |(
                    (o, u, oo, uu, response, status, itt, snack_tag),
                    (stat_sn, exp_cmd_sn, max_cmd_sn),
                    (exp_data_sn, brrc, rc),
                    sense,
                )| {
                    Pdu::ScsiResponse(ScsiResponse {
                        bidi_read_residual_overflow: o,
                        bidi_read_residual_underflow: u,
                        residual_overflow: oo,
                        residual_underflow: uu,
                        response,
                        status,
                        itt,
                        snack_tag,
                        stat_sn,
                        exp_cmd_sn,
                        max_cmd_sn,
                        exp_data_sn,
                        bidi_read_residual_count: brrc,
                        residual_count: rc,
                        sense,
                    })
                }
            ),
        (any::<(u8, u32)>(), sns()).prop_map(
            |((response, itt), (stat_sn, exp_cmd_sn, max_cmd_sn))| {
                Pdu::TaskMgmtResponse(TaskMgmtResponse {
                    response,
                    itt,
                    stat_sn,
                    exp_cmd_sn,
                    max_cmd_sn,
                })
            }
        ),
        (
            any::<(bool, bool, u8, u8, [u8; 6], u16, u32, u8, u8)>(),
            stage(),
            stage(),
            sns(),
            data()
        )
            .prop_map(
                |(
                    (transit, continue_, version_max, version_active, isid, tsih, itt, sc, sd),
                    csg,
                    nsg,
                    (stat_sn, exp_cmd_sn, max_cmd_sn),
                    data,
                )| {
                    Pdu::LoginResponse(LoginResponse {
                        transit,
                        continue_,
                        csg,
                        nsg,
                        version_max,
                        version_active,
                        isid,
                        tsih,
                        itt,
                        stat_sn,
                        exp_cmd_sn,
                        max_cmd_sn,
                        status_class: sc,
                        status_detail: sd,
                        data,
                    })
                }
            ),
        (any::<(bool, bool, u64, u32, u32)>(), sns(), data()).prop_map(
            |((final_, continue_, lun, itt, ttt), (stat_sn, exp_cmd_sn, max_cmd_sn), data)| {
                Pdu::TextResponse(TextResponse {
                    final_,
                    continue_,
                    lun,
                    itt,
                    ttt,
                    stat_sn,
                    exp_cmd_sn,
                    max_cmd_sn,
                    data,
                })
            }
        ),
        (
            any::<(bool, bool, bool, bool, bool, u8, u64, u32, u32)>(),
            sns(),
            any::<(u32, u32, u32)>(),
            data()
        )
            .prop_map(
                |(
                    (
                        final_,
                        ack,
                        residual_overflow,
                        residual_underflow,
                        status_present,
                        status,
                        lun,
                        itt,
                        ttt,
                    ),
                    (stat_sn, exp_cmd_sn, max_cmd_sn),
                    (data_sn, buffer_offset, residual_count),
                    data,
                )| {
                    Pdu::DataIn(DataIn {
                        final_,
                        ack,
                        residual_overflow,
                        residual_underflow,
                        status_present,
                        status,
                        lun,
                        itt,
                        ttt,
                        stat_sn,
                        exp_cmd_sn,
                        max_cmd_sn,
                        data_sn,
                        buffer_offset,
                        residual_count,
                        data,
                    })
                }
            ),
        (any::<(u8, u32, u16, u16)>(), sns()).prop_map(
            |((response, itt, time2wait, time2retain), (stat_sn, exp_cmd_sn, max_cmd_sn))| {
                Pdu::LogoutResponse(LogoutResponse {
                    response,
                    itt,
                    stat_sn,
                    exp_cmd_sn,
                    max_cmd_sn,
                    time2wait,
                    time2retain,
                })
            }
        ),
        (any::<(u64, u32, u32, u32, u32, u32)>(), sns()).prop_map(
            |((lun, itt, ttt, r2t_sn, buffer_offset, ddtl), (stat_sn, exp_cmd_sn, max_cmd_sn))| {
                Pdu::R2t(R2t {
                    lun,
                    itt,
                    ttt,
                    stat_sn,
                    exp_cmd_sn,
                    max_cmd_sn,
                    r2t_sn,
                    buffer_offset,
                    desired_data_transfer_length: ddtl,
                })
            }
        ),
        (any::<(u64, u8, u8, u16, u16, u16)>(), sns(), data()).prop_map(
            |(
                (lun, async_event, async_vcode, parameter1, parameter2, parameter3),
                (stat_sn, exp_cmd_sn, max_cmd_sn),
                data,
            )| {
                Pdu::AsyncMessage(AsyncMessage {
                    lun,
                    stat_sn,
                    exp_cmd_sn,
                    max_cmd_sn,
                    async_event,
                    async_vcode,
                    parameter1,
                    parameter2,
                    parameter3,
                    data,
                })
            }
        ),
        (any::<(u8, u32)>(), sns(), data()).prop_map(
            |((reason, data_sn), (stat_sn, exp_cmd_sn, max_cmd_sn), header)| {
                Pdu::Reject(Reject {
                    reason,
                    stat_sn,
                    exp_cmd_sn,
                    max_cmd_sn,
                    data_sn,
                    header,
                })
            }
        ),
    ]
}

fn digests() -> impl Strategy<Value = Digests> {
    any::<(bool, bool)>().prop_map(|(header, data)| Digests { header, data })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn encode_then_decode_is_identity(p in pdu(), d in digests(), split in 0usize..800) {
        let wire = p.to_bytes(d).unwrap();
        prop_assert_eq!(wire.len() % 4, 0);
        let mut dec = PduDecoder::new(Limits::default());
        dec.set_digests(d);
        // Feed in two pieces to exercise the need-more path.
        let split = split.min(wire.len());
        let mut buf = BytesMut::from(&wire[..split]);
        if split < wire.len() {
            prop_assert_eq!(dec.decode(&mut buf).unwrap(), None);
            buf.extend_from_slice(&wire[split..]);
        }
        let got = dec.decode(&mut buf).unwrap();
        prop_assert_eq!(got, Some(p));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..2048),
        d in digests(),
        limit in 0u32..4096,
    ) {
        let mut dec = PduDecoder::new(Limits { max_recv_data_segment_length: limit });
        dec.set_digests(d);
        let mut buf = BytesMut::from(&bytes[..]);
        for _ in 0..100 {
            match dec.decode(&mut buf) {
                Ok(Some(p)) => {
                    // Whatever decodes re-encodes and decodes to the same value.
                    let wire = p.to_bytes(d).unwrap();
                    let mut again = BytesMut::from(&wire[..]);
                    let mut dec2 = PduDecoder::new(Limits { max_recv_data_segment_length: 1 << 24 });
                    dec2.set_digests(d);
                    prop_assert_eq!(dec2.decode(&mut again).unwrap(), Some(p));
                }
                Ok(None) => break,
                Err(e) if e.is_recoverable() => {}
                Err(_) => break,
            }
        }
    }

    #[test]
    fn flipped_byte_is_caught_by_digests(p in pdu(), pos in any::<prop::sample::Index>()) {
        let d = Digests { header: true, data: true };
        let wire = p.to_bytes(d).unwrap();
        let mut bad = BytesMut::from(&wire[..]);
        let i = pos.index(bad.len());
        bad[i] ^= 0x01;
        let mut dec = PduDecoder::new(Limits { max_recv_data_segment_length: 1 << 24 });
        dec.set_digests(d);
        // Either framing changed (need more / too large) or a digest error is reported;
        // never a silently different PDU.
        let res = dec.decode(&mut bad);
        prop_assert!(
            !matches!(res, Ok(Some(_))),
            "corruption not detected: {:?}",
            res
        );
    }

    #[test]
    fn a_data_out_header_read_ahead_is_what_decode_gives(
        p in pdu(),
        header_digest in any::<bool>(),
        data_digest in any::<bool>(),
        cut in any::<prop::sample::Index>(),
        flip in any::<Option<prop::sample::Index>>(),
    ) {
        let d = Digests { header: header_digest, data: data_digest };
        let wire = p.to_bytes(d).unwrap();
        let mut bad = wire.to_vec();
        if let Some(i) = &flip {
            bad[i.index(BHS_LEN)] ^= 0x10;
        }
        let mut dec = PduDecoder::new(Limits { max_recv_data_segment_length: 1 << 24 });
        dec.set_digests(d);
        let header_len = BHS_LEN + if header_digest { 4 } else { 0 };
        let held = cut.index(bad.len() + 1);
        let seen = dec.data_out_header(&bad[..held], 4);
        let plain = match &p {
            Pdu::DataOut(o) => !o.data.is_empty() && o.data.len() % 4 == 0 && !data_digest,
            _ => false,
        };
        match seen {
            // Whatever it returns is the PDU decode gives for the same (possibly altered)
            // header, short of its data: never a header decode would refuse.
            Some(h) => {
                prop_assert!(held >= h.header_len && held < h.header_len + h.data_len as usize);
                prop_assert_eq!(h.header_len, header_len);
                let mut whole = BytesMut::from(&bad[..]);
                let mut dec2 = dec.clone();
                match dec2.decode(&mut whole) {
                    Ok(Some(Pdu::DataOut(full))) => {
                        prop_assert_eq!(h.data_len as usize, full.data.len());
                        let mut no_data = full.clone();
                        no_data.data = Bytes::new();
                        prop_assert_eq!(h.pdu, no_data);
                    }
                    // A flipped length may ask for more than the wire holds.
                    Ok(None) => prop_assert!(flip.is_some()),
                    other => prop_assert!(false, "read ahead a header decode gives as {:?}", other),
                }
            }
            None => prop_assert!(
                !plain || flip.is_some() || held < header_len || held >= wire.len(),
                "a plain Data-Out cut at {held} of {} was not recognised", wire.len()
            ),
        }
    }
}
