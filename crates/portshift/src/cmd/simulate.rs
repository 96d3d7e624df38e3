//! `portshift simulate`: the fleet simulator (crate `fleet`) — the real balancer policy over many
//! portals and initiators on a virtual clock, policies compared side by side.
// The options' doc comments are clap's help text: `[...]` there is option syntax, not a link.
#![allow(rustdoc::broken_intra_doc_links)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use balancer::BalanceSpec;
use fleet::{Fleet, FleetConfig, PolicyChoice, RunReport};

/// The policies `--policy` knows, in the order `all` runs them.
const POLICIES: [&str; 6] = ["none", "sessions", "iops", "bandwidth", "cpu", "combined"];

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Portals of the generated fleet.
    #[arg(long, default_value_t = 8)]
    portals: usize,
    /// Initiators of the generated fleet (each arrives once and leaves once).
    #[arg(long, default_value_t = 200)]
    initiators: usize,
    /// Simulated time, e.g. 10m, 1h.
    #[arg(long, default_value = "10m", value_parser = super::io::parse_duration)]
    duration: std::time::Duration,
    /// Seed of the generated workload.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Link speed of every generated portal in Mbit/s.
    #[arg(long, default_value_t = 10_000.0)]
    link_mbit: f64,
    /// Targets of the generated fleet (each served through every portal).
    #[arg(long, default_value_t = 16)]
    targets: usize,
    /// Mean demand of the active initiators as a fraction of the fleet's link capacity.
    #[arg(long, default_value_t = 0.6)]
    load: f64,
    /// Fraction of light (4 KiB random I/O) hosts; the rest stream 1 MiB transfers.
    #[arg(long, default_value_t = 0.5)]
    light: f64,
    /// Instead of a generated fleet, one of bench/balance.sh's scenarios: a, b, c or d.
    #[arg(long)]
    preset: Option<String>,
    /// With --preset: the reads per second (4 KiB, QD1) a light host does on a link of its own
    /// (what `bench/balance.sh` measured on this machine).
    #[arg(long, default_value_t = fleet::LIGHT_IOPS, requires = "preset")]
    light_iops: f64,
    /// none, sessions, iops, bandwidth, cpu, combined (all four rules), or all (every one of
    /// these, side by side on the same workload).
    #[arg(long, default_value = "all")]
    policy: String,
    /// Explicit rules (METRIC:HIGH[:LOW], repeatable), run as one policy named "custom"
    /// instead of --policy.
    #[arg(long)]
    balance: Vec<BalanceSpec>,
    /// Seconds a moved initiator stays put (the target's --cooldown).
    #[arg(long, default_value_t = 10)]
    cooldown: u32,
    /// Print JSON (the fleet summary and every run, series included) instead of the table.
    #[arg(long)]
    json: bool,
    /// Write an SVG chart of each portal's utilisation over time, one panel per policy.
    #[arg(long)]
    svg: Option<PathBuf>,
}

/// The rules of policy `name` for `fleet`: the count and rate thresholds are 1.25 times what
/// each portal would carry with the load spread evenly; link and processor at 80% / 50%.
fn rules(name: &str, fleet: &Fleet) -> anyhow::Result<Vec<BalanceSpec>> {
    let portals = fleet.portals.len().max(1) as f64;
    let duration = f64::from(fleet.duration_s);
    let lifetime = |s: &fleet::InitiatorSpec| f64::from(s.depart_s - s.arrive_s) / duration;
    let sessions: f64 = fleet.initiators.iter().map(lifetime).sum::<f64>() / portals;
    let iops: f64 = fleet
        .initiators
        .iter()
        .map(|s| s.iops() * lifetime(s))
        .sum::<f64>()
        / portals;
    let high_sessions = (sessions * 1.25).ceil().max(2.0);
    let text = |t: String| -> anyhow::Result<BalanceSpec> {
        t.parse().map_err(|e| anyhow::anyhow!("rule {t}: {e}"))
    };
    let sessions_rule = || text(format!("sessions:{high_sessions}:{}", high_sessions - 1.0));
    let iops_rule = || text(format!("iops:{:.0}:{:.0}", iops * 1.25, iops * 0.625));
    let bandwidth_rule = || text("bandwidth:80%:50%".into());
    let cpu_rule = || text("cpu:80%:50%".into());
    Ok(match name {
        "none" => Vec::new(),
        "sessions" => vec![sessions_rule()?],
        "iops" => vec![iops_rule()?],
        "bandwidth" => vec![bandwidth_rule()?],
        "cpu" => vec![cpu_rule()?],
        "combined" => vec![
            sessions_rule()?,
            iops_rule()?,
            bandwidth_rule()?,
            cpu_rule()?,
        ],
        other => anyhow::bail!(
            "unknown policy {other:?} (known: {}, all)",
            POLICIES.join(", ")
        ),
    })
}

