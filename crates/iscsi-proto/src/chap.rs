//! CHAP authentication during login (RFC 7143 §12.1.3, RFC 1994), sans-IO: the values
//! (binary encodings of §6.1 with their length limits), the MD5 response, the credential
//! rules (secret length, no reflection), and the two sides of the exchange — the
//! [`Authenticator`] (target: challenges, verifies, answers a mutual challenge) and the
//! [`Responder`] (initiator: answers, challenges back, verifies). Randomness (CHAP_I and
//! CHAP_C) is drawn by the caller and passed in.

use std::fmt;

use base64::Engine;
use md5::{Digest, Md5};

/// CHAP credentials: the name one side gives (`CHAP_N`) and the secret both sides share.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub secret: String,
}

impl fmt::Debug for Credentials {
    /// The secret is never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// CHAP_A value of CHAP with MD5 (RFC 1994, RFC 7143 §12.1.3).
pub const ALGORITHM_MD5: u32 = 5;
/// Length of an MD5 CHAP response.
pub const MD5_LEN: usize = 16;
/// Longest challenge accepted (RFC 7143 §12.1.3: at most 1024 bytes).
pub const MAX_CHALLENGE: usize = 1024;
/// Shortest challenge accepted from a peer: a tiny challenge makes responses replayable.
pub const MIN_CHALLENGE: usize = 16;
/// Length of the challenges portshift sends.
pub const CHALLENGE_LEN: usize = 32;
/// Shortest secret accepted (RFC 7143 §12.1.3 asks for secrets of at least 96 bits).
pub const MIN_SECRET: usize = 12;
/// Longest secret accepted.
pub const MAX_SECRET: usize = 255;
/// Longest CHAP_N accepted.
pub const MAX_NAME: usize = 255;

/// What is wrong with a CHAP value, credentials or exchange.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChapError {
    /// A binary value that is neither `0x` hex nor `0b` base64 (RFC 7143 §6.1).
    #[error("{0}: not a 0x (hex) or 0b (base64) binary value")]
    Encoding(&'static str),
    /// A binary value longer than allowed.
    #[error("{what} longer than {max} bytes")]
    TooLong { what: &'static str, max: usize },
    /// A binary value shorter than allowed.
    #[error("{what} shorter than {min} bytes")]
    TooShort { what: &'static str, min: usize },
    /// A CHAP_I that is not a number in 0..=255.
    #[error("CHAP_I is not a number from 0 to 255")]
    Identifier,
    /// No acceptable algorithm in CHAP_A.
    #[error("no supported CHAP_A algorithm offered (only 5, MD5)")]
    Algorithm,
    /// Credentials that break the rules (name, secret length).
    #[error("bad CHAP credentials: {0}")]
    Credentials(&'static str),
    /// The same secret for both directions (reflection, RFC 7143 §12.1.3).
    #[error(
        "the mutual CHAP secret is the same as the initiator's secret (refused: a reflection attack would pass)"
    )]
    SameSecret,
    /// The peer sent back the challenge we sent it.
    #[error("the peer reflected our own CHAP challenge")]
    Reflected,
    /// A key missing or out of sequence.
    #[error("CHAP exchange: {0}")]
    Sequence(&'static str),
    /// The peer's name is not the expected one.
    #[error("CHAP_N is not the expected name")]
    Name,
    /// The peer's response does not match.
    #[error("CHAP_R does not match")]
    Response,
}

/// Decodes a binary value (RFC 7143 §6.1): `0x`/`0X` hex (an odd digit count has an implied
/// leading zero) or `0b`/`0B` base64, at most `max` bytes. The length is checked before
/// decoding.
pub fn decode_binary(value: &str, what: &'static str, max: usize) -> Result<Vec<u8>, ChapError> {
    let (prefix, body) = value.split_at_checked(2).ok_or(ChapError::Encoding(what))?;
    match prefix {
        "0x" | "0X" => {
            if body.is_empty() {
                return Err(ChapError::Encoding(what));
            }
            if body.len().div_ceil(2) > max {
                return Err(ChapError::TooLong { what, max });
            }
            let digits = body.as_bytes();
            let mut out = Vec::with_capacity(digits.len().div_ceil(2));
            let (first, rest) = digits.split_at(digits.len() % 2);
            if let [d] = first {
                out.push(hex_digit(*d).ok_or(ChapError::Encoding(what))?);
            }
            for pair in rest.chunks_exact(2) {
                let hi = hex_digit(pair[0]).ok_or(ChapError::Encoding(what))?;
                let lo = hex_digit(pair[1]).ok_or(ChapError::Encoding(what))?;
                out.push(hi << 4 | lo);
            }
            Ok(out)
        }
        "0b" | "0B" => {
            if body.is_empty() {
                return Err(ChapError::Encoding(what));
            }
            if body.len() / 4 * 3 > max + 2 {
                return Err(ChapError::TooLong { what, max });
            }
            let out = base64::engine::general_purpose::STANDARD
                .decode(body)
                .map_err(|_| ChapError::Encoding(what))?;
            if out.len() > max {
                return Err(ChapError::TooLong { what, max });
            }
            Ok(out)
        }
        _ => Err(ChapError::Encoding(what)),
    }
}

fn hex_digit(d: u8) -> Option<u8> {
    (d as char).to_digit(16).map(|v| v as u8)
}

/// `0x` followed by lowercase hex: the form portshift sends (libiscsi reads only this one).
pub fn encode_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(2 + bytes.len() * 2);
    s.push_str("0x");
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// A CHAP_I value: a decimal, hex or base64 number 0..=255 (§6.1 numerical value).
pub fn parse_identifier(value: &str) -> Result<u8, ChapError> {
    if value.starts_with("0x") || value.starts_with("0X") {
        let bytes = decode_binary(value, "CHAP_I", 8).map_err(|_| ChapError::Identifier)?;
        let leading = bytes.len().saturating_sub(1);
        if bytes[..leading].iter().any(|b| *b != 0) {
            return Err(ChapError::Identifier);
        }
        return bytes.last().copied().ok_or(ChapError::Identifier);
    }
    if value.is_empty() || value.len() > 3 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ChapError::Identifier);
    }
    value.parse::<u8>().map_err(|_| ChapError::Identifier)
}

/// A peer's CHAP_C: [`MIN_CHALLENGE`]..=[`MAX_CHALLENGE`] bytes.
fn decode_challenge(value: &str) -> Result<Vec<u8>, ChapError> {
    let ch = decode_binary(value, "CHAP_C", MAX_CHALLENGE)?;
    if ch.len() < MIN_CHALLENGE {
        return Err(ChapError::TooShort {
            what: "CHAP_C",
            min: MIN_CHALLENGE,
        });
    }
    Ok(ch)
}

/// True when a CHAP_A list (comma-separated numbers) offers MD5.
pub fn offers_md5(list: &str) -> bool {
    list.split(',')
        .any(|a| a.trim().parse::<u32>() == Ok(ALGORITHM_MD5))
}

/// The MD5 CHAP response of RFC 1994 §4.1: MD5(identifier || secret || challenge).
pub fn response(identifier: u8, secret: &[u8], challenge: &[u8]) -> [u8; MD5_LEN] {
    let mut h = Md5::new();
    h.update([identifier]);
    h.update(secret);
    h.update(challenge);
    h.finalize().into()
}

/// Compares without an early exit on the first differing byte.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Credentials {
    /// `USER:SECRET` (the secret may contain ':').
    pub fn parse(s: &str) -> Result<Credentials, ChapError> {
        let (user, secret) = s
            .split_once(':')
            .ok_or(ChapError::Credentials("expected USER:SECRET"))?;
        let c = Credentials {
            user: user.to_string(),
            secret: secret.to_string(),
        };
        c.validate()?;
        Ok(c)
    }

