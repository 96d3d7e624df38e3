//! A bounded, verifying I/O loop over a [`BalancedInitiator`].
//!
//! With `verify`, every written block carries its LBA, a generation number, a
//! hash of the initiator name, a filler derived from them and a CRC32C of the
//! rest; every read is checked against the generation last written there. The
//! LUN is cut into I/O-sized chunks and no two I/Os are in flight on the same
//! chunk, so the expected generation is always known.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use tokio::task::JoinSet;

use crate::balanced::{BalancedInitiator, MoveRecord, ReconnectRecord, unix_ms};
use crate::cdb;
use crate::error::{Error, TaskError};

/// Bound on chunks tracked (memory: 8 bytes each).
pub const MAX_CHUNKS: u64 = 1 << 22;
/// Bound on error descriptions kept in a report.
const MAX_ERROR_SAMPLES: usize = 16;
/// Bytes of block header: LBA, generation, name hash.
const HEADER: usize = 20;
/// Generation meaning "content unknown" (after a failed write).
const UNKNOWN: u64 = u64::MAX;

/// What to run.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// LUN.
    pub lun: u16,
    /// Concurrent I/Os.
    pub queue_depth: usize,
    /// Expected logical block size; `None` takes READ CAPACITY's.
    pub block_size: Option<u32>,
    /// Blocks per I/O.
    pub blocks_per_io: u32,
    /// Percentage of reads (0-100).
    pub read_percent: u8,
    /// Stop issuing after this long.
    pub duration: Duration,
    /// Stop issuing after this many I/Os.
    pub max_ios: Option<u64>,
    /// Issue at most this many I/Os per second, evenly paced (the n-th no earlier than
    /// n / rate seconds after the start); `None` issues as fast as the queue depth allows.
    pub rate_iops: Option<f64>,
    /// Write checksummed patterns and check reads.
    pub verify: bool,
    /// Name hashed into each block (the initiator name).
    pub initiator_name: String,
    /// Limit the I/O region to the first N blocks.
    pub region_blocks: Option<u64>,
    /// RNG seed.
    pub seed: u64,
    /// Bound on one I/O including re-issues.
    pub io_timeout: Duration,
    /// Stop issuing once this is set (e.g. on SIGINT); I/Os in flight still complete.
    pub stop: Option<Arc<AtomicBool>>,
    /// Live counters for a progress display, updated as each I/O completes.
    pub progress: Option<Arc<Progress>>,
}

/// What has completed so far, for a display that samples it while the workload runs.
#[derive(Debug, Default)]
pub struct Progress {
    /// I/Os completed (with or without error).
    pub ios: AtomicU64,
    /// Bytes read and written by successful I/Os.
    pub bytes: AtomicU64,
    /// I/Os that failed, and reads that did not verify.
    pub errors: AtomicU64,
}

