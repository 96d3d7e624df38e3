//! Support shared by the portshift integration tests: child processes, free loopback ports,
//! third-party tools (which must be installed: a missing one fails the test with the Debian
//! package to install), `portshift` servers and `portshift status`, isnsadm.
//!
//! Each test file is its own crate and uses part of this module, hence the `dead_code` allows.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use balancer::AdminSnapshot;

pub mod etcd;
pub mod raw;
pub mod tgtd;

/// A child process, killed (SIGKILL) and reaped on drop if still running.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The path of the installed tool `name`; panics naming the Debian `package` when it is missing.
#[allow(dead_code)]
pub fn tool(name: &str, package: &str) -> PathBuf {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!("`{name}` not found: install it with `apt-get install -y {package}`")
        })
}

/// A loopback address `ip:PORT` with a port no other test of this binary was given and that
/// was free a moment ago (see [`next_port`]).
#[allow(dead_code)]
pub fn free_addr(ip: &str) -> SocketAddr {
    let ip: std::net::IpAddr = ip.parse().unwrap_or_else(|e| panic!("{ip}: {e}"));
    let port = next_port(|p| TcpListener::bind((ip, p)).is_ok())
        .unwrap_or_else(|| panic!("no free port on {ip}"));
    SocketAddr::new(ip, port)
}

/// A port free on both 127.0.0.1 and 127.0.0.2 (see [`next_port`]).
#[allow(dead_code)]
pub fn free_port_on_both() -> u16 {
    next_port(|p| {
        TcpListener::bind(("127.0.0.1", p)).is_ok() && TcpListener::bind(("127.0.0.2", p)).is_ok()
    })
    .expect("no port free on both 127.0.0.1 and 127.0.0.2")
}

/// The next port of this test binary's pool that `free` accepts.
///
/// Binding port 0 and closing it, then starting a server there, let two tests running in
/// parallel be handed the same port (the kernel may give it out again at once), and let a
/// client's connection take it in between (connect(2) draws its local port from the same
/// ephemeral range): the second server then failed to bind, and a test could see the other
/// test's server on the address it waited for (the ECONNREFUSED flakes). So the pool lies
/// below the kernel's ephemeral range (`net.ipv4.ip_local_port_range`), where neither
/// bind(0) nor connect(2) picks ports, and a counter shared by the binary's test threads
/// hands each port out once. Test binaries run one after another; each starts at an offset
/// taken from its process id, so it does not reuse the ports the previous one left in
/// TIME_WAIT.
fn next_port(free: impl Fn(u16) -> bool) -> Option<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 10_000;
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let span = ephemeral_low.saturating_sub(LOW);
    if span < 1_000 {
        // No room below the ephemeral range: fall back to the kernel's choice.
        return (0..50).find_map(|_| {
            let p = TcpListener::bind("127.0.0.1:0")
                .ok()?
                .local_addr()
                .ok()?
                .port();
            free(p).then_some(p)
        });
    }
    let start = std::process::id().wrapping_mul(7_919) % span;
    (0..span).find_map(|_| {
        let p = (LOW + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span) as u16;
        free(p).then_some(p)
    })
}

/// Polls `f` every 100 ms until it returns `Some`, for at most `limit`.
#[allow(dead_code)]
pub fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Spawns `cmd` and waits (at most 15 s) until something accepts on `addr`. Panics, naming
/// `what` and showing `log` (when given), if the process exits first or never listens.
#[allow(dead_code)]
pub fn spawn_listening(
    cmd: &mut Command,
    addr: SocketAddr,
    what: &str,
    log: Option<&Path>,
) -> Proc {
    let mut p = Proc(cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}")));
    let log_text = || {
        log.map(|l| std::fs::read_to_string(l).unwrap_or_default())
            .unwrap_or_default()
    };
    let up = wait_for(Duration::from_secs(15), || {
        if let Ok(Some(status)) = p.0.try_wait() {
            panic!("{what} exited early ({status}): {}", log_text());
        }
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
        // Something listens; make sure it is this child and not another test's server.
        listens_on(p.0.id(), addr).then_some(())
    });
    assert!(up.is_some(), "{what} did not listen on {addr} within 15 s");
    p
}

