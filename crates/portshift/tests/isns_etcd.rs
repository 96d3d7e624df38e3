//! Several `portshift isns` servers on one registry in a three-member etcd cluster on
//! loopback (Debian's `etcd-server` and `etcd-client`; `common::etcd`), checked with
//! open-isns' isnsadm, `portshift target` and the iSNS client.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::etcd::{EtcdCluster, isns_on_etcd};
use common::{free_addr, isnsadm, isnsadm_conf, portshift_server, wait_for};
use isns::{Client, NodeRegistration, NodeType, Registration};
use isns_proto::tag;
use isns_proto::{Attribute, FunctionId, Message, MessageDecoder, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// isnsadm's source name: a Control Node of the servers.
const ADM: &str = common::etcd::CONTROL_NODE;

/// The quoted values of the isnsadm output lines naming `what` (e.g. "iSCSI name").
fn values(out: &str, what: &str) -> Vec<String> {
    out.lines()
        .filter(|l| l.contains(what))
        .filter_map(|l| l.split('"').nth(1).map(str::to_string))
        .collect()
}

/// The iSCSI names isnsadm lists through the server at `server`.
fn listed_nodes(dir: &Path, server: SocketAddr) -> Vec<String> {
    let conf = isnsadm_conf(dir, &format!("adm-{}.conf", server.port()), server, ADM);
    values(&isnsadm(&conf, &["--list", "nodes"]).1, "iSCSI name")
}

/// The entity identifiers isnsadm lists through the server at `server`.
fn listed_entities(dir: &Path, server: SocketAddr) -> Vec<String> {
    let conf = isnsadm_conf(dir, &format!("adm-{}.conf", server.port()), server, ADM);
    values(
        &isnsadm(&conf, &["--list", "entities"]).1,
        "Entity identifier",
    )
}

fn target(entity: &str, portal: &str, period: Option<u32>) -> Registration {
    Registration {
        entity: entity.to_string(),
        portals: vec![portal.parse().unwrap()],
        nodes: vec![NodeRegistration {
            name: format!("iqn.2024-01.test:{entity}"),
            node_type: NodeType::Target,
            alias: None,
        }],
        registration_period: period,
        ..Registration::default()
    }
}

/// A node subscribed to SCNs on one server, receiving them on its own connection.
struct Subscriber {
    s: TcpStream,
    buf: bytes::BytesMut,
    decoder: MessageDecoder,
}

impl Subscriber {
    /// Register initiator `name` (entity `name`, no portal) through `server` and subscribe it
    /// to object added / removed SCNs on the same connection.
    async fn connect(server: SocketAddr, name: &str) -> Subscriber {
        let s = TcpStream::connect(server).await.unwrap();
        let mut sub = Subscriber {
            s,
            buf: bytes::BytesMut::new(),
            decoder: MessageDecoder::new(),
        };
        let reg = Message::request(
            FunctionId::DEV_ATTR_REG,
            1,
            Attribute::string(tag::ISCSI_NAME, name),
            vec![Attribute::string(tag::ENTITY_IDENTIFIER, name)],
            vec![
                Attribute::string(tag::ENTITY_IDENTIFIER, name),
                Attribute::string(tag::ISCSI_NAME, name),
                Attribute::u32(tag::ISCSI_NODE_TYPE, tag::node_type::INITIATOR),
            ],
        );
        assert_eq!(sub.call(reg).await.status, Some(Status::SUCCESS));
        let scn = Message::request(
            FunctionId::SCN_REG,
            2,
            Attribute::string(tag::ISCSI_NAME, name),
            vec![Attribute::string(tag::ISCSI_NAME, name)],
            vec![Attribute::u32(
                tag::ISCSI_SCN_BITMAP,
                tag::scn::OBJECT_ADDED | tag::scn::OBJECT_REMOVED,
            )],
        );
        assert_eq!(sub.call(scn).await.status, Some(Status::SUCCESS));
        sub
    }

    async fn read(&mut self) -> Option<Message> {
        loop {
            if let Some(m) = self.decoder.decode(&mut self.buf).ok()? {
                return Some(m);
            }
            if self.s.read_buf(&mut self.buf).await.ok()? == 0 {
                return None;
            }
        }
    }

    async fn call(&mut self, req: Message) -> Message {
        self.s.write_all(&req.to_bytes()).await.unwrap();
        loop {
            let m = tokio::time::timeout(Duration::from_secs(10), self.read())
                .await
                .expect("answer in time")
                .expect("connection open");
            if m.function == req.function.response() {
                return m;
            }
        }
    }

    /// SCN messages received within `limit` (each acknowledged), as (event bits, iSCSI names
    /// and entity identifiers named in its key).
    async fn scns(&mut self, limit: Duration) -> Vec<(u32, Vec<String>)> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut out = Vec::new();
        while let Ok(Some(m)) = tokio::time::timeout_at(deadline, self.read()).await {
            if m.function != FunctionId::SCN {
                continue;
            }
            let ack = Message::response(&m, Status::SUCCESS, m.key()[..1].to_vec(), vec![]);
            let _ = self.s.write_all(&ack.to_bytes()).await;
            let bits = m
                .key()
                .iter()
                .filter(|a| a.tag == tag::ISCSI_SCN_BITMAP)
                .filter_map(Attribute::as_u32)
                .fold(0, |a, b| a | b);
            let names = m
                .key()
                .iter()
                .skip(1)
                .filter(|a| a.tag == tag::ISCSI_NAME || a.tag == tag::ENTITY_IDENTIFIER)
                .filter_map(|a| a.as_str().map(str::to_string))
                .collect();
            out.push((bits, names));
        }
        out
    }
}

