use std::time::Duration;
use portshift_sim::{Discovery, InitiatorConfig, World, WorldConfig};
#[test]
fn dbg() {
    let mut w = World::new(WorldConfig::two_portals(&["iqn.t"], Some("sessions:3"), Duration::from_secs(5)));
    for i in 1..=3 { let mut c = InitiatorConfig::new(&format!("iqn.i{i}"), "iqn.t", Discovery::Isns); c.lba_base = i*100; w.add_initiator(c); }
    for _ in 0..4 { w.step(); for i in &w.initiators { println!("{:?} {:?} {:?} {:?} done={} out={} err={:?}", w.clock.elapsed(), i.portal(), i.state(), i.logins, i.completed.len(), i.outstanding(), i.errors);} }
    println!("{:?}", w.events());
}
