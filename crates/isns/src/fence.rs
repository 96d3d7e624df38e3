//! What a query may answer from: the committer applies a batch of registrations to the
//! registry before it is stored (so the batch's later requests see its earlier ones), and a
//! query reading the registry meanwhile must not answer from changes that are not yet durable
//! and may still be undone (RFC 4171 §5.6.5 answers describe registered objects, and an
//! object whose DevAttrReg failed was never registered).
//!
//! The committer numbers each batch it applies ([`CommitFence::apply`], under the registry's
//! write lock) and settles it once written or undone. A query notes the number it read under
//! the read lock, waits until that batch is settled, and reads again if a batch it may have
//! seen was undone.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

/// Which batches are settled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Settled {
    /// Every batch up to this one is written or undone.
    pub(crate) upto: u64,
    /// The last batch that was undone (0: none).
    pub(crate) last_undone: u64,
}

/// Batches applied to the registry, and how far they are settled.
#[derive(Debug)]
pub(crate) struct CommitFence {
    applied: AtomicU64,
    settled: watch::Sender<Settled>,
}

/// What a query's reading of the registry is worth once its batches are settled.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Reading {
    /// Everything it saw is stored: answer.
    Durable,
    /// A batch it may have seen was undone: read again.
    Undone,
}

/// What a query's reading of the registry saw: taken with [`CommitFence::mark`] under the read
/// lock.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mark {
    /// Every batch up to this one was settled when the query read.
    settled_before: u64,
    /// The last batch applied when the query read.
    seen: u64,
}

impl Default for CommitFence {
    fn default() -> Self {
        CommitFence {
            applied: AtomicU64::new(0),
            settled: watch::Sender::new(Settled::default()),
        }
    }
}

impl CommitFence {
    /// The committer applies a new batch: call under the registry's write lock. Returns its
    /// number, for [`CommitFence::settle`].
    pub(crate) fn apply(&self) -> u64 {
        self.applied.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Batch `batch` is written (`undone` false) or undone (true). Batches settle in order.
    pub(crate) fn settle(&self, batch: u64, undone: bool) {
        self.settled.send_modify(|s| {
            s.upto = s.upto.max(batch);
            if undone {
                s.last_undone = s.last_undone.max(batch);
            }
        });
    }

    /// A query reads the registry: call under the read lock. Settling runs outside the lock,
    /// so an undo finished before this reading but settled after it only makes the query read
    /// once more.
    pub(crate) fn mark(&self) -> Mark {
        Mark {
            settled_before: self.settled.borrow().upto,
            seen: self.applied.load(Ordering::Acquire),
        }
    }

    /// Waits until every batch the query may have seen is settled (at once when it is).
    pub(crate) async fn wait(&self, mark: Mark) -> Reading {
        let mut rx = self.settled.subscribe();
        // Cannot fail: the sender is `self`'s.
        let settled = rx
            .wait_for(|s| s.upto >= mark.seen)
            .await
            .map_or_else(|_| *self.settled.borrow(), |s| *s);
        if settled.last_undone > mark.settled_before {
            Reading::Undone
        } else {
            Reading::Durable
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Whether `wait` answers without waiting (the reading saw nothing unsettled).
    async fn is_settled(f: &CommitFence, m: Mark) -> bool {
        tokio::time::timeout(Duration::ZERO, f.wait(m)).await == Ok(Reading::Durable)
    }

    #[tokio::test]
    async fn a_read_with_nothing_in_flight_is_durable_at_once() {
        let f = CommitFence::default();
        let b = f.apply();
        f.settle(b, false);
        let m = f.mark();
        assert!(is_settled(&f, m).await);
        assert_eq!(f.wait(m).await, Reading::Durable);
    }

    #[tokio::test]
    async fn a_read_waits_for_the_batch_it_saw_and_is_durable_when_written() {
        let f = std::sync::Arc::new(CommitFence::default());
        let b = f.apply();
        let m = f.mark();
        assert!(!is_settled(&f, m).await);
        let waiting = tokio::spawn({
            let f = f.clone();
            async move { f.wait(m).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiting.is_finished(),
            "answered before the batch was stored"
        );
        f.settle(b, false);
        assert_eq!(waiting.await.unwrap(), Reading::Durable);
    }

    #[tokio::test]
    async fn a_read_that_saw_an_undone_batch_reads_again() {
        let f = CommitFence::default();
        let b = f.apply();
        let m = f.mark();
        f.settle(b, true);
        assert_eq!(f.wait(m).await, Reading::Undone);
        // The read after the undo is durable.
        let again = f.mark();
        assert!(is_settled(&f, again).await);
        assert_eq!(f.wait(again).await, Reading::Durable);
    }

    #[tokio::test]
    async fn a_batch_applied_after_the_read_is_not_waited_for() {
        let f = CommitFence::default();
        let m = f.mark();
        let later = f.apply();
        assert!(is_settled(&f, m).await);
        assert_eq!(f.wait(m).await, Reading::Durable);
        f.settle(later, true);
    }
}
