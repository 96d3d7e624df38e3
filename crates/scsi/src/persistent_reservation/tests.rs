use super::*;
use crate::cdb::opcode;
use crate::client::{parse_read_keys, parse_read_reservation, prout_parameters};

/// Sessions 1, 2, 3: initiators a, b, c through portal group 1.
fn unit() -> PersistentReservations {
    let pr = PersistentReservations::new();
    for (s, name) in [(1, "iqn.a"), (2, "iqn.b"), (3, "iqn.c")] {
        pr.nexus_port(s, port(name, 1));
    }
    pr
}

fn port(name: &str, tpgt: u16) -> NexusPort {
    NexusPort {
        initiator: InitiatorPort::new(name, [0x40, 0, 0, 0, 0, 1]),
        tpgt,
    }
}

fn out(pr: &PersistentReservations, s: u64, sa: u8, ty: u8, key: u64, sa_key: u64) -> PrResult {
    pr.reserve_out(
        s,
        1,
        sa,
        0,
        ty,
        &prout_parameters(key, sa_key, false, false),
    )
}

fn ok(r: PrResult) {
    assert_eq!(r, Ok(PrOutcome::Good(Vec::new())));
}

fn keys(pr: &PersistentReservations) -> Vec<u64> {
    parse_read_keys(&pr.reserve_in(prin::READ_KEYS).unwrap())
        .unwrap()
        .1
}

fn reservation(pr: &PersistentReservations) -> Option<(u64, u8)> {
    parse_read_reservation(&pr.reserve_in(prin::READ_RESERVATION).unwrap())
        .unwrap()
        .1
}

fn ua(pr: &PersistentReservations, s: u64) -> Option<Asc> {
    pr.unit_attention(s, 1, opcode::READ_10).map(|s| s.asc)
}

#[test]
fn register_changes_and_removes_keys_with_generation() {
    let pr = unit();
    ok(out(&pr, 1, prout::REGISTER, 0, 0, 0xA));
    ok(out(&pr, 2, prout::REGISTER, 0, 0, 0xB));
    assert_eq!(keys(&pr), vec![0xA, 0xB]);
    // Wrong key for a registered nexus, any key for an unregistered one.
    assert_eq!(
        out(&pr, 1, prout::REGISTER, 0, 0x9, 0xC),
        Ok(PrOutcome::Conflict)
    );
    assert_eq!(
        out(&pr, 3, prout::REGISTER, 0, 0x9, 0xC),
        Ok(PrOutcome::Conflict)
    );
    ok(out(&pr, 1, prout::REGISTER, 0, 0xA, 0xC));
    ok(out(
        &pr,
        2,
        prout::REGISTER_AND_IGNORE_EXISTING_KEY,
        0,
        0x77,
        0xD,
    ));
    ok(out(&pr, 2, prout::REGISTER, 0, 0xD, 0));
    assert_eq!(keys(&pr), vec![0xC]);
    let (generation, _) = parse_read_keys(&pr.reserve_in(prin::READ_KEYS).unwrap()).unwrap();
    assert_eq!(generation, 5);
}

/// For each type: who may read and write (SPC-4 table 52).
#[test]
fn conflicts_per_type() {
    use crate::reservation::Access::{Read, Write};
    // (type, holder r/w, other registrant r/w, non-registrant r/w): true = allowed.
    let table = [
        (1, [true, true], [true, false], [true, false]),
        (3, [true, true], [false, false], [false, false]),
        (5, [true, true], [true, true], [true, false]),
        (6, [true, true], [true, true], [false, false]),
        (7, [true, true], [true, true], [true, false]),
        (8, [true, true], [true, true], [false, false]),
    ];
    for (ty, holder, registrant, other) in table {
        let pr = unit();
        ok(out(&pr, 1, prout::REGISTER, 0, 0, 0xA));
        ok(out(&pr, 2, prout::REGISTER, 0, 0, 0xB));
        ok(out(&pr, 1, prout::RESERVE, ty, 0xA, 0));
        for (s, want) in [(1, holder), (2, registrant), (3, other)] {
            let got = [!pr.conflicts(s, 1, Read), !pr.conflicts(s, 1, Write)];
            assert_eq!(got, want, "type {ty}, session {s}");
        }
        let res = reservation(&pr).unwrap();
        assert_eq!(res, (if ty >= 7 { 0 } else { 0xA }, ty));
        // A second RESERVE of another type conflicts; the same is GOOD.
        assert_eq!(
            out(&pr, 2, prout::RESERVE, 3, 0xB, 0),
            Ok(PrOutcome::Conflict)
        );
        ok(out(&pr, 1, prout::RESERVE, ty, 0xA, 0));
    }
}

