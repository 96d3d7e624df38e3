//! Sans-IO core of the portshift target (RFC 7143): bytes and time in; PDUs to send, SCSI
//! requests and events out. No tokio type, no clock, no lock: the I/O shell (`iscsi-target`)
//! owns sockets, threads, time and the files.
//!
//! A shell drives one [`Connection`] per TCP connection:
//! 1. [`Connection::on_bytes`] with what was read (decodes every whole PDU; stops early when
//!    SCSI work or an event is pending, so that commands run in arrival order);
//! 2. [`Connection::poll_event`] for the control plane's bookkeeping (on
//!    [`Event::FullFeature`], [`Connection::set_nexus`]);
//! 3. [`Connection::poll_scsi`]: execute each [`ScsiRequest`] and hand commands back with
//!    [`Connection::on_scsi_complete`]; repeat 1-3 until none of them has anything to do;
//! 4. [`Connection::poll_transmit`] and write the PDUs;
//! 5. [`Connection::handle_timeout`] now and then, [`Connection::on_command`] for the control
//!    plane's [`SessionCommand`]s, and [`Connection::on_closed`] once at the end.

pub mod catalog;
pub mod connection;
pub mod event;
pub mod policy;
pub mod request;

pub use catalog::{Access, Catalog, CatalogPortal, CatalogTarget};
pub use connection::Connection;
pub use event::{CloseReason, Event};
pub use policy::{LoginDecision, LoginPolicy, SessionCommand};
pub use request::{ScsiCommandRequest, ScsiRequest};

pub mod control;

pub use control::{Action, BalanceLoop, ControlPlane, PortalInfo};
