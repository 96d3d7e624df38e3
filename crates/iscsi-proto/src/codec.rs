//! Framing of PDUs on a byte stream (RFC 7143 §11.2 layout, §13.1 digests):
//! a sans-IO decoder over a `BytesMut` and header/payload encoders that let an
//! I/O shell write a header and a shared payload with one vectored write.

use bytes::{Buf, Bytes, BytesMut};

use crate::bhs::{BHS_LEN, Bhs, DIGEST_LEN, MAX_DATA_SEGMENT_LENGTH, Opcode, pad_len};
use crate::error::{DecodeError, EncodeError};
use crate::pdu::Pdu;

/// Which CRC32C digests are in use on a connection (§13.1); both off during login.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Digests {
    /// HeaderDigest=CRC32C.
    pub header: bool,
    /// DataDigest=CRC32C.
    pub data: bool,
}

impl Digests {
    /// No digests (login phase default).
    pub const NONE: Digests = Digests {
        header: false,
        data: false,
    };
}

/// Hard upper bound for MaxRecvDataSegmentLength accepted by the decoder.
pub const HARD_MAX_RECV_DATA_SEGMENT_LENGTH: u32 = 16 * 1024 * 1024;

/// Receive limits of a decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Our declared MaxRecvDataSegmentLength (§13.12); capped at 16 MiB.
    pub max_recv_data_segment_length: u32,
}

impl Default for Limits {
    /// 8192, the RFC 7143 §13.12 default, which also applies during login.
    fn default() -> Self {
        Limits {
            max_recv_data_segment_length: 8192,
        }
    }
}

/// CRC32C as iSCSI uses it (§13.1, Appendix B.4): transmitted least significant byte first.
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

/// Incremental stream decoder of PDUs.
#[derive(Debug, Clone)]
pub struct PduDecoder {
    limits: Limits,
    digests: Digests,
}

impl PduDecoder {
    /// A decoder with the given limits and no digests.
    pub fn new(limits: Limits) -> Self {
        let mut d = PduDecoder {
            limits: Limits::default(),
            digests: Digests::NONE,
        };
        d.set_limits(limits);
        d
    }

    /// Change limits (e.g. after login negotiated MaxRecvDataSegmentLength).
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = Limits {
            max_recv_data_segment_length: limits
                .max_recv_data_segment_length
                .min(HARD_MAX_RECV_DATA_SEGMENT_LENGTH),
        };
    }

    /// Current limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Switch digests (after the final login response, §6.3.6 / §13.1).
    pub fn set_digests(&mut self, digests: Digests) {
        self.digests = digests;
    }

    /// Current digests.
    pub fn digests(&self) -> Digests {
        self.digests
    }

    /// Decode one PDU from the front of `buf`.
    ///
    /// `Ok(None)`: more bytes are needed (capacity for the whole PDU is reserved).
    /// On success the PDU's bytes are removed from `buf`; the data segment is split
    /// off without copying. See [`DecodeError`] for which errors consume input.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Pdu>, DecodeError> {
        let Some(head) = buf.get(..BHS_LEN) else {
            return Ok(None);
        };
        let mut raw = [0u8; BHS_LEN];
        raw.copy_from_slice(head);
        let bhs = Bhs(raw);
        let dsl = bhs.data_segment_length();
        if dsl > self.limits.max_recv_data_segment_length {
            return Err(DecodeError::DataSegmentTooLarge {
                length: dsl,
                limit: self.limits.max_recv_data_segment_length,
            });
        }
        let dsl = dsl as usize;
        let ahs_len = bhs.total_ahs_len();
        let hd = if self.digests.header { DIGEST_LEN } else { 0 };
        let padded = dsl + pad_len(dsl);
        let dd = if self.digests.data && dsl > 0 {
            DIGEST_LEN
        } else {
            0
        };
        let total = BHS_LEN + ahs_len + hd + padded + dd;
        if buf.len() < total {
            buf.reserve(total - buf.len());
            return Ok(None);
        }

        // The header is copied (it is parsed into fields anyway) and consumed with `advance`:
        // splitting it off would share the buffer, a reference count taken and dropped per
        // PDU, and an allocation whenever the buffer goes from owned to shared.
        let ahs = buf.get(BHS_LEN..BHS_LEN + ahs_len).unwrap_or(&[]).to_vec();
        let header_crc = (hd > 0).then(|| crc32c(buf.get(..BHS_LEN + ahs_len).unwrap_or(&[])));
        buf.advance(BHS_LEN + ahs_len);
        if let Some(computed) = header_crc {
            let received = buf.get_u32_le();
            if received != computed {
                buf.advance(padded + dd);
                return Err(DecodeError::HeaderDigest { computed, received });
            }
        }
        let data = if padded == 0 {
            Bytes::new()
        } else {
            let mut seg = buf.split_to(padded);
            if dd > 0 {
                let received = buf.get_u32_le();
                let computed = crc32c(&seg);
                if received != computed {
                    return Err(DecodeError::DataDigest {
                        computed,
                        received,
                        header: Box::new(raw),
                    });
                }
            }
            seg.truncate(dsl);
            seg.freeze()
        };

        let opcode = bhs.opcode_raw();
        if Opcode::from_u8(opcode).is_none() {
            return Err(DecodeError::UnknownOpcode {
                opcode,
                header: Box::new(raw),
            });
        }
        Pdu::from_parts(&bhs, &ahs, data)
            .map(Some)
            .map_err(|reason| DecodeError::Malformed {
                opcode,
                reason,
                header: Box::new(raw),
            })
    }
}

