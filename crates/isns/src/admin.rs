//! The iSNS server's admin endpoint (`portshift isns --admin IP:PORT`, loopback by default):
//! `GET /metrics` in the Prometheus text format ([`crate::metrics`]) and `GET /status`, the
//! registered objects by kind as JSON. It only reads, so it needs no authentication.

use std::net::SocketAddr;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};

use crate::metrics::{CONTENT_TYPE, ServerStats};

/// The admin router.
pub fn router(stats: ServerStats) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .with_state(stats)
}

async fn metrics(State(s): State<ServerStats>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], s.render())
}

async fn status(State(s): State<ServerStats>) -> Json<serde_json::Value> {
    let objects: serde_json::Map<String, serde_json::Value> = s
        .objects()
        .into_iter()
        .map(|(k, n)| (format!("{k:?}"), n.into()))
        .collect();
    Json(serde_json::json!({ "objects": objects }))
}

/// Binds `addr` and serves the admin endpoint until the task is aborted. Returns the bound
/// address (useful with port 0).
pub async fn serve(
    addr: SocketAddr,
    stats: ServerStats,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = listener::bind(addr)?;
    let local = listener.local_addr()?;
    let app = router(stats);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!("iSNS admin endpoint stopped: {e}");
        }
    });
    Ok((local, task))
}
