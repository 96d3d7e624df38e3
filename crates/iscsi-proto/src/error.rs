//! Error types of the iSCSI protocol core.

use thiserror::Error;

use crate::bhs::BHS_LEN;

/// Errors returned by [`crate::codec::PduDecoder::decode`] (RFC 7143 §11).
///
/// Unless stated otherwise the offending PDU has been consumed from the input
/// buffer, so a caller may answer with a Reject (§11.17) and keep reading.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// DataSegmentLength exceeds our declared MaxRecvDataSegmentLength.
    /// The PDU is NOT consumed: framing cannot be trusted, drop the connection.
    #[error("data segment of {length} bytes exceeds limit of {limit} bytes")]
    DataSegmentTooLarge {
        /// DataSegmentLength from the header.
        length: u32,
        /// The configured limit.
        limit: u32,
    },
    /// The opcode is not defined by RFC 7143 (Reject reason 0x04/0x05).
    #[error("unknown opcode {opcode:#04x}")]
    UnknownOpcode {
        /// The 6-bit opcode.
        opcode: u8,
        /// The complete BHS of the offending PDU.
        header: Box<[u8; BHS_LEN]>,
    },
    /// Header digest mismatch (§13.1). The PDU is consumed, but its length
    /// fields are suspect: the connection should be dropped.
    #[error("header digest mismatch: computed {computed:#010x}, received {received:#010x}")]
    HeaderDigest {
        /// CRC32C we computed.
        computed: u32,
        /// CRC32C in the stream.
        received: u32,
    },
    /// Data digest mismatch (§13.1); answer with Reject reason 0x02.
    #[error("data digest mismatch: computed {computed:#010x}, received {received:#010x}")]
    DataDigest {
        /// CRC32C we computed.
        computed: u32,
        /// CRC32C in the stream.
        received: u32,
        /// The complete BHS of the offending PDU.
        header: Box<[u8; BHS_LEN]>,
    },
    /// A header field or AHS violates RFC 7143 (Reject reason 0x04 or 0x09).
    #[error("malformed PDU (opcode {opcode:#04x}): {reason}")]
    Malformed {
        /// The 6-bit opcode.
        opcode: u8,
        /// What is wrong.
        reason: &'static str,
        /// The complete BHS of the offending PDU.
        header: Box<[u8; BHS_LEN]>,
    },
}

impl DecodeError {
    /// The rejected header, when the error carries one (for a Reject PDU).
    pub fn header(&self) -> Option<&[u8; BHS_LEN]> {
        match self {
            DecodeError::UnknownOpcode { header, .. }
            | DecodeError::DataDigest { header, .. }
            | DecodeError::Malformed { header, .. } => Some(header),
            _ => None,
        }
    }

    /// Whether the connection can keep being read after this error.
    pub fn is_recoverable(&self) -> bool {
        matches!(
            self,
            DecodeError::UnknownOpcode { .. }
                | DecodeError::DataDigest { .. }
                | DecodeError::Malformed { .. }
        )
    }
}

/// Errors from encoding a PDU.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EncodeError {
    /// The data segment does not fit the 24-bit DataSegmentLength (§11.2.1.5).
    #[error("data segment of {0} bytes does not fit in 24 bits")]
    DataSegmentTooLarge(usize),
    /// The Extended CDB does not fit one AHS (§11.2.2.3).
    #[error("extended CDB of {0} bytes is too long")]
    ExtendedCdbTooLarge(usize),
    /// Sense data longer than the 16-bit SenseLength (§11.4.7.2).
    #[error("sense data of {0} bytes is too long")]
    SenseTooLarge(usize),
}

/// Errors from parsing or building text key=value data (RFC 7143 §6.1).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TextError {
    /// A key=value string has no '='.
    #[error("key=value pair without '='")]
    MissingEquals,
    /// Empty key name.
    #[error("empty key name")]
    EmptyKey,
    /// Key name longer than 63 bytes (§6.1).
    #[error("key name longer than 63 bytes")]
    KeyTooLong,
    /// Key name with a character outside the allowed set (§6.1).
    #[error("invalid character in key name")]
    InvalidKey,
    /// Value longer than allowed for the key (§6.1, §13).
    #[error("value of key {key} longer than {limit} bytes")]
    ValueTooLong {
        /// The key.
        key: String,
        /// The applicable limit.
        limit: usize,
    },
    /// Text is not valid UTF-8 (§6.1 requires UTF-8).
    #[error("text is not UTF-8")]
    NotUtf8,
    /// The last pair lacks its terminating NUL while the C bit was clear.
    #[error("text not NUL-terminated")]
    Unterminated,
    /// The total text exceeds the negotiation limit.
    #[error("text of {0} bytes exceeds the limit")]
    TooLarge(usize),
    /// More pairs than allowed.
    #[error("too many key=value pairs")]
    TooManyPairs,
    /// Keys in an order the RFC does not allow (e.g. TargetAddress before TargetName).
    #[error("bad key sequence: {0}")]
    Sequence(&'static str),
    /// A value that does not parse for its key.
    #[error("bad value for key {0}")]
    BadValue(String),
    /// The same key appears twice in one negotiation (§6.2).
    #[error("key {0} sent twice")]
    DuplicateKey(String),
}

/// Errors from the initiator side of login (RFC 7143 §6.3, §11.13).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LoginError {
    /// The target's text data was invalid.
    #[error("invalid login text: {0}")]
    Text(#[from] TextError),
    /// The target answered a key inconsistently with the negotiation rules.
    #[error("target answered {key}={value} which is not acceptable")]
    BadAnswer {
        /// Key.
        key: String,
        /// Value.
        value: String,
    },
    /// The target violated the login stage rules.
    #[error("login protocol violation: {0}")]
    Protocol(&'static str),
    /// Too many login round trips.
    #[error("login did not finish within {0} round trips")]
    TooManyRoundTrips(u32),
    /// CHAP failed on the initiator's side: the target's challenge or answer was not
    /// acceptable (RFC 7143 §12.1.3).
    #[error("CHAP: {0}")]
    Authentication(String),
}
