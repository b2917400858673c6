//! EDI, the HTTP API (`legion server`): what pipelines, notebooks and the
//! command line in remote mode call. Resources live under `/api/v1`; every
//! answer is JSON, an error `{"error": {"code", "message"}}` with the
//! status that fits.
//!
//! - [`auth`]: bearer tokens with roles (admin, data-scientist, viewer).
//! - [`runs`]: trainings and packagings started here, leased to the
//!   replica running them, started again if it dies, cancelled from any.
//! - [`watch`]: logs followed as they grow, and the event stream.
//!
//! So far: toolchains (list, get, register by upload, delete), trainings and packagings
//! (create, list with filters and cursor paging, get, cancel, logs with
//! `?follow=true`, `?watch=true`), deployments, `/api/v1/events`, models and images,
//! `/metrics`, the OpenAPI document and its page, `/health`, `/ready`.

pub mod auth;
pub mod cluster;
pub mod deployments;
pub mod jwt;
pub mod metrics;
pub mod openapi;
pub mod runs;
pub mod toolchains;
pub mod watch;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::{header, request::Parts, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use self::auth::{Caller, Role, Tokens};
use self::runs::{Accepted, Runner, Stored};
use crate::home::Home;
use crate::operator::crd::{ModelPackagingSpec, ModelTrainingSpec};
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
    /// The data directory.
    pub home: Home,
    /// Who may call: tokens configured here…
    pub tokens: Tokens,
    /// …and JWTs of an identity provider.
    pub jwt: Option<jwt::Jwt>,
    /// The runs this replica executes.
    pub runner: Runner,
    /// The deployments this replica serves.
    pub deployer: deployments::Deployer,
    /// On a cluster (`--executor kube`): runs and deployments are the
    /// operator's custom resources.
    pub cluster: Option<cluster::Cluster>,
    /// The newest event's position ([`watch::publish_events`]).
    pub events: tokio::sync::watch::Sender<i64>,
    /// Request and run metrics.
    pub metrics: metrics::Metrics,
    /// The OpenAPI document, serialised once, and its page.
    docs: (bytes::Bytes, String),
}

impl Api {
    /// The API over `toolchains` in `home`.
    pub fn new(toolchains: Toolchains, home: Home, tokens: Tokens, runner: Runner) -> Self {
        Api {
            toolchains,
            home,
            tokens,
            jwt: None,
            runner,
            deployer: deployments::Deployer::new(std::net::Ipv4Addr::LOCALHOST.into()),
            cluster: None,
            events: tokio::sync::watch::channel(0).0,
            metrics: metrics::Metrics::new(),
            docs: {
                let doc = openapi::document();
                (
                    bytes::Bytes::from(serde_json::to_vec(&doc).unwrap_or_default()),
                    openapi::page(&doc),
                )
            },
        }
    }
}

pub(crate) type Shared = State<Arc<Api>>;

/// How `legion server` serves.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Where to listen.
    pub listen: SocketAddr,
    /// How often a JWKS URL is fetched again.
    pub jwks_refresh: Duration,
}

/// Serves until `shutdown` fires. Without tokens only a loopback address
/// is accepted: an unauthenticated API must not be reachable from elsewhere.
pub async fn serve(
    api: Api,
    opts: ServerOptions,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    if !api.tokens.enabled() && api.jwt.is_none() {
        if !opts.listen.ip().is_loopback() {
            return Err(Error::InvalidArgument {
                field: "--listen".into(),
                message: format!(
                    "{} is not a loopback address: configure --tokens before serving beyond this machine",
                    opts.listen
                ),
            });
        }
        tracing::warn!(listen = %opts.listen, "no --tokens and no --jwks: authentication is off; serving on loopback only");
    }
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|e| Error::io(std::path::Path::new(&opts.listen.to_string()), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io(std::path::Path::new("listener"), e))?;
    tracing::info!(%addr, replica = %api.runner.replica, "legion API listening");
    eprintln!("legion API listening on http://{addr}");
    let api = Arc::new(api);
    let background = CancellationToken::new();
    let publisher = tokio::spawn(watch::publish_events(
        api.toolchains.store().clone(),
        api.events.clone(),
        background.clone(),
    ));
    // The replica's lease exists before any run it accepts: a run whose
    // owner has none could not be claimed should the replica die.
    api.toolchains
        .store()
        .renew_leases(&api.runner.replica, api.runner.lease_until())
        .await?;
    let leases = tokio::spawn(runs::keep_leases(api.clone(), background.clone()));
    let keys = {
        let (api, stop, every) = (api.clone(), background.clone(), opts.jwks_refresh);
        tokio::spawn(async move {
            if let Some(jwt) = &api.jwt {
                jwt.keep_fresh(every, stop).await;
            }
        })
    };
    let served = axum::serve(listener, router(api.clone()))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .map_err(|e| Error::io(std::path::Path::new(&addr.to_string()), e));
    // Leases are let go on the way out: another replica (or this one,
    // started again) takes the runs at once rather than after a lease.
    background.cancel();
    let _ = leases.await;
    let _ = publisher.await;
    let _ = keys.await;
    api.runner.stop().await;
    served
}

