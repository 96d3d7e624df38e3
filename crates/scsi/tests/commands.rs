//! Command-level tests of LogicalUnit / LunTable against MemDevice and a
//! real file, checking the exact bytes SPC-4 / SBC-3 require.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::BytesMut;
use scsi::*;

const IQN: &str = "iqn.2024-01.org.portshift:test";
const BLOCKS: u64 = 1024;

fn lu_with(dev: Arc<dyn BlockDevice>) -> LogicalUnit {
    LogicalUnit::new(dev, Identity::new(IQN, 0).unwrap())
}

fn mem_lu() -> LogicalUnit {
    lu_with(Arc::new(MemDevice::new(BLOCKS)))
}

struct Run {
    out: ScsiOutcome,
    data: Vec<u8>,
}

fn run_edtl(lu: &LogicalUnit, cdb: &[u8], edtl: u32, data_out: &[u8]) -> Run {
    run_as(lu, 1, cdb, edtl, data_out)
}

/// Run a command from I_T nexus `nexus`.
fn run_as(lu: &LogicalUnit, nexus: u64, cdb: &[u8], edtl: u32, data_out: &[u8]) -> Run {
    let task = ScsiTask {
        cdb,
        lun: 0,
        expected_data_transfer_length: edtl,
        tpgt: 1,
        nexus,
    };
    let mut buf = BytesMut::new();
    let out = lu.execute(&task, data_out, &mut buf);
    assert_eq!(out.data_in_len as usize, buf.len());
    Run {
        out,
        data: buf.to_vec(),
    }
}

fn run(lu: &LogicalUnit, cdb: &[u8], data_out: &[u8]) -> Run {
    run_edtl(lu, cdb, 1 << 24, data_out)
}

fn good(r: &Run) {
    assert_eq!(r.out.status, ScsiStatus::Good, "sense {:?}", r.out.sense);
}

fn sense_of(r: &Run) -> Sense {
    assert_eq!(r.out.status, ScsiStatus::CheckCondition);
    assert_eq!(r.out.data_in_len, 0);
    r.out.sense.expect("check condition carries sense")
}

fn cdb10(op: u8, flags: u8, lba: u32, len: u16) -> [u8; 10] {
    let mut c = [0u8; 10];
    c[0] = op;
    c[1] = flags;
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c[7..9].copy_from_slice(&len.to_be_bytes());
    c
}

fn cdb16(op: u8, flags: u8, lba: u64, len: u32) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = op;
    c[1] = flags;
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[10..14].copy_from_slice(&len.to_be_bytes());
    c
}

fn cdb12(op: u8, flags: u8, lba: u32, len: u32) -> [u8; 12] {
    let mut c = [0u8; 12];
    c[0] = op;
    c[1] = flags;
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c[6..10].copy_from_slice(&len.to_be_bytes());
    c
}

#[test]
fn write_then_read_back_all_sizes() {
    let lu = mem_lu();
    let pattern: Vec<u8> = (0..3 * 512).map(|i| (i % 251) as u8).collect();
    good(&run(&lu, &cdb10(0x2A, 0, 10, 3), &pattern));
    let r = run(&lu, &cdb10(0x28, 0, 10, 3), &[]);
    good(&r);
    assert_eq!(r.data, pattern);
    let r = run(&lu, &cdb12(0xA8, 0, 11, 1), &[]);
    assert_eq!(r.data, pattern[512..1024]);
    let r = run(&lu, &cdb16(0x88, 0, 12, 1), &[]);
    assert_eq!(r.data, pattern[1024..]);
    let r = run(&lu, &[0x08, 0, 0, 10, 2, 0], &[]);
    assert_eq!(r.data, pattern[..1024]);
    good(&run(&lu, &cdb16(0x8A, 0, 20, 1), &pattern[..512]));
    good(&run(&lu, &cdb12(0xAA, 0, 21, 1), &pattern[512..1024]));
    good(&run(&lu, &[0x0A, 0, 0, 22, 1, 0], &pattern[1024..]));
    let r = run(&lu, &cdb10(0x28, 0, 20, 3), &[]);
    assert_eq!(r.data, pattern);
}

#[test]
fn read6_length_zero_is_256_blocks() {
    let lu = mem_lu();
    let r = run(&lu, &[0x08, 0, 0, 0, 0, 0], &[]);
    good(&r);
    assert_eq!(r.data.len(), 256 * 512);
    assert_eq!(r.out.data_in_wanted, 256 * 512);
    // WRITE(6) with 0 also means 256 blocks of data-out.
    assert_eq!(lu.data_out_length(&[0x0A, 0, 0, 0, 0, 0]), Ok(256 * 512));
}

