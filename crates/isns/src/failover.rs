//! Several iSNS servers for one client: [`FailoverClient`] talks to one of a list of servers
//! (`--isns H:P,H:P`) and moves to the next when the one it uses stops answering.
//!
//! "Stops answering" is a transport failure: the connection is refused, breaks, or the server
//! sends nothing (or garbage) within the client's timeout. A server that answers with a status
//! (RFC 4171 §5.7.3) did answer: its refusal is returned, not failed over, since the next server
//! holds the same registry (several servers on one etcd registry) or would have to be told the
//! same thing. Every call tries each server at most once, starting with the one in use, so a
//! call is bounded by `servers × (connect + answer)` timeouts. The client stays with the server
//! that answered; it does not fall back to the first one when that returns.

use std::net::SocketAddr;
use std::time::Duration;

use crate::client::{Client, ClientError};

/// Why a call through [`FailoverClient`] failed.
#[derive(Debug, thiserror::Error)]
pub enum FailoverError {
    /// A server answered, with an error status (or the request could not be built).
    #[error("iSNS server {server}: {source}")]
    Answered {
        server: SocketAddr,
        source: ClientError,
    },
    /// No server answered; each one's failure, in the order tried.
    #[error("{}", no_server(.0))]
    NoServer(Vec<(SocketAddr, ClientError)>),
}

/// One server's failure as a single client's ("iSNS server H:P: ..."); several listed.
fn no_server(failures: &[(SocketAddr, ClientError)]) -> String {
    match failures {
        [] => "no iSNS server configured".into(),
        [(s, e)] => format!("iSNS server {s}: {e}"),
        _ => format!("no iSNS server answered ({})", list(failures)),
    }
}

