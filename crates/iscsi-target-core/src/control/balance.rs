//! The balancer loop, sans-IO: samples the [`ControlPlane`], runs the pure policy
//! ([`balancer::Balancer`]) and turns its decisions into [`Action`]s in the patent's order (FIG. 5):
//! delete the (target, hot portal) registration in iSNS (step 107), then ask the session to log
//! out (step 109); restore a registration once the load has fallen (step 112).
//!
//! The shell carries the actions out in the order given and reports each result back
//! ([`BalanceLoop::registration_deleted`], [`BalanceLoop::logout_request_sent`],
//! [`BalanceLoop::registration_restored`]); the loop records the events and updates the control
//! plane and the policy. A logout request must be sent only after the delete before it was
//! reported: that report is what records the placement, so that a stock initiator reconnecting
//! to the old portal is redirected.

use std::fmt::Display;

use balancer::{Balancer, Decision, EventKind, MoveRecord, PortalId};

use super::ControlPlane;

/// Seconds the initiator is given to log out (Async Message Parameter3, RFC 7143 §11.9.1).
pub const TIME2LOGOUT: u16 = 2;

/// Something the shell must do for the balancer, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Deregister (target, portal) in iSNS (step 107); report with
    /// [`BalanceLoop::registration_deleted`].
    DeleteRegistration { target: String, portal: PortalId },
    /// Send the session [`crate::SessionCommand::RequestLogout`] (step 109); report with
    /// [`BalanceLoop::logout_request_sent`].
    RequestLogout { session_id: u64, time2logout: u16 },
    /// Register (target, portal) in iSNS again (step 112); report with
    /// [`BalanceLoop::registration_restored`].
    RestoreRegistration { target: String, portal: PortalId },
}

/// A move whose logout request has not been reported yet.
#[derive(Debug, Clone)]
struct PendingMove {
    session_id: u64,
    initiator: String,
    target: String,
    from: PortalId,
    to: PortalId,
    reason: String,
    /// Its placement waits for the report of the (target, from) delete.
    awaiting_delete: bool,
}

/// A registration change whose result has not been reported yet.
#[derive(Debug, Clone)]
struct PendingChange {
    target: String,
    portal: PortalId,
    reason: String,
}

/// The balancer's memory and the actions awaiting their results.
#[derive(Debug, Clone)]
pub struct BalanceLoop {
    policy: Balancer,
    time2logout: u16,
    moves: Vec<PendingMove>,
    deletes: Vec<PendingChange>,
    restores: Vec<PendingChange>,
}

impl BalanceLoop {
    /// A loop running `policy`, asking initiators to log out within [`TIME2LOGOUT`] seconds.
    pub fn new(policy: Balancer) -> Self {
        BalanceLoop {
            policy,
            time2logout: TIME2LOGOUT,
            moves: Vec::new(),
            deletes: Vec::new(),
            restores: Vec::new(),
        }
    }

    /// The policy and its memory (deleted registrations, cooldowns).
    pub fn policy(&self) -> &Balancer {
        &self.policy
    }

    /// Whether every action returned so far has been reported back.
    pub fn is_settled(&self) -> bool {
        self.moves.is_empty() && self.deletes.is_empty() && self.restores.is_empty()
    }

    /// One pass at `now_ms`: samples the plane (record the command counts first), runs the
    /// policy and returns what to do, in order.
    pub fn step(&mut self, plane: &mut ControlPlane, now_ms: u64) -> Vec<Action> {
        let mut table = plane.sample(now_ms);
        if plane.operator().paused {
            return Vec::new();
        }
        // The operator's pins and drains (see [`super::operator`]): a drained portal serves
        // nothing the balancer could move a session to.
        self.policy
            .set_operator_pinned(plane.operator().pinned.iter().cloned());
        table.served.retain(|(_, p)| !plane.is_drained(*p));
        let decisions = self.policy.step(&table, now_ms);
        self.apply(plane, decisions)
    }

    /// Turns decisions into actions: for a move, the registration delete (when the policy asks
    /// for one) then the logout request; for a restore, the registration.
    pub fn apply(&mut self, plane: &mut ControlPlane, decisions: Vec<Decision>) -> Vec<Action> {
        let mut actions = Vec::new();
        for d in decisions {
            match d {
                Decision::Move {
                    session_id,
                    initiator,
                    target,
                    from,
                    to,
                    delete_registration,
                    reason,
                } => {
                    if delete_registration {
                        actions.push(Action::DeleteRegistration {
                            target: target.clone(),
                            portal: from,
                        });
                        self.deletes.push(PendingChange {
                            target: target.clone(),
                            portal: from,
                            reason: reason.clone(),
                        });
                    }
                    let awaiting_delete = self
                        .deletes
                        .iter()
                        .any(|c| c.target == target && c.portal == from);
                    if !awaiting_delete {
                        plane.place(&initiator, &target, to);
                    }
                    actions.push(Action::RequestLogout {
                        session_id,
                        time2logout: self.time2logout,
                    });
                    self.moves.push(PendingMove {
                        session_id,
                        initiator,
                        target,
                        from,
                        to,
                        reason,
                        awaiting_delete,
                    });
                }
                // A drained portal's registrations come back when it is undrained.
                Decision::Restore { portal, .. } if plane.is_drained(portal) => {}
                Decision::Restore {
                    target,
                    portal,
                    reason,
                } => {
                    actions.push(Action::RestoreRegistration {
                        target: target.clone(),
                        portal,
                    });
                    self.restores.push(PendingChange {
                        target,
                        portal,
                        reason,
                    });
                }
            }
        }
        actions
    }

