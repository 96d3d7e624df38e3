//! The whole rebalance in memory, deterministic: iSNS server, target (connection cores, control
//! plane, balancer loop), and balancer-following initiators, wired together with in-memory
//! byte pipes on a virtual clock — no sockets, no threads, no runtime (in the spirit of quinn's
//! test `Pair`).
//!
//! Time: one [`Instant`] base plus a virtual offset ([`Clock`]); the control plane's unix ms
//! and iSNS seconds are a fixed base plus the same offset. [`World::step`] delivers every
//! pending byte until nothing moves at the current instant, then advances time to the earliest
//! deadline of any component (connection timers, follower timers, workload issue times, the
//! balancer interval, the iSNS refresh).

pub mod audit;
pub mod initiator;
pub mod isns;
pub mod link;
pub mod target;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use balancer::{BalancePolicy, BalanceSpec, PortalId};
use iscsi_target_core::PortalInfo;

pub use initiator::{Discovery, InitiatorConfig, LoginAnswer, SimInitiator, block_for};
pub use isns::{IsnsServer, REFRESH_INTERVAL_MS, Registrar};
pub use link::{ConnId, Link, Links};
pub use target::{RecordingDevice, SimTarget, block_id};

/// Unix ms at virtual time zero.
pub const UNIX_BASE_MS: u64 = 1_700_000_000_000;

/// The virtual clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base: Instant,
    offset: Duration,
}

impl Clock {
    pub fn new() -> Self {
        Clock {
            base: Instant::now(),
            offset: Duration::ZERO,
        }
    }

    pub fn now(&self) -> Instant {
        self.base + self.offset
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.offset
    }

    /// Unix milliseconds (the control plane's and the event log's time).
    pub fn unix_ms(&self) -> u64 {
        UNIX_BASE_MS + self.offset.as_millis() as u64
    }

    /// Moves to `t` (never backwards).
    pub fn advance_to(&mut self, t: Instant) {
        if t > self.now() {
            self.offset = t - self.base;
        }
    }

