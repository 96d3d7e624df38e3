//! The connection core driven with PDUs only: no sockets.

use super::*;
use crate::control::{PortalInfo, two_portals};
use iscsi_proto::{LoginRequest, LoginResponse, Stage};
use scsi::{Identity, LogicalUnit, MemDevice};
use tokio::sync::mpsc;

const TARGET: &str = "iqn.2024-01.test:t";

fn shared() -> Arc<Shared> {
    let portals = vec![PortalInfo {
        id: PortalId(0),
        address: "127.0.0.1:3260".parse().unwrap(),
        tag: 1,
    }];
    let control = Arc::new(Control::new(portals, vec![TARGET.into()], None, None));
    let mut luns = LunTable::new();
    let lu = LogicalUnit::new(
        Arc::new(MemDevice::new(2048)),
        Identity::new(TARGET, 0).unwrap(),
    );
    luns.insert(0, Arc::new(lu)).unwrap();
    Arc::new(Shared::new(
        control,
        [(TARGET.to_string(), Arc::new(luns))].into_iter().collect(),
    ))
}

fn login_text(keys: &[(&str, &str)]) -> Bytes {
    keys.iter().copied().collect::<TextPairs>().to_bytes()
}

/// Sends one Login Request (T set, `csg` → `nsg`, CmdSN `cmd_sn`) carrying `keys`; returns the
/// first PDU answered, which must be a Login Response.
fn login_step(
    c: &mut Connection,
    (csg, nsg): (Stage, Stage),
    cmd_sn: u32,
    keys: &[(&str, &str)],
    now: Instant,
) -> LoginResponse {
    c.on_pdu(
        Pdu::LoginRequest(LoginRequest {
            transit: true,
            csg,
            nsg,
            isid: [0x80, 0, 0, 0, 0, 1],
            itt: 1,
            cmd_sn,
            data: login_text(keys),
            ..LoginRequest::default()
        }),
        now,
    );
    match out(c).into_iter().next() {
        Some(Pdu::LoginResponse(r)) => r,
        p => panic!("{p:?}"),
    }
}

fn out(c: &mut Connection) -> Vec<Pdu> {
    let mut v = Vec::new();
    c.take_output(&mut v);
    v.into_iter().map(|(p, _)| p).collect()
}

/// A connection logged in with the given operational offers; returns it and the receiver of
/// its session commands.
fn logged_in(
    offers: &[(&str, &str)],
) -> (Connection, mpsc::UnboundedReceiver<SessionCommand>, Instant) {
    let now = Instant::now();
    let (tx, rx) = mpsc::unbounded_channel();
    let mut c = Connection::new(shared(), PortalId(0), tx, now);
    let keys = [
        ("InitiatorName", "iqn.2024-01.test:i"),
        ("TargetName", TARGET),
        ("SessionType", "Normal"),
        ("AuthMethod", "None"),
    ];
    let r = login_step(
        &mut c,
        (
            Stage::SecurityNegotiation,
            Stage::LoginOperationalNegotiation,
        ),
        10,
        &keys,
        now,
    );
    assert_eq!((r.status_class, r.transit), (0, true));
    let text = TextPairs::parse(&r.data).unwrap();
    assert_eq!(text.get("TargetPortalGroupTag"), Some("1"));
    let r = login_step(
        &mut c,
        (Stage::LoginOperationalNegotiation, Stage::FullFeaturePhase),
        10,
        offers,
        now,
    );
    assert_eq!((r.status_class, r.nsg), (0, Stage::FullFeaturePhase));
    assert_ne!(r.tsih, 0);
    assert_eq!((r.exp_cmd_sn, r.max_cmd_sn), (10, 10 + CMD_WINDOW - 1));
    assert!(c.params().is_some());
    (c, rx, now)
}

fn read10(itt: u32, cmd_sn: u32, lba: u32, blocks: u16) -> ScsiCommand {
    let mut cdb = [0u8; 16];
    cdb[0] = 0x28;
    cdb[2..6].copy_from_slice(&lba.to_be_bytes());
    cdb[7..9].copy_from_slice(&blocks.to_be_bytes());
    ScsiCommand {
        final_: true,
        read: true,
        itt,
        edtl: u32::from(blocks) * 512,
        cmd_sn,
        cdb,
        ..ScsiCommand::default()
    }
}

fn write10(itt: u32, cmd_sn: u32, lba: u32, blocks: u16, data: Bytes, final_: bool) -> ScsiCommand {
    let mut cdb = [0u8; 16];
    cdb[0] = 0x2a;
    cdb[2..6].copy_from_slice(&lba.to_be_bytes());
    cdb[7..9].copy_from_slice(&blocks.to_be_bytes());
    ScsiCommand {
        final_,
        write: true,
        itt,
        edtl: u32::from(blocks) * 512,
        cmd_sn,
        cdb,
        data,
        ..ScsiCommand::default()
    }
}

