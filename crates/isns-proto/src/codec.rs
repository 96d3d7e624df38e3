//! Stream framing of iSNSP: a sans-IO decoder turning the bytes of one TCP
//! connection into whole [`Message`]s, RFC 4171 §5.1 (12-byte PDU header and
//! PDU length), §5.1.4 (first/last PDU flags), §5.1.5 (transaction ID) and
//! §5.1.6 (sequence ID) for messages that span several PDUs (§5.4).
//!
//! The server and the client both read into a `BytesMut` and call
//! [`MessageDecoder::decode`] until it asks for more bytes; nothing else in
//! the workspace parses iSNSP framing.
//!
//! Limits (each violation is a [`DecodeError`], never a panic or an
//! unbounded allocation):
//!
//! * PDU payload: at most [`MAX_PDU_PAYLOAD`] bytes and a multiple of 4 (§5.1.3);
//! * reassembled message: at most [`MAX_MESSAGE_LEN`] bytes (1 MiB), or less
//!   with [`MessageDecoder::with_max_message_len`];
//! * PDUs per message: at most [`MAX_PDUS_PER_MESSAGE`];
//! * attributes: [`crate::MAX_ATTRIBUTES`] per message, [`crate::MAX_ATTR_LEN`] bytes each.

use bytes::{Buf, BytesMut};

#[cfg(doc)]
use crate::MAX_PDU_PAYLOAD;
use crate::header::{Flags, HEADER_LEN, Header};
use crate::{Error, FunctionId, MAX_MESSAGE_LEN, Message, Status};

/// Most PDUs one message may span. A message of [`MAX_MESSAGE_LEN`] bytes in
/// full-size PDUs needs 17; this leaves room for senders using small PDUs
/// while bounding a stream of empty continuation PDUs.
pub const MAX_PDUS_PER_MESSAGE: usize = 4096;

/// Why [`MessageDecoder::decode`] could not produce a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} (function {:#06x}, transaction {xid}): {error}", function.name(), function.0)]
pub struct DecodeError {
    /// Function ID of the offending PDU's header (raw bytes 2..4 when the
    /// header itself is invalid).
    pub function: FunctionId,
    /// Transaction ID of the offending PDU's header.
    pub xid: u16,
    /// What is wrong.
    pub error: Error,
}

impl DecodeError {
    /// Whether framing can no longer be trusted and the connection should be
    /// closed: a bad header (nothing was consumed), a broken PDU sequence or
    /// a size/count limit. Otherwise the offending message was consumed and
    /// the next one can be decoded.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self.error,
            Error::Version(_)
                | Error::PduLength(_)
                | Error::Truncated { .. }
                | Error::Sequence(_)
                | Error::MessageTooLarge(_)
                | Error::TooManyPdus(_)
        )
    }

    /// The status a server answers with (§5.7.3): Version Not Supported for
    /// an unknown iSNSP version, Message Format Error otherwise.
    pub fn status(&self) -> Status {
        match self.error {
            Error::Version(_) => Status::VERSION_NOT_SUPPORTED,
            _ => Status::MESSAGE_FORMAT_ERROR,
        }
    }

    /// The error response for the offending request; `None` when the PDU
    /// was itself a response (responses are never answered).
    pub fn error_response(&self) -> Option<Message> {
        (!self.function.is_response())
            .then(|| Message::error_response(self.function, self.xid, self.status()))
    }
}

/// The message being reassembled from its PDUs.
#[derive(Debug, Clone)]
struct Partial {
    function: FunctionId,
    flags: Flags,
    xid: u16,
    /// PDUs received so far, which is also the next expected sequence ID.
    pdus: usize,
    payload: Vec<u8>,
}

/// Incremental decoder of the iSNSP messages on one connection.
#[derive(Debug, Clone)]
pub struct MessageDecoder {
    partial: Option<Partial>,
    /// Largest reassembled message accepted (at most [`MAX_MESSAGE_LEN`]).
    max_message_len: usize,
}

impl Default for MessageDecoder {
    fn default() -> MessageDecoder {
        MessageDecoder {
            partial: None,
            max_message_len: MAX_MESSAGE_LEN,
        }
    }
}