/// Every route.
pub fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics::render))
        .route(
            "/api/v1/openapi.json",
            get(|State(api): Shared| async move {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    api.docs.0.clone(),
                )
            }),
        )
        .route(
            "/api/v1/docs",
            get(|State(api): Shared| async move { axum::response::Html(api.docs.1.clone()) }),
        )
        .route(
            "/api/v1/toolchains",
            get(toolchains::list)
                .post(toolchains::register)
                .layer(axum::extract::DefaultBodyLimit::max(toolchains::MAX_UPLOAD)),
        )
        .route(
            "/api/v1/toolchains/{name}",
            get(toolchains::get).delete(toolchains::delete),
        )
        .route(
            "/api/v1/trainings",
            get(list_trainings).post(create_training),
        )
        .route("/api/v1/trainings/{id}", get(get_training))
        .route("/api/v1/trainings/{id}/cancel", post(cancel_training))
        .route("/api/v1/trainings/{id}/logs", get(training_logs))
        .route(
            "/api/v1/packagings",
            get(list_packagings).post(create_packaging),
        )
        .route("/api/v1/packagings/{id}", get(get_packaging))
        .route("/api/v1/packagings/{id}/cancel", post(cancel_packaging))
        .route("/api/v1/packagings/{id}/logs", get(packaging_logs))
        .route(
            "/api/v1/deployments",
            get(deployments::list).post(deployments::create),
        )
        .route(
            "/api/v1/deployments/{name}",
            get(deployments::get).delete(deployments::delete),
        )
        .route("/api/v1/events", get(events))
        .route("/api/v1/models", get(list_models))
        .route("/api/v1/models/{reference}", get(get_model))
        .route("/api/v1/images", get(list_images))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not-found",
                "no such resource".into(),
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "this resource does not take that method".into(),
            )
        })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn(deadline))
        .layer(axum::middleware::from_fn_with_state(
            api.clone(),
            metrics::track,
        ))
        .with_state(api)
}

/// Every request ends within [`REQUEST_TIMEOUT`], a registration (which
/// compiles the component) within [`toolchains::REGISTER_TIMEOUT`].
async fn deadline(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let limit =
        if req.method() == axum::http::Method::POST && req.uri().path() == "/api/v1/toolchains" {
            toolchains::REGISTER_TIMEOUT
        } else {
            REQUEST_TIMEOUT
        };
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!("the request took longer than {}s", limit.as_secs()),
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
    /// The run it concerns, when one was recorded.
    run: Option<Box<RunRecord>>,
    /// The deployment it concerns, when one was recorded.
    deployment: Option<Box<crate::store::DeploymentRecord>>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: String) -> Self {
        ApiError {
            status,
            code,
            message,
            run: None,
            deployment: None,
        }
    }

    /// What went wrong.
    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    /// The same error, about `d` (which the answer carries).
    pub(crate) fn with_deployment(mut self, d: crate::store::DeploymentRecord) -> Self {
        self.deployment = Some(Box::new(d));
        self
    }

    pub(crate) fn bad(field: &str, message: String) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid-argument",
            format!("{field}: {message}"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(run) = self.run {
            error["run"] = json!(run);
        }
        if let Some(d) = self.deployment {
            error["deployment"] = json!(d);
        }
        let mut r = (self.status, Json(json!({ "error": error }))).into_response();
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
            Error::BadPlan { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid-plan"),
            Error::Untrusted { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "untrusted"),
            // The cluster's API server down or refusing us: try again later.
            Error::Kubernetes { .. } => {
                tracing::warn!(error = %e, "kubernetes API");
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            // The database down or restarting: try again later.
            Error::Database { .. } => {
                tracing::warn!(error = %e, "state database");
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
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
        let unauthenticated = |why: &str| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                format!("{why}: a valid bearer token is needed (Authorization: Bearer TOKEN)"),
            )
        };
        if let Some(jwt) = &api.jwt {
            let token = header
                .and_then(|h| h.strip_prefix("Bearer "))
                .map(str::trim);
            if let Some(token) = token.filter(|t| t.matches('.').count() == 2) {
                return jwt
                    .caller_fresh(token)
                    .await
                    .map_err(|refusal| match refusal {
                        jwt::Refusal::Invalid(why) => unauthenticated(&why),
                        jwt::Refusal::NoRole(why) => {
                            ApiError::new(StatusCode::FORBIDDEN, "forbidden", why)
                        }
                    });
            }
            if !api.tokens.enabled() {
                return Err(unauthenticated("no JWT"));
            }
        }
        api.tokens
            .caller(header)
            .ok_or_else(|| unauthenticated("no valid token"))
    }
}

