//! The connection core driven with bytes only: no sockets, no runtime. A [`Harness`] plays
//! the shell: it encodes PDUs, feeds them, runs the SCSI requests on a `LunTable` over a
//! `MemDevice` and records the events.

use std::sync::Arc;
use std::time::Instant;

use balancer::PortalId;
use bytes::{Bytes, BytesMut};
use iscsi_proto::params::SessionType;
use iscsi_proto::text::TextPairs;
use iscsi_proto::{Digests, LoginRequest, LoginResponse, Pdu, ScsiCommand, Stage};
use scsi::{Identity, LogicalUnit, LunTable, MemDevice};

use super::*;
use crate::event::Event;
use crate::policy::{LoginDecision, LoginPolicy, SessionCommand};
use crate::request::ScsiRequest;

mod access;
mod chunks;
mod full_feature;
mod in_place;
mod login_log;
mod login_timeout;
mod scsi_io;

const TARGET: &str = "iqn.2024-01.test:t";
const INITIATOR: &str = "iqn.2024-01.test:i";

/// Answers every login with `decision` and counts TSIHs from 1.
struct TestPolicy {
    decision: LoginDecision,
    tsih: u16,
    asked: Vec<(PortalId, String, String)>,
}

impl Default for TestPolicy {
    fn default() -> Self {
        TestPolicy {
            decision: LoginDecision::Accept {
                portal_group_tag: 1,
            },
            tsih: 0,
            asked: Vec::new(),
        }
    }
}

impl LoginPolicy for TestPolicy {
    fn login_decision(&mut self, portal: PortalId, initiator: &str, target: &str) -> LoginDecision {
        self.asked.push((portal, initiator.into(), target.into()));
        self.decision.clone()
    }
    fn next_tsih(&mut self) -> u16 {
        self.tsih += 1;
        self.tsih
    }
}

fn catalog() -> Arc<Catalog> {
    Arc::new(Catalog::single(
        TARGET,
        vec![0],
        "127.0.0.1:3260".parse().unwrap(),
    ))
}

/// The shell of the tests.
struct Harness {
    conn: Connection,
    policy: TestPolicy,
    luns: LunTable,
    now: Instant,
    rbuf: BytesMut,
    digests: Digests,
    events: Vec<Event>,
    /// Resets and nexus losses the core asked for, in order.
    side_effects: Vec<String>,
}

impl Harness {
    fn new(policy: TestPolicy) -> Self {
        let now = Instant::now();
        let mut luns = LunTable::new();
        let lu = LogicalUnit::new(
            Arc::new(MemDevice::new(2048)),
            Identity::new(TARGET, 0).unwrap(),
        );
        luns.insert(0, Arc::new(lu)).unwrap();
        Harness {
            conn: Connection::new(catalog(), PortalId(0), now),
            policy,
            luns,
            now,
            rbuf: BytesMut::new(),
            digests: Digests::NONE,
            events: Vec::new(),
            side_effects: Vec::new(),
        }
    }

    /// Encodes `pdu` as the initiator would, feeds it and returns what the target answered.
    fn send(&mut self, pdu: impl Into<Pdu>) -> Vec<Pdu> {
        self.feed_only(pdu);
        self.run();
        self.out()
    }

    /// Appends `pdu`'s bytes to the receive buffer without feeding them.
    fn feed_only(&mut self, pdu: impl Into<Pdu>) {
        pdu.into().encode(&mut self.rbuf, self.digests).unwrap();
    }

    /// Feeds the receive buffer and does the shell's work until nothing is left.
    fn run(&mut self) {
        loop {
            self.conn
                .on_bytes(&mut self.rbuf, self.now, &mut self.policy);
            let ev = self.events();
            let work = self.scsi();
            if !ev && !work {
                break;
            }
        }
        if let Some(p) = self.conn.params() {
            self.digests = p.digests();
        }
    }

    fn events(&mut self) -> bool {
        let mut any = false;
        while let Some(e) = self.conn.poll_event() {
            any = true;
            if let Event::FullFeature {
                session_type: SessionType::Normal,
                ..
            } = &e
            {
                self.luns.nexus_established(77);
                self.conn.set_nexus(77);
            }
            self.events.push(e);
        }
        any
    }

