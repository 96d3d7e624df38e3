//! The target's control plane, sans-IO: the configuration table of sessions (patent FIG. 2), the
//! placements used to redirect logins, the registration table (FIG. 3) and the event log.
//!
//! [`ControlPlane`] holds no lock, reads no clock and sends nothing: every method that needs the
//! time takes `now_ms` (milliseconds; the target's shell passes the Unix time, a test any virtual
//! clock). Command counts come in from the data path through [`ControlPlane::record_commands`]
//! (the shell keeps one atomic counter per session and copies it in before sampling, so the data
//! path never takes the control plane's lock); so do each session's bytes and outstanding
//! commands ([`ControlPlane::record_session`]) and each portal's measured load
//! ([`ControlPlane::record_portal_load`], smoothed by the portal's shell with a
//! [`measure::PortalMeter`]). [`BalanceLoop`] turns the balancer's decisions into
//! [`Action`]s for the shell to carry out, in the patent's order, and records what came of them.

mod balance;
mod events;
pub mod measure;
pub mod operator;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use balancer::{
    AdminSnapshot, BalancePolicy, ConfigTable, Event, EventKind, IsnsContact, MoveRecord, PortalId,
    PortalLoad, PortalRow, RegistrationRow, SessionEntry,
};

use crate::event::CloseReason;
use crate::policy::{LoginDecision, LoginPolicy};
use measure::RateMeter;

pub use balance::{Action, BalanceLoop, TIME2LOGOUT};
pub use events::{EVENT_LOG_CAPACITY, EventLog};
pub use operator::{OperatorError, OperatorMove, OperatorPlan, OperatorState};

/// IOPS are measured over windows of at least this many milliseconds: a sample taken sooner
/// after the previous one keeps the previous figure.
pub const MIN_SAMPLE_WINDOW_MS: u64 = 200;

/// A portal as the control plane knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalInfo {
    pub id: PortalId,
    pub address: SocketAddr,
    /// Portal Group Tag: each portal is its own portal group (one processor each).
    pub tag: u16,
}

/// What the data path counts for one session: running totals, and the commands outstanding
/// now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionCounters {
    /// SCSI commands completed.
    pub commands: u64,
    /// Bytes the target sent on the session's connection (READ data, responses).
    pub bytes_sent: u64,
    /// Bytes the target received on it (WRITE data, commands).
    pub bytes_received: u64,
    /// SCSI commands received and not yet answered.
    pub outstanding: u32,
}

/// One live normal session.
#[derive(Debug, Clone)]
struct SessionRecord {
    portal: PortalId,
    initiator: String,
    target: String,
    login_ms: u64,
    /// SCSI commands completed, as last reported by the data path.
    commands: u64,
    /// Commands and time at the last sample, and the IOPS measured then.
    sampled_commands: u64,
    sampled_ms: u64,
    iops: f64,
    /// Bytes sent and received, outstanding commands, as last reported by the data path.
    bytes_sent: u64,
    bytes_received: u64,
    outstanding: u32,
    /// Smoothed rates: bytes sent, bytes received, commands (for the session's work).
    sent: RateMeter,
    received: RateMeter,
    command_rate: RateMeter,
}

/// What the control plane knows of a portal's load: its link's capacity (configured or
/// the interface's speed) and the load its shell last measured.
#[derive(Debug, Clone, Default)]
struct PortalMeasure {
    link_capacity: Option<f64>,
    load: PortalLoad,
}

