//! The iSNS server: a tokio TCP listener feeding the sans-IO [`Registry`]
//! (RFC 4171 §5: iSNSP over TCP).
//!
//! Request pipeline: queries (DevAttrQry, DevGetNext) are answered on the
//! connection's task under a read lock of the registry, concurrently; their
//! refresh of the source's entity (§6.2.6) is an atomic store. Every other
//! request goes to one committer thread, which applies all requests queued
//! while its previous commit ran, in arrival order, under the write lock,
//! then writes their changes to the [`Store`](crate::store::Store) in one durable transaction
//! (group commit) and only then sends their responses. If the commit fails,
//! the registry is reloaded from the store (which holds the state before
//! the batch) and the batch's changing requests get Internal Error (11).
//! A query that read a batch not yet written waits for it, and reads again if
//! it was undone (`crate::fence`). The same thread runs the expiry sweep (a deadline queue, every
//! `expiry_check`) and stores the refresh times of the entities refreshed
//! since the last time, every `refresh_persist_interval`. The registry decides which state change
//! notifications (§5.6.5.8) go where; this shell delivers them: to the SCN
//! port (§6.3.10) of a subscriber's portal, or over the connection that sent
//! the SCNReg. Stream framing is `isns_proto::MessageDecoder`'s.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{
    Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard, mpsc as std_mpsc,
};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use isns_proto::{Message, MessageDecoder, Status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;

use crate::backend::{Backend, Pending, WriteError};
use crate::etcd::EtcdStore;
use crate::fence::{CommitFence, Reading};
use crate::registry::{
    self, Changes, EsiConfig, Limits, Notification, Outcome, Registry, ScnConnection,
    ScnDestination, scn,
};
use crate::store::{Batch, StoreError};

/// A connection that has not delivered a complete message this long after
/// it was accepted is closed.
pub const FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default limit on simultaneous connections from one client address.
pub const MAX_CONNECTIONS_PER_ADDRESS: usize = 64;
/// Default limit on simultaneous connections in all.
pub const MAX_CONNECTIONS: usize = 256;

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// TCP address to listen on (default 127.0.0.1:3205).
    pub listen: SocketAddr,
    /// More TCP addresses to listen on, served like `listen`.
    pub extra_listen: Vec<SocketAddr>,
    /// redb database file (unless `etcd` is set).
    pub db: PathBuf,
    /// etcd endpoints (`http://host:port`): keep the registry in this etcd
    /// cluster instead of `db`, shared with every server given the same
    /// cluster and prefix (`crate::etcd`).
    pub etcd: Vec<String>,
    /// Key prefix of the registry in etcd.
    pub etcd_prefix: String,
    /// Maximum simultaneous client connections. When reached, the oldest idle
    /// connection (no request in progress; preferring those that never sent
    /// a complete message) is closed to admit the new one.
    pub max_connections: usize,
    /// Maximum simultaneous connections from one client IP address; more are
    /// refused.
    pub max_connections_per_address: usize,
    /// A connection that has not delivered a complete message this long after
    /// being accepted is closed.
    pub first_message_timeout: Duration,
    /// A connection idle this long between messages is closed.
    pub idle_timeout: Duration,
    /// Source name the server uses in messages it originates (SCN).
    pub source_name: String,
    /// Source names treated as Control Nodes (RFC 4171 §5.6.1): they may
    /// change or deregister any entity. Any other source may change only the
    /// entity holding its own node (default: none).
    pub control_nodes: Vec<String>,
    /// How often entities past their Registration Period are removed (a
    /// look at the due deadlines only, not a scan).
    pub expiry_check: Duration,
    /// How often the refresh times of entities refreshed since the last time
    /// are stored (one transaction). A restart forgets at most this much of
    /// refreshes, which only delays expiry.
    pub refresh_persist_interval: Duration,
    /// Registration period (RFC 4171 §6.2.6, seconds) granted to a
    /// registration that gives none, asks for 0 (never expire) or asks for
    /// more than `max_registration_period`.
    pub default_registration_period: u32,
    /// Longest registration period granted as asked, seconds.
    pub max_registration_period: u32,
    /// Entities that registrations from one client IP address may hold
    /// (whatever source names they use); a registration creating one more is
    /// refused with status 3. The addresses are kept in memory only: entities
    /// loaded from the database at start count against no address.
    pub max_entities_per_address: usize,
    /// Entities in all (at most `registry::MAX_ENTITIES`); a registration
    /// creating one more is refused with status 3.
    pub max_entities: usize,
    /// Portals, nodes and portal groups of one entity; a registration
    /// exceeding it is refused with status 3.
    pub max_objects_per_entity: usize,
    /// Largest request accepted, bytes of message payload (at most
    /// `isns_proto::MAX_MESSAGE_LEN`, 1 MiB); a larger one is answered with
    /// status 2 "Message Format Error" and its connection closed.
    pub max_message_len: usize,
    /// Entity Status Inquiry (RFC 4171 §5.6.5.13): minimum interval granted,
    /// misses allowed, or disabled.
    pub esi: EsiConfig,
    /// How long the server waits to connect to a portal's ESI port and for
    /// its ESI Response.
    pub esi_timeout: Duration,
    /// The default discovery domain (isnsd's `DefaultDiscoveryDomain`, see
    /// [`crate::Registry::set_default_dd`]); on by default, which lets every
    /// node in no DD see every other such node.
    pub default_dd: bool,
}

