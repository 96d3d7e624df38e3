//! iSNS server and client (RFC 4171) over the sans-IO codec in `isns-proto`.
//!
//! * [`object`]: registry objects (Network Entity, Portal, iSCSI Storage Node,
//!   Portal Group, §4) with their attributes.
//! * [`registry`]: the sans-IO registry: DevAttrReg, DevAttrQry, DevGetNext,
//!   DevDereg, SCNReg, SCNDereg, SCNEvent handling (§5.6.5), answers in
//!   registration order; decides which SCN messages go where (§5.6.5.8) and
//!   when which portal gets an Entity Status Inquiry (§5.6.5.13).
//! * [`store`]: crash-safe persistence of the registry in redb.
//! * [`etcd`]: the registry in an etcd cluster, shared by several servers
//!   (conditional transactions, a watch-fed local copy, leases, ESI election).
//! * [`backend`]: the storage interface over the two (`--etcd` or redb).
//! * [`server`]: the tokio TCP server: clock, persistence, SCN delivery.
//! * `fence`: queries answer only from stored registrations (the committer applies a batch
//!   before it is written; a query that saw it waits, and reads again if it was undone).
//! * `esi`: the server's Entity Status Inquiry task (sends what
//!   `registry::esi` decides).
//! * [`config`]: the server's TOML configuration file (`portshift isns --config`).
//! * [`request`]: the client half without I/O: requests as messages, answers parsed.
//! * [`client`]: the async client used by the target and initiator.
//! * [`fleet`]: the whole registry as entities, portals, targets and their (deleted)
//!   registrations, for `portshift status --isns`.
//! * [`failover`]: a client of several servers that moves to the next when one stops answering.
//! * [`metrics`]: the server's Prometheus figures; [`admin`] serves them (`/metrics`) and
//!   the object counts (`/status`) over HTTP.

pub mod admin;
pub mod backend;
pub mod client;
pub mod config;
mod esi;
pub mod etcd;
pub mod failover;
mod fence;
pub mod fleet;
pub mod metrics;
pub mod object;
pub mod registry;
pub mod request;
pub mod server;
pub mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use client::{
    Client, ClientError, NodeRegistration, NodeType, PortalGroupRegistration, Registration,
};
pub use failover::{FailoverClient, FailoverError};
pub use registry::Registry;
pub use server::{Server, ServerConfig};
pub use store::Store;

/// Default iSNS TCP port (RFC 4171 §5.1, IANA).
pub const ISNS_PORT: u16 = 3205;
