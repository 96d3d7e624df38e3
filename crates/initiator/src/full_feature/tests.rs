//! Unit tests of the sans-IO full feature session: PDUs in, PDUs and completions out.

use super::*;
use crate::cdb;
use iscsi_proto::{
    AsyncMessage, DataIn, DataOut, LogoutResponse, NopIn, NopOut, R2t, Reject, ScsiCommand,
    ScsiResponse, async_event, logout_reason,
};

fn logged_in(params: SessionParams, max_cmd_sn: u32) -> LoggedIn {
    LoggedIn {
        params,
        tsih: 1,
        cmd_sn: 10,
        max_cmd_sn,
        exp_stat_sn: 50,
    }
}

fn session_with(params: SessionParams, max_cmd_sn: u32, depth: usize) -> FullFeatureSession {
    FullFeatureSession::new(&logged_in(params, max_cmd_sn), depth)
}

fn drain_out(c: &mut FullFeatureSession) -> Vec<Pdu> {
    std::iter::from_fn(|| c.poll_transmit()).collect()
}

fn command(p: &Pdu) -> &ScsiCommand {
    match p {
        Pdu::ScsiCommand(c) => c,
        other => panic!("expected a SCSI Command, got {other:?}"),
    }
}

fn data_in(itt: u32, data_sn: u32, offset: u32, data: &[u8], status: Option<u8>) -> Pdu {
    Pdu::DataIn(DataIn {
        final_: status.is_some(),
        status_present: status.is_some(),
        status: status.unwrap_or(0),
        itt,
        stat_sn: 50,
        exp_cmd_sn: 11,
        max_cmd_sn: 40,
        data_sn,
        buffer_offset: offset,
        data: Bytes::copy_from_slice(data),
        ..Default::default()
    })
}

#[test]
fn read_assembles_data_in_with_status() {
    let mut c = session_with(SessionParams::default(), 40, 8);
    c.submit(1, cdb::read16(1, 0, 2, 4));
    let out = drain_out(&mut c);
    let cmd = command(&out[0]).clone();
    assert!(cmd.read && cmd.final_ && !cmd.write);
    assert_eq!((cmd.edtl, cmd.cmd_sn, cmd.exp_stat_sn), (8, 10, 50));
    assert_eq!(
        cmd.lun, 0x0001_0000_0000_0000,
        "LUN 1, peripheral addressing"
    );
    c.receive(data_in(cmd.itt, 0, 0, &[1, 2, 3, 4], None))
        .unwrap();
    assert!(c.poll_completion().is_none());
    c.receive(data_in(cmd.itt, 1, 4, &[5, 6, 7, 8], Some(0)))
        .unwrap();
    let done = c.poll_completion().unwrap();
    assert_eq!(done.id, 1);
    assert_eq!(
        done.result.unwrap().data.as_ref(),
        &[1, 2, 3, 4, 5, 6, 7, 8]
    );
    assert_eq!(c.outstanding(), 0);
}

/// Data-In out of order (a target with DataPDUInOrder=No) and a segment the target never
/// sent: each lands at its offset, the missing one reads as zeros.
#[test]
fn read_places_out_of_order_data_in_by_offset() {
    let mut c = session_with(SessionParams::default(), 40, 8);
    c.submit(1, cdb::read16(1, 0, 3, 4));
    let itt = command(&drain_out(&mut c)[0]).itt;
    c.receive(data_in(itt, 0, 8, &[9, 10, 11, 12], None))
        .unwrap();
    c.receive(data_in(itt, 1, 0, &[1, 2, 3, 4], Some(0)))
        .unwrap();
    let done = c.poll_completion().unwrap();
    let data = done.result.unwrap().data;
    assert_eq!(data.as_ref(), &[1, 2, 3, 4, 0, 0, 0, 0, 9, 10, 11, 12]);
}

#[test]
fn read_with_underflow_in_scsi_response() {
    let mut c = session_with(SessionParams::default(), 40, 8);
    c.submit(7, cdb::inquiry(0, 96));
    let itt = command(&drain_out(&mut c)[0]).itt;
    c.receive(data_in(itt, 0, 0, &[0xaa; 36], None)).unwrap();
    c.receive(Pdu::ScsiResponse(ScsiResponse {
        itt,
        residual_underflow: true,
        residual_count: 60,
        stat_sn: 50,
        exp_cmd_sn: 11,
        max_cmd_sn: 40,
        ..Default::default()
    }))
    .unwrap();
    let r = c.poll_completion().unwrap().result.unwrap();
    assert_eq!(r.data.len(), 36);
    assert_eq!(r.residual_underflow, 60);
}

