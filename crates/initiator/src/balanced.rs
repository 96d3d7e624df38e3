//! [`BalancedInitiator`]: an initiator that follows the target's rebalancing
//! (JP4675664B2 as portshift implements it). It finds the target's portals
//! through iSNS (RFC 4171 DevAttrQry, first listed portal) or a fixed portal
//! (optionally SendTargets), logs in there (following login redirects), and when
//! the target sends AsyncEvent 1 "logout requested" (RFC 7143 §11.9.1) it drains,
//! logs out, asks iSNS again, logs in through the portal now listed first, and
//! re-issues whatever did not complete: callers see a pause, not an error.
//! Connection loss and AsyncEvent 2/3/4 are recovered the same way, bounded.
//!
//! With [`BalancedConfig::reconnect_every`] the host also leaves on its own, like real
//! hosts that come and go: it drains, logs out (RFC 7143 §11.14, reason "close the
//! session"), looks the portals up again and logs in through the first one. Those
//! voluntary reconnects are recorded apart from the target-requested moves.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::cdb::ScsiRequest;
use crate::discovery::{isns_portals, send_targets};
use crate::error::{Error, TaskError};
use crate::full_feature::{FullFeatureEvent, ScsiResult};
use crate::login::LoginConfig;
use crate::session::{Session, SessionClient, SessionConfig, SessionEvent};

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

/// What the balanced initiator did, in order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum InitiatorEvent {
    /// Initial discovery result (iSNS or SendTargets or the fixed portal).
    Discovered {
        /// Portals in the order given.
        portals: Vec<SocketAddr>,
    },
    /// A session is up.
    LoggedIn {
        /// Where.
        portal: SocketAddr,
        /// The portal that redirected us there, if any.
        redirected_from: Option<SocketAddr>,
    },
    /// The target asked for a logout (AsyncEvent 1, or 4 handled alike).
    LogoutRequested {
        /// The session's portal.
        portal: SocketAddr,
    },
    /// The session logged out.
    LoggedOut {
        /// The session's portal.
        portal: SocketAddr,
    },
    /// The connection failed or the target announced a drop.
    ConnectionLost {
        /// The session's portal.
        portal: SocketAddr,
        /// Why.
        reason: String,
    },
    /// iSNS was asked again during recovery.
    IsnsQueried {
        /// Portals in the order given.
        portals: Vec<SocketAddr>,
    },
    /// The host leaves voluntarily ([`BalancedConfig::reconnect_every`]): drain and log out.
    Leaving {
        /// The session's portal.
        portal: SocketAddr,
    },
    /// After the target's logout request, the session continues here.
    Moved {
        /// Old portal.
        from: SocketAddr,
        /// New portal.
        to: SocketAddr,
        /// Milliseconds between the logout request and the new login.
        pause_ms: u64,
    },
    /// After a voluntary logout or a connection loss, the session continues here.
    Reconnected {
        /// Old portal.
        from: SocketAddr,
        /// New portal (the same or another).
        to: SocketAddr,
        /// Why the old session ended.
        cause: ReconnectCause,
        /// Milliseconds of interruption.
        pause_ms: u64,
    },
    /// Recovery gave up; commands fail from now on.
    Failed {
        /// Why.
        reason: String,
    },
}

/// One target-requested move (AsyncEvent 1 "logout requested", or 4), as recorded for reports.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MoveRecord {
    /// When the logout request arrived, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Old portal.
    pub from: SocketAddr,
    /// New portal.
    pub to: SocketAddr,
    /// Milliseconds between the logout request and the new login.
    pub pause_ms: u64,
}

/// Why a session ended without a request from the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReconnectCause {
    /// The host left voluntarily ([`BalancedConfig::reconnect_every`]).
    Voluntary,
    /// The connection failed, or the target announced a drop (AsyncEvent 2/3).
    ConnectionLost,
}

/// One reconnect the target did not ask for, as recorded for reports.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReconnectRecord {
    /// When the old session started ending, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Old portal.
    pub from: SocketAddr,
    /// New portal (the same or another).
    pub to: SocketAddr,
    /// Why the old session ended.
    pub cause: ReconnectCause,
    /// Milliseconds between the end of the old session starting and the new login.
    pub pause_ms: u64,
}

/// Why the manager is looking for a new session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// The target asked for a logout (a move).
    Requested,
    /// Not asked for by the target.
    Unrequested(ReconnectCause),
}

pub(crate) use balancer::clock::unix_ms;

#[derive(Debug, Clone)]
enum Current {
    Ready(SessionClient),
    Recovering,
    Failed(String),
    Shutdown,
}

