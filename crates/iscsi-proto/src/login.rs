//! Login phase state machines (RFC 7143 §6.3, §11.12, §11.13), sans-IO.
//!
//! [`TargetLogin`] is fed Login Requests and yields Login Responses; it asks the
//! caller (who owns the configuration and the balancer) whether to accept,
//! redirect or refuse the requested target. [`InitiatorLogin`] builds the
//! requests and consumes the responses.

use bytes::Bytes;

use crate::chap::{Authenticator, InitiatorAuth, Responder, TargetAuth};
use crate::error::LoginError;
use crate::params::{KeyResponse, Negotiator, Prefs, Role, SessionParams, SessionType, answer};
use crate::pdu::{LoginRequest, LoginResponse, Stage};
use crate::text::{TextAssembler, TextPairs};

/// The only protocol version defined by RFC 7143 (§11.12.4).
pub const ISCSI_VERSION: u8 = 0;
/// Bound on Login Requests in one login (each side).
pub const MAX_LOGIN_PDUS: u32 = 32;
/// Largest data segment of one Login PDU: MaxRecvDataSegmentLength is 8192 during login
/// (§13.12); longer response text goes out in pieces with the C bit (§11.13.3).
pub const LOGIN_DATA_SEGMENT: usize = 8192;

/// Status-Class and Status-Detail of a Login Response (§11.13.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LoginStatus {
    /// Status-Class.
    pub class: u8,
    /// Status-Detail.
    pub detail: u8,
}

impl LoginStatus {
    /// 0x0000 Success.
    pub const SUCCESS: Self = Self::new(0, 0);
    /// 0x0101 Target moved temporarily (TargetAddress gives the new portal).
    pub const TARGET_MOVED_TEMPORARILY: Self = Self::new(1, 1);
    /// 0x0102 Target moved permanently.
    pub const TARGET_MOVED_PERMANENTLY: Self = Self::new(1, 2);
    /// 0x0200 Initiator error.
    pub const INITIATOR_ERROR: Self = Self::new(2, 0);
    /// 0x0201 Authentication failure.
    pub const AUTHENTICATION_FAILURE: Self = Self::new(2, 1);
    /// 0x0202 Authorization failure.
    pub const AUTHORIZATION_FAILURE: Self = Self::new(2, 2);
    /// 0x0203 Not found.
    pub const NOT_FOUND: Self = Self::new(2, 3);
    /// 0x0204 Target removed.
    pub const TARGET_REMOVED: Self = Self::new(2, 4);
    /// 0x0205 Unsupported version.
    pub const UNSUPPORTED_VERSION: Self = Self::new(2, 5);
    /// 0x0206 Too many connections.
    pub const TOO_MANY_CONNECTIONS: Self = Self::new(2, 6);
    /// 0x0207 Missing parameter.
    pub const MISSING_PARAMETER: Self = Self::new(2, 7);
    /// 0x0208 Can't include in session.
    pub const CANT_INCLUDE_IN_SESSION: Self = Self::new(2, 8);
    /// 0x0209 Session type not supported.
    pub const SESSION_TYPE_NOT_SUPPORTED: Self = Self::new(2, 9);
    /// 0x020a Session does not exist.
    pub const SESSION_DOES_NOT_EXIST: Self = Self::new(2, 0x0a);
    /// 0x020b Invalid request during login.
    pub const INVALID_DURING_LOGIN: Self = Self::new(2, 0x0b);
    /// 0x0300 Target error.
    pub const TARGET_ERROR: Self = Self::new(3, 0);
    /// 0x0301 Service unavailable.
    pub const SERVICE_UNAVAILABLE: Self = Self::new(3, 1);
    /// 0x0302 Out of resources.
    pub const OUT_OF_RESOURCES: Self = Self::new(3, 2);

    /// From class and detail.
    pub const fn new(class: u8, detail: u8) -> Self {
        LoginStatus { class, detail }
    }

    /// As the 16-bit value libiscsi prints (class << 8 | detail).
    pub const fn code(self) -> u16 {
        (self.class as u16) << 8 | self.detail as u16
    }
}

