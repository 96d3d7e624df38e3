//! What an operator asks of the control plane through the admin endpoint
//! (`portshift balance …`): pause the balancer, pin an initiator where it is, move a named
//! initiator to another portal, drain a portal for maintenance and undrain it.
//!
//! A move uses the balancer's mechanism (patent FIG. 5): the pair is placed on the destination
//! (so a login elsewhere is answered "target moved temporarily", RFC 7143 §11.13.5 status
//! 0x0101) and the session is sent the Async Message "logout requested" (§11.9.1). A drain
//! also deletes the portal's registrations (step 107) so that iSNS and SendTargets stop naming
//! it, and every login that still arrives there is redirected; undrain registers them again
//! (step 112). Like the rest of the plane, nothing here does I/O: the methods return the
//! [`Action`]s for the shell to carry out, in order, and the shell reports back.

use std::collections::BTreeSet;

use balancer::{EventKind, MoveRecord, PortalId};

use super::{Action, ControlPlane, TIME2LOGOUT};

/// The operator's settings: whether the balancer is paused, who is pinned, which portals are
/// drained.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OperatorState {
    /// The balancer samples but decides nothing.
    pub paused: bool,
    /// Initiators the balancer never moves (besides the policy's `--pin`), lower-cased.
    pub pinned: BTreeSet<String>,
    /// Portals being drained or drained: registrations deleted, logins redirected.
    pub drained: BTreeSet<PortalId>,
    /// (target, portal) registrations an undrain restores and no answer has settled yet: its
    /// restore failed or is in progress. Cleared when the registration changes either way
    /// (restored, or deleted by the balancer); not owed while the portal is drained
    /// ([`ControlPlane::undrain_restores_owed`]).
    pub restores_owed: BTreeSet<(String, PortalId)>,
}

/// Why an operator's request was refused (nothing changed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OperatorError {
    #[error("no such portal: {0}")]
    UnknownPortal(String),
    #[error("no live session of initiator {0}")]
    UnknownInitiator(String),
    #[error("{0} is drained: it takes no sessions")]
    DestinationDrained(PortalId),
    #[error("no other portal that is not drained to move to")]
    NoDestination,
    #[error("{0} is the last portal that is not drained")]
    LastPortal(PortalId),
}

/// One session an operator's request moves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorMove {
    pub session_id: u64,
    pub initiator: String,
    pub target: String,
    pub from: PortalId,
    pub to: PortalId,
}

/// What the shell must do for an operator's request, in order: every registration change,
/// then every logout request ([`Action::RequestLogout`] of each of `moves`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OperatorPlan {
    pub actions: Vec<Action>,
    pub moves: Vec<OperatorMove>,
}

impl ControlPlane {
    /// The operator's settings.
    pub fn operator(&self) -> &OperatorState {
        &self.operator
    }

    /// Pauses (true) or resumes the balancer: while paused, [`super::BalanceLoop::step`]
    /// samples the table and decides nothing.
    pub fn set_paused(&mut self, paused: bool, now_ms: u64) {
        self.operator.paused = paused;
        let action = if paused {
            "balancer paused"
        } else {
            "balancer resumed"
        };
        self.push_event(
            now_ms,
            EventKind::Operator {
                action: action.into(),
            },
            "operator",
        );
    }

    /// Pins (true) or unpins `initiator`: the balancer does not move a pinned initiator.
    pub fn set_pinned(&mut self, initiator: &str, pinned: bool, now_ms: u64) {
        let name = initiator.to_ascii_lowercase();
        let verb = if pinned {
            self.operator.pinned.insert(name);
            "pinned"
        } else {
            self.operator.pinned.remove(&name);
            "unpinned"
        };
        self.push_event(
            now_ms,
            EventKind::Operator {
                action: format!("{initiator} {verb}"),
            },
            "operator",
        );
    }

    /// Whether the operator pinned `initiator`.
    pub fn is_operator_pinned(&self, initiator: &str) -> bool {
        self.operator
            .pinned
            .contains(&initiator.to_ascii_lowercase())
    }

    /// Whether `portal` is drained.
    pub fn is_drained(&self, portal: PortalId) -> bool {
        self.operator.drained.contains(&portal)
    }

    /// The portal an operator names: its id (`P1` or `1`) or its address (`IP:PORT`).
    pub fn find_portal(&self, name: &str) -> Result<PortalId, OperatorError> {
        let name = name.trim();
        let number = name
            .strip_prefix('P')
            .or_else(|| name.strip_prefix('p'))
            .unwrap_or(name);
        self.portals
            .iter()
            .find(|p| {
                number.parse::<u16>().is_ok_and(|n| p.id == PortalId(n))
                    || p.address.to_string() == name
            })
            .map(|p| p.id)
            .ok_or_else(|| OperatorError::UnknownPortal(name.to_string()))
    }

