//! EDI, the HTTP API (`legion server`): what pipelines, notebooks and the
//! command line in remote mode call. Resources live under `/api/v1`; every
//! answer is JSON, an error `{"error": {"code", "message"}}` with the
//! status that fits.
//!
//! - [`auth`]: bearer tokens with roles (admin, data-scientist, viewer).
//!
//! So far: toolchains (list, get, delete), trainings and packagings (list
//! with filters and cursor paging, get, logs), `/health` and `/ready`.

pub mod auth;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::{header, request::Parts, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use self::auth::{Caller, Role, Tokens};
use crate::plugin::Toolchains;
use crate::store::{RunCursor, RunFilter, RunKind, RunRecord, RunState};
use crate::Error;

/// Largest request body accepted.
pub const MAX_BODY: usize = 1 << 20;
/// Longest a request may take (log following, later, excepted).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Most items in one page (ODAHU's cap).
pub const MAX_PAGE: i64 = 500;
/// Items in a page unless asked.
pub const DEFAULT_PAGE: i64 = 50;

/// What the handlers share.
pub struct Api {
    /// The toolchain registry and its store.
    pub toolchains: Toolchains,
    /// Who may call.
    pub tokens: Tokens,
}

type Shared = State<Arc<Api>>;

/// How `legion server` serves.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Where to listen.
    pub listen: SocketAddr,
}

/// Serves until `shutdown` fires. Without tokens only a loopback address
/// is accepted: an unauthenticated API must not be reachable from elsewhere.
pub async fn serve(
    api: Api,
    opts: ServerOptions,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    if !api.tokens.enabled() {
        if !opts.listen.ip().is_loopback() {
            return Err(Error::InvalidArgument {
                field: "--listen".into(),
                message: format!(
                    "{} is not a loopback address: configure --tokens before serving beyond this machine",
                    opts.listen
                ),
            });
        }
        tracing::warn!(listen = %opts.listen, "no --tokens: authentication is off; serving on loopback only");
    }
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|e| Error::io(std::path::Path::new(&opts.listen.to_string()), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io(std::path::Path::new("listener"), e))?;
    tracing::info!(%addr, "legion API listening");
    eprintln!("legion API listening on http://{addr}");
    axum::serve(listener, router(Arc::new(api)))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .map_err(|e| Error::io(std::path::Path::new(&addr.to_string()), e))
}

/// Every route.
pub fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/ready", get(ready))
        .route("/api/v1/toolchains", get(list_toolchains))
        .route(
            "/api/v1/toolchains/{name}",
            get(get_toolchain).delete(delete_toolchain),
        )
        .route("/api/v1/trainings", get(list_trainings))
        .route("/api/v1/trainings/{id}", get(get_training))
        .route("/api/v1/trainings/{id}/logs", get(training_logs))
        .route("/api/v1/packagings", get(list_packagings))
        .route("/api/v1/packagings/{id}", get(get_packaging))
        .route("/api/v1/packagings/{id}/logs", get(packaging_logs))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not-found",
                "no such resource".into(),
            )
        })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn(deadline))
        .with_state(api)
}

/// Every request ends within [`REQUEST_TIMEOUT`].
async fn deadline(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!(
                "the request took longer than {}s",
                REQUEST_TIMEOUT.as_secs()
            ),
        )
        .into_response(),
    }
}

/// An error as the API answers it.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: String) -> Self {
        ApiError {
            status,
            code,
            message,
        }
    }

    fn bad(field: &str, message: String) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid-argument",
            format!("{field}: {message}"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            Json(json!({"error": {"code": self.code, "message": self.message}})),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let (status, code) = match &e {
            Error::UnknownToolchain { .. } => (StatusCode::NOT_FOUND, "not-found"),
            Error::InvalidArgument { .. } | Error::InvalidName(_) => {
                (StatusCode::BAD_REQUEST, "invalid-argument")
            }
            Error::AlreadyRegistered { .. } => (StatusCode::CONFLICT, "already-exists"),
            Error::Policy { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "policy"),
            _ => {
                tracing::error!(error = ?e, "request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        };
        ApiError::new(status, code, e.to_string())
    }
}

/// The caller, from the `Authorization` header: 401 without a valid token.
impl FromRequestParts<Arc<Api>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &Arc<Api>) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        api.tokens.caller(header).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "a valid bearer token is needed (Authorization: Bearer TOKEN)".into(),
            )
        })
    }
}

/// 403 unless `caller` has at least `role`.
fn require(caller: &Caller, role: Role) -> Result<(), ApiError> {
    if caller.role >= role {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "'{}' is a {}; this needs the {} role",
                caller.name,
                caller.role.as_str(),
                role.as_str()
            ),
        ))
    }
}

async fn ready(State(api): Shared) -> Result<Json<serde_json::Value>, ApiError> {
    api.toolchains
        .store()
        .ping()
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not-ready", e.to_string()))?;
    Ok(Json(json!({"status": "ready"})))
}

