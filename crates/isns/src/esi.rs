//! The I/O half of Entity Status Inquiry (RFC 4171 §5.6.5.13): once a
//! second, takes the ESI messages due from the registry
//! ([`Registry::esi_due`](crate::Registry::esi_due)), sends each over a new
//! TCP connection to the portal's ESI Port, waits for the ESI Response within
//! [`ServerConfig::esi_timeout`] and reports the outcome back. An answer is
//! recorded under the registry's write lock (it changes only transient state
//! and the refresh time); a miss goes to the committer thread, since at the
//! allowed misses it deregisters the portal, which is stored before its
//! OBJECT_REMOVED SCNs go out, as for any change.

use std::sync::{Arc, mpsc as std_mpsc};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::registry::EsiProbe;
use crate::server::{Cmd, ServerConfig, Shared, now, read, read_one, write};

/// Send the ESI messages as they come due, until aborted.
pub(crate) async fn run(shared: Arc<Shared>, jobs: std_mpsc::Sender<Cmd>, config: ServerConfig) {
    if !config.esi.enabled {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !shared.esi_active() {
            continue;
        }
        let now = now();
        // Most seconds nothing is due: look under the read lock, so queries
        // are not held up by a write lock taken for nothing.
        if read(&shared.registry)
            .esi_next_due()
            .is_none_or(|due| due > now)
        {
            continue;
        }
        let probes = write(&shared.registry).esi_due(now);
        for probe in probes {
            tokio::spawn(inquire(
                shared.clone(),
                jobs.clone(),
                probe,
                config.esi_timeout,
            ));
        }
    }
}

/// Send one ESI and feed the answer, or its absence, to the registry.
async fn inquire(
    shared: Arc<Shared>,
    jobs: std_mpsc::Sender<Cmd>,
    probe: EsiProbe,
    timeout: Duration,
) {
    let exchange = async {
        let mut s = TcpStream::connect(probe.destination).await?;
        s.write_all(&probe.message.to_bytes()).await?;
        read_one(&mut s).await
    };
    let answer = match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(m)) => Some(m),
        Ok(Err(e)) => {
            tracing::debug!(portal = %probe.portal, to = %probe.destination, "ESI failed: {e}");
            None
        }
        Err(_) => {
            tracing::debug!(portal = %probe.portal, to = %probe.destination, "ESI timed out");
            None
        }
    };
    shared.metrics.esi_sent(answer.is_some());
    if let Some(m) = &answer
        && write(&shared.registry).esi_answered(probe.portal, m, now())
    {
        return;
    }
    // The committer applies the miss with the next batch (the server is
    // stopping if it is gone).
    let _ = jobs.send(Cmd::EsiFailed(probe.portal));
}
