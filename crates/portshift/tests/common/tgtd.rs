//! Debian's tgtd for interop tests: one target with one file-backed LUN (LUN 1; LUN 0 is its
//! controller), bound to every initiator, on a private control port, killed on drop.
//!
//! Each test file uses part of this module, hence the `dead_code` allow.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{Proc, free_addr, tool, wait_for};

pub struct Tgtd {
    /// Its iSCSI portal, on 127.0.0.9.
    pub portal: SocketAddr,
    /// Its control port (tgtadm -C).
    pub control: u16,
    _proc: Proc,
    _dir: tempfile::TempDir,
}

impl Tgtd {
    /// tgtd serving target `iqn` with a LUN 1 of `size` bytes. A private control port (tgtd
    /// takes up to 32767); another one if the daemon dies or does not answer (the port's
    /// socket held by another tgtd on this machine).
    pub fn start(iqn: &str, size: u64) -> Tgtd {
        let dir = tempfile::tempdir().unwrap();
        let lun = dir.path().join("lun1.img");
        std::fs::File::create(&lun).unwrap().set_len(size).unwrap();
        for attempt in 0..5u32 {
            let portal = free_addr("127.0.0.9");
            let control = 10_000 + (portal.port() % 20_000);
            let log = dir.path().join(format!("tgtd-{attempt}.log"));
            let child = Command::new(tool("tgtd", "tgt"))
                .args(["-f", "-C", &control.to_string(), "--iscsi"])
                .arg(format!("portal={portal}"))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .expect("spawn tgtd");
            let mut t = Tgtd {
                portal,
                control,
                _proc: Proc(child),
                _dir: tempfile::tempdir().unwrap(),
            };
            let up = wait_for(Duration::from_secs(15), || {
                if t.adm(&["--op", "show", "--mode", "sys"]) {
                    Some(true)
                } else if t._proc.0.try_wait().unwrap().is_some() {
                    Some(false)
                } else {
                    None
                }
            });
            if up != Some(true) {
                eprintln!(
                    "tgtd attempt {attempt}: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
                continue;
            }
            let lun = lun.to_str().unwrap();
            for args in [
                &["--op", "new", "--mode", "target", "--tid", "1", "-T", iqn][..],
                &[
                    "--op",
                    "new",
                    "--mode",
                    "logicalunit",
                    "--tid",
                    "1",
                    "--lun",
                    "1",
                    "-b",
                    lun,
                ],
                &[
                    "--op", "bind", "--mode", "target", "--tid", "1", "-I", "ALL",
                ],
            ] {
                assert!(t.adm(args), "tgtadm {args:?}");
            }
            wait_for(Duration::from_secs(10), || {
                std::net::TcpStream::connect(t.portal).ok()
            })
            .expect("tgtd portal listening");
            // The LUN file's directory lives as long as the daemon.
            t._dir = dir;
            return t;
        }
        panic!("tgtd did not start in 5 attempts (see the logs above)");
    }

    /// `tgtadm --lld iscsi ARGS` on this daemon's control port: true on success.
    pub fn adm(&self, args: &[&str]) -> bool {
        Command::new(tool("tgtadm", "tgt"))
            .args(["-C", &self.control.to_string(), "--lld", "iscsi"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}
