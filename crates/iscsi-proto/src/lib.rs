//! iSCSI protocol core (RFC 7143), sans-IO: PDU codec, text keys, login negotiation, serial-number arithmetic.

pub use bytes;

pub mod bhs;
pub mod chap;
pub mod codec;
pub mod error;
pub mod login;
pub mod params;
pub mod pdu;
pub mod sendtargets;
pub mod serial;
pub mod text;

pub use bhs::{BHS_LEN, Opcode, RESERVED_TAG};
pub use codec::{COPY_DATA_MAX, DataOutHeader, Digests, Limits, Payload, PduDecoder, Trailer};
pub use error::{DecodeError, EncodeError, LoginError, TextError};
pub use login::{
    InitiatorLogin, InitiatorLoginConfig, InitiatorStep, LoggedIn, LoginOutcome, LoginStatus,
    LoginStep, TargetDecision, TargetLogin, TargetLoginConfig,
};
pub use params::{Prefs, SessionParams, SessionType};
pub use pdu::*;
pub use serial::SerialNumber;
pub use text::{TextAssembler, TextPairs};
