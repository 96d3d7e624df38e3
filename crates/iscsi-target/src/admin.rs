//! The admin endpoint: `GET /status` returns the [`balancer::AdminSnapshot`] as JSON. It binds to
//! loopback by default; it changes nothing, so it needs no authentication there.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::{Json, Router, extract::State, routing::get};

use crate::control::Control;

/// Default admin address.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:3261";

/// The admin router over a control plane.
pub fn router(control: Arc<Control>) -> Router {
    Router::new()
        .route("/status", get(status))
        .with_state(control)
}

async fn status(State(c): State<Arc<Control>>) -> Json<balancer::AdminSnapshot> {
    Json(c.snapshot())
}

/// Binds `addr` and serves the admin endpoint until the task is dropped. Returns the bound
/// address (useful with port 0).
pub async fn serve(
    addr: SocketAddr,
    control: Arc<Control>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = router(control);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!("admin endpoint stopped: {e}");
        }
    });
    Ok((local, task))
}
