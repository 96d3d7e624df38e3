//! Entity Status Inquiry (ESI), RFC 4171 §5.6.5.13, with the portal
//! attributes ESI Interval (§6.3.4, tag 19) and ESI Port (§6.3.5, tag 20).
//! Sans-IO: the shell asks which ESI messages are due ([`Registry::esi_due`]),
//! sends them to each portal's ESI port and reports the outcome
//! ([`Registry::esi_answered`], [`Registry::esi_failed`]).
//!
//! The rules, as this server applies them:
//!
//! * a portal asks for monitoring by registering a non-zero ESI Interval and
//!   an ESI Port (§6.3.4: "the client MUST register an ESI Port"); a portal
//!   with an interval but no port is not monitored;
//! * the server grants the interval (§6.3.4: it may "select its own suitable
//!   value" and return it in the DevAttrRegRsp): at least
//!   [`EsiConfig::min_interval`], at most half the entity's Registration
//!   Period (so an answered ESI, which refreshes the registration, always
//!   comes before the period runs out); with ESI disabled, a registration
//!   asking for it is refused with status 21 "ESI Not Available";
//! * the first ESI is due one interval after the registration, the next one
//!   interval after the last ESI Response (§6.3.4: "the ESI Interval period
//!   begins with the iSNS server's receipt of the last ESI Response");
//! * an unanswered ESI (no connection, timeout, wrong answer) is retried
//!   every `interval / allowed_misses` seconds, so that all retransmissions
//!   go out before twice the interval has passed (§6.3.4); after
//!   [`EsiConfig::allowed_misses`] consecutive misses the portal is
//!   deregistered with an OBJECT_REMOVED SCN (§5.6.5.13);
//! * when that was the entity's last monitored portal and the client sent
//!   nothing since the last answered ESI (by then close to two intervals,
//!   §6.3.4), the entity and all its objects are deregistered too;
//! * an answered ESI refreshes the entity's registration (its timestamp,
//!   §6.2.6), like any other message from the client, in memory only.
//!
//! The ESI message carries, without a source attribute (it comes from the
//! server) and without a delimiter, as open-isns sends and expects it: the
//! Timestamp, the Entity Identifier, the Portal IP Address and Port. The
//! client answers with an ESI Response (0x800D) echoing them.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use isns_proto::attr::socket_addr;
use isns_proto::tag::{self, ObjectType};
use isns_proto::{Attribute, Flags, FunctionId, Message, Status};

use super::{Changes, Entity, Outcome, Registry, Res};

/// Default smallest ESI interval the server grants, seconds (open-isns'
/// `ESIMinInterval` default).
pub const DEFAULT_MIN_ESI_INTERVAL: u32 = 60;
/// Default number of consecutive unanswered ESI messages after which a
/// portal is deregistered.
pub const DEFAULT_ALLOWED_MISSES: u32 = 3;

/// What the server offers for ESI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EsiConfig {
    /// Whether the server monitors portals at all; when not, a registration
    /// asking for an ESI Interval is refused with status 21.
    pub enabled: bool,
    /// Smallest ESI Interval granted, seconds (at least 1).
    pub min_interval: u32,
    /// Consecutive unanswered ESI messages after which the portal goes (at least 1).
    pub allowed_misses: u32,
}

impl Default for EsiConfig {
    fn default() -> EsiConfig {
        EsiConfig {
            enabled: true,
            min_interval: DEFAULT_MIN_ESI_INTERVAL,
            allowed_misses: DEFAULT_ALLOWED_MISSES,
        }
    }
}

impl EsiConfig {
    /// The interval granted for `asked` seconds on an entity with
    /// Registration Period `period`: within `[min_interval, period / 2]`
    /// (the minimum wins when the two cross).
    pub fn grant(&self, asked: u32, period: u32) -> u32 {
        asked.min(period / 2).max(self.min_interval.max(1))
    }

    /// Seconds between retransmissions of an unanswered ESI.
    fn retry_after(&self, interval: u32) -> u64 {
        u64::from((interval / self.allowed_misses.max(1)).max(1))
    }
}

/// One monitored portal.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Monitored {
    /// The entity (by seq) holding the portal.
    entity: u64,
    /// Entity Identifier attribute, for the ESI message.
    eid: Attribute,
    /// Portal IP address + ESI Port: where ESI messages go.
    destination: SocketAddr,
    /// Granted ESI Interval, seconds.
    interval: u32,
    /// When the next ESI (or retransmission) is due.
    due: u64,
    /// Consecutive unanswered ESI messages.
    misses: u32,
    /// Transaction ID of the ESI awaiting its answer.
    in_flight: Option<u16>,
    /// Time of the last ESI Response (or of the start of monitoring).
    last_answer: u64,
}

/// The ESI state of the registry: transient, rebuilt from the entities at
/// start ([`Registry::esi_sync_all`]).
#[derive(Debug, Clone, Default)]
pub(super) struct EsiState {
    pub(super) config: EsiConfig,
    /// Monitored portals by portal address (IP + portal port).
    portals: BTreeMap<SocketAddr, Monitored>,
    next_xid: u16,
}

