//! `portshift status`: fetch a target's admin snapshot and print FIG. 2 and FIG. 3 side by side,
//! with the events below.

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
}

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
    let snap = rt.block_on(fetch(&args.admin))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&snap)?);
    } else {
        print!("{}", crate::render::status(&snap, args.events));
    }
    Ok(ExitCode::SUCCESS)
}