/// Acceptance 1: two storage systems (`portshift target`) register through two different
/// servers on one etcd cluster; isnsadm against either lists both, in registration order.
#[test]
fn two_targets_through_two_servers_are_listed_by_both_in_registration_order() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = EtcdCluster::start(dir.path());
    let (_a, a) = isns_on_etcd(dir.path(), "isns-a", &cluster.endpoints());
    let (_b, b) = isns_on_etcd(dir.path(), "isns-b", &cluster.endpoints());
    let start_target = |n: usize, isns: SocketAddr| {
        let portal = free_addr(&format!("127.0.0.{}", 10 + n));
        let admin = free_addr("127.0.0.1");
        let lun = dir.path().join(format!("lun{n}.img"));
        let args: Vec<String> = [
            "target".to_string(),
            "--portal".into(),
            portal.to_string(),
            "--lun".into(),
            format!("iqn.2024-01.test:storage{n}={}", lun.display()),
            "--size".into(),
            "16M".into(),
            "--isns".into(),
            isns.to_string(),
            "--admin".into(),
            admin.to_string(),
        ]
        .to_vec();
        portshift_server(&args, admin, &dir.path().join(format!("target{n}.log")))
    };
    let t1 = "iqn.2024-01.test:storage1".to_string();
    let t2 = "iqn.2024-01.test:storage2".to_string();
    let _target1 = start_target(1, a);
    // The first registration is visible through the other server (its watch) before the
    // second storage system starts.
    let seen = wait_for(Duration::from_secs(15), || {
        listed_nodes(dir.path(), b).contains(&t1).then_some(())
    });
    assert!(seen.is_some(), "server B never listed {t1}");
    let _target2 = start_target(2, b);
    for server in [a, b] {
        let both = wait_for(Duration::from_secs(15), || {
            let nodes = listed_nodes(dir.path(), server);
            (nodes.contains(&t1) && nodes.contains(&t2)).then_some(nodes)
        });
        let nodes = both.unwrap_or_else(|| panic!("{server} does not list both targets"));
        assert_eq!(
            nodes,
            [t1.clone(), t2.clone()],
            "registration order via {server}"
        );
    }
    assert_eq!(
        listed_entities(dir.path(), a),
        listed_entities(dir.path(), b),
        "both servers list the same entities in the same order"
    );
    assert_eq!(listed_entities(dir.path(), a).len(), 2);
}