/// Target-side configuration of a login.
#[derive(Debug, Clone)]
pub struct TargetLoginConfig {
    /// Operational parameters the target accepts.
    pub prefs: Prefs,
    /// StatSN of the first Login Response (§11.13.4).
    pub initial_stat_sn: u32,
    /// Command window: MaxCmdSN = ExpCmdSN + cmd_window - 1 (§4.2.2.1).
    pub cmd_window: u32,
}

impl Default for TargetLoginConfig {
    fn default() -> Self {
        TargetLoginConfig {
            prefs: Prefs::target_default(),
            initial_stat_sn: 1,
            cmd_window: 128,
        }
    }
}

/// The caller's answer to [`LoginStep::NeedTargetDecision`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetDecision {
    /// Serve the login on this portal.
    Accept {
        /// TargetPortalGroupTag returned to the initiator (§13.9).
        portal_group_tag: u16,
        /// Optional TargetAlias (§13.6).
        target_alias: Option<String>,
        /// TSIH for the new session, non-zero (§11.12.6).
        tsih: u16,
        /// CHAP the initiator must pass in the security stage (§12.1.3); None: AuthMethod=None.
        auth: Option<TargetAuth>,
    },
    /// Redirect to another portal: status 0x0101 (or 0x0102), TargetAddress=IP:PORT.
    Redirect {
        /// "IP:PORT" (IPv6 in brackets).
        address: String,
        /// 0x0102 instead of 0x0101.
        permanent: bool,
    },
    /// Refuse with this status, e.g. [`LoginStatus::NOT_FOUND`].
    Refuse(LoginStatus),
}