    fn scsi(&mut self) -> bool {
        let mut any = false;
        while let Some(r) = self.conn.poll_scsi() {
            any = true;
            match r {
                ScsiRequest::Command(mut c) => {
                    let write = c.write;
                    let (task, out, din) = c.parts();
                    assert_eq!(task.nexus, 77);
                    let (o, res) = self.luns.execute_transfer(&task, write, out, din);
                    self.conn.on_scsi_complete(c, o, res);
                }
                ScsiRequest::LunReset { lun } => {
                    self.luns.reset_lun(lun);
                    self.side_effects.push(format!("lun reset {lun}"));
                }
                ScsiRequest::TargetReset => {
                    self.luns.reset_all();
                    self.side_effects.push("target reset".into());
                }
                ScsiRequest::NexusLost { nexus } => {
                    self.luns.nexus_lost(nexus);
                    self.side_effects.push(format!("nexus lost {nexus}"));
                }
            }
        }
        any
    }

    fn out(&mut self) -> Vec<Pdu> {
        let mut v = Vec::new();
        self.conn.poll_transmit(&mut v);
        v.into_iter().map(|(p, _)| p).collect()
    }

    /// Sends one Login Request (T set, `csg` → `nsg`, CmdSN `cmd_sn`) carrying `keys`;
    /// returns the Login Response.
    fn login_step(
        &mut self,
        (csg, nsg): (Stage, Stage),
        cmd_sn: u32,
        keys: &[(&str, &str)],
    ) -> LoginResponse {
        let o = self.send(LoginRequest {
            transit: true,
            csg,
            nsg,
            isid: [0x80, 0, 0, 0, 0, 1],
            itt: 1,
            cmd_sn,
            data: text(keys),
            ..LoginRequest::default()
        });
        match o.into_iter().next() {
            Some(Pdu::LoginResponse(r)) => r,
            p => panic!("{p:?}"),
        }
    }

    /// A security-stage login for `target` (normal session).
    fn login_to(&mut self, target: &str) -> LoginResponse {
        self.login_step(
            (
                Stage::SecurityNegotiation,
                Stage::LoginOperationalNegotiation,
            ),
            0,
            &[("InitiatorName", INITIATOR), ("TargetName", target)],
        )
    }
}

fn text(keys: &[(&str, &str)]) -> Bytes {
    keys.iter().copied().collect::<TextPairs>().to_bytes()
}

/// A harness logged in to [`TARGET`] with the given operational offers, CmdSN 10.
fn logged_in(offers: &[(&str, &str)]) -> Harness {
    let mut h = Harness::new(TestPolicy::default());
    let keys = [
        ("InitiatorName", INITIATOR),
        ("TargetName", TARGET),
        ("SessionType", "Normal"),
        ("AuthMethod", "None"),
    ];
    let r = h.login_step(
        (
            Stage::SecurityNegotiation,
            Stage::LoginOperationalNegotiation,
        ),
        10,
        &keys,
    );
    assert_eq!((r.status_class, r.transit), (0, true));
    let t = TextPairs::parse(&r.data).unwrap();
    assert_eq!(t.get("TargetPortalGroupTag"), Some("1"));
    let r = h.login_step(
        (Stage::LoginOperationalNegotiation, Stage::FullFeaturePhase),
        10,
        offers,
    );
    assert_eq!((r.status_class, r.nsg), (0, Stage::FullFeaturePhase));
    assert_eq!(r.tsih, 1, "the TSIH comes from the policy");
    assert_eq!((r.exp_cmd_sn, r.max_cmd_sn), (10, 10 + CMD_WINDOW - 1));
    assert!(h.conn.params().is_some());
    h
}

