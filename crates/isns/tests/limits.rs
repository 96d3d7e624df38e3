//! Connection budgets of the server shell: idle sockets cannot lock out a
//! real client (first-message timeout, per-address and total limits with
//! eviction of the oldest idle connection).

mod common;
use common::start;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use isns::{Client, NodeRegistration, NodeType, Registration};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};

/// A TCP connection to `server` from `from` (falls back to the default
/// source address if binding `from` fails).
async fn idle_socket(server: SocketAddr, from: IpAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    if s.bind(SocketAddr::new(from, 0)).is_err() {
        return TcpStream::connect(server).await.unwrap();
    }
    s.connect(server).await.unwrap()
}

/// Whether the server closed `s` within `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut b = [0u8; 16];
    matches!(
        tokio::time::timeout(within, s.read(&mut b)).await,
        Ok(Ok(0) | Err(_))
    )
}

fn registration() -> Registration {
    Registration {
        entity: "stor1".into(),
        portals: vec!["127.0.0.1:3260".parse().unwrap()],
        nodes: vec![NodeRegistration {
            name: "iqn.2024-01.test:t1".into(),
            node_type: NodeType::Target,
            alias: None,
        }],
        portal_groups: Vec::new(),
        registration_period: None,
        replace: true,
    }
}

#[tokio::test]
async fn idle_flood_does_not_lock_out_a_client() {
    let (addr, _dir, _stop) = start(|c| c.max_connections = 8).await;
    let mut flood = Vec::new();
    for i in 10..18u8 {
        flood.push(idle_socket(addr, IpAddr::from([127, 0, 0, i])).await);
    }
    let work = async {
        let mut c = Client::connect(addr).await.unwrap();
        c.set_timeout(Duration::from_millis(500));
        assert_eq!(c.register(&registration()).await.unwrap(), "stor1");
        assert_eq!(
            c.query_target_portals("iqn.x", "iqn.2024-01.test:t1")
                .await
                .unwrap(),
            vec!["127.0.0.1:3260".parse::<SocketAddr>().unwrap()]
        );
        c
    };
    let mut c = tokio::time::timeout(Duration::from_secs(1), work)
        .await
        .expect("client served within 1 s despite the idle flood");
    // The oldest idle socket made room.
    assert!(closed_within(&mut flood[0], Duration::from_secs(1)).await);
    // One more newcomer evicts the oldest silent socket, not the client that spoke.
    let _late = idle_socket(addr, IpAddr::from([127, 0, 0, 18])).await;
    assert!(closed_within(&mut flood[1], Duration::from_secs(1)).await);
    c.set_timeout(Duration::from_millis(500));
    let again = tokio::time::timeout(
        Duration::from_secs(1),
        c.query_target_portals("iqn.x", "iqn.2024-01.test:t1"),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(again.len(), 1);
}

#[tokio::test]
async fn silent_connection_is_closed_after_the_first_message_timeout() {
    let (addr, _dir, _stop) = start(|c| c.first_message_timeout = Duration::from_millis(200)).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    assert!(closed_within(&mut s, Duration::from_secs(2)).await);
    // A client that speaks keeps its connection past the first-message timeout.
    let mut c = Client::connect(addr).await.unwrap();
    c.register(&registration()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    c.set_timeout(Duration::from_millis(500));
    assert_eq!(
        c.query_target_portals("iqn.x", "iqn.2024-01.test:t1")
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn per_address_limit_refuses_more_connections() {
    let (addr, _dir, _stop) = start(|c| c.max_connections_per_address = 2).await;
    let from = IpAddr::from([127, 0, 0, 20]);
    let mut a = idle_socket(addr, from).await;
    let mut b = idle_socket(addr, from).await;
    let mut third = idle_socket(addr, from).await;
    assert!(closed_within(&mut third, Duration::from_secs(1)).await);
    assert!(!closed_within(&mut a, Duration::from_millis(100)).await);
    assert!(!closed_within(&mut b, Duration::from_millis(100)).await);
    // Another address is still served.
    let mut c = Client::connect(addr).await.unwrap();
    c.register(&registration()).await.unwrap();
}

#[tokio::test]
async fn one_address_cannot_fill_the_registry() {
    let (addr, _dir, _stop) = start(|c| c.max_entities_per_address = 2).await;
    let mut c = Client::connect(addr).await.unwrap();
    c.set_timeout(Duration::from_secs(2));
    let reg = |i: u16| Registration {
        entity: format!("flood{i}"),
        portals: vec![SocketAddr::from(([127, 0, 0, 1], 4000 + i))],
        nodes: vec![NodeRegistration {
            name: format!("iqn.2024-01.test:flood{i}"),
            node_type: NodeType::Target,
            alias: None,
        }],
        portal_groups: Vec::new(),
        registration_period: Some(0),
        replace: true,
    };
    assert_eq!(c.register(&reg(0)).await.unwrap(), "flood0");
    assert_eq!(c.register(&reg(1)).await.unwrap(), "flood1");
    match c.register(&reg(2)).await {
        Err(isns::ClientError::Status { status, .. }) => {
            assert_eq!(status, isns_proto::Status::INVALID_REGISTRATION);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Re-registering an entity it holds still works at the limit.
    assert_eq!(c.register(&reg(1)).await.unwrap(), "flood1");
    // Freeing one lets the address register one more.
    c.deregister_entity("iqn.2024-01.test:flood0", "flood0")
        .await
        .unwrap();
    assert_eq!(c.register(&reg(2)).await.unwrap(), "flood2");
}
