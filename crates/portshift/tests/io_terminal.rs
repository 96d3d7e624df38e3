//! Acceptance (issue 15, point 4): `portshift io` on a terminal shows a live progress bar (IOPS,
//! MB/s, moves, errors), and prints nothing extra when its output is piped.
//!
//! The terminal is a real pseudo-terminal: util-linux's `script` runs the command on one and
//! copies what the command drew to its own stdout. The piped run captures stdout and stderr
//! through pipes. Both run against `portshift target` with two portals (no balancing) on
//! loopback, for a bounded time.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{TwoPortalTarget, run_timed};

const TARGET: &str = "iqn.2024-01.io.portshift:tty";

fn io_args(portal: &str) -> Vec<String> {
    [
        "io",
        "--portal",
        portal,
        "--target",
        TARGET,
        "--verify",
        "--queue-depth",
        "4",
        "--duration",
        "3s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The summary's first line, present in both runs.
fn has_summary(out: &str) -> bool {
    out.contains(&format!("target {TARGET}:")) && out.contains(" 0 errors, 0 mismatches")
}

#[test]
fn io_draws_a_live_bar_on_a_terminal_and_nothing_extra_when_piped() {
    let dir = tempfile::tempdir().expect("temp dir");
    let t = TwoPortalTarget::start(dir.path(), &[TARGET], "16M", &[]);
    let bin = env!("CARGO_BIN_EXE_portshift");

    // On a pseudo-terminal.
    let line = std::iter::once(bin.to_string())
        .chain(io_args(&t.portals[0]))
        .collect::<Vec<_>>()
        .join(" ");
    let tty = run_timed(
        Command::new("script")
            .args([
                "--quiet",
                "--return",
                "--flush",
                "--command",
                &line,
                "/dev/null",
            ])
            .env("TERM", "xterm"),
        Duration::from_secs(30),
    );
    assert!(tty.ok, "io on a terminal failed: {tty:?}");
    let drawn = &tty.stdout;
    assert!(has_summary(drawn), "no summary on the terminal: {drawn}");
    // The bar: redrawn in place (carriage return or cursor movement), with live figures that
    // the summary does not print.
    assert!(
        drawn.contains(" MB/s  moves 0  errors 0"),
        "no live bar: {drawn:?}"
    );
    assert!(
        drawn.contains('\r') || drawn.contains("\u{1b}["),
        "the bar is not redrawn in place: {drawn:?}"
    );
    let live_iops = drawn
        .split(" IOPS  ")
        .filter_map(|before| before.rsplit(['[', ']', ' ']).next())
        .filter_map(|n| n.replace(',', "").parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    assert!(live_iops > 0, "the bar never showed I/O moving: {drawn:?}");

    // Piped: the same run prints its summary and no bar, no control sequences.
    let piped = run_timed(
        Command::new(bin).args(io_args(&t.portals[0])),
        Duration::from_secs(30),
    );
    assert!(piped.ok, "piped io failed: {piped:?}");
    assert!(has_summary(&piped.stdout), "no summary: {piped:?}");
    let all = format!("{}{}", piped.stdout, piped.stderr);
    assert!(
        !all.contains("MB/s"),
        "a bar was printed into a pipe: {all:?}"
    );
    assert!(
        !all.contains('\r') && !all.contains('\u{1b}'),
        "control characters in piped output: {all:?}"
    );
    assert!(piped.stderr.trim().is_empty(), "stderr: {}", piped.stderr);
}
