//! Finding a target's portals: SendTargets in a discovery session (RFC 7143
//! §12.3, Appendix C) and DevAttrQry through iSNS (RFC 4171 §5.6.5.2), from one iSNS server or
//! the first of several that answers ([`IsnsServers`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use iscsi_proto::text::{TextAssembler, TextPairs};
use iscsi_proto::{LogoutRequest, Pdu, RESERVED_TAG, TextRequest, logout_reason};

use crate::error::Error;
use crate::login::LoginConfig;
use crate::session::{SessionConfig, login_following_redirects};

/// Bound on Text Response PDUs of one SendTargets exchange.
const MAX_TEXT_PDUS: usize = 64;
/// ITT of the SendTargets text request.
const TEXT_ITT: u32 = 1;

/// One target in a SendTargets answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DiscoveredTarget {
    /// TargetName.
    pub name: String,
    /// Its TargetAddress values that parse as IP:port, in answer order.
    pub portals: Vec<SocketAddr>,
}

/// A SendTargets answer (§12.3) as targets with the addresses that are IP literals.
pub fn parse_send_targets(pairs: &TextPairs) -> Result<Vec<DiscoveredTarget>, Error> {
    Ok(
        iscsi_proto::sendtargets::parse_send_targets_response(pairs)?
            .into_iter()
            .map(|t| DiscoveredTarget {
                name: t.name,
                portals: t.addresses.iter().filter_map(|a| a.socket_addr()).collect(),
            })
            .collect(),
    )
}

/// The Text Request carrying `SendTargets=All`, or an empty continuation with `ttt`.
pub fn send_targets_request(cmd_sn: u32, exp_stat_sn: u32, ttt: u32) -> TextRequest {
    let data = if ttt == RESERVED_TAG {
        iscsi_proto::sendtargets::send_targets_request("All").to_bytes()
    } else {
        bytes::Bytes::new()
    };
    TextRequest {
        immediate: false,
        final_: true,
        continue_: false,
        lun: 0,
        itt: TEXT_ITT,
        ttt,
        cmd_sn,
        exp_stat_sn,
        data,
    }
}

/// Log in to `portal` as a discovery session, ask SendTargets=All, log out.
pub async fn send_targets(
    portal: SocketAddr,
    initiator_name: &str,
    timeout: Duration,
) -> Result<Vec<DiscoveredTarget>, Error> {
    send_targets_with(portal, LoginConfig::discovery(initiator_name), timeout).await
}

/// [`send_targets`] with the discovery login `login` (e.g. with CHAP,
/// [`LoginConfig::with_auth`]).
pub async fn send_targets_with(
    portal: SocketAddr,
    login: LoginConfig,
    timeout: Duration,
) -> Result<Vec<DiscoveredTarget>, Error> {
    let config = SessionConfig {
        login,
        queue_depth: 1,
        timeout,
    };
    let (mut t, logged, _) = login_following_redirects(portal, &config).await?;
    let mut cmd_sn = logged.cmd_sn;
    let mut exp_stat_sn = logged.exp_stat_sn;
    let mut text = TextAssembler::default();
    let mut ttt = RESERVED_TAG;
    let mut answer = None;
    for _ in 0..MAX_TEXT_PDUS {
        t.send(&Pdu::TextRequest(send_targets_request(
            cmd_sn,
            exp_stat_sn,
            ttt,
        )))
        .await?;
        cmd_sn = cmd_sn.wrapping_add(1);
        let Pdu::TextResponse(r) = t.recv().await? else {
            return Err(Error::Protocol("expected a Text Response".into()));
        };
        exp_stat_sn = r.stat_sn.wrapping_add(1);
        if let Some(pairs) = text.push(&r.data, r.continue_)? {
            answer = Some(pairs);
            break;
        }
        ttt = r.ttt;
    }
    let pairs = answer.ok_or_else(|| Error::Protocol("SendTargets answer too long".into()))?;
    t.send(&Pdu::LogoutRequest(LogoutRequest {
        immediate: true,
        reason_code: logout_reason::CLOSE_SESSION,
        itt: TEXT_ITT + 1,
        cid: 0,
        cmd_sn,
        exp_stat_sn,
    }))
    .await?;
    // The answer is what matters; a target that closes instead of answering the Logout is tolerated.
    let _ = t.recv().await;
    parse_send_targets(&pairs)
}