impl PduDecoder {
    /// The header of a Data-Out (RFC 7143 §11.7) at the front of `buf` whose data segment is
    /// not all in `buf` yet, for a receiver that takes the rest of that segment straight from
    /// the socket into the write's buffer instead of copying it out of `buf`: the PDU (with an
    /// empty `data`), the bytes its header takes in `buf` (BHS and header digest), and its
    /// DataSegmentLength. Only a plain case qualifies: no AHS, no data digest, a segment of at
    /// least `min_data` bytes within the limits and a multiple of 4 (no padding), a header
    /// digest that matches. Anything else gives `None` and is left to [`PduDecoder::decode`],
    /// errors included; `buf` is never changed.
    pub fn data_out_header(&self, buf: &[u8], min_data: usize) -> Option<DataOutHeader> {
        let head = buf.get(..BHS_LEN)?;
        let mut raw = [0u8; BHS_LEN];
        raw.copy_from_slice(head);
        let bhs = Bhs(raw);
        let dsl = bhs.data_segment_length();
        let plain = bhs.opcode_raw() == Opcode::DataOut as u8
            && bhs.total_ahs_len() == 0
            && !self.digests.data
            && dsl <= self.limits.max_recv_data_segment_length
            && dsl as usize >= min_data.max(1)
            && dsl.is_multiple_of(4);
        if !plain {
            return None;
        }
        let header_len = BHS_LEN + if self.digests.header { DIGEST_LEN } else { 0 };
        let digest = buf.get(BHS_LEN..header_len)?;
        if self.digests.header {
            let received = u32::from_le_bytes(digest.try_into().ok()?);
            if received != crc32c(head) {
                return None;
            }
        }
        if buf.len() >= header_len + dsl as usize {
            return None;
        }
        match Pdu::from_parts(&bhs, &[], Bytes::new()) {
            Ok(Pdu::DataOut(pdu)) => Some(DataOutHeader {
                pdu,
                header_len,
                data_len: dsl,
            }),
            _ => None,
        }
    }
}

/// What [`PduDecoder::data_out_header`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataOutHeader {
    /// The Data-Out, its `data` empty.
    pub pdu: crate::pdu::DataOut,
    /// Bytes of the header in the stream (BHS and header digest).
    pub header_len: usize,
    /// DataSegmentLength: the bytes that follow the header.
    pub data_len: u32,
}

/// Padding and data digest written after a payload (at most 3 + 4 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Trailer {
    buf: [u8; 7],
    len: u8,
}

impl Trailer {
    /// The bytes to write after the payload.
    pub fn as_slice(&self) -> &[u8] {
        self.buf.get(..self.len as usize).unwrap_or(&[])
    }
}

/// The part of an encoded PDU that follows the header: write `data` then `trailer`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Payload {
    /// The data segment, shared without copying.
    pub data: Bytes,
    /// Padding to 4 bytes plus the data digest, if any.
    pub trailer: Trailer,
}

/// Data segments at most this long are copied next to their header when a batch of PDUs is
/// encoded for one vectored write; longer ones go out by reference, each in its own I/O
/// vector (fewer vectors for small PDUs, no copy of large payloads). Used by the target's
/// portals and the initiator alike.
pub const COPY_DATA_MAX: usize = 2048;

impl Payload {
    /// Total bytes of data plus trailer.
    pub fn len(&self) -> usize {
        self.data.len() + self.trailer.len as usize
    }

    /// True when nothing follows the header.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Pdu {
    /// Write BHS, AHS and header digest to `out`; return the payload to write after it.
    /// This is the zero-copy path for vectored writes (RFC 7143 §11.2 PDU layout).
    pub fn encode_header(
        &self,
        out: &mut BytesMut,
        digests: Digests,
    ) -> Result<Payload, EncodeError> {
        let mut parts = self.parts()?;
        let dsl = parts.data.len();
        if dsl > MAX_DATA_SEGMENT_LENGTH as usize {
            return Err(EncodeError::DataSegmentTooLarge(dsl));
        }
        // AHS area is already padded; bounded by the Extended CDB length check.
        let ahs_words = u8::try_from(parts.ahs.len() / 4)
            .map_err(|_| EncodeError::ExtendedCdbTooLarge(parts.ahs.len()))?;
        parts.bhs.set_lengths(ahs_words, dsl as u32);
        let start = out.len();
        out.reserve(BHS_LEN + parts.ahs.len() + DIGEST_LEN);
        out.extend_from_slice(&parts.bhs.0);
        out.extend_from_slice(&parts.ahs);
        if digests.header {
            let crc = crc32c(out.get(start..).unwrap_or(&[]));
            out.extend_from_slice(&crc.to_le_bytes());
        }
        let mut trailer = Trailer::default();
        let pad = pad_len(dsl);
        trailer.len = pad as u8;
        if digests.data && dsl > 0 {
            let crc = crc32c::crc32c_append(crc32c(&parts.data), &[0u8; 3][..pad]);
            trailer.buf[pad..pad + DIGEST_LEN].copy_from_slice(&crc.to_le_bytes());
            trailer.len += DIGEST_LEN as u8;
        }
        Ok(Payload {
            data: parts.data,
            trailer,
        })
    }

    /// Encode the whole PDU into `out` (copies the data segment).
    pub fn encode(&self, out: &mut BytesMut, digests: Digests) -> Result<(), EncodeError> {
        let payload = self.encode_header(out, digests)?;
        out.extend_from_slice(&payload.data);
        out.extend_from_slice(payload.trailer.as_slice());
        Ok(())
    }

    /// Encode into a fresh buffer.
    pub fn to_bytes(&self, digests: Digests) -> Result<BytesMut, EncodeError> {
        let mut out = BytesMut::new();
        self.encode(&mut out, digests)?;
        Ok(out)
    }
}
