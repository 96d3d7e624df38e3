//! The decision procedure of patent JP4675664B2 (FIG. 5, steps 101–112), as a pure state machine.
//!
//! Each [`Balancer::step`] looks at the configuration table: for every portal whose load has
//! reached the high threshold it orders the portal's sessions by switch priority (the least
//! disturbing move first), and picks the first one whose target is also served and registered
//! through another portal whose load, with the session added, stays under the threshold. The
//! decision is to delete the (target, hot portal) registration and request that initiator's
//! logout. For every deleted registration whose portal's load has fallen to the low threshold,
//! the decision is to restore it — but not before the cooldown has passed since the deletion:
//! a move off a portal at exactly the high mark lands it at the low mark (sessions:H has low
//! H-1), and without this hold the registration would come back one step after it went, while
//! the portal is still at the high mark as soon as one more initiator logs in.

use std::collections::HashMap;

use crate::metric::BalanceSpec;
use crate::table::{ConfigTable, PortalId, SessionEntry};

/// What the target should do.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Move one session off an overloaded portal.
    Move {
        session_id: u64,
        initiator: String,
        target: String,
        from: PortalId,
        to: PortalId,
        /// True when (target, from) is still registered in iSNS and must be deregistered first.
        delete_registration: bool,
        reason: String,
    },
    /// Register (target, portal) in iSNS again.
    Restore {
        target: String,
        portal: PortalId,
        reason: String,
    },
}

/// A logout the balancer requested and that has not happened yet.
#[derive(Debug, Clone)]
struct Pending {
    from: PortalId,
    to: PortalId,
    load: f64,
    at_ms: u64,
}

/// A (target, portal) registration the balancer holds deleted.
#[derive(Debug, Clone)]
struct Deleted {
    target: String,
    portal: PortalId,
    /// When it was deleted; `None` makes it restorable at once (after a failed restore).
    at_ms: Option<u64>,
}

/// The balancer's memory between steps.
#[derive(Debug, Clone)]
pub struct Balancer {
    spec: BalanceSpec,
    /// An initiator moved less than this long ago is not moved again, and a registration
    /// deleted less than this long ago is not restored.
    cooldown_ms: u64,
    /// A requested logout that has not happened after this long is forgotten.
    pending_timeout_ms: u64,
    /// (target, portal) registrations currently deleted, in deletion order.
    deleted: Vec<Deleted>,
    /// Last move per (initiator, target).
    last_moved: HashMap<(String, String), u64>,
    /// Requested logouts by session id.
    pending: HashMap<u64, Pending>,
}

impl Balancer {
    pub fn new(spec: BalanceSpec, cooldown_ms: u64) -> Self {
        Balancer {
            spec,
            cooldown_ms,
            pending_timeout_ms: 15_000,
            deleted: Vec::new(),
            last_moved: HashMap::new(),
            pending: HashMap::new(),
        }
    }

    pub fn spec(&self) -> BalanceSpec {
        self.spec
    }

    /// Registrations the balancer currently holds deleted, in deletion order.
    pub fn deleted(&self) -> Vec<(String, PortalId)> {
        self.deleted
            .iter()
            .map(|d| (d.target.clone(), d.portal))
            .collect()
    }

    /// Whether (target, portal) is currently deleted by the balancer.
    pub fn is_deleted(&self, target: &str, portal: PortalId) -> bool {
        self.deleted
            .iter()
            .any(|d| d.target == target && d.portal == portal)
    }

    /// Tell the balancer that a registration it asked to delete could not be deleted (so it
    /// does not believe it is gone), or that a restore failed (so it tries again).
    pub fn registration_failed(&mut self, target: &str, portal: PortalId, was_delete: bool) {
        if was_delete {
            self.deleted
                .retain(|d| !(d.target == target && d.portal == portal));
        } else if !self.is_deleted(target, portal) {
            self.deleted.push(Deleted {
                target: target.to_string(),
                portal,
                at_ms: None,
            });
        }
    }

