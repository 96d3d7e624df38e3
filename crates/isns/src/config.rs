//! The iSNS server's configuration file (`portshift isns --config FILE.toml`,
//! docs/isns.md): a versioned TOML file (`version = 1`, like the target's)
//! read onto a [`ServerConfig`]. Unknown keys are refused; every problem is
//! reported with the file's line and column (the `config-file` crate's
//! [`ConfigError`], shared with the target's file). Values the file does not give
//! keep the defaults of [`ServerConfig::new`] with [`DEFAULT_LISTEN`] and
//! [`DEFAULT_DATABASE`]; command-line flags are applied on top by the caller.
//! [`describe`] writes the effective settings back as a version 1 file.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use config_file::Problems;
pub use config_file::{ConfigError, Problem};
use serde::Deserialize;
use toml::Spanned;

use crate::registry::{EsiConfig, MAX_ENTITIES};
use crate::server::ServerConfig;

/// The newest format version this binary reads.
pub const CURRENT_VERSION: i64 = 1;
/// Listen address when neither the file nor a flag gives one.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:3205";
/// Database file when neither the file nor a flag gives one.
pub const DEFAULT_DATABASE: &str = "portshift-isns.redb";
/// Smallest message size limit accepted, bytes (a message of a few attributes).
pub const MIN_MESSAGE_BYTES: usize = 1024;

