//! Persistent reservations of a logical unit (SPC-4 §5.9): PERSISTENT
//! RESERVE IN (§6.13) and OUT (§6.14), the six reservation types and the
//! commands they block (§5.9.1, table 52), the unit attentions they
//! establish for other I_T nexuses, and the APTPL state (§5.9.4).
//!
//! A registration belongs to an I_T nexus: the iSCSI initiator port
//! (InitiatorName + ISID, §7.6.4.6) and the target port (portal group tag;
//! the target name is the unit's own). The transport tells the unit which
//! port each live session is ([`PersistentReservations::nexus_port`]), so a
//! session that logs in again with the same ISID through a portal of the same
//! portal group is the same I_T nexus and keeps its registration.
//!
//! PREEMPT AND ABORT: the target runs each command to completion inline on
//! its connection and keeps no queued task set for a logical unit, so there
//! are no enabled tasks of the preempted nexuses left to abort (SAM-5 §5.6);
//! commands they send afterwards are refused by the reservation.
//!
//! Sans-IO: APTPL state is serialised with [`PrState::encode`]
//! and handed to a [`PrStore`] the owner supplies (the target keeps it in
//! `<LUN file>.pr`, `iscsi_target::pr_store`).

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::cdb::{be16, be32, be64};
use crate::identity::relative_target_port;
use crate::reservation::Access;
use crate::sense::{Asc, Sense, SenseKey};

/// Most registrations one logical unit keeps; more get INSUFFICIENT
/// REGISTRATION RESOURCES (SPC-4 §5.9.7).
pub const MAX_REGISTRATIONS: usize = 256;
/// Longest PERSISTENT RESERVE OUT parameter list accepted (bytes).
pub const MAX_PARAMETER_LIST: u32 = 64 * 1024;
/// Longest iSCSI name in a TransportID (RFC 7143 §4.2.7.1: 223 bytes).
pub const MAX_NAME_LEN: usize = 223;

/// PERSISTENT RESERVE IN service actions (SPC-4 §6.13.1).
pub mod prin {
    pub const READ_KEYS: u8 = 0x00;
    pub const READ_RESERVATION: u8 = 0x01;
    pub const REPORT_CAPABILITIES: u8 = 0x02;
    pub const READ_FULL_STATUS: u8 = 0x03;
}

/// PERSISTENT RESERVE OUT service actions (SPC-4 §6.14.2).
pub mod prout {
    pub const REGISTER: u8 = 0x00;
    pub const RESERVE: u8 = 0x01;
    pub const RELEASE: u8 = 0x02;
    pub const CLEAR: u8 = 0x03;
    pub const PREEMPT: u8 = 0x04;
    pub const PREEMPT_AND_ABORT: u8 = 0x05;
    pub const REGISTER_AND_IGNORE_EXISTING_KEY: u8 = 0x06;
    pub const REGISTER_AND_MOVE: u8 = 0x07;
}

/// RESERVATIONS PREEMPTED (SPC-4 annex D).
pub const RESERVATIONS_PREEMPTED: Asc = Asc::new(0x2A, 0x03);
/// RESERVATIONS RELEASED.
pub const RESERVATIONS_RELEASED: Asc = Asc::new(0x2A, 0x04);
/// REGISTRATIONS PREEMPTED.
pub const REGISTRATIONS_PREEMPTED: Asc = Asc::new(0x2A, 0x05);
/// INSUFFICIENT REGISTRATION RESOURCES.
pub const INSUFFICIENT_REGISTRATION_RESOURCES: Asc = Asc::new(0x55, 0x04);
/// INVALID RELEASE OF PERSISTENT RESERVATION.
pub const INVALID_RELEASE_OF_PERSISTENT_RESERVATION: Asc = Asc::new(0x26, 0x04);

/// Persistent reservation types (SPC-4 §6.13.3.4, table 169).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrType {
    WriteExclusive = 1,
    ExclusiveAccess = 3,
    WriteExclusiveRegistrantsOnly = 5,
    ExclusiveAccessRegistrantsOnly = 6,
    WriteExclusiveAllRegistrants = 7,
    ExclusiveAccessAllRegistrants = 8,
}

impl PrType {
    /// The type with this code; `None` for obsolete and reserved codes.
    pub fn from_code(code: u8) -> Option<PrType> {
        Some(match code {
            1 => PrType::WriteExclusive,
            3 => PrType::ExclusiveAccess,
            5 => PrType::WriteExclusiveRegistrantsOnly,
            6 => PrType::ExclusiveAccessRegistrantsOnly,
            7 => PrType::WriteExclusiveAllRegistrants,
            8 => PrType::ExclusiveAccessAllRegistrants,
            _ => return None,
        })
    }

    pub fn code(self) -> u8 {
        self as u8
    }

    /// Every registrant is a reservation holder (§5.9.10).
    pub fn all_registrants(self) -> bool {
        matches!(
            self,
            PrType::WriteExclusiveAllRegistrants | PrType::ExclusiveAccessAllRegistrants
        )
    }