#[test]
fn out_of_range_lbas() {
    let lu = mem_lu();
    let n = BLOCKS as u32;
    for (lba, len) in [
        (n, 1),
        (n - 1, 2),
        (n + 1, 0),
        (0x8000_0000, 1),
        (u32::MAX, 1),
    ] {
        let s = sense_of(&run(&lu, &cdb10(0x28, 0, lba, len), &[]));
        assert_eq!(
            (s.key, s.asc),
            (SenseKey::IllegalRequest, Asc::LBA_OUT_OF_RANGE)
        );
        let s = sense_of(&run(
            &lu,
            &cdb10(0x2A, 0, lba, len),
            &vec![0; 512 * len as usize],
        ));
        assert_eq!(s.asc, Asc::LBA_OUT_OF_RANGE);
    }
    for lba in [BLOCKS + 1, 1 << 63, u64::MAX] {
        let s = sense_of(&run(&lu, &cdb16(0x88, 0, lba, 0), &[]));
        assert_eq!(s.asc, Asc::LBA_OUT_OF_RANGE);
    }
    let s = sense_of(&run(&lu, &cdb16(0x88, 0, u64::MAX, 1), &[]));
    assert_eq!(s.asc, Asc::LBA_OUT_OF_RANGE);
    // READ(6) beyond the end.
    let s = sense_of(&run(&lu, &[0x08, 0x1F, 0xFF, 0xFF, 1, 0], &[]));
    assert_eq!(s.asc, Asc::LBA_OUT_OF_RANGE);
    // Last block and zero-length are fine.
    good(&run(&lu, &cdb10(0x28, 0, n - 1, 1), &[]));
    good(&run(&lu, &cdb10(0x28, 0, 0, 0), &[]));
}

#[test]
fn sense_bytes_exact_for_lba_out_of_range() {
    let lu = mem_lu();
    let s = sense_of(&run(&lu, &cdb10(0x28, 0, 5000, 1), &[]));
    assert_eq!(
        s.to_fixed(),
        [
            0x70, 0, 0x05, 0, 0, 0, 0, 0x0A, 0, 0, 0, 0, 0x21, 0, 0, 0, 0, 0
        ]
    );
}

#[test]
fn max_transfer_length_enforced() {
    let lu = mem_lu().with_limits(Limits {
        max_transfer_blocks: 8,
        ..Limits::default()
    });
    let s = sense_of(&run(&lu, &cdb16(0x88, 0, 0, 9), &[]));
    assert_eq!(s.asc, Asc::INVALID_FIELD_IN_CDB);
    assert_eq!(s.field_pointer.map(|f| f.byte), Some(10));
    good(&run(&lu, &cdb16(0x88, 0, 0, 8), &[]));
}

#[test]
fn protect_and_dpo_fua_flags() {
    let lu = mem_lu();
    for p in 1..8u8 {
        let s = sense_of(&run(&lu, &cdb10(0x28, p << 5, 0, 1), &[]));
        assert_eq!(s.asc, Asc::INVALID_FIELD_IN_CDB);
    }
    for flags in [0x08, 0x10, 0x18, 0x02, 0x1A] {
        good(&run(&lu, &cdb10(0x28, flags, 0, 1), &[]));
        good(&run(&lu, &cdb10(0x2A, flags, 0, 1), &[0xA6; 512]));
    }
}

/// A device that records flushes and can fail every I/O.
struct Probe {
    inner: MemDevice,
    flushed: AtomicBool,
    fail: AtomicBool,
}

impl Probe {
    fn check(&self) -> io::Result<()> {
        if self.fail.load(Ordering::SeqCst) {
            Err(io::Error::other("injected"))
        } else {
            Ok(())
        }
    }
}

impl BlockDevice for Probe {
    fn num_blocks(&self) -> u64 {
        self.inner.num_blocks()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.check()?;
        self.inner.read_at(offset, buf)
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.check()?;
        self.inner.write_at(offset, buf)
    }
    fn flush(&self) -> io::Result<()> {
        self.check()?;
        self.flushed.store(true, Ordering::SeqCst);
        Ok(())
    }
}

fn probe() -> Arc<Probe> {
    Arc::new(Probe {
        inner: MemDevice::new(BLOCKS),
        flushed: AtomicBool::new(false),
        fail: AtomicBool::new(false),
    })
}

#[test]
fn fua_and_sync_cache_flush() {
    let dev = probe();
    let lu = lu_with(dev.clone());
    good(&run(&lu, &cdb10(0x2A, 0, 0, 1), &[1; 512]));
    assert!(!dev.flushed.load(Ordering::SeqCst));
    good(&run(&lu, &cdb10(0x2A, 0x08, 0, 1), &[1; 512]));
    assert!(dev.flushed.swap(false, Ordering::SeqCst));
    good(&run(&lu, &cdb16(0x8A, 0x08, 0, 1), &[1; 512]));
    assert!(dev.flushed.swap(false, Ordering::SeqCst));
    good(&run(&lu, &cdb10(0x35, 0, 0, 0), &[]));
    assert!(dev.flushed.swap(false, Ordering::SeqCst));
    good(&run(&lu, &cdb16(0x91, 0, 0, 0), &[]));
    assert!(dev.flushed.swap(false, Ordering::SeqCst));
    let s = sense_of(&run(&lu, &cdb10(0x35, 0, BLOCKS as u32 + 1, 0), &[]));
    assert_eq!(s.asc, Asc::LBA_OUT_OF_RANGE);
}

#[test]
fn io_failures_are_medium_errors() {
    let dev = probe();
    let lu = lu_with(dev.clone());
    dev.fail.store(true, Ordering::SeqCst);
    let s = sense_of(&run(&lu, &cdb10(0x28, 0, 7, 1), &[]));
    assert_eq!(
        (s.key, s.asc),
        (SenseKey::MediumError, Asc::UNRECOVERED_READ_ERROR)
    );
    assert_eq!(s.information, Some(7));
    assert_eq!(s.to_fixed()[0], 0xF0);
    let s = sense_of(&run(&lu, &cdb10(0x2A, 0, 7, 1), &[0; 512]));
    assert_eq!((s.key, s.asc), (SenseKey::MediumError, Asc::WRITE_ERROR));
    let s = sense_of(&run(&lu, &cdb10(0x35, 0, 0, 0), &[]));
    assert_eq!(s.key, SenseKey::MediumError);
}

