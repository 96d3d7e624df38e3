//! [`BalancedInitiator`]: an initiator that follows the target's rebalancing
//! (JP4675664B2 as portshift implements it). It finds the target's portals
//! through iSNS (RFC 4171 DevAttrQry, first listed portal) or a fixed portal
//! (optionally SendTargets), logs in there (following login redirects), and when
//! the target sends AsyncEvent 1 "logout requested" (RFC 7143 §11.9.1) it drains,
//! logs out, asks iSNS again, logs in through the portal now listed first, and
//! re-issues whatever did not complete: callers see a pause, not an error.
//! Connection loss and AsyncEvent 2/3/4 are recovered the same way, bounded.
//!
//! The decisions are the [`Follower`]'s, a sans-IO state machine; this module is
//! its tokio shell: it carries out the follower's actions (lookups, logins,
//! logouts, switching the session commands go to) and feeds back what happened.
//!
//! With [`BalancedConfig::reconnect_every`] the host also leaves on its own, like real
//! hosts that come and go: it drains, logs out (RFC 7143 §11.14, reason "close the
//! session"), looks the portals up again and logs in through the first one. Those
//! voluntary reconnects are recorded apart from the target-requested moves.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::cdb::ScsiRequest;
use crate::discovery::{isns_portals, send_targets};
use crate::error::{Error, TaskError};
use crate::follower::{Action, Event, Follower, FollowerConfig, Record, State};
use crate::full_feature::{FullFeatureEvent, ScsiResult};
use crate::login::LoginConfig;
use crate::session::{LoginAttempt, Session, SessionClient, SessionConfig, SessionEvent};

pub use crate::follower::{InitiatorEvent, MoveRecord, ReconnectCause, ReconnectRecord};

/// Where the target's portals come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortalSource {
    /// Query this iSNS server; log in through the first portal it lists.
    Isns(SocketAddr),
    /// Always start at this portal; with `send_targets`, ask it for the target's portals first.
    Fixed {
        /// The portal.
        portal: SocketAddr,
        /// Run a SendTargets discovery session before logging in.
        send_targets: bool,
    },
}

/// Configuration of a [`BalancedInitiator`].
#[derive(Debug, Clone)]
pub struct BalancedConfig {
    /// InitiatorName.
    pub initiator_name: String,
    /// TargetName; required with iSNS, with a fixed portal `None` takes the first SendTargets answer.
    pub target: Option<String>,
    /// Portal discovery.
    pub source: PortalSource,
    /// Outstanding task bound per session.
    pub queue_depth: usize,
    /// Timeout of each network round trip (connect, login step, iSNS query).
    pub timeout: Duration,
    /// Login attempts per recovery (with a growing back-off, at most 1 s apart).
    pub max_reconnects: u32,
    /// Re-issues of one command after retryable failures.
    pub max_retries: u32,
    /// Longest a command waits for a usable session.
    pub recovery_timeout: Duration,
    /// Leave voluntarily this long after each login: drain, log out, look up, log in again
    /// (`None` or zero: never).
    pub reconnect_every: Option<Duration>,
}

impl BalancedConfig {
    /// Defaults: queue depth 32, 5 s round trips, 30 login attempts, 16 re-issues, 60 s recovery
    /// bound, no voluntary reconnects.
    pub fn new(initiator_name: &str, target: Option<&str>, source: PortalSource) -> Self {
        BalancedConfig {
            initiator_name: initiator_name.to_string(),
            target: target.map(str::to_string),
            source,
            queue_depth: 32,
            timeout: Duration::from_secs(5),
            max_reconnects: 30,
            max_retries: 16,
            recovery_timeout: Duration::from_secs(60),
            reconnect_every: None,
        }
    }
}

pub(crate) use balancer::clock::unix_ms;

/// Where commands go now.
#[derive(Debug, Clone)]
enum Current {
    Ready(SessionClient),
    Recovering,
    Failed(String),
    Shutdown,
}

