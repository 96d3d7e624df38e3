//! Starting and stopping a target: opens the backing files, binds every portal, creates the
//! [`Control`] plane, one processor thread per portal ([`crate::portal`]) and a control thread
//! (tokio runtime) serving the admin endpoint and the balancer loop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use balancer::{BalancePolicy, BalanceSpec, PortalId};
use scsi::BLOCK_SIZE;
use tokio::sync::watch;

use crate::control::{Control, PortalInfo};
use crate::link::PortalConfig;
use crate::portal::{DESCRIPTOR_RESERVE, PortalLimits};
use crate::reload::ReloadReport;
use crate::target_set::TargetSet;

/// Largest number of portals and of logical units a target serves.
pub const MAX_PORTALS: usize = 64;
pub const MAX_LUNS: usize = 256;

/// One `--lun IQN=FILE`: the file is served as the next LUN (0 first) of target `iqn`.
/// A path `null:BYTES` serves a null store of that size instead (reads return zeros, writes
/// are dropped): for measuring the protocol path without storage (bench/run.sh NULL=1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LunConfig {
    pub iqn: String,
    pub path: PathBuf,
    /// Create (sparse) with this many bytes when the file is missing.
    pub size: Option<u64>,
    /// Unit serial number (VPD page 80h); None: derived from the target name and LUN.
    pub serial: Option<String>,
    /// Physical block size in bytes (512 or 4096); logical blocks stay 512 bytes.
    pub physical_block_size: u32,
    /// Every write is durable before its status (`--write-through`).
    pub write_through: bool,
    /// The LUN number; None: the one after the target's previous LUN (0 first).
    pub number: Option<u16>,
}

impl Default for LunConfig {
    fn default() -> LunConfig {
        LunConfig {
            iqn: String::new(),
            path: PathBuf::new(),
            size: None,
            serial: None,
            physical_block_size: BLOCK_SIZE,
            write_through: false,
            number: None,
        }
    }
}

pub use iscsi_proto::chap::Credentials;

/// Who may log in to one target and how they authenticate (`--chap`, `--mutual-chap`,
/// `--allow`, or the configuration file): the connection cores' own type.
pub use iscsi_target_core::Access as TargetAccess;

/// The target portal group tag every portal of the target shares.
pub const SHARED_PORTAL_GROUP_TAG: u16 = 1;

/// Everything `portshift target` is told.
#[derive(Debug, Clone)]
pub struct TargetConfig {
    /// Portals to listen on (port 0 picks a free port), each with its link's capacity if
    /// given (else the interface's reported speed is used, if any).
    pub portals: Vec<PortalConfig>,
    pub luns: Vec<LunConfig>,
    /// iSNS servers to register with, in the order tried (see [`crate::registration`]).
    pub isns: Vec<SocketAddr>,
    /// The balancing metrics (one `--balance` each); empty: no balancing. A portal is
    /// overloaded when any is at or above its HIGH, recovered when all are at or below LOW.
    pub balance: Vec<BalanceSpec>,
    /// An initiator moved less than this long ago is not moved again (nor back to the portal
    /// it left within twice this); a deleted registration stays deleted at least this long.
    pub cooldown_ms: u64,
    /// Initiator names the balancer never moves (`--pin`).
    pub pin: Vec<String>,
    /// Moves the balancer asks for in one interval at most (`--max-moves`).
    pub max_moves: usize,
    /// Time constant of the smoothed load figures the balancer decides on (`--smoothing`).
    pub smoothing_ms: u64,
    /// Admin endpoint address; None to run without it.
    pub admin: Option<SocketAddr>,
    /// The token the admin endpoint's mutating calls need (`--admin-token-file`); None: such
    /// calls are disabled.
    pub admin_token: Option<String>,
    /// Connection limits wanted for each portal; lowered at start so that every portal's
    /// share fits in the open-file limit ([`PortalLimits::sized`]).
    pub limits: PortalLimits,
    /// Per target (by IQN): authentication and access control. A target without an entry
    /// accepts every initiator without authentication.
    pub access: std::collections::BTreeMap<String, TargetAccess>,
    /// CHAP a discovery (SendTargets) session must pass (`--discovery-chap USER:SECRET`).
    pub discovery_chap: Option<Credentials>,
    /// Credentials the target answers with when a discovery session asks it to
    /// authenticate back.
    pub discovery_mutual_chap: Option<Credentials>,
    /// The balancer may move an initiator that holds a persistent reservation or
    /// registration (default: such initiators stay where they are).
    pub move_reservation_holders: bool,
}

