//! Registration of the target's (target, portal) Portal Groups: deleting and restoring them is how
//! the balancer steers initiators that ask iSNS where to log in (patent steps 108 and 112).
//!
//! [`Registrar::Local`] keeps the registration table in the target only (no iSNS server
//! configured: only login redirects steer initiators). [`Registrar::Isns`] registers the target's
//! Network Entity, its portals (in portal order, so "the first portal" is portal 0), every target
//! node and one Portal Group per (target, portal) with the portal's tag; a deleted registration
//! is its Portal Group with a NIL tag (RFC 4171 §6.5.4: not reachable through that portal).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use balancer::{EventKind, PortalId, RegistrationRow};
use isns::client::{
    Client, ClientError, NodeRegistration, NodeType, PortalGroupRegistration, Registration,
};
use isns::failover::{FailoverClient, FailoverError};

use crate::control::{Control, PortalInfo};

/// How often the full registration is sent again (and re-established after an iSNS restart).
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(20);
/// Registration period asked of the server (RFC 4171 §6.2.6), well above the refresh interval.
pub const REGISTRATION_PERIOD: u32 = 120;
/// How often the keeper checks that the iSNS server in use answers and holds the registration
/// (one query), and how often it retries while no server answers.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// Bound on connecting to an iSNS server and on each of its answers; a server slower than this
/// counts as not answering and the next one is tried.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// What a full registration sends, from the control plane's registration table: one
/// DevAttrReg of the entity with its portals, target nodes and the Portal Groups that are
/// registered (each with its portal's tag), and the (target, portal) registrations that are
/// deleted, to be registered with a NIL tag right after it.
pub fn full_registration(
    entity: &str,
    portals: &[PortalInfo],
    targets: &[String],
    rows: &[RegistrationRow],
) -> (Registration, Vec<(String, SocketAddr)>) {
    let address = |id: PortalId| portals.iter().find(|p| p.id == id).map(|p| p.address);
    let reg = Registration {
        entity: entity.to_string(),
        portals: portals.iter().map(|p| p.address).collect(),
        nodes: targets
            .iter()
            .map(|t| NodeRegistration {
                name: t.clone(),
                node_type: NodeType::Target,
                alias: None,
            })
            .collect(),
        portal_groups: rows
            .iter()
            .filter(|r| r.registered)
            .filter_map(|r| {
                Some(PortalGroupRegistration {
                    node: r.target.clone(),
                    portal: address(r.portal)?,
                    tag: u32::from(r.tag),
                })
            })
            .collect(),
        registration_period: Some(REGISTRATION_PERIOD),
        replace: false,
    };
    let deleted = rows
        .iter()
        .filter(|r| !r.registered)
        .filter_map(|r| Some((r.target.clone(), address(r.portal)?)))
        .collect();
    (reg, deleted)
}

/// Carries out registration changes.
pub enum Registrar {
    /// No iSNS server: changes are recorded in the target's table only.
    Local,
    /// Registrations live in an iSNS server (the first of a list that answers).
    Isns(Box<IsnsRegistrar>),
}

impl std::fmt::Debug for Registrar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Registrar::Local => write!(f, "Registrar::Local"),
            Registrar::Isns(r) => write!(f, "Registrar::Isns({:?})", r.servers),
        }
    }
}

/// Why a registration change failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    #[error(transparent)]
    Isns(#[from] FailoverError),
    #[error("unknown portal {0}")]
    UnknownPortal(PortalId),
}

/// The connection side of an [`IsnsRegistrar`]: the servers and which of them holds the full
/// registration.
struct Link {
    client: FailoverClient,
    /// The server the full registration was last sent to; a call reaching any other server
    /// (after a failover, or a server that stopped answering and came back) sends it first.
    registered_with: Option<SocketAddr>,
}

/// The iSNS side: one client connection to the first of the servers that answers, serialised by
/// a mutex (registration changes are rare).
pub struct IsnsRegistrar {
    servers: Vec<SocketAddr>,
    entity: String,
    control: Arc<Control>,
    link: tokio::sync::Mutex<Link>,
    /// Held across a change and the control plane's record of it (see [`Registrar::hold`]).
    changes: tokio::sync::Mutex<()>,
}

