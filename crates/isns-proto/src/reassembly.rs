//! Multi-PDU message reassembly, RFC 4171 §5.1.4 (first/last PDU flags),
//! §5.1.5 (transaction ID) and §5.1.6 (sequence ID).

use crate::header::{Flags, Header};
use crate::{Error, FunctionId, MAX_MESSAGE_LEN, Message};

#[derive(Debug)]
struct Partial {
    function: FunctionId,
    flags: Flags,
    xid: u16,
    next_seq: u16,
    payload: Vec<u8>,
}

/// Collects the PDUs of one message at a time from one connection.
#[derive(Debug, Default)]
pub struct Reassembler {
    partial: Option<Partial>,
}

impl Reassembler {
    /// Feed one PDU (its decoded header and payload). Returns the message when
    /// the last PDU arrives. A PDU with the first flag (or sequence 0 when no
    /// message is pending) starts a new message.
    pub fn push(&mut self, header: &Header, payload: &[u8]) -> Result<Option<Message>, Error> {
        let starts =
            header.flags.contains(Flags::FIRST_PDU) || (self.partial.is_none() && header.seq == 0);
        if starts {
            if header.seq != 0 {
                self.partial = None;
                return Err(Error::Sequence("first PDU with non-zero sequence ID"));
            }
            self.partial = Some(Partial {
                function: header.function,
                flags: Flags(header.flags.0 & !(Flags::FIRST_PDU.0 | Flags::LAST_PDU.0)),
                xid: header.xid,
                next_seq: 0,
                payload: Vec::new(),
            });
        }
        let Some(p) = self.partial.as_mut() else {
            return Err(Error::Sequence("continuation PDU without a first PDU"));
        };
        if p.function != header.function || p.xid != header.xid || p.next_seq != header.seq {
            self.partial = None;
            return Err(Error::Sequence("PDU does not continue the pending message"));
        }
        if p.payload.len() + payload.len() > MAX_MESSAGE_LEN {
            self.partial = None;
            return Err(Error::MessageTooLarge(MAX_MESSAGE_LEN));
        }
        p.payload.extend_from_slice(payload);
        p.next_seq = p.next_seq.wrapping_add(1);
        if !header.flags.contains(Flags::LAST_PDU) {
            return Ok(None);
        }
        let Some(p) = self.partial.take() else {
            return Ok(None);
        };
        Message::decode(p.function, p.flags, p.xid, &p.payload).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(seq: u16, flags: Flags) -> Header {
        Header {
            version: 1,
            function: FunctionId::DEV_ATTR_QRY,
            pdu_length: 0,
            flags,
            xid: 1,
            seq,
        }
    }

    #[test]
    fn out_of_order_and_orphans_rejected() {
        let mut r = Reassembler::default();
        assert!(r.push(&h(1, Flags::CLIENT), &[]).is_err());
        assert_eq!(
            r.push(&h(0, Flags::CLIENT | Flags::FIRST_PDU), &[])
                .unwrap(),
            None
        );
        assert!(r.push(&h(2, Flags::CLIENT), &[]).is_err());
        assert!(r.push(&h(3, Flags::FIRST_PDU), &[]).is_err());
        let done = r
            .push(&h(0, Flags::FIRST_PDU | Flags::LAST_PDU), &[])
            .unwrap();
        assert!(done.is_some());
    }
}
