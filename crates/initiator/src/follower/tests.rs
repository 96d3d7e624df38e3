//! The follower with virtual time: no sockets, no sleeping; every test names the
//! actions and states it expects.

use super::*;

const UNIX_MS: u64 = 1_700_000_000_000;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn config() -> FollowerConfig {
    FollowerConfig {
        isns: true,
        max_attempts: 3,
        reconnect_every: None,
    }
}

fn actions(f: &mut Follower) -> Vec<Action> {
    std::iter::from_fn(|| f.poll_action()).collect()
}

/// A follower logged in at `portal` at `t0`, its actions taken.
fn logged_in(config: FollowerConfig, t0: Instant, portal: SocketAddr) -> Follower {
    let mut f = Follower::new(config, t0, UNIX_MS);
    assert_eq!(actions(&mut f), vec![Action::LookUpPortals]);
    assert_eq!(f.state(), &State::Discovering { attempt: 0 });
    f.handle(t0, Event::Discovered(vec![portal]));
    assert_eq!(
        actions(&mut f),
        vec![
            Action::Emit(InitiatorEvent::Discovered {
                portals: vec![portal]
            }),
            Action::Login(portal),
        ]
    );
    f.handle(t0, Event::LoginOk);
    assert_eq!(
        actions(&mut f),
        vec![
            Action::Emit(InitiatorEvent::LoggedIn {
                portal,
                redirected_from: None
            }),
            Action::Reissue,
        ]
    );
    assert_eq!(f.state(), &State::LoggedIn { portal, since: t0 });
    f
}

/// Recovery from `Discovering` to a login at `portal` at `now`; returns the record.
fn recover_at(f: &mut Follower, now: Instant, portal: SocketAddr) -> Record {
    f.handle(now, Event::Discovered(vec![portal]));
    assert_eq!(
        actions(f),
        vec![
            Action::Emit(InitiatorEvent::IsnsQueried {
                portals: vec![portal]
            }),
            Action::Login(portal),
        ]
    );
    f.handle(now, Event::LoginOk);
    let mut a = actions(f);
    assert_eq!(a.pop(), Some(Action::Reissue));
    let Some(Action::Record(record)) = a.pop() else {
        panic!("no record in {a:?}");
    };
    assert_eq!(
        a,
        vec![Action::Emit(InitiatorEvent::LoggedIn {
            portal,
            redirected_from: None
        })]
    );
    assert_eq!(f.state(), &State::LoggedIn { portal, since: now });
    record
}

#[test]
fn logout_request_drains_logs_out_and_moves_to_the_portal_listed_first() {
    let t0 = Instant::now();
    let (a, b) = (addr(3260), addr(3261));
    let mut f = logged_in(config(), t0, a);
    assert_eq!(f.poll_timeout(), None, "no voluntary leave configured");

    let t1 = t0 + ms(1000);
    f.handle(
        t1,
        Event::LogoutRequested {
            time2logout: ms(2000),
        },
    );
    assert_eq!(
        actions(&mut f),
        vec![
            Action::Emit(InitiatorEvent::LogoutRequested { portal: a }),
            Action::StopIssuing,
            Action::SendLogout,
        ]
    );
    assert_eq!(
        f.state(),
        &State::Draining {
            portal: a,
            requested_at: t1,
            time2logout: Some(ms(2000))
        }
    );

    f.handle(t1 + ms(20), Event::LoggedOut);
    assert_eq!(
        actions(&mut f),
        vec![Action::Emit(InitiatorEvent::LoggedOut { portal: a })]
    );
    assert_eq!(f.state(), &State::LoggedOut { portal: a });

    f.handle(t1 + ms(25), Event::SessionClosed);
    assert_eq!(
        actions(&mut f),
        vec![Action::StopIssuing, Action::LookUpPortals]
    );
    assert_eq!(f.state(), &State::Discovering { attempt: 0 });

    let record = recover_at(&mut f, t1 + ms(120), b);
    assert_eq!(
        record,
        Record::Move(MoveRecord {
            at_ms: UNIX_MS + 1000,
            from: a,
            to: b,
            pause_ms: 120
        })
    );
}