/// Moves and reconnects so far.
#[derive(Debug, Default)]
struct Records {
    moves: Mutex<Vec<MoveRecord>>,
    reconnects: Mutex<Vec<ReconnectRecord>>,
}

/// What the [`BalancedInitiator`] handles see of the follower task: where commands go,
/// the records, and the switch that stops it.
#[derive(Debug)]
struct FollowerView {
    config: BalancedConfig,
    target: String,
    current: watch::Receiver<Current>,
    records: Arc<Records>,
    stop: mpsc::UnboundedSender<()>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// A cloneable initiator handle that survives portal moves (see module docs).
#[derive(Debug, Clone)]
pub struct BalancedInitiator {
    view: Arc<FollowerView>,
}

async fn lookup(
    config: &BalancedConfig,
    target: Option<&str>,
) -> Result<(String, Vec<SocketAddr>), Error> {
    match &config.source {
        PortalSource::Isns(server) => {
            let target = target
                .ok_or_else(|| Error::Discovery("a target name is required with iSNS".into()))?;
            let portals =
                isns_portals(*server, &config.initiator_name, target, config.timeout).await?;
            Ok((target.to_string(), portals))
        }
        PortalSource::Fixed {
            portal,
            send_targets: false,
        } => {
            let target = target.ok_or_else(|| {
                Error::Discovery("a target name is required without SendTargets".into())
            })?;
            Ok((target.to_string(), vec![*portal]))
        }
        PortalSource::Fixed {
            portal,
            send_targets: true,
        } => {
            let found = send_targets(*portal, &config.initiator_name, config.timeout).await?;
            let t = match target {
                Some(name) => found.into_iter().find(|t| t.name == name),
                None => found.into_iter().next(),
            }
            .ok_or_else(|| {
                Error::Discovery(format!("SendTargets at {portal}: target not listed"))
            })?;
            // Log in where we asked; the target redirects if it wants us elsewhere.
            let mut portals = vec![*portal];
            portals.extend(t.portals.into_iter().filter(|p| p != portal));
            Ok((t.name, portals))
        }
    }
}

/// The result of a lookup or login the shell ran for the follower.
enum Outcome {
    Lookup(Result<(String, Vec<SocketAddr>), Error>),
    Login(Result<LoginAttempt, Error>),
}

type Pending = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// The tokio shell around the [`Follower`].
struct Shell {
    follower: Follower,
    config: BalancedConfig,
    /// The target's name, once a lookup found it.
    target: Option<String>,
    session: Option<Session>,
    /// The lookup or login under way.
    pending: Option<Pending>,
    current: watch::Sender<Current>,
    records: Arc<Records>,
    events: mpsc::UnboundedSender<InitiatorEvent>,
    stop: mpsc::UnboundedReceiver<()>,
    stopping: bool,
    /// The last lookup or login error, returned when the first login fails.
    last_error: Option<Error>,
}

impl BalancedInitiator {
    /// Discover, log in, and start following the target. Returns the handle and its event stream.
    pub async fn connect(
        config: BalancedConfig,
    ) -> Result<(BalancedInitiator, mpsc::UnboundedReceiver<InitiatorEvent>), Error> {
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let (cur_tx, cur_rx) = watch::channel(Current::Recovering);
        let (stop_tx, stop_rx) = mpsc::unbounded_channel();
        let follower = Follower::new(
            FollowerConfig {
                isns: matches!(config.source, PortalSource::Isns(_)),
                max_attempts: config.max_reconnects.max(1),
                reconnect_every: config.reconnect_every,
            },
            Instant::now(),
            unix_ms(),
        );
        let records = Arc::new(Records::default());
        let mut shell = Shell {
            follower,
            target: config.target.clone(),
            config: config.clone(),
            session: None,
            pending: None,
            current: cur_tx,
            records: records.clone(),
            events: ev_tx,
            stop: stop_rx,
            stopping: false,
            last_error: None,
        };
        shell
            .run_until(|s| !matches!(s, State::Discovering { .. } | State::LoggingIn { .. }))
            .await;
        let target = match (shell.follower.state(), shell.target.clone()) {
            (State::LoggedIn { .. }, Some(target)) => target,
            _ => return Err(shell.last_error.take().unwrap_or(Error::Closed)),
        };
        let view = Arc::new(FollowerView {
            config,
            target,
            current: cur_rx,
            records,
            stop: stop_tx,
            task: Mutex::new(None),
        });
        let task = tokio::spawn(async move {
            shell
                .run_until(|s| matches!(s, State::Stopped | State::Failed { .. }))
                .await
        });
        if let Ok(mut t) = view.task.lock() {
            *t = Some(task);
        }
        Ok((BalancedInitiator { view }, ev_rx))
    }