/// The defaults the file starts from.
pub fn defaults() -> ServerConfig {
    let listen = DEFAULT_LISTEN
        .parse()
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 3205)));
    ServerConfig::new(listen, PathBuf::from(DEFAULT_DATABASE))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[allow(dead_code)] // read by config_file::version first
    version: i64,
    listen: Option<Spanned<Vec<Spanned<String>>>>,
    database: Option<PathBuf>,
    etcd: Option<Spanned<Vec<String>>>,
    etcd_prefix: Option<String>,
    source_name: Option<String>,
    control_nodes: Option<Vec<String>>,
    default_discovery_domain: Option<bool>,
    persist_interval_seconds: Option<Spanned<u64>>,
    expiry_check_seconds: Option<Spanned<u64>>,
    limits: Option<Limits>,
    esi: Option<Esi>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Limits {
    max_connections: Option<Spanned<usize>>,
    max_connections_per_address: Option<Spanned<usize>>,
    first_message_timeout_seconds: Option<Spanned<u64>>,
    idle_timeout_seconds: Option<Spanned<u64>>,
    max_entities: Option<Spanned<usize>>,
    max_entities_per_address: Option<Spanned<usize>>,
    max_objects_per_entity: Option<Spanned<usize>>,
    max_message_bytes: Option<Spanned<usize>>,
    default_registration_period: Option<Spanned<u32>>,
    max_registration_period: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Esi {
    enabled: Option<bool>,
    min_interval: Option<Spanned<u32>>,
    allowed_misses: Option<Spanned<u32>>,
    timeout_seconds: Option<Spanned<u64>>,
}

/// Parse `text` (the contents of `file`, named in messages; relative
/// `database` paths are taken from `file`'s directory).
pub fn parse(file: &Path, text: &str) -> Result<ServerConfig, ConfigError> {
    config_file::version(file, text, CURRENT_VERSION)?;
    let f: File = config_file::from_toml(file, text)?;
    let mut p = Problems::default();
    let mut c = defaults();
    if let Some(listen) = &f.listen {
        let mut addrs = Vec::new();
        for a in listen.get_ref() {
            match a.get_ref().parse::<SocketAddr>() {
                Ok(addr) if !addrs.contains(&addr) => addrs.push(addr),
                Ok(addr) => p.at(a.span(), format!("{addr} is listed twice")),
                Err(_) => p.at(
                    a.span(),
                    format!(
                        "{:?} is not an IP:PORT address ([IPv6]:PORT for IPv6)",
                        a.get_ref()
                    ),
                ),
            }
        }
        match addrs.split_first() {
            Some((first, rest)) => {
                c.listen = *first;
                c.extra_listen = rest.to_vec();
            }
            None if listen.get_ref().is_empty() => {
                p.at(listen.span(), "listen needs at least one address")
            }
            None => {}
        }
    }
    if let Some(db) = f.database {
        c.db = match file.parent() {
            Some(dir) if db.is_relative() && !dir.as_os_str().is_empty() => dir.join(db),
            _ => db,
        };
    }
    if let Some(e) = &f.etcd {
        if e.get_ref().iter().any(|u| u.trim().is_empty()) {
            p.at(e.span(), "etcd endpoints must not be empty");
        }
        c.etcd = e.get_ref().clone();
    }
    if let Some(prefix) = f.etcd_prefix {
        c.etcd_prefix = prefix;
    }
    if let Some(s) = f.source_name {
        c.source_name = s;
    }
    if let Some(n) = f.control_nodes {
        c.control_nodes = n;
    }
    if let Some(d) = f.default_discovery_domain {
        c.default_dd = d;
    }
    if let Some(s) = p.positive(&f.persist_interval_seconds, "persist_interval_seconds") {
        c.refresh_persist_interval = Duration::from_secs(s);
    }
    if let Some(s) = p.positive(&f.expiry_check_seconds, "expiry_check_seconds") {
        c.expiry_check = Duration::from_secs(s);
    }
    if let Some(l) = &f.limits {
        if let Some(n) = p.positive(&l.max_connections, "max_connections") {
            c.max_connections = n;
        }
        if let Some(n) = p.positive(
            &l.max_connections_per_address,
            "max_connections_per_address",
        ) {
            c.max_connections_per_address = n;
        }
        if let Some(s) = p.positive(
            &l.first_message_timeout_seconds,
            "first_message_timeout_seconds",
        ) {
            c.first_message_timeout = Duration::from_secs(s);
        }
        if let Some(s) = p.positive(&l.idle_timeout_seconds, "idle_timeout_seconds") {
            c.idle_timeout = Duration::from_secs(s);
        }
        if let Some(n) = p.positive(&l.max_entities, "max_entities") {
            if n > MAX_ENTITIES {
                if let Some(v) = &l.max_entities {
                    p.at(v.span(), format!("max_entities is at most {MAX_ENTITIES}"));
                }
            } else {
                c.max_entities = n;
            }
        }
        if let Some(n) = p.positive(&l.max_entities_per_address, "max_entities_per_address") {
            c.max_entities_per_address = n;
        }
        if let Some(n) = p.positive(&l.max_objects_per_entity, "max_objects_per_entity") {
            c.max_objects_per_entity = n;
        }
        if let Some(v) = &l.max_message_bytes {
            let n = *v.get_ref();
            if (MIN_MESSAGE_BYTES..=isns_proto::MAX_MESSAGE_LEN).contains(&n) {
                c.max_message_len = n;
            } else {
                p.at(
                    v.span(),
                    format!(
                        "max_message_bytes must be within {MIN_MESSAGE_BYTES}..={}",
                        isns_proto::MAX_MESSAGE_LEN
                    ),
                );
            }
        }
        if let Some(n) = p.positive(&l.max_registration_period, "max_registration_period") {
            c.max_registration_period = n;
        }
        if let Some(n) = p.positive(
            &l.default_registration_period,
            "default_registration_period",
        ) {
            if n > c.max_registration_period {
                if let Some(v) = &l.default_registration_period {
                    p.at(
                        v.span(),
                        format!(
                            "default_registration_period ({n}) is above max_registration_period ({})",
                            c.max_registration_period
                        ),
                    );
                }
            } else {
                c.default_registration_period = n;
            }
        }
    }
    if let Some(e) = &f.esi {
        let mut esi = EsiConfig::default();
        if let Some(on) = e.enabled {
            esi.enabled = on;
        }
        if let Some(n) = p.positive(&e.min_interval, "min_interval") {
            esi.min_interval = n;
        }
        if let Some(n) = p.positive(&e.allowed_misses, "allowed_misses") {
            esi.allowed_misses = n;
        }
        if let Some(s) = p.positive(&e.timeout_seconds, "timeout_seconds") {
            c.esi_timeout = Duration::from_secs(s);
        }
        c.esi = esi;
    }
    p.finish(c, file, text)
}

/// Read and parse `path`.
pub fn load(path: &Path) -> Result<ServerConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::file(path, format!("cannot read: {e}")))?;
    parse(path, &text)
}

