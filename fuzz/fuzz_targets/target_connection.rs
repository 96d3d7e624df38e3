//! Fuzz the target's sans-IO connection core (RFC 7143): arbitrary bytes, split into chunks,
//! are fed to a `Connection` with a policy that accepts every login; its SCSI requests run on
//! a small in-memory LUN and its output, events and timers are all polled. It must never
//! panic, and every PDU it emits must encode.
//!
//! Input: byte 0 picks the chunk size, byte 1 the seconds that pass per chunk and whether the
//! control plane asks for a logout; the rest is the initiator's byte stream.
#![no_main]

use std::sync::Arc;
use std::time::{Duration, Instant};

use balancer::PortalId;
use iscsi_proto::bytes::BytesMut;
use iscsi_target_core::{
    Catalog, CloseReason, Connection, Event, LoginDecision,
    LoginPolicy, ScsiRequest, SessionCommand,
};
use libfuzzer_sys::fuzz_target;
use scsi::{Identity, LogicalUnit, LunTable, MemDevice};

const TARGET: &str = "iqn.2024-01.fuzz:t";

struct AcceptAll(u16);

impl LoginPolicy for AcceptAll {
    fn login_decision(&mut self, _: PortalId, _: &str, _: &str) -> LoginDecision {
        LoginDecision::Accept {
            portal_group_tag: 1,
        }
    }
    fn next_tsih(&mut self) -> u16 {
        self.0 = self.0.wrapping_add(1).max(1);
        self.0
    }
}

fn drain(conn: &mut Connection, luns: &LunTable) -> bool {
    let mut any = false;
    while let Some(e) = conn.poll_event() {
        any = true;
        if let Event::FullFeature {
            target: Some(_), ..
        } = e
        {
            luns.nexus_established(1);
            conn.set_nexus(1);
        }
    }
    while let Some(r) = conn.poll_scsi() {
        any = true;
        match r {
            ScsiRequest::Command(mut c) => {
                let write = c.write;
                let (task, out, din) = c.parts();
                let (o, res) = luns.execute_transfer(&task, write, out, din);
                conn.on_scsi_complete(c, o, res);
            }
            ScsiRequest::LunReset { lun } => luns.reset_lun(lun),
            ScsiRequest::TargetReset => luns.reset_all(),
            ScsiRequest::NexusLost { nexus } => luns.nexus_lost(nexus),
        }
    }
    any
}

fn transmit(conn: &mut Connection) {
    let mut out = Vec::new();
    conn.poll_transmit(&mut out);
    let mut wire = BytesMut::new();
    for (pdu, digests) in out {
        pdu.encode(&mut wire, digests)
            .expect("an emitted PDU must encode");
    }
}

fuzz_target!(|input: &[u8]| {
    let [size, flags, stream @ ..] = input else {
        return;
    };
    let chunk = 1 + usize::from(*size) * 37;
    let step = Duration::from_secs(u64::from(flags & 0x1f));
    let mut luns = LunTable::new();
    let lu = LogicalUnit::new(
        Arc::new(MemDevice::new(64)),
        Identity::new(TARGET, 0).unwrap(),
    );
    luns.insert(0, Arc::new(lu)).unwrap();
    let catalog = Arc::new(Catalog::single(
        TARGET,
        vec![0],
        "127.0.0.1:3260".parse().unwrap(),
    ));
    let mut policy = AcceptAll(0);
    let mut now = Instant::now();
    let mut conn = Connection::new(catalog, PortalId(0), now);
    let mut rbuf = BytesMut::new();
    for (i, piece) in stream.chunks(chunk).enumerate() {
        rbuf.extend_from_slice(piece);
        loop {
            conn.on_bytes(&mut rbuf, now, &mut policy);
            if !drain(&mut conn, &luns) {
                break;
            }
        }
        if flags & 0x80 != 0 && i == 1 {
            conn.on_command(SessionCommand::RequestLogout { time2logout: 1 }, now);
        }
        now += step;
        conn.handle_timeout(now);
        let _ = conn.poll_timeout();
        transmit(&mut conn);
        if conn.is_closing() {
            break;
        }
    }
    conn.on_closed(CloseReason::Transport("fuzz input ended".into()));
    drain(&mut conn, &luns);
    transmit(&mut conn);
});
