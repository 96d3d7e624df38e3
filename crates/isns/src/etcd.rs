//! The registry in an etcd cluster (`portshift isns --etcd`): any number of
//! servers serve one registry.
//!
//! Keys under the prefix (default `/portshift/isns/`): `meta` (the counters,
//! so registration order is one global sequence), `domains` (discovery
//! domains and sets), `e/SEQ` (one entity row with the address that created
//! it, attached to the entity's lease). Every write is one etcd transaction
//! conditional on the mod revisions this server read: `meta` (every write
//! puts it, so two servers' writes are serialized) and each entity row it
//! writes. A refused transaction is undone in the local copy (the rows go
//! back to the revisions the copy held), the server waits until its watch
//! has caught up and applies the requests again; the client is answered only
//! after a transaction succeeded.
//!
//! Reads come from the local copy, which one watch on the prefix keeps
//! current (`apply_watch`): changes made through other servers are applied
//! with [`Registry::apply_stored`], and their SCNs go to the subscribers
//! connected to this server.
//!
//! Expiry (RFC 4171 §6.2.6): one etcd lease per Network Entity, TTL the
//! Registration Period. Messages from an entity's nodes are noted in memory
//! ([`Registry::take_refreshed`]); a lease is kept alive from those notes at
//! most every third of its period, after the last message, so expiry is at
//! least one Registration Period after the last message (etcd also resets
//! every lease to its full TTL when its leader changes). etcd deletes the
//! row when the lease runs out: each server sees that one delete. Entity
//! Status Inquiry runs on one server at a time, the winner of an etcd
//! election (`run_election`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    WatchOptions,
};
use tokio::sync::Notify;

use crate::registry::dd::Domains;
use crate::registry::{Counters, Entity, Notification, Registry};
use crate::server::{Shared, deliver_scns, now, route_scns, write};
use crate::store::{self, Batch, StoreError};

/// Default key prefix.
pub const DEFAULT_PREFIX: &str = "/portshift/isns/";
/// TTL of a server's election lease, seconds: how long the ESI role stays
/// with a server that died.
pub const ELECTION_TTL: i64 = 5;
/// Most requests one transaction carries (etcd refuses more than 128
/// operations in one transaction by default).
pub const MAX_BATCH: usize = 40;
/// How long a server waits for its watch to catch up after a refused write.
const CATCH_UP: Duration = Duration::from_secs(5);
/// How long the reads undoing a refused write are tried again.
const UNDO_PATIENCE: Duration = Duration::from_secs(15);

/// etcd errors.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("another server changed the registry first")]
    Conflict,
    #[error("{0}")]
    Store(#[from] StoreError),
}

impl From<EtcdError> for StoreError {
    fn from(e: EtcdError) -> StoreError {
        match e {
            EtcdError::Store(s) => s,
            e => StoreError::Db(e.to_string()),
        }
    }
}

/// What the local copy holds of each key: the mod revision it was read at,
/// and each entity's lease.
#[derive(Debug, Default)]
struct Revs {
    entities: HashMap<u64, (i64, i64)>,
    meta: i64,
    domains: i64,
}

/// The registry's store in etcd, shared by the committer and the tasks.
pub struct EtcdStore {
    client: Client,
    prefix: String,
    revs: Mutex<Revs>,
    /// The etcd revision the local copy reflects (the watch's progress).
    applied: AtomicI64,
    /// Ask the watch for a progress notification.
    progress: Notify,
    /// Entities with messages since their lease was last kept alive:
    /// seq → (lease, period).
    refreshed: Mutex<HashMap<u64, (i64, u32)>>,
    /// Whether this server holds the ESI role (won the election).
    leader: AtomicBool,
}

/// One entity row of a write.
#[derive(Debug)]
struct Row {
    seq: u64,
    value: Option<Vec<u8>>,
    /// Mod revision the row had when read (0: absent).
    expect: i64,
    lease: i64,
    period: u32,
}