#[derive(Debug)]
struct Shared {
    config: BalancedConfig,
    target: String,
    current: watch::Receiver<Current>,
    moves: Mutex<Vec<MoveRecord>>,
    reconnects: Mutex<Vec<ReconnectRecord>>,
    stop: mpsc::UnboundedSender<()>,
    manager: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// A cloneable initiator handle that survives portal moves (see module docs).
#[derive(Debug, Clone)]
pub struct BalancedInitiator {
    shared: Arc<Shared>,
}

/// The task that follows the target: watches the session, recovers, records moves.
struct Manager {
    /// Configuration, target name and the records, shared with the handles.
    shared: Arc<Shared>,
    current: watch::Sender<Current>,
    events: mpsc::UnboundedSender<InitiatorEvent>,
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

async fn login_first(
    config: &BalancedConfig,
    target: &str,
    portals: &[SocketAddr],
) -> Result<Session, Error> {
    let sc = SessionConfig {
        login: LoginConfig::normal(&config.initiator_name, target),
        queue_depth: config.queue_depth,
        timeout: config.timeout,
    };
    let mut last = Error::Discovery(format!("no portals listed for {target}"));
    for p in portals {
        match Session::login(*p, &sc).await {
            Ok(s) => return Ok(s),
            Err(e) => {
                tracing::info!(portal = %p, error = %e, "login attempt failed");
                last = e;
            }
        }
    }
    Err(last)
}

impl BalancedInitiator {
    /// Discover, log in, and start following the target. Returns the handle and its event stream.
    pub async fn connect(
        config: BalancedConfig,
    ) -> Result<(BalancedInitiator, mpsc::UnboundedReceiver<InitiatorEvent>), Error> {
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let (target, portals) = lookup(&config, config.target.as_deref()).await?;
        let _ = ev_tx.send(InitiatorEvent::Discovered {
            portals: portals.clone(),
        });
        let session = login_first(&config, &target, &portals).await?;
        let _ = ev_tx.send(InitiatorEvent::LoggedIn {
            portal: session.info.portal,
            redirected_from: session.info.redirected_from,
        });
        let (cur_tx, cur_rx) = watch::channel(Current::Ready(session.client.clone()));
        let (stop_tx, stop_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            config,
            target,
            current: cur_rx,
            moves: Mutex::new(Vec::new()),
            reconnects: Mutex::new(Vec::new()),
            stop: stop_tx,
            manager: Mutex::new(None),
        });
        let manager = Manager {
            shared: shared.clone(),
            current: cur_tx,
            events: ev_tx,
        };
        let task = tokio::spawn(manager.run(session, stop_rx));
        if let Ok(mut m) = shared.manager.lock() {
            *m = Some(task);
        }
        Ok((BalancedInitiator { shared }, ev_rx))
    }

    /// The target's name (from the configuration or SendTargets).
    pub fn target(&self) -> &str {
        &self.shared.target
    }

    /// The portal of the current session, if one is up.
    pub fn portal(&self) -> Option<SocketAddr> {
        match &*self.shared.current.borrow() {
            Current::Ready(h) => Some(h.portal()),
            _ => None,
        }
    }

    /// Why recovery gave up, once it has.
    pub fn failure(&self) -> Option<String> {
        match &*self.shared.current.borrow() {
            Current::Failed(why) => Some(why.clone()),
            _ => None,
        }
    }

    /// Target-requested moves so far.
    pub fn moves(&self) -> Vec<MoveRecord> {
        self.shared
            .moves
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }

    /// Reconnects the target did not ask for (voluntary, connection loss) so far.
    pub fn reconnects(&self) -> Vec<ReconnectRecord> {
        self.shared
            .reconnects
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }

    async fn ready(&self) -> Result<SessionClient, TaskError> {
        let mut rx = self.shared.current.clone();
        let deadline = tokio::time::Instant::now() + self.shared.config.recovery_timeout;
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
                Err(e) if e.is_retryable() && attempt < self.shared.config.max_retries => {
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
        let _ = self.shared.stop.send(());
        let task = self.shared.manager.lock().ok().and_then(|mut m| m.take());
        if let Some(t) = task {
            let _ = tokio::time::timeout(timeout, t).await;
        }
    }
}

impl Manager {
    fn emit(&self, e: InitiatorEvent) {
        tracing::info!(event = ?e, "initiator");
        let _ = self.events.send(e);
    }

