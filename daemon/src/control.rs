//! The control API: HTTP + JSON on 127.0.0.1, every request authenticated with the token
//! from `control.json` (mode 0600, readable only by the user).

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::admin::{AdminRequest, ApiError, Keep};
use crate::config::FolderType;
use crate::engine::{ControlRequest, Event};
use crate::history::RestoreRequest;
use crate::pair::{InviteStatus, PairCtl};

/// What clients read to reach the daemon.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ControlInfo {
    /// `127.0.0.1:PORT`.
    pub address: String,
    /// Bearer token.
    pub token: String,
    /// Daemon process id.
    pub pid: u32,
    /// This device's id.
    pub device_id: String,
}

#[derive(Clone)]
struct Ctx {
    token: String,
    events: mpsc::UnboundedSender<Event>,
}

fn authorized(ctx: &Ctx, headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t == ctx.token)
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

async fn ask<T>(
    ctx: &Ctx,
    make: impl FnOnce(oneshot::Sender<T>) -> ControlRequest,
) -> Result<T, Response> {
    let (tx, rx) = oneshot::channel();
    ctx.events
        .send(Event::Control(make(tx)))
        .map_err(|_| error(StatusCode::SERVICE_UNAVAILABLE, "daemon is stopping"))?;
    rx.await
        .map_err(|_| error(StatusCode::SERVICE_UNAVAILABLE, "daemon is stopping"))
}

async fn status(State(ctx): State<Ctx>, headers: HeaderMap) -> Response {
    if !authorized(&ctx, &headers) {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong token");
    }
    match ask(&ctx, ControlRequest::Status).await {
        Ok(s) => Json(s).into_response(),
        Err(r) => r,
    }
}

