//! BalancedInitiator + verifying workload against Debian's tgtd: discovery via
//! SendTargets, verified I/O, and recovery when tgtd closes the connection.

mod common;

use common::rt;

use std::time::Duration;

use initiator::{
    BalancedConfig, BalancedInitiator, InitiatorEvent, PortalSource, WorkloadConfig, run_workload,
};

const IQN: &str = "iqn.2024-01.test.portshift:balanced";
const INITIATOR: &str = "iqn.2024-01.test.portshift:bal-init";

/// Logs in to tgtd's portal: through SendTargets without a target name, directly with one.
async fn connect(
    t: &common::Tgtd,
    target: Option<&str>,
) -> (
    BalancedInitiator,
    tokio::sync::mpsc::UnboundedReceiver<InitiatorEvent>,
) {
    let src = PortalSource::Fixed {
        portal: t.portal,
        send_targets: target.is_none(),
    };
    BalancedInitiator::connect(BalancedConfig::new(INITIATOR, target, src))
        .await
        .expect("connect")
}

/// A verifying workload on tgtd's first data LUN (LUN 1; LUN 0 is its controller).
fn workload(queue_depth: usize, duration: Duration) -> WorkloadConfig {
    let mut cfg = WorkloadConfig::new(INITIATOR);
    cfg.lun = 1;
    cfg.queue_depth = queue_depth;
    cfg.duration = duration;
    cfg
}

#[test]
fn verified_workload_via_send_targets() {
    let t = common::Tgtd::start(IQN, 4 << 20);
    rt().block_on(async {
        let (init, mut events) = connect(&t, None).await;
        assert_eq!(init.target(), IQN);
        assert_eq!(
            events.recv().await,
            Some(InitiatorEvent::Discovered {
                portals: vec![t.portal]
            })
        );
        let mut cfg = workload(8, Duration::from_secs(20));
        cfg.blocks_per_io = 2;
        cfg.max_ios = Some(3000);
        let r = run_workload(&init, &cfg).await.expect("workload");
        assert!(r.ok(), "{r:?}");
        assert_eq!(r.ios, 3000);
        assert!(r.verified_reads > 100, "{r:?}");
        assert!(r.writes > 100 && r.reads > 100);
        assert!(r.latency.p50_us > 0);
        init.shutdown(Duration::from_secs(5)).await;
    });
}

#[test]
fn a_rate_paces_the_workload() {
    let t = common::Tgtd::start(IQN, 4 << 20);
    rt().block_on(async {
        let (init, _events) = connect(&t, None).await;
        let mut cfg = workload(8, Duration::from_millis(1500));
        cfg.rate_iops = Some(200.0);
        let r = run_workload(&init, &cfg).await.expect("workload");
        assert!(r.ok(), "{r:?}");
        // Unpaced, QD 8 against tgtd on loopback does thousands of I/Os a second; paced at
        // 200/s over 1.5 s it issues I/O number n at n / 200 s: 300 of them, the first at 0.
        assert!((295..=301).contains(&r.ios), "{} I/Os: {r:?}", r.ios);
        assert!(r.elapsed_ms >= 1_490, "{r:?}");
        init.shutdown(Duration::from_secs(5)).await;
    });
}

#[test]
fn connection_closed_by_target_is_recovered_without_errors() {
    let t = common::Tgtd::start(IQN, 4 << 20);
    rt().block_on(async {
        let (init, mut events) = connect(&t, Some(IQN)).await;
        let cfg = workload(4, Duration::from_secs(3));
        let work = {
            let init = init.clone();
            tokio::spawn(async move { run_workload(&init, &cfg).await })
        };
        tokio::time::sleep(Duration::from_millis(800)).await;
        let adm = |args: &[&str]| t.adm(args);
        // tgtd's connection delete closes our TCP connection under load.
        let closed = tokio::task::block_in_place(|| {
            adm(&[
                "--op", "delete", "--mode", "conn", "--tid", "1", "--sid", "1", "--cid", "0",
            ])
        });
        let r = work.await.expect("join").expect("workload");
        assert!(r.ok(), "{r:?}");
        assert!(r.ios > 50, "{r:?}");
        let mut seen = Vec::new();
        while let Ok(e) = events.try_recv() {
            seen.push(e);
        }
        assert!(closed, "tgtadm could not delete the connection");
        assert!(
            seen.iter()
                .any(|e| matches!(e, InitiatorEvent::ConnectionLost { .. })),
            "{seen:?}"
        );
        assert!(
            seen.iter()
                .any(|e| matches!(e, InitiatorEvent::Reconnected { .. })),
            "{seen:?}"
        );
        assert!(
            r.moves.is_empty() && !r.reconnects.is_empty(),
            "a connection loss is a reconnect, not a move: {r:?}"
        );
        init.shutdown(Duration::from_secs(5)).await;
    });
}
