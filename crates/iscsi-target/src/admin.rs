//! The admin endpoint: `GET /status` returns the [`balancer::AdminSnapshot`] as JSON (and
//! `GET /metrics` the Prometheus figures, [`crate::metrics`]). It binds to loopback by default;
//! reading needs no authentication there. The calls that change state ([`crate::admin_ops`],
//! `POST /balance/*`) need the bearer token of `--admin-token-file`.
//!
//! It has a budget so that it can never take file descriptors from the portals: at most
//! [`AdminLimits::max_connections`] connections are accepted at a time (more wait in the
//! kernel's backlog, holding no descriptor of this process), and a connection that sends
//! nothing for [`AdminLimits::idle_timeout`] while no request of it is being answered is closed.
//! A request whose answer takes longer (a drain waiting for the iSNS client) keeps its
//! connection.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::extract::Request;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::middleware::Next;
use axum::response::Response;
use axum::serve::{IncomingStream, Listener};
use axum::{Json, Router, extract::State, routing::get};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

use crate::control::Control;

/// Default admin address.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:3261";

/// How many connections the admin endpoint serves at once, and how long one may stay silent.
#[derive(Debug, Clone, Copy)]
pub struct AdminLimits {
    pub max_connections: usize,
    pub idle_timeout: Duration,
}

impl Default for AdminLimits {
    fn default() -> Self {
        AdminLimits {
            max_connections: 32,
            idle_timeout: Duration::from_secs(10),
        }
    }
}

/// The admin router over a control plane.
pub fn router(control: Arc<Control>) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/metrics", crate::metrics::route(control.clone()))
        .merge(crate::dashboard::router(control.clone()))
        .with_state(control.clone())
        .merge(crate::admin_ops::router(control))
}

async fn status(State(c): State<Arc<Control>>) -> Json<balancer::AdminSnapshot> {
    Json(c.snapshot())
}

/// Binds `addr` and serves the admin endpoint with the default [`AdminLimits`] until the task is
/// dropped. Returns the bound address (useful with port 0).
pub async fn serve(
    addr: SocketAddr,
    control: Arc<Control>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    serve_with(addr, control, AdminLimits::default()).await
}

/// [`serve`] with explicit limits.
pub async fn serve_with(
    addr: SocketAddr,
    control: Arc<Control>,
    limits: AdminLimits,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    serve_router(addr, router(control), limits)
}

/// Serves `app` on `addr` within `limits`.
fn serve_router(
    addr: SocketAddr,
    app: Router,
    limits: AdminLimits,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = listener::bind(addr)?;
    let local = listener.local_addr()?;
    let listener = BudgetedListener {
        inner: listener,
        permits: Arc::new(Semaphore::new(limits.max_connections.max(1))),
        idle_timeout: limits.idle_timeout,
    };
    let app = app
        .layer(axum::middleware::from_fn(answering))
        .into_make_service_with_connect_info::<Answering>();
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!("admin endpoint stopped: {e}");
        }
    });
    Ok((local, task))
}

/// How many requests of one connection are being answered right now: while any is, the
/// connection is not idle, whatever its reads do.
#[derive(Clone, Default)]
struct Answering(Arc<AtomicUsize>);

impl Connected<IncomingStream<'_, BudgetedListener>> for Answering {
    fn connect_info(stream: IncomingStream<'_, BudgetedListener>) -> Self {
        stream.io().answering.clone()
    }
}

/// Counts the request as being answered on its connection until its handler returns.
async fn answering(ConnectInfo(a): ConnectInfo<Answering>, req: Request, next: Next) -> Response {
    struct Guard(Answering);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.0.fetch_sub(1, Ordering::Relaxed);
        }
    }
    a.0.fetch_add(1, Ordering::Relaxed);
    let _guard = Guard(a);
    next.run(req).await
}

/// A TCP listener that accepts only while a connection permit is free.
struct BudgetedListener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
    idle_timeout: Duration,
}

