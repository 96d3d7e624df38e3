//! The target process: the sans-IO connection cores ([`Connection`]), one per link, each with
//! the shell the real portal threads put around it (`iscsi-target`'s `ConnectionShell`: SCSI
//! requests run inline on [`LunTable`]s backed by memory, events become [`ControlPlane`]
//! bookkeeping), the control plane itself, and the balancer loop ([`BalanceLoop`]) whose
//! actions are carried out as `iscsi-target`'s `balance::execute` does: through the iSNS
//! [`Registrar`] and the session's connection.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use balancer::{BalancePolicy, Balancer, PortalId};
use bytes::BytesMut;
use iscsi_proto::params::SessionType;
use iscsi_target_core::{
    Action, BalanceLoop, Catalog, CatalogPortal, CatalogTarget, CloseReason, Connection,
    ControlPlane, Event, PortalInfo, SessionCommand,
};
use scsi::{BlockDevice, Identity, LogicalUnit, LunTable, MemDevice};

use crate::isns::{IsnsServer, Registrar};
use crate::link::{ConnId, Links};

/// First bytes of a block written by a simulated initiator; the command's id follows.
pub const BLOCK_MAGIC: [u8; 8] = *b"PSIMBLK\0";

/// A memory device that counts, per command id, the blocks written with [`BLOCK_MAGIC`]:
/// how many times the target executed each WRITE.
#[derive(Debug)]
pub struct RecordingDevice {
    mem: MemDevice,
    blocks: u64,
    writes: Mutex<BTreeMap<u64, u32>>,
    duplicates: Mutex<Vec<u64>>,
}

impl RecordingDevice {
    pub fn new(blocks: u64) -> Self {
        RecordingDevice {
            mem: MemDevice::new(blocks),
            blocks,
            writes: Mutex::new(BTreeMap::new()),
            duplicates: Mutex::new(Vec::new()),
        }
    }

    /// How many times the WRITE of command `id` was executed.
    pub fn executions(&self, id: u64) -> u32 {
        self.lock().get(&id).copied().unwrap_or(0)
    }

