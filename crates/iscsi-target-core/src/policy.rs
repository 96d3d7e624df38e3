//! The seam between a connection core and the target's control plane (the patent's configuration
//! table): the core asks a [`LoginPolicy`] how to answer a login (RFC 7143 §6.3, §11.13.5) and
//! which portals a SendTargets answer (§12.3) must leave out, and is told to act on a session
//! through [`SessionCommand`]s.

use balancer::PortalId;

/// How a normal-session login for (initiator, target) through a portal is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginDecision {
    /// Log the initiator in here, with this Portal Group Tag.
    Accept { portal_group_tag: u16 },
    /// Answer 0x0101 "target moved temporarily" with `TargetAddress=address` (`IP:PORT`).
    Redirect { address: String },
    /// The target name is not served (0x0203).
    NotFound,
    /// The target is shutting down: 0x0301 "service unavailable" (RFC 7143 §11.13.5), which
    /// tells the initiator to try again later.
    Unavailable,
}

/// The control plane as a connection core sees it: during login, and when it answers
/// SendTargets. Implemented by the target's configuration table; a test passes its own.
pub trait LoginPolicy {
    /// How to answer a normal-session login for (`initiator`, `target`) arriving on `portal`.
    fn login_decision(&mut self, portal: PortalId, initiator: &str, target: &str) -> LoginDecision;
    /// A fresh non-zero Target Session Identifying Handle (§11.12.6).
    fn next_tsih(&mut self) -> u16;
    /// The portals of `target` that are withheld now: those whose (target, portal)
    /// registration the balancer holds deleted in iSNS (the patent's step 107). A SendTargets
    /// answer, on whichever portal it is asked, leaves their `TargetAddress` out for `target`,
    /// so that hosts discovering by SendTargets see what hosts asking iSNS see. Asked each time
    /// an answer is built. The default withholds nothing.
    fn withheld_portals(&mut self, target: &str) -> Vec<PortalId> {
        let _ = target;
        Vec::new()
    }
}

/// What the control plane can ask of a live session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionCommand {
    /// Send an Async Message with AsyncEvent 1, "logout requested" (RFC 7143 §11.9.1), asking
    /// the initiator to log out within `time2logout` seconds.
    RequestLogout { time2logout: u16 },
}
