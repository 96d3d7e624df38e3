//! The targets this process serves, and the per-connection glue between a sans-IO
//! [`Connection`] core and the rest of the target: SCSI requests run on the [`LunTable`]s
//! inline, on the portal thread; events become [`Control`] bookkeeping; login questions go to
//! [`Control`], the connection cores' [`LoginPolicy`](iscsi_target_core::LoginPolicy).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use balancer::PortalId;
use bytes::BytesMut;
use iscsi_proto::chap::Credentials;
use iscsi_proto::params::SessionType;
use iscsi_target_core::{
    Access, Catalog, CatalogPortal, CatalogTarget, Connection, Event, ScsiRequest,
};
use scsi::{Asc, LunTable, Residual, ScsiOutcome, Sense};

use crate::auth_throttle::AuthThrottle;
use crate::control::{CommandSender, Control, SessionStats};
use crate::load::{PortalStats, record_service};
use crate::output_budget::{OutputShare, ProcessOutput};
use crate::{LunConfig, TargetAccess};

/// One served target: its logical units and who may log in to it. Rebuilt from the
/// [`crate::TargetConfig`] at start and at every configuration reload (`crate::reload`).
#[derive(Debug, Clone)]
pub struct TargetEntry {
    pub luns: Arc<LunTable>,
    /// The configuration each of `luns` was opened with, by LUN: a reload keeps a unit (and
    /// its reservations and unit attentions) whose configuration is unchanged.
    pub lun_configs: BTreeMap<u16, LunConfig>,
    pub access: TargetAccess,
}

impl TargetEntry {
    /// A target with `luns`, open to every initiator.
    pub fn open(luns: Arc<LunTable>) -> TargetEntry {
        TargetEntry {
            luns,
            lun_configs: BTreeMap::new(),
            access: TargetAccess::default(),
        }
    }
}

/// What the portals serve at one time; a configuration reload swaps it whole.
#[derive(Debug)]
pub struct Served {
    pub targets: HashMap<String, TargetEntry>,
    /// What the connection cores see, discovery sessions' CHAP included.
    pub catalog: Arc<Catalog>,
}

/// The targets served by this process: name → logical units and access, and the catalog
/// the connection cores see. Shared by every portal; replaced whole by a reload
/// ([`TargetSet::replace`]), after which each connection picks up the new one
/// ([`ConnectionShell::refresh`]).
#[derive(Debug)]
pub struct TargetSet {
    pub control: Arc<Control>,
    served: RwLock<Arc<Served>>,
    /// Bumped by every [`TargetSet::replace`]: a connection compares it (one atomic load)
    /// before it looks at `served` again.
    generation: AtomicU64,
    /// Output queued by all the connections, against the process's budget.
    pub output: ProcessOutput,
    /// Recent failed authentications by source address (the delay before answering them).
    pub auth_throttle: AuthThrottle,
}

/// The catalog of `targets` in `names` order, through the control plane's portals.
fn catalog_of(
    control: &Control,
    names: &[String],
    targets: &HashMap<String, TargetEntry>,
    discovery: Access,
) -> Catalog {
    Catalog {
        targets: names
            .iter()
            .map(|name| {
                let entry = targets.get(name);
                CatalogTarget {
                    name: name.clone(),
                    luns: entry.map(|t| t.luns.luns()).unwrap_or_default(),
                    access: entry.map(|t| t.access.clone()).unwrap_or_default(),
                }
            })
            .collect(),
        portals: control
            .portals()
            .iter()
            .map(|p| CatalogPortal {
                id: p.id,
                address: p.address,
                tag: p.tag,
            })
            .collect(),
        discovery,
    }
}

/// Each of `names` that has an entry in `targets`, with its logical units.
fn luns_in_order(
    names: &[String],
    targets: &HashMap<String, TargetEntry>,
) -> Vec<(String, Arc<LunTable>)> {
    names
        .iter()
        .filter_map(|n| Some((n.clone(), targets.get(n)?.luns.clone())))
        .collect()
}

