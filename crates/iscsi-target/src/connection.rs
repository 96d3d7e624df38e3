//! The sans-IO core of one target connection (RFC 7143): login through
//! [`iscsi_proto::login::TargetLogin`], then the full feature phase at ErrorRecoveryLevel 0 with
//! one connection per session. Decoded PDUs go in ([`Connection::on_pdu`]), PDUs to send come out
//! ([`Connection::take_output`]); time is passed in, so it is tested without sockets.
//!
//! Implemented: CmdSN windowing and ordering (§4.2.2.1, §3.2.2.1 of RFC 3720), immediate
//! commands, immediate and unsolicited data up to FirstBurstLength, R2T for the rest (§11.8,
//! MaxBurstLength, MaxOutstandingR2T), Data-In split by the initiator's MaxRecvDataSegmentLength
//! with phase-collapsed status (§11.7.3), residuals (§11.4.5), NOP-Out/NOP-In (§11.18, §11.19),
//! Task Management (§11.5), Text/SendTargets with continuation (§11.10, §11.11), Logout (§11.14),
//! Reject (§11.17), Async Message "logout requested" (§11.9.1).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use balancer::PortalId;
use bytes::{Bytes, BytesMut};
use iscsi_proto::login::{LoginStatus, LoginStep, TargetDecision, TargetLogin, TargetLoginConfig};
use iscsi_proto::params::{SessionParams, SessionType};
use iscsi_proto::text::{TextAssembler, TextPairs};
use iscsi_proto::{
    AsyncMessage, DataIn, DataOut, DecodeError, Digests, LogoutRequest, LogoutResponse, NopIn,
    NopOut, Pdu, R2t, RESERVED_TAG, Reject, ScsiCommand, ScsiResponse, SerialNumber,
    TaskMgmtRequest, TaskMgmtResponse, TextRequest, TextResponse, async_event, logout_reason,
    reject_reason,
};
use scsi::{Asc, LunTable, Residual, ScsiStatus, ScsiTask, Sense, SenseKey};

use crate::control::{Control, LoginDecision, SessionCommand, SessionHandle, SessionStats};
use crate::discovery;

mod buffers;
use buffers::BufferPool;

/// Commands the initiator may have outstanding: MaxCmdSN = ExpCmdSN + CMD_WINDOW - 1.
pub const CMD_WINDOW: u32 = 128;
/// Largest Expected Data Transfer Length accepted for a write (the buffer is allocated up front).
pub const MAX_WRITE_EDTL: u32 = 64 * 1024 * 1024;
/// Idle time after which the target pings the initiator with a NOP-In (§11.19).
pub const PING_IDLE: Duration = Duration::from_secs(15);
/// How long a target ping may stay unanswered before the connection is dropped.
pub const PING_TIMEOUT: Duration = Duration::from_secs(15);
/// Added to Time2Logout before a session that was asked to log out is dropped.
pub const LOGOUT_GRACE: Duration = Duration::from_secs(3);
/// Largest text (SendTargets answer) kept for continuation.
const MAX_TEXT_RESPONSE: usize = 1 << 20;

/// The targets served by this process: name → logical units. Shared by every portal.
#[derive(Debug)]
pub struct Shared {
    pub control: Arc<Control>,
    pub targets: HashMap<String, Arc<LunTable>>,
    /// Per target: LOGICAL UNIT RESETs and target resets so far; every session that has not
    /// seen the latest one gets a UNIT ATTENTION (SAM-5 §5.12, §7.6).
    resets: HashMap<String, Arc<AtomicU64>>,
    next_tsih: AtomicU16,
}

impl Shared {
    pub fn new(control: Arc<Control>, targets: HashMap<String, Arc<LunTable>>) -> Self {
        Shared {
            control,
            resets: targets
                .keys()
                .map(|k| (k.clone(), Arc::new(AtomicU64::new(0))))
                .collect(),
            targets,
            next_tsih: AtomicU16::new(1),
        }
    }

    /// A fresh non-zero TSIH (§11.12.6).
    fn tsih(&self) -> u16 {
        loop {
            let t = self.next_tsih.fetch_add(1, Ordering::Relaxed);
            if t != 0 {
                return t;
            }
        }
    }
}

/// A write waiting for its data (§11.7, §11.8).
#[derive(Debug)]
struct WriteTask {
    cmd: CmdInfo,
    buf: BytesMut,
    received: u32,
    /// Unsolicited data runs up to here.
    unsol_end: u32,
    unsol_next: u32,
    unsol_data_sn: u32,
    next_r2t_offset: u32,
    r2t_sn: u32,
    r2ts: Vec<R2tState>,
}

#[derive(Debug, Clone, Copy)]
struct R2tState {
    ttt: u32,
    offset: u32,
    len: u32,
    received: u32,
    data_sn: u32,
}

/// What execution needs of a SCSI Command.
#[derive(Debug, Clone)]
struct CmdInfo {
    lun: u64,
    itt: u32,
    edtl: u32,
    read: bool,
    write: bool,
    /// The CDB field of the BHS and the extended CDB AHS, if any (§11.3.5).
    cdb: [u8; 16],
    ext_cdb: Option<Bytes>,
}

