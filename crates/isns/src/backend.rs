//! The storage interface the server keeps the registry in: the embedded redb
//! [`Store`] (one server; the default) or an etcd cluster ([`EtcdStore`],
//! `--etcd`: any number of servers on one registry). The registry logic sees
//! neither: each request yields [`Changes`](crate::registry::Changes), the
//! committer turns a group of them into a [`Batch`] and the backend writes
//! it; a failed write is undone in the registry with `Backend::undo`.

use std::sync::{Arc, RwLock};

use crate::etcd::{EtcdError, EtcdStore, Prepared};
use crate::registry::Registry;
use crate::server::{MAX_BATCH, ServerConfig, now, write};
use crate::store::{Batch, Store, StoreError};

/// Where the registry is kept.
pub enum Backend {
    /// redb file: durable on this machine, one server.
    Embedded(Store),
    /// etcd cluster: shared by every server given the same endpoints and prefix.
    Etcd(Arc<EtcdStore>),
}

/// One write, captured under the registry lock.
pub(crate) enum Pending {
    Embedded(Batch),
    Etcd(Prepared),
}

impl Pending {
    /// Whether the write changes entities, counters or domains.
    pub(crate) fn changes_registry(&self) -> bool {
        match self {
            Pending::Embedded(b) => b.entities() > 0,
            Pending::Etcd(p) => !p.is_empty(),
        }
    }
}

/// Why a write did not happen.
pub(crate) enum WriteError {
    /// Undo it and apply the requests again (etcd: another server wrote
    /// first, or the cluster did not answer).
    Retry(StoreError),
    /// Undo it and fail the requests.
    Failed(StoreError),
}

impl Backend {
    /// Open what `config` names: its etcd endpoints, else its redb file.
    pub async fn open(config: &ServerConfig) -> Result<Backend, StoreError> {
        if config.etcd.is_empty() {
            Ok(Backend::Embedded(Store::open(&config.db)?))
        } else {
            let store = EtcdStore::connect(&config.etcd, &config.etcd_prefix).await?;
            Ok(Backend::Etcd(Arc::new(store)))
        }
    }

    /// Load the registry.
    pub async fn load(&self) -> Result<Registry, StoreError> {
        match self {
            Backend::Embedded(s) => s.load(),
            Backend::Etcd(s) => Ok(s.load().await?),
        }
    }

    /// Whether the server expires entities itself (embedded) or etcd's
    /// leases do.
    pub fn expires_locally(&self) -> bool {
        matches!(self, Backend::Embedded(_))
    }

    /// Most requests one write carries.
    pub fn max_batch(&self) -> usize {
        match self {
            Backend::Embedded(_) => MAX_BATCH,
            Backend::Etcd(_) => crate::etcd::MAX_BATCH,
        }
    }

    /// Times a write is undone and tried again before its requests fail.
    pub fn retries(&self) -> u32 {
        match self {
            Backend::Embedded(_) => 0,
            Backend::Etcd(_) => 50,
        }
    }

    /// The etcd store, when the registry is in etcd.
    pub fn etcd(&self) -> Option<&Arc<EtcdStore>> {
        match self {
            Backend::Etcd(s) => Some(s),
            Backend::Embedded(_) => None,
        }
    }

    /// Capture the write of `batch` (under the registry lock, from `reg`),
    /// with the refresh times taken from it (`refreshed`, when due): the
    /// embedded store writes them with the batch, etcd keeps the entities'
    /// leases alive from them.
    pub(crate) fn prepare(
        &self,
        reg: &Registry,
        mut batch: Batch,
        refreshed: Option<Vec<(u64, u64)>>,
    ) -> Pending {
        match self {
            Backend::Embedded(_) => {
                if let Some(r) = refreshed {
                    batch.add_refreshed(r);
                }
                Pending::Embedded(batch)
            }
            Backend::Etcd(s) => {
                if let Some(r) = refreshed {
                    s.note_refreshed(reg, r);
                }
                Pending::Etcd(s.prepare(reg, &batch))
            }
        }
    }

    /// Write `p` (on the committer thread).
    pub(crate) fn write(
        &self,
        p: &mut Pending,
        rt: &tokio::runtime::Handle,
    ) -> Result<(), WriteError> {
        match (self, p) {
            (Backend::Embedded(s), Pending::Embedded(b)) => s.write(b).map_err(WriteError::Failed),
            (Backend::Etcd(s), Pending::Etcd(p)) => {
                if p.is_empty() {
                    return Ok(());
                }
                match rt.block_on(s.write(p)) {
                    Ok(()) => Ok(()),
                    Err(e @ EtcdError::Conflict) => {
                        tracing::debug!("{e}: applying the requests again");
                        Err(WriteError::Retry(e.into()))
                    }
                    Err(e) => {
                        tracing::warn!("writing to etcd: {e}; trying again");
                        Err(WriteError::Retry(e.into()))
                    }
                }
            }
            _ => Err(WriteError::Failed(StoreError::Db(
                "backend mismatch".into(),
            ))),
        }
    }

    /// Put the registry back to what is stored, after `p` failed.
    pub(crate) fn undo(
        &self,
        registry: &RwLock<Registry>,
        p: &Pending,
        rt: &tokio::runtime::Handle,
    ) -> Result<(), StoreError> {
        match (self, p) {
            (Backend::Embedded(s), _) => {
                let stored = s.load()?;
                write(registry).restore(stored, now());
                Ok(())
            }
            (Backend::Etcd(s), Pending::Etcd(p)) => Ok(rt.block_on(s.undo(registry, p))?),
            (Backend::Etcd(s), Pending::Embedded(_)) => {
                let stored = rt.block_on(s.load())?;
                write(registry).restore(stored, now());
                Ok(())
            }
        }
    }
}