    /// The instant `ms` after the start.
    pub fn at_ms(&self, ms: u64) -> Instant {
        self.base + Duration::from_millis(ms)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// What a world is made of.
#[derive(Debug, Clone)]
pub struct WorldConfig {
    /// (address, portal group tag), portal i is `PortalId(i)`.
    pub portals: Vec<(SocketAddr, u16)>,
    /// Target names; each has one LUN.
    pub targets: Vec<String>,
    pub blocks: u64,
    /// The balancing metrics; empty: no balancing.
    pub balance: Vec<BalanceSpec>,
    pub cooldown: Duration,
    /// The balancer loop's interval.
    pub interval: Duration,
    /// One-way delay of every link.
    pub latency: Duration,
}

impl WorldConfig {
    /// Two portals, 127.0.0.1:3260 (tag 1) and 127.0.0.2:3260 (tag 2), serving `targets`.
    pub fn two_portals(targets: &[&str], balance: Option<&str>, cooldown: Duration) -> Self {
        WorldConfig::portals(2, targets, balance, cooldown)
    }

    /// `n` portals, 127.0.0.(i+1):3260 with tag i+1, serving `targets`; links with 1 ms
    /// latency, the balancer every second. `balance` holds one or more `--balance` specs
    /// separated by spaces (`"sessions:3 iops:2000"`).
    pub fn portals(n: u8, targets: &[&str], balance: Option<&str>, cooldown: Duration) -> Self {
        WorldConfig {
            portals: (0..n)
                .map(|i| {
                    let a = SocketAddr::from(([127, 0, 0, i + 1], 3260));
                    (a, u16::from(i) + 1)
                })
                .collect(),
            targets: targets.iter().map(|t| t.to_string()).collect(),
            blocks: 1 << 14,
            balance: balance
                .map(|b| {
                    b.split_whitespace()
                        .map(|s| s.parse().expect("a balance spec"))
                        .collect()
                })
                .unwrap_or_default(),
            cooldown,
            interval: Duration::from_secs(1),
            latency: Duration::from_millis(1),
        }
    }
}

/// Everything, in memory.
#[derive(Debug)]
pub struct World {
    pub clock: Clock,
    pub links: Links,
    pub isns: IsnsServer,
    pub target: SimTarget,
    pub initiators: Vec<SimInitiator>,
    portals: Vec<PortalInfo>,
    interval: Duration,
    next_balance: Instant,
    next_refresh: Instant,
    alarms: std::collections::BTreeSet<Instant>,
    /// Steps taken.
    pub steps: u64,
}

impl World {
    /// A world whose target has registered with iSNS at time zero.
    pub fn new(config: WorldConfig) -> Self {
        let portals: Vec<PortalInfo> = config
            .portals
            .iter()
            .enumerate()
            .map(|(i, (address, tag))| PortalInfo {
                id: PortalId(i as u16),
                address: *address,
                tag: *tag,
            })
            .collect();
        let clock = Clock::new();
        let balance = (!config.balance.is_empty()).then(|| {
            BalancePolicy::new(config.balance.clone())
                .expect("one spec per metric")
                .with_cooldown_ms(config.cooldown.as_millis() as u64)
        });
        let mut target = SimTarget::new(portals.clone(), config.targets, config.blocks, balance);
        let mut isns = IsnsServer::new();
        target
            .register(&mut isns, clock.unix_ms())
            .expect("initial registration");
        let now = clock.now();
        World {
            clock,
            links: Links::new(config.latency),
            isns,
            target,
            initiators: Vec::new(),
            portals,
            interval: config.interval,
            // The first balancer step comes one interval after the start.
            next_balance: now + config.interval,
            next_refresh: now + Duration::from_millis(REFRESH_INTERVAL_MS),
            alarms: Default::default(),
            steps: 0,
        }
    }

    pub fn portals(&self) -> &[PortalInfo] {
        &self.portals
    }

    /// The address of portal `i`.
    pub fn portal_address(&self, i: usize) -> SocketAddr {
        self.portals[i].address
    }

    /// Adds an initiator now; returns its index. It starts at the next step.
    pub fn add_initiator(&mut self, config: InitiatorConfig) -> usize {
        let i = self.initiators.len();
        self.initiators.push(SimInitiator::new(
            config,
            i as u64 + 1,
            self.clock.now(),
            self.clock.unix_ms(),
        ));
        i
    }

    /// What an initiator would hear from iSNS for `target` now.
    pub fn query_portals(&mut self, target: &str) -> Vec<SocketAddr> {
        let secs = self.clock.unix_ms() / 1000;
        self.isns
            .query_portals("iqn.2024-01.sim:observer", target, secs)
            .unwrap_or_default()
    }

    /// Delivers everything deliverable at the current instant until nothing moves.
    pub fn settle(&mut self) {
        let now = self.clock.now();
        let now_ms = self.clock.unix_ms();
        self.links.set_now(now);
        for _round in 0..100_000 {
            let mut any = self.links.deliver(now);
            for init in &mut self.initiators {
                let mut net = initiator::Net {
                    links: &mut self.links,
                    isns: &mut self.isns,
                    portals: &self.portals,
                    now_ms,
                };
                any |= init.poll(now, &mut net);
            }
            any |= self.target.poll(&mut self.links, now, now_ms);
            any |= self.links.transmit();
            if !any {
                return;
            }
        }
        panic!("the world does not settle at {:?}", self.clock.elapsed());
    }

    /// The earliest deadline after now.
    pub fn next_deadline(&self) -> Instant {
        let now = self.clock.now();
        self.initiators
            .iter()
            .filter_map(SimInitiator::poll_timeout)
            .chain(self.target.poll_timeout())
            .chain(self.links.next_arrival())
            .chain([self.next_balance, self.next_refresh])
            .chain(self.alarms.iter().copied())
            .filter(|t| *t > now)
            .min()
            .unwrap_or(self.next_balance)
    }

    /// Runs what is due now, settles, then advances the clock to the next deadline.
    pub fn step(&mut self) {
        let now = self.clock.now();
        let now_ms = self.clock.unix_ms();
        self.links.set_now(now);
        self.target.handle_timeout(&mut self.links, now, now_ms);
        for init in &mut self.initiators {
            init.handle_timeout(now);
        }
        self.settle();
        if self.next_balance <= now {
            self.next_balance = now + self.interval;
            self.target
                .balance_tick(&mut self.links, &mut self.isns, now, now_ms);
            self.settle();
        }
        if self.next_refresh <= now {
            self.next_refresh = now + Duration::from_millis(REFRESH_INTERVAL_MS);
            // A failed refresh is retried at the next one, as the real keeper does.
            let _ = self.target.register(&mut self.isns, now_ms);
        }
        self.alarms.retain(|t| *t > now);
        self.steps += 1;
        let next = self.next_deadline();
        self.clock.advance_to(next);
    }

    /// Makes `at` a deadline: the clock stops there (to add or remove an initiator, say).
    pub fn wake_at(&mut self, at: Instant) {
        self.alarms.insert(at);
    }

    /// Steps until `done` holds (checked before each step) or `limit` of virtual time has
    /// passed; true if `done` held.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&World) -> bool) -> bool {
        let end = self.clock.now() + limit;
        while self.clock.now() <= end {
            if done(self) {
                return true;
            }
            self.step();
        }
        done(self)
    }

    /// Steps for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.clock.now() + d;
        while self.clock.now() < end {
            self.step();
        }
    }
}