/// The settings of `c` as a version 1 configuration file.
pub fn describe(c: &ServerConfig) -> String {
    let mut s = String::new();
    let list = |v: &mut dyn Iterator<Item = String>| {
        v.map(|x| format!("{x:?}")).collect::<Vec<_>>().join(", ")
    };
    let listen = list(
        &mut std::iter::once(c.listen)
            .chain(c.extra_listen.iter().copied())
            .map(|a| a.to_string()),
    );
    let _ = writeln!(s, "version = {CURRENT_VERSION}");
    let _ = writeln!(s, "listen = [{listen}]");
    let _ = writeln!(s, "database = {:?}", c.db.display().to_string());
    if !c.etcd.is_empty() {
        let _ = writeln!(s, "etcd = [{}]", list(&mut c.etcd.iter().cloned()));
        let _ = writeln!(s, "etcd_prefix = {:?}", c.etcd_prefix);
    }
    let _ = writeln!(s, "source_name = {:?}", c.source_name);
    let _ = writeln!(
        s,
        "control_nodes = [{}]",
        list(&mut c.control_nodes.iter().cloned())
    );
    let _ = writeln!(s, "default_discovery_domain = {}", c.default_dd);
    let _ = writeln!(
        s,
        "persist_interval_seconds = {}",
        c.refresh_persist_interval.as_secs()
    );
    let _ = writeln!(s, "expiry_check_seconds = {}", c.expiry_check.as_secs());
    let _ = writeln!(s, "\n[limits]");
    let _ = writeln!(s, "max_connections = {}", c.max_connections);
    let _ = writeln!(
        s,
        "max_connections_per_address = {}",
        c.max_connections_per_address
    );
    let _ = writeln!(
        s,
        "first_message_timeout_seconds = {}",
        c.first_message_timeout.as_secs()
    );
    let _ = writeln!(s, "idle_timeout_seconds = {}", c.idle_timeout.as_secs());
    let _ = writeln!(s, "max_entities = {}", c.max_entities);
    let _ = writeln!(
        s,
        "max_entities_per_address = {}",
        c.max_entities_per_address
    );
    let _ = writeln!(s, "max_objects_per_entity = {}", c.max_objects_per_entity);
    let _ = writeln!(s, "max_message_bytes = {}", c.max_message_len);
    let _ = writeln!(
        s,
        "default_registration_period = {}",
        c.default_registration_period
    );
    let _ = writeln!(s, "max_registration_period = {}", c.max_registration_period);
    let _ = writeln!(s, "\n[esi]");
    let _ = writeln!(s, "enabled = {}", c.esi.enabled);
    let _ = writeln!(s, "min_interval = {}", c.esi.min_interval);
    let _ = writeln!(s, "allowed_misses = {}", c.esi.allowed_misses);
    let _ = writeln!(s, "timeout_seconds = {}", c.esi_timeout.as_secs());
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<ServerConfig, ConfigError> {
        parse(Path::new("/etc/portshift/isns.toml"), text)
    }

    #[test]
    fn a_full_file_sets_every_setting() {
        let c = p(r#"
version = 1
listen = ["127.0.0.1:3205", "[::1]:3206"]
database = "isns.redb"
source_name = "iqn.2024-01.example:isns"
control_nodes = ["iqn.2024-01.example:admin"]
default_discovery_domain = false
persist_interval_seconds = 7
expiry_check_seconds = 3

[limits]
max_connections = 100
max_connections_per_address = 10
first_message_timeout_seconds = 4
idle_timeout_seconds = 60
max_entities = 1000
max_entities_per_address = 8
max_objects_per_entity = 64
max_message_bytes = 65536
default_registration_period = 600
max_registration_period = 7200

[esi]
enabled = true
min_interval = 20
allowed_misses = 4
timeout_seconds = 2
"#)
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:3205".parse().unwrap());
        assert_eq!(c.extra_listen, ["[::1]:3206".parse().unwrap()]);
        assert_eq!(c.db, PathBuf::from("/etc/portshift/isns.redb"));
        assert_eq!(c.source_name, "iqn.2024-01.example:isns");
        assert_eq!(c.control_nodes, ["iqn.2024-01.example:admin"]);
        assert!(!c.default_dd);
        assert_eq!(c.refresh_persist_interval, Duration::from_secs(7));
        assert_eq!(c.expiry_check, Duration::from_secs(3));
        assert_eq!(
            (c.max_connections, c.max_connections_per_address),
            (100, 10)
        );
        assert_eq!(c.first_message_timeout, Duration::from_secs(4));
        assert_eq!(c.idle_timeout, Duration::from_secs(60));
        assert_eq!(
            (
                c.max_entities,
                c.max_entities_per_address,
                c.max_objects_per_entity,
                c.max_message_len
            ),
            (1000, 8, 64, 65536)
        );
        assert_eq!(
            (c.default_registration_period, c.max_registration_period),
            (600, 7200)
        );
        assert_eq!(
            c.esi,
            EsiConfig {
                enabled: true,
                min_interval: 20,
                allowed_misses: 4
            }
        );
        assert_eq!(c.esi_timeout, Duration::from_secs(2));
        // The description reads back as the same settings.
        let again = p(&describe(&c)).unwrap();
        assert_eq!(describe(&again), describe(&c));
    }

    #[test]
    fn etcd_endpoints_and_prefix() {
        let c = p("version = 1\netcd = [\"http://127.0.0.1:2379\", \"http://127.0.0.2:2379\"]\netcd_prefix = \"/x/\"\n").unwrap();
        assert_eq!(c.etcd, ["http://127.0.0.1:2379", "http://127.0.0.2:2379"]);
        assert_eq!(c.etcd_prefix, "/x/");
        assert!(
            describe(&c).contains("etcd = [\"http://127.0.0.1:2379\", \"http://127.0.0.2:2379\"]")
        );
        assert!(p("version = 1\netcd = [\" \"]\n").is_err());
        let d = p("version = 1\n").unwrap();
        assert!(d.etcd.is_empty(), "redb by default");
        assert!(!describe(&d).contains("etcd"));
    }

    #[test]
    fn a_minimal_file_keeps_the_defaults() {
        let c = p("version = 1\n").unwrap();
        assert_eq!(describe(&c), describe(&defaults()));
        assert!(c.default_dd);
        assert_eq!(c.listen, DEFAULT_LISTEN.parse().unwrap());
    }

    #[test]
    fn problems_are_reported_with_their_line() {
        let e = p("version = 1\nlisten = [\"nowhere\"]\n[limits]\nmax_objects_per_entity = 0\nmax_message_bytes = 10\n")
            .unwrap_err();
        assert_eq!(e.problems.len(), 3, "{e}");
        assert!(
            e.problems[0]
                .to_string()
                .starts_with("2:11: \"nowhere\" is not an IP:PORT"),
            "{e}"
        );
        assert!(
            e.problems[1]
                .to_string()
                .starts_with("4:26: max_objects_per_entity must be at least 1"),
            "{e}"
        );
        assert!(
            e.problems[2]
                .to_string()
                .starts_with("5:21: max_message_bytes must be within"),
            "{e}"
        );
        assert!(e.to_string().starts_with("/etc/portshift/isns.toml:2:11: "));
    }

    #[test]
    fn unknown_keys_and_versions_are_refused() {
        let e = p("version = 1\n[esi]\nmin_intervall = 5\n").unwrap_err();
        assert!(
            e.problems[0]
                .to_string()
                .starts_with("3:1: unknown field `min_intervall`"),
            "{e}"
        );
        let e = p("version = 2\n").unwrap_err();
        assert!(
            e.problems[0].message.contains("format version 2 is newer"),
            "{e}"
        );
        let e = p("listen = []\n").unwrap_err();
        assert!(e.problems[0].message.contains("no format version"), "{e}");
        let e = p("version = 1\nlisten = []\n").unwrap_err();
        assert!(
            e.problems[0].message.contains("at least one address"),
            "{e}"
        );
        let e = p("version = 1\n[limits]\ndefault_registration_period = 90000\n").unwrap_err();
        assert!(
            e.problems[0]
                .message
                .contains("above max_registration_period"),
            "{e}"
        );
        let e = p("version = 1\nlisten = [\"127.0.0.1:1\", \"127.0.0.1:1\"]\n").unwrap_err();
        assert!(e.problems[0].message.contains("listed twice"), "{e}");
    }
}