    /// Registrants (not only the holder) have full access.
    fn registrants_access(self) -> bool {
        !matches!(self, PrType::WriteExclusive | PrType::ExclusiveAccess)
    }

    /// Reads from nexuses without access are blocked too.
    fn exclusive_access(self) -> bool {
        matches!(
            self,
            PrType::ExclusiveAccess
                | PrType::ExclusiveAccessRegistrantsOnly
                | PrType::ExclusiveAccessAllRegistrants
        )
    }

    /// Registrants-only or all-registrants: releasing it tells the others.
    fn tells_registrants(self) -> bool {
        self.registrants_access()
    }
}

/// An iSCSI initiator port: InitiatorName (compared in lower case, RFC 3722
/// normalises case) and ISID (RFC 7143 §10.12.5).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InitiatorPort {
    pub name: String,
    pub isid: [u8; 6],
}

impl InitiatorPort {
    pub fn new(name: &str, isid: [u8; 6]) -> InitiatorPort {
        InitiatorPort {
            name: name.to_ascii_lowercase(),
            isid,
        }
    }

    /// The ISID as 12 hex digits (TransportIDs, the APTPL file).
    pub fn isid_hex(&self) -> String {
        self.isid.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// TransportID format 01b (SPC-4 §7.6.4.6): "name,i,0xISID", padded.
    pub fn transport_id(&self) -> Vec<u8> {
        let mut s = format!("{},i,0x{}", self.name, self.isid_hex()).into_bytes();
        s.push(0);
        while !s.len().is_multiple_of(4) || s.len() < 20 {
            s.push(0);
        }
        let mut v = vec![0x40 | 0x05, 0];
        v.extend_from_slice(&(s.len() as u16).to_be_bytes());
        v.extend_from_slice(&s);
        v
    }
}

/// The I_T nexus of a session as the transport knows it (SAM-5 §4.6.4).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NexusPort {
    pub initiator: InitiatorPort,
    /// Target portal group tag: the iSCSI target port.
    pub tpgt: u16,
}

/// A TransportID naming iSCSI initiator ports: format 00b names every port
/// of the initiator (`isid` None), 01b one port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportId {
    pub name: String,
    pub isid: Option<[u8; 6]>,
}

impl TransportId {
    /// True when the TransportID names initiator port `p`.
    pub fn matches(&self, p: &InitiatorPort) -> bool {
        self.name == p.name && self.isid.is_none_or(|i| i == p.isid)
    }
}

/// Parse one iSCSI TransportID at the start of `b` (SPC-4 §7.6.4.6); returns
/// it and its length. `at` is its offset in the parameter list, for errors.
pub fn parse_transport_id(b: &[u8], at: usize) -> Result<(TransportId, usize), Sense> {
    let bad = |off: usize| Sense::invalid_field_in_parameter_list((at + off).min(0xFFFF) as u16);
    if b.len() < 4 {
        return Err(Sense::illegal_request(Asc::PARAMETER_LIST_LENGTH_ERROR));
    }
    let format = b[0] >> 6;
    if b[0] & 0x0F != 0x05 || format > 1 {
        return Err(bad(0));
    }
    let add = usize::from(be16(b, 2));
    if add < 4 || !add.is_multiple_of(4) {
        return Err(bad(2));
    }
    let body = b
        .get(4..4 + add)
        .ok_or(Sense::illegal_request(Asc::PARAMETER_LIST_LENGTH_ERROR))?;
    let end = body.iter().position(|&c| c == 0).ok_or(bad(4))?;
    let text = std::str::from_utf8(&body[..end]).map_err(|_| bad(4))?;
    let (name, isid) = if format == 0 {
        (text, None)
    } else {
        let (name, rest) = text
            .rsplit_once(",i,0x")
            .or_else(|| text.rsplit_once(",I,0X"))
            .ok_or(bad(4))?;
        let isid = parse_isid_hex(rest).ok_or(bad(4 + name.len()))?;
        (name, Some(isid))
    };
    // An iSCSI name has no commas, spaces or control characters (RFC 3720 §3.2.6.2, RFC 3722):
    // refused here, so every name kept is one word of the APTPL file's lines.
    let foreign = |c: char| c == ',' || c.is_whitespace() || c.is_control();
    if name.is_empty() || name.len() > MAX_NAME_LEN || name.contains(foreign) {
        return Err(bad(4));
    }
    Ok((
        TransportId {
            name: name.to_ascii_lowercase(),
            isid,
        },
        4 + add,
    ))
}

/// An ISID written as 12 hex digits.
fn parse_isid_hex(hex: &str) -> Option<[u8; 6]> {
    if hex.len() != 12 || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let mut isid = [0u8; 6];
    for (i, o) in isid.iter_mut().enumerate() {
        *o = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(isid)
}

/// One registration: an initiator port through one target port, or through
/// all of them (ALL_TG_PT).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub initiator: InitiatorPort,
    /// None: registered through every target port (ALL_TG_PT).
    pub tpgt: Option<u16>,
    pub key: u64,
}