    /// A name of 1..=[`MAX_NAME`] bytes without NUL and a secret of
    /// [`MIN_SECRET`]..=[`MAX_SECRET`] bytes without NUL (a text value cannot carry it).
    pub fn validate(&self) -> Result<(), ChapError> {
        if self.user.is_empty() || self.user.len() > MAX_NAME || self.user.contains('\0') {
            return Err(ChapError::Credentials("the name must have 1 to 255 bytes"));
        }
        if self.secret.len() < MIN_SECRET {
            return Err(ChapError::Credentials(
                "the secret must have at least 12 bytes",
            ));
        }
        if self.secret.len() > MAX_SECRET || self.secret.contains('\0') {
            return Err(ChapError::Credentials(
                "the secret must have at most 255 bytes",
            ));
        }
        Ok(())
    }
}

/// Checks one direction's credentials and, if given, the other direction's: both valid, and
/// not the same secret (a peer could otherwise reflect our challenge to learn the answer).
pub fn validate_pair(chap: &Credentials, mutual: Option<&Credentials>) -> Result<(), ChapError> {
    chap.validate()?;
    if let Some(m) = mutual {
        m.validate()?;
        if same(m.secret.as_bytes(), chap.secret.as_bytes()) {
            return Err(ChapError::SameSecret);
        }
    }
    Ok(())
}

