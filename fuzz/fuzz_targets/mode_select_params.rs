//! Fuzz the MODE SELECT (6/10) parameter list parser (SPC-4 §6.9, §6.10) through a logical
//! unit: byte 0 picks MODE SELECT (6) or (10) and whether the parameter list length is the
//! input's or a mangled one; the rest is the parameter list. It must never panic, a list the
//! parser refuses must change nothing, and MODE SENSE must still answer afterwards.
#![no_main]

use std::sync::Arc;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use scsi::mode_select::{self, ModeSelect};
use scsi::{Identity, LogicalUnit, MemDevice, ScsiStatus, ScsiTask};

fuzz_target!(|input: &[u8]| {
    let Some((&ctl, data)) = input.split_first() else {
        return;
    };
    let lu = LogicalUnit::new(
        Arc::new(MemDevice::new(64)),
        Identity::new("iqn.2024-01.fuzz:mode", 0).unwrap(),
    );
    let ten = ctl & 1 != 0;
    let len = if ctl & 2 != 0 {
        u16::from(ctl >> 2)
    } else {
        data.len()
            .min(if ten { usize::from(u16::MAX) } else { 255 }) as u16
    };
    let cdb = ModeSelect {
        ten,
        pf: true,
        sp: false,
        param_len: len,
    };
    let parsed = mode_select::parse(&cdb, data, lu.num_blocks(), lu.block_size(), lu.mode());
    let mut c = [0u8; 16];
    if ten {
        c[..10].copy_from_slice(&[0x55, 0x10, 0, 0, 0, 0, 0, 0, 0, 0]);
        c[7..9].copy_from_slice(&len.to_be_bytes());
    } else {
        c[..6].copy_from_slice(&[0x15, 0x10, 0, 0, len as u8, 0]);
    }
    let run = |cdb: &[u8], out: &[u8]| {
        let task = ScsiTask {
            cdb,
            lun: 0,
            expected_data_transfer_length: 255,
            tpgt: 1,
            nexus: 1,
        };
        lu.execute(&task, out, &mut BytesMut::new())
    };
    let before = (
        lu.mode().write_cache_enabled(),
        lu.mode().software_write_protect(),
    );
    let out = run(&c, data);
    if parsed.is_err() {
        assert_eq!(out.status, ScsiStatus::CheckCondition);
        let after = (
            lu.mode().write_cache_enabled(),
            lu.mode().software_write_protect(),
        );
        assert_eq!(before, after, "a refused list changed the mode parameters");
    }
    let sense = run(&[0x1A, 0, 0x3F, 0, 255, 0], &[]);
    assert_eq!(sense.status, ScsiStatus::Good);
});
