//! Checks over a [`World`]: every command executed and completed exactly once, every target
//! reachable through some registered portal, the balancer's promises kept.

use std::collections::{BTreeMap, BTreeSet};

use balancer::{Event, EventKind};

use crate::World;

impl World {
    /// Executions at the target of every WRITE, by command id, over all targets.
    pub fn executions(&self) -> BTreeMap<u64, u32> {
        let mut all = BTreeMap::new();
        for t in self.target.plane.targets() {
            if let Some(d) = self.target.device(t) {
                all.extend(d.all_executions());
            }
        }
        all
    }

    /// Nothing executed or completed twice, and nothing completed without having been
    /// executed (checked for WRITEs, whose blocks carry their id). Holds at every instant.
    pub fn audit_at_most_once(&self) -> Result<(), String> {
        let exec = self.executions();
        if let Some((id, n)) = exec.iter().find(|(_, n)| **n > 1) {
            return Err(format!("command {id:#x} executed {n} times"));
        }
        for init in &self.initiators {
            if let Some((id, n)) = init.completions.iter().find(|(_, n)| **n > 1) {
                return Err(format!(
                    "{}: command {id:#x} completed {n} times",
                    init.name()
                ));
            }
            if let Some(id) = init.written_ids.iter().find(|id| !exec.contains_key(id)) {
                return Err(format!(
                    "{}: WRITE {id:#x} completed, never executed",
                    init.name()
                ));
            }
            if let Some(e) = init.errors.first() {
                return Err(format!("{}: {e}", init.name()));
            }
        }
        Ok(())
    }

    /// Exactly once: [`World::audit_at_most_once`], nothing outstanding, and every executed
    /// WRITE completed at its initiator. Holds once every initiator is idle.
    pub fn audit_exactly_once(&self) -> Result<(), String> {
        self.audit_at_most_once()?;
        let mut completed = BTreeSet::new();
        for init in &self.initiators {
            if init.outstanding() > 0 {
                return Err(format!(
                    "{}: {} commands never completed",
                    init.name(),
                    init.outstanding()
                ));
            }
            if init.completions.len() as u64 != init.generated() {
                return Err(format!(
                    "{}: {} commands generated, {} completed",
                    init.name(),
                    init.generated(),
                    init.completions.len()
                ));
            }
            completed.extend(init.written_ids.iter().copied());
        }
        if let Some(id) = self.executions().keys().find(|id| !completed.contains(id)) {
            return Err(format!("WRITE {id:#x} executed, never completed"));
        }
        Ok(())
    }

    /// Every target is listed by iSNS with at least one portal.
    pub fn audit_registered(&mut self) -> Result<(), String> {
        let targets = self.target.plane.targets().to_vec();
        for t in targets {
            if self.query_portals(&t).is_empty() {
                return Err(format!(
                    "{t} has no registered portal at {:?}",
                    self.clock.elapsed()
                ));
            }
        }
        Ok(())
    }

    /// The target's events, oldest first.
    pub fn events(&self) -> Vec<Event> {
        self.target.plane.events().snapshot()
    }
}

/// A short line for an event, e.g. `login iqn.i1 P0`.
pub fn line(e: &EventKind) -> String {
    match e {
        EventKind::Login {
            initiator, portal, ..
        } => format!("login {initiator} {portal}"),
        EventKind::Logout {
            initiator, portal, ..
        } => format!("logout {initiator} {portal}"),
        EventKind::RegistrationDeleted { target, portal } => {
            format!("registration-deleted {target} {portal}")
        }
        EventKind::LogoutRequested {
            initiator,
            from,
            to,
            ..
        } => format!("logout-requested {initiator} {from}->{to}"),
        EventKind::Redirected {
            initiator,
            from,
            to,
            ..
        } => format!("redirected {initiator} {from}->{to}"),
        EventKind::RegistrationRestored { target, portal } => {
            format!("registration-restored {target} {portal}")
        }
        EventKind::ForcedMove {
            initiator, from, ..
        } => format!("forced-move {initiator} {from}"),
        EventKind::Failed { what } => format!("failed {what}"),
        EventKind::Operator { action } => format!("operator {action}"),
    }
}

/// Checks a world after every step, incrementally: commands executed and completed at most once
/// (and every completed WRITE executed), every target registered through some portal, no
/// (initiator, target) asked to move twice within the cooldown nor back to the portal it left
/// within twice the cooldown (no ping-pong, [`balancer::ping_pongs`]), and every logout request
/// followed by a login elsewhere, the initiator leaving, or a stated reason (a failed event
/// instead of the request) within `resolve_within_ms`.
#[derive(Debug, Default)]
pub struct Auditor {
    pub cooldown_ms: u64,
    pub resolve_within_ms: u64,
    completed: Vec<usize>,
    last_seq: u64,
    last_request: BTreeMap<(String, String), u64>,
    /// Open logout requests: initiator → (time, from portal).
    pending: BTreeMap<String, (u64, balancer::PortalId)>,
    /// Every logout request seen, as a move, oldest first.
    pub history: Vec<balancer::MoveRecord>,
    /// Logout requests followed by a login elsewhere.
    pub moves: u64,
    /// Logout requests resolved by the initiator leaving.
    pub left: u64,
    pub restores: u64,
    pub redirects: u64,
    pub failed: u64,
    pub logout_requests: u64,
}

