//! The configuration table (patent FIG. 2): per portal, its address, its processor, its load and
//! the initiators logged in through it, with the target each one uses.

use serde::{Deserialize, Serialize};

/// Index of a portal in the target's portal list (also its processor number).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct PortalId(pub u16);

impl std::fmt::Display for PortalId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "P{}", self.0)
    }
}

/// One logged-in normal session (RFC 7143 §3.4) as the balancer sees it, with its share of
/// its portal's load (what a move takes away from the portal and adds to another).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
    /// Bytes per second the target sent on this session (READ data, responses), smoothed.
    #[serde(default)]
    pub read_bps: f64,
    /// Bytes per second the target received on this session (WRITE data, commands), smoothed.
    #[serde(default)]
    pub write_bps: f64,
    /// SCSI commands outstanding now (received, not yet answered).
    #[serde(default)]
    pub outstanding: u32,
    /// This session's share of its portal processor's load (0..=1 of the processor's
    /// [`PortalLoad::cpu_demand`]), estimated from its share of the portal's work.
    #[serde(default)]
    pub cpu_share: f64,
    /// The session holds a persistent-reservation registration or a reservation: a stock
    /// initiator may come back with a new ISID (a new I_T nexus), so it is not moved by default.
    #[serde(default)]
    pub holds_reservation: bool,
}

/// A portal's load as the target measures it, smoothed (see ARCHITECTURE.md for the time
/// constant). Links are full duplex: a link's utilisation is the larger of sent and
/// received over its capacity, never their sum.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PortalLoad {
    /// Link capacity in bytes per second, each way; `None` when not known.
    pub link_capacity: Option<f64>,
    /// Bytes per second the portal sent.
    pub sent_bps: f64,
    /// Bytes per second the portal received.
    pub received_bps: f64,
    /// Fraction of one CPU the portal's processor thread ran (0..=1).
    pub cpu_busy: f64,
    /// Fraction of the time the processor thread was ready to run but waited for a CPU: on a
    /// shared machine a starved processor shows little CPU time but much waiting.
    pub cpu_wait: f64,
    /// SCSI commands outstanding on the portal now.
    pub outstanding: u32,
    /// Command service time, median and 99th percentile, in microseconds.
    pub service_p50_us: f64,
    pub service_p99_us: f64,
}

impl PortalLoad {
    /// The link's utilisation (0..): max(sent, received) / capacity; `None` without a capacity.
    pub fn link_utilisation(&self) -> Option<f64> {
        self.link_capacity
            .filter(|c| *c > 0.0)
            .map(|c| self.sent_bps.max(self.received_bps) / c)
    }

    /// What the processor was asked to do (0..): the time it ran plus the time it waited.
    pub fn cpu_demand(&self) -> f64 {
        self.cpu_busy + self.cpu_wait
    }
}

/// One row of the configuration table: a portal and what it carries.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PortalRow {
    pub id: PortalId,
    /// `IP:PORT` the portal listens on.
    pub address: String,
    /// The processor (OS thread) that serves this portal.
    pub processor: usize,
    /// Sessions logged in through this portal.
    pub sessions: Vec<SessionEntry>,
    /// The portal's measured load.
    #[serde(default)]
    pub load: PortalLoad,
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
