//! What a connection core tells its shell about the session's life.

use std::time::Duration;

use iscsi_proto::params::SessionType;

/// A change the control plane must record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Login completed: the session is in full feature phase (RFC 7143 §6.3). For a normal
    /// session the shell records it and gives the core its I_T nexus id
    /// ([`crate::Connection::set_nexus`]).
    FullFeature {
        session_type: SessionType,
        initiator: String,
        /// None for a discovery session.
        target: Option<String>,
        tsih: u16,
        /// ISID of the session: with the initiator name, the SCSI initiator port
        /// (RFC 7143 §4.4.1); with the target name and portal group tag, the I_T nexus.
        isid: [u8; 6],
        portal_group_tag: u16,
    },
    /// A login was refused for failed authentication (status 0x0201, RFC 7143 §12.1.3): the
    /// shell logs it with the peer's address and answers after a delay that grows with that
    /// address's recent failures.
    AuthenticationFailed {
        initiator: String,
        /// None for a discovery session.
        target: Option<String>,
        why: String,
    },
    /// The connection, and with it the session, ended (after [`crate::Connection::on_closed`]).
    Ended { why: CloseReason },
}

/// Why a connection closes, as recorded when its session ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The initiator sent a Logout Request and it was answered (§11.14, §11.15).
    Logout,
    /// The initiator asked for a TARGET COLD RESET, which drops the connection (§11.5.1).
    ColdReset,
    /// The login ended without reaching full feature phase (refused or redirected, §11.13.5).
    LoginEnded,
    /// The initiator did not log out within Time2Logout (+ the grace) of an Async Message
    /// "logout requested": the target dropped it with AsyncEvent 2 (§11.9.1). For the
    /// balancer this is a forced move.
    LogoutIgnored {
        /// The Time2Logout the request gave, in seconds.
        time2logout: u16,
        /// From the request to the drop.
        waited: Duration,
    },
    /// The target gave up on the connection (protocol error, unanswered ping).
    Failed(String),
    /// The shell's side: the socket closed or failed, or the target shuts down.
    Transport(String),
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::Logout => f.write_str("logout requested by the initiator"),
            CloseReason::ColdReset => f.write_str("target cold reset requested by the initiator"),
            CloseReason::LoginEnded => f.write_str("login ended"),
            CloseReason::LogoutIgnored {
                time2logout,
                waited,
            } => write!(
                f,
                "closed by the target: the initiator did not log out when asked (Time2Logout \
                 {time2logout} s, dropped after {:.1} s)",
                waited.as_secs_f64()
            ),
            CloseReason::Failed(why) => write!(f, "closed by the target: {why}"),
            CloseReason::Transport(why) => f.write_str(why),
        }
    }
}
