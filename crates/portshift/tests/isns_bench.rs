//! `portshift isns-bench` against `portshift isns` and against Debian's isnsd (open-isns-server,
//! which must be installed: the test fails, not skips, without it): every node registered, the
//! queries answered with the nodes' portals, no error; and a clear failure when nothing listens.
//! Not a speed test: nothing here depends on how fast either server is.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::{free_addr, isns_server, isnsd, run_timed};

const NODES: u64 = 200;

/// Runs `portshift isns-bench --json` against `server` (200 nodes, 4 connections, 2 s of
/// queries, then `--cleanup`), asserts it succeeded and returns its JSON report.
fn bench(server: SocketAddr) -> serde_json::Value {
    let run = run_timed(
        Command::new(env!("CARGO_BIN_EXE_portshift")).args([
            "isns-bench",
            "--server",
            &server.to_string(),
            "--nodes",
            &NODES.to_string(),
            "--concurrency",
            "4",
            "--duration",
            "2",
            "--register-timeout",
            "100",
            "--cleanup",
            "--json",
        ]),
        Duration::from_secs(150),
    );
    assert!(
        run.ok,
        "isns-bench against {server} failed: {}\n{}",
        run.stderr, run.stdout
    );
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("isns-bench --json printed no JSON ({e}): {}", run.stdout))
}

/// The report shows every node registered, queries answered and nothing failed.
fn assert_clean(r: &serde_json::Value, server: &str) {
    assert_eq!(r["register"]["registered_nodes"], NODES, "{server}: {r}");
    assert_eq!(r["register"]["completed"], true, "{server}: {r}");
    assert!(r["query"]["queries"].as_u64() > Some(0), "{server}: {r}");
    assert!(
        r["query"]["latency_us"]["p50"].as_u64() > Some(0),
        "{server}: {r}"
    );
    assert_eq!(r["errors"], 0, "{server}: {r}");
    assert_eq!(
        r["cleanup"]["deregistered_entities"],
        NODES.div_ceil(10),
        "{server}: {r}"
    );
}

#[test]
fn registers_and_queries_portshift_isns() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, addr) = isns_server(dir.path(), &[]);
    assert_clean(&bench(addr), "portshift isns");
}

#[test]
fn registers_and_queries_isnsd() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr("127.0.0.1");
    let _server = isnsd(dir.path(), addr);
    assert_clean(&bench(addr), "isnsd");
}

#[test]
fn refused_server_is_a_clear_failure() {
    // A port that was free a moment ago: nothing accepts there.
    let addr = free_addr("127.0.0.1");
    let run = run_timed(
        Command::new(env!("CARGO_BIN_EXE_portshift")).args([
            "isns-bench",
            "--server",
            &addr.to_string(),
            "--nodes",
            "10",
            "--duration",
            "1",
        ]),
        Duration::from_secs(30),
    );
    assert!(!run.ok && !run.timed_out, "{run:?}");
    assert!(
        run.stderr
            .contains(&format!("cannot connect to the iSNS server at {addr}"))
            && run.stderr.contains("refused"),
        "{}",
        run.stderr
    );
}
