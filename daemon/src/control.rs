//! The control API: HTTP + JSON on 127.0.0.1, every request authenticated with the token
//! from `control.json` (mode 0600, readable only by the user). The routes, the request
//! and answer types and the one error enum live in `cairn-api`, which clients share.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cairn_api::conflicts::{ResolveRequest, Resolved};
use cairn_api::control::{Ack, routes};
use cairn_api::folders::{
    AcceptRequest, Accepted, DeclineRequest, FolderQuery, FolderRequest, PauseState, ShareRequest,
    Shared,
};
use cairn_api::history::{HistoryQuery, RewindRequest};
use cairn_api::pairing::{JoinRequest, WaitQuery};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::admin::{AdminRequest, ApiError};
use crate::engine::StatusFeed;
use crate::engine::{ControlRequest, Event};
use crate::history::RestoreRequest;
use crate::pair::{InviteStatus, PairCtl};

pub use cairn_api::control::ControlInfo;

/// An [`ApiError`] as an HTTP answer: its one status ([`ApiError::status`]) and
/// `{"error": "..."}`.
struct Failure(ApiError);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self.0.body())).into_response()
    }
}

/// The answer while the engine no longer takes requests.
fn stopping() -> Response {
    Failure(ApiError::Unavailable("daemon is stopping".into())).into_response()
}

/// How long `/v1/status` waits for a fresh answer from the loop before it answers with the
/// status the loop last published. Short: at 100,000 and 1,000,000 files p99 was this
/// wait plus ~3 ms, and under full load the slowest answers were the wait plus scheduling
/// delays (max 51 ms at 1,000,000 files with 25 ms here).
const FRESH_WITHIN: std::time::Duration = std::time::Duration::from_millis(10);

#[derive(Clone)]
struct Ctx {
    token: String,
    events: mpsc::UnboundedSender<Event>,
    /// The status the engine last published (`Engine::status_feed`): `/v1/status` answers
    /// from it at once, never waiting behind a long turn of the loop.
    status: StatusFeed,
}

fn authorized(ctx: &Ctx, headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t == ctx.token)
}

async fn ask<T>(
    ctx: &Ctx,
    make: impl FnOnce(oneshot::Sender<T>) -> ControlRequest,
) -> Result<T, Response> {
    let (tx, rx) = oneshot::channel();
    ctx.events
        .send(Event::Control(make(tx)))
        .map_err(|_| stopping())?;
    rx.await.map_err(|_| stopping())
}

async fn status(State(ctx): State<Ctx>, headers: HeaderMap) -> Response {
    if let Some(r) = denied(&ctx, &headers) {
        return r;
    }
    // A fresh answer from the loop when it answers within FRESH_WITHIN (the usual case);
    // while it is busy with a long turn, the status it last published.
    let (tx, mut rx) = oneshot::channel();
    if ctx
        .events
        .send(Event::Control(ControlRequest::Status(tx)))
        .is_err()
    {
        return stopping();
    }
    if let Ok(answer) = tokio::time::timeout(FRESH_WITHIN, &mut rx).await {
        return match answer {
            Ok(s) => Json(s).into_response(),
            Err(_) => stopping(),
        };
    }
    let published = ctx.status.borrow().clone();
    match published {
        Some(s) => Json(&*s).into_response(),
        None => match rx.await {
            Ok(s) => Json(s).into_response(),
            Err(_) => stopping(),
        },
    }
}

async fn metrics(State(ctx): State<Ctx>, headers: HeaderMap) -> Response {
    if let Some(r) = denied(&ctx, &headers) {
        return r;
    }
    match ask(&ctx, ControlRequest::Metrics).await {
        Ok(text) => ([("content-type", "text/plain; version=0.0.4")], text).into_response(),
        Err(r) => r,
    }
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
        |()| Ack { ok: true },
    )
    .await
}

