//! The tokio shell around [`FullFeatureSession`]: login (following redirects), then one
//! driver task that feeds received PDUs to the full feature session, hands completions to
//! waiting callers and writes all pending PDUs in one batch per wake-up.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use iscsi_proto::params::SessionParams;
use iscsi_proto::{BHS_LEN, Limits, Pdu, PduDecoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot};

use crate::cdb::{self, Capacity, ScsiRequest, StandardInquiry};
use crate::error::{Error, TaskError};
use crate::follower::MAX_REDIRECTS;
use crate::full_feature::{Completion, FullFeatureEvent, FullFeatureSession, Phase, ScsiResult};
use crate::id_map::IdMap;
use crate::login::{LoggedIn, LoginConfig, LoginExchange, LoginProgress};
use crate::transport::Transport;

/// ITT of login requests.
const LOGIN_ITT: u32 = 0;
/// Depth of the reader → driver PDU channel.
const PDU_CHANNEL: usize = 256;
/// Least room the reader gives an empty receive buffer.
const READ_RESERVE: usize = 64 * 1024;
/// Most room the reader gives an empty receive buffer (the largest PDU has a 16 MiB segment).
const MAX_READ_RESERVE: usize = 17 * 1024 * 1024;

/// How to open a session.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Names, ISID and operational preferences.
    pub login: LoginConfig,
    /// Outstanding task bound (further bounded by the target's MaxCmdSN).
    pub queue_depth: usize,
    /// Timeout of connect and of each login/discovery round trip.
    pub timeout: Duration,
}

impl SessionConfig {
    /// Normal session with default preferences, queue depth 32, 10 s timeout.
    pub fn new(initiator_name: &str, target: &str) -> Self {
        SessionConfig {
            login: LoginConfig::normal(initiator_name, target),
            queue_depth: 32,
            timeout: Duration::from_secs(10),
        }
    }
}

/// Where a login ended up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginInfo {
    /// The portal the session is on.
    pub portal: SocketAddr,
    /// The portal first tried, when the target redirected us.
    pub redirected_from: Option<SocketAddr>,
    /// Negotiated parameters.
    pub params: SessionParams,
    /// TSIH.
    pub tsih: u16,
}

/// Something that happened to a running session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// An event of the full feature phase (logout requested, drop announced, logged out...).
    FullFeature(FullFeatureEvent),
    /// The connection failed (I/O or protocol error); outstanding tasks became `Unfinished`.
    ConnectionLost(String),
    /// The driver ended; nothing more will come.
    Closed,
}

enum Request {
    Scsi(ScsiRequest, oneshot::Sender<Result<ScsiResult, TaskError>>),
    Logout,
}

/// A cloneable client of a session: issue commands there.
#[derive(Debug, Clone)]
pub struct SessionClient {
    tx: mpsc::UnboundedSender<Request>,
    portal: SocketAddr,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Scsi(r, _) => write!(f, "Scsi({:?})", r.cdb.first()),
            Request::Logout => write!(f, "Logout"),
        }
    }
}

impl SessionClient {
    /// The portal of the session.
    pub fn portal(&self) -> SocketAddr {
        self.portal
    }

    /// True once the session's driver has ended.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Run one SCSI command. A closed session answers [`TaskError::Unfinished`].
    pub async fn execute(&self, req: ScsiRequest) -> Result<ScsiResult, TaskError> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Request::Scsi(req, tx)).is_err() {
            return Err(TaskError::Unfinished);
        }
        rx.await.unwrap_or(Err(TaskError::Unfinished))
    }

    /// Ask for a graceful logout (drain, Logout, close); watch the events for `LoggedOut`.
    pub fn logout(&self) {
        let _ = self.tx.send(Request::Logout);
    }

    /// TEST UNIT READY.
    pub async fn test_unit_ready(&self, lun: u16) -> Result<(), TaskError> {
        self.execute(cdb::test_unit_ready(lun)).await.map(|_| ())
    }

    /// Standard INQUIRY.
    pub async fn inquiry(&self, lun: u16) -> Result<StandardInquiry, TaskError> {
        let r = self.execute(cdb::inquiry(lun, 96)).await?;
        StandardInquiry::parse(&r.data).ok_or(TaskError::Protocol("short INQUIRY data"))
    }

    /// READ CAPACITY (16).
    pub async fn read_capacity(&self, lun: u16) -> Result<Capacity, TaskError> {
        let r = self.execute(cdb::read_capacity16(lun)).await?;
        Capacity::parse(&r.data).ok_or(TaskError::Protocol("short READ CAPACITY data"))
    }

    /// REPORT LUNS.
    pub async fn report_luns(&self) -> Result<Vec<u16>, TaskError> {
        let r = self.execute(cdb::report_luns(4096)).await?;
        Ok(cdb::parse_report_luns(&r.data))
    }
}

