//! Target-initiated traffic and timers: the Async Message "logout requested" and the
//! connection drop after its deadline (RFC 7143 §11.9.1), NOP-Out answers and idle pings
//! (§11.18, §11.19).

use std::time::{Duration, Instant};

use bytes::Bytes;
use iscsi_proto::{AsyncMessage, NopIn, NopOut, RESERVED_TAG, async_event};

use super::{Connection, LOGIN_TIMEOUT, LOGOUT_GRACE, PING_IDLE, PING_TIMEOUT, Phase};
use crate::event::CloseReason;
use crate::policy::SessionCommand;

impl Connection {
    /// A command from the control plane.
    pub fn on_command(&mut self, cmd: SessionCommand, now: Instant) {
        let SessionCommand::RequestLogout { time2logout } = cmd;
        self.request_logout(time2logout, now);
    }

    /// Asks the initiator to log out within `time2logout` seconds (AsyncEvent 1); it is
    /// dropped [`LOGOUT_GRACE`] after that.
    pub fn request_logout(&mut self, time2logout: u16, now: Instant) {
        let Phase::Full(s) = &mut self.phase else {
            return;
        };
        if self.closing.is_some() || self.logout_deadline.is_some() {
            return;
        }
        let msg = AsyncMessage {
            lun: 0,
            stat_sn: s.next_stat_sn(),
            exp_cmd_sn: s.exp_cmd_sn,
            max_cmd_sn: s.max_cmd_sn(),
            async_event: async_event::LOGOUT_REQUESTED,
            parameter3: time2logout,
            ..AsyncMessage::default()
        };
        self.logout_deadline = Some(now + Duration::from_secs(time2logout.into()) + LOGOUT_GRACE);
        self.logout_requested = Some((now, time2logout));
        self.push(msg);
    }

    /// When [`Connection::handle_timeout`] next has something to do, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.is_closing() {
            return None;
        }
        if let Phase::Login(_) = self.phase {
            return Some(self.login_deadline);
        }
        let ping = match self.ping {
            Some((_, sent)) => sent + PING_TIMEOUT,
            None => self.last_rx + PING_IDLE,
        };
        Some(self.logout_deadline.map_or(ping, |d| d.min(ping)))
    }

    /// Timers at `now`: the login deadline ([`LOGIN_TIMEOUT`]), the logout deadline, idle
    /// pings and their timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.is_closing() {
            return;
        }
        let Phase::Full(s) = &mut self.phase else {
            if now >= self.login_deadline {
                self.fail(&format!(
                    "login not completed within {} s",
                    LOGIN_TIMEOUT.as_secs()
                ));
            }
            return;
        };
        if let Some(deadline) = self.logout_deadline
            && now >= deadline
        {
            // §11.9.1 AsyncEvent 2: the target drops this connection.
            let msg = AsyncMessage {
                stat_sn: s.next_stat_sn(),
                exp_cmd_sn: s.exp_cmd_sn,
                max_cmd_sn: s.max_cmd_sn(),
                async_event: async_event::CONNECTION_DROP,
                parameter2: s.params.default_time2wait,
                parameter3: s.params.default_time2retain,
                ..AsyncMessage::default()
            };
            self.push(msg);
            let (asked, time2logout) = self.logout_requested.unwrap_or((deadline, 0));
            let why = CloseReason::LogoutIgnored {
                time2logout,
                waited: now.saturating_duration_since(asked),
            };
            tracing::warn!(portal = %self.portal, "closing connection: {why}");
            self.close(why);
            return;
        }
        match self.ping {
            Some((_, sent)) if now.duration_since(sent) >= PING_TIMEOUT => {
                self.fail("NOP-In ping not answered");
            }
            None if now.duration_since(self.last_rx) >= PING_IDLE => {
                let ttt = s.ttt();
                let nop = NopIn {
                    lun: 0,
                    itt: RESERVED_TAG,
                    ttt,
                    stat_sn: s.stat_sn,
                    exp_cmd_sn: s.exp_cmd_sn,
                    max_cmd_sn: s.max_cmd_sn(),
                    data: Bytes::new(),
                };
                self.ping = Some((ttt, now));
                self.push(nop);
            }
            _ => {}
        }
    }

    /// A NOP-Out answering our ping with `ttt` (§11.18.1).
    pub(super) fn on_ping_answer(&mut self, ttt: u32) {
        if self.ping.is_some_and(|(t, _)| t == ttt) {
            self.ping = None;
        }
    }

    /// A NOP-Out ping from the initiator: echoed in a NOP-In (§11.19).
    pub(super) fn on_nop_out(&mut self, n: NopOut, _now: Instant) {
        let Some(s) = self.session() else { return };
        let limit = s.params.initiator_max_recv_data_segment_length as usize;
        let data = n.data.slice(..n.data.len().min(limit));
        let nop = NopIn {
            lun: n.lun,
            itt: n.itt,
            ttt: RESERVED_TAG,
            stat_sn: s.next_stat_sn(),
            exp_cmd_sn: s.exp_cmd_sn,
            max_cmd_sn: s.max_cmd_sn(),
            data,
        };
        self.push(nop);
    }
}
