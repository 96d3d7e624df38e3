//! Acceptance: `GET /metrics` of the target's admin endpoint and of `portshift isns --admin`.
//!
//! - `promtool check metrics` (Debian's `prometheus` package) accepts both documents, taken
//!   after a host did I/O, so that every family has samples (latency histogram included), and
//!   a login to an unknown target is counted as refused (`not_found`);
//! - a real Prometheus server (its own configuration and data directory in a temporary
//!   directory, on loopback, scraping every second) scrapes the target and the iSNS server
//!   during a rebalance (`--balance sessions:2`, three libiscsi `iscsi-perf` hosts through the
//!   first portal), and a PromQL query over its HTTP API shows the move count rise from 0.
//!
//! Needs `prometheus` (prometheus, promtool) and `libiscsi-bin` (iscsi-perf); fails when they
//! are missing. Everything listens on loopback, on ports picked free at run time.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use balancer::EventKind;
use common::{Proc, free_addr, free_port_on_both, isns_server, portshift_server, snapshot};
use common::{tool, wait_for};

const TARGETS: [&str; 3] = [
    "iqn.2024-01.test.metrics:t1",
    "iqn.2024-01.test.metrics:t2",
    "iqn.2024-01.test.metrics:t3",
];

/// `portshift isns --admin` and a two-portal `portshift target` registered with it.
struct Stack {
    portals: [String; 2],
    admin: SocketAddr,
    isns_admin: SocketAddr,
    _target: Proc,
    _isns: Proc,
}

fn start(dir: &Path, extra: &[&str]) -> Stack {
    let isns_admin = free_addr("127.0.0.1");
    let (isns, isns_addr) = isns_server(dir, &["--admin", &isns_admin.to_string()]);
    let port = free_port_on_both();
    let portals = [format!("127.0.0.1:{port}"), format!("127.0.0.2:{port}")];
    let admin = free_addr("127.0.0.1");
    let mut args: Vec<String> = vec!["target".into()];
    for p in &portals {
        args.extend(["--portal".into(), p.clone()]);
    }
    for (i, t) in TARGETS.iter().enumerate() {
        let lun = dir.join(format!("lun{i}.img"));
        args.extend(["--lun".into(), format!("{t}={}", lun.display())]);
    }
    args.extend([
        "--size".into(),
        "64M".into(),
        "--isns".into(),
        isns_addr.to_string(),
        "--admin".into(),
        admin.to_string(),
    ]);
    args.extend(extra.iter().map(|a| a.to_string()));
    let target = portshift_server(&args, admin, &dir.join("target.log"));
    let up = wait_for(Duration::from_secs(10), || {
        TcpStream::connect(isns_admin).ok().map(drop)
    });
    assert!(up.is_some(), "the iSNS admin endpoint never listened");
    Stack {
        portals,
        admin,
        isns_admin,
        _target: target,
        _isns: isns,
    }
}

/// `GET path` over HTTP/1.0 (no chunking); returns (status line, body).
fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head.lines().next().unwrap_or("").to_string();
    (status, body.to_string())
}

