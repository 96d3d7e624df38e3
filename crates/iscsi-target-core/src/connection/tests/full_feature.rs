//! Full feature phase without data: ordering, timers, NOP, Logout, SNACK, Text.

use std::time::Duration;

use iscsi_proto::{LogoutRequest, NopOut, RESERVED_TAG, TextRequest, reject_reason};

use super::*;

#[test]
fn out_of_order_cmd_sn_is_held_then_run_and_outside_the_window_ignored() {
    let mut h = logged_in(&[]);
    // Ahead of ExpCmdSN: held, nothing runs.
    assert!(h.send(read10(2, 11, 0, 1)).is_empty());
    // The gap is filled: both run, in CmdSN order.
    let o = h.send(read10(1, 10, 0, 1));
    let itts: Vec<u32> = o.iter().map(|p| p.itt()).collect();
    assert_eq!(itts, [1, 2]);
    let Pdu::DataIn(last) = &o[1] else { panic!() };
    assert_eq!(
        (last.exp_cmd_sn, last.max_cmd_sn),
        (12, 12 + CMD_WINDOW - 1)
    );
    // Outside the window (too low, too high): silently ignored.
    assert!(h.send(read10(3, 11, 0, 1)).is_empty());
    assert!(h.send(read10(4, 12 + CMD_WINDOW, 0, 1)).is_empty());
    // Immediate commands do not advance ExpCmdSN.
    let mut imm = read10(5, 12, 0, 1);
    imm.immediate = true;
    let Pdu::DataIn(d) = &h.send(imm)[0] else {
        panic!()
    };
    assert_eq!(d.exp_cmd_sn, 12);
}

#[test]
fn several_pdus_in_one_read_are_all_answered_in_order() {
    let mut h = logged_in(&[]);
    for i in 0..4 {
        h.feed_only(read10(i, 10 + i, i, 1));
    }
    h.run();
    let itts: Vec<u32> = h.out().iter().map(|p| p.itt()).collect();
    assert_eq!(itts, [0, 1, 2, 3]);
    assert!(h.rbuf.is_empty());
}

#[test]
fn logout_request_sends_async_message_then_drops_after_the_deadline() {
    let mut h = logged_in(&[]);
    h.conn
        .on_command(SessionCommand::RequestLogout { time2logout: 2 }, h.now);
    let o = h.out();
    let [Pdu::AsyncMessage(m)] = &o[..] else {
        panic!("{o:?}")
    };
    assert_eq!((m.async_event, m.parameter3), (1, 2));
    let deadline = h.now + Duration::from_secs(2) + LOGOUT_GRACE;
    assert_eq!(h.conn.poll_timeout(), Some(deadline));
    // A second request while one is pending: nothing new.
    h.conn
        .on_command(SessionCommand::RequestLogout { time2logout: 9 }, h.now);
    assert!(h.out().is_empty());
    h.conn.handle_timeout(h.now + Duration::from_secs(2));
    assert!(h.out().is_empty() && !h.conn.is_closing());
    h.conn.handle_timeout(deadline);
    let o = h.out();
    let [Pdu::AsyncMessage(m)] = &o[..] else {
        panic!("{o:?}")
    };
    assert_eq!(m.async_event, 2, "the target drops the connection");
    let ignored = CloseReason::LogoutIgnored {
        time2logout: 2,
        waited: Duration::from_secs(2) + LOGOUT_GRACE,
    };
    assert_eq!(h.conn.close_reason(), Some(&ignored));
    assert_eq!(
        ignored.to_string(),
        "closed by the target: the initiator did not log out when asked (Time2Logout 2 s, \
         dropped after 5.0 s)"
    );
    h.conn
        .on_closed(CloseReason::Transport("socket closed".into()));
    h.run();
    assert_eq!(h.events.last(), Some(&Event::Ended { why: ignored }));
}

#[test]
fn idle_connection_is_pinged_and_dropped_when_the_ping_times_out() {
    let mut h = logged_in(&[]);
    h.conn
        .handle_timeout(h.now + PING_IDLE - Duration::from_secs(1));
    assert!(h.out().is_empty());
    let sent = h.now + PING_IDLE;
    h.conn.handle_timeout(sent);
    let o = h.out();
    let [Pdu::NopIn(ping)] = &o[..] else {
        panic!("{o:?}")
    };
    assert_eq!(ping.itt, RESERVED_TAG);
    assert_eq!(h.conn.poll_timeout(), Some(sent + PING_TIMEOUT));
    h.conn
        .handle_timeout(sent + PING_TIMEOUT - Duration::from_secs(1));
    assert!(!h.conn.is_closing());
    h.conn.handle_timeout(sent + PING_TIMEOUT);
    assert_eq!(
        h.conn.close_reason(),
        Some(&CloseReason::Failed("NOP-In ping not answered".into()))
    );
}

