//! Typed iSCSI PDUs (RFC 7143 §11.3-§11.19) and their mapping to and from the
//! 48-byte Basic Header Segment. Field names follow the RFC; reserved fields are
//! written as zero and ignored when read.

use bytes::{BufMut, Bytes, BytesMut};

use crate::bhs::{Bhs, FINAL_BIT, Opcode, RESERVED_TAG, ahs_type, parse_ahs, push_ahs};
use crate::error::EncodeError;

/// SCSI Command (§11.3).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScsiCommand {
    /// I bit: immediate delivery (§11.2.1.2).
    pub immediate: bool,
    /// F bit: no unsolicited Data-Out follows (§11.3.1).
    pub final_: bool,
    /// R bit: data is expected from the target (§11.3.1.1).
    pub read: bool,
    /// W bit: data is expected from the initiator (§11.3.1.2).
    pub write: bool,
    /// ATTR: task attributes (§11.3.1.3), 3 bits.
    pub attr: u8,
    /// Logical Unit Number, raw 8 bytes (§11.2.1.6).
    pub lun: u64,
    /// Initiator Task Tag.
    pub itt: u32,
    /// Expected Data Transfer Length (§11.3.4).
    pub edtl: u32,
    /// CmdSN.
    pub cmd_sn: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
    /// The first 16 CDB bytes (§11.3.5).
    pub cdb: [u8; 16],
    /// CDB bytes beyond 16, from the Extended CDB AHS (§11.2.2.3).
    pub ext_cdb: Option<Bytes>,
    /// Bidirectional Read Expected Data Transfer Length AHS (§11.2.2.4).
    pub bidi_read_edtl: Option<u32>,
    /// Immediate data.
    pub data: Bytes,
}

/// SCSI Response (§11.4).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScsiResponse {
    /// o bit: Bidirectional Read Residual Overflow.
    pub bidi_read_residual_overflow: bool,
    /// u bit: Bidirectional Read Residual Underflow.
    pub bidi_read_residual_underflow: bool,
    /// O bit: Residual Overflow.
    pub residual_overflow: bool,
    /// U bit: Residual Underflow.
    pub residual_underflow: bool,
    /// Response (§11.4.3): 0x00 Command Completed at Target, 0x01 Target Failure.
    pub response: u8,
    /// SCSI status (§11.4.2).
    pub status: u8,
    /// Initiator Task Tag.
    pub itt: u32,
    /// SNACK Tag (§11.4.6).
    pub snack_tag: u32,
    /// StatSN.
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
    /// ExpDataSN (§11.4.8).
    pub exp_data_sn: u32,
    /// Bidirectional Read Residual Count (§11.4.5).
    pub bidi_read_residual_count: u32,
    /// Residual Count (§11.4.5).
    pub residual_count: u32,
    /// Sense data; sent with its 2-byte SenseLength prefix (§11.4.7.2).
    pub sense: Bytes,
}

/// SCSI Task Management Function Request (§11.5).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TaskMgmtRequest {
    /// I bit.
    pub immediate: bool,
    /// Function (§11.5.1), 7 bits.
    pub function: u8,
    /// LUN.
    pub lun: u64,
    /// Initiator Task Tag.
    pub itt: u32,
    /// Referenced Task Tag (§11.5.2).
    pub referenced_task_tag: u32,
    /// CmdSN.
    pub cmd_sn: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
    /// RefCmdSN (§11.5.3).
    pub ref_cmd_sn: u32,
    /// ExpDataSN (§11.5.4).
    pub exp_data_sn: u32,
}

/// SCSI Task Management Function Response (§11.6).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TaskMgmtResponse {
    /// Response (§11.6.1).
    pub response: u8,
    /// Initiator Task Tag.
    pub itt: u32,
    /// StatSN.
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
}

/// SCSI Data-Out (§11.7).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DataOut {
    /// F bit: last PDU of the sequence.
    pub final_: bool,
    /// LUN.
    pub lun: u64,
    /// Initiator Task Tag.
    pub itt: u32,
    /// Target Transfer Tag (0xffffffff for unsolicited data).
    pub ttt: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
    /// DataSN.
    pub data_sn: u32,
    /// Buffer Offset.
    pub buffer_offset: u32,
    /// Payload.
    pub data: Bytes,
}

/// SCSI Data-In (§11.7).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DataIn {
    /// F bit.
    pub final_: bool,
    /// A bit: acknowledge requested (§11.7.2).
    pub ack: bool,
    /// O bit (valid with S).
    pub residual_overflow: bool,
    /// U bit (valid with S).
    pub residual_underflow: bool,
    /// S bit: status is present (§11.7.3).
    pub status_present: bool,
    /// SCSI status (valid with S).
    pub status: u8,
    /// LUN.
    pub lun: u64,
    /// Initiator Task Tag.
    pub itt: u32,
    /// Target Transfer Tag.
    pub ttt: u32,
    /// StatSN (valid with S).
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
    /// DataSN.
    pub data_sn: u32,
    /// Buffer Offset.
    pub buffer_offset: u32,
    /// Residual Count (valid with S).
    pub residual_count: u32,
    /// Payload.
    pub data: Bytes,
}