/// One ESI message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EsiProbe {
    /// The portal being checked (its IP address and portal port): the key
    /// to report the outcome with.
    pub portal: SocketAddr,
    /// Where to send the message: the portal's IP address and ESI Port.
    pub destination: SocketAddr,
    pub message: Message,
}

/// The address of a portal object (IP + portal port).
fn portal_addr(p: &crate::object::Object) -> Option<SocketAddr> {
    socket_addr(p.get(tag::PORTAL_IP_ADDRESS)?, p.get(tag::PORTAL_PORT)?)
}

/// The requested ESI Interval and the ESI destination of a portal, when it asks for ESI.
fn esi_request(p: &crate::object::Object) -> Option<(u32, SocketAddr)> {
    let interval = p.get(tag::ESI_INTERVAL)?.as_u32().filter(|i| *i > 0)?;
    let ip = p.get(tag::PORTAL_IP_ADDRESS)?.as_ip()?;
    let port = p.get(tag::ESI_PORT)?.as_tcp_port().filter(|p| *p != 0)?;
    Some((interval, SocketAddr::new(ip, port)))
}

impl Registry {
    /// Set what the server offers for ESI (see [`EsiConfig`]).
    pub fn set_esi(&mut self, config: EsiConfig) {
        self.esi.config = config;
    }

    /// §6.3.4: grant the ESI Interval of every portal of `entity` that asks
    /// for one (see [`EsiConfig::grant`]); refuse with ESI Not Available
    /// when ESI is disabled.
    pub(super) fn esi_grant(&self, entity: &mut Entity, period: u32) -> Res<()> {
        let config = self.esi.config;
        for p in entity
            .children
            .iter_mut()
            .filter(|o| o.kind == ObjectType::Portal)
        {
            let Some(asked) = p
                .get(tag::ESI_INTERVAL)
                .and_then(Attribute::as_u32)
                .filter(|i| *i > 0)
            else {
                continue;
            };
            if !config.enabled {
                return Err(Status::ESI_NOT_AVAILABLE);
            }
            p.set(Attribute::u32(
                tag::ESI_INTERVAL,
                config.grant(asked, period),
            ));
        }
        Ok(())
    }

    /// Start, update or stop monitoring the portals of the entities a
    /// request changed.
    pub(super) fn esi_sync(&mut self, changes: &Changes, now: u64) {
        if changes.removed.is_empty() && changes.upserted.is_empty() {
            return;
        }
        let touched = |seq: &u64| changes.removed.contains(seq) || changes.upserted.contains(seq);
        let (mut old, keep): (BTreeMap<_, _>, BTreeMap<_, _>) =
            std::mem::take(&mut self.esi.portals)
                .into_iter()
                .partition(|(_, m)| touched(&m.entity));
        self.esi.portals = keep;
        for seq in &changes.upserted {
            self.esi_watch(*seq, now, &mut old);
        }
    }

    /// Rebuild the monitoring of every entity (after loading from disk).
    pub fn esi_sync_all(&mut self, now: u64) {
        self.esi.portals.clear();
        let seqs: Vec<u64> = self.entities.keys().copied().collect();
        for seq in seqs {
            self.esi_watch(seq, now, &mut BTreeMap::new());
        }
    }

    /// Monitor the portals of the entity `seq` that ask for ESI; a
    /// portal found in `old` with the same destination and interval keeps
    /// its schedule and misses.
    fn esi_watch(&mut self, seq: u64, now: u64, old: &mut BTreeMap<SocketAddr, Monitored>) {
        let Some(e) = self.entities.get(&seq) else {
            return;
        };
        if !self.esi.config.enabled {
            return;
        }
        let Some(eid) = e.object.get(tag::ENTITY_IDENTIFIER).cloned() else {
            return;
        };
        for p in e.of_kind(ObjectType::Portal) {
            let (Some(addr), Some((interval, destination))) = (portal_addr(p), esi_request(p))
            else {
                continue;
            };
            let kept = old
                .remove(&addr)
                .filter(|m| m.destination == destination && m.interval == interval);
            let m = kept.unwrap_or(Monitored {
                entity: e.seq,
                eid: eid.clone(),
                destination,
                interval,
                due: now.saturating_add(u64::from(interval)),
                misses: 0,
                in_flight: None,
                last_answer: now,
            });
            self.esi.portals.insert(addr, m);
        }
    }

    /// Portals under ESI monitoring, with their granted interval.
    pub fn esi_monitored(&self) -> Vec<(SocketAddr, u32)> {
        self.esi
            .portals
            .iter()
            .map(|(a, m)| (*a, m.interval))
            .collect()
    }

    /// When the next ESI is due, if any portal is monitored and none is
    /// awaiting an answer past that time.
    pub fn esi_next_due(&self) -> Option<u64> {
        self.esi
            .portals
            .values()
            .filter(|m| m.in_flight.is_none())
            .map(|m| m.due)
            .min()
    }

