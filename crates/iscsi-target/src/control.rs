//! The target's control plane, as the threads share it: a thin shell around the sans-IO
//! [`ControlPlane`] (the configuration table of patent FIG. 2, placements for login redirects,
//! the registration table of FIG. 3 and the event log) that adds a lock, the wall clock
//! ([`balancer::clock::unix_ms`]) and each session's command channel.
//!
//! Portal processors call [`Control::login_decision`] while negotiating a login,
//! [`Control::session_started`] once a normal session reaches full-feature phase and
//! [`Control::session_ended`] when it goes. They count completed commands, bytes and
//! outstanding commands in the [`SessionStats`] they get back, and bytes per portal in its
//! [`PortalStats`] (atomics: no lock on the data path); each portal thread publishes its
//! smoothed load there once a second ([`crate::load`]). All of it is copied into the control
//! plane when it is sampled or shown. The balancer loop ([`crate::balance`])
//! runs the pure [`iscsi_target_core::BalanceLoop`] on the plane and sends [`SessionCommand`]s
//! back to the sessions.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use balancer::clock::unix_ms;
use balancer::{AdminSnapshot, BalancePolicy, ConfigTable, PortalId};
use iscsi_target_core::control::SessionCounters;
use iscsi_target_core::{CloseReason, ControlPlane, LoginPolicy};
use tokio::sync::mpsc;

use crate::events::Events;
use crate::load::PortalStats;
use crate::metrics::LoginCounters;

pub use iscsi_target_core::control::PortalInfo;
pub use iscsi_target_core::{LoginDecision, SessionCommand};

/// The sending half a portal processor registers for each session.
pub type CommandSender = mpsc::UnboundedSender<SessionCommand>;

/// Per-session counters the data path updates without locks.
#[derive(Debug, Default)]
pub struct SessionStats {
    /// SCSI commands completed.
    pub commands: AtomicU64,
    /// Bytes written to the session's connection.
    pub bytes_sent: AtomicU64,
    /// Bytes read from it.
    pub bytes_received: AtomicU64,
    /// SCSI commands received and not yet answered, as of the connection's last pass.
    pub outstanding: AtomicU32,
}

impl SessionStats {
    /// Counts one completed SCSI command.
    #[inline]
    pub fn command_done(&self) {
        self.commands.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters as the control plane takes them.
    pub fn counters(&self) -> SessionCounters {
        SessionCounters {
            commands: self.commands.load(Ordering::Relaxed),
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            bytes_received: self.bytes_received.load(Ordering::Relaxed),
            outstanding: self.outstanding.load(Ordering::Relaxed),
        }
    }
}

/// What a live session has in the shell: its command channel and its counters.
#[derive(Debug)]
struct Link {
    handle: CommandSender,
    stats: Arc<SessionStats>,
    /// The session's target, for the per-target totals.
    target: Arc<str>,
}

/// A target's sessions and counters, live and ended sessions together ([`Control::target_totals`]).
#[derive(Debug, Clone, PartialEq)]
pub struct TargetTotals {
    pub target: String,
    /// Sessions logged in now.
    pub sessions: usize,
    /// Commands and bytes of every session since start-up (`outstanding`: the live ones').
    pub counters: SessionCounters,
}

/// The plane and the session links, under one lock.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) plane: ControlPlane,
    links: HashMap<u64, Link>,
    /// Each portal's counters and published load, in portal order.
    portal_stats: Vec<Arc<PortalStats>>,
    /// Counters of the sessions that ended, by target (for monotonic per-target totals).
    ended: HashMap<Arc<str>, SessionCounters>,
}

impl Inner {
    /// Forgets session `id`'s link, folding its counters into its target's ended totals.
    fn unlink(&mut self, id: u64) {
        if let Some(l) = self.links.remove(&id) {
            let c = l.stats.counters();
            let t = self.ended.entry(l.target).or_default();
            t.commands += c.commands;
            t.bytes_sent += c.bytes_sent;
            t.bytes_received += c.bytes_received;
        }
    }
}