/// A write, captured under the registry lock with the revisions it is
/// conditional on.
#[derive(Debug, Default)]
pub struct Prepared {
    rows: Vec<Row>,
    meta: Option<(Vec<u8>, i64)>,
    domains: Option<(Vec<u8>, i64)>,
}

impl Prepared {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.meta.is_none() && self.domains.is_none()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Entity row value: the creating address (length-prefixed text, empty when
/// unknown), then the row as [`store::encode_entity`] writes it.
fn encode_value(owner: Option<&str>, row: &[u8]) -> Vec<u8> {
    let owner = owner.unwrap_or("");
    let mut v = Vec::with_capacity(1 + owner.len() + row.len());
    v.push(u8::try_from(owner.len()).unwrap_or(0));
    v.extend_from_slice(
        owner
            .as_bytes()
            .get(..usize::from(v[0]))
            .unwrap_or_default(),
    );
    v.extend_from_slice(row);
    v
}

fn decode_value(seq: u64, v: &[u8]) -> Result<(Entity, Option<IpAddr>), StoreError> {
    let corrupt = |why: &str| StoreError::Corrupt {
        seq,
        why: why.to_string(),
    };
    let (&n, rest) = v.split_first().ok_or_else(|| corrupt("empty value"))?;
    let owner = rest
        .get(..usize::from(n))
        .ok_or_else(|| corrupt("truncated owner"))?;
    let owner = match std::str::from_utf8(owner) {
        Ok("") => None,
        Ok(s) => Some(s.parse().map_err(|_| corrupt("owner address"))?),
        Err(_) => return Err(corrupt("owner address")),
    };
    let e = store::decode_entity(seq, rest.get(usize::from(n)..).unwrap_or_default())?;
    Ok((e, owner))
}

fn encode_counters(c: Counters) -> Vec<u8> {
    let mut v = Vec::with_capacity(24);
    v.extend_from_slice(&u64::from(c.next_index).to_be_bytes());
    v.extend_from_slice(&c.next_seq.to_be_bytes());
    v.extend_from_slice(&u64::from(c.next_auto_eid).to_be_bytes());
    v
}

fn decode_counters(v: &[u8]) -> Result<Counters, StoreError> {
    let word = |i: usize| {
        v.get(i * 8..i * 8 + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
            .ok_or_else(|| StoreError::Corrupt {
                seq: 0,
                why: "counters".into(),
            })
    };
    Ok(Counters {
        next_index: u32::try_from(word(0)?).unwrap_or(1),
        next_seq: word(1)?,
        next_auto_eid: u32::try_from(word(2)?).unwrap_or(1),
    })
}

fn encode_domains(dds: &[u8], sets: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + dds.len() + sets.len());
    v.extend_from_slice(&u32::try_from(dds.len()).unwrap_or(0).to_be_bytes());
    v.extend_from_slice(dds);
    v.extend_from_slice(sets);
    v
}

fn decode_domains(v: &[u8]) -> Result<Domains, StoreError> {
    let corrupt = || StoreError::Corrupt {
        seq: 0,
        why: "discovery domains".into(),
    };
    let (len, rest) = v.split_first_chunk::<4>().ok_or_else(corrupt)?;
    let len = usize::try_from(u32::from_be_bytes(*len)).map_err(|_| corrupt())?;
    let dds = rest.get(..len).ok_or_else(corrupt)?;
    let sets = rest.get(len..).unwrap_or_default();
    store::decode_domains(dds, sets)
}

/// Which registry key an etcd key is.
enum Key {
    Entity(u64),
    Meta,
    Domains,
    Other,
}

impl EtcdStore {
    /// Connect to the cluster (`endpoints`: `http://host:port` or `host:port`).
    pub async fn connect(endpoints: &[String], prefix: &str) -> Result<EtcdStore, EtcdError> {
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(3))
            .with_keep_alive(Duration::from_secs(1), Duration::from_secs(2));
        let client = Client::connect(endpoints, Some(options)).await?;
        Ok(EtcdStore {
            client,
            prefix: prefix.to_string(),
            revs: Mutex::new(Revs::default()),
            applied: AtomicI64::new(0),
            progress: Notify::new(),
            refreshed: Mutex::new(HashMap::new()),
            leader: AtomicBool::new(false),
        })
    }

    fn entity_key(&self, seq: u64) -> String {
        format!("{}e/{seq:020}", self.prefix)
    }

    fn meta_key(&self) -> String {
        format!("{}meta", self.prefix)
    }

    fn domains_key(&self) -> String {
        format!("{}domains", self.prefix)
    }

    fn election_key(&self) -> String {
        format!("{}election/esi", self.prefix)
    }

    fn key(&self, k: &[u8]) -> Key {
        let Some(rest) = k.strip_prefix(self.prefix.as_bytes()) else {
            return Key::Other;
        };
        match rest {
            b"meta" => Key::Meta,
            b"domains" => Key::Domains,
            r => match r.strip_prefix(b"e/") {
                Some(n) => std::str::from_utf8(n)
                    .ok()
                    .and_then(|n| n.parse().ok())
                    .map_or(Key::Other, Key::Entity),
                None => Key::Other,
            },
        }
    }

    /// Whether this server holds the ESI role.
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }

