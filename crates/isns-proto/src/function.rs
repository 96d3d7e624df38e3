//! Function IDs (RFC 4171 §5.1.3, §5.6) and response status codes (§5.7.3).

/// iSNSP function ID. Responses have bit 15 set (request | 0x8000).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FunctionId(pub u16);

impl FunctionId {
    pub const DEV_ATTR_REG: FunctionId = FunctionId(0x0001);
    pub const DEV_ATTR_QRY: FunctionId = FunctionId(0x0002);
    pub const DEV_GET_NEXT: FunctionId = FunctionId(0x0003);
    pub const DEV_DEREG: FunctionId = FunctionId(0x0004);
    pub const SCN_REG: FunctionId = FunctionId(0x0005);
    pub const SCN_DEREG: FunctionId = FunctionId(0x0006);
    pub const SCN_EVENT: FunctionId = FunctionId(0x0007);
    pub const SCN: FunctionId = FunctionId(0x0008);
    pub const DD_REG: FunctionId = FunctionId(0x0009);
    pub const DD_DEREG: FunctionId = FunctionId(0x000A);
    pub const DDS_REG: FunctionId = FunctionId(0x000B);
    pub const DDS_DEREG: FunctionId = FunctionId(0x000C);
    pub const ESI: FunctionId = FunctionId(0x000D);
    pub const HEARTBEAT: FunctionId = FunctionId(0x000E);
    const RESPONSE_BIT: u16 = 0x8000;

    /// Whether this is a response function ID.
    pub fn is_response(self) -> bool {
        self.0 & Self::RESPONSE_BIT != 0
    }

    /// The response ID for a request ID (§5.1.3).
    pub fn response(self) -> FunctionId {
        FunctionId(self.0 | Self::RESPONSE_BIT)
    }

    /// The request ID a response answers.
    pub fn request(self) -> FunctionId {
        FunctionId(self.0 & !Self::RESPONSE_BIT)
    }

    /// RFC name of the function, for logs.
    pub fn name(self) -> &'static str {
        match self.request().0 {
            0x0001 => "DevAttrReg",
            0x0002 => "DevAttrQry",
            0x0003 => "DevGetNext",
            0x0004 => "DevDereg",
            0x0005 => "SCNReg",
            0x0006 => "SCNDereg",
            0x0007 => "SCNEvent",
            0x0008 => "SCN",
            0x0009 => "DDReg",
            0x000A => "DDDereg",
            0x000B => "DDSReg",
            0x000C => "DDSDereg",
            0x000D => "ESI",
            0x000E => "Heartbeat",
            _ => "unknown",
        }
    }
}

/// Response status codes (§5.7.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Status(pub u32);

impl Status {
    pub const SUCCESS: Status = Status(0);
    pub const UNKNOWN_ERROR: Status = Status(1);
    pub const MESSAGE_FORMAT_ERROR: Status = Status(2);
    pub const INVALID_REGISTRATION: Status = Status(3);
    pub const INVALID_QUERY: Status = Status(5);
    pub const SOURCE_UNKNOWN: Status = Status(6);
    pub const SOURCE_ABSENT: Status = Status(7);
    pub const SOURCE_UNAUTHORIZED: Status = Status(8);
    pub const NO_SUCH_ENTRY: Status = Status(9);
    pub const VERSION_NOT_SUPPORTED: Status = Status(10);
    pub const INTERNAL_ERROR: Status = Status(11);
    pub const BUSY: Status = Status(12);
    pub const OPTION_NOT_UNDERSTOOD: Status = Status(13);
    pub const INVALID_UPDATE: Status = Status(14);
    pub const MESSAGE_NOT_SUPPORTED: Status = Status(15);
    pub const SCN_EVENT_REJECTED: Status = Status(16);
    pub const SCN_REGISTRATION_REJECTED: Status = Status(17);
    pub const ATTRIBUTE_NOT_IMPLEMENTED: Status = Status(18);
    pub const ESI_NOT_AVAILABLE: Status = Status(21);
    pub const INVALID_DEREGISTRATION: Status = Status(22);
    pub const REGISTRATION_FEATURE_NOT_SUPPORTED: Status = Status(23);

    /// RFC description of the status, for errors and logs.
    pub fn describe(self) -> &'static str {
        match self.0 {
            0 => "Successful",
            1 => "Unknown Error",
            2 => "Message Format Error",
            3 => "Invalid Registration",
            5 => "Invalid Query",
            6 => "Source Unknown",
            7 => "Source Absent",
            8 => "Source Unauthorized",
            9 => "No Such Entry",
            10 => "Version Not Supported",
            11 => "Internal Error",
            12 => "Busy",
            13 => "Option Not Understood",
            14 => "Invalid Update",
            15 => "Message (FUNCTION_ID) Not Supported",
            16 => "SCN Event Rejected",
            17 => "SCN Registration Rejected",
            18 => "Attribute Not Implemented",
            19 => "FC_DOMAIN_ID Not Available",
            20 => "FC_DOMAIN_ID Not Allocated",
            21 => "ESI Not Available",
            22 => "Invalid Deregistration",
            23 => "Registration Feature Not Supported",
            _ => "Reserved",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.describe(), self.0)
    }
}
