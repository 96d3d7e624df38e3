//! The decision procedure of patent JP4675664B2 (FIG. 5, steps 101–112), as a pure state machine.
//!
//! Each [`Balancer::step`] projects every portal's load in raw units ([`Projection`]): the
//! measured figures of the configuration table, minus the sessions already asked to leave and
//! plus the sessions on their way in. A portal is **overloaded** when any configured metric is
//! at or above its HIGH. For an overloaded portal the metric furthest above its HIGH drives the
//! choice:
//!
//! 1. **Candidates** are the portal's sessions that may move: not pinned, not holding a
//!    reservation (unless the policy allows it), not asked already, and whose initiator was not
//!    moved within the cooldown.
//! 2. **Destination** of a candidate: another portal that serves the target and where the
//!    (target, portal) registration is in place, that is not the portal this initiator left
//!    less than twice the cooldown ago, and where, with the session's share added, **every**
//!    configured metric stays under its HIGH (a move never pushes a destination over). Among
//!    those, the portals that carry no other session of the same initiator name and target
//!    (multipath spread) if there are any; then the one that ends least loaded relative to the
//!    HIGHs.
//! 3. **Choice**: a move that brings the hot portal under HIGH on the driving metric is
//!    preferred; if none does, the one that takes the largest share of it. Ties are broken by
//!    the switch priority, the least disruptive first: a session doubled on the hot portal (an
//!    initiator with several sessions there), the least outstanding I/O, not recently moved,
//!    then the configured order of login (newest first by default).
//!
//! The decision is to delete the (target, hot portal) registration and request that initiator's
//! logout; moves repeat while the portal stays overloaded, up to the policy's cap per step over
//! all portals. For every deleted registration whose portal has fallen to or below LOW on
//! **every** metric, the decision is to restore it — but not before the cooldown has passed
//! since the deletion: a move off a portal at exactly the high mark lands it at the low mark
//! (sessions:H has low H-1), and without this hold the registration would come back one step
//! after it went, while the portal is still at the high mark as soon as one more initiator
//! logs in. Every decision carries its reason: the metric, the figures and the rule.
//!
//! The balancer never ping-pongs (see [`crate::history`]): an initiator is not moved again
//! within its cooldown, nor back to the portal it left within twice the cooldown.
//!
//! A metric a portal does not measure (bandwidth on a link of unknown capacity) neither
//! overloads it nor keeps it from taking a session, but a move driven by a metric only goes to
//! a portal that measures it.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::config::{BalancePolicy, SwitchPriority};
use crate::history::{MoveRecord, PingPong, ping_pongs};
use crate::load::{Projection, Share};
use crate::metric::BalanceSpec;
use crate::table::{ConfigTable, PortalId, PortalRow, SessionEntry};

/// Moves the balancer remembers in [`Balancer::history`] (the oldest are forgotten first).
pub const HISTORY_CAPACITY: usize = 4096;

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
    share: Share,
    at_ms: u64,
}

/// A move that happened (its session left the portal) less than [`SETTLE_TAUS`] smoothing
/// time constants ago: the smoothed figures of both portals are still catching up with it.
#[derive(Debug, Clone)]
struct Settling {
    from: PortalId,
    to: PortalId,
    share: Share,
    /// When the balancer saw the session gone from `from`.
    done_ms: u64,
}

/// The least part of HIGH a move must take off the hot portal: a session whose share is below
/// it (not measured yet because it just logged in, or idle) is not moved. A millionth, not
/// more: on a portal that thousands of sessions share, each one's share is tiny and moving
/// them one by one is still what relieves it.
pub const MIN_RELIEF: f64 = 1e-6;

/// How long a completed move is projected on top of the measurements, in time constants of
/// their smoothing: after four, less than 2% of the move is missing from them.
pub const SETTLE_TAUS: u64 = 4;

/// A (target, portal) registration the balancer holds deleted.
#[derive(Debug, Clone)]
struct Deleted {
    target: String,
    portal: PortalId,
    /// When it was deleted; `None` makes it restorable at once (after a failed restore).
    at_ms: Option<u64>,
}

/// (initiator, target): an initiator name logged in to a target, borrowed from the table.
type Nexus<'t> = (&'t str, &'t str);

fn nexus(s: &SessionEntry) -> Nexus<'_> {
    (s.initiator.as_str(), s.target.as_str())
}

/// The portals each initiator name has sessions on, per target, with the number of sessions.
type Placements<'t> = HashMap<Nexus<'t>, BTreeMap<PortalId, usize>>;

/// When each initiator name was last moved off a portal, per target: initiator → target →
/// (when, the portal it left). Nested so that lookups borrow the table's names.
type LastMoved = HashMap<String, HashMap<String, (u64, PortalId)>>;

/// The (target, portal) pairs of the table, for lookups in one step.
type Served<'t> = HashSet<(&'t str, PortalId)>;

/// For each target, the portals a session of it may be moved to, with their projected loads.
type Destinations<'l> = HashMap<&'l str, Vec<(PortalId, &'l Projection)>>;

/// One possible move off a hot portal, with the figures of the driving metric.
#[derive(Debug, Clone)]
struct Candidate<'a> {
    session: &'a SessionEntry,
    share: Share,
    to: PortalId,
    /// The hot portal's load after the move.
    from_after: f64,
    /// What the move takes off the hot portal.
    taken: f64,
    /// The destination's load before and after the move.
    to_before: f64,
    to_after: f64,
    /// The destination as a whole after the move.
    to_projection: Projection,
    brings_under: bool,
    /// The initiator has another session to the same target on the hot portal.
    doubled: bool,
    /// When the initiator was last moved, if ever.
    last_moved: Option<u64>,
}

/// The balancer's memory between steps.
#[derive(Debug, Clone)]
pub struct Balancer {
    policy: BalancePolicy,
    /// A requested logout that has not happened after this long is forgotten.
    pending_timeout_ms: u64,
    /// (target, portal) registrations currently deleted, in deletion order.
    deleted: Vec<Deleted>,
    /// Last move per (initiator, target): when, and the portal it left.
    last_moved: LastMoved,
    /// Requested logouts by session id.
    pending: HashMap<u64, Pending>,
    /// Moves made recently, whose effect the smoothed figures do not show in full yet.
    settling: Vec<Settling>,
    /// Moves asked for, oldest first.
    history: Vec<MoveRecord>,
    /// Initiators an operator pinned at run time, besides the policy's.
    operator_pinned: Vec<String>,
}

impl Balancer {
    pub fn new(policy: BalancePolicy) -> Self {
        Balancer {
            policy,
            pending_timeout_ms: 15_000,
            deleted: Vec::new(),
            last_moved: HashMap::new(),
            pending: HashMap::new(),
            settling: Vec::new(),
            history: Vec::new(),
            operator_pinned: Vec::new(),
        }
    }

    /// Initiators an operator pinned (`portshift balance pin`): never moved, like the
    /// policy's pinned ones. Replaces the previous list.
    pub fn set_operator_pinned<I: IntoIterator<Item = String>>(&mut self, names: I) {
        self.operator_pinned.clear();
        self.operator_pinned.extend(names);
    }

