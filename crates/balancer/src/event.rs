//! Events: what the balancer decided and what the target did, with the reason and the figures.

use serde::{Deserialize, Serialize};

use crate::table::PortalId;

/// One thing that happened, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the target's event log, from 1.
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub kind: EventKind,
    /// Why, in words, with the figures that led to it.
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// A session completed login through a portal.
    Login {
        initiator: String,
        target: String,
        portal: PortalId,
    },
    /// A session ended (logout or connection loss).
    Logout {
        initiator: String,
        target: String,
        portal: PortalId,
    },
    /// The (target, portal) Portal Group was deregistered in iSNS (patent step 108).
    RegistrationDeleted { target: String, portal: PortalId },
    /// An Async Message "logout requested" was sent (patent step 109).
    LogoutRequested {
        initiator: String,
        target: String,
        from: PortalId,
        to: PortalId,
    },
    /// A login to a portal was answered "target moved temporarily" (status 0x0101).
    Redirected {
        initiator: String,
        target: String,
        from: PortalId,
        to: PortalId,
    },
    /// A session asked to log out (a [`EventKind::LogoutRequested`]) did not log out within
    /// Time2Logout (plus the target's grace), so the target dropped its connection
    /// (AsyncEvent 2, RFC 7143 §11.9.1): a host that does not cooperate, moved by force.
    ForcedMove {
        initiator: String,
        target: String,
        /// The portal it was dropped from.
        from: PortalId,
        /// Where the balancer placed it (its next login elsewhere is redirected there).
        to: Option<PortalId>,
        /// The Time2Logout it was given, in seconds.
        time2logout: u16,
        /// From the logout request to the drop, in milliseconds.
        waited_ms: u64,
    },
    /// The (target, portal) Portal Group was registered again (patent step 112).
    RegistrationRestored { target: String, portal: PortalId },
    /// A decision could not be carried out (for example iSNS was unreachable).
    Failed { what: String },
    /// An operator changed how the balancer acts: paused or resumed it, pinned or unpinned
    /// an initiator (`portshift balance`, the admin endpoint).
    Operator { action: String },
}

impl EventKind {
    /// A short label for tables and logs.
    pub fn label(&self) -> &'static str {
        match self {
            EventKind::Login { .. } => "login",
            EventKind::Logout { .. } => "logout",
            EventKind::RegistrationDeleted { .. } => "registration-deleted",
            EventKind::LogoutRequested { .. } => "logout-requested",
            EventKind::Redirected { .. } => "redirected",
            EventKind::ForcedMove { .. } => "forced-move",
            EventKind::RegistrationRestored { .. } => "registration-restored",
            EventKind::Failed { .. } => "failed",
            EventKind::Operator { .. } => "operator",
        }
    }
}
