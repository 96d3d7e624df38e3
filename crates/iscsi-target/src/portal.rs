//! Portal processors: one OS thread (`portal-N`) per portal, each running its own tokio
//! current-thread runtime that owns the portal's listener and every connection accepted on it.
//! A connection is a thin shell around the sans-IO [`Connection`] core: it reads large chunks
//! into a `BytesMut` and feeds them to the core, runs the SCSI work the core asks for inline
//! (see [`ConnectionShell`]), and writes all the responses produced with vectored writes
//! (headers copied into one buffer, large data segments passed by reference).

use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use balancer::PortalId;
use bytes::{Buf, Bytes, BytesMut};
use iscsi_proto::{Digests, Pdu};
use iscsi_target_core::{CloseReason, Connection};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use crate::target_set::{ConnectionShell, TargetSet};

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 512 * 1024;
/// Data segments at most this long are copied next to their header instead of being
/// referenced by their own I/O vector.
const COPY_THRESHOLD: usize = 2048;
/// I/O vectors per `writev`.
const MAX_IOVECS: usize = 64;
/// Connections one portal accepts at a time.
pub const MAX_CONNECTIONS: usize = 1024;

/// Starts the processor of one portal on its own thread, serving `listener`.
pub fn spawn(
    index: usize,
    portal: PortalId,
    listener: std::net::TcpListener,
    targets: Arc<TargetSet>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<JoinHandle<()>> {
    listener.set_nonblocking(true)?;
    std::thread::Builder::new()
        .name(format!("portal-{index}"))
        .spawn(move || match current_thread_runtime() {
            Ok(rt) => rt.block_on(accept_loop(portal, listener, targets, shutdown)),
            Err(e) => tracing::error!("portal-{index}: cannot start its runtime: {e}"),
        })
}

/// The event loop of one processor thread.
pub(crate) fn current_thread_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

async fn accept_loop(
    portal: PortalId,
    listener: std::net::TcpListener,
    targets: Arc<TargetSet>,
    mut shutdown: watch::Receiver<bool>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(%portal, "cannot register the listener: {e}");
            return;
        }
    };
    let live = Arc::new(());
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    if Arc::strong_count(&live) > MAX_CONNECTIONS {
                        tracing::warn!(%portal, %peer, "connection limit reached; refused");
                        continue;
                    }
                    let token = live.clone();
                    let targets = targets.clone();
                    let shutdown = shutdown.clone();
                    tokio::spawn(async move {
                        serve(stream, peer, portal, &targets, shutdown).await;
                        drop(token);
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

/// Serves one connection until it closes.
async fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    portal: PortalId,
    targets: &TargetSet,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut conn = Connection::new(targets.catalog.clone(), portal, Instant::now());
    let mut shell = ConnectionShell::new(targets, portal, tx);
    let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
    let mut out = Vec::new();
    let mut tx_buf = TxBatch::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let why = loop {
        tokio::select! {
            r = stream.read_buf(&mut rbuf) => match r {
                Ok(0) => break CloseReason::Transport("connection closed by the initiator".into()),
                Ok(_) => {
                    shell.feed(&mut conn, &mut rbuf, Instant::now());
                    if rbuf.capacity() - rbuf.len() < READ_CHUNK / 4 {
                        rbuf.reserve(READ_CHUNK);
                    }
                }
                Err(e) => break CloseReason::Transport(format!("connection lost: read error: {e}")),
            },
            Some(cmd) = rx.recv() => conn.on_command(cmd, Instant::now()),
            // From the start, login included: the core closes a login that takes too long.
            _ = tick.tick() => conn.handle_timeout(Instant::now()),
            _ = shutdown.changed() => break CloseReason::Transport("target shutting down".into()),
        }
        if conn.has_output() {
            conn.poll_transmit(&mut out);
            if let Err(e) = tx_buf.write(&mut stream, &mut out).await {
                break CloseReason::Transport(format!("connection lost: write error: {e}"));
            }
        }
        if let Some(reason) = conn.close_reason() {
            break reason.clone();
        }
    };
    if conn.has_output() {
        conn.poll_transmit(&mut out);
        let _ = tx_buf.write(&mut stream, &mut out).await;
    }
    let _ = stream.shutdown().await;
    tracing::debug!(%portal, %peer, "{why}");
    shell.closed(&mut conn, why);
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
                stream.write_vectored(&slices[..count]).await?
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
