//! The target's control plane: the configuration table (patent FIG. 2), placements for login
//! redirects, the registration table (FIG. 3), and the seam between the portal processors and
//! the balancer.
//!
//! Portal processors call [`Control::login_decision`] while negotiating a login,
//! [`Control::session_started`] once a normal session reaches full-feature phase and
//! [`Control::session_ended`] when it goes. They count completed commands in the
//! [`SessionStats`] they get back (an atomic: no lock on the data path). The balancer loop
//! ([`crate::balance`]) samples those counters into a [`ConfigTable`] and sends
//! [`SessionCommand`]s back to the sessions.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use balancer::{
    AdminSnapshot, BalanceSpec, ConfigTable, EventKind, PortalId, PortalRow, RegistrationRow,
    SessionEntry,
};
use tokio::sync::mpsc;

use crate::events::{EventLog, now_ms};

pub use iscsi_target_core::{LoginDecision, SessionCommand};

/// The sending half a portal processor registers for each session.
pub type CommandSender = mpsc::UnboundedSender<SessionCommand>;

/// Per-session counters the data path updates without locks.
#[derive(Debug, Default)]
pub struct SessionStats {
    /// SCSI commands completed.
    pub commands: AtomicU64,
}

impl SessionStats {
    /// Counts one completed SCSI command.
    #[inline]
    pub fn command_done(&self) {
        self.commands.fetch_add(1, Ordering::Relaxed);
    }
}

/// A portal as the control plane knows it.
#[derive(Debug, Clone)]
pub struct PortalInfo {
    pub id: PortalId,
    pub address: SocketAddr,
    /// Portal Group Tag: each portal is its own portal group (one processor each).
    pub tag: u16,
}

#[derive(Debug)]
struct SessionRecord {
    portal: PortalId,
    initiator: String,
    target: String,
    login_ms: u64,
    stats: Arc<SessionStats>,
    handle: CommandSender,
    /// Commands and time at the last sample, and the IOPS measured then.
    sampled_commands: u64,
    sampled_ms: u64,
    iops: f64,
}

#[derive(Debug, Default)]
struct State {
    next_session: u64,
    /// Live sessions, in id (login) order.
    sessions: BTreeMap<u64, SessionRecord>,
    /// Where the balancer placed (initiator, target): logins elsewhere are redirected here.
    placements: HashMap<(String, String), PortalId>,
    registrations: Vec<RegistrationRow>,
}

impl State {
    fn set_registered(&mut self, target: &str, portal: PortalId, registered: bool) {
        for r in self.registrations.iter_mut() {
            if r.target == target && r.portal == portal {
                r.registered = registered;
            }
        }
    }
}

/// Shared between every portal processor, the balancer loop and the admin endpoint.
#[derive(Debug)]
pub struct Control {
    portals: Vec<PortalInfo>,
    targets: Vec<String>,
    isns: Option<String>,
    balance: Option<BalanceSpec>,
    pub events: EventLog,
    state: Mutex<State>,
}

