//! The whole loop with portshift's own target: an in-process iSNS server, a target
//! with two portals and `sessions:2` balancing, three BalancedInitiators (one per
//! target) that find the target through iSNS. The balancer deletes the (target,
//! first portal) registration and sends "logout requested"; the moved initiator
//! must re-query iSNS, continue on the second portal, and see no I/O error or mismatch.
//! Also: voluntary reconnects (`reconnect_every`) keep the verified data and are not moves.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use initiator::discovery::isns_portals;
use initiator::{
    BalancedConfig, BalancedInitiator, InitiatorEvent, PortalSource, ReconnectCause, WorkloadConfig,
};
use iscsi_target::{LunConfig, Target, TargetConfig};

const TARGETS: [&str; 3] = [
    "iqn.2024-01.test.h5:t1",
    "iqn.2024-01.test.h5:t2",
    "iqn.2024-01.test.h5:t3",
];

#[test]
fn moved_by_the_balancer_without_io_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = common::rt();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let isns_addr: SocketAddr = rt.block_on(async {
        let cfg =
            isns::ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().join("isns.redb"));
        let server = isns::Server::bind(cfg).await.expect("iSNS server");
        let addr = server.local_addr().expect("iSNS addr");
        tokio::spawn(server.run(async {
            let _ = stop_rx.await;
        }));
        addr
    });
    let target = Target::start(TargetConfig {
        portals: vec![
            "127.0.0.2:0".parse().unwrap(),
            "127.0.0.3:0".parse().unwrap(),
        ],
        luns: TARGETS
            .iter()
            .enumerate()
            .map(|(i, t)| LunConfig {
                iqn: t.to_string(),
                path: dir.path().join(format!("lun{i}.img")),
                size: Some(8 << 20),
                ..Default::default()
            })
            .collect(),
        isns: vec![isns_addr],
        balance: vec!["sessions:2".parse().expect("spec")],
        cooldown_ms: 1000,
        pin: Vec::new(),
        max_moves: balancer::DEFAULT_MAX_MOVES,
        smoothing_ms: balancer::SMOOTHING_TAU_MS,
        admin: None,
        limits: Default::default(),
        ..Default::default()
    })
    .expect("portshift target");
    let first = target.portals()[0];
    let second = target.portals()[1];
    let outcome = rt.block_on(async {
        // Wait until the target's registrations are visible in iSNS.
        let deadline = Instant::now() + Duration::from_secs(10);
        for t in TARGETS {
            loop {
                let p = isns_portals(
                    isns_addr,
                    "iqn.2024-01.test.h5:probe",
                    t,
                    Duration::from_secs(2),
                )
                .await
                .unwrap_or_default();
                if p.first() == Some(&first) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "target {t} never registered in iSNS: {p:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let mut runs = tokio::task::JoinSet::new();
        for (i, t) in TARGETS.iter().enumerate() {
            let name = format!("iqn.2024-01.test.h5:host{i}");
            let cfg = BalancedConfig::new(&name, Some(t), PortalSource::Isns(isns_addr));
            let (init, events) = BalancedInitiator::connect(cfg).await.expect("connect");
            assert_eq!(
                init.portal(),
                Some(first),
                "iSNS lists the first portal first"
            );
            let mut wc = WorkloadConfig::new(&name);
            wc.block_size = None;
            wc.lun = 0; // portshift target numbers LUNs from 0
            wc.queue_depth = 4;
            wc.duration = Duration::from_secs(6);
            wc.seed = i as u64 + 1;
            runs.spawn(async move { common::run_to_end(init, events, &wc).await });
        }
        let mut out = Vec::new();
        while let Some(j) = runs.join_next().await {
            out.push(j.expect("join"));
        }
        out
    });
    target.shutdown();
    let _ = stop_tx.send(());
    let mut moved = 0;
    for (r, seen) in &outcome {
        assert!(r.ok(), "I/O errors or mismatches: {r:?}\nevents: {seen:?}");
        assert!(r.ios > 100, "{r:?}");
        for m in &r.moves {
            eprintln!(
                "{}: moved {} -> {} pause {} ms",
                r.target, m.from, m.to, m.pause_ms
            );
            moved += 1;
            assert_eq!((m.from, m.to), (first, second), "{seen:?}");
            let pos = |f: &dyn Fn(&InitiatorEvent) -> bool| seen.iter().position(f);
            let asked = pos(&|e| matches!(e, InitiatorEvent::LogoutRequested { .. }));
            let queried = pos(&|e| matches!(e, InitiatorEvent::IsnsQueried { .. }));
            let mv = pos(&|e| matches!(e, InitiatorEvent::Moved { .. }));
            assert!(
                asked < queried && queried < mv && asked.is_some(),
                "{seen:?}"
            );
        }
    }
    assert!(moved >= 1, "the balancer moved nobody: {outcome:?}");
}

/// `reconnect_every`: the host leaves on its own (drain, Logout, log in again) while the
/// verifying workload runs; every reconnect is reported as voluntary, none as a move, and data
/// written in one session is verified in the next ones (a small region, so reads hit it).
#[test]
fn voluntary_reconnects_keep_the_data_verified() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = common::rt();
    let name = "iqn.2024-01.test.h7:t-voluntary";
    let target = Target::start(TargetConfig {
        portals: vec!["127.0.0.2:0".parse().unwrap()],
        luns: vec![LunConfig {
            iqn: name.to_string(),
            path: dir.path().join("lun.img"),
            size: Some(4 << 20),
            ..Default::default()
        }],
        isns: Vec::new(),
        balance: Vec::new(),
        cooldown_ms: 1000,
        pin: Vec::new(),
        max_moves: balancer::DEFAULT_MAX_MOVES,
        smoothing_ms: balancer::SMOOTHING_TAU_MS,
        admin: None,
        limits: Default::default(),
        ..Default::default()
    })
    .expect("portshift target");
    let portal = target.portals()[0];
    let (r, seen) = rt.block_on(async {
        let host = "iqn.2024-01.test.h7:voluntary-host";
        let src = PortalSource::Fixed {
            portal,
            send_targets: false,
        };
        let mut cfg = BalancedConfig::new(host, Some(name), src);
        cfg.reconnect_every = Some(Duration::from_millis(300));
        let (init, events) = BalancedInitiator::connect(cfg).await.expect("connect");
        let mut wc = WorkloadConfig::new(host);
        wc.queue_depth = 4;
        wc.region_blocks = Some(64);
        wc.duration = Duration::from_secs(3);
        common::run_to_end(init, events, &wc).await
    });
    target.shutdown();
    assert!(r.ok(), "{r:?}");
    assert!(r.moves.is_empty(), "nobody asked for a move: {r:?}");
    assert!(r.reconnects.len() >= 5, "{r:?}");
    for c in &r.reconnects {
        assert_eq!(c.cause, ReconnectCause::Voluntary, "{r:?}");
        assert_eq!((c.from, c.to), (portal, portal));
        assert!(
            c.at_ms >= r.started_at_ms && c.at_ms <= r.ended_at_ms,
            "{c:?}"
        );
    }
    // Reads of chunks written before the last reconnect were checked after it.
    assert!(r.verified_reads > 100, "{r:?}");
    let leaving = seen
        .iter()
        .filter(|e| matches!(e, InitiatorEvent::Leaving { .. }))
        .count();
    let logged_out = seen
        .iter()
        .filter(|e| matches!(e, InitiatorEvent::LoggedOut { .. }))
        .count();
    // Every voluntary leave ends in a Logout Response (plus the final shutdown's).
    assert!(leaving >= r.reconnects.len(), "{seen:?}");
    assert!(logged_out > r.reconnects.len(), "{seen:?}");
}

