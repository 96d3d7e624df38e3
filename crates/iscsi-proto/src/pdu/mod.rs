//! Typed iSCSI PDUs (RFC 7143 §11.3-§11.19) and their mapping to and from the
//! 48-byte Basic Header Segment. Field names follow the RFC; reserved fields are
//! written as zero and ignored when read.
//!
//! One file per PDU kind or family, named after its RFC 7143 §11 section; each
//! struct lists its fields together with their places on the wire, from which
//! `wire::wire_pdu!` derives both its encoder and its decoder.

use bytes::Bytes;

use crate::bhs::{Bhs, Opcode, RESERVED_TAG, parse_ahs};
use crate::error::EncodeError;

mod async_message;
mod data;
mod login;
mod logout;
mod nop;
mod r2t;
mod reject;
mod scsi_command;
mod scsi_response;
mod snack;
mod text;
mod tmf;
pub(crate) mod wire;

pub use async_message::{AsyncMessage, async_event};
pub use data::{DataIn, DataOut};
pub use login::{LoginRequest, LoginResponse, Stage};
pub use logout::{LogoutRequest, LogoutResponse, logout_reason};
pub use nop::{NopIn, NopOut};
pub use r2t::R2t;
pub use reject::{Reject, reject_reason};
pub use scsi_command::ScsiCommand;
pub use scsi_response::ScsiResponse;
pub use snack::SnackRequest;
pub use text::{TextRequest, TextResponse};
pub use tmf::{TaskMgmtRequest, TaskMgmtResponse, TmfFunction, TmfResponse};

pub(crate) use wire::Parts;
use wire::{Received, WirePdu};

/// Declare [`Pdu`] with one variant per PDU struct (named like its [`Opcode`])
/// and the static dispatch to each struct's [`WirePdu`] implementation.
macro_rules! pdu_enum {
    ($( $(#[$meta:meta])* $kind:ident, )*) => {
        /// Any iSCSI PDU.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Pdu {
            $( $(#[$meta])* $kind($kind), )*
        }

        $(
            impl From<$kind> for Pdu {
                fn from(p: $kind) -> Pdu {
                    Pdu::$kind(p)
                }
            }
        )*

        impl Pdu {
            /// The opcode.
            pub fn opcode(&self) -> Opcode {
                match self {
                    $( Pdu::$kind(_) => $kind::OPCODE, )*
                }
            }

            /// Build the BHS, AHS area and data segment.
            pub(crate) fn parts(&self) -> Result<Parts, EncodeError> {
                let mut parts = Parts::new(self.opcode());
                match self {
                    $( Pdu::$kind(p) => p.encode(&mut parts)?, )*
                }
                Ok(parts)
            }

            fn decode_as(opcode: Opcode, input: &mut Received<'_>) -> Result<Pdu, &'static str> {
                Ok(match opcode {
                    $( Opcode::$kind => Pdu::$kind($kind::decode(input)?), )*
                })
            }
        }
    };
}

pdu_enum! {
    /// 0x00.
    NopOut,
    /// 0x01.
    ScsiCommand,
    /// 0x02.
    TaskMgmtRequest,
    /// 0x03.
    LoginRequest,
    /// 0x04.
    TextRequest,
    /// 0x05.
    DataOut,
    /// 0x06.
    LogoutRequest,
    /// 0x10.
    SnackRequest,
    /// 0x20.
    NopIn,
    /// 0x21.
    ScsiResponse,
    /// 0x22.
    TaskMgmtResponse,
    /// 0x23.
    LoginResponse,
    /// 0x24.
    TextResponse,
    /// 0x25.
    DataIn,
    /// 0x26.
    LogoutResponse,
    /// 0x31.
    R2t,
    /// 0x32.
    AsyncMessage,
    /// 0x3f.
    Reject,
}

impl Pdu {
    /// The Initiator Task Tag (0xffffffff for PDUs that carry none).
    pub fn itt(&self) -> u32 {
        match self {
            Pdu::NopOut(p) => p.itt,
            Pdu::ScsiCommand(p) => p.itt,
            Pdu::TaskMgmtRequest(p) => p.itt,
            Pdu::LoginRequest(p) => p.itt,
            Pdu::TextRequest(p) => p.itt,
            Pdu::DataOut(p) => p.itt,
            Pdu::LogoutRequest(p) => p.itt,
            Pdu::SnackRequest(p) => p.itt,
            Pdu::NopIn(p) => p.itt,
            Pdu::ScsiResponse(p) => p.itt,
            Pdu::TaskMgmtResponse(p) => p.itt,
            Pdu::LoginResponse(p) => p.itt,
            Pdu::TextResponse(p) => p.itt,
            Pdu::DataIn(p) => p.itt,
            Pdu::LogoutResponse(p) => p.itt,
            Pdu::R2t(p) => p.itt,
            Pdu::AsyncMessage(_) | Pdu::Reject(_) => RESERVED_TAG,
        }
    }

    /// The I bit, for initiator PDUs that have one.
    pub fn immediate(&self) -> bool {
        match self {
            Pdu::NopOut(p) => p.immediate,
            Pdu::ScsiCommand(p) => p.immediate,
            Pdu::TaskMgmtRequest(p) => p.immediate,
            Pdu::LoginRequest(_) => true,
            Pdu::TextRequest(p) => p.immediate,
            Pdu::LogoutRequest(p) => p.immediate,
            _ => false,
        }
    }

    /// Build a typed PDU from a BHS, its AHS area and its (unpadded) data segment.
    /// `Err` carries a reason for a Reject; the caller knows the opcode is defined.
    pub(crate) fn from_parts(bhs: &Bhs, ahs: &[u8], data: Bytes) -> Result<Pdu, &'static str> {
        let opcode = Opcode::from_u8(bhs.opcode_raw()).ok_or("unknown opcode")?;
        if opcode != Opcode::ScsiCommand && !ahs.is_empty() {
            // Only the SCSI Command defines AHSs (§11.2.2.2); ignore others'.
            parse_ahs(ahs)?;
        }
        Pdu::decode_as(opcode, &mut Received { bhs, ahs, data })
    }
}