/// Ready To Transfer (§11.8).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct R2t {
    /// LUN.
    pub lun: u64,
    /// Initiator Task Tag.
    pub itt: u32,
    /// Target Transfer Tag.
    pub ttt: u32,
    /// StatSN (not advanced by R2T).
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
    /// R2TSN.
    pub r2t_sn: u32,
    /// Buffer Offset.
    pub buffer_offset: u32,
    /// Desired Data Transfer Length.
    pub desired_data_transfer_length: u32,
}

/// AsyncEvent codes (§11.9.1).
pub mod async_event {
    /// SCSI asynchronous event, sense data in the data segment.
    pub const SCSI_EVENT: u8 = 0;
    /// Target requests logout; Parameter3 = Time2Wait-like logout window in seconds.
    pub const LOGOUT_REQUESTED: u8 = 1;
    /// Target will drop the connection (Parameter1 CID, Parameter2 Time2Wait, Parameter3 Time2Retain).
    pub const CONNECTION_DROP: u8 = 2;
    /// Target will drop all connections of the session.
    pub const SESSION_DROP: u8 = 3;
    /// Target requests parameter renegotiation.
    pub const NEGOTIATION_REQUEST: u8 = 4;
    /// Task termination.
    pub const TASK_TERMINATION: u8 = 5;
    /// Vendor-specific.
    pub const VENDOR_SPECIFIC: u8 = 255;
}

/// Asynchronous Message (§11.9).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AsyncMessage {
    /// LUN (for SCSI events).
    pub lun: u64,
    /// StatSN.
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
    /// AsyncEvent (§11.9.1), see [`async_event`].
    pub async_event: u8,
    /// AsyncVCode.
    pub async_vcode: u8,
    /// Parameter1.
    pub parameter1: u16,
    /// Parameter2.
    pub parameter2: u16,
    /// Parameter3 (for event 1: seconds the initiator has to log out).
    pub parameter3: u16,
    /// Sense data / iSCSI event data.
    pub data: Bytes,
}

/// Text Request (§11.10).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TextRequest {
    /// I bit.
    pub immediate: bool,
    /// F bit.
    pub final_: bool,
    /// C bit: text continues in the next PDU.
    pub continue_: bool,
    /// LUN (reserved unless used by a key).
    pub lun: u64,
    /// Initiator Task Tag.
    pub itt: u32,
    /// Target Transfer Tag (0xffffffff for a new request).
    pub ttt: u32,
    /// CmdSN.
    pub cmd_sn: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
    /// key=value text.
    pub data: Bytes,
}

/// Text Response (§11.11).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TextResponse {
    /// F bit.
    pub final_: bool,
    /// C bit.
    pub continue_: bool,
    /// LUN.
    pub lun: u64,
    /// Initiator Task Tag.
    pub itt: u32,
    /// Target Transfer Tag (0xffffffff when F is set).
    pub ttt: u32,
    /// StatSN.
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
    /// key=value text.
    pub data: Bytes,
}

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

/// Login Request (§11.12).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LoginRequest {
    /// T bit: transit to NSG.
    pub transit: bool,
    /// C bit: text continues.
    pub continue_: bool,
    /// Current stage.
    pub csg: Stage,
    /// Next stage (valid with T).
    pub nsg: Stage,
    /// Version-max.
    pub version_max: u8,
    /// Version-min.
    pub version_min: u8,
    /// ISID (§11.12.5).
    pub isid: [u8; 6],
    /// TSIH.
    pub tsih: u16,
    /// Initiator Task Tag.
    pub itt: u32,
    /// Connection ID.
    pub cid: u16,
    /// CmdSN.
    pub cmd_sn: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
    /// key=value text.
    pub data: Bytes,
}

/// Login Response (§11.13).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LoginResponse {
    /// T bit.
    pub transit: bool,
    /// C bit.
    pub continue_: bool,
    /// Current stage.
    pub csg: Stage,
    /// Next stage.
    pub nsg: Stage,
    /// Version-max.
    pub version_max: u8,
    /// Version-active.
    pub version_active: u8,
    /// ISID.
    pub isid: [u8; 6],
    /// TSIH.
    pub tsih: u16,
    /// Initiator Task Tag.
    pub itt: u32,
    /// StatSN.
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
    /// Status-Class (§11.13.5).
    pub status_class: u8,
    /// Status-Detail.
    pub status_detail: u8,
    /// key=value text.
    pub data: Bytes,
}

/// Logout reason codes (§11.14.1).
pub mod logout_reason {
    /// Close the session.
    pub const CLOSE_SESSION: u8 = 0;
    /// Close the connection.
    pub const CLOSE_CONNECTION: u8 = 1;
    /// Remove the connection for recovery.
    pub const REMOVE_FOR_RECOVERY: u8 = 2;
}

