//! What the server integration tests share: a server on a temporary
//! database and loopback, and reading one message off a raw socket.
#![allow(dead_code)] // each test binary uses its own part

use std::net::SocketAddr;

use isns::{Server, ServerConfig};
use isns_proto::{Message, MessageDecoder};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// A running server: its listen addresses (`listen` first), its database
/// directory and the sender that stops it when dropped.
pub type Running = (
    Vec<SocketAddr>,
    tempfile::TempDir,
    tokio::sync::oneshot::Sender<()>,
);

/// Start a server on 127.0.0.1 (any port) with defaults changed by `tune`.
pub async fn start_all(tune: impl FnOnce(&mut ServerConfig)) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let mut config =
        ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().join("isns.redb"));
    tune(&mut config);
    let server = Server::bind(config).await.unwrap();
    let addrs = server.local_addrs().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(async move {
        let _ = rx.await;
    }));
    (addrs, dir, tx)
}

/// [`start_all`] for a server with one listen address.
pub async fn start(
    tune: impl FnOnce(&mut ServerConfig),
) -> (
    SocketAddr,
    tempfile::TempDir,
    tokio::sync::oneshot::Sender<()>,
) {
    let (addrs, dir, tx) = start_all(tune).await;
    (addrs[0], dir, tx)
}

/// One whole iSNSP message from `s`; `None` on end of stream or bad framing.
pub async fn read_message(s: &mut TcpStream) -> Option<Message> {
    let mut buf = bytes::BytesMut::new();
    let mut decoder = MessageDecoder::new();
    loop {
        if let Some(m) = decoder.decode(&mut buf).ok()? {
            return Some(m);
        }
        if s.read_buf(&mut buf).await.ok()? == 0 {
            return None;
        }
    }
}
