//! Operational text keys (RFC 7143 §13) and their negotiation rules (§6.2):
//! list (first acceptable value of the offer), numerical minimum/maximum,
//! boolean AND/OR, and declaratives. [`Negotiator`] is used by both sides.

use crate::codec::Digests;
use crate::error::LoginError;
use crate::text::TextPairs;

/// Largest value of MaxRecvDataSegmentLength/MaxBurstLength/FirstBurstLength (§13.12-§13.14).
pub const MAX_LENGTH_KEY: u32 = (1 << 24) - 1;
/// Smallest such value.
pub const MIN_LENGTH_KEY: u32 = 512;

/// Special answers (§6.2).
pub mod answer {
    /// Offered value not acceptable.
    pub const REJECT: &str = "Reject";
    /// Key irrelevant in this context.
    pub const IRRELEVANT: &str = "Irrelevant";
    /// Key not understood.
    pub const NOT_UNDERSTOOD: &str = "NotUnderstood";
}

/// SessionType (§13.21).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum SessionType {
    /// Normal operational session.
    #[default]
    Normal,
    /// Discovery session (SendTargets only).
    Discovery,
}

impl SessionType {
    /// Parse the key value.
    pub fn parse(v: &str) -> Option<Self> {
        match v {
            "Normal" => Some(SessionType::Normal),
            "Discovery" => Some(SessionType::Discovery),
            _ => None,
        }
    }
    /// The key value.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionType::Normal => "Normal",
            SessionType::Discovery => "Discovery",
        }
    }
}

/// Digest algorithms for HeaderDigest/DataDigest (§13.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DigestAlg {
    /// No digest.
    None,
    /// CRC32C.
    Crc32c,
}

impl DigestAlg {
    fn parse(v: &str) -> Option<Self> {
        match v {
            "None" => Some(DigestAlg::None),
            "CRC32C" => Some(DigestAlg::Crc32c),
            _ => None,
        }
    }
    fn as_str(self) -> &'static str {
        match self {
            DigestAlg::None => "None",
            DigestAlg::Crc32c => "CRC32C",
        }
    }
}

/// One side's wishes for the operational keys. For list keys the order is the
/// preference (initiator) or merely the acceptable set (target).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefs {
    /// HeaderDigest (§13.1).
    pub header_digest: Vec<DigestAlg>,
    /// DataDigest (§13.1).
    pub data_digest: Vec<DigestAlg>,
    /// MaxConnections (§13.2).
    pub max_connections: u16,
    /// InitialR2T (§13.10).
    pub initial_r2t: bool,
    /// ImmediateData (§13.11).
    pub immediate_data: bool,
    /// Our MaxRecvDataSegmentLength (§13.12), declared.
    pub max_recv_data_segment_length: u32,
    /// MaxBurstLength (§13.13).
    pub max_burst_length: u32,
    /// FirstBurstLength (§13.14).
    pub first_burst_length: u32,
    /// DefaultTime2Wait (§13.15).
    pub default_time2wait: u16,
    /// DefaultTime2Retain (§13.16).
    pub default_time2retain: u16,
    /// MaxOutstandingR2T (§13.17).
    pub max_outstanding_r2t: u16,
    /// DataPDUInOrder (§13.18).
    pub data_pdu_in_order: bool,
    /// DataSequenceInOrder (§13.19).
    pub data_sequence_in_order: bool,
    /// ErrorRecoveryLevel (§13.20); only 0 is implemented.
    pub error_recovery_level: u8,
}

impl Prefs {
    /// What portshift's target accepts: both digests, immediate data, large bursts.
    pub fn target_default() -> Self {
        Prefs {
            header_digest: vec![DigestAlg::None, DigestAlg::Crc32c],
            data_digest: vec![DigestAlg::None, DigestAlg::Crc32c],
            max_connections: 1,
            initial_r2t: false,
            immediate_data: true,
            max_recv_data_segment_length: 256 * 1024,
            max_burst_length: 16 * 1024 * 1024 - 1024,
            first_burst_length: 256 * 1024,
            default_time2wait: 2,
            default_time2retain: 0,
            max_outstanding_r2t: 16,
            data_pdu_in_order: true,
            data_sequence_in_order: true,
            error_recovery_level: 0,
        }
    }

