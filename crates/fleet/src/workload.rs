//! The simulated fleet: portals with link and processor capacities, and initiators with
//! heavy-tailed demands that arrive and leave, generated from a seed (or given as a preset
//! that mirrors a `bench/balance.sh` scenario).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// Bytes per second of one Mbit/s.
pub const MBIT: f64 = 1e6 / 8.0;

/// One portal: its link (each way, full duplex) and its processor.
#[derive(Debug, Clone, Serialize)]
pub struct PortalSpec {
    /// Link capacity in bytes per second, each way.
    pub link_bps: f64,
    /// Processor capacity in CPU-seconds per second (1.0 = one core).
    pub cpu: f64,
}

/// What an initiator does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Large sequential transfers: wants bandwidth.
    Streamer,
    /// Small random I/O: wants low latency.
    Light,
}

/// How an initiator finds the portal it logs in through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Discovery {
    /// It asks iSNS (or SendTargets) and logs in through the first portal listed for its
    /// target: registrations the balancer holds deleted are left out.
    Isns,
    /// A stock initiator given one portal's address (libiscsi's `iscsi://` URL): it logs in
    /// there whatever iSNS lists; only the balancer's placement of it (after a move) redirects
    /// its login.
    Portal(usize),
}

/// One initiator: what it would do on an unloaded path, and when it is there.
#[derive(Debug, Clone, Serialize)]
pub struct InitiatorSpec {
    pub name: String,
    /// Index of its target.
    pub target: usize,
    pub kind: Kind,
    /// Bytes per second it would read and write with nothing in its way.
    pub read_bps: f64,
    pub write_bps: f64,
    /// Bytes per I/O.
    pub io_bytes: f64,
    /// I/Os it keeps outstanding: on a full link each session gets a share in proportion to
    /// the bytes it has in flight (queue depth × I/O size), as in a FIFO queue.
    pub queue_depth: u32,
    /// Second it logs in, second it leaves (exclusive).
    pub arrive_s: u32,
    pub depart_s: u32,
    /// How it finds its portal.
    pub discovery: Discovery,
}

impl InitiatorSpec {
    /// I/Os per second at its full demand.
    pub fn iops(&self) -> f64 {
        (self.read_bps + self.write_bps) / self.io_bytes
    }

    /// Bytes it keeps in flight: its weight on a full link.
    pub fn in_flight(&self) -> f64 {
        f64::from(self.queue_depth.max(1)) * self.io_bytes
    }
}

/// The whole fleet.
#[derive(Debug, Clone, Serialize)]
pub struct Fleet {
    pub portals: Vec<PortalSpec>,
    pub initiators: Vec<InitiatorSpec>,
    pub targets: usize,
    pub duration_s: u32,
    /// Seconds the target's meters ran idle before the workload came (they weigh in its
    /// smoothed figures at first).
    pub lead_in_s: u32,
}

/// Seconds between the start of `bench/balance.sh`'s target and its hosts' first logins
/// (registration, then each host's own discovery and login): the presets' lead-in.
pub const BENCH_LEAD_IN_S: u32 = 3;

/// How [`generate`] builds a fleet.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    pub portals: usize,
    pub initiators: usize,
    pub duration_s: u32,
    pub seed: u64,
    /// Link capacity of every portal, bytes per second each way.
    pub link_bps: f64,
    /// Targets; each is served through every portal.
    pub targets: usize,
    /// Fraction of the initiators that are light hosts.
    pub light_fraction: f64,
    /// Mean demand of the active initiators as a fraction of the fleet's link capacity.
    pub load: f64,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            portals: 8,
            initiators: 200,
            duration_s: 600,
            seed: 1,
            link_bps: 10_000.0 * MBIT,
            targets: 16,
            light_fraction: 0.5,
            load: 0.6,
        }
    }
}

/// A Pareto draw (scale `xm`, shape `alpha`): heavy-tailed, most values near `xm`.
fn pareto(rng: &mut StdRng, xm: f64, alpha: f64) -> f64 {
    let u: f64 = rng.random_range(f64::EPSILON..1.0);
    xm / u.powf(1.0 / alpha)
}

/// A fleet from `cfg`: half the initiators are there from the start, the rest arrive at
/// uniformly random times; lifetimes and demands are Pareto-distributed; demands are scaled
/// so that the active initiators want `cfg.load` of the fleet's link capacity on average.
pub fn generate(cfg: &FleetConfig) -> Fleet {
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let duration = cfg.duration_s.max(1);
    let portals = vec![
        PortalSpec {
            link_bps: cfg.link_bps,
            cpu: 1.0,
        };
        cfg.portals.max(1)
    ];
    let mut initiators = Vec::with_capacity(cfg.initiators);
    for i in 0..cfg.initiators {
        let light = rng.random_bool(cfg.light_fraction.clamp(0.0, 1.0));
        let (kind, io_bytes, read_bps, write_bps, queue_depth) = if light {
            let iops = pareto(&mut rng, 200.0, 1.5).min(20_000.0);
            let read = iops * 4096.0 * 0.7;
            let qd = rng.random_range(1..=4);
            (Kind::Light, 4096.0, read, iops * 4096.0 - read, qd)
        } else {
            let bps = pareto(&mut rng, 20.0 * MBIT, 1.3).min(cfg.link_bps);
            let write_share = if rng.random_bool(0.3) { 0.8 } else { 0.1 };
            let qd = rng.random_range(2..=16);
            (
                Kind::Streamer,
                1048576.0,
                bps * (1.0 - write_share),
                bps * write_share,
                qd,
            )
        };
        let arrive_s = if rng.random_bool(0.5) {
            0
        } else {
            rng.random_range(0..duration)
        };
        let life = pareto(&mut rng, f64::from(duration) / 8.0, 1.2) as u32;
        let depart_s = arrive_s.saturating_add(life.max(1)).min(duration);
        initiators.push(InitiatorSpec {
            name: format!("iqn.2026-11.org.example:host-{i}"),
            target: i % cfg.targets.max(1),
            kind,
            read_bps,
            write_bps,
            io_bytes,
            queue_depth,
            arrive_s,
            depart_s: depart_s.max(arrive_s + 1),
            discovery: Discovery::Isns,
        });
    }
    // Scale the demands to the wanted mean load.
    let active_demand: f64 = initiators
        .iter()
        .map(|s| s.read_bps.max(s.write_bps) * f64::from(s.depart_s - s.arrive_s))
        .sum::<f64>()
        / f64::from(duration);
    let capacity: f64 = portals.iter().map(|p| p.link_bps).sum();
    if active_demand > 0.0 {
        let k = cfg.load * capacity / active_demand;
        for s in &mut initiators {
            s.read_bps *= k;
            s.write_bps *= k;
        }
    }
    Fleet {
        portals,
        initiators,
        targets: cfg.targets.max(1),
        duration_s: duration,
        lead_in_s: 0,
    }
}