/// Default time the server waits for an ESI Response.
pub const ESI_TIMEOUT: Duration = Duration::from_secs(5);
/// Default interval between writes of coalesced registration refreshes.
pub const REFRESH_PERSIST_INTERVAL: Duration = Duration::from_secs(2);

impl ServerConfig {
    /// Defaults with the given address and database.
    pub fn new(listen: SocketAddr, db: PathBuf) -> ServerConfig {
        ServerConfig {
            listen,
            extra_listen: Vec::new(),
            db,
            etcd: Vec::new(),
            etcd_prefix: crate::etcd::DEFAULT_PREFIX.into(),
            max_connections: MAX_CONNECTIONS,
            max_connections_per_address: MAX_CONNECTIONS_PER_ADDRESS,
            first_message_timeout: FIRST_MESSAGE_TIMEOUT,
            idle_timeout: Duration::from_secs(600),
            source_name: scn::DEFAULT_SOURCE_NAME.into(),
            control_nodes: Vec::new(),
            expiry_check: Duration::from_secs(1),
            refresh_persist_interval: REFRESH_PERSIST_INTERVAL,
            default_registration_period: registry::DEFAULT_REGISTRATION_PERIOD,
            max_registration_period: registry::MAX_REGISTRATION_PERIOD,
            max_entities_per_address: registry::MAX_ENTITIES_PER_ADDRESS,
            max_entities: registry::MAX_ENTITIES,
            max_objects_per_entity: registry::MAX_OBJECTS_PER_ENTITY,
            max_message_len: isns_proto::MAX_MESSAGE_LEN,
            esi: EsiConfig::default(),
            esi_timeout: ESI_TIMEOUT,
            default_dd: true,
        }
    }
}

/// Server errors.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Connection-scoped SCN delivery: the sender half of a connection's writer.
type ConnTx = mpsc::Sender<Vec<u8>>;

/// A response and the SCN messages it caused.
type Reply = (Option<Message>, Vec<(ScnTarget, Vec<u8>)>);

/// State shared by the connections and the committer.
pub(crate) struct Shared {
    pub(crate) registry: RwLock<Registry>,
    /// Connections on which a node sent SCNReg, by iSCSI name.
    scn_conns: Mutex<HashMap<String, ConnTx>>,
    /// Requests, SCNs and ESIs counted for `/metrics`.
    pub(crate) metrics: crate::metrics::IsnsMetrics,
    /// The etcd store, when the registry is in etcd (ESI runs only on the
    /// election winner).
    pub(crate) etcd: Option<Arc<EtcdStore>>,
    /// Which applied batches are stored: what queries may answer from.
    pub(crate) fence: CommitFence,
}

impl Shared {
    /// Whether this server sends Entity Status Inquiries: always on the
    /// embedded store, on etcd only while it holds the ESI role.
    pub(crate) fn esi_active(&self) -> bool {
        self.etcd.as_ref().is_none_or(|e| e.is_leader())
    }
}

/// A request for the committer.
pub(crate) struct Job {
    msg: Message,
    peer: IpAddr,
    conn: ConnTx,
    reply: oneshot::Sender<Reply>,
}

/// What the committer thread receives.
pub(crate) enum Cmd {
    Job(Job),
    /// The ESI to this portal went unanswered (`Registry::esi_failed`).
    EsiFailed(SocketAddr),
    /// Store the pending refresh times and stop.
    Stop,
}