impl Default for TargetConfig {
    fn default() -> TargetConfig {
        TargetConfig {
            portals: Vec::new(),
            luns: Vec::new(),
            isns: Vec::new(),
            balance: Vec::new(),
            cooldown_ms: 10_000,
            pin: Vec::new(),
            max_moves: balancer::DEFAULT_MAX_MOVES,
            smoothing_ms: balancer::SMOOTHING_TAU_MS,
            admin: None,
            admin_token: None,
            limits: PortalLimits::default(),
            access: Default::default(),
            discovery_chap: None,
            discovery_mutual_chap: None,
            move_reservation_holders: false,
        }
    }
}

impl TargetConfig {
    /// The balancing policy the configuration asks for; `None` without `--balance`.
    pub fn balance_policy(&self) -> anyhow::Result<Option<BalancePolicy>> {
        if self.balance.is_empty() {
            if !self.pin.is_empty() {
                anyhow::bail!("--pin needs --balance");
            }
            if self.smoothing_ms != balancer::SMOOTHING_TAU_MS {
                anyhow::bail!("--smoothing needs --balance");
            }
            return Ok(None);
        }
        let policy = BalancePolicy::new(self.balance.clone())?
            .with_cooldown_ms(self.cooldown_ms)
            .with_smoothing_tau_ms(self.smoothing_ms)
            .with_max_moves(self.max_moves)?
            .with_pinned(self.pin.iter().cloned())
            .with_reservation_holders_movable(self.move_reservation_holders);
        Ok(Some(policy))
    }
}

/// Path prefix of a null store LUN: `null:BYTES`.
pub const NULL_PREFIX: &str = "null:";

/// The entry point.
#[derive(Debug)]
pub struct Target;

/// A running target.
#[derive(Debug)]
pub struct TargetHandle {
    /// What the portals serve (swapped by [`TargetHandle::reload`]).
    set: Arc<TargetSet>,
    /// The configuration running now.
    running: TargetConfig,
    control: Arc<Control>,
    portals: Vec<SocketAddr>,
    admin: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    threads: Vec<JoinHandle<()>>,
}

