//! Crash-safe persistence of the [`Registry`] in a redb database.
//!
//! One row per Network Entity keyed by its registration sequence number, so
//! iterating the table gives registration order; counters live in a meta
//! table. A [`Batch`] holds the rows that one or more requests changed (the
//! server's group commit merges every request queued while the previous
//! commit ran) and [`Store::write`] writes it in one durable redb
//! transaction; the server answers those requests only after it. The last
//! refresh time of each entity (§6.2.6) is kept in its own table, written
//! lazily (coalesced, every persistence interval) with a batch; loading
//! takes the later of it and the row's timestamp, so a restart loses at most
//! one interval of refreshes, which only delays expiry.
//! Rows are encoded with the iSNS TLV codec itself: a list of records
//! `kind (u8), index (u32), length (u32), TLV attributes`. A third table keeps
//! the client address each entity was registered from, so the per-address
//! entity limit holds across a restart.

use std::path::Path;

use isns_proto::Attribute;
use isns_proto::attr::{decode_attrs, encode_attrs};
use isns_proto::tag::{self, ObjectType};
use redb::{Database, ReadableTable, TableDefinition};

use crate::object::Object;
use crate::registry::dd::{self, Dd, Dds, Domains, Member};
use crate::registry::{Changes, Counters, Entity, Registry};

const ENTITIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entities");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Entity seq → the client IP address that registered it (text form).
const OWNERS: TableDefinition<u64, &str> = TableDefinition::new("owners");
/// Entity seq → last refresh (§6.2.6), seconds since the Unix epoch.
const REFRESHED: TableDefinition<u64, u64> = TableDefinition::new("refreshed");

/// The rows one durable transaction writes: entities changed by one or more
/// requests (in their state when the batch was built), their owners, the
/// counters and refresh times.
#[derive(Debug, Default)]
pub struct Batch {
    /// Entity rows by seq: `None` removes the row.
    pub(crate) rows: std::collections::BTreeMap<u64, Option<Vec<u8>>>,
    pub(crate) owners: Vec<(u64, String)>,
    pub(crate) counters: Option<Counters>,
    refreshed: Vec<(u64, u64)>,
    /// The discovery domains and sets rows (`dds`, `sets`), when they changed.
    pub(crate) domains: Option<(Vec<u8>, Vec<u8>)>,
}

impl Batch {
    /// The rows of `changes` (merged over any number of requests) as `reg`
    /// holds them now, with its counters.
    pub fn from_changes(reg: &Registry, changes: &Changes) -> Batch {
        let mut b = Batch::default();
        for seq in &changes.removed {
            b.rows.insert(*seq, None);
        }
        for seq in changes.upserted.difference(&changes.removed) {
            match reg.entity(*seq) {
                Some(e) => {
                    b.rows.insert(*seq, Some(encode_entity(e)));
                    if let Some(ip) = reg.owner(*seq) {
                        b.owners.push((*seq, ip.to_string()));
                    }
                }
                None => {
                    b.rows.insert(*seq, None);
                }
            }
        }
        if !changes.is_empty() {
            b.counters = Some(reg.counters());
        }
        if changes.domains {
            let d = reg.domains();
            b.domains = Some((encode_dds(d), encode_sets(d)));
        }
        b
    }

    /// Also store these last refresh times (`(seq, time)`, from
    /// [`Registry::take_refreshed`]).
    pub fn add_refreshed(&mut self, refreshed: Vec<(u64, u64)>) {
        self.refreshed.extend(refreshed);
    }

    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
            && self.counters.is_none()
            && self.refreshed.is_empty()
            && self.domains.is_none()
    }

    /// Entity rows written or removed.
    pub fn entities(&self) -> usize {
        self.rows.len()
    }
}
/// Discovery domains ("dds") and sets ("sets"), each one TLV list (`dd`).
const DOMAINS: TableDefinition<&str, &[u8]> = TableDefinition::new("domains");

/// Persistence errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(String),
    #[error("corrupt entity row {seq}: {why}")]
    Corrupt { seq: u64, why: String },
}