    /// What portshift's initiator offers (ImmediateData=Yes, InitialR2T=No, ...):
    /// the target's values, but no digests, one outstanding R2T, and a MaxRecvDataSegmentLength
    /// of 1 MiB, so that a 1 MiB READ comes back in one Data-In PDU that is handed to the
    /// caller without a copy.
    pub fn initiator_default() -> Self {
        Prefs {
            header_digest: vec![DigestAlg::None],
            data_digest: vec![DigestAlg::None],
            max_outstanding_r2t: 1,
            max_recv_data_segment_length: 1024 * 1024,
            ..Prefs::target_default()
        }
    }

    /// The offers an originator sends in the operational stage, in libiscsi's order.
    pub fn offers(&self) -> TextPairs {
        let list = |v: &[DigestAlg]| v.iter().map(|d| d.as_str()).collect::<Vec<_>>().join(",");
        [
            ("HeaderDigest", list(&self.header_digest)),
            ("DataDigest", list(&self.data_digest)),
            ("InitialR2T", yes_no(self.initial_r2t).to_string()),
            ("ImmediateData", yes_no(self.immediate_data).to_string()),
            ("MaxBurstLength", self.max_burst_length.to_string()),
            ("FirstBurstLength", self.first_burst_length.to_string()),
            (
                "MaxRecvDataSegmentLength",
                self.max_recv_data_segment_length.to_string(),
            ),
            ("DataPDUInOrder", yes_no(self.data_pdu_in_order).to_string()),
            ("DefaultTime2Wait", self.default_time2wait.to_string()),
            ("DefaultTime2Retain", self.default_time2retain.to_string()),
            ("MaxConnections", self.max_connections.to_string()),
            ("MaxOutstandingR2T", self.max_outstanding_r2t.to_string()),
            ("ErrorRecoveryLevel", self.error_recovery_level.to_string()),
            (
                "DataSequenceInOrder",
                yes_no(self.data_sequence_in_order).to_string(),
            ),
        ]
        .into_iter()
        .collect()
    }
}

/// Negotiated session and connection parameters; `Default` holds the RFC 7143 §13 defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionParams {
    /// HeaderDigest result.
    pub header_digest: bool,
    /// DataDigest result.
    pub data_digest: bool,
    /// MaxConnections.
    pub max_connections: u16,
    /// InitialR2T.
    pub initial_r2t: bool,
    /// ImmediateData.
    pub immediate_data: bool,
    /// MaxRecvDataSegmentLength declared by the initiator: the target's Data-In limit.
    pub initiator_max_recv_data_segment_length: u32,
    /// MaxRecvDataSegmentLength declared by the target: the initiator's Data-Out limit.
    pub target_max_recv_data_segment_length: u32,
    /// MaxBurstLength.
    pub max_burst_length: u32,
    /// FirstBurstLength.
    pub first_burst_length: u32,
    /// DefaultTime2Wait.
    pub default_time2wait: u16,
    /// DefaultTime2Retain.
    pub default_time2retain: u16,
    /// MaxOutstandingR2T.
    pub max_outstanding_r2t: u16,
    /// DataPDUInOrder.
    pub data_pdu_in_order: bool,
    /// DataSequenceInOrder.
    pub data_sequence_in_order: bool,
    /// ErrorRecoveryLevel.
    pub error_recovery_level: u8,
    /// SessionType.
    pub session_type: SessionType,
    /// InitiatorName (§13.5).
    pub initiator_name: String,
    /// InitiatorAlias (§13.7).
    pub initiator_alias: Option<String>,
    /// TargetName (§13.4); None for discovery sessions.
    pub target_name: Option<String>,
    /// TargetAlias (§13.6).
    pub target_alias: Option<String>,
    /// TargetPortalGroupTag (§13.9).
    pub target_portal_group_tag: Option<u16>,
}

