//! A raw iSCSI session for tests that must behave unlike a real initiator (flood the target,
//! never read its answers, ignore a logout request): our own PDUs on a blocking socket, built
//! with the workspace's codecs (`iscsi_proto` framing, `initiator::login` for the login).
//!
//! Each test file uses part of this module, hence the `dead_code` allow.
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use initiator::login::{LoginConfig, LoginExchange, LoginProgress};
use iscsi_proto::{
    Digests, Limits, NopIn, NopOut, Pdu, PduDecoder, RESERVED_TAG, ScsiCommand, SessionParams,
};

/// Longest [`RawSession::recv`] waits for a PDU.
pub const RECV_LIMIT: Duration = Duration::from_secs(10);

/// Completions and data of the READs on a raw session.
#[derive(Debug, Default)]
pub struct ReadTally {
    pub done: usize,
    pub bytes: usize,
}

/// What [`RawSession::recv_before`] got.
#[derive(Debug)]
pub enum Received {
    Pdu(Pdu),
    /// The target closed the connection (end of stream or reset).
    Closed,
    /// Nothing whole arrived before the deadline.
    TimedOut,
}

/// How a login ended.
pub enum Login {
    Done(RawSession),
    /// Redirected (Status-Class 1) to this address.
    Redirected(SocketAddr),
}

/// A raw iSCSI session: our own PDUs on a blocking socket.
pub struct RawSession {
    pub s: TcpStream,
    dec: PduDecoder,
    buf: BytesMut,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
    pub itt: u32,
    /// The parameters negotiated at login.
    pub params: SessionParams,
}

impl RawSession {
    /// Logs in on `stream` (a Normal session of `initiator` to `target`) with portshift's
    /// initiator defaults (ImmediateData=Yes, MaxRecvDataSegmentLength 256 KiB); panics on a
    /// failed login or a redirect.
    pub fn login(stream: TcpStream, initiator: &str, target: &str) -> RawSession {
        match Self::try_login(stream, initiator, target) {
            Login::Done(s) => s,
            Login::Redirected(address) => panic!("redirected to {address}"),
        }
    }

    /// [`RawSession::login`], returning a redirect rather than panicking on it.
    pub fn try_login(stream: TcpStream, initiator: &str, target: &str) -> Login {
        let mut s = RawSession {
            s: stream,
            dec: PduDecoder::new(Limits::default()),
            buf: BytesMut::with_capacity(1 << 20),
            cmd_sn: 0,
            exp_stat_sn: 0,
            itt: 0x100,
            params: SessionParams::default(),
        };
        let mut login = LoginExchange::new(LoginConfig::normal(initiator, target), 1, 1);
        let mut req = login.start().expect("login start");
        for _ in 0..8 {
            s.send(&Pdu::LoginRequest(req));
            let Pdu::LoginResponse(resp) = s.recv() else {
                panic!("expected a Login Response")
            };
            match login.on_response(&resp).expect("login accepted") {
                LoginProgress::Send(next) => req = next,
                LoginProgress::Done(done) => {
                    s.cmd_sn = done.cmd_sn;
                    s.exp_stat_sn = done.exp_stat_sn;
                    s.dec.set_limits(Limits {
                        max_recv_data_segment_length: done
                            .params
                            .initiator_max_recv_data_segment_length,
                    });
                    s.params = done.params;
                    return Login::Done(s);
                }
                LoginProgress::Redirect { address, .. } => return Login::Redirected(address),
            }
        }
        panic!("login did not finish in 8 rounds");
    }

    pub fn send(&mut self, pdu: &Pdu) {
        let bytes = pdu.to_bytes(Digests::default()).expect("encode");
        self.s.write_all(&bytes).expect("send PDU");
    }

    /// The next PDU; panics after [`RECV_LIMIT`] without one, or if the target closes.
    pub fn recv(&mut self) -> Pdu {
        match self.recv_before(Instant::now() + RECV_LIMIT) {
            Received::Pdu(p) => p,
            Received::Closed => panic!("target closed the connection"),
            Received::TimedOut => panic!("no whole PDU from the target in {RECV_LIMIT:?}"),
        }
    }

    /// The next PDU, the close of the connection, or nothing by `deadline`.
    pub fn recv_before(&mut self, deadline: Instant) -> Received {
        loop {
            if let Some(p) = self.dec.decode(&mut self.buf).expect("decode PDU") {
                return Received::Pdu(p);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Received::TimedOut;
            }
            self.s.set_read_timeout(Some(left)).expect("read timeout");
            self.buf.reserve(256 * 1024);
            let mut chunk = vec![0u8; 256 * 1024];
            match self.s.read(&mut chunk) {
                Ok(0) => return Received::Closed,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return Received::Closed,
                Err(e) => panic!("read from target: {e}"),
            }
        }
    }

    /// Answers the target's NOP-In `ping` if it asks for an answer (TTT not 0xffffffff,
    /// RFC 7143 §11.19); returns whether it did.
    pub fn answer_ping(&mut self, ping: &NopIn) -> bool {
        if ping.ttt == RESERVED_TAG {
            return false;
        }
        let answer = NopOut::answer(ping, self.cmd_sn, self.exp_stat_sn);
        self.send(&Pdu::NopOut(answer));
        true
    }

    /// READ(10) of `blocks` 512-byte blocks at `lba`, as the next command.
    pub fn read10(&mut self, lba: u32, blocks: u16) -> Pdu {
        let mut cdb = [0u8; 16];
        cdb[0] = 0x28;
        cdb[2..6].copy_from_slice(&lba.to_be_bytes());
        cdb[7..9].copy_from_slice(&blocks.to_be_bytes());
        let cmd = ScsiCommand {
            final_: true,
            read: true,
            attr: 1,
            lun: 0,
            itt: self.itt,
            edtl: u32::from(blocks) * 512,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
            cdb,
            ..ScsiCommand::default()
        };
        self.itt += 1;
        self.cmd_sn = self.cmd_sn.wrapping_add(1);
        Pdu::ScsiCommand(cmd)
    }

    /// Reads answers until `n` commands have their status (all GOOD).
    pub fn complete(&mut self, n: usize) -> ReadTally {
        let mut tally = ReadTally::default();
        let deadline = Instant::now() + Duration::from_secs(30);
        while tally.done < n {
            assert!(
                Instant::now() < deadline,
                "{} of {n} READs completed in 30 s",
                tally.done
            );
            match self.recv() {
                Pdu::DataIn(d) => {
                    tally.bytes += d.data.len();
                    if d.status_present {
                        assert_eq!(d.status, 0, "READ status");
                        tally.done += 1;
                        self.exp_stat_sn = d.stat_sn.wrapping_add(1);
                    }
                }
                Pdu::ScsiResponse(r) => {
                    assert_eq!((r.response, r.status), (0, 0), "READ response");
                    tally.done += 1;
                    self.exp_stat_sn = r.stat_sn.wrapping_add(1);
                }
                Pdu::NopIn(_) => {}
                other => panic!("unexpected PDU {:?}", other.opcode()),
            }
        }
        tally
    }
}
