//! The client half of iSNSP without I/O (RFC 4171 §5.6.5): the requests a target or an
//! initiator sends, built as [`Message`]s, and the parts of the answers they need. The async
//! [`crate::Client`] sends them over TCP; a test can hand them straight to a
//! [`crate::Registry`].

use std::net::SocketAddr;

use isns_proto::attr::socket_addr;
use isns_proto::tag::{self, node_type};
use isns_proto::{Attribute, Flags, FunctionId, Message, Status};

use crate::client::ClientError;

/// iSCSI Node Type (§6.4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeType {
    Target,
    Initiator,
    Control,
}

impl NodeType {
    /// The iSCSI Node Type bit (§6.4.2).
    pub fn bits(self) -> u32 {
        match self {
            NodeType::Target => node_type::TARGET,
            NodeType::Initiator => node_type::INITIATOR,
            NodeType::Control => node_type::CONTROL,
        }
    }
}

/// An iSCSI Storage Node to register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRegistration {
    pub name: String,
    pub node_type: NodeType,
    pub alias: Option<String>,
}

/// An explicit Portal Group: `node` reachable through `portal` with `tag` (PGT, §6.5.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalGroupRegistration {
    pub node: String,
    pub portal: SocketAddr,
    pub tag: u32,
}

/// One DevAttrReg (§5.6.5.1): a Network Entity with portals, nodes and PGs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registration {
    /// Entity Identifier; empty lets the server choose one.
    pub entity: String,
    pub portals: Vec<SocketAddr>,
    pub nodes: Vec<NodeRegistration>,
    /// Explicit PGs; portals/nodes without one get PGT 1 from the server.
    pub portal_groups: Vec<PortalGroupRegistration>,
    /// Registration period in seconds (§6.2.6); `None` uses the server default.
    pub registration_period: Option<u32>,
    /// Set the Replace flag: drop the entity's previous objects first.
    pub replace: bool,
}

/// DevAttrReg of an entity with its portals, nodes and portal groups (§5.6.5.1), keyed by the
/// Entity Identifier. The source is the first node's name; `None` without a node.
pub fn dev_attr_reg(reg: &Registration) -> Option<Message> {
    let source = reg.nodes.first()?;
    let mut ops = vec![
        Attribute::string(tag::ENTITY_IDENTIFIER, &reg.entity),
        Attribute::u32(tag::ENTITY_PROTOCOL, 2),
    ];
    if let Some(p) = reg.registration_period {
        ops.push(Attribute::u32(tag::REGISTRATION_PERIOD, p));
    }
    for p in &reg.portals {
        ops.extend(portal_attrs(tag::PORTAL_IP_ADDRESS, tag::PORTAL_PORT, *p));
    }
    for n in &reg.nodes {
        ops.push(Attribute::string(tag::ISCSI_NAME, &n.name));
        ops.push(Attribute::u32(tag::ISCSI_NODE_TYPE, n.node_type.bits()));
        if let Some(a) = &n.alias {
            ops.push(Attribute::string(tag::ISCSI_ALIAS, a));
        }
    }
    for pg in &reg.portal_groups {
        ops.extend(pg_attrs(&pg.node, pg.portal, Some(pg.tag)));
    }
    let key = vec![Attribute::string(tag::ENTITY_IDENTIFIER, &reg.entity)];
    let mut req = Message::request(
        FunctionId::DEV_ATTR_REG,
        0,
        Attribute::string(tag::ISCSI_NAME, &source.name),
        key,
        ops,
    );
    if reg.replace {
        req.flags = req.flags | Flags::REPLACE;
    }
    Some(req)
}

/// The Entity Identifier a DevAttrReg answer's key carries.
pub fn entity_id(resp: &Message) -> Option<&str> {
    find_str(resp.key(), tag::ENTITY_IDENTIFIER)
}

/// DevAttrQry for the Entity Identifier of the entity holding node `name` (§5.6.5.2).
pub fn entity_of_node(name: &str) -> Message {
    Message::request(
        FunctionId::DEV_ATTR_QRY,
        0,
        Attribute::string(tag::ISCSI_NAME, name),
        vec![Attribute::string(tag::ISCSI_NAME, name)],
        vec![Attribute::nil(tag::ENTITY_IDENTIFIER)],
    )
}

/// The Entity Identifier in the answer to [`entity_of_node`].
pub fn entity_of_node_answer(resp: &Message) -> Option<&str> {
    find_str(resp.operating(), tag::ENTITY_IDENTIFIER)
}

/// DevAttrReg of one Portal Group, keyed by its node's entity `eid` (§5.6.5.1): PGT `pgt`, or
/// NIL with `None`. Registering a NIL PGT is how the patent's step 107, "delete the registration
/// of (target, portal)", is done (§3.4, §6.5.4): queries stop returning the portal for that
/// target, while the portal and the PG keep their place in registration order.
pub fn portal_group_tag(eid: &str, target: &str, portal: SocketAddr, pgt: Option<u32>) -> Message {
    Message::request(
        FunctionId::DEV_ATTR_REG,
        0,
        Attribute::string(tag::ISCSI_NAME, target),
        vec![Attribute::string(tag::ENTITY_IDENTIFIER, eid)],
        pg_attrs(target, portal, pgt).to_vec(),
    )
}