/// The access rules of discovery sessions: CHAP (and its mutual answer), no allow list.
fn discovery_access(chap: Option<Credentials>, mutual_chap: Option<Credentials>) -> Access {
    Access {
        chap,
        mutual_chap,
        allow: None,
    }
}

impl TargetSet {
    /// The targets of the control plane with these logical units, open to every initiator.
    pub fn new(control: Arc<Control>, targets: HashMap<String, Arc<LunTable>>) -> Self {
        let names = control.targets().to_vec();
        let targets = targets
            .into_iter()
            .map(|(n, l)| (n, TargetEntry::open(l)))
            .collect();
        Self::with_entries(control, &names, targets, None, None)
    }

    /// The targets `names` (in this order; the control plane must serve the same) with
    /// their entries, and the discovery credentials.
    pub fn with_entries(
        control: Arc<Control>,
        names: &[String],
        targets: HashMap<String, TargetEntry>,
        discovery_chap: Option<Credentials>,
        discovery_mutual_chap: Option<Credentials>,
    ) -> Self {
        let catalog = catalog_of(
            &control,
            names,
            &targets,
            discovery_access(discovery_chap, discovery_mutual_chap),
        );
        control.set_served_luns(luns_in_order(names, &targets));
        TargetSet {
            control,
            served: RwLock::new(Arc::new(Served {
                targets,
                catalog: Arc::new(catalog),
            })),
            generation: AtomicU64::new(1),
            output: ProcessOutput::default(),
            auth_throttle: AuthThrottle::default(),
        }
    }

    /// What is served now.
    pub fn served(&self) -> Arc<Served> {
        self.served
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The catalog the connection cores see now.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.served().catalog.clone()
    }

    /// Changes at every [`TargetSet::replace`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Serves `names` (in this order) with these entries from now on: the control plane
    /// (registrations, iSNS) follows, new logins see the new catalog, and every connection
    /// switches to it at its next input or tick.
    pub fn replace(
        &self,
        names: &[String],
        targets: HashMap<String, TargetEntry>,
        discovery_chap: Option<Credentials>,
        discovery_mutual_chap: Option<Credentials>,
    ) {
        let catalog = catalog_of(
            &self.control,
            names,
            &targets,
            discovery_access(discovery_chap, discovery_mutual_chap),
        );
        self.control.set_targets(names.to_vec());
        self.control.set_served_luns(luns_in_order(names, &targets));
        *self.served.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Served {
            targets,
            catalog: Arc::new(catalog),
        });
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The same with a process output budget other than
    /// [`crate::output_budget::PROCESS_OUTPUT_BUDGET`].
    pub fn with_output_limit(mut self, limit: usize) -> Self {
        self.output = ProcessOutput::with_limit(limit);
        self
    }
}

/// Output a connection may have queued (Data-In of executed READs not yet written, as
/// [`Connection::queued_bytes`] counts it) before its shell stops executing further commands
/// until that output is written: back-pressure on an initiator that does not read. At most
/// this plus one command's Data-In is buffered per connection. While the process as a whole
/// is over its budget ([`ProcessOutput`]) a connection's budget is 0: any output of its own
/// is written before it runs another command.
pub const OUTPUT_BUDGET: usize = 8 * 1024 * 1024;

/// What a portal keeps next to one connection core: where its session's commands go and
/// how the session is known to the control plane.
pub struct ConnectionShell<'a> {
    set: &'a TargetSet,
    portal: PortalId,
    sender: CommandSender,
    session: Option<u64>,
    /// The session's target, once logged in.
    target: Option<String>,
    /// The [`TargetSet::generation`] this connection last took its catalog and LUNs from.
    generation: u64,
    luns: Option<Arc<LunTable>>,
    stats: Option<Arc<SessionStats>>,
    /// The portal's byte counters.
    portal_stats: Option<&'a PortalStats>,
    /// See [`OUTPUT_BUDGET`].
    budget: usize,
    /// The most output seen queued in the core after a command ran.
    peak_queued: usize,
    /// This connection's output, counted in the process budget until written.
    share: OutputShare<'a>,
    /// A failed authentication not yet logged and delayed by the portal.
    auth_failure: Option<AuthFailure>,
}