impl Progress {
    fn add(&self, bytes: u64, failed: bool) {
        self.ios.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl WorkloadConfig {
    /// Defaults: LUN 0 (portshift's target; tgtd's first LUN is 1), QD 8, 1 block per I/O,
    /// 50 % reads, 10 s, verify on.
    pub fn new(initiator_name: &str) -> Self {
        WorkloadConfig {
            lun: 0,
            queue_depth: 8,
            block_size: None,
            blocks_per_io: 1,
            read_percent: 50,
            duration: Duration::from_secs(10),
            max_ios: None,
            rate_iops: None,
            verify: true,
            initiator_name: initiator_name.to_string(),
            region_blocks: None,
            seed: 1,
            io_timeout: Duration::from_secs(90),
            stop: None,
            progress: None,
        }
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Latency {
    /// Mean.
    pub mean_us: f64,
    /// 50th percentile.
    pub p50_us: u64,
    /// 90th.
    pub p90_us: u64,
    /// 99th.
    pub p99_us: u64,
    /// 99.9th.
    pub p999_us: u64,
    /// Maximum.
    pub max_us: u64,
}

/// The result of a workload run.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WorkloadReport {
    /// Target name.
    pub target: String,
    /// Completed I/Os (success or failure).
    pub ios: u64,
    /// Successful reads.
    pub reads: u64,
    /// Successful writes.
    pub writes: u64,
    /// Failed I/Os.
    pub errors: u64,
    /// Reads whose data did not match what was last written.
    pub mismatches: u64,
    /// Reads checked against a known generation.
    pub verified_reads: u64,
    /// Bytes transferred.
    pub bytes: u64,
    /// Moves the target asked for (logout requested), with their pauses.
    pub moves: Vec<MoveRecord>,
    /// Reconnects it did not ask for (voluntary, connection loss), with their pauses.
    pub reconnects: Vec<ReconnectRecord>,
    /// When the I/O phase started, milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    /// When the last I/O completed, milliseconds since the Unix epoch.
    pub ended_at_ms: u64,
    /// Wall-clock time of the I/O phase in milliseconds.
    pub elapsed_ms: u64,
    /// I/Os per second.
    pub iops: f64,
    /// Latency of successful I/Os (including any pause for a move).
    pub latency: Latency,
    /// Logical block size used.
    pub block_size: u32,
    /// Blocks in the region exercised.
    pub region_blocks: u64,
    /// The first few error descriptions.
    pub error_samples: Vec<String>,
}

impl WorkloadReport {
    /// True when there were no errors and no mismatches.
    pub fn ok(&self) -> bool {
        self.errors == 0 && self.mismatches == 0
    }
}

/// FNV-1a hash of the initiator name (stored in every block).
pub fn name_hash(name: &str) -> u32 {
    name.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ b as u32).wrapping_mul(0x0100_0193)
    })
}

/// The pattern of one block: LBA, generation, name hash, filler, CRC32C (last 4 bytes).
///
/// The filler is one 64-bit word per 8 bytes, each the previous plus an odd constant, from a
/// start that mixes the block's identity: cheap to produce (a `portshift io` writing 1 MiB
/// per I/O spent most of its time here when it made the filler a byte at a time), and what a
/// check relies on is the CRC32C over the whole block and the header, not the filler.
pub fn fill_block(out: &mut BytesMut, block_size: usize, lba: u64, generation: u64, hash: u32) {
    let start = out.len();
    out.put_u64(lba);
    out.put_u64(generation);
    out.put_u32(hash);
    let filler = block_size.saturating_sub(4).saturating_sub(HEADER);
    let at = out.len();
    out.resize(at + filler, 0);
    let mut x = (lba ^ generation.rotate_left(32) ^ hash as u64 ^ 0x9e37_79b9_7f4a_7c15)
        .wrapping_mul(0xbf58_476d_1ce4_e5b9);
    if let Some(body) = out.get_mut(at..) {
        for word in body.chunks_mut(8) {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let bytes = x.to_le_bytes();
            word.copy_from_slice(bytes.get(..word.len()).unwrap_or(&bytes));
        }
    }
    let crc = crc32c::crc32c(out.get(start..).unwrap_or(&[]));
    out.put_u32(crc);
}

/// `N` bytes of `b` at `at` (zeros when `b` is shorter), without allocating.
fn field<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    b.get(at..at + N)
        .and_then(|s| s.try_into().ok())
        .unwrap_or([0; N])
}

/// Check one block against (lba, generation, hash); `Err` describes the first difference.
pub fn check_block(block: &[u8], lba: u64, generation: u64, hash: u32) -> Result<(), String> {
    let n = block.len();
    if n < HEADER + 4 {
        return Err(format!("block {lba}: {n} bytes is too short"));
    }
    let (body, tail) = block.split_at(n - 4);
    let stored = u32::from_be_bytes(tail.try_into().map_err(|_| "tail")?);
    if crc32c::crc32c(body) != stored {
        return Err(format!(
            "block {lba}: CRC32C mismatch (torn or foreign data)"
        ));
    }
    let got_lba = u64::from_be_bytes(field(body, 0));
    let got_gen = u64::from_be_bytes(field(body, 8));
    let got_hash = u32::from_be_bytes(field(body, 16));
    if (got_lba, got_gen, got_hash) != (lba, generation, hash) {
        return Err(format!(
            "block {lba}: holds lba {got_lba} generation {got_gen} hash {got_hash:#x}, expected generation {generation} hash {hash:#x}"
        ));
    }
    Ok(())
}

enum Kind {
    Read,
    Write(u64),
}

