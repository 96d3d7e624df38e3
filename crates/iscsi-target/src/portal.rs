//! Portal processors: one OS thread (`portal-N`) per portal, each running its own tokio
//! current-thread runtime that owns the portal's listener and every connection accepted on it.
//! A connection is a thin shell around the sans-IO [`Connection`] core: it reads large chunks
//! into a `BytesMut` and feeds them to the core, runs the SCSI work the core asks for inline
//! (see [`ConnectionShell`]), and writes all the responses produced with vectored writes
//! (headers copied into one buffer, large data segments passed by reference).

use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use balancer::PortalId;
use bytes::{Buf, Bytes, BytesMut};
use iscsi_proto::{Digests, Pdu};
use iscsi_target_core::{CloseReason, Connection};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc, watch};

use crate::target_set::{ConnectionShell, OUTPUT_BUDGET, TargetSet};

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 512 * 1024;
/// Data segments at most this long are copied next to their header instead of being
/// referenced by their own I/O vector.
const COPY_THRESHOLD: usize = 2048;
/// I/O vectors per `writev`.
const MAX_IOVECS: usize = 64;
/// Connections one portal serves at a time (the default of [`spawn`]'s `max_connections`).
/// At the limit, the oldest connection still in login makes room for a new one; only when
/// every connection is logged in are new ones refused.
pub const MAX_CONNECTIONS: usize = 1024;
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

