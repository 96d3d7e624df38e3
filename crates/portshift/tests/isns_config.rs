//! `portshift isns --config FILE.toml` against the binary and isnsadm: the file's listen
//! addresses are served and its control node may deregister another entity's node while
//! another node may not; `--check-config` prints the effective settings (flags applied) or
//! names the line of a problem.
//!
//! Everything listens on loopback, on ports picked free at run time.

mod common;

use std::path::Path;
use std::process::Command;

use common::{free_addr, isnsadm, isnsadm_conf, portshift_server};

const A: &str = "iqn.2024-01.test:cfg-a";
const B: &str = "iqn.2024-01.test:cfg-b";
const CTL: &str = "iqn.2024-01.test:cfg-admin";

fn check_config(file: &Path, flags: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_portshift"))
        .args(["isns", "--check-config"])
        .arg(file)
        .args(flags)
        .output()
        .expect("run portshift");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_file_sets_listen_addresses_and_control_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let file = dir.path().join("isns.toml");
    std::fs::write(
        &file,
        format!(
            "version = 1\nlisten = [\"{first}\", \"{second}\"]\ndatabase = \"isns.redb\"\n\
             control_nodes = [\"{CTL}\"]\n"
        ),
    )
    .unwrap();
    let args: Vec<String> = vec!["isns".into(), "--config".into(), file.display().to_string()];
    let _server = portshift_server(&args, first, &dir.path().join("isns.log"));
    assert!(
        dir.path().join("isns.redb").exists(),
        "database beside the file"
    );
    let as_a = isnsadm_conf(dir.path(), "a.conf", first, A);
    let as_b = isnsadm_conf(dir.path(), "b.conf", second, B);
    let as_ctl = isnsadm_conf(dir.path(), "ctl.conf", first, CTL);
    let target_a = format!("target={A}");
    let target_b = format!("target={B}");
    let reg_a = [
        "--register",
        "entity=cfg-ea",
        &target_a,
        "portal=127.0.0.1:3260",
    ];
    let reg_b = [
        "--register",
        "entity=cfg-eb",
        &target_b,
        "portal=127.0.0.1:3261",
    ];
    assert!(isnsadm(&as_a, &reg_a).0);
    // Through the second listen address.
    assert!(isnsadm(&as_b, &reg_b).0);
    let dereg_a = format!("iscsi-name={A}");
    let (ok, _) = isnsadm(&as_b, &["--deregister", &dereg_a]);
    assert!(!ok, "a node of another entity may not deregister {A}");
    let nodes = isnsadm(&as_b, &["--list", "nodes"]).1;
    assert!(nodes.contains(A), "{nodes}");
    assert!(
        isnsadm(&as_ctl, &["--deregister", &dereg_a]).0,
        "the control node may"
    );
    let nodes = isnsadm(&as_b, &["--list", "nodes"]).1;
    assert!(!nodes.contains(A) && nodes.contains(B), "{nodes}");
}

#[test]
fn check_config_prints_the_effective_settings_or_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/isns.toml");
    let (ok, out, err) = check_config(&example, &["--esi-min-interval", "30"]);
    assert!(ok, "{err}");
    assert!(out.contains("valid"), "{out}");
    assert!(
        out.contains("control_nodes = [\"iqn.2024-01.com.example:isns-admin\"]"),
        "{out}"
    );
    assert!(
        out.contains("listen = [\"127.0.0.1:3205\", \"[::1]:3205\"]"),
        "{out}"
    );
    // The flag overrides the file's 60.
    assert!(out.contains("min_interval = 30\n"), "{out}");
    assert!(out.contains("default_discovery_domain = true"), "{out}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "version = 1\n\n[limits]\nmax_object_per_entity = 5\n").unwrap();
    let (ok, out, err) = check_config(&bad, &[]);
    assert!(!ok);
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("bad.toml:4:1: unknown field `max_object_per_entity`"),
        "{err}"
    );
}