/// 403 unless `caller` has at least `role`.
pub(crate) fn require(caller: &Caller, role: Role) -> Result<(), ApiError> {
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

/// A list's query: filters, a page size, a cursor; or a watch.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RunQuery {
    /// Stream the kind's state changes (Server-Sent Events) instead. Left
    /// out of the OpenAPI parameters (described in the summary): a
    /// generated client or a fuzzer would wait on a stream that never ends.
    #[serde(default)]
    #[schemars(skip)]
    watch: bool,
    /// The model's name.
    model: Option<String>,
    /// The model's version.
    version: Option<String>,
    /// The toolchain's name.
    toolchain: Option<String>,
    /// `queued`, `running`, `succeeded`, `failed` or `cancelled`.
    state: Option<String>,
    /// Created at or after, RFC 3339.
    since: Option<String>,
    /// Created before, RFC 3339.
    until: Option<String>,
    /// Runs in a page (default 50).
    #[schemars(range(min = 1, max = 500))]
    limit: Option<i64>,
    /// The previous page's `next`.
    cursor: Option<String>,
}

/// A page of runs.
#[derive(Debug, Serialize, schemars::JsonSchema)]
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

/// `…/logs`'s query.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct LogQuery {
    /// Keep streaming until the run is over.
    #[serde(default)]
    follow: bool,
}

async fn run_logs(
    api: Arc<Api>,
    kind: RunKind,
    id: &str,
    q: LogQuery,
) -> Result<Response, ApiError> {
    let run = get_run(&api, kind, id).await?;
    if q.follow {
        let stream = watch::follow_log(api.clone(), run.id.clone(), run.log_path.clone().into());
        return Ok((
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            axum::body::Body::from_stream(stream),
        )
            .into_response());
    }
    let text = watch::read_log(&api, &run.id, std::path::Path::new(&run.log_path)).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::bad("query", e.body_text()))
}

/// A JSON body as `T`: malformed input and unknown fields are refused,
/// naming the field.
pub(crate) fn body<T: DeserializeOwned>(
    b: Result<Json<serde_json::Value>, JsonRejection>,
) -> Result<T, ApiError> {
    let Json(value) = b.map_err(|e| ApiError::bad("body", e.body_text()))?;
    if !value.is_object() {
        return Err(ApiError::bad("body", "expected a JSON object".into()));
    }
    let mut unknown = Vec::new();
    let mut note = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
    let de = serde_ignored::Deserializer::new(value, &mut note);
    let parsed: T = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        ApiError::bad(
            if path == "." { "body" } else { &path },
            e.into_inner().to_string(),
        )
    })?;
    if let Some(field) = unknown.first() {
        return Err(ApiError::bad(field, "unknown field".into()));
    }
    Ok(parsed)
}

/// A list, or with `?watch=true` the stream of its kind's changes from
/// now (or after the `Last-Event-ID` a reconnecting client sends).
async fn list_or_watch(
    api: Arc<Api>,
    kind: RunKind,
    q: RunQuery,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    if q.watch {
        let since = match last_event_id(headers)? {
            Some(seq) => seq,
            None => api.toolchains.store().last_event().await?,
        };
        return Ok(watch::events(api, since, Some(kind)).into_response());
    }
    Ok(Json(list_runs(&api, kind, q).await?).into_response())
}

fn last_event_id(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    headers
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
                .filter(|s| *s >= 0)
                .ok_or_else(|| {
                    ApiError::bad("Last-Event-ID", "not an event id this server gave".into())
                })
        })
        .transpose()
}

