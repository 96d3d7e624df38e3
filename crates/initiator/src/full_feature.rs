//! The full feature phase of one session over one connection (RFC 7143 §3.2.2,
//! §4.2.2, §11.3-§11.19), sans-IO: submit SCSI requests and feed received PDUs;
//! take PDUs to transmit, task completions and session events out.
//!
//! Covered: CmdSN window (ExpCmdSN/MaxCmdSN, §4.2.2.1), StatSN acknowledgement,
//! immediate data and unsolicited Data-Out (ImmediateData, InitialR2T,
//! FirstBurstLength, §13.10-§13.14), R2T answering (MaxBurstLength, DataSN),
//! Data-In assembly with status and residuals, sense data, NOP-In pings,
//! Asynchronous Messages (§11.9), Reject, and Logout (§11.14). ErrorRecoveryLevel 0.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use iscsi_proto::params::SessionParams;
use iscsi_proto::{Pdu, RESERVED_TAG, SerialNumber};
use scsi::Sense;

use crate::cdb::{ScsiRequest, Transfer};
use crate::error::{Error, TaskError};
use crate::id_map::IdMap;
use crate::login::LoggedIn;

/// Hard bound on outstanding tasks regardless of the target's window.
pub const MAX_QUEUE_DEPTH: usize = 1024;
/// Hard bound on one task's data transfer (64 MiB).
pub const MAX_TRANSFER: u32 = 64 * 1024 * 1024;

/// A task that completed with GOOD status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScsiResult {
    /// Data-In (trimmed by the residual underflow), empty for other directions.
    pub data: Bytes,
    /// Residual underflow count (§11.4.5): bytes the target did not transfer.
    pub residual_underflow: u32,
    /// Residual overflow count: bytes the target would have transferred beyond EDTL.
    pub residual_overflow: u32,
}

/// The outcome of one submitted request, identified by the caller's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The id given to [`FullFeatureSession::submit`].
    pub id: u64,
    /// Result.
    pub result: Result<ScsiResult, TaskError>,
}

/// Things the caller must know about the session as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FullFeatureEvent {
    /// AsyncEvent 1: the target asks us to log out within `within_secs` (§11.9.1).
    /// The core has stopped issuing and will log out once outstanding tasks finish.
    LogoutRequested {
        /// Parameter3.
        within_secs: u16,
    },
    /// AsyncEvent 2/3: the target is dropping the connection or session; all
    /// outstanding tasks were completed as [`TaskError::Unfinished`].
    DropAnnounced {
        /// True for a session drop (event 3).
        session: bool,
        /// Parameter2: Time2Wait in seconds.
        time2wait: u16,
    },
    /// AsyncEvent 4: renegotiation requested; handled as a logout and new login.
    RenegotiationRequested,
    /// AsyncEvent 0: a SCSI asynchronous event (sense data).
    ScsiEvent(Option<Sense>),
    /// The Logout Response arrived; the session is closed.
    LoggedOut {
        /// Logout Response Time2Wait.
        time2wait: u16,
    },
}

/// Session phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Issuing commands.
    FullFeature,
    /// No new commands; waiting for outstanding ones, then logging out.
    Draining,
    /// Logout Request sent.
    LoggingOut,
    /// Nothing more will happen on this connection.
    Closed,
}

#[derive(Debug)]
enum Data {
    None,
    /// Read data: `whole` while one Data-In carried all of it from offset 0 (kept as the
    /// decoder split it off the connection's buffer: no copy), else assembled in `buf`.
    Read {
        buf: BytesMut,
        whole: Option<Bytes>,
        next_data_sn: u32,
    },
    Write {
        data: Bytes,
    },
}

#[derive(Debug)]
struct Task {
    id: u64,
    lun: u64,
    edtl: u32,
    data: Data,
    /// First protocol problem seen in this task's Data-In/R2T; reported at status time.
    fault: Option<&'static str>,
}

/// Protocol state of one logged-in session.
#[derive(Debug)]
pub struct FullFeatureSession {
    params: SessionParams,
    cmd_sn: SerialNumber,
    max_cmd_sn: SerialNumber,
    exp_stat_sn: SerialNumber,
    next_itt: u32,
    queue_depth: usize,
    /// Waiting requests: caller's id, encoded LUN field, request.
    queue: VecDeque<(u64, u64, ScsiRequest)>,
    tasks: IdMap<u32, Task>,
    out: VecDeque<Pdu>,
    completions: VecDeque<Completion>,
    events: VecDeque<FullFeatureEvent>,
    phase: Phase,
    logout_itt: u32,
}