impl Registration {
    fn matches(&self, n: &NexusPort) -> bool {
        self.initiator == n.initiator && self.tpgt.is_none_or(|t| t == n.tpgt)
    }
    fn same(&self, other: &Registration) -> bool {
        self.initiator == other.initiator && self.tpgt == other.tpgt
    }
}

/// The persistent reservation, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub pr_type: PrType,
    /// The holder's registration (unused for all-registrants types).
    holder: Registration,
}

/// Persistent state of a unit (what APTPL keeps).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrState {
    pub generation: u32,
    pub registrations: Vec<Registration>,
    pub reservation: Option<Held>,
    pub aptpl: bool,
}

/// Where APTPL state goes (beside the LUN's backing file).
pub trait PrStore: Send + Sync + std::fmt::Debug {
    /// Replace the stored state with `bytes` crash-safely (empty: nothing
    /// to persist).
    fn save(&self, bytes: &[u8]) -> io::Result<()>;
}

/// A command's PR verdict.
pub type PrResult = Result<PrOutcome, Sense>;

/// What a PERSISTENT RESERVE command produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrOutcome {
    /// GOOD, with parameter data (PR IN) or none.
    Good(Vec<u8>),
    Conflict,
}

/// Persistent reservations of one logical unit, shared by every portal.
#[derive(Debug, Default)]
pub struct PersistentReservations {
    /// True while a reservation exists (fast path of [`Self::conflicts`]).
    reserved: AtomicBool,
    /// Pending unit attentions (fast path of [`Self::unit_attention`]).
    pending: AtomicUsize,
    inner: Mutex<Inner>,
    store: Option<Arc<dyn PrStore>>,
}

#[derive(Debug, Default)]
struct Inner {
    st: PrState,
    /// Live sessions and their I_T nexus.
    sessions: HashMap<u64, NexusPort>,
    /// Unit attentions for initiator ports (through a target port or all).
    ua: Vec<(InitiatorPort, Option<u16>, Asc)>,
}

fn conflict() -> PrResult {
    Ok(PrOutcome::Conflict)
}

fn good() -> PrResult {
    Ok(PrOutcome::Good(Vec::new()))
}

/// The basic PERSISTENT RESERVE OUT parameter list (SPC-4 §6.14.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProutParams {
    pub key: u64,
    pub sa_key: u64,
    pub spec_i_pt: bool,
    pub all_tg_pt: bool,
    pub aptpl: bool,
    /// SPEC_I_PT TransportIDs.
    pub transport_ids: Vec<TransportId>,
}

/// REGISTER AND MOVE parameter list (SPC-4 §6.14.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoveParams {
    pub key: u64,
    pub sa_key: u64,
    pub unreg: bool,
    pub aptpl: bool,
    pub relative_target_port: u16,
    pub transport_id: TransportId,
}

/// Parse the basic parameter list of `service_action`.
pub fn parse_prout(service_action: u8, data: &[u8]) -> Result<ProutParams, Sense> {
    if data.len() < 24 {
        return Err(Sense::illegal_request(Asc::PARAMETER_LIST_LENGTH_ERROR));
    }
    let flags = data[20];
    let spec_i_pt = flags & 0x08 != 0;
    let all_tg_pt = flags & 0x04 != 0;
    let mut p = ProutParams {
        key: be64(data, 0),
        sa_key: be64(data, 8),
        spec_i_pt,
        all_tg_pt,
        aptpl: flags & 0x01 != 0,
        transport_ids: Vec::new(),
    };
    let registering = matches!(
        service_action,
        prout::REGISTER | prout::REGISTER_AND_IGNORE_EXISTING_KEY
    );
    if (spec_i_pt || all_tg_pt) && !registering {
        return Err(Sense::invalid_field_in_parameter_list(20));
    }
    if !spec_i_pt {
        if data.len() != 24 {
            return Err(Sense::illegal_request(Asc::PARAMETER_LIST_LENGTH_ERROR));
        }
        return Ok(p);
    }
    if data.len() < 28 {
        return Err(Sense::illegal_request(Asc::PARAMETER_LIST_LENGTH_ERROR));
    }
    let len = be32(data, 24) as usize;
    if 28 + len != data.len() {
        return Err(Sense::illegal_request(Asc::PARAMETER_LIST_LENGTH_ERROR));
    }
    let mut at = 28;
    while at < data.len() {
        if p.transport_ids.len() >= MAX_REGISTRATIONS {
            return Err(Sense::illegal_request(INSUFFICIENT_REGISTRATION_RESOURCES));
        }
        let (id, n) = parse_transport_id(&data[at..], at)?;
        p.transport_ids.push(id);
        at += n;
    }
    Ok(p)
}

