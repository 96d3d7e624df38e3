//! Format version 1 of the configuration file, and its mapping onto [`TargetConfig`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigFile, Problems, parse_size};
use crate::link::{PortalConfig, parse_rate};
use crate::portal::PortalLimits;
use crate::{Credentials, LunConfig, NULL_PREFIX, TargetAccess, TargetConfig};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct File {
    #[allow(dead_code)]
    version: i64,
    isns: Option<Spanned<Servers>>,
    admin: Option<Spanned<String>>,
    admin_token_file: Option<Spanned<String>>,
    #[serde(default)]
    portal: Vec<Portal>,
    limits: Option<Limits>,
    balancing: Option<Balancing>,
    discovery: Option<Discovery>,
    #[serde(default)]
    target: Vec<Target>,
}

/// The `isns` key: one server `"HOST:PORT"` or a list of them, tried in order.
#[derive(Deserialize)]
#[serde(untagged)]
enum Servers {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Portal {
    address: Spanned<String>,
    speed: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Limits {
    max_connections: Option<Spanned<usize>>,
    max_connections_per_address: Option<Spanned<usize>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Balancing {
    #[serde(default)]
    rules: Vec<Spanned<String>>,
    cooldown_seconds: Option<u64>,
    #[serde(default)]
    pin: Vec<String>,
    smoothing_ms: Option<Spanned<u64>>,
    max_moves: Option<usize>,
    #[serde(default)]
    move_reservation_holders: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Discovery {
    chap: Option<Spanned<Chap>>,
    mutual_chap: Option<Spanned<Chap>>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct Chap {
    user: String,
    secret: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Allow {
    /// `"any"`.
    Word(String),
    /// Initiator names.
    List(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Target {
    iqn: Spanned<String>,
    allow: Option<Spanned<Allow>>,
    chap: Option<Spanned<Chap>>,
    mutual_chap: Option<Spanned<Chap>>,
    #[serde(default)]
    lun: Vec<Spanned<Lun>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Lun {
    number: Option<Spanned<u16>>,
    path: Option<PathBuf>,
    #[serde(default)]
    null: bool,
    size: Option<Spanned<Size>>,
    serial: Option<Spanned<String>>,
    physical_block_size: Option<Spanned<u32>>,
    #[serde(default)]
    write_through: bool,
}

/// A size as a number of bytes or a string with a suffix (`"64M"`).
#[derive(Deserialize)]
#[serde(untagged)]
enum Size {
    Bytes(u64),
    Text(String),
}

/// Checks one pair of credentials (`what` names it in messages).
fn credentials(c: &Spanned<Chap>, what: &str, problems: &mut Problems) -> Credentials {
    let v = c.get_ref();
    let creds = Credentials {
        user: v.user.clone(),
        secret: v.secret.clone(),
    };
    // The rules every CHAP credential follows (name and secret lengths).
    if let Err(e) = creds.validate() {
        problems.at(c.span(), format!("{what}: {e}"));
    }
    creds
}

/// One-way and mutual credentials of a target or of discovery, with the checks that need
/// both: mutual CHAP needs one-way CHAP, and the two secrets must differ (reflection).
fn chap_pair(
    chap: &Option<Spanned<Chap>>,
    mutual: &Option<Spanned<Chap>>,
    what: &str,
    problems: &mut Problems,
) -> (Option<Credentials>, Option<Credentials>) {
    let one = chap.as_ref().map(|c| credentials(c, what, problems));
    let back = mutual
        .as_ref()
        .map(|c| credentials(c, &format!("{what} mutual_chap"), problems));
    if let Some(m) = mutual {
        match &one {
            None => problems.at(
                m.span(),
                format!("{what}: mutual_chap needs chap (the initiator authenticates first)"),
            ),
            Some(c) if c.secret == m.get_ref().secret => problems.at(
                m.span(),
                format!("{what}: mutual_chap must not use the same secret as chap"),
            ),
            Some(_) => {}
        }
    }
    (one, back)
}

impl File {
    /// The [`TargetConfig`] this file describes, with the defaults of `portshift target`
    /// for every absent key; `None` or problems recorded when something is wrong.
    pub(super) fn into_config(self, problems: &mut Problems) -> Option<ConfigFile> {
        let mut cfg = TargetConfig {
            admin: crate::admin::DEFAULT_ADMIN.parse().ok(),
            ..Default::default()
        };
        let mut has_secrets = false;

        for p in &self.portal {
            let address: Option<SocketAddr> = match p.address.get_ref().parse() {
                Ok(a) => Some(a),
                Err(e) => {
                    problems.at(
                        p.address.span(),
                        format!(
                            "portal address {:?}: expected IP:PORT, [IPv6]:PORT for IPv6 ({e})",
                            p.address.get_ref()
                        ),
                    );
                    None
                }
            };
            let link_capacity = p.speed.as_ref().and_then(|s| {
                parse_rate(s.get_ref())
                    .map_err(|e| problems.at(s.span(), e))
                    .ok()
            });
            if let Some(address) = address {
                if let Some(first) = cfg.portals.iter().find(|q| q.address == address) {
                    problems.at(
                        p.address.span(),
                        format!("portal {} is given twice", first.address),
                    );
                }
                cfg.portals.push(PortalConfig {
                    address,
                    link_capacity,
                });
            }
        }

        if let Some(i) = &self.isns {
            let given = match i.get_ref() {
                Servers::One(s) => std::slice::from_ref(s),
                Servers::Many(v) => v.as_slice(),
            };
            let mut servers = Vec::new();
            for s in given {
                match s.parse() {
                    Ok(a) if servers.contains(&a) => {
                        problems.at(i.span(), format!("isns: {a} is given twice"))
                    }
                    Ok(a) => servers.push(a),
                    Err(e) => problems.at(
                        i.span(),
                        format!("isns: expected HOST:PORT or a list of them, not {s:?} ({e})"),
                    ),
                }
            }
            if given.is_empty() {
                problems.at(i.span(), "isns: the list of servers is empty");
            }
            cfg.isns = servers;
        }
        if let Some(a) = &self.admin {
            match a.get_ref().as_str() {
                "off" => cfg.admin = None,
                s => match s.parse() {
                    Ok(a) => cfg.admin = Some(a),
                    Err(e) => problems.at(
                        a.span(),
                        format!("admin: expected IP:PORT or \"off\" ({e})"),
                    ),
                },
            }
        }
        if let Some(t) = &self.admin_token_file {
            match crate::admin_ops::read_token_file(std::path::Path::new(t.get_ref())) {
                Ok(token) => cfg.admin_token = Some(token),
                Err(e) => problems.at(t.span(), e.to_string()),
            }
        }
        if let Some(l) = &self.limits {
            let mut limits = PortalLimits::default();
            for (v, slot, name) in [
                (&l.max_connections, &mut limits.total, "max_connections"),
                (
                    &l.max_connections_per_address,
                    &mut limits.per_address,
                    "max_connections_per_address",
                ),
            ] {
                if let Some(v) = v {
                    if *v.get_ref() == 0 {
                        problems.at(v.span(), format!("{name} must be at least 1"));
                    }
                    *slot = *v.get_ref();
                }
            }
            cfg.limits = limits;
        }
        if let Some(b) = &self.balancing {
            for r in &b.rules {
                match r.get_ref().parse::<balancer::BalanceSpec>() {
                    Ok(s) => cfg.balance.push(s),
                    Err(e) => {
                        problems.at(r.span(), format!("balancing rule {:?}: {e}", r.get_ref()))
                    }
                }
            }
            if let Some(c) = b.cooldown_seconds {
                cfg.cooldown_ms = c.saturating_mul(1000);
            }
            cfg.pin = b.pin.clone();
            if let Some(s) = &b.smoothing_ms {
                if *s.get_ref() > 600_000 {
                    problems.at(s.span(), "smoothing_ms: at most 600000 (10 minutes)");
                }
                cfg.smoothing_ms = *s.get_ref();
            }
            if let Some(m) = b.max_moves {
                cfg.max_moves = m;
            }
            cfg.move_reservation_holders = b.move_reservation_holders;
            if let Err(e) = cfg.balance_policy() {
                let span = b.rules.first().map_or(0..0, |r| r.span());
                problems.at(span, format!("balancing: {e}"));
            }
        }
        if let Some(d) = &self.discovery {
            let (c, m) = chap_pair(&d.chap, &d.mutual_chap, "discovery chap", problems);
            has_secrets |= c.is_some() || m.is_some();
            cfg.discovery_chap = c;
            cfg.discovery_mutual_chap = m;
        }

        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for t in &self.target {
            let iqn = t.iqn.get_ref().clone();
            if let Err(e) = scsi::Identity::new(&iqn, 0) {
                problems.at(t.iqn.span(), format!("target {iqn:?}: {e}"));
            }
            if seen.insert(iqn.clone(), t.iqn.span().start).is_some() {
                problems.at(t.iqn.span(), format!("target {iqn} is given twice"));
                continue;
            }
            let allow = match &t.allow {
                None => {
                    problems.at(
                        t.iqn.span(),
                        format!(
                            "target {iqn}: say who may log in: allow = \"any\" or \
                             allow = [\"iqn.…\", …]"
                        ),
                    );
                    None
                }
                Some(a) => match a.get_ref() {
                    Allow::Word(w) if w == "any" => None,
                    Allow::Word(w) => {
                        problems.at(
                            a.span(),
                            format!(
                                "target {iqn}: allow = {w:?}: expected \"any\" or a list of \
                                 initiator names"
                            ),
                        );
                        None
                    }
                    Allow::List(names) => {
                        if names.is_empty() {
                            problems.at(
                                a.span(),
                                format!(
                                    "target {iqn}: allow = [] lets nobody log in; list \
                                     initiator names or say \"any\""
                                ),
                            );
                        }
                        Some(names.clone())
                    }
                },
            };
            let what = format!("target {iqn} chap");
            let (chap, mutual_chap) = chap_pair(&t.chap, &t.mutual_chap, &what, problems);
            has_secrets |= chap.is_some() || mutual_chap.is_some();
            cfg.access.insert(
                iqn.clone(),
                TargetAccess {
                    chap,
                    mutual_chap,
                    allow,
                },
            );
            if t.lun.is_empty() {
                problems.at(
                    t.iqn.span(),
                    format!("target {iqn} has no LUN: add a [[target.lun]]"),
                );
            }
            let mut numbers: Vec<u16> = Vec::new();
            for l in &t.lun {
                if let Some(c) = lun(&iqn, l, &mut numbers, problems) {
                    cfg.luns.push(c);
                }
            }
        }
        Some(ConfigFile {
            config: cfg,
            has_secrets,
        })
    }
}

/// One `[[target.lun]]`: its [`LunConfig`], numbered (explicitly or as the next free
/// number after the previous one); `numbers` are the target's numbers so far.
fn lun(
    iqn: &str,
    l: &Spanned<Lun>,
    numbers: &mut Vec<u16>,
    problems: &mut Problems,
) -> Option<LunConfig> {
    let span = l.span();
    let v = l.get_ref();
    let number = match &v.number {
        Some(n) => {
            if *n.get_ref() > scsi::lun::MAX_LUN {
                problems.at(
                    n.span(),
                    format!("LUN number at most {}", scsi::lun::MAX_LUN),
                );
            }
            if numbers.contains(n.get_ref()) {
                problems.at(
                    n.span(),
                    format!("target {iqn}: LUN {} is given twice", n.get_ref()),
                );
            }
            *n.get_ref()
        }
        None => numbers.last().map_or(0, |n| n.saturating_add(1)),
    };
    numbers.push(number);
    let size = v.size.as_ref().and_then(|s| {
        let r = match s.get_ref() {
            Size::Bytes(0) => Err("size must be more than 0".to_string()),
            Size::Bytes(b) => Ok(*b),
            Size::Text(t) => parse_size(t),
        };
        r.map_err(|e| problems.at(s.span(), e)).ok()
    });
    let path = match (&v.path, v.null) {
        (Some(_), true) => {
            problems.at(
                span,
                "a LUN has either path = \"FILE\" or null = true, not both",
            );
            return None;
        }
        (None, false) => {
            problems.at(
                span,
                "a LUN needs path = \"FILE\" (a file or block device) or null = true",
            );
            return None;
        }
        (Some(p), false) => p.clone(),
        (None, true) => {
            let Some(bytes) = size else {
                if v.size.is_none() {
                    problems.at(span, "a null store needs a size");
                }
                return None;
            };
            if bytes % u64::from(scsi::BLOCK_SIZE) != 0 {
                problems.at(
                    v.size.as_ref().map_or(span.clone(), |s| s.span()),
                    format!("size: a multiple of {} bytes is needed", scsi::BLOCK_SIZE),
                );
            }
            PathBuf::from(format!("{NULL_PREFIX}{bytes}"))
        }
    };
    let physical_block_size = match &v.physical_block_size {
        Some(p) if [512, 4096].contains(p.get_ref()) => *p.get_ref(),
        Some(p) => {
            problems.at(p.span(), "physical_block_size: 512 or 4096");
            scsi::BLOCK_SIZE
        }
        None => scsi::BLOCK_SIZE,
    };
    let serial = v.serial.as_ref().map(|s| {
        let ok = !s.get_ref().is_empty()
            && s.get_ref().len() <= 32
            && s.get_ref().bytes().all(|b| b.is_ascii_graphic());
        if !ok {
            problems.at(
                s.span(),
                "serial: 1 to 32 printable ASCII characters, no spaces",
            );
        }
        s.get_ref().clone()
    });
    Some(LunConfig {
        iqn: iqn.to_string(),
        path,
        size: if v.null { None } else { size },
        serial,
        physical_block_size,
        write_through: v.write_through,
        number: Some(number),
    })
}