macro_rules! db_err {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { StoreError::Db(e.to_string()) }
        }
    )*};
}
db_err!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// The registry database.
pub struct Store {
    db: Database,
    /// Unit tests only: holds each write until the test lets it through or fails it.
    #[cfg(test)]
    pub(crate) gate: std::sync::Mutex<Option<WriteGate>>,
}

/// A test's hold on [`Store::write`]: each write that has something to store says it arrived
/// on `arrived`, then waits for `decide` (true: write, false: fail).
#[cfg(test)]
pub(crate) struct WriteGate {
    pub(crate) arrived: tokio::sync::mpsc::UnboundedSender<()>,
    pub(crate) decide: std::sync::mpsc::Receiver<bool>,
}

impl Store {
    /// Open (or create) the database file.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let db = Database::create(path)?;
        let txn = db.begin_write()?;
        txn.open_table(ENTITIES)?;
        txn.open_table(META)?;
        txn.open_table(OWNERS)?;
        txn.open_table(REFRESHED)?;
        txn.open_table(DOMAINS)?;
        txn.commit()?;
        Ok(Store {
            db,
            #[cfg(test)]
            gate: std::sync::Mutex::default(),
        })
    }

    /// Load the registry: entities in registration order, counters.
    pub fn load(&self) -> Result<Registry, StoreError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        let get = |k: &str, default: u64| -> Result<u64, StoreError> {
            Ok(meta.get(k)?.map(|v| v.value()).unwrap_or(default))
        };
        let counters = Counters {
            next_index: u32::try_from(get("next_index", 1)?).unwrap_or(1),
            next_seq: get("next_seq", 1)?,
            next_auto_eid: u32::try_from(get("next_auto_eid", 1)?).unwrap_or(1),
        };
        let refreshed = txn.open_table(REFRESHED)?;
        let table = txn.open_table(ENTITIES)?;
        let mut entities = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            let e = decode_entity(k.value(), v.value())?;
            if let Some(t) = refreshed.get(k.value())? {
                e.refresh(t.value());
            }
            entities.push(e);
        }
        let mut owners = std::collections::HashMap::new();
        for row in txn.open_table(OWNERS)?.iter()? {
            let (k, v) = row?;
            let seq = k.value();
            let ip = v.value().parse().map_err(|_| StoreError::Corrupt {
                seq,
                why: format!("owner address {:?}", v.value()),
            })?;
            owners.insert(seq, ip);
        }
        let reg = Registry::from_parts(entities, counters).with_owners(owners);
        Ok(match load_domains(&txn)? {
            Some(domains) => reg.with_domains(domains),
            None => reg,
        })
    }

    /// Durably write the entities named in `changes` and the counters.
    pub fn commit(&self, reg: &Registry, changes: &Changes) -> Result<(), StoreError> {
        self.write(&Batch::from_changes(reg, changes))
    }

    /// Durably write `batch` in one transaction.
    pub fn write(&self, batch: &Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        #[cfg(test)]
        if let Some(gate) = self.gate.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            let _ = gate.arrived.send(());
            if !gate.decide.recv().unwrap_or(true) {
                return Err(StoreError::Db("write failed by the test".into()));
            }
        }
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(ENTITIES)?;
            let mut owners = txn.open_table(OWNERS)?;
            let mut refreshed = txn.open_table(REFRESHED)?;
            for (seq, row) in &batch.rows {
                match row {
                    Some(bytes) => {
                        table.insert(*seq, bytes.as_slice())?;
                    }
                    None => {
                        table.remove(*seq)?;
                        owners.remove(*seq)?;
                        refreshed.remove(*seq)?;
                    }
                }
            }
            for (seq, ip) in &batch.owners {
                owners.insert(*seq, ip.as_str())?;
            }
            for (seq, at) in &batch.refreshed {
                if !matches!(batch.rows.get(seq), Some(None)) {
                    refreshed.insert(*seq, *at)?;
                }
            }
            if let Some(counters) = batch.counters {
                let mut meta = txn.open_table(META)?;
                meta.insert("next_index", u64::from(counters.next_index))?;
                meta.insert("next_seq", counters.next_seq)?;
                meta.insert("next_auto_eid", u64::from(counters.next_auto_eid))?;
            }
        }
        if let Some((dds, sets)) = &batch.domains {
            let mut table = txn.open_table(DOMAINS)?;
            table.insert("dds", dds.as_slice())?;
            table.insert("sets", sets.as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }
}