/// `GET /api/v1/events`'s query.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    /// Resume after this event (0: from the first).
    since: Option<i64>,
    /// `training` or `packaging`.
    kind: Option<String>,
}

async fn events(
    State(api): Shared,
    caller: Caller,
    headers: HeaderMap,
    q: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    require(&caller, Role::Viewer)?;
    let q = query(q)?;
    let kind = q
        .kind
        .as_deref()
        .map(|k| {
            RunKind::parse(k)
                .ok_or_else(|| ApiError::bad("kind", format!("'{k}' is not training or packaging")))
        })
        .transpose()?;
    if matches!(q.since, Some(s) if s < 0) {
        return Err(ApiError::bad("since", "must be 0 or more".into()));
    }
    let since = match (last_event_id(&headers)?, q.since) {
        (Some(seq), _) | (None, Some(seq)) => seq,
        (None, None) => api.toolchains.store().last_event().await?,
    };
    Ok(watch::events(api, since, kind).into_response())
}

/// What a create's answer is: 202 with the run once planned (or still
/// planning), 422 with it when the plan or the policy refused it.
fn accepted(kind: RunKind, a: Accepted) -> Response {
    match a {
        Accepted::Planned(run) | Accepted::Planning(run) => {
            let location = format!("/api/v1/{}s/{}", kind.as_str(), run.id);
            let mut r = (StatusCode::ACCEPTED, Json(run)).into_response();
            if let Ok(v) = HeaderValue::from_str(&location) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
        Accepted::Busy => {
            let mut r = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                format!(
                    "the server could not take the {} within {}s: nothing was started; try again",
                    kind.as_str(),
                    runs::PLAN_WAIT.as_secs()
                ),
            )
            .into_response();
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            r
        }
        Accepted::Ended(run) if run.state == RunState::Succeeded => {
            (StatusCode::ACCEPTED, Json(run)).into_response()
        }
        Accepted::Ended(run) => {
            let mut e = ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "rejected",
                format!(
                    "{} {} {}: {}",
                    kind.as_str(),
                    run.id,
                    run.state.as_str(),
                    run.reason.as_deref().unwrap_or("")
                ),
            );
            e.run = Some(Box::new(run));
            e.into_response()
        }
    }
}

/// A create's refusal: an unknown toolchain is a bad field, not a
/// missing resource.
fn refused(e: Error) -> ApiError {
    match e {
        Error::UnknownToolchain { .. } => ApiError::bad("toolchain", e.to_string()),
        e => e.into(),
    }
}

async fn create_training(
    State(api): Shared,
    caller: Caller,
    b: Result<Json<serde_json::Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    require(&caller, Role::DataScientist)?;
    let spec: ModelTrainingSpec = body(b)?;
    crate::operator::runs::training_options(&spec, "")
        .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, "invalid-argument", m))?;
    runs::check_training(&api.runner, &spec)?;
    let a = match &api.cluster {
        Some(c) => c.create_training(&api, spec, &caller.name).await,
        None => runs::start(&api, Stored::Training { spec }).await,
    }
    .map_err(refused)?;
    tracing::info!(by = %caller.name, "training created");
    Ok(accepted(RunKind::Training, a))
}

async fn create_packaging(
    State(api): Shared,
    caller: Caller,
    b: Result<Json<serde_json::Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    require(&caller, Role::DataScientist)?;
    let spec: ModelPackagingSpec = body(b)?;
    runs::check_packaging(&api.runner, &spec)?;
    let mut training = None;
    let model = match (&spec.training_ref, &spec.model_ref) {
        (Some(_), Some(_)) | (None, None) => {
            return Err(ApiError::bad(
                "trainingRef",
                "give exactly one of trainingRef (a training's id) and modelRef".into(),
            ))
        }
        (None, Some(m)) => m.clone(),
        (Some(t), None) => {
            let run = api.toolchains.store().get_run(t).await?;
            match run {
                Some(run) if run.kind == RunKind::Training => match (run.state, run.pushed_ref.clone().or(run.model_ref.clone())) {
                    (RunState::Succeeded, Some(m)) => {
                        training = Some(run);
                        m
                    }
                    (state, _) => {
                        return Err(ApiError::new(
                            StatusCode::CONFLICT,
                            "training-not-succeeded",
                            format!("trainingRef: training '{t}' is {}: only a succeeded training's model can be packaged", state.as_str()),
                        ))
                    }
                },
                _ => return Err(ApiError::bad("trainingRef", format!("no training '{t}'"))),
            }
        }
    };
    let a = match &api.cluster {
        Some(c) => {
            c.create_packaging(&api, spec, training.as_ref(), &caller.name)
                .await
        }
        None => runs::start(&api, Stored::Packaging { spec, model }).await,
    }
    .map_err(refused)?;
    tracing::info!(by = %caller.name, "packaging created");
    Ok(accepted(RunKind::Packaging, a))
}