#[test]
fn residual_shapes_for_reads() {
    let lu = mem_lu();
    // EDTL 200 < one block: only 200 bytes, residual overflow 312.
    let r = run_edtl(&lu, &cdb10(0x28, 0, 0, 1), 200, &[]);
    good(&r);
    assert_eq!(r.data.len(), 200);
    assert_eq!(
        Residual::compute(200, r.out.data_in_wanted),
        Residual::Overflow(312)
    );
    // EDTL 0.
    let r = run_edtl(&lu, &cdb10(0x28, 0, 0, 1), 0, &[]);
    good(&r);
    assert_eq!(
        Residual::compute(0, r.out.data_in_wanted),
        Residual::Overflow(512)
    );
    // EDTL 10000 > one block: underflow.
    let r = run_edtl(&lu, &cdb10(0x28, 0, 0, 1), 10000, &[]);
    assert_eq!(r.data.len(), 512);
    assert_eq!(
        Residual::compute(10000, r.out.data_in_wanted),
        Residual::Underflow(9488)
    );
}

#[test]
fn short_data_out_writes_nothing() {
    let lu = mem_lu();
    good(&run(&lu, &cdb10(0x2A, 0, 0, 2), &[b'a'; 1024]));
    let s = sense_of(&run(&lu, &cdb10(0x2A, 0, 0, 2), &[b'b'; 512]));
    assert_eq!(s.asc, Asc::INVALID_FIELD_IN_COMMAND_INFORMATION_UNIT);
    let r = run(&lu, &cdb10(0x28, 0, 0, 2), &[]);
    assert!(r.data.iter().all(|&b| b == b'a'));
    // Extra data-out (EDTL > transfer length) is ignored beyond the blocks.
    good(&run(&lu, &cdb10(0x2A, 0, 0, 1), &[b'c'; 2048]));
    let r = run(&lu, &cdb10(0x28, 0, 0, 2), &[]);
    assert!(r.data[..512].iter().all(|&b| b == b'c'));
    assert!(r.data[512..].iter().all(|&b| b == b'a'));
}

#[test]
fn inquiry_standard_and_truncation() {
    let lu = mem_lu();
    let full = run(&lu, &[0x12, 0, 0, 1, 4, 0], &[]);
    good(&full);
    assert_eq!(full.data.len(), 96);
    assert_eq!(&full.data[8..16], b"PORTSHFT");
    assert_eq!(&full.data[16..32], b"portshift disk  ");
    for alloc in [0u16, 5, 36, 95, 255, 511, 512] {
        let r = run(&lu, &[0x12, 0, 0, (alloc >> 8) as u8, alloc as u8, 0], &[]);
        good(&r);
        let n = usize::from(alloc).min(96);
        assert_eq!(r.data, full.data[..n]);
        assert_eq!(r.out.data_in_wanted as usize, n);
    }
    let s = sense_of(&run(&lu, &[0x12, 0, 0x83, 0, 255, 0], &[]));
    assert_eq!(s.asc, Asc::INVALID_FIELD_IN_CDB);
}

#[test]
fn inquiry_vpd_pages() {
    let lu = mem_lu();
    let r = run(&lu, &[0x12, 1, 0x00, 0, 255, 0], &[]);
    good(&r);
    assert_eq!(&r.data[..4], &[0, 0, 0, 7]);
    for &page in &r.data[4..] {
        let p = run(&lu, &[0x12, 1, page, 0, 255, 0], &[]);
        good(&p);
        assert_eq!(p.data[1], page);
        assert_eq!(
            usize::from(u16::from_be_bytes([p.data[2], p.data[3]])) + 4,
            p.data.len()
        );
    }
    let serial = run(&lu, &[0x12, 1, 0x80, 0, 255, 0], &[]);
    assert_eq!(&serial.data[4..], lu.identity().serial.as_bytes());
    let id = run(&lu, &[0x12, 1, 0x83, 1, 0, 0], &[]);
    let text = String::from_utf8_lossy(&id.data);
    assert!(text.contains("iqn.2024-01.org.portshift:test,t,0x0001"));
    let s = sense_of(&run(&lu, &[0x12, 1, 0x99, 0, 255, 0], &[]));
    assert_eq!(s.asc, Asc::INVALID_FIELD_IN_CDB);
}

#[test]
fn read_capacity_10_and_16() {
    let lu = mem_lu();
    let r = run(&lu, &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]);
    good(&r);
    assert_eq!(r.data, [0, 0, 0x03, 0xFF, 0, 0, 0x02, 0x00]);
    let s = sense_of(&run(&lu, &[0x25, 0, 0, 0, 0, 1, 0, 0, 0, 0], &[]));
    assert_eq!(s.asc, Asc::INVALID_FIELD_IN_CDB);
    let mut c = [0u8; 16];
    c[0] = 0x9E;
    c[1] = 0x10;
    c[13] = 32;
    let r = run(&lu, &c, &[]);
    good(&r);
    assert_eq!(r.data.len(), 32);
    assert_eq!(&r.data[0..8], &(BLOCKS - 1).to_be_bytes());
    assert_eq!(&r.data[8..12], &512u32.to_be_bytes());
    assert_eq!(r.data[12], 0); // no protection
    assert_eq!(r.data[14] & 0x80, 0x80); // LBPME
    for alloc in 0..16u8 {
        c[13] = alloc;
        let r = run(&lu, &c, &[]);
        good(&r);
        assert_eq!(r.data.len(), usize::from(alloc));
    }
}

