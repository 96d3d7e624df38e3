//! A portshift initiator without I/O: the balancer-following [`Follower`] with the shell
//! `initiator::balanced` puts around it (look up portals, log in with a [`LoginExchange`], run
//! a [`FullFeatureSession`], re-issue what a closed session left unfinished), plus a verifying
//! workload: one-block WRITEs tagged with a unique command id, read back and compared.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use initiator::follower::{
    Action, Event, Follower, FollowerConfig, InitiatorEvent, MoveRecord, ReconnectRecord, Record,
    State,
};
use initiator::full_feature::FullFeatureSession;
use initiator::login::{LoginConfig, LoginExchange};
use iscsi_proto::{Digests, Limits, Pdu, PduDecoder, Prefs};
use iscsi_target_core::PortalInfo;

use crate::isns::IsnsServer;
use crate::link::{ConnId, Links};

mod wire;
mod workload;

use wire::send;
use workload::Op;
pub use workload::block_for;

/// Block size of the simulated LUNs.
pub const BLOCK: u32 = 512;

/// Where an initiator learns the portals to log in through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discovery {
    /// Ask iSNS (portshift's initiator).
    Isns,
    /// Always this address (a stock initiator: it follows login redirects only).
    Fixed(SocketAddr),
}

/// One initiator and its workload.
#[derive(Debug, Clone)]
pub struct InitiatorConfig {
    pub name: String,
    pub target: String,
    pub discovery: Discovery,
    /// Commands the workload keeps outstanding.
    pub queue_depth: usize,
    /// The session's own queue depth (commands on the wire); the rest wait in the session's
    /// queue and, when a session ends before sending them, come back unfinished and are
    /// re-issued on the next one.
    pub session_depth: usize,
    /// Time between new commands (between bursts); `None` for an idle initiator.
    pub interval: Option<Duration>,
    /// Commands issued together every `interval`.
    pub burst: usize,
    /// The blocks this initiator writes: `lba_base .. lba_base + lba_span`.
    pub lba_base: u64,
    pub lba_span: u64,
    /// Read every written block back and compare.
    pub verify: bool,
}

impl InitiatorConfig {
    pub fn new(name: &str, target: &str, discovery: Discovery) -> Self {
        InitiatorConfig {
            name: name.into(),
            target: target.into(),
            discovery,
            queue_depth: 4,
            session_depth: 4,
            interval: Some(Duration::from_millis(50)),
            burst: 1,
            lba_base: 0,
            lba_span: 16,
            verify: true,
        }
    }
}

/// What the rest of the world looks like to an initiator at one instant.
pub struct Net<'a> {
    pub links: &'a mut Links,
    pub isns: &'a mut IsnsServer,
    pub portals: &'a [PortalInfo],
    pub now_ms: u64,
}

/// A login response as the initiator saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginAnswer {
    pub portal: SocketAddr,
    pub status_class: u8,
    pub status_detail: u8,
    pub target_address: Option<String>,
}

#[derive(Debug)]
enum Wire {
    Idle,
    Login {
        conn: ConnId,
        portal: SocketAddr,
        exchange: Box<LoginExchange>,
        decoder: PduDecoder,
    },
    Full {
        conn: ConnId,
        ffp: Box<FullFeatureSession>,
        decoder: PduDecoder,
        digests: Digests,
    },
}

