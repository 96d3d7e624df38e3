//! Login phase (RFC 7143 §6, §11.12, §11.13): negotiation by
//! [`iscsi_proto::login::TargetLogin`]; the answer to a normal-session login comes from the
//! [`LoginPolicy`]; on completion the decoder switches to the negotiated digests and
//! MaxRecvDataSegmentLength and [`Event::FullFeature`] is emitted.

use std::collections::{BTreeMap, HashMap};

use iscsi_proto::chap::{Challenge, TargetAuth};
use iscsi_proto::login::{LoginStatus, LoginStep, TargetDecision};
use iscsi_proto::params::SessionType;
use iscsi_proto::text::{TextAssembler, TextPairs};
use iscsi_proto::{Limits, Pdu};

use super::{Connection, Phase, Session};
use crate::catalog::Access;
use crate::event::{CloseReason, Event};
use crate::policy::{LoginDecision, LoginPolicy};

impl Connection {
    pub(super) fn on_login_pdu(&mut self, pdu: Pdu, policy: &mut dyn LoginPolicy) {
        let Phase::Login(login) = &mut self.phase else {
            return;
        };
        let Pdu::LoginRequest(req) = pdu else {
            self.fail("non-login PDU before full feature phase");
            return;
        };
        // Who is logging in to what, for the log line of a refused or redirected login.
        if let Ok(keys) = TextPairs::parse(&req.data) {
            let names = self.login_names.get_or_insert_default();
            for (key, slot) in [
                ("InitiatorName", &mut names.initiator),
                ("TargetName", &mut names.target),
            ] {
                if let Some(v) = keys.get(key) {
                    *slot = Some(v.to_owned());
                }
            }
        }
        let mut step = login.on_request(req);
        // Why the login was refused or where it was sent, when the target decided it.
        let mut why = None;
        if let LoginStep::NeedTargetDecision {
            initiator_name,
            target_name,
            session_type,
            ..
        } = &step
        {
            let access = |t: &str| {
                self.catalog
                    .target_index(t)
                    .map(|i| &self.catalog.targets[i].access)
            };
            // CHAP of the session, with this connection's challenge (§12.1.3).
            let auth = |a: &Access| -> Result<Option<TargetAuth>, ()> {
                let Some(chap) = &a.chap else { return Ok(None) };
                let random = self.chap_random.as_ref().ok_or(())?;
                Ok(Some(TargetAuth {
                    chap: chap.clone(),
                    mutual: a.mutual_chap.clone(),
                    challenge: Challenge::from_random(random),
                }))
            };
            let no_randomness = || {
                (
                    Some("no randomness for a CHAP challenge".to_string()),
                    TargetDecision::Refuse(LoginStatus::TARGET_ERROR),
                )
            };
            let (w, decision) = match (session_type, target_name) {
                (SessionType::Discovery, _) => match auth(&self.catalog.discovery) {
                    Ok(auth) => (
                        None,
                        TargetDecision::Accept {
                            portal_group_tag: self.tpgt,
                            target_alias: None,
                            tsih: policy.next_tsih(),
                            auth,
                        },
                    ),
                    Err(()) => no_randomness(),
                },
                (SessionType::Normal, Some(t))
                    if access(t).is_some_and(|a| !a.allows(initiator_name)) =>
                {
                    (
                        Some("the initiator is not in the target's allow list".into()),
                        TargetDecision::Refuse(LoginStatus::AUTHORIZATION_FAILURE),
                    )
                }
                (SessionType::Normal, Some(t)) if access(t).is_some() => {
                    match policy.login_decision(self.portal, initiator_name, t) {
                        LoginDecision::Accept { portal_group_tag } => {
                            match access(t).map(auth).unwrap_or(Ok(None)) {
                                Ok(auth) => (
                                    None,
                                    TargetDecision::Accept {
                                        portal_group_tag,
                                        target_alias: None,
                                        tsih: policy.next_tsih(),
                                        auth,
                                    },
                                ),
                                Err(()) => no_randomness(),
                            }
                        }
                        LoginDecision::Redirect { address } => (
                            Some(format!("to {address}")),
                            TargetDecision::Redirect {
                                address,
                                permanent: false,
                            },
                        ),
                        LoginDecision::NotFound => (
                            Some("the control plane does not serve it here".into()),
                            TargetDecision::Refuse(LoginStatus::NOT_FOUND),
                        ),
                        LoginDecision::Unavailable => (
                            Some("the target is shutting down".into()),
                            TargetDecision::Refuse(LoginStatus::SERVICE_UNAVAILABLE),
                        ),
                    }
                }
                (SessionType::Normal, Some(_)) => (
                    Some("no such target".into()),
                    TargetDecision::Refuse(LoginStatus::NOT_FOUND),
                ),
                (SessionType::Normal, None) => (
                    Some("no TargetName".into()),
                    TargetDecision::Refuse(LoginStatus::NOT_FOUND),
                ),
            };
            why = w;
            step = login.decide(decision);
        }
        match step {
            LoginStep::Send(r) => self.push(r),
            LoginStep::Close { response, status } => {
                if status == LoginStatus::AUTHENTICATION_FAILURE {
                    // Logged by the shell, which knows the peer's address and delays the
                    // answer; logging it here too would say it twice.
                    let names = self.login_names.as_deref();
                    self.events.push_back(Event::AuthenticationFailed {
                        initiator: names
                            .and_then(|n| n.initiator.clone())
                            .unwrap_or_else(|| "?".into()),
                        target: names.and_then(|n| n.target.clone()),
                        why: login
                            .failure_reason()
                            .unwrap_or("authentication failure")
                            .to_owned(),
                    });
                } else {
                    if status.class >= 2 {
                        self.login_refused = Some(status);
                    }
                    self.log_login_end(status, why);
                }
                self.push(response);
                self.close(CloseReason::LoginEnded);
            }
            LoginStep::NeedTargetDecision { .. } => self.fail("login asked twice for a decision"),
            LoginStep::Complete {
                response,
                params,
                exp_cmd_sn,
                next_stat_sn,
                isid,
                ..
            } => {
                // The final response goes out without digests; everything after uses them.
                let tsih = response.tsih;
                self.login_names = None;
                self.push(response);
                let digests = params.digests();
                self.decoder.set_digests(digests);
                self.decoder.set_limits(Limits {
                    max_recv_data_segment_length: params.target_max_recv_data_segment_length,
                });
                let target = match params.session_type {
                    SessionType::Normal => params
                        .target_name
                        .as_deref()
                        .and_then(|t| self.catalog.target_index(t)),
                    SessionType::Discovery => None,
                };
                self.events.push_back(Event::FullFeature {
                    session_type: params.session_type,
                    initiator: params.initiator_name.clone(),
                    target: target.map(|i| self.catalog.targets[i].name.clone()),
                    tsih,
                    isid,
                    portal_group_tag: self.tpgt,
                });
                self.phase = Phase::Full(Box::new(Session {
                    digests,
                    params,
                    target,
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
}

/// Who a login is from and for, as far as its requests said.
#[derive(Debug, Default)]
pub(super) struct LoginNames {
    initiator: Option<String>,
    target: Option<String>,
}

impl Connection {
    /// A login that ends without a session: WARN when refused, INFO when redirected, with the
    /// initiator and target names, the status and why (`why`, when the target decided).
    fn log_login_end(&self, status: LoginStatus, why: Option<String>) {
        let names = self.login_names.as_deref();
        let initiator = names.and_then(|n| n.initiator.as_deref()).unwrap_or("?");
        let target = names.and_then(|n| n.target.as_deref()).unwrap_or("-");
        let code = status.code();
        let why = why.unwrap_or_else(|| status_text(status).to_owned());
        if status.class == 1 {
            tracing::info!(portal = %self.portal, initiator, target, "login redirected (status {code:#06x}) {why}");
        } else {
            tracing::warn!(portal = %self.portal, initiator, target, "login refused (status {code:#06x}): {why}");
        }
    }
}

/// The meaning of a Login Response status (RFC 7143 §11.13.5).
fn status_text(status: LoginStatus) -> &'static str {
    match (status.class, status.detail) {
        (1, 1) => "target moved temporarily",
        (1, 2) => "target moved permanently",
        (2, 0) => "initiator error",
        (2, 1) => "authentication failure",
        (2, 2) => "authorization failure",
        (2, 3) => "not found",
        (2, 4) => "target removed",
        (2, 5) => "unsupported version",
        (2, 6) => "too many connections",
        (2, 7) => "missing parameter",
        (2, 8) => "cannot include in session",
        (2, 9) => "session type not supported",
        (2, 0x0a) => "session does not exist",
        (2, 0x0b) => "invalid request during login",
        (3, 0) => "target error",
        (3, 1) => "service unavailable",
        (3, 2) => "out of resources",
        _ => "unknown status",
    }
}
