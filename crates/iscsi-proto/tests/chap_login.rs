//! CHAP in the login state machines (RFC 7143 §12.1.3), without sockets: `InitiatorLogin`
//! against `TargetLogin`, one-way and mutual, and the ways a login is refused.

use iscsi_proto::chap::{CHALLENGE_LEN, Challenge, Credentials, InitiatorAuth, TargetAuth};
use iscsi_proto::login::*;
use iscsi_proto::params::SessionType;
use iscsi_proto::text::TextPairs;
use iscsi_proto::{LoginError, LoginRequest, LoginResponse, Stage};

const INAME: &str = "iqn.2024-01.test:host1";
const TNAME: &str = "iqn.2024-01.test:disk0";

fn creds(user: &str, secret: &str) -> Credentials {
    Credentials {
        user: user.into(),
        secret: secret.into(),
    }
}

fn challenge(byte: u8) -> Challenge {
    Challenge {
        identifier: byte,
        challenge: vec![byte; CHALLENGE_LEN],
    }
}

fn target_auth(mutual: bool) -> TargetAuth {
    TargetAuth {
        chap: creds("alice", "alice-secret-12"),
        mutual: mutual.then(|| creds("array", "array-secret-12")),
        challenge: challenge(0x5a),
    }
}

fn initiator(chap: Option<(&str, &str)>, mutual: Option<(&str, &str)>) -> InitiatorLoginConfig {
    InitiatorLoginConfig {
        auth: chap.map(|(u, s)| InitiatorAuth {
            chap: creds(u, s),
            mutual: mutual.map(|(u, s)| (creds(u, s), challenge(0x33))),
        }),
        ..InitiatorLoginConfig::normal(INAME, TNAME)
    }
}

struct Run {
    /// The initiator's verdict (an error when it refused the target).
    outcome: Result<LoginOutcome, LoginError>,
    reqs: Vec<LoginRequest>,
    resps: Vec<LoginResponse>,
    /// Why the target refused, if it did.
    target_failure: Option<String>,
}

fn run(cfg: InitiatorLoginConfig, auth: Option<TargetAuth>) -> Run {
    let mut ini = InitiatorLogin::new(cfg);
    let mut tgt = TargetLogin::new(TargetLoginConfig::default());
    let mut req = ini.start();
    let (mut reqs, mut resps) = (Vec::new(), Vec::new());
    let mut auth = Some(auth);
    for _ in 0..16 {
        reqs.push(req.clone());
        let mut step = tgt.on_request(req.clone());
        if let LoginStep::NeedTargetDecision { .. } = &step {
            step = tgt.decide(TargetDecision::Accept {
                portal_group_tag: 1,
                target_alias: None,
                tsih: 9,
                auth: auth.take().expect("decided once"),
            });
        }
        let resp = match &step {
            LoginStep::Send(r) => r.clone(),
            LoginStep::Complete { response, .. } | LoginStep::Close { response, .. } => {
                response.clone()
            }
            LoginStep::NeedTargetDecision { .. } => panic!("decision asked twice"),
        };
        resps.push(resp.clone());
        let target_failure = tgt.failure_reason().map(str::to_owned);
        match ini.on_response(&resp) {
            Ok(InitiatorStep::Send(r)) => req = r,
            Ok(InitiatorStep::Done(o)) => {
                return Run {
                    outcome: Ok(o),
                    reqs,
                    resps,
                    target_failure,
                };
            }
            Err(e) => {
                return Run {
                    outcome: Err(e),
                    reqs,
                    resps,
                    target_failure,
                };
            }
        }
    }
    panic!("login did not finish");
}

fn keys(data: &[u8]) -> TextPairs {
    TextPairs::parse(data).unwrap()
}

fn refused_with_0201(r: &Run) -> String {
    assert_eq!(
        r.outcome,
        Ok(LoginOutcome::Failed {
            status: LoginStatus::AUTHENTICATION_FAILURE
        })
    );
    assert_eq!(LoginStatus::AUTHENTICATION_FAILURE.code(), 0x0201);
    r.target_failure.clone().expect("the target says why")
}

