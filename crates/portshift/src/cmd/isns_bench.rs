//! `portshift isns-bench`: a load generator for any iSNS server (RFC 4171), portshift's or
//! another (Debian's isnsd).
//!
//! Phase 1 registers N iSCSI target nodes with DevAttrReg (§5.6.5.1), one request per Network
//! Entity carrying its portals and nodes, spread over C connections, within a time bound. Phase 2
//! sends, for SECS seconds on the same C persistent connections, the DevAttrQry an initiator asks
//! ([`isns::request::target_portals`], §5.6.5.2) for a random registered node, one request in
//! flight per connection, and checks each answer is Success and names that node's portals. The
//! source of every query is an initiator node the tool registers first, so that a server that
//! wants a registered source answers. Latencies go into HDR histograms; the report is a table or
//! one JSON object. `--cleanup` deregisters every entity it registered (DevDereg, §5.6.5.4).
//! The portal addresses are in 127.0.0.0/8 and never connected to.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use bytes::BytesMut;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use isns::request::{self, NodeRegistration, NodeType, Registration};
use isns_proto::tag;
use isns_proto::{Message, MessageDecoder, Status};
use rand::Rng;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The iSNS server to load.
    #[arg(long)]
    pub server: SocketAddr,
    /// iSCSI target nodes to register.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub nodes: u64,
    /// Persistent connections, each with one request in flight.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub concurrency: u64,
    /// Seconds of the query phase (0: no query phase).
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Target nodes per Network Entity (one DevAttrReg each).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub nodes_per_entity: u64,
    /// Portals per Network Entity.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub portals_per_entity: u64,
    /// Entities registered from one local address: with the server on IPv4 loopback, the
    /// registrations come from addresses of 127.2.0.0/16, this many entities each, as servers
    /// limit the entities one client address may hold (`portshift isns`: 64).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..))]
    pub entities_per_address: u64,
    /// Seconds the registration phase may take; a server that has not registered every node by
    /// then ends the run with a report of how far it got.
    #[arg(long, default_value_t = 120)]
    pub register_timeout: u64,
    /// Seconds one request may wait for its answer.
    #[arg(long, default_value_t = 10)]
    pub request_timeout: u64,
    /// Names of this run's entities and nodes (lowercase letters, digits, '-'); random by default.
    #[arg(long, value_parser = parse_run_id)]
    pub run_id: Option<String>,
    /// Register nothing: query the nodes an earlier run with the same --run-id, --nodes,
    /// --nodes-per-entity and --portals-per-entity registered (and left registered).
    #[arg(long, requires = "run_id")]
    pub skip_register: bool,
    /// Deregister every entity of the run (DevDereg) after the query phase.
    #[arg(long)]
    pub cleanup: bool,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

