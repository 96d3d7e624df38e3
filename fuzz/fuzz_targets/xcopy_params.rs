//! Fuzz the EXTENDED COPY (LID1) parameter list parser (SPC-4 §6.4.3) and the copy itself:
//! arbitrary bytes are parsed, then sent as the parameter list of an EXTENDED COPY to a
//! target of two small in-memory units. It must never panic, and a list the parser refuses
//! must be refused by the unit with CHECK CONDITION.
#![no_main]

use std::sync::Arc;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use scsi::{Identity, LogicalUnit, LunTable, MemDevice, ScsiStatus, ScsiTask, xcopy};

fuzz_target!(|data: &[u8]| {
    let parsed = xcopy::parse_lid1(data);
    let mut table = LunTable::new();
    for lun in 0..2u16 {
        let lu = LogicalUnit::new(
            Arc::new(MemDevice::new(64)),
            Identity::new("iqn.2024-01.fuzz:xcopy", lun).unwrap(),
        );
        table.insert(lun, Arc::new(lu)).unwrap();
    }
    let mut cdb = [0u8; 16];
    cdb[0] = 0x83;
    cdb[10..14].copy_from_slice(&(data.len() as u32).to_be_bytes());
    let task = ScsiTask {
        cdb: &cdb,
        lun: 0,
        expected_data_transfer_length: data.len() as u32,
        tpgt: 1,
        nexus: 1,
    };
    let out = table.execute(&task, data, &mut BytesMut::new());
    if parsed.is_err() {
        assert_eq!(out.status, ScsiStatus::CheckCondition);
    }
});
