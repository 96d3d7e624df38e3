//! Single-thread cost of the SCSI read path: 4 KiB random READ(10)s through
//! `LogicalUnit::execute`, on a NullDevice and on a page-cached FileDevice.
//! Usage: cargo run --release -p scsi --example readpath [iterations]

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use scsi::{BlockDevice, FileDevice, Identity, LogicalUnit, NullDevice, ScsiStatus, ScsiTask};

const BLOCKS: u64 = 128 * 1024; // 64 MiB

fn bench(name: &str, dev: Arc<dyn BlockDevice>, iterations: u32) {
    let lu = LogicalUnit::new(
        dev,
        Identity::new("iqn.2024-01.org.portshift:bench", 0).unwrap(),
    );
    let mut buf = BytesMut::with_capacity(4096);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let start = Instant::now();
    for _ in 0..iterations {
        // xorshift: a random 4 KiB-aligned LBA.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let lba = (x % (BLOCKS / 8)) * 8;
        let mut cdb = [0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0];
        cdb[2..6].copy_from_slice(&(lba as u32).to_be_bytes());
        let task = ScsiTask {
            cdb: &cdb,
            lun: 0,
            expected_data_transfer_length: 4096,
            tpgt: 1,
            nexus: 1,
        };
        buf.clear();
        let out = lu.execute(&task, &[], &mut buf);
        assert_eq!(out.status, ScsiStatus::Good);
    }
    let per = start.elapsed() / iterations;
    println!(
        "{name}: {per:?} per 4 KiB read ({:.0} IOPS on one core)",
        1e9 / per.as_nanos() as f64
    );
}

fn main() {
    let iterations: u32 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000)
        .clamp(1, 10_000_000);
    bench("null", Arc::new(NullDevice::new(BLOCKS)), iterations);
    let dir = std::env::temp_dir().join(format!("scsi-readpath-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("disk.img");
    let dev = FileDevice::open(&path, Some(BLOCKS * 512)).unwrap();
    // Fill so the reads hit real (cached) pages rather than holes.
    let chunk = vec![0xA5u8; 1 << 20];
    for i in 0..(BLOCKS * 512 / chunk.len() as u64) {
        dev.write_at(i * chunk.len() as u64, &chunk).unwrap();
    }
    bench("file", Arc::new(dev), iterations);
    std::fs::remove_dir_all(&dir).unwrap();
}
