//! How a PDU's fields sit in the Basic Header Segment (RFC 7143 §11.2.1).
//!
//! Each PDU file declares its struct once through [`wire_pdu!`]: every field is
//! written with its type and its place on the wire (a byte offset, a bit of the
//! flags byte, the data segment, ...). The macro derives the struct, its encoder
//! and its decoder from that one list, so a field's offset is never written twice.
//! The places of the fields many PDUs share are the constants below.

use bytes::Bytes;

use crate::bhs::{Bhs, FINAL_BIT, IMMEDIATE_BIT, Opcode};
use crate::error::EncodeError;

/// Header, AHS area and data segment of a PDU ready for the wire.
pub(crate) struct Parts {
    pub bhs: Bhs,
    pub ahs: Vec<u8>,
    pub data: Bytes,
}

impl Parts {
    /// An all-zero header with `opcode`, no AHS and no data.
    pub(crate) fn new(opcode: Opcode) -> Self {
        Parts {
            bhs: Bhs::new(opcode, false),
            ahs: Vec::new(),
            data: Bytes::new(),
        }
    }
}

/// A received header, its AHS area and its (unpadded) data segment.
pub(crate) struct Received<'a> {
    pub bhs: &'a Bhs,
    pub ahs: &'a [u8],
    pub data: Bytes,
}