/// Logout Request (§11.14).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogoutRequest {
    /// I bit.
    pub immediate: bool,
    /// Reason Code (§11.14.1), 7 bits.
    pub reason_code: u8,
    /// Initiator Task Tag.
    pub itt: u32,
    /// CID (reserved for reason 0).
    pub cid: u16,
    /// CmdSN.
    pub cmd_sn: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
}

/// Logout Response (§11.15).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogoutResponse {
    /// Response (§11.15.1): 0 closed successfully, 1 CID not found, ...
    pub response: u8,
    /// Initiator Task Tag.
    pub itt: u32,
    /// StatSN.
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
    /// Time2Wait (§11.15.2).
    pub time2wait: u16,
    /// Time2Retain (§11.15.3).
    pub time2retain: u16,
}

/// SNACK Request (§11.16).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SnackRequest {
    /// Type (§11.16.1), 4 bits.
    pub snack_type: u8,
    /// LUN.
    pub lun: u64,
    /// Initiator Task Tag.
    pub itt: u32,
    /// Target Transfer Tag or SNACK Tag.
    pub ttt: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
    /// BegRun.
    pub beg_run: u32,
    /// RunLength.
    pub run_length: u32,
}

/// Reject reasons (§11.17.1).
pub mod reject_reason {
    /// Data (payload) digest error.
    pub const DATA_DIGEST_ERROR: u8 = 0x02;
    /// SNACK Reject.
    pub const SNACK_REJECT: u8 = 0x03;
    /// Protocol Error.
    pub const PROTOCOL_ERROR: u8 = 0x04;
    /// Command not supported.
    pub const COMMAND_NOT_SUPPORTED: u8 = 0x05;
    /// Immediate command reject - too many immediate commands.
    pub const IMMEDIATE_COMMAND_REJECT: u8 = 0x06;
    /// Task in progress.
    pub const TASK_IN_PROGRESS: u8 = 0x07;
    /// Invalid data ack.
    pub const INVALID_DATA_ACK: u8 = 0x08;
    /// Invalid PDU field.
    pub const INVALID_PDU_FIELD: u8 = 0x09;
    /// Long operation reject - out of resources.
    pub const OUT_OF_RESOURCES: u8 = 0x0a;
    /// Waiting for Logout.
    pub const WAITING_FOR_LOGOUT: u8 = 0x0c;
}

/// Reject (§11.17).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reject {
    /// Reason (§11.17.1), see [`reject_reason`].
    pub reason: u8,
    /// StatSN.
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
    /// DataSN/R2TSN (for SNACK rejects).
    pub data_sn: u32,
    /// The complete header of the rejected PDU.
    pub header: Bytes,
}

/// NOP-Out (§11.18).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NopOut {
    /// I bit.
    pub immediate: bool,
    /// LUN.
    pub lun: u64,
    /// Initiator Task Tag; 0xffffffff when answering a NOP-In (§11.18.1).
    pub itt: u32,
    /// Target Transfer Tag; 0xffffffff unless answering a NOP-In (§11.18.2).
    pub ttt: u32,
    /// CmdSN.
    pub cmd_sn: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
    /// Ping data.
    pub data: Bytes,
}

/// NOP-In (§11.19).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NopIn {
    /// LUN.
    pub lun: u64,
    /// Initiator Task Tag (0xffffffff for a target-initiated ping).
    pub itt: u32,
    /// Target Transfer Tag (0xffffffff when no answer is wanted).
    pub ttt: u32,
    /// StatSN.
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
    /// Ping data.
    pub data: Bytes,
}

impl NopOut {
    /// A NOP-Out answering `ping` (§11.18.1): ITT 0xffffffff, TTT copied, immediate.
    pub fn answer(ping: &NopIn, cmd_sn: u32, exp_stat_sn: u32) -> Self {
        NopOut {
            immediate: true,
            lun: ping.lun,
            itt: RESERVED_TAG,
            ttt: ping.ttt,
            cmd_sn,
            exp_stat_sn,
            data: ping.data.clone(),
        }
    }
}

/// Any iSCSI PDU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pdu {
    /// 0x00.
    NopOut(NopOut),
    /// 0x01.
    ScsiCommand(ScsiCommand),
    /// 0x02.
    TaskMgmtRequest(TaskMgmtRequest),
    /// 0x03.
    LoginRequest(LoginRequest),
    /// 0x04.
    TextRequest(TextRequest),
    /// 0x05.
    DataOut(DataOut),
    /// 0x06.
    LogoutRequest(LogoutRequest),
    /// 0x10.
    SnackRequest(SnackRequest),
    /// 0x20.
    NopIn(NopIn),
    /// 0x21.
    ScsiResponse(ScsiResponse),
    /// 0x22.
    TaskMgmtResponse(TaskMgmtResponse),
    /// 0x23.
    LoginResponse(LoginResponse),
    /// 0x24.
    TextResponse(TextResponse),
    /// 0x25.
    DataIn(DataIn),
    /// 0x26.
    LogoutResponse(LogoutResponse),
    /// 0x31.
    R2t(R2t),
    /// 0x32.
    AsyncMessage(AsyncMessage),
    /// 0x3f.
    Reject(Reject),
}

