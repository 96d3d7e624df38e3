//! Portal processors: one OS thread (`portal-N`) per portal, each running its own tokio
//! current-thread runtime that owns the portal's listener and every connection accepted on it.
//! A connection is a thin shell around the sans-IO [`Connection`] core: it reads large chunks
//! into a `BytesMut` and feeds them to the core, runs the SCSI work the core asks for inline
//! (see [`ConnectionShell`]), and writes all the responses produced with vectored writes
//! (headers copied into one buffer, large data segments passed by reference).
//!
//! Each connection counts the bytes it reads and writes; each processor measures its own load
//! on a 1 s tick and publishes it for the control plane ([`crate::load`]).

use std::io::IoSlice;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use balancer::PortalId;
use bytes::{Buf, Bytes, BytesMut};
use iscsi_proto::{Digests, Pdu};
use iscsi_target_core::connection::DataOutSink;
use iscsi_target_core::{CloseReason, Connection};
use scsi::LentView;
use scsi::data_in::hold_all;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc, watch};

use crate::load::PortalProbe;
use crate::target_set::{ConnectionShell, OUTPUT_BUDGET, TargetSet};

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 512 * 1024;
/// I/O vectors per `writev`.
const MAX_IOVECS: usize = 64;
/// The most connections one portal serves at a time: its limit when the open-file limit
/// leaves room for it (see [`PortalLimits::sized`]).
pub const MAX_CONNECTIONS: usize = 1024;
/// Default of [`PortalLimits::per_address`].
pub const MAX_CONNECTIONS_PER_ADDRESS: usize = 64;
/// Descriptors kept out of the portals' share: standard streams, the runtimes' event
/// descriptors, listeners, iSNS and admin sockets, the LUN files' are counted apart.
pub const DESCRIPTOR_RESERVE: u64 = 64;
/// Fewest connections a portal may be given: below this the open-file limit is too low to
/// serve anything and the target refuses to start.
pub const MIN_CONNECTIONS: usize = 8;

/// How many connections a portal serves at a time. At either limit, the oldest connection
/// still in login (from that address, or from anywhere) is closed to admit the new one;
/// only when every such connection is logged in is the new one refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortalLimits {
    /// Connections of the portal in all.
    pub total: usize,
    /// Connections from one client address: no single host (or one attacker) can take the
    /// whole portal, even with logged-in sessions.
    pub per_address: usize,
}

impl Default for PortalLimits {
    fn default() -> Self {
        PortalLimits {
            total: MAX_CONNECTIONS,
            per_address: MAX_CONNECTIONS_PER_ADDRESS,
        }
    }
}

impl PortalLimits {
    /// Limits for each of `portals` portals within `open_files` descriptors, of which
    /// `reserved` (LUN files, admin connections, [`DESCRIPTOR_RESERVE`]) are not the
    /// portals': the rest is shared evenly, at most `total` each. An error when a portal
    /// would get fewer than [`MIN_CONNECTIONS`].
    pub fn sized(
        self,
        open_files: u64,
        portals: usize,
        reserved: u64,
    ) -> Result<PortalLimits, String> {
        let share = open_files.saturating_sub(reserved) / portals.max(1) as u64;
        let total = (self.total as u64).min(share) as usize;
        if total < MIN_CONNECTIONS {
            return Err(format!(
                "the open-file limit ({open_files}) leaves {share} connections per portal for \
                 {portals} portal(s), {reserved} descriptors being reserved; at least \
                 {MIN_CONNECTIONS} are needed: raise it (ulimit -n)"
            ));
        }
        Ok(PortalLimits {
            total,
            per_address: self.per_address.clamp(1, total),
        })
    }
}
/// A write that makes no progress for this long closes the connection: a peer that stops
/// reading cannot hold its queued output (up to [`OUTPUT_BUDGET`] plus one command's
/// Data-In) forever.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Per-connection output limits of [`serve`].
#[derive(Clone, Copy, Debug)]
struct OutputLimits {
    /// See [`OUTPUT_BUDGET`].
    budget: usize,
    /// See [`WRITE_STALL_TIMEOUT`].
    stall: Duration,
}

impl Default for OutputLimits {
    fn default() -> Self {
        OutputLimits {
            budget: OUTPUT_BUDGET,
            stall: WRITE_STALL_TIMEOUT,
        }
    }
}

/// Starts the processor of one portal on its own thread, serving `listener` within `limits`.
pub fn spawn(
    index: usize,
    portal: PortalId,
    listener: std::net::TcpListener,
    targets: Arc<TargetSet>,
    shutdown: watch::Receiver<bool>,
    limits: PortalLimits,
) -> std::io::Result<JoinHandle<()>> {
    listener.set_nonblocking(true)?;
    std::thread::Builder::new()
        .name(format!("portal-{index}"))
        .spawn(move || match current_thread_runtime() {
            Ok(rt) => rt.block_on(accept_loop(portal, listener, targets, shutdown, limits)),
            Err(e) => tracing::error!("portal-{index}: cannot start its runtime: {e}"),
        })
}