    /// Load the whole registry (entities in registration order), and note
    /// the revision it was read at.
    pub async fn load(&self) -> Result<Registry, EtcdError> {
        let mut client = self.client.clone();
        let resp = client
            .get(self.prefix.as_str(), Some(GetOptions::new().with_prefix()))
            .await?;
        let at = resp.header().map_or(0, |h| h.revision());
        let mut revs = Revs::default();
        let mut entities = Vec::new();
        let mut owners = HashMap::new();
        let mut counters = Counters::default();
        let mut domains = None;
        for kv in resp.kvs() {
            match self.key(kv.key()) {
                Key::Entity(seq) => {
                    let (e, owner) = decode_value(seq, kv.value())?;
                    entities.push(e);
                    if let Some(ip) = owner {
                        owners.insert(seq, ip);
                    }
                    revs.entities.insert(seq, (kv.mod_revision(), kv.lease()));
                }
                Key::Meta => {
                    counters = decode_counters(kv.value())?;
                    revs.meta = kv.mod_revision();
                }
                Key::Domains => {
                    domains = Some(decode_domains(kv.value())?);
                    revs.domains = kv.mod_revision();
                }
                Key::Other => {}
            }
        }
        entities.sort_by_key(|e| e.seq);
        let reg = Registry::from_parts(entities, counters).with_owners(owners);
        let reg = match domains {
            Some(d) => reg.with_domains(d),
            None => reg,
        };
        *lock(&self.revs) = revs;
        self.applied.store(at, Ordering::SeqCst);
        Ok(reg)
    }

    /// Capture the write of `batch` (built from `reg`, under its lock) with
    /// the revisions it is conditional on.
    pub fn prepare(&self, reg: &Registry, batch: &Batch) -> Prepared {
        let revs = lock(&self.revs);
        let owners: HashMap<u64, &str> = batch
            .owners
            .iter()
            .map(|(s, ip)| (*s, ip.as_str()))
            .collect();
        let mut p = Prepared::default();
        for (seq, row) in &batch.rows {
            let (expect, lease) = revs.entities.get(seq).copied().unwrap_or((0, 0));
            let owner = owners.get(seq).copied();
            p.rows.push(Row {
                seq: *seq,
                value: row.as_ref().map(|r| encode_value(owner, r)),
                expect,
                lease,
                period: reg.registration_period(*seq).unwrap_or(1),
            });
        }
        if let Some(c) = batch.counters {
            p.meta = Some((encode_counters(c), revs.meta));
        }
        if let Some((dds, sets)) = &batch.domains {
            p.domains = Some((encode_domains(dds, sets), revs.domains));
        }
        p
    }