#[test]
fn reserve_needs_registration_and_valid_type() {
    let pr = unit();
    assert_eq!(
        out(&pr, 1, prout::RESERVE, 1, 0, 0),
        Ok(PrOutcome::Conflict)
    );
    ok(out(&pr, 1, prout::REGISTER, 0, 0, 0xA));
    let e = out(&pr, 1, prout::RESERVE, 2, 0xA, 0).unwrap_err();
    assert_eq!(e.asc, Asc::INVALID_FIELD_IN_CDB);
    let e = pr
        .reserve_out(
            1,
            1,
            prout::RESERVE,
            1,
            1,
            &prout_parameters(0xA, 0, false, false),
        )
        .unwrap_err();
    assert_eq!(e.asc, Asc::INVALID_FIELD_IN_CDB, "scope other than LU");
}

#[test]
fn release_by_holder_tells_registrants_of_ro_types() {
    let pr = unit();
    ok(out(&pr, 1, prout::REGISTER, 0, 0, 0xA));
    ok(out(&pr, 2, prout::REGISTER, 0, 0, 0xB));
    ok(out(&pr, 1, prout::RESERVE, 5, 0xA, 0));
    // Non-holder release: GOOD, nothing happens.
    ok(out(&pr, 2, prout::RELEASE, 5, 0xB, 0));
    assert!(reservation(&pr).is_some());
    let e = out(&pr, 1, prout::RELEASE, 1, 0xA, 0).unwrap_err();
    assert_eq!(e.asc, INVALID_RELEASE_OF_PERSISTENT_RESERVATION);
    ok(out(&pr, 1, prout::RELEASE, 5, 0xA, 0));
    assert_eq!(reservation(&pr), None);
    assert_eq!(ua(&pr, 2), Some(RESERVATIONS_RELEASED));
    assert_eq!(ua(&pr, 2), None, "reported once");
    assert_eq!(ua(&pr, 1), None, "not to the releasing nexus");
}

#[test]
fn unregistering_holder_releases() {
    let pr = unit();
    ok(out(&pr, 1, prout::REGISTER, 0, 0, 0xA));
    ok(out(&pr, 1, prout::RESERVE, 1, 0xA, 0));
    ok(out(&pr, 1, prout::REGISTER, 0, 0xA, 0));
    assert_eq!(reservation(&pr), None);
    // All registrants: kept until the last registrant leaves.
    ok(out(&pr, 1, prout::REGISTER, 0, 0, 0xA));
    ok(out(&pr, 2, prout::REGISTER, 0, 0, 0xB));
    ok(out(&pr, 1, prout::RESERVE, 7, 0xA, 0));
    ok(out(&pr, 1, prout::REGISTER, 0, 0xA, 0));
    assert_eq!(reservation(&pr), Some((0, 7)));
    ok(out(&pr, 2, prout::REGISTER, 0, 0xB, 0));
    assert_eq!(reservation(&pr), None);
}

/// Found by the `scsi_pr` fuzz target: an all-registrants reservation outlived the registration
/// recorded as its holder, and its APTPL form no longer decoded ("the holder is not
/// registered"), so a restart would have lost every registration.
#[test]
fn all_registrants_reservation_outlives_its_first_holder_in_the_aptpl_form() {
    // The holder unregisters, and the holder's key is preempted.
    for leave in [0, 1] {
        let pr = unit();
        ok(out(&pr, 1, prout::REGISTER, 0, 0, 0xA));
        ok(out(&pr, 2, prout::REGISTER, 0, 0, 0xB));
        ok(out(&pr, 1, prout::RESERVE, 7, 0xA, 0));
        if leave == 0 {
            ok(out(&pr, 1, prout::REGISTER, 0, 0xA, 0));
        } else {
            ok(out(&pr, 2, prout::PREEMPT, 7, 0xB, 0xA));
        }
        assert_eq!(keys(&pr), vec![0xB]);
        assert_eq!(reservation(&pr), Some((0, 7)));
        let st = pr.state();
        let back = PrState::decode(&st.encode()).expect("the APTPL form decodes");
        assert_eq!(back.registrations, st.registrations);
        assert_eq!(back.reservation, st.reservation);
    }
}