impl Target {
    /// Opens the LUNs, binds the portals and starts the processors.
    pub fn start(cfg: TargetConfig) -> anyhow::Result<TargetHandle> {
        if cfg.portals.is_empty() {
            anyhow::bail!("at least one portal is needed");
        }
        if cfg.portals.len() > MAX_PORTALS {
            anyhow::bail!("at most {MAX_PORTALS} portals");
        }
        if cfg.luns.is_empty() {
            anyhow::bail!("at least one --lun IQN=FILE is needed");
        }
        if cfg.luns.len() > MAX_LUNS {
            anyhow::bail!("at most {MAX_LUNS} LUNs");
        }
        let balance = cfg.balance_policy()?;
        let built = crate::reload::build(&cfg, None)?;

        let limits = portal_limits(&cfg)?;
        let mut listeners = Vec::new();
        let mut infos = Vec::new();
        for (i, p) in cfg.portals.iter().enumerate() {
            let addr = p.address;
            let l = listener::bind_std(addr)
                .with_context(|| format!("cannot listen on portal {addr}"))?;
            let local = l.local_addr()?;
            infos.push(PortalInfo {
                id: PortalId(i as u16),
                address: local,
                // One portal group for all portals (RFC 7143 §4.4.1): every portal is the
                // same SCSI target port, so an initiator that keeps its ISID keeps its
                // I_T nexus, and its persistent reservations, across a move.
                tag: SHARED_PORTAL_GROUP_TAG,
            });
            listeners.push(l);
        }
        let control = Arc::new(Control::new(
            infos.clone(),
            built.names.clone(),
            (!cfg.isns.is_empty()).then(|| {
                cfg.isns
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            }),
            balance.clone(),
        ));
        for (p, info) in cfg.portals.iter().zip(&infos) {
            let capacity = p.capacity();
            match capacity {
                Some(c) => tracing::info!(
                    "portal {}: link capacity {:.0} Mbit/s each way{}",
                    info.address,
                    c * 8.0 / 1e6,
                    if p.link_capacity.is_some() {
                        ""
                    } else {
                        " (the interface's speed)"
                    }
                ),
                None => tracing::info!(
                    "portal {}: link capacity unknown (give --portal {},speed=RATE)",
                    info.address,
                    p.address
                ),
            }
            control.set_link_capacity(info.id, capacity);
        }
        validate_access(&cfg, &built.names)?;
        log_access(&cfg, &built.names);
        let target_set = Arc::new(TargetSet::with_entries(
            control.clone(),
            &built.names,
            built.targets,
            cfg.discovery_chap.clone(),
            cfg.discovery_mutual_chap.clone(),
        ));
        // The balancer asks whether a session holds a reservation or registration, in
        // whatever the targets are after reloads. Weak: the control plane must not keep the
        // target set (which holds the control plane) alive.
        let probed = Arc::downgrade(&target_set);
        control.with_plane(|p, _| {
            p.set_reservation_probe(iscsi_target_core::control::ReservationProbe::new(
                move |id| {
                    probed.upgrade().is_some_and(|set| {
                        set.served()
                            .targets
                            .values()
                            .any(|t| t.luns.holds_reservation(id))
                    })
                },
            ))
        });

        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut threads = Vec::new();
        let (admin_tx, admin_rx) = std::sync::mpsc::channel();
        threads.push(spawn_control_thread(
            control.clone(),
            cfg.clone(),
            shutdown_rx.clone(),
            admin_tx,
        )?);
        let admin = admin_rx
            .recv_timeout(Duration::from_secs(10))
            .context("the control thread did not start")?
            .context("admin endpoint")?;
        for (i, (l, info)) in listeners.into_iter().zip(&infos).enumerate() {
            threads.push(crate::portal::spawn(
                i,
                info.id,
                l,
                target_set.clone(),
                shutdown_rx.clone(),
                limits,
            )?);
        }
        Ok(TargetHandle {
            set: target_set,
            running: cfg,
            control,
            portals: infos.iter().map(|p| p.address).collect(),
            admin,
            shutdown,
            threads,
        })
    }
}

/// Checks the access rules: each names a served target; CHAP credentials follow the rules of
/// [`iscsi_proto::chap::validate_pair`] (secrets of 12 to 255 bytes, never the same secret in
/// both directions); mutual CHAP needs CHAP; an allow list names at least one initiator.
pub fn validate_access(cfg: &TargetConfig, served: &[String]) -> anyhow::Result<()> {
    let pair =
        |what: &str, chap: &Option<Credentials>, mutual: &Option<Credentials>| match (chap, mutual)
        {
            (Some(c), m) => iscsi_proto::chap::validate_pair(c, m.as_ref())
                .map_err(|e| anyhow::anyhow!("{what}: {e}")),
            (None, Some(_)) => Err(anyhow::anyhow!(
                "{what}: mutual CHAP needs CHAP for the initiator too"
            )),
            (None, None) => Ok(()),
        };
    for (iqn, a) in &cfg.access {
        if !served.contains(iqn) {
            anyhow::bail!("access rules for {iqn}, which is not a target here (no --lun {iqn}=…)");
        }
        pair(&format!("CHAP of {iqn}"), &a.chap, &a.mutual_chap)?;
        if let Some(allow) = &a.allow
            && (allow.is_empty() || allow.iter().any(|i| i.is_empty()))
        {
            anyhow::bail!("the allow list of {iqn} must name initiators");
        }
    }
    pair(
        "discovery CHAP",
        &cfg.discovery_chap,
        &cfg.discovery_mutual_chap,
    )
}

