//! The balancing policy as configured: the metrics with their thresholds (one per `--balance`
//! argument) and the settings of the procedure (cooldown, moves per interval, pinned
//! initiators, whether reservation holders may move, the switch priority's last key).

use crate::smooth::SMOOTHING_TAU_MS;
use serde::{Deserialize, Serialize};

use crate::metric::{BalanceSpec, Metric, ParseSpecError};

/// Moves asked for in one interval at most, by default: enough to relieve a portal that
/// several hosts overload at once, few enough that the figures of the next interval show
/// what the moves did before more are made.
pub const DEFAULT_MAX_MOVES: usize = 4;

/// The last key of the switch priority (patent: the order in which the sessions of an
/// overloaded portal are considered for a move), after the least outstanding I/O and "not
/// recently moved".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SwitchPriority {
    /// The most recent login first: the host that came last has the least settled state.
    #[default]
    NewestLogin,
    /// The oldest login first.
    OldestLogin,
}

impl SwitchPriority {
    pub fn name(self) -> &'static str {
        match self {
            SwitchPriority::NewestLogin => "newest login",
            SwitchPriority::OldestLogin => "oldest login",
        }
    }
}

/// Why a set of specs is not a policy.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PolicyError {
    #[error("no --balance metric given")]
    Empty,
    #[error("--balance {0} given twice; give each metric once")]
    Duplicate(Metric),
    #[error("--balance {arg:?}: {error}")]
    Spec { arg: String, error: ParseSpecError },
    #[error("at least one move per interval must be allowed")]
    NoMoves,
}

/// Everything the [`Balancer`](crate::Balancer) is configured with.
///
/// A portal is overloaded when **any** metric's load is at or above its HIGH; a (target,
/// portal) registration the balancer deleted is restored only when **every** metric's load
/// on that portal is at or below its LOW (and the cooldown has passed since the deletion).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BalancePolicy {
    /// One spec per metric, in the order given.
    pub specs: Vec<BalanceSpec>,
    /// An initiator moved less than this long ago is not moved again; one is never moved back
    /// to the portal it left less than twice this long ago; a registration deleted less than
    /// this long ago is not restored.
    pub cooldown_ms: u64,
    /// Moves asked for in one step at most, over all portals.
    pub max_moves: usize,
    /// Initiator names (compared without regard to ASCII case) that are never moved.
    #[serde(default)]
    pub pinned: Vec<String>,
    /// Whether sessions holding a SCSI reservation may be moved (off by default: a stock
    /// initiator may log in again with a new ISID, a new I_T nexus, and lose it).
    #[serde(default)]
    pub move_reservation_holders: bool,
    /// The switch priority's last key.
    #[serde(default)]
    pub priority: SwitchPriority,
    /// Time constant of the smoothing of the measured rates the policy is given
    /// ([`SMOOTHING_TAU_MS`], the target's); 0 when they are exact at once. A move that
    /// happened less than four of these ago is projected on top of the measurements, so that
    /// a destination that just received a session is not taken for idle.
    #[serde(default = "default_smoothing_tau_ms")]
    pub smoothing_tau_ms: u64,
}

fn default_smoothing_tau_ms() -> u64 {
    SMOOTHING_TAU_MS
}

impl BalancePolicy {
    /// A policy over `specs` with the default settings (no cooldown, [`DEFAULT_MAX_MOVES`],
    /// nobody pinned, reservation holders kept, newest login first). Refuses an empty list
    /// and a metric given twice.
    pub fn new(specs: Vec<BalanceSpec>) -> Result<Self, PolicyError> {
        if specs.is_empty() {
            return Err(PolicyError::Empty);
        }
        for (i, s) in specs.iter().enumerate() {
            if specs[..i].iter().any(|o| o.metric == s.metric) {
                return Err(PolicyError::Duplicate(s.metric));
            }
        }
        Ok(BalancePolicy {
            specs,
            cooldown_ms: 0,
            max_moves: DEFAULT_MAX_MOVES,
            pinned: Vec::new(),
            move_reservation_holders: false,
            priority: SwitchPriority::default(),
            smoothing_tau_ms: SMOOTHING_TAU_MS,
        })
    }

