//! The iSNS server: a tokio TCP listener feeding the sans-IO [`Registry`]
//! (RFC 4171 §5: iSNSP over TCP). Every change is committed to the [`Store`]
//! before the response is sent. State change notifications (§5.6.5.8) go to
//! the SCN port (§6.3.10) of the subscriber's portals, or, when none is
//! registered, over the connection that sent the SCNReg.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use isns_proto::tag::{self, ObjectType};
use isns_proto::{
    Attribute, Error as ProtoError, FunctionId, HEADER_LEN, Header, Message, Reassembler, Status,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};

use crate::registry::{Changes, Registry};
use crate::store::{Store, StoreError};

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// TCP address to listen on (default 127.0.0.1:3205).
    pub listen: SocketAddr,
    /// redb database file.
    pub db: PathBuf,
    /// Maximum simultaneous client connections.
    pub max_connections: usize,
    /// A connection idle this long is closed.
    pub idle_timeout: Duration,
    /// Source name the server uses in messages it originates (SCN).
    pub source_name: String,
    /// How often entities past their Registration Period are removed.
    pub expiry_check: Duration,
}

impl ServerConfig {
    /// Defaults with the given address and database.
    pub fn new(listen: SocketAddr, db: PathBuf) -> ServerConfig {
        ServerConfig {
            listen,
            db,
            max_connections: 256,
            idle_timeout: Duration::from_secs(600),
            source_name: "iqn.2024-01.portshift:isns-server".into(),
            expiry_check: Duration::from_secs(10),
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
    next_xid: u16,
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
        let listener = TcpListener::bind(config.listen).await?;
        let state = State {
            registry,
            store,
            scn_conns: HashMap::new(),
            next_xid: 1,
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
        let limit = Arc::new(Semaphore::new(self.config.max_connections));
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
                    let Ok(permit) = limit.clone().try_acquire_owned() else {
                        tracing::warn!(%peer, "connection limit reached, closing");
                        continue;
                    };
                    let state = self.state.clone();
                    let config = self.config.clone();
                    tokio::spawn(async move {
                        if let Err(e) = serve_connection(stream, state, config).await {
                            tracing::debug!(%peer, "connection ended: {e}");
                        }
                        drop(permit);
                    });
                }
            }
        }
    }
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
        let source = config.source_name.clone();
        let scns = tokio::task::spawn_blocking(move || {
            let mut guard = lock(&st);
            let st = &mut *guard;
            let backup = st.registry.clone();
            let changes = st.registry.expire(now());
            if changes.is_empty() {
                return Vec::new();
            }
            tracing::info!(count = changes.removed.len(), "entities expired");
            if let Err(e) = st.store.commit(&st.registry, &changes) {
                tracing::error!("persisting expiry: {e}");
                st.registry = backup;
                return Vec::new();
            }
            build_scns(st, &changes, &source)
        })
        .await
        .unwrap_or_default();
        deliver_scns(scns).await;
    }
}

