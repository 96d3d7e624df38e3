//! iSNS protocol core (RFC 4171), sans-IO: PDU header, TLV attributes, messages.