/// One simulated initiator.
#[derive(Debug)]
pub struct SimInitiator {
    pub config: InitiatorConfig,
    index: u64,
    follower: Follower,
    wire: Wire,
    inbox: VecDeque<Event>,
    issuing: bool,
    leaving: bool,
    stop_sent: bool,
    /// Why the follower gave up, if it did.
    pub failed: Option<String>,
    /// Everything the follower reported, with the (virtual) unix ms.
    pub events: Vec<(u64, InitiatorEvent)>,
    pub moves: Vec<MoveRecord>,
    pub reconnects: Vec<ReconnectRecord>,
    /// Every login response.
    pub logins: Vec<LoginAnswer>,
    next_seq: u64,
    next_issue: Instant,
    issued_in_burst: usize,
    cursor: u64,
    ops: BTreeMap<u64, Op>,
    retry: VecDeque<u64>,
    submitted: BTreeSet<u64>,
    busy: BTreeSet<u64>,
    written: BTreeMap<u64, Bytes>,
    unread: VecDeque<u64>,
    /// Ids of the commands that completed successfully, in completion order.
    pub completed: Vec<u64>,
    /// Successful completions per command id.
    pub completions: BTreeMap<u64, u32>,
    /// Commands that failed for good, and reads that returned the wrong data.
    pub errors: Vec<String>,
    /// Ids of the WRITEs that completed successfully.
    pub written_ids: BTreeSet<u64>,
    /// Commands submitted again after their session ended unfinished.
    pub reissued: u64,
}

