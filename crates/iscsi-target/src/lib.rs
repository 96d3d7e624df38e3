//! Multi-portal iSCSI target: one processor (OS thread + event loop) per portal.
//!
//! Layout: [`control`] is the configuration table and the seam to the balancer; [`events`] the
//! event log; [`admin`] the JSON admin endpoint.

pub mod admin;
pub mod balance;
pub mod control;
pub mod events;
pub mod output_budget;
pub mod portal;
pub mod registration;
mod start;
pub mod target_set;

pub use start::{LunConfig, Target, TargetConfig, TargetHandle};