fn read10(itt: u32, cmd_sn: u32, lba: u32, blocks: u16) -> ScsiCommand {
    let mut cdb = [0u8; 16];
    cdb[0] = scsi::cdb::opcode::READ_10;
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
    cdb[0] = scsi::cdb::opcode::WRITE_10;
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
fn unknown_target_is_refused_without_asking_the_policy() {
    let mut h = Harness::new(TestPolicy::default());
    let r = h.login_to("iqn.nope");
    assert_eq!((r.status_class, r.status_detail), (2, 3));
    assert_eq!(h.conn.close_reason(), Some(&CloseReason::LoginEnded));
    assert!(h.policy.asked.is_empty());
}

#[test]
fn policy_not_found_refuses_the_login() {
    let mut h = Harness::new(TestPolicy {
        decision: LoginDecision::NotFound,
        ..TestPolicy::default()
    });
    let r = h.login_to(TARGET);
    assert_eq!((r.status_class, r.status_detail), (2, 3));
    assert_eq!(
        h.policy.asked,
        [(PortalId(0), INITIATOR.to_string(), TARGET.to_string())]
    );
}

#[test]
fn redirect_decision_answers_0101_with_the_address_and_ends() {
    let mut h = Harness::new(TestPolicy {
        decision: LoginDecision::Redirect {
            address: "127.0.0.2:3260".into(),
        },
        ..TestPolicy::default()
    });
    let r = h.login_to(TARGET);
    assert_eq!((r.status_class, r.status_detail), (1, 1));
    let t = TextPairs::parse(&r.data).unwrap();
    assert_eq!(t.get("TargetAddress"), Some("127.0.0.2:3260"));
    assert_eq!(h.conn.close_reason(), Some(&CloseReason::LoginEnded));
    // No session: its end is reported, but no nexus to release.
    h.conn.on_closed(CloseReason::Transport("gone".into()));
    h.run();
    assert_eq!(
        h.events,
        [Event::Ended {
            why: CloseReason::LoginEnded
        }]
    );
    assert!(h.side_effects.is_empty());
}

#[test]
fn full_feature_event_then_ended_with_nexus_lost() {
    let mut h = logged_in(&[]);
    assert_eq!(
        h.events,
        [Event::FullFeature {
            session_type: SessionType::Normal,
            initiator: INITIATOR.into(),
            target: Some(TARGET.into()),
            tsih: 1,
            isid: [0x80, 0, 0, 0, 0, 1],
            portal_group_tag: 1,
        }]
    );
    h.conn.on_closed(CloseReason::Transport(
        "connection closed by the initiator".into(),
    ));
    h.conn.on_closed(CloseReason::Transport("twice".into()));
    h.run();
    assert_eq!(h.side_effects, ["nexus lost 77"]);
    assert_eq!(h.events.len(), 2, "ended once");
    assert_eq!(
        h.events[1],
        Event::Ended {
            why: CloseReason::Transport("connection closed by the initiator".into())
        }
    );
}

#[test]
fn digests_and_mrdsl_switch_after_login() {
    let mut h = logged_in(&[("HeaderDigest", "CRC32C"), ("DataDigest", "CRC32C")]);
    assert_eq!(
        h.digests,
        Digests {
            header: true,
            data: true
        }
    );
    // Encoded with both digests: decoded and answered.
    let o = h.send(read10(1, 10, 0, 1));
    assert!(matches!(&o[..], [Pdu::DataIn(d)] if d.status_present));
    // A data digest error is rejected and the connection goes on (§6.6, §11.17).
    let nop = iscsi_proto::NopOut {
        immediate: true,
        itt: 5,
        ttt: iscsi_proto::RESERVED_TAG,
        cmd_sn: 11,
        data: Bytes::from_static(b"ping"),
        ..iscsi_proto::NopOut::default()
    };
    Pdu::NopOut(nop.clone())
        .encode(&mut h.rbuf, h.digests)
        .unwrap();
    let last = h.rbuf.len() - 1;
    h.rbuf[last] ^= 0xff;
    h.run();
    let o = h.out();
    assert!(
        matches!(&o[..], [Pdu::Reject(r)] if r.reason == iscsi_proto::reject_reason::DATA_DIGEST_ERROR),
        "{o:?}"
    );
    assert!(!h.conn.is_closing());
    // A header digest error is not recoverable: the connection closes.
    Pdu::NopOut(nop).encode(&mut h.rbuf, h.digests).unwrap();
    h.rbuf[iscsi_proto::BHS_LEN] ^= 0xff;
    h.run();
    assert!(matches!(
        h.conn.close_reason(),
        Some(CloseReason::Failed(_))
    ));
    assert!(h.rbuf.is_empty(), "the stream is given up");
}

#[test]
fn place_appends_overwrites_and_fills_gaps() {
    use super::write::place;
    let mut b = BytesMut::new();
    place(&mut b, 0, b"ab");
    place(&mut b, 4, b"ef");
    assert_eq!(&b[..], b"ab\0\0ef");
    place(&mut b, 2, b"cd");
    place(&mut b, 5, b"FGH");
    assert_eq!(&b[..], b"abcdeFGH");
}
