//! What the [`Follower`](super::Follower) reports: the events of a balanced
//! initiator in order, and the records of moves and reconnects kept for reports.

use std::net::SocketAddr;

/// What the balanced initiator did, in order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum InitiatorEvent {
    /// Initial discovery result (iSNS or SendTargets or the fixed portal).
    Discovered {
        /// Portals in the order given.
        portals: Vec<SocketAddr>,
    },
    /// A session is up.
    LoggedIn {
        /// Where.
        portal: SocketAddr,
        /// The portal that redirected us there, if any.
        redirected_from: Option<SocketAddr>,
    },
    /// The target asked for a logout (AsyncEvent 1, or 4 handled alike).
    LogoutRequested {
        /// The session's portal.
        portal: SocketAddr,
    },
    /// The session logged out.
    LoggedOut {
        /// The session's portal.
        portal: SocketAddr,
    },
    /// The connection failed or the target announced a drop.
    ConnectionLost {
        /// The session's portal.
        portal: SocketAddr,
        /// Why.
        reason: String,
    },
    /// iSNS was asked again during recovery.
    IsnsQueried {
        /// Portals in the order given.
        portals: Vec<SocketAddr>,
    },
    /// The host leaves voluntarily ([`BalancedConfig::reconnect_every`](crate::BalancedConfig::reconnect_every)): drain and log out.
    Leaving {
        /// The session's portal.
        portal: SocketAddr,
    },
    /// After the target's logout request, the session continues here.
    Moved {
        /// Old portal.
        from: SocketAddr,
        /// New portal.
        to: SocketAddr,
        /// Milliseconds between the logout request and the new login.
        pause_ms: u64,
    },
    /// After a voluntary logout or a connection loss, the session continues here.
    Reconnected {
        /// Old portal.
        from: SocketAddr,
        /// New portal (the same or another).
        to: SocketAddr,
        /// Why the old session ended.
        cause: ReconnectCause,
        /// Milliseconds of interruption.
        pause_ms: u64,
    },
    /// Recovery gave up; commands fail from now on.
    Failed {
        /// Why.
        reason: String,
    },
}

/// One target-requested move (AsyncEvent 1 "logout requested", or 4), as recorded for reports.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MoveRecord {
    /// When the logout request arrived, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Old portal.
    pub from: SocketAddr,
    /// New portal.
    pub to: SocketAddr,
    /// Milliseconds between the logout request and the new login.
    pub pause_ms: u64,
}

/// Why a session ended without a request from the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReconnectCause {
    /// The host left voluntarily ([`BalancedConfig::reconnect_every`](crate::BalancedConfig::reconnect_every)).
    Voluntary,
    /// The connection failed, or the target announced a drop (AsyncEvent 2/3).
    ConnectionLost,
}

/// One reconnect the target did not ask for, as recorded for reports.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReconnectRecord {
    /// When the old session started ending, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Old portal.
    pub from: SocketAddr,
    /// New portal (the same or another).
    pub to: SocketAddr,
    /// Why the old session ended.
    pub cause: ReconnectCause,
    /// Milliseconds between the end of the old session starting and the new login.
    pub pause_ms: u64,
}

impl MoveRecord {
    /// The event a caller is told of this move.
    pub fn event(&self) -> InitiatorEvent {
        InitiatorEvent::Moved {
            from: self.from,
            to: self.to,
            pause_ms: self.pause_ms,
        }
    }
}

impl ReconnectRecord {
    /// The event a caller is told of this reconnection.
    pub fn event(&self) -> InitiatorEvent {
        InitiatorEvent::Reconnected {
            from: self.from,
            to: self.to,
            cause: self.cause,
            pause_ms: self.pause_ms,
        }
    }
}