/// Says once, at start-up, how each target is protected — in particular a target that
/// accepts every initiator because it has no allow rule.
fn log_access(cfg: &TargetConfig, served: &[String]) {
    for iqn in served {
        let a = cfg.access.get(iqn);
        let chap = match a.map(|a| (a.chap.is_some(), a.mutual_chap.is_some())) {
            Some((true, true)) => "CHAP and mutual CHAP",
            Some((true, false)) => "CHAP",
            _ => "no authentication",
        };
        match a.and_then(|a| a.allow.as_ref()) {
            Some(allow) => {
                tracing::info!("target {iqn}: {chap}; {} initiator(s) allowed", allow.len())
            }
            None => tracing::warn!(
                "target {iqn}: {chap}; accepts every initiator (no --allow rule for it)"
            ),
        }
    }
    if cfg.discovery_chap.is_some() {
        tracing::info!("discovery sessions must pass CHAP");
    }
}

/// The connection limits of each portal: `cfg.limits` within this process's open-file
/// limit, after the LUN files, the listeners, the admin endpoint's connections and
/// [`DESCRIPTOR_RESERVE`]; logged, so an administrator sees what the limit allows.
fn portal_limits(cfg: &TargetConfig) -> anyhow::Result<PortalLimits> {
    let (open_files, _) =
        rlimit::getrlimit(rlimit::Resource::NOFILE).context("cannot read the open-file limit")?;
    let admin = match cfg.admin {
        Some(_) => crate::admin::AdminLimits::default().max_connections as u64 + 1,
        None => 0,
    };
    let reserved = DESCRIPTOR_RESERVE + cfg.luns.len() as u64 + cfg.portals.len() as u64 + admin;
    let limits = cfg
        .limits
        .sized(open_files, cfg.portals.len(), reserved)
        .map_err(anyhow::Error::msg)?;
    tracing::info!(
        "each portal serves up to {} connections, {} per client address (open-file limit {open_files})",
        limits.total,
        limits.per_address
    );
    Ok(limits)
}

/// The control thread: admin endpoint, and the balancer loop when `--balance` is given.
fn spawn_control_thread(
    control: Arc<Control>,
    cfg: TargetConfig,
    mut shutdown: watch::Receiver<bool>,
    ready: std::sync::mpsc::Sender<anyhow::Result<Option<SocketAddr>>>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            let rt = match crate::portal::current_thread_runtime() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready.send(Err(e.into()));
                    return;
                }
            };
            rt.block_on(async move {
                control.operator.set_token(cfg.admin_token.clone());
                let admin = match cfg.admin {
                    Some(a) => match crate::admin::serve(a, control.clone()).await {
                        Ok((addr, _task)) => {
                            let token = cfg.admin_token.is_some();
                            if let Some(w) = crate::admin_ops::exposure_warning(addr, token) {
                                tracing::warn!("{w}");
                            }
                            Some(addr)
                        }
                        Err(e) => {
                            let _ = ready.send(Err(anyhow::anyhow!("cannot listen on {a}: {e}")));
                            return;
                        }
                    },
                    None => None,
                };
                let _ = ready.send(Ok(admin));
                // iSNS registration and the balancer loop. Without an iSNS server the
                // registrar only records changes in the target's own table.
                let registrar = Arc::new(if cfg.isns.is_empty() {
                    crate::registration::Registrar::Local
                } else {
                    crate::registration::Registrar::Isns(Box::new(
                        crate::registration::IsnsRegistrar::with_servers(
                            cfg.isns.clone(),
                            control.clone(),
                        ),
                    ))
                });
                control.operator.set_registrar(registrar.clone());
                let keeper = tokio::spawn(crate::registration::keep_registered(
                    registrar.clone(),
                    control.clone(),
                    shutdown.clone(),
                ));
                // Validated in `Target::start`.
                if let Ok(Some(policy)) = cfg.balance_policy() {
                    let settings = crate::balance::BalanceSettings {
                        policy,
                        interval: Duration::from_secs(1),
                    };
                    tokio::spawn(crate::balance::run(
                        control.clone(),
                        registrar,
                        settings,
                        shutdown.clone(),
                    ));
                } else {
                    // Without a balancer sampling it, the configuration table's session
                    // figures are sampled here, so `portshift status` shows live rates.
                    tokio::spawn(measure(control.clone(), shutdown.clone()));
                }
                while !*shutdown.borrow() {
                    if shutdown.changed().await.is_err() {
                        break;
                    }
                }
                // Let the keeper deregister the entity from iSNS before the runtime stops.
                let _ = tokio::time::timeout(Duration::from_secs(3), keeper).await;
            });
        })
}