/// The event loop of one processor thread.
pub(crate) fn current_thread_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// What the accept loop and one connection task share: the task says when its login is
/// complete; the loop may tell it to close.
#[derive(Default)]
struct ConnectionToken {
    logged_in: AtomicBool,
    close: Notify,
}

/// The connections of one portal with their client addresses, oldest first.
#[derive(Default)]
struct LiveConnections {
    list: Vec<(IpAddr, Arc<ConnectionToken>)>,
}

/// Why [`LiveConnections::admit`] refused a connection.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    /// The address has its [`PortalLimits::per_address`] connections, all logged in.
    Address,
    /// The portal has its [`PortalLimits::total`] connections, all logged in.
    Portal,
}

impl LiveConnections {
    /// Room for one more connection from `from` within `limits`: the ended ones are
    /// forgotten; then, if `from` is at its limit, its oldest connection still in login is
    /// told to close, else, if the portal is at its limit, the oldest one still in login
    /// from anywhere is. Refused when no such connection is left to close.
    fn admit(
        &mut self,
        from: IpAddr,
        limits: PortalLimits,
    ) -> Result<Arc<ConnectionToken>, Refusal> {
        // A token only the list holds belongs to a task that has ended.
        self.list.retain(|(_, t)| Arc::strong_count(t) > 1);
        let in_login = |t: &Arc<ConnectionToken>| !t.logged_in.load(Ordering::Relaxed);
        let from_here = self.list.iter().filter(|(a, _)| *a == from).count();
        let victim = if from_here >= limits.per_address {
            let i = self
                .list
                .iter()
                .position(|(a, t)| *a == from && in_login(t));
            Some(i.ok_or(Refusal::Address)?)
        } else if self.list.len() >= limits.total {
            let i = self.list.iter().position(|(_, t)| in_login(t));
            Some(i.ok_or(Refusal::Portal)?)
        } else {
            None
        };
        if let Some(i) = victim {
            self.list.remove(i).1.close.notify_one();
        }
        let token = Arc::new(ConnectionToken::default());
        self.list.push((from, token.clone()));
        Ok(token)
    }
}

