//! The labelling web app: static pages plus a JSON API over [`LabelDb`].
//!
//! Authentication is a bearer token on every API call (the page keeps it in `sessionStorage`).
//! No cookies are ever set, so a cross-site page cannot make a signed-in browser act: there is no
//! ambient credential to ride on, which is what makes the forms CSRF-safe. Pages are served with a
//! strict CSP (`default-src 'self'`), and the client renders all text with `textContent`.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rlhf_feedback::labels::agreement::{self, AgreementReport};
use rlhf_feedback::labels::db::{
    Allocation, Annotator, AnnotatorCounts, Decision, ItemCounts, LabelDb, Progress, Role, Task,
};
use rlhf_feedback::labels::error::LabelError;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

const INDEX_HTML: &str = include_str!("../../assets/index.html");
const APP_JS: &str = include_str!("../../assets/app.js");
const APP_CSS: &str = include_str!("../../assets/app.css");
/// Longest comment or guidelines text accepted, in characters.
const MAX_TEXT_CHARS: usize = 20_000;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServerOptions {
    pub allocation: Allocation,
    /// Larger request bodies get 413 before they are read.
    pub max_body_bytes: usize,
    /// A connection that has not sent a request's headers within this time is closed.
    pub header_timeout: std::time::Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            allocation: Allocation::default(),
            max_body_bytes: 64 * 1024,
            header_timeout: crate::http::HEADER_READ_TIMEOUT,
        }
    }
}

#[derive(Clone)]
struct AppState {
    db: Arc<Mutex<LabelDb>>,
    opts: ServerOptions,
}

/// An error answer: a status and a message the client shows as is.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<LabelError> for ApiError {
    fn from(e: LabelError) -> Self {
        let status = match &e {
            LabelError::Invalid { .. } => StatusCode::BAD_REQUEST,
            LabelError::NotYours(_) => StatusCode::NOT_FOUND,
            LabelError::AlreadySubmitted(_) => StatusCode::CONFLICT,
            LabelError::Db { .. } | LabelError::Io(_) => {
                eprintln!("label server: {e}");
                return ApiError(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal database error; the request was not stored".into(),
                );
            }
        };
        ApiError(status, e.to_string())
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// Runs `f` on the database off the async workers (SQLite calls block, and fsync on commit).
async fn with_db<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&mut LabelDb) -> Result<T, LabelError> + Send + 'static,
) -> ApiResult<T> {
    let db = state.db.clone();
    tokio::task::spawn_blocking(move || {
        let mut db = db.lock().map_err(|_| LabelError::Io("database lock poisoned".into()))?;
        f(&mut db)
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("worker failed: {e}")))?
    .map_err(ApiError::from)
}

fn bearer(headers: &HeaderMap) -> ApiResult<String> {
    let missing = || ApiError(StatusCode::UNAUTHORIZED, "missing `Authorization: Bearer <token>` header".into());
    let value = headers.get(header::AUTHORIZATION).ok_or_else(missing)?;
    let value = value.to_str().map_err(|_| missing())?;
    // The scheme is case-insensitive (RFC 7235): `bearer x` is as valid as `Bearer x`.
    let (scheme, token) = value.trim_start().split_once(' ').ok_or_else(missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(missing());
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(missing());
    }
    Ok(token.to_string())
}

async fn authenticate(state: &AppState, headers: &HeaderMap) -> ApiResult<Annotator> {
    let token = bearer(headers)?;
    with_db(state, move |db| db.annotator_by_token(&token))
        .await?
        .ok_or_else(|| ApiError(StatusCode::UNAUTHORIZED, "unknown token; ask an admin for yours".into()))
}

async fn admin(state: &AppState, headers: &HeaderMap) -> ApiResult<Annotator> {
    let who = authenticate(state, headers).await?;
    if who.role != Role::Admin {
        return Err(ApiError(StatusCode::FORBIDDEN, "this needs an admin token".into()));
    }
    Ok(who)
}