/// What the target's I/O shell must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginStep {
    /// Send this response and wait for the next Login Request.
    Send(LoginResponse),
    /// Decide about the requested target, then call [`TargetLogin::decide`].
    NeedTargetDecision {
        /// InitiatorName.
        initiator_name: String,
        /// TargetName (None for discovery sessions).
        target_name: Option<String>,
        /// SessionType.
        session_type: SessionType,
        /// ISID of the login.
        isid: [u8; 6],
    },
    /// Send this final response; the connection is now in full feature phase.
    Complete {
        /// Final Login Response (T=1, NSG=FullFeaturePhase).
        response: LoginResponse,
        /// Negotiated parameters (switch digests after sending `response`).
        params: SessionParams,
        /// TSIH of the session.
        tsih: u16,
        /// ISID of the session.
        isid: [u8; 6],
        /// CID of the connection.
        cid: u16,
        /// ExpCmdSN to expect first (the login CmdSN, §11.12.8).
        exp_cmd_sn: u32,
        /// StatSN for the next response of any kind.
        next_stat_sn: u32,
    },
    /// Send this response (an error or a redirect), then close the connection.
    Close {
        /// The response.
        response: LoginResponse,
        /// Its status.
        status: LoginStatus,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TState {
    Fresh,
    Negotiating,
    AwaitDecision,
    Done,
}

#[derive(Debug, Clone, Default)]
struct Accepted {
    tpgt: u16,
    alias: Option<String>,
    tsih: u16,
}

/// The target side of one connection's login (§6.3).
#[derive(Debug, Clone)]
pub struct TargetLogin {
    cfg: TargetLoginConfig,
    neg: Negotiator,
    asm: TextAssembler,
    state: TState,
    /// Stage we are in (after any agreed transit).
    stage: Stage,
    isid: [u8; 6],
    cid: u16,
    cmd_sn: u32,
    stat_sn: u32,
    pdus: u32,
    pending: Option<(LoginRequest, TextPairs)>,
    /// Response text still to send, and the stage to move to once it is all out.
    text_out: Option<(Bytes, Option<Stage>)>,
    accepted: Option<Accepted>,
    sent_first_declarations: bool,
    declared_mrdsl: bool,
    /// CHAP required by the decision, until it succeeds.
    auth: Option<Authenticator>,
    /// Why the login was refused, when the refusal is the login's own (e.g. CHAP).
    failure: Option<String>,
}

impl TargetLogin {
    /// New login on a freshly accepted connection.
    pub fn new(cfg: TargetLoginConfig) -> Self {
        TargetLogin {
            neg: Negotiator::new(cfg.prefs.clone(), Role::Target),
            stat_sn: cfg.initial_stat_sn,
            cfg,
            asm: TextAssembler::default(),
            state: TState::Fresh,
            stage: Stage::SecurityNegotiation,
            isid: [0; 6],
            cid: 0,
            cmd_sn: 0,
            pdus: 0,
            pending: None,
            text_out: None,
            accepted: None,
            sent_first_declarations: false,
            declared_mrdsl: false,
            auth: None,
            failure: None,
        }
    }

    /// Why the login ended with an authentication failure (0x0201), for the log.
    pub fn failure_reason(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// Refuses the login with 0x0201 (§12.1.3, §11.13.5), remembering why.
    fn auth_failed(&mut self, req: &LoginRequest, why: String) -> LoginStep {
        self.failure = Some(why);
        self.close(req, LoginStatus::AUTHENTICATION_FAILURE, Bytes::new())
    }

    fn response(&mut self, req: &LoginRequest, data: Bytes) -> LoginResponse {
        let stat_sn = self.stat_sn;
        self.stat_sn = self.stat_sn.wrapping_add(1);
        LoginResponse {
            transit: false,
            continue_: false,
            csg: req.csg,
            nsg: Stage::SecurityNegotiation,
            version_max: ISCSI_VERSION,
            version_active: ISCSI_VERSION,
            isid: req.isid,
            tsih: 0,
            itt: req.itt,
            stat_sn,
            exp_cmd_sn: self.cmd_sn,
            max_cmd_sn: self
                .cmd_sn
                .wrapping_add(self.cfg.cmd_window.max(1))
                .wrapping_sub(1),
            status_class: 0,
            status_detail: 0,
            data,
        }
    }

    fn close(&mut self, req: &LoginRequest, status: LoginStatus, data: Bytes) -> LoginStep {
        self.state = TState::Done;
        let mut response = self.response(req, data);
        response.status_class = status.class;
        response.status_detail = status.detail;
        LoginStep::Close { response, status }
    }

    /// Feed one Login Request.
    pub fn on_request(&mut self, req: LoginRequest) -> LoginStep {
        if self.state == TState::Fresh {
            self.cmd_sn = req.cmd_sn;
            self.isid = req.isid;
            self.cid = req.cid;
        }
        if matches!(self.state, TState::Done | TState::AwaitDecision) {
            return self.close(&req, LoginStatus::INITIATOR_ERROR, Bytes::new());
        }
        self.pdus += 1;
        if self.pdus > MAX_LOGIN_PDUS {
            return self.close(&req, LoginStatus::INITIATOR_ERROR, Bytes::new());
        }
        // §11.12.4: we speak version 0 only.
        if req.version_min > ISCSI_VERSION {
            return self.close(&req, LoginStatus::UNSUPPORTED_VERSION, Bytes::new());
        }
        if self.state == TState::Fresh && req.tsih != 0 {
            // Adding a connection to an existing session needs MaxConnections > 1.
            return self.close(&req, LoginStatus::SESSION_DOES_NOT_EXIST, Bytes::new());
        }
        if req.isid != self.isid || req.cid != self.cid {
            return self.close(&req, LoginStatus::INITIATOR_ERROR, Bytes::new());
        }
        let csg_ok = matches!(
            req.csg,
            Stage::SecurityNegotiation | Stage::LoginOperationalNegotiation
        ) && req.csg >= self.stage;
        let nsg_ok =
            !req.transit || (req.nsg > req.csg && req.nsg != Stage::Reserved && !req.continue_);
        if !csg_ok || !nsg_ok {
            return self.close(&req, LoginStatus::INITIATOR_ERROR, Bytes::new());
        }
        self.stage = req.csg;
        if let Some((rest, transit)) = self.text_out.take() {
            // §11.13.3: the initiator takes each piece of a continued response with an empty
            // Login Request.
            if !req.data.is_empty() || req.continue_ {
                return self.close(&req, LoginStatus::INITIATOR_ERROR, Bytes::new());
            }
            return self.respond_text(&req, rest, transit);
        }
        let pairs = match self.asm.push(&req.data, req.continue_) {
            Ok(Some(p)) => p,
            Ok(None) => {
                // §6.2: acknowledge a partial text with an empty response.
                self.state = TState::Negotiating;
                let resp = self.response(&req, Bytes::new());
                return LoginStep::Send(resp);
            }
            Err(_) => return self.close(&req, LoginStatus::INITIATOR_ERROR, Bytes::new()),
        };
        if pairs.check_unique().is_err() {
            return self.close(&req, LoginStatus::INITIATOR_ERROR, Bytes::new());
        }
        if self.accepted.is_some() {
            self.state = TState::Negotiating;
            return self.process(req, pairs);
        }
        // First complete text: names and session type (§13.4, §13.5, §13.21).
        let Some(initiator_name) = pairs.get("InitiatorName").map(str::to_string) else {
            return self.close(&req, LoginStatus::MISSING_PARAMETER, Bytes::new());
        };
        let session_type = match pairs.get("SessionType").map(SessionType::parse) {
            None => SessionType::Normal,
            Some(Some(t)) => t,
            Some(None) => {
                return self.close(&req, LoginStatus::SESSION_TYPE_NOT_SUPPORTED, Bytes::new());
            }
        };
        let target_name = pairs.get("TargetName").map(str::to_string);
        if session_type == SessionType::Normal && target_name.is_none() {
            return self.close(&req, LoginStatus::MISSING_PARAMETER, Bytes::new());
        }
        let p = &mut self.neg.params;
        p.initiator_name = initiator_name.clone();
        p.initiator_alias = pairs.get("InitiatorAlias").map(str::to_string);
        p.session_type = session_type;
        p.target_name = if session_type == SessionType::Normal {
            target_name.clone()
        } else {
            None
        };
        self.state = TState::AwaitDecision;
        self.pending = Some((req, pairs));
        LoginStep::NeedTargetDecision {
            initiator_name,
            target_name: self.neg.params.target_name.clone(),
            session_type,
            isid: self.isid,
        }
    }

    /// Answer a [`LoginStep::NeedTargetDecision`].
    pub fn decide(&mut self, decision: TargetDecision) -> LoginStep {
        let Some((req, pairs)) = self.pending.take() else {
            let req = LoginRequest {
                isid: self.isid,
                ..LoginRequest::default()
            };
            return self.close(&req, LoginStatus::TARGET_ERROR, Bytes::new());
        };
        match decision {
            TargetDecision::Accept {
                portal_group_tag,
                target_alias,
                tsih,
                auth,
            } => {
                if tsih == 0 {
                    return self.close(&req, LoginStatus::TARGET_ERROR, Bytes::new());
                }
                self.accepted = Some(Accepted {
                    tpgt: portal_group_tag,
                    alias: target_alias,
                    tsih,
                });
                self.auth = auth.map(Authenticator::new);
                self.state = TState::Negotiating;
                self.process(req, pairs)
            }
            TargetDecision::Redirect { address, permanent } => {
                let mut text = TextPairs::new();
                if text.push("TargetAddress", address).is_err() {
                    return self.close(&req, LoginStatus::TARGET_ERROR, Bytes::new());
                }
                let status = if permanent {
                    LoginStatus::TARGET_MOVED_PERMANENTLY
                } else {
                    LoginStatus::TARGET_MOVED_TEMPORARILY
                };
                self.close(&req, status, text.to_bytes())
            }
            TargetDecision::Refuse(status) => self.close(&req, status, Bytes::new()),
        }
    }

    /// Negotiate the keys of one complete request and build the response.
    fn process(&mut self, req: LoginRequest, pairs: TextPairs) -> LoginStep {
        let mut out = TextPairs::new();
        let accepted = self.accepted.clone().unwrap_or_default();
        let normal = self.neg.params.session_type == SessionType::Normal;
        let security = req.csg == Stage::SecurityNegotiation;
        let auth_pending = self.auth.as_ref().is_some_and(|a| !a.is_done());
        if auth_pending && !security {
            // §12.1.3: the security stage cannot be skipped when the target requires CHAP.
            return self.auth_failed(
                &req,
                "the initiator skipped the security stage (no CHAP)".into(),
            );
        }
        // Whether this request moved the CHAP exchange on.
        let mut chap_progress = false;
        let mut chap_keys: [Option<&str>; 4] = [None; 4];
        for (k, v) in pairs.iter() {
            let ans = match k {
                "InitiatorName" | "TargetName" | "SessionType" | "InitiatorAlias" => continue,
                "AuthMethod" if security => match &mut self.auth {
                    Some(a) => match a.on_auth_method(v) {
                        Ok(m) => {
                            chap_progress = true;
                            m
                        }
                        Err(e) => return self.auth_failed(&req, e.to_string()),
                    },
                    None if v.split(',').any(|m| m == "None") => "None".to_string(),
                    None => {
                        return self.auth_failed(
                            &req,
                            format!("AuthMethod={v}: this target does not authenticate"),
                        );
                    }
                },
                "CHAP_A" if security && auth_pending => {
                    let Some(a) = &mut self.auth else { continue };
                    match a.on_algorithm(v) {
                        Ok(keys) => {
                            chap_progress = true;
                            for (k, v) in keys {
                                let _ = out.push(k, v);
                            }
                            continue;
                        }
                        Err(e) => return self.auth_failed(&req, e.to_string()),
                    }
                }
                "CHAP_N" | "CHAP_R" | "CHAP_I" | "CHAP_C" if security && auth_pending => {
                    let slot = ["CHAP_N", "CHAP_R", "CHAP_I", "CHAP_C"]
                        .iter()
                        .position(|n| *n == k)
                        .unwrap_or(0);
                    chap_keys[slot] = Some(v);
                    continue;
                }
                "AuthMethod"
                | "SendTargets"
                | "TargetAlias"
                | "TargetAddress"
                | "TargetPortalGroupTag" => answer::IRRELEVANT.to_string(),
                _ if k.starts_with("CHAP_") => answer::IRRELEVANT.to_string(),
                _ => match self.neg.respond(k, v) {
                    KeyResponse::Answer(a) => a,
                    KeyResponse::Silent => continue,
                },
            };
            // Values we produce are short; a failure here means an absurd key, skip it.
            let _ = out.push(k, ans);
        }
        if chap_keys.iter().any(Option::is_some)
            && let Some(a) = &mut self.auth
        {
            let [n, r, i, c] = chap_keys;
            match a.on_response(n, r, i, c) {
                Ok(keys) => {
                    chap_progress = true;
                    for (k, v) in keys {
                        let _ = out.push(k, v);
                    }
                }
                Err(e) => return self.auth_failed(&req, e.to_string()),
            }
        }
        let mut transit = req.transit.then_some(req.nsg);
        if self.auth.as_ref().is_some_and(|a| !a.is_done()) {
            if !chap_progress {
                return self.auth_failed(
                    &req,
                    "the initiator did not go on with CHAP (no credentials?)".into(),
                );
            }
            // §11.13.3: the target stays in the security stage until CHAP is over.
            transit = None;
        }
        if !self.sent_first_declarations {
            self.sent_first_declarations = true;
            if normal {
                // §13.9: TargetPortalGroupTag in the first Login Response of a Normal session.
                let _ = out.push("TargetPortalGroupTag", accepted.tpgt.to_string());
                self.neg.params.target_portal_group_tag = Some(accepted.tpgt);
            }
            if let Some(alias) = &accepted.alias {
                let _ = out.push("TargetAlias", alias.clone());
                self.neg.params.target_alias = Some(alias.clone());
            }
        }
        if req.csg == Stage::LoginOperationalNegotiation && !self.declared_mrdsl {
            self.declared_mrdsl = true;
            let (k, v) = self.neg.declare_mrdsl();
            let _ = out.push(k, v);
        }
        self.respond_text(&req, out.to_bytes(), transit)
    }

    /// Sends `text`, or its first [`LOGIN_DATA_SEGMENT`] bytes with the C bit (and no T bit,
    /// §11.13.3), keeping the rest for the next empty request; with the last piece, moves to
    /// `transit` if the initiator asked to.
    fn respond_text(
        &mut self,
        req: &LoginRequest,
        text: Bytes,
        transit: Option<Stage>,
    ) -> LoginStep {
        if text.len() > LOGIN_DATA_SEGMENT {
            let mut response = self.response(req, text.slice(..LOGIN_DATA_SEGMENT));
            response.continue_ = true;
            self.text_out = Some((text.slice(LOGIN_DATA_SEGMENT..), transit));
            self.state = TState::Negotiating;
            return LoginStep::Send(response);
        }
        let accepted = self.accepted.clone().unwrap_or_default();
        let mut response = self.response(req, text);
        if let Some(nsg) = transit {
            response.transit = true;
            response.nsg = nsg;
            self.stage = nsg;
            if nsg == Stage::FullFeaturePhase {
                self.state = TState::Done;
                response.tsih = accepted.tsih;
                return LoginStep::Complete {
                    response,
                    params: self.neg.finish(),
                    tsih: accepted.tsih,
                    isid: self.isid,
                    cid: self.cid,
                    exp_cmd_sn: self.cmd_sn,
                    next_stat_sn: self.stat_sn,
                };
            }
        }
        LoginStep::Send(response)
    }
}

/// Initiator-side configuration of a login.
#[derive(Debug, Clone)]
pub struct InitiatorLoginConfig {
    /// InitiatorName (§13.5).
    pub initiator_name: String,
    /// InitiatorAlias (§13.7).
    pub initiator_alias: Option<String>,
    /// TargetName; ignored for discovery sessions.
    pub target_name: Option<String>,
    /// SessionType.
    pub session_type: SessionType,
    /// ISID (§11.12.5); e.g. type 0x80 random format.
    pub isid: [u8; 6],
    /// CID.
    pub cid: u16,
    /// ITT used for all Login Requests.
    pub itt: u32,
    /// Initial CmdSN (§11.12.8).
    pub cmd_sn: u32,
    /// Operational offers.
    pub prefs: Prefs,
    /// Start in LoginOperationalNegotiation (as libiscsi does without CHAP).
    pub skip_security: bool,
    /// CHAP credentials (and mutual CHAP) to authenticate with (§12.1.3); None:
    /// AuthMethod=None.
    pub auth: Option<InitiatorAuth>,
}

impl InitiatorLoginConfig {
    /// A Normal session login to `target_name` with portshift's default offers.
    pub fn normal(initiator_name: &str, target_name: &str) -> Self {
        InitiatorLoginConfig {
            initiator_name: initiator_name.to_string(),
            initiator_alias: None,
            target_name: Some(target_name.to_string()),
            session_type: SessionType::Normal,
            isid: [0x80, 0, 0, 0, 0, 1],
            cid: 0,
            itt: 0,
            cmd_sn: 1,
            prefs: Prefs::initiator_default(),
            skip_security: false,
            auth: None,
        }
    }

    /// A Discovery session login.
    pub fn discovery(initiator_name: &str) -> Self {
        InitiatorLoginConfig {
            target_name: None,
            session_type: SessionType::Discovery,
            ..Self::normal(initiator_name, "")
        }
    }
}

/// Negotiated parameters and sequence numbers at the start of the full
/// feature phase (§6.3, §4.2.2), from the initiator's view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedIn {
    /// Negotiated parameters.
    pub params: SessionParams,
    /// TSIH assigned by the target.
    pub tsih: u16,
    /// CmdSN of the first non-immediate command.
    pub cmd_sn: u32,
    /// ExpStatSN to send next (final response's StatSN + 1).
    pub exp_stat_sn: u32,
    /// MaxCmdSN from the final response.
    pub max_cmd_sn: u32,
}

/// How a login ended, from the initiator's view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginOutcome {
    /// Full feature phase reached.
    Success(LoggedIn),
    /// The target redirected us (status class 1): reconnect to `address`.
    Redirected {
        /// TargetAddress value, "IP:PORT" or "IP:PORT,TPGT".
        address: String,
        /// Status detail 2 (moved permanently).
        permanent: bool,
    },
    /// The target refused the login.
    Failed {
        /// The status.
        status: LoginStatus,
    },
}