/// Registration order is one sequence across servers: entities registered alternately through
/// A and B are listed by both in the order they were acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_order_is_global_across_servers() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = EtcdCluster::start(dir.path());
    let (_a, a) = isns_on_etcd(dir.path(), "isns-a", &cluster.endpoints());
    let (_b, b) = isns_on_etcd(dir.path(), "isns-b", &cluster.endpoints());
    let mut ca = Client::connect(a).await.unwrap();
    let mut cb = Client::connect(b).await.unwrap();
    let order = ["zz", "aa", "mm", "bb", "yy", "cc"];
    for (i, eid) in order.iter().enumerate() {
        let c = if i % 2 == 0 { &mut ca } else { &mut cb };
        c.register(&target(eid, &format!("127.0.1.{}:3260", i + 1), None))
            .await
            .unwrap();
    }
    for server in [a, b] {
        let d = dir.path().to_path_buf();
        let listed = tokio::task::spawn_blocking(move || {
            wait_for(Duration::from_secs(10), || {
                let l = listed_entities(&d, server);
                (l.len() == 6).then_some(l)
            })
        })
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{server} does not list the 6 entities"));
        assert_eq!(listed, order, "order via {server}");
    }
    // A query through either server answers from its copy: the portals of a target
    // registered through the other one.
    assert_eq!(
        ca.query_target_portals(ADM, "iqn.2024-01.test:aa")
            .await
            .unwrap(),
        ["127.0.1.2:3260".parse::<SocketAddr>().unwrap()]
    );
    // Two servers changing the same entity: both writes land, in order.
    ca.register(&target("zz", "127.0.2.1:3260", None))
        .await
        .unwrap();
    cb.register(&target("zz", "127.0.2.2:3260", None))
        .await
        .unwrap();
    let mut portals = Vec::new();
    for _ in 0..50 {
        portals = ca
            .query_target_portals(ADM, "iqn.2024-01.test:zz")
            .await
            .unwrap();
        if portals.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let want: Vec<SocketAddr> = ["127.0.1.1:3260", "127.0.2.1:3260", "127.0.2.2:3260"]
        .iter()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(portals, want, "neither server lost the other's change");
}

/// Build item 3: a node subscribed on server A is notified of registrations and
/// deregistrations made through server B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scn_reaches_a_subscriber_of_a_for_changes_made_through_b() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = EtcdCluster::start(dir.path());
    let (_a, a) = isns_on_etcd(dir.path(), "isns-a", &cluster.endpoints());
    let (_b, b) = isns_on_etcd(dir.path(), "isns-b", &cluster.endpoints());
    let mut sub = Subscriber::connect(a, "iqn.2024-01.test:watcher").await;
    let mut cb = Client::connect(b).await.unwrap();
    let name = "iqn.2024-01.test:viab";
    let before = leases(&cluster);
    cb.register(&target("viab", "127.0.3.1:3260", None))
        .await
        .unwrap();
    let granted: Vec<String> = leases(&cluster)
        .into_iter()
        .filter(|l| !before.contains(l))
        .collect();
    assert_eq!(
        granted.len(),
        1,
        "one lease for the new entity: {granted:?}"
    );
    let scns = sub.scns(Duration::from_secs(3)).await;
    assert!(
        scns.iter()
            .any(|(bits, names)| bits & tag::scn::OBJECT_ADDED != 0
                && names.iter().any(|n| n == name)),
        "no OBJECT_ADDED for {name} on A: {scns:?}"
    );
    cb.deregister_entity(name, "viab").await.unwrap();
    let scns = sub.scns(Duration::from_secs(3)).await;
    let removed: Vec<_> = scns
        .iter()
        .filter(|(bits, names)| {
            bits & tag::scn::OBJECT_REMOVED != 0 && names.iter().any(|n| n == "viab")
        })
        .collect();
    assert_eq!(
        removed.len(),
        1,
        "one OBJECT_REMOVED for viab on A: {scns:?}"
    );
    assert!(
        !leases(&cluster).contains(&granted[0]),
        "the deregistered entity's lease {} was revoked",
        granted[0]
    );
}