async fn accept_loop(
    portal: PortalId,
    listener: std::net::TcpListener,
    targets: Arc<TargetSet>,
    mut shutdown: watch::Receiver<bool>,
    limits: PortalLimits,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(%portal, "cannot register the listener: {e}");
            return;
        }
    };
    let mut live = LiveConnections::default();
    // The processor's own measurement: this thread's CPU time, run-queue wait and service
    // times, with the portal's byte counters, each second.
    let stats = targets.control.portal_stats(portal).cloned();
    let mut probe = PortalProbe::new(targets.control.smoothing_tau_ms());
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Some(stats) = &stats {
                    probe.tick(stats);
                }
            }
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    let token = match live.admit(peer.ip(), limits) {
                        Ok(token) => token,
                        Err(Refusal::Address) => {
                            tracing::warn!(%portal, %peer, "connection refused: this address has {} connections, all logged in", limits.per_address);
                            continue;
                        }
                        Err(Refusal::Portal) => {
                            tracing::warn!(%portal, %peer, "connection refused: the portal has {} connections, all logged in", limits.total);
                            continue;
                        }
                    };
                    let targets = targets.clone();
                    let shutdown = shutdown.clone();
                    tokio::spawn(async move {
                        let limits = OutputLimits::default();
                        serve(stream, peer, portal, &targets, shutdown, &token, limits).await;
                    });
                }
                Err(e) => {
                    tracing::warn!(%portal, "accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

/// Serves one connection until it closes; returns the most output its core had queued
/// (see [`ConnectionShell::peak_queued`]).
///
/// Back-pressure: when the output queued after a command exceeds `limits.budget`, the shell
/// stops executing commands; the output is written (waiting for the socket as long as it
/// makes progress within `limits.stall`) before the rest of the read buffer is fed, and
/// the socket is read again only once the buffer holds no whole PDU.
async fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    portal: PortalId,
    targets: &TargetSet,
    mut shutdown: watch::Receiver<bool>,
    token: &ConnectionToken,
    limits: OutputLimits,
) -> usize {
    let _ = stream.set_nodelay(true);
    let mut logged_in = false;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut chap_random = [0u8; iscsi_proto::chap::CHALLENGE_LEN + 1];
    rand::Rng::fill(&mut rand::rng(), &mut chap_random[..]);
    let mut conn =
        Connection::new(targets.catalog(), portal, Instant::now()).with_chap_random(chap_random);
    let mut shell = ConnectionShell::new(targets, portal, tx).with_budget(limits.budget);
    let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
    let mut out = Vec::new();
    let mut tx_buf = TxBatch::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut write_failed = false;
    let mut read_at = Instant::now();
    // A large Data-Out's data segment being received in place.
    let mut sink: Option<DataOutSink> = None;
    let why = 'conn: loop {
        let mut read = false;
        let header_first = match sink {
            None if rbuf.is_empty() => conn.read_header_first(),
            _ => None,
        };
        tokio::select! {
            r = receive(&mut stream, &mut rbuf, &mut sink, header_first) => match r {
                Ok(0) => break CloseReason::Transport("connection closed by the initiator".into()),
                Ok(n) => {
                    read = true;
                    read_at = Instant::now();
                    shell.received(n);
                    if sink.is_some() {
                        shell.received_in_place(n);
                    }
                    if let Some(full) = sink.take_if(|s| s.is_full()) {
                        conn.on_data_out_sink(full, read_at);
                    }
                }
                Err(e) => break CloseReason::Transport(format!("connection lost: read error: {e}")),
            },
            Some(cmd) = rx.recv() => conn.on_command(cmd, Instant::now()),
            // From the start, login included: the core closes a login that takes too long.
            _ = tick.tick() => {
                shell.refresh(&mut conn);
                conn.handle_timeout(Instant::now());
            }
            _ = shutdown.changed() => break CloseReason::Transport("target shutting down".into()),
            _ = token.close.notified(), if !logged_in => {
                tracing::debug!(%portal, %peer, "connection limit reached: closing this connection, still in login, for a new one");
                break CloseReason::Failed("closed for a new connection: the portal is at its connection limit".into());
            }
        }
        // Feeds what was read, writing the output each time it exceeds the budget. Commands
        // fed after such a write still count their service time from their read.
        loop {
            let over_budget = read && shell.feed(&mut conn, &mut rbuf, read_at);
            if !logged_in && conn.params().is_some() {
                logged_in = true;
                token.logged_in.store(true, Ordering::Relaxed);
            }
            if let Some(f) = shell.take_auth_failure() {
                crate::metrics::LoginCounters::count(&targets.control.logins.authentication_failed);
                // Logged with the address, and answered late: only this connection waits.
                let (delay, recent) = targets.auth_throttle.failed(peer.ip(), Instant::now());
                tracing::warn!(
                    %portal,
                    %peer,
                    initiator = %f.initiator,
                    target = f.target.as_deref().unwrap_or("(discovery)"),
                    "authentication failed (status 0x0201): {}; {recent} recent failure(s) from {}, answering in {} ms",
                    f.why,
                    peer.ip(),
                    delay.as_millis()
                );
                tokio::time::sleep(delay).await;
            }
            if conn.has_output() {
                let written = tx_buf
                    .write(&mut stream, &mut conn, &mut out, limits.stall)
                    .await;
                shell.sent(written.bytes);
                if let Err(e) = written.result {
                    write_failed = true;
                    break 'conn write_failure(&e, limits.stall);
                }
                shell.written(&conn);
            }
            if let Some(reason) = conn.close_reason() {
                break 'conn reason.clone();
            }
            if !over_budget {
                break;
            }
        }
        if read && sink.is_none() && !rbuf.is_empty() {
            sink = conn.data_out_sink(&mut rbuf);
        }
        if read && rbuf.capacity() - rbuf.len() < READ_CHUNK / 4 {
            rbuf.reserve(READ_CHUNK);
        }
    };
    if !write_failed && conn.has_output() {
        let written = tx_buf
            .write(&mut stream, &mut conn, &mut out, limits.stall)
            .await;
        shell.sent(written.bytes);
    }
    let _ = stream.shutdown().await;
    tracing::debug!(%portal, %peer, "{why}");
    shell.closed(&mut conn, why);
    shell.peak_queued()
}

/// One read from the socket: into the open Data-Out sink (its data segment in place), else
/// into `rbuf` — only `header_first` bytes when set (a PDU header, whose data segment may then
/// go in place).
async fn receive(
    stream: &mut TcpStream,
    rbuf: &mut BytesMut,
    sink: &mut Option<DataOutSink>,
    header_first: Option<usize>,
) -> std::io::Result<usize> {
    use bytes::BufMut;
    match (sink, header_first) {
        (Some(s), _) => stream.read_buf(&mut s.spare()).await,
        (None, Some(n)) => stream.read_buf(&mut rbuf.limit(n)).await,
        (None, None) => stream.read_buf(rbuf).await,
    }
}

/// Why a connection whose write failed with `e` is closed.
fn write_failure(e: &std::io::Error, stall: Duration) -> CloseReason {
    if e.kind() == std::io::ErrorKind::TimedOut {
        CloseReason::Transport(format!(
            "peer stopped reading for {} s",
            stall.as_secs_f64()
        ))
    } else {
        CloseReason::Transport(format!("connection lost: write error: {e}"))
    }
}

