//! The balancer loop: the async shell around the sans-IO [`BalanceLoop`]. Every interval it runs
//! a step on the control plane (sampled at the wall-clock time) and carries out the returned
//! [`Action`]s in order with the [`Registrar`] and the session channels, reporting each result
//! back before the next: delete the (target, hot portal) registration, then send the Async
//! Message "logout requested"; restore registrations once the load has fallen.

use std::sync::Arc;
use std::time::Duration;

use balancer::{BalancePolicy, Balancer};
use iscsi_target_core::{Action, BalanceLoop};

use crate::control::{Control, SessionCommand};
use crate::registration::Registrar;

pub use iscsi_target_core::control::TIME2LOGOUT;

/// Balancer loop settings.
#[derive(Debug, Clone)]
pub struct BalanceSettings {
    /// The metrics, thresholds, cooldown, moves per interval and pinned initiators.
    pub policy: BalancePolicy,
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
    let mut balance = BalanceLoop::new(Balancer::new(settings.policy));
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
        let actions = control.with_plane(|plane, now| balance.step(plane, now));
        execute(&control, &registrar, &mut balance, actions).await;
    }
}

/// Carries out `actions` in order, reporting each result to `balance` before the next one.
pub async fn execute(
    control: &Control,
    registrar: &Registrar,
    balance: &mut BalanceLoop,
    actions: Vec<Action>,
) {
    for action in actions {
        match action {
            Action::DeleteRegistration { target, portal } => {
                let _held = registrar.hold().await;
                let result = registrar.delete_registration(&target, portal).await;
                control.with_plane(|plane, now| {
                    balance.registration_deleted(plane, &target, portal, result, now)
                });
            }
            Action::RequestLogout {
                session_id,
                time2logout,
            } => {
                let sent = control.send(session_id, SessionCommand::RequestLogout { time2logout });
                control.with_plane(|plane, now| {
                    balance.logout_request_sent(plane, session_id, sent, now)
                });
            }
            Action::RestoreRegistration { target, portal } => {
                let _held = registrar.hold().await;
                let result = registrar.restore_registration(&target, portal).await;
                control.with_plane(|plane, now| {
                    balance.registration_restored(plane, &target, portal, result, now)
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The shell only: actions reach the registrar and the session channels. The decisions and
    //! their order are tested on the pure `BalanceLoop` in `iscsi-target-core`.
    use super::*;
    use crate::control::two_portals;
    use balancer::PortalId;

    #[tokio::test]
    async fn executes_a_move_through_the_channel_and_the_registrar() {
        let targets: Vec<String> = (1..=3).map(|i| format!("iqn.t{i}")).collect();
        let policy = BalancePolicy::parse(&["sessions:2"]).unwrap();
        let control = Control::new(two_portals(), targets, None, Some(policy.clone()));
        let mut rxs = Vec::new();
        for i in 1..=3 {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            control.session_started(PortalId(0), &format!("iqn.i{i}"), &format!("iqn.t{i}"), tx);
            rxs.push(rx);
        }
        let mut balance = BalanceLoop::new(Balancer::new(policy));
        let actions = control.with_plane(|p, now| balance.step(p, now));
        execute(&control, &Registrar::Local, &mut balance, actions).await;
        assert!(balance.is_settled());
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
        let labels: Vec<_> = snap
            .events
            .iter()
            .map(|e| e.kind.label())
            .filter(|l| *l != "login")
            .collect();
        assert_eq!(labels, ["registration-deleted", "logout-requested"]);
    }

    #[tokio::test]
    async fn a_registrar_error_is_reported_back_and_the_logout_still_goes_out() {
        let policy = BalancePolicy::parse(&["sessions:2"]).unwrap();
        let control = Arc::new(Control::new(
            two_portals(),
            vec!["iqn.t1".into()],
            None,
            Some(policy.clone()),
        ));
        // Nothing listens on port 1: the delete fails at once.
        let registrar = Registrar::Isns(Box::new(crate::registration::IsnsRegistrar::new(
            "127.0.0.1:1".parse().unwrap(),
            control.clone(),
        )));
        let (tx1, mut rx1) = tokio::sync::mpsc::unbounded_channel();
        control.session_started(PortalId(0), "iqn.i1", "iqn.t1", tx1);
        let (tx2, mut rx2) = tokio::sync::mpsc::unbounded_channel();
        control.session_started(PortalId(0), "iqn.i2", "iqn.t1", tx2);
        let mut balance = BalanceLoop::new(Balancer::new(policy));
        let actions = control.with_plane(|p, now| balance.step(p, now));
        assert!(matches!(actions[0], Action::DeleteRegistration { .. }));
        execute(&control, &registrar, &mut balance, actions).await;
        assert!(rx2.try_recv().is_ok());
        assert!(rx1.try_recv().is_err());
        assert!(!balance.policy().is_deleted("iqn.t1", PortalId(0)));
        let snap = control.snapshot();
        assert!(snap.registrations.iter().all(|r| r.registered));
        let failed: Vec<_> = snap
            .events
            .iter()
            .filter_map(|e| match &e.kind {
                balancer::EventKind::Failed { what } => Some(what.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(failed.len(), 1);
        assert!(
            failed[0].starts_with("deleting (iqn.t1, P0): iSNS server 127.0.0.1:1"),
            "{failed:?}"
        );
        assert_eq!(snap.events.last().unwrap().kind.label(), "logout-requested");
    }
}