/// Parse a REGISTER AND MOVE parameter list.
pub fn parse_register_and_move(data: &[u8]) -> Result<MoveParams, Sense> {
    if data.len() < 24 {
        return Err(Sense::illegal_request(Asc::PARAMETER_LIST_LENGTH_ERROR));
    }
    let len = be32(data, 20) as usize;
    if 24 + len != data.len() {
        return Err(Sense::illegal_request(Asc::PARAMETER_LIST_LENGTH_ERROR));
    }
    let (transport_id, n) = parse_transport_id(&data[24..], 24)?;
    if n != len {
        return Err(Sense::illegal_request(Asc::PARAMETER_LIST_LENGTH_ERROR));
    }
    Ok(MoveParams {
        key: be64(data, 0),
        sa_key: be64(data, 8),
        unreg: data[17] & 0x02 != 0,
        aptpl: data[17] & 0x01 != 0,
        relative_target_port: be16(data, 18),
        transport_id,
    })
}

impl PersistentReservations {
    pub fn new() -> PersistentReservations {
        PersistentReservations::default()
    }

    /// With an APTPL store; `saved` is what it held (empty: nothing).
    pub fn with_store(
        store: Arc<dyn PrStore>,
        saved: &[u8],
    ) -> Result<PersistentReservations, String> {
        let pr = PersistentReservations {
            store: Some(store),
            ..PersistentReservations::default()
        };
        if !saved.is_empty() {
            let st = PrState::decode(saved)?;
            pr.reserved
                .store(st.reservation.is_some(), Ordering::Release);
            pr.lock().st = st;
        }
        Ok(pr)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The state now (for status output and tests).
    pub fn state(&self) -> PrState {
        self.lock().st.clone()
    }

    /// Any registration exists (RESERVE(6) then conflicts, SPC-4 §5.9.1).
    pub fn any_registration(&self) -> bool {
        !self.lock().st.registrations.is_empty()
    }

    /// True when the initiator of session `nexus` holds a registration.
    pub fn is_registered(&self, nexus: u64, tpgt: u16) -> bool {
        let g = self.lock();
        let n = g.port(nexus, tpgt);
        g.st.registrations.iter().any(|r| r.matches(&n))
    }

    /// Session `nexus` is the I_T nexus `port` (called at login).
    pub fn nexus_port(&self, nexus: u64, port: NexusPort) {
        self.lock().sessions.insert(nexus, port);
    }

    /// Session `nexus` ended; its registrations stay (SPC-4 §5.9.2).
    pub fn nexus_lost(&self, nexus: u64) {
        self.lock().sessions.remove(&nexus);
    }

    /// True when a command of class `access` from session `nexus` through
    /// `tpgt` must end with RESERVATION CONFLICT (SPC-4 §5.9.1, table 52).
    #[inline]
    pub fn conflicts(&self, nexus: u64, tpgt: u16, access: Access) -> bool {
        if !self.reserved.load(Ordering::Acquire) || matches!(access, Access::Any | Access::Other) {
            return false;
        }
        let g = self.lock();
        let Some(held) = &g.st.reservation else {
            return false;
        };
        let n = g.port(nexus, tpgt);
        if g.has_access(held, &n) {
            return false;
        }
        access == Access::Write || held.pr_type.exclusive_access()
    }

    /// The unit attention for session `nexus` pending on this unit, cleared
    /// once returned; INQUIRY, REPORT LUNS and REQUEST SENSE are exempt.
    #[inline]
    pub fn unit_attention(&self, nexus: u64, tpgt: u16, op: u8) -> Option<Sense> {
        use crate::cdb::opcode;
        if self.pending.load(Ordering::Acquire) == 0
            || matches!(
                op,
                opcode::INQUIRY | opcode::REPORT_LUNS | opcode::REQUEST_SENSE
            )
        {
            return None;
        }
        let mut g = self.lock();
        let n = g.port(nexus, tpgt);
        let i =
            g.ua.iter()
                .position(|(p, t, _)| *p == n.initiator && t.is_none_or(|t| t == n.tpgt))?;
        let (_, _, asc) = g.ua.remove(i);
        self.pending.store(g.ua.len(), Ordering::Release);
        Some(Sense::new(SenseKey::UnitAttention, asc))
    }

    /// PERSISTENT RESERVE IN (SPC-4 §6.13): the parameter data.
    pub fn reserve_in(&self, service_action: u8) -> Result<Vec<u8>, Sense> {
        let g = self.lock();
        let st = &g.st;
        let mut out = st.generation.to_be_bytes().to_vec();
        match service_action {
            prin::READ_KEYS => {
                out.extend_from_slice(&((8 * st.registrations.len()) as u32).to_be_bytes());
                for r in &st.registrations {
                    out.extend_from_slice(&r.key.to_be_bytes());
                }
            }
            prin::READ_RESERVATION => match &st.reservation {
                None => out.extend_from_slice(&0u32.to_be_bytes()),
                Some(h) => {
                    out.extend_from_slice(&16u32.to_be_bytes());
                    let key = if h.pr_type.all_registrants() {
                        0
                    } else {
                        st.key_of(&h.holder).unwrap_or(0)
                    };
                    out.extend_from_slice(&key.to_be_bytes());
                    out.extend_from_slice(&[0; 5]);
                    out.push(h.pr_type.code());
                    out.extend_from_slice(&[0; 2]);
                }
            },
            prin::REPORT_CAPABILITIES => {
                out = vec![0, 8];
                // CRH 0, SIP_C, ATP_C, PTPL_C (when APTPL can be stored).
                out.push(0x08 | 0x04 | u8::from(self.store.is_some()));
                // TMV, ALLOW COMMANDS 001b (table 52 applies), PTPL_A.
                out.push(0x80 | 0x10 | u8::from(st.aptpl));
                // PERSISTENT RESERVATION TYPE MASK: WR_EX_AR, EX_AC_RO,
                // WR_EX_RO, EX_AC, WR_EX; EX_AC_AR.
                out.push(0x80 | 0x40 | 0x20 | 0x08 | 0x02);
                out.push(0x01);
                out.extend_from_slice(&[0, 0]);
            }
            prin::READ_FULL_STATUS => {
                let mut descs = Vec::new();
                for r in &st.registrations {
                    descs.extend_from_slice(&r.key.to_be_bytes());
                    descs.extend_from_slice(&[0; 4]);
                    let holder = st.reservation.as_ref().filter(|h| g.is_holder(h, r));
                    descs.push(u8::from(r.tpgt.is_none()) << 1 | u8::from(holder.is_some()));
                    descs.push(holder.map_or(0, |h| h.pr_type.code()));
                    descs.extend_from_slice(&[0; 4]);
                    let rtpi = r.tpgt.map_or(0, relative_target_port);
                    descs.extend_from_slice(&rtpi.to_be_bytes());
                    let tid = r.initiator.transport_id();
                    descs.extend_from_slice(&(tid.len() as u32).to_be_bytes());
                    descs.extend_from_slice(&tid);
                }
                out.extend_from_slice(&(descs.len() as u32).to_be_bytes());
                out.extend_from_slice(&descs);
            }
            _ => return Err(Sense::invalid_field_in_cdb(1, Some(4))),
        }
        Ok(out)
    }

    /// PERSISTENT RESERVE OUT (SPC-4 §6.14) from session `nexus` through
    /// `tpgt`, with the CDB's fields and the parameter list `data`.
    pub fn reserve_out(
        &self,
        nexus: u64,
        tpgt: u16,
        service_action: u8,
        scope: u8,
        type_code: u8,
        data: &[u8],
    ) -> PrResult {
        let mut g = self.lock();
        let me = g.port(nexus, tpgt);
        let before = g.st.clone();
        let r = match service_action {
            prout::REGISTER | prout::REGISTER_AND_IGNORE_EXISTING_KEY => {
                let p = parse_prout(service_action, data)?;
                if p.aptpl && self.store.is_none() {
                    return Err(Sense::invalid_field_in_parameter_list(20));
                }
                g.register(&me, &p, service_action == prout::REGISTER)
            }
            prout::RESERVE | prout::RELEASE | prout::PREEMPT | prout::PREEMPT_AND_ABORT => {
                let p = parse_prout(service_action, data)?;
                if scope != 0 {
                    return Err(Sense::invalid_field_in_cdb(2, Some(7)));
                }
                let ty = PrType::from_code(type_code);
                if service_action == prout::RELEASE {
                    g.release(&me, p.key, ty)
                } else {
                    let ty = ty.ok_or(Sense::invalid_field_in_cdb(2, Some(3)))?;
                    if service_action == prout::RESERVE {
                        g.reserve(&me, p.key, ty)
                    } else {
                        g.preempt(&me, p.key, p.sa_key, ty)
                    }
                }
            }
            prout::CLEAR => {
                let p = parse_prout(service_action, data)?;
                g.clear(&me, p.key)
            }
            prout::REGISTER_AND_MOVE => {
                let p = parse_register_and_move(data)?;
                if p.aptpl && self.store.is_none() {
                    return Err(Sense::invalid_field_in_parameter_list(17));
                }
                g.register_and_move(&me, &p)
            }
            _ => Err(Sense::invalid_field_in_cdb(1, Some(4))),
        };
        if r.is_ok() && g.st != before {
            if let Some(store) = &self.store
                && (g.st.aptpl || before.aptpl)
            {
                let bytes = if g.st.aptpl {
                    g.st.encode()
                } else {
                    Vec::new()
                };
                if let Err(e) = store.save(&bytes) {
                    tracing::warn!("cannot store the persistent reservations (APTPL): {e}");
                    g.st = before;
                    return Err(Sense::new(
                        SenseKey::HardwareError,
                        Asc::INTERNAL_TARGET_FAILURE,
                    ));
                }
            }
            self.reserved
                .store(g.st.reservation.is_some(), Ordering::Release);
        }
        self.pending.store(g.ua.len(), Ordering::Release);
        r
    }
}

impl Inner {
    /// The I_T nexus of session `nexus`; a session the transport did not
    /// name is an initiator port of its own.
    fn port(&self, nexus: u64, tpgt: u16) -> NexusPort {
        self.sessions
            .get(&nexus)
            .cloned()
            .unwrap_or_else(|| NexusPort {
                initiator: InitiatorPort::new(&format!("session:{nexus}"), [0; 6]),
                tpgt,
            })
    }

