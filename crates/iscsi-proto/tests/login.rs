//! Login state machine tests (RFC 7143 §6.3): target and initiator against
//! each other and against the key sequence libiscsi sends.

use bytes::Bytes;
use iscsi_proto::login::*;
use iscsi_proto::params::SessionType;
use iscsi_proto::text::TextPairs;
use iscsi_proto::{LoginRequest, LoginResponse, Stage};

const INAME: &str = "iqn.2024-01.test:host1";
const TNAME: &str = "iqn.2024-01.test:array.disk0";

fn accept() -> TargetDecision {
    TargetDecision::Accept {
        portal_group_tag: 7,
        target_alias: Some("disk0".into()),
        tsih: 0x1234,
        auth: None,
    }
}

/// Run an initiator against a target; the decision closure sees each NeedTargetDecision.
fn run(
    cfg: InitiatorLoginConfig,
    mut decide: impl FnMut(&str, Option<&str>, SessionType) -> TargetDecision,
) -> (
    LoginOutcome,
    Vec<LoginRequest>,
    Vec<LoginResponse>,
    Option<LoginStep>,
) {
    let mut ini = InitiatorLogin::new(cfg);
    let mut tgt = TargetLogin::new(TargetLoginConfig::default());
    let mut req = ini.start();
    let (mut reqs, mut resps) = (Vec::new(), Vec::new());
    let mut last;
    for _ in 0..16 {
        reqs.push(req.clone());
        let mut step = tgt.on_request(req.clone());
        if let LoginStep::NeedTargetDecision {
            initiator_name,
            target_name,
            session_type,
            ..
        } = &step
        {
            let d = decide(initiator_name, target_name.as_deref(), *session_type);
            step = tgt.decide(d);
        }
        let resp = match &step {
            LoginStep::Send(r) => r.clone(),
            LoginStep::Complete { response, .. } | LoginStep::Close { response, .. } => {
                response.clone()
            }
            LoginStep::NeedTargetDecision { .. } => panic!("decision asked twice"),
        };
        resps.push(resp.clone());
        last = Some(step);
        match ini.on_response(&resp).unwrap() {
            InitiatorStep::Send(r) => req = r,
            InitiatorStep::Done(o) => return (o, reqs, resps, last),
        }
    }
    panic!("login did not finish");
}

#[test]
fn normal_login_in_two_stages() {
    let (outcome, reqs, resps, last) =
        run(InitiatorLoginConfig::normal(INAME, TNAME), |i, t, s| {
            assert_eq!(i, INAME);
            assert_eq!(t, Some(TNAME));
            assert_eq!(s, SessionType::Normal);
            accept()
        });
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].csg, Stage::SecurityNegotiation);
    assert_eq!(reqs[0].nsg, Stage::LoginOperationalNegotiation);
    assert!(reqs[0].transit);
    assert_eq!(reqs[1].csg, Stage::LoginOperationalNegotiation);
    assert_eq!(reqs[1].nsg, Stage::FullFeaturePhase);
    let first = TextPairs::parse(&resps[0].data).unwrap();
    assert_eq!(first.get("AuthMethod"), Some("None"));
    assert_eq!(first.get("TargetPortalGroupTag"), Some("7"));
    assert_eq!(first.get("TargetAlias"), Some("disk0"));
    assert_eq!(resps[0].tsih, 0);
    assert_eq!(resps[1].tsih, 0x1234);
    // StatSN increments per response; ExpCmdSN is the login CmdSN.
    assert_eq!(resps[1].stat_sn, resps[0].stat_sn + 1);
    assert_eq!(resps[1].exp_cmd_sn, 1);
    let LoginOutcome::Success(LoggedIn {
        params,
        tsih,
        cmd_sn,
        exp_stat_sn,
        ..
    }) = outcome
    else {
        panic!("{outcome:?}")
    };
    assert_eq!(tsih, 0x1234);
    assert_eq!(cmd_sn, 1);
    assert_eq!(exp_stat_sn, resps[1].stat_sn + 1);
    assert!(params.immediate_data);
    assert!(!params.initial_r2t);
    assert_eq!(params.target_max_recv_data_segment_length, 256 * 1024);
    assert_eq!(params.target_portal_group_tag, Some(7));
    assert_eq!(params.target_alias.as_deref(), Some("disk0"));
    let Some(LoginStep::Complete {
        params: tp,
        next_stat_sn,
        exp_cmd_sn,
        ..
    }) = last
    else {
        panic!()
    };
    assert_eq!(next_stat_sn, exp_stat_sn);
    assert_eq!(exp_cmd_sn, 1);
    assert_eq!(tp.initiator_max_recv_data_segment_length, 1024 * 1024);
    assert_eq!(tp.max_burst_length, params.max_burst_length);
    assert_eq!(tp.first_burst_length, params.first_burst_length);
    assert_eq!(tp.immediate_data, params.immediate_data);
    assert_eq!(tp.initial_r2t, params.initial_r2t);
    assert_eq!(tp.initiator_name, INAME);
    assert_eq!(tp.target_name.as_deref(), Some(TNAME));
}

