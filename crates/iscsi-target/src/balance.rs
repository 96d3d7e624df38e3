//! The balancer loop: the I/O shell around [`balancer::Balancer`]. Every interval it samples the
//! configuration table, asks the policy for decisions, and carries them out in the patent's order:
//! delete the (target, hot portal) registration, record the placement (so a stock initiator that
//! reconnects to the old address is redirected), then send the Async Message "logout requested".

use std::sync::Arc;
use std::time::{Duration, Instant};

use balancer::{BalanceSpec, Balancer, Decision, EventKind};

use crate::control::{Control, SessionCommand};
use crate::registration::Registrar;

/// Seconds the initiator is given to log out (Async Message Parameter3, RFC 7143 §11.9.1).
pub const TIME2LOGOUT: u16 = 2;

/// Balancer loop settings.
#[derive(Debug, Clone, Copy)]
pub struct BalanceSettings {
    pub spec: BalanceSpec,
    /// An initiator moved less than this long ago is not moved again.
    pub cooldown: Duration,
    /// How often the table is sampled and the policy run.
    pub interval: Duration,
}

/// Runs until `shutdown` turns true.
pub async fn run(
    control: Arc<Control>,
    registrar: Arc<Registrar>,
    settings: BalanceSettings,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let start = Instant::now();
    let mut policy = Balancer::new(settings.spec, settings.cooldown.as_millis() as u64);
    let mut tick = tokio::time::interval(settings.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
        let table = control.sample();
        let now = start.elapsed().as_millis() as u64;
        for d in policy.step(&table, now) {
            execute(&control, &registrar, &mut policy, d).await;
        }
    }
}

/// Carries out one decision and records what happened.
pub async fn execute(control: &Control, registrar: &Registrar, policy: &mut Balancer, d: Decision) {
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
                match registrar.delete_registration(&target, from).await {
                    Ok(()) => {
                        control.delete_registration(&target, from);
                        control.events.push(
                            EventKind::RegistrationDeleted {
                                target: target.clone(),
                                portal: from,
                            },
                            reason.clone(),
                        );
                    }
                    Err(e) => {
                        // The move still goes ahead: the placement redirects the initiator's
                        // next login, whatever iSNS answers it.
                        policy.registration_failed(&target, from, true);
                        control.events.push(
                            EventKind::Failed {
                                what: format!("deleting ({target}, {from}): {e}"),
                            },
                            reason.clone(),
                        );
                    }
                }
            }
            control.place(&initiator, &target, to);
            let sent = control.send(
                session_id,
                SessionCommand::RequestLogout {
                    time2logout: TIME2LOGOUT,
                },
            );
            if sent {
                control.events.push(
                    EventKind::LogoutRequested {
                        initiator,
                        target,
                        from,
                        to,
                    },
                    reason,
                );
            } else {
                // The session ended between sampling and now. Its next login is steered all the
                // same (iSNS no longer lists the hot portal; the placement redirects a stock
                // initiator), so nothing is undone; the record says why no request was sent.
                control.events.push(
                    EventKind::Failed {
                        what: format!(
                            "logout request to {initiator} ({target}) not sent: the session on {from} had already ended"
                        ),
                    },
                    reason,
                );
            }
        }
        Decision::Restore {
            target,
            portal,
            reason,
        } => match registrar.restore_registration(&target, portal).await {
            Ok(()) => {
                control.restore_registration(&target, portal);
                control
                    .events
                    .push(EventKind::RegistrationRestored { target, portal }, reason);
            }
            Err(e) => {
                policy.registration_failed(&target, portal, false);
                control.events.push(
                    EventKind::Failed {
                        what: format!("restoring ({target}, {portal}): {e}"),
                    },
                    reason,
                );
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::two_portals;
    use balancer::PortalId;

    #[tokio::test]
    async fn moves_then_restores_through_the_control_plane() {
        let targets: Vec<String> = (1..=3).map(|i| format!("iqn.t{i}")).collect();
        let spec: BalanceSpec = "sessions:2".parse().unwrap();
        let control = Control::new(two_portals(), targets, None, Some(spec));
        let registrar = Registrar::Local;
        let mut rxs = Vec::new();
        let mut ids = Vec::new();
        for i in 1..=3 {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let (id, _) = control.session_started(
                PortalId(0),
                &format!("iqn.i{i}"),
                &format!("iqn.t{i}"),
                tx,
            );
            rxs.push(rx);
            ids.push(id);
        }
        let mut policy = Balancer::new(spec, 0);
        let decisions = policy.step(&control.sample(), 0);
        assert_eq!(decisions.len(), 1);
        for d in decisions {
            execute(&control, &registrar, &mut policy, d).await;
        }
        // The newest session (i3) was asked to log out, and its registration on P0 is gone.
        assert_eq!(
            rxs[2].try_recv().unwrap(),
            SessionCommand::RequestLogout {
                time2logout: TIME2LOGOUT
            }
        );
        assert!(rxs[0].try_recv().is_err());
        let snap = control.snapshot();
        let r = snap
            .registrations
            .iter()
            .find(|r| r.target == "iqn.t3" && r.portal == PortalId(0))
            .unwrap();
        assert!(!r.registered);
        // It reconnects to P0 (a stock initiator): redirected to P1.
        control.session_ended(ids[2], "logout");
        assert_eq!(
            control.login_decision(PortalId(0), "iqn.i3", "iqn.t3"),
            crate::control::LoginDecision::Redirect {
                address: "127.0.0.2:3260".into()
            }
        );
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        control.session_started(PortalId(1), "iqn.i3", "iqn.t3", tx);
        // Load falls: i1 leaves, P0 has 1 session = low threshold: restored.
        control.session_ended(ids[0], "logout");
        for d in policy.step(&control.sample(), 1000) {
            execute(&control, &registrar, &mut policy, d).await;
        }
        assert!(
            control
                .snapshot()
                .registrations
                .iter()
                .all(|r| r.registered)
        );
        let order: Vec<&str> = control
            .events
            .snapshot()
            .iter()
            .map(|e| e.kind.label())
            .filter(|l| *l != "login" && *l != "logout")
            .collect();
        assert_eq!(
            order,
            [
                "registration-deleted",
                "logout-requested",
                "redirected",
                "registration-restored"
            ]
        );
    }
}