    /// Where a login arriving on the drained `portal` for (initiator, target) goes instead:
    /// its placement if that portal is not drained, else the first portal that is not.
    pub(super) fn drain_redirect(&self, initiator: &str, target: &str) -> Option<PortalId> {
        self.placement(initiator, target)
            .filter(|p| !self.is_drained(*p) && self.portal(*p).is_some())
            .or_else(|| {
                self.portals
                    .iter()
                    .map(|p| p.id)
                    .find(|p| !self.is_drained(*p))
            })
    }

    /// The portal that is not drained, not `from`, with the fewest sessions (counting
    /// `extra` already planned there).
    fn least_loaded_other(&self, from: PortalId, extra: &[OperatorMove]) -> Option<PortalId> {
        self.portals
            .iter()
            .map(|p| p.id)
            .filter(|p| *p != from && !self.is_drained(*p))
            .min_by_key(|p| {
                self.sessions.values().filter(|s| s.portal == *p).count()
                    + extra.iter().filter(|m| m.to == *p).count()
            })
    }

    /// Moves every session of `initiator` to `to` (or, when `None`, to the least loaded other
    /// portal that is not drained): places each (initiator, target) there and returns the
    /// logout requests to send. Sessions already on the destination stay.
    pub fn operator_move(
        &mut self,
        initiator: &str,
        to: Option<PortalId>,
    ) -> Result<OperatorPlan, OperatorError> {
        if let Some(to) = to {
            if self.portal(to).is_none() {
                return Err(OperatorError::UnknownPortal(to.to_string()));
            }
            if self.is_drained(to) {
                return Err(OperatorError::DestinationDrained(to));
            }
        }
        let sessions: Vec<(u64, String, String, PortalId)> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.initiator.eq_ignore_ascii_case(initiator))
            .map(|(id, s)| (*id, s.initiator.clone(), s.target.clone(), s.portal))
            .collect();
        if sessions.is_empty() {
            return Err(OperatorError::UnknownInitiator(initiator.to_string()));
        }
        let mut plan = OperatorPlan::default();
        for (session_id, initiator, target, from) in sessions {
            let dest = match to {
                Some(t) => t,
                None => self
                    .least_loaded_other(from, &plan.moves)
                    .ok_or(OperatorError::NoDestination)?,
            };
            if dest == from {
                continue;
            }
            plan.moves.push(OperatorMove {
                session_id,
                initiator,
                target,
                from,
                to: dest,
            });
        }
        for m in &plan.moves {
            self.placements
                .insert((m.initiator.clone(), m.target.clone()), m.to);
            plan.actions.push(Action::RequestLogout {
                session_id: m.session_id,
                time2logout: TIME2LOGOUT,
            });
        }
        Ok(plan)
    }

    /// Drains `portal`: from now on its logins are redirected and SendTargets leaves it out;
    /// returns the deletes of its registrations (those still registered), then a logout
    /// request to each of its sessions, each placed on the least loaded portal that is not
    /// drained. Refused when no other portal would be left.
    pub fn drain(&mut self, portal: PortalId) -> Result<OperatorPlan, OperatorError> {
        if self.portal(portal).is_none() {
            return Err(OperatorError::UnknownPortal(portal.to_string()));
        }
        if !self
            .portals
            .iter()
            .any(|p| p.id != portal && !self.is_drained(p.id))
        {
            return Err(OperatorError::LastPortal(portal));
        }
        self.operator.drained.insert(portal);
        let mut plan = OperatorPlan::default();
        for r in self.registrations.iter().filter(|r| r.portal == portal) {
            if r.registered {
                plan.actions.push(Action::DeleteRegistration {
                    target: r.target.clone(),
                    portal,
                });
            }
        }
        let sessions: Vec<(u64, String, String)> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.portal == portal)
            .map(|(id, s)| (*id, s.initiator.clone(), s.target.clone()))
            .collect();
        for (session_id, initiator, target) in sessions {
            let to = match self
                .placement(&initiator, &target)
                .filter(|p| *p != portal && !self.is_drained(*p))
            {
                Some(p) => p,
                None => self
                    .least_loaded_other(portal, &plan.moves)
                    .ok_or(OperatorError::NoDestination)?,
            };
            self.placements
                .insert((initiator.clone(), target.clone()), to);
            plan.actions.push(Action::RequestLogout {
                session_id,
                time2logout: TIME2LOGOUT,
            });
            plan.moves.push(OperatorMove {
                session_id,
                initiator,
                target,
                from: portal,
                to,
            });
        }
        Ok(plan)
    }

    /// The deletions a drain still owes: every registration of a drained portal that the
    /// table still holds, because its delete failed (an iSNS server that did not answer in
    /// time). The registration keeper retries them each time the server answers, so a drained
    /// portal stops being advertised once iSNS is back, not only at the next drain.
    pub fn drain_deletions_owed(&self) -> Vec<Action> {
        self.registrations
            .iter()
            .filter(|r| r.registered && self.is_drained(r.portal))
            .map(|r| Action::DeleteRegistration {
                target: r.target.clone(),
                portal: r.portal,
            })
            .collect()
    }

    /// The restores an undrain still owes: registrations of portals not drained (again) whose
    /// restore failed (an iSNS server that did not answer in time), that nothing has changed
    /// since and whose target is still served.
    /// The registration keeper retries them alongside [`ControlPlane::drain_deletions_owed`].
    pub fn undrain_restores_owed(&self) -> Vec<Action> {
        self.operator
            .restores_owed
            .iter()
            .filter(|(target, portal)| {
                !self.is_drained(*portal)
                    && self
                        .registrations
                        .iter()
                        .any(|r| r.target == *target && r.portal == *portal && !r.registered)
            })
            .map(|(target, portal)| Action::RestoreRegistration {
                target: target.clone(),
                portal: *portal,
            })
            .collect()
    }

    /// Sessions still logged in through `portal`.
    pub fn sessions_on(&self, portal: PortalId) -> usize {
        self.sessions
            .values()
            .filter(|s| s.portal == portal)
            .count()
    }

    /// Undrains `portal`: logins there are accepted again; returns the restores of its
    /// registrations that are deleted.
    pub fn undrain(&mut self, portal: PortalId) -> Result<OperatorPlan, OperatorError> {
        if self.portal(portal).is_none() {
            return Err(OperatorError::UnknownPortal(portal.to_string()));
        }
        self.operator.drained.remove(&portal);
        let mut actions = Vec::new();
        for r in self
            .registrations
            .iter()
            .filter(|r| r.portal == portal && !r.registered)
        {
            self.operator
                .restores_owed
                .insert((r.target.clone(), portal));
            actions.push(Action::RestoreRegistration {
                target: r.target.clone(),
                portal,
            });
        }
        Ok(OperatorPlan {
            actions,
            moves: Vec::new(),
        })
    }

    /// The result of an operator's logout request for `m` at `now_ms`: recorded as the
    /// balancer's are ([`EventKind::LogoutRequested`], counted), with `reason`.
    pub fn operator_logout_sent(
        &mut self,
        m: &OperatorMove,
        delivered: bool,
        reason: &str,
        now_ms: u64,
    ) {
        if delivered {
            self.logout_request_delivered(MoveRecord {
                at_ms: now_ms,
                initiator: m.initiator.clone(),
                target: m.target.clone(),
                from: m.from,
                to: m.to,
            });
            self.push_event(
                now_ms,
                EventKind::LogoutRequested {
                    initiator: m.initiator.clone(),
                    target: m.target.clone(),
                    from: m.from,
                    to: m.to,
                },
                reason,
            );
        } else {
            self.push_event(
                now_ms,
                EventKind::Failed {
                    what: format!(
                        "logout request to {} ({}) not sent: the session on {} had already ended",
                        m.initiator, m.target, m.from
                    ),
                },
                reason,
            );
        }
    }

    /// The result of an operator's registration delete (`deleting`) or restore of
    /// (target, portal) at `now_ms`, recorded in the table and the event log with `reason`.
    pub fn operator_registration_changed(
        &mut self,
        target: &str,
        portal: PortalId,
        deleting: bool,
        result: Result<(), String>,
        reason: &str,
        now_ms: u64,
    ) {
        let kind = match result {
            Ok(()) if deleting => {
                self.delete_registration(target, portal);
                EventKind::RegistrationDeleted {
                    target: target.into(),
                    portal,
                }
            }
            Ok(()) => {
                self.set_registered(target, portal, true);
                EventKind::RegistrationRestored {
                    target: target.into(),
                    portal,
                }
            }
            Err(e) => EventKind::Failed {
                what: format!(
                    "{} ({target}, {portal}): {e}",
                    if deleting { "deleting" } else { "restoring" }
                ),
            },
        };
        self.push_event(now_ms, kind, reason);
    }
}