/// An open session: its client plus its event stream.
#[derive(Debug)]
pub struct Session {
    /// Issue commands here (cloneable).
    pub client: SessionClient,
    /// Session events, ending with [`SessionEvent::Closed`].
    pub events: mpsc::UnboundedReceiver<SessionEvent>,
    /// Where and how the login went.
    pub info: LoginInfo,
}

impl Session {
    /// Log in at `portal` (following up to [`MAX_REDIRECTS`] redirects) and start the driver.
    pub async fn login(portal: SocketAddr, config: &SessionConfig) -> Result<Session, Error> {
        let (t, logged, info) = login_following_redirects(portal, config).await?;
        Ok(start(t, &logged, info, config.queue_depth))
    }

    /// Log in once at `portal`: a redirect is returned, not followed.
    pub async fn login_once(
        portal: SocketAddr,
        config: &SessionConfig,
    ) -> Result<LoginAttempt, Error> {
        Ok(match login_at(portal, config).await? {
            Reached::FullFeature(t, logged) => {
                let info = login_info(portal, None, &logged);
                LoginAttempt::LoggedIn(Box::new(start(t, &logged, info, config.queue_depth)))
            }
            Reached::Redirect(to) => LoginAttempt::Redirected(to),
        })
    }

    /// Log out gracefully and wait (bounded by `timeout`) until the session is closed.
    pub async fn logout(mut self, timeout: Duration) -> Result<(), Error> {
        self.client.logout();
        let wait = async {
            while let Some(e) = self.events.recv().await {
                match e {
                    SessionEvent::FullFeature(FullFeatureEvent::LoggedOut { .. }) => return Ok(()),
                    SessionEvent::ConnectionLost(why) => return Err(Error::Protocol(why)),
                    _ => {}
                }
            }
            Err(Error::Closed)
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| Error::Timeout("logout"))?
    }
}

/// Run the login exchange on a connected transport.
pub async fn login_on(t: &mut Transport, config: &LoginConfig) -> Result<LoginProgress, Error> {
    let mut login = LoginExchange::new(config.clone(), LOGIN_ITT, 1);
    let mut req = login.start()?;
    loop {
        t.send(&Pdu::LoginRequest(req)).await?;
        let resp = match t.recv().await? {
            Pdu::LoginResponse(r) => r,
            other => {
                return Err(Error::Protocol(format!(
                    "expected Login Response, got {:?}",
                    other.opcode()
                )));
            }
        };
        match login.on_response(&resp)? {
            LoginProgress::Send(next) => req = next,
            done => return Ok(done),
        }
    }
}

/// Where one login at one portal ended.
#[derive(Debug)]
pub enum LoginAttempt {
    /// The session is up.
    LoggedIn(Box<Session>),
    /// Redirected (Status-Class 1): log in at this portal instead.
    Redirected(SocketAddr),
}

/// Where one login exchange on a fresh connection ended.
enum Reached {
    FullFeature(Transport, Box<LoggedIn>),
    Redirect(SocketAddr),
}

/// Connect to `portal` and run one login exchange there.
async fn login_at(portal: SocketAddr, config: &SessionConfig) -> Result<Reached, Error> {
    let mut t = Transport::connect(portal, config.timeout).await?;
    match login_on(&mut t, &config.login).await? {
        LoginProgress::Done(logged) => {
            t.decoder.set_limits(Limits {
                max_recv_data_segment_length: logged.params.initiator_max_recv_data_segment_length,
            });
            t.decoder.set_digests(logged.params.digests());
            t.digests = logged.params.digests();
            Ok(Reached::FullFeature(t, logged))
        }
        LoginProgress::Redirect { address, .. } => {
            tracing::info!(from = %portal, to = %address, "login redirected");
            Ok(Reached::Redirect(address))
        }
        LoginProgress::Send(_) => Err(Error::Protocol("login ended early".into())),
    }
}

fn login_info(portal: SocketAddr, redirected_from: Option<SocketAddr>, l: &LoggedIn) -> LoginInfo {
    LoginInfo {
        portal,
        redirected_from,
        params: l.params.clone(),
        tsih: l.tsih,
    }
}