async fn serve_connection(
    stream: TcpStream,
    state: Arc<Mutex<State>>,
    config: ServerConfig,
) -> std::io::Result<()> {
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
    let mut reassembler = Reassembler::default();
    let result = async {
        loop {
            let mut head = [0u8; HEADER_LEN];
            match tokio::time::timeout(config.idle_timeout, rd.read_exact(&mut head)).await {
                Err(_) => return Ok(()),
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Ok(r) => {
                    r?;
                }
            }
            let header = match Header::decode(&head) {
                Ok(h) => h,
                Err(e) => {
                    // Framing is lost: answer if we can name the function, then close.
                    let function = FunctionId(u16::from_be_bytes([head[2], head[3]]));
                    let xid = u16::from_be_bytes([head[8], head[9]]);
                    let status = if matches!(e, ProtoError::Version(_)) {
                        Status::VERSION_NOT_SUPPORTED
                    } else {
                        Status::MESSAGE_FORMAT_ERROR
                    };
                    if !function.is_response() {
                        let _ = tx
                            .send(Message::error_response(function, xid, status).to_bytes())
                            .await;
                    }
                    return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e));
                }
            };
            let mut payload = vec![0u8; usize::from(header.pdu_length)];
            tokio::time::timeout(config.idle_timeout, rd.read_exact(&mut payload))
                .await
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "PDU payload timeout")
                })??;
            let msg = match reassembler.push(&header, &payload) {
                Ok(Some(m)) => m,
                Ok(None) => continue,
                Err(e) => {
                    tracing::debug!("bad message: {e}");
                    if !header.function.is_response() {
                        let resp = Message::error_response(
                            header.function,
                            header.xid,
                            Status::MESSAGE_FORMAT_ERROR,
                        );
                        if tx.send(resp.to_bytes()).await.is_err() {
                            return Ok(());
                        }
                    }
                    if matches!(e, ProtoError::Sequence(_) | ProtoError::MessageTooLarge(_)) {
                        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e));
                    }
                    continue;
                }
            };
            let st = state.clone();
            let conn_tx = tx.clone();
            let source = config.source_name.clone();
            let (resp, scn) =
                tokio::task::spawn_blocking(move || process(&st, &msg, &conn_tx, &source))
                    .await
                    .map_err(std::io::Error::other)?;
            if let Some(resp) = resp
                && tx.send(resp.to_bytes()).await.is_err()
            {
                return Ok(());
            }
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
    conn: &ConnTx,
    source: &str,
) -> (Option<Message>, Vec<(ScnTarget, Vec<u8>)>) {
    let mut st = lock(state);
    let st = &mut *st;
    tracing::debug!(function = msg.function.name(), xid = msg.xid, "request");
    // Undo copy only for requests that can change persistent state: queries
    // (the common case) must not clone the whole registry under the lock.
    let backup = Registry::may_change(msg.function).then(|| st.registry.clone());
    let (resp, changes) = st.registry.handle(msg, now());
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
    let ok = resp
        .as_ref()
        .is_some_and(|r| r.status == Some(Status::SUCCESS));
    let name = msg
        .key()
        .iter()
        .find(|a| a.tag == tag::ISCSI_NAME)
        .and_then(Attribute::as_str);
    match (ok, msg.function, name) {
        (true, FunctionId::SCN_REG, Some(name)) => {
            st.scn_conns.insert(name.to_string(), conn.clone());
        }
        (true, FunctionId::SCN_DEREG, Some(name)) => {
            st.scn_conns.remove(name);
        }
        _ => {}
    }
    let scns = build_scns(st, &changes, source);
    (resp, scns)
}

/// SCN messages (§5.6.5.8) for the subscribers interested in `changes`.
fn build_scns(st: &mut State, changes: &Changes, source: &str) -> Vec<(ScnTarget, Vec<u8>)> {
    let mut out = Vec::new();
    if changes.scn.is_empty() {
        return out;
    }
    st.scn_conns.retain(|_, tx| !tx.is_closed());
    for (name, bitmap) in st.registry.scn_subscribers() {
        let events: Vec<_> = changes
            .scn
            .iter()
            .filter(|ev| bitmap & ev.event != 0)
            .collect();
        if events.is_empty() {
            continue;
        }
        let mut key = vec![
            Attribute::string(tag::ISCSI_NAME, &name),
            Attribute::u64(tag::TIMESTAMP, now()),
        ];
        for ev in events {
            key.push(Attribute::u32(tag::ISCSI_SCN_BITMAP, ev.event));
            key.extend(ev.object_key.iter().cloned());
        }
        let xid = st.next_xid;
        st.next_xid = st.next_xid.wrapping_add(1);
        let mut scn = Message::request(
            FunctionId::SCN,
            xid,
            Attribute::string(tag::ISCSI_NAME, source),
            key,
            Vec::new(),
        );
        scn.flags = isns_proto::Flags::SERVER;
        let bytes = scn.to_bytes();
        let portals = scn_portals(&st.registry, &name);
        if !portals.is_empty() {
            out.extend(
                portals
                    .into_iter()
                    .map(|p| (ScnTarget::Portal(p), bytes.clone())),
            );
        } else if let Some(tx) = st.scn_conns.get(&name) {
            out.push((ScnTarget::Conn(tx.clone()), bytes));
        }
    }
    out
}

/// Portal address + SCN port (§6.3.10) of the entity holding node `name`.
fn scn_portals(reg: &Registry, name: &str) -> Vec<SocketAddr> {
    let key = [Attribute::string(tag::ISCSI_NAME, name)];
    let Some(e) = reg
        .entities
        .iter()
        .find(|e| e.of_kind(ObjectType::IscsiNode).any(|n| n.matches(&key)))
    else {
        return Vec::new();
    };
    e.of_kind(ObjectType::Portal)
        .filter_map(|p| {
            let ip = p.get(tag::PORTAL_IP_ADDRESS)?.as_ip()?;
            let port = p.get(tag::SCN_PORT)?.as_tcp_port()?;
            Some(SocketAddr::new(ip, port))
        })
        .take(1)
        .collect()
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
                        let mut head = [0u8; HEADER_LEN];
                        s.read_exact(&mut head).await?;
                        std::io::Result::Ok(())
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