impl Default for SessionParams {
    fn default() -> Self {
        SessionParams {
            header_digest: false,
            data_digest: false,
            max_connections: 1,
            initial_r2t: true,
            immediate_data: true,
            initiator_max_recv_data_segment_length: 8192,
            target_max_recv_data_segment_length: 8192,
            max_burst_length: 262_144,
            first_burst_length: 65_536,
            default_time2wait: 2,
            default_time2retain: 20,
            max_outstanding_r2t: 1,
            data_pdu_in_order: true,
            data_sequence_in_order: true,
            error_recovery_level: 0,
            session_type: SessionType::Normal,
            initiator_name: String::new(),
            initiator_alias: None,
            target_name: None,
            target_alias: None,
            target_portal_group_tag: None,
        }
    }
}

impl SessionParams {
    /// Digests to switch the codec to after login.
    pub fn digests(&self) -> Digests {
        Digests {
            header: self.header_digest,
            data: self.data_digest,
        }
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "Yes" } else { "No" }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "Yes" => Some(true),
        "No" => Some(false),
        _ => None,
    }
}

/// Parse a numerical value (§5.1: decimal or 0x-prefixed hex) within `[min, max]`.
pub fn parse_number(v: &str, min: u64, max: u64) -> Option<u64> {
    let n = if let Some(h) = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        u64::from_str_radix(h, 16).ok()?
    } else {
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) || v.len() > 20 {
            return None;
        }
        v.parse().ok()?
    };
    (min..=max).contains(&n).then_some(n)
}

/// Negotiation result function of a key (§6.2, §13).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    Digest,
    Min(u64, u64),
    Max(u64, u64),
    And,
    Or,
}

fn rule(key: &str) -> Option<Rule> {
    Some(match key {
        "HeaderDigest" | "DataDigest" => Rule::Digest,
        "MaxConnections" | "MaxOutstandingR2T" => Rule::Min(1, 65535),
        "MaxBurstLength" | "FirstBurstLength" => {
            Rule::Min(MIN_LENGTH_KEY as u64, MAX_LENGTH_KEY as u64)
        }
        "DefaultTime2Wait" => Rule::Max(0, 3600),
        "DefaultTime2Retain" => Rule::Min(0, 3600),
        "ErrorRecoveryLevel" => Rule::Min(0, 2),
        "InitialR2T" | "DataPDUInOrder" | "DataSequenceInOrder" => Rule::Or,
        "ImmediateData" => Rule::And,
        _ => return None,
    })
}

/// Which side of the login a [`Negotiator`] is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The initiator (originates the operational offers).
    Initiator,
    /// The target (answers them).
    Target,
}

/// Negotiation state for one side of a login.
#[derive(Debug, Clone)]
pub struct Negotiator {
    prefs: Prefs,
    role: Role,
    /// The values negotiated so far.
    pub params: SessionParams,
}

/// What to do with one received key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyResponse {
    /// Send `key=value` back.
    Answer(String),
    /// Nothing to send (declaratives).
    Silent,
}

impl Negotiator {
    /// Start from RFC defaults.
    pub fn new(prefs: Prefs, role: Role) -> Self {
        Negotiator {
            prefs,
            role,
            params: SessionParams::default(),
        }
    }

    /// Our preferences.
    pub fn prefs(&self) -> &Prefs {
        &self.prefs
    }

    /// Record a session/connection key's result.
    fn set(&mut self, key: &str, v: u64) {
        let p = &mut self.params;
        let b = v != 0;
        match key {
            "MaxConnections" => p.max_connections = v as u16,
            "MaxOutstandingR2T" => p.max_outstanding_r2t = v as u16,
            "MaxBurstLength" => p.max_burst_length = v as u32,
            "FirstBurstLength" => p.first_burst_length = v as u32,
            "DefaultTime2Wait" => p.default_time2wait = v as u16,
            "DefaultTime2Retain" => p.default_time2retain = v as u16,
            "ErrorRecoveryLevel" => p.error_recovery_level = v as u8,
            "InitialR2T" => p.initial_r2t = b,
            "DataPDUInOrder" => p.data_pdu_in_order = b,
            "DataSequenceInOrder" => p.data_sequence_in_order = b,
            "ImmediateData" => p.immediate_data = b,
            "HeaderDigest" => p.header_digest = b,
            "DataDigest" => p.data_digest = b,
            _ => {}
        }
    }

