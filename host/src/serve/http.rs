//! The HTTP front: every protocol on one port, request ids, limits,
//! metrics, the request/response log and the feedback endpoint.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{to_bytes, Body};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde_json::{json, Value};

use super::log::{FeedbackRecord, JsonLines, RequestRecord};
use super::metrics::{Metrics, ProtocolLabels, RequestLabels};
use super::model::ServedModel;
use super::pool::{Pool, PredictError};
use super::protocols::{self, conform};
use super::table::{Prediction, Table};

/// The `Request-ID` header.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("request-id");

/// Limits of the HTTP front.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Longest a prediction may take, queue included.
    pub request_timeout: Duration,
}

/// Shared state of the handlers.
pub struct AppState {
    /// The model.
    pub model: ServedModel,
    /// The workers.
    pub pool: Pool,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Limits.
    pub limits: Limits,
    /// Request/response log, if enabled.
    pub request_log: Option<JsonLines>,
    /// Feedback log.
    pub feedback_log: JsonLines,
    /// When the server started.
    pub started: Instant,
}

type Shared = Arc<AppState>;

/// The router.
pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/v2", get(oip_server))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/{name}", get(oip_model))
        .route("/v2/models/{name}/ready", get(oip_model_ready))
        .route("/v2/models/{name}/infer", post(oip_infer))
        .route("/v2/models/{name}/versions/{version}", get(oip_model_v))
        .route(
            "/v2/models/{name}/versions/{version}/ready",
            get(oip_model_ready_v),
        )
        .route(
            "/v2/models/{name}/versions/{version}/infer",
            post(oip_infer_v),
        )
        .route("/invocations", post(mlflow_invocations))
        .route("/ping", get(ping))
        .route("/health", get(ping))
        .route("/version", get(version))
        .route("/healthcheck", get(healthcheck))
        .route("/api/model/info", get(legion_info))
        .route("/api/model/invoke", post(legion_invoke))
        .route("/feedback", post(feedback))
        .route("/api/v1/feedback", post(feedback))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(axum::middleware::from_fn(request_id))
        .with_state(state)
}

/// Takes `Request-ID` (or `X-Request-ID`) from the request or makes one,
/// and puts it on the response.
async fn request_id(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .or_else(|| req.headers().get("x-request-id"))
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 200)
        .map(str::to_string)
        .unwrap_or_else(new_request_id);
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut resp = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID.clone(), v);
    }
    resp
}

fn new_request_id() -> String {
    use rand::Rng;
    let r: u128 = rand::rng().random();
    format!("{:032x}", r)
}

/// The request's id, as the middleware settled it.
#[derive(Debug, Clone)]
struct RequestId(String);

/// Which dialect a request speaks: it decides the error format.
#[derive(Debug, Clone, Copy)]
enum Dialect {
    Oip,
    Mlflow,
    Legion,
}

impl Dialect {
    fn label(self) -> &'static str {
        match self {
            Dialect::Oip => "oip",
            Dialect::Mlflow => "mlflow",
            Dialect::Legion => "legion",
        }
    }
}

/// An error answered in the dialect's own shape.
struct ApiError {
    status: StatusCode,
    message: String,
    dialect: Dialect,
}

impl ApiError {
    fn new(status: StatusCode, dialect: Dialect, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            dialect,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = match self.dialect {
            Dialect::Oip => json!({ "error": self.message }),
            Dialect::Mlflow => json!({
                "error_code": match self.status.as_u16() { 400 | 413 | 415 => "BAD_REQUEST", 404 => "RESOURCE_DOES_NOT_EXIST", 503 | 504 => "TEMPORARILY_UNAVAILABLE", _ => "INTERNAL_ERROR" },
                "message": self.message,
            }),
            Dialect::Legion => json!({ "message": self.message }),
        };
        let mut resp = (self.status, Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

async fn read_body(
    body: Body,
    state: &AppState,
    dialect: Dialect,
) -> Result<axum::body::Bytes, ApiError> {
    to_bytes(body, state.limits.max_body_bytes)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                dialect,
                format!(
                    "the body is larger than the {} bytes allowed",
                    state.limits.max_body_bytes
                ),
            )
        })
}

fn parse_json(bytes: &[u8], dialect: Dialect) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            dialect,
            format!("invalid JSON: {e}"),
        )
    })
}

