//! `portshift isns` against Debian's open-isns (isnsadm, isnsd) and tgt (tgtd).
//!
//! These tests need the packages `open-isns-utils`, `open-isns-server` and
//! `tgt`; they fail (not skip) when a tool is missing. Everything listens on
//! loopback ports picked free at run time.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Proc, free_addr, isnsadm, isnsadm_conf, isnsd, isnsd_with, portshift_server, tool};
use isns::{Client, NodeRegistration, NodeType, Registration};

/// The source name isnsadm uses here.
const ADM_SOURCE: &str = "iqn.2024-01.test:adm";

/// `portshift isns` on `addr` with its database at `db` (its output next to it, `.log`).
fn portshift_isns(addr: SocketAddr, db: &Path) -> Proc {
    portshift_isns_with(addr, db, true)
}

/// [`portshift_isns`] with `--default-dd on|off`.
fn portshift_isns_with(addr: SocketAddr, db: &Path, default_dd: bool) -> Proc {
    let args = [
        "isns".to_string(),
        "--listen".into(),
        addr.to_string(),
        "--db".into(),
        db.display().to_string(),
        // isnsd runs with Security = 0, which gives every source the rights of a Control Node;
        // isnsadm's own source name gets them here (it deregisters other entities' objects).
        "--control-node".into(),
        ADM_SOURCE.into(),
        "--default-dd".into(),
        if default_dd { "on" } else { "off" }.into(),
    ];
    portshift_server(&args, addr, &db.with_extension("log"))
}

fn adm_conf(dir: &Path, name: &str, server: SocketAddr) -> PathBuf {
    isnsadm_conf(dir, name, server, ADM_SOURCE)
}

/// isnsadm output as objects, without indices and timestamps; optionally sorted.
fn objects(out: &str, sort: bool) -> Vec<String> {
    let mut blocks: Vec<String> = Vec::new();
    for line in out.lines() {
        if line.contains("index =") || line.contains("Timestamp =") {
            continue;
        }
        if line.starts_with("Object ") || line.starts_with("object[") || blocks.is_empty() {
            let head = line
                .split(['=', ':'])
                .nth(1)
                .unwrap_or("")
                .trim()
                .to_string();
            blocks.push(head);
            if line.starts_with("Object ") || line.starts_with("object[") {
                continue;
            }
        }
        if let Some(b) = blocks.last_mut() {
            b.push('\n');
            b.push_str(line.trim());
        }
    }
    if sort {
        blocks.sort();
    }
    blocks
}

const T1: &str = "iqn.2024-01.test:disk1";
const T2: &str = "iqn.2024-01.test:disk2";
const H1: &str = "iqn.2024-01.test:host1";

/// The isnsadm sequence; returns normalized outputs of every step.
fn adm_sequence(conf: &Path) -> Vec<(String, bool, Vec<String>)> {
    let reg_storage = format!(
        "--register entity=stor1 target={T1} portal=127.0.0.1:3260 portal=127.0.0.2:3260 target={T2}"
    );
    let query = format!("--query iscsi-name={T1}");
    let reg_ini = format!("--register initiator={H1}");
    let dereg_node = format!("--deregister iscsi-name={T2}");
    let steps = [
        reg_storage.as_str(),
        "--list entities",
        "--list nodes",
        "--list portals",
        "--list portal-groups",
        query.as_str(),
        reg_ini.as_str(),
        "--list entities",
        dereg_node.as_str(),
        "--list nodes",
        "--list portal-groups",
        query.as_str(),
        "--query iscsi-name=iqn.2024-01.test:nonexistent",
        "--deregister eid=nonexistent",
        "--deregister eid=stor1",
        "--list entities",
        "--list nodes",
        "--list portals",
    ];
    steps
        .iter()
        .map(|step| {
            let args: Vec<&str> = step.split(' ').collect();
            let (ok, out) = isnsadm(conf, &args);
            // isnsd lists in its own order; ours is registration order. Compare lists as sets.
            let sort = step.starts_with("--list");
            (step.to_string(), ok, objects(&out, sort))
        })
        .collect()
}