#[test]
fn jump_to_operational() {
    let mut cfg = InitiatorLoginConfig::normal(INAME, TNAME);
    cfg.skip_security = true;
    let (outcome, reqs, _, _) = run(cfg, |_, _, _| accept());
    assert_eq!(reqs.len(), 1);
    assert!(matches!(
        outcome,
        LoginOutcome::Success(LoggedIn { tsih: 0x1234, .. })
    ));
}

#[test]
fn discovery_session() {
    let (outcome, reqs, resps, _) = run(InitiatorLoginConfig::discovery(INAME), |_, t, s| {
        assert_eq!(t, None);
        assert_eq!(s, SessionType::Discovery);
        accept()
    });
    let first = TextPairs::parse(&reqs[0].data).unwrap();
    assert_eq!(first.get("SessionType"), Some("Discovery"));
    assert_eq!(first.get("TargetName"), None);
    // No TPGT required in discovery sessions.
    assert_eq!(
        TextPairs::parse(&resps[0].data)
            .unwrap()
            .get("TargetPortalGroupTag"),
        None
    );
    let LoginOutcome::Success(LoggedIn { params, .. }) = outcome else {
        panic!()
    };
    assert_eq!(params.session_type, SessionType::Discovery);
}

#[test]
fn redirect() {
    let (outcome, _, resps, last) = run(InitiatorLoginConfig::normal(INAME, TNAME), |_, _, _| {
        TargetDecision::Redirect {
            address: "127.0.0.2:3261".into(),
            permanent: false,
        }
    });
    assert_eq!(
        outcome,
        LoginOutcome::Redirected {
            address: "127.0.0.2:3261".into(),
            permanent: false
        }
    );
    assert_eq!((resps[0].status_class, resps[0].status_detail), (1, 1));
    assert_eq!(&resps[0].data[..], b"TargetAddress=127.0.0.2:3261\0");
    assert!(matches!(last, Some(LoginStep::Close { status, .. }) if status.code() == 0x0101));
}

#[test]
fn unknown_target() {
    let (outcome, _, _, _) = run(
        InitiatorLoginConfig::normal(INAME, "iqn.nope"),
        |_, _, _| TargetDecision::Refuse(LoginStatus::NOT_FOUND),
    );
    assert_eq!(
        outcome,
        LoginOutcome::Failed {
            status: LoginStatus::NOT_FOUND
        }
    );
}

fn libiscsi_first_request(version_min: u8) -> LoginRequest {
    // The keys and order lib/login.c sends in its first PDU when no CHAP user
    // is set: CSG=1 (operational), NSG=3, T=1, immediate, all in one PDU.
    let text: TextPairs = [
        (
            "InitiatorName",
            "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test",
        ),
        ("TargetName", TNAME),
        ("SessionType", "Normal"),
        ("HeaderDigest", "None,CRC32C"),
        ("DataDigest", "None"),
        ("InitialR2T", "Yes"),
        ("ImmediateData", "Yes"),
        ("MaxBurstLength", "262144"),
        ("FirstBurstLength", "262144"),
        ("MaxRecvDataSegmentLength", "262144"),
        ("DataPDUInOrder", "Yes"),
        ("DefaultTime2Wait", "2"),
        ("DefaultTime2Retain", "0"),
        ("IFMarker", "No"),
        ("OFMarker", "No"),
        ("MaxConnections", "1"),
        ("MaxOutstandingR2T", "1"),
        ("ErrorRecoveryLevel", "0"),
        ("DataSequenceInOrder", "Yes"),
    ]
    .into_iter()
    .collect();
    LoginRequest {
        transit: true,
        continue_: false,
        csg: Stage::LoginOperationalNegotiation,
        nsg: Stage::FullFeaturePhase,
        version_max: 0,
        version_min,
        isid: [0x80, 0x12, 0x34, 0x56, 0x78, 0x9a],
        tsih: 0,
        itt: 0x1111,
        cid: 0,
        cmd_sn: 0xdead_beef,
        exp_stat_sn: 0,
        data: text.to_bytes(),
    }
}

