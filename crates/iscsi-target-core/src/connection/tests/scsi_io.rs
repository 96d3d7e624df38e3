//! SCSI commands through the core: Data-In, R2T writes, Data-Out errors, task management and
//! the UNIT ATTENTION after a reset (now kept by `scsi::LunTable`).

use iscsi_proto::{DataOut, RESERVED_TAG, TaskMgmtRequest};
use iscsi_proto::{TmfFunction, TmfResponse};
use scsi::{Asc, SenseKey};

use super::*;

/// Sense key and ASC of a fixed-format sense in a SCSI Response.
fn sense_of(p: &Pdu) -> (u8, u8, u8) {
    let Pdu::ScsiResponse(r) = p else {
        panic!("{p:?}")
    };
    (r.status, r.sense[2] & 0x0f, r.sense[12])
}

fn tmf(function: TmfFunction, itt: u32, cmd_sn: u32) -> TaskMgmtRequest {
    TaskMgmtRequest {
        immediate: true,
        function: function as u8,
        itt,
        cmd_sn,
        ..TaskMgmtRequest::default()
    }
}

#[test]
fn data_in_is_split_by_mrdsl_with_status_in_the_last() {
    let mut h = logged_in(&[("MaxRecvDataSegmentLength", "4096")]);
    let o = h.send(read10(9, 10, 0, 20));
    assert_eq!(o.len(), 3, "10240 bytes in 4096-byte segments");
    let mut expect_off = 0;
    for (i, p) in o.iter().enumerate() {
        let Pdu::DataIn(d) = p else { panic!("{p:?}") };
        assert_eq!(d.data_sn, i as u32);
        assert_eq!(d.buffer_offset, expect_off);
        assert!(d.data.len() <= 4096);
        expect_off += d.data.len() as u32;
        let last = i == 2;
        assert_eq!((d.status_present, d.final_), (last, last));
    }
    assert_eq!(expect_off, 10240);
    // Residual underflow: EDTL larger than the transfer.
    let mut r = read10(10, 11, 0, 1);
    r.edtl = 1000;
    let Pdu::DataIn(d) = &h.send(r)[0] else {
        panic!()
    };
    assert!(d.residual_underflow && d.status_present);
    assert_eq!((d.residual_count, d.data.len()), (488, 512));
}

#[test]
fn write_beyond_first_burst_uses_r2ts() {
    let mut h = logged_in(&[
        ("InitialR2T", "No"),
        ("ImmediateData", "Yes"),
        ("FirstBurstLength", "4096"),
        ("MaxBurstLength", "8192"),
        ("MaxOutstandingR2T", "1"),
    ]);
    let payload: Vec<u8> = (0..20480u32).map(|i| (i % 251) as u8).collect();
    let payload = Bytes::from(payload);
    // 40 blocks: 2048 immediate, 2048 unsolicited Data-Out, then R2Ts of 8192, 8192.
    let o = h.send(write10(7, 10, 8, 40, payload.slice(..2048), false));
    let [Pdu::R2t(r1)] = &o[..] else {
        panic!("{o:?}: one R2T, MaxOutstandingR2T=1")
    };
    assert_eq!(
        (r1.r2t_sn, r1.buffer_offset, r1.desired_data_transfer_length),
        (0, 4096, 8192)
    );
    let o = h.send(DataOut {
        final_: true,
        itt: 7,
        ttt: RESERVED_TAG,
        data_sn: 0,
        buffer_offset: 2048,
        data: payload.slice(2048..4096),
        ..DataOut::default()
    });
    assert!(o.is_empty());
    let mut ttt = r1.ttt;
    for (sn, off) in [(0u32, 4096usize), (1, 12288)] {
        for (i, chunk) in [off, off + 4096].iter().enumerate() {
            h.feed_only(DataOut {
                final_: i == 1,
                itt: 7,
                ttt,
                data_sn: i as u32,
                buffer_offset: *chunk as u32,
                data: payload.slice(*chunk..*chunk + 4096),
                ..DataOut::default()
            });
        }
        h.run();
        let o = h.out();
        if sn == 0 {
            let [Pdu::R2t(r2)] = &o[..] else {
                panic!("{o:?}")
            };
            assert_eq!((r2.r2t_sn, r2.buffer_offset), (1, 12288));
            ttt = r2.ttt;
        } else {
            let [Pdu::ScsiResponse(r)] = &o[..] else {
                panic!("{o:?}")
            };
            assert_eq!((r.status, r.residual_count, r.exp_data_sn), (0, 0, 2));
        }
    }
    // Read it back.
    let got: Vec<u8> = h
        .send(read10(8, 11, 8, 40))
        .iter()
        .flat_map(|p| match p {
            Pdu::DataIn(d) => d.data.to_vec(),
            _ => vec![],
        })
        .collect();
    assert_eq!(got, payload);
}