/// Reads per second a light host (4 KiB at random, QD1) does on a 400 Mbit/s link of its own
/// here (bench/balance.sh b, sessions:2, quiet machine); `--light-iops` gives another.
pub const LIGHT_IOPS: f64 = 11_000.0;

/// The fleets of `bench/balance.sh`'s scenarios, with the demands its hosts showed there on an
/// uncapped path (a 1 MiB QD4 streamer takes a whole 400 Mbit/s link; a 4 KiB QD1 light host
/// does about 11,000 reads a second on a link of its own: bench/balance.sh b, sessions:2).
pub fn preset(name: &str, duration_s: u32, light_iops: f64) -> Option<Fleet> {
    let link = |mbit: f64| PortalSpec {
        link_bps: mbit * MBIT,
        cpu: 1.0,
    };
    let streamer = |n: usize, arrive_s: u32, depart_s: u32| InitiatorSpec {
        name: format!("iqn.2026-11.org.example:streamer-{n}"),
        target: 0,
        kind: Kind::Streamer,
        read_bps: 1000.0 * MBIT,
        write_bps: 0.0,
        io_bytes: 1048576.0,
        queue_depth: 4,
        arrive_s,
        depart_s,
        // iscsi-perf, given portal 1's URL.
        discovery: Discovery::Portal(0),
    };
    let light = |n: usize, arrive_s: u32, depart_s: u32| InitiatorSpec {
        name: format!("iqn.2026-11.org.example:light-{n}"),
        target: 0,
        kind: Kind::Light,
        read_bps: light_iops * 4096.0,
        write_bps: 0.0,
        io_bytes: 4096.0,
        queue_depth: 1,
        arrive_s,
        depart_s,
        // portshift io, through iSNS.
        discovery: Discovery::Isns,
    };
    let d = duration_s.max(1);
    let (portals, initiators) = match name {
        "a" => (
            vec![link(400.0); 2],
            (1..=3).map(|n| streamer(n, 0, d)).collect(),
        ),
        "b" => (
            vec![link(400.0); 3],
            vec![
                streamer(1, 0, d),
                streamer(2, 0, d),
                light(1, 0, d),
                light(2, 0, d),
            ],
        ),
        "c" => {
            // One streamer throughout; every 3 s a host joins for 6 s, in turn a streamer and
            // a light host, while less than d - 6 s have passed (as the script's churn).
            let mut v = vec![streamer(1, 0, d)];
            let mut t = 0;
            let mut n = 100;
            while t + 6 < d {
                n += 1;
                v.push(if n % 2 == 0 {
                    streamer(n, t, t + 6)
                } else {
                    light(n, t, t + 6)
                });
                t += 3;
            }
            (vec![link(400.0); 3], v)
        }
        "d" => (
            vec![link(1000.0), link(100.0), link(100.0)],
            (1..=3).map(|n| streamer(n, 0, d)).collect(),
        ),
        _ => return None,
    };
    Some(Fleet {
        portals,
        initiators,
        targets: 1,
        duration_s: d,
        lead_in_s: BENCH_LEAD_IN_S,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_scaled_to_the_load() {
        let cfg = FleetConfig::default();
        let a = generate(&cfg);
        let b = generate(&cfg);
        assert_eq!(a.initiators.len(), cfg.initiators);
        assert!(
            a.initiators
                .iter()
                .zip(&b.initiators)
                .all(|(x, y)| x.read_bps == y.read_bps && x.arrive_s == y.arrive_s)
        );
        let demand: f64 = a
            .initiators
            .iter()
            .map(|s| s.read_bps.max(s.write_bps) * f64::from(s.depart_s - s.arrive_s))
            .sum::<f64>()
            / f64::from(a.duration_s);
        let capacity = cfg.link_bps * cfg.portals as f64;
        assert!((demand / capacity - cfg.load).abs() < 1e-9);
        assert!(a.initiators.iter().all(|s| s.depart_s > s.arrive_s));
        assert!(
            a.initiators.iter().any(|s| s.kind == Kind::Light)
                && a.initiators.iter().any(|s| s.kind == Kind::Streamer)
        );
    }

    #[test]
    fn presets_mirror_the_benchmark() {
        let b = preset("b", 60, LIGHT_IOPS).unwrap();
        assert_eq!(b.portals.len(), 3);
        assert_eq!(b.initiators.len(), 4);
        let c = preset("c", 60, LIGHT_IOPS).unwrap();
        assert!(c.initiators.len() > 10);
        assert!(preset("zz", 60, LIGHT_IOPS).is_none());
    }
}
