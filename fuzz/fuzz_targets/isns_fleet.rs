//! Fuzz the fleet view's reading of DevAttrQry answers (`isns::fleet::Fleet::add`, what
//! `portshift status --isns` does with a server's answers): arbitrary bytes as a DevAttrQryRsp
//! payload, decoded, then read; attributes in any order or with any value must not panic, and
//! every deleted pair listed must be a portal of the target's entity.
#![no_main]

use isns::fleet::Fleet;
use isns_proto::{FunctionId, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let response = FunctionId::DEV_ATTR_QRY.response();
    let mut fleet = Fleet::default();
    let Ok(m) = Message::decode(response, Default::default(), 0, data) else {
        return;
    };
    let _ = fleet.add(&m);
    // The same answer twice (the four queries' answers add up).
    let _ = fleet.add(&m);
    for (target, portal) in fleet.deleted() {
        assert!(
            fleet.entities.iter().any(|e| {
                e.portals.contains(&portal) && e.nodes.iter().any(|n| n.name == target)
            })
        );
    }
});
