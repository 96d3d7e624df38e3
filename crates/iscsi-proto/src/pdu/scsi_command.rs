//! SCSI Command (RFC 7143 §11.3) and the two AHSs it may carry (§11.2.2.3-4).

use bytes::Bytes;

use super::wire::{At, Bits, DATA, F, Field, Flag, I, LUN, Parts, Received, wire_pdu};
use crate::bhs::{ahs_type, parse_ahs, push_ahs};
use crate::error::EncodeError;

wire_pdu! {
    /// SCSI Command (§11.3).
    pub struct ScsiCommand {
        /// I bit: immediate delivery (§11.2.1.2).
        pub immediate: bool = I,
        /// F bit: no unsolicited Data-Out follows (§11.3.1).
        pub final_: bool = F,
        /// R bit: data is expected from the target (§11.3.1.1).
        pub read: bool = Flag(0x40),
        /// W bit: data is expected from the initiator (§11.3.1.2).
        pub write: bool = Flag(0x20),
        /// ATTR: task attributes (§11.3.1.3), 3 bits.
        pub attr: u8 = Bits { shift: 0, mask: 0x07 },
        /// Logical Unit Number, raw 8 bytes (§11.2.1.6).
        pub lun: u64 = LUN,
        itt,
        /// Expected Data Transfer Length (§11.3.4).
        pub edtl: u32 = At(20),
        cmd_sn, exp_stat_sn,
        /// The first 16 CDB bytes (§11.3.5).
        pub cdb: [u8; 16] = At(32),
        /// CDB bytes beyond 16, from the Extended CDB AHS (§11.2.2.3).
        pub ext_cdb: Option<Bytes> = ExtendedCdbAhs,
        /// Bidirectional Read Expected Data Transfer Length AHS (§11.2.2.4).
        pub bidi_read_edtl: Option<u32> = BidiReadEdtlAhs,
        /// Immediate data.
        pub data: Bytes = DATA,
    }
}

/// The AHS-Specific byte and data of the AHS of type `wanted`, if present, after
/// checking that the AHS area holds only the two types a SCSI Command defines.
fn find_ahs(ahs: &[u8], wanted: u8) -> Result<Option<&[u8]>, &'static str> {
    if ahs.is_empty() {
        // The usual case: no AHS at all (TotalAHSLength 0).
        return Ok(None);
    }
    let mut found = None;
    let mut ext_cdbs = 0;
    for a in parse_ahs(ahs)? {
        match a.ahs_type {
            ahs_type::EXTENDED_CDB => ext_cdbs += 1,
            ahs_type::BIDI_READ_EDTL => {}
            _ => return Err("unknown AHS type"),
        }
        if ext_cdbs > 1 {
            return Err("two Extended CDB AHSs");
        }
        if a.ahs_type == wanted {
            found = Some(a.specific);
        }
    }
    Ok(found)
}

/// The Extended CDB AHS: a reserved byte, then the CDB bytes beyond 16 (§11.2.2.3).
struct ExtendedCdbAhs;

impl Field<Option<Bytes>> for ExtendedCdbAhs {
    fn put(&self, v: &Option<Bytes>, out: &mut Parts) -> Result<(), EncodeError> {
        let Some(ext) = v else { return Ok(()) };
        // AHSLength = CDB length - 15 = reserved byte + extension (§11.2.2.3).
        if ext.len() + 1 > 0xffff || ext.len() > 1000 {
            return Err(EncodeError::ExtendedCdbTooLarge(ext.len()));
        }
        let mut body = Vec::with_capacity(ext.len() + 1);
        body.push(0);
        body.extend_from_slice(ext);
        push_ahs(&mut out.ahs, ahs_type::EXTENDED_CDB, &body);
        Ok(())
    }

    fn get(&self, input: &mut Received<'_>) -> Result<Option<Bytes>, &'static str> {
        let Some(specific) = find_ahs(input.ahs, ahs_type::EXTENDED_CDB)? else {
            return Ok(None);
        };
        let ext = specific.get(1..).ok_or("empty Extended CDB AHS")?;
        Ok(Some(Bytes::copy_from_slice(ext)))
    }
}

/// The Bidirectional Read Expected Data Transfer Length AHS (§11.2.2.4).
struct BidiReadEdtlAhs;

impl Field<Option<u32>> for BidiReadEdtlAhs {
    fn put(&self, v: &Option<u32>, out: &mut Parts) -> Result<(), EncodeError> {
        if let Some(len) = v {
            let [b0, b1, b2, b3] = len.to_be_bytes();
            push_ahs(&mut out.ahs, ahs_type::BIDI_READ_EDTL, &[0, b0, b1, b2, b3]);
        }
        Ok(())
    }

    fn get(&self, input: &mut Received<'_>) -> Result<Option<u32>, &'static str> {
        let Some(specific) = find_ahs(input.ahs, ahs_type::BIDI_READ_EDTL)? else {
            return Ok(None);
        };
        let [_, a0, a1, a2, a3] = *specific else {
            return Err("Bidirectional Read EDTL AHS length is not 5");
        };
        Ok(Some(u32::from_be_bytes([a0, a1, a2, a3])))
    }
}