impl Auditor {
    pub fn new(cooldown_ms: u64, resolve_within_ms: u64) -> Self {
        Auditor {
            cooldown_ms,
            resolve_within_ms,
            ..Auditor::default()
        }
    }

    /// Checks what changed since the last call.
    pub fn check(&mut self, w: &mut World) -> Result<(), String> {
        let at = format!("at {:?}", w.clock.elapsed());
        for t in w.target.plane.targets() {
            if let Some(id) = w
                .target
                .device(t)
                .and_then(|d| d.duplicates().first().copied())
            {
                return Err(format!("{at}: WRITE {id:#x} executed twice"));
            }
        }
        self.completed.resize(w.initiators.len(), 0);
        for (i, init) in w.initiators.iter().enumerate() {
            if let Some(e) = init.errors.first() {
                return Err(format!("{at}: {}: {e}", init.name()));
            }
            let dev = w.target.device(&init.config.target);
            for id in &init.completed[self.completed[i]..] {
                if init.written_ids.contains(id) && dev.map(|d| d.executions(*id)) != Some(1) {
                    return Err(format!(
                        "{at}: {}: WRITE {id:#x} completed, not executed once",
                        init.name()
                    ));
                }
            }
            self.completed[i] = init.completed.len();
            for pair in init.moves.windows(2) {
                if pair[1].at_ms < pair[0].at_ms + self.cooldown_ms {
                    return Err(format!(
                        "{at}: {} moved twice within the cooldown: {pair:?}",
                        init.name()
                    ));
                }
            }
        }
        w.audit_registered()?;
        let now = w.clock.unix_ms();
        let new: Vec<Event> = w
            .target
            .plane
            .events()
            .since(self.last_seq)
            .cloned()
            .collect();
        for e in new {
            self.last_seq = e.seq;
            if let Some(m) = balancer::MoveRecord::from_event(&e) {
                self.history.push(m);
                let last = self.history.len() - 1;
                if let Some(p) = balancer::ping_pongs(&self.history, self.cooldown_ms)
                    .into_iter()
                    .find(|p| p.later == last)
                {
                    return Err(format!(
                        "{at}: ping-pong ({:?}): {:?} after {:?}",
                        p.kind, self.history[p.later], self.history[p.earlier]
                    ));
                }
            }
            match e.kind {
                EventKind::LogoutRequested {
                    initiator,
                    target,
                    from,
                    ..
                } => {
                    self.logout_requests += 1;
                    let key = (initiator.clone(), target);
                    if let Some(prev) = self.last_request.insert(key, e.at_ms)
                        && e.at_ms < prev + self.cooldown_ms
                    {
                        return Err(format!(
                            "{at}: {initiator} asked to move at {prev} and again at {}",
                            e.at_ms
                        ));
                    }
                    if self
                        .pending
                        .insert(initiator.clone(), (e.at_ms, from))
                        .is_some()
                    {
                        return Err(format!("{at}: {initiator} asked to move while moving"));
                    }
                }
                EventKind::Login {
                    initiator, portal, ..
                } => {
                    if let Some((_, from)) = self.pending.get(&initiator) {
                        if *from == portal {
                            return Err(format!("{at}: {initiator} moved back to {from}"));
                        }
                        self.pending.remove(&initiator);
                        self.moves += 1;
                    }
                }
                EventKind::RegistrationRestored { .. } => self.restores += 1,
                EventKind::Redirected { .. } => self.redirects += 1,
                EventKind::Failed { .. } => self.failed += 1,
                _ => {}
            }
        }
        let gone: Vec<String> = self
            .pending
            .keys()
            .filter(|n| {
                w.initiators
                    .iter()
                    .any(|i| i.name() == n.as_str() && i.is_leaving() && i.is_done())
            })
            .cloned()
            .collect();
        for n in gone {
            self.pending.remove(&n);
            self.left += 1;
        }
        if let Some((n, (t, from))) = self
            .pending
            .iter()
            .find(|(_, (t, _))| now > t + self.resolve_within_ms)
        {
            return Err(format!(
                "{at}: {n} asked to leave {from} at {t}, never moved"
            ));
        }
        Ok(())
    }

    /// Logout requests still open.
    pub fn open_requests(&self) -> usize {
        self.pending.len()
    }

    /// Ping-pongs among the moves seen so far (the check fails at the first, so this is 0
    /// after every successful check).
    pub fn ping_pongs(&self) -> usize {
        balancer::ping_pongs(&self.history, self.cooldown_ms).len()
    }
}