#[test]
fn an_answered_ping_keeps_the_connection() {
    let mut h = logged_in(&[]);
    let sent = h.now + PING_IDLE;
    h.conn.handle_timeout(sent);
    let Pdu::NopIn(ping) = h.out().remove(0) else {
        panic!()
    };
    h.now = sent + Duration::from_secs(1);
    let o = h.send(NopOut {
        immediate: true,
        itt: RESERVED_TAG,
        ttt: ping.ttt,
        cmd_sn: 10,
        ..NopOut::default()
    });
    assert!(o.is_empty(), "an answer is not answered");
    h.conn.handle_timeout(sent + PING_TIMEOUT);
    assert!(!h.conn.is_closing());
}

#[test]
fn nop_snack_and_logout() {
    let mut h = logged_in(&[]);
    let o = h.send(NopOut {
        immediate: true,
        itt: 3,
        ttt: RESERVED_TAG,
        cmd_sn: 10,
        data: Bytes::from_static(b"ping"),
        ..NopOut::default()
    });
    let Pdu::NopIn(n) = &o[0] else { panic!() };
    assert_eq!((n.itt, &n.data[..]), (3, &b"ping"[..]));
    let o = h.send(iscsi_proto::SnackRequest::default());
    let Pdu::Reject(r) = &o[0] else { panic!() };
    assert_eq!(r.reason, reject_reason::PROTOCOL_ERROR);
    assert_eq!(r.header.len(), iscsi_proto::BHS_LEN);
    let o = h.send(LogoutRequest {
        immediate: true,
        itt: 10,
        cmd_sn: 10,
        ..LogoutRequest::default()
    });
    let Pdu::LogoutResponse(l) = &o[0] else {
        panic!()
    };
    assert_eq!(l.response, 0);
    assert_eq!(h.conn.close_reason(), Some(&CloseReason::Logout));
    assert_eq!(
        h.conn.close_reason().map(ToString::to_string).as_deref(),
        Some("logout requested by the initiator")
    );
    // Nothing more is taken once closing.
    assert!(h.send(read10(11, 10, 0, 1)).is_empty());
}

#[test]
fn discovery_session_sends_targets_and_refuses_scsi() {
    let mut h = Harness::new(TestPolicy::default());
    let r = h.login_step(
        (Stage::LoginOperationalNegotiation, Stage::FullFeaturePhase),
        0,
        &[
            ("InitiatorName", "iqn.i"),
            ("SessionType", "Discovery"),
            ("MaxRecvDataSegmentLength", "512"),
        ],
    );
    assert_eq!((r.status_class, r.nsg), (0, Stage::FullFeaturePhase));
    assert!(matches!(
        h.events[..],
        [Event::FullFeature {
            session_type: SessionType::Discovery,
            target: None,
            ..
        }]
    ));
    let o = h.send(TextRequest {
        immediate: true,
        final_: true,
        itt: 2,
        ttt: RESERVED_TAG,
        data: text(&[("SendTargets", "All")]),
        ..TextRequest::default()
    });
    let Pdu::TextResponse(t) = &o[0] else {
        panic!()
    };
    let pairs = TextPairs::parse(&t.data).unwrap();
    assert_eq!(pairs.get("TargetName"), Some(TARGET));
    assert_eq!(pairs.get("TargetAddress"), Some("127.0.0.1:3260,1"));
    assert!(t.final_ && !t.continue_);
    // SCSI commands are refused in a discovery session.
    assert!(matches!(h.send(read10(3, 0, 0, 1))[0], Pdu::Reject(_)));
    // Nothing to release when it ends.
    h.conn.on_closed(CloseReason::Transport("x".into()));
    h.run();
    assert!(h.side_effects.is_empty());
}

#[test]
fn a_reloaded_catalog_follows_the_session_target_or_closes_a_session_whose_target_left() {
    use crate::catalog::CatalogTarget;
    let mut h = logged_in(&[]);
    // The target moves to index 1 and gains LUN 1: the session follows it by name.
    let mut c = (*catalog()).clone();
    c.targets.insert(
        0,
        CatalogTarget {
            name: "iqn.2024-01.test:other".into(),
            luns: vec![0],
            ..Default::default()
        },
    );
    c.targets[1].luns = vec![0, 1];
    assert!(h.conn.set_catalog(Arc::new(c.clone())));
    assert!(!h.conn.is_closing());
    assert_eq!(h.conn.target().map(|t| t.name.as_str()), Some(TARGET));
    assert_eq!(h.conn.target().map(|t| t.luns.clone()), Some(vec![0, 1]));
    // Its target is no longer served: the session is closed, saying why.
    c.targets.remove(1);
    assert!(!h.conn.set_catalog(Arc::new(c)));
    let why = h
        .conn
        .close_reason()
        .map(|r| r.to_string())
        .unwrap_or_default();
    assert!(why.contains("no longer served"), "{why}");
}
