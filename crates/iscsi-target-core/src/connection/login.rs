//! Login phase (RFC 7143 §6, §11.12, §11.13): negotiation by
//! [`iscsi_proto::login::TargetLogin`]; the answer to a normal-session login comes from the
//! [`LoginPolicy`]; on completion the decoder switches to the negotiated digests and
//! MaxRecvDataSegmentLength and [`Event::FullFeature`] is emitted.

use std::collections::{BTreeMap, HashMap};

use iscsi_proto::login::{LoginStatus, LoginStep, TargetDecision};
use iscsi_proto::params::SessionType;
use iscsi_proto::text::TextAssembler;
use iscsi_proto::{Limits, Pdu};

use super::{Connection, Phase, Session};
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
        let mut step = login.on_request(req);
        if let LoginStep::NeedTargetDecision {
            initiator_name,
            target_name,
            session_type,
            ..
        } = &step
        {
            let known = |t: &str| self.catalog.target_index(t).is_some();
            let decision = match (session_type, target_name) {
                (SessionType::Discovery, _) => TargetDecision::Accept {
                    portal_group_tag: self.tpgt,
                    target_alias: None,
                    tsih: policy.next_tsih(),
                },
                (SessionType::Normal, Some(t)) if known(t) => {
                    match policy.login_decision(self.portal, initiator_name, t) {
                        LoginDecision::Accept { portal_group_tag } => TargetDecision::Accept {
                            portal_group_tag,
                            target_alias: None,
                            tsih: policy.next_tsih(),
                        },
                        LoginDecision::Redirect { address } => TargetDecision::Redirect {
                            address,
                            permanent: false,
                        },
                        LoginDecision::NotFound => TargetDecision::Refuse(LoginStatus::NOT_FOUND),
                    }
                }
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
                let tsih = response.tsih;
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
