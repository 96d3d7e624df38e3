//! `portshift status`: fetch a target's admin snapshot and print FIG. 2 and FIG. 3 side by side,
//! with the events below. `--watch` fetches and prints again every second: redrawn in place on
//! a terminal (ANSI clear screen and cursor home), successive snapshots on a pipe.
//!
//! `--isns H:P[,H:P...]` shows the whole fleet from the iSNS registry instead (the first server
//! that answers): every entity with its portals, targets and registrations, and the deleted
//! ones (see [`isns::fleet`]).

use std::process::ExitCode;

use anyhow::Context;
use balancer::AdminSnapshot;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The target's admin endpoint.
    #[arg(long, default_value = iscsi_target::admin::DEFAULT_ADMIN)]
    admin: String,
    /// Print the raw JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// How many of the most recent events to show.
    #[arg(long, default_value_t = 40)]
    events: usize,
    /// Fetch and show again every second until interrupted: redrawn in place on a terminal;
    /// on a pipe each snapshot follows the previous one after a `--- HH:MM:SS UTC` line (with
    /// --json, one JSON document per line).
    #[arg(long)]
    watch: bool,
    /// With --watch: stop after this many snapshots.
    #[arg(long, requires = "watch", value_name = "N")]
    count: Option<u64>,
    /// Show the whole fleet as these iSNS servers' registry has it (the first that answers):
    /// every entity, its portals, targets and registrations, and which are deleted.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "HOST:PORT",
        conflicts_with = "watch"
    )]
    isns: Vec<std::net::SocketAddr>,
    /// With --isns: the iSCSI name the queries are sent as. Where discovery domains are in
    /// use, give a Control Node name (`portshift isns --control-node`) to see everything.
    #[arg(long, default_value = FLEET_SOURCE, requires = "isns")]
    source: String,
}

/// The default source of the fleet queries.
const FLEET_SOURCE: &str = "iqn.2026-11.org.portshift:status";
/// Bound on connecting to an iSNS server and on each answer.
const FLEET_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The fleet as the first of `servers` that answers has it, with that server.
pub async fn fleet(
    servers: &[std::net::SocketAddr],
    source: &str,
) -> anyhow::Result<(std::net::SocketAddr, isns::fleet::Fleet)> {
    let mut client = isns::FailoverClient::new(servers.to_vec(), FLEET_TIMEOUT);
    let mut call = client.call();
    loop {
        let (server, c) = client.next(&mut call).await?;
        let mut fleet = isns::fleet::Fleet::default();
        let mut result = Ok(());
        for q in isns::fleet::queries(source) {
            result = match c.call(q).await {
                Ok(resp) => fleet.add(&resp),
                Err(e) => Err(e),
            };
            if result.is_err() {
                break;
            }
        }
        if client.outcome(&mut call, server, result)?.is_some() {
            return Ok((server, fleet));
        }
    }
}

/// ANSI: clear the screen and move the cursor home.
const CLEAR_HOME: &str = "\x1b[H\x1b[2J";
/// How often --watch fetches.
const WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Fetches the snapshot from `admin` (`IP:PORT`).
pub async fn fetch(admin: &str) -> anyhow::Result<AdminSnapshot> {
    let url = format!("http://{admin}/status");
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()?;
    let resp = client
        .get(&url)
        .send()
        .await
        .with_context(|| format!("cannot reach the target's admin endpoint at {admin} (is `portshift target --admin {admin}` running?)"))?;
    let resp = resp.error_for_status()?;
    resp.json()
        .await
        .context("the admin endpoint sent a document this version does not understand")
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if !args.isns.is_empty() {
        let (server, fleet) = rt.block_on(fleet(&args.isns, &args.source))?;
        if args.json {
            let doc = serde_json::json!({
                "server": server,
                "entities": fleet.entities,
                "deleted": fleet.deleted().iter().map(|(t, p)| {
                    serde_json::json!({ "target": t, "portal": p })
                }).collect::<Vec<_>>(),
            });
            println!("{}", serde_json::to_string_pretty(&doc)?);
        } else {
            print!("{}", crate::render::fleet(server, &fleet));
        }
        return Ok(ExitCode::SUCCESS);
    }
    if args.watch {
        return rt.block_on(watch(&args));
    }
    let snap = rt.block_on(fetch(&args.admin))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&snap)?);
    } else {
        print!("{}", crate::render::status(&snap, args.events));
    }
    Ok(ExitCode::SUCCESS)
}