#[test]
fn read_capacity_10_saturates_for_huge_devices() {
    let lu = lu_with(Arc::new(NullDevice::new(1 << 33)));
    let r = run(&lu, &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]);
    assert_eq!(&r.data[0..4], &[0xFF; 4]);
}

#[test]
fn mode_sense_dpofua_and_allocation() {
    let lu = mem_lu();
    let r = run(&lu, &[0x1A, 0, 0x3F, 0, 255, 0], &[]);
    good(&r);
    assert_eq!(usize::from(r.data[0]) + 1, r.data.len());
    assert_eq!(r.data[2] & 0x10, 0x10);
    let r4 = run_edtl(&lu, &[0x1A, 0, 0x3F, 0, 4, 0], 4, &[]);
    assert_eq!(r4.data, r.data[..4]);
    assert_eq!(Residual::compute(4, r4.out.data_in_wanted), Residual::None);
    let r255 = run_edtl(&lu, &[0x1A, 0, 0x3F, 0, 255, 0], 255, &[]);
    assert!(matches!(
        Residual::compute(255, r255.out.data_in_wanted),
        Residual::Underflow(_)
    ));
    let r10 = run(&lu, &[0x5A, 0, 0x0A, 0, 0, 0, 0, 0, 255, 0], &[]);
    good(&r10);
    assert_eq!(
        usize::from(u16::from_be_bytes([r10.data[0], r10.data[1]])) + 2,
        r10.data.len()
    );
    let s = sense_of(&run(&lu, &[0x1A, 0, 0xC8, 0, 255, 0], &[]));
    assert_eq!(s.asc, Asc::SAVING_PARAMETERS_NOT_SUPPORTED);
}

