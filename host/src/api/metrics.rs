//! The API's Prometheus metrics at `/metrics`: requests by route, method
//! and status, their latency by route, the runs this replica executes,
//! and the runs in the store by kind and state (counted at scrape time).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::{Api, ApiError};

/// Labels of a request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route's pattern (`/api/v1/trainings/{id}`), not the path: ids
    /// would make a series each.
    pub route: String,
    /// `GET`, `POST`, …
    pub method: String,
    /// HTTP status code.
    pub code: u16,
}

/// Labels of a latency.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The route's pattern.
    pub route: String,
}

/// Labels of a count of runs.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabels {
    /// `training` or `packaging`.
    pub kind: String,
    /// Its state.
    pub state: String,
}

/// The API's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    active: Gauge,
    runs: Family<RunLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("legion_api");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 18))
        });
        let active = Gauge::default();
        let runs = Family::<RunLabels, Gauge>::default();
        registry.register(
            "requests",
            "API requests by route, method and status code",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time to the response's head, by route",
            latency.clone(),
        );
        registry.register(
            "runs_executing",
            "Runs this replica executes now",
            active.clone(),
        );
        registry.register("runs", "Runs in the store by kind and state", runs.clone());
        Metrics {
            registry,
            requests,
            latency,
            active,
            runs,
        }
    }
}

/// Counts and times every request.
pub async fn track(State(api): State<Arc<Api>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let started = Instant::now();
    let r = next.run(req).await;
    api.metrics
        .latency
        .get_or_create(&RouteLabels {
            route: route.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    api.metrics
        .requests
        .get_or_create(&RequestLabels {
            route,
            method,
            code: r.status().as_u16(),
        })
        .inc();
    r
}

/// `GET /metrics`: the text exposition.
pub async fn render(State(api): State<Arc<Api>>) -> Result<Response, ApiError> {
    let m = &api.metrics;
    m.active.set(api.runner.active() as i64);
    m.runs.clear();
    for (kind, state, n) in api.toolchains.store().count_runs().await? {
        m.runs.get_or_create(&RunLabels { kind, state }).set(n);
    }
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &m.registry);
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        out,
    )
        .into_response())
}