#[test]
fn login_redirect_is_followed_and_reported() {
    let t0 = Instant::now();
    let (a, c) = (addr(3260), addr(3262));
    let mut f = Follower::new(config(), t0, UNIX_MS);
    actions(&mut f);
    f.handle(t0, Event::Discovered(vec![a]));
    actions(&mut f);
    f.handle(t0, Event::LoginRedirect(c));
    assert_eq!(actions(&mut f), vec![Action::Login(c)]);
    assert_eq!(
        f.state(),
        &State::LoggingIn {
            portal: c,
            attempt: 0,
            redirected_from: Some(a),
            redirects: 1
        }
    );
    f.handle(t0, Event::LoginOk);
    assert_eq!(
        actions(&mut f),
        vec![
            Action::Emit(InitiatorEvent::LoggedIn {
                portal: c,
                redirected_from: Some(a)
            }),
            Action::Reissue,
        ]
    );
    assert_eq!(
        f.state(),
        &State::LoggedIn {
            portal: c,
            since: t0
        }
    );
}

#[test]
fn redirect_loops_are_bounded_then_the_next_listed_portal_is_tried() {
    let t0 = Instant::now();
    let (a, b, c) = (addr(3260), addr(3261), addr(3262));
    let mut f = Follower::new(config(), t0, UNIX_MS);
    actions(&mut f);
    f.handle(t0, Event::Discovered(vec![a, b]));
    actions(&mut f);
    for _ in 0..MAX_REDIRECTS {
        f.handle(t0, Event::LoginRedirect(c));
        assert_eq!(actions(&mut f), vec![Action::Login(c)]);
    }
    f.handle(t0, Event::LoginRedirect(c));
    assert_eq!(actions(&mut f), vec![Action::Login(b)]);
    assert_eq!(
        f.state(),
        &State::LoggingIn {
            portal: b,
            attempt: 0,
            redirected_from: None,
            redirects: 0
        }
    );
    f.handle(t0, Event::LoginFailed("refused".into()));
    assert_eq!(
        actions(&mut f),
        vec![
            Action::Emit(InitiatorEvent::Failed {
                reason: "refused".into()
            }),
            Action::Fail("refused".into()),
        ],
        "the first login gets a single round"
    );
    assert_eq!(
        f.state(),
        &State::Failed {
            reason: "refused".into()
        }
    );
}

#[test]
fn empty_isns_answers_back_off_then_give_up() {
    let t0 = Instant::now();
    let a = addr(3260);
    let mut f = logged_in(config(), t0, a);
    f.handle(
        t0,
        Event::ConnectionLost {
            reason: "reset".into(),
            time2wait: Duration::ZERO,
        },
    );
    f.handle(t0, Event::SessionClosed);
    actions(&mut f);
    assert_eq!(f.state(), &State::Discovering { attempt: 0 });

    f.handle(t0, Event::Discovered(vec![]));
    assert_eq!(
        actions(&mut f),
        vec![Action::Emit(InitiatorEvent::IsnsQueried {
            portals: vec![]
        })]
    );
    let until = t0 + backoff(1);
    assert_eq!(f.state(), &State::BackingOff { until, attempt: 1 });
    assert_eq!(f.poll_timeout(), Some(until));
    f.handle(until - ms(1), Event::Tick);
    assert!(actions(&mut f).is_empty(), "too early");
    f.handle(until, Event::Tick);
    assert_eq!(actions(&mut f), vec![Action::LookUpPortals]);
    assert_eq!(f.state(), &State::Discovering { attempt: 1 });

    f.handle(until, Event::DiscoveryFailed("iSNS timed out".into()));
    let until2 = until + backoff(2);
    assert!(backoff(2) > backoff(1));
    assert_eq!(
        f.state(),
        &State::BackingOff {
            until: until2,
            attempt: 2
        }
    );
    f.handle(until2, Event::Tick);
    assert_eq!(actions(&mut f), vec![Action::LookUpPortals]);
    f.handle(until2, Event::Discovered(vec![]));
    assert_eq!(
        actions(&mut f),
        vec![
            Action::Emit(InitiatorEvent::IsnsQueried { portals: vec![] }),
            Action::Emit(InitiatorEvent::Failed {
                reason: "no portals listed".into()
            }),
            Action::Fail("no portals listed".into()),
        ]
    );
    assert!(matches!(f.state(), State::Failed { .. }));
    assert_eq!(f.poll_timeout(), None);
    assert_eq!(backoff(1000), MAX_BACKOFF);
}

