//! Each block a READ returns is what the LUN held at one moment, even while WRITEs to the same
//! blocks run through another portal (another processor) at the same time.
//!
//! portshift's target lends READs the page cache of a file LUN and the portal's `writev`
//! copies it into the socket; a concurrent `pwrite` of the same page is not excluded by the
//! kernel, so without the range locks (scsi::range_lock) a block could come back half old,
//! half new. Here one session on portal 0 reads a 32 KiB range over and over while a session
//! on portal 1 keeps rewriting overlapping ranges, each WRITE with one byte value throughout:
//! every 512-byte block read must hold one value only. Three ways a READ's data leave the
//! target: lent views (the default), copies read with `pread` (a data digest is on), and views
//! copied at completion because the initiator's MaxRecvDataSegmentLength would cut a block
//! between two PDUs; and 1 MiB READs, whose `writev`s stop part-way in the socket. Bounded in
//! time and count; loopback.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use initiator::{Session, SessionConfig, cdb};
use iscsi_proto::Prefs;
use iscsi_proto::params::DigestAlg;
use iscsi_target::{LunConfig, Target, TargetConfig};

const IQN: &str = "iqn.2024-01.test.atomic:t";
const INITIATOR: &str = "iqn.2024-01.test.atomic:host";
/// The range both sides work on: blocks [0, SPAN).
const SPAN: u64 = 192;
/// Blocks per WRITE, and per READ unless a case says otherwise.
const BLOCKS: u32 = 64;
/// Commands in flight per session.
const DEPTH: usize = 8;
/// How long the two sides run at most (each reader also stops after its `max_reads`).
const RUN: Duration = Duration::from_secs(4);

async fn session(portal: SocketAddr, name: &str, prefs: &Prefs) -> Session {
    let mut cfg = SessionConfig::new(name, IQN);
    cfg.login.prefs = prefs.clone();
    cfg.queue_depth = DEPTH;
    let s = Session::login(portal, &cfg).await.expect("login");
    // A fresh nexus may see a UNIT ATTENTION once.
    if s.client.test_unit_ready(0).await.is_err() {
        s.client.test_unit_ready(0).await.expect("TEST UNIT READY");
    }
    s
}

#[test]
fn lent_reads_never_return_a_block_half_written() {
    run(Prefs::initiator_default(), BLOCKS, 40_000);
}

#[test]
fn copied_reads_with_a_data_digest_never_return_a_block_half_written() {
    let mut prefs = Prefs::initiator_default();
    prefs.data_digest = vec![DigestAlg::Crc32c];
    run(prefs, BLOCKS, 40_000);
}

#[test]
fn reads_cut_off_block_boundaries_never_return_a_block_half_written() {
    let mut prefs = Prefs::initiator_default();
    // 1000 bytes per Data-In PDU: blocks straddle PDUs, so the target copies these READs.
    prefs.max_recv_data_segment_length = 1000;
    run(prefs, BLOCKS, 40_000);
}

#[test]
fn large_lent_reads_never_return_a_block_half_written() {
    // 1 MiB READs over 2048 blocks, of which the writers rewrite the first 192 blocks.
    run(Prefs::initiator_default(), 2048, 4_000);
}

/// Reads of `read_blocks` blocks (`max_reads` at most) beside the writers, with `prefs` on
/// the reader's session.
fn run(prefs: Prefs, read_blocks: u32, max_reads: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = Target::start(TargetConfig {
        portals: vec![
            "127.0.0.2:0".parse().unwrap(),
            "127.0.0.3:0".parse().unwrap(),
        ],
        luns: vec![LunConfig {
            iqn: IQN.to_string(),
            path: dir.path().join("lun.img"),
            size: Some(8 << 20),
            ..Default::default()
        }],
        ..Default::default()
    })
    .expect("portshift target");
    let portals = target.portals().to_vec();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (reads, torn, values) = rt.block_on(async {
        let reader = session(portals[0], INITIATOR, &prefs).await;
        let writer = session(
            portals[1],
            &format!("{INITIATOR}-w"),
            &Prefs::initiator_default(),
        )
        .await;
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();

        let mut writers = tokio::task::JoinSet::new();
        for w in 0..DEPTH as u64 {
            let (h, stop) = (writer.client.clone(), stop.clone());
            writers.spawn(async move {
                let mut n = w;
                while !stop.load(Ordering::Relaxed) && started.elapsed() < RUN {
                    // Byte values 1..=255, never 0 (the fresh LUN's).
                    let byte = (n % 255 + 1) as u8;
                    let lba = (n * 37) % (SPAN - u64::from(BLOCKS) + 1);
                    let data = Bytes::from(vec![byte; BLOCKS as usize * 512]);
                    h.execute(cdb::write16(0, lba, 512, data))
                        .await
                        .expect("WRITE(16)");
                    n += DEPTH as u64;
                }
            });
        }

        let mut readers = tokio::task::JoinSet::new();
        for r in 0..DEPTH as u64 {
            let h = reader.client.clone();
            let max_reads = max_reads / DEPTH;
            readers.spawn(async move {
                let (mut reads, mut torn, mut seen) = (0usize, Vec::new(), [false; 256]);
                let mut n = r;
                while started.elapsed() < RUN && reads < max_reads {
                    let lba = (n * 53) % (SPAN.saturating_sub(u64::from(read_blocks)) + 1);
                    let got = h
                        .execute(cdb::read16(0, lba, read_blocks, 512))
                        .await
                        .expect("READ(16)");
                    assert_eq!(got.data.len(), read_blocks as usize * 512);
                    for (i, block) in got.data.chunks(512).enumerate() {
                        seen[usize::from(block[0])] = true;
                        if block.iter().any(|&b| b != block[0]) {
                            torn.push((lba + i as u64, block[0], block[511]));
                        }
                    }
                    reads += 1;
                    n += DEPTH as u64;
                }
                (reads, torn, seen)
            });
        }
        let (mut reads, mut torn, mut seen) = (0, Vec::new(), [false; 256]);
        while let Some(r) = readers.join_next().await {
            let (n, t, s) = r.expect("reader");
            reads += n;
            torn.extend(t);
            seen.iter_mut().zip(s).for_each(|(a, b)| *a |= b);
        }
        stop.store(true, Ordering::Relaxed);
        while let Some(w) = writers.join_next().await {
            w.expect("writer");
        }
        let values = seen.iter().filter(|s| **s).count();
        (reads, torn, values)
    });
    drop(target);
    println!(
        "{reads} READs of {read_blocks} blocks, {values} distinct block values seen, {} torn \
         blocks",
        torn.len()
    );
    assert!(
        torn.is_empty(),
        "blocks mixing two writes (lba, first byte, last byte): {:?}",
        &torn[..torn.len().min(10)]
    );
    // The READs ran beside the WRITEs (else the check above proves nothing).
    assert!(reads >= 100, "only {reads} READs");
    assert!(values >= 20, "the READs saw only {values} block values");
}
