//! One target connection (RFC 7143) and its single-connection session at ErrorRecoveryLevel 0:
//! login (`login`), then the full feature phase — CmdSN ordering (`command_window`), SCSI
//! commands and their data (`write`, `data_in`), Text/SendTargets (`text`), task
//! management (`task_mgmt`), NOP pings and Async Messages (`async_message`), Logout and
//! Reject (here).
//!
//! Bytes and time go in; PDUs, SCSI requests and events come out through `poll_*`. Nothing
//! here reads a clock, takes a lock or touches a file.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use balancer::PortalId;
use bytes::{Bytes, BytesMut};
use iscsi_proto::login::{TargetLogin, TargetLoginConfig};
use iscsi_proto::params::{SessionParams, SessionType};
use iscsi_proto::text::TextAssembler;
use iscsi_proto::{
    DecodeError, Digests, Limits, LogoutRequest, LogoutResponse, Pdu, PduDecoder, RESERVED_TAG,
    Reject, logout_reason, reject_reason,
};

use crate::catalog::{Catalog, CatalogTarget};
use crate::event::{CloseReason, Event};
use crate::policy::LoginPolicy;
use crate::request::ScsiRequest;

mod async_message;
mod buffers;
mod command_window;
mod data_in;
mod login;
mod task_mgmt;
mod text;
mod write;

pub use buffers::BufferPool;
pub use text::send_targets;
pub use write::{DataOutSink, IN_PLACE_MIN};

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
/// Time from a connection's creation within which its login must reach the full feature
/// phase; after it the connection is closed (a connection cannot sit in login forever).
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(20);
/// MaxRecvDataSegmentLength during login (§13.12).
const LOGIN_MRDSL: u32 = 8192;

/// Full-feature-phase state of the session (one connection per session).
#[derive(Debug)]
struct Session {
    params: SessionParams,
    digests: Digests,
    /// Index of the session's target in the catalog (None for discovery).
    target: Option<usize>,
    exp_cmd_sn: u32,
    stat_sn: u32,
    /// Non-immediate commands that arrived ahead of ExpCmdSN, by CmdSN.
    ahead: BTreeMap<u32, Pdu>,
    writes: HashMap<u32, write::WriteTask>,
    next_ttt: u32,
    text_in: TextAssembler,
    text_out: Option<text::TextContinuation>,
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

    /// A fresh Target Transfer Tag, never the reserved one.
    fn ttt(&mut self) -> u32 {
        let t = self.next_ttt;
        self.next_ttt = self.next_ttt.wrapping_add(1);
        if self.next_ttt == RESERVED_TAG {
            self.next_ttt = 1;
        }
        t
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
    catalog: Arc<Catalog>,
    portal: PortalId,
    tpgt: u16,
    phase: Phase,
    decoder: PduDecoder,
    out: Vec<(Pdu, Digests)>,
    /// The medium views lent to data in `out` ([`Connection::poll_transmit_lent`]).
    lent: Vec<scsi::LentView>,
    /// Approximate bytes of `out`: every Data-In segment plus one header per PDU
    /// (see [`Connection::queued_bytes`]); kept up to date as PDUs are queued.
    out_bytes: usize,
    scsi: VecDeque<ScsiRequest>,
    events: VecDeque<Event>,
    closing: Option<CloseReason>,
    last_rx: Instant,
    ping: Option<(u32, Instant)>,
    logout_deadline: Option<Instant>,
    /// When the logout request was sent, and its Time2Logout in seconds.
    logout_requested: Option<(Instant, u16)>,
    /// When the login must have completed ([`LOGIN_TIMEOUT`] after creation).
    login_deadline: Instant,
    /// The names the login requests gave so far (None once in full feature phase).
    login_names: Option<Box<login::LoginNames>>,
    /// The status of a login this connection refused (class 2 or 3, authentication failures
    /// aside: those are an [`Event::AuthenticationFailed`]), until the shell takes it.
    login_refused: Option<iscsi_proto::login::LoginStatus>,
    ended: bool,
    nexus: u64,
    /// Large Data-In and write buffers, reused across commands.
    pool: BufferPool,
    /// Random bytes for this login's CHAP challenge, given by the shell.
    chap_random: Option<ChapRandom>,
}

/// Random bytes for one CHAP challenge: CHAP_I, then CHAP_C (RFC 7143 §12.1.3).
pub type ChapRandom = [u8; iscsi_proto::chap::CHALLENGE_LEN + 1];

impl Connection {
    /// A connection accepted on `portal` at `now`, serving the targets of `catalog`.
    pub fn new(catalog: Arc<Catalog>, portal: PortalId, now: Instant) -> Self {
        let tpgt = catalog.portal(portal).map_or(1, |p| p.tag);
        Connection {
            catalog,
            portal,
            tpgt,
            phase: Phase::Login(Box::new(TargetLogin::new(TargetLoginConfig {
                cmd_window: CMD_WINDOW,
                ..TargetLoginConfig::default()
            }))),
            decoder: PduDecoder::new(Limits {
                max_recv_data_segment_length: LOGIN_MRDSL,
            }),
            out: Vec::new(),
            lent: Vec::new(),
            out_bytes: 0,
            scsi: VecDeque::new(),
            events: VecDeque::new(),
            closing: None,
            last_rx: now,
            ping: None,
            logout_deadline: None,
            logout_requested: None,
            login_deadline: now + LOGIN_TIMEOUT,
            login_names: None,
            login_refused: None,
            ended: false,
            nexus: 0,
            pool: BufferPool::default(),
            chap_random: None,
        }
    }