/// Ask the iSNS server at `server` for the portals of `target`, in the order it lists them.
pub async fn isns_portals(
    server: SocketAddr,
    initiator_name: &str,
    target: &str,
    timeout: Duration,
) -> Result<Vec<SocketAddr>, Error> {
    let q = async {
        let mut c = isns::Client::connect(server).await?;
        c.set_timeout(timeout);
        c.query_target_portals(initiator_name, target).await
    };
    tokio::time::timeout(timeout, q)
        .await
        .map_err(|_| Error::Timeout("iSNS query"))?
        .map_err(|e| Error::Discovery(format!("iSNS server {server}: {e}")))
}

/// Several iSNS servers for discovery (`--isns H:P,H:P`): a query goes to the server that
/// answered last (the first one at the start) and, when that one does not answer within the
/// timeout, to the next, each at most once ([`isns::FailoverClient`]). Clones share the
/// connection and the choice of server.
#[derive(Clone)]
pub struct IsnsServers {
    servers: Vec<SocketAddr>,
    client: Arc<tokio::sync::Mutex<isns::FailoverClient>>,
}

impl IsnsServers {
    /// `servers` in the order tried; connecting and each answer bounded by `timeout`.
    pub fn new(servers: Vec<SocketAddr>, timeout: Duration) -> IsnsServers {
        IsnsServers {
            client: Arc::new(tokio::sync::Mutex::new(isns::FailoverClient::new(
                servers.clone(),
                timeout,
            ))),
            servers,
        }
    }

    /// The servers, in the order given.
    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// The portals of `target` in the order the first server that answers lists them, with
    /// that server.
    pub async fn portals(
        &self,
        initiator_name: &str,
        target: &str,
    ) -> Result<(SocketAddr, Vec<SocketAddr>), Error> {
        let mut client = self.client.lock().await;
        let mut call = client.call();
        let failed = |e: isns::FailoverError| Error::Discovery(e.to_string());
        loop {
            let (server, c) = client.next(&mut call).await.map_err(failed)?;
            let result = c.query_target_portals(initiator_name, target).await;
            if let Some(portals) = client.outcome(&mut call, server, result).map_err(failed)? {
                return Ok((server, portals));
            }
        }
    }
}

impl std::fmt::Debug for IsnsServers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("IsnsServers").field(&self.servers).finish()
    }
}

impl PartialEq for IsnsServers {
    fn eq(&self, other: &IsnsServers) -> bool {
        self.servers == other.servers
    }
}

impl Eq for IsnsServers {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_targets_grouping() {
        let mut p = TextPairs::new();
        for (k, v) in [
            ("TargetName", "iqn.a"),
            ("TargetAddress", "127.0.0.2:3260,1"),
            ("TargetAddress", "127.0.0.3:3260,1"),
            ("TargetName", "iqn.b"),
            ("TargetAddress", "bogus.example,1"),
        ] {
            p.push(k, v).unwrap();
        }
        let t = parse_send_targets(&p).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].portals.len(), 2);
        assert_eq!(t[1].name, "iqn.b");
        assert!(t[1].portals.is_empty());
        // Address before any name is an error.
        let mut q = TextPairs::new();
        q.push("TargetAddress", "127.0.0.2:3260,1").unwrap();
        assert!(parse_send_targets(&q).is_err());
    }

    #[test]
    fn request_and_continuation() {
        let r = send_targets_request(3, 9, RESERVED_TAG);
        assert_eq!(
            TextPairs::parse(&r.data).unwrap().get("SendTargets"),
            Some("All")
        );
        assert!(r.final_);
        let c = send_targets_request(4, 10, 0x55);
        assert!(c.data.is_empty());
        assert_eq!(c.ttt, 0x55);
    }
}