/// What every worker needs to pick, issue and check its I/Os.
struct Plan {
    cfg: WorkloadConfig,
    bs: u32,
    per_io: u32,
    chunks: u64,
    hash: u32,
    start: tokio::time::Instant,
}

/// The state the workers share (one lock, taken twice per I/O and never across an await).
struct Shared {
    expected: Vec<u64>,
    /// One bit per chunk: set while an I/O on it is in flight.
    in_flight: Vec<u64>,
    rng: rand::rngs::StdRng,
    hist: Histogram<u64>,
    report: WorkloadReport,
    issued: u64,
}

/// The next I/O a worker may issue, or why it may not.
enum Next {
    Io {
        chunk: u64,
        kind: Kind,
        req: cdb::ScsiRequest,
    },
    /// Not before this instant (--rate-iops).
    NotBefore(tokio::time::Instant),
    /// Every free chunk drawn was in flight; try again after the others ran.
    Busy,
    Stop,
}

impl Plan {
    fn stopped(&self) -> bool {
        self.cfg
            .stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::Relaxed))
    }

    fn next(&self, s: &mut Shared, now: tokio::time::Instant) -> Next {
        let cfg = &self.cfg;
        if now.duration_since(self.start) >= cfg.duration
            || self.stopped()
            || cfg.max_ios.is_some_and(|m| s.issued >= m)
        {
            return Next::Stop;
        }
        if let Some(rate) = cfg.rate_iops.filter(|r| *r > 0.0) {
            let at = self.start + Duration::from_secs_f64(s.issued as f64 / rate);
            if now < at {
                return Next::NotBefore(at);
            }
        }
        let mut chunk = s.rng.random_range(0..self.chunks);
        let mut tries = 0;
        while busy(&s.in_flight, chunk) && tries < 64 {
            chunk = s.rng.random_range(0..self.chunks);
            tries += 1;
        }
        if busy(&s.in_flight, chunk) {
            return Next::Busy;
        }
        let (bs, per_io) = (self.bs, self.per_io);
        let lba = chunk * per_io as u64;
        let read = s.rng.random_range(0..100u8) < cfg.read_percent;
        let (req, kind) = if read {
            (cdb::read16(cfg.lun, lba, per_io, bs), Kind::Read)
        } else {
            let prev = s.expected.get(chunk as usize).copied().unwrap_or(0);
            let generation = if prev == UNKNOWN { 1 } else { prev + 1 };
            let mut buf = BytesMut::with_capacity((bs * per_io) as usize);
            for b in 0..per_io as u64 {
                fill_block(&mut buf, bs as usize, lba + b, generation, self.hash);
            }
            (
                cdb::write16(cfg.lun, lba, bs, buf.freeze()),
                Kind::Write(generation),
            )
        };
        set_busy(&mut s.in_flight, chunk, true);
        s.issued += 1;
        Next::Io { chunk, kind, req }
    }

    /// Account one completed I/O.
    fn done(
        &self,
        s: &mut Shared,
        chunk: u64,
        kind: Kind,
        result: Result<Bytes, TaskError>,
        latency: Duration,
    ) {
        let (cfg, bs, per_io, hash) = (&self.cfg, self.bs, self.per_io, self.hash);
        let Shared {
            expected,
            in_flight,
            hist,
            report,
            ..
        } = s;
        set_busy(in_flight, chunk, false);
        report.ios += 1;
        let (bytes_before, bad_before) = (report.bytes, report.errors + report.mismatches);
        let lba = chunk * per_io as u64;
        let slot = expected.get_mut(chunk as usize);
        match (kind, result) {
            (kind, Err(e)) => {
                report.errors += 1;
                if report.error_samples.len() < MAX_ERROR_SAMPLES {
                    report.error_samples.push(format!("lba {lba}: {e}"));
                }
                if let (Kind::Write(_), Some(s)) = (kind, slot) {
                    *s = UNKNOWN;
                }
            }
            (Kind::Write(generation), Ok(_)) => {
                report.writes += 1;
                report.bytes += (bs * per_io) as u64;
                if let Some(s) = slot {
                    *s = generation;
                }
                let _ = hist.record(latency.as_micros().max(1) as u64);
            }
            (Kind::Read, Ok(data)) => {
                report.reads += 1;
                report.bytes += data.len() as u64;
                let _ = hist.record(latency.as_micros().max(1) as u64);
                let generation = slot.map(|s| *s).unwrap_or(0);
                if cfg.verify && generation != 0 && generation != UNKNOWN {
                    report.verified_reads += 1;
                    let bad = data
                        .chunks(bs as usize)
                        .enumerate()
                        .find_map(|(i, b)| check_block(b, lba + i as u64, generation, hash).err())
                        .or_else(|| {
                            (data.len() != (bs * per_io) as usize)
                                .then(|| format!("lba {lba}: short read of {} bytes", data.len()))
                        });
                    if let Some(why) = bad {
                        report.mismatches += 1;
                        if report.error_samples.len() < MAX_ERROR_SAMPLES {
                            report.error_samples.push(why);
                        }
                    }
                }
            }
        }
        if let Some(p) = &cfg.progress {
            let bad = report.errors + report.mismatches > bad_before;
            p.add(report.bytes - bytes_before, bad);
        }
    }
}