    async fn run(self, mut session: Session, mut stop: mpsc::UnboundedReceiver<()>) {
        let mut stopping = false;
        loop {
            let portal = session.info.portal;
            // When this session started ending (monotonic, and wall clock for reports).
            let mut since: Option<(Instant, u64)> = None;
            let mut requested = false;
            let mut leaving = false;
            let mut wait = Duration::ZERO;
            let leave_at = self
                .shared
                .config
                .reconnect_every
                .filter(|d| !d.is_zero())
                .map(|d| tokio::time::Instant::now() + d);
            let leave = tokio::time::sleep_until(
                leave_at
                    .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86_400)),
            );
            tokio::pin!(leave);
            // Follow this session until it is closed.
            loop {
                let ev = tokio::select! {
                    e = session.events.recv() => e,
                    _ = stop.recv(), if !stopping => {
                        stopping = true;
                        let _ = self.current.send(Current::Shutdown);
                        session.client.logout();
                        continue;
                    }
                    _ = &mut leave, if leave_at.is_some() && !leaving && !stopping && since.is_none() => {
                        // Voluntary reconnect: new commands wait for the next session, the
                        // session drains what it has in flight and logs out.
                        leaving = true;
                        since = Some((Instant::now(), unix_ms()));
                        let _ = self.current.send(Current::Recovering);
                        self.emit(InitiatorEvent::Leaving { portal });
                        session.client.logout();
                        continue;
                    }
                };
                match ev {
                    Some(SessionEvent::FullFeature(
                        FullFeatureEvent::LogoutRequested { .. }
                        | FullFeatureEvent::RenegotiationRequested,
                    )) => {
                        // A request that arrives while we are already leaving still ends this
                        // session at the target's request: it is a move, with its own start.
                        requested = true;
                        if leaving || since.is_none() {
                            since = Some((Instant::now(), unix_ms()));
                        }
                        if !stopping {
                            let _ = self.current.send(Current::Recovering);
                        }
                        self.emit(InitiatorEvent::LogoutRequested { portal });
                    }
                    Some(SessionEvent::FullFeature(FullFeatureEvent::DropAnnounced {
                        time2wait,
                        ..
                    })) => {
                        since.get_or_insert_with(|| (Instant::now(), unix_ms()));
                        wait = Duration::from_secs(time2wait.min(5) as u64);
                        self.emit(InitiatorEvent::ConnectionLost {
                            portal,
                            reason: "target announced a connection/session drop".into(),
                        });
                    }
                    Some(SessionEvent::FullFeature(FullFeatureEvent::LoggedOut { .. })) => {
                        self.emit(InitiatorEvent::LoggedOut { portal });
                    }
                    Some(SessionEvent::FullFeature(FullFeatureEvent::ScsiEvent(_))) => {}
                    Some(SessionEvent::ConnectionLost(reason)) => {
                        since.get_or_insert_with(|| (Instant::now(), unix_ms()));
                        self.emit(InitiatorEvent::ConnectionLost { portal, reason });
                    }
                    Some(SessionEvent::Closed) | None => break,
                }
            }
            if stopping {
                return;
            }
            let since = since.unwrap_or_else(|| (Instant::now(), unix_ms()));
            let ending = if requested {
                Ending::Requested
            } else if leaving {
                Ending::Unrequested(ReconnectCause::Voluntary)
            } else {
                Ending::Unrequested(ReconnectCause::ConnectionLost)
            };
            if !matches!(*self.current.borrow(), Current::Shutdown) {
                let _ = self.current.send(Current::Recovering);
            }
            tokio::time::sleep(wait).await;
            match self.recover(portal, since, ending).await {
                Ok(s) => session = s,
                Err(e) => {
                    let reason = e.to_string();
                    self.emit(InitiatorEvent::Failed {
                        reason: reason.clone(),
                    });
                    let _ = self.current.send(Current::Failed(reason));
                    return;
                }
            }
        }
    }

    /// Records how the session continued and announces it.
    fn record(&self, from: SocketAddr, to: SocketAddr, since: (Instant, u64), ending: Ending) {
        let pause_ms = since.0.elapsed().as_millis() as u64;
        let at_ms = since.1;
        match ending {
            Ending::Requested => {
                if let Ok(mut m) = self.shared.moves.lock() {
                    m.push(MoveRecord {
                        at_ms,
                        from,
                        to,
                        pause_ms,
                    });
                }
                self.emit(InitiatorEvent::Moved { from, to, pause_ms });
            }
            Ending::Unrequested(cause) => {
                if let Ok(mut m) = self.shared.reconnects.lock() {
                    m.push(ReconnectRecord {
                        at_ms,
                        from,
                        to,
                        cause,
                        pause_ms,
                    });
                }
                self.emit(InitiatorEvent::Reconnected {
                    from,
                    to,
                    cause,
                    pause_ms,
                });
            }
        }
    }

    async fn recover(
        &self,
        old: SocketAddr,
        since: (Instant, u64),
        ending: Ending,
    ) -> Result<Session, Error> {
        let mut last = Error::Closed;
        for attempt in 0..self.shared.config.max_reconnects.max(1) {
            if attempt > 0 {
                let backoff = Duration::from_millis((50 * attempt as u64).min(1000));
                tokio::time::sleep(backoff).await;
            }
            let portals = match lookup(&self.shared.config, Some(&self.shared.target)).await {
                Ok((_, p)) => p,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            self.emit(match self.shared.config.source {
                PortalSource::Isns(_) => InitiatorEvent::IsnsQueried {
                    portals: portals.clone(),
                },
                PortalSource::Fixed { .. } => InitiatorEvent::Discovered {
                    portals: portals.clone(),
                },
            });
            match login_first(&self.shared.config, &self.shared.target, &portals).await {
                Ok(s) => {
                    self.emit(InitiatorEvent::LoggedIn {
                        portal: s.info.portal,
                        redirected_from: s.info.redirected_from,
                    });
                    self.record(old, s.info.portal, since, ending);
                    let _ = self.current.send(Current::Ready(s.client.clone()));
                    return Ok(s);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}