#[test]
fn check_condition_carries_sense() {
    let mut c = session_with(SessionParams::default(), 40, 8);
    c.submit(3, cdb::read16(1, 1 << 40, 1, 512));
    let itt = command(&drain_out(&mut c)[0]).itt;
    let mut sense = vec![0u8; 18];
    sense[0] = 0x70;
    sense[2] = 0x05;
    sense[12] = 0x21;
    c.receive(Pdu::ScsiResponse(ScsiResponse {
        itt,
        status: scsi::task::ScsiStatus::CheckCondition as u8,
        stat_sn: 50,
        exp_cmd_sn: 11,
        max_cmd_sn: 40,
        sense: Bytes::from(sense),
        ..Default::default()
    }))
    .unwrap();
    let e = c.poll_completion().unwrap().result.unwrap_err();
    assert_eq!(
        e,
        TaskError::CheckCondition(scsi::Sense::lba_out_of_range())
    );
    assert!(!e.is_retryable());
}

#[test]
fn write_immediate_data_then_r2t() {
    let params = SessionParams {
        initial_r2t: true,
        immediate_data: true,
        first_burst_length: 4096,
        max_burst_length: 8192,
        target_max_recv_data_segment_length: 2048,
        ..Default::default()
    };
    let mut c = session_with(params, 40, 8);
    let payload: Vec<u8> = (0..12288u32).map(|i| i as u8).collect();
    c.submit(5, cdb::write16(1, 0, 4096, Bytes::from(payload.clone())));
    let out = drain_out(&mut c);
    assert_eq!(
        out.len(),
        1,
        "InitialR2T=Yes: only the command with immediate data"
    );
    let cmd = command(&out[0]).clone();
    assert!(cmd.write && cmd.final_);
    assert_eq!(
        cmd.data.len(),
        2048,
        "immediate data bounded by the target's MRDSL"
    );
    c.receive(Pdu::R2t(R2t {
        itt: cmd.itt,
        ttt: 0x77,
        exp_cmd_sn: 11,
        max_cmd_sn: 40,
        r2t_sn: 0,
        buffer_offset: 2048,
        desired_data_transfer_length: 8192,
        ..Default::default()
    }))
    .unwrap();
    let outs = drain_out(&mut c);
    assert_eq!(outs.len(), 4);
    let mut next = 2048u32;
    for (i, p) in outs.iter().enumerate() {
        let Pdu::DataOut(d) = p else {
            panic!("expected Data-Out")
        };
        assert_eq!((d.ttt, d.data_sn, d.buffer_offset), (0x77, i as u32, next));
        assert_eq!(d.final_, i == 3);
        assert_eq!(
            d.data.as_ref(),
            &payload[next as usize..next as usize + 2048]
        );
        next += 2048;
    }
    c.receive(Pdu::R2t(R2t {
        itt: cmd.itt,
        ttt: 0x78,
        exp_cmd_sn: 11,
        max_cmd_sn: 40,
        r2t_sn: 1,
        buffer_offset: 10240,
        desired_data_transfer_length: 2048,
        ..Default::default()
    }))
    .unwrap();
    assert_eq!(drain_out(&mut c).len(), 1);
    // R2T outside the buffer is a protocol error for the connection.
    assert!(
        c.receive(Pdu::R2t(R2t {
            itt: cmd.itt,
            buffer_offset: 12000,
            desired_data_transfer_length: 2048,
            ..Default::default()
        }))
        .is_err()
    );
}

#[test]
fn write_unsolicited_data_out_when_initial_r2t_no() {
    let params = SessionParams {
        initial_r2t: false,
        immediate_data: true,
        first_burst_length: 8192,
        target_max_recv_data_segment_length: 2048,
        ..Default::default()
    };
    let mut c = session_with(params, 40, 8);
    c.submit(5, cdb::write16(1, 0, 512, Bytes::from(vec![9u8; 16384])));
    let out = drain_out(&mut c);
    let cmd = command(&out[0]);
    assert!(!cmd.final_, "unsolicited Data-Out follows");
    assert_eq!(cmd.data.len(), 2048);
    let dos: Vec<&DataOut> = out[1..]
        .iter()
        .map(|p| match p {
            Pdu::DataOut(d) => d,
            _ => panic!("expected Data-Out"),
        })
        .collect();
    assert_eq!(
        dos.len(),
        3,
        "FirstBurstLength 8192 = 2048 immediate + 3 x 2048"
    );
    assert!(dos.iter().all(|d| d.ttt == RESERVED_TAG));
    assert!(dos[2].final_ && !dos[0].final_);
    assert_eq!(dos[2].buffer_offset + 2048, 8192);
}