/// Conforms, predicts, times, counts and logs one request.
async fn predict(
    state: &AppState,
    dialect: Dialect,
    request_id: &str,
    table: Table,
    input: &Value,
) -> Result<Prediction, ApiError> {
    let started = Instant::now();
    let result = async {
        let table = conform(table, state.model.signature())
            .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, dialect, m))?;
        if table.rows() == 0 {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                dialect,
                "the request has no rows",
            ));
        }
        if state.pool.ready_workers() == 0 {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                dialect,
                "the model is not loaded yet",
            ));
        }
        match tokio::time::timeout(state.limits.request_timeout, state.pool.predict(table)).await {
            Err(_) => Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                dialect,
                format!(
                    "no prediction within {} ms",
                    state.limits.request_timeout.as_millis()
                ),
            )),
            Ok(Ok(p)) => Ok(p),
            Ok(Err(PredictError::Overloaded)) => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                dialect,
                "overloaded: the request queue is full, retry later",
            )),
            Ok(Err(PredictError::WorkerCrashed(why))) => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                dialect,
                format!(
                    "the worker crashed while predicting ({why}); it is being restarted, retry"
                ),
            )),
            Ok(Err(PredictError::Closed)) => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                dialect,
                "the server is shutting down",
            )),
            Ok(Err(PredictError::Model(m))) => Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                dialect,
                format!("the model failed: {m}"),
            )),
        }
    }
    .await;
    let status = match &result {
        Ok(_) => 200,
        Err(e) => e.status.as_u16(),
    };
    let protocol = dialect.label().to_string();
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            protocol: protocol.clone(),
            code: status,
        })
        .inc();
    state
        .metrics
        .latency
        .get_or_create(&ProtocolLabels { protocol })
        .observe(started.elapsed().as_secs_f64());
    if let Some(log) = &state.request_log {
        log.write(&RequestRecord {
            time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            request_id: request_id.to_string(),
            model: state.model.name.clone(),
            version: state.model.version.clone(),
            protocol: dialect.label(),
            status,
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
            input: input.clone(),
            output: match &result {
                Ok(p) => json!({ "shape": p.shape, "data": p.values.to_json() }),
                Err(e) => json!({ "error": e.message }),
            },
        });
    }
    result
}

fn bad(dialect: Dialect, message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, dialect, message)
}

// ---------------- OIP v2 ----------------

async fn live() -> Json<Value> {
    Json(json!({ "live": true }))
}

async fn ready(State(s): State<Shared>) -> Response {
    if s.pool.ready_workers() > 0 {
        Json(json!({ "ready": true })).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ready": false })),
        )
            .into_response()
    }
}

async fn oip_server() -> Json<Value> {
    Json(json!({ "name": "legion", "version": env!("CARGO_PKG_VERSION"), "extensions": [] }))
}

fn check_model(s: &AppState, name: &str, version: Option<&str>) -> Result<(), ApiError> {
    if name != s.model.name || version.is_some_and(|v| v != s.model.version) {
        let asked = match version {
            Some(v) => format!("{name} version {v}"),
            None => name.to_string(),
        };
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            Dialect::Oip,
            format!(
                "unknown model {asked}; this server serves {} version {}",
                s.model.name, s.model.version
            ),
        ));
    }
    Ok(())
}

fn metadata(s: &AppState) -> Value {
    let sig = s.model.signature();
    let tensor = |t: &crate::plan::TensorSpec, default: &str| {
        json!({
            "name": t.name.clone().unwrap_or_else(|| default.to_string()),
            "datatype": protocols::oip_datatype_of(&t.datatype),
            "shape": if t.shape.is_empty() { vec![-1] } else { t.shape.clone() },
        })
    };
    json!({
        "name": s.model.name,
        "versions": [s.model.version],
        "platform": format!("legion/{}", s.model.config.manifest.flavor),
        "inputs": sig.map(|s| s.inputs.iter().map(|t| tensor(t, "input")).collect::<Vec<_>>()).unwrap_or_default(),
        "outputs": sig.map(|s| s.outputs.iter().map(|t| tensor(t, "predict")).collect::<Vec<_>>()).unwrap_or_default(),
        "parameters": { "digest": s.model.digest },
    })
}

async fn oip_model(
    State(s): State<Shared>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_model(&s, &name, None)?;
    Ok(Json(metadata(&s)))
}

async fn oip_model_v(
    State(s): State<Shared>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    check_model(&s, &name, Some(&version))?;
    Ok(Json(metadata(&s)))
}

async fn oip_model_ready(
    State(s): State<Shared>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    check_model(&s, &name, None)?;
    Ok(ready(State(s)).await)
}

async fn oip_model_ready_v(
    State(s): State<Shared>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    check_model(&s, &name, Some(&version))?;
    Ok(ready(State(s)).await)
}

async fn oip_infer(
    State(s): State<Shared>,
    Path(name): Path<String>,
    Extension(id): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    infer(s, name, None, id, headers, body).await
}

async fn oip_infer_v(
    State(s): State<Shared>,
    Path((name, version)): Path<(String, String)>,
    Extension(id): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    infer(s, name, Some(version), id, headers, body).await
}

/// Header giving the JSON part's length in Triton's binary extension.
const INFERENCE_HEADER: &str = "inference-header-content-length";