impl SimInitiator {
    /// The `index`-th initiator of a world (its command ids are `index << 40 | seq`).
    pub fn new(config: InitiatorConfig, index: u64, now: Instant, now_ms: u64) -> Self {
        let follower = Follower::new(
            FollowerConfig {
                isns: config.discovery == Discovery::Isns,
                max_attempts: 30,
                reconnect_every: None,
            },
            now,
            now_ms,
        );
        SimInitiator {
            config,
            index,
            follower,
            wire: Wire::Idle,
            inbox: VecDeque::new(),
            issuing: false,
            leaving: false,
            stop_sent: false,
            failed: None,
            events: Vec::new(),
            moves: Vec::new(),
            reconnects: Vec::new(),
            logins: Vec::new(),
            next_seq: 0,
            next_issue: now,
            issued_in_burst: 0,
            cursor: 0,
            ops: BTreeMap::new(),
            retry: VecDeque::new(),
            submitted: BTreeSet::new(),
            busy: BTreeSet::new(),
            written: BTreeMap::new(),
            unread: VecDeque::new(),
            completed: Vec::new(),
            completions: BTreeMap::new(),
            errors: Vec::new(),
            written_ids: BTreeSet::new(),
            reissued: 0,
        }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn state(&self) -> &State {
        self.follower.state()
    }

    /// The portal of the session in full-feature phase, if any.
    pub fn portal(&self) -> Option<SocketAddr> {
        match (&self.wire, self.follower.state()) {
            (Wire::Full { .. }, State::LoggedIn { portal, .. }) => Some(*portal),
            _ => None,
        }
    }

    /// Commands generated so far.
    pub fn generated(&self) -> u64 {
        self.next_seq
    }

    /// Commands generated and not yet completed.
    pub fn outstanding(&self) -> usize {
        self.ops.len()
    }

    /// Stops generating commands; once every one has completed, the initiator logs out.
    pub fn leave(&mut self) {
        self.leaving = true;
    }

    pub fn is_leaving(&self) -> bool {
        self.leaving
    }

    /// Gone for good: logged out after [`SimInitiator::leave`], or failed.
    pub fn is_done(&self) -> bool {
        matches!(self.follower.state(), State::Stopped | State::Failed { .. })
    }

    /// Changes the time between new commands.
    pub fn set_interval(&mut self, interval: Option<Duration>) {
        self.config.interval = interval;
    }

    /// The follower's and the workload's next deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let issue = (self.issuing
            && !self.leaving
            && matches!(self.wire, Wire::Full { .. })
            && self.config.interval.is_some()
            && self.submitted.len() < self.config.queue_depth)
            .then_some(self.next_issue);
        [self.follower.poll_timeout(), issue]
            .into_iter()
            .flatten()
            .min()
    }

    /// Time has come to `now`: the follower's timer, if due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.follower.poll_timeout().is_some_and(|t| t <= now) {
            self.inbox.push_back(Event::Tick);
        }
    }

    /// Runs everything that can run at `now`; true if anything happened.
    pub fn poll(&mut self, now: Instant, net: &mut Net<'_>) -> bool {
        let mut any = false;
        loop {
            let mut progress = self.receive(net);
            while let Some(a) = self.follower.poll_action() {
                progress = true;
                self.execute(a, net);
            }
            if let Some(ev) = self.inbox.pop_front() {
                self.follower.handle(now, ev);
                progress = true;
            }
            progress |= self.issue(now);
            if self.leaving && !self.stop_sent && self.ops.is_empty() {
                self.stop_sent = true;
                self.inbox.push_back(Event::Stop);
                progress = true;
            }
            progress |= self.flush(net);
            if !progress {
                return any;
            }
            any = true;
        }
    }

    /// Carries out one of the follower's actions (`balanced::shell::Shell::execute`).
    fn execute(&mut self, action: Action, net: &mut Net<'_>) {
        match action {
            Action::StopIssuing => self.issuing = false,
            Action::SendLogout => {
                if let Wire::Full { ffp, .. } = &mut self.wire {
                    ffp.logout();
                }
            }
            Action::LookUpPortals => {
                let ev = match self.config.discovery {
                    Discovery::Isns => match net.isns.query_portals(
                        &self.config.name,
                        &self.config.target,
                        net.now_ms / 1000,
                    ) {
                        Ok(p) => Event::Discovered(p),
                        Err(e) => Event::DiscoveryFailed(e),
                    },
                    Discovery::Fixed(a) => Event::Discovered(vec![a]),
                };
                self.inbox.push_back(ev);
            }
            Action::Login(addr) => self.connect(addr, net),
            Action::Reissue => {
                if matches!(self.wire, Wire::Full { .. }) {
                    self.issuing = true;
                }
            }
            Action::Record(Record::Move(m)) => {
                self.events.push((net.now_ms, m.event()));
                self.moves.push(m);
            }
            Action::Record(Record::Reconnect(r)) => {
                self.events.push((net.now_ms, r.event()));
                self.reconnects.push(r);
            }
            Action::Emit(e) => self.events.push((net.now_ms, e)),
            Action::Fail(reason) => self.failed = Some(reason),
            Action::Shutdown => {
                self.issuing = false;
                if let Wire::Login { conn, .. } = self.wire {
                    net.links.close_initiator(conn);
                    self.wire = Wire::Idle;
                }
            }
        }
    }

    /// Opens a connection to `addr` and sends the first login request.
    fn connect(&mut self, addr: SocketAddr, net: &mut Net<'_>) {
        self.drop_wire(net);
        let Some(portal) = net.portals.iter().find(|p| p.address == addr) else {
            self.inbox
                .push_back(Event::LoginFailed(format!("{addr}: connection refused")));
            return;
        };
        let conn = net.links.open(portal.id);
        let i = self.index.to_be_bytes();
        let config = LoginConfig {
            initiator_name: self.config.name.clone(),
            target_name: Some(self.config.target.clone()),
            isid: [0x80, 0, 0, 0, i[6], i[7]],
            prefs: Prefs::initiator_default(),
            auth: None,
        };
        let mut exchange = LoginExchange::new(config, 0, 1);
        let Ok(first) = exchange.start() else {
            self.inbox
                .push_back(Event::LoginFailed("login start".into()));
            return;
        };
        send(net.links, conn, &Pdu::LoginRequest(first), Digests::NONE);
        self.wire = Wire::Login {
            conn,
            portal: addr,
            exchange: Box::new(exchange),
            decoder: PduDecoder::new(Limits::default()),
        };
    }

    fn drop_wire(&mut self, net: &mut Net<'_>) {
        match std::mem::replace(&mut self.wire, Wire::Idle) {
            Wire::Idle => {}
            Wire::Login { conn, .. } | Wire::Full { conn, .. } => net.links.close_initiator(conn),
        }
    }

    /// Writes the session's PDUs to its link; true if any.
    fn flush(&mut self, net: &mut Net<'_>) -> bool {
        let Wire::Full {
            conn, ffp, digests, ..
        } = &mut self.wire
        else {
            return false;
        };
        let mut any = false;
        while let Some(p) = ffp.poll_transmit() {
            any = true;
            send(net.links, *conn, &p, *digests);
        }
        any
    }
}