#[test]
fn clear_removes_everything_and_tells_others() {
    let pr = unit();
    ok(out(&pr, 1, prout::REGISTER, 0, 0, 0xA));
    ok(out(&pr, 2, prout::REGISTER, 0, 0, 0xB));
    ok(out(&pr, 1, prout::RESERVE, 3, 0xA, 0));
    assert_eq!(out(&pr, 3, prout::CLEAR, 0, 0, 0), Ok(PrOutcome::Conflict));
    ok(out(&pr, 2, prout::CLEAR, 0, 0xB, 0));
    assert!(keys(&pr).is_empty());
    assert_eq!(reservation(&pr), None);
    assert_eq!(ua(&pr, 1), Some(RESERVATIONS_PREEMPTED));
    assert_eq!(ua(&pr, 2), None);
}

#[test]
fn preempt_takes_the_reservation_and_removes_the_holder() {
    for sa in [prout::PREEMPT, prout::PREEMPT_AND_ABORT] {
        let pr = unit();
        ok(out(&pr, 1, prout::REGISTER, 0, 0, 0xA));
        ok(out(&pr, 2, prout::REGISTER, 0, 0, 0xB));
        ok(out(&pr, 1, prout::RESERVE, 1, 0xA, 0));
        ok(out(&pr, 2, sa, 3, 0xB, 0xA));
        assert_eq!(keys(&pr), vec![0xB]);
        assert_eq!(reservation(&pr), Some((0xB, 3)));
        assert_eq!(ua(&pr, 1), Some(REGISTRATIONS_PREEMPTED));
        assert!(pr.conflicts(1, 1, crate::reservation::Access::Read));
        // A key nobody holds: conflict; key 0 while a single holder: invalid.
        assert_eq!(out(&pr, 2, sa, 3, 0xB, 0x99), Ok(PrOutcome::Conflict));
        let e = out(&pr, 2, sa, 3, 0xB, 0).unwrap_err();
        assert_eq!(e.asc, Asc::INVALID_FIELD_IN_PARAMETER_LIST);
    }
}

#[test]
fn preempt_without_reservation_removes_registrations() {
    let pr = unit();
    ok(out(&pr, 1, prout::REGISTER, 0, 0, 0xA));
    ok(out(&pr, 2, prout::REGISTER, 0, 0, 0xB));
    ok(out(&pr, 3, prout::REGISTER, 0, 0, 0xB));
    ok(out(&pr, 1, prout::PREEMPT, 1, 0xA, 0xB));
    assert_eq!(keys(&pr), vec![0xA]);
    assert_eq!(reservation(&pr), None);
    assert_eq!(ua(&pr, 2), Some(REGISTRATIONS_PREEMPTED));
    assert_eq!(ua(&pr, 3), Some(REGISTRATIONS_PREEMPTED));
}

#[test]
fn preempt_all_registrants_with_zero_key() {
    let pr = unit();
    ok(out(&pr, 1, prout::REGISTER, 0, 0, 0xA));
    ok(out(&pr, 2, prout::REGISTER, 0, 0, 0xB));
    ok(out(&pr, 1, prout::RESERVE, 8, 0xA, 0));
    ok(out(&pr, 2, prout::PREEMPT, 1, 0xB, 0));
    assert_eq!(keys(&pr), vec![0xB]);
    assert_eq!(reservation(&pr), Some((0xB, 1)));
}

#[test]
fn register_and_move_hands_the_reservation_over() {
    let pr = unit();
    ok(out(&pr, 1, prout::REGISTER, 0, 0, 0xA));
    ok(out(&pr, 1, prout::RESERVE, 1, 0xA, 0));
    let b = port("iqn.b", 1);
    let tid = b.initiator.transport_id();
    let mut p = vec![0u8; 24];
    p[0..8].copy_from_slice(&0xAu64.to_be_bytes());
    p[8..16].copy_from_slice(&0xBu64.to_be_bytes());
    p[17] = 0x02; // UNREG
    p[18..20].copy_from_slice(&relative_target_port(1).to_be_bytes());
    p[20..24].copy_from_slice(&(tid.len() as u32).to_be_bytes());
    p.extend_from_slice(&tid);
    ok(pr.reserve_out(1, 1, prout::REGISTER_AND_MOVE, 0, 1, &p));
    assert_eq!(keys(&pr), vec![0xB]);
    assert_eq!(reservation(&pr), Some((0xB, 1)));
    assert!(!pr.conflicts(2, 1, crate::reservation::Access::Write));
    assert!(pr.conflicts(1, 1, crate::reservation::Access::Write));
}