const fn flag(v: bool, bit: u8) -> u8 {
    if v { bit } else { 0 }
}

/// Header, AHS area and data segment of a PDU ready for the wire.
pub(crate) struct Parts {
    pub bhs: Bhs,
    pub ahs: Vec<u8>,
    pub data: Bytes,
}

impl Pdu {
    /// The opcode.
    pub fn opcode(&self) -> Opcode {
        match self {
            Pdu::NopOut(_) => Opcode::NopOut,
            Pdu::ScsiCommand(_) => Opcode::ScsiCommand,
            Pdu::TaskMgmtRequest(_) => Opcode::TaskMgmtRequest,
            Pdu::LoginRequest(_) => Opcode::LoginRequest,
            Pdu::TextRequest(_) => Opcode::TextRequest,
            Pdu::DataOut(_) => Opcode::DataOut,
            Pdu::LogoutRequest(_) => Opcode::LogoutRequest,
            Pdu::SnackRequest(_) => Opcode::SnackRequest,
            Pdu::NopIn(_) => Opcode::NopIn,
            Pdu::ScsiResponse(_) => Opcode::ScsiResponse,
            Pdu::TaskMgmtResponse(_) => Opcode::TaskMgmtResponse,
            Pdu::LoginResponse(_) => Opcode::LoginResponse,
            Pdu::TextResponse(_) => Opcode::TextResponse,
            Pdu::DataIn(_) => Opcode::DataIn,
            Pdu::LogoutResponse(_) => Opcode::LogoutResponse,
            Pdu::R2t(_) => Opcode::R2t,
            Pdu::AsyncMessage(_) => Opcode::AsyncMessage,
            Pdu::Reject(_) => Opcode::Reject,
        }
    }

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

