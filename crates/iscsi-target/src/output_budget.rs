//! The process-wide budget for output the connections have produced but not yet written
//! (Data-In of executed READs waiting for slow or stalled initiators). Each connection has
//! its own budget ([`crate::target_set::OUTPUT_BUDGET`]); this one bounds their sum, so many
//! connections that stop reading cannot, together, take the target's memory.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Default of [`ProcessOutput::limit`]: output queued by all the connections of the process
/// past which a connection with output of its own to write runs no further command before
/// writing it.
pub const PROCESS_OUTPUT_BUDGET: usize = 256 * 1024 * 1024;

/// Output queued across every connection of the process.
#[derive(Debug)]
pub struct ProcessOutput {
    queued: AtomicUsize,
    limit: usize,
}

impl Default for ProcessOutput {
    fn default() -> Self {
        ProcessOutput::with_limit(PROCESS_OUTPUT_BUDGET)
    }
}

impl ProcessOutput {
    /// A budget of `limit` bytes.
    pub fn with_limit(limit: usize) -> Self {
        ProcessOutput {
            queued: AtomicUsize::new(0),
            limit,
        }
    }

    /// The budget, in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Output queued now, in bytes, as the connections last reported it.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// True when the connections together have more than the budget queued.
    pub fn over(&self) -> bool {
        self.queued() > self.limit
    }

    /// One connection's share: what it reported last, updated as its output changes.
    pub fn share(&self) -> OutputShare<'_> {
        OutputShare {
            budget: self,
            reported: 0,
        }
    }
}

/// What one connection counts in a [`ProcessOutput`]; given back when dropped.
#[derive(Debug)]
pub struct OutputShare<'a> {
    budget: &'a ProcessOutput,
    reported: usize,
}

impl OutputShare<'_> {
    /// The connection now holds `queued` bytes of output (one atomic update when it changed).
    pub fn report(&mut self, queued: usize) {
        if queued > self.reported {
            self.budget
                .queued
                .fetch_add(queued - self.reported, Ordering::Relaxed);
        } else if queued < self.reported {
            self.budget
                .queued
                .fetch_sub(self.reported - queued, Ordering::Relaxed);
        }
        self.reported = queued;
    }

    /// The process budget this share counts in.
    pub fn budget(&self) -> &ProcessOutput {
        self.budget
    }
}

impl Drop for OutputShare<'_> {
    fn drop(&mut self) {
        self.report(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_and_are_given_back() {
        let budget = ProcessOutput::with_limit(100);
        let mut a = budget.share();
        let mut b = budget.share();
        a.report(60);
        b.report(30);
        assert_eq!(budget.queued(), 90);
        assert!(!budget.over());
        b.report(50);
        assert_eq!(budget.queued(), 110);
        assert!(budget.over());
        a.report(10);
        assert_eq!(budget.queued(), 60);
        drop(b);
        assert_eq!(budget.queued(), 10);
        drop(a);
        assert_eq!(budget.queued(), 0);
    }
}