impl CmdInfo {
    /// The whole CDB: borrowed unless an extended CDB has to be joined to it.
    fn full_cdb(&self) -> Cow<'_, [u8]> {
        match &self.ext_cdb {
            None => Cow::Borrowed(&self.cdb),
            Some(ext) => Cow::Owned([&self.cdb[..], ext].concat()),
        }
    }
}

/// A text response being delivered in pieces (C bit, §11.11.2).
#[derive(Debug)]
struct TextContinuation {
    ttt: u32,
    rest: Bytes,
}

/// Full-feature-phase state of the session (one connection per session).
#[derive(Debug)]
struct Session {
    params: SessionParams,
    digests: Digests,
    luns: Option<Arc<LunTable>>,
    /// Reset counter of the target, and its value when this I_T nexus last saw a reset.
    reset: Arc<AtomicU64>,
    reset_seen: u64,
    session_id: Option<u64>,
    stats: Arc<SessionStats>,
    exp_cmd_sn: u32,
    stat_sn: u32,
    /// Non-immediate commands that arrived ahead of ExpCmdSN, by CmdSN.
    ahead: BTreeMap<u32, Pdu>,
    writes: HashMap<u32, WriteTask>,
    next_ttt: u32,
    text_in: TextAssembler,
    text_out: Option<TextContinuation>,
}

impl Session {
    fn max_cmd_sn(&self) -> u32 {
        self.exp_cmd_sn.wrapping_add(CMD_WINDOW - 1)
    }
    fn next_stat_sn(&mut self) -> u32 {
        let s = self.stat_sn;
        self.stat_sn = s.wrapping_add(1);
        s
    }
    /// A Text Response to `t` (§11.11); C clear.
    fn text_response(
        &mut self,
        t: &TextRequest,
        ttt: u32,
        final_: bool,
        data: Bytes,
    ) -> TextResponse {
        TextResponse {
            final_,
            continue_: false,
            lun: t.lun,
            itt: t.itt,
            ttt,
            stat_sn: self.next_stat_sn(),
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.max_cmd_sn(),
            data,
        }
    }

    fn ttt(&mut self) -> u32 {
        let t = self.next_ttt;
        self.next_ttt = self.next_ttt.wrapping_add(1);
        if self.next_ttt == RESERVED_TAG {
            self.next_ttt = 1;
        }
        t
    }
}

/// Why the target closes a connection, as recorded when its session ends
/// ([`Control::session_ended`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The initiator sent a Logout Request and it was answered (§11.14, §11.15).
    Logout,
    /// The initiator asked for a TARGET COLD RESET, which drops the connection (§11.5.1).
    ColdReset,
    /// The login ended without reaching full feature phase (refused or redirected, §11.13.5).
    LoginEnded,
    /// The target gave up on the connection (protocol error, unanswered ping, ignored logout
    /// request).
    Failed(String),
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::Logout => f.write_str("logout requested by the initiator"),
            CloseReason::ColdReset => f.write_str("target cold reset requested by the initiator"),
            CloseReason::LoginEnded => f.write_str("login ended"),
            CloseReason::Failed(why) => write!(f, "closed by the target: {why}"),
        }
    }
}

#[derive(Debug)]
enum Phase {
    Login(Box<TargetLogin>),
    Full(Box<Session>),
}

/// One connection of the target: login, then its (single-connection) session.
#[derive(Debug)]
pub struct Connection {
    shared: Arc<Shared>,
    portal: PortalId,
    tpgt: u16,
    handle: SessionHandle,
    phase: Phase,
    out: Vec<(Pdu, Digests)>,
    closing: Option<CloseReason>,
    last_rx: Instant,
    ping: Option<(u32, Instant)>,
    logout_deadline: Option<Instant>,
    ended: bool,
    /// Large Data-In and write buffers, reused across commands.
    pool: BufferPool,
}

impl Connection {
    /// A connection accepted on `portal`; `handle` is where the control plane's
    /// [`SessionCommand`]s for this connection's session will be sent.
    pub fn new(shared: Arc<Shared>, portal: PortalId, handle: SessionHandle, now: Instant) -> Self {
        let tpgt = shared.control.portal(portal).map_or(1, |p| p.tag);
        Connection {
            shared,
            portal,
            tpgt,
            handle,
            phase: Phase::Login(Box::new(TargetLogin::new(TargetLoginConfig {
                cmd_window: CMD_WINDOW,
                ..TargetLoginConfig::default()
            }))),
            out: Vec::new(),
            closing: None,
            last_rx: now,
            ping: None,
            logout_deadline: None,
            ended: false,
            pool: BufferPool::default(),
        }
    }

    /// True once the connection should be closed after the queued output is written.
    pub fn is_closing(&self) -> bool {
        self.closing.is_some()
    }

    /// Why the connection is closing, once [`Connection::is_closing`].
    pub fn close_reason(&self) -> Option<&CloseReason> {
        self.closing.as_ref()
    }

    /// Marks the connection as closing for `why`, keeping the first reason given.
    fn close(&mut self, why: CloseReason) {
        if self.closing.is_none() {
            self.closing = Some(why);
        }
    }

    /// True when any output is queued.
    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// Moves the queued PDUs (each with the digests to encode it with) to `into`.
    pub fn take_output(&mut self, into: &mut Vec<(Pdu, Digests)>) {
        into.append(&mut self.out);
    }