impl IsnsRegistrar {
    /// A registrar for the portals and targets of `control` at iSNS `server`. Nothing is sent
    /// until [`IsnsRegistrar::register_all`].
    pub fn new(server: SocketAddr, control: Arc<Control>) -> Self {
        Self::with_servers(vec![server], control)
    }

    /// A registrar using the first of `servers` that answers, moving to the next when it stops
    /// answering (see [`isns::failover`]).
    pub fn with_servers(servers: Vec<SocketAddr>, control: Arc<Control>) -> Self {
        let entity = format!(
            "portshift:{}",
            control
                .portals()
                .first()
                .map(|p| p.address.to_string())
                .unwrap_or_default()
        );
        IsnsRegistrar {
            link: tokio::sync::Mutex::new(Link {
                client: FailoverClient::new(servers.clone(), CALL_TIMEOUT),
                registered_with: None,
            }),
            servers,
            entity,
            control,
            changes: tokio::sync::Mutex::new(()),
        }
    }

    pub fn entity(&self) -> &str {
        &self.entity
    }

    /// The iSNS servers, in the order they are tried.
    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// Sends the full registration as the control plane's table has it now: the entity with
    /// its portals, target nodes and registered Portal Groups, then the deleted (target,
    /// portal) registrations with a NIL tag — so a server reached after a failover learns the
    /// balancer's deletions too, and nothing deleted is restored.
    async fn send_full(&self, c: &mut Client, replace: bool) -> Result<(), ClientError> {
        let snapshot = self.control.snapshot();
        let (mut reg, deleted) = full_registration(
            &self.entity,
            self.control.portals(),
            &self.control.targets(),
            &snapshot.registrations,
        );
        reg.replace = replace;
        c.register(&reg).await?;
        for (target, portal) in &deleted {
            c.delete_registration(target, *portal).await?;
        }
        Ok(())
    }

    /// Carries out `op` on the server in use or, when it does not answer, the next one; a
    /// server that does not hold the full registration yet gets it first (from the table as
    /// it is now). Returns the server that answered.
    async fn with_client(&self, op: Op<'_>) -> Result<SocketAddr, RegistrationError> {
        let mut guard = self.link.lock().await;
        let link = &mut *guard;
        let mut call = link.client.call();
        loop {
            let (server, c) = link.client.next(&mut call).await?;
            let mut result = Ok(());
            let full = matches!(op, Op::Full { .. });
            if link.registered_with != Some(server) && !full && !matches!(op, Op::Deregister) {
                link.registered_with = None;
                result = self.send_full(c, false).await;
                if result.is_ok() {
                    link.registered_with = Some(server);
                    tracing::info!("registered with iSNS server {server}");
                }
            }
            if result.is_ok() {
                result = self.perform(c, &op).await;
            }
            match &result {
                Ok(()) if full => link.registered_with = Some(server),
                Ok(()) if matches!(op, Op::Deregister) => link.registered_with = None,
                Err(e) if isns::failover::not_answered(e) => link.registered_with = None,
                _ => {}
            }
            if link.client.outcome(&mut call, server, result)?.is_some() {
                return Ok(server);
            }
        }
    }

    /// Sends one operation's requests.
    async fn perform(&self, c: &mut Client, op: &Op<'_>) -> Result<(), ClientError> {
        match *op {
            Op::Full { replace } => self.send_full(c, replace).await,
            Op::Check => {
                let Some(first) = self.control.targets().first().cloned() else {
                    return Ok(());
                };
                let resp = c.call_ok(isns::request::entity_of_node(&first)).await?;
                if isns::request::entity_of_node_answer(&resp) != Some(self.entity.as_str()) {
                    tracing::warn!(
                        "the iSNS server lost this target's registration; registering again"
                    );
                    self.send_full(c, false).await?;
                }
                Ok(())
            }
            Op::Delete { target, portal } => c.delete_registration(target, portal).await,
            Op::Restore {
                target,
                portal,
                tag,
            } => c.restore_registration(target, portal, tag).await,
            Op::Deregister => {
                let source = self.control.targets().first().cloned().unwrap_or_default();
                c.deregister_entity(&source, &self.entity).await
            }
        }
    }

