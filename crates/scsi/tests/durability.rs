//! Durable writes, proven with a device that records the order of writes, flushes and the
//! statuses the logical unit returns: SYNCHRONIZE CACHE flushes after every write
//! acknowledged before it and before its own status; a FUA write is durable before its
//! status; a write-through unit (or one whose WCE MODE SELECT cleared) makes every write
//! durable before its status; the Caching page says which of these the unit does.

use std::io;
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use scsi::*;

/// One event at the device, or a status the unit returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    /// A write of the block at this LBA; `durable` when it was a durable write.
    Write { lba: u64, durable: bool },
    /// A flush of everything written so far.
    Flush,
    /// The unit returned GOOD for the command with this tag.
    Status(&'static str),
}

/// A [`MemDevice`] that records every write and flush, in order.
struct Recorder {
    inner: MemDevice,
    log: Arc<Mutex<Vec<Event>>>,
}

impl Recorder {
    fn push(&self, e: Event) {
        self.log.lock().unwrap().push(e);
    }
}

impl BlockDevice for Recorder {
    fn num_blocks(&self) -> u64 {
        self.inner.num_blocks()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.inner.read_at(offset, buf)
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.push(Event::Write {
            lba: offset / 512,
            durable: false,
        });
        self.inner.write_at(offset, buf)
    }
    fn write_at_durable(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.inner.write_at(offset, buf)?;
        self.push(Event::Write {
            lba: offset / 512,
            durable: true,
        });
        Ok(())
    }
    fn flush(&self) -> io::Result<()> {
        self.push(Event::Flush);
        Ok(())
    }
}

struct Unit {
    lu: LogicalUnit,
    log: Arc<Mutex<Vec<Event>>>,
}

fn unit(write_through: bool) -> Unit {
    let log = Arc::new(Mutex::new(Vec::new()));
    let dev = Recorder {
        inner: MemDevice::new(1024),
        log: log.clone(),
    };
    let lu = LogicalUnit::new(
        Arc::new(dev),
        Identity::new("iqn.2024-01.t:dur", 0).unwrap(),
    )
    .with_write_through(write_through);
    Unit { lu, log }
}

impl Unit {
    /// Run `cdb`; a GOOD status is logged as `Status(tag)`.
    fn run(&self, tag: &'static str, cdb: &[u8], data_out: &[u8]) -> ScsiOutcome {
        let task = ScsiTask {
            cdb,
            lun: 0,
            expected_data_transfer_length: data_out.len().max(255) as u32,
            tpgt: 1,
            nexus: 1,
        };
        let mut buf = BytesMut::new();
        let out = self.lu.execute(&task, data_out, &mut buf);
        if out.status == ScsiStatus::Good {
            self.log.lock().unwrap().push(Event::Status(tag));
        }
        out
    }
    fn events(&self) -> Vec<Event> {
        self.log.lock().unwrap().clone()
    }
    fn caching_wce(&self) -> bool {
        let task = ScsiTask {
            cdb: &[0x1A, 0x08, 0x08, 0, 255, 0],
            lun: 0,
            expected_data_transfer_length: 255,
            tpgt: 1,
            nexus: 1,
        };
        let mut buf = BytesMut::new();
        let out = self.lu.execute(&task, &[], &mut buf);
        assert_eq!(out.status, ScsiStatus::Good);
        assert_eq!(buf[4], 0x08, "Caching page");
        buf[6] & 0x04 != 0
    }
}

fn write10(lba: u32, fua: bool) -> [u8; 10] {
    let mut c = [0u8; 10];
    c[0] = 0x2A;
    c[1] = if fua { 0x08 } else { 0 };
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c[8] = 1;
    c
}

fn position(events: &[Event], e: Event) -> usize {
    events
        .iter()
        .position(|x| *x == e)
        .unwrap_or_else(|| panic!("{e:?} not in {events:?}"))
}

const SYNC10: [u8; 10] = [0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0];
const BLOCK: [u8; 512] = [0x5A; 512];

#[test]
fn synchronize_cache_flushes_every_acknowledged_write_before_its_status() {
    let u = unit(false);
    assert!(u.caching_wce(), "a cached unit reports WCE=1");
    u.run("w1", &write10(1, false), &BLOCK);
    u.run("w2", &write10(2, false), &BLOCK);
    let mut sync16 = [0u8; 16];
    sync16[0] = 0x91;
    for (tag, cdb) in [("sync10", &SYNC10[..]), ("sync16", &sync16[..])] {
        assert_eq!(u.run(tag, cdb, &[]).status, ScsiStatus::Good);
        let ev = u.events();
        let status = position(&ev, Event::Status(tag));
        let w2 = position(&ev, Event::Status("w2"));
        // The writes went to the cache (not durable) and were acknowledged first.
        assert_eq!(
            &ev[..4],
            &[
                Event::Write {
                    lba: 1,
                    durable: false
                },
                Event::Status("w1"),
                Event::Write {
                    lba: 2,
                    durable: false
                },
                Event::Status("w2"),
            ]
        );
        // A flush after the last acknowledged write and before this status.
        assert!(
            ev[w2..status].contains(&Event::Flush),
            "no flush between the writes and the status of {tag}: {ev:?}"
        );
    }
}