/// Starts the processor of one portal on its own thread, serving `listener` with at most
/// `max_connections` connections at a time (see [`MAX_CONNECTIONS`]).
pub fn spawn(
    index: usize,
    portal: PortalId,
    listener: std::net::TcpListener,
    targets: Arc<TargetSet>,
    shutdown: watch::Receiver<bool>,
    max_connections: usize,
) -> std::io::Result<JoinHandle<()>> {
    listener.set_nonblocking(true)?;
    std::thread::Builder::new()
        .name(format!("portal-{index}"))
        .spawn(move || match current_thread_runtime() {
            Ok(rt) => rt.block_on(accept_loop(
                portal,
                listener,
                targets,
                shutdown,
                max_connections,
            )),
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

/// The connections of one portal, oldest first.
#[derive(Default)]
struct LiveConnections {
    list: Vec<Arc<ConnectionToken>>,
}

impl LiveConnections {
    /// Room for one more connection under `limit`: the ended ones are forgotten, then, at the
    /// limit, the oldest connection still in login is told to close. None when every
    /// connection is logged in (the new one is to be refused).
    fn admit(&mut self, limit: usize) -> Option<Arc<ConnectionToken>> {
        // A token only the list holds belongs to a task that has ended.
        self.list.retain(|t| Arc::strong_count(t) > 1);
        if self.list.len() >= limit {
            let i = self
                .list
                .iter()
                .position(|t| !t.logged_in.load(Ordering::Relaxed))?;
            self.list.remove(i).close.notify_one();
        }
        let token = Arc::new(ConnectionToken::default());
        self.list.push(token.clone());
        Some(token)
    }
}

async fn accept_loop(
    portal: PortalId,
    listener: std::net::TcpListener,
    targets: Arc<TargetSet>,
    mut shutdown: watch::Receiver<bool>,
    max_connections: usize,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(%portal, "cannot register the listener: {e}");
            return;
        }
    };
    let mut live = LiveConnections::default();
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    let Some(token) = live.admit(max_connections) else {
                        tracing::warn!(%portal, %peer, "connection limit reached, every connection logged in; refused");
                        continue;
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
    let mut conn = Connection::new(targets.catalog.clone(), portal, Instant::now());
    let mut shell = ConnectionShell::new(targets, portal, tx).with_budget(limits.budget);
    let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
    let mut out = Vec::new();
    let mut tx_buf = TxBatch::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut write_failed = false;
    let why = 'conn: loop {
        let mut read = false;
        tokio::select! {
            r = stream.read_buf(&mut rbuf) => match r {
                Ok(0) => break CloseReason::Transport("connection closed by the initiator".into()),
                Ok(_) => read = true,
                Err(e) => break CloseReason::Transport(format!("connection lost: read error: {e}")),
            },
            Some(cmd) = rx.recv() => conn.on_command(cmd, Instant::now()),
            // From the start, login included: the core closes a login that takes too long.
            _ = tick.tick() => conn.handle_timeout(Instant::now()),
            _ = shutdown.changed() => break CloseReason::Transport("target shutting down".into()),
            _ = token.close.notified(), if !logged_in => {
                tracing::info!(%portal, %peer, "connection limit reached: closing this connection, still in login, for a new one");
                break CloseReason::Failed("closed for a new connection: the portal is at its connection limit".into());
            }
        }
        // Feeds what was read, writing the output each time it exceeds the budget.
        loop {
            let over_budget = read && shell.feed(&mut conn, &mut rbuf, Instant::now());
            if !logged_in && conn.params().is_some() {
                logged_in = true;
                token.logged_in.store(true, Ordering::Relaxed);
            }
            if conn.has_output() {
                conn.poll_transmit(&mut out);
                if let Err(e) = tx_buf.write(&mut stream, &mut out, limits.stall).await {
                    write_failed = true;
                    break 'conn write_failure(&e, limits.stall);
                }
            }
            if let Some(reason) = conn.close_reason() {
                break 'conn reason.clone();
            }
            if !over_budget {
                break;
            }
        }
        if read && rbuf.capacity() - rbuf.len() < READ_CHUNK / 4 {
            rbuf.reserve(READ_CHUNK);
        }
    };
    if !write_failed && conn.has_output() {
        conn.poll_transmit(&mut out);
        let _ = tx_buf.write(&mut stream, &mut out, limits.stall).await;
    }
    let _ = stream.shutdown().await;
    tracing::debug!(%portal, %peer, "{why}");
    shell.closed(&mut conn, why);
    shell.peak_queued()
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

/// Encoded output of one batch: small parts gathered in `hdr`, large data segments kept as
/// their own `Bytes`.
#[derive(Default)]
struct TxBatch {
    hdr: BytesMut,
    segs: Vec<Bytes>,
}

impl TxBatch {
    fn encode(&mut self, pdus: &mut Vec<(Pdu, Digests)>) {
        for (pdu, digests) in pdus.drain(..) {
            match pdu.encode_header(&mut self.hdr, digests) {
                Ok(payload) => {
                    if payload.data.len() <= COPY_THRESHOLD {
                        self.hdr.extend_from_slice(&payload.data);
                    } else {
                        self.segs.push(self.hdr.split().freeze());
                        self.segs.push(payload.data);
                    }
                    self.hdr.extend_from_slice(payload.trailer.as_slice());
                }
                Err(e) => tracing::error!("cannot encode a response: {e}"),
            }
        }
        if !self.hdr.is_empty() {
            self.segs.push(self.hdr.split().freeze());
        }
    }

    async fn write(
        &mut self,
        stream: &mut TcpStream,
        pdus: &mut Vec<(Pdu, Digests)>,
        stall: Duration,
    ) -> std::io::Result<()> {
        self.encode(pdus);
        let mut first = 0;
        while first < self.segs.len() {
            let n = {
                let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                let mut count = 0;
                for (slot, seg) in slices.iter_mut().zip(self.segs.iter().skip(first)) {
                    *slot = IoSlice::new(seg);
                    count += 1;
                }
                // No progress for `stall`: the peer stopped reading.
                tokio::time::timeout(stall, stream.write_vectored(&slices[..count]))
                    .await
                    .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??
            };
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            let mut left = n;
            while left > 0 {
                let Some(seg) = self.segs.get_mut(first) else {
                    break;
                };
                if seg.len() <= left {
                    left -= seg.len();
                    first += 1;
                } else {
                    seg.advance(left);
                    left = 0;
                }
            }
            while self.segs.get(first).is_some_and(|s| s.is_empty()) {
                first += 1;
            }
        }
        self.segs.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use iscsi_proto::{Limits, LoginRequest, PduDecoder, ScsiCommand, Stage};
    use tokio::time::timeout;

    use super::*;
    use crate::target_set::tests::{TARGET, target_set, target_set_of};

    const LIMIT: usize = 4;
    const BOUND: Duration = Duration::from_secs(10);

    /// A portal with room for [`LIMIT`] connections on a loopback port; the shutdown sender
    /// keeps it running.
    async fn portal() -> (SocketAddr, watch::Sender<bool>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = watch::channel(false);
        let targets = Arc::new(target_set());
        tokio::spawn(accept_loop(PortalId(0), listener, targets, rx, LIMIT));
        (addr, tx)
    }

    /// Connects and logs in to the test target as `initiator`: the status of the answer.
    async fn login(addr: SocketAddr, initiator: &str) -> std::io::Result<(TcpStream, u8, u8)> {
        let mut s = TcpStream::connect(addr).await?;
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

    /// Bytes of each READ of the back-pressure tests.
    const READ_LEN: usize = 1024 * 1024;
    /// READs sent at once: eight times the output budget.
    const READS: u32 = 64;
    /// MaxRecvDataSegmentLength the test initiator declares.
    const MRDSL: usize = 256 * 1024;

    /// One connection served by [`serve`] with `limits` on a 64 MiB LUN, logged in with raw
    /// PDUs: the initiator's socket, the task serving the connection (giving its peak queued
    /// output) and the target set (for its event log).
    async fn served(
        limits: OutputLimits,
    ) -> (TcpStream, tokio::task::JoinHandle<usize>, Arc<TargetSet>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let targets = Arc::new(target_set_of((READS as u64 * READ_LEN as u64) / 512));
        let mut s = TcpStream::connect(addr).await.unwrap();
        let (stream, peer) = listener.accept().await.unwrap();
        let set = targets.clone();
        let task = tokio::spawn(async move {
            let (_keep, rx) = watch::channel(false);
            let token = ConnectionToken::default();
            serve(stream, peer, PortalId(0), &set, rx, &token, limits).await
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
        (s, task, targets)
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

    #[tokio::test]
    async fn unread_read_data_is_held_to_the_output_budget() {
        timeout(Duration::from_secs(60), async {
            let (mut s, task, _set) = served(OutputLimits::default()).await;
            send_reads(&mut s).await;
            // The initiator does not read for a while: the target fills the socket buffers
            // and must then wait, with no more than its budget queued.
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(!task.is_finished());
            // Now everything is read: every READ answered, complete and in order.
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
            drop(s);
            let peak = task.await.unwrap();
            // Every PDU header counts: at most READ_LEN / MRDSL Data-In PDUs per READ.
            let one_read = READ_LEN + (READ_LEN / MRDSL) * iscsi_proto::BHS_LEN;
            assert!(peak > OUTPUT_BUDGET, "the budget was reached: {peak}");
            assert!(
                peak <= OUTPUT_BUDGET + one_read,
                "at most the budget and one READ queued: {peak}"
            );
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
