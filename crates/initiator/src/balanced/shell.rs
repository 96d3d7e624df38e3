//! The tokio shell around the [`Follower`]: it carries out the follower's actions
//! (lookups, logins, logouts, switching where commands go, keeping records) and
//! feeds back what the session, the lookups and the logins report.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use super::{BalancedConfig, Current, Records, lookup};
use crate::error::Error;
use crate::follower::{Action, Event, Follower, InitiatorEvent, Record, State};
use crate::full_feature::FullFeatureEvent;
use crate::login::LoginConfig;
use crate::session::{LoginAttempt, Session, SessionConfig, SessionEvent};

/// The result of a lookup or login the shell ran for the follower.
pub(super) enum Outcome {
    Lookup(Result<(String, Vec<SocketAddr>), Error>),
    Login(Result<LoginAttempt, Error>),
}

pub(super) type Pending = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// The tokio shell around the [`Follower`].
pub(super) struct Shell {
    pub(super) follower: Follower,
    pub(super) config: BalancedConfig,
    /// The target's name, once a lookup found it.
    pub(super) target: Option<String>,
    pub(super) session: Option<Session>,
    /// The lookup or login under way.
    pub(super) pending: Option<Pending>,
    pub(super) current: watch::Sender<Current>,
    pub(super) records: Arc<Records>,
    pub(super) events: mpsc::UnboundedSender<InitiatorEvent>,
    pub(super) stop: mpsc::UnboundedReceiver<()>,
    pub(super) stopping: bool,
    /// The last lookup or login error, returned when the first login fails.
    pub(super) last_error: Option<Error>,
    /// The ISID of every login: drawn once, so that the session after a move is the same
    /// SCSI initiator port, and with the target's shared portal group the same I_T nexus
    /// (RFC 7143 §4.4.1), keeping its persistent reservations.
    pub(super) isid: [u8; 6],
}

impl Shell {
    /// Carry out the follower's actions and feed it what happens, until `done(state)`.
    pub(super) async fn run_until(&mut self, done: impl Fn(&State) -> bool) {
        loop {
            while let Some(action) = self.follower.poll_action() {
                self.execute(action);
            }
            if done(self.follower.state()) {
                return;
            }
            let wake = self
                .follower
                .poll_timeout()
                .map(tokio::time::Instant::from_std);
            let event = tokio::select! {
                e = next_event(&mut self.session) => e,
                o = run_pending(&mut self.pending) => Some(self.outcome(o)),
                _ = self.stop.recv(), if !self.stopping => {
                    self.stopping = true;
                    Some(Event::Stop)
                }
                _ = sleep_until(wake) => Some(Event::Tick),
            };
            if let Some(e) = event {
                self.follower.handle(Instant::now(), e);
            }
        }
    }

    fn emit(&self, e: InitiatorEvent) {
        tracing::info!(event = ?e, "initiator");
        let _ = self.events.send(e);
    }

    fn execute(&mut self, action: Action) {
        match action {
            Action::StopIssuing => {
                self.current.send_if_modified(|c| match c {
                    Current::Ready(_) => {
                        *c = Current::Recovering;
                        true
                    }
                    _ => false,
                });
            }
            Action::SendLogout => {
                if let Some(s) = &self.session {
                    s.client.logout();
                }
            }
            Action::LookUpPortals => {
                let config = self.config.clone();
                let target = self.target.clone();
                self.pending = Some(Box::pin(async move {
                    Outcome::Lookup(lookup(&config, target.as_deref()).await)
                }));
            }
            Action::Login(portal) => {
                let sc = SessionConfig {
                    login: LoginConfig {
                        isid: self.isid,
                        ..LoginConfig::normal(
                            &self.config.initiator_name,
                            self.target.as_deref().unwrap_or_default(),
                        )
                    }
                    .with_auth(self.config.auth.clone()),
                    queue_depth: self.config.queue_depth,
                    timeout: self.config.timeout,
                };
                self.pending = Some(Box::pin(async move {
                    Outcome::Login(Session::login_once(portal, &sc).await)
                }));
            }
            Action::Reissue => {
                if let Some(s) = &self.session {
                    let _ = self.current.send(Current::Ready(s.client.clone()));
                }
            }
            Action::Record(Record::Move(m)) => {
                let e = m.event();
                if let Ok(mut v) = self.records.moves.lock() {
                    v.push(m);
                }
                self.emit(e);
            }
            Action::Record(Record::Reconnect(r)) => {
                let e = r.event();
                if let Ok(mut v) = self.records.reconnects.lock() {
                    v.push(r);
                }
                self.emit(e);
            }
            Action::Emit(e) => self.emit(e),
            Action::Fail(reason) => {
                let _ = self.current.send(Current::Failed(reason));
            }
            Action::Shutdown => {
                self.pending = None;
                let _ = self.current.send(Current::Shutdown);
            }
        }
    }

    /// The follower's event for a finished lookup or login.
    fn outcome(&mut self, o: Outcome) -> Event {
        match o {
            Outcome::Lookup(Ok((target, portals))) => {
                self.target = Some(target);
                Event::Discovered(portals)
            }
            Outcome::Login(Ok(LoginAttempt::LoggedIn(session))) => {
                self.session = Some(*session);
                Event::LoginOk
            }
            Outcome::Login(Ok(LoginAttempt::Redirected(to))) => Event::LoginRedirect(to),
            Outcome::Lookup(Err(e)) => {
                let reason = e.to_string();
                self.last_error = Some(e);
                Event::DiscoveryFailed(reason)
            }
            Outcome::Login(Err(e)) => {
                tracing::info!(error = %e, "login attempt failed");
                let reason = e.to_string();
                self.last_error = Some(e);
                Event::LoginFailed(reason)
            }
        }
    }
}

/// The follower's event for the next session event (`None` for those it ignores);
/// pending forever without a session.
async fn next_event(session: &mut Option<Session>) -> Option<Event> {
    let Some(s) = session else {
        return std::future::pending().await;
    };
    Some(match s.events.recv().await {
        Some(SessionEvent::FullFeature(FullFeatureEvent::LogoutRequested { within_secs })) => {
            Event::LogoutRequested {
                time2logout: Duration::from_secs(within_secs.into()),
            }
        }
        Some(SessionEvent::FullFeature(FullFeatureEvent::RenegotiationRequested)) => {
            Event::LogoutRequested {
                time2logout: Duration::ZERO,
            }
        }
        Some(SessionEvent::FullFeature(FullFeatureEvent::DropAnnounced { time2wait, .. })) => {
            Event::ConnectionLost {
                reason: "target announced a connection/session drop".into(),
                time2wait: Duration::from_secs(time2wait.into()),
            }
        }
        Some(SessionEvent::FullFeature(FullFeatureEvent::LoggedOut { .. })) => Event::LoggedOut,
        Some(SessionEvent::FullFeature(FullFeatureEvent::ScsiEvent(_))) => return None,
        Some(SessionEvent::ConnectionLost(reason)) => Event::ConnectionLost {
            reason,
            time2wait: Duration::ZERO,
        },
        Some(SessionEvent::Closed) | None => {
            *session = None;
            Event::SessionClosed
        }
    })
}

/// The outcome of the lookup or login under way; pending forever without one.
async fn run_pending(pending: &mut Option<Pending>) -> Outcome {
    let Some(p) = pending else {
        return std::future::pending().await;
    };
    let o = p.await;
    *pending = None;
    o
}

/// Sleep until `wake`; forever without one.
async fn sleep_until(wake: Option<tokio::time::Instant>) {
    match wake {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