#[test]
fn fua_write_is_durable_before_its_status() {
    let u = unit(false);
    u.run("fua", &write10(7, true), &BLOCK);
    let mut w16 = [0u8; 16];
    w16[0] = 0x8A;
    w16[1] = 0x08;
    w16[9] = 8;
    w16[13] = 1;
    u.run("fua16", &w16, &BLOCK);
    assert_eq!(
        u.events(),
        vec![
            Event::Write {
                lba: 7,
                durable: true
            },
            Event::Status("fua"),
            Event::Write {
                lba: 8,
                durable: true
            },
            Event::Status("fua16"),
        ]
    );
}

#[test]
fn write_through_makes_every_write_durable_before_its_status() {
    let u = unit(true);
    assert!(!u.caching_wce(), "a write-through unit reports WCE=0");
    u.run("w", &write10(3, false), &BLOCK);
    // WRITE SAME (10) of 4 blocks with a nonzero pattern: written, then flushed.
    let ws = [0x41, 0, 0, 0, 0, 10, 0, 0, 4, 0];
    u.run("ws", &ws, &BLOCK);
    // UNMAP of 2 blocks: zeroed, then flushed.
    let mut unmap = vec![0, 22, 0, 16, 0, 0, 0, 0];
    unmap.extend_from_slice(&20u64.to_be_bytes());
    unmap.extend_from_slice(&2u32.to_be_bytes());
    unmap.extend_from_slice(&[0; 4]);
    u.run("unmap", &[0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0], &unmap);
    let ev = u.events();
    assert_eq!(
        &ev[..2],
        &[
            Event::Write {
                lba: 3,
                durable: true
            },
            Event::Status("w")
        ]
    );
    for tag in ["ws", "unmap"] {
        let status = position(&ev, Event::Status(tag));
        assert_eq!(ev[status - 1], Event::Flush, "{tag}: {ev:?}");
    }
    // MODE SELECT cannot turn the cache on for a write-through unit.
    let mut caching = vec![0u8, 0, 0, 0, 0x08, 18, 0x04];
    caching.resize(4 + 20, 0);
    let out = u.run("wce1", &[0x15, 0x10, 0, 0, 24, 0], &caching);
    assert_eq!(out.status, ScsiStatus::CheckCondition);
    assert!(!u.caching_wce());
}

#[test]
fn clearing_wce_flushes_the_cache_and_makes_later_writes_durable() {
    let u = unit(false);
    u.run("w1", &write10(1, false), &BLOCK);
    let mut caching = vec![0u8, 0, 0, 0, 0x08, 18, 0x00];
    caching.resize(4 + 20, 0);
    assert_eq!(
        u.run("wce0", &[0x15, 0x10, 0, 0, 24, 0], &caching).status,
        ScsiStatus::Good
    );
    assert!(!u.caching_wce());
    u.run("w2", &write10(2, false), &BLOCK);
    let ev = u.events();
    let w1 = position(&ev, Event::Status("w1"));
    let wce0 = position(&ev, Event::Status("wce0"));
    assert!(ev[w1..wce0].contains(&Event::Flush), "{ev:?}");
    assert_eq!(
        &ev[wce0 + 1..],
        &[
            Event::Write {
                lba: 2,
                durable: true
            },
            Event::Status("w2")
        ]
    );
    // And back on: writes are cached again.
    caching[6] = 0x04;
    u.run("wce1", &[0x15, 0x10, 0, 0, 24, 0], &caching);
    assert!(u.caching_wce());
    u.run("w3", &write10(3, false), &BLOCK);
    assert!(u.events().contains(&Event::Write {
        lba: 3,
        durable: false
    }));
}

#[test]
fn software_write_protect_refuses_writes_until_cleared() {
    let u = unit(false);
    let mut control = vec![
        0u8, 0, 0, 0, 0x0A, 10, 0, 0x10, 0x08, 0, 0, 0, 0xFF, 0xFF, 0, 0,
    ];
    assert_eq!(
        u.run("swp1", &[0x15, 0x10, 0, 0, 16, 0], &control).status,
        ScsiStatus::Good
    );
    let out = u.run("w", &write10(1, false), &BLOCK);
    let sense = out.sense.expect("check condition");
    assert_eq!(sense.key, SenseKey::DataProtect);
    assert_eq!((sense.asc.asc, sense.asc.ascq), (0x27, 0x02));
    // Reads and SYNCHRONIZE CACHE still work.
    assert_eq!(u.run("sync", &SYNC10, &[]).status, ScsiStatus::Good);
    control[8] = 0;
    u.run("swp0", &[0x15, 0x10, 0, 0, 16, 0], &control);
    assert_eq!(
        u.run("w", &write10(1, false), &BLOCK).status,
        ScsiStatus::Good
    );
}

#[test]
fn a_file_unit_survives_reopen_after_fua_and_synchronize_cache() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("durable.img");
    {
        let dev = Arc::new(FileDevice::open(&p, Some(1 << 20)).unwrap());
        let lu = LogicalUnit::new(dev, Identity::new("iqn.2024-01.t:f", 0).unwrap());
        for (cdb, data) in [
            (&write10(5, true)[..], &BLOCK[..]),
            (&write10(6, false), &BLOCK),
            (&SYNC10, &[]),
        ] {
            let task = ScsiTask {
                cdb,
                lun: 0,
                expected_data_transfer_length: data.len() as u32,
                tpgt: 1,
                nexus: 1,
            };
            let out = lu.execute(&task, data, &mut BytesMut::new());
            assert_eq!(out.status, ScsiStatus::Good);
        }
    }
    let back = std::fs::read(&p).unwrap();
    assert_eq!(&back[5 * 512..7 * 512], &[0x5A; 1024][..]);
}