/// Cancels a run wherever it runs: 202 with the run; 409 if it is over.
async fn cancel_run(
    api: &Api,
    kind: RunKind,
    id: &str,
    caller: &Caller,
) -> Result<Response, ApiError> {
    let run = get_run(api, kind, id).await?;
    if let Some(c) = &api.cluster {
        // On a cluster a run is its object's: deleting it cancels the run.
        if !run.state.is_final() && c.cancel(kind, id).await? {
            tracing::info!(run = %id, by = %caller.name, "object deleted to cancel its run");
            return Ok((StatusCode::ACCEPTED, Json(get_run(api, kind, id).await?)).into_response());
        }
    }
    if !api.toolchains.store().request_cancel(id).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already-over",
            format!(
                "{} '{id}' is {}: nothing to cancel",
                kind.as_str(),
                run.state.as_str()
            ),
        ));
    }
    api.runner.cancel_local(id);
    tracing::info!(run = %id, by = %caller.name, "cancel asked");
    Ok((StatusCode::ACCEPTED, Json(get_run(api, kind, id).await?)).into_response())
}

async fn cancel_training(
    State(api): Shared,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    require(&caller, Role::DataScientist)?;
    cancel_run(&api, RunKind::Training, &id, &caller).await
}

async fn cancel_packaging(
    State(api): Shared,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    require(&caller, Role::DataScientist)?;
    cancel_run(&api, RunKind::Packaging, &id, &caller).await
}

async fn list_trainings(
    State(api): Shared,
    caller: Caller,
    headers: HeaderMap,
    q: Result<Query<RunQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    require(&caller, Role::Viewer)?;
    list_or_watch(api, RunKind::Training, query(q)?, &headers).await
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
    q: Result<Query<LogQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    require(&caller, Role::Viewer)?;
    run_logs(api, RunKind::Training, &id, query(q)?).await
}

async fn list_packagings(
    State(api): Shared,
    caller: Caller,
    headers: HeaderMap,
    q: Result<Query<RunQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    require(&caller, Role::Viewer)?;
    list_or_watch(api, RunKind::Packaging, query(q)?, &headers).await
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
    q: Result<Query<LogQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    require(&caller, Role::Viewer)?;
    run_logs(api, RunKind::Packaging, &id, query(q)?).await
}

/// A list of stored models.
#[derive(Debug, Serialize, schemars::JsonSchema)]
struct ModelList {
    items: Vec<crate::oci::catalog::ModelEntry>,
}

/// A list of packaged images.
#[derive(Debug, Serialize, schemars::JsonSchema)]
struct ImageList {
    items: Vec<crate::oci::catalog::ImageEntry>,
}

async fn list_models(State(api): Shared, caller: Caller) -> Result<Json<ModelList>, ApiError> {
    require(&caller, Role::Viewer)?;
    let home = api.home.clone();
    let items = tokio::task::spawn_blocking(move || crate::oci::catalog::models(&home))
        .await
        .map_err(|e| Error::Engine {
            context: "listing models",
            source: e.into(),
        })??;
    Ok(Json(ModelList { items }))
}

async fn get_model(
    State(api): Shared,
    caller: Caller,
    Path(reference): Path<String>,
) -> Result<Response, ApiError> {
    require(&caller, Role::Viewer)?;
    let layout = crate::oci::layout::Layout::open(api.home.models())?;
    match crate::oci::model::read_model(&layout, &reference)? {
        Some((desc, manifest, config)) => Ok(Json(
            json!({"reference": reference, "digest": desc.digest, "manifest": manifest, "config": config}),
        )
        .into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("no stored model '{reference}' (name:version or sha256:…)"),
        )),
    }
}

async fn list_images(State(api): Shared, caller: Caller) -> Result<Json<ImageList>, ApiError> {
    require(&caller, Role::Viewer)?;
    let items = crate::oci::catalog::images(&api.home, api.toolchains.store()).await?;
    Ok(Json(ImageList { items }))
}
