//! Multi-portal iSCSI target: one processor (OS thread + event loop) per portal.
//!
//! Layout: [`control`] is the configuration table and the seam to the balancer; [`events`] the
//! event log; [`admin`] the JSON admin endpoint, [`dashboard`] its live page, [`admin_ops`] its operator calls and [`metrics`] its Prometheus `/metrics`; [`load`] each portal's measured load and
//! [`link`] its link's capacity.

pub mod admin;
pub mod admin_ops;
pub mod auth_throttle;
pub mod balance;
pub mod config_file;
pub mod control;
pub mod dashboard;
pub mod events;
pub mod link;
pub mod load;
pub mod metrics;
pub mod output_budget;
pub mod portal;
pub mod pr_store;
pub mod registration;
pub mod reload;
mod start;
pub mod target_set;

pub use link::PortalConfig;
pub use reload::ReloadReport;
pub use start::{
    Credentials, LunConfig, MAX_LUNS, MAX_PORTALS, NULL_PREFIX, StopReport, Target, TargetAccess,
    TargetConfig, TargetHandle,
};
