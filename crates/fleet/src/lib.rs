//! Fleet simulator (`portshift simulate`): the real balancer policy crate driven by a virtual
//! clock over many portals (links and processors with capacities) and many initiators with
//! heavy-tailed demands that come and go. It compares policies on utilisation spread,
//! overload-seconds, moves, ping-pongs and a latency proxy, and draws each portal's utilisation
//! over time. Its presets mirror `bench/balance.sh`'s scenarios, so its predictions can be
//! checked against the benchmark's measurements.

pub mod chart;
pub mod engine;
pub mod workload;

pub use engine::{PolicyChoice, RunReport, run};
pub use workload::{
    Discovery, Fleet, FleetConfig, InitiatorSpec, Kind, LIGHT_IOPS, PortalSpec, generate, preset,
};

/// A comparison table of runs (Markdown).
pub fn table(runs: &[RunReport]) -> String {
    let mut s = String::from(
        "| policy | overload portal-s | excess capacity-s | utilisation spread | throughput GB/s | demand served | moves | ping-pongs | light latency mean / p99 µs |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in runs {
        s.push_str(&format!(
            "| {} | {} | {:.0} | {:.3} | {:.2} | {:.1}% | {} | {} | {:.0} / {:.0} |\n",
            r.policy,
            r.overload_seconds,
            r.overload_excess,
            r.utilisation_spread,
            r.throughput_bps / 1e9,
            r.demand_served * 100.0,
            r.moves,
            r.ping_pongs,
            r.light_latency_mean_us,
            r.light_latency_p99_us
        ));
    }
    s
}