#[test]
fn unknown_opcode_and_simple_commands() {
    let lu = mem_lu();
    let s = sense_of(&run(
        &lu,
        &[0xC1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        &[],
    ));
    assert_eq!(s.to_fixed()[2], 0x05);
    assert_eq!((s.to_fixed()[12], s.to_fixed()[13]), (0x20, 0x00));
    for cdb in [
        &[0x00u8, 0, 0, 0, 0, 0][..],
        &[0x1B, 0, 0, 0, 1, 0],
        &[0x1E, 0, 0, 0, 1, 0],
        &[0x16, 0, 0, 0, 0, 0],
        &[0x17, 0, 0, 0, 0, 0],
        &cdb10(0x34, 0, 0, 8),
    ] {
        good(&run(&lu, cdb, &[]));
    }
    let r = run(&lu, &[0x03, 0, 0, 0, 252, 0], &[]);
    good(&r);
    assert_eq!(r.data.len(), 18);
    assert_eq!((r.data[0], r.data[2], r.data[12]), (0x70, 0, 0));
    let r = run(&lu, &[0x03, 1, 0, 0, 252, 0], &[]);
    assert_eq!(r.data[0], 0x72);
}

#[test]
fn report_supported_opcodes_read10() {
    let lu = mem_lu();
    let r = run(
        &lu,
        &[0xA3, 0x0C, 0x01, 0x28, 0, 0, 0, 0, 0xFF, 0xFF, 0, 0],
        &[],
    );
    good(&r);
    assert_eq!(r.data[1] & 7, 3);
    assert_eq!(r.data[5] & 0x18, 0x18);
    let r = run(
        &lu,
        &[0xA3, 0x0C, 0x80, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0, 0],
        &[],
    );
    good(&r);
    assert_eq!(
        u32::from_be_bytes([r.data[0], r.data[1], r.data[2], r.data[3]]) as usize + 4,
        r.data.len()
    );
}

#[test]
fn verify_compares() {
    let lu = mem_lu();
    let block: Vec<u8> = (0..512).map(|i| i as u8).collect();
    good(&run(&lu, &cdb10(0x2A, 0, 4, 1), &block));
    good(&run(&lu, &cdb10(0x2F, 0, 4, 1), &[]));
    good(&run(&lu, &cdb10(0x2F, 0x02, 4, 1), &block));
    let mut bad = block.clone();
    bad[100] ^= 1;
    let s = sense_of(&run(&lu, &cdb10(0x2F, 0x02, 4, 1), &bad));
    assert_eq!(
        (s.key, s.asc, s.information),
        (
            SenseKey::Miscompare,
            Asc::MISCOMPARE_DURING_VERIFY,
            Some(100)
        )
    );
    // BYTCHK=3: one block compared against each of 2 blocks.
    good(&run(
        &lu,
        &cdb10(0x2A, 0, 8, 2),
        &[block.clone(), block.clone()].concat(),
    ));
    good(&run(&lu, &cdb16(0x8F, 0x06, 8, 2), &block));
    let s = sense_of(&run(&lu, &cdb10(0x2F, 0x04, 4, 1), &block));
    assert_eq!(s.asc, Asc::INVALID_FIELD_IN_CDB);
    let s = sense_of(&run(&lu, &cdb12(0xAF, 0, BLOCKS as u32, 1), &[]));
    assert_eq!(s.asc, Asc::LBA_OUT_OF_RANGE);
}

#[test]
fn write_same_and_unmap() {
    let lu = mem_lu();
    let pat = [0x5Au8; 512];
    good(&run_edtl(&lu, &cdb10(0x41, 0, 100, 10), 512, &pat));
    let r = run(&lu, &cdb10(0x28, 0, 99, 12), &[]);
    assert!(r.data[..512].iter().all(|&b| b == 0));
    assert!(r.data[512..512 * 11].iter().all(|&b| b == 0x5A));
    assert!(r.data[512 * 11..].iter().all(|&b| b == 0));
    // UNMAP blocks 102..104.
    let mut p = vec![0u8; 24];
    p[0..2].copy_from_slice(&22u16.to_be_bytes());
    p[2..4].copy_from_slice(&16u16.to_be_bytes());
    p[8..16].copy_from_slice(&102u64.to_be_bytes());
    p[16..20].copy_from_slice(&2u32.to_be_bytes());
    good(&run(&lu, &cdb10(0x42, 0, 0, 24), &p));
    let r = run(&lu, &cdb10(0x28, 0, 100, 4), &[]);
    assert!(r.data[..1024].iter().all(|&b| b == 0x5A));
    assert!(r.data[1024..].iter().all(|&b| b == 0));
    // WRITE SAME(16) NDOB + UNMAP zeroes without data-out.
    good(&run_edtl(&lu, &cdb16(0x93, 0x09, 100, 2), 0, &[]));
    let r = run(&lu, &cdb10(0x28, 0, 100, 2), &[]);
    assert!(r.data.iter().all(|&b| b == 0));
    // Errors. A data-out of half a block, or of two, is not one block: nothing written.
    for edtl in [256, 1024] {
        let s = sense_of(&run_edtl(
            &lu,
            &cdb10(0x41, 0x08, 200, 1),
            edtl,
            &[0xA6; 1024],
        ));
        assert_eq!(s.asc, Asc::INVALID_FIELD_IN_COMMAND_INFORMATION_UNIT);
    }
    let r = run(&lu, &cdb10(0x28, 0, 200, 1), &[]);
    assert!(r.data.iter().all(|&b| b == 0));
    let s = sense_of(&run(&lu, &cdb10(0x41, 0, 0, 0), &pat));
    assert_eq!(s.asc, Asc::INVALID_FIELD_IN_CDB);
    let s = sense_of(&run(&lu, &cdb10(0x42, 0, 0, 4), &p[..4]));
    assert_eq!(s.asc, Asc::PARAMETER_LIST_LENGTH_ERROR);
    p[8..16].copy_from_slice(&(BLOCKS - 1).to_be_bytes());
    let s = sense_of(&run(&lu, &cdb10(0x42, 0, 0, 24), &p));
    assert_eq!(s.asc, Asc::LBA_OUT_OF_RANGE);
    p[8..16].copy_from_slice(&0u64.to_be_bytes());
    p[16..20].copy_from_slice(&8u32.to_be_bytes());
    let small = mem_lu().with_limits(Limits {
        max_unmap_blocks: 4,
        ..Limits::default()
    });
    let s = sense_of(&run(&small, &cdb10(0x42, 0, 0, 24), &p));
    assert_eq!(s.asc, Asc::INVALID_FIELD_IN_PARAMETER_LIST);
    good(&run(&lu, &cdb10(0x42, 0, 0, 0), &[]));
}

#[test]
fn file_device_round_trip_and_persistence() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lun0.img");
    let data: Vec<u8> = (0..4096).map(|i| (i * 7 % 256) as u8).collect();
    {
        let dev = FileDevice::open(&path, Some(BLOCKS * 512)).unwrap();
        let lu = lu_with(Arc::new(dev));
        good(&run(&lu, &cdb16(0x8A, 0x08, BLOCKS - 8, 8), &data));
        good(&run(&lu, &cdb10(0x35, 0, 0, 0), &[]));
        let s = sense_of(&run(&lu, &cdb16(0x88, 0, BLOCKS - 7, 8), &[]));
        assert_eq!(s.asc, Asc::LBA_OUT_OF_RANGE);
    }
    let raw = std::fs::read(&path).unwrap();
    assert_eq!(&raw[raw.len() - 4096..], &data[..]);
    let lu = lu_with(Arc::new(FileDevice::open(&path, None).unwrap()));
    assert_eq!(lu.num_blocks(), BLOCKS);
    let r = run(&lu, &cdb16(0x88, 0, BLOCKS - 8, 8), &[]);
    assert_eq!(r.data, data);
}

#[test]
fn data_in_is_appended_after_existing_bytes() {
    let lu = mem_lu();
    good(&run(&lu, &cdb10(0x2A, 0, 0, 1), &[9; 512]));
    let mut buf = BytesMut::from(&b"hdr"[..]);
    let task = ScsiTask {
        cdb: &cdb10(0x28, 0, 0, 1),
        lun: 0,
        expected_data_transfer_length: 512,
        tpgt: 1,
        nexus: 1,
    };
    let out = lu.execute(&task, &[], &mut buf);
    assert_eq!(out.data_in_len, 512);
    assert_eq!(&buf[..3], b"hdr");
    assert!(buf[3..].iter().all(|&b| b == 9));
    // A failing command leaves the buffer as it was.
    let bad = ScsiTask {
        cdb: &cdb10(0x28, 0, 5000, 1),
        ..task
    };
    let out = lu.execute(&bad, &[], &mut buf);
    assert_eq!(out.status, ScsiStatus::CheckCondition);
    assert_eq!(buf.len(), 515);
}