fn parse_run_id(s: &str) -> Result<String, String> {
    let ok = (1..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(s.to_string())
    } else {
        Err("1 to 32 lowercase letters, digits or '-'".into())
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    super::runtime()?.block_on(bench(args))
}

/// Latency percentiles in microseconds.
#[derive(Serialize, Debug, Default)]
struct Latency {
    p50: u64,
    p90: u64,
    p99: u64,
    p99_9: u64,
    max: u64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p99_9: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

#[derive(Serialize, Debug)]
struct RegisterReport {
    /// Every node was registered within the time bound.
    completed: bool,
    timed_out: bool,
    registered_nodes: u64,
    registered_entities: u64,
    requests: u64,
    elapsed_s: f64,
    nodes_per_s: f64,
    requests_per_s: f64,
    latency_us: Latency,
    errors: BTreeMap<String, u64>,
}

#[derive(Serialize, Debug)]
struct QueryReport {
    queries: u64,
    elapsed_s: f64,
    queries_per_s: f64,
    latency_us: Latency,
    errors: BTreeMap<String, u64>,
}

#[derive(Serialize, Debug)]
struct CleanupReport {
    deregistered_entities: u64,
    elapsed_s: f64,
    errors: BTreeMap<String, u64>,
}

#[derive(Serialize, Debug)]
struct Report {
    server: SocketAddr,
    run_id: String,
    nodes: u64,
    nodes_per_entity: u64,
    portals_per_entity: u64,
    entities: u64,
    concurrency: u64,
    duration_s: u64,
    /// `None` with `--skip-register`.
    register: Option<RegisterReport>,
    /// `None` with `--duration 0` or when the registration did not finish.
    query: Option<QueryReport>,
    cleanup: Option<CleanupReport>,
    /// Errors of all phases together.
    errors: u64,
}

/// Why one request failed.
#[derive(Debug)]
enum Failure {
    Status(Status),
    Timeout,
    Io(std::io::Error),
    Proto(isns_proto::DecodeError),
    /// A query answered Success without exactly the node's portals.
    WrongPortals,
}

impl Failure {
    /// The key errors are counted under.
    fn key(&self) -> String {
        match self {
            Failure::Status(s) => format!("status {s}"),
            Failure::Timeout => "timeout".into(),
            Failure::Io(e) => format!("connection: {}", e.kind()),
            Failure::Proto(e) => format!("malformed answer: {}", e.error),
            Failure::WrongPortals => "answer without the node's portals".into(),
        }
    }

    /// Whether the connection must be opened again before the next request.
    fn breaks_connection(&self) -> bool {
        !matches!(self, Failure::Status(_) | Failure::WrongPortals)
    }
}

/// One TCP connection to the server: one request in flight, answers matched by transaction ID.
struct Conn {
    stream: TcpStream,
    /// The local address it was bound to, if chosen.
    local: Option<IpAddr>,
    buf: BytesMut,
    decoder: MessageDecoder,
    next_xid: u16,
}

impl Conn {
    /// Connects to `server`, from local address `local` when given.
    async fn open(
        server: SocketAddr,
        local: Option<IpAddr>,
        timeout: Duration,
    ) -> anyhow::Result<Conn> {
        let connect = async {
            let socket = match server {
                SocketAddr::V4(_) => TcpSocket::new_v4()?,
                SocketAddr::V6(_) => TcpSocket::new_v6()?,
            };
            if let Some(ip) = local {
                socket.bind(SocketAddr::new(ip, 0))?;
            }
            socket.connect(server).await
        };
        let stream = tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| anyhow::anyhow!("no answer within {timeout:?}"))?
            .with_context(|| match local {
                Some(ip) => format!("cannot connect from {ip} to the iSNS server at {server}"),
                None => format!("cannot connect to the iSNS server at {server}"),
            })?;
        let _ = stream.set_nodelay(true);
        Ok(Conn {
            stream,
            local,
            buf: BytesMut::with_capacity(4096),
            decoder: MessageDecoder::new(),
            next_xid: 1,
        })
    }

    /// Sends `req` and waits for its answer (whatever its status) until `deadline`.
    async fn call(&mut self, mut req: Message, deadline: Instant) -> Result<Message, Failure> {
        req.xid = self.next_xid;
        self.next_xid = self.next_xid.wrapping_add(1).max(1);
        match tokio::time::timeout_at(deadline, self.exchange(&req)).await {
            Ok(r) => r,
            Err(_) => Err(Failure::Timeout),
        }
    }

    async fn exchange(&mut self, req: &Message) -> Result<Message, Failure> {
        self.stream
            .write_all(&req.to_bytes())
            .await
            .map_err(Failure::Io)?;
        loop {
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(m)) if m.function == req.function.response() && m.xid == req.xid => {
                    return Ok(m);
                }
                // Anything else (a late answer, an SCN this tool never asked for) is skipped.
                Ok(Some(_)) => continue,
                Ok(None) => {}
                Err(e) => return Err(Failure::Proto(e)),
            }
            if self
                .stream
                .read_buf(&mut self.buf)
                .await
                .map_err(Failure::Io)?
                == 0
            {
                return Err(Failure::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }
}

/// What the tool registers: names and addresses derived from a run identifier and indices.
struct Plan {
    run: String,
    nodes: u64,
    nodes_per_entity: u64,
    portals_per_entity: u64,
}

impl Plan {
    fn entities(&self) -> u64 {
        self.nodes.div_ceil(self.nodes_per_entity)
    }

    fn entity_id(&self, e: u64) -> String {
        format!("isns-bench-{}-e{e}", self.run)
    }

    fn target(&self, n: u64) -> String {
        format!("iqn.2026-11.org.example.isns-bench:{}.t{n}", self.run)
    }

    fn initiator(&self) -> String {
        format!("iqn.2026-11.org.example.isns-bench:{}.initiator", self.run)
    }

    /// Target nodes of entity `e`.
    fn nodes_of(&self, e: u64) -> std::ops::Range<u64> {
        let first = e * self.nodes_per_entity;
        first..(first + self.nodes_per_entity).min(self.nodes)
    }

    /// Portals of entity `e`: distinct addresses of 127.0.0.0/8 (never 127.0.0.0 or
    /// 127.0.0.1) on a port drawn from the run identifier, so that the portals of two runs
    /// against one server do not collide (a portal belongs to one entity, §6.3).
    fn portals_of(&self, e: u64) -> Vec<SocketAddr> {
        let port = self.portal_port();
        (0..self.portals_per_entity)
            .map(|k| {
                let i = (e * self.portals_per_entity + k) % 0x00ff_fffd + 2;
                let ip = Ipv4Addr::from(0x7f00_0000 | u32::try_from(i).unwrap_or(2));
                SocketAddr::new(IpAddr::V4(ip), port)
            })
            .collect()
    }

    /// A port in 1024..=65023 from an FNV-1a hash of the run identifier.
    fn portal_port(&self) -> u16 {
        let h = self.run.bytes().fold(0x811c_9dc5_u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
        1024 + u16::try_from(h % 64_000).unwrap_or(0)
    }

    fn registration(&self, e: u64) -> Registration {
        Registration {
            entity: self.entity_id(e),
            portals: self.portals_of(e),
            nodes: self
                .nodes_of(e)
                .map(|n| NodeRegistration {
                    name: self.target(n),
                    node_type: NodeType::Target,
                    alias: None,
                })
                .collect(),
            ..Registration::default()
        }
    }

    fn initiator_registration(&self) -> Registration {
        Registration {
            entity: format!("isns-bench-{}-initiator", self.run),
            nodes: vec![NodeRegistration {
                name: self.initiator(),
                node_type: NodeType::Initiator,
                alias: None,
            }],
            ..Registration::default()
        }
    }
}

/// The portals an answer to [`request::target_portals`] names for `target`: from its Portal
/// Groups when the server sends them, otherwise the portals of the answer.
fn answered_portals(resp: &Message, target: &str) -> Vec<SocketAddr> {
    let from_pgs = request::portals_from_pgs(resp.operating(), target);
    if !from_pgs.is_empty() {
        return from_pgs;
    }
    let ops = resp.operating();
    ops.iter()
        .enumerate()
        .filter(|(_, a)| a.tag == tag::PORTAL_IP_ADDRESS)
        .filter_map(|(i, ip)| {
            let port = ops.get(i + 1).filter(|p| p.tag == tag::PORTAL_PORT)?;
            isns_proto::attr::socket_addr(ip, port)
        })
        .collect()
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 1 h, 3 significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant, valid histogram bounds")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// What one connection's task measured in one phase.
struct Tally {
    hist: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    /// Work-queue items answered Success (entities registered or deregistered).
    done: Vec<u64>,
    /// Nodes those items carried (registration), or queries answered as expected.
    ok: u64,
    timed_out: bool,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            hist: histogram(),
            errors: BTreeMap::new(),
            done: Vec::new(),
            ok: 0,
            timed_out: false,
        }
    }

    fn fail(&mut self, f: &Failure) {
        *self.errors.entry(f.key()).or_default() += 1;
    }

    fn merge(tallies: Vec<Tally>) -> Tally {
        let mut all = Tally::new();
        for t in tallies {
            let _ = all.hist.add(&t.hist);
            for (k, v) in t.errors {
                *all.errors.entry(k).or_default() += v;
            }
            all.done.extend(t.done);
            all.ok += t.ok;
            all.timed_out |= t.timed_out;
        }
        all
    }
}

fn progress(len: u64, template: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

async fn bench(args: Args) -> anyhow::Result<ExitCode> {
    let plan = Arc::new(Plan {
        run: args
            .run_id
            .clone()
            .unwrap_or_else(|| format!("{:08x}", rand::rng().random::<u32>())),
        nodes: args.nodes,
        nodes_per_entity: args.nodes_per_entity,
        portals_per_entity: args.portals_per_entity,
    });
    let request_timeout = Duration::from_secs(args.request_timeout.max(1));
    let mut conns = Vec::new();
    for _ in 0..args.concurrency {
        conns.push(Conn::open(args.server, None, request_timeout).await?);
    }

    // The initiator every query speaks as.
    let ini = request::dev_attr_reg(&plan.initiator_registration())
        .context("the initiator registration has a node")?;
    let first = conns.first_mut().context("at least one connection")?;
    match first.call(ini, Instant::now() + request_timeout).await {
        Ok(m) if m.status == Some(Status::SUCCESS) => {}
        Ok(m) => anyhow::bail!(
            "the server refused to register the initiator: status {}",
            m.status.map_or_else(|| "missing".into(), |s| s.to_string())
        ),
        Err(f) => anyhow::bail!("registering the initiator: {}", f.key()),
    }

    let (mut conns, register, mut entities_done) = if args.skip_register {
        (conns, None, (0..plan.entities()).collect())
    } else {
        let (c, r, done) = register_phase(&args, &plan, conns, request_timeout).await?;
        (c, Some(r), done)
    };
    let registered = register.as_ref().is_none_or(|r| r.completed);
    let mut errors: u64 = register.iter().flat_map(|r| r.errors.values()).sum();
    let query = if registered && args.duration > 0 {
        let (c, q) = query_phase(&args, &plan, conns, &entities_done, request_timeout).await?;
        conns = c;
        errors += q.errors.values().sum::<u64>();
        Some(q)
    } else {
        None
    };
    let cleanup = if args.cleanup {
        entities_done.sort_unstable();
        let c = cleanup_phase(&args, &plan, conns, entities_done, request_timeout).await?;
        errors += c.errors.values().sum::<u64>();
        Some(c)
    } else {
        None
    };
    let report = Report {
        server: args.server,
        run_id: plan.run.clone(),
        nodes: args.nodes,
        nodes_per_entity: args.nodes_per_entity,
        portals_per_entity: args.portals_per_entity,
        entities: plan.entities(),
        concurrency: args.concurrency,
        duration_s: args.duration,
        register,
        query,
        cleanup,
        errors,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    if let Some(g) = report.register.as_ref().filter(|g| !g.completed) {
        eprintln!(
            "portshift isns-bench: registration did not finish: {} of {} nodes registered in {:.1} s{}",
            g.registered_nodes,
            report.nodes,
            g.elapsed_s,
            if g.timed_out {
                format!(" (--register-timeout {} s reached)", args.register_timeout)
            } else {
                " (errors)".into()
            }
        );
        return Ok(ExitCode::FAILURE);
    }
    if report.errors > 0 {
        eprintln!("portshift isns-bench: {} requests failed", report.errors);
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Builds the request for one item of a work queue and says how many nodes it carries.
type Build = Arc<dyn Fn(u64) -> Option<(Message, u64)> + Send + Sync>;
/// The local address an item's request is sent from.
type Source = Arc<dyn Fn(u64) -> IpAddr + Send + Sync>;

/// Sends one request per item over `conns`, connection `i` taking the items of `lists[i]` in
/// order, until they run out or `deadline` passes. With `source`, each request goes out from
/// the item's local address (the connection is opened again when it changes); a connection
/// broken by a failure is opened again. Returns the connections and what they measured
/// (`done`: the items answered Success; `ok`: their nodes).
#[allow(clippy::too_many_arguments)]
async fn run_queue(
    server: SocketAddr,
    conns: Vec<Conn>,
    lists: Vec<Vec<u64>>,
    build: Build,
    source: Option<Source>,
    deadline: Instant,
    request_timeout: Duration,
    bar: &ProgressBar,
) -> anyhow::Result<(Vec<Conn>, Tally)> {
    let mut tasks = Vec::new();
    for (mut conn, items) in conns.into_iter().zip(lists) {
        let (build, source, bar) = (build.clone(), source.clone(), bar.clone());
        tasks.push(tokio::spawn(async move {
            let mut t = Tally::new();
            for (i, &item) in items.iter().enumerate() {
                if let Some(source) = &source {
                    let ip = source(item);
                    if conn.local != Some(ip) {
                        match Conn::open(server, Some(ip), request_timeout).await {
                            Ok(c) => conn = c,
                            Err(e) => {
                                *t.errors.entry(format!("{e:#}")).or_default() += 1;
                                break;
                            }
                        }
                    }
                }
                let Some((req, nodes)) = build(item) else {
                    continue;
                };
                let sent = Instant::now();
                let until = deadline.min(sent + request_timeout);
                match conn.call(req, until).await {
                    Ok(m) if m.status == Some(Status::SUCCESS) => {
                        let _ = t.hist.record(micros(sent.elapsed()));
                        t.done.push(item);
                        t.ok += nodes;
                        bar.inc(nodes);
                    }
                    Ok(m) => t.fail(&Failure::Status(m.status.unwrap_or(Status::UNKNOWN_ERROR))),
                    Err(f) => {
                        if Instant::now() >= deadline {
                            // Cut by the phase's bound, not an error of the server's answers.
                            t.timed_out = true;
                            break;
                        }
                        t.fail(&f);
                        if f.breaks_connection() {
                            match Conn::open(server, conn.local, request_timeout).await {
                                Ok(c) => conn = c,
                                Err(_) => break,
                            }
                        }
                    }
                }
                if Instant::now() >= deadline {
                    t.timed_out = i + 1 < items.len();
                    break;
                }
            }
            (conn, t)
        }));
    }
    let mut conns = Vec::new();
    let mut tallies = Vec::new();
    for task in tasks {
        let (c, t) = task.await.context("a connection's task failed")?;
        conns.push(c);
        tallies.push(t);
    }
    Ok((conns, Tally::merge(tallies)))
}

/// `items` dealt to `n` lists in blocks of `block` consecutive items, round robin.
fn deal(items: &[u64], n: usize, block: usize) -> Vec<Vec<u64>> {
    let mut lists = vec![Vec::new(); n.max(1)];
    for (b, chunk) in items.chunks(block.max(1)).enumerate() {
        if let Some(l) = lists.get_mut(b % n.max(1)) {
            l.extend_from_slice(chunk);
        }
    }
    lists
}

fn rate(n: u64, secs: f64) -> f64 {
    if secs > 0.0 { n as f64 / secs } else { 0.0 }
}

/// Phase 1: every entity registered once (DevAttrReg), within `--register-timeout`.
async fn register_phase(
    args: &Args,
    plan: &Arc<Plan>,
    conns: Vec<Conn>,
    request_timeout: Duration,
) -> anyhow::Result<(Vec<Conn>, RegisterReport, Vec<u64>)> {
    let bar = progress(
        plan.nodes,
        "register {bar:40} {pos}/{len} nodes {per_sec} {elapsed}",
    );
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.register_timeout);
    let p = plan.clone();
    let build: Build = Arc::new(move |e| {
        let reg = p.registration(e);
        let nodes = reg.nodes.len() as u64;
        request::dev_attr_reg(&reg).map(|m| (m, nodes))
    });
    // Each connection registers blocks of consecutive entities, a block from one local address
    // when the server is on IPv4 loopback.
    let entities: Vec<u64> = (0..plan.entities()).collect();
    let per_conn = entities.len().div_ceil(conns.len().max(1));
    let block = usize::try_from(args.entities_per_address)
        .unwrap_or(usize::MAX)
        .min(per_conn)
        .max(1);
    let lists = deal(&entities, conns.len(), block);
    let source: Option<Source> = match args.server.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => Some(Arc::new(move |e| {
            let b = u32::try_from(e / block as u64).unwrap_or(0);
            let host = 0x0002_0001_u32.wrapping_add(b) & 0x00ff_ffff;
            IpAddr::V4(Ipv4Addr::from(0x7f00_0000 | host))
        })),
        _ => None,
    };
    let (conns, all) = run_queue(
        args.server,
        conns,
        lists,
        build,
        source,
        deadline,
        request_timeout,
        &bar,
    )
    .await?;
    bar.finish_and_clear();
    let elapsed = start.elapsed().as_secs_f64();
    let report = RegisterReport {
        completed: all.ok == plan.nodes,
        timed_out: all.timed_out,
        registered_nodes: all.ok,
        registered_entities: all.done.len() as u64,
        requests: all.hist.len(),
        elapsed_s: elapsed,
        nodes_per_s: rate(all.ok, elapsed),
        requests_per_s: rate(all.hist.len(), elapsed),
        latency_us: Latency::of(&all.hist),
        errors: all.errors,
    };
    Ok((conns, report, all.done))
}

/// Phase 2: for `--duration` seconds each connection asks what an initiator asks for a random
/// registered node, one request in flight, and checks the answer names the node's portals.
async fn query_phase(
    args: &Args,
    plan: &Arc<Plan>,
    conns: Vec<Conn>,
    entities: &[u64],
    request_timeout: Duration,
) -> anyhow::Result<(Vec<Conn>, QueryReport)> {
    let secs = args.duration;
    let bar = progress(secs, "query    {bar:40} {pos}/{len} s {msg}");
    let answered = Arc::new(AtomicU64::new(0));
    let entities: Arc<Vec<u64>> = Arc::new(entities.to_vec());
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let ticker = {
        let (bar, answered) = (bar.clone(), answered.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                bar.set_position(start.elapsed().as_secs().min(secs));
                bar.set_message(format!("{} queries", answered.load(Ordering::Relaxed)));
            }
        })
    };
    let server = args.server;
    let mut tasks = Vec::new();
    for mut conn in conns {
        let (plan, entities, answered) = (plan.clone(), entities.clone(), answered.clone());
        tasks.push(tokio::spawn(async move {
            let mut t = Tally::new();
            let initiator = plan.initiator();
            while Instant::now() < deadline {
                let (e, n) = {
                    let mut rng = rand::rng();
                    let Some(&e) = entities.get(rng.random_range(0..entities.len())) else {
                        break;
                    };
                    let nodes = plan.nodes_of(e);
                    (e, rng.random_range(nodes))
                };
                let target = plan.target(n);
                let req = request::target_portals(&initiator, &target);
                let sent = Instant::now();
                let failure = match conn.call(req, sent + request_timeout).await {
                    Ok(m) if m.status == Some(Status::SUCCESS) => {
                        let mut got = answered_portals(&m, &target);
                        let mut want = plan.portals_of(e);
                        got.sort_unstable();
                        want.sort_unstable();
                        if got == want {
                            let _ = t.hist.record(micros(sent.elapsed()));
                            t.ok += 1;
                            answered.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        Failure::WrongPortals
                    }
                    Ok(m) => Failure::Status(m.status.unwrap_or(Status::UNKNOWN_ERROR)),
                    Err(f) => f,
                };
                t.fail(&failure);
                if failure.breaks_connection() {
                    match Conn::open(server, conn.local, request_timeout).await {
                        Ok(c) => conn = c,
                        Err(_) => break,
                    }
                }
            }
            (conn, t)
        }));
    }
    let mut conns = Vec::new();
    let mut tallies = Vec::new();
    for task in tasks {
        let (c, t) = task.await.context("a query task failed")?;
        conns.push(c);
        tallies.push(t);
    }
    ticker.abort();
    bar.finish_and_clear();
    let elapsed = start.elapsed().as_secs_f64();
    let all = Tally::merge(tallies);
    Ok((
        conns,
        QueryReport {
            queries: all.ok,
            elapsed_s: elapsed,
            queries_per_s: rate(all.ok, elapsed),
            latency_us: Latency::of(&all.hist),
            errors: all.errors,
        },
    ))
}

/// `--cleanup`: DevDereg of every entity registered (source: its first node, which any server
/// lets deregister its own entity), then of the initiator's, within `--register-timeout`.
async fn cleanup_phase(
    args: &Args,
    plan: &Arc<Plan>,
    conns: Vec<Conn>,
    entities: Vec<u64>,
    request_timeout: Duration,
) -> anyhow::Result<CleanupReport> {
    let bar = progress(
        entities.len() as u64,
        "cleanup  {bar:40} {pos}/{len} entities",
    );
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.register_timeout);
    let p = plan.clone();
    let build: Build = Arc::new(move |e| {
        let source = p.target(p.nodes_of(e).start);
        Some((request::entity_dereg(&source, &p.entity_id(e)), 1))
    });
    let lists = deal(&entities, conns.len(), 1);
    let (mut conns, mut all) = run_queue(
        args.server,
        conns,
        lists,
        build,
        None,
        deadline,
        request_timeout,
        &bar,
    )
    .await?;
    bar.finish_and_clear();
    if let Some(conn) = conns.first_mut() {
        let ini = plan.initiator_registration();
        let req = request::entity_dereg(&plan.initiator(), &ini.entity);
        match conn.call(req, Instant::now() + request_timeout).await {
            Ok(m) if m.status == Some(Status::SUCCESS) => {}
            Ok(m) => all.fail(&Failure::Status(m.status.unwrap_or(Status::UNKNOWN_ERROR))),
            Err(f) => all.fail(&f),
        }
    }
    if all.timed_out {
        *all.errors
            .entry("not deregistered in time".into())
            .or_default() += 1;
    }
    Ok(CleanupReport {
        deregistered_entities: all.done.len() as u64,
        elapsed_s: start.elapsed().as_secs_f64(),
        errors: all.errors,
    })
}

fn errors_text(errors: &BTreeMap<String, u64>) -> String {
    if errors.is_empty() {
        return "none".into();
    }
    errors
        .iter()
        .map(|(k, v)| format!("{v} × {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_table(r: &Report) {
    println!(
        "iSNS server {}: {} target nodes on {} entities ({} nodes, {} portals each), {} connections",
        r.server, r.nodes, r.entities, r.nodes_per_entity, r.portals_per_entity, r.concurrency
    );
    println!(
        "{:<10} {:>10} {:>9} {:>12} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "phase", "done", "secs", "rate/s", "p50 µs", "p90 µs", "p99 µs", "p99.9 µs", "max µs"
    );
    let row = |name: &str, done: u64, secs: f64, rate: f64, l: &Latency| {
        println!(
            "{name:<10} {done:>10} {secs:>9.2} {rate:>12.0} {:>9} {:>9} {:>9} {:>9} {:>9}",
            l.p50, l.p90, l.p99, l.p99_9, l.max
        );
    };
    if let Some(g) = &r.register {
        row(
            "register",
            g.registered_nodes,
            g.elapsed_s,
            g.nodes_per_s,
            &g.latency_us,
        );
    }
    if let Some(q) = &r.query {
        row(
            "query",
            q.queries,
            q.elapsed_s,
            q.queries_per_s,
            &q.latency_us,
        );
    }
    if let Some(g) = &r.register {
        println!(
            "register: {} DevAttrReg ({:.0}/s, latency per request), {} of {} nodes{}; errors: {}",
            g.requests,
            g.requests_per_s,
            g.registered_nodes,
            r.nodes,
            if g.timed_out {
                " (stopped by --register-timeout)"
            } else {
                ""
            },
            errors_text(&g.errors)
        );
    } else {
        println!(
            "register: skipped (nodes of run {} already registered)",
            r.run_id
        );
    }
    match &r.query {
        Some(q) => println!("query: errors: {}", errors_text(&q.errors)),
        None if r.duration_s == 0 => println!("query: not run (--duration 0)"),
        None => println!("query: not run (registration did not finish)"),
    }
    if let Some(c) = &r.cleanup {
        println!(
            "cleanup: {} entities deregistered in {:.2} s; errors: {}",
            c.deregistered_entities,
            c.elapsed_s,
            errors_text(&c.errors)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use isns_proto::{Attribute, FunctionId};

    fn plan(nodes: u64) -> Plan {
        Plan {
            run: "t".into(),
            nodes,
            nodes_per_entity: 10,
            portals_per_entity: 4,
        }
    }

    #[test]
    fn entities_split_nodes_and_portals_never_repeat() {
        let p = plan(25);
        assert_eq!(p.entities(), 3);
        assert_eq!(p.nodes_of(2), 20..25);
        assert_eq!(p.registration(2).nodes.len(), 5);
        let mut all: Vec<SocketAddr> = (0..p.entities()).flat_map(|e| p.portals_of(e)).collect();
        assert!(
            all.iter()
                .all(|a| a.ip().is_loopback() && a.ip() != IpAddr::V4(Ipv4Addr::LOCALHOST))
        );
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 12);
        assert_ne!(
            plan(1).portal_port(),
            Plan {
                run: "u".into(),
                ..plan(1)
            }
            .portal_port()
        );
    }

    #[test]
    fn deal_keeps_blocks_together_round_robin() {
        let items: Vec<u64> = (0..7).collect();
        assert_eq!(deal(&items, 2, 2), vec![vec![0, 1, 4, 5], vec![2, 3, 6]]);
        assert_eq!(
            deal(&items, 3, 1),
            vec![vec![0, 3, 6], vec![1, 4], vec![2, 5]]
        );
    }

    #[test]
    fn answered_portals_from_pgs_or_portals() {
        let req = request::target_portals("iqn.i", "iqn.t");
        let a: SocketAddr = "127.0.0.5:3260".parse().unwrap();
        let pgs = vec![
            Attribute::string(tag::PG_ISCSI_NAME, "iqn.t"),
            Attribute::ip(tag::PG_PORTAL_IP_ADDR, a.ip()),
            Attribute::tcp_port(tag::PG_PORTAL_PORT, a.port()),
            Attribute::u32(tag::PG_TAG, 1),
        ];
        let resp = Message::response(&req, Status::SUCCESS, vec![], pgs);
        assert_eq!(answered_portals(&resp, "iqn.t"), vec![a]);
        let portals = vec![
            Attribute::string(tag::ISCSI_NAME, "iqn.t"),
            Attribute::ip(tag::PORTAL_IP_ADDRESS, a.ip()),
            Attribute::tcp_port(tag::PORTAL_PORT, a.port()),
        ];
        let resp = Message::response(&req, Status::SUCCESS, vec![], portals);
        assert_eq!(answered_portals(&resp, "iqn.t"), vec![a]);
        let empty = Message::error_response(FunctionId::DEV_ATTR_QRY, 1, Status::NO_SUCH_ENTRY);
        assert!(answered_portals(&empty, "iqn.t").is_empty());
    }
}