/// Whether process `pid` holds the socket listening on `addr` (/proc/PID/net/tcp{,6} name
/// the listening socket's inode, /proc/PID/fd the process's sockets). True when /proc cannot
/// tell (the connect already succeeded).
fn listens_on(pid: u32, addr: SocketAddr) -> bool {
    let table = if addr.is_ipv4() { "tcp" } else { "tcp6" };
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
        return true;
    };
    let want_port = format!("{:04X}", addr.port());
    let want_ip = match addr.ip() {
        std::net::IpAddr::V4(v4) => format!("{:08X}", u32::from_ne_bytes(v4.octets())),
        std::net::IpAddr::V6(v6) => v6
            .octets()
            .chunks(4)
            .map(|w| format!("{:08X}", u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
            .collect(),
    };
    // Fields: sl local_address rem_address st ... uid timeout inode.
    let inodes: Vec<String> = text
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (ip, port) = f.get(1)?.split_once(':')?;
            let any = ip.chars().all(|c| c == '0');
            (port == want_port && (ip == want_ip || any) && *f.get(3)? == "0A")
                .then(|| f.get(9).map(|s| format!("socket:[{s}]")))?
        })
        .collect();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return true;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .map(|t| inodes.iter().any(|i| t.as_os_str() == i.as_str()))
            .unwrap_or(false)
    })
}

/// `portshift ARGS` with stdin closed, stdout to `out` and stderr to `err` (both may be the
/// same file).
#[allow(dead_code)]
pub fn portshift(args: &[String], out: &Path, err: &Path) -> Proc {
    let out_file = std::fs::File::create(out).expect("log file");
    let err_file = if err == out {
        out_file.try_clone().expect("log file")
    } else {
        std::fs::File::create(err).expect("log file")
    };
    let child = portshift_command(args)
        .stdout(out_file)
        .stderr(err_file)
        .spawn()
        .expect("spawn portshift");
    Proc(child)
}

fn portshift_command(args: &[String]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_portshift"));
    cmd.args(args).stdin(Stdio::null());
    cmd
}

/// Starts a portshift server (`args[0]` is the subcommand; stdout and stderr to `log`) and
/// waits until it accepts on `addr`.
#[allow(dead_code)]
pub fn portshift_server(args: &[String], addr: SocketAddr, log: &Path) -> Proc {
    portshift_server_with_nofile(args, addr, log, None)
}

/// [`portshift_server`] with, when `nofile` is given, the child's open-file limit (soft and
/// hard, `RLIMIT_NOFILE`) set to it before exec. The binary raises its soft limit to the hard
/// one, so `nofile` is the number of descriptors it can have.
#[allow(dead_code)]
pub fn portshift_server_with_nofile(
    args: &[String],
    addr: SocketAddr,
    log: &Path,
    nofile: Option<u64>,
) -> Proc {
    let out = std::fs::File::create(log).expect("log file");
    let mut cmd = portshift_command(args);
    cmd.stdout(out.try_clone().expect("log file")).stderr(out);
    if let Some(n) = nofile {
        use std::os::unix::process::CommandExt;
        // SAFETY: the closure runs in the child between fork and exec; it only calls
        // setrlimit(2), which is async-signal-safe, and allocates nothing.
        unsafe {
            cmd.pre_exec(move || rlimit::setrlimit(rlimit::Resource::NOFILE, n, n));
        }
    }
    let what = format!("portshift {}", args.first().map_or("", String::as_str));
    spawn_listening(&mut cmd, addr, &what, Some(log))
}