/// `promtool check metrics` on `doc`: (success, its output).
fn promtool_check(doc: &str) -> (bool, String) {
    let mut child = Command::new(tool("promtool", "prometheus"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(doc.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// An `iscsi-perf` host (random 8-block reads, 4 in flight) for `seconds`.
fn perf(initiator: &str, url: &str, seconds: u64) -> Proc {
    Proc(
        Command::new(tool("iscsi-perf", "libiscsi-bin"))
            .args(["-t", &seconds.to_string(), "-b", "8", "-m", "4", "-r"])
            .args(["-x", "100", "-i", initiator, url])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run iscsi-perf"),
    )
}

/// The value of the line of `doc` that starts with `series ` (exact series, labels included).
fn sample(doc: &str, series: &str) -> Option<f64> {
    doc.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn promtool_accepts_the_target_and_isns_documents() {
    tool("promtool", "prometheus");
    let dir = tempfile::tempdir().unwrap();
    let stack = start(dir.path(), &[]);
    let p0 = &stack.portals[0];
    let host = "iqn.2024-01.test.metrics:host";
    let mut io = perf(host, &format!("iscsi://{p0}/{}/0", TARGETS[0]), 4);
    // Wait until commands were answered, so the latency histogram has samples.
    let series = format!("portshift_target_portal_commands_total{{portal=\"{p0}\"}}");
    wait_for(Duration::from_secs(15), || {
        let (status, body) = http_get(stack.admin, "/metrics");
        assert!(status.contains(" 200"), "{status}");
        (sample(&body, &series)? > 100.0).then_some(())
    })
    .expect("the target never counted 100 commands through the first portal");
    let _ = io.0.wait();
    // A login to a target that is not served is refused (0x0203) and counted.
    let refused = Command::new(tool("iscsi-inq", "libiscsi-bin"))
        .args([
            "-i",
            host,
            &format!("iscsi://{p0}/iqn.2024-01.test.metrics:none/0"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run iscsi-inq");
    assert!(!refused.success(), "a login to an unknown target succeeded");
    // A command for a LUN the target does not have ends in CHECK CONDITION and is counted.
    let no_lun = Command::new(tool("iscsi-readcapacity16", "libiscsi-bin"))
        .args(["-i", host, &format!("iscsi://{p0}/{}/5", TARGETS[0])])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run iscsi-readcapacity16");
    assert!(
        !no_lun.success(),
        "READ CAPACITY of a missing LUN succeeded"
    );
    let not_found = "portshift_target_logins_total{result=\"not_found\"}";
    let doc = wait_for(Duration::from_secs(5), || {
        let (_, body) = http_get(stack.admin, "/metrics");
        (sample(&body, not_found)? >= 1.0).then_some(body)
    })
    .expect("the refused login was not counted");

    let (ok, out) = promtool_check(&doc);
    assert!(ok, "promtool rejects the target's /metrics: {out}\n{doc}");
    let count =
        format!("portshift_target_portal_command_duration_seconds_count{{portal=\"{p0}\"}}");
    assert!(sample(&doc, &count).unwrap_or(0.0) > 100.0, "{doc}");
    let accepted = "portshift_target_logins_total{result=\"accepted\"}";
    assert!(sample(&doc, accepted).unwrap_or(0.0) >= 1.0, "{doc}");
    let t1 = format!(
        "portshift_target_commands_total{{target=\"{}\"}}",
        TARGETS[0]
    );
    assert!(sample(&doc, &t1).unwrap_or(0.0) > 100.0, "{doc}");
    // Per logical unit: iscsi-perf's reads on LUN 0, and the target's error count.
    let lun0 = |family: &str| {
        let series = format!("{family}{{target=\"{}\",lun=\"0\"}}", TARGETS[0]);
        sample(&doc, &series).unwrap_or(0.0)
    };
    assert!(lun0("portshift_target_lun_commands_total") > 100.0, "{doc}");
    assert!(
        lun0("portshift_target_lun_read_bytes_total") > 100.0 * 512.0,
        "{doc}"
    );
    let errors = format!(
        "portshift_target_errors_total{{target=\"{}\",status=\"check_condition\"}}",
        TARGETS[0]
    );
    assert!(sample(&doc, &errors).unwrap_or(0.0) >= 1.0, "{doc}");

    let (status, isns_doc) = http_get(stack.isns_admin, "/metrics");
    assert!(status.contains(" 200"), "{status}");
    let (ok, out) = promtool_check(&isns_doc);
    assert!(
        ok,
        "promtool rejects the iSNS server's /metrics: {out}\n{isns_doc}"
    );
    // The target registered itself: one entity, two portals, three nodes.
    for (series, want) in [
        ("portshift_isns_objects{kind=\"entity\"}", 1.0),
        ("portshift_isns_objects{kind=\"portal\"}", 2.0),
        ("portshift_isns_objects{kind=\"iscsi_node\"}", 3.0),
    ] {
        assert_eq!(
            sample(&isns_doc, series),
            Some(want),
            "{series}\n{isns_doc}"
        );
    }
    let regs = "portshift_isns_requests_total{function=\"DevAttrReg\",status=\"0\"}";
    assert!(sample(&isns_doc, regs).unwrap_or(0.0) >= 1.0, "{isns_doc}");
    assert!(
        isns_doc.contains(
            "portshift_isns_request_duration_seconds_bucket{function=\"DevAttrReg\",le=\"0.001\"}"
        ),
        "{isns_doc}"
    );
    let (status, json) = http_get(stack.isns_admin, "/status");
    assert!(status.contains(" 200"), "{status}");
    assert!(json.contains("\"IscsiNode\":3"), "{json}");
}

/// Prometheus's answer to an instant `query`: the first result's value, if any.
fn promql(prom: SocketAddr, query: &str) -> Option<f64> {
    let enc: String = query
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let (status, body) = http_get(prom, &format!("/api/v1/query?query={enc}"));
    if !status.contains(" 200") {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    let r = v["data"]["result"].as_array()?.first()?;
    r["value"][1].as_str()?.parse().ok()
}

#[test]
fn prometheus_sees_the_move_count_rise_during_a_rebalance() {
    let prometheus = tool("prometheus", "prometheus");
    tool("iscsi-perf", "libiscsi-bin");
    let dir = tempfile::tempdir().unwrap();
    let stack = start(dir.path(), &["--balance", "sessions:2", "--cooldown", "5"]);

    // 1. Prometheus scrapes both endpoints every second.
    let prom = free_addr("127.0.0.1");
    let conf = dir.path().join("prometheus.yml");
    std::fs::write(
        &conf,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: target\n    static_configs:\n      - targets: ['{}']\n  - job_name: isns\n    static_configs:\n      - targets: ['{}']\n",
            stack.admin, stack.isns_admin
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let _prom = common::spawn_listening(
        Command::new(prometheus)
            .arg(format!("--config.file={}", conf.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={prom}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log),
        prom,
        "prometheus",
        Some(&dir.path().join("prometheus.log")),
    );
    // Both targets are up and the move count is there, at 0, before anything moves.
    let before = wait_for(Duration::from_secs(30), || {
        let up_target = promql(prom, "up{job=\"target\"}")?;
        let up_isns = promql(prom, "up{job=\"isns\"}")?;
        let moves = promql(prom, "portshift_target_balancer_moves_total")?;
        (up_target == 1.0 && up_isns == 1.0).then_some(moves)
    });
    assert_eq!(
        before,
        Some(0.0),
        "Prometheus never scraped both endpoints with the move count at 0"
    );

    // 2. Three hosts through the first portal, one per target, each after the previous logged
    // in: with sessions:2 the balancer moves one to the second portal.
    let p0 = &stack.portals[0];
    let mut hosts = Vec::new();
    for (i, t) in TARGETS.iter().enumerate() {
        let ini = format!("iqn.2024-01.test.metrics:host{}", i + 1);
        hosts.push(perf(&ini, &format!("iscsi://{p0}/{t}/0"), 20));
        let logged_in = wait_for(Duration::from_secs(10), || {
            snapshot(stack.admin)
                .events
                .iter()
                .any(|e| matches!(&e.kind, EventKind::Login { initiator, .. } if *initiator == ini))
                .then_some(())
        });
        assert!(logged_in.is_some(), "{ini} never logged in");
        std::thread::sleep(Duration::from_millis(1500));
    }

    // 3. Prometheus sees the move count rise, and the rise over the last minute.
    let after = wait_for(Duration::from_secs(30), || {
        promql(prom, "portshift_target_balancer_moves_total").filter(|m| *m >= 1.0)
    });
    assert!(
        after.is_some(),
        "Prometheus never saw a move; target events: {:?}",
        snapshot(stack.admin).events
    );
    let rise = wait_for(Duration::from_secs(10), || {
        promql(prom, "increase(portshift_target_balancer_moves_total[1m])").filter(|r| *r > 0.0)
    });
    assert!(
        rise.is_some(),
        "increase() over the last minute shows no move"
    );
    // The target's own count agrees with what Prometheus scraped.
    let moved = snapshot(stack.admin)
        .events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::LogoutRequested { .. }))
        .count();
    assert!(moved as f64 >= after.unwrap(), "{moved} logout requests");
    // The iSNS server's deregistration of the hot portal's group was scraped too.
    let deregs = promql(
        prom,
        "sum(portshift_isns_requests_total{function=~\"DevDereg|DevAttrReg\",status=\"0\"})",
    );
    assert!(deregs.is_some_and(|n| n >= 2.0), "{deregs:?}");

    // 4. The hosts ran to their end without an I/O error.
    for (i, mut h) in hosts.into_iter().enumerate() {
        let status = wait_for(Duration::from_secs(40), || h.0.try_wait().unwrap())
            .unwrap_or_else(|| panic!("host{} still running", i + 1));
        let mut err = String::new();
        if let Some(mut e) = h.0.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        assert!(status.success(), "host{} failed: {err}", i + 1);
    }
}
