//! The admin endpoint's operator calls (`portshift balance …`): `GET /balance` shows the
//! operator's settings; `POST /balance/{pause,resume,pin,unpin,move,drain,undrain}` change
//! them. Every POST needs `Authorization: Bearer TOKEN` with the token read at start-up from
//! `--admin-token-file`: without the header or with a wrong token the answer is 401 and nothing
//! changes; a target started without a token file answers every POST 403 (mutating calls
//! disabled). The decisions are the sans-IO plane's ([`iscsi_target_core::control::operator`]);
//! this shell carries out the returned actions with the [`Registrar`] and the session channels,
//! in order, and reports each result back.

use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use balancer::PortalId;
use iscsi_target_core::control::{OperatorError, OperatorMove, OperatorPlan};
use iscsi_target_core::{Action, ControlPlane};
use serde::{Deserialize, Serialize};

use crate::control::{Control, SessionCommand};
use crate::registration::Registrar;

/// What the operator calls need besides the control plane: the token and the registrar (set
/// once at start-up), and a lock so that one request's actions finish before the next starts.
#[derive(Default)]
pub struct Operator {
    token: OnceLock<Option<String>>,
    registrar: OnceLock<Arc<Registrar>>,
    busy: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Operator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operator")
            .field("token", &self.token.get().map(|t| t.is_some()))
            .finish_non_exhaustive()
    }
}

impl Operator {
    /// The token mutating calls must present (`None`: mutating calls disabled). Only the first
    /// call has an effect.
    pub fn set_token(&self, token: Option<String>) {
        let _ = self.token.set(token);
    }

    /// How registrations are changed (iSNS or local only). Only the first call has an effect.
    pub fn set_registrar(&self, registrar: Arc<Registrar>) {
        let _ = self.registrar.set(registrar);
    }
}

/// Reads the admin token from `path`: refused when the group or others may access the file
/// (like the CHAP secret files) or when it holds no token. Surrounding whitespace is dropped.
pub fn read_token_file(path: &std::path::Path) -> anyhow::Result<String> {
    config_file::check_private(path)
        .map_err(|e| anyhow::anyhow!("admin token file {}: {e}", path.display()))?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("admin token file {}: {e}", path.display()))?;
    let token = text.trim();
    if token.is_empty() || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        anyhow::bail!(
            "admin token file {}: must hold one token (no spaces), and nothing else",
            path.display()
        );
    }
    Ok(token.to_string())
}

/// What to warn about when the admin endpoint listens on `addr` beyond loopback: anyone who
/// reaches it reads the status, and POSTs are guarded only by the token (if any).
pub fn exposure_warning(addr: std::net::SocketAddr, has_token: bool) -> Option<String> {
    if addr.ip().is_loopback() {
        return None;
    }
    Some(format!(
        "admin endpoint on {addr}, beyond loopback: anyone who can reach it reads the status; \
         state-changing calls {}",
        if has_token {
            "need the --admin-token-file token (sent in clear over HTTP)"
        } else {
            "are disabled (no --admin-token-file)"
        }
    ))
}

/// The operator's routes, merged into [`crate::admin::router`].
pub fn router(control: Arc<Control>) -> Router {
    Router::new()
        .route("/balance", get(show))
        .route("/balance/pause", post(pause))
        .route("/balance/resume", post(resume))
        .route("/balance/pin", post(pin))
        .route("/balance/unpin", post(unpin))
        .route("/balance/move", post(move_initiator))
        .route("/balance/drain", post(drain))
        .route("/balance/undrain", post(undrain))
        .with_state(control)
}

/// `GET /balance`: the operator's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperatorView {
    pub paused: bool,
    pub pinned: Vec<String>,
    pub drained: Vec<DrainedPortal>,
    /// Whether POST calls are accepted at all (a token file was given).
    pub mutating_enabled: bool,
}

/// A drained portal and the sessions it still has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrainedPortal {
    pub portal: PortalId,
    pub address: String,
    pub sessions: usize,
}

