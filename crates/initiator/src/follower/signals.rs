//! What goes into the [`Follower`](super::Follower) ([`Event`]) and what comes
//! out of it ([`Action`], [`Record`]).

use std::net::SocketAddr;
use std::time::Duration;

#[cfg(doc)]
use super::{Follower, MAX_TIME2WAIT};
use super::{InitiatorEvent, MoveRecord, ReconnectRecord};

/// What happened, as the caller saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The target asked for a logout (AsyncEvent 1 with its Parameter3, or AsyncEvent 4
    /// with zero); the session stopped issuing and logs out once drained.
    LogoutRequested {
        /// Time the target allows for the logout.
        time2logout: Duration,
    },
    /// The Logout Response arrived.
    LoggedOut,
    /// The connection failed, or the target announced a drop (then with its Time2Wait).
    ConnectionLost {
        /// Why.
        reason: String,
        /// Wait this long before logging in again (capped at [`MAX_TIME2WAIT`]).
        time2wait: Duration,
    },
    /// The session is closed: drained and logged out, or gone with its connection.
    SessionClosed,
    /// The portal lookup answered, in the order given (an empty list is a failed round).
    Discovered(Vec<SocketAddr>),
    /// The portal lookup failed.
    DiscoveryFailed(String),
    /// The login at the [`Action::Login`] portal reached the full feature phase.
    LoginOk,
    /// The login was redirected to this portal (Status-Class 1, TargetAddress).
    LoginRedirect(SocketAddr),
    /// The login failed.
    LoginFailed(String),
    /// Stop following: log out and end.
    Stop,
    /// Time passed (see [`Follower::poll_timeout`]).
    Tick,
}

/// One record the caller keeps for reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A target-requested move.
    Move(MoveRecord),
    /// A reconnect the target did not ask for.
    Reconnect(ReconnectRecord),
}

/// What the caller must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// New commands wait for the next session.
    StopIssuing,
    /// Ask the session to drain and log out (RFC 7143 §11.14, close the session).
    SendLogout,
    /// Look the target's portals up (iSNS DevAttrQry, SendTargets, or the fixed portal);
    /// answer with [`Event::Discovered`] or [`Event::DiscoveryFailed`].
    LookUpPortals,
    /// Connect and log in once at this portal; answer with [`Event::LoginOk`],
    /// [`Event::LoginRedirect`] or [`Event::LoginFailed`].
    Login(SocketAddr),
    /// The new session is up: issue there the commands that waited or came back unfinished.
    Reissue,
    /// Keep this record (and announce it as [`InitiatorEvent::Moved`] or
    /// [`InitiatorEvent::Reconnected`]).
    Record(Record),
    /// Announce this event.
    Emit(InitiatorEvent),
    /// Recovery gave up: fail commands from now on.
    Fail(String),
    /// Stopping: fail commands from now on, abandon any lookup or login under way.
    Shutdown,
}