impl Control {
    /// A control plane for `portals` serving every one of `targets` through every portal.
    pub fn new(
        portals: Vec<PortalInfo>,
        targets: Vec<String>,
        isns: Option<String>,
        balance: Option<BalanceSpec>,
    ) -> Self {
        let mut registrations = Vec::new();
        for t in &targets {
            for p in &portals {
                registrations.push(RegistrationRow {
                    target: t.clone(),
                    portal: p.id,
                    address: p.address.to_string(),
                    tag: p.tag,
                    registered: true,
                });
            }
        }
        Control {
            portals,
            targets,
            isns,
            balance,
            events: EventLog::default(),
            state: Mutex::new(State {
                next_session: 1,
                registrations,
                ..State::default()
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn portals(&self) -> &[PortalInfo] {
        &self.portals
    }

    pub fn targets(&self) -> &[String] {
        &self.targets
    }

    pub fn portal(&self, id: PortalId) -> Option<&PortalInfo> {
        self.portals.iter().find(|p| p.id == id)
    }

    /// Decides how to answer a normal-session login for (initiator, target) arriving on `portal`.
    pub fn login_decision(&self, portal: PortalId, initiator: &str, target: &str) -> LoginDecision {
        if !self.targets.iter().any(|t| t == target) {
            return LoginDecision::NotFound;
        }
        let Some(here) = self.portal(portal) else {
            return LoginDecision::NotFound;
        };
        let placed = self
            .state()
            .placements
            .get(&(initiator.to_string(), target.to_string()))
            .copied();
        match placed.and_then(|p| self.portal(p)) {
            Some(there) if there.id != portal => {
                self.events.push(
                    EventKind::Redirected {
                        initiator: initiator.into(),
                        target: target.into(),
                        from: portal,
                        to: there.id,
                    },
                    format!(
                        "the balancer placed this initiator on {} ({}); login answered 0x0101",
                        there.id, there.address
                    ),
                );
                LoginDecision::Redirect {
                    address: there.address.to_string(),
                }
            }
            _ => LoginDecision::Accept {
                portal_group_tag: here.tag,
            },
        }
    }

    /// Records a normal session that reached full-feature phase. Returns its id and counters.
    pub fn session_started(
        &self,
        portal: PortalId,
        initiator: &str,
        target: &str,
        handle: CommandSender,
    ) -> (u64, Arc<SessionStats>) {
        let stats = Arc::new(SessionStats::default());
        let now = now_ms();
        let id = {
            let mut st = self.state();
            let id = st.next_session;
            st.next_session += 1;
            st.sessions.insert(
                id,
                SessionRecord {
                    portal,
                    initiator: initiator.into(),
                    target: target.into(),
                    login_ms: now,
                    stats: stats.clone(),
                    handle,
                    sampled_commands: 0,
                    sampled_ms: now,
                    iops: 0.0,
                },
            );
            id
        };
        self.events.push(
            EventKind::Login {
                initiator: initiator.into(),
                target: target.into(),
                portal,
            },
            format!("session {id} in full-feature phase"),
        );
        (id, stats)
    }

    /// Records the end of a session (logout or connection loss).
    pub fn session_ended(&self, session_id: u64, why: &str) {
        let rec = self.state().sessions.remove(&session_id);
        if let Some(r) = rec {
            self.events.push(
                EventKind::Logout {
                    initiator: r.initiator,
                    target: r.target,
                    portal: r.portal,
                },
                format!("session {session_id}: {why}"),
            );
        }
    }

    /// Sends a command to a session; false if it is gone.
    pub fn send(&self, session_id: u64, cmd: SessionCommand) -> bool {
        self.state()
            .sessions
            .get(&session_id)
            .is_some_and(|r| r.handle.send(cmd).is_ok())
    }

    /// Records that (initiator, target) belongs on `portal` from now on.
    pub fn place(&self, initiator: &str, target: &str, portal: PortalId) {
        self.state()
            .placements
            .insert((initiator.into(), target.into()), portal);
    }

    /// Records that the (target, portal) registration was deleted in iSNS (the patent's step 107).
    pub fn delete_registration(&self, target: &str, portal: PortalId) {
        self.state().set_registered(target, portal, false);
    }

    /// Records that the (target, portal) registration was restored, and forgets the placements
    /// that were made to move sessions of `target` away from `portal` (the patent's step 112).
    pub fn restore_registration(&self, target: &str, portal: PortalId) {
        let mut st = self.state();
        st.set_registered(target, portal, true);
        st.placements
            .retain(|(_, t), p| !(t == target && *p != portal));
    }

    /// Samples every session's counters (IOPS since the last sample) and returns the table.
    pub fn sample(&self) -> ConfigTable {
        let now = now_ms();
        let mut st = self.state();
        for r in st.sessions.values_mut() {
            let c = r.stats.commands.load(Ordering::Relaxed);
            let dt = now.saturating_sub(r.sampled_ms);
            if dt >= 200 {
                r.iops = (c - r.sampled_commands) as f64 * 1000.0 / dt as f64;
                r.sampled_commands = c;
                r.sampled_ms = now;
            }
        }
        Self::table_of(&self.portals, &self.targets, &st)
    }

    fn table_of(portals: &[PortalInfo], targets: &[String], st: &State) -> ConfigTable {
        let mut rows: Vec<PortalRow> = portals
            .iter()
            .enumerate()
            .map(|(i, p)| PortalRow {
                id: p.id,
                address: p.address.to_string(),
                processor: i,
                sessions: Vec::new(),
            })
            .collect();
        for (id, r) in &st.sessions {
            if let Some(row) = rows.iter_mut().find(|row| row.id == r.portal) {
                row.sessions.push(SessionEntry {
                    session_id: *id,
                    initiator: r.initiator.clone(),
                    target: r.target.clone(),
                    login_ms: r.login_ms,
                    iops: r.iops,
                    commands: r.stats.commands.load(Ordering::Relaxed),
                });
            }
        }
        let served = targets
            .iter()
            .flat_map(|t| portals.iter().map(move |p| (t.clone(), p.id)))
            .collect();
        ConfigTable {
            portals: rows,
            served,
        }
    }

    /// The admin endpoint's document.
    pub fn snapshot(&self) -> AdminSnapshot {
        let st = self.state();
        AdminSnapshot {
            isns: self.isns.clone(),
            balance: self.balance,
            table: Self::table_of(&self.portals, &self.targets, &st),
            registrations: st.registrations.clone(),
            events: self.events.snapshot(),
        }
    }
}

/// Test fixture: portal 0 at 127.0.0.1:3260 (tag 1) and portal 1 at 127.0.0.2:3260 (tag 2).
#[cfg(test)]
pub(crate) fn two_portals() -> Vec<PortalInfo> {
    vec![
        PortalInfo {
            id: PortalId(0),
            address: "127.0.0.1:3260".parse().unwrap(),
            tag: 1,
        },
        PortalInfo {
            id: PortalId(1),
            address: "127.0.0.2:3260".parse().unwrap(),
            tag: 2,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn control() -> Control {
        Control::new(two_portals(), vec!["iqn.t1".into()], None, None)
    }

    #[test]
    fn redirects_a_placed_initiator_until_the_registration_returns() {
        let c = control();
        assert_eq!(
            c.login_decision(PortalId(0), "iqn.i1", "iqn.t1"),
            LoginDecision::Accept {
                portal_group_tag: 1
            }
        );
        assert_eq!(
            c.login_decision(PortalId(0), "iqn.i1", "iqn.nope"),
            LoginDecision::NotFound
        );
        c.place("iqn.i1", "iqn.t1", PortalId(1));
        c.delete_registration("iqn.t1", PortalId(0));
        assert_eq!(
            c.login_decision(PortalId(0), "iqn.i1", "iqn.t1"),
            LoginDecision::Redirect {
                address: "127.0.0.2:3260".into()
            }
        );
        // Another initiator is not affected, and the placed one is accepted where it was placed.
        assert_eq!(
            c.login_decision(PortalId(0), "iqn.i2", "iqn.t1"),
            LoginDecision::Accept {
                portal_group_tag: 1
            }
        );
        assert_eq!(
            c.login_decision(PortalId(1), "iqn.i1", "iqn.t1"),
            LoginDecision::Accept {
                portal_group_tag: 2
            }
        );
        c.restore_registration("iqn.t1", PortalId(0));
        assert_eq!(
            c.login_decision(PortalId(0), "iqn.i1", "iqn.t1"),
            LoginDecision::Accept {
                portal_group_tag: 1
            }
        );
        let snap = c.snapshot();
        assert!(snap.registrations.iter().all(|r| r.registered));
        assert!(snap.events.iter().any(|e| e.kind.label() == "redirected"));
    }

    #[test]
    fn tracks_sessions_commands_and_commands_to_sessions() {
        let c = control();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (id, stats) = c.session_started(PortalId(1), "iqn.i1", "iqn.t1", tx);
        for _ in 0..5 {
            stats.command_done();
        }
        let t = c.sample();
        assert_eq!(t.portals[1].sessions.len(), 1);
        assert_eq!(t.portals[1].sessions[0].commands, 5);
        assert!(t.portals[0].sessions.is_empty());
        assert!(c.send(id, SessionCommand::RequestLogout { time2logout: 2 }));
        assert_eq!(
            rx.try_recv().unwrap(),
            SessionCommand::RequestLogout { time2logout: 2 }
        );
        c.session_ended(id, "logout");
        assert!(!c.send(id, SessionCommand::RequestLogout { time2logout: 2 }));
        assert!(c.sample().portals[1].sessions.is_empty());
        let labels: Vec<_> = c.events.snapshot().iter().map(|e| e.kind.label()).collect();
        assert_eq!(labels, ["login", "logout"]);
    }
}