    /// Build the BHS, AHS area and data segment.
    pub(crate) fn parts(&self) -> Result<Parts, EncodeError> {
        let mut ahs = Vec::new();
        let (bhs, data) = match self {
            Pdu::NopOut(p) => {
                let mut h = Bhs::new(Opcode::NopOut, p.immediate);
                h.set_flags(FINAL_BIT);
                set_tags(&mut h, p.lun, p.itt, p.ttt);
                set_cmd_sns(&mut h, p.cmd_sn, p.exp_stat_sn);
                (h, p.data.clone())
            }
            Pdu::ScsiCommand(p) => {
                let mut h = Bhs::new(Opcode::ScsiCommand, p.immediate);
                h.set_flags(
                    flag(p.final_, 0x80) | flag(p.read, 0x40) | flag(p.write, 0x20) | (p.attr & 7),
                );
                h.set_u64(8, p.lun);
                h.set_u32(16, p.itt);
                h.set_u32(20, p.edtl);
                set_cmd_sns(&mut h, p.cmd_sn, p.exp_stat_sn);
                h.set_bytes(32, &p.cdb);
                if let Some(ext) = &p.ext_cdb {
                    // AHSLength = CDB length - 15 = reserved byte + extension (§11.2.2.3).
                    if ext.len() + 1 > 0xffff || ext.len() > 1000 {
                        return Err(EncodeError::ExtendedCdbTooLarge(ext.len()));
                    }
                    let mut body = Vec::with_capacity(ext.len() + 1);
                    body.push(0);
                    body.extend_from_slice(ext);
                    push_ahs(&mut ahs, ahs_type::EXTENDED_CDB, &body);
                }
                if let Some(len) = p.bidi_read_edtl {
                    let b = len.to_be_bytes();
                    push_ahs(
                        &mut ahs,
                        ahs_type::BIDI_READ_EDTL,
                        &[0, b[0], b[1], b[2], b[3]],
                    );
                }
                (h, p.data.clone())
            }
            Pdu::TaskMgmtRequest(p) => {
                let mut h = Bhs::new(Opcode::TaskMgmtRequest, p.immediate);
                h.set_flags(FINAL_BIT | (p.function & 0x7f));
                set_tags(&mut h, p.lun, p.itt, p.referenced_task_tag);
                set_cmd_sns(&mut h, p.cmd_sn, p.exp_stat_sn);
                h.set_u32(32, p.ref_cmd_sn);
                h.set_u32(36, p.exp_data_sn);
                (h, Bytes::new())
            }
            Pdu::LoginRequest(p) => {
                let mut h = Bhs::new(Opcode::LoginRequest, true);
                h.set_flags(login_flags(p.transit, p.continue_, p.csg, p.nsg));
                h.set_u8(2, p.version_max);
                h.set_u8(3, p.version_min);
                h.set_bytes(8, &p.isid);
                h.set_u16(14, p.tsih);
                h.set_u32(16, p.itt);
                h.set_u16(20, p.cid);
                set_cmd_sns(&mut h, p.cmd_sn, p.exp_stat_sn);
                (h, p.data.clone())
            }
            Pdu::TextRequest(p) => {
                let mut h = Bhs::new(Opcode::TextRequest, p.immediate);
                h.set_flags(flag(p.final_, 0x80) | flag(p.continue_, 0x40));
                set_tags(&mut h, p.lun, p.itt, p.ttt);
                set_cmd_sns(&mut h, p.cmd_sn, p.exp_stat_sn);
                (h, p.data.clone())
            }
            Pdu::DataOut(p) => {
                let mut h = Bhs::new(Opcode::DataOut, false);
                h.set_flags(flag(p.final_, 0x80));
                set_tags(&mut h, p.lun, p.itt, p.ttt);
                h.set_u32(28, p.exp_stat_sn);
                h.set_u32(36, p.data_sn);
                h.set_u32(40, p.buffer_offset);
                (h, p.data.clone())
            }
            Pdu::LogoutRequest(p) => {
                let mut h = Bhs::new(Opcode::LogoutRequest, p.immediate);
                h.set_flags(FINAL_BIT | (p.reason_code & 0x7f));
                h.set_u32(16, p.itt);
                h.set_u16(20, p.cid);
                set_cmd_sns(&mut h, p.cmd_sn, p.exp_stat_sn);
                (h, Bytes::new())
            }
            Pdu::SnackRequest(p) => {
                let mut h = Bhs::new(Opcode::SnackRequest, false);
                h.set_flags(FINAL_BIT | (p.snack_type & 0x0f));
                set_tags(&mut h, p.lun, p.itt, p.ttt);
                h.set_u32(28, p.exp_stat_sn);
                h.set_u32(36, p.beg_run);
                h.set_u32(40, p.run_length);
                (h, Bytes::new())
            }
            Pdu::NopIn(p) => {
                let mut h = Bhs::new(Opcode::NopIn, false);
                h.set_flags(FINAL_BIT);
                set_tags(&mut h, p.lun, p.itt, p.ttt);
                set_sns(&mut h, p.stat_sn, p.exp_cmd_sn, p.max_cmd_sn);
                (h, p.data.clone())
            }
            Pdu::ScsiResponse(p) => {
                let mut h = Bhs::new(Opcode::ScsiResponse, false);
                h.set_flags(
                    FINAL_BIT
                        | flag(p.bidi_read_residual_overflow, 0x10)
                        | flag(p.bidi_read_residual_underflow, 0x08)
                        | flag(p.residual_overflow, 0x04)
                        | flag(p.residual_underflow, 0x02),
                );
                h.set_u8(2, p.response);
                h.set_u8(3, p.status);
                h.set_u32(16, p.itt);
                h.set_u32(20, p.snack_tag);
                set_sns(&mut h, p.stat_sn, p.exp_cmd_sn, p.max_cmd_sn);
                h.set_u32(36, p.exp_data_sn);
                h.set_u32(40, p.bidi_read_residual_count);
                h.set_u32(44, p.residual_count);
                let data = if p.sense.is_empty() {
                    Bytes::new()
                } else {
                    let len = u16::try_from(p.sense.len())
                        .map_err(|_| EncodeError::SenseTooLarge(p.sense.len()))?;
                    let mut b = BytesMut::with_capacity(2 + p.sense.len());
                    b.put_u16(len);
                    b.extend_from_slice(&p.sense);
                    b.freeze()
                };
                (h, data)
            }
            Pdu::TaskMgmtResponse(p) => {
                let mut h = Bhs::new(Opcode::TaskMgmtResponse, false);
                h.set_flags(FINAL_BIT);
                h.set_u8(2, p.response);
                h.set_u32(16, p.itt);
                set_sns(&mut h, p.stat_sn, p.exp_cmd_sn, p.max_cmd_sn);
                (h, Bytes::new())
            }
            Pdu::LoginResponse(p) => {
                let mut h = Bhs::new(Opcode::LoginResponse, false);
                h.set_flags(login_flags(p.transit, p.continue_, p.csg, p.nsg));
                h.set_u8(2, p.version_max);
                h.set_u8(3, p.version_active);
                h.set_bytes(8, &p.isid);
                h.set_u16(14, p.tsih);
                h.set_u32(16, p.itt);
                set_sns(&mut h, p.stat_sn, p.exp_cmd_sn, p.max_cmd_sn);
                h.set_u8(36, p.status_class);
                h.set_u8(37, p.status_detail);
                (h, p.data.clone())
            }
            Pdu::TextResponse(p) => {
                let mut h = Bhs::new(Opcode::TextResponse, false);
                h.set_flags(flag(p.final_, 0x80) | flag(p.continue_, 0x40));
                set_tags(&mut h, p.lun, p.itt, p.ttt);
                set_sns(&mut h, p.stat_sn, p.exp_cmd_sn, p.max_cmd_sn);
                (h, p.data.clone())
            }
            Pdu::DataIn(p) => {
                let mut h = Bhs::new(Opcode::DataIn, false);
                h.set_flags(
                    flag(p.final_, 0x80)
                        | flag(p.ack, 0x40)
                        | flag(p.residual_overflow, 0x04)
                        | flag(p.residual_underflow, 0x02)
                        | flag(p.status_present, 0x01),
                );
                h.set_u8(3, p.status);
                set_tags(&mut h, p.lun, p.itt, p.ttt);
                set_sns(&mut h, p.stat_sn, p.exp_cmd_sn, p.max_cmd_sn);
                h.set_u32(36, p.data_sn);
                h.set_u32(40, p.buffer_offset);
                h.set_u32(44, p.residual_count);
                (h, p.data.clone())
            }
            Pdu::LogoutResponse(p) => {
                let mut h = Bhs::new(Opcode::LogoutResponse, false);
                h.set_flags(FINAL_BIT);
                h.set_u8(2, p.response);
                h.set_u32(16, p.itt);
                set_sns(&mut h, p.stat_sn, p.exp_cmd_sn, p.max_cmd_sn);
                h.set_u16(40, p.time2wait);
                h.set_u16(42, p.time2retain);
                (h, Bytes::new())
            }
            Pdu::R2t(p) => {
                let mut h = Bhs::new(Opcode::R2t, false);
                h.set_flags(FINAL_BIT);
                set_tags(&mut h, p.lun, p.itt, p.ttt);
                set_sns(&mut h, p.stat_sn, p.exp_cmd_sn, p.max_cmd_sn);
                h.set_u32(36, p.r2t_sn);
                h.set_u32(40, p.buffer_offset);
                h.set_u32(44, p.desired_data_transfer_length);
                (h, Bytes::new())
            }
            Pdu::AsyncMessage(p) => {
                let mut h = Bhs::new(Opcode::AsyncMessage, false);
                h.set_flags(FINAL_BIT);
                h.set_u64(8, p.lun);
                h.set_u32(16, RESERVED_TAG);
                set_sns(&mut h, p.stat_sn, p.exp_cmd_sn, p.max_cmd_sn);
                h.set_u8(36, p.async_event);
                h.set_u8(37, p.async_vcode);
                h.set_u16(38, p.parameter1);
                h.set_u16(40, p.parameter2);
                h.set_u16(42, p.parameter3);
                (h, p.data.clone())
            }
            Pdu::Reject(p) => {
                let mut h = Bhs::new(Opcode::Reject, false);
                h.set_flags(FINAL_BIT);
                h.set_u8(2, p.reason);
                h.set_u32(16, RESERVED_TAG);
                set_sns(&mut h, p.stat_sn, p.exp_cmd_sn, p.max_cmd_sn);
                h.set_u32(36, p.data_sn);
                (h, p.header.clone())
            }
        };
        Ok(Parts { bhs, ahs, data })
    }

