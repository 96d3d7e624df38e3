//! Sans-IO core of the portshift target (RFC 7143): bytes and time in; PDUs to send, SCSI
//! requests and events out. No tokio type, no clock, no lock: the I/O shell (`iscsi-target`)
//! owns sockets, threads, time and the files.

pub mod policy;

pub use policy::{LoginDecision, LoginPolicy, SessionCommand};

pub mod control;

pub use control::{Action, BalanceLoop, ControlPlane, PortalInfo};