/// A challenge drawn by the caller: CHAP_I and CHAP_C.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub identifier: u8,
    pub challenge: Vec<u8>,
}

impl Challenge {
    /// From [`CHALLENGE_LEN`] + 1 random bytes (the first is CHAP_I).
    pub fn from_random(random: &[u8; CHALLENGE_LEN + 1]) -> Challenge {
        Challenge {
            identifier: random[0],
            challenge: random[1..].to_vec(),
        }
    }
}

/// The target's side of a CHAP exchange (RFC 7143 §12.1.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetAuth {
    /// The credentials the initiator must prove (CHAP_N and secret).
    pub chap: Credentials,
    /// The credentials the target answers a mutual challenge with, if it may.
    pub mutual: Option<Credentials>,
    /// The challenge the target sends.
    pub challenge: Challenge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AState {
    AwaitAuthMethod,
    AwaitAlgorithm,
    AwaitResponse,
    Done,
}

/// Target side: picks CHAP, sends the challenge, verifies CHAP_N/CHAP_R and answers a
/// mutual challenge.
#[derive(Debug, Clone)]
pub struct Authenticator {
    auth: TargetAuth,
    state: AState,
}

/// Keys to answer with.
pub type Answer = Vec<(&'static str, String)>;

impl Authenticator {
    pub fn new(auth: TargetAuth) -> Self {
        Authenticator {
            auth,
            state: AState::AwaitAuthMethod,
        }
    }

    /// True once the initiator has proved its identity (and any mutual answer was given).
    pub fn is_done(&self) -> bool {
        self.state == AState::Done
    }

    /// The initiator's AuthMethod list: CHAP must be among it.
    pub fn on_auth_method(&mut self, list: &str) -> Result<String, ChapError> {
        if self.state != AState::AwaitAuthMethod {
            return Err(ChapError::Sequence("AuthMethod offered twice"));
        }
        if !list.split(',').any(|m| m == "CHAP") {
            return Err(ChapError::Sequence("the initiator does not offer CHAP"));
        }
        self.state = AState::AwaitAlgorithm;
        Ok("CHAP".into())
    }

    /// The initiator's CHAP_A list: answered with CHAP_A=5, CHAP_I and CHAP_C.
    pub fn on_algorithm(&mut self, list: &str) -> Result<Answer, ChapError> {
        if self.state != AState::AwaitAlgorithm {
            return Err(ChapError::Sequence("CHAP_A out of sequence"));
        }
        if !offers_md5(list) {
            return Err(ChapError::Algorithm);
        }
        self.state = AState::AwaitResponse;
        let c = &self.auth.challenge;
        Ok(vec![
            ("CHAP_A", ALGORITHM_MD5.to_string()),
            ("CHAP_I", c.identifier.to_string()),
            ("CHAP_C", encode_hex(&c.challenge)),
        ])
    }

    /// The initiator's CHAP_N and CHAP_R, and its CHAP_I and CHAP_C when it wants the target
    /// to authenticate too: verified, then the mutual answer (CHAP_N, CHAP_R) if asked.
    pub fn on_response(
        &mut self,
        name: Option<&str>,
        resp: Option<&str>,
        mutual_id: Option<&str>,
        mutual_challenge: Option<&str>,
    ) -> Result<Answer, ChapError> {
        if self.state != AState::AwaitResponse {
            return Err(ChapError::Sequence("CHAP_N/CHAP_R out of sequence"));
        }
        let (Some(name), Some(resp)) = (name, resp) else {
            return Err(ChapError::Sequence("CHAP_N and CHAP_R expected"));
        };
        let got = decode_binary(resp, "CHAP_R", MAX_CHALLENGE)?;
        let c = &self.auth.challenge;
        let want = response(c.identifier, self.auth.chap.secret.as_bytes(), &c.challenge);
        // Both are checked, so a wrong name and a wrong secret take the same path.
        let name_ok = same(name.as_bytes(), self.auth.chap.user.as_bytes());
        if !same(&got, &want) {
            return Err(ChapError::Response);
        }
        if !name_ok {
            return Err(ChapError::Name);
        }
        let answer = match (mutual_id, mutual_challenge) {
            (None, None) => Vec::new(),
            (Some(id), Some(ch)) => {
                let Some(m) = &self.auth.mutual else {
                    return Err(ChapError::Sequence(
                        "the initiator asks for mutual CHAP, which is not configured",
                    ));
                };
                let id = parse_identifier(id)?;
                let ch = decode_challenge(ch)?;
                if same(&ch, &c.challenge) {
                    return Err(ChapError::Reflected);
                }
                vec![
                    ("CHAP_N", m.user.clone()),
                    (
                        "CHAP_R",
                        encode_hex(&response(id, m.secret.as_bytes(), &ch)),
                    ),
                ]
            }
            _ => return Err(ChapError::Sequence("CHAP_I and CHAP_C go together")),
        };
        self.state = AState::Done;
        Ok(answer)
    }
}

/// The initiator's side of a CHAP exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitiatorAuth {
    /// The credentials the initiator proves.
    pub chap: Credentials,
    /// Mutual CHAP: the credentials the target must prove, and the challenge to send it.
    pub mutual: Option<(Credentials, Challenge)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RState {
    Offered,
    AlgorithmSent,
    ResponseSent,
    Done,
}

/// Initiator side: offers CHAP, answers the target's challenge, challenges it back (mutual)
/// and verifies its answer.
#[derive(Debug, Clone)]
pub struct Responder {
    auth: InitiatorAuth,
    state: RState,
    /// Keys for the next request.
    pending: Answer,
}

impl Responder {
    pub fn new(auth: InitiatorAuth) -> Self {
        Responder {
            auth,
            state: RState::Offered,
            pending: Vec::new(),
        }
    }

    /// The AuthMethod list to offer: CHAP only when the target must authenticate too (no
    /// downgrade to None), else CHAP before None.
    pub fn offer(&self) -> &'static str {
        if self.auth.mutual.is_some() {
            "CHAP"
        } else {
            "CHAP,None"
        }
    }

    /// True when the exchange is over (or was declined with AuthMethod=None).
    pub fn is_done(&self) -> bool {
        self.state == RState::Done
    }

    /// True while the initiator still has CHAP keys to send or answers to wait for: it must
    /// not ask to leave the security stage.
    pub fn in_progress(&self) -> bool {
        matches!(self.state, RState::AlgorithmSent) || !self.pending.is_empty()
    }

    /// Keys to put in the next request.
    pub fn take_pending(&mut self) -> Answer {
        std::mem::take(&mut self.pending)
    }

    /// The target's AuthMethod answer.
    pub fn on_auth_method(&mut self, v: &str) -> Result<(), ChapError> {
        match (self.state, v) {
            (RState::Offered, "CHAP") => {
                self.state = RState::AlgorithmSent;
                self.pending = vec![("CHAP_A", ALGORITHM_MD5.to_string())];
                Ok(())
            }
            (RState::Offered, "None") if self.auth.mutual.is_none() => {
                self.state = RState::Done;
                Ok(())
            }
            (RState::Offered, "None") => Err(ChapError::Sequence(
                "the target declined CHAP but mutual CHAP is required",
            )),
            _ => Err(ChapError::Sequence("unexpected AuthMethod answer")),
        }
    }

    /// The target's CHAP_A, CHAP_I and CHAP_C: the next request carries CHAP_N and CHAP_R
    /// (and CHAP_I, CHAP_C for mutual CHAP).
    pub fn on_challenge(&mut self, algorithm: &str, id: &str, ch: &str) -> Result<(), ChapError> {
        if self.state != RState::AlgorithmSent {
            return Err(ChapError::Sequence("challenge out of sequence"));
        }
        if algorithm.trim().parse::<u32>() != Ok(ALGORITHM_MD5) {
            return Err(ChapError::Algorithm);
        }
        let id = parse_identifier(id)?;
        let ch = decode_challenge(ch)?;
        let mut keys = vec![
            ("CHAP_N", self.auth.chap.user.clone()),
            (
                "CHAP_R",
                encode_hex(&response(id, self.auth.chap.secret.as_bytes(), &ch)),
            ),
        ];
        if let Some((_, ours)) = &self.auth.mutual {
            if same(&ours.challenge, &ch) {
                return Err(ChapError::Reflected);
            }
            keys.push(("CHAP_I", ours.identifier.to_string()));
            keys.push(("CHAP_C", encode_hex(&ours.challenge)));
        }
        self.pending = keys;
        self.state = RState::ResponseSent;
        if self.auth.mutual.is_none() {
            self.state = RState::Done;
        }
        Ok(())
    }

    /// The target's CHAP_N and CHAP_R (mutual CHAP).
    pub fn on_target_response(&mut self, name: &str, resp: &str) -> Result<(), ChapError> {
        let Some((target, ours)) = &self.auth.mutual else {
            return Err(ChapError::Sequence("CHAP_R from a target not challenged"));
        };
        if self.state != RState::ResponseSent {
            return Err(ChapError::Sequence("CHAP_R out of sequence"));
        }
        let got = decode_binary(resp, "CHAP_R", MAX_CHALLENGE)?;
        let want = response(ours.identifier, target.secret.as_bytes(), &ours.challenge);
        if !same(&got, &want) {
            return Err(ChapError::Response);
        }
        if !same(name.as_bytes(), target.user.as_bytes()) {
            return Err(ChapError::Name);
        }
        self.state = RState::Done;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(user: &str, secret: &str) -> Credentials {
        Credentials {
            user: user.into(),
            secret: secret.into(),
        }
    }

    #[test]
    fn rfc1994_md5_response() {
        // MD5(0x01 || "secret-secret" || 16 x 0xaa), computed independently with Python's
        // hashlib: hashlib.md5(b"\x01" + b"secret-secret" + b"\xaa" * 16).hexdigest().
        let r = response(1, b"secret-secret", &[0xaa; 16]);
        assert_eq!(encode_hex(&r), "0xcb0cd93c6da81233005a41ff31de3ba2");
        // Known answer from RFC 1321's test suite: MD5("abc").
        let abc = response(b'a', b"b", b"c");
        assert_eq!(encode_hex(&abc), "0x900150983cd24fb0d6963f7d28e17f72");
    }

    #[test]
    fn binary_encodings() {
        assert_eq!(decode_binary("0x0aFF", "v", 8).unwrap(), [0x0a, 0xff]);
        assert_eq!(decode_binary("0Xabc", "v", 8).unwrap(), [0x0a, 0xbc]);
        assert_eq!(decode_binary("0bAQID", "v", 8).unwrap(), [1, 2, 3]);
        assert_eq!(decode_binary("0BAQI=", "v", 8).unwrap(), [1, 2]);
        for bad in ["", "0", "0x", "0b", "12", "0xg0", "0b!!!!", "0x 1", "abc"] {
            assert!(decode_binary(bad, "v", 8).is_err(), "{bad:?}");
        }
        assert_eq!(
            decode_binary(&format!("0x{}", "00".repeat(9)), "v", 8),
            Err(ChapError::TooLong { what: "v", max: 8 })
        );
        assert!(decode_binary("0bAAAAAAAAAAAA", "v", 8).is_err());
        assert_eq!(encode_hex(&[0, 0xab]), "0x00ab");
    }

    #[test]
    fn identifiers() {
        assert_eq!(parse_identifier("0"), Ok(0));
        assert_eq!(parse_identifier("255"), Ok(255));
        assert_eq!(parse_identifier("0x7f"), Ok(127));
        for bad in ["256", "-1", "", "1a", "0x100", "0001"] {
            assert!(parse_identifier(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn credential_rules() {
        assert!(creds("u", "twelve-bytes").validate().is_ok());
        assert!(creds("u", "eleven-byte").validate().is_err());
        assert!(creds("", "twelve-bytes").validate().is_err());
        assert!(creds("u", &"x".repeat(256)).validate().is_err());
        let c = Credentials::parse("alice:pass:word:1234").unwrap();
        assert_eq!(
            (c.user.as_str(), c.secret.as_str()),
            ("alice", "pass:word:1234")
        );
        assert!(Credentials::parse("alice").is_err());
        let a = creds("a", "secret-one-12");
        assert_eq!(
            validate_pair(&a, Some(&creds("t", "secret-one-12"))),
            Err(ChapError::SameSecret)
        );
        assert!(validate_pair(&a, Some(&creds("t", "secret-two-12"))).is_ok());
        assert!(!format!("{a:?}").contains("secret-one"));
    }

    fn target(mutual: bool) -> Authenticator {
        Authenticator::new(TargetAuth {
            chap: creds("alice", "alice-secret-1"),
            mutual: mutual.then(|| creds("target", "target-secret-1")),
            challenge: Challenge {
                identifier: 7,
                challenge: vec![0x11; CHALLENGE_LEN],
            },
        })
    }

    fn initiator(user: &str, secret: &str, mutual: Option<(&str, &str)>) -> Responder {
        Responder::new(InitiatorAuth {
            chap: creds(user, secret),
            mutual: mutual.map(|(u, s)| {
                (
                    creds(u, s),
                    Challenge {
                        identifier: 9,
                        challenge: vec![0x22; CHALLENGE_LEN],
                    },
                )
            }),
        })
    }

    /// Runs the exchange between the two sides; the target's error if it refuses.
    fn run(t: &mut Authenticator, i: &mut Responder) -> Result<Answer, ChapError> {
        let m = t.on_auth_method(i.offer())?;
        i.on_auth_method(&m)?;
        let a = i.take_pending();
        let ch = t.on_algorithm(&a[0].1)?;
        i.on_challenge(&ch[0].1, &ch[1].1, &ch[2].1)?;
        let keys = i.take_pending();
        let get = |k: &str| keys.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        t.on_response(get("CHAP_N"), get("CHAP_R"), get("CHAP_I"), get("CHAP_C"))
    }

    #[test]
    fn one_way_and_mutual_exchanges() {
        let (mut t, mut i) = (target(false), initiator("alice", "alice-secret-1", None));
        assert_eq!(run(&mut t, &mut i), Ok(vec![]));
        assert!(t.is_done() && i.is_done());

        let (mut t, mut i) = (
            target(true),
            initiator(
                "alice",
                "alice-secret-1",
                Some(("target", "target-secret-1")),
            ),
        );
        let back = run(&mut t, &mut i).unwrap();
        assert!(t.is_done() && !i.is_done());
        i.on_target_response(&back[0].1, &back[1].1).unwrap();
        assert!(i.is_done());

        // The initiator rejects a target that knows the wrong secret.
        let (mut t, mut i) = (
            target(true),
            initiator(
                "alice",
                "alice-secret-1",
                Some(("target", "other-secret-1")),
            ),
        );
        let back = run(&mut t, &mut i).unwrap();
        assert_eq!(
            i.on_target_response(&back[0].1, &back[1].1),
            Err(ChapError::Response)
        );
    }

    #[test]
    fn wrong_secret_wrong_name_and_unconfigured_mutual_are_refused() {
        let (mut t, mut i) = (target(false), initiator("alice", "wrong-secret-1", None));
        assert_eq!(run(&mut t, &mut i), Err(ChapError::Response));
        let (mut t, mut i) = (target(false), initiator("mallory", "alice-secret-1", None));
        assert_eq!(run(&mut t, &mut i), Err(ChapError::Name));
        let (mut t, mut i) = (
            target(false),
            initiator(
                "alice",
                "alice-secret-1",
                Some(("target", "target-secret-1")),
            ),
        );
        assert!(matches!(run(&mut t, &mut i), Err(ChapError::Sequence(_))));
    }

    #[test]
    fn reflection_and_tiny_challenges_are_refused() {
        // An initiator that sends the target's own challenge back.
        let mut t = target(true);
        t.on_auth_method("CHAP").unwrap();
        let ch = t.on_algorithm("5").unwrap();
        let r = encode_hex(&response(7, b"alice-secret-1", &[0x11; CHALLENGE_LEN]));
        assert_eq!(
            t.on_response(Some("alice"), Some(&r), Some("7"), Some(&ch[2].1)),
            Err(ChapError::Reflected)
        );
        // A target that sends the initiator's own challenge.
        let mut i = initiator(
            "alice",
            "alice-secret-1",
            Some(("target", "target-secret-1")),
        );
        i.on_auth_method("CHAP").unwrap();
        let ours = encode_hex(&[0x22; CHALLENGE_LEN]);
        assert_eq!(i.on_challenge("5", "1", &ours), Err(ChapError::Reflected));
        // A challenge too short to be safe.
        let mut i = initiator("alice", "alice-secret-1", None);
        i.on_auth_method("CHAP").unwrap();
        assert!(matches!(
            i.on_challenge("5", "1", "0x0102"),
            Err(ChapError::TooShort { .. })
        ));
        // Only MD5.
        let mut t = target(false);
        t.on_auth_method("CHAP,None").unwrap();
        assert_eq!(t.on_algorithm("7,6"), Err(ChapError::Algorithm));
        // No CHAP offered at all; None refused by a mutual initiator.
        assert!(target(false).on_auth_method("None").is_err());
        let mut i = initiator(
            "alice",
            "alice-secret-1",
            Some(("target", "target-secret-1")),
        );
        assert!(i.on_auth_method("None").is_err());
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic_and_respect_the_limit(v in ".{0,80}", max in 0usize..40) {
            if let Ok(b) = decode_binary(&v, "v", max) {
                proptest::prop_assert!(b.len() <= max);
            }
            let _ = parse_identifier(&v);
            let _ = offers_md5(&v);
            let _ = Credentials::parse(&v);
        }

        #[test]
        fn hex_and_base64_round_trip(bytes in proptest::collection::vec(proptest::num::u8::ANY, 1..64)) {
            proptest::prop_assert_eq!(decode_binary(&encode_hex(&bytes), "v", 64).unwrap(), bytes.clone());
            let b64 = format!("0b{}", base64::engine::general_purpose::STANDARD.encode(&bytes));
            proptest::prop_assert_eq!(decode_binary(&b64, "v", 64).unwrap(), bytes.clone());
            proptest::prop_assert!(decode_binary(&encode_hex(&bytes), "v", bytes.len() - 1).is_err());
            proptest::prop_assert!(decode_binary(&b64, "v", bytes.len() - 1).is_err());
        }

        #[test]
        fn the_target_accepts_exactly_the_right_response(id: u8, secret in "[ -~]{12,40}", challenge in proptest::collection::vec(proptest::num::u8::ANY, 16..64), flip in 0usize..16) {
            let mut t = Authenticator::new(TargetAuth {
                chap: creds("u", &secret),
                mutual: None,
                challenge: Challenge { identifier: id, challenge: challenge.clone() },
            });
            t.on_auth_method("CHAP").unwrap();
            t.on_algorithm("5").unwrap();
            let mut r = response(id, secret.as_bytes(), &challenge);
            let good = encode_hex(&r);
            r[flip] ^= 1;
            let mut bad_t = t.clone();
            proptest::prop_assert_eq!(bad_t.on_response(Some("u"), Some(&encode_hex(&r)), None, None), Err(ChapError::Response));
            proptest::prop_assert_eq!(t.on_response(Some("u"), Some(&good), None, None), Ok(vec![]));
        }
    }
}
