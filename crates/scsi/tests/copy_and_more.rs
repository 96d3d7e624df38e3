//! EXTENDED COPY / RECEIVE COPY RESULTS between units of one target, READ DEFECT DATA,
//! WRITE ATOMIC (16) and the physical block exponent, through LunTable as the target runs
//! them.

use std::sync::Arc;

use bytes::BytesMut;
use scsi::*;

const IQN: &str = "iqn.2024-01.org.portshift:copy";

fn table(units: u16) -> LunTable {
    let mut t = LunTable::new();
    for lun in 0..units {
        let lu = LogicalUnit::new(
            Arc::new(MemDevice::new(4096)),
            Identity::new(IQN, lun).unwrap(),
        );
        t.insert(lun, Arc::new(lu)).unwrap();
    }
    t
}

fn run(t: &LunTable, lun: u16, cdb: &[u8], data_out: &[u8]) -> (ScsiOutcome, Vec<u8>) {
    let task = ScsiTask {
        cdb,
        lun: encode_lun(lun).unwrap(),
        expected_data_transfer_length: if data_out.is_empty() {
            1 << 24
        } else {
            data_out.len() as u32
        },
        tpgt: 1,
        nexus: 7,
    };
    let mut buf = BytesMut::new();
    let out = t.execute(&task, data_out, &mut buf);
    (out, buf.to_vec())
}

fn good(r: &(ScsiOutcome, Vec<u8>)) -> Vec<u8> {
    assert_eq!(r.0.status, ScsiStatus::Good, "{:?}", r.0.sense);
    r.1.clone()
}

fn sense(r: &(ScsiOutcome, Vec<u8>)) -> Sense {
    assert_eq!(r.0.status, ScsiStatus::CheckCondition);
    r.0.sense.unwrap()
}

fn write16(lba: u64, blocks: u32) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x8A;
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[10..14].copy_from_slice(&blocks.to_be_bytes());
    c
}

fn read16(lba: u64, blocks: u32) -> [u8; 16] {
    let mut c = write16(lba, blocks);
    c[0] = 0x88;
    c
}

fn xcopy_cdb(len: usize) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x83;
    c[10..14].copy_from_slice(&(len as u32).to_be_bytes());
    c
}

fn rcr_cdb(sa: u8, list_id: u8) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x84;
    c[1] = sa;
    c[2] = list_id;
    c[10..14].copy_from_slice(&1024u32.to_be_bytes());
    c
}

/// The NAA designator of LUN `lun`, as an initiator reads it from VPD page 83h.
fn naa(t: &LunTable, lun: u16) -> [u8; 8] {
    let page = good(&run(t, lun, &[0x12, 1, 0x83, 0, 255, 0], &[]));
    assert_eq!(&page[4..8], &[0x01, 0x03, 0x00, 0x08]);
    page[8..16].try_into().unwrap()
}

/// A LID1 list: CSCDs naming `cscds`, block to block segments (src, dst, blocks, src
/// lba, dst lba), LIST ID USAGE 00b (hold).
fn list(list_id: u8, cscds: &[[u8; 8]], segs: &[(u16, u16, u16, u64, u64)]) -> Vec<u8> {
    let mut b = vec![0u8; 16];
    b[0] = list_id;
    b[2..4].copy_from_slice(&((32 * cscds.len()) as u16).to_be_bytes());
    b[8..12].copy_from_slice(&((28 * segs.len()) as u32).to_be_bytes());
    for n in cscds {
        let mut c = [0u8; 32];
        c[0] = 0xE4;
        c[4] = 0x01;
        c[5] = 0x03;
        c[7] = 8;
        c[8..16].copy_from_slice(n);
        c[29..32].copy_from_slice(&[0, 2, 0]);
        b.extend_from_slice(&c);
    }
    for &(src, dst, blocks, sl, dl) in segs {
        let mut s = [0u8; 28];
        s[0] = 0x02;
        s[2..4].copy_from_slice(&24u16.to_be_bytes());
        s[4..6].copy_from_slice(&src.to_be_bytes());
        s[6..8].copy_from_slice(&dst.to_be_bytes());
        s[10..12].copy_from_slice(&blocks.to_be_bytes());
        s[12..20].copy_from_slice(&sl.to_be_bytes());
        s[20..28].copy_from_slice(&dl.to_be_bytes());
        b.extend_from_slice(&s);
    }
    b
}