/// `portshift isns` on a free 127.0.0.1 port with `extra` options, its database and log
/// (`isns.log`) in `dir`; returns the process and its address once it listens.
#[allow(dead_code)]
pub fn isns_server(dir: &Path, extra: &[&str]) -> (Proc, SocketAddr) {
    let addr = free_addr("127.0.0.1");
    let mut args: Vec<String> = vec![
        "isns".into(),
        "--listen".into(),
        addr.to_string(),
        "--db".into(),
        dir.join("isns.redb").display().to_string(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    (portshift_server(&args, addr, &dir.join("isns.log")), addr)
}

/// `portshift isns` and `portshift target` as the balancing tests run them: two portals,
/// 127.0.0.1:P and 127.0.0.2:P (one port free on both), each of `targets` served from its own
/// LUN file (`dir/lunI.img`, created with `size`), registered with the iSNS server, the
/// admin endpoint on a free port, `extra` options (balancing) last. Logs and files in `dir`;
/// both processes are killed on drop.
#[allow(dead_code)]
pub struct TwoPortalTarget {
    /// `127.0.0.1:P`, `127.0.0.2:P`.
    pub portals: [String; 2],
    pub isns: SocketAddr,
    pub admin: SocketAddr,
    /// The target's log.
    pub log: PathBuf,
    _target: Proc,
    _isns: Proc,
}

#[allow(dead_code)]
impl TwoPortalTarget {
    /// Starts both; returns once the target's admin endpoint listens.
    pub fn start(dir: &Path, targets: &[&str], size: &str, extra: &[&str]) -> TwoPortalTarget {
        Self::start_with_speed(dir, targets, size, None, extra)
    }

    /// [`TwoPortalTarget::start`], each portal's link capacity given as `speed=SPEED`.
    pub fn start_with_speed(
        dir: &Path,
        targets: &[&str],
        size: &str,
        speed: Option<&str>,
        extra: &[&str],
    ) -> TwoPortalTarget {
        let port = free_port_on_both();
        let portals = [format!("127.0.0.1:{port}"), format!("127.0.0.2:{port}")];
        let admin = free_addr("127.0.0.1");
        let (isns_proc, isns) = isns_server(dir, &[]);
        let mut args: Vec<String> = vec!["target".into()];
        for p in &portals {
            let portal = match speed {
                Some(speed) => format!("{p},speed={speed}"),
                None => p.clone(),
            };
            args.extend(["--portal".into(), portal]);
        }
        for (i, t) in targets.iter().enumerate() {
            let lun = dir.join(format!("lun{i}.img"));
            args.extend(["--lun".into(), format!("{t}={}", lun.display())]);
        }
        args.extend([
            "--size".into(),
            size.into(),
            "--isns".into(),
            isns.to_string(),
            "--admin".into(),
            admin.to_string(),
        ]);
        args.extend(extra.iter().map(|a| a.to_string()));
        let log = dir.join("target.log");
        let target = portshift_server(&args, admin, &log);
        TwoPortalTarget {
            portals,
            isns,
            admin,
            log,
            _target: target,
            _isns: isns_proc,
        }
    }
}

/// What [`run_timed`] observed.
#[allow(dead_code)]
#[derive(Debug)]
pub struct Timed {
    /// Exited with status 0 within the limit.
    pub ok: bool,
    /// From spawn to exit (or to the kill at the limit).
    pub elapsed: Duration,
    /// Killed at the limit.
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` (stdin closed, output captured) for at most `limit`, killing it then; measures
/// the time from spawn to exit.
#[allow(dead_code)]
pub fn run_timed(cmd: &mut Command, limit: Duration) -> Timed {
    use std::io::Read;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = Proc(cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}")));
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            String::from_utf8_lossy(&v).into_owned()
        })
    };
    let out = drain(Box::new(child.0.stdout.take().expect("piped stdout")));
    let err = drain(Box::new(child.0.stderr.take().expect("piped stderr")));
    let (status, timed_out) = loop {
        if let Some(s) = child.0.try_wait().expect("wait for child") {
            break (Some(s), false);
        }
        if start.elapsed() >= limit {
            let _ = child.0.kill();
            let _ = child.0.wait();
            break (None, true);
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let elapsed = start.elapsed();
    Timed {
        ok: status.is_some_and(|s| s.success()),
        elapsed,
        timed_out,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// `portshift status --admin ADMIN --events 100 [--json]`: its stdout.
#[allow(dead_code)]
pub fn status(admin: SocketAddr, json: bool) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_portshift"));
    cmd.args(["status", "--admin", &admin.to_string(), "--events", "100"]);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().expect("portshift status");
    assert!(
        out.status.success(),
        "portshift status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("portshift status prints UTF-8")
}

/// The target's admin snapshot, through `portshift status --json`.
#[allow(dead_code)]
pub fn snapshot(admin: SocketAddr) -> AdminSnapshot {
    serde_json::from_str(&status(admin, true)).expect("portshift status --json document")
}

/// Writes an isnsadm configuration `dir/name` for the iSNS server at `server`, speaking as
/// `source`; returns its path.
#[allow(dead_code)]
pub fn isnsadm_conf(dir: &Path, name: &str, server: SocketAddr, source: &str) -> PathBuf {
    let conf = dir.join(name);
    std::fs::write(
        &conf,
        format!("Security = 0\nServerAddress = {server}\nSourceName = {source}\n"),
    )
    .expect("write isnsadm configuration");
    conf
}

/// Runs isnsadm (open-isns-utils) with configuration `conf`; returns (success, stdout).
#[allow(dead_code)]
pub fn isnsadm(conf: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(tool("isnsadm", "open-isns-utils"))
        .arg("-c")
        .arg(conf)
        .args(args)
        .output()
        .expect("run isnsadm");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Debian's isnsd (open-isns-server) on `addr`, its database and files in `dir`, with
/// Security = 0; returns once it listens.
#[allow(dead_code)]
pub fn isnsd(dir: &Path, addr: SocketAddr) -> Proc {
    isnsd_with(dir, addr, true)
}

/// [`isnsd`] with `DefaultDiscoveryDomain` on (1) or off (0).
#[allow(dead_code)]
pub fn isnsd_with(dir: &Path, addr: SocketAddr, default_dd: bool) -> Proc {
    let isnsd = tool("isnsd", "open-isns-server");
    let db = dir.join("isnsd-db");
    std::fs::create_dir_all(&db).unwrap();
    let conf = dir.join("isnsd.conf");
    std::fs::write(
        &conf,
        format!(
            "Security = 0\nBindAddress = {addr}\nDatabase = {}\nPIDFile = {}\nControlSocket = {}\nSourceName = iqn.2024-01.test:isnsd\nDefaultDiscoveryDomain = {}\n",
            db.display(),
            dir.join("isnsd.pid").display(),
            dir.join("isnsctl").display(),
            u8::from(default_dd)
        ),
    )
    .unwrap();
    spawn_listening(
        Command::new(isnsd)
            .arg("-f")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        addr,
        "isnsd",
        None,
    )
}

/// Waits up to `limit` for the target at `admin` to report a working contact with the iSNS
/// server `server`; the contact, or `None`.
#[allow(dead_code)]
pub fn wait_isns_contact(
    admin: SocketAddr,
    server: SocketAddr,
    limit: Duration,
) -> Option<balancer::snapshot::IsnsContact> {
    wait_for(limit, || {
        snapshot(admin)
            .isns_contact
            .filter(|c| c.ok && c.detail.contains(&server.to_string()))
    })
}

/// The portals the iSNS server at `server` lists for `target`, asked as `source` (empty when it
/// does not know the target or does not answer within 2 s).
#[allow(dead_code)]
pub fn isns_listed(server: SocketAddr, source: &str, target: &str) -> Vec<SocketAddr> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut c = isns::Client::connect(server).await.ok()?;
        c.set_timeout(Duration::from_secs(2));
        c.query_target_portals(source, target).await.ok()
    })
    .unwrap_or_default()
}