/// The body of `move`: the initiator and, if given, the portal to move it to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MoveRequest {
    pub initiator: String,
    #[serde(default)]
    pub to: Option<String>,
}

/// The body of `pin` and `unpin`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PinRequest {
    pub initiator: String,
}

/// The body of `drain` and `undrain`: the portal as `P0`, `0` or `IP:PORT`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PortalRequest {
    pub portal: String,
}

/// What a POST did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperatorAnswer {
    pub message: String,
    /// The sessions asked to log out, and where they go.
    #[serde(default)]
    pub moves: Vec<MoveView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MoveView {
    pub initiator: String,
    pub target: String,
    pub from: PortalId,
    pub to: PortalId,
    /// False when the session had ended before the request could be sent.
    pub delivered: bool,
}

fn view(c: &Control) -> OperatorView {
    let mutating_enabled = c.operator.token.get().is_some_and(|t| t.is_some());
    c.with_plane(|plane, _| {
        let op = plane.operator().clone();
        OperatorView {
            paused: op.paused,
            pinned: op.pinned.into_iter().collect(),
            drained: op
                .drained
                .iter()
                .map(|p| DrainedPortal {
                    portal: *p,
                    address: plane
                        .portal(*p)
                        .map(|i| i.address.to_string())
                        .unwrap_or_default(),
                    sessions: plane.sessions_on(*p),
                })
                .collect(),
            mutating_enabled,
        }
    })
}

async fn show(State(c): State<Arc<Control>>) -> Json<OperatorView> {
    Json(view(&c))
}

/// A refusal: status and a sentence.
type Refusal = (StatusCode, String);

/// Checks the bearer token of a mutating call: `None` when it may go ahead, else the refusal: 403 when mutating calls are disabled, 401
/// (with `WWW-Authenticate: Bearer`) when the token is missing or wrong.
fn authorize(c: &Control, headers: &HeaderMap) -> Option<Response> {
    let Some(Some(token)) = c.operator.token.get() else {
        return Some(
            (
                StatusCode::FORBIDDEN,
                "mutating admin calls are disabled: start the target with --admin-token-file\n",
            )
                .into_response(),
        );
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    if given.is_some_and(|g| same_secret(g.as_bytes(), token.as_bytes())) {
        return None;
    }
    let why = if given.is_none() {
        "this call changes state: it needs `Authorization: Bearer TOKEN` (portshift balance --token-file)\n"
    } else {
        "wrong admin token\n"
    };
    Some(
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            why,
        )
            .into_response(),
    )
}

/// Compares two secrets in time that depends only on their lengths.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn refused(e: OperatorError) -> Refusal {
    let status = match e {
        OperatorError::UnknownPortal(_) | OperatorError::UnknownInitiator(_) => {
            StatusCode::NOT_FOUND
        }
        _ => StatusCode::CONFLICT,
    };
    (status, format!("{e}\n"))
}

fn answer(message: String, moves: Vec<MoveView>) -> Response {
    Json(OperatorAnswer { message, moves }).into_response()
}

async fn pause(State(c): State<Arc<Control>>, headers: HeaderMap) -> Response {
    if let Some(r) = authorize(&c, &headers) {
        return r;
    }
    c.with_plane(|p, now| p.set_paused(true, now));
    tracing::info!("admin: balancer paused");
    answer("balancer paused".into(), Vec::new())
}

async fn resume(State(c): State<Arc<Control>>, headers: HeaderMap) -> Response {
    if let Some(r) = authorize(&c, &headers) {
        return r;
    }
    c.with_plane(|p, now| p.set_paused(false, now));
    tracing::info!("admin: balancer resumed");
    answer("balancer resumed".into(), Vec::new())
}

async fn pin(
    State(c): State<Arc<Control>>,
    headers: HeaderMap,
    Json(req): Json<PinRequest>,
) -> Response {
    set_pin(c, headers, req, true)
}

