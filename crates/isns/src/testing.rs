//! For tests (here and in other crates, with the `testing` feature): an iSNS server on its own
//! thread and runtime, with its database in a temporary directory, that can be killed.

use std::net::SocketAddr;

/// A server on its own runtime and thread; [`KillableServer::kill`] drops the runtime, closing
/// its listener and every connection as a killed process would.
pub struct KillableServer {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl KillableServer {
    /// Starts a server with the default configuration on a free loopback port.
    pub fn start() -> KillableServer {
        let dir = tempfile::tempdir().expect("temporary directory");
        let db = dir.path().join("isns.redb");
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let config = crate::ServerConfig::new("127.0.0.1:0".parse().expect("address"), db);
                let server = crate::Server::bind(config).await.expect("bind");
                addr_tx
                    .send(server.local_addr().expect("address"))
                    .expect("send");
                let _ = server
                    .run(async move {
                        let _ = stop_rx.await;
                    })
                    .await;
            });
            rt.shutdown_background();
        });
        KillableServer {
            addr: addr_rx.recv().expect("the server's address"),
            stop: Some(stop),
            thread: Some(thread),
            _dir: dir,
        }
    }

    /// Stops the server at once (its connections are dropped).
    pub fn kill(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for KillableServer {
    fn drop(&mut self) {
        self.kill();
    }
}