#[test]
fn extended_copy_between_units_of_the_target_and_its_status() {
    let t = table(2);
    let (a, b) = (naa(&t, 0), naa(&t, 1));
    let pattern: Vec<u8> = (0..3000 * 512u32).map(|i| (i % 251) as u8).collect();
    good(&run(&t, 0, &write16(10, 3000), &pattern));
    // Before any copy, list 5 has no status.
    let s = sense(&run(&t, 0, &rcr_cdb(0, 5), &[]));
    assert_eq!(s.asc, Asc::INVALID_FIELD_IN_CDB);
    // LUN 0 blocks 10.. to LUN 1 block 100.., and within LUN 0 to block 3500.
    let l = list(5, &[a, b], &[(0, 1, 3000, 10, 100), (0, 0, 16, 10, 3500)]);
    good(&run(&t, 0, &xcopy_cdb(l.len()), &l));
    assert!(
        good(&run(&t, 1, &read16(100, 3000), &[])) == pattern,
        "LUN 1 holds the copy"
    );
    assert!(good(&run(&t, 0, &read16(3500, 16), &[])) == pattern[..16 * 512]);
    // COPY STATUS: completed, two segments, the bytes moved; retrieved once.
    let st = good(&run(&t, 0, &rcr_cdb(0, 5), &[]));
    assert_eq!(&st[0..4], &8u32.to_be_bytes());
    assert_eq!(st[4], 0);
    assert_eq!(&st[5..7], &2u16.to_be_bytes());
    assert_eq!(st[7], 0);
    assert_eq!(&st[8..12], &(3016u32 * 512).to_be_bytes());
    assert!(run(&t, 0, &rcr_cdb(0, 5), &[]).0.sense.is_some());
    // OPERATING PARAMETERS.
    let op = good(&run(&t, 0, &rcr_cdb(3, 0), &[]));
    assert_eq!(&op[8..10], &4u16.to_be_bytes());
    assert_eq!(&op[44..46], &[0x02, 0xE4]);
}

#[test]
fn extended_copy_errors() {
    let t = table(1);
    let a = naa(&t, 0);
    // An empty list copies nothing.
    good(&run(&t, 0, &xcopy_cdb(0), &[]));
    // A designator no unit has: COPY ABORTED, UNREACHABLE COPY TARGET.
    let l = list(1, &[[0x3F; 8]], &[(0, 0, 1, 0, 1)]);
    let s = sense(&run(&t, 0, &xcopy_cdb(l.len()), &l));
    assert_eq!(
        (s.key, s.asc),
        (SenseKey::CopyAborted, Asc::new(0x08, 0x04))
    );
    // A destination index past the CSCD list.
    let l = list(1, &[a], &[(0, 1, 1, 0, 1)]);
    let s = sense(&run(&t, 0, &xcopy_cdb(l.len()), &l));
    assert_eq!(s.key, SenseKey::CopyAborted);
    // Past the end of the unit: COPY ABORTED, nothing written.
    let l = list(1, &[a], &[(0, 0, 2048, 0, 4095)]);
    let s = sense(&run(&t, 0, &xcopy_cdb(l.len()), &l));
    assert_eq!(s.key, SenseKey::CopyAborted);
    // A list shorter than the CDB says.
    let l = list(1, &[a], &[(0, 0, 1, 0, 1)]);
    let s = sense(&run(&t, 0, &xcopy_cdb(l.len()), &l[..l.len() - 1]));
    assert_eq!(s.key, SenseKey::IllegalRequest);
    // LID4 is not supported.
    let mut c = xcopy_cdb(0);
    c[1] = 0x01;
    assert_eq!(sense(&run(&t, 0, &c, &[])).asc, Asc::INVALID_FIELD_IN_CDB);
}

#[test]
fn third_party_copy_vpd_page_is_listed() {
    let t = table(1);
    let pages = good(&run(&t, 0, &[0x12, 1, 0x00, 0, 255, 0], &[]));
    assert!(pages[4..].contains(&0x8F));
    let p = good(&run(&t, 0, &[0x12, 1, 0x8F, 0x04, 0, 0], &[]));
    assert_eq!(p[1], 0x8F);
    assert_eq!(usize::from(u16::from_be_bytes([p[2], p[3]])), p.len() - 4);
    // First descriptor: Supported Commands with EXTENDED COPY and RECEIVE COPY RESULTS.
    assert_eq!(&p[4..6], &[0, 1]);
    assert_eq!(&p[9..16], &[0x83, 1, 0x00, 0x84, 2, 0x00, 0x03]);
}

#[test]
fn read_defect_data_is_an_empty_list() {
    let t = table(1);
    let d = good(&run(&t, 0, &[0x37, 0, 0x18, 0, 0, 0, 0, 0, 32, 0], &[]));
    assert_eq!(d, vec![0, 0x18, 0, 0]);
    let d = good(&run(
        &t,
        0,
        &[0xB7, 0x0B, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0],
        &[],
    ));
    assert_eq!(d, vec![0, 0x0B, 0, 0, 0, 0, 0, 0]);
    // Truncated by the allocation length.
    let d = good(&run(&t, 0, &[0x37, 0, 0x18, 0, 0, 0, 0, 0, 2, 0], &[]));
    assert_eq!(d.len(), 2);
}

