//! Userspace iSCSI initiator library (RFC 7143) and verifying workload.
//!
//! * [`login`]: sans-IO initiator login (security + operational stages, redirects).
//! * [`full_feature`]: sans-IO full feature phase ([`FullFeatureSession`](full_feature::FullFeatureSession)): commands, Data-In/Out, R2T, NOP, Async, Logout.
//! * [`cdb`]: the SCSI requests issued (CDBs, sense and parameter data from [`scsi::client`]).
//! * [`session`]: the tokio shell: one connection, a reader task and a batching writer.
//! * [`discovery`]: SendTargets discovery sessions and iSNS portal queries.
//! * [`balanced`]: [`BalancedInitiator`], which follows the target's logout requests to the
//!   portal iSNS now lists first and re-issues unfinished I/O: the tokio shell of
//!   [`follower::Follower`], the sans-IO state machine that decides when to drain,
//!   look up, log in, record a move and re-issue.
//! * [`workload`]: the bounded, verifying I/O loop.

pub mod cdb;
pub mod error;
pub mod full_feature;
mod id_map;
pub mod login;

pub use error::{Error, TaskError};
pub mod discovery;
pub mod session;
pub mod transport;

pub use session::{LoginInfo, Session, SessionClient, SessionConfig, SessionEvent};
pub mod balanced;
pub mod follower;

pub use balanced::{
    BalancedConfig, BalancedInitiator, InitiatorEvent, MoveRecord, PortalSource, ReconnectCause,
    ReconnectRecord,
};
pub mod workload;

pub use workload::{Progress, WorkloadConfig, WorkloadReport, run_workload};