    /// The policy the balancer runs.
    pub fn policy(&self) -> &BalancePolicy {
        &self.policy
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

    /// The moves asked for, oldest first (the last [`HISTORY_CAPACITY`] at least).
    pub fn history(&self) -> &[MoveRecord] {
        &self.history
    }

    /// The ping-pongs in [`Balancer::history`] under the policy's cooldown: always none.
    pub fn ping_pongs(&self) -> Vec<PingPong> {
        ping_pongs(&self.history, self.policy.cooldown_ms)
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

    /// Every portal's projected load and every initiator's projected placement: measured,
    /// with the sessions already asked to leave moved to their destinations.
    fn project<'t>(
        &self,
        table: &'t ConfigTable,
        now_ms: u64,
    ) -> (BTreeMap<PortalId, Projection>, Placements<'t>) {
        let mut loads: BTreeMap<PortalId, Projection> = table
            .portals
            .iter()
            .map(|p| (p.id, Projection::of(p)))
            .collect();
        let mut placements: Placements = HashMap::new();
        for row in &table.portals {
            for s in &row.sessions {
                let on = placements.entry(nexus(s)).or_default();
                *on.entry(row.id).or_default() += 1;
            }
        }
        for row in &table.portals {
            for s in &row.sessions {
                if let Some(p) = self.pending.get(&s.session_id)
                    && p.from == row.id
                {
                    loads.entry(p.from).or_default().remove(&p.share);
                    loads.entry(p.to).or_default().add(&p.share);
                    shift(&mut placements, s, p.from, p.to);
                }
            }
        }
        // Moves already made: what the smoothed rates have not caught up with yet.
        for m in &self.settling {
            let part = m.share.unsettled(
                now_ms.saturating_sub(m.done_ms),
                self.policy.smoothing_tau_ms,
            );
            let mut to = loads.remove(&m.to).unwrap_or_default();
            loads.entry(m.from).or_default().shift_rates(&mut to, &part);
            loads.insert(m.to, to);
        }
        (loads, placements)
    }

    /// The overloaded metric of `load` furthest above its HIGH (relative to HIGH), with its
    /// value; `None` when the portal is under every HIGH.
    fn hottest(&self, load: &Projection) -> Option<(BalanceSpec, f64)> {
        self.policy
            .specs
            .iter()
            .filter_map(|s| load.value(s.metric).map(|v| (*s, v)))
            .filter(|(s, v)| *v >= s.thresholds.high)
            .max_by(|a, b| (a.1 / a.0.thresholds.high).total_cmp(&(b.1 / b.0.thresholds.high)))
    }

    /// How loaded `load` is relative to the HIGHs: the largest load/HIGH over the metrics.
    fn pressure(&self, load: &Projection) -> f64 {
        self.policy
            .specs
            .iter()
            .filter_map(|s| load.value(s.metric).map(|v| v / s.thresholds.high))
            .fold(0.0, f64::max)
    }

    /// Whether `load` is under the HIGH of every configured metric it measures.
    fn under_every_high(&self, load: &Projection) -> bool {
        self.policy
            .specs
            .iter()
            .all(|s| load.value(s.metric).is_none_or(|v| v < s.thresholds.high))
    }

    /// When `s`'s initiator was last moved for its target, and from where.
    fn last_move(&self, s: &SessionEntry) -> Option<&(u64, PortalId)> {
        self.last_moved.get(&s.initiator)?.get(&s.target)
    }

    /// Whether session `s` may be moved at `now_ms` at all.
    fn movable(&self, s: &SessionEntry, now_ms: u64) -> bool {
        !self.pending.contains_key(&s.session_id)
            && !self.policy.is_pinned(&s.initiator)
            && !self
                .operator_pinned
                .iter()
                .any(|p| p.eq_ignore_ascii_case(&s.initiator))
            && (self.policy.move_reservation_holders || !s.holds_reservation)
            && self
                .last_move(s)
                .is_none_or(|(t, _)| now_ms.saturating_sub(*t) >= self.policy.cooldown_ms)
    }

    /// The best move of `s` off the hot portal `row` for the driving `spec`, if any portal
    /// can take it.
    #[allow(clippy::too_many_arguments)]
    fn candidate<'a>(
        &self,
        dests: &Destinations<'_>,
        row: &PortalRow,
        s: &'a SessionEntry,
        spec: &BalanceSpec,
        loads: &BTreeMap<PortalId, Projection>,
        placements: &Placements<'_>,
        now_ms: u64,
    ) -> Option<Candidate<'a>> {
        let metric = spec.metric;
        let high = spec.thresholds.high;
        let share = Share::of(s, row);
        let from_load = loads.get(&row.id).cloned().unwrap_or_default();
        let before = from_load.value(metric)?;
        let from_after = from_load.without(&share).value(metric)?;
        let taken = (before - from_after).max(0.0);
        if taken < MIN_RELIEF * high {
            // Its share is negligible or not measured yet (a session that just logged in):
            // moving it would interrupt it and relieve nothing.
            return None;
        }
        let key = nexus(s);
        // The portal this initiator left less than twice the cooldown ago.
        let left = self
            .last_move(s)
            .filter(|(t, _)| now_ms.saturating_sub(*t) < self.policy.cooldown_ms.saturating_mul(2))
            .map(|(_, from)| *from);
        let on = placements.get(&key);
        let doubles_on = |p: PortalId| on.and_then(|m| m.get(&p)).is_some_and(|n| *n > 0);
        // The least pressed destination that stays under every HIGH, preferring one that
        // does not double the initiator's sessions there (multipath spread): one pass, no
        // allocation.
        let mut spread_best: Option<(PortalId, f64, Projection)> = None;
        let mut any_best: Option<(PortalId, f64, Projection)> = None;
        let better = |best: &Option<(PortalId, f64, Projection)>, p: PortalId, pr: f64| {
            best.as_ref()
                .is_none_or(|(bp, bpr, _)| pr.total_cmp(bpr).then(p.cmp(bp)).is_lt())
        };
        for (p, now) in dests.get(s.target.as_str()).into_iter().flatten() {
            if Some(*p) == left {
                continue;
            }
            let after = now.with(&share);
            if !self.under_every_high(&after) {
                continue;
            }
            let pr = self.pressure(&after);
            if !doubles_on(*p) && better(&spread_best, *p, pr) {
                spread_best = Some((*p, pr, after.clone()));
            }
            if better(&any_best, *p, pr) {
                any_best = Some((*p, pr, after));
            }
        }
        let (to, _, to_projection) = spread_best.or(any_best)?;
        let to_before = loads.get(&to).and_then(|l| l.value(metric)).unwrap_or(0.0);
        let to_after = to_projection.value(metric).unwrap_or(0.0);
        Some(Candidate {
            session: s,
            share,
            to,
            from_after,
            taken,
            to_before,
            to_after,
            to_projection,
            brings_under: from_after < high,
            doubled: on.and_then(|m| m.get(&row.id)).is_some_and(|n| *n > 1),
            last_moved: self.last_move(s).map(|(t, _)| *t),
        })
    }

    /// The switch priority between two candidates of the same class: the least disruptive
    /// first. Returns the ordering, the rank of the key that decided it (0 the first key) and
    /// its name with the figures.
    fn switch_order(&self, a: &Candidate, b: &Candidate) -> (std::cmp::Ordering, u8, String) {
        use std::cmp::Ordering::Equal;
        let o = b.doubled.cmp(&a.doubled);
        if o != Equal {
            return (o, 0, "a doubled multipath session".into());
        }
        let (oa, ob) = (a.session.outstanding, b.session.outstanding);
        let o = oa.cmp(&ob);
        if o != Equal {
            let (lo, hi) = (oa.min(ob), oa.max(ob));
            return (o, 1, format!("least outstanding I/O ({lo} < {hi})"));
        }
        // Never moved first, then the longest ago.
        let key = |c: &Candidate| c.last_moved.map_or(0, |t| t.saturating_add(1));
        let o = key(a).cmp(&key(b));
        if o != Equal {
            return (o, 2, "not recently moved".into());
        }
        let by_login = match self.policy.priority {
            SwitchPriority::NewestLogin => b.session.login_ms.cmp(&a.session.login_ms),
            SwitchPriority::OldestLogin => a.session.login_ms.cmp(&b.session.login_ms),
        };
        if by_login != Equal {
            return (by_login, 3, self.policy.priority.name().into());
        }
        let by_id = match self.policy.priority {
            SwitchPriority::NewestLogin => b.session.session_id.cmp(&a.session.session_id),
            SwitchPriority::OldestLogin => a.session.session_id.cmp(&b.session.session_id),
        };
        (
            by_id,
            4,
            format!("{} (session id)", self.policy.priority.name()),
        )
    }

    /// The move to make off the hot portal `row`, and the rule that chose it.
    #[allow(clippy::too_many_arguments)]
    fn choose<'a>(
        &self,
        table: &ConfigTable,
        served: &Served<'_>,
        row: &'a PortalRow,
        spec: &BalanceSpec,
        loads: &BTreeMap<PortalId, Projection>,
        placements: &Placements,
        now_ms: u64,
    ) -> Option<(Candidate<'a>, String)> {
        // Where each target of this portal's sessions may go: every other portal that serves
        // it, where it is registered, and where the driving metric is measured — worked out
        // once per target, not once per session.
        let mut dests: Destinations<'_> = HashMap::new();
        for s in &row.sessions {
            dests.entry(s.target.as_str()).or_insert_with(|| {
                table
                    .portals
                    .iter()
                    .filter(|p| p.id != row.id)
                    .filter(|p| served.contains(&(s.target.as_str(), p.id)))
                    .filter(|p| !self.is_deleted(&s.target, p.id))
                    .filter_map(|p| {
                        let l = loads.get(&p.id)?;
                        l.value(spec.metric).map(|_| (p.id, l))
                    })
                    .collect()
            });
        }
        let mut all: Vec<Candidate<'a>> = row
            .sessions
            .iter()
            .filter(|s| self.movable(s, now_ms))
            .filter_map(|s| self.candidate(&dests, row, s, spec, loads, placements, now_ms))
            .collect();
        let under = all.iter().any(|c| c.brings_under);
        if under {
            all.retain(|c| c.brings_under);
        }
        // Shares compared to a millionth of HIGH: two nominally equal shares that differ
        // by rounding leave the choice to the switch priority.
        let grain = |c: &Candidate| (c.taken / spec.thresholds.high * 1e6).round() as i64;
        all.sort_by(|a, b| {
            let by_share = if under {
                std::cmp::Ordering::Equal
            } else {
                grain(b).cmp(&grain(a))
            };
            by_share.then_with(|| self.switch_order(a, b).0)
        });
        let mut it = all.into_iter();
        let best = it.next()?;
        let rest: Vec<Candidate<'a>> = it.collect();
        let rule = if under {
            format!("brings {} under high", row.id)
        } else {
            "no single move brings it under high: the largest share that fits".to_string()
        };
        // What set the chosen move before every other: a larger share, or the switch
        // priority's keys that decided against each other candidate, in the keys' order.
        let mut keys: BTreeMap<u8, String> = BTreeMap::new();
        for c in &rest {
            if !under && grain(&best) != grain(c) {
                keys.entry(0).or_insert_with(|| {
                    format!("larger than the next ({})", spec.metric.format(c.taken))
                });
            } else {
                let (_, rank, name) = self.switch_order(&best, c);
                keys.entry(rank + 1).or_insert(name);
            }
        }
        let why = if keys.is_empty() {
            if under {
                "the only move that does".to_string()
            } else {
                "the only session that can move".to_string()
            }
        } else {
            keys.into_values().collect::<Vec<_>>().join(", ")
        };
        Some((best, format!("{rule}; {why}")))
    }

    /// One pass of the procedure at time `now_ms` (milliseconds, any monotonic origin).
    pub fn step(&mut self, table: &ConfigTable, now_ms: u64) -> Vec<Decision> {
        // Forget requests whose session left (the move happened) or that timed out.
        let live: HashSet<u64> = table
            .portals
            .iter()
            .flat_map(|p| p.sessions.iter().map(|s| s.session_id))
            .collect();
        let timeout = self.pending_timeout_ms;
        let mut done = Vec::new();
        self.pending.retain(|id, p| {
            let fresh = now_ms.saturating_sub(p.at_ms) < timeout;
            if fresh && !live.contains(id) {
                done.push(Settling {
                    from: p.from,
                    to: p.to,
                    share: p.share,
                    done_ms: now_ms,
                });
            }
            live.contains(id) && fresh
        });
        let settle_ms = SETTLE_TAUS * self.policy.smoothing_tau_ms;
        self.settling
            .retain(|m| now_ms.saturating_sub(m.done_ms) < settle_ms);
        self.settling.extend(done);

        let mut decisions = Vec::new();
        let (mut loads, mut placements) = self.project(table, now_ms);
        let served: Served<'_> = table.served.iter().map(|(t, p)| (t.as_str(), *p)).collect();
        let mut moves = 0;

        for row in &table.portals {
            while moves < self.policy.max_moves {
                let Some(load) = loads.get(&row.id) else {
                    break;
                };
                let Some((spec, value)) = self.hottest(load) else {
                    break;
                };
                let Some((c, rule)) =
                    self.choose(table, &served, row, &spec, &loads, &placements, now_ms)
                else {
                    break;
                };
                let reason = self.move_reason(&spec, value, row.id, &c, &rule);
                let s = c.session;
                let delete_registration = !self.is_deleted(&s.target, row.id);
                decisions.push(Decision::Move {
                    session_id: s.session_id,
                    initiator: s.initiator.clone(),
                    target: s.target.clone(),
                    from: row.id,
                    to: c.to,
                    delete_registration,
                    reason,
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
                        to: c.to,
                        share: c.share,
                        at_ms: now_ms,
                    },
                );
                self.last_moved
                    .entry(s.initiator.clone())
                    .or_default()
                    .insert(s.target.clone(), (now_ms, row.id));
                self.history.push(MoveRecord {
                    at_ms: now_ms,
                    initiator: s.initiator.clone(),
                    target: s.target.clone(),
                    from: row.id,
                    to: c.to,
                });
                if self.history.len() >= 2 * HISTORY_CAPACITY {
                    self.history.drain(..HISTORY_CAPACITY);
                }
                loads.entry(row.id).or_default().remove(&c.share);
                loads.insert(c.to, c.to_projection.clone());
                shift(&mut placements, s, row.id, c.to);
                moves += 1;
            }
        }

        // Restore registrations of portals whose load has fallen to the low threshold on every
        // metric, once they have been deleted for more than the cooldown.
        let mut kept = Vec::new();
        for d in std::mem::take(&mut self.deleted) {
            let load = loads.get(&d.portal).cloned().unwrap_or_default();
            let all_low = self
                .policy
                .specs
                .iter()
                .all(|s| load.value(s.metric).is_none_or(|v| v <= s.thresholds.low));
            let moving_out = self.pending.values().any(|p| p.from == d.portal);
            let held = d
                .at_ms
                .is_none_or(|at| now_ms.saturating_sub(at) > self.policy.cooldown_ms);
            if all_low && !moving_out && held {
                decisions.push(Decision::Restore {
                    reason: self.restore_reason(&load, d.portal, d.at_ms, now_ms),
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

    /// `bandwidth 93.0% ≥ 80.0% on P0; moves 41.0% of it (P0 → 52.0%); P1 12.0% → 53.0% <
    /// 80.0%; brings P0 under high; least outstanding I/O (0 < 3)`.
    fn move_reason(
        &self,
        spec: &BalanceSpec,
        value: f64,
        from: PortalId,
        c: &Candidate,
        rule: &str,
    ) -> String {
        let m = spec.metric;
        let high = spec.thresholds.high;
        let mut others = Vec::new();
        for s in &self.policy.specs {
            if s.metric == m {
                continue;
            }
            if let Some(v) = c.to_projection.value(s.metric) {
                others.push(format!(
                    "{} {} < {}",
                    s.metric,
                    s.metric.format(v),
                    s.metric.format(s.thresholds.high)
                ));
            }
        }
        let others = if others.is_empty() {
            String::new()
        } else {
            format!(" ({})", others.join(", "))
        };
        format!(
            "{m} {} ≥ {} on {from}; moves {} of it ({from} → {}); {} {} → {} < {}{others}; {rule}",
            m.format(value),
            m.format(high),
            m.format(c.taken),
            m.format(c.from_after),
            c.to,
            m.format(c.to_before),
            m.format(c.to_after),
            m.format(high),
        )
    }

    /// `every metric at or below low on P0: sessions 1 ≤ 1, bandwidth 31.0% ≤ 40.0%; deleted
    /// 12.0 s ago`.
    fn restore_reason(
        &self,
        load: &Projection,
        portal: PortalId,
        deleted_at: Option<u64>,
        now_ms: u64,
    ) -> String {
        let figures: Vec<String> = self
            .policy
            .specs
            .iter()
            .map(|s| match load.value(s.metric) {
                Some(v) => format!(
                    "{} {} ≤ {}",
                    s.metric,
                    s.metric.format(v),
                    s.metric.format(s.thresholds.low)
                ),
                None => format!("{} not measured", s.metric),
            })
            .collect();
        let held = match deleted_at {
            Some(at) => format!(
                "deleted {:.1} s ago",
                now_ms.saturating_sub(at) as f64 / 1000.0
            ),
            None => "retrying a failed restore".into(),
        };
        format!(
            "every metric at or below low on {portal}: {}; {held}",
            figures.join(", ")
        )
    }
}

/// Moves one session of `s`'s initiator and target from `from` to `to` in `placements`.
fn shift<'t>(placements: &mut Placements<'t>, s: &'t SessionEntry, from: PortalId, to: PortalId) {
    let on = placements.entry(nexus(s)).or_default();
    if let Some(n) = on.get_mut(&from) {
        *n = n.saturating_sub(1);
    }
    *on.entry(to).or_default() += 1;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metric::Metric;

    /// Bytes per second in a megabyte per second.
    const MB: f64 = 1e6;

    fn session(id: u64, init: &str, target: &str, login_ms: u64) -> SessionEntry {
        SessionEntry {
            session_id: id,
            initiator: init.into(),
            target: target.into(),
            login_ms,
            ..Default::default()
        }
    }

    /// A session of its own initiator `i{id}` to `t`, logged in at `id`.
    fn s(id: u64) -> SessionEntry {
        session(id, &format!("i{id}"), "t", id)
    }

    fn portal(id: u16, sessions: Vec<SessionEntry>) -> PortalRow {
        PortalRow {
            id: PortalId(id),
            address: format!("127.0.0.{}:3260", id + 1),
            processor: id as usize,
            sessions,
            load: Default::default(),
        }
    }

    /// A portal on a link of `cap_mb` MB/s each way, sending `sent_mb` and receiving
    /// `received_mb`.
    fn link(mut p: PortalRow, cap_mb: f64, sent_mb: f64, received_mb: f64) -> PortalRow {
        p.load.link_capacity = Some(cap_mb * MB);
        p.load.sent_bps = sent_mb * MB;
        p.load.received_bps = received_mb * MB;
        p
    }

    /// A portal whose processor ran `busy` and waited `wait` (fractions of one CPU).
    fn cpu(mut p: PortalRow, busy: f64, wait: f64) -> PortalRow {
        p.load.cpu_busy = busy;
        p.load.cpu_wait = wait;
        p
    }

    /// Every target of `targets` served through every portal.
    fn world(portals: Vec<PortalRow>, targets: &[&str]) -> ConfigTable {
        let mut served = Vec::new();
        for t in targets {
            for p in &portals {
                served.push((t.to_string(), p.id));
            }
        }
        ConfigTable { portals, served }
    }

    fn table(p0: Vec<SessionEntry>, p1: Vec<SessionEntry>, targets: &[&str]) -> ConfigTable {
        world(vec![portal(0, p0), portal(1, p1)], targets)
    }

    fn policy(args: &[&str]) -> BalancePolicy {
        BalancePolicy::parse(args).unwrap()
    }

    fn balancer(args: &[&str], cooldown_ms: u64) -> Balancer {
        Balancer::new(policy(args).with_cooldown_ms(cooldown_ms))
    }

    /// (session, from, to) of every move.
    fn moves(d: &[Decision]) -> Vec<(u64, u16, u16)> {
        d.iter()
            .filter_map(|d| match d {
                Decision::Move {
                    session_id,
                    from,
                    to,
                    ..
                } => Some((*session_id, from.0, to.0)),
                _ => None,
            })
            .collect()
    }

    fn reason(d: &Decision) -> &str {
        match d {
            Decision::Move { reason, .. } | Decision::Restore { reason, .. } => reason,
        }
    }

    // ---- sessions -------------------------------------------------------------------------

    #[test]
    fn moves_newest_session_off_hot_portal_then_restores() {
        let mut b = balancer(&["sessions:2"], 0);
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
                reason,
                ..
            } => {
                assert_eq!(*session_id, 3, "most recent login moves first");
                assert_eq!((*from, *to), (PortalId(0), PortalId(1)));
                assert!(*delete_registration);
                assert_eq!(
                    reason,
                    "sessions 3 ≥ 2 on P0; moves 1 of it (P0 → 2); P1 0 → 1 < 2; \
                     no single move brings it under high: the largest share that fits; newest login"
                );
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
                reason: "every metric at or below low on P0: sessions 1 ≤ 1; deleted 0.4 s ago"
                    .into()
            }]
        );
        assert!(b.deleted().is_empty());
    }

    #[test]
    fn sessions_a_move_that_brings_the_portal_under_high_is_made_and_then_no_more() {
        let mut b = balancer(&["sessions:3"], 0);
        let t = table(vec![s(1), s(2), s(3)], vec![], &["t"]);
        let d = b.step(&t, 0);
        assert_eq!(moves(&d), [(3, 0, 1)]);
        assert!(
            reason(&d[0]).contains(
                "sessions 3 ≥ 3 on P0; moves 1 of it (P0 → 2); P1 0 → 1 < 3; brings P0 under high"
            ),
            "{}",
            reason(&d[0])
        );
    }

    #[test]
    fn sessions_no_move_when_the_destination_would_reach_high() {
        let mut b = balancer(&["sessions:2"], 0);
        let t = table(vec![s(1), s(2), s(3)], vec![s(4)], &["t"]);
        assert!(b.step(&t, 0).is_empty());
        assert!(b.deleted().is_empty());
    }

    #[test]
    fn a_deleted_registration_is_held_for_the_cooldown() {
        let mut b = balancer(&["sessions:2"], 5_000);
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
        // Held for more than the cooldown: at 6,000 exactly (the balancer's one-second steps,
        // the cooldown a whole number of them) it is still held, and it comes back at the next
        // step, not on whichever side of the boundary the step's clock happens to fall.
        assert!(b.step(&moved, 2_000).is_empty());
        assert!(b.step(&moved, 6_000).is_empty());
        assert!(b.is_deleted("t2", PortalId(0)));
        assert!(matches!(
            &b.step(&moved, 6_001)[..],
            [Decision::Restore {
                portal: PortalId(0),
                ..
            }]
        ));
        // A failed restore is retried at the next step, without a new hold.
        b.registration_failed("t2", PortalId(0), false);
        let d = b.step(&moved, 6_100);
        assert_eq!(d.len(), 1);
        assert!(reason(&d[0]).ends_with("retrying a failed restore"));
    }

    #[test]
    fn never_deletes_the_last_registered_portal_of_a_target() {
        let mut b = balancer(&["sessions:1:0"], 0);
        // t1 is served only through P0: it cannot move anywhere.
        let mut t = table(vec![session(1, "i1", "t1", 1)], vec![], &[]);
        t.served = vec![("t1".into(), PortalId(0))];
        assert!(b.step(&t, 10).is_empty());
        assert!(b.deleted().is_empty());
    }

    #[test]
    fn cooldown_keeps_an_initiator_in_place() {
        // i3 is moved at 0 and comes straight back to P0 as a new session (say, an initiator
        // that ignores the redirect). At 600 ms, within a 10 s cooldown it stays; without a
        // cooldown it may move, but one never moved goes first (i2); with i1 and i2 pinned it
        // is i3 or nobody.
        for (cooldown, pin, expected) in [
            (10_000, false, Some(2)),
            (0, false, Some(2)),
            (10_000, true, None),
            (0, true, Some(9)),
        ] {
            let mut p = policy(&["sessions:3"]).with_cooldown_ms(cooldown);
            if pin {
                p = p.with_pinned(["i1", "i2"]);
            }
            let mut b = Balancer::new(p);
            let t = table(
                vec![
                    session(1, "i1", "t1", 1),
                    session(2, "i2", "t2", 2),
                    session(3, "i3", "t3", 3),
                ],
                vec![],
                &["t1", "t2", "t3"],
            );
            assert_eq!(moves(&b.step(&t, 0)), [(3, 0, 1)]);
            let t = table(
                vec![
                    session(1, "i1", "t1", 1),
                    session(2, "i2", "t2", 2),
                    session(9, "i3", "t3", 500),
                ],
                vec![],
                &["t1", "t2", "t3"],
            );
            let d = b.step(&t, 600);
            assert_eq!(
                moves(&d).first().map(|m| m.0),
                expected,
                "cooldown {cooldown} pin {pin}"
            );
            if cooldown == 0 && !pin {
                assert!(reason(&d[0]).contains("not recently moved"), "{d:?}");
            }
            assert!(b.ping_pongs().is_empty());
        }
    }

    #[test]
    fn pending_logout_expires_when_the_session_ignores_it() {
        // i1 is pinned: i2 is the only session that may move.
        let mut b = Balancer::new(policy(&["sessions:2"]).with_pinned(["i1"]));
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
    fn several_moves_per_step_up_to_the_cap() {
        // sessions:3 with 8 sessions on P0 and three empty portals: P0 needs six moves to get
        // under 3; the cap allows four by default, two when set so.
        let hot = || {
            world(
                vec![
                    portal(0, (1..=8).map(s).collect()),
                    portal(1, vec![]),
                    portal(2, vec![]),
                    portal(3, vec![]),
                ],
                &["t"],
            )
        };
        let mut b = balancer(&["sessions:3"], 0);
        let d = moves(&b.step(&hot(), 0));
        assert_eq!(d.len(), 4, "{d:?}");
        // Newest first, spread over the least loaded destinations.
        assert_eq!(d, [(8, 0, 1), (7, 0, 2), (6, 0, 3), (5, 0, 1)]);
        // The next step, with the four still pending, makes the last two.
        let d = moves(&b.step(&hot(), 1));
        assert_eq!(d, [(4, 0, 2), (3, 0, 3)]);
        assert!(b.step(&hot(), 2).is_empty(), "P0 is projected under high");

        let mut b = Balancer::new(policy(&["sessions:3"]).with_max_moves(2).unwrap());
        assert_eq!(moves(&b.step(&hot(), 0)).len(), 2);
    }

    // ---- iops -----------------------------------------------------------------------------

    fn busy(mut s: SessionEntry, iops: f64, outstanding: u32) -> SessionEntry {
        s.iops = iops;
        s.outstanding = outstanding;
        s
    }

    #[test]
    fn iops_prefers_a_move_that_brings_the_portal_under_high() {
        let mut b = balancer(&["iops:1000:500"], 0);
        // 1250 IOPS: moving 900 or 300 brings P0 under 1000, moving 50 does not, though the
        // 50-IOPS session is the newest and has nothing outstanding.
        let t = table(
            vec![
                busy(s(1), 900.0, 4),
                busy(s(2), 300.0, 2),
                busy(s(3), 50.0, 0),
            ],
            vec![],
            &["t"],
        );
        let d = b.step(&t, 0);
        assert_eq!(moves(&d), [(2, 0, 1)]);
        assert_eq!(
            reason(&d[0]),
            "iops 1250 ≥ 1000 on P0; moves 300 of it (P0 → 950); P1 0 → 300 < 1000; \
             brings P0 under high; least outstanding I/O (2 < 4)"
        );
    }

    #[test]
    fn iops_falls_back_to_the_largest_share_that_fits() {
        let mut b = balancer(&["iops:1000:500"], 0);
        let mut pinned = busy(s(4), 600.0, 0);
        pinned.initiator = "pinned".into();
        let mut b2 = Balancer::new(b.policy().clone().with_pinned(["pinned"]));
        // P0 1200: only the 300 would bring it under, and it does not fit on P1 (750 + 300).
        // The 200 fits (P1 950) and is the largest that does; then nothing else fits.
        let t = table(
            vec![
                busy(s(1), 300.0, 0),
                busy(s(2), 200.0, 5),
                busy(s(3), 100.0, 0),
                pinned,
            ],
            vec![busy(s(9), 750.0, 0)],
            &["t"],
        );
        let d = b2.step(&t, 0);
        assert_eq!(moves(&d), [(2, 0, 1)]);
        assert!(
            reason(&d[0]).starts_with(
                "iops 1200 ≥ 1000 on P0; moves 200 of it (P0 → 1000); P1 750 → 950 < 1000; \
                 no single move brings it under high: the largest share that fits; larger than the next (100)"
            ),
            "{}",
            reason(&d[0])
        );
        // Without the pin the 600 would be the largest that brings P0 under, but it does not
        // fit on P1 either (1350): the same move.
        assert_eq!(moves(&b.step(&t, 0)), [(2, 0, 1)]);
    }

    #[test]
    fn iops_no_move_when_the_destination_would_overflow() {
        let mut b = balancer(&["iops:1000:500"], 0);
        let t = table(
            vec![busy(s(1), 600.0, 0), busy(s(2), 600.0, 0)],
            vec![busy(s(3), 500.0, 0)],
            &["t"],
        );
        assert!(b.step(&t, 0).is_empty());
    }

    // ---- bandwidth ------------------------------------------------------------------------

    fn reading(mut s: SessionEntry, read_mb: f64, write_mb: f64) -> SessionEntry {
        s.read_bps = read_mb * MB;
        s.write_bps = write_mb * MB;
        s
    }

    #[test]
    fn bandwidth_never_moves_a_host_onto_a_link_where_it_would_be_over_high() {
        let mut b = balancer(&["bandwidth:80%:50%"], 0);
        // P0: a 125 MB/s link sending 110 (88%). P1: 125 MB/s at 64%, the least utilised, but
        // any of P0's readers would take it to 80% or more. P2: 1250 MB/s at 72%: 20 MB/s is
        // 1.6% of it.
        let t = world(
            vec![
                link(
                    portal(
                        0,
                        vec![
                            reading(s(1), 60.0, 1.0),
                            reading(s(2), 30.0, 1.0),
                            reading(s(3), 20.0, 1.0),
                        ],
                    ),
                    125.0,
                    110.0,
                    3.0,
                ),
                link(portal(1, vec![]), 125.0, 80.0, 10.0),
                link(portal(2, vec![]), 1250.0, 900.0, 10.0),
            ],
            &["t"],
        );
        let d = b.step(&t, 0);
        assert_eq!(moves(&d), [(3, 0, 2)]);
        assert_eq!(
            reason(&d[0]),
            "bandwidth 88.0% ≥ 80.0% on P0; moves 16.0% of it (P0 → 72.0%); \
             P2 72.0% → 73.6% < 80.0%; brings P0 under high; newest login"
        );
    }

    #[test]
    fn bandwidth_falls_back_to_the_largest_share_that_fits() {
        let mut b = balancer(&["bandwidth:80%"], 0);
        // P0 at 96%: only the 50 MB/s reader would bring it under 80%, and P1 (56%) cannot
        // take it (96%). The 10 MB/s one fits (64%), then the 8 MB/s one (70.4%).
        let t = world(
            vec![
                link(
                    portal(
                        0,
                        vec![
                            reading(s(1), 50.0, 0.0),
                            reading(s(2), 10.0, 0.0),
                            reading(s(3), 8.0, 0.0),
                        ],
                    ),
                    125.0,
                    120.0,
                    1.0,
                ),
                link(portal(1, vec![]), 125.0, 70.0, 1.0),
            ],
            &["t"],
        );
        let d = b.step(&t, 0);
        assert_eq!(moves(&d), [(2, 0, 1), (3, 0, 1)]);
        assert!(
            reason(&d[0]).contains("moves 8.0% of it (P0 → 88.0%); P1 56.0% → 64.0% < 80.0%; no single move brings it under high: the largest share that fits"),
            "{}",
            reason(&d[0])
        );
    }

    #[test]
    fn bandwidth_no_move_when_the_destination_would_overflow_and_full_duplex_counts() {
        let mut b = balancer(&["bandwidth:80%"], 0);
        // A writer (the target receives 30 MB/s): P1 sends little but receives 75 of 125 MB/s;
        // 105 received would be 84%, over high, though sent + received is not the measure.
        let t = world(
            vec![
                link(
                    portal(0, vec![reading(s(1), 0.0, 30.0), reading(s(2), 0.0, 80.0)]),
                    125.0,
                    1.0,
                    110.0,
                ),
                link(portal(1, vec![]), 125.0, 5.0, 75.0),
            ],
            &["t"],
        );
        assert!(b.step(&t, 0).is_empty());
        // With 65 received on P1, 95 is 76%: the writer moves. The sum of both ways (100)
        // would have been 80%.
        let mut t = t;
        t.portals[1].load.received_bps = 65.0 * MB;
        t.portals[1].load.sent_bps = 5.0 * MB;
        assert_eq!(moves(&b.step(&t, 0)), [(1, 0, 1)]);
    }

    #[test]
    fn bandwidth_is_not_judged_without_a_link_capacity() {
        let mut b = balancer(&["bandwidth:80%"], 0);
        let mut t = table(vec![reading(s(1), 500.0, 0.0), s(2)], vec![], &["t"]);
        t.portals[0].load.sent_bps = 500.0 * MB;
        assert!(b.step(&t, 0).is_empty());
    }

    // ---- cpu ------------------------------------------------------------------------------

    fn costly(mut s: SessionEntry, cpu_share: f64, outstanding: u32) -> SessionEntry {
        s.cpu_share = cpu_share;
        s.outstanding = outstanding;
        s
    }

    #[test]
    fn cpu_moves_the_sessions_processor_cost_in_absolute_terms() {
        let mut b = balancer(&["cpu:90%:45%"], 0);
        // P0's processor ran 0.9 of a CPU and waited 0.3: demand 1.2. Costs: 0.6, 0.36, 0.24.
        // P1 at 0.5: the 0.6 does not fit (1.1); the 0.36 brings P0 to 0.84 and P1 to 0.86;
        // the 0.24 fits but leaves P0 at 0.96.
        let t = world(
            vec![
                cpu(
                    portal(
                        0,
                        vec![
                            costly(s(1), 0.5, 0),
                            costly(s(2), 0.3, 3),
                            costly(s(3), 0.2, 0),
                        ],
                    ),
                    0.9,
                    0.3,
                ),
                cpu(portal(1, vec![]), 0.5, 0.0),
            ],
            &["t"],
        );
        let d = b.step(&t, 0);
        assert_eq!(moves(&d), [(2, 0, 1)]);
        assert_eq!(
            reason(&d[0]),
            "cpu 120.0% ≥ 90.0% on P0; moves 36.0% of it (P0 → 84.0%); P1 50.0% → 86.0% < 90.0%; \
             brings P0 under high; the only move that does"
        );
    }

    #[test]
    fn cpu_ties_are_broken_by_the_switch_priority() {
        let mut b = balancer(&["cpu:90%"], 0);
        // Demand 1.0, both sessions cost 0.3 and bring P0 to 0.7; the one with less
        // outstanding I/O goes, though it is the older login.
        let t = world(
            vec![
                cpu(
                    portal(0, vec![costly(s(1), 0.3, 1), costly(s(2), 0.3, 7)]),
                    1.0,
                    0.0,
                ),
                cpu(portal(1, vec![]), 0.1, 0.0),
            ],
            &["t"],
        );
        let d = b.step(&t, 0);
        assert_eq!(moves(&d), [(1, 0, 1)]);
        assert!(reason(&d[0]).ends_with("least outstanding I/O (1 < 7)"));
    }

    #[test]
    fn cpu_no_move_when_the_destination_would_overflow() {
        let mut b = balancer(&["cpu:90%"], 0);
        let t = world(
            vec![
                cpu(
                    portal(0, vec![costly(s(1), 0.1, 0), costly(s(2), 0.9, 0)]),
                    1.0,
                    0.0,
                ),
                cpu(portal(1, vec![]), 0.85, 0.0),
            ],
            &["t"],
        );
        assert!(b.step(&t, 0).is_empty());
    }

    #[test]
    fn cpu_largest_share_that_fits() {
        let mut b = balancer(&["cpu:50%:20%"], 0);
        // Demand 0.9: no single move brings P0 under 0.5 (the 0.45 would, but P1 at 0.3 cannot
        // take it); of 0.15 and 0.09 the larger fits.
        let t = world(
            vec![
                cpu(
                    portal(
                        0,
                        vec![
                            costly(s(1), 0.5, 0),
                            costly(s(2), 1.0 / 6.0, 9),
                            costly(s(3), 0.1, 0),
                        ],
                    ),
                    0.9,
                    0.0,
                ),
                cpu(portal(1, vec![]), 0.3, 0.0),
            ],
            &["t"],
        );
        let d = b.step(&t, 0);
        assert_eq!(moves(&d)[0], (2, 0, 1));
        assert!(reason(&d[0]).contains("the largest share that fits"));
    }

    // ---- several metrics ------------------------------------------------------------------

    #[test]
    fn any_metric_at_high_overloads_a_portal() {
        let mut b = balancer(&["sessions:10", "bandwidth:80%"], 0);
        let t = world(
            vec![
                link(
                    portal(0, vec![reading(s(1), 60.0, 0.0), reading(s(2), 50.0, 0.0)]),
                    125.0,
                    110.0,
                    0.0,
                ),
                link(portal(1, vec![]), 125.0, 0.0, 0.0),
            ],
            &["t"],
        );
        let d = b.step(&t, 0);
        assert_eq!(moves(&d), [(2, 0, 1)]);
        assert!(
            reason(&d[0]).starts_with("bandwidth 88.0% ≥ 80.0% on P0;")
                && reason(&d[0]).contains("(sessions 1 < 10)"),
            "{}",
            reason(&d[0])
        );
        // With bandwidth alone under high, the same table is left alone.
        let mut calm = balancer(&["sessions:10", "bandwidth:90%"], 0);
        assert!(calm.step(&t, 0).is_empty());
    }

    #[test]
    fn the_destination_stays_under_every_high() {
        // P0 is hot on IOPS. P1 has the fewest IOPS but two sessions: a third would reach the
        // sessions high. P2 has one session (of another target) at 900 IOPS: 950 is under
        // both highs. No move brings P0 under 1000 (the 1100 fits nowhere): the 50 goes to P2.
        let t = |p2_iops: f64| {
            let mut t = world(
                vec![
                    portal(0, vec![busy(s(1), 1100.0, 0), busy(s(2), 50.0, 0)]),
                    portal(1, vec![busy(s(3), 10.0, 0), busy(s(5), 10.0, 0)]),
                    portal(2, vec![busy(session(4, "other", "u", 0), p2_iops, 0)]),
                ],
                &["t"],
            );
            t.served.push(("u".into(), PortalId(2)));
            t
        };
        let mut b = balancer(&["sessions:3", "iops:1000"], 0);
        let d = b.step(&t(900.0), 0);
        assert_eq!(moves(&d), [(2, 0, 2)]);
        assert!(
            reason(&d[0]).contains("P2 900 → 950 < 1000 (sessions 2 < 3)"),
            "{}",
            reason(&d[0])
        );
        // At 960 IOPS P2 would reach 1010: no portal stays under both highs, nothing moves.
        let mut b = balancer(&["sessions:3", "iops:1000"], 0);
        assert!(b.step(&t(960.0), 0).is_empty());
    }

    #[test]
    fn registrations_come_back_only_when_every_metric_is_low() {
        let mut b = balancer(&["sessions:3:1", "iops:1000:500"], 0);
        let t = table(
            vec![
                busy(s(1), 400.0, 0),
                busy(s(2), 400.0, 0),
                busy(s(3), 400.0, 0),
            ],
            vec![],
            &["t"],
        );
        assert_eq!(moves(&b.step(&t, 0)).len(), 1);
        // Moved: P0 has one session (low) but 800 IOPS (above low 500): held.
        let moved = table(
            vec![busy(s(1), 800.0, 0)],
            vec![busy(s(4), 400.0, 0)],
            &["t"],
        );
        assert!(b.step(&moved, 1_000).is_empty());
        assert!(b.is_deleted("t", PortalId(0)));
        let mut quiet = moved.clone();
        quiet.portals[0].sessions[0].iops = 500.0;
        let d = b.step(&quiet, 2_000);
        assert_eq!(
            d,
            [Decision::Restore {
                target: "t".into(),
                portal: PortalId(0),
                reason: "every metric at or below low on P0: sessions 1 ≤ 1, iops 500 ≤ 500; \
                         deleted 2.0 s ago"
                    .into()
            }]
        );
    }

    // ---- who moves, under every metric ----------------------------------------------------

    /// The `--balance` spec of a measured metric in the tests that run under every metric:
    /// its HIGH is 100 load units of [`loaded`].
    fn measured_spec(metric: Metric) -> &'static str {
        match metric {
            Metric::Iops => "iops:1000",
            Metric::Bandwidth => "bandwidth:80%",
            Metric::Cpu => "cpu:90%",
            Metric::Sessions => unreachable!("sessions are counted, not measured"),
        }
    }

    /// The `--balance` spec of `metric` in the tests that run under every metric: `sessions`
    /// with the HIGH the case needs, a measured metric at 100 load units.
    fn spec_for(metric: Metric, sessions_high: u32) -> String {
        match metric {
            Metric::Sessions => format!("sessions:{sessions_high}"),
            _ => measured_spec(metric).into(),
        }
    }

    /// Portals P0, P1, … serving `t`, each with its sessions and their load under `metric` in
    /// units of 1% of the HIGH of [`measured_spec`]: 10 IOPS, 1 MB/s read on a 125 MB/s link,
    /// or 0.009 of a CPU. A portal's measured load is the sum of its sessions'. Under
    /// `sessions` the units are ignored: each session counts one.
    fn loaded(metric: Metric, portals: Vec<Vec<(SessionEntry, f64)>>) -> ConfigTable {
        let rows = portals
            .into_iter()
            .enumerate()
            .map(|(i, sessions)| {
                let total: f64 = sessions.iter().map(|(_, units)| units).sum();
                let sessions = sessions
                    .into_iter()
                    .map(|(mut s, units)| match metric {
                        Metric::Sessions => s,
                        Metric::Iops => {
                            s.iops = 10.0 * units;
                            s
                        }
                        Metric::Bandwidth => reading(s, units, 0.0),
                        Metric::Cpu => {
                            s.cpu_share = if total > 0.0 { units / total } else { 0.0 };
                            s
                        }
                    })
                    .collect();
                let p = portal(i as u16, sessions);
                match metric {
                    Metric::Sessions | Metric::Iops => p,
                    Metric::Bandwidth => link(p, 125.0, total, 0.0),
                    Metric::Cpu => cpu(p, 0.009 * total, 0.0),
                }
            })
            .collect();
        world(rows, &["t"])
    }

    /// Asserts that `d` makes exactly `expected` moves and that the first one's reason ends
    /// with `why`; `context` names the case in the message.
    fn assert_moves_and_why(
        d: &[Decision],
        expected: &[(u64, u16, u16)],
        why: &str,
        context: &str,
    ) {
        assert_eq!(moves(d), expected, "{context}");
        assert!(reason(&d[0]).ends_with(why), "{context}: {}", reason(&d[0]));
    }

    /// `s` with `n` SCSI commands outstanding.
    fn outstanding(mut s: SessionEntry, n: u32) -> SessionEntry {
        s.outstanding = n;
        s
    }

    /// P0 under `metric` with `first` and `second` at 60 units each (either move brings it
    /// under high, as under `sessions:2`), P1 empty.
    fn two_equal_sessions_on_p0(
        metric: Metric,
        first: SessionEntry,
        second: SessionEntry,
    ) -> ConfigTable {
        loaded(metric, vec![vec![(first, 60.0), (second, 60.0)], vec![]])
    }

    #[test]
    fn a_session_that_takes_nothing_is_not_moved() {
        for metric in [Metric::Iops, Metric::Bandwidth, Metric::Cpu] {
            let spec = measured_spec(metric);
            // P0 at 120 units; the only movable session (1) has no measured load yet (it just
            // logged in): moving it would interrupt it and relieve nothing. Nothing moves and
            // no registration is deleted.
            let only = loaded(metric, vec![vec![(s(1), 0.0), (s(2), 120.0)], vec![]]);
            let mut b = Balancer::new(policy(&[spec]).with_pinned(["i2"]));
            assert!(b.step(&only, 0).is_empty(), "{}", metric.name());
            assert!(b.deleted().is_empty(), "{}", metric.name());
        }
    }

    #[test]
    fn shares_equal_but_for_rounding_leave_the_choice_to_the_switch_priority() {
        // Two shares of a third of 180 units each, one a rounding error larger: neither move
        // brings P0 under high (it stays at 120), so the larger share would win; they are the
        // same share, so the least outstanding I/O decides.
        let third = 60.0;
        for metric in [Metric::Iops, Metric::Bandwidth, Metric::Cpu] {
            let t = loaded(
                metric,
                vec![
                    vec![
                        (outstanding(s(1), 0), third * (1.0 + 1e-12)),
                        (outstanding(s(2), 0), third),
                        (outstanding(s(3), 5), third),
                    ],
                    vec![(s(4), 10.0)],
                ],
            );
            let d = balancer(&[measured_spec(metric)], 0).step(&t, 0);
            let first = moves(&d)[0];
            assert_eq!(first.1, 0, "{}", metric.name());
            assert_ne!(
                first.0,
                3,
                "{}: more outstanding I/O moved first",
                metric.name()
            );
            assert!(
                !reason(&d[0]).contains("larger than the next"),
                "{}: {}",
                metric.name(),
                reason(&d[0])
            );
        }
    }

    #[test]
    fn multipath_sessions_are_spread_not_piled() {
        // Initiator m has two sessions (ISIDs) to t on P0 and one on P1. x (3) is the newest
        // login with nothing outstanding: without the preference for a doubled session it
        // would go. Every move brings P0 under high (3 sessions under sessions:3; 105 units,
        // the smallest share 30). P1 is the least loaded destination but already carries m.
        let m = |id: u64, units: f64| (outstanding(session(id, "m", "t", id), 3), units);
        let hot = || vec![m(1, 30.0), m(2, 30.0), (s(3), 45.0)];
        for metric in Metric::ALL {
            let spec = spec_for(metric, 3);
            let t = loaded(metric, vec![hot(), vec![m(4, 10.0)], vec![(s(5), 20.0)]]);
            let d = balancer(&[spec.as_str()], 0).step(&t, 0);
            assert_moves_and_why(
                &d,
                &[(2, 0, 2)],
                "brings P0 under high; a doubled multipath session, newest login",
                metric.name(),
            );
            // When the only portal that fits already carries m, the session goes there: P2
            // (two sessions, 90 units) cannot take another.
            let t = loaded(
                metric,
                vec![hot(), vec![m(4, 10.0)], vec![(s(5), 45.0), (s(6), 45.0)]],
            );
            let d = balancer(&[spec.as_str()], 0).step(&t, 0);
            assert_eq!(moves(&d), [(2, 0, 1)], "{metric}");
        }
    }

    #[test]
    fn reservation_holders_stay_unless_allowed() {
        // i2 (2) holds a reservation and is the newest login: it would go first.
        for metric in Metric::ALL {
            let spec = spec_for(metric, 2);
            let mut holder = s(2);
            holder.holds_reservation = true;
            let t = two_equal_sessions_on_p0(metric, s(1), holder);
            let mut b = balancer(&[spec.as_str()], 0);
            assert_eq!(moves(&b.step(&t, 0)), [(1, 0, 1)], "{metric}");
            let mut b =
                Balancer::new(policy(&[spec.as_str()]).with_reservation_holders_movable(true));
            assert_eq!(moves(&b.step(&t, 0)), [(2, 0, 1)], "{metric}");
            // Nobody else to move: nothing moves.
            let mut only = t.clone();
            only.portals[0].sessions[0].holds_reservation = true;
            let mut b = balancer(&[spec.as_str()], 0);
            assert!(b.step(&only, 0).is_empty(), "{metric}");
            assert!(b.deleted().is_empty(), "{metric}");
        }
    }

    #[test]
    fn pinned_initiators_are_never_moved() {
        // i2 (2) is the newest login: it would go first. Pins ignore ASCII case.
        for metric in Metric::ALL {
            let spec = spec_for(metric, 2);
            let t = two_equal_sessions_on_p0(metric, s(1), s(2));
            let mut b = Balancer::new(policy(&[spec.as_str()]).with_pinned(["I2"]));
            assert_eq!(moves(&b.step(&t, 0)), [(1, 0, 1)], "{metric}");
            let mut b = Balancer::new(policy(&[spec.as_str()]).with_pinned(["i1", "i2"]));
            assert!(b.step(&t, 0).is_empty(), "{metric}");
            assert!(b.deleted().is_empty(), "{metric}");
        }
    }

    #[test]
    fn a_move_that_brings_the_portal_under_high_is_preferred_under_every_measured_metric() {
        // Not under sessions: every share is one session, so every move brings P0 under high
        // or none does (sessions_a_move_that_brings_the_portal_under_high_is_made_…).
        for metric in [Metric::Iops, Metric::Bandwidth, Metric::Cpu] {
            // P0 at 110 units: moving 72 or 30 brings it under 100, moving 8 does not, though
            // the 8 is the newest login with nothing outstanding. Between the two that do the
            // share does not count: the 30, with less outstanding I/O, goes (to P1, 10 → 40).
            let t = loaded(
                metric,
                vec![
                    vec![
                        (outstanding(s(1), 5), 72.0),
                        (outstanding(s(2), 2), 30.0),
                        (s(3), 8.0),
                    ],
                    vec![(s(4), 10.0)],
                ],
            );
            let d = balancer(&[measured_spec(metric)], 0).step(&t, 0);
            assert_moves_and_why(
                &d,
                &[(2, 0, 1)],
                "brings P0 under high; least outstanding I/O (2 < 5)",
                metric.name(),
            );
        }
    }

    #[test]
    fn switch_priority_breaks_ties_under_every_metric() {
        // a (1) and b (2) put the same load on P0; c (9), a reservation holder of initiator m,
        // stays. In the first class every move brings P0 under high (3 sessions under
        // sessions:3; a and b 60 units each, c none); in the second none does (3 sessions
        // under sessions:2; 10, 10 and 95 units) and a and b are the largest share that fits.
        // Each row sets the key that decides; b is ahead on every later key.
        let classes = [
            (3, 60.0, 0.0, "brings P0 under high"),
            (2, 10.0, 95.0, "the largest share that fits"),
        ];
        use SwitchPriority::{NewestLogin, OldestLogin};
        let rows = [
            // (priority, a, b, b's initiator was moved before, who moves, the key)
            (
                NewestLogin,
                outstanding(session(1, "m", "t", 1), 5),
                s(2),
                false,
                1,
                "a doubled multipath session",
            ),
            (
                NewestLogin,
                outstanding(s(1), 1),
                outstanding(s(2), 7),
                false,
                1,
                "least outstanding I/O (1 < 7)",
            ),
            (NewestLogin, s(1), s(2), true, 1, "not recently moved"),
            (NewestLogin, s(1), s(2), false, 2, "newest login"),
            (OldestLogin, s(1), s(2), false, 1, "oldest login"),
            (
                NewestLogin,
                session(1, "i1", "t", 5),
                session(2, "i2", "t", 5),
                false,
                2,
                "newest login (session id)",
            ),
            (
                OldestLogin,
                session(1, "i1", "t", 5),
                session(2, "i2", "t", 5),
                false,
                1,
                "oldest login (session id)",
            ),
        ];
        for metric in Metric::ALL {
            for (sessions_high, units, holder_units, rule) in classes {
                let on_p0 = |a: SessionEntry, b: SessionEntry| {
                    let mut c = session(9, "m", "t", 0);
                    c.holds_reservation = true;
                    loaded(
                        metric,
                        vec![vec![(a, units), (b, units), (c, holder_units)], vec![]],
                    )
                };
                for (priority, a, b, b_moved_before, winner, key) in rows.clone() {
                    // One move a step, and rates exact at once: a move made earlier leaves
                    // nothing on the figures.
                    let p = policy(&[spec_for(metric, sessions_high).as_str()])
                        .with_priority(priority)
                        .with_max_moves(1)
                        .unwrap()
                        .with_smoothing_tau_ms(0);
                    let mut bal = Balancer::new(p);
                    let mut b = b;
                    if b_moved_before {
                        // b's initiator is moved off P0 (a has more outstanding) and logs in
                        // there again as session 3, the newest login.
                        let d = bal.step(&on_p0(outstanding(a.clone(), 9), b.clone()), 0);
                        assert_eq!(moves(&d), [(b.session_id, 0, 1)], "{metric} {key}");
                        b = session(3, &b.initiator, "t", 3);
                    }
                    let d = bal.step(&on_p0(a, b), 1_000);
                    assert_moves_and_why(
                        &d,
                        &[(winner, 0, 1)],
                        &format!("{rule}; {key}"),
                        &format!("{metric}, {rule}, {key}"),
                    );
                }
            }
        }
    }

    // ---- who moves ------------------------------------------------------------------------

    #[test]
    fn oldest_login_first_when_configured() {
        let t = table(vec![s(1), s(2)], vec![], &["t"]);
        let mut b =
            Balancer::new(policy(&["sessions:2"]).with_priority(SwitchPriority::OldestLogin));
        let d = b.step(&t, 0);
        assert_eq!(moves(&d), [(1, 0, 1)]);
        assert!(reason(&d[0]).ends_with("oldest login"));
    }

    // ---- no ping-pong ---------------------------------------------------------------------

    #[test]
    fn never_moved_back_to_the_portal_it_left_within_twice_the_cooldown() {
        let cooldown = 10_000;
        let mut b = balancer(&["sessions:2"], cooldown);
        // At 0, i2 is moved P0 → P1 (P2, at one session, cannot take another).
        let start = world(
            vec![
                portal(0, vec![s(1), s(2)]),
                portal(1, vec![]),
                portal(2, vec![s(8)]),
            ],
            &["t"],
        );
        assert_eq!(moves(&b.step(&start, 0)), [(2, 0, 1)]);
        // Then P1 is hot: i2 (its new session 3) and a reservation holder that stays put.
        let later = |p2: Vec<SessionEntry>| {
            let mut holder = s(4);
            holder.holds_reservation = true;
            world(
                vec![
                    portal(0, vec![]),
                    portal(1, vec![session(3, "i2", "t", 100), holder]),
                    portal(2, p2),
                ],
                &["t"],
            )
        };
        // At 9 s i2 is in its cooldown: it stays though P2 is empty.
        assert!(moves(&b.step(&later(vec![]), 9_000)).is_empty());
        // At 12 s the (t, P0) registration comes back (P0 is empty).
        let d = b.step(&later(vec![s(8)]), 12_000);
        assert!(
            matches!(
                &d[..],
                [Decision::Restore {
                    portal: PortalId(0),
                    ..
                }]
            ),
            "{d:?}"
        );
        // From 13 s i2 may move, and P0 is empty and registered, but it is the portal i2 left
        // less than 20 s ago: it stays, or goes to P2 when P2 can take it, though P0 comes
        // first among equally loaded portals.
        let mut b2 = b.clone();
        assert!(moves(&b.step(&later(vec![s(8)]), 13_000)).is_empty());
        assert!(moves(&b.step(&later(vec![s(8)]), 19_999)).is_empty());
        assert_eq!(moves(&b2.step(&later(vec![]), 13_000)), [(3, 1, 2)]);
        // At 20 s it may go back.
        assert_eq!(moves(&b.step(&later(vec![s(8)]), 20_000)), [(3, 1, 0)]);
        assert!(b.ping_pongs().is_empty() && b2.ping_pongs().is_empty());
        assert_eq!(b.history().len(), 2);
        assert_eq!(
            ping_pongs(b.history(), cooldown + 1)[0].kind,
            crate::history::PingPongKind::MovedBack,
            "under a longer cooldown the return would be a ping-pong"
        );
    }
}