#[test]
fn write_atomic_16_writes_within_its_limits() {
    let t = table(1);
    let bl = good(&run(&t, 0, &[0x12, 1, 0xB0, 0, 255, 0], &[]));
    let max = u32::from_be_bytes(bl[44..48].try_into().unwrap());
    assert_eq!(max, 256);
    assert_eq!(&bl[48..56], &[0, 0, 0, 1, 0, 0, 0, 1]);
    let atomic = |lba: u64, blocks: u16| {
        let mut c = [0u8; 16];
        c[0] = 0x9C;
        c[2..10].copy_from_slice(&lba.to_be_bytes());
        c[12..14].copy_from_slice(&blocks.to_be_bytes());
        c
    };
    let data = vec![0xC3; 256 * 512];
    good(&run(&t, 0, &atomic(4096 - 256, 256), &data));
    assert!(good(&run(&t, 0, &read16(4096 - 256, 256), &[])) == data);
    // 0 blocks at the end is fine; past it is out of range; more than the maximum is not.
    good(&run(&t, 0, &atomic(4096, 0), &[]));
    assert_eq!(
        sense(&run(&t, 0, &atomic(4097, 0), &[])).asc,
        Asc::LBA_OUT_OF_RANGE
    );
    assert_eq!(
        sense(&run(&t, 0, &atomic(0, 257), &vec![0; 257 * 512])).asc,
        Asc::INVALID_FIELD_IN_CDB
    );
}

#[test]
fn physical_block_exponent_in_read_capacity_16() {
    let lu = LogicalUnit::new(
        Arc::new(MemDevice::new(4096)),
        Identity::new(IQN, 0).unwrap(),
    );
    let lu = lu.with_physical_block_size(4096).unwrap();
    let mut t = LunTable::new();
    t.insert(0, Arc::new(lu)).unwrap();
    let mut c = [0u8; 16];
    c[0] = 0x9E;
    c[1] = 0x10;
    c[13] = 32;
    let rc = good(&run(&t, 0, &c, &[]));
    assert_eq!(&rc[8..12], &512u32.to_be_bytes());
    assert_eq!(rc[13] & 0x0F, 3, "8 logical blocks per physical block");
    assert_eq!(rc[14] & 0x3F, 0, "lowest aligned LBA 0");
    let lu = LogicalUnit::new(Arc::new(MemDevice::new(8)), Identity::new(IQN, 0).unwrap());
    assert!(lu.with_physical_block_size(1000).is_err());
}

#[test]
fn sanitize_block_erase_deallocates_a_file_unit() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Arc::new(FileDevice::open(&dir.path().join("erase.img"), Some(4 << 20)).unwrap());
    let mut t = LunTable::new();
    let lu = LogicalUnit::new(dev, Identity::new(IQN, 0).unwrap());
    t.insert(0, Arc::new(lu)).unwrap();
    let lba_status = |t: &LunTable, lba: u64| {
        let mut c = [0u8; 16];
        c[0] = 0x9E;
        c[1] = 0x12;
        c[2..10].copy_from_slice(&lba.to_be_bytes());
        c[13] = 24;
        let d = good(&run(t, 0, &c, &[]));
        let count = u32::from_be_bytes(d[16..20].try_into().unwrap());
        (count, d[20])
    };
    good(&run(&t, 0, &write16(0, 256), &[0x61; 256 * 512]));
    assert_eq!(lba_status(&t, 0).1, 0, "written blocks are mapped");
    let erase = [0x48, 0x02, 0, 0, 0, 0, 0, 0, 0, 0];
    // A parameter list is not allowed with BLOCK ERASE; other service actions are refused.
    let mut bad = erase;
    bad[8] = 8;
    assert_eq!(
        sense(&run(&t, 0, &bad, &[0; 8])).asc,
        Asc::INVALID_FIELD_IN_CDB
    );
    bad = erase;
    bad[1] = 0x01;
    assert_eq!(sense(&run(&t, 0, &bad, &[])).asc, Asc::INVALID_FIELD_IN_CDB);
    good(&run(&t, 0, &erase, &[]));
    assert!(
        good(&run(&t, 0, &read16(0, 256), &[]))
            .iter()
            .all(|&b| b == 0)
    );
    assert_eq!(
        lba_status(&t, 0),
        (8192, 1),
        "the whole unit is deallocated"
    );
    // WABEREQ = 01b in the Block Device Characteristics page.
    let bdc = good(&run(&t, 0, &[0x12, 1, 0xB1, 0, 255, 0], &[]));
    assert_eq!(bdc[7] >> 6, 1);
}