    fn reg_of(&self, n: &NexusPort) -> Option<usize> {
        self.st.registrations.iter().position(|r| r.matches(n))
    }

    fn is_holder(&self, held: &Held, r: &Registration) -> bool {
        held.pr_type.all_registrants() || held.holder.same(r)
    }

    fn has_access(&self, held: &Held, n: &NexusPort) -> bool {
        match self.reg_of(n) {
            None => false,
            Some(i) => {
                held.pr_type.registrants_access() || self.is_holder(held, &self.st.registrations[i])
            }
        }
    }

    /// Queue `asc` for the initiator ports of the registrations `who` (once each).
    fn tell(&mut self, who: Vec<Registration>, asc: Asc) {
        for r in who {
            if !self
                .ua
                .iter()
                .any(|(p, t, a)| *p == r.initiator && *t == r.tpgt && *a == asc)
            {
                self.ua.push((r.initiator, r.tpgt, asc));
            }
        }
    }

    fn others(&self, me: &NexusPort) -> Vec<Registration> {
        self.st
            .registrations
            .iter()
            .filter(|r| !r.matches(me))
            .cloned()
            .collect()
    }

    /// Remove registration `i`; releases the reservation it held (§5.9.11.3).
    fn unregister(&mut self, i: usize) {
        let r = self.st.registrations.remove(i);
        let Some(held) = self.st.reservation.clone() else {
            return;
        };
        let released = if held.pr_type.all_registrants() {
            self.st.registrations.is_empty()
        } else {
            held.holder.same(&r)
        };
        self.rehome_all_registrants();
        if released {
            self.st.reservation = None;
            if held.pr_type.tells_registrants() && !held.pr_type.all_registrants() {
                let all = self.st.registrations.clone();
                self.tell(all, RESERVATIONS_RELEASED);
            }
        }
    }