impl FullFeatureSession {
    /// Start the full feature phase from a finished login; at most `queue_depth`
    /// tasks are outstanding (further bounded by the target's MaxCmdSN).
    pub fn new(login: &LoggedIn, queue_depth: usize) -> Self {
        FullFeatureSession {
            params: login.params.clone(),
            cmd_sn: SerialNumber(login.cmd_sn),
            max_cmd_sn: SerialNumber(login.max_cmd_sn),
            exp_stat_sn: SerialNumber(login.exp_stat_sn),
            next_itt: 0x1000,
            queue_depth: queue_depth.clamp(1, MAX_QUEUE_DEPTH),
            queue: VecDeque::new(),
            tasks: IdMap::default(),
            out: VecDeque::new(),
            completions: VecDeque::new(),
            events: VecDeque::new(),
            phase: Phase::FullFeature,
            logout_itt: RESERVED_TAG,
        }
    }

    /// Negotiated parameters.
    pub fn params(&self) -> &SessionParams {
        &self.params
    }

    /// Current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Tasks issued and not completed.
    pub fn outstanding(&self) -> usize {
        self.tasks.len()
    }

    /// Requests waiting for the window.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Queue a SCSI request; it is issued when the CmdSN window and queue depth allow.
    pub fn submit(&mut self, id: u64, req: ScsiRequest) {
        let too_big = match &req.transfer {
            Transfer::Read(n) => *n > MAX_TRANSFER,
            Transfer::Write(d) => d.len() > MAX_TRANSFER as usize,
            Transfer::None => false,
        };
        let lun = match scsi::encode_lun(req.lun) {
            _ if too_big => {
                return self.fail(id, TaskError::Protocol("transfer larger than MAX_TRANSFER"));
            }
            None => return self.fail(id, TaskError::Protocol("LUN beyond flat space addressing")),
            Some(lun) => lun,
        };
        if self.phase == Phase::Closed {
            return self.fail(id, TaskError::Unfinished);
        }
        self.queue.push_back((id, lun, req));
        self.pump();
    }

    /// Start a graceful logout: stop issuing, wait for outstanding tasks, then
    /// send Logout (close session). Queued requests complete as `Unfinished`.
    pub fn logout(&mut self) {
        if self.phase == Phase::FullFeature {
            self.phase = Phase::Draining;
        }
        self.pump();
    }

    /// The connection is gone: every outstanding and queued request completes as `Unfinished`.
    pub fn connection_lost(&mut self) {
        self.close();
    }

    /// Next PDU to send.
    pub fn poll_transmit(&mut self) -> Option<Pdu> {
        self.out.pop_front()
    }

    /// Next completed request.
    pub fn poll_completion(&mut self) -> Option<Completion> {
        self.completions.pop_front()
    }

    /// Next session event.
    pub fn poll_event(&mut self) -> Option<FullFeatureEvent> {
        self.events.pop_front()
    }

    /// Complete request `id` with an error.
    fn fail(&mut self, id: u64, error: TaskError) {
        self.completions.push_back(Completion {
            id,
            result: Err(error),
        });
    }

    fn close(&mut self) {
        self.phase = Phase::Closed;
        let mut ids: Vec<(u32, u64)> = self.tasks.drain().map(|(itt, t)| (itt, t.id)).collect();
        ids.sort_unstable();
        let queued: Vec<u64> = self.queue.drain(..).map(|(id, _, _)| id).collect();
        for id in ids.into_iter().map(|(_, id)| id).chain(queued) {
            self.fail(id, TaskError::Unfinished);
        }
        self.out.clear();
    }

    /// Feed one received PDU. `Err` means the connection must be dropped
    /// (call [`connection_lost`](Self::connection_lost) after closing it).
    pub fn receive(&mut self, pdu: Pdu) -> Result<(), Error> {
        match pdu {
            Pdu::DataIn(d) => self.on_data_in(d)?,
            Pdu::ScsiResponse(r) => self.on_response(r)?,
            Pdu::R2t(r) => self.on_r2t(r)?,
            Pdu::NopIn(n) => self.on_nop_in(n),
            Pdu::AsyncMessage(a) => self.on_async(a),
            Pdu::Reject(r) => self.on_reject(r),
            Pdu::LogoutResponse(r) => {
                self.window(r.exp_cmd_sn, r.max_cmd_sn);
                self.stat_sn(r.stat_sn);
                if r.itt != self.logout_itt || self.phase != Phase::LoggingOut {
                    return Err(Error::Protocol("unexpected Logout Response".into()));
                }
                self.close();
                self.events.push_back(FullFeatureEvent::LoggedOut {
                    time2wait: r.time2wait,
                });
            }
            Pdu::TaskMgmtResponse(r) => {
                self.window(r.exp_cmd_sn, r.max_cmd_sn);
                self.stat_sn(r.stat_sn);
            }
            Pdu::TextResponse(r) => {
                self.window(r.exp_cmd_sn, r.max_cmd_sn);
                self.stat_sn(r.stat_sn);
            }
            other => {
                return Err(Error::Protocol(format!(
                    "target sent {:?} in full feature phase",
                    other.opcode()
                )));
            }
        }
        self.pump();
        Ok(())
    }
}

mod command_window;
mod data_in;
mod data_out;
mod session_messages;
#[cfg(test)]
mod tests;
