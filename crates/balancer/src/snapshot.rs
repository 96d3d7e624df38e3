//! The admin endpoint's JSON document: the configuration table (patent FIG. 2), the iSNS
//! registrations the target holds (FIG. 3), and the recent events.

use serde::{Deserialize, Serialize};

use crate::config::BalancePolicy;
use crate::event::Event;
use crate::table::{ConfigTable, PortalId};

/// One (target, portal) Portal Group as the target registered it in iSNS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegistrationRow {
    pub target: String,
    pub portal: PortalId,
    /// `IP:PORT` of the portal.
    pub address: String,
    /// Portal Group Tag.
    pub tag: u16,
    /// False while the balancer holds this registration deleted.
    pub registered: bool,
}

/// What the iSNS server last answered the target's full registration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IsnsContact {
    /// True when the registration was accepted.
    pub ok: bool,
    /// The server's answer or the error (refusal status, unreachable, timeout).
    pub detail: String,
    /// When (Unix milliseconds).
    pub at_ms: u64,
}

/// Everything `portshift status` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdminSnapshot {
    /// The iSNS server the target registers with, if any.
    pub isns: Option<String>,
    /// What that server last answered; `None` before the first attempt or without iSNS.
    #[serde(default)]
    pub isns_contact: Option<IsnsContact>,
    /// The balancing policy (every metric with its thresholds, and the settings), if
    /// balancing is on.
    pub balance: Option<BalancePolicy>,
    pub table: ConfigTable,
    pub registrations: Vec<RegistrationRow>,
    /// The most recent events, oldest first.
    pub events: Vec<Event>,
    /// Logout requests delivered to sessions since the target started.
    #[serde(default)]
    pub logout_requests: u64,
    /// Sessions dropped since the target started because they did not log out within
    /// Time2Logout of a logout request (each one an [`crate::EventKind::ForcedMove`]).
    #[serde(default)]
    pub forced_moves: u64,
    /// Logout requests since the target started that moved an initiator again within the
    /// cooldown, or back to a portal it left within twice the cooldown (0 unless something is
    /// wrong).
    #[serde(default)]
    pub ping_pongs: u64,
}