fn busy(bits: &[u64], chunk: u64) -> bool {
    bits.get((chunk / 64) as usize)
        .is_some_and(|w| w & (1 << (chunk % 64)) != 0)
}

fn set_busy(bits: &mut [u64], chunk: u64, on: bool) {
    if let Some(w) = bits.get_mut((chunk / 64) as usize) {
        if on {
            *w |= 1 << (chunk % 64);
        } else {
            *w &= !(1 << (chunk % 64));
        }
    }
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    // A worker that panicked left the counts as they were between two I/Os: keep going.
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// One of the queue-depth workers: issue an I/O, wait for it, account it, issue the next.
/// A completion is followed by the next command at once, from the task it woke (no task per
/// I/O, no timer per I/O: the timeout is one sleep per worker, moved on every half bound).
async fn worker(init: BalancedInitiator, plan: Arc<Plan>, shared: Arc<Mutex<Shared>>) {
    let bound = plan.cfg.io_timeout;
    // The sleep fires at least `bound` after the start of the I/O in flight: it is pushed to
    // 1.5 x bound ahead whenever less than `bound` is left.
    let timer = tokio::time::sleep_until(plan.start + bound + bound / 2);
    tokio::pin!(timer);
    let mut now = tokio::time::Instant::now();
    loop {
        let next = plan.next(&mut lock(&shared), now);
        let (chunk, kind, req) = match next {
            Next::Io { chunk, kind, req } => (chunk, kind, req),
            Next::NotBefore(at) => {
                tokio::time::sleep_until(at).await;
                now = tokio::time::Instant::now();
                continue;
            }
            Next::Busy => {
                tokio::task::yield_now().await;
                now = tokio::time::Instant::now();
                continue;
            }
            Next::Stop => return,
        };
        if timer.deadline() < now + bound {
            timer.as_mut().reset(now + bound + bound / 2);
        }
        let result = tokio::select! {
            biased;
            r = init.execute(req) => r.map(|r| r.data),
            _ = &mut timer => Err(TaskError::Unfinished),
        };
        let t1 = tokio::time::Instant::now();
        plan.done(&mut lock(&shared), chunk, kind, result, t1 - now);
        now = t1;
    }
}

/// Run the workload; errors only when the LUN cannot be sized.
pub async fn run_workload(
    init: &BalancedInitiator,
    cfg: &WorkloadConfig,
) -> Result<WorkloadReport, Error> {
    let cap = init
        .execute(cdb::read_capacity16(cfg.lun))
        .await
        .map_err(|e| Error::Protocol(format!("READ CAPACITY: {e}")))?;
    let cap = cdb::Capacity::parse(&cap.data)
        .ok_or_else(|| Error::Protocol("short READ CAPACITY data".into()))?;
    let bs = cfg.block_size.unwrap_or(cap.block_size);
    if bs != cap.block_size || (bs as usize) < HEADER + 4 {
        return Err(Error::Protocol(format!(
            "block size {bs} does not match the LUN's {} or is too small",
            cap.block_size
        )));
    }
    let per_io = cfg.blocks_per_io.max(1);
    let region = cfg.region_blocks.unwrap_or(cap.blocks).min(cap.blocks);
    let chunks = (region / per_io as u64).min(MAX_CHUNKS);
    let qd = cfg
        .queue_depth
        .clamp(1, 1024)
        .min((chunks / 2).max(1) as usize);
    if chunks == 0 {
        return Err(Error::Protocol("LUN smaller than one I/O".into()));
    }
    let hist = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)
        .map_err(|e| Error::Protocol(format!("histogram: {e}")))?;
    let report = WorkloadReport {
        target: init.target().to_string(),
        block_size: bs,
        region_blocks: chunks * per_io as u64,
        ..Default::default()
    };
    let shared = Arc::new(Mutex::new(Shared {
        expected: vec![0u64; chunks as usize],
        in_flight: vec![0u64; chunks.div_ceil(64) as usize],
        rng: rand::rngs::StdRng::seed_from_u64(cfg.seed),
        hist,
        report,
        issued: 0,
    }));
    let start = Instant::now();
    let plan = Arc::new(Plan {
        cfg: cfg.clone(),
        bs,
        per_io,
        chunks,
        hash: name_hash(&cfg.initiator_name),
        start: tokio::time::Instant::from_std(start),
    });
    let started_at_ms = unix_ms();
    // Aborted with the set if this future is dropped.
    let mut workers = JoinSet::new();
    for _ in 0..qd {
        workers.spawn(worker(init.clone(), plan.clone(), shared.clone()));
    }
    let mut panicked = 0;
    while let Some(j) = workers.join_next().await {
        if j.is_err() {
            panicked += 1;
        }
    }
    let elapsed = start.elapsed();
    let mut s = lock(&shared);
    let mut report = std::mem::take(&mut s.report);
    let hist = &s.hist;
    if !hist.is_empty() {
        report.latency = Latency {
            mean_us: hist.mean(),
            p50_us: hist.value_at_quantile(0.5),
            p90_us: hist.value_at_quantile(0.9),
            p99_us: hist.value_at_quantile(0.99),
            p999_us: hist.value_at_quantile(0.999),
            max_us: hist.max(),
        };
    }
    drop(s);
    report.errors += panicked;
    report.started_at_ms = started_at_ms;
    report.ended_at_ms = unix_ms();
    report.elapsed_ms = elapsed.as_millis() as u64;
    report.iops = report.ios as f64 / elapsed.as_secs_f64().max(1e-9);
    report.moves = init.moves();
    report.reconnects = init.reconnects();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_roundtrip_and_detection() {
        let h = name_hash("iqn.x");
        let mut b = BytesMut::new();
        fill_block(&mut b, 512, 42, 7, h);
        assert_eq!(b.len(), 512);
        assert!(check_block(&b, 42, 7, h).is_ok());
        assert!(
            check_block(&b, 42, 6, h)
                .unwrap_err()
                .contains("generation 7")
        );
        assert!(check_block(&b, 43, 7, h).is_err());
        assert!(check_block(&b, 42, 7, h ^ 1).is_err());
        let mut torn = b.to_vec();
        torn[300] ^= 1;
        assert!(check_block(&torn, 42, 7, h).unwrap_err().contains("CRC32C"));
        assert!(check_block(&[0u8; 512], 42, 7, h).is_err());
        assert!(check_block(&[0u8; 8], 0, 1, h).is_err());
        assert_ne!(name_hash("a"), name_hash("b"));
    }

    #[test]
    fn pattern_filler_differs_per_block_and_sizes_hold() {
        let h = name_hash("iqn.x");
        for bs in [512usize, 520, 4096, 4100] {
            let (mut a, mut b) = (BytesMut::new(), BytesMut::new());
            fill_block(&mut a, bs, 9, 3, h);
            fill_block(&mut b, bs, 10, 3, h);
            assert_eq!((a.len(), b.len()), (bs, bs));
            assert!(check_block(&a, 9, 3, h).is_ok() && check_block(&b, 10, 3, h).is_ok());
            let differing = a[HEADER..bs - 4]
                .iter()
                .zip(&b[HEADER..bs - 4])
                .filter(|(x, y)| x != y)
                .count();
            assert!(
                differing > (bs - HEADER - 4) / 2,
                "{bs}: {differing} bytes differ"
            );
        }
    }
}
