//! The initiator's side of a link: login exchange, full-feature session, and the session
//! events the follower hears (`initiator::session` and `balanced::shell` without I/O).

use std::collections::VecDeque;
use std::time::Duration;

use bytes::BytesMut;
use initiator::follower::Event;
use initiator::full_feature::{FullFeatureEvent, FullFeatureSession, Phase};
use initiator::login::LoginProgress;
use iscsi_proto::text::TextPairs;
use iscsi_proto::{Digests, Limits, Pdu, PduDecoder};

use super::{LoginAnswer, Net, SimInitiator, Wire};
use crate::link::{ConnId, Links};

impl SimInitiator {
    /// Reads what the target sent; true if anything was read or happened.
    pub(super) fn receive(&mut self, net: &mut Net<'_>) -> bool {
        match &mut self.wire {
            Wire::Idle => false,
            Wire::Login {
                conn,
                portal,
                exchange,
                decoder,
            } => {
                let (conn, portal) = (*conn, *portal);
                let Some(link) = net.links.get_mut(conn) else {
                    self.wire = Wire::Idle;
                    self.inbox
                        .push_back(Event::LoginFailed("connection gone".into()));
                    return true;
                };
                let outcome = match decoder.decode(&mut link.to_initiator) {
                    Ok(None) if link.target_closed => {
                        Err("connection closed during login".to_string())
                    }
                    Ok(None) => return false,
                    Ok(Some(Pdu::LoginResponse(r))) => {
                        self.logins.push(LoginAnswer {
                            portal,
                            status_class: r.status_class,
                            status_detail: r.status_detail,
                            target_address: TextPairs::parse(&r.data)
                                .ok()
                                .and_then(|t| t.get("TargetAddress").map(str::to_string)),
                        });
                        exchange.on_response(&r).map_err(|e| e.to_string())
                    }
                    Ok(Some(other)) => {
                        Err(format!("expected Login Response, got {:?}", other.opcode()))
                    }
                    Err(e) => Err(e.to_string()),
                };
                match outcome {
                    Ok(LoginProgress::Send(req)) => {
                        send(net.links, conn, &Pdu::LoginRequest(req), Digests::NONE);
                    }
                    Ok(LoginProgress::Done(logged)) => {
                        let mut decoder =
                            std::mem::replace(decoder, PduDecoder::new(Limits::default()));
                        decoder.set_limits(Limits {
                            max_recv_data_segment_length: logged
                                .params
                                .initiator_max_recv_data_segment_length,
                        });
                        decoder.set_digests(logged.params.digests());
                        let ffp = FullFeatureSession::new(&logged, self.config.session_depth);
                        self.wire = Wire::Full {
                            conn,
                            ffp: Box::new(ffp),
                            decoder,
                            digests: logged.params.digests(),
                        };
                        self.inbox.push_back(Event::LoginOk);
                    }
                    Ok(LoginProgress::Redirect { address, .. }) => {
                        self.drop_wire(net);
                        self.inbox.push_back(Event::LoginRedirect(address));
                    }
                    Err(e) => {
                        self.drop_wire(net);
                        self.inbox.push_back(Event::LoginFailed(e));
                    }
                }
                true
            }
            Wire::Full {
                conn, ffp, decoder, ..
            } => {
                let conn = *conn;
                let mut any = false;
                match net.links.get_mut(conn) {
                    None => {
                        lost(ffp, &mut self.inbox, "connection gone".into());
                        any = true;
                    }
                    Some(link) => loop {
                        match decoder.decode(&mut link.to_initiator) {
                            Ok(Some(pdu)) => {
                                any = true;
                                if let Err(e) = ffp.receive(pdu) {
                                    lost(ffp, &mut self.inbox, e.to_string());
                                }
                            }
                            Ok(None) if link.target_closed && ffp.phase() != Phase::Closed => {
                                any = true;
                                lost(
                                    ffp,
                                    &mut self.inbox,
                                    "connection closed by the target".into(),
                                );
                                break;
                            }
                            Ok(None) => break,
                            Err(e) => {
                                any = true;
                                lost(ffp, &mut self.inbox, e.to_string());
                                break;
                            }
                        }
                    },
                }
                any | self.after_receive(net)
            }
        }
    }

    /// Completions and session events out of the full-feature session; closes the wire once
    /// the session is closed (`session::drive`, `balanced::shell::next_event`).
    fn after_receive(&mut self, net: &mut Net<'_>) -> bool {
        let Wire::Full { ffp, .. } = &mut self.wire else {
            return false;
        };
        let mut any = false;
        let mut done = Vec::new();
        while let Some(c) = ffp.poll_completion() {
            done.push(c);
        }
        while let Some(e) = ffp.poll_event() {
            any = true;
            let ev = match e {
                FullFeatureEvent::LogoutRequested { within_secs } => Event::LogoutRequested {
                    time2logout: Duration::from_secs(within_secs.into()),
                },
                FullFeatureEvent::RenegotiationRequested => Event::LogoutRequested {
                    time2logout: Duration::ZERO,
                },
                FullFeatureEvent::DropAnnounced { time2wait, .. } => Event::ConnectionLost {
                    reason: "target announced a connection/session drop".into(),
                    time2wait: Duration::from_secs(time2wait.into()),
                },
                FullFeatureEvent::LoggedOut { .. } => Event::LoggedOut,
                FullFeatureEvent::ScsiEvent(_) => continue,
            };
            self.inbox.push_back(ev);
        }
        let closed = ffp.phase() == Phase::Closed;
        for c in done {
            any = true;
            self.complete(c);
        }
        if closed {
            self.drop_wire(net);
            self.inbox.push_back(Event::SessionClosed);
            any = true;
        }
        any
    }
}

/// The connection is gone (`session::lost`).
fn lost(ffp: &mut FullFeatureSession, inbox: &mut VecDeque<Event>, reason: String) {
    if ffp.phase() != Phase::Closed {
        inbox.push_back(Event::ConnectionLost {
            reason,
            time2wait: Duration::ZERO,
        });
    }
    ffp.connection_lost();
}

/// Encodes `pdu` onto the link's way to the target.
pub(super) fn send(links: &mut Links, conn: ConnId, pdu: &Pdu, digests: Digests) {
    let Some(link) = links.get_mut(conn) else {
        return;
    };
    let mut buf = BytesMut::new();
    let payload = pdu.encode_header(&mut buf, digests).expect("encodable PDU");
    link.out_to_target.extend_from_slice(&buf);
    link.out_to_target.extend_from_slice(&payload.data);
    link.out_to_target
        .extend_from_slice(payload.trailer.as_slice());
}