    fn bump(&mut self) {
        self.st.generation = self.st.generation.wrapping_add(1);
    }

    /// REGISTER / REGISTER AND IGNORE EXISTING KEY (§5.9.7).
    fn register(&mut self, me: &NexusPort, p: &ProutParams, check_key: bool) -> PrResult {
        let tpgt = (!p.all_tg_pt).then_some(me.tpgt);
        match self.reg_of(me) {
            None => {
                if check_key && p.key != 0 {
                    return conflict();
                }
                if p.sa_key == 0 {
                    if p.spec_i_pt {
                        return Err(Sense::invalid_field_in_parameter_list(8));
                    }
                    return good();
                }
                if !check_key && p.spec_i_pt {
                    return Err(Sense::invalid_field_in_parameter_list(20));
                }
                // The specified ports: each must be named exactly once and
                // not registered yet; format 00b names the initiator's ports
                // this nexus knows (its own ISID when it is the same name).
                let mut new = vec![Registration {
                    initiator: me.initiator.clone(),
                    tpgt,
                    key: p.sa_key,
                }];
                for id in &p.transport_ids {
                    let initiator = match id.isid {
                        Some(isid) => InitiatorPort {
                            name: id.name.clone(),
                            isid,
                        },
                        None if id.name == me.initiator.name => continue,
                        None => InitiatorPort {
                            name: id.name.clone(),
                            isid: [0; 6],
                        },
                    };
                    let r = Registration {
                        initiator,
                        tpgt,
                        key: p.sa_key,
                    };
                    if new.iter().any(|x| x.same(&r)) {
                        continue;
                    }
                    if self.st.registrations.iter().any(|x| x.same(&r)) {
                        return Err(Sense::invalid_field_in_parameter_list(24));
                    }
                    new.push(r);
                }
                if self.st.registrations.len() + new.len() > MAX_REGISTRATIONS {
                    return Err(Sense::illegal_request(INSUFFICIENT_REGISTRATION_RESOURCES));
                }
                self.st.registrations.extend(new);
                self.st.aptpl = p.aptpl;
                self.bump();
                good()
            }
            Some(i) => {
                if check_key && p.key != self.st.registrations[i].key {
                    return conflict();
                }
                if p.spec_i_pt {
                    return Err(Sense::invalid_field_in_parameter_list(20));
                }
                if p.sa_key == 0 {
                    self.unregister(i);
                } else {
                    self.st.registrations[i].key = p.sa_key;
                }
                self.st.aptpl = p.aptpl;
                self.bump();
                good()
            }
        }
    }

    /// The registration of `me` when it has `key`.
    fn registered_with(&self, me: &NexusPort, key: u64) -> Option<usize> {
        self.reg_of(me)
            .filter(|&i| self.st.registrations[i].key == key)
    }

