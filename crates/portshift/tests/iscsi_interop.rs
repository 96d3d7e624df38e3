//! `portshift target` against stock initiators: libiscsi's tools (libiscsi-bin) and qemu-img,
//! plus malformed PDUs on a raw socket. Loopback only; each test uses its own ports.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Proc, tool};

const IQN: &str = "iqn.2024-01.org.portshift:interop";

/// A `portshift target` child process, killed on drop.
struct TargetProc {
    child: Proc,
    portals: [SocketAddr; 2],
    _dir: tempfile::TempDir,
}

impl TargetProc {
    /// Serves a fresh `size`-byte LUN on 127.0.0.1:PORT and 127.0.0.2:PORT.
    fn start(port: u16, size: &str) -> TargetProc {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("disk.img");
        let portals: [SocketAddr; 2] = [
            format!("127.0.0.1:{port}").parse().unwrap(),
            format!("127.0.0.2:{port}").parse().unwrap(),
        ];
        let child = Command::new(env!("CARGO_BIN_EXE_portshift"))
            .args(["target", "--portal", &portals[0].to_string()])
            .args(["--portal", &portals[1].to_string()])
            .args(["--lun", &format!("{IQN}={}", disk.display())])
            .args(["--size", size])
            .args(["--admin", &format!("127.0.0.1:{}", port + 1)])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn portshift");
        let t = TargetProc {
            child: Proc(child),
            portals,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(portals[1]).is_err() {
            assert!(Instant::now() < deadline, "target did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        t
    }

    fn url(&self, portal: usize) -> String {
        format!("iscsi://{}/{IQN}/0", self.portals[portal])
    }

    fn assert_alive(&mut self) {
        assert!(
            self.child.0.try_wait().unwrap().is_none(),
            "portshift target exited"
        );
    }
}

/// Runs a third-party tool; fails with the package to install when it is missing.
fn run_tool(program: &str, package: &str, args: &[&str]) -> Output {
    Command::new(tool(program, package))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"))
}

fn ok_stdout(program: &str, package: &str, args: &[&str]) -> String {
    let o = run_tool(program, package, args);
    assert!(
        o.status.success(),
        "{program} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn iscsi_ls_inq_and_readcapacity() {
    let t = TargetProc::start(24260, "64M");
    let ls = ok_stdout(
        "iscsi-ls",
        "libiscsi-bin",
        &["-s", &format!("iscsi://{}", t.portals[0])],
    );
    for p in &t.portals {
        assert!(
            ls.contains(&format!("Target:{IQN} Portal:{p},")),
            "portal {p} missing in:\n{ls}"
        );
    }
    assert!(ls.contains("DIRECT_ACCESS"), "{ls}");
    let inq = ok_stdout("iscsi-inq", "libiscsi-bin", &[&t.url(0)]);
    assert!(inq.contains("Vendor:PORTSHFT"), "{inq}");
    for page in ["0x00", "0x80", "0x83", "0xb0"] {
        let out = ok_stdout(
            "iscsi-inq",
            "libiscsi-bin",
            &["-e", "1", "-c", page, &t.url(1)],
        );
        assert!(!out.is_empty(), "VPD page {page} empty");
    }
    let cap = ok_stdout("iscsi-readcapacity16", "libiscsi-bin", &[&t.url(1)]);
    assert!(cap.contains("Total size:67108864"), "{cap}");
}

#[test]
fn qemu_img_round_trip_is_byte_identical() {
    let t = TargetProc::start(24270, "64M");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.raw");
    let back = dir.path().join("back.raw");
    let mut data = vec![0u8; 64 << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for chunk in data.chunks_mut(8) {
        // xorshift64: incompressible, reproducible content.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(&src, &data).unwrap();
    let src_s = src.to_str().unwrap();
    let back_s = back.to_str().unwrap();
    ok_stdout(
        "qemu-img",
        "qemu-utils qemu-block-extra",
        &["convert", "-n", "-f", "raw", "-O", "raw", src_s, &t.url(0)],
    );
    // Read back through the other portal.
    ok_stdout(
        "qemu-img",
        "qemu-utils qemu-block-extra",
        &["convert", "-f", "raw", "-O", "raw", &t.url(1), back_s],
    );
    let got = std::fs::read(&back).unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data, "data read back differs from data written");
}

/// The families of iscsi-test-cu that must pass completely.
const REQUIRED: &[&str] = &[
    "Inquiry",
    "Mandatory",
    "TestUnitReady",
    "ReadCapacity10",
    "ReadCapacity16",
    "Read6",
    "Read10",
    "Read12",
    "Read16",
    "Write10",
    "Write12",
    "Write16",
    "iSCSIcmdsn",
    "iSCSIdatasn",
    "iSCSIResiduals",
    "MultipathIO",
];

/// What one iscsi-test-cu run reported.
#[derive(Debug, Default)]
struct CuRun {
    ran: u32,
    passed: u32,
    failed: u32,
    /// "Suite.Test" of each failed test.
    failures: Vec<String>,
    /// (suite, message) of each skip for a missing command.
    missing: Vec<(String, String)>,
}

fn parse_cu(out: &str) -> CuRun {
    let mut run = CuRun::default();
    let mut suite = String::new();
    let mut test = String::new();
    for line in out.lines() {
        if let Some(s) = line.strip_prefix("Suite: ") {
            suite = s.trim().to_string();
        }
        if let Some((_, rest)) = line.split_once("Test: ") {
            test = rest.split(" ...").next().unwrap_or("").to_string();
        }
        if line.contains("...FAILED") || line.trim() == "FAILED" {
            run.failures.push(format!("{suite}.{test}"));
        }
        if let Some((_, msg)) = line.split_once("[SKIPPED] ")
            && msg.contains("is not implemented")
            // Printed by every suite's clean-up, not by a test.
            && !msg.contains("PERSISTENT RESERVE IN")
        {
            run.missing.push((suite.clone(), msg.trim().to_string()));
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.first() == Some(&"tests") && f.len() >= 5 {
            run.ran = f[2].parse().unwrap_or(0);
            run.passed = f[3].parse().unwrap_or(0);
            run.failed = f[4].parse().unwrap_or(0);
        }
    }
    run.failures.dedup();
    run
}

fn docs_conformance() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/conformance.md")
}

/// The pass count recorded in docs/conformance.md (`passed: N`).
fn recorded_passes() -> u32 {
    let doc = std::fs::read_to_string(docs_conformance()).expect("docs/conformance.md");
    doc.lines()
        .find_map(|l| l.trim().strip_prefix("- passed: "))
        .and_then(|n| n.trim().parse().ok())
        .expect("docs/conformance.md has a `- passed: N` line")
}

#[test]
fn libiscsi_conformance_suite() {
    let t = TargetProc::start(24280, "256M");
    let o = run_tool(
        "iscsi-test-cu",
        "libiscsi-bin",
        &[
            "--dataloss",
            "-i",
            "iqn.2024-01.org.portshift:cu-1",
            "-I",
            "iqn.2024-01.org.portshift:cu-2",
            "-t",
            "ALL",
            &t.url(0),
            &t.url(1),
        ],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    let run = parse_cu(&out);
    eprintln!(
        "iscsi-test-cu: ran {} passed {} failed {}; failures {:?}; missing {:?}",
        run.ran, run.passed, run.failed, run.failures, run.missing
    );
    assert!(run.ran > 200, "iscsi-test-cu did not run:\n{out}");
    let bad: Vec<&String> = run
        .failures
        .iter()
        .filter(|f| REQUIRED.iter().any(|s| f.split('.').next() == Some(s)))
        .collect();
    let missing: Vec<&(String, String)> = run
        .missing
        .iter()
        .filter(|(s, _)| REQUIRED.contains(&s.as_str()))
        .collect();
    assert!(bad.is_empty(), "required families failed: {bad:?}");
    assert!(
        missing.is_empty(),
        "required families skipped for missing commands: {missing:?}"
    );
    let floor = recorded_passes();
    assert!(
        run.passed >= floor,
        "{} passed, fewer than the {floor} recorded in docs/conformance.md",
        run.passed
    );
}

/// The persistent reservation suites of iscsi-test-cu (SPC-4 §5.9).
const PR_SUITES: &[&str] = &[
    "PrinReadKeys",
    "PrinServiceactionRange",
    "PrinReportCapabilities",
    "ProutRegister",
    "ProutReserve",
    "ProutClear",
    "ProutPreempt",
];

/// Every persistent reservation suite runs through the two portals (two initiator names, one
/// per portal) and every test in it passes: none fails, none is inactive, and none prints
/// `[SKIPPED]` (which CUnit would count as passed).
#[test]
fn libiscsi_persistent_reservation_suites_run_and_pass() {
    let t = TargetProc::start(24300, "64M");
    for suite in PR_SUITES {
        let o = run_tool(
            "iscsi-test-cu",
            "libiscsi-bin",
            &[
                "--dataloss",
                "-i",
                "iqn.2024-01.org.portshift:pr-1",
                "-I",
                "iqn.2024-01.org.portshift:pr-2",
                "-t",
                &format!("ALL.{suite}"),
                &t.url(0),
                &t.url(1),
            ],
        );
        let out = String::from_utf8_lossy(&o.stdout);
        let tests = out
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f.first() == Some(&"tests") && f.len() >= 6)
            .unwrap_or_else(|| panic!("{suite}: no CUnit summary:\n{out}"));
        let n = |i: usize| tests[i].parse::<u32>().unwrap_or(u32::MAX);
        let (total, ran, passed, failed, inactive) = (n(1), n(2), n(3), n(4), n(5));
        assert!(total > 0, "{suite}: no tests:\n{out}");
        assert_eq!(
            (ran, passed, failed, inactive),
            (total, total, 0, 0),
            "{suite}: not every test ran and passed:\n{out}"
        );
        assert!(!out.contains("[SKIPPED]"), "{suite} skipped:\n{out}");
        eprintln!("{suite}: {passed} of {total} passed");
    }
}

/// A raw TCP session that logs in (Normal session) and can send PDUs.
fn raw_login(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let text = format!(
        "InitiatorName=iqn.2024-01.org.portshift:raw\0TargetName={IQN}\0SessionType=Normal\0AuthMethod=None\0"
    );
    let mut pdu = vec![0u8; 48];
    pdu[0] = 0x43; // Login Request, immediate
    pdu[1] = 0x80 | 0x04 | 0x03; // T, CSG=1, NSG=3
    let len = text.len() as u32;
    pdu[5..8].copy_from_slice(&len.to_be_bytes()[1..]);
    pdu[8] = 0x80; // ISID type random
    pdu[16..20].copy_from_slice(&1u32.to_be_bytes());
    pdu.extend_from_slice(text.as_bytes());
    while !pdu.len().is_multiple_of(4) {
        pdu.push(0);
    }
    s.write_all(&pdu).unwrap();
    let mut hdr = [0u8; 48];
    s.read_exact(&mut hdr).unwrap();
    assert_eq!(hdr[0] & 0x3f, 0x23, "login response");
    assert_eq!((hdr[36], hdr[37]), (0, 0), "login accepted");
    let dsl = u32::from_be_bytes([0, hdr[5], hdr[6], hdr[7]]) as usize;
    let mut data = vec![0u8; dsl.div_ceil(4) * 4];
    s.read_exact(&mut data).unwrap();
    s
}

/// Sends `bytes` and returns the opcode of the first PDU answered (its data segment read and
/// dropped), or None when the target closed the connection.
fn answer_opcode(s: &mut TcpStream, bytes: &[u8]) -> Option<u8> {
    s.write_all(bytes).ok()?;
    let mut hdr = [0u8; 48];
    s.read_exact(&mut hdr).ok()?;
    let dsl = u32::from_be_bytes([0, hdr[5], hdr[6], hdr[7]]) as usize;
    let mut data = vec![0u8; dsl.div_ceil(4) * 4];
    s.read_exact(&mut data).ok()?;
    Some(hdr[0] & 0x3f)
}

#[test]
fn malformed_pdus_get_reject_or_close_while_others_keep_working() {
    let mut t = TargetProc::start(24290, "16M");
    // A libiscsi tool works throughout.
    let inq = || ok_stdout("iscsi-inq", "libiscsi-bin", &[&t.url(1)]);
    inq();

    // Unknown opcode 0x1c in full feature phase: Reject.
    let mut s = raw_login(t.portals[0]);
    let mut bad = vec![0u8; 48];
    bad[0] = 0x1c;
    assert_eq!(answer_opcode(&mut s, &bad), Some(0x3f));
    // SNACK at ERL 0: Reject, and the session still answers a NOP-Out.
    let mut snack = vec![0u8; 48];
    snack[0] = 0x10;
    assert_eq!(answer_opcode(&mut s, &snack), Some(0x3f));
    let mut nop = vec![0u8; 48];
    nop[0] = 0x40;
    nop[1] = 0x80;
    nop[16..20].copy_from_slice(&7u32.to_be_bytes());
    nop[20..24].copy_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(answer_opcode(&mut s, &nop), Some(0x20));
    // Oversized data segment: the connection is closed.
    let mut big = vec![0u8; 48];
    big[0] = 0x40;
    big[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
    assert_eq!(answer_opcode(&mut s, &big), None);

    // Garbage before login: closed.
    let mut g = TcpStream::connect(t.portals[0]).unwrap();
    g.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
    assert_eq!(answer_opcode(&mut g, &garbage), None);

    // Truncated PDU then hang-up: nothing breaks.
    let mut tr = raw_login(t.portals[1]);
    tr.write_all(&nop[..20]).unwrap();
    drop(tr);

    inq();
    t.assert_alive();
}