/// The stored discovery domains and sets; `None` when the database has none.
fn load_domains(txn: &redb::ReadTransaction) -> Result<Option<Domains>, StoreError> {
    let table = txn.open_table(DOMAINS)?;
    let Some(dds) = table.get("dds")? else {
        return Ok(None);
    };
    let sets = table.get("sets")?;
    decode_domains(dds.value(), sets.as_ref().map_or(&[][..], |v| v.value())).map(Some)
}

/// Discovery domains and sets from their two stored TLV lists (`sets` may
/// be empty: no sets).
pub(crate) fn decode_domains(dds: &[u8], sets: &[u8]) -> Result<Domains, StoreError> {
    let dds = decode_dds(dds)?;
    let sets = if sets.is_empty() {
        (1, Vec::new())
    } else {
        decode_sets(sets)?
    };
    let mut d = Domains::from_parts(dds.1, sets.1);
    d.raise_next_ids(dds.0, sets.0);
    Ok(d)
}

fn corrupt(why: &str) -> StoreError {
    StoreError::Corrupt {
        seq: 0,
        why: format!("discovery domains: {why}"),
    }
}

/// DDs as one TLV list: DD_Next_ID, then per DD its ID, name, features and
/// members (iSCSI name + index handed out, or portal address + port).
fn encode_dds(d: &Domains) -> Vec<u8> {
    let mut attrs = vec![Attribute::u32(dd::DD_NEXT_ID, d.next_ids().0)];
    for x in d.dds() {
        attrs.push(Attribute::u32(dd::DD_ID, x.id));
        if let Some(n) = &x.name {
            attrs.push(Attribute::string(dd::DD_SYMBOLIC_NAME, n));
        }
        if let Some(f) = x.features {
            attrs.push(Attribute::u32(dd::DD_FEATURES, f));
        }
        for m in &x.members {
            match m {
                Member::Node { name, index } => {
                    attrs.push(Attribute::string(dd::DD_MEMBER_ISCSI_NAME, name));
                    attrs.push(Attribute::u32(dd::DD_MEMBER_ISCSI_INDEX, *index));
                }
                Member::Portal { ip, port } => {
                    attrs.push(Attribute {
                        tag: dd::DD_MEMBER_PORTAL_IP_ADDR,
                        value: ip.clone(),
                    });
                    attrs.push(Attribute::u32(dd::DD_MEMBER_PORTAL_PORT, *port));
                }
            }
        }
    }
    let mut out = Vec::new();
    encode_attrs(&attrs, &mut out);
    out
}

fn decode_dds(buf: &[u8]) -> Result<(u32, Vec<Dd>), StoreError> {
    let attrs = decode_attrs(buf).map_err(|e| corrupt(&e.to_string()))?;
    let mut next = 1;
    let mut out: Vec<Dd> = Vec::new();
    let mut it = attrs.iter().peekable();
    while let Some(a) = it.next() {
        let u = || a.as_u32().ok_or_else(|| corrupt("bad number"));
        if a.tag == dd::DD_NEXT_ID {
            next = u()?;
            continue;
        }
        if a.tag == dd::DD_ID {
            out.push(Dd {
                id: u()?,
                name: None,
                features: None,
                members: Vec::new(),
            });
            continue;
        }
        let cur = out
            .last_mut()
            .ok_or_else(|| corrupt("attribute before DD_ID"))?;
        match a.tag {
            dd::DD_SYMBOLIC_NAME => cur.name = a.as_str().map(str::to_string),
            dd::DD_FEATURES => cur.features = Some(u()?),
            dd::DD_MEMBER_ISCSI_NAME => {
                let index = match it.next_if(|b| b.tag == dd::DD_MEMBER_ISCSI_INDEX) {
                    Some(b) => b.as_u32().ok_or_else(|| corrupt("bad index"))?,
                    None => 0,
                };
                cur.members.push(Member::Node {
                    name: a.as_str().ok_or_else(|| corrupt("bad name"))?.to_string(),
                    index,
                });
            }
            dd::DD_MEMBER_PORTAL_IP_ADDR => {
                let port = it
                    .next_if(|b| b.tag == dd::DD_MEMBER_PORTAL_PORT)
                    .and_then(Attribute::as_u32)
                    .ok_or_else(|| corrupt("portal member without port"))?;
                cur.members.push(Member::Portal {
                    ip: a.value.clone(),
                    port,
                });
            }
            t => return Err(corrupt(&format!("tag {t}"))),
        }
    }
    Ok((next, out))
}

