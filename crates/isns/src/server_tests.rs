//! The server's queries against its committer: a query never answers from a registration that
//! is applied to the registry but not yet stored ([`crate::fence`]). The store's writes are
//! held by the test ([`crate::store::WriteGate`]) so that the window is as long as it likes.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::backend::Backend;
use crate::store::WriteGate;
use crate::{Client, ClientError, NodeRegistration, NodeType, Registration, Server, ServerConfig};

const TARGET: &str = "iqn.2026-12.test:fenced";
const PORTAL: &str = "127.0.0.1:3260";

fn registration() -> Registration {
    Registration {
        entity: "fenced".into(),
        portals: vec![PORTAL.parse().unwrap()],
        nodes: vec![NodeRegistration {
            name: TARGET.into(),
            node_type: NodeType::Target,
            alias: None,
        }],
        portal_groups: Vec::new(),
        registration_period: None,
        replace: true,
    }
}

/// A server whose store writes wait for the test.
struct Gated {
    addr: SocketAddr,
    /// One message per write that reached the store.
    arrived: mpsc::UnboundedReceiver<()>,
    /// true lets the waiting write through, false fails it.
    decide: std::sync::mpsc::Sender<bool>,
    _stop: oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

async fn gated_server() -> Gated {
    let dir = tempfile::tempdir().unwrap();
    let mut config =
        ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().join("isns.redb"));
    // No write of the server's own while the test holds the store.
    config.refresh_persist_interval = Duration::from_secs(3600);
    config.expiry_check = Duration::from_secs(3600);
    let server = Server::bind(config).await.unwrap();
    let (arrived_tx, arrived) = mpsc::unbounded_channel();
    let (decide, decide_rx) = std::sync::mpsc::channel();
    let Backend::Embedded(store) = &server.backend else {
        panic!("the test needs the embedded store");
    };
    *store.gate.lock().unwrap() = Some(WriteGate {
        arrived: arrived_tx,
        decide: decide_rx,
    });
    let addr = server.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel();
    tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    Gated {
        addr,
        arrived,
        decide,
        _stop: stop,
        _dir: dir,
    }
}

/// Registers [`registration`] in the background and waits until its write reaches the store,
/// then starts a query for the target's portals; returns both tasks.
async fn register_and_query(
    g: &mut Gated,
) -> (
    tokio::task::JoinHandle<Result<String, ClientError>>,
    tokio::task::JoinHandle<Result<Vec<SocketAddr>, ClientError>>,
) {
    let addr = g.addr;
    let register = tokio::spawn(async move {
        let mut c = Client::connect(addr).await?;
        c.register(&registration()).await
    });
    tokio::time::timeout(Duration::from_secs(10), g.arrived.recv())
        .await
        .expect("the registration's write reached the store")
        .expect("the gate is open");
    let query = tokio::spawn(async move {
        let mut c = Client::connect(addr).await?;
        c.query_target_portals("iqn.2026-12.test:host", TARGET)
            .await
    });
    // Long enough for a query answered from the registry alone to come back.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !query.is_finished(),
        "the query was answered while the registration was not stored yet: {:?}",
        query.await
    );
    (register, query)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_does_not_see_a_registration_whose_write_then_fails() {
    let mut g = gated_server().await;
    let (register, query) = register_and_query(&mut g).await;
    g.decide.send(false).unwrap();
    let registered = register.await.unwrap();
    assert!(
        matches!(registered, Err(ClientError::Status { .. })),
        "the registration should fail with the store: {registered:?}"
    );
    assert_eq!(
        query.await.unwrap().unwrap(),
        Vec::<SocketAddr>::new(),
        "the query listed a registration that was never stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_waiting_on_a_registration_answers_with_it_once_stored() {
    let mut g = gated_server().await;
    let (register, query) = register_and_query(&mut g).await;
    g.decide.send(true).unwrap();
    assert_eq!(register.await.unwrap().unwrap(), "fenced");
    assert_eq!(
        query.await.unwrap().unwrap(),
        vec![PORTAL.parse::<SocketAddr>().unwrap()]
    );
}