#[test]
fn spec_i_pt_registers_the_named_ports() {
    let pr = unit();
    let c = port("iqn.c", 1).initiator.transport_id();
    let mut p = prout_parameters(0, 0xA, false, false).to_vec();
    p[20] |= 0x08;
    p.extend_from_slice(&(c.len() as u32).to_be_bytes());
    p.extend_from_slice(&c);
    ok(pr.reserve_out(1, 1, prout::REGISTER, 0, 0, &p));
    assert_eq!(keys(&pr), vec![0xA, 0xA]);
    assert!(pr.is_registered(3, 1));
    // SPEC_I_PT from a registered nexus is refused.
    p[0..8].copy_from_slice(&0xAu64.to_be_bytes());
    let e = pr.reserve_out(1, 1, prout::REGISTER, 0, 0, &p).unwrap_err();
    assert_eq!(e.asc, Asc::INVALID_FIELD_IN_PARAMETER_LIST);
}

#[test]
fn all_tg_pt_registration_follows_every_target_port() {
    let pr = unit();
    pr.nexus_port(9, port("iqn.a", 2));
    ok(pr.reserve_out(
        1,
        1,
        prout::REGISTER,
        0,
        0,
        &prout_parameters(0, 0xA, true, false),
    ));
    assert!(pr.is_registered(9, 2));
    // Without ALL_TG_PT the other target port is another nexus.
    let pr = unit();
    pr.nexus_port(9, port("iqn.a", 2));
    ok(out(&pr, 1, prout::REGISTER, 0, 0, 0xA));
    assert!(!pr.is_registered(9, 2));
}

#[test]
fn a_new_session_of_the_same_port_is_the_same_nexus() {
    let pr = unit();
    ok(out(&pr, 1, prout::REGISTER, 0, 0, 0xA));
    ok(out(&pr, 1, prout::RESERVE, 1, 0xA, 0));
    pr.nexus_lost(1);
    pr.nexus_port(42, port("iqn.a", 1));
    assert!(!pr.conflicts(42, 1, crate::reservation::Access::Write));
    assert!(pr.conflicts(2, 1, crate::reservation::Access::Write));
    // The same name with another ISID is another initiator port.
    pr.nexus_port(
        43,
        NexusPort {
            initiator: InitiatorPort::new("iqn.a", [0x40, 0, 0, 0, 0, 2]),
            tpgt: 1,
        },
    );
    assert!(pr.conflicts(43, 1, crate::reservation::Access::Write));
}

#[test]
fn parameter_list_errors() {
    let pr = unit();
    let e = pr
        .reserve_out(1, 1, prout::REGISTER, 0, 0, &[0; 20])
        .unwrap_err();
    assert_eq!(e.asc, Asc::PARAMETER_LIST_LENGTH_ERROR);
    let e = pr
        .reserve_out(1, 1, prout::REGISTER, 0, 0, &[0; 28])
        .unwrap_err();
    assert_eq!(e.asc, Asc::PARAMETER_LIST_LENGTH_ERROR);
    let mut p = prout_parameters(0, 0xA, true, false);
    let e = pr.reserve_out(1, 1, prout::RESERVE, 0, 1, &p).unwrap_err();
    assert_eq!(e.asc, Asc::INVALID_FIELD_IN_PARAMETER_LIST, "ALL_TG_PT");
    p[20] = 0x01;
    let e = pr.reserve_out(1, 1, prout::REGISTER, 0, 0, &p).unwrap_err();
    assert_eq!(
        e.asc,
        Asc::INVALID_FIELD_IN_PARAMETER_LIST,
        "APTPL without a store"
    );
    let e = pr.reserve_out(1, 1, 0x1F, 0, 0, &p).unwrap_err();
    assert_eq!(e.asc, Asc::INVALID_FIELD_IN_CDB);
    assert!(pr.reserve_in(9).is_err());
}