#[test]
fn lun_table_routes_and_reports() {
    let mut t = LunTable::new();
    t.insert(0, Arc::new(mem_lu())).unwrap();
    let lu1 = LogicalUnit::new(Arc::new(MemDevice::new(8)), Identity::new(IQN, 1).unwrap());
    t.insert(1, Arc::new(lu1)).unwrap();
    let exec = |lun: u16, cdb: &[u8]| {
        let task = ScsiTask {
            cdb,
            lun: encode_lun(lun).unwrap(),
            expected_data_transfer_length: 4096,
            tpgt: 1,
            nexus: 1,
        };
        let mut buf = BytesMut::new();
        let out = t.execute(&task, &[], &mut buf);
        (out, buf.to_vec())
    };
    let (out, data) = exec(7, &[0xA0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]);
    assert_eq!(out.status, ScsiStatus::Good);
    assert_eq!(&data[..4], &16u32.to_be_bytes());
    assert_eq!(&data[16..18], &[0, 1]);
    let (_, data) = exec(1, &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(&data[..4], &7u32.to_be_bytes());
    let (out, data) = exec(7, &[0x12, 0, 0, 0, 96, 0]);
    assert_eq!(out.status, ScsiStatus::Good);
    assert_eq!(data[0], 0x7F);
    let (out, _) = exec(7, &[0x00, 0, 0, 0, 0, 0]);
    assert_eq!(out.sense.unwrap().asc, Asc::LOGICAL_UNIT_NOT_SUPPORTED);
    let (out, data) = exec(7, &[0x03, 0, 0, 0, 18, 0]);
    assert_eq!(out.status, ScsiStatus::Good);
    assert_eq!((data[2], data[12]), (0x05, 0x25));
}

fn caw_cdb(lba: u64, blocks: u8, flags: u8) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x89;
    c[1] = flags;
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[13] = blocks;
    c
}

#[test]
fn block_limits_consistent_with_accepted_lengths() {
    let lu = mem_lu();
    let r = run(&lu, &[0x12, 1, 0xB0, 0, 255, 0], &[]);
    good(&r);
    let b = &r.data[4..];
    let be32 = |at: usize| u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let max_xfer = be32(4);
    let max_ws = u64::from_be_bytes(b[32..40].try_into().unwrap());
    assert_eq!(b[1], lu.limits().max_compare_and_write_blocks);
    assert!(b[1] > 0);
    // Whatever may be written with WRITE SAME must also be writable and
    // readable with one WRITE(16)/READ(16) (libiscsi WriteSame16.Unmap).
    assert!(max_ws <= u64::from(max_xfer), "{max_ws} > {max_xfer}");
    assert!(be32(8) <= max_xfer);
    let big = Limits {
        max_transfer_blocks: 64,
        max_write_same_blocks: 64,
        ..Limits::default()
    };
    let lu = mem_lu().with_limits(big);
    good(&run(&lu, &cdb16(0x8A, 0, 0, 64), &[0xFF; 64 * 512]));
    good(&run_edtl(&lu, &cdb16(0x93, 0x08, 0, 64), 512, &[0; 512]));
    let r = run(&lu, &cdb16(0x88, 0, 0, 64), &[]);
    good(&r);
    assert!(r.data.iter().all(|&x| x == 0));
    let s = sense_of(&run_edtl(&lu, &cdb16(0x93, 0x08, 0, 65), 512, &[0; 512]));
    assert_eq!(s.asc, Asc::INVALID_FIELD_IN_CDB);
}

#[test]
fn compare_and_write_writes_only_on_match() {
    let lu = mem_lu();
    good(&run(&lu, &cdb16(0x8A, 0, 10, 2), &[b'A'; 1024]));
    // Match: verify 'A', write 'B'.
    let mut d = vec![b'A'; 1024];
    d.extend_from_slice(&[b'B'; 1024]);
    let r = run_edtl(&lu, &caw_cdb(10, 2, 0), 2048, &d);
    good(&r);
    assert_eq!(r.out.data_in_wanted, 0);
    assert!(
        run(&lu, &cdb16(0x88, 0, 10, 2), &[])
            .data
            .iter()
            .all(|&x| x == b'B')
    );
    // Miscompare at byte 700: nothing written, offset in INFORMATION.
    let mut d = vec![b'B'; 2048];
    d[700] = b'Z';
    d[1024..].fill(b'C');
    let s = sense_of(&run_edtl(&lu, &caw_cdb(10, 2, 0x08), 2048, &d));
    assert_eq!(s.key, SenseKey::Miscompare);
    assert_eq!(s.asc, Asc::MISCOMPARE_DURING_VERIFY);
    assert_eq!(s.information, Some(700));
    assert_eq!(&s.to_fixed()[..7], &[0xF0, 0, 0x0E, 0, 0, 0x02, 0xBC]);
    assert!(
        run(&lu, &cdb16(0x88, 0, 10, 2), &[])
            .data
            .iter()
            .all(|&x| x == b'B')
    );
}