/// What [`TxBatch::write`] did: the bytes it wrote, and whether all were.
struct Written {
    bytes: usize,
    result: std::io::Result<()>,
}

/// Encoded output of one batch: small parts gathered in `hdr` (never split off it: the
/// buffer is reused batch after batch without an allocation or a reference count), large data
/// segments kept as their own `Bytes`; `segs` lists them in wire order.
///
/// Some data may be views of a unit's medium (the page cache, lent by a READ). Every copy of
/// them — into `hdr` while encoding, into the socket by each `writev` — is made holding their
/// ranges shared ([`scsi::data_in::hold_all`]), so no WRITE changes a block while it is
/// copied; nothing is held while the batch waits for the socket. A `writev` that stops inside
/// a block of a view has the rest of that block copied before the ranges are let go, so each
/// block goes out as it was at one moment (the Data-In PDUs of a view are cut at block
/// boundaries: `Connection::poll_transmit_lent`).
#[derive(Default)]
struct TxBatch {
    hdr: BytesMut,
    segs: Vec<Seg>,
    lent: Vec<LentView>,
}

/// One part of a batch's output.
enum Seg {
    /// Bytes of [`TxBatch::hdr`] still to write.
    Hdr(std::ops::Range<usize>),
    /// A data segment still to write.
    Data(Bytes),
}

impl Seg {
    fn bytes<'a>(&'a self, hdr: &'a [u8]) -> &'a [u8] {
        match self {
            Seg::Hdr(r) => hdr.get(r.clone()).unwrap_or_default(),
            Seg::Data(b) => b,
        }
    }

