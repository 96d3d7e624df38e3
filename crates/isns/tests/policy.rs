//! Who may change what, and the explicit limits, against the real server:
//! Source Unauthorized for another entity's objects (RFC 4171 §5.6.1),
//! objects per entity, message size, several listen addresses.

mod common;
use common::{read_message, start_all as start};

use std::net::SocketAddr;
use std::time::Duration;

use isns::Client;
use isns_proto::tag;
use isns_proto::{Attribute, FunctionId, Message, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn register(source: &str, eid: &str, nodes: &[&str], portals: &[u16]) -> Message {
    let mut ops = Vec::new();
    for p in portals {
        ops.push(Attribute::ip(
            tag::PORTAL_IP_ADDRESS,
            "127.0.0.1".parse().unwrap(),
        ));
        ops.push(Attribute::tcp_port(tag::PORTAL_PORT, *p));
    }
    for n in nodes {
        ops.push(Attribute::string(tag::ISCSI_NAME, n));
        ops.push(Attribute::u32(tag::ISCSI_NODE_TYPE, tag::node_type::TARGET));
    }
    Message::request(
        FunctionId::DEV_ATTR_REG,
        0,
        Attribute::string(tag::ISCSI_NAME, source),
        vec![Attribute::string(tag::ENTITY_IDENTIFIER, eid)],
        ops,
    )
}

fn dereg_node(source: &str, node: &str) -> Message {
    Message::request(
        FunctionId::DEV_DEREG,
        0,
        Attribute::string(tag::ISCSI_NAME, source),
        vec![],
        vec![Attribute::string(tag::ISCSI_NAME, node)],
    )
}

#[tokio::test]
async fn only_the_owner_or_a_control_node_may_deregister_a_node() {
    let (addrs, _dir, _stop) =
        start(|c| c.control_nodes = vec!["iqn.2024-01.test:ctl".into()]).await;
    let mut c = Client::connect(addrs[0]).await.unwrap();
    let a = "iqn.2024-01.test:a";
    let b = "iqn.2024-01.test:b";
    c.call_ok(register(a, "ea", &[a, "iqn.2024-01.test:a2"], &[3260]))
        .await
        .unwrap();
    c.call_ok(register(b, "eb", &[b], &[3261])).await.unwrap();
    // b may not remove a's node, nor register into a's entity.
    let r = c.call(dereg_node(b, a)).await.unwrap();
    assert_eq!(r.status, Some(Status::SOURCE_UNAUTHORIZED));
    let r = c.call(register(b, "ea", &[b], &[])).await.unwrap();
    assert_eq!(r.status, Some(Status::SOURCE_UNAUTHORIZED));
    // Nor take over its SCN registration.
    let r = c
        .call(Message::request(
            FunctionId::SCN_REG,
            0,
            Attribute::string(tag::ISCSI_NAME, b),
            vec![Attribute::string(tag::ISCSI_NAME, a)],
            vec![Attribute::u32(
                tag::ISCSI_SCN_BITMAP,
                tag::scn::OBJECT_ADDED,
            )],
        ))
        .await
        .unwrap();
    assert_eq!(r.status, Some(Status::SOURCE_UNAUTHORIZED));
    assert_eq!(
        c.query_target_portals(b, a).await.unwrap(),
        vec!["127.0.0.1:3260".parse::<SocketAddr>().unwrap()]
    );
    // The control node may.
    c.call_ok(dereg_node("iqn.2024-01.test:ctl", a))
        .await
        .unwrap();
    let q = Message::request(
        FunctionId::DEV_ATTR_QRY,
        0,
        Attribute::string(tag::ISCSI_NAME, b),
        vec![Attribute::string(tag::ISCSI_NAME, a)],
        vec![Attribute::nil(tag::ISCSI_NAME)],
    );
    assert!(c.call_ok(q).await.unwrap().operating().is_empty());
}

#[tokio::test]
async fn objects_per_entity_are_limited_with_status_3() {
    let (addrs, _dir, _stop) = start(|c| c.max_objects_per_entity = 3).await;
    let mut c = Client::connect(addrs[0]).await.unwrap();
    let n = "iqn.2024-01.test:n";
    // Portal, node and their implicit portal group: 3 objects.
    c.call_ok(register(n, "e", &[n], &[3260])).await.unwrap();
    // A second portal brings 2 more (the portal and its group): refused, nothing changed.
    let r = c.call(register(n, "e", &[], &[3261])).await.unwrap();
    assert_eq!(r.status, Some(Status::INVALID_REGISTRATION));
    assert_eq!(
        c.query_target_portals(n, n).await.unwrap(),
        vec!["127.0.0.1:3260".parse::<SocketAddr>().unwrap()]
    );
}

#[tokio::test]
async fn total_entities_are_limited_with_status_3() {
    let (addrs, _dir, _stop) = start(|c| c.max_entities = 2).await;
    let mut c = Client::connect(addrs[0]).await.unwrap();
    for i in 0..2u16 {
        let n = format!("iqn.2024-01.test:n{i}");
        c.call_ok(register(&n, &format!("e{i}"), &[&n], &[3260 + i]))
            .await
            .unwrap();
    }
    let n = "iqn.2024-01.test:n2";
    let r = c.call(register(n, "e2", &[n], &[3262])).await.unwrap();
    assert_eq!(r.status, Some(Status::INVALID_REGISTRATION));
    // Updating a registered entity is still allowed at the limit.
    let n0 = "iqn.2024-01.test:n0";
    c.call_ok(register(n0, "e0", &[n0], &[3270])).await.unwrap();
}

#[tokio::test]
async fn an_oversized_request_gets_status_2_and_a_close_while_others_are_served() {
    let (addrs, _dir, _stop) = start(|c| c.max_message_len = 4096).await;
    let mut good = Client::connect(addrs[0]).await.unwrap();
    good.set_timeout(Duration::from_secs(2));
    let n = "iqn.2024-01.test:n";
    good.call_ok(register(n, "e", &[n], &[3260])).await.unwrap();
    // 100 aliases of 64 bytes: over 4 KiB.
    let mut big = register(n, "e", &[n], &[]);
    for i in 0..100 {
        big.attrs
            .push(Attribute::string(tag::ISCSI_ALIAS, &format!("{i:063}")));
    }
    assert!(big.payload().len() > 4096);
    for round in 0..3 {
        let mut s = TcpStream::connect(addrs[0]).await.unwrap();
        s.write_all(&big.to_bytes()).await.unwrap();
        let m = tokio::time::timeout(Duration::from_secs(5), read_message(&mut s))
            .await
            .unwrap()
            .expect("an answer before the close");
        assert_eq!(
            (m.function, m.status),
            (
                FunctionId::DEV_ATTR_REG.response(),
                Some(Status::MESSAGE_FORMAT_ERROR)
            )
        );
        let mut rest = Vec::new();
        let n_read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n_read, 0, "connection closed after the refusal");
        // Meanwhile the other client is answered as usual.
        assert_eq!(
            good.query_target_portals("iqn.x", n).await.unwrap().len(),
            1,
            "round {round}"
        );
    }
    // A request within the limit on a new connection is fine.
    let mut c = Client::connect(addrs[0]).await.unwrap();
    c.call_ok(register(n, "e", &[n], &[3261])).await.unwrap();
}

#[tokio::test]
async fn every_listen_address_serves_the_same_registry() {
    let (addrs, _dir, _stop) = start(|c| {
        c.extra_listen = vec!["127.0.0.1:0".parse().unwrap()];
    })
    .await;
    assert_eq!(addrs.len(), 2);
    assert_ne!(addrs[0], addrs[1]);
    let n = "iqn.2024-01.test:n";
    let mut first = Client::connect(addrs[0]).await.unwrap();
    first
        .call_ok(register(n, "e", &[n], &[3260]))
        .await
        .unwrap();
    let mut second = Client::connect(addrs[1]).await.unwrap();
    assert_eq!(
        second.query_target_portals("iqn.x", n).await.unwrap().len(),
        1
    );
}
