//! Building the served targets from a [`TargetConfig`], at start and at a configuration
//! reload (SIGHUP): a reload reuses every logical unit whose configuration is unchanged (the
//! same `Arc<LogicalUnit>`, so its reservations and unit attentions stay), keeps an unchanged
//! target's whole LUN table (its sessions notice nothing), gives a target whose LUN
//! inventory changed a table sharing its unit attentions and establishes REPORTED LUNS DATA
//! HAS CHANGED for its sessions (SPC-4 §6.33). What cannot change while running (portals,
//! iSNS server, admin endpoint, limits, balancing) is kept, and each change of it logged as
//! needing a restart.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use anyhow::Context;
use scsi::{BLOCK_SIZE, BlockDevice, FileDevice, Identity, LogicalUnit, LunTable, NullDevice};

use crate::start::{LunConfig, MAX_LUNS, NULL_PREFIX, TargetConfig};
use crate::target_set::{Served, TargetEntry};

/// The backing file of `l`, created when missing only if a size is given.
fn open_file(l: &LunConfig) -> anyhow::Result<FileDevice> {
    if l.size.is_none() && !l.path.exists() {
        anyhow::bail!(
            "backing file {} does not exist; pass --size to create it",
            l.path.display()
        );
    }
    FileDevice::open(&l.path, l.size).with_context(|| format!("LUN of {}", l.iqn))
}

/// Opens the logical unit `lun` of target `l.iqn` as `l` describes it.
pub(crate) fn open_lun(l: &LunConfig, lun: u16) -> anyhow::Result<Arc<LogicalUnit>> {
    let null_size = l.path.to_str().and_then(|p| p.strip_prefix(NULL_PREFIX));
    let dev: Arc<dyn BlockDevice> = if let Some(size) = null_size {
        let bytes: u64 = size
            .parse()
            .ok()
            .filter(|b| *b > 0 && b % u64::from(BLOCK_SIZE) == 0)
            .with_context(|| {
                format!("{NULL_PREFIX}{size}: a positive multiple of {BLOCK_SIZE} bytes is needed")
            })?;
        Arc::new(NullDevice::new(bytes / u64::from(BLOCK_SIZE)))
    } else {
        Arc::new(open_file(l)?)
    };
    let mut identity = Identity::new(&l.iqn, lun).with_context(|| format!("target {}", l.iqn))?;
    if let Some(serial) = &l.serial {
        // VPD page 80h carries printable ASCII (SPC-4 §7.8.17); 64 bytes is plenty.
        if serial.is_empty() || serial.len() > 64 || !serial.bytes().all(|b| b.is_ascii_graphic()) {
            anyhow::bail!(
                "LUN {lun} of {}: serial {serial:?} must be 1 to 64 printable ASCII characters without spaces",
                l.iqn
            );
        }
        identity.serial = serial.clone();
    }
    let unit = LogicalUnit::new(dev, identity)
        .with_write_through(l.write_through)
        .with_physical_block_size(l.physical_block_size)
        .with_context(|| format!("LUN {lun} of {}", l.iqn))?;
    // Persistent reservations with APTPL live in `<LUN file>.pr` (none for a null store).
    let unit = crate::pr_store::attach(unit, null_size.is_none().then_some(&l.path))?;
    Ok(Arc::new(unit))
}

/// The served targets a configuration describes.
pub(crate) struct Built {
    /// Target names in configuration order.
    pub names: Vec<String>,
    pub targets: HashMap<String, TargetEntry>,
    /// Targets that existed before and whose LUN inventory changed.
    pub changed: Vec<String>,
}

/// One target's LUNs with their numbers, by target name in configuration order.
pub(crate) type NumberedLuns<'a> = Vec<(String, Vec<(u16, &'a LunConfig)>)>;