/// A typed PDU that knows its own wire layout.
pub(crate) trait WirePdu: Sized {
    /// The opcode in byte 0.
    const OPCODE: Opcode;
    /// Write the fields into `out` (opcode already set, everything else zero).
    fn encode(&self, out: &mut Parts) -> Result<(), EncodeError>;
    /// Read the fields; `Err` carries the reason for a Reject.
    fn decode(input: &mut Received<'_>) -> Result<Self, &'static str>;
}

/// A place on the wire that holds a value of type `T`.
pub(crate) trait Field<T> {
    /// Store `v` (reserved bits stay zero).
    fn put(&self, v: &T, out: &mut Parts) -> Result<(), EncodeError>;
    /// Load the value (reserved bits ignored).
    fn get(&self, input: &mut Received<'_>) -> Result<T, &'static str>;
}

/// A big-endian integer or byte string at a byte offset in the BHS.
pub(crate) struct At(pub usize);

macro_rules! int_at {
    ($($t:ty: $get:ident, $set:ident;)*) => {$(
        impl Field<$t> for At {
            #[inline]
            fn put(&self, v: &$t, out: &mut Parts) -> Result<(), EncodeError> {
                out.bhs.$set(self.0, *v);
                Ok(())
            }
            #[inline]
            fn get(&self, input: &mut Received<'_>) -> Result<$t, &'static str> {
                Ok(input.bhs.$get(self.0))
            }
        }
    )*};
}
int_at! {
    u8: u8_at, set_u8;
    u16: u16_at, set_u16;
    u32: u32_at, set_u32;
    u64: u64_at, set_u64;
}

impl<const N: usize> Field<[u8; N]> for At {
    #[inline]
    fn put(&self, v: &[u8; N], out: &mut Parts) -> Result<(), EncodeError> {
        out.bhs.set_bytes(self.0, v);
        Ok(())
    }
    #[inline]
    fn get(&self, input: &mut Received<'_>) -> Result<[u8; N], &'static str> {
        Ok(input.bhs.bytes::<N>(self.0))
    }
}

/// One bit of the flags byte (byte 1).
pub(crate) struct Flag(pub u8);

impl Field<bool> for Flag {
    #[inline]
    fn put(&self, v: &bool, out: &mut Parts) -> Result<(), EncodeError> {
        if *v {
            out.bhs.set_flags(out.bhs.flags() | self.0);
        }
        Ok(())
    }
    #[inline]
    fn get(&self, input: &mut Received<'_>) -> Result<bool, &'static str> {
        Ok(input.bhs.flags() & self.0 != 0)
    }
}

/// A field of several bits of the flags byte: `(value & mask) << shift`.
pub(crate) struct Bits {
    pub shift: u8,
    pub mask: u8,
}

impl Field<u8> for Bits {
    #[inline]
    fn put(&self, v: &u8, out: &mut Parts) -> Result<(), EncodeError> {
        out.bhs
            .set_flags(out.bhs.flags() | ((*v & self.mask) << self.shift));
        Ok(())
    }
    #[inline]
    fn get(&self, input: &mut Received<'_>) -> Result<u8, &'static str> {
        Ok((input.bhs.flags() >> self.shift) & self.mask)
    }
}

/// The I bit in byte 0 (§11.2.1.2).
pub(crate) struct Immediate;

impl Field<bool> for Immediate {
    #[inline]
    fn put(&self, v: &bool, out: &mut Parts) -> Result<(), EncodeError> {
        if *v {
            out.bhs.0[0] |= IMMEDIATE_BIT;
        }
        Ok(())
    }
    #[inline]
    fn get(&self, input: &mut Received<'_>) -> Result<bool, &'static str> {
        Ok(input.bhs.immediate())
    }
}

/// The data segment, shared without copying.
pub(crate) struct DataSegment;

impl Field<Bytes> for DataSegment {
    #[inline]
    fn put(&self, v: &Bytes, out: &mut Parts) -> Result<(), EncodeError> {
        out.data = v.clone();
        Ok(())
    }
    #[inline]
    fn get(&self, input: &mut Received<'_>) -> Result<Bytes, &'static str> {
        Ok(std::mem::take(&mut input.data))
    }
}

/// I bit (§11.2.1.2).
pub(crate) const I: Immediate = Immediate;
/// F bit (§11.2.1.3).
pub(crate) const F: Flag = Flag(FINAL_BIT);
/// C bit of Text and Login PDUs: the text continues (§11.10.2, §11.12.2).
pub(crate) const C: Flag = Flag(0x40);
/// Logical Unit Number, bytes 8-15 (§11.2.1.6).
pub(crate) const LUN: At = At(8);
/// Initiator Task Tag, bytes 16-19 (§11.2.1.8).
pub(crate) const ITT: At = At(16);
/// Target Transfer Tag, bytes 20-23 (§11.7.4); other tags share the place.
pub(crate) const TTT: At = At(20);
/// CmdSN, bytes 24-27 of initiator PDUs (§11.3.2).
pub(crate) const CMD_SN: At = At(24);
/// ExpStatSN, bytes 28-31 of initiator PDUs (§11.3.3).
pub(crate) const EXP_STAT_SN: At = At(28);
/// StatSN, bytes 24-27 of target PDUs.
pub(crate) const STAT_SN: At = At(24);
/// ExpCmdSN, bytes 28-31 of target PDUs.
pub(crate) const EXP_CMD_SN: At = At(28);
/// MaxCmdSN, bytes 32-35 of target PDUs.
pub(crate) const MAX_CMD_SN: At = At(32);
/// The data segment.
pub(crate) const DATA: DataSegment = DataSegment;

/// Declare a PDU struct from the list of its fields and their places on the wire,
/// and implement [`WirePdu`] for it (the struct name is also its [`Opcode`]).
///
/// A field is either spelled out, `/// doc` `pub name: Type = place,`, or, for
/// the fields many PDUs share, named bare (`lun,`): [`standard_field!`] holds
/// their doc, type and place. `always { place => value }` lists bits and fields
/// that have a fixed value.
macro_rules! wire_pdu {
    (
        $(#[$meta:meta])*
        pub struct $name:ident { $($fields:tt)* }
        $( always { $($always:tt)* } )?
    ) => {
        $crate::pdu::wire::wire_pdu!(
            @munch ([$(#[$meta])*] $name [$($($always)*)?]) [] $($fields)*
        );
    };
    // A field spelled out.
    (
        @munch $k:tt [$($done:tt)*]
        $(#[$fmeta:meta])* pub $field:ident : $ty:ty = $place:expr, $($rest:tt)*
    ) => {
        $crate::pdu::wire::wire_pdu!(
            @munch $k [$($done)* $(#[$fmeta])* pub $field: $ty = $place,] $($rest)*
        );
    };
    // A standard field: look it up; `standard_field!` answers with `@std`.
    (@munch $k:tt [$($done:tt)*] $std:ident, $($rest:tt)*) => {
        $crate::pdu::wire::standard_field!($std ($k [$($done)*] $($rest)*));
    };
    (@std ($k:tt [$($done:tt)*] $($rest:tt)*) $doc:literal $field:ident: $ty:ty = $place:ident) => {
        $crate::pdu::wire::wire_pdu!(
            @munch $k [$($done)* #[doc = $doc] pub $field: $ty = $crate::pdu::wire::$place,] $($rest)*
        );
    };
    // All fields collected: the struct and its `WirePdu` implementation.
    (
        @munch ([$(#[$meta:meta])*] $name:ident [$($aplace:expr => $avalue:expr),* $(,)?])
        [$( $(#[$fmeta:meta])* pub $field:ident : $ty:ty = $place:expr, )*]
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Default)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        impl $crate::pdu::wire::WirePdu for $name {
            const OPCODE: $crate::bhs::Opcode = $crate::bhs::Opcode::$name;

            #[inline]
            fn encode(
                &self,
                out: &mut $crate::pdu::wire::Parts,
            ) -> Result<(), $crate::error::EncodeError> {
                use $crate::pdu::wire::Field as _;
                $( ($aplace).put(&$avalue, out)?; )*
                $( ($place).put(&self.$field, out)?; )*
                Ok(())
            }

            #[inline]
            fn decode(
                input: &mut $crate::pdu::wire::Received<'_>,
            ) -> Result<Self, &'static str> {
                use $crate::pdu::wire::Field as _;
                Ok($name {
                    $( $field: ($place).get(input)?, )*
                })
            }
        }
    };
}
pub(crate) use wire_pdu;

/// The fields that many PDUs carry in the same place with the same meaning,
/// named bare in a [`wire_pdu!`] field list: name, doc, type and place.
macro_rules! standard_field {
    (immediate $k:tt) => { $crate::pdu::wire::wire_pdu!(@std $k "I bit." immediate: bool = I); };
    (final_ $k:tt) => { $crate::pdu::wire::wire_pdu!(@std $k "F bit." final_: bool = F); };
    (lun $k:tt) => { $crate::pdu::wire::wire_pdu!(@std $k "LUN." lun: u64 = LUN); };
    (itt $k:tt) => { $crate::pdu::wire::wire_pdu!(@std $k "Initiator Task Tag." itt: u32 = ITT); };
    (ttt $k:tt) => { $crate::pdu::wire::wire_pdu!(@std $k "Target Transfer Tag." ttt: u32 = TTT); };
    (cmd_sn $k:tt) => { $crate::pdu::wire::wire_pdu!(@std $k "CmdSN." cmd_sn: u32 = CMD_SN); };
    (exp_stat_sn $k:tt) => {
        $crate::pdu::wire::wire_pdu!(@std $k "ExpStatSN." exp_stat_sn: u32 = EXP_STAT_SN);
    };
    (stat_sn $k:tt) => { $crate::pdu::wire::wire_pdu!(@std $k "StatSN." stat_sn: u32 = STAT_SN); };
    (exp_cmd_sn $k:tt) => {
        $crate::pdu::wire::wire_pdu!(@std $k "ExpCmdSN." exp_cmd_sn: u32 = EXP_CMD_SN);
    };
    (max_cmd_sn $k:tt) => {
        $crate::pdu::wire::wire_pdu!(@std $k "MaxCmdSN." max_cmd_sn: u32 = MAX_CMD_SN);
    };
}
pub(crate) use standard_field;
