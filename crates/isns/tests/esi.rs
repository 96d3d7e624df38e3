//! Entity Status Inquiry against the real server (RFC 4171 §5.6.5.13): a
//! small TCP listener in the test plays the portal's ESI port.

mod common;
use common::{read_message, start};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use isns::Client;
use isns::registry::EsiConfig;
use isns_proto::tag;
use isns_proto::{Attribute, FunctionId, Message, Status};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// The portal's ESI port: answers each ESI (echoing its attributes, as
/// open-isns clients do) while `answering`, else closes the connection
/// without a word. Counts the ESIs answered.
async fn esi_port(answering: Arc<AtomicBool>, answered: Arc<AtomicUsize>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let answering = answering.clone();
            let answered = answered.clone();
            tokio::spawn(async move {
                let Some(m) = read_message(&mut s).await else {
                    return;
                };
                assert_eq!(m.function, FunctionId::ESI);
                if !answering.load(Ordering::SeqCst) {
                    return;
                }
                let mut resp = Message::error_response(FunctionId::ESI, m.xid, Status::SUCCESS);
                resp.attrs = m.attrs.clone();
                s.write_all(&resp.to_bytes()).await.unwrap();
                answered.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    port
}

fn register_with_esi(eid: &str, name: &str, esi_port: u16, interval: u32) -> Message {
    Message::request(
        FunctionId::DEV_ATTR_REG,
        0,
        Attribute::string(tag::ISCSI_NAME, name),
        vec![Attribute::string(tag::ENTITY_IDENTIFIER, eid)],
        vec![
            Attribute::ip(tag::PORTAL_IP_ADDRESS, "127.0.0.1".parse().unwrap()),
            Attribute::tcp_port(tag::PORTAL_PORT, 3260),
            Attribute::u32(tag::ESI_INTERVAL, interval),
            Attribute::tcp_port(tag::ESI_PORT, esi_port),
            Attribute::string(tag::ISCSI_NAME, name),
            Attribute::u32(tag::ISCSI_NODE_TYPE, tag::node_type::TARGET),
        ],
    )
}

/// Whether the entity `eid` is registered, asked by a source that is not
/// one of its nodes (so the query refreshes nothing).
async fn registered(c: &mut Client, eid: &str) -> bool {
    let q = Message::request(
        FunctionId::DEV_ATTR_QRY,
        0,
        Attribute::string(tag::ISCSI_NAME, "iqn.2024-01.test:onlooker"),
        vec![Attribute::string(tag::ENTITY_IDENTIFIER, eid)],
        vec![Attribute::nil(tag::ENTITY_IDENTIFIER)],
    );
    let r = c.call_ok(q).await.unwrap();
    r.operating()
        .iter()
        .any(|a| a.tag == tag::ENTITY_IDENTIFIER && a.as_str() == Some(eid))
}

#[tokio::test]
async fn answered_esis_keep_the_entity_and_unanswered_ones_expire_it() {
    let (addr, _dir, _stop) = start(|c| {
        c.esi = EsiConfig {
            enabled: true,
            min_interval: 1,
            allowed_misses: 2,
        };
        c.esi_timeout = Duration::from_millis(500);
    })
    .await;
    let answering = Arc::new(AtomicBool::new(true));
    let answered = Arc::new(AtomicUsize::new(0));
    let port = esi_port(answering.clone(), answered.clone()).await;
    let mut target = Client::connect(addr).await.unwrap();
    let name = "iqn.2024-01.test:esi-target";
    let resp = target
        .call_ok(register_with_esi("esi-ent", name, port, 1))
        .await
        .unwrap();
    assert!(
        resp.operating()
            .contains(&Attribute::u32(tag::ESI_INTERVAL, 1)),
        "interval granted as asked: {resp:?}"
    );
    drop(target);
    let mut onlooker = Client::connect(addr).await.unwrap();
    // Answering: ESIs keep coming and the entity stays.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        answered.load(Ordering::SeqCst) >= 2,
        "ESIs answered: {}",
        answered.load(Ordering::SeqCst)
    );
    assert!(registered(&mut onlooker, "esi-ent").await);
    // Silent: after the allowed misses the portal goes, and with it the
    // entity, which sent nothing since its last ESI Response.
    answering.store(false, Ordering::SeqCst);
    let mut gone_after = None;
    for tenth in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if !registered(&mut onlooker, "esi-ent").await {
            gone_after = Some(tenth);
            break;
        }
    }
    assert!(
        gone_after.is_some(),
        "entity still registered 10 s after ESIs stopped"
    );
    let q = Message::request(
        FunctionId::DEV_ATTR_QRY,
        0,
        Attribute::string(tag::ISCSI_NAME, "iqn.2024-01.test:onlooker"),
        vec![Attribute::string(tag::ISCSI_NAME, name)],
        vec![Attribute::nil(tag::ISCSI_NAME)],
    );
    let r = onlooker.call_ok(q).await.unwrap();
    assert!(r.operating().is_empty(), "its node went too: {r:?}");
}

#[tokio::test]
async fn a_server_without_esi_refuses_a_registration_asking_for_it() {
    let (addr, _dir, _stop) = start(|c| {
        c.esi = EsiConfig {
            enabled: false,
            ..EsiConfig::default()
        }
    })
    .await;
    let mut c = Client::connect(addr).await.unwrap();
    let r = c
        .call(register_with_esi("e", "iqn.2024-01.test:e", 4000, 30))
        .await
        .unwrap();
    assert_eq!(r.status, Some(Status::ESI_NOT_AVAILABLE));
}