    /// The target's name (from the configuration or SendTargets).
    pub fn target(&self) -> &str {
        &self.view.target
    }

    /// The portal of the current session, if one is up.
    pub fn portal(&self) -> Option<SocketAddr> {
        match &*self.view.current.borrow() {
            Current::Ready(h) => Some(h.portal()),
            _ => None,
        }
    }

    /// Why recovery gave up, once it has.
    pub fn failure(&self) -> Option<String> {
        match &*self.view.current.borrow() {
            Current::Failed(why) => Some(why.clone()),
            _ => None,
        }
    }

    /// Target-requested moves so far.
    pub fn moves(&self) -> Vec<MoveRecord> {
        self.view
            .records
            .moves
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }

    /// Reconnects the target did not ask for (voluntary, connection loss) so far.
    pub fn reconnects(&self) -> Vec<ReconnectRecord> {
        self.view
            .records
            .reconnects
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }

    async fn ready(&self) -> Result<SessionClient, TaskError> {
        let mut rx = self.view.current.clone();
        let deadline = tokio::time::Instant::now() + self.view.config.recovery_timeout;
        loop {
            match &*rx.borrow_and_update() {
                Current::Ready(h) if !h.is_closed() => return Ok(h.clone()),
                Current::Failed(_) | Current::Shutdown => return Err(TaskError::Unfinished),
                _ => {}
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return Err(TaskError::Unfinished),
            }
        }
    }

    /// Run one command, re-issuing it on the next session after a logout request,
    /// drop or connection loss (and after UNIT ATTENTION / BUSY), at most `max_retries` times.
    pub async fn execute(&self, req: ScsiRequest) -> Result<ScsiResult, TaskError> {
        let mut attempt = 0;
        loop {
            let h = self.ready().await?;
            match h.execute(req.clone()).await {
                Err(e) if e.is_retryable() && attempt < self.view.config.max_retries => {
                    attempt += 1;
                    if e != TaskError::Unfinished {
                        tokio::time::sleep(Duration::from_millis(10 * attempt as u64)).await;
                    }
                }
                r => return r,
            }
        }
    }

    /// Log out of the current session and stop following the target (bounded by `timeout`).
    pub async fn shutdown(&self, timeout: Duration) {
        let _ = self.view.stop.send(());
        let task = self.view.task.lock().ok().and_then(|mut m| m.take());
        if let Some(t) = task {
            let _ = tokio::time::timeout(timeout, t).await;
        }
    }
}

impl Shell {
    /// Carry out the follower's actions and feed it what happens, until `done(state)`.
    async fn run_until(&mut self, done: impl Fn(&State) -> bool) {
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
                    login: LoginConfig::normal(
                        &self.config.initiator_name,
                        self.target.as_deref().unwrap_or_default(),
                    ),
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
                let (from, to, pause_ms) = (m.from, m.to, m.pause_ms);
                if let Ok(mut v) = self.records.moves.lock() {
                    v.push(m);
                }
                self.emit(InitiatorEvent::Moved { from, to, pause_ms });
            }
            Action::Record(Record::Reconnect(r)) => {
                let e = InitiatorEvent::Reconnected {
                    from: r.from,
                    to: r.to,
                    cause: r.cause,
                    pause_ms: r.pause_ms,
                };
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
