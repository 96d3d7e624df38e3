//! Initiator side of the login phase (RFC 7143 §6.3, §11.12, §11.13), sans-IO:
//! feed it Login Responses, it gives the next Login Request, the negotiated
//! parameters, or a redirect (Status-Class 1, §11.13.5 + TargetAddress §13.8).

use std::net::SocketAddr;

use iscsi_proto::params::{Negotiator, Prefs, Role, SessionParams, SessionType};
use iscsi_proto::text::{TextAssembler, TextPairs};
use iscsi_proto::{LoginRequest, LoginResponse, Stage};

use crate::error::Error;

/// Bound on login round trips before giving up.
pub const MAX_LOGIN_ROUNDS: u32 = 16;

/// Who logs in to what.
#[derive(Debug, Clone)]
pub struct LoginConfig {
    /// InitiatorName (§13.5).
    pub initiator_name: String,
    /// TargetName (§13.4); `None` for a discovery session.
    pub target_name: Option<String>,
    /// ISID (§11.12.5).
    pub isid: [u8; 6],
    /// Operational preferences.
    pub prefs: Prefs,
}

impl LoginConfig {
    /// A normal session to `target` with portshift's default preferences and a random-type ISID.
    pub fn normal(initiator_name: &str, target: &str) -> Self {
        LoginConfig {
            initiator_name: initiator_name.to_string(),
            target_name: Some(target.to_string()),
            isid: isid_for(initiator_name),
            prefs: Prefs::initiator_default(),
        }
    }

    /// A discovery session (SessionType=Discovery, §13.21).
    pub fn discovery(initiator_name: &str) -> Self {
        LoginConfig {
            target_name: None,
            ..LoginConfig::normal(initiator_name, "")
        }
    }

    fn session_type(&self) -> SessionType {
        if self.target_name.is_some() {
            SessionType::Normal
        } else {
            SessionType::Discovery
        }
    }
}

/// ISID of type "random" (§11.12.5: T=10b) with a fresh random qualifier.
pub fn isid_for(initiator_name: &str) -> [u8; 6] {
    let h = crc32c::crc32c(initiator_name.as_bytes()) ^ rand::random::<u32>();
    let b = h.to_be_bytes();
    [0x80, 0x00, b[0], b[1], b[2], b[3]]
}

/// Sequence numbers and parameters at the start of the full feature phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedIn {
    /// Negotiated parameters.
    pub params: SessionParams,
    /// TSIH assigned by the target.
    pub tsih: u16,
    /// CmdSN of the first command (the final response's ExpCmdSN).
    pub cmd_sn: u32,
    /// MaxCmdSN from the final response.
    pub max_cmd_sn: u32,
    /// ExpStatSN (final response's StatSN + 1).
    pub exp_stat_sn: u32,
}

/// What to do after a Login Response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginStep {
    /// Send this request and wait for the next response.
    Send(LoginRequest),
    /// Full feature phase reached.
    Done(Box<LoggedIn>),
    /// Redirected (Status-Class 1): log in again at this address.
    Redirect {
        /// Parsed TargetAddress.
        address: SocketAddr,
        /// Status-Detail 2 ("moved permanently") rather than 1 ("temporarily").
        permanent: bool,
    },
}

/// The initiator's login state machine.
#[derive(Debug)]
pub struct InitiatorLogin {
    config: LoginConfig,
    neg: Negotiator,
    csg: Stage,
    itt: u32,
    cmd_sn: u32,
    exp_stat_sn: u32,
    tsih: u16,
    rounds: u32,
    offered: TextPairs,
    text: TextAssembler,
}

impl InitiatorLogin {
    /// A new login; `cmd_sn` is the CmdSN carried by all login requests (§3.2.2.1).
    pub fn new(config: LoginConfig, itt: u32, cmd_sn: u32) -> Self {
        let mut neg = Negotiator::new(config.prefs.clone(), Role::Initiator);
        neg.params.session_type = config.session_type();
        neg.params.initiator_name = config.initiator_name.clone();
        neg.params.target_name = config.target_name.clone();
        InitiatorLogin {
            config,
            neg,
            csg: Stage::SecurityNegotiation,
            itt,
            cmd_sn,
            exp_stat_sn: 0,
            tsih: 0,
            rounds: 0,
            offered: TextPairs::new(),
            text: TextAssembler::new(iscsi_proto::text::DEFAULT_MAX_TEXT_LEN),
        }
    }

    /// The first request: security stage, AuthMethod=None, asking to go to operational.
    pub fn start(&mut self) -> Result<LoginRequest, Error> {
        let mut keys = TextPairs::new();
        keys.push("InitiatorName", self.config.initiator_name.clone())?;
        if let Some(t) = &self.config.target_name {
            keys.push("TargetName", t.clone())?;
        }
        keys.push("SessionType", self.config.session_type().as_str())?;
        keys.push("AuthMethod", "None")?;
        Ok(self.request(
            Stage::SecurityNegotiation,
            Stage::LoginOperationalNegotiation,
            keys,
        ))
    }