/// The configuration table, placements, registrations and event log of one target.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    portals: Vec<PortalInfo>,
    targets: Vec<String>,
    isns: Option<String>,
    balance: Option<BalancePolicy>,
    next_session: u64,
    next_tsih: u16,
    /// The time [`LoginPolicy::login_decision`] records events at (see [`ControlPlane::set_now`]).
    now_ms: u64,
    /// Live sessions, in id (login) order.
    sessions: BTreeMap<u64, SessionRecord>,
    /// Per portal, in `portals` order.
    measures: Vec<PortalMeasure>,
    /// Where the balancer placed (initiator, target): logins elsewhere are redirected there.
    placements: HashMap<(String, String), PortalId>,
    registrations: Vec<RegistrationRow>,
    isns_contact: Option<IsnsContact>,
    events: EventLog,
    /// Logout requests delivered, and sessions dropped for ignoring one, since the start.
    logout_requests: u64,
    forced_moves: u64,
    /// Each (initiator, target)'s logout requests of the last twice-the-cooldown, and the
    /// ping-pongs among all requests since the start ([`balancer::ping_pongs`]).
    recent_moves: HashMap<(String, String), Vec<MoveRecord>>,
    ping_pongs: u64,
    /// Whether a session's I_T nexus holds a reservation or a persistent-reservation
    /// registration (asked of the logical units when the table is built).
    reservation_probe: ReservationProbe,
    /// What the operator set: pause, pins, drained portals ([`operator`]).
    operator: OperatorState,
}

/// Asks the logical units whether session `id` holds a reservation or registration.
#[derive(Clone, Default)]
pub struct ReservationProbe(Option<std::sync::Arc<dyn Fn(u64) -> bool + Send + Sync>>);

impl ReservationProbe {
    pub fn new(f: impl Fn(u64) -> bool + Send + Sync + 'static) -> Self {
        ReservationProbe(Some(std::sync::Arc::new(f)))
    }
    fn holds(&self, session_id: u64) -> bool {
        self.0.as_ref().is_some_and(|f| f(session_id))
    }
}

impl std::fmt::Debug for ReservationProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "ReservationProbe"
        } else {
            "NoReservationProbe"
        })
    }
}

/// (initiator, target) pairs [`ControlPlane::logout_request_delivered`] keeps recent moves of
/// before it forgets those whose moves are all older than twice the cooldown.
const RECENT_MOVES_NEXUSES: usize = 4096;

impl ControlPlane {
    /// A control plane for `portals` serving every one of `targets` through every portal, all
    /// registered. `isns` and `balance` are only reported in the [`AdminSnapshot`].
    pub fn new(
        portals: Vec<PortalInfo>,
        targets: Vec<String>,
        isns: Option<String>,
        balance: Option<BalancePolicy>,
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
        ControlPlane {
            measures: vec![PortalMeasure::default(); portals.len()],
            portals,
            targets,
            isns,
            balance,
            next_session: 1,
            next_tsih: 1,
            now_ms: 0,
            sessions: BTreeMap::new(),
            placements: HashMap::new(),
            registrations,
            isns_contact: None,
            events: EventLog::default(),
            logout_requests: 0,
            recent_moves: HashMap::new(),
            ping_pongs: 0,
            forced_moves: 0,
            reservation_probe: ReservationProbe::default(),
            operator: OperatorState::default(),
        }
    }

