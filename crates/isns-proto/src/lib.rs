//! Sans-IO codec for the Internet Storage Name Service protocol (iSNSP), RFC 4171.
//!
//! * [`header`]: the 12-byte iSNSP PDU header (§5.1).
//! * [`tag`]: attribute tags (§6) and object types they belong to.
//! * [`attr`]: TLV attributes (§5.3) with typed constructors and accessors.
//! * [`function`]: function IDs (§5.1.3) and status codes (§5.7.3).
//! * [`message`]: whole messages: source, message key, delimiter, operating
//!   attributes (§5.6.1), encoding into PDUs and decoding from them.
//! * [`codec`]: stream framing: [`MessageDecoder`] turns a connection's bytes
//!   into messages, reassembling multi-PDU messages with the first/last PDU
//!   flags and sequence IDs (§5.1.4 - §5.1.6), within named limits.
//!
//! Nothing here does I/O and nothing panics on any input: every decoder
//! returns a [`Error`] for malformed or oversized data.

pub mod attr;
pub mod codec;
pub mod error;
pub mod function;
pub mod header;
pub mod message;
pub mod tag;

pub use attr::Attribute;
pub use codec::{DecodeError, MAX_PDUS_PER_MESSAGE, MessageDecoder};
pub use error::Error;
pub use function::{FunctionId, Status};
pub use header::{Flags, HEADER_LEN, Header, ISNSP_VERSION};
pub use message::Message;

/// Maximum iSNSP PDU payload length we accept or produce (open-isns uses the same bound).
pub const MAX_PDU_PAYLOAD: usize = 65_532;
/// Maximum total size of a reassembled message.
pub const MAX_MESSAGE_LEN: usize = 1 << 20;
/// Maximum number of attributes in one message.
pub const MAX_ATTRIBUTES: usize = 8192;
/// Maximum length of one attribute value.
pub const MAX_ATTR_LEN: usize = 8192;
