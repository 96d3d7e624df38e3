//! `portshift balance pause|resume|move|pin|unpin|drain|undrain|show`: the operator's calls on a
//! target's admin endpoint ([`iscsi_target::admin_ops`]). Every call but `show` changes state
//! and sends the token read from `--token-file` as `Authorization: Bearer`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use iscsi_target::admin_ops::{OperatorAnswer, OperatorView};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The target's admin endpoint.
    #[arg(long, global = true, default_value = iscsi_target::admin::DEFAULT_ADMIN)]
    admin: String,
    /// File holding the admin token (the target's --admin-token-file); must be private.
    #[arg(long, global = true, value_name = "FILE")]
    token_file: Option<PathBuf>,
    #[command(subcommand)]
    op: Op,
}

#[derive(clap::Subcommand, Debug)]
enum Op {
    /// Show whether the balancer is paused, who is pinned and which portals are drained.
    Show,
    /// Stop the balancer from moving anyone (it keeps measuring).
    Pause,
    /// Let the balancer move sessions again.
    Resume,
    /// Move every session of INITIATOR to another portal (logout request, then the login
    /// elsewhere is redirected).
    Move {
        initiator: String,
        /// The portal to move to (`P1`, `1` or `IP:PORT`); default: the least loaded other one.
        #[arg(long)]
        to: Option<String>,
    },
    /// Keep INITIATOR where it is: the balancer never moves it.
    Pin { initiator: String },
    /// Let the balancer move INITIATOR again.
    Unpin { initiator: String },
    /// Move every session off PORTAL and delete its registrations, so that nobody new
    /// arrives; shows progress until it is empty.
    Drain {
        /// `P0`, `0` or `IP:PORT`.
        portal: String,
        /// Give up waiting (the drain itself stays in force) after this long.
        #[arg(long, default_value = "60s", value_parser = super::io::parse_duration)]
        timeout: Duration,
        /// Do not wait for the portal to empty.
        #[arg(long)]
        no_wait: bool,
    },
    /// Take PORTAL back into service: registrations restored, logins accepted.
    Undrain { portal: String },
}

fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?)
}

/// Fetches `GET /balance` from `admin`.
pub async fn show(admin: &str) -> anyhow::Result<OperatorView> {
    let resp = client()?
        .get(format!("http://{admin}/balance"))
        .send()
        .await
        .with_context(|| format!("cannot reach the target's admin endpoint at {admin}"))?;
    let resp = resp.error_for_status()?;
    resp.json()
        .await
        .context("the admin endpoint sent a document this version does not understand")
}

/// POSTs `body` to `/balance/{what}` with the token.
async fn post(
    admin: &str,
    token: &str,
    what: &str,
    body: serde_json::Value,
) -> anyhow::Result<OperatorAnswer> {
    let resp = client()?
        .post(format!("http://{admin}/balance/{what}"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("cannot reach the target's admin endpoint at {admin}"))?;
    let status = resp.status();
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        anyhow::bail!("{what}: the target answered {status}: {}", text.trim());
    }
    resp.json()
        .await
        .context("the admin endpoint sent a document this version does not understand")
}

fn print_answer(a: &OperatorAnswer) {
    println!("{}", a.message);
    for m in &a.moves {
        println!(
            "  {} ({}): {} -> {}{}",
            m.initiator,
            m.target,
            m.from,
            m.to,
            if m.delivered {
                ""
            } else {
                " (session had already ended)"
            }
        );
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_async(args))
}

async fn run_async(args: Args) -> anyhow::Result<ExitCode> {
    let admin = args.admin.as_str();
    if let Op::Show = args.op {
        let v = show(admin).await?;
        println!("balancer: {}", if v.paused { "paused" } else { "running" });
        println!(
            "pinned:   {}",
            if v.pinned.is_empty() {
                "-".to_string()
            } else {
                v.pinned.join(", ")
            }
        );
        for d in &v.drained {
            println!(
                "drained:  {} {} ({} session(s) left)",
                d.portal, d.address, d.sessions
            );
        }
        if !v.mutating_enabled {
            println!("(state-changing calls are disabled: no --admin-token-file on the target)");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let path = args
        .token_file
        .as_deref()
        .context("this call changes state: give the admin token with --token-file FILE")?;
    let token = iscsi_target::admin_ops::read_token_file(path)?;
    let token = token.as_str();
    match args.op {
        Op::Show => unreachable!("handled above"),
        Op::Pause => print_answer(&post(admin, token, "pause", serde_json::json!({})).await?),
        Op::Resume => print_answer(&post(admin, token, "resume", serde_json::json!({})).await?),
        Op::Pin { initiator } => print_answer(
            &post(
                admin,
                token,
                "pin",
                serde_json::json!({ "initiator": initiator }),
            )
            .await?,
        ),
        Op::Unpin { initiator } => print_answer(
            &post(
                admin,
                token,
                "unpin",
                serde_json::json!({ "initiator": initiator }),
            )
            .await?,
        ),
        Op::Move { initiator, to } => print_answer(
            &post(
                admin,
                token,
                "move",
                serde_json::json!({ "initiator": initiator, "to": to }),
            )
            .await?,
        ),
        Op::Undrain { portal } => print_answer(
            &post(
                admin,
                token,
                "undrain",
                serde_json::json!({ "portal": portal }),
            )
            .await?,
        ),
        Op::Drain {
            portal,
            timeout,
            no_wait,
        } => {
            let a = post(
                admin,
                token,
                "drain",
                serde_json::json!({ "portal": portal }),
            )
            .await?;
            print_answer(&a);
            if !no_wait {
                return wait_empty(admin, &a, timeout).await;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Polls `GET /balance` every half second, printing the sessions left on the drained portal
/// whenever the count changes, until it is empty or `timeout` passed.
async fn wait_empty(
    admin: &str,
    answer: &OperatorAnswer,
    timeout: Duration,
) -> anyhow::Result<ExitCode> {
    let start = Instant::now();
    let mut last = None;
    loop {
        let v = show(admin).await?;
        // The portal just drained: the one the answer names, else the only one drained.
        let portal = answer
            .message
            .strip_prefix("draining ")
            .and_then(|m| m.split(':').next())
            .and_then(|id| v.drained.iter().find(|d| d.portal.to_string() == id))
            .or_else(|| v.drained.first());
        let Some(d) = portal else {
            anyhow::bail!("the portal is no longer drained (undrained meanwhile?)");
        };
        if last != Some(d.sessions) {
            println!(
                "{} {}: {} session(s) left ({:.1} s)",
                d.portal,
                d.address,
                d.sessions,
                start.elapsed().as_secs_f64()
            );
            last = Some(d.sessions);
        }
        if d.sessions == 0 {
            println!("{} is empty: it can be serviced", d.portal);
            return Ok(ExitCode::SUCCESS);
        }
        if start.elapsed() >= timeout {
            eprintln!(
                "{}: still {} session(s) after {:.0} s (the drain stays in force)",
                d.portal,
                d.sessions,
                timeout.as_secs_f64()
            );
            return Ok(ExitCode::FAILURE);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
