//! Properties of persistent reservations (SPC-4 §5.9) through a logical unit: any sequence of
//! PERSISTENT RESERVE OUT commands (valid or not) from three I_T nexuses ends each command with
//! GOOD, RESERVATION CONFLICT or CHECK CONDITION ILLEGAL REQUEST (never a panic), and the state
//! stays consistent with what READ KEYS and READ RESERVATION report and with who may write.

use std::sync::Arc;

use bytes::BytesMut;
use proptest::prelude::*;
use scsi::client::{
    parse_read_keys, parse_read_reservation, persistent_reserve_in, persistent_reserve_out,
    prout_parameters, write16,
};
use scsi::persistent_reservation::{InitiatorPort, NexusPort, prin};
use scsi::*;

fn unit() -> LunTable {
    let mut t = LunTable::new();
    let lu = LogicalUnit::new(
        Arc::new(MemDevice::new(64)),
        Identity::new("iqn.p:t", 0).unwrap(),
    );
    t.insert(0, Arc::new(lu)).unwrap();
    for s in 1..=3u64 {
        t.nexus_established(s);
        t.nexus_port(
            s,
            NexusPort {
                initiator: InitiatorPort::new(&format!("iqn.p:i{s}"), [0x40, 0, 0, 0, 0, 1]),
                tpgt: 1,
            },
        );
    }
    t
}

fn run(t: &LunTable, nexus: u64, cdb: &[u8], data_out: &[u8], edtl: u32) -> (ScsiOutcome, Vec<u8>) {
    let task = ScsiTask {
        cdb,
        lun: 0,
        expected_data_transfer_length: edtl,
        tpgt: 1,
        nexus,
    };
    let mut buf = BytesMut::new();
    let out = t.execute(&task, data_out, &mut buf);
    (out, buf.to_vec())
}

#[derive(Debug, Clone)]
struct Op {
    nexus: u64,
    sa: u8,
    ty: u8,
    key: u64,
    sa_key: u64,
    flags: u8,
    garbage: Option<Vec<u8>>,
}

fn op() -> impl Strategy<Value = Op> {
    (
        1u64..=3,
        0u8..9,
        prop_oneof![
            Just(1u8),
            Just(3),
            Just(5),
            Just(6),
            Just(7),
            Just(8),
            any::<u8>()
        ],
        prop_oneof![Just(0u64), 1u64..4],
        prop_oneof![Just(0u64), 1u64..4],
        prop_oneof![Just(0u8), Just(1), Just(4), any::<u8>()],
        prop::option::weighted(0.1, prop::collection::vec(any::<u8>(), 0..64)),
    )
        .prop_map(|(nexus, sa, ty, key, sa_key, flags, garbage)| Op {
            nexus,
            sa,
            ty,
            key,
            sa_key,
            flags,
            garbage,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn any_sequence_keeps_a_consistent_state(ops in prop::collection::vec(op(), 1..24)) {
        let t = unit();
        for o in ops {
            let data = o.garbage.clone().unwrap_or_else(|| {
                let mut p = prout_parameters(o.key, o.sa_key, false, false);
                p[20] = o.flags & !0x08; // no SPEC_I_PT without TransportIDs
                p.to_vec()
            });
            let cdb = persistent_reserve_out(o.sa, o.ty, data.len() as u32);
            let (out, _) = run(&t, o.nexus, &cdb, &data, data.len() as u32);
            match out.status {
                ScsiStatus::Good | ScsiStatus::ReservationConflict => {}
                ScsiStatus::CheckCondition => {
                    let s = out.sense.unwrap();
                    // A unit attention for this nexus from an earlier PR change, or a refusal.
                    prop_assert!(
                        matches!(s.key, SenseKey::IllegalRequest | SenseKey::UnitAttention),
                        "{s:?}"
                    );
                }
                other => prop_assert!(false, "status {other:?}"),
            }
            // Each nexus reads the state (consuming its unit attentions first).
            for n in 1..=3u64 {
                let mut keys = None;
                for _ in 0..8 {
                    let (o, d) = run(&t, n, &persistent_reserve_in(prin::READ_KEYS, 4096), &[], 4096);
                    if o.status == ScsiStatus::Good {
                        keys = parse_read_keys(&d);
                        break;
                    }
                }
                let (_, keys) = keys.expect("READ KEYS answers once unit attentions are reported");
                let (o, d) = run(&t, n, &persistent_reserve_in(prin::READ_RESERVATION, 4096), &[], 4096);
                prop_assert_eq!(o.status, ScsiStatus::Good);
                let (_, res) = parse_read_reservation(&d).unwrap();
                if let Some((key, ty)) = res {
                    prop_assert!([1, 3, 5, 6, 7, 8].contains(&ty));
                    prop_assert!(key == 0 || keys.contains(&key), "holder key {key} not registered");
                    prop_assert!(!keys.is_empty());
                }
                // With no reservation every nexus may write.
                let (w, _) = run(&t, n, &write16(0, 1), &[0u8; 512], 512);
                if res.is_none() {
                    prop_assert_eq!(w.status, ScsiStatus::Good);
                }
            }
        }
    }
}

/// A unit added to a live table learns the ports of the sessions already logged in, so a
/// registration made there belongs to the session's I_T nexus, not to the session.
#[test]
fn a_unit_added_later_knows_the_live_nexuses() {
    let mut t = unit();
    let lu = LogicalUnit::new(
        Arc::new(MemDevice::new(64)),
        Identity::new("iqn.p:t", 1).unwrap(),
    );
    t.insert(1, Arc::new(lu)).unwrap();
    let data = prout_parameters(0, 0xA, false, false);
    let task = ScsiTask {
        cdb: &persistent_reserve_out(0, 0, 24),
        lun: encode_lun(1).unwrap(),
        expected_data_transfer_length: 24,
        tpgt: 1,
        nexus: 1,
    };
    let out = t.execute(&task, &data, &mut BytesMut::new());
    assert_eq!(out.status, ScsiStatus::Good);
    // The same initiator port in a new session (after a move) holds the registration.
    t.nexus_lost(1);
    t.nexus_port(
        9,
        NexusPort {
            initiator: InitiatorPort::new("iqn.p:i1", [0x40, 0, 0, 0, 0, 1]),
            tpgt: 1,
        },
    );
    assert!(t.holds_reservation(9));
    assert!(!t.holds_reservation(2));
}
