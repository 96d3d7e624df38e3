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
                return Err(format!("{}: command {id:#x} completed {n} times", init.name()));
            }
            if let Some(id) = init.written_ids.iter().find(|id| !exec.contains_key(id)) {
                return Err(format!("{}: WRITE {id:#x} completed, never executed", init.name()));
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
                return Err(format!("{t} has no registered portal at {:?}", self.clock.elapsed()));
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
            initiator, from, to, ..
        } => format!("logout-requested {initiator} {from}->{to}"),
        EventKind::Redirected {
            initiator, from, to, ..
        } => format!("redirected {initiator} {from}->{to}"),
        EventKind::RegistrationRestored { target, portal } => {
            format!("registration-restored {target} {portal}")
        }
        EventKind::Failed { what } => format!("failed {what}"),
    }
}
