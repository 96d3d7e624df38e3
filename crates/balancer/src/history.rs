//! Moves over time, and the ping-pong detector.
//!
//! A **ping-pong** is an initiator (an initiator name logged in to a target) that is moved
//! again within its cooldown of its previous move, or moved back to a portal it left less than
//! twice its cooldown ago. The [`Balancer`](crate::Balancer) never does either; [`ping_pongs`]
//! finds them in any record of moves — the balancer's own [`history`](crate::Balancer::history),
//! or the `logout-requested` events of a running target (see [`MoveRecord::from_event`]) — so
//! that simulations and benchmarks can count them.

use serde::{Deserialize, Serialize};

use crate::event::{Event, EventKind};
use crate::table::PortalId;

/// One move the balancer asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveRecord {
    /// When it was asked for (milliseconds).
    pub at_ms: u64,
    pub initiator: String,
    pub target: String,
    pub from: PortalId,
    pub to: PortalId,
}

impl MoveRecord {
    /// The move a `logout-requested` event records, if `e` is one.
    pub fn from_event(e: &Event) -> Option<Self> {
        match &e.kind {
            EventKind::LogoutRequested {
                initiator,
                target,
                from,
                to,
            } => Some(MoveRecord {
                at_ms: e.at_ms,
                initiator: initiator.clone(),
                target: target.clone(),
                from: *from,
                to: *to,
            }),
            _ => None,
        }
    }
}

/// Which rule a move broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PingPongKind {
    /// Moved again less than the cooldown after its previous move.
    MovedAgain,
    /// Moved back to a portal it left less than twice the cooldown ago.
    MovedBack,
}

/// A move that was a ping-pong, with the earlier move it bounced off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingPong {
    pub kind: PingPongKind,
    /// Index of the earlier move in the history given.
    pub earlier: usize,
    /// Index of the offending move.
    pub later: usize,
}

/// Every ping-pong in `history` (moves in time order) under `cooldown_ms`: at most one per
/// offending move, "moved again" before "moved back".
pub fn ping_pongs(history: &[MoveRecord], cooldown_ms: u64) -> Vec<PingPong> {
    let mut out = Vec::new();
    for (j, m) in history.iter().enumerate() {
        let same = |r: &&MoveRecord| r.initiator == m.initiator && r.target == m.target;
        let previous = history[..j].iter().rposition(|r| same(&r));
        if let Some(i) = previous
            && m.at_ms.saturating_sub(history[i].at_ms) < cooldown_ms
        {
            out.push(PingPong {
                kind: PingPongKind::MovedAgain,
                earlier: i,
                later: j,
            });
            continue;
        }
        let back = history[..j].iter().enumerate().rev().find(|(_, r)| {
            same(r)
                && r.from == m.to
                && m.at_ms.saturating_sub(r.at_ms) < cooldown_ms.saturating_mul(2)
        });
        if let Some((i, _)) = back {
            out.push(PingPong {
                kind: PingPongKind::MovedBack,
                earlier: i,
                later: j,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mv(at_ms: u64, initiator: &str, from: u16, to: u16) -> MoveRecord {
        MoveRecord {
            at_ms,
            initiator: initiator.into(),
            target: "t".into(),
            from: PortalId(from),
            to: PortalId(to),
        }
    }

    #[test]
    fn finds_moves_within_the_cooldown_and_returns_within_twice_it() {
        let c = 10_000;
        // Moved again after 9.999 s: ping-pong; after 10 s onwards to a third portal: fine.
        let h = [mv(0, "a", 0, 1), mv(9_999, "a", 1, 2)];
        assert_eq!(
            ping_pongs(&h, c),
            [PingPong {
                kind: PingPongKind::MovedAgain,
                earlier: 0,
                later: 1
            }]
        );
        assert!(ping_pongs(&[mv(0, "a", 0, 1), mv(10_000, "a", 1, 2)], c).is_empty());
        // Back to P0 after 15 s (< 20 s): ping-pong; after 20 s: fine.
        let h = [mv(0, "a", 0, 1), mv(15_000, "a", 1, 0)];
        assert_eq!(ping_pongs(&h, c)[0].kind, PingPongKind::MovedBack);
        assert!(ping_pongs(&[mv(0, "a", 0, 1), mv(20_000, "a", 1, 0)], c).is_empty());
        // Back to where it started through a move the history does not hold (another
        // initiator name would not count): the earliest move is found, not only the previous.
        let h = [mv(0, "a", 0, 1), mv(12_000, "a", 2, 0)];
        assert_eq!(
            ping_pongs(&h, c),
            [PingPong {
                kind: PingPongKind::MovedBack,
                earlier: 0,
                later: 1
            }]
        );
        // Other initiators and targets do not count.
        let mut other = mv(1, "a", 1, 0);
        other.target = "u".into();
        assert!(ping_pongs(&[mv(0, "a", 0, 1), mv(1, "b", 1, 0), other], c).is_empty());
    }

    #[test]
    fn reads_moves_from_logout_requested_events() {
        let e = Event {
            seq: 1,
            at_ms: 5,
            kind: EventKind::LogoutRequested {
                initiator: "i".into(),
                target: "t".into(),
                from: PortalId(0),
                to: PortalId(1),
            },
            reason: String::new(),
        };
        assert_eq!(
            MoveRecord::from_event(&e),
            Some(MoveRecord {
                at_ms: 5,
                initiator: "i".into(),
                target: "t".into(),
                from: PortalId(0),
                to: PortalId(1),
            })
        );
        let e = Event {
            kind: EventKind::Failed { what: "x".into() },
            ..e
        };
        assert_eq!(MoveRecord::from_event(&e), None);
    }
}
