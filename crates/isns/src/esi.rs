//! The I/O half of Entity Status Inquiry (RFC 4171 §5.6.5.13): once a
//! second, takes the ESI messages due from the registry
//! ([`Registry::esi_due`](crate::Registry::esi_due)), sends each over a new
//! TCP connection to the portal's ESI Port, waits for the ESI Response within
//! [`ServerConfig::esi_timeout`] and reports the outcome back. A portal the
//! registry deregisters after its allowed misses is removed from the
//! database before its OBJECT_REMOVED SCNs go out, as for any change.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::registry::EsiProbe;
use crate::server::{ServerConfig, State, deliver_scns, lock, now, read_one, route_scns};

/// Send the ESI messages as they come due, for ever.
pub(crate) async fn run(state: Arc<Mutex<State>>, config: ServerConfig) {
    if !config.esi.enabled {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let probes = lock(&state).registry.esi_due(now());
        for probe in probes {
            tokio::spawn(inquire(state.clone(), probe, config.esi_timeout));
        }
    }
}

/// Send one ESI and feed the answer, or its absence, to the registry.
async fn inquire(state: Arc<Mutex<State>>, probe: EsiProbe, timeout: Duration) {
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
    if let Some(m) = &answer
        && lock(&state).registry.esi_answered(probe.portal, m, now())
    {
        return;
    }
    let scns = tokio::task::spawn_blocking(move || {
        let mut guard = lock(&state);
        let st = &mut *guard;
        let backup = st.registry.clone();
        let outcome = st.registry.esi_failed(probe.portal, now());
        if outcome.changes.is_empty() {
            return Vec::new();
        }
        if let Err(e) = st.store.commit(&st.registry, &outcome.changes) {
            tracing::error!("persisting an ESI deregistration: {e}");
            st.registry = backup;
            st.registry.esi_abandon(probe.portal);
            return Vec::new();
        }
        route_scns(st, outcome.notifications)
    })
    .await
    .unwrap_or_default();
    deliver_scns(scns).await;
}
