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
use isns::client::{Client, NodeRegistration, NodeType, PortalGroupRegistration, Registration};

use crate::control::{Control, PortalInfo};

/// How often the full registration is sent again (and re-established after an iSNS restart).
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(20);
/// Registration period asked of the server (RFC 4171 §6.2.6), well above the refresh interval.
pub const REGISTRATION_PERIOD: u32 = 120;

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
    /// Registrations live in an iSNS server.
    Isns(Box<IsnsRegistrar>),
}

impl std::fmt::Debug for Registrar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Registrar::Local => write!(f, "Registrar::Local"),
            Registrar::Isns(r) => write!(f, "Registrar::Isns({})", r.server),
        }
    }
}

/// Why a registration change failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    #[error("iSNS server {server}: {source}")]
    Isns {
        server: SocketAddr,
        source: isns::client::ClientError,
    },
    #[error("unknown portal {0}")]
    UnknownPortal(PortalId),
}

/// The iSNS side: one client connection, serialised by a mutex (registration changes are rare).
pub struct IsnsRegistrar {
    server: SocketAddr,
    entity: String,
    control: Arc<Control>,
    client: tokio::sync::Mutex<Option<Client>>,
    /// Held across a change and the control plane's record of it (see [`Registrar::hold`]).
    changes: tokio::sync::Mutex<()>,
}

impl IsnsRegistrar {
    /// A registrar for the portals and targets of `control` at iSNS `server`. Nothing is sent
    /// until [`IsnsRegistrar::register_all`].
    pub fn new(server: SocketAddr, control: Arc<Control>) -> Self {
        let entity = format!(
            "portshift:{}",
            control
                .portals()
                .first()
                .map(|p| p.address.to_string())
                .unwrap_or_default()
        );
        IsnsRegistrar {
            server,
            entity,
            control,
            client: tokio::sync::Mutex::new(None),
            changes: tokio::sync::Mutex::new(()),
        }
    }

    pub fn entity(&self) -> &str {
        &self.entity
    }

    fn err(&self, source: isns::client::ClientError) -> RegistrationError {
        RegistrationError::Isns {
            server: self.server,
            source,
        }
    }

    /// Runs `f` on a connected client, connecting (again) when needed; a failed call drops the
    /// connection so the next one starts afresh.
    async fn with_client<T>(
        &self,
        f: impl AsyncFnOnce(&mut Client) -> Result<T, isns::client::ClientError>,
    ) -> Result<T, RegistrationError> {
        let mut guard = self.client.lock().await;
        let client = match &mut *guard {
            Some(c) => c,
            slot @ None => {
                let mut c = Client::connect(self.server)
                    .await
                    .map_err(|e| self.err(e))?;
                c.set_timeout(Duration::from_secs(5));
                slot.insert(c)
            }
        };
        match f(client).await {
            Ok(v) => Ok(v),
            Err(e) => {
                *guard = None;
                Err(self.err(e))
            }
        }
    }

    /// Registers the entity, portals, target nodes and Portal Groups as the control plane's
    /// registration table has them now (deleted ones with a NIL tag).
    pub async fn register_all(&self) -> Result<(), RegistrationError> {
        self.register_all_as(false).await
    }

    /// [`IsnsRegistrar::register_all`] with the Replace flag (RFC 4171 §5.6.5.1): the
    /// entity's objects are replaced by these, so target nodes no longer served (after a
    /// configuration reload) leave iSNS.
    pub async fn register_all_as(&self, replace: bool) -> Result<(), RegistrationError> {
        // The table read and sent as one change: a balancer change recorded meanwhile would
        // otherwise be undone in iSNS by this older copy of the table.
        let _held = self.changes.lock().await;
        let snapshot = self.control.snapshot();
        let (mut reg, deleted) = full_registration(
            &self.entity,
            self.control.portals(),
            &self.control.targets(),
            &snapshot.registrations,
        );
        reg.replace = replace;
        self.with_client(async |c| {
            c.register(&reg).await?;
            for (target, portal) in &deleted {
                c.delete_registration(target, *portal).await?;
            }
            Ok(())
        })
        .await
    }

    /// Deregisters the whole entity (at shutdown).
    pub async fn deregister_all(&self) -> Result<(), RegistrationError> {
        let source = self.control.targets().first().cloned().unwrap_or_default();
        let entity = self.entity.clone();
        self.with_client(async |c| c.deregister_entity(&source, &entity).await)
            .await
    }
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
                r.with_client(async |c| c.delete_registration(target, addr).await)
                    .await
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
                r.with_client(async |c| c.restore_registration(target, addr, tag).await)
                    .await
            }
        }
    }
}

/// Keeps the registration alive: registers at start, then again every [`REFRESH_INTERVAL`]
/// (which also re-creates it after an iSNS server restart). Failures become events, and the
/// keeper retries every few seconds until it succeeds.
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
    loop {
        let result = r.register_all_as(replace).await;
        let answer = match &result {
            Ok(()) => Ok(format!("registered with {}", r.server)),
            Err(e) => Err(e.to_string()),
        };
        control.with_plane(|plane, now| plane.isns_answered(answer, now));
        let wait = match result {
            Ok(()) => {
                if failing {
                    tracing::info!("iSNS registration with {} re-established", r.server);
                }
                failing = false;
                REFRESH_INTERVAL
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
                Duration::from_secs(2)
            }
        };
        replace = false;
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
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
}