    /// Projected load of every portal: measured load, minus sessions already asked to leave,
    /// plus sessions on their way in.
    fn projected(&self, table: &ConfigTable) -> HashMap<PortalId, f64> {
        let mut loads: HashMap<PortalId, f64> = table
            .portals
            .iter()
            .map(|p| (p.id, self.spec.metric.load(p)))
            .collect();
        for row in &table.portals {
            for s in &row.sessions {
                if let Some(p) = self.pending.get(&s.session_id)
                    && p.from == row.id
                {
                    *loads.entry(p.from).or_default() -= p.load;
                    *loads.entry(p.to).or_default() += p.load;
                }
            }
        }
        loads
    }

    /// One pass of the procedure at time `now_ms` (milliseconds, any monotonic origin).
    pub fn step(&mut self, table: &ConfigTable, now_ms: u64) -> Vec<Decision> {
        let metric = self.spec.metric;
        // Forget requests whose session left (the move happened) or that timed out.
        let live: std::collections::HashSet<u64> = table
            .portals
            .iter()
            .flat_map(|p| p.sessions.iter().map(|s| s.session_id))
            .collect();
        let timeout = self.pending_timeout_ms;
        self.pending
            .retain(|id, p| live.contains(id) && now_ms.saturating_sub(p.at_ms) < timeout);

        let mut decisions = Vec::new();
        let mut loads = self.projected(table);
        let high = self.spec.thresholds.high;
        let low = self.spec.thresholds.low;

        for row in &table.portals {
            let load = loads.get(&row.id).copied().unwrap_or(0.0);
            if load < high {
                continue;
            }
            // Switch priority: the least disturbing move first — the quietest session, then the
            // most recently logged in, then the newest session id.
            let mut candidates: Vec<&SessionEntry> = row
                .sessions
                .iter()
                .filter(|s| !self.pending.contains_key(&s.session_id))
                .filter(|s| {
                    self.last_moved
                        .get(&(s.initiator.clone(), s.target.clone()))
                        .is_none_or(|t| now_ms.saturating_sub(*t) >= self.cooldown_ms)
                })
                .collect();
            candidates.sort_by(|a, b| {
                a.iops
                    .total_cmp(&b.iops)
                    .then(b.login_ms.cmp(&a.login_ms))
                    .then(b.session_id.cmp(&a.session_id))
            });
            for s in candidates {
                let add = metric.session_load(s);
                let dest = table
                    .portals
                    .iter()
                    .filter(|p| p.id != row.id)
                    .filter(|p| table.serves(&s.target, p.id) && !self.is_deleted(&s.target, p.id))
                    .map(|p| (p.id, loads.get(&p.id).copied().unwrap_or(0.0)))
                    .filter(|(_, l)| l + add < high)
                    .min_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
                let Some((to, to_load)) = dest else { continue };
                let delete_registration = !self.is_deleted(&s.target, row.id);
                decisions.push(Decision::Move {
                    session_id: s.session_id,
                    initiator: s.initiator.clone(),
                    target: s.target.clone(),
                    from: row.id,
                    to,
                    delete_registration,
                    reason: format!(
                        "{} load {load} >= high {high}; {to} load {to_load} + {add} < {high}",
                        metric.name()
                    ),
                });
                if delete_registration {
                    self.deleted.push(Deleted {
                        target: s.target.clone(),
                        portal: row.id,
                        at_ms: Some(now_ms),
                    });
                }
                self.pending.insert(
                    s.session_id,
                    Pending {
                        from: row.id,
                        to,
                        load: add,
                        at_ms: now_ms,
                    },
                );
                self.last_moved
                    .insert((s.initiator.clone(), s.target.clone()), now_ms);
                *loads.entry(row.id).or_default() -= add;
                *loads.entry(to).or_default() += add;
                break; // one move per hot portal per step: let the load settle
            }
        }

        // Restore registrations of portals whose load has fallen to the low threshold, once they
        // have been deleted for the cooldown.
        let mut kept = Vec::new();
        for d in std::mem::take(&mut self.deleted) {
            let load = loads.get(&d.portal).copied().unwrap_or(0.0);
            let moving_out = self.pending.values().any(|p| p.from == d.portal);
            let held = d
                .at_ms
                .is_none_or(|at| now_ms.saturating_sub(at) >= self.cooldown_ms);
            if load <= low && !moving_out && held {
                decisions.push(Decision::Restore {
                    reason: format!("{} load {load} <= low {low}", metric.name()),
                    target: d.target,
                    portal: d.portal,
                });
            } else {
                kept.push(d);
            }
        }
        self.deleted = kept;
        decisions
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::PortalRow;

    fn session(id: u64, init: &str, target: &str, login_ms: u64) -> SessionEntry {
        SessionEntry {
            session_id: id,
            initiator: init.into(),
            target: target.into(),
            login_ms,
            iops: 0.0,
            commands: 0,
            ..Default::default()
        }
    }

    fn table(p0: Vec<SessionEntry>, p1: Vec<SessionEntry>, targets: &[&str]) -> ConfigTable {
        let mut served = Vec::new();
        for t in targets {
            served.push((t.to_string(), PortalId(0)));
            served.push((t.to_string(), PortalId(1)));
        }
        ConfigTable {
            portals: vec![
                PortalRow {
                    id: PortalId(0),
                    address: "127.0.0.1:3260".into(),
                    processor: 0,
                    sessions: p0,
                    load: Default::default(),
                },
                PortalRow {
                    id: PortalId(1),
                    address: "127.0.0.2:3260".into(),
                    processor: 1,
                    sessions: p1,
                    load: Default::default(),
                },
            ],
            served,
        }
    }

    fn spec(s: &str) -> BalanceSpec {
        s.parse().unwrap()
    }

    #[test]
    fn moves_newest_session_off_hot_portal_then_restores() {
        let mut b = Balancer::new(spec("sessions:2"), 0);
        let t = table(
            vec![
                session(1, "i1", "t1", 100),
                session(2, "i2", "t2", 200),
                session(3, "i3", "t3", 300),
            ],
            vec![],
            &["t1", "t2", "t3"],
        );
        let d = b.step(&t, 1000);
        assert_eq!(d.len(), 1);
        match &d[0] {
            Decision::Move {
                session_id,
                from,
                to,
                delete_registration,
                ..
            } => {
                assert_eq!(*session_id, 3, "most recent login moves first");
                assert_eq!((*from, *to), (PortalId(0), PortalId(1)));
                assert!(*delete_registration);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(b.is_deleted("t3", PortalId(0)));
        // Same table again: the requested logout is pending; P1 would reach 2 with another
        // session, which is not under the threshold, so nothing more happens.
        assert!(b.step(&t, 1100).is_empty());
        // The session moved: P0 has 2 (still >= high, no destination under threshold).
        let t2 = table(
            vec![session(1, "i1", "t1", 100), session(2, "i2", "t2", 200)],
            vec![session(4, "i3", "t3", 1200)],
            &["t1", "t2", "t3"],
        );
        assert!(b.step(&t2, 1300).is_empty());
        // One initiator leaves: P0 falls to 1 = low, the registration comes back.
        let t3 = table(
            vec![session(1, "i1", "t1", 100)],
            vec![session(4, "i3", "t3", 1200)],
            &["t1", "t2", "t3"],
        );
        let d = b.step(&t3, 1400);
        assert_eq!(
            d,
            vec![Decision::Restore {
                target: "t3".into(),
                portal: PortalId(0),
                reason: "sessions load 1 <= low 1".into()
            }]
        );
        assert!(b.deleted().is_empty());
    }

    #[test]
    fn a_deleted_registration_is_held_for_the_cooldown() {
        let mut b = Balancer::new(spec("sessions:2"), 5_000);
        let t = table(
            vec![session(1, "i1", "t1", 100), session(2, "i2", "t2", 200)],
            vec![],
            &["t1", "t2"],
        );
        assert!(matches!(
            &b.step(&t, 1_000)[..],
            [Decision::Move {
                session_id: 2,
                delete_registration: true,
                ..
            }]
        ));
        // The move landed P0 at the low mark at once: the registration stays deleted until the
        // cooldown has passed, so the next initiator asking iSNS is not sent back to P0.
        let moved = table(
            vec![session(1, "i1", "t1", 100)],
            vec![session(3, "i2", "t2", 1_100)],
            &["t1", "t2"],
        );
        assert!(b.step(&moved, 2_000).is_empty());
        assert!(b.step(&moved, 5_999).is_empty());
        assert!(b.is_deleted("t2", PortalId(0)));
        assert!(matches!(
            &b.step(&moved, 6_000)[..],
            [Decision::Restore {
                portal: PortalId(0),
                ..
            }]
        ));
        // A failed restore is retried at the next step, without a new hold.
        b.registration_failed("t2", PortalId(0), false);
        assert_eq!(b.step(&moved, 6_100).len(), 1);
    }

    #[test]
    fn never_deletes_the_last_registered_portal_of_a_target() {
        let mut b = Balancer::new(spec("sessions:1:0"), 0);
        // t1 is served only through P0: it cannot move anywhere.
        let mut t = table(vec![session(1, "i1", "t1", 1)], vec![], &[]);
        t.served = vec![("t1".into(), PortalId(0))];
        assert!(b.step(&t, 10).is_empty());
        assert!(b.deleted().is_empty());
    }

    #[test]
    fn cooldown_keeps_an_initiator_in_place() {
        for (cooldown, expected) in [(10_000, 2), (0, 9)] {
            let mut b = Balancer::new(spec("sessions:3"), cooldown);
            let t = table(
                vec![
                    session(1, "i1", "t1", 1),
                    session(2, "i2", "t2", 2),
                    session(3, "i3", "t3", 3),
                ],
                vec![],
                &["t1", "t2", "t3"],
            );
            assert!(matches!(
                &b.step(&t, 0)[0],
                Decision::Move { session_id: 3, .. }
            ));
            // i3 came straight back to P0 as a new session: within the cooldown it stays.
            let t = table(
                vec![
                    session(1, "i1", "t1", 1),
                    session(2, "i2", "t2", 2),
                    session(9, "i3", "t3", 500),
                ],
                vec![],
                &["t1", "t2", "t3"],
            );
            match &b.step(&t, 600)[0] {
                Decision::Move { session_id, .. } => assert_eq!(*session_id, expected),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn pending_logout_expires_when_the_session_ignores_it() {
        let mut b = Balancer::new(spec("sessions:2"), 0);
        let t = table(
            vec![session(1, "i1", "t1", 1), session(2, "i2", "t2", 2)],
            vec![],
            &["t1", "t2"],
        );
        assert_eq!(b.step(&t, 0).len(), 1);
        assert!(b.step(&t, 1_000).is_empty());
        // After the timeout the balancer may ask again (session 2 is still there).
        let d = b.step(&t, 20_000);
        assert!(matches!(
            &d[0],
            Decision::Move {
                session_id: 2,
                delete_registration: false,
                ..
            }
        ));
    }

    #[test]
    fn iops_metric_moves_the_quietest_session() {
        let mut b = Balancer::new(spec("iops:1000:500"), 0);
        let mut t = table(
            vec![session(1, "i1", "t1", 1), session(2, "i2", "t2", 2)],
            vec![],
            &["t1", "t2"],
        );
        t.portals[0].sessions[0].iops = 900.0;
        t.portals[0].sessions[1].iops = 300.0;
        let d = b.step(&t, 0);
        assert!(matches!(&d[0], Decision::Move { session_id: 2, .. }));
    }

    // The property test of the policy over an evolving table (moves carried out, registrations
    // deleted and restored, arrivals, departures and changing loads) is
    // tests/policy_simulation.rs.
}