#[test]
fn unknown_target_and_redirect() {
    let now = Instant::now();
    let sh = shared();
    let login = |c: &mut Connection, target: &str| {
        login_step(
            c,
            (
                Stage::SecurityNegotiation,
                Stage::LoginOperationalNegotiation,
            ),
            0,
            &[("InitiatorName", "iqn.i"), ("TargetName", target)],
            now,
        )
    };
    let (tx, _rx) = mpsc::unbounded_channel();
    let mut c = Connection::new(sh.clone(), PortalId(0), tx.clone(), now);
    let r = login(&mut c, "iqn.nope");
    assert_eq!((r.status_class, r.status_detail), (2, 3));
    assert!(c.is_closing());

    // Place the initiator elsewhere: the login is answered 0x0101 with TargetAddress.
    sh.control.place("iqn.i", TARGET, PortalId(7));
    let mut c = Connection::new(sh.clone(), PortalId(0), tx.clone(), now);
    let r = login(&mut c, TARGET);
    assert_eq!(
        (r.status_class, r.status_detail),
        (0, 0),
        "unknown portal: accepted"
    );
    let control = Arc::new(Control::new(two_portals(), vec![TARGET.into()], None, None));
    control.place("iqn.i", TARGET, PortalId(1));
    let sh2 = Arc::new(Shared::new(control, sh.targets.clone()));
    let mut c = Connection::new(sh2, PortalId(0), tx, now);
    let r = login(&mut c, TARGET);
    assert_eq!((r.status_class, r.status_detail), (1, 1));
    let text = TextPairs::parse(&r.data).unwrap();
    assert_eq!(text.get("TargetAddress"), Some("127.0.0.2:3260"));
    assert_eq!(c.close_reason(), Some(&CloseReason::LoginEnded));
}

#[test]
fn cmd_sn_window_orders_and_ignores() {
    let (mut c, _rx, now) = logged_in(&[("InitialR2T", "No"), ("ImmediateData", "Yes")]);
    // Ahead of ExpCmdSN: held; then the gap is filled and both run in CmdSN order.
    c.on_pdu(Pdu::ScsiCommand(read10(2, 11, 0, 1)), now);
    assert!(out(&mut c).is_empty());
    c.on_pdu(Pdu::ScsiCommand(read10(1, 10, 0, 1)), now);
    let o = out(&mut c);
    let itts: Vec<u32> = o.iter().map(|p| p.itt()).collect();
    assert_eq!(itts, [1, 2]);
    let Pdu::DataIn(last) = &o[1] else { panic!() };
    assert_eq!(
        (last.exp_cmd_sn, last.max_cmd_sn),
        (12, 12 + CMD_WINDOW - 1)
    );
    // Outside the window (too low, too high): silently ignored.
    c.on_pdu(Pdu::ScsiCommand(read10(3, 11, 0, 1)), now);
    c.on_pdu(Pdu::ScsiCommand(read10(4, 12 + CMD_WINDOW, 0, 1)), now);
    assert!(out(&mut c).is_empty());
    // Immediate commands do not advance ExpCmdSN.
    let mut imm = read10(5, 12, 0, 1);
    imm.immediate = true;
    c.on_pdu(Pdu::ScsiCommand(imm), now);
    let Pdu::DataIn(d) = &out(&mut c)[0] else {
        panic!()
    };
    assert_eq!(d.exp_cmd_sn, 12);
}

#[test]
fn data_in_is_split_by_mrdsl_with_status_in_the_last() {
    let (mut c, _rx, now) = logged_in(&[("MaxRecvDataSegmentLength", "4096")]);
    c.on_pdu(Pdu::ScsiCommand(read10(9, 10, 0, 20)), now);
    let o = out(&mut c);
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
    c.on_pdu(Pdu::ScsiCommand(r), now);
    let Pdu::DataIn(d) = &out(&mut c)[0] else {
        panic!()
    };
    assert!(d.residual_underflow && d.status_present);
    assert_eq!((d.residual_count, d.data.len()), (488, 512));
}