/// Each target's LUNs, numbered: explicitly ([`LunConfig::number`]) or the one after the
/// target's previous LUN (0 first).
pub(crate) fn numbered(cfg: &TargetConfig) -> anyhow::Result<NumberedLuns<'_>> {
    if cfg.luns.len() > MAX_LUNS {
        anyhow::bail!("at most {MAX_LUNS} LUNs");
    }
    let mut out: NumberedLuns<'_> = Vec::new();
    for l in &cfg.luns {
        let i = match out.iter().position(|(n, _)| *n == l.iqn) {
            Some(i) => i,
            None => {
                out.push((l.iqn.clone(), Vec::new()));
                out.len() - 1
            }
        };
        let luns = &mut out[i].1;
        let n = match l.number {
            Some(n) => n,
            None => match luns.last() {
                Some((p, _)) => p
                    .checked_add(1)
                    .with_context(|| format!("too many LUNs for {}", l.iqn))?,
                None => 0,
            },
        };
        if n > scsi::lun::MAX_LUN {
            anyhow::bail!("LUN {n} of {}: at most {}", l.iqn, scsi::lun::MAX_LUN);
        }
        if luns.iter().any(|(m, _)| *m == n) {
            anyhow::bail!("LUN {n} of {} is given twice", l.iqn);
        }
        luns.push((n, l));
    }
    Ok(out)
}

/// The targets of `cfg`, reusing from `old` what did not change. Nothing is served until
/// the caller installs the result; on an error, the units opened here are closed again.
pub(crate) fn build(cfg: &TargetConfig, old: Option<&Served>) -> anyhow::Result<Built> {
    let mut built = Built {
        names: Vec::new(),
        targets: HashMap::new(),
        changed: Vec::new(),
    };
    for (iqn, luns) in numbered(cfg)? {
        let before = old.and_then(|o| o.targets.get(&iqn));
        let mut configs = BTreeMap::new();
        let mut units = Vec::new();
        for (n, l) in luns {
            let kept = before
                .filter(|b| b.lun_configs.get(&n) == Some(l))
                .and_then(|b| b.luns.unit(n).cloned());
            let unit = match kept {
                Some(u) => u,
                None => open_lun(l, n)?,
            };
            units.push((n, unit));
            configs.insert(n, l.clone());
        }
        let access = cfg.access.get(&iqn).cloned().unwrap_or_default();
        let luns = match before {
            Some(b) if b.lun_configs == configs => b.luns.clone(),
            Some(b) => {
                // A copy shares the unit attentions of the sessions already logged in.
                let mut t = LunTable::clone(&b.luns);
                for n in b.luns.luns() {
                    t.remove(n);
                }
                for (n, u) in units {
                    t.insert(n, u)
                        .map_err(|_| anyhow::anyhow!("LUN {n} of {iqn}: out of range"))?;
                }
                built.changed.push(iqn.clone());
                Arc::new(t)
            }
            None => {
                let mut t = LunTable::new();
                for (n, u) in units {
                    t.insert(n, u)
                        .map_err(|_| anyhow::anyhow!("LUN {n} of {iqn}: out of range"))?;
                }
                Arc::new(t)
            }
        };
        built.names.push(iqn.clone());
        built.targets.insert(
            iqn,
            TargetEntry {
                luns,
                lun_configs: configs,
                access,
            },
        );
    }
    Ok(built)
}

/// What a reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Targets whose LUN inventory changed (their sessions get REPORTED LUNS DATA HAS CHANGED).
    pub luns_changed: Vec<String>,
    /// Settings that changed in the file but need a restart (the running ones are kept).
    pub need_restart: Vec<&'static str>,
}

impl std::fmt::Display for ReloadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |v: &[String]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(", ")
            }
        };
        write!(
            f,
            "targets added: {}; removed: {}; LUNs changed: {}",
            list(&self.added),
            list(&self.removed),
            list(&self.luns_changed)
        )
    }
}

/// `new` with every setting that cannot change at runtime taken from `running`; the names
/// of those that differed.
pub(crate) fn keep_restart_only(
    running: &TargetConfig,
    new: &mut TargetConfig,
) -> Vec<&'static str> {
    let mut differ = Vec::new();
    macro_rules! keep {
        ($($field:ident => $name:literal),* $(,)?) => {$(
            if running.$field != new.$field {
                differ.push($name);
                new.$field = running.$field.clone();
            }
        )*};
    }
    keep!(
        portals => "portals",
        isns => "isns",
        admin => "admin",
        admin_token => "admin token",
        limits => "limits",
        balance => "balancing rules",
        cooldown_ms => "balancing cooldown",
        pin => "balancing pin",
        max_moves => "balancing max_moves",
        smoothing_ms => "balancing smoothing",
        move_reservation_holders => "balancing move_reservation_holders",
    );
    differ
}
