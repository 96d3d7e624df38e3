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

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::cdb::ScsiRequest;
use crate::discovery::isns_portals;
use crate::error::{Error, TaskError};
use crate::follower::{Follower, FollowerConfig, State};
use crate::full_feature::ScsiResult;
use crate::session::SessionClient;

pub use crate::follower::{InitiatorEvent, MoveRecord, ReconnectCause, ReconnectRecord};

/// Where the target's portals come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortalSource {
    /// Query this iSNS server; log in through the first portal it lists.
    Isns(SocketAddr),
    /// Query the first of these iSNS servers that answers; log in through the first portal
    /// it lists.
    IsnsServers(crate::discovery::IsnsServers),
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
    /// CHAP of the normal sessions (RFC 7143 §12.1.3); None: no authentication.
    pub auth: Option<crate::login::ChapAuth>,
    /// CHAP of the discovery (SendTargets) sessions.
    pub discovery_auth: Option<crate::login::ChapAuth>,
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
            auth: None,
            discovery_auth: None,
        }
    }
}

pub(crate) use balancer::clock::unix_ms;

mod shell;
use shell::Shell;

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
        PortalSource::IsnsServers(servers) => {
            let target = target
                .ok_or_else(|| Error::Discovery("a target name is required with iSNS".into()))?;
            let (_, portals) = servers.portals(&config.initiator_name, target).await?;
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
            let found = crate::discovery::send_targets_with(
                *portal,
                crate::login::LoginConfig::discovery(&config.initiator_name)
                    .with_auth(config.discovery_auth.clone()),
                config.timeout,
            )
            .await?;
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
                isns: matches!(
                    config.source,
                    PortalSource::Isns(_) | PortalSource::IsnsServers(_)
                ),
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
            isid: crate::login::random_isid(),
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
        // The common case, a session up: no receiver to clone.
        if let Current::Ready(h) = &*self.view.current.borrow()
            && !h.is_closed()
        {
            return Ok(h.clone());
        }
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