/// Samples the control plane every [`MEASURE_INTERVAL`] until shutdown: each session's IOPS
/// and smoothed byte rates.
async fn measure(control: Arc<Control>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(MEASURE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                control.sample();
            }
            _ = shutdown.changed() => return,
        }
    }
}

/// How often a graceful stop looks whether sessions are left.
const STOP_POLL: Duration = Duration::from_millis(50);

/// What [`TargetHandle::drain_for_stop`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopReport {
    /// Sessions asked to log out.
    pub asked: usize,
    /// Sessions still there when it returned (the grace ran out).
    pub left: usize,
}

/// How often the control thread samples the configuration table.
pub const MEASURE_INTERVAL: Duration = Duration::from_secs(1);

impl TargetHandle {
    /// The control plane (configuration table, placements, events).
    pub fn control(&self) -> &Arc<Control> {
        &self.control
    }

    /// Bound portal addresses, in `--portal` order.
    pub fn portals(&self) -> &[SocketAddr] {
        &self.portals
    }

    /// Served targets and their LUNs.
    pub fn targets(&self) -> Vec<(String, Vec<u16>)> {
        self.set
            .catalog()
            .targets
            .iter()
            .map(|t| (t.name.clone(), t.luns.clone()))
            .collect()
    }

    /// Serves what `cfg` describes from now on (SIGHUP): targets, LUNs and their access
    /// are rebuilt, keeping every unchanged logical unit and table
    /// ([`crate::reload`]); sessions of a target whose LUNs changed get REPORTED LUNS DATA
    /// HAS CHANGED, sessions of a removed target are closed, others notice nothing.
    /// Settings that need a restart keep their running values (named in the report). On an
    /// error nothing changes.
    pub fn reload(&mut self, mut cfg: TargetConfig) -> anyhow::Result<ReloadReport> {
        let need_restart = crate::reload::keep_restart_only(&self.running, &mut cfg);
        if cfg.luns.is_empty() {
            anyhow::bail!("at least one LUN is needed");
        }
        let old = self.set.served();
        let built = crate::reload::build(&cfg, Some(&old))?;
        validate_access(&cfg, &built.names)?;
        let report = ReloadReport {
            added: built
                .names
                .iter()
                .filter(|n| !old.targets.contains_key(*n))
                .cloned()
                .collect(),
            removed: old
                .catalog
                .targets
                .iter()
                .map(|t| &t.name)
                .filter(|n| !built.targets.contains_key(*n))
                .cloned()
                .collect(),
            luns_changed: built.changed.clone(),
            need_restart,
        };
        let changed: Vec<Arc<scsi::LunTable>> = built
            .changed
            .iter()
            .filter_map(|n| built.targets.get(n).map(|t| t.luns.clone()))
            .collect();
        self.set.replace(
            &built.names,
            built.targets,
            cfg.discovery_chap.clone(),
            cfg.discovery_mutual_chap.clone(),
        );
        for t in changed {
            t.inventory_changed();
        }
        self.running = cfg;
        Ok(report)
    }

    /// What the portals serve now.
    pub fn target_set(&self) -> &Arc<TargetSet> {
        &self.set
    }

    /// Bound admin endpoint address.
    pub fn admin(&self) -> Option<SocketAddr> {
        self.admin
    }

