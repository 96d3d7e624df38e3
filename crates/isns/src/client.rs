//! Async iSNS client (RFC 4171) for targets and initiators: registration,
//! portal-group changes for load balancing, portal discovery.
//!
//! One TCP connection, one outstanding request at a time; a broken connection
//! is re-established once per call (all requests sent here are idempotent).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use isns_proto::{Flags, FunctionId, Message, MessageDecoder, Status};

use crate::request;
pub use crate::request::{NodeRegistration, NodeType, PortalGroupRegistration, Registration};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Client errors.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("i/o with iSNS server: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed iSNS reply: {0}")]
    Proto(#[from] isns_proto::Error),
    #[error("iSNS server answered {function} with status {status}")]
    Status {
        function: &'static str,
        status: Status,
    },
    #[error("iSNS server did not answer within {0:?}")]
    Timeout(Duration),
    #[error("registration needs at least one node or an entity identifier")]
    NoSource,
}

/// An open TCP connection with its unread bytes and framing state.
struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    decoder: MessageDecoder,
}

impl Conn {
    /// The next whole message from the server.
    async fn read_message(&mut self) -> Result<Message, ClientError> {
        loop {
            if let Some(m) = self
                .decoder
                .decode(&mut self.buf)
                .map_err(|e| ClientError::Proto(e.error))?
            {
                return Ok(m);
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
            }
        }
    }
}

/// A connection to an iSNS server.
pub struct Client {
    addr: SocketAddr,
    conn: Option<Conn>,
    next_xid: u16,
    timeout: Duration,
    /// Entity Identifier of each node this client registered or looked up.
    entities: HashMap<String, String>,
}

impl Client {
    /// Connect to the server at `addr`.
    pub async fn connect(addr: SocketAddr) -> Result<Client, ClientError> {
        let mut c = Client {
            addr,
            conn: None,
            next_xid: 1,
            timeout: Duration::from_secs(10),
            entities: HashMap::new(),
        };
        c.reconnect().await?;
        Ok(c)
    }

