//! The iSNS server: a tokio TCP listener feeding the sans-IO [`Registry`]
//! (RFC 4171 §5: iSNSP over TCP). Every change is committed to the [`Store`]
//! before the response is sent. The registry decides which state change
//! notifications (§5.6.5.8) go where; this shell delivers them: to the SCN
//! port (§6.3.10) of a subscriber's portal, or over the connection that sent
//! the SCNReg. Stream framing is `isns_proto::MessageDecoder`'s.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use isns_proto::{Message, MessageDecoder, Status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use crate::registry::{
    self, Limits, Notification, Outcome, Registry, ScnConnection, ScnDestination, scn,
};
use crate::store::{Store, StoreError};

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
    /// redb database file.
    pub db: PathBuf,
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
    /// How often entities past their Registration Period are removed.
    pub expiry_check: Duration,
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
    /// The default discovery domain (isnsd's `DefaultDiscoveryDomain`, see
    /// [`crate::Registry::set_default_dd`]); on by default, which lets every
    /// node in no DD see every other such node.
    pub default_dd: bool,
}

impl ServerConfig {
    /// Defaults with the given address and database.
    pub fn new(listen: SocketAddr, db: PathBuf) -> ServerConfig {
        ServerConfig {
            listen,
            db,
            max_connections: MAX_CONNECTIONS,
            max_connections_per_address: MAX_CONNECTIONS_PER_ADDRESS,
            first_message_timeout: FIRST_MESSAGE_TIMEOUT,
            idle_timeout: Duration::from_secs(600),
            source_name: scn::DEFAULT_SOURCE_NAME.into(),
            control_nodes: Vec::new(),
            expiry_check: Duration::from_secs(10),
            default_registration_period: registry::DEFAULT_REGISTRATION_PERIOD,
            max_registration_period: registry::MAX_REGISTRATION_PERIOD,
            max_entities_per_address: registry::MAX_ENTITIES_PER_ADDRESS,
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

struct State {
    registry: Registry,
    store: Store,
    /// Connections on which a node sent SCNReg, by iSCSI name.
    scn_conns: HashMap<String, ConnTx>,
}

/// The running iSNS server.
pub struct Server {
    listener: TcpListener,
    state: Arc<Mutex<State>>,
    config: ServerConfig,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Server {
    /// Open the database, load the registry and bind the listener.
    pub async fn bind(config: ServerConfig) -> Result<Server, ServerError> {
        let store = Store::open(&config.db)?;
        let mut registry = store.load()?;
        registry.grant_grace(now());
        registry.set_scn_source(&config.source_name);
        registry.set_control_nodes(config.control_nodes.iter().cloned());
        registry.set_default_dd(config.default_dd);
        registry.set_limits(Limits {
            default_registration_period: config.default_registration_period,
            max_registration_period: config.max_registration_period,
            max_entities_per_address: config.max_entities_per_address,
        });
        let listener = listener::bind(config.listen)?;
        let state = State {
            registry,
            store,
            scn_conns: HashMap::new(),
        };
        Ok(Server {
            listener,
            state: Arc::new(Mutex::new(state)),
            config,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> Result<SocketAddr, ServerError> {
        Ok(self.listener.local_addr()?)
    }

    /// Serve until `shutdown` completes.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), ServerError> {
        let conns = Arc::new(Mutex::new(Conns::default()));
        let sweeper = tokio::spawn(sweep_expired(self.state.clone(), self.config.clone()));
        let _abort_sweeper = AbortOnDrop(sweeper);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                accepted = self.listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(x) => x,
                        Err(e) => {
                            tracing::warn!("accept: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let Some(handle) = admit(&conns, peer.ip(), &self.config) else {
                        continue;
                    };
                    let state = self.state.clone();
                    let config = self.config.clone();
                    tokio::spawn(async move {
                        if let Err(e) = serve_connection(stream, peer.ip(), state, config, &handle).await {
                            tracing::debug!(%peer, "connection ended: {e}");
                        }
                        drop(handle);
                    });
                }
            }
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

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Periodically deregister entities whose Registration Period ran out (§6.2.6).
async fn sweep_expired(state: Arc<Mutex<State>>, config: ServerConfig) {
    let mut tick = tokio::time::interval(config.expiry_check);
    loop {
        tick.tick().await;
        let st = state.clone();
        let scns = tokio::task::spawn_blocking(move || {
            let mut guard = lock(&st);
            let st = &mut *guard;
            let at = now();
            // Undo copy only when something is to be removed.
            if !st.registry.has_expired(at) {
                return Vec::new();
            }
            let backup = st.registry.clone();
            let outcome = st.registry.expire(at);
            tracing::info!(count = outcome.changes.removed.len(), "entities expired");
            if let Err(e) = st.store.commit(&st.registry, &outcome.changes) {
                tracing::error!("persisting expiry: {e}");
                st.registry = backup;
                return Vec::new();
            }
            route_scns(st, outcome.notifications)
        })
        .await
        .unwrap_or_default();
        deliver_scns(scns).await;
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: IpAddr,
    state: Arc<Mutex<State>>,
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
    let mut decoder = MessageDecoder::new();
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
            handle.update(|e| {
                e.spoke = true;
                e.busy = true;
            });
            let st = state.clone();
            let conn_tx = tx.clone();
            let (resp, scn) =
                tokio::task::spawn_blocking(move || process(&st, &msg, peer, &conn_tx))
                    .await
                    .map_err(std::io::Error::other)?;
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

/// Where to send one SCN message.
enum ScnTarget {
    Conn(ConnTx),
    Portal(SocketAddr),
}

/// Handle one message under the state lock; persist changes before answering.
fn process(
    state: &Mutex<State>,
    msg: &Message,
    peer: IpAddr,
    conn: &ConnTx,
) -> (Option<Message>, Vec<(ScnTarget, Vec<u8>)>) {
    let mut st = lock(state);
    let st = &mut *st;
    tracing::debug!(function = msg.function.name(), xid = msg.xid, "request");
    // Undo copy only for requests that can change persistent state: queries
    // (the common case) must not clone the whole registry under the lock.
    let backup = Registry::may_change(msg.function).then(|| st.registry.clone());
    let Outcome {
        response,
        changes,
        notifications,
        scn_connection,
    } = st.registry.handle_from(msg, now(), Some(peer));
    if !changes.is_empty()
        && let Err(e) = st.store.commit(&st.registry, &changes)
    {
        tracing::error!("persisting registry: {e}");
        if let Some(backup) = backup {
            st.registry = backup;
        }
        return (
            Some(Message::error_response(
                msg.function,
                msg.xid,
                Status::INTERNAL_ERROR,
            )),
            Vec::new(),
        );
    }
    match scn_connection {
        Some(ScnConnection::Bind(name)) => {
            st.scn_conns.insert(name, conn.clone());
        }
        Some(ScnConnection::Unbind(name)) => {
            st.scn_conns.remove(&name);
        }
        None => {}
    }
    (response, route_scns(st, notifications))
}

/// Encode the registry's notifications and resolve their destinations.
fn route_scns(st: &mut State, notifications: Vec<Notification>) -> Vec<(ScnTarget, Vec<u8>)> {
    if notifications.is_empty() {
        return Vec::new();
    }
    st.scn_conns.retain(|_, tx| !tx.is_closed());
    notifications
        .into_iter()
        .filter_map(|n| {
            let target = match n.destination {
                ScnDestination::Portal(addr) => ScnTarget::Portal(addr),
                ScnDestination::Connection { node } => {
                    ScnTarget::Conn(st.scn_conns.get(&node)?.clone())
                }
            };
            Some((target, n.message.to_bytes()))
        })
        .collect()
}

/// Read one message (the SCNRsp) from `s`.
async fn read_one(mut s: impl AsyncRead + Unpin) -> std::io::Result<Message> {
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

async fn deliver_scns(scns: Vec<(ScnTarget, Vec<u8>)>) {
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