impl MessageDecoder {
    /// A decoder with no message pending.
    pub fn new() -> MessageDecoder {
        MessageDecoder::default()
    }

    /// A decoder refusing messages longer than `max` bytes of payload
    /// (clamped to 4..=[`MAX_MESSAGE_LEN`]) with
    /// [`Error::MessageTooLarge`], a fatal error.
    pub fn with_max_message_len(max: usize) -> MessageDecoder {
        MessageDecoder {
            partial: None,
            max_message_len: max.clamp(4, MAX_MESSAGE_LEN),
        }
    }

    /// The largest message this decoder accepts, bytes of payload.
    pub fn max_message_len(&self) -> usize {
        self.max_message_len
    }

    /// Decode the next whole message from the front of `buf`.
    ///
    /// Complete PDUs are consumed from `buf` as they are read; `Ok(None)`
    /// means more bytes are needed (capacity for the current PDU is
    /// reserved). A header that does not decode is left in `buf`; after any
    /// error the pending message is dropped. See [`DecodeError::is_fatal`].
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, DecodeError> {
        loop {
            let Some(head) = buf.get(..HEADER_LEN) else {
                buf.reserve(HEADER_LEN - buf.len());
                return Ok(None);
            };
            let header = Header::decode(head).map_err(|error| {
                self.partial = None;
                let word = |i: usize| u16::from_be_bytes([head[i], head[i + 1]]);
                DecodeError {
                    function: FunctionId(word(2)),
                    xid: word(8),
                    error,
                }
            })?;
            let end = HEADER_LEN + usize::from(header.pdu_length);
            if buf.len() < end {
                buf.reserve(end - buf.len());
                return Ok(None);
            }
            buf.advance(HEADER_LEN);
            let payload = buf.split_to(end - HEADER_LEN);
            let fail = |error| DecodeError {
                function: header.function,
                xid: header.xid,
                error,
            };
            match self.push(&header, &payload) {
                Ok(Some(p)) => {
                    return Message::decode(p.function, p.flags, p.xid, &p.payload)
                        .map(Some)
                        .map_err(fail);
                }
                Ok(None) => {}
                Err(e) => {
                    self.partial = None;
                    return Err(fail(e));
                }
            }
        }
    }

    /// Whether part of a multi-PDU message has been received.
    pub fn is_pending(&self) -> bool {
        self.partial.is_some()
    }

    /// Add one PDU to the pending message; returns the message when this was
    /// its last PDU. A PDU with the first flag (or sequence 0 when no message
    /// is pending) starts a new message.
    fn push(&mut self, header: &Header, payload: &[u8]) -> Result<Option<Partial>, Error> {
        let starts =
            header.flags.contains(Flags::FIRST_PDU) || (self.partial.is_none() && header.seq == 0);
        if starts {
            if header.seq != 0 {
                return Err(Error::Sequence("first PDU with non-zero sequence ID"));
            }
            self.partial = Some(Partial {
                function: header.function,
                flags: Flags(header.flags.0 & !(Flags::FIRST_PDU.0 | Flags::LAST_PDU.0)),
                xid: header.xid,
                pdus: 0,
                payload: Vec::new(),
            });
        }
        let Some(p) = self.partial.as_mut() else {
            return Err(Error::Sequence("continuation PDU without a first PDU"));
        };
        if p.function != header.function || p.xid != header.xid || p.pdus != usize::from(header.seq)
        {
            return Err(Error::Sequence("PDU does not continue the pending message"));
        }
        if p.pdus >= MAX_PDUS_PER_MESSAGE {
            return Err(Error::TooManyPdus(MAX_PDUS_PER_MESSAGE));
        }
        if p.payload.len() + payload.len() > self.max_message_len {
            return Err(Error::MessageTooLarge(self.max_message_len));
        }
        p.payload.extend_from_slice(payload);
        p.pdus += 1;
        if header.flags.contains(Flags::LAST_PDU) {
            Ok(self.partial.take())
        } else {
            Ok(None)
        }
    }
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