/// What the initiator's I/O shell must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitiatorStep {
    /// Send this request and feed the response to [`InitiatorLogin::on_response`].
    Send(LoginRequest),
    /// Login is over.
    Done(LoginOutcome),
}

/// The initiator side of a login (§6.3).
#[derive(Debug, Clone)]
pub struct InitiatorLogin {
    cfg: InitiatorLoginConfig,
    neg: Negotiator,
    asm: TextAssembler,
    stage: Stage,
    offered: Vec<String>,
    offers_sent: bool,
    answers: TextPairs,
    exp_stat_sn: u32,
    round_trips: u32,
    chap: Option<Responder>,
}

impl InitiatorLogin {
    /// New login.
    pub fn new(cfg: InitiatorLoginConfig) -> Self {
        let neg = Negotiator::new(cfg.prefs.clone(), Role::Initiator);
        InitiatorLogin {
            stage: if cfg.skip_security && cfg.auth.is_none() {
                Stage::LoginOperationalNegotiation
            } else {
                Stage::SecurityNegotiation
            },
            neg,
            asm: TextAssembler::default(),
            offered: Vec::new(),
            offers_sent: false,
            answers: TextPairs::new(),
            exp_stat_sn: 0,
            round_trips: 0,
            chap: cfg.auth.clone().map(Responder::new),
            cfg,
        }
    }