#[test]
fn write_beyond_first_burst_uses_r2ts() {
    let (mut c, _rx, now) = logged_in(&[
        ("InitialR2T", "No"),
        ("ImmediateData", "Yes"),
        ("FirstBurstLength", "4096"),
        ("MaxBurstLength", "8192"),
        ("MaxOutstandingR2T", "1"),
    ]);
    let payload: Vec<u8> = (0..20480u32).map(|i| (i % 251) as u8).collect();
    let payload = Bytes::from(payload);
    // 40 blocks: 2048 immediate, 2048 unsolicited Data-Out, then R2Ts of 8192, 8192.
    c.on_pdu(
        Pdu::ScsiCommand(write10(7, 10, 8, 40, payload.slice(..2048), false)),
        now,
    );
    let o = out(&mut c);
    let Pdu::R2t(r1) = &o[0] else { panic!("{o:?}") };
    assert_eq!(o.len(), 1, "MaxOutstandingR2T=1");
    assert_eq!(
        (r1.r2t_sn, r1.buffer_offset, r1.desired_data_transfer_length),
        (0, 4096, 8192)
    );
    c.on_pdu(
        Pdu::DataOut(DataOut {
            final_: true,
            itt: 7,
            ttt: RESERVED_TAG,
            data_sn: 0,
            buffer_offset: 2048,
            data: payload.slice(2048..4096),
            ..DataOut::default()
        }),
        now,
    );
    assert!(out(&mut c).is_empty());
    let mut ttt = r1.ttt;
    for (sn, off) in [(0u32, 4096usize), (1, 12288)] {
        for (i, chunk) in [off, off + 4096].iter().enumerate() {
            c.on_pdu(
                Pdu::DataOut(DataOut {
                    final_: i == 1,
                    itt: 7,
                    ttt,
                    data_sn: i as u32,
                    buffer_offset: *chunk as u32,
                    data: payload.slice(*chunk..*chunk + 4096),
                    ..DataOut::default()
                }),
                now,
            );
        }
        let o = out(&mut c);
        if sn == 0 {
            let Pdu::R2t(r2) = &o[0] else { panic!("{o:?}") };
            assert_eq!((r2.r2t_sn, r2.buffer_offset), (1, 12288));
            ttt = r2.ttt;
        } else {
            let Pdu::ScsiResponse(r) = &o[0] else {
                panic!("{o:?}")
            };
            assert_eq!((r.status, r.residual_count), (0, 0));
        }
    }
    // Read it back.
    c.on_pdu(Pdu::ScsiCommand(read10(8, 11, 8, 40)), now);
    let got: Vec<u8> = out(&mut c)
        .iter()
        .flat_map(|p| match p {
            Pdu::DataIn(d) => d.data.to_vec(),
            _ => vec![],
        })
        .collect();
    assert_eq!(got, payload);
}

#[test]
fn bad_data_sn_ends_the_task_with_check_condition() {
    let (mut c, _rx, now) = logged_in(&[("InitialR2T", "No"), ("ImmediateData", "No")]);
    c.on_pdu(
        Pdu::ScsiCommand(write10(7, 10, 0, 1, Bytes::new(), false)),
        now,
    );
    c.on_pdu(
        Pdu::DataOut(DataOut {
            final_: true,
            itt: 7,
            ttt: RESERVED_TAG,
            data_sn: 27,
            data: Bytes::from(vec![0u8; 512]),
            ..DataOut::default()
        }),
        now,
    );
    let o = out(&mut c);
    let Pdu::ScsiResponse(r) = &o[0] else {
        panic!("{o:?}")
    };
    assert_eq!(r.status, 2);
    assert_eq!(r.sense[2] & 0x0f, 0x0b);
    assert!(!c.is_closing());
}

#[test]
fn async_logout_request_then_drop() {
    let (mut c, _rx, now) = logged_in(&[]);
    c.on_command(SessionCommand::RequestLogout { time2logout: 2 }, now);
    let o = out(&mut c);
    let Pdu::AsyncMessage(m) = &o[0] else {
        panic!("{o:?}")
    };
    assert_eq!((m.async_event, m.parameter3), (1, 2));
    c.on_tick(now + Duration::from_secs(2));
    assert!(out(&mut c).is_empty() && !c.is_closing());
    c.on_tick(now + Duration::from_secs(2) + LOGOUT_GRACE);
    let o = out(&mut c);
    let Pdu::AsyncMessage(m) = &o[0] else {
        panic!("{o:?}")
    };
    assert_eq!(m.async_event, 2);
    assert!(matches!(c.close_reason(), Some(CloseReason::Failed(_))));
}