/// Most requests one group commit takes.
pub(crate) const MAX_BATCH: usize = 4096;

/// The running iSNS server.
pub struct Server {
    listener: TcpListener,
    /// Listeners on `ServerConfig::extra_listen`.
    extra: Vec<TcpListener>,
    shared: Arc<Shared>,
    backend: Backend,
    config: ServerConfig,
}

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub(crate) fn read(reg: &RwLock<Registry>) -> RwLockReadGuard<'_, Registry> {
    reg.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub(crate) fn write(reg: &RwLock<Registry>) -> RwLockWriteGuard<'_, Registry> {
    reg.write().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Server {
    /// Open the database, load the registry and bind the listener. Entities
    /// keep the refresh time they were stored with: one whose Registration
    /// Period ran out while the server was down expires at the first sweep.
    pub async fn bind(config: ServerConfig) -> Result<Server, ServerError> {
        let backend = Backend::open(&config).await?;
        let mut registry = backend.load().await?;
        registry.set_scn_source(&config.source_name);
        registry.set_control_nodes(config.control_nodes.iter().cloned());
        registry.set_default_dd(config.default_dd);
        registry.set_limits(Limits {
            default_registration_period: config.default_registration_period,
            max_registration_period: config.max_registration_period,
            max_entities_per_address: config.max_entities_per_address,
            max_entities: config.max_entities,
            max_objects_per_entity: config.max_objects_per_entity,
        });
        registry.set_esi(config.esi);
        registry.esi_sync_all(now());
        let listener = listener::bind(config.listen)?;
        let extra = config
            .extra_listen
            .iter()
            .map(|a| listener::bind(*a))
            .collect::<Result<Vec<_>, _>>()?;
        let shared = Shared {
            registry: RwLock::new(registry),
            scn_conns: Mutex::new(HashMap::new()),
            metrics: crate::metrics::IsnsMetrics::new(),
            etcd: backend.etcd().cloned(),
            fence: CommitFence::default(),
        };
        Ok(Server {
            listener,
            extra,
            shared: Arc::new(shared),
            backend,
            config,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> Result<SocketAddr, ServerError> {
        Ok(self.listener.local_addr()?)
    }

    /// Every address bound: `listen`, then `extra_listen` in order.
    pub fn local_addrs(&self) -> Result<Vec<SocketAddr>, ServerError> {
        std::iter::once(&self.listener)
            .chain(&self.extra)
            .map(|l| Ok(l.local_addr()?))
            .collect()
    }

    /// The figures the admin endpoint shows ([`crate::admin::serve`]).
    pub fn stats(&self) -> crate::metrics::ServerStats {
        crate::metrics::ServerStats {
            shared: self.shared.clone(),
        }
    }

    /// Serve until `shutdown` completes.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), ServerError> {
        let Server {
            listener,
            extra,
            shared,
            backend,
            config,
        } = self;
        let mut etcd_tasks = Vec::new();
        if let Some(etcd) = backend.etcd() {
            let name = format!("{} {}", config.source_name, listener.local_addr()?);
            etcd_tasks.push(AbortOnDrop(tokio::spawn(crate::etcd::run_watch(
                etcd.clone(),
                shared.clone(),
            ))));
            etcd_tasks.push(AbortOnDrop(tokio::spawn(crate::etcd::run_lease_keeper(
                etcd.clone(),
            ))));
            etcd_tasks.push(AbortOnDrop(tokio::spawn(crate::etcd::run_election(
                etcd.clone(),
                name,
            ))));
        }
        let conns = Arc::new(Mutex::new(Conns::default()));
        let (jobs, rx) = std_mpsc::channel();
        let committer = {
            let shared = shared.clone();
            let config = config.clone();
            let rt = tokio::runtime::Handle::current();
            std::thread::Builder::new()
                .name("isns-commit".into())
                .spawn(move || commit_loop(&shared, &backend, &rx, &config, &rt))?
        };
        let stop = StopOnDrop(jobs.clone(), Some(committer));
        let esi = tokio::spawn(crate::esi::run(
            shared.clone(),
            jobs.clone(),
            config.clone(),
        ));
        let _abort_esi = AbortOnDrop(esi);
        let upkeep = {
            let shared = shared.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(5));
                loop {
                    tick.tick().await;
                    shared.metrics.upkeep();
                }
            })
        };
        let _abort_upkeep = AbortOnDrop(upkeep);
        let accepting: Vec<AbortOnDrop> = std::iter::once(listener)
            .chain(extra)
            .map(|l| {
                AbortOnDrop(tokio::spawn(accept_loop(
                    l,
                    conns.clone(),
                    shared.clone(),
                    jobs.clone(),
                    config.clone(),
                )))
            })
            .collect();
        shutdown.await;
        drop(accepting);
        drop(etcd_tasks);
        tokio::task::spawn_blocking(move || drop(stop))
            .await
            .map_err(std::io::Error::other)?;
        Ok(())
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Accept connections on `listener` until aborted.
async fn accept_loop(
    listener: TcpListener,
    conns: Arc<Mutex<Conns>>,
    shared: Arc<Shared>,
    jobs: std_mpsc::Sender<Cmd>,
    config: ServerConfig,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(handle) = admit(&conns, peer.ip(), &config) else {
            continue;
        };
        let shared = shared.clone();
        let jobs = jobs.clone();
        let config = config.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_connection(stream, peer.ip(), shared, jobs, config, &handle).await
            {
                tracing::debug!(%peer, "connection ended: {e}");
            }
            drop(handle);
        });
    }
}