async fn unpin(
    State(c): State<Arc<Control>>,
    headers: HeaderMap,
    Json(req): Json<PinRequest>,
) -> Response {
    set_pin(c, headers, req, false)
}

fn set_pin(c: Arc<Control>, headers: HeaderMap, req: PinRequest, pinned: bool) -> Response {
    if let Some(r) = authorize(&c, &headers) {
        return r;
    }
    if req.initiator.trim().is_empty() {
        return (StatusCode::BAD_REQUEST, "no initiator named\n").into_response();
    }
    c.with_plane(|p, now| p.set_pinned(req.initiator.trim(), pinned, now));
    let verb = if pinned { "pinned" } else { "unpinned" };
    tracing::info!("admin: {} {verb}", req.initiator);
    answer(format!("{} {verb}", req.initiator.trim()), Vec::new())
}

async fn move_initiator(
    State(c): State<Arc<Control>>,
    headers: HeaderMap,
    Json(req): Json<MoveRequest>,
) -> Response {
    if let Some(r) = authorize(&c, &headers) {
        return r;
    }
    let _busy = c.operator.busy.lock().await;
    let plan = c.with_plane(|p, _| {
        let to = req.to.as_deref().map(|t| p.find_portal(t)).transpose()?;
        p.operator_move(&req.initiator, to)
    });
    let plan = match plan {
        Ok(plan) => plan,
        Err(e) => return refused(e).into_response(),
    };
    let reason = format!("operator: portshift balance move {}", req.initiator);
    let moves = execute(&c, plan, &reason).await;
    let message = if moves.is_empty() {
        format!("{}: already there", req.initiator)
    } else {
        format!(
            "{}: {} session(s) asked to log out",
            req.initiator,
            moves.len()
        )
    };
    answer(message, moves)
}

async fn drain(
    State(c): State<Arc<Control>>,
    headers: HeaderMap,
    Json(req): Json<PortalRequest>,
) -> Response {
    if let Some(r) = authorize(&c, &headers) {
        return r;
    }
    match on_portal(&c, &req, "draining", ControlPlane::drain).await {
        Ok((portal, moves)) => answer(
            format!(
                "draining {portal}: registrations deleted, {} session(s) asked to log out",
                moves.len()
            ),
            moves,
        ),
        Err(r) => r,
    }
}

async fn undrain(
    State(c): State<Arc<Control>>,
    headers: HeaderMap,
    Json(req): Json<PortalRequest>,
) -> Response {
    if let Some(r) = authorize(&c, &headers) {
        return r;
    }
    match on_portal(&c, &req, "undraining", ControlPlane::undrain).await {
        Ok((portal, _)) => answer(
            format!("{portal} undrained: registrations restored, logins accepted"),
            Vec::new(),
        ),
        Err(r) => r,
    }
}

/// A drain or undrain of the portal `req` names: one operator call at a time, the plane's plan
/// for `op` on that portal (a refusal answered as such), carried out; `verb` names it in the
/// log and in the event reasons.
async fn on_portal(
    c: &Control,
    req: &PortalRequest,
    verb: &str,
    op: fn(&mut ControlPlane, PortalId) -> Result<OperatorPlan, OperatorError>,
) -> Result<(PortalId, Vec<MoveView>), Response> {
    let _busy = c.operator.busy.lock().await;
    let (portal, plan) = c
        .with_plane(|p, _| {
            let portal = p.find_portal(&req.portal)?;
            op(p, portal).map(|plan| (portal, plan))
        })
        .map_err(|e| refused(e).into_response())?;
    tracing::info!("admin: {verb} {portal}");
    let moves = execute(c, plan, &format!("operator: {verb} {portal}")).await;
    Ok((portal, moves))
}

