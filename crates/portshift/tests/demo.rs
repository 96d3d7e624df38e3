//! `portshift demo` is the README's main job: it must show the whole flow and exit 0.

use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn demo_rebalances_and_restores_with_verified_io() {
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_portshift"))
        .args(["demo", "--seconds", "8"])
        .output()
        .expect("run portshift demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "demo failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "demo took {:?}",
        start.elapsed()
    );
    // The patent's flow, in order, for at least one host.
    let order = [
        "BEFORE",
        "registration deleted",
        "logout requested",
        "received Async Message \"logout requested\"",
        "asked iSNS again",
        "MOVED 127.0.0.1:",
        "registration restored",
        "summary:",
        "OK: rebalanced",
    ];
    let mut at = 0;
    for needle in order {
        let pos = stdout[at..]
            .find(needle)
            .unwrap_or_else(|| panic!("demo output lacks {needle:?} after byte {at}:\n{stdout}"));
        at += pos + needle.len();
    }
    // The moved host logged in through the second portal.
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("logged in through 127.0.0.2:")),
        "{stdout}"
    );
    // Every host reports zero errors and zero mismatches.
    let hosts: Vec<&str> = stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("host") && l.contains("I/Os"))
        .collect();
    assert_eq!(hosts.len(), 3, "{stdout}");
    for h in hosts {
        assert!(h.contains(" 0 errors, 0 mismatches"), "{h}");
    }
}