/// The IDs of the etcd cluster's leases (`etcdctl lease list`).
fn leases(cluster: &EtcdCluster) -> Vec<String> {
    let out = cluster
        .etcdctl_output(&["lease", "list"])
        .expect("etcdctl lease list");
    out.lines()
        .skip(1) // "found N leases"
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// The server named by the etcd election key (its listen address), once there is one.
fn esi_holder(cluster: &EtcdCluster, servers: &[SocketAddr]) -> Option<SocketAddr> {
    let out = cluster.etcdctl_output(&[
        "get",
        "--prefix",
        "--sort-by=CREATE",
        "--order=ASCEND",
        "--print-value-only",
        "/portshift/isns/election/esi",
    ])?;
    // The oldest campaign key holds the role (etcd's election).
    let first = out.lines().find(|l| !l.trim().is_empty())?;
    servers
        .iter()
        .find(|s| first.contains(&s.to_string()))
        .copied()
}

/// Acceptance 3: an entity that stops refreshing expires once (one OBJECT_REMOVED, not one per
/// server), also after the server holding the ESI role is SIGKILLed; an entity whose node
/// keeps asking through the other server stays registered past its period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_entity_expires_once_also_after_the_esi_holder_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = EtcdCluster::start(dir.path());
    let (pa, a) = isns_on_etcd(dir.path(), "isns-a", &cluster.endpoints());
    let (pb, b) = isns_on_etcd(dir.path(), "isns-b", &cluster.endpoints());
    let mut procs = vec![(a, Some(pa)), (b, Some(pb))];
    let holder = wait_for(Duration::from_secs(15), || esi_holder(&cluster, &[a, b]))
        .expect("a server takes the ESI role");
    let survivor = if holder == a { b } else { a };
    let mut sub = Subscriber::connect(survivor, "iqn.2024-01.test:watcher").await;
    let mut via_holder = Client::connect(holder).await.unwrap();
    via_holder
        .register(&target("silent", "127.0.4.1:3260", Some(6)))
        .await
        .unwrap();
    via_holder
        .register(&target("chatty", "127.0.4.2:3260", Some(6)))
        .await
        .unwrap();
    let registered = Instant::now();
    // SIGKILL the ESI holder.
    for (addr, p) in &mut procs {
        if *addr == holder {
            drop(p.take());
        }
    }
    // chatty's node keeps asking through the survivor (each message refreshes, §6.2.6).
    let mut chatty = Client::connect(survivor).await.unwrap();
    let mut scns = Vec::new();
    while registered.elapsed() < Duration::from_secs(16) {
        chatty
            .query_target_portals("iqn.2024-01.test:chatty", "iqn.2024-01.test:chatty")
            .await
            .unwrap();
        scns.extend(sub.scns(Duration::from_secs(1)).await);
    }
    let d = dir.path().to_path_buf();
    let entities = tokio::task::spawn_blocking(move || listed_entities(&d, survivor))
        .await
        .unwrap();
    assert!(
        !entities.contains(&"silent".to_string()),
        "silent expired: {entities:?}"
    );
    assert!(
        entities.contains(&"chatty".to_string()),
        "chatty kept refreshing through the survivor: {entities:?}"
    );
    let removed: Vec<_> = scns
        .iter()
        .filter(|(bits, names)| {
            bits & tag::scn::OBJECT_REMOVED != 0 && names.iter().any(|n| n == "silent")
        })
        .collect();
    assert_eq!(removed.len(), 1, "silent expired once: {scns:?}");
    assert!(
        !scns
            .iter()
            .any(|(bits, names)| bits & tag::scn::OBJECT_REMOVED != 0
                && names.iter().any(|n| n == "chatty")),
        "chatty never expired: {scns:?}"
    );
    // The survivor took the ESI role.
    let now_holder = wait_for(Duration::from_secs(15), || {
        esi_holder(&cluster, &[a, b]).filter(|h| *h == survivor)
    });
    assert_eq!(now_holder, Some(survivor), "the survivor runs ESI");
}