impl Listener for BudgetedListener {
    type Io = IdleLimited;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (IdleLimited, SocketAddr) {
        // The semaphore is never closed, so acquiring cannot fail; wait for a free permit
        // before taking the next connection off the backlog.
        let Ok(permit) = self.permits.clone().acquire_owned().await else {
            std::future::pending::<()>().await;
            unreachable!("a pending future never completes");
        };
        loop {
            match self.inner.accept().await {
                Ok((stream, peer)) => {
                    let io = IdleLimited {
                        stream,
                        idle_timeout: self.idle_timeout,
                        deadline: Box::pin(tokio::time::sleep(self.idle_timeout)),
                        answering: Answering::default(),
                        _permit: permit,
                    };
                    return (io, peer);
                }
                Err(e) => {
                    tracing::warn!("admin endpoint: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A connection that fails its pending read once nothing arrived for `idle_timeout` while none
/// of its requests was being answered, and holds its permit until it is dropped.
struct IdleLimited {
    stream: TcpStream,
    idle_timeout: Duration,
    deadline: Pin<Box<Sleep>>,
    answering: Answering,
    _permit: OwnedSemaphorePermit,
}

impl IdleLimited {
    fn restart_deadline(&mut self) {
        let next = Instant::now() + self.idle_timeout;
        self.deadline.as_mut().reset(next);
    }
}

impl AsyncRead for IdleLimited {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.restart_deadline();
                }
                Poll::Ready(r)
            }
            Poll::Pending if self.answering.0.load(Ordering::Relaxed) > 0 => {
                // A request is being answered: the clock starts again, and its wake-up brings
                // the next look (the answer's write restarts it too).
                self.restart_deadline();
                let _ = self.deadline.as_mut().poll(cx);
                Poll::Pending
            }
            Poll::Pending => {
                ready!(self.deadline.as_mut().poll(cx));
                Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "admin connection idle",
                )))
            }
        }
    }
}

impl AsyncWrite for IdleLimited {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.restart_deadline();
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get_status(addr: SocketAddr) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    /// Idle connections fill the budget, are closed after the idle timeout, and a real request
    /// is then answered; while they are open, no further descriptor is taken.
    #[tokio::test]
    async fn idle_connections_cannot_hold_the_endpoint() {
        let control = Arc::new(Control::new(
            crate::control::two_portals(),
            vec!["iqn.2024-01.test:t".into()],
            None,
            None,
        ));
        let limits = AdminLimits {
            max_connections: 2,
            idle_timeout: Duration::from_millis(300),
        };
        let (addr, task) = serve_with("127.0.0.1:0".parse().unwrap(), control, limits)
            .await
            .unwrap();
        let mut idle = Vec::new();
        for _ in 0..4 {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        // The first two were accepted and are closed by the server after the idle timeout.
        for s in idle.iter_mut().take(2) {
            let mut b = [0u8; 1];
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b))
                .await
                .expect("an idle admin connection must be closed by the server");
            assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
        }
        drop(idle);
        let answer = tokio::time::timeout(Duration::from_secs(5), get_status(addr))
            .await
            .expect("the endpoint answers once idle connections are gone");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("\"registrations\""), "{answer}");
        task.abort();
    }

    /// A request whose answer takes longer than the idle timeout gets its answer: the
    /// connection is not idle while its request is being answered. Then, silent, it is closed.
    #[tokio::test]
    async fn a_slow_answer_outlives_the_idle_timeout() {
        let app = Router::new().route(
            "/slow",
            axum::routing::post(async || {
                tokio::time::sleep(Duration::from_millis(1200)).await;
                "done"
            }),
        );
        let limits = AdminLimits {
            max_connections: 1,
            idle_timeout: Duration::from_millis(300),
        };
        let (addr, task) = serve_router("127.0.0.1:0".parse().unwrap(), app, limits).unwrap();
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
            .await
            .unwrap();
        let started = Instant::now();
        let mut out = Vec::new();
        let mut buf = [0u8; 1024];
        // Keep-alive: read until the body arrived, then until the server closes the idle
        // connection.
        loop {
            let Ok(n) = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await else {
                panic!(
                    "the server must answer, then close the idle connection; got {:?}",
                    String::from_utf8_lossy(&out)
                );
            };
            let n = n.unwrap_or(0);
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        let out = String::from_utf8_lossy(&out);
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(out.ends_with("done"), "{out}");
        assert!(
            started.elapsed() >= Duration::from_millis(1400),
            "closed too early"
        );
        task.abort();
    }

    /// A client that sends its request keeps its connection past the idle timeout as long as
    /// it keeps sending: the deadline moves with every read.
    #[tokio::test]
    async fn the_deadline_moves_with_each_read() {
        let control = Arc::new(Control::new(
            crate::control::two_portals(),
            vec!["iqn.2024-01.test:t".into()],
            None,
            None,
        ));
        let limits = AdminLimits {
            max_connections: 1,
            idle_timeout: Duration::from_millis(400),
        };
        let (addr, task) = serve_with("127.0.0.1:0".parse().unwrap(), control, limits)
            .await
            .unwrap();
        let mut s = TcpStream::connect(addr).await.unwrap();
        for part in [
            &b"GET /status HTTP/1.1\r\n"[..],
            b"Host: x\r\n",
            b"Connection: close\r\n",
            b"\r\n",
        ] {
            tokio::time::sleep(Duration::from_millis(250)).await;
            s.write_all(part).await.unwrap();
        }
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        task.abort();
    }
}