#[test]
fn logout_nop_snack_and_tmf() {
    let (mut c, _rx, now) = logged_in(&[]);
    c.on_pdu(
        Pdu::NopOut(NopOut {
            immediate: true,
            itt: 3,
            ttt: RESERVED_TAG,
            cmd_sn: 10,
            data: Bytes::from_static(b"ping"),
            ..NopOut::default()
        }),
        now,
    );
    let Pdu::NopIn(n) = &out(&mut c)[0] else {
        panic!()
    };
    assert_eq!((n.itt, &n.data[..]), (3, &b"ping"[..]));
    c.on_pdu(Pdu::SnackRequest(iscsi_proto::SnackRequest::default()), now);
    let Pdu::Reject(r) = &out(&mut c)[0] else {
        panic!()
    };
    assert_eq!(r.reason, reject_reason::PROTOCOL_ERROR);
    assert_eq!(r.header.len(), iscsi_proto::BHS_LEN);
    // ABORT TASK of a task already answered: "task does not exist".
    c.on_pdu(Pdu::ScsiCommand(read10(5, 10, 0, 1)), now);
    out(&mut c);
    c.on_pdu(
        Pdu::TaskMgmtRequest(TaskMgmtRequest {
            immediate: true,
            function: 1,
            itt: 6,
            referenced_task_tag: 5,
            ref_cmd_sn: 10,
            cmd_sn: 11,
            ..TaskMgmtRequest::default()
        }),
        now,
    );
    let Pdu::TaskMgmtResponse(t) = &out(&mut c)[0] else {
        panic!()
    };
    assert_eq!(t.response, 1);
    // LUN RESET: done, then one UNIT ATTENTION.
    c.on_pdu(
        Pdu::TaskMgmtRequest(TaskMgmtRequest {
            immediate: true,
            function: 5,
            itt: 7,
            cmd_sn: 11,
            ..TaskMgmtRequest::default()
        }),
        now,
    );
    let Pdu::TaskMgmtResponse(t) = &out(&mut c)[0] else {
        panic!()
    };
    assert_eq!(t.response, 0);
    c.on_pdu(Pdu::ScsiCommand(read10(8, 11, 0, 1)), now);
    let Pdu::ScsiResponse(r) = &out(&mut c)[0] else {
        panic!()
    };
    assert_eq!((r.status, r.sense[2] & 0x0f, r.sense[12]), (2, 6, 0x29));
    c.on_pdu(Pdu::ScsiCommand(read10(9, 12, 0, 1)), now);
    assert!(matches!(out(&mut c)[0], Pdu::DataIn(_)));
    c.on_pdu(
        Pdu::LogoutRequest(LogoutRequest {
            immediate: true,
            itt: 10,
            cmd_sn: 13,
            ..LogoutRequest::default()
        }),
        now,
    );
    let Pdu::LogoutResponse(l) = &out(&mut c)[0] else {
        panic!()
    };
    assert_eq!(l.response, 0);
    assert_eq!(c.close_reason(), Some(&CloseReason::Logout));
    assert_eq!(
        c.close_reason().map(ToString::to_string).as_deref(),
        Some("logout requested by the initiator")
    );
    // The session's end is recorded with that reason.
    let why = c.close_reason().unwrap().to_string();
    let shared = c.shared.clone();
    c.finish(&why);
    let events = shared.control.events.snapshot();
    let last = events.last().unwrap();
    assert_eq!(last.kind.label(), "logout");
    assert!(
        last.reason.ends_with("logout requested by the initiator"),
        "{}",
        last.reason
    );
}

#[test]
fn discovery_session_sends_targets_and_refuses_scsi() {
    let now = Instant::now();
    let (tx, _rx) = mpsc::unbounded_channel();
    let mut c = Connection::new(shared(), PortalId(0), tx, now);
    let r = login_step(
        &mut c,
        (Stage::LoginOperationalNegotiation, Stage::FullFeaturePhase),
        0,
        &[
            ("InitiatorName", "iqn.i"),
            ("SessionType", "Discovery"),
            ("MaxRecvDataSegmentLength", "512"),
        ],
        now,
    );
    assert_eq!((r.status_class, r.nsg), (0, Stage::FullFeaturePhase));
    c.on_pdu(
        Pdu::TextRequest(TextRequest {
            immediate: true,
            final_: true,
            itt: 2,
            ttt: RESERVED_TAG,
            data: login_text(&[("SendTargets", "All")]),
            ..TextRequest::default()
        }),
        now,
    );
    let Pdu::TextResponse(t) = &out(&mut c)[0] else {
        panic!()
    };
    let text = TextPairs::parse(&t.data).unwrap();
    assert_eq!(text.get("TargetName"), Some(TARGET));
    assert_eq!(text.get("TargetAddress"), Some("127.0.0.1:3260,1"));
    assert!(t.final_ && !t.continue_);
    // SCSI commands are refused in a discovery session.
    c.on_pdu(Pdu::ScsiCommand(read10(3, 0, 0, 1)), now);
    assert!(matches!(out(&mut c)[0], Pdu::Reject(_)));
}

#[test]
fn place_appends_overwrites_and_fills_gaps() {
    let mut b = BytesMut::new();
    place(&mut b, 0, b"ab");
    place(&mut b, 4, b"ef");
    assert_eq!(&b[..], b"ab\0\0ef");
    // The gap, then a piece straddling the end.
    place(&mut b, 2, b"cd");
    place(&mut b, 5, b"FGH");
    assert_eq!(&b[..], b"abcdeFGH");
}