/// What an initiator asks (§5.6.5.2): DevAttrQry keyed by the target's iSCSI Name for its
/// nodes, portals and portal groups.
pub fn target_portals(source_initiator: &str, target: &str) -> Message {
    Message::request(
        FunctionId::DEV_ATTR_QRY,
        0,
        Attribute::string(tag::ISCSI_NAME, source_initiator),
        vec![Attribute::string(tag::ISCSI_NAME, target)],
        [
            tag::ISCSI_NAME,
            tag::ISCSI_NODE_TYPE,
            tag::PORTAL_IP_ADDRESS,
            tag::PORTAL_PORT,
            tag::PG_ISCSI_NAME,
            tag::PG_PORTAL_IP_ADDR,
            tag::PG_PORTAL_PORT,
            tag::PG_TAG,
        ]
        .into_iter()
        .map(Attribute::nil)
        .collect(),
    )
}

/// The portals with a usable PGT in the answer to [`target_portals`], in registration order;
/// an unknown target gives an empty list.
pub fn target_portals_answer(resp: &Message, target: &str) -> Result<Vec<SocketAddr>, ClientError> {
    match resp.status {
        Some(Status::SUCCESS) => Ok(portals_from_pgs(resp.operating(), target)),
        Some(Status::NO_SUCH_ENTRY) => Ok(Vec::new()),
        Some(status) => Err(ClientError::Status {
            function: "DevAttrQry",
            status,
        }),
        None => Err(ClientError::Proto(isns_proto::Error::MissingStatus)),
    }
}

/// DevDereg of a whole Network Entity (§5.6.5.4).
pub fn entity_dereg(source: &str, entity: &str) -> Message {
    Message::request(
        FunctionId::DEV_DEREG,
        0,
        Attribute::string(tag::ISCSI_NAME, source),
        vec![],
        vec![Attribute::string(tag::ENTITY_IDENTIFIER, entity)],
    )
}

/// SCNReg for `node` with an SCN bitmap (§5.6.5.5, bits in `tag::scn`).
pub fn scn_reg(node: &str, bitmap: u32) -> Message {
    Message::request(
        FunctionId::SCN_REG,
        0,
        Attribute::string(tag::ISCSI_NAME, node),
        vec![Attribute::string(tag::ISCSI_NAME, node)],
        vec![Attribute::u32(tag::ISCSI_SCN_BITMAP, bitmap)],
    )
}

fn portal_attrs(tag_ip: u32, tag_port: u32, p: SocketAddr) -> [Attribute; 2] {
    [
        Attribute::ip(tag_ip, p.ip()),
        Attribute::tcp_port(tag_port, p.port()),
    ]
}

/// String value of the first attribute with `tag`.
fn find_str(attrs: &[Attribute], tag: u32) -> Option<&str> {
    attrs
        .iter()
        .find(|a| a.tag == tag)
        .and_then(Attribute::as_str)
}

/// Attributes of a Portal Group object (§6.5); `None` as PGT registers NIL.
fn pg_attrs(node: &str, portal: SocketAddr, pgt: Option<u32>) -> [Attribute; 4] {
    let [ip, port] = portal_attrs(tag::PG_PORTAL_IP_ADDR, tag::PG_PORTAL_PORT, portal);
    [
        Attribute::string(tag::PG_ISCSI_NAME, node),
        ip,
        port,
        pgt.map_or_else(
            || Attribute::nil(tag::PG_TAG),
            |t| Attribute::u32(tag::PG_TAG, t),
        ),
    ]
}

/// Portals of `target` from the PG records (48, 49, 50, 51) of a query answer,
/// keeping answer order and dropping PGs with a NIL or zero PGT.
pub fn portals_from_pgs(attrs: &[Attribute], target: &str) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(a) = attrs.get(i) {
        i += 1;
        if a.tag != tag::PG_ISCSI_NAME || a.as_str() != Some(target) {
            continue;
        }
        let rest = attrs.get(i..).unwrap_or_default();
        let end = rest
            .iter()
            .position(|x| x.tag == tag::PG_ISCSI_NAME || !(49..=63).contains(&x.tag))
            .unwrap_or(rest.len());
        let pg = rest.get(..end).unwrap_or_default();
        let find = |t: u32| pg.iter().find(|x| x.tag == t);
        let usable = find(tag::PG_TAG)
            .and_then(Attribute::as_u32)
            .is_some_and(|t| t != 0);
        if let (true, Some(ip), Some(port)) = (
            usable,
            find(tag::PG_PORTAL_IP_ADDR),
            find(tag::PG_PORTAL_PORT),
        ) && let Some(addr) = socket_addr(ip, port)
            && !out.contains(&addr)
        {
            out.push(addr);
        }
        i += end;
    }
    out
}