    /// Digests and MaxRecvDataSegmentLength the decoder must use for the next PDU.
    pub fn rx_limits(&self) -> (Digests, u32) {
        match &self.phase {
            Phase::Login(_) => (Digests::NONE, 8192),
            Phase::Full(s) => (s.digests, s.params.target_max_recv_data_segment_length),
        }
    }

    /// The negotiated parameters, once in full feature phase.
    pub fn params(&self) -> Option<&SessionParams> {
        match &self.phase {
            Phase::Full(s) => Some(&s.params),
            Phase::Login(_) => None,
        }
    }

    /// Tells the control plane the session is gone; call once when the connection closes.
    pub fn finish(&mut self, why: &str) {
        if self.ended {
            return;
        }
        self.ended = true;
        if let Phase::Full(s) = &self.phase
            && let Some(id) = s.session_id
        {
            // The I_T nexus is gone: its SPC-2 reservations are released.
            if let Some(luns) = &s.luns {
                luns.nexus_lost(id);
            }
            self.shared.control.session_ended(id, why);
        }
    }

    fn push(&mut self, pdu: impl Into<Pdu>) {
        let d = match &self.phase {
            Phase::Full(s) => s.digests,
            Phase::Login(_) => Digests::NONE,
        };
        self.out.push((pdu.into(), d));
    }

    fn fail(&mut self, why: &str) {
        tracing::warn!(portal = %self.portal, "closing connection: {why}");
        self.close(CloseReason::Failed(why.to_owned()));
    }

    /// A PDU the decoder could not turn into a [`Pdu`]: Reject it when the stream can go on,
    /// else close (§6.6, §11.17).
    pub fn on_decode_error(&mut self, e: &DecodeError) {
        let in_ffp = matches!(self.phase, Phase::Full(_));
        match (e.header(), e.is_recoverable() && in_ffp) {
            (Some(h), true) => {
                let reason = match e {
                    DecodeError::UnknownOpcode { .. } => reject_reason::COMMAND_NOT_SUPPORTED,
                    DecodeError::DataDigest { .. } => reject_reason::DATA_DIGEST_ERROR,
                    _ => reject_reason::PROTOCOL_ERROR,
                };
                self.reject_header(reason, Bytes::copy_from_slice(h));
            }
            _ => self.fail(&format!("undecodable PDU: {e}")),
        }
    }

    /// One decoded PDU from the initiator.
    pub fn on_pdu(&mut self, pdu: Pdu, now: Instant) {
        if self.is_closing() {
            return;
        }
        self.last_rx = now;
        match self.phase {
            Phase::Login(_) => self.on_login_pdu(pdu),
            Phase::Full(_) => self.on_ffp_pdu(pdu, now),
        }
    }

    /// A command from the control plane.
    pub fn on_command(&mut self, cmd: SessionCommand, now: Instant) {
        let SessionCommand::RequestLogout { time2logout } = cmd;
        let Phase::Full(s) = &mut self.phase else {
            return;
        };
        if self.closing.is_some() || self.logout_deadline.is_some() {
            return;
        }
        let msg = AsyncMessage {
            lun: 0,
            stat_sn: s.next_stat_sn(),
            exp_cmd_sn: s.exp_cmd_sn,
            max_cmd_sn: s.max_cmd_sn(),
            async_event: async_event::LOGOUT_REQUESTED,
            parameter3: time2logout,
            ..AsyncMessage::default()
        };
        self.logout_deadline = Some(now + Duration::from_secs(time2logout.into()) + LOGOUT_GRACE);
        self.push(msg);
    }

    /// Timers: idle pings and the logout deadline.
    pub fn on_tick(&mut self, now: Instant) {
        if self.is_closing() {
            return;
        }
        let Phase::Full(s) = &mut self.phase else {
            return;
        };
        if let Some(deadline) = self.logout_deadline
            && now >= deadline
        {
            // §11.9.1 AsyncEvent 2: the target drops this connection.
            let msg = AsyncMessage {
                stat_sn: s.next_stat_sn(),
                exp_cmd_sn: s.exp_cmd_sn,
                max_cmd_sn: s.max_cmd_sn(),
                async_event: async_event::CONNECTION_DROP,
                parameter2: s.params.default_time2wait,
                parameter3: s.params.default_time2retain,
                ..AsyncMessage::default()
            };
            self.push(msg);
            self.fail("the initiator did not log out when asked");
            return;
        }
        match self.ping {
            Some((_, sent)) if now.duration_since(sent) >= PING_TIMEOUT => {
                self.fail("NOP-In ping not answered");
            }
            None if now.duration_since(self.last_rx) >= PING_IDLE => {
                let ttt = s.ttt();
                let nop = NopIn {
                    lun: 0,
                    itt: RESERVED_TAG,
                    ttt,
                    stat_sn: s.stat_sn,
                    exp_cmd_sn: s.exp_cmd_sn,
                    max_cmd_sn: s.max_cmd_sn(),
                    data: Bytes::new(),
                };
                self.ping = Some((ttt, now));
                self.push(nop);
            }
            _ => {}
        }
    }

    // ---- login -------------------------------------------------------------------------