#[test]
fn a_write_with_a_short_edtl_writes_what_it_can_and_reports_overflow() {
    let mut h = logged_in(&[("ImmediateData", "Yes")]);
    let mut w = write10(1, 10, 0, 2, Bytes::from(vec![9u8; 512]), true);
    w.edtl = 512;
    let o = h.send(w);
    let [Pdu::ScsiResponse(r)] = &o[..] else {
        panic!("{o:?}")
    };
    assert_eq!(
        (r.status, r.residual_overflow, r.residual_count),
        (0, true, 512)
    );
}

#[test]
fn bad_data_sn_ends_the_task_with_data_phase_error() {
    let mut h = logged_in(&[("InitialR2T", "No"), ("ImmediateData", "No")]);
    assert!(h.send(write10(7, 10, 0, 1, Bytes::new(), false)).is_empty());
    let o = h.send(DataOut {
        final_: true,
        itt: 7,
        ttt: RESERVED_TAG,
        data_sn: 27,
        data: Bytes::from(vec![0u8; 512]),
        ..DataOut::default()
    });
    assert_eq!(
        sense_of(&o[0]),
        (2, SenseKey::AbortedCommand as u8, Asc::DATA_PHASE_ERROR.asc)
    );
    assert!(!h.conn.is_closing());
    // Its further data is ignored.
    assert!(
        h.send(DataOut {
            itt: 7,
            ttt: RESERVED_TAG,
            data_sn: 0,
            data: Bytes::from(vec![0u8; 512]),
            ..DataOut::default()
        })
        .is_empty()
    );
}

#[test]
fn abort_task_of_an_answered_task_and_of_a_waiting_write() {
    let mut h = logged_in(&[("InitialR2T", "Yes")]);
    h.send(read10(5, 10, 0, 1));
    let mut abort = tmf(TmfFunction::AbortTask, 6, 11);
    abort.referenced_task_tag = 5;
    abort.ref_cmd_sn = 10;
    let Pdu::TaskMgmtResponse(t) = &h.send(abort)[0] else {
        panic!()
    };
    assert_eq!(t.response, TmfResponse::TASK_DOES_NOT_EXIST);
    // A write waiting for R2T data: aborted, its data then ignored.
    let o = h.send(write10(8, 11, 0, 1, Bytes::new(), true));
    assert!(matches!(o[..], [Pdu::R2t(_)]));
    let mut abort = tmf(TmfFunction::AbortTask, 9, 12);
    abort.referenced_task_tag = 8;
    let Pdu::TaskMgmtResponse(t) = &h.send(abort)[0] else {
        panic!()
    };
    assert_eq!(t.response, TmfResponse::FUNCTION_COMPLETE);
    // Unknown LUN, TASK REASSIGN and an unknown function.
    let mut reset = tmf(TmfFunction::LogicalUnitReset, 10, 12);
    reset.lun = scsi::encode_lun(3).unwrap();
    let Pdu::TaskMgmtResponse(t) = &h.send(reset)[0] else {
        panic!()
    };
    assert_eq!(t.response, TmfResponse::LUN_DOES_NOT_EXIST);
    let Pdu::TaskMgmtResponse(t) = &h.send(tmf(TmfFunction::TaskReassign, 11, 12))[0] else {
        panic!()
    };
    assert_eq!(
        t.response,
        TmfResponse::TASK_ALLEGIANCE_REASSIGNMENT_NOT_SUPPORTED
    );
    let mut odd = tmf(TmfFunction::AbortTask, 12, 12);
    odd.function = 42;
    let Pdu::TaskMgmtResponse(t) = &h.send(odd)[0] else {
        panic!()
    };
    assert_eq!(t.response, TmfResponse::FUNCTION_NOT_SUPPORTED);
    assert!(h.side_effects.is_empty());
}