    fn pref_number(&self, key: &str) -> u64 {
        let p = &self.prefs;
        match key {
            "MaxConnections" => p.max_connections as u64,
            "MaxOutstandingR2T" => p.max_outstanding_r2t as u64,
            "MaxBurstLength" => p.max_burst_length as u64,
            "FirstBurstLength" => p.first_burst_length.min(p.max_burst_length) as u64,
            "DefaultTime2Wait" => p.default_time2wait as u64,
            "DefaultTime2Retain" => p.default_time2retain as u64,
            "ErrorRecoveryLevel" => p.error_recovery_level as u64,
            _ => 0,
        }
    }

    fn pref_bool(&self, key: &str) -> bool {
        let p = &self.prefs;
        match key {
            "InitialR2T" => p.initial_r2t,
            "DataPDUInOrder" => p.data_pdu_in_order,
            "DataSequenceInOrder" => p.data_sequence_in_order,
            "ImmediateData" => p.immediate_data,
            _ => false,
        }
    }

    fn pref_digests(&self, key: &str) -> &[DigestAlg] {
        if key == "HeaderDigest" {
            &self.prefs.header_digest
        } else {
            &self.prefs.data_digest
        }
    }

    /// Answer an operational key offered by the other side (§6.2) and record the result.
    /// Keys outside §13's operational set answer `NotUnderstood`; names and other
    /// declaratives are the login state machine's business and are not handled here.
    pub fn respond(&mut self, key: &str, value: &str) -> KeyResponse {
        use KeyResponse::{Answer, Silent};
        let reject = || Answer(answer::REJECT.to_string());
        match key {
            "MaxRecvDataSegmentLength" => {
                // Declarative (§13.12): the sender's receive limit.
                return match parse_number(value, MIN_LENGTH_KEY as u64, MAX_LENGTH_KEY as u64) {
                    Some(n) => {
                        self.record_peer_mrdsl(n as u32);
                        Silent
                    }
                    None => reject(),
                };
            }
            // RFC 7143 §13.26 obsoleted markers: "No" is an allowed answer to the
            // IFMarker/OFMarker keys; the interval keys must be answered Reject.
            "IFMarker" | "OFMarker" => return Answer("No".to_string()),
            "IFMarkInt" | "OFMarkInt" => return reject(),
            // iSER (RFC 7145): not over TCP; its length declaratives are then ignored.
            "RDMAExtensions" => return Answer("No".to_string()),
            "InitiatorRecvDataSegmentLength" | "TargetRecvDataSegmentLength" => return Silent,
            // RFC 7144 §13.24 (numerical, minimum); RFC 7143 is level 1.
            "iSCSIProtocolLevel" => {
                return match parse_number(value, 0, 31) {
                    Some(n) => Answer(n.min(1).to_string()),
                    None => reject(),
                };
            }
            // RFC 7143 §13.23: only the RFC 3720 semantics are implemented.
            "TaskReporting" => {
                return if value.split(',').any(|v| v == "RFC3720") {
                    Answer("RFC3720".to_string())
                } else {
                    reject()
                };
            }
            _ => {}
        }
        let Some(r) = rule(key) else {
            return Answer(answer::NOT_UNDERSTOOD.to_string());
        };
        match r {
            Rule::Digest => {
                let acceptable = self.pref_digests(key);
                let chosen = value
                    .split(',')
                    .filter_map(DigestAlg::parse)
                    .find(|d| acceptable.contains(d));
                match chosen {
                    Some(d) => {
                        self.set(key, (d == DigestAlg::Crc32c) as u64);
                        Answer(d.as_str().to_string())
                    }
                    None => reject(),
                }
            }
            Rule::Min(lo, hi) | Rule::Max(lo, hi) => match parse_number(value, lo, hi) {
                Some(n) => {
                    let mine = self.pref_number(key).clamp(lo, hi);
                    let res = if matches!(r, Rule::Min(..)) {
                        n.min(mine)
                    } else {
                        n.max(mine)
                    };
                    self.set(key, res);
                    Answer(res.to_string())
                }
                None => reject(),
            },
            Rule::And | Rule::Or => match parse_bool(value) {
                Some(b) => {
                    let mine = self.pref_bool(key);
                    let res = if r == Rule::And { b && mine } else { b || mine };
                    self.set(key, res as u64);
                    Answer(yes_no(res).to_string())
                }
                None => reject(),
            },
        }
    }