#[test]
fn libiscsi_key_sequence() {
    let mut tgt = TargetLogin::new(TargetLoginConfig::default());
    let step = tgt.on_request(libiscsi_first_request(0));
    assert!(matches!(step, LoginStep::NeedTargetDecision { .. }));
    let LoginStep::Complete {
        response,
        params,
        exp_cmd_sn,
        ..
    } = tgt.decide(accept())
    else {
        panic!()
    };
    assert!(response.transit);
    assert_eq!(response.csg, Stage::LoginOperationalNegotiation);
    assert_eq!(response.nsg, Stage::FullFeaturePhase);
    assert_eq!(response.itt, 0x1111);
    assert_eq!(response.exp_cmd_sn, 0xdead_beef);
    assert_eq!(exp_cmd_sn, 0xdead_beef);
    let a = TextPairs::parse(&response.data).unwrap();
    assert_eq!(a.get("HeaderDigest"), Some("None"));
    assert_eq!(a.get("InitialR2T"), Some("Yes"));
    assert_eq!(a.get("ImmediateData"), Some("Yes"));
    assert_eq!(a.get("IFMarker"), Some("No"));
    assert_eq!(a.get("MaxRecvDataSegmentLength"), Some("262144"));
    assert_eq!(a.get("TargetPortalGroupTag"), Some("7"));
    assert_eq!(a.get("InitiatorName"), None);
    assert!(params.initial_r2t);
    assert!(!params.header_digest);
    assert_eq!(params.default_time2retain, 0);
}

#[test]
fn unsupported_version() {
    let mut tgt = TargetLogin::new(TargetLoginConfig::default());
    let LoginStep::Close { response, status } = tgt.on_request(libiscsi_first_request(1)) else {
        panic!()
    };
    assert_eq!(status, LoginStatus::UNSUPPORTED_VERSION);
    assert_eq!((response.status_class, response.status_detail), (2, 5));
}

#[test]
fn missing_initiator_name_and_bad_stage() {
    let mut req = libiscsi_first_request(0);
    req.data = Bytes::from_static(b"TargetName=x\0");
    let mut tgt = TargetLogin::new(TargetLoginConfig::default());
    assert!(matches!(
        tgt.on_request(req.clone()),
        LoginStep::Close {
            status: LoginStatus::MISSING_PARAMETER,
            ..
        }
    ));
    let mut req = libiscsi_first_request(0);
    req.csg = Stage::FullFeaturePhase;
    let mut tgt = TargetLogin::new(TargetLoginConfig::default());
    assert!(matches!(
        tgt.on_request(req),
        LoginStep::Close {
            status: LoginStatus::INITIATOR_ERROR,
            ..
        }
    ));
}

#[test]
fn chap_only_is_refused() {
    let req = LoginRequest {
        transit: true,
        csg: Stage::SecurityNegotiation,
        nsg: Stage::LoginOperationalNegotiation,
        data: Bytes::from_static(b"InitiatorName=a\0TargetName=b\0AuthMethod=CHAP\0"),
        ..LoginRequest::default()
    };
    let mut tgt = TargetLogin::new(TargetLoginConfig::default());
    assert!(matches!(
        tgt.on_request(req),
        LoginStep::NeedTargetDecision { .. }
    ));
    assert!(matches!(
        tgt.decide(accept()),
        LoginStep::Close {
            status: LoginStatus::AUTHENTICATION_FAILURE,
            ..
        }
    ));
}

#[test]
fn continued_text_across_login_pdus() {
    let full = libiscsi_first_request(0);
    let (a, b) = full.data.split_at(40);
    let mut first = full.clone();
    first.continue_ = true;
    first.transit = false;
    first.data = Bytes::copy_from_slice(a);
    let mut second = full.clone();
    second.data = Bytes::copy_from_slice(b);
    let mut tgt = TargetLogin::new(TargetLoginConfig::default());
    let LoginStep::Send(ack) = tgt.on_request(first) else {
        panic!()
    };
    assert!(ack.data.is_empty() && !ack.transit);
    assert!(matches!(
        tgt.on_request(second),
        LoginStep::NeedTargetDecision { .. }
    ));
    assert!(matches!(tgt.decide(accept()), LoginStep::Complete { .. }));
}