    /// Ids of the WRITEs executed more than once, in the order the second execution came.
    pub fn duplicates(&self) -> Vec<u64> {
        self.duplicates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Every command id written, with its execution count.
    pub fn all_executions(&self) -> BTreeMap<u64, u32> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, u32>> {
        self.writes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl BlockDevice for RecordingDevice {
    fn num_blocks(&self) -> u64 {
        self.blocks
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.mem.read_at(offset, buf)
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.mem.write_at(offset, buf)?;
        let mut w = self.lock();
        for block in buf.chunks(self.block_size() as usize) {
            if let Some(id) = block_id(block) {
                let n = w.entry(id).or_default();
                *n += 1;
                if *n == 2 {
                    self.duplicates
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(id);
                }
            }
        }
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        self.mem.flush()
    }
}

/// The command id in a block written by a simulated initiator.
pub fn block_id(block: &[u8]) -> Option<u64> {
    if block.get(..8)? != BLOCK_MAGIC {
        return None;
    }
    Some(u64::from_be_bytes(block.get(8..16)?.try_into().ok()?))
}

/// One connection core and what the shell keeps next to it.
#[derive(Debug)]
struct Shell {
    conn: Connection,
    portal: PortalId,
    session: Option<u64>,
    luns: Option<Arc<LunTable>>,
}

/// The target process.
#[derive(Debug)]
pub struct SimTarget {
    pub plane: ControlPlane,
    pub balance: Option<BalanceLoop>,
    pub registrar: Registrar,
    catalog: Arc<Catalog>,
    luns: HashMap<String, Arc<LunTable>>,
    devices: BTreeMap<String, Arc<RecordingDevice>>,
    shells: BTreeMap<ConnId, Shell>,
}

impl SimTarget {
    /// A target serving every one of `targets` (one LUN of `blocks` blocks each) through every
    /// portal, balancing with `balance` if given.
    pub fn new(
        portals: Vec<PortalInfo>,
        targets: Vec<String>,
        blocks: u64,
        balance: Option<BalancePolicy>,
    ) -> Self {
        let registrar = Registrar::new(portals.first().map(|p| p.address));
        let mut luns = HashMap::new();
        let mut devices = BTreeMap::new();
        for t in &targets {
            let dev = Arc::new(RecordingDevice::new(blocks));
            let mut table = LunTable::new();
            let id = Identity::new(t, 0).expect("a valid target name");
            table
                .insert(0, Arc::new(LogicalUnit::new(dev.clone(), id)))
                .expect("LUN 0");
            luns.insert(t.clone(), Arc::new(table));
            devices.insert(t.clone(), dev);
        }
        let catalog = Arc::new(Catalog {
            targets: targets
                .iter()
                .map(|name| CatalogTarget {
                    name: name.clone(),
                    luns: luns
                        .get(name)
                        .map(|t: &Arc<LunTable>| t.luns())
                        .unwrap_or_default(),
                    ..Default::default()
                })
                .collect(),
            portals: portals
                .iter()
                .map(|p| CatalogPortal {
                    id: p.id,
                    address: p.address,
                    tag: p.tag,
                })
                .collect(),
            ..Default::default()
        });
        let plane = ControlPlane::new(portals, targets, Some("sim".into()), balance.clone());
        SimTarget {
            plane,
            balance: balance.map(|policy| BalanceLoop::new(Balancer::new(policy))),
            registrar,
            catalog,
            luns,
            devices,
            shells: BTreeMap::new(),
        }
    }

    /// The device behind `target`'s LUN 0.
    pub fn device(&self, target: &str) -> Option<&Arc<RecordingDevice>> {
        self.devices.get(target)
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        self.shells.len()
    }

    /// Reads what arrived on every link, runs it and writes the answers; true if anything
    /// happened.
    pub fn poll(&mut self, links: &mut Links, now: Instant, now_ms: u64) -> bool {
        let mut any = false;
        for id in links.ids() {
            let Some(link) = links.get_mut(id) else {
                continue;
            };
            if !self.shells.contains_key(&id) {
                if link.target_gone {
                    continue;
                }
                let conn = Connection::new(self.catalog.clone(), link.portal, now);
                self.shells.insert(
                    id,
                    Shell {
                        conn,
                        portal: link.portal,
                        session: None,
                        luns: None,
                    },
                );
                any = true;
            }
            if !link.to_target.is_empty() {
                let before = link.to_target.len();
                self.feed(id, &mut link.to_target, now, now_ms);
                any |= link.to_target.len() != before;
            }
            any |= self.service(id, links, now_ms);
        }
        any
    }

    /// Feeds `buf` to the connection until no whole PDU is left (`ConnectionShell::feed`).
    fn feed(&mut self, id: ConnId, buf: &mut BytesMut, now: Instant, now_ms: u64) {
        let Some(s) = self.shells.get_mut(&id) else {
            return;
        };
        loop {
            self.plane.set_now(now_ms);
            s.conn.on_bytes(buf, now, &mut self.plane);
            let events = handle_events(s, &mut self.plane, &self.luns, now_ms);
            let work = run_scsi(s, &mut self.plane);
            if !events && !work {
                return;
            }
        }
    }

    /// Writes the connection's output to its link and closes it when the core or the peer
    /// did; true if anything happened.
    fn service(&mut self, id: ConnId, links: &mut Links, now_ms: u64) -> bool {
        let Some(s) = self.shells.get_mut(&id) else {
            return false;
        };
        let mut any = false;
        let Some(link) = links.get_mut(id) else {
            return false;
        };
        if s.conn.has_output() {
            any = true;
            let mut out = Vec::new();
            s.conn.poll_transmit(&mut out);
            for (pdu, digests) in out {
                match pdu.encode_header(&mut link.out_to_initiator, digests) {
                    Ok(payload) => {
                        link.out_to_initiator.extend_from_slice(&payload.data);
                        link.out_to_initiator
                            .extend_from_slice(payload.trailer.as_slice());
                    }
                    Err(e) => panic!("cannot encode a response: {e}"),
                }
            }
        }
        let why = match s.conn.close_reason() {
            Some(r) => Some(r.clone()),
            None if link.initiator_closed => Some(CloseReason::Transport(
                "connection closed by the initiator".into(),
            )),
            None => None,
        };
        if let Some(why) = why {
            let mut s = self.shells.remove(&id).expect("present");
            links.close_target(id);
            s.conn.on_closed(why);
            run_scsi(&mut s, &mut self.plane);
            handle_events(&mut s, &mut self.plane, &self.luns, now_ms);
            any = true;
        }
        any
    }

    /// The earliest deadline of any connection.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.shells
            .values()
            .filter_map(|s| s.conn.poll_timeout())
            .min()
    }

    /// Runs the connections' timers that are due.
    pub fn handle_timeout(&mut self, links: &mut Links, now: Instant, now_ms: u64) {
        let due: Vec<ConnId> = self
            .shells
            .iter()
            .filter(|(_, s)| s.conn.poll_timeout().is_some_and(|t| t <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if let Some(s) = self.shells.get_mut(&id) {
                s.conn.handle_timeout(now);
            }
            self.service(id, links, now_ms);
        }
    }

    /// One interval of the balancer loop: a step, then its actions in order, each result
    /// reported back before the next (`iscsi-target`'s `balance::run` and `execute`).
    pub fn balance_tick(
        &mut self,
        links: &mut Links,
        isns: &mut IsnsServer,
        now: Instant,
        now_ms: u64,
    ) {
        let Some(mut balance) = self.balance.take() else {
            return;
        };
        self.plane.set_now(now_ms);
        let actions = balance.step(&mut self.plane, now_ms);
        let secs = now_ms / 1000;
        for action in actions {
            match action {
                Action::DeleteRegistration { target, portal } => {
                    let result = match self.plane.portal(portal).map(|p| p.address) {
                        Some(a) => self.registrar.set_tag(isns, &target, a, None, secs),
                        None => Err(format!("unknown portal {portal}")),
                    };
                    balance.registration_deleted(&mut self.plane, &target, portal, result, now_ms);
                }
                Action::RequestLogout {
                    session_id,
                    time2logout,
                } => {
                    let shell = self
                        .shells
                        .iter_mut()
                        .find(|(_, s)| s.session == Some(session_id));
                    let sent = match shell {
                        Some((id, s)) => {
                            s.conn
                                .on_command(SessionCommand::RequestLogout { time2logout }, now);
                            Some(*id)
                        }
                        None => None,
                    };
                    balance.logout_request_sent(
                        &mut self.plane,
                        session_id,
                        sent.is_some(),
                        now_ms,
                    );
                    if let Some(id) = sent {
                        self.service(id, links, now_ms);
                    }
                }
                Action::RestoreRegistration { target, portal } => {
                    let result = match self.plane.portal(portal).map(|p| (p.address, p.tag)) {
                        Some((a, tag)) => {
                            self.registrar
                                .set_tag(isns, &target, a, Some(u32::from(tag)), secs)
                        }
                        None => Err(format!("unknown portal {portal}")),
                    };
                    balance.registration_restored(&mut self.plane, &target, portal, result, now_ms);
                }
            }
        }
        self.balance = Some(balance);
    }

    /// Sends the whole registration (at start and every refresh interval).
    pub fn register(&mut self, isns: &mut IsnsServer, now_ms: u64) -> Result<(), String> {
        self.registrar
            .register_all(&self.plane, isns, now_ms / 1000)
    }
}

/// Runs every pending SCSI request on the session's logical units with the portal shell's own
/// code; true if there was any.
fn run_scsi(s: &mut Shell, plane: &mut ControlPlane) -> bool {
    let session = s.session;
    iscsi_target::target_set::run_scsi(&mut s.conn, s.luns.as_deref(), || {
        if let Some(id) = session {
            plane.add_commands(id, 1);
        }
    })
}

/// Records the core's events with the control plane (`ConnectionShell::handle_events`); true
/// if there was any.
fn handle_events(
    s: &mut Shell,
    plane: &mut ControlPlane,
    targets: &HashMap<String, Arc<LunTable>>,
    now_ms: u64,
) -> bool {
    let mut any = false;
    while let Some(ev) = s.conn.poll_event() {
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
                let id = plane.session_started(s.portal, &initiator, &target, now_ms);
                s.luns = targets.get(&target).cloned();
                if let Some(l) = &s.luns {
                    l.nexus_established(id);
                    l.nexus_port(
                        id,
                        scsi::persistent_reservation::NexusPort {
                            initiator: scsi::persistent_reservation::InitiatorPort::new(
                                &initiator, isid,
                            ),
                            tpgt: portal_group_tag,
                        },
                    );
                }
                s.session = Some(id);
                s.conn.set_nexus(id);
            }
            // The simulated targets do not authenticate.
            Event::FullFeature { .. } | Event::AuthenticationFailed { .. } => {}
            Event::Ended { why } => {
                if let Some(id) = s.session.take() {
                    plane.session_closed(id, &why, now_ms);
                }
            }
        }
    }
    any
}
