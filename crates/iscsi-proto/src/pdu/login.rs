//! Login Request and Login Response (RFC 7143 §11.12-§11.13).

use bytes::Bytes;

use super::wire::{At, Bits, C, DATA, F, Field, Flag, I, Parts, Received, wire_pdu};
use crate::error::EncodeError;

/// Login stages carried in CSG/NSG (§11.12.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub enum Stage {
    /// 0: SecurityNegotiation.
    #[default]
    SecurityNegotiation,
    /// 1: LoginOperationalNegotiation.
    LoginOperationalNegotiation,
    /// 2: reserved value, carried for faithful decoding.
    Reserved,
    /// 3: FullFeaturePhase.
    FullFeaturePhase,
}

impl Stage {
    /// From the 2-bit field.
    pub fn from_bits(v: u8) -> Self {
        match v & 3 {
            0 => Stage::SecurityNegotiation,
            1 => Stage::LoginOperationalNegotiation,
            2 => Stage::Reserved,
            _ => Stage::FullFeaturePhase,
        }
    }
    /// To the 2-bit field.
    pub fn bits(self) -> u8 {
        self as u8
    }
}

impl Field<Stage> for Bits {
    #[inline]
    fn put(&self, v: &Stage, out: &mut Parts) -> Result<(), EncodeError> {
        Field::<u8>::put(self, &v.bits(), out)
    }
    #[inline]
    fn get(&self, input: &mut Received<'_>) -> Result<Stage, &'static str> {
        Field::<u8>::get(self, input).map(Stage::from_bits)
    }
}

/// T bit: transit to the next stage (§11.12.1).
const T: Flag = F;
/// CSG, bits 4-5 of the flags byte (§11.12.3).
const CSG: Bits = Bits { shift: 2, mask: 3 };
/// NSG, bits 6-7 of the flags byte (§11.12.3).
const NSG: Bits = Bits { shift: 0, mask: 3 };
/// ISID, bytes 8-13 (§11.12.5).
const ISID: At = At(8);
/// TSIH, bytes 14-15 (§11.12.6).
const TSIH: At = At(14);

wire_pdu! {
    /// Login Request (§11.12).
    pub struct LoginRequest {
        /// T bit: transit to NSG.
        pub transit: bool = T,
        /// C bit: text continues.
        pub continue_: bool = C,
        /// Current stage.
        pub csg: Stage = CSG,
        /// Next stage (valid with T).
        pub nsg: Stage = NSG,
        /// Version-max.
        pub version_max: u8 = At(2),
        /// Version-min.
        pub version_min: u8 = At(3),
        /// ISID (§11.12.5).
        pub isid: [u8; 6] = ISID,
        /// TSIH.
        pub tsih: u16 = TSIH,
        itt,
        /// Connection ID.
        pub cid: u16 = At(20),
        cmd_sn, exp_stat_sn,
        /// key=value text.
        pub data: Bytes = DATA,
    }
    always { I => true }
}

impl LoginRequest {
    /// The leading Login Request of a session that needs no security negotiation (§6.3,
    /// §11.12): `keys` negotiated in LoginOperationalNegotiation with T set to go straight to
    /// FullFeaturePhase; CmdSN, ExpStatSN, TSIH and CID 0.
    pub fn operational(isid: [u8; 6], itt: u32, keys: &[(&str, &str)]) -> LoginRequest {
        LoginRequest {
            transit: true,
            csg: Stage::LoginOperationalNegotiation,
            nsg: Stage::FullFeaturePhase,
            isid,
            itt,
            data: keys
                .iter()
                .copied()
                .collect::<crate::text::TextPairs>()
                .to_bytes(),
            ..LoginRequest::default()
        }
    }
}

wire_pdu! {
    /// Login Response (§11.13).
    pub struct LoginResponse {
        /// T bit.
        pub transit: bool = T,
        /// C bit.
        pub continue_: bool = C,
        /// Current stage.
        pub csg: Stage = CSG,
        /// Next stage.
        pub nsg: Stage = NSG,
        /// Version-max.
        pub version_max: u8 = At(2),
        /// Version-active.
        pub version_active: u8 = At(3),
        /// ISID.
        pub isid: [u8; 6] = ISID,
        /// TSIH.
        pub tsih: u16 = TSIH,
        itt, stat_sn, exp_cmd_sn, max_cmd_sn,
        /// Status-Class (§11.13.5).
        pub status_class: u8 = At(36),
        /// Status-Detail.
        pub status_detail: u8 = At(37),
        /// key=value text.
        pub data: Bytes = DATA,
    }
}
