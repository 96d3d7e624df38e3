//! Test harness: a real Debian `tgtd` on loopback with a file-backed LUN 1.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running tgtd; SIGKILLed on drop (tgtd ignores SIGTERM while it has targets).
pub struct Tgtd {
    pub portal: SocketAddr,
    pub target: String,
    pub control_port: u16,
    pub dir: tempfile::TempDir,
    child: Child,
}

fn require(tool: &str, package: &str) {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "`{tool}` is missing: install the Debian package `{package}` (apt-get install -y {package})"
    );
}

fn free_port(ip: &str) -> u16 {
    let l = TcpListener::bind((ip, 0)).expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

impl Tgtd {
    /// Start tgtd on 127.0.0.9 with target `iqn` and a LUN of `size` bytes.
    pub fn start(iqn: &str, size: u64) -> Tgtd {
        require("tgtd", "tgt");
        require("tgtadm", "tgt");
        let port = free_port("127.0.0.9");
        let control_port = 10000 + (port % 20000);
        let dir = tempfile::tempdir().expect("tempdir");
        let lun: PathBuf = dir.path().join("lun1.img");
        let f = std::fs::File::create(&lun).expect("create LUN file");
        f.set_len(size).expect("size LUN file");
        let log = std::fs::File::create(dir.path().join("tgtd.log")).expect("log file");
        let child = Command::new("tgtd")
            .args(["-f", "-C", &control_port.to_string(), "--iscsi"])
            .arg(format!("portal=127.0.0.9:{port}"))
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn tgtd");
        let mut t = Tgtd {
            portal: SocketAddr::from(([127, 0, 0, 9], port)),
            target: iqn.to_string(),
            control_port,
            dir,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !t.adm(&["--op", "show", "--mode", "target"]) {
            if Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(t.dir.path().join("tgtd.log")).unwrap_or_default();
                let status = t.child.try_wait();
                panic!("tgtd did not come up ({status:?}); log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(t.adm(&["--op", "new", "--mode", "target", "--tid", "1", "-T", iqn]));
        let lun = lun.to_string_lossy().to_string();
        assert!(t.adm(&[
            "--op",
            "new",
            "--mode",
            "logicalunit",
            "--tid",
            "1",
            "--lun",
            "1",
            "-b",
            &lun
        ]));
        assert!(t.adm(&[
            "--op", "bind", "--mode", "target", "--tid", "1", "-I", "ALL"
        ]));
        while TcpStream::connect(t.portal).is_err() {
            assert!(Instant::now() < deadline, "tgtd portal not listening");
            std::thread::sleep(Duration::from_millis(50));
        }
        t
    }

    /// Run tgtadm against this instance; true on success.
    pub fn adm(&self, args: &[&str]) -> bool {
        Command::new("tgtadm")
            .args(["-C", &self.control_port.to_string(), "--lld", "iscsi"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }
}

impl Drop for Tgtd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run the verifying workload on `init`, shut it down, and collect every event it sent
/// (the channel closes once the initiator and its manager task are gone).
pub async fn run_to_end(
    init: initiator::BalancedInitiator,
    mut events: tokio::sync::mpsc::UnboundedReceiver<initiator::InitiatorEvent>,
    wc: &initiator::WorkloadConfig,
) -> (initiator::WorkloadReport, Vec<initiator::InitiatorEvent>) {
    let r = initiator::run_workload(&init, wc).await.expect("workload");
    init.shutdown(Duration::from_secs(5)).await;
    drop(init);
    let mut seen = Vec::new();
    while let Some(e) = events.recv().await {
        seen.push(e);
    }
    (r, seen)
}

/// A two-worker tokio runtime for a test.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}