    /// How the table learns which sessions hold a reservation or registration
    /// ([`SessionEntry::holds_reservation`]; the balancer leaves them in place by default).
    pub fn set_reservation_probe(&mut self, probe: ReservationProbe) {
        self.reservation_probe = probe;
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

    /// The served targets are now `targets` (the configuration was reloaded): a new target
    /// is registered through every portal; a removed one loses its registration rows and
    /// placements. Sessions are not touched (their shells close those of removed targets).
    pub fn set_targets(&mut self, targets: Vec<String>) {
        self.registrations.retain(|r| targets.contains(&r.target));
        self.placements.retain(|(_, t), _| targets.contains(t));
        for t in targets.iter().filter(|t| !self.targets.contains(t)) {
            for p in &self.portals {
                self.registrations.push(RegistrationRow {
                    target: t.clone(),
                    portal: p.id,
                    address: p.address.to_string(),
                    tag: p.tag,
                    registered: true,
                });
            }
        }
        self.targets = targets;
    }

    /// Sets the time that [`LoginPolicy`] calls record their events at.
    pub fn set_now(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
    }

    /// The time last given to [`ControlPlane::set_now`].
    pub fn now(&self) -> u64 {
        self.now_ms
    }

    // ---- logins and sessions -----------------------------------------------------------

    /// Decides how to answer a normal-session login for (initiator, target) arriving on
    /// `portal` at `now_ms`: redirected (and recorded) if the balancer placed the pair on
    /// another portal, refused if the target or portal is unknown, accepted otherwise.
    pub fn decide_login(
        &mut self,
        portal: PortalId,
        initiator: &str,
        target: &str,
        now_ms: u64,
    ) -> LoginDecision {
        if !self.targets.iter().any(|t| t == target) {
            return LoginDecision::NotFound;
        }
        let Some(here) = self.portal(portal) else {
            return LoginDecision::NotFound;
        };
        let here_tag = here.tag;
        let placed = if self.is_drained(portal) {
            self.drain_redirect(initiator, target)
        } else {
            self.placement(initiator, target)
        };
        match placed.and_then(|p| self.portal(p)).cloned() {
            Some(there) if there.id != portal => {
                self.events.push(
                    now_ms,
                    EventKind::Redirected {
                        initiator: initiator.into(),
                        target: target.into(),
                        from: portal,
                        to: there.id,
                    },
                    if self.is_drained(portal) {
                        format!(
                            "{portal} is drained; login answered 0x0101 with {} ({})",
                            there.id, there.address
                        )
                    } else {
                        format!(
                            "the balancer placed this initiator on {} ({}); login answered 0x0101",
                            there.id, there.address
                        )
                    },
                );
                LoginDecision::Redirect {
                    address: there.address.to_string(),
                }
            }
            _ => LoginDecision::Accept {
                portal_group_tag: here_tag,
            },
        }
    }

    /// A fresh non-zero Target Session Identifying Handle (RFC 7143 §11.12.6).
    pub fn allocate_tsih(&mut self) -> u16 {
        if self.next_tsih == 0 {
            self.next_tsih = 1;
        }
        let t = self.next_tsih;
        self.next_tsih = self.next_tsih.wrapping_add(1);
        t
    }

    /// Records a normal session that reached full-feature phase at `now_ms`; returns its id.
    pub fn session_started(
        &mut self,
        portal: PortalId,
        initiator: &str,
        target: &str,
        now_ms: u64,
    ) -> u64 {
        let id = self.next_session;
        self.next_session += 1;
        let tau = self.smoothing_tau_ms();
        self.sessions.insert(
            id,
            SessionRecord {
                portal,
                initiator: initiator.into(),
                target: target.into(),
                login_ms: now_ms,
                commands: 0,
                sampled_commands: 0,
                sampled_ms: now_ms,
                iops: 0.0,
                bytes_sent: 0,
                bytes_received: 0,
                outstanding: 0,
                sent: RateMeter::new(tau),
                received: RateMeter::new(tau),
                command_rate: RateMeter::new(tau),
            },
        );
        self.events.push(
            now_ms,
            EventKind::Login {
                initiator: initiator.into(),
                target: target.into(),
                portal,
            },
            format!("session {id} in full-feature phase"),
        );
        id
    }

    /// Records the end of a session (logout or connection loss) at `now_ms`. False if it was
    /// not live.
    pub fn session_ended(&mut self, session_id: u64, why: &str, now_ms: u64) -> bool {
        let Some(r) = self.sessions.remove(&session_id) else {
            return false;
        };
        self.events.push(
            now_ms,
            EventKind::Logout {
                initiator: r.initiator,
                target: r.target,
                portal: r.portal,
            },
            format!("session {session_id}: {why}"),
        );
        true
    }

    /// Records the end of a session at `now_ms`, closed for `why` (as the connection core
    /// reported it). A session dropped because it did not log out when asked
    /// ([`CloseReason::LogoutIgnored`]) is also a forced move: an
    /// [`EventKind::ForcedMove`] with the initiator, the portal, where it was placed and how
    /// long it was given, counted in the snapshot's `forced_moves`. False if it was not live.
    pub fn session_closed(&mut self, session_id: u64, why: &CloseReason, now_ms: u64) -> bool {
        let record = self.sessions.get(&session_id).cloned();
        if !self.session_ended(session_id, &why.to_string(), now_ms) {
            return false;
        }
        if let (
            Some(r),
            CloseReason::LogoutIgnored {
                time2logout,
                waited,
            },
        ) = (record, why)
        {
            self.forced_moves += 1;
            let to = self
                .placement(&r.initiator, &r.target)
                .filter(|p| *p != r.portal);
            let waited_ms = u64::try_from(waited.as_millis()).unwrap_or(u64::MAX);
            self.events.push(
                now_ms,
                EventKind::ForcedMove {
                    initiator: r.initiator,
                    target: r.target,
                    from: r.portal,
                    to,
                    time2logout: *time2logout,
                    waited_ms,
                },
                format!(
                    "session {session_id} did not log out within Time2Logout {time2logout} s of the \
                     logout request; dropped (AsyncEvent 2) after {:.1} s",
                    waited.as_secs_f64()
                ),
            );
        }
        true
    }

    /// Counts a logout request delivered to a session (shown beside the forced moves), and
    /// whether it is a ping-pong: the same initiator asked to move again within the cooldown,
    /// or back to a portal it left within twice the cooldown. The balancer never asks for one;
    /// the count is the check an administrator can read.
    pub fn logout_request_delivered(&mut self, m: MoveRecord) {
        self.logout_requests += 1;
        let cooldown = self.balance.as_ref().map_or(0, |b| b.cooldown_ms);
        let window = cooldown.saturating_mul(2);
        let now = m.at_ms;
        if self.recent_moves.len() >= RECENT_MOVES_NEXUSES {
            self.recent_moves.retain(|_, v| {
                v.last()
                    .is_some_and(|r| now.saturating_sub(r.at_ms) < window)
            });
        }
        let list = self
            .recent_moves
            .entry((m.initiator.clone(), m.target.clone()))
            .or_default();
        list.retain(|r| now.saturating_sub(r.at_ms) < window);
        list.push(m);
        let last = list.len() - 1;
        if balancer::ping_pongs(list, cooldown)
            .iter()
            .any(|p| p.later == last)
        {
            self.ping_pongs += 1;
        }
    }

    /// Sessions dropped since the start because they did not log out when asked.
    pub fn forced_moves(&self) -> u64 {
        self.forced_moves
    }

    /// Whether `session_id` is a live session.
    pub fn is_live(&self, session_id: u64) -> bool {
        self.sessions.contains_key(&session_id)
    }

    /// The portal a live session is logged in through.
    pub fn session_portal(&self, session_id: u64) -> Option<PortalId> {
        self.sessions.get(&session_id).map(|r| r.portal)
    }

    /// Sets the number of SCSI commands `session_id` has completed (a running total).
    pub fn record_commands(&mut self, session_id: u64, total: u64) {
        if let Some(r) = self.sessions.get_mut(&session_id) {
            r.commands = total;
        }
    }

    /// Counts `n` more SCSI commands completed by `session_id`.
    pub fn add_commands(&mut self, session_id: u64, n: u64) {
        if let Some(r) = self.sessions.get_mut(&session_id) {
            r.commands += n;
        }
    }

    /// Sets what the data path counted for `session_id` (running totals and outstanding
    /// commands now).
    pub fn record_session(&mut self, session_id: u64, c: SessionCounters) {
        if let Some(r) = self.sessions.get_mut(&session_id) {
            r.commands = c.commands;
            r.bytes_sent = c.bytes_sent;
            r.bytes_received = c.bytes_received;
            r.outstanding = c.outstanding;
        }
    }

    /// Sets the load `portal`'s shell last measured (smoothed; its capacity and outstanding
    /// commands are the plane's).
    pub fn record_portal_load(&mut self, portal: PortalId, load: PortalLoad) {
        if let Some(m) = self.measure_mut(portal) {
            m.load = load;
        }
    }

    /// Sets the capacity of `portal`'s link, in bytes per second each way (None: unknown).
    pub fn set_link_capacity(&mut self, portal: PortalId, bytes_per_s: Option<f64>) {
        if let Some(m) = self.measure_mut(portal) {
            m.link_capacity = bytes_per_s;
        }
    }

    fn measure_mut(&mut self, portal: PortalId) -> Option<&mut PortalMeasure> {
        let i = self.portals.iter().position(|p| p.id == portal)?;
        self.measures.get_mut(i)
    }

    // ---- placements and registrations --------------------------------------------------

    /// Records that (initiator, target) belongs on `portal` from now on.
    /// Time constant of the smoothed load figures, in milliseconds: the balancing policy's
    /// (`--smoothing`), else [`measure::SMOOTHING_TAU_MS`].
    pub fn smoothing_tau_ms(&self) -> u64 {
        self.balance
            .as_ref()
            .map_or(measure::SMOOTHING_TAU_MS, |b| b.smoothing_tau_ms)
    }

    pub fn place(&mut self, initiator: &str, target: &str, portal: PortalId) {
        self.placements
            .insert((initiator.into(), target.into()), portal);
    }

    /// Where the balancer placed (initiator, target), if it did.
    pub fn placement(&self, initiator: &str, target: &str) -> Option<PortalId> {
        self.placements
            .get(&(initiator.to_string(), target.to_string()))
            .copied()
    }

    /// Records that the (target, portal) registration was deleted in iSNS (the patent's step 107).
    pub fn delete_registration(&mut self, target: &str, portal: PortalId) {
        self.set_registered(target, portal, false);
    }

    /// Records that the (target, portal) registration was restored, and forgets the placements
    /// that were made to move sessions of `target` away from `portal` (the patent's step 112).
    pub fn restore_registration(&mut self, target: &str, portal: PortalId) {
        self.set_registered(target, portal, true);
        self.placements
            .retain(|(_, t), p| !(t == target && *p != portal));
    }

    /// Whether (target, portal) is registered as far as the control plane knows.
    pub fn is_registered(&self, target: &str, portal: PortalId) -> bool {
        self.registrations
            .iter()
            .any(|r| r.target == target && r.portal == portal && r.registered)
    }

    /// The portals through which `target` is not registered now (the balancer deleted the
    /// registration): what SendTargets leaves out, on every portal.
    pub fn withheld_portals(&self, target: &str) -> Vec<PortalId> {
        self.registrations
            .iter()
            .filter(|r| r.target == target && (!r.registered || self.is_drained(r.portal)))
            .map(|r| r.portal)
            .collect()
    }

    /// The registration table (FIG. 3).
    pub fn registrations(&self) -> &[RegistrationRow] {
        &self.registrations
    }

    fn set_registered(&mut self, target: &str, portal: PortalId, registered: bool) {
        // Settled either way: an undrain no longer owes this restore.
        self.operator
            .restores_owed
            .retain(|(t, p)| !(t == target && *p == portal));
        for r in self.registrations.iter_mut() {
            if r.target == target && r.portal == portal {
                r.registered = registered;
            }
        }
    }

    // ---- table, events, snapshot -------------------------------------------------------

    /// Measures every session's IOPS since its last sample (windows of at least
    /// [`MIN_SAMPLE_WINDOW_MS`]) and folds the window into its smoothed byte and command
    /// rates ([`measure`]); returns the configuration table.
    pub fn sample(&mut self, now_ms: u64) -> ConfigTable {
        for r in self.sessions.values_mut() {
            let dt = now_ms.saturating_sub(r.sampled_ms);
            if dt >= MIN_SAMPLE_WINDOW_MS {
                let done = r.commands.saturating_sub(r.sampled_commands);
                r.iops = done as f64 * 1000.0 / dt as f64;
                r.sent.update(r.bytes_sent, dt);
                r.received.update(r.bytes_received, dt);
                r.command_rate.update(r.commands, dt);
                r.sampled_commands = r.commands;
                r.sampled_ms = now_ms;
            }
        }
        self.table()
    }

    /// The configuration table as of the last sample (command totals and outstanding
    /// commands as last recorded, each portal's load as its shell last measured it).
    ///
    /// A portal's outstanding commands are its sessions'; a session's `cpu_share` is its
    /// [`measure::work`] (smoothed commands and bytes per second) over the work of all the
    /// portal's sessions — an estimate: the processor's time is not measured per session.
    pub fn table(&self) -> ConfigTable {
        let mut rows: Vec<PortalRow> = self
            .portals
            .iter()
            .zip(&self.measures)
            .enumerate()
            .map(|(i, (p, m))| PortalRow {
                id: p.id,
                address: p.address.to_string(),
                processor: i,
                sessions: Vec::new(),
                load: PortalLoad {
                    link_capacity: m.link_capacity,
                    outstanding: 0,
                    ..m.load.clone()
                },
            })
            .collect();
        let mut work = vec![0.0; rows.len()];
        for (id, r) in &self.sessions {
            if let Some(i) = rows.iter().position(|row| row.id == r.portal) {
                let row = &mut rows[i];
                let (read_bps, write_bps) = (r.sent.value(), r.received.value());
                let w = measure::work(r.command_rate.value(), read_bps + write_bps);
                work[i] += w;
                row.load.outstanding = row.load.outstanding.saturating_add(r.outstanding);
                row.sessions.push(SessionEntry {
                    session_id: *id,
                    initiator: r.initiator.clone(),
                    target: r.target.clone(),
                    login_ms: r.login_ms,
                    iops: r.iops,
                    commands: r.commands,
                    read_bps,
                    write_bps,
                    outstanding: r.outstanding,
                    // Its work for now; divided by the portal's below.
                    cpu_share: w,
                    holds_reservation: self.reservation_probe.holds(*id),
                });
            }
        }
        for (row, total) in rows.iter_mut().zip(work) {
            for s in &mut row.sessions {
                s.cpu_share = if total > 0.0 {
                    s.cpu_share / total
                } else {
                    0.0
                };
            }
        }
        let served = self
            .targets
            .iter()
            .flat_map(|t| self.portals.iter().map(move |p| (t.clone(), p.id)))
            .collect();
        ConfigTable {
            portals: rows,
            served,
        }
    }

    /// Records an event that happened at `now_ms`.
    pub fn push_event(&mut self, now_ms: u64, kind: EventKind, reason: impl Into<String>) -> Event {
        self.events.push(now_ms, kind, reason)
    }

    /// The event log.
    pub fn events(&self) -> &EventLog {
        &self.events
    }

    /// The admin endpoint's document.
    /// Records what the iSNS server answered the full registration at `now_ms`: `Ok` with
    /// what it said, or the error. `portshift status` shows it beside the registrations.
    pub fn isns_answered(&mut self, answer: Result<String, String>, now_ms: u64) {
        let (ok, detail) = match answer {
            Ok(d) => (true, d),
            Err(e) => (false, e),
        };
        self.isns_contact = Some(IsnsContact {
            ok,
            detail,
            at_ms: now_ms,
        });
    }

    /// What the iSNS server last answered the full registration, if it was asked.
    pub fn isns_contact(&self) -> Option<&IsnsContact> {
        self.isns_contact.as_ref()
    }

    pub fn snapshot(&self) -> AdminSnapshot {
        AdminSnapshot {
            isns: self.isns.clone(),
            isns_contact: self.isns_contact.clone(),
            balance: self.balance.clone(),
            table: self.table(),
            registrations: self.registrations.clone(),
            events: self.events.snapshot(),
            logout_requests: self.logout_requests,
            forced_moves: self.forced_moves,
            ping_pongs: self.ping_pongs,
        }
    }
}

/// The control plane answers logins at the time last given to [`ControlPlane::set_now`], and
/// withholds from SendTargets the portals whose registration is deleted.
impl LoginPolicy for ControlPlane {
    fn login_decision(&mut self, portal: PortalId, initiator: &str, target: &str) -> LoginDecision {
        let now = self.now_ms;
        self.decide_login(portal, initiator, target, now)
    }

    fn next_tsih(&mut self) -> u16 {
        self.allocate_tsih()
    }

    fn withheld_portals(&mut self, target: &str) -> Vec<PortalId> {
        ControlPlane::withheld_portals(self, target)
    }
}