/// Connect and log in at `portal`, following redirects (at most [`MAX_REDIRECTS`]).
pub async fn login_following_redirects(
    portal: SocketAddr,
    config: &SessionConfig,
) -> Result<(Transport, LoggedIn, LoginInfo), Error> {
    let mut addr = portal;
    let mut redirected_from = None;
    for _ in 0..=MAX_REDIRECTS {
        match login_at(addr, config).await? {
            Reached::FullFeature(t, logged) => {
                let info = login_info(addr, redirected_from, &logged);
                return Ok((t, *logged, info));
            }
            Reached::Redirect(address) => {
                redirected_from.get_or_insert(addr);
                addr = address;
            }
        }
    }
    Err(Error::TooManyRedirects(addr))
}

fn start(t: Transport, logged: &LoggedIn, info: LoginInfo, queue_depth: usize) -> Session {
    let (req_tx, req_rx) = mpsc::unbounded_channel();
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let ffp = FullFeatureSession::new(logged, queue_depth);
    let portal = info.portal;
    tokio::spawn(drive(ffp, t, req_rx, ev_tx, queue_depth));
    Session {
        client: SessionClient { tx: req_tx, portal },
        events: ev_rx,
        info,
    }
}

async fn read_pdus(
    mut rd: OwnedReadHalf,
    mut buf: BytesMut,
    mut decoder: PduDecoder,
    tx: mpsc::Sender<Result<Pdu, Error>>,
    portal: SocketAddr,
) {
    // Bytes of the last PDU: the size an empty buffer is given for the next read, so that a
    // large Data-In lands in one buffer instead of being copied into the larger one the
    // decoder reserves once it has seen the header.
    let mut last = READ_RESERVE;
    let mut lowat = RecvLowat::new(&rd);
    loop {
        let before = buf.len();
        match decoder.decode(&mut buf) {
            Ok(Some(p)) => {
                last = before - buf.len();
                if tx.send(Ok(p)).await.is_err() {
                    return;
                }
                continue;
            }
            Ok(None) => {}
            Err(e) => {
                let _ = tx.send(Err(e.into())).await;
                return;
            }
        }
        if buf.len() < BHS_LEN {
            // No header yet: room for a PDU like the last one (at least 64 KiB).
            buf.reserve(last.clamp(READ_RESERVE, MAX_READ_RESERVE));
        } else if buf.len() == buf.capacity() {
            // The decoder reserved room for the whole PDU it has the header of: only a PDU
            // that is complete and followed by nothing needs more. Reserving more otherwise
            // would copy the partial PDU into a new buffer.
            buf.reserve(READ_RESERVE);
        }
        lowat.wait_for(missing(&buf, decoder.digests()));
        let source = match rd.read_buf(&mut buf).await {
            Ok(0) => std::io::ErrorKind::UnexpectedEof.into(),
            Ok(_) => continue,
            Err(e) => e,
        };
        let _ = tx.send(Err(Error::Io { portal, source })).await;
        return;
    }
}

/// Bytes still to come of the PDU whose header is at the front of `buf` (0 without a header).
fn missing(buf: &[u8], digests: iscsi_proto::Digests) -> usize {
    let Some(h) = buf.get(..BHS_LEN) else {
        return 0;
    };
    // RFC 7143 §11.2.1: TotalAHSLength in 4-byte words, DataSegmentLength in 3 bytes,
    // the segment padded to 4 bytes; digests of 4 bytes each (§11.1).
    let ahs = h[4] as usize * 4;
    let dsl = u32::from_be_bytes([0, h[5], h[6], h[7]]) as usize;
    let header_digest = if digests.header { 4 } else { 0 };
    let data_digest = if digests.data && dsl > 0 { 4 } else { 0 };
    let total = BHS_LEN + ahs + header_digest + dsl.next_multiple_of(4) + data_digest;
    total.saturating_sub(buf.len())
}

/// Least part of a PDU still to come for which the reader waits until all of it is queued.
const LOWAT_FROM: usize = 256 * 1024;
/// Most bytes the reader asks the kernel to queue before waking it.
const LOWAT_MAX: usize = 1024 * 1024;

/// SO_RCVLOWAT of the connection (socket(7)): while a large Data-In is coming, wake the
/// reader once the rest of it is queued instead of at every segment. Reading a 1 MiB PDU in
/// many small pieces woke both ends for each and had them contend for the socket lock.
struct RecvLowat {
    #[cfg(target_os = "linux")]
    fd: std::os::fd::RawFd,
    current: usize,
}

impl RecvLowat {
    fn new(rd: &OwnedReadHalf) -> Self {
        RecvLowat {
            #[cfg(target_os = "linux")]
            fd: std::os::fd::AsRawFd::as_raw_fd(rd.as_ref()),
            current: 1,
        }
    }

