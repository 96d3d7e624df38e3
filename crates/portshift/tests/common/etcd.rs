//! A three-member etcd cluster on loopback (Debian's `etcd-server`, `etcdctl` from
//! `etcd-client`) for the tests of `portshift isns --etcd`: free ports on 127.0.0.1, each
//! member's data directory and log under the directory given; every member still running is
//! SIGKILLed and the data directories removed on drop.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{Proc, free_addr, portshift_server, tool, wait_for};

/// One member: its client and peer addresses, process and data directory.
pub struct Member {
    pub name: String,
    pub client: SocketAddr,
    pub peer: SocketAddr,
    pub data: PathBuf,
    proc: Option<Proc>,
}

/// The cluster; members are killed and their data removed on drop.
pub struct EtcdCluster {
    pub members: Vec<Member>,
}

impl EtcdCluster {
    /// Start three members in `dir` and wait until the cluster answers a write.
    pub fn start(dir: &Path) -> EtcdCluster {
        let etcd = tool("etcd", "etcd-server");
        let token = format!("portshift-test-{}", std::process::id());
        let mut members: Vec<Member> = (0..3)
            .map(|i| Member {
                name: format!("m{i}"),
                client: free_addr("127.0.0.1"),
                peer: free_addr("127.0.0.1"),
                data: dir.join(format!("etcd-m{i}")),
                proc: None,
            })
            .collect();
        let initial = members
            .iter()
            .map(|m| format!("{}=http://{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        for m in &mut members {
            let log = std::fs::File::create(dir.join(format!("etcd-{}.log", m.name))).unwrap();
            let child = Command::new(&etcd)
                .args([
                    "--name",
                    &m.name,
                    "--data-dir",
                    &m.data.display().to_string(),
                    "--listen-client-urls",
                    &format!("http://{}", m.client),
                    "--advertise-client-urls",
                    &format!("http://{}", m.client),
                    "--listen-peer-urls",
                    &format!("http://{}", m.peer),
                    "--initial-advertise-peer-urls",
                    &format!("http://{}", m.peer),
                    "--initial-cluster",
                    &initial,
                    "--initial-cluster-state",
                    "new",
                    "--initial-cluster-token",
                    &token,
                ])
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("spawn etcd");
            m.proc = Some(Proc(child));
        }
        let cluster = EtcdCluster { members };
        let up = wait_for(Duration::from_secs(30), || {
            cluster
                .etcdctl(&["put", "/portshift-test/probe", "up"])
                .then_some(())
        });
        assert!(
            up.is_some(),
            "the etcd cluster did not come up; see {}/etcd-m*.log",
            dir.display()
        );
        cluster
    }

    /// Client URLs of the members, comma-separated (`--etcd`).
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("http://{}", m.client))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Client URLs of the members still running.
    pub fn live_endpoints(&self) -> String {
        self.members
            .iter()
            .filter(|m| m.proc.is_some())
            .map(|m| format!("http://{}", m.client))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Run `etcdctl ARGS` against the running members; whether it succeeded.
    pub fn etcdctl(&self, args: &[&str]) -> bool {
        self.etcdctl_output(args).is_some()
    }

    /// `etcdctl ARGS` output when it succeeded.
    pub fn etcdctl_output(&self, args: &[&str]) -> Option<String> {
        let out = Command::new(tool("etcdctl", "etcd-client"))
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.live_endpoints()))
            .arg("--command-timeout=3s")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// SIGKILL member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(p) = self.members[i].proc.take() {
            drop(p);
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            drop(m.proc.take());
            let _ = std::fs::remove_dir_all(&m.data);
        }
    }
}

/// isnsadm's source name in the etcd tests: a Control Node of the servers.
pub const CONTROL_NODE: &str = "iqn.2024-01.test:adm";

/// `portshift isns` named `name` on a free port, its registry in `etcd`; log `dir/NAME.log`.
pub fn isns_on_etcd(dir: &Path, name: &str, etcd: &str) -> (Proc, SocketAddr) {
    let addr = free_addr("127.0.0.1");
    let args: Vec<String> = [
        "isns",
        "--listen",
        &addr.to_string(),
        "--etcd",
        etcd,
        "--db",
        &dir.join(format!("{name}.redb")).display().to_string(),
        "--control-node",
        CONTROL_NODE,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let p = portshift_server(&args, addr, &dir.join(format!("{name}.log")));
    (p, addr)
}