    fn on_login_pdu(&mut self, pdu: Pdu) {
        let Phase::Login(login) = &mut self.phase else {
            return;
        };
        let Pdu::LoginRequest(req) = pdu else {
            self.fail("non-login PDU before full feature phase");
            return;
        };
        let mut step = login.on_request(req);
        if let LoginStep::NeedTargetDecision {
            initiator_name,
            target_name,
            session_type,
            ..
        } = &step
        {
            let decision = match (session_type, target_name) {
                (SessionType::Discovery, _) => TargetDecision::Accept {
                    portal_group_tag: self.tpgt,
                    target_alias: None,
                    tsih: self.shared.tsih(),
                },
                (SessionType::Normal, Some(t)) if self.shared.targets.contains_key(t) => match self
                    .shared
                    .control
                    .login_decision(self.portal, initiator_name, t)
                {
                    LoginDecision::Accept { portal_group_tag } => TargetDecision::Accept {
                        portal_group_tag,
                        target_alias: None,
                        tsih: self.shared.tsih(),
                    },
                    LoginDecision::Redirect { address } => TargetDecision::Redirect {
                        address,
                        permanent: false,
                    },
                    LoginDecision::NotFound => TargetDecision::Refuse(LoginStatus::NOT_FOUND),
                },
                _ => TargetDecision::Refuse(LoginStatus::NOT_FOUND),
            };
            step = login.decide(decision);
        }
        match step {
            LoginStep::Send(r) => self.push(r),
            LoginStep::Close { response, status } => {
                tracing::info!(portal = %self.portal, "login ended with status {:#06x}", status.code());
                self.push(response);
                self.close(CloseReason::LoginEnded);
            }
            LoginStep::NeedTargetDecision { .. } => self.fail("login asked twice for a decision"),
            LoginStep::Complete {
                response,
                params,
                exp_cmd_sn,
                next_stat_sn,
                ..
            } => {
                // The final response goes out without digests; everything after uses them.
                self.push(response);
                let luns = params
                    .target_name
                    .as_ref()
                    .and_then(|t| self.shared.targets.get(t).cloned());
                let (session_id, stats) = match (&params.target_name, params.session_type) {
                    (Some(t), SessionType::Normal) => {
                        let (id, st) = self.shared.control.session_started(
                            self.portal,
                            &params.initiator_name,
                            t,
                            self.handle.clone(),
                        );
                        (Some(id), st)
                    }
                    _ => (None, Arc::new(SessionStats::default())),
                };
                let reset = params
                    .target_name
                    .as_ref()
                    .and_then(|t| self.shared.resets.get(t).cloned())
                    .unwrap_or_default();
                let reset_seen = reset.load(Ordering::Relaxed);
                self.phase = Phase::Full(Box::new(Session {
                    digests: params.digests(),
                    params,
                    luns,
                    reset,
                    reset_seen,
                    session_id,
                    stats,
                    exp_cmd_sn,
                    stat_sn: next_stat_sn,
                    ahead: BTreeMap::new(),
                    writes: HashMap::new(),
                    next_ttt: 1,
                    text_in: TextAssembler::default(),
                    text_out: None,
                }));
            }
        }
    }

    // ---- full feature phase: ordering ---------------------------------------------------

    fn session(&mut self) -> Option<&mut Session> {
        match &mut self.phase {
            Phase::Full(s) => Some(s),
            Phase::Login(_) => None,
        }
    }

    fn on_ffp_pdu(&mut self, pdu: Pdu, now: Instant) {
        let (immediate, cmd_sn) = match &pdu {
            Pdu::DataOut(d) => return self.on_data_out(d),
            Pdu::NopOut(n) if n.itt == RESERVED_TAG => {
                // The answer to our ping (§11.18.1).
                if self.ping.is_some_and(|(ttt, _)| ttt == n.ttt) {
                    self.ping = None;
                }
                return;
            }
            Pdu::SnackRequest(_) => {
                // §6.7: no SNACK at ErrorRecoveryLevel 0.
                return self.reject(reject_reason::PROTOCOL_ERROR, &pdu);
            }
            Pdu::ScsiCommand(c) => (c.immediate, c.cmd_sn),
            Pdu::TaskMgmtRequest(t) => (t.immediate, t.cmd_sn),
            Pdu::TextRequest(t) => (t.immediate, t.cmd_sn),
            Pdu::LogoutRequest(l) => (l.immediate, l.cmd_sn),
            Pdu::NopOut(n) => (n.immediate, n.cmd_sn),
            _ => return self.reject(reject_reason::PROTOCOL_ERROR, &pdu),
        };
        let Some(s) = self.session() else { return };
        if immediate {
            return self.dispatch(pdu, now);
        }
        let sn = SerialNumber(cmd_sn);
        let exp = SerialNumber(s.exp_cmd_sn);
        if cmd_sn == s.exp_cmd_sn {
            s.exp_cmd_sn = s.exp_cmd_sn.wrapping_add(1);
            self.dispatch(pdu, now);
            self.run_ahead(now);
        } else if sn.gt(exp) && sn.le(SerialNumber(s.max_cmd_sn())) {
            // Arrived ahead of a gap: held until the gap is filled (§3.2.2.1 of RFC 3720).
            if s.ahead.len() < CMD_WINDOW as usize {
                s.ahead.insert(cmd_sn, pdu);
            }
        } else {
            // Outside the window: silently ignored (§4.2.2.1).
            tracing::debug!(
                cmd_sn,
                exp_cmd_sn = s.exp_cmd_sn,
                "CmdSN outside the window"
            );
        }
    }