    /// Change the per-call timeout (default 10 s).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    async fn reconnect(&mut self) -> Result<(), ClientError> {
        let s = tokio::time::timeout(self.timeout, TcpStream::connect(self.addr))
            .await
            .map_err(|_| ClientError::Timeout(self.timeout))??;
        let _ = s.set_nodelay(true);
        self.conn = Some(Conn {
            stream: s,
            buf: BytesMut::new(),
            decoder: MessageDecoder::new(),
        });
        Ok(())
    }

    /// Send a request and return the response, whatever its status. The
    /// transaction ID is assigned here.
    pub async fn call(&mut self, mut req: Message) -> Result<Message, ClientError> {
        req.xid = self.next_xid;
        self.next_xid = self.next_xid.wrapping_add(1).max(1);
        let timeout = self.timeout;
        for attempt in 0..2 {
            if self.conn.is_none() {
                self.reconnect().await?;
            }
            let result = match tokio::time::timeout(timeout, self.exchange(&req)).await {
                Ok(r) => r,
                Err(_) => Err(ClientError::Timeout(timeout)),
            };
            match result {
                Err(ClientError::Io(e)) if attempt == 0 => {
                    tracing::debug!("iSNS connection lost ({e}), reconnecting");
                    self.conn = None;
                }
                Err(e) => {
                    self.conn = None;
                    return Err(e);
                }
                Ok(m) => return Ok(m),
            }
        }
        Err(ClientError::Timeout(timeout))
    }

    async fn exchange(&mut self, req: &Message) -> Result<Message, ClientError> {
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotConnected))?;
        conn.stream.write_all(&req.to_bytes()).await?;
        loop {
            let m = conn.read_message().await?;
            if m.function == req.function.response() && m.xid == req.xid {
                return Ok(m);
            }
            if m.function == FunctionId::SCN {
                // Acknowledge notifications pushed on this connection (§5.7.5.8).
                let ack = Message::response(
                    &m,
                    Status::SUCCESS,
                    m.key().first().cloned().into_iter().collect(),
                    vec![],
                );
                let mut ack = ack;
                ack.flags = Flags::CLIENT;
                conn.stream.write_all(&ack.to_bytes()).await?;
            }
        }
    }

    /// `call`, turning a non-success status into an error.
    pub async fn call_ok(&mut self, req: Message) -> Result<Message, ClientError> {
        let function = req.function.name();
        let resp = self.call(req).await?;
        match resp.status {
            Some(Status::SUCCESS) => Ok(resp),
            Some(status) => Err(ClientError::Status { function, status }),
            None => Err(ClientError::Proto(isns_proto::Error::MissingStatus)),
        }
    }

    /// DevAttrReg of an entity with its portals, nodes and portal groups
    /// (§5.6.5.1). The source is the first node's name. Returns the Entity
    /// Identifier the server registered.
    pub async fn register(&mut self, reg: &Registration) -> Result<String, ClientError> {
        let req = request::dev_attr_reg(reg).ok_or(ClientError::NoSource)?;
        let resp = self.call_ok(req).await?;
        let eid = request::entity_id(&resp).unwrap_or(&reg.entity).to_string();
        for n in &reg.nodes {
            self.entities.insert(n.name.clone(), eid.clone());
        }
        Ok(eid)
    }

    /// Entity Identifier of the entity holding node `name`: remembered from
    /// [`Client::register`], otherwise asked with DevAttrQry (§5.6.5.2).
    async fn entity_of(&mut self, name: &str) -> Result<String, ClientError> {
        if let Some(eid) = self.entities.get(name) {
            return Ok(eid.clone());
        }
        let resp = self.call_ok(request::entity_of_node(name)).await?;
        let eid = request::entity_of_node_answer(&resp)
            .ok_or(ClientError::Status {
                function: "DevAttrQry",
                status: Status::NO_SUCH_ENTRY,
            })?
            .to_string();
        self.entities.insert(name.to_string(), eid.clone());
        Ok(eid)
    }

    /// DevAttrReg of one Portal Group keyed by the node's entity (§5.6.5.1).
    async fn set_pg_tag(
        &mut self,
        target: &str,
        portal: SocketAddr,
        pgt: Option<u32>,
    ) -> Result<(), ClientError> {
        let eid = self.entity_of(target).await?;
        let req = request::portal_group_tag(&eid, target, portal, pgt);
        let result = self.call_ok(req).await.map(|_| ());
        if result.is_err() {
            // The entity may have been re-registered under another identifier.
            self.entities.remove(target);
        }
        result
    }

    /// Delete the registration of (`target`, `portal`) — the patent's step 107 — by
    /// registering its Portal Group with a NIL PGT (RFC 4171 §3.4, §6.5.4): queries stop returning the portal
    /// for that target, while the portal and the PG keep their place in
    /// registration order.
    pub async fn delete_registration(
        &mut self,
        target: &str,
        portal: SocketAddr,
    ) -> Result<(), ClientError> {
        self.set_pg_tag(target, portal, None).await
    }

    /// Restore the registration [`Client::delete_registration`] deleted: register the PG with
    /// `pgt` again.
    pub async fn restore_registration(
        &mut self,
        target: &str,
        portal: SocketAddr,
        pgt: u32,
    ) -> Result<(), ClientError> {
        self.set_pg_tag(target, portal, Some(pgt)).await
    }

    /// What an initiator asks (§5.6.5.2): DevAttrQry keyed by the target's
    /// iSCSI Name for its portal groups; returns the portals with a usable
    /// PGT in registration order. An unknown target gives an empty list.
    pub async fn query_target_portals(
        &mut self,
        source_initiator: &str,
        target: &str,
    ) -> Result<Vec<SocketAddr>, ClientError> {
        let resp = self
            .call(request::target_portals(source_initiator, target))
            .await?;
        request::target_portals_answer(&resp, target)
    }

    /// DevDereg of a whole Network Entity (§5.6.5.4).
    pub async fn deregister_entity(
        &mut self,
        source: &str,
        entity: &str,
    ) -> Result<(), ClientError> {
        self.call_ok(request::entity_dereg(source, entity))
            .await
            .map(|_| ())
    }

    /// SCNReg for `node` with an SCN bitmap (§5.6.5.5, bits in `tag::scn`).
    /// Notifications arrive on the node's portal SCN port if registered,
    /// otherwise on this connection (acknowledged and dropped by [`Client::call`]).
    pub async fn register_scn(&mut self, node: &str, bitmap: u32) -> Result<(), ClientError> {
        self.call_ok(request::scn_reg(node, bitmap))
            .await
            .map(|_| ())
    }
}