/// Stops the committer (storing pending refresh times) when the server stops.
struct StopOnDrop(std_mpsc::Sender<Cmd>, Option<std::thread::JoinHandle<()>>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(Cmd::Stop);
        if let Some(t) = self.1.take() {
            let _ = t.join();
        }
    }
}

/// One open client connection, as the accept loop sees it.
struct ConnEntry {
    id: u64,
    ip: IpAddr,
    /// A complete message arrived on it.
    spoke: bool,
    /// A request is being handled.
    busy: bool,
    /// Wakes the connection to close it.
    close: Arc<Notify>,
}

/// Open connections in accept order.
#[derive(Default)]
struct Conns {
    next_id: u64,
    list: Vec<ConnEntry>,
}

/// A connection's entry in [`Conns`]; removed when dropped.
struct ConnHandle {
    id: u64,
    conns: Arc<Mutex<Conns>>,
    close: Arc<Notify>,
}

impl ConnHandle {
    fn update(&self, f: impl FnOnce(&mut ConnEntry)) {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = conns.list.iter_mut().find(|e| e.id == self.id) {
            f(e);
        }
    }
}

impl Drop for ConnHandle {
    fn drop(&mut self) {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns.list.retain(|e| e.id != self.id);
    }
}

/// Admit a connection from `ip` within the per-address and total limits,
/// closing the oldest idle connection when the total limit is reached.
fn admit(conns: &Arc<Mutex<Conns>>, ip: IpAddr, config: &ServerConfig) -> Option<ConnHandle> {
    let mut guard = conns.lock().unwrap_or_else(|p| p.into_inner());
    let c = &mut *guard;
    if c.list.iter().filter(|e| e.ip == ip).count() >= config.max_connections_per_address {
        tracing::warn!(%ip, "per-address connection limit reached, closing");
        return None;
    }
    if c.list.len() >= config.max_connections.max(1) {
        // Oldest idle connection that never sent a complete message, else the oldest idle one.
        let victim = c
            .list
            .iter()
            .position(|e| !e.busy && !e.spoke)
            .or_else(|| c.list.iter().position(|e| !e.busy));
        let Some(v) = victim else {
            tracing::warn!(%ip, "connection limit reached, all connections busy, closing");
            return None;
        };
        let old = c.list.remove(v);
        tracing::warn!(%ip, evicted = %old.ip, "connection limit reached, closing the oldest idle connection");
        old.close.notify_one();
    }
    let id = c.next_id;
    c.next_id += 1;
    let close = Arc::new(Notify::new());
    c.list.push(ConnEntry {
        id,
        ip,
        spoke: false,
        busy: false,
        close: close.clone(),
    });
    Some(ConnHandle {
        id,
        conns: conns.clone(),
        close,
    })
}

/// Merge the changes of one more request (or sweep) of a batch.
fn merge(into: &mut Changes, from: &Changes) {
    into.removed.extend(from.removed.iter().copied());
    into.upserted.extend(from.upserted.iter().copied());
    into.domains |= from.domains;
}