#[test]
fn one_way_chap_takes_three_security_exchanges_then_operational() {
    let r = run(
        initiator(Some(("alice", "alice-secret-12")), None),
        Some(target_auth(false)),
    );
    assert!(
        matches!(r.outcome, Ok(LoginOutcome::Success(_))),
        "{:?}",
        r.outcome
    );
    // AuthMethod offer (no transit), CHAP_A, CHAP_N/CHAP_R (transit), operational.
    assert_eq!(r.reqs.len(), 4);
    let k0 = keys(&r.reqs[0].data);
    assert_eq!(k0.get("AuthMethod"), Some("CHAP,None"));
    assert!(!r.reqs[0].transit);
    assert_eq!(keys(&r.resps[0].data).get("AuthMethod"), Some("CHAP"));
    assert!(!r.resps[0].transit);
    assert_eq!(keys(&r.reqs[1].data).get("CHAP_A"), Some("5"));
    assert!(!r.reqs[1].transit);
    let k1 = keys(&r.resps[1].data);
    assert_eq!(k1.get("CHAP_A"), Some("5"));
    assert_eq!(k1.get("CHAP_I"), Some("90"));
    assert_eq!(
        k1.get("CHAP_C"),
        Some(format!("0x{}", "5a".repeat(32)).as_str())
    );
    let k2 = keys(&r.reqs[2].data);
    assert_eq!(k2.get("CHAP_N"), Some("alice"));
    let want = iscsi_proto::chap::response(0x5a, b"alice-secret-12", &[0x5a; CHALLENGE_LEN]);
    assert_eq!(
        k2.get("CHAP_R"),
        Some(iscsi_proto::chap::encode_hex(&want).as_str())
    );
    assert!(k2.get("CHAP_I").is_none(), "one-way: no challenge back");
    assert!(r.reqs[2].transit && r.resps[2].transit);
    assert_eq!(r.resps[2].nsg, Stage::LoginOperationalNegotiation);
    assert_eq!(r.reqs[3].csg, Stage::LoginOperationalNegotiation);
}

#[test]
fn mutual_chap_authenticates_the_target_too() {
    let r = run(
        initiator(
            Some(("alice", "alice-secret-12")),
            Some(("array", "array-secret-12")),
        ),
        Some(target_auth(true)),
    );
    assert!(
        matches!(r.outcome, Ok(LoginOutcome::Success(_))),
        "{:?}",
        r.outcome
    );
    assert_eq!(keys(&r.reqs[0].data).get("AuthMethod"), Some("CHAP"));
    let k2 = keys(&r.reqs[2].data);
    assert_eq!(k2.get("CHAP_I"), Some("51"));
    let back = keys(&r.resps[2].data);
    assert_eq!(back.get("CHAP_N"), Some("array"));
    let want = iscsi_proto::chap::response(0x33, b"array-secret-12", &[0x33; CHALLENGE_LEN]);
    assert_eq!(
        back.get("CHAP_R"),
        Some(iscsi_proto::chap::encode_hex(&want).as_str())
    );
}

#[test]
fn a_target_with_the_wrong_mutual_secret_is_refused_by_the_initiator() {
    let r = run(
        initiator(
            Some(("alice", "alice-secret-12")),
            Some(("array", "other-secret-12")),
        ),
        Some(target_auth(true)),
    );
    assert!(
        matches!(&r.outcome, Err(LoginError::Authentication(m)) if m.contains("CHAP_R")),
        "{:?}",
        r.outcome
    );
}

