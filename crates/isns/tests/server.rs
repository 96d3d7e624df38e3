//! Client library against the real server over loopback TCP.

mod common;
use common::{read_message, start};

use std::net::SocketAddr;
use std::time::Duration;

use isns::{Client, NodeRegistration, NodeType, PortalGroupRegistration, Registration};
use isns_proto::tag;
use isns_proto::{Attribute, FunctionId, Message, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn a(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn storage() -> Registration {
    Registration {
        entity: "stor1".into(),
        portals: vec![
            a("127.0.0.1:3260"),
            a("127.0.0.2:3260"),
            a("127.0.0.3:3261"),
        ],
        nodes: vec![
            NodeRegistration {
                name: "iqn.2024-01.test:t1".into(),
                node_type: NodeType::Target,
                alias: Some("t1".into()),
            },
            NodeRegistration {
                name: "iqn.2024-01.test:t2".into(),
                node_type: NodeType::Target,
                alias: None,
            },
        ],
        portal_groups: vec![PortalGroupRegistration {
            node: "iqn.2024-01.test:t2".into(),
            portal: a("127.0.0.1:3260"),
            tag: 2,
        }],
        registration_period: None,
        replace: true,
    }
}

#[tokio::test]
async fn register_query_rebalance_deregister() {
    let (addr, _dir, _stop) = start(|_| {}).await;
    let mut target = Client::connect(addr).await.unwrap();
    assert_eq!(target.register(&storage()).await.unwrap(), "stor1");
    let mut ini = Client::connect(addr).await.unwrap();
    let t1 = "iqn.2024-01.test:t1";
    let all = vec![
        a("127.0.0.1:3260"),
        a("127.0.0.2:3260"),
        a("127.0.0.3:3261"),
    ];
    assert_eq!(
        ini.query_target_portals("iqn.2024-01.test:host", t1)
            .await
            .unwrap(),
        all
    );
    assert_eq!(
        ini.query_target_portals("iqn.2024-01.test:host", "iqn.2024-01.test:t2")
            .await
            .unwrap(),
        all
    );

    // The balancer's "delete registration" of (t1, first portal), then undo.
    target
        .delete_registration(t1, a("127.0.0.1:3260"))
        .await
        .unwrap();
    assert_eq!(
        ini.query_target_portals("iqn.x", t1).await.unwrap(),
        all[1..].to_vec()
    );
    target
        .restore_registration(t1, a("127.0.0.1:3260"), 1)
        .await
        .unwrap();
    assert_eq!(ini.query_target_portals("iqn.x", t1).await.unwrap(), all);

    // Re-registering (replace) keeps the answer identical.
    target.register(&storage()).await.unwrap();
    assert_eq!(ini.query_target_portals("iqn.x", t1).await.unwrap(), all);

    target.deregister_entity(t1, "stor1").await.unwrap();
    assert!(
        ini.query_target_portals("iqn.x", t1)
            .await
            .unwrap()
            .is_empty()
    );
    // Unknown PG: an error status, not a hang.
    assert!(
        target
            .delete_registration(t1, a("127.0.0.1:3260"))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn two_clients_share_the_registry() {
    let (addr, _dir, _stop) = start(|_| {}).await;
    let mut c = Client::connect(addr).await.unwrap();
    c.register(&storage()).await.unwrap();
    // A second client on the same server sees the same data; the first one keeps working.
    let mut d = Client::connect(addr).await.unwrap();
    assert_eq!(
        d.query_target_portals("iqn.x", "iqn.2024-01.test:t1")
            .await
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        c.query_target_portals("iqn.x", "iqn.2024-01.test:t1")
            .await
            .unwrap()
            .len(),
        3
    );
}

#[tokio::test]
async fn garbage_gets_error_or_close_while_others_work() {
    let (addr, _dir, _stop) = start(|_| {}).await;
    let mut good = Client::connect(addr).await.unwrap();
    good.register(&storage()).await.unwrap();

    // Wrong version: Version Not Supported, then close.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&[0, 9, 0, 2, 0, 0, 0x8c, 0, 0, 1, 0, 0])
        .await
        .unwrap();
    let m = tokio::time::timeout(Duration::from_secs(5), read_message(&mut s))
        .await
        .unwrap();
    assert_eq!(
        m.and_then(|m| m.status),
        Some(Status::VERSION_NOT_SUPPORTED)
    );

    // Length not a multiple of 4 (oversized/odd): error then close.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&[0, 1, 0, 2, 0xff, 0xff, 0x8c, 0, 0, 1, 0, 0])
        .await
        .unwrap();
    let m = tokio::time::timeout(Duration::from_secs(5), read_message(&mut s))
        .await
        .unwrap();
    assert_eq!(m.and_then(|m| m.status), Some(Status::MESSAGE_FORMAT_ERROR));
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0, "connection closed");

    // Malformed attribute (length 3): Message Format Error, connection stays usable.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let bad_attr = [0, 0, 0, 32, 0, 0, 0, 3, 1, 2, 3, 4];
    let mut pdu = vec![0, 1, 0, 2, 0, 12, 0x8c, 0, 0, 7, 0, 0];
    pdu.extend_from_slice(&bad_attr);
    s.write_all(&pdu).await.unwrap();
    let m = tokio::time::timeout(Duration::from_secs(5), read_message(&mut s))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((m.status, m.xid), (Some(Status::MESSAGE_FORMAT_ERROR), 7));
    let q = Message::request(
        FunctionId::DEV_ATTR_QRY,
        8,
        Attribute::string(tag::ISCSI_NAME, "iqn.x"),
        vec![Attribute::string(tag::ISCSI_NAME, "iqn.2024-01.test:t1")],
        vec![],
    );
    s.write_all(&q.to_bytes()).await.unwrap();
    let m = tokio::time::timeout(Duration::from_secs(5), read_message(&mut s))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((m.status, m.xid), (Some(Status::SUCCESS), 8));

    // Truncated PDU then hang-up.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&[0, 1, 0, 2, 0, 64, 0x8c, 0, 0, 1, 0, 0, 1, 2])
        .await
        .unwrap();
    drop(s);

    // Random bytes.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let _ = s.write_all(&noise).await;
    drop(s);

    assert_eq!(
        good.query_target_portals("iqn.x", "iqn.2024-01.test:t1")
            .await
            .unwrap()
            .len(),
        3
    );
}

#[tokio::test]
async fn scn_is_sent_to_the_portal_scn_port() {
    let (addr, _dir, _stop) = start(|_| {}).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let scn_port = listener.local_addr().unwrap().port();
    let mut ini = Client::connect(addr).await.unwrap();
    let name = "iqn.2024-01.test:host";
    let reg = Message::request(
        FunctionId::DEV_ATTR_REG,
        0,
        Attribute::string(tag::ISCSI_NAME, name),
        vec![Attribute::string(tag::ENTITY_IDENTIFIER, "host")],
        vec![
            Attribute::ip(tag::PORTAL_IP_ADDRESS, "127.0.0.1".parse().unwrap()),
            Attribute::tcp_port(tag::PORTAL_PORT, 860),
            Attribute::tcp_port(tag::SCN_PORT, scn_port),
            Attribute::string(tag::ISCSI_NAME, name),
            Attribute::u32(tag::ISCSI_NODE_TYPE, tag::node_type::INITIATOR),
        ],
    );
    ini.call_ok(reg).await.unwrap();
    ini.register_scn(name, tag::scn::OBJECT_ADDED | tag::scn::OBJECT_REMOVED)
        .await
        .unwrap();
    let mut target = Client::connect(addr).await.unwrap();
    target.register(&storage()).await.unwrap();
    let (mut s, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
        .await
        .unwrap()
        .unwrap();
    let m = tokio::time::timeout(Duration::from_secs(5), read_message(&mut s))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.function, FunctionId::SCN);
    assert_eq!(m.key().first().and_then(Attribute::as_str), Some(name));
    assert!(
        m.key()
            .iter()
            .any(|a| a.tag == tag::ISCSI_NAME && a.as_str() == Some("iqn.2024-01.test:t1"))
    );
    let ack = Message::response(&m, Status::SUCCESS, m.key()[..1].to_vec(), vec![]);
    s.write_all(&ack.to_bytes()).await.unwrap();
}
