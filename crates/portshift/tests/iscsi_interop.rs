//! `portshift target` against stock initiators: libiscsi's tools (libiscsi-bin) and qemu-img,
//! plus malformed PDUs on a raw socket. Loopback only; each test uses its own ports.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::tgtd::Tgtd;
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
        TargetProc::start_with(port, size, &[])
    }

    /// [`TargetProc::start`] with more `portshift target` arguments.
    fn start_with(port: u16, size: &str, extra: &[&str]) -> TargetProc {
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
            .args(extra)
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

/// How one test of an iscsi-test-cu run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// It ran, and CUnit says it passed.
    Passed,
    /// CUnit says FAILED.
    Failed,
    /// CUnit says passed, but the test printed `[SKIPPED] MESSAGE` before that verdict: it
    /// returned early without testing (CUnit counts it as passed).
    Skipped(String),
}

/// One test of an iscsi-test-cu run.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CuTest {
    /// "Suite.Test".
    name: String,
    verdict: Verdict,
}

/// What one iscsi-test-cu run reported, test by test.
#[derive(Debug, Default)]
struct CuRun {
    tests: Vec<CuTest>,
}

impl CuRun {
    fn with(&self, f: impl Fn(&Verdict) -> bool) -> Vec<&CuTest> {
        self.tests.iter().filter(|t| f(&t.verdict)).collect()
    }
    /// Tests that ran and passed (a skip is not a pass).
    fn passed(&self) -> Vec<&CuTest> {
        self.with(|v| *v == Verdict::Passed)
    }
    fn failed(&self) -> Vec<&CuTest> {
        self.with(|v| *v == Verdict::Failed)
    }
    fn skipped(&self) -> Vec<&CuTest> {
        self.with(|v| matches!(v, Verdict::Skipped(_)))
    }
    /// One line per outcome, for the log and docs/conformance.md.
    fn tally(&self, what: &str) -> String {
        let names = |v: Vec<&CuTest>| {
            v.iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        };
        format!(
            "{what}: {} tests, {} ran and passed, {} failed, {} skipped\n  failed: {}\n  skipped: {}",
            self.tests.len(),
            self.passed().len(),
            self.failed().len(),
            self.skipped().len(),
            names(self.failed()),
            names(self.skipped()),
        )
    }
}

/// Reads iscsi-test-cu's CUnit output. A test starts at `  Test: NAME ...`; its verdict is
/// `passed` or `FAILED`, printed right after the `...` or, when the test printed something,
/// at the start of a later line. A `[SKIPPED]` message printed before the verdict makes the
/// test a skip; anything after the verdict (on the same line or the next ones) is the
/// clean-up between tests and suites, e.g. "[SKIPPED] PERSISTENT RESERVE IN is not
/// implemented." from every suite's teardown. `[FAILED]` messages do not decide anything:
/// CUnit's verdict does.
fn parse_cu(out: &str) -> CuRun {
    let mut run = CuRun::default();
    let mut suite = String::new();
    // (name, verdict so far, first skip message before the verdict)
    let mut current: Option<(String, Option<bool>, Option<String>)> = None;
    let finish = |run: &mut CuRun, c: Option<(String, Option<bool>, Option<String>)>| {
        if let Some((name, Some(passed), skip)) = c {
            let verdict = match (passed, skip) {
                (false, _) => Verdict::Failed,
                (true, Some(msg)) => Verdict::Skipped(msg),
                (true, None) => Verdict::Passed,
            };
            run.tests.push(CuTest { name, verdict });
        }
    };
    for line in out.lines() {
        if line.starts_with("Run Summary") {
            break;
        }
        if let Some(s) = line.strip_prefix("Suite: ") {
            suite = s.trim().to_string();
            continue;
        }
        let mut rest = line;
        if let Some(t) = line.strip_prefix("  Test: ")
            && let Some((name, after)) = t.split_once(" ...")
        {
            finish(&mut run, current.take());
            current = Some((format!("{suite}.{name}"), None, None));
            rest = after;
        }
        let Some((_, verdict @ None, skip)) = current.as_mut() else {
            continue;
        };
        if rest.starts_with("passed") {
            *verdict = Some(true);
        } else if rest.starts_with("FAILED") {
            *verdict = Some(false);
        } else if let Some((_, msg)) = rest.split_once("[SKIPPED]")
            && skip.is_none()
        {
            *skip = Some(msg.trim().to_string());
        }
    }
    finish(&mut run, current.take());
    run
}