    /// A graceful stop's first part (SIGTERM): refuses new logins ("service unavailable"),
    /// asks every session to log out (Async Message "logout requested", RFC 7143 §11.9.1) —
    /// an initiator finishes its commands in flight before it logs out — and waits until no
    /// session is left or `grace` has passed. [`TargetHandle::shutdown`] then deregisters from
    /// iSNS and stops the processors. A session that ignores the request within half the grace
    /// is dropped by its connection (`LOGOUT_GRACE`, 3 s, after that).
    pub async fn drain_for_stop(&self, grace: Duration) -> StopReport {
        let time2logout = u16::try_from((grace / 2).as_secs()).unwrap_or(u16::MAX);
        let asked = self.control.begin_stop(time2logout);
        let deadline = tokio::time::Instant::now() + grace;
        let mut left = self.control.session_count();
        while left > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(STOP_POLL).await;
            left = self.control.session_count();
        }
        StopReport { asked, left }
    }

    /// Stops every processor and waits for their threads.
    pub fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(path: &str) -> TargetConfig {
        TargetConfig {
            portals: vec!["127.0.0.1:0".parse().unwrap()],
            luns: vec![LunConfig {
                iqn: "iqn.2024-01.test:null".into(),
                path: PathBuf::from(path),
                size: None,
                ..Default::default()
            }],
            isns: Vec::new(),
            balance: Vec::new(),
            cooldown_ms: 0,
            pin: Vec::new(),
            max_moves: balancer::DEFAULT_MAX_MOVES,
            smoothing_ms: balancer::SMOOTHING_TAU_MS,
            admin: None,
            limits: Default::default(),
            ..Default::default()
        }
    }

    #[test]
    fn the_balance_policy_combines_every_metric_and_the_settings() {
        let mut c = config("null:1048576");
        assert_eq!(c.balance_policy().unwrap(), None);
        c.pin = vec!["iqn.db".into()];
        assert!(c.balance_policy().is_err(), "--pin without --balance");
        c.balance = vec!["sessions:8".parse().unwrap(), "cpu:90%".parse().unwrap()];
        c.cooldown_ms = 5_000;
        c.max_moves = 2;
        let p = c.balance_policy().unwrap().unwrap();
        assert_eq!(p.specs, c.balance);
        assert_eq!((p.cooldown_ms, p.max_moves), (5_000, 2));
        assert!(p.is_pinned("iqn.db"));
        assert_eq!(p.smoothing_tau_ms, balancer::SMOOTHING_TAU_MS);
        c.smoothing_ms = 800;
        assert_eq!(c.balance_policy().unwrap().unwrap().smoothing_tau_ms, 800);
        let mut alone = config("null:1048576");
        alone.smoothing_ms = 800;
        let e = alone.balance_policy().unwrap_err().to_string();
        assert!(e.contains("--smoothing needs --balance"), "{e}");
        c.balance.push("sessions:4".parse().unwrap());
        let e = Target::start(c).unwrap_err().to_string();
        assert!(e.contains("sessions given twice"), "{e}");
    }

    #[test]
    fn access_rules_are_checked_at_start() {
        let creds = |u: &str, s: &str| Credentials {
            user: u.into(),
            secret: s.into(),
        };
        let with = |access: TargetAccess| {
            let mut c = config("null:1048576");
            c.access.insert("iqn.2024-01.test:null".into(), access);
            c
        };
        let start_err = |c: TargetConfig| format!("{:#}", Target::start(c).unwrap_err());
        // The same secret both ways (reflection).
        let e = start_err(with(TargetAccess {
            chap: Some(creds("a", "same-secret-12")),
            mutual_chap: Some(creds("t", "same-secret-12")),
            ..Default::default()
        }));
        assert!(e.contains("same as the initiator's secret"), "{e}");
        let e = start_err(with(TargetAccess {
            chap: Some(creds("a", "short")),
            ..Default::default()
        }));
        assert!(e.contains("at least 12 bytes"), "{e}");
        let e = start_err(with(TargetAccess {
            mutual_chap: Some(creds("t", "target-secret-1")),
            ..Default::default()
        }));
        assert!(e.contains("mutual CHAP needs CHAP"), "{e}");
        let e = start_err(with(TargetAccess {
            allow: Some(vec![]),
            ..Default::default()
        }));
        assert!(e.contains("must name initiators"), "{e}");
        let mut unknown = config("null:1048576");
        unknown
            .access
            .insert("iqn.nope".into(), TargetAccess::default());
        assert!(start_err(unknown).contains("not a target here"));
        let mut disco = config("null:1048576");
        disco.discovery_chap = Some(creds("d", "disco-secret-1"));
        disco.discovery_mutual_chap = Some(creds("t", "disco-secret-1"));
        assert!(start_err(disco).contains("discovery CHAP"));
        // Good rules start.
        let t = Target::start(with(TargetAccess {
            chap: Some(creds("a", "alice-secret-1")),
            mutual_chap: Some(creds("t", "array-secret-1")),
            allow: Some(vec!["iqn.host".into()]),
        }))
        .unwrap();
        t.shutdown();
    }

    #[test]
    fn null_store_luns() {
        let t = Target::start(config("null:1048576")).unwrap();
        assert_eq!(
            t.targets(),
            &[("iqn.2024-01.test:null".to_string(), vec![0])]
        );
        t.shutdown();
        for bad in ["null:", "null:0", "null:1000", "null:x"] {
            let e = Target::start(config(bad)).unwrap_err();
            assert!(format!("{e:#}").contains("multiple of 512"), "{bad}: {e:#}");
        }
        let e = Target::start(config("/nonexistent/portshift-lun")).unwrap_err();
        assert!(format!("{e:#}").contains("does not exist"), "{e:#}");
    }

    fn lun(iqn: &str, path: &str) -> LunConfig {
        LunConfig {
            iqn: iqn.into(),
            path: PathBuf::from(path),
            ..Default::default()
        }
    }

    #[test]
    fn a_reload_keeps_what_did_not_change_and_keeps_restart_only_settings() {
        let (a, b, c) = (
            "iqn.2024-01.test:a",
            "iqn.2024-01.test:b",
            "iqn.2024-01.test:c",
        );
        let mut cfg = config("null:1048576");
        cfg.luns = vec![lun(a, "null:1048576"), lun(b, "null:1048576")];
        let mut t = Target::start(cfg.clone()).unwrap();
        let before = t.target_set().served();
        let a0 = before.targets[a].luns.unit(0).unwrap().clone();
        let generation = t.target_set().generation();

        let mut next = cfg.clone();
        next.luns.push(lun(a, "null:2097152"));
        next.luns.push(lun(c, "null:1048576"));
        next.cooldown_ms = 1;
        next.portals = vec!["127.0.0.1:1".parse().unwrap()];
        let report = t.reload(next).unwrap();
        assert_eq!(report.added, [c]);
        assert!(report.removed.is_empty());
        assert_eq!(report.luns_changed, [a]);
        assert_eq!(report.need_restart, ["portals", "balancing cooldown"]);
        assert_eq!(t.portals().len(), 1);
        let after = t.target_set().served();
        assert!(t.target_set().generation() > generation);
        assert!(
            Arc::ptr_eq(&before.targets[b].luns, &after.targets[b].luns),
            "an unchanged target keeps its table"
        );
        assert!(
            Arc::ptr_eq(&a0, after.targets[a].luns.unit(0).unwrap()),
            "an unchanged LUN keeps its unit"
        );
        assert_eq!(after.targets[a].luns.luns(), [0, 1]);
        assert_eq!(
            t.targets(),
            &[
                (a.to_string(), vec![0, 1]),
                (b.to_string(), vec![0]),
                (c.to_string(), vec![0])
            ]
        );
        assert_eq!(t.control().targets().to_vec(), [a, b, c]);
        assert_eq!(after.catalog.targets.len(), 3);

        // A reload that cannot be applied changes nothing.
        let mut bad = cfg.clone();
        bad.luns.push(lun(b, "/nonexistent/portshift-lun"));
        let e = t.reload(bad).unwrap_err();
        assert!(format!("{e:#}").contains("does not exist"), "{e:#}");
        assert_eq!(t.target_set().served().catalog.targets.len(), 3);

        // Removing a target and a LUN.
        let report = t.reload(cfg).unwrap();
        assert_eq!(report.removed, [c]);
        assert_eq!(report.luns_changed, [a]);
        assert_eq!(t.control().targets().to_vec(), [a, b]);
        t.shutdown();
    }
}