    fn request(&self, transit: bool, nsg: Stage, data: Bytes) -> LoginRequest {
        LoginRequest {
            transit,
            continue_: false,
            csg: self.stage,
            nsg: if transit {
                nsg
            } else {
                Stage::SecurityNegotiation
            },
            version_max: ISCSI_VERSION,
            version_min: ISCSI_VERSION,
            isid: self.cfg.isid,
            tsih: 0,
            itt: self.cfg.itt,
            cid: self.cfg.cid,
            cmd_sn: self.cfg.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
            data,
        }
    }

    /// Text for the current stage: names first, then AuthMethod or operational offers.
    fn stage_text(&mut self, first: bool) -> TextPairs {
        let mut t = std::mem::take(&mut self.answers);
        if first {
            let _ = t.push("InitiatorName", self.cfg.initiator_name.clone());
            if let Some(a) = &self.cfg.initiator_alias {
                let _ = t.push("InitiatorAlias", a.clone());
            }
            if self.cfg.session_type == SessionType::Normal {
                let _ = t.push(
                    "TargetName",
                    self.cfg.target_name.clone().unwrap_or_default(),
                );
            }
            let _ = t.push("SessionType", self.cfg.session_type.as_str());
        }
        if self.stage == Stage::SecurityNegotiation {
            match &mut self.chap {
                Some(c) if first => {
                    let _ = t.push("AuthMethod", c.offer());
                }
                Some(c) => {
                    for (k, v) in c.take_pending() {
                        let _ = t.push(k, v);
                    }
                }
                None if first => {
                    let _ = t.push("AuthMethod", "None");
                }
                None => {}
            }
        }
        if self.stage == Stage::LoginOperationalNegotiation && !self.offers_sent {
            self.offers_sent = true;
            self.neg.declare_mrdsl();
            for (k, v) in self.cfg.prefs.offers().iter() {
                self.offered.push(k.to_string());
                let _ = t.push(k, v);
            }
        }
        t
    }