/// A login refused for failed authentication (0x0201).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthFailure {
    pub initiator: String,
    pub target: Option<String>,
    pub why: String,
}

impl<'a> ConnectionShell<'a> {
    /// `sender` is where the control plane's commands for the session will go.
    pub fn new(set: &'a TargetSet, portal: PortalId, sender: CommandSender) -> Self {
        ConnectionShell {
            set,
            portal,
            sender,
            session: None,
            target: None,
            generation: 0,
            luns: None,
            stats: None,
            portal_stats: set.control.portal_stats(portal).map(|s| &**s),
            budget: OUTPUT_BUDGET,
            peak_queued: 0,
            share: set.output.share(),
            auth_failure: None,
        }
    }

    /// The failed authentication the last [`ConnectionShell::feed`] met, once: the portal
    /// logs it with the peer's address and delays the answer ([`AuthThrottle`]).
    pub fn take_auth_failure(&mut self) -> Option<AuthFailure> {
        self.auth_failure.take()
    }

    /// The same with an output budget other than [`OUTPUT_BUDGET`].
    pub fn with_budget(mut self, budget: usize) -> Self {
        self.budget = budget;
        self
    }

    /// The most output (in [`Connection::queued_bytes`]) the core had queued after any
    /// command this shell ran: at most the budget plus one command's Data-In when the
    /// output is written each time [`ConnectionShell::feed`] asks for it.
    pub fn peak_queued(&self) -> usize {
        self.peak_queued
    }

    /// Switches `conn` to what the target set serves now if a reload replaced it: the new
    /// catalog, and the session target's new LUN table (a session whose target is gone is
    /// closed by its core and keeps the old table for its nexus loss). One atomic load when
    /// nothing changed; called before each feeding pass and on the portal's tick.
    pub fn refresh(&mut self, conn: &mut Connection) {
        let g = self.set.generation();
        if g == self.generation {
            return;
        }
        self.generation = g;
        let served = self.set.served();
        if !conn.set_catalog(served.catalog.clone()) {
            return;
        }
        if let Some(t) = &self.target {
            self.luns = served.targets.get(t).map(|e| e.luns.clone());
        }
    }

    /// Feeds what was read to `conn`, running its SCSI work and events as they come, until
    /// `buf` holds no whole PDU (or the connection closes) — or until the output queued in
    /// `conn` exceeds the output budget ([`OUTPUT_BUDGET`]): then true, and the caller is
    /// to write the output (waiting for the socket) and call again with the same `buf`
    /// before reading more. The check is O(1) per command.
    ///
    /// `now` is when the bytes in `buf` were read: the commands answered in this pass are
    /// recorded with a service time from `now` to the end of the pass (one clock reading
    /// per pass, [`crate::load`]); the session's outstanding commands are updated.
    #[must_use = "when true, write the queued output and feed again"]
    pub fn feed(&mut self, conn: &mut Connection, buf: &mut BytesMut, now: Instant) -> bool {
        self.refresh(conn);
        let mut answered = 0u64;
        let over = loop {
            let mut policy: &Control = &self.set.control;
            conn.on_bytes(buf, now, &mut policy);
            let events = self.handle_events(conn);
            let budget = self.budget_now();
            let (work, n) = self.run_scsi_counted(conn, budget);
            answered += n;
            let queued = conn.queued_bytes();
            self.share.report(queued);
            self.peak_queued = self.peak_queued.max(queued);
            if queued > budget && !conn.is_closing() {
                break true;
            }
            if !events && !work {
                break false;
            }
        };
        if answered > 0 {
            let us = now.elapsed().as_micros() as u64;
            record_service(us, answered);
            if let Some(p) = self.portal_stats {
                p.commands_answered(us, answered);
            }
        }
        if let Some(s) = &self.stats {
            let outstanding = conn.outstanding_commands().min(u32::MAX as usize) as u32;
            s.outstanding.store(outstanding, Ordering::Relaxed);
        }
        over
    }