    /// The result of [`Action::DeleteRegistration`] at `now_ms`. Either way the moves waiting
    /// for it go ahead: their placement redirects the initiator's next login, whatever iSNS
    /// answered.
    pub fn registration_deleted<E: Display>(
        &mut self,
        plane: &mut ControlPlane,
        target: &str,
        portal: PortalId,
        result: Result<(), E>,
        now_ms: u64,
    ) {
        if !self.settle(plane, target, portal, result, now_ms, true) {
            return;
        }
        for m in self.moves.iter_mut() {
            if m.awaiting_delete && m.target == target && m.from == portal {
                m.awaiting_delete = false;
                plane.place(&m.initiator, &m.target, m.to);
            }
        }
    }

    /// The result of [`Action::RequestLogout`] at `now_ms`: `delivered` is false when the
    /// session had already ended.
    pub fn logout_request_sent(
        &mut self,
        plane: &mut ControlPlane,
        session_id: u64,
        delivered: bool,
        now_ms: u64,
    ) {
        let Some(i) = self.moves.iter().position(|m| m.session_id == session_id) else {
            return;
        };
        let m = self.moves.remove(i);
        if m.awaiting_delete {
            plane.place(&m.initiator, &m.target, m.to);
        }
        if delivered {
            plane.logout_request_delivered(MoveRecord {
                at_ms: now_ms,
                initiator: m.initiator.clone(),
                target: m.target.clone(),
                from: m.from,
                to: m.to,
            });
            plane.push_event(
                now_ms,
                EventKind::LogoutRequested {
                    initiator: m.initiator,
                    target: m.target,
                    from: m.from,
                    to: m.to,
                },
                m.reason,
            );
        } else {
            // The session ended between sampling and now. Its next login is steered all the
            // same (iSNS no longer lists the hot portal; the placement redirects a stock
            // initiator), so nothing is undone; the record says why no request was sent.
            plane.push_event(
                now_ms,
                EventKind::Failed {
                    what: format!(
                        "logout request to {} ({}) not sent: the session on {} had already ended",
                        m.initiator, m.target, m.from
                    ),
                },
                m.reason,
            );
        }
    }

    /// The result of [`Action::RestoreRegistration`] at `now_ms`. A failed restore is tried
    /// again at the next step.
    pub fn registration_restored<E: Display>(
        &mut self,
        plane: &mut ControlPlane,
        target: &str,
        portal: PortalId,
        result: Result<(), E>,
        now_ms: u64,
    ) {
        self.settle(plane, target, portal, result, now_ms, false);
    }

    /// Records the result of a pending delete (`deleting`) or restore of (target, portal) in
    /// the plane and the event log; a failure goes back to the policy. False when no such
    /// change was pending.
    fn settle<E: Display>(
        &mut self,
        plane: &mut ControlPlane,
        target: &str,
        portal: PortalId,
        result: Result<(), E>,
        now_ms: u64,
        deleting: bool,
    ) -> bool {
        let pending = if deleting {
            &mut self.deletes
        } else {
            &mut self.restores
        };
        let Some(i) = pending
            .iter()
            .position(|c| c.target == target && c.portal == portal)
        else {
            return false;
        };
        let change = pending.remove(i);
        let (target_s, verb) = (
            target.to_string(),
            if deleting { "deleting" } else { "restoring" },
        );
        let kind = match result {
            Ok(()) if deleting => {
                plane.delete_registration(target, portal);
                EventKind::RegistrationDeleted {
                    target: target_s,
                    portal,
                }
            }
            Ok(()) => {
                plane.restore_registration(target, portal);
                EventKind::RegistrationRestored {
                    target: target_s,
                    portal,
                }
            }
            Err(e) => {
                self.policy.registration_failed(target, portal, deleting);
                EventKind::Failed {
                    what: format!("{verb} ({target}, {portal}): {e}"),
                }
            }
        };
        plane.push_event(now_ms, kind, change.reason);
        true
    }
}