    /// RESERVE (§5.9.9).
    fn reserve(&mut self, me: &NexusPort, key: u64, ty: PrType) -> PrResult {
        let Some(i) = self.registered_with(me, key) else {
            return conflict();
        };
        let mine = self.st.registrations[i].clone();
        match &self.st.reservation {
            Some(h) if self.is_holder(h, &mine) && h.pr_type == ty => good(),
            Some(_) => conflict(),
            None => {
                self.st.reservation = Some(Held {
                    pr_type: ty,
                    holder: mine,
                });
                good()
            }
        }
    }

    /// RELEASE (§5.9.11.2).
    fn release(&mut self, me: &NexusPort, key: u64, ty: Option<PrType>) -> PrResult {
        let Some(i) = self.registered_with(me, key) else {
            return conflict();
        };
        let mine = self.st.registrations[i].clone();
        let Some(h) = self.st.reservation.clone() else {
            return good();
        };
        if !self.is_holder(&h, &mine) {
            return good();
        }
        if Some(h.pr_type) != ty {
            return Err(Sense::illegal_request(
                INVALID_RELEASE_OF_PERSISTENT_RESERVATION,
            ));
        }
        self.st.reservation = None;
        if h.pr_type.tells_registrants() {
            let others = self.others(me);
            self.tell(others, RESERVATIONS_RELEASED);
        }
        good()
    }

    /// CLEAR (§5.9.11.6).
    fn clear(&mut self, me: &NexusPort, key: u64) -> PrResult {
        if self.registered_with(me, key).is_none() {
            return conflict();
        }
        let others = self.others(me);
        self.tell(others, RESERVATIONS_PREEMPTED);
        self.st.registrations.clear();
        self.st.reservation = None;
        self.bump();
        good()
    }

    /// Remove every registration with `key` but `me`'s; their ports get
    /// REGISTRATIONS PREEMPTED. The number removed.
    fn remove_key(&mut self, me: &NexusPort, key: u64, any_key: bool) -> usize {
        let (gone, kept): (Vec<_>, Vec<_>) = self
            .st
            .registrations
            .drain(..)
            .partition(|r| (any_key || r.key == key) && !r.matches(me));
        self.st.registrations = kept;
        let n = gone.len();
        self.tell(gone, REGISTRATIONS_PREEMPTED);
        self.rehome_all_registrants();
        n
    }

    /// An all-registrants reservation is held by every registration (SPC-4 §5.9.11.3); the one
    /// recorded as its holder is only a representative, so when that registration goes while
    /// others remain, another one stands in. (`me` of a PREEMPT is never removed, so this never
    /// releases.)
    fn rehome_all_registrants(&mut self) {
        if let Some(h) = &mut self.st.reservation
            && h.pr_type.all_registrants()
            && !self.st.registrations.iter().any(|r| r.same(&h.holder))
            && let Some(first) = self.st.registrations.first()
        {
            h.holder = first.clone();
        }
    }

    /// PREEMPT and PREEMPT AND ABORT (§5.9.11.4, §5.9.11.5).
    fn preempt(&mut self, me: &NexusPort, key: u64, sa_key: u64, ty: PrType) -> PrResult {
        let Some(i) = self.registered_with(me, key) else {
            return conflict();
        };
        let mine = self.st.registrations[i].clone();
        let Some(h) = self.st.reservation.clone() else {
            if sa_key == 0 {
                return Err(Sense::invalid_field_in_parameter_list(8));
            }
            if self.remove_key(me, sa_key, false) == 0 && key != sa_key {
                return conflict();
            }
            self.bump();
            return good();
        };
        if h.pr_type.all_registrants() {
            if sa_key == 0 {
                self.remove_key(me, 0, true);
                self.st.reservation = Some(Held {
                    pr_type: ty,
                    holder: mine,
                });
            } else if self.remove_key(me, sa_key, false) == 0 && key != sa_key {
                return conflict();
            }
            self.bump();
            return good();
        }
        let holder_key = self.st.key_of(&h.holder);
        if holder_key == Some(sa_key) {
            self.remove_key(me, sa_key, false);
            self.st.reservation = Some(Held {
                pr_type: ty,
                holder: mine,
            });
            if h.pr_type != ty {
                let others = self.others(me);
                self.tell(others, RESERVATIONS_RELEASED);
            }
            self.bump();
            return good();
        }
        if sa_key == 0 {
            return Err(Sense::invalid_field_in_parameter_list(8));
        }
        if self.remove_key(me, sa_key, false) == 0 && key != sa_key {
            return conflict();
        }
        self.bump();
        good()
    }

