//! READs from a file LUN lend the mapped medium (scsi::data_in): the view holds exactly what a
//! copying READ returns, is cut to the EDTL, and a failed READ lends nothing; while a view's
//! range is held (as the transport holds it while its `writev` copies the view), an
//! overlapping WRITE waits, and one elsewhere does not.

use std::sync::Arc;

use bytes::BytesMut;
use scsi::*;

const IQN: &str = "iqn.2024-01.org.portshift:lent";

fn read10(lba: u32, blocks: u16) -> [u8; 10] {
    let l = lba.to_be_bytes();
    let b = blocks.to_be_bytes();
    [0x28, 0, l[0], l[1], l[2], l[3], 0, b[0], b[1], 0]
}

fn task(cdb: &[u8], edtl: u32) -> ScsiTask<'_> {
    ScsiTask {
        cdb,
        lun: 0,
        expected_data_transfer_length: edtl,
        tpgt: 1,
        nexus: 1,
    }
}

fn file_lu(dir: &std::path::Path) -> LogicalUnit {
    let dev = FileDevice::open(&dir.join("lun.img"), Some(1 << 20)).unwrap();
    let lu = LogicalUnit::new(Arc::new(dev), Identity::new(IQN, 0).unwrap());
    let pattern: Vec<u8> = (0..64 * 1024u32).map(|i| (i % 251) as u8).collect();
    let cdb = [0x2a, 0, 0, 0, 0, 16, 0, 0, 128, 0]; // WRITE(10) LBA 16, 128 blocks
    let out = lu.execute(
        &task(&cdb, pattern.len() as u32),
        &pattern,
        &mut BytesMut::new(),
    );
    assert_eq!(out.status, ScsiStatus::Good);
    lu
}

#[test]
fn a_lent_read_holds_what_a_copied_read_returns() {
    let dir = tempfile::tempdir().unwrap();
    let lu = file_lu(dir.path());
    let cdb = read10(16, 128);
    let mut copied = BytesMut::new();
    let a = lu.execute(&task(&cdb, 65536), &[], &mut copied);
    let mut lent = LendingDataIn::new(BytesMut::new(), true);
    let b = lu.execute(&task(&cdb, 65536), &[], &mut lent);
    assert_eq!(a, b);
    assert!(lent.buf.is_empty(), "nothing copied into the buffer");
    let view = lent.view.expect("the file LUN lent its pages").data;
    assert_eq!(view.len(), 65536);
    assert_eq!(&view[..], &copied[..]);
    assert_eq!(view[1], 1);
}

#[test]
fn a_lent_read_is_cut_to_the_edtl_and_not_lent_when_lending_is_off() {
    let dir = tempfile::tempdir().unwrap();
    let lu = file_lu(dir.path());
    let cdb = read10(16, 8);
    let mut lent = LendingDataIn::new(BytesMut::new(), true);
    let out = lu.execute(&task(&cdb, 1000), &[], &mut lent);
    assert_eq!(out.status, ScsiStatus::Good);
    assert_eq!(out.data_in_len, 1000);
    assert_eq!(lent.view.as_ref().map(|v| v.data.len()), Some(1000));

    let mut copy = LendingDataIn::new(BytesMut::new(), false);
    lu.execute(&task(&cdb, 4096), &[], &mut copy);
    assert!(copy.view.is_none());
    assert_eq!(copy.buf.len(), 4096);
}

#[test]
fn a_failed_read_lends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let lu = file_lu(dir.path());
    // 1 MiB = 2048 blocks: LBA 2047 + 2 blocks is out of range.
    let cdb = read10(2047, 2);
    let mut lent = LendingDataIn::new(BytesMut::new(), true);
    let out = lu.execute(&task(&cdb, 1024), &[], &mut lent);
    assert_eq!(out.status, ScsiStatus::CheckCondition);
    assert!(lent.view.is_none() && lent.buf.is_empty());
}

/// WRITE(10) of `blocks` blocks of `byte` at `lba` on its own thread; the receiver gets the
/// status once it is done.
fn write_on_thread(
    lu: &Arc<LogicalUnit>,
    lba: u32,
    blocks: u16,
    byte: u8,
) -> std::sync::mpsc::Receiver<ScsiStatus> {
    let (tx, rx) = std::sync::mpsc::channel();
    let lu = lu.clone();
    std::thread::spawn(move || {
        let l = lba.to_be_bytes();
        let b = blocks.to_be_bytes();
        let cdb = [0x2a, 0, l[0], l[1], l[2], l[3], 0, b[0], b[1], 0];
        let data = vec![byte; usize::from(blocks) * 512];
        let out = lu.execute(&task(&cdb, data.len() as u32), &data, &mut BytesMut::new());
        let _ = tx.send(out.status);
    });
    rx
}

#[test]
fn a_held_view_keeps_an_overlapping_write_out_until_released() {
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let lu = Arc::new(file_lu(dir.path()));
    let mut lent = LendingDataIn::new(BytesMut::new(), true);
    lu.execute(&task(&read10(16, 8), 4096), &[], &mut lent);
    let view = lent.view.expect("lent");
    let before = view.data.to_vec();
    let held = view.hold();

    // Blocks 20..24 overlap the view (16..24): the write waits.
    let overlapping = write_on_thread(&lu, 20, 4, 0xee);
    assert!(
        overlapping
            .recv_timeout(Duration::from_millis(300))
            .is_err(),
        "a WRITE overlapping a held view went ahead"
    );
    assert_eq!(&view.data[..], &before[..], "the view changed while held");
    // Far away (another stripe: 256-block chunks): it does not wait.
    let elsewhere = write_on_thread(&lu, 4 * 256, 1, 0x11);
    assert_eq!(
        elsewhere.recv_timeout(Duration::from_secs(10)),
        Ok(ScsiStatus::Good),
        "a WRITE elsewhere waited for the view"
    );

    drop(held);
    assert_eq!(
        overlapping.recv_timeout(Duration::from_secs(10)),
        Ok(ScsiStatus::Good),
        "the WRITE did not go ahead once the view was released"
    );
    // The view is the page cache: it shows the write now.
    assert!(view.data[4 * 512..].iter().all(|&b| b == 0xee));
}