    fn run_ahead(&mut self, now: Instant) {
        while let Some(s) = self.session() {
            let Some(pdu) = s.ahead.remove(&s.exp_cmd_sn) else {
                return;
            };
            s.exp_cmd_sn = s.exp_cmd_sn.wrapping_add(1);
            self.dispatch(pdu, now);
        }
    }

    fn dispatch(&mut self, pdu: Pdu, now: Instant) {
        let discovery = self
            .session()
            .is_some_and(|s| s.params.session_type == SessionType::Discovery);
        match pdu {
            Pdu::ScsiCommand(c) if !discovery => self.on_scsi_command(c),
            Pdu::TaskMgmtRequest(t) if !discovery => self.on_task_mgmt(t),
            Pdu::TextRequest(t) => self.on_text(t),
            Pdu::LogoutRequest(l) => self.on_logout(l),
            Pdu::NopOut(n) => self.on_nop_out(n, now),
            // §6.3: a Discovery session carries only Text and Logout requests.
            other => self.reject(reject_reason::PROTOCOL_ERROR, &other),
        }
    }

    // ---- Reject -------------------------------------------------------------------------

    fn reject(&mut self, reason: u8, pdu: &Pdu) {
        let mut hdr = BytesMut::new();
        if pdu.encode_header(&mut hdr, Digests::NONE).is_err() {
            hdr.clear();
        }
        hdr.truncate(iscsi_proto::BHS_LEN);
        self.reject_header(reason, hdr.freeze());
    }

    fn reject_header(&mut self, reason: u8, header: Bytes) {
        let Some(s) = self.session() else {
            self.close(CloseReason::Failed("unacceptable PDU during login".into()));
            return;
        };
        let r = Reject {
            reason,
            stat_sn: s.next_stat_sn(),
            exp_cmd_sn: s.exp_cmd_sn,
            max_cmd_sn: s.max_cmd_sn(),
            data_sn: 0,
            header,
        };
        self.push(r);
    }

    // ---- NOP, Logout, Text ----------------------------------------------------------------

    fn on_nop_out(&mut self, n: NopOut, _now: Instant) {
        let Some(s) = self.session() else { return };
        let limit = s.params.initiator_max_recv_data_segment_length as usize;
        let data = n.data.slice(..n.data.len().min(limit));
        let nop = NopIn {
            lun: n.lun,
            itt: n.itt,
            ttt: RESERVED_TAG,
            stat_sn: s.next_stat_sn(),
            exp_cmd_sn: s.exp_cmd_sn,
            max_cmd_sn: s.max_cmd_sn(),
            data,
        };
        self.push(nop);
    }

    fn on_logout(&mut self, l: LogoutRequest) {
        let Some(s) = self.session() else { return };
        // §11.15.1: 0 closed successfully, 2 connection recovery not supported.
        let response = match l.reason_code {
            logout_reason::CLOSE_SESSION | logout_reason::CLOSE_CONNECTION => 0,
            _ => 2,
        };
        let r = LogoutResponse {
            response,
            itt: l.itt,
            stat_sn: s.next_stat_sn(),
            exp_cmd_sn: s.exp_cmd_sn,
            max_cmd_sn: s.max_cmd_sn(),
            time2wait: s.params.default_time2wait,
            time2retain: s.params.default_time2retain,
        };
        self.push(r);
        if response == 0 {
            self.close(CloseReason::Logout);
        }
    }

    fn on_text(&mut self, t: TextRequest) {
        let portals = self.shared.control.portals().to_vec();
        let targets = self.shared.control.targets().to_vec();
        let Some(s) = self.session() else { return };
        let limit = (s.params.initiator_max_recv_data_segment_length as usize).max(512);
        let body = if t.ttt != RESERVED_TAG {
            // Continuation of a long answer (§11.11.2): an empty request with our TTT.
            match s.text_out.take() {
                Some(c) if c.ttt == t.ttt => c.rest,
                _ => {
                    return self.reject(reject_reason::PROTOCOL_ERROR, &Pdu::TextRequest(t));
                }
            }
        } else {
            s.text_out = None;
            let pairs = match s.text_in.push(&t.data, t.continue_) {
                Ok(Some(p)) => p,
                Ok(None) => {
                    // Acknowledge partial request text with an empty response (§11.10.2).
                    let ttt = s.ttt();
                    let r = s.text_response(&t, ttt, false, Bytes::new());
                    return self.push(r);
                }
                Err(_) => return self.reject(reject_reason::PROTOCOL_ERROR, &Pdu::TextRequest(t)),
            };
            let mut answer = BytesMut::new();
            let mut others = TextPairs::new();
            for (k, v) in pairs.iter() {
                if k == "SendTargets" {
                    let own = s.params.target_name.as_deref();
                    answer.extend_from_slice(&discovery::send_targets(v, &targets, &portals, own));
                } else {
                    let _ = others.push(k, iscsi_proto::params::answer::NOT_UNDERSTOOD);
                }
            }
            others.serialize_into(&mut answer);
            answer.truncate(MAX_TEXT_RESPONSE);
            answer.freeze()
        };
        let (now, rest) = if body.len() > limit {
            (body.slice(..limit), Some(body.slice(limit..)))
        } else {
            (body, None)
        };
        let more = rest.is_some();
        let ttt = if more { s.ttt() } else { RESERVED_TAG };
        if let Some(rest) = rest {
            s.text_out = Some(TextContinuation { ttt, rest });
        }
        let mut r = s.text_response(&t, ttt, !more, now);
        r.continue_ = more;
        self.push(r);
    }