    /// Note the entities refreshed (`(seq, time)`, from
    /// [`Registry::take_refreshed`]) for the lease keeper.
    pub fn note_refreshed(&self, reg: &Registry, refreshed: Vec<(u64, u64)>) {
        if refreshed.is_empty() {
            return;
        }
        let revs = lock(&self.revs);
        let mut pending = lock(&self.refreshed);
        for (seq, _) in refreshed {
            if let (Some((_, lease)), Some(period)) =
                (revs.entities.get(&seq), reg.registration_period(seq))
                && *lease != 0
            {
                pending.insert(seq, (*lease, period));
            }
        }
    }

    /// Write `p` in one transaction. [`EtcdError::Conflict`] when another
    /// server changed a key it reads first.
    pub async fn write(&self, p: &mut Prepared) -> Result<(), EtcdError> {
        let mut client = self.client.clone();
        let mut compares = Vec::new();
        let mut ops = Vec::new();
        for row in &mut p.rows {
            let key = self.entity_key(row.seq);
            compares.push(Compare::mod_revision(
                key.as_str(),
                CompareOp::Equal,
                row.expect,
            ));
            match &row.value {
                Some(v) => {
                    if row.lease == 0 {
                        row.lease = client
                            .lease_grant(i64::from(row.period.max(2)), None)
                            .await?
                            .id();
                    }
                    ops.push(TxnOp::put(
                        key,
                        v.clone(),
                        Some(PutOptions::new().with_lease(row.lease)),
                    ));
                }
                None => ops.push(TxnOp::delete(key, None)),
            }
        }
        if let Some((v, expect)) = &p.meta {
            compares.push(Compare::mod_revision(
                self.meta_key(),
                CompareOp::Equal,
                *expect,
            ));
            ops.push(TxnOp::put(self.meta_key(), v.clone(), None));
        }
        if let Some((v, expect)) = &p.domains {
            compares.push(Compare::mod_revision(
                self.domains_key(),
                CompareOp::Equal,
                *expect,
            ));
            ops.push(TxnOp::put(self.domains_key(), v.clone(), None));
        }
        let rev = match client.txn(Txn::new().when(compares).and_then(ops)).await {
            Ok(resp) if resp.succeeded() => resp.header().map_or(0, |h| h.revision()),
            Ok(_) => return Err(EtcdError::Conflict),
            // No answer (a member died mid-request): the transaction may have been applied.
            Err(e) => match self.applied_at(p).await {
                Some(rev) => {
                    tracing::info!(rev, "etcd write answered with an error was applied: {e}");
                    rev
                }
                None => return Err(e.into()),
            },
        };
        self.written(p, rev);
        // The leases of removed entities hold no key any more: end them now
        // rather than let etcd keep them until their TTL (best effort).
        for row in p.rows.iter().filter(|r| r.value.is_none() && r.lease != 0) {
            if let Err(e) = client.lease_revoke(row.lease).await {
                tracing::debug!(lease = row.lease, "etcd lease revoke: {e}");
            }
        }
        Ok(())
    }