    /// REGISTER AND MOVE (§5.9.8).
    fn register_and_move(&mut self, me: &NexusPort, p: &MoveParams) -> PrResult {
        let Some(i) = self.registered_with(me, p.key) else {
            return conflict();
        };
        let mine = self.st.registrations[i].clone();
        let Some(h) = self.st.reservation.clone() else {
            return conflict();
        };
        if h.pr_type.all_registrants() || !h.holder.same(&mine) {
            return conflict();
        }
        if p.sa_key == 0 {
            return Err(Sense::invalid_field_in_parameter_list(8));
        }
        let Some(isid) = p.transport_id.isid else {
            return Err(Sense::invalid_field_in_parameter_list(24));
        };
        let tpgt = p
            .relative_target_port
            .checked_sub(1)
            .ok_or(Sense::invalid_field_in_parameter_list(18))?;
        let dest = NexusPort {
            initiator: InitiatorPort {
                name: p.transport_id.name.clone(),
                isid,
            },
            tpgt,
        };
        if mine.matches(&dest) {
            return Err(Sense::invalid_field_in_parameter_list(24));
        }
        let dest_reg = match self.reg_of(&dest) {
            Some(j) => {
                self.st.registrations[j].key = p.sa_key;
                self.st.registrations[j].clone()
            }
            None => {
                if self.st.registrations.len() >= MAX_REGISTRATIONS {
                    return Err(Sense::illegal_request(INSUFFICIENT_REGISTRATION_RESOURCES));
                }
                let r = Registration {
                    initiator: dest.initiator.clone(),
                    tpgt: Some(tpgt),
                    key: p.sa_key,
                };
                self.st.registrations.push(r.clone());
                r
            }
        };
        self.st.reservation = Some(Held {
            pr_type: h.pr_type,
            holder: dest_reg,
        });
        if p.unreg
            && let Some(i) = self.st.registrations.iter().position(|r| r.same(&mine))
        {
            self.st.registrations.remove(i);
        }
        self.st.aptpl = p.aptpl;
        self.bump();
        good()
    }
}

impl PrState {
    fn key_of(&self, holder: &Registration) -> Option<u64> {
        self.registrations
            .iter()
            .find(|r| r.same(holder))
            .map(|r| r.key)
    }

    /// The APTPL file's text form: one line per item.
    pub fn encode(&self) -> Vec<u8> {
        let mut s = format!("portshift-pr 1\ngeneration {}\n", self.generation);
        let reg = |r: &Registration| {
            let tpgt = r.tpgt.map_or("*".to_string(), |t| t.to_string());
            let isid = r.initiator.isid_hex();
            format!("{:016x} {tpgt} {isid} {}", r.key, r.initiator.name)
        };
        for r in &self.registrations {
            s += &format!("reg {}\n", reg(r));
        }
        if let Some(h) = &self.reservation {
            s += &format!("reservation {} {}\n", h.pr_type.code(), reg(&h.holder));
        }
        s.into_bytes()
    }

    /// Parse [`PrState::encode`]'s form; APTPL is set by definition.
    pub fn decode(b: &[u8]) -> Result<PrState, String> {
        let text = std::str::from_utf8(b).map_err(|_| "not UTF-8".to_string())?;
        let mut lines = text.lines();
        if lines.next() != Some("portshift-pr 1") {
            return Err("not a portshift persistent reservation file (version 1)".into());
        }
        let mut st = PrState {
            aptpl: true,
            ..PrState::default()
        };
        let parse_reg = |f: &[&str]| -> Result<Registration, String> {
            let [key, tpgt, isid, name] = f else {
                return Err("a registration needs key, tpgt, isid and name".into());
            };
            let key = u64::from_str_radix(key, 16).map_err(|e| format!("key: {e}"))?;
            let tpgt = match *tpgt {
                "*" => None,
                t => Some(t.parse().map_err(|e| format!("tpgt: {e}"))?),
            };
            let id = parse_isid_hex(isid).ok_or("isid: 12 hex digits")?;
            Ok(Registration {
                initiator: InitiatorPort::new(name, id),
                tpgt,
                key,
            })
        };
        for (n, line) in lines.enumerate() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let err = |e: String| format!("line {}: {e}", n + 2);
            match f.as_slice() {
                [] => {}
                ["generation", g] => st.generation = g.parse().map_err(|e| err(format!("{e}")))?,
                ["reg", rest @ ..] => {
                    if st.registrations.len() >= MAX_REGISTRATIONS {
                        return Err(err("too many registrations".into()));
                    }
                    st.registrations.push(parse_reg(rest).map_err(err)?)
                }
                ["reservation", ty, rest @ ..] => {
                    let ty = ty
                        .parse()
                        .ok()
                        .and_then(PrType::from_code)
                        .ok_or_else(|| err("bad reservation type".into()))?;
                    let holder = parse_reg(rest).map_err(err)?;
                    if !st.registrations.iter().any(|r| r.same(&holder)) {
                        return Err(err("the holder is not registered".into()));
                    }
                    st.reservation = Some(Held {
                        pr_type: ty,
                        holder,
                    });
                }
                _ => return Err(err(format!("unknown line {line:?}"))),
            }
        }
        Ok(st)
    }
}

#[cfg(test)]
mod tests;