    /// Registers the entity, portals, target nodes and Portal Groups as the control plane's
    /// registration table has them now (deleted ones with a NIL tag).
    pub async fn register_all(&self) -> Result<(), RegistrationError> {
        self.register_all_as(false).await.map(|_| ())
    }

    /// [`IsnsRegistrar::register_all`] with the Replace flag (RFC 4171 §5.6.5.1): the
    /// entity's objects are replaced by these, so target nodes no longer served (after a
    /// configuration reload) leave iSNS. Returns the server that took it.
    pub async fn register_all_as(&self, replace: bool) -> Result<SocketAddr, RegistrationError> {
        // The table read and sent as one change: a balancer change recorded meanwhile would
        // otherwise be undone in iSNS by this older copy of the table.
        let _held = self.changes.lock().await;
        self.with_client(Op::Full { replace }).await
    }

    /// Makes sure the server in use holds the registration, cheaply: asks for the entity of
    /// the first target node (a query, which also refreshes the entity, RFC 4171 §6.2.6) and
    /// registers everything again when the server no longer knows it (restarted with an empty
    /// registry, or the entity expired). When the server in use does not answer, the next one
    /// gets the full registration (`IsnsRegistrar::with_client`). Returns the server.
    pub async fn ensure_registered(&self) -> Result<SocketAddr, RegistrationError> {
        let _held = self.changes.lock().await;
        self.with_client(Op::Check).await
    }

    /// Deregisters the whole entity (at shutdown), from the server in use.
    pub async fn deregister_all(&self) -> Result<(), RegistrationError> {
        self.with_client(Op::Deregister).await.map(|_| ())
    }
}

/// What [`IsnsRegistrar::with_client`] carries out.
enum Op<'a> {
    /// The full registration ([`IsnsRegistrar::send_full`]).
    Full {
        replace: bool,
    },
    /// [`IsnsRegistrar::ensure_registered`]'s query.
    Check,
    Delete {
        target: &'a str,
        portal: SocketAddr,
    },
    Restore {
        target: &'a str,
        portal: SocketAddr,
        tag: u32,
    },
    /// DevDereg of the entity.
    Deregister,
}

impl Registrar {
    /// Deregisters (target, portal) so that queries for `target` no longer return `portal`.
    pub async fn delete_registration(
        &self,
        target: &str,
        portal: PortalId,
    ) -> Result<(), RegistrationError> {
        match self {
            Registrar::Local => Ok(()),
            Registrar::Isns(r) => {
                let addr = r
                    .control
                    .portal(portal)
                    .ok_or(RegistrationError::UnknownPortal(portal))?
                    .address;
                r.with_client(Op::Delete {
                    target,
                    portal: addr,
                })
                .await
                .map(|_| ())
            }
        }
    }

    /// Holds off the keeper's full refresh ([`IsnsRegistrar::register_all`]) while the caller
    /// changes one registration and records the result in the control plane. Without it, a
    /// refresh that read the table before the change was recorded re-sends the old state: a
    /// restored registration deleted again in iSNS while the table says registered, so a host
    /// moved there later found no portal at all until the next refresh.
    pub async fn hold(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match self {
            Registrar::Local => None,
            Registrar::Isns(r) => Some(r.changes.lock().await),
        }
    }

    /// Registers (target, portal) again.
    pub async fn restore_registration(
        &self,
        target: &str,
        portal: PortalId,
    ) -> Result<(), RegistrationError> {
        match self {
            Registrar::Local => Ok(()),
            Registrar::Isns(r) => {
                let p = r
                    .control
                    .portal(portal)
                    .ok_or(RegistrationError::UnknownPortal(portal))?;
                let (addr, tag) = (p.address, u32::from(p.tag));
                r.with_client(Op::Restore {
                    target,
                    portal: addr,
                    tag,
                })
                .await
                .map(|_| ())
            }
        }
    }
}