impl Inner {
    /// Copies the data path's session counters and the portals' published loads into the
    /// plane.
    fn refresh(&mut self) {
        for (id, l) in &self.links {
            self.plane.record_session(*id, l.stats.counters());
        }
        let ids: Vec<PortalId> = self.plane.portals().iter().map(|p| p.id).collect();
        for (id, stats) in ids.into_iter().zip(&self.portal_stats) {
            self.plane.record_portal_load(id, stats.load());
        }
    }
}

pub(crate) fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(|e| e.into_inner())
}

/// The logical units of each served target: name and table, in target order.
pub type ServedLuns = Arc<[(String, Arc<scsi::LunTable>)]>;

/// Shared between every portal processor, the balancer loop and the admin endpoint.
#[derive(Debug)]
pub struct Control {
    /// Copies of the plane's (fixed) portals and of its targets (changed only by a
    /// configuration reload, [`Control::set_targets`]), readable without the plane's lock.
    portals: Vec<PortalInfo>,
    targets: std::sync::RwLock<Arc<[String]>>,
    /// Woken when the targets change, so that the iSNS registration follows at once.
    pub targets_changed: tokio::sync::Notify,
    /// Each portal's counters, in portal order (also in `inner`, for the copying).
    portal_stats: Vec<Arc<PortalStats>>,
    /// The event log, stamped with the wall clock.
    pub events: Events,
    /// Set when the target begins to stop: normal logins are refused from then on.
    stopping: AtomicBool,
    /// The admin endpoint's operator calls: token and registrar ([`crate::admin_ops`]).
    pub operator: crate::admin_ops::Operator,
    /// Login outcomes that are not events (for `/metrics`).
    pub logins: LoginCounters,
    /// The logical units of each served target, in target order, for their statistics
    /// (`/metrics`); set by the [`crate::target_set::TargetSet`] that serves them.
    luns: std::sync::RwLock<ServedLuns>,
    inner: Arc<Mutex<Inner>>,
}