#[test]
fn cmd_sn_window_and_queue_depth_bound_issuing() {
    // MaxCmdSN = 11 allows CmdSN 10 and 11 only.
    let mut c = session_with(SessionParams::default(), 11, 8);
    for id in 0..5 {
        c.submit(id, cdb::test_unit_ready(1));
    }
    let out = drain_out(&mut c);
    assert_eq!(out.len(), 2);
    assert_eq!((c.outstanding(), c.queued()), (2, 3));
    // A response opens the window to 13.
    let itt = command(&out[0]).itt;
    c.receive(Pdu::ScsiResponse(ScsiResponse {
        itt,
        stat_sn: 50,
        exp_cmd_sn: 11,
        max_cmd_sn: 13,
        ..Default::default()
    }))
    .unwrap();
    let out = drain_out(&mut c);
    let sns: Vec<u32> = out.iter().map(|p| command(p).cmd_sn).collect();
    assert_eq!(sns, vec![12, 13]);
    assert_eq!(command(&out[0]).exp_stat_sn, 51);
    // MaxCmdSN < ExpCmdSN - 1 is ignored (§4.2.2.1).
    c.receive(Pdu::NopIn(NopIn {
        itt: RESERVED_TAG,
        ttt: RESERVED_TAG,
        exp_cmd_sn: 20,
        max_cmd_sn: 5,
        ..Default::default()
    }))
    .unwrap();
    assert!(drain_out(&mut c).is_empty());
    // Queue depth bounds too.
    let mut d = session_with(SessionParams::default(), 1000, 2);
    for id in 0..5 {
        d.submit(id, cdb::test_unit_ready(1));
    }
    assert_eq!(drain_out(&mut d).len(), 2);
}

#[test]
fn nop_in_with_ttt_is_answered() {
    let mut c = session_with(SessionParams::default(), 40, 8);
    c.receive(Pdu::NopIn(NopIn {
        itt: RESERVED_TAG,
        ttt: 0x1234,
        stat_sn: 50,
        exp_cmd_sn: 10,
        max_cmd_sn: 40,
        data: Bytes::from_static(b"ping"),
        ..Default::default()
    }))
    .unwrap();
    let out = drain_out(&mut c);
    let Pdu::NopOut(n) = &out[0] else {
        panic!("expected NOP-Out")
    };
    assert_eq!((n.itt, n.ttt, n.cmd_sn), (RESERVED_TAG, 0x1234, 10));
    assert!(n.immediate);
    assert_eq!(n.data.as_ref(), b"ping");
    // Without a TTT nothing is sent.
    c.receive(Pdu::NopIn(NopIn {
        itt: RESERVED_TAG,
        ttt: RESERVED_TAG,
        ..Default::default()
    }))
    .unwrap();
    assert!(drain_out(&mut c).is_empty());
}

fn async_msg(event: u8, p2: u16, p3: u16) -> Pdu {
    Pdu::AsyncMessage(AsyncMessage {
        async_event: event,
        stat_sn: 50,
        exp_cmd_sn: 10,
        max_cmd_sn: 40,
        parameter2: p2,
        parameter3: p3,
        ..Default::default()
    })
}

#[test]
fn logout_requested_drains_then_logs_out() {
    let mut c = session_with(SessionParams::default(), 40, 2);
    for id in 0..4 {
        c.submit(id, cdb::test_unit_ready(1));
    }
    let out = drain_out(&mut c);
    assert_eq!(out.len(), 2);
    c.receive(async_msg(async_event::LOGOUT_REQUESTED, 0, 5))
        .unwrap();
    assert_eq!(
        c.poll_event(),
        Some(FullFeatureEvent::LogoutRequested { within_secs: 5 })
    );
    assert_eq!(c.phase(), Phase::Draining);
    // Completing the first task must not issue the queued ones.
    let itts: Vec<u32> = out.iter().map(|p| command(p).itt).collect();
    let resp = |itt| {
        Pdu::ScsiResponse(ScsiResponse {
            itt,
            stat_sn: 51,
            exp_cmd_sn: 11,
            max_cmd_sn: 40,
            ..Default::default()
        })
    };
    c.receive(resp(itts[0])).unwrap();
    assert!(drain_out(&mut c).is_empty());
    c.receive(resp(itts[1])).unwrap();
    let out = drain_out(&mut c);
    let Pdu::LogoutRequest(l) = &out[0] else {
        panic!("expected Logout, got {out:?}")
    };
    assert_eq!(l.reason_code, logout_reason::CLOSE_SESSION);
    assert_eq!(l.exp_stat_sn, 52);
    assert_eq!(c.phase(), Phase::LoggingOut);
    let done: Vec<Completion> = std::iter::from_fn(|| c.poll_completion()).collect();
    assert_eq!(done.len(), 2);
    assert!(done.iter().all(|d| d.result.is_ok()));
    c.receive(Pdu::LogoutResponse(LogoutResponse {
        itt: l.itt,
        time2wait: 2,
        stat_sn: 52,
        exp_cmd_sn: 12,
        max_cmd_sn: 40,
        ..Default::default()
    }))
    .unwrap();
    assert_eq!(
        c.poll_event(),
        Some(FullFeatureEvent::LoggedOut { time2wait: 2 })
    );
    assert_eq!(c.phase(), Phase::Closed);
    let rest: Vec<Completion> = std::iter::from_fn(|| c.poll_completion()).collect();
    assert_eq!(rest.iter().map(|c| c.id).collect::<Vec<_>>(), vec![2, 3]);
    assert!(rest.iter().all(|c| c.result == Err(TaskError::Unfinished)));
    // Submitting after close completes at once as Unfinished.
    c.submit(9, cdb::test_unit_ready(1));
    assert_eq!(
        c.poll_completion().unwrap().result,
        Err(TaskError::Unfinished)
    );
}

