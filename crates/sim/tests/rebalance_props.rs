//! Random arrivals, departures and loads against the whole rebalance, with the invariants
//! checked after every step of the world (see `portshift_sim::audit::Auditor`): no command
//! lost or executed twice across moves, no target without a registered portal, no initiator
//! moved twice within the cooldown, every logout request matched by a completed move or a
//! stated reason. The totals across cases must show moves, restores and redirects happened.

use std::time::Duration;

use portshift_sim::audit::Auditor;
use portshift_sim::{Discovery, InitiatorConfig, World, WorldConfig};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

const TARGETS: [&str; 2] = ["iqn.2024-01.sim:a", "iqn.2024-01.sim:b"];
const RUN: Duration = Duration::from_secs(20);

#[derive(Debug, Clone)]
struct Plan {
    join_ms: u64,
    leave_ms: Option<u64>,
    /// Milliseconds between commands; `None`: idle.
    interval_ms: Option<u64>,
    stock: bool,
    target: usize,
    /// Commands per burst, and how many of them the session puts on the wire.
    depth: (usize, usize),
}

#[derive(Debug, Clone)]
struct Scenario {
    spec: String,
    cooldown_ms: u64,
    targets: usize,
    portals: u8,
    latency_us: u64,
    plans: Vec<Plan>,
}

fn plan() -> impl Strategy<Value = Plan> {
    (
        0u64..12_000,
        prop::option::weighted(0.4, 2_000u64..15_000),
        prop::option::weighted(0.85, 50u64..400),
        prop::bool::weighted(0.25),
        0usize..2,
        (1usize..17, 1usize..3),
    )
        .prop_map(|(join_ms, leave, interval_ms, stock, target, depth)| Plan {
            join_ms,
            leave_ms: leave.map(|d| join_ms + d),
            interval_ms,
            stock,
            target,
            depth,
        })
}

fn scenario() -> impl Strategy<Value = Scenario> {
    let spec = prop_oneof![
        (2u32..5).prop_map(|h| format!("sessions:{h}")),
        (40u32..160).prop_map(|h| format!("iops:{h}")),
        // Two metrics combined: any at high overloads, all at low restore.
        (2u32..5, 40u32..160).prop_map(|(s, i)| format!("sessions:{s} iops:{i}")),
    ];
    (
        spec,
        1_000u64..6_000,
        (1usize..3, 2u8..4),
        prop_oneof![Just(0u64), 500u64..8_000],
        prop::collection::vec(plan(), 2..7),
    )
        .prop_map(
            |(spec, cooldown_ms, (targets, portals), latency_us, plans)| Scenario {
                spec,
                cooldown_ms,
                targets,
                portals,
                latency_us,
                plans,
            },
        )
}

#[derive(Debug, Default)]
struct Totals {
    moves: u64,
    restores: u64,
    redirects: u64,
    left: u64,
    reissued: u64,
    commands: u64,
}

fn run(s: &Scenario, totals: &mut Totals) -> Result<(), String> {
    let targets = &TARGETS[..s.targets];
    let cooldown = Duration::from_millis(s.cooldown_ms);
    let mut config = WorldConfig::portals(s.portals, targets, Some(&s.spec), cooldown);
    config.latency = Duration::from_micros(s.latency_us);
    let mut w = World::new(config);
    let p0 = w.portal_address(0);
    let start = w.clock.now();
    for p in &s.plans {
        w.wake_at(start + Duration::from_millis(p.join_ms));
        if let Some(l) = p.leave_ms {
            w.wake_at(start + Duration::from_millis(l));
        }
    }
    // Logout by time2logout (2 s), then a login: well within 8 s.
    let mut audit = Auditor::new(s.cooldown_ms, 8_000);
    let mut joined = vec![None; s.plans.len()];
    while w.clock.elapsed() < RUN {
        let now_ms = w.clock.elapsed().as_millis() as u64;
        for (k, p) in s.plans.iter().enumerate() {
            if joined[k].is_none() && p.join_ms <= now_ms {
                let target = targets[p.target % targets.len()];
                let discovery = if p.stock {
                    Discovery::Fixed(p0)
                } else {
                    Discovery::Isns
                };
                let mut c = InitiatorConfig::new(&format!("iqn.p{k}"), target, discovery);
                c.interval = p.interval_ms.map(Duration::from_millis);
                c.lba_base = k as u64 * 64;
                c.lba_span = 32;
                c.verify = false;
                c.burst = p.depth.0;
                c.queue_depth = p.depth.0;
                c.session_depth = p.depth.1;
                joined[k] = Some(w.add_initiator(c));
            }
            if let (Some(i), Some(l)) = (joined[k], p.leave_ms)
                && l <= now_ms
                && !w.initiators[i].is_leaving()
            {
                w.initiators[i].leave();
            }
        }
        w.step();
        audit.check(&mut w)?;
    }
    for i in &mut w.initiators {
        i.leave();
    }
    let limit = w.clock.elapsed() + Duration::from_secs(10);
    while !w.initiators.iter().all(|i| i.is_done()) {
        if w.clock.elapsed() > limit {
            return Err("initiators did not all log out".into());
        }
        w.step();
        audit.check(&mut w)?;
    }
    w.audit_exactly_once()?;
    if audit.open_requests() > 0 {
        return Err(format!(
            "{} logout requests never resolved",
            audit.open_requests()
        ));
    }
    if let Some(i) = w.initiators.iter().find(|i| i.failed.is_some()) {
        return Err(format!("{} failed: {:?}", i.name(), i.failed));
    }
    totals.moves += audit.moves;
    totals.restores += audit.restores;
    totals.redirects += audit.redirects;
    totals.left += audit.left;
    totals.reissued += w.initiators.iter().map(|i| i.reissued).sum::<u64>();
    totals.commands += w
        .initiators
        .iter()
        .map(|i| i.completed.len() as u64)
        .sum::<u64>();
    Ok(())
}

#[test]
fn invariants_hold_through_random_arrivals_departures_and_loads() {
    let config = Config {
        cases: 16,
        failure_persistence: None,
        ..Config::default()
    };
    let rng = TestRng::deterministic_rng(RngAlgorithm::ChaCha);
    let mut runner = TestRunner::new_with_rng(config, rng);
    let totals = std::cell::RefCell::new(Totals::default());
    let result = runner.run(&scenario(), |s| {
        run(&s, &mut totals.borrow_mut()).map_err(TestCaseError::fail)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let t = totals.into_inner();
    eprintln!("{t:?}");
    assert!(t.moves >= 10, "too few moves to mean anything: {t:?}");
    assert!(t.restores >= 5, "too few restores: {t:?}");
    assert!(t.redirects >= 1, "no stock initiator was redirected: {t:?}");
    assert!(t.commands >= 5_000, "too little I/O: {t:?}");
    assert!(t.reissued >= 5, "too few re-issued commands: {t:?}");
}