#[test]
fn transport_ids_parse_both_formats() {
    let a = InitiatorPort::new("iqn.2000-01.x:A", [0x40, 1, 2, 3, 4, 5]);
    let tid = a.transport_id();
    let (id, n) = parse_transport_id(&tid, 0).unwrap();
    assert_eq!(n, tid.len());
    assert_eq!(id.name, "iqn.2000-01.x:a");
    assert_eq!(id.isid, Some([0x40, 1, 2, 3, 4, 5]));
    assert!(id.matches(&a));
    let mut f0 = vec![0x05, 0, 0, 20];
    f0.extend_from_slice(b"iqn.2000-01.x:a\0\0\0\0\0");
    let (id, _) = parse_transport_id(&f0, 0).unwrap();
    assert_eq!(id.isid, None);
    assert!(id.matches(&a));
    f0[0] = 0x04; // not iSCSI
    assert!(parse_transport_id(&f0, 0).is_err());
    // Found by the scsi_pr fuzz target: a name with a space was kept and broke the APTPL
    // file's line. Spaces, control characters and commas are no part of an iSCSI name.
    for bad in [
        &b"iqn.x y\0\0\0\0\0\0\0\0\0"[..],
        b"iqn.x\ty\0",
        b"iqn.x,y\0",
    ] {
        let mut f = vec![0x05, 0, 0, 12];
        f.extend_from_slice(&bad[..bad.len().min(12)]);
        f.resize(16, 0);
        let e = parse_transport_id(&f, 0).unwrap_err();
        assert_eq!(e.asc, Asc::INVALID_FIELD_IN_PARAMETER_LIST, "{bad:?}");
    }
}

#[test]
fn full_status_and_capabilities() {
    let pr = unit();
    ok(out(&pr, 1, prout::REGISTER, 0, 0, 0xA));
    ok(out(&pr, 1, prout::RESERVE, 1, 0xA, 0));
    let d = pr.reserve_in(prin::READ_FULL_STATUS).unwrap();
    let len = u32::from_be_bytes(d[4..8].try_into().unwrap()) as usize;
    assert_eq!(d.len(), 8 + len);
    assert_eq!(u64::from_be_bytes(d[8..16].try_into().unwrap()), 0xA);
    assert_eq!(d[20], 0x01, "R_HOLDER");
    assert_eq!(d[21], 1);
    let tid = &d[32..];
    assert_eq!(
        parse_transport_id(tid, 0).unwrap().0.name,
        "iqn.a",
        "TransportID of the registrant"
    );
    let c = pr.reserve_in(prin::REPORT_CAPABILITIES).unwrap();
    assert_eq!(c.len(), 8);
    assert_eq!(c[2] & 0x01, 0, "no APTPL without a store");
}

#[derive(Debug, Default)]
struct MemStore(Mutex<Vec<u8>>);

impl PrStore for MemStore {
    fn save(&self, bytes: &[u8]) -> io::Result<()> {
        *self.0.lock().unwrap() = bytes.to_vec();
        Ok(())
    }
}

#[test]
fn aptpl_state_round_trips_through_the_store() {
    let store = Arc::new(MemStore::default());
    let pr = PersistentReservations::with_store(store.clone(), &[]).unwrap();
    pr.nexus_port(1, port("iqn.a", 1));
    ok(pr.reserve_out(
        1,
        1,
        prout::REGISTER,
        0,
        0,
        &prout_parameters(0, 0xA, false, true),
    ));
    ok(out(&pr, 1, prout::RESERVE, 1, 0xA, 0));
    let saved = store.0.lock().unwrap().clone();
    let again = PersistentReservations::with_store(store.clone(), &saved).unwrap();
    assert_eq!(again.state(), pr.state());
    again.nexus_port(5, port("iqn.a", 1));
    again.nexus_port(6, port("iqn.b", 1));
    assert!(!again.conflicts(5, 1, crate::reservation::Access::Write));
    assert!(again.conflicts(6, 1, crate::reservation::Access::Write));
    // APTPL cleared: the store is emptied.
    ok(pr.reserve_out(
        1,
        1,
        prout::REGISTER,
        0,
        0,
        &prout_parameters(0xA, 0xA, false, false),
    ));
    assert!(store.0.lock().unwrap().is_empty());
    assert!(PrState::decode(b"garbage").is_err());
    assert!(PrState::decode(b"portshift-pr 1\nreservation 1 000a 1 400000000001 iqn.x\n").is_err());
}