    // ---- Task management -------------------------------------------------------------------

    fn on_task_mgmt(&mut self, t: TaskMgmtRequest) {
        const COMPLETE: u8 = 0;
        const NO_TASK: u8 = 1;
        const NO_LUN: u8 = 2;
        const NO_REASSIGN: u8 = 4;
        const NOT_SUPPORTED: u8 = 5;
        let Some(s) = self.session() else { return };
        let lun_ok = s.luns.as_ref().is_some_and(|l| l.get(t.lun).is_some());
        let mut close = false;
        let response = match t.function {
            // ABORT TASK (§11.5.1).
            1 => {
                if s.writes.remove(&t.referenced_task_tag).is_some() {
                    COMPLETE
                } else {
                    // Not found: "function complete" only when RefCmdSN is in the valid
                    // window [ExpCmdSN, MaxCmdSN] and before this request (the command never
                    // arrived); a task already answered is outside it: "task does not exist".
                    let r = SerialNumber(t.ref_cmd_sn);
                    let here = SerialNumber(t.cmd_sn);
                    if r.ge(SerialNumber(s.exp_cmd_sn)) && r.lt(here) {
                        COMPLETE
                    } else {
                        NO_TASK
                    }
                }
            }
            // ABORT TASK SET, CLEAR ACA, CLEAR TASK SET, LOGICAL UNIT RESET.
            2..=5 => {
                if lun_ok {
                    s.writes.retain(|_, w| w.cmd.lun != t.lun);
                    if t.function == 5 {
                        s.reset.fetch_add(1, Ordering::Relaxed);
                        if let Some(luns) = &s.luns {
                            luns.reset_lun(t.lun);
                        }
                    }
                    COMPLETE
                } else {
                    NO_LUN
                }
            }
            // TARGET WARM RESET, TARGET COLD RESET (the latter also drops the connection).
            6 | 7 => {
                s.writes.clear();
                s.reset.fetch_add(1, Ordering::Relaxed);
                if let Some(luns) = &s.luns {
                    luns.reset_all();
                }
                close = t.function == 7;
                COMPLETE
            }
            // TASK REASSIGN needs ErrorRecoveryLevel 2.
            8 => NO_REASSIGN,
            _ => NOT_SUPPORTED,
        };
        let r = TaskMgmtResponse {
            response,
            itt: t.itt,
            stat_sn: s.next_stat_sn(),
            exp_cmd_sn: s.exp_cmd_sn,
            max_cmd_sn: s.max_cmd_sn(),
        };
        self.push(r);
        if close {
            self.close(CloseReason::ColdReset);
        }
    }

    // ---- SCSI commands and data ------------------------------------------------------------

    fn on_scsi_command(&mut self, c: ScsiCommand) {
        let Some(s) = self.session() else { return };
        if s.writes.contains_key(&c.itt) {
            return self.reject(reject_reason::TASK_IN_PROGRESS, &Pdu::ScsiCommand(c));
        }
        let resets = s.reset.load(Ordering::Relaxed);
        if resets != s.reset_seen && !matches!(c.cdb[0], 0x12 | 0xa0 | 0x03) {
            // SPC-4 §5.14: one UNIT ATTENTION per reset, except for INQUIRY, REPORT LUNS
            // and REQUEST SENSE.
            s.reset_seen = resets;
            let ua = Sense::new(SenseKey::UnitAttention, Asc::new(0x29, 0x00));
            return self.respond_sense(c.itt, ua, 0);
        }
        let cmd = CmdInfo {
            lun: c.lun,
            itt: c.itt,
            edtl: c.edtl,
            read: c.read,
            write: c.write,
            cdb: c.cdb,
            ext_cdb: c.ext_cdb.clone(),
        };
        if !c.write || c.edtl == 0 {
            if !c.data.is_empty() {
                return self.reject(reject_reason::PROTOCOL_ERROR, &Pdu::ScsiCommand(c));
            }
            return self.execute(cmd, &[], 0);
        }
        let p = &s.params;
        let first_burst = if p.immediate_data || !p.initial_r2t {
            p.first_burst_length.min(c.edtl)
        } else {
            0
        };
        let imm = c.data.len() as u32;
        if c.edtl > MAX_WRITE_EDTL || imm > first_burst || (imm > 0 && !p.immediate_data) {
            return self.reject(reject_reason::PROTOCOL_ERROR, &Pdu::ScsiCommand(c));
        }
        let unsol_end = if c.final_ || p.initial_r2t {
            imm
        } else {
            first_burst
        };
        if imm == c.edtl {
            // All the data came with the command: no buffer to assemble.
            return self.execute(cmd, &c.data, 0);
        }
        // Data-Out is appended in order as it comes; only a gap (out-of-order R2T
        // sequences) is zero-filled, to be overwritten when its data arrives.
        let mut buf = self.pool.take(c.edtl as usize);
        buf.extend_from_slice(&c.data);
        let task = WriteTask {
            cmd,
            buf,
            received: imm,
            unsol_end,
            unsol_next: imm,
            unsol_data_sn: 0,
            next_r2t_offset: unsol_end,
            r2t_sn: 0,
            r2ts: Vec::new(),
        };
        self.advance_write(task);
    }

