//! The HTTP front: every protocol's routes on one port, request ids,
//! limits, the one prediction path they all share (signature check, pool,
//! timeout, metrics, request log), and `/metrics`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{to_bytes, Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use crate::log::{JsonLines, RequestRecord};
use crate::metrics::{Metrics, ProtocolLabels, RequestLabels};
use crate::model::ModelSpec;
use crate::pool::{Pool, PredictError};
use crate::protocol::{self, conform, ApiError, Dialect};
use crate::table::{Prediction, Table};

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
    pub model: ModelSpec,
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
}

/// What handlers get.
pub type Shared = Arc<AppState>;

impl AppState {
    /// Whether a worker has the model loaded.
    pub fn is_ready(&self) -> bool {
        self.pool.ready_workers() > 0
    }
}

/// The router: every protocol's routes, `/metrics`, request ids.
pub fn router(state: Shared) -> Router {
    Router::new()
        .merge(protocol::oip::routes())
        .merge(protocol::mlflow::routes())
        .merge(protocol::legion::routes())
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
    format!("{r:032x}")
}

/// The request's id, as the middleware settled it.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Reads the body up to the size limit (413 beyond it).
pub async fn read_body(body: Body, state: &AppState, dialect: Dialect) -> Result<Bytes, ApiError> {
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

/// Parses JSON (400 naming the position of the error).
pub fn parse_json(bytes: &[u8], dialect: Dialect) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad(dialect, format!("invalid JSON: {e}")))
}

/// Conforms, predicts, times, counts and logs one request. `input` gives
/// the request as JSON for the request log; it is called only when logging.
pub async fn predict(
    state: &AppState,
    dialect: Dialect,
    request_id: &str,
    table: Table,
    input: &(dyn Fn() -> Value + Sync),
) -> Result<Prediction, ApiError> {
    let started = Instant::now();
    let result = async {
        let table = conform(table, state.model.signature.as_ref())
            .map_err(|m| ApiError::bad(dialect, m))?;
        if table.rows() == 0 {
            return Err(ApiError::bad(dialect, "the request has no rows"));
        }
        if !state.is_ready() {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                dialect,
                "the model is not loaded yet",
            ));
        }
        let timeout = state.limits.request_timeout;
        match tokio::time::timeout(timeout, state.pool.predict(table)).await {
            Err(_) => Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                dialect,
                format!("no prediction within {} ms", timeout.as_millis()),
            )),
            Ok(Ok(p)) => Ok(p),
            Ok(Err(e)) => Err(predict_error(e, dialect)),
        }
    }
    .await;
    let status = match &result {
        Ok(_) => 200,
        Err(e) => e.status.as_u16(),
    };
    let protocol = dialect.label();
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            protocol: protocol.to_string(),
            code: status,
        })
        .inc();
    state
        .metrics
        .latency
        .get_or_create(&ProtocolLabels {
            protocol: protocol.to_string(),
        })
        .observe(started.elapsed().as_secs_f64());
    if let Some(log) = &state.request_log {
        log.write(&RequestRecord {
            time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            request_id: request_id.to_string(),
            model: state.model.name.to_string(),
            version: state.model.version.to_string(),
            protocol,
            status,
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
            input: input(),
            output: match &result {
                Ok(p) => json!({ "shape": p.shape, "data": p.values.to_json() }),
                Err(e) => json!({ "error": e.message }),
            },
        });
    }
    result
}