async fn list_toolchains(State(api): Shared, caller: Caller) -> Result<Response, ApiError> {
    require(&caller, Role::Viewer)?;
    let rows = api.toolchains.list().await?;
    Ok(Json(json!({"items": rows})).into_response())
}

async fn get_toolchain(
    State(api): Shared,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    require(&caller, Role::Viewer)?;
    Ok(Json(api.toolchains.get(&name).await?).into_response())
}

async fn delete_toolchain(
    State(api): Shared,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    require(&caller, Role::Admin)?;
    let removed = api.toolchains.remove(&name).await?;
    tracing::info!(toolchain = %name, by = %caller.name, "toolchain removed");
    Ok(Json(removed).into_response())
}

/// A list's query: filters, a page size, a cursor.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunQuery {
    model: Option<String>,
    version: Option<String>,
    toolchain: Option<String>,
    state: Option<String>,
    /// Created at or after, RFC 3339.
    since: Option<String>,
    /// Created before, RFC 3339.
    until: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

/// A page of runs.
#[derive(Debug, Serialize)]
struct Page {
    items: Vec<RunRecord>,
    /// Pass as `cursor` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

fn time_ms(field: &str, text: &str) -> Result<i64, ApiError> {
    humantime::parse_rfc3339_weak(text)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
        .ok_or_else(|| ApiError::bad(field, format!("'{text}' is not an RFC 3339 time")))
}

async fn list_runs(api: &Api, kind: RunKind, q: RunQuery) -> Result<Page, ApiError> {
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad(
            "limit",
            format!("{limit} is not between 1 and {MAX_PAGE}"),
        ));
    }
    let state = q
        .state
        .as_deref()
        .map(|s| {
            RunState::parse(s).ok_or_else(|| {
                ApiError::bad(
                    "state",
                    format!("'{s}' is not one of queued, running, succeeded, failed, cancelled"),
                )
            })
        })
        .transpose()?;
    let cursor = q
        .cursor
        .as_deref()
        .map(|c| {
            RunCursor::decode(c)
                .ok_or_else(|| ApiError::bad("cursor", "not a cursor this server gave".into()))
        })
        .transpose()?;
    let filter = RunFilter {
        kind: Some(kind),
        model_name: q.model,
        model_version: q.version,
        toolchain: q.toolchain,
        state,
        created_after: q
            .since
            .as_deref()
            .map(|t| time_ms("since", t))
            .transpose()?,
        created_before: q
            .until
            .as_deref()
            .map(|t| time_ms("until", t))
            .transpose()?,
    };
    // One more than asked tells whether there is a next page.
    let mut items = api
        .toolchains
        .store()
        .page_runs(&filter, cursor.as_ref(), limit + 1)
        .await?;
    let next = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items.last().map(|r| RunCursor::after(r).encode())
    } else {
        None
    };
    Ok(Page { items, next })
}

async fn get_run(api: &Api, kind: RunKind, id: &str) -> Result<RunRecord, ApiError> {
    match api.toolchains.store().get_run(id).await? {
        Some(run) if run.kind == kind => Ok(run),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("no {} '{id}'", kind.as_str()),
        )),
    }
}

async fn run_logs(api: &Api, kind: RunKind, id: &str) -> Result<Response, ApiError> {
    let run = get_run(api, kind, id).await?;
    let text = match tokio::fs::read(&run.log_path).await {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(Error::io(std::path::Path::new(&run.log_path), e).into()),
    };
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

fn query(
    q: Result<Query<RunQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<RunQuery, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::bad("query", e.body_text()))
}

async fn list_trainings(
    State(api): Shared,
    caller: Caller,
    q: Result<Query<RunQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Page>, ApiError> {
    require(&caller, Role::Viewer)?;
    Ok(Json(list_runs(&api, RunKind::Training, query(q)?).await?))
}

async fn get_training(
    State(api): Shared,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<RunRecord>, ApiError> {
    require(&caller, Role::Viewer)?;
    Ok(Json(get_run(&api, RunKind::Training, &id).await?))
}

async fn training_logs(
    State(api): Shared,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    require(&caller, Role::Viewer)?;
    run_logs(&api, RunKind::Training, &id).await
}

async fn list_packagings(
    State(api): Shared,
    caller: Caller,
    q: Result<Query<RunQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Page>, ApiError> {
    require(&caller, Role::Viewer)?;
    Ok(Json(list_runs(&api, RunKind::Packaging, query(q)?).await?))
}

async fn get_packaging(
    State(api): Shared,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<RunRecord>, ApiError> {
    require(&caller, Role::Viewer)?;
    Ok(Json(get_run(&api, RunKind::Packaging, &id).await?))
}

async fn packaging_logs(
    State(api): Shared,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    require(&caller, Role::Viewer)?;
    run_logs(&api, RunKind::Packaging, &id).await
}
