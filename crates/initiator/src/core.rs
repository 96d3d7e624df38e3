//! The full feature phase of one session over one connection (RFC 7143 §3.2.2,
//! §4.2.2, §11.3-§11.19), sans-IO: submit SCSI requests and feed received PDUs;
//! take PDUs to transmit, task completions and session events out.
//!
//! Covered: CmdSN window (ExpCmdSN/MaxCmdSN, §4.2.2.1), StatSN acknowledgement,
//! immediate data and unsolicited Data-Out (ImmediateData, InitialR2T,
//! FirstBurstLength, §13.10-§13.14), R2T answering (MaxBurstLength, DataSN),
//! Data-In assembly with status and residuals, sense data, NOP-In pings,
//! Asynchronous Messages (§11.9), Reject, and Logout (§11.14). ErrorRecoveryLevel 0.

use std::collections::{HashMap, VecDeque};

use bytes::{Bytes, BytesMut};
use iscsi_proto::params::SessionParams;
use iscsi_proto::{
    AsyncMessage, DataIn, DataOut, LogoutRequest, NopIn, NopOut, Pdu, R2t, RESERVED_TAG, Reject,
    ScsiCommand, ScsiResponse, SerialNumber, async_event, logout_reason,
};

use crate::cdb::{ScsiRequest, Transfer};
use crate::error::{Error, TaskError};
use crate::login::LoggedIn;
use crate::sense::Sense;

/// Hard bound on outstanding tasks regardless of the target's window.
pub const MAX_QUEUE_DEPTH: usize = 1024;
/// Hard bound on one task's data transfer (64 MiB).
pub const MAX_TRANSFER: u32 = 64 * 1024 * 1024;

/// SCSI status GOOD (SAM-5 §5.3.1).
pub const STATUS_GOOD: u8 = 0x00;
/// SCSI status CHECK CONDITION.
pub const STATUS_CHECK_CONDITION: u8 = 0x02;

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
    /// The id given to [`SessionCore::submit`].
    pub id: u64,
    /// Result.
    pub result: Result<ScsiResult, TaskError>,
}

/// Things the caller must know about the session as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoreEvent {
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
    Read { buf: BytesMut, next_data_sn: u32 },
    Write { data: Bytes },
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
pub struct SessionCore {
    params: SessionParams,
    cmd_sn: SerialNumber,
    max_cmd_sn: SerialNumber,
    exp_stat_sn: SerialNumber,
    next_itt: u32,
    queue_depth: usize,
    /// Waiting requests: caller's id, encoded LUN field, request.
    queue: VecDeque<(u64, u64, ScsiRequest)>,
    tasks: HashMap<u32, Task>,
    out: VecDeque<Pdu>,
    completions: VecDeque<Completion>,
    events: VecDeque<CoreEvent>,
    phase: Phase,
    logout_itt: u32,
}