/// Parses a JSON body strictly (unknown fields refused), naming the field that is wrong.
fn parse_body<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>, limit: usize) -> ApiResult<T> {
    let bytes = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError(StatusCode::PAYLOAD_TOO_LARGE, format!("request body is larger than the limit of {limit} bytes"))
        } else {
            ApiError(rejection.status(), format!("request body: {}", rejection.body_text()))
        }
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("request body is not valid JSON for this call: {e}")))
}

fn check_text(field: &str, text: &str) -> ApiResult<()> {
    if text.chars().count() > MAX_TEXT_CHARS {
        return Err(ApiError(StatusCode::BAD_REQUEST, format!("{field}: longer than {MAX_TEXT_CHARS} characters")));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    token: String,
}

async fn login(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let LoginBody { token } = parse_body(body, state.opts.max_body_bytes)?;
    let who = with_db(&state, move |db| db.annotator_by_token(token.trim()))
        .await?
        .ok_or_else(|| ApiError(StatusCode::UNAUTHORIZED, "unknown token; ask an admin for yours".into()))?;
    Ok(Json(json!({ "name": who.name, "role": who.role })))
}

#[derive(Serialize)]
struct TaskReply {
    done: bool,
    #[serde(flatten)]
    task: Option<Task>,
    guidelines: String,
    progress: Progress,
}

async fn task(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Json<TaskReply>> {
    let who = authenticate(&state, &headers).await?;
    let alloc = state.opts.allocation;
    let reply = with_db(&state, move |db| {
        let task = db.next_task(&who, alloc)?;
        Ok(TaskReply { done: task.is_none(), task, guidelines: db.guidelines()?, progress: db.progress(&who, alloc)? })
    })
    .await?;
    Ok(Json(reply))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AnswerBody {
    action: String,
    ranking: Option<Vec<Vec<i64>>>,
    flag: Option<String>,
    comment: Option<String>,
}

impl AnswerBody {
    fn decision(self) -> ApiResult<(Decision, Option<String>)> {
        let bad = |m: &str| ApiError(StatusCode::BAD_REQUEST, m.to_string());
        let decision = match (self.action.as_str(), self.ranking, self.flag) {
            ("submit", Some(ranking), None) => Decision::Submit { ranking },
            ("submit", None, _) => {
                return Err(bad("action \"submit\" needs a \"ranking\" (tiers of response ids, best first)"))
            }
            ("skip", None, None) => Decision::Skip,
            ("flag", None, Some(flag)) => Decision::Flag { flag },
            ("flag", _, None) => return Err(bad("action \"flag\" needs a \"flag\": \"unsafe\" or \"broken\"")),
            ("submit" | "skip" | "flag", _, _) => {
                return Err(bad("send \"ranking\" only with \"submit\" and \"flag\" only with \"flag\""))
            }
            (other, _, _) => {
                return Err(ApiError(
                    StatusCode::BAD_REQUEST,
                    format!("action: {other:?} is not one of \"submit\", \"skip\", \"flag\""),
                ))
            }
        };
        let comment = self.comment.filter(|c| !c.trim().is_empty());
        if let Some(c) = &comment {
            check_text("comment", c)?;
        }
        Ok((decision, comment))
    }
}

async fn answer(
    State(state): State<AppState>,
    assignment: Result<UrlPath<i64>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let who = authenticate(&state, &headers).await?;
    let UrlPath(assignment) = assignment.map_err(|_| {
        ApiError(StatusCode::BAD_REQUEST, "the assignment in the URL must be a number, as /api/task gave it".into())
    })?;
    let (decision, comment) = parse_body::<AnswerBody>(body, state.opts.max_body_bytes)?.decision()?;
    let duplicate = with_db(&state, move |db| db.submit(&who, assignment, &decision, comment.as_deref())).await?;
    Ok(Json(json!({ "stored": true, "duplicate": duplicate })))
}

async fn get_guidelines(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Json<serde_json::Value>> {
    authenticate(&state, &headers).await?;
    let text = with_db(&state, |db| db.guidelines()).await?;
    Ok(Json(json!({ "text": text })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GuidelinesBody {
    text: String,
}

async fn put_guidelines(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    admin(&state, &headers).await?;
    let GuidelinesBody { text } = parse_body(body, state.opts.max_body_bytes)?;
    check_text("text", &text)?;
    with_db(&state, move |db| db.set_guidelines(&text)).await?;
    Ok(Json(json!({ "stored": true })))
}

/// What the admin page and `rlhf label stats` show.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub items: ItemCounts,
    pub annotators: Vec<AnnotatorCounts>,
    pub agreement: AgreementReport,
}

pub fn summary(db: &LabelDb) -> Result<Summary, LabelError> {
    Ok(Summary {
        items: db.item_counts()?,
        annotators: db.annotator_counts()?,
        agreement: agreement::report(&db.judgements()?),
    })
}

async fn admin_summary(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Json<Summary>> {
    admin(&state, &headers).await?;
    Ok(Json(with_db(&state, |db| summary(db)).await?))
}

fn page(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn not_found() -> ApiError {
    ApiError(StatusCode::NOT_FOUND, "no such page or API call".into())
}

async fn security_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    let set = |h: &mut HeaderMap, k: &'static str, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(
        h,
        "content-security-policy",
        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    );
    set(h, "x-content-type-options", "nosniff");
    set(h, "x-frame-options", "DENY");
    set(h, "referrer-policy", "no-referrer");
    set(h, "cache-control", "no-store");
    res
}

pub fn router(db: LabelDb, opts: ServerOptions) -> Router {
    let state = AppState { db: Arc::new(Mutex::new(db)), opts };
    Router::new()
        .route("/", get(|| async { page("text/html; charset=utf-8", INDEX_HTML) }))
        .route("/static/app.js", get(|| async { page("text/javascript; charset=utf-8", APP_JS) }))
        .route("/static/app.css", get(|| async { page("text/css; charset=utf-8", APP_CSS) }))
        .route("/api/login", post(login))
        .route("/api/task", get(task))
        .route("/api/assignments/{assignment}", post(answer))
        .route("/api/guidelines", get(get_guidelines).put(put_guidelines))
        .route("/api/admin/summary", get(admin_summary))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(opts.max_body_bytes))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    db: LabelDb,
    opts: ServerOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let header_timeout = opts.header_timeout;
    crate::http::serve(listener, router(db, opts), header_timeout, shutdown).await
}

/// A server on its own runtime thread (tests, and the CLI's foreground `serve`).
pub struct RunningServer {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl RunningServer {
    /// Stops accepting, finishes requests in flight, and returns the server's result.
    pub fn stop(mut self) -> std::io::Result<()> {
        self.shutdown()
    }

    /// Blocks until the server ends on its own (it does not, short of an error).
    pub fn wait(mut self) -> std::io::Result<()> {
        // Holding the sender keeps the shutdown signal from firing.
        let _keep_running = self.stop.take();
        self.thread
            .take()
            .map_or(Ok(()), |t| t.join().unwrap_or_else(|_| Err(std::io::Error::other("server thread panicked"))))
    }

    fn shutdown(&mut self) -> std::io::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.thread
            .take()
            .map_or(Ok(()), |t| t.join().unwrap_or_else(|_| Err(std::io::Error::other("server thread panicked"))))
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// Opens the database, binds `addr` (port 0 picks one) and serves on a new thread.
pub fn spawn(addr: SocketAddr, db_path: &Path, opts: ServerOptions) -> Result<RunningServer, LabelError> {
    let db = LabelDb::open(db_path)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| LabelError::Io(format!("cannot start the server runtime: {e}")))?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(addr))
        .map_err(|e| LabelError::Io(format!("cannot listen on {addr}: {e}")))?;
    let addr = listener.local_addr().map_err(|e| LabelError::Io(e.to_string()))?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("label-server".into())
        .spawn(move || {
            runtime.block_on(serve(listener, db, opts, async move {
                let _ = rx.await;
            }))
        })
        .map_err(|e| LabelError::Io(format!("cannot start the server thread: {e}")))?;
    Ok(RunningServer { addr, stop: Some(tx), thread: Some(thread) })
}
