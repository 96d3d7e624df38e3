//! State change notification, RFC 4171: SCNReg and SCNDereg (§5.6.5.5,
//! §5.6.5.6) record a node's SCN bitmap (§6.4.4); who receives which SCN
//! message (§5.6.5.8) and the message itself are decided here, sans-IO. The
//! server only delivers the [`Notification`]s a request produced.

use std::net::SocketAddr;

use isns_proto::tag::{self, ObjectType};
use isns_proto::{Attribute, Flags, FunctionId, Message, Status};

use super::{Answer, Changes, Registry, Res};

/// Source name of SCN messages unless [`Registry::set_scn_source`] sets another.
pub const DEFAULT_SOURCE_NAME: &str = "iqn.2024-01.portshift:isns-server";

/// Where one SCN message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScnDestination {
    /// The SCN port (§6.3.10) of a portal of the subscriber's entity.
    Portal(SocketAddr),
    /// The subscriber registered no portal with an SCN port: the connection
    /// its SCNReg arrived on (see [`ScnConnection`]), if still open.
    Connection {
        /// iSCSI name of the subscribing node.
        node: String,
    },
}

/// One SCN message to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub destination: ScnDestination,
    pub message: Message,
}

/// A successful SCNReg or SCNDereg, for the shell that tracks which
/// connection each subscriber registered on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScnConnection {
    /// SCNReg: SCNs for `node` without a portal SCN port go to this connection.
    Bind(String),
    /// SCNDereg: forget the connection of `node`.
    Unbind(String),
}

/// Transient state of the SCN messages the server originates.
#[derive(Debug, Clone)]
pub(super) struct Sender {
    /// Source attribute (iSCSI name) of SCN messages.
    pub(super) source: String,
    /// Transaction ID of the next SCN message.
    next_xid: u16,
}

impl Default for Sender {
    fn default() -> Sender {
        Sender {
            source: DEFAULT_SOURCE_NAME.to_string(),
            next_xid: 1,
        }
    }
}

/// The connection binding a successful SCNReg/SCNDereg `req` asks for.
pub(super) fn connection_change(req: &Message) -> Option<ScnConnection> {
    let name = key_name(req).and_then(Attribute::as_str)?.to_string();
    match req.function {
        FunctionId::SCN_REG => Some(ScnConnection::Bind(name)),
        FunctionId::SCN_DEREG => Some(ScnConnection::Unbind(name)),
        _ => None,
    }
}

/// The iSCSI Name in the Message Key of an SCNReg, SCNDereg or SCNEvent.
fn key_name(req: &Message) -> Option<&Attribute> {
    req.key().iter().find(|a| a.tag == tag::ISCSI_NAME)
}