/// Acceptance 2 (first half): during a registration burst through two servers, one etcd member
/// and one server are SIGKILLed. Clients of the dead server move to the other; every
/// acknowledged registration is listed by the surviving server, which keeps answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_registration_is_lost_when_a_member_and_a_server_die() {
    const EACH: usize = 30; // two clients from 127.0.0.1: within 64 entities per address
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = EtcdCluster::start(dir.path());
    let (pa, a) = isns_on_etcd(dir.path(), "isns-a", &cluster.endpoints());
    let (_pb, b) = isns_on_etcd(dir.path(), "isns-b", &cluster.endpoints());
    // A node subscribed on B (which survives) reads SCNs all through the burst.
    let mut sub = Subscriber::connect(b, "iqn.2024-01.test:burst-watcher").await;
    let (stop_watch, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let watcher = tokio::spawn(async move {
        let mut added = Vec::new();
        loop {
            let batch = sub.scns(Duration::from_millis(200)).await;
            added.extend(
                batch
                    .into_iter()
                    .filter(|(bits, _)| bits & tag::scn::OBJECT_ADDED != 0)
                    .flat_map(|(_, names)| names),
            );
            if stopped.try_recv().is_ok() {
                break;
            }
        }
        added.extend(
            sub.scns(Duration::from_secs(2))
                .await
                .into_iter()
                .filter(|(bits, _)| bits & tag::scn::OBJECT_ADDED != 0)
                .flat_map(|(_, names)| names),
        );
        added
    });
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut tasks = Vec::new();
    for (side, net, first) in [("a", 5, a), ("b", 6, b)] {
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            let servers = [first, b];
            let mut at = 0;
            let mut client = Client::connect(servers[at]).await.unwrap();
            client.set_timeout(Duration::from_secs(3));
            let mut moves = 0;
            for i in 0..EACH {
                let eid = format!("burst-{side}-{i}");
                let reg = target(&eid, &format!("127.0.{net}.{}:3260", i + 1), None);
                loop {
                    match client.register(&reg).await {
                        Ok(_) => {
                            acked.lock().unwrap().push(eid.clone());
                            break;
                        }
                        Err(e) => {
                            // Fail over to the next server (B).
                            assert!(moves < 20, "{eid}: gave up after {moves} tries: {e}");
                            moves += 1;
                            at = (at + 1).min(1);
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            if let Ok(mut c) = Client::connect(servers[at]).await {
                                c.set_timeout(Duration::from_secs(3));
                                client = c;
                            }
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        }));
    }
    let seen = wait_for(Duration::from_secs(30), || {
        (acked.lock().unwrap().len() >= 12).then_some(())
    });
    assert!(seen.is_some(), "the burst started");
    cluster.kill(0);
    drop(pa); // SIGKILL server A mid-burst
    let killed = Instant::now();
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert_eq!(
        acked.len(),
        2 * EACH,
        "every registration was acknowledged in the end"
    );
    let d = dir.path().to_path_buf();
    let listed = tokio::task::spawn_blocking(move || listed_entities(&d, b))
        .await
        .unwrap();
    for eid in &acked {
        assert!(listed.contains(eid), "{eid} was acknowledged but is lost");
    }
    // SCNs kept arriving: the subscriber on B was told of every acknowledged registration.
    stop_watch.send(()).unwrap();
    let added = watcher.await.unwrap();
    let missing: Vec<&String> = acked
        .iter()
        .filter(|eid| {
            let node = format!("iqn.2024-01.test:{eid}");
            !added.contains(&node)
        })
        .collect();
    assert!(
        missing.is_empty(),
        "no OBJECT_ADDED on B for {} of {} acknowledged registrations: {missing:?}",
        missing.len(),
        acked.len()
    );
    // The survivor answers queries.
    let mut c = Client::connect(b).await.unwrap();
    assert_eq!(
        c.query_target_portals(ADM, "iqn.2024-01.test:burst-a-0")
            .await
            .unwrap(),
        ["127.0.5.1:3260".parse::<SocketAddr>().unwrap()]
    );
    eprintln!(
        "burst finished {:.1} s after the kills",
        killed.elapsed().as_secs_f64()
    );
}