#[test]
fn nonzero_tsih_and_too_many_pdus() {
    let mut req = libiscsi_first_request(0);
    req.tsih = 5;
    let mut tgt = TargetLogin::new(TargetLoginConfig::default());
    assert!(matches!(
        tgt.on_request(req),
        LoginStep::Close {
            status: LoginStatus::SESSION_DOES_NOT_EXIST,
            ..
        }
    ));
    // An initiator that never transits is cut off.
    let mut tgt = TargetLogin::new(TargetLoginConfig::default());
    let mut req = libiscsi_first_request(0);
    req.transit = false;
    assert!(matches!(
        tgt.on_request(req.clone()),
        LoginStep::NeedTargetDecision { .. }
    ));
    assert!(matches!(tgt.decide(accept()), LoginStep::Send(_)));
    let mut closed = false;
    for _ in 0..(MAX_LOGIN_PDUS + 1) {
        req.data = Bytes::new();
        if let LoginStep::Close { .. } = tgt.on_request(req.clone()) {
            closed = true;
            break;
        }
    }
    assert!(closed);
}

/// A response text longer than a login PDU may carry (8192 bytes, §13.12) goes out in pieces
/// with the C bit and without the T bit; the initiator takes each with an empty request, and
/// the transit to full feature phase comes with the last piece (§11.13.3).
#[test]
fn long_response_text_is_continued() {
    let mut keys: Vec<(String, String)> = vec![
        ("InitiatorName".into(), "iqn.2024-01.test:i".into()),
        ("TargetName".into(), "iqn.2024-01.test:t".into()),
        ("SessionType".into(), "Normal".into()),
    ];
    for i in 0..700 {
        keys.push((format!("X-org.example.k{i:04}"), "1".into()));
    }
    let text = TextPairs::from_iter(keys.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let first = LoginRequest {
        transit: true,
        csg: Stage::LoginOperationalNegotiation,
        nsg: Stage::FullFeaturePhase,
        isid: [0x80, 0, 0, 0, 0, 9],
        itt: 7,
        data: text.to_bytes(),
        ..LoginRequest::default()
    };
    let mut tgt = TargetLogin::new(TargetLoginConfig::default());
    assert!(matches!(
        tgt.on_request(first.clone()),
        LoginStep::NeedTargetDecision { .. }
    ));
    let mut step = tgt.decide(accept());
    let mut pieces = Vec::new();
    loop {
        match step {
            LoginStep::Send(r) => {
                assert!(r.continue_, "a non-final piece carries C");
                assert!(!r.transit, "C and T are never set together");
                assert_eq!(r.data.len(), LOGIN_DATA_SEGMENT);
                pieces.push(r.data.clone());
                let empty = LoginRequest {
                    transit: false,
                    data: Bytes::new(),
                    ..first.clone()
                };
                step = tgt.on_request(empty);
            }
            LoginStep::Complete { response, .. } => {
                assert!(!response.continue_ && response.transit);
                assert_eq!(response.nsg, Stage::FullFeaturePhase);
                assert!(response.data.len() <= LOGIN_DATA_SEGMENT);
                pieces.push(response.data.clone());
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(pieces.len(), 3, "about 24 KiB of answers: three pieces");
    let whole: Vec<u8> = pieces.concat();
    let answers = TextPairs::parse(&whole).unwrap();
    for i in 0..700 {
        assert_eq!(
            answers.get(&format!("X-org.example.k{i:04}")),
            Some("NotUnderstood")
        );
    }
}

/// Text in the request that should take the next piece is an initiator error.
#[test]
fn a_continued_response_needs_an_empty_request() {
    let mut keys: Vec<(String, String)> = vec![
        ("InitiatorName".into(), "iqn.2024-01.test:i".into()),
        ("TargetName".into(), "iqn.2024-01.test:t".into()),
    ];
    for i in 0..400 {
        keys.push((format!("X-org.example.k{i:04}"), "1".into()));
    }
    let first = LoginRequest {
        transit: true,
        csg: Stage::LoginOperationalNegotiation,
        nsg: Stage::FullFeaturePhase,
        isid: [0x80, 0, 0, 0, 0, 9],
        itt: 7,
        data: TextPairs::from_iter(keys.iter().map(|(k, v)| (k.as_str(), v.as_str()))).to_bytes(),
        ..LoginRequest::default()
    };
    let mut tgt = TargetLogin::new(TargetLoginConfig::default());
    tgt.on_request(first.clone());
    assert!(matches!(tgt.decide(accept()), LoginStep::Send(r) if r.continue_));
    let step = tgt.on_request(LoginRequest {
        transit: false,
        data: Bytes::from_static(b"MaxBurstLength=512\0"),
        ..first
    });
    assert!(
        matches!(step, LoginStep::Close { status, .. } if status == LoginStatus::INITIATOR_ERROR),
        "{step:?}"
    );
}
