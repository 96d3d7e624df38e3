//! Decoding errors.

/// Why bytes could not be decoded as iSNSP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("truncated: need {need} bytes, have {have}")]
    Truncated { need: usize, have: usize },
    #[error("unsupported iSNSP version {0} (only 1 is defined)")]
    Version(u16),
    #[error("PDU payload length {0} exceeds the limit or is not a multiple of 4")]
    PduLength(usize),
    #[error("attribute tag {tag:#x} has length {len}: not a multiple of 4 or over the limit")]
    AttrLength { tag: u32, len: usize },
    #[error("too many attributes (limit {0})")]
    TooManyAttributes(usize),
    #[error("message too large (limit {0} bytes)")]
    MessageTooLarge(usize),
    #[error("message spans too many PDUs (limit {0})")]
    TooManyPdus(usize),
    #[error("response PDU without a status code")]
    MissingStatus,
    #[error("PDU sequence error: {0}")]
    Sequence(&'static str),
}
