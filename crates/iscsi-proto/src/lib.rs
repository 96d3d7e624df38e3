//! iSCSI protocol core (RFC 7143), sans-IO: PDU codec, text keys, login negotiation, serial-number arithmetic.
