//! Initiator side of the login phase (RFC 7143 §6.3, §11.12, §11.13): a thin
//! adapter over `iscsi_proto::InitiatorLogin` that turns its outcome into what
//! the session needs: negotiated parameters and sequence numbers, a redirect
//! to a socket address (Status-Class 1 + TargetAddress §13.8), or an error.

use std::net::SocketAddr;

use iscsi_proto::chap::{Challenge, Credentials, InitiatorAuth};
use iscsi_proto::params::{Prefs, SessionType};
use iscsi_proto::{InitiatorLoginConfig, InitiatorStep, LoginOutcome, LoginRequest, LoginResponse};

/// Parameters and sequence numbers at the start of the full feature phase.
pub use iscsi_proto::LoggedIn;

use crate::error::Error;

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
    /// CHAP to log in with (RFC 7143 §12.1.3); None: AuthMethod=None.
    pub auth: Option<ChapAuth>,
}

/// CHAP credentials of a login: the initiator's, and for mutual CHAP the ones the target must
/// prove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChapAuth {
    /// CHAP_N and secret the initiator answers the target's challenge with.
    pub chap: Credentials,
    /// Mutual CHAP: the target must answer our challenge as this user with this secret.
    pub mutual: Option<Credentials>,
}

impl ChapAuth {
    /// Checks the credentials (secret length, not the same secret both ways).
    pub fn validate(&self) -> Result<(), iscsi_proto::chap::ChapError> {
        iscsi_proto::chap::validate_pair(&self.chap, self.mutual.as_ref())
    }
}

impl LoginConfig {
    /// A normal session to `target` with portshift's default preferences and a random-type ISID.
    pub fn normal(initiator_name: &str, target: &str) -> Self {
        LoginConfig {
            initiator_name: initiator_name.to_string(),
            target_name: Some(target.to_string()),
            isid: random_isid(),
            prefs: Prefs::initiator_default(),
            auth: None,
        }
    }

    /// The same, authenticating with `auth`.
    pub fn with_auth(mut self, auth: Option<ChapAuth>) -> Self {
        self.auth = auth;
        self
    }

    /// A discovery session (SessionType=Discovery, §13.21).
    pub fn discovery(initiator_name: &str) -> Self {
        LoginConfig {
            target_name: None,
            ..LoginConfig::normal(initiator_name, "")
        }
    }
}

/// ISID of type "random" (§11.12.5: T=10b) with fresh random B, C and D fields,
/// so that two sessions of one initiator never look like a reinstatement (§6.3.5).
pub(crate) fn random_isid() -> [u8; 6] {
    let b = rand::random::<u32>().to_be_bytes();
    [0x80, 0x00, b[0], b[1], b[2], b[3]]
}

/// What to do after a Login Response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginProgress {
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
pub struct LoginExchange(iscsi_proto::InitiatorLogin, Option<ChapAuth>);

impl LoginExchange {
    /// A new login; `cmd_sn` is the CmdSN carried by all login requests (§3.2.2.1).
    pub fn new(config: LoginConfig, itt: u32, cmd_sn: u32) -> Self {
        // A fresh random challenge for the target in every login (mutual CHAP).
        let auth = config.auth.as_ref().map(|a| InitiatorAuth {
            chap: a.chap.clone(),
            mutual: a.mutual.clone().map(|m| {
                let mut random = [0u8; iscsi_proto::chap::CHALLENGE_LEN + 1];
                rand::Rng::fill(&mut rand::rng(), &mut random[..]);
                (m, Challenge::from_random(&random))
            }),
        });
        let checked = config.auth.clone();
        let session_type = if config.target_name.is_some() {
            SessionType::Normal
        } else {
            SessionType::Discovery
        };
        LoginExchange(
            iscsi_proto::InitiatorLogin::new(InitiatorLoginConfig {
                initiator_name: config.initiator_name,
                initiator_alias: None,
                target_name: config.target_name,
                session_type,
                isid: config.isid,
                cid: 0,
                itt,
                cmd_sn,
                prefs: config.prefs,
                skip_security: false,
                auth,
            }),
            checked,
        )
    }

    /// The first request; an error if the CHAP credentials break the rules.
    pub fn start(&mut self) -> Result<LoginRequest, Error> {
        if let Some(a) = &self.1 {
            a.validate()
                .map_err(|e| iscsi_proto::LoginError::Authentication(e.to_string()))?;
        }
        Ok(self.0.start())
    }

    /// Process one Login Response (§11.13).
    pub fn on_response(&mut self, resp: &LoginResponse) -> Result<LoginProgress, Error> {
        Ok(match self.0.on_response(resp)? {
            InitiatorStep::Send(r) => LoginProgress::Send(r),
            InitiatorStep::Done(LoginOutcome::Success(logged)) => {
                LoginProgress::Done(Box::new(logged))
            }
            InitiatorStep::Done(LoginOutcome::Redirected { address, permanent }) => {
                LoginProgress::Redirect {
                    address: parse_target_address(&address).ok_or(Error::BadRedirect(address))?,
                    permanent,
                }
            }
            InitiatorStep::Done(LoginOutcome::Failed { status }) => {
                return Err(Error::LoginFailed {
                    class: status.class,
                    detail: status.detail,
                });
            }
        })
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
    use iscsi_proto::Stage;
    use iscsi_proto::text::TextPairs;
    const MAX_LOGIN_ROUNDS: u32 = iscsi_proto::login::MAX_LOGIN_PDUS;
    const ISID: [u8; 6] = [0x80, 0, 1, 2, 3, 4];

    fn config() -> LoginConfig {
        LoginConfig {
            isid: ISID,
            ..LoginConfig::normal("iqn.i", "iqn.t")
        }
    }

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
            isid: ISID,
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
        let mut l = LoginExchange::new(config(), 7, 5);
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
        let LoginProgress::Send(op) = step else {
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
        let LoginProgress::Done(done) = step else {
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
        let mut l = LoginExchange::new(config(), 7, 1);
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
            LoginProgress::Redirect {
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
        assert!(l.on_response(&r).is_err(), "redirect without TargetAddress");
        let mut l = LoginExchange::new(config(), 7, 1);
        l.start().unwrap();
        let mut host = resp(
            false,
            Stage::SecurityNegotiation,
            Stage::SecurityNegotiation,
            &[("TargetAddress", "storage.example:3260,1")],
        );
        host.status_class = 1;
        assert!(matches!(l.on_response(&host), Err(Error::BadRedirect(_))));
    }

    #[test]
    fn isid_is_random_type() {
        let a = LoginConfig::normal("iqn.i", "iqn.t").isid;
        let b = LoginConfig::normal("iqn.i", "iqn.t").isid;
        assert_eq!(a[0] >> 6, 0b10, "T field must be 10b (random)");
        assert_ne!(a, b, "two sessions of one initiator need distinct ISIDs");
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
        let mut l = LoginExchange::new(config(), 7, 1);
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