/// DDSs as one TLV list: DDS_Next_ID, then per set its ID, name, status
/// and member DD IDs.
fn encode_sets(d: &Domains) -> Vec<u8> {
    let mut attrs = vec![Attribute::u32(dd::DDS_NEXT_ID, d.next_ids().1)];
    for s in d.sets() {
        attrs.extend(s.attributes());
    }
    let mut out = Vec::new();
    encode_attrs(&attrs, &mut out);
    out
}

fn decode_sets(buf: &[u8]) -> Result<(u32, Vec<Dds>), StoreError> {
    let attrs = decode_attrs(buf).map_err(|e| corrupt(&e.to_string()))?;
    let mut next = 1;
    let mut out: Vec<Dds> = Vec::new();
    for a in &attrs {
        let u = a.as_u32().ok_or_else(|| corrupt("bad number"));
        match a.tag {
            dd::DDS_NEXT_ID => next = u?,
            dd::DDS_ID => out.push(Dds {
                id: u?,
                name: None,
                status: 0,
                dds: Vec::new(),
            }),
            t => {
                let cur = out
                    .last_mut()
                    .ok_or_else(|| corrupt("attribute before DDS_ID"))?;
                match t {
                    dd::DDS_SYMBOLIC_NAME => cur.name = a.as_str().map(str::to_string),
                    dd::DDS_STATUS => cur.status = u?,
                    dd::DD_ID => cur.dds.push(u?),
                    t => return Err(corrupt(&format!("tag {t}"))),
                }
            }
        }
    }
    Ok((next, out))
}

fn kind_code(k: ObjectType) -> u8 {
    match k {
        ObjectType::Entity => 1,
        ObjectType::Portal => 2,
        ObjectType::IscsiNode => 3,
        ObjectType::PortalGroup => 4,
    }
}

