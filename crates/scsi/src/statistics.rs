//! Command statistics of a logical unit: commands completed, bytes transferred each way and
//! the commands that ended with a status other than GOOD, by status (SAM-5 §5.3). They are
//! the per-LU figures a monitoring system scrapes (`/metrics`); counting costs two or three
//! relaxed atomic additions per command, no lock and no allocation.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::task::{ScsiOutcome, ScsiStatus};

/// The statuses counted apart among the commands that did not end GOOD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorStatus {
    CheckCondition,
    ReservationConflict,
    Busy,
    TaskSetFull,
    /// ACA ACTIVE, TASK ABORTED and anything else.
    Other,
}

impl ErrorStatus {
    pub const ALL: [ErrorStatus; 5] = [
        ErrorStatus::CheckCondition,
        ErrorStatus::ReservationConflict,
        ErrorStatus::Busy,
        ErrorStatus::TaskSetFull,
        ErrorStatus::Other,
    ];

    /// The class of `status`; `None` for GOOD and CONDITION MET, which are not errors.
    pub fn of(status: ScsiStatus) -> Option<ErrorStatus> {
        Some(match status {
            ScsiStatus::Good | ScsiStatus::ConditionMet => return None,
            ScsiStatus::CheckCondition => ErrorStatus::CheckCondition,
            ScsiStatus::ReservationConflict => ErrorStatus::ReservationConflict,
            ScsiStatus::Busy => ErrorStatus::Busy,
            ScsiStatus::TaskSetFull => ErrorStatus::TaskSetFull,
            ScsiStatus::AcaActive | ScsiStatus::TaskAborted => ErrorStatus::Other,
        })
    }

    /// A lower-case name for labels: `check_condition`, `reservation_conflict`…
    pub fn name(self) -> &'static str {
        match self {
            ErrorStatus::CheckCondition => "check_condition",
            ErrorStatus::ReservationConflict => "reservation_conflict",
            ErrorStatus::Busy => "busy",
            ErrorStatus::TaskSetFull => "task_set_full",
            ErrorStatus::Other => "other",
        }
    }
}

/// The counters of one logical unit (or of the commands a target could address to none).
#[derive(Debug, Default)]
pub struct LuStatistics {
    commands: AtomicU64,
    read_bytes: AtomicU64,
    written_bytes: AtomicU64,
    errors: [AtomicU64; ErrorStatus::ALL.len()],
}

/// A copy of [`LuStatistics`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LuFigures {
    pub commands: u64,
    /// Data-in bytes the commands returned.
    pub read_bytes: u64,
    /// Data-out bytes the commands that ended GOOD took.
    pub written_bytes: u64,
    /// Commands by [`ErrorStatus`], in [`ErrorStatus::ALL`] order.
    pub errors: [u64; ErrorStatus::ALL.len()],
}

impl LuFigures {
    /// The commands that ended with `status`.
    pub fn errors_with(&self, status: ErrorStatus) -> u64 {
        ErrorStatus::ALL
            .iter()
            .position(|s| *s == status)
            .map_or(0, |i| self.errors[i])
    }

    /// Every command that did not end GOOD.
    pub fn errors_total(&self) -> u64 {
        self.errors.iter().sum()
    }

    /// The sum of two sets of figures.
    pub fn plus(mut self, other: &LuFigures) -> LuFigures {
        self.commands += other.commands;
        self.read_bytes += other.read_bytes;
        self.written_bytes += other.written_bytes;
        for (a, b) in self.errors.iter_mut().zip(other.errors) {
            *a += b;
        }
        self
    }
}

impl LuStatistics {
    /// Counts one completed command: `outcome` as executed, `written` the data-out bytes it
    /// carried (counted only if it ended GOOD).
    pub fn record(&self, outcome: &ScsiOutcome, written: usize) {
        self.commands.fetch_add(1, Ordering::Relaxed);
        if outcome.data_in_len > 0 {
            self.read_bytes
                .fetch_add(u64::from(outcome.data_in_len), Ordering::Relaxed);
        }
        match ErrorStatus::of(outcome.status) {
            None if written > 0 => {
                self.written_bytes
                    .fetch_add(written as u64, Ordering::Relaxed);
            }
            None => {}
            Some(e) => {
                let i = e as usize;
                if let Some(c) = self.errors.get(i) {
                    c.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    pub fn figures(&self) -> LuFigures {
        let mut errors = [0; ErrorStatus::ALL.len()];
        for (e, c) in errors.iter_mut().zip(&self.errors) {
            *e = c.load(Ordering::Relaxed);
        }
        LuFigures {
            commands: self.commands.load(Ordering::Relaxed),
            read_bytes: self.read_bytes.load(Ordering::Relaxed),
            written_bytes: self.written_bytes.load(Ordering::Relaxed),
            errors,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sense::Sense;

    #[test]
    fn counts_commands_bytes_and_errors_by_status() {
        let s = LuStatistics::default();
        s.record(&ScsiOutcome::good(4096, 4096), 0);
        s.record(&ScsiOutcome::good(0, 0), 512);
        s.record(
            &ScsiOutcome::check_condition(Sense::lba_out_of_range()),
            512,
        );
        s.record(
            &ScsiOutcome {
                status: ScsiStatus::ReservationConflict,
                sense: None,
                data_in_len: 0,
                data_in_wanted: 0,
            },
            0,
        );
        let f = s.figures();
        assert_eq!(f.commands, 4);
        assert_eq!(f.read_bytes, 4096);
        // The failed write's data is not counted as written.
        assert_eq!(f.written_bytes, 512);
        assert_eq!(f.errors_with(ErrorStatus::CheckCondition), 1);
        assert_eq!(f.errors_with(ErrorStatus::ReservationConflict), 1);
        assert_eq!(f.errors_with(ErrorStatus::Busy), 0);
        assert_eq!(f.errors_total(), 2);
        assert_eq!(f.plus(&f).commands, 8);
    }

    #[test]
    fn error_classes_match_their_position() {
        for (i, e) in ErrorStatus::ALL.iter().enumerate() {
            assert_eq!(*e as usize, i, "{e:?}");
        }
    }
}