impl Control {
    /// A control plane for `portals` serving every one of `targets` through every portal.
    pub fn new(
        portals: Vec<PortalInfo>,
        targets: Vec<String>,
        isns: Option<String>,
        balance: Option<BalancePolicy>,
    ) -> Self {
        let plane = ControlPlane::new(portals.clone(), targets.clone(), isns, balance);
        let portal_stats: Vec<Arc<PortalStats>> = portals.iter().map(|_| Arc::default()).collect();
        let inner = Arc::new(Mutex::new(Inner {
            plane,
            links: HashMap::new(),
            portal_stats: portal_stats.clone(),
            ended: HashMap::new(),
        }));
        Control {
            portals,
            targets: std::sync::RwLock::new(targets.into()),
            targets_changed: tokio::sync::Notify::new(),
            portal_stats,
            events: Events::new(inner.clone()),
            stopping: AtomicBool::new(false),
            operator: Default::default(),
            logins: LoginCounters::default(),
            luns: std::sync::RwLock::new(Arc::from(Vec::new())),
            inner,
        }
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// Runs `f` on the plane (counters refreshed) with the current wall-clock time.
    pub fn with_plane<R>(&self, f: impl FnOnce(&mut ControlPlane, u64) -> R) -> R {
        let mut g = self.inner();
        g.refresh();
        f(&mut g.plane, unix_ms())
    }

    pub fn portals(&self) -> &[PortalInfo] {
        &self.portals
    }

    /// The served targets' names (a copy: a reload may change them).
    pub fn targets(&self) -> Arc<[String]> {
        self.targets
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The served targets are now `targets` (a configuration reload): the plane's
    /// registration table follows ([`ControlPlane::set_targets`]) and the iSNS keeper is
    /// woken to register them.
    pub fn set_targets(&self, targets: Vec<String>) {
        let mut g = self.inner();
        g.plane.set_targets(targets.clone());
        *self.targets.write().unwrap_or_else(|e| e.into_inner()) = targets.into();
        drop(g);
        self.targets_changed.notify_one();
    }

    /// The logical units now served: target name and its table, in target order.
    pub fn served_luns(&self) -> ServedLuns {
        self.luns.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Records the logical units served now (at start and after each reload).
    pub fn set_served_luns(&self, luns: Vec<(String, Arc<scsi::LunTable>)>) {
        *self.luns.write().unwrap_or_else(|e| e.into_inner()) = luns.into();
    }

    pub fn portal(&self, id: PortalId) -> Option<&PortalInfo> {
        self.portals.iter().find(|p| p.id == id)
    }

    /// Time constant of the smoothed load figures, in milliseconds.
    pub fn smoothing_tau_ms(&self) -> u64 {
        self.inner().plane.smoothing_tau_ms()
    }

    /// The counters of portal `id`, which its connections update and its thread publishes
    /// its load in.
    pub fn portal_stats(&self, id: PortalId) -> Option<&Arc<PortalStats>> {
        let i = self.portals.iter().position(|p| p.id == id)?;
        self.portal_stats.get(i)
    }

    /// Sets the capacity of portal `id`'s link, bytes per second each way (None: unknown).
    pub fn set_link_capacity(&self, id: PortalId, bytes_per_s: Option<f64>) {
        self.inner().plane.set_link_capacity(id, bytes_per_s);
    }

    /// Decides how to answer a normal-session login for (initiator, target) arriving on `portal`:
    /// once the target is stopping, "service unavailable" (try again later).
    pub fn login_decision(&self, portal: PortalId, initiator: &str, target: &str) -> LoginDecision {
        if self.is_stopping() {
            return LoginDecision::Unavailable;
        }
        self.inner()
            .plane
            .decide_login(portal, initiator, target, unix_ms())
    }

    /// The first step of a graceful stop: refuses every normal login from now on and asks every
    /// session to log out within `time2logout` seconds (Async Message "logout requested";
    /// one that does not is dropped after that, see [`SessionCommand::RequestLogout`]).
    /// Returns how many sessions were asked.
    pub fn begin_stop(&self, time2logout: u16) -> usize {
        self.stopping.store(true, Ordering::SeqCst);
        let g = self.inner();
        g.links
            .values()
            .filter(|l| {
                l.handle
                    .send(SessionCommand::RequestLogout { time2logout })
                    .is_ok()
            })
            .count()
    }

    /// Whether [`Control::begin_stop`] was called.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Normal sessions in full-feature phase now.
    pub fn session_count(&self) -> usize {
        self.inner().links.len()
    }

    /// A fresh non-zero Target Session Identifying Handle (RFC 7143 §11.12.6).
    pub fn next_tsih(&self) -> u16 {
        self.inner().plane.allocate_tsih()
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
        let mut g = self.inner();
        let id = g
            .plane
            .session_started(portal, initiator, target, unix_ms());
        g.links.insert(
            id,
            Link {
                handle,
                stats: stats.clone(),
                target: target.into(),
            },
        );
        (id, stats)
    }

    /// Records the end of a session (logout or connection loss).
    pub fn session_ended(&self, session_id: u64, why: &str) {
        let mut g = self.inner();
        g.unlink(session_id);
        g.plane.session_ended(session_id, why, unix_ms());
    }

    /// Records the end of a session closed for `why`, as its connection core reported it: a
    /// session dropped for ignoring a logout request is also recorded as a forced move
    /// ([`ControlPlane::session_closed`]).
    pub fn session_closed(&self, session_id: u64, why: &CloseReason) {
        let mut g = self.inner();
        g.unlink(session_id);
        g.plane.session_closed(session_id, why, unix_ms());
    }

    /// The portals of `target` that SendTargets leaves out now: those whose registration the
    /// balancer holds deleted.
    pub fn withheld_portals(&self, target: &str) -> Vec<PortalId> {
        self.inner().plane.withheld_portals(target)
    }

    /// Sends a command to a session; false if it is gone.
    pub fn send(&self, session_id: u64, cmd: SessionCommand) -> bool {
        self.inner()
            .links
            .get(&session_id)
            .is_some_and(|l| l.handle.send(cmd).is_ok())
    }

    /// Records that (initiator, target) belongs on `portal` from now on.
    pub fn place(&self, initiator: &str, target: &str, portal: PortalId) {
        self.inner().plane.place(initiator, target, portal);
    }

    /// Records that the (target, portal) registration was deleted in iSNS (the patent's step 107).
    pub fn delete_registration(&self, target: &str, portal: PortalId) {
        self.inner().plane.delete_registration(target, portal);
    }

    /// Records that the (target, portal) registration was restored, and forgets the placements
    /// that were made to move sessions of `target` away from `portal` (the patent's step 112).
    pub fn restore_registration(&self, target: &str, portal: PortalId) {
        self.inner().plane.restore_registration(target, portal);
    }

    /// Samples every session's counters (IOPS since the last sample, smoothed byte rates)
    /// and returns the table.
    pub fn sample(&self) -> ConfigTable {
        self.with_plane(|p, now| p.sample(now))
    }

    /// Each served target's sessions now and counters since start-up (ended sessions
    /// included), in the order of [`Control::targets`]; then any other target that had
    /// sessions (one removed by a reload).
    pub fn target_totals(&self) -> Vec<TargetTotals> {
        let names = self.targets();
        let g = self.inner();
        let mut out: Vec<TargetTotals> = names
            .iter()
            .map(|t| TargetTotals {
                target: t.clone(),
                sessions: 0,
                counters: SessionCounters::default(),
            })
            .collect();
        let slot =
            |out: &mut Vec<TargetTotals>, t: &str| match out.iter().position(|x| x.target == t) {
                Some(i) => i,
                None => {
                    out.push(TargetTotals {
                        target: t.to_string(),
                        sessions: 0,
                        counters: SessionCounters::default(),
                    });
                    out.len() - 1
                }
            };
        for (t, c) in &g.ended {
            let i = slot(&mut out, t);
            let o = &mut out[i].counters;
            o.commands += c.commands;
            o.bytes_sent += c.bytes_sent;
            o.bytes_received += c.bytes_received;
        }
        for l in g.links.values() {
            let i = slot(&mut out, &l.target);
            let c = l.stats.counters();
            out[i].sessions += 1;
            let o = &mut out[i].counters;
            o.commands += c.commands;
            o.bytes_sent += c.bytes_sent;
            o.bytes_received += c.bytes_received;
            o.outstanding += c.outstanding;
        }
        out
    }

    /// How many events of each kind the event log has recorded since start-up, by
    /// [`balancer::EventKind::label`].
    pub fn event_counts(&self) -> Vec<(&'static str, u64)> {
        self.inner().plane.events().counts().to_vec()
    }

    /// The admin endpoint's document.
    pub fn snapshot(&self) -> AdminSnapshot {
        let mut g = self.inner();
        g.refresh();
        g.plane.snapshot()
    }
}

/// A connection core asks the shared control plane, at the wall-clock time: how to answer a
/// login, and which portals its SendTargets answers leave out.
impl LoginPolicy for &Control {
    fn login_decision(&mut self, portal: PortalId, initiator: &str, target: &str) -> LoginDecision {
        Control::login_decision(self, portal, initiator, target)
    }

    fn next_tsih(&mut self) -> u16 {
        Control::next_tsih(self)
    }

    fn withheld_portals(&mut self, target: &str) -> Vec<PortalId> {
        Control::withheld_portals(self, target)
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
    //! The shell only: locking, the channels and the counters. The logic is tested on the pure
    //! `ControlPlane` in `iscsi-target-core`.
    use super::*;

    fn control() -> Control {
        Control::new(two_portals(), vec!["iqn.t1".into()], None, None)
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
        stats.command_done();
        // The admin document shows the live count, not the sampled one.
        assert_eq!(c.snapshot().table.portals[1].sessions[0].commands, 6);
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
        // Events carry the wall-clock time.
        assert!(c.events.snapshot()[0].at_ms > 1_600_000_000_000);
    }

    #[test]
    fn bytes_outstanding_and_the_portals_loads_reach_the_table() {
        let c = control();
        c.set_link_capacity(PortalId(0), Some(1e6));
        let (tx, _rx) = mpsc::unbounded_channel();
        let (_id, stats) = c.session_started(PortalId(0), "iqn.i1", "iqn.t1", tx);
        stats.bytes_sent.fetch_add(5_000, Ordering::Relaxed);
        stats.bytes_received.fetch_add(100, Ordering::Relaxed);
        stats.outstanding.store(2, Ordering::Relaxed);
        c.portal_stats(PortalId(0))
            .unwrap()
            .publish(balancer::PortalLoad {
                sent_bps: 500e3,
                cpu_busy: 0.25,
                ..Default::default()
            });
        let t = c.snapshot().table;
        let (p0, s) = (&t.portals[0], &t.portals[0].sessions[0]);
        assert_eq!((s.outstanding, p0.load.outstanding), (2, 2));
        assert_eq!((p0.load.cpu_busy, p0.load.link_capacity), (0.25, Some(1e6)));
        assert_eq!(p0.load.link_utilisation(), Some(0.5));
        assert!(c.portal_stats(PortalId(2)).is_none());
        assert_eq!(t.portals[1].load, balancer::PortalLoad::default());
    }

    #[test]
    fn a_stopping_target_refuses_logins_and_asks_every_session_to_log_out() {
        let c = control();
        let (tx1, mut rx1) = mpsc::unbounded_channel();
        let (tx2, mut rx2) = mpsc::unbounded_channel();
        let (a, _) = c.session_started(PortalId(0), "iqn.i1", "iqn.t1", tx1);
        c.session_started(PortalId(1), "iqn.i2", "iqn.t1", tx2);
        assert!(matches!(
            c.login_decision(PortalId(0), "iqn.i3", "iqn.t1"),
            LoginDecision::Accept { .. }
        ));
        assert_eq!(c.session_count(), 2);
        assert_eq!(c.begin_stop(3), 2);
        assert!(c.is_stopping());
        for rx in [&mut rx1, &mut rx2] {
            assert_eq!(
                rx.try_recv().unwrap(),
                SessionCommand::RequestLogout { time2logout: 3 }
            );
        }
        assert_eq!(
            c.login_decision(PortalId(0), "iqn.i3", "iqn.t1"),
            LoginDecision::Unavailable
        );
        c.session_ended(a, "logout");
        assert_eq!(c.session_count(), 1);
    }

    #[test]
    fn the_shell_is_a_login_policy_with_fresh_tsihs() {
        let c = control();
        c.place("iqn.i1", "iqn.t1", PortalId(1));
        let mut policy: &Control = &c;
        assert_eq!(
            LoginPolicy::login_decision(&mut policy, PortalId(0), "iqn.i1", "iqn.t1"),
            LoginDecision::Redirect {
                address: "127.0.0.2:3260".into()
            }
        );
        let a = LoginPolicy::next_tsih(&mut policy);
        let b = c.next_tsih();
        assert!(a != 0 && b != 0 && a != b);
        assert_eq!(c.events.snapshot()[0].kind.label(), "redirected");
        // SendTargets follows the registrations the plane holds deleted.
        assert!(LoginPolicy::withheld_portals(&mut policy, "iqn.t1").is_empty());
        c.delete_registration("iqn.t1", PortalId(0));
        assert_eq!(
            LoginPolicy::withheld_portals(&mut policy, "iqn.t1"),
            [PortalId(0)]
        );
        c.restore_registration("iqn.t1", PortalId(0));
        assert!(LoginPolicy::withheld_portals(&mut policy, "iqn.t1").is_empty());
    }
}