/// Sends again what a drain or an undrain still owes: the deletes of a drain
/// ([`ControlPlane::drain_deletions_owed`]) and the restores of an undrain
/// ([`ControlPlane::undrain_restores_owed`]) that were not answered in time, each recorded as
/// the operator call's were. The registration keeper calls it once the iSNS server has
/// answered; it skips the round while an operator call is in progress (that call changes what
/// it plans itself), so a registration is not changed twice.
pub async fn retry_owed_registrations(c: &Control) {
    let Ok(_busy) = c.operator.busy.try_lock() else {
        return;
    };
    let owed = c.with_plane(|p, _| {
        let mut owed = p.drain_deletions_owed();
        owed.extend(p.undrain_restores_owed());
        owed
    });
    for action in owed {
        let reason = match &action {
            Action::DeleteRegistration { portal, .. } => format!("retrying the drain of {portal}"),
            Action::RestoreRegistration { portal, .. } => {
                format!("retrying the undrain of {portal}")
            }
            _ => continue,
        };
        let plan = OperatorPlan {
            actions: vec![action],
            moves: Vec::new(),
        };
        execute(c, plan, &reason).await;
    }
}

/// Carries out `plan`'s actions in order and reports each result to the plane.
async fn execute(c: &Control, plan: OperatorPlan, reason: &str) -> Vec<MoveView> {
    let local = Arc::new(Registrar::Local);
    let registrar = c.operator.registrar.get().unwrap_or(&local).clone();
    let mut moves: Vec<MoveView> = Vec::new();
    let mut pending: Vec<OperatorMove> = plan.moves;
    for action in plan.actions {
        match action {
            Action::DeleteRegistration { target, portal } => {
                let _held = registrar.hold().await;
                let result = registrar
                    .delete_registration(&target, portal)
                    .await
                    .map_err(|e| e.to_string());
                c.with_plane(|p, now| {
                    p.operator_registration_changed(&target, portal, true, result, reason, now)
                });
            }
            Action::RestoreRegistration { target, portal } => {
                let _held = registrar.hold().await;
                let result = registrar
                    .restore_registration(&target, portal)
                    .await
                    .map_err(|e| e.to_string());
                c.with_plane(|p, now| {
                    p.operator_registration_changed(&target, portal, false, result, reason, now)
                });
            }
            Action::RequestLogout {
                session_id,
                time2logout,
            } => {
                let Some(i) = pending.iter().position(|m| m.session_id == session_id) else {
                    continue;
                };
                let m = pending.remove(i);
                let delivered = c.send(session_id, SessionCommand::RequestLogout { time2logout });
                c.with_plane(|p, now| p.operator_logout_sent(&m, delivered, reason, now));
                moves.push(MoveView {
                    initiator: m.initiator,
                    target: m.target,
                    from: m.from,
                    to: m.to,
                    delivered,
                });
            }
        }
    }
    moves
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::two_portals;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    async fn request(addr: std::net::SocketAddr, raw: String) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(raw.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    fn post(path: &str, token: Option<&str>, body: &str) -> String {
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    async fn serve(token: Option<&str>) -> (std::net::SocketAddr, Arc<Control>) {
        let control = Arc::new(Control::new(
            two_portals(),
            vec!["iqn.2024-01.test:t".into()],
            None,
            None,
        ));
        control.operator.set_token(token.map(String::from));
        let (addr, _task) = crate::admin::serve("127.0.0.1:0".parse().unwrap(), control.clone())
            .await
            .unwrap();
        (addr, control)
    }

    /// Without the token, or with a wrong one, every mutating call is 401 and nothing
    /// changes; with it, the call is carried out.
    #[tokio::test]
    async fn mutating_calls_need_the_token() {
        let (addr, c) = serve(Some("s3cret")).await;
        let calls = [
            ("/balance/pause", "{}"),
            ("/balance/pin", r#"{"initiator":"iqn.i1"}"#),
            ("/balance/drain", r#"{"portal":"P0"}"#),
        ];
        for (path, body) in calls {
            for token in [None, Some("wrong"), Some("s3cret2")] {
                let out = request(addr, post(path, token, body)).await;
                assert!(out.starts_with("HTTP/1.1 401"), "{path} {token:?}: {out}");
                assert!(
                    out.to_ascii_lowercase()
                        .contains("www-authenticate: bearer")
                );
            }
        }
        let v = view(&c);
        assert!(!v.paused && v.pinned.is_empty() && v.drained.is_empty());
        assert!(c.snapshot().registrations.iter().all(|r| r.registered));
        for (path, body) in calls {
            let out = request(addr, post(path, Some("s3cret"), body)).await;
            assert!(out.starts_with("HTTP/1.1 200"), "{path}: {out}");
        }
        let v = view(&c);
        assert!(v.paused && v.pinned == ["iqn.i1"] && v.drained[0].portal == PortalId(0));
        let regs = c.snapshot().registrations;
        assert!(
            !regs
                .iter()
                .find(|r| r.portal == PortalId(0))
                .unwrap()
                .registered
        );
    }

    #[tokio::test]
    async fn without_a_token_file_mutating_calls_are_disabled() {
        let (addr, c) = serve(None).await;
        let out = request(addr, post("/balance/pause", Some("x"), "{}")).await;
        assert!(out.starts_with("HTTP/1.1 403"), "{out}");
        assert!(out.contains("--admin-token-file"), "{out}");
        assert!(!view(&c).paused);
        let out = request(
            addr,
            "GET /balance HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".into(),
        )
        .await;
        assert!(out.contains("\"mutating_enabled\":false"), "{out}");
    }

    /// A malformed body, an unknown portal or initiator, or draining the last portal is
    /// answered with a 4xx and a reason, and changes nothing.
    #[tokio::test]
    async fn bad_requests_are_refused_clearly() {
        let (addr, c) = serve(Some("t")).await;
        for (path, body, status) in [
            ("/balance/drain", "{not json", "400"),
            ("/balance/drain", r#"{"port":"P0"}"#, "422"),
            ("/balance/drain", r#"{"portal":"P9"}"#, "404"),
            ("/balance/move", r#"{"initiator":"iqn.nobody"}"#, "404"),
            (
                "/balance/move",
                r#"{"initiator":"iqn.x","to":"10.0.0.1:1"}"#,
                "404",
            ),
        ] {
            let out = request(addr, post(path, Some("t"), body)).await;
            assert!(
                out.starts_with(&format!("HTTP/1.1 {status}")),
                "{path} {body}: {out}"
            );
        }
        let out = request(
            addr,
            post("/balance/drain", Some("t"), r#"{"portal":"P1"}"#),
        )
        .await;
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        let out = request(addr, post("/balance/drain", Some("t"), r#"{"portal":"0"}"#)).await;
        assert!(out.starts_with("HTTP/1.1 409"), "{out}");
        assert!(out.contains("last portal"), "{out}");
        let v = view(&c);
        assert_eq!(v.drained.len(), 1);
        assert_eq!(v.drained[0].portal, PortalId(1));
    }

    #[test]
    fn an_endpoint_beyond_loopback_is_warned_about() {
        assert_eq!(
            exposure_warning("127.0.0.1:3261".parse().unwrap(), false),
            None
        );
        assert_eq!(exposure_warning("[::1]:3261".parse().unwrap(), true), None);
        let w = exposure_warning("0.0.0.0:3261".parse().unwrap(), false).unwrap();
        assert!(w.contains("disabled"), "{w}");
        let w = exposure_warning("10.0.0.1:3261".parse().unwrap(), true).unwrap();
        assert!(w.contains("token"), "{w}");
    }

    #[test]
    fn a_token_file_must_be_private_and_hold_one_token() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "abc123\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_token_file(&path).unwrap_err().to_string();
        assert!(e.contains("chmod"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_token_file(&path).unwrap(), "abc123");
        std::fs::write(&path, "two words\n").unwrap();
        assert!(read_token_file(&path).is_err());
        std::fs::write(&path, "\n").unwrap();
        assert!(read_token_file(&path).is_err());
    }
}