async fn metrics(State(ctx): State<Ctx>, headers: HeaderMap) -> Response {
    if !authorized(&ctx, &headers) {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong token");
    }
    match ask(&ctx, ControlRequest::Metrics).await {
        Ok(text) => ([("content-type", "text/plain; version=0.0.4")], text).into_response(),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct FolderQuery {
    folder: Option<String>,
}

async fn rescan(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Query(q): Query<FolderQuery>,
) -> Response {
    answer(
        &ctx,
        &headers,
        |reply| ControlRequest::Rescan {
            folder: q.folder,
            reply,
        },
        |()| serde_json::json!({ "ok": true }),
    )
    .await
}

/// The 401 response for a request without the right token.
fn denied(ctx: &Ctx, headers: &HeaderMap) -> Option<Response> {
    (!authorized(ctx, headers)).then(|| error(StatusCode::UNAUTHORIZED, "missing or wrong token"))
}

/// Authorizes, asks the engine, and answers with `ok` of its reply, or with its error and
/// `status`: the shape of every request that changes something.
async fn answer<T, E: Into<ApiError>, U: Serialize>(
    ctx: &Ctx,
    headers: &HeaderMap,
    make: impl FnOnce(oneshot::Sender<Result<T, E>>) -> ControlRequest,
    ok: impl FnOnce(T) -> U,
) -> Response {
    if let Some(r) = denied(ctx, headers) {
        return r;
    }
    match ask(ctx, make).await {
        Ok(Ok(v)) => Json(ok(v)).into_response(),
        Ok(Err(e)) => {
            let e: ApiError = e.into();
            let status =
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            error(status, e.message())
        }
        Err(r) => r,
    }
}

async fn invite(State(ctx): State<Ctx>, headers: HeaderMap) -> Response {
    if let Some(r) = denied(&ctx, &headers) {
        return r;
    }
    match ask(&ctx, |tx| ControlRequest::Pair(PairCtl::Invite(tx))).await {
        Ok(s) => Json(s).into_response(),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct WaitQuery {
    wait: Option<u64>,
}

async fn invite_status(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Query(q): Query<WaitQuery>,
) -> Response {
    if let Some(r) = denied(&ctx, &headers) {
        return r;
    }
    let deadline =
        tokio::time::Instant::now() + std::time::Duration::from_secs(q.wait.unwrap_or(0).min(30));
    loop {
        let status = match ask(&ctx, |tx| ControlRequest::Pair(PairCtl::InviteStatus(tx))).await {
            Ok(s) => s,
            Err(r) => return r,
        };
        if !matches!(status, InviteStatus::Waiting { .. })
            || tokio::time::Instant::now() >= deadline
        {
            return Json(status).into_response();
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[derive(Deserialize)]
struct JoinBody {
    code: String,
}

async fn join(State(ctx): State<Ctx>, headers: HeaderMap, Json(body): Json<JoinBody>) -> Response {
    let join = |reply| {
        ControlRequest::Pair(PairCtl::Join {
            code: body.code,
            reply,
        })
    };
    answer(&ctx, &headers, join, |p| p).await
}

#[derive(Deserialize)]
struct ShareBody {
    folder: String,
    device: Option<String>,
    #[serde(rename = "type")]
    kind: Option<FolderType>,
}

async fn share(State(ctx): State<Ctx>, headers: HeaderMap, Json(b): Json<ShareBody>) -> Response {
    let share = |reply| {
        ControlRequest::Admin(AdminRequest::Share {
            folder: b.folder,
            device: b.device,
            kind: b.kind,
            reply,
        })
    };
    let ok = |folder| serde_json::json!({ "folder": folder });
    answer(&ctx, &headers, share, ok).await
}

#[derive(Deserialize)]
struct AcceptBody {
    folder: String,
    path: std::path::PathBuf,
    #[serde(rename = "type")]
    kind: Option<FolderType>,
}

async fn accept(State(ctx): State<Ctx>, headers: HeaderMap, Json(b): Json<AcceptBody>) -> Response {
    let accept = |reply| {
        ControlRequest::Admin(AdminRequest::Accept {
            folder: b.folder,
            path: b.path,
            kind: b.kind,
            reply,
        })
    };
    let ok = |joined: Vec<String>| serde_json::json!({ "ok": true, "joined": joined });
    answer(&ctx, &headers, accept, ok).await
}

#[derive(Deserialize)]
struct DeclineBody {
    folder: String,
}

async fn decline(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Json(b): Json<DeclineBody>,
) -> Response {
    let decline = |reply| {
        ControlRequest::Admin(AdminRequest::Decline {
            folder: b.folder,
            reply,
        })
    };
    let ok = |()| serde_json::json!({ "ok": true });
    answer(&ctx, &headers, decline, ok).await
}

#[derive(Deserialize)]
struct FolderBody {
    folder: Option<String>,
}

async fn pause_or_resume(
    ctx: Ctx,
    headers: HeaderMap,
    folder: Option<String>,
    paused: bool,
) -> Response {
    let pause = |reply| {
        ControlRequest::Admin(AdminRequest::Pause {
            folder,
            paused,
            reply,
        })
    };
    let ok = |()| serde_json::json!({ "ok": true, "paused": paused });
    answer(&ctx, &headers, pause, ok).await
}

async fn pause(State(ctx): State<Ctx>, headers: HeaderMap, Json(b): Json<FolderBody>) -> Response {
    pause_or_resume(ctx, headers, b.folder, true).await
}

async fn resume(State(ctx): State<Ctx>, headers: HeaderMap, Json(b): Json<FolderBody>) -> Response {
    pause_or_resume(ctx, headers, b.folder, false).await
}

async fn conflicts(State(ctx): State<Ctx>, headers: HeaderMap) -> Response {
    if let Some(r) = denied(&ctx, &headers) {
        return r;
    }
    match ask(&ctx, |tx| {
        ControlRequest::Admin(AdminRequest::Conflicts(tx))
    })
    .await
    {
        Ok(list) => Json(list).into_response(),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct ResolveBody {
    path: String,
    keep: Keep,
}

async fn resolve(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Json(b): Json<ResolveBody>,
) -> Response {
    let resolve = |reply| {
        ControlRequest::Admin(AdminRequest::Resolve {
            path: b.path,
            keep: b.keep,
            reply,
        })
    };
    let ok = |what| serde_json::json!({ "resolved": what });
    answer(&ctx, &headers, resolve, ok).await
}

#[derive(Deserialize)]
struct HistoryQuery {
    folder: Option<String>,
    path: Option<String>,
}

async fn history(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Query(q): Query<HistoryQuery>,
) -> Response {
    let history = |reply| {
        ControlRequest::Admin(AdminRequest::History {
            folder: q.folder,
            path: q.path,
            reply,
        })
    };
    answer(&ctx, &headers, history, |list| list).await
}

async fn restore(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Json(request): Json<RestoreRequest>,
) -> Response {
    let restore = |reply| ControlRequest::Admin(AdminRequest::Restore { request, reply });
    answer(&ctx, &headers, restore, |r| r).await
}

async fn shutdown(State(ctx): State<Ctx>, headers: HeaderMap) -> Response {
    if !authorized(&ctx, &headers) {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong token");
    }
    let _ = ctx.events.send(Event::Control(ControlRequest::Shutdown));
    Json(serde_json::json!({ "ok": true })).into_response()
}

/// Binds the API, writes `control.json`, and serves until the process ends.
pub async fn serve(
    listen: &str,
    info_path: &Path,
    device_id: String,
    events: mpsc::UnboundedSender<Event>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let address = listener.local_addr()?.to_string();
    let token = {
        use rand::Rng;
        let bytes: [u8; 24] = rand::rng().random();
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    let info = ControlInfo {
        address,
        token: token.clone(),
        pid: std::process::id(),
        device_id,
    };
    let tmp = info_path.with_extension("json.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    std::io::Write::write_all(
        &mut f,
        serde_json::to_string_pretty(&info)
            .unwrap_or_default()
            .as_bytes(),
    )?;
    std::fs::rename(&tmp, info_path)?;
    let app = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/rescan", post(rescan))
        .route("/v1/shutdown", post(shutdown))
        .route("/metrics", get(metrics))
        .route("/v1/pair/invite", post(invite).get(invite_status))
        .route("/v1/pair/join", post(join))
        .route("/v1/share", post(share))
        .route("/v1/accept", post(accept))
        .route("/v1/decline", post(decline))
        .route("/v1/pause", post(pause))
        .route("/v1/resume", post(resume))
        .route("/v1/conflicts", get(conflicts))
        .route("/v1/resolve", post(resolve))
        .route("/v1/history", get(history))
        .route("/v1/restore", post(restore))
        .with_state(Ctx { token, events });
    Ok(tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    }))
}