    /// Measurements smoothed with time constant `tau_ms` (0: exact at once).
    pub fn with_smoothing_tau_ms(mut self, tau_ms: u64) -> Self {
        self.smoothing_tau_ms = tau_ms;
        self
    }

    /// A policy from `--balance` arguments, e.g. `["sessions:8", "bandwidth:80%:50%"]`.
    pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<Self, PolicyError> {
        let specs = args
            .iter()
            .map(|a| {
                a.as_ref().parse().map_err(|error| PolicyError::Spec {
                    arg: a.as_ref().to_string(),
                    error,
                })
            })
            .collect::<Result<Vec<BalanceSpec>, _>>()?;
        BalancePolicy::new(specs)
    }

    pub fn with_cooldown_ms(mut self, cooldown_ms: u64) -> Self {
        self.cooldown_ms = cooldown_ms;
        self
    }

    /// At most `n` moves per step (at least 1).
    pub fn with_max_moves(mut self, n: usize) -> Result<Self, PolicyError> {
        if n == 0 {
            return Err(PolicyError::NoMoves);
        }
        self.max_moves = n;
        Ok(self)
    }

    pub fn with_pinned<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
        self.pinned.extend(names.into_iter().map(Into::into));
        self
    }

    pub fn with_reservation_holders_movable(mut self, movable: bool) -> Self {
        self.move_reservation_holders = movable;
        self
    }

    pub fn with_priority(mut self, priority: SwitchPriority) -> Self {
        self.priority = priority;
        self
    }

    /// The spec of `metric`, if configured.
    pub fn spec(&self, metric: Metric) -> Option<&BalanceSpec> {
        self.specs.iter().find(|s| s.metric == metric)
    }

    /// Whether `initiator` is pinned.
    pub fn is_pinned(&self, initiator: &str) -> bool {
        self.pinned
            .iter()
            .any(|p| p.eq_ignore_ascii_case(initiator))
    }
}

impl std::fmt::Display for BalancePolicy {
    /// `sessions:2:1 bandwidth:80%:40%; cooldown 10 s; at most 4 moves per interval; pinned: …`
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let specs: Vec<String> = self.specs.iter().map(|s| s.to_string()).collect();
        write!(
            f,
            "{}; cooldown {} s; at most {} moves per interval",
            specs.join(" "),
            self.cooldown_ms as f64 / 1000.0,
            self.max_moves
        )?;
        if !self.pinned.is_empty() {
            write!(f, "; pinned: {}", self.pinned.join(", "))?;
        }
        if self.move_reservation_holders {
            write!(f, "; reservation holders may move")?;
        }
        if self.priority != SwitchPriority::default() {
            write!(f, "; {} first", self.priority.name())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_specs_make_one_policy() {
        let p = BalancePolicy::parse(&["sessions:8", "bandwidth:80%:50%"]).unwrap();
        assert_eq!(p.specs.len(), 2);
        assert_eq!(p.spec(Metric::Bandwidth).unwrap().thresholds.high, 0.8);
        assert_eq!(p.max_moves, DEFAULT_MAX_MOVES);
        assert_eq!(
            BalancePolicy::parse(&["iops:10", "iops:20"]),
            Err(PolicyError::Duplicate(Metric::Iops))
        );
        assert_eq!(BalancePolicy::parse::<&str>(&[]), Err(PolicyError::Empty));
        let e = BalancePolicy::parse(&["sessions:2", "cpu:90"]).unwrap_err();
        assert!(matches!(e, PolicyError::Spec { ref arg, .. } if arg == "cpu:90"));
        assert!(e.to_string().contains("percentages"), "{e}");
        assert_eq!(p.clone().with_max_moves(0), Err(PolicyError::NoMoves));
        let p = p
            .with_cooldown_ms(10_000)
            .with_pinned(["iqn.A"])
            .with_max_moves(2)
            .unwrap();
        assert!(p.is_pinned("iqn.a") && !p.is_pinned("iqn.b"));
        assert_eq!(
            p.to_string(),
            "sessions:8:7 bandwidth:80%:50%; cooldown 10 s; at most 2 moves per interval; pinned: iqn.A"
        );
    }
}
