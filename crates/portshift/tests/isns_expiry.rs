//! Registration Period (RFC 4171 §6.2.6) across restarts of `portshift isns`:
//! an entity registered with a 5 s period that stops refreshing is gone
//! within 10 s, also when the server is stopped (SIGTERM) or killed (SIGKILL)
//! and started again on the same database in between; an entity whose node
//! keeps querying (each message refreshes it) is still there after 10 s.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Proc, free_addr, portshift_server};
use isns::{Client, NodeRegistration, NodeType, Registration};

const OBSERVER: &str = "iqn.2024-01.test:observer";
const QUIET: &str = "iqn.2024-01.test:quiet";
const CHATTY: &str = "iqn.2024-01.test:chatty";

fn start(addr: SocketAddr, db: &Path, log: &Path) -> Proc {
    let args = [
        "isns".to_string(),
        "--listen".into(),
        addr.to_string(),
        "--db".into(),
        db.display().to_string(),
    ];
    portshift_server(&args, addr, log)
}

fn registration(eid: &str, node: &str, portal: &str) -> Registration {
    Registration {
        entity: eid.into(),
        portals: vec![portal.parse().unwrap()],
        nodes: vec![NodeRegistration {
            name: node.into(),
            node_type: NodeType::Target,
            alias: None,
        }],
        registration_period: Some(5),
        ..Registration::default()
    }
}

/// Portals of `node` as an unregistered observer sees them (its queries
/// refresh nothing); empty once the entity is gone.
async fn portals_of(addr: SocketAddr, node: &str) -> Vec<SocketAddr> {
    let mut c = Client::connect(addr).await.unwrap();
    c.query_target_portals(OBSERVER, node).await.unwrap()
}

#[derive(Clone, Copy)]
enum Restart {
    Term,
    Kill,
}

async fn expiry_across_restart(how: Restart) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("isns.redb");
    let addr = free_addr("127.0.0.1");
    let mut server = start(addr, &db, &dir.path().join("isns-1.log"));
    let mut c = Client::connect(addr).await.unwrap();
    let registered = Instant::now();
    c.register(&registration("quiet", QUIET, "127.0.0.31:3260"))
        .await
        .unwrap();
    c.register(&registration("chatty", CHATTY, "127.0.0.32:3260"))
        .await
        .unwrap();
    drop(c);
    // The chatty node queries once a second (reconnecting across the restart).
    let stop = Arc::new(AtomicBool::new(false));
    let chatter = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut c = Client::connect(addr).await.unwrap();
            c.set_timeout(Duration::from_millis(500));
            while !stop.load(Ordering::Relaxed) {
                let _ = c.query_target_portals(CHATTY, CHATTY).await;
                tokio::time::sleep(Duration::from_millis(700)).await;
            }
        })
    };
    assert_eq!(portals_of(addr, QUIET).await.len(), 1);
    // Restart 4.5 s in: a fresh period granted on load would keep the quiet
    // entity until at least 9.5 s + the sweep.
    tokio::time::sleep(Duration::from_millis(4500).saturating_sub(registered.elapsed())).await;
    match how {
        Restart::Term => {
            let pid = server.0.id().to_string();
            let st = std::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap();
            assert!(st.success());
            let exit = server.0.wait().unwrap();
            assert!(
                exit.success(),
                "portshift isns exits cleanly on SIGTERM: {exit}"
            );
        }
        Restart::Kill => {
            server.0.kill().unwrap();
            server.0.wait().unwrap();
        }
    }
    drop(server);
    let _server = start(addr, &db, &dir.path().join("isns-2.log"));
    let gone = loop {
        if portals_of(addr, QUIET).await.is_empty() {
            break registered.elapsed();
        }
        assert!(
            registered.elapsed() < Duration::from_secs(10),
            "the silent entity is still registered 10 s after its registration"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(gone < Duration::from_secs(10), "gone after {gone:?}");
    tokio::time::sleep(Duration::from_secs(12).saturating_sub(registered.elapsed())).await;
    assert_eq!(
        portals_of(addr, CHATTY).await,
        ["127.0.0.32:3260".parse::<SocketAddr>().unwrap()],
        "the entity that kept talking is still registered after {:?}",
        registered.elapsed()
    );
    stop.store(true, Ordering::Relaxed);
    chatter.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_entity_expires_across_a_sigterm_restart() {
    expiry_across_restart(Restart::Term).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_entity_expires_across_a_sigkill_restart() {
    expiry_across_restart(Restart::Kill).await;
}