fn list(failures: &[(SocketAddr, ClientError)]) -> String {
    failures
        .iter()
        .map(|(s, e)| format!("{s}: {e}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Whether `e` means the server did not answer (so another server should be tried), rather
/// than that it answered with a refusal.
pub fn not_answered(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Io(_) | ClientError::Timeout(_) | ClientError::Proto(_)
    )
}

/// One call's way through the servers (see [`FailoverClient::next`]).
#[derive(Debug)]
pub struct Call {
    tried: usize,
    failures: Vec<(SocketAddr, ClientError)>,
}

/// A client of the first iSNS server of a list that answers.
pub struct FailoverClient {
    servers: Vec<SocketAddr>,
    /// Index into `servers` of the server in use.
    current: usize,
    client: Option<Client>,
    timeout: Duration,
    /// The server that answered the last call, for the "now using" log line.
    answered: Option<SocketAddr>,
}

impl FailoverClient {
    /// A client of `servers` (tried in this order), each connection attempt and each answer
    /// waited for at most `timeout`. Nothing is connected until the first call.
    pub fn new(servers: Vec<SocketAddr>, timeout: Duration) -> FailoverClient {
        FailoverClient {
            servers,
            current: 0,
            client: None,
            timeout,
            answered: None,
        }
    }

    /// The servers, in the order given.
    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// The server in use (the one the next call tries first).
    pub fn current(&self) -> Option<SocketAddr> {
        self.servers.get(self.current).copied()
    }

    /// Starts a call: see [`FailoverClient::next`].
    pub fn call(&self) -> Call {
        Call {
            tried: 0,
            failures: Vec::new(),
        }
    }

    /// The client of the next server to try for `call`: the server in use first, then the
    /// following ones, each at most once. A server that cannot be connected to is noted in
    /// `call` and skipped. `Err(NoServer)` once every server was tried. Send the request
    /// through the client, then hand its result to [`FailoverClient::outcome`]:
    ///
    /// ```no_run
    /// # async fn portals(
    /// #     servers: &mut isns::FailoverClient,
    /// #     me: &str,
    /// #     target: &str,
    /// # ) -> Result<Vec<std::net::SocketAddr>, isns::FailoverError> {
    /// let mut call = servers.call();
    /// let portals = loop {
    ///     let (server, c) = servers.next(&mut call).await?;
    ///     let result = c.query_target_portals(me, target).await;
    ///     if let Some(v) = servers.outcome(&mut call, server, result)? {
    ///         break v;
    ///     }
    /// };
    /// # Ok(portals)
    /// # }
    /// ```
    pub async fn next(
        &mut self,
        call: &mut Call,
    ) -> Result<(SocketAddr, &mut Client), FailoverError> {
        let n = self.servers.len();
        let mut found = None;
        while call.tried < n {
            call.tried += 1;
            let server = self.servers[self.current % n];
            if let Some((failed, e)) = call.failures.last() {
                tracing::warn!("iSNS server {failed} did not answer ({e}); trying {server}");
            }
            if self.client.is_none() {
                match tokio::time::timeout(self.timeout, Client::connect(server)).await {
                    Ok(Ok(mut c)) => {
                        c.set_timeout(self.timeout);
                        self.client = Some(c);
                    }
                    Ok(Err(e)) => {
                        call.failures.push((server, e));
                        self.advance();
                        continue;
                    }
                    Err(_) => {
                        call.failures
                            .push((server, ClientError::Timeout(self.timeout)));
                        self.advance();
                        continue;
                    }
                }
            }
            found = Some(server);
            break;
        }
        if let (Some(server), Some(c)) = (found, self.client.as_mut()) {
            return Ok((server, c));
        }
        if let Some((failed, e)) = call.failures.last()
            && n > 1
        {
            tracing::warn!("iSNS server {failed} did not answer ({e}); none of the {n} answered");
        }
        Err(FailoverError::NoServer(std::mem::take(&mut call.failures)))
    }

    /// What became of a request sent through `server` (from [`FailoverClient::next`]): its
    /// value (`Some`), the server's refusal (`Err(Answered)`), or `None` when the server did
    /// not answer ([`not_answered`]): then the next server is the one in use and the caller
    /// calls [`FailoverClient::next`] again.
    pub fn outcome<T>(
        &mut self,
        call: &mut Call,
        server: SocketAddr,
        result: Result<T, ClientError>,
    ) -> Result<Option<T>, FailoverError> {
        match result {
            Ok(v) => {
                if self.answered != Some(server) {
                    if self.answered.is_some() || !call.failures.is_empty() {
                        tracing::warn!("now using iSNS server {server}");
                    }
                    self.answered = Some(server);
                }
                Ok(Some(v))
            }
            Err(e) if not_answered(&e) => {
                call.failures.push((server, e));
                self.advance();
                Ok(None)
            }
            Err(source) => {
                // It answered; the connection stays usable.
                self.answered = Some(server);
                Err(FailoverError::Answered { server, source })
            }
        }
    }

    /// Drops the connection and makes the next server the one in use.
    fn advance(&mut self) {
        self.client = None;
        if !self.servers.is_empty() {
            self.current = (self.current + 1) % self.servers.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: &str = "iqn.2024-01.test.failover:t1";

    /// Registers, then asks for the node's portals, through whichever server answers.
    async fn register_and_query(
        c: &mut FailoverClient,
    ) -> Result<(SocketAddr, Vec<SocketAddr>), FailoverError> {
        let mut call = c.call();
        loop {
            let (server, client) = c.next(&mut call).await?;
            let result = match client.register(&registration()).await {
                Ok(_) => {
                    client
                        .query_target_portals("iqn.2024-01.test:i", NODE)
                        .await
                }
                Err(e) => Err(e),
            };
            if let Some(v) = c.outcome(&mut call, server, result)? {
                return Ok((server, v));
            }
        }
    }

    fn registration() -> crate::Registration {
        crate::Registration {
            entity: "failover-test".into(),
            portals: vec!["127.0.0.1:3260".parse().unwrap()],
            nodes: vec![crate::NodeRegistration {
                name: NODE.into(),
                node_type: crate::NodeType::Target,
                alias: None,
            }],
            ..crate::Registration::default()
        }
    }

    /// With the first server gone, a call is answered by the second, which stays in use; with
    /// every server gone, the error names each server.
    #[tokio::test]
    async fn moves_to_the_next_server_when_one_stops_answering() {
        let mut a = crate::testing::KillableServer::start();
        let mut b = crate::testing::KillableServer::start();
        let mut c = FailoverClient::new(vec![a.addr, b.addr], Duration::from_secs(2));
        let (server, _) = register_and_query(&mut c).await.unwrap();
        assert_eq!(server, a.addr);

        a.kill();
        let (server, portals) = register_and_query(&mut c).await.unwrap();
        assert_eq!(server, b.addr);
        assert_eq!(portals, ["127.0.0.1:3260".parse::<SocketAddr>().unwrap()]);
        assert_eq!(c.current(), Some(b.addr));

        // An answer with an error status (a source that may not change the entity) is
        // returned, not failed over.
        let mut call = c.call();
        let (server, client) = c.next(&mut call).await.unwrap();
        let result = client
            .deregister_entity("iqn.none:x", "failover-test")
            .await;
        let err = c.outcome(&mut call, server, result).unwrap_err();
        assert!(
            matches!(err, FailoverError::Answered { server, .. } if server == b.addr),
            "{err}"
        );

        b.kill();
        let err = register_and_query(&mut c).await.unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, FailoverError::NoServer(ref f) if f.len() == 2),
            "{text}"
        );
        assert!(
            text.contains(&a.addr.to_string()) && text.contains(&b.addr.to_string()),
            "{text}"
        );
    }
}