    /// The ESI messages due at `now` (§5.6.5.13), one per monitored portal
    /// whose time came and which has no ESI awaiting its answer. Each must
    /// be followed by [`Registry::esi_answered`] or [`Registry::esi_failed`].
    pub fn esi_due(&mut self, now: u64) -> Vec<EsiProbe> {
        let mut out = Vec::new();
        let mut xid = self.esi.next_xid;
        for (portal, m) in &mut self.esi.portals {
            if m.in_flight.is_some() || m.due > now {
                continue;
            }
            xid = xid.wrapping_add(1).max(1);
            m.in_flight = Some(xid);
            let message = Message {
                function: FunctionId::ESI,
                flags: Flags::SERVER,
                xid,
                status: None,
                attrs: vec![
                    Attribute::u64(tag::TIMESTAMP, now),
                    m.eid.clone(),
                    Attribute::ip(tag::PORTAL_IP_ADDRESS, portal.ip()),
                    Attribute::tcp_port(tag::PORTAL_PORT, portal.port()),
                ],
            };
            out.push(EsiProbe {
                portal: *portal,
                destination: m.destination,
                message,
            });
        }
        self.esi.next_xid = xid;
        out
    }

    /// The portal answered: `response` is accepted when it is a successful
    /// ESI Response with the transaction ID of the ESI awaiting its answer
    /// and names the same portal. Then the misses are forgotten, the next
    /// ESI is due one interval from `now` and the entity's registration is
    /// refreshed. Returns whether the answer was accepted; an answer not
    /// accepted should be reported as [`Registry::esi_failed`].
    pub fn esi_answered(&mut self, portal: SocketAddr, response: &Message, now: u64) -> bool {
        let Some(m) = self.esi.portals.get_mut(&portal) else {
            return false;
        };
        let names_portal = {
            let ip = response
                .attrs
                .iter()
                .find(|a| a.tag == tag::PORTAL_IP_ADDRESS);
            let port = response.attrs.iter().find(|a| a.tag == tag::PORTAL_PORT);
            matches!((ip, port), (Some(ip), Some(port)) if socket_addr(ip, port) == Some(portal))
        };
        if response.function != FunctionId::ESI.response()
            || m.in_flight != Some(response.xid)
            || response.status.is_some_and(|s| s != Status::SUCCESS)
            || !names_portal
        {
            return false;
        }
        m.in_flight = None;
        m.misses = 0;
        m.last_answer = now;
        m.due = now.saturating_add(u64::from(m.interval));
        let seq = m.entity;
        // An answered ESI refreshes the registration (§6.2.6), like any
        // message from the entity: in memory, stored with the other refreshes.
        if let Some(e) = self.entities.get(&seq)
            && e.refresh(now)
        {
            self.refreshed.push(seq);
        }
        true
    }

    /// Forget the ESI awaiting an answer from `portal` without counting a
    /// miss: it goes out again at the next [`Registry::esi_due`] (for a
    /// shell that could not record the outcome, e.g. the database failed).
    pub fn esi_abandon(&mut self, portal: SocketAddr) {
        if let Some(m) = self.esi.portals.get_mut(&portal) {
            m.in_flight = None;
        }
    }

    /// The ESI to `portal` went unanswered (no connection, timeout, wrong
    /// answer). Below [`EsiConfig::allowed_misses`] consecutive misses it
    /// is retried later; at the limit the portal is deregistered, and with
    /// it the entity when that was its last monitored portal and the client
    /// sent nothing since the last answered ESI. Returns the changes to
    /// persist and the OBJECT_REMOVED SCNs to deliver.
    pub fn esi_failed(&mut self, portal: SocketAddr, now: u64) -> Outcome {
        let config = self.esi.config;
        let Some(m) = self.esi.portals.get_mut(&portal) else {
            return Outcome::default();
        };
        m.in_flight = None;
        m.misses += 1;
        if m.misses < config.allowed_misses.max(1) {
            m.due = now.saturating_add(config.retry_after(m.interval));
            return Outcome::default();
        }
        let Some(m) = self.esi.portals.remove(&portal) else {
            return Outcome::default();
        };
        tracing::info!(%portal, entity = ?m.eid.as_str(), misses = m.misses,
            "ESI unanswered: deregistering the portal");
        let mut changes = Changes::default();
        let key = [
            Attribute::ip(tag::PORTAL_IP_ADDRESS, portal.ip()),
            Attribute::tcp_port(tag::PORTAL_PORT, portal.port()),
        ];
        self.remove(ObjectType::Portal, &key, &mut changes);
        let last_monitored = !self.esi.portals.values().any(|o| o.entity == m.entity);
        let silent = self
            .entities
            .get(&m.entity)
            .is_some_and(|e| e.last_seen() <= m.last_answer);
        if last_monitored && silent {
            tracing::info!(entity = ?m.eid.as_str(),
                "no monitored portal left and no message since the last ESI answer: deregistering the entity");
            self.remove(
                ObjectType::Entity,
                std::slice::from_ref(&m.eid),
                &mut changes,
            );
        }
        self.settle(changes, now)
    }
}

#[cfg(test)]
#[path = "esi_tests.rs"]
mod tests;