#[test]
fn connection_loss_waits_time2wait_then_reconnects() {
    let t0 = Instant::now();
    let a = addr(3260);
    let mut f = logged_in(config(), t0, a);
    let t1 = t0 + ms(500);
    f.handle(
        t1,
        Event::ConnectionLost {
            reason: "drop announced".into(),
            time2wait: Duration::from_secs(60),
        },
    );
    assert_eq!(
        actions(&mut f),
        vec![
            Action::Emit(InitiatorEvent::ConnectionLost {
                portal: a,
                reason: "drop announced".into()
            }),
            Action::StopIssuing,
        ]
    );
    assert_eq!(f.state(), &State::Disconnected { portal: a });
    f.handle(t1 + ms(5), Event::SessionClosed);
    assert_eq!(actions(&mut f), vec![Action::StopIssuing]);
    let until = t1 + ms(5) + MAX_TIME2WAIT;
    assert_eq!(f.state(), &State::BackingOff { until, attempt: 0 });
    f.handle(until, Event::Tick);
    assert_eq!(actions(&mut f), vec![Action::LookUpPortals]);
    let record = recover_at(&mut f, until + ms(10), a);
    assert_eq!(
        record,
        Record::Reconnect(ReconnectRecord {
            at_ms: UNIX_MS + 500,
            from: a,
            to: a,
            cause: ReconnectCause::ConnectionLost,
            pause_ms: (until + ms(10) - t1).as_millis() as u64
        })
    );
}

#[test]
fn session_closed_without_warning_is_a_connection_loss() {
    let t0 = Instant::now();
    let a = addr(3260);
    let mut f = logged_in(config(), t0, a);
    f.handle(t0 + ms(7), Event::SessionClosed);
    assert_eq!(
        actions(&mut f),
        vec![Action::StopIssuing, Action::LookUpPortals]
    );
    let Record::Reconnect(r) = recover_at(&mut f, t0 + ms(9), a) else {
        panic!("a reconnect, not a move");
    };
    assert_eq!((r.cause, r.pause_ms), (ReconnectCause::ConnectionLost, 2));
}

#[test]
fn periodic_reconnect_leaves_and_comes_back() {
    let t0 = Instant::now();
    let a = addr(3260);
    let every = ms(300);
    let mut f = logged_in(
        FollowerConfig {
            reconnect_every: Some(every),
            ..config()
        },
        t0,
        a,
    );
    assert_eq!(f.poll_timeout(), Some(t0 + every));
    f.handle(t0 + ms(100), Event::Tick);
    assert!(actions(&mut f).is_empty());
    let t1 = t0 + every;
    f.handle(t1, Event::Tick);
    assert_eq!(
        actions(&mut f),
        vec![
            Action::StopIssuing,
            Action::Emit(InitiatorEvent::Leaving { portal: a }),
            Action::SendLogout,
        ]
    );
    assert_eq!(
        f.state(),
        &State::Draining {
            portal: a,
            requested_at: t1,
            time2logout: None
        }
    );
    assert_eq!(f.poll_timeout(), None);
    f.handle(t1 + ms(3), Event::LoggedOut);
    f.handle(t1 + ms(4), Event::SessionClosed);
    actions(&mut f);
    let t2 = t1 + ms(40);
    let record = recover_at(&mut f, t2, a);
    assert_eq!(
        record,
        Record::Reconnect(ReconnectRecord {
            at_ms: UNIX_MS + 300,
            from: a,
            to: a,
            cause: ReconnectCause::Voluntary,
            pause_ms: 40
        })
    );
    assert_eq!(f.poll_timeout(), Some(t2 + every), "the next leave");
}