    /// Where the peer's declared MaxRecvDataSegmentLength goes.
    fn record_peer_mrdsl(&mut self, n: u32) {
        match self.role {
            Role::Target => self.params.initiator_max_recv_data_segment_length = n,
            Role::Initiator => self.params.target_max_recv_data_segment_length = n,
        }
    }

    /// Our own MaxRecvDataSegmentLength declaration (§13.12); records it in `params`.
    pub fn declare_mrdsl(&mut self) -> (&'static str, String) {
        let n = self
            .prefs
            .max_recv_data_segment_length
            .clamp(MIN_LENGTH_KEY, MAX_LENGTH_KEY);
        match self.role {
            Role::Target => self.params.target_max_recv_data_segment_length = n,
            Role::Initiator => self.params.initiator_max_recv_data_segment_length = n,
        }
        ("MaxRecvDataSegmentLength", n.to_string())
    }

    /// Originator side: apply the answer to a key we offered (§6.2). Special
    /// answers (Reject, Irrelevant, NotUnderstood) leave the RFC default in place.
    /// Keys with no negotiation rule are ignored (the caller handles declaratives).
    pub fn apply_answer(&mut self, key: &str, value: &str) -> Result<(), LoginError> {
        if matches!(
            value,
            answer::REJECT | answer::IRRELEVANT | answer::NOT_UNDERSTOOD
        ) {
            return Ok(());
        }
        let bad = || LoginError::BadAnswer {
            key: key.to_string(),
            value: value.to_string(),
        };
        if key == "MaxRecvDataSegmentLength" {
            let n = parse_number(value, MIN_LENGTH_KEY as u64, MAX_LENGTH_KEY as u64)
                .ok_or_else(bad)?;
            self.record_peer_mrdsl(n as u32);
            return Ok(());
        }
        let Some(r) = rule(key) else {
            return Ok(());
        };
        match r {
            Rule::Digest => {
                let d = DigestAlg::parse(value).ok_or_else(bad)?;
                if !self.pref_digests(key).contains(&d) {
                    return Err(bad());
                }
                self.set(key, (d == DigestAlg::Crc32c) as u64);
            }
            Rule::Min(lo, hi) | Rule::Max(lo, hi) => {
                let n = parse_number(value, lo, hi).ok_or_else(bad)?;
                let mine = self.pref_number(key);
                let ok = if matches!(r, Rule::Min(..)) {
                    n <= mine
                } else {
                    n >= mine
                };
                if !ok {
                    return Err(bad());
                }
                self.set(key, n);
            }
            Rule::And | Rule::Or => {
                let b = parse_bool(value).ok_or_else(bad)?;
                let mine = self.pref_bool(key);
                let res = if r == Rule::And { b && mine } else { b || mine };
                self.set(key, res as u64);
            }
        }
        Ok(())
    }

