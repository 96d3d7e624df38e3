//! The configuration table (patent FIG. 2): per portal, its address, its processor, its load and
//! the initiators logged in through it, with the target each one uses.

use serde::{Deserialize, Serialize};

/// Index of a portal in the target's portal list (also its processor number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortalId(pub u16);

impl std::fmt::Display for PortalId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "P{}", self.0)
    }
}

/// One logged-in normal session (RFC 7143 §3.4) as the balancer sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionEntry {
    /// Opaque id the target uses to address the session's connection.
    pub session_id: u64,
    /// iSCSI name of the initiator.
    pub initiator: String,
    /// iSCSI name of the target the session is logged in to.
    pub target: String,
    /// Milliseconds since the Unix epoch when the login completed.
    pub login_ms: u64,
    /// SCSI commands completed per second, averaged over the last sample window.
    pub iops: f64,
    /// Total SCSI commands completed in this session.
    pub commands: u64,
}

/// One row of the configuration table: a portal and what it carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortalRow {
    pub id: PortalId,
    /// `IP:PORT` the portal listens on.
    pub address: String,
    /// The processor (OS thread) that serves this portal.
    pub processor: usize,
    /// Sessions logged in through this portal.
    pub sessions: Vec<SessionEntry>,
}

impl PortalRow {
    /// The portal's IOPS: the sum of its sessions'.
    pub fn iops(&self) -> f64 {
        self.sessions.iter().map(|s| s.iops).sum()
    }
}

/// The whole table: every portal of the target, in portal order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConfigTable {
    pub portals: Vec<PortalRow>,
    /// Which targets are served through which portals: `(target, portal)` pairs. Every target is
    /// served through every portal in portshift, but the policy does not assume it.
    pub served: Vec<(String, PortalId)>,
}

impl ConfigTable {
    /// The row of portal `id`, if any.
    pub fn portal(&self, id: PortalId) -> Option<&PortalRow> {
        self.portals.iter().find(|p| p.id == id)
    }

    /// Whether `target` is served through `portal`.
    pub fn serves(&self, target: &str, portal: PortalId) -> bool {
        self.served.iter().any(|(t, p)| t == target && *p == portal)
    }

    /// Every distinct target name, in first-served order.
    pub fn targets(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for (t, _) in &self.served {
            if !out.contains(&t.as_str()) {
                out.push(t);
            }
        }
        out
    }
}
