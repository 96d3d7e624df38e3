//! Balancer policy (patent JP4675664B2): configuration table and loads in, decisions out. No I/O.
//!
//! The target feeds a [`ConfigTable`] (the patent's FIG. 2: per portal, its processor, its load,
//! and the sessions logged in through it) to [`Balancer::step`], which returns [`Decision`]s
//! (FIG. 5 steps 101–112: delete a registration and request a logout; restore registrations once
//! the load has fallen). The [`BalancePolicy`] says when a portal is overloaded: one
//! [`BalanceSpec`] per metric (sessions, IOPS, link bandwidth, processor), any of them at HIGH
//! overloads a portal, all of them at LOW restore it. [`ping_pongs`] finds moves that bounce. The target's I/O shell carries them out and records [`Event`]s.
//! [`AdminSnapshot`] is the JSON shape of the admin endpoint that `portshift status` prints.

pub mod clock;
pub mod config;
pub mod event;
pub mod history;
pub mod load;
pub mod metric;
pub mod policy;
pub mod smooth;
pub mod snapshot;
pub mod table;

pub use config::{BalancePolicy, DEFAULT_MAX_MOVES, PolicyError, SwitchPriority};
pub use event::{Event, EventKind};
pub use history::{MoveRecord, PingPong, PingPongKind, ping_pongs};
pub use load::{Projection, Share};
pub use metric::{BalanceSpec, Metric, ParseSpecError, Thresholds};
pub use policy::{Balancer, Decision};
pub use smooth::{Ewma, SMOOTHING_TAU_MS};
pub use snapshot::{AdminSnapshot, IsnsContact, RegistrationRow};
pub use table::{ConfigTable, PortalId, PortalLoad, PortalRow, SessionEntry};