/// The 401 response for a request without the right token.
fn denied(ctx: &Ctx, headers: &HeaderMap) -> Option<Response> {
    (!authorized(ctx, headers))
        .then(|| Failure(ApiError::Unauthorized("missing or wrong token".into())).into_response())
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
        Ok(Err(e)) => Failure(e.into()).into_response(),
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

/// A join that fails answers `PairingFailed`: the CLI's exit code 4.
async fn join(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Json(body): Json<JoinRequest>,
) -> Response {
    if let Some(r) = denied(&ctx, &headers) {
        return r;
    }
    let join = |reply| {
        ControlRequest::Pair(PairCtl::Join {
            code: body.code,
            reply,
        })
    };
    match ask(&ctx, join).await {
        Ok(Ok(paired)) => Json(paired).into_response(),
        Ok(Err(e)) => Failure(ApiError::PairingFailed(e)).into_response(),
        Err(r) => r,
    }
}

async fn share(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Json(b): Json<ShareRequest>,
) -> Response {
    let share = |reply| {
        ControlRequest::Admin(AdminRequest::Share {
            folder: b.folder,
            device: b.device,
            kind: b.kind,
            reply,
        })
    };
    let ok = |folder| Shared { folder };
    answer(&ctx, &headers, share, ok).await
}

async fn accept(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Json(b): Json<AcceptRequest>,
) -> Response {
    let accept = |reply| {
        ControlRequest::Admin(AdminRequest::Accept {
            folder: b.folder,
            path: b.path,
            kind: b.kind,
            reply,
        })
    };
    let ok = |joined| Accepted { joined, ok: true };
    answer(&ctx, &headers, accept, ok).await
}

async fn decline(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Json(b): Json<DeclineRequest>,
) -> Response {
    let decline = |reply| {
        ControlRequest::Admin(AdminRequest::Decline {
            folder: b.folder,
            reply,
        })
    };
    let ok = |()| Ack { ok: true };
    answer(&ctx, &headers, decline, ok).await
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
    let ok = |()| PauseState { ok: true, paused };
    answer(&ctx, &headers, pause, ok).await
}

async fn pause(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Json(b): Json<FolderRequest>,
) -> Response {
    pause_or_resume(ctx, headers, b.folder, true).await
}

async fn resume(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Json(b): Json<FolderRequest>,
) -> Response {
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

async fn resolve(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Json(b): Json<ResolveRequest>,
) -> Response {
    let resolve = |reply| {
        ControlRequest::Admin(AdminRequest::Resolve {
            path: b.path,
            keep: b.keep,
            reply,
        })
    };
    let ok = |resolved| Resolved { resolved };
    answer(&ctx, &headers, resolve, ok).await
}

async fn history(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Query(q): Query<HistoryQuery>,
) -> Response {
    let history = |reply| ControlRequest::Admin(AdminRequest::History { query: q, reply });
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

async fn rewind(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Json(request): Json<RewindRequest>,
) -> Response {
    let rewind = |reply| ControlRequest::Admin(AdminRequest::Rewind { request, reply });
    answer(&ctx, &headers, rewind, |r| r).await
}

async fn prune(State(ctx): State<Ctx>, headers: HeaderMap) -> Response {
    let prune = |reply| ControlRequest::Admin(AdminRequest::Prune { reply });
    answer(&ctx, &headers, prune, |p| p).await
}

async fn shutdown(State(ctx): State<Ctx>, headers: HeaderMap) -> Response {
    if let Some(r) = denied(&ctx, &headers) {
        return r;
    }
    let _ = ctx.events.send(Event::Control(ControlRequest::Shutdown));
    Json(Ack { ok: true }).into_response()
}

/// Binds the API, writes `control.json`, and serves until the process ends, on a thread
/// of its own with its own runtime, so an answer never waits for a worker of the
/// daemon's runtime (where libp2p's connection tasks run), in short scheduler slices, so
/// it does not wait long for a core either (`priority::answer_promptly`).
pub fn serve(
    listen: &str,
    info_path: &Path,
    device_id: String,
    events: mpsc::UnboundedSender<Event>,
    status_feed: StatusFeed,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let listener = std::net::TcpListener::bind(listen)?;
    listener.set_nonblocking(true)?;
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
        .route(routes::STATUS, get(status))
        .route(routes::RESCAN, post(rescan))
        .route(routes::SHUTDOWN, post(shutdown))
        .route(routes::METRICS, get(metrics))
        .route(routes::PAIR_INVITE, post(invite).get(invite_status))
        .route(routes::PAIR_JOIN, post(join))
        .route(routes::SHARE, post(share))
        .route(routes::ACCEPT, post(accept))
        .route(routes::DECLINE, post(decline))
        .route(routes::PAUSE, post(pause))
        .route(routes::RESUME, post(resume))
        .route(routes::CONFLICTS, get(conflicts))
        .route(routes::RESOLVE, post(resolve))
        .route(routes::HISTORY, get(history))
        .route(routes::RESTORE, post(restore))
        .route(routes::PRUNE, post(prune))
        .route(routes::REWIND, post(rewind))
        .with_state(Ctx {
            token,
            events,
            status: status_feed,
        });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("cairn-control".into())
        .spawn(move || {
            crate::priority::answer_promptly();
            runtime.block_on(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => {
                        let _ = axum::serve(listener, app).await;
                    }
                    Err(e) => tracing::error!(error = %e, "control_api_listener"),
                }
            })
        })
}