    fn len(&self) -> usize {
        match self {
            Seg::Hdr(r) => r.len(),
            Seg::Data(b) => b.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl TxBatch {
    fn encode(&mut self, pdus: &mut Vec<(Pdu, Digests)>) {
        // Taken before the first copy of a data segment, if there are views at all.
        let mut held = None;
        let mut start = self.hdr.len();
        for (pdu, digests) in pdus.drain(..) {
            match pdu.encode_header(&mut self.hdr, digests) {
                Ok(payload) => {
                    if payload.data.len() <= iscsi_proto::COPY_DATA_MAX {
                        if held.is_none() && !self.lent.is_empty() && !payload.data.is_empty() {
                            held = Some(hold_all(&self.lent));
                        }
                        self.hdr.extend_from_slice(&payload.data);
                    } else {
                        self.segs.push(Seg::Hdr(start..self.hdr.len()));
                        self.segs.push(Seg::Data(payload.data));
                        start = self.hdr.len();
                    }
                    self.hdr.extend_from_slice(payload.trailer.as_slice());
                }
                Err(e) => tracing::error!("cannot encode a response: {e}"),
            }
        }
        if self.hdr.len() > start {
            self.segs.push(Seg::Hdr(start..self.hdr.len()));
        }
    }

    /// Takes `conn`'s queued output (PDUs and the views lent to them), encodes and writes it
    /// all; gives the bytes written, whatever the outcome.
    async fn write(
        &mut self,
        stream: &mut TcpStream,
        conn: &mut Connection,
        pdus: &mut Vec<(Pdu, Digests)>,
        stall: Duration,
    ) -> Written {
        conn.poll_transmit_lent(pdus, &mut self.lent);
        let mut bytes = 0;
        let result = self.write_counted(stream, pdus, stall, &mut bytes).await;
        self.segs.clear();
        self.hdr.clear();
        self.lent.clear();
        Written { bytes, result }
    }

    async fn write_counted(
        &mut self,
        stream: &mut TcpStream,
        pdus: &mut Vec<(Pdu, Digests)>,
        stall: Duration,
        bytes: &mut usize,
    ) -> std::io::Result<()> {
        self.encode(pdus);
        let mut first = 0;
        while first < self.segs.len() {
            // No progress for `stall`: the peer stopped reading.
            tokio::time::timeout(stall, stream.writable())
                .await
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
            let TxBatch { hdr, segs, lent } = self;
            let held = hold_all(lent);
            let n = {
                let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                let mut count = 0;
                for (slot, seg) in slices.iter_mut().zip(segs.iter().skip(first)) {
                    *slot = IoSlice::new(seg.bytes(hdr));
                    count += 1;
                }
                match stream.try_write_vectored(&slices[..count]) {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            };
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            *bytes += n;
            let mut left = n;
            while left > 0 {
                let Some(seg) = segs.get_mut(first) else {
                    break;
                };
                if seg.len() <= left {
                    left -= seg.len();
                    first += 1;
                    continue;
                }
                match seg {
                    Seg::Hdr(r) => r.start += left,
                    Seg::Data(data) => {
                        data.advance(left);
                        // Stopped inside this segment: finish its block now, as it is.
                        if let Some(k) = lent.iter().find_map(|v| v.to_block_end(data))
                            && k > 0
                        {
                            let k = k.min(data.len());
                            let at = hdr.len();
                            hdr.extend_from_slice(data.get(..k).unwrap_or_default());
                            data.advance(k);
                            segs.insert(first, Seg::Hdr(at..hdr.len()));
                        }
                    }
                }
                left = 0;
            }
            drop(held);
            while self.segs.get(first).is_some_and(Seg::is_empty) {
                first += 1;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use iscsi_proto::{Limits, LoginRequest, PduDecoder, ScsiCommand, Stage};
    use tokio::time::timeout;

    use super::*;
    use crate::target_set::tests::{TARGET, target_set, target_set_of, target_set_with};

    const LIMIT: usize = 4;
    const BOUND: Duration = Duration::from_secs(10);

    /// A portal with room for [`LIMIT`] connections on a loopback port; the shutdown sender
    /// keeps it running.
    async fn portal() -> (SocketAddr, watch::Sender<bool>) {
        portal_with(PortalLimits {
            total: LIMIT,
            per_address: LIMIT,
        })
    }

    /// A portal with `limits` on a loopback port.
    fn portal_with(limits: PortalLimits) -> (SocketAddr, watch::Sender<bool>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = watch::channel(false);
        let targets = Arc::new(target_set());
        tokio::spawn(accept_loop(PortalId(0), listener, targets, rx, limits));
        (addr, tx)
    }

    /// A connection to `addr` from the loopback address `from`.
    async fn connect_from(from: [u8; 4], addr: SocketAddr) -> std::io::Result<TcpStream> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::from((from, 0)))?;
        socket.connect(addr).await
    }

    /// Connects and logs in to the test target as `initiator`: the status of the answer.
    async fn login(addr: SocketAddr, initiator: &str) -> std::io::Result<(TcpStream, u8, u8)> {
        login_from([127, 0, 0, 1], addr, initiator).await
    }

    /// [`login`] from the loopback address `from`.
    async fn login_from(
        from: [u8; 4],
        addr: SocketAddr,
        initiator: &str,
    ) -> std::io::Result<(TcpStream, u8, u8)> {
        let mut s = connect_from(from, addr).await?;
        let mut b = BytesMut::new();
        let keys = [
            ("InitiatorName", initiator),
            ("TargetName", TARGET),
            ("AuthMethod", "None"),
        ];
        Pdu::LoginRequest(LoginRequest::operational([0x80, 0, 0, 0, 0, 1], 1, &keys))
            .encode(&mut b, Digests::NONE)
            .unwrap();
        s.write_all(&b).await?;
        let mut decoder = PduDecoder::new(Limits {
            max_recv_data_segment_length: 8192,
        });
        let mut rbuf = BytesMut::new();
        loop {
            if let Some(p) = decoder.decode(&mut rbuf).unwrap() {
                let Pdu::LoginResponse(r) = p else {
                    panic!("{p:?}")
                };
                if r.status_class == 0 {
                    assert_eq!(r.nsg, Stage::FullFeaturePhase);
                }
                return Ok((s, r.status_class, r.status_detail));
            }
            if s.read_buf(&mut rbuf).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// A failed CHAP login is answered late, after the per-address delay, while the portal
    /// serves other connections meanwhile.
    #[tokio::test]
    async fn a_failed_authentication_waits_alone() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (_tx, rx) = watch::channel(false);
        let targets = Arc::new(target_set_with(crate::TargetAccess {
            chap: Some(crate::Credentials {
                user: "alice".into(),
                secret: "alice-secret-1".into(),
            }),
            ..Default::default()
        }));
        // The guesser's address has failed four times: its next answer waits 1.6 s.
        let guesser: std::net::IpAddr = "127.0.0.5".parse().unwrap();
        for _ in 0..4 {
            targets.auth_throttle.failed(guesser, Instant::now());
        }
        tokio::spawn(accept_loop(
            PortalId(0),
            listener,
            targets.clone(),
            rx,
            PortalLimits {
                total: LIMIT,
                per_address: LIMIT,
            },
        ));
        // No CHAP: refused with 0x0201, after the delay.
        let slow = tokio::spawn(login_from([127, 0, 0, 5], addr, "iqn.guesser"));
        let recorded = timeout(BOUND, async {
            while targets.auth_throttle.recent(guesser) < 5 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(recorded.is_ok(), "the failure was recorded");
        // Meanwhile another host's discovery session logs in on the same portal.
        let mut s = connect_from([127, 0, 0, 6], addr).await.unwrap();
        let mut b = BytesMut::new();
        let keys = [
            ("InitiatorName", "iqn.other"),
            ("SessionType", "Discovery"),
            ("AuthMethod", "None"),
        ];
        Pdu::LoginRequest(LoginRequest::operational([0x80, 0, 0, 0, 0, 2], 1, &keys))
            .encode(&mut b, Digests::NONE)
            .unwrap();
        s.write_all(&b).await.unwrap();
        let mut decoder = PduDecoder::new(Limits {
            max_recv_data_segment_length: 8192,
        });
        let mut rbuf = BytesMut::new();
        let answer = timeout(BOUND, async {
            loop {
                if let Some(Pdu::LoginResponse(r)) = decoder.decode(&mut rbuf).unwrap() {
                    return r;
                }
                assert!(s.read_buf(&mut rbuf).await.unwrap() > 0);
            }
        })
        .await
        .expect("the other host is answered");
        assert_eq!(
            (answer.status_class, answer.nsg),
            (0, Stage::FullFeaturePhase)
        );
        assert!(
            !slow.is_finished(),
            "the guesser is still waiting for its answer ({:?})",
            crate::auth_throttle::delay(5)
        );
        let (_, class, detail) = timeout(BOUND, slow).await.unwrap().unwrap().unwrap();
        assert_eq!((class, detail), (2, 1));
    }

    /// True once the peer has closed `s` (EOF or reset).
    async fn closed(s: &mut TcpStream) -> bool {
        let mut b = [0u8; 64];
        matches!(timeout(BOUND, s.read(&mut b)).await, Ok(Ok(0) | Err(_)))
    }

    #[tokio::test]
    async fn at_the_limit_the_oldest_connection_in_login_makes_room() {
        let (addr, _shutdown) = portal().await;
        timeout(BOUND, async {
            let mut idle = Vec::new();
            for _ in 0..LIMIT {
                idle.push(TcpStream::connect(addr).await.unwrap());
            }
            let (_s, class, detail) = login(addr, "iqn.new").await.expect("admitted");
            assert_eq!((class, detail), (0, 0));
            assert!(closed(&mut idle[0]).await, "the oldest idle one is closed");
            // One more: the next oldest idle connection goes.
            let (_s2, class, _) = login(addr, "iqn.new2").await.expect("admitted");
            assert_eq!(class, 0);
            assert!(closed(&mut idle[1]).await);
        })
        .await
        .expect("bounded in time");
    }

    #[tokio::test]
    async fn at_the_limit_with_every_connection_logged_in_new_ones_are_refused() {
        let (addr, _shutdown) = portal().await;
        timeout(BOUND, async {
            let mut sessions = Vec::new();
            for i in 0..LIMIT {
                let (s, class, _) = login(addr, &format!("iqn.i{i}")).await.unwrap();
                assert_eq!(class, 0);
                sessions.push(s);
            }
            assert!(login(addr, "iqn.late").await.is_err(), "refused");
            // A logged-in session was not sacrificed for it.
            let mut b = [0u8; 1];
            for s in &mut sessions {
                assert!(
                    timeout(Duration::from_millis(100), s.read(&mut b))
                        .await
                        .is_err(),
                    "still open and quiet"
                );
            }
            // Once one ends, there is room again.
            drop(sessions.pop());
            let mut admitted = false;
            for _ in 0..50 {
                if let Ok((_, 0, _)) = login(addr, "iqn.later").await {
                    admitted = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert!(admitted);
        })
        .await
        .expect("bounded in time");
    }

    #[tokio::test]
    async fn an_address_at_its_limit_gives_up_its_own_oldest_connection_in_login() {
        let (addr, _shutdown) = portal_with(PortalLimits {
            total: 8,
            per_address: 2,
        });
        timeout(BOUND, async {
            // The oldest connection of all comes from another address.
            let mut other = connect_from([127, 0, 0, 11], addr).await.unwrap();
            let mut a0 = connect_from([127, 0, 0, 10], addr).await.unwrap();
            let _a1 = connect_from([127, 0, 0, 10], addr).await.unwrap();
            let (_s, class, _) = login_from([127, 0, 0, 10], addr, "iqn.a").await.unwrap();
            assert_eq!(class, 0, "admitted");
            assert!(
                closed(&mut a0).await,
                "its own oldest idle connection is closed"
            );
            let mut b = [0u8; 1];
            assert!(
                timeout(Duration::from_millis(200), other.read(&mut b))
                    .await
                    .is_err(),
                "the other address keeps its connection"
            );
        })
        .await
        .expect("bounded in time");
    }

    #[tokio::test]
    async fn an_address_whose_connections_are_all_logged_in_is_refused_while_others_get_in() {
        let (addr, _shutdown) = portal_with(PortalLimits {
            total: 8,
            per_address: 2,
        });
        timeout(BOUND, async {
            let mut sessions = Vec::new();
            for i in 0..2 {
                let (s, class, _) = login_from([127, 0, 0, 10], addr, &format!("iqn.h{i}"))
                    .await
                    .unwrap();
                assert_eq!(class, 0);
                sessions.push(s);
            }
            assert!(
                login_from([127, 0, 0, 10], addr, "iqn.h2").await.is_err(),
                "a third from the same address is refused"
            );
            let (_s, class, _) = login_from([127, 0, 0, 12], addr, "iqn.other")
                .await
                .unwrap();
            assert_eq!(class, 0, "another address is admitted");
        })
        .await
        .expect("bounded in time");
    }

    #[test]
    fn limits_are_sized_from_the_open_file_limit() {
        let wanted = PortalLimits::default();
        // Plenty of descriptors: the wanted limits.
        assert_eq!(wanted.sized(1 << 20, 2, 200), Ok(wanted));
        // 1,024 descriptors, 2 portals, 124 reserved: 450 each.
        let s = wanted.sized(1024, 2, 124).unwrap();
        assert_eq!(s.total, 450);
        assert_eq!(s.per_address, MAX_CONNECTIONS_PER_ADDRESS);
        // The per-address limit never exceeds the portal's.
        let s = wanted.sized(64 + 3 * 20, 3, 64).unwrap();
        assert_eq!((s.total, s.per_address), (20, 20));
        // Too few descriptors to serve: a clear refusal.
        let e = wanted.sized(100, 4, 80).unwrap_err();
        assert!(e.contains("ulimit -n"), "{e}");
    }

    /// Bytes of each READ of the back-pressure tests.
    const READ_LEN: usize = 1024 * 1024;
    /// READs sent at once: eight times the output budget.
    const READS: u32 = 64;
    /// MaxRecvDataSegmentLength the test initiator declares.
    const MRDSL: usize = 256 * 1024;

    /// The target set of the back-pressure tests: one LUN large enough for [`READS`] READs.
    fn reads_target() -> TargetSet {
        target_set_of((READS as u64 * READ_LEN as u64) / 512)
    }

    /// One connection served by [`serve`] with `limits` on a 64 MiB LUN, logged in with raw
    /// PDUs: the initiator's socket, the task serving the connection (giving its peak queued
    /// output) and the target set (for its event log).
    async fn served(
        limits: OutputLimits,
    ) -> (TcpStream, tokio::task::JoinHandle<usize>, Arc<TargetSet>) {
        let targets = Arc::new(reads_target());
        let (s, task) = served_on(targets.clone(), limits).await;
        (s, task, targets)
    }

    /// [`served`] on the given target set (shared with other connections).
    async fn served_on(
        targets: Arc<TargetSet>,
        limits: OutputLimits,
    ) -> (TcpStream, tokio::task::JoinHandle<usize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut s = TcpStream::connect(addr).await.unwrap();
        let (stream, peer) = listener.accept().await.unwrap();
        let task = tokio::spawn(async move {
            let (_keep, rx) = watch::channel(false);
            let token = ConnectionToken::default();
            serve(stream, peer, PortalId(0), &targets, rx, &token, limits).await
        });
        let mut b = BytesMut::new();
        let mrdsl = MRDSL.to_string();
        let keys = [
            ("InitiatorName", "iqn.reader"),
            ("TargetName", TARGET),
            ("AuthMethod", "None"),
            ("MaxRecvDataSegmentLength", mrdsl.as_str()),
        ];
        Pdu::LoginRequest(LoginRequest::operational([0x80, 0, 0, 0, 0, 2], 1, &keys))
            .encode(&mut b, Digests::NONE)
            .unwrap();
        s.write_all(&b).await.unwrap();
        let mut decoder = PduDecoder::new(Limits {
            max_recv_data_segment_length: 8192,
        });
        let mut rbuf = BytesMut::new();
        loop {
            if let Some(p) = decoder.decode(&mut rbuf).unwrap() {
                let Pdu::LoginResponse(r) = p else {
                    panic!("{p:?}")
                };
                assert_eq!((r.status_class, r.nsg), (0, Stage::FullFeaturePhase));
                break;
            }
            assert!(s.read_buf(&mut rbuf).await.unwrap() > 0, "login answered");
        }
        assert!(rbuf.is_empty());
        (s, task)
    }

    /// [`READS`] READ(10)s of [`READ_LEN`] bytes each, one after the other on the LUN, in
    /// one write.
    async fn send_reads(s: &mut TcpStream) {
        let mut b = BytesMut::new();
        let blocks = (READ_LEN / 512) as u32;
        for i in 0..READS {
            let mut cdb = [0u8; 16];
            cdb[0] = scsi::cdb::opcode::READ_10;
            cdb[2..6].copy_from_slice(&(i * blocks).to_be_bytes());
            cdb[7..9].copy_from_slice(&(blocks as u16).to_be_bytes());
            Pdu::ScsiCommand(ScsiCommand {
                final_: true,
                read: true,
                itt: 100 + i,
                cmd_sn: i,
                edtl: READ_LEN as u32,
                cdb,
                ..ScsiCommand::default()
            })
            .encode(&mut b, Digests::NONE)
            .unwrap();
        }
        s.write_all(&b).await.unwrap();
    }

    /// Reads the answers to [`send_reads`]: every READ answered, complete and in order.
    async fn read_answers(s: &mut TcpStream) {
        let mut decoder = PduDecoder::new(Limits {
            max_recv_data_segment_length: MRDSL as u32,
        });
        let mut rbuf = BytesMut::with_capacity(1 << 20);
        let (mut itt, mut next_offset) = (100, 0usize);
        let mut first_stat_sn = None;
        while itt < 100 + READS {
            let Some(p) = decoder.decode(&mut rbuf).unwrap() else {
                assert!(
                    s.read_buf(&mut rbuf).await.unwrap() > 0,
                    "all answers arrive"
                );
                continue;
            };
            let Pdu::DataIn(d) = p else { panic!("{p:?}") };
            assert_eq!((d.itt, d.buffer_offset as usize), (itt, next_offset));
            next_offset += d.data.len();
            if d.status_present {
                assert_eq!((d.status, next_offset), (0, READ_LEN));
                let first = *first_stat_sn.get_or_insert(d.stat_sn);
                assert_eq!(d.stat_sn, first + (itt - 100), "StatSN in order");
                itt += 1;
                next_offset = 0;
            }
        }
    }

    /// Output queued for one READ: its data and one header per Data-In PDU.
    const ONE_READ: usize = READ_LEN + (READ_LEN / MRDSL) * iscsi_proto::BHS_LEN;

    #[tokio::test]
    async fn unread_read_data_is_held_to_the_output_budget() {
        timeout(Duration::from_secs(60), async {
            let (mut s, task, _set) = served(OutputLimits::default()).await;
            send_reads(&mut s).await;
            // The initiator does not read for a while: the target fills the socket buffers
            // and must then wait, with no more than its budget queued.
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(!task.is_finished());
            read_answers(&mut s).await;
            drop(s);
            let peak = task.await.unwrap();
            assert!(peak > OUTPUT_BUDGET, "the budget was reached: {peak}");
            assert!(
                peak <= OUTPUT_BUDGET + ONE_READ,
                "at most the budget and one READ queued: {peak}"
            );
        })
        .await
        .expect("bounded in time");
    }

    #[tokio::test]
    async fn connections_together_are_held_to_the_process_budget() {
        timeout(Duration::from_secs(60), async {
            // A process budget below one connection's own.
            let limit = 2 * READ_LEN;
            let set = Arc::new(reads_target().with_output_limit(limit));
            let (mut a, task_a) = served_on(set.clone(), OutputLimits::default()).await;
            send_reads(&mut a).await;
            // `a` does not read: its output passes the process budget and stays queued.
            let mut waited = 0;
            while set.output.queued() <= limit {
                assert!(waited < 100, "the process budget is passed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                waited += 1;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            let queued_a = set.output.queued();
            // A second connection, not reading either, may now run one command at a time:
            // each READ's output is written before the next runs.
            let (mut b, task_b) = served_on(set.clone(), OutputLimits::default()).await;
            send_reads(&mut b).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(!task_a.is_finished() && !task_b.is_finished());
            let queued_b = set.output.queued() - queued_a;
            assert!(queued_b <= ONE_READ, "one READ at a time: {queued_b}");
            // Both are served in full once read.
            tokio::join!(read_answers(&mut a), read_answers(&mut b));
            drop((a, b));
            let peak_a = task_a.await.unwrap();
            task_b.await.unwrap();
            assert!(peak_a <= OUTPUT_BUDGET + ONE_READ, "{peak_a}");
            assert_eq!(set.output.queued(), 0, "every share given back");
        })
        .await
        .expect("bounded in time");
    }

    #[tokio::test]
    async fn a_peer_that_stops_reading_is_disconnected_after_the_stall_timeout() {
        let stall = Duration::from_millis(300);
        let limits = OutputLimits {
            stall,
            ..OutputLimits::default()
        };
        let (mut s, task, set) = served(limits).await;
        let start = Instant::now();
        send_reads(&mut s).await;
        let peak = timeout(Duration::from_secs(10), task)
            .await
            .expect("disconnected in bounded time")
            .unwrap();
        assert!(start.elapsed() >= stall);
        assert!(peak <= OUTPUT_BUDGET + 2 * READ_LEN);
        let events = set.control.events.snapshot();
        let last = events.last().unwrap();
        assert!(
            last.reason.ends_with("peer stopped reading for 0.3 s"),
            "{}",
            last.reason
        );
        drop(s);
    }
}
