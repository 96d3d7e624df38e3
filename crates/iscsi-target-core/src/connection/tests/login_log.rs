//! A login that ends without a session is logged: WARN when refused, INFO when redirected,
//! with the initiator and target names and the status and reason.

use std::io::Write;
use std::sync::Mutex;

use super::*;

/// What the tracing events emitted by `f` look like, one line each.
fn logged(f: impl FnOnce()) -> Vec<String> {
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);
    impl Write for Capture {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::TRACE)
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let bytes = capture.0.lock().unwrap().clone();
    String::from_utf8(bytes)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The one line about the end of the login, checked to name both parties.
fn login_line(lines: &[String], target: &str) -> String {
    let mut l = lines.iter().filter(|l| l.contains("login "));
    let line = l
        .next()
        .unwrap_or_else(|| panic!("no login line in {lines:?}"));
    assert!(l.next().is_none(), "{lines:?}");
    assert!(line.contains(INITIATOR) && line.contains(target), "{line}");
    line.clone()
}

#[test]
fn a_login_to_an_unknown_target_is_logged_as_refused() {
    let lines = logged(|| {
        let mut h = Harness::new(TestPolicy::default());
        h.login_to("iqn.nope");
    });
    let line = login_line(&lines, "iqn.nope");
    assert!(line.contains(" WARN "), "{line}");
    assert!(
        line.contains("login refused (status 0x0203): no such target"),
        "{line}"
    );
}

#[test]
fn a_login_the_policy_refuses_is_logged_as_refused() {
    let lines = logged(|| {
        let mut h = Harness::new(TestPolicy {
            decision: LoginDecision::NotFound,
            ..TestPolicy::default()
        });
        h.login_to(TARGET);
    });
    let line = login_line(&lines, TARGET);
    assert!(line.contains(" WARN "), "{line}");
    assert!(
        line.contains("login refused (status 0x0203): the control plane"),
        "{line}"
    );
}

#[test]
fn a_stopping_target_answers_service_unavailable() {
    let lines = logged(|| {
        let mut h = Harness::new(TestPolicy {
            decision: LoginDecision::Unavailable,
            ..TestPolicy::default()
        });
        let r = h.login_to(TARGET);
        assert_eq!((r.status_class, r.status_detail), (3, 1), "0x0301");
    });
    let line = login_line(&lines, TARGET);
    assert!(
        line.contains("login refused (status 0x0301): the target is shutting down"),
        "{line}"
    );
}

#[test]
fn a_redirected_login_is_logged_at_info_with_the_address() {
    let lines = logged(|| {
        let mut h = Harness::new(TestPolicy {
            decision: LoginDecision::Redirect {
                address: "127.0.0.2:3260".into(),
            },
            ..TestPolicy::default()
        });
        h.login_to(TARGET);
    });
    let line = login_line(&lines, TARGET);
    assert!(line.contains(" INFO "), "{line}");
    assert!(
        line.contains("login redirected (status 0x0101) to 127.0.0.2:3260"),
        "{line}"
    );
}

#[test]
fn a_login_refused_before_the_target_decides_names_what_it_knows() {
    let lines = logged(|| {
        let mut h = Harness::new(TestPolicy::default());
        // No InitiatorName: the login layer refuses it on its own.
        let r = h.login_step(
            (
                Stage::SecurityNegotiation,
                Stage::LoginOperationalNegotiation,
            ),
            0,
            &[("TargetName", TARGET)],
        );
        assert_eq!(r.status_class, 2);
    });
    let line = lines
        .iter()
        .find(|l| l.contains("login refused"))
        .unwrap_or_else(|| panic!("{lines:?}"));
    assert!(line.contains(" WARN ") && line.contains(TARGET), "{line}");
}

#[test]
fn a_login_that_succeeds_logs_no_refusal() {
    let lines = logged(|| {
        logged_in(&[]);
    });
    assert!(!lines.iter().any(|l| l.contains("login ")), "{lines:?}");
}