    fn next_stage(&self) -> Stage {
        match self.stage {
            Stage::SecurityNegotiation => Stage::LoginOperationalNegotiation,
            _ => Stage::FullFeaturePhase,
        }
    }

    /// Whether the next request may ask to leave the current stage: not while CHAP keys
    /// are still to be exchanged (§12.1.3).
    fn may_transit(&self) -> bool {
        self.stage != Stage::SecurityNegotiation
            || self
                .chap
                .as_ref()
                .is_none_or(|c| c.is_done() || !c.in_progress())
    }

    /// The first Login Request.
    pub fn start(&mut self) -> LoginRequest {
        let text = self.stage_text(true);
        // With CHAP the security stage takes several exchanges: no transit yet.
        let transit = self.chap.is_none();
        self.request(transit, self.next_stage(), text.to_bytes())
    }

    /// A CHAP failure as a login error.
    fn chap_error(e: crate::chap::ChapError) -> LoginError {
        LoginError::Authentication(e.to_string())
    }

    /// Feed one Login Response.
    pub fn on_response(&mut self, resp: &LoginResponse) -> Result<InitiatorStep, LoginError> {
        self.round_trips += 1;
        if self.round_trips > MAX_LOGIN_PDUS {
            return Err(LoginError::TooManyRoundTrips(MAX_LOGIN_PDUS));
        }
        self.exp_stat_sn = resp.stat_sn.wrapping_add(1);
        let status = LoginStatus::new(resp.status_class, resp.status_detail);
        if status.class != 0 {
            if status.class == 1 {
                let pairs = TextPairs::parse(&resp.data)?;
                let address = pairs
                    .get("TargetAddress")
                    .ok_or(LoginError::Protocol("redirect without TargetAddress"))?
                    .to_string();
                return Ok(InitiatorStep::Done(LoginOutcome::Redirected {
                    address,
                    permanent: status.detail == 2,
                }));
            }
            return Ok(InitiatorStep::Done(LoginOutcome::Failed { status }));
        }
        if resp.version_active != ISCSI_VERSION {
            return Err(LoginError::Protocol("unsupported Version-active"));
        }
        if resp.isid != self.cfg.isid || resp.itt != self.cfg.itt {
            return Err(LoginError::Protocol("ISID or ITT mismatch"));
        }
        let Some(pairs) = self.asm.push(&resp.data, resp.continue_)? else {
            // §6.2: ask for the rest of the text with an empty request.
            return Ok(InitiatorStep::Send(self.request(
                false,
                self.stage,
                Bytes::new(),
            )));
        };
        for (k, v) in pairs.iter() {
            match k {
                "TargetAlias" => self.neg.params.target_alias = Some(v.to_string()),
                "TargetPortalGroupTag" => {
                    let tpgt = crate::params::parse_number(v, 0, 65535).ok_or_else(|| {
                        LoginError::BadAnswer {
                            key: k.to_string(),
                            value: v.to_string(),
                        }
                    })?;
                    self.neg.params.target_portal_group_tag = Some(tpgt as u16);
                }
                "TargetAddress" => {}
                "AuthMethod" => match &mut self.chap {
                    Some(c) => c.on_auth_method(v).map_err(Self::chap_error)?,
                    None if v == "None" => {}
                    None => {
                        return Err(LoginError::BadAnswer {
                            key: k.to_string(),
                            value: v.to_string(),
                        });
                    }
                },
                "CHAP_A" | "CHAP_I" | "CHAP_C" | "CHAP_N" | "CHAP_R" => {
                    let Some(c) = &mut self.chap else {
                        return Err(LoginError::Protocol("CHAP keys from the target unasked"));
                    };
                    if k == "CHAP_A" {
                        let (Some(i), Some(ch)) = (pairs.get("CHAP_I"), pairs.get("CHAP_C")) else {
                            return Err(LoginError::Protocol("CHAP_A without CHAP_I and CHAP_C"));
                        };
                        c.on_challenge(v, i, ch).map_err(Self::chap_error)?;
                    } else if k == "CHAP_R" {
                        let name = pairs
                            .get("CHAP_N")
                            .ok_or(LoginError::Protocol("CHAP_R without CHAP_N"))?;
                        c.on_target_response(name, v).map_err(Self::chap_error)?;
                    }
                }
                _ if self.offered.iter().any(|o| o == k) || k == "MaxRecvDataSegmentLength" => {
                    self.neg.apply_answer(k, v)?;
                }
                _ => {
                    // A key the target offered: answer it in the next request.
                    if let KeyResponse::Answer(a) = self.neg.respond(k, v) {
                        let _ = self.answers.push(k, a);
                    }
                }
            }
        }
        if resp.transit {
            if resp.nsg <= self.stage || resp.nsg == Stage::Reserved {
                return Err(LoginError::Protocol("target transited to a bad stage"));
            }
            if self.stage == Stage::SecurityNegotiation
                && self.chap.as_ref().is_some_and(|c| !c.is_done())
            {
                // Mutual CHAP: a target that leaves the security stage without proving
                // itself is not trusted (§12.1.3).
                return Err(LoginError::Authentication(
                    "the target left the security stage without completing CHAP".into(),
                ));
            }
            self.stage = resp.nsg;
            if self.stage == Stage::FullFeaturePhase {
                if resp.tsih == 0 {
                    return Err(LoginError::Protocol("final response without TSIH"));
                }
                let mut params = self.neg.finish();
                params.initiator_name = self.cfg.initiator_name.clone();
                params.initiator_alias = self.cfg.initiator_alias.clone();
                params.session_type = self.cfg.session_type;
                params.target_name = match self.cfg.session_type {
                    SessionType::Normal => self.cfg.target_name.clone(),
                    SessionType::Discovery => None,
                };
                return Ok(InitiatorStep::Done(LoginOutcome::Success(LoggedIn {
                    params,
                    tsih: resp.tsih,
                    cmd_sn: self.cfg.cmd_sn,
                    exp_stat_sn: self.exp_stat_sn,
                    max_cmd_sn: resp.max_cmd_sn,
                })));
            }
        }
        let text = self.stage_text(false);
        Ok(InitiatorStep::Send(self.request(
            self.may_transit(),
            self.next_stage(),
            text.to_bytes(),
        )))
    }
}
