//! Property: any CDB, EDTL and data-out either succeeds or yields a
//! well-formed CHECK CONDITION; never a panic, never data past the EDTL.

use std::sync::Arc;

use bytes::BytesMut;
use proptest::prelude::*;
use scsi::*;

fn known_opcode() -> impl Strategy<Value = u8> {
    prop::sample::select(vec![
        0x00u8, 0x03, 0x08, 0x0A, 0x12, 0x16, 0x17, 0x1A, 0x1B, 0x1E, 0x25, 0x28, 0x2A, 0x2F, 0x34,
        0x35, 0x41, 0x42, 0x5A, 0x5E, 0x5F, 0x88, 0x8A, 0x8F, 0x90, 0x91, 0x93, 0x9E, 0xA0, 0xA3,
        0xA8, 0xAA, 0xAF, 0x15, 0x55, 0x37, 0xB7, 0x9C, 0x83, 0x84, 0x48,
    ])
}

fn cdb() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![known_opcode(), any::<u8>()],
        prop::collection::vec(any::<u8>(), 0..20),
        // Small numbers in the length/LBA bytes make in-range I/O likely.
        prop::collection::vec(prop_oneof![Just(0u8), 0u8..4, any::<u8>()], 15),
        any::<bool>(),
    )
        .prop_map(|(op, raw, small, use_small)| {
            let mut c = vec![op];
            c.extend(if use_small { small } else { raw });
            c
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, .. ProptestConfig::default() })]

    #[test]
    fn never_panics(cdb in cdb(), edtl in prop_oneof![0u32..4096, any::<u32>()],
                    data_out in prop::collection::vec(any::<u8>(), 0..2048),
                    lun in prop_oneof![Just(0u64), any::<u64>()]) {
        let mut table = LunTable::new();
        let lu = LogicalUnit::new(Arc::new(MemDevice::new(64)), Identity::new("iqn.p:t", 0).unwrap())
            .with_limits(Limits { max_transfer_blocks: 16, ..Limits::default() });
        table.insert(0, Arc::new(lu)).unwrap();
        let task = ScsiTask { cdb: &cdb, lun, expected_data_transfer_length: edtl, tpgt: 1, nexus: 1 };
        let mut buf = BytesMut::new();
        let out = table.execute(&task, &data_out, &mut buf);
        prop_assert_eq!(out.data_in_len as usize, buf.len());
        prop_assert!(out.data_in_len <= edtl);
        match out.status {
            ScsiStatus::Good => prop_assert!(out.sense.is_none()),
            ScsiStatus::CheckCondition => {
                let s = out.sense.expect("sense with CHECK CONDITION");
                prop_assert_eq!(buf.len(), 0);
                let f = s.to_fixed();
                prop_assert_eq!(f[0] & 0x7F, 0x70);
                prop_assert_eq!(usize::from(f[7]) + 8, f.len());
                prop_assert!(f[2] <= 0x0F);
                let d = s.to_descriptor();
                prop_assert_eq!(usize::from(d[7]) + 8, d.len());
            }
            other => prop_assert!(false, "unexpected status {:?}", other),
        }
        let _ = table.data_out_length(lun, &cdb);
        let _ = scsi::cdb::parse(&cdb);
    }
}
