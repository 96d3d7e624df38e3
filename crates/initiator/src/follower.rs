//! [`Follower`]: how an initiator follows the target's rebalancing (JP4675664B2
//! as portshift implements it), as a sans-IO state machine with virtual time.
//!
//! The caller feeds [`Event`]s with the current [`Instant`] (what the session
//! reported, how a portal lookup or a login went, that time passed) and carries
//! out the [`Action`]s the follower queues (stop issuing, log out, look the
//! portals up, log in at a portal, re-issue, record a move...). It never sleeps:
//! [`Follower::poll_timeout`] says when it next wants a [`Event::Tick`].
//!
//! One session's life: `LoggedIn` → (logout requested by the target, AsyncEvent 1
//! or 4, RFC 7143 §11.9.1; or a voluntary leave) `Draining` → (Logout Response)
//! `LoggedOut` → (connection closed) `Discovering` → `LoggingIn` (following login
//! redirects, Status-Class 1, and the other listed portals) → `LoggedIn`, where
//! the move or reconnect is recorded with its pause. A lost connection goes
//! `Disconnected` → `Discovering`; failed rounds back off (`BackingOff`) and,
//! after [`FollowerConfig::max_attempts`], end in `Failed`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

mod records;
mod signals;
#[cfg(test)]
mod tests;

pub use records::{InitiatorEvent, MoveRecord, ReconnectCause, ReconnectRecord};
pub use signals::{Action, Event, Record};

/// Most login redirects followed in a row (RFC 7143 §11.13.5, Status-Class 1).
pub const MAX_REDIRECTS: u32 = 4;
/// Longest Time2Wait honoured after the target announced a drop (AsyncEvent 2/3).
pub const MAX_TIME2WAIT: Duration = Duration::from_secs(5);
/// Longest back-off between two rounds of lookup and login.
pub const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Back-off before round `attempt` (1-based): 50 ms per round, at most [`MAX_BACKOFF`].
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(50 * u64::from(attempt)).min(MAX_BACKOFF)
}

/// What the follower needs to know of the initiator's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowerConfig {
    /// Portals come from iSNS: lookups during recovery are reported as
    /// [`InitiatorEvent::IsnsQueried`] (otherwise as [`InitiatorEvent::Discovered`]).
    pub isns: bool,
    /// Rounds of lookup and login per recovery (the first login gets one round).
    pub max_attempts: u32,
    /// Leave voluntarily this long after each login (`None` or zero: never).
    pub reconnect_every: Option<Duration>,
}

/// Where the follower is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Looking the target's portals up ([`Action::LookUpPortals`]); round `attempt` (0-based).
    Discovering {
        /// Round.
        attempt: u32,
    },
    /// Logging in at `portal` ([`Action::Login`]).
    LoggingIn {
        /// Where.
        portal: SocketAddr,
        /// Round.
        attempt: u32,
        /// The portal that redirected us here, if a redirect did.
        redirected_from: Option<SocketAddr>,
        /// Redirects followed in this login.
        redirects: u32,
    },
    /// A session is up and issuing commands.
    LoggedIn {
        /// Where.
        portal: SocketAddr,
        /// Since when.
        since: Instant,
    },
    /// No new commands; the session finishes those in flight, then logs out.
    Draining {
        /// The session's portal.
        portal: SocketAddr,
        /// When the target asked (or the host decided) to leave.
        requested_at: Instant,
        /// The target's deadline for the logout (AsyncEvent 1 Parameter3), `None`
        /// when the host leaves on its own.
        time2logout: Option<Duration>,
    },
    /// The Logout Response arrived; the connection is closing.
    LoggedOut {
        /// The session's portal.
        portal: SocketAddr,
    },
    /// The connection failed or the target announced a drop; the session is closing.
    Disconnected {
        /// The session's portal.
        portal: SocketAddr,
    },
    /// Waiting before the next round (back-off, or the target's Time2Wait).
    BackingOff {
        /// Until when.
        until: Instant,
        /// The round that starts then.
        attempt: u32,
    },
    /// Asked to stop; the session logs out and closes.
    Stopping {
        /// The session's portal.
        portal: SocketAddr,
    },
    /// Stopped: nothing more will happen.
    Stopped,
    /// Recovery gave up: commands fail from now on.
    Failed {
        /// Why.
        reason: String,
    },
}

/// Why the current session is ending, and since when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Interruption {
    from: SocketAddr,
    started: Instant,
    /// `None`: the target asked (a move); else why the host reconnects.
    cause: Option<ReconnectCause>,
}

/// The state machine (see the module docs).
#[derive(Debug)]
pub struct Follower {
    config: FollowerConfig,
    state: State,
    actions: VecDeque<Action>,
    /// Portals listed after the one being tried, in order.
    candidates: VecDeque<SocketAddr>,
    interruption: Option<Interruption>,
    /// Wait this long before the next lookup (the target's Time2Wait).
    time2wait: Duration,
    /// When the current session leaves voluntarily.
    leave_at: Option<Instant>,
    /// A session was up before: recoveries get `max_attempts` rounds.
    recovering: bool,
    /// The wall clock at `anchor.0`, to date records in Unix milliseconds.
    anchor: (Instant, u64),
}