#[test]
fn wrong_secret_wrong_name_and_no_credentials_get_0201() {
    let why = refused_with_0201(&run(
        initiator(Some(("alice", "wrong-secret-12")), None),
        Some(target_auth(false)),
    ));
    assert!(why.contains("CHAP_R does not match"), "{why}");
    let why = refused_with_0201(&run(
        initiator(Some(("mallory", "alice-secret-12")), None),
        Some(target_auth(false)),
    ));
    assert!(why.contains("CHAP_N"), "{why}");
    // AuthMethod=None to a target that requires CHAP.
    let why = refused_with_0201(&run(initiator(None, None), Some(target_auth(false))));
    assert!(why.contains("CHAP"), "{why}");
    // Skipping the security stage (libiscsi without credentials starts operational).
    let skip = InitiatorLoginConfig {
        skip_security: true,
        ..initiator(None, None)
    };
    let r = run(skip, Some(target_auth(false)));
    assert_eq!(r.reqs[0].csg, Stage::LoginOperationalNegotiation);
    let why = refused_with_0201(&r);
    assert!(why.contains("skipped the security stage"), "{why}");
}

#[test]
fn mutual_chap_the_target_cannot_answer_gets_0201() {
    let why = refused_with_0201(&run(
        initiator(
            Some(("alice", "alice-secret-12")),
            Some(("array", "array-secret-12")),
        ),
        Some(target_auth(false)),
    ));
    assert!(why.contains("mutual"), "{why}");
}

#[test]
fn an_initiator_reflecting_the_targets_challenge_gets_0201() {
    let mut cfg = initiator(
        Some(("alice", "alice-secret-12")),
        Some(("array", "array-secret-12")),
    );
    // The initiator "challenges" the target with the target's own challenge.
    cfg.auth.as_mut().unwrap().mutual.as_mut().unwrap().1 = challenge(0x5a);
    let r = run(cfg, Some(target_auth(true)));
    // The initiator itself notices first: its challenge equals the one it received.
    assert!(
        matches!(&r.outcome, Err(LoginError::Authentication(m)) if m.contains("reflected")),
        "{:?}",
        r.outcome
    );
    // A raw initiator that does send it is refused by the target.
    let mut tgt = TargetLogin::new(TargetLoginConfig::default());
    let req = |data: &[(&str, &str)], transit: bool| {
        let mut t = TextPairs::new();
        for (k, v) in data {
            t.push(k, *v).unwrap();
        }
        LoginRequest {
            transit,
            csg: Stage::SecurityNegotiation,
            nsg: if transit {
                Stage::LoginOperationalNegotiation
            } else {
                Stage::SecurityNegotiation
            },
            isid: [0x80, 0, 0, 0, 0, 1],
            cmd_sn: 1,
            data: t.to_bytes(),
            ..Default::default()
        }
    };
    let step = tgt.on_request(req(
        &[
            ("InitiatorName", INAME),
            ("TargetName", TNAME),
            ("AuthMethod", "CHAP"),
        ],
        false,
    ));
    assert!(matches!(step, LoginStep::NeedTargetDecision { .. }));
    tgt.decide(TargetDecision::Accept {
        portal_group_tag: 1,
        target_alias: None,
        tsih: 9,
        auth: Some(target_auth(true)),
    });
    let LoginStep::Send(r) = tgt.on_request(req(&[("CHAP_A", "5")], false)) else {
        panic!()
    };
    let k = keys(&r.data);
    let (i, c) = (k.get("CHAP_I").unwrap(), k.get("CHAP_C").unwrap());
    let resp = iscsi_proto::chap::response(0x5a, b"alice-secret-12", &[0x5a; CHALLENGE_LEN]);
    let resp = iscsi_proto::chap::encode_hex(&resp);
    let step = tgt.on_request(req(
        &[
            ("CHAP_N", "alice"),
            ("CHAP_R", &resp),
            ("CHAP_I", i),
            ("CHAP_C", c),
        ],
        true,
    ));
    let LoginStep::Close { status, .. } = step else {
        panic!("{step:?}")
    };
    assert_eq!(status, LoginStatus::AUTHENTICATION_FAILURE);
    assert!(tgt.failure_reason().unwrap().contains("reflected"));
}