/// The status and message of a prediction that did not happen.
fn predict_error(e: PredictError, dialect: Dialect) -> ApiError {
    let status = match &e {
        PredictError::Model(_) => StatusCode::INTERNAL_SERVER_ERROR,
        PredictError::Overloaded | PredictError::WorkerCrashed(_) | PredictError::Closed => {
            StatusCode::SERVICE_UNAVAILABLE
        }
    };
    ApiError::new(status, dialect, e.to_string())
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

#[cfg(test)]
mod tests {
    //! Every protocol's routes through the real router, with a fake worker
    //! behind the pool: arbitrary bodies and headers never panic a handler
    //! and never get a 5xx; they get a 2xx or a 4xx.

    use std::time::Duration;

    use axum::http::Request as HttpRequest;
    use proptest::prelude::*;
    use tower::ServiceExt;

    use super::*;
    use crate::pool::tests::FakeLauncher;
    use crate::pool::PoolConfig;
    use crate::signature::{Signature, TensorSpec};

    /// Cases per route group; recorded in docs/benchmarks.md.
    const CASES: u32 = 512;

    fn state() -> Shared {
        let metrics = Arc::new(Metrics::new());
        let pool = Pool::start(
            PoolConfig {
                workers: 1,
                max_batch_rows: 256,
                max_batch_delay: Duration::ZERO,
                max_queue: 64,
                max_load_attempts: 1,
            },
            FakeLauncher::doubling(),
            metrics.clone(),
        );
        let x = TensorSpec {
            name: Some("x".into()),
            datatype: "double".into(),
            shape: vec![],
            optional: false,
        };
        Arc::new(AppState {
            model: ModelSpec {
                name: "m".parse().unwrap(),
                version: "1".parse().unwrap(),
                digest: "sha256:00".into(),
                flavor: "legion.python".into(),
                signature: Some(Signature {
                    inputs: vec![x.clone()],
                    outputs: vec![TensorSpec { name: None, ..x }],
                }),
                metadata: Default::default(),
            },
            pool,
            metrics,
            limits: Limits {
                max_body_bytes: 1 << 16,
                request_timeout: Duration::from_secs(60),
            },
            request_log: None,
            feedback_log: JsonLines::open(std::path::Path::new("/dev/null")).unwrap(),
        })
    }

    /// A router and the runtime it runs on, with the model loaded.
    fn serving() -> (tokio::runtime::Runtime, Router) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let router = rt.block_on(async {
            let s = state();
            s.pool.loaded().await.unwrap();
            router(s)
        });
        (rt, router)
    }

    fn send(
        rt: &tokio::runtime::Runtime,
        router: &Router,
        path: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
    ) -> u16 {
        let mut req = HttpRequest::post(path);
        for (k, v) in headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let Ok(req) = req.body(Body::from(body)) else {
            return 400; // a header the client library itself refuses
        };
        rt.block_on(router.clone().oneshot(req))
            .unwrap()
            .status()
            .as_u16()
    }

    /// JSON values of any shape, numbers of every kind included.
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
                .map(Value::Number)
                .unwrap_or(Value::Null)),
            "[a-z0-9 ]{0,8}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("x".to_string()),
                        Just("inputs".to_string()),
                        Just("data".to_string()),
                        Just("shape".to_string()),
                        Just("columns".to_string()),
                        Just("dataframe_split".to_string()),
                        Just("instances".to_string()),
                        "[a-z_]{1,6}"
                    ],
                    inner,
                    0..6
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// OIP tensors that are nearly right: any name, datatype, shape (huge
    /// ones included) and data.
    fn oip_body() -> impl Strategy<Value = Value> {
        let dim = prop_oneof![0u64..4, Just(u64::MAX), Just(1u64 << 62), any::<u64>()];
        let tensor = (
            prop_oneof![Just("x".to_string()), "[a-z]{1,3}"],
            prop_oneof![
                Just("FP64"),
                Just("FP32"),
                Just("INT8"),
                Just("UINT64"),
                Just("BOOL"),
                Just("BYTES"),
                Just("FP16"),
                Just("nope")
            ],
            prop::collection::vec(dim, 0..4),
            json_value(),
            prop::option::of(0u64..64),
        )
            .prop_map(|(name, dt, shape, data, binary)| {
                let mut t = json!({"name": name, "datatype": dt, "shape": shape, "data": data});
                if let Some(n) = binary {
                    t["parameters"] = json!({"binary_data_size": n});
                }
                t
            });
        (prop::collection::vec(tensor, 0..3), json_value())
            .prop_map(|(inputs, outputs)| json!({"id": "p", "inputs": inputs, "outputs": outputs}))
    }

    fn header() -> impl Strategy<Value = (String, String)> {
        (
            prop_oneof![
                Just("content-type".to_string()),
                Just("inference-header-content-length".to_string()),
                Just("request-id".to_string()),
                Just("model-name".to_string()),
                Just("model-version".to_string()),
            ],
            prop_oneof![
                Just("application/json".to_string()),
                Just("text/csv".to_string()),
                (0usize..400).prop_map(|n| n.to_string()),
                "\\PC{0,12}",
            ],
        )
    }

    /// A body, and the header its binary part needs if it has one.
    fn body() -> impl Strategy<Value = (Vec<u8>, Option<(String, String)>)> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..256).prop_map(|b| (b, None)),
            json_value().prop_map(|v| (serde_json::to_vec(&v).unwrap(), None)),
            oip_body().prop_map(|v| (serde_json::to_vec(&v).unwrap(), None)),
            (oip_body(), prop::collection::vec(any::<u8>(), 0..48)).prop_map(|(v, tail)| {
                let mut b = serde_json::to_vec(&v).unwrap();
                let header = (
                    "inference-header-content-length".to_string(),
                    b.len().to_string(),
                );
                b.extend_from_slice(&tail);
                (b, Some(header))
            }),
            "[a-z0-9,\\n.\"-]{0,64}".prop_map(|t| (t.into_bytes(), None)),
        ]
    }

    fn check_routes(paths: &[&str]) {
        let (rt, router) = serving();
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
            cases: CASES,
            failure_persistence: None,
            ..ProptestConfig::default()
        });
        let paths: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
        let case = (
            prop::sample::select(paths),
            prop::collection::vec(header(), 0..4),
            body(),
        );
        runner
            .run(&case, |(path, mut headers, (body, binary))| {
                headers.extend(binary);
                let status = send(&rt, &router, &path, &headers, body);
                prop_assert!(
                    (200..300).contains(&status) || (400..500).contains(&status),
                    "{path}: status {status}"
                );
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn oip_parser_answers_every_body_with_2xx_or_4xx() {
        check_routes(&["/v2/models/m/infer", "/v2/models/m/versions/1/infer"]);
    }

    #[test]
    fn mlflow_parser_answers_every_body_with_2xx_or_4xx() {
        check_routes(&["/invocations"]);
    }

    #[test]
    fn legion_parser_answers_every_body_with_2xx_or_4xx() {
        check_routes(&["/api/model/invoke", "/feedback"]);
    }

    #[test]
    fn well_formed_requests_are_answered_by_the_fake_model() {
        let (rt, router) = serving();
        for (path, body) in [
            (
                "/v2/models/m/infer",
                json!({"inputs": [{"name": "x", "shape": [2], "datatype": "FP64", "data": [1, 2]}]}),
            ),
            (
                "/invocations",
                json!({"dataframe_split": {"columns": ["x"], "data": [[1]]}}),
            ),
            (
                "/api/model/invoke",
                json!({"columns": ["x"], "data": [[1]]}),
            ),
        ] {
            let headers = [("content-type".to_string(), "application/json".to_string())];
            let status = send(
                &rt,
                &router,
                path,
                &headers,
                serde_json::to_vec(&body).unwrap(),
            );
            assert_eq!(status, 200, "{path}");
        }
    }
}
