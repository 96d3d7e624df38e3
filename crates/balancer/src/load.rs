//! A portal's load in raw units, and what one session's move takes from it and adds to another
//! portal. The policy projects every move (decided now, or requested earlier and not yet
//! carried out) onto these figures before it compares them with the thresholds.
//!
//! Raw units matter because portals differ: a session's 40 MB/s is 0.33 of a 1 Gb/s link and
//! 0.03 of a 10 Gb/s one, so a move's effect on a destination's utilisation is computed from
//! the destination's own sent and received rates and its own capacity, never by carrying a
//! fraction over from the source.

use crate::metric::Metric;
use crate::table::{PortalRow, SessionEntry};

/// What one session puts on its portal, in raw units.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Share {
    /// SCSI commands per second.
    pub iops: f64,
    /// Bytes per second the target sends for it (READ data): adds to a portal's sent rate.
    pub read_bps: f64,
    /// Bytes per second the target receives for it (WRITE data): adds to a portal's received
    /// rate.
    pub write_bps: f64,
    /// Its processor cost as a fraction of one CPU: its share of its portal processor's demand
    /// times that demand. Added to a destination as that absolute fraction (every portal
    /// processor is assumed to be the same kind of CPU).
    pub cpu: f64,
}

impl Share {
    /// The part of this share that smoothed rate figures still misrepresent `age_ms` after
    /// the session moved: an EWMA of time constant `tau_ms` has folded in only
    /// `1 - exp(-age/tau)` of the change (none of it is missing when `tau_ms` is 0). Counts
    /// (sessions, IOPS from the sessions present) are exact at once, so only the bytes and
    /// the processor cost are kept.
    pub fn unsettled(&self, age_ms: u64, tau_ms: u64) -> Share {
        let f = if tau_ms == 0 {
            0.0
        } else {
            (-(age_ms as f64) / tau_ms as f64).exp()
        };
        Share {
            iops: 0.0,
            read_bps: self.read_bps * f,
            write_bps: self.write_bps * f,
            cpu: self.cpu * f,
        }
    }

    /// The share of session `s` on `portal`, the portal it is logged in through.
    pub fn of(s: &SessionEntry, portal: &PortalRow) -> Self {
        Share {
            iops: s.iops.max(0.0),
            read_bps: s.read_bps.max(0.0),
            write_bps: s.write_bps.max(0.0),
            cpu: (s.cpu_share.clamp(0.0, 1.0) * portal.load.cpu_demand()).max(0.0),
        }
    }
}

/// A portal's load as the policy projects it, in raw units.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Projection {
    pub sessions: f64,
    pub iops: f64,
    pub sent_bps: f64,
    pub received_bps: f64,
    /// Link capacity in bytes per second each way; `None` when unknown.
    pub link_capacity: Option<f64>,
    /// Processor demand, fraction of one CPU.
    pub cpu: f64,
}

impl Projection {
    /// The portal's measured load.
    pub fn of(row: &PortalRow) -> Self {
        Projection {
            sessions: row.sessions.len() as f64,
            iops: row.iops(),
            sent_bps: row.load.sent_bps,
            received_bps: row.load.received_bps,
            link_capacity: row.load.link_capacity.filter(|c| *c > 0.0),
            cpu: row.load.cpu_demand(),
        }
    }

    /// The load under `metric`; `None` when not measured (bandwidth without a link capacity).
    pub fn value(&self, metric: Metric) -> Option<f64> {
        match metric {
            Metric::Sessions => Some(self.sessions),
            Metric::Iops => Some(self.iops),
            Metric::Bandwidth => self
                .link_capacity
                .map(|c| self.sent_bps.max(self.received_bps) / c),
            Metric::Cpu => Some(self.cpu),
        }
    }

    /// The session with `share` leaves this portal (never below zero).
    pub fn remove(&mut self, share: &Share) {
        self.sessions = (self.sessions - 1.0).max(0.0);
        self.iops = (self.iops - share.iops).max(0.0);
        self.sent_bps = (self.sent_bps - share.read_bps).max(0.0);
        self.received_bps = (self.received_bps - share.write_bps).max(0.0);
        self.cpu = (self.cpu - share.cpu).max(0.0);
    }

    /// The session with `share` arrives on this portal.
    pub fn add(&mut self, share: &Share) {
        self.sessions += 1.0;
        self.iops += share.iops;
        self.sent_bps += share.read_bps;
        self.received_bps += share.write_bps;
        self.cpu += share.cpu;
    }

    /// Moves the rates of `share` (not a session) from this portal's figures to `to`'s: the
    /// part of a completed move that the smoothed measurements have not caught up with.
    pub fn shift_rates(&mut self, to: &mut Projection, share: &Share) {
        self.sent_bps = (self.sent_bps - share.read_bps).max(0.0);
        self.received_bps = (self.received_bps - share.write_bps).max(0.0);
        self.cpu = (self.cpu - share.cpu).max(0.0);
        to.sent_bps += share.read_bps;
        to.received_bps += share.write_bps;
        to.cpu += share.cpu;
    }

    /// This projection with `share` added.
    pub fn with(&self, share: &Share) -> Self {
        let mut p = self.clone();
        p.add(share);
        p
    }

    /// This projection with `share` removed.
    pub fn without(&self, share: &Share) -> Self {
        let mut p = self.clone();
        p.remove(share);
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::PortalLoad;

    #[test]
    fn bandwidth_is_projected_in_bytes_against_each_links_capacity() {
        const MB: f64 = 1e6;
        let row = |cap: f64, sent: f64, received: f64| PortalRow {
            load: PortalLoad {
                link_capacity: Some(cap),
                sent_bps: sent,
                received_bps: received,
                cpu_busy: 0.5,
                cpu_wait: 0.1,
                ..Default::default()
            },
            ..Default::default()
        };
        // A 125 MB/s link sending 100 MB/s, a 1250 MB/s link sending 10 MB/s.
        let src = row(125.0 * MB, 100.0 * MB, 20.0 * MB);
        let dst = row(1250.0 * MB, 10.0 * MB, 700.0 * MB);
        let s = SessionEntry {
            read_bps: 40.0 * MB,
            write_bps: 5.0 * MB,
            cpu_share: 0.5,
            ..Default::default()
        };
        let share = Share::of(&s, &src);
        assert!((share.cpu - 0.3).abs() < 1e-12, "half of 0.6 demand");
        let p = Projection::of(&src).without(&share);
        assert!((p.value(Metric::Bandwidth).unwrap() - 60.0 / 125.0).abs() < 1e-12);
        let q = Projection::of(&dst).with(&share);
        // Full duplex: received dominates (705 MB/s), not the sum of both ways.
        assert!((q.value(Metric::Bandwidth).unwrap() - 705.0 / 1250.0).abs() < 1e-12);
        assert!((q.value(Metric::Cpu).unwrap() - 0.9).abs() < 1e-12);
        assert_eq!(
            Projection::default().value(Metric::Bandwidth),
            None,
            "no capacity, no utilisation"
        );
    }
}
