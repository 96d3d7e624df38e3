//! What a query may answer from: the committer applies a batch of registrations to the
//! registry before it is stored (so the batch's later requests see its earlier ones), and a
//! query reading the registry meanwhile must not answer from changes that are not yet durable
//! and may still be undone (RFC 4171 §5.6.5 answers describe registered objects, and an
//! object whose DevAttrReg failed was never registered).
//!
//! The committer numbers each batch it applies ([`CommitFence::applied`], under the registry's
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

/// A query's place in the sequence: taken with [`CommitFence::mark`] before the read lock,
/// completed with [`Mark::read`] under it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mark {
    settled_before: u64,
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

    /// A query is about to read: before taking the read lock.
    pub(crate) fn mark(&self) -> Mark {
        Mark {
            settled_before: self.settled.borrow().upto,
            seen: 0,
        }
    }

    /// Waits until every batch the query may have seen is settled.
    pub(crate) async fn wait(&self, mark: Mark) -> Reading {
        let mut rx = self.settled.subscribe();
        let settled = match rx.wait_for(|s| s.upto >= mark.seen).await {
            Ok(s) => *s,
            // The committer is gone (the server is stopping): nothing will settle.
            Err(_) => *self.settled.borrow(),
        };
        if settled.last_undone > mark.settled_before {
            Reading::Undone
        } else {
            Reading::Durable
        }
    }

    fn applied(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }
}

impl Mark {
    /// The registry is read now: call under the read lock.
    pub(crate) fn read(mut self, fence: &CommitFence) -> Mark {
        self.seen = fence.applied();
        self
    }

    /// Whether the read saw no batch that is not settled yet (no wait needed).
    pub(crate) fn is_settled(&self, fence: &CommitFence) -> bool {
        let s = *fence.settled.borrow();
        s.upto >= self.seen && s.last_undone <= self.settled_before
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn read(f: &CommitFence) -> Mark {
        f.mark().read(f)
    }

    #[tokio::test]
    async fn a_read_with_nothing_in_flight_is_durable_at_once() {
        let f = CommitFence::default();
        let b = f.apply();
        f.settle(b, false);
        let m = read(&f);
        assert!(m.is_settled(&f));
        assert_eq!(f.wait(m).await, Reading::Durable);
    }

    #[tokio::test]
    async fn a_read_waits_for_the_batch_it_saw_and_is_durable_when_written() {
        let f = std::sync::Arc::new(CommitFence::default());
        let b = f.apply();
        let m = read(&f);
        assert!(!m.is_settled(&f));
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
        let m = read(&f);
        f.settle(b, true);
        assert_eq!(f.wait(m).await, Reading::Undone);
        // The read after the undo is durable.
        let again = read(&f);
        assert!(again.is_settled(&f));
        assert_eq!(f.wait(again).await, Reading::Durable);
    }

    #[tokio::test]
    async fn a_batch_applied_after_the_read_is_not_waited_for() {
        let f = CommitFence::default();
        let m = read(&f);
        let later = f.apply();
        assert!(m.is_settled(&f));
        assert_eq!(f.wait(m).await, Reading::Durable);
        f.settle(later, true);
    }
}
