//! Fuzz CHAP (RFC 7143 §12.1.3, §6.1): the binary-value parser and the CHAP exchange of the
//! login state machines, target side (an initiator's keys) and initiator side (a target's
//! keys). Nothing may panic; a decoded value never exceeds its limit and re-encodes to the
//! same bytes; a login the target completes proved the secret.
//!
//! Input: one control byte, then login texts separated by `\n` (each a NUL-separated
//! `key=value` list, as on the wire).
#![no_main]

use iscsi_proto::bytes::Bytes;
use iscsi_proto::chap::{
    self, CHALLENGE_LEN, Challenge, Credentials, InitiatorAuth, TargetAuth, decode_binary,
    encode_hex,
};
use iscsi_proto::login::{
    InitiatorLogin, InitiatorLoginConfig, InitiatorStep, LoginStep, TargetDecision, TargetLogin,
    TargetLoginConfig,
};
use iscsi_proto::{LoginRequest, LoginResponse, Stage};
use libfuzzer_sys::fuzz_target;

fn creds(user: &str, secret: &str) -> Credentials {
    Credentials {
        user: user.into(),
        secret: secret.into(),
    }
}

fn challenge(b: u8) -> Challenge {
    Challenge {
        identifier: b,
        challenge: vec![b; CHALLENGE_LEN],
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&cfg, rest)) = input.split_first() else {
        return;
    };
    // The value parsers on every text.
    for part in rest.split(|b| *b == b'\n') {
        if let Ok(s) = std::str::from_utf8(part) {
            let max = usize::from(cfg) * 4;
            if let Ok(v) = decode_binary(s, "v", max) {
                assert!(v.len() <= max);
                if !v.is_empty() {
                    assert_eq!(decode_binary(&encode_hex(&v), "v", max).unwrap(), v);
                }
            }
            let _ = chap::parse_identifier(s);
            let _ = chap::offers_md5(s);
            let _ = Credentials::parse(s);
        }
    }
    let mutual = cfg & 1 != 0;
    if cfg & 2 == 0 {
        // Target side: the texts are the initiator's requests.
        let mut t = TargetLogin::new(TargetLoginConfig::default());
        let mut first = true;
        // Whether a request carried the right CHAP_R (MD5 of the secret and our challenge).
        let mut proved = false;
        let want = chap::response(7, b"fuzz-secret-1", &[7; CHALLENGE_LEN]);
        for (i, part) in rest.split(|b| *b == b'\n').enumerate() {
            if let Ok(pairs) = iscsi_proto::text::TextPairs::parse(part)
                && let Some(r) = pairs.get("CHAP_R")
                && decode_binary(r, "r", 1024).is_ok_and(|r| r == want)
            {
                proved = true;
            }
            let mut data = part.to_vec();
            if first {
                data.splice(
                    0..0,
                    b"InitiatorName=iqn.f:i\0TargetName=iqn.f:t\0"
                        .iter()
                        .copied(),
                );
            }
            let req = LoginRequest {
                transit: i % 2 == 0,
                csg: Stage::SecurityNegotiation,
                nsg: if i % 2 == 0 {
                    Stage::LoginOperationalNegotiation
                } else {
                    Stage::SecurityNegotiation
                },
                isid: [0x80, 0, 0, 0, 0, 1],
                cmd_sn: 1,
                data: Bytes::from(data),
                ..Default::default()
            };
            let mut step = t.on_request(req);
            if first {
                first = false;
                if let LoginStep::NeedTargetDecision { .. } = step {
                    step = t.decide(TargetDecision::Accept {
                        portal_group_tag: 1,
                        target_alias: None,
                        tsih: 1,
                        auth: Some(TargetAuth {
                            chap: creds("u", "fuzz-secret-1"),
                            mutual: mutual.then(|| creds("t", "fuzz-secret-2")),
                            challenge: challenge(7),
                        }),
                    });
                }
            }
            match step {
                LoginStep::Send(r) if r.transit => {
                    // Left the security stage: only after the right CHAP_R.
                    assert!(proved, "left the security stage without the right CHAP_R");
                    return;
                }
                LoginStep::Send(_) => {}
                _ => return,
            }
        }
    } else {
        // Initiator side: the texts are the target's responses.
        let mut ini = InitiatorLogin::new(InitiatorLoginConfig {
            auth: Some(InitiatorAuth {
                chap: creds("u", "fuzz-secret-1"),
                mutual: mutual.then(|| (creds("t", "fuzz-secret-2"), challenge(9))),
            }),
            ..InitiatorLoginConfig::normal("iqn.f:i", "iqn.f:t")
        });
        let _ = ini.start();
        for (i, part) in rest.split(|b| *b == b'\n').enumerate() {
            let resp = LoginResponse {
                transit: cfg & 4 != 0 && i > 0,
                csg: Stage::SecurityNegotiation,
                nsg: Stage::LoginOperationalNegotiation,
                isid: [0x80, 0, 0, 0, 0, 1],
                stat_sn: i as u32,
                data: Bytes::copy_from_slice(part),
                ..Default::default()
            };
            match ini.on_response(&resp) {
                Ok(InitiatorStep::Send(_)) => {}
                _ => return,
            }
        }
    }
});