/// Keeps the registration alive: registers at start, sends the full registration again every
/// [`REFRESH_INTERVAL`], and every [`CHECK_INTERVAL`] in between makes sure the server in use
/// still answers and holds it ([`IsnsRegistrar::ensure_registered`]): a server that stopped
/// answering is replaced by the next of the list, which gets everything (the balancer's
/// deletions included) within a check interval plus the call timeouts. Failures become events;
/// while no server answers, the keeper tries again every check interval. I/O never waits for
/// any of this.
pub async fn keep_registered(
    registrar: Arc<Registrar>,
    control: Arc<Control>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let Registrar::Isns(r) = registrar.as_ref() else {
        return;
    };
    let mut failing = false;
    let mut replace = false;
    let mut used: Option<SocketAddr> = None;
    let mut next_full = tokio::time::Instant::now();
    loop {
        let full = replace || tokio::time::Instant::now() >= next_full;
        let result = if full {
            r.register_all_as(replace).await
        } else {
            r.ensure_registered().await
        };
        let answer = match &result {
            Ok(server) => Ok(format!("registered with {server}")),
            Err(e) => Err(e.to_string()),
        };
        control.with_plane(|plane, now| plane.isns_answered(answer, now));
        match result {
            Ok(server) => {
                if failing {
                    tracing::info!("iSNS registration with {server} re-established");
                } else if used.is_some_and(|u| u != server) {
                    tracing::warn!("iSNS registration moved to {server}");
                }
                if full {
                    next_full = tokio::time::Instant::now() + REFRESH_INTERVAL;
                }
                used = Some(server);
                failing = false;
                crate::admin_ops::retry_owed_registrations(&control).await;
            }
            Err(e) => {
                if !failing {
                    control.events.push(
                        EventKind::Failed {
                            what: format!("registering with iSNS: {e}"),
                        },
                        "will retry every 2 s",
                    );
                }
                failing = true;
                // Whichever server answers next gets the full registration.
                next_full = tokio::time::Instant::now();
            }
        }
        replace = false;
        tokio::select! {
            _ = tokio::time::sleep(CHECK_INTERVAL) => {}
            _ = control.targets_changed.notified() => replace = true,
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    let _ = r.deregister_all().await;
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::two_portals;

    /// The keeper records what the iSNS server answered: an unreachable server shows as a
    /// failed contact (so `portshift status` does not claim "registered"), a reachable one as
    /// accepted.
    #[tokio::test]
    async fn the_keeper_records_what_isns_answered() {
        let control = Arc::new(Control::new(
            two_portals(),
            vec!["iqn.2024-01.test:t1".into()],
            None,
            None,
        ));
        // Nothing listens on port 1.
        let registrar = Arc::new(Registrar::Isns(Box::new(IsnsRegistrar::new(
            "127.0.0.1:1".parse().unwrap(),
            control.clone(),
        ))));
        let (stop, rx) = tokio::sync::watch::channel(false);
        let keeper = tokio::spawn(keep_registered(registrar, control.clone(), rx));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let contact = loop {
            if let Some(c) = control.snapshot().isns_contact {
                break c;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no contact recorded"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(!contact.ok, "{contact:?}");
        assert!(contact.detail.contains("127.0.0.1:1"), "{contact:?}");
        stop.send(true).unwrap();
        keeper.await.unwrap();

        // A real server accepts it.
        let dir = tempfile::tempdir().unwrap();
        let server = isns::Server::bind(isns::ServerConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            dir.path().join("isns.redb"),
        ))
        .await
        .unwrap();
        let addr = server.local_addr().unwrap();
        let (server_stop, server_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(server.run(async move {
            let _ = server_rx.await;
        }));
        let registrar = Arc::new(Registrar::Isns(Box::new(IsnsRegistrar::new(
            addr,
            control.clone(),
        ))));
        let (stop, rx) = tokio::sync::watch::channel(false);
        let keeper = tokio::spawn(keep_registered(registrar, control.clone(), rx));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            if control.snapshot().isns_contact.is_some_and(|c| c.ok) {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "never accepted");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.send(true).unwrap();
        keeper.await.unwrap();
        let _ = server_stop.send(());
    }

    /// A balancer change held with [`Registrar::hold`] and the keeper's full refresh do not
    /// interleave: the refresh waits, then sends the table as the change left it.
    #[tokio::test]
    async fn a_refresh_waits_for_a_change_in_progress() {
        let target = "iqn.2024-01.test:t1";
        let control = Arc::new(Control::new(two_portals(), vec![target.into()], None, None));
        let dir = tempfile::tempdir().unwrap();
        let server = isns::Server::bind(isns::ServerConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            dir.path().join("isns.redb"),
        ))
        .await
        .unwrap();
        let addr = server.local_addr().unwrap();
        let (server_stop, server_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(server.run(async move {
            let _ = server_rx.await;
        }));
        let registrar = Arc::new(Registrar::Isns(Box::new(IsnsRegistrar::new(
            addr,
            control.clone(),
        ))));
        let Registrar::Isns(r) = registrar.as_ref() else {
            unreachable!()
        };
        r.register_all().await.unwrap();

        // A deletion in progress: sent to iSNS, not yet recorded in the table.
        let held = registrar.hold().await;
        registrar
            .delete_registration(target, PortalId(0))
            .await
            .unwrap();
        let refresh = {
            let registrar = registrar.clone();
            tokio::spawn(async move {
                let Registrar::Isns(r) = registrar.as_ref() else {
                    unreachable!()
                };
                r.register_all().await
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !refresh.is_finished(),
            "the refresh ran while a change was in progress"
        );
        control.delete_registration(target, PortalId(0));
        drop(held);
        refresh.await.unwrap().unwrap();

        // iSNS agrees with the table: the first portal is not listed for the target.
        let mut c = isns::Client::connect(addr).await.unwrap();
        let listed = c
            .query_target_portals("iqn.2024-01.test:probe", target)
            .await
            .unwrap();
        assert_eq!(listed, [control.portals()[1].address]);
        let _ = server_stop.send(());
    }

    async fn listed(server: SocketAddr, target: &str) -> Vec<SocketAddr> {
        let mut c = isns::Client::connect(server).await.unwrap();
        c.query_target_portals("iqn.2024-01.test:probe", target)
            .await
            .unwrap()
    }

    /// When the server in use stops answering, the keeper moves to the next one and registers
    /// everything there as the table has it now: a registration the balancer deleted stays
    /// deleted (it is not restored by the failover), and the contact shows the new server.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failover_registers_everything_with_the_next_server_deletions_included() {
        let target = "iqn.2024-01.test:t1";
        let control = Arc::new(Control::new(two_portals(), vec![target.into()], None, None));
        let [p0, p1] = [control.portals()[0].address, control.portals()[1].address];
        let mut a = isns::testing::KillableServer::start();
        let b = isns::testing::KillableServer::start();
        let registrar = Arc::new(Registrar::Isns(Box::new(IsnsRegistrar::with_servers(
            vec![a.addr, b.addr],
            control.clone(),
        ))));
        let (stop, rx) = tokio::sync::watch::channel(false);
        let keeper = tokio::spawn(keep_registered(registrar.clone(), control.clone(), rx));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while listed(a.addr, target).await != [p0, p1] {
            assert!(
                tokio::time::Instant::now() < deadline,
                "never registered with A"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            listed(b.addr, target).await.is_empty(),
            "registered with B too"
        );

        // The balancer deletes (t1, P0), as balance.rs does.
        {
            let _held = registrar.hold().await;
            registrar
                .delete_registration(target, PortalId(0))
                .await
                .unwrap();
            control.delete_registration(target, PortalId(0));
        }
        assert_eq!(listed(a.addr, target).await, [p1]);

        a.kill();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let contact = control.snapshot().isns_contact;
            if contact.is_some_and(|c| c.ok && c.detail.contains(&b.addr.to_string())) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never moved to B: {:?}",
                control.snapshot().isns_contact
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Everything is at B, the deletion included: only P1 is listed for the target.
        assert_eq!(listed(b.addr, target).await, [p1]);
        stop.send(true).unwrap();
        keeper.await.unwrap();
    }

    /// A fresh iSNS server with both portals of `target` registered by a registrar that the
    /// operator's calls use too: (control, the portals' addresses, server, registrar).
    async fn registered_for_operator(
        target: &str,
    ) -> (
        Arc<Control>,
        [SocketAddr; 2],
        isns::testing::KillableServer,
        Arc<Registrar>,
    ) {
        let control = Arc::new(Control::new(two_portals(), vec![target.into()], None, None));
        let portals = [control.portals()[0].address, control.portals()[1].address];
        let server = isns::testing::KillableServer::start();
        let registrar = Arc::new(Registrar::Isns(Box::new(IsnsRegistrar::new(
            server.addr,
            control.clone(),
        ))));
        control.operator.set_registrar(registrar.clone());
        let Registrar::Isns(r) = registrar.as_ref() else {
            unreachable!()
        };
        r.register_all().await.unwrap();
        assert_eq!(listed(server.addr, target).await, portals);
        (control, portals, server, registrar)
    }

    /// Runs the keeper until iSNS lists `want` for `target` (at most 10 s), then checks that
    /// the table agrees about P0 and that P0's registration change was recorded as `reason`.
    async fn keep_until_listed(
        registrar: Arc<Registrar>,
        control: Arc<Control>,
        server: SocketAddr,
        target: &str,
        want: &[SocketAddr],
        reason: &str,
    ) {
        let (stop, rx) = tokio::sync::watch::channel(false);
        let keeper = tokio::spawn(keep_registered(registrar, control.clone(), rx));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while listed(server, target).await != want {
            assert!(
                tokio::time::Instant::now() < deadline,
                "iSNS does not list {want:?}: {:?}",
                control.snapshot().events
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let p0_listed = want.contains(&control.portals()[0].address);
        let snap = control.snapshot();
        assert!(
            snap.registrations
                .iter()
                .all(|row| row.portal != PortalId(0) || row.registered == p0_listed),
            "{:?}",
            snap.registrations
        );
        assert!(
            snap.events.iter().any(|e| e.reason == reason
                && match &e.kind {
                    EventKind::RegistrationDeleted { portal, .. } => {
                        !p0_listed && *portal == PortalId(0)
                    }
                    EventKind::RegistrationRestored { portal, .. } => {
                        p0_listed && *portal == PortalId(0)
                    }
                    _ => false,
                }),
            "{:?}",
            snap.events
        );
        stop.send(true).unwrap();
        keeper.await.unwrap();
    }

    /// Records that the operator's delete (`deleted`) or restore of `target` on P0 got no
    /// answer from the iSNS server, as admin_ops.rs records it.
    fn timed_out(
        p: &mut iscsi_target_core::ControlPlane,
        target: &str,
        deleted: bool,
        reason: &str,
        now: u64,
    ) {
        let no_answer = Err("iSNS server did not answer within 3s".into());
        p.operator_registration_changed(target, PortalId(0), deleted, no_answer, reason, now);
    }

    /// A drain whose delete the iSNS server did not answer (recorded as failed, the table
    /// still saying registered) is retried by the keeper once the server answers: iSNS stops
    /// listing the drained portal and the table records the deletion.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_keeper_retries_a_drain_delete_that_failed() {
        let target = "iqn.2024-01.test:t1";
        let (control, [p0, p1], server, registrar) = registered_for_operator(target).await;
        // The operator drains P0 and the delete times out, as admin_ops.rs records it.
        control.with_plane(|p, now| {
            p.drain(PortalId(0)).unwrap();
            timed_out(p, target, true, "operator: draining P0", now);
        });
        assert_eq!(listed(server.addr, target).await, [p0, p1]);
        let reason = "retrying the drain of P0";
        keep_until_listed(registrar, control, server.addr, target, &[p1], reason).await;
    }

    /// An undrain whose restore the iSNS server did not answer (recorded as failed, the table
    /// still saying deleted) is retried by the keeper once the server answers: iSNS lists the
    /// portal again and the table records the restore.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_keeper_retries_an_undrain_restore_that_failed() {
        let target = "iqn.2024-01.test:t1";
        let (control, [p0, p1], server, registrar) = registered_for_operator(target).await;
        // P0 was drained (its registration deleted), then undrained, and the restore timed
        // out, as admin_ops.rs records it.
        registrar
            .delete_registration(target, PortalId(0))
            .await
            .unwrap();
        control.with_plane(|p, now| {
            p.drain(PortalId(0)).unwrap();
            p.operator_registration_changed(target, PortalId(0), true, Ok(()), "drain", now);
            p.undrain(PortalId(0)).unwrap();
            timed_out(p, target, false, "operator: undraining P0", now);
        });
        assert_eq!(listed(server.addr, target).await, [p1]);
        let reason = "retrying the undrain of P0";
        keep_until_listed(registrar, control, server.addr, target, &[p0, p1], reason).await;
    }
}