#[test]
fn compare_and_write_limits_and_errors() {
    let lu = mem_lu().with_limits(Limits {
        max_compare_and_write_blocks: 4,
        ..Limits::default()
    });
    let s = sense_of(&run_edtl(&lu, &caw_cdb(0, 5, 0), 5 * 1024, &[0; 5 * 1024]));
    assert_eq!(s.asc, Asc::INVALID_FIELD_IN_CDB);
    assert_eq!(s.field_pointer.map(|f| f.byte), Some(13));
    let caw = |c: &[u8], data: &[u8]| run_edtl(&lu, c, data.len() as u32, data);
    good(&caw(&caw_cdb(0, 4, 0), &[0; 4 * 1024]));
    good(&caw(&caw_cdb(0, 0, 0), &[]));
    let s = sense_of(&caw(&caw_cdb(BLOCKS - 1, 2, 0), &[0; 2048]));
    assert_eq!(s.asc, Asc::LBA_OUT_OF_RANGE);
    let s = sense_of(&caw(&caw_cdb(0, 1, 0x20), &[0; 1024]));
    assert_eq!(s.asc, Asc::INVALID_FIELD_IN_CDB);
    // EDTL other than 2 × NUMBER OF LOGICAL BLOCKS (libiscsi sends 256
    // blocks, which wraps to 0 in the CDB; InvalidDataOutSize sends 1 and 3
    // blocks with 4 blocks of data): refused, nothing written.
    for (n, len) in [(0u8, 256 * 1024), (1, 2048), (3, 2048), (2, 2047)] {
        let s = sense_of(&caw(&caw_cdb(0, n, 0), &vec![0; len]));
        assert_eq!(s.asc, Asc::INVALID_FIELD_IN_CDB, "{n} {len}");
        assert_eq!(s.field_pointer.map(|f| f.byte), Some(13));
    }
    assert_eq!(data_out_length(&caw_cdb(0, 3, 0), 512), Ok(3072));
    // Advertised with DPO/FUA usage bits.
    let r = run(
        &lu,
        &[0xA3, 0x0C, 0x01, 0x89, 0, 0, 0, 0, 0xFF, 0xFF, 0, 0],
        &[],
    );
    good(&r);
    assert_eq!(r.data[1] & 7, 3);
    assert_eq!(r.data[5] & 0x18, 0x18);
    assert_eq!(r.data[4 + 13], 0xFF);
}

/// Two threads (two portals) swap a block between their values with
/// COMPARE AND WRITE; atomicity means exactly the successful ones changed
/// it and the final value is the one the last success wrote.
#[test]
fn compare_and_write_is_atomic_across_threads() {
    let lu = Arc::new(mem_lu());
    good(&run(&lu, &cdb16(0x8A, 0, 0, 1), &[0; 512]));
    let rounds = 3000;
    let workers: Vec<_> = (0..2u8)
        .map(|me| {
            let lu = lu.clone();
            std::thread::spawn(move || {
                let mut d = vec![me; 512];
                d.extend_from_slice(&[1 - me; 512]);
                let mut ok = 0u32;
                for _ in 0..rounds {
                    let r = run_as(&lu, u64::from(me) + 1, &caw_cdb(0, 1, 0), 1024, &d);
                    match r.out.status {
                        ScsiStatus::Good => ok += 1,
                        _ => assert_eq!(r.out.sense.unwrap().key, SenseKey::Miscompare),
                    }
                }
                ok
            })
        })
        .collect();
    let oks: Vec<u32> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    // Successes alternate 0→1 (thread 0) and 1→0 (thread 1).
    assert!(oks[0] == oks[1] || oks[0] == oks[1] + 1, "{oks:?}");
    let expect = if oks[0] == oks[1] { 0 } else { 1 };
    let r = run(&lu, &cdb16(0x88, 0, 0, 1), &[]);
    assert!(r.data.iter().all(|&x| x == expect));
}

#[test]
fn write_and_verify_all_sizes() {
    let lu = mem_lu();
    let data: Vec<u8> = (0..4096).map(|i| (i * 7) as u8).collect();
    for (op, c) in [
        (0x2E, cdb10(0x2E, 0x02, 3, 8).to_vec()),
        (0xAE, cdb12(0xAE, 0x12, 3, 8).to_vec()),
        (0x8E, cdb16(0x8E, 0x00, 3, 8).to_vec()),
    ] {
        good(&run(&lu, &cdb16(0x8A, 0, 3, 8), &[0; 4096]));
        let r = run(&lu, &c, &data);
        good(&r);
        assert_eq!(run(&lu, &cdb16(0x88, 0, 3, 8), &[]).data, data, "{op:#x}");
        assert_eq!(data_out_length(&c, 512), Ok(4096));
    }
    good(&run(&lu, &cdb10(0x2E, 0x02, 0, 0), &[]));
    let s = sense_of(&run(&lu, &cdb10(0x2E, 0, BLOCKS as u32 + 1, 0), &[]));
    assert_eq!(s.asc, Asc::LBA_OUT_OF_RANGE);
    let s = sense_of(&run(&lu, &cdb16(0x8E, 0, BLOCKS - 1, 2), &[0; 1024]));
    assert_eq!(s.asc, Asc::LBA_OUT_OF_RANGE);
    for bad in [0x04, 0x06, 0x20, 0xE0] {
        let s = sense_of(&run(&lu, &cdb10(0x2E, bad, 0, 1), &[0; 512]));
        assert_eq!(s.asc, Asc::INVALID_FIELD_IN_CDB, "{bad:#x}");
    }
    let s = sense_of(&run(&lu, &cdb10(0x2E, 0x02, 0, 2), &[0; 512]));
    assert_eq!(s.asc, Asc::INVALID_FIELD_IN_COMMAND_INFORMATION_UNIT);
}