    fn request(&mut self, csg: Stage, nsg: Stage, keys: TextPairs) -> LoginRequest {
        self.csg = csg;
        LoginRequest {
            transit: true,
            continue_: false,
            csg,
            nsg,
            version_max: 0,
            version_min: 0,
            isid: self.config.isid,
            tsih: self.tsih,
            itt: self.itt,
            cid: 0,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
            data: keys.to_bytes(),
        }
    }

    fn operational_offers(&mut self) -> Result<TextPairs, Error> {
        let mut keys = TextPairs::new();
        let (k, v) = self.neg.declare_mrdsl();
        if self.config.session_type() == SessionType::Normal {
            for (k, v) in self.config.prefs.offers().iter() {
                if k != "MaxRecvDataSegmentLength" {
                    keys.push(k, v)?;
                }
            }
        } else {
            for k in ["HeaderDigest", "DataDigest"] {
                keys.push(k, "None")?;
            }
        }
        keys.push(k, v)?;
        self.offered = keys.clone();
        Ok(keys)
    }

    /// Process one Login Response (§11.13).
    pub fn on_response(&mut self, resp: &LoginResponse) -> Result<LoginStep, Error> {
        self.rounds += 1;
        if self.rounds > MAX_LOGIN_ROUNDS {
            return Err(iscsi_proto::LoginError::TooManyRoundTrips(MAX_LOGIN_ROUNDS).into());
        }
        if resp.itt != self.itt {
            return Err(Error::Protocol("login response with a foreign ITT".into()));
        }
        match resp.status_class {
            0 => {}
            1 => {
                let pairs = TextPairs::parse(&resp.data)?;
                let addr = pairs.get("TargetAddress").unwrap_or("").to_string();
                let address = parse_target_address(&addr).ok_or(Error::BadRedirect(addr))?;
                return Ok(LoginStep::Redirect {
                    address,
                    permanent: resp.status_detail == 2,
                });
            }
            class => {
                return Err(Error::LoginFailed {
                    class,
                    detail: resp.status_detail,
                });
            }
        }
        self.exp_stat_sn = resp.stat_sn.wrapping_add(1);
        self.tsih = resp.tsih;
        let Some(pairs) = self.text.push(&resp.data, resp.continue_)? else {
            // More text follows: acknowledge with an empty request in the same stage (§6.3).
            let mut req = self.request(self.csg, resp.nsg, TextPairs::new());
            req.transit = false;
            return Ok(LoginStep::Send(req));
        };
        let mut answers = TextPairs::new();
        for (k, v) in pairs.iter() {
            match k {
                "TargetAlias" => self.neg.params.target_alias = Some(v.to_string()),
                "TargetPortalGroupTag" => {
                    self.neg.params.target_portal_group_tag =
                        iscsi_proto::params::parse_number(v, 0, 65535).map(|n| n as u16)
                }
                "AuthMethod" if v != "None" => {
                    return Err(Error::Protocol(format!("target wants AuthMethod={v}")));
                }
                "AuthMethod" | "TargetAddress" | "TargetName" => {}
                _ if self.offered.get(k).is_some() => self.neg.apply_answer(k, v)?,
                _ => {
                    if let iscsi_proto::params::KeyResponse::Answer(a) = self.neg.respond(k, v) {
                        answers.push(k, a)?;
                    }
                }
            }
        }
        if resp.transit && resp.nsg == Stage::FullFeaturePhase {
            return Ok(LoginStep::Done(Box::new(LoggedIn {
                params: self.neg.finish(),
                tsih: resp.tsih,
                cmd_sn: resp.exp_cmd_sn,
                max_cmd_sn: resp.max_cmd_sn,
                exp_stat_sn: self.exp_stat_sn,
            })));
        }
        if resp.transit && resp.nsg == Stage::LoginOperationalNegotiation
            || self.csg == Stage::LoginOperationalNegotiation
        {
            let mut keys = if self.csg == Stage::SecurityNegotiation {
                self.operational_offers()?
            } else {
                TextPairs::new()
            };
            for (k, v) in answers.iter() {
                keys.push(k, v)?;
            }
            return Ok(LoginStep::Send(self.request(
                Stage::LoginOperationalNegotiation,
                Stage::FullFeaturePhase,
                keys,
            )));
        }
        // Still in the security stage without transit: ask again.
        Ok(LoginStep::Send(self.request(
            Stage::SecurityNegotiation,
            Stage::LoginOperationalNegotiation,
            answers,
        )))
    }
}