    /// Executes a write whose data is all in, or issues the R2Ts it may have outstanding.
    fn advance_write(&mut self, mut task: WriteTask) {
        if task.received >= task.cmd.edtl {
            let WriteTask {
                cmd,
                mut buf,
                r2t_sn,
                ..
            } = task;
            buf.resize(cmd.edtl as usize, 0);
            self.execute(cmd, &buf, r2t_sn);
            return self.pool.give(buf);
        }
        let Some(s) = self.session() else { return };
        let max_out = usize::from(s.params.max_outstanding_r2t.max(1));
        let burst = s.params.max_burst_length.max(512);
        let mut r2ts = Vec::new();
        while task.r2ts.len() < max_out && task.next_r2t_offset < task.cmd.edtl {
            let len = burst.min(task.cmd.edtl - task.next_r2t_offset);
            let ttt = s.ttt();
            let r2t = R2t {
                lun: task.cmd.lun,
                itt: task.cmd.itt,
                ttt,
                stat_sn: s.stat_sn,
                exp_cmd_sn: s.exp_cmd_sn,
                max_cmd_sn: s.max_cmd_sn(),
                r2t_sn: task.r2t_sn,
                buffer_offset: task.next_r2t_offset,
                desired_data_transfer_length: len,
            };
            task.r2ts.push(R2tState {
                ttt,
                offset: task.next_r2t_offset,
                len,
                received: 0,
                data_sn: 0,
            });
            task.r2t_sn += 1;
            task.next_r2t_offset += len;
            r2ts.push(r2t);
        }
        s.writes.insert(task.cmd.itt, task);
        for r in r2ts {
            self.push(r);
        }
    }

    fn on_data_out(&mut self, d: &DataOut) {
        let Some(s) = self.session() else { return };
        let Some(mut task) = s.writes.remove(&d.itt) else {
            // Data for a task that is gone (aborted, or answered already): ignored.
            tracing::debug!(itt = d.itt, "Data-Out for no outstanding task");
            return;
        };
        let len = d.data.len() as u32;
        let offset = d.buffer_offset;
        let ok = if d.ttt == RESERVED_TAG {
            let fits = offset == task.unsol_next
                && d.data_sn == task.unsol_data_sn
                && offset.checked_add(len).is_some_and(|e| e <= task.unsol_end);
            if fits {
                task.unsol_next += len;
                task.unsol_data_sn += 1;
            }
            fits
        } else {
            match task.r2ts.iter().position(|r| r.ttt == d.ttt) {
                Some(i) => {
                    let r = &mut task.r2ts[i];
                    let fits = offset == r.offset + r.received
                        && d.data_sn == r.data_sn
                        && r.received + len <= r.len;
                    if fits {
                        r.received += len;
                        r.data_sn += 1;
                        if r.received == r.len {
                            task.r2ts.remove(i);
                        }
                    }
                    fits
                }
                None => false,
            }
        };
        if !ok {
            // Without SNACK (ERL 0) the data cannot be recovered: the task ends with CHECK
            // CONDITION, ABORTED COMMAND / DATA PHASE ERROR; its further Data-Out is ignored.
            tracing::debug!(
                itt = d.itt,
                data_sn = d.data_sn,
                offset,
                "Data-Out out of sequence; task aborted"
            );
            let sense = Sense::new(SenseKey::AbortedCommand, Asc::new(0x4b, 0x00));
            return self.respond_sense(d.itt, sense, task.r2t_sn);
        }
        place(&mut task.buf, offset as usize, &d.data);
        task.received += len;
        self.advance_write(task);
    }

    /// Runs a command on the target's logical units and queues Data-In and/or the response.
    fn execute(&mut self, mut cmd: CmdInfo, data_out: &[u8], r2ts: u32) {
        let tpgt = self.tpgt;
        let mut data_in = if cmd.read {
            self.pool.take(cmd.edtl as usize)
        } else {
            BytesMut::new()
        };
        let Some(s) = self.session() else { return };
        let Some(luns) = s.luns.clone() else { return };
        let nexus = s.session_id.unwrap_or(0);
        let edtl = cmd.edtl;
        // A write whose EDTL is shorter than its SCSI transfer writes only the EDTL's whole
        // blocks and reports the overflow (RFC 7143 §11.4.5.1; libiscsi iSCSIResiduals).
        let mut write_len = None;
        let mut skip = false;
        if cmd.write
            && let Ok(tl) = luns.data_out_length(cmd.lun, &cmd.full_cdb())
        {
            write_len = Some(tl);
            if tl > edtl {
                let bs = luns.get(cmd.lun).map_or(512, |u| u.block_size()).max(1);
                skip = shorten_transfer(&mut cmd.cdb, edtl / bs) == Some(false);
            }
        }
        let cdb = cmd.full_cdb();
        let task = ScsiTask {
            cdb: &cdb,
            lun: cmd.lun,
            expected_data_transfer_length: edtl,
            tpgt,
            nexus,
        };
        let outcome = if skip {
            scsi::ScsiOutcome::good(0, 0)
        } else {
            luns.execute(&task, data_out, &mut data_in)
        };
        s.stats.command_done();
        let wanted = match write_len {
            Some(tl) => tl,
            None => outcome.data_in_wanted,
        };
        let residual = if outcome.status == ScsiStatus::Good {
            Residual::compute(edtl, wanted)
        } else {
            Residual::None
        };
        if !cmd.read {
            data_in.clear();
        }
        let status = outcome.status as u8;
        if outcome.status == ScsiStatus::Good && !data_in.is_empty() {
            let data = data_in.freeze();
            self.pool.lend(&data);
            return self.data_in(&cmd, data, status, residual);
        }
        self.pool.give(data_in);
        let Some(s) = self.session() else { return };
        let (o, u, count) = residual_fields(residual);
        let r = ScsiResponse {
            residual_overflow: o,
            residual_underflow: u,
            response: 0,
            status,
            itt: cmd.itt,
            stat_sn: s.next_stat_sn(),
            exp_cmd_sn: s.exp_cmd_sn,
            max_cmd_sn: s.max_cmd_sn(),
            exp_data_sn: r2ts,
            residual_count: count,
            sense: outcome
                .sense
                .map(|x| Bytes::copy_from_slice(&x.to_fixed()))
                .unwrap_or_default(),
            ..ScsiResponse::default()
        };
        self.push(r);
    }

