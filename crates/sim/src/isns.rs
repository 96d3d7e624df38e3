//! The iSNS server ([`isns::Registry`], sans-IO) and the two clients that use it: the target's
//! registrar (mirroring `iscsi-target`'s `registration` module: entity, portals, nodes, one
//! Portal Group per (target, portal) with the portal's tag; delete = NIL PGT, restore = the
//! tag again) and the initiators' DevAttrQry. Every message goes through bytes both ways
//! ([`Message::to_bytes`] and [`MessageDecoder`]), so the codec is in the loop.

use std::net::SocketAddr;

use bytes::BytesMut;
use iscsi_target::registration::full_registration;
use iscsi_target_core::ControlPlane;
use isns::Registry;
use isns::request;
use isns_proto::codec::MessageDecoder;
use isns_proto::{Message, Status};

/// Registration period asked of the server (as the real target does), in seconds.
pub const REGISTRATION_PERIOD: u32 = 120;
/// How often the target sends its whole registration again (as the real keeper does), in ms.
pub const REFRESH_INTERVAL_MS: u64 = 20_000;

/// The iSNS server with one request/response path through the codec.
#[derive(Debug, Default)]
pub struct IsnsServer {
    registry: Registry,
    server_rx: MessageDecoder,
    client_rx: MessageDecoder,
    next_xid: u16,
    /// Requests handled.
    pub calls: u64,
}

impl IsnsServer {
    pub fn new() -> Self {
        IsnsServer::default()
    }

    /// The registry itself.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Sends `req` at `now_secs` and returns the answer, both ways through bytes. Expired
    /// entities are swept first, as the real server's sweeper would have.
    pub fn call(&mut self, mut req: Message, now_secs: u64) -> Result<Message, String> {
        self.next_xid = self.next_xid.wrapping_add(1);
        req.xid = self.next_xid;
        self.calls += 1;
        if self.registry.has_expired(now_secs) {
            self.registry.expire(now_secs);
        }
        let mut wire = BytesMut::from(&req.to_bytes()[..]);
        let got = self
            .server_rx
            .decode(&mut wire)
            .map_err(|e| format!("server decode: {e}"))?
            .ok_or("server: incomplete request")?;
        let outcome = self.registry.handle(&got, now_secs);
        let resp = outcome.response.ok_or("no response")?;
        let mut wire = BytesMut::from(&resp.to_bytes()[..]);
        let resp = self
            .client_rx
            .decode(&mut wire)
            .map_err(|e| format!("client decode: {e}"))?
            .ok_or("client: incomplete response")?;
        if resp.xid != req.xid || resp.function != req.function.response() {
            return Err(format!("mismatched answer {:?}", resp.function));
        }
        Ok(resp)
    }

    /// `call`, a non-success status being an error.
    pub fn call_ok(&mut self, req: Message, now_secs: u64) -> Result<Message, String> {
        let function = req.function.name();
        let resp = self.call(req, now_secs)?;
        match resp.status {
            Some(Status::SUCCESS) => Ok(resp),
            Some(s) => Err(format!("{function}: status {s}")),
            None => Err(format!("{function}: no status")),
        }
    }

    /// What an initiator asks: the portals of `target`, in registration order.
    pub fn query_portals(
        &mut self,
        initiator: &str,
        target: &str,
        now_secs: u64,
    ) -> Result<Vec<SocketAddr>, String> {
        let resp = self.call(request::target_portals(initiator, target), now_secs)?;
        request::target_portals_answer(&resp, target).map_err(|e| e.to_string())
    }
}

/// The target's side: registers and changes the Portal Groups of its targets.
#[derive(Debug, Clone)]
pub struct Registrar {
    entity: String,
    eid: Option<String>,
}

impl Registrar {
    /// A registrar for the target whose first portal is `first` (the real entity name).
    pub fn new(first: Option<SocketAddr>) -> Self {
        Registrar {
            entity: format!(
                "portshift:{}",
                first.map(|a| a.to_string()).unwrap_or_default()
            ),
            eid: None,
        }
    }

    pub fn entity(&self) -> &str {
        &self.entity
    }

    /// Registers the entity, portals, target nodes and Portal Groups as `plane`'s registration
    /// table has them (deleted ones with a NIL tag), like `IsnsRegistrar::register_all`.
    pub fn register_all(
        &mut self,
        plane: &ControlPlane,
        isns: &mut IsnsServer,
        now_secs: u64,
    ) -> Result<(), String> {
        let (reg, deleted) = full_registration(
            &self.entity,
            plane.portals(),
            plane.targets(),
            plane.registrations(),
        );
        let req = request::dev_attr_reg(&reg).ok_or("no target node to register")?;
        let resp = isns.call_ok(req, now_secs)?;
        self.eid = Some(request::entity_id(&resp).unwrap_or(&reg.entity).to_string());
        for (target, addr) in &deleted {
            self.set_tag(isns, target, *addr, None, now_secs)?;
        }
        Ok(())
    }

    /// Registers the Portal Group of (`target`, `portal`) with `pgt`, or NIL with `None`:
    /// restore or delete of the registration.
    pub fn set_tag(
        &mut self,
        isns: &mut IsnsServer,
        target: &str,
        portal: SocketAddr,
        pgt: Option<u32>,
        now_secs: u64,
    ) -> Result<(), String> {
        let eid = match &self.eid {
            Some(e) => e.clone(),
            None => {
                let resp = isns.call_ok(request::entity_of_node(target), now_secs)?;
                request::entity_of_node_answer(&resp)
                    .ok_or("entity of the target not found")?
                    .to_string()
            }
        };
        let result = isns
            .call_ok(
                request::portal_group_tag(&eid, target, portal, pgt),
                now_secs,
            )
            .map(|_| ());
        if result.is_err() {
            self.eid = None;
        }
        result
    }
}