    /// Final consistency fix-ups after negotiation (§13.14: FirstBurstLength ≤ MaxBurstLength).
    pub fn finish(&mut self) -> SessionParams {
        let p = &mut self.params;
        if p.first_burst_length > p.max_burst_length {
            p.first_burst_length = p.max_burst_length;
        }
        p.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer_of(n: &mut Negotiator, k: &str, v: &str) -> String {
        match n.respond(k, v) {
            KeyResponse::Answer(a) => a,
            KeyResponse::Silent => String::new(),
        }
    }

    #[test]
    fn target_answers_libiscsi_offers() {
        let mut n = Negotiator::new(Prefs::target_default(), Role::Target);
        assert_eq!(answer_of(&mut n, "HeaderDigest", "None,CRC32C"), "None");
        assert_eq!(answer_of(&mut n, "DataDigest", "CRC32C,None"), "CRC32C");
        assert_eq!(answer_of(&mut n, "InitialR2T", "No"), "No");
        assert_eq!(answer_of(&mut n, "ImmediateData", "Yes"), "Yes");
        assert_eq!(answer_of(&mut n, "MaxBurstLength", "262144"), "262144");
        assert_eq!(answer_of(&mut n, "FirstBurstLength", "0x40000"), "262144");
        assert_eq!(answer_of(&mut n, "MaxRecvDataSegmentLength", "262144"), "");
        assert_eq!(answer_of(&mut n, "DefaultTime2Wait", "0"), "2");
        assert_eq!(answer_of(&mut n, "DefaultTime2Retain", "20"), "0");
        assert_eq!(answer_of(&mut n, "IFMarker", "No"), "No");
        assert_eq!(answer_of(&mut n, "OFMarkInt", "1~65535"), "Reject");
        assert_eq!(answer_of(&mut n, "MaxConnections", "8"), "1");
        assert_eq!(answer_of(&mut n, "ErrorRecoveryLevel", "2"), "0");
        assert_eq!(answer_of(&mut n, "X-com.example.foo", "1"), "NotUnderstood");
        assert_eq!(answer_of(&mut n, "RDMAExtensions", "Yes"), "No");
        assert_eq!(answer_of(&mut n, "MaxBurstLength", "100"), "Reject");
        assert_eq!(answer_of(&mut n, "ImmediateData", "maybe"), "Reject");
        let p = n.finish();
        assert!(!p.header_digest && p.data_digest && !p.initial_r2t && p.immediate_data);
        assert_eq!(p.initiator_max_recv_data_segment_length, 262_144);
        assert_eq!(p.max_burst_length, 262_144);
        assert_eq!(p.default_time2retain, 0);
    }

    #[test]
    fn boolean_or_and() {
        let mut prefs = Prefs::target_default();
        prefs.initial_r2t = true;
        prefs.immediate_data = false;
        let mut n = Negotiator::new(prefs, Role::Target);
        assert_eq!(answer_of(&mut n, "InitialR2T", "No"), "Yes");
        assert_eq!(answer_of(&mut n, "ImmediateData", "Yes"), "No");
    }

    #[test]
    fn initiator_applies_answers() {
        let mut n = Negotiator::new(Prefs::initiator_default(), Role::Initiator);
        n.declare_mrdsl();
        n.apply_answer("MaxBurstLength", "65536").unwrap();
        n.apply_answer("MaxRecvDataSegmentLength", "8192").unwrap();
        n.apply_answer("InitialR2T", "Yes").unwrap();
        n.apply_answer("HeaderDigest", "None").unwrap();
        n.apply_answer("ErrorRecoveryLevel", "NotUnderstood")
            .unwrap();
        assert!(n.apply_answer("HeaderDigest", "CRC32C").is_err());
        assert!(n.apply_answer("MaxBurstLength", "99999999").is_err());
        assert!(n.apply_answer("DefaultTime2Wait", "1").is_err());
        let p = n.finish();
        assert_eq!(p.max_burst_length, 65536);
        assert_eq!(p.first_burst_length, 65536);
        assert_eq!(p.target_max_recv_data_segment_length, 8192);
        assert_eq!(p.initiator_max_recv_data_segment_length, 1024 * 1024);
        assert!(p.initial_r2t);
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_number("0x10", 0, 100), Some(16));
        assert_eq!(parse_number("17", 0, 100), Some(17));
        assert_eq!(parse_number("101", 0, 100), None);
        assert_eq!(parse_number("-1", 0, 100), None);
        assert_eq!(parse_number("", 0, 100), None);
        assert_eq!(parse_number("99999999999999999999999", 0, u64::MAX), None);
    }
}