/// 1 MiB writes and reads, verified, through portshift's target: past the 256 KiB sent with
/// each command, the Data-Out payloads (256 KiB segments answering an R2T) are read from the
/// socket straight into the write's buffer (`Connection::data_out_sink`), and what is read
/// back is what was written.
#[test]
fn one_mebibyte_writes_received_in_place_read_back_verified() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = common::rt();
    let name = "iqn.2024-01.test.h8:t-in-place";
    let target = Target::start(TargetConfig {
        portals: vec!["127.0.0.2:0".parse().unwrap()],
        luns: vec![LunConfig {
            iqn: name.to_string(),
            path: dir.path().join("lun.img"),
            size: Some(16 << 20),
            ..Default::default()
        }],
        ..Default::default()
    })
    .expect("portshift target");
    let portal = target.portals()[0];
    let (r, _) = rt.block_on(async {
        let host = "iqn.2024-01.test.h8:in-place-host";
        let src = PortalSource::Fixed {
            portal,
            send_targets: false,
        };
        let cfg = BalancedConfig::new(host, Some(name), src);
        let (init, events) = BalancedInitiator::connect(cfg).await.expect("connect");
        let mut wc = WorkloadConfig::new(host);
        wc.queue_depth = 4;
        wc.blocks_per_io = 2048;
        wc.read_percent = 50;
        wc.region_blocks = Some(8 * 2048);
        wc.max_ios = Some(300);
        wc.duration = Duration::from_secs(30);
        common::run_to_end(init, events, &wc).await
    });
    let id = target.control().portals()[0].id;
    let in_place = target
        .control()
        .portal_stats(id)
        .expect("portal stats")
        .bytes_received_in_place
        .load(std::sync::atomic::Ordering::Relaxed);
    target.shutdown();
    assert!(r.ok(), "{r:?}");
    assert!(r.writes >= 50 && r.verified_reads >= 20, "{r:?}");
    assert!(
        in_place >= r.writes * (512 << 10),
        "{in_place} bytes received in place for {} writes of 1 MiB",
        r.writes
    );
}