#[test]
fn a_logout_request_while_leaving_makes_it_a_move() {
    let t0 = Instant::now();
    let (a, b) = (addr(3260), addr(3261));
    let mut f = logged_in(
        FollowerConfig {
            reconnect_every: Some(ms(100)),
            ..config()
        },
        t0,
        a,
    );
    f.handle(t0 + ms(100), Event::Tick);
    actions(&mut f);
    let t1 = t0 + ms(110);
    f.handle(t1, Event::LogoutRequested { time2logout: ms(0) });
    assert_eq!(
        actions(&mut f),
        vec![Action::Emit(InitiatorEvent::LogoutRequested { portal: a })],
        "already draining: nothing more to do"
    );
    assert_eq!(
        f.state(),
        &State::Draining {
            portal: a,
            requested_at: t1,
            time2logout: Some(ms(0))
        }
    );
    f.handle(t1, Event::SessionClosed);
    actions(&mut f);
    let Record::Move(m) = recover_at(&mut f, t1 + ms(50), b) else {
        panic!("the target asked: a move");
    };
    assert_eq!((m.from, m.to, m.pause_ms), (a, b, 50));
}

#[test]
fn a_failed_login_tries_the_next_listed_portal() {
    let t0 = Instant::now();
    let (a, b) = (addr(3260), addr(3261));
    let mut f = logged_in(config(), t0, a);
    f.handle(t0, Event::LogoutRequested { time2logout: ms(0) });
    f.handle(t0, Event::SessionClosed);
    actions(&mut f);
    f.handle(t0, Event::Discovered(vec![a, b]));
    actions(&mut f);
    f.handle(t0, Event::LoginFailed("target busy".into()));
    assert_eq!(actions(&mut f), vec![Action::Login(b)]);
    f.handle(t0, Event::LoginFailed("refused".into()));
    assert!(actions(&mut f).is_empty());
    assert_eq!(
        f.state(),
        &State::BackingOff {
            until: t0 + backoff(1),
            attempt: 1
        },
        "recoveries get max_attempts rounds"
    );
}

#[test]
fn stop_logs_out_then_ends() {
    let t0 = Instant::now();
    let a = addr(3260);
    let mut f = logged_in(config(), t0, a);
    f.handle(t0, Event::Stop);
    assert_eq!(actions(&mut f), vec![Action::Shutdown, Action::SendLogout]);
    assert_eq!(f.state(), &State::Stopping { portal: a });
    f.handle(t0, Event::LogoutRequested { time2logout: ms(0) });
    f.handle(t0, Event::Stop);
    assert_eq!(
        actions(&mut f),
        vec![Action::Emit(InitiatorEvent::LogoutRequested { portal: a })]
    );
    f.handle(t0, Event::LoggedOut);
    f.handle(t0, Event::SessionClosed);
    assert_eq!(
        actions(&mut f),
        vec![Action::Emit(InitiatorEvent::LoggedOut { portal: a })]
    );
    assert_eq!(f.state(), &State::Stopped);

    // Stopping while backing off abandons the recovery at once.
    let mut f = logged_in(config(), t0, a);
    f.handle(t0, Event::SessionClosed);
    f.handle(t0, Event::DiscoveryFailed("down".into()));
    actions(&mut f);
    f.handle(t0, Event::Stop);
    assert_eq!(actions(&mut f), vec![Action::Shutdown]);
    assert_eq!(f.state(), &State::Stopped);
    assert_eq!(f.poll_timeout(), None);
}