    /// Before waiting for more bytes when `missing` bytes of the current PDU are still to come
    /// (they will come: the target has started the PDU).
    fn wait_for(&mut self, missing: usize) {
        let want = if missing >= LOWAT_FROM {
            missing.min(LOWAT_MAX)
        } else {
            1
        };
        if want == self.current {
            return;
        }
        #[cfg(target_os = "linux")]
        {
            let v = want as libc::c_int;
            // SAFETY: `fd` is the connection's socket, open for as long as the read half
            // that owns it (this struct lives in the reader next to it); the value is a c_int
            // on the stack, its size passed with it.
            let r = unsafe {
                libc::setsockopt(
                    self.fd,
                    libc::SOL_SOCKET,
                    libc::SO_RCVLOWAT,
                    (&v as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if r == 0 {
                self.current = want;
            }
        }
    }
}

/// Writes the session task's output in order: what is ready at once goes out in one vectored
/// write (at most [`PARTS_PER_WRITE`] parts).
async fn write_batches(mut wr: OwnedWriteHalf, mut rx: mpsc::UnboundedReceiver<Bytes>) {
    let mut ready: Vec<Bytes> = Vec::with_capacity(PARTS_PER_WRITE);
    while let Some(b) = rx.recv().await {
        ready.push(b);
        while ready.len() < PARTS_PER_WRITE {
            match rx.try_recv() {
                Ok(b) => ready.push(b),
                Err(_) => break,
            }
        }
        if write_all_vectored(&mut wr, &mut ready).await.is_err() {
            return;
        }
        ready.clear();
    }
    let _ = wr.shutdown().await;
}

/// How many parts one vectored write takes at most.
const PARTS_PER_WRITE: usize = 64;

/// Writes every byte of `bufs`, in order, with as few `writev` calls as the socket allows.
async fn write_all_vectored(wr: &mut OwnedWriteHalf, bufs: &mut [Bytes]) -> std::io::Result<()> {
    use bytes::Buf;
    let mut first = 0;
    while first < bufs.len() {
        // On the stack: no allocation per write.
        let mut slices = [std::io::IoSlice::new(&[]); PARTS_PER_WRITE];
        let mut count = 0;
        for (slot, b) in slices
            .iter_mut()
            .zip(bufs[first..].iter().filter(|b| !b.is_empty()))
        {
            *slot = std::io::IoSlice::new(b);
            count += 1;
        }
        if count == 0 {
            return Ok(());
        }
        let mut n = wr.write_vectored(&slices[..count]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while n > 0 && first < bufs.len() {
            let b = &mut bufs[first];
            let take = n.min(b.len());
            b.advance(take);
            n -= take;
            if b.is_empty() {
                first += 1;
            }
        }
        while first < bufs.len() && bufs[first].is_empty() {
            first += 1;
        }
    }
    Ok(())
}

/// Encodes everything the full feature session wants sent, in wire order, into `parts`:
/// headers and data segments up to [`iscsi_proto::COPY_DATA_MAX`] copied into `buf` and split
/// off it (its allocation is reused once the writer has dropped earlier parts), longer data
/// segments (a write's payload) as they are, sent from the caller's buffer.
fn batch(
    ffp: &mut FullFeatureSession,
    digests: iscsi_proto::Digests,
    buf: &mut BytesMut,
    parts: &mut Vec<Bytes>,
) -> Result<(), Error> {
    while let Some(p) = ffp.poll_transmit() {
        let payload = p.encode_header(buf, digests)?;
        if payload.data.len() > iscsi_proto::COPY_DATA_MAX {
            parts.push(buf.split().freeze());
            parts.push(payload.data);
        } else {
            buf.extend_from_slice(&payload.data);
        }
        buf.extend_from_slice(payload.trailer.as_slice());
    }
    if !buf.is_empty() {
        parts.push(buf.split().freeze());
    }
    Ok(())
}

async fn drive(
    mut ffp: FullFeatureSession,
    t: Transport,
    mut requests: mpsc::UnboundedReceiver<Request>,
    events: mpsc::UnboundedSender<SessionEvent>,
    queue_depth: usize,
) {
    let Transport {
        stream,
        rbuf,
        decoder,
        digests,
        portal,
        ..
    } = t;
    let (rd, wr) = stream.into_split();
    let (pdu_tx, mut pdus) = mpsc::channel(PDU_CHANNEL);
    let reader = tokio::spawn(read_pdus(rd, rbuf, decoder, pdu_tx, portal));
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let writer = tokio::spawn(write_batches(wr, out_rx));
    let mut waiters: IdMap<u64, oneshot::Sender<Result<ScsiResult, TaskError>>> = IdMap::default();
    let mut next_id = 0u64;
    let mut requests_open = true;
    let mut wbuf = BytesMut::new();
    let mut parts: Vec<Bytes> = Vec::new();
    // Received PDUs handled per turn: after that many the new commands go out and the callers
    // run, so that the target works on them while the rest of the answers are handled here.
    let group = group_size(queue_depth);
    loop {
        tokio::select! {
            p = pdus.recv() => on_pdu(&mut ffp, &events, p),
            r = requests.recv(), if requests_open => {
                requests_open = on_request(&mut ffp, &mut waiters, &mut next_id, r);
            }
        }
        // What else is ready is handled before one batch is sent: one write for many
        // commands, one wake-up of the writer. Requests are all taken (they are what the
        // batch sends); received PDUs at most `group` per turn.
        let mut received = 1;
        for _ in 0..READY_PER_BATCH {
            let mut any = false;
            if received < group
                && let Ok(p) = pdus.try_recv()
            {
                on_pdu(&mut ffp, &events, Some(p));
                received += 1;
                any = true;
            }
            if requests_open {
                match requests.try_recv() {
                    Ok(r) => {
                        requests_open = on_request(&mut ffp, &mut waiters, &mut next_id, Some(r));
                        any = true;
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        requests_open = on_request(&mut ffp, &mut waiters, &mut next_id, None);
                        any = true;
                    }
                    Err(mpsc::error::TryRecvError::Empty) => {}
                }
            }
            if !any {
                break;
            }
        }
        match batch(&mut ffp, digests, &mut wbuf, &mut parts) {
            Ok(()) => {
                for b in parts.drain(..) {
                    let _ = out_tx.send(b);
                }
            }
            Err(e) => {
                wbuf.clear();
                parts.clear();
                lost(&mut ffp, &events, e);
            }
        }
        let mut completed = false;
        while let Some(Completion { id, result }) = ffp.poll_completion() {
            if let Some(w) = waiters.remove(&id) {
                let _ = w.send(result);
                completed = true;
            }
        }
        while let Some(e) = ffp.poll_event() {
            let _ = events.send(SessionEvent::FullFeature(e));
        }
        if ffp.phase() == Phase::Closed {
            break;
        }
        if completed && !pdus.is_empty() {
            // Let the callers just completed issue their next commands before the next
            // group of answers is taken: they go out in the next batch.
            tokio::task::yield_now().await;
        }
    }
    requests.close();
    while let Ok(r) = requests.try_recv() {
        if let Request::Scsi(_, tx) = r {
            let _ = tx.send(Err(TaskError::Unfinished));
        }
    }
    drop(out_tx);
    // Let the writer flush (the Logout Response already arrived, so this is short).
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
    reader.abort();
    let _ = events.send(SessionEvent::Closed);
}

/// How many more ready PDUs and requests the session task takes before it sends a batch.
const READY_PER_BATCH: usize = 64;

/// Received PDUs handled per turn of the session task at `queue_depth`: a quarter of the
/// queue, at most 8, so that at least four groups of commands are in flight and the target
/// works on one while the initiator handles another.
fn group_size(queue_depth: usize) -> usize {
    (queue_depth / 4).clamp(1, 8)
}

/// A PDU (or the reader's end) from the connection.
fn on_pdu(
    ffp: &mut FullFeatureSession,
    events: &mpsc::UnboundedSender<SessionEvent>,
    p: Option<Result<Pdu, Error>>,
) {
    match p {
        Some(Ok(pdu)) => {
            if let Err(e) = ffp.receive(pdu) {
                lost(ffp, events, e);
            }
        }
        Some(Err(e)) => lost(ffp, events, e),
        None => lost(ffp, events, Error::Closed),
    }
}

/// A request from a handle (`None`: every handle is gone, so log out). False once no more
/// requests can come.
fn on_request(
    ffp: &mut FullFeatureSession,
    waiters: &mut IdMap<u64, oneshot::Sender<Result<ScsiResult, TaskError>>>,
    next_id: &mut u64,
    r: Option<Request>,
) -> bool {
    match r {
        Some(Request::Scsi(req, tx)) => {
            *next_id += 1;
            waiters.insert(*next_id, tx);
            ffp.submit(*next_id, req);
            true
        }
        Some(Request::Logout) => {
            ffp.logout();
            true
        }
        None => {
            ffp.logout();
            false
        }
    }
}

fn lost(ffp: &mut FullFeatureSession, events: &mpsc::UnboundedSender<SessionEvent>, e: Error) {
    if ffp.phase() != Phase::Closed {
        tracing::warn!(error = %e, "iSCSI connection lost");
        let _ = events.send(SessionEvent::ConnectionLost(e.to_string()));
    }
    ffp.connection_lost();
}
