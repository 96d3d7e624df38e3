//! The login deadline: a connection that has not reached the full feature phase within
//! [`LOGIN_TIMEOUT`] of its creation is closed, however it spends the time.

use std::time::Duration;

use super::*;

fn login_timeout_reason() -> CloseReason {
    CloseReason::Failed("login not completed within 20 s".into())
}

#[test]
fn login_timeout_is_20_s() {
    assert_eq!(LOGIN_TIMEOUT, Duration::from_secs(20));
}

#[test]
fn a_silent_connection_is_closed_at_the_login_deadline() {
    let mut h = Harness::new(TestPolicy::default());
    let deadline = h.now + LOGIN_TIMEOUT;
    assert_eq!(h.conn.poll_timeout(), Some(deadline));
    h.conn.handle_timeout(deadline - Duration::from_millis(1));
    assert!(!h.conn.is_closing());
    h.conn.handle_timeout(deadline);
    assert_eq!(h.conn.close_reason(), Some(&login_timeout_reason()));
    assert_eq!(
        h.conn.poll_timeout(),
        None,
        "nothing left to time once closing"
    );
    h.conn
        .on_closed(CloseReason::Transport("socket closed".into()));
    h.run();
    assert_eq!(
        h.events,
        [Event::Ended {
            why: login_timeout_reason()
        }]
    );
}

#[test]
fn a_login_request_trickled_one_byte_at_a_time_is_closed_at_the_deadline() {
    let mut h = Harness::new(TestPolicy::default());
    let start = h.now;
    let deadline = start + LOGIN_TIMEOUT;
    let mut bytes = BytesMut::new();
    Pdu::from(LoginRequest {
        transit: true,
        csg: Stage::SecurityNegotiation,
        nsg: Stage::LoginOperationalNegotiation,
        isid: [0x80, 0, 0, 0, 0, 1],
        itt: 1,
        data: text(&[("InitiatorName", INITIATOR), ("TargetName", TARGET)]),
        ..LoginRequest::default()
    })
    .encode(&mut bytes, Digests::NONE)
    .unwrap();
    // One byte every 200 ms: the request is not whole before the deadline.
    let step = Duration::from_millis(200);
    assert!(step * u32::try_from(bytes.len()).unwrap() > LOGIN_TIMEOUT);
    let mut sent = 0;
    while !h.conn.is_closing() {
        assert!(
            sent < bytes.len(),
            "the whole request went in before the deadline"
        );
        h.now = start + step * u32::try_from(sent + 1).unwrap();
        h.rbuf.extend_from_slice(&bytes[sent..=sent]);
        sent += 1;
        h.run();
        assert!(h.out().is_empty());
        // The deadline stays where it was: arriving bytes do not push it back.
        if !h.conn.is_closing() {
            assert_eq!(h.conn.poll_timeout(), Some(deadline));
        }
        h.conn.handle_timeout(h.now);
        assert_eq!(
            h.conn.is_closing(),
            h.now >= deadline,
            "at {:?}",
            h.now - start
        );
    }
    assert_eq!(h.conn.close_reason(), Some(&login_timeout_reason()));
}

#[test]
fn a_login_that_stalls_between_steps_is_closed_at_the_deadline() {
    let mut h = Harness::new(TestPolicy::default());
    let deadline = h.now + LOGIN_TIMEOUT;
    h.now += Duration::from_secs(5);
    let r = h.login_to(TARGET);
    assert_eq!((r.status_class, r.transit), (0, true));
    assert_eq!(h.conn.poll_timeout(), Some(deadline));
    h.conn.handle_timeout(deadline);
    assert_eq!(h.conn.close_reason(), Some(&login_timeout_reason()));
}

#[test]
fn a_logged_in_connection_is_not_closed_by_the_login_deadline() {
    let mut h = logged_in(&[]);
    let deadline = h.now + LOGIN_TIMEOUT;
    assert_ne!(h.conn.poll_timeout(), Some(deadline));
    assert_eq!(h.conn.poll_timeout(), Some(h.now + PING_IDLE));
    h.conn.handle_timeout(deadline);
    assert!(!h.conn.is_closing());
    h.conn.handle_timeout(deadline + Duration::from_secs(60));
    assert_ne!(h.conn.close_reason(), Some(&login_timeout_reason()));
}