/// `--watch`: one frame a second. A target that does not answer is shown as such (and the
/// watch goes on), so a restart can be watched through.
async fn watch(args: &Args) -> anyhow::Result<ExitCode> {
    use std::io::{IsTerminal, Write};
    let terminal = std::io::stdout().is_terminal();
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shown = 0u64;
    while args.count.is_none_or(|n| shown < n) {
        tick.tick().await;
        let snap = fetch(&args.admin).await;
        let frame = watch_frame(args, terminal, snap.as_ref().map_err(|e| format!("{e:#}")));
        let mut out = std::io::stdout().lock();
        // A closed pipe (`| head`) ends the watch quietly.
        if out
            .write_all(frame.as_bytes())
            .and_then(|()| out.flush())
            .is_err()
        {
            break;
        }
        shown += 1;
    }
    Ok(ExitCode::SUCCESS)
}

/// One --watch frame: on a terminal, clear and home then the tables under a header line; on a
/// pipe, a `--- HH:MM:SS UTC` separator then the tables (or, with --json, one line of JSON).
fn watch_frame(args: &Args, terminal: bool, snap: Result<&AdminSnapshot, String>) -> String {
    let now = crate::render::clock(balancer::clock::unix_ms());
    let body = match (snap, args.json) {
        (Ok(s), true) => {
            serde_json::to_string(s).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")) + "\n"
        }
        (Ok(s), false) => crate::render::status(s, args.events),
        (Err(e), true) => serde_json::json!({ "error": e }).to_string() + "\n",
        (Err(e), false) => format!("no answer: {e}\n"),
    };
    match (terminal, args.json) {
        (true, _) => format!(
            "{CLEAR_HOME}portshift status --watch {}  {now}  (Ctrl-C to stop)\n\n{body}",
            args.admin
        ),
        (false, true) => body,
        (false, false) => format!("--- {now}\n{body}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(json: bool) -> Args {
        Args {
            admin: "127.0.0.1:3261".into(),
            json,
            events: 40,
            watch: true,
            count: None,
            isns: Vec::new(),
            source: FLEET_SOURCE.into(),
        }
    }

    fn snap() -> AdminSnapshot {
        AdminSnapshot {
            isns: None,
            isns_contact: None,
            balance: None,
            table: Default::default(),
            registrations: vec![],
            events: vec![],
            logout_requests: 3,
            forced_moves: 0,
            ping_pongs: 0,
        }
    }

    /// On a terminal every frame clears the screen and homes the cursor before the tables.
    #[test]
    fn a_terminal_frame_redraws_in_place() {
        let s = snap();
        let f = watch_frame(&args(false), true, Ok(&s));
        assert!(f.starts_with(CLEAR_HOME), "{f:?}");
        assert!(f.contains(&crate::render::status(&s, 40)), "{f:?}");
        assert_eq!(f.matches(CLEAR_HOME).count(), 1);
    }

    /// On a pipe, frames carry no escape sequence: a `--- HH:MM:SS UTC` line and the tables, or
    /// exactly one line of JSON that parses back.
    #[test]
    fn a_pipe_frame_is_plain_text_or_one_json_line() {
        let s = snap();
        let f = watch_frame(&args(false), false, Ok(&s));
        assert!(!f.contains('\x1b'), "{f:?}");
        let (sep, rest) = f.split_once('\n').unwrap();
        assert!(
            sep.starts_with("--- ") && sep.len() == "--- HH:MM:SS UTC".len(),
            "{sep:?}"
        );
        assert_eq!(rest, crate::render::status(&s, 40));
        let j = watch_frame(&args(true), false, Ok(&s));
        assert_eq!(j.lines().count(), 1, "{j:?}");
        let back: AdminSnapshot = serde_json::from_str(j.trim_end()).unwrap();
        assert_eq!(back, s);
    }

    /// A target that does not answer is shown as such in the frame.
    #[test]
    fn an_unreachable_target_is_a_frame_too() {
        let f = watch_frame(&args(false), false, Err("connection refused".into()));
        assert!(f.ends_with("no answer: connection refused\n"), "{f:?}");
        let j = watch_frame(&args(true), false, Err("refused".into()));
        let v: serde_json::Value = serde_json::from_str(j.trim_end()).unwrap();
        assert_eq!(v["error"], "refused");
    }
}
