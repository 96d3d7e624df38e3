//! The verifying workload: one-block WRITEs tagged with their command id, reads of written
//! blocks compared with what was written, and re-issue of what a session left unfinished.

use std::time::Instant;

use bytes::Bytes;
use initiator::cdb::{ScsiRequest, read16, write16};
use initiator::full_feature::Completion;

use super::{BLOCK, SimInitiator, Wire};
use crate::target::BLOCK_MAGIC;

#[derive(Debug, Clone)]
pub(super) enum Op {
    Write { lba: u64, data: Bytes },
    Read { lba: u64, expect: Bytes },
}

impl Op {
    pub(super) fn lba(&self) -> u64 {
        match self {
            Op::Write { lba, .. } | Op::Read { lba, .. } => *lba,
        }
    }

    pub(super) fn request(&self) -> ScsiRequest {
        match self {
            Op::Write { lba, data } => write16(0, *lba, BLOCK, data.clone()),
            Op::Read { lba, .. } => read16(0, *lba, 1, BLOCK),
        }
    }
}

/// The block a WRITE with command id `id` writes.
pub fn block_for(id: u64) -> Bytes {
    let mut b = vec![0u8; BLOCK as usize];
    b[..8].copy_from_slice(&BLOCK_MAGIC);
    b[8..16].copy_from_slice(&id.to_be_bytes());
    for (i, x) in b.iter_mut().enumerate().skip(16) {
        *x = (id as u8).wrapping_mul(31).wrapping_add(i as u8);
    }
    Bytes::from(b)
}

impl SimInitiator {
    pub(super) fn complete(&mut self, c: Completion) {
        self.submitted.remove(&c.id);
        let Some(op) = self.ops.get(&c.id).cloned() else {
            self.errors
                .push(format!("completion of unknown command {:#x}", c.id));
            return;
        };
        match c.result {
            Ok(r) => {
                if let Op::Read { expect, lba } = &op
                    && r.data != *expect
                {
                    self.errors.push(format!(
                        "read of LBA {lba} ({:#x}) returned other data",
                        c.id
                    ));
                }
                if let Op::Write { lba, data } = &op {
                    self.written_ids.insert(c.id);
                    self.written.insert(*lba, data.clone());
                    self.unread.push_back(*lba);
                }
                *self.completions.entry(c.id).or_default() += 1;
                self.completed.push(c.id);
                self.ops.remove(&c.id);
                self.busy.remove(&op.lba());
            }
            Err(e) if e.is_retryable() => self.retry.push_back(c.id),
            Err(e) => {
                self.errors.push(format!("command {:#x}: {e}", c.id));
                self.ops.remove(&c.id);
                self.busy.remove(&op.lba());
            }
        }
    }

    /// Submits re-issues and new commands while the session is ready; true if any.
    pub(super) fn issue(&mut self, now: Instant) -> bool {
        if !self.issuing || !matches!(self.wire, Wire::Full { .. }) {
            return false;
        }
        let mut any = false;
        while let Some(id) = self.retry.pop_front() {
            any = true;
            self.reissued += 1;
            if let Some(op) = self.ops.get(&id) {
                let req = op.request();
                self.submit(id, req);
            }
        }
        let Some(interval) = self.config.interval.filter(|_| !self.leaving) else {
            return any;
        };
        if self.next_issue + interval < now {
            self.next_issue = now;
        }
        while self.next_issue <= now && self.submitted.len() < self.config.queue_depth {
            self.issued_in_burst += 1;
            if self.issued_in_burst >= self.config.burst.max(1) {
                self.issued_in_burst = 0;
                self.next_issue += interval;
            }
            let Some(op) = self.next_op() else { break };
            self.next_seq += 1;
            let id = (self.index << 40) | self.next_seq;
            let op = match op {
                Op::Write { lba, .. } => Op::Write {
                    lba,
                    data: block_for(id),
                },
                read => read,
            };
            self.busy.insert(op.lba());
            let req = op.request();
            self.ops.insert(id, op);
            self.submit(id, req);
            any = true;
        }
        any
    }

    fn submit(&mut self, id: u64, req: ScsiRequest) {
        if let Wire::Full { ffp, .. } = &mut self.wire {
            ffp.submit(id, req);
            self.submitted.insert(id);
        }
    }

    /// The next command: read back a written block, or write one (data filled in by the
    /// caller).
    fn next_op(&mut self) -> Option<Op> {
        if self.config.verify
            && let Some(i) = self.unread.iter().position(|l| !self.busy.contains(l))
        {
            let lba = self.unread.remove(i)?;
            let expect = self.written.get(&lba)?.clone();
            return Some(Op::Read { lba, expect });
        }
        let span = self.config.lba_span.max(1);
        for _ in 0..span {
            let lba = self.config.lba_base + self.cursor % span;
            self.cursor += 1;
            if !self.busy.contains(&lba) {
                return Some(Op::Write {
                    lba,
                    data: Bytes::new(),
                });
            }
        }
        None
    }
}
