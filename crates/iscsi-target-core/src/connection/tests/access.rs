//! Access control in the connection core: the allow list (0x0202, RFC 7143 §11.13.5), CHAP
//! for normal and discovery sessions (0x0201 and the `AuthenticationFailed` event), and the
//! SendTargets answer that leaves out a target the initiator may not log in to.

use iscsi_proto::chap::{Credentials, decode_binary, encode_hex, response};

use super::*;
use crate::catalog::Access;

const SECRET: &str = "initiator-secret";
const RANDOM: ChapRandom = [0x42; iscsi_proto::chap::CHALLENGE_LEN + 1];

fn creds(user: &str, secret: &str) -> Credentials {
    Credentials {
        user: user.into(),
        secret: secret.into(),
    }
}

/// A harness whose target (and discovery) has `access`, with or without CHAP randomness.
fn guarded(access: Access, discovery: Access, random: bool) -> Harness {
    let mut catalog = (*catalog()).clone();
    catalog.targets[0].access = access;
    catalog.discovery = discovery;
    let mut h = Harness::new(TestPolicy::default());
    h.conn = Connection::new(Arc::new(catalog), PortalId(0), h.now);
    if random {
        h.conn =
            Connection::new(h.conn.catalog.clone(), PortalId(0), h.now).with_chap_random(RANDOM);
    }
    h
}

fn chap_only() -> Access {
    Access {
        chap: Some(creds("alice", SECRET)),
        ..Access::default()
    }
}

const SEC: (Stage, Stage) = (
    Stage::SecurityNegotiation,
    Stage::LoginOperationalNegotiation,
);

/// Logs in with CHAP as `user`/`secret`; the last response.
fn chap_login(
    h: &mut Harness,
    session: &[(&str, &str)],
    user: &str,
    secret: &str,
) -> LoginResponse {
    let mut first = vec![("InitiatorName", INITIATOR), ("AuthMethod", "CHAP,None")];
    first.extend_from_slice(session);
    let r = h.login_step(SEC, 1, &first);
    assert_eq!((r.status_class, r.transit), (0, false), "stays in security");
    assert_eq!(
        TextPairs::parse(&r.data).unwrap().get("AuthMethod"),
        Some("CHAP")
    );
    let r = h.login_step(SEC, 1, &[("CHAP_A", "5")]);
    let k = TextPairs::parse(&r.data).unwrap();
    let id: u8 = k.get("CHAP_I").unwrap().parse().unwrap();
    let c = decode_binary(k.get("CHAP_C").unwrap(), "c", 1024).unwrap();
    assert_eq!(
        (id, c.as_slice()),
        (0x42, &RANDOM[1..]),
        "the shell's randomness"
    );
    let resp = encode_hex(&response(id, secret.as_bytes(), &c));
    h.login_step(SEC, 1, &[("CHAP_N", user), ("CHAP_R", &resp)])
}

fn auth_failures(h: &Harness) -> Vec<(String, Option<String>)> {
    h.events
        .iter()
        .filter_map(|e| match e {
            Event::AuthenticationFailed {
                initiator, target, ..
            } => Some((initiator.clone(), target.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn an_initiator_outside_the_allow_list_gets_0202() {
    let allow = Access {
        allow: Some(vec!["iqn.other".into()]),
        ..Access::default()
    };
    let mut h = guarded(allow.clone(), Access::default(), true);
    let r = h.login_to(TARGET);
    assert_eq!((r.status_class, r.status_detail), (2, 2));
    assert!(
        h.policy.asked.is_empty(),
        "refused before the control plane is asked"
    );
    // A listed initiator gets in.
    let mut allowed = allow;
    allowed.allow = Some(vec![INITIATOR.into()]);
    let mut h = guarded(allowed, Access::default(), true);
    let r = h.login_to(TARGET);
    assert_eq!(r.status_class, 0);
}

#[test]
fn chap_right_secret_reaches_full_feature_wrong_secret_gets_0201_and_an_event() {
    let mut h = guarded(chap_only(), Access::default(), true);
    let r = chap_login(&mut h, &[("TargetName", TARGET)], "alice", SECRET);
    assert_eq!((r.status_class, r.transit), (0, true));
    let r = h.login_step(
        (Stage::LoginOperationalNegotiation, Stage::FullFeaturePhase),
        1,
        &[],
    );
    assert_eq!(r.nsg, Stage::FullFeaturePhase);
    assert!(h.conn.params().is_some());
    assert!(auth_failures(&h).is_empty());

    let mut h = guarded(chap_only(), Access::default(), true);
    let r = chap_login(&mut h, &[("TargetName", TARGET)], "alice", "a-wrong-secret");
    assert_eq!((r.status_class, r.status_detail), (2, 1));
    assert_eq!(h.conn.close_reason(), Some(&CloseReason::LoginEnded));
    assert_eq!(
        auth_failures(&h),
        [(INITIATOR.to_string(), Some(TARGET.to_string()))]
    );
}

#[test]
fn no_credentials_get_0201() {
    let mut h = guarded(chap_only(), Access::default(), true);
    let r = h.login_step(
        SEC,
        1,
        &[
            ("InitiatorName", INITIATOR),
            ("TargetName", TARGET),
            ("AuthMethod", "None"),
        ],
    );
    assert_eq!((r.status_class, r.status_detail), (2, 1));
    assert_eq!(auth_failures(&h).len(), 1);
}

#[test]
fn without_randomness_a_chap_login_is_a_target_error() {
    let mut h = guarded(chap_only(), Access::default(), false);
    let r = h.login_to(TARGET);
    assert_eq!((r.status_class, r.status_detail), (3, 0));
}

#[test]
fn discovery_chap_guards_sendtargets_and_the_answer_follows_the_allow_lists() {
    let hidden = Access {
        allow: Some(vec!["iqn.other".into()]),
        ..Access::default()
    };
    // Without credentials: refused.
    let mut h = guarded(hidden.clone(), chap_only(), true);
    let r = h.login_step(
        SEC,
        1,
        &[
            ("InitiatorName", INITIATOR),
            ("SessionType", "Discovery"),
            ("AuthMethod", "None"),
        ],
    );
    assert_eq!((r.status_class, r.status_detail), (2, 1));
    assert_eq!(auth_failures(&h), [(INITIATOR.to_string(), None)]);
    // With them: in, and SendTargets=All does not list the target it may not log in to.
    let mut h = guarded(hidden, chap_only(), true);
    let r = chap_login(&mut h, &[("SessionType", "Discovery")], "alice", SECRET);
    assert_eq!(r.status_class, 0);
    let r = h.login_step(
        (Stage::LoginOperationalNegotiation, Stage::FullFeaturePhase),
        1,
        &[],
    );
    assert_eq!(r.nsg, Stage::FullFeaturePhase);
    let o = h.send(iscsi_proto::TextRequest {
        final_: true,
        itt: 5,
        ttt: iscsi_proto::RESERVED_TAG,
        cmd_sn: 1,
        exp_stat_sn: r.stat_sn + 1,
        data: text(&[("SendTargets", "All")]),
        ..Default::default()
    });
    let Some(Pdu::TextResponse(t)) = o.first() else {
        panic!("{o:?}")
    };
    assert!(
        TextPairs::parse(&t.data)
            .unwrap()
            .get("TargetName")
            .is_none(),
        "{:?}",
        t.data
    );
}
