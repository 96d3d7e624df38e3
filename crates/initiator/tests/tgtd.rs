//! The initiator against Debian's tgtd, a real independent target, on loopback.

mod common;

use common::rt;

use std::time::Duration;

use bytes::Bytes;
use initiator::cdb;
use initiator::discovery::send_targets;
use initiator::{Session, SessionConfig, TaskError};

const IQN: &str = "iqn.2024-01.test.portshift:tgtd";
const INITIATOR: &str = "iqn.2024-01.test.portshift:initiator";

#[test]
fn send_targets_lists_the_target() {
    let t = common::Tgtd::start(IQN, 8 << 20);
    let found = rt()
        .block_on(send_targets(t.portal, INITIATOR, Duration::from_secs(5)))
        .expect("SendTargets");
    let me = found.iter().find(|d| d.name == IQN).expect("target listed");
    assert!(me.portals.contains(&t.portal), "{found:?}");
}

#[test]
fn login_inquiry_capacity_write_read_verify_logout() {
    let t = common::Tgtd::start(IQN, 8 << 20);
    rt().block_on(async {
        let mut cfg = SessionConfig::new(INITIATOR, IQN);
        cfg.queue_depth = 16;
        let s = Session::login(t.portal, &cfg).await.expect("login");
        assert_eq!(s.info.portal, t.portal);
        assert_eq!(s.info.redirected_from, None);
        let h = s.client.clone();
        let luns = h.report_luns().await.expect("REPORT LUNS");
        assert!(luns.contains(&1), "{luns:?}");
        // Fresh sessions may see a UNIT ATTENTION once.
        if let Err(e) = h.test_unit_ready(1).await {
            assert!(e.is_retryable(), "{e}");
            h.test_unit_ready(1).await.expect("TEST UNIT READY");
        }
        let inq = h.inquiry(1).await.expect("INQUIRY");
        assert_eq!(inq.device_type, 0);
        let cap = h.read_capacity(1).await.expect("READ CAPACITY");
        assert_eq!(cap.blocks * cap.block_size as u64, 8 << 20);
        let bs = cap.block_size;
        // Writes bigger than FirstBurstLength/MaxRecvDataSegmentLength exercise R2T.
        let sizes = [1u32, 8, 129, 512];
        let mut lba = 0u64;
        let mut expect = Vec::new();
        for (i, blocks) in sizes.iter().enumerate() {
            let data: Vec<u8> = (0..blocks * bs)
                .map(|j| (j as u8) ^ (i as u8 * 37))
                .collect();
            let w = cdb::write16(1, lba, bs, Bytes::from(data.clone()));
            h.execute(w).await.expect("WRITE(16)");
            expect.push((lba, *blocks, data));
            lba += *blocks as u64;
        }
        // Read back concurrently.
        let mut set = tokio::task::JoinSet::new();
        for (lba, blocks, data) in expect {
            let h = h.clone();
            set.spawn(async move {
                let r = h
                    .execute(cdb::read16(1, lba, blocks, bs))
                    .await
                    .expect("READ(16)");
                assert_eq!(r.data.len(), data.len());
                assert!(r.data == data, "data mismatch at lba {lba}");
            });
        }
        while let Some(r) = set.join_next().await {
            r.expect("reader task");
        }
        // Reading past the end gives CHECK CONDITION / ILLEGAL REQUEST (key 5).
        match h.execute(cdb::read16(1, cap.blocks, 1, bs)).await {
            Err(TaskError::CheckCondition(s)) => {
                assert_eq!(s.key, scsi::SenseKey::IllegalRequest, "{s:?}")
            }
            other => panic!("expected CHECK CONDITION, got {other:?}"),
        }
        s.logout(Duration::from_secs(5)).await.expect("logout");
        assert!(h.is_closed() || h.execute(cdb::test_unit_ready(1)).await.is_err());
    });
}

#[test]
fn unknown_target_fails_login_cleanly() {
    let t = common::Tgtd::start(IQN, 1 << 20);
    let cfg = SessionConfig::new(INITIATOR, "iqn.2024-01.test.portshift:nope");
    let e = rt()
        .block_on(Session::login(t.portal, &cfg))
        .expect_err("login to an unknown target must fail");
    assert!(
        matches!(e, initiator::Error::LoginFailed { class: 2, .. }),
        "{e}"
    );
}

#[test]
fn login_follows_a_tgtd_redirect() {
    // Two tgtd instances with the same target name; the first redirects (RFC 7143
    // §11.13.5 status 0x0101) to the second.
    let real = common::Tgtd::start(IQN, 1 << 20);
    let front = common::Tgtd::start(IQN, 1 << 20);
    let port = real.portal.port().to_string();
    for (k, v) in [
        ("RedirectAddress", "127.0.0.9"),
        ("RedirectPort", port.as_str()),
        ("RedirectReason", "Temporary"),
    ] {
        assert!(
            front.adm(&[
                "--op", "update", "--mode", "target", "--tid", "1", "-n", k, "-v", v
            ]),
            "tgtadm could not set {k}"
        );
    }
    rt().block_on(async {
        let s = Session::login(front.portal, &SessionConfig::new(INITIATOR, IQN))
            .await
            .expect("login through the redirect");
        assert_eq!(s.info.portal, real.portal);
        assert_eq!(s.info.redirected_from, Some(front.portal));
        s.client.test_unit_ready(1).await.ok();
        s.client
            .read_capacity(1)
            .await
            .expect("READ CAPACITY on the real target");
        s.logout(Duration::from_secs(5)).await.expect("logout");
    });
}