/// Give up the ESI failures of a batch whose write did not happen: ESI probes those portals
/// again.
fn abandon_esi(shared: &Shared, esi_failed: &[SocketAddr]) {
    let mut reg = write(&shared.registry);
    for portal in esi_failed {
        reg.esi_abandon(*portal);
    }
}

/// Group commit statistics, logged when the server stops.
#[derive(Default)]
struct CommitStats {
    commits: u64,
    requests: u64,
    largest: usize,
}

/// The committer thread: applies queued changing requests in order, commits
/// each batch in one transaction, answers after it; runs the expiry sweep
/// and stores refresh times on their intervals.
fn commit_loop(
    shared: &Shared,
    backend: &Backend,
    rx: &std_mpsc::Receiver<Cmd>,
    config: &ServerConfig,
    rt: &tokio::runtime::Handle,
) {
    let start = std::time::Instant::now();
    let mut next_sweep = start + config.expiry_check;
    let mut next_flush = start + config.refresh_persist_interval;
    let mut stats = CommitStats::default();
    let mut stopping = false;
    // A failed write whose undo failed too (the store did not answer): the
    // copy still holds its changes, so nothing is applied on it until the
    // undo succeeds.
    let mut unrestored: Option<Pending> = None;
    while !stopping {
        let wait = next_sweep
            .min(next_flush)
            .saturating_duration_since(std::time::Instant::now());
        let mut jobs = Vec::new();
        let mut esi_failed = Vec::new();
        match rx.recv_timeout(wait) {
            Ok(Cmd::Job(j)) => jobs.push(j),
            Ok(Cmd::EsiFailed(portal)) => esi_failed.push(portal),
            Ok(Cmd::Stop) | Err(std_mpsc::RecvTimeoutError::Disconnected) => stopping = true,
            Err(std_mpsc::RecvTimeoutError::Timeout) => {}
        }
        while !stopping && jobs.len() < backend.max_batch() {
            match rx.try_recv() {
                Ok(Cmd::Job(j)) => jobs.push(j),
                Ok(Cmd::EsiFailed(portal)) => esi_failed.push(portal),
                Ok(Cmd::Stop) => stopping = true,
                Err(_) => break,
            }
        }
        if let Some(p) = unrestored.take()
            && let Err(e) = backend.undo(&shared.registry, &p, rt)
        {
            tracing::error!("restoring the registry from the store: {e}; the requests failed");
            unrestored = Some(p);
            abandon_esi(shared, &esi_failed);
            for job in jobs {
                let response =
                    Message::error_response(job.msg.function, job.msg.xid, Status::INTERNAL_ERROR);
                let _ = job.reply.send((Some(response), Vec::new()));
            }
            continue;
        }
        let clock = std::time::Instant::now();
        let sweep = clock >= next_sweep;
        let flush = stopping || clock >= next_flush;
        if sweep {
            next_sweep = clock + config.expiry_check;
        }
        if flush {
            next_flush = clock + config.refresh_persist_interval;
        }
        let mut attempt = 0;
        // Apply the requests and write their changes; a write refused
        // (etcd: another server wrote first) is undone and the requests
        // applied again on the state as it is now.
        let (outcomes, expired, pending) = loop {
            let at = now();
            let mut merged = Changes::default();
            let mut outcomes = Vec::with_capacity(jobs.len());
            let mut expired = Vec::new();
            let (batch_no, mut pending) = {
                let mut reg = write(&shared.registry);
                let batch_no = shared.fence.apply();
                for job in &jobs {
                    tracing::debug!(
                        function = job.msg.function.name(),
                        xid = job.msg.xid,
                        "request"
                    );
                    let outcome = reg.handle_from(&job.msg, at, Some(job.peer));
                    merge(&mut merged, &outcome.changes);
                    outcomes.push(outcome);
                }
                for portal in &esi_failed {
                    let outcome = reg.esi_failed(*portal, at);
                    merge(&mut merged, &outcome.changes);
                    expired.extend(outcome.notifications);
                }
                if sweep && attempt == 0 && backend.expires_locally() {
                    let outcome = reg.expire(at);
                    if !outcome.changes.removed.is_empty() {
                        tracing::info!(count = outcome.changes.removed.len(), "entities expired");
                    }
                    merge(&mut merged, &outcome.changes);
                    expired.extend(outcome.notifications);
                }
                let batch = Batch::from_changes(&reg, &merged);
                let refreshed = (flush && attempt == 0).then(|| reg.take_refreshed());
                (batch_no, backend.prepare(&reg, batch, refreshed))
            };
            let error = match backend.write(&mut pending, rt) {
                Ok(()) => {
                    shared.fence.settle(batch_no, false);
                    break (outcomes, expired, Some(pending));
                }
                Err(WriteError::Retry(e)) if attempt < backend.retries() => {
                    attempt += 1;
                    tracing::debug!(attempt, "write refused ({e}); undoing and applying again");
                    None
                }
                Err(WriteError::Retry(e) | WriteError::Failed(e)) => Some(e),
            };
            let error = match backend.undo(&shared.registry, &pending, rt) {
                Ok(()) => error,
                Err(e) => {
                    tracing::error!("restoring the registry from the store: {e}");
                    unrestored = Some(pending);
                    error.or(Some(e))
                }
            };
            // Undone, or left as it is when the undo failed too: queries that saw the batch
            // read again rather than wait for a store that does not answer.
            shared.fence.settle(batch_no, true);
            abandon_esi(shared, &esi_failed);
            esi_failed.clear();
            if let Some(e) = error {
                tracing::error!("persisting registry: {e}; the requests failed");
                for (job, outcome) in jobs.drain(..).zip(outcomes) {
                    let response = if outcome.changes.is_empty() {
                        outcome.response
                    } else {
                        Some(Message::error_response(
                            job.msg.function,
                            job.msg.xid,
                            Status::INTERNAL_ERROR,
                        ))
                    };
                    let _ = job.reply.send((response, Vec::new()));
                }
                break (Vec::new(), Vec::new(), None);
            }
            if attempt > 3 {
                std::thread::sleep(Duration::from_millis(20 * u64::from(attempt.min(25))));
            }
        };
        let Some(pending) = pending else {
            continue;
        };
        if !jobs.is_empty() && pending.changes_registry() {
            stats.commits += 1;
            stats.requests += jobs.len() as u64;
            stats.largest = stats.largest.max(jobs.len());
            tracing::debug!(requests = jobs.len(), attempt, "group commit");
        }
        for (job, outcome) in jobs.into_iter().zip(outcomes) {
            let Outcome {
                response,
                notifications,
                scn_connection,
                ..
            } = outcome;
            match scn_connection {
                Some(ScnConnection::Bind(name)) => {
                    lock(&shared.scn_conns).insert(name, job.conn.clone());
                }
                Some(ScnConnection::Unbind(name)) => {
                    lock(&shared.scn_conns).remove(&name);
                }
                None => {}
            }
            let scns = route_scns(shared, notifications);
            let _ = job.reply.send((response, scns));
        }
        if !expired.is_empty() {
            rt.spawn(deliver_scns(route_scns(shared, expired)));
        }
    }
    if stats.commits > 0 {
        tracing::info!(
            commits = stats.commits,
            requests = stats.requests,
            mean = stats.requests as f64 / stats.commits as f64,
            largest = stats.largest,
            "group commits"
        );
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: IpAddr,
    shared: Arc<Shared>,
    jobs: std_mpsc::Sender<Cmd>,
    config: ServerConfig,
    handle: &ConnHandle,
) -> std::io::Result<()> {
    let first_deadline = Instant::now() + config.first_message_timeout;
    let mut spoke = false;
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(64);
    let writer = tokio::spawn(async move {
        while let Some(buf) = rx.recv().await {
            if wr.write_all(&buf).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    let mut buf = BytesMut::new();
    let mut decoder = MessageDecoder::with_max_message_len(config.max_message_len);
    let result = async {
        loop {
            let msg = match decoder.decode(&mut buf) {
                Ok(Some(m)) => m,
                Ok(None) => {
                    let deadline = if spoke {
                        Instant::now() + config.idle_timeout
                    } else {
                        first_deadline
                    };
                    tokio::select! {
                        () = handle.close.notified() => return Ok(()),
                        read = tokio::time::timeout_at(deadline, rd.read_buf(&mut buf)) => {
                            match read {
                                Err(_) | Ok(Ok(0)) => return Ok(()),
                                Ok(r) => r?,
                            };
                        }
                    }
                    continue;
                }
                Err(e) => {
                    tracing::debug!("bad message: {e}");
                    if let Some(resp) = e.error_response()
                        && tx.send(resp.to_bytes()).await.is_err()
                    {
                        return Ok(());
                    }
                    if e.is_fatal() {
                        // Framing is lost.
                        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e));
                    }
                    continue;
                }
            };
            spoke = true;
            let (function, started) = (msg.function, Instant::now());
            handle.update(|e| {
                e.spoke = true;
                e.busy = true;
            });
            let (resp, scn) = if Registry::is_read_only(msg.function) {
                // Queries: shared access, answered here.
                (answer_query(&shared, &msg).await, Vec::new())
            } else {
                let (reply, answer) = oneshot::channel();
                let job = Job {
                    msg,
                    peer,
                    conn: tx.clone(),
                    reply,
                };
                if jobs.send(Cmd::Job(job)).is_err() {
                    return Ok(()); // the server is stopping
                }
                match answer.await {
                    Ok(r) => r,
                    Err(_) => return Ok(()),
                }
            };
            let status = resp.as_ref().and_then(|r| r.status);
            shared.metrics.request(function, status, started.elapsed());
            if let Some(resp) = resp
                && tx.send(resp.to_bytes()).await.is_err()
            {
                return Ok(());
            }
            handle.update(|e| e.busy = false);
            deliver_scns(scn).await;
        }
    }
    .await;
    drop(tx);
    let _ = writer.await;
    result
}

/// Most readings of the registry for one query while batches it saw are undone.
const QUERY_READS: usize = 8;

/// The answer to query `msg` from stored registrations only ([`crate::fence`]): a reading
/// that saw a batch not yet stored waits for it, and reads again if it was undone.
async fn answer_query(shared: &Shared, msg: &Message) -> Option<Message> {
    for _ in 0..QUERY_READS {
        let (outcome, mark) = {
            let reg = read(&shared.registry);
            (reg.handle_read(msg, now()), shared.fence.mark())
        };
        if shared.fence.wait(mark).await == Reading::Durable {
            return outcome.and_then(|o| o.response);
        }
    }
    tracing::warn!(
        function = msg.function.name(),
        "a query saw undone registrations {QUERY_READS} times in a row; answering with an error"
    );
    Some(Message::error_response(
        msg.function,
        msg.xid,
        Status::INTERNAL_ERROR,
    ))
}

/// Where to send one SCN message.
pub(crate) enum ScnTarget {
    Conn(ConnTx),
    Portal(SocketAddr),
}

/// Encode the registry's notifications and resolve their destinations.
pub(crate) fn route_scns(
    shared: &Shared,
    notifications: Vec<Notification>,
) -> Vec<(ScnTarget, Vec<u8>)> {
    if notifications.is_empty() {
        return Vec::new();
    }
    let mut scn_conns = lock(&shared.scn_conns);
    scn_conns.retain(|_, tx| !tx.is_closed());
    let routed: Vec<(ScnTarget, Vec<u8>)> = notifications
        .into_iter()
        .filter_map(|n| {
            let target = match n.destination {
                ScnDestination::Portal(addr) => ScnTarget::Portal(addr),
                ScnDestination::Connection { node } => {
                    ScnTarget::Conn(scn_conns.get(&node)?.clone())
                }
            };
            Some((target, n.message.to_bytes()))
        })
        .collect();
    shared.metrics.scns_sent(routed.len());
    routed
}

/// Read one message (the SCNRsp) from `s`.
pub(crate) async fn read_one(mut s: impl AsyncRead + Unpin) -> std::io::Result<Message> {
    let mut buf = BytesMut::new();
    let mut decoder = MessageDecoder::new();
    loop {
        if let Some(m) = decoder
            .decode(&mut buf)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?
        {
            return Ok(m);
        }
        if s.read_buf(&mut buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
}

pub(crate) async fn deliver_scns(scns: Vec<(ScnTarget, Vec<u8>)>) {
    for (target, bytes) in scns {
        match target {
            ScnTarget::Conn(tx) => {
                let _ = tx.try_send(bytes);
            }
            ScnTarget::Portal(addr) => {
                tokio::spawn(async move {
                    let send = async {
                        let mut s = TcpStream::connect(addr).await?;
                        s.write_all(&bytes).await?;
                        // Wait briefly for the SCNRsp so the client sees a complete exchange.
                        read_one(&mut s).await.map(drop)
                    };
                    match tokio::time::timeout(Duration::from_secs(5), send).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => tracing::debug!(%addr, "SCN delivery failed: {e}"),
                        Err(_) => tracing::debug!(%addr, "SCN delivery timed out"),
                    }
                });
            }
        }
    }
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
