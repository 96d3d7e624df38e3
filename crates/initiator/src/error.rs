//! Errors of the initiator library.

use std::net::SocketAddr;

use scsi::Sense;
use scsi::task::ScsiStatus;

/// Why one SCSI task did not complete with GOOD status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskError {
    /// CHECK CONDITION with sense data (SPC-4 §4.5).
    #[error(
        "CHECK CONDITION: sense key {:?} asc 0x{:02x} ascq 0x{:02x}",
        .0.key, .0.asc.asc, .0.asc.ascq
    )]
    CheckCondition(Sense),
    /// CHECK CONDITION without parseable sense data.
    #[error("CHECK CONDITION without usable sense data")]
    CheckConditionNoSense,
    /// Any other non-GOOD SCSI status (e.g. 0x08 BUSY, 0x18 RESERVATION CONFLICT).
    #[error("SCSI status 0x{0:02x}")]
    Status(u8),
    /// iSCSI Response field other than "Command Completed at Target" (RFC 7143 §11.4.3).
    #[error("iSCSI response 0x{0:02x} (target failure)")]
    TargetFailure(u8),
    /// The target rejected the command PDU (RFC 7143 §11.17).
    #[error("command rejected, reason 0x{0:02x}")]
    Rejected(u8),
    /// The target sent a malformed Data-In sequence for this task.
    #[error("protocol error in task: {0}")]
    Protocol(&'static str),
    /// The session ended (logout, drop, connection loss) before the task completed;
    /// the command may be re-issued on a new session.
    #[error("session ended before the task completed")]
    Unfinished,
}

impl TaskError {
    /// True when re-issuing the same command on a (new) session is the right reaction.
    pub fn is_retryable(&self) -> bool {
        match self {
            TaskError::Unfinished => true,
            TaskError::Rejected(r) => *r == iscsi_proto::reject_reason::WAITING_FOR_LOGOUT,
            TaskError::CheckCondition(s) => s.is_unit_attention(),
            TaskError::Status(s) => matches!(
                ScsiStatus::from_code(*s),
                Some(ScsiStatus::Busy | ScsiStatus::TaskSetFull)
            ),
            _ => false,
        }
    }
}

/// Session-level errors: login, transport, protocol.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// TCP connect/read/write failed.
    #[error("I/O error talking to {portal}: {source}")]
    Io {
        /// The portal.
        portal: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// A timeout expired.
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// The target ended the login with a status class other than success/redirect (RFC 7143 §11.13.5).
    #[error("login failed: status class 0x{class:02x} detail 0x{detail:02x}")]
    LoginFailed {
        /// Status-Class.
        class: u8,
        /// Status-Detail.
        detail: u8,
    },
    /// Login negotiation error.
    #[error("login: {0}")]
    Login(#[from] iscsi_proto::LoginError),
    /// Too many redirects in a row.
    #[error("too many login redirects (last to {0})")]
    TooManyRedirects(SocketAddr),
    /// A redirect without a usable TargetAddress.
    #[error("redirect with unusable TargetAddress {0:?}")]
    BadRedirect(String),
    /// PDU decode error.
    #[error("PDU decode: {0}")]
    Decode(#[from] iscsi_proto::DecodeError),
    /// PDU encode error.
    #[error("PDU encode: {0}")]
    Encode(#[from] iscsi_proto::EncodeError),
    /// Text key error.
    #[error("text: {0}")]
    Text(#[from] iscsi_proto::TextError),
    /// The target broke the protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The session is closed.
    #[error("session closed")]
    Closed,
    /// Discovery (iSNS or SendTargets) found nothing usable.
    #[error("discovery: {0}")]
    Discovery(String),
}