    /// Gives the connection the random bytes of its CHAP challenge (drawn by the shell from
    /// a cryptographic generator). Without them a login that needs CHAP is refused with
    /// 0x0300 (target error).
    pub fn with_chap_random(mut self, random: ChapRandom) -> Self {
        self.chap_random = Some(random);
        self
    }

    // ---- input ---------------------------------------------------------------------------

    /// Decodes and handles the whole PDUs at the front of `buf` (consuming them), with the
    /// digests and MaxRecvDataSegmentLength of the current phase. Stops early once SCSI work
    /// ([`Connection::poll_scsi`]) or an event ([`Connection::poll_event`]) is pending, or
    /// the connection is closing: call again after draining them, until it leaves none. (So
    /// commands run in arrival order, and the shell has set the nexus before the first one.)
    /// `policy` is the control plane: it answers logins and names the portals SendTargets
    /// leaves out.
    pub fn on_bytes(&mut self, buf: &mut BytesMut, now: Instant, policy: &mut dyn LoginPolicy) {
        while !self.is_closing() && self.scsi.is_empty() && self.events.is_empty() {
            match self.decoder.decode(buf) {
                Ok(Some(pdu)) => self.on_pdu(pdu, now, policy),
                Ok(None) => return,
                Err(e) => {
                    self.on_decode_error(&e);
                    if !e.is_recoverable() {
                        buf.clear();
                        return;
                    }
                }
            }
        }
    }

    /// One decoded PDU from the initiator.
    pub fn on_pdu(&mut self, pdu: Pdu, now: Instant, policy: &mut dyn LoginPolicy) {
        if self.is_closing() {
            return;
        }
        self.last_rx = now;
        match self.phase {
            Phase::Login(_) => self.on_login_pdu(pdu, policy),
            Phase::Full(_) => self.on_ffp_pdu(pdu, now, policy),
        }
    }

    /// The served targets changed (the configuration was reloaded; the portals stay): later
    /// logins, SendTargets answers and LUN checks use `catalog`. A session whose target is no
    /// longer served is closed (it keeps the old catalog until then); false then.
    pub fn set_catalog(&mut self, catalog: Arc<Catalog>) -> bool {
        if let Phase::Full(s) = &mut self.phase
            && let Some(i) = s.target
        {
            let name = &self.catalog.targets[i].name;
            match catalog.target_index(name) {
                Some(j) => s.target = Some(j),
                None => {
                    self.close(CloseReason::Failed(format!(
                        "target {name} is no longer served (configuration reloaded)"
                    )));
                    return false;
                }
            }
        }
        self.catalog = catalog;
        true
    }

    /// The I_T nexus id of the session, given by the shell after [`Event::FullFeature`];
    /// carried by every [`ScsiRequest`].
    pub fn set_nexus(&mut self, nexus: u64) {
        self.nexus = nexus;
    }

    /// The shell closed the transport (or is about to) because of `why`; call once. Queues
    /// [`ScsiRequest::NexusLost`] for a normal session and [`Event::Ended`] with the core's
    /// own close reason if it had one, else `why`.
    pub fn on_closed(&mut self, why: CloseReason) {
        if self.ended {
            return;
        }
        self.ended = true;
        let why = self.closing.clone().unwrap_or(why);
        if let Phase::Full(s) = &self.phase
            && s.target.is_some()
        {
            self.scsi
                .push_back(ScsiRequest::NexusLost { nexus: self.nexus });
        }
        self.events.push_back(Event::Ended { why });
    }

    // ---- output --------------------------------------------------------------------------

    /// True when PDUs are queued.
    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// Bytes of output queued and not yet taken by [`Connection::poll_transmit`]: the data
    /// segments of the queued Data-In PDUs plus one basic header per queued PDU (other
    /// PDUs' data — sense, text, reject headers — is small and not counted). O(1): kept
    /// as PDUs are queued. The shell stops feeding input while this exceeds its output
    /// budget (back-pressure on unread READ data).
    pub fn queued_bytes(&self) -> usize {
        self.out_bytes
    }