    /// Build a typed PDU from a BHS, its AHS area and its (unpadded) data segment.
    /// `Err` carries a reason for a Reject; the caller knows the opcode is defined.
    pub(crate) fn from_parts(h: &Bhs, ahs: &[u8], data: Bytes) -> Result<Pdu, &'static str> {
        let f = h.flags();
        let op = Opcode::from_u8(h.opcode_raw()).ok_or("unknown opcode")?;
        if op != Opcode::ScsiCommand && !ahs.is_empty() {
            // Only the SCSI Command defines AHSs (§11.2.2.2); ignore others'.
            parse_ahs(ahs)?;
        }
        let imm = h.immediate();
        Ok(match op {
            Opcode::NopOut => Pdu::NopOut(NopOut {
                immediate: imm,
                lun: h.u64_at(8),
                itt: h.u32_at(16),
                ttt: h.u32_at(20),
                cmd_sn: h.u32_at(24),
                exp_stat_sn: h.u32_at(28),
                data,
            }),
            Opcode::ScsiCommand => {
                let mut ext_cdb = None;
                let mut bidi_read_edtl = None;
                for a in parse_ahs(ahs)? {
                    match a.ahs_type {
                        ahs_type::EXTENDED_CDB => {
                            let ext = a.specific.get(1..).ok_or("empty Extended CDB AHS")?;
                            if ext_cdb.is_some() {
                                return Err("two Extended CDB AHSs");
                            }
                            ext_cdb = Some(Bytes::copy_from_slice(ext));
                        }
                        ahs_type::BIDI_READ_EDTL => {
                            let [_, a0, a1, a2, a3] = *a.specific else {
                                return Err("Bidirectional Read EDTL AHS length is not 5");
                            };
                            bidi_read_edtl = Some(u32::from_be_bytes([a0, a1, a2, a3]));
                        }
                        _ => return Err("unknown AHS type"),
                    }
                }
                Pdu::ScsiCommand(ScsiCommand {
                    immediate: imm,
                    final_: f & 0x80 != 0,
                    read: f & 0x40 != 0,
                    write: f & 0x20 != 0,
                    attr: f & 7,
                    lun: h.u64_at(8),
                    itt: h.u32_at(16),
                    edtl: h.u32_at(20),
                    cmd_sn: h.u32_at(24),
                    exp_stat_sn: h.u32_at(28),
                    cdb: h.bytes::<16>(32),
                    ext_cdb,
                    bidi_read_edtl,
                    data,
                })
            }
            Opcode::TaskMgmtRequest => Pdu::TaskMgmtRequest(TaskMgmtRequest {
                immediate: imm,
                function: f & 0x7f,
                lun: h.u64_at(8),
                itt: h.u32_at(16),
                referenced_task_tag: h.u32_at(20),
                cmd_sn: h.u32_at(24),
                exp_stat_sn: h.u32_at(28),
                ref_cmd_sn: h.u32_at(32),
                exp_data_sn: h.u32_at(36),
            }),
            Opcode::LoginRequest => Pdu::LoginRequest(LoginRequest {
                transit: f & 0x80 != 0,
                continue_: f & 0x40 != 0,
                csg: Stage::from_bits(f >> 2),
                nsg: Stage::from_bits(f),
                version_max: h.u8_at(2),
                version_min: h.u8_at(3),
                isid: h.bytes::<6>(8),
                tsih: h.u16_at(14),
                itt: h.u32_at(16),
                cid: h.u16_at(20),
                cmd_sn: h.u32_at(24),
                exp_stat_sn: h.u32_at(28),
                data,
            }),
            Opcode::TextRequest => Pdu::TextRequest(TextRequest {
                immediate: imm,
                final_: f & 0x80 != 0,
                continue_: f & 0x40 != 0,
                lun: h.u64_at(8),
                itt: h.u32_at(16),
                ttt: h.u32_at(20),
                cmd_sn: h.u32_at(24),
                exp_stat_sn: h.u32_at(28),
                data,
            }),
            Opcode::DataOut => Pdu::DataOut(DataOut {
                final_: f & 0x80 != 0,
                lun: h.u64_at(8),
                itt: h.u32_at(16),
                ttt: h.u32_at(20),
                exp_stat_sn: h.u32_at(28),
                data_sn: h.u32_at(36),
                buffer_offset: h.u32_at(40),
                data,
            }),
            Opcode::LogoutRequest => Pdu::LogoutRequest(LogoutRequest {
                immediate: imm,
                reason_code: f & 0x7f,
                itt: h.u32_at(16),
                cid: h.u16_at(20),
                cmd_sn: h.u32_at(24),
                exp_stat_sn: h.u32_at(28),
            }),
            Opcode::SnackRequest => Pdu::SnackRequest(SnackRequest {
                snack_type: f & 0x0f,
                lun: h.u64_at(8),
                itt: h.u32_at(16),
                ttt: h.u32_at(20),
                exp_stat_sn: h.u32_at(28),
                beg_run: h.u32_at(36),
                run_length: h.u32_at(40),
            }),
            Opcode::NopIn => Pdu::NopIn(NopIn {
                lun: h.u64_at(8),
                itt: h.u32_at(16),
                ttt: h.u32_at(20),
                stat_sn: h.u32_at(24),
                exp_cmd_sn: h.u32_at(28),
                max_cmd_sn: h.u32_at(32),
                data,
            }),
            Opcode::ScsiResponse => {
                let sense = if data.len() >= 2 {
                    let len = u16::from_be_bytes([data[0], data[1]]) as usize;
                    if 2 + len > data.len() {
                        return Err("SenseLength exceeds the data segment");
                    }
                    data.slice(2..2 + len)
                } else if data.is_empty() {
                    Bytes::new()
                } else {
                    return Err("data segment too short for SenseLength");
                };
                Pdu::ScsiResponse(ScsiResponse {
                    bidi_read_residual_overflow: f & 0x10 != 0,
                    bidi_read_residual_underflow: f & 0x08 != 0,
                    residual_overflow: f & 0x04 != 0,
                    residual_underflow: f & 0x02 != 0,
                    response: h.u8_at(2),
                    status: h.u8_at(3),
                    itt: h.u32_at(16),
                    snack_tag: h.u32_at(20),
                    stat_sn: h.u32_at(24),
                    exp_cmd_sn: h.u32_at(28),
                    max_cmd_sn: h.u32_at(32),
                    exp_data_sn: h.u32_at(36),
                    bidi_read_residual_count: h.u32_at(40),
                    residual_count: h.u32_at(44),
                    sense,
                })
            }
            Opcode::TaskMgmtResponse => Pdu::TaskMgmtResponse(TaskMgmtResponse {
                response: h.u8_at(2),
                itt: h.u32_at(16),
                stat_sn: h.u32_at(24),
                exp_cmd_sn: h.u32_at(28),
                max_cmd_sn: h.u32_at(32),
            }),
            Opcode::LoginResponse => Pdu::LoginResponse(LoginResponse {
                transit: f & 0x80 != 0,
                continue_: f & 0x40 != 0,
                csg: Stage::from_bits(f >> 2),
                nsg: Stage::from_bits(f),
                version_max: h.u8_at(2),
                version_active: h.u8_at(3),
                isid: h.bytes::<6>(8),
                tsih: h.u16_at(14),
                itt: h.u32_at(16),
                stat_sn: h.u32_at(24),
                exp_cmd_sn: h.u32_at(28),
                max_cmd_sn: h.u32_at(32),
                status_class: h.u8_at(36),
                status_detail: h.u8_at(37),
                data,
            }),
            Opcode::TextResponse => Pdu::TextResponse(TextResponse {
                final_: f & 0x80 != 0,
                continue_: f & 0x40 != 0,
                lun: h.u64_at(8),
                itt: h.u32_at(16),
                ttt: h.u32_at(20),
                stat_sn: h.u32_at(24),
                exp_cmd_sn: h.u32_at(28),
                max_cmd_sn: h.u32_at(32),
                data,
            }),
            Opcode::DataIn => Pdu::DataIn(DataIn {
                final_: f & 0x80 != 0,
                ack: f & 0x40 != 0,
                residual_overflow: f & 0x04 != 0,
                residual_underflow: f & 0x02 != 0,
                status_present: f & 0x01 != 0,
                status: h.u8_at(3),
                lun: h.u64_at(8),
                itt: h.u32_at(16),
                ttt: h.u32_at(20),
                stat_sn: h.u32_at(24),
                exp_cmd_sn: h.u32_at(28),
                max_cmd_sn: h.u32_at(32),
                data_sn: h.u32_at(36),
                buffer_offset: h.u32_at(40),
                residual_count: h.u32_at(44),
                data,
            }),
            Opcode::LogoutResponse => Pdu::LogoutResponse(LogoutResponse {
                response: h.u8_at(2),
                itt: h.u32_at(16),
                stat_sn: h.u32_at(24),
                exp_cmd_sn: h.u32_at(28),
                max_cmd_sn: h.u32_at(32),
                time2wait: h.u16_at(40),
                time2retain: h.u16_at(42),
            }),
            Opcode::R2t => Pdu::R2t(R2t {
                lun: h.u64_at(8),
                itt: h.u32_at(16),
                ttt: h.u32_at(20),
                stat_sn: h.u32_at(24),
                exp_cmd_sn: h.u32_at(28),
                max_cmd_sn: h.u32_at(32),
                r2t_sn: h.u32_at(36),
                buffer_offset: h.u32_at(40),
                desired_data_transfer_length: h.u32_at(44),
            }),
            Opcode::AsyncMessage => Pdu::AsyncMessage(AsyncMessage {
                lun: h.u64_at(8),
                stat_sn: h.u32_at(24),
                exp_cmd_sn: h.u32_at(28),
                max_cmd_sn: h.u32_at(32),
                async_event: h.u8_at(36),
                async_vcode: h.u8_at(37),
                parameter1: h.u16_at(38),
                parameter2: h.u16_at(40),
                parameter3: h.u16_at(42),
                data,
            }),
            Opcode::Reject => Pdu::Reject(Reject {
                reason: h.u8_at(2),
                stat_sn: h.u32_at(24),
                exp_cmd_sn: h.u32_at(28),
                max_cmd_sn: h.u32_at(32),
                data_sn: h.u32_at(36),
                header: data,
            }),
        })
    }
}