#[test]
fn unit_attention_once_after_a_lun_reset() {
    let mut h = logged_in(&[]);
    let Pdu::TaskMgmtResponse(t) = &h.send(tmf(TmfFunction::LogicalUnitReset, 7, 10))[0] else {
        panic!()
    };
    assert_eq!(t.response, TmfResponse::FUNCTION_COMPLETE);
    assert_eq!(h.side_effects, ["lun reset 0"]);
    // INQUIRY is not affected (SPC-4 §5.14).
    let mut inquiry = read10(8, 10, 0, 0);
    inquiry.cdb = [0; 16];
    inquiry.cdb[0] = scsi::cdb::opcode::INQUIRY;
    inquiry.cdb[4] = 36;
    inquiry.edtl = 36;
    assert!(matches!(h.send(inquiry)[0], Pdu::DataIn(_)));
    // The next command gets one UNIT ATTENTION, the one after runs.
    let o = h.send(read10(9, 11, 0, 1));
    assert_eq!(
        sense_of(&o[0]),
        (
            2,
            SenseKey::UnitAttention as u8,
            Asc::POWER_ON_RESET_OCCURRED.asc
        )
    );
    assert!(matches!(h.send(read10(10, 12, 0, 1))[0], Pdu::DataIn(_)));
}

#[test]
fn target_cold_reset_resets_and_closes() {
    let mut h = logged_in(&[]);
    let o = h.send(tmf(TmfFunction::TargetColdReset, 7, 10));
    assert!(matches!(&o[..], [Pdu::TaskMgmtResponse(t)] if t.response == 0));
    assert_eq!(h.side_effects, ["target reset"]);
    assert_eq!(h.conn.close_reason(), Some(&CloseReason::ColdReset));
}

#[test]
fn read_buffers_are_reused_once_the_pdus_are_gone() {
    let mut h = logged_in(&[]);
    let first = h.send(read10(1, 10, 0, 256));
    let Pdu::DataIn(d) = &first[0] else { panic!() };
    let ptr = d.data.as_ptr();
    drop(first);
    let again = h.send(read10(2, 11, 0, 256));
    let Pdu::DataIn(d) = &again[0] else { panic!() };
    assert_eq!(
        d.data.as_ptr(),
        ptr,
        "the 128 KiB buffer came back from the pool"
    );
}

#[test]
fn queued_bytes_counts_data_in_and_headers_until_transmitted() {
    let mut h = logged_in(&[("MaxRecvDataSegmentLength", "4096")]);
    assert_eq!(h.conn.queued_bytes(), 0);
    h.feed_only(read10(9, 10, 0, 20));
    h.run();
    // 10240 bytes in three Data-In PDUs.
    assert_eq!(h.conn.queued_bytes(), 10240 + 3 * iscsi_proto::BHS_LEN);
    h.feed_only(read10(10, 11, 0, 1));
    h.run();
    assert_eq!(
        h.conn.queued_bytes(),
        10240 + 512 + 4 * iscsi_proto::BHS_LEN
    );
    assert_eq!(h.out().len(), 4);
    assert_eq!(h.conn.queued_bytes(), 0);
}

#[test]
fn outstanding_commands_are_those_received_and_not_yet_answered() {
    let mut h = logged_in(&[("InitialR2T", "Yes"), ("ImmediateData", "No")]);
    assert_eq!(h.conn.outstanding_commands(), 0);
    // CmdSN 11 and 12 arrive before 10: held for their turn.
    let o = h.send(read10(21, 11, 0, 1));
    assert!(o.is_empty());
    h.send(read10(22, 12, 0, 1));
    assert_eq!(h.conn.outstanding_commands(), 2);
    // A WRITE waiting for its Data-Out, CmdSN 13: also ahead for now.
    h.send(write10(23, 13, 0, 1, Bytes::new(), true));
    assert_eq!(h.conn.outstanding_commands(), 3);
    // CmdSN 10 arrives: the READs are answered, the WRITE waits for its data after an R2T.
    h.feed_only(read10(20, 10, 0, 1));
    h.conn.on_bytes(&mut h.rbuf, h.now, &mut h.policy);
    assert_eq!(h.conn.outstanding_commands(), 4, "decoded, not yet run");
    h.run();
    let o = h.out();
    assert_eq!(o.iter().filter(|p| matches!(p, Pdu::DataIn(_))).count(), 3);
    let Some(Pdu::R2t(r2t)) = o.iter().find(|p| matches!(p, Pdu::R2t(_))) else {
        panic!("{o:?}")
    };
    assert_eq!(h.conn.outstanding_commands(), 1, "the WRITE");
    h.send(DataOut {
        final_: true,
        itt: 23,
        ttt: r2t.ttt,
        data: Bytes::from(vec![0u8; 512]),
        ..DataOut::default()
    });
    assert_eq!(h.conn.outstanding_commands(), 0);
}