    /// Commands received and not yet answered: held until their CmdSN is due, waiting for
    /// their Data-Out, or decoded and waiting to run (the shell holds them back under
    /// back-pressure). PDUs still undecoded in the shell's read buffer are not counted.
    /// O(1) but for the few requests queued for the shell.
    pub fn outstanding_commands(&self) -> usize {
        let queued = self
            .scsi
            .iter()
            .filter(|r| matches!(r, ScsiRequest::Command(_)))
            .count();
        match &self.phase {
            Phase::Full(s) => s.ahead.len() + s.writes.len() + queued,
            Phase::Login(_) => queued,
        }
    }

    /// Moves the queued PDUs (each with the digests to encode it with) to `into`. Lent
    /// views among their data are forgotten: for a caller that copies the PDUs at once or
    /// drops them (see [`Connection::poll_transmit_lent`]).
    pub fn poll_transmit(&mut self, into: &mut Vec<(Pdu, Digests)>) {
        into.append(&mut self.out);
        self.out_bytes = 0;
        self.lent.clear();
    }

    /// [`Connection::poll_transmit`], also moving to `lent` the views of the medium that some
    /// of the PDUs' data are slices of: whoever copies those data (encodes or writes the
    /// PDUs) must hold each view's range shared while copying ([`scsi::LentView::hold`],
    /// [`scsi::range_lock::lock_shared_all`]), and must not copy a block of a view in two
    /// goes with nothing held between them.
    pub fn poll_transmit_lent(
        &mut self,
        into: &mut Vec<(Pdu, Digests)>,
        lent: &mut Vec<scsi::LentView>,
    ) {
        into.append(&mut self.out);
        self.out_bytes = 0;
        lent.append(&mut self.lent);
    }

    /// The next piece of SCSI work, in order.
    pub fn poll_scsi(&mut self) -> Option<ScsiRequest> {
        self.scsi.pop_front()
    }

    /// The next event for the control plane.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// True once the connection should be closed after the queued output is written.
    pub fn is_closing(&self) -> bool {
        self.closing.is_some()
    }

    /// Why the connection is closing, once [`Connection::is_closing`].
    pub fn close_reason(&self) -> Option<&CloseReason> {
        self.closing.as_ref()
    }

    /// The status of the login this connection refused, if it refused one and it was not
    /// taken yet (for the shell's login statistics, RFC 4544 `iscsiTgtLoginStats`).
    pub fn take_login_refusal(&mut self) -> Option<iscsi_proto::login::LoginStatus> {
        self.login_refused.take()
    }

    /// The negotiated parameters, once in full feature phase.
    pub fn params(&self) -> Option<&SessionParams> {
        match &self.phase {
            Phase::Full(s) => Some(&s.params),
            Phase::Login(_) => None,
        }
    }

    // ---- internals -----------------------------------------------------------------------

    /// Marks the connection as closing for `why`, keeping the first reason given.
    fn close(&mut self, why: CloseReason) {
        if self.closing.is_none() {
            self.closing = Some(why);
        }
    }

    fn fail(&mut self, why: &str) {
        tracing::warn!(portal = %self.portal, "closing connection: {why}");
        self.close(CloseReason::Failed(why.to_owned()));
    }

    fn push(&mut self, pdu: impl Into<Pdu>) {
        let d = match &self.phase {
            Phase::Full(s) => s.digests,
            Phase::Login(_) => Digests::NONE,
        };
        self.out.push((pdu.into(), d));
        self.out_bytes += iscsi_proto::BHS_LEN;
    }

    fn session(&mut self) -> Option<&mut Session> {
        match &mut self.phase {
            Phase::Full(s) => Some(s),
            Phase::Login(_) => None,
        }
    }

    /// The catalog entry of the session's target.
    fn target(&self) -> Option<&CatalogTarget> {
        match &self.phase {
            Phase::Full(s) => s.target.and_then(|i| self.catalog.targets.get(i)),
            Phase::Login(_) => None,
        }
    }

    /// A PDU the decoder could not turn into a [`Pdu`]: Reject it when the stream can go on,
    /// else close (§6.6, §11.17).
    fn on_decode_error(&mut self, e: &DecodeError) {
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

    // ---- Reject (§11.17) and Logout (§11.14, §11.15) ----------------------------------------

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

    fn is_discovery(&self) -> bool {
        matches!(&self.phase, Phase::Full(s) if s.params.session_type == SessionType::Discovery)
    }
}

#[cfg(test)]
mod tests;
