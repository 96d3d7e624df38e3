//! Fuzz persistent reservations (SPC-4 §5.9): the PERSISTENT RESERVE OUT parameter-list and
//! TransportID parsers on raw bytes, and a unit driven by a sequence of PR IN/OUT commands
//! from four I_T nexuses (two initiators, two ISIDs, two target ports). Never a panic; after
//! every command the state is consistent: READ KEYS lists one key per registration, a
//! reservation's holder is registered, and the APTPL form decodes to the same state.
//!
//! Input: records of [session/direction byte, service action, type, length, parameter list].
#![no_main]

use libfuzzer_sys::fuzz_target;
use scsi::cdb::opcode;
use scsi::persistent_reservation::{
    InitiatorPort, NexusPort, PersistentReservations, PrState, parse_prout,
    parse_register_and_move, parse_transport_id, prin,
};
use scsi::reservation::Access;

fuzz_target!(|input: &[u8]| {
    let _ = parse_transport_id(input, 0);
    let _ = parse_register_and_move(input);
    for sa in 0..8 {
        let _ = parse_prout(sa, input);
    }

    let pr = PersistentReservations::new();
    for s in 0..4u64 {
        let name = if s & 1 == 0 { "iqn.f:a" } else { "iqn.f:b" };
        pr.nexus_port(
            s,
            NexusPort {
                initiator: InitiatorPort::new(name, [0x40, 0, 0, 0, 0, (s >> 1) as u8]),
                tpgt: 1 + (s as u16 >> 1),
            },
        );
    }
    let mut rest = input;
    while let [sel, sa, ty, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (data, next) = tail.split_at(n);
        rest = next;
        let session = u64::from(sel & 3);
        let tpgt = 1 + (session as u16 >> 1);
        if sel & 4 != 0 {
            if let Ok(d) = pr.reserve_in(sa & 0x1F) {
                assert!(d.len() >= 8 || (sa & 0x1F) == prin::REPORT_CAPABILITIES);
            }
        } else {
            let _ = pr.reserve_out(session, tpgt, sa & 0x1F, ty >> 4, ty & 0x0F, data);
        }
        for s in 0..4u64 {
            let t = 1 + (s as u16 >> 1);
            let _ = pr.conflicts(s, t, Access::Write);
            let _ = pr.conflicts(s, t, Access::Read);
            let _ = pr.unit_attention(s, t, opcode::READ_10);
        }
        let st = pr.state();
        let keys = pr.reserve_in(prin::READ_KEYS).expect("READ KEYS");
        let len = u32::from_be_bytes([keys[4], keys[5], keys[6], keys[7]]) as usize;
        assert_eq!(len, 8 * st.registrations.len());
        assert_eq!(keys.len(), 8 + len);
        let full = pr
            .reserve_in(prin::READ_FULL_STATUS)
            .expect("READ FULL STATUS");
        let flen = u32::from_be_bytes([full[4], full[5], full[6], full[7]]) as usize;
        assert_eq!(full.len(), 8 + flen);
        let back = PrState::decode(&st.encode()).expect("encoded state decodes");
        assert_eq!(back, PrState { aptpl: true, ..st });
    }
});