fn docs_conformance() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/conformance.md")
}

/// The floor recorded in docs/conformance.md: `- ran and passed: N` (the first such line,
/// portshift's full run).
fn recorded_passes() -> usize {
    let doc = std::fs::read_to_string(docs_conformance()).expect("docs/conformance.md");
    doc.lines()
        .find_map(|l| l.trim().strip_prefix("- ran and passed: "))
        .and_then(|n| n.trim().parse().ok())
        .expect("docs/conformance.md has a `- ran and passed: N` line")
}

/// The tests that need more than one logical block per physical block (libiscsi's
/// CHECK_FOR_LBPPB_GT_1); run against a LUN with 4 KiB physical blocks.
const LBPPB_TESTS: &str = "SCSI.CompareAndWrite.InvalidDataOutSize,SCSI.WriteSame10.UnmapUnaligned,\
SCSI.WriteSame10.InvalidDataOutSize,SCSI.WriteSame16.UnmapUnaligned,SCSI.WriteSame16.InvalidDataOutSize";

/// Runs `iscsi-test-cu --dataloss --allow-sanitize -t TESTS` over the two URLs (two
/// initiator names) and parses what it printed.
fn iscsi_test_cu(tests: &str, urls: [&str; 2]) -> (CuRun, String) {
    let o = run_tool(
        "iscsi-test-cu",
        "libiscsi-bin",
        &[
            "--dataloss",
            "--allow-sanitize",
            "-i",
            "iqn.2024-01.org.portshift:cu-1",
            "-I",
            "iqn.2024-01.org.portshift:cu-2",
            "-t",
            tests,
            urls[0],
            urls[1],
        ],
    );
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    (parse_cu(&out), out)
}

#[test]
fn libiscsi_conformance_suite() {
    // portshift, two portals, 512-byte physical blocks: the whole suite.
    let t = TargetProc::start(24280, "256M");
    let (run, out) = iscsi_test_cu("ALL", [&t.url(0), &t.url(1)]);
    drop(t);
    // portshift with 4 KiB physical blocks: the tests that need LBPPB > 1.
    let t4 = TargetProc::start_with(24283, "256M", &["--physical-block-size", "4096"]);
    let (lbppb, lbppb_out) = iscsi_test_cu(LBPPB_TESTS, [&t4.url(0), &t4.url(1)]);
    drop(t4);
    // Debian's tgtd, the same suite (one portal: the same URL twice).
    let tgtd_iqn = "iqn.2024-01.org.portshift:tgtd";
    let tgtd = Tgtd::start(tgtd_iqn, 256 << 20);
    let url = format!("iscsi://{}/{tgtd_iqn}/1", tgtd.portal);
    let (tg, tg_out) = iscsi_test_cu("ALL", [&url, &url]);
    drop(tgtd);
    eprintln!("{}", run.tally("portshift"));
    eprintln!("{}", lbppb.tally("portshift, 4 KiB physical blocks"));
    eprintln!("{}", tg.tally("tgtd"));

    assert_eq!(run.tests.len(), 230, "iscsi-test-cu did not run:\n{out}");
    assert_eq!(
        lbppb.tests.len(),
        5,
        "LBPPB tests did not run:\n{lbppb_out}"
    );
    assert!(
        tg.tests.len() > 200,
        "iscsi-test-cu did not run on tgtd:\n{tg_out}"
    );
    let failed: Vec<&CuTest> = run.failed().into_iter().chain(lbppb.failed()).collect();
    assert!(failed.is_empty(), "failed on portshift: {failed:?}");
    assert!(
        lbppb.skipped().is_empty(),
        "skipped with 4 KiB physical blocks: {:?}",
        lbppb.skipped()
    );
    let family = |t: &CuTest| t.name.split('.').next().unwrap_or("").to_string();
    let missing: Vec<&CuTest> = run
        .skipped()
        .into_iter()
        .filter(|t| REQUIRED.contains(&family(t).as_str()))
        .filter(|t| matches!(&t.verdict, Verdict::Skipped(m) if m.contains("not implemented")))
        .collect();
    assert!(
        missing.is_empty(),
        "required families skipped for missing commands: {missing:?}"
    );
    let floor = recorded_passes();
    assert!(
        run.passed().len() >= floor,
        "{} ran and passed, fewer than the {floor} recorded in docs/conformance.md",
        run.passed().len()
    );
}