#[test]
fn no_chap_configured_answers_none_and_a_mutual_initiator_refuses_that() {
    // One-way credentials, target without CHAP: AuthMethod=None, login succeeds.
    let r = run(initiator(Some(("alice", "alice-secret-12")), None), None);
    assert!(
        matches!(r.outcome, Ok(LoginOutcome::Success(_))),
        "{:?}",
        r.outcome
    );
    assert_eq!(keys(&r.resps[0].data).get("AuthMethod"), Some("None"));
    // An initiator that requires mutual CHAP offers only CHAP: refused, never downgraded.
    let r = run(
        initiator(
            Some(("alice", "alice-secret-12")),
            Some(("array", "array-secret-12")),
        ),
        None,
    );
    refused_with_0201(&r);
}

#[test]
fn discovery_sessions_do_chap_too() {
    let cfg = InitiatorLoginConfig {
        auth: Some(InitiatorAuth {
            chap: creds("alice", "alice-secret-12"),
            mutual: None,
        }),
        ..InitiatorLoginConfig::discovery(INAME)
    };
    let r = run(cfg.clone(), Some(target_auth(false)));
    let Ok(LoginOutcome::Success(done)) = r.outcome else {
        panic!("{:?}", r.outcome)
    };
    assert_eq!(done.params.session_type, SessionType::Discovery);
    let bad = InitiatorLoginConfig { auth: None, ..cfg };
    refused_with_0201(&run(bad, Some(target_auth(false))));
}

#[test]
fn libiscsi_chap_sequence() {
    // libiscsi 1.19: AuthMethod=CHAP,None with T=1 (NSG=1), then CHAP_A=5, then
    // CHAP_N/CHAP_R with T=1.
    let mut tgt = TargetLogin::new(TargetLoginConfig::default());
    let req = |keys: &[(&str, &str)]| {
        let mut t = TextPairs::new();
        for (k, v) in keys {
            t.push(k, *v).unwrap();
        }
        LoginRequest {
            transit: true,
            csg: Stage::SecurityNegotiation,
            nsg: Stage::LoginOperationalNegotiation,
            isid: [0x80, 0, 0, 0, 0, 1],
            cmd_sn: 1,
            data: t.to_bytes(),
            ..Default::default()
        }
    };
    let step = tgt.on_request(req(&[
        ("InitiatorName", INAME),
        ("TargetName", TNAME),
        ("SessionType", "Normal"),
        ("HeaderDigest", "None"),
        ("DataDigest", "None"),
        ("AuthMethod", "CHAP,None"),
    ]));
    assert!(matches!(step, LoginStep::NeedTargetDecision { .. }));
    let LoginStep::Send(r0) = tgt.decide(TargetDecision::Accept {
        portal_group_tag: 1,
        target_alias: None,
        tsih: 9,
        auth: Some(target_auth(false)),
    }) else {
        panic!()
    };
    assert!(!r0.transit, "the target stays in the security stage");
    assert_eq!(keys(&r0.data).get("AuthMethod"), Some("CHAP"));
    let LoginStep::Send(r1) = tgt.on_request(req(&[("CHAP_A", "5")])) else {
        panic!()
    };
    assert!(!r1.transit);
    let k = keys(&r1.data);
    let id: u8 = k.get("CHAP_I").unwrap().parse().unwrap();
    let c = iscsi_proto::chap::decode_binary(k.get("CHAP_C").unwrap(), "c", 1024).unwrap();
    let resp =
        iscsi_proto::chap::encode_hex(&iscsi_proto::chap::response(id, b"alice-secret-12", &c));
    let LoginStep::Send(r2) = tgt.on_request(req(&[("CHAP_N", "alice"), ("CHAP_R", &resp)])) else {
        panic!()
    };
    assert!(r2.transit);
    assert_eq!(r2.nsg, Stage::LoginOperationalNegotiation);
}