async fn infer(
    s: Shared,
    name: String,
    version: Option<String>,
    RequestId(request_id): RequestId,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let d = Dialect::Oip;
    check_model(&s, &name, version.as_deref())?;
    let bytes = read_body(body, &s, d).await?;
    let json_len = match headers.get(INFERENCE_HEADER) {
        Some(v) => {
            let n = v
                .to_str()
                .ok()
                .and_then(|t| t.parse::<usize>().ok())
                .ok_or_else(|| bad(d, format!("{INFERENCE_HEADER} must be a byte count")))?;
            if n > bytes.len() {
                return Err(bad(
                    d,
                    format!(
                        "{INFERENCE_HEADER} is {n} but the body has {} bytes",
                        bytes.len()
                    ),
                ));
            }
            n
        }
        None => bytes.len(),
    };
    let mut value = parse_json(&bytes[..json_len], d)?;
    protocols::oip_inline_binary(&mut value, &bytes[json_len..]).map_err(|m| bad(d, m))?;
    let (table, id) = protocols::oip_request(&value, s.model.signature()).map_err(|m| bad(d, m))?;
    let p = predict(&s, d, &request_id, table, &value).await?;
    let id = id.unwrap_or(request_id);
    let mut answer = protocols::oip_response(
        &s.model.name,
        &s.model.version,
        &id,
        &p,
        s.model.signature(),
    );
    if !protocols::oip_wants_binary(&value) {
        return Ok(Json(answer).into_response());
    }
    let raw = protocols::oip_binary(&p);
    if let Some(out) = answer
        .get_mut("outputs")
        .and_then(|o| o.get_mut(0))
        .and_then(|o| o.as_object_mut())
    {
        out.remove("data");
        out.insert(
            "parameters".into(),
            json!({ "binary_data_size": raw.len() }),
        );
    }
    let mut body = serde_json::to_vec(&answer)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, d, e.to_string()))?;
    let header_len = body.len();
    body.extend_from_slice(&raw);
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&header_len.to_string()) {
        h.insert(HeaderName::from_static(INFERENCE_HEADER), v);
    }
    Ok(resp)
}

// ---------------- MLflow ----------------

async fn ping() -> &'static str {
    "\n"
}

async fn version(State(s): State<Shared>) -> String {
    s.model
        .config
        .manifest
        .metadata
        .get("mlflow_version")
        .cloned()
        .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string())
}

async fn mlflow_invocations(
    State(s): State<Shared>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let d = Dialect::Mlflow;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_ascii_lowercase();
    let bytes = read_body(body, &s, d).await?;
    let (table, input) = if content_type.starts_with("text/csv") {
        (
            protocols::mlflow_csv(&bytes).map_err(|m| bad(d, m))?,
            Value::String(String::from_utf8_lossy(&bytes).into_owned()),
        )
    } else if content_type.starts_with("application/json") {
        let v = parse_json(&bytes, d)?;
        (
            protocols::mlflow_json(&v, s.model.signature()).map_err(|m| bad(d, m))?,
            v,
        )
    } else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            d,
            format!(
                "content type '{content_type}' is not supported: use application/json or text/csv"
            ),
        ));
    };
    let p = predict(&s, d, &request_id, table, &input).await?;
    Ok(Json(protocols::mlflow_response(&p)))
}

// ---------------- Legion / ODAHU ----------------

async fn healthcheck(State(s): State<Shared>) -> Response {
    let ok = s.pool.ready_workers() > 0;
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({ "status": ok }))).into_response()
}

async fn legion_info(State(s): State<Shared>) -> Json<Value> {
    Json(protocols::openapi(
        &s.model.name,
        &s.model.version,
        s.model.signature(),
    ))
}

async fn legion_invoke(
    State(s): State<Shared>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    body: Body,
) -> Result<Response, ApiError> {
    let d = Dialect::Legion;
    let bytes = read_body(body, &s, d).await?;
    let v = parse_json(&bytes, d)?;
    let table = protocols::legion_request(&v).map_err(|m| bad(d, m))?;
    let p = predict(&s, d, &request_id, table, &v).await?;
    let mut resp = Json(protocols::legion_response(&p, s.model.signature())).into_response();
    for (k, v) in [
        ("model-name", &s.model.name),
        ("model-version", &s.model.version),
    ] {
        if let Ok(v) = HeaderValue::from_str(v) {
            resp.headers_mut().insert(HeaderName::from_static(k), v);
        }
    }
    Ok(resp)
}

async fn feedback(
    State(s): State<Shared>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let d = Dialect::Legion;
    let header_of = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    // Only an id the client sent counts: feedback names the prediction it is about.
    let request_id = header_of("request-id").or_else(|| header_of("x-request-id"));
    let (Some(request_id), Some(model_name), Some(model_version)) = (
        request_id,
        header_of("model-name"),
        header_of("model-version"),
    ) else {
        return Err(bad(d, "feedback needs the Request-ID, Model-Name and Model-Version headers of the prediction it is about".into()));
    };
    let bytes = read_body(body, &s, d).await?;
    let payload = parse_json(&bytes, d)?;
    s.feedback_log.write(&FeedbackRecord {
        time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        request_id,
        model_name,
        model_version,
        payload,
    });
    Ok(Json(json!({ "error": false, "registered": true })))
}

async fn metrics(State(s): State<Shared>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        Dialect::Oip,
        format!("no route for {} {}", req.method(), req.uri().path()),
    )
}