/// A device whose reads return what was written XOR 1 in the first byte:
/// WRITE AND VERIFY with BYTCHK=1 must notice.
#[test]
fn write_and_verify_detects_a_bad_medium() {
    struct Flaky(MemDevice);
    impl BlockDevice for Flaky {
        fn block_size(&self) -> u32 {
            self.0.block_size()
        }
        fn num_blocks(&self) -> u64 {
            self.0.num_blocks()
        }
        fn read_at(&self, off: u64, buf: &mut [u8]) -> io::Result<()> {
            self.0.read_at(off, buf)?;
            if let Some(b) = buf.first_mut() {
                *b ^= 1;
            }
            Ok(())
        }
        fn write_at(&self, off: u64, data: &[u8]) -> io::Result<()> {
            self.0.write_at(off, data)
        }
        fn write_zeroes(&self, off: u64, len: u64) -> io::Result<()> {
            self.0.write_zeroes(off, len)
        }
        fn flush(&self) -> io::Result<()> {
            self.0.flush()
        }
    }
    let lu = lu_with(Arc::new(Flaky(MemDevice::new(BLOCKS))));
    let s = sense_of(&run(&lu, &cdb10(0x2E, 0x02, 0, 1), &[5; 512]));
    assert_eq!(s.key, SenseKey::Miscompare);
    assert_eq!(s.information, Some(0));
    // BYTCHK=0 only checks the medium can be read.
    good(&run(&lu, &cdb10(0x2E, 0x00, 0, 1), &[5; 512]));
}

#[test]
fn orwrite_ors_into_the_medium() {
    let lu = mem_lu();
    good(&run(&lu, &cdb16(0x8A, 0, 0, 2), &[0xA5; 1024]));
    good(&run(&lu, &cdb16(0x8B, 0x08, 0, 2), &[0x5A; 1024]));
    let r = run(&lu, &cdb16(0x88, 0, 0, 2), &[]);
    assert!(r.data.iter().all(|&x| x == 0xFF));
    good(&run(&lu, &cdb16(0x8B, 0, 0, 0), &[]));
    let s = sense_of(&run(&lu, &cdb16(0x8B, 0, u64::MAX, 0), &[]));
    assert_eq!(s.asc, Asc::LBA_OUT_OF_RANGE);
    assert_eq!(data_out_length(&cdb16(0x8B, 0, 0, 3), 512), Ok(1536));
}

#[test]
fn reserve6_conflicts_for_other_nexus() {
    let lu = mem_lu();
    let reserve = [0x16, 0, 0, 0, 0, 0];
    let release = [0x17, 0, 0, 0, 0, 0];
    let mode_sense = [0x1A, 0, 0x3F, 0, 255, 0];
    let as2 = |cdb: &[u8], data: &[u8]| run_as(&lu, 2, cdb, 1 << 20, data).out.status;
    good(&run(&lu, &reserve, &[]));
    good(&run(&lu, &reserve, &[]));
    assert_eq!(as2(&reserve, &[]), ScsiStatus::ReservationConflict);
    assert_eq!(as2(&mode_sense, &[]), ScsiStatus::ReservationConflict);
    assert_eq!(
        as2(&cdb10(0x28, 0, 0, 1), &[]),
        ScsiStatus::ReservationConflict
    );
    assert_eq!(
        as2(&cdb10(0x2A, 0, 0, 1), &[1; 512]),
        ScsiStatus::ReservationConflict
    );
    assert_eq!(as2(&[0x00; 6], &[]), ScsiStatus::ReservationConflict);
    // Allowed from anyone: INQUIRY, REQUEST SENSE, REPORT LUNS, RELEASE.
    assert_eq!(as2(&[0x12, 0, 0, 0, 96, 0], &[]), ScsiStatus::Good);
    assert_eq!(as2(&[0x03, 0, 0, 0, 18, 0], &[]), ScsiStatus::Good);
    assert_eq!(
        as2(&[0xA0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0], &[]),
        ScsiStatus::Good
    );
    assert_eq!(as2(&release, &[]), ScsiStatus::Good);
    // ...which did not release the holder's reservation.
    assert_eq!(as2(&mode_sense, &[]), ScsiStatus::ReservationConflict);
    good(&run(&lu, &mode_sense, &[]));
    good(&run(&lu, &cdb10(0x2A, 0, 0, 1), &[1; 512]));
    good(&run(&lu, &release, &[]));
    assert_eq!(as2(&reserve, &[]), ScsiStatus::Good);
    assert_eq!(as2(&release, &[]), ScsiStatus::Good);
}

#[test]
fn reserve6_released_by_nexus_loss_and_reset() {
    let mut t = LunTable::new();
    t.insert(0, Arc::new(mem_lu())).unwrap();
    let exec = |nexus: u64, cdb: &[u8]| {
        let task = ScsiTask {
            cdb,
            lun: 0,
            expected_data_transfer_length: 0,
            tpgt: 1,
            nexus,
        };
        t.execute(&task, &[], &mut BytesMut::new()).status
    };
    let reserve = [0x16, 0, 0, 0, 0, 0];
    assert_eq!(exec(7, &reserve), ScsiStatus::Good);
    assert_eq!(exec(8, &reserve), ScsiStatus::ReservationConflict);
    t.nexus_lost(8);
    assert_eq!(exec(8, &reserve), ScsiStatus::ReservationConflict);
    t.nexus_lost(7);
    assert_eq!(exec(8, &reserve), ScsiStatus::Good);
    assert_eq!(exec(7, &[0x00; 6]), ScsiStatus::ReservationConflict);
    t.reset_lun(encode_lun(0).unwrap());
    assert_eq!(exec(7, &reserve), ScsiStatus::Good);
    t.reset_all();
    assert_eq!(exec(8, &[0x00; 6]), ScsiStatus::Good);
}