impl Registry {
    /// The node an SCNReg, SCNDereg or SCNEvent is about: its name, entity
    /// (seq) and place in it. No name: Message Format Error (3); no such
    /// node: No Such Entry (12); only the node's own entity or a Control
    /// Node may ask (§5.6.1, as for DevAttrReg and DevDereg): status 6/8.
    pub(super) fn scn_node<'m>(&self, req: &'m Message) -> Res<(&'m Attribute, u64, usize)> {
        let name = key_name(req).ok_or(Status::MESSAGE_FORMAT_ERROR)?;
        let (p, i) = self
            .locate(ObjectType::IscsiNode, std::slice::from_ref(name))
            .ok_or(Status::NO_SUCH_ENTRY)?;
        self.authorize(req, p)?;
        Ok((name, p, i))
    }

    pub(super) fn scn_reg(&mut self, req: &Message, register: bool, ch: &mut Changes) -> Answer {
        let (name, p, i) = self.scn_node(req)?;
        let bitmap = if register {
            let bitmap = super::scn_bitmap(req)?;
            // §5.6.5.5: "Control Nodes MAY conduct registrations for
            // management SCNs; iSNS clients that are not supporting Control
            // Nodes MUST NOT".
            if bitmap & tag::scn::MANAGEMENT_REGISTRATION != 0 && !self.is_control(name.as_str()) {
                tracing::warn!(
                    node = name.as_str().unwrap_or(""),
                    "management SCN registration refused: not a control node (status 17)"
                );
                return Err(Status::SCN_REGISTRATION_REJECTED);
            }
            Some(bitmap)
        } else {
            None
        };
        let mut e = self.entity(p).cloned().ok_or(Status::INTERNAL_ERROR)?;
        let node = e.children.get_mut(i).ok_or(Status::INTERNAL_ERROR)?;
        match bitmap {
            Some(bitmap) => node.set(Attribute::u32(tag::ISCSI_SCN_BITMAP, bitmap)),
            None => node.unset(tag::ISCSI_SCN_BITMAP),
        }
        ch.upserted.insert(e.seq);
        // Through put_entity: the subscriber index follows the bitmap.
        self.put_entity(e);
        Ok((Vec::new(), Vec::new()))
    }

    /// iSCSI names of nodes registered for SCNs, with their bitmap (§6.4.4).
    pub fn scn_subscribers(&self) -> Vec<(String, u32)> {
        self.index
            .subscribers
            .iter()
            .filter_map(|seq| self.entities.get(seq))
            .flat_map(|e| e.of_kind(ObjectType::IscsiNode))
            .filter_map(|n| {
                let bitmap = n.get(tag::ISCSI_SCN_BITMAP)?.as_u32()?;
                Some((n.get_str(tag::ISCSI_NAME)?.to_string(), bitmap))
            })
            .collect()
    }

    /// The SCN messages (§5.6.5.8) for the subscribers whose bitmap selects
    /// some of the events in `changes`, one per subscriber, in registration
    /// order; each reports all selected events.
    pub(super) fn notifications(&mut self, changes: &Changes, now: u64) -> Vec<Notification> {
        let mut out = Vec::new();
        if changes.scn.is_empty() && changes.dd_scn.is_empty() {
            return out;
        }
        for (name, bitmap) in self.scn_subscribers() {
            // A management registration (§6.4.4 bit 26, control nodes only)
            // receives every event, its bitmap marked as management SCN.
            let management = bitmap & tag::scn::MANAGEMENT_REGISTRATION;
            let viewer = self.viewer_of(&name);
            // Management registrations hear about every DD membership change too.
            let own = changes
                .dd_scn
                .iter()
                .filter(|(to, _)| management != 0 || *to == name);
            let events: Vec<_> = changes
                .scn
                .iter()
                .filter(|ev| bitmap & ev.event != 0)
                .filter(|ev| management != 0 || self.scn_visible(&viewer, &ev.object_key)) // DD visibility (dd.rs)
                .chain(own.map(|(_, ev)| ev).filter(|ev| bitmap & ev.event != 0))
                .collect();
            if events.is_empty() {
                continue;
            }
            let mut key = vec![
                Attribute::string(tag::ISCSI_NAME, &name),
                Attribute::u64(tag::TIMESTAMP, now),
            ];
            for ev in events {
                key.push(Attribute::u32(tag::ISCSI_SCN_BITMAP, ev.event | management));
                key.extend(ev.object_key.iter().cloned());
            }
            let xid = self.scn.next_xid;
            self.scn.next_xid = xid.wrapping_add(1);
            let mut message = Message::request(
                FunctionId::SCN,
                xid,
                Attribute::string(tag::ISCSI_NAME, &self.scn.source),
                key,
                Vec::new(),
            );
            message.flags = Flags::SERVER;
            let destination = match self.scn_portal(&name) {
                Some(addr) => ScnDestination::Portal(addr),
                None => ScnDestination::Connection { node: name },
            };
            out.push(Notification {
                destination,
                message,
            });
        }
        out
    }

    /// Portal address + SCN port (§6.3.10) of the entity holding node `name`:
    /// the first such portal in registration order.
    fn scn_portal(&self, name: &str) -> Option<SocketAddr> {
        let key = Attribute::string(tag::ISCSI_NAME, name);
        let e = self.entities.get(&self.entity_of_node(&key)?)?;
        e.of_kind(ObjectType::Portal).find_map(|p| {
            let ip = p.get(tag::PORTAL_IP_ADDRESS)?.as_ip()?;
            let port = p.get(tag::SCN_PORT)?.as_tcp_port()?;
            Some(SocketAddr::new(ip, port))
        })
    }
}

#[cfg(test)]
#[path = "scn_tests.rs"]
mod tests;