impl SessionCore {
    /// Start the full feature phase from a finished login; at most `queue_depth`
    /// tasks are outstanding (further bounded by the target's MaxCmdSN).
    pub fn new(login: &LoggedIn, queue_depth: usize) -> Self {
        SessionCore {
            params: login.params.clone(),
            cmd_sn: SerialNumber(login.cmd_sn),
            max_cmd_sn: SerialNumber(login.max_cmd_sn),
            exp_stat_sn: SerialNumber(login.exp_stat_sn),
            next_itt: 0x1000,
            queue_depth: queue_depth.clamp(1, MAX_QUEUE_DEPTH),
            queue: VecDeque::new(),
            tasks: HashMap::new(),
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
    pub fn poll_event(&mut self) -> Option<CoreEvent> {
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

    fn alloc_itt(&mut self) -> u32 {
        loop {
            let itt = self.next_itt;
            self.next_itt = self.next_itt.wrapping_add(1);
            if itt != RESERVED_TAG && !self.tasks.contains_key(&itt) && itt != self.logout_itt {
                return itt;
            }
        }
    }

    /// Issue queued requests while allowed; send Logout when drained.
    fn pump(&mut self) {
        while self.phase == Phase::FullFeature
            && self.tasks.len() < self.queue_depth
            && self.cmd_sn.le(self.max_cmd_sn)
        {
            let Some((id, lun, req)) = self.queue.pop_front() else {
                break;
            };
            self.issue(id, lun, req);
        }
        if self.phase == Phase::Draining && self.tasks.is_empty() {
            self.logout_itt = self.alloc_itt();
            self.out.push_back(Pdu::LogoutRequest(LogoutRequest {
                immediate: true,
                reason_code: logout_reason::CLOSE_SESSION,
                itt: self.logout_itt,
                cid: 0,
                cmd_sn: self.cmd_sn.get(),
                exp_stat_sn: self.exp_stat_sn.get(),
            }));
            self.phase = Phase::LoggingOut;
        }
    }

    /// Send the SCSI Command (and any unsolicited Data-Out) for a request whose LUN
    /// field is already encoded.
    fn issue(&mut self, id: u64, lun: u64, req: ScsiRequest) {
        let itt = self.alloc_itt();
        let cmd_sn = self.cmd_sn;
        self.cmd_sn = self.cmd_sn.next();
        let mut cmd = ScsiCommand {
            final_: true,
            lun,
            itt,
            cmd_sn: cmd_sn.get(),
            exp_stat_sn: self.exp_stat_sn.get(),
            cdb: req.cdb,
            attr: 1, // SIMPLE task attribute (§11.3.1.3)
            ..Default::default()
        };
        let mut unsolicited = Vec::new();
        let data = match req.transfer {
            Transfer::None => Data::None,
            Transfer::Read(n) => {
                cmd.read = true;
                cmd.edtl = n;
                Data::Read {
                    buf: BytesMut::zeroed(n as usize),
                    next_data_sn: 0,
                }
            }
            Transfer::Write(data) => {
                cmd.write = true;
                let len = data.len() as u32;
                cmd.edtl = len;
                let p = &self.params;
                let first_burst = p.first_burst_length.min(len);
                let mut sent = 0u32;
                if p.immediate_data {
                    sent = first_burst.min(p.target_max_recv_data_segment_length);
                    cmd.data = data.slice(..sent as usize);
                }
                if !p.initial_r2t && sent < first_burst {
                    unsolicited = self.data_out_sequence(
                        itt,
                        lun,
                        RESERVED_TAG,
                        &data,
                        sent,
                        first_burst - sent,
                    );
                    cmd.final_ = false;
                }
                Data::Write { data }
            }
        };
        let edtl = cmd.edtl;
        self.out.push_back(Pdu::ScsiCommand(cmd));
        self.out.extend(unsolicited);
        self.tasks.insert(
            itt,
            Task {
                id,
                lun,
                edtl,
                data,
                fault: None,
            },
        );
    }

    /// Data-Out PDUs for `[offset, offset+len)`, DataSN from 0, F on the last (§11.7).
    fn data_out_sequence(
        &self,
        itt: u32,
        lun: u64,
        ttt: u32,
        data: &Bytes,
        offset: u32,
        len: u32,
    ) -> Vec<Pdu> {
        let max = self.params.target_max_recv_data_segment_length.max(512);
        let end = offset.saturating_add(len).min(data.len() as u32);
        let mut v = Vec::new();
        let mut off = offset;
        let mut data_sn = 0u32;
        while off < end {
            let n = max.min(end - off);
            v.push(Pdu::DataOut(DataOut {
                final_: off + n == end,
                lun,
                itt,
                ttt,
                exp_stat_sn: self.exp_stat_sn.get(),
                data_sn,
                buffer_offset: off,
                data: data.slice(off as usize..(off + n) as usize),
            }));
            off += n;
            data_sn += 1;
        }
        v
    }

    /// Update MaxCmdSN (§4.2.2.1): ignore when MaxCmdSN < ExpCmdSN - 1; never move back.
    /// ExpCmdSN itself is not kept: at ErrorRecoveryLevel 0 nothing is retransmitted.
    fn window(&mut self, exp: u32, max: u32) {
        let (exp, max) = (SerialNumber(exp), SerialNumber(max));
        if max.lt(exp.add(u32::MAX)) {
            return;
        }
        if max.gt(self.max_cmd_sn) {
            self.max_cmd_sn = max;
        }
    }

    fn stat_sn(&mut self, stat_sn: u32) {
        let next = SerialNumber(stat_sn).next();
        if next.gt(self.exp_stat_sn) {
            self.exp_stat_sn = next;
        }
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
                self.events.push_back(CoreEvent::LoggedOut {
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

    fn on_data_in(&mut self, d: DataIn) -> Result<(), Error> {
        self.window(d.exp_cmd_sn, d.max_cmd_sn);
        let Some(task) = self.tasks.get_mut(&d.itt) else {
            return Err(Error::Protocol(format!(
                "Data-In for unknown ITT {:#x}",
                d.itt
            )));
        };
        match &mut task.data {
            Data::Read { buf, next_data_sn } => {
                if d.data_sn != *next_data_sn {
                    task.fault.get_or_insert("Data-In DataSN out of order");
                }
                *next_data_sn = d.data_sn.wrapping_add(1);
                let off = d.buffer_offset as usize;
                match buf.get_mut(off..off.saturating_add(d.data.len())) {
                    Some(dst) => dst.copy_from_slice(&d.data),
                    None => {
                        task.fault
                            .get_or_insert("Data-In beyond the expected transfer length");
                    }
                }
            }
            _ => {
                task.fault
                    .get_or_insert("Data-In for a task without read data");
            }
        }
        if d.status_present {
            self.stat_sn(d.stat_sn);
            if !d.final_ {
                return Err(Error::Protocol("Data-In with S but not F".into()));
            }
            self.complete(
                d.itt,
                0,
                d.status,
                d.residual_underflow.then_some(d.residual_count),
                d.residual_overflow.then_some(d.residual_count),
                Bytes::new(),
            );
        }
        Ok(())
    }

    fn on_response(&mut self, r: ScsiResponse) -> Result<(), Error> {
        self.window(r.exp_cmd_sn, r.max_cmd_sn);
        self.stat_sn(r.stat_sn);
        if !self.tasks.contains_key(&r.itt) {
            return Err(Error::Protocol(format!(
                "SCSI Response for unknown ITT {:#x}",
                r.itt
            )));
        }
        self.complete(
            r.itt,
            r.response,
            r.status,
            r.residual_underflow.then_some(r.residual_count),
            r.residual_overflow.then_some(r.residual_count),
            r.sense,
        );
        Ok(())
    }

    fn complete(
        &mut self,
        itt: u32,
        response: u8,
        status: u8,
        underflow: Option<u32>,
        overflow: Option<u32>,
        sense: Bytes,
    ) {
        let Some(task) = self.tasks.remove(&itt) else {
            return;
        };
        let result = if response != 0 {
            Err(TaskError::TargetFailure(response))
        } else if status == STATUS_CHECK_CONDITION {
            Err(Sense::parse(&sense)
                .map(TaskError::CheckCondition)
                .unwrap_or(TaskError::CheckConditionNoSense))
        } else if status != STATUS_GOOD {
            Err(TaskError::Status(status))
        } else if let Some(f) = task.fault {
            Err(TaskError::Protocol(f))
        } else {
            let under = underflow.unwrap_or(0).min(task.edtl);
            let data = match task.data {
                Data::Read { mut buf, .. } => {
                    buf.truncate((task.edtl - under) as usize);
                    buf.freeze()
                }
                _ => Bytes::new(),
            };
            Ok(ScsiResult {
                data,
                residual_underflow: under,
                residual_overflow: overflow.unwrap_or(0),
            })
        };
        self.completions.push_back(Completion {
            id: task.id,
            result,
        });
    }

    fn on_r2t(&mut self, r: R2t) -> Result<(), Error> {
        self.window(r.exp_cmd_sn, r.max_cmd_sn);
        let Some(task) = self.tasks.get(&r.itt) else {
            return Err(Error::Protocol(format!("R2T for unknown ITT {:#x}", r.itt)));
        };
        let Data::Write { data } = &task.data else {
            return Err(Error::Protocol("R2T for a task without write data".into()));
        };
        let end = r.buffer_offset as u64 + r.desired_data_transfer_length as u64;
        if end > data.len() as u64 || r.desired_data_transfer_length > self.params.max_burst_length
        {
            return Err(Error::Protocol(format!(
                "R2T offset {} length {} outside the transfer or above MaxBurstLength",
                r.buffer_offset, r.desired_data_transfer_length
            )));
        }
        let pdus = self.data_out_sequence(
            r.itt,
            task.lun,
            r.ttt,
            data,
            r.buffer_offset,
            r.desired_data_transfer_length,
        );
        self.out.extend(pdus);
        Ok(())
    }

    fn on_nop_in(&mut self, n: NopIn) {
        self.window(n.exp_cmd_sn, n.max_cmd_sn);
        if n.itt != RESERVED_TAG {
            // Answer to a ping of ours: StatSN advanced (§11.19.5).
            self.stat_sn(n.stat_sn);
        }
        if n.ttt != RESERVED_TAG && self.phase != Phase::Closed {
            let answer = NopOut::answer(&n, self.cmd_sn.get(), self.exp_stat_sn.get());
            self.out.push_back(Pdu::NopOut(answer));
        }
    }

    fn on_async(&mut self, a: AsyncMessage) {
        self.window(a.exp_cmd_sn, a.max_cmd_sn);
        self.stat_sn(a.stat_sn);
        match a.async_event {
            async_event::LOGOUT_REQUESTED => {
                self.events.push_back(CoreEvent::LogoutRequested {
                    within_secs: a.parameter3,
                });
                self.logout();
            }
            async_event::CONNECTION_DROP | async_event::SESSION_DROP => {
                self.close();
                self.events.push_back(CoreEvent::DropAnnounced {
                    session: a.async_event == async_event::SESSION_DROP,
                    time2wait: a.parameter2,
                });
            }
            async_event::NEGOTIATION_REQUEST => {
                self.events.push_back(CoreEvent::RenegotiationRequested);
                self.logout();
            }
            async_event::SCSI_EVENT => {
                let sense = a.data.get(2..).and_then(Sense::parse);
                self.events.push_back(CoreEvent::ScsiEvent(sense));
            }
            _ => {}
        }
    }

    fn on_reject(&mut self, r: Reject) {
        self.window(r.exp_cmd_sn, r.max_cmd_sn);
        self.stat_sn(r.stat_sn);
        let itt = r
            .header
            .get(16..20)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
            .unwrap_or(RESERVED_TAG);
        if let Some(task) = self.tasks.remove(&itt) {
            self.fail(task.id, TaskError::Rejected(r.reason));
        }
    }
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