impl Follower {
    /// Start by looking the portals up. `now` and `unix_ms` are the same moment on the
    /// monotonic and the wall clock.
    pub fn new(config: FollowerConfig, now: Instant, unix_ms: u64) -> Follower {
        let mut f = Follower {
            config,
            state: State::Discovering { attempt: 0 },
            actions: VecDeque::new(),
            candidates: VecDeque::new(),
            interruption: None,
            time2wait: Duration::ZERO,
            leave_at: None,
            recovering: false,
            anchor: (now, unix_ms),
        };
        f.actions.push_back(Action::LookUpPortals);
        f
    }

    /// Where the follower is.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The next action to carry out.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When the follower wants an [`Event::Tick`]; `None`: only other events matter.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::LoggedIn { .. } => self.leave_at,
            State::BackingOff { until, .. } => Some(until),
            _ => None,
        }
    }

    /// The portal of the session, while there is one.
    fn session_portal(&self) -> Option<SocketAddr> {
        match self.state {
            State::LoggedIn { portal, .. }
            | State::Draining { portal, .. }
            | State::LoggedOut { portal }
            | State::Disconnected { portal }
            | State::Stopping { portal } => Some(portal),
            _ => None,
        }
    }

    fn act(&mut self, a: Action) {
        self.actions.push_back(a);
    }

    fn emit(&mut self, e: InitiatorEvent) {
        self.act(Action::Emit(e));
    }

    /// Feed one event that happened at `now`.
    pub fn handle(&mut self, now: Instant, event: Event) {
        match event {
            Event::LogoutRequested { time2logout } => self.on_logout_requested(now, time2logout),
            Event::LoggedOut => {
                if let Some(portal) = self.session_portal() {
                    self.emit(InitiatorEvent::LoggedOut { portal });
                    if matches!(self.state, State::Draining { .. } | State::LoggedIn { .. }) {
                        self.state = State::LoggedOut { portal };
                    }
                }
            }
            Event::ConnectionLost { reason, time2wait } => {
                let Some(portal) = self.session_portal() else {
                    return;
                };
                self.interrupted(now, portal, Some(ReconnectCause::ConnectionLost));
                self.time2wait = time2wait.min(MAX_TIME2WAIT);
                self.emit(InitiatorEvent::ConnectionLost { portal, reason });
                if matches!(self.state, State::LoggedIn { .. }) {
                    self.act(Action::StopIssuing);
                }
                if !matches!(self.state, State::Stopping { .. }) {
                    self.state = State::Disconnected { portal };
                }
            }
            Event::SessionClosed => match self.state {
                State::Stopping { .. } => self.state = State::Stopped,
                _ => {
                    if let Some(portal) = self.session_portal() {
                        self.interrupted(now, portal, Some(ReconnectCause::ConnectionLost));
                        self.act(Action::StopIssuing);
                        self.recover(now);
                    }
                }
            },
            Event::Discovered(portals) => self.on_discovered(now, portals),
            Event::DiscoveryFailed(reason) => {
                if let State::Discovering { attempt } = self.state {
                    self.round_failed(now, attempt, reason);
                }
            }
            Event::LoginOk => self.on_login_ok(now),
            Event::LoginRedirect(to) => self.on_redirect(now, to),
            Event::LoginFailed(reason) => self.on_login_failed(now, reason),
            Event::Stop => match self.session_portal() {
                Some(_) if matches!(self.state, State::Stopping { .. }) => {}
                Some(portal) => {
                    self.state = State::Stopping { portal };
                    self.act(Action::Shutdown);
                    self.act(Action::SendLogout);
                }
                None if matches!(self.state, State::Stopped | State::Failed { .. }) => {}
                None => {
                    self.state = State::Stopped;
                    self.act(Action::Shutdown);
                }
            },
            Event::Tick => self.on_tick(now),
        }
    }

    /// Remember why the session ends: the first cause wins, except that a request
    /// from the target makes it a move, timed from that request.
    fn interrupted(&mut self, now: Instant, from: SocketAddr, cause: Option<ReconnectCause>) {
        match self.interruption {
            Some(i) if i.cause.is_none() || cause.is_some() => {}
            _ => {
                self.interruption = Some(Interruption {
                    from,
                    started: now,
                    cause,
                })
            }
        }
    }

    fn on_logout_requested(&mut self, now: Instant, time2logout: Duration) {
        let Some(portal) = self.session_portal() else {
            return;
        };
        self.emit(InitiatorEvent::LogoutRequested { portal });
        if matches!(self.state, State::Stopping { .. }) {
            return;
        }
        let was_move = self.interruption.is_some_and(|i| i.cause.is_none());
        self.interrupted(now, portal, None);
        match self.state {
            State::LoggedIn { .. } => {
                self.act(Action::StopIssuing);
                self.act(Action::SendLogout);
            }
            State::Draining { .. } if was_move => return,
            State::Draining { .. } => {}
            _ => return,
        }
        self.state = State::Draining {
            portal,
            requested_at: now,
            time2logout: Some(time2logout),
        };
    }

    fn on_tick(&mut self, now: Instant) {
        match self.state {
            State::LoggedIn { portal, .. } if self.leave_at.is_some_and(|t| t <= now) => {
                self.leave_at = None;
                self.interrupted(now, portal, Some(ReconnectCause::Voluntary));
                self.state = State::Draining {
                    portal,
                    requested_at: now,
                    time2logout: None,
                };
                self.act(Action::StopIssuing);
                self.emit(InitiatorEvent::Leaving { portal });
                self.act(Action::SendLogout);
            }
            State::BackingOff { until, attempt } if until <= now => self.discover(attempt),
            _ => {}
        }
    }

    /// The session is gone: wait the target's Time2Wait, then look the portals up.
    fn recover(&mut self, now: Instant) {
        self.recovering = true;
        let wait = std::mem::take(&mut self.time2wait);
        if wait.is_zero() {
            self.discover(0);
        } else {
            self.state = State::BackingOff {
                until: now + wait,
                attempt: 0,
            };
        }
    }

    fn discover(&mut self, attempt: u32) {
        self.state = State::Discovering { attempt };
        self.act(Action::LookUpPortals);
    }

    fn on_discovered(&mut self, now: Instant, portals: Vec<SocketAddr>) {
        let State::Discovering { attempt } = self.state else {
            return;
        };
        self.emit(if self.recovering && self.config.isns {
            InitiatorEvent::IsnsQueried {
                portals: portals.clone(),
            }
        } else {
            InitiatorEvent::Discovered {
                portals: portals.clone(),
            }
        });
        self.candidates = portals.into();
        match self.candidates.pop_front() {
            Some(portal) => self.log_in(portal, attempt, None, 0),
            None => self.round_failed(now, attempt, "no portals listed".into()),
        }
    }

    fn log_in(
        &mut self,
        portal: SocketAddr,
        attempt: u32,
        redirected_from: Option<SocketAddr>,
        redirects: u32,
    ) {
        self.state = State::LoggingIn {
            portal,
            attempt,
            redirected_from,
            redirects,
        };
        self.act(Action::Login(portal));
    }

    fn on_redirect(&mut self, now: Instant, to: SocketAddr) {
        let State::LoggingIn {
            portal,
            attempt,
            redirected_from,
            redirects,
        } = self.state
        else {
            return;
        };
        if redirects >= MAX_REDIRECTS {
            return self.on_login_failed(now, format!("too many login redirects (last to {to})"));
        }
        self.log_in(
            to,
            attempt,
            Some(redirected_from.unwrap_or(portal)),
            redirects + 1,
        );
    }

    fn on_login_failed(&mut self, now: Instant, reason: String) {
        let State::LoggingIn { attempt, .. } = self.state else {
            return;
        };
        match self.candidates.pop_front() {
            Some(next) => self.log_in(next, attempt, None, 0),
            None => self.round_failed(now, attempt, reason),
        }
    }

    /// A round of lookup and login failed: back off, or give up.
    fn round_failed(&mut self, now: Instant, attempt: u32, reason: String) {
        let rounds = if self.recovering {
            self.config.max_attempts.max(1)
        } else {
            1
        };
        let next = attempt + 1;
        if next >= rounds {
            self.state = State::Failed {
                reason: reason.clone(),
            };
            self.emit(InitiatorEvent::Failed {
                reason: reason.clone(),
            });
            self.act(Action::Fail(reason));
        } else {
            self.state = State::BackingOff {
                until: now + backoff(next),
                attempt: next,
            };
        }
    }

    fn on_login_ok(&mut self, now: Instant) {
        let State::LoggingIn {
            portal,
            redirected_from,
            ..
        } = self.state
        else {
            return;
        };
        self.candidates.clear();
        self.emit(InitiatorEvent::LoggedIn {
            portal,
            redirected_from,
        });
        if let Some(i) = self.interruption.take() {
            let pause_ms = now.saturating_duration_since(i.started).as_millis() as u64;
            let at_ms = self.anchor.1
                + i.started
                    .saturating_duration_since(self.anchor.0)
                    .as_millis() as u64;
            let (from, to) = (i.from, portal);
            self.act(Action::Record(match i.cause {
                None => Record::Move(MoveRecord {
                    at_ms,
                    from,
                    to,
                    pause_ms,
                }),
                Some(cause) => Record::Reconnect(ReconnectRecord {
                    at_ms,
                    from,
                    to,
                    cause,
                    pause_ms,
                }),
            }));
        }
        self.state = State::LoggedIn { portal, since: now };
        self.leave_at = self
            .config
            .reconnect_every
            .filter(|d| !d.is_zero())
            .map(|d| now + d);
        self.act(Action::Reissue);
    }
}