/// A TargetAddress value (§13.8) as a socket address; `None` for host names
/// (not resolved) and malformed values.
pub fn parse_target_address(v: &str) -> Option<SocketAddr> {
    iscsi_proto::sendtargets::TargetAddress::parse(v)
        .ok()?
        .socket_addr()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(transit: bool, csg: Stage, nsg: Stage, keys: &[(&str, &str)]) -> LoginResponse {
        let mut p = TextPairs::new();
        for (k, v) in keys {
            p.push(k, *v).unwrap();
        }
        LoginResponse {
            transit,
            csg,
            nsg,
            itt: 7,
            tsih: 0x11,
            stat_sn: 100,
            exp_cmd_sn: 5,
            max_cmd_sn: 36,
            data: p.to_bytes(),
            ..Default::default()
        }
    }

    #[test]
    fn security_then_operational_then_done() {
        let mut l = InitiatorLogin::new(LoginConfig::normal("iqn.i", "iqn.t"), 7, 5);
        let first = l.start().unwrap();
        let keys = TextPairs::parse(&first.data).unwrap();
        assert_eq!(keys.get("TargetName"), Some("iqn.t"));
        assert_eq!(keys.get("AuthMethod"), Some("None"));
        assert!(first.transit && first.nsg == Stage::LoginOperationalNegotiation);
        let step = l
            .on_response(&resp(
                true,
                Stage::SecurityNegotiation,
                Stage::LoginOperationalNegotiation,
                &[("TargetPortalGroupTag", "1"), ("AuthMethod", "None")],
            ))
            .unwrap();
        let LoginStep::Send(op) = step else {
            panic!("expected a request, got {step:?}")
        };
        assert_eq!(op.csg, Stage::LoginOperationalNegotiation);
        assert_eq!(op.exp_stat_sn, 101);
        let ok = TextPairs::parse(&op.data).unwrap();
        assert_eq!(ok.get("ImmediateData"), Some("Yes"));
        assert!(ok.get("MaxRecvDataSegmentLength").is_some());
        let step = l
            .on_response(&resp(
                true,
                Stage::LoginOperationalNegotiation,
                Stage::FullFeaturePhase,
                &[
                    ("InitialR2T", "Yes"),
                    ("ImmediateData", "Yes"),
                    ("MaxBurstLength", "262144"),
                    ("FirstBurstLength", "65536"),
                    ("MaxRecvDataSegmentLength", "8192"),
                ],
            ))
            .unwrap();
        let LoginStep::Done(done) = step else {
            panic!("expected done, got {step:?}")
        };
        assert_eq!(done.tsih, 0x11);
        assert_eq!(done.cmd_sn, 5);
        assert_eq!(done.max_cmd_sn, 36);
        assert!(done.params.initial_r2t && done.params.immediate_data);
        assert_eq!(done.params.target_max_recv_data_segment_length, 8192);
        assert_eq!(done.params.first_burst_length, 65536);
        assert_eq!(done.params.target_portal_group_tag, Some(1));
    }

    #[test]
    fn redirect_and_failure() {
        let mut l = InitiatorLogin::new(LoginConfig::normal("iqn.i", "iqn.t"), 7, 1);
        l.start().unwrap();
        let mut r = resp(
            false,
            Stage::SecurityNegotiation,
            Stage::SecurityNegotiation,
            &[("TargetAddress", "127.0.0.3:3261,2")],
        );
        r.status_class = 1;
        r.status_detail = 1;
        assert_eq!(
            l.on_response(&r).unwrap(),
            LoginStep::Redirect {
                address: "127.0.0.3:3261".parse().unwrap(),
                permanent: false
            }
        );
        r.status_class = 2;
        assert!(matches!(
            l.on_response(&r),
            Err(Error::LoginFailed { class: 2, .. })
        ));
        r.status_class = 1;
        r.data = TextPairs::new().to_bytes();
        assert!(matches!(l.on_response(&r), Err(Error::BadRedirect(_))));
    }

    #[test]
    fn target_address_forms() {
        assert_eq!(
            parse_target_address("10.0.0.1"),
            Some("10.0.0.1:3260".parse().unwrap())
        );
        assert_eq!(
            parse_target_address("[::1]:3262,7"),
            Some("[::1]:3262".parse().unwrap())
        );
        assert_eq!(
            parse_target_address("[::1],7"),
            Some("[::1]:3260".parse().unwrap())
        );
        assert_eq!(parse_target_address("host.example:3260"), None);
        assert_eq!(parse_target_address("1.2.3.4:99999"), None);
        assert_eq!(parse_target_address(""), None);
    }

    #[test]
    fn bounded_rounds() {
        let mut l = InitiatorLogin::new(LoginConfig::normal("iqn.i", "iqn.t"), 7, 1);
        l.start().unwrap();
        let r = resp(
            false,
            Stage::SecurityNegotiation,
            Stage::SecurityNegotiation,
            &[],
        );
        let mut err = None;
        for _ in 0..=MAX_LOGIN_ROUNDS {
            if let Err(e) = l.on_response(&r) {
                err = Some(e);
                break;
            }
        }
        assert!(matches!(err, Some(Error::Login(_))));
    }
}