    /// A SCSI Response with CHECK CONDITION and `sense`.
    fn respond_sense(&mut self, itt: u32, sense: Sense, r2ts: u32) {
        let Some(s) = self.session() else { return };
        let r = ScsiResponse {
            status: ScsiStatus::CheckCondition as u8,
            itt,
            stat_sn: s.next_stat_sn(),
            exp_cmd_sn: s.exp_cmd_sn,
            max_cmd_sn: s.max_cmd_sn(),
            exp_data_sn: r2ts,
            sense: Bytes::copy_from_slice(&sense.to_fixed()),
            ..ScsiResponse::default()
        };
        self.push(r);
    }

    /// Data-In PDUs of at most the initiator's MaxRecvDataSegmentLength, F at each
    /// MaxBurstLength boundary, status in the last one (§11.7).
    fn data_in(&mut self, cmd: &CmdInfo, data: Bytes, status: u8, residual: Residual) {
        let Phase::Full(s) = &mut self.phase else {
            return;
        };
        let seg = (s.params.initiator_max_recv_data_segment_length as usize).max(512);
        let burst = (s.params.max_burst_length as usize).max(seg);
        let total = data.len();
        let (o, u, count) = residual_fields(residual);
        let digests = s.digests;
        let mut off = 0;
        let mut data_sn = 0u32;
        self.out.reserve(total.div_ceil(seg));
        while off < total {
            let in_burst = burst - off % burst;
            let n = seg.min(total - off).min(in_burst);
            let last = off + n == total;
            self.out.push((
                Pdu::DataIn(DataIn {
                    final_: last || n == in_burst,
                    ack: false,
                    residual_overflow: last && o,
                    residual_underflow: last && u,
                    status_present: last,
                    status: if last { status } else { 0 },
                    lun: cmd.lun,
                    itt: cmd.itt,
                    ttt: RESERVED_TAG,
                    stat_sn: if last { s.next_stat_sn() } else { 0 },
                    exp_cmd_sn: s.exp_cmd_sn,
                    max_cmd_sn: s.max_cmd_sn(),
                    data_sn,
                    buffer_offset: off as u32,
                    residual_count: if last { count } else { 0 },
                    data: data.slice(off..off + n),
                }),
                digests,
            ));
            data_sn += 1;
            off += n;
        }
    }
}

/// Writes `data` at `offset` of `buf`, growing it (zero-filling any gap before `offset`).
fn place(buf: &mut BytesMut, offset: usize, data: &[u8]) {
    if buf.len() < offset {
        buf.resize(offset, 0);
    }
    let inside = buf.len().saturating_sub(offset).min(data.len());
    let (over, beyond) = data.split_at(inside);
    if let Some(dst) = buf.get_mut(offset..offset + inside) {
        dst.copy_from_slice(over);
    }
    buf.extend_from_slice(beyond);
}

/// (O, U, count) of a residual.
fn residual_fields(r: Residual) -> (bool, bool, u32) {
    match r {
        Residual::None => (false, false, 0),
        Residual::Overflow(n) => (true, false, n),
        Residual::Underflow(n) => (false, true, n),
    }
}

/// Rewrites the TRANSFER LENGTH of a WRITE / WRITE AND VERIFY CDB (SBC-3 §5.40-§5.47) to
/// `blocks`: `Some(true)` done; `Some(false)` when WRITE(6) cannot express 0 blocks (0 means
/// 256), so nothing must be written; `None` for other commands, left as they are.
fn shorten_transfer(cdb: &mut [u8], blocks: u32) -> Option<bool> {
    let op = *cdb.first()?;
    let (at, width) = match op {
        0x0a if blocks == 0 => return Some(false),
        0x0a => (4, 1),
        0x2a | 0x2e => (7, 2),
        0xaa | 0xae => (6, 4),
        0x8a | 0x8e => (10, 4),
        _ => return None,
    };
    let bytes = blocks.to_be_bytes();
    let dst = cdb.get_mut(at..at + width)?;
    dst.copy_from_slice(bytes.get(4 - width..)?);
    Some(true)
}

#[cfg(test)]
mod tests;