/// The balancer's use of the client library: returns what an initiator sees at each step.
async fn client_sequence(server: SocketAddr, conf: &Path) -> Vec<Vec<String>> {
    let t3 = "iqn.2024-01.test:lb";
    let p5: SocketAddr = "127.0.0.5:3260".parse().unwrap();
    let p6: SocketAddr = "127.0.0.6:3260".parse().unwrap();
    let mut c = Client::connect(server).await.unwrap();
    c.register(&Registration {
        entity: "lb".into(),
        portals: vec![p5, p6],
        nodes: vec![NodeRegistration {
            name: t3.into(),
            node_type: NodeType::Target,
            alias: None,
        }],
        ..Registration::default()
    })
    .await
    .unwrap();
    let mut seen = Vec::new();
    let show = |v: Vec<SocketAddr>| v.iter().map(SocketAddr::to_string).collect::<Vec<_>>();
    seen.push(show(c.query_target_portals(H1, t3).await.unwrap()));
    c.delete_registration(t3, p5).await.unwrap();
    seen.push(show(c.query_target_portals(H1, t3).await.unwrap()));
    seen.push(objects(
        &isnsadm(conf, &["--query", &format!("iscsi-name={t3}")]).1,
        false,
    ));
    c.restore_registration(t3, p5, 1).await.unwrap();
    seen.push(show(c.query_target_portals(H1, t3).await.unwrap()));
    c.deregister_entity(t3, "lb").await.unwrap();
    seen.push(show(c.query_target_portals(H1, t3).await.unwrap()));
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isnsadm_sees_the_same_as_with_isnsd() {
    let dir = tempfile::tempdir().unwrap();
    let theirs_addr = free_addr("127.0.0.1");
    let ours_addr = free_addr("127.0.0.1");
    let _isnsd = isnsd(dir.path(), theirs_addr);
    let _ours = portshift_isns(ours_addr, &dir.path().join("ours.redb"));
    let theirs_conf = adm_conf(dir.path(), "theirs.conf", theirs_addr);
    let ours_conf = adm_conf(dir.path(), "ours.conf", ours_addr);

    let theirs = adm_sequence(&theirs_conf);
    let ours = adm_sequence(&ours_conf);
    for (t, o) in theirs.iter().zip(&ours) {
        assert_eq!(
            t, o,
            "isnsadm {} differs (left isnsd, right portshift)",
            t.0
        );
    }
    // Sanity: the sequence did observe the objects.
    assert!(theirs[5].2.len() >= 5, "query returned {:?}", theirs[5]);

    let theirs = client_sequence(theirs_addr, &theirs_conf).await;
    let ours = client_sequence(ours_addr, &ours_conf).await;
    assert_eq!(
        theirs, ours,
        "client library behaves differently (left isnsd, right portshift)"
    );
    assert_eq!(ours[0], ["127.0.0.5:3260", "127.0.0.6:3260"]);
    assert_eq!(ours[1], ["127.0.0.6:3260"]);
    assert_eq!(ours[3], ["127.0.0.5:3260", "127.0.0.6:3260"]);
    assert!(ours[4].is_empty());
}

const DD_T1: &str = "iqn.2024-01.test:dd-disk1";
const DD_T2: &str = "iqn.2024-01.test:dd-disk2";
const DD_H: [&str; 3] = [
    "iqn.2024-01.test:dd-h1",
    "iqn.2024-01.test:dd-h2",
    "iqn.2024-01.test:dd-h3",
];

/// The discovery-domain isnsadm sequence against the server at `server`: `adm` (a Control
/// Node for portshift; isnsd's Security = 0 lets anyone) registers two targets and two DDs,
/// three initiators register themselves; each initiator lists and queries; members are
/// added and removed and a DD deregistered. Returns (who, step, success, objects) per step.
fn dd_sequence(
    dir: &Path,
    tag: &str,
    server: SocketAddr,
) -> Vec<(String, String, bool, Vec<String>)> {
    let adm = adm_conf(dir, &format!("{tag}-adm.conf"), server);
    let hosts: Vec<PathBuf> = DD_H
        .iter()
        .enumerate()
        .map(|(i, h)| isnsadm_conf(dir, &format!("{tag}-h{}.conf", i + 1), server, h))
        .collect();
    let [h1, h2, h3] = DD_H;
    let ghost = "iqn.2024-01.test:dd-ghost";
    let mut out = Vec::new();
    let mut run = |who: &str, conf: &Path, step: String| {
        let args: Vec<&str> = step.split(' ').collect();
        let (ok, text) = isnsadm(conf, &args);
        let sort = step.starts_with("--list");
        out.push((who.to_string(), step.clone(), ok, objects(&text, sort)));
    };
    let looks = |run: &mut dyn FnMut(&str, &Path, String), hosts: &[PathBuf]| {
        for (i, conf) in hosts.iter().enumerate() {
            let who = format!("h{}", i + 1);
            for step in [
                "--list nodes",
                "--list dds",
                "--list entities",
                "--list portals",
                "--list portal-groups",
            ] {
                run(&who, conf, step.to_string());
            }
            run(&who, conf, format!("--query iscsi-name={DD_T1}"));
            run(&who, conf, "--query dd-id=1".to_string());
        }
    };
    run(
        "adm",
        &adm,
        format!("--register entity=dd-stor1 target={DD_T1} portal=127.0.0.1:3260"),
    );
    run(
        "adm",
        &adm,
        format!("--register entity=dd-stor2 target={DD_T2} portal=127.0.0.2:3260"),
    );
    for (conf, h) in hosts.iter().zip(DD_H) {
        run(h, conf, format!("--register initiator={h}"));
    }
    looks(&mut run, &hosts);
    // Each DD is created empty and given its members by ID: isnsd keeps a phantom membership
    // (in its DD 0 bit) for nodes named in the DDReg that creates a DD, so that those never
    // return to its default DD when they leave the DD; portshift does not copy that bug.
    run("adm", &adm, "--dd-register dd-name=dd1".to_string());
    run("adm", &adm, "--dd-register dd-name=dd2".to_string());
    run(
        "adm",
        &adm,
        format!("--dd-register dd-id=1 member-name={DD_T1} member-name={h1}"),
    );
    run(
        "adm",
        &adm,
        format!("--dd-register dd-id=2 member-name={DD_T2} member-name={h2} member-name={ghost}"),
    );
    looks(&mut run, &hosts);
    run(
        "adm",
        &adm,
        format!("--dd-register dd-id=1 member-name={h2}"),
    );
    run(
        "adm",
        &adm,
        format!("--dd-register dd-id=1 member-name={h3}"),
    );
    looks(&mut run, &hosts);
    run("adm", &adm, format!("--dd-deregister 1 member-name={h1}"));
    run("adm", &adm, format!("--dd-deregister 1 member-name={h3}"));
    looks(&mut run, &hosts);
    run("adm", &adm, "--dd-deregister 2".to_string());
    run("adm", &adm, "--dd-deregister 9".to_string());
    looks(&mut run, &hosts);
    out
}

/// Acceptance (issue 14): the discovery-domain sequence gives the same objects and values
/// from isnsd and from portshift, with the default DD on and off.
#[test]
fn isnsadm_sees_the_same_discovery_domains_as_with_isnsd() {
    for default_dd in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let theirs_addr = free_addr("127.0.0.1");
        let ours_addr = free_addr("127.0.0.1");
        let _isnsd = isnsd_with(dir.path(), theirs_addr, default_dd);
        let _ours = portshift_isns_with(ours_addr, &dir.path().join("ours.redb"), default_dd);
        let theirs = dd_sequence(dir.path(), "theirs", theirs_addr);
        let ours = dd_sequence(dir.path(), "ours", ours_addr);
        assert_eq!(theirs.len(), ours.len());
        for (i, (t, o)) in theirs.iter().zip(&ours).enumerate() {
            assert_eq!(
                t, o,
                "DefaultDiscoveryDomain={default_dd}: step {i}: {} isnsadm {} differs (left isnsd, right portshift)",
                t.0, t.1
            );
        }
        // Sanity: the DDs did restrict what the initiators saw.
        let h2_nodes_in_dd2 = ours
            .iter()
            .filter(|(who, step, _, _)| who == "h2" && step == "--list nodes")
            .nth(1)
            .unwrap();
        assert_eq!(h2_nodes_in_dd2.3.len(), 2, "{h2_nodes_in_dd2:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_survive_sigkill_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("isns.redb");
    let addr = free_addr("127.0.0.1");
    let conf = adm_conf(dir.path(), "adm.conf", addr);
    let server = portshift_isns(addr, &db);
    let mut c = Client::connect(addr).await.unwrap();
    for (i, eid) in ["zz", "aa", "mm"].iter().enumerate() {
        c.register(&Registration {
            entity: eid.to_string(),
            portals: vec![
                format!("127.0.0.{}:3260", 20 + i).parse().unwrap(),
                format!("127.0.0.{}:3260", 10 + i).parse().unwrap(),
            ],
            nodes: vec![NodeRegistration {
                name: format!("iqn.2024-01.test:{eid}"),
                node_type: NodeType::Target,
                alias: None,
            }],
            ..Registration::default()
        })
        .await
        .unwrap();
    }
    c.delete_registration("iqn.2024-01.test:aa", "127.0.0.21:3260".parse().unwrap())
        .await
        .unwrap();
    let lists = ["entities", "nodes", "portals", "portal-groups"];
    let before: Vec<Vec<String>> = lists
        .iter()
        .map(|l| objects(&isnsadm(&conf, &["--list", l]).1, false))
        .collect();
    let eids: Vec<&str> = before[0]
        .iter()
        .filter_map(|b| {
            b.lines()
                .find(|l| l.contains("Entity identifier"))
                .and_then(|l| l.split('"').nth(1))
        })
        .collect();
    assert_eq!(eids, ["zz", "aa", "mm"]);
    let portals_aa = c
        .query_target_portals(H1, "iqn.2024-01.test:aa")
        .await
        .unwrap();
    assert_eq!(
        portals_aa,
        ["127.0.0.11:3260".parse::<SocketAddr>().unwrap()]
    );
    drop(c);
    drop(server); // SIGKILL

    let _server = portshift_isns(addr, &db);
    let after: Vec<Vec<String>> = lists
        .iter()
        .map(|l| objects(&isnsadm(&conf, &["--list", l]).1, false))
        .collect();
    assert_eq!(before, after);
    let mut c = Client::connect(addr).await.unwrap();
    assert_eq!(
        c.query_target_portals(H1, "iqn.2024-01.test:aa")
            .await
            .unwrap(),
        portals_aa
    );
    assert_eq!(
        c.query_target_portals(H1, "iqn.2024-01.test:zz")
            .await
            .unwrap(),
        [
            "127.0.0.20:3260".parse::<SocketAddr>().unwrap(),
            "127.0.0.10:3260".parse().unwrap()
        ]
    );
}

/// Group commit keeps every acknowledged registration: 8 connections register
/// 7 entities each at once; `portshift isns` is SIGKILLed right after the last
/// acknowledgement. After a restart every acknowledged entity is listed, and
/// in an order consistent with the acknowledgements: each entity acknowledged
/// before another was sent comes first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_concurrent_registrations_survive_sigkill() {
    const CONNS: usize = 8;
    const EACH: usize = 7; // 56 entities: within the default 64 per client address
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("isns.redb");
    let addr = free_addr("127.0.0.1");
    let conf = adm_conf(dir.path(), "adm.conf", addr);
    let server = portshift_isns(addr, &db);
    let epoch = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CONNS {
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(addr).await.unwrap();
            let mut acked = Vec::new();
            for i in 0..EACH {
                let eid = format!("burst-{c}-{i}");
                let sent = epoch.elapsed();
                client
                    .register(&Registration {
                        entity: eid.clone(),
                        portals: vec![SocketAddr::from((
                            [127, 0, 2, 1 + (c * EACH + i) as u8],
                            3260,
                        ))],
                        nodes: vec![NodeRegistration {
                            name: format!("iqn.2024-01.test:{eid}"),
                            node_type: NodeType::Target,
                            alias: None,
                        }],
                        ..Registration::default()
                    })
                    .await
                    .unwrap();
                acked.push((eid, sent, epoch.elapsed()));
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    drop(server); // SIGKILL right after the last acknowledgement

    let _server = portshift_isns(addr, &db);
    let listed: Vec<String> = objects(&isnsadm(&conf, &["--list", "entities"]).1, false)
        .iter()
        .filter_map(|b| {
            b.lines()
                .find(|l| l.contains("Entity identifier"))
                .and_then(|l| l.split('"').nth(1))
                .map(str::to_string)
        })
        .collect();
    assert_eq!(listed.len(), CONNS * EACH, "{listed:?}");
    let pos = |eid: &str| {
        listed
            .iter()
            .position(|l| l == eid)
            .unwrap_or_else(|| panic!("{eid} lost"))
    };
    for (a, _, a_acked) in &acked {
        for (b, b_sent, _) in &acked {
            if a_acked < b_sent {
                assert!(pos(a) < pos(b), "{a} was acknowledged before {b} was sent");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tgtd_registers_its_target() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr("127.0.0.1");
    let _server = portshift_isns(addr, &dir.path().join("isns.redb"));
    let portal = free_addr("127.0.0.9");
    let tgtadm = tool("tgtadm", "tgt");
    let adm = |control: &str, args: &[&str]| -> bool {
        Command::new(&tgtadm)
            .args(["-C", control])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    // Start tgtd on a private control port; retry with another one if it dies
    // (e.g. the port's socket is held by another tgtd on this machine).
    let mut started = None;
    for attempt in 0..3u32 {
        // tgtd accepts control ports up to 32767.
        let control = (10_000 + (std::process::id() + attempt * 7919) % 20_000).to_string();
        let log = dir.path().join(format!("tgtd-{attempt}.log"));
        let tgtd = Command::new(tool("tgtd", "tgt"))
            .args(["-f", "-C", &control, "--iscsi", &format!("portal={portal}")])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut tgtd = Proc(tgtd);
        let deadline = Instant::now() + Duration::from_secs(15);
        let ready = loop {
            if adm(&control, &["--op", "show", "--mode", "sys"]) {
                break true;
            }
            if Instant::now() > deadline || tgtd.0.try_wait().unwrap().is_some() {
                break false;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        if ready {
            started = Some((tgtd, control));
            break;
        }
        eprintln!(
            "tgtd attempt {attempt} failed: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    let (_tgtd, control) = started.expect("tgtd did not start (see logs above)");
    let adm = |args: &[&str]| adm(&control, args);
    let port = addr.port().to_string();
    for (name, value) in [
        ("iSNSServerIP", "127.0.0.1"),
        ("iSNSServerPort", port.as_str()),
        ("iSNSAccessControl", "Off"),
        ("iSNS", "On"),
    ] {
        assert!(
            adm(&[
                "--op", "update", "--mode", "sys", "--name", name, "--value", value
            ]),
            "tgtadm {name}"
        );
    }
    let target = "iqn.2024-01.test:tgtd-disk";
    assert!(adm(&[
        "--lld", "iscsi", "--op", "new", "--mode", "target", "--tid", "1", "-T", target
    ]));

    let mut c = Client::connect(addr).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let portals = loop {
        let p = c.query_target_portals(H1, target).await.unwrap();
        if !p.is_empty() || Instant::now() > deadline {
            break p;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        portals,
        [portal],
        "tgtd's target and portal in our registry"
    );
    let conf = adm_conf(dir.path(), "adm.conf", addr);
    let nodes = isnsadm(&conf, &["--list", "nodes"]).1;
    assert!(
        nodes.contains(target) && nodes.contains("Target"),
        "{nodes}"
    );
    // tgtd ignores SIGTERM while it has targets: the Proc guard sends SIGKILL.
}