fn login_flags(transit: bool, cont: bool, csg: Stage, nsg: Stage) -> u8 {
    flag(transit, 0x80) | flag(cont, 0x40) | (csg.bits() << 2) | nsg.bits()
}

/// LUN (bytes 8-15), Initiator Task Tag (16-19) and the tag in bytes 20-23:
/// Target Transfer Tag, or Referenced Task Tag (§11.2.1, §11.5.2).
fn set_tags(h: &mut Bhs, lun: u64, itt: u32, tag20: u32) {
    h.set_u64(8, lun);
    h.set_u32(16, itt);
    h.set_u32(20, tag20);
}

/// CmdSN and ExpStatSN, bytes 24-31 of initiator PDUs (§11.3, §11.10, §11.12).
fn set_cmd_sns(h: &mut Bhs, cmd_sn: u32, exp_stat_sn: u32) {
    h.set_u32(24, cmd_sn);
    h.set_u32(28, exp_stat_sn);
}

/// StatSN, ExpCmdSN and MaxCmdSN, bytes 24-35 of target PDUs (§11.4, §11.7, §11.19).
fn set_sns(h: &mut Bhs, stat_sn: u32, exp_cmd_sn: u32, max_cmd_sn: u32) {
    h.set_u32(24, stat_sn);
    h.set_u32(28, exp_cmd_sn);
    h.set_u32(32, max_cmd_sn);
}

macro_rules! impl_from {
    ($($t:ident),*) => {$(
        impl From<$t> for Pdu {
            fn from(p: $t) -> Pdu { Pdu::$t(p) }
        }
    )*};
}
impl_from!(
    NopOut,
    ScsiCommand,
    TaskMgmtRequest,
    LoginRequest,
    TextRequest,
    DataOut,
    LogoutRequest,
    SnackRequest,
    NopIn,
    ScsiResponse,
    TaskMgmtResponse,
    LoginResponse,
    TextResponse,
    DataIn,
    LogoutResponse,
    R2t,
    AsyncMessage,
    Reject
);
