//! The balancer policy over time: a simulated target whose configuration table evolves between
//! steps. The shell's part is played by the test: decisions are carried out (registrations
//! deleted and restored, sometimes failing; moved sessions log in again at their destination
//! after a delay), initiators arrive through a registered portal and depart, loads change. After
//! every step the invariants of the procedure are checked, and at the end every load falls to
//! zero and every deleted registration must come back. The counters at the end make sure the
//! cases really moved sessions and restored registrations.
//!
//! Each case balances on one or two metrics of sessions, IOPS, link bandwidth (portals with
//! unequal link capacities) and processor demand; the checks are made in raw units from the
//! simulated sessions: a move leaves a portal at or above some HIGH, lands where every metric
//! stays under its HIGH, and a restore happens only with every metric at or below its LOW.

use std::cell::Cell;
use std::collections::{BTreeSet, HashMap};

use balancer::{
    BalancePolicy, BalanceSpec, Balancer, ConfigTable, Decision, Metric, PortalId, PortalLoad,
    PortalRow, Projection, SessionEntry, Share,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// One simulated interval.
#[derive(Debug, Clone)]
struct Tick {
    /// Time since the previous step.
    advance_ms: u64,
    /// New initiators: (target index, which of the target's registered portals, load).
    arrivals: Vec<(usize, usize, Load)>,
    /// Sessions that leave (index into the live sessions, modulo their number).
    departures: Vec<usize>,
    /// A session whose load changes: (index, new load).
    reload: Option<(usize, Load)>,
    /// Steps a moved initiator takes to log in at its destination (0: before the next step).
    obey_after: u8,
    /// Whether iSNS refuses the registration changes of this step.
    fail_delete: bool,
    fail_restore: bool,
}

/// A session's load: IOPS, bytes per second read and written, processor cost (of one CPU).
#[derive(Debug, Clone, Copy, Default)]
struct Load {
    iops: f64,
    read_bps: f64,
    write_bps: f64,
    cpu: f64,
}

fn load() -> impl Strategy<Value = Load> {
    (0u16..1_000, 0u16..400, 0u16..200, 0u8..40).prop_map(|(iops, r, w, c)| Load {
        iops: f64::from(iops),
        read_bps: f64::from(r),
        write_bps: f64::from(w),
        cpu: f64::from(c) / 100.0,
    })
}

/// Link capacity of portal `p` (bytes per second each way): unequal links.
fn capacity(p: PortalId) -> f64 {
    [1_000.0, 3_000.0, 1_500.0][usize::from(p.0) % 3]
}

#[derive(Debug, Clone)]
struct Case {
    specs: Vec<BalanceSpec>,
    cooldown_ms: u64,
    portals: u16,
    /// Per target, the bit mask of the portals serving it (never empty).
    served: Vec<u8>,
    ticks: Vec<Tick>,
}

fn tick() -> impl Strategy<Value = Tick> {
    (
        200u64..3_000,
        proptest::collection::vec((0usize..3, 0usize..3, load()), 0..4),
        proptest::collection::vec(0usize..64, 0..2),
        proptest::option::of((0usize..64, load())),
        0u8..3,
        0u8..8,
        0u8..8,
    )
        .prop_map(
            |(advance_ms, arrivals, departures, reload, obey_after, fd, fr)| Tick {
                advance_ms,
                arrivals,
                departures,
                reload,
                obey_after,
                fail_delete: fd == 0,
                fail_restore: fr == 0,
            },
        )
}

fn spec() -> impl Strategy<Value = BalanceSpec> {
    prop_oneof![
        (1u8..5).prop_map(|h| BalanceSpec::new(Metric::Sessions, f64::from(h), f64::from(h - 1))),
        (500u16..3_000).prop_map(|h| BalanceSpec::new(
            Metric::Iops,
            f64::from(h),
            f64::from(h) / 2.0
        )),
        (30u8..95).prop_map(|h| BalanceSpec::new(
            Metric::Bandwidth,
            f64::from(h) / 100.0,
            f64::from(h) / 200.0
        )),
        (40u8..150).prop_map(|h| BalanceSpec::new(
            Metric::Cpu,
            f64::from(h) / 100.0,
            f64::from(h) / 200.0
        )),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    let specs = proptest::collection::vec(spec(), 1..3).prop_map(|mut v| {
        // One spec per metric.
        v.dedup_by_key(|s| s.metric);
        v
    });
    (2u16..=3, specs, 0u64..6_000).prop_flat_map(|(portals, specs, cooldown_ms)| {
        let all = (1u8 << portals) - 1;
        (
            proptest::collection::vec(prop_oneof![3 => Just(all), 1 => 1u8..=all], 3),
            proptest::collection::vec(tick(), 1..50),
        )
            .prop_map(move |(served, ticks)| Case {
                specs: specs.clone(),
                cooldown_ms,
                portals,
                served,
                ticks,
            })
    })
}

#[derive(Debug, Clone)]
struct Session {
    id: u64,
    initiator: String,
    target: String,
    portal: PortalId,
    login_ms: u64,
    load: Load,
}

/// A move the policy decided and the initiator has not carried out yet.
#[derive(Debug, Clone)]
struct InFlight {
    session_id: u64,
    to: PortalId,
    share: Share,
    due_step: usize,
}

/// How much the cases exercised.
#[derive(Debug, Default)]
struct Counts {
    moves: Cell<usize>,
    moved_again: Cell<usize>,
    deletes: Cell<usize>,
    restores: Cell<usize>,
    failed_changes: Cell<usize>,
    /// A step at which a moved initiator within its cooldown sat on an overloaded portal.
    cooldown_tested: Cell<usize>,
    /// Moves off a portal overloaded on link bandwidth, on its processor, and in a case that
    /// combines two metrics.
    bandwidth_moves: Cell<usize>,
    cpu_moves: Cell<usize>,
    combined_moves: Cell<usize>,
}

fn bump(c: &Cell<usize>) {
    c.set(c.get() + 1);
}

struct Sim {
    specs: Vec<BalanceSpec>,
    cooldown_ms: u64,
    portals: Vec<PortalId>,
    targets: Vec<String>,
    served: BTreeSet<(String, PortalId)>,
    /// (target, portal) registrations as iSNS has them.
    registered: BTreeSet<(String, PortalId)>,
    /// When each registration was deleted, and whether a restore of it failed since.
    deleted_at: HashMap<(String, PortalId), (u64, bool)>,
    sessions: Vec<Session>,
    in_flight: Vec<InFlight>,
    last_moved: HashMap<(String, String), u64>,
    /// When each (initiator, target) was last moved, and the portal it left.
    last_left: HashMap<(String, String), (u64, PortalId)>,
    moved_ever: BTreeSet<(String, String)>,
    next_id: u64,
    now: u64,
    step: usize,
}

impl Sim {
    fn new(c: &Case) -> Self {
        let portals: Vec<PortalId> = (0..c.portals).map(PortalId).collect();
        let targets: Vec<String> = (0..3).map(|t| format!("t{t}")).collect();
        let served: BTreeSet<_> = targets
            .iter()
            .zip(&c.served)
            .flat_map(|(t, mask)| {
                portals
                    .iter()
                    .filter(move |p| mask & (1 << p.0) != 0)
                    .map(move |p| (t.clone(), *p))
            })
            .collect();
        Sim {
            specs: c.specs.clone(),
            cooldown_ms: c.cooldown_ms,
            portals,
            targets,
            registered: served.clone(),
            served,
            deleted_at: HashMap::new(),
            sessions: Vec::new(),
            in_flight: Vec::new(),
            last_moved: HashMap::new(),
            last_left: HashMap::new(),
            moved_ever: BTreeSet::new(),
            next_id: 1,
            now: 0,
            step: 0,
        }
    }

    fn login(&mut self, initiator: String, target: String, portal: PortalId, load: Load) {
        self.sessions.push(Session {
            id: self.next_id,
            initiator,
            target,
            portal,
            login_ms: self.now,
            load,
        });
        self.next_id += 1;
    }

    fn table(&self) -> ConfigTable {
        ConfigTable {
            portals: self
                .portals
                .iter()
                .map(|p| {
                    let on: Vec<&Session> =
                        self.sessions.iter().filter(|s| s.portal == *p).collect();
                    let demand: f64 = on.iter().map(|s| s.load.cpu).sum();
                    PortalRow {
                        id: *p,
                        address: format!("10.0.0.{}:3260", p.0),
                        processor: p.0 as usize,
                        sessions: on
                            .iter()
                            .map(|s| SessionEntry {
                                session_id: s.id,
                                initiator: s.initiator.clone(),
                                target: s.target.clone(),
                                login_ms: s.login_ms,
                                iops: s.load.iops,
                                read_bps: s.load.read_bps,
                                write_bps: s.load.write_bps,
                                cpu_share: if demand > 0.0 {
                                    s.load.cpu / demand
                                } else {
                                    0.0
                                },
                                ..Default::default()
                            })
                            .collect(),
                        load: PortalLoad {
                            link_capacity: Some(capacity(*p)),
                            sent_bps: on.iter().map(|s| s.load.read_bps).sum(),
                            received_bps: on.iter().map(|s| s.load.write_bps).sum(),
                            cpu_busy: demand,
                            ..Default::default()
                        },
                    }
                })
                .collect(),
            served: self.served.iter().cloned().collect(),
        }
    }

    /// What session `s` takes with it when it moves, from the simulation's own figures.
    fn share(s: &Session) -> Share {
        Share {
            iops: s.load.iops,
            read_bps: s.load.read_bps,
            write_bps: s.load.write_bps,
            cpu: s.load.cpu,
        }
    }

    /// Measured load of `p`, minus moves out of it and plus moves into it not yet carried out.
    fn projected(&self, p: PortalId) -> Projection {
        let mut load = Projection {
            link_capacity: Some(capacity(p)),
            ..Default::default()
        };
        for s in self.sessions.iter().filter(|s| s.portal == p) {
            load.add(&Self::share(s));
        }
        for m in &self.in_flight {
            let from = self
                .sessions
                .iter()
                .find(|s| s.id == m.session_id)
                .map(|s| s.portal);
            if from == Some(p) {
                load.remove(&m.share);
            }
            if m.to == p {
                load.add(&m.share);
            }
        }
        load
    }

    /// Whether `load` is at or above the HIGH of some metric.
    fn hot(&self, load: &Projection) -> bool {
        self.specs.iter().any(|s| {
            load.value(s.metric)
                .is_some_and(|v| v >= s.thresholds.high - 1e-9)
        })
    }

    /// The world between two steps.
    fn advance(&mut self, t: &Tick, arrivals_so_far: &mut usize) {
        self.now += t.advance_ms;
        self.step += 1;
        if !self.sessions.is_empty() {
            for d in &t.departures {
                let s = self.sessions.remove(d % self.sessions.len());
                self.in_flight.retain(|m| m.session_id != s.id);
                if self.sessions.is_empty() {
                    break;
                }
            }
        }
        for (target, pick, load) in &t.arrivals {
            // An initiator asks iSNS, which lists the target's registered portals.
            let target = self.targets[*target].clone();
            let listed: Vec<PortalId> = self
                .registered
                .iter()
                .filter(|(t, _)| *t == target)
                .map(|(_, p)| *p)
                .collect();
            let portal = listed[pick % listed.len()];
            *arrivals_so_far += 1;
            self.login(format!("i{arrivals_so_far}"), target, portal, *load);
        }
        // Initiators asked to log out do so, and log in again at their destination.
        let due: Vec<InFlight> = self
            .in_flight
            .iter()
            .filter(|m| m.due_step <= self.step)
            .cloned()
            .collect();
        self.in_flight.retain(|m| m.due_step > self.step);
        for m in due {
            let i = self
                .sessions
                .iter()
                .position(|s| s.id == m.session_id)
                .expect("in-flight sessions are live");
            let s = self.sessions.remove(i);
            self.login(s.initiator, s.target, m.to, s.load);
        }
        if let Some((i, load)) = t.reload
            && !self.sessions.is_empty()
        {
            let n = self.sessions.len();
            self.sessions[i % n].load = load;
        }
    }

    /// Runs one policy step and carries out its decisions, checking each.
    fn run_step(
        &mut self,
        b: &mut Balancer,
        t: &Tick,
        counts: &Counts,
    ) -> Result<(), TestCaseError> {
        let table = self.table();
        // Did this step give the cooldown a chance to be broken?
        for s in &self.sessions {
            let key = (s.initiator.clone(), s.target.clone());
            let recent = self
                .last_moved
                .get(&key)
                .is_some_and(|at| self.now - at < self.cooldown_ms);
            let pending = self.in_flight.iter().any(|m| m.session_id == s.id);
            if recent && !pending && self.hot(&self.projected(s.portal)) {
                bump(&counts.cooldown_tested);
            }
        }
        let mut asked: BTreeSet<(String, PortalId)> = BTreeSet::new();
        for d in b.step(&table, self.now) {
            match d {
                Decision::Move {
                    session_id,
                    initiator,
                    target,
                    from,
                    to,
                    delete_registration,
                    ..
                } => {
                    bump(&counts.moves);
                    let s = self
                        .sessions
                        .iter()
                        .find(|s| s.id == session_id)
                        .cloned()
                        .ok_or_else(|| TestCaseError::fail("move of an unknown session"))?;
                    prop_assert_eq!(&s.initiator, &initiator);
                    prop_assert_eq!(&s.target, &target);
                    prop_assert_eq!(s.portal, from, "moved from where it is");
                    prop_assert_ne!(from, to);
                    prop_assert!(
                        !self.in_flight.iter().any(|m| m.session_id == session_id),
                        "asked twice"
                    );
                    let from_load = self.projected(from);
                    prop_assert!(
                        self.hot(&from_load),
                        "moved off a portal under every threshold"
                    );
                    for spec in &self.specs {
                        let hot = from_load
                            .value(spec.metric)
                            .is_some_and(|v| v >= spec.thresholds.high);
                        match spec.metric {
                            Metric::Bandwidth if hot => bump(&counts.bandwidth_moves),
                            Metric::Cpu if hot => bump(&counts.cpu_moves),
                            _ => {}
                        }
                    }
                    if self.specs.len() > 1 {
                        bump(&counts.combined_moves);
                    }
                    prop_assert!(self.served.contains(&(target.clone(), to)));
                    prop_assert!(
                        self.registered.contains(&(target.clone(), to)),
                        "moved to a portal where the target is not registered"
                    );
                    let share = Self::share(&s);
                    let mut dest = self.projected(to);
                    dest.add(&share);
                    for spec in &self.specs {
                        if let Some(v) = dest.value(spec.metric) {
                            prop_assert!(
                                v < spec.thresholds.high + 1e-9,
                                "moved to {}: {} would be {} (high {})",
                                to,
                                spec.metric,
                                v,
                                spec.thresholds.high
                            );
                        }
                    }
                    let key = (initiator.clone(), target.clone());
                    if let Some((at, left)) = self.last_left.get(&key) {
                        prop_assert!(
                            !(to == *left && self.now - at < 2 * self.cooldown_ms),
                            "{} moved back to {} {} ms after it left (cooldown {})",
                            initiator,
                            to,
                            self.now - at,
                            self.cooldown_ms
                        );
                    }
                    self.last_left.insert(key.clone(), (self.now, from));
                    if let Some(at) = self.last_moved.get(&key) {
                        prop_assert!(
                            self.now - at >= self.cooldown_ms,
                            "{} moved again {} ms after its last move (cooldown {})",
                            initiator,
                            self.now - at,
                            self.cooldown_ms
                        );
                    }
                    if !self.moved_ever.insert(key.clone()) {
                        bump(&counts.moved_again);
                    }
                    self.last_moved.insert(key, self.now);
                    let reg = (target.clone(), from);
                    // One delete per (target, portal) per step: a second move off the same
                    // portal waits for the first one's delete, even when that one fails.
                    prop_assert_eq!(
                        delete_registration,
                        self.registered.contains(&reg) && !asked.contains(&reg),
                        "a delete exactly when the hot portal is still registered"
                    );
                    if delete_registration {
                        asked.insert(reg.clone());
                        if t.fail_delete {
                            bump(&counts.failed_changes);
                            b.registration_failed(&target, from, true);
                        } else {
                            bump(&counts.deletes);
                            self.registered.remove(&reg);
                            self.deleted_at.insert(reg, (self.now, false));
                        }
                    }
                    self.in_flight.push(InFlight {
                        session_id,
                        to,
                        share,
                        due_step: self.step + usize::from(t.obey_after) + 1,
                    });
                }
                Decision::Restore { target, portal, .. } => {
                    bump(&counts.restores);
                    let reg = (target.clone(), portal);
                    prop_assert!(!self.registered.contains(&reg), "restored twice");
                    let load = self.projected(portal);
                    for spec in &self.specs {
                        if let Some(v) = load.value(spec.metric) {
                            prop_assert!(
                                v <= spec.thresholds.low + 1e-9,
                                "restored at {} {} > low {}",
                                spec.metric,
                                v,
                                spec.thresholds.low
                            );
                        }
                    }
                    let (at, retry) = self.deleted_at[&reg];
                    prop_assert!(
                        retry || self.now - at >= self.cooldown_ms,
                        "restored {} ms after the delete (cooldown {})",
                        self.now - at,
                        self.cooldown_ms
                    );
                    if t.fail_restore {
                        bump(&counts.failed_changes);
                        b.registration_failed(&target, portal, false);
                        self.deleted_at.insert(reg, (at, true));
                    } else {
                        self.registered.insert(reg.clone());
                        self.deleted_at.remove(&reg);
                    }
                }
            }
        }
        self.check_registrations(b)
    }

    fn check_registrations(&self, b: &Balancer) -> Result<(), TestCaseError> {
        for t in &self.targets {
            prop_assert!(
                self.registered.iter().any(|(rt, _)| rt == t),
                "{} has no registered portal",
                t
            );
        }
        for (t, p) in &self.served {
            prop_assert_eq!(
                b.is_deleted(t, *p),
                !self.registered.contains(&(t.clone(), *p)),
                "the policy and iSNS disagree on ({}, {})",
                t,
                p
            );
        }
        Ok(())
    }
}

fn run_case(c: &Case, counts: &Counts) -> Result<(), TestCaseError> {
    let mut sim = Sim::new(c);
    let mut b = Balancer::new(
        BalancePolicy::new(c.specs.clone())
            .expect("one spec per metric")
            .with_cooldown_ms(c.cooldown_ms)
            // This table's figures are exact at once (no smoothing).
            .with_smoothing_tau_ms(0),
    );
    let mut arrivals = 0;
    for t in &c.ticks {
        sim.advance(t, &mut arrivals);
        sim.run_step(&mut b, t, counts)?;
        prop_assert!(b.ping_pongs().is_empty(), "ping-pong: {:?}", b.ping_pongs());
    }
    // The load falls: everyone leaves. Within the cooldown (and a step) every deleted
    // registration must come back, iSNS now accepting every change.
    sim.sessions.clear();
    sim.in_flight.clear();
    let calm = Tick {
        advance_ms: 1_000,
        arrivals: Vec::new(),
        departures: Vec::new(),
        reload: None,
        obey_after: 0,
        fail_delete: false,
        fail_restore: false,
    };
    for _ in 0..(c.cooldown_ms / 1_000 + 2) {
        sim.advance(&calm, &mut arrivals);
        sim.run_step(&mut b, &calm, counts)?;
    }
    prop_assert_eq!(&sim.registered, &sim.served, "registrations left deleted");
    prop_assert!(b.deleted().is_empty());
    Ok(())
}

#[test]
fn the_policy_keeps_its_invariants_while_the_table_evolves() {
    let counts = Counts::default();
    let mut runner = TestRunner::new(Config {
        cases: 512,
        ..Config::default()
    });
    runner
        .run(&case(), |c| run_case(&c, &counts))
        .unwrap_or_else(|e| panic!("{e}"));
    // The cases must have exercised what they check; a policy that never moves would pass every
    // invariant above.
    let c = &counts;
    eprintln!("{counts:?}");
    assert!(c.moves.get() >= 100, "moves: {}", c.moves.get());
    assert!(
        c.moved_again.get() >= 10,
        "moved again: {}",
        c.moved_again.get()
    );
    assert!(c.deletes.get() >= 50, "deletes: {}", c.deletes.get());
    assert!(c.restores.get() >= 50, "restores: {}", c.restores.get());
    assert!(
        c.failed_changes.get() >= 10,
        "failed: {}",
        c.failed_changes.get()
    );
    assert!(
        c.cooldown_tested.get() >= 10,
        "cooldown tested: {}",
        c.cooldown_tested.get()
    );
    for (what, n) in [
        ("bandwidth", &c.bandwidth_moves),
        ("cpu", &c.cpu_moves),
        ("combined", &c.combined_moves),
    ] {
        assert!(n.get() >= 20, "{what} moves: {}", n.get());
    }
}