#[test]
fn drop_announcement_fails_everything_retryably() {
    let mut c = session_with(SessionParams::default(), 40, 8);
    c.submit(1, cdb::read16(1, 0, 1, 512));
    drain_out(&mut c);
    c.receive(async_msg(async_event::CONNECTION_DROP, 2, 0))
        .unwrap();
    assert_eq!(
        c.poll_event(),
        Some(FullFeatureEvent::DropAnnounced {
            session: false,
            time2wait: 2
        })
    );
    let e = c.poll_completion().unwrap().result.unwrap_err();
    assert!(e.is_retryable());
    assert_eq!(c.phase(), Phase::Closed);
}

#[test]
fn malformed_target_behaviour_is_an_error_not_a_panic() {
    let mut c = session_with(SessionParams::default(), 40, 8);
    assert!(c.receive(data_in(0xdead, 0, 0, &[1], Some(0))).is_err());
    c.submit(1, cdb::read16(1, 0, 1, 4));
    let itt = command(&drain_out(&mut c)[0]).itt;
    // Data beyond EDTL and out-of-order DataSN fail the task, not the process.
    c.receive(data_in(itt, 3, 2, &[1, 2, 3, 4], Some(0)))
        .unwrap();
    assert!(matches!(
        c.poll_completion().unwrap().result,
        Err(TaskError::Protocol(_))
    ));
    assert!(c.receive(Pdu::NopOut(NopOut::default())).is_err());
    assert!(
        c.receive(Pdu::LogoutResponse(LogoutResponse::default()))
            .is_err()
    );
}

#[test]
fn reject_fails_the_referenced_task() {
    let mut c = session_with(SessionParams::default(), 40, 8);
    c.submit(4, cdb::test_unit_ready(1));
    let out = drain_out(&mut c);
    let header = out[0].to_bytes(iscsi_proto::Digests::NONE).unwrap();
    c.receive(Pdu::Reject(Reject {
        reason: iscsi_proto::reject_reason::WAITING_FOR_LOGOUT,
        stat_sn: 50,
        exp_cmd_sn: 11,
        max_cmd_sn: 40,
        header: header.freeze().slice(0..48),
        ..Default::default()
    }))
    .unwrap();
    let e = c.poll_completion().unwrap().result.unwrap_err();
    assert!(e.is_retryable());
}

#[test]
fn unencodable_requests_fail_at_submit_without_a_pdu() {
    let mut c = session_with(SessionParams::default(), 40, 8);
    c.submit(1, cdb::read16(0x4000, 0, 1, 512));
    c.submit(2, cdb::read16(0, 0, 1, MAX_TRANSFER + 1));
    c.submit(3, cdb::read16(300, 0, 1, 512));
    let failed: Vec<_> = std::iter::from_fn(|| c.poll_completion()).collect();
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert_eq!(
        (failed[0].id, &failed[0].result),
        (
            1,
            &Err(TaskError::Protocol("LUN beyond flat space addressing"))
        )
    );
    assert_eq!(
        (failed[1].id, &failed[1].result),
        (
            2,
            &Err(TaskError::Protocol("transfer larger than MAX_TRANSFER"))
        )
    );
    let out = drain_out(&mut c);
    assert_eq!(out.len(), 1, "only request 3 was issued");
    assert_eq!(
        command(&out[0]).lun,
        0x412c_0000_0000_0000,
        "LUN 300, flat space"
    );
}