/// Output captured from iscsi-test-cu 1.19.0 (Debian) against portshift: verdicts after
/// output, skips before and after verdicts, clean-up messages, a failure with its assertion.
const CAPTURED: &str = "\
Suite: CompareAndWrite
  Test: Simple ...passed
  Test: InvalidDataOutSize ...    [SKIPPED] LBPPB < 2. Skipping test
passed    [SKIPPED] PERSISTENT RESERVE IN is not implemented.
    [SKIPPED] PERSISTENT RESERVE IN is not implemented.

Suite: GetLBAStatus
  Test: Simple ...passed
  Test: UnmapSingle ...FAILED
    1. test_get_lba_status_unmap_single.c:135  - CU_FAIL(\"[FAILED] GETLBASTATUS command\")    [SKIPPED] PERSISTENT RESERVE IN is not implemented.
    [SKIPPED] PERSISTENT RESERVE IN is not implemented.

Suite: MultipathIO
  Test: LUNReset ...passed    [FAILED] PRIN command: failed with sense. SENSE KEY:UNIT_ATTENTION(6) ASCQ:BUS_RESET(0x2900)
    [FAILED] PRIN command: failed with sense. SENSE KEY:UNIT_ATTENTION(6) ASCQ:BUS_RESET(0x2900)

Suite: Sanitize
  Test: Readonly ...    SWP is not changeable
FAILED
    1. test_sanitize_readonly.c:60  - CU_ASSERT_EQUAL(ret,0)
  Test: Reservations ...    [SKIPPED] SANITIZE OVERWRITE is not implemented according to REPORT_SUPPORTED_OPCODES.
    [SKIPPED] SANITIZE BLOCK_ERASE is not implemented according to REPORT_SUPPORTED_OPCODES.
passed
  Test: Reset ...    [SKIPPED] SANITIZE OVERWRITE is not implemented according to REPORT_SUPPORTED_OPCODES.
passed    [FAILED] PRIN command: failed with sense. RESERVATION CONFLICT
    [SKIPPED] PERSISTENT RESERVE IN is not implemented.

Suite: iSCSIdatasn
  Test: iSCSIDataSnInvalid ...    [FAILED] WRITE10 command failed with status 2 / sense key COMMAND ABORTED(0x0b) / ASCQ (null)(0x4b00)
    [FAILED] WRITE10 command failed with status 2 / sense key COMMAND ABORTED(0x0b) / ASCQ (null)(0x4b00)
passed    [SKIPPED] PERSISTENT RESERVE IN is not implemented.
    [SKIPPED] PERSISTENT RESERVE IN is not implemented.


Run Summary:    Type  Total    Ran Passed Failed Inactive
              suites     51     51    n/a      0        0
               tests    230    230    229      1        0
";

#[test]
fn cu_parser_counts_a_skip_before_the_verdict_only() {
    let run = parse_cu(CAPTURED);
    let got: Vec<(&str, &Verdict)> = run
        .tests
        .iter()
        .map(|t| (t.name.as_str(), &t.verdict))
        .collect();
    let skip = |m: &str| Verdict::Skipped(m.to_string());
    assert_eq!(
        got,
        [
            ("CompareAndWrite.Simple", &Verdict::Passed),
            (
                "CompareAndWrite.InvalidDataOutSize",
                &skip("LBPPB < 2. Skipping test")
            ),
            ("GetLBAStatus.Simple", &Verdict::Passed),
            ("GetLBAStatus.UnmapSingle", &Verdict::Failed),
            // The clean-up's [FAILED] after the verdict does not change it.
            ("MultipathIO.LUNReset", &Verdict::Passed),
            ("Sanitize.Readonly", &Verdict::Failed),
            (
                "Sanitize.Reservations",
                &skip(
                    "SANITIZE OVERWRITE is not implemented according to REPORT_SUPPORTED_OPCODES."
                )
            ),
            (
                "Sanitize.Reset",
                &skip(
                    "SANITIZE OVERWRITE is not implemented according to REPORT_SUPPORTED_OPCODES."
                )
            ),
            // [FAILED] messages the test expected, then CUnit's verdict: passed.
            ("iSCSIdatasn.iSCSIDataSnInvalid", &Verdict::Passed),
        ]
    );
    assert_eq!(
        (run.passed().len(), run.failed().len(), run.skipped().len()),
        (4, 2, 3)
    );
}

#[test]
fn cu_parser_reads_a_whole_captured_run() {
    // The full output of the run recorded in docs/conformance.md (portshift, all tests).
    let out = include_str!("data/iscsi-test-cu-portshift.txt");
    let run = parse_cu(out);
    assert_eq!(run.tests.len(), 230);
    assert_eq!(
        (run.passed().len(), run.failed().len(), run.skipped().len()),
        (187, 0, 43)
    );
    // Every test CUnit counted is accounted for: its summary says 230 run, 230 passed.
    assert!(out.contains("tests    230    230    230      0"));
    assert!(run.skipped().iter().all(|t| {
        t.name.starts_with("Prin")
            || t.name.starts_with("Prout")
            || t.name.starts_with("Sanitize.")
            || t.name.starts_with("PreventAllow.")
            || t.name.starts_with("WriteSame1")
            || [
                "CompareAndWrite.InvalidDataOutSize",
                "ReadOnly.ReadOnlySBC",
                "StartStopUnit.Simple",
            ]
            .contains(&t.name.as_str())
    }));
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

/// MODE SENSE (6) of the Caching page (DBD) and READ CAPACITY (16) through portshift's own
/// initiator: the WCE bit and the LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT.
fn wce_and_lbppbe(portal: SocketAddr) -> (bool, u8) {
    use initiator::cdb::{ScsiRequest, Transfer};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let cfg = initiator::SessionConfig::new("iqn.2024-01.org.portshift:wce", IQN);
        let s = initiator::Session::login(portal, &cfg)
            .await
            .expect("login");
        let mut cdb = [0u8; 16];
        cdb[..6].copy_from_slice(&[0x1A, 0x08, 0x08, 0, 255, 0]);
        let req = ScsiRequest {
            lun: 0,
            cdb,
            transfer: Transfer::Read(255),
        };
        let ms = s.client.execute(req).await.expect("MODE SENSE");
        assert_eq!(ms.data[4], 0x08, "Caching page");
        let rc = s
            .client
            .execute(initiator::cdb::read_capacity16(0))
            .await
            .expect("READ CAPACITY (16)");
        s.logout(Duration::from_secs(5)).await.ok();
        (ms.data[6] & 0x04 != 0, rc.data[13] & 0x0F)
    })
}

#[test]
fn write_through_and_physical_block_size_reach_the_initiator() {
    let cached = TargetProc::start(24290, "16M");
    assert_eq!(
        wce_and_lbppbe(cached.portals[0]),
        (true, 0),
        "default: write cache on (WCE=1), 512-byte physical blocks"
    );
    drop(cached);
    let t = TargetProc::start_with(
        24293,
        "16M",
        &["--write-through", "--physical-block-size", "4096"],
    );
    assert_eq!(
        wce_and_lbppbe(t.portals[1]),
        (false, 3),
        "--write-through: WCE=0; 4 KiB physical blocks: 2^3 logical blocks each"
    );
}