    /// Whether the write `p`, whose transaction got no answer, was applied: then `meta` holds
    /// its counters and every row it put holds its value, all at one revision (one
    /// transaction), and the rows it removed are gone. That revision, if so.
    async fn applied_at(&self, p: &Prepared) -> Option<i64> {
        // Reads that fail (the member the request went to is down) are tried again: giving up
        // would undo a change that other servers already see.
        for _ in 0..20 {
            match self.check_applied(p).await {
                Ok(answer) => return answer,
                Err(e) => {
                    tracing::debug!("etcd read: {e}; trying again");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        None
    }

    async fn check_applied(&self, p: &Prepared) -> Result<Option<i64>, etcd_client::Error> {
        let mut client = self.client.clone();
        let Some((meta, _)) = p.meta.as_ref() else {
            return Ok(None);
        };
        let resp = client.get(self.meta_key(), None).await?;
        let Some(kv) = resp.kvs().first() else {
            return Ok(None);
        };
        if kv.value() != meta.as_slice() {
            return Ok(None);
        }
        let rev = kv.mod_revision();
        for row in &p.rows {
            let resp = client.get(self.entity_key(row.seq), None).await?;
            let same = match (&row.value, resp.kvs().first()) {
                (Some(v), Some(kv)) => kv.value() == v.as_slice() && kv.mod_revision() == rev,
                (None, None) => true,
                _ => false,
            };
            if !same {
                return Ok(None);
            }
        }
        Ok(Some(rev))
    }

    /// Record in the revisions the copy holds that `p` was written at `rev`.
    fn written(&self, p: &Prepared, rev: i64) {
        let mut revs = lock(&self.revs);
        for row in &p.rows {
            match row.value {
                Some(_) => {
                    revs.entities.insert(row.seq, (rev, row.lease));
                }
                None => {
                    revs.entities.remove(&row.seq);
                }
            }
        }
        if p.meta.is_some() {
            revs.meta = rev;
        }
        if p.domains.is_some() {
            revs.domains = rev;
        }
    }

    /// Undo a write that failed in the local copy: the rows, counters and
    /// domains it touched go back to what the copy last read from etcd (the
    /// same revisions, read again), then wait until the watch has applied
    /// everything up to now, so the requests can be applied again.
    ///
    /// The reads are tried again for up to `UNDO_PATIENCE` (a member that
    /// just died is still chosen for a while): an undo given up would leave
    /// the copy holding changes etcd never took, and applying the requests
    /// again on it would turn their additions into updates (no SCN).
    pub async fn undo(&self, registry: &RwLock<Registry>, p: &Prepared) -> Result<(), EtcdError> {
        let until = Instant::now() + UNDO_PATIENCE;
        let mut pause = Duration::from_millis(50);
        loop {
            match self.try_undo(registry, p).await {
                Ok(()) => return Ok(()),
                Err(e @ EtcdError::Etcd(_)) if Instant::now() < until => {
                    tracing::debug!("undoing a write: {e}; trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn try_undo(&self, registry: &RwLock<Registry>, p: &Prepared) -> Result<(), EtcdError> {
        let mut client = self.client.clone();
        // The revision each touched key is held at in the copy now (the
        // watch may have moved some since the write was prepared).
        let (rows, meta, domains) = {
            let revs = lock(&self.revs);
            let rows: Vec<(u64, i64)> = p
                .rows
                .iter()
                .map(|r| (r.seq, revs.entities.get(&r.seq).map_or(0, |x| x.0)))
                .collect();
            (rows, revs.meta, revs.domains)
        };
        let get_at = |key: String, rev: i64| async move {
            let mut client = self.client.clone();
            let r = client
                .get(key, Some(GetOptions::new().with_revision(rev)))
                .await?;
            Ok::<_, EtcdError>(r.kvs().first().map(|kv| kv.value().to_vec()))
        };
        let mut stored = Vec::new();
        for (seq, rev) in rows.iter().copied() {
            let v = if rev == 0 {
                None
            } else {
                match get_at(self.entity_key(seq), rev).await? {
                    Some(v) => Some(decode_value(seq, &v)?),
                    None => None,
                }
            };
            stored.push((seq, rev, v));
        }
        let counters = match (p.meta.is_some(), meta) {
            (false, _) => None,
            (true, 0) => Some(Counters::default()),
            (true, rev) => match get_at(self.meta_key(), rev).await? {
                Some(v) => Some(decode_counters(&v)?),
                None => Some(Counters::default()),
            },
        };
        let domains_rev = domains;
        let domains = match (p.domains.is_some(), domains) {
            (false, _) => None,
            (true, 0) => Some(Domains::from_parts(Vec::new(), Vec::new())),
            (true, rev) => match get_at(self.domains_key(), rev).await? {
                Some(v) => Some(decode_domains(&v)?),
                None => Some(Domains::from_parts(Vec::new(), Vec::new())),
            },
        };
        // Now: the revision to catch up to.
        let target = client
            .get(self.meta_key(), None)
            .await?
            .header()
            .map_or(0, |h| h.revision());
        {
            let mut reg = write(registry);
            let revs = lock(&self.revs);
            let at = now();
            for (seq, rev, v) in stored {
                // The watch applied a newer state of this row while it was
                // read again (another server's write): that state stays, or
                // the copy would lose it for good (the watch does not send
                // it twice) and its subscribers its SCN.
                if revs.entities.get(&seq).map_or(0, |x| x.0) != rev {
                    continue;
                }
                // Notifications dropped: they would report undoing changes
                // no client was told about.
                let _ = reg.apply_stored(seq, v, at);
            }
            if let Some(c) = counters
                && revs.meta == meta
            {
                reg.set_counters(c);
            }
            if let Some(d) = domains
                && revs.domains == domains_rev
            {
                reg.set_domains(d);
            }
        }
        let until = Instant::now() + CATCH_UP;
        while self.applied.load(Ordering::SeqCst) < target {
            if Instant::now() > until {
                tracing::warn!(target, "etcd watch did not catch up");
                break;
            }
            self.progress.notify_one();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    /// Replace the local copy with a fresh load (after the watch lost its
    /// place: compaction).
    async fn reload(&self, shared: &Shared) -> Result<(), EtcdError> {
        let stored = self.load().await?;
        write(&shared.registry).restore(stored, now());
        Ok(())
    }

    /// Apply one watch response to the local copy; returns the SCN messages
    /// it causes, each with whether this server also sends it to portals
    /// (a lease expiry, on the ESI holder).
    fn apply_watch(
        &self,
        shared: &Shared,
        resp: &etcd_client::WatchResponse,
    ) -> Vec<(Notification, bool)> {
        let events = resp.events();
        if events.is_empty() {
            // A progress notification: everything up to its revision is here.
            if !resp.created()
                && let Some(h) = resp.header()
            {
                self.applied.fetch_max(h.revision(), Ordering::SeqCst);
            }
            return Vec::new();
        }
        // Revisions written by a server carry a `meta` put; a delete without
        // one is etcd expiring a lease.
        let server_writes: std::collections::HashSet<i64> = events
            .iter()
            .filter_map(|ev| {
                let kv = ev.kv()?;
                (ev.event_type() == EventType::Put && matches!(self.key(kv.key()), Key::Meta))
                    .then_some(kv.mod_revision())
            })
            .collect();
        let at = now();
        let mut out = Vec::new();
        let mut last = 0;
        let mut reg = write(&shared.registry);
        let mut revs = lock(&self.revs);
        for ev in events {
            let Some(kv) = ev.kv() else { continue };
            let rev = kv.mod_revision();
            last = last.max(rev);
            match (self.key(kv.key()), ev.event_type()) {
                (Key::Entity(seq), EventType::Put) => {
                    if revs.entities.get(&seq).is_some_and(|x| x.0 >= rev) {
                        continue;
                    }
                    match decode_value(seq, kv.value()) {
                        Ok(v) => {
                            revs.entities.insert(seq, (rev, kv.lease()));
                            let o = reg.apply_stored(seq, Some(v), at);
                            out.extend(o.notifications.into_iter().map(|n| (n, false)));
                        }
                        Err(e) => tracing::error!("etcd: {e}"),
                    }
                }
                (Key::Entity(seq), EventType::Delete) => {
                    revs.entities.remove(&seq);
                    let o = reg.apply_stored(seq, None, at);
                    let expiry = !o.changes.removed.is_empty() && !server_writes.contains(&rev);
                    if expiry {
                        tracing::info!(seq, "entity expired (etcd lease)");
                    }
                    // An expiry: the ESI holder tells portal subscribers too.
                    let all = expiry && self.is_leader();
                    out.extend(o.notifications.into_iter().map(|n| (n, all)));
                }
                (Key::Meta, EventType::Put) if rev > revs.meta => {
                    match decode_counters(kv.value()) {
                        Ok(c) => reg.raise_counters(c),
                        Err(e) => tracing::error!("etcd: {e}"),
                    }
                    revs.meta = rev;
                }
                (Key::Domains, EventType::Put) if rev > revs.domains => {
                    match decode_domains(kv.value()) {
                        Ok(d) => reg.set_domains(d),
                        Err(e) => tracing::error!("etcd: {e}"),
                    }
                    revs.domains = rev;
                }
                _ => {}
            }
        }
        drop(revs);
        drop(reg);
        self.applied.fetch_max(last, Ordering::SeqCst);
        out
    }
}

/// Keep the local copy current from an etcd watch, until aborted. SCNs for
/// changes made through other servers go to the subscribers connected here
/// (those with a portal SCN port were told by the server that made the
/// change), lease expiries to every subscriber from the ESI holder.
pub(crate) async fn run_watch(store: Arc<EtcdStore>, shared: Arc<Shared>) {
    loop {
        let start = store.applied.load(Ordering::SeqCst) + 1;
        let mut client = store.client.clone();
        let options = WatchOptions::new().with_prefix().with_start_revision(start);
        let (mut tx, mut rx) = match client.watch(store.prefix.as_str(), Some(options)).await {
            Ok(s) => s.split(),
            Err(e) => {
                tracing::warn!("etcd watch: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        loop {
            let msg = tokio::select! {
                m = rx.message() => m,
                () = store.progress.notified() => {
                    let _ = tx.request_progress().await;
                    continue;
                }
            };
            let resp = match msg {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!("etcd watch: {e}; watching again");
                    break;
                }
            };
            if resp.compact_revision() > 0 || resp.canceled() {
                tracing::warn!(
                    compacted = resp.compact_revision(),
                    "etcd watch cancelled: loading the registry again"
                );
                if let Err(e) = store.reload(&shared).await {
                    tracing::error!("etcd reload: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                break;
            }
            let notifications = store.apply_watch(&shared, &resp);
            if notifications.is_empty() {
                continue;
            }
            let own = notifications
                .into_iter()
                .filter(|(n, all)| {
                    *all || matches!(
                        n.destination,
                        crate::registry::ScnDestination::Connection { .. }
                    )
                })
                .map(|(n, _)| n)
                .collect();
            tokio::spawn(deliver_scns(route_scns(&shared, own)));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Keep alive the leases of entities that sent messages, at most every
/// third of their period, until aborted.
pub(crate) async fn run_lease_keeper(store: Arc<EtcdStore>) {
    let mut last: HashMap<u64, Instant> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let due: Vec<(u64, i64)> = {
            let mut pending = lock(&store.refreshed);
            let now = Instant::now();
            let due: Vec<(u64, i64)> = pending
                .iter()
                .filter(|(seq, (_, period))| {
                    last.get(seq).is_none_or(|t| {
                        now.duration_since(*t) >= Duration::from_secs(u64::from(*period / 3))
                    })
                })
                .map(|(seq, (lease, _))| (*seq, *lease))
                .collect();
            for (seq, _) in &due {
                pending.remove(seq);
            }
            due
        };
        for (seq, lease) in due {
            last.insert(seq, Instant::now());
            let mut client = store.client.clone();
            let keep = async {
                let (mut keeper, mut stream) = client.lease_keep_alive(lease).await?;
                keeper.keep_alive().await?;
                stream.message().await
            };
            match tokio::time::timeout(Duration::from_secs(3), keep).await {
                Ok(Ok(Some(r))) if r.ttl() > 0 => {}
                Ok(Ok(_)) => tracing::debug!(seq, "lease already expired"),
                Ok(Err(e)) => tracing::warn!(seq, "etcd lease keep-alive: {e}"),
                Err(_) => tracing::warn!(seq, "etcd lease keep-alive timed out"),
            }
        }
        let n = last.len();
        if n > 100_000 {
            last.clear();
        }
    }
}

/// Campaign for the ESI role, hold it while this server's election lease
/// lives, campaign again when it is lost; until aborted.
pub(crate) async fn run_election(store: Arc<EtcdStore>, name: String) {
    loop {
        store.leader.store(false, Ordering::SeqCst);
        let mut client = store.client.clone();
        let lease = match client.lease_grant(ELECTION_TTL, None).await {
            Ok(l) => l.id(),
            Err(e) => {
                tracing::warn!("etcd election lease: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let alive = Arc::new(AtomicBool::new(true));
        let keeper = tokio::spawn(keep_session(store.clone(), lease, alive.clone()));
        let campaign = async {
            let mut client = store.client.clone();
            client
                .campaign(store.election_key(), name.as_bytes(), lease)
                .await
        };
        let won = tokio::select! {
            r = campaign => r,
            () = wait_lost(&alive) => {
                keeper.abort();
                continue;
            }
        };
        match won {
            Ok(_) => {
                tracing::info!(server = %name, "won the etcd election: this server runs ESI");
                store.leader.store(true, Ordering::SeqCst);
                wait_lost(&alive).await;
                store.leader.store(false, Ordering::SeqCst);
                tracing::warn!(server = %name, "lost the ESI role (election lease gone)");
            }
            Err(e) => {
                tracing::warn!("etcd campaign: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        keeper.abort();
    }
}

async fn wait_lost(alive: &AtomicBool) {
    while alive.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Keep the election lease alive every second; mark it lost when etcd says
/// it expired or no keep-alive got through for its TTL.
async fn keep_session(store: Arc<EtcdStore>, lease: i64, alive: Arc<AtomicBool>) {
    const STEP: Duration = Duration::from_secs(2);
    let ttl = Duration::from_secs(ELECTION_TTL.unsigned_abs());
    let mut last_ok = Instant::now();
    loop {
        let mut client = store.client.clone();
        if let Ok(Ok((mut keeper, mut stream))) =
            tokio::time::timeout(STEP, client.lease_keep_alive(lease)).await
        {
            loop {
                let step = async {
                    keeper.keep_alive().await?;
                    stream.message().await
                };
                match tokio::time::timeout(STEP, step).await {
                    Ok(Ok(Some(r))) if r.ttl() > 0 => last_ok = Instant::now(),
                    Ok(Ok(Some(_))) => {
                        alive.store(false, Ordering::SeqCst);
                        return;
                    }
                    _ => break,
                }
                if last_ok.elapsed() >= ttl {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        if last_ok.elapsed() >= ttl {
            alive.store(false, Ordering::SeqCst);
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::Object;
    use isns_proto::Attribute;
    use isns_proto::tag::{self, ObjectType};

    #[test]
    fn entity_values_round_trip_with_their_owner() {
        let e = Entity::new(
            7,
            Object::new(
                ObjectType::Entity,
                3,
                vec![Attribute::string(tag::ENTITY_IDENTIFIER, "stor")],
            ),
            1234,
            vec![Object::new(
                ObjectType::IscsiNode,
                4,
                vec![Attribute::string(tag::ISCSI_NAME, "iqn.t")],
            )],
        );
        let row = store::encode_entity(&e);
        for owner in [None, Some("127.0.0.9"), Some("::1")] {
            let (back, ip) = decode_value(7, &encode_value(owner, &row)).unwrap();
            assert_eq!(back, e);
            assert_eq!(ip.map(|i| i.to_string()).as_deref(), owner);
        }
        assert!(decode_value(7, &[]).is_err());
        assert!(decode_value(7, &[9, b'1']).is_err());
        assert!(decode_value(7, &[3, b'x', b'y', b'z']).is_err());
    }

    #[test]
    fn counters_round_trip_and_short_values_are_errors() {
        let c = Counters {
            next_index: 42,
            next_seq: 1 << 40,
            next_auto_eid: 9,
        };
        assert_eq!(decode_counters(&encode_counters(c)).unwrap(), c);
        assert!(decode_counters(&[0; 23]).is_err());
        assert!(decode_domains(&[0, 0]).is_err());
    }
}