#[derive(serde::Serialize)]
struct Output<'a> {
    portals: usize,
    initiators: usize,
    duration_s: u32,
    runs: &'a [RunReport],
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.light_iops > 0.0 && args.light_iops <= 10_000_000.0,
        "--light-iops must be above 0 (at most 10,000,000)"
    );
    let duration_s = u32::try_from(args.duration.as_secs())
        .unwrap_or(u32::MAX)
        .max(1);
    let fleet = match &args.preset {
        Some(p) => fleet::preset(p, duration_s, args.light_iops)
            .with_context(|| format!("unknown preset {p:?} (known: a, b, c, d)"))?,
        None => {
            anyhow::ensure!(args.portals > 0, "--portals must be at least 1");
            anyhow::ensure!(args.portals <= 4096, "--portals is at most 4096");
            anyhow::ensure!(
                args.initiators <= 1_000_000,
                "--initiators is at most 1,000,000"
            );
            anyhow::ensure!(args.link_mbit > 0.0, "--link-mbit must be positive");
            fleet::generate(&FleetConfig {
                portals: args.portals,
                initiators: args.initiators,
                duration_s,
                seed: args.seed,
                link_bps: args.link_mbit * fleet::workload::MBIT,
                targets: args.targets.max(1),
                light_fraction: args.light,
                load: args.load,
            })
        }
    };
    let choices: Vec<PolicyChoice> = if !args.balance.is_empty() {
        vec![PolicyChoice {
            name: "custom".into(),
            specs: args.balance.clone(),
            cooldown_s: args.cooldown,
        }]
    } else {
        let names: Vec<&str> = if args.policy == "all" {
            POLICIES.to_vec()
        } else {
            vec![args.policy.as_str()]
        };
        names
            .into_iter()
            .map(|n| {
                Ok(PolicyChoice {
                    name: n.to_string(),
                    specs: rules(n, &fleet)?,
                    cooldown_s: args.cooldown,
                })
            })
            .collect::<anyhow::Result<_>>()?
    };
    let runs: Vec<RunReport> = choices
        .iter()
        .map(|c| fleet::run(&fleet, c).with_context(|| format!("policy {}", c.name)))
        .collect::<anyhow::Result<_>>()?;
    if let Some(path) = &args.svg {
        let svg = fleet::chart::svg(&runs, fleet.duration_s)?;
        std::fs::write(path, svg).with_context(|| format!("writing {}", path.display()))?;
    }
    if args.json {
        let out = Output {
            portals: fleet.portals.len(),
            initiators: fleet.initiators.len(),
            duration_s: fleet.duration_s,
            runs: &runs,
        };
        println!("{}", serde_json::to_string(&out)?);
    } else {
        println!(
            "{} portals, {} initiators, {} s simulated\n",
            fleet.portals.len(),
            fleet.initiators.len(),
            fleet.duration_s
        );
        print!("{}", fleet::table(&runs));
        for r in &runs {
            let u: Vec<String> = r
                .converged_utilisation
                .iter()
                .map(|u| format!("{:.0}%", u * 100.0))
                .collect();
            println!(
                "{}: converged utilisation (last third) [{}], last move at {} s",
                r.policy,
                u.join(" "),
                r.converged_at_s
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