    /// Counts `n` bytes read from the connection's socket.
    #[inline]
    pub fn received(&self, n: usize) {
        if let Some(p) = self.portal_stats {
            p.received(n);
        }
        if let Some(s) = &self.stats {
            s.bytes_received.fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    /// Counts `n` bytes read from the connection's socket straight into a write's buffer
    /// (counted by [`ConnectionShell::received`] too).
    #[inline]
    pub fn received_in_place(&self, n: usize) {
        if let Some(p) = self.portal_stats {
            p.received_in_place(n);
        }
    }

    /// Counts `n` bytes written to the connection's socket.
    #[inline]
    pub fn sent(&self, n: usize) {
        if let Some(p) = self.portal_stats {
            p.sent(n);
        }
        if let Some(s) = &self.stats {
            s.bytes_sent.fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    /// The connection is gone because of `why` (unless the core closed it for its own
    /// reason): the session's nexus is released and its end recorded.
    pub fn closed(&mut self, conn: &mut Connection, why: iscsi_target_core::CloseReason) {
        conn.on_closed(why);
        // Commands still pending (held back by the output budget) run so that the nexus
        // loss comes after them; their output, never to be written, is dropped as it comes.
        let mut dropped = Vec::new();
        while self.run_scsi(conn) {
            conn.poll_transmit(&mut dropped);
            dropped.clear();
        }
        self.handle_events(conn);
    }

    /// The output `conn` has left queued was written (or handed to the socket): its share of
    /// the process budget follows.
    pub fn written(&mut self, conn: &Connection) {
        self.share.report(conn.queued_bytes());
    }

    /// This connection's output budget now: 0 while the process is over its own.
    fn budget_now(&self) -> usize {
        if self.share.budget().over() {
            0
        } else {
            self.budget
        }
    }

    /// Runs the pending SCSI requests on the session's logical units, stopping early once the
    /// output queued in `conn` exceeds the output budget; true if there was any.
    pub fn run_scsi(&mut self, conn: &mut Connection) -> bool {
        let budget = self.budget_now();
        self.run_scsi_within(conn, budget)
    }

    fn run_scsi_within(&mut self, conn: &mut Connection, budget: usize) -> bool {
        self.run_scsi_counted(conn, budget).0
    }

    /// [`ConnectionShell::run_scsi_within`], also giving the number of commands answered.
    fn run_scsi_counted(&mut self, conn: &mut Connection, budget: usize) -> (bool, u64) {
        let stats = self.stats.as_deref();
        let mut answered = 0;
        let any = run_scsi_within(conn, self.luns.as_deref(), budget, || {
            answered += 1;
            if let Some(s) = stats {
                s.command_done();
            }
        });
        (any, answered)
    }

    /// Records the core's events with the control plane; true if there was any.
    pub fn handle_events(&mut self, conn: &mut Connection) -> bool {
        let mut any = false;
        while let Some(ev) = conn.poll_event() {
            any = true;
            match ev {
                Event::FullFeature {
                    session_type: SessionType::Normal,
                    initiator,
                    target: Some(target),
                    isid,
                    portal_group_tag,
                    ..
                } => {
                    let port = scsi::persistent_reservation::NexusPort {
                        initiator: scsi::persistent_reservation::InitiatorPort::new(
                            &initiator, isid,
                        ),
                        tpgt: portal_group_tag,
                    };
                    let (id, stats) = self.set.control.session_started(
                        self.portal,
                        &initiator,
                        &target,
                        self.sender.clone(),
                    );
                    self.luns = self
                        .set
                        .served()
                        .targets
                        .get(&target)
                        .map(|e| e.luns.clone());
                    self.target = Some(target);
                    if let Some(l) = &self.luns {
                        l.nexus_established(id);
                        l.nexus_port(id, port);
                    }
                    self.session = Some(id);
                    self.stats = Some(stats);
                    conn.set_nexus(id);
                }
                Event::FullFeature { .. } => {}
                Event::AuthenticationFailed {
                    initiator,
                    target,
                    why,
                } => {
                    self.auth_failure = Some(AuthFailure {
                        initiator,
                        target,
                        why,
                    });
                }
                Event::Ended { why } => {
                    if let Some(id) = self.session.take() {
                        self.set.control.session_closed(id, &why);
                    }
                }
            }
        }
        if let Some(status) = conn.take_login_refusal() {
            self.set.control.logins.refused(status);
        }
        any
    }
}

/// Runs every SCSI request `conn` has pending on `luns` (the session's logical units, `None`
/// before login), inline, handing each command back to the core; calls `done` once per
/// completed command. True if there was any request.
pub fn run_scsi(conn: &mut Connection, luns: Option<&LunTable>, done: impl FnMut()) -> bool {
    run_scsi_within(conn, luns, usize::MAX, done)
}

/// [`run_scsi`], stopping before the next request once `conn` has more than `budget` bytes
/// of output queued ([`Connection::queued_bytes`]); the rest stay pending in `conn`.
pub fn run_scsi_within(
    conn: &mut Connection,
    luns: Option<&LunTable>,
    budget: usize,
    mut done: impl FnMut(),
) -> bool {
    let mut any = false;
    while conn.queued_bytes() <= budget
        && let Some(req) = conn.poll_scsi()
    {
        any = true;
        match req {
            ScsiRequest::Command(mut cmd) => {
                let write = cmd.write;
                let (task, data_out, data_in) = cmd.parts();
                let (outcome, residual) = match luns {
                    Some(l) => l.execute_transfer(&task, write, data_out, data_in),
                    None => (
                        ScsiOutcome::check_condition(Sense::illegal_request(
                            Asc::LOGICAL_UNIT_NOT_SUPPORTED,
                        )),
                        Residual::None,
                    ),
                };
                done();
                conn.on_scsi_complete(cmd, outcome, residual);
            }
            ScsiRequest::LunReset { lun } => luns.into_iter().for_each(|l| l.reset_lun(lun)),
            ScsiRequest::TargetReset => luns.into_iter().for_each(|l| l.reset_all()),
            ScsiRequest::NexusLost { nexus } => {
                luns.into_iter().for_each(|l| l.nexus_lost(nexus));
            }
        }
    }
    any
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::control::two_portals;
    use iscsi_proto::text::TextPairs;
    use iscsi_proto::{Digests, LoginRequest, Pdu, ScsiCommand};
    use iscsi_target_core::CloseReason;
    use scsi::{Identity, LogicalUnit, MemDevice};
    use tokio::sync::mpsc;

    pub(crate) const TARGET: &str = "iqn.2024-01.test:t";

    pub(crate) fn target_set() -> TargetSet {
        target_set_of(64)
    }

    /// The test target with these access rules.
    pub(crate) fn target_set_with(access: TargetAccess) -> TargetSet {
        let set = target_set();
        let mut targets = set.served().targets.clone();
        if let Some(t) = targets.get_mut(TARGET) {
            t.access = access;
        }
        set.replace(&[TARGET.to_string()], targets, None, None);
        set
    }

    /// The test target with one LUN of `blocks` 512-byte blocks in memory.
    pub(crate) fn target_set_of(blocks: u64) -> TargetSet {
        let control = Arc::new(Control::new(two_portals(), vec![TARGET.into()], None, None));
        target_set_of_control(control, TARGET, blocks)
    }

    /// `control`'s target `target` with one LUN of `blocks` 512-byte blocks in memory.
    pub(crate) fn target_set_of_control(
        control: Arc<Control>,
        target: &str,
        blocks: u64,
    ) -> TargetSet {
        let mut luns = LunTable::new();
        let lu = LogicalUnit::new(
            Arc::new(MemDevice::new(blocks)),
            Identity::new(target, 0).unwrap(),
        );
        luns.insert(0, Arc::new(lu)).unwrap();
        TargetSet::new(control, [(target.to_string(), Arc::new(luns))].into())
    }

    fn login(keys: &[(&str, &str)]) -> BytesMut {
        let mut b = BytesMut::new();
        Pdu::LoginRequest(LoginRequest::operational([0x80, 0, 0, 0, 0, 1], 1, keys))
            .encode(&mut b, Digests::NONE)
            .unwrap();
        b
    }

    fn out(conn: &mut Connection) -> Vec<Pdu> {
        let mut v = Vec::new();
        conn.poll_transmit(&mut v);
        v.into_iter().map(|(p, _)| p).collect()
    }

    #[test]
    fn catalog_follows_the_control_plane() {
        let set = target_set();
        assert_eq!(set.catalog().targets[0].name, TARGET);
        assert_eq!(set.catalog().targets[0].luns, [0]);
        assert_eq!(set.catalog().portals.len(), 2);
    }

    #[test]
    fn a_session_is_recorded_counted_and_ended_with_its_reason() {
        let set = target_set();
        let now = Instant::now();
        let (tx, _rx) = mpsc::unbounded_channel();
        let mut conn = Connection::new(set.catalog(), PortalId(0), now);
        let mut shell = ConnectionShell::new(&set, PortalId(0), tx);
        let mut buf = login(&[
            ("InitiatorName", "iqn.i"),
            ("TargetName", TARGET),
            ("AuthMethod", "None"),
        ]);
        let mut cdb = [0u8; 16];
        cdb[0] = scsi::cdb::opcode::READ_10;
        cdb[8] = 1;
        Pdu::ScsiCommand(ScsiCommand {
            final_: true,
            read: true,
            itt: 2,
            edtl: 512,
            cdb,
            ..ScsiCommand::default()
        })
        .encode(&mut buf, Digests::NONE)
        .unwrap();
        assert!(!shell.feed(&mut conn, &mut buf, now));
        let o = out(&mut conn);
        assert!(
            matches!(&o[..], [Pdu::LoginResponse(_), Pdu::DataIn(_)]),
            "{o:?}"
        );
        let table = set.control.sample();
        let s = &table.portals[0].sessions[0];
        assert_eq!((s.initiator.as_str(), s.commands), ("iqn.i", 1));
        shell.closed(
            &mut conn,
            CloseReason::Transport("connection closed by the initiator".into()),
        );
        let events = set.control.events.snapshot();
        let last = events.last().unwrap();
        assert_eq!(last.kind.label(), "logout");
        assert!(
            last.reason.ends_with("connection closed by the initiator"),
            "{}",
            last.reason
        );
        assert!(set.control.sample().portals[0].sessions.is_empty());
    }

    #[test]
    fn a_placed_initiator_is_redirected_by_the_control_plane() {
        let set = target_set();
        set.control.place("iqn.i", TARGET, PortalId(1));
        let (tx, _rx) = mpsc::unbounded_channel();
        let mut conn = Connection::new(set.catalog(), PortalId(0), Instant::now());
        let mut shell = ConnectionShell::new(&set, PortalId(0), tx);
        let mut buf = login(&[("InitiatorName", "iqn.i"), ("TargetName", TARGET)]);
        assert!(!shell.feed(&mut conn, &mut buf, Instant::now()));
        let Some(Pdu::LoginResponse(r)) = out(&mut conn).into_iter().next() else {
            panic!()
        };
        assert_eq!((r.status_class, r.status_detail), (1, 1));
        let t = TextPairs::parse(&r.data).unwrap();
        assert_eq!(t.get("TargetAddress"), Some("127.0.0.2:3260"));
        assert_eq!(conn.close_reason(), Some(&CloseReason::LoginEnded));
    }

    #[test]
    fn commands_released_together_run_within_the_output_budget() {
        let set = target_set();
        let now = Instant::now();
        let (tx, _rx) = mpsc::unbounded_channel();
        let mut conn = Connection::new(set.catalog(), PortalId(0), now);
        let mut shell = ConnectionShell::new(&set, PortalId(0), tx).with_budget(1000);
        let mut buf = login(&[
            ("InitiatorName", "iqn.i"),
            ("TargetName", TARGET),
            ("AuthMethod", "None"),
        ]);
        assert!(!shell.feed(&mut conn, &mut buf, now));
        assert_eq!(out(&mut conn).len(), 1, "login response");
        // CmdSN 1..=5 wait for 0; its arrival releases all six READs of 512 bytes at once.
        for sn in (1..6).chain([0]) {
            let mut cdb = [0u8; 16];
            cdb[0] = scsi::cdb::opcode::READ_10;
            cdb[8] = 1;
            Pdu::ScsiCommand(ScsiCommand {
                final_: true,
                read: true,
                itt: 10 + sn,
                cmd_sn: sn,
                edtl: 512,
                cdb,
                ..ScsiCommand::default()
            })
            .encode(&mut buf, Digests::NONE)
            .unwrap();
        }
        let mut itts = Vec::new();
        let mut rounds = 0;
        loop {
            let over = shell.feed(&mut conn, &mut buf, now);
            assert!(shell.peak_queued() <= 1000 + 512 + iscsi_proto::BHS_LEN);
            itts.extend(out(&mut conn).into_iter().map(|p| p.itt()));
            rounds += 1;
            if !over {
                break;
            }
        }
        assert_eq!(itts, [10, 11, 12, 13, 14, 15]);
        // Two READs (1,120 bytes) exceed the budget each round; a fourth feed finds none left.
        assert_eq!(rounds, 4);
        assert!(buf.is_empty());
    }

    #[test]
    fn send_targets_leaves_out_what_the_control_plane_holds_deleted() {
        let set = target_set();
        let now = Instant::now();
        let ask = |set: &TargetSet| {
            let (tx, _rx) = mpsc::unbounded_channel();
            let mut conn = Connection::new(set.catalog(), PortalId(1), now);
            let mut shell = ConnectionShell::new(set, PortalId(1), tx);
            let mut buf = login(&[
                ("InitiatorName", "iqn.d"),
                ("SessionType", "Discovery"),
                ("AuthMethod", "None"),
            ]);
            Pdu::TextRequest(iscsi_proto::TextRequest {
                immediate: true,
                final_: true,
                itt: 2,
                ttt: iscsi_proto::RESERVED_TAG,
                data: [("SendTargets", "All")]
                    .into_iter()
                    .collect::<TextPairs>()
                    .to_bytes(),
                ..Default::default()
            })
            .encode(&mut buf, Digests::NONE)
            .unwrap();
            assert!(!shell.feed(&mut conn, &mut buf, now));
            let o = out(&mut conn);
            let Some(Pdu::TextResponse(t)) = o.get(1) else {
                panic!("{o:?}")
            };
            TextPairs::parse(&t.data)
                .unwrap()
                .get_all("TargetAddress")
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        assert_eq!(ask(&set), ["127.0.0.1:3260,1", "127.0.0.2:3260,2"]);
        set.control.delete_registration(TARGET, PortalId(0));
        assert_eq!(ask(&set), ["127.0.0.2:3260,2"]);
        set.control.restore_registration(TARGET, PortalId(0));
        assert_eq!(ask(&set), ["127.0.0.1:3260,1", "127.0.0.2:3260,2"]);
    }

    #[test]
    fn a_session_dropped_for_ignoring_a_logout_request_is_a_forced_move() {
        let set = target_set();
        let now = Instant::now();
        let (tx, _rx) = mpsc::unbounded_channel();
        let mut conn = Connection::new(set.catalog(), PortalId(0), now);
        let mut shell = ConnectionShell::new(&set, PortalId(0), tx);
        let mut buf = login(&[
            ("InitiatorName", "iqn.i"),
            ("TargetName", TARGET),
            ("AuthMethod", "None"),
        ]);
        assert!(!shell.feed(&mut conn, &mut buf, now));
        out(&mut conn);
        set.control.place("iqn.i", TARGET, PortalId(1));
        conn.on_command(
            iscsi_target_core::SessionCommand::RequestLogout { time2logout: 2 },
            now,
        );
        let deadline = conn.poll_timeout().unwrap();
        conn.handle_timeout(deadline);
        assert!(conn.is_closing());
        shell.closed(&mut conn, CloseReason::Transport("closed".into()));
        let snap = set.control.snapshot();
        assert_eq!(snap.forced_moves, 1);
        let last = snap.events.last().unwrap();
        assert!(
            matches!(
                &last.kind,
                balancer::EventKind::ForcedMove {
                    from: PortalId(0),
                    to: Some(PortalId(1)),
                    time2logout: 2,
                    ..
                }
            ),
            "{last:?}"
        );
        assert!(set.control.sample().portals[0].sessions.is_empty());
    }
}