fn encode_object(o: &Object, extra: Option<Attribute>, out: &mut Vec<u8>) {
    let mut tlv = Vec::new();
    encode_attrs(o.attrs.iter().chain(extra.as_ref()), &mut tlv);
    out.push(kind_code(o.kind));
    out.extend_from_slice(&o.index.to_be_bytes());
    out.extend_from_slice(&u32::try_from(tlv.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(&tlv);
}

/// Encode one entity row (its timestamp: the last registration or refresh).
pub fn encode_entity(e: &Entity) -> Vec<u8> {
    let mut out = Vec::new();
    encode_object(
        &e.object,
        Some(Attribute::u64(tag::TIMESTAMP, e.last_seen())),
        &mut out,
    );
    for c in &e.children {
        encode_object(c, None, &mut out);
    }
    out
}

/// Decode one entity row.
pub fn decode_entity(seq: u64, mut buf: &[u8]) -> Result<Entity, StoreError> {
    let corrupt = |why: &str| StoreError::Corrupt {
        seq,
        why: why.to_string(),
    };
    let mut objects = Vec::new();
    while !buf.is_empty() {
        let (head, rest) = buf
            .split_first_chunk::<9>()
            .ok_or_else(|| corrupt("truncated record"))?;
        let kind = match head[0] {
            1 => ObjectType::Entity,
            2 => ObjectType::Portal,
            3 => ObjectType::IscsiNode,
            4 => ObjectType::PortalGroup,
            _ => return Err(corrupt("unknown object kind")),
        };
        let index = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
        let len = usize::try_from(u32::from_be_bytes([head[5], head[6], head[7], head[8]]))
            .unwrap_or(usize::MAX);
        let tlv = rest
            .get(..len)
            .ok_or_else(|| corrupt("truncated attributes"))?;
        let attrs = decode_attrs(tlv).map_err(|e| corrupt(&e.to_string()))?;
        objects.push(Object::new(kind, index, attrs));
        buf = rest.get(len..).unwrap_or_default();
    }
    let mut it = objects.into_iter();
    let mut object = it
        .next()
        .filter(|o| o.kind == ObjectType::Entity)
        .ok_or_else(|| corrupt("no entity record"))?;
    let timestamp = object
        .get(tag::TIMESTAMP)
        .and_then(Attribute::as_u64)
        .unwrap_or(0);
    object.unset(tag::TIMESTAMP);
    Ok(Entity::new(seq, object, timestamp, it.collect()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use isns_proto::{FunctionId, Message};

    #[test]
    fn commit_and_reload_keeps_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reg.redb");
        let mut reg = Registry::new();
        {
            let store = Store::open(&path).unwrap();
            for (eid, name, addr) in [
                ("b", "iqn.b", "127.0.0.2"),
                ("a", "iqn.a", "127.0.0.1"),
                ("c", "iqn.c", "127.0.0.3"),
            ] {
                let m = Message::request(
                    FunctionId::DEV_ATTR_REG,
                    1,
                    Attribute::string(tag::ISCSI_NAME, name),
                    vec![Attribute::string(tag::ENTITY_IDENTIFIER, eid)],
                    vec![
                        Attribute::ip(tag::PORTAL_IP_ADDRESS, addr.parse().unwrap()),
                        Attribute::tcp_port(tag::PORTAL_PORT, 3260),
                        Attribute::string(tag::ISCSI_NAME, name),
                    ],
                );
                let out = reg.handle(&m, 42);
                let status = out.response.and_then(|r| r.status);
                assert_eq!(status, Some(isns_proto::Status::SUCCESS));
                store.commit(&reg, &out.changes).unwrap();
            }
            let m = Message::request(
                FunctionId::DEV_DEREG,
                2,
                Attribute::string(tag::ISCSI_NAME, "iqn.a"),
                vec![],
                vec![Attribute::string(tag::ENTITY_IDENTIFIER, "a")],
            );
            let out = reg.handle(&m, 43);
            store.commit(&reg, &out.changes).unwrap();
        }
        let loaded = Store::open(&path).unwrap().load().unwrap();
        assert_eq!(loaded, reg);
        let ids: Vec<_> = loaded.entities().map(Entity::id).collect();
        assert_eq!(ids, ["b", "c"]);
    }

    #[test]
    fn per_address_quota_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reg.redb");
        let flooder: std::net::IpAddr = "127.0.0.10".parse().unwrap();
        let reg_named = |reg: &mut Registry, name: &str| {
            let m = Message::request(
                FunctionId::DEV_ATTR_REG,
                1,
                Attribute::string(tag::ISCSI_NAME, name),
                vec![],
                vec![Attribute::string(tag::ISCSI_NAME, name)],
            );
            let out = reg.handle_from(&m, 42, Some(flooder));
            (out.response.and_then(|r| r.status), out.changes)
        };
        let limit = crate::registry::Limits::default().max_entities_per_address;
        {
            let store = Store::open(&path).unwrap();
            let mut reg = Registry::new();
            for i in 0..limit {
                let (status, changes) = reg_named(&mut reg, &format!("iqn.flood-{i}"));
                assert_eq!(status, Some(isns_proto::Status::SUCCESS));
                store.commit(&reg, &changes).unwrap();
            }
            assert_eq!(reg.entities_of(flooder), limit);
        }
        let mut loaded = Store::open(&path).unwrap().load().unwrap();
        assert_eq!(loaded.entities_of(flooder), limit, "the quota is reloaded");
        let (status, _) = reg_named(&mut loaded, "iqn.flood-after-restart");
        assert_eq!(status, Some(isns_proto::Status::INVALID_REGISTRATION));
    }

    fn register(reg: &mut Registry, name: &str, now: u64) -> Changes {
        let m = Message::request(
            FunctionId::DEV_ATTR_REG,
            1,
            Attribute::string(tag::ISCSI_NAME, name),
            vec![],
            vec![
                Attribute::u32(tag::REGISTRATION_PERIOD, 5),
                Attribute::string(tag::ISCSI_NAME, name),
            ],
        );
        let out = reg.handle(&m, now);
        assert_eq!(
            out.response.and_then(|r| r.status),
            Some(isns_proto::Status::SUCCESS)
        );
        out.changes
    }

    #[test]
    fn restore_after_a_failed_commit_returns_to_the_stored_state() {
        // What the server does when a batch's commit fails: reload and restore.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("reg.redb")).unwrap();
        let mut reg = Registry::new();
        reg.set_control_nodes(["iqn.ctl".to_string()]);
        let ch = register(&mut reg, "iqn.kept", 100);
        store.commit(&reg, &ch).unwrap();
        let stored = reg.clone();
        register(&mut reg, "iqn.uncommitted", 101);
        assert_ne!(reg, stored);
        reg.restore(store.load().unwrap(), 42);
        assert_eq!(reg, stored);
        // The indexes follow: the uncommitted name is free again, settings stay.
        register(&mut reg, "iqn.uncommitted", 102);
        let m = Message::request(
            FunctionId::DEV_DEREG,
            2,
            Attribute::string(tag::ISCSI_NAME, "iqn.ctl"),
            vec![],
            vec![Attribute::string(tag::ISCSI_NAME, "iqn.kept")],
        );
        let out = reg.handle(&m, 103);
        assert_eq!(
            out.changes.removed.len(),
            1,
            "iqn.ctl is still a Control Node"
        );
    }

    #[test]
    fn refresh_times_are_stored_lazily_and_honoured_on_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reg.redb");
        {
            let store = Store::open(&path).unwrap();
            let mut reg = Registry::new();
            let mut ch = register(&mut reg, "iqn.a", 100);
            ch.upserted
                .extend(register(&mut reg, "iqn.b", 100).upserted);
            store.commit(&reg, &ch).unwrap();
            // iqn.a queries at 104: a refresh in memory only ...
            let q = Message::request(
                FunctionId::DEV_ATTR_QRY,
                3,
                Attribute::string(tag::ISCSI_NAME, "iqn.a"),
                vec![Attribute::string(tag::ISCSI_NAME, "iqn.a")],
                vec![],
            );
            assert!(reg.handle_read(&q, 104).is_some());
            assert!(reg.handle_read(&q, 104).is_some());
            // ... taken once, coalesced, by the periodic flush.
            let refreshed = reg.take_refreshed();
            assert_eq!(refreshed, [(1, 104)]);
            assert!(reg.take_refreshed().is_empty());
            let mut batch = Batch::default();
            batch.add_refreshed(refreshed);
            store.write(&batch).unwrap();
        }
        // Loading grants no fresh period: b (last seen 100, period 5) is
        // gone after 105, a (refreshed at 104) after 109.
        let mut reg = Store::open(&path).unwrap().load().unwrap();
        let seen: Vec<u64> = reg.entities().map(Entity::last_seen).collect();
        assert_eq!(seen, [104, 100]);
        assert_eq!(reg.expire(106).changes.removed.len(), 1);
        let left: Vec<_> = reg.entities().map(|e| e.seq).collect();
        assert_eq!(left, [1]);
        assert!(reg.expire(109).changes.is_empty());
        assert_eq!(reg.expire(110).changes.removed.len(), 1);
    }

    #[test]
    fn corrupt_rows_are_errors() {
        assert!(decode_entity(1, &[9, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(decode_entity(1, &[1, 0, 0, 0, 0, 0, 0, 0, 8]).is_err());
        assert!(decode_entity(1, &[]).is_err());
    }
}
